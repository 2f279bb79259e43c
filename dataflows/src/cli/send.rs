//! `tidings send`: produce send requests to the job's Kafka topic.

use std::path::{Path, PathBuf};

use tidings_dataflows::kafka::{Outgoing, produce_with};

use super::{Failure, load_for_reading, parse_vars};

#[derive(clap::Args)]
pub struct SendArgs {
    /// The job whose topic to produce to.
    #[arg(long)]
    job: PathBuf,
    /// The template of a single request.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    template: Option<i64>,
    /// Receivers of a single request, comma-separated.
    #[arg(long, requires = "template", required_unless_present = "file")]
    to: Option<String>,
    /// A placeholder value of a single request, `name=value` (repeatable).
    #[arg(
        long = "var",
        value_name = "NAME=VALUE",
        requires = "template",
        conflicts_with = "file"
    )]
    vars: Vec<String>,
    /// A JSON-lines file of bare requests or kcat `-J` envelopes (`ts` becomes the record
    /// timestamp, `key` the record key).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Produce through these brokers instead of the job's `source.brokers` (e.g. the
    /// host's `localhost:9092` listener of a broker the job reaches as `kafka:19092`).
    #[arg(long, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
}

pub fn run(args: SendArgs) -> Result<(), Failure> {
    let job = load_for_reading(&args.job)?;
    let Some(kafka) = job.kafka.clone() else {
        return Err(Failure::Usage(format!(
            "{}: source.kind is not \"kafka\": there is no topic to send to",
            args.job.display()
        )));
    };
    kafka
        .ready()
        .map_err(|why| Failure::Usage(format!("{}: {why}", args.job.display())))?;
    let brokers = args.brokers.as_ref().unwrap_or(&kafka.brokers);
    let topic = &kafka.topic;
    let n = match &args.file {
        Some(file) => send_file(file, brokers, &kafka.properties, topic)?,
        None => send_one(&args, brokers, &kafka.properties, topic)?,
    };
    tracing::info!("sent {n} request(s) to {topic} on {brokers}");
    Ok(())
}

/// Produces the request of `--template`, `--to` and `--var`.
fn send_one(
    args: &SendArgs,
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
) -> Result<u64, Failure> {
    let mut variables = serde_json::Map::new();
    for (k, val) in parse_vars(&args.vars)? {
        variables.insert(k.to_string(), serde_json::Value::String(val.to_string()));
    }
    let receiver = args.to.clone().unwrap_or_default();
    let request = serde_json::json!({"code": "send", "messageTemplateId": args.template,
        "messageParam": {"receiver": receiver, "variables": variables}});
    let record = Outgoing {
        key: None,
        payload: request.to_string(),
        timestamp: None,
    };
    produce_with(brokers, properties, topic, [record], || {}).map_err(|e| kafka_failed(brokers, e))
}

/// Produces every non-blank line of a JSON-lines file, with a progress bar.
fn send_file(
    file: &Path,
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
) -> Result<u64, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Failed(format!("{}: {e}", file.display())))?;
    // Every line is read before any is sent: a line the job would refuse the time of names
    // its line number, and nothing was sent (not half the file, sent again on a rerun). The
    // records are made again as they are sent (not held: the file is in memory already).
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Err(e) = Outgoing::of_line(line) {
            return Err(Failure::Failed(format!(
                "{}:{}: {e}; nothing was sent",
                file.display(),
                i + 1
            )));
        }
        lines.push(line);
    }
    let records = lines.iter().filter_map(|l| Outgoing::of_line(l).ok());
    let bar = indicatif::ProgressBar::new(lines.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} requests {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = produce_with(brokers, properties, topic, records, || bar.inc(1));
    bar.finish();
    r.map_err(|e| kafka_failed(brokers, e))
}

fn kafka_failed(brokers: &str, e: anyhow::Error) -> Failure {
    Failure::Failed(format!("kafka {brokers}: {e:#}"))
}
