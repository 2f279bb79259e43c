//! `tidings`: run a job, query its tracking tables.

/// mimalloc, not glibc malloc: send futures are allocated on timely worker threads and freed
/// on tokio threads, and glibc's per-thread arenas then keep growing (measured: peak RSS of the
/// 1M-request run).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tidings_dataflows::{Job, RunOptions, Summary, run};
use tidings_model::State;
use tidings_operators::Clock;

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "A message-push platform in one timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job until its source ends (file) or Ctrl-C.
    Run {
        /// The job file.
        job: PathBuf,
        /// Timely worker threads (overrides the job's `workers`).
        #[arg(short, long)]
        workers: Option<usize>,
        /// Pretend the wall clock reads this instant (RFC 3339), for replays and tests: it
        /// stamps bare lines' event time, the `time` column and end-of-run releases.
        #[arg(long)]
        now: Option<String>,
    },
    /// Run SQL over a job's tracking tables `events` and `dead_letters`.
    Sql {
        /// The job whose tracking directory to read.
        #[arg(long, conflicts_with = "dir")]
        job: Option<PathBuf>,
        /// A tracking directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// The statement.
        query: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { job, workers, now } => run_job(job, workers, now),
        Command::Sql {
            job,
            dir,
            format,
            query,
        } => sql(job, dir, format, &query),
    }
}

fn load(path: &std::path::Path) -> Result<Job, ExitCode> {
    Job::load(path).map_err(|e| {
        for p in &e.problems {
            eprintln!("error: {p}");
        }
        ExitCode::from(2)
    })
}

fn run_job(path: PathBuf, workers: Option<usize>, now: Option<String>) -> ExitCode {
    let job = match load(&path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let mut opts = RunOptions::for_job(&job);
    opts.handle_signals = true;
    if let Some(w) = workers {
        if w == 0 {
            eprintln!("error: -w: use at least 1 worker");
            return ExitCode::from(2);
        }
        opts.workers = w;
    }
    if let Some(now) = now {
        match chrono::DateTime::parse_from_rfc3339(&now) {
            Ok(t) => opts.clock = Clock::Fixed(t.timestamp_millis()),
            Err(e) => {
                eprintln!(
                    "error: --now `{now}`: {e}; use RFC 3339, e.g. 2025-11-22T10:00:00+08:00"
                );
                return ExitCode::from(2);
            }
        }
    }
    match run(&job, &opts) {
        Ok(summary) => {
            print_summary(&job, &opts, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e:#}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn print_summary(job: &Job, opts: &RunOptions, s: &Summary) {
    println!(
        "job `{}` finished in {:.2?} with {} worker(s)",
        job.file.name, s.elapsed, opts.workers
    );
    println!("{:<24} {:>6} {:>10}", "state", "code", "rows");
    println!("{}", "-".repeat(42));
    for state in State::ALL {
        if let Some(n) = s.counts.states.get(&state) {
            println!("{:<24} {:>6} {:>10}", state.name(), state.code(), n);
        }
    }
    println!("{}", "-".repeat(42));
    println!(
        "{:<24} {:>6} {:>10}",
        "dead letters", "", s.counts.dead_letters
    );
    println!("{:<24} {:>6} {:>10}", "parked at exit", "", s.parked);
    let receive = s.counts.states.get(&State::Receive).copied().unwrap_or(0);
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "receivers/s: {:.0}   tracking: {}",
        receive as f64 / secs,
        job.tracking_dir.display()
    );
}

fn sql(job: Option<PathBuf>, dir: Option<PathBuf>, format: OutputFormat, query: &str) -> ExitCode {
    let dir = match (job, dir) {
        (Some(j), _) => match load(&j) {
            Ok(job) => job.tracking_dir,
            Err(code) => return code,
        },
        (None, Some(d)) => d,
        (None, None) => {
            eprintln!("error: give --job JOB.toml or --dir TRACKING_DIR");
            return ExitCode::from(2);
        }
    };
    let format = match format {
        OutputFormat::Table => tidings_sql::Format::Table,
        OutputFormat::Csv => tidings_sql::Format::Csv,
        OutputFormat::Json => tidings_sql::Format::Json,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let t = tidings_sql::Tracking::open(&dir).await?;
        let batches = t.query(query).await?;
        tidings_sql::format(&batches, format)
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
