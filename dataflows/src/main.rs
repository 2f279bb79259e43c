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
        /// Kafka source: stop gracefully once no record has arrived for this many seconds
        /// (four times as long before the first record, while the group may be rebalancing).
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<f64>,
    },
    /// Produce send requests to the job's Kafka topic.
    Send {
        /// The job whose topic to produce to.
        #[arg(long)]
        job: PathBuf,
        /// The template of a single request.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        template: Option<i64>,
        /// Receivers of a single request, comma-separated.
        #[arg(long, requires = "template")]
        to: Option<String>,
        /// A placeholder value of a single request, `name=value` (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// A JSON-lines file of bare requests or kcat `-J` envelopes (`ts` becomes the record
        /// timestamp, `key` the record key).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
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
        Command::Run {
            job,
            workers,
            now,
            idle_exit,
        } => run_job(job, workers, now, idle_exit),
        Command::Send {
            job,
            template,
            to,
            vars,
            file,
        } => send(job, template, to, vars, file),
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

fn run_job(
    path: PathBuf,
    workers: Option<usize>,
    now: Option<String>,
    idle_exit: Option<f64>,
) -> ExitCode {
    let job = match load(&path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let mut opts = RunOptions::for_job(&job);
    opts.handle_signals = true;
    opts.idle_exit = idle_exit.map(std::time::Duration::from_secs_f64);
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

fn send(
    path: PathBuf,
    template: Option<i64>,
    to: Option<String>,
    vars: Vec<String>,
    file: Option<PathBuf>,
) -> ExitCode {
    use tidings_dataflows::kafka::{Outgoing, produce};
    let job = match load(&path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let Some(kafka) = job.kafka.clone() else {
        eprintln!(
            "error: {}: source.kind is not \"kafka\": there is no topic to send to",
            path.display()
        );
        return ExitCode::from(2);
    };
    let result = match file {
        Some(file) => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let bar = indicatif::ProgressBar::new(lines.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} requests {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let records = lines.into_iter().map(outgoing_of_line);
            let r = produce(&kafka.brokers, &kafka.topic, records, || bar.inc(1));
            bar.finish();
            r
        }
        None => {
            let mut variables = serde_json::Map::new();
            for v in &vars {
                let Some((k, val)) = v.split_once('=') else {
                    eprintln!("error: --var `{v}`: use NAME=VALUE");
                    return ExitCode::from(2);
                };
                variables.insert(k.to_string(), serde_json::Value::String(val.to_string()));
            }
            let request = serde_json::json!({"code": "send", "messageTemplateId": template,
                "messageParam": {"receiver": to.unwrap_or_default(), "variables": variables}});
            produce(
                &kafka.brokers,
                &kafka.topic,
                [Outgoing {
                    key: None,
                    payload: request.to_string(),
                    timestamp: None,
                }],
                || {},
            )
        }
    };
    match result {
        Ok(n) => {
            eprintln!(
                "sent {n} request(s) to {} on {}",
                kafka.topic, kafka.brokers
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: kafka {}: {e:#}", kafka.brokers);
            ExitCode::FAILURE
        }
    }
}

/// A file line as a record: a kcat envelope gives payload, key and timestamp; anything else
/// (a bare request, or a bad line, which the job will dead-letter) is sent as it is.
fn outgoing_of_line(line: &str) -> tidings_dataflows::kafka::Outgoing {
    let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
    if let Some(obj) = v.as_ref().and_then(|v| v.as_object())
        && !obj.contains_key("code")
        && let Some(payload) = obj.get("payload").and_then(|p| p.as_str())
    {
        return tidings_dataflows::kafka::Outgoing {
            key: obj.get("key").and_then(|k| k.as_str()).map(str::to_string),
            payload: payload.to_string(),
            timestamp: obj.get("ts").and_then(|t| t.as_i64()),
        };
    }
    tidings_dataflows::kafka::Outgoing {
        key: None,
        payload: line.to_string(),
        timestamp: None,
    }
}
