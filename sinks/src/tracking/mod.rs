//! Tracking writers: the Parquet tables `events` and `dead_letters` (docs/tables.md), and an
//! in-memory collector for tests.
//!
//! Files are Hive-partitioned by the local date (`events/date=YYYY-MM-DD/`), named
//! `part-<run>-w<worker>-<seq>.parquet`, and always complete: written to a hidden `.tmp` file,
//! fsynced, then renamed.

pub mod compact;
pub mod object;
pub mod redis;

pub use object::{ObjectDir, TrackingDir};

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::SchemaRef;
use chrono::NaiveDate;
use chrono_tz::Tz;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding as ColumnEncoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tidings_model::schema::{dead_letters_schema, events_schema};
use tidings_model::time::local_date;
use tidings_model::{DeadLetter, EventRow, MessageMeta, Templates};

/// Where tracking rows go.
// One per worker: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Tracking {
    /// Parquet files under a directory.
    Parquet(ParquetTracking),
    /// A shared in-memory list (tests).
    Memory(MemoryTracking),
}

impl Tracking {
    /// Buffers an event row.
    pub fn event(&mut self, row: EventRow) {
        match self {
            Tracking::Parquet(p) => p.event(row),
            Tracking::Memory(m) => m.lock().events.push(row),
        }
    }

    /// Buffers a dead letter.
    pub fn dead(&mut self, row: DeadLetter) {
        match self {
            Tracking::Parquet(p) => p.dead(row),
            Tracking::Memory(m) => m.lock().dead.push(row),
        }
    }

    /// Rows buffered and not yet durable.
    pub fn buffered(&self) -> usize {
        match self {
            Tracking::Parquet(p) => p.buffered(),
            Tracking::Memory(_) => 0,
        }
    }

    /// Makes every buffered row durable.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Tracking::Parquet(p) => p.flush(),
            Tracking::Memory(_) => Ok(()),
        }
    }
}

/// Rows collected in memory.
#[derive(Debug, Default)]
pub struct Collected {
    /// Event rows.
    pub events: Vec<EventRow>,
    /// Dead letters.
    pub dead: Vec<DeadLetter>,
}

/// A shared in-memory collector.
#[derive(Debug, Clone, Default)]
pub struct MemoryTracking(pub Arc<Mutex<Collected>>);

impl MemoryTracking {
    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Event rows collected so far.
    pub fn events_len(&self) -> usize {
        self.lock().events.len()
    }

    /// Takes everything collected.
    pub fn take(&self) -> Collected {
        std::mem::take(&mut *self.lock())
    }
}

/// The Parquet writer of one worker.
pub struct ParquetTracking {
    dir: TrackingDir,
    tz: Tz,
    templates: Arc<Templates>,
    prefix: String,
    seq: u64,
    events: BTreeMap<NaiveDate, Encoding<EventColumns>>,
    dead: BTreeMap<NaiveDate, Encoding<DeadColumns>>,
    /// Files encoded whole and not stored yet (a write or PUT failed): retried as they are.
    unsent: Vec<Unsent>,
}

/// A file encoded whole and owed to its directory or object store.
struct Unsent {
    rel: String,
    body: bytes::Bytes,
    rows: usize,
}

/// A file being encoded: each row goes into columns as it comes (while its message's facts
/// are still in the cache), and every [`CHUNK_ROWS`] rows the columns are encoded into the
/// file's pages. A worker holds one chunk's columns and the file's encoded pages instead of
/// every row until the flush, and lets a message's facts go with its last row
/// (bench/MEASURED.md, "Tracking files encoded as rows come").
struct Encoding<C: Columns> {
    /// The rows not encoded yet, as columns.
    columns: C,
    /// Rows in `columns`.
    pending: usize,
    /// The chunks encoded so far.
    writer: Option<ArrowWriter<Vec<u8>>>,
    encoded: usize,
    /// Encoding failed (only a bug gets here: the sink is memory): the rows stay counted as
    /// not durable and every flush reports the error, so Track holds new sends back instead
    /// of sending untracked.
    failed: Option<String>,
}

/// A table's rows as columns, filled a row at a time.
trait Columns: Sized {
    type Row;
    const TABLE: &'static str;
    /// Empty columns; `chunk`: sized for a whole chunk (the date is busy).
    fn new(chunk: bool) -> Self;
    fn push(&mut self, templates: &Templates, row: &Self::Row);
    /// The bytes of the fullest string column: an arrow string array holds at most 2 GiB.
    fn bytes(&self) -> usize;
    /// The columns as a record batch.
    fn finish(self) -> Result<RecordBatch, arrow_schema::ArrowError>;
    fn schema() -> SchemaRef;
}

impl<C: Columns> Default for Encoding<C> {
    fn default() -> Self {
        Encoding {
            columns: C::new(false),
            pending: 0,
            writer: None,
            encoded: 0,
            failed: None,
        }
    }
}

impl<C: Columns> Encoding<C> {
    fn len(&self) -> usize {
        self.encoded + self.pending
    }

    fn push(&mut self, row: &C::Row, templates: &Templates) {
        self.columns.push(templates, row);
        self.pending += 1;
        // Bytes looked at every 64 rows (rows are at most 1 MiB a value: far below 2 GiB).
        if self.pending >= CHUNK_ROWS
            || (self.pending.is_multiple_of(64) && self.columns.bytes() >= CHUNK_BYTES)
        {
            self.encode(true);
        }
    }

    /// Encodes the columns held into the file's pages; `more`: more rows are coming (the next
    /// columns are sized for a chunk).
    fn encode(&mut self, more: bool) {
        if self.pending == 0 || self.failed.is_some() {
            return;
        }
        let columns = std::mem::replace(&mut self.columns, C::new(more));
        let written = (|| {
            let batch = columns.finish().map_err(io::Error::other)?;
            let writer = match &mut self.writer {
                Some(w) => w,
                None => self.writer.insert(
                    ArrowWriter::try_new(Vec::new(), C::schema(), Some(flush_props()))
                        .map_err(parquet_io)?,
                ),
            };
            writer.write(&batch).map_err(parquet_io)
        })();
        match written {
            Ok(()) => {
                self.encoded += self.pending;
                self.pending = 0;
            }
            Err(e) => self.failed = Some(e.to_string()),
        }
    }

    /// The whole file's bytes and its row count, leaving the encoding empty; on an error it
    /// keeps what it holds and says why.
    fn finish(&mut self) -> io::Result<(Vec<u8>, usize)> {
        self.encode(false);
        let error = |e: &str| io::Error::other(format!("encoding a {} file: {e}", C::TABLE));
        if let Some(e) = &self.failed {
            return Err(error(e));
        }
        let Some(mut writer) = self.writer.take() else {
            return Ok((Vec::new(), 0));
        };
        // The file's bytes in one allocation (its pages, an eighth more for what the estimate
        // leaves out, and the footer), not a buffer doubled while they are copied in.
        let estimate = writer.in_progress_size();
        writer
            .inner_mut()
            .reserve_exact(estimate + estimate / 8 + 64 * 1024);
        match writer.into_inner() {
            Ok(body) => Ok((body, std::mem::take(&mut self.encoded))),
            Err(e) => {
                let e = e.to_string();
                let err = error(&e);
                self.failed = Some(e);
                Err(err)
            }
        }
    }
}

impl ParquetTracking {
    /// A writer under `dir` (a local directory or an object-store prefix); `run` and `worker`
    /// make file names unique across runs and workers.
    pub fn new(
        dir: impl Into<TrackingDir>,
        tz: Tz,
        templates: Arc<Templates>,
        run: &str,
        worker: usize,
    ) -> ParquetTracking {
        ParquetTracking {
            dir: dir.into(),
            tz,
            templates,
            prefix: format!("part-{run}-w{worker}"),
            seq: 0,
            events: BTreeMap::new(),
            dead: BTreeMap::new(),
            unsent: Vec::new(),
        }
    }

    fn event(&mut self, row: EventRow) {
        self.events
            .entry(local_date(self.tz, row.event_time))
            .or_default()
            .push(&row, &self.templates);
    }

    fn dead(&mut self, row: DeadLetter) {
        self.dead
            .entry(local_date(self.tz, row.time))
            .or_default()
            .push(&row, &self.templates);
    }

    fn buffered(&self) -> usize {
        self.events.values().map(Encoding::len).sum::<usize>()
            + self.dead.values().map(Encoding::len).sum::<usize>()
            + self.unsent.iter().map(|u| u.rows).sum::<usize>()
    }

    /// Writes every buffered row: each date's rows as one file. A file is encoded whole
    /// before it is written, and kept (under its name) until it is stored, so on an error a
    /// later call retries it as it was. On an object store that matters: a PUT that reported
    /// an error may still have been stored, and a retry under a new name would make its rows
    /// appear twice.
    fn flush(&mut self) -> io::Result<()> {
        self.send_unsent()?;
        let mut events = std::mem::take(&mut self.events);
        let closed = self.close_all(&mut events);
        self.events = events;
        closed?;
        let mut dead = std::mem::take(&mut self.dead);
        let closed = self.close_all(&mut dead);
        self.dead = dead;
        closed?;
        self.send_unsent()
    }

    /// Finishes each date's file and queues it to be stored; a file whose encoding failed
    /// stays in `open` with the dates after it.
    fn close_all<C: Columns>(
        &mut self,
        open: &mut BTreeMap<NaiveDate, Encoding<C>>,
    ) -> io::Result<()> {
        while let Some(mut entry) = open.first_entry() {
            let date = *entry.key();
            let (body, rows) = entry.get_mut().finish()?;
            entry.remove();
            if rows == 0 {
                continue;
            }
            self.seq += 1;
            self.unsent.push(Unsent {
                rel: format!(
                    "{}/date={}/{}-{:05}.parquet",
                    C::TABLE,
                    date.format("%Y-%m-%d"),
                    self.prefix,
                    self.seq
                ),
                body: body.into(),
                rows,
            });
        }
        Ok(())
    }

    /// Stores the encoded files not stored yet, oldest first, each under its own name.
    fn send_unsent(&mut self) -> io::Result<()> {
        while let Some(u) = self.unsent.first() {
            match &self.dir {
                TrackingDir::Object(o) => o.put_bytes(&u.rel, u.body.clone())?,
                TrackingDir::Local(d) => write_file(d, &u.rel, &u.body)?,
            }
            self.unsent.remove(0);
        }
        Ok(())
    }
}

/// Writes `body` as `rel` under `root`: aside as `.NAME.tmp`, fsynced, renamed; a failed
/// write leaves no `.tmp` behind. The error names the path.
fn write_file(root: &Path, rel: &str, body: &[u8]) -> io::Result<()> {
    let path = root.join(rel);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    let named =
        |path: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(|e| named(dir, e))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        io::Write::write_all(&mut file, body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(&tmp, e));
    }
    // The rename is durable once the directory is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rows of the events table as columns (docs/tables.md).
///
/// The numbers of a row, none null, are plain lists made arrays as they are (an arrow
/// builder's append keeps a validity count beside each value: ~28 instructions a value
/// against a list's ~5; bench/MEASURED.md "Tracking's numbers as plain lists").
struct EventColumns {
    time: Vec<i64>,
    event_time: Vec<i64>,
    message_id: StringBuilder,
    business_id: Vec<i64>,
    template_id: Vec<i64>,
    channel: StringBuilder,
    msg_type: StringBuilder,
    receiver: StringBuilder,
    state: StringBuilder,
    state_code: Vec<i32>,
    reason: MostlyNull,
    biz_id: MostlyNull,
    template_version: Vec<i32>,
    /// The job file's template the last row named (rows of one template come in runs): its
    /// id and its channel's and type's names, so the next row of it is not looked up again.
    /// The registry is the writer's for its whole life; a row judged with a live version
    /// takes that version's names and neither reads nor sets this.
    last: Option<(i64, &'static str, &'static str)>,
}

impl EventColumns {
    /// The channel's and type's names of the template `meta` was judged with (`unknown`
    /// for a template the registry no longer has).
    fn names(&mut self, templates: &Templates, meta: &MessageMeta) -> (&'static str, &'static str) {
        let from_file = meta.live.is_none();
        if from_file
            && let Some((id, channel, msg_type)) = self.last
            && id == meta.template_id
        {
            return (channel, msg_type);
        }
        let (channel, msg_type) = meta
            .template(templates)
            .map_or(("unknown", "unknown"), |t| {
                (t.channel.name(), t.msg_type.name())
            });
        if from_file {
            self.last = Some((meta.template_id, channel, msg_type));
        }
        (channel, msg_type)
    }
}

impl Columns for EventColumns {
    type Row = EventRow;
    const TABLE: &'static str = "events";

    fn new(chunk: bool) -> EventColumns {
        let n = if chunk { CHUNK_ROWS } else { 0 };
        EventColumns {
            time: Vec::with_capacity(n),
            event_time: Vec::with_capacity(n),
            message_id: StringBuilder::with_capacity(n, n * 32),
            business_id: Vec::with_capacity(n),
            template_id: Vec::with_capacity(n),
            channel: StringBuilder::with_capacity(n, n * 8),
            msg_type: StringBuilder::with_capacity(n, n * 8),
            receiver: StringBuilder::with_capacity(n, n * 16),
            state: StringBuilder::with_capacity(n, n * 12),
            state_code: Vec::with_capacity(n),
            reason: MostlyNull::default(),
            biz_id: MostlyNull::default(),
            template_version: Vec::with_capacity(n),
            last: None,
        }
    }

    fn push(&mut self, templates: &Templates, r: &EventRow) {
        let (channel, msg_type) = self.names(templates, &r.meta);
        self.time.push(r.time);
        self.event_time.push(r.event_time);
        self.message_id.append_value(&r.meta.message_id);
        self.business_id.push(r.meta.business_id);
        self.template_id.push(r.meta.template_id);
        self.channel.append_value(channel);
        self.msg_type.append_value(msg_type);
        self.receiver.append_value(&r.receiver);
        self.state.append_value(r.state.name());
        self.state_code.push(r.state.code());
        self.reason.push(r.reason.as_deref());
        self.biz_id.push(r.meta.biz_id.as_deref());
        self.template_version.push(r.meta.template_version() as i32);
    }

    fn bytes(&self) -> usize {
        [
            self.message_id.values_slice().len(),
            self.receiver.values_slice().len(),
            self.reason.bytes(),
            self.biz_id.bytes(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    fn finish(mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let utc = |v: Vec<i64>| TimestampMillisecondArray::from(v).with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(utc(self.time)),
            Arc::new(utc(self.event_time)),
            Arc::new(self.message_id.finish()),
            Arc::new(Int64Array::from(self.business_id)),
            Arc::new(Int64Array::from(self.template_id)),
            Arc::new(self.channel.finish()),
            Arc::new(self.msg_type.finish()),
            Arc::new(self.receiver.finish()),
            Arc::new(self.state.finish()),
            Arc::new(Int32Array::from(self.state_code)),
            Arc::new(self.reason.finish()),
            Arc::new(self.biz_id.finish()),
            Arc::new(Int32Array::from(self.template_version)),
        ];
        RecordBatch::try_new(events_schema(), columns)
    }

    fn schema() -> SchemaRef {
        events_schema()
    }
}

/// A string column most rows leave null (`reason`: only failures and filters have one;
/// `biz_id`: only producers that set it): nulls are counted until the first value, and a chunk
/// of nulls only becomes an array of nulls when finished (an arrow builder's null is an offset
/// and a validity bit written per row: ~80 instructions a request for two columns).
#[derive(Default)]
struct MostlyNull {
    nulls: usize,
    values: Option<StringBuilder>,
}

impl MostlyNull {
    fn push(&mut self, value: Option<&str>) {
        match (&mut self.values, value) {
            (Some(b), v) => b.append_option(v),
            (None, None) => self.nulls += 1,
            (None, Some(v)) => {
                let mut b = StringBuilder::new();
                b.append_nulls(self.nulls);
                b.append_value(v);
                self.values = Some(b);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.values.as_ref().map_or(0, |b| b.values_slice().len())
    }

    fn finish(self) -> StringArray {
        match self.values {
            Some(mut b) => b.finish(),
            None => StringArray::new_null(self.nulls),
        }
    }
}

/// How tracking tables are compacted: Snappy, and no dictionary on the columns whose values
/// are (nearly) all distinct (a dictionary there is built only to be abandoned: CPU for
/// nothing); the rest keep theirs.
pub(crate) fn compact_props() -> WriterProperties {
    props().build()
}

/// How a worker writes its small files as rows come: as compacted, but `message_id` is not
/// compressed. Its values are random hex, which Snappy made only 9% smaller, for most of the
/// Snappy time of the job: 4.7% of the job's CPU in the 1M-request bench, 0.6% without it,
/// for files 9% larger until compaction merges them into Snappy files again
/// (bench/MEASURED.md "Message ids uncompressed until compaction"). Nor do `message_id` and
/// `receiver` get min/max statistics here: over a file of random ids and receivers they prune
/// nothing, and comparing every value for them was a fifth of the writer's time
/// (`tidings-bench tracking-encode`; bench/MEASURED.md "Statistics off unique columns"). Nor
/// do `channel`, `msg_type` and `state` (nor a dead letter's `source` and `payload`): a
/// worker's file holds the rows of all its channels and states as they come, so their ranges
/// prune nothing either, and comparing each value twice was ~2% of the job's instructions
/// (bench/MEASURED.md "Statistics off the strings of few values"). Times and numbers keep
/// theirs (a time range prunes a worker's files), and so do `reason` and `biz_id`: null in
/// most rows (nothing to compare), their null counts let a lookup by `bizId` pass over the
/// files of producers that never set one.
/// Nor does any column get a dictionary: interning every value of the columns of few values
/// (state, template, channel…) was a fifth of the encoding, and Snappy takes their repeats
/// nearly as well (files 7% larger; bench/MEASURED.md "Small tracking files without
/// dictionaries"). Compacted files keep theirs.
fn flush_props() -> WriterProperties {
    let mut props = props()
        .set_dictionary_enabled(false)
        .set_column_compression(ColumnPath::from("message_id"), Compression::UNCOMPRESSED);
    for column in FLUSH_UNPRUNED {
        props =
            props.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    props.build()
}

/// The string columns without statistics in a worker's files ([`flush_props`]).
const FLUSH_UNPRUNED: [&str; 7] = [
    "message_id",
    "receiver",
    "channel",
    "msg_type",
    "state",
    "source",
    "payload",
];

fn props() -> parquet::file::properties::WriterPropertiesBuilder {
    let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for unique in ["message_id", "receiver", "payload"] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    for time in ["time", "event_time"] {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(time), false)
            .set_column_encoding(ColumnPath::from(time), ColumnEncoding::DELTA_BINARY_PACKED);
    }
    props
}

/// Rows per record batch when a tracking file is encoded: rows are turned into columns this
/// many at a time as they come (each batch dropped once encoded), so a worker holds one batch's
/// rows and columns beside the file's encoded pages, not the whole file's rows
/// (bench/MEASURED.md, "A burst, paced" and "Tracking files encoded as rows come").
pub const CHUNK_ROWS: usize = 16_384;

/// A chunk is encoded sooner once a string column holds this many bytes: 16,384 rows of
/// 1 MiB receivers or payloads (a record's bound) were past the 2 GiB an arrow string array
/// can hold, and appending to it panicked the worker.
const CHUNK_BYTES: usize = 64 << 20;

/// A Parquet error as an I/O error, keeping the I/O error's kind (e.g. a full disk) when it
/// is one.
fn parquet_io(e: parquet::errors::ParquetError) -> io::Error {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    }
}

/// Removes the `.tmp` files a crashed run left under `dir` (`events/date=*/.part-*.tmp` and
/// the same under `dead_letters`): those of runs whose process is gone, or older than an hour.
/// Returns how many were removed.
pub fn remove_stale_tmp(dir: &Path) -> usize {
    let mut removed = 0;
    for table in ["events", "dead_letters"] {
        let Ok(dates) = std::fs::read_dir(dir.join(table)) else {
            continue;
        };
        for date in dates.flatten() {
            let Ok(files) = std::fs::read_dir(date.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(part) = name
                    .strip_prefix(".part-")
                    .and_then(|n| n.strip_suffix(".tmp"))
                else {
                    continue;
                };
                if tmp_is_stale(part, &f) && std::fs::remove_file(f.path()).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// Whether the writer of `.part-<ms>-<pid>-...` is gone (its pid is not alive, or the file is
/// an hour old).
fn tmp_is_stale(part: &str, f: &std::fs::DirEntry) -> bool {
    let old = f
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(3600));
    let pid = part.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
    // Without /proc (not Linux) only age tells.
    let gone = Path::new("/proc/self").exists()
        && !pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
    old || gone
}

/// Dead letters as columns (docs/tables.md).
#[derive(Default)]
struct DeadColumns {
    time: TimestampMillisecondBuilder,
    source: StringBuilder,
    payload: StringBuilder,
    reason: StringBuilder,
}

impl Columns for DeadColumns {
    type Row = DeadLetter;
    const TABLE: &'static str = "dead_letters";

    fn new(_: bool) -> DeadColumns {
        DeadColumns::default()
    }

    fn push(&mut self, _: &Templates, r: &DeadLetter) {
        self.time.append_value(r.time);
        self.source.append_value(&r.source);
        self.payload.append_value(&r.payload);
        self.reason.append_value(&r.reason);
    }

    fn bytes(&self) -> usize {
        self.payload
            .values_slice()
            .len()
            .max(self.source.values_slice().len())
            .max(self.reason.values_slice().len())
    }

    fn finish(mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.source.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.reason.finish()),
        ];
        RecordBatch::try_new(dead_letters_schema(), columns)
    }

    fn schema() -> SchemaRef {
        dead_letters_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use tidings_model::{MessageMeta, State};

    #[test]
    fn a_mostly_null_column_holds_its_values_where_they_came() {
        use arrow_array::Array;
        let column = |rows: &[Option<&str>]| {
            let mut c = MostlyNull::default();
            rows.iter().for_each(|r| c.push(*r));
            c.finish()
        };
        for rows in [
            vec![None, None, Some("a"), None, Some("b")],
            vec![Some("a"), None],
            vec![None, None, None],
            vec![],
        ] {
            let got = column(&rows);
            assert_eq!(got, StringArray::from(rows.clone()), "{rows:?}");
            assert_eq!(
                got.null_count(),
                rows.iter().filter(|r| r.is_none()).count()
            );
        }
    }

    /// A row of `meta` to `receiver`, reached at `time`, without a reason.
    fn row(
        meta: &Arc<MessageMeta>,
        time: i64,
        event_time: i64,
        receiver: &str,
        state: State,
    ) -> EventRow {
        EventRow {
            time,
            event_time,
            meta: meta.clone(),
            receiver: receiver.into(),
            state,
            reason: None,
        }
    }

    /// A message's facts for test rows.
    fn meta(biz_id: Option<&str>) -> Arc<MessageMeta> {
        Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: "m".into(),
            template_id: 1,
            business_id: 2,
            biz_id: biz_id.map(Into::into),
            content: "{}".into(),
            event_time: 0,
            seq: 0,
        })
    }

    /// A row's channel and type are its template's, whatever the rows before it: runs of one
    /// template, templates interleaved, a live version (another channel under the same id)
    /// between rows of the job file's, and an id the registry does not have.
    #[test]
    fn each_rows_channel_and_type_are_its_templates() {
        let templates = Templates::parse(
            "t.toml",
            r#"
[[template]]
id = 1
name = "a"
channel = "sms"
msg_type = "notice"
id_type = "phone"
account = "a"
[[template]]
id = 2
name = "b"
channel = "email"
msg_type = "marketing"
id_type = "email"
account = "b"
"#,
        )
        .unwrap();
        let live = Arc::new(tidings_model::message::LiveTemplate {
            version: 3,
            template: {
                let mut t = (**templates.get(2).unwrap()).clone();
                t.id = 1;
                t
            },
        });
        let row = |template_id: i64, live: Option<&Arc<tidings_model::message::LiveTemplate>>| {
            let mut m = (*meta(None)).clone();
            m.template_id = template_id;
            m.live = live.cloned();
            EventRow {
                time: 0,
                event_time: 0,
                meta: Arc::new(m),
                receiver: "r".into(),
                state: State::Receive,
                reason: None,
            }
        };
        let rows = [
            (row(1, None), "sms", "notice"),
            (row(1, None), "sms", "notice"),
            (row(1, Some(&live)), "email", "marketing"),
            (row(1, None), "sms", "notice"),
            (row(2, None), "email", "marketing"),
            (row(99, None), "unknown", "unknown"),
            (row(2, None), "email", "marketing"),
            (row(1, None), "sms", "notice"),
        ];
        let mut columns = EventColumns::new(false);
        for (r, _, _) in &rows {
            columns.push(&templates, r);
        }
        let batch = columns.finish().unwrap();
        let want = |i: usize| rows.iter().map(|r| [r.1, r.2][i]).collect::<Vec<_>>();
        assert_eq!(strings(&batch, "channel"), want(0));
        assert_eq!(strings(&batch, "msg_type"), want(1));
    }

    /// The strings of column `name` of `batch`.
    pub(crate) fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
        let col = batch.column_by_name(name).expect("the column exists");
        let col = col
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .expect("a string column");
        col.iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn writes_partitioned_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let mut w = ParquetTracking::new(dir.path(), tz, Arc::new(Templates::default()), "r1", 0);
        let meta = meta(Some("b"));
        for (t, state) in [
            (1_763_742_600_000, State::Receive),
            (1_763_742_600_000 - 3_600_000, State::SendSuccess),
        ] {
            w.event(row(&meta, t, t, "r", state));
        }
        w.dead(DeadLetter {
            time: 1_763_742_600_000,
            source: "file:x:1".into(),
            payload: "{".into(),
            reason: "bad".into(),
        });
        assert_eq!(w.buffered(), 3);
        w.flush().unwrap();
        assert_eq!(w.buffered(), 0);
        let day1 = dir
            .path()
            .join("events/date=2025-11-22/part-r1-w0-00002.parquet");
        let day0 = dir
            .path()
            .join("events/date=2025-11-21/part-r1-w0-00001.parquet");
        assert!(
            day0.exists() && day1.exists(),
            "{:?}",
            std::fs::read_dir(dir.path().join("events"))
                .unwrap()
                .collect::<Vec<_>>()
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(day1).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches[0].num_rows(), 1);
        assert_eq!(batches[0].schema().fields().len(), 13);
        assert!(dir.path().join("dead_letters/date=2025-11-22").is_dir());
    }

    /// A file of more rows than a chunk is encoded as the rows come: every row is counted as
    /// buffered until the flush, a failed write keeps the encoded file for the retry, and the
    /// file read back holds every row in the order given.
    #[test]
    fn a_file_encoded_chunk_by_chunk_keeps_every_row_through_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "a file").unwrap();
        let mut w = ParquetTracking::new(&plain, tz, Arc::new(Templates::default()), "r1", 0);
        let meta = meta(None);
        let n = 2 * CHUNK_ROWS + 7;
        let t = 1_763_742_600_000;
        for i in 0..n {
            w.event(row(&meta, t + i as i64, t, &i.to_string(), State::Receive));
        }
        assert_eq!(w.buffered(), n);
        assert!(w.flush().is_err());
        assert_eq!(w.buffered(), n);
        std::fs::remove_file(&plain).unwrap();
        w.flush().unwrap();
        assert_eq!(w.buffered(), 0);
        let file = plain.join("events/date=2025-11-22/part-r1-w0-00001.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut receivers = Vec::new();
        for batch in reader {
            receivers.extend(strings(&batch.unwrap(), "receiver"));
        }
        let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(receivers, expected);
    }

    /// Rows of large values are encoded in chunks of at most [`CHUNK_BYTES`] a column, not
    /// [`CHUNK_ROWS`] rows: an arrow string array holds at most 2 GiB.
    #[test]
    fn a_chunk_of_large_values_is_encoded_by_its_bytes() {
        let meta = meta(None);
        let big = "1".repeat(1 << 20);
        let t = 1_763_742_600_000;
        let n = (CHUNK_BYTES >> 20) + 2;
        let mut e = Encoding::<EventColumns>::default();
        for i in 0..n {
            e.push(
                &row(&meta, t + i as i64, t, &big, State::ReceiverInvalid),
                &Templates::default(),
            );
        }
        assert!(e.encoded >= CHUNK_BYTES >> 20, "{} rows encoded", e.encoded);
        assert_eq!(e.len(), n);
        let (_, rows) = e.finish().unwrap();
        assert_eq!(rows, n);
    }

    /// A `.tmp` a crashed run left (its pid gone) is removed at start; one of a live writer
    /// (here: this process) is kept; finished files are never touched.
    #[test]
    fn stale_tmp_files_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("events/date=2025-11-22");
        std::fs::create_dir_all(&day).unwrap();
        // pid_max is at most 4194304 on Linux: this pid cannot be alive.
        let dead = day.join(".part-1763784000000-999999999-w0-00001.parquet.tmp");
        let live = day.join(format!(
            ".part-1763784000000-{}-w0-00001.parquet.tmp",
            std::process::id()
        ));
        let done = day.join("part-1763784000000-999999999-w0-00002.parquet");
        for f in [&dead, &live, &done] {
            std::fs::write(f, "x").unwrap();
        }
        assert_eq!(remove_stale_tmp(dir.path()), 1);
        assert!(!dead.exists() && live.exists() && done.exists());
    }

    /// A failed write keeps every row buffered (a later flush retries them) and leaves no
    /// `.tmp` behind; its error names the path.
    #[test]
    fn a_failed_flush_keeps_its_rows_for_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "a file").unwrap();
        let mut w = ParquetTracking::new(&plain, tz, Arc::new(Templates::default()), "r1", 0);
        w.dead(DeadLetter {
            time: 1_763_742_600_000,
            source: "file:x:1".into(),
            payload: "{".into(),
            reason: "bad".into(),
        });
        let e = w.flush().unwrap_err().to_string();
        assert!(e.starts_with(&plain.display().to_string()), "{e}");
        assert_eq!(w.buffered(), 1);
        std::fs::remove_file(&plain).unwrap();
        w.flush().unwrap();
        assert_eq!(w.buffered(), 0);
        assert!(plain.join("dead_letters/date=2025-11-22").is_dir());
    }
}
