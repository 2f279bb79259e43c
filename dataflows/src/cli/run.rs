//! `tidings run`: run a job until its source ends (file) or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tidings_dataflows::job::MAX_WORKERS;
use tidings_dataflows::{Cluster, Job, RunOptions, Summary};
use tidings_model::State;
use tidings_operators::Clock;

use super::{Failure, load};

#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// The job file.
    pub(crate) job: PathBuf,
    /// Timely worker threads (overrides the job's `workers`).
    #[arg(short, long)]
    workers: Option<usize>,
    /// Pretend the wall clock reads this instant (RFC 3339), for replays and tests: it
    /// stamps bare lines' event time, the `time` column and end-of-run releases.
    #[arg(long)]
    now: Option<String>,
    /// Event times before this instant (RFC 3339) are a backlog, read in the job's
    /// `source.backlog_epoch_ms` epochs. Default: a minute and `max_out_of_order_ms` before the
    /// start; a cluster's processes take process 0's (give every process the same one, or none).
    #[arg(long, value_name = "TIME")]
    backlog_before: Option<String>,
    /// Kafka source: stop gracefully once every partition is read to its end and no record
    /// has arrived for this many seconds (counted from the start while the brokers cannot
    /// be reached; time spent held back by backpressure does not count).
    #[arg(long, value_name = "SECS")]
    idle_exit: Option<f64>,
    /// Start without the newest checkpoint: read the source from its start, with fresh
    /// dedup windows and no parked messages (a deliberate replay; message ids repeat).
    #[arg(long)]
    from_start: bool,
    /// A graceful stop (Ctrl-C, SIGTERM, SIGHUP) drains at most this long, then halts: the
    /// rest is read again from the last checkpoint by the next run. Default 30.
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<f64>,
    /// Cluster mode (timely's flags): the number of processes of the job. Every process runs
    /// `-w` workers; Kafka partitions are spread over all of them.
    #[arg(short = 'n', long, value_name = "N", requires = "process")]
    processes: Option<usize>,
    /// Cluster mode: this process's index, from 0.
    #[arg(short = 'p', long, value_name = "I", requires = "processes")]
    pub(crate) process: Option<usize>,
    /// Cluster mode: a file with one `host:port` per line, one line per process in index
    /// order (timely's hostfile). Without it, process I listens on localhost:2101+I.
    #[arg(short = 'h', long, value_name = "FILE", requires = "processes")]
    hostfile: Option<PathBuf>,
    /// Cluster mode: fail (exit 1, one line) if not every process has connected within this
    /// many seconds, instead of waiting for ever. Default 600.
    #[arg(long, value_name = "SECS", requires = "processes")]
    connect_timeout: Option<f64>,
    /// Start an N-process cluster of this job on this machine (free localhost ports) and
    /// supervise it: when one process fails, all are stopped and started again from the
    /// newest complete checkpoint (5 attempts, backoff).
    #[arg(long, value_name = "N", conflicts_with_all = ["processes", "process", "hostfile"])]
    pub(crate) local: Option<usize>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let job = load(&args.job)?;
    // Checked before a local cluster starts too: its processes would each refuse a bad flag.
    let opts = options(&job, &args)?;
    if let Some(n) = args.local {
        return super::cluster::run_local(&job, n);
    }
    let summary =
        tidings_dataflows::run(&job, &opts).with_context(|| args.job.display().to_string())?;
    print_summary(&job, &opts, &summary);
    Ok(())
}

/// `--idle-exit SECS`: a number of seconds from 0 up to a year, for a Kafka source (a file
/// source ends at its end, or follows its file for ever).
fn idle_exit(job: &Job, secs: Option<f64>) -> Result<Option<Duration>, Failure> {
    let Some(secs) = secs else { return Ok(None) };
    if job.kafka.is_none() {
        return Err(Failure::Usage(format!(
            "--idle-exit {secs}: only a Kafka source is read until idle; a file source stops at \
             its end (without follow = true)"
        )));
    }
    if !(secs.is_finite() && (0.0..=366.0 * 86_400.0).contains(&secs)) {
        return Err(Failure::Usage(format!(
            "--idle-exit {secs}: give a number of seconds from 0 to 31622400"
        )));
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// The run's options: the job's, with the flags applied.
fn options(job: &Job, args: &RunArgs) -> Result<RunOptions, Failure> {
    let mut opts = RunOptions::for_job(job);
    opts.handle_signals = true;
    opts.from_start = args.from_start;
    if let Some(secs) = args.drain_timeout {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(Failure::Usage(format!(
                "--drain-timeout {secs}: give a number of seconds above 0"
            )));
        }
        opts.drain_timeout = Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    opts.idle_exit = idle_exit(job, args.idle_exit)?;
    if let Some(w) = args.workers {
        if w == 0 || w > MAX_WORKERS {
            return Err(Failure::Usage(format!(
                "-w {w}: use 1 to {MAX_WORKERS} workers (at most the number of cores pays)"
            )));
        }
        opts.workers = w;
    }
    opts.cluster = cluster(args)?;
    if let Some(now) = &args.now {
        opts.clock = Clock::Fixed(instant("--now", now)?);
    }
    if let Some(at) = &args.backlog_before {
        opts.backlog_before = Some(instant("--backlog-before", at)?);
    }
    Ok(opts)
}

/// The instant (ms) a flag gives in RFC 3339.
fn instant(flag: &str, value: &str) -> Result<i64, Failure> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            Failure::Usage(format!(
                "{flag} `{value}`: {e}; use RFC 3339, e.g. 2025-11-22T10:00:00+08:00"
            ))
        })
}

/// This process's place in a cluster (`-n`, `-p`, `-h`), checked.
fn cluster(args: &RunArgs) -> Result<Option<Cluster>, Failure> {
    let (Some(n), Some(p)) = (args.processes, args.process) else {
        return Ok(None);
    };
    if n == 0 || p >= n {
        return Err(Failure::Usage(format!(
            "-n {n} -p {p}: the process index is 0 to {}",
            n.saturating_sub(1)
        )));
    }
    if n == 1 {
        return Ok(None);
    }
    let addresses: Vec<String> = match &args.hostfile {
        None => (0..n).map(|i| format!("localhost:{}", 2101 + i)).collect(),
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::Usage(format!("-h {}: {e}", file.display())))?;
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            if lines.len() < n {
                return Err(Failure::Usage(format!(
                    "-h {}: {} address(es) for -n {n}; give one `host:port` line per process",
                    file.display(),
                    lines.len()
                )));
            }
            if let Some(bad) = lines.iter().take(n).find(|l| {
                l.rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            }) {
                return Err(Failure::Usage(format!(
                    "-h {}: `{bad}` is not host:port",
                    file.display()
                )));
            }
            lines.into_iter().take(n).collect()
        }
    };
    let connect_timeout = match args.connect_timeout {
        None => Cluster::CONNECT_TIMEOUT,
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(Failure::Usage(format!(
                "--connect-timeout {s}: give a positive number of seconds"
            )));
        }
    };
    Ok(Some(Cluster {
        process: p,
        addresses,
        connect_timeout,
    }))
}

fn print_summary(job: &Job, opts: &RunOptions, s: &Summary) {
    let process = match &opts.cluster {
        Some(c) => format!(" (process {} of {})", c.process, c.processes()),
        None => String::new(),
    };
    println!(
        "job `{}`{process} finished in {:.2?} with {} worker(s)",
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
    if let Some(r) = &s.redis {
        println!(
            "redis: {} rows written, {} waiting in the spool for Redis{}",
            r.written,
            r.spooled,
            if r.failures > 0 {
                format!(" ({} failed attempts)", r.failures)
            } else {
                String::new()
            }
        );
    }
    let receive = s.counts.states.get(&State::Receive).copied().unwrap_or(0);
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "receivers/s: {:.0}   tracking: {}",
        receive as f64 / secs,
        job.tracking_dir
    );
}
