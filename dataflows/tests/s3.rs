//! Tracking on object storage: a 2-process job writes its tables to `s3://` (the S3-compatible
//! server `scripts/services.sh` starts, configured by the `AWS_*` variables it prints); `tidings
//! sql` reads them back over `s3://` with the same rows as the job run on a local directory,
//! pyarrow (a user's tool) reads them too, and compaction on the store keeps every row once.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidings_sinks::tracking::ObjectDir;
use tidings_sinks::tracking::compact::{CompactSettings, LEASE, pass_objects};

const NOW: &str = "2025-11-22T10:00:00+08:00";
const ROWS: &str = "SELECT message_id, receiver, state, coalesce(reason, '') AS reason \
                    FROM events ORDER BY 1, 2, 3, 4";

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the tests as README.md says (scripts/services.sh start)",
    )
}

/// A new bucket on the test server.
fn bucket() -> String {
    let name = format!("tidings-{}", common::unique()).replace('_', "-");
    let status = reqwest::blocking::Client::new()
        .put(format!("{}/{name}", endpoint()))
        .send()
        .unwrap()
        .status();
    assert!(status.is_success(), "creating bucket {name}: {status}");
    name
}

fn run(job: &Path, workers: usize, processes: usize) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.args(["run", job.to_str().unwrap(), "--now", NOW, "-w"])
        .arg(workers.to_string());
    if processes > 1 {
        cmd.arg("--local").arg(processes.to_string());
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{processes} x {workers}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sql_s3(url: &str, query: &str) -> String {
    common::tidings(&["sql", "--dir", url, "--format", "csv", query])
}

/// The demo job (4 partition files) with its tracking at `tracking`.
fn demo(tracking: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, job) = common::partitioned_demo_copy(1);
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[tracking]\ndir = \"var/tracking\"",
        &format!("[tracking]\ndir = \"{tracking}\""),
    );
    assert!(text.contains(&format!("dir = \"{tracking}\"")));
    std::fs::write(&job, text).unwrap();
    (dir, job)
}

#[test]
fn a_two_process_job_tracks_to_s3_and_sql_and_pyarrow_read_it_back() {
    let (_local_dir, local_job) = demo("var/tracking");
    run(&local_job, 2, 1);
    let expected = common::sql_csv(&local_job.parent().unwrap().join("var/tracking"), ROWS);
    assert!(
        expected.lines().count() > 800,
        "{}",
        expected.lines().count()
    );

    let url = format!("s3://{}/tidings/tracking", bucket());
    let (_dir, job) = demo(&url);
    run(&job, 1, 2);
    let got = sql_s3(&url, ROWS);
    assert!(
        got.trim_end() == expected.trim_end(),
        "s3 rows differ: {} against {} local",
        got.lines().count(),
        expected.lines().count()
    );
    // Both processes wrote files of their own (`part-<ms>-<pid>-w<worker>-<seq>.parquet`).
    let dir = ObjectDir::parse(&url).unwrap();
    let writers: std::collections::BTreeSet<String> = dir
        .list("events")
        .unwrap()
        .into_iter()
        .filter_map(|o| {
            let name = o.rel.rsplit('/').next()?.to_string();
            let mut parts = name.strip_prefix("part-")?.split('-');
            Some(parts.nth(1)?.to_string())
        })
        .collect();
    assert_eq!(writers.len(), 2, "writer pids: {writers:?}");

    // pyarrow reads the same table (Hive partitions) over S3.
    let python =
        std::env::var("TIDINGS_PYTHON").expect("TIDINGS_PYTHON (scripts/services.sh start)");
    let script = r#"
import os, sys
import pyarrow.dataset as ds, pyarrow.fs as fs
end = os.environ["AWS_ENDPOINT_URL"]
s3 = fs.S3FileSystem(endpoint_override=end.split("://")[1], scheme="http", region="us-east-1")
d = ds.dataset(sys.argv[1] + "/events", filesystem=s3, format="parquet", partitioning="hive")
t = d.to_table(columns=["message_id", "receiver", "state"])
print(t.num_rows, len(set(zip(*[t.column(c).to_pylist() for c in ["message_id", "receiver", "state"]]))))
"#;
    let out = Command::new(python)
        .args(["-c", script, url.trim_start_matches("s3://")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counted = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let n = expected.lines().count() - 1;
    let distinct = common::sql_csv(
        &local_job.parent().unwrap().join("var/tracking"),
        "SELECT count(*) FROM (SELECT DISTINCT message_id, receiver, state FROM events)",
    );
    let distinct: usize = common::first_row(&distinct)[0];
    assert_eq!(counted, format!("{n} {distinct}"));
}

#[test]
fn compaction_on_s3_keeps_every_row_once_and_leaves_few_files() {
    let url = format!("s3://{}/t", bucket());
    let (_dir, job) = demo(&url);
    // Small files: short epochs, a flush every 8 rows (over 20 files however the epochs
    // fall: the count depends on how far the frontier moves per step).
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("epoch_lines = 256", "epoch_lines = 16")
        .replace("[tracking]\n", "[tracking]\nflush_rows = 8\n");
    std::fs::write(&job, text).unwrap();
    run(&job, 2, 1);
    let dir = ObjectDir::parse(&url).unwrap();
    let count = || dir.list("events").unwrap().len();
    let files_before = count();
    assert!(files_before > 20, "{files_before} files");
    // Files per partition: a partition of one file has nothing to merge.
    let mut per_partition = std::collections::BTreeMap::<String, usize>::new();
    for o in dir.list("events").unwrap() {
        *per_partition
            .entry(o.rel.split('/').nth(1).unwrap().to_string())
            .or_default() += 1;
    }
    let mergeable: usize = per_partition.values().filter(|&&n| n > 1).sum();
    let after: usize = per_partition
        .values()
        .map(|&n| if n > 1 { 2 } else { 1 })
        .sum();
    let before = sql_s3(&url, ROWS);

    let settings = CompactSettings {
        settle: Duration::ZERO,
        grace: Duration::from_secs(3600),
        target_bytes: 64 * 1024 * 1024,
        ..CompactSettings::default()
    };
    let p = pass_objects(&dir, "events", &settings, None).unwrap();
    assert_eq!(p.merged, mergeable, "{p:?}");
    // Replaced files stay through the grace period and are left out by readers.
    assert_eq!(sql_s3(&url, ROWS), before);
    let immediate = CompactSettings {
        grace: Duration::ZERO,
        ..settings
    };
    let p = pass_objects(&dir, "events", &immediate, None).unwrap();
    assert_eq!((p.merged, p.deleted), (0, mergeable), "{p:?}");
    // One compacted file and its list per partition.
    assert_eq!(count(), after);
    let partitions = per_partition.len();
    assert_eq!(sql_s3(&url, ROWS), before);
    // Retention on the store deletes whole partitions.
    let later = chrono::NaiveDate::from_ymd_opt(2100, 1, 1);
    let p = pass_objects(&dir, "events", &settings, later).unwrap();
    assert_eq!(p.expired, partitions);
    assert_eq!(count(), 0);
}

#[test]
fn an_unreachable_bucket_is_one_line_naming_the_key_and_nothing_is_sent() {
    let (dir, job) = demo("s3://no-such-bucket-tidings/x");
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap(), "--now", NOW])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = stderr
        .lines()
        .find(|l| l.contains("tracking.dir"))
        .unwrap_or_else(|| panic!("no tracking.dir line: {stderr}"));
    assert!(
        line.contains("s3://no-such-bucket-tidings/x") && line.contains("AWS_ENDPOINT_URL"),
        "{line}"
    );
    assert_eq!(
        common::count_lines(&dir.path().join("var/outbox/email.jsonl")),
        0
    );
}

/// A PUT that fails keeps its encoded file and its rows owed; the next flush sends that same
/// file under the same name (a PUT that reported an error may have been stored: a new name
/// would count its rows twice).
#[test]
fn a_failed_put_is_retried_as_the_same_object() {
    use std::sync::Arc;
    use tidings_model::{EventRow, MessageMeta, State, Templates};
    use tidings_sinks::tracking::{ParquetTracking, Tracking, TrackingDir};

    // The bucket does not exist yet: every PUT fails.
    let name = format!("tidings-late-{}", common::unique()).replace('_', "-");
    let url = format!("s3://{name}/t");
    let dir = ObjectDir::parse(&url).unwrap();
    let mut w = Tracking::Parquet(ParquetTracking::new(
        TrackingDir::Object(dir.clone()),
        chrono_tz::Asia::Shanghai,
        Arc::new(Templates::default()),
        "r1",
        0,
    ));
    let at = 1_763_784_000_000;
    let meta = Arc::new(MessageMeta {
        live: None,
        accounts: None,
        message_id: "m1".into(),
        template_id: 1,
        business_id: 2,
        biz_id: None,
        content: "{}".into(),
        event_time: at,
        seq: 0,
    });
    for r in 0..3 {
        w.event(EventRow {
            time: at,
            event_time: at,
            meta: meta.clone(),
            receiver: format!("u{r}").into(),
            state: State::Receive,
            reason: None,
        });
    }
    assert!(w.flush().is_err());
    assert_eq!(w.buffered(), 3, "the rows stay owed");
    assert!(w.flush().is_err());
    // The bucket appears; the same file goes out, once.
    let status = reqwest::blocking::Client::new()
        .put(format!("{}/{name}", endpoint()))
        .send()
        .unwrap()
        .status();
    assert!(status.is_success());
    w.flush().unwrap();
    assert_eq!(w.buffered(), 0);
    let files: Vec<String> = dir
        .list("events")
        .unwrap()
        .into_iter()
        .map(|o| o.rel)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("part-r1-w0-00001.parquet"), "{files:?}");
    assert_eq!(
        sql_s3(&url, "SELECT count(*) FROM events").lines().nth(1),
        Some("3")
    );
}

/// One compactor per prefix: a lease taken by a conditional PUT. Of eight owners trying at
/// once exactly one holds it; the holder renews it, another takes it only once it ran out; a
/// pass over a prefix leased by another compactor does nothing.
#[test]
fn one_compactor_per_prefix_holds_the_lease() {
    let url = format!("s3://{}/lease", bucket());
    let dir = ObjectDir::parse(&url).unwrap();
    let minute = Duration::from_secs(60);
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let d = dir.clone();
            std::thread::spawn(move || d.lease("race", &format!("owner-{i}"), minute).unwrap())
        })
        .collect();
    let won = tries
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&w| w)
        .count();
    assert_eq!(won, 1, "owners holding the lease at once");

    assert!(dir.lease("l", "a", minute).unwrap());
    assert!(dir.lease("l", "a", minute).unwrap(), "the holder renews");
    assert!(!dir.lease("l", "b", minute).unwrap(), "another waits");
    assert!(dir.lease("short", "a", Duration::ZERO).unwrap());
    assert!(
        dir.lease("short", "b", minute).unwrap(),
        "a lease that ran out is taken over"
    );
    dir.release("l", "b").unwrap();
    assert!(
        !dir.lease("l", "b", minute).unwrap(),
        "only the holder releases"
    );
    dir.release("l", "a").unwrap();
    assert!(dir.lease("l", "b", minute).unwrap(), "released, it is free");

    assert!(dir.lease(LEASE, "another-machine", minute).unwrap());
    let p = pass_objects(&dir, "events", &CompactSettings::default(), None).unwrap();
    assert!(p.leased_elsewhere, "{p:?}");
}

/// `state_dir` on the object store: a 2-process cluster stops gracefully at a cut, this
/// machine's state directory is wiped (a new machine), and a 3-process run resumes from the
/// store alone — every row once, the same rows as one process straight through. While the
/// cluster runs, a runner of the same job from another local state directory (another
/// machine) is refused by the store's lock, before it touches anything.
#[test]
fn checkpoints_on_s3_resume_a_cluster_on_a_machine_without_its_state() {
    let (_base_dir, base_job) = common::partitioned_demo(6);
    run(&base_job, 1, 1);
    let rows = |job: &Path| common::sql_csv(&job.parent().unwrap().join("var/tracking"), ROWS);
    let expected = rows(&base_job);

    let state = format!("s3://{}/jobs/demo", bucket());
    let (dir, job) = common::paced_demo();
    let text = std::fs::read_to_string(&job).unwrap();
    assert!(text.contains("state_dir = \"var/state\""));
    std::fs::write(
        &job,
        text.replace(
            "state_dir = \"var/state\"",
            &format!("state_dir = \"{state}\""),
        ),
    )
    .unwrap();
    let log = dir.path().join("cluster.log");
    let mut cluster = common::start_local(&job, 2, &log, NOW);
    let outbox = dir.path().join("var/outbox/email.jsonl");
    common::wait_until(Duration::from_secs(90), "the first sends", || {
        common::count_lines(&outbox) > 60
    });

    // Another machine's runner: its own local state and tracking, the same state_dir.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&job)
            .unwrap()
            .replace(
                &format!("state_dir = \"{state}\""),
                &format!("state_dir = \"{state}\"\nlocal_state_dir = \"var/elsewhere\""),
            )
            .replace("dir = \"var/tracking\"", "dir = \"var/tracking-elsewhere\""),
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", other.to_str().unwrap(), "--now", NOW])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains(&format!("{state}/LOCK")) && said.contains("already running"),
        "{said}"
    );
    assert!(!dir.path().join("var/tracking-elsewhere").exists());

    let said = common::stop_gracefully(&mut cluster, &log);

    // The store holds one complete cut with both processes' parts; the locks are released.
    let store = ObjectDir::parse(&state).unwrap();
    let objects: Vec<String> = store.list("").unwrap().into_iter().map(|o| o.rel).collect();
    let cut = objects
        .iter()
        .find_map(|o| o.strip_suffix("/_COMPLETE"))
        .unwrap_or_else(|| panic!("no complete cut: {objects:?}"));
    for part in ["content-0.keys", "content-1.keys", "parked.jsonl"] {
        assert!(
            objects.contains(&format!("{cut}/{part}")),
            "{part} missing: {objects:?}"
        );
    }
    assert!(
        !objects.iter().any(|o| o.starts_with("LOCK")),
        "{objects:?}"
    );

    // A new machine: nothing of the first run's state is here.
    std::fs::remove_dir_all(dir.path().join("var/state")).unwrap();
    run(&job, 1, 3);
    let got = rows(&job);
    assert!(
        got == expected,
        "{} rows against {} of one process run straight through\n{said}",
        got.lines().count(),
        expected.lines().count()
    );
}

/// With `state_dir` on the store, the campaigns' fired times are kept there too: a job moved
/// to a machine without its local state (a new pod) does not send a recorded time again.
#[test]
fn a_campaign_fired_on_one_machine_is_not_fired_again_on_another() {
    use tidings_dataflows::campaign::Fired;
    let store = ObjectDir::parse(&format!("s3://{}/job", bucket())).unwrap();
    let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let at = 1_796_000_000_000;
    let mut fired = Fired::open(here.path(), Some(&store)).unwrap();
    assert_eq!(fired.last(7), None);
    fired.record(7, at).unwrap();
    // The other machine: nothing local, the store's time.
    assert_eq!(
        Fired::open(there.path(), Some(&store)).unwrap().last(7),
        Some(at)
    );
    // A later time recorded locally only (before this version) is kept: the later of the two.
    std::fs::write(
        there.path().join("campaigns.json"),
        format!("{{\"7\": {}}}", at + 60_000),
    )
    .unwrap();
    let fired = Fired::open(there.path(), Some(&store)).unwrap();
    assert_eq!(fired.last(7), Some(at + 60_000));
}

/// A checkpoint part larger than one part goes up in a multipart upload and comes back in
/// ranged GETs, byte for byte; an empty file and one under a part go whole.
#[test]
fn a_large_file_goes_up_in_parts_and_comes_back_in_ranges() {
    let url = format!("s3://{}/big", bucket());
    let dir = ObjectDir::parse(&url).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    const MIB: u64 = 1 << 20;
    // 12 MiB and a bit in parts of 5 MiB (S3's least but for the last): three parts.
    let body: Vec<u8> = (0..12 * MIB + 777).map(|i| (i * 31 % 251) as u8).collect();
    let small: Vec<u8> = b"a small part".to_vec();
    for (name, bytes) in [
        ("big.bin", &body),
        ("small.bin", &small),
        ("empty.bin", &Vec::new()),
    ] {
        let from = tmp.path().join(name);
        std::fs::write(&from, bytes).unwrap();
        dir.put_file_in(name, &from, 5 * MIB).unwrap();
        let listed = dir.list("").unwrap();
        let on_store = listed.iter().find(|l| l.rel == name).unwrap();
        assert_eq!(on_store.size, bytes.len() as u64, "{name}");
        // S3 names a multipart object's ETag by its parts: "…-3".
        let etag = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(object_store::ObjectStoreExt::head(
                &dir.store(),
                &dir.path(name),
            ))
            .unwrap()
            .e_tag
            .unwrap();
        assert_eq!(etag.ends_with("-3\""), name == "big.bin", "{name}: {etag}");
        let back = tmp.path().join(format!("{name}.back"));
        dir.get_file_in(name, &back, 5 * MIB).unwrap();
        assert!(
            std::fs::read(&back).unwrap() == *bytes,
            "{name}: not the same bytes"
        );
    }
    // A missing object is NotFound, naming it.
    let e = dir
        .get_file("missing.bin", &tmp.path().join("m"))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("missing.bin"), "{e}");
}
