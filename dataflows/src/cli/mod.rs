//! The `tidings` binary's subcommands, one module each, and what they share: the way a
//! subcommand fails ([`Failure`]), loading the job, the tracking directory, the admin target
//! and the output formats.

pub mod campaign;
pub mod check;
pub mod cluster;
pub mod gateway;
pub mod jobs;
#[cfg(feature = "sql")]
pub mod repl;
pub mod report;
pub mod run;
pub mod send;
pub mod serve;
pub mod simulator;
pub mod sql;
pub mod state;
pub mod top;
pub mod trace;

use std::path::{Path, PathBuf};
#[cfg(feature = "sql")]
use tidings_sinks::tracking::TrackingDir;

use clap::ValueEnum;
use tidings_dataflows::Job;
use tidings_dataflows::job::LoadMode;

/// How a subcommand failed; `main` prints it and turns it into the exit code.
#[derive(Debug)]
pub enum Failure {
    /// A bad flag or argument: `error: …`, exit 2.
    Usage(String),
    /// A job file that cannot be used: one `error: …` line per problem, exit 2.
    Problems(Vec<String>),
    /// It did not work: `error: …`, exit 1.
    Failed(String),
    /// Already reported on stderr (a shell statement, `check`'s failed checks): exit 1.
    Silent,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Failed(format!("{e:#}"))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub fn load(path: &Path) -> Result<Job, Failure> {
    load_as(path, LoadMode::Run)
}

/// Loads a job only to read its tracking: no provider secret needs to be set.
pub fn load_for_reading(path: &Path) -> Result<Job, Failure> {
    load_as(path, LoadMode::Read)
}

pub fn load_as(path: &Path, mode: LoadMode) -> Result<Job, Failure> {
    Job::load_as(path, mode).map_err(|e| Failure::Problems(e.problems))
}

/// A `--timezone` flag: an IANA name (`Europe/Berlin`), as a job file's `timezone`.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse().map_err(|_| {
        format!("unknown time zone `{name}`; use an IANA name such as \"Asia/Shanghai\"")
    })
}

/// The `NAME=VALUE` pairs of `--var` flags.
pub fn parse_vars(vars: &[String]) -> Result<Vec<(&str, &str)>, Failure> {
    vars.iter()
        .map(|v| {
            v.split_once('=')
                .ok_or_else(|| Failure::Usage(format!("--var `{v}`: use NAME=VALUE")))
        })
        .collect()
}

/// The tracking directory (and time zone) of `--job` or `--dir`.
#[cfg(feature = "sql")]
pub fn tracking_of(
    job: Option<PathBuf>,
    dir: Option<String>,
) -> Result<(TrackingDir, Option<String>), Failure> {
    match (job, dir) {
        (Some(j), _) => load_for_reading(&j).map(|job| (job.tracking_dir, Some(job.file.timezone))),
        (None, Some(d)) => TrackingDir::parse(&d, Path::new(""))
            .map(|d| (d, None))
            .map_err(|why| Failure::Usage(format!("--dir {why}"))),
        (None, None) => Err(Failure::Usage(
            "give --job JOB.toml or --dir TRACKING_DIR".into(),
        )),
    }
}

/// What `tidings sql` and `tidings report` say in a build without the `sql` feature.
#[cfg(not(feature = "sql"))]
pub const NO_SQL: &str = "this tidings was built without SQL (cargo's --no-default-features): \
     `tidings sql`, `tidings report` and the console need a build with the `sql` feature (the default)";

#[cfg(feature = "sql")]
pub fn sql_format(format: OutputFormat) -> tidings_sql::Format {
    match format {
        OutputFormat::Table => tidings_sql::Format::Table,
        OutputFormat::Csv => tidings_sql::Format::Csv,
        OutputFormat::Json => tidings_sql::Format::Json,
    }
}

pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(e.to_string()))
}

/// `--skip-corrupt` over `dir`: local files only (an object store's tables are read as they
/// are, and a corrupt object fails the query), so it is refused for `s3://`.
#[cfg(feature = "sql")]
pub fn corrupt(dir: &TrackingDir, skip: bool) -> Result<tidings_sql::Corrupt, Failure> {
    match (skip, dir) {
        (false, _) => Ok(tidings_sql::Corrupt::Fail),
        (true, TrackingDir::Local(_)) => Ok(tidings_sql::Corrupt::Skip),
        (true, TrackingDir::Object(o)) => Err(Failure::Usage(format!(
            "--skip-corrupt: {} is on an object store, whose files are read as they are (a \
             corrupt one fails the query); copy the day's files to a local directory to skip them",
            o.url()
        ))),
    }
}

#[cfg(feature = "sql")]
/// Opens the tracking tables; a skipped file is named in a warning line. (Tables on an object
/// store are read as they are: a corrupt object fails the query.)
pub async fn open_tracking(
    dir: &TrackingDir,
    corrupt: tidings_sql::Corrupt,
) -> Result<tidings_sql::Tracking, tidings_sql::SqlError> {
    let t = match dir {
        TrackingDir::Local(dir) => tidings_sql::Tracking::open_with(dir, corrupt).await?,
        TrackingDir::Object(o) => {
            tidings_sql::Tracking::open_store(o.url(), o.bucket_url(), o.store()).await?
        }
    };
    for (file, why) in t.skipped() {
        tracing::warn!(
            "skipped {}: not a readable Parquet file ({why})",
            file.display()
        );
    }
    Ok(t)
}

/// Which running job to ask.
#[derive(clap::Args)]
pub struct AdminTarget {
    /// The job (its `admin` section, and the address it wrote to its state directory).
    #[arg(long, global = true)]
    job: Option<PathBuf>,
    /// The admin API's address, HOST:PORT, instead of a job.
    #[arg(long, global = true)]
    addr: Option<String>,
    /// Bearer token (default: the job's `admin.token`).
    #[arg(long, global = true)]
    token: Option<String>,
}

impl AdminTarget {
    /// The admin address and token of `--addr`/`--job`.
    pub fn resolve(&self) -> Result<(String, Option<String>), Failure> {
        let job = self.job.as_deref().map(load).transpose()?;
        let token = self.token.clone().or_else(|| {
            job.as_ref()
                .and_then(|j| j.admin.as_ref())
                .and_then(|a| a.token.clone())
        });
        let addr = match (&self.addr, &job) {
            (Some(a), _) => a.clone(),
            (None, Some(j)) => tidings_dataflows::admin::address_of(j).ok_or_else(|| {
                Failure::Usage(format!(
                    "{}: the job has no [admin] section; add `[admin]\nbind = \"127.0.0.1:9464\"` and restart it",
                    j.path.display()
                ))
            })?,
            (None, None) => {
                return Err(Failure::Usage(
                    "name the running job: --job JOB.toml, or --addr HOST:PORT".into(),
                ));
            }
        };
        Ok((addr, token))
    }
}

/// Prints JSON objects as a table (columns in first-seen order), CSV or JSON lines.
pub fn print_json_rows(rows: &[serde_json::Value], format: OutputFormat) {
    let mut columns: Vec<String> = Vec::new();
    for r in rows {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    match format {
        OutputFormat::Json => {
            for r in rows {
                println!("{r}");
            }
        }
        OutputFormat::Csv => print_csv(rows, &columns),
        OutputFormat::Table => print_table(rows, &columns),
    }
}

fn cell(r: &serde_json::Value, c: &str) -> String {
    match &r[c] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn print_csv(rows: &[serde_json::Value], columns: &[String]) {
    println!("{}", columns.join(","));
    for r in rows {
        let line: Vec<String> = columns
            .iter()
            .map(|c| {
                let v = cell(r, c);
                if v.contains([',', '"', '\n']) {
                    format!("\"{}\"", v.replace('"', "\"\""))
                } else {
                    v
                }
            })
            .collect();
        println!("{}", line.join(","));
    }
}

fn print_table(rows: &[serde_json::Value], columns: &[String]) {
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(columns.to_vec()));
    for r in rows {
        println!("{}", line(columns.iter().map(|c| cell(r, c)).collect()));
    }
    println!(
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
}
