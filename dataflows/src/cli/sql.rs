//! `tidings sql`: SQL over a job's tracking tables, one statement or a shell.

use std::path::PathBuf;

use super::OutputFormat;
#[cfg(feature = "sql")]
use super::{Failure, corrupt, current_thread_runtime, open_tracking, sql_format, tracking_of};

#[derive(clap::Args)]
pub struct SqlArgs {
    /// The job whose tracking directory to read.
    #[arg(long, conflicts_with = "dir")]
    job: Option<PathBuf>,
    /// A tracking directory, or an object-store prefix (`s3://BUCKET/PREFIX`, configured by
    /// the `AWS_*` environment variables).
    #[arg(long)]
    dir: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Leave out files of the tables that are not readable Parquet (each is named in a
    /// warning) instead of failing.
    #[arg(long)]
    skip_corrupt: bool,
    /// The statement. Without one, an interactive shell (statements end with `;`).
    query: Option<String>,
}

#[cfg(feature = "sql")]
pub fn run(args: SqlArgs) -> Result<(), Failure> {
    let (dir, _) = tracking_of(args.job, args.dir)?;
    let format = sql_format(args.format);
    let on_corrupt = corrupt(&dir, args.skip_corrupt)?;
    let rt = current_thread_runtime()?;
    let tracking = rt
        .block_on(open_tracking(&dir, on_corrupt))
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let Some(query) = args.query else {
        return if super::repl::run(&rt, &tracking, format) {
            Ok(())
        } else {
            Err(Failure::Silent)
        };
    };
    let text = rt
        .block_on(async {
            let batches = tracking.query(&query).await?;
            tidings_sql::format(&batches, format)
        })
        .map_err(|e| Failure::Failed(e.to_string()))?;
    println!("{}", text.trim_end());
    Ok(())
}
