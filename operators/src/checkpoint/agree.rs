//! The cut protocol as messages: what each process knows ([`Local`]: the cuts agreed, what its
//! sources deposited, the newest complete cut) and what the coordinator on worker 0 decides
//! ([`Coordinator`]: when to cut, which epoch, when a cut is complete). Every exchange between
//! the two is a [`Ctl`] message. In one process they are delivered at once, under one lock; in
//! a cluster they travel through a small control dataflow (`super::control`), so processes
//! agree with nothing but timely's own channels.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{FINAL, Position};
use crate::Epoch;

/// One message of the cut protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ctl {
    /// → coordinator: a process registered writers (keyed operators, park) and sources,
    /// restored the checkpoint named `restored` (`""`: none), and puts event times in the
    /// epochs `grid` describes (`EventTime::grid`: every process must, or the same records
    /// would be judged in different orders).
    Register {
        writers: usize,
        sources: usize,
        restored: String,
        #[serde(default)]
        grid: String,
    },
    /// → coordinator: a process built its dataflows (every registration sent before it).
    Hello,
    /// → coordinator: a source joins round `round`, holding its capability at `held`.
    Join {
        round: u64,
        worker: usize,
        held: Epoch,
    },
    /// → coordinator: where a source resumes as of cut `cut`.
    Deposit {
        cut: Epoch,
        worker: usize,
        positions: BTreeMap<i32, Position>,
    },
    /// → coordinator: a source finished, having given records up to `given_max`.
    Finished {
        worker: usize,
        given_max: Epoch,
        positions: BTreeMap<i32, Position>,
    },
    /// → coordinator: a writer's part of `cut` is durable: its files in the cut's directory,
    /// and their bytes (listed in the cut's manifest).
    Part {
        cut: Epoch,
        files: Vec<(String, u64)>,
    },
    /// → coordinator: a graceful stop was asked for.
    Stop,
    /// → coordinator: a process knows the cut of round `round` (cluster), so its operators
    /// will write their parts before judging past it.
    Ack { round: u64 },
    /// ← coordinator: every process knows the cut of round `round`: sources move on.
    Release { round: u64 },
    /// ← coordinator: sources join round `round`.
    Request { round: u64 },
    /// ← coordinator: round `round` agreed on `cut` (`None`: no source was reading); `stop`
    /// when it is the graceful stop's last cut.
    Agreed {
        round: u64,
        cut: Option<Epoch>,
        stop: bool,
    },
    /// ← coordinator: every source finished; the run ends at its final cut.
    Ended,
    /// ← coordinator: cut `epoch` is complete; its commit offsets.
    Completed {
        epoch: Epoch,
        offsets: BTreeMap<i32, i64>,
    },
    /// → every process: this process ends before its graph drained (a halt or a failure), and
    /// why; the others halt too (a cluster is fail-stop, whoever started its processes).
    Halt { reason: String },
    // (Added last: the variants before keep their numbers on the wire.)
    /// → coordinator: a process starts: the backlog line it was given (`--backlog-before`)
    /// and the one it would draw by its own clock (`given` when there is one). Sent before any
    /// dataflow of the job is built, which waits for the cluster's [`Ctl::Line`].
    Propose {
        process: usize,
        given: Option<i64>,
        drawn: i64,
    },
    /// ← coordinator: the run's backlog line, process 0's (every process puts event times in
    /// epochs by it), or why the processes cannot agree on one.
    Line { before: Result<i64, String> },
}

impl Ctl {
    /// Whether the message goes to the coordinator (else to every process).
    pub fn to_coordinator(&self) -> bool {
        matches!(
            self,
            Ctl::Register { .. }
                | Ctl::Propose { .. }
                | Ctl::Hello
                | Ctl::Join { .. }
                | Ctl::Deposit { .. }
                | Ctl::Finished { .. }
                | Ctl::Part { .. }
                | Ctl::Stop
                | Ctl::Ack { .. }
        )
    }
}

/// What one process knows of the cuts.
#[derive(Debug, Default)]
pub(super) struct Local {
    /// The round being agreed, if any.
    pub round: Option<u64>,
    /// The epoch each of this process's sources joined the round at.
    pub joined: BTreeMap<usize, Epoch>,
    /// Cuts agreed and not completed.
    pub cuts: BTreeSet<Epoch>,
    /// (cut, source worker) deposits made.
    pub deposited: BTreeSet<(Epoch, usize)>,
    /// Sources of this process that finished.
    pub finished: BTreeSet<usize>,
    /// The graceful stop's last cut, once agreed.
    pub stop_at: Option<Epoch>,
    /// The newest complete cut and its commit offsets.
    pub completed: Option<(Epoch, BTreeMap<i32, i64>)>,
    /// The cluster's backlog line, once the coordinator told it (or why there is none).
    pub line: Option<Result<i64, String>>,
    /// Registrations of this process not yet sent (cluster).
    pub writers: usize,
    pub sources: usize,
}

impl Local {
    /// Applies a message of the coordinator; returns the acknowledgement to send, if any. In a
    /// cluster (`direct` false) a process that learns a cut acknowledges it, and its sources
    /// keep holding until every process has (`Release`): no process can see the others'
    /// progress past a cut before it knows the cut, even one whose own sources hold nothing.
    pub fn apply(&mut self, m: Ctl, direct: bool) -> Option<Ctl> {
        match m {
            Ctl::Request { round } => {
                self.round = Some(round);
                self.joined.clear();
            }
            Ctl::Release { round } => {
                if self.round == Some(round) {
                    self.round = None;
                    self.joined.clear();
                }
            }
            Ctl::Agreed { round, cut, stop } => {
                let ack = !direct && cut.is_some();
                if self.round == Some(round) && !ack {
                    self.round = None;
                    self.joined.clear();
                }
                if let Some(c) = cut {
                    self.cuts.insert(c);
                    if stop {
                        self.stop_at = Some(c);
                    }
                }
                if ack {
                    return Some(Ctl::Ack { round });
                }
            }
            Ctl::Line { before } => self.line = Some(before),
            Ctl::Ended => self.stop_at = None,
            Ctl::Completed { epoch, offsets } => {
                self.cuts = self.cuts.split_off(&epoch.saturating_add(1));
                self.deposited.retain(|&(e, _)| e > epoch);
                if epoch == FINAL {
                    self.cuts.clear();
                    self.deposited.clear();
                }
                self.completed = Some((epoch, offsets));
            }
            other => debug_assert!(false, "not a message for a process: {other:?}"),
        }
        None
    }
}

/// What the coordinator (worker 0) decides.
#[derive(Debug, Default)]
pub(super) struct Coordinator {
    /// Processes of the run, and how many said they built their dataflows.
    pub processes: usize,
    pub hellos: usize,
    /// Operator instances that write a part of every checkpoint.
    pub writers: usize,
    /// Source instances that deposit positions for every cut.
    pub sources: usize,
    pub round: u64,
    /// A cut was asked for and the sources are agreeing on its epoch.
    pub requested: bool,
    /// The epoch each source holds its capability at while they agree.
    pub agreeing: BTreeMap<usize, Epoch>,
    /// Cut epochs agreed and not yet completed.
    pub cuts: BTreeSet<Epoch>,
    /// Parts written, per cut.
    pub parts: BTreeMap<Epoch, usize>,
    /// Their files and bytes, per cut.
    pub files: BTreeMap<Epoch, BTreeMap<String, u64>>,
    /// Source positions deposited per cut, per source.
    pub positions: BTreeMap<Epoch, HashMap<usize, BTreeMap<i32, Position>>>,
    /// Final positions of the sources that finished.
    pub finished: HashMap<usize, BTreeMap<i32, Position>>,
    /// The largest epoch a finished source gave a record at: a cut agreed later is at least
    /// this, so the finished source's final positions hold for it.
    pub finished_max: Epoch,
    /// The round whose cut the processes are acknowledging (cluster), and the acks so far.
    pub acking: Option<(u64, usize)>,
    /// Cuts given up: a source finished past them without depositing for them.
    pub abandoned: BTreeSet<Epoch>,
    /// A graceful stop was asked for: the next cut agreed is the run's last.
    pub stopping: bool,
    pub stop_at: Option<Epoch>,
    /// Messages to every process.
    pub out: Vec<Ctl>,
    /// The checkpoint the first registered process restored, and its epochs; and why the
    /// run cannot go on if another restored a different one or has other epochs.
    pub restored: Option<String>,
    pub grid: Option<String>,
    pub mismatch: Option<String>,
    /// The backlog line each process was given and would draw, by process.
    pub proposed: BTreeMap<usize, (Option<i64>, i64)>,
}

/// The cluster's backlog line from what each process was given and would draw: process 0's,
/// drawn by its clock unless the processes were all given the same one (the processes' clocks
/// may differ; one line makes one grid of epochs). Processes given different lines (or some
/// one, some none) are refused.
pub fn agree_line(proposed: &BTreeMap<usize, (Option<i64>, i64)>) -> Result<i64, String> {
    let shown = |given: Option<i64>| given.map_or_else(|| "none".to_string(), crate::live::iso);
    let mut all = proposed.iter();
    let Some((&p0, &(first, drawn))) = all.next() else {
        return Err("no process proposed a backlog line".into());
    };
    match all.find(|(_, (given, _))| *given != first) {
        None => Ok(drawn),
        Some((p, &(other, _))) => Err(format!(
            "the processes were given different --backlog-before (process {p0}: {}; process {p}: {}): give every process the same one, or none (process 0's clock then draws it)",
            shown(first),
            shown(other)
        )),
    }
}

impl Coordinator {
    fn reading(&self) -> usize {
        self.sources.saturating_sub(self.finished.len())
    }

    fn ready(&self) -> bool {
        self.hellos >= self.processes
    }

    /// Handles a message sent to the coordinator.
    pub fn handle(&mut self, m: Ctl) {
        match m {
            Ctl::Register {
                writers,
                sources,
                restored,
                grid,
            } => {
                self.writers += writers;
                self.sources += sources;
                match &self.grid {
                    None => self.grid = Some(grid),
                    Some(first) if *first != grid => {
                        self.mismatch.get_or_insert(format!(
                            "the processes put event times in different epochs ({first}; and {grid}): start every process with the same job file"
                        ));
                    }
                    Some(_) => {}
                }
                match &self.restored {
                    None => self.restored = Some(restored),
                    Some(first) if *first != restored => {
                        let name = |n: &str| {
                            if n.is_empty() {
                                "none".to_string()
                            } else {
                                n.to_string()
                            }
                        };
                        self.mismatch.get_or_insert(format!(
                            "the processes restored different checkpoints ({} and {}): the checkpoints changed while they started; start them again",
                            name(first),
                            name(&restored)
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ctl::Propose {
                process,
                given,
                drawn,
            } => {
                self.proposed.insert(process, (given, drawn));
                if self.proposed.len() == self.processes {
                    let before = agree_line(&self.proposed);
                    self.out.push(Ctl::Line { before });
                }
            }
            Ctl::Hello => {
                self.hellos += 1;
                if self.ready() && self.stopping {
                    self.start_round();
                }
            }
            Ctl::Join {
                round,
                worker,
                held,
            } => {
                if self.requested && round == self.round {
                    self.agreeing.entry(worker).or_insert(held);
                    if self.agreeing.len() >= self.reading() {
                        self.agree();
                    }
                }
            }
            Ctl::Deposit {
                cut,
                worker,
                positions,
            } => {
                self.positions
                    .entry(cut)
                    .or_default()
                    .insert(worker, positions);
            }
            Ctl::Finished {
                worker,
                given_max,
                positions,
            } => self.finished(worker, given_max, positions),
            Ctl::Part { cut, .. } if self.abandoned.contains(&cut) => {}
            Ctl::Part { cut, files } => {
                *self.parts.entry(cut).or_default() += 1;
                self.files.entry(cut).or_default().extend(files);
            }
            Ctl::Stop => self.stop(),
            Ctl::Ack { round } => {
                if let Some((r, n)) = self.acking.as_mut()
                    && *r == round
                {
                    *n += 1;
                    if *n >= self.processes {
                        self.acking = None;
                        self.out.push(Ctl::Release { round });
                    }
                }
            }
            other => debug_assert!(false, "not a message for the coordinator: {other:?}"),
        }
    }

    /// Asks for a cut (worker 0's driver, every `checkpoint_ms`). Ignored while one is being
    /// agreed or has not completed yet, and until every process built its dataflows.
    pub fn request_cut(&mut self) {
        if !self.requested && self.cuts.is_empty() {
            self.start_round();
        }
    }

    fn start_round(&mut self) {
        if self.requested || !self.ready() || self.reading() == 0 {
            return;
        }
        self.requested = true;
        self.round += 1;
        self.agreeing.clear();
        self.out.push(Ctl::Request { round: self.round });
    }

    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        // Even with a cut pending: the new one is at least as late.
        self.start_round();
    }

    fn finished(&mut self, worker: usize, given_max: Epoch, positions: BTreeMap<i32, Position>) {
        // A cut agreed while this source's process had not heard of it yet: the source gave
        // records past it and deposited nothing for it, so its final positions would skip
        // them. The cut is given up; the next one (or the final cut) covers it.
        let lost: Vec<Epoch> = self
            .cuts
            .iter()
            .copied()
            .filter(|&c| {
                c < given_max
                    && c != FINAL
                    && !self
                        .positions
                        .get(&c)
                        .is_some_and(|d| d.contains_key(&worker))
            })
            .collect();
        let mut restop = false;
        for c in lost {
            tracing::info!(
                "checkpoint {c} abandoned: source {worker} finished past it before it knew of it"
            );
            self.cuts.remove(&c);
            self.parts.remove(&c);
            self.files.remove(&c);
            self.positions.remove(&c);
            self.abandoned.insert(c);
            if self.stop_at == Some(c) {
                // The stop's cut is lost: the sources hold at it for ever. The stop is agreed
                // again, at a cut past every finished source's records.
                self.stop_at = None;
                restop = true;
            }
        }
        self.finished_max = self.finished_max.max(given_max);
        self.finished.insert(worker, positions);
        self.agreeing.remove(&worker);
        if self.reading() == 0 {
            // Every source finished (end of input): the run ends at its final cut, a stop
            // agreed before included; nothing is left past a cut to read again.
            self.stop_at = None;
            self.out.push(Ctl::Ended);
        }
        if self.requested && self.agreeing.len() >= self.reading() {
            if self.reading() == 0 {
                self.requested = false;
                self.agreeing.clear();
                self.out.push(Ctl::Agreed {
                    round: self.round,
                    cut: None,
                    stop: false,
                });
            } else {
                self.agree();
            }
        }
        if restop && self.reading() > 0 {
            self.start_round();
        }
    }

    /// Every reading source has joined: the cut is the largest epoch they hold.
    fn agree(&mut self) {
        let cut = self
            .agreeing
            .values()
            .max()
            .map(|&c| c.max(self.finished_max));
        let mut stop = false;
        if let Some(c) = cut {
            self.cuts.insert(c);
            if self.stopping && self.stop_at.is_none() {
                self.stop_at = Some(c);
                stop = true;
            }
        }
        self.requested = false;
        self.agreeing.clear();
        // A cluster's sources hold until every process acknowledged the cut.
        if cut.is_some() && self.processes > 1 {
            self.acking = Some((self.round, 0));
        }
        self.out.push(Ctl::Agreed {
            round: self.round,
            cut,
            stop,
        });
    }

    /// Whether every source deposited positions for `e` (or finished, for the final cut and
    /// any cut it did not reach).
    pub fn has_every_position(&self, e: Epoch) -> bool {
        if self.abandoned.contains(&e) {
            return false;
        }
        let deposited = self.positions.get(&e);
        let n = deposited.map_or(0, |d| d.len())
            + self
                .finished
                .keys()
                .filter(|w| deposited.is_none_or(|d| !d.contains_key(w)))
                .count();
        n >= self.sources
    }

    /// The newest cut before `before` (`None`: any) with every part and position.
    pub fn completable(&self, before: Option<Epoch>) -> Option<Epoch> {
        if !self.ready() {
            // Some process's writers and sources are not counted yet.
            return None;
        }
        self.parts
            .iter()
            .rev()
            .filter(|&(&e, &n)| before.is_none_or(|b| e < b) && n >= self.writers)
            .map(|(&e, _)| e)
            .find(|e| self.has_every_position(*e))
    }

    /// The positions of cut `epoch` merged into `base`, and its parts' files; forgets
    /// everything up to it.
    pub fn take_cut(
        &mut self,
        epoch: Epoch,
        base: &BTreeMap<i32, Position>,
    ) -> (BTreeMap<i32, Position>, BTreeMap<String, u64>) {
        let files = self.files.remove(&epoch).unwrap_or_default();
        let mut merged = base.clone();
        let deposits = self.positions.get(&epoch).cloned().unwrap_or_default();
        let sources = deposits.iter().chain(
            self.finished
                .iter()
                .filter(|(w, _)| !deposits.contains_key(w)),
        );
        for (_, per_partition) in sources {
            for (&p, pos) in per_partition {
                merged.insert(p, pos.clone());
            }
        }
        let after = epoch.saturating_add(1);
        self.parts = self.parts.split_off(&after);
        self.files = self.files.split_off(&after);
        self.positions = self.positions.split_off(&after);
        self.cuts = self.cuts.split_off(&after);
        if epoch == FINAL {
            self.parts.clear();
            self.files.clear();
            self.positions.clear();
            self.cuts.clear();
        }
        (merged, files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator of `processes` processes (all said hello), one writer each, two sources.
    fn coordinator(processes: usize) -> Coordinator {
        Coordinator {
            processes,
            hellos: processes,
            writers: processes,
            sources: 2,
            ..Coordinator::default()
        }
    }

    fn join(round: u64, worker: usize, held: Epoch) -> Ctl {
        Ctl::Join {
            round,
            worker,
            held,
        }
    }

    fn deposit(cut: Epoch, worker: usize) -> Ctl {
        Ctl::Deposit {
            cut,
            worker,
            positions: BTreeMap::new(),
        }
    }

    /// A source that finishes past an agreed cut it never heard of (its process had not
    /// received `Agreed` yet) makes the cut unusable: it is abandoned, never completed with
    /// final positions that would skip the records given past it, and the next cut can be
    /// asked for.
    #[test]
    fn a_cut_a_source_finished_past_unknowingly_is_abandoned() {
        let mut c = coordinator(1);
        c.request_cut();
        c.handle(join(1, 0, 5));
        c.handle(join(1, 1, 7));
        assert_eq!(c.cuts, BTreeSet::from([7]));
        // Worker 1 gave records up to epoch 9 and finished, without a deposit for 7.
        c.handle(Ctl::Finished {
            worker: 1,
            given_max: 9,
            positions: BTreeMap::new(),
        });
        c.handle(deposit(7, 0));
        c.handle(Ctl::Part {
            cut: 7,
            files: Vec::new(),
        });
        assert_eq!(c.completable(None), None, "the abandoned cut completed");
        assert!(c.cuts.is_empty());
        // The next cut is asked for and completes.
        c.out.clear();
        c.request_cut();
        assert_eq!(c.out, vec![Ctl::Request { round: 2 }]);
        c.handle(join(2, 0, 12));
        assert_eq!(c.cuts, BTreeSet::from([12]));
        c.handle(deposit(12, 0));
        c.handle(Ctl::Part {
            cut: 12,
            files: Vec::new(),
        });
        assert_eq!(c.completable(None), Some(12));
    }

    /// A graceful stop whose cut is abandoned (a source finished past it before it knew of it)
    /// is agreed again at a later cut: the sources held at the lost cut would otherwise wait
    /// for it until the drain timeout.
    #[test]
    fn a_stop_whose_cut_is_abandoned_is_agreed_again() {
        let mut c = coordinator(1);
        let mut p = Local::default();
        c.handle(Ctl::Stop);
        for m in std::mem::take(&mut c.out) {
            p.apply(m, true);
        }
        c.handle(join(1, 0, 5));
        c.handle(join(1, 1, 7));
        for m in std::mem::take(&mut c.out) {
            p.apply(m, true);
        }
        assert_eq!(p.stop_at, Some(7));
        c.handle(Ctl::Finished {
            worker: 1,
            given_max: 9,
            positions: BTreeMap::new(),
        });
        assert_eq!(
            c.out,
            vec![Ctl::Request { round: 2 }],
            "the stop was not agreed again"
        );
        for m in std::mem::take(&mut c.out) {
            p.apply(m, true);
        }
        c.handle(join(2, 0, 8));
        let agreed = std::mem::take(&mut c.out);
        assert_eq!(
            agreed,
            vec![Ctl::Agreed {
                round: 2,
                cut: Some(9),
                stop: true
            }]
        );
        for m in agreed {
            p.apply(m, true);
        }
        assert_eq!(p.stop_at, Some(9), "the sources still hold at the lost cut");
        c.handle(deposit(9, 0));
        c.handle(Ctl::Part {
            cut: 9,
            files: Vec::new(),
        });
        assert_eq!(c.completable(None), Some(9));
    }

    /// In a cluster the sources move on only once every process acknowledged the cut.
    #[test]
    fn a_cluster_releases_its_sources_once_every_process_knows_the_cut() {
        let mut c = coordinator(2);
        let mut p = Local::default();
        c.request_cut();
        for m in std::mem::take(&mut c.out) {
            assert_eq!(p.apply(m, false), None);
        }
        assert_eq!(p.round, Some(1));
        c.handle(join(1, 0, 5));
        c.handle(join(1, 1, 7));
        let agreed = std::mem::take(&mut c.out);
        assert_eq!(agreed.len(), 1);
        let ack = p.apply(agreed[0].clone(), false);
        assert_eq!(ack, Some(Ctl::Ack { round: 1 }));
        assert!(p.cuts.contains(&7));
        assert_eq!(p.round, Some(1), "sources still hold");
        c.handle(Ctl::Ack { round: 1 });
        assert!(
            c.out.is_empty(),
            "released before the second process knew the cut"
        );
        c.handle(Ctl::Ack { round: 1 });
        assert_eq!(c.out, vec![Ctl::Release { round: 1 }]);
        assert_eq!(p.apply(Ctl::Release { round: 1 }, false), None);
        assert_eq!(p.round, None);
        // One process: released with the agreement, no acks.
        let mut one = Local {
            round: Some(1),
            ..Local::default()
        };
        let m = Ctl::Agreed {
            round: 1,
            cut: Some(3),
            stop: false,
        };
        assert_eq!(one.apply(m, true), None);
        assert_eq!(one.round, None);
    }

    /// A source that finishes having given nothing past the cut keeps it usable: its final
    /// positions hold for it.
    #[test]
    fn a_cut_a_source_finished_before_is_kept() {
        let mut c = coordinator(1);
        c.request_cut();
        c.handle(join(1, 0, 5));
        c.handle(join(1, 1, 7));
        c.handle(Ctl::Finished {
            worker: 1,
            given_max: 7,
            positions: BTreeMap::new(),
        });
        c.handle(deposit(7, 0));
        c.handle(Ctl::Part {
            cut: 7,
            files: Vec::new(),
        });
        assert_eq!(c.completable(None), Some(7));
    }

    /// A process's registration: one writer, one source.
    fn register(restored: &str, grid: &str) -> Ctl {
        Ctl::Register {
            writers: 1,
            sources: 1,
            restored: restored.into(),
            grid: grid.into(),
        }
    }

    #[test]
    fn processes_that_restored_different_checkpoints_are_refused() {
        let mut c = Coordinator::default();
        let register = |restored: &str| register(restored, "g");
        c.handle(register("0000000000003-final"));
        c.handle(register("0000000000003-final"));
        assert!(c.mismatch.is_none());
        c.handle(register(""));
        let why = c.mismatch.clone().expect("refused");
        assert!(why.contains("0000000000003-final and none"), "{why}");
    }

    /// Processes that would put the same event time in different epochs (another job file's
    /// `epoch_ms` or `backlog_epoch_ms`) are refused: they would judge the same records
    /// in different orders.
    #[test]
    fn processes_with_different_epochs_are_refused() {
        let mut c = Coordinator::default();
        let register = |grid: &str| register("", grid);
        c.handle(register("10 ms epochs"));
        c.handle(register("10 ms epochs"));
        assert!(c.mismatch.is_none());
        c.handle(register("10 ms epochs, 1000 ms before 5000"));
        let why = c.mismatch.clone().expect("refused");
        assert!(
            why.contains("(10 ms epochs; and 10 ms epochs, 1000 ms before 5000)")
                && why.contains("the same job file"),
            "{why}"
        );
    }

    /// The cluster's line is process 0's, drawn by its clock, whatever the others' clocks
    /// drew; told to every process once all proposed. Lines given alike are kept; processes
    /// given different ones (or one and none) are refused.
    #[test]
    fn the_cluster_draws_process_0s_backlog_line() {
        let mut c = coordinator(3);
        let propose = |process, given, drawn| Ctl::Propose {
            process,
            given,
            drawn,
        };
        c.handle(propose(2, None, 9_000));
        c.handle(propose(0, None, 5_000));
        assert!(c.out.is_empty(), "told before every process proposed");
        c.handle(propose(1, None, 1_000));
        assert_eq!(c.out, vec![Ctl::Line { before: Ok(5_000) }]);
        let agreed = |proposed: &[(Option<i64>, i64)]| {
            agree_line(&proposed.iter().copied().enumerate().collect())
        };
        assert_eq!(agreed(&[(Some(7), 7), (Some(7), 7)]), Ok(7));
        let given = 1_763_776_800_000; // 2025-11-22T02:00:00Z
        for refused in [
            agreed(&[(Some(given), given), (None, 3)]),
            agreed(&[(None, 3), (Some(given), given)]),
            agreed(&[(Some(given), given), (Some(given), given), (Some(8), 8)]),
        ] {
            let why = refused.expect_err("refused");
            assert!(why.contains("different --backlog-before"), "{why}");
        }
        let why = agreed(&[(None, 3), (Some(given), given)]).unwrap_err();
        assert!(
            why.contains("(process 0: none; process 1: 2025-11-22T02:00:00.000Z)"),
            "{why}"
        );
    }
}
