//! The durable set of parked deliveries: [`Shelf`] holds them in release order in memory, and
//! [`ParkStore`] keeps a shelf in an append-only JSON-lines file, rewritten atomically after a
//! release: fsynced before the epoch that parked is let go, or, in a job (whose checkpoint cuts
//! hold the parks durably), the run's working copy.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidings_model::Delivery;
use tidings_model::time::Millis;
use tidings_model::time::wall_ms as now_ms;

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

/// Parked deliveries in release order: release time, then event time, source position and
/// receiver index (a plain in-memory set; [`ParkStore`] keeps one on disk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shelf {
    parked: BTreeMap<ParkKey, Parked>,
}

impl Shelf {
    /// A shelf holding `items`.
    pub fn of(items: impl IntoIterator<Item = Parked>) -> Shelf {
        let mut shelf = Shelf::default();
        shelf.put(items);
        shelf
    }

    /// Adds deliveries.
    pub fn put(&mut self, items: impl IntoIterator<Item = Parked>) {
        for p in items {
            self.parked.insert(park_key(&p), p);
        }
    }

    /// Takes every delivery due at or before `t`, in release order, with the release time as
    /// event time.
    pub fn release_until(&mut self, t: Millis) -> Vec<Delivery> {
        let rest = self
            .parked
            .split_off(&(t.saturating_add(1), Millis::MIN, 0, 0));
        let due = std::mem::replace(&mut self.parked, rest);
        due.into_values()
            .map(|p| {
                let mut d = p.delivery;
                d.event_time = p.release_at;
                d
            })
            .collect()
    }

    /// Applies a checkpoint's delta part ([`ParkStore::take_changes`]): its parks and releases,
    /// in order. `Err` names the line that is neither.
    pub fn replay(&mut self, changes: &[u8]) -> Result<(), String> {
        for (i, line) in changes.split(|&b| b == b'\n').enumerate() {
            if line.trim_ascii().is_empty() {
                continue;
            }
            // A release is written as `{"released_through":T}`, a park as its `Parked`.
            let read = if line.starts_with(b"{\"released_through\":") {
                serde_json::from_slice::<Released>(line).map(|r| {
                    self.release_until(r.released_through);
                })
            } else {
                serde_json::from_slice::<Parked>(line).map(|p| self.put([p]))
            };
            read.map_err(|e| format!("line {}: {e}", i + 1))?;
        }
        Ok(())
    }

    /// What is parked, in release order.
    pub fn iter(&self) -> impl Iterator<Item = &Parked> {
        self.parked.values()
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

/// The durable set of parked deliveries.
#[derive(Debug)]
pub struct ParkStore {
    path: PathBuf,
    shelf: Shelf,
    /// Whether each park and rewrite is fsynced before it returns. Off when checkpoint cuts
    /// hold the parks ([`ParkStore::durable_through_cuts`]).
    sync: bool,
    /// What changed since [`ParkStore::take_changes`] last took it (a `Mutex` only so that a
    /// cut can take it through `&ParkStore`).
    changes: std::sync::Mutex<Changes>,
}

/// The parks and releases since a cut last took them, in order, as JSON lines: each park as
/// its line, each release as `{"released_through":T}` (a checkpoint's delta part:
/// [`Shelf::replay`] folds it over the part before). Past `limit` bytes they are dropped (the
/// next cut writes the whole store instead), so they never take more memory than that.
#[derive(Debug)]
struct Changes {
    /// `None`: more than `limit` bytes changed.
    lines: Option<Vec<u8>>,
    limit: usize,
}

impl Default for Changes {
    fn default() -> Changes {
        Changes {
            lines: Some(Vec::new()),
            limit: 64 * 1024,
        }
    }
}

impl Changes {
    fn add(&mut self, line: impl FnOnce(&mut Vec<u8>)) {
        if let Some(lines) = &mut self.lines {
            line(lines);
            if lines.len() > self.limit {
                self.lines = None;
            }
        }
    }
}

/// The changes' buffer.
fn changes_of(changes: &mut std::sync::Mutex<Changes>) -> &mut Changes {
    changes.get_mut().unwrap_or_else(|p| p.into_inner())
}

/// A release in a checkpoint's delta part: every delivery due at or before this time left.
#[derive(Serialize, Deserialize)]
struct Released {
    released_through: Millis,
}

impl ParkStore {
    /// Opens (or starts) the store at `path`.
    ///
    /// A torn last line (a write cut short: no newline, not JSON) is dropped with a warning and
    /// the file rewritten without it. A bad line elsewhere is skipped with a warning naming it;
    /// the file as it was is first kept aside as `parked.jsonl.corrupt-<ms>`, so nothing is
    /// lost for a person to look at.
    pub fn open(path: &Path) -> io::Result<ParkStore> {
        let mut parked = Shelf::default();
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
                Ok(p) => parked.put([p]),
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
            shelf: parked,
            sync: true,
            changes: Default::default(),
        };
        if repair {
            store.persist()?;
        }
        Ok(store)
    }

    /// The job's checkpoints hold what is parked: each cut writes the parks and releases up
    /// to it durably (its park part), a restart replaces this file with the cut's store, and
    /// the records after the cut are read again and parked again (with no complete cut yet,
    /// the file is kept and the input is read again from its start: offsets are committed
    /// only with a cut). The file is then this run's
    /// working copy: parks are appended and a release rewrites it (atomically) without an
    /// fsync each, which cost the worker a sync per epoch that parked.
    pub fn durable_through_cuts(&mut self) {
        self.sync = false;
    }

    /// Parks deliveries (appended; fsynced before returning unless the checkpoints hold
    /// them, [`ParkStore::durable_through_cuts`]).
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
        let written = f
            .write_all(&buf)
            .and_then(|()| if self.sync { f.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            let _ = f.set_len(before).and_then(|()| f.sync_data());
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            ));
        }
        self.shelf.put(items);
        changes_of(&mut self.changes).add(|lines| lines.extend_from_slice(&buf));
        Ok(())
    }

    /// Takes every delivery due at or before `t`, in release then event-time order, with the
    /// release time as event time. Call [`ParkStore::persist`] once they are safely on their way.
    pub fn release_until(&mut self, t: Millis) -> Vec<Delivery> {
        let due = self.shelf.release_until(t);
        if !due.is_empty() {
            changes_of(&mut self.changes).add(|lines| {
                serde_json::to_writer(
                    &mut *lines,
                    &Released {
                        released_through: t,
                    },
                )
                .expect("a number serializes");
                lines.push(b'\n');
            });
        }
        due
    }

    /// The parks and releases since it was last taken, as JSON lines in the order they
    /// happened: what [`Shelf::replay`] folds over the store as it was then; `None` when more
    /// than the limit ([`ParkStore::limit_changes`]; 64 KiB at first) changed: then only the
    /// whole store tells what is parked.
    pub fn take_changes(&self) -> Option<Vec<u8>> {
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        changes.lines.replace(Vec::new())
    }

    /// Keeps the changes from now on up to `limit` bytes (past it, none: the next cut writes
    /// the whole store).
    pub fn limit_changes(&self, limit: usize) {
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        changes.limit = limit;
        if changes.lines.as_ref().is_some_and(|l| l.len() > limit) {
            changes.lines = None;
        }
    }

    /// Restores the store at `path` from a checkpoint's parts: the whole store `base` (none:
    /// empty), then the `deltas` in order, each folded over it ([`Shelf::replay`]).
    pub fn restore(path: &Path, base: Option<&Path>, deltas: &[PathBuf]) -> io::Result<()> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let whole = match base {
            Some(base) => read(base)?,
            None if deltas.is_empty() => Vec::new(),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: changes to a park store without the store (parked.jsonl is missing)",
                        deltas[0].display()
                    ),
                ));
            }
        };
        crate::checkpoint::write_durably(path, &whole)?;
        if deltas.is_empty() {
            return Ok(());
        }
        let mut store = ParkStore::open(path)?;
        for d in deltas {
            store.shelf.replay(&read(d)?).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", d.display()))
            })?;
        }
        store.persist()
    }

    /// Rewrites the file with what is still parked (atomically: written aside, then renamed;
    /// fsynced unless the checkpoints hold it).
    pub fn persist(&self) -> io::Result<()> {
        if self.shelf.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        crate::checkpoint::write_atomically(&self.path, &self.lines()?, self.sync)
    }

    /// Writes what is parked to `path` durably (atomically), e.g. a checkpoint's part; its
    /// size.
    pub fn write_to(&self, path: &Path) -> io::Result<usize> {
        let buf = self.lines()?;
        crate::checkpoint::write_durably(path, &buf)?;
        Ok(buf.len())
    }

    /// What is parked, as the store's JSON lines.
    fn lines(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        for p in self.shelf.iter() {
            serde_json::to_writer(&mut buf, p).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        Ok(buf)
    }

    /// Number parked.
    pub fn len(&self) -> usize {
        self.shelf.len()
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.shelf.is_empty()
    }

    /// The earliest release time.
    pub fn next_release(&self) -> Option<Millis> {
        self.shelf.next_release()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_model::MessageMeta;

    /// A delivery written to a park file (JSON) or sent to another process (bincode) reads back
    /// equal, its copies of the message's facts taken from the message again; a park line of an
    /// older binary (no `dedup`) reads with the flag unknown and the same order.
    #[test]
    fn a_delivery_reads_back_with_its_message_facts() {
        let mut d = crate::testkit::delivery(7, 2, "13800138000", 1_000, "c");
        d.event_time = 5_000; // released from a park
        d.dedup = Some(false);
        assert_eq!(d.order(), (5_000, 1_000, 7, 2));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Delivery>(&json).unwrap(), d);
        let bytes = bincode::serialize(&d).unwrap();
        assert_eq!(bincode::deserialize::<Delivery>(&bytes).unwrap(), d);
        // As the binary before the flag wrote it: the same object without `dedup`, wherever
        // it is written.
        let old = json
            .replace(",\"dedup\":false", "")
            .replace("\"dedup\":false,", "");
        assert!(!old.contains("dedup"), "{old}");
        let back: Delivery = serde_json::from_str(&old).unwrap();
        assert_eq!((back.dedup, back.order()), (None, d.order()));
    }

    fn parked(release_at: Millis, event_time: Millis, seq: u128) -> Parked {
        let meta = MessageMeta::sample(seq, event_time, "{}");
        Parked {
            release_at,
            delivery: Delivery::new(meta, "r".into(), 0, event_time, (1, 2)),
        }
    }

    /// In a job the cuts hold the parks: the file is written as before (read back alike,
    /// rewritten after a release), only not fsynced per write.
    #[test]
    fn the_working_copy_reads_back_as_the_durable_store() {
        let dir = tempfile::tempdir().unwrap();
        let (synced, working) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let mut a = ParkStore::open(&synced).unwrap();
        let mut b = ParkStore::open(&working).unwrap();
        b.durable_through_cuts();
        for store in [&mut a, &mut b] {
            store
                .park((0..5).map(|i| parked(1_000 * i, 10, i as u128)).collect())
                .unwrap();
            store.park(vec![parked(500, 11, 9)]).unwrap();
            assert_eq!(store.release_until(1_000).len(), 3);
            store.persist().unwrap();
        }
        assert_eq!(
            std::fs::read(&synced).unwrap(),
            std::fs::read(&working).unwrap()
        );
        let again = ParkStore::open(&working).unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(again.next_release(), Some(2_000));
        assert!(!working.with_extension("tmp").exists());
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
