//! The sources: event time becomes the graph's time here.
//!
//! A record's epoch is its event-time bucket ([`EventTime::epoch_of`]). Each partition (a Kafka
//! partition, or the one file) keeps its own [`PartitionClock`]; a record behind its partition's
//! watermark is judged at the watermark, and a source holds its capability at the least
//! watermark of its partitions, so a keyed operator judges an epoch only once every record of
//! it has been read. What a source has read is part of every checkpoint ([`Position`]), so a
//! restart (after a crash, or a second run of a file job) reads on from the cut.
//!
//! The file source is read by worker 0 and its records are exchanged by line to every worker's
//! admit stage; it remembers the file by the fingerprint of its first line and its byte
//! position, so re-running a job over the same file reads nothing again, lines appended later
//! are read by the next run, and `follow = true` tails the file as a live source (a caught-up
//! file moves its watermark with the wall clock, like a quiet Kafka partition).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidings_model::time::Millis;
use tidings_operators::checkpoint::{Checkpoints, Position};
use tidings_operators::container::Trimming;
pub use tidings_operators::event_time::line_event_time;
use tidings_operators::event_time::read_line;
use tidings_operators::event_time::{EventTime, PartitionClock};
use tidings_operators::live::Live;
use tidings_operators::{Clock, Epoch, InFlight, SourceRecord};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// The largest record a source accepts; a longer line or record becomes a dead letter that
/// keeps its first bytes and its size.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// How a record is judged, as its source decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The record's epoch.
    pub epoch: Epoch,
    /// The event time the rules use.
    pub event_time: Millis,
    /// How late it came (0: on time).
    pub late_by: Millis,
    /// Why its own time cannot be judged.
    pub bad_time: Option<String>,
}

/// Records given on at consecutive offsets, all at one epoch: where the first starts, and the
/// partition's clock before it (where a cut between two epochs resumes).
#[derive(Debug, Clone)]
struct Run {
    offset: i64,
    byte: u64,
    epoch: Epoch,
    clock: PartitionClock,
    len: i64,
}

impl Run {
    fn offsets(&self) -> std::ops::Range<i64> {
        self.offset..self.offset + self.len
    }
}

/// One partition's reading state: its clock, what to skip when re-reading after a cut, and the
/// records given on that a future cut may still need to read again.
#[derive(Debug, Clone)]
pub struct Partition {
    /// The partition number.
    pub id: i32,
    /// Its event-time clock.
    pub clock: PartitionClock,
    /// The next offset to read.
    pub next: i64,
    /// The byte position of the next offset (files).
    pub next_byte: u64,
    /// Re-reading after a cut: records before this offset were read before it...
    read_to: i64,
    /// ...and only these of them are given on again.
    after: HashSet<i64>,
    /// Records given on whose epoch may be past a future cut, as runs of consecutive offsets
    /// at one epoch (a burst's records share a few epochs: a run each, not an entry each).
    inflight: VecDeque<Run>,
    /// Nothing more to read for now (end of file, or the broker said so).
    pub caught_up: bool,
    /// A file partition's fingerprint, kept with its positions.
    pub fingerprint: Option<String>,
    /// The largest epoch a record was given on at.
    given_max: Option<Epoch>,
}

impl Partition {
    /// A partition read from `start` (a checkpoint's position) or from `offset`.
    pub fn new(id: i32, start: Option<Position>, offset: i64) -> Partition {
        match start {
            Some(p) => Partition {
                id,
                clock: p.clock,
                next: p.offset,
                next_byte: p.byte,
                read_to: p.read_to,
                after: p.after.into_iter().collect(),
                inflight: VecDeque::new(),
                caught_up: false,
                fingerprint: p.fingerprint,
                given_max: None,
            },
            None => Partition {
                id,
                clock: PartitionClock::default(),
                next: offset,
                next_byte: 0,
                read_to: offset,
                after: HashSet::new(),
                inflight: VecDeque::new(),
                caught_up: false,
                fingerprint: None,
                given_max: None,
            },
        }
    }

    /// Judges the record at `offset` (`len` bytes, event time `time` or why it has none) read
    /// at wall-clock `now`; `floor` is the source's capability. `None`: the record is inside the
    /// restored cut and is not given on again.
    pub fn stamp(
        &mut self,
        offset: i64,
        len: u64,
        time: Result<Millis, String>,
        now: Millis,
        event: &EventTime,
        floor: Epoch,
    ) -> Option<Stamped> {
        let before = self.clock;
        let byte = self.next_byte;
        self.next = offset + 1;
        self.next_byte += len;
        self.caught_up = false;
        let time = time.and_then(|t| match event.insane(t, now) {
            Some(why) => Err(why),
            None => Ok(t),
        });
        let stamped = match time {
            Ok(t) => {
                let j = self.clock.judge(t, event.max_out_of_order_ms);
                Stamped {
                    epoch: event.epoch_of(j.at).max(floor),
                    event_time: j.at,
                    late_by: j.late_by,
                    bad_time: None,
                }
            }
            // Never a watermark: judged (as a dead letter) at the source's capability.
            Err(why) => Stamped {
                epoch: floor,
                event_time: self.clock.watermark.unwrap_or(now),
                late_by: 0,
                bad_time: Some(why),
            },
        };
        if offset < self.read_to && !self.after.remove(&offset) {
            return None;
        }
        self.given_max = self.given_max.max(Some(stamped.epoch));
        match self.inflight.back_mut() {
            Some(run) if run.epoch == stamped.epoch && run.offsets().end == offset => run.len += 1,
            _ => self.inflight.push_back(Run {
                offset,
                byte,
                epoch: stamped.epoch,
                clock: before,
                len: 1,
            }),
        }
        Some(stamped)
    }

    /// The partition's reader went back to `offset` (a Kafka position reset to the
    /// beginning): records from there were never read, and none is skipped as inside a
    /// restored cut.
    pub fn rewound(&mut self, offset: i64) {
        self.next = offset;
        self.read_to = offset;
        self.after.clear();
    }

    /// The epoch this partition lets its source's capability reach (None: it holds it).
    pub fn watermark_epoch(&self, event: &EventTime) -> Option<Epoch> {
        self.clock.watermark.map(|w| event.epoch_of(w))
    }

    /// Where to resume as of cut `cut`: at the first record given on past the cut.
    pub fn position(&self, cut: Epoch) -> Position {
        let read_to = self.next.max(self.read_to);
        let past: Vec<&Run> = self.inflight.iter().filter(|r| r.epoch > cut).collect();
        // Records of the restored cut not read again yet are still to be skipped.
        let mut after: Vec<i64> = past.iter().flat_map(|r| r.offsets()).collect();
        after.extend(self.after.iter().copied());
        after.sort_unstable();
        match past.first() {
            Some(run) => Position {
                offset: run.offset,
                byte: run.byte,
                clock: run.clock,
                read_to,
                after,
                fingerprint: self.fingerprint.clone(),
                tail: None,
            },
            None if self.next < self.read_to => Position {
                offset: self.next,
                byte: self.next_byte,
                clock: self.clock,
                read_to,
                after,
                fingerprint: self.fingerprint.clone(),
                tail: None,
            },
            None => Position {
                offset: self.next,
                byte: self.next_byte,
                clock: self.clock,
                read_to: self.next,
                after: Vec::new(),
                fingerprint: self.fingerprint.clone(),
                tail: None,
            },
        }
    }

    /// Forgets records no cut from `cap` on can need again (their epoch is at or before it).
    pub fn prune(&mut self, cap: Epoch) {
        self.inflight.retain(|r| r.epoch > cap);
    }
}

/// Gives `records` on, each at its epoch (`records` is left empty, its room kept). A turn's
/// records share one epoch most of the time: they are given in one session; else grouped by
/// epoch, each epoch's in the order they came.
pub fn give_stamped(
    output: &mut OutputBuilderSession<'_, Epoch, Trimming<SourceRecord>>,
    cap: &Capability<Epoch>,
    records: &mut Vec<(Epoch, SourceRecord)>,
) {
    let Some(&(first, _)) = records.first() else {
        return;
    };
    if records.iter().all(|(e, _)| *e == first) {
        output
            .session_with_builder(&cap.delayed(&first.max(*cap.time())))
            .give_iterator(records.drain(..).map(|(_, r)| r));
        return;
    }
    let mut by_epoch: BTreeMap<Epoch, Vec<SourceRecord>> = BTreeMap::new();
    for (e, r) in records.drain(..) {
        by_epoch.entry(e).or_default().push(r);
    }
    for (e, rs) in by_epoch {
        output
            .session_with_builder(&cap.delayed(&e.max(*cap.time())))
            .give_iterator(rs.into_iter());
    }
}

/// What the file source needs.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// The partitions: partition `i` is `paths[i]`, read by worker `i % peers`.
    pub paths: Vec<PathBuf>,
    /// Each partition's name, `file:<path as written in the job>`; its records carry it with
    /// the file's fingerprint ([`printed_name`]).
    pub names: Vec<Arc<str>>,
    /// Lines read per turn.
    pub batch_lines: usize,
    /// Records given on and not yet sent before the source waits.
    pub in_flight: usize,
    /// Epochs and lateness.
    pub event: EventTime,
    /// Keep reading lines appended to the file.
    pub follow: bool,
    /// The partitions are a directory's files.
    pub directory: bool,
}

/// The source name a file's records carry (message ids derive from it and the line):
/// `file:<path>#` and the first 8 hex digits of the file's [`fingerprint`]. A file that
/// replaced another at the same path gives its lines other ids than the old file's (the same
/// ids would mix two messages in the tracking and the recall book), and a replay of the same
/// file gives the ids it gave before. `base` alone until the file has a first line.
pub fn printed_name(base: &str, fingerprint: Option<&str>) -> Arc<str> {
    match fingerprint.and_then(|f| f.strip_prefix("xxh3:")) {
        Some(hex) => format!("{base}#{}", &hex[..hex.len().min(8)]).into(),
        None => base.into(),
    }
}

/// The fingerprint of a file: a hash of its first line (at most 4 KiB), stable while lines are
/// appended. `None` while the file has no complete first line.
pub fn fingerprint(path: &std::path::Path) -> std::io::Result<Option<String>> {
    file_fingerprint(&File::open(path)?)
}

/// [`fingerprint`] of an open file (read from its start, whatever its reader's place).
fn file_fingerprint(f: &File) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let got = f.read_at(&mut buf[n..], n as u64)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = &buf[..n];
    let first = match head.iter().position(|&b| b == b'\n') {
        Some(i) => &head[..=i],
        None if n == buf.len() => head,
        None => return Ok(None),
    };
    Ok(Some(first_line_print(first)))
}

/// The fingerprint of a file from its first line as read (its newline, if any, included):
/// what [`fingerprint`] gives the file (its first 4 KiB at most, without the newline).
fn first_line_print(line: &[u8]) -> String {
    let first = line.strip_suffix(b"\n").unwrap_or(line);
    line_print(&first[..first.len().min(4096)])
}

/// The fingerprint of a file whose first line (its first 4 KiB at most, without the newline)
/// is `first`.
pub fn line_print(first: &[u8]) -> String {
    format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(first))
}

/// Reads one line of at most `max` bytes into `line` (the rest of a longer line is skipped);
/// returns the bytes consumed (0 at the end), the line's full length and whether its newline
/// was read (false: the end of the file came first).
fn read_line_capped(
    r: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(u64, usize, bool)> {
    line.clear();
    let mut consumed = 0u64;
    let mut full = 0usize;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((consumed, full, false));
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = (max + 1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        full += n;
        consumed += n as u64;
        r.consume(n);
        if done {
            return Ok((consumed, full, true));
        }
    }
}

/// A record too large to judge: kept as a prefix and its size.
pub(crate) fn oversized(bytes: &[u8], full: usize) -> Vec<u8> {
    let keep = &bytes[..bytes.len().min(4096)];
    let mut s = String::from_utf8_lossy(keep).into_owned();
    s.push_str(&format!(
        "… [record of {full} bytes, over the {MAX_RECORD_BYTES}-byte limit]"
    ));
    s.into_bytes()
}

/// Why a record is refused for its size, if it is.
pub fn too_large(full: usize) -> Option<String> {
    (full > MAX_RECORD_BYTES).then(|| {
        format!(
            "record of {full} bytes is over the {MAX_RECORD_BYTES}-byte limit; the dead letter keeps its first 4096 bytes"
        )
    })
}

/// One partition file being read.
struct FilePart {
    path: PathBuf,
    /// The partition's name in the job (`file:<path>`), and with the file's fingerprint
    /// ([`printed_name`]): the source its records carry.
    base: Arc<str>,
    name: Arc<str>,
    reader: BufReader<File>,
    part: Partition,
    /// At its end (and not following).
    done: bool,
    /// Following, at its end: another file (or this one truncated) is at the path.
    rotation: Rotation,
    /// Following: the byte it was last at its end at, and the print of the (at most 4 KiB)
    /// bytes before it. Grown past it with other bytes there, it was truncated and written
    /// again ([`FilePart::rewritten`]): not appended to.
    end: Option<(u64, String)>,
    /// Following: rotations of the path made after the file being read and before the one at
    /// the path (a job down over several rotations, [`rotated_between`]), read in turn, each
    /// from its start, before the path's file.
    then: std::collections::VecDeque<PathBuf>,
    /// Following a path with no file at it ([`no_file_yet`]): the position restored, kept
    /// for the file made there (the one the checkpoint read, come back, is read on).
    awaits: Option<Position>,
}

/// A followed file at its end that another file replaced at its path (a rotation), or that was
/// truncated below what was read of it.
#[derive(Debug, Default)]
struct Rotation {
    /// What happened, while it is so.
    seen: Option<Replaced>,
    /// Since when the old file has been idle (read to its end, its length unchanged): it is
    /// read on until that lasts [`SWITCH_AFTER`] (its writer may append to it until it
    /// reopens the path). Real time, not the run's clock: a fixed `--now` does not stop the
    /// writer.
    idle_since: Option<std::time::Instant>,
    /// The old file's length at the last look.
    len: u64,
    /// Idle long enough: a last line without its newline is read as a line.
    draining: bool,
}

/// How long a followed file replaced at its path must have been idle before the new one is read.
const SWITCH_AFTER: Duration = Duration::from_secs(1);

/// What stands at a followed file's path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replaced {
    /// Another file (a rotation).
    Another,
    /// This one, truncated below what was read of it.
    Truncated,
    /// A file, where there was none when the source began ([`no_file_yet`]).
    Made,
}

impl Replaced {
    fn why(self) -> &'static str {
        match self {
            Replaced::Another => "another file is at its path",
            Replaced::Truncated => "it was truncated",
            Replaced::Made => "a file is at its path now",
        }
    }
}

/// The `tail` of a position whose bytes are not the ones read (the file was truncated under
/// the reader): no file matches it, so a restart reads the path from its start.
const NOT_READ: &str = "xxh3:not-read";

impl FilePart {
    /// The partition of the file at `path`, opened.
    fn new(path: PathBuf, base: Arc<str>, o: Opened) -> FilePart {
        FilePart {
            path,
            name: printed_name(&base, o.part.fingerprint.as_deref()),
            base,
            reader: o.reader,
            part: o.part,
            done: false,
            rotation: Rotation::default(),
            end: None,
            then: o.then.into(),
            awaits: o.awaits,
        }
    }

    /// Where to resume as of cut `cut`, with the print of the bytes before that place.
    fn position(&self, cut: Epoch) -> Position {
        let mut p = self.part.position(cut);
        if p.byte > 0 {
            let print = match (&self.awaits, self.rotation.seen) {
                (Some(restored), _) => restored.tail.clone(),
                (_, Some(Replaced::Truncated)) => None,
                _ => tail_print(self.reader.get_ref(), p.byte),
            };
            p.tail = Some(print.unwrap_or_else(|| NOT_READ.into()));
        }
        p
    }

    /// Following a file at its end: why another file stands at its path now (rotated away, or
    /// truncated in place), if it does, and the length of the file being read. A path with no
    /// file yet (between a rotation's rename and its new file) is not a replacement yet; nor,
    /// in a directory source, is a file still linked (renamed: the next run's listing has it,
    /// and `files_in_place` says what to do).
    fn replaced(&self, directory: bool) -> Option<(Replaced, u64)> {
        use std::os::unix::fs::MetadataExt;
        let open = self.reader.get_ref().metadata().ok()?;
        if !self.then.is_empty() {
            return Some((Replaced::Another, open.len()));
        }
        let now = std::fs::metadata(&self.path).ok()?;
        // A FIFO or a directory made at the path is no file to read (opening a FIFO waits
        // for a writer): the file being read is read on.
        if !now.is_file() {
            return None;
        }
        if !open.is_file() {
            return Some((Replaced::Made, 0));
        }
        if (now.dev(), now.ino()) != (open.dev(), open.ino()) {
            if directory && open.nlink() > 0 {
                return None;
            }
            return Some((Replaced::Another, open.len()));
        }
        (now.len() < self.part.next_byte).then_some((Replaced::Truncated, open.len()))
    }

    /// Following: the file has grown past where it was last at its end, and the bytes before
    /// that place are not the ones read (truncated and written again, longer than what was
    /// read: what follows them is not the rest of a line read).
    fn rewritten(&self) -> bool {
        let Some((byte, print)) = &self.end else {
            return false;
        };
        let file = self.reader.get_ref();
        *byte == self.part.next_byte
            && file.metadata().is_ok_and(|m| m.len() > *byte)
            && tail_print(file, *byte).as_ref() != Some(print)
    }

    /// Following, at its end: keeps the print of the bytes before it for [`Self::rewritten`]
    /// (taken again only when the end moved).
    fn mark_end(&mut self) {
        let byte = self.part.next_byte;
        if self.end.as_ref().is_some_and(|(b, _)| *b == byte) {
            return;
        }
        self.end = tail_print(self.reader.get_ref(), byte).map(|print| (byte, print));
    }

    /// Reads the file now at the path: on from where the old one was read to when it begins
    /// with the same bytes (a copy with lines added, moved over the path), else from its start
    /// as a partition of its own lines (their ids carry its fingerprint), the watermark kept.
    /// A rotation between the two ([`FilePart::then`]) is read first, the same way.
    fn switch(&mut self, seen: Replaced, directory: bool) -> std::io::Result<()> {
        let why = seen.why();
        let clock = self.part.clock;
        if seen == Replaced::Made {
            // As at the start, with the position restored then: the file the checkpoint read,
            // come back, is read on.
            tracing::info!("file source {}: {why}", self.path.display());
            let opened = open_at(
                &self.path,
                self.part.id,
                self.awaits.as_ref(),
                true,
                directory,
            )?;
            *self = FilePart::new(self.path.clone(), self.base.clone(), opened);
            self.part.clock = clock;
            return Ok(());
        }
        let between = self.then.pop_front();
        let file = File::open(between.as_ref().unwrap_or(&self.path))?;
        let at = self.part.next_byte;
        // A truncated file is the one being read: its bytes are no print of what was read.
        let same = seen == Replaced::Another
            && at > 0
            && file.metadata()?.len() >= at
            && file_fingerprint(&file)? == self.part.fingerprint
            && tail_print(&file, at) == tail_print(self.reader.get_ref(), at);
        let mut reader = BufReader::with_capacity(1 << 20, file);
        if same {
            reader.seek(SeekFrom::Start(at))?;
            tracing::info!(
                "file source {}: {why}, beginning with what was read of the old one; reading on \
                 at line {}",
                self.path.display(),
                self.part.next
            );
        } else {
            match &between {
                Some(b) => tracing::info!(
                    "file source {}: reading {} from its start, rotated after the file read \
                     before it",
                    self.path.display(),
                    b.display()
                ),
                None => tracing::info!(
                    "file source {}: {why}; reading the new file from its start",
                    self.path.display()
                ),
            }
            self.part = Partition::new(self.part.id, None, 1);
            self.part.clock = clock;
            self.name = self.base.clone();
        }
        self.reader = reader;
        self.rotation = Rotation::default();
        self.end = None;
        Ok(())
    }
}

/// The print of the (at most 4 KiB) bytes of `file` before `byte`; `None` at the start, or
/// when they cannot be read.
fn tail_print(file: &File, byte: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let from = byte.saturating_sub(4096);
    let mut buf = vec![0u8; (byte - from) as usize];
    if buf.is_empty() || file.read_exact_at(&mut buf, from).is_err() {
        return None;
    }
    Some(line_print(&buf))
}

/// Reads the job's file partitions: worker `w` reads partitions `i % peers == w`, each with its
/// own watermark; exchange the stream to spread the lines over every worker.
pub fn file_source<'s>(
    scope: Scope<'s, Epoch>,
    settings: FileSettings,
    progress: ProbeHandle<Epoch>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    checkpoints: Checkpoints,
    live: Live,
) -> StreamVec<'s, Epoch, SourceRecord> {
    let (index, peers) = (scope.index(), scope.peers());
    let owned: Vec<usize> = (0..settings.paths.len())
        .filter(|i| i % peers == index)
        .collect();
    let reads = !owned.is_empty();
    if reads {
        checkpoints.register_source();
    }
    source::<_, Trimming<SourceRecord>, _, _>(scope, "FileSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let FileSettings {
            paths,
            names,
            batch_lines,
            in_flight,
            event,
            follow,
            directory,
        } = settings;
        let mut cap = reads.then_some(cap);
        let mut parts: Vec<FilePart> = Vec::new();
        let mut flight = InFlight::default();
        let mut line = Vec::new();
        // A turn's records, kept between turns with its room (a new one each turn grew
        // by doubling, copying each record twice).
        let mut batch: Vec<(Epoch, SourceRecord)> = Vec::new();
        let mut opened = false;
        // The largest epoch a record was given at.
        let mut given_max: Epoch = 0;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if !opened {
                opened = true;
                parts = open_parts(&owned, &paths, &names, &checkpoints, follow, directory);
            }
            let positions = |parts: &[FilePart], cut: Epoch| -> BTreeMap<i32, Position> {
                parts.iter().map(|f| (f.part.id, f.position(cut))).collect()
            };
            if stop.load(Ordering::Relaxed) {
                // Ctrl-C / SIGTERM: stop at the next cut (read on until the watermark
                // passes it, then hold there; see `Checkpoints::request_stop`).
                checkpoints.request_stop();
            }
            let hold = checkpoints.source_turn(index, *c.time(), true);
            let stop_bound = checkpoints.stop_bound();
            if stop_bound.is_some_and(|b| *c.time() >= b) {
                // Stopped at the cut: the capability stays until the run leaves.
                for cut in checkpoints.cuts_to_deposit(index, *c.time()) {
                    checkpoints.deposit(cut, index, positions(&parts, cut));
                }
                activator.activate_after(Duration::from_millis(100));
                return;
            }
            if !flight.full(&progress, *c.time(), in_flight) {
                let turn = Turn {
                    lines: batch_lines,
                    now: clock.now_ms(),
                    event: &event,
                    at: *c.time(),
                    follow,
                    directory,
                    live: &live,
                };
                read_turn(&mut parts, &turn, &mut line, &mut batch);
            }
            for (e, _) in &batch {
                flight.add(*e, 1);
                given_max = given_max.max(*e);
            }
            give_stamped(output, c, &mut batch);
            for f in &parts {
                live.source().set(f.part.id, f.part.next, None);
                live.source()
                    .set_watermark(f.part.id, f.part.clock.watermark);
            }
            if parts.iter().all(|f| f.done) {
                checkpoints.source_finished(index, given_max, |cut| positions(&parts, cut));
                cap = None;
                return;
            }
            // The least watermark of the partitions still being read; one that has none
            // yet holds the capability where it is.
            let mut target = least_watermark(&parts, &event).unwrap_or(*c.time());
            if let Some(h) = hold {
                target = target.min(h);
            }
            if let Some(b) = stop_bound {
                target = target.min(b);
            }
            if target > *c.time() {
                for cut in checkpoints.cuts_to_deposit(index, target) {
                    checkpoints.deposit(cut, index, positions(&parts, cut));
                }
                c.downgrade(&target);
                for f in parts.iter_mut() {
                    f.part.prune(target);
                }
            }
            let waiting = parts.iter().all(|f| f.done || f.part.caught_up);
            if waiting {
                activator.activate_after(Duration::from_millis(100));
            } else if flight.full(&progress, *c.time(), in_flight) || hold.is_some() {
                activator.activate_after(Duration::from_millis(1));
            } else {
                activator.activate();
            }
        }
    })
}

/// Opens the partitions this worker owns at their restored positions.
fn open_parts(
    owned: &[usize],
    paths: &[PathBuf],
    names: &[Arc<str>],
    checkpoints: &Checkpoints,
    follow: bool,
    directory: bool,
) -> Vec<FilePart> {
    let restored = checkpoints.restored_positions();
    owned
        .iter()
        .map(|&i| {
            match open_at(
                &paths[i],
                i as i32,
                restored.get(&(i as i32)),
                follow,
                directory,
            ) {
                Ok(opened) => FilePart::new(paths[i].clone(), names[i].clone(), opened),
                Err(e) => panic!("file source {}: {e}", paths[i].display()),
            }
        })
        .collect()
}

/// What one turn of the file source reads with.
struct Turn<'a> {
    /// Lines per turn, shared by the partitions.
    lines: usize,
    /// The wall clock.
    now: Millis,
    event: &'a EventTime,
    /// The source's capability.
    at: Epoch,
    follow: bool,
    /// The partitions are a directory's files.
    directory: bool,
    live: &'a Live,
}

/// Reads a share of the turn's lines from every partition still being read; a partition at
/// its end is caught up (following: its watermark moves with the wall clock), else done.
fn read_turn(
    parts: &mut [FilePart],
    turn: &Turn,
    line: &mut Vec<u8>,
    batch: &mut Vec<(Epoch, SourceRecord)>,
) {
    let share = (turn.lines.max(1) / parts.len().max(1)).max(1);
    for f in parts.iter_mut().filter(|f| !f.done) {
        let at = f.part.next_byte;
        // A followed file written again over what was read is a truncated one; a truncated
        // file has nothing more of it to read.
        if turn.follow && f.rewritten() {
            f.rotation.seen = Some(Replaced::Truncated);
        }
        let eof = f.rotation.seen == Some(Replaced::Truncated)
            || read_lines(
                f,
                share,
                line,
                turn.now,
                turn.event,
                turn.at,
                turn.follow && !f.rotation.draining,
                turn.live,
                batch,
            );
        if eof {
            f.part.caught_up = true;
            if turn.follow {
                f.mark_end();
                follow_rotation(f, f.part.next_byte != at, turn);
                // A caught-up file moves its watermark with the wall clock.
                f.part
                    .clock
                    .raise(turn.now.saturating_sub(turn.event.max_out_of_order_ms));
            } else {
                f.done = true;
            }
        }
    }
}

/// A followed file at its end that another replaced at its path is read on until it has been
/// idle for [`SWITCH_AFTER`] (`moved`: this turn read some of it), then once more for a last
/// line without its newline (a truncated one has nothing more to read); the file at the path
/// is read once no record of the old one can be past a future cut (none in flight, the
/// capability past the last one's epoch: the new file's records come after every old one's).
fn follow_rotation(f: &mut FilePart, moved: bool, turn: &Turn) {
    // A truncation stays seen until the switch, written past what was read since or not.
    let truncated =
        (f.rotation.seen == Some(Replaced::Truncated)).then_some((Replaced::Truncated, 0));
    let Some((seen, len)) = truncated.or_else(|| f.replaced(turn.directory)) else {
        if !f.rotation.draining {
            f.rotation = Rotation::default();
        }
        return;
    };
    let r = &mut f.rotation;
    if r.seen.is_none() || moved || len != r.len {
        (r.seen, r.idle_since, r.len) = (Some(seen), Some(std::time::Instant::now()), len);
    }
    // A truncated file has no more of its old lines to read (its writer's appends after the
    // truncation are the new content's): only a rotated one is waited for.
    if seen == Replaced::Another {
        if r.idle_since.is_some_and(|t| t.elapsed() < SWITCH_AFTER) {
            return;
        }
        if !r.draining {
            r.draining = true;
            return;
        }
    }
    // Every record is given at or past the capability of its time and forgotten (`prune`) once
    // the capability passes it: past the last one, none is in flight either.
    if f.part.given_max.is_some_and(|e| e >= turn.at) {
        return;
    }
    if let Err(e) = f.switch(seen, turn.directory) {
        // Gone again between the look and the open: looked at again next turn.
        tracing::warn!("file source {}: {e}", f.path.display());
    }
}

/// The least watermark epoch of the partitions still being read; `None` while one of them
/// has none yet (it holds the capability where it is).
fn least_watermark(parts: &[FilePart], event: &EventTime) -> Option<Epoch> {
    parts
        .iter()
        .filter(|f| !f.done)
        .map(|f| f.part.watermark_epoch(event))
        .collect::<Option<Vec<Epoch>>>()
        .and_then(|w| w.into_iter().min())
}

/// Reads up to `max` lines of one partition into `batch`; returns whether it reached the end
/// (following: a line still being written waits for its newline).
fn read_lines(
    f: &mut FilePart,
    max: usize,
    line: &mut Vec<u8>,
    now: Millis,
    event: &EventTime,
    floor: Epoch,
    follow: bool,
    live: &Live,
    batch: &mut Vec<(Epoch, SourceRecord)>,
) -> bool {
    for _ in 0..max {
        let (n, full, ended) = match read_line_capped(&mut f.reader, line, MAX_RECORD_BYTES) {
            Ok(got) => got,
            Err(e) => panic!(
                "file source {}: line {}: {e}",
                f.path.display(),
                f.part.next
            ),
        };
        if n == 0 || (follow && !ended) {
            if n > 0 {
                let _ = f.reader.seek_relative(-(n as i64));
            }
            return true;
        }
        if f.part.fingerprint.is_none() && f.part.next == 1 {
            // Of the line just read, not of the path again: the file there may have been
            // replaced since it was opened, and a last line without its newline counts too.
            f.part.fingerprint = Some(first_line_print(line));
            f.name = printed_name(&f.base, f.part.fingerprint.as_deref());
        }
        let offset = f.part.next;
        let big = too_large(full);
        let bytes = line.trim_ascii();
        if bytes.is_empty() {
            f.part.next += 1;
            f.part.next_byte += n;
            continue;
        }
        // An envelope's payload is taken out here, where its `ts` is read: the record then
        // goes on as a Kafka record would (the request body and its timestamp), and the line's
        // JSON is parsed once.
        let (time, payload) = match &big {
            Some(why) => (Err(why.clone()), None),
            None => {
                let read = read_line(bytes, now);
                (read.time, read.payload)
            }
        };
        let timestamp = payload.as_ref().and(time.as_ref().ok().copied());
        let Some(s) = f.part.stamp(offset, n, time, now, event, floor) else {
            continue;
        };
        if s.late_by > 0 {
            live.source().add_late(f.part.id, 1);
        }
        let bytes = match (big, payload) {
            (Some(_), _) => oversized(bytes, full),
            (None, Some(payload)) => payload,
            (None, None) => bytes.to_vec(),
        };
        batch.push((
            s.epoch,
            SourceRecord {
                source: f.name.clone(),
                partition: f.part.id,
                offset,
                bytes,
                read_time: now,
                timestamp,
                event_time: s.event_time,
                late_by: s.late_by,
                bad_time: s.bad_time,
            },
        ));
    }
    false
}

/// Opens a partition file at its restored position when it is the same file (same
/// fingerprint, not shorter, the same bytes before that position); otherwise from the start,
/// saying why. When another file is at the path and the one the checkpoint read is beside it
/// under another name (rotated while the job was down: [`rotated_away`]), a followed file
/// (`follow`) is that one, read on from the position: once it is idle the file at the path is
/// read from its start (`follow_rotation`), as when the rotation happens while it runs. (A
/// directory's renamed file is its listing's business: `files_in_place`.) A followed path with
/// no file at it yet is [`no_file_yet`]'s.
fn open_at(
    path: &std::path::Path,
    id: i32,
    restored: Option<&Position>,
    follow: bool,
    directory: bool,
) -> std::io::Result<Opened> {
    let file = match File::open(path) {
        Err(e) if follow && e.kind() == std::io::ErrorKind::NotFound => {
            return no_file_yet(path, id, restored, directory);
        }
        file => file?,
    };
    let len = file.metadata()?.len();
    let fp = file_fingerprint(&file)?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let fresh = |fp| {
        let mut p = Partition::new(id, None, 1);
        p.fingerprint = fp;
        p
    };
    let Some(pos) = restored else {
        return Ok(Opened::at(reader, fresh(fp)));
    };
    if pos.byte == 0 {
        // Nothing was read (an empty file, a first line still being written, no file yet).
        return Ok(Opened::at(reader, fresh(fp)));
    }
    let why = if pos.fingerprint.is_none() || pos.fingerprint != fp {
        Some("its first line differs")
    } else if pos.byte > len {
        Some("it is shorter")
    } else if pos.tail.is_some() && tail_print(reader.get_ref(), pos.byte) != pos.tail {
        Some("the lines before the place it was read to differ")
    } else {
        None
    };
    if let Some(why) = why {
        let not_it = format!(
            "file source {}: not the file the checkpoint read ({why})",
            path.display()
        );
        match (!directory)
            .then(|| rotated_away(path, pos, fp.clone()))
            .flatten()
        {
            Some(r) if follow => return read_rotated(r, path, id, pos, &not_it),
            Some((old, file, then)) => tracing::warn!(
                "{not_it}; reading it from the start. The file the checkpoint read is {} now \
                 (rotated), {} bytes of it unread{}: a job that follows the path \
                 (`source.follow = true`) reads them first",
                old.display(),
                file.metadata()
                    .map_or(0, |m| m.len())
                    .saturating_sub(pos.byte),
                match then.as_slice() {
                    [] => String::new(),
                    then => format!(", and after it{} unread", listed(then)),
                }
            ),
            None => tracing::info!("{not_it}; reading it from the start"),
        }
        return Ok(Opened::at(reader, fresh(fp)));
    }
    resume(reader, path, id, pos, Vec::new())
}

/// A partition file opened where its run resumes.
struct Opened {
    reader: BufReader<File>,
    part: Partition,
    /// [`FilePart::then`].
    then: Vec<PathBuf>,
    /// [`FilePart::awaits`].
    awaits: Option<Position>,
}

impl Opened {
    fn at(reader: BufReader<File>, part: Partition) -> Opened {
        Opened {
            reader,
            part,
            then: Vec::new(),
            awaits: None,
        }
    }
}

/// Reads on from restored position `pos`.
fn resume(
    mut reader: BufReader<File>,
    path: &std::path::Path,
    id: i32,
    pos: &Position,
    then: Vec<PathBuf>,
) -> std::io::Result<Opened> {
    reader.seek(SeekFrom::Start(pos.byte))?;
    tracing::info!(
        "file source {}: resuming at line {} (read before; `tidings run --from-start` replays it)",
        path.display(),
        pos.read_to.max(pos.offset)
    );
    Ok(Opened {
        then,
        ..Opened::at(reader, Partition::new(id, Some(pos.clone()), 1))
    })
}

/// Reads the file the checkpoint read on under its rotated name, then the ones rotated after
/// it (`lead`: what is at the path, for the message).
fn read_rotated(
    (old, file, then): Rotated,
    path: &std::path::Path,
    id: i32,
    pos: &Position,
    lead: &str,
) -> std::io::Result<Opened> {
    tracing::info!(
        "{lead}; the file the checkpoint read is {} now (rotated): reading it on, then{} the \
         file at the path from its start",
        old.display(),
        listed(&then)
    );
    resume(BufReader::with_capacity(1 << 20, file), path, id, pos, then)
}

/// " a, b," : the files of a list, for a message.
fn listed(files: &[PathBuf]) -> String {
    files.iter().map(|f| format!(" {},", f.display())).collect()
}

/// A followed path with no file at it (its writer has not begun, or a rotation renamed it and
/// has not made the new one yet). The file the checkpoint read, when it is beside it under
/// another name ([`rotated_away`]), is read on; else nothing is read until a file is there: the
/// partition reads an empty stand-in (`/dev/null`, always at its end) until
/// [`FilePart::replaced`] sees one (`Made`), then that file from its start.
fn no_file_yet(
    path: &std::path::Path,
    id: i32,
    restored: Option<&Position>,
    directory: bool,
) -> std::io::Result<Opened> {
    let shown = path.display();
    if let Some(pos) = restored.filter(|_| !directory)
        && let Some(r) = rotated_away(path, pos, None)
    {
        let lead = format!("file source {shown}: no file at the path");
        return read_rotated(r, path, id, pos, &lead);
    }
    let restored = restored.filter(|pos| pos.byte > 0);
    match restored {
        Some(_) => tracing::warn!(
            "file source {shown}: no file at the path, and the file the checkpoint read is not \
             beside it under another name; reading the file made at the path (on from the \
             checkpoint if it is that file)"
        ),
        None => tracing::info!(
            "file source {shown}: no file at the path yet; reading it once one is there"
        ),
    }
    let part = Partition::new(id, restored.cloned(), 1);
    Ok(Opened {
        awaits: restored.cloned(),
        ..Opened::at(BufReader::new(File::open("/dev/null")?), part)
    })
}

/// The file a checkpoint read, found beside the path under another name (its name, the file),
/// and the rotations made after it ([`rotated_between`]).
type Rotated = (PathBuf, File, Vec<PathBuf>);

/// The file a checkpoint read, found beside `path` under another name: a file of `path`'s
/// directory, not `path`, that begins with the checkpoint's first line and has its bytes before
/// the place it read to (a rotation while the job was down: `app.log` renamed `app.log.1`).
/// Of two such (copies), the longer; of two as long, the first by name. `at_path`: the first
/// line print of the file at the path, if there is one.
fn rotated_away(
    path: &std::path::Path,
    pos: &Position,
    at_path: Option<String>,
) -> Option<Rotated> {
    let tail = pos
        .tail
        .as_deref()
        .filter(|t| *t != NOT_READ && pos.byte > 0)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name()?;
    // The directory's regular files but the path's, looked at before they are opened
    // (opening a FIFO waits for a writer).
    let beside: Vec<(PathBuf, std::fs::Metadata)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name() != name)
        .filter_map(|e| {
            let m = std::fs::metadata(e.path()).ok().filter(|m| m.is_file())?;
            Some((e.path(), m))
        })
        .collect();
    let mut found: Option<(u64, &PathBuf, File)> = None;
    for (candidate, m) in beside.iter().filter(|(_, m)| m.len() >= pos.byte) {
        let Ok(file) = File::open(candidate) else {
            continue;
        };
        let same = file_fingerprint(&file).ok().flatten() == pos.fingerprint
            && tail_print(&file, pos.byte).as_deref() == Some(tail);
        let better = match &found {
            None => true,
            Some((l, p, _)) => m.len() > *l || (m.len() == *l && candidate < *p),
        };
        if same && better {
            found = Some((m.len(), candidate, file));
        }
    }
    let (_, old, file) = found?;
    let mut seen = vec![pos.fingerprint.clone(), at_path];
    let then = rotated_between(name, old, &file, &beside, &mut seen);
    Some((old.clone(), file, then))
}

/// The rotations of the path (file name `name`) made after `old` (the file the checkpoint
/// read, found under its rotated name) and before the file at the path: a job down over several
/// rotations (`app.log.2` read on, then `app.log.1`, then `app.log`). They are the files
/// `beside` it named after the path (`app.log` + a suffix, not a compressed one) last written
/// after `old`, in the order they were last written, without copies (a file beginning with a
/// first line `seen`: of `old`, of the path's file, or of one listed before it). Two last
/// written in one clock tick are ordered by their suffixes ([`rotation_age`]).
fn rotated_between(
    name: &std::ffi::OsStr,
    old: &std::path::Path,
    file: &File,
    beside: &[(PathBuf, std::fs::Metadata)],
    seen: &mut Vec<Option<String>>,
) -> Vec<PathBuf> {
    const PACKED: [&str; 6] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip"];
    let (Some(name), Ok(since)) = (name.to_str(), file.metadata().and_then(|m| m.modified()))
    else {
        return Vec::new();
    };
    let suffix = |p: &std::path::Path| {
        let other = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        other.strip_prefix(name).map(str::to_owned)
    };
    let old_age = (since, rotation_age(suffix(old).unwrap_or_default()));
    let mut found: Vec<(_, &PathBuf)> = beside
        .iter()
        .filter(|(candidate, _)| candidate != old)
        .filter_map(|(candidate, m)| {
            let suffix = suffix(candidate)
                .filter(|s| !s.is_empty() && !PACKED.iter().any(|p| s.ends_with(p)))?;
            let age = (m.modified().ok()?, rotation_age(suffix));
            Some((age, candidate)).filter(|(age, _)| *age > old_age)
        })
        .collect();
    found.sort();
    let mut between = Vec::new();
    for (_, candidate) in found {
        let print = fingerprint(candidate).ok().flatten();
        if print.is_some() && !seen.contains(&print) {
            seen.push(print);
            between.push(candidate.clone());
        }
    }
    between
}

/// How two rotations of a path last written in one clock tick are ordered, the older first:
/// numbered ones (`app.log.2`, then `app.log.1`: logrotate's numbers count back) by their
/// numbers, the greater first; others (`app.log-20261207`) by name.
fn rotation_age(suffix: String) -> (bool, std::cmp::Reverse<u64>, String) {
    match suffix.strip_prefix('.').and_then(|n| n.parse::<u64>().ok()) {
        Some(n) => (false, std::cmp::Reverse(n), String::new()),
        None => (true, std::cmp::Reverse(0), suffix),
    }
}

/// Refuses to resume a directory source whose files moved: a directory's files are its
/// partitions in name order, and a partition's number is in its records' message ids, so a
/// file the checkpoint read that now stands at another place (a file added or removed before
/// it) would be read again from its start under new ids and sent again.
pub fn files_in_place(
    dir: &std::path::Path,
    paths: &[PathBuf],
    restored: &BTreeMap<i32, Position>,
) -> Result<(), String> {
    let prints: Vec<Option<String>> = paths
        .iter()
        .map(|p| fingerprint(p).ok().flatten())
        .collect();
    for (&was, pos) in restored {
        let Some(fp) = pos.fingerprint.as_ref() else {
            continue;
        };
        let here = usize::try_from(was)
            .ok()
            .and_then(|i| prints.get(i))
            .cloned()
            .flatten();
        if here.as_ref() == Some(fp) {
            continue;
        }
        // Moved only when exactly one file now has its first line (two files may begin
        // alike; then, as with none, the file at its place is read as a replaced one).
        let mut same = prints
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref() == Some(fp));
        if let (Some((now, _)), None) = (same.next(), same.next()) {
            let name = paths[now].file_name().unwrap_or_default().to_string_lossy();
            return Err(format!(
                "source.path {}: {name} was partition {was} at the last checkpoint and is partition \
                 {now} now (a file was added or removed before it): a directory's files are its \
                 partitions in name order, so add files whose names sort after the others (or \
                 put the old file back); `tidings run --from-start` reads them all again",
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventTime {
        EventTime {
            epoch_ms: 100,
            max_out_of_order_ms: 1_000,
            max_future_ms: 86_400_000,
            backlog: tidings_operators::event_time::Backlog::NONE,
        }
    }

    const NOW: Millis = 1_763_740_800_000;

    #[test]
    fn envelope_times() {
        assert_eq!(
            line_event_time(br#"{"ts": 1763740800000, "payload": "{}"}"#, 5),
            Ok(1_763_740_800_000)
        );
        assert_eq!(line_event_time(br#"{"code": "send", "ts": 7}"#, 5), Ok(5));
        assert_eq!(line_event_time(br#"{"ts": -1, "payload": "{}"}"#, 5), Ok(5));
        assert_eq!(line_event_time(br#"{"ts": 0, "payload": "{}"}"#, 5), Ok(0));
        assert_eq!(line_event_time(b"{oops", 5), Ok(5));
        assert!(line_event_time(br#"{"ts": 1e30, "payload": "{}"}"#, 5).is_err());
        assert!(line_event_time(br#"{"ts": 9223372036854775808, "payload": "{}"}"#, 5).is_err());
        assert!(line_event_time(br#"{"ts": "x", "payload": "{}"}"#, 5).is_err());
    }

    /// The fingerprint taken from the first line as the source reads it is the file's own:
    /// a short line, one ending in CR LF, one longer than the 4 KiB hashed.
    #[test]
    fn the_first_line_read_gives_the_files_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(5000);
        for first in ["{\"a\":1}", "{\"a\":1}\r", long.as_str()] {
            let path = dir.path().join("f.jsonl");
            std::fs::write(&path, format!("{first}\nsecond\n")).unwrap();
            let mut line = Vec::new();
            let mut r = BufReader::new(File::open(&path).unwrap());
            read_line_capped(&mut r, &mut line, MAX_RECORD_BYTES).unwrap();
            assert_eq!(
                Some(first_line_print(&line)),
                fingerprint(&path).unwrap(),
                "{}",
                &first[..first.len().min(20)]
            );
        }
    }

    #[test]
    fn a_resumed_partition_skips_what_the_cut_holds_and_judges_the_same() {
        let e = event();
        let times = [
            NOW,
            NOW + 5_000,
            NOW + 300,
            NOW + 9_000,
            NOW + 8_500,
            NOW + 20_000,
        ];
        let mut a = Partition::new(0, None, 1);
        let mut stamps = Vec::new();
        let mut cap = 0;
        let mut cut_pos = None;
        for (i, &t) in times.iter().enumerate() {
            let s = a.stamp(i as i64 + 1, 10, Ok(t), NOW, &e, cap).unwrap();
            stamps.push(s);
            if i == 3 {
                // A cut at the watermark's epoch after four records.
                let c = a.watermark_epoch(&e).unwrap();
                cut_pos = Some((c, a.position(c)));
                cap = c;
                a.prune(cap);
            }
        }
        let (c, pos) = cut_pos.unwrap();
        // Replaying from the position gives on exactly the records past the cut, judged as before.
        let mut b = Partition::new(0, Some(pos.clone()), 1);
        let mut replayed = Vec::new();
        for (i, &t) in times.iter().enumerate().skip((pos.offset - 1) as usize) {
            if let Some(s) = b.stamp(i as i64 + 1, 10, Ok(t), NOW, &e, c) {
                replayed.push((i, s));
            }
        }
        let expected: Vec<(usize, Stamped)> = stamps
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, s)| *i > 3 || s.epoch > c)
            .collect();
        assert_eq!(replayed, expected);
    }

    /// Records given on are remembered as runs of consecutive offsets at one epoch; a gap in
    /// the offsets (Kafka's compaction, transactions' markers) or another epoch starts a run,
    /// and a cut's position lists exactly the offsets past it.
    #[test]
    fn records_given_on_are_kept_as_runs_and_a_cut_lists_each_past_it() {
        let e = EventTime {
            max_out_of_order_ms: 0,
            ..event()
        };
        let mut p = Partition::new(0, None, 1);
        // (offset, event time): epochs of 100 ms; offset 5 is missing.
        let records = [
            (1, NOW),
            (2, NOW + 10),
            (3, NOW + 120),
            (4, NOW + 130),
            (6, NOW + 140),
            (7, NOW + 150),
            (8, NOW + 250),
        ];
        let mut epochs = Vec::new();
        for (offset, t) in records {
            epochs.push(p.stamp(offset, 10, Ok(t), NOW, &e, 0).unwrap().epoch);
        }
        assert_eq!(p.inflight.len(), 4, "{:?}", p.inflight);
        let first = epochs[0];
        let pos = p.position(first);
        assert_eq!((pos.offset, pos.byte), (3, 20));
        assert_eq!(pos.after, vec![3, 4, 6, 7, 8]);
        assert_eq!(pos.clock.max_seen, Some(NOW + 10));
        let pos = p.position(epochs[2]);
        assert_eq!((pos.offset, pos.after), (8, vec![8]));
        p.prune(epochs[2]);
        assert_eq!(p.inflight.len(), 1);
        assert_eq!(p.position(epochs[6]).after, Vec::<i64>::new());
    }

    #[test]
    fn bad_times_never_move_the_watermark() {
        let e = event();
        let mut p = Partition::new(0, None, 1);
        let s = p.stamp(1, 10, Ok(i64::MAX), NOW, &e, 3).unwrap();
        assert_eq!(s.epoch, 3);
        assert!(s.bad_time.unwrap().contains("max_future_ms"));
        assert_eq!(p.clock.watermark, None);
        let s = p.stamp(2, 10, Ok(-5), NOW, &e, 3).unwrap();
        assert!(s.bad_time.is_some());
    }

    #[test]
    fn long_lines_are_capped() {
        let mut text = vec![b'x'; 5000];
        text.push(b'\n');
        text.extend_from_slice(b"short\n");
        let mut r = std::io::Cursor::new(text);
        let mut line = Vec::new();
        let (n, full, ended) = read_line_capped(&mut r, &mut line, 100).unwrap();
        assert_eq!((n, full, line.len(), ended), (5001, 5001, 101, true));
        let (n, _, ended) = read_line_capped(&mut r, &mut line, 100).unwrap();
        assert_eq!((n, line.as_slice(), ended), (6, &b"short\n"[..], true));
        let mut r = std::io::Cursor::new(b"partial".to_vec());
        assert_eq!(
            read_line_capped(&mut r, &mut line, 100).unwrap(),
            (7, 7, false)
        );
    }
}
