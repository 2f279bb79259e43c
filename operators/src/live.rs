//! Live state: questions put to the running operators, answered from their own state.
//!
//! Flink's queryable state is deprecated; tidings asks its operators directly. Every keyed
//! operator registers a mailbox per worker ([`Live::register`]). A question for a key goes to
//! the one worker that owns it (`route(key) % peers`, the same routing the exchange uses), the
//! operator is woken by a [`SyncActivator`], and it answers from the state it judges with,
//! between two of its own activations — so an answer is exactly what the next judgement of
//! that key would see. Summaries ask every worker and add the answers up.
//!
//! Operators that are not keyed publish gauges instead ([`ParkGauge`], [`CheckpointGauge`]),
//! written by the operator itself whenever its state changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tidings_model::ids;
use tidings_model::time::Millis;
use timely::scheduling::SyncActivator;

/// What can be asked of a keyed operator.
#[derive(Debug, Clone, Copy)]
pub enum Ask {
    /// The state of one key; `at` (event time) also asks whether a delivery then would pass.
    Key {
        /// The key.
        key: u128,
        /// An event time to judge a hypothetical delivery at.
        at: Option<Millis>,
    },
    /// Sizes of this worker's part of the state.
    Summary,
}

/// An operator's answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The state of a key, as the rule describes it.
    Key(serde_json::Value),
    /// This worker's part.
    Summary(RuleSummary),
}

/// Sizes of a keyed operator's state (one worker's part, or the sum over workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    /// Keys held.
    pub keys: u64,
    /// Admissions (content) or day counters (frequency) held.
    pub entries: u64,
    /// Estimated heap bytes of the state (table capacity × entry size, plus spilled entries).
    pub bytes: u64,
    /// Event time of the oldest admission held, ms.
    pub oldest: Option<Millis>,
    /// Global watermark the operator has judged up to, ms.
    pub watermark: Option<Millis>,
}

impl RuleSummary {
    /// Adds another worker's part.
    pub fn merge(&mut self, o: &RuleSummary) {
        self.keys += o.keys;
        self.entries += o.entries;
        self.bytes += o.bytes;
        self.oldest = match (self.oldest, o.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.watermark = match (self.watermark, o.watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A question with the channel its answer goes back on.
pub type Question = (Ask, mpsc::Sender<Answer>);

struct Mailbox {
    questions: mpsc::Sender<Question>,
    activator: SyncActivator,
}

/// Why a question went unanswered.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No operator of that name runs in this job.
    #[error("no live operator `{0}` in this job")]
    Unknown(String),
    /// The worker did not answer in time (stopped, or stuck in a long step).
    #[error("operator `{0}` on worker {1} did not answer within {2:?}")]
    Timeout(String, usize, Duration),
    /// The key is held by a worker of another process of the cluster.
    #[error(
        "the key is held by worker {0}, which is not in this process (another process of the \
         cluster, whose keys only it holds, or a worker still starting): ask again, or see \
         docs/cli.md on clusters"
    )]
    Elsewhere(usize),
}

/// The night_delay park's gauges, written by the park operator.
#[derive(Debug)]
pub struct ParkGauge {
    count: AtomicU64,
    next_release: AtomicI64,
}

impl Default for ParkGauge {
    fn default() -> Self {
        ParkGauge {
            count: AtomicU64::new(0),
            next_release: AtomicI64::new(i64::MIN),
        }
    }
}

impl ParkGauge {
    /// Records the store's size and earliest release.
    pub fn set(&self, count: usize, next_release: Option<Millis>) {
        self.count.store(count as u64, Ordering::Relaxed);
        self.next_release
            .store(next_release.unwrap_or(i64::MIN), Ordering::Relaxed);
    }

    /// Deliveries parked.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The earliest release time, ms.
    pub fn next_release(&self) -> Option<Millis> {
        Some(self.next_release.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN)
    }
}

/// When the last checkpoint was completed (wall clock, ms), and how many were.
#[derive(Debug)]
pub struct CheckpointGauge {
    last_ms: AtomicI64,
    completed: AtomicU64,
}

impl Default for CheckpointGauge {
    fn default() -> Self {
        CheckpointGauge {
            last_ms: AtomicI64::new(i64::MIN),
            completed: AtomicU64::new(0),
        }
    }
}

impl CheckpointGauge {
    /// Records a completed checkpoint at wall-clock `ms`.
    pub fn completed_at(&self, ms: Millis) {
        self.last_ms.store(ms, Ordering::Relaxed);
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Wall-clock time of the last completed checkpoint.
    pub fn last(&self) -> Option<Millis> {
        Some(self.last_ms.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN)
    }

    /// Checkpoints completed by this run.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }
}

/// The source's position per partition: the next offset to read and the partition's high
/// watermark as last reported by the broker (`None` before the first fetch).
#[derive(Debug, Default)]
pub struct SourceGauge {
    partitions: Mutex<BTreeMap<i32, (i64, Option<i64>)>>,
    /// Per partition: its event-time watermark, the records that came later than it, and
    /// the offsets of record batches the source could not read (each a dead letter).
    clocks: Mutex<BTreeMap<i32, (Option<Millis>, u64, u64)>>,
    /// What the source last said about its connection (e.g. brokers unreachable).
    status: Mutex<Option<String>>,
    /// How the run puts event times in epochs, once known (a cluster agrees its backlog line
    /// after the process started).
    event_time: Mutex<Option<crate::event_time::EventTime>>,
}

impl SourceGauge {
    /// Records how the run puts event times in epochs.
    pub fn set_event_time(&self, event: crate::event_time::EventTime) {
        *self.event_time.lock().unwrap_or_else(|p| p.into_inner()) = Some(event);
    }

    /// How the run puts event times in epochs, once recorded.
    pub fn event_time(&self) -> Option<crate::event_time::EventTime> {
        *self.event_time.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what the source says about itself (None: reading normally).
    pub fn set_status(&self, status: Option<String>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// What the source last said about itself.
    pub fn status(&self) -> Option<String> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes `partition`'s entry of `clocks` with `f`.
    fn clock(&self, partition: i32, f: impl FnOnce(&mut (Option<Millis>, u64, u64))) {
        f(self
            .clocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_default())
    }

    /// Records a partition's event-time watermark.
    pub fn set_watermark(&self, partition: i32, watermark: Option<Millis>) {
        self.clock(partition, |c| c.0 = watermark);
    }

    /// Counts `n` records of `partition` that came later than its watermark.
    pub fn add_late(&self, partition: i32, n: u64) {
        self.clock(partition, |c| c.1 += n);
    }

    /// Counts `n` offsets of `partition` in record batches the source could not read.
    pub fn add_unreadable(&self, partition: i32, n: u64) {
        self.clock(partition, |c| c.2 += n);
    }

    /// Per partition: (event-time watermark, late records, unreadable offsets).
    pub fn watermarks(&self) -> Vec<(i32, Option<Millis>, u64, u64)> {
        self.clocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&p, &(w, late, unreadable))| (p, w, late, unreadable))
            .collect()
    }

    /// The source's low watermark: the least over its partitions (None before any).
    pub fn low_watermark(&self) -> Option<Millis> {
        let clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        if clocks.values().any(|c| c.0.is_none()) {
            return None;
        }
        clocks.values().filter_map(|c| c.0).min()
    }

    /// Late records over all partitions.
    pub fn late(&self) -> u64 {
        self.watermarks().iter().map(|w| w.2).sum()
    }

    /// Records a partition's position and high watermark.
    pub fn set(&self, partition: i32, next: i64, high: Option<i64>) {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, (next, high));
    }

    /// Per partition: (next offset, high watermark, lag = high − next).
    pub fn partitions(&self) -> Vec<(i32, i64, Option<i64>, Option<i64>)> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&p, &(next, high))| (p, next, high, high.map(|h| h.saturating_sub(next).max(0))))
            .collect()
    }

    /// Records behind the high watermarks, over all partitions.
    pub fn lag(&self) -> i64 {
        self.partitions().iter().filter_map(|p| p.3).sum()
    }
}

/// The job's live-state registry, shared by every worker and the admin server.
#[derive(Clone, Default)]
pub struct Live {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    mailboxes: Mutex<BTreeMap<(&'static str, usize), Mailbox>>,
    peers: AtomicU64,
    /// The park's gauges.
    park: ParkGauge,
    /// The checkpoints' gauge.
    checkpoint: CheckpointGauge,
    /// The Kafka source's positions.
    source: SourceGauge,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("operators", &self.operators())
            .finish()
    }
}

impl Live {
    /// Registers operator `name` of worker `index` (of `peers`); questions arrive on the
    /// returned receiver, and `activator` wakes the operator to answer them.
    pub fn register(
        &self,
        name: &'static str,
        index: usize,
        peers: usize,
        activator: SyncActivator,
    ) -> mpsc::Receiver<Question> {
        let (tx, rx) = mpsc::channel();
        self.inner.peers.store(peers as u64, Ordering::Relaxed);
        self.inner
            .mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (name, index),
                Mailbox {
                    questions: tx,
                    activator,
                },
            );
        rx
    }

    /// Names of the registered keyed operators.
    pub fn operators(&self) -> Vec<&'static str> {
        let boxes = self
            .inner
            .mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&'static str> = boxes.keys().map(|(n, _)| *n).collect();
        names.dedup();
        names
    }

    fn ask(
        &self,
        name: &str,
        worker: usize,
        ask: Ask,
        timeout: Duration,
    ) -> Result<Answer, LiveError> {
        let (tx, rx) = mpsc::channel();
        {
            let boxes = self
                .inner
                .mailboxes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some((_, mailbox)) = boxes.iter().find(|((n, w), _)| *n == name && *w == worker)
            else {
                return Err(LiveError::Unknown(name.to_string()));
            };
            if mailbox.questions.send((ask, tx)).is_err() {
                return Err(LiveError::Timeout(name.to_string(), worker, timeout));
            }
            let _ = mailbox.activator.activate();
        }
        rx.recv_timeout(timeout)
            .map_err(|_| LiveError::Timeout(name.to_string(), worker, timeout))
    }

    /// Asks the worker owning `key` for its state in operator `name`.
    pub fn key(
        &self,
        name: &str,
        key: u128,
        at: Option<Millis>,
        timeout: Duration,
    ) -> Result<serde_json::Value, LiveError> {
        let peers = self.inner.peers.load(Ordering::Relaxed).max(1);
        let worker = (ids::route(key) % peers) as usize;
        let (here, _) = self.workers(name);
        if !here.is_empty() && !here.contains(&worker) {
            return Err(LiveError::Elsewhere(worker));
        }
        match self.ask(name, worker, Ask::Key { key, at }, timeout)? {
            Answer::Key(v) => Ok(v),
            Answer::Summary(_) => unreachable!("a key question gets a key answer"),
        }
    }

    /// The workers of this process that run operator `name`, and the job's workers in all
    /// (a cluster's other processes run the rest).
    pub fn workers(&self, name: &str) -> (Vec<usize>, usize) {
        let peers = self.inner.peers.load(Ordering::Relaxed).max(1) as usize;
        let boxes = self
            .inner
            .mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let here = boxes
            .keys()
            .filter(|(n, _)| *n == name)
            .map(|(_, w)| *w)
            .collect();
        (here, peers)
    }

    /// The parts of operator `name` this process's workers hold, summed ([`Live::workers`]:
    /// all of them but in a cluster).
    pub fn summary(&self, name: &str, timeout: Duration) -> Result<RuleSummary, LiveError> {
        let (here, _) = self.workers(name);
        if here.is_empty() {
            return Err(LiveError::Unknown(name.to_string()));
        }
        let mut total = RuleSummary::default();
        for worker in here {
            match self.ask(name, worker, Ask::Summary, timeout)? {
                Answer::Summary(s) => total.merge(&s),
                Answer::Key(_) => unreachable!("a summary question gets a summary"),
            }
        }
        Ok(total)
    }

    /// The park's gauges.
    pub fn park(&self) -> &ParkGauge {
        &self.inner.park
    }

    /// The checkpoints' gauge.
    pub fn checkpoint(&self) -> &CheckpointGauge {
        &self.inner.checkpoint
    }

    /// The source's positions.
    pub fn source(&self) -> &SourceGauge {
        &self.inner.source
    }

    /// Forgets every mailbox (the run ended): later questions fail fast.
    pub fn close(&self) {
        self.inner
            .mailboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Formats a time as RFC 3339 (UTC) for answers.
pub fn iso(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_merge() {
        let mut a = RuleSummary {
            keys: 2,
            entries: 3,
            bytes: 100,
            oldest: Some(50),
            watermark: Some(90),
        };
        a.merge(&RuleSummary {
            keys: 1,
            entries: 1,
            bytes: 10,
            oldest: Some(20),
            watermark: None,
        });
        assert_eq!(
            (a.keys, a.entries, a.bytes, a.oldest, a.watermark),
            (3, 4, 110, Some(20), Some(90))
        );
    }
}
