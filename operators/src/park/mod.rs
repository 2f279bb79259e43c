//! Parking of `night_delay` deliveries (docs/states.md step 6), durable in the job's state dir.
//!
//! All parks go to worker 0 (night-time volume is small). [`ParkStore`] is the plain store: an
//! append-only JSON-lines file, rewritten atomically after a release; with checkpoints, the
//! cuts hold the parks durably and the file is the run's working copy (no fsync per park),
//! without, it is fsynced before the epoch that parked is let go. [`Schedule`] decides what is released when, as a plain state
//! machine: a delivery is given on at the epoch of its release time, with the release time as
//! its event time, once the input frontier has reached that epoch; at the end of input what is
//! due by the wall clock is released, and the rest stays on disk for the next run. The
//! [`Park::park`] operator only moves parks, releases and its capability between the two.
//! With checkpoints, worker 0 writes its part of each cut as a chain ([`Chain`]): the whole
//! store now and then, and otherwise the parks and releases since the cut before.
//!
//! ```ignore
//! let released = admitted.parked.park(store, clock, event, checkpoints, live); // deliveries
//! ```

mod schedule;
mod store;

pub use schedule::{Event, Parking, Progress, Schedule};
pub use store::{ParkStore, Parked, Shelf};

use std::io;
use std::path::{Path, PathBuf};

use crate::container::Trimming;
use tidings_model::Delivery;
use timely::dataflow::StreamVec;
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
    /// are on time without new records. With `checkpoints`, worker 0 writes its part of every
    /// cut (what changed since the cut before; the whole store now and then); with `live`, it
    /// publishes the store's size and next release.
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
        let to_zero = crate::container::exchange(|_: &Parked| 0u64);
        self.unary_frontier::<Trimming<Delivery>, _, _, _>(to_zero, "Park", move |cap, _| {
            // Worker 0: its store, its schedule and its capability, held at the schedule's
            // held epoch until the input ends. Other workers let their capability go at once.
            let mut state = store.map(|mut store| {
                match &checkpoints {
                    Some(_) => store.durable_through_cuts(),
                    // No cut takes the changes: not kept.
                    None => store.limit_changes(0),
                }
                (store, Schedule::new(event), cap)
            });
            // The park parts of the last cut, linked into the next with its changes.
            let mut chain = Chain::default();
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
                            .session_with_builder(&cap.delayed(&epoch))
                            .give_iterator(deliveries.into_iter()),
                        Event::Cut { epoch, parked, .. } => {
                            if let Some(c) = &checkpoints {
                                snapshot(c, parked, epoch, &mut chain);
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
        })
    }
}

/// The whole store's part of a cut.
pub const PART: &str = "parked.jsonl";

/// A cut's delta part: the parks and releases since the cut before it.
fn delta_name(epoch: Epoch) -> String {
    format!("parked.delta-{epoch:020}.jsonl")
}

/// The cut a park part was written at (`None`: the whole store, [`PART`]).
pub fn delta_epoch(name: &str) -> Option<Epoch> {
    crate::checkpoint::delta_epoch(name.strip_prefix("parked")?, ".jsonl")
}

/// The park parts of a cut's directory `dir`: the whole store (if any) and the deltas in cut
/// order, what [`ParkStore::restore`] folds.
pub fn parts(dir: &Path) -> io::Result<(Option<PathBuf>, Vec<PathBuf>)> {
    let mut deltas = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(e) = name.to_str().and_then(delta_epoch) {
            deltas.push((e, dir.join(&name)));
        }
    }
    deltas.sort();
    let base = dir.join(PART);
    Ok((
        base.is_file().then_some(base),
        deltas.into_iter().map(|(_, p)| p).collect(),
    ))
}

/// A cut's deltas after which the next cut writes the whole store again.
const MAX_DELTAS: usize = 64;

/// Worker 0's park parts: the whole store as written at some cut and the deltas since (each
/// the parks and releases between two cuts), which every cut's directory holds, linked from
/// the cut before it. A cut writes the whole store only on a run's first cut and its last
/// (the end of input, or the cut a stop agreed: a cut older versions can restore), after
/// [`MAX_DELTAS`] deltas, or
/// once the deltas' bytes outgrow the whole store's (and 64 KiB): a cut's cost follows what
/// changed, not what is parked (a night of parks is not written again every cut).
#[derive(Debug, Default)]
struct Chain {
    /// The directory of the last cut written.
    dir: Option<PathBuf>,
    /// Its part files, the whole store first.
    files: Vec<String>,
    /// Bytes of the whole store's part, and of the deltas since.
    full_bytes: usize,
    delta_bytes: usize,
}

impl Chain {
    /// Writes cut `epoch`'s part: the chain linked into the cut with `changes` (the parks and
    /// releases since the last cut) as its delta, or the whole `store`.
    fn write(
        &mut self,
        c: &Checkpoints,
        store: &ParkStore,
        epoch: Epoch,
        changes: Option<&[u8]>,
    ) -> io::Result<()> {
        let bound = self.bound();
        // The last cut of a run (the end of input, or the cut a stop agreed) holds the store
        // in one file, as versions before the chain wrote it.
        let last = epoch == FINAL || c.stop_cut() == Some(epoch);
        match (self.dir.clone(), changes) {
            (Some(prev), Some(changes))
                if !last
                    && self.delta_bytes + changes.len() <= bound
                    && self.files.len() <= MAX_DELTAS =>
            {
                c.carry(&prev, &self.files, epoch)?;
                if changes.is_empty() {
                    crate::checkpoint::sync_parent(&c.part_path(epoch, PART)?)?;
                } else {
                    let name = delta_name(epoch);
                    crate::checkpoint::write_durably(&c.part_path(epoch, &name)?, changes)?;
                    c.publish(epoch, &name)?;
                    self.files.push(name);
                    self.delta_bytes += changes.len();
                }
            }
            _ => {
                self.full_bytes = store.write_to(&c.part_path(epoch, PART)?)?;
                c.publish(epoch, PART)?;
                self.files = vec![PART.to_string()];
                self.delta_bytes = 0;
            }
        }
        self.dir = Some(c.dir_of(epoch));
        Ok(())
    }

    /// The deltas' bytes past which the next cut writes the whole store.
    fn bound(&self) -> usize {
        self.full_bytes.max(64 * 1024)
    }
}

/// Writes worker 0's park part of checkpoint `epoch` ([`Chain::write`]) and reports it written.
fn snapshot(c: &Checkpoints, store: &ParkStore, epoch: Epoch, chain: &mut Chain) {
    let changes = store.take_changes();
    if let Err(e) = chain
        .write(c, store, epoch, changes.as_deref())
        .and_then(|()| c.part_written(epoch, &chain.files))
    {
        panic!("park store: {e}");
    }
    // Changes past what the next cut could add as a delta are not kept.
    store.limit_changes(chain.bound().saturating_sub(chain.delta_bytes));
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

    /// What a store holds, as the tests compare it: its whole part's bytes (every parked
    /// delivery, in release order).
    fn held(store: &ParkStore) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.jsonl");
        store.write_to(&path).unwrap();
        std::fs::read(&path).unwrap()
    }

    /// Every cut's park parts restore exactly what was parked at the cut: parks and releases
    /// replayed in order over the whole store some cut wrote, through compactions; a cut writes
    /// what changed since the one before (nothing when nothing did), the whole store only now
    /// and then, and the final cut whole.
    #[test]
    fn every_cut_restores_what_was_parked_at_it() {
        let (dir, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mirror = std::sync::Arc::new(crate::testkit::DirMirror::new(shared.path()));
        let c =
            Checkpoints::open_mirrored(&dir.path().join("state"), "t", false, Some(mirror.clone()))
                .unwrap();
        c.register();
        let mut store = ParkStore::open(&dir.path().join("parked.jsonl")).unwrap();
        let mut chain = Chain::default();
        let mut expected = Vec::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut seq, mut released) = (0u128, at(0, 0));
        let cuts = 2 * MAX_DELTAS as u64 + 40;
        for cut in 1..=cuts {
            // Mostly a few parks, now and then a burst (the bytes rule), a release, or nothing.
            let n = match next() % 10 {
                0 => 0,
                1 => 120,
                _ => next() % 4,
            };
            let mut parks: Vec<Parked> = (0..n)
                .map(|i| {
                    seq += 1;
                    let release = released + 60_000 * (1 + (next() % 120) as Millis);
                    parked(release, at(1, 0) + seq as Millis, seq, i as u32)
                })
                .collect();
            // A park again of one parked before (a replayed record: the same key, a new
            // receiver), and a late one (due before the last release).
            if next() % 5 == 0
                && let Some(p) = parks.first().cloned()
            {
                let mut again = p.clone();
                again.delivery.receiver = "13900139000".into();
                parks.push(again);
                let mut late = p;
                late.release_at = released - 60_000;
                late.delivery.index += 1_000;
                parks.push(late);
            }
            store.park(parks).unwrap();
            match next() % 6 {
                0 | 1 => {
                    released += 60_000 * (next() % 40) as Millis;
                    store.release_until(released);
                }
                // A release by a clock behind the last (the end of a run's input): the late
                // parks at most.
                2 => {
                    store.release_until(released - 30_000);
                }
                _ => {}
            }
            let cut = if cut == cuts { FINAL } else { cut };
            snapshot(&c, &store, cut, &mut chain);
            expected.push((cut, held(&store)));
        }
        // The mirror holds every cut as written, each file sent once; each cut's manifest lists its
        // files.
        mirror.assert_chain(&c, expected.iter().map(|(cut, _)| *cut));
        let (mut whole, mut unchanged) = (0, 0);
        for (cut, state) in &expected {
            let (base, deltas) = parts(&c.dir_of(*cut)).unwrap();
            assert!(base.is_some(), "cut {cut}: the whole store's part");
            let last = deltas
                .last()
                .map(|d| d.file_name().unwrap().to_str().unwrap());
            match last {
                None => whole += 1,
                Some(name) if delta_epoch(name) != Some(*cut) => unchanged += 1,
                Some(_) => {}
            }
            let path = dir.path().join(format!("restored-{cut}.jsonl"));
            ParkStore::restore(&path, base.as_deref(), &deltas).unwrap();
            let restored = ParkStore::open(&path).unwrap();
            assert!(&held(&restored) == state, "cut {cut}: restored as it was");
        }
        assert!(
            expected.iter().any(|(_, s)| s.len() > 100_000),
            "the store grows"
        );
        assert!(unchanged > 0, "a cut with nothing changed links the chain");
        assert!(
            (3..=cuts as usize / 8).contains(&whole),
            "{whole} of {cuts} cuts wrote the whole store"
        );
        let (_, deltas) = parts(&c.dir_of(FINAL)).unwrap();
        assert!(deltas.is_empty(), "the final cut is whole: {deltas:?}");
    }

    /// Changes past the limit a cut set are not kept: the next cut writes the whole store.
    #[test]
    fn changes_past_their_limit_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ParkStore::open(&dir.path().join("parked.jsonl")).unwrap();
        let park = |seq| parked(at(9, 0), at(1, 0), seq, 0);
        store.park(vec![park(1)]).unwrap();
        let one = store.take_changes().unwrap().len();
        assert!(one > 100, "a park's line");
        store.limit_changes(2 * one);
        store.park(vec![park(2), park(3)]).unwrap();
        assert!(
            store.take_changes().is_some(),
            "two parks are within the limit"
        );
        store.park(vec![park(4), park(5), park(6)]).unwrap();
        assert_eq!(store.take_changes(), None, "three are over it");
        store.release_until(at(9, 0));
        assert_eq!(
            store.take_changes().as_deref(),
            Some(format!("{{\"released_through\":{}}}\n", at(9, 0)).as_bytes())
        );
        // A limit lowered below what is kept drops it.
        store.park(vec![park(7)]).unwrap();
        store.limit_changes(one - 1);
        assert_eq!(store.take_changes(), None);
    }

    /// The cut a stop agreed writes the whole store, as the final cut does: the last cut of a
    /// run is one file, which versions before the chain restore too.
    #[test]
    fn the_cut_a_stop_agreed_writes_the_whole_store() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(&dir.path().join("state"), "t", false).unwrap();
        c.register();
        c.register_source();
        let mut store = ParkStore::open(&dir.path().join("parked.jsonl")).unwrap();
        let mut chain = Chain::default();
        store.park(vec![parked(at(9, 0), at(1, 0), 1, 0)]).unwrap();
        snapshot(&c, &store, 1, &mut chain);
        store.park(vec![parked(at(9, 0), at(1, 0), 2, 0)]).unwrap();
        snapshot(&c, &store, 2, &mut chain);
        assert_eq!(parts(&c.dir_of(2)).unwrap().1.len(), 1, "a delta");
        c.request_stop();
        c.source_turn(0, 3, true);
        let stop = c.stop_cut().expect("the stop's cut is agreed");
        store.park(vec![parked(at(9, 0), at(1, 0), 3, 0)]).unwrap();
        snapshot(&c, &store, stop, &mut chain);
        let (base, deltas) = parts(&c.dir_of(stop)).unwrap();
        assert!(deltas.is_empty(), "{deltas:?}");
        assert_eq!(std::fs::read(base.unwrap()).unwrap(), held(&store));
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
