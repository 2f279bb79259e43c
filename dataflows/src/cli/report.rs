//! `tidings report`: a named report (`sql/queries/NAME.sql`) over a job's tracking tables.

use std::path::PathBuf;

#[cfg(feature = "sql")]
use tidings_sql::reports::{Params, REPORTS, Report};

use super::OutputFormat;
#[cfg(feature = "sql")]
use super::{Failure, corrupt, current_thread_runtime, open_tracking, sql_format, tracking_of};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The report; `--list` shows them.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the reports.
    #[arg(long)]
    list: bool,
    /// The job whose tracking directory to read (and whose time zone to use).
    #[arg(long, conflicts_with = "dir")]
    job: Option<PathBuf>,
    /// A tracking directory, or an object-store prefix (`s3://BUCKET/PREFIX`, configured by
    /// the `AWS_*` environment variables).
    #[arg(long)]
    dir: Option<String>,
    /// The time zone `hourly_volume` counts `--dir`'s hours in (a job's own with `--job`).
    /// Default Asia/Shanghai, a job file's default. (`--date` is the tables' `date` column:
    /// the local day of the job that wrote them.)
    #[arg(long, conflicts_with = "job", value_parser = super::parse_timezone)]
    timezone: Option<chrono_tz::Tz>,
    /// Only this local date, `YYYY-MM-DD`.
    #[arg(long)]
    date: Option<String>,
    /// Only this template id.
    #[arg(long)]
    template: Option<i64>,
    /// Only this receiver.
    #[arg(long)]
    receiver: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Leave out files of the tables that are not readable Parquet (each is named in a
    /// warning) instead of failing.
    #[arg(long)]
    skip_corrupt: bool,
}

#[cfg(feature = "sql")]
pub fn run(args: ReportArgs) -> Result<(), Failure> {
    if args.list {
        for r in REPORTS {
            println!(
                "{:<20} {}  [{}]",
                r.name,
                r.description(),
                r.params().join(", ")
            );
        }
        return Ok(());
    }
    let report = Report::find(args.name.as_deref().unwrap_or_default())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let (dir, timezone) = tracking_of(args.job, args.dir)?;
    let params = Params {
        date: args.date,
        template: args.template,
        receiver: args.receiver,
        timezone: timezone.or_else(|| args.timezone.map(|tz| tz.name().to_string())),
    };
    report
        .render(&params)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let rt = current_thread_runtime()?;
    let (format, on_corrupt) = (sql_format(args.format), corrupt(&dir, args.skip_corrupt)?);
    let text = rt
        .block_on(async {
            let t = open_tracking(&dir, on_corrupt).await?;
            let batches = t.report(&report, &params, None).await?;
            tidings_sql::format(&batches, format)
        })
        .map_err(|e| Failure::Failed(format!("report {}: {e}", report.name)))?;
    println!("{}", text.trim_end());
    Ok(())
}
