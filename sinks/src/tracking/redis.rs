//! Real-time tracking in Redis (austin's trace views), fed after the Parquet rows are durable.
//!
//! Keys, all under the prefix `tidings:` (`tracking.redis_prefix`):
//!
//! | key | type | value | expiry |
//! |---|---|---|---|
//! | `tidings:msg:<messageId>` | list | one JSON per state of each receiver | 3 days |
//! | `tidings:user:<receiver>` | list | one JSON per state of each message | end of the local day (or a set TTL) |
//! | `tidings:biz:<businessId>` | hash | state name → count (austin's template funnel) | 30 days |
//! | `tidings:batch:<writer>:<n>` | string | `1`: this batch ran | 1 day |
//!
//! Each batch is one `MULTI … EXEC` transaction that also sets its own `batch:` key, so a
//! batch whose answer was lost (a connection cut after Redis ran it) is looked up, not sent
//! again: lists get no entry twice and counts count each row once.
//!
//! One writer thread per process owns the connection and writes pipelined batches. Sending
//! never waits for Redis: while Redis is down the rows queue in memory, spill to
//! `spool_dir` past a bound, and are backfilled in order once Redis answers again; a run that
//! ends with Redis still down leaves its rows in the spool for the next run. Parquet is the
//! record of truth and is never held back by Redis.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use tidings_model::EventRow;
use tidings_model::ids::{FastMap, MessageId};
use tidings_model::time::{Millis, end_of_local_day, local_day};

/// Key prefix of everything tidings writes.
pub const PREFIX: &str = "tidings:";
const MESSAGE_TTL_S: i64 = 3 * 24 * 3600;
const BUSINESS_TTL_S: i64 = 30 * 24 * 3600;
/// Rows per pipeline round trip.
const CHUNK: usize = 2_000;
/// Rows one turn of the writer takes from the queue at most (in pipelines of [`CHUNK`]).
const BATCH_ROWS: usize = 20_000;
/// Rows per spool file at most (a file is read back whole).
const SPOOL_ROWS: usize = 20_000;

/// One tracking row as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisRow {
    /// When the state was reached (ms, UTC).
    pub time: Millis,
    /// The message.
    pub message_id: MessageId,
    /// The receiver.
    pub receiver: tidings_model::Receiver,
    /// The template.
    pub template_id: i64,
    /// austin's businessId.
    pub business_id: i64,
    /// The state's name.
    pub state: String,
    /// The state's code.
    pub code: i32,
    /// Why, for rejections and failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the receiver's list expires (Unix seconds).
    pub user_expire_at: i64,
}

/// How receiver lists expire.
#[derive(Debug, Clone, Copy)]
pub enum UserTtl {
    /// At the end of the local day of the row's time.
    EndOfDay(Tz),
    /// A fixed number of seconds after the row.
    Seconds(i64),
}

impl RedisRow {
    /// The Redis form of an event row.
    pub fn of(row: &EventRow, ttl: UserTtl) -> RedisRow {
        let user_expire_at = match ttl {
            UserTtl::EndOfDay(tz) => end_of_local_day(tz, local_day(tz, row.time)) / 1000,
            UserTtl::Seconds(s) => row.time / 1000 + s,
        };
        RedisRow {
            time: row.time,
            message_id: row.meta.message_id.clone(),
            receiver: row.receiver.clone(),
            template_id: row.meta.template_id,
            business_id: row.meta.business_id,
            state: row.state.name().to_string(),
            code: row.state.code(),
            reason: row.reason.clone(),
            user_expire_at,
        }
    }
}

/// What follows the prefix in each kind of key.
const MESSAGE: &str = "msg:";
const USER: &str = "user:";
const BUSINESS: &str = "biz:";
const BATCH: &str = "batch:";
/// How long a batch's key says it ran: long enough for the writer that sent it to look (a
/// day of Redis out of reach, or until the next run that reads the spool).
const BATCH_TTL_S: i64 = 24 * 3600;

/// The key of a message's list.
pub fn message_key(prefix: &str, message_id: &str) -> String {
    format!("{prefix}{MESSAGE}{message_id}")
}

/// The key of a receiver's list.
pub fn user_key(prefix: &str, receiver: &str) -> String {
    format!("{prefix}{USER}{receiver}")
}

/// The key of a businessId's state counts.
pub fn business_key(prefix: &str, business_id: i64) -> String {
    format!("{prefix}{BUSINESS}{business_id}")
}

/// An entry of a message's list (fields in the order `serde_json` sorts them).
#[derive(Serialize)]
struct MessageEntry<'a> {
    code: i32,
    reason: &'a Option<String>,
    receiver: &'a str,
    state: &'a str,
    template_id: i64,
    time: Millis,
}

/// An entry of a receiver's list (fields in the order `serde_json` sorts them).
#[derive(Serialize)]
struct UserEntry<'a> {
    business_id: i64,
    code: i32,
    message_id: &'a str,
    reason: &'a Option<String>,
    state: &'a str,
    template_id: i64,
    time: Millis,
}

impl RedisRow {
    fn message_entry(&self) -> MessageEntry<'_> {
        MessageEntry {
            code: self.code,
            reason: &self.reason,
            receiver: &self.receiver,
            state: &self.state,
            template_id: self.template_id,
            time: self.time,
        }
    }

    fn user_entry(&self) -> UserEntry<'_> {
        UserEntry {
            business_id: self.business_id,
            code: self.code,
            message_id: &self.message_id,
            reason: &self.reason,
            state: &self.state,
            template_id: self.template_id,
            time: self.time,
        }
    }
}

/// One list's entries, each already a RESP bulk string, and the latest expiry given.
struct List<'a> {
    key: &'a str,
    entries: Vec<u8>,
    count: usize,
    expire: i64,
}

/// Entries per key, keys in the order first seen.
struct Lists<'a> {
    at: FastMap<&'a str, usize>,
    lists: Vec<List<'a>>,
}

impl<'a> Lists<'a> {
    fn new() -> Lists<'a> {
        Lists {
            at: FastMap::default(),
            lists: Vec::new(),
        }
    }

    /// Appends `entry` to `key`'s list; the list expires at the latest `expire` given.
    fn push(&mut self, key: &'a str, entry: &[u8], expire: i64) {
        let i = *self.at.entry(key).or_insert_with(|| {
            self.lists.push(List {
                key,
                entries: Vec::new(),
                count: 0,
                expire,
            });
            self.lists.len() - 1
        });
        let list = &mut self.lists[i];
        bulk(&mut list.entries, &[entry]);
        list.count += 1;
        list.expire = list.expire.max(expire);
    }
}

/// Appends `parts`, concatenated, as one RESP bulk string.
fn bulk(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.push(b'$');
    buf.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    buf.extend_from_slice(b"\r\n");
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.extend_from_slice(b"\r\n");
}

/// Redis commands in RESP, packed into one buffer as `redis::Pipeline` would pack them.
#[derive(Default)]
struct Resp {
    buf: Vec<u8>,
    /// Commands packed (a reply each).
    commands: usize,
}

impl Resp {
    /// Starts a command of `args` arguments (its name included).
    fn command(&mut self, name: &str, args: usize) {
        self.buf.push(b'*');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(args).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        bulk(&mut self.buf, &[name.as_bytes()]);
        self.commands += 1;
    }

    fn arg(&mut self, parts: &[&[u8]]) {
        bulk(&mut self.buf, parts);
    }

    fn int(&mut self, v: i64) {
        bulk(&mut self.buf, &[itoa::Buffer::new().format(v).as_bytes()]);
    }

    /// `RPUSH key` with the list's entries, then `EXPIRE key seconds`.
    fn list(&mut self, key: &[&[u8]], list: &List, seconds: i64) {
        self.command("RPUSH", 2 + list.count);
        self.arg(key);
        self.buf.extend_from_slice(&list.entries);
        self.command("EXPIRE", 3);
        self.arg(key);
        self.int(seconds);
    }

    /// `RPUSH key` with the list's entries, then its expiry moved to `at` unless it is later
    /// already (`EXPIREAT … NX` for a new list, `EXPIREAT … GT` for one that has one): rows
    /// of an earlier day that reach Redis after a later day's (another worker's flush, a
    /// spool read back) never expire the later ones with them.
    /// Redis before 7 has no such options: `EXPIREAT key at` alone (the last chunk's time).
    fn list_until(&mut self, key: &[&[u8]], list: &List, at: i64, only_later: bool) {
        self.command("RPUSH", 2 + list.count);
        self.arg(key);
        self.buf.extend_from_slice(&list.entries);
        if !only_later {
            self.command("EXPIREAT", 3);
            self.arg(key);
            self.int(at);
            return;
        }
        for only in ["NX", "GT"] {
            self.command("EXPIREAT", 4);
            self.arg(key);
            self.int(at);
            self.arg(&[only.as_bytes()]);
        }
    }
}

/// Packs one chunk of rows as one transaction (`MULTI`, `SETEX batch`, the commands,
/// `EXEC`) sent as one pipeline: one `RPUSH` per list with its entries in row order, one
/// `HINCRBY` per businessId and state with the chunk's count, one expiry per key. `batch` is
/// the key that says the transaction ran. Entries are written straight into the buffer (no
/// command objects per row).
fn pack_chunk(prefix: &str, rows: &[RedisRow], only_later: bool, batch: &str) -> Resp {
    let mut messages = Lists::new();
    let mut users = Lists::new();
    let mut counts: BTreeMap<(i64, &str), i64> = BTreeMap::new();
    let mut entry = Vec::with_capacity(256);
    for r in rows {
        entry.clear();
        json_into(&mut entry, &r.message_entry());
        messages.push(&r.message_id, &entry, 0);
        entry.clear();
        json_into(&mut entry, &r.user_entry());
        users.push(&r.receiver, &entry, r.user_expire_at);
        *counts.entry((r.business_id, &r.state)).or_default() += 1;
    }
    let mut out = Resp {
        buf: Vec::with_capacity(
            messages
                .lists
                .iter()
                .chain(&users.lists)
                .map(|l| l.entries.len() + 96)
                .sum(),
        ),
        commands: 0,
    };
    out.command("MULTI", 1);
    out.command("SETEX", 4);
    out.arg(&[batch.as_bytes()]);
    out.int(BATCH_TTL_S);
    out.arg(&[b"1"]);
    let prefix = prefix.as_bytes();
    for l in &messages.lists {
        out.list(
            &[prefix, MESSAGE.as_bytes(), l.key.as_bytes()],
            l,
            MESSAGE_TTL_S,
        );
    }
    for l in &users.lists {
        out.list_until(
            &[prefix, USER.as_bytes(), l.key.as_bytes()],
            l,
            l.expire,
            only_later,
        );
    }
    let mut businesses = Vec::new();
    for ((business, state), n) in counts {
        let id = itoa::Buffer::new().format(business).to_string();
        out.command("HINCRBY", 4);
        out.arg(&[prefix, BUSINESS.as_bytes(), id.as_bytes()]);
        out.arg(&[state.as_bytes()]);
        out.int(n);
        if businesses.last() != Some(&id) {
            businesses.push(id);
        }
    }
    for id in businesses {
        out.command("EXPIRE", 3);
        out.arg(&[prefix, BUSINESS.as_bytes(), id.as_bytes()]);
        out.int(BUSINESS_TTL_S);
    }
    out.command("EXEC", 1);
    out
}

/// Reads the answers to a chunk of `commands` packed by [`pack_chunk`]. The last is `EXEC`'s:
/// once it came, the transaction ran whole, and a command of it that Redis refused (a key of
/// another type under the prefix) is warned of, not sent again: it would be refused again.
fn read_chunk(con: &mut redis::Connection, commands: usize) -> redis::RedisResult<()> {
    for _ in 1..commands {
        con.recv_response()?.extract_error()?;
    }
    match con.recv_response()? {
        redis::Value::Array(answers) => {
            let refused: Vec<String> = answers
                .into_iter()
                .filter_map(|a| a.extract_error().err())
                .map(|e| e.to_string())
                .collect();
            if let Some(first) = refused.first() {
                tracing::warn!(
                    "redis tracking: Redis refused {} command(s) of a batch: {first}",
                    refused.len()
                );
            }
            Ok(())
        }
        other => other.extract_error().and_then(|_| {
            Err((
                redis::ErrorKind::UnexpectedReturnType,
                "EXEC did not run the batch",
            )
                .into())
        }),
    }
}

/// Appends a list entry as the JSON text Redis keeps (plain structs of strings and integers:
/// serialising cannot fail).
fn json_into(buf: &mut Vec<u8>, entry: &impl Serialize) {
    let _ = serde_json::to_writer(buf, entry);
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key, normally [`PREFIX`].
    pub prefix: String,
    /// Where rows wait on disk while Redis is down: this process's own directory.
    pub spool_dir: PathBuf,
    /// Spool directories no process writes any more (a cluster's processes beyond its
    /// count now), whose rows this writer backfills first, each file once.
    pub adopt: Vec<PathBuf>,
    /// Rows held in memory before the queue spills to disk.
    pub max_in_memory: usize,
    /// How long the end of a run waits for Redis before spooling what is left.
    pub drain_timeout: Duration,
}

/// In-memory items [`Writer::spill`] puts in one spool file, and their rows.
#[derive(Default)]
struct Run {
    items: Vec<Vec<RedisRow>>,
    rows: usize,
}

enum Queued {
    Rows(Vec<RedisRow>),
    Spooled(PathBuf),
}

/// A handle on the writer thread; cheap to clone, one per worker.
#[derive(Debug, Clone)]
pub struct RedisSink {
    tx: Sender<Vec<RedisRow>>,
}

impl RedisSink {
    /// Hands rows (already durable in Parquet) to the writer; never blocks.
    pub fn send(&self, rows: Vec<RedisRow>) {
        if !rows.is_empty() {
            // The writer only goes away after every sink is dropped.
            let _ = self.tx.send(rows);
        }
    }
}

/// The writer thread; [`RedisWriter::finish`] drains (or spools) what is queued.
#[derive(Debug)]
pub struct RedisWriter {
    handle: Option<JoinHandle<WriterStats>>,
}

/// What the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows written to Redis.
    pub written: u64,
    /// Rows left in the spool when the writer stopped.
    pub spooled: u64,
    /// Failed attempts (connection or command errors).
    pub failures: u64,
}

impl RedisWriter {
    /// Starts the writer; rows left in the spool by an earlier run go first.
    pub fn start(settings: RedisSettings) -> io::Result<(RedisWriter, RedisSink)> {
        std::fs::create_dir_all(&settings.spool_dir)?;
        // A spool file is written aside and renamed: a `.tmp` is one a crash cut short (the
        // run lock means no other writer is using this directory, nor the adopted ones: their
        // processes are not in the run). A `.doubt` whose spool file is gone is stale.
        for dir in settings.adopt.iter().chain([&settings.spool_dir]) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = e.path();
                let stale = match path.extension().and_then(|x| x.to_str()) {
                    Some("tmp") => true,
                    Some("doubt") => !path.with_extension("jsonl").exists(),
                    _ => false,
                };
                if stale {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tidings-redis".into())
            .spawn(move || writer_loop(client, settings, rx))?;
        Ok((
            RedisWriter {
                handle: Some(handle),
            },
            RedisSink { tx },
        ))
    }

    /// Waits for the writer once every [`RedisSink`] is dropped.
    pub fn finish(mut self) -> WriterStats {
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn spool<'a>(dir: &Path, rows: impl IntoIterator<Item = &'a RedisRow>) -> io::Result<PathBuf> {
    let name = format!(
        "{:020}-{}.jsonl",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        std::process::id()
    );
    let path = dir.join(name);
    write_rows(&path, rows)?;
    Ok(path)
}

/// Writes rows as JSON lines to `path`, atomically.
fn write_rows<'a>(path: &Path, rows: impl IntoIterator<Item = &'a RedisRow>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = io::BufWriter::new(File::create(&tmp)?);
    for r in rows {
        serde_json::to_writer(&mut f, r).map_err(io::Error::other)?;
        f.write_all(b"\n")?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    std::fs::rename(&tmp, path)
}

fn read_spool(path: &Path) -> io::Result<Vec<RedisRow>> {
    let mut rows = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if let Ok(r) = serde_json::from_str(&line) {
            rows.push(r);
        }
    }
    Ok(rows)
}

struct Writer {
    client: redis::Client,
    con: Option<redis::Connection>,
    settings: RedisSettings,
    queue: VecDeque<Queued>,
    in_memory: usize,
    retry_at: Instant,
    backoff: Duration,
    stats: WriterStats,
    /// The server takes `EXPIREAT … NX|GT` (Redis 7 and later).
    only_later: bool,
    /// This writer's part of its batches' keys (the process and its start), and the number
    /// of the next batch.
    writer_id: String,
    batches: u64,
    /// Redis' id of the connection (`CLIENT ID`; `None` where the server does not say).
    con_id: Option<i64>,
    /// Batches a failure left in doubt, until they are settled.
    in_doubt: Option<InDoubt>,
}

/// Batches sent whose answer did not come back: Redis may or may not have run them.
#[derive(Debug)]
struct InDoubt {
    /// Oldest first, each its key and rows: the first rows of the queue's front.
    batches: Vec<(String, usize)>,
    /// Redis' id of the connection they were sent on.
    on: Option<i64>,
    /// The file they were read from (a run that ended with them in doubt), removed once they
    /// are settled.
    file: Option<PathBuf>,
}

/// Where a spool file's batches in doubt are kept when a run ends before they are settled.
fn doubt_path(spool_file: &Path) -> PathBuf {
    spool_file.with_extension("doubt")
}

/// The rows left once the batches that ran are taken out: `batches` are those of the first
/// rows, in order, each its rows and whether it ran.
fn without_ran<T>(rows: Vec<T>, batches: &[(usize, bool)]) -> Vec<T> {
    let mut ran = batches
        .iter()
        .flat_map(|&(n, ran)| std::iter::repeat_n(ran, n));
    rows.into_iter()
        .filter(|_| !ran.next().unwrap_or(false))
        .collect()
}

/// The major version in an `INFO server` answer (0 when it names none).
fn redis_major(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .unwrap_or(0)
}

impl Writer {
    fn new(client: redis::Client, settings: RedisSettings, queue: VecDeque<Queued>) -> Writer {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Writer {
            client,
            con: None,
            settings,
            queue,
            in_memory: 0,
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
            stats: WriterStats::default(),
            // Until the first connection says which server it is: the form every Redis takes.
            only_later: false,
            writer_id: format!("{}-{started:x}", std::process::id()),
            batches: 0,
            con_id: None,
            in_doubt: None,
        }
    }

    /// The key of the next batch.
    fn batch_key(&mut self) -> String {
        self.batches += 1;
        format!(
            "{}{BATCH}{}:{}",
            self.settings.prefix, self.writer_id, self.batches
        )
    }

    fn connection(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.con.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(Duration::from_secs(2))?;
            con.set_read_timeout(Some(Duration::from_secs(5)))?;
            con.set_write_timeout(Some(Duration::from_secs(5)))?;
            let mut con = con;
            let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
            self.only_later = redis_major(&info) >= 7;
            // Redis 5 and later; a server (or an ACL) that refuses it leaves it unknown.
            self.con_id = redis::cmd("CLIENT").arg("ID").query(&mut con).ok();
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("just connected"))
    }

    /// A write failed: the connection is dropped, and said so (the first time, and while
    /// retries are slow).
    fn lost(&mut self, e: &redis::RedisError) {
        self.con = None;
        self.stats.failures += 1;
        if self.stats.failures == 1 || self.backoff >= Duration::from_secs(2) {
            tracing::warn!("redis tracking: {e} (rows queue and are backfilled)");
        }
    }

    /// Writes rows chunk by chunk, each chunk one pipeline; the next chunk is sent before the
    /// replies of the one before are read, so packing a chunk here and running the one before
    /// in Redis overlap (one round trip at a time left both sides idle half the time). On
    /// failure returns how many rows were written: the chunks whose every reply came back;
    /// the chunks sent after them are left [`Writer::in_doubt`].
    fn write(&mut self, rows: &[RedisRow]) -> Result<(), usize> {
        if rows.is_empty() {
            return Ok(());
        }
        // Connected first: the server's version decides how expiries are written (a first
        // chunk packed before it was known wrote Redis 6's EXPIREAT, which can shorten a list
        // another writer had kept to a later day).
        if let Err(e) = self.connection() {
            self.lost(&e);
            return Err(0);
        }
        let prefix = self.settings.prefix.clone();
        let mut done = 0;
        // The chunk sent and not answered yet: its commands, rows and batch key.
        let mut unanswered: Option<(usize, usize, String)> = None;
        let mut chunks = rows.chunks(CHUNK);
        loop {
            let only_later = self.only_later;
            let next = chunks.next().map(|c| {
                let batch = self.batch_key();
                (pack_chunk(&prefix, c, only_later, &batch), c.len(), batch)
            });
            let mut sent = false;
            let result = self.connection().and_then(|con| {
                if let Some((resp, ..)) = &next {
                    sent = true;
                    con.send_packed_command(&resp.buf)?;
                }
                if let Some((commands, ..)) = unanswered {
                    read_chunk(con, commands)?;
                }
                Ok(())
            });
            if let Err(e) = result {
                self.lost(&e);
                // A chunk's bytes may have reached Redis whole even when sending failed.
                let next = next.filter(|_| sent).map(|(_, n, batch)| (batch, n));
                let batches: Vec<(String, usize)> = unanswered
                    .map(|(_, n, batch)| (batch, n))
                    .into_iter()
                    .chain(next)
                    .collect();
                self.in_doubt = (!batches.is_empty()).then_some(InDoubt {
                    batches,
                    on: self.con_id,
                    file: None,
                });
                return Err(done);
            }
            if let Some((_, n, _)) = unanswered.take() {
                done += n;
                self.stats.written += n as u64;
            }
            match next {
                Some((resp, n, batch)) => unanswered = Some((resp.commands, n, batch)),
                None => return Ok(()),
            }
        }
    }

    /// Settles the batches left in doubt by a failure. The connection they were sent on is
    /// killed first (`CLIENT KILL ID`: what Redis still held of it, read but not run, would
    /// otherwise run after the look), then the keys of those Redis ran say so (a batch and
    /// its key are one transaction): their rows leave the queue's front as written, the
    /// others stay to be sent again. False while Redis cannot say.
    fn settle(&mut self) -> bool {
        let Some(doubt) = self.in_doubt.take() else {
            return true;
        };
        let old = doubt.on;
        let ran = self.connection().and_then(|con| {
            if let Some(id) = old {
                // Refused (an ACL, a server before 5) or gone already: the look goes on.
                let _ = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .query::<i64>(con);
            }
            let mut pipe = redis::pipe();
            for (k, _) in &doubt.batches {
                pipe.exists(k);
            }
            pipe.query::<Vec<bool>>(con)
        });
        let ran = match ran {
            Ok(ran) => ran,
            Err(e) => {
                self.con = None;
                self.stats.failures += 1;
                tracing::debug!("redis tracking: {e} (settling the batches in doubt)");
                self.in_doubt = Some(doubt);
                return false;
            }
        };
        let batches: Vec<(usize, bool)> = doubt
            .batches
            .iter()
            .zip(ran)
            .map(|(&(_, n), ran)| (n, ran))
            .collect();
        if batches.iter().any(|&(_, ran)| ran) {
            self.drop_ran(&batches);
        }
        if let Some(file) = doubt.file {
            let _ = std::fs::remove_file(file);
        }
        true
    }

    /// Takes the rows of the batches that ran off the queue's front item, as written.
    fn drop_ran(&mut self, batches: &[(usize, bool)]) {
        match self.queue.front_mut() {
            Some(Queued::Rows(rows)) => {
                let before = rows.len();
                *rows = without_ran(std::mem::take(rows), batches);
                let gone = before - rows.len();
                self.in_memory -= gone;
                self.stats.written += gone as u64;
                if rows.is_empty() {
                    self.queue.pop_front();
                }
            }
            Some(Queued::Spooled(path)) => {
                let path = path.clone();
                let result = read_spool(&path).and_then(|rows| {
                    let before = rows.len();
                    let kept = without_ran(rows, batches);
                    if kept.is_empty() {
                        std::fs::remove_file(&path)?;
                        self.queue.pop_front();
                    } else {
                        write_rows(&path, &kept)?;
                    }
                    Ok(before - kept.len())
                });
                match result {
                    Ok(gone) => self.stats.written += gone as u64,
                    // Left as it was: its rows are sent again (twice, never lost).
                    Err(e) => tracing::warn!("redis spool {}: {e}", path.display()),
                }
            }
            None => {}
        }
    }

    /// A run that ended with batches in doubt left them beside the spool file they head:
    /// taken up when that file comes to the front.
    fn take_up_doubt(&mut self) {
        if self.in_doubt.is_some() {
            return;
        }
        let Some(Queued::Spooled(path)) = self.queue.front() else {
            return;
        };
        let file = doubt_path(path);
        let Ok(body) = std::fs::read(&file) else {
            return;
        };
        match serde_json::from_slice::<Vec<(String, usize)>>(&body) {
            Ok(batches) if !batches.is_empty() => {
                self.in_doubt = Some(InDoubt {
                    batches,
                    on: None,
                    file: Some(file),
                });
            }
            Ok(_) => {
                let _ = std::fs::remove_file(file);
            }
            Err(e) => {
                tracing::warn!("redis spool {}: {e}", file.display());
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// At the end of a run, with Redis out of reach: the batches still in doubt are kept
    /// beside the spool file they head, for the next run to settle.
    fn keep_doubt(&mut self) {
        let (Some(doubt), Some(Queued::Spooled(path))) = (&self.in_doubt, self.queue.front())
        else {
            return;
        };
        let file = doubt_path(path);
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            return;
        };
        let body = serde_json::to_vec(&doubt.batches).unwrap_or_default();
        if let Err(e) = super::write_file(dir, &name.to_string_lossy(), &body) {
            tracing::warn!("redis spool: {e}");
        }
    }

    /// Waits longer before the next try: 100 ms, doubling up to 2 s.
    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2)
            .max(Duration::from_millis(100))
            .min(Duration::from_secs(2));
        self.retry_at = Instant::now() + self.backoff;
    }

    /// Writes the queue front to back until it is empty or Redis fails.
    fn drain(&mut self) {
        while self.drain_one() {}
    }

    /// Writes the front of the queue; whether there is more to write now (false once the
    /// queue is empty or Redis failed).
    fn drain_one(&mut self) -> bool {
        if Instant::now() < self.retry_at {
            return false;
        }
        self.take_up_doubt();
        if !self.settle() {
            self.back_off();
            return false;
        }
        if let Some(item) = self.queue.pop_front() {
            let (rows, file) = match item {
                Queued::Rows(mut rows) => {
                    // Rows queued behind go in the same write, so its chunks overlap.
                    while rows.len() < BATCH_ROWS
                        && let Some(Queued::Rows(more)) = self.queue.front_mut()
                    {
                        rows.append(more);
                        self.queue.pop_front();
                    }
                    self.in_memory -= rows.len();
                    (rows, None)
                }
                Queued::Spooled(path) => match read_spool(&path) {
                    Ok(rows) => (rows, Some(path)),
                    Err(e) => {
                        tracing::warn!("redis spool {}: {e}", path.display());
                        return !self.queue.is_empty();
                    }
                },
            };
            match self.write(&rows) {
                Ok(()) => {
                    if let Some(path) = file {
                        let _ = std::fs::remove_file(path);
                    }
                    self.backoff = Duration::ZERO;
                }
                Err(written) => {
                    let rest = rows[written..].to_vec();
                    match file {
                        // A partly written spool file is rewritten with what is left.
                        Some(path) => {
                            if written > 0 {
                                write_rows(&path, &rest).unwrap_or_else(|e| {
                                    tracing::warn!("redis spool {}: {e}", path.display())
                                });
                            }
                            self.queue.push_front(Queued::Spooled(path));
                        }
                        None => {
                            self.in_memory += rest.len();
                            self.queue.push_front(Queued::Rows(rest));
                        }
                    }
                    self.back_off();
                    return false;
                }
            }
        }
        !self.queue.is_empty()
    }

    /// Takes the rows waiting in the channel into the queue (where they count against
    /// `max_in_memory`); false once every sender is gone and the channel is empty.
    fn take(&mut self, rx: &Receiver<Vec<RedisRow>>, wait: Duration) -> bool {
        // (A zero wait does not block: what is there is taken.)
        let first = match rx.recv_timeout(wait) {
            Ok(rows) => Some(rows),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return false,
        };
        for rows in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            self.in_memory += rows.len();
            // In pipelines' worth: the writer comes back to the channel after each.
            if rows.len() <= CHUNK {
                self.queue.push_back(Queued::Rows(rows));
                continue;
            }
            let mut rows = rows.into_iter();
            loop {
                let chunk: Vec<RedisRow> = rows.by_ref().take(CHUNK).collect();
                if chunk.is_empty() {
                    break;
                }
                self.queue.push_back(Queued::Rows(chunk));
            }
        }
        true
    }

    /// Moves the rows held in memory to spool files of at most [`SPOOL_ROWS`] rows, each
    /// where its rows were: the queue's order is kept.
    fn spill(&mut self) {
        let mut queue = VecDeque::with_capacity(self.queue.len());
        let mut run = Run::default();
        for item in std::mem::take(&mut self.queue) {
            match item {
                Queued::Rows(r) => {
                    run.rows += r.len();
                    run.items.push(r);
                    if run.rows >= SPOOL_ROWS {
                        self.spool_run(&mut run, &mut queue);
                    }
                }
                spooled => {
                    self.spool_run(&mut run, &mut queue);
                    queue.push_back(spooled);
                }
            }
        }
        self.spool_run(&mut run, &mut queue);
        self.queue = queue;
    }

    /// Spools a run of in-memory items as one file at the end of `queue` (or, if the file
    /// cannot be written, puts them there as they are).
    fn spool_run(&mut self, run: &mut Run, queue: &mut VecDeque<Queued>) {
        let Run { items, rows } = std::mem::take(run);
        if items.is_empty() {
            return;
        }
        match spool(&self.settings.spool_dir, items.iter().flatten()) {
            Ok(path) => {
                self.in_memory -= rows;
                queue.push_back(Queued::Spooled(path));
            }
            Err(e) => {
                tracing::warn!("redis spool: {e}");
                queue.extend(items.into_iter().map(Queued::Rows));
            }
        }
    }
}

fn writer_loop(
    client: redis::Client,
    settings: RedisSettings,
    rx: Receiver<Vec<RedisRow>>,
) -> WriterStats {
    let queue = settings
        .adopt
        .iter()
        .chain([&settings.spool_dir])
        .flat_map(|dir| spool_files(dir))
        .map(Queued::Spooled)
        .collect();
    let mut w = Writer::new(client, settings, queue);
    // One item written per turn; between turns the channel is emptied into the queue, so rows
    // waiting for a slow (not only a down) Redis count against the bound and spill past it.
    let mut more = false;
    loop {
        let wait = if more {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        if !w.take(&rx, wait) {
            break;
        }
        if w.in_memory > w.settings.max_in_memory {
            w.spill();
        }
        more = w.drain_one();
    }
    // The run is over: a last chance for Redis, then what is left waits on disk.
    let deadline = Instant::now() + w.settings.drain_timeout;
    while !w.queue.is_empty() && Instant::now() < deadline {
        w.drain();
        if !w.queue.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    w.spill();
    w.keep_doubt();
    w.stats.spooled = spool_files(&w.settings.spool_dir)
        .iter()
        .map(|p| read_spool(p).map(|r| r.len() as u64).unwrap_or(0))
        .sum();
    w.stats
}

/// Reads what the trace commands show.
pub struct RedisTrace {
    con: redis::Connection,
    prefix: String,
    /// Read at most this many of a list, the last written ([`RedisTrace::newest`]).
    newest: Option<usize>,
}

impl RedisTrace {
    /// Connects to `url`; keys start with `prefix`.
    pub fn connect(url: &str, prefix: &str) -> redis::RedisResult<RedisTrace> {
        let client = redis::Client::open(url)?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        // A Redis that takes the connection and then answers nothing fails the read, as the
        // writer's does, instead of holding `tidings trace` (or the console's) for ever.
        con.set_read_timeout(Some(Duration::from_secs(5)))?;
        con.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(RedisTrace {
            con,
            prefix: prefix.to_string(),
            newest: None,
        })
    }

    /// Reads at most `rows` entries of a list, the last written (the newest): a load test's
    /// receiver of a million rows today is not read whole into one answer.
    pub fn newest(mut self, rows: usize) -> RedisTrace {
        self.newest = Some(rows);
        self
    }

    /// The states of a message, oldest first.
    pub fn message(&mut self, message_id: &str) -> redis::RedisResult<Vec<serde_json::Value>> {
        self.list(&message_key(&self.prefix.clone(), message_id))
    }

    /// The states a receiver's messages reached, oldest first.
    pub fn user(&mut self, receiver: &str) -> redis::RedisResult<Vec<serde_json::Value>> {
        self.list(&user_key(&self.prefix.clone(), receiver))
    }

    /// The lists of a receiver written in several forms, merged oldest first.
    pub fn users(&mut self, forms: &[String]) -> redis::RedisResult<Vec<serde_json::Value>> {
        let mut rows = Vec::new();
        for f in forms {
            rows.extend(self.user(f)?);
        }
        if forms.len() > 1 {
            rows.sort_by_key(|r| r["time"].as_i64());
        }
        Ok(rows)
    }

    /// State counts of a businessId.
    pub fn business(&mut self, business_id: i64) -> redis::RedisResult<BTreeMap<String, i64>> {
        redis::cmd("HGETALL")
            .arg(business_key(&self.prefix, business_id))
            .query(&mut self.con)
    }

    fn list(&mut self, key: &str) -> redis::RedisResult<Vec<serde_json::Value>> {
        // A list is appended to as rows come: its last entries are the newest.
        let from = self
            .newest
            .map_or(0, |n| -(i64::try_from(n).unwrap_or(i64::MAX)));
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(key)
            .arg(from)
            .arg(-1)
            .query(&mut self.con)?;
        Ok(oldest_first(
            raw.iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect(),
        ))
    }
}

/// A list's entries by their row's `time`, then its state's `code` (RECEIVE before SEND_*):
/// a list holds them in the order they reached Redis, which is not the rows' when several
/// workers or processes write, or a spool is backfilled after newer rows.
fn oldest_first(mut entries: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let at = |e: &serde_json::Value, field: &str| e.get(field).and_then(|v| v.as_i64());
    entries.sort_by_key(|e| (at(e, "time"), at(e, "code")));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches in doubt that ran leave the rows, wherever they are among the first rows.
    #[test]
    fn the_rows_of_batches_that_ran_are_taken_out() {
        let rows: Vec<i32> = (0..10).collect();
        assert_eq!(
            without_ran(rows.clone(), &[(3, false), (4, true)]),
            [0, 1, 2, 7, 8, 9]
        );
        assert_eq!(
            without_ran(rows.clone(), &[(3, true), (4, true)]),
            [7, 8, 9]
        );
        assert_eq!(without_ran(rows.clone(), &[(3, false)]), rows);
    }

    /// Entries written out of order (another worker's, a backfilled spool's) are read by
    /// time, then state code; entries equal in both keep their list order.
    #[test]
    fn a_list_is_read_oldest_first() {
        let e =
            |time: i64, code: i64, n: i64| serde_json::json!({"time": time, "code": code, "n": n});
        let read = oldest_first(vec![e(5, 30, 0), e(1, 20, 1), e(5, 10, 2), e(1, 20, 3)]);
        let order: Vec<i64> = read.iter().map(|v| v["n"].as_i64().unwrap()).collect();
        assert_eq!(order, [1, 3, 2, 0]);
    }

    fn row(i: usize) -> RedisRow {
        RedisRow {
            time: i as Millis,
            message_id: format!("m{i}").into(),
            receiver: format!("r{}", i % 7).into(),
            template_id: 1,
            business_id: 2,
            state: "RECEIVE".into(),
            code: 10,
            reason: None,
            user_expire_at: 0,
        }
    }

    /// The hand-packed pipeline is byte for byte what `redis::Pipeline` packs for the same
    /// commands: a message's and a receiver's entries in row order, one expiry per key, the
    /// counts per businessId and state.
    #[test]
    fn a_chunk_packs_as_redis_rs_would() {
        let mut rows: Vec<RedisRow> = (0..5).map(row).collect();
        rows[3].message_id = "m1".into();
        rows[3].state = "SEND_FAIL".into();
        rows[3].reason = Some("quota \"x\"".into());
        rows[4].business_id = 1;
        rows[2].user_expire_at = 99;
        let packed = pack_chunk("p:", &rows, true, "p:batch:w:1");
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.set_ex("p:batch:w:1", 1, BATCH_TTL_S as u64).ignore();
        let entry = |r: &RedisRow| serde_json::to_string(&r.message_entry()).unwrap();
        let user_entry = |r: &RedisRow| serde_json::to_string(&r.user_entry()).unwrap();
        for (id, of) in [
            ("m0", vec![0]),
            ("m1", vec![1, 3]),
            ("m2", vec![2]),
            ("m4", vec![4]),
        ] {
            let entries: Vec<String> = of.iter().map(|&i| entry(&rows[i])).collect();
            pipe.rpush(format!("p:msg:{id}"), entries).ignore();
            pipe.expire(format!("p:msg:{id}"), MESSAGE_TTL_S).ignore();
        }
        for (r, of, at) in [
            ("r0", vec![0], 0),
            ("r1", vec![1], 0),
            ("r2", vec![2], 99),
            ("r3", vec![3], 0),
            ("r4", vec![4], 0),
        ] {
            let entries: Vec<String> = of.iter().map(|&i| user_entry(&rows[i])).collect();
            pipe.rpush(format!("p:user:{r}"), entries).ignore();
            for only in ["NX", "GT"] {
                pipe.cmd("EXPIREAT")
                    .arg(format!("p:user:{r}"))
                    .arg(at)
                    .arg(only)
                    .ignore();
            }
        }
        pipe.hincr("p:biz:1", "RECEIVE", 1).ignore();
        pipe.hincr("p:biz:2", "RECEIVE", 3).ignore();
        pipe.hincr("p:biz:2", "SEND_FAIL", 1).ignore();
        pipe.expire("p:biz:1", BUSINESS_TTL_S).ignore();
        pipe.expire("p:biz:2", BUSINESS_TTL_S).ignore();
        assert_eq!(
            String::from_utf8_lossy(&packed.buf),
            String::from_utf8_lossy(&pipe.get_packed_pipeline())
        );
        // Answers: `MULTI`'s, one per command, `EXEC`'s.
        assert_eq!(packed.commands, pipe.len() + 2);
    }

    /// Rows waiting for Redis (in the channel too) count against the bound, spill to files of
    /// at most `SPOOL_ROWS` rows, each where its rows were: the order is kept.
    /// Redis 7 and later take `EXPIREAT … NX|GT`; an older one, or an answer without a
    /// version, gets the plain form.
    #[test]
    fn the_servers_major_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(redis_major(info), 7);
        assert_eq!(redis_major("redis_version:6.2.14\r\n"), 6);
        assert_eq!(redis_major("# Server\r\n"), 0);
        let rows: Vec<RedisRow> = (0..2).map(row).collect();
        let plain = String::from_utf8_lossy(&pack_chunk("p:", &rows, false, "p:batch:w:1").buf)
            .into_owned();
        assert!(
            plain.contains("EXPIREAT") && !plain.contains("\r\nNX\r\n"),
            "{plain}"
        );
    }

    /// Files a crash cut short (`.tmp`) are cleared from the writer's own spool and from the
    /// spools it adopts; the whole files of both wait for Redis (here down: they stay).
    #[test]
    fn a_start_clears_cut_short_files_of_its_own_and_adopted_spools() {
        let (own, adopted) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [own.path(), adopted.path()] {
            std::fs::write(d.join("cut.jsonl.tmp"), "{\"torn").unwrap();
        }
        let whole = spool(adopted.path(), &(0..2).map(row).collect::<Vec<_>>()).unwrap();
        let (writer, sink) = RedisWriter::start(RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            prefix: PREFIX.into(),
            spool_dir: own.path().to_path_buf(),
            adopt: vec![adopted.path().to_path_buf()],
            max_in_memory: 100,
            drain_timeout: Duration::ZERO,
        })
        .unwrap();
        drop(sink);
        writer.finish();
        for d in [own.path(), adopted.path()] {
            assert!(!d.join("cut.jsonl.tmp").exists(), "{}", d.display());
        }
        assert_eq!(read_spool(&whole).unwrap().len(), 2);
    }

    #[test]
    fn rows_over_the_bound_spill_in_order_to_bounded_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(
            redis::Client::open("redis://127.0.0.1:1").unwrap(),
            RedisSettings {
                url: String::new(),
                prefix: PREFIX.into(),
                spool_dir: dir.path().to_path_buf(),
                adopt: Vec::new(),
                max_in_memory: 100,
                drain_timeout: Duration::ZERO,
            },
            VecDeque::new(),
        );
        let (tx, rx) = mpsc::channel();
        tx.send((0..3).map(row).collect::<Vec<_>>()).unwrap();
        assert!(w.take(&rx, Duration::ZERO));
        // A file already spooled, then a large batch behind it.
        let earlier = spool(dir.path(), &(3..5).map(row).collect::<Vec<_>>()).unwrap();
        w.queue.push_back(Queued::Spooled(earlier));
        tx.send((5..45_005).map(row).collect()).unwrap();
        assert!(w.take(&rx, Duration::ZERO));
        assert_eq!(w.in_memory, 45_003);
        assert!(w.queue.len() > 20, "taken in pipelines' worth");
        w.spill();
        assert_eq!(w.in_memory, 0);
        let mut back = Vec::new();
        for item in &w.queue {
            let Queued::Spooled(path) = item else {
                panic!("rows left in memory")
            };
            let rows = read_spool(path).unwrap();
            assert!(rows.len() <= SPOOL_ROWS, "{} rows in one file", rows.len());
            back.extend(rows.into_iter().map(|r| r.time));
        }
        assert_eq!(back, (0..45_005).map(|i| i as Millis).collect::<Vec<_>>());
        drop(tx);
        assert!(!w.take(&rx, Duration::ZERO), "every sender gone");
    }
}
