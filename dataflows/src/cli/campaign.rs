//! `tidings campaign`: a job's campaigns (`cron` templates with a crowd), and sending one by
//! hand (docs/templates.md "Campaigns").

use std::path::PathBuf;

use chrono::TimeZone;
use tidings_dataflows::campaign::{self, Fired};

use super::{Failure, OutputFormat, load_for_reading, print_json_rows};

#[derive(clap::Args)]
pub struct CampaignArgs {
    #[command(subcommand)]
    command: CampaignCommand,
}

#[derive(clap::Subcommand)]
enum CampaignCommand {
    /// List the job's campaigns: schedule, crowd size, last time sent and next time.
    List {
        /// The job.
        #[arg(long)]
        job: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Send a campaign's crowd now (or as at `--at`), outside its schedule: its requests are
    /// stamped with that time; its schedule is not changed.
    Send {
        /// The job.
        #[arg(long)]
        job: PathBuf,
        /// The campaign's template id.
        #[arg(long)]
        template: i64,
        /// The event time to stamp, `YYYY-MM-DD HH:MM:SS` in the job's time zone (default: now).
        /// A job reading them after its watermark passed it judges them late; for a replay or
        /// a test topic.
        #[arg(long)]
        at: Option<String>,
        /// Produce through these brokers instead of the job's `source.brokers`.
        #[arg(long, value_name = "HOST:PORT,...")]
        brokers: Option<String>,
    },
}

pub fn run(args: CampaignArgs) -> Result<(), Failure> {
    match args.command {
        CampaignCommand::List { job, format } => list(job, format),
        CampaignCommand::Send {
            job,
            template,
            at,
            brokers,
        } => send(job, template, at, brokers),
    }
}

fn list(path: PathBuf, format: OutputFormat) -> Result<(), Failure> {
    let job = load_for_reading(&path)?;
    let fired = Fired::open(&job.state_dir, job.state_store.as_ref())
        .map_err(|e| Failure::Failed(format!("{e:#}")))?;
    let now = tidings_model::time::wall_ms();
    let rows: Vec<serde_json::Value> = current(&job)?
        .iter()
        .map(|c| {
            let receivers = match campaign::read_crowd(&c.crowd) {
                Ok(m) => m.len().to_string(),
                Err(why) => format!("unreadable: {why}"),
            };
            let shown = |t: Option<i64>| t.map(|t| campaign::shown(job.tz, t));
            serde_json::json!({
                "template": c.template_id,
                "name": c.name,
                "cron": c.expr,
                "crowd": c.crowd.display().to_string(),
                "receivers": receivers,
                "last_sent": shown(fired.last(c.template_id)),
                "next": shown(c.cron.next_after(job.tz, now)),
            })
        })
        .collect();
    if rows.is_empty() {
        tracing::info!(
            "{}: no campaigns (a cron template with cron and crowd)",
            path.display()
        );
    }
    print_json_rows(&rows, format);
    Ok(())
}

/// The job's campaigns as its newest checkpoint has them (live changes included).
fn current(job: &tidings_dataflows::Job) -> Result<Vec<campaign::Campaign>, Failure> {
    campaign::current(job)
        .map_err(|e| Failure::Failed(format!("{}: checkpoints: {e:#}", job.state_dir.display())))
}

fn send(
    path: PathBuf,
    template: i64,
    at: Option<String>,
    brokers: Option<String>,
) -> Result<(), Failure> {
    let job = load_for_reading(&path)?;
    let campaigns = current(&job)?;
    let Some(c) = campaigns.iter().find(|c| c.template_id == template) else {
        return Err(Failure::Usage(format!(
            "{}: template {template} is no campaign; `tidings campaign list --job {}` lists them",
            path.display(),
            path.display()
        )));
    };
    let Some(mut kafka) = job.kafka.clone() else {
        return Err(Failure::Usage(format!(
            "{}: source.kind is not \"kafka\"",
            path.display()
        )));
    };
    kafka
        .ready()
        .map_err(|why| Failure::Usage(format!("{}: {why}", path.display())))?;
    if let Some(b) = brokers {
        kafka.brokers = b;
    }
    let at_ms = match at {
        None => tidings_model::time::wall_ms(),
        Some(text) => chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S")
            .ok()
            .and_then(|t| job.tz.from_local_datetime(&t).earliest())
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "--at `{text}`: write YYYY-MM-DD HH:MM:SS, a local time of {}",
                    job.tz
                ))
            })?,
    };
    let n = campaign::fire(
        &kafka,
        c,
        Some(at_ms),
        &Default::default(),
        &mut Default::default(),
    )
    .map_err(|e| Failure::Failed(format!("{e:#}")))?;
    tracing::info!(
        "sent the crowd of template {template} ({n} receiver(s)) to {} as at {}",
        kafka.topic,
        campaign::shown(job.tz, at_ms)
    );
    Ok(())
}
