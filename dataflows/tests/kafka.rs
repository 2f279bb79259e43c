//! The Kafka source against a real Kafka-compatible broker (`scripts/services.sh start`;
//! address from `KAFKA_BROKERS`, default 127.0.0.1:19092), a fresh topic and group per test.
//!
//! The same requests through Kafka and through the file source reach the same decisions, and
//! offsets are committed only behind the done frontier: a second run of the group reads
//! nothing again.

mod common;

use std::time::Duration;

use tidings_dataflows::kafka::{Outgoing, produce};
use tidings_dataflows::{Job, RunOptions, TrackingTarget, run};
use tidings_operators::Clock;
use tidings_sinks::tracking::{Collected, MemoryTracking};

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Far beyond any run here (the longest idles 4 × 8 s before its first record).
const LIMIT: Duration = Duration::from_secs(180);

type Decision = (i64, String, i64, String, Option<String>);

fn decisions(job: &std::path::Path, idle_exit: Option<Duration>) -> (Vec<Decision>, Vec<String>) {
    decisions_at(job, idle_exit, 1_800_000_000_000).0
}

fn decisions_at(
    job: &std::path::Path,
    idle_exit: Option<Duration>,
    now: i64,
) -> ((Vec<Decision>, Vec<String>), usize) {
    let (c, parked) = collect_at(job, idle_exit, now);
    (decisions_of(c), parked)
}

/// A run's rows as decisions and its dead letters' reasons, each sorted.
fn decisions_of(c: Collected) -> (Vec<Decision>, Vec<String>) {
    let mut rows: Vec<Decision> = c
        .events
        .into_iter()
        .map(|e| {
            (
                e.meta.template_id,
                e.receiver.to_string(),
                e.event_time,
                e.state.name().to_string(),
                e.reason,
            )
        })
        .collect();
    rows.sort();
    let mut dead: Vec<String> = c.dead.into_iter().map(|d| d.reason).collect();
    dead.sort();
    (rows, dead)
}

/// Runs `job` (two workers, the clock at `now`) into memory: its rows, dead letters and
/// how many deliveries it left parked.
fn collect_at(job: &std::path::Path, idle_exit: Option<Duration>, now: i64) -> (Collected, usize) {
    collect_with(job, idle_exit, now, 2)
}

/// [`collect_at`] with `workers` workers.
fn collect_with(
    job: &std::path::Path,
    idle_exit: Option<Duration>,
    now: i64,
    workers: usize,
) -> (Collected, usize) {
    collect_run(job, idle_exit, now, workers, false)
}

/// [`collect_with`], `--from-start` or not.
fn collect_run(
    job: &std::path::Path,
    idle_exit: Option<Duration>,
    now: i64,
    workers: usize,
    from_start: bool,
) -> (Collected, usize) {
    let job = Job::load(job).unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryTracking::default();
    let opts = RunOptions {
        workers,
        clock: Clock::Fixed(now),
        tracking: TrackingTarget::Memory(memory.clone()),
        in_flight: 20_000,
        in_flight_receivers: 100_000,
        from_start,
        handle_signals: false,
        idle_exit,
        stop: None,
        drain_timeout: None,
        tracking_give_up: None,
        cluster: None,
        backlog_before: None,
    };
    let summary = common::within(LIMIT, "the Kafka job", move || run(&job, &opts).unwrap());
    (memory.take(), summary.parked)
}

#[test]
fn kafka_and_file_reach_the_same_decisions_and_commit_behind_the_frontier() {
    let (dir, file_job) = common::demo_copy();
    // Requests in event-time order, without the night_delay template: then any grouping into
    // epochs judges them in the same order, so both sources must decide alike.
    let text = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    let mut lines: Vec<(i64, String)> = text
        .lines()
        .filter(|l| !l.contains(r#"\"messageTemplateId\":2,"#))
        .map(|l| {
            (
                serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
                    .as_i64()
                    .unwrap(),
                l.to_string(),
            )
        })
        .collect();
    lines.sort_by_key(|(ts, _)| *ts);
    let body: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("requests.jsonl"), &body).unwrap();

    let unique = common::unique();
    let topic = format!("tidings-test-{unique}");
    let job_text = std::fs::read_to_string(&file_job).unwrap().replace(
        "kind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 256",
        &format!(
            "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"",
            brokers()
        ),
    );
    // Its own state: the file job's final checkpoint (windows and parks) is not its past.
    let job_text = job_text.replace(
        "state_dir = \"var/state\"",
        "state_dir = \"var/state-kafka\"",
    );
    assert!(job_text.contains("kind = \"kafka\"") && job_text.contains("state-kafka"));
    let kafka_job = dir.path().join("kafka.toml");
    std::fs::write(&kafka_job, job_text).unwrap();

    // One key: one partition, so Kafka keeps the file's order.
    let records = lines.iter().map(|(_, l)| Outgoing {
        key: Some("k".into()),
        ..Outgoing::of_line(l).unwrap()
    });
    let sent = produce(&brokers(), &topic, records, || {}).unwrap();
    assert_eq!(sent as usize, lines.len());

    let from_file = decisions(&file_job, None);
    let from_kafka = decisions(&kafka_job, Some(Duration::from_secs(8)));
    assert!(from_file.0.len() > 1000, "{}", from_file.0.len());
    assert_eq!(from_kafka.0.len(), from_file.0.len(), "row counts differ");
    let late = from_kafka
        .0
        .iter()
        .filter(|r| r.4.as_deref().is_some_and(|x| x.starts_with("late")))
        .count();
    let first = from_kafka.0.iter().zip(&from_file.0).find(|(a, b)| a != b);
    assert!(
        from_kafka == from_file,
        "Kafka and file decisions differ ({late} late rows in Kafka); first: {first:?}"
    );

    // The checkpoint's offsets cover everything read: even a new group (no committed offsets,
    // reading from the start) takes nothing again.
    let text = std::fs::read_to_string(&kafka_job).unwrap();
    std::fs::write(
        &kafka_job,
        text.replace(&format!("g-{unique}"), &format!("g2-{unique}")),
    )
    .unwrap();
    let again = decisions(&kafka_job, Some(Duration::from_secs(8)));
    assert!(
        again.0.is_empty() && again.1.is_empty(),
        "replayed {} rows",
        again.0.len()
    );
}

#[test]
fn dedup_windows_and_parks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("restart-{unique}");
    let templates = format!(
        "{}{}",
        common::sms_template(1, "none", true, "phone"),
        common::sms_template(2, "night_delay", true, "phone")
    );
    std::fs::write(dir.path().join("templates.toml"), templates).unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"restart\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"{topic}\"\ngroup = \"g-{unique}\"\ncheckpoint_ms = 200\n\
             max_out_of_order_ms = 3600000\n\
             [dedup]\ncontent = {{ num = 1, time = 300 }}\n[shield]\nnight = \"00:00-08:00\"\nrelease_at = \"09:00\"\n\
             [tracking]\ndir = \"var/tracking\"\n[accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n",
            brokers()
        ),
    )
    .unwrap();
    let request = |ts: i64, template: i64, to: &str| {
        Outgoing::of_line(&common::envelope(ts, template, to, "x")).unwrap()
    };
    // 02:00 and 08:30 in Shanghai: one delivery parks until 09:00, one is sent.
    let night = 1_763_748_000_000;
    let morning = 1_763_771_400_000;
    produce(
        &brokers(),
        &topic,
        [
            request(night, 2, "13800138005"),
            request(morning, 1, "13800138006"),
        ],
        || {},
    )
    .unwrap();
    // The first run ends at 08:40, before the release.
    let ((rows, _), parked) = decisions_at(&job, Some(Duration::from_secs(6)), 1_763_772_000_000);
    let states: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
    assert!(states.contains(&"SEND_SUCCESS"), "{rows:?}");
    assert!(states.contains(&"NIGHT_SHIELD_NEXT_SEND"), "{rows:?}");
    assert_eq!(parked, 1);
    let mut cuts: Vec<_> = std::fs::read_dir(dir.path().join("state/checkpoints"))
        .or_else(|_| std::fs::read_dir(dir.path().join("var/state/checkpoints")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cuts.sort();
    // The newest cut, and the complete one before it (kept in case the newest cannot be read).
    assert!((1..=2).contains(&cuts.len()), "{cuts:?}");
    assert!(
        cuts.iter().all(|c| c.join("_COMPLETE").is_file()),
        "{cuts:?}"
    );

    // The twin a minute later, in a new run at 10:00: the restored window rejects it, and the
    // restored park store releases the night delivery.
    produce(
        &brokers(),
        &topic,
        [request(morning + 60_000, 1, "13800138006")],
        || {},
    )
    .unwrap();
    // A new group: it has no committed offsets, so the restored cut's offsets alone keep the
    // first run's records from being read again. (The calfkit tansu build also never assigns
    // partitions to a group whose members all left gracefully, seen in this test.)
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace(&format!("g-{unique}"), &format!("g2-{unique}")),
    )
    .unwrap();
    let ((rows, _), parked) = decisions_at(&job, Some(Duration::from_secs(6)), 1_763_776_800_000);
    let got: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|r| (r.0, r.1.as_str(), r.3.as_str()))
        .collect();
    assert!(
        got.contains(&(1, "13800138006", "CONTENT_DEDUPLICATION")),
        "{rows:?}"
    );
    assert!(
        got.contains(&(2, "13800138005", "SEND_SUCCESS")),
        "{rows:?}"
    );
    assert_eq!(parked, 0);
    assert_eq!(
        rows.iter().filter(|r| r.3 == "RECEIVE").count(),
        1,
        "only the new record is read again: {rows:?}"
    );

    // `--from-start` (the group has committed offsets by now): no checkpoint and no parked
    // messages are restored, so every record is read again from the topic's beginning, the
    // night delivery among them (it was not read again: its park was lost).
    let (c, parked) = collect_run(
        &job,
        Some(Duration::from_secs(6)),
        1_763_776_800_000,
        2,
        true,
    );
    let (rows, _) = decisions_of(c);
    assert_eq!(
        rows.iter().filter(|r| r.3 == "RECEIVE").count(),
        3,
        "every record is read again: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| (r.0, r.1.as_str(), r.3.as_str()) == (2, "13800138005", "SEND_SUCCESS")),
        "{rows:?}"
    );
    assert_eq!(parked, 0);
}

#[test]
fn tidings_send_produces_single_requests_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", true, "phone"),
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"send\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"send-{unique}\"\ngroup = \"send-{unique}\"\ndead_letter_topic = \"dead-{unique}\"\n\
             [source.properties]\n\"client.id\" = \"send-{unique}\"\n\"message.max.bytes\" = 1000\n\
             [tracking]\ndir = \"var/tracking\"\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n",
            brokers()
        ),
    )
    .unwrap();
    // The job's client properties reach `tidings send`'s producer: librdkafka refuses a
    // record over the job's `message.max.bytes` (the job's consumer and dead-letter producer
    // run with them below).
    let long = "x".repeat(1_200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "send",
            "--job",
            job.to_str().unwrap(),
            "--template",
            "1",
            "--to",
            "13800138009",
        ])
        .args(["--var", &format!("v={long}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a record over message.max.bytes was sent: {err}"
    );
    assert!(err.to_lowercase().contains("too large"), "{err}");
    // Counted from 1: the one record sent is record 1.
    assert!(err.contains("record 1 refused"), "{err}");
    let ts = 1_763_784_000_000i64;
    let file = dir.path().join("requests.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            common::envelope(ts, 1, "13800138001", "a"),
            "{broken"
        ),
    )
    .unwrap();
    let j = job.to_str().unwrap();
    // The file's record is older: produced first, so no partition holds it behind a newer one.
    common::tidings(&["send", "--job", j, "-f", file.to_str().unwrap()]);
    common::tidings(&[
        "send",
        "--job",
        j,
        "--template",
        "1",
        "--to",
        "13800138000,13800138002",
        "--var",
        "v=hello",
    ]);

    let (rows, dead) = decisions(&job, Some(Duration::from_secs(8)));
    let sent: Vec<(&str, i64)> = rows
        .iter()
        .filter(|r| r.3 == "SEND_SUCCESS")
        .map(|r| (r.1.as_str(), r.2))
        .collect();
    assert_eq!(sent.len(), 3, "{rows:?}");
    assert!(
        sent.contains(&("13800138001", ts)),
        "the envelope's ts is the record timestamp: {sent:?}"
    );
    assert_eq!(dead.len(), 1);
    assert!(dead[0].starts_with("unparsable JSON"), "{dead:?}");
    let outbox = std::fs::read_to_string(dir.path().join("var/outbox/sms.jsonl")).unwrap();
    assert!(outbox.contains("hi hello"), "{outbox}");

    // The dead letter is also on the job's dead-letter topic.
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("check-{unique}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("dead-{unique}")]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter on the topic"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            break String::from_utf8(m.unwrap().payload().unwrap().to_vec()).unwrap();
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["reason"].as_str().unwrap().starts_with("unparsable JSON"),
        "{v}"
    );
    assert_eq!(v["payload"], "{broken");
}

/// Writes `NAME.toml` in `dir`: a Kafka job reading `topic` of `brokers` as `group` (state
/// in `var/NAME`), with `[source.properties]` `properties` (TOML lines, or none), and one SMS
/// template (id 1, to phones, `hi {$v}`) sent to a blackhole account; its path.
fn sms_job(
    dir: &std::path::Path,
    name: &str,
    brokers: &str,
    topic: &str,
    group: &str,
    properties: &str,
) -> std::path::PathBuf {
    std::fs::write(
        dir.join("templates.toml"),
        common::sms_template(1, "none", false, "phone"),
    )
    .unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ntemplates = \"templates.toml\"\nstate_dir = \"var/{name}\"\n[source]\n\
             kind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n\
             [source.properties]\n{properties}\n[tracking]\ndir = \"var/tracking\"\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"blackhole\"\n"
        ),
    )
    .unwrap();
    path
}

/// Records written by producers that compress (each of Kafka's codecs: gzip, Snappy, LZ4,
/// zstd) are read and sent like any other; none is skipped as an unreadable batch.
#[test]
fn records_compressed_by_each_codec_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("codecs-{unique}");
    let job = sms_job(
        dir.path(),
        "codecs",
        &brokers(),
        &topic,
        &format!("g-{unique}"),
        "",
    );
    let ts = 1_763_784_000_000i64;
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    for (c, codec) in codecs.iter().enumerate() {
        let records = (0..3).map(|i| {
            let n = c * 3 + i;
            Outgoing::of_line(&common::envelope(
                ts + n as i64,
                1,
                &format!("1380013{n:04}"),
                // Long and repetitive (librdkafka sends a batch uncompressed when compressing
                // would not make it smaller), within an SMS's 500 characters.
                &format!("{codec:-<8}").repeat(50),
            ))
            .unwrap()
        });
        let properties = [("compression.codec".to_string(), codec.to_string())];
        tidings_dataflows::kafka::produce_with(&brokers(), &properties, &topic, records, || {})
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
    }
    let (rows, dead) = decisions(&job, Some(Duration::from_secs(8)));
    let sent: Vec<&str> = rows
        .iter()
        .filter(|r| r.3 == "SEND_SUCCESS")
        .map(|r| r.1.as_str())
        .collect();
    let want: Vec<String> = (0..12).map(|n| format!("1380013{n:04}")).collect();
    assert_eq!(sent, want, "{rows:?}");
    assert!(dead.is_empty(), "{dead:?}");
}

/// How a hand-written record batch is damaged.
#[derive(Clone, Copy, PartialEq)]
enum Damage {
    None,
    /// Marked gzip, its records bytes that do not decompress.
    Compression,
    /// Plain records under a CRC that does not match them.
    Crc,
}

/// A Kafka record batch (format v2) of `values`, timestamped `ts`, as a producer writes it;
/// `damage` as a broken producer or disk would leave it.
fn record_batch(values: &[String], ts: i64, damage: Damage) -> Vec<u8> {
    fn varint(n: i64, out: &mut Vec<u8>) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        varint(0, &mut r); // timestamp delta
        varint(i as i64, &mut r); // offset delta
        varint(-1, &mut r); // no key
        varint(v.len() as i64, &mut r);
        r.extend_from_slice(v.as_bytes());
        varint(0, &mut r); // no headers
        varint(r.len() as i64, &mut records);
        records.extend_from_slice(&r);
    }
    let (codec, records) = match damage {
        Damage::Compression => (1i16, b"\x1f\x8bnot gzip at all, not gzip at all".to_vec()),
        _ => (0, records),
    };
    let mut tail = Vec::new(); // from the attributes on: what the CRC covers
    tail.extend_from_slice(&codec.to_be_bytes());
    tail.extend_from_slice(&(values.len() as i32 - 1).to_be_bytes()); // last offset delta
    tail.extend_from_slice(&ts.to_be_bytes());
    tail.extend_from_slice(&ts.to_be_bytes());
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&(values.len() as i32).to_be_bytes());
    tail.extend_from_slice(&records);
    let crc = match damage {
        Damage::Crc => crc32c(&tail) ^ 1,
        _ => crc32c(&tail),
    };
    let mut batch = 0i64.to_be_bytes().to_vec(); // base offset (the broker's to set)
    batch.extend_from_slice(&(4 + 1 + 4 + tail.len() as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// CRC-32C (Castagnoli), as a record batch's checksum.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Writes `batch` to `partition` of `topic` as it is, with a Produce request (v3) of its own:
/// rdkafka's producer would never write a damaged one. (A Kafka broker checks a batch's CRC
/// and decompresses it when it is produced, and refuses these; the test's broker stores what
/// it is sent, as a damaged disk or link would leave a batch for a consumer.)
fn produce_raw(topic: &str, partition: i32, batch: &[u8]) {
    use std::io::{Read, Write};
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // Produce
    body.extend_from_slice(&3i16.to_be_bytes()); // v3
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&4i16.to_be_bytes());
    body.extend_from_slice(b"test");
    body.extend_from_slice(&(-1i16).to_be_bytes()); // no transaction
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks = all
    body.extend_from_slice(&10_000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    let mut conn = std::net::TcpStream::connect(brokers()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut reply).unwrap();
    // correlation id, one topic (count, name), one partition (count, index), its error code.
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    let error = i16::from_be_bytes([reply[at], reply[at + 1]]);
    assert_eq!(
        error, 0,
        "the broker refused the batch for {topic}/{partition}"
    );
}

/// A record batch librdkafka cannot read (one that does not decompress, one that fails its
/// CRC) does not stop its partition: each of its offsets is a dead letter naming it, the
/// records after it are sent, and a second run of the group reads none of them again. Read
/// again by a new group with one worker, and resumed from inside the batches, the same
/// offsets are the same dead letters. (The
/// test's broker answers a fetch with one batch; the source's handling does not depend on
/// how many a response holds: `kafka::poll_batch`.)
#[test]
fn an_unreadable_batch_is_a_dead_letter_per_offset_and_its_partition_reads_on() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("unreadable-{unique}");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wanted = [NewTopic::new(&topic, 2, TopicReplication::Fixed(1))];
    for r in runtime
        .block_on(admin.create_topics(&wanted, &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap_or_else(|(t, e)| panic!("cannot create {t}: {e}"));
    }
    let group = format!("g-{unique}");
    let job = sms_job(dir.path(), "unreadable", &brokers(), &topic, &group, "");
    let ts = 1_763_784_000_000i64;
    let request = |n: i64| {
        vec![
            serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": format!("1380013{n:04}"), "variables": {"v": "x"}}})
            .to_string(),
        ]
    };
    let three = |n: i64| [request(n), request(n + 1), request(n + 2)].concat();
    // Partition 0: offset 0, a batch of three that does not decompress (1–3), offset 4.
    produce_raw(&topic, 0, &record_batch(&request(0), ts, Damage::None));
    produce_raw(
        &topic,
        0,
        &record_batch(&three(1), ts + 1, Damage::Compression),
    );
    produce_raw(&topic, 0, &record_batch(&request(4), ts + 2, Damage::None));
    // Partition 1: offset 0, a batch of two under a wrong CRC (1–2), offsets 3–5 in one batch.
    produce_raw(&topic, 1, &record_batch(&request(10), ts, Damage::None));
    let two = [request(11), request(12)].concat();
    produce_raw(&topic, 1, &record_batch(&two, ts + 1, Damage::Crc));
    produce_raw(&topic, 1, &record_batch(&three(13), ts + 2, Damage::None));

    // Sent receivers and (where, why) of each dead letter, sorted.
    let outcome = |c: Collected| {
        let mut sent: Vec<String> = c
            .events
            .iter()
            .filter(|e| e.state.name() == "SEND_SUCCESS")
            .map(|e| e.receiver.to_string())
            .collect();
        sent.sort();
        let mut dead: Vec<(String, String)> =
            c.dead.into_iter().map(|d| (d.source, d.reason)).collect();
        dead.sort();
        (sent, dead)
    };
    let (c, _) = collect_at(&job, Some(Duration::from_secs(8)), 1_800_000_000_000);
    let (sent, dead) = outcome(c);
    let want: Vec<String> = [0, 4, 10, 13, 14, 15]
        .iter()
        .map(|n| format!("1380013{n:04}"))
        .collect();
    assert_eq!(sent, want);
    let at: Vec<&str> = dead.iter().map(|(s, _)| s.as_str()).collect();
    let want: Vec<String> = ["0/1", "0/2", "0/3", "1/1", "1/2"]
        .iter()
        .map(|p| format!("{topic}/{p}"))
        .collect();
    assert_eq!(at, want, "{dead:?}");
    for (source, reason) in &dead[..3] {
        let offset = source.rsplit('/').next().unwrap();
        assert!(
            reason.starts_with("Kafka record batch from offset 1 cannot be read (Decompression")
                && reason.ends_with(&format!("; offset {offset} skipped")),
            "{source}: {reason}"
        );
    }
    for (source, reason) in &dead[3..] {
        assert!(
            reason.starts_with("Kafka record batch from offset 1 cannot be read")
                && reason.contains("CRC"),
            "{source}: {reason}"
        );
    }
    // Committed past them: the group's second run reads nothing again.
    let (again, _) = collect_at(&job, Some(Duration::from_secs(8)), 1_800_000_000_000);
    assert!(
        again.events.is_empty() && again.dead.is_empty(),
        "{:?} {:?}",
        again.events,
        again.dead
    );
    // A new group (and state) read by one worker: the same sends and the same dead letters.
    let other = sms_job(
        dir.path(),
        "other",
        &brokers(),
        &topic,
        &format!("other-{unique}"),
        "",
    );
    let (c, _) = collect_with(&other, Some(Duration::from_secs(8)), 1_800_000_000_000, 1);
    assert_eq!(outcome(c), (sent.clone(), dead.clone()));

    // A group whose committed offsets are inside the damaged batches (offset 2 of each
    // partition), as a job's are after a cut taken between two of their dead letters: it
    // resumes with the batches' remaining offsets, and the same dead letters for them.
    let resumed = format!("resumed-{unique}");
    {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &resumed)
            .create()
            .unwrap();
        let mut offsets = rdkafka::TopicPartitionList::new();
        for p in 0..2 {
            offsets
                .add_partition_offset(&topic, p, rdkafka::Offset::Offset(2))
                .unwrap();
        }
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
    }
    let job = sms_job(dir.path(), "resumed", &brokers(), &topic, &resumed, "");
    let (c, _) = collect_at(&job, Some(Duration::from_secs(8)), 1_800_000_000_000);
    let past = |p: &str| p.ends_with("/0/1") || p.ends_with("/1/1");
    let want_dead: Vec<(String, String)> = dead.into_iter().filter(|(p, _)| !past(p)).collect();
    let want_sent: Vec<String> = sent
        .into_iter()
        .filter(|r| !r.ends_with("0000") && !r.ends_with("0010"))
        .collect();
    assert_eq!(outcome(c), (want_sent, want_dead));
}

/// A broker reached only over TLS (scripts/services.sh: `KAFKA_TLS_BROKERS`, its CA's PEM in
/// `KAFKA_TLS_CA`), with `[source.properties]`: `tidings send`'s producer writes to it and the
/// job reads from it, each verifying the broker's certificate by that CA; `tidings check`
/// without the CA cannot reach it, and says why.
#[test]
fn a_broker_over_tls_is_reached_with_its_ca_and_refused_without() {
    let brokers = std::env::var("KAFKA_TLS_BROKERS").unwrap_or_else(|_| "127.0.0.1:19093".into());
    let ca =
        std::env::var("KAFKA_TLS_CA").unwrap_or_else(|_| "/tmp/tidings-services/tls/ca.pem".into());
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("tls-{unique}");
    let group = format!("g-{unique}");
    let job_file = |name: &str, properties: &str| {
        sms_job(dir.path(), name, &brokers, &topic, &group, properties)
    };
    let with_ca = job_file(
        "tls",
        &format!("\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{ca}\""),
    );
    let without_ca = job_file("no-ca", "\"security.protocol\" = \"ssl\"");

    let settings = |path: &std::path::Path| {
        Job::load(path)
            .unwrap_or_else(|e| panic!("{e}"))
            .kafka
            .unwrap()
    };
    let refused = tidings_dataflows::kafka::reach(&settings(&without_ca));
    let why = refused.expect_err("reached a TLS broker without its CA");
    assert!(why.contains("certificate verify failed"), "{why}");

    let k = settings(&with_ca);
    let ts = 1_763_784_000_000i64;
    let records = (0..3).map(|n| {
        Outgoing::of_line(&common::envelope(ts + n, 1, &format!("1380013{n:04}"), "x")).unwrap()
    });
    tidings_dataflows::kafka::produce_with(&k.brokers, &k.properties, &topic, records, || {})
        .unwrap();
    let reached = tidings_dataflows::kafka::reach(&k).unwrap();
    assert!(
        reached.contains(&format!("topic {topic}: 4 partition(s)")),
        "{reached}"
    );
    let (rows, dead) = decisions(&with_ca, Some(Duration::from_secs(8)));
    let sent: Vec<&str> = rows
        .iter()
        .filter(|r| r.3 == "SEND_SUCCESS")
        .map(|r| r.1.as_str())
        .collect();
    assert_eq!(
        sent,
        ["13800130000", "13800130001", "13800130002"],
        "{rows:?}"
    );
    assert!(dead.is_empty(), "{dead:?}");
}

/// `tidings check` reads the topic's own error in the brokers' answer: a topic they do not
/// have fails the check naming it (it was "0 partition(s)", and passed). (The test broker
/// does not make a topic a metadata request names.)
#[test]
fn check_names_a_topic_the_brokers_do_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("never-{unique}");
    let job = sms_job(
        dir.path(),
        "j",
        &brokers(),
        &topic,
        &format!("g-{unique}"),
        "",
    );
    let k = Job::load(&job)
        .unwrap_or_else(|e| panic!("{e}"))
        .kafka
        .unwrap();
    let why = tidings_dataflows::kafka::reach(&k).expect_err("a topic the brokers do not have");
    assert!(
        why.contains(&format!("topic {topic}: "))
            && why.contains("Unknown topic")
            && why.contains("fix source.topic"),
        "{why}"
    );
}

#[test]
fn a_rate_limited_backlog_waits_in_kafka_and_does_not_delay_another_account() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("iso-{unique}");
    let templates = "[[template]]\nid = 1\nname = \"bulk\"\nchannel = \"sms\"\nmsg_type = \"marketing\"\n\
        id_type = \"phone\"\naccount = \"slow\"\ndedup = false\n[template.content]\ncontent = \"sale {$v}\"\n\
        [[template]]\nid = 2\nname = \"notice\"\nchannel = \"email\"\nmsg_type = \"notice\"\n\
        id_type = \"email\"\naccount = \"fast\"\ndedup = false\n[template.content]\ntitle = \"t\"\ncontent = \"n {$v}\"\n";
    std::fs::write(dir.path().join("templates.toml"), templates).unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"iso\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"{topic}\"\ngroup = \"g-{unique}\"\n[tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 100\n\
             [accounts.slow]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = {{ per_second = 20 }}\nmax_queued = 20\n\
             [accounts.fast]\nchannel = \"email\"\nprovider = \"blackhole\"\n",
            brokers()
        ),
    )
    .unwrap();
    let request = |template: i64, to: String| Outgoing {
        key: Some(to.clone()),
        payload: serde_json::json!({"code": "send", "messageTemplateId": template,
            "messageParam": {"receiver": to, "variables": {"v": "x"}}})
        .to_string(),
        timestamp: None,
    };
    // The bulk backlog first (10 s of the slow account's rate), then the notices.
    let bulk = (0..200).map(|i| request(1, format!("138{i:08}")));
    produce(&brokers(), &topic, bulk, || {}).unwrap();
    let notices = (0..20).map(|i| request(2, format!("u{i}@example.com")));
    produce(&brokers(), &topic, notices, || {}).unwrap();

    let job = Job::load(&job).unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryTracking::default();
    let mut opts = RunOptions::for_job(&job);
    opts.workers = 2;
    opts.tracking = TrackingTarget::Memory(memory.clone());
    opts.idle_exit = Some(Duration::from_secs(4));
    let job = std::sync::Arc::new(job);
    let go = |opts: RunOptions| {
        let job = job.clone();
        common::within(LIMIT, "the Kafka job", move || run(&job, &opts).unwrap())
    };
    go(opts.clone());
    let rows = memory.take().events;
    let sent = |t: i64| -> Vec<i64> {
        let mut times: Vec<i64> = rows
            .iter()
            .filter(|r| r.meta.template_id == t && r.state.name() == "SEND_SUCCESS")
            .map(|r| r.time)
            .collect();
        times.sort();
        times
    };
    let (slow, fast) = (sent(1), sent(2));
    assert_eq!(slow.len(), 200, "every bulk receiver is sent exactly once");
    assert_eq!(fast.len(), 20, "every notice is sent exactly once");
    // Isolation: the notices, produced after the whole backlog, are all sent before most of it.
    assert!(
        fast[19] < slow[100],
        "notices waited behind the backlog: last notice at {}, median bulk at {}",
        fast[19] - slow[0],
        slow[100] - slow[0]
    );

    // The account topic's offsets were committed: nothing is sent again.
    let memory = MemoryTracking::default();
    opts.tracking = TrackingTarget::Memory(memory.clone());
    go(opts);
    assert!(memory.take().events.is_empty());
}

/// A graceful stop does not wait for a slow queued account to send what it holds (100 at 2 a
/// second: 50 s, past the 30 s drain bound, which halted the run, exit 1): its sends still
/// waiting for a permit give up, and the next run sends them from the account's topic. Every
/// receiver is sent once over the two runs: the topic is committed short of the first that
/// gave up, and what was sent above it is skipped (`account-sent.json`).
#[test]
fn a_stop_leaves_a_slow_queued_accounts_room_in_its_topic_and_sends_each_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("qstop-{unique}");
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", false, "phone"),
    )
    .unwrap();
    let job_file = dir.path().join("job.toml");
    let write_job = |per_second: u32| {
        std::fs::write(
            &job_file,
            format!(
                "name = \"qstop\"\ntemplates = \"templates.toml\"\nstate_dir = \"var/state\"\n[source]\nkind = \"kafka\"\n\
                 brokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\ncheckpoint_ms = 200\n\
                 [tracking]\ndir = \"var/tracking\"\n\
                 [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
                 rate_limit = {{ per_second = {per_second} }}\nmax_queued = 100\n",
                brokers()
            ),
        )
        .unwrap();
        Job::load(&job_file).unwrap_or_else(|e| panic!("{e}"))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let n = 150;
    let records = (0..n).map(|i| Outgoing {
        key: Some(format!("k{i}")),
        ..Outgoing::of_line(&common::envelope(now + i, 1, &format!("138{i:08}"), "x")).unwrap()
    });
    produce(&brokers(), &topic, records, || {}).unwrap();
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    let sent = || -> Vec<String> {
        let text = std::fs::read_to_string(&outbox).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["receiver"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let memory = MemoryTracking::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut opts = RunOptions::for_job(&write_job(2));
    opts.clock = Clock::System;
    opts.tracking = TrackingTarget::Memory(memory.clone());
    opts.drain_timeout = Some(Duration::from_secs(30));
    let first = {
        let (job, mut opts) = (write_job(2), opts.clone());
        opts.stop = Some(stop.clone());
        std::thread::spawn(move || run(&job, &opts))
    };
    common::wait_until(LIMIT, "a few sends", || sent().len() >= 4);
    stop.store(true, Ordering::SeqCst);
    let stopped = std::time::Instant::now();
    let ended = first.join().unwrap();
    let took = stopped.elapsed();
    ended.unwrap_or_else(|e| panic!("the stop was not graceful: {e:#}"));
    assert!(took < Duration::from_secs(20), "the stop took {took:?}");
    let first_sent = sent().len();
    let rows = memory.take().events;
    let succeeded = |rows: &[tidings_model::EventRow]| {
        rows.iter()
            .filter(|r| r.state.name() == "SEND_SUCCESS")
            .count()
    };
    assert_eq!(succeeded(&rows), first_sent, "every send is tracked");
    assert!(first_sent < n as usize, "the stop came before the end");
    // The next run, at a rate that sends the rest at once.
    let mut again = opts.clone();
    again.idle_exit = Some(Duration::from_secs(6));
    let job = write_job(1000);
    common::within(LIMIT, "the run after the stop", move || {
        run(&job, &again).unwrap()
    });
    let mut all = sent();
    let rows = memory.take().events;
    assert_eq!(
        first_sent + succeeded(&rows),
        all.len(),
        "every send is tracked"
    );
    all.sort();
    let mut once = all.clone();
    once.dedup();
    assert_eq!(once.len(), n as usize, "every receiver is sent");
    assert_eq!(all.len(), n as usize, "no receiver is sent twice");
}

#[test]
fn a_burst_over_four_partitions_decides_as_the_file_does_twice() {
    let (dir, file_job) = common::demo_copy();
    // The demo's lines are up to 71 s out of order; both sources allow 5 minutes.
    common::set_source(&file_job, "max_out_of_order_ms = 300000");
    let text = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    let unique = common::unique();
    // Each run its own topic (rate-limited accounts queue in `<topic>.account.*`), its own
    // group and state: two independent runs over the same burst.
    let kafka_job = |n: u32| {
        let topic = format!("burst{n}-{unique}");
        let job_text = std::fs::read_to_string(&file_job)
            .unwrap()
            .replace(
                "kind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 256",
                &format!(
                    "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g{n}-{unique}\"",
                    brokers()
                ),
            )
            .replace("state_dir = \"var/state\"", &format!("state_dir = \"var/state-{n}\""));
        assert!(job_text.contains("kind = \"kafka\"") && job_text.contains("max_out_of_order_ms"));
        let path = dir.path().join(format!("kafka-{n}.toml"));
        std::fs::write(&path, job_text).unwrap();
        // Every line its own key: the broker spreads them over the topic's 4 partitions, each
        // in the file's order.
        let records = text.lines().enumerate().map(|(i, l)| Outgoing {
            key: Some(format!("k{i}")),
            ..Outgoing::of_line(l).unwrap()
        });
        produce(&brokers(), &topic, records, || {}).unwrap();
        path
    };
    let from_file = decisions(&file_job, None);
    assert!(from_file.0.len() > 3000, "{}", from_file.0.len());
    for n in 1..=2 {
        let from_kafka = decisions(&kafka_job(n), Some(Duration::from_secs(8)));
        let first = from_kafka.0.iter().zip(&from_file.0).find(|(a, b)| a != b);
        let states = |rows: &[Decision]| {
            let mut m = std::collections::BTreeMap::<String, usize>::new();
            for r in rows {
                *m.entry(r.3.clone()).or_default() += 1;
            }
            m
        };
        assert_eq!(
            from_kafka.0.len(),
            from_file.0.len(),
            "run {n}: row counts differ: {:?} vs {:?}; dead {} vs {}",
            states(&from_kafka.0),
            states(&from_file.0),
            from_kafka.1.len(),
            from_file.1.len()
        );
        assert!(
            from_kafka == from_file,
            "run {n}: Kafka and file decisions differ; first: {first:?}"
        );
    }
}

/// A graceful stop of a Kafka job in the middle of a burst (six workers over four partitions:
/// two read nothing), then a run that reads on: together they decide what the file decides,
/// each row once.
#[test]
fn a_graceful_stop_mid_burst_and_a_restart_decide_as_the_file_does() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (dir, file_job) = common::demo_copy();
    common::set_source(&file_job, "max_out_of_order_ms = 300000");
    let text = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    let unique = common::unique();
    let topic = format!("stop-{unique}");
    let job_text = std::fs::read_to_string(&file_job)
        .unwrap()
        .replace(
            "kind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 256",
            &format!(
                "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\ncheckpoint_ms = 50",
                brokers()
            ),
        )
        .replace("state_dir = \"var/state\"", "state_dir = \"var/state-stop\"");
    let path = dir.path().join("kafka-stop.toml");
    std::fs::write(&path, job_text).unwrap();
    let records = text.lines().enumerate().map(|(i, l)| Outgoing {
        key: Some(format!("k{i}")),
        ..Outgoing::of_line(l).unwrap()
    });
    produce(&brokers(), &topic, records, || {}).unwrap();
    let from_file = decisions_at(&file_job, None, 1_800_000_000_000).0;
    let memory = MemoryTracking::default();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = |stop: Option<Arc<AtomicBool>>, idle_exit| RunOptions {
        workers: 6,
        // The wall clock: a stop waits for the caught-up watermark to pass its cut.
        clock: Clock::System,
        tracking: TrackingTarget::Memory(memory.clone()),
        in_flight: 200,
        in_flight_receivers: 100_000,
        from_start: false,
        handle_signals: false,
        idle_exit,
        stop,
        drain_timeout: Some(Duration::from_secs(60)),
        tracking_give_up: None,
        cluster: None,
        backlog_before: None,
    };
    let job = Job::load(&path).unwrap();
    let first = {
        let (job, opts) = (job.clone(), opts(Some(stop.clone()), None));
        std::thread::spawn(move || run(&job, &opts))
    };
    common::wait_until(LIMIT, "a third of the rows", || {
        memory.events_len() >= from_file.0.len() / 3
    });
    stop.store(true, Ordering::SeqCst);
    let summary = first.join().unwrap().unwrap();
    let tracked_first = memory.events_len();
    assert!(tracked_first < from_file.0.len(), "stopped before the end");
    assert!(summary.elapsed < LIMIT);
    let second = opts(None, Some(Duration::from_secs(8)));
    common::within(LIMIT, "the run after the stop", move || {
        run(&job, &second).unwrap()
    });
    let (rows, dead) = decisions_of(memory.take());
    let states = |rows: &[Decision]| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for r in rows {
            *m.entry(r.3.clone()).or_default() += 1;
        }
        m
    };
    assert_eq!(
        rows.len(),
        from_file.0.len(),
        "each row once: {:?} vs {:?}; first run {tracked_first}",
        states(&rows),
        states(&from_file.0)
    );
    assert!(rows == from_file.0, "the two runs decide as the file does");
    assert_eq!(dead, from_file.1);
}

/// Distinct decisions of a Parquet tracking directory (message ids aside: they name the source).
fn distinct_decisions(tracking: &std::path::Path) -> Vec<String> {
    common::sql_csv(
        tracking,
        "SELECT DISTINCT template_id, receiver, event_time, state, coalesce(reason, '') AS reason \
         FROM events ORDER BY template_id, receiver, event_time, state, reason",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn three_sigkills_leave_the_decisions_of_the_file() {
    let (dir, file_job) = common::demo_copy();
    common::set_source(&file_job, "max_out_of_order_ms = 300000");
    let unique = common::unique();
    let topic = format!("kill-{unique}");
    let text = std::fs::read_to_string(&file_job).unwrap();
    let kafka_text = text
        .replace(
            "kind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 256",
            &format!(
                "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\ncheckpoint_ms = 100",
                brokers()
            ),
        )
        .replace("state_dir = \"var/state\"", "state_dir = \"var/state-kafka\"")
        .replace("dir = \"var/tracking\"", "dir = \"var/tracking-kafka\"");
    assert!(kafka_text.contains("tracking-kafka") && kafka_text.contains("checkpoint_ms = 100"));
    let kafka_job = dir.path().join("kafka.toml");
    std::fs::write(&kafka_job, kafka_text).unwrap();
    let j = kafka_job.to_str().unwrap();
    // The demo's lines carry keys 0..999: the burst spreads over the topic's partitions.
    common::tidings(&[
        "send",
        "--job",
        j,
        "-f",
        dir.path().join("requests.jsonl").to_str().unwrap(),
    ]);
    common::tidings(&["run", file_job.to_str().unwrap()]);
    let want = distinct_decisions(&dir.path().join("var/tracking"));
    assert!(want.len() > 3000, "{}", want.len());

    let outbox = dir.path().join("var/outbox");
    for (i, after) in [100usize, 200, 300].into_iter().enumerate() {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["run", j])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed once this run has sent `after` more receivers (or has ended by itself).
        let target = common::count_lines(&outbox) + after;
        common::wait_until(LIMIT, "a run sending", || {
            common::count_lines(&outbox) >= target || child.try_wait().unwrap().is_some()
        });
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "run {i} was killed");
    }
    let mut last = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", j, "--idle-exit", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_within(&mut last, LIMIT, "the run after three SIGKILLs");
    assert!(status.success());
    let got = distinct_decisions(&dir.path().join("var/tracking-kafka"));
    let missing: Vec<&String> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
    let extra: Vec<&String> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
    assert!(
        got == want,
        "{} vs {} distinct rows; missing {missing:?}; extra {extra:?}",
        got.len(),
        want.len()
    );
}

/// A delivery too large for its account's topic (over the producer's 1,000,000-byte message
/// limit) is sent by the main graph itself, once; the others of the run go through the topic.
#[test]
fn a_delivery_too_large_for_its_account_topic_is_sent_directly_once() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("big-{unique}");
    // The content is the variable twice: a 600 kB record renders a 1.2 MB delivery.
    let templates = "[[template]]\nid = 1\nname = \"big\"\nchannel = \"email\"\nmsg_type = \"notice\"\n\
        id_type = \"email\"\naccount = \"slow\"\ndedup = false\n[template.content]\ntitle = \"t\"\ncontent = \"{$v} {$v}\"\n";
    std::fs::write(dir.path().join("templates.toml"), templates).unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"big\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"{topic}\"\ngroup = \"g-{unique}\"\n[tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 100\n\
             [accounts.slow]\nchannel = \"email\"\nprovider = \"blackhole\"\nrate_limit = {{ per_second = 50 }}\n",
            brokers()
        ),
    )
    .unwrap();
    let request = |to: &str, v: String| Outgoing {
        key: Some(to.to_string()),
        payload: serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": to, "variables": {"v": v}}})
        .to_string(),
        timestamp: None,
    };
    let mut records: Vec<Outgoing> = (0..5)
        .map(|i| request(&format!("u{i}@example.com"), "small".into()))
        .collect();
    records.insert(2, request("big@example.com", "x".repeat(600_000)));
    produce(&brokers(), &topic, records, || {}).unwrap();

    let job = Job::load(&job).unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryTracking::default();
    let mut opts = RunOptions::for_job(&job);
    opts.tracking = TrackingTarget::Memory(memory.clone());
    opts.idle_exit = Some(Duration::from_secs(4));
    let summary = common::within(LIMIT, "the Kafka job", move || run(&job, &opts).unwrap());
    let tracked = memory.take();
    assert!(tracked.dead.is_empty(), "{:?}", tracked.dead);
    let sent = |to: &str| {
        tracked
            .events
            .iter()
            .filter(|r| &*r.receiver == to && r.state.name() == "SEND_SUCCESS")
            .count()
    };
    assert_eq!(sent("big@example.com"), 1, "the large delivery, sent once");
    for i in 0..5 {
        assert_eq!(sent(&format!("u{i}@example.com")), 1, "u{i}");
    }
    assert_eq!(
        summary
            .counts
            .states
            .get(&tidings_model::State::SendSuccess),
        Some(&6)
    );
}

/// A recall of a `kafka`-queued account (rate-limited: its deliveries wait in its own topic)
/// takes back what was requested before it, though most of it was still in the topic when the
/// main graph read the recall: the recall is handed off behind those deliveries and runs
/// once they are sent. What came after it is sent and not recalled. The same on 1 and 2
/// workers.
#[test]
fn a_recall_reaches_deliveries_still_queued_in_an_account_topic() {
    let templates = "[[template]]\nid = 1\nname = \"task\"\nchannel = \"enterprise_we_chat\"\nmsg_type = \"notice\"\n\
        id_type = \"enterprise_user_id\"\naccount = \"slow\"\ndedup = false\n[template.content]\ncontent = \"task {$v}\"\n";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let record = |ts: i64, payload: serde_json::Value| Outgoing {
        key: Some("k".into()),
        payload: payload.to_string(),
        timestamp: Some(ts),
    };
    let send = |i: i64, to: String| {
        record(
            now - 60_000 + i,
            serde_json::json!({"code": "send", "messageTemplateId": 1,
                "messageParam": {"receiver": to, "variables": {"v": "x"}}}),
        )
    };
    let mut records: Vec<Outgoing> = (0..40).map(|i| send(i, format!("before-{i:02}"))).collect();
    records.push(record(
        now - 60_000 + 100,
        serde_json::json!({"code": "recall", "messageTemplateId": 1, "recallMessageIds": []}),
    ));
    records.extend((0..5).map(|i| send(200 + i, format!("after-{i}"))));
    let mut seen = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let unique = common::unique();
        let topic = format!("recall-{unique}");
        std::fs::write(dir.path().join("templates.toml"), templates).unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(
            &job,
            format!(
                "name = \"recall\"\ntemplates = \"templates.toml\"\nstate_dir = \"var/state\"\n\
                 [source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\n\
                 [tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 100\n\
                 [accounts.slow]\nchannel = \"enterprise_we_chat\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
                 rate_limit = {{ per_second = 20 }}\nmax_queued = 20\n",
                brokers()
            ),
        )
        .unwrap();
        produce(&brokers(), &topic, records.clone(), || {}).unwrap();
        let job = Job::load(&job).unwrap_or_else(|e| panic!("{e}"));
        let memory = MemoryTracking::default();
        let mut opts = RunOptions::for_job(&job);
        opts.workers = workers;
        opts.tracking = TrackingTarget::Memory(memory.clone());
        opts.idle_exit = Some(Duration::from_secs(4));
        common::within(LIMIT, "the Kafka job", move || run(&job, &opts).unwrap());
        let tracked = memory.take();
        assert!(tracked.dead.is_empty(), "{:?}", tracked.dead);
        let with = |state: &str| -> Vec<String> {
            let mut v: Vec<String> = tracked
                .events
                .iter()
                .filter(|r| r.state.name() == state)
                .map(|r| format!("{} {}", r.receiver, r.reason.as_deref().unwrap_or("")))
                .collect();
            v.sort();
            v
        };
        assert_eq!(with("SEND_SUCCESS").len(), 45, "{workers} worker(s)");
        assert_eq!(
            with("RECALL_FAIL"),
            Vec::<String>::new(),
            "{workers} worker(s)"
        );
        let recalled = with("RECALL_SUCCESS");
        let expected: Vec<String> = (0..40).map(|i| format!("before-{i:02} ")).collect();
        assert_eq!(recalled, expected, "{workers} worker(s)");
        seen.push(recalled);
    }
    assert_eq!(seen[0], seen[1]);
}

/// The records in `topic` (the sum of its partitions' high watermarks).
fn records_in(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// A campaign's send that fails part-way (here a request larger than the producer takes) is
/// tried again every 10 s while its time is due: the requests the broker already
/// acknowledged are not produced again (each copy was a new message to its receivers, up to
/// 60 times over the 10 minutes).
#[test]
fn a_campaign_tried_again_does_not_produce_what_was_acknowledged() {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    use tidings_dataflows::campaign::{Campaign, fire};
    use tidings_dataflows::kafka::KafkaSettings;
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("fire-{}", common::unique());
    // 100 short rows (the first request), then one of ~30 KB (the second).
    let mut crowd = String::from("userId,v\n");
    for i in 0..100 {
        crowd += &format!("138{i:08},x\n");
    }
    crowd += &format!("13900000000,{}\n", "y".repeat(30_000));
    std::fs::write(dir.path().join("c.csv"), crowd).unwrap();
    let c = Campaign {
        template_id: 1,
        name: "c".into(),
        expr: "* * * * * ?".into(),
        cron: tidings_model::cron::Cron::parse("* * * * * ?").unwrap(),
        crowd: dir.path().join("c.csv"),
    };
    let mut kafka = KafkaSettings {
        brokers: brokers(),
        topic: topic.clone(),
        group: "g".into(),
        dead_letter_topic: None,
        checkpoint: Duration::from_secs(1),
        tick: Duration::from_millis(100),
        properties: vec![("message.max.bytes".into(), "20000".into())],
        unresolved: Vec::new(),
    };
    let stop = AtomicBool::new(false);
    let mut acked = HashSet::new();
    for _ in 0..3 {
        let e = fire(&kafka, &c, None, &stop, &mut acked).unwrap_err();
        assert!(format!("{e:#}").contains("refused"), "{e:#}");
    }
    assert_eq!(records_in(&topic), 1, "the first request, once");
    kafka.properties.clear();
    assert_eq!(fire(&kafka, &c, None, &stop, &mut acked).unwrap(), 101);
    assert_eq!(records_in(&topic), 2, "then the second");
}

/// A local time of the campaign jobs' zone (Asia/Shanghai, the default), as epoch ms.
fn shanghai_ms(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> i64 {
    use chrono::TimeZone;
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(year, month, day, hour, minute, 0)
        .unwrap()
        .timestamp_millis()
}

/// A Kafka job (a topic and group of its own) of `templates`, with the crowd file `crowd`
/// beside it and an email outbox account `out`.
fn campaign_job(dir: &std::path::Path, templates: &str, crowd: (&str, &str)) -> std::path::PathBuf {
    let unique = common::unique();
    std::fs::write(dir.join("templates.toml"), templates).unwrap();
    std::fs::write(dir.join(crowd.0), crowd.1).unwrap();
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"campaign\"\ntemplates = \"templates.toml\"\nstate_dir = \"var/state\"\n\
             [source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"campaign-{unique}\"\ngroup = \"g-{unique}\"\n\
             [tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 100\n\
             [accounts.out]\nchannel = \"email\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n",
            brokers()
        ),
    )
    .unwrap();
    job
}

/// A campaign (a `cron` template with a crowd) due when the job starts is sent to its crowd,
/// each request stamped when it is produced (the job's clock, fixed here 30 s after the
/// time). A restart does not send it again; the next day's time is sent the next day. The
/// same decisions on 1 and 2 workers.
#[test]
fn a_campaign_is_sent_to_its_crowd_once_per_scheduled_time() {
    let ten = shanghai_ms(2027, 1, 15, 10, 0);
    let templates = "[[template]]\nid = 9\nname = \"daily\"\nchannel = \"email\"\nmsg_type = \"marketing\"\n\
        id_type = \"email\"\naccount = \"out\"\ntemplate_type = \"cron\"\ncron = \"0 0 10 * * ?\"\ncrowd = \"crowd.csv\"\n\
        [template.content]\ntitle = \"Hello {$name}\"\ncontent = \"{$offer}\"\n";
    let crowd = "userId,name,offer\na@example.com,Li,10% off\nb@example.com,\"Wang, Jr\",20% off\nc@example.com,Zhao,30% off\n";
    let mut seen = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let job = campaign_job(dir.path(), templates, ("crowd.csv", crowd));
        // Started 30 s after ten: the time is due and sent at once.
        let (rows, dead) =
            decisions_of(collect_with(&job, Some(Duration::from_secs(4)), ten + 30_000, workers).0);
        assert!(dead.is_empty(), "{dead:?}");
        let sent: Vec<&Decision> = rows.iter().filter(|r| r.3 == "SEND_SUCCESS").collect();
        assert_eq!(sent.len(), 3, "{workers} worker(s): {rows:?}");
        assert!(sent.iter().all(|r| r.2 == ten + 30_000), "{sent:?}");
        let outbox = std::fs::read_dir(dir.path().join("var/outbox"))
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect::<String>();
        assert!(
            outbox.contains("Hello Wang, Jr") && outbox.contains("30% off"),
            "{outbox}"
        );
        // Restarted five minutes later: nothing is due again.
        let (again, _) = decisions_of(
            collect_with(&job, Some(Duration::from_secs(4)), ten + 300_000, workers).0,
        );
        assert!(again.is_empty(), "{again:?}");
        // The next day, 20 s after ten: the next day's time.
        let day = 86_400_000;
        let (next, _) = decisions_of(
            collect_with(
                &job,
                Some(Duration::from_secs(4)),
                ten + day + 20_000,
                workers,
            )
            .0,
        );
        let sent: Vec<i64> = next
            .iter()
            .filter(|r| r.3 == "SEND_SUCCESS")
            .map(|r| r.2)
            .collect();
        assert_eq!(sent, [ten + day + 20_000; 3]);
        seen.push(rows);
    }
    assert_eq!(seen[0], seen[1]);
}

/// A campaign made by a live template change (a record in the topic) is scheduled once the
/// graph applies it, without a restart: its time, due within the misfire window, is sent. A
/// restart keeps it (the checkpoint's book): the next day's time is sent. A live disable
/// removes it, and a restart keeps it removed. The same decisions on 1 and 2 workers.
#[test]
fn a_live_template_change_makes_and_removes_a_campaign() {
    let ten = shanghai_ms(2027, 1, 15, 10, 0);
    let templates = "[[template]]\nid = 9\nname = \"daily\"\nchannel = \"email\"\nmsg_type = \"marketing\"\n\
        id_type = \"email\"\naccount = \"out\"\ntemplate_type = \"cron\"\n\
        [template.content]\ntitle = \"Hello {$name}\"\ncontent = \"hi\"\n";
    let change = |ts: i64, body: serde_json::Value| Outgoing {
        key: None,
        payload: body.to_string(),
        timestamp: Some(ts),
    };
    let put = change(
        ten + 20_000,
        serde_json::json!({"code": "template", "template": {"id": 9, "name": "daily",
            "channel": "email", "msg_type": "marketing", "id_type": "email", "account": "out",
            "template_type": "cron", "cron": "0 0 10 * * ?", "crowd": "crowd.csv",
            "content": {"title": "Hello {$name}", "content": "hi"}}}),
    );
    let day = 86_400_000;
    let disable = change(
        ten + day + 60_000,
        serde_json::json!({"code": "template", "disable": 9}),
    );
    let crowd = (
        "crowd.csv",
        "userId,name\na@example.com,Li\nb@example.com,Wang\n",
    );
    let mut seen = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let job = campaign_job(dir.path(), templates, crowd);
        let topic = Job::load(&job).unwrap().kafka.unwrap().topic;
        let run_at = |now: i64| {
            decisions_of(collect_with(&job, Some(Duration::from_secs(4)), now, workers).0)
        };
        produce(&brokers(), &topic, vec![put.clone()], || {}).unwrap();
        let (rows, dead) = run_at(ten + 30_000);
        assert!(dead.is_empty(), "{dead:?}");
        let sent: Vec<&Decision> = rows.iter().filter(|r| r.3 == "SEND_SUCCESS").collect();
        assert_eq!(sent.len(), 2, "{workers} worker(s): {rows:?}");
        assert!(sent.iter().all(|r| r.2 == ten + 30_000), "{sent:?}");
        // `campaign list` reads the checkpoint's book: the live campaign is listed.
        let list = || {
            common::tidings(&[
                "campaign",
                "list",
                "--job",
                job.to_str().unwrap(),
                "--format",
                "json",
            ])
        };
        let listed: serde_json::Value = serde_json::from_str(list().trim()).unwrap();
        assert_eq!(listed["cron"], "0 0 10 * * ?", "{listed}");
        let (next_day, _) = run_at(ten + day + 20_000);
        let sent: Vec<i64> = next_day
            .iter()
            .filter(|r| r.3 == "SEND_SUCCESS")
            .map(|r| r.2)
            .collect();
        assert_eq!(sent, [ten + day + 20_000; 2], "{next_day:?}");
        // Disabled live a minute later; nothing is sent then, nor the day after.
        produce(&brokers(), &topic, vec![disable.clone()], || {}).unwrap();
        let (later, dead) = run_at(ten + day + 120_000);
        assert!(later.is_empty() && dead.is_empty(), "{later:?} {dead:?}");
        assert_eq!(list().trim(), "", "a disabled campaign is not listed");
        let (after, dead) = run_at(ten + 2 * day + 20_000);
        assert!(after.is_empty() && dead.is_empty(), "{after:?} {dead:?}");
        seen.push(rows);
    }
    assert_eq!(seen[0], seen[1]);
}

/// `tidings campaign list` shows a campaign's schedule and crowd; `tidings campaign send`
/// sends its crowd by hand, stamped with `--at`, without moving its schedule.
#[test]
fn a_campaign_is_listed_and_sent_by_hand_as_at_a_time() {
    let at = shanghai_ms(2027, 3, 1, 8, 30);
    let dir = tempfile::tempdir().unwrap();
    let job = campaign_job(
        dir.path(),
        "[[template]]\nid = 4\nname = \"weekly\"\nchannel = \"email\"\nmsg_type = \"notice\"\n\
         id_type = \"email\"\naccount = \"out\"\ntemplate_type = \"cron\"\ncron = \"0 0 9 ? * MON\"\ncrowd = \"c.csv\"\n\
         [template.content]\ntitle = \"t\"\ncontent = \"hi {$name}\"\n",
        ("c.csv", "receiver,name\nx@example.com,X\ny@example.com,Y\n"),
    );
    let job_arg = job.to_str().unwrap();
    let listed: serde_json::Value = serde_json::from_str(
        common::tidings(&["campaign", "list", "--job", job_arg, "--format", "json"]).trim(),
    )
    .unwrap();
    assert_eq!(listed["template"], 4);
    assert_eq!(listed["receivers"], "2");
    assert_eq!(listed["cron"], "0 0 9 ? * MON");
    assert!(listed["last_sent"].is_null());
    assert!(
        listed["next"].as_str().unwrap().contains(" 09:00:00 "),
        "{listed}"
    );
    common::tidings(&[
        "campaign",
        "send",
        "--job",
        job_arg,
        "--template",
        "4",
        "--at",
        "2027-03-01 08:30:00",
    ]);
    // Run at 9:30: the Monday 9:00 time is 30 minutes past (more than the 10 a start sends);
    // only the crowd sent by hand is read.
    let (rows, dead) =
        decisions_of(collect_with(&job, Some(Duration::from_secs(4)), at + 3_600_000, 2).0);
    assert!(dead.is_empty(), "{dead:?}");
    let sent: Vec<(String, i64)> = rows
        .iter()
        .filter(|r| r.3 == "SEND_SUCCESS")
        .map(|r| (r.1.clone(), r.2))
        .collect();
    assert_eq!(
        sent,
        [
            ("x@example.com".to_string(), at),
            ("y@example.com".to_string(), at)
        ]
    );
    assert!(!dir.path().join("var/state/campaigns.json").exists());
}

/// A caught-up partition's watermark follows the wall clock only on turns that read it: a
/// record produced while the source is held back (4 records in flight, sent at 2 a second)
/// is judged at its own time when it is read, not late by the time it waited. (Before, the
/// watermark moved on while nothing was read, and the record was judged at it.)
#[test]
fn a_record_produced_while_the_source_is_held_back_is_not_late() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("held-{unique}");
    let job = sms_job(
        dir.path(),
        "held",
        &brokers(),
        &topic,
        &format!("g-{unique}"),
        "",
    );
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(
            "[source]\n",
            "[source]\nin_flight = 4\nmax_out_of_order_ms = 1000\n",
        )
        .replace(
            "provider = \"blackhole\"\n",
            "provider = \"outbox\"\ndir = \"var/outbox\"\nqueue = \"memory\"\nrate_limit = { per_second = 2 }\n",
        );
    assert!(text.contains("in_flight = 4") && text.contains("per_second = 2"));
    std::fs::write(&job, text).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let request = |ts: i64, to: &str| Outgoing::of_line(&common::envelope(ts, 1, to, "x")).unwrap();
    let first = now();
    let records = (0..8).map(|i| request(first, &format!("1380013800{i}")));
    produce(&brokers(), &topic, records, || {}).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap(), "-w", "1", "--idle-exit", "4"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Three sent: the source has read the eight (and reached the partition's end) and has
    // been held back for a second.
    let outbox = dir.path().join("var/outbox");
    common::wait_until(Duration::from_secs(60), "three sends", || {
        common::count_lines(&outbox) >= 3
    });
    let late = now();
    produce(&brokers(), &topic, [request(late, "13900139000")], || {}).unwrap();
    let status = common::wait_within(&mut child, LIMIT, "the held-back run");
    assert!(status.success(), "{status}");
    let rows = common::sql_csv(
        &dir.path().join("var/tracking"),
        "SELECT receiver, CAST(event_time AS BIGINT) AS t FROM events \
         WHERE state = 'RECEIVE' ORDER BY 1",
    );
    assert_eq!(rows.lines().count(), 10, "{rows}");
    assert!(
        rows.contains(&format!("13900139000,{late}")),
        "judged at its own time {late}: {rows}"
    );
}

/// A dead-letter topic that refuses a letter (here a name no broker takes) does not panic the
/// job: the flush fails saying why, and keeps the letter for the next flush (tracking retries
/// it, holding the epoch, as a failed tracking write); a topic that takes them acknowledges.
#[test]
fn a_refused_dead_letter_is_kept_and_said_not_a_panic() {
    use tidings_dataflows::kafka::{DeadLetterTopic, KafkaSettings};
    let settings = KafkaSettings {
        brokers: brokers(),
        topic: "unused".into(),
        group: "unused".into(),
        dead_letter_topic: None,
        checkpoint: Duration::from_secs(1),
        tick: Duration::from_millis(10),
        properties: Vec::new(),
        unresolved: Vec::new(),
    };
    let letter = |n: u32| tidings_model::DeadLetter {
        time: 0,
        source: format!("t/0/{n}"),
        payload: "{broken".into(),
        reason: "unparsable JSON".into(),
    };
    let bad = DeadLetterTopic::connect(&settings, "no topic/may have this name").unwrap();
    bad.send(&letter(1));
    bad.send(&letter(2));
    let err = bad.flush().unwrap_err().to_string();
    assert!(
        err.contains("no topic/may have this name") && err.contains("2 letter(s) refused"),
        "{err}"
    );
    // Kept: the next flush produces them again, and says so again.
    let err = bad.flush().unwrap_err().to_string();
    assert!(err.contains("2 letter(s) refused"), "{err}");

    let good = DeadLetterTopic::connect(&settings, &format!("dead-{}", common::unique())).unwrap();
    good.send(&letter(3));
    good.flush().unwrap();
    good.flush().unwrap();
}
