//! Steps 7–8: content and frequency dedup, as windowed keyed state inside the dataflow.
//!
//! Both rules share one operator, [`DedupBy::dedup_by`]: deliveries are exchanged by the rule's key hash
//! (xxh3, the same on every worker), buffered per epoch until both inputs have passed it, then
//! judged in [`tidings_model::Delivery::order`]. Before judging epoch `e` the state is evicted
//! up to the global watermark `W(e-1)` less the allowed lateness; the wall clock is never read.
//!
//! A cut's part is made durable off the worker thread and is incremental: the worker notes the keys
//! it changes (passes judged, keys an eviction changed or dropped), and at a cut flattens the
//! state of just those keys ([`Flat`]; a key gone has no values, a tombstone) — the whole state
//! only on the first cut of a run that restored a state — and hands it to the rule's writer
//! thread; a cut of more than [`LARGE`] noted keys it encodes into the part's file itself, a
//! chunk at a time ([`encode`]), and hands the thread the file to finish. The thread keeps a
//! chain per cut directory (the full part, sorted by key, and the deltas since, linked from
//! the previous cut), compacts it into a new full part now and then (a streaming merge,
//! [`merge_keyed`]), makes each part durable
//! and only then reports the part written — the cut completes, and offsets are committed, only
//! after that. The final cut (the end of input; a stop ends at an ordinary cut) adds the keys
//! changed since the last cut to the chain too, never compacting, and the worker waits for the
//! writer to finish; a run with no chain to add to (it restored a state and its first cut is
//! its final one, or more keys changed than it holds and at least 65,536) writes its final
//! part whole, on the worker.
//! A write that fails fails the job on the worker's next turn, with the error.
//!
//! ```ignore
//! let content = passes.dedup_by(ContentDedup::new(..), &admitted.marks, clock, None, None);
//! let frequency = content.pass.dedup_by(FrequencyDedup::new(..), &admitted.marks, clock, None, None);
//! // content.rows, frequency.rows: the rejected receivers' rows, for tracking
//! ```

mod content;
mod frequency;
pub mod sharded;

pub use content::ContentDedup;
pub use frequency::FrequencyDedup;

use std::collections::BTreeMap;

use crate::container::Trimming;
use tidings_model::time::Millis;
use tidings_model::{Delivery, EventRow, State, ids};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::frontier::MutableAntichain;

use crate::checkpoint::{Checkpoints, FINAL, keyed, merge_keyed, read_keyed, write_keyed};
use crate::live::{self, Answer, Ask, Live, Question, RuleSummary};
use crate::watermark::Watermark;
use crate::{Clock, Epoch, Mark, Tracked};

/// A keyed rule: a plain state machine over deliveries of one key.
pub trait KeyedRule: 'static {
    /// The operator's name.
    const NAME: &'static str;
    /// The key a delivery is judged under.
    fn key(d: &Delivery) -> u128;
    /// Judges a delivery: `Ok` to pass (the admission is recorded), or the rejecting state and
    /// reason.
    fn judge(&mut self, key: u128, d: &Delivery) -> Result<(), (State, String)>;
    /// Drops state that no delivery within the allowed lateness of `watermark` can see.
    fn evict(&mut self, watermark: Millis) {
        self.evict_noting(watermark, None);
    }
    /// [`KeyedRule::evict`], noting in `changed` every key whose state it changed or dropped
    /// (what the next incremental checkpoint part writes).
    fn evict_noting(&mut self, watermark: Millis, changed: Option<&mut Vec<u128>>);
    /// Number of keys held.
    fn keys(&self) -> usize;
    /// The file name prefix of this rule's checkpoint parts.
    const PART: &'static str;
    /// Every key's state as integers, for a checkpoint.
    fn snapshot(&self) -> Box<dyn Iterator<Item = (u128, Vec<i64>)> + '_>;
    /// The same as [`KeyedRule::snapshot`], into one flat buffer (what the worker hands its
    /// checkpoint writer thread: no allocation per key).
    fn flatten(&self, into: &mut Flat) {
        for (k, v) in self.snapshot() {
            into.push(k, &v);
        }
    }
    /// The state of each of `keys` (sorted, distinct), in that order, as
    /// [`KeyedRule::flatten`] writes it; a key not held gets no values (a tombstone:
    /// restoring it forgets the key).
    fn flatten_keys(&self, keys: &[u128], into: &mut Flat);
    /// Restores one key written by [`KeyedRule::snapshot`]; no values forgets the key.
    fn restore(&mut self, key: u128, values: &[i64]);
    /// The state of one key for the live-state API; with `at`, whether a delivery of that
    /// event time would pass now (judged as [`KeyedRule::judge`] would, without recording).
    fn inspect(&self, key: u128, at: Option<Millis>) -> serde_json::Value;
    /// Sizes of the state held.
    fn summary(&self) -> RuleSummary;
}

/// Answers the questions waiting in `questions` from `rule`'s state.
fn answer<R: KeyedRule>(
    rule: &R,
    questions: &std::sync::mpsc::Receiver<Question>,
    watermark: Option<Millis>,
) {
    while let Ok((ask, reply)) = questions.try_recv() {
        let answer = match ask {
            Ask::Key { key, at } => {
                let mut v = rule.inspect(key, at);
                if let Some(o) = v.as_object_mut() {
                    o.insert("key".into(), format!("{key:032x}").into());
                    o.insert("watermark".into(), watermark.map(live::iso).into());
                }
                Answer::Key(v)
            }
            Ask::Summary => Answer::Summary(RuleSummary {
                watermark,
                ..rule.summary()
            }),
        };
        let _ = reply.send(answer);
    }
}

/// A keyed state as one checkpoint part holds it: every key with its values, in three flat
/// buffers. The worker fills one at a cut (a pass over its tables, no allocation per key) and
/// hands it to its writer thread, which encodes and writes it.
#[derive(Debug, Default)]
pub struct Flat {
    keys: Vec<u128>,
    ends: Vec<usize>,
    values: Vec<i64>,
}

impl Flat {
    /// Room for `keys` more keys and `values` more values.
    pub fn reserve(&mut self, keys: usize, values: usize) {
        self.keys.reserve(keys);
        self.ends.reserve(keys);
        self.values.reserve(values);
    }

    /// Empties it, keeping its memory (the writer gives its buffers back for the next cut:
    /// memory already paged in).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.ends.clear();
        self.values.clear();
    }

    /// Adds one key and its values.
    pub fn push(&mut self, key: u128, values: &[i64]) {
        self.keys.push(key);
        self.values.extend_from_slice(values);
        self.ends.push(self.values.len());
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes its buffers take (their room, not only what they hold).
    pub fn bytes(&self) -> usize {
        self.keys.capacity() * size_of::<u128>()
            + self.ends.capacity() * size_of::<usize>()
            + self.values.capacity() * size_of::<i64>()
    }

    /// The values of the `i`th key pushed.
    fn values_of(&self, i: usize) -> &[i64] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.values[start..self.ends[i]]
    }

    /// Every key and its values, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &[i64])> + '_ {
        (0..self.keys.len()).map(|i| (self.keys[i], self.values_of(i)))
    }

    /// Every key and its values, in key order (keys pushed once each).
    pub fn sorted(&self) -> impl Iterator<Item = (u128, &[i64])> + '_ {
        let mut order: Vec<u32> = (0..self.keys.len() as u32).collect();
        order.sort_unstable_by_key(|&i| self.keys[i as usize]);
        order.into_iter().map(|i| {
            let i = i as usize;
            (self.keys[i], self.values_of(i))
        })
    }
}

/// A full part of this rule's state, as written by worker `index`.
fn full_name<R: KeyedRule>(index: usize) -> String {
    format!("{}-{index}{}", R::PART, keyed::EXT)
}

/// The keys worker `index` changed up to cut `epoch` since its previous part.
fn delta_name<R: KeyedRule>(index: usize, epoch: Epoch) -> String {
    format!("{}-{index}.delta-{epoch:020}{}", R::PART, keyed::EXT)
}

/// The cut a delta part was written at (`None`: a full part), of this version's format or an
/// older version's (Parquet).
fn delta_epoch(path: &std::path::Path) -> Option<Epoch> {
    let name = path.file_name()?.to_str()?;
    [keyed::EXT, keyed::PARQUET_EXT]
        .into_iter()
        .find_map(|ext| crate::checkpoint::delta_epoch(name, ext))
}

/// Writes a rule's full part of checkpoint `epoch` durably (and to the mirror), on the worker;
/// `Err` says why not.
fn write_part<R: KeyedRule>(
    flat: &Flat,
    c: &Checkpoints,
    epoch: Epoch,
    index: usize,
) -> Result<(), String> {
    let part = full_name::<R>(index);
    c.part_path(epoch, &part)
        .and_then(|path| write_keyed(&path, flat.iter()))
        .and_then(|()| c.publish(epoch, &part))
        .and_then(|()| c.part_written(epoch, &[part]))
        .map_err(|e| format!("{} checkpoint: {e}", R::NAME))
}

/// Writes `rule`'s part of checkpoint `epoch` and reports it written: on the writer thread
/// (the keys changed since the last cut, or the whole state on the first cut of a run that
/// restored one; more than [`LARGE`] changed keys encoded into the file here first), or here,
/// whole, when there is no writer thread. The final cut goes to the writer thread too when it
/// has a chain to add to or noted every key (only the keys changed since the last cut are
/// written: a run ends in a time that depends on what changed, not on the keys held), and the
/// worker then waits for every part to be written; otherwise (a run that restored a state and
/// whose first cut is its final one, or more keys changed than it holds and at least 65,536)
/// the final part is written whole, here.
fn checkpoint<R: KeyedRule>(
    rule: &R,
    c: &Checkpoints,
    epoch: Epoch,
    index: usize,
    w: &mut Writer<R>,
) {
    let mut flat = w.buffer();
    if w.tx.is_some() && (epoch != FINAL || w.dirty.is_some()) {
        // Noted keys make a full part when no full part has been handed yet (a run that
        // started with no state: every key it holds was noted).
        let full = !w.chained;
        let part = match w.dirty.as_mut() {
            Some(keys) => {
                keys.sort_unstable();
                keys.dedup();
                let held = (!full).then(|| rule.keys());
                let part = if keys.len() > LARGE {
                    let name = match held {
                        Some(_) => delta_name::<R>(index, epoch),
                        None => full_name::<R>(index),
                    };
                    // The cut's directory made here (`part_path` would also prune older cuts
                    // on the worker; the writer thread does that).
                    let dir = c.dir_of(epoch);
                    let encoded = std::fs::create_dir_all(&dir)
                        .and_then(|()| encode(rule, keys, &mut flat, &dir.join(&name)))
                        .unwrap_or_else(|e| panic!("{} checkpoint: {e}", R::NAME));
                    w.kept = Some(flat);
                    Part::Encoded(encoded, held)
                } else {
                    rule.flatten_keys(keys, &mut flat);
                    match held {
                        Some(held) => Part::Delta(flat, held),
                        None => Part::Full(flat),
                    }
                };
                keys.clear();
                // A burst's list is not kept at rest (it grows again by doubling).
                keys.shrink_to(LARGE);
                part
            }
            None => {
                rule.flatten(&mut flat);
                w.dirty = Some(Vec::new());
                Part::Full(flat)
            }
        };
        w.chained = true;
        w.hand(epoch, part);
        if epoch == FINAL {
            w.finish();
        }
        return;
    }
    rule.flatten(&mut flat);
    w.finish();
    if let Err(e) = write_part::<R>(&flat, c, epoch, index) {
        panic!("{e}");
    }
}

/// Encodes the state of `keys` (sorted, distinct) into the keyed part at `path` on the worker,
/// [`CHUNK`] keys at a time through `flat`: a large part's keys are read from the tables
/// straight into its file's blocks, never all copied at once (bench/MEASURED.md "A large
/// cut encoded on the worker"). The writer thread makes the file durable, or merges it.
pub fn encode<R: KeyedRule>(
    rule: &R,
    keys: &[u128],
    flat: &mut Flat,
    path: &std::path::Path,
) -> std::io::Result<keyed::PartWriter> {
    let mut part = keyed::PartWriter::create(path)?;
    for chunk in keys.chunks(CHUNK) {
        flat.clear();
        rule.flatten_keys(chunk, flat);
        for (key, values) in flat.iter() {
            part.push(key, values)?;
        }
    }
    flat.clear();
    Ok(part)
}

/// Keys flattened at a time into a part encoded on the worker.
const CHUNK: usize = 4096;

/// Set (to anything), every dedup checkpoint part is written whole on the worker thread, as
/// before the writer threads: the baseline of `bench/` latency runs.
pub const ON_WORKER: &str = "TIDINGS_CHECKPOINT_ON_WORKER";

/// Cuts a writer may be behind before the worker waits for it (a compaction takes a while;
/// the deltas meanwhile are small).
const PENDING: usize = 16;

/// Keys of a part that is handed only to an idle writer thread, or, noted keys, that the
/// worker encodes into its file itself ([`encode`]).
const LARGE: usize = 1 << 16;

/// A chain of more deltas than this is compacted into one full part.
const MAX_DELTAS: usize = 64;

/// What the worker hands its writer thread for one cut.
enum Part {
    /// The whole state (the first cut of a run that restored a state, or after more changes
    /// than keys), or, a run that started with no state, its first cut's noted keys, sorted
    /// (a tombstone for those gone since).
    Full(Flat),
    /// The keys changed since the previous cut, sorted, each with its state now (none: gone),
    /// and the number of keys the rule holds at the cut.
    Delta(Flat, usize),
    /// A part of more than [`LARGE`] noted keys, encoded by the worker into its file, sorted
    /// (not yet durable), and for a delta the number of keys held (`None`: a full part).
    Encoded(keyed::PartWriter, Option<usize>),
}

impl Part {
    /// Writes the part durably at `path`: a whole state's buffer sorted first; a part the
    /// worker encoded (already at `path`, not yet durable) finished.
    fn write_at(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        match self {
            Part::Full(flat) => write_keyed(path, flat.sorted()),
            Part::Delta(flat, _) => write_keyed(path, flat.iter()),
            Part::Encoded(encoded, ..) => encoded.finish(path),
        }
    }

    /// Merges the part after the `chain` it adds to into a full part at `path`
    /// ([`merge_keyed`]); the number of keys written.
    fn merge_after(
        &mut self,
        path: &std::path::Path,
        chain: &[std::path::PathBuf],
    ) -> std::io::Result<usize> {
        match self {
            Part::Full(flat) | Part::Delta(flat, _) => merge_keyed(path, chain, flat.iter()),
            Part::Encoded(encoded, ..) => encoded.merge_after(path, chain),
        }
    }
}

/// A writer thread's parts: the last full part and the deltas written since, which every cut's
/// directory holds (linked from the previous cut's), so each cut restores on its own.
#[derive(Debug, Default)]
struct Chain {
    /// The directory of the last cut written.
    dir: Option<std::path::PathBuf>,
    /// The full part's and the deltas' file names, oldest first.
    files: Vec<String>,
    /// Entries in the full part and the deltas since (a key changed in several cuts, or gone,
    /// counted in each part that has it).
    entries: usize,
}

impl Chain {
    /// Writes cut `epoch`'s part: a full part is written sorted by key; a delta is written
    /// beside the chain's files linked into the cut's directory, or, once the chain has more
    /// than [`MAX_DELTAS`] deltas or would hold more than twice the keys the rule holds (more
    /// superseded entries and tombstones than keys: the entries of a cut's chain, which a
    /// restore reads, stay within twice the keys held, or one delta past it at the final
    /// cut), merged with the chain into one full part (a compaction: read and written here,
    /// off the worker), except at the final cut. A state that only
    /// grows (a burst of new receivers) is compacted only for the deltas' number: each key
    /// written once, where compacting whenever the deltas outgrew the full part rewrote it
    /// ~2 times over (bench/MEASURED.md "Compaction when half the chain is stale").
    fn write<R: KeyedRule>(
        &mut self,
        c: &Checkpoints,
        epoch: Epoch,
        index: usize,
        part: &mut Part,
    ) -> std::io::Result<()> {
        let full = full_name::<R>(index);
        let (entries, held) = match part {
            Part::Full(flat) => (flat.len(), None),
            Part::Delta(flat, held) => (flat.len(), Some(*held)),
            Part::Encoded(encoded, held) => (encoded.entries(), *held),
        };
        match held {
            None => {
                part.write_at(&c.part_path(epoch, &full)?)?;
                c.publish(epoch, &full)?;
                self.files = vec![full];
                self.entries = entries;
            }
            Some(held) => {
                let prev = self
                    .dir
                    .clone()
                    .ok_or_else(|| std::io::Error::other("a delta part before any full part"))?;
                let deltas = self.files.len().saturating_sub(1);
                // The final cut is never a compaction: a stop waits for it, and the next run
                // starts its own chain with a full part.
                let compact = deltas >= MAX_DELTAS || self.entries + entries > 2 * held;
                if epoch != FINAL && compact {
                    let chain: Vec<_> = self.files.iter().map(|f| prev.join(f)).collect();
                    let keys = part.merge_after(&c.part_path(epoch, &full)?, &chain)?;
                    c.publish(epoch, &full)?;
                    self.files = vec![full];
                    self.entries = keys;
                } else {
                    c.carry(&prev, &self.files, epoch)?;
                    let name = delta_name::<R>(index, epoch);
                    // Its directory fsync makes the links above durable too.
                    part.write_at(&c.part_path(epoch, &name)?)?;
                    c.publish(epoch, &name)?;
                    self.files.push(name);
                    self.entries += entries;
                }
            }
        }
        self.dir = Some(c.dir_of(epoch));
        Ok(())
    }
}

/// A rule's checkpoint writer thread: parts in, written, one cut at a time in order (up to
/// [`PENDING`] cuts wait their turn, then the worker waits too).
struct Writer<R: KeyedRule> {
    tx: Option<std::sync::mpsc::SyncSender<(Epoch, Part)>>,
    /// Buffers written, given back emptied (`None` for a part the worker encoded).
    spare: Option<std::sync::mpsc::Receiver<Option<Flat>>>,
    /// Parts handed and not yet given back, and the last buffer given back.
    out: usize,
    kept: Option<Flat>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The keys changed since the last cut handed (judged to pass, or changed by eviction);
    /// `None` until the first full part is handed (unless the run started with no state), and
    /// when the next part is full anyway.
    dirty: Option<Vec<u128>>,
    /// Whether a part has been handed: until then, noted keys make a full part.
    chained: bool,
    rule: std::marker::PhantomData<fn() -> R>,
}

impl<R: KeyedRule> Writer<R> {
    /// Writes on the worker: every part whole.
    fn on_worker(failed: std::sync::Arc<std::sync::Mutex<Option<String>>>) -> Writer<R> {
        Writer {
            tx: None,
            spare: None,
            out: 0,
            kept: None,
            thread: None,
            failed,
            dirty: None,
            chained: false,
            rule: std::marker::PhantomData,
        }
    }

    fn start(c: &Checkpoints, index: usize) -> Writer<R> {
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        // The way it was, for a benchmark's baseline: every part written on the worker.
        if std::env::var_os(ON_WORKER).is_some() {
            return Writer::on_worker(failed);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Epoch, Part)>(PENDING);
        let (give_back, spare) = std::sync::mpsc::channel::<Option<Flat>>();
        let (c, failure) = (c.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{}-checkpoint-{index}", R::PART))
            .spawn(move || {
                let mut chain = Chain::default();
                for (epoch, mut part) in rx {
                    // A panic here (a bug) fails the worker with its message, as a write error.
                    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        chain
                            .write::<R>(&c, epoch, index, &mut part)
                            .and_then(|()| c.part_written(epoch, &chain.files))
                            .map_err(|e| format!("{} checkpoint: {e}", R::NAME))
                    }))
                    .unwrap_or_else(|p| {
                        let why = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(format!("{} checkpoint writer panicked: {why}", R::NAME))
                    });
                    let _ = give_back.send(match part {
                        Part::Full(mut flat) | Part::Delta(mut flat, _) => {
                            flat.clear();
                            Some(flat)
                        }
                        Part::Encoded(..) => None,
                    });
                    if let Err(e) = written {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            });
        match thread {
            Ok(t) => Writer {
                tx: Some(tx),
                spare: Some(spare),
                out: 0,
                kept: None,
                thread: Some(t),
                failed,
                dirty: None,
                chained: false,
                rule: std::marker::PhantomData,
            },
            // No thread: every part is written on the worker.
            Err(e) => {
                tracing::warn!(
                    "{} checkpoint writer thread: {e}; writing on the worker",
                    R::NAME
                );
                Writer::on_worker(failed)
            }
        }
    }

    /// Notes the keys changed from the run's start, for a rule that starts with no state: its
    /// first part is then made of the noted keys, sorted, as a delta is (a large one encoded
    /// on the worker, never all copied at once), not of the whole state flattened.
    fn note_from_start(&mut self) {
        if self.tx.is_some() && !self.chained {
            self.dirty.get_or_insert_with(Vec::new);
        }
    }

    /// Where to note the keys a change touches (when the next part is a delta).
    fn noting(&mut self) -> Option<&mut Vec<u128>> {
        self.dirty.as_mut()
    }

    /// Gives up noting keys once more have changed than `keys` are held (the next part is
    /// then whole): the noted keys never take more memory than the state's own keys.
    fn bound(&mut self, keys: usize) {
        if self
            .dirty
            .as_ref()
            .is_some_and(|d| d.len() > keys.max(LARGE))
        {
            self.dirty = None;
        }
    }

    /// Takes the buffers the thread gave back; with `wait`, waits until every part handed
    /// is written (or the thread ended).
    fn collect(&mut self, wait: bool) {
        let Some(spare) = &self.spare else { return };
        while self.out > 0 {
            let back = if wait {
                spare.recv().ok()
            } else {
                spare.try_recv().ok()
            };
            let Some(flat) = back else { break };
            self.out -= 1;
            if flat.is_some() {
                self.kept = flat;
            }
        }
    }

    /// A buffer to flatten the next cut into: one the thread gave back, else a new one.
    fn buffer(&mut self) -> Flat {
        self.collect(false);
        self.kept.take().unwrap_or_default()
    }

    /// Hands cut `epoch`'s part to the thread. A whole state's buffer of more than [`LARGE`]
    /// keys waits until the thread has written every earlier one: at most one large buffer is
    /// in memory beside the state, however far behind the thread is (small ones queue up to
    /// [`PENDING`]; noted keys are never a large buffer: [`encode`]).
    fn hand(&mut self, epoch: Epoch, part: Part) {
        if let Part::Full(flat) = &part
            && flat.len() > LARGE
        {
            self.collect(true);
        }
        self.check();
        let sent = self.tx.as_ref().map(|tx| tx.send((epoch, part)).is_ok());
        if sent != Some(true) {
            self.finish();
            panic!("{} checkpoint writer thread ended", R::NAME);
        }
        self.out += 1;
    }

    /// Fails the job (on the worker) if a write failed.
    fn check(&self) {
        if let Some(e) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            panic!("{e}");
        }
    }

    /// Waits for every part handed to be written.
    fn finish(&mut self) {
        self.tx = None;
        self.dirty = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            panic!("{} checkpoint writer thread panicked", R::NAME);
        }
        self.check();
    }
}

/// The streams a keyed rule produces.
pub struct Deduped<'s> {
    /// Deliveries the rule let through.
    pub pass: StreamVec<'s, Epoch, Delivery>,
    /// The rows of those it rejected (CONTENT_DEDUPLICATION, RULE_DEDUPLICATION).
    pub rows: StreamVec<'s, Epoch, Tracked>,
}

/// Runs a keyed rule over a stream of deliveries:
/// `passes.dedup_by(rule, &marks, clock, checkpoints, live)`.
pub trait DedupBy<'s> {
    /// Judges every delivery by `rule` on the worker owning its key, epoch by epoch once both
    /// the deliveries and the `marks` (every worker's [`crate::admit::Admitted::marks`]) have
    /// passed it. With `checkpoints`, writes the rule's part of every cut; with `live`,
    /// answers questions about its keys.
    fn dedup_by<R: KeyedRule>(
        self,
        rule: R,
        marks: &StreamVec<'s, Epoch, Mark>,
        clock: Clock,
        checkpoints: Option<Checkpoints>,
        live: Option<Live>,
    ) -> Deduped<'s>;
}

impl<'s> DedupBy<'s> for StreamVec<'s, Epoch, Delivery> {
    fn dedup_by<R: KeyedRule>(
        self,
        mut rule: R,
        marks: &StreamVec<'s, Epoch, Mark>,
        clock: Clock,
        checkpoints: Option<Checkpoints>,
        live: Option<Live>,
    ) -> Deduped<'s> {
        let scope = self.scope();
        let index = scope.index();
        let peers = scope.peers() as u64;
        if let Some(c) = &checkpoints {
            c.register();
            restore(&mut rule, c, index, peers);
        }
        let mut builder = OperatorBuilder::new(R::NAME.to_owned(), scope);
        let info = builder.operator_info();
        let by_key = crate::container::exchange(|d: &Delivery| ids::route(R::key(d)));
        let by_target = crate::container::exchange(|m: &Mark| m.to as u64);
        let mut data = builder.new_input(self, by_key);
        let mut mark_input = builder.new_input(marks.clone(), by_target);
        let (pass_out, pass) = builder.new_output();
        let (rows_out, rows) = builder.new_output();
        let mut pass_out = OutputBuilder::<_, Trimming<Delivery>>::from(pass_out);
        let mut rows_out = OutputBuilder::<_, Trimming<Tracked>>::from(rows_out);
        builder.build(move |initial| {
            let questions = live.map(|l| {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                l.register(R::NAME, index, peers as usize, activator)
            });
            // The last cut this rule wrote its part of; the final one once written.
            let mut written: Option<Epoch> = None;
            // Held at the input frontier until the final part is written, so the "done"
            // probe passes a cut only after this rule wrote its part of it.
            let mut held = checkpoints.as_ref().map(|_| initial);
            // Per epoch: the capabilities of its passes and rows, and its deliveries as they
            // came, batch by batch ([`gather`]ed when judged; each batch holds its container's
            // room until then, as the channel gave it).
            let mut pending: BTreeMap<
                Epoch,
                (Capability<Epoch>, Capability<Epoch>, Vec<Vec<Delivery>>),
            > = BTreeMap::new();
            let mut watermark = Watermark::default();
            let mut writer = checkpoints.as_ref().map(|c| {
                let mut w = Writer::<R>::start(c, index);
                if rule.keys() == 0 {
                    w.note_from_start();
                }
                w
            });
            move |frontiers| {
                let (data_frontier, mark_frontier) = (&frontiers[0], &frontiers[1]);
                let (mut pass, mut rows) = (pass_out.activate(), rows_out.activate());
                data.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = pending.entry(epoch).or_insert_with(|| {
                        (
                            cap.delayed(&epoch, pass.output_index()),
                            cap.delayed(&epoch, rows.output_index()),
                            Vec::new(),
                        )
                    });
                    entry
                        .2
                        .extend(batches.map(std::mem::take).filter(|b| !b.is_empty()));
                });
                mark_input.for_each_stamp(|_, batches| {
                    for batch in batches {
                        watermark.absorb(batch.drain(..));
                    }
                });
                let complete =
                    |e: &Epoch| !data_frontier.less_equal(e) && !mark_frontier.less_equal(e);
                let mut epochs: Vec<Epoch> = pending
                    .keys()
                    .copied()
                    .chain(watermark.pending_epochs())
                    .filter(complete)
                    .collect();
                epochs.sort_unstable();
                epochs.dedup();
                if let Some(w) = &writer {
                    w.check();
                }
                for epoch in epochs {
                    if let (Some(c), Some(w)) = (&checkpoints, writer.as_mut()) {
                        write_cuts(&rule, c, &mut written, epoch, index, w);
                    }
                    // Keys changed (noted for the next incremental checkpoint part).
                    let mut noting = writer.as_mut().and_then(Writer::noting);
                    // Evict by the watermark of the epochs *before* this one: a record of epoch
                    // `e` is late only relative to what came before it, never to its own epoch.
                    if let Some(w) = epoch
                        .checked_sub(1)
                        .and_then(|prev| watermark.advance_to(prev))
                    {
                        rule.evict_noting(w, noting.as_deref_mut());
                    }
                    let Some((pass_cap, rows_cap, arrived)) = pending.remove(&epoch) else {
                        continue;
                    };
                    let batch = gather(arrived);
                    let (passed, rejected) = judge_epoch(&mut rule, batch, clock.now_ms(), noting);
                    if let Some(w) = writer.as_mut() {
                        w.bound(rule.keys());
                    }
                    pass.session_with_builder(&pass_cap)
                        .give_iterator(passed.into_iter());
                    rows.session_with_builder(&rows_cap)
                        .give_iterator(rejected.into_iter());
                }
                if let Some(q) = &questions {
                    answer(&rule, q, watermark.current());
                }
                if let (Some(c), Some(w)) = (&checkpoints, writer.as_mut()) {
                    hold(&rule, c, &mut written, &mut held, frontiers, index, w);
                }
            }
        });
        Deduped { pass, rows }
    }
}

/// Restores this worker's keys of `rule` from the checkpoint restored on start: the full parts,
/// then the deltas in cut order (each key's state as of its newest delta; none forgets it).
fn restore<R: KeyedRule>(rule: &mut R, c: &Checkpoints, index: usize, peers: u64) {
    let mut parts = c
        .restored_parts(&format!("{}-", R::PART))
        .unwrap_or_else(|e| panic!("{} restore: {e}", R::NAME));
    // Parts only: not a temporary file a failed write or merge could not remove.
    parts.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(keyed::EXT) || n.ends_with(keyed::PARQUET_EXT))
    });
    restore_parts(rule, parts, index, peers);
}

/// Restores the keys of worker `index` of `peers` from a cut's `parts` of `rule`.
fn restore_parts<R: KeyedRule>(
    rule: &mut R,
    mut parts: Vec<std::path::PathBuf>,
    index: usize,
    peers: u64,
) {
    parts.sort_by_key(|p| delta_epoch(p).map_or((0, 0), |e| (1, e)));
    for path in parts {
        read_keyed(
            &path,
            |k| ids::route(k) % peers == index as u64,
            |k, v| rule.restore(k, v),
        )
        .unwrap_or_else(|e| panic!("{} restore: {e}", R::NAME));
    }
}

/// An epoch's batches, in the order they came, as one list: each delivery moved once, into room
/// reserved for all of them (a lone batch is the list). Before, each batch was appended to the
/// epoch's list as it came, and the list grew by doubling, each delivery copied again per
/// doubling into memory newly faulted in (bench/MEASURED.md, "Dedup's epochs gathered once").
fn gather(mut batches: Vec<Vec<Delivery>>) -> Vec<Delivery> {
    if batches.len() == 1 {
        return batches.pop().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(batches.iter().map(Vec::len).sum());
    for mut b in batches {
        all.append(&mut b);
    }
    all
}

/// Sorts one epoch's deliveries into [`Delivery::order`].
///
/// They come as a few runs already in order (each worker gives its deliveries in order: 2 to 8
/// runs an epoch with 2 workers in the 1M-request bench). The stable sort finds those runs and
/// merges them, in far fewer comparisons than the unstable sort's partitions (2.6× less time,
/// bench/MEASURED.md "The dedup sort"); a comparison reads only the two deliveries, which carry
/// their message's order (MEASURED "The order in the delivery"). Its scratch buffer is
/// at most 8 MB, or half the epoch's deliveries for an epoch of more than 200,000. `order` is
/// unique per delivery; on a tie the receiver and the keys make the order total whatever the
/// input.
fn sort_in_order(batch: &mut [Delivery]) {
    batch.sort_by(in_order);
}

/// [`Delivery::order`], made total by the receiver and the keys.
fn in_order(a: &Delivery, b: &Delivery) -> std::cmp::Ordering {
    a.order()
        .cmp(&b.order())
        .then_with(|| a.receiver.cmp(&b.receiver))
        .then_with(|| (a.content_key, a.frequency_key).cmp(&(b.content_key, b.frequency_key)))
}

/// Judges one epoch's deliveries in [`Delivery::order`]: those that pass (their keys noted in
/// `changed`), and the rows of those rejected.
fn judge_epoch<R: KeyedRule>(
    rule: &mut R,
    mut batch: Vec<Delivery>,
    now: Millis,
    mut changed: Option<&mut Vec<u128>>,
) -> (Vec<Delivery>, Vec<Tracked>) {
    sort_in_order(&mut batch);
    let mut rejected = Vec::new();
    batch.retain(|d| {
        let key = R::key(d);
        match rule.judge(key, d) {
            Ok(()) => {
                if let Some(c) = changed.as_deref_mut() {
                    c.push(key);
                }
                true
            }
            Err((state, reason)) => {
                rejected.push(Tracked::Row(EventRow::of(d, state, Some(reason), now)));
                false
            }
        }
    });
    (batch, rejected)
}

/// Writes this rule's part of every cut both inputs have passed and holds the outputs at the
/// inputs' frontier; once both inputs have ended, writes the final part and lets them go.
fn hold<R: KeyedRule>(
    rule: &R,
    c: &Checkpoints,
    written: &mut Option<Epoch>,
    held: &mut Option<Vec<Capability<Epoch>>>,
    frontiers: &[MutableAntichain<Epoch>],
    index: usize,
    w: &mut Writer<R>,
) {
    let Some(caps) = held.as_mut() else { return };
    if frontiers.iter().all(|f| f.is_empty()) {
        write_cuts(rule, c, written, FINAL, index, w);
        checkpoint(rule, c, FINAL, index, w);
        *held = None;
        return;
    }
    let limit = frontiers
        .iter()
        .filter_map(|f| f.frontier().first().copied())
        .min()
        .unwrap_or(FINAL);
    write_cuts(rule, c, written, limit, index, w);
    for cap in caps.iter_mut() {
        if limit > *cap.time() {
            cap.downgrade(&limit);
        }
    }
}

/// Writes this rule's part of every cut agreed before `limit` (exclusive) and not yet written:
/// its state has judged every epoch up to the cut and nothing later.
fn write_cuts<R: KeyedRule>(
    rule: &R,
    c: &Checkpoints,
    written: &mut Option<Epoch>,
    limit: Epoch,
    index: usize,
    w: &mut Writer<R>,
) {
    for cut in c.cuts_between(*written, limit) {
        checkpoint(rule, c, cut, index, w);
        *written = Some(cut);
    }
}

/// What an eviction sweep did to one key.
pub(crate) enum Swept {
    /// Left as it was.
    Kept,
    /// Kept with some of its state dropped.
    Changed,
    /// Dropped whole.
    Dropped,
}

impl Swept {
    /// Whether the key stays; a key changed or dropped is noted in `changed` (the next
    /// incremental checkpoint part writes its state, or its tombstone).
    pub(crate) fn note(self, key: u128, changed: &mut Option<&mut Vec<u128>>) -> bool {
        if !matches!(self, Swept::Kept)
            && let Some(c) = changed.as_deref_mut()
        {
            c.push(key);
        }
        !matches!(self, Swept::Dropped)
    }
}

/// When to sweep a rule's state: eviction scans the whole map, so it runs only when the
/// eviction horizon (`W(e−1) − lateness`) enters a new `every`-ms step, and evicts up to the
/// step. What a sweep leaves is so a function of the global watermark alone: the same on every
/// worker (one that judges an extra epoch, a night release, sweeps only a step the others
/// sweep at their next epoch) and across a restart (the first sweep after it evicts up to the
/// step the run had reached, which takes nothing the run had kept).
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    lateness: Millis,
    every: Millis,
    last: Option<Millis>,
}

impl Sweep {
    /// Sweeps `lateness` behind the watermark, at most once per `every` ms of it.
    pub fn new(lateness: Millis, every: Millis) -> Sweep {
        Sweep {
            lateness,
            every,
            last: None,
        }
    }

    /// The horizon to evict up to, when a sweep is due at `watermark`: the start of the
    /// `every`-ms step the horizon is in, once per step.
    pub fn due(&mut self, watermark: Millis) -> Option<Millis> {
        let horizon = watermark.saturating_sub(self.lateness);
        let step = horizon.saturating_sub(horizon.rem_euclid(self.every));
        if self.last.is_some_and(|last| step <= last) {
            return None;
        }
        self.last = Some(step);
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use timely::dataflow::operators::Capture;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::vec::{Input, Map};

    use super::*;
    use crate::testkit::{TZ, at, delivery, epoch, templates};
    use tidings_model::time::Millis;

    type Rows = Vec<(Epoch, Vec<(u128, String, String)>)>;

    /// What a sweep evicts depends on the watermark alone: a worker that sees extra epochs
    /// (a night release) or starts again after a restore sweeps up to the same steps.
    #[test]
    fn sweeps_fall_on_steps_of_the_watermark() {
        let run = |watermarks: &[Millis]| -> Vec<Millis> {
            let mut s = Sweep::new(1_000, 60_000);
            watermarks.iter().filter_map(|&w| s.due(w)).collect()
        };
        assert_eq!(
            run(&[61_000, 150_000, 182_000]),
            vec![60_000, 120_000, 180_000]
        );
        assert_eq!(
            run(&[61_000, 90_000, 150_000, 170_000, 182_000]),
            vec![60_000, 120_000, 180_000],
            "extra epochs sweep nothing else"
        );
        // Restored after 150_000: the first sweep evicts up to the step the run had reached.
        assert_eq!(run(&[150_000, 182_000]), vec![120_000, 180_000]);
        assert_eq!(Sweep::new(1_000, 60_000).due(i64::MIN + 5), Some(i64::MIN));
    }

    /// A delivery's own `dedup` decides (the template it was made with), not its template read
    /// again; unknown (a park line of an older binary), the template is read. Both rules.
    #[test]
    fn a_delivery_says_whether_it_is_deduplicated() {
        fn check<R: KeyedRule>(mut rule: R) {
            let mut d = delivery(1, 0, "13800138000", 100, "c");
            assert_eq!(d.dedup, None);
            assert!(rule.judge(R::key(&d), &d).is_ok(), "{}", R::NAME);
            assert!(
                rule.judge(R::key(&d), &d).is_err(),
                "{}: template 1 is deduplicated",
                R::NAME
            );
            d.dedup = Some(false);
            assert!(rule.judge(R::key(&d), &d).is_ok(), "{}", R::NAME);
            d.dedup = Some(true);
            assert!(rule.judge(R::key(&d), &d).is_err(), "{}", R::NAME);
        }
        check(ContentDedup::new(1, 300_000, 0, templates()));
        check(FrequencyDedup::new(1, TZ, 0, templates()));
    }

    /// Runs `rule` over `epochs` of deliveries (in the order given), with the marks admit would
    /// send; returns the seqs passed and the rows of the rejected, per epoch.
    fn judge<R: KeyedRule + Send + Sync>(
        rule: R,
        epochs: Vec<(Epoch, Vec<Delivery>)>,
    ) -> (Vec<(Epoch, Vec<u128>)>, Rows) {
        let (pass_tx, pass_rx) = mpsc::channel();
        let (rows_tx, rows_rx) = mpsc::channel();
        timely::execute_directly(move |worker| {
            let (mut deliveries, mut marks) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (deliveries_in, deliveries) = scope.new_input::<Delivery>();
                let (marks_in, marks) = scope.new_input::<Mark>();
                let judged = deliveries.dedup_by(rule, &marks, Clock::Fixed(0), None, None);
                judged.pass.map(|d| d.meta.seq).capture_into(pass_tx);
                judged
                    .rows
                    .map(|t| match t {
                        Tracked::Row(r) => (
                            r.meta.seq,
                            r.state.name().to_string(),
                            r.reason.unwrap_or_default(),
                        ),
                        Tracked::Dead(d) => (0, "dead".into(), d.reason),
                        Tracked::Received(_) => unreachable!("dedup makes no RECEIVE rows"),
                    })
                    .capture_into(rows_tx);
                (deliveries_in, marks_in)
            });
            for (epoch, batch) in epochs {
                deliveries.advance_to(epoch);
                marks.advance_to(epoch);
                if let Some(max_event_time) = batch.iter().map(|d| d.event_time).max() {
                    marks.send(Mark {
                        to: 0,
                        max_event_time,
                        epoch,
                    });
                }
                for d in batch {
                    deliveries.send(d);
                }
                worker.step();
            }
        });
        (pass_rx.extract(), rows_rx.extract())
    }

    /// An epoch's batches become one list in the order they came, whatever their number and
    /// sizes (a lone batch is taken as it is; none gives an empty list).
    #[test]
    fn an_epochs_batches_are_gathered_in_the_order_they_came() {
        let d = |seq| delivery(seq, 0, "13800138000", 1_000, "x");
        let seqs = |v: &[Delivery]| v.iter().map(|d| d.order().2).collect::<Vec<_>>();
        assert!(gather(Vec::new()).is_empty());
        let mut lone = Vec::with_capacity(8);
        lone.extend([d(3), d(1)]);
        let lone = gather(vec![lone]);
        assert_eq!(seqs(&lone), [3, 1]);
        assert_eq!(lone.capacity(), 8, "a lone batch is the list, not a copy");
        let batches = vec![
            vec![d(5)],
            vec![d(2), d(9), d(4)],
            Vec::new(),
            vec![d(7), d(1)],
        ];
        let all = gather(batches);
        assert_eq!(seqs(&all), [5, 2, 9, 4, 7, 1]);
        assert_eq!(all.capacity(), 6, "room reserved once for all");
    }

    /// The epoch's sort puts deliveries in the order the full comparison gives: event time,
    /// the message's event time, its position (with positions past 64 bits), its receiver
    /// index, and on a tie the receiver; whatever order they came in.
    #[test]
    fn deliveries_sort_into_order_whatever_came_first() {
        let mut batch = Vec::new();
        for n in 0..300u32 {
            // Positions that differ only above 64 bits, event times that repeat, a parked
            // delivery (its time later than its message's), and exact ties of the order.
            let seq = u128::from(n % 7) << 96 | u128::from(n % 5);
            let mut d = delivery(
                seq,
                n % 3,
                &format!("1380013{:04}", n % 11),
                1_000 + i64::from(n % 4),
                "x",
            );
            if n % 13 == 0 {
                d.event_time += 5_000;
            }
            batch.push(d);
        }
        let key = |d: &Delivery| (d.order(), d.receiver.clone(), d.content_key);
        for shift in [0, 1, 137, 299] {
            let mut shuffled = batch.clone();
            shuffled.rotate_left(shift);
            shuffled.reverse();
            let mut expected = shuffled.clone();
            expected.sort_unstable_by(in_order);
            sort_in_order(&mut shuffled);
            assert_eq!(
                shuffled.iter().map(key).collect::<Vec<_>>(),
                expected.iter().map(key).collect::<Vec<_>>(),
                "rotated by {shift}"
            );
        }
    }

    /// Content dedup: one send of a content per receiver in 5 minutes; judged in event-time
    /// order within the epoch, whatever order the deliveries came in.
    #[test]
    fn content_dedup_passes_and_rejects_per_epoch() {
        let noon = at(12, 0);
        let d = |seq, receiver, t| delivery(seq, 0, receiver, t, "x");
        let epochs = vec![
            (
                epoch(noon),
                vec![
                    d(2, "13800138000", noon + 2_000),
                    d(1, "13800138000", noon + 1_000),
                    d(3, "13800138001", noon + 500),
                ],
            ),
            (
                epoch(noon + 301_000),
                vec![
                    d(5, "13800138000", noon + 303_000),
                    d(4, "13800138000", noon + 301_000),
                ],
            ),
        ];
        let rule = ContentDedup::new(1, 300_000, 3_600_000, templates());
        let (pass, rows) = judge(rule, epochs);
        let seen = "1 send(s) of this content in the last 300s".to_string();
        assert_eq!(
            pass,
            vec![(epoch(noon), vec![1, 3]), (epoch(noon + 301_000), vec![4])]
        );
        assert_eq!(
            rows,
            vec![
                (
                    epoch(noon),
                    vec![(2, "CONTENT_DEDUPLICATION".into(), seen.clone())]
                ),
                (
                    epoch(noon + 301_000),
                    vec![(5, "CONTENT_DEDUPLICATION".into(), seen)]
                ),
            ]
        );
    }

    /// Frequency dedup: two sends per receiver and channel per local day, whatever the content.
    #[test]
    fn frequency_dedup_counts_per_local_day() {
        let d = |seq, t| delivery(seq, 0, "13800138000", t, &format!("c{seq}"));
        let next_morning = at(24 + 9, 0);
        let epochs = vec![
            (epoch(at(10, 0)), vec![d(1, at(10, 0))]),
            (epoch(at(11, 0)), vec![d(2, at(11, 0))]),
            (epoch(at(23, 59)), vec![d(3, at(23, 59))]),
            (epoch(next_morning), vec![d(4, next_morning)]),
        ];
        let rule = FrequencyDedup::new(2, TZ, 3_600_000, templates());
        let (pass, rows) = judge(rule, epochs);
        assert_eq!(
            pass,
            vec![
                (epoch(at(10, 0)), vec![1]),
                (epoch(at(11, 0)), vec![2]),
                (epoch(next_morning), vec![4]),
            ]
        );
        assert_eq!(
            rows,
            vec![(
                epoch(at(23, 59)),
                vec![(
                    3,
                    "RULE_DEDUPLICATION".into(),
                    "2 send(s) to this receiver on this channel today".into()
                )]
            )]
        );
    }

    /// Incremental cuts: every cut's directory restores exactly the state the rule had at
    /// that cut (deltas over a full part, tombstones for evicted keys, compactions), with one
    /// worker or its keys split over two, for both rules.
    #[test]
    fn every_incremental_cut_restores_the_state_at_the_cut() {
        // Content: two per 60 s, swept every minute: keys come, change and go. Noting from
        // the start (a run with no state: its first part is made of the noted keys) or not.
        for from_start in [false, true] {
            chain_restores_every_cut(
                || ContentDedup::new(2, 60_000, 0, templates()),
                10_000,
                from_start,
            );
        }
        // Frequency: three per day, two hours apart: days change and are evicted.
        chain_restores_every_cut(
            || FrequencyDedup::new(3, TZ, 3_600_000, templates()),
            2 * 3_600_000,
            true,
        );
    }

    fn sorted_snapshot<R: KeyedRule>(rule: &R) -> Vec<(u128, Vec<i64>)> {
        let mut s: Vec<_> = rule.snapshot().collect();
        s.sort();
        s
    }

    fn chain_restores_every_cut<R: KeyedRule>(
        make: impl Fn() -> R,
        step: Millis,
        from_start: bool,
    ) {
        let (dir, shared) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mirror = std::sync::Arc::new(crate::testkit::DirMirror::new(shared.path()));
        let c = Checkpoints::open_mirrored(dir.path(), "t", false, Some(mirror.clone())).unwrap();
        c.register();
        let mut rule = make();
        let mut w = Writer::<R>::start(&c, 0);
        if from_start {
            w.note_from_start();
        }
        let mut expected = Vec::new();
        // A deterministic spread of receivers and contents.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let cuts = 2 * MAX_DELTAS as u64 + 20;
        for cut in 1..=cuts {
            let t = at(0, 0) + cut as Millis * step;
            let mut noting = w.noting();
            rule.evict_noting(t - 1, noting.as_deref_mut());
            let batch = (0..20)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let receiver = format!("1380013{:04}", x % 150);
                    let content = format!("c{}", (x >> 20) % 2);
                    delivery(
                        u128::from(cut * 100 + i),
                        0,
                        &receiver,
                        t + i as Millis,
                        &content,
                    )
                })
                .collect();
            judge_epoch(&mut rule, batch, 0, noting);
            w.bound(rule.keys());
            // The run's last cut is its final one (the end of the input).
            let cut = if cut == cuts { FINAL } else { cut };
            checkpoint(&rule, &c, cut, 0, &mut w);
            expected.push((cut, sorted_snapshot(&rule)));
        }
        assert!(w.thread.is_none(), "the final cut waits for the writer");
        let parts = |cut: Epoch| -> Vec<std::path::PathBuf> {
            std::fs::read_dir(c.dir_of(cut))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .starts_with(R::PART)
                })
                .collect()
        };
        // The mirror holds every cut as written, each file sent once; each cut's manifest lists its
        // files.
        mirror.assert_chain(&c, expected.iter().map(|(cut, _)| *cut));
        let (mut with_deltas, mut compacted) = (0, 0);
        for (cut, state) in &expected {
            let files = parts(*cut);
            let deltas = files.iter().filter(|p| delta_epoch(p).is_some()).count();
            assert_eq!(
                files.len(),
                deltas + 1,
                "{}: one full part per cut",
                R::NAME
            );
            if deltas > 0 {
                with_deltas += 1;
            } else if *cut > 1 {
                compacted += 1;
            }
            let mut restored = make();
            restore_parts(&mut restored, files.clone(), 0, 1);
            assert_eq!(&sorted_snapshot(&restored), state, "{} cut {cut}", R::NAME);
            // Split over two workers: each keeps its keys, together the whole state.
            let mut halves = Vec::new();
            for index in 0..2 {
                let mut half = make();
                restore_parts(&mut half, files.clone(), index, 2);
                halves.extend(sorted_snapshot(&half));
            }
            halves.sort();
            assert_eq!(&halves, state, "{} cut {cut}, two workers", R::NAME);
        }
        assert!(
            with_deltas > cuts / 2,
            "{}: {with_deltas} cuts with deltas",
            R::NAME
        );
        assert!(compacted >= 2, "{}: {compacted} compactions", R::NAME);
        // The final cut adds the keys changed since the cut before it to the chain (a stop
        // writes what changed, not every key), and its directory restores on its own.
        let last = parts(FINAL);
        assert!(
            last.iter().any(|p| delta_epoch(p) == Some(FINAL)),
            "{}: the final cut is a delta: {last:?}",
            R::NAME
        );
        assert!(
            expected.iter().any(|(_, s)| s.len() > 100),
            "{}: the state grows",
            R::NAME
        );
    }

    /// The final cut adds what changed to the chain even where a cut would compact it (more
    /// changed keys than the full part holds): the end of a run waits for no merge, and the final
    /// directory restores the state.
    #[test]
    fn the_final_cut_is_never_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
        c.register();
        let mut rule = ContentDedup::new(1, 60_000, 0, templates());
        let mut w = Writer::<ContentDedup>::start(&c, 0);
        rule.admit(1 << 64 | 7, at(10, 0)).unwrap();
        checkpoint(&rule, &c, 1, 0, &mut w);
        for k in 2..50u128 {
            rule.admit(k << 64 | 7, at(10, 1)).unwrap();
            w.noting().unwrap().push(k << 64 | 7);
        }
        checkpoint(&rule, &c, FINAL, 0, &mut w);
        let mut names: Vec<String> = std::fs::read_dir(c.dir_of(FINAL))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("content-"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "content-0.delta-18446744073709551615.keys",
                "content-0.keys"
            ]
        );
        let parts = names.iter().map(|n| c.dir_of(FINAL).join(n)).collect();
        let mut restored = ContentDedup::new(1, 60_000, 0, templates());
        restore_parts(&mut restored, parts, 0, 1);
        assert_eq!(sorted_snapshot(&restored), sorted_snapshot(&rule));
        assert_eq!(restored.keys(), 49);
    }

    /// A cut an older version wrote (Parquet parts: the full part and a delta) restores as
    /// it was written: the delta's cut read from its name, its values over the full part's,
    /// its tombstone forgetting a key.
    #[test]
    fn an_older_versions_parquet_chain_restores() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("content-0.parquet");
        let delta = dir
            .path()
            .join("content-0.delta-00000000000000000010.parquet");
        let t = 1_763_740_800_000i64;
        keyed::write_parquet(&full, &[(1, vec![t]), (2, vec![t + 1]), (3, vec![t + 2])]);
        keyed::write_parquet(&delta, &[(2, vec![]), (3, vec![t + 5])]);
        let mut restored = ContentDedup::new(1, 60_000, 0, templates());
        restore_parts(&mut restored, vec![delta, full], 0, 1);
        assert_eq!(
            sorted_snapshot(&restored),
            vec![(1, vec![t]), (3, vec![t + 5])]
        );
    }

    /// A state that only grows (new keys at every cut, as in a burst of new receivers) is not
    /// compacted before [`MAX_DELTAS`] deltas: each key is written once. One whose keys keep
    /// changing is compacted once the chain would hold more than twice its keys.
    #[test]
    fn a_chain_is_compacted_when_half_of_it_is_stale_not_while_it_grows() {
        let compactions = |churn: bool| -> Vec<Epoch> {
            let dir = tempfile::tempdir().unwrap();
            let c = Checkpoints::open(dir.path(), "t", false).unwrap();
            c.register();
            let mut rule = FrequencyDedup::new(1_000, TZ, 0, templates());
            let mut w = Writer::<FrequencyDedup>::start(&c, 0);
            let cuts = 40u64;
            for cut in 1..=cuts {
                for i in 0..10u128 {
                    let k = if churn { i } else { u128::from(cut) * 10 + i };
                    let key = k << 64 | 7;
                    rule.admit(key, at(10, 0)).unwrap();
                    if let Some(noted) = w.noting() {
                        noted.push(key);
                    }
                }
                checkpoint(&rule, &c, cut, 0, &mut w);
            }
            w.finish();
            (2..=cuts)
                .filter(|&cut| {
                    !std::fs::read_dir(c.dir_of(cut))
                        .unwrap()
                        .any(|e| delta_epoch(&e.unwrap().path()).is_some())
                })
                .collect()
        };
        assert_eq!(compactions(false), Vec::<Epoch>::new());
        // Ten keys, each changed at every cut: the full part and a delta hold twice them; the
        // next delta would pass that.
        assert_eq!(compactions(true), (3..=40).step_by(2).collect::<Vec<_>>());
    }

    /// Small parts queue for the writer thread; a large one is handed only once the thread
    /// has written every earlier part (one large part in memory beside the state).
    #[test]
    fn a_large_part_waits_for_the_writer_small_ones_queue() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
        c.register();
        let mut rule = ContentDedup::new(1, 60_000, 0, templates());
        let mut w = Writer::<ContentDedup>::start(&c, 0);
        let mut flat = w.buffer();
        rule.flatten(&mut flat);
        w.hand(1, Part::Full(flat));
        for cut in 2..5u64 {
            let keys = [u128::from(cut)];
            let mut flat = Flat::default();
            rule.flatten_keys(&keys, &mut flat);
            w.hand(cut, Part::Delta(flat, rule.keys()));
        }
        assert_eq!(w.out, 4, "small parts do not wait for the writer");
        let mut flat = Flat::default();
        for k in 0..=LARGE as u128 {
            rule.admit(k << 64 | 7, at(10, 0)).unwrap();
        }
        rule.flatten(&mut flat);
        w.hand(5, Part::Full(flat));
        assert_eq!(
            w.out, 1,
            "every earlier part was written before the large one went"
        );
        w.finish();
        let mut keys = 0;
        read_keyed(
            &c.dir_of(5).join("content-0.keys"),
            |_| true,
            |_, _| keys += 1,
        )
        .unwrap();
        assert_eq!(keys, LARGE + 1);
    }

    /// Parts go out on the writer thread, complete the cut only once durable, and a write that
    /// fails fails the worker with the error.
    #[test]
    fn parts_are_written_off_the_worker_and_a_failed_write_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
        c.register();
        c.register_source();
        c.request_cut();
        assert_eq!(c.source_turn(0, 7, true), None);
        let mut rule = ContentDedup::new(1, 60_000, 0, templates());
        for k in 0..1_000u128 {
            rule.admit(k << 100 | k, at(10, 0)).unwrap();
        }
        let mut w = Writer::<ContentDedup>::start(&c, 0);
        let mut flat = w.buffer();
        rule.flatten(&mut flat);
        w.hand(7, Part::Full(flat));
        // The worker goes on changing its state while the flattened copy is written.
        rule.admit(5 << 100 | 5_000, at(10, 1)).unwrap();
        w.finish();
        let part = c.dir_of(7).join("content-0.keys");
        let mut keys = 0;
        read_keyed(&part, |_| true, |_, _| keys += 1).unwrap();
        assert_eq!(keys, 1_000, "the state as it was at the cut");
        c.deposit(7, 0, BTreeMap::new());
        assert_eq!(c.complete_before(Some(8)).unwrap(), Some(7));

        // A cut whose directory cannot be made (a file is in its way).
        c.request_cut();
        assert_eq!(c.source_turn(0, 9, true), None);
        std::fs::write(c.dir_of(9), b"in the way").unwrap();
        let mut w = Writer::<ContentDedup>::start(&c, 0);
        let mut flat = w.buffer();
        rule.flatten(&mut flat);
        w.hand(9, Part::Full(flat));
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.finish()))
            .expect_err("the failed write fails the worker");
        let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.starts_with("ContentDedup checkpoint: "),
            "{message}"
        );
    }

    /// A cut of more than [`LARGE`] noted keys is encoded on the worker into its file, a chunk
    /// at a time (the worker's buffer never holds them all), and the writer thread makes it
    /// durable or merges it: a run that started empty writes its first part so, as a full
    /// part; later ones as deltas, a compaction among them, and the final cut. Every cut's
    /// directory restores the state at the cut, and no unfinished file is left behind.
    #[test]
    fn a_large_cut_is_encoded_on_the_worker_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path(), "t", false).unwrap();
        c.register();
        // Two a minute: a key's state changes with its second admission and again when its
        // first is evicted, without the key going.
        let make = || ContentDedup::new(2, 60_000, 0, templates());
        let mut rule = make();
        let mut w = Writer::<ContentDedup>::start(&c, 0);
        w.note_from_start();
        let n = LARGE as u64 + 10;
        // Keys `from..from + count` admitted (out of order: a part is written sorted) at `t`,
        // noted as the operator notes them, and the cut written.
        let mut expected = Vec::new();
        let mut cut = |rule: &mut ContentDedup,
                       w: &mut Writer<ContentDedup>,
                       evict: Option<Millis>,
                       (from, count): (u64, u64),
                       t: Millis,
                       epoch: Epoch| {
            if let Some(at) = evict {
                rule.evict_noting(at, w.noting());
            }
            for k in from..from + count {
                let key = u128::from(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) << 64 | u128::from(k);
                rule.admit(key, t + (k % 1000) as Millis).unwrap();
                w.noting().unwrap().push(key);
            }
            w.bound(rule.keys());
            assert!(w.noting().is_some(), "cut {epoch}: the keys noted still");
            checkpoint(rule, &c, epoch, 0, w);
            expected.push((epoch, sorted_snapshot(rule)));
        };
        // The first cut: the noted keys make the full part.
        cut(&mut rule, &mut w, None, (0, 2 * n), at(10, 0), 1);
        // Every key admitted a second time: a delta.
        cut(&mut rule, &mut w, None, (0, 2 * n), at(10, 0) + 30_000, 2);
        w.collect(true);
        let kept = w.kept.as_ref().map_or(0, |f| f.keys.capacity());
        assert!(kept <= CHUNK, "the worker's buffer held {kept} keys");
        // Every key's first admission evicted: the chain (the full part, a delta, this one)
        // would hold 6n entries for 2n keys, so the cut merges it.
        cut(
            &mut rule,
            &mut w,
            Some(at(10, 1) + 2_000),
            (0, 0),
            at(10, 0),
            3,
        );
        // The final cut adds a large delta of new keys to the chain.
        cut(
            &mut rule,
            &mut w,
            None,
            (2 * n, n),
            at(10, 0) + 40_000,
            FINAL,
        );
        assert!(w.thread.is_none(), "the final cut waits for the writer");
        let files = |epoch: Epoch| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(c.dir_of(epoch))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("content-"))
                .collect();
            names.sort();
            names
        };
        let delta = |epoch: Epoch| format!("content-0.delta-{epoch:020}.keys");
        let full = || "content-0.keys".to_string();
        assert_eq!(files(1), [full()]);
        assert_eq!(files(2), [delta(2), full()]);
        assert_eq!(files(3), [full()], "compacted");
        assert_eq!(files(FINAL), [delta(FINAL), full()]);
        for (epoch, state) in &expected {
            let parts: Vec<_> = files(*epoch)
                .iter()
                .map(|f| c.dir_of(*epoch).join(f))
                .collect();
            let mut restored = make();
            restore_parts(&mut restored, parts.clone(), 0, 1);
            let got = sorted_snapshot(&restored);
            assert!(
                &got == state,
                "cut {epoch}: {} keys restored of {}",
                got.len(),
                state.len()
            );
            // Restarted on two or three workers: each keeps its keys, together the state.
            for peers in [2, 3] {
                let mut parted = Vec::new();
                for index in 0..peers {
                    let mut part = make();
                    restore_parts(&mut part, parts.clone(), index, peers as u64);
                    parted.extend(sorted_snapshot(&part));
                }
                parted.sort();
                assert!(&parted == state, "cut {epoch}, {peers} workers");
            }
        }
        for (epoch, _) in &expected {
            for entry in std::fs::read_dir(c.dir_of(*epoch)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(!name.ends_with(".tmp"), "cut {epoch}: {name} left behind");
            }
        }
    }
}
