//! Keyed parts: a dedup rule's state (key → values) as a file of its own, `*.keys`.
//!
//! ```text
//! "TIDKEYS1"                                   8 bytes
//! block*:  u32 payload bytes (> 0), u32 entries, u64 xxh3-64 of the payload, the payload
//!          payload: per entry, the key (16 bytes, little-endian), the number of values
//!          (LEB128), and each value as the zig-zag LEB128 of its difference from the value at
//!          the same place in the block's entry before (from 0 for the block's first entry)
//! end:     u32 0, u32 0, u64 entries in all, "TIDKEYS1"
//! ```
//!
//! All integers little-endian. A block holds ~64 KiB of payload and is read on its own. The
//! differences keep a frequency part's days (the same for most keys) to one byte; a content
//! part's admission times take 4–6. A part is a few bytes per key larger than Parquet made it
//! and ~10× cheaper to write and to read (bench/MEASURED.md "Keyed parts in a format of their
//! own"). Every block's checksum, its entries and the end's total are checked on read, so a
//! part damaged anywhere is found when a start judges the cut (`check`), not while restoring.
//!
//! Parts written before this format are Parquet (`*.parquet`: `key FixedSizeBinary(16)`,
//! `values List<Int64>`): they are still read (restored, merged, judged), told apart by
//! their first bytes, and never written.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use xxhash_rust::xxh3::xxh3_64;

use super::{at, sync_parent};

/// The file name extension of a keyed part.
pub const EXT: &str = ".keys";

/// The extension of a keyed part of a version before [`EXT`] (Parquet), still read.
pub const PARQUET_EXT: &str = ".parquet";

/// A keyed part's first and last eight bytes.
const MAGIC: &[u8; 8] = b"TIDKEYS1";

/// A block's header: payload bytes, entries, checksum.
const HEADER: usize = 16;

/// Payload bytes after which a block is written out.
const BLOCK: usize = 64 * 1024;

/// The largest payload a reader takes: a block's header that says more is damage, not a
/// reason to allocate.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// The most values one key may have: its entry (16 bytes, then at most ten a number) fits in
/// a block a reader takes, however full the block it ends.
const MAX_VALUES: usize = (MAX_PAYLOAD - BLOCK) / 10 - 3;

/// Writes keyed state (key → values) as a keyed part, atomically and durably.
pub fn write_keyed<V: AsRef<[i64]>>(
    path: &Path,
    entries: impl Iterator<Item = (u128, V)>,
) -> io::Result<()> {
    let mut out = Writer::create(path)?;
    let mut entries = entries;
    match entries.try_for_each(|(key, values)| out.push(key, values.as_ref())) {
        Ok(()) => out.finish(),
        Err(e) => {
            let _ = std::fs::remove_file(&out.tmp);
            Err(e)
        }
    }
}

/// A keyed part being written ([`write_keyed`], [`merge_keyed`]): entries encoded into the
/// block, each block written out once it holds [`BLOCK`] bytes, the file renamed into place by
/// [`Writer::finish`].
#[derive(Debug)]
struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    /// The block: room for its header, then its payload.
    block: Vec<u8>,
    /// Entries in the block, and in the blocks written.
    entries: u32,
    total: u64,
    /// The values of the block's entry before.
    prev: Vec<i64>,
}

impl Writer {
    fn create(path: &Path) -> io::Result<Writer> {
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(at(&tmp))?;
        file.write_all(MAGIC).map_err(at(&tmp))?;
        let mut block = Vec::with_capacity(HEADER + BLOCK + 1024);
        block.resize(HEADER, 0);
        Ok(Writer {
            path: path.to_path_buf(),
            tmp,
            file,
            block,
            entries: 0,
            total: 0,
            prev: Vec::new(),
        })
    }

    /// Adds one key and its values (none: a tombstone). An entry too long for a block a reader
    /// takes ([`MAX_PAYLOAD`]) is an error here, not a part judged damaged at every start.
    fn push(&mut self, key: u128, values: &[i64]) -> io::Result<()> {
        if values.len() > MAX_VALUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a key of {} values, more than a keyed part's block holds",
                    self.tmp.display(),
                    values.len()
                ),
            ));
        }
        self.block.extend_from_slice(&key.to_le_bytes());
        put_varint(&mut self.block, values.len() as u64);
        for (i, &v) in values.iter().enumerate() {
            let before = self.prev.get(i).copied().unwrap_or(0);
            put_varint(&mut self.block, zigzag(v.wrapping_sub(before)));
        }
        self.prev.clear();
        self.prev.extend_from_slice(values);
        self.entries += 1;
        if self.block.len() >= HEADER + BLOCK {
            self.write_block()?;
        }
        Ok(())
    }

    /// Writes the block out (if it has entries) and starts the next.
    fn write_block(&mut self) -> io::Result<()> {
        if self.entries == 0 {
            return Ok(());
        }
        let payload = self.block.len() - HEADER;
        let sum = xxh3_64(&self.block[HEADER..]);
        self.block[..4].copy_from_slice(&(payload as u32).to_le_bytes());
        self.block[4..8].copy_from_slice(&self.entries.to_le_bytes());
        self.block[8..16].copy_from_slice(&sum.to_le_bytes());
        self.file.write_all(&self.block).map_err(at(&self.tmp))?;
        self.block.truncate(HEADER);
        self.total += u64::from(self.entries);
        self.entries = 0;
        self.prev.clear();
        Ok(())
    }

    /// Writes the last block and the end (the file complete, not yet durable).
    fn end(&mut self) -> io::Result<()> {
        self.write_block()?;
        let mut end = [0u8; HEADER + 8];
        end[8..16].copy_from_slice(&self.total.to_le_bytes());
        end[16..].copy_from_slice(MAGIC);
        self.file.write_all(&end).map_err(at(&self.tmp))
    }

    /// Writes the last block and the end, makes the file durable and renames it into place.
    fn finish(mut self) -> io::Result<()> {
        self.end()?;
        self.file.sync_data().map_err(at(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(at(&self.path))?;
        // The rename, and any part linked into the same cut before it, made durable.
        sync_parent(&self.path)
    }
}

/// A keyed part encoded by one thread and finished by another: a dedup worker encodes a large
/// cut's part into its file as it reads its state ([`PartWriter::create`],
/// [`PartWriter::push`]: a block in memory at a time, not a copy of every key), and its
/// writer thread makes it durable ([`PartWriter::finish`]) or merges it into a full part
/// ([`PartWriter::merge_after`]). Dropped unfinished, its file is removed.
#[derive(Debug)]
pub struct PartWriter(Option<Writer>);

impl PartWriter {
    /// Starts the part to be renamed to `path` when finished.
    pub fn create(path: &Path) -> io::Result<PartWriter> {
        Writer::create(path).map(|w| PartWriter(Some(w)))
    }

    /// Adds one key and its values (none: a tombstone); keys in order.
    pub fn push(&mut self, key: u128, values: &[i64]) -> io::Result<()> {
        self.writer()?.push(key, values)
    }

    /// Ends the part, makes it durable and renames it into place (as [`write_keyed`]); `path`
    /// is where it was begun for. On an error its file is removed.
    pub fn finish(&mut self, path: &Path) -> io::Result<()> {
        let w = self.writer()?;
        if w.path != path {
            return Err(io::Error::other(format!(
                "a keyed part begun for {} finished as {}",
                w.path.display(),
                path.display()
            )));
        }
        let w = self.0.take().ok_or_else(Self::gone)?;
        let tmp = w.tmp.clone();
        w.finish().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Entries pushed.
    pub fn entries(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |w| w.total as usize + w.entries as usize)
    }

    /// Bytes its buffer takes (one block).
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |w| w.block.capacity())
    }

    /// Writes to `path` the parts `older` and then this one merged, as [`merge_keyed`]; this
    /// part is read back and removed, never renamed into place. The number of keys written.
    pub fn merge_after(&mut self, path: &Path, older: &[PathBuf]) -> io::Result<usize> {
        let mut w = self.0.take().ok_or_else(Self::gone)?;
        let tmp = w.tmp.clone();
        let merged = w.end().and_then(|()| {
            drop(w);
            let mut inputs = older.to_vec();
            inputs.push(tmp.clone());
            merge_keyed(path, &inputs, std::iter::empty::<(u128, &[i64])>())
        });
        let _ = std::fs::remove_file(&tmp);
        merged
    }

    fn writer(&mut self) -> io::Result<&mut Writer> {
        self.0.as_mut().ok_or_else(Self::gone)
    }

    fn gone() -> io::Error {
        io::Error::other("a keyed part used after it was finished")
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Some(w) = &self.0 {
            let _ = std::fs::remove_file(&w.tmp);
        }
    }
}

/// `v` zig-zag encoded: small magnitudes of either sign as small numbers.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` as LEB128: seven bits a byte, low first, the high bit set on all but the last.
#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads keyed state written by [`write_keyed`] (or a Parquet part of an older version),
/// keeping the keys `keep` accepts.
pub fn read_keyed(
    path: &Path,
    mut keep: impl FnMut(u128) -> bool,
    mut each: impl FnMut(u128, &[i64]),
) -> io::Result<()> {
    let mut entries = Entries::open(path)?;
    while let Some(key) = entries.next()? {
        if keep(key) {
            each(key, entries.values());
        }
    }
    Ok(())
}

/// Why the keyed part at `path` cannot be restored, if it cannot: one of this format read
/// whole (every block's checksum and entries, and the end); a Parquet one's footer.
pub fn check(path: &Path) -> Result<(), String> {
    let mut entries = Entries::open(path).map_err(|e| e.to_string())?;
    if let Source::Parquet(_) = entries.source {
        return Ok(());
    }
    while entries.next().map_err(|e| e.to_string())?.is_some() {}
    Ok(())
}

/// The entries of a keyed part, in file order: [`Entries::next`] moves to an entry and gives
/// its key, [`Entries::values`] its values (read in place, no copy per entry).
struct Entries {
    path: PathBuf,
    source: Source,
    /// The values of the entry at the head.
    values: Vec<i64>,
}

enum Source {
    Keys(Blocks),
    Parquet(Box<ParquetEntries>),
}

/// A part of this format being read.
struct Blocks {
    file: BufReader<File>,
    /// The block being read (its payload) and where in it the next entry is.
    block: Vec<u8>,
    at: usize,
    /// Entries of the block not yet read; entries read in all.
    left: u32,
    total: u64,
    /// Past the end.
    done: bool,
}

/// A Parquet part (an older version's) being read.
struct ParquetEntries {
    reader: ParquetRecordBatchReader,
    batch: Option<ParquetBatch>,
    /// The next entry's index in `batch`.
    at: usize,
}

impl Entries {
    fn open(path: &Path) -> io::Result<Entries> {
        let mut file = File::open(path).map_err(at(path))?;
        let mut magic = [0u8; 8];
        let got = read_up_to(&mut file, &mut magic).map_err(at(path))?;
        let bad = |e: &dyn std::fmt::Display| invalid(path, e);
        let source = if &magic[..got] == MAGIC {
            Source::Keys(Blocks {
                file: BufReader::with_capacity(HEADER + BLOCK + 1024, file),
                block: Vec::new(),
                at: 0,
                left: 0,
                total: 0,
                done: false,
            })
        } else if magic[..got].starts_with(b"PAR1") {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(at(path))?)
                    .map_err(|e| bad(&e))?;
            // The shape a keyed part was written in, judged from the footer: a part of another
            // shape fails the judging of its cut, not the restore.
            let fields = builder.schema().fields();
            let shaped = fields.len() == 2
                && *fields[0].data_type() == DataType::FixedSizeBinary(16)
                && matches!(fields[1].data_type(),
                    DataType::List(item) if *item.data_type() == DataType::Int64);
            if !shaped {
                return Err(bad(&format!(
                    "a Parquet part of columns {:?}, not key FixedSizeBinary(16) and values \
                     List<Int64>",
                    fields.iter().map(|f| f.name()).collect::<Vec<_>>()
                )));
            }
            let reader = builder.build().map_err(|e| bad(&e))?;
            Source::Parquet(Box::new(ParquetEntries {
                reader,
                batch: None,
                at: 0,
            }))
        } else {
            return Err(bad(
                &"not a keyed part (it starts with neither TIDKEYS1 nor PAR1)",
            ));
        };
        Ok(Entries {
            path: path.to_path_buf(),
            source,
            values: Vec::new(),
        })
    }

    fn bad(&self, e: &dyn std::fmt::Display) -> io::Error {
        invalid(&self.path, e)
    }

    /// Moves to the next entry and gives its key (`None` past the last).
    fn next(&mut self) -> io::Result<Option<u128>> {
        let got = match &mut self.source {
            Source::Keys(b) => b.next(&mut self.values),
            Source::Parquet(p) => p.next(&mut self.values),
        };
        got.map_err(|e| self.bad(&e))
    }

    /// The values of the entry [`Entries::next`] moved to.
    fn values(&self) -> &[i64] {
        &self.values
    }
}

/// What is wrong with the keyed part at `path`, as an error naming it.
fn invalid(path: &Path, e: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// Reads into `buf` until it is full or the file ends; the bytes read.
fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Blocks {
    fn next(&mut self, values: &mut Vec<i64>) -> Result<Option<u128>, String> {
        while self.left == 0 {
            if self.done || !self.read_block()? {
                return Ok(None);
            }
            // A block's first entry is read from zeros, as it was written.
            values.clear();
        }
        let b = &self.block;
        let key_bytes: [u8; 16] = b
            .get(self.at..self.at + 16)
            .and_then(|k| k.try_into().ok())
            .ok_or("an entry cut short")?;
        self.at += 16;
        let n = varint(b, &mut self.at)?;
        if n > (b.len() - self.at) as u64 {
            return Err(format!(
                "an entry of {n} values in a block of {} bytes",
                b.len()
            ));
        }
        // Each value from the one at its place in the entry before (`values` holds it).
        let n = n as usize;
        let before = values.len();
        values.resize(n, 0);
        for (i, v) in values.iter_mut().enumerate() {
            let base = if i < before { *v } else { 0 };
            *v = base.wrapping_add(unzigzag(varint(b, &mut self.at)?));
        }
        self.left -= 1;
        if self.left == 0 && self.at != b.len() {
            return Err(format!(
                "a block's entries end {} bytes before its payload",
                b.len() - self.at
            ));
        }
        Ok(Some(u128::from_le_bytes(key_bytes)))
    }

    /// Reads the next block, checked; `false` at the end (checked too: the total and nothing
    /// after it).
    fn read_block(&mut self) -> Result<bool, String> {
        let mut header = [0u8; HEADER];
        self.file
            .read_exact(&mut header)
            .map_err(|e| format!("cut short before its end ({e})"))?;
        let payload = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let entries = u32::from_le_bytes(header[4..8].try_into().unwrap());
        let sum = u64::from_le_bytes(header[8..].try_into().unwrap());
        if payload == 0 {
            let mut magic = [0u8; 8];
            self.file
                .read_exact(&mut magic)
                .map_err(|e| format!("cut short in its end ({e})"))?;
            if entries != 0 || &magic != MAGIC {
                return Err("its end is damaged".into());
            }
            if sum != self.total {
                return Err(format!(
                    "its end counts {sum} entries, its blocks {}",
                    self.total
                ));
            }
            if read_up_to(&mut self.file, &mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
                return Err("bytes after its end".into());
            }
            self.done = true;
            return Ok(false);
        }
        if payload > MAX_PAYLOAD || entries == 0 {
            return Err(format!(
                "a block's header is damaged ({payload} bytes, {entries} entries)"
            ));
        }
        self.block.resize(payload, 0);
        self.file
            .read_exact(&mut self.block)
            .map_err(|e| format!("cut short in a block ({e})"))?;
        if xxh3_64(&self.block) != sum {
            return Err(format!(
                "a block's checksum does not match (entries {} to {})",
                self.total,
                self.total + u64::from(entries)
            ));
        }
        self.at = 0;
        self.left = entries;
        self.total += u64::from(entries);
        Ok(true)
    }
}

/// A LEB128 number at `*at` in `b`, moving `*at` past it.
#[inline]
fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("an entry cut short")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("a number of more than ten bytes".into())
}

/// One record batch of a Parquet part: its keys and their lists, read in place (a
/// `ListArray::value` per key would allocate an array per key).
struct ParquetBatch {
    keys: FixedSizeBinaryArray,
    lists: ListArray,
    values: Int64Array,
}

impl ParquetBatch {
    fn of(batch: &RecordBatch) -> Result<ParquetBatch, String> {
        let keys = batch
            .column(0)
            .as_fixed_size_binary_opt()
            .ok_or("column key is not FixedSizeBinary(16)")?
            .clone();
        let lists = batch
            .column(1)
            .as_list_opt::<i32>()
            .ok_or("column values is not List<Int64>")?
            .clone();
        let values = lists
            .values()
            .as_primitive_opt::<Int64Type>()
            .ok_or("values are not Int64")?
            .clone();
        Ok(ParquetBatch {
            keys,
            lists,
            values,
        })
    }
}

impl ParquetEntries {
    fn next(&mut self, values: &mut Vec<i64>) -> Result<Option<u128>, String> {
        loop {
            if let Some(batch) = &self.batch
                && self.at < batch.keys.len()
            {
                let i = self.at;
                self.at += 1;
                let bytes: [u8; 16] = batch.keys.value(i).try_into().map_err(|e| format!("{e}"))?;
                let offsets = batch.lists.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                let got = batch
                    .values
                    .values()
                    .get(start..end)
                    .ok_or("list offsets past the values")?;
                values.clear();
                values.extend_from_slice(got);
                return Ok(Some(u128::from_le_bytes(bytes)));
            }
            let Some(batch) = self.reader.next() else {
                return Ok(None);
            };
            self.batch = Some(ParquetBatch::of(&batch.map_err(|e| e.to_string())?)?);
            self.at = 0;
        }
    }
}

/// Writes to `path` (atomically) the keyed parts `older` (oldest first) and then `newest`
/// merged: each key once, with its newest values; a key whose newest values are none (a
/// tombstone) is left out. Every input is sorted by key, and so is the output (a part whose
/// keys are not is refused, nothing written). Streams: holds one entry per input. Returns the
/// number of keys written.
pub fn merge_keyed<V: AsRef<[i64]>>(
    path: &Path,
    older: &[PathBuf],
    mut newest: impl Iterator<Item = (u128, V)>,
) -> io::Result<usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut files = older
        .iter()
        .map(|p| Entries::open(p).map(|e| (e, None)))
        .collect::<io::Result<Vec<(Entries, Option<u128>)>>>()?;
    let newest_rank = files.len();
    // The newest input's entry at its head.
    let mut head: Option<(u128, V)> = None;
    // The key at every input's head: the smallest key first, the newest input first among
    // equal keys.
    let mut heads: BinaryHeap<(Reverse<u128>, usize)> = BinaryHeap::new();
    let mut newest_last: Option<u128> = None;
    let mut advance = |rank: usize,
                       files: &mut Vec<(Entries, Option<u128>)>,
                       head: &mut Option<(u128, V)>,
                       heads: &mut BinaryHeap<(Reverse<u128>, usize)>|
     -> io::Result<()> {
        let key = if rank == newest_rank {
            *head = newest.next();
            let key = head.as_ref().map(|(k, _)| *k);
            if let Some(k) = key {
                if newest_last.is_some_and(|l| k <= l) {
                    return Err(io::Error::other(format!(
                        "{}: the cut's keys are not sorted",
                        path.display()
                    )));
                }
                newest_last = Some(k);
            }
            key
        } else {
            let (entries, last) = &mut files[rank];
            let key = entries.next()?;
            if let Some(k) = key {
                if last.is_some_and(|l| k <= l) {
                    return Err(entries.bad(
                        &"keys are not sorted (a part of an older version cannot be merged)",
                    ));
                }
                *last = Some(k);
            }
            key
        };
        if let Some(k) = key {
            heads.push((Reverse(k), rank));
        }
        Ok(())
    };
    let mut out = Writer::create(path)?;
    let mut written = 0usize;
    let mut merge = || -> io::Result<()> {
        for rank in 0..=newest_rank {
            advance(rank, &mut files, &mut head, &mut heads)?;
        }
        while let Some((Reverse(key), rank)) = heads.pop() {
            let values = match &head {
                Some((_, v)) if rank == newest_rank => v.as_ref(),
                _ => files[rank].0.values(),
            };
            if !values.is_empty() {
                out.push(key, values)?;
                written += 1;
            }
            advance(rank, &mut files, &mut head, &mut heads)?;
            // The same key in older inputs: superseded.
            while let Some(&(Reverse(k), r)) = heads.peek()
                && k == key
            {
                heads.pop();
                advance(r, &mut files, &mut head, &mut heads)?;
            }
        }
        Ok(())
    };
    match merge() {
        Ok(()) => out.finish().map(|()| written),
        Err(e) => {
            let _ = std::fs::remove_file(&out.tmp);
            Err(e)
        }
    }
}

/// A keyed part as a version before this format wrote it (Parquet), for tests of reading one.
#[cfg(test)]
pub(crate) fn write_parquet(path: &Path, entries: &[(u128, Vec<i64>)]) {
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeBinaryBuilder, Int64Builder, ListBuilder};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::FixedSizeBinary(16), false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
            false,
        ),
    ]));
    let mut keys = FixedSizeBinaryBuilder::new(16);
    let mut values = ListBuilder::new(Int64Builder::new()).with_field(Field::new(
        "item",
        DataType::Int64,
        false,
    ));
    for (k, v) in entries {
        keys.append_value(k.to_le_bytes()).unwrap();
        values.values().append_slice(v);
        values.append(true);
    }
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(keys.finish()), Arc::new(values.finish())],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path) -> io::Result<Vec<(u128, Vec<i64>)>> {
        let mut back = Vec::new();
        read_keyed(path, |_| true, |k, v| back.push((k, v.to_vec())))?;
        Ok(back)
    }

    /// Every key and its values back as written, over many blocks: values of any sign and
    /// size (the differences from the entry before wrap), of any number, none included.
    #[test]
    fn keyed_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("content-0.keys");
        let entries: Vec<(u128, Vec<i64>)> = (0..100_000u128)
            .map(|k| {
                let v = match k % 5 {
                    0 => vec![k as i64, -1],
                    1 => vec![],
                    2 => vec![i64::MIN, i64::MAX, 0],
                    3 => vec![1_763_740_800_000 + k as i64 * 7919 % 86_400_000],
                    _ => vec![20_415, 3, 20_416, 1],
                };
                (k << 70 | k, v)
            })
            .collect();
        write_keyed(&path, entries.iter().map(|(k, v)| (*k, v))).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..8], MAGIC);
        let mut back = Vec::new();
        read_keyed(&path, |k| k % 2 == 0, |k, v| back.push((k, v.to_vec()))).unwrap();
        let expected: Vec<_> = entries
            .iter()
            .filter(|(k, _)| k % 2 == 0)
            .cloned()
            .collect();
        assert_eq!(back, expected);
        assert_eq!(check(&path), Ok(()));
        // An empty part.
        write_keyed(&path, std::iter::empty::<(u128, Vec<i64>)>()).unwrap();
        assert_eq!(read_all(&path).unwrap(), vec![]);
        assert_eq!(check(&path), Ok(()));
    }

    /// A part damaged anywhere (a byte changed in any block or the end, cut short at any
    /// length, bytes after it) is found by `check` and refused by a read, never read as
    /// other state.
    #[test]
    fn a_damaged_part_is_found_wherever_the_damage_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frequency-0.keys");
        let entries: Vec<(u128, Vec<i64>)> = (0..20_000u128)
            .map(|k| (k * 0x9e37_79b9_7f4a_7c15, vec![20_415, k as i64 % 4]))
            .collect();
        write_keyed(&path, entries.iter().map(|(k, v)| (*k, v))).unwrap();
        let good = std::fs::read(&path).unwrap();
        assert!(good.len() > 3 * BLOCK, "several blocks: {}", good.len());
        let bad = dir.path().join("bad.keys");
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for at in (0..good.len())
            .step_by(997)
            .chain([good.len() - 1, good.len() - 20])
        {
            let mut b = good.clone();
            b[at] ^= 0x41;
            cases.push(b);
        }
        for len in (0..good.len()).step_by(4999).chain([good.len() - 1, 8, 9]) {
            cases.push(good[..len].to_vec());
        }
        let mut longer = good.clone();
        longer.push(0);
        cases.push(longer);
        for case in cases {
            std::fs::write(&bad, &case).unwrap();
            let why = check(&bad).unwrap_err();
            assert!(why.contains("bad.keys"), "{why}");
            assert!(read_all(&bad).is_err());
        }
        std::fs::write(&bad, &good).unwrap();
        assert_eq!(read_all(&bad).unwrap(), entries);
    }

    /// A Parquet part of a version before this format is read (restored and merged) as it
    /// was written; `check` reads its footer.
    #[test]
    fn a_parquet_part_of_an_older_version_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("content-0.parquet");
        let entries: Vec<(u128, Vec<i64>)> = (0..1000u128)
            .map(|k| (k << 64, vec![k as i64, 1]))
            .collect();
        write_parquet(&old, &entries);
        assert_eq!(read_all(&old).unwrap(), entries);
        assert_eq!(check(&old), Ok(()));
        let merged = dir.path().join("content-0.keys");
        let n = merge_keyed(
            &merged,
            std::slice::from_ref(&old),
            [(5u128 << 64, vec![55])].into_iter(),
        )
        .unwrap();
        assert_eq!(n, 1000);
        let mut expected = entries.clone();
        expected[5].1 = vec![55];
        assert_eq!(read_all(&merged).unwrap(), expected);
        let bytes = std::fs::read(&old).unwrap();
        std::fs::write(&old, &bytes[..bytes.len() / 2]).unwrap();
        assert!(check(&old).unwrap_err().contains("content-0.parquet"));
        std::fs::write(&old, b"neither").unwrap();
        assert!(check(&old).unwrap_err().contains("not a keyed part"));
    }

    /// What cannot be written as a keyed part is an error when written, not a part that fails
    /// later: a key of more values than a block holds, the cut's keys out of order in a merge.
    /// A Parquet part of another shape fails the judging of its cut.
    #[test]
    fn what_a_part_cannot_hold_is_refused_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("content-0.keys");
        let e = write_keyed(&path, [(1u128, vec![0i64; MAX_VALUES + 1])].into_iter()).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than a keyed part's block holds"),
            "{e}"
        );
        assert!(!path.exists());
        write_keyed(&path, [(1u128, vec![1i64; MAX_VALUES])].into_iter()).unwrap();
        let mut back = 0;
        read_keyed(&path, |_| true, |_, v| back = v.len()).unwrap();
        assert_eq!(back, MAX_VALUES);

        let merged = dir.path().join("merged.keys");
        let e = merge_keyed(
            &merged,
            std::slice::from_ref(&path),
            [(3u128, vec![1]), (2u128, vec![1])].into_iter(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not sorted"), "{e}");
        assert!(!merged.exists());

        let odd = dir.path().join("frequency-0.parquet");
        let schema =
            std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "key",
                DataType::Int64,
                false,
            )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(Int64Array::from(vec![1i64, 2]))],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&odd).unwrap(), schema, None)
            .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let why = check(&odd).unwrap_err();
        assert!(
            why.contains("frequency-0.parquet") && why.contains("not key"),
            "{why}"
        );
        assert!(read_all(&odd).is_err());
    }

    /// A compaction: the newest values of every key win, tombstones drop their key, the
    /// output is sorted; a part whose keys are not sorted is refused (nothing is written).
    #[test]
    fn merging_keyed_parts_keeps_each_keys_newest_state() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.keys");
        let delta = dir.path().join("delta.keys");
        // 200,000 keys over several blocks; every third key changes, every fifth goes.
        write_keyed(&full, (0..200_000u128).map(|k| (k << 64, vec![k as i64]))).unwrap();
        let changes = (0..200_000u128)
            .filter(|k| k % 3 == 0 || k % 5 == 0)
            .map(|k| {
                let v = if k % 5 == 0 {
                    vec![]
                } else {
                    vec![-(k as i64), 1]
                };
                (k << 64, v)
            });
        write_keyed(&delta, changes).unwrap();
        // The newest: one key brought back, one new key at the end.
        let newest = vec![(5u128 << 64, vec![55]), (300_000u128 << 64, vec![3])];
        let out = dir.path().join("merged.keys");
        let n = merge_keyed(&out, &[full.clone(), delta.clone()], newest.into_iter()).unwrap();
        let back = read_all(&out).unwrap();
        let mut expected: Vec<(u128, Vec<i64>)> = (0..200_000u128)
            .filter_map(|k| {
                match k {
                    5 => Some(vec![55]),
                    k if k % 5 == 0 => None,
                    k if k % 3 == 0 => Some(vec![-(k as i64), 1]),
                    k => Some(vec![k as i64]),
                }
                .map(|v| (k << 64, v))
            })
            .collect();
        expected.push((300_000u128 << 64, vec![3]));
        assert_eq!(n, expected.len());
        assert_eq!(back, expected);

        let unsorted = dir.path().join("unsorted.keys");
        write_keyed(&unsorted, [(2u128, vec![1]), (1u128, vec![1])].into_iter()).unwrap();
        let refused = dir.path().join("refused.keys");
        let e = merge_keyed(
            &refused,
            &[unsorted],
            std::iter::empty::<(u128, Vec<i64>)>(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not sorted"), "{e}");
        assert!(!refused.exists());
    }
}
