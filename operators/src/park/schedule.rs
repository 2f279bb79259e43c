//! When parked deliveries are released: a plain state machine, with no timely in it.
//!
//! Inputs: the parks of each epoch ([`Schedule::receive`]), how far the input is complete
//! ([`Progress`]: its frontier, or the end of input with the wall clock) and the checkpoint cuts
//! agreed. Outputs ([`Event`]): releases, each at the epoch of its release time, in release
//! order (release time, then event time, source position, receiver index), and the points
//! where a cut's part is to be written. [`Schedule::held`] is the least epoch it may still give
//! a release at: the park operator holds its capability there.
//!
//! A delivery parked until `r` is given on at the epoch of `r` (with `r` as its event time) once
//! the input is complete before that epoch, so the keyed operators judge it in event-time order
//! with every record of that epoch: a record of 10:25 is judged after every 09:00 release. A
//! release whose epoch is already behind what the schedule holds (a park received after its
//! release time, a restored one) is given at the held epoch, at once. At the end of input, what
//! is due by the wall clock is released and the rest stays parked for the next run.

use std::collections::BTreeMap;
use std::io;

use tidings_model::Delivery;
use tidings_model::time::Millis;

use super::{ParkStore, Parked, Shelf};
use crate::Epoch;
use crate::checkpoint::FINAL;
use crate::event_time::EventTime;

/// What a schedule releases from: a [`ParkStore`] (durable), or a [`Shelf`] (in memory).
pub trait Parking {
    /// Parks deliveries; for a durable store, on disk when it returns (or, in a job with
    /// checkpoints, held durably by the next cut: [`ParkStore::durable_through_cuts`]).
    fn park(&mut self, items: Vec<Parked>) -> io::Result<()>;
    /// The earliest release time.
    fn next_release(&self) -> Option<Millis>;
    /// Takes every delivery due at or before `t`, in release order, with the release time as
    /// event time.
    fn release_until(&mut self, t: Millis) -> Vec<Delivery>;
    /// Makes what is left durable, after a release.
    fn persist(&self) -> io::Result<()>;
}

impl Parking for ParkStore {
    fn park(&mut self, items: Vec<Parked>) -> io::Result<()> {
        ParkStore::park(self, items)
    }
    fn next_release(&self) -> Option<Millis> {
        ParkStore::next_release(self)
    }
    fn release_until(&mut self, t: Millis) -> Vec<Delivery> {
        ParkStore::release_until(self, t)
    }
    fn persist(&self) -> io::Result<()> {
        ParkStore::persist(self)
    }
}

impl Parking for Shelf {
    fn park(&mut self, items: Vec<Parked>) -> io::Result<()> {
        self.put(items);
        Ok(())
    }
    fn next_release(&self) -> Option<Millis> {
        Shelf::next_release(self)
    }
    fn release_until(&mut self, t: Millis) -> Vec<Delivery> {
        Shelf::release_until(self, t)
    }
    fn persist(&self) -> io::Result<()> {
        Ok(())
    }
}

/// How far the parks' input is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Every park of the epochs before this one has been received (the input frontier).
    Before(Epoch),
    /// The input has ended: what is due by the wall clock `now` is released.
    Done {
        /// The wall clock.
        now: Millis,
    },
}

/// What the schedule asks of its operator, in order.
#[derive(Debug)]
pub enum Event<'a, P> {
    /// Give these on at `epoch`, in this order (release order; event time = release time).
    Released {
        /// The epoch to give them at.
        epoch: Epoch,
        /// The deliveries.
        deliveries: Vec<Delivery>,
    },
    /// Every park and release through `epoch` is done and nothing later: write `parked` as the
    /// part of checkpoint `epoch` ([`FINAL`] at the end of input).
    Cut {
        /// The cut.
        epoch: Epoch,
        /// What is parked at the cut.
        parked: &'a P,
        /// Whether anything was parked or released since the previous cut's part (the park
        /// operator reads the changes themselves from its store; the tests read this).
        changed: bool,
    },
}

/// The release schedule of the park operator.
#[derive(Debug)]
pub struct Schedule {
    event: EventTime,
    /// Parks received, by epoch, not yet handed to the store.
    incoming: BTreeMap<Epoch, Vec<Parked>>,
    /// The least epoch a release may still be given at; `None` once the input has ended.
    held: Option<Epoch>,
    /// The last cut written.
    written: Option<Epoch>,
    /// Whether anything was parked or released since the last cut.
    changed: bool,
}

impl Schedule {
    /// A schedule over epochs of `event`, holding epoch 0.
    pub fn new(event: EventTime) -> Schedule {
        Schedule {
            event,
            incoming: BTreeMap::new(),
            held: Some(0),
            written: None,
            changed: true,
        }
    }

    /// Receives parks of `epoch`.
    pub fn receive(&mut self, epoch: Epoch, parks: impl IntoIterator<Item = Parked>) {
        self.incoming.entry(epoch).or_default().extend(parks);
    }

    /// The least epoch a release may still be given at (`None` once the input has ended).
    pub fn held(&self) -> Option<Epoch> {
        self.held
    }

    /// The last cut whose part was asked for.
    pub fn written(&self) -> Option<Epoch> {
        self.written
    }

    /// Moves on to `progress`: parks what is complete into `parked` and releases what is due,
    /// epoch by epoch; `cuts` are the checkpoint cuts agreed, in order (those after
    /// [`Schedule::written`] are asked for, each once everything through it is done). Errors
    /// are `parked`'s.
    pub fn advance<P: Parking>(
        &mut self,
        parked: &mut P,
        progress: Progress,
        cuts: &[Epoch],
        mut emit: impl FnMut(Event<'_, P>),
    ) -> io::Result<()> {
        let Some(mut cur) = self.held else {
            return Ok(());
        };
        let (bound, now) = match progress {
            Progress::Before(bound) => (bound, None),
            Progress::Done { now } => (FINAL, Some(now)),
        };
        let event = self.event;
        loop {
            let next_parks = self.incoming.keys().next().copied().filter(|&e| e < bound);
            let next_release = parked
                .next_release()
                .filter(|&r| match now {
                    Some(now) => r <= now,
                    None => event.epoch_of(r) < bound,
                })
                .map(|r| event.epoch_of(r).max(cur));
            let next_cut = self.cuts_before(cuts, bound).next();
            let Some(epoch) = [next_parks, next_release, next_cut]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            // Parks of this epoch, before anything of it is let go; with them those of the
            // later complete epochs through the next cut, in one write (a replayed file gives a
            // park or two per epoch: a write and a sync each cost the worker more than the rest
            // of the graph). None of them is due before its own epoch, and the next cut is to
            // hold them all (durably: in a job the store's own writes are not synced).
            if next_parks == Some(epoch) {
                let through = self
                    .cuts_before(cuts, bound)
                    .find(|&c| c >= epoch)
                    .map_or(bound, |c| c.saturating_add(1).min(bound));
                let epochs: Vec<Epoch> = self
                    .incoming
                    .range(epoch..through)
                    .map(|(e, _)| *e)
                    .collect();
                let mut parks = Vec::new();
                for e in epochs {
                    parks.extend(self.incoming.remove(&e).unwrap_or_default());
                }
                self.changed |= !parks.is_empty();
                if !parks.is_empty() {
                    parked.park(parks)?;
                }
            }
            // Releases due in this epoch, given on at it.
            let mut until = event.end_of(epoch);
            if let Some(now) = now {
                until = until.min(now);
            }
            let due = parked.release_until(until);
            if due.is_empty() && next_release == Some(epoch) && next_parks.is_none_or(|p| p > epoch)
            {
                // The release chose this epoch and is not due by its end: the next turn would
                // choose it again, for ever. Epochs and their ends disagree (a bug): fail.
                let r = parked.next_release().unwrap_or_default();
                return Err(io::Error::other(format!(
                    "the release due at {r} is not due by the end of its epoch {epoch} ({until}): epochs and their ends disagree"
                )));
            }
            if !due.is_empty() {
                self.changed = true;
                emit(Event::Released {
                    epoch: epoch.max(cur),
                    deliveries: due,
                });
                parked.persist()?;
            }
            // The cuts: parked and released through `epoch`, nothing later.
            self.cut_through(cuts, epoch.saturating_add(1), parked, &mut emit);
            if epoch > cur && epoch < bound {
                cur = epoch;
            }
        }
        if now.is_some() {
            parked.persist()?;
            self.cut_through(cuts, FINAL, parked, &mut emit);
            emit(Event::Cut {
                epoch: FINAL,
                parked: &*parked,
                changed: true,
            });
            self.held = None;
        } else {
            self.held = Some(cur.max(bound));
        }
        Ok(())
    }

    /// The cuts agreed after the last one written and before `bound`.
    fn cuts_before<'c>(&self, cuts: &'c [Epoch], bound: Epoch) -> impl Iterator<Item = Epoch> + 'c {
        let written = self.written;
        cuts.iter()
            .copied()
            .filter(move |&c| written.is_none_or(|w| c > w) && c < bound)
    }

    /// Asks for every cut before `bound` not yet written.
    fn cut_through<P>(
        &mut self,
        cuts: &[Epoch],
        bound: Epoch,
        parked: &P,
        emit: &mut impl FnMut(Event<'_, P>),
    ) {
        for epoch in self.cuts_before(cuts, bound).collect::<Vec<_>>() {
            emit(Event::Cut {
                epoch,
                parked,
                changed: self.changed,
            });
            self.changed = false;
            self.written = Some(epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{EVENT, at, epoch, parked};

    /// Epochs are minutes: the epoch of `hh:mm`.
    fn e(hh: i64, mm: i64) -> Epoch {
        epoch(at(hh, mm))
    }

    /// What a schedule asked for, as the tests write it: releases as (seq, index, event time);
    /// cuts with the (seq, index) of what is parked at them, and whether anything changed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Release(Epoch, Vec<(u128, u32, Millis)>),
        Cut(Epoch, Vec<(u128, u32)>, bool),
    }

    /// One input.
    enum In {
        /// Parks received at an epoch.
        Park(Epoch, Vec<Parked>),
        /// The input's progress, with the cuts agreed so far.
        Advance(Progress, Vec<Epoch>),
    }

    /// Feeds `inputs` to a schedule over `shelf`; returns what it asked for, the epoch it holds
    /// at the end, and the shelf.
    fn play(shelf: Shelf, inputs: Vec<In>) -> (Vec<Out>, Option<Epoch>, Shelf) {
        play_with(EVENT, shelf, inputs)
    }

    /// [`play`] with epochs as `event` puts them.
    fn play_with(
        event: EventTime,
        shelf: Shelf,
        inputs: Vec<In>,
    ) -> (Vec<Out>, Option<Epoch>, Shelf) {
        let mut shelf = shelf;
        let mut schedule = Schedule::new(event);
        let mut log = Vec::new();
        for input in inputs {
            match input {
                In::Park(epoch, parks) => schedule.receive(epoch, parks),
                In::Advance(progress, cuts) => schedule
                    .advance(&mut shelf, progress, &cuts, |event| {
                        log.push(match event {
                            Event::Released { epoch, deliveries } => Out::Release(
                                epoch,
                                deliveries
                                    .iter()
                                    .map(|d| (d.meta.seq, d.index, d.event_time))
                                    .collect(),
                            ),
                            Event::Cut {
                                epoch,
                                parked,
                                changed,
                            } => Out::Cut(
                                epoch,
                                parked
                                    .iter()
                                    .map(|p| (p.delivery.meta.seq, p.delivery.index))
                                    .collect(),
                                changed,
                            ),
                        })
                    })
                    .expect("an in-memory shelf does not fail"),
            }
        }
        (log, schedule.held(), shelf)
    }

    fn before(epoch: Epoch) -> In {
        In::Advance(Progress::Before(epoch), Vec::new())
    }

    /// Backlog epochs of an hour before 12:00: releases due anywhere in an hour's epoch are
    /// given at it once the input has passed it (a bound inside the hour is past it), by
    /// release time; after the line, at the job's own minutes. (With the job's epoch's end for
    /// the backlog epoch's, the 09:30 release was never due at its epoch: the schedule spun,
    /// and now fails.)
    #[test]
    fn releases_in_a_backlog_epoch_are_given_at_it() {
        let event = EVENT.with_backlog(at(12, 0), 3_600_000);
        let hour = event.epoch_of(at(9, 0));
        assert_eq!(event.epoch_of(at(9, 59)), hour);
        let noon = event.epoch_of(at(12, 1));
        assert_eq!(noon, e(12, 1));
        let (log, held, _) = play_with(
            event,
            Shelf::default(),
            vec![
                In::Park(
                    event.epoch_of(at(3, 0)),
                    vec![
                        parked(at(9, 30), at(3, 0), 2, 0),
                        parked(at(9, 0), at(3, 0), 1, 0),
                        parked(at(12, 1), at(3, 0), 3, 0),
                    ],
                ),
                before(hour + 1),
                before(noon + 1),
            ],
        );
        assert_eq!(
            log,
            vec![
                Out::Release(hour, vec![(1, 0, at(9, 0)), (2, 0, at(9, 30))]),
                Out::Release(noon, vec![(3, 0, at(12, 1))]),
            ]
        );
        assert_eq!(held, Some(noon + 1));
    }

    #[test]
    fn table() {
        let nine = at(9, 0);
        let cases: Vec<(&str, Shelf, Vec<In>, Vec<Out>, Option<Epoch>)> = vec![
            (
                "released at the epoch of the release time, by release time then event time",
                Shelf::default(),
                vec![
                    In::Park(
                        e(3, 0),
                        vec![
                            parked(at(9, 1), at(3, 0), 7, 0),
                            parked(nine, at(3, 0) + 2, 1, 0),
                            parked(nine, at(3, 0) + 1, 9, 0),
                        ],
                    ),
                    before(e(9, 30)),
                ],
                vec![
                    Out::Release(e(9, 0), vec![(9, 0, nine), (1, 0, nine)]),
                    Out::Release(e(9, 1), vec![(7, 0, at(9, 1))]),
                ],
                Some(e(9, 30)),
            ),
            (
                "ties: same release and event time go by source position, then receiver index",
                Shelf::default(),
                vec![
                    In::Park(
                        e(3, 0),
                        vec![
                            parked(nine, at(3, 0), 5, 1),
                            parked(nine, at(3, 0), 5, 0),
                            parked(nine, at(3, 0), 4, 2),
                        ],
                    ),
                    before(e(9, 0) + 1),
                ],
                vec![Out::Release(
                    e(9, 0),
                    vec![(4, 2, nine), (5, 0, nine), (5, 1, nine)],
                )],
                Some(e(9, 0) + 1),
            ),
            (
                "a 10:25 record is judged after every 09:00 release: the frontier jumps from \
                 03:01 past 10:25, and the releases still come at the epoch of 09:00",
                Shelf::default(),
                vec![
                    In::Park(e(3, 0), vec![parked(nine, at(3, 0), 1, 0)]),
                    before(e(3, 1)),
                    before(e(10, 25) + 1),
                ],
                vec![Out::Release(e(9, 0), vec![(1, 0, nine)])],
                Some(e(10, 25) + 1),
            ),
            (
                "nothing is parked or released before the input has passed its epoch",
                Shelf::default(),
                vec![
                    In::Park(e(3, 0), vec![parked(at(3, 0), at(2, 0), 1, 0)]),
                    before(e(3, 0)),
                ],
                vec![],
                Some(e(3, 0)),
            ),
            (
                "a release time before the watermark: given at once, at the epoch it was \
                 parked in, with its release time as event time",
                Shelf::default(),
                vec![
                    before(e(10, 0)),
                    In::Park(e(10, 0), vec![parked(nine, at(3, 0), 1, 0)]),
                    before(e(10, 1)),
                ],
                vec![Out::Release(e(10, 0), vec![(1, 0, nine)])],
                Some(e(10, 1)),
            ),
            (
                "restored from a checkpoint: what the store holds is released at its epochs \
                 in release order, the due first",
                Shelf::of([
                    parked(at(9, 5), at(3, 0), 2, 0),
                    parked(nine, at(4, 0), 1, 0),
                    parked(at(23, 0), at(5, 0), 3, 0),
                ]),
                vec![before(e(10, 0))],
                vec![
                    Out::Release(e(9, 0), vec![(1, 0, nine)]),
                    Out::Release(e(9, 5), vec![(2, 0, at(9, 5))]),
                ],
                Some(e(10, 0)),
            ),
            (
                "cuts: parked and released through the cut, nothing later; an unchanged \
                 store says so",
                Shelf::default(),
                vec![
                    In::Park(e(3, 0), vec![parked(nine, at(3, 0), 1, 0)]),
                    In::Park(e(4, 0), vec![parked(at(9, 30), at(4, 0), 2, 0)]),
                    In::Advance(Progress::Before(e(9, 10)), vec![e(3, 30), e(9, 0)]),
                    In::Advance(
                        Progress::Before(e(9, 20)),
                        vec![e(3, 30), e(9, 0), e(9, 15)],
                    ),
                ],
                vec![
                    Out::Cut(e(3, 30), vec![(1, 0)], true),
                    Out::Release(e(9, 0), vec![(1, 0, nine)]),
                    Out::Cut(e(9, 0), vec![(2, 0)], true),
                    Out::Cut(e(9, 15), vec![(2, 0)], false),
                ],
                Some(e(9, 20)),
            ),
            (
                "end of input: what is due by the wall clock is released, the rest stays \
                 parked; then the cuts left and the final one",
                Shelf::default(),
                vec![
                    In::Park(e(3, 0), vec![parked(nine, at(3, 0), 1, 0)]),
                    In::Park(e(3, 1), vec![parked(at(9, 30), at(3, 1), 2, 0)]),
                    before(e(3, 2)),
                    In::Advance(Progress::Done { now: at(9, 10) }, vec![e(9, 5)]),
                ],
                vec![
                    Out::Release(e(9, 0), vec![(1, 0, nine)]),
                    Out::Cut(e(9, 5), vec![(2, 0)], true),
                    Out::Cut(FINAL, vec![(2, 0)], true),
                ],
                None,
            ),
        ];
        for (name, shelf, inputs, want, held) in cases {
            let (got, got_held, _) = play(shelf, inputs);
            assert_eq!(got, want, "{name}");
            assert_eq!(got_held, held, "{name}");
        }
    }

    /// Restored from a cut's part, a schedule releases exactly what the original released
    /// after the cut, at the same epochs.
    #[test]
    fn restored_from_a_cut_it_releases_what_the_original_did_after_it() {
        let parks = vec![
            In::Park(e(1, 0), vec![parked(at(9, 0), at(1, 0), 1, 0)]),
            In::Park(e(2, 0), vec![parked(at(9, 2), at(2, 0), 2, 0)]),
            In::Park(e(8, 0), vec![parked(at(9, 1), at(8, 0), 3, 0)]),
        ];
        let later = vec![
            In::Park(e(9, 1), vec![parked(at(9, 3), at(9, 1), 4, 0)]),
            before(e(10, 0)),
        ];
        let cut = e(9, 0);
        let mut original = parks;
        original.push(In::Advance(Progress::Before(e(9, 1)), vec![cut]));
        original.extend(later);
        let (log, _, _) = play(Shelf::default(), original);
        let at_cut = log
            .iter()
            .position(|o| matches!(o, Out::Cut(c, _, _) if *c == cut))
            .expect("the cut was asked for");
        let Out::Cut(_, part, _) = &log[at_cut] else {
            unreachable!()
        };
        assert_eq!(part, &vec![(3, 0), (2, 0)], "09:00 released before the cut");
        // What the cut's part holds, restored; the input after the cut read again.
        let restored = Shelf::of([
            parked(at(9, 1), at(8, 0), 3, 0),
            parked(at(9, 2), at(2, 0), 2, 0),
        ]);
        let (replayed, held, shelf) = play(
            restored,
            vec![
                before(cut + 1),
                In::Park(e(9, 1), vec![parked(at(9, 3), at(9, 1), 4, 0)]),
                before(e(10, 0)),
            ],
        );
        assert_eq!(replayed, log[at_cut + 1..].to_vec());
        assert_eq!(
            replayed,
            vec![
                Out::Release(e(9, 1), vec![(3, 0, at(9, 1))]),
                Out::Release(e(9, 2), vec![(2, 0, at(9, 2))]),
                Out::Release(e(9, 3), vec![(4, 0, at(9, 3))]),
            ]
        );
        assert_eq!(held, Some(e(10, 0)));
        assert!(shelf.is_empty());
    }

    /// A shelf that counts the writes asked of it.
    #[derive(Default)]
    struct Counted(Shelf, Vec<usize>);

    impl Parking for Counted {
        fn park(&mut self, items: Vec<Parked>) -> io::Result<()> {
            self.1.push(items.len());
            self.0.park(items)
        }
        fn next_release(&self) -> Option<Millis> {
            self.0.next_release()
        }
        fn release_until(&mut self, t: Millis) -> Vec<Delivery> {
            self.0.release_until(t)
        }
        fn persist(&self) -> io::Result<()> {
            self.0.persist()
        }
    }

    #[test]
    fn parks_of_several_epochs_are_one_write_up_to_the_next_cut() {
        let nine = at(9, 0);
        let mut schedule = Schedule::new(EVENT);
        let mut shelf = Counted::default();
        for (i, m) in [0, 1, 2, 5, 6].into_iter().enumerate() {
            schedule.receive(e(3, m), [parked(nine, at(3, m), i as u128, 0)]);
        }
        let mut cuts = Vec::new();
        schedule
            .advance(&mut shelf, Progress::Before(e(3, 10)), &[e(3, 2)], |ev| {
                if let Event::Cut { epoch, parked, .. } = ev {
                    cuts.push((epoch, parked.0.iter().count()));
                }
            })
            .unwrap();
        // 03:00–03:02 through the cut in one write, 03:05–03:06 in another; the cut at 03:02
        // holds only what came before it.
        assert_eq!(shelf.1, vec![3, 2]);
        assert_eq!(cuts, vec![(e(3, 2), 3)]);
        // Nothing is released before 09:00.
        assert_eq!(shelf.0.next_release(), Some(nine));
    }

    /// A release its epoch's end never reaches (epochs and their ends disagreeing, as a wrong
    /// `EventTime::end_of` would) fails the schedule with one error instead of choosing that
    /// epoch again for ever.
    #[test]
    fn a_release_never_due_at_its_epoch_is_an_error_not_a_spin() {
        struct Stuck;
        impl Parking for Stuck {
            fn park(&mut self, _: Vec<Parked>) -> io::Result<()> {
                Ok(())
            }
            fn next_release(&self) -> Option<Millis> {
                Some(at(9, 0))
            }
            fn release_until(&mut self, _: Millis) -> Vec<Delivery> {
                Vec::new()
            }
            fn persist(&self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut schedule = Schedule::new(EVENT);
        let why = schedule
            .advance(&mut Stuck, Progress::Before(e(10, 0)), &[], |_| {})
            .expect_err("a spin");
        assert!(
            why.to_string().contains("not due by the end of its epoch"),
            "{why}"
        );
    }
}
