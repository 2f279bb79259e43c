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
//! On start the newest complete checkpoint that can be read is restored (a damaged one is passed
//! over for the one before it, which every completion keeps): each keyed operator keeps the keys that
//! route to its worker (so the worker count may change), the park store is replaced by the
//! checkpoint's, and the source resumes every partition at its position. Records after the cut
//! are replayed and judged against the state of the cut: at-least-once, and a receiver sent
//! before a crash still dedups its twin.
//!
//! ```text
//! state_dir/checkpoints/1763770200000-000000000010/
//!     content-0.keys  content-1.keys            keyed parts: each key and its values
//!                                               ([`keyed`]; `*.parquet` of older versions)
//!     content-0.delta-00000000000000000010.keys keys worker 0 changed since its last part
//!                                               (full parts and earlier deltas are hard
//!                                               links to the previous cut's: each cut is whole)
//!     frequency-0.keys frequency-1.keys
//!     parked.jsonl                              worker 0's park store (as some cut wrote it)
//!     parked.delta-00000000000000000010.jsonl   its parks and releases since the cut before
//!     _COMPLETE                                 {"offsets": {"0": 1234}, "positions": {...},
//!                                                "parts": {"content-0.keys": 5120, ...}}
//! ```
//!
//! Directory names sort in time order: `<generation>-<epoch>`, and `<generation>-final` for
//! the cut taken when a run ends (graceful stop or end of input); a run's generation is one
//! above every directory there.
//!
//! With a [`Mirror`] (`state_dir = "s3://…"`), every part is also copied to the mirror before
//! it counts as written and the manifest follows every part there; the mirror's newest
//! complete cut is the one restored (fetched into the local directory first) and its
//! directories set the generation, so processes on machines without a shared file system
//! restore the same cut and name their cuts alike (the coordinator refuses processes that
//! restored different ones).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::Epoch;
use crate::event_time::PartitionClock;

mod agree;
pub mod control;
pub mod keyed;

pub use agree::Ctl;
use agree::{Coordinator, Local};
pub use keyed::{merge_keyed, read_keyed, write_keyed};

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
    /// (Always written: the cut protocol's messages carry positions in bincode, which cannot
    /// skip a field.)
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// A file partition's print of the bytes just before `byte` (at most 4 KiB), so a file
    /// that begins as the old one did but is another is read anew too.
    #[serde(default)]
    pub tail: Option<String>,
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
    /// Every part file of the cut and its bytes: a restore finds each there at that length,
    /// or the cut is damaged. (`None`: a manifest written before they were listed.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// One process: messages are delivered at once, under this lock. In a cluster they go
    /// out through [`control::Control`].
    direct: bool,
    /// Worker threads per process (where each process's messages are delivered).
    per_process: usize,
    /// How this process puts event times in epochs (cluster: told to the coordinator).
    grid: String,
    local: Local,
    coord: Coordinator,
    /// Messages of this process to the coordinator, not yet sent (cluster).
    out: Vec<Ctl>,
    /// Positions of the restored checkpoint, then of the newest complete one (the base every
    /// manifest merges into).
    base: BTreeMap<i32, Position>,
    /// This process's halt, to announce to the others (cluster); once announced, `Some("")`.
    halt: Option<String>,
    /// Why another process of the cluster ended early, if one did.
    peer_halt: Option<String>,
    /// With a mirror: the completed cut the local checkpoints older than it were removed for.
    pruned_local: Option<Epoch>,
}

impl Inner {
    /// Sends `m` to the coordinator: at once in one process, else queued for the control
    /// dataflow.
    fn send_up(&mut self, m: Ctl) {
        if self.direct {
            self.coord.handle(m);
            self.deliver_direct();
        } else {
            self.out.push(m);
        }
    }

    /// In one process: the coordinator's messages reach the process at once.
    fn deliver_direct(&mut self) {
        if self.direct {
            for m in std::mem::take(&mut self.coord.out) {
                self.local.apply(m, true);
            }
        }
    }

    fn receive(&mut self, m: Ctl) {
        if let Ctl::Halt { reason } = m {
            self.peer_halt.get_or_insert(reason);
        } else if m.to_coordinator() {
            self.coord.handle(m);
            self.deliver_direct();
        } else if let Some(ack) = self.local.apply(m, self.direct) {
            self.send_up(ack);
        }
    }
}

/// A second home of the checkpoints that processes on other machines share (an object store:
/// `state_dir = "s3://…"`). Every part is copied there before it counts as written, the
/// manifest after every part, and a run restores from there (the newest complete cut is
/// fetched into the local state directory first). Names are `DIR/FILE`, `DIR` the cut's
/// directory name.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// Every object of the checkpoints, as `DIR/FILE`.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Copies the local file `from` to `rel` (whole: it appears complete or not at all).
    fn put(&self, rel: &str, from: &Path) -> io::Result<()>;
    /// Copies `rel` to the local file `to`.
    fn get(&self, rel: &str, to: &Path) -> io::Result<()>;
    /// Deletes `rel` (a missing one is not an error).
    fn delete(&self, rel: &str) -> io::Result<()>;
    /// Copies the mirror's `from` to `to` within the mirror (an object store copies it on its
    /// side: nothing is sent again).
    fn copy(&self, from: &str, to: &str) -> io::Result<()>;
}

/// The checkpoints of one run, shared by every operator of every worker of the process.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    source: String,
    run: String,
    restored: Option<PathBuf>,
    /// Complete cuts newer than the restored one that could not be read: never kept as the
    /// cut to fall back to (they are removed with the other older cuts).
    passed_over: Vec<PathBuf>,
    mirror: Option<Arc<dyn Mirror>>,
    /// Older cuts being deleted from the mirror (on a thread of its own).
    pruning: Arc<Mutex<Pruning>>,
    shared: Arc<Mutex<Inner>>,
}

/// The mirror's pruning thread: whether it runs, and the cut it is to prune up to next.
#[derive(Debug, Default)]
struct Pruning {
    running: bool,
    target: Option<String>,
}

/// The generation (`<run>` part) of a checkpoint directory's name.
fn generation_of(name: &str) -> Option<u64> {
    name.split('-').next().and_then(|g| g.parse::<u64>().ok())
}

/// The local checkpoints: the complete ones, oldest first, and the highest generation.
fn scan_local(dir: &Path) -> io::Result<(Vec<PathBuf>, u64)> {
    let mut complete: Vec<PathBuf> = Vec::new();
    let mut generation = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(g) = generation_of(name) {
            generation = generation.max(g);
        }
        if path.join(MANIFEST).is_file() {
            complete.push(path);
        }
    }
    complete.sort();
    Ok((complete, generation))
}

/// The newest of the complete checkpoints `complete` (oldest first) that can be read, and the
/// newer ones passed over: a cut whose manifest, a keyed part (any block of it, or an older
/// version's Parquet part's footer), a JSON part or a line
/// of the park parts cannot be read (a truncated file, a disk's damage), whose park deltas
/// have no store beside them, or a part its manifest lists is missing or of another length, is
/// passed over with a warning for the cut before it (every
/// completion keeps the cut before it for this), and left as it is: a later start judges it
/// again, so a passing read error demotes nothing for good.
/// Records after the cut restored are read again (sent again where the damaged cut had them
/// sent). When no complete cut can be read, an error says so, at every start: restoring
/// nothing would send everything again.
fn newest_sound(mut complete: Vec<PathBuf>) -> io::Result<(Option<PathBuf>, Vec<PathBuf>)> {
    let mut passed_over = Vec::new();
    let mut damaged = Vec::new();
    while let Some(cut) = complete.pop() {
        let Some(why) = damage(&cut) else {
            return Ok((Some(cut), passed_over));
        };
        tracing::warn!(
            "checkpoint {} cannot be restored ({why}): restoring the one before it, if any",
            cut.display()
        );
        passed_over.push(cut);
        damaged.push(why);
    }
    if damaged.is_empty() {
        return Ok((None, passed_over));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "no complete checkpoint can be restored ({}); `tidings run --from-start` reads \
             the input again from its start",
            damaged.join("; ")
        ),
    ))
}

/// Whether `bytes` are one JSON value.
fn json_value(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Why the checkpoint `dir` cannot be restored, if it cannot: its manifest, a keyed part (read
/// whole: [`keyed::check`]; an older version's Parquet part: its footer and shape) or a JSON
/// part unreadable, or a part its manifest lists missing or of another length.
fn damage(dir: &Path) -> Option<String> {
    let manifest = match read_manifest(dir) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    // Every part the cut wrote, at the length it wrote: a part gone (a delta of a chain
    // lost, a copy that left one behind) would restore the state without it.
    for (file, bytes) in manifest.parts.iter().flatten() {
        let path = dir.join(file);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == *bytes => {}
            Ok(m) => {
                return Some(format!(
                    "{}: {} bytes, where the cut wrote {bytes}",
                    path.display(),
                    m.len()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Some(format!(
                    "{}: listed in {MANIFEST} but not there (removed; or, in a cluster, written \
                     on another machine: its processes need a shared state_dir or an s3:// one)",
                    path.display()
                ));
            }
            Err(e) => return Some(format!("{}: a part of the cut: {e}", path.display())),
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("{}: {e}", dir.display())),
    };
    // Whether the cut has park deltas (which need the whole store beside them).
    let mut parks = false;
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let read = if crate::park::delta_epoch(name).is_some() {
            // Replayed over the park store on restore: a line it cannot take is damage.
            std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    crate::park::Shelf::default()
                        .replay(&b)
                        .map(|()| parks = true)
                })
        } else if name.ends_with(keyed::EXT) || name.ends_with(keyed::PARQUET_EXT) {
            // Its errors name the part.
            if let Err(why) = keyed::check(&path) {
                return Some(why);
            }
            Ok(())
        } else if name.ends_with(".json") {
            std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| json_value(&b))
        } else if name.ends_with(".jsonl") {
            // Written whole and renamed into the cut: a torn line there is damage, not a crash
            // in the middle of a write.
            std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    b.split(|&c| c == b'\n')
                        .filter(|l| !l.is_empty())
                        .try_for_each(json_value)
                })
        } else {
            Ok(())
        };
        if let Err(e) = read {
            return Some(format!("{}: {e}", path.display()));
        }
    }
    if parks && !dir.join(crate::park::PART).is_file() {
        return Some(format!(
            "{}: park changes without the park store ({} is missing)",
            dir.display(),
            crate::park::PART
        ));
    }
    None
}

/// Puts `from` at `to` as a hard link (a copy where links are not possible).
pub(crate) fn link(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(to)?;
            link(from, to)
        }
        Err(_) => {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp)?;
            File::open(&tmp)?.sync_data()?;
            std::fs::rename(&tmp, to)
        }
    }
}

/// The cut a delta part named `<prefix>.delta-<cut><ext>` was written at (`None`: not a delta).
pub(crate) fn delta_epoch(name: &str, ext: &str) -> Option<Epoch> {
    let (_, rest) = name.split_once(".delta-")?;
    rest.strip_suffix(ext)?.parse().ok()
}

/// An I/O error naming the local path it happened at.
fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Copies the local checkpoint `local` to the mirror (the manifest last).
fn upload(local: &Path, mirror: &dyn Mirror) -> io::Result<()> {
    let name = local.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut files: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(local).map_err(at(local))? {
        let file = entry
            .map_err(at(local))?
            .file_name()
            .to_string_lossy()
            .to_string();
        if !file.starts_with('.') && !file.ends_with(".tmp") && file != MANIFEST {
            files.push(file);
        }
    }
    files.push(MANIFEST.to_string());
    for file in files {
        mirror.put(&format!("{name}/{file}"), &local.join(&file))?;
    }
    Ok(())
}

/// The mirror's newest complete checkpoint, fetched into `dir` (the files this machine does not
/// have; the manifest last), and the mirror's highest generation. Every other local checkpoint
/// is removed: only the mirror's count, and a part this machine wrote but never copied there
/// must not be restored. A mirror without any complete checkpoint is first given this
/// machine's newest one, if it has one (a job whose state moves to the store keeps its dedup
/// windows and positions).
fn fetch_newest(
    dir: &Path,
    mirror: &dyn Mirror,
    fresh: bool,
) -> io::Result<(Option<PathBuf>, u64)> {
    let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut generation = 0u64;
    for rel in mirror.list()? {
        let Some((d, f)) = rel.split_once('/') else {
            continue;
        };
        if let Some(g) = generation_of(d) {
            generation = generation.max(g);
        }
        by_dir.entry(d.to_string()).or_default().push(f.to_string());
    }
    let newest = by_dir
        .iter()
        .rev()
        .find(|(_, files)| files.iter().any(|f| f == MANIFEST))
        .filter(|_| !fresh);
    if newest.is_none() && !fresh {
        let (complete, local_generation) = scan_local(dir).map_err(at(dir))?;
        // This machine's newest cut that can be read (a damaged one is not copied there).
        if let (Some(local), _) = newest_sound(complete.clone())? {
            tracing::info!(
                "the checkpoint store has no checkpoint yet: copying this machine's newest, {}, there",
                local.display()
            );
            upload(&local, mirror)?;
            for other in complete.iter().filter(|c| **c != local) {
                remove_path(other).map_err(at(other))?;
            }
            return Ok((Some(local), generation.max(local_generation)));
        }
    }
    if let Some((name, files)) = newest {
        // Every part its manifest lists must be on the store, before anything here is removed
        // for it (this machine's older cut may be the one to go back to).
        let tmp = dir.join(format!(".{MANIFEST}.{}.fetch", std::process::id()));
        mirror.get(&format!("{name}/{MANIFEST}"), &tmp)?;
        let listed = std::fs::read(&tmp).map_err(at(&tmp));
        remove_path(&tmp).map_err(at(&tmp))?;
        let manifest = parse_manifest(
            &listed?,
            &format!("the checkpoint store's {name}/{MANIFEST}"),
        )?;
        if let Some(file) = manifest
            .parts
            .iter()
            .flatten()
            .map(|(f, _)| f)
            .find(|f| !files.contains(f))
        {
            return Err(unrestorable(&format!(
                "{name}/{file} is listed in its {MANIFEST} but not in the store"
            )));
        }
    }
    for entry in std::fs::read_dir(dir).map_err(at(dir))? {
        let path = entry.map_err(at(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if newest.is_none_or(|(d, _)| d != name) && !fetching(name) {
            remove_path(&path).map_err(at(&path))?;
        }
    }
    let Some((name, files)) = newest else {
        return Ok((None, generation));
    };
    let local = dir.join(name);
    std::fs::create_dir_all(&local).map_err(at(&local))?;
    for entry in std::fs::read_dir(&local).map_err(at(&local))? {
        let path = entry.map_err(at(&local))?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !fetching(file) && !files.iter().any(|f| f == file) {
            remove_path(&path).map_err(at(&path))?;
        }
    }
    let manifest_last = files
        .iter()
        .filter(|f| *f != MANIFEST)
        .chain(files.iter().filter(|f| *f == MANIFEST));
    for file in manifest_last {
        let to = local.join(file);
        if to.exists() {
            continue;
        }
        let tmp = local.join(format!(".{file}.{}.fetch", std::process::id()));
        mirror.get(&format!("{name}/{file}"), &tmp)?;
        std::fs::rename(&tmp, &to).map_err(at(&to))?;
    }
    Ok((Some(local), generation))
}

/// Removes a file or a directory with everything in it (gone already is fine).
fn remove_path(path: &Path) -> io::Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Checkpoints {
    /// Checkpoints of `source` (a topic or `file:<path>`) under `state_dir/checkpoints`; finds
    /// the newest complete one to restore. The positions of a checkpoint taken from another
    /// source are not restored (its dedup windows and parks are). With `fresh`, nothing is
    /// restored (a deliberate replay).
    ///
    /// The run's checkpoints are named after a generation one above every directory there,
    /// so every process of a cluster that shares the state directory names them alike.
    pub fn open(state_dir: &Path, source: &str, fresh: bool) -> io::Result<Checkpoints> {
        Checkpoints::open_mirrored(state_dir, source, fresh, None)
    }

    /// [`Checkpoints::open`] with a [`Mirror`]: the checkpoint restored and the generation
    /// come from the mirror (what processes on every machine see alike), not from this
    /// machine's directory.
    pub fn open_mirrored(
        state_dir: &Path,
        source: &str,
        fresh: bool,
        mirror: Option<Arc<dyn Mirror>>,
    ) -> io::Result<Checkpoints> {
        let dir = state_dir.join("checkpoints");
        std::fs::create_dir_all(&dir)?;
        // The directory's own entry durable (a job's first run), as its cuts' are.
        sync_parent(&dir)?;
        let (restored, generation, passed_over) = match &mirror {
            Some(m) => {
                let (restored, generation) = fetch_newest(&dir, m.as_ref(), fresh)?;
                // The store keeps its newest complete cut alone: one that cannot be restored
                // is an error that says so, not a run that restores less than the cut held.
                if let Some(why) = restored.as_deref().and_then(damage) {
                    return Err(unrestorable(&why));
                }
                (restored, generation, Vec::new())
            }
            None => {
                let (complete, generation) = scan_local(&dir)?;
                let (restored, passed_over) = if fresh {
                    (None, Vec::new())
                } else {
                    newest_sound(complete)?
                };
                (restored, generation, passed_over)
            }
        };
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
            run: format!("{:013}", generation + 1),
            restored,
            passed_over,
            mirror,
            pruning: Arc::default(),
            shared: Arc::new(Mutex::new(Inner {
                direct: true,
                per_process: 1,
                coord: Coordinator {
                    processes: 1,
                    hellos: 1,
                    ..Coordinator::default()
                },
                base,
                ..Inner::default()
            })),
        })
    }

    /// Makes this the checkpoints of one process of a cluster of `processes` processes with
    /// `per_process` workers each: the cut protocol then runs over a control dataflow
    /// ([`control::Control`], which every worker builds). Call before building any dataflow.
    pub fn in_cluster(&self, processes: usize, per_process: usize) {
        let mut s = self.lock();
        if processes > 1 {
            s.direct = false;
            s.per_process = per_process.max(1);
            s.coord.processes = processes;
            s.coord.hellos = 0;
        }
    }

    /// Proposes this process's backlog line to the cluster's coordinator (once per process,
    /// before its job's dataflows are built): the one it was given and the one its clock
    /// draws. [`Checkpoints::line`] is then the cluster's.
    pub fn propose_line(&self, process: usize, given: Option<i64>, drawn: i64) {
        self.lock().out.push(Ctl::Propose {
            process,
            given,
            drawn,
        });
    }

    /// The cluster's backlog line once the coordinator told it, or why the processes cannot
    /// agree on one.
    pub fn line(&self) -> Option<Result<i64, String>> {
        self.lock().local.line.clone()
    }

    /// How this process puts event times in epochs (`EventTime::grid`), told to the
    /// coordinator when it registers: a run whose processes' differ is refused.
    pub fn set_grid(&self, grid: String) {
        self.lock().grid = grid;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
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
        let mut s = self.lock();
        if s.direct {
            s.coord.writers += 1;
        } else {
            s.local.writers += 1;
        }
    }

    /// Registers one source instance that deposits positions for every cut. Call while
    /// building the dataflow.
    pub fn register_source(&self) {
        let mut s = self.lock();
        if s.direct {
            s.coord.sources += 1;
        } else {
            s.local.sources += 1;
        }
    }

    /// Asks for a cut (worker 0's driver, every `checkpoint_ms` of wall time). Ignored while
    /// one is being agreed or has not completed yet.
    pub fn request_cut(&self) {
        let mut s = self.lock();
        s.coord.request_cut();
        s.deliver_direct();
    }

    /// Asks for a graceful stop *at a cut*: the sources agree on one more cut `c` (as for any
    /// cut), then hold their capabilities at `c + 1` and read no more. Everything of epochs
    /// `<= c` is judged, sent and tracked; nothing later is (those records are read again by
    /// the next run, from the cut). So a stop decides exactly what the sequential model decides
    /// for the records before the cut, whatever was read past it. Without a source still
    /// reading, the run simply ends at the end of its input.
    pub fn request_stop(&self) {
        self.lock().send_up(Ctl::Stop);
    }

    /// The last cut of a graceful stop, once the sources agreed on it.
    pub fn stop_cut(&self) -> Option<Epoch> {
        self.lock().local.stop_at
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
        let round = s.local.round?;
        if s.local.finished.contains(&worker) {
            return None;
        }
        // A source without records joins at 0: its capability may run ahead, it has no record
        // a cut could miss.
        let held = match s.local.joined.get(&worker) {
            Some(&h) => h,
            None => {
                let held = if reads { cap } else { 0 };
                s.local.joined.insert(worker, held);
                s.send_up(Ctl::Join {
                    round,
                    worker,
                    held,
                });
                held
            }
        };
        (reads && s.local.round == Some(round)).then_some(held)
    }

    /// The cuts agreed before `below` that `worker`'s source has not deposited positions for.
    pub fn cuts_to_deposit(&self, worker: usize, below: Epoch) -> Vec<Epoch> {
        let s = self.lock();
        s.local
            .cuts
            .range(..below)
            .filter(|&&c| !s.local.deposited.contains(&(c, worker)))
            .copied()
            .collect()
    }

    /// A source deposits where it resumes as of cut `e`.
    pub fn deposit(&self, e: Epoch, worker: usize, positions: BTreeMap<i32, Position>) {
        let mut s = self.lock();
        s.local.deposited.insert((e, worker));
        s.send_up(Ctl::Deposit {
            cut: e,
            worker,
            positions,
        });
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
        if !s.local.finished.insert(worker) {
            return;
        }
        s.local.joined.remove(&worker);
        s.send_up(Ctl::Finished {
            worker,
            given_max,
            positions,
        });
    }

    /// The cuts agreed after `after` and before `before`, in order: an operator writes its part
    /// of each before it judges anything past it.
    pub fn cuts_between(&self, after: Option<Epoch>, before: Epoch) -> Vec<Epoch> {
        let s = self.lock();
        let from = after.map_or(0, |a| a.saturating_add(1));
        if from >= before {
            return Vec::new();
        }
        s.local.cuts.range(from..before).copied().collect()
    }

    /// The directory of checkpoint `e`.
    pub fn dir_of(&self, e: Epoch) -> PathBuf {
        match e {
            FINAL => self.dir.join(format!("{}-final", self.run)),
            e => self.dir.join(format!("{}-{e:020}", self.run)),
        }
    }

    /// The path of a part of checkpoint `e` (its directory is created).
    ///
    /// With a mirror, the local checkpoints older than the newest complete one are removed
    /// here (on a process that does not complete cuts, nothing else would).
    pub fn part_path(&self, e: Epoch, part: &str) -> io::Result<PathBuf> {
        let dir = self.dir_of(e);
        // Once per completed cut, not at every part.
        let due = self.mirror.as_ref().and_then(|_| {
            let mut s = self.lock();
            let done = s.local.completed.as_ref().map(|(done, _)| *done)?;
            (s.pruned_local != Some(done)).then(|| {
                s.pruned_local = Some(done);
                done
            })
        });
        if let Some(done) = due {
            self.remove_older(&self.dir_of(done))?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir.join(part))
    }

    /// Copies part `part` of checkpoint `e`, written, to the mirror (if there is one): call
    /// before [`Checkpoints::part_written`].
    pub fn publish(&self, e: Epoch, part: &str) -> io::Result<()> {
        let Some(m) = &self.mirror else {
            return Ok(());
        };
        m.put(&self.mirror_name(e, part), &self.dir_of(e).join(part))
    }

    /// Links the part `files` of the cut in directory `from` into cut `e`'s directory (a
    /// chain of parts carried from one cut to the next), and copies them there on the mirror,
    /// where the cut in `from` published them: a chain's files are sent to the mirror once,
    /// when written, not again at every cut that carries them.
    pub(crate) fn carry(&self, from: &Path, files: &[String], e: Epoch) -> io::Result<()> {
        for f in files {
            link(&from.join(f), &self.part_path(e, f)?)?;
        }
        if let Some(m) = &self.mirror {
            let dir = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
            for f in files {
                m.copy(&format!("{dir}/{f}"), &self.mirror_name(e, f))?;
            }
        }
        Ok(())
    }

    fn mirror_name(&self, e: Epoch, file: &str) -> String {
        let dir = self.dir_of(e);
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        format!("{name}/{file}")
    }

    /// Deletes the mirror's checkpoints older than `epoch`'s, off the worker: one thread at a
    /// time, which goes on to the newest cut completed meanwhile; a pass that fails is a
    /// warning (the next completed cut prunes again). After the final cut the run is ending:
    /// done here, so nothing is left half-deleted.
    fn prune_mirror(&self, m: &Arc<dyn Mirror>, epoch: Epoch) {
        fn pass(m: &dyn Mirror, name: &str) {
            let older = m.list().and_then(|all| {
                all.into_iter()
                    .filter(|rel| rel.as_str() < name)
                    .try_for_each(|rel| m.delete(&rel))
            });
            if let Err(e) = older {
                tracing::warn!("deleting older checkpoints from the store: {e}");
            }
        }
        let name = self.mirror_name(epoch, "");
        if epoch == FINAL {
            return pass(m.as_ref(), &name);
        }
        fn lock(p: &Mutex<Pruning>) -> MutexGuard<'_, Pruning> {
            p.lock().unwrap_or_else(|e| e.into_inner())
        }
        {
            let mut p = lock(&self.pruning);
            p.target = Some(name);
            if p.running {
                return;
            }
            p.running = true;
        }
        let (m, state) = (m.clone(), self.pruning.clone());
        let work = move || {
            loop {
                let next = {
                    let mut p = lock(&state);
                    let next = p.target.take();
                    p.running = next.is_some();
                    next
                };
                match next {
                    Some(name) => pass(m.as_ref(), &name),
                    None => return,
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("checkpoint-prune".into())
            .spawn(work)
        {
            tracing::warn!("deleting older checkpoints from the store: {e}");
            lock(&self.pruning).running = false;
        }
    }

    /// Whether older cuts are being deleted from the mirror now.
    pub fn pruning(&self) -> bool {
        self.pruning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
    }

    /// Removes the local checkpoints that sort before `dir` (older), but the newest complete
    /// one among them: a run restores that one when `dir` cannot be read ([`newest_sound`]).
    fn remove_older(&self, dir: &Path) -> io::Result<()> {
        let mut older = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.as_path() < dir {
                older.push(path);
            }
        }
        older.sort();
        let keep = older
            .iter()
            .rposition(|p| p.join(MANIFEST).is_file() && !self.passed_over.contains(p));
        for (i, path) in older.iter().enumerate() {
            if Some(i) != keep {
                remove_path(path)?;
            }
        }
        Ok(())
    }

    /// Records that a registered writer's part of `e`, the files `files` of its directory, is
    /// durably on disk (and on the mirror). Their bytes go into the cut's manifest.
    pub fn part_written(&self, e: Epoch, files: &[String]) -> io::Result<()> {
        let dir = self.dir_of(e);
        let files = files
            .iter()
            .map(|f| {
                let path = dir.join(f);
                Ok((
                    f.clone(),
                    std::fs::metadata(&path).map_err(at(&path))?.len(),
                ))
            })
            .collect::<io::Result<_>>()?;
        self.lock().send_up(Ctl::Part { cut: e, files });
        Ok(())
    }

    /// The part files (and bytes) reported for cut `e` so far, as its manifest would list them.
    #[cfg(test)]
    pub(crate) fn reported_parts(&self, e: Epoch) -> BTreeMap<String, u64> {
        self.lock().coord.files.get(&e).cloned().unwrap_or_default()
    }

    /// Worker 0, once the "done" frontier has passed `before` (`None`: the graph is done):
    /// completes the newest cut before it that has all its parts and positions, and removes
    /// older ones. Returns its epoch when one was completed.
    pub fn complete_before(&self, before: Option<Epoch>) -> io::Result<Option<Epoch>> {
        let (epoch, merged, parts) = {
            let mut s = self.lock();
            if let Some(why) = &s.coord.mismatch {
                return Err(io::Error::other(why.clone()));
            }
            let Some(epoch) = s.coord.completable(before) else {
                return Ok(None);
            };
            let base = std::mem::take(&mut s.base);
            let (merged, parts) = s.coord.take_cut(epoch, &base);
            s.base = base;
            (epoch, merged, parts)
        };
        let dir = self.dir_of(epoch);
        std::fs::create_dir_all(&dir)?;
        let offsets: BTreeMap<i32, i64> = merged.iter().map(|(&p, pos)| (p, pos.offset)).collect();
        let body = serde_json::to_vec(&Manifest {
            source: self.source.clone(),
            offsets: offsets.clone(),
            positions: merged.clone(),
            parts: Some(parts),
        })
        .map_err(io::Error::other)?;
        write_durably(&dir.join(MANIFEST), &body)?;
        // The cut's own directory entry durable before any older cut is deleted: after a power
        // loss there is always a complete cut to restore.
        sync_dir(&self.dir)?;
        if let Some(m) = &self.mirror {
            // The mirror's manifest is the one that counts: every part is there already.
            m.put(&self.mirror_name(epoch, MANIFEST), &dir.join(MANIFEST))?;
            self.prune_mirror(m, epoch);
        }
        // Everything older is superseded (complete or not), but the newest complete cut before
        // this one, kept to restore if this one cannot be read.
        self.remove_older(&dir)?;
        let mut s = self.lock();
        s.base = merged;
        s.coord.out.push(Ctl::Completed { epoch, offsets });
        s.deliver_direct();
        Ok(Some(epoch))
    }

    /// The newest complete checkpoint and its commit offsets (every partition's).
    pub fn completed(&self) -> Option<(Epoch, BTreeMap<i32, i64>)> {
        self.lock().local.completed.clone()
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

    /// A worker built its dataflows: once every worker of the process has, the process's
    /// registrations go to the coordinator, which asks for no cut before every process's
    /// have arrived (cluster; nothing to do in one process).
    pub fn built(&self, workers_built: usize) {
        let mut s = self.lock();
        if s.direct || workers_built < s.per_process {
            return;
        }
        let (writers, sources) = (s.local.writers, s.local.sources);
        let restored = self
            .restored
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let grid = s.grid.clone();
        s.out.push(Ctl::Register {
            writers,
            sources,
            restored,
            grid,
        });
        s.out.push(Ctl::Hello);
    }

    /// The messages to send now, each with the worker it goes to: the coordinator's to the
    /// first worker of every process, the process's to worker 0.
    pub fn outgoing(&self, processes: usize) -> Vec<(usize, Ctl)> {
        let mut s = self.lock();
        let per = s.per_process;
        let mut out: Vec<(usize, Ctl)> = s.out.drain(..).map(|m| (0, m)).collect();
        for m in std::mem::take(&mut s.coord.out) {
            out.extend((0..processes).map(|p| (p * per, m.clone())));
        }
        out
    }

    /// The halt this process announces, once, to every process's first worker (any worker
    /// may send it: the one that sends the process's other messages may be gone).
    pub fn take_halt(&self, processes: usize) -> Vec<(usize, Ctl)> {
        let mut s = self.lock();
        let per = s.per_process;
        match s.halt.as_mut().filter(|r| !r.is_empty()) {
            Some(reason) => {
                let m = Ctl::Halt {
                    reason: std::mem::take(reason),
                };
                (0..processes).map(|p| (p * per, m.clone())).collect()
            }
            None => Vec::new(),
        }
    }

    /// This process ends before its graph drained, because of `reason`: the other processes
    /// of the cluster are told (by the next [`Checkpoints::take_halt`]), once. A process
    /// halted by another's announcement says nothing more (the others were told).
    pub fn announce_halt(&self, reason: &str) {
        let mut s = self.lock();
        if s.halt.is_none() && !s.direct && s.peer_halt.is_none() {
            s.halt = Some(reason.to_string());
        }
    }

    /// Why another process of the cluster ended before its graph drained, if one did.
    pub fn peer_halted(&self) -> Option<String> {
        self.lock().peer_halt.clone()
    }

    /// What the coordinator is waiting for (for the error of a cut that does not complete).
    pub fn waiting_for(&self) -> String {
        let s = self.lock();
        let c = &s.coord;
        format!(
            "{} of {} processes ready, {} writers, {} sources ({} finished), parts {:?}, positions {:?}",
            c.hellos,
            c.processes,
            c.writers,
            c.sources,
            c.finished.len(),
            c.parts,
            c.positions
                .iter()
                .map(|(e, p)| (*e, p.len()))
                .collect::<Vec<_>>()
        )
    }

    /// A message that arrived through the control dataflow.
    pub fn receive(&self, m: Ctl) {
        self.lock().receive(m);
    }
}

fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    let path = dir.join(MANIFEST);
    parse_manifest(&std::fs::read(&path)?, &path.display().to_string())
}

/// A manifest's bytes read, `what` naming it in the error.
fn parse_manifest(bytes: &[u8], what: &str) -> io::Result<Manifest> {
    serde_json::from_slice(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}")))
}

/// The error of a start whose store's newest checkpoint cannot be restored, and why.
fn unrestorable(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the checkpoint store's newest checkpoint cannot be restored ({why}); \
             `tidings run --from-start` reads the input again from its start"
        ),
    )
}

/// Writes `bytes` to `path` atomically and durably: aside, fsynced, renamed, and the rename
/// itself made durable (the directory fsynced).
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically(path, bytes, true)
}

/// A file another process of this machine is fetching from the checkpoint store into the
/// same directory (`.NAME.PID.fetch`): a cleanup leaves it (the processes of a cluster on one
/// machine share the local state directory).
fn fetching(file: &str) -> bool {
    file.starts_with('.') && file.ends_with(".fetch")
}

/// Writes `bytes` to `path` atomically (aside, then renamed); with `sync`, durably too
/// ([`write_durably`]).
pub fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        sync_parent(path)?;
    }
    Ok(())
}

/// Makes the entries of `path`'s directory durable (a rename or a hard link into it): without
/// this, a power loss may keep a later change (an older cut deleted) and lose the entry (a
/// cut's manifest or part), on a file system that does not keep metadata changes in order.
/// About 0.15 ms here (bench/MEASURED.md, "Durable directory entries").
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory (its entries). A file system that cannot fsync a directory at all (some
/// FUSE and network mounts answer EINVAL or ENOTSUP, as PostgreSQL's `fsync_fname` also
/// allows) is not an error: there is nothing more to make durable there.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) || e.raw_os_error() == Some(9) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::DirMirror;

    /// Cluster mode sends the cut protocol's messages with timely's serialisation (bincode, not
    /// self-describing): every message comes back as sent, positions of Kafka partitions (no
    /// fingerprint) and of files alike.
    #[test]
    fn control_messages_survive_timelys_serialisation() {
        let kafka = Position {
            offset: 12,
            read_to: 15,
            after: vec![13],
            ..Position::default()
        };
        let file = Position {
            fingerprint: Some("abc".into()),
            tail: Some("def".into()),
            ..kafka.clone()
        };
        let messages = vec![
            Ctl::Register {
                writers: 3,
                sources: 1,
                restored: "0000000000002-final".into(),
                grid: "10 ms epochs".into(),
            },
            Ctl::Hello,
            Ctl::Propose {
                process: 1,
                given: None,
                drawn: 1_763_776_740_000,
            },
            Ctl::Line {
                before: Ok(1_763_776_740_000),
            },
            Ctl::Line {
                before: Err("given different lines".into()),
            },
            Ctl::Join {
                round: 1,
                worker: 2,
                held: 7,
            },
            Ctl::Deposit {
                cut: 7,
                worker: 2,
                positions: BTreeMap::from([(0, kafka.clone()), (1, file.clone())]),
            },
            Ctl::Finished {
                worker: 1,
                given_max: 9,
                positions: BTreeMap::from([(3, kafka)]),
            },
            Ctl::Part {
                cut: FINAL,
                files: vec![("content-0.delta-00000000000000000010.keys".into(), 1 << 40)],
            },
            Ctl::Stop,
            Ctl::Request { round: 2 },
            Ctl::Agreed {
                round: 2,
                cut: Some(8),
                stop: true,
            },
            Ctl::Ended,
            Ctl::Completed {
                epoch: 8,
                offsets: BTreeMap::from([(0, 12)]),
            },
            Ctl::Halt {
                reason: "stopped at once by a second signal (SIGINT)".into(),
            },
        ];
        for m in messages {
            let bytes = bincode::serialize(&(4usize, m.clone())).unwrap();
            let back: (usize, Ctl) = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, (4, m));
        }
    }

    /// A partition read up to offset `o`, all of it in the cut.
    fn pos(o: i64) -> Position {
        Position {
            offset: o,
            read_to: o,
            ..Position::default()
        }
    }

    #[test]
    fn sources_agree_on_a_cut_and_the_newest_complete_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
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
        c.deposit(12, 0, BTreeMap::from([(0, pos(5))]));
        c.part_written(12, &[]).unwrap();
        c.part_written(12, &[]).unwrap();
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
        c.part_written(FINAL, &[]).unwrap();
        c.part_written(FINAL, &[]).unwrap();
        assert_eq!(c.complete_before(None).unwrap(), Some(FINAL));
        let again = Checkpoints::open(dir.path(), "t", false).unwrap();
        assert_eq!(again.restored(), Some(c.dir_of(FINAL).as_path()));
        assert_eq!(again.restored_offsets(), BTreeMap::from([(0, 9), (1, 7)]));
        let other = Checkpoints::open(dir.path(), "another topic", false).unwrap();
        assert!(other.restored().is_some());
        assert!(
            other.restored_offsets().is_empty(),
            "offsets of another topic"
        );
        let fresh = Checkpoints::open(dir.path(), "t", true).unwrap();
        assert!(fresh.restored().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("checkpoints"))
                .unwrap()
                .count(),
            2,
            "older cuts removed, but the newest complete one before the last"
        );
    }

    #[test]
    fn a_damaged_cut_is_passed_over_for_the_one_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
        c.register_source();
        c.register();
        // Three cuts, each with a keyed part: the oldest is removed, the one before the newest
        // kept.
        for (cut, offset) in [(5, 2), (12, 5), (20, 9)] {
            one_cut(&c, cut, offset);
        }
        let cuts = || {
            let mut names: Vec<_> = std::fs::read_dir(dir.path().join("checkpoints"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            names
        };
        assert_eq!(cuts(), vec![c.dir_of(12), c.dir_of(20)]);
        let open = || Checkpoints::open(dir.path(), "t", false);
        assert_eq!(open().unwrap().restored(), Some(c.dir_of(20).as_path()));
        // The newest cut's part cut short (its footer lost): the cut before it is restored,
        // with its own positions, at this start and the next (the damaged cut is left as it
        // is, judged again each time).
        let part = c.dir_of(20).join("content-0.keys");
        let bytes = std::fs::read(&part).unwrap();
        std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
        for _ in 0..2 {
            let again = open().unwrap();
            assert_eq!(again.restored(), Some(c.dir_of(12).as_path()));
            assert_eq!(again.restored_offsets(), BTreeMap::from([(0, 5)]));
        }
        // The run that restored 12 completes a cut: it keeps 12 to fall back to, not the
        // damaged 20, which goes with the other older cuts.
        let again = open().unwrap();
        again.register_source();
        again.register();
        one_cut(&again, 30, 11);
        assert_eq!(cuts(), vec![c.dir_of(12), again.dir_of(30)]);
        std::fs::remove_dir_all(again.dir_of(30)).unwrap();
        // A torn line in the park store's part is damage too; every complete cut damaged: an
        // error that says so, at every start, not a run that restores nothing.
        std::fs::write(c.dir_of(12).join("parked.jsonl"), b"{\"a\": 1}\n{\"b\"").unwrap();
        for _ in 0..2 {
            let Err(err) = open() else {
                panic!("no cut can be restored")
            };
            assert!(
                err.to_string()
                    .contains("no complete checkpoint can be restored"),
                "{err}"
            );
            assert!(err.to_string().contains("parked.jsonl"), "{err}");
            assert!(err.to_string().contains("--from-start"), "{err}");
        }
        // A deliberate replay restores nothing and is not stopped by the damage.
        assert!(
            Checkpoints::open(dir.path(), "t", true)
                .unwrap()
                .restored()
                .is_none()
        );
    }

    /// The manifest lists every part file of the cut and its bytes: a part gone or of another
    /// length makes the cut damaged (the one before is restored), where it would have restored
    /// the state without it; on a mirror, a start that says so.
    #[test]
    fn a_part_the_manifest_lists_is_there_at_its_length_or_the_cut_is_damaged() {
        let (dir, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mirror = Arc::new(DirMirror::new(shared.path()));
        let c = Checkpoints::open_mirrored(dir.path(), "t", false, Some(mirror.clone())).unwrap();
        c.register_source();
        c.register();
        one_cut(&c, 5, 2);
        one_cut(&c, 12, 5);
        wait_pruned(&c);
        let part = c.dir_of(12).join("content-0.keys");
        let len = std::fs::metadata(&part).unwrap().len();
        let manifest = read_manifest(&c.dir_of(12)).unwrap();
        assert_eq!(
            manifest.parts,
            Some(BTreeMap::from([("content-0.keys".to_string(), len)]))
        );
        assert_eq!(damage(&c.dir_of(12)), None);
        // On the mirror: a part gone from the store's newest cut fails the start with one line.
        let on_mirror = shared
            .path()
            .join(c.dir_of(12).file_name().unwrap())
            .join("content-0.keys");
        std::fs::remove_file(&on_mirror).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        for machine in [elsewhere.path(), dir.path()] {
            let Err(err) = Checkpoints::open_mirrored(machine, "t", false, Some(mirror.clone()))
            else {
                panic!("a cut with a part gone restored")
            };
            let said = err.to_string();
            assert!(said.contains("content-0.keys"), "{said}");
            assert!(said.contains("--from-start"), "{said}");
            assert!(!said.contains('\n'), "{said}");
        }
        // Nothing of this machine's was removed for it.
        assert!(c.dir_of(5).join(MANIFEST).is_file());
        // The same part on the store at another length: fetched, then judged damaged.
        std::fs::write(&on_mirror, b"PAR1").unwrap();
        let Err(err) =
            Checkpoints::open_mirrored(elsewhere.path(), "t", false, Some(mirror.clone()))
        else {
            panic!("a cut with a part of another length restored")
        };
        assert!(err.to_string().contains("where the cut wrote"), "{err}");
        // Locally: the part of another length, or gone: the cut before is restored.
        let open = || Checkpoints::open(dir.path(), "t", false).unwrap();
        write_keyed(&part, [(1u128, vec![1i64, 2, 3])].into_iter()).unwrap();
        assert_ne!(std::fs::metadata(&part).unwrap().len(), len);
        assert!(
            damage(&c.dir_of(12))
                .unwrap()
                .contains("where the cut wrote")
        );
        assert_eq!(open().restored(), Some(c.dir_of(5).as_path()));
        std::fs::remove_file(&part).unwrap();
        assert!(
            damage(&c.dir_of(12))
                .unwrap()
                .contains("listed in _COMPLETE but not there")
        );
        assert_eq!(open().restored(), Some(c.dir_of(5).as_path()));
        assert_eq!(open().restored_offsets(), BTreeMap::from([(0, 2)]));
        // A manifest written before parts were listed is trusted as before.
        let mut old = manifest;
        old.parts = None;
        std::fs::write(
            c.dir_of(12).join(MANIFEST),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        assert_eq!(open().restored(), Some(c.dir_of(12).as_path()));
    }

    /// A park delta is replayed over the park store on restore: a line that is JSON but neither
    /// a park nor a release, or deltas without the store beside them, are damage (the cut
    /// before is restored), not a start that fails.
    #[test]
    fn a_park_delta_that_cannot_be_replayed_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
        c.register_source();
        c.register();
        for (cut, offset) in [(5, 2), (12, 5)] {
            one_cut(&c, cut, offset);
        }
        let open = || Checkpoints::open(dir.path(), "t", false).unwrap();
        let delta = c.dir_of(12).join("parked.delta-00000000000000000012.jsonl");
        // Sound: a release over the store beside it.
        std::fs::write(c.dir_of(12).join("parked.jsonl"), b"").unwrap();
        std::fs::write(&delta, b"{\"released_through\":7}\n").unwrap();
        assert_eq!(open().restored(), Some(c.dir_of(12).as_path()));
        std::fs::write(&delta, b"{\"released_through\":7}\n{\"a\":1}\n").unwrap();
        assert_eq!(open().restored(), Some(c.dir_of(5).as_path()));
        std::fs::write(&delta, b"{\"released_through\":7}\n").unwrap();
        std::fs::remove_file(c.dir_of(12).join("parked.jsonl")).unwrap();
        assert_eq!(open().restored(), Some(c.dir_of(5).as_path()));
    }

    #[test]
    fn a_stop_agrees_one_more_cut_even_with_one_pending() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
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
        let d = Checkpoints::open(dir.path(), "t", false).unwrap();
        d.register_source();
        d.source_finished(0, 2, |_| BTreeMap::new());
        d.request_stop();
        assert_eq!(d.source_turn(0, 9, true), None);
        assert_eq!(d.stop_cut(), None);
    }

    #[test]
    fn a_finished_source_does_not_hold_an_agreement() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
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
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
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
        assert_eq!(s.coord.positions[&6][&2][&2].offset, 6);
        assert_eq!(s.coord.finished[&2][&2].offset, 10);
    }

    /// Waits for the mirror's pruning thread to end.
    fn wait_pruned(c: &Checkpoints) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.pruning() {
            assert!(std::time::Instant::now() < deadline, "pruning did not end");
            std::thread::yield_now();
        }
    }

    /// One cut by one source and one writer, completed.
    fn one_cut(c: &Checkpoints, epoch: Epoch, offset: i64) {
        c.request_cut();
        assert_eq!(c.source_turn(0, epoch, true), None);
        let path = c.part_path(epoch, "content-0.keys").unwrap();
        write_keyed(&path, [(offset as u128, vec![offset])].into_iter()).unwrap();
        c.publish(epoch, "content-0.keys").unwrap();
        c.part_written(epoch, &["content-0.keys".into()]).unwrap();
        c.deposit(epoch, 0, BTreeMap::from([(0, pos(offset))]));
        assert_eq!(c.complete_before(Some(epoch + 1)).unwrap(), Some(epoch));
    }

    #[test]
    fn a_mirrored_checkpoint_is_restored_on_another_machine_and_only_the_mirror_counts() {
        let (a, b, shared) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let mirror =
            || -> Option<Arc<dyn Mirror>> { Some(Arc::new(DirMirror::new(shared.path()))) };
        let c = Checkpoints::open_mirrored(a.path(), "t", false, mirror()).unwrap();
        c.register();
        c.register_source();
        one_cut(&c, 5, 50);
        one_cut(&c, 9, 90);
        wait_pruned(&c);
        let names = DirMirror::new(shared.path()).list().unwrap();
        assert_eq!(names.len(), 2, "the older cut left the mirror: {names:?}");
        // Machine B, with a stale cut of its own that never reached the mirror.
        let stale = b
            .path()
            .join("checkpoints/0000000000007-00000000000000000003");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(MANIFEST), b"{\"offsets\":{}}").unwrap();
        let on_b = Checkpoints::open_mirrored(b.path(), "t", false, mirror()).unwrap();
        let restored = on_b
            .restored()
            .expect("restored from the mirror")
            .to_path_buf();
        assert!(restored.starts_with(b.path()), "{}", restored.display());
        assert_eq!(on_b.restored_offsets(), BTreeMap::from([(0, 90)]));
        let mut keys = Vec::new();
        for part in on_b.restored_parts("content-").unwrap() {
            read_keyed(&part, |_| true, |k, _| keys.push(k)).unwrap();
        }
        assert_eq!(keys, vec![90]);
        assert!(
            !stale.exists(),
            "a local cut the mirror does not have is not kept"
        );
        // Both machines name the next run's cuts alike: after the mirror's generation.
        assert_eq!(on_b.run, "0000000000002");
        let again_on_a = Checkpoints::open_mirrored(a.path(), "t", false, mirror()).unwrap();
        assert_eq!(again_on_a.run, on_b.run);
        let fresh = Checkpoints::open_mirrored(b.path(), "t", true, mirror()).unwrap();
        assert!(fresh.restored().is_none());
    }

    #[test]
    fn a_job_moving_its_state_to_a_mirror_brings_its_newest_checkpoint() {
        let (a, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let c = Checkpoints::open(a.path(), "t", false).unwrap();
        c.register();
        c.register_source();
        one_cut(&c, 4, 40);
        // A newer cut whose part is damaged is not the one brought: the newest readable is.
        one_cut(&c, 8, 80);
        std::fs::write(c.dir_of(8).join("content-0.keys"), b"PAR1").unwrap();
        let mirror: Arc<dyn Mirror> = Arc::new(DirMirror::new(shared.path()));
        let moved = Checkpoints::open_mirrored(a.path(), "t", false, Some(mirror.clone())).unwrap();
        assert_eq!(moved.restored_offsets(), BTreeMap::from([(0, 40)]));
        let mut names = mirror.list().unwrap();
        names.sort();
        assert_eq!(
            names,
            vec![
                "0000000000001-00000000000000000004/_COMPLETE".to_string(),
                "0000000000001-00000000000000000004/content-0.keys".to_string(),
            ]
        );
        assert_eq!(moved.run, "0000000000002");
    }
}
