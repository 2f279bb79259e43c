//! Compaction while a job writes and a reader queries: every query sees each row written so
//! far at most once and never loses one it saw before, and after the last pass the partition
//! holds a handful of files with exactly the rows written.

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
    let done = Arc::new(AtomicBool::new(false));
    // The job: a small file every 20 ms for 3 s, 10 rows each.
    let writer = {
        let (root, written, done) = (root.clone(), written.clone(), done.clone());
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
                    message_id: format!("m{f}"),
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
                        receiver: format!("u{r}"),
                        state: State::Receive,
                        reason: None,
                    });
                }
                t.flush().unwrap();
                written.fetch_add(10, Ordering::SeqCst);
                f += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // The compactor: a pass every 100 ms; replaced files deleted 500 ms after.
    let settings = CompactSettings {
        settle: Duration::from_millis(50),
        grace: Duration::from_millis(500),
        target_bytes: 64 * 1024 * 1024,
    };
    let compactor = {
        let (root, done, settings) = (root.clone(), done.clone(), settings.clone());
        std::thread::spawn(move || {
            let mut merged = 0;
            while !done.load(Ordering::SeqCst) {
                merged += pass(&root.join("events"), &settings, None).unwrap().merged;
                std::thread::sleep(Duration::from_millis(100));
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
        let after = written.load(Ordering::SeqCst) as i64;
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
    assert!(files <= 3, "{files} files left");
}
