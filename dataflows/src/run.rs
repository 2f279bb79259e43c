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
use tidings_operators::checkpoint::{Checkpoints, FINAL, write_durably};
use tidings_operators::dedup::{ContentDedup, FrequencyDedup, keyed};
use tidings_operators::gate::Gate;
use tidings_operators::live::Live;
use tidings_operators::park::{ParkStore, park};
use tidings_operators::shield::NightShield;
use tidings_operators::validate::Validator;
use tidings_operators::{Clock, Epoch, split};
use tidings_sinks::account::Accounts;
use tidings_sinks::route::Route;
use tidings_sinks::tracking::redis::{RedisSettings, RedisWriter, UserTtl, WriterStats};
use tidings_sinks::tracking::{MemoryTracking, ParquetTracking, Tracking};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Concatenate, Probe};

use rdkafka::consumer::CommitMode;

use crate::admin::{AdminServer, AdminState};
use crate::backlog::{BacklogReader, Queues, backlog_source};
use crate::health::Health;
use crate::job::Job;
use crate::kafka::{DeadLetterTopic, KafkaReader, kafka_source};
use crate::lock::{RunLock, probe_writable};
use crate::send::{SendContext, SendMode, recall, send};
use crate::signals;
use crate::source::{FileSettings, file_source};
use crate::track::{Counts, track};
use tidings_operators::SourceRecord;
use timely::dataflow::operators::Exchange;

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
    /// Records a source may have given on and not yet seen sent before it waits.
    pub in_flight: usize,
    /// Start without the newest checkpoint: read the source from its start with fresh dedup
    /// windows (a deliberate replay).
    pub from_start: bool,
    /// Stop gracefully on Ctrl-C / SIGTERM (stop reading, drain, flush).
    pub handle_signals: bool,
    /// Kafka source: end the run once no record has arrived for this long.
    pub idle_exit: Option<Duration>,
    /// Set to stop gracefully, as Ctrl-C does (for embedding and benchmarks).
    pub stop: Option<Arc<AtomicBool>>,
    /// A graceful stop halts the run this long after it began if the graph has not drained by
    /// then (`--drain-timeout`); `None` waits as long as the drain takes.
    pub drain_timeout: Option<Duration>,
    /// The run fails once tracking has been unwritable this long (`None`: retries for ever,
    /// holding new sends). Files end; Kafka jobs wait for space to come back.
    pub tracking_give_up: Option<Duration>,
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
            in_flight: 2_000,
            from_start: false,
            handle_signals: false,
            idle_exit: None,
            stop: None,
            drain_timeout: Some(DRAIN_TIMEOUT),
            tracking_give_up: job.kafka.is_none().then_some(TRACKING_GIVE_UP),
        }
    }
}

/// The default bound of a graceful stop's drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a file job waits for its tracking directory to take rows again.
pub const TRACKING_GIVE_UP: Duration = Duration::from_secs(60);

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rows per state and dead letters.
    pub counts: Counts,
    /// Deliveries still parked when the run ended.
    pub parked: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// What the Redis tracking writer did, when the job tracks to Redis.
    pub redis: Option<WriterStats>,
}

/// Runs a job to the end of its source.
pub fn run(job: &Job, opts: &RunOptions) -> anyhow::Result<Summary> {
    let start = Instant::now();
    // One runner per job; a tracking or state directory that takes no file fails the run
    // before anything is sent.
    let _lock = RunLock::acquire(&job.state_dir)?;
    probe_writable("state_dir", &job.state_dir)?;
    if matches!(opts.tracking, TrackingTarget::Parquet) {
        probe_writable("tracking.dir", &job.tracking_dir)?;
        let removed = tidings_sinks::tracking::remove_stale_tmp(&job.tracking_dir);
        if removed > 0 {
            eprintln!(
                "tracking.dir {}: removed {removed} unfinished .tmp file(s) left by an earlier run",
                job.tracking_dir.display()
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("tidings-send")
        .build()?;
    let stop = opts
        .stop
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let health = Health::new(stop.clone());
    let mut accounts = Accounts::build(&job.file.accounts, &job.base)?;
    accounts.halt_with(health.halt_flag());
    accounts.keep_recall_books(&job.state_dir.join("recall"), wall_ms())?;
    let route_of: HashMap<i64, Route> = job
        .account_of
        .iter()
        .map(|(t, a)| {
            let route = match (accounts.index(a), job.file.groups.get(a)) {
                (Some(i), _) => Route::single(i),
                (None, Some(g)) => Route::weighted(g.accounts.iter().map(|(m, w)| {
                    (
                        accounts.index(m).expect("job check resolved every member"),
                        *w,
                    )
                })),
                (None, None) => unreachable!("job check resolved every account"),
            };
            (*t, route)
        })
        .collect();
    let queues = Arc::new(Queues::build(
        &job.file.accounts,
        job.kafka.as_ref(),
        &runtime,
    )?);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let send_ctx = Arc::new(SendContext {
        accounts,
        route_of,
        templates: job.templates.clone(),
        runtime: runtime.handle().clone(),
        queues: queues.clone(),
        health: health.clone(),
        counts: counts.clone(),
    });
    let live = Live::default();
    let main_done_w = Arc::new(AtomicBool::new(false));
    if opts.handle_signals {
        signals::handle_signals(&runtime, stop.clone(), health.clone());
    }
    let finished = Arc::new(AtomicBool::new(false));
    watch_run(&runtime, job, opts, &stop, &finished, &health, &counts);
    let parked = Arc::new(Mutex::new(0usize));
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let run_id = format!("{started_ms}-{}", std::process::id());
    // A job resumes from its newest complete checkpoint: the source at its positions, the park
    // store the checkpoint's (records after the cut are replayed and park again).
    let source_name: Arc<str> = match (&job.kafka, &job.source_path) {
        (Some(k), _) => k.topic.as_str().into(),
        (None, Some(path)) => {
            let shown = job.file.source.path.as_deref().unwrap_or(path).display();
            format!("file:{shown}").into()
        }
        (None, None) => anyhow::bail!("the job has no source"),
    };
    let checkpoints = {
        let c = Checkpoints::open(&job.state_dir, &source_name, started_ms, opts.from_start)?;
        if let Some(dir) = c.restored() {
            let parked = std::fs::read(dir.join("parked.jsonl")).unwrap_or_default();
            write_durably(&job.state_dir.join("parked.jsonl"), &parked)?;
        } else if opts.from_start {
            write_durably(&job.state_dir.join("parked.jsonl"), b"")?;
        }
        Some(c)
    };
    let job = Arc::new(job.clone());
    let admin = match &job.admin {
        Some(settings) => Some(AdminServer::start(
            settings,
            AdminState {
                job: job.clone(),
                live: live.clone(),
                send: send_ctx.clone(),
                counts: counts.clone(),
                clock: opts.clock,
                started: start,
            },
        )?),
        None => None,
    };
    let live_w = live.clone();
    let opts = opts.clone();
    let (job_w, counts_w, parked_w, stop_w) =
        (job.clone(), counts.clone(), parked.clone(), stop.clone());
    let checkpoints_w = checkpoints.clone();
    let source_name_w = source_name.clone();
    let redis = match &job.file.tracking.redis {
        Some(url) => {
            let (writer, sink) = RedisWriter::start(RedisSettings {
                url: url.clone(),
                prefix: job.file.tracking.redis_prefix.clone(),
                spool_dir: job.state_dir.join("redis-spool"),
                max_in_memory: 100_000,
                drain_timeout: Duration::from_secs(3),
            })?;
            let ttl = match job.file.tracking.redis_user_ttl_secs {
                Some(s) => UserTtl::Seconds(s as i64),
                None => UserTtl::EndOfDay(job.tz),
            };
            Some((writer, sink, ttl))
        }
        None => None,
    };
    let redis_w = Arc::new(Mutex::new(
        redis.as_ref().map(|(_, sink, ttl)| (sink.clone(), *ttl)),
    ));
    let redis_take = redis_w.clone();
    let health_w = health.clone();
    let guards = timely::execute(
        timely::Config::process(opts.workers.max(1)),
        move |worker| {
            // A panic below fails the run: every worker leaves its step loop.
            let _fails_the_run = health_w.on_panic(worker.index());
            let job = &job_w;
            let live = &live_w;
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
            let validator = Validator::new(job.templates.clone(), job.tz)
                .with_max_future_ms(job.event.max_future_ms);
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
            let checkpoints = checkpoints_w.clone();
            let peers = worker.peers();
            let reader = job.kafka.as_ref().map(|k| {
                let restored = checkpoints
                    .as_ref()
                    .map(|c| c.restored_positions())
                    .unwrap_or_default();
                KafkaReader::connect(k, index, peers, restored, live.clone())
                    .unwrap_or_else(|e| panic!("kafka {}: {e}", k.brokers))
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
            let main_done = main_done_w.clone();
            let queues = queues.clone();
            let redis = redis_w.lock().unwrap_or_else(|p| p.into_inner()).clone();
            worker.dataflow::<Epoch, _, _>(|scope| {
                let cuts = checkpoints.clone().expect("every job has checkpoints");
                let cuts_for_track = cuts.clone();
                let records = match &reader {
                    Some(r) => kafka_source(
                        scope,
                        r.clone(),
                        cuts,
                        opts.in_flight,
                        job.event,
                        sent.clone(),
                        clock,
                        stop_w.clone(),
                        opts.idle_exit,
                        live.clone(),
                    ),
                    None => {
                        let path = job
                            .source_path
                            .clone()
                            .expect("job check requires a file source path");
                        let paths = crate::job::partition_files(&path);
                        let names = if path.is_dir() {
                            paths
                                .iter()
                                .map(|p| {
                                    let file = p.file_name().unwrap_or_default().to_string_lossy();
                                    Arc::from(format!("{source_name_w}/{file}"))
                                })
                                .collect()
                        } else {
                            vec![source_name_w.clone()]
                        };
                        // Worker `i % peers` reads partition `i`; lines are spread over the
                        // workers.
                        file_source(
                            scope,
                            FileSettings {
                                paths,
                                names,
                                batch_lines: job.file.source.epoch_lines,
                                in_flight: opts.in_flight,
                                event: job.event,
                                follow: job.file.source.follow,
                            },
                            sent.clone(),
                            clock,
                            stop_w.clone(),
                            cuts,
                            live.clone(),
                        )
                        .exchange(|r: &SourceRecord| {
                            (r.offset as u64)
                                .wrapping_mul(31)
                                .wrapping_add(r.partition as u64)
                        })
                    }
                };
                let admitted = split(admit(records, validator, gate, clock));
                let released = park(
                    admitted.park,
                    store,
                    clock,
                    job.event,
                    checkpoints.clone(),
                    Some(live.clone()),
                );
                let passes = scope.concatenate([admitted.pass, released]);
                let after_content = split(keyed(
                    passes,
                    admitted.mark.clone(),
                    content,
                    clock,
                    checkpoints.clone(),
                    Some(live.clone()),
                ));
                let after_frequency = split(keyed(
                    after_content.pass,
                    admitted.mark,
                    frequency,
                    clock,
                    checkpoints.clone(),
                    Some(live.clone()),
                ));
                let outcomes = send(
                    after_frequency.pass,
                    send_ctx.clone(),
                    clock,
                    SendMode::Main,
                )
                .probe_with(&sent);
                // Recall requests skip the rules; they run once the sends before them are done.
                let recalled = recall(admitted.recall, send_ctx.clone(), clock, sent.clone());
                let rows = scope.concatenate([
                    admitted.track,
                    after_content.track,
                    after_frequency.track,
                    outcomes,
                    recalled,
                ]);
                track(
                    rows,
                    tracking,
                    job.file.tracking.flush_rows,
                    Duration::from_millis(job.file.tracking.flush_interval_ms),
                    counts.clone(),
                    dead_letter_topic,
                    redis.clone(),
                    Some(cuts_for_track),
                )
                .probe_with(&done);
            });
            // The account topics: their own dataflow, so their pace never holds the main one.
            let done_accounts = ProbeHandle::<Epoch>::new();
            let account_reader = job
                .kafka
                .as_ref()
                .filter(|_| index == 0 && queues.any())
                .map(|k| {
                    BacklogReader::connect(k, &queues, &job.state_dir)
                        .unwrap_or_else(|e| panic!("account topics on {}: {e}", k.brokers))
                });
            if queues.any() {
                let tracking = match &opts.tracking {
                    TrackingTarget::Parquet => Tracking::Parquet(ParquetTracking::new(
                        &job.tracking_dir,
                        job.tz,
                        job.templates.clone(),
                        &format!("{run_id}-accounts"),
                        index,
                    )),
                    TrackingTarget::Memory(m) => Tracking::Memory(m.clone()),
                };
                worker.dataflow::<Epoch, _, _>(|scope| {
                    let read = split(backlog_source(
                        scope,
                        account_reader.clone(),
                        queues.clone(),
                        clock,
                        stop_w.clone(),
                        main_done.clone(),
                    ));
                    let outcomes = send(read.pass, send_ctx, clock, SendMode::Accounts);
                    let rows = scope.concatenate([read.track, outcomes]);
                    track(
                        rows,
                        tracking,
                        job.file.tracking.flush_rows,
                        Duration::from_millis(job.file.tracking.flush_interval_ms),
                        counts,
                        None,
                        redis,
                        None,
                    )
                    .probe_with(&done_accounts);
                });
            }
            // Worker 0 completes each checkpoint the "done" frontier has passed; every worker
            // then commits its offsets of that checkpoint, never before.
            let mut seen: Option<Epoch> = Some(0);
            let mut committed: Option<Epoch> = None;
            let mut commit_completed = |mode| {
                if let (Some(c), Some(r)) = (&checkpoints, &reader)
                    && let Some((e, offsets)) = c.completed()
                    && committed != Some(e)
                {
                    r.commit(&offsets, mode);
                    committed = Some(e);
                }
            };
            let mut accounts_seen: Option<Epoch> = Some(0);
            let mut last_cut = Instant::now();
            while !done.done() || !done_accounts.done() {
                worker.step_or_park(Some(Duration::from_millis(1)));
                if health_w.may_leave() {
                    // A peer failed, or a halt: no checkpoint is completed.
                    return crate::health::leave(worker);
                }
                if index == 0
                    && let Some(c) = &checkpoints
                    && last_cut.elapsed() >= job.checkpoint
                {
                    c.request_cut();
                    last_cut = Instant::now();
                }
                if done.done() {
                    main_done.store(true, Ordering::Relaxed);
                }
                if let Some(r) = &account_reader {
                    let f = done_accounts.with_frontier(|f| f.first().copied());
                    if f != accounts_seen {
                        r.commit_done(f, CommitMode::Async);
                        accounts_seen = f;
                    }
                }
                let frontier = done.with_frontier(|f| f.first().copied());
                if index == 0
                    && frontier != seen
                    && let (Some(c), Some(f)) = (&checkpoints, frontier)
                {
                    if c.complete_before(Some(f))
                        .unwrap_or_else(|e| panic!("checkpoint: {e}"))
                        .is_some()
                    {
                        live.checkpoint().completed_at(wall_ms());
                    }
                    seen = frontier;
                }
                commit_completed(CommitMode::Async);
                // A graceful stop ends here once its cut is complete (and the account topics
                // drained): what was read past the cut is dropped, the next run reads it again.
                if let Some(c) = &checkpoints
                    && let Some(cut) = c.stop_cut()
                    && c.completed().is_some_and(|(e, _)| e == cut)
                    && done_accounts.done()
                {
                    commit_completed(CommitMode::Sync);
                    if let Some(r) = &account_reader {
                        r.commit_done(None, CommitMode::Sync);
                    }
                    if index == 0 {
                        *parked_w.lock().unwrap_or_else(|p| p.into_inner()) =
                            ParkStore::open(&job.state_dir.join("parked.jsonl"))
                                .map(|s| s.len())
                                .unwrap_or(0);
                    }
                    return crate::health::leave(worker);
                }
            }
            if let Some(c) = &checkpoints {
                if index == 0 {
                    c.complete_before(None)
                        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
                } else {
                    // Worker 0 writes the final cut once its probe is done too.
                    let waited = Instant::now();
                    while c.completed().is_none_or(|(e, _)| e != FINAL)
                        && waited.elapsed() < Duration::from_secs(60)
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                commit_completed(CommitMode::Sync);
            }
            if let Some(r) = &account_reader {
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
    let joined = guards.join();
    finished.store(true, Ordering::SeqCst);
    live.close();
    if let Some(a) = admin {
        a.stop();
    }
    drop(runtime);
    // Every worker's sink is gone with its worker; the writer drains (or spools) the rest.
    redis_take.lock().unwrap_or_else(|p| p.into_inner()).take();
    let redis = redis.map(|(writer, sink, _)| {
        drop(sink);
        writer.finish()
    });
    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // A panic is named by the health (the guard saw it); the join only says "Any { .. }".
    ended_early(&health, &job, &counts)?;
    if let Some(e) = joined.into_iter().find_map(Result::err) {
        anyhow::bail!("a worker failed: {e}");
    }
    let parked = *parked.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Summary {
        counts,
        parked,
        elapsed: start.elapsed(),
        redis,
    })
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Watches the run from the side: the drain (progress, `drain_timeout`) and tracking that has
/// failed for longer than `tracking_give_up`.
fn watch_run(
    runtime: &tokio::runtime::Runtime,
    job: &Job,
    opts: &RunOptions,
    stop: &Arc<AtomicBool>,
    finished: &Arc<AtomicBool>,
    health: &Arc<Health>,
    counts: &Arc<Mutex<Counts>>,
) {
    let progress: signals::Progress = {
        let counts = counts.clone();
        Arc::new(move || counts.lock().unwrap_or_else(|p| p.into_inner()).progress())
    };
    signals::watch_drain(
        runtime,
        stop.clone(),
        finished.clone(),
        health.clone(),
        opts.drain_timeout,
        progress,
    );
    if let Some(bound) = opts.tracking_give_up {
        let (finished, health, counts) = (finished.clone(), health.clone(), counts.clone());
        let dir = job.tracking_dir.clone();
        runtime.spawn(async move {
            while !finished.load(Ordering::SeqCst) && !health.must_leave() {
                let failing = counts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .tracking_failing(wall_ms());
                if let Some((for_ms, error)) = failing
                    && for_ms >= bound.as_millis() as i64
                {
                    health.fail(format!(
                        "tracking.dir {}: rows could not be written for {} s ({error}); new sends were held back",
                        dir.display(),
                        bound.as_secs()
                    ));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

/// The error of a run that failed or was halted before its graph drained.
fn ended_early(health: &Health, job: &Job, counts: &Counts) -> anyhow::Result<()> {
    let owed = if counts.tracking_owed > 0 {
        format!(
            "; {} tracking rows could not be written to tracking.dir {}",
            counts.tracking_owed,
            job.tracking_dir.display()
        )
    } else {
        String::new()
    };
    if let Some(f) = health.failure() {
        anyhow::bail!("{f}{owed}");
    }
    if let Some(h) = health.halted() {
        let rest = if job.kafka.is_some() {
            "the rest waits in Kafka (replayed from the last checkpoint)"
        } else {
            "the next run reads the file on from the last checkpoint (what came after it is read again)"
        };
        anyhow::bail!("{h}: {rest}{owed}");
    }
    Ok(())
}
