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

use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use chrono::NaiveDate;
use chrono_tz::Tz;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tidings_model::schema::{dead_letters_schema, events_schema};
use tidings_model::time::local_date;
use tidings_model::{DeadLetter, EventRow, Templates};

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
    events: BTreeMap<NaiveDate, Vec<EventRow>>,
    dead: BTreeMap<NaiveDate, Vec<DeadLetter>>,
    buffered: usize,
    /// Files encoded for an object store whose PUT has not succeeded yet.
    unsent: Vec<Unsent>,
}

/// A file owed to the object store.
struct Unsent {
    rel: String,
    body: bytes::Bytes,
    rows: usize,
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
            buffered: 0,
            unsent: Vec::new(),
        }
    }

    fn event(&mut self, row: EventRow) {
        self.events
            .entry(local_date(self.tz, row.event_time))
            .or_default()
            .push(row);
        self.buffered += 1;
    }

    fn dead(&mut self, row: DeadLetter) {
        self.dead
            .entry(local_date(self.tz, row.time))
            .or_default()
            .push(row);
        self.buffered += 1;
    }

    fn buffered(&self) -> usize {
        self.buffered + self.unsent.iter().map(|u| u.rows).sum::<usize>()
    }

    /// Writes every buffered row. On an error the rows not yet written stay buffered (each
    /// date's file is written whole or not at all), so a later call retries them. On an object
    /// store a file whose PUT failed is retried as it was, under its own name: a PUT that
    /// reported an error may still have been stored, and a retry under a new name would make
    /// its rows appear twice.
    fn flush(&mut self) -> io::Result<()> {
        self.send_unsent()?;
        while let Some((date, rows)) = self.events.pop_first() {
            let n = rows.len();
            let templates = self.templates.clone();
            let batches = rows
                .chunks(CHUNK_ROWS)
                .map(|chunk| events_batch(&templates, chunk));
            let written = self.write("events", date, events_schema(), batches, n);
            if let Err(e) = written {
                self.events.insert(date, rows);
                return Err(e);
            }
            self.buffered -= rows.len();
        }
        while let Some((date, rows)) = self.dead.pop_first() {
            let n = rows.len();
            let batches = rows.chunks(CHUNK_ROWS).map(dead_batch);
            let written = self.write("dead_letters", date, dead_letters_schema(), batches, n);
            if let Err(e) = written {
                self.dead.insert(date, rows);
                return Err(e);
            }
            self.buffered -= rows.len();
        }
        self.send_unsent()
    }

    /// PUTs the encoded files not yet stored, oldest first, each under its own name.
    fn send_unsent(&mut self) -> io::Result<()> {
        let TrackingDir::Object(o) = &self.dir else {
            return Ok(());
        };
        while let Some(u) = self.unsent.first() {
            o.put_bytes(&u.rel, u.body.clone())?;
            self.unsent.remove(0);
        }
        Ok(())
    }

    /// Writes one file of `batches` (encoded one after another, so only one batch's columns
    /// are held at a time). Locally: aside as `.NAME.tmp`, fsynced, renamed; a failed write
    /// leaves no `.tmp` behind. On an object store: one PUT of the whole file. The error names
    /// the path.
    fn write(
        &mut self,
        table: &str,
        date: NaiveDate,
        schema: SchemaRef,
        batches: impl Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>,
        rows: usize,
    ) -> io::Result<()> {
        let partition = format!("{table}/date={}", date.format("%Y-%m-%d"));
        self.seq += 1;
        let name = format!("{}-{:05}.parquet", self.prefix, self.seq);
        let dir = match &self.dir {
            TrackingDir::Object(_) => {
                // Encoded once; owed (and counted as buffered) until its PUT succeeds.
                let body = parquet_bytes(Vec::new(), schema, batches)?;
                self.unsent.push(Unsent {
                    rel: format!("{partition}/{name}"),
                    body: body.into(),
                    rows,
                });
                return Ok(());
            }
            TrackingDir::Local(d) => d.join(&partition),
        };
        let named = |path: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| named(&dir, e))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let file = parquet_bytes(File::create(&tmp)?, schema, batches)?;
            file.sync_all()?;
            std::fs::rename(&tmp, dir.join(&name))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(named(&tmp, e));
        }
        // The rename is durable once the directory is.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// `rows` as one record batch of the events table.
fn events_batch(
    templates: &Templates,
    rows: &[EventRow],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut time = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut event_time = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut message_id = StringBuilder::with_capacity(n, n * 32);
    let mut business_id = Int64Builder::with_capacity(n);
    let mut template_id = Int64Builder::with_capacity(n);
    let mut channel = StringBuilder::with_capacity(n, n * 8);
    let mut msg_type = StringBuilder::with_capacity(n, n * 8);
    let mut receiver = StringBuilder::with_capacity(n, n * 16);
    let mut state = StringBuilder::with_capacity(n, n * 12);
    let mut state_code = Int32Builder::with_capacity(n);
    let mut reason = StringBuilder::new();
    let mut biz_id = StringBuilder::new();
    let mut template_version = Int32Builder::with_capacity(n);
    for r in rows {
        let t = r.meta.template(templates);
        time.append_value(r.time);
        event_time.append_value(r.event_time);
        message_id.append_value(&r.meta.message_id);
        business_id.append_value(r.meta.business_id);
        template_id.append_value(r.meta.template_id);
        channel.append_value(t.map_or("unknown", |t| t.channel.name()));
        msg_type.append_value(t.map_or("unknown", |t| t.msg_type.name()));
        receiver.append_value(&r.receiver);
        state.append_value(r.state.name());
        state_code.append_value(r.state.code());
        reason.append_option(r.reason.as_deref());
        biz_id.append_option(r.meta.biz_id.as_deref());
        template_version.append_value(r.meta.template_version() as i32);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(event_time.finish()),
        Arc::new(message_id.finish()),
        Arc::new(business_id.finish()),
        Arc::new(template_id.finish()),
        Arc::new(channel.finish()),
        Arc::new(msg_type.finish()),
        Arc::new(receiver.finish()),
        Arc::new(state.finish()),
        Arc::new(state_code.finish()),
        Arc::new(reason.finish()),
        Arc::new(biz_id.finish()),
        Arc::new(template_version.finish()),
    ];
    RecordBatch::try_new(events_schema(), columns)
}

/// How tracking tables are written: Snappy, and no dictionary on the columns whose values
/// are (nearly) all distinct (a dictionary there is built only to be abandoned: CPU for
/// nothing); the rest keep theirs.
pub(crate) fn writer_props() -> WriterProperties {
    let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for unique in ["message_id", "receiver", "payload"] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    props.build()
}

/// Rows per record batch when a tracking file is encoded: a file of `flush_rows` rows is turned
/// into columns this many rows at a time (each batch dropped once encoded), so a flush holds one
/// batch's columns beside the rows, not the whole file's (bench/MEASURED.md, "A burst, paced").
pub const CHUNK_ROWS: usize = 16_384;

/// `batches` as one Parquet file written to `out` ([`writer_props`]); returns `out`.
pub(crate) fn parquet_bytes<W: io::Write + Send>(
    out: W,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>,
) -> io::Result<W> {
    let props = writer_props();
    let mut writer = ArrowWriter::try_new(out, schema, Some(props)).map_err(parquet_io)?;
    for batch in batches {
        writer
            .write(&batch.map_err(io::Error::other)?)
            .map_err(parquet_io)?;
    }
    writer.into_inner().map_err(parquet_io)
}

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

fn dead_batch(rows: &[DeadLetter]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut time = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut source = StringBuilder::new();
    let mut payload = StringBuilder::new();
    let mut reason = StringBuilder::new();
    for r in rows {
        time.append_value(r.time);
        source.append_value(&r.source);
        payload.append_value(&r.payload);
        reason.append_value(&r.reason);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(source.finish()),
        Arc::new(payload.finish()),
        Arc::new(reason.finish()),
    ];
    RecordBatch::try_new(dead_letters_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use tidings_model::{MessageMeta, State};

    #[test]
    fn writes_partitioned_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let mut w = ParquetTracking::new(dir.path(), tz, Arc::new(Templates::default()), "r1", 0);
        let meta = Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: "m".into(),
            template_id: 1,
            business_id: 2,
            biz_id: Some("b".into()),
            content: "{}".into(),
            event_time: 0,
            seq: 0,
        });
        for (t, state) in [
            (1_763_742_600_000, State::Receive),
            (1_763_742_600_000 - 3_600_000, State::SendSuccess),
        ] {
            w.event(EventRow {
                time: t,
                event_time: t,
                meta: meta.clone(),
                receiver: "r".into(),
                state,
                reason: None,
            });
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
