//! Parking of `night_delay` deliveries (docs/states.md step 6), durable in the job's state dir.
//!
//! All parks go to worker 0 (night-time volume is small). [`ParkStore`] is the plain store: an
//! append-only JSON-lines file, fsynced before the epoch that parked is let go, rewritten
//! atomically after a release. [`Schedule`] decides what is released when, as a plain state
//! machine: a delivery is given on at the epoch of its release time, with the release time as
//! its event time, once the input frontier has reached that epoch; at the end of input what is
//! due by the wall clock is released, and the rest stays on disk for the next run. The
//! [`Park::park`] operator only moves parks, releases and its capability between the two.
//!
//! ```ignore
//! let released = admitted.parked.park(store, clock, event, checkpoints, live); // deliveries
//! ```

mod schedule;
mod store;

pub use schedule::{Event, Parking, Progress, Schedule};
pub use store::{ParkStore, Parked, Shelf};

use std::path::PathBuf;

use tidings_model::Delivery;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::generic::operator::Operator;

use crate::checkpoint::{Checkpoints, FINAL};
use crate::event_time::EventTime;
use crate::live::Live;
use crate::{Clock, Epoch};

/// Parks a stream of parked deliveries: `parked.park(store, clock, event, checkpoints, live)`.
pub trait Park<'s> {
    /// Parks every delivery on worker 0 and gives each on when its release is due (see
    /// [`Schedule`]). `store` is opened by worker 0 only; other workers pass `None`.
    ///
    /// On a live source the frontier follows the wall clock when the topic is quiet, so releases
    /// are on time without new records. With `checkpoints`, worker 0 writes the store as its part
    /// of every cut; with `live`, it publishes the store's size and next release.
    fn park(
        self,
        store: Option<ParkStore>,
        clock: Clock,
        event: EventTime,
        checkpoints: Option<Checkpoints>,
        live: Option<Live>,
    ) -> StreamVec<'s, Epoch, Delivery>;
}

impl<'s> Park<'s> for StreamVec<'s, Epoch, Parked> {
    fn park(
        self,
        store: Option<ParkStore>,
        clock: Clock,
        event: EventTime,
        checkpoints: Option<Checkpoints>,
        live: Option<Live>,
    ) -> StreamVec<'s, Epoch, Delivery> {
        let live = live.filter(|_| store.is_some());
        // Only worker 0 holds parked deliveries, so only it writes a part of each checkpoint.
        let checkpoints = checkpoints.filter(|_| store.is_some());
        if let Some(c) = &checkpoints {
            c.register();
        }
        let to_zero = ExchangePact::new(|_: &Parked| 0u64);
        self.unary_frontier::<CapacityContainerBuilder<Vec<Delivery>>, _, _, _>(
            to_zero,
            "Park",
            move |cap, _| {
                // Worker 0: its store, its schedule and its capability, held at the schedule's
                // held epoch until the input ends. Other workers let their capability go at once.
                let mut state = store.map(|store| (store, Schedule::new(event), cap));
                // The last part's file, linked again while nothing changed.
                let mut last_part: Option<PathBuf> = None;
                move |(input, frontier), output| {
                    input.for_each_stamp(|stamp, batches| {
                        let Some(&epoch) = stamp.least() else { return };
                        // Every park is exchanged to worker 0, which holds `state` until its
                        // input ends: no other worker (and no later time) receives one.
                        let Some((_, schedule, _)) = state.as_mut() else {
                            unreachable!("a park reached a worker without the park store")
                        };
                        for batch in batches {
                            schedule.receive(epoch, batch.drain(..));
                        }
                    });
                    let Some((store, schedule, cap)) = state.as_mut() else {
                        return;
                    };
                    let (progress, bound) = match frontier.frontier().first() {
                        Some(&bound) => (Progress::Before(bound), bound),
                        None => (
                            Progress::Done {
                                now: clock.now_ms(),
                            },
                            FINAL,
                        ),
                    };
                    let cuts = checkpoints
                        .as_ref()
                        .map(|c| c.cuts_between(schedule.written(), bound))
                        .unwrap_or_default();
                    schedule
                        .advance(store, progress, &cuts, |e| match e {
                            Event::Released { epoch, deliveries } => output
                                .session(&cap.delayed(&epoch))
                                .give_iterator(deliveries.into_iter()),
                            Event::Cut {
                                epoch,
                                parked,
                                changed,
                            } => {
                                if let Some(c) = &checkpoints {
                                    snapshot(c, parked, epoch, changed, &mut last_part);
                                }
                            }
                        })
                        .unwrap_or_else(|e| panic!("park store: {e}"));
                    if let Some(l) = &live {
                        l.park().set(store.len(), store.next_release());
                    }
                    match schedule.held() {
                        None => state = None,
                        Some(held) if held > *cap.time() => cap.downgrade(&held),
                        Some(_) => {}
                    }
                }
            },
        )
    }
}

/// Writes the store as worker 0's part of checkpoint `epoch` (a hard link to the last part
/// when nothing changed since) and reports it written.
fn snapshot(
    c: &Checkpoints,
    store: &ParkStore,
    epoch: Epoch,
    changed: bool,
    last_part: &mut Option<PathBuf>,
) {
    let written = c.part_path(epoch, "parked.jsonl").and_then(|path| {
        match (last_part.as_ref(), changed) {
            (Some(last), false) if std::fs::hard_link(last, &path).is_ok() => {
                crate::checkpoint::sync_parent(&path)?
            }
            _ => store.write_to(&path)?,
        }
        *last_part = Some(path);
        c.publish(epoch, "parked.jsonl")
    });
    if let Err(e) = written {
        panic!("park store: {e}");
    }
    c.part_written(epoch);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use tidings_model::time::Millis;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::vec::{Input, Map};
    use timely::dataflow::operators::{Capture, Concatenate};

    use super::*;
    use crate::dedup::{ContentDedup, DedupBy};
    use crate::testkit::{EVENT, at, delivery, epoch, parked, run, templates};
    use crate::{Mark, Tracked};

    /// Runs the park over `epochs` of parks with a store at `path` and the wall clock at `now`;
    /// returns the releases (seq, event time) per epoch.
    fn released(
        path: &std::path::Path,
        now: Millis,
        epochs: Vec<(Epoch, Vec<Parked>)>,
    ) -> Vec<(Epoch, Vec<(u128, Millis)>)> {
        let store = ParkStore::open(path).unwrap();
        let (tx, rx) = mpsc::channel();
        run(epochs, move |parks| {
            parks
                .park(Some(store), Clock::Fixed(now), EVENT, None, None)
                .map(|d| (d.meta.seq, d.event_time))
                .capture_into(tx);
        });
        rx.extract()
    }

    /// Releases come at the epoch of their release time, with it as event time, once the input
    /// has passed it; what is not due by the end stays in the store for the next run, which
    /// releases it when its wall clock is past it.
    #[test]
    fn releases_at_the_release_epoch_and_keeps_the_rest_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parked.jsonl");
        let nine = at(9, 0);
        let epochs = vec![
            (
                epoch(at(3, 0)),
                vec![
                    parked(nine, at(3, 0) + 1, 2, 0),
                    parked(nine, at(3, 0), 1, 0),
                ],
            ),
            (epoch(at(4, 0)), vec![parked(at(23, 0), at(4, 0), 3, 0)]),
            (epoch(at(10, 25)), vec![]),
        ];
        let got = released(&path, at(12, 0), epochs);
        assert_eq!(got, vec![(epoch(nine), vec![(1, nine), (2, nine)])]);
        let left = ParkStore::open(&path).unwrap();
        assert_eq!((left.len(), left.next_release()), (1, Some(at(23, 0))));
        // The next run's input ends before 23:00, but its wall clock is past it.
        let got = released(&path, at(23, 30), vec![(epoch(at(12, 0)), vec![])]);
        assert_eq!(got, vec![(epoch(at(23, 0)), vec![(3, at(23, 0))])]);
        assert!(ParkStore::open(&path).unwrap().is_empty());
    }

    /// A message parked at 03:00 until 09:00 reaches content dedup before a 10:25 record of the
    /// same content and receiver, though the input jumps from 03:00 to 10:25: the 09:00 release
    /// passes and the 10:25 record is the duplicate.
    #[test]
    fn a_release_is_judged_before_a_later_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = ParkStore::open(&dir.path().join("parked.jsonl")).unwrap();
        let (pass_tx, pass_rx) = mpsc::channel();
        let (rows_tx, rows_rx) = mpsc::channel();
        timely::execute_directly(move |worker| {
            let (mut parks, mut passes, mut marks) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (parks_in, parks) = scope.new_input::<Parked>();
                let (passes_in, passes) = scope.new_input();
                let (marks_in, marks) = scope.new_input::<Mark>();
                let clock = Clock::Fixed(at(11, 0));
                let released = parks.park(Some(store), clock, EVENT, None, None);
                let rule = ContentDedup::new(1, 7_200_000, 3_600_000, templates());
                let content = scope
                    .concatenate([passes, released])
                    .dedup_by(rule, &marks, clock, None, None);
                content
                    .pass
                    .map(|d| (d.meta.seq, d.event_time))
                    .capture_into(pass_tx);
                content
                    .rows
                    .map(|t| match t {
                        Tracked::Row(r) => (r.meta.seq, r.state.name().to_string()),
                        Tracked::Dead(d) => (0, d.reason),
                        Tracked::Received(_) => unreachable!("dedup makes no RECEIVE rows"),
                    })
                    .capture_into(rows_tx);
                (parks_in, passes_in, marks_in)
            });
            let night = epoch(at(3, 0));
            parks.advance_to(night);
            passes.advance_to(night);
            marks.advance_to(night);
            parks.send(parked(at(9, 0), at(3, 0), 1, 0));
            marks.send(Mark {
                to: 0,
                max_event_time: at(3, 0),
                epoch: night,
            });
            worker.step();
            let morning = epoch(at(10, 25));
            parks.advance_to(morning);
            passes.advance_to(morning);
            marks.advance_to(morning);
            passes.send(delivery(2, 0, "13800138000", at(10, 25), "{}"));
            marks.send(Mark {
                to: 0,
                max_event_time: at(10, 25),
                epoch: morning,
            });
        });
        assert_eq!(
            pass_rx.extract(),
            vec![(epoch(at(9, 0)), vec![(1, at(9, 0))])]
        );
        assert_eq!(
            rows_rx.extract(),
            vec![(
                epoch(at(10, 25)),
                vec![(2, "CONTENT_DEDUPLICATION".to_string())]
            )]
        );
    }
}
