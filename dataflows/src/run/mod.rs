//! Runs a job: [`build`] starts and checks everything the run needs (one line and an exit code
//! on a bad setting, before any worker starts), [`graph`] builds the job's dataflows on each
//! worker, [`drive`] steps them with checkpoints and offset commits, and [`finish`] tears down
//! and reports.

mod build;
mod drive;
mod graph;
pub mod times;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_operators::Clock;
use tidings_sinks::tracking::MemoryTracking;
use tidings_sinks::tracking::redis::WriterStats;

use crate::health::Health;
use crate::job::Job;
use crate::signals;
use crate::track::Counts;
use build::Services;
pub(crate) use graph::validator;
pub(crate) use tidings_model::time::wall_ms;

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
    /// Receivers the admit stage may have given on and not yet seen sent before the next
    /// epoch waits.
    pub in_flight_receivers: usize,
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
    /// Run as one process of a timely cluster (`-n`, `-p`, `-h`); `None`: one process.
    pub cluster: Option<Cluster>,
    /// Event times before this are a backlog, in the job's `source.backlog_epoch_ms` epochs
    /// (it changes when decisions are made, never which). `None`: [`BACKLOG_AGE`] and the
    /// out-of-order bound before the run's start by `clock`; `Some(i64::MIN)`: none. A
    /// cluster's processes take process 0's (and are refused when given different ones).
    pub backlog_before: Option<tidings_model::time::Millis>,
}

/// This process's place in a cluster run: timely's cluster mode, every process with the same
/// number of workers (`workers`), exchanging over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index (`-p`), from 0.
    pub process: usize,
    /// Every process's `host:port`, in index order (the hostfile's lines).
    pub addresses: Vec<String>,
    /// How long this process waits for every process to connect before it fails (one line,
    /// exit 1) instead of waiting for ever: [`Cluster::CONNECT_TIMEOUT`] unless given.
    pub connect_timeout: Duration,
}

impl Cluster {
    /// How long a process waits for the others to connect by default (`--connect-timeout`).
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(600);

    /// The number of processes.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }
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
            in_flight: job.file.source.in_flight.unwrap_or(IN_FLIGHT),
            in_flight_receivers: job
                .file
                .source
                .in_flight_receivers
                .unwrap_or(IN_FLIGHT_RECEIVERS),
            from_start: false,
            handle_signals: false,
            idle_exit: None,
            stop: None,
            drain_timeout: Some(DRAIN_TIMEOUT),
            tracking_give_up: job.kafka.is_none().then_some(TRACKING_GIVE_UP),
            cluster: None,
            backlog_before: None,
        }
    }
}

/// Records a source reader may have given on and not yet seen sent, unless the job file's
/// `source.in_flight` says otherwise.
pub const IN_FLIGHT: usize = 2_000;

/// Receivers the admit stage may have given on and not yet seen sent before the next epoch
/// waits, unless the job file's `source.in_flight_receivers` says otherwise.
pub const IN_FLIGHT_RECEIVERS: usize = 100_000;

/// How long before a run's start, beyond the out-of-order bound, an event time is a backlog's
/// (read in coarser epochs, `source.backlog_epoch_ms`): a burst produced just before the start
/// keeps the live epochs, and with them their bound on what an epoch holds.
pub const BACKLOG_AGE: Duration = Duration::from_secs(60);

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

/// Runs a job to the end of its source (or a graceful stop): build, drive, finish.
pub fn run(job: &Job, opts: &RunOptions) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let mut services = Services::start(job, opts)?;
    // However the run returns, the side threads (the campaigns' scheduler) see it ended.
    let _ended = Ended(services.finished.clone());
    let shared = services.shared.clone();
    let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Set once the cluster formed, or timely gave up forming it (its error is the run's).
    let formed = Arc::new(Formed::default());
    if let Some(c) = &opts.cluster {
        watch_formation(c, formed.clone(), job, shared.stop.clone());
    }
    let formed_in_worker = formed.clone();
    let guards = timely::execute(timely_config(opts), move |worker| {
        // timely calls this once every process has connected.
        formed_in_worker.set();
        // A panic below fails the run: every worker leaves its step loop.
        let _fails_the_run = shared.health.on_panic(worker.index());
        let mut control = shared.opts.cluster.as_ref().map(|c| {
            tidings_operators::checkpoint::control::Control::build(
                worker,
                &shared.checkpoints,
                c.processes(),
                shared.opts.workers.max(1),
            )
        });
        let Some(event) = drive::agreed_event(worker, &shared, &mut control) else {
            return;
        };
        let operator_times = times::register(worker);
        let main = graph::main_dataflow(worker, &shared, event);
        let accounts = graph::accounts_dataflow(worker, &shared);
        shared
            .checkpoints
            .built(built.fetch_add(1, Ordering::SeqCst) + 1);
        drive::drive_worker(worker, &shared, main, accounts, control);
        if let Some(t) = operator_times {
            times::report(worker, &t);
        }
    });
    formed.set();
    let guards = guards.map_err(|e| anyhow::anyhow!("cannot start workers: {e}"))?;
    if opts.cluster.is_some() {
        fail_stop(&guards, &mut services);
    }
    let joined: Vec<Result<(), String>> = guards.join();
    times::report_threads();
    finish(services, joined, start)
}

/// Sets the run's `finished` flag when dropped.
struct Ended(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Fails the process (one line, exit 1) if the cluster has not formed within its connect
/// timeout: timely waits for every process to connect with no limit of its own, so a peer
/// that failed at its start, or was never started, would leave this one waiting for ever.
/// A stop asked while it waits (a signal, `serve`'s pipe closing) ends the process at once,
/// exit 0: nothing was read yet (it waited the whole drain bound, then was killed).
fn watch_formation(c: &Cluster, formed: Arc<Formed>, job: &Job, stop: Arc<AtomicBool>) {
    let (timeout, process, addresses) = (c.connect_timeout, c.process, c.addresses.clone());
    let path = job.path.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let mut done = formed.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done && Instant::now() < deadline {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::info!(
                    "{}: stopped before the cluster formed (process {process} of {}): nothing was read",
                    path.display(),
                    addresses.len()
                );
                std::process::exit(0);
            }
            done = formed
                .changed
                .wait_timeout(done, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if !*done {
            tracing::error!(
                "{}: the cluster did not form within {} s: process {process} of {} \
                     waited for the others to connect ({}); start every process with the same \
                     job file, -n, -w and hostfile (--connect-timeout sets the wait)",
                path.display(),
                timeout.as_secs_f64(),
                addresses.len(),
                addresses.join(", ")
            );
            std::process::exit(1);
        }
    });
}

/// Whether the cluster has formed (or timely gave up forming it), waited on by
/// [`watch_formation`].
#[derive(Default)]
struct Formed {
    done: Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Formed {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_all();
    }
}

/// A cluster is fail-stop: once this process's workers have left on a failure, the process
/// ends at once (one line, exit 1), without timely's orderly goodbye to its peers, so that
/// their connections break and they fail too instead of waiting for this process for ever.
/// The job is then run again from its newest complete cut (by `--local`, `serve` or the
/// operator's supervisor).
///
/// Rows already durable in Parquet but not yet in Redis are handed to the Redis writer's spool
/// first (at most [`SPOOL_GRACE`]): the restart replays only what follows its checkpoint, so
/// rows of before it that were still queued in memory would never reach Redis.
fn fail_stop(guards: &timely::communication::WorkerGuards<()>, services: &mut Services) {
    while !guards.guards().iter().all(|g| g.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (health, job) = (&services.shared.health, &services.shared.job);
    if let Some(f) = health.failure() {
        if let Some(writer) = services.redis.take() {
            // The workers' sinks went with them; the writer ends once this one is gone too.
            services
                .shared
                .redis
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(writer.finish());
            });
            match rx.recv_timeout(SPOOL_GRACE) {
                Ok(stats) if stats.spooled > 0 => {
                    tracing::warn!("{} Redis rows spooled for the next run", stats.spooled)
                }
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    "the Redis writer did not finish within {} s; rows it held are in Parquet only",
                    SPOOL_GRACE.as_secs()
                ),
            }
        }
        // A worker's panic after a peer's connection broke is that peer's going; a failure
        // this process recorded itself (e.g. a refused backlog line, which every process
        // records as the other ends) is said as it is.
        let why = match crate::health::network_failure() {
            Some(net) if health.failed_by_panic() => {
                format!("a peer process of the cluster is gone ({net})")
            }
            _ => f,
        };
        tracing::error!(
            "{}: {why}; the job runs again from its newest complete checkpoint",
            job.path.display()
        );
        std::process::exit(1);
    }
}

/// How long a failing process of a cluster waits for its Redis writer to spool what it holds.
const SPOOL_GRACE: Duration = Duration::from_secs(10);

/// timely's configuration: one process, or this process of a cluster.
fn timely_config(opts: &RunOptions) -> timely::Config {
    let workers = opts.workers.max(1);
    match &opts.cluster {
        None => timely::Config::process(workers),
        Some(c) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: c.process,
                addresses: c.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    }
}

/// Tears the run down (admin server, send runtime, Redis writer) and says how it ended.
fn finish(
    services: Services,
    joined: Vec<Result<(), String>>,
    start: Instant,
) -> anyhow::Result<Summary> {
    let Services {
        _lock,
        runtime,
        admin,
        redis,
        finished,
        compactor,
        campaigns,
        shared,
    } = services;
    finished.store(true, Ordering::SeqCst);
    if let Some(c) = campaigns
        && c.join().is_err()
    {
        tracing::warn!("the campaigns' thread panicked");
    }
    // A pass under way ends before the lock goes: the next run's compactor never overlaps it.
    if let Some(c) = compactor
        && c.join().is_err()
    {
        tracing::warn!("the compaction thread panicked");
    }
    shared.live.close();
    if let Some(a) = admin {
        a.stop();
    }
    drop(runtime);
    // Every worker's sink is gone with its worker; the writer drains (or spools) the rest.
    shared
        .redis
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let redis = redis.map(|writer| writer.finish());
    let counts = shared
        .counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // A panic is named by the health (the guard saw it); the join only says "Any { .. }".
    ended_early(&shared.health, &shared.job, &counts)?;
    if let Some(e) = joined.into_iter().find_map(Result::err) {
        anyhow::bail!("a worker failed: {e}");
    }
    let parked = *shared.parked.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Summary {
        counts,
        parked,
        elapsed: start.elapsed(),
        redis,
    })
}

/// Compacts the Parquet tables (and applies `tracking.retain_days`) every
/// `tracking.compact_every_secs` until the run has finished, on a thread of its own; a failed
/// pass is a warning and the next one tries again. Compaction never changes what a query sees
/// (`tidings_model::compaction`).
pub(crate) fn compact_in_background(
    job: &Job,
    finished: &Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    use tidings_sinks::tracking::TrackingDir;
    use tidings_sinks::tracking::compact::{self, CompactSettings};
    let t = &job.file.tracking;
    if t.compact_every_secs == 0 {
        return None;
    }
    let every = std::time::Duration::from_secs(t.compact_every_secs);
    let settings = CompactSettings {
        // Files of the last few flushes are left to come.
        settle: std::time::Duration::from_millis(t.flush_interval_ms.saturating_mul(2)),
        grace: std::time::Duration::from_secs(t.compact_grace_secs),
        // Renewed every pass: it outlives a pass and the wait for the next.
        lease: std::time::Duration::from_secs(600).max(every * 3),
        ..CompactSettings::default()
    };
    let (dir, tz, retain, finished) = (
        job.tracking_dir.clone(),
        job.tz,
        t.retain_days,
        finished.clone(),
    );
    let tables = ["events", "dead_letters"];
    for table in tables {
        match &dir {
            TrackingDir::Local(d) => {
                compact::remove_unfinished(&d.join(table));
            }
            TrackingDir::Object(o) => {
                if let Err(e) = compact::remove_unfinished_objects(o, table, settings.grace) {
                    tracing::warn!("compaction of {dir}/{table}: {e}");
                }
            }
        }
    }
    let spawned = std::thread::Builder::new()
        .name("tidings-compact".into())
        .spawn(move || {
            // With retention the first pass is at once: a run shorter than `every` (a file
            // job run each day) deletes expired partitions too.
            let mut last = retain.is_none().then(std::time::Instant::now);
            while last.is_none() || !finished.load(Ordering::SeqCst) {
                if let Some(l) = last {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    if l.elapsed() < every {
                        continue;
                    }
                }
                last = Some(std::time::Instant::now());
                let keep_from = retain.map(|days| {
                    tidings_model::time::local_date(tz, wall_ms())
                        - chrono::Duration::days(i64::from(days))
                });
                for table in tables {
                    let passed = match &dir {
                        TrackingDir::Local(d) => compact::pass(&d.join(table), &settings, keep_from),
                        TrackingDir::Object(o) => {
                            compact::pass_objects(o, table, &settings, keep_from)
                        }
                    };
                    match passed {
                        Ok(p) if p.merged + p.deleted + p.expired > 0 => tracing::info!(
                            "{dir}/{table}: compacted {} files into {}, deleted {} replaced files and {} expired partitions",
                            p.merged,
                            p.written,
                            p.deleted,
                            p.expired
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("compaction of {dir}/{table}: {e}"),
                    }
                }
            }
            if let TrackingDir::Object(o) = &dir
                && let Err(e) = compact::release_lease(o)
            {
                tracing::warn!("compaction lease on {dir}: {e}");
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("compaction not started: {e}");
            None
        }
    }
}

/// Watches the run from the side: the drain (progress, `drain_timeout`) and tracking that has
/// failed for longer than `tracking_give_up`.
pub(crate) fn watch_run(
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
                        dir,
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
            counts.tracking_owed, job.tracking_dir
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
