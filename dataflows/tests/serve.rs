//! `tidings serve`, seen from the outside with real processes: submit, status (with the job's
//! live state), a graceful stop with its final checkpoint, a restart that resumes (sends
//! nothing again), a bad job file refused with `tidings run`'s own error, a kill -9 of the
//! service and its job resumed by the next service, a crashing job restarted with backoff, and
//! the bearer token.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tidings_dataflows::serve::client::request;

const LIMIT: Duration = Duration::from_secs(60);

/// A `tidings serve` on a free loopback port; stopped with SIGTERM when dropped.
struct Serve {
    child: Option<Child>,
    addr: String,
    token: Option<String>,
}

impl Serve {
    fn start(state: &Path, token: Option<&str>, env: &[(&str, &str)]) -> Serve {
        Serve::start_at(state, "127.0.0.1:0", &[], token, env)
    }

    fn start_at(
        state: &Path,
        bind: &str,
        extra: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Serve {
        std::fs::create_dir_all(state).unwrap();
        let _ = std::fs::remove_file(state.join("serve.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.with_extension("stderr"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
        command
            .args(["serve", "--bind", bind, "--state-dir"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(t) = token {
            command.args(["--token", t]);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let addr_file = state.join("serve.addr");
        common::wait_until(LIMIT, "serve wrote its address", || {
            std::fs::read_to_string(&addr_file).is_ok_and(|a| !a.trim().is_empty())
        });
        Serve {
            child: Some(child),
            addr: std::fs::read_to_string(&addr_file).unwrap().trim().into(),
            token: token.map(Into::into),
        }
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = request(
            method,
            &self.addr,
            path,
            body.as_ref(),
            self.token.as_deref(),
        )
        .unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn job(&self, name: &str) -> Value {
        let (status, v) = self.call(Method::GET, &format!("/jobs/{name}"), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    fn wait_state(&self, name: &str, state: &str) -> Value {
        let mut last = Value::Null;
        common::wait_until(LIMIT, &format!("job `{name}` {state}"), || {
            last = self.job(name);
            last["state"] == state
        });
        last
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as a crash of the machine would (the job's child is left to the caller).
    fn kill9(mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal("-TERM", c.id());
            common::wait_within(&mut c, LIMIT, "serve after SIGTERM");
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim().starts_with('Z'))
        })
}

fn request_line(i: usize) -> String {
    json!({"code": "send", "messageTemplateId": 1,
        "messageParam": {"receiver": format!("u{i}"), "variables": {"v": "x"}}})
    .to_string()
        + "\n"
}

/// A file job named `t` reading `lines` requests (and following the file), with an admin API.
fn follow_job(dir: &Path, lines: std::ops::Range<usize>) -> PathBuf {
    let requests: String = lines.map(request_line).collect();
    let job = common::write_job(
        dir,
        &common::sms_template(1, "none", false, "user_id"),
        &requests,
        "[admin]\nbind = \"127.0.0.1:0\"",
    );
    common::set_source(&job, "follow = true\nmax_out_of_order_ms = 200");
    job
}

fn append(dir: &Path, lines: std::ops::Range<usize>) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("requests.jsonl"))
        .unwrap();
    f.write_all(lines.map(request_line).collect::<String>().as_bytes())
        .unwrap();
}

/// RECEIVE rows and distinct receivers among them.
fn receives(dir: &Path) -> Vec<u64> {
    common::first_row(&common::sql_csv(
        &dir.join("var/tracking"),
        "SELECT count(*), count(DISTINCT receiver) FROM events WHERE state = 'RECEIVE'",
    ))
}

fn submit(serve: &Serve, job: &Path) -> (u16, Value) {
    serve.call(
        Method::POST,
        "/jobs",
        Some(json!({"path": job.to_str().unwrap()})),
    )
}

#[test]
fn submit_status_stop_restart_resumes_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let job = follow_job(dir.path(), 0..6);
    let serve = Serve::start(&dir.path().join("serve"), None, &[]);
    let (status, v) = submit(&serve, &job);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], "t");
    let (status, v) = submit(&serve, &job);
    assert_eq!(status, 409, "a second job of a running name: {v}");

    let running = serve.wait_state("t", "running");
    let pid = running["pid"].as_u64().expect("a running job has a pid");
    assert!(alive(pid));
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    common::wait_until(LIMIT, "the six sent", || common::count_lines(&outbox) == 6);
    // The live state comes from the job's own admin API.
    common::wait_until(LIMIT, "the live state counts six RECEIVE rows", || {
        serve.job("t")["live"]["tracking"]["rows"]["RECEIVE"] == 6
    });
    let (status, list) = serve.call(Method::GET, "/jobs", None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "running");
    // The job's own API through the service, and one /metrics for the service and its jobs.
    let (status, source) = serve.call(Method::GET, "/jobs/t/state/source", None);
    assert_eq!(status, 200, "{source}");
    assert_eq!(source["kind"], "file", "{source}");
    let (status, metrics) = serve.call(Method::GET, "/jobs/t/metrics", None);
    assert_eq!(status, 200);
    let job_text = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        job_text.contains("tidings_events_total{job=\"t\""),
        "{job_text}"
    );
    let (status, all) = serve.call(Method::GET, "/metrics", None);
    assert_eq!(status, 200);
    let all = all.as_str().unwrap_or_default().to_string();
    assert!(
        all.contains("tidings_serve_jobs{state=\"running\"} 1")
            && all.contains("tidings_events_total{job=\"t\"")
            && all.ends_with("# EOF\n")
            && all.matches("# TYPE tidings_events counter").count() == 1,
        "{all}"
    );
    let (status, _) = serve.call(Method::GET, "/jobs/nope/metrics", None);
    assert_eq!(status, 404);

    let (status, stopped) = serve.call(Method::POST, "/jobs/t/stop", None);
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["last_exit"], "exit 0", "a graceful stop exits 0");
    assert!(stopped["pid"].is_null());
    assert!(!alive(pid), "the child is gone");
    let complete = std::fs::read_dir(dir.path().join("var/state/checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("_COMPLETE").exists());
    assert!(complete, "a final checkpoint");
    assert_eq!(receives(dir.path()), vec![6, 6]);
    // The console's SQL; the tables it opened are kept for the next request, which still sees
    // what was written since (below), and a table that had no file then once it has one.
    let count = |table: &str| {
        let query = format!("SELECT count(*) FROM {table}");
        let (status, v) = serve.call(Method::POST, "/jobs/t/sql", Some(json!({"query": query})));
        assert_eq!(status, 200, "{v}");
        v["rows"][0][0].as_u64().unwrap()
    };
    assert_eq!((count("events"), count("dead_letters")), (12, 0));

    let (status, v) = serve.call(Method::POST, "/jobs/t/restart", None);
    assert_eq!(status, 200, "{v}");
    let again = serve.wait_state("t", "running");
    assert_ne!(again["pid"].as_u64(), Some(pid));
    // The file source resumes: nothing is sent again; a line appended now is, and a
    // malformed one is a dead letter.
    append(dir.path(), 6..7);
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("requests.jsonl"))
            .unwrap();
        f.write_all(b"{not json\n").unwrap();
    }
    common::wait_until(LIMIT, "the appended one sent", || {
        common::count_lines(&outbox) == 7
    });
    common::wait_until(LIMIT, "the console's tables show the new rows", || {
        count("events") == 14 && count("dead_letters") == 1
    });
    let (status, v) = serve.call(Method::DELETE, "/jobs/t", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(serve.call(Method::GET, "/jobs", None).1, json!([]));
    assert_eq!(serve.call(Method::GET, "/jobs/t", None).0, 404);
    assert_eq!(common::count_lines(&outbox), 7);
    assert_eq!(receives(dir.path()), vec![7, 7]);
}

#[test]
fn a_bad_job_file_is_refused_with_the_run_error_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let job = follow_job(dir.path(), 0..2);
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("epoch_lines = 3", "epoch_lines = \"x\"")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("run")
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let run_error: Vec<String> = String::from_utf8_lossy(&run.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("error: ").map(str::to_string))
        .collect();
    assert_eq!(run_error.len(), 1, "{run_error:?}");

    let serve = Serve::start(&dir.path().join("serve"), None, &[]);
    let (status, v) = submit(&serve, &job);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], run_error[0]);
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("job.toml") && error.contains("line 11") && !error.contains('\n'),
        "one line naming the file and the line: {error}"
    );
    // The CLI prints the same line and exits 2, as `tidings run` does.
    let cli = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["submit", job.to_str().unwrap(), "--server", &serve.addr])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&cli.stderr).trim(),
        format!("error: {}", run_error[0])
    );
    // A relative path and a body that is not the expected JSON are 400s too.
    let (status, _) = serve.call(Method::POST, "/jobs", Some(json!({"path": "job.toml"})));
    assert_eq!(status, 400);
    let (status, _) = serve.call(Method::POST, "/jobs", Some(json!({"file": 1})));
    assert_eq!(status, 400);
    assert_eq!(serve.call(Method::GET, "/jobs", None), (200, json!([])));
    assert!(!dir.path().join("var/outbox").exists(), "nothing ran");
}

#[test]
fn a_killed_service_resumes_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let job = follow_job(dir.path(), 0..5);
    let state = dir.path().join("serve");
    let serve = Serve::start(&state, None, &[]);
    assert_eq!(submit(&serve, &job).0, 201);
    let pid = serve.wait_state("t", "running")["pid"].as_u64().unwrap();
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    common::wait_until(LIMIT, "the five tracked", || {
        serve.job("t")["live"]["tracking"]["rows"]["RECEIVE"] == 5
    });
    // A checkpoint after the five (every second by default): a complete one not there yet.
    let checkpoints = dir.path().join("var/state/checkpoints");
    let complete = || -> Vec<PathBuf> {
        let mut c: Vec<PathBuf> = std::fs::read_dir(&checkpoints)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        c.retain(|p| p.join("_COMPLETE").is_file());
        c
    };
    let before = complete();
    common::wait_until(LIMIT, "a checkpoint after the five", || {
        complete().iter().any(|c| !before.contains(c))
    });
    // The machine crashes: the service and its job die at once.
    let serve_pid = serve.pid();
    serve.kill9();
    signal("-KILL", pid as u32);
    common::wait_until(LIMIT, "the job's child gone", || !alive(pid));
    assert!(!alive(serve_pid as u64));
    append(dir.path(), 5..9);

    let serve = Serve::start(&state, None, &[]);
    let again = serve.wait_state("t", "running");
    assert_ne!(again["pid"].as_u64(), Some(pid));
    common::wait_until(LIMIT, "the appended four sent", || {
        common::count_lines(&outbox) == 9
    });
    let (status, v) = serve.call(Method::POST, "/jobs/t/stop", None);
    assert_eq!((status, &v["state"]), (200, &json!("stopped")), "{v}");
    assert_eq!(
        receives(dir.path()),
        vec![9, 9],
        "every line's RECEIVE once"
    );
}

/// The service killed outright (kill -9, the OOM killer) leaves no job running that no service
/// knows of: the child sees its pipe to the service close and stops as on SIGTERM (a drain, a
/// final checkpoint), and the next service resumes it where it stopped, nothing read twice.
/// (A child left running held the job's lock: the next service's child failed on it again
/// and again while the orphan kept sending.)
#[test]
fn a_job_stops_when_its_service_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let job = follow_job(dir.path(), 0..3);
    let state = dir.path().join("serve");
    let serve = Serve::start(&state, None, &[]);
    assert_eq!(submit(&serve, &job).0, 201);
    let pid = serve.wait_state("t", "running")["pid"].as_u64().unwrap();
    common::wait_until(LIMIT, "the three tracked", || {
        serve.job("t")["live"]["tracking"]["rows"]["RECEIVE"] == 3
    });
    serve.kill9();
    common::wait_until(LIMIT, "the job's child stopped on its own", || !alive(pid));
    let log = std::fs::read_to_string(state.join("logs/t.log")).unwrap_or_default();
    assert!(log.contains("its service's pipe closed"), "{log}");
    append(dir.path(), 3..5);
    let serve = Serve::start(&state, None, &[]);
    let again = serve.wait_state("t", "running");
    assert_ne!(again["pid"].as_u64(), Some(pid));
    assert_eq!(again["restarts"], 0, "resumed, not crash-looping: {again}");
    common::wait_until(LIMIT, "the appended two sent", || {
        common::count_lines(&dir.path().join("var/outbox/sms.jsonl")) == 5
    });
    let (status, v) = serve.call(Method::POST, "/jobs/t/stop", None);
    assert_eq!((status, &v["state"]), (200, &json!("stopped")), "{v}");
    assert_eq!(
        receives(dir.path()),
        vec![5, 5],
        "every line's RECEIVE once"
    );
}

#[test]
fn a_crashing_job_is_restarted_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let job = follow_job(dir.path(), 0..2);
    // Every child's worker 0 panics (the run fails, exit non-zero).
    let serve = Serve::start(
        &dir.path().join("serve"),
        None,
        &[("TIDINGS_FAIL_WORKER", "0")],
    );
    assert_eq!(submit(&serve, &job).0, 201);
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    common::wait_until(LIMIT, "three restarts", || {
        let j = serve.job("t");
        let r = j["restarts"].as_u64().unwrap();
        if r > 0 && seen.last().is_none_or(|(n, _)| *n < r) {
            seen.push((r, Instant::now()));
            assert_ne!(j["last_exit"], "exit 0", "{j}");
            assert!(j["last_exit"].is_string(), "{j}");
        }
        r >= 3
    });
    // Restart delays of 1 s then 2 s (polling may miss a count, never shorten the gap).
    let at = |n: u64| seen.iter().find(|(r, _)| *r >= n).unwrap().1;
    assert!(at(2) - at(1) >= Duration::from_millis(900), "{seen:?}");
    assert!(at(3) - at(2) >= Duration::from_millis(1900), "{seen:?}");
    let (status, v) = serve.call(Method::POST, "/jobs/t/stop", None);
    assert_eq!((status, &v["state"]), (200, &json!("stopped")), "{v}");
    let restarts = v["restarts"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let after = serve.job("t");
    assert_eq!(after["state"], "stopped");
    assert_eq!(
        after["restarts"], restarts,
        "a stopped job is not restarted"
    );
    let log = std::fs::read_to_string(dir.path().join("serve/logs/t.log")).unwrap();
    assert!(
        log.contains("injected fault"),
        "the child's stderr is in its log"
    );
}

#[test]
fn the_token_is_required_when_set_and_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&dir.path().join("serve"), Some("s3cret"), &[]);
    assert_eq!(serve.call(Method::GET, "/jobs", None), (200, json!([])));
    serve.token = Some("wrong".into());
    assert_eq!(serve.call(Method::GET, "/jobs", None).0, 401);
    serve.token = None;
    let (status, v) = serve.call(Method::POST, "/jobs", Some(json!({"path": "/x"})));
    assert_eq!(status, 401, "{v}");
    // Off loopback without a token the service does not start.
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--bind", "0.0.0.0:0", "--state-dir"])
        .arg(dir.path().join("open"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token is required"));
}

/// `tidings submit --upload` sends the job file with its templates and requests: the job runs
/// from the service's `uploads/` directory; a bad template is refused naming the file as sent,
/// and `tidings restart` / `tidings delete` act on the job.
#[test]
fn an_uploaded_job_runs_from_the_service_and_a_bad_upload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = follow_job(dir.path(), 0..4);
    let state = dir.path().join("serve");
    let serve = Serve::start(&state, None, &[]);
    let server = format!("http://{}", serve.addr);
    let j = job.to_str().unwrap();
    common::tidings(&["submit", "--upload", j, "--server", &server]);
    serve.wait_state("t", "running");
    let home = state.join("uploads/t");
    assert!(home.join("job.toml").is_file() && home.join("templates.toml").is_file());
    common::wait_until(LIMIT, "the four sent from the upload", || {
        common::count_lines(&home.join("var/outbox/sms.jsonl")) == 4
    });
    common::tidings(&["restart", "t", "--server", &server]);
    serve.wait_state("t", "running");
    common::tidings(&["delete", "t", "--server", &server]);
    let (_, list) = serve.call(Method::GET, "/jobs", None);
    assert_eq!(list, json!([]));
    // The same upload with a broken template: refused with the problem, nothing started.
    std::fs::write(
        dir.path().join("templates.toml"),
        "[[template]]\nid = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["submit", "--upload", j, "--server", &server])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("templates.toml") && !err.contains(".incoming"),
        "{err}"
    );
    // An upload that names a file of the server outside it, also by a path that only looks
    // like an object store's: refused.
    let text = std::fs::read_to_string(&job).unwrap();
    for (from, to, said) in [
        (
            "path = \"requests.jsonl\"",
            "path = \"/etc/hostname\"",
            "source.path /etc/hostname",
        ),
        (
            "dir = \"var/outbox\"",
            "dir = \"x://../../../x\"",
            "accounts.out.dir x://../../../x",
        ),
    ] {
        let (status, v) = serve.call(
            Method::POST,
            "/jobs",
            Some(
                json!({"job": text.replace(from, to), "files": {"templates.toml":
                common::sms_template(1, "none", false, "user_id")}}),
            ),
        );
        assert_eq!(status, 400, "{v}");
        let want = format!("{said}: an uploaded job keeps its files inside");
        assert!(v.to_string().contains(&want), "{v}");
    }
    // A file of an upload (one sent beside its job file, say) is not submitted by its path:
    // it would not have been checked as the upload's job.
    let uploaded = home.canonicalize().unwrap().join("job.toml");
    let (status, v) = serve.call(Method::POST, "/jobs", Some(json!({"path": uploaded})));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("submitted by uploading it"), "{v}");
    let (_, list) = serve.call(Method::GET, "/jobs", None);
    assert_eq!(list, json!([]));
    // A job whose file was renamed since it was submitted is not restarted under its old
    // name (it would run twice once submitted under the new one).
    let templates = common::sms_template(1, "none", false, "user_id");
    std::fs::write(dir.path().join("templates.toml"), templates).unwrap();
    let (status, v) = serve.call(Method::POST, "/jobs", Some(json!({"path": job})));
    assert_eq!(status, 201, "{v}");
    std::fs::write(&job, text.replace("name = \"t\"", "name = \"t2\"")).unwrap();
    let (status, v) = serve.call(Method::POST, "/jobs/t/restart", None);
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("now names job `t2`"), "{v}");
}

/// `serve --peers`: a job submitted to one of two nodes runs as one timely cluster over both
/// (process 0 here, process 1 there), ends as one run does with the same rows, and a delete
/// asked of one node removes it from both.
#[test]
fn a_job_submitted_to_one_peer_runs_as_one_cluster_over_both() {
    let root = tempfile::tempdir().unwrap();
    // The same job run by one plain process, for its rows.
    let (_plain_dir, plain) = common::demo_copy();
    common::tidings(&["run", plain.to_str().unwrap()]);
    let query =
        "SELECT message_id, receiver, state, coalesce(reason, '') FROM events ORDER BY 1, 2, 3, 4";
    let expected = common::sql_csv(&plain.parent().unwrap().join("var/tracking"), query);

    let (_dir, job) = common::demo_copy();
    let apis = common::free_addresses(2);
    let peers = root.path().join("peers");
    std::fs::write(&peers, apis.join("\n") + "\n").unwrap();
    let nodes: Vec<Serve> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| {
            Serve::start_at(
                &root.path().join(format!("node{i}")),
                api,
                &["--peers", peers.to_str().unwrap()],
                Some("t"),
                &[],
            )
        })
        .collect();
    let (status, answer) = nodes[0].call(Method::POST, "/jobs", Some(json!({"path": job})));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["cluster"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    let there = nodes[1].job("demo");
    assert_eq!(there["cluster"], answer["cluster"], "{there}");
    for node in &nodes {
        let done = node.wait_state("demo", "stopped");
        assert_eq!(done["last_exit"], "exit 0", "{done}");
    }
    let got = common::sql_csv(&job.parent().unwrap().join("var/tracking"), query);
    assert!(
        got == expected,
        "{} rows over two nodes against {} of one process",
        got.lines().count(),
        expected.lines().count()
    );
    let (status, answer) = nodes[0].call(Method::DELETE, "/jobs/demo", None);
    assert_eq!(status, 200, "{answer}");
    let (status, _) = nodes[1].call(Method::GET, "/jobs/demo", None);
    assert_eq!(status, 404, "deleted on the other node too");
    // An upload cannot run over peers (its files would be on one node only).
    let (status, answer) = nodes[1].call(
        Method::POST,
        "/jobs",
        Some(json!({"job": "name = \"x\"", "files": {}})),
    );
    assert_eq!(status, 400, "{answer}");
}

/// A node's service stopped (to restart or upgrade it) stops a Kafka job's cluster on every
/// node; the other node starts its process again (it marked the job stopped, and the
/// service's process, back, waited for it), so the cluster forms again and sends. A stop of
/// the job asked of one node still stops it on both for good.
#[test]
fn a_cluster_job_forms_again_when_a_node_service_comes_back() {
    use tidings_dataflows::kafka::{Outgoing, produce};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let unique = common::unique();
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let topic = format!("serve-rejoin-{unique}");
    std::fs::write(
        dir.join("templates.toml"),
        common::sms_template(1, "none", false, "user_id"),
    )
    .unwrap();
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"rejoin\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\n\
             brokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"{topic}\"\n\
             [tracking]\ndir = \"var/tracking\"\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n"
        ),
    )
    .unwrap();
    let apis = common::free_addresses(2);
    let peers = dir.join("peers");
    std::fs::write(&peers, apis.join("\n") + "\n").unwrap();
    let start = |i: usize| {
        Serve::start_at(
            &dir.join(format!("node{i}")),
            &apis[i],
            &["--peers", peers.to_str().unwrap()],
            Some("t"),
            &[],
        )
    };
    let send = |receiver: &str| {
        let line = serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": receiver, "variables": {"v": "x"}}})
        .to_string();
        let record = Outgoing {
            key: Some("k".into()),
            ..Outgoing::of_line(&line).unwrap()
        };
        produce(&brokers, &topic, [record], || {}).unwrap();
    };
    let sent = |n: usize| {
        common::wait_until(LIMIT, &format!("{n} sent"), || {
            common::count_lines(&dir.join("var/outbox/sms.jsonl")) == n
        })
    };
    // The topic exists before the job starts.
    send("u1");
    let node0 = start(0);
    let node1 = start(1);
    let (status, answer) = node0.call(Method::POST, "/jobs", Some(json!({"path": job})));
    assert_eq!(status, 201, "{answer}");
    sent(1);
    let pid1 = node1.wait_state("rejoin", "running")["pid"].clone();
    // Node 0's service stops (SIGTERM): its process stops, and the cluster with it (each
    // process exits 0).
    drop(node0);
    common::wait_until(LIMIT, "node 1's process started again", || {
        let j = node1.job("rejoin");
        assert_ne!(j["state"], "stopped", "{j}");
        j["pid"].is_u64() && j["pid"] != pid1
    });
    assert_eq!(node1.job("rejoin")["restarts"], 0, "not a crash");
    let node0 = start(0);
    node0.wait_state("rejoin", "running");
    send("u2");
    sent(2);
    let (status, v) = node1.call(Method::POST, "/jobs/rejoin/stop", None);
    assert_eq!((status, &v["state"]), (200, &json!("stopped")), "{v}");
    // Stopped for good on both: the stop reached node 0 too (a process that exited to rejoin
    // is `restarting`, never `stopped`), and a job whose desired state is stopped is never
    // started again.
    for node in [&node0, &node1] {
        let j = node.wait_state("rejoin", "stopped");
        assert_eq!(j["desired"], "stopped", "{j}");
    }
}

#[test]
fn the_send_api_of_a_served_job_answers_ids_its_tracking_carries() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", false, "user_id"),
    )
    .unwrap();
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"sendapi\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\n\
             brokers = \"{brokers}\"\ntopic = \"serve-send-{unique}\"\ngroup = \"serve-send-{unique}\"\n\
             [tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 100\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
             [gateway.callers.app]\ntoken_sha256 = \"{}\"\n",
            tidings_dataflows::gateway::hash_token("app-token")
        ),
    )
    .unwrap();
    let serve = Serve::start_at(
        &dir.path().join("serve"),
        "127.0.0.1:0",
        &["--read-token", "support-token"],
        Some("svc-token"),
        &[],
    );
    let (status, v) = submit(&serve, &job);
    assert_eq!(status, 201, "{v}");
    serve.wait_state("sendapi", "running");
    let body = json!({"code": "send", "messageTemplateId": 1,
        "messageParam": {"receiver": "alice,bob", "variables": {"v": "hi"}}});
    // Without a token: refused.
    let (status, v) = request(Method::POST, &serve.addr, "/send", Some(&body), None).unwrap();
    assert_eq!(status, 401, "{v}");
    // The operators' token sends past the job's callers (the console's test send); the
    // support staff's token never sends; a caller's token sends, a wrong one is the callers'
    // 401.
    let mut ids = Vec::new();
    for (token, want) in [("support-token", 403), ("app-token", 200), ("guess", 401)] {
        let (status, v) = request(
            Method::POST,
            &serve.addr,
            "/jobs/sendapi/send",
            Some(&body),
            Some(token),
        )
        .unwrap();
        assert_eq!(status, want, "{token}: {v}");
    }
    // By name, and at the root (the only Kafka job).
    for path in ["/jobs/sendapi/send", "/send"] {
        let (status, v) = serve.call(Method::POST, path, Some(body.clone()));
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(v["code"], "0");
        ids.push(v["data"][0]["messageId"].as_str().unwrap().to_string());
    }
    let (status, v) = serve.call(Method::POST, "/jobs/nosuch/send", Some(body.clone()));
    assert_eq!((status, v["code"].as_str()), (404, Some("A0001")), "{v}");
    // A token that is not the service's learns nothing of which jobs exist.
    let nosuch = "/jobs/nosuch/send";
    let (status, v) = request(
        Method::POST,
        &serve.addr,
        nosuch,
        Some(&body),
        Some("guess"),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!((status, v["code"].as_str()), (401, Some("A0401")), "{v}");
    // Both messages reach SEND_SUCCESS for both receivers under the answered ids.
    let tracking = dir.path().join("var/tracking");
    let query = format!(
        "SELECT count(*) FROM events WHERE state = 'SEND_SUCCESS' AND message_id IN ('{}', '{}')",
        ids[0], ids[1]
    );
    common::wait_until(LIMIT, "the sends tracked", || {
        tracking.join("events").is_dir()
            && common::first_row::<u64>(&common::sql_csv(&tracking, &query))[0] == 4
    });
    // The service's /metrics carries the job's send API until the job is deleted.
    let api_metrics = |serve: &Serve| {
        let (status, text) = serve.call(Method::GET, "/metrics", None);
        assert_eq!(status, 200, "{text}");
        text.as_str()
            .unwrap()
            .contains(r#"tidings_gateway_requests_total{job="sendapi",route="/send",code="0"} 3"#)
    };
    assert!(api_metrics(&serve));
    let (status, v) = serve.call(Method::DELETE, "/jobs/sendapi", None);
    assert_eq!(status, 200, "{v}");
    assert!(!api_metrics(&serve), "a deleted job's send API is gone");
}
