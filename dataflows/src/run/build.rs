//! Build: everything a run needs, started and checked *before* the workers start, so that a bad
//! broker setting, an unwritable directory or an unreadable state file is one line and an exit
//! code, never a worker's panic. What the workers share is [`Shared`]; what the process keeps
//! to finish the run is [`Services`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_model::ids::FastMap;
use tidings_model::time::Millis;
use tidings_sinks::tracking::TrackingDir;

use tidings_operators::checkpoint::{Checkpoints, write_durably};
use tidings_operators::live::Live;
use tidings_operators::park::{self, ParkStore};
use tidings_sinks::account::Accounts;
use tidings_sinks::route::Route;
use tidings_sinks::tracking::redis::{RedisSettings, RedisSink, RedisWriter, UserTtl};

use super::{RunOptions, TrackingTarget, wall_ms};
use crate::admin::{AdminServer, AdminState};
use crate::backlog::{BacklogReader, Queues};
use crate::health::Health;
use crate::job::Job;
use crate::kafka::{DeadLetterTopic, KafkaReader};
use crate::lock::{RunLock, STORE_HINT, StoreLock, probe_writable};
use crate::send::SendContext;
use crate::signals;
use crate::track::Counts;
use tidings_operators::book::CampaignWatch;

/// What every worker of the run reads (shared by the worker closures).
pub(crate) struct Shared {
    /// The job; in one process its `event` has the run's backlog line, in a cluster none (the
    /// workers build with the line the processes agree on: `drive::agreed_event`).
    pub job: Arc<Job>,
    pub opts: RunOptions,
    pub live: Live,
    pub send: Arc<SendContext>,
    pub queues: Arc<Queues>,
    pub counts: Arc<Mutex<Counts>>,
    pub health: Arc<Health>,
    pub stop: Arc<AtomicBool>,
    pub checkpoints: Checkpoints,
    /// Makes tracking file names unique per run.
    pub run_id: String,
    /// The source's name (the topic, or `file:<path>`).
    pub source_name: Arc<str>,
    /// Set once the main dataflow is done (the account topics then read to their end).
    pub main_done: Arc<AtomicBool>,
    /// Deliveries still parked when the run ended (worker 0 sets it).
    pub parked: Arc<Mutex<usize>>,
    /// Worker 0's park store, opened here and taken by it.
    pub park_store: Mutex<Option<ParkStore>>,
    /// The dead-letter topic's producer of each worker, taken by index.
    pub dead_letters: Mutex<Vec<Option<DeadLetterTopic>>>,
    /// The Redis tracking sink (taken after the workers end, so the writer can drain).
    pub redis: Mutex<Option<(RedisSink, UserTtl)>>,
    /// Worker 0's book publishes its campaign templates here for the scheduler.
    pub campaign_watch: CampaignWatch,
}

/// What the process holds for the run and tears down after it.
pub(crate) struct Services {
    pub _lock: RunLock,
    pub runtime: tokio::runtime::Runtime,
    pub admin: Option<AdminServer>,
    pub redis: Option<RedisWriter>,
    /// Set when the workers have ended (the side watchers stop).
    pub finished: Arc<AtomicBool>,
    /// The compaction thread (process 0 with Parquet tracking), joined before the lock goes.
    pub compactor: Option<std::thread::JoinHandle<()>>,
    /// The campaigns' scheduler (process 0 of a Kafka job), joined at the end.
    pub campaigns: Option<std::thread::JoinHandle<()>>,
    pub shared: Arc<Shared>,
}

impl Services {
    /// Takes the job's lock, checks its directories and state files, and starts the send
    /// runtime, the accounts, the account queues, the admin server and the Redis writer.
    pub fn start(job: &Job, opts: &RunOptions) -> anyhow::Result<Services> {
        // One runner per job; a tracking or state directory that takes no file fails the run
        // before anything is sent.
        // In a cluster, process 0 owns the job's state (park store, compaction, admin API) and
        // every process takes a lock of its own.
        let process = opts.cluster.as_ref().map_or(0, |c| c.process);
        let lock = match process {
            0 => RunLock::acquire(&job.state_dir)?,
            p => RunLock::acquire_named(&job.state_dir, &format!("LOCK-{p}"))?,
        };
        let stop = opts
            .stop
            .clone()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let health = Health::new(stop.clone());
        // With state on an object store, the job's lock is there too (a lease): runners on
        // other machines share the checkpoints, so they must not run the job twice. Taken
        // before anything is tidied or started.
        let mut lock = lock;
        let lease = match &job.state_store {
            Some(dir) => {
                let failing = health.clone();
                let name = match process {
                    0 => "LOCK".to_string(),
                    p => format!("LOCK-{p}"),
                };
                let lost = move |why: String| failing.fail(why);
                let store_lock = StoreLock::acquire(dir, &name, &job.state_dir, lost)?;
                let clock = store_lock.clock();
                lock.hold_store(store_lock);
                Some(clock)
            }
            None => None,
        };
        check_directories(job, opts, process == 0)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("tidings-send")
            .build()?;
        let mut accounts = Accounts::build(
            &share_rates(job, opts, process),
            &job.base,
            job.receivers.calling_code(),
        )?
        .shared_by(processes(opts), |name| sends_whole(job, process, name));
        accounts.halt_with(health.halt_flag());
        // Each process of a cluster keeps books of its own: processes on one machine share the
        // state directory, and one book rewritten by two at their start failed one's start
        // (its rename found the other's file gone) or lost one's appends (to a file the
        // other's rename replaced). A recall finds the calls its own process made.
        // Process 0 takes in the books of processes the cluster no longer has (as their
        // spools): the calls they made stay recallable after the cluster shrank.
        let adopt = departed(job, process, processes(opts) as usize, recall_dir);
        accounts.keep_recall_books(&recall_dir(&job.state_dir, process), wall_ms(), &adopt)?;
        let (route_of, route_by_name) = routes(job, &accounts);
        let queues = Arc::new(Queues::build(
            &job.file.accounts,
            job.kafka.as_ref(),
            &runtime,
        )?);
        // A graceful stop leaves what a queued account has not sent yet in its topic.
        accounts.halt_some_with(health.queued_flag(), |i| queues.in_kafka(i));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let send = Arc::new(SendContext {
            accounts,
            route_of,
            route_by_name,
            templates: job.templates.clone(),
            runtime: runtime.handle().clone(),
            queues: queues.clone(),
            health: health.clone(),
            counts: counts.clone(),
        });
        let live = Live::default();
        if opts.handle_signals {
            signals::handle_signals(&runtime, stop.clone(), health.clone());
        }
        let finished = Arc::new(AtomicBool::new(false));
        super::watch_run(&runtime, job, opts, &stop, &finished, &health, &counts);
        let started_ms = wall_ms();
        let source_name = source_name(job)?;
        let checkpoints = restore(job, &source_name, opts.from_start, process == 0, lease)?;
        let drawn = line_before(
            opts.backlog_before,
            opts.clock.now_ms(),
            job.event.max_out_of_order_ms,
        );
        // A cluster's processes agree on one line first (process 0's): the workers wait for it
        // before building the job's dataflows (`drive::agreed_event`).
        let event = match &opts.cluster {
            None => {
                let event = job.event.with_backlog(drawn, job.event.backlog.epoch_ms);
                live.source().set_event_time(event);
                event
            }
            Some(c) => {
                checkpoints.in_cluster(c.processes(), opts.workers.max(1));
                checkpoints.propose_line(c.process, opts.backlog_before, drawn);
                job.event
            }
        };
        // Worker 0 (process 0) parks.
        let park_store = if process == 0 {
            let path = job.state_dir.join("parked.jsonl");
            Some(ParkStore::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        } else {
            None
        };
        let dead_letters = dead_letter_producers(job, opts.workers.max(1))?;
        if let Some(k) = &job.kafka {
            // The consumer's settings are checked here; each worker makes its own.
            KafkaReader::connect(k, 0, 1, Default::default(), false, live.clone())
                .map_err(|e| anyhow::anyhow!("kafka {}: {e}", k.brokers))?;
            if queues.any() {
                BacklogReader::done_positions(&job.state_dir)?;
                BacklogReader::sent_above(&job.state_dir)?;
            }
        }
        let mut job = job.clone();
        job.event = event;
        let job = Arc::new(job);
        let admin = match job.admin.as_ref().filter(|_| process == 0) {
            Some(settings) => Some(AdminServer::start(
                settings,
                AdminState {
                    job: job.clone(),
                    live: live.clone(),
                    send: send.clone(),
                    counts: counts.clone(),
                    clock: opts.clock,
                    started: std::time::Instant::now(),
                },
            )?),
            None => None,
        };
        let (redis, redis_sink) = redis_writer(&job, process, processes(opts) as usize)?;
        // Process 0 sends the campaigns due now before the workers read (as the restored book
        // has them: live changes outlive restarts), then each next time, following the book.
        let campaign_watch = CampaignWatch::default();
        let campaigns = match &job.kafka {
            Some(k) if process == 0 => {
                // Said at the start: how the restored book's campaigns differ from the file's.
                let now = crate::campaign::follow(
                    &job.campaigns,
                    &crate::campaign::restored(&job, &checkpoints)?,
                    &job.crowd_dir,
                    job.tz,
                    opts.clock.now_ms(),
                );
                let current_ms = job.event.max_out_of_order_ms + crate::campaign::MISFIRE_MS;
                Some(crate::campaign::schedule(
                    now,
                    campaign_watch.clone(),
                    (live.clone(), current_ms),
                    job.crowd_dir.clone(),
                    job.tz,
                    k.clone(),
                    (&job.state_dir, job.state_store.as_ref()),
                    opts.clock,
                    finished.clone(),
                    stop.clone(),
                )?)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            job,
            opts: opts.clone(),
            live,
            send,
            queues,
            counts,
            health,
            stop,
            checkpoints,
            run_id: format!("{started_ms}-{}", std::process::id()),
            source_name,
            main_done: Arc::new(AtomicBool::new(false)),
            parked: Arc::new(Mutex::new(0)),
            park_store: Mutex::new(park_store),
            dead_letters: Mutex::new(dead_letters),
            redis: Mutex::new(redis_sink),
            campaign_watch,
        });
        // Started once nothing above can fail: a run that fails to start leaves no compactor
        // behind (its first pass is at once with retention, and holds an object store's lease).
        let compactor = (matches!(opts.tracking, TrackingTarget::Parquet) && process == 0)
            .then(|| super::compact_in_background(&shared.job, &finished))
            .flatten();
        Ok(Services {
            _lock: lock,
            runtime,
            admin,
            redis,
            finished,
            compactor,
            campaigns,
            shared,
        })
    }
}

/// Checks that `state_dir` and (Parquet tracking) `tracking.dir` take files, and removes the
/// unfinished `.tmp` files an earlier run left in the tracking directory.
fn check_directories(job: &Job, opts: &RunOptions, first: bool) -> anyhow::Result<()> {
    match &job.state_store {
        Some(store) => {
            probe_writable("local_state_dir", &job.state_dir)?;
            store
                .probe()
                .map_err(|e| anyhow::anyhow!("state_dir {e}; {STORE_HINT}"))?;
        }
        None => probe_writable("state_dir", &job.state_dir)?,
    }
    if !matches!(opts.tracking, TrackingTarget::Parquet) {
        return Ok(());
    }
    let dir = match &job.tracking_dir {
        TrackingDir::Local(dir) => dir,
        // Objects are whole when written: nothing unfinished to remove.
        TrackingDir::Object(o) => {
            return o
                .probe()
                .map_err(|e| anyhow::anyhow!("tracking.dir {e}; {STORE_HINT}"));
        }
    };
    probe_writable("tracking.dir", dir)?;
    if !first {
        // Process 0 tidies up; another process's files may be being written.
        return Ok(());
    }
    let removed = tidings_sinks::tracking::remove_stale_tmp(dir);
    if removed > 0 {
        tracing::info!(
            "tracking.dir {}: removed {removed} unfinished .tmp file(s) left by an earlier run",
            dir.display()
        );
    }
    Ok(())
}

/// The accounts of this process: in a cluster of N processes each sends at 1/N of an
/// account's rate (rounded down), so the cluster keeps the account's limit while the sends are
/// spread evenly over the processes (they are: deliveries go to workers by receiver); but an
/// account queued in Kafka is sent by process 0 alone (worker 0 reads the account topics),
/// which keeps its whole rate.
fn share_rates(
    job: &Job,
    opts: &RunOptions,
    process: usize,
) -> std::collections::BTreeMap<String, tidings_sinks::account::AccountConfig> {
    let n = processes(opts);
    job.file
        .accounts
        .iter()
        .map(|(name, a)| {
            let mine = if sends_whole(job, process, name) {
                a.clone()
            } else {
                a.shared_by(n)
            };
            (name.clone(), mine)
        })
        .collect()
}

/// Whether process `process` sends account `name` at its whole rate: it is queued in Kafka
/// and this is process 0, which sends every account topic's deliveries.
fn sends_whole(job: &Job, process: usize, name: &str) -> bool {
    process == 0
        && job
            .file
            .accounts
            .get(name)
            .is_some_and(|a| a.queues_in_kafka(job.kafka.is_some()))
}

/// The number of processes of the run.
fn processes(opts: &RunOptions) -> u32 {
    opts.cluster.as_ref().map_or(1, |c| c.processes()) as u32
}

/// For process 0, the directories `dir_of(state_dir, p)` of processes `p` the cluster of
/// `processes` no longer has (they are taken in: spools, recall books); none for another.
fn departed(
    job: &Job,
    process: usize,
    processes: usize,
    dir_of: fn(&Path, usize) -> PathBuf,
) -> Vec<PathBuf> {
    match process {
        0 => (processes..)
            .map(|p| dir_of(&job.state_dir, p))
            .take_while(|d| d.is_dir())
            .collect(),
        _ => Vec::new(),
    }
}

/// The recall books of process `p` (processes on one machine share the state directory).
fn recall_dir(state_dir: &Path, p: usize) -> PathBuf {
    match p {
        0 => state_dir.join("recall"),
        p => state_dir.join("recall").join(format!("p{p}")),
    }
}

/// The spool directory of process `p`: each process of a cluster spools its own rows, and
/// backfills them once (a shared one was read back by every process).
fn spool_dir(state_dir: &Path, p: usize) -> PathBuf {
    match p {
        0 => state_dir.join("redis-spool"),
        p => state_dir.join(format!("redis-spool-p{p}")),
    }
}

/// The Redis writer of `tracking.redis` (if set) and the sink the tracking stage feeds it by:
/// process `process` of `processes`; process 0 also backfills the spools of processes the
/// cluster no longer has.
fn redis_writer(
    job: &Job,
    process: usize,
    processes: usize,
) -> anyhow::Result<(Option<RedisWriter>, Option<(RedisSink, UserTtl)>)> {
    let Some(url) = &job.file.tracking.redis else {
        return Ok((None, None));
    };
    let adopt = departed(job, process, processes, spool_dir);
    let (writer, sink) = RedisWriter::start(RedisSettings {
        url: url.clone(),
        prefix: job.file.tracking.redis_prefix.clone(),
        spool_dir: spool_dir(&job.state_dir, process),
        adopt,
        max_in_memory: 100_000,
        drain_timeout: Duration::from_secs(3),
    })?;
    let ttl = match job.file.tracking.redis_user_ttl_secs {
        Some(s) => UserTtl::Seconds(s as i64),
        None => UserTtl::EndOfDay(job.tz),
    };
    Ok((Some(writer), Some((sink, ttl))))
}

/// The route of each template: its account, or its group's weighted members.
fn routes(job: &Job, accounts: &Accounts) -> (FastMap<i64, Route>, FastMap<String, Route>) {
    let by_name: FastMap<String, Route> = job
        .file
        .accounts
        .keys()
        .chain(job.file.groups.keys())
        .map(|a| {
            let route = match (accounts.index(a), job.file.groups.get(a)) {
                (Some(i), _) => Route::single(i),
                (None, Some(g)) => Route::weighted(g.accounts.iter().map(|(m, w)| {
                    (
                        accounts.index(m).expect("job check resolved every member"),
                        *w,
                    )
                })),
                (None, None) => unreachable!("every account is built"),
            };
            (a.clone(), route)
        })
        .collect();
    let of = job
        .account_of
        .iter()
        .map(|(t, a)| (*t, by_name[a].clone()))
        .collect();
    (of, by_name)
}

/// The name checkpoints keep the source's positions under.
fn source_name(job: &Job) -> anyhow::Result<Arc<str>> {
    Ok(match (&job.kafka, &job.source_path) {
        (Some(k), _) => k.topic.as_str().into(),
        (None, Some(path)) => {
            let shown = job.file.source.path.as_deref().unwrap_or(path).display();
            format!("file:{shown}").into()
        }
        (None, None) => anyhow::bail!("the job has no source"),
    })
}

/// Opens the job's checkpoints: the newest complete one is restored (its park store replaces
/// the job's, by the process that parks; the source resumes at its positions), unless `fresh`.
fn restore(
    job: &Job,
    source_name: &str,
    fresh: bool,
    parks: bool,
    lease: Option<crate::lock::LeaseClock>,
) -> anyhow::Result<Checkpoints> {
    let mirror = job.state_store.clone().map(|dir| {
        Arc::new(crate::state_store::ObjectMirror::new(dir, lease))
            as Arc<dyn tidings_operators::checkpoint::Mirror>
    });
    let c =
        Checkpoints::open_mirrored(&job.state_dir, source_name, fresh, mirror).map_err(|e| {
            match &job.state_store {
                Some(_) => anyhow::anyhow!("state_dir (checkpoints): {e}"),
                None => anyhow::anyhow!("{e}"),
            }
        })?;
    if let Some(dir) = job.source_path.as_deref().filter(|p| p.is_dir()) {
        let paths = crate::job::partition_files(dir);
        crate::source::files_in_place(dir, &paths, &c.restored_positions())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let store = job.state_dir.join("parked.jsonl");
    if !parks {
        return Ok(c);
    }
    if let Some(dir) = c.restored() {
        // The whole store as some cut wrote it, and the parks and releases of each cut since.
        let (base, deltas) = park::parts(dir)?;
        ParkStore::restore(&store, base.as_deref(), &deltas)?;
    } else {
        // No complete cut: the input is read again from its start and parks again what it
        // parked; a message parked at another event time (a bare line's read time) would
        // otherwise be parked, and sent, twice.
        write_durably(&store, b"").map_err(|e| anyhow::anyhow!("{}: {e}", store.display()))?;
    }
    Ok(c)
}

/// One dead-letter producer per worker, when the job has a dead-letter topic.
fn dead_letter_producers(
    job: &Job,
    workers: usize,
) -> anyhow::Result<Vec<Option<DeadLetterTopic>>> {
    let topic = job
        .kafka
        .as_ref()
        .and_then(|k| Some((k, k.dead_letter_topic.as_ref()?)));
    (0..workers)
        .map(|_| match topic {
            Some((k, t)) => DeadLetterTopic::connect(k, t)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("dead-letter topic {t}: {e}")),
            None => Ok(None),
        })
        .collect()
}

/// The first event time of the job's own epochs this run, given `given` (`--backlog-before`)
/// and starting at `now`: earlier ones are a backlog, read in `source.backlog_epoch_ms` epochs
/// (`EventTime::with_backlog`). By default [`super::BACKLOG_AGE`] before the start, less the
/// out-of-order bound, so the watermark of a caught-up partition (the clock less that bound)
/// is never in a backlog epoch and moves the frontier in the job's own epochs. One process
/// draws it once for all its workers; a cluster takes process 0's.
fn line_before(given: Option<Millis>, now: Millis, out_of_order: Millis) -> Millis {
    match given {
        Some(before) => {
            if past_caught_up(before, now, out_of_order) {
                tracing::warn!(
                    "--backlog-before is after the clock less source.max_out_of_order_ms: a caught-up partition's watermark is then in backlog epochs, and cuts, stops and releases wait for them"
                );
            }
            before
        }
        None => now
            .saturating_sub(out_of_order)
            .saturating_sub(super::BACKLOG_AGE.as_millis() as i64),
    }
}

/// Whether the backlog line `before` is after the watermark of a caught-up partition (the
/// clock `now` less the out-of-order bound), which then waits a backlog epoch at a time.
pub(crate) fn past_caught_up(before: Millis, now: Millis, out_of_order: Millis) -> bool {
    before > now.saturating_sub(out_of_order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minute before the start by the run's clock, less the out-of-order bound, unless
    /// given.
    #[test]
    fn a_backlog_is_what_came_a_minute_before_the_start() {
        let now = 1_763_740_800_000;
        assert_eq!(line_before(None, now, 200), 1_763_740_739_800);
        assert_eq!(line_before(Some(5), now, 200), 5);
    }

    /// In a cluster of 2, an account queued in Kafka keeps its whole rate in process 0 (worker
    /// 0 sends every account topic's deliveries) and half in process 1 (its direct sends);
    /// an account queued in memory is sent by both, at half each.
    #[test]
    fn a_kafka_queued_account_keeps_its_whole_rate_where_its_topic_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.toml"),
            "[[template]]\nid = 1\nname = \"t\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"queued\"\n[template.content]\ncontent = \"hi\"\n",
        )
        .unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            "name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\ngroup = \"g\"\n\
             [accounts.queued]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = { per_second = 100 }\n\
             [accounts.memory]\nchannel = \"sms\"\nprovider = \"blackhole\"\nqueue = \"memory\"\nrate_limit = { per_second = 100 }\n",
        )
        .unwrap();
        let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut opts = RunOptions::for_job(&job);
        opts.cluster = Some(super::super::Cluster {
            process: 0,
            addresses: vec!["a:1".into(), "b:1".into()],
            connect_timeout: std::time::Duration::from_secs(1),
        });
        let rate = |process: usize, name: &str| {
            share_rates(&job, &opts, process)[name]
                .rate_limit
                .and_then(|r| r.per_second)
        };
        assert_eq!(rate(0, "queued"), Some(100));
        assert_eq!(rate(1, "queued"), Some(50));
        assert_eq!(rate(0, "memory"), Some(50));
        assert_eq!(rate(1, "memory"), Some(50));
    }
}
