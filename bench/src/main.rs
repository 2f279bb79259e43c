//! `tidings-bench throughput JOB.toml [-w N]`: run a job end to end and report requests/s,
//! receivers/s and peak RSS of this process.

/// mimalloc, not glibc malloc: send futures are allocated on timely worker threads and freed
/// on tokio threads, and glibc's per-thread arenas then keep growing (measured: peak RSS of the
/// 1M-request run). `--features system-alloc` leaves glibc's malloc in place, for heap
/// profilers that hook it (`heaptrack`: allocations per request, the heap at its peak).
#[cfg(not(any(feature = "system-alloc", feature = "heap-count")))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--features heap-count`: mimalloc, with the bytes live counted (`TIDINGS_HEAP_SAMPLE_MS`
/// prints the live bytes and the RSS to stderr at that period).
#[cfg(feature = "heap-count")]
#[global_allocator]
static ALLOC: tidings_bench::heap_count::Counting = tidings_bench::heap_count::Counting;

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
    /// Bytes per active key of the content and frequency dedup state, by RSS growth.
    StateSize {
        /// Active keys to insert.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
    },
    /// A backlog on a rate-limited account next to another channel's notices (needs a broker:
    /// `KAFKA_BROKERS`, default 127.0.0.1:19092).
    Isolation {
        /// Receivers queued for the rate-limited account.
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// The rate limit (receivers per second).
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Notices per second on the other channel.
        #[arg(long, default_value_t = 200)]
        notices: u32,
        /// Seconds of notices.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds the job has to read the backlog before the notices start.
        #[arg(long, default_value_t = 30)]
        warmup: u64,
        /// Queue the rate-limited account in memory instead (no isolation).
        #[arg(long)]
        baseline: bool,
        /// The job's `source.epoch_ms` (default: the job file's default for Kafka, 10).
        #[arg(long)]
        epoch_ms: Option<u64>,
        /// The job's `source.in_flight_receivers` (default: the job file's default).
        #[arg(long)]
        in_flight_receivers: Option<usize>,
    },
    /// The job end to end against the broker, beside a raw consumer of the same topic (needs a
    /// broker; `--redis` also needs Redis).
    E2e {
        /// Requests to produce.
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        /// Receivers per request.
        #[arg(long, default_value_t = 1)]
        receivers: u64,
        /// Also track in Redis (`REDIS_URL`, default redis://127.0.0.1:16379).
        #[arg(long)]
        redis: bool,
        /// Offer requests at this rate instead and report produce → SEND_SUCCESS latency.
        #[arg(long)]
        rate: Option<u32>,
        /// Seconds of offered load (with `--rate`).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// The job's `source.epoch_ms`.
        #[arg(long, default_value_t = 100)]
        epoch_ms: u64,
        /// The job's `source.max_out_of_order_ms` (the source's default when not given).
        #[arg(long)]
        max_out_of_order_ms: Option<u64>,
        /// The job's `source.in_flight` (the default when not given).
        #[arg(long)]
        in_flight: Option<usize>,
        /// The job's `source.in_flight_receivers` (the default when not given).
        #[arg(long)]
        in_flight_receivers: Option<usize>,
        /// With `--rate`: a plain consumer instead of the job (the broker's own latency).
        #[arg(long)]
        raw: bool,
        /// Without `--rate`: run the job in this process, not in a process of its own (its
        /// peak RSS then includes what the producer and the raw consumer left resident).
        #[arg(long)]
        in_process: bool,
        /// Without `--rate`: the requests' Kafka timestamps spread evenly over this many ms
        /// ending now, as a backlog read after the job was down that long (default: the
        /// producer's clock, a burst of a second or two).
        #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u64).range(1..=31_536_000_000))]
        spread_ms: Option<u64>,
        /// The job's `source.backlog_epoch_ms` (the default when not given; `--epoch-ms`
        /// itself: no coarser epochs for a backlog).
        #[arg(long)]
        backlog_epoch_ms: Option<u64>,
        /// Without `--rate`: run the job as a cluster of this many processes on this machine
        /// (one worker each, `run-job --process I --hosts …`); they agree on one backlog line.
        #[arg(long, default_value_t = 1, conflicts_with_all = ["rate", "in_process"], value_parser = clap::value_parser!(u64).range(1..=8))]
        processes: u64,
    },
    /// Runs a job file until its Kafka source is idle (the `e2e` run's job process) and prints
    /// its peak RSS and CPU time (JSON).
    #[command(hide = true)]
    RunJob {
        /// The job file.
        job: PathBuf,
        /// Seconds without a record after every partition reached its end.
        #[arg(long, default_value_t = 3)]
        idle_exit: u64,
        /// As process I of a cluster (one worker) whose processes listen at `--hosts`.
        #[arg(long, requires = "hosts")]
        process: Option<usize>,
        /// Every process's `host:port`, comma-separated, in index order.
        #[arg(long, value_delimiter = ',', requires = "process")]
        hosts: Vec<String>,
    },
    /// Produces requests at a fixed rate (the latency run's producer process).
    Produce {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Requests per second.
        #[arg(long)]
        rate: u32,
        /// For this many seconds.
        #[arg(long)]
        seconds: u64,
        /// Receivers per request.
        #[arg(long, default_value_t = 1)]
        receivers: u64,
    },
    /// The graph to a blackhole, to Tencent SMS over HTTP (the provider simulator, in a
    /// process of its own), through a failing group member to it, and notices to Aliyun SMS
    /// sharing `SendBatchSms` calls: receivers/s side by side.
    Providers {
        /// Requests (one receiver each).
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Provider calls in flight per account.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Run the simulator in this process (the way it was measured before), not in a
        /// process of its own.
        #[arg(long)]
        in_process: bool,
    },
    /// The provider simulator as the `providers` run's other process: prints its address,
    /// answers until its stdin closes, then prints what it received (JSON).
    Simulator {
        /// Answer every call normally (no injected faults).
        #[arg(long)]
        no_faults: bool,
    },
    /// The same dedup decisions austin's way (Redis Lua + MGET/SETEX) and in-graph, side by
    /// side (needs Redis: `REDIS_URL`, default redis://127.0.0.1:16379).
    AustinDedup {
        /// Deliveries to judge.
        #[arg(long, default_value_t = 200_000)]
        deliveries: u64,
        /// Distinct receivers.
        #[arg(long, default_value_t = 50_000)]
        receivers: u64,
        /// Receivers per message.
        #[arg(long, default_value_t = 10)]
        per_message: u64,
    },
    /// Checkpoint parts of both dedup rules holding `keys` active keys each: bytes on disk
    /// per key, and the time to write and to read them back.
    Checkpoint {
        /// Active keys per rule.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
    },
    /// One worker's tracking writer: messages' RECEIVE and SEND_SUCCESS rows into Parquet files
    /// as the job writes them; time per row and bytes per row.
    TrackingEncode {
        /// Messages (two rows each).
        #[arg(long, default_value_t = 500_000)]
        messages: u64,
        /// Rows per file (the job's `tracking.flush_rows`).
        #[arg(long, default_value_t = 200_000)]
        flush_rows: usize,
    },
    /// `SELECT state, count(*) FROM events GROUP BY state` over one day of `rows` tracking rows
    /// in `files` small files, then after compacting the day.
    CompactionQuery {
        /// Rows in the day.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Small files the rows are flushed into (a day at the default flush interval on 2
        /// workers is ~170,000).
        #[arg(long, default_value_t = 10_000)]
        files: u64,
    },
    /// Lists `days` days of tracking files on an object store answering each read after
    /// `latency_ms` (S3's round trip), each day holding `per_day` compacted files and their lists
    /// of replaced files: the lists read one after the other (the baseline), many at once, and
    /// kept from the listing before.
    ReplacesListing {
        /// Days listed.
        #[arg(long, default_value_t = 30)]
        days: usize,
        /// Compacted files a day (a day at the default compaction settings has ~144).
        #[arg(long, default_value_t = 144)]
        per_day: usize,
        /// Milliseconds before the store answers a read.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
    },
    /// Run a file-source job to the end and measure it.
    Throughput {
        /// The job file.
        job: PathBuf,
        /// Worker threads.
        #[arg(short, long)]
        workers: Option<usize>,
        /// Records the source may have out (the job's `source.in_flight` when not given).
        #[arg(long)]
        in_flight: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    // As the `tidings` binary does: the figures are the shipped binary's.
    tidings_dataflows::memory::init();
    match Cli::parse().command {
        Command::StateSize { keys } => state_size(keys),
        Command::Checkpoint { keys } => tidings_bench::storage::checkpoint(keys),
        Command::TrackingEncode {
            messages,
            flush_rows,
        } => tidings_bench::storage::tracking_encode(messages, flush_rows),
        Command::CompactionQuery { rows, files } => {
            tidings_bench::storage::compaction_query(rows, files)
        }
        Command::ReplacesListing {
            days,
            per_day,
            latency_ms,
        } => tidings_bench::storage::replaces_listing(days, per_day, latency_ms),
        Command::Isolation {
            backlog,
            rate,
            notices,
            seconds,
            warmup,
            baseline,
            epoch_ms,
            in_flight_receivers,
        } => {
            let report = tidings_bench::isolation::Isolation {
                brokers: brokers(),
                backlog,
                rate,
                notices,
                seconds,
                warmup,
                baseline,
                epoch_ms,
                in_flight_receivers,
            }
            .run()?;
            println!("{report}");
            // A baseline run leaves its backlog draining at the rate limit: end here.
            std::process::exit(0)
        }
        Command::E2e {
            requests,
            receivers,
            redis,
            rate,
            seconds,
            epoch_ms,
            max_out_of_order_ms,
            in_flight,
            in_flight_receivers,
            raw,
            in_process,
            spread_ms,
            backlog_epoch_ms,
            processes,
        } => {
            let report = tidings_bench::e2e::E2e {
                brokers: brokers(),
                redis: redis.then(redis_url),
                requests,
                receivers,
                rate,
                seconds,
                epoch_ms,
                max_out_of_order_ms,
                in_flight,
                in_flight_receivers,
                raw,
                in_process,
                spread_ms,
                backlog_epoch_ms,
                processes: processes as usize,
            }
            .run()?;
            println!("{report}");
            Ok(())
        }
        Command::RunJob {
            job,
            idle_exit,
            process,
            hosts,
        } => {
            let cluster = process.map(|process| tidings_dataflows::Cluster {
                process,
                addresses: hosts,
                connect_timeout: tidings_dataflows::Cluster::CONNECT_TIMEOUT,
            });
            let report = tidings_bench::e2e::run_job(
                &job,
                std::time::Duration::from_secs(idle_exit),
                cluster,
            )?;
            println!("{report}");
            Ok(())
        }
        Command::Produce {
            topic,
            rate,
            seconds,
            receivers,
        } => {
            let n =
                tidings_bench::e2e::produce_paced(&brokers(), &topic, rate, seconds, receivers)?;
            println!("{n}");
            Ok(())
        }
        Command::AustinDedup {
            deliveries,
            receivers,
            per_message,
        } => {
            let report =
                tidings_bench::austin::compare(&redis_url(), deliveries, receivers, per_message)?;
            println!("{report}");
            anyhow::ensure!(
                report["decisions_differ"] == 0,
                "austin's way and tidings decided differently"
            );
            Ok(())
        }
        Command::Providers {
            requests,
            concurrency,
            in_process,
        } => {
            let report = tidings_bench::providers::Providers {
                requests,
                concurrency,
                in_process,
            }
            .run()?;
            println!("{report}");
            Ok(())
        }
        Command::Simulator { no_faults } => tidings_bench::providers::simulator_process(!no_faults),
        Command::Throughput {
            job,
            workers,
            in_flight,
        } => throughput(&job, workers, in_flight),
    }
}

/// Bytes per active key of both dedup rules at `keys` keys (RSS before and after filling).
fn state_size(keys: u64) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tidings_operators::dedup::{ContentDedup, FrequencyDedup, KeyedRule};
    let templates = Arc::new(tidings_model::Templates::default());
    let t0 = 1_763_740_800_000i64;
    let before = tidings_bench::rss_bytes().unwrap_or(0);
    let mut content = ContentDedup::new(1, 300_000, 3_600_000, templates.clone());
    for k in 0..keys {
        let key = xxh(k);
        let _ = content.admit(key, t0 + (k % 300_000) as i64);
    }
    let mid = tidings_bench::rss_bytes().unwrap_or(0);
    let mut frequency = FrequencyDedup::new(5, chrono_tz::Asia::Shanghai, 3_600_000, templates);
    for k in 0..keys {
        let _ = frequency.admit(xxh(k) ^ 1, t0 + (k % 300_000) as i64);
    }
    let after = tidings_bench::rss_bytes().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "keys": keys,
            "content_keys": content.keys(),
            "frequency_keys": frequency.keys(),
            "content_bytes_per_key": (mid.saturating_sub(before)) as f64 / keys as f64,
            "frequency_bytes_per_key": (after.saturating_sub(mid)) as f64 / keys as f64,
        })
    );
    Ok(())
}

/// A file job run to its end: requests and receivers per second, peak RSS.
fn throughput(
    job: &std::path::Path,
    workers: Option<usize>,
    in_flight: Option<usize>,
) -> anyhow::Result<()> {
    let job = Job::load(job).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lines = count_lines(job.source_path.as_ref().expect("file source"))?;
    let mut opts = RunOptions::for_job(&job);
    if let Some(w) = workers {
        opts.workers = w;
    }
    if let Some(n) = in_flight {
        opts.in_flight = n;
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
            "in_flight": opts.in_flight,
            "seconds": secs,
            "requests_per_s": lines as f64 / secs,
            "receivers_per_s": receivers as f64 / secs,
            "peak_rss_mib": rss as f64 / (1024.0 * 1024.0),
        })
    );
    Ok(())
}

/// The lines of a file that are not empty. Counted a chunk at a time, each newline found by
/// `memchr`: reading the file whole would inflate the peak RSS measured, and a line at a time
/// (a `Vec` each) cost ~500 instructions a request, counted by `bench/instructions.sh` as the
/// job's.
fn count_lines(path: &std::path::Path) -> std::io::Result<usize> {
    count_lines_in(std::fs::File::open(path)?, 1 << 20)
}

/// [`count_lines`] of what `file` reads, `chunk` bytes at a time.
fn count_lines_in(mut file: impl std::io::Read, chunk: usize) -> std::io::Result<usize> {
    let mut buf = vec![0u8; chunk];
    // The byte before the chunk: a newline right after a newline ends an empty line.
    let (mut lines, mut last) = (0usize, b'\n');
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        lines += memchr::memchr_iter(b'\n', chunk)
            .filter(|&i| (if i == 0 { last } else { chunk[i - 1] }) != b'\n')
            .count();
        last = chunk[n - 1];
    }
    Ok(lines + usize::from(last != b'\n'))
}

/// The broker of `scripts/services.sh` unless `KAFKA_BROKERS` says otherwise.
fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The Redis of `scripts/services.sh` unless `REDIS_URL` says otherwise.
fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".into())
}

/// A well-mixed 128-bit key from a counter (as xxh3 keys are in the graph).
fn xxh(k: u64) -> u128 {
    let a = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k >> 29);
    let b = a.rotate_left(31).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((a as u128) << 64) | b as u128
}

#[cfg(test)]
mod tests {
    use super::count_lines_in;

    /// Lines that are not empty, whatever the chunks: a newline first in a chunk, empty lines
    /// across chunks, a last line without its newline.
    #[test]
    fn lines_are_counted_across_chunks() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\n\nb\n",
            "\n\na\nbc\n\n\nd",
            "ab\ncd\n\n",
        ] {
            let want = text.split('\n').filter(|l| !l.is_empty()).count();
            for chunk in 1..=4 {
                assert_eq!(
                    count_lines_in(text.as_bytes(), chunk).unwrap(),
                    want,
                    "{text:?} by {chunk}"
                );
            }
        }
    }
}
