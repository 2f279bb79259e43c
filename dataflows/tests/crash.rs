//! Crash test: 200,000 requests through Kafka, the job SIGKILLed three times mid-run and
//! restarted each time. Offsets are committed only with checkpoints behind the done frontier,
//! so nothing is lost: every request's receiver reaches SEND_SUCCESS. Half the requests go to
//! an account queued in its own topic, so hand-offs and the account-topic reader are killed
//! too. Replays after a kill are counted as
//! duplicate SEND_SUCCESS rows per (message_id, receiver) and printed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidings_dataflows::kafka::{Outgoing, produce};

const REQUESTS: usize = 200_000;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn start(job: &Path) -> Child {
    // Each run's stderr is kept beside the job, printed if the test fails.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(job.with_file_name("runs.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap(), "--idle-exit", "10"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn outbox_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn sigkill_three_times_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let queued = common::sms_template(2, "none", false, "user_id")
        .replace("account = \"out\"", "account = \"queued\"");
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", false, "user_id") + &queued,
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"crash\"\ntemplates = \"templates.toml\"\nworkers = 2\n\
             [source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"crash-{unique}\"\ngroup = \"crash-{unique}\"\n\
             [tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 200\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
             [accounts.queued]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\nqueue = \"kafka\"\nmax_queued = 5000\n",
            brokers()
        ),
    )
    .unwrap();
    let t0 = 1_763_784_000_000i64;
    let records = (0..REQUESTS).map(|i| {
        let payload = serde_json::json!({"code": "send", "messageTemplateId": 1 + i % 2,
            "messageParam": {"receiver": format!("u{i}"), "variables": {"v": i}}});
        Outgoing {
            key: Some(format!("k{}", i % 16)),
            payload: payload.to_string(),
            timestamp: Some(t0 + i as i64),
        }
    });
    assert_eq!(
        produce(&brokers(), &format!("crash-{unique}"), records, || {}).unwrap() as usize,
        REQUESTS
    );

    let outbox = dir.path().join("var/outbox/sms.jsonl");
    let mut kills = 0;
    for step in 1..=3 {
        let mut child = start(&job);
        // Kill once this run has sent some more (or give up waiting after two minutes).
        let target = outbox_lines(&outbox) + 15_000 * step;
        let deadline = Instant::now() + Duration::from_secs(120);
        while outbox_lines(&outbox) < target && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        common::wait_within(&mut child, Duration::from_secs(120), "a killed run");
    }
    assert_eq!(
        kills, 3,
        "the job finished before it could be killed three times"
    );
    let status = common::wait_within(&mut start(&job), Duration::from_secs(300), "the final run");
    assert!(status.success());

    let result = common::sql_csv(
        &dir.path().join("var/tracking"),
        "SELECT count(DISTINCT receiver) AS sent, count(*) AS rows, \
           count(*) - count(DISTINCT concat(message_id, '/', receiver)) AS duplicates \
         FROM events WHERE state = 'SEND_SUCCESS'",
    );
    let nums: Vec<usize> = common::first_row(&result);
    eprintln!(
        "crash test: {} receivers sent, {} SEND_SUCCESS rows, {} duplicates after {kills} SIGKILLs",
        nums[0], nums[1], nums[2]
    );
    let log = std::fs::read_to_string(job.with_file_name("runs.log")).unwrap_or_default();
    let per_template = common::sql_csv(
        &dir.path().join("var/tracking"),
        "SELECT template_id, count(DISTINCT receiver) FROM events WHERE state = 'SEND_SUCCESS' GROUP BY template_id ORDER BY template_id",
    );
    assert_eq!(
        nums[0],
        REQUESTS,
        "lost: {}; sent per template: {per_template}; the runs said:\n{log}",
        REQUESTS - nums[0]
    );
}
