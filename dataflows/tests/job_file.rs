//! Configuration, secrets and answers (issue 12), through the `tidings` binary as an
//! operator meets them: secrets stay out of tracking, `${VAR}` expands inside strings,
//! reading verbs need no provider secret, missing or corrupt tracking is said, and a bad
//! job file gets every problem at once, each naming file and key.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::demo_copy;

/// Runs the binary with extra environment variables; never hangs past 120 s.
fn tidings_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let what = format!("tidings {args:?}");
    common::within(Duration::from_secs(120), &what, move || {
        child.wait_with_output().unwrap()
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An HTTP endpoint answering every request 500 with the request line echoed (as gateways
/// do); returns its base URL and the request lines it saw.
fn echo_500() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(first.trim().to_string());
            let echo = format!("no route for {}", first.trim());
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{echo}",
                echo.len()
            );
        }
    });
    (format!("http://{addr}"), seen)
}

const TEMPLATES: &str = r#"
[[template]]
id = 1
name = "robot"
channel = "fei_shu_robot"
msg_type = "notice"
id_type = "fei_shu_user_id"
account = "feishu"
[template.content]
content = "build {$b} done"

[[template]]
id = 2
name = "hook"
channel = "webhook"
msg_type = "notice"
id_type = "user_id"
account = "hook"
[template.content]
content = "build {$b} done"
"#;

const HOOK: &str = "3c9a7f21-feed-4bee-9d0c-secrethook77";
const PATH_TOKEN: &str = "T0123456/B0654321/webhookPathSecret";

/// A job with a Feishu robot and a webhook, both failing at `base`, their secrets in the
/// environment (one inside a longer string).
fn secret_job(dir: &Path, base: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("templates.toml"), TEMPLATES).unwrap();
    let line = |t: i64| {
        format!(
            r#"{{"code":"send","messageTemplateId":{t},"messageParam":{{"receiver":"u1","variables":{{"b":"42"}}}}}}"#
        )
    };
    std::fs::write(
        dir.join("requests.jsonl"),
        format!("{}\n{}\n", line(1), line(2)),
    )
    .unwrap();
    let job = format!(
        r#"name = "secrets"
templates = "templates.toml"
[source]
kind = "file"
path = "requests.jsonl"
[tracking]
dir = "var/tracking"
[accounts.feishu]
channel = "fei_shu_robot"
provider = "feishu_robot"
attempts = 1
settings = {{ hook = "${{T12_FEISHU_HOOK}}", secret = "${{T12_FEISHU_SECRET}}", endpoint = "{base}" }}
[accounts.hook]
channel = "webhook"
provider = "webhook"
attempts = 1
settings = {{ url = "{base}/services/${{T12_HOOK_PATH}}?k=1", secret = "${{T12_HOOK_SECRET}}" }}
"#
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

const SECRET_ENV: [(&str, &str); 4] = [
    ("T12_FEISHU_HOOK", HOOK),
    ("T12_FEISHU_SECRET", "feishuSignSecret"),
    ("T12_HOOK_PATH", PATH_TOKEN),
    ("T12_HOOK_SECRET", "hookSignSecret"),
];

#[test]
fn failed_sends_keep_secrets_out_of_tracking_and_reading_needs_none() {
    let (base, seen) = echo_500();
    let dir = tempfile::tempdir().unwrap();
    let job = secret_job(dir.path(), &base);
    let job = job.to_str().unwrap();
    let out = tidings_env(
        &["run", job, "--now", "2025-11-22T10:00:00+08:00"],
        &SECRET_ENV,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // `${T12_HOOK_PATH}` expanded inside the URL: the endpoint saw the real path.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("/services/{PATH_TOKEN}?k=1"))),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains(HOOK)), "{seen:?}");
    // Read back WITHOUT the secrets in the environment.
    let out = tidings_env(
        &[
            "sql",
            "--job",
            job,
            "--format",
            "csv",
            "SELECT reason FROM events WHERE state = 'SEND_FAIL' ORDER BY reason",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reasons = String::from_utf8(out.stdout).unwrap();
    assert_eq!(reasons.lines().count(), 3, "{reasons}");
    assert!(reasons.contains("HTTP 500"), "{reasons}");
    for secret in [
        HOOK,
        "T0123456",
        "B0654321",
        "webhookPathSecret",
        "feishuSignSecret",
        "hookSignSecret",
    ] {
        assert!(
            !reasons.contains(secret),
            "{secret} in tracking:\n{reasons}"
        );
    }
    assert!(reasons.contains("/open-apis/bot/v2/hook/***"), "{reasons}");
    // report and trace read the job without its secrets too.
    let out = tidings_env(&["report", "failure_reasons", "--job", job], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(
        report.contains("HTTP 500") && !report.contains(HOOK),
        "{report}"
    );
    let out = tidings_env(&["trace", "--job", job, "message", "m"], &[]);
    let err = stderr(&out);
    assert!(
        err.contains("tracking.redis is not set") && !err.contains("T12_"),
        "{err}"
    );
    // Running still needs them, and says which.
    let out = tidings_env(&["run", job], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("job.toml: accounts.feishu.settings.hook: environment variable T12_FEISHU_HOOK is not set"),
        "{err}"
    );
}

#[test]
fn an_unset_variable_inside_a_string_names_file_key_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let job = secret_job(dir.path(), "http://127.0.0.1:9");
    let env: Vec<_> = SECRET_ENV
        .into_iter()
        .filter(|(k, _)| *k != "T12_HOOK_PATH")
        .collect();
    let out = tidings_env(&["check", job.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "job.toml: accounts.hook.settings.url: environment variable T12_HOOK_PATH is not set"
        ),
        "{err}"
    );
}

#[test]
fn a_missing_tracking_directory_is_an_error_not_zero_rows() {
    let out = tidings_env(
        &[
            "sql",
            "--dir",
            "/nonexistent/tidings",
            "SELECT count(*) FROM events",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/tidings") && err.contains("no such tracking directory"),
        "{err}"
    );
    assert!(
        !Path::new("/nonexistent/tidings").exists(),
        "sql created it"
    );
    // A job that has not run yet: its tracking.dir is named the same way.
    let (_dir, job) = demo_copy();
    let out = tidings_env(
        &["report", "template_funnel", "--job", job.to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("var/tracking"), "{}", stderr(&out));
}

#[test]
fn a_corrupt_parquet_file_is_named_and_can_be_skipped() {
    let (dir, job) = demo_copy();
    let job = job.to_str().unwrap();
    common::tidings(&["run", job, "--now", "2025-11-22T10:00:00+08:00"]);
    let count = "SELECT count(*) AS n FROM events";
    let good = common::tidings(&["sql", "--job", job, "--format", "csv", count]);
    let partition = std::fs::read_dir(dir.path().join("var/tracking/events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bad = partition.join("zz-torn.parquet");
    std::fs::write(&bad, b"this is not parquet at all, just garbage bytes").unwrap();
    let out = tidings_env(&["sql", "--job", job, count], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("--skip-corrupt"),
        "{err}"
    );
    for verb in [
        vec![
            "sql",
            "--job",
            job,
            "--format",
            "csv",
            "--skip-corrupt",
            count,
        ],
        vec!["report", "template_funnel", "--job", job, "--skip-corrupt"],
    ] {
        let out = tidings_env(&verb, &[]);
        assert!(out.status.success(), "{verb:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("warning: skipped ") && err.contains(&bad.display().to_string()),
            "{err}"
        );
    }
    let skipped = common::tidings(&[
        "sql",
        "--job",
        job,
        "--format",
        "csv",
        "--skip-corrupt",
        count,
    ]);
    assert_eq!(skipped, good);
    assert!(bad.exists(), "the tracking directory is never written");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const SMS: &str = "[[template]]\nid = 1\nname = \"x\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"out\"\n";
/// Writes `t.toml` (one SMS template), an empty `r.jsonl` and `job.toml` with `body`.
fn small_job(dir: &Path, body: &str) -> PathBuf {
    write(dir, "t.toml", SMS);
    write(dir, "r.jsonl", "");
    write(dir, "job.toml", body)
}

const OUT: &str =
    "[accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n";

#[test]
fn every_structural_problem_at_once_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_job(
        dir.path(),
        &format!(
            "name = \"x\"\ntemplates = \"t.toml\"\nworkerz = 2\ntimezone = \"Mars/Base\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n[dedup]\ncontnet = {{ num = 1, time = 3 }}\n[tracking]\nflush_rows = \"many\"\n{OUT}[accounts.out.rate_limit]\nper_hour = 5\n"
        ),
    );
    let out = tidings_env(&["check", job.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 5, "{err}");
    for want in [
        "workerz",
        "contnet",
        "tracking: ",
        "per_hour",
        "timezone: unknown time zone",
    ] {
        assert!(err.contains(want), "{want} missing in:\n{err}");
    }
    assert!(
        err.lines()
            .all(|l| l.starts_with("error: ") && l.contains("job.toml: ")),
        "{err}"
    );
}

#[test]
fn a_file_where_a_directory_belongs_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.toml", SMS);
    write(dir.path(), "r.jsonl", "");
    write(dir.path(), "afile", "x");
    let job = write(
        dir.path(),
        "job.toml",
        &format!(
            "name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n[tracking]\ndir = \"afile/tracking\"\n{OUT}"
        ),
    );
    let out = tidings_env(&["run", job.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("job.toml: tracking.dir: ") && err.contains("afile is a file"),
        "{err}"
    );
    assert!(!err.contains("os error 20"), "{err}");
}

#[test]
fn a_byte_order_mark_is_accepted_in_the_job_and_templates() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.toml", &format!("\u{feff}{SMS}"));
    write(dir.path(), "r.jsonl", "");
    let job = write(
        dir.path(),
        "job.toml",
        &format!(
            "\u{feff}name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n{OUT}"
        ),
    );
    let out = tidings_env(&["check", job.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn workers_are_capped_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_job(
        dir.path(),
        &format!(
            "name = \"x\"\ntemplates = \"t.toml\"\nworkers = 3000\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n{OUT}"
        ),
    );
    let out = tidings_env(&["run", job.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("job.toml: workers: 3000 is more than 256"),
        "{err}"
    );
    let job = write(
        dir.path(),
        "job2.toml",
        &format!(
            "name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n{OUT}"
        ),
    );
    let out = tidings_env(&["run", job.to_str().unwrap(), "-w", "5000"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("-w 5000: use 1 to 256"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let (_dir, job) = demo_copy();
    let job = job.to_str().unwrap();
    common::tidings(&["run", job, "--now", "2025-11-22T10:00:00+08:00"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["sql", "--job", job, "SELECT * FROM events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -0`: the reader is gone before the first row is written.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    common::wait_within(&mut child, Duration::from_secs(60), "tidings sql");
    assert!(!err.contains("panicked"), "{err}");
}

/// Log lines are plain text for a person by default and JSON objects with `--log-format json`
/// (here: the second run of a file job says where it resumes).
#[test]
fn log_lines_are_text_or_json() {
    let (_dir, job) = demo_copy();
    let job = job.to_str().unwrap();
    let first = tidings_env(
        &["run", job, "-w", "1", "--now", "2025-11-22T12:00:00+08:00"],
        &[],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let text = tidings_env(
        &["run", job, "-w", "1", "--now", "2025-11-22T12:00:00+08:00"],
        &[],
    );
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(
        stderr(&text)
            .lines()
            .any(|l| l.starts_with("file source ") && l.contains("resuming at line")),
        "{}",
        stderr(&text)
    );
    let json = tidings_env(
        &[
            "--log-format",
            "json",
            "run",
            job,
            "-w",
            "1",
            "--now",
            "2025-11-22T12:00:00+08:00",
        ],
        &[],
    );
    assert!(json.status.success(), "{}", stderr(&json));
    let lines: Vec<serde_json::Value> = stderr(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["level"] == "INFO"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("resuming at line"))),
        "{lines:?}"
    );
}

/// A directory's files are its partitions in name order: a file added before the one a
/// checkpoint read would renumber it, and its lines would be read again under new message ids
/// and sent twice. The next run is refused with one line naming the file and the fix; nothing
/// more is sent. Added after it, a file is read and the first file resumes where it was.
#[test]
fn a_file_added_before_a_read_one_is_refused_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let job = common::directory_job(dir.path());
    let parts = dir.path().join("requests");
    std::fs::create_dir_all(&parts).unwrap();
    let t = 1_763_949_600_000; // 2025-11-24 10:00 +08:00
    let line = |i: i64| common::envelope(t + i * 1000, 1, &format!("1380013{i:04}"), "x") + "\n";
    std::fs::write(parts.join("m.jsonl"), line(1) + &line(2)).unwrap();
    let job = job.to_str().unwrap();
    let run = || tidings_env(&["run", job, "--now", "2025-11-25T12:00:00+08:00"], &[]);
    let sent = || common::count_lines(&dir.path().join("var/outbox/sms.jsonl"));
    assert!(run().status.success());
    assert_eq!(sent(), 2);

    std::fs::write(parts.join("a.jsonl"), line(3)).unwrap();
    let out = run();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("m.jsonl was partition 0 at the last checkpoint and is partition 1 now")
            && err.contains("--from-start"),
        "{err}"
    );
    assert_eq!(sent(), 2, "nothing was sent again");

    std::fs::rename(parts.join("a.jsonl"), parts.join("z.jsonl")).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(parts.join("m.jsonl"))
        .unwrap()
        .write_all(line(4).as_bytes())
        .unwrap();
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sent(), 4, "m.jsonl's new line and z.jsonl's, once each");
}

/// Keys and flags that would be ignored, or numbers that would overflow, are refused with one
/// line each naming the key or flag (exit 2), before anything runs; the final error is a JSON
/// line under `--log-format json` as every other line is.
#[test]
fn ignored_keys_and_flags_and_overflowing_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = small_job(
        dir.path(),
        &format!(
            "name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\ntopic = \"orders\"\n\
             [dedup]\nlateness = 10000000000000000\ncontent = {{ num = 1, time = 10000000000000000 }}\n\
             [tracking]\nretain_days = 100000000\ncompact_every_secs = 7000000000000000000\n{OUT}"
        ),
    );
    let job = job.to_str().unwrap();
    let out = tidings_env(&["check", job], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in [
        "source.topic: only a Kafka source reads it",
        "dedup.lateness: ",
        "dedup.content.time: ",
        "tracking.retain_days: ",
        "tracking.compact_every_secs: ",
    ] {
        assert!(err.contains(&format!("job.toml: {key}")), "{key}:\n{err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");

    // Values that would be ignored, or that break what they configure.
    let limits = write(
        dir.path(),
        "limits.toml",
        &format!(
            "name = \"l\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n\
             [shield]\nnight = \"08:00-08:00\"\n\
             [tracking]\nretain_days = 7\ncompact_every_secs = 0\nflush_interval_ms = 0\nredis_user_ttl_secs = 0\n\
             [accounts.\"../x\"]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/x\"\n\
             [accounts.hole]\nchannel = \"sms\"\nprovider = \"blackhole\"\ndir = \"var/x\"\n\
             attempts = 1000\ntimeout_secs = 0.01\nmax_queued = 10\n{OUT}"
        ),
    );
    let out = tidings_env(&["check", limits.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in [
        "shield.night: `08:00-08:00` is an empty window",
        "tracking.retain_days: is applied by the compaction passes",
        "tracking.flush_interval_ms: ",
        "tracking.redis_user_ttl_secs: ",
        "accounts.\"../x\": name it with",
        "accounts.hole.dir: only the outbox provider",
        "accounts.hole.attempts: must be from 1 to 100",
        "accounts.hole.timeout_secs: must be from 0.05",
        "accounts.hole.max_queued: only an account queued in Kafka",
    ] {
        assert!(
            err.contains(&format!("limits.toml: {key}")),
            "{key}:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 9, "{err}");

    let kafka = write(
        dir.path(),
        "kafka.toml",
        &format!(
            "name = \"k\"\ntemplates = \"t.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\npath = \"r.jsonl\"\nepoch_lines = 10\n{OUT}"
        ),
    );
    let out = tidings_env(&["check", kafka.to_str().unwrap()], &[]);
    for key in [
        "kafka.toml: source.path: only a file source reads a path",
        "kafka.toml: source.epoch_lines: only a file source",
    ] {
        assert!(stderr(&out).contains(key), "{key}: {}", stderr(&out));
    }
    let fine = write(
        dir.path(),
        "fine.toml",
        &format!(
            "name = \"f\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n{OUT}"
        ),
    );
    let fine = fine.to_str().unwrap();
    for (args, want) in [
        (
            vec!["run", fine, "--idle-exit", "5"],
            "--idle-exit 5: only a Kafka source",
        ),
        (
            vec!["run", fine, "--drain-timeout", "0"],
            "--drain-timeout 0",
        ),
        // Before a local cluster starts (its processes would each refuse it).
        (
            vec!["run", fine, "--local", "2", "--drain-timeout", "0"],
            "--drain-timeout 0",
        ),
        (
            vec!["top", "--job", fine, "--interval", "inf"],
            "--interval inf",
        ),
        (
            vec![
                "sql",
                "--dir",
                "s3://bucket/t",
                "--skip-corrupt",
                "SELECT 1",
            ],
            "--skip-corrupt: s3://bucket/t is on an object store",
        ),
        (
            vec!["send", "--job", fine, "-f", "r.jsonl", "--var", "a=1"],
            "--var",
        ),
        (vec!["send", "--job", fine, "--template", "1"], "--to"),
        (
            vec![
                "state",
                "--job",
                fine,
                "frequency",
                "--receiver",
                "a",
                "--channel",
                "sms",
                "--template",
                "1",
            ],
            "'--channel <CHANNEL>' cannot be used with '--template <TEMPLATE>'",
        ),
    ] {
        let out = tidings_env(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    let json = tidings_env(
        &["--log-format", "json", "run", fine, "--idle-exit", "nan"],
        &[],
    );
    assert_eq!(json.status.code(), Some(2));
    let line: serde_json::Value = serde_json::from_str(stderr(&json).trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {}", stderr(&json)));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--idle-exit")),
        "{line}"
    );
}

#[test]
fn a_campaigns_problems_name_the_template_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let t = |id: i64, kind: &str, extra: &str| {
        format!(
            "[[template]]\nid = {id}\nname = \"c{id}\"\nchannel = \"sms\"\nmsg_type = \"marketing\"\nid_type = \"phone\"\naccount = \"out\"\ntemplate_type = \"{kind}\"\n{extra}"
        )
    };
    write(dir.path(), "crowd.csv", "userId,name\n13800138000,Li\n");
    write(dir.path(), "phones.csv", "phone,name\n13800138000,Li\n");
    let templates = [
        t(1, "cron", "cron = \"0 0 10 * * ?\"\n"),
        t(2, "cron", "crowd = \"crowd.csv\"\n"),
        t(
            3,
            "realtime",
            "cron = \"0 0 10 * * ?\"\ncrowd = \"crowd.csv\"\n",
        ),
        t(
            4,
            "cron",
            "cron = \"0 0 25 * * ?\"\ncrowd = \"crowd.csv\"\n",
        ),
        t(
            5,
            "cron",
            "cron = \"0 0 10 * * ?\"\ncrowd = \"phones.csv\"\n",
        ),
        t(
            6,
            "cron",
            "cron = \"0 0 10 * * ?\"\ncrowd = \"crowd.csv\"\n",
        ),
        t(
            7,
            "cron",
            "cron = \"0 0 0 31 2 ?\"\ncrowd = \"crowd.csv\"\n",
        ),
        // A one-off campaign of a year gone by: kept (it fires nothing), not a load error (a
        // job stopped loading once its date passed).
        t(
            8,
            "cron",
            "cron = \"0 0 12 11 11 ? 2020\"\ncrowd = \"crowd.csv\"\n",
        ),
    ];
    write(dir.path(), "t.toml", &templates.join("\n"));
    // A job over t.toml reading `source`.
    let job_of = |name: &str, source: &str| {
        write(
            dir.path(),
            name,
            &format!("name = \"x\"\ntemplates = \"t.toml\"\n[source]\n{source}\n{OUT}"),
        )
    };
    let kafka = job_of(
        "kafka.toml",
        "kind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\ngroup = \"g\"",
    );
    let problems = tidings_dataflows::Job::load(&kafka).unwrap_err().problems;
    let want = [
        "template 1: cron without crowd; add crowd = ",
        "template 2: crowd without cron; add cron = ",
        "template 3: cron is for template_type = \"cron\"; set it",
        "template 4: cron: hour `25`: `25` is outside 0-23",
        "template 5: crowd: ",
        "template 7: cron: `0 0 0 31 2 ?` names no time in the next five years",
    ];
    assert_eq!(problems.len(), want.len(), "{problems:#?}");
    for (p, w) in problems.iter().zip(want) {
        assert!(p.contains("t.toml: ") && p.contains(w), "{p}");
    }
    assert!(problems[4].contains("name the receivers' column userId"));

    // The same campaign in a job that reads a file has nowhere to send its crowd.
    write(dir.path(), "t.toml", &templates[5]);
    write(dir.path(), "r.jsonl", "");
    let file = job_of("file.toml", "kind = \"file\"\npath = \"r.jsonl\"");
    let problems = tidings_dataflows::Job::load(&file).unwrap_err().problems;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("template 6: cron: a campaign is sent to the job's Kafka topic"),
        "{problems:?}"
    );
    let job = tidings_dataflows::Job::load(&kafka).unwrap();
    assert_eq!(job.campaigns.len(), 1);
    assert_eq!(job.campaigns[0].crowd, dir.path().join("crowd.csv"));
    write(dir.path(), "t.toml", &templates[7]);
    let job = tidings_dataflows::Job::load(&kafka).unwrap();
    assert_eq!(job.campaigns[0].template_id, 8);
}
