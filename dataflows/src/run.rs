//! Builds the job's dataflow and runs it to completion.
//!
//! ```text
//! FileSource ─► Admit (validate + gate) ─┬─ pass ─► ContentDedup ─► FrequencyDedup ─► Send ─┐
//!                                        ├─ park ─► Park (worker 0) ─► (released) ─┘        │
//!                                        ├─ marks ─► (watermark of every keyed operator)     │
//!                                        └─ rows, dead letters ─────────────────────────────►├─► Track ─► probe
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_operators::admit::admit;
use tidings_operators::dedup::{ContentDedup, FrequencyDedup, keyed};
use tidings_operators::gate::Gate;
use tidings_operators::park::{ParkStore, park};
use tidings_operators::shield::NightShield;
use tidings_operators::validate::Validator;
use tidings_operators::{Clock, Epoch, split};
use tidings_sinks::account::Accounts;
use tidings_sinks::tracking::{MemoryTracking, ParquetTracking, Tracking};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Concatenate, Probe};

use rdkafka::consumer::CommitMode;

use crate::job::Job;
use crate::kafka::{DeadLetterTopic, KafkaReader, kafka_source};
use crate::send::{SendContext, send};
use crate::source::file_source;
use crate::track::{Counts, track};

/// Where a run writes its tracking rows.
#[derive(Debug, Clone)]
pub enum TrackingTarget {
    /// The job's Parquet directory.
    Parquet,
    /// A shared memory collector (tests).
    Memory(MemoryTracking),
}

/// How to run a job.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads.
    pub workers: usize,
    /// The wall clock.
    pub clock: Clock,
    /// Tracking target.
    pub tracking: TrackingTarget,
    /// Epochs each worker may have between its source and the send stage's frontier.
    pub in_flight: u64,
    /// Stop gracefully on Ctrl-C / SIGTERM (stop reading, drain, flush).
    pub handle_signals: bool,
    /// Kafka source: end the run once no record has arrived for this long.
    pub idle_exit: Option<Duration>,
}

impl RunOptions {
    /// Defaults for a job: its `workers` (or the number of cores), the system clock, Parquet.
    pub fn for_job(job: &Job) -> RunOptions {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        RunOptions {
            workers: job.file.workers.unwrap_or(cores),
            clock: Clock::System,
            tracking: TrackingTarget::Parquet,
            in_flight: 4,
            handle_signals: false,
            idle_exit: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rows per state and dead letters.
    pub counts: Counts,
    /// Deliveries still parked when the run ended.
    pub parked: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs a job to the end of its source.
pub fn run(job: &Job, opts: &RunOptions) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("tidings-send")
        .build()?;
    let accounts = Accounts::build(&job.file.accounts, &job.base)?;
    let account_of: HashMap<i64, usize> = job
        .account_of
        .iter()
        .map(|(t, a)| {
            (
                *t,
                accounts.index(a).expect("job check resolved every account"),
            )
        })
        .collect();
    let send_ctx = Arc::new(SendContext {
        accounts,
        account_of,
        templates: job.templates.clone(),
        runtime: runtime.handle().clone(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    if opts.handle_signals {
        let stop = stop.clone();
        runtime.spawn(async move {
            let term = async {
                #[cfg(unix)]
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
            eprintln!("stopping: draining what was read, flushing tracking");
            stop.store(true, Ordering::Relaxed);
        });
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let parked = Arc::new(Mutex::new(0usize));
    let run_id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        std::process::id()
    );
    let job = Arc::new(job.clone());
    let opts = opts.clone();
    let (job_w, counts_w, parked_w, stop_w) =
        (job.clone(), counts.clone(), parked.clone(), stop.clone());
    let guards = timely::execute(
        timely::Config::process(opts.workers.max(1)),
        move |worker| {
            let job = &job_w;
            let index = worker.index();
            let clock = opts.clock;
            let sent = ProbeHandle::<Epoch>::new();
            let done = ProbeHandle::<Epoch>::new();
            let store = if index == 0 {
                let path = job.state_dir.join("parked.jsonl");
                Some(ParkStore::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            } else {
                None
            };
            let tracking = match &opts.tracking {
                TrackingTarget::Parquet => Tracking::Parquet(ParquetTracking::new(
                    &job.tracking_dir,
                    job.tz,
                    job.templates.clone(),
                    &run_id,
                    index,
                )),
                TrackingTarget::Memory(m) => Tracking::Memory(m.clone()),
            };
            let validator = Validator::new(job.templates.clone(), job.tz);
            let gate = Gate {
                templates: job.templates.clone(),
                receivers: job.receivers.clone(),
                discard: job.file.discard.templates.iter().copied().collect(),
                whitelist: job.file.whitelist.receivers.iter().cloned().collect(),
                shield: NightShield {
                    window: job.night,
                    release_at: job.release_at,
                    tz: job.tz,
                },
            };
            let dedup = job.file.dedup;
            let lateness = dedup.lateness as i64 * 1000;
            let content = ContentDedup::new(
                dedup.content.num,
                dedup.content.time as i64 * 1000,
                lateness,
                job.templates.clone(),
            );
            let frequency =
                FrequencyDedup::new(dedup.frequency.num, job.tz, lateness, job.templates.clone());
            let reader = job.kafka.as_ref().map(|k| {
                KafkaReader::connect(k).unwrap_or_else(|e| panic!("kafka {}: {e}", k.brokers))
            });
            let dead_letter_topic = job.kafka.as_ref().and_then(|k| {
                let topic = k.dead_letter_topic.as_ref()?;
                Some(
                    DeadLetterTopic::connect(&k.brokers, topic)
                        .unwrap_or_else(|e| panic!("dead-letter topic {topic}: {e}")),
                )
            });
            let send_ctx = send_ctx.clone();
            let counts = counts_w.clone();
            worker.dataflow::<Epoch, _, _>(|scope| {
                let records = match &reader {
                    Some(r) => kafka_source(
                        scope,
                        r.clone(),
                        opts.in_flight,
                        sent.clone(),
                        clock,
                        stop_w.clone(),
                        opts.idle_exit,
                    ),
                    None => {
                        let path = job
                            .source_path
                            .clone()
                            .expect("job check requires a file source path");
                        let shown = job.file.source.path.as_deref().unwrap_or(&path).display();
                        let name: Arc<str> = format!("file:{shown}").into();
                        let lines = job.file.source.epoch_lines;
                        file_source(
                            scope,
                            path,
                            name,
                            lines,
                            opts.in_flight,
                            sent.clone(),
                            clock,
                            stop_w.clone(),
                        )
                    }
                };
                let admitted = split(admit(records, validator, gate, clock));
                let released = park(admitted.park, admitted.mark.clone(), store, clock);
                let passes = scope.concatenate([admitted.pass, released]);
                let after_content = split(keyed(passes, admitted.mark.clone(), content, clock));
                let after_frequency =
                    split(keyed(after_content.pass, admitted.mark, frequency, clock));
                let outcomes = send(after_frequency.pass, send_ctx, clock).probe_with(&sent);
                let rows = scope.concatenate([
                    admitted.track,
                    after_content.track,
                    after_frequency.track,
                    outcomes,
                ]);
                track(
                    rows,
                    tracking,
                    job.file.tracking.flush_rows,
                    Duration::from_millis(job.file.tracking.flush_interval_ms),
                    counts,
                    dead_letter_topic,
                )
                .probe_with(&done);
            });
            // Offsets are committed behind the "done" frontier, never ahead of it.
            let mut committed_to: Option<Epoch> = Some(0);
            while !done.done() {
                worker.step_or_park(Some(Duration::from_millis(1)));
                if let Some(r) = &reader {
                    let frontier = done.with_frontier(|f| f.first().copied());
                    if frontier != committed_to {
                        r.commit_done(frontier, CommitMode::Async);
                        committed_to = frontier;
                    }
                }
            }
            if let Some(r) = &reader {
                r.commit_done(None, CommitMode::Sync);
            }
            if index == 0 {
                let left = ParkStore::open(&job.state_dir.join("parked.jsonl"))
                    .map(|s| s.len())
                    .unwrap_or(0);
                *parked_w.lock().unwrap_or_else(|p| p.into_inner()) = left;
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot start workers: {e}"))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
    }
    drop(runtime);
    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let parked = *parked.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Summary {
        counts,
        parked,
        elapsed: start.elapsed(),
    })
}
