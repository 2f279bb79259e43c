//! The tracking stage: writes rows and dead letters, holding the capability of the earliest
//! buffered epoch until its rows are durable. The frontier after this stage means "done":
//! every receiver of every epoch before it reached a terminal state (or was durably parked)
//! and its rows are on disk. Rows then go on to Redis (if the job tracks there), which the
//! frontier never waits for.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_model::State;
use tidings_model::time::wall_ms;
use tidings_operators::checkpoint::Checkpoints;
use tidings_operators::container::Trimming;
use tidings_operators::{Epoch, Tracked};
use tidings_sinks::tracking::Tracking;
use tidings_sinks::tracking::redis::{RedisRow, RedisSink, UserTtl};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::{ProbeHandle, StreamVec};

/// Counts per state and dead letters, summed over workers for the end-of-run table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Rows per state.
    pub states: BTreeMap<State, u64>,
    /// Dead letters.
    pub dead_letters: u64,
    /// Rows per (template, state), for `/metrics`.
    pub per_template: BTreeMap<(i64, State), u64>,
    /// Failed attempts to make tracking rows durable (each is retried).
    pub tracking_write_failures: u64,
    /// Workers whose tracking writes are failing now (new sends are held meanwhile).
    pub tracking_failing_workers: u32,
    /// Since when (ms) tracking has been failing, and the last error.
    pub tracking_failing: Option<(i64, String)>,
    /// Rows that could not be written when the run ended (named in the run's error).
    pub tracking_owed: u64,
}

impl Counts {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &Counts) {
        for (s, n) in &other.states {
            *self.states.entry(*s).or_default() += n;
        }
        self.dead_letters += other.dead_letters;
        for (k, n) in &other.per_template {
            *self.per_template.entry(*k).or_default() += n;
        }
    }

    /// How long (ms, at `now`) tracking has been failing and why, while it is.
    pub fn tracking_failing(&self, now: i64) -> Option<(i64, String)> {
        if self.tracking_failing_workers == 0 {
            return None;
        }
        self.tracking_failing
            .as_ref()
            .map(|(since, e)| (now.saturating_sub(*since), e.clone()))
    }

    /// A drain's progress: receivers tracked as received and as finished.
    pub fn progress(&self) -> String {
        let received = self.states.get(&State::Receive).copied().unwrap_or(0);
        let finished: u64 = self
            .states
            .iter()
            .filter(|(s, _)| !matches!(s, State::Receive | State::Click))
            .map(|(_, n)| n)
            .sum();
        let mut p = format!(
            "{received} receivers received, {finished} finished, {} in flight",
            received.saturating_sub(finished)
        );
        if let Some((_, e)) = self.tracking_failing(0) {
            p.push_str(&format!("; tracking writes failing: {e}"));
        }
        p
    }
}

/// Backoff of tracking retries: from the first to the longest wait.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The writer inside the Track operator: what it still holds is written when the operator is
/// dropped (a halt, or a failed peer), so rows of sends already made are not lost with it.
/// After a graceful stop at a cut, rows of epochs past the cut are not written: the next run
/// reads their records again.
struct Owed {
    tracking: Tracking,
    counts: Arc<Mutex<Counts>>,
    failing: bool,
    /// Rows and dead letters of epochs the sources have not passed yet ([`HoldBack`]): written
    /// once they have, so a stop at a cut writes nothing of the epochs after it. Kept as the
    /// batches they came in (moved, not appended to one list that grows by copying: an epoch
    /// of a burst holds its ~100,000 requests' rows).
    pending: BTreeMap<Epoch, VecDeque<Vec<Tracked>>>,
    /// Counts of the rows written since the last flush.
    local: Counts,
    /// The (template, state) of the rows taken last, and how many in a row: counted here and
    /// added to `local` when the key changes or a take ends, not a map lookup per row.
    run: Option<((i64, State), u64)>,
    for_redis: Vec<RedisRow>,
    dead_letter_topic: Option<crate::kafka::DeadLetterTopic>,
    redis: Option<(RedisSink, UserTtl)>,
    stop: Option<Checkpoints>,
}

/// Where Track holds rows back: rows of epochs the sources have not passed (records read ahead
/// of the watermark, not judged yet) wait, so a stop at a cut writes nothing past it. Every
/// other row (sends, rules, recalls: always below the sources' frontier) is written at once.
#[derive(Clone)]
pub struct HoldBack {
    /// A probe on the sources' output.
    pub sources: ProbeHandle<Epoch>,
    /// The run's checkpoints (their stop cut).
    pub checkpoints: Checkpoints,
}

impl Owed {
    /// Hands the rows of epochs before `bound` (all with `None`) to the writer, until it holds
    /// `limit` rows: the rest stay pending (a burst's epoch is written in parts of
    /// `flush_rows`, not converted to columns all at once). Returns whether rows before
    /// `bound` are still pending.
    fn take_through(&mut self, bound: Option<Epoch>, limit: usize) -> bool {
        let more = self.take_rows_through(bound, limit);
        self.end_run();
        more
    }

    /// [`Owed::take_through`], leaving the last run of keys uncounted.
    fn take_rows_through(&mut self, bound: Option<Epoch>, limit: usize) -> bool {
        loop {
            let Some(mut entry) = self.pending.first_entry() else {
                return false;
            };
            if bound.is_some_and(|b| *entry.key() >= b) {
                return false;
            }
            if self.tracking.buffered() >= limit {
                return true;
            }
            let room = limit - self.tracking.buffered();
            let Some(rows) = entry.get_mut().front_mut() else {
                entry.remove();
                continue;
            };
            // Whole items while they fit; a group of RECEIVE rows is split at the limit.
            let (mut whole, mut n) = (0, 0);
            while whole < rows.len() && n + rows[whole].len() <= room {
                n += rows[whole].len();
                whole += 1;
            }
            let taken: Vec<Tracked> = if whole == rows.len() {
                let batch = entry.get_mut().pop_front().unwrap_or_default();
                if entry.get().is_empty() {
                    entry.remove();
                }
                batch
            } else {
                let mut taken: Vec<Tracked> = rows.drain(..whole).collect();
                if let Tracked::Received(g) = &mut rows[0]
                    && n < room
                {
                    taken.push(Tracked::Received(g.split_front(room - n)));
                }
                taken
            };
            for f in taken {
                self.take(f);
            }
        }
    }

    /// Hands one row, group of RECEIVE rows or dead letter to the writer.
    fn take(&mut self, f: Tracked) {
        match f {
            Tracked::Received(g) => {
                for r in g.into_rows() {
                    self.take(Tracked::Row(r));
                }
            }
            Tracked::Row(r) => {
                let key = (r.meta.template_id, r.state);
                match &mut self.run {
                    Some((k, n)) if *k == key => *n += 1,
                    _ => {
                        self.end_run();
                        self.run = Some((key, 1));
                    }
                }
                if let Some((_, ttl)) = &self.redis {
                    self.for_redis.push(RedisRow::of(&r, *ttl));
                }
                self.tracking.event(r);
            }
            Tracked::Dead(d) => {
                self.local.dead_letters += 1;
                if let Some(t) = &self.dead_letter_topic {
                    t.send(&d);
                }
                self.tracking.dead(*d);
            }
        }
    }

    /// Whether rows were taken that are not yet written, or whose counts are not yet added:
    /// rows taken with nothing buffered went straight to memory (tests).
    fn writable(&self) -> bool {
        self.tracking.buffered() > 0 || self.local != Counts::default()
    }

    /// Adds the run of rows of one key to `local`.
    fn end_run(&mut self) {
        if let Some(((template, state), n)) = self.run.take() {
            *self.local.states.entry(state).or_default() += n;
            *self
                .local
                .per_template
                .entry((template, state))
                .or_default() += n;
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failed write; says so once per kind of error.
    fn failed(&mut self, e: &std::io::Error, last: &mut Option<String>) {
        let kind = format!("{:?}", e.kind());
        if last.as_deref() != Some(&kind) {
            tracing::error!(
                "tracking: {e}; new sends are held back and the write is retried (tidings_tracking_failing in /metrics)"
            );
            *last = Some(kind);
        }
        let first = !self.failing;
        self.failing = true;
        let mut c = self.counts();
        c.tracking_write_failures += 1;
        if first {
            c.tracking_failing_workers += 1;
        }
        let since = match &c.tracking_failing {
            Some((since, _)) if !first || c.tracking_failing_workers > 1 => *since,
            _ => wall_ms(),
        };
        c.tracking_failing = Some((since, e.to_string()));
    }

    fn recovered(&mut self) {
        if !self.failing {
            return;
        }
        self.failing = false;
        tracing::info!("tracking: writing again; sends resume");
        let mut c = self.counts();
        c.tracking_failing_workers = c.tracking_failing_workers.saturating_sub(1);
        if c.tracking_failing_workers == 0 {
            c.tracking_failing = None;
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        // Stopped at a cut: what came after it is read again by the next run.
        let bound = self
            .stop
            .as_ref()
            .and_then(|c| c.stop_cut())
            .map(|c| c.saturating_add(1));
        self.take_through(bound, usize::MAX);
        if !self.writable() {
            return;
        }
        let held = self.tracking.buffered();
        let written = self
            .tracking
            .flush()
            .and_then(|()| match &self.dead_letter_topic {
                Some(t) => t
                    .flush()
                    .map_err(|e| std::io::Error::other(format!("dead-letter topic: {e}"))),
                None => Ok(()),
            });
        if let Err(e) = written {
            tracing::error!("tracking: {e}; {held} rows are not written");
            self.counts().tracking_owed += held as u64;
        } else {
            if let Some((sink, _)) = &self.redis {
                sink.send(std::mem::take(&mut self.for_redis));
            }
            let local = std::mem::take(&mut self.local);
            self.counts().merge(&local);
        }
        if self.failing {
            self.recovered();
        }
    }
}

/// Writes `rows` (event rows and dead letters) to `tracking` (held back per [`HoldBack`]). A write that fails is retried with backoff, keeping every row and the
/// capability of their epochs: the "done" frontier waits, and the send stage holds new sends
/// while any worker's tracking is failing ([`Counts::tracking_failing_workers`]). `stop` is the
/// [`HoldBack`] of the main dataflow (rows past a stop's cut are dropped).
#[allow(clippy::too_many_arguments)]
pub fn track<'s>(
    rows: StreamVec<'s, Epoch, Tracked>,
    tracking: Tracking,
    flush_rows: usize,
    flush_interval: Duration,
    counts: Arc<Mutex<Counts>>,
    dead_letter_topic: Option<crate::kafka::DeadLetterTopic>,
    redis: Option<(RedisSink, UserTtl)>,
    hold_back: Option<HoldBack>,
) -> StreamVec<'s, Epoch, ()> {
    let scope = rows.scope();
    rows.unary_frontier::<Trimming<()>, _, _, _>(Pipeline, "Track", move |_, info| {
        let activator = scope.activator_for(info.address);
        // Held at the earliest epoch with rows not yet durable (pending or buffered).
        let mut held: Option<Capability<Epoch>> = None;
        let mut since = Instant::now();
        let mut owed = Owed {
            tracking,
            counts: counts.clone(),
            failing: false,
            pending: BTreeMap::new(),
            local: Counts::default(),
            run: None,
            for_redis: Vec::new(),
            dead_letter_topic,
            redis,
            stop: hold_back.as_ref().map(|h| h.checkpoints.clone()),
        };
        let mut retry = RETRY_FIRST;
        let mut next_try = Instant::now();
        let mut last_error: Option<String> = None;
        move |(input, frontier), _output| {
            input.for_each_stamp(|cap, batches| {
                let Some(&epoch) = cap.least() else { return };
                if held.as_ref().is_none_or(|h| epoch < *h.time()) {
                    held = Some(cap.delayed(&epoch, 0));
                }
                let list = owed.pending.entry(epoch).or_default();
                list.extend(batches.map(std::mem::take).filter(|b| !b.is_empty()));
            });
            // Rows the sources have passed are written; those ahead of them wait.
            let bound = match &hold_back {
                Some(h) => h.sources.with_frontier(|f| f.first().copied()),
                None => None,
            };
            let buffered_before = owed.tracking.buffered();
            let more = owed.take_through(bound, flush_rows);
            if buffered_before == 0 && owed.tracking.buffered() > 0 {
                since = Instant::now();
            }
            let writable = owed.writable();
            // Nothing buffered yet writable: the rows went straight to memory (tests).
            let due = owed.tracking.buffered() == 0
                || owed.tracking.buffered() >= flush_rows
                || since.elapsed() >= flush_interval
                || frontier.is_empty();
            if writable && due && Instant::now() < next_try {
                activator.activate_after(next_try - Instant::now());
            } else if writable && due {
                let written = owed
                    .tracking
                    .flush()
                    .and_then(|()| match &owed.dead_letter_topic {
                        Some(t) => t
                            .flush()
                            .map_err(|e| std::io::Error::other(format!("dead-letter topic: {e}"))),
                        None => Ok(()),
                    });
                if let Err(e) = written {
                    // Rows and capability stay; sends are held until a write succeeds.
                    owed.failed(&e, &mut last_error);
                    next_try = Instant::now() + retry;
                    activator.activate_after(retry);
                    retry = (retry * 2).min(RETRY_MAX);
                    return;
                }
                owed.recovered();
                last_error = None;
                retry = RETRY_FIRST;
                // Redis is fed only rows already durable in Parquet, and never waited for.
                if let Some((sink, _)) = &owed.redis {
                    sink.send(std::mem::take(&mut owed.for_redis));
                }
                let local = std::mem::take(&mut owed.local);
                counts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .merge(&local);
                since = Instant::now();
                if more {
                    // The rest of a large epoch: its next part.
                    activator.activate();
                }
            } else if writable {
                activator.activate_after(flush_interval.saturating_sub(since.elapsed()));
            } else if !owed.pending.is_empty() {
                // Rows held back: look again when the sources may have moved.
                activator.activate_after(flush_interval);
            }
            // The capability follows the earliest epoch not yet durable.
            let earliest = if owed.tracking.buffered() > 0 || owed.local != Counts::default() {
                held.as_ref().map(|h| *h.time())
            } else {
                owed.pending.keys().next().copied()
            };
            match (earliest, held.as_mut()) {
                (None, _) => held = None,
                (Some(e), Some(h)) if e > *h.time() => h.downgrade(&e),
                _ => {}
            }
        }
    })
}
