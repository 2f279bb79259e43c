//! `tidings-bench throughput JOB.toml [-w N]`: run a job end to end and report requests/s,
//! receivers/s and peak RSS of this process.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tidings_dataflows::{Job, RunOptions, run};
use tidings_model::State;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a file-source job to the end and measure it.
    Throughput {
        /// The job file.
        job: PathBuf,
        /// Worker threads.
        #[arg(short, long)]
        workers: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Throughput { job, workers } => {
            let job = Job::load(&job).map_err(|e| anyhow::anyhow!("{e}"))?;
            let lines = std::fs::read(job.source_path.as_ref().expect("file source"))?
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            let mut opts = RunOptions::for_job(&job);
            if let Some(w) = workers {
                opts.workers = w;
            }
            let s = run(&job, &opts)?;
            let secs = s.elapsed.as_secs_f64();
            let receivers = s.counts.states.get(&State::Receive).copied().unwrap_or(0);
            let rss = tidings_bench::peak_rss_bytes().unwrap_or(0);
            println!(
                "{}",
                serde_json::json!({
                    "requests": lines,
                    "receivers": receivers,
                    "workers": opts.workers,
                    "seconds": secs,
                    "requests_per_s": lines as f64 / secs,
                    "receivers_per_s": receivers as f64 / secs,
                    "peak_rss_mib": rss as f64 / (1024.0 * 1024.0),
                })
            );
            Ok(())
        }
    }
}
