//! Drive: each worker steps its dataflows until they are done, asking for checkpoint cuts,
//! completing them (worker 0) once the "done" frontier passed them, and committing the offsets
//! of completed cuts (never before). It leaves early on a failed peer or a halt, and at its cut
//! on a graceful stop.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::CommitMode;
use tidings_operators::Epoch;
use tidings_operators::checkpoint::FINAL;
use tidings_operators::checkpoint::control::Control;
use tidings_operators::event_time::EventTime;
use tidings_operators::park::ParkStore;
use timely::dataflow::ProbeHandle;

use super::build::Shared;
use super::graph::MainGraph;
use super::wall_ms;
use crate::backlog::BacklogReader;
use crate::kafka::KafkaReader;

/// Commits the offsets of the newest completed checkpoint, once per checkpoint.
struct Committer {
    reader: Option<Rc<KafkaReader>>,
    committed: Option<Epoch>,
}

impl Committer {
    fn commit(&mut self, s: &Shared, mode: CommitMode) {
        if let Some(r) = &self.reader
            && let Some((e, offsets)) = s.checkpoints.completed()
            && self.committed != Some(e)
        {
            r.commit(&offsets, mode);
            self.committed = Some(e);
        }
    }
}

/// Steps this worker until its dataflows are done (or it must leave).
pub(crate) fn drive_worker(
    worker: &mut timely::worker::Worker,
    s: &Shared,
    main: MainGraph,
    accounts: (ProbeHandle<Epoch>, Option<Rc<BacklogReader>>),
    mut control: Option<Control>,
) {
    let index = worker.index();
    let (done_accounts, account_reader) = accounts;
    let done = main.done;
    let mut committer = Committer {
        reader: main.reader,
        committed: None,
    };
    let mut seen: Option<Epoch> = Some(0);
    let mut accounts_seen: Option<Epoch> = Some(0);
    let mut last_cut = Instant::now();
    let pump = |control: &mut Option<Control>| {
        if let Some(c) = control {
            c.pump();
        }
    };
    while !done.done() || !done_accounts.done() {
        pump(&mut control);
        worker.step_or_park(Some(Duration::from_millis(1)));
        halt_with_peers(s);
        if s.health.may_leave() {
            // A peer failed, or a halt: no checkpoint is completed.
            return leave_early(worker, s, &mut control);
        }
        if index == 0 && last_cut.elapsed() >= s.job.checkpoint {
            s.checkpoints.request_cut();
            last_cut = Instant::now();
        }
        if done.done() {
            s.main_done.store(true, Ordering::Relaxed);
        }
        // The stop's cut, once the cluster agreed it (looked up once a turn). Then the queued
        // accounts' sends waiting for a permit give up (what they hold stays in their
        // topics), instead of holding the stop for the minutes a slow account takes to send
        // its room.
        let stop_cut = s.checkpoints.stop_cut();
        if stop_cut.is_some() {
            s.health.stop_queued();
        }
        // Once they may give up, the account topics are committed only at the end, short of
        // the first record that did (`BacklogReader::commit_done`).
        if let Some(r) = &account_reader
            && !s.health.queued_stopped()
        {
            let f = done_accounts.with_frontier(|f| f.first().copied());
            if f != accounts_seen {
                r.commit_done(f, CommitMode::Async, &s.queues);
                accounts_seen = f;
            }
        }
        let frontier = done.with_frontier(|f| f.first().copied());
        // A stop's frontier stays at its cut: a deposit that comes after it is looked for.
        let stop_owed =
            stop_cut.is_some_and(|c| s.checkpoints.completed().is_none_or(|(e, _)| e != c));
        // In a cluster, parts and positions arrive as messages: look whenever one may have.
        if index == 0
            && (frontier != seen || stop_owed || control.is_some())
            && let Some(f) = frontier
        {
            match s.checkpoints.complete_before(Some(f)) {
                Ok(Some(_)) => s.live.checkpoint().completed_at(wall_ms()),
                Ok(None) => {}
                Err(e) => {
                    s.health.fail(format!("checkpoint: {e}"));
                    return leave_early(worker, s, &mut control);
                }
            }
            seen = frontier;
        }
        committer.commit(s, CommitMode::Async);
        // A graceful stop ends here once its cut is complete (and the account topics
        // drained): what was read past the cut is dropped, the next run reads it again.
        if let Some(cut) = stop_cut
            && s.checkpoints.completed().is_some_and(|(e, _)| e == cut)
            && done_accounts.done()
        {
            committer.commit(s, CommitMode::Sync);
            if let Some(r) = &account_reader {
                r.commit_done(None, CommitMode::Sync, &s.queues);
            }
            count_parked(s, index);
            pump(&mut control);
            return crate::health::leave(worker);
        }
    }
    final_cut(worker, s, &mut control);
    pump(&mut control);
    committer.commit(s, CommitMode::Sync);
    if let Some(r) = &account_reader {
        r.commit_done(None, CommitMode::Sync, &s.queues);
    }
    count_parked(s, index);
}

/// How this worker puts event times in epochs. In a cluster that waits, stepping, for the
/// coordinator to tell the cluster's backlog line (process 0's), proposed by every process as
/// it started; `None` when the run cannot go on (the processes were given different lines, or
/// a peer failed): this worker has left, having told the other processes.
pub(crate) fn agreed_event(
    worker: &mut timely::worker::Worker,
    s: &Shared,
    control: &mut Option<Control>,
) -> Option<EventTime> {
    let Some(c) = control.as_mut() else {
        return Some(s.job.event);
    };
    loop {
        match s.checkpoints.line() {
            Some(Ok(before)) => {
                let event = s
                    .job
                    .event
                    .with_backlog(before, s.job.event.backlog.epoch_ms);
                s.checkpoints.set_grid(event.grid());
                s.live.source().set_event_time(event);
                if let Some(b) = event.active_backlog()
                    && worker.index().is_multiple_of(s.opts.workers.max(1))
                {
                    tracing::info!(
                        "the cluster's backlog line: event times before {} are read in {} ms epochs",
                        tidings_operators::live::iso(b.before),
                        b.epoch_ms
                    );
                    if super::build::past_caught_up(
                        b.before,
                        s.opts.clock.now_ms(),
                        event.max_out_of_order_ms,
                    ) {
                        tracing::warn!(
                            "this process's clock is behind the cluster's backlog line (process 0's): a caught-up partition's watermark here is in backlog epochs, and cuts, stops and releases wait for them; keep the machines' clocks in step"
                        );
                    }
                }
                return Some(event);
            }
            Some(Err(why)) => s.health.fail(why),
            None => {}
        }
        c.pump();
        worker.step_or_park(Some(Duration::from_millis(1)));
        halt_with_peers(s);
        if s.health.may_leave() {
            leave_early(worker, s, control);
            return None;
        }
    }
}

/// A cluster is fail-stop, whoever started its processes: when another process ended before
/// its graph drained (a halt, a failure), this one halts too.
fn halt_with_peers(s: &Shared) {
    if let Some(why) = s.checkpoints.peer_halted()
        && !s.health.must_leave()
    {
        s.health.halt(format!(
            "another process of the cluster ended early ({why}); this one stops too"
        ));
    }
}

/// Leaves before the graph drained. In a cluster, the other processes are told first (they
/// halt too) and the message is given a moment to leave.
fn leave_early(worker: &mut timely::worker::Worker, s: &Shared, control: &mut Option<Control>) {
    announce(worker, s, control);
    crate::health::leave(worker)
}

/// In a cluster, tells the other processes that this one ends early (its failure or halt),
/// and steps a moment so the message leaves.
fn announce(worker: &mut timely::worker::Worker, s: &Shared, control: &mut Option<Control>) {
    let Some(c) = control.as_mut() else { return };
    let why = s
        .health
        .failure()
        .or_else(|| s.health.halted())
        .unwrap_or_else(|| "it ended early".into());
    s.checkpoints.announce_halt(&why);
    let since = Instant::now();
    while since.elapsed() < Duration::from_millis(300) {
        c.pump_halt();
        c.pump();
        worker.step_or_park(Some(Duration::from_millis(5)));
    }
}

/// Worker 0 writes the final cut once every part and position is in (its probe is done too);
/// the others wait for it (at most a minute), stepping, so that a cluster's control messages
/// keep flowing. In one process every part is in by now: worker 0 looks once.
fn final_cut(worker: &mut timely::worker::Worker, s: &Shared, control: &mut Option<Control>) {
    let index = worker.index();
    let complete = |e: Option<(Epoch, _)>| e.is_some_and(|(e, _)| e == FINAL);
    if index == 0 && control.is_none() {
        if let Err(e) = s.checkpoints.complete_before(None) {
            s.health.fail(format!("checkpoint: {e}"));
        }
        return;
    }
    let waited = Instant::now();
    while !complete(s.checkpoints.completed()) {
        halt_with_peers(s);
        if s.health.must_leave() {
            // Halted or failed while waiting: the others are told, not left to time out.
            announce(worker, s, control);
            return;
        }
        if index == 0
            && let Err(e) = s.checkpoints.complete_before(None)
        {
            s.health.fail(format!("checkpoint: {e}"));
            return;
        }
        if waited.elapsed() >= Duration::from_secs(60) {
            if index == 0 {
                s.health.fail(format!(
                    "checkpoint: the final cut was not complete within 60 s ({})",
                    s.checkpoints.waiting_for()
                ));
            }
            return;
        }
        if let Some(c) = control.as_mut() {
            c.pump();
        }
        worker.step_or_park(Some(Duration::from_millis(2)));
    }
}

/// Worker 0 says how many deliveries are still parked.
fn count_parked(s: &Shared, index: usize) {
    if index == 0 {
        let left = ParkStore::open(&s.job.state_dir.join("parked.jsonl"))
            .map(|p| p.len())
            .unwrap_or(0);
        *s.parked.lock().unwrap_or_else(|p| p.into_inner()) = left;
    }
}
