//! `tidings trace`: a message, a receiver or a template in the job's Redis tracking.

use std::path::PathBuf;

use tidings_dataflows::Job;
use tidings_model::State;
use tidings_sinks::tracking::redis::RedisTrace;
use tidings_sinks::util::http::shown_url;

use super::{Failure, OutputFormat, load_for_reading, print_json_rows};

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The job whose `tracking.redis` to read.
    #[arg(long, conflicts_with = "redis", required_unless_present = "redis")]
    job: Option<PathBuf>,
    /// A Redis URL, instead of a job.
    #[arg(long)]
    redis: Option<String>,
    /// With `--redis`: the keys' prefix (a job's `tracking.redis_prefix`).
    #[arg(long, requires = "redis", default_value = tidings_sinks::tracking::redis::PREFIX)]
    prefix: String,
    /// With `--redis`: the time zone of a template's day (a job's `timezone`).
    #[arg(long, requires = "redis", default_value = "Asia/Shanghai", value_parser = super::parse_timezone)]
    timezone: chrono_tz::Tz,
    /// With `--redis`: the region of phone numbers written without a country code (a job's
    /// `region`), for `user`'s lookup of a phone as tracked.
    #[arg(long, requires = "redis", default_value = tidings_dataflows::job::DEFAULT_REGION,
        value_parser = tidings_dataflows::job::region)]
    region: tidings_model::receiver::ReceiverValidator,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    #[command(subcommand)]
    what: TraceWhat,
}

#[derive(clap::Subcommand)]
enum TraceWhat {
    /// Every state every receiver of one message reached.
    Message {
        /// The messageId.
        id: String,
    },
    /// Every state a receiver's messages reached (kept until the end of the local day).
    User {
        /// The receiver (phone, email, user id...).
        receiver: String,
    },
    /// The template's funnel: receivers per state on one day (austin's businessId view).
    Template {
        /// The template id.
        id: i64,
        /// The local date, `YYYY-MM-DD`. Default: today in the job's time zone.
        #[arg(long)]
        date: Option<String>,
    },
}

pub fn run(args: TraceArgs) -> Result<(), Failure> {
    let job = args.job.as_deref().map(load_for_reading).transpose()?;
    let prefix = job
        .as_ref()
        .map_or(args.prefix, |j| j.file.tracking.redis_prefix.clone());
    let url = match (args.redis, job.as_ref()) {
        (Some(url), _) => url,
        (None, Some(j)) => j.file.tracking.redis.clone().ok_or_else(|| {
            Failure::Usage(format!(
                "{}: tracking.redis is not set, so nothing is traced in Redis; use `tidings sql` for the Parquet tables",
                j.path.display()
            ))
        })?,
        (None, None) => unreachable!("clap requires --job or --redis"),
    };
    let failed = |e: redis::RedisError| Failure::Failed(format!("redis {}: {e}", shown_url(&url)));
    let mut redis = RedisTrace::connect(&url, &prefix).map_err(failed)?;
    let rows = match args.what {
        TraceWhat::Message { id } => redis.message(&id).map_err(failed)?,
        TraceWhat::User { receiver } => {
            let forms = job.as_ref().map_or_else(
                || tidings_dataflows::job::receiver_forms(&args.region, &receiver),
                |j| j.receiver_forms(&receiver),
            );
            redis.users(&forms).map_err(failed)?
        }
        TraceWhat::Template { id, date } => {
            let tz = job.as_ref().map_or(args.timezone, |j| j.tz);
            let date = local_date(tz, date)?;
            funnel(&mut redis, job.as_ref(), id, date).map_err(failed)?
        }
    };
    print_json_rows(&rows, args.format);
    Ok(())
}

/// `--date`, or today in `tz` (the job's, or `--timezone`).
fn local_date(tz: chrono_tz::Tz, date: Option<String>) -> Result<chrono::NaiveDate, Failure> {
    match date {
        Some(d) => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|e| Failure::Usage(format!("--date {d:?}: {e}; write YYYY-MM-DD"))),
        None => Ok(chrono::Utc::now().with_timezone(&tz).date_naive()),
    }
}

/// Receivers per state of a template on one day, in state-code order.
fn funnel(
    redis: &mut RedisTrace,
    job: Option<&Job>,
    id: i64,
    date: chrono::NaiveDate,
) -> redis::RedisResult<Vec<serde_json::Value>> {
    // The job knows the template's type; without it, both of austin's types are asked.
    let types: Vec<i64> = match job.and_then(|j| j.templates.get(id)) {
        Some(t) => vec![t.template_type.code()],
        None => vec![20, 10],
    };
    let mut rows = Vec::new();
    for ty in types {
        let business_id = tidings_model::ids::business_id(ty, id, date);
        let counts = redis.business(business_id)?;
        rows.extend(counts.into_iter().map(|(state, n)| {
            serde_json::json!({"business_id": business_id, "state": state,
                "code": State::from_name(&state).map(State::code), "receivers": n})
        }));
    }
    rows.sort_by_key(|r| r["code"].as_i64());
    Ok(rows)
}
