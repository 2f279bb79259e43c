//! Compaction while a job writes and a reader queries: every query sees each row written so
//! far at most once and never loses one it saw before, and after the last pass the partition
//! holds a handful of files with exactly the rows written.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidings_model::{EventRow, MessageMeta, State, Templates};
use tidings_sinks::tracking::compact::{CompactSettings, pass};
use tidings_sinks::tracking::{ParquetTracking, Tracking};

#[test]
fn queries_during_compaction_see_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    // Rows of the files flushed or being flushed: a query may see a file before the writer
    // counts it in `written`.
    let flushing = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The job: a small file every 20 ms for 3 s, 10 rows each.
    let writer = {
        let (root, written, done) = (root.clone(), written.clone(), done.clone());
        let flushing = flushing.clone();
        std::thread::spawn(move || {
            let mut t = Tracking::Parquet(ParquetTracking::new(
                &root,
                tz,
                Arc::new(Templates::default()),
                "r1",
                0,
            ));
            let at = 1_763_784_000_000;
            let start = Instant::now();
            let mut f = 0;
            while start.elapsed() < Duration::from_secs(3) {
                let meta = Arc::new(MessageMeta {
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
                for r in 0..10 {
                    t.event(EventRow {
                        time: at,
                        event_time: at,
                        meta: meta.clone(),
                        receiver: format!("u{r}").into(),
                        state: State::Receive,
                        reason: None,
                    });
                }
                flushing.fetch_add(10, Ordering::SeqCst);
                t.flush().unwrap();
                written.fetch_add(10, Ordering::SeqCst);
                f += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // The compactor: a pass every 400 ms; replaced files deleted 1.5 s after (longer than a
    // query here, even on a loaded machine).
    let settings = CompactSettings {
        settle: Duration::from_millis(50),
        grace: Duration::from_millis(1500),
        target_bytes: 64 * 1024 * 1024,
        ..CompactSettings::default()
    };
    let compactor = {
        let (root, done, settings) = (root.clone(), done.clone(), settings.clone());
        std::thread::spawn(move || {
            let mut merged = 0;
            while !done.load(Ordering::SeqCst) {
                merged += pass(&root.join("events"), &settings, None).unwrap().merged;
                std::thread::sleep(Duration::from_millis(400));
            }
            merged
        })
    };
    // The reader: queries in a loop.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let count = |sql: &str| -> (i64, i64) {
        rt.block_on(async {
            let t = tidings_sql::Tracking::open(&root).await.unwrap();
            let b = t.query(sql).await.unwrap();
            let csv = tidings_sql::format(&b, tidings_sql::Format::Csv).unwrap();
            let row = csv.lines().nth(1).unwrap().to_string();
            let (a, d) = row.split_once(',').unwrap();
            (a.trim().parse().unwrap(), d.trim().parse().unwrap())
        })
    };
    let q = "SELECT count(*) AS n, count(DISTINCT message_id || '/' || receiver) AS d FROM events";
    let mut seen = 0;
    let mut queries = 0;
    while !done.load(Ordering::SeqCst) {
        if !root.join("events").is_dir() {
            continue;
        }
        let before = written.load(Ordering::SeqCst) as i64;
        let (rows, distinct) = count(q);
        let after = flushing.load(Ordering::SeqCst) as i64;
        assert_eq!(rows, distinct, "a row seen twice (query {queries})");
        assert!(
            rows >= seen && rows >= before && rows <= after,
            "{seen} ≤ {before} ≤ {rows} ≤ {after}"
        );
        seen = rows;
        queries += 1;
    }
    writer.join().unwrap();
    let merged = compactor.join().unwrap();
    // The last passes: everything settled is merged, the grace period passes, replaced go.
    std::thread::sleep(settings.settle);
    pass(&root.join("events"), &settings, None).unwrap();
    std::thread::sleep(settings.grace);
    pass(&root.join("events"), &settings, None).unwrap();
    let total = written.load(Ordering::SeqCst) as i64;
    assert_eq!(count(q), (total, total));
    let files = std::fs::read_dir(root.join("events/date=2025-11-22"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert!(
        merged > 50 && queries > 5,
        "merged {merged}, queries {queries}"
    );
    // ~150 flushed files became one compacted file per pass (and the last pass's).
    assert!(files <= 12, "{files} files left");
}

/// A following job flushing every 100 ms with compaction every second while requests keep
/// coming and a reader queries in a loop: every query sees each RECEIVE row at most once and
/// never fewer than before; at the end every request has its row once and the partition holds
/// compacted files instead of a file per flush.
#[test]
fn a_running_job_compacts_its_tracking_under_queries() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let request = |i: u32| {
        serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": format!("u{i}"), "variables": {"v": "x"}}})
        .to_string()
            + "\n"
    };
    let job = common::write_job(
        dir.path(),
        &common::sms_template(1, "none", false, "user_id"),
        &request(0),
        "workers = 2",
    );
    common::set_source(&job, "follow = true\nmax_out_of_order_ms = 0");
    let text = std::fs::read_to_string(&job).unwrap().replacen(
        "[tracking]\n",
        "[tracking]\nflush_interval_ms = 100\ncompact_every_secs = 1\ncompact_grace_secs = 1\n",
        1,
    );
    std::fs::write(&job, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("run")
        .arg(&job)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tracking = dir.path().join("var/tracking");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receive = || -> (u64, u64) {
        rt.block_on(async {
            let t = tidings_sql::Tracking::open(&tracking).await.unwrap();
            let b = t
                .query("SELECT count(*) AS n, count(DISTINCT receiver) AS d FROM events WHERE state = 'RECEIVE'")
                .await
                .unwrap();
            let csv = tidings_sql::format(&b, tidings_sql::Format::Csv).unwrap();
            let row = csv.lines().nth(1).unwrap().to_string();
            let (a, d) = row.split_once(',').unwrap();
            (a.trim().parse().unwrap(), d.trim().parse().unwrap())
        })
    };
    let lines = 120;
    let mut seen = 0;
    let mut queries = 0;
    for i in 1..lines {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("requests.jsonl"))
            .unwrap();
        f.write_all(request(i).as_bytes()).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(40));
        if tracking.join("events").is_dir() {
            let (n, d) = receive();
            assert_eq!(n, d, "a row seen twice");
            assert!(
                n >= seen && n <= u64::from(i) + 1,
                "{seen} → {n} after {i} lines"
            );
            seen = n;
            queries += 1;
        }
    }
    common::wait_until(Duration::from_secs(30), "every request received", || {
        receive().0 == u64::from(lines)
    });
    // One more compaction pass after the grace period.
    std::thread::sleep(Duration::from_millis(2500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = common::wait_within(&mut child, Duration::from_secs(60), "the job");
    let mut err = String::new();
    use std::io::Read as _;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{err}");
    assert_eq!(receive(), (u64::from(lines), u64::from(lines)));
    let partition = std::fs::read_dir(tracking.join("events"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let names: Vec<String> = std::fs::read_dir(&partition)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert!(queries > 20, "{queries} queries");
    assert!(
        names.iter().any(|n| n.starts_with("compact-")) && names.len() < 15,
        "{names:?}\n{err}"
    );
}

/// `--skip-corrupt` leaves the unreadable files out of every listing and applies the compaction
/// lists as ever, so a compacted partition is still read once.
#[test]
fn skipping_corrupt_files_still_reads_a_compacted_partition_once() {
    let dir = tempfile::tempdir().unwrap();
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let mut t = Tracking::Parquet(ParquetTracking::new(
        dir.path(),
        tz,
        Arc::new(Templates::default()),
        "r1",
        0,
    ));
    let at = 1_763_784_000_000;
    for f in 0..5 {
        let meta = Arc::new(MessageMeta {
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
        for r in 0..10 {
            t.event(EventRow {
                time: at,
                event_time: at,
                meta: meta.clone(),
                receiver: format!("u{r}").into(),
                state: State::Receive,
                reason: None,
            });
        }
        t.flush().unwrap();
    }
    let settings = CompactSettings {
        settle: Duration::ZERO,
        grace: Duration::from_secs(3600),
        target_bytes: 64 * 1024 * 1024,
        ..CompactSettings::default()
    };
    assert_eq!(
        pass(&dir.path().join("events"), &settings, None)
            .unwrap()
            .merged,
        5
    );
    std::fs::write(
        dir.path().join("events/date=2025-11-22/part-bad.parquet"),
        b"not parquet",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (count, skipped) = rt.block_on(async {
        let t = tidings_sql::Tracking::open_with(dir.path(), tidings_sql::Corrupt::Skip)
            .await
            .unwrap();
        let b = t.query("SELECT count(*) AS n FROM events").await.unwrap();
        let csv = tidings_sql::format(&b, tidings_sql::Format::Csv).unwrap();
        (
            csv.lines().nth(1).unwrap().trim().to_string(),
            t.skipped().len(),
        )
    });
    assert_eq!((count.as_str(), skipped), ("50", 1));
}

/// `retain_days` deletes the partitions older than it also in a run shorter than
/// `compact_every_secs` (its first pass is at once); a partition inside it stays.
#[test]
fn a_short_run_deletes_the_partitions_past_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let job = common::write_job(
        dir.path(),
        &common::sms_template(1, "none", false, "user_id"),
        &(serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": "u0", "variables": {"v": "x"}}})
        .to_string()
            + "\n"),
        "",
    );
    let text = std::fs::read_to_string(&job).unwrap().replacen(
        "[tracking]\n",
        "[tracking]\nretain_days = 30\n",
        1,
    );
    std::fs::write(&job, text).unwrap();
    let events = dir.path().join("var/tracking/events");
    let old = events.join("date=2020-01-01");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("part-0.parquet"), b"old").unwrap();
    let today = events.join(format!(
        "date={}",
        chrono::Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .date_naive()
            .format("%Y-%m-%d")
    ));
    common::tidings(&["run", job.to_str().unwrap()]);
    assert!(!old.exists(), "the partition past retention is deleted");
    assert!(today.is_dir(), "today's partition stays");
}
