//! Parking of `night_delay` deliveries (docs/states.md step 6), durable in the job's state dir.
//!
//! All parks go to worker 0 (night-time volume is small). [`ParkStore`] is the plain store: an
//! append-only JSON-lines file, fsynced before the epoch that parked is let go, rewritten
//! atomically after a release. The [`park`] operator gives a delivery on at the epoch of its
//! release time, with the release time as its event time, once the input frontier has reached
//! that epoch; at the end of input it releases what is due by the wall clock, and the rest stays
//! on disk for the next run.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidings_model::Delivery;
use tidings_model::time::Millis;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::generic::operator::Operator;

use crate::checkpoint::{Checkpoints, FINAL};
use crate::event_time::EventTime;
use crate::live::Live;
use crate::{Clock, Epoch, Flow};

/// One parked delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// When it is due (ms, UTC).
    pub release_at: Millis,
    /// The delivery, with its original event time.
    pub delivery: Delivery,
}

type ParkKey = (Millis, Millis, u128, u32);

fn park_key(p: &Parked) -> ParkKey {
    (
        p.release_at,
        p.delivery.meta.event_time,
        p.delivery.meta.seq,
        p.delivery.index,
    )
}

/// The durable set of parked deliveries.
#[derive(Debug)]
pub struct ParkStore {
    path: PathBuf,
    parked: BTreeMap<ParkKey, Parked>,
}

impl ParkStore {
    /// Opens (or starts) the store at `path`.
    ///
    /// A torn last line (a write cut short: no newline, not JSON) is dropped with a warning and
    /// the file rewritten without it. A bad line elsewhere is skipped with a warning naming it;
    /// the file as it was is first kept aside as `parked.jsonl.corrupt-<ms>`, so nothing is
    /// lost for a person to look at.
    pub fn open(path: &Path) -> io::Result<ParkStore> {
        let mut parked = BTreeMap::new();
        let raw = match std::fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mut repair = false;
        let mut kept_aside = false;
        let mut lines = raw.split(|b| *b == b'\n').enumerate().peekable();
        while let Some((i, line)) = lines.next() {
            let last = lines.peek().is_none();
            if line.trim_ascii().is_empty() {
                continue;
            }
            if last {
                repair = true; // no newline after it: written again whole
            }
            match serde_json::from_slice::<Parked>(line) {
                Ok(p) => {
                    parked.insert(park_key(&p), p);
                }
                Err(e) if last => {
                    tracing::warn!(
                        "{}:{}: a torn last line ({} bytes, {e}) is dropped: a write was cut short",
                        path.display(),
                        i + 1,
                        line.len()
                    );
                }
                Err(e) => {
                    if !kept_aside {
                        let aside = path.with_extension(format!("jsonl.corrupt-{}", now_ms()));
                        std::fs::write(&aside, &raw)?;
                        kept_aside = true;
                        tracing::warn!(
                            "{}: bad lines are skipped; the file as it was is kept as {}",
                            path.display(),
                            aside.display()
                        );
                    }
                    tracing::warn!("{}:{}: skipped: {e}", path.display(), i + 1);
                    repair = true;
                }
            }
        }
        let store = ParkStore {
            path: path.to_path_buf(),
            parked,
        };
        if repair {
            store.persist()?;
        }
        Ok(store)
    }

    /// Parks deliveries durably (appended and fsynced before returning).
    pub fn park(&mut self, items: Vec<Parked>) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::new();
        for p in &items {
            serde_json::to_writer(&mut buf, p).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        // A write cut short (a full disk) is taken back, so no torn line stays in the file.
        let before = f.metadata()?.len();
        if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_data()) {
            let _ = f.set_len(before).and_then(|()| f.sync_data());
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            ));
        }
        for p in items {
            self.parked.insert(park_key(&p), p);
        }
        Ok(())
    }

    /// Takes every delivery due at or before `t`, in release then event-time order, with the
    /// release time as event time. Call [`ParkStore::persist`] once they are safely on their way.
    pub fn release_until(&mut self, t: Millis) -> Vec<Delivery> {
        let rest = self
            .parked
            .split_off(&(t.saturating_add(1), Millis::MIN, 0, 0));
        let due = std::mem::replace(&mut self.parked, rest);
        due.into_values()
            .map(|p| Delivery {
                event_time: p.release_at,
                ..p.delivery
            })
            .collect()
    }

    /// Rewrites the file with what is still parked (atomically: written aside, then renamed).
    pub fn persist(&self) -> io::Result<()> {
        if self.parked.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        self.write_to(&self.path)
    }

    /// Writes what is parked to `path` (atomically), e.g. a checkpoint's part.
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut buf = Vec::new();
        for p in self.parked.values() {
            serde_json::to_writer(&mut buf, p).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        crate::checkpoint::write_durably(path, &buf)
    }

    /// Number parked.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// The earliest release time.
    pub fn next_release(&self) -> Option<Millis> {
        self.parked.keys().next().map(|k| k.0)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parks `parks` (`Flow::Park`) on worker 0 and emits released deliveries as `Flow::Pass`.
/// `store` is opened by worker 0 only; other workers pass `None`.
///
/// A delivery parked until `r` is given on at the epoch of `r`, with `r` as its event time, as
/// soon as the input frontier has reached that epoch: the keyed operators then judge it in
/// event-time order with every record of that epoch, and a record of 10:25 sees the 09:00
/// releases before it. On a live source the frontier follows the wall clock when the topic is
/// quiet, so releases are on time without new records. At the end of the input, what is due by
/// the wall clock is released; the rest stays on disk for the next run.
pub fn park<'s>(
    parks: StreamVec<'s, Epoch, Flow>,
    store: Option<ParkStore>,
    clock: Clock,
    event: EventTime,
    checkpoints: Option<Checkpoints>,
    live: Option<Live>,
) -> StreamVec<'s, Epoch, Flow> {
    let live = live.filter(|_| store.is_some());
    // Only worker 0 holds parked deliveries, so only it writes a part of each checkpoint.
    let checkpoints = checkpoints.filter(|_| store.is_some());
    if let Some(c) = &checkpoints {
        c.register();
    }
    let to_zero = ExchangePact::new(|_: &Flow| 0u64);
    parks.unary_frontier::<CapacityContainerBuilder<Vec<Flow>>, _, _, _>(
        to_zero,
        "Park",
        move |cap, _| {
            // Held at the least epoch a release may still be given at. Workers other than 0
            // never park or release, so they let their capability go at once.
            let mut cap = store.as_ref().map(|_| cap);
            let mut store = store;
            let mut incoming: BTreeMap<Epoch, Vec<Parked>> = BTreeMap::new();
            let fail = |e: io::Error| -> ! { panic!("park store: {e}") };
            // The last cut written, the last part's file and whether the store changed since.
            let mut written: Option<Epoch> = None;
            let mut last_part: Option<PathBuf> = None;
            let mut dirty = true;
            let cuts = checkpoints.clone();
            let mut snapshot = move |store: &ParkStore, epoch: Epoch, dirty: &mut bool| {
                let Some(c) = &checkpoints else { return };
                let written = c.part_path(epoch, "parked.jsonl").and_then(|path| {
                    match (&last_part, *dirty) {
                        // Unchanged: the same file again, as a hard link.
                        (Some(last), false) if std::fs::hard_link(last, &path).is_ok() => {}
                        _ => store.write_to(&path)?,
                    }
                    last_part = Some(path);
                    Ok(())
                });
                written.unwrap_or_else(|e| fail(e));
                *dirty = false;
                c.part_written(epoch);
            };
            move |(parks, frontier), output| {
                parks.for_each_stamp(|stamp, batches| {
                    let Some(&epoch) = stamp.least() else { return };
                    let list = incoming.entry(epoch).or_default();
                    for batch in batches {
                        list.extend(batch.drain(..).filter_map(|f| match f {
                            Flow::Park {
                                release_at,
                                delivery,
                            } => Some(Parked {
                                release_at,
                                delivery,
                            }),
                            _ => None,
                        }));
                    }
                });
                let (Some(c), Some(store)) = (cap.as_mut(), store.as_mut()) else {
                    // Not worker 0, or finished.
                    return;
                };
                let publish = |store: &ParkStore| {
                    if let Some(l) = &live {
                        l.park().set(store.len(), store.next_release());
                    }
                };
                // Everything before `bound` is complete; with the input done, releases follow
                // the wall clock instead.
                let done = frontier.is_empty();
                let bound = frontier.frontier().first().copied().unwrap_or(FINAL);
                let now = clock.now_ms();
                loop {
                    let cur = *c.time();
                    let next_parks = incoming.keys().next().copied().filter(|&e| e < bound);
                    let next_release = store
                        .next_release()
                        .filter(|&r| {
                            if done {
                                r <= now
                            } else {
                                event.epoch_of(r) < bound
                            }
                        })
                        .map(|r| event.epoch_of(r).max(cur));
                    let next_cut = cuts
                        .as_ref()
                        .and_then(|k| k.cuts_between(written, bound).first().copied());
                    let Some(epoch) = [next_parks, next_release, next_cut]
                        .into_iter()
                        .flatten()
                        .min()
                    else {
                        break;
                    };
                    // Parks of this epoch, durably, before anything of it is let go.
                    if next_parks == Some(epoch) {
                        let parks = incoming.remove(&epoch).unwrap_or_default();
                        dirty |= !parks.is_empty();
                        store.park(parks).unwrap_or_else(|e| fail(e));
                    }
                    // Releases due in this epoch, given on at it.
                    let mut until = event.start_of(epoch.saturating_add(1)).saturating_sub(1);
                    if done {
                        until = until.min(now);
                    }
                    let due = store.release_until(until);
                    if !due.is_empty() {
                        dirty = true;
                        output
                            .session(&c.delayed(&epoch.max(cur)))
                            .give_iterator(due.into_iter().map(Flow::Pass));
                        store.persist().unwrap_or_else(|e| fail(e));
                    }
                    // The cut: parked and released through `epoch`, nothing later.
                    if let Some(k) = &cuts {
                        for cut in k.cuts_between(written, epoch.saturating_add(1)) {
                            snapshot(store, cut, &mut dirty);
                            written = Some(cut);
                        }
                    }
                    if epoch > cur && epoch < bound {
                        c.downgrade(&epoch);
                    }
                }
                publish(store);
                if done {
                    store.persist().unwrap_or_else(|e| fail(e));
                    publish(store);
                    if let Some(k) = &cuts {
                        for cut in k.cuts_between(written, FINAL) {
                            snapshot(store, cut, &mut dirty);
                            written = Some(cut);
                        }
                    }
                    snapshot(store, FINAL, &mut true);
                    cap = None;
                } else if bound > *c.time() {
                    c.downgrade(&bound);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tidings_model::MessageMeta;

    fn parked(release_at: Millis, event_time: Millis, seq: u128) -> Parked {
        let meta = Arc::new(MessageMeta {
            message_id: format!("m{seq}"),
            template_id: 1,
            business_id: 1,
            biz_id: None,
            content: "{}".into(),
            event_time,
            seq,
        });
        Parked {
            release_at,
            delivery: Delivery {
                meta,
                receiver: "r".into(),
                index: 0,
                event_time,
                content_key: 1,
                frequency_key: 2,
            },
        }
    }

    #[test]
    fn durable_and_ordered() {
        let dir = std::env::temp_dir().join(format!("tidings-park-{}", std::process::id()));
        let path = dir.join("parked.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = ParkStore::open(&path).unwrap();
        s.park(vec![
            parked(900, 30, 3),
            parked(900, 10, 1),
            parked(2000, 5, 9),
        ])
        .unwrap();
        drop(s);
        let mut s = ParkStore::open(&path).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_release(), Some(900));
        let due = s.release_until(1000);
        assert_eq!(
            due.iter().map(|d| d.meta.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(due.iter().all(|d| d.event_time == 900));
        s.persist().unwrap();
        let mut s = ParkStore::open(&path).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.release_until(5000).len(), 1);
        s.persist().unwrap();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write cut short leaves `{"release_at":…` without its end: the store opens without it
    /// (with a warning), repairs the file, and appends after it cleanly.
    #[test]
    fn a_torn_last_line_is_dropped_and_the_file_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parked.jsonl");
        let mut s = ParkStore::open(&path).unwrap();
        s.park(vec![parked(900, 10, 1), parked(950, 20, 2)])
            .unwrap();
        drop(s);
        let mut raw = std::fs::read(&path).unwrap();
        let whole = raw.len();
        let line = serde_json::to_vec(&parked(990, 30, 3)).unwrap();
        raw.extend_from_slice(&line[..line.len() / 2]);
        std::fs::write(&path, &raw).unwrap();
        let mut s = ParkStore::open(&path).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(std::fs::read(&path).unwrap().len(), whole, "repaired");
        s.park(vec![parked(990, 30, 3)]).unwrap();
        assert_eq!(ParkStore::open(&path).unwrap().len(), 3);
        // A whole last record whose newline was lost is kept.
        let raw = std::fs::read(&path).unwrap();
        std::fs::write(&path, &raw[..raw.len() - 1]).unwrap();
        assert_eq!(ParkStore::open(&path).unwrap().len(), 3);
        assert!(std::fs::read(&path).unwrap().ends_with(b"\n"));
    }

    /// A bad line inside the file (not a torn tail) is skipped, never blocking the start; the
    /// file as it was is kept aside.
    #[test]
    fn a_bad_inner_line_is_skipped_and_the_original_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parked.jsonl");
        let mut s = ParkStore::open(&path).unwrap();
        s.park(vec![parked(900, 10, 1)]).unwrap();
        drop(s);
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend_from_slice(b"{\"release_at\":9\x00\xff\n");
        raw.extend_from_slice(&serde_json::to_vec(&parked(990, 30, 3)).unwrap());
        raw.push(b'\n');
        std::fs::write(&path, &raw).unwrap();
        let s = ParkStore::open(&path).unwrap();
        assert_eq!(s.len(), 2);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".jsonl.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), raw);
        assert_eq!(ParkStore::open(&path).unwrap().len(), 2);
    }

    /// A state path that cannot be read is an error naming it, not a panic.
    #[test]
    fn an_unreadable_store_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parked.jsonl");
        std::fs::create_dir(&path).unwrap();
        let e = ParkStore::open(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }
}
