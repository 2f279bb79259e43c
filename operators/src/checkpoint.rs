//! Checkpoints: one consistent cut of the dedup windows, the parked deliveries and the source
//! offsets, written to the job's state directory and restored on start.
//!
//! The cut is an epoch `c` the sources agree on. Every `checkpoint_ms` of wall time the driver
//! asks for a cut; each source, on its next turn, joins with the epoch it holds its capability
//! at and holds it there; when every source has joined, the cut is the largest of those epochs
//! (no operator's frontier can have passed it yet) and the sources move on. Each stateful
//! operator writes its *part* once its inputs have passed `c` and before it judges anything
//! later; each source, as its capability passes `c`, deposits where it would resume each
//! partition ([`Position`]: records of epochs after `c` that it read before the cut are read
//! again, the rest are in the cut). So when the graph's final "done" frontier passes `c` and
//! every part and position is in, every delivery of epochs `<= c` is terminal (or parked) with
//! its rows durable. Worker 0 then writes the manifest `_COMPLETE` (the merged positions,
//! written aside, fsynced, renamed) and only after it do the workers commit those offsets to
//! Kafka: the group's committed offsets never run ahead of the newest complete checkpoint.
//!
//! On start the newest complete checkpoint is restored: each keyed operator keeps the keys that
//! route to its worker (so the worker count may change), the park store is replaced by the
//! checkpoint's, and the source resumes every partition at its position. Records after the cut
//! are replayed and judged against the state of the cut: at-least-once, and a receiver sent
//! before a crash still dedups its twin.
//!
//! ```text
//! state_dir/checkpoints/1763770200000-000000000010/
//!     content-0.parquet  content-1.parquet      key FixedSizeBinary(16), values List<Int64>
//!     frequency-0.parquet frequency-1.parquet
//!     parked.jsonl                              worker 0's park store
//!     _COMPLETE                                 {"offsets": {"0": 1234}, "positions": {...}}
//! ```
//!
//! Directory names sort in time order: `<run start ms>-<epoch>`, and `<run start ms>-final` for
//! the cut taken when a run ends (graceful stop or end of input).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::builder::{FixedSizeBinaryBuilder, Int64Builder, ListBuilder};
use arrow_array::{Array, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::Epoch;
use crate::event_time::PartitionClock;

/// The epoch of the cut taken when a run ends.
pub const FINAL: Epoch = Epoch::MAX;

const MANIFEST: &str = "_COMPLETE";

/// Where a source resumes one partition after a cut.
///
/// Records are read again from `offset`. Those before `read_to` were read before the cut: they
/// are judged again by the partition clock (so it evolves exactly as it did) but given on only
/// if listed in `after` (their epoch was past the cut, so the cut does not hold them). Records
/// from `read_to` on are new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The first offset to read again (Kafka offset; 1-based line of a file).
    pub offset: i64,
    /// The byte position of that line (files).
    #[serde(default)]
    pub byte: u64,
    /// The partition's clock just before `offset`.
    #[serde(default)]
    pub clock: PartitionClock,
    /// The first offset not read before the cut.
    #[serde(default)]
    pub read_to: i64,
    /// Offsets in `offset..read_to` whose epoch was past the cut.
    #[serde(default)]
    pub after: Vec<i64>,
    /// A file partition's fingerprint (of its first line), so a replaced file is read anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The manifest of a complete checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The source the offsets belong to (e.g. the topic); offsets of another are ignored.
    #[serde(default)]
    pub source: String,
    /// The offset to commit (first to read again), per partition of the source.
    pub offsets: BTreeMap<i32, i64>,
    /// Where to resume, per partition.
    #[serde(default)]
    pub positions: BTreeMap<i32, Position>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Operator instances that write a part of every checkpoint.
    writers: usize,
    /// Source instances that deposit positions for every cut.
    sources: usize,
    /// Sources still reading (the others have deposited their final positions).
    reading: usize,
    /// A cut was asked for and the sources are agreeing on its epoch.
    requested: bool,
    /// The epoch each source holds its capability at while they agree.
    agreeing: BTreeMap<usize, Epoch>,
    /// Cut epochs agreed and not yet completed.
    cuts: BTreeSet<Epoch>,
    /// Parts written, per cut.
    parts: BTreeMap<Epoch, usize>,
    /// Source positions deposited per cut, per source.
    positions: BTreeMap<Epoch, HashMap<usize, BTreeMap<i32, Position>>>,
    /// Final positions of the sources that finished.
    finished: HashMap<usize, BTreeMap<i32, Position>>,
    /// The largest epoch a finished source gave a record at: a cut agreed later is at least
    /// this, so the finished source's final positions hold for it.
    finished_max: Epoch,
    /// The newest complete cut and its merged positions.
    completed: Option<(Epoch, BTreeMap<i32, Position>)>,
    /// Positions of the restored checkpoint (the base every manifest merges into).
    base: BTreeMap<i32, Position>,
    /// A graceful stop was asked for: the next cut agreed is the run's last.
    stopping: bool,
    /// The last cut of a graceful stop, once agreed.
    stop_at: Option<Epoch>,
}

/// The checkpoints of one run, shared by every operator of every worker of the process.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    source: String,
    run: String,
    restored: Option<PathBuf>,
    shared: Arc<Mutex<Shared>>,
}

impl Checkpoints {
    /// Checkpoints of `source` (a topic or `file:<path>`) under `state_dir/checkpoints`; finds
    /// the newest complete one to restore. The positions of a checkpoint taken from another
    /// source are not restored (its dedup windows and parks are). With `fresh`, nothing is
    /// restored (a deliberate replay).
    pub fn open(
        state_dir: &Path,
        source: &str,
        run_start_ms: i64,
        fresh: bool,
    ) -> io::Result<Checkpoints> {
        let dir = state_dir.join("checkpoints");
        std::fs::create_dir_all(&dir)?;
        let mut complete: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.join(MANIFEST).is_file() {
                complete.push(path);
            }
        }
        complete.sort();
        let restored = if fresh { None } else { complete.pop() };
        let base = match &restored {
            Some(p) => {
                let m = read_manifest(p)?;
                if m.source == source {
                    let mut positions = m.positions;
                    // Manifests written before positions existed: resume at the offsets.
                    for (p, o) in m.offsets {
                        positions.entry(p).or_insert(Position {
                            offset: o,
                            read_to: o,
                            ..Position::default()
                        });
                    }
                    positions
                } else {
                    BTreeMap::new()
                }
            }
            None => BTreeMap::new(),
        };
        Ok(Checkpoints {
            dir,
            source: source.to_string(),
            run: format!("{run_start_ms:013}"),
            restored,
            shared: Arc::new(Mutex::new(Shared {
                base,
                ..Shared::default()
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The checkpoint restored on start, if any.
    pub fn restored(&self) -> Option<&Path> {
        self.restored.as_deref()
    }

    /// The source positions of the restored checkpoint.
    pub fn restored_positions(&self) -> BTreeMap<i32, Position> {
        self.lock().base.clone()
    }

    /// The commit offsets of the restored checkpoint.
    pub fn restored_offsets(&self) -> BTreeMap<i32, i64> {
        self.lock()
            .base
            .iter()
            .map(|(&p, pos)| (p, pos.offset))
            .collect()
    }

    /// Registers one operator instance that writes a part of every checkpoint. Call while
    /// building the dataflow.
    pub fn register(&self) {
        self.lock().writers += 1;
    }

    /// Registers one source instance that deposits positions for every cut. Call while
    /// building the dataflow.
    pub fn register_source(&self) {
        let mut s = self.lock();
        s.sources += 1;
        s.reading += 1;
    }

    /// Asks for a cut (the driver, every `checkpoint_ms` of wall time). Ignored while one is
    /// being agreed or has not completed yet.
    pub fn request_cut(&self) {
        let mut s = self.lock();
        if !s.requested && s.cuts.is_empty() && s.reading > 0 {
            s.requested = true;
        }
    }

    /// Asks for a graceful stop *at a cut*: the sources agree on one more cut `c` (as for any
    /// cut), then hold their capabilities at `c + 1` and read no more. Everything of epochs
    /// `<= c` is judged, sent and tracked; nothing later is (those records are read again by
    /// the next run, from the cut). So a stop decides exactly what the sequential model decides
    /// for the records before the cut, whatever was read past it. Without a source still
    /// reading, the run simply ends at the end of its input.
    pub fn request_stop(&self) {
        let mut s = self.lock();
        if s.stopping {
            return;
        }
        s.stopping = true;
        if s.reading > 0 {
            // Even with a cut pending: the new one is at least as late.
            s.requested = true;
        }
    }

    /// The last cut of a graceful stop, once the sources agreed on it.
    pub fn stop_cut(&self) -> Option<Epoch> {
        self.lock().stop_at
    }

    /// The epoch a source may hold its capability at, at most, given a stop: `None` without
    /// one. A source whose capability reached it reads no more.
    pub fn stop_bound(&self) -> Option<Epoch> {
        self.stop_cut().map(|c| c.saturating_add(1))
    }

    /// A source's turn, holding its capability at `cap`: while a cut is being agreed the source
    /// may not move its capability past the epoch it held when it joined the agreement, and the
    /// cut is the largest of those epochs, so no operator's frontier can have passed it before
    /// it is known. A source that reads nothing (no partitions) joins without raising the cut.
    /// Returns the epoch the source may not pass (None: any).
    pub fn source_turn(&self, worker: usize, cap: Epoch, reads: bool) -> Option<Epoch> {
        let mut s = self.lock();
        if !s.requested {
            return None;
        }
        // A source without records joins at 0: its capability may run ahead, it has no record
        // a cut could miss.
        let held = *s
            .agreeing
            .entry(worker)
            .or_insert(if reads { cap } else { 0 });
        if !reads {
            if s.agreeing.len() >= s.reading {
                s.agree();
            }
            return None;
        }
        if s.agreeing.len() >= s.reading {
            s.agree();
            return None;
        }
        Some(held)
    }

    /// The cuts agreed before `below` that `worker`'s source has not deposited positions for.
    pub fn cuts_to_deposit(&self, worker: usize, below: Epoch) -> Vec<Epoch> {
        let s = self.lock();
        s.cuts
            .range(..below)
            .filter(|c| {
                s.positions
                    .get(c)
                    .is_none_or(|per| !per.contains_key(&worker))
            })
            .copied()
            .collect()
    }

    /// A source deposits where it resumes as of cut `e`.
    pub fn deposit(&self, e: Epoch, worker: usize, positions: BTreeMap<i32, Position>) {
        self.lock()
            .positions
            .entry(e)
            .or_default()
            .insert(worker, positions);
    }

    /// A source finished (end of file, stop or idle exit), having given records at epochs up to
    /// `given_max`. It deposits `positions_at(c)` for every agreed cut it has not, and
    /// `positions_at(FINAL)` for every later cut (which is agreed at `given_max` or later, so
    /// every record it gave is inside those).
    pub fn source_finished(
        &self,
        worker: usize,
        given_max: Epoch,
        positions_at: impl Fn(Epoch) -> BTreeMap<i32, Position>,
    ) {
        for cut in self.cuts_to_deposit(worker, FINAL) {
            self.deposit(cut, worker, positions_at(cut));
        }
        let positions = positions_at(FINAL);
        let mut s = self.lock();
        s.finished_max = s.finished_max.max(given_max);
        if s.finished.insert(worker, positions).is_none() {
            s.reading = s.reading.saturating_sub(1);
        }
        s.agreeing.remove(&worker);
        if s.reading == 0 {
            // Every source finished (end of input): the run ends at its final cut, a stop
            // agreed before included; nothing is left past a cut to read again.
            s.stop_at = None;
        }
        if s.requested && s.agreeing.len() >= s.reading {
            if s.reading == 0 {
                s.requested = false;
                s.agreeing.clear();
            } else {
                s.agree();
            }
        }
    }

    /// The cuts agreed after `after` and before `before`, in order: an operator writes its part
    /// of each before it judges anything past it.
    pub fn cuts_between(&self, after: Option<Epoch>, before: Epoch) -> Vec<Epoch> {
        let s = self.lock();
        let from = after.map_or(0, |a| a.saturating_add(1));
        if from >= before {
            return Vec::new();
        }
        s.cuts.range(from..before).copied().collect()
    }

    /// The directory of checkpoint `e`.
    pub fn dir_of(&self, e: Epoch) -> PathBuf {
        match e {
            FINAL => self.dir.join(format!("{}-final", self.run)),
            e => self.dir.join(format!("{}-{e:020}", self.run)),
        }
    }

    /// The path of a part of checkpoint `e` (its directory is created).
    pub fn part_path(&self, e: Epoch, part: &str) -> io::Result<PathBuf> {
        let dir = self.dir_of(e);
        std::fs::create_dir_all(&dir)?;
        Ok(dir.join(part))
    }

    /// Records that a registered writer's part of `e` is durably on disk.
    pub fn part_written(&self, e: Epoch) {
        *self.lock().parts.entry(e).or_default() += 1;
    }

    /// Worker 0, once the "done" frontier has passed `before` (`None`: the graph is done):
    /// completes the newest cut before it that has all its parts and positions, and removes
    /// older ones. Returns its epoch when one was completed.
    pub fn complete_before(&self, before: Option<Epoch>) -> io::Result<Option<Epoch>> {
        let (epoch, merged) = {
            let mut s = self.lock();
            let writers = s.writers;
            let candidates: Vec<Epoch> = s
                .parts
                .iter()
                .rev()
                .filter(|&(&e, &n)| before.is_none_or(|b| e < b) && n >= writers)
                .map(|(&e, _)| e)
                .collect();
            let Some(epoch) = candidates.into_iter().find(|e| s.has_every_position(*e)) else {
                return Ok(None);
            };
            let mut merged = s.base.clone();
            let deposits = s.positions.get(&epoch).cloned().unwrap_or_default();
            let sources = deposits
                .iter()
                .chain(s.finished.iter().filter(|(w, _)| !deposits.contains_key(w)));
            for (_, per_partition) in sources {
                for (&p, pos) in per_partition {
                    merged.insert(p, pos.clone());
                }
            }
            s.parts = s.parts.split_off(&epoch.saturating_add(1));
            s.positions = s.positions.split_off(&epoch.saturating_add(1));
            s.cuts = s.cuts.split_off(&epoch.saturating_add(1));
            if epoch == FINAL {
                s.parts.clear();
                s.positions.clear();
                s.cuts.clear();
            }
            (epoch, merged)
        };
        let dir = self.dir_of(epoch);
        std::fs::create_dir_all(&dir)?;
        let body = serde_json::to_vec(&Manifest {
            source: self.source.clone(),
            offsets: merged.iter().map(|(&p, pos)| (p, pos.offset)).collect(),
            positions: merged.clone(),
        })
        .map_err(io::Error::other)?;
        write_durably(&dir.join(MANIFEST), &body)?;
        // Everything older is superseded (complete or not), including the restored one.
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path < dir {
                std::fs::remove_dir_all(&path)?;
            }
        }
        let mut s = self.lock();
        s.base = merged.clone();
        s.completed = Some((epoch, merged));
        Ok(Some(epoch))
    }

    /// The newest complete checkpoint and its commit offsets (every partition's).
    pub fn completed(&self) -> Option<(Epoch, BTreeMap<i32, i64>)> {
        let s = self.lock();
        let (e, positions) = s.completed.as_ref()?;
        Some((
            *e,
            positions.iter().map(|(&p, pos)| (p, pos.offset)).collect(),
        ))
    }

    /// The restored checkpoint's files whose names start with `prefix`.
    pub fn restored_parts(&self, prefix: &str) -> io::Result<Vec<PathBuf>> {
        let Some(dir) = &self.restored else {
            return Ok(Vec::new());
        };
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
            {
                parts.push(path);
            }
        }
        parts.sort();
        Ok(parts)
    }
}

impl Shared {
    /// Every source has joined: the cut is the largest epoch they hold.
    fn agree(&mut self) {
        if let Some(&c) = self.agreeing.values().max() {
            let c = c.max(self.finished_max);
            self.cuts.insert(c);
            if self.stopping && self.stop_at.is_none() {
                self.stop_at = Some(c);
            }
        }
        self.requested = false;
        self.agreeing.clear();
    }

    /// Whether every source deposited positions for `e` (or finished, for the final cut and
    /// any cut it did not reach).
    fn has_every_position(&self, e: Epoch) -> bool {
        let deposited = self.positions.get(&e);
        let n = deposited.map_or(0, |d| d.len())
            + self
                .finished
                .keys()
                .filter(|w| deposited.is_none_or(|d| !d.contains_key(w)))
                .count();
        n >= self.sources
    }
}

fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Writes `bytes` to `path` atomically: aside, fsynced, renamed.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

fn keyed_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::FixedSizeBinary(16), false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
            false,
        ),
    ]))
}

/// Writes keyed state (key → values) as Parquet, atomically.
pub fn write_keyed(path: &Path, entries: impl Iterator<Item = (u128, Vec<i64>)>) -> io::Result<()> {
    let schema = keyed_schema();
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), None).map_err(io::Error::other)?;
    let mut entries = entries.peekable();
    while entries.peek().is_some() {
        let mut keys = FixedSizeBinaryBuilder::new(16);
        let mut values = ListBuilder::new(Int64Builder::new()).with_field(Field::new(
            "item",
            DataType::Int64,
            false,
        ));
        for (key, vs) in entries.by_ref().take(65_536) {
            keys.append_value(key.to_le_bytes())
                .map_err(io::Error::other)?;
            values.values().append_slice(&vs);
            values.append(true);
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(keys.finish()), Arc::new(values.finish())],
        )
        .map_err(io::Error::other)?;
        writer.write(&batch).map_err(io::Error::other)?;
    }
    let file = writer.into_inner().map_err(io::Error::other)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Reads keyed state written by [`write_keyed`], keeping the keys `keep` accepts.
pub fn read_keyed(
    path: &Path,
    mut keep: impl FnMut(u128) -> bool,
    mut each: impl FnMut(u128, &[i64]),
) -> io::Result<()> {
    let bad = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
        .and_then(|b| b.build())
        .map_err(|e| bad(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .ok_or_else(|| bad(&"column key is not FixedSizeBinary(16)"))?;
        let lists = batch
            .column(1)
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| bad(&"column values is not List<Int64>"))?;
        for i in 0..keys.len() {
            let bytes: [u8; 16] = keys.value(i).try_into().map_err(|e| bad(&e))?;
            let key = u128::from_le_bytes(bytes);
            if !keep(key) {
                continue;
            }
            let list = lists.value(i);
            let values = list
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| bad(&"values are not Int64"))?;
            each(key, values.values());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("content-0.parquet");
        let entries: Vec<(u128, Vec<i64>)> = (0..100_000u128)
            .map(|k| (k << 70 | k, vec![k as i64, -1]))
            .collect();
        write_keyed(&path, entries.clone().into_iter()).unwrap();
        let mut back = Vec::new();
        read_keyed(&path, |k| k % 2 == 0, |k, v| back.push((k, v.to_vec()))).unwrap();
        let expected: Vec<_> = entries.into_iter().filter(|(k, _)| k % 2 == 0).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn sources_agree_on_a_cut_and_the_newest_complete_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", 1000, false).unwrap();
        assert!(c.restored().is_none());
        c.register();
        c.register();
        c.register_source();
        c.register_source();
        assert_eq!(c.source_turn(0, 7, true), None, "no cut asked for");
        c.request_cut();
        assert_eq!(
            c.source_turn(0, 7, true),
            Some(7),
            "held while the other source joins"
        );
        assert_eq!(c.source_turn(0, 7, true), Some(7));
        assert_eq!(c.source_turn(1, 12, true), None, "agreed: the larger epoch");
        assert_eq!(c.cuts_between(None, 100), vec![12]);
        assert_eq!(c.cuts_between(Some(12), 100), Vec::<Epoch>::new());
        assert_eq!(c.cuts_to_deposit(0, 12), Vec::<Epoch>::new());
        assert_eq!(c.cuts_to_deposit(0, 13), vec![12]);
        let pos = |o| Position {
            offset: o,
            read_to: o,
            ..Position::default()
        };
        c.deposit(12, 0, BTreeMap::from([(0, pos(5))]));
        c.part_written(12);
        c.part_written(12);
        assert_eq!(
            c.complete_before(Some(20)).unwrap(),
            None,
            "a source missing"
        );
        c.deposit(12, 1, BTreeMap::from([(1, pos(7))]));
        assert_eq!(c.complete_before(Some(12)).unwrap(), None, "not done yet");
        assert_eq!(c.complete_before(Some(13)).unwrap(), Some(12));
        assert_eq!(c.completed(), Some((12, BTreeMap::from([(0, 5), (1, 7)]))));
        c.source_finished(0, 12, |_| BTreeMap::from([(0, pos(9))]));
        c.source_finished(1, 12, |_| BTreeMap::from([(1, pos(7))]));
        c.part_written(FINAL);
        c.part_written(FINAL);
        assert_eq!(c.complete_before(None).unwrap(), Some(FINAL));
        let again = Checkpoints::open(dir.path(), "t", 2000, false).unwrap();
        assert_eq!(again.restored(), Some(c.dir_of(FINAL).as_path()));
        assert_eq!(again.restored_offsets(), BTreeMap::from([(0, 9), (1, 7)]));
        let other = Checkpoints::open(dir.path(), "another topic", 3000, false).unwrap();
        assert!(other.restored().is_some());
        assert!(
            other.restored_offsets().is_empty(),
            "offsets of another topic"
        );
        let fresh = Checkpoints::open(dir.path(), "t", 4000, true).unwrap();
        assert!(fresh.restored().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("checkpoints"))
                .unwrap()
                .count(),
            1,
            "older cuts removed"
        );
    }

    #[test]
    fn a_stop_agrees_one_more_cut_even_with_one_pending() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", 1000, false).unwrap();
        c.register_source();
        c.register_source();
        c.request_cut();
        assert_eq!(c.source_turn(0, 3, true), Some(3));
        assert_eq!(c.source_turn(1, 4, true), None);
        assert_eq!(c.stop_cut(), None, "an ordinary cut");
        c.request_stop();
        c.request_stop();
        assert_eq!(
            c.source_turn(0, 5, true),
            Some(5),
            "a cut pending does not delay it"
        );
        assert_eq!(c.stop_bound(), None);
        assert_eq!(c.source_turn(1, 6, true), None);
        assert_eq!(c.stop_cut(), Some(6));
        assert_eq!(c.stop_bound(), Some(7));
        assert_eq!(c.cuts_between(None, FINAL), vec![4, 6]);
        // Without a source reading, a stop agrees nothing: the run ends at its input's end.
        let d = Checkpoints::open(dir.path(), "t", 2000, false).unwrap();
        d.register_source();
        d.source_finished(0, 2, |_| BTreeMap::new());
        d.request_stop();
        assert_eq!(d.source_turn(0, 9, true), None);
        assert_eq!(d.stop_cut(), None);
    }

    #[test]
    fn a_finished_source_does_not_hold_an_agreement() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", 1000, false).unwrap();
        c.register_source();
        c.register_source();
        c.request_cut();
        assert_eq!(c.source_turn(0, 3, true), Some(3));
        c.source_finished(1, 5, |_| BTreeMap::new());
        assert_eq!(
            c.cuts_between(None, 10),
            vec![5],
            "at least what the finished source gave"
        );
        assert_eq!(c.source_turn(0, 3, true), None);
    }

    #[test]
    fn a_source_without_partitions_does_not_raise_the_cut_and_a_finisher_deposits() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", 1000, false).unwrap();
        for _ in 0..3 {
            c.register_source();
        }
        c.request_cut();
        assert_eq!(c.source_turn(0, 1_000_000, false), None);
        assert_eq!(c.source_turn(1, 4, true), Some(4));
        assert_eq!(c.source_turn(2, 6, true), None);
        assert_eq!(c.cuts_between(None, FINAL), vec![6]);
        // Source 2 finishes before its capability passed the cut: it deposits for it.
        let pos = Position {
            offset: 3,
            ..Position::default()
        };
        c.source_finished(2, 9, |cut| {
            BTreeMap::from([(
                2,
                Position {
                    offset: cut.min(10) as i64,
                    ..pos.clone()
                },
            )])
        });
        assert_eq!(c.cuts_to_deposit(2, FINAL), Vec::<Epoch>::new());
        let s = c.lock();
        assert_eq!(s.positions[&6][&2][&2].offset, 6);
        assert_eq!(s.finished[&2][&2].offset, 10);
    }
}
