//! Helpers shared by the integration tests: a job in a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tidings_dataflows::{Job, RunOptions, TrackingTarget, run};
use tidings_model::{DeadLetter, EventRow};
use tidings_operators::Clock;
use tidings_sinks::tracking::MemoryTracking;

/// Copies a directory (not its `var/`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "var" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The demo job copied into a fresh temporary directory.
pub fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo"),
        dir.path(),
    );
    let job = dir.path().join("job.toml");
    (dir, job)
}

/// Runs a job into memory with `workers` and a fixed clock; returns its rows.
pub fn run_memory(
    job: &Path,
    workers: usize,
    now: i64,
) -> (Vec<EventRow>, Vec<DeadLetter>, tidings_dataflows::Summary) {
    run_memory_backlog(job, workers, now, None)
}

/// [`run_memory`] with the run's `backlog_before` (`None`: a minute and the
/// out-of-order bound before `now`).
pub fn run_memory_backlog(
    job: &Path,
    workers: usize,
    now: i64,
    backlog_before: Option<i64>,
) -> (Vec<EventRow>, Vec<DeadLetter>, tidings_dataflows::Summary) {
    let job = Job::load(job).unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryTracking::default();
    let opts = RunOptions {
        workers,
        clock: Clock::Fixed(now),
        tracking: TrackingTarget::Memory(memory.clone()),
        in_flight: 20_000,
        in_flight_receivers: 100_000,
        from_start: false,
        handle_signals: false,
        idle_exit: None,
        stop: None,
        drain_timeout: None,
        tracking_give_up: None,
        cluster: None,
        backlog_before,
    };
    let summary = run(&job, &opts).unwrap();
    let c = memory.take();
    (c.events, c.dead, summary)
}

/// Adds `line` (e.g. `max_out_of_order_ms = 1000`) to the `[source]` table of a job file.
pub fn set_source(job: &Path, line: &str) {
    let text = std::fs::read_to_string(job).unwrap();
    let text = text.replacen("[source]\n", &format!("[source]\n{line}\n"), 1);
    std::fs::write(job, text).unwrap();
}

/// Writes a small job: templates, requests and job file; returns the job path.
pub fn write_job(dir: &Path, templates: &str, requests: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("templates.toml"), templates).unwrap();
    std::fs::write(dir.join("requests.jsonl"), requests).unwrap();
    let job = format!(
        "name = \"t\"\ntimezone = \"Asia/Shanghai\"\ntemplates = \"templates.toml\"\n{extra}\n[source]\nkind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 3\n[tracking]\ndir = \"var/tracking\"\n[accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n"
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

/// [`write_job`] of one SMS template ([`sms_template`] 1) whose file source is the directory
/// `requests/` (one file per partition, written by the caller).
pub fn directory_job(dir: &Path) -> PathBuf {
    let job = write_job(dir, &sms_template(1, "none", false, "phone"), "", "");
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("path = \"requests.jsonl\"", "path = \"requests\"");
    std::fs::write(&job, text).unwrap();
    job
}

/// An SMS template with `content = "hi {$v}"`.
pub fn sms_template(id: i64, shield: &str, dedup: bool, id_type: &str) -> String {
    format!(
        "[[template]]\nid = {id}\nname = \"t{id}\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"{id_type}\"\nshield = \"{shield}\"\naccount = \"out\"\ndedup = {dedup}\n[template.content]\ncontent = \"hi {{$v}}\"\n"
    )
}

/// A kcat envelope line of a one-param send request.
pub fn envelope(ts: i64, template: i64, receivers: &str, v: &str) -> String {
    let payload = serde_json::json!({"code": "send", "messageTemplateId": template,
        "messageParam": {"receiver": receivers, "variables": {"v": v}}});
    serde_json::json!({"ts": ts, "key": "k", "payload": payload.to_string()}).to_string()
}

/// A name no other test run uses (topics, groups).
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Runs SQL over a tracking directory; the result as CSV with a header.
pub fn sql_csv(dir: &Path, query: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = tidings_sql::Tracking::open(dir).await.unwrap();
        let batches = t.query(query).await.unwrap();
        tidings_sql::format(&batches, tidings_sql::Format::Csv).unwrap()
    })
}

/// The first data row of a CSV result, parsed.
pub fn first_row<T: std::str::FromStr>(csv: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    csv.lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect()
}

/// Runs the `tidings` binary; its stdout, after asserting it succeeded.
pub fn tidings(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tidings {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `f` on its own thread; a run that takes longer than `limit` fails the test with a
/// message instead of hanging the whole test run (the stuck thread is left behind).
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}")
        }
    }
}

/// Waits for a child process at most `limit`; kills it and fails the test after that.
pub fn wait_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    wait_within_showing(child, limit, what, String::new)
}

/// [`wait_within`], the failure also showing what `shown` says then (the processes' logs).
pub fn wait_within_showing(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
    shown: impl FnOnce() -> String,
) -> std::process::ExitStatus {
    use wait_timeout::ChildExt as _;
    match child.wait_timeout(limit).unwrap() {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}{}", shown());
        }
    }
}

/// Joins a thread at most `limit` after the call; fails the test after that.
pub fn join_within<T: Send + 'static>(
    handle: std::thread::JoinHandle<T>,
    limit: std::time::Duration,
    what: &str,
) -> T {
    within(limit, what, move || handle.join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `n` loopback addresses (`127.0.0.1:PORT`) free a moment ago: held together while their
/// ports are picked, so no two are the same.
pub fn free_addresses(n: usize) -> Vec<String> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect()
}

/// Waits until `cond` holds, polling every 20 ms, at most `limit` (then fails naming `what`).
#[allow(dead_code)]
pub fn wait_until(limit: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
}

/// Lines of a file (0 while it does not exist), or of every file in a directory.
#[allow(dead_code)]
pub fn count_lines(path: &Path) -> usize {
    let of = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    match std::fs::read_dir(path) {
        Ok(dir) => dir.filter_map(|e| e.ok()).map(|e| of(&e.path())).sum(),
        Err(_) => of(path),
    }
}

/// A copy of the demo job whose requests, `copies` times over, are split round-robin into 4
/// partition files under `requests/` (the job's source path points there).
pub fn partitioned_demo_copy(copies: usize) -> (tempfile::TempDir, PathBuf) {
    let (dir, job) = demo_copy();
    let lines: Vec<String> = std::fs::read_to_string(dir.path().join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let parts = dir.path().join("requests");
    std::fs::create_dir_all(&parts).unwrap();
    let mut files = vec![String::new(); 4];
    for (i, line) in std::iter::repeat_n(lines.iter(), copies)
        .flatten()
        .enumerate()
    {
        files[i % 4].push_str(line);
        files[i % 4].push('\n');
    }
    for (i, text) in files.iter().enumerate() {
        std::fs::write(parts.join(format!("p{i}.jsonl")), text).unwrap();
    }
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("path = \"requests.jsonl\"", "path = \"requests\"");
    std::fs::write(&job, text).unwrap();
    (dir, job)
}

/// The demo job (several templates, night shield, both dedup rules, discard list, whitelist)
/// with its requests `copies` times over, split round-robin into 4 partition files.
pub fn partitioned_demo(copies: usize) -> (tempfile::TempDir, PathBuf) {
    let (dir, job) = partitioned_demo_copy(copies);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        // Checkpoints often, so a kill finds several complete cuts behind it.
        .replace("epoch_lines = 256", "epoch_lines = 64\ncheckpoint_ms = 200");
    std::fs::write(&job, text).unwrap();
    (dir, job)
}

/// The partitioned demo six times over, its SMS and mail paced at 40 receivers/s, so a run
/// lasts long enough to be killed or stopped mid-run.
pub fn paced_demo() -> (tempfile::TempDir, PathBuf) {
    let (dir, job) = partitioned_demo(6);
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[accounts.email-main]\nchannel = \"email\"\n",
        "[accounts.email-main]\nchannel = \"email\"\nrate_limit = { per_second = 40, strategy = \"receivers\" }\n",
    ).replace("per_second = 500, strategy = \"receivers\"", "per_second = 40, strategy = \"receivers\"");
    std::fs::write(&job, text).unwrap();
    (dir, job)
}

/// Starts `tidings run JOB --local N -w 1 --now NOW` in the background, its stderr to `log`.
pub fn start_local(job: &Path, processes: usize, log: &Path, now: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "run",
            job.to_str().unwrap(),
            "--now",
            now,
            "-w",
            "1",
            "--local",
        ])
        .arg(processes.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Stops a running `tidings run` (still running: asserted) with SIGTERM and waits up to two
/// minutes for its successful exit; returns what it logged to `log`.
pub fn stop_gracefully(child: &mut std::process::Child, log: &Path) -> String {
    assert!(child.try_wait().unwrap().is_none(), "ended before the stop");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_within(child, std::time::Duration::from_secs(120), "the stop");
    let said = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{status}\n{said}");
    said
}

/// The Parquet files under `dir`, at any depth.
pub fn parquet_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        parquet_files(&p)
                    } else {
                        usize::from(p.extension().is_some_and(|x| x == "parquet"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A child's stderr lines, collected on a thread as they come.
pub struct Stderr {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Stderr {
    pub fn any(&self, f: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().unwrap().iter().any(|l| f(l))
    }

    /// Everything, once the child has exited (the pipe read to its end).
    pub fn all(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            join_within(r, std::time::Duration::from_secs(60), "reading stderr");
        }
        self.lines.lock().unwrap().join("\n")
    }
}

pub fn stderr_lines(child: &mut std::process::Child) -> Stderr {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = child.stderr.take().unwrap();
    let l = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    Stderr {
        lines,
        reader: Some(reader),
    }
}
