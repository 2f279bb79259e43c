//! Redis tracking against a real redis-server (`scripts/services.sh start`; `REDIS_URL`,
//! default redis://127.0.0.1:16379), a fresh key prefix per test.
//!
//! Redis holds what Parquet holds (counted per state), `tidings trace` reads it back, and a
//! Redis that is down while the job runs delays nothing: the rows are backfilled once it is up.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tidings_dataflows::kafka::{Outgoing, produce};
use tidings_dataflows::{Job, RunOptions, run};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".into())
}

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// State → rows, summed over every businessId hash under `prefix`.
fn redis_counts(url: &str, prefix: &str) -> BTreeMap<String, i64> {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}biz:*"))
        .query(&mut con)
        .unwrap();
    let mut counts = BTreeMap::new();
    for k in keys {
        let h: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(&k).query(&mut con).unwrap();
        for (state, n) in h {
            *counts.entry(state).or_default() += n;
        }
    }
    counts
}

/// State → rows in the Parquet events table.
fn parquet_counts(tracking: &std::path::Path) -> BTreeMap<String, i64> {
    let csv = common::sql_csv(
        tracking,
        "SELECT state, count(*) FROM events GROUP BY state",
    );
    csv.lines()
        .skip(1)
        .map(|l| {
            let (s, n) = l.split_once(',').unwrap();
            (s.to_string(), n.parse().unwrap())
        })
        .collect()
}

#[test]
fn redis_holds_what_parquet_holds_and_trace_reads_it() {
    let (dir, job) = common::demo_copy();
    let prefix = format!("tidings:test-{}:", common::unique());
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[tracking]\ndir = \"var/tracking\"\n",
        &format!(
            "[tracking]\ndir = \"var/tracking\"\nredis = \"{}\"\nredis_prefix = \"{prefix}\"\n",
            redis_url()
        ),
    );
    assert!(text.contains("redis_prefix"));
    std::fs::write(&job, text).unwrap();
    let j = job.to_str().unwrap();
    let summary = common::tidings(&["run", j]);
    assert!(summary.contains("0 waiting in the spool"), "{summary}");

    let tracking = dir.path().join("var/tracking");
    let parquet = parquet_counts(&tracking);
    assert!(parquet.len() >= 8, "{parquet:?}");
    assert_eq!(redis_counts(&redis_url(), &prefix), parquet);

    // One message that reached several states, traced both ways.
    let csv = common::sql_csv(
        &tracking,
        "SELECT message_id, receiver, template_id, business_id FROM events \
         WHERE state = 'SEND_SUCCESS' ORDER BY message_id LIMIT 1",
    );
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let (message, receiver, template, business) = (row[0], row[1], row[2], row[3]);
    // businessId ends with the event's local date, yyyyMMdd.
    let date = format!(
        "{}-{}-{}",
        &business[8..12],
        &business[12..14],
        &business[14..16]
    );
    let per_message = common::sql_csv(
        &tracking,
        &format!("SELECT count(*) FROM events WHERE message_id = '{message}'"),
    );
    let per_message: usize = common::first_row(&per_message)[0];
    let traced = common::tidings(&["trace", "--job", j, "--format", "json", "message", message]);
    assert_eq!(traced.lines().count(), per_message, "{traced}");
    assert!(traced.contains("\"SEND_SUCCESS\""), "{traced}");

    let user = common::tidings(&["trace", "--job", j, "--format", "json", "user", receiver]);
    assert!(user.contains(message), "{user}");

    // Without the job, a phone typed with its country code and spaces is found as tracked
    // (in `--region`, default CN, as a job's default region reads it).
    let csv = common::sql_csv(
        &tracking,
        "SELECT message_id, receiver FROM events WHERE state = 'SEND_SUCCESS' \
         AND channel = 'sms' AND receiver LIKE '1%' ORDER BY message_id LIMIT 1",
    );
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let typed = format!(" +86 {} {} {} ", &row[1][..3], &row[1][3..7], &row[1][7..]);
    let url = redis_url();
    let user = common::tidings(&[
        "trace", "--redis", &url, "--prefix", &prefix, "--format", "json", "user", &typed,
    ]);
    assert!(user.contains(row[0]), "{typed}: {user}");

    // The template funnel of that day equals the Parquet counts for its businessIds.
    let funnel = common::tidings(&[
        "trace", "--job", j, "--format", "csv", "template", template, "--date", &date,
    ]);
    let expected = common::sql_csv(
        &tracking,
        &format!(
            "SELECT state, count(*) AS n FROM events WHERE business_id = {business} GROUP BY state"
        ),
    );
    let expected: BTreeMap<String, String> = expected
        .lines()
        .skip(1)
        .map(|l| {
            let (s, n) = l.split_once(',').unwrap();
            (s.to_string(), n.to_string())
        })
        .collect();
    let got: BTreeMap<String, String> = funnel
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            // Columns: business_id, code, receivers, state.
            (c[3].to_string(), c[2].to_string())
        })
        .collect();
    assert_eq!(got, expected, "{funnel}");
}

/// A redis-server of the test's own on a free port; killed on drop.
struct OwnRedis(Child);

impl OwnRedis {
    /// Starts `redis-server` on `port` (on PATH: scripts/services.sh installs it).
    fn start(port: u16) -> OwnRedis {
        OwnRedis(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on PATH (scripts/services.sh installs it)"),
        )
    }

    /// Waits until it answers PING (at most 10 s).
    fn wait_ready(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(url).unwrap();
        while client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server on {url} did not start"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sending_goes_on_while_redis_is_down_and_redis_is_backfilled() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", false, "phone"),
    )
    .unwrap();
    let job_path = dir.path().join("job.toml");
    std::fs::write(
        &job_path,
        format!(
            "name = \"outage\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"outage-{unique}\"\ngroup = \"g-{unique}\"\n[tracking]\ndir = \"var/tracking\"\n\
             redis = \"{url}\"\nflush_interval_ms = 100\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n",
            brokers()
        ),
    )
    .unwrap();
    let job = Job::load(&job_path).unwrap_or_else(|e| panic!("{e}"));
    let batch = |from: u32, n: u32| {
        (from..from + n).map(|i| Outgoing {
            key: Some(format!("k{i}")),
            payload: serde_json::json!({"code": "send", "messageTemplateId": 1,
                "messageParam": {"receiver": format!("138{:08}", i), "variables": {"v": "x"}}})
            .to_string(),
            timestamp: None,
        })
    };
    let topic = format!("outage-{unique}");
    produce(&brokers(), &topic, batch(0, 100), || {}).unwrap();
    let runner = {
        let job = job.clone();
        std::thread::spawn(move || {
            let mut opts = RunOptions::for_job(&job);
            opts.workers = 2;
            opts.idle_exit = Some(Duration::from_secs(6));
            run(&job, &opts).unwrap()
        })
    };

    // Redis is down: every receiver is still sent and tracked in Parquet.
    let tracking = dir.path().join("var/tracking");
    let sent = |tracking: &std::path::Path| -> usize {
        if !tracking.join("events").exists() {
            return 0;
        }
        let csv = common::sql_csv(
            tracking,
            "SELECT count(*) FROM events WHERE state = 'SEND_SUCCESS'",
        );
        common::first_row(&csv)[0]
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while sent(&tracking) < 100 {
        assert!(
            Instant::now() < deadline,
            "sending stalled while Redis was down"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Redis comes up; more requests come in while the writer catches up.
    let _redis = OwnRedis::start(port);
    produce(&brokers(), &topic, batch(100, 50), || {}).unwrap();
    let summary = common::join_within(runner, Duration::from_secs(180), "the Kafka job");
    let stats = summary.redis.expect("the job tracks to Redis");
    assert!(stats.failures > 0, "Redis was down at first: {stats:?}");
    assert_eq!(stats.spooled, 0, "{stats:?}");

    let parquet = parquet_counts(&tracking);
    assert_eq!(parquet.get("SEND_SUCCESS"), Some(&150), "{parquet:?}");
    assert_eq!(redis_counts(&url, "tidings:"), parquet);
    assert_eq!(stats.written as i64, parquet.values().sum::<i64>());
}

/// A job of 20 requests, one receiver each, tracked to the Redis of `url`.
fn spooling_job(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let ts = 1_763_784_000_000i64;
    let requests: String = (0..20)
        .map(|i| common::envelope(ts + i, 1, &format!("138{i:08}"), "x") + "\n")
        .collect();
    let job = common::write_job(
        dir,
        &common::sms_template(1, "none", false, "phone"),
        &requests,
        "",
    );
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("[tracking]\n", &format!("[tracking]\nredis = \"{url}\"\n"));
    std::fs::write(&job, text).unwrap();
    job
}

#[test]
fn rows_of_a_run_that_never_reached_redis_wait_in_the_spool_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let job = spooling_job(dir.path(), &url);
    let job = Job::load(&job).unwrap_or_else(|e| panic!("{e}"));
    let once = || run(&job, &RunOptions::for_job(&job)).unwrap();

    let first = once().redis.unwrap();
    assert_eq!((first.written, first.spooled), (0, 40), "{first:?}");
    let _redis = OwnRedis::start(port);
    _redis.wait_ready(&url);
    // The second run reads nothing again (the file source resumes at its checkpoint): it
    // only backfills the first run's 40 rows.
    let second = once().redis.unwrap();
    assert_eq!((second.written, second.spooled), (40, 0), "{second:?}");
    let counts = redis_counts(&url, "tidings:");
    assert_eq!(counts.get("RECEIVE"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("SEND_SUCCESS"), Some(&20), "{counts:?}");
}

/// The same on a 2-process cluster: each process spools its own rows and backfills them
/// once, so Redis counts each row once (a spool the processes shared was read back by both,
/// each row counted twice); the user lists hold one entry per row.
#[test]
fn a_clusters_spooled_rows_are_backfilled_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let job = spooling_job(dir.path(), &url);
    let j = job.to_str().unwrap();
    let cluster = || common::tidings(&["run", j, "--local", "2", "-w", "1"]);
    cluster();
    let state = dir.path().join("var/state");
    let spooled = |d: &str| {
        std::fs::read_dir(state.join(d))
            .map(|e| e.count())
            .unwrap_or(0)
    };
    assert!(
        spooled("redis-spool") + spooled("redis-spool-p1") > 0,
        "nothing spooled"
    );
    let redis = OwnRedis::start(port);
    redis.wait_ready(&url);
    cluster();
    let counts = redis_counts(&url, "tidings:");
    assert_eq!(counts.get("RECEIVE"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("SEND_SUCCESS"), Some(&20), "{counts:?}");
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let entries: usize = (0..20)
        .map(|i| {
            redis::cmd("LLEN")
                .arg(format!("tidings:user:138{i:08}"))
                .query::<usize>(&mut con)
                .unwrap()
        })
        .sum();
    assert_eq!(entries, 40, "two rows (RECEIVE, SEND_SUCCESS) per receiver");
    assert_eq!(spooled("redis-spool") + spooled("redis-spool-p1"), 0);
}

/// The length of the first whole RESP2 answer in `buf` and whether it is an array (`None`
/// until it has all come).
fn first_answer(buf: &[u8]) -> Option<(usize, bool)> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&buf[1..line_end]).ok()?;
    let after_line = line_end + 2;
    match buf.first()? {
        b'$' => {
            let n: i64 = head.parse().ok()?;
            let end = if n < 0 {
                after_line
            } else {
                after_line + n as usize + 2
            };
            (buf.len() >= end).then_some((end, false))
        }
        b'*' => {
            let n: i64 = head.parse().ok()?;
            let mut end = after_line;
            for _ in 0..n.max(0) {
                end += first_answer(&buf[end..])?.0;
            }
            Some((end, true))
        }
        _ => Some((after_line, false)),
    }
}

/// A TCP proxy to Redis whose first connection is cut right after Redis ran the first
/// transaction: `EXEC`'s answer (the first array) never reaches the client, nor anything
/// after it. Later connections pass through, or (`then_down`) are closed at once.
fn answer_losing_proxy(redis: &str, then_down: bool) -> (String, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let target = redis
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let (cut_tx, cut_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (i, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            if i > 0 && then_down {
                continue;
            }
            let mut server = TcpStream::connect(&target).unwrap();
            let (mut up_from, mut up_to) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut up_from, &mut up_to));
            if i > 0 {
                std::thread::spawn(move || std::io::copy(&mut server, &mut client));
                continue;
            }
            let cut_tx = cut_tx.clone();
            std::thread::spawn(move || {
                let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
                loop {
                    let Ok(n) = server.read(&mut chunk) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some((len, array)) = first_answer(&buf) {
                        if array {
                            let _ = cut_tx.send(());
                            let _ = client.shutdown(Shutdown::Both);
                            let _ = server.shutdown(Shutdown::Both);
                            return;
                        }
                        client.write_all(&buf[..len]).unwrap();
                        buf.drain(..len);
                    }
                }
            });
        }
    });
    (url, cut_rx)
}

/// A batch Redis ran but whose answer was lost (the connection cut just after `EXEC`) is
/// not sent again: its key says it ran. Every count counts each row once and no list holds
/// an entry twice (before, the batches in flight were sent again and counted twice).
#[test]
fn a_batch_whose_answer_was_lost_is_not_counted_twice() {
    let (prefix, _spool, stats) = a_run_cut_after_exec(false, Duration::from_secs(30));
    assert!(stats.failures >= 1, "{stats:?}");
    assert_eq!((stats.written, stats.spooled), (5_000, 0), "{stats:?}");
    each_row_once(&prefix);
}

/// A run that ends with batches in doubt and Redis out of reach leaves them beside its spool;
/// the next run settles them before it sends the spool: each row once.
#[test]
fn batches_in_doubt_at_the_end_of_a_run_are_settled_by_the_next() {
    let (prefix, spool, first) = a_run_cut_after_exec(true, Duration::from_millis(500));
    assert_eq!((first.written, first.spooled), (0, 5_000), "{first:?}");
    let doubts = || {
        std::fs::read_dir(spool.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "doubt")
            })
            .count()
    };
    assert_eq!(
        doubts(),
        1,
        "the batches in doubt are kept beside the spool"
    );
    // The next run sends nothing new: only the spool.
    let next = write_through(
        &redis_url(),
        &prefix,
        spool.path(),
        Duration::from_secs(30),
        0,
    );
    assert_eq!((next.written, next.spooled), (5_000, 0), "{next:?}");
    assert_eq!(doubts(), 0);
    each_row_once(&prefix);
}

/// A writer's run of 5,000 rows through [`answer_losing_proxy`] (`then_down`: Redis out of
/// reach after the cut), under a prefix of its own: the prefix, the spool and what it did.
fn a_run_cut_after_exec(
    then_down: bool,
    drain_timeout: Duration,
) -> (
    String,
    tempfile::TempDir,
    tidings_sinks::tracking::redis::WriterStats,
) {
    let (proxy, cut) = answer_losing_proxy(&redis_url(), then_down);
    let prefix = format!("tidings:test-{}:", common::unique());
    let spool = tempfile::tempdir().unwrap();
    let stats = write_through(&proxy, &prefix, spool.path(), drain_timeout, 5_000);
    cut.try_recv().expect("the proxy cut the first connection");
    (prefix, spool, stats)
}

/// Starts a writer to `url` and hands it the first `rows` of 5,000 rows of 50 messages (three
/// batches of 2,000 rows at most: the first two are in flight together); what it did once it
/// finished.
fn write_through(
    url: &str,
    prefix: &str,
    spool: &std::path::Path,
    drain_timeout: Duration,
    rows: usize,
) -> tidings_sinks::tracking::redis::WriterStats {
    use tidings_sinks::tracking::redis::{RedisRow, RedisSettings, RedisWriter};
    let (writer, sink) = RedisWriter::start(RedisSettings {
        url: url.to_string(),
        prefix: prefix.to_string(),
        spool_dir: spool.to_path_buf(),
        adopt: Vec::new(),
        max_in_memory: 100_000,
        drain_timeout,
    })
    .unwrap();
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    let rows: Vec<RedisRow> = (0..5_000)
        .take(rows)
        .map(|i| RedisRow {
            time: i,
            message_id: format!("m{}", i % 50).into(),
            receiver: format!("r{i}").into(),
            template_id: 1,
            business_id: 7,
            state: "RECEIVE".into(),
            code: 10,
            reason: None,
            user_expire_at: in_an_hour,
        })
        .collect();
    sink.send(rows);
    drop(sink);
    writer.finish()
}

/// Redis holds the 5,000 rows of [`write_through`] under `prefix` once each: the count, and
/// every message's list (100 distinct entries).
fn each_row_once(prefix: &str) {
    assert_eq!(
        redis_counts(&redis_url(), prefix),
        BTreeMap::from([("RECEIVE".to_string(), 5_000)])
    );
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    for m in 0..50 {
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{prefix}msg:m{m}"))
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .unwrap();
        let distinct: std::collections::BTreeSet<&String> = entries.iter().collect();
        assert_eq!((entries.len(), distinct.len()), (100, 100), "m{m}");
    }
}

/// On Redis 7 a writer's first chunk already writes expiries only later (`NX`/`GT`): a
/// receiver's list another writer kept to a later day (a peer, or rows of today while this
/// run backfills yesterday's spool) keeps its day.
#[test]
fn a_writers_first_rows_never_shorten_a_receivers_list() {
    let url = redis_url();
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    if !info.contains("redis_version:7") && !info.contains("redis_version:8") {
        eprintln!("skipped: NX/GT expiries need Redis 7");
        return;
    }
    let prefix = format!("tidings:test-{}:", common::unique());
    let key = format!("{prefix}user:r0");
    let in_two_days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 2 * 86_400;
    let _: () = redis::pipe()
        .rpush(&key, "kept")
        .ignore()
        .cmd("EXPIREAT")
        .arg(&key)
        .arg(in_two_days)
        .ignore()
        .query(&mut con)
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let stats = write_through(&url, &prefix, spool.path(), Duration::from_secs(30), 1);
    assert_eq!(stats.written, 1, "{stats:?}");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut con).unwrap();
    assert!(
        ttl > 86_400,
        "the list's expiry went from two days to {ttl} s"
    );
    let len: i64 = redis::cmd("LLEN").arg(&key).query(&mut con).unwrap();
    assert_eq!(len, 2);
}
