//! Runtime faults (issue 12): a worker panic fails the run fast with one line; one runner per
//! job; tracking that cannot be written holds sends back and resumes; SIGHUP drains; a second
//! signal and the drain timeout stop at once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidings_dataflows::{Job, RunOptions, TrackingTarget, run};
use tidings_operators::Clock;

const LIMIT: Duration = Duration::from_secs(60);

/// A job of `n` one-receiver requests to the outbox at `per_second`, in `dir`.
fn job(dir: &Path, n: usize, per_second: u32, extra: &str) -> PathBuf {
    let templates = common::sms_template(1, "none", false, "user_id");
    let ts = 1_763_784_000_000;
    let lines: Vec<String> = (0..n)
        .map(|i| common::envelope(ts + i as i64, 1, &format!("u{i}"), "x"))
        .collect();
    std::fs::write(dir.join("templates.toml"), templates).unwrap();
    std::fs::write(dir.join("requests.jsonl"), lines.join("\n")).unwrap();
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            // Epochs of 100 ms (a followed file's, not a replay's 1000), the backlog's too (the
            // requests are from 2025): the records are 1 ms apart, so an epoch holds 100 and
            // the in-flight bounds pace them.
            "name = \"hard\"\ntemplates = \"templates.toml\"\nworkers = 2\n{extra}\n[source]\nkind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 20\nepoch_ms = 100\nbacklog_epoch_ms = 100\nmax_out_of_order_ms = 0\n\
             [tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 50\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\nrate_limit = {{ per_second = {per_second} }}\n"
        ),
    )
    .unwrap();
    path
}

fn spawn(job: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn outbox_lines(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("var/outbox/sms.jsonl"))
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0)
}

fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// (RECEIVE rows, SEND_SUCCESS rows) in the job's tracking directory.
fn tracked(dir: &Path) -> (u64, u64) {
    let csv = common::sql_csv(
        &dir.join("var/tracking"),
        "SELECT sum(CASE WHEN state = 'RECEIVE' THEN 1 ELSE 0 END), \
         sum(CASE WHEN state = 'SEND_SUCCESS' THEN 1 ELSE 0 END) FROM events",
    );
    let n: Vec<u64> = common::first_row(&csv);
    (n[0], n[1])
}

/// A worker that panics (here: a fault injected into worker 0; an unreadable park store, the
/// first trigger, is now refused before the workers start) used to leave worker 1 spinning on
/// its dead peer for ever. Now the run ends at once, non-zero, with one
/// `error:` line naming the panic and no backtrace report.
#[test]
fn a_worker_panic_fails_the_run_fast_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 200, 1000, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", path.to_str().unwrap()])
        .env_remove("RUST_BACKTRACE")
        .env("TIDINGS_FAIL_WORKER", "0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_within(&mut child, LIMIT, "a run with a panicking worker");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("worker 0 panicked at ")
            && errors[0].contains("injected fault (TIDINGS_FAIL_WORKER=0)"),
        "{err}"
    );
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
}

/// Two runs of one job at once: the second is refused with the first's pid; the first goes on.
#[test]
fn a_second_run_of_the_same_job_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 5_000, 200, "");
    let mut first = spawn(&path);
    let mut first_err = common::stderr_lines(&mut first);
    let lock = dir.path().join("var/state/LOCK");
    wait_for("the first run's lock", || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == first.id().to_string())
    });
    let second = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("pid {} holds the lock", first.id())) && err.contains("LOCK"),
        "{err}"
    );
    kill(&first, "-TERM");
    let status = common::wait_within(&mut first, LIMIT, "the first run");
    assert!(status.success(), "{}", first_err.all());
}

/// `tracking.dir` under a regular file: nothing is sent; the run exits non-zero with one line
/// naming tracking.dir (it used to send everything and write 0 rows).
#[test]
fn tracking_dir_under_a_file_sends_nothing_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 200, 1000, "state_dir = \"var/state\"");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("dir = \"var/tracking\"", "dir = \"plain/tracking\""),
    )
    .unwrap();
    std::fs::write(dir.path().join("plain"), "a file").unwrap();
    let mut child = spawn(&path);
    let status = common::wait_within(&mut child, LIMIT, "a run with an unwritable tracking.dir");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("error:")
            && l.contains("tracking.dir")
            && l.contains("plain/tracking")),
        "{err}"
    );
    assert_eq!(outbox_lines(dir.path()), 0, "nothing is sent untracked");
}

/// A state file that cannot be read is one line naming it, before any worker starts: no
/// worker panic, nothing sent.
#[test]
fn an_unreadable_park_store_is_one_line_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 200, 1000, "state_dir = \"var/state\"");
    std::fs::create_dir_all(dir.path().join("var/state/parked.jsonl")).unwrap();
    let mut child = spawn(&path);
    let status = common::wait_within(&mut child, LIMIT, "a run with an unreadable park store");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error:") && err.contains("var/state/parked.jsonl"),
        "{err}"
    );
    assert!(!err.contains("panic"), "{err}");
    assert_eq!(outbox_lines(dir.path()), 0, "nothing is sent");
}

/// Tracking breaks mid-run (its directory replaced by a file): sends stop, `/metrics` shows the
/// failure; once the directory is back the job goes on, and every send has its row.
#[test]
fn tracking_that_fails_mid_run_holds_sends_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3_000;
    let path = job(dir.path(), n, 400, "[admin]\nbind = \"127.0.0.1:0\"");
    let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = RunOptions::for_job(&job);
    opts.clock = Clock::System;
    opts.tracking = TrackingTarget::Parquet;
    opts.tracking_give_up = None;
    let running = {
        let job = job.clone();
        std::thread::spawn(move || run(&job, &opts))
    };
    let tracking = dir.path().join("var/tracking");
    let moved = dir.path().join("var/tracking.moved");
    wait_for("first tracking files", || {
        std::fs::read_dir(tracking.join("events")).is_ok_and(|mut d| d.next().is_some())
    });
    std::fs::rename(&tracking, &moved).unwrap();
    std::fs::write(&tracking, "not a directory").unwrap();
    let addr = std::fs::read_to_string(job.state_dir.join("admin.addr")).unwrap();
    let metric = |name: &str| -> u64 {
        let (_, body) = tidings_dataflows::admin::get(addr.trim(), "/metrics", None).unwrap();
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    wait_for("tidings_tracking_failing above 0", || {
        metric("tidings_tracking_failing{") > 0
    });
    // Sends already on their way finish; then nothing more is sent.
    let mut last = outbox_lines(dir.path());
    wait_for("sends to stop", || {
        std::thread::park_timeout(Duration::from_millis(300));
        let now = outbox_lines(dir.path());
        std::mem::replace(&mut last, now) == now
    });
    std::thread::park_timeout(Duration::from_millis(700));
    assert_eq!(outbox_lines(dir.path()), last, "sent while tracking failed");
    assert!((last as usize) < n, "everything was sent: {last}");
    assert!(metric("tidings_tracking_write_failures_total{") > 0);
    std::fs::remove_file(&tracking).unwrap();
    std::fs::rename(&moved, &tracking).unwrap();
    let summary = common::join_within(running, LIMIT, "the run after tracking came back")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(summary.counts.tracking_write_failures > 0);
    assert_eq!(outbox_lines(dir.path()), n as u64);
    assert_eq!(tracked(dir.path()), (n as u64, n as u64));
}

/// SIGHUP drains like SIGTERM: exit 0, every received receiver sent and tracked.
#[test]
fn sighup_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 20_000, 500, "");
    let mut child = spawn(&path);
    let mut err = common::stderr_lines(&mut child);
    wait_for("a first send", || outbox_lines(dir.path()) > 0);
    kill(&child, "-HUP");
    let status = common::wait_within(&mut child, LIMIT, "the drain after SIGHUP");
    let err = err.all();
    assert!(status.success(), "{err}");
    assert!(err.contains("stopping (SIGHUP)"), "{err}");
    let (received, sent) = tracked(dir.path());
    assert!(received > 0 && received < 20_000, "{received}");
    assert_eq!(received, sent, "every received receiver was sent");
    assert_eq!(outbox_lines(dir.path()), sent);
}

/// A slow drain shows its progress; a second signal during it stops the run at once,
/// non-zero, saying so; what was sent is tracked.
#[test]
fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // 5 a second: a drain of the ~80 receivers in flight would take 16 s.
    let path = job(dir.path(), 5_000, 5, "");
    let mut child = spawn(&path);
    let mut err = common::stderr_lines(&mut child);
    wait_for("a first send", || outbox_lines(dir.path()) > 0);
    kill(&child, "-TERM");
    wait_for("the drain to start", || {
        err.any(|l| l.contains("stopping (SIGTERM)"))
    });
    // The drain says how far it is every 5 s.
    wait_for("the drain's progress line", || {
        err.any(|l| l.starts_with("draining for 5 s of 30 s: ") && l.contains(" in flight"))
    });
    let second = Instant::now();
    kill(&child, "-TERM");
    let status = common::wait_within(&mut child, LIMIT, "the halt after a second signal");
    let took = second.elapsed();
    let err = err.all();
    assert!(!status.success(), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    let last = err
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>();
    assert!(
        last.len() == 1 && last[0].contains("stopped at once by a second signal (SIGTERM)"),
        "{err}"
    );
    let (_, sent) = tracked(dir.path());
    assert_eq!(outbox_lines(dir.path()), sent, "every send is tracked");
    // Receivers never sent (their sends gave up waiting for permits) have no terminal row.
    let failed = common::sql_csv(
        &dir.path().join("var/tracking"),
        "SELECT count(*) FROM events WHERE state = 'SEND_FAIL'",
    );
    assert_eq!(common::first_row::<u64>(&failed), vec![0]);
}

/// A drain that cannot finish within its bound is halted, and the run says so.
#[test]
fn the_drain_timeout_bounds_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 5_000, 10, "");
    let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut opts = RunOptions::for_job(&job);
    opts.stop = Some(stop.clone());
    opts.drain_timeout = Some(Duration::from_secs(1));
    let running = std::thread::spawn(move || run(&job, &opts));
    wait_for("a first send", || outbox_lines(dir.path()) > 0);
    let stopped = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let e = common::join_within(running, LIMIT, "the bounded drain")
        .expect_err("a drain cut short is an error");
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "{:?}",
        stopped.elapsed()
    );
    let e = format!("{e:#}");
    assert!(
        e.contains("--drain-timeout 1 s")
            && e.contains("the next run reads the file on from the last checkpoint"),
        "{e}"
    );
    let (_, sent) = tracked(dir.path());
    assert_eq!(outbox_lines(dir.path()), sent, "every send is tracked");
    // Nothing is lost: the sends that gave up at the halt were not part of a completed cut
    // (their offsets were not committed), so a new run sends them.
    let again = Job::load(&self::job(dir.path(), 5_000, 100_000, "")).unwrap();
    common::join_within(
        std::thread::spawn(move || run(&again, &RunOptions::for_job(&again))),
        LIMIT,
        "the run after the halt",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let csv = common::sql_csv(
        &dir.path().join("var/tracking"),
        "SELECT count(DISTINCT receiver) FROM events WHERE state = 'SEND_SUCCESS'",
    );
    assert_eq!(
        common::first_row::<u64>(&csv),
        vec![5_000],
        "every receiver was sent"
    );
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (the test is skipped, saying so) where mounting is not allowed (not root).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        }
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Tracking on a full disk (a small tmpfs): sends stop while writes fail with ENOSPC, no
/// worker panics, no `.tmp` is left; once space is freed the job finishes and every send
/// has its rows. (It used to send 2,416 and write 790 rows, both workers panicking.)
#[test]
fn a_full_disk_holds_sends_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3_000;
    let path = job(
        dir.path(),
        n,
        400,
        "state_dir = \"var/state\"\n[admin]\nbind = \"127.0.0.1:0\"",
    );
    let disk = dir.path().join("var/tracking");
    let Some(_mounted) = Tmpfs::mount(&disk, "2m") else {
        return;
    };
    // Leave about 200 KiB: the start probe and the first files fit, the rest does not.
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![7u8; 2 * 1024 * 1024 - 200 * 1024]).unwrap();
    let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = RunOptions::for_job(&job);
    opts.tracking_give_up = None;
    // Few records ahead of the sends, so the held sends hold the source too.
    opts.in_flight = 100;
    let running = {
        let job = job.clone();
        std::thread::spawn(move || run(&job, &opts))
    };
    wait_for("the admin API", || {
        job.state_dir.join("admin.addr").exists()
    });
    let addr = std::fs::read_to_string(job.state_dir.join("admin.addr")).unwrap();
    let failing = || {
        let (_, body) = tidings_dataflows::admin::get(addr.trim(), "/metrics", None).unwrap();
        body.lines()
            .any(|l| l.starts_with("tidings_tracking_failing{") && !l.ends_with(" 0"))
    };
    wait_for("tracking to fail on the full disk", failing);
    let mut last = outbox_lines(dir.path());
    wait_for("sends to stop", || {
        std::thread::park_timeout(Duration::from_millis(300));
        let now = outbox_lines(dir.path());
        std::mem::replace(&mut last, now) == now
    });
    assert!(
        (last as usize) < n,
        "everything was sent on a full disk: {last}"
    );
    std::fs::remove_file(&filler).unwrap();
    let summary = common::join_within(running, LIMIT, "the run after space returned")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(summary.counts.tracking_write_failures > 0);
    assert_eq!(outbox_lines(dir.path()), n as u64);
    assert_eq!(tracked(dir.path()), (n as u64, n as u64));
    let mut tmp = Vec::new();
    let mut dirs = vec![disk.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".tmp") {
                tmp.push(e.path());
            }
        }
    }
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// One epoch holding far more rows than `tracking.flush_rows` (a burst whose records share an
/// event time) is written in parts of that many rows, not turned into columns all at once: the
/// epoch's rows land in several files, each row exactly once, with one worker or two.
#[test]
fn an_epoch_over_flush_rows_is_written_in_parts_each_row_once() {
    let (records, per_record) = (6u64, 50u64);
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let ts = 1_763_784_000_000;
        let requests: String = (0..records)
            .map(|i| {
                let to: Vec<String> = (0..per_record)
                    .map(|j| format!("138{:08}", i * per_record + j))
                    .collect();
                common::envelope(ts, 1, &to.join(","), &i.to_string()) + "\n"
            })
            .collect();
        let path = common::write_job(
            dir.path(),
            &common::sms_template(1, "none", false, "phone"),
            &requests,
            "",
        );
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("[tracking]\n", "[tracking]\nflush_rows = 40\n");
        std::fs::write(&path, text).unwrap();
        let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut opts = RunOptions::for_job(&job);
        opts.workers = workers;
        opts.clock = Clock::Fixed(ts + 1_000);
        opts.tracking = TrackingTarget::Parquet;
        let summary = run(&job, &opts).unwrap_or_else(|e| panic!("{e}"));
        let receivers = records * per_record;
        assert_eq!(
            summary
                .counts
                .states
                .get(&tidings_model::State::SendSuccess),
            Some(&receivers),
            "{workers} workers"
        );
        let tracking = dir.path().join("var/tracking");
        let csv = common::sql_csv(
            &tracking,
            "SELECT count(*), count(DISTINCT message_id || '/' || receiver || '/' || state) \
             FROM events",
        );
        // RECEIVE and SEND_SUCCESS per receiver, none twice.
        assert_eq!(
            common::first_row::<u64>(&csv),
            vec![2 * receivers, 2 * receivers],
            "{workers} workers"
        );
        let files = common::parquet_files(&tracking.join("events"));
        assert!(
            files as u64 >= 2 * receivers / 40,
            "{files} files for {} rows written 40 at a time ({workers} workers)",
            2 * receivers
        );
    }
}

/// `TIDINGS_OPERATOR_TIMES` (the benches' diagnostic) appends a line per operator of each
/// worker with its scheduled time, and a line per thread with its CPU time; the run's outcome
/// is the same.
#[test]
fn operator_times_are_written_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = job(dir.path(), 200, 100_000, "");
    let times = dir.path().join("times.jsonl");
    // A fresh run (no state, no rows) with or without the variable; all 200 sent and tracked.
    let run = |with: bool| {
        let _ = std::fs::remove_dir_all(dir.path().join("var"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings"));
        cmd.args(["run", path.to_str().unwrap()]);
        if with {
            cmd.env("TIDINGS_OPERATOR_TIMES", &times);
        } else {
            cmd.env_remove("TIDINGS_OPERATOR_TIMES");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(tracked(dir.path()), (200, 200));
    };
    run(true);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&times)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for worker in 0..2 {
        for stage in ["Admit", "ContentDedup", "FrequencyDedup", "Send", "Track"] {
            let op = lines
                .iter()
                .find(|l| l["worker"] == worker && l["operator"] == stage)
                .unwrap_or_else(|| panic!("no {stage} of worker {worker} in {lines:?}"));
            assert!(op["leaf"].as_bool().unwrap(), "{op}");
            assert!(op["schedules"].as_u64().unwrap() > 0, "{op}");
            assert!(op["busy_ms"].as_f64().unwrap() > 0.0, "{op}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l["thread"].as_str().is_some() && l["cpu_ms"].as_f64().is_some()),
        "{lines:?}"
    );
    // Unset, nothing is written.
    std::fs::remove_file(&times).unwrap();
    run(false);
    assert!(!times.exists());
}
