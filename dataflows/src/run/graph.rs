//! The job's two dataflows, built on each worker; each function reads like the graph in
//! `docs/ARCHITECTURE.md`:
//!
//! ```text
//! Source ─► Admit (validate + gate) ─┬─ pass ─────────────────────┬─► ContentDedup ─► FrequencyDedup ─► Send ─┐
//!                                    ├─ parked ─► Park (worker 0) ┘   (and the rows of each) ────────────────►│
//!                                    ├─ marks ─► (the watermark of every keyed operator)                      │
//!                                    ├─ recalls ─► Recall (after the sends before it) ───────────────────────►│
//!                                    └─ rows (and dead letters) ─────────────────────────────────────────────►├─► Track ─► done
//!
//! AccountTopics ─┬─ pass ─► Send ─┬─► Track ─► done_accounts   (Kafka jobs with account queues)
//!                └─ rows ─────────┘
//! ```
//!
//! Each stage is an extension trait on the stream it reads ([`Admit`], [`Park`], [`DedupBy`])
//! and returns its outputs as typed streams, so the wiring below is checked by the compiler.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tidings_operators::admit::{Admit, Pace};
use tidings_operators::book::{AccountCheck, Book, SplitChanges};
use tidings_operators::container::{self, Trimming};
use tidings_operators::dedup::{ContentDedup, DedupBy, FrequencyDedup};
use tidings_operators::event_time::EventTime;
use tidings_operators::gate::Gate;
use tidings_operators::park::Park;
use tidings_operators::shield::NightShield;
use tidings_operators::validate::Validator;
use tidings_operators::{Epoch, SourceRecord};
use tidings_sinks::tracking::{MemoryTracking, ParquetTracking, Tracking};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use super::TrackingTarget;
use super::build::Shared;
use crate::backlog::{BacklogReader, backlog_source};
use crate::job::Job;
use crate::kafka::{KafkaReader, kafka_source};
use crate::send::{SendMode, recall, send};
use crate::source::{FileSettings, file_source};
use crate::track::{HoldBack, track};

/// The done probe of the main dataflow and the worker's Kafka reader.
pub(crate) struct MainGraph {
    /// Passed once every delivery before it is terminal (or parked) with its rows durable.
    pub done: ProbeHandle<Epoch>,
    /// The worker's Kafka reader (commits the offsets of completed checkpoints).
    pub reader: Option<Rc<KafkaReader>>,
}

/// Builds the main dataflow on this worker, putting event times in epochs by `event` (the
/// job's, with this run's backlog line).
pub(crate) fn main_dataflow(
    worker: &mut timely::worker::Worker,
    s: &Shared,
    event: EventTime,
) -> MainGraph {
    let (index, peers) = (worker.index(), worker.peers());
    // A fault injected by the tests (a bug's panic in one worker): `TIDINGS_FAIL_WORKER=I`.
    if std::env::var("TIDINGS_FAIL_WORKER").is_ok_and(|w| w == index.to_string()) {
        panic!("injected fault (TIDINGS_FAIL_WORKER={index})");
    }
    let job = &s.job;
    let clock = s.opts.clock;
    let sent = ProbeHandle::<Epoch>::new();
    let done = ProbeHandle::<Epoch>::new();
    let reader = job.kafka.as_ref().map(|k| {
        let restored = s.checkpoints.restored_positions();
        KafkaReader::connect(k, index, peers, restored, s.opts.from_start, s.live.clone())
            .unwrap_or_else(|e| panic!("kafka {}: {e}", k.brokers))
    });
    let store = if index == 0 {
        lock(&s.park_store).take()
    } else {
        None
    };
    // Producers are per process; a cluster's workers are numbered across processes.
    let local = index % s.opts.workers.max(1);
    let dead_letter_topic = lock(&s.dead_letters).get_mut(local).and_then(Option::take);
    let redis = lock(&s.redis).clone();
    let tracking = tracking_of(s, &s.run_id, index);
    worker.dataflow::<Epoch, _, _>(|scope| {
        let records = match &reader {
            Some(r) => kafka_source(
                scope,
                r.clone(),
                s.checkpoints.clone(),
                s.opts.in_flight,
                event,
                sent.clone(),
                clock,
                s.stop.clone(),
                s.opts.idle_exit,
                s.live.clone(),
            ),
            None => files(scope, s, sent.clone(), event),
        };
        // Track holds back the rows of records read ahead of the sources' frontier.
        let sources = ProbeHandle::<Epoch>::new();
        let records = records.probe_with(&sources);
        // Template changes go to every worker; each judges with the same book.
        let (records, changes) = records.split_changes(event);
        let mut validator = validator(job);
        validator
            .book_mut()
            .restore(&s.checkpoints)
            .unwrap_or_else(|e| panic!("template book restore: {e}"));
        if index == 0 {
            // The campaign scheduler follows worker 0's book (process 0's).
            validator.book_mut().watched_by(s.campaign_watch.clone());
        }
        let admitted = records.admit_with(
            changes.broadcast(),
            validator,
            gate(job),
            clock,
            Some(s.checkpoints.clone()),
            Some(Pace {
                sent: sent.clone(),
                max: s.opts.in_flight_receivers,
            }),
        );
        let (ckpts, live) = (Some(s.checkpoints.clone()), Some(s.live.clone()));
        let released = admitted
            .parked
            .park(store, clock, event, ckpts.clone(), live.clone());
        let passes = scope.concatenate([admitted.pass, released]);
        let (content, frequency) = dedup_rules(job);
        let content = passes.dedup_by(content, &admitted.marks, clock, ckpts.clone(), live.clone());
        let frequency = content
            .pass
            .dedup_by(frequency, &admitted.marks, clock, ckpts, live);
        let outcomes =
            send(frequency.pass, s.send.clone(), clock, SendMode::Main).probe_with(&sent);
        // Recall requests skip the rules; they run once the sends before them are done.
        let recalled = recall(
            admitted.recalls,
            s.send.clone(),
            clock,
            sent.clone(),
            SendMode::Main,
            s.opts.workers,
        );
        let rows = scope.concatenate([
            admitted.rows,
            content.rows,
            frequency.rows,
            outcomes,
            recalled,
        ]);
        track(
            rows,
            tracking,
            job.file.tracking.flush_rows,
            Duration::from_millis(job.file.tracking.flush_interval_ms),
            s.counts.clone(),
            dead_letter_topic,
            redis,
            Some(HoldBack {
                sources,
                checkpoints: s.checkpoints.clone(),
            }),
        )
        .probe_with(&done);
    });
    MainGraph { done, reader }
}

/// Builds the account-topic dataflow (its own, so its pace never holds the main one); worker 0
/// reads the topics. Returns its "done" probe and worker 0's reader.
pub(crate) fn accounts_dataflow(
    worker: &mut timely::worker::Worker,
    s: &Shared,
) -> (ProbeHandle<Epoch>, Option<Rc<BacklogReader>>) {
    let index = worker.index();
    let done = ProbeHandle::<Epoch>::new();
    let job = &s.job;
    let reader = job
        .kafka
        .as_ref()
        .filter(|_| index == 0 && s.queues.any())
        .map(|k| {
            BacklogReader::connect(k, &s.queues, &job.state_dir)
                .unwrap_or_else(|e| panic!("account topics on {}: {e}", k.brokers))
        });
    if !s.queues.any() {
        return (done, reader);
    }
    let clock = s.opts.clock;
    let tracking = tracking_of(s, &format!("{}-accounts", s.run_id), index);
    let redis = lock(&s.redis).clone();
    worker.dataflow::<Epoch, _, _>(|scope| {
        let read = backlog_source(
            scope,
            reader.clone(),
            s.queues.clone(),
            clock,
            s.stop.clone(),
            s.checkpoints.clone(),
            s.main_done.clone(),
        );
        let sent = ProbeHandle::<Epoch>::new();
        let outcomes = send(read.pass, s.send.clone(), clock, SendMode::Accounts).probe_with(&sent);
        // Recalls handed off behind an account's deliveries run once those are sent.
        let recalled = recall(
            read.recalls,
            s.send.clone(),
            clock,
            sent,
            SendMode::Accounts,
            s.opts.workers,
        );
        let rows = scope.concatenate([read.rows, outcomes, recalled]);
        track(
            rows,
            tracking,
            job.file.tracking.flush_rows,
            Duration::from_millis(job.file.tracking.flush_interval_ms),
            s.counts.clone(),
            None,
            redis,
            None,
        )
        .probe_with(&done);
    });
    (done, reader)
}

/// The file source: worker `i % peers` reads partition `i`; lines are spread over the workers.
fn files<'s>(
    scope: Scope<'s, Epoch>,
    s: &Shared,
    sent: ProbeHandle<Epoch>,
    event: EventTime,
) -> StreamVec<'s, Epoch, SourceRecord> {
    let job = &s.job;
    let path = job
        .source_path
        .clone()
        .expect("job check requires a file source path");
    let paths = crate::job::partition_files(&path);
    let directory = path.is_dir();
    let names = if directory {
        paths
            .iter()
            .map(|p| {
                let file = p.file_name().unwrap_or_default().to_string_lossy();
                Arc::from(format!("{}/{file}", s.source_name))
            })
            .collect()
    } else {
        vec![s.source_name.clone()]
    };
    file_source(
        scope,
        FileSettings {
            paths,
            names,
            batch_lines: job
                .file
                .source
                .epoch_lines
                .unwrap_or(crate::job::DEFAULT_EPOCH_LINES),
            in_flight: s.opts.in_flight,
            event,
            follow: job.file.source.follow,
            directory,
        },
        sent,
        s.opts.clock,
        s.stop.clone(),
        s.checkpoints.clone(),
        s.live.clone(),
    )
    .unary::<Trimming<SourceRecord>, _, _, _>(
        container::exchange(|r: &SourceRecord| {
            (r.offset as u64)
                .wrapping_mul(31)
                .wrapping_add(r.partition as u64)
        }),
        "Exchange",
        |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    output.session_with_builder(&cap).give_containers(data);
                });
            }
        },
    )
}

pub(crate) fn validator(job: &Job) -> Validator {
    let accounts = job
        .file
        .accounts
        .iter()
        .map(|(name, a)| (name.clone(), a.channel))
        .chain(
            job.file
                .groups
                .iter()
                .map(|(name, g)| (name.clone(), g.channel)),
        )
        .collect();
    let book = Book::new(job.templates.clone(), Arc::new(accounts))
        .with_lists(
            job.file.discard.templates.iter().copied().collect(),
            job.file.whitelist.receivers.iter().cloned().collect(),
        )
        .with_account_check(AccountCheck::new(tidings_sinks::account::change_check(
            &job.file.accounts,
            job.kafka.is_some(),
        )))
        .with_campaigns(job.kafka.is_some());
    Validator::new(job.templates.clone(), job.tz)
        .with_book(book)
        .with_max_future_ms(job.event.max_future_ms)
}

fn gate(job: &Job) -> Gate {
    Gate {
        templates: job.templates.clone(),
        receivers: job.receivers.clone(),
        discard: job.file.discard.templates.iter().copied().collect(),
        whitelist: job.file.whitelist.receivers.iter().cloned().collect(),
        shield: NightShield {
            window: job.night,
            release_at: job.release_at,
            tz: job.tz,
        },
    }
}

fn dedup_rules(job: &Job) -> (ContentDedup, FrequencyDedup) {
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
    (content, frequency)
}

/// This worker's tracking writer.
fn tracking_of(s: &Shared, run: &str, index: usize) -> Tracking {
    match &s.opts.tracking {
        TrackingTarget::Parquet => Tracking::Parquet(ParquetTracking::new(
            &s.job.tracking_dir,
            s.job.tz,
            s.job.templates.clone(),
            run,
            index,
        )),
        TrackingTarget::Memory(m) => Tracking::Memory(MemoryTracking::clone(m)),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
