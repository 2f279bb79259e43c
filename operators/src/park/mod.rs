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
            (Some(last), false) if std::fs::hard_link(last, &path).is_ok() => {}
            _ => store.write_to(&path)?,
        }
        *last_part = Some(path);
        Ok(())
    });
    if let Err(e) = written {
        panic!("park store: {e}");
    }
    c.part_written(epoch);
}
