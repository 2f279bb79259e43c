//! Checkpoints: one consistent cut of the dedup windows, the parked deliveries and the source
//! offsets, written to the job's state directory and restored on start.
//!
//! The cut is an epoch. Every `every`-th epoch is a *checkpoint epoch* `c`; each stateful
//! operator holds a capability at the next checkpoint epoch, and once its inputs have passed
//! `c` (everything of epochs `<= c` judged, nothing later yet) it writes its *part* and only
//! then lets the capability go. So when the graph's final "done" frontier passes `c`, every
//! part of `c` is on disk and every delivery of epochs `<= c` is terminal (or parked) with its
//! rows durable. Worker 0 then writes the manifest `_COMPLETE` (the merged source offsets,
//! written aside, fsynced, renamed) and only after it do the workers commit those offsets to
//! Kafka: the group's committed offsets never run ahead of the newest complete checkpoint.
//!
//! On start the newest complete checkpoint is restored: each keyed operator keeps the keys that
//! route to its worker (so the worker count may change), the park store is replaced by the
//! checkpoint's, and the source skips records below the checkpoint's offsets (the group may lag
//! behind it by one commit). Records after the cut are replayed and judged against the state
//! of the cut: at-least-once, and a receiver sent before a crash still dedups its twin.
//!
//! ```text
//! state_dir/checkpoints/1763770200000-000000000010/
//!     content-0.parquet  content-1.parquet      key FixedSizeBinary(16), values List<Int64>
//!     frequency-0.parquet frequency-1.parquet
//!     parked.jsonl                              worker 0's park store
//!     _COMPLETE                                 {"offsets": {"0": 1234, ...}}
//! ```
//!
//! Directory names sort in time order: `<run start ms>-<epoch>`, and `<run start ms>-final` for
//! the cut taken when a run ends (graceful stop or end of input).

use std::collections::{BTreeMap, HashMap};
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

/// The epoch of the cut taken when a run ends.
pub const FINAL: Epoch = Epoch::MAX;

const MANIFEST: &str = "_COMPLETE";

/// The manifest of a complete checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The source the offsets belong to (e.g. the topic); offsets of another are ignored.
    #[serde(default)]
    pub source: String,
    /// Next offset to read, per partition of the source topic.
    pub offsets: BTreeMap<i32, i64>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Operator instances that write a part of every checkpoint.
    writers: usize,
    /// Parts written, per checkpoint epoch.
    parts: BTreeMap<Epoch, usize>,
    /// Source offsets deposited per checkpoint epoch, per worker.
    offsets: BTreeMap<Epoch, HashMap<usize, HashMap<i32, i64>>>,
    /// The newest complete checkpoint: its epoch and the offsets each worker deposited.
    completed: Option<(Epoch, HashMap<usize, HashMap<i32, i64>>)>,
    /// Offsets of the restored checkpoint (the base every manifest merges into).
    base: BTreeMap<i32, i64>,
}

/// The checkpoints of one run, shared by every operator of every worker of the process.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    source: String,
    run: String,
    every: Epoch,
    restored: Option<PathBuf>,
    shared: Arc<Mutex<Shared>>,
}

impl Checkpoints {
    /// Checkpoints of `source` (e.g. the topic) under `state_dir/checkpoints`, every `every`
    /// epochs; finds the newest complete one to restore. The offsets of a checkpoint taken
    /// from another source are not restored (its dedup windows and parks are).
    pub fn open(
        state_dir: &Path,
        source: &str,
        every: Epoch,
        run_start_ms: i64,
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
        let restored = complete.pop();
        let base = match &restored {
            Some(p) => {
                let m = read_manifest(p)?;
                if m.source == source {
                    m.offsets
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
            every: every.max(1),
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

    /// The source offsets of the restored checkpoint.
    pub fn restored_offsets(&self) -> BTreeMap<i32, i64> {
        self.lock().base.clone()
    }

    /// The first checkpoint epoch at or after `e`.
    pub fn next_at_or_after(&self, e: Epoch) -> Epoch {
        e.div_ceil(self.every).max(1) * self.every
    }

    /// The last checkpoint epoch before `limit` (exclusive), if any.
    pub fn last_before(&self, limit: Epoch) -> Option<Epoch> {
        let c = (limit.checked_sub(1)? / self.every) * self.every;
        (c > 0).then_some(c)
    }

    /// Whether `e` is a checkpoint epoch.
    pub fn is_due(&self, e: Epoch) -> bool {
        e == FINAL || (e > 0 && e.is_multiple_of(self.every))
    }

    /// Registers one operator instance that writes a part of every checkpoint. Call while
    /// building the dataflow.
    pub fn register(&self) {
        self.lock().writers += 1;
    }

    /// The directory of checkpoint `e`.
    pub fn dir_of(&self, e: Epoch) -> PathBuf {
        match e {
            FINAL => self.dir.join(format!("{}-final", self.run)),
            e => self.dir.join(format!("{}-{e:012}", self.run)),
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

    /// A source deposits the next offsets it would read as of the end of epoch `e`.
    pub fn deposit_offsets(&self, e: Epoch, worker: usize, offsets: &HashMap<i32, i64>) {
        self.lock()
            .offsets
            .entry(e)
            .or_default()
            .insert(worker, offsets.clone());
    }

    /// Worker 0, once the "done" frontier has passed `before` (`None`: the graph is done):
    /// completes the newest checkpoint before it that has all its parts, and removes older
    /// ones. Returns its epoch when one was completed.
    pub fn complete_before(&self, before: Option<Epoch>) -> io::Result<Option<Epoch>> {
        let (epoch, offsets, merged) = {
            let mut s = self.lock();
            let writers = s.writers;
            let Some(epoch) = s
                .parts
                .iter()
                .rev()
                .find(|&(&e, &n)| before.is_none_or(|b| e < b) && n >= writers)
                .map(|(&e, _)| e)
            else {
                return Ok(None);
            };
            let offsets = s.offsets.get(&epoch).cloned().unwrap_or_default();
            let mut merged = s.base.clone();
            for per_worker in offsets.values() {
                for (&p, &o) in per_worker {
                    let e = merged.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            }
            s.parts = s.parts.split_off(&epoch.saturating_add(1));
            s.offsets = s.offsets.split_off(&epoch.saturating_add(1));
            if epoch == FINAL {
                s.parts.clear();
                s.offsets.clear();
            }
            (epoch, offsets, merged)
        };
        let dir = self.dir_of(epoch);
        std::fs::create_dir_all(&dir)?;
        let body = serde_json::to_vec(&Manifest {
            source: self.source.clone(),
            offsets: merged.clone(),
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
        s.base = merged;
        s.completed = Some((epoch, offsets));
        Ok(Some(epoch))
    }

    /// The newest complete checkpoint and the offsets `worker` deposited for it.
    pub fn completed(&self, worker: usize) -> Option<(Epoch, HashMap<i32, i64>)> {
        let s = self.lock();
        let (e, offsets) = s.completed.as_ref()?;
        Some((*e, offsets.get(&worker).cloned().unwrap_or_default()))
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
    fn newest_complete_cut_wins_and_offsets_merge() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", 10, 1000).unwrap();
        assert!(c.restored().is_none());
        c.register();
        c.register();
        assert_eq!(c.next_at_or_after(0), 10);
        assert_eq!(c.next_at_or_after(10), 10);
        assert_eq!(c.next_at_or_after(11), 20);
        c.deposit_offsets(10, 0, &HashMap::from([(0, 5)]));
        c.deposit_offsets(10, 1, &HashMap::from([(1, 7)]));
        c.part_written(10);
        assert_eq!(
            c.complete_before(Some(20)).unwrap(),
            None,
            "one part missing"
        );
        c.part_written(10);
        assert_eq!(c.complete_before(Some(10)).unwrap(), None, "not done yet");
        assert_eq!(c.complete_before(Some(11)).unwrap(), Some(10));
        assert_eq!(c.completed(1), Some((10, HashMap::from([(1, 7)]))));
        c.deposit_offsets(FINAL, 0, &HashMap::from([(0, 9)]));
        c.part_written(FINAL);
        c.part_written(FINAL);
        assert_eq!(c.complete_before(None).unwrap(), Some(FINAL));
        let again = Checkpoints::open(dir.path(), "t", 10, 2000).unwrap();
        assert_eq!(again.restored(), Some(c.dir_of(FINAL).as_path()));
        assert_eq!(again.restored_offsets(), BTreeMap::from([(0, 9), (1, 7)]));
        let other = Checkpoints::open(dir.path(), "another topic", 10, 3000).unwrap();
        assert!(other.restored().is_some());
        assert!(
            other.restored_offsets().is_empty(),
            "offsets of another topic"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("checkpoints"))
                .unwrap()
                .count(),
            1,
            "older cuts removed"
        );
    }
}
