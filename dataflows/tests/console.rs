//! The web console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven by selenium from PyPI: `scripts/console_check.py`) against a real
//! `tidings serve` signs in, submits a job, traces a receiver, runs SQL, previews a template
//! and opens the job; then submits a Kafka job, edits its template while it runs (the preview
//! renders the new version), test-sends, traces the receiver live from Redis and opens the
//! job's rate and lag charts; the read-only token cannot submit. Screenshots of each page go to
//! `target/console/`; an error in the page's console fails the test.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_console_signs_in_submits_traces_and_queries_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, job) = common::demo_copy();
    // A Kafka job too, whose template is edited in the console while it runs.
    let unique = common::unique();
    let kafka_dir = dir.path().join("kafka-job");
    std::fs::create_dir_all(&kafka_dir).unwrap();
    std::fs::write(
        kafka_dir.join("templates.toml"),
        common::sms_template(1, "none", false, "phone"),
    )
    .unwrap();
    let kafka_job = kafka_dir.join("job.toml");
    std::fs::write(
        &kafka_job,
        format!(
            "name = \"live\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             topic = \"console-{unique}\"\ngroup = \"console-{unique}\"\n[tracking]\ndir = \"var/tracking\"\n\
             redis = \"{}\"\nredis_prefix = \"console-{unique}:\"\n\
             [admin]\nbind = \"127.0.0.1:0\"\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n",
            std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into()),
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".into()),
        ),
    )
    .unwrap();
    let state = dir.path().join("serve");
    std::fs::create_dir_all(&state).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--bind", "127.0.0.1:0", "--token", "op-token"])
        .args(["--read-token", "support-token", "--state-dir"])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let addr = state.join("serve.addr");
    common::wait_until(Duration::from_secs(60), "serve's address", || {
        std::fs::read_to_string(&addr).is_ok_and(|a| !a.trim().is_empty())
    });
    let url = format!("http://{}", std::fs::read_to_string(&addr).unwrap().trim());
    let python = std::env::var("TIDINGS_PYTHON").expect(
        "TIDINGS_PYTHON is not set: run the tests as README.md says (scripts/services.sh start)",
    );
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("console");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/console_check.py");
    let out = Command::new(python)
        .arg(script)
        .args([&url, "op-token", "support-token"])
        .arg(&job)
        .arg("user4@example.com")
        .arg(&shots)
        .arg(&kafka_job)
        .output()
        .unwrap();
    // An account of the running Kafka job changed from the CLI (a rate limit added: it stays
    // memory-queued), then listed with its version.
    let account = if out.status.success() {
        let table = kafka_dir.join("account.toml");
        std::fs::write(
            &table,
            "[accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox2\"\nrate_limit = { per_second = 100 }\n",
        )
        .unwrap();
        // Not asserted here: a failure must not leave serve running.
        let cli = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
                .arg("template")
                .args(args)
                .args(["--job", "live", "--server", &url, "--token", "op-token"])
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        // The template discarded from the CLI: the preview says so (it read the job file's
        // lists, not the live ones).
        let discarded = cli(&["lists", "--discard", "1"]);
        let preview = reqwest::blocking::Client::new()
            .post(format!("{url}/jobs/live/preview"))
            .bearer_auth("op-token")
            .json(&serde_json::json!({"template": 1, "variables": {"v": "x"}}))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .map(|v| v["rules"]["discarded"].clone());
        Some((
            cli(&["account", "out", table.to_str().unwrap()]),
            cli(&["accounts"]),
            refusals(&url),
            (discarded, preview.ok()),
        ))
    } else {
        None
    };
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    common::wait_within(&mut serve, Duration::from_secs(60), "serve after SIGTERM");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console check failed:\n{stdout}\n{}\nserve log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );
    let (changed, listed, refused, (discarded, preview)) = account.unwrap();
    assert_eq!(preview, Some(serde_json::json!(true)), "{discarded}");
    assert_eq!(
        refused,
        [
            (403, true),
            (403, true),
            (403, true),
            (403, true),
            (200, true)
        ],
        "read-only test send, read-only stop of a job named `reports`, a cross-site stop, a \
         cross-site template change, a pass-through by a percent-encoded name"
    );
    assert!(changed.contains("\"version\": 1"), "{changed}");
    assert!(
        listed.contains("var/outbox2") && listed.contains("\"version\": 1"),
        "{listed}"
    );
    for page in [
        "login",
        "jobs",
        "trace",
        "sql",
        "reports",
        "templates",
        "job",
        "template-edit",
        "live-trace",
        "live-job",
        "read-only",
    ] {
        let png = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} missing or empty", png.display());
    }
}

/// What the service answers (status, and whether the body says why) to requests it must
/// refuse or pass on: not asserted here, so a failure cannot leave serve running.
fn refusals(url: &str) -> Vec<(u16, bool)> {
    let client = reqwest::blocking::Client::new();
    let answer = |request: reqwest::blocking::RequestBuilder| match request.send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(_) => (0, String::new()),
    };
    let ask = |request, why: &str| {
        let (status, body) = answer(request);
        (status, body.contains(why))
    };
    let send = r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"13800138000","variables":{"v":"x"}}}"#;
    vec![
        ask(
            client
                .post(format!("{url}/jobs/live/send"))
                .bearer_auth("support-token")
                .header("Content-Type", "application/json")
                .body(send),
            "read-only",
        ),
        ask(
            client
                .post(format!("{url}/jobs/reports/stop"))
                .bearer_auth("support-token"),
            "read-only",
        ),
        ask(
            client
                .post(format!("{url}/jobs/live/stop"))
                .bearer_auth("op-token")
                .header("Origin", "http://evil.example"),
            "another site",
        ),
        ask(
            client
                .post(format!("{url}/jobs/live/templates/1/disable"))
                .bearer_auth("op-token")
                .header("Sec-Fetch-Site", "cross-site"),
            "another site",
        ),
        // The name percent-encoded (`l%69ve` is `live`): the path after it is what the job's
        // own API is asked (`/state/source`, its `kind` at the top, not the whole `/state`).
        {
            let (status, body) = answer(
                client
                    .get(format!("{url}/jobs/l%69ve/state/source"))
                    .bearer_auth("support-token"),
            );
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (
                status,
                v["kind"] == "kafka" && v.get("uptime_secs").is_none(),
            )
        },
    ]
}
