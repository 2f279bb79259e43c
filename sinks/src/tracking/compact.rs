//! Compaction and retention of the tracking tables. A live job flushes a small file per worker
//! every `flush_interval_ms`; compaction merges a partition's settled small files into
//! `compact-<ms>-<n>.parquet` files of up to [`CompactSettings::target_bytes`], published as
//! `tidings_model::compaction` says (the list first, then the file, each written aside and
//! renamed), and deletes what a compacted file replaces once the grace period is over. A
//! reader never sees a row twice or misses one. Compacted files are not merged again (a pass
//! adds one file per partition and 64 MiB of small files: usually 144 a day at the default
//! 10 minutes, instead of a file per worker per flush). Retention deletes whole `date=` partitions older than
//! `tracking.retain_days`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tidings_model::compaction::{self, PREFIX, Replaces};

use super::ObjectDir;

/// How compaction chooses and keeps files.
#[derive(Debug, Clone)]
pub struct CompactSettings {
    /// A file is compacted only once it is this old (the newest files are left to come).
    pub settle: Duration,
    /// A replaced file is deleted only once its compacted file is this old (longer than any
    /// query that may have listed it).
    pub grace: Duration,
    /// Files are merged up to about this many bytes; larger files are left as they are.
    pub target_bytes: u64,
    /// On an object store, how long a pass's lease on the prefix lasts (renewed before every partition of a pass):
    /// one compactor per prefix at a time, whoever runs it.
    pub lease: Duration,
}

impl Default for CompactSettings {
    fn default() -> Self {
        CompactSettings {
            settle: Duration::from_secs(30),
            grace: Duration::from_secs(600),
            target_bytes: 64 * 1024 * 1024,
            lease: Duration::from_secs(600),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Small files merged.
    pub merged: usize,
    /// Compacted files written.
    pub written: usize,
    /// Replaced files deleted (their grace period over).
    pub deleted: usize,
    /// Partitions deleted by retention.
    pub expired: usize,
    /// Nothing done: another compactor holds the prefix's lease.
    pub leased_elsewhere: bool,
}

/// One pass over a table (`tracking/events`, `tracking/dead_letters`): every `date=`
/// partition is compacted; partitions before `keep_from` are deleted.
pub fn pass(
    table: &Path,
    settings: &CompactSettings,
    keep_from: Option<NaiveDate>,
) -> io::Result<Pass> {
    let mut out = Pass::default();
    let Ok(entries) = std::fs::read_dir(table) else {
        return Ok(out);
    };
    let mut partitions: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    partitions.sort();
    for dir in partitions {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if expired(name, keep_from) {
            std::fs::remove_dir_all(&dir).map_err(|e| named(&dir, e))?;
            out.expired += 1;
            continue;
        }
        // One partition's trouble (an unreadable file) does not hold back the others.
        match compact_partition(&dir, settings, SystemTime::now()) {
            Ok(p) => out.add(p),
            Err(e) => tracing::warn!("compaction of {}: {e}", dir.display()),
        }
    }
    Ok(out)
}

/// [`pass`] over a table on an object store (`table` is `events` or `dead_letters` under the
/// tracking prefix).
pub fn pass_objects(
    dir: &ObjectDir,
    table: &str,
    settings: &CompactSettings,
    keep_from: Option<NaiveDate>,
) -> io::Result<Pass> {
    let mut out = Pass::default();
    // One compactor per prefix: processes of a cluster, or jobs on several machines sharing
    // the prefix, take turns by a lease object.
    if !dir.lease(LEASE, &owner(), settings.lease)? {
        out.leased_elsewhere = true;
        return Ok(out);
    }
    // Ages are measured by the store's clock (its own stamps), not this machine's.
    let now = dir.server_now()?;
    for (partition, entries) in object_partitions(dir, table, now)? {
        // Renewed before each partition: a pass longer than the lease keeps it, and one whose
        // lease another compactor took meanwhile (this process stalled past it) stops before
        // touching another partition.
        if !dir.lease(LEASE, &owner(), settings.lease)? {
            tracing::warn!(
                "compaction of {}/{table}: the lease was taken by another compactor during the pass; stopping",
                dir.url()
            );
            out.leased_elsewhere = true;
            break;
        }
        if expired(&partition, keep_from) {
            for e in &entries {
                dir.delete(&format!("{table}/{partition}/{}", e.name))?;
            }
            out.expired += 1;
            continue;
        }
        let mut part = ObjectPartition {
            dir,
            prefix: format!("{table}/{partition}"),
            entries,
        };
        let server_now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(now.timestamp_millis()).unwrap_or(0));
        match compact(&mut part, settings, server_now) {
            Ok(p) => out.add(p),
            Err(e) => tracing::warn!("compaction of {}/{table}/{partition}: {e}", dir.url()),
        }
    }
    Ok(out)
}

/// The lease object of a prefix's compactor (beside the tables, never in them).
pub const LEASE: &str = "_compaction.lease";

/// Gives up this process's lease on `dir`, if it holds it (at the end of a run).
pub fn release_lease(dir: &ObjectDir) -> io::Result<()> {
    dir.release(LEASE, &owner())
}

/// This process's name as a lease owner: host, process id and start time.
fn owner() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER
        .get_or_init(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
            let start = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            format!("{host}/{}/{start}", std::process::id())
        })
        .clone()
}

/// The partitions of `table` on an object store and their objects (age as listed).
fn object_partitions(
    dir: &ObjectDir,
    table: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> io::Result<std::collections::BTreeMap<String, Vec<Entry>>> {
    let mut partitions = std::collections::BTreeMap::<String, Vec<Entry>>::new();
    for o in dir.list_at(table, now)? {
        let mut parts = o.rel.split('/').skip(1);
        let (Some(partition), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        partitions
            .entry(partition.to_string())
            .or_default()
            .push(Entry {
                name: name.to_string(),
                size: o.size,
                age: o.age,
            });
    }
    Ok(partitions)
}

/// Whether partition `name` (`date=YYYY-MM-DD`) is before the first day kept.
fn expired(name: &str, keep_from: Option<NaiveDate>) -> bool {
    let date = name
        .strip_prefix("date=")
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    matches!((date, keep_from), (Some(date), Some(keep)) if date < keep)
}

impl Pass {
    fn add(&mut self, p: Pass) {
        self.merged += p.merged;
        self.written += p.written;
        self.deleted += p.deleted;
        self.expired += p.expired;
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A file of a partition.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    size: u64,
    /// Age at the listing (for a local file: since its modification time).
    age: Duration,
}

/// A partition as compaction sees it: a listing, and whole-file reads, writes and deletes.
trait Partition {
    /// Every file of the partition, hidden ones included, with its age at `now`.
    fn entries(&mut self, now: SystemTime) -> io::Result<Vec<Entry>>;
    /// The rows of file `name`.
    fn read(&self, name: &str) -> io::Result<Vec<RecordBatch>>;
    /// The bytes of file `name` (a list).
    fn read_raw(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Makes `body` file `name`, whole and durable, in one step a reader cannot see halfway.
    fn publish(&self, name: &str, body: Vec<u8>) -> io::Result<()>;
    /// Deletes file `name`.
    fn delete(&self, name: &str) -> io::Result<()>;
    /// `name` with the partition, for errors.
    fn show(&self, name: &str) -> String;
}

struct LocalPartition<'a>(&'a Path);

impl Partition for LocalPartition<'_> {
    fn entries(&mut self, now: SystemTime) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.0).map_err(|e| named(self.0, e))? {
            let entry = entry?;
            // A worker's file renamed (or a replaced one deleted) since the listing: gone.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
                age,
            });
        }
        Ok(out)
    }

    fn read_raw(&self, name: &str) -> io::Result<Vec<u8>> {
        let path = self.0.join(name);
        std::fs::read(&path).map_err(|e| named(&path, e))
    }

    fn read(&self, name: &str) -> io::Result<Vec<RecordBatch>> {
        let path = self.0.join(name);
        let file = File::open(&path).map_err(|e| named(&path, e))?;
        batches(file).map_err(|e| named(&path, e))
    }

    fn publish(&self, name: &str, body: Vec<u8>) -> io::Result<()> {
        let tmp = self.0.join(format!(".{name}.tmp"));
        let written = (|| {
            std::fs::write(&tmp, body)?;
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, self.0.join(name))?;
            // The rename is durable once the directory is.
            File::open(self.0)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e| named(&self.0.join(name), e))
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        let path = self.0.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(named(&path, e)),
            _ => Ok(()),
        }
    }

    fn show(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

struct ObjectPartition<'a> {
    dir: &'a ObjectDir,
    prefix: String,
    /// The listing the pass began with (an object store lists a whole table at once).
    entries: Vec<Entry>,
}

impl Partition for ObjectPartition<'_> {
    fn entries(&mut self, _now: SystemTime) -> io::Result<Vec<Entry>> {
        Ok(self.entries.clone())
    }

    fn read_raw(&self, name: &str) -> io::Result<Vec<u8>> {
        self.dir.get(&format!("{}/{name}", self.prefix))
    }

    fn read(&self, name: &str) -> io::Result<Vec<RecordBatch>> {
        let body = self.read_raw(name)?;
        batches(bytes::Bytes::from(body))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.show(name))))
    }

    fn publish(&self, name: &str, body: Vec<u8>) -> io::Result<()> {
        // A PUT is whole or absent.
        self.dir.put(&format!("{}/{name}", self.prefix), body)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        self.dir.delete(&format!("{}/{name}", self.prefix))
    }

    fn show(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.dir.url(), self.prefix)
    }
}

fn batches<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
) -> io::Result<Vec<RecordBatch>> {
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(io::Error::other)?
        .map(|b| b.map_err(io::Error::other))
        .collect()
}

/// Compacts one partition directory; deletes replaced files whose grace period is over.
pub fn compact_partition(
    dir: &Path,
    settings: &CompactSettings,
    now: SystemTime,
) -> io::Result<Pass> {
    compact(&mut LocalPartition(dir), settings, now)
}

/// The lists of a listing, with what each replaces and its compacted file's age (`None`: the
/// file is not there — a compaction cut short, or one under way elsewhere).
fn all_lists(
    part: &impl Partition,
    entries: &[Entry],
) -> io::Result<Vec<(Option<Duration>, Replaces)>> {
    let mut out = Vec::new();
    for e in entries {
        let Some(parquet) = compaction::compacted_of(Path::new(&e.name)) else {
            continue;
        };
        let parquet = parquet.to_string_lossy();
        let file = entries.iter().find(|f| f.name == parquet);
        let body = part.read_raw(&e.name)?;
        let replaces: Replaces = serde_json::from_slice(&body).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {err}", part.show(&e.name)),
            )
        })?;
        out.push((file.map(|f| f.age), replaces));
    }
    Ok(out)
}

/// Compacts one partition; deletes replaced files whose grace period is over.
fn compact<P: Partition>(
    part: &mut P,
    settings: &CompactSettings,
    now: SystemTime,
) -> io::Result<Pass> {
    let mut out = Pass::default();
    let entries = part.entries(now)?;
    let all = all_lists(part, &entries)?;
    // A file any list names is never merged again, even when the list's compacted file is
    // not (yet) there: it may be being written.
    let superseded: BTreeSet<&str> = all
        .iter()
        .flat_map(|(_, r)| r.files.iter().map(String::as_str))
        .collect();
    let lists: Vec<(Duration, &Replaces)> = all
        .iter()
        .filter_map(|(age, r)| age.map(|a| (a, r)))
        .collect();
    let present: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    // Deletions first: what a compacted file past its grace period replaces. Lists stay as
    // long as their compacted file (a reader may read any list it listed).
    for (age, replaces) in &lists {
        if *age < settings.grace {
            continue;
        }
        for name in &replaces.files {
            if present.contains(name.as_str()) {
                part.delete(name)?;
                out.deleted += 1;
            }
        }
    }
    // Candidates: settled, small, not replaced already; oldest first.
    let mut small: Vec<(String, u64)> = entries
        .iter()
        // Compacted files are not compacted again: no list ever replaces another's file, so
        // what a list names stays left out for as long as the list is there.
        .filter(|e| {
            !e.name.starts_with('.')
                && !e.name.starts_with(PREFIX)
                && e.name.ends_with(".parquet")
                && !superseded.contains(e.name.as_str())
                && e.size < settings.target_bytes / 2
                && e.age >= settings.settle
        })
        .map(|e| (e.name.clone(), e.size))
        .collect();
    small.sort();
    let stamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut group: Vec<String> = Vec::new();
    let mut bytes = 0;
    let mut n = 0;
    for (name, size) in small {
        if !group.is_empty() && bytes + size > settings.target_bytes {
            out.merged += write_compacted(part, &format!("{PREFIX}{stamp}-{n}"), &group)?;
            out.written += usize::from(group.len() > 1);
            n += 1;
            group.clear();
            bytes = 0;
        }
        bytes += size;
        group.push(name);
    }
    if group.len() > 1 {
        out.merged += write_compacted(part, &format!("{PREFIX}{stamp}-{n}"), &group)?;
        out.written += 1;
    }
    Ok(out)
}

/// `batch` with the columns of `schema` (which holds all of its own), null where it has none.
fn widen(batch: &RecordBatch, schema: &arrow_schema::SchemaRef) -> io::Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => arrow_array::new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(io::Error::other)
}

/// Merges `files` into `<stem>.parquet`: the list first, then the file, each published whole.
/// A single file is left as it is. Returns the files merged.
fn write_compacted(part: &impl Partition, stem: &str, files: &[String]) -> io::Result<usize> {
    if files.len() < 2 {
        return Ok(0);
    }
    let target = format!("{stem}.parquet");
    // A file that cannot be read (torn, not Parquet, or not fetched this time) is left as it
    // is, outside the merge: the others are merged (one bad file held its partition's small
    // files back at every pass), and queries still see it, and name it.
    let mut batches = Vec::new();
    let mut merged: Vec<String> = Vec::with_capacity(files.len());
    for name in files {
        match part.read(name) {
            Ok(b) => {
                batches.extend(b);
                merged.push(name.clone());
            }
            Err(e) => tracing::warn!(
                "compaction: {} is left out of the merge: {e}",
                part.show(name)
            ),
        }
    }
    if merged.len() < 2 {
        return Ok(0);
    }
    let files = &merged[..];
    // Files written before a column was added lack it: the merged file has every column, null
    // where a file had none.
    let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
    for batch in &batches {
        for f in batch.schema().fields() {
            if !fields.iter().any(|g| g.name() == f.name()) {
                fields.push(f.clone());
            }
        }
    }
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    for batch in batches {
        let batch = widen(&batch, &schema)?;
        if writer.is_none() {
            let props = super::compact_props();
            writer = Some(
                ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
                    .map_err(io::Error::other)?,
            );
        }
        if let Some(w) = writer.as_mut() {
            w.write(&batch).map_err(io::Error::other)?;
        }
    }
    let Some(writer) = writer else {
        return Err(io::Error::other(format!(
            "{}: no rows in the files to compact",
            part.show(&target)
        )));
    };
    let body = writer.into_inner().map_err(io::Error::other)?;
    let list = serde_json::to_vec(&Replaces {
        files: files.to_vec(),
    })
    .map_err(io::Error::other)?;
    part.publish(&format!("{stem}{}", compaction::REPLACES_SUFFIX), list)?;
    part.publish(&target, body)?;
    Ok(files.len())
}

/// Removes what a compaction cut short left under `table` (hidden `.compact-*` files, and
/// lists whose compacted file never appeared). Only while no compaction runs (the job's lock).
pub fn remove_unfinished(table: &Path) -> usize {
    let mut removed = 0;
    let Ok(partitions) = std::fs::read_dir(table) else {
        return 0;
    };
    for dir in partitions
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
    {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let orphan = compaction::compacted_of(&path).is_some_and(|p| !p.exists());
            if (name.starts_with(".compact-") || orphan) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// [`remove_unfinished`] on an object store: lists whose compacted file never appeared, once
/// they are older than `grace` (a younger one may belong to a compaction under way).
pub fn remove_unfinished_objects(
    dir: &ObjectDir,
    table: &str,
    grace: Duration,
) -> io::Result<usize> {
    let mut removed = 0;
    let now = dir.server_now()?;
    for (partition, entries) in object_partitions(dir, table, now)? {
        for e in &entries {
            let orphan = e.age >= grace
                && compaction::compacted_of(Path::new(&e.name)).is_some_and(|p| {
                    let p = p.to_string_lossy();
                    !entries.iter().any(|f| f.name == p)
                });
            if orphan {
                dir.delete(&format!("{table}/{partition}/{}", e.name))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::ParquetTracking;
    use tidings_model::{EventRow, MessageMeta, State};

    fn rows(dir: &Path) -> Vec<(String, String)> {
        // What a reader sees: every present file but the replaced ones.
        let gone = compaction::superseded(dir).unwrap();
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".parquet") || name.starts_with('.') || gone.contains(&name) {
                continue;
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(e.path()).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                let b = b.unwrap();
                let ids = crate::tracking::tests::strings(&b, "message_id");
                let receivers = crate::tracking::tests::strings(&b, "receiver");
                out.extend(ids.into_iter().zip(receivers));
            }
        }
        out.sort();
        out
    }

    /// Writes `files` small files of `rows` rows each on 2025-11-22; returns the day's partition.
    fn small_files(root: &Path, files: usize, rows: usize) -> PathBuf {
        let templates = std::sync::Arc::new(tidings_model::Templates::default());
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        let mut w = ParquetTracking::new(root, tz, templates, "r1", 0);
        let at = 1_763_784_000_000;
        for f in 0..files {
            let meta = std::sync::Arc::new(MessageMeta {
                live: None,
                accounts: None,
                message_id: format!("m{f}").into(),
                template_id: 1,
                business_id: 2,
                biz_id: None,
                content: "{}".into(),
                event_time: at,
                seq: 0,
            });
            for r in 0..rows {
                w.event(EventRow {
                    time: at,
                    event_time: at,
                    meta: meta.clone(),
                    receiver: format!("u{r}").into(),
                    state: State::Receive,
                    reason: None,
                });
            }
            w.flush().unwrap();
        }
        root.join("events/date=2025-11-22")
    }

    /// Every file settled at once; replaced files kept an hour.
    fn settled_now() -> CompactSettings {
        CompactSettings {
            settle: Duration::ZERO,
            grace: Duration::from_secs(3600),
            ..CompactSettings::default()
        }
    }

    #[test]
    fn compaction_keeps_every_row_once_and_deletes_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        // 20 small files of 5 rows on one day.
        let day = small_files(tmp.path(), 20, 5);
        let before = rows(&day);
        assert_eq!(before.len(), 100);
        let settings = settled_now();
        let p = compact_partition(&day, &settings, SystemTime::now()).unwrap();
        assert_eq!((p.merged, p.written, p.deleted), (20, 1, 0));
        // Replaced files stay through the grace period, left out by readers.
        assert_eq!(rows(&day), before);
        let files = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count()
        };
        assert_eq!(files(&day), 21);
        // A worker's small files leave `message_id` uncompressed, have statistics only for
        // their times, numbers and the mostly null strings, and no dictionaries; the
        // compacted file is Snappy throughout, with statistics for every column and
        // dictionaries for the columns of few values.
        let codecs = |compacted: bool| {
            let e = std::fs::read_dir(&day)
                .unwrap()
                .flatten()
                .find(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".parquet") && name.starts_with(PREFIX) == compacted
                })
                .unwrap();
            let meta =
                parquet::file::reader::SerializedFileReader::new(File::open(e.path()).unwrap())
                    .unwrap();
            let group = parquet::file::reader::FileReader::metadata(&meta)
                .row_group(0)
                .clone();
            group
                .columns()
                .iter()
                .map(|c| {
                    let stats = c.statistics().is_some();
                    let dictionary = c.dictionary_page_offset().is_some();
                    (c.column_path().string(), c.compression(), stats, dictionary)
                })
                .collect::<Vec<_>>()
        };
        use parquet::basic::Compression;
        for (compacted, id_codec) in [
            (false, Compression::UNCOMPRESSED),
            (true, Compression::SNAPPY),
        ] {
            for (column, codec, stats, dictionary) in codecs(compacted) {
                // Small files have no dictionaries (Snappy takes repeated values); the
                // compacted file's columns of few values have.
                let few = !["message_id", "receiver", "time", "event_time", "payload"]
                    .contains(&column.as_str());
                assert_eq!(
                    dictionary,
                    compacted && few,
                    "{column} dictionary (compacted: {compacted})"
                );
                let want = if column == "message_id" {
                    id_codec
                } else {
                    Compression::SNAPPY
                };
                assert_eq!(codec, want, "{column} (compacted: {compacted})");
                let pruning = [
                    "time",
                    "event_time",
                    "business_id",
                    "template_id",
                    "state_code",
                    "template_version",
                    "reason",
                    "biz_id",
                ]
                .contains(&column.as_str());
                assert_eq!(
                    stats,
                    compacted || pruning,
                    "{column} statistics (compacted: {compacted})"
                );
            }
        }
        // A second pass finds nothing new to merge.
        let again = compact_partition(&day, &settings, SystemTime::now()).unwrap();
        assert_eq!((again.merged, again.written), (0, 0));
        // Past the grace period the replaced files go; the rows stay.
        let later = SystemTime::now() + Duration::from_secs(7200);
        let gone = compact_partition(&day, &settings, later).unwrap();
        assert_eq!(gone.deleted, 20);
        assert_eq!(files(&day), 1);
        assert_eq!(rows(&day), before);
        // Retention: a partition before the first day kept is deleted whole.
        let kept = pass(
            &tmp.path().join("events"),
            &settings,
            NaiveDate::from_ymd_opt(2025, 11, 23),
        )
        .unwrap();
        assert_eq!(kept.expired, 1);
        assert!(!day.exists());
    }

    /// A file written before `template_version` existed is merged with newer ones: the
    /// compacted file has every column, null where the old file had none.
    /// A file that cannot be read is left out of the merge, as it is; the others are merged.
    #[test]
    fn an_unreadable_file_is_left_out_and_the_rest_merged() {
        let tmp = tempfile::tempdir().unwrap();
        let day = small_files(tmp.path(), 4, 5);
        let torn = day.join("torn.parquet");
        std::fs::write(&torn, b"PAR1 but not really").unwrap();
        let p = compact_partition(&day, &settled_now(), SystemTime::now()).unwrap();
        assert_eq!((p.merged, p.written), (4, 1));
        assert!(torn.exists());
        assert!(
            !compaction::superseded(&day)
                .unwrap()
                .contains("torn.parquet")
        );
        std::fs::remove_file(&torn).unwrap();
        assert_eq!(rows(&day).len(), 20);
    }

    #[test]
    fn files_of_an_older_schema_are_merged_with_nulls() {
        let tmp = tempfile::tempdir().unwrap();
        let day = small_files(tmp.path(), 3, 1);
        // Rewrite the first file without the newest column, as an older version wrote it.
        let mut names: Vec<PathBuf> = std::fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let batch = ParquetRecordBatchReaderBuilder::try_new(File::open(&names[0]).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let old = batch
            .project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())
            .unwrap();
        let mut out =
            ArrowWriter::try_new(File::create(&names[0]).unwrap(), old.schema(), None).unwrap();
        out.write(&old).unwrap();
        out.close().unwrap();
        let settings = settled_now();
        let p = compact_partition(&day, &settings, SystemTime::now()).unwrap();
        assert_eq!((p.merged, p.written), (3, 1));
        assert_eq!(rows(&day).len(), 3);
        let merged = std::fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with(PREFIX)
                    && p.extension().is_some_and(|e| e == "parquet")
            })
            .unwrap();
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(File::open(merged).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let version = batches[0].column_by_name("template_version").unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        assert_eq!(version.null_count(), 1);
    }

    #[test]
    fn an_unfinished_compaction_is_removed_and_counts_for_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let day = tmp.path().join("events/date=2025-11-22");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join(".compact-1-0.parquet.tmp"), b"half").unwrap();
        std::fs::write(
            day.join("compact-1-0.replaces.json"),
            br#"{"files":["part-a.parquet"]}"#,
        )
        .unwrap();
        assert!(compaction::superseded(&day).unwrap().is_empty());
        assert_eq!(remove_unfinished(&tmp.path().join("events")), 2);
        assert_eq!(std::fs::read_dir(&day).unwrap().count(), 0);
    }
}
