//! Templates changed while a job runs (docs/templates.md "Live changes"): a change record in
//! the send stream takes effect at its event time — records before it render the old version
//! and records at or after it the new one — whatever the worker count, process count or read
//! order, and identically after a restart from a checkpoint.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use tidings_model::State;

/// 2025-11-24 10:00 +08:00 (daytime: no night rule applies).
const T: i64 = 1_763_949_600_000;
const NOW: &str = "2025-11-25T12:00:00+08:00";

fn send(ts: i64, receiver: &str, v: &str) -> String {
    common::envelope(ts, 1, receiver, v)
}

fn change(ts: i64, body: serde_json::Value) -> String {
    serde_json::json!({"ts": ts, "payload": body.to_string()}).to_string()
}

fn put(ts: i64, content: &str) -> String {
    change(
        ts,
        serde_json::json!({"code": "template", "template": {"id": 1, "name": "t1",
            "channel": "sms", "msg_type": "notice", "id_type": "phone", "account": "out",
            "dedup": false, "content": {"content": content}}}),
    )
}

/// The second partition of both scenarios: records read out of event-time order, one exactly
/// at the first change's event time.
fn second_partition() -> Vec<String> {
    vec![
        send(T + 6_000, "13800138004", "d"),
        send(T + 4_000, "13800138002", "b"),
        send(T + 5_000, "13800138005", "e"),
        send(T + 12_000, "13800138006", "f"),
        send(T + 21_000, "13800138007", "g"),
    ]
}

/// Two partitions; the change is in the first, the records it applies to in both, some read
/// before it, one exactly at its event time, one after it in the file but earlier in time.
fn partitions() -> [Vec<String>; 2] {
    [
        vec![
            send(T, "13800138001", "a"),
            put(T + 5_000, "bye {$v}"),
            send(T + 10_000, "13800138003", "c"),
            // Refused: no such account. A dead letter, the book unchanged.
            change(
                T + 11_000,
                serde_json::json!({"code": "template", "template": {"id": 1, "name": "x",
                    "channel": "sms", "msg_type": "notice", "id_type": "phone",
                    "account": "nope", "content": {"content": "x"}}}),
            ),
            change(
                T + 20_000,
                serde_json::json!({"code": "template", "disable": 1}),
            ),
        ],
        second_partition(),
    ]
}

/// A job over `requests/p0.jsonl` and `p1.jsonl` holding `lines`.
fn job_with(dir: &Path, lines: &[Vec<String>]) -> std::path::PathBuf {
    let job = common::directory_job(dir);
    common::set_source(&job, "max_out_of_order_ms = 60000");
    write_parts(dir, lines);
    job
}

fn write_parts(dir: &Path, lines: &[Vec<String>]) {
    let parts = dir.join("requests");
    std::fs::create_dir_all(&parts).unwrap();
    for (i, p) in lines.iter().enumerate() {
        let text: String = p.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(parts.join(format!("p{i}.jsonl")), text).unwrap();
    }
}

/// Runs the job on a 2-process `--local` cluster of one worker each.
fn run_on_two_processes(job: &Path) {
    common::tidings(&[
        "run",
        job.to_str().unwrap(),
        "--local",
        "2",
        "-w",
        "1",
        "--now",
        NOW,
    ]);
}

/// Receiver → rendered content, from the outbox.
fn sent(dir: &Path) -> BTreeMap<String, String> {
    let path = dir.join("var/outbox/sms.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["receiver"].as_str().unwrap().to_string(),
                v["content"]["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expected() -> BTreeMap<String, String> {
    [
        ("13800138001", "hi a"),
        ("13800138002", "hi b"),
        ("13800138003", "bye c"),
        ("13800138004", "bye d"),
        ("13800138005", "bye e"),
        ("13800138006", "bye f"),
    ]
    .into_iter()
    .map(|(r, c)| (r.to_string(), c.to_string()))
    .collect()
}

/// (receiver, state, template version) of every row, and the dead letters' reasons.
fn rows_of(dir: &Path) -> (Vec<(String, String, i32)>, Vec<String>) {
    let csv = common::sql_csv(
        &dir.join("var/tracking"),
        "SELECT receiver, state, template_version FROM events ORDER BY receiver, state",
    );
    let rows = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect();
    let dead = common::sql_csv(
        &dir.join("var/tracking"),
        "SELECT reason FROM dead_letters ORDER BY reason",
    );
    (rows, dead.lines().skip(1).map(str::to_string).collect())
}

#[test]
fn a_change_applies_from_its_event_time_on_any_worker_count() {
    let mut runs = Vec::new();
    for workers in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let job = job_with(dir.path(), &partitions());
        let (events, dead, _) = common::run_memory(&job, workers, T + 86_400_000);
        assert_eq!(sent(dir.path()), expected(), "{workers} workers");
        let mut versions: Vec<(String, u32)> = events
            .iter()
            .filter(|r| r.state == State::SendSuccess)
            .map(|r| (r.receiver.to_string(), r.meta.template_version()))
            .collect();
        versions.sort();
        assert_eq!(
            versions,
            vec![
                ("13800138001".to_string(), 0),
                ("13800138002".to_string(), 0),
                ("13800138003".to_string(), 1),
                ("13800138004".to_string(), 1),
                ("13800138005".to_string(), 1),
                ("13800138006".to_string(), 1),
            ]
        );
        let mut reasons: Vec<String> = dead.iter().map(|d| d.reason.clone()).collect();
        reasons.sort();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].starts_with("template 1 is disabled (version 2"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("account `nope` is not in the job"),
            "{reasons:?}"
        );
        runs.push((sent(dir.path()), versions, reasons));
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn a_restart_from_the_checkpoint_keeps_the_change_and_a_cluster_agrees() {
    // One run over everything, on a 2-process cluster (changes and deliveries cross processes).
    let whole = tempfile::tempdir().unwrap();
    let job = job_with(whole.path(), &partitions());
    run_on_two_processes(&job);
    assert_eq!(sent(whole.path()), expected());
    let (rows, dead) = rows_of(whole.path());

    // The same lines over two runs: the first ends after the change, the second appends the
    // rest and resumes from the first's checkpoint (which holds the change, not its record).
    let split = tempfile::tempdir().unwrap();
    let [p0, p1] = partitions();
    let first = [p0[..2].to_vec(), p1[..2].to_vec()];
    let job = job_with(split.path(), &first);
    common::tidings(&["run", job.to_str().unwrap(), "--now", NOW]);
    write_parts(split.path(), &[p0.clone(), p1.clone()]);
    common::tidings(&["run", job.to_str().unwrap(), "--now", NOW]);
    assert_eq!(sent(split.path()), expected());
    assert_eq!(rows_of(split.path()), (rows.clone(), dead));
    assert!(
        rows.contains(&("13800138005".into(), "SEND_SUCCESS".into(), 1)),
        "{rows:?}"
    );
}

/// The discard list and whitelist change the same way: from the change's event time on, on
/// any worker count, and after a restart from the checkpoint.
#[test]
fn list_changes_apply_from_their_event_time_and_survive_a_restart() {
    let lists = |ts: i64, body: serde_json::Value| {
        let mut b = body;
        b["code"] = "lists".into();
        change(ts, b)
    };
    let first = vec![
        send(T, "13800138002", "a"),
        lists(T + 5_000, serde_json::json!({"whitelist": ["13800138001"]})),
        send(T + 6_000, "13800138002", "b"),
    ];
    let rest = vec![
        send(T + 7_000, "13800138001", "c"),
        // Refused only by the whitelist of the first run's checkpoint, after a restart.
        send(T + 7_500, "13800138002", "e"),
        lists(T + 8_000, serde_json::json!({"discard": [1]})),
        lists(T + 8_500, serde_json::json!({"discard": [99]})),
        send(T + 9_000, "13800138001", "d"),
    ];
    let all: Vec<String> = first.iter().chain(&rest).cloned().collect();
    // (receiver, variable, terminal state) of every message.
    let outcome = |events: &[tidings_model::EventRow]| {
        let mut v: Vec<(String, String, String)> = events
            .iter()
            .filter(|r| r.state != State::Receive)
            .map(|r| {
                (
                    r.receiver.to_string(),
                    r.meta.content.clone(),
                    r.state.name().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut seen = Vec::new();
    for workers in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let job = job_with(dir.path(), std::slice::from_ref(&all));
        let (events, dead, _) = common::run_memory(&job, workers, T + 86_400_000);
        let reasons: Vec<String> = dead.iter().map(|d| d.reason.clone()).collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("template 99 does not exist"),
            "{reasons:?}"
        );
        seen.push(outcome(&events));
    }
    assert_eq!(seen[0], seen[1]);
    let refused: Vec<(String, String, String)> = seen[0]
        .iter()
        .filter(|(_, _, s)| s != "SEND_SUCCESS")
        .map(|(r, c, s)| {
            let c: serde_json::Value = serde_json::from_str(c).unwrap();
            (
                r.clone(),
                c["content"].as_str().unwrap().to_string(),
                s.clone(),
            )
        })
        .collect();
    let row = |r: &str, c: &str, s: &str| (r.to_string(), c.to_string(), s.to_string());
    assert_eq!(
        refused,
        vec![
            row("13800138001", "hi d", "DISCARD"),
            row("13800138002", "hi b", "WHITE_LIST"),
            row("13800138002", "hi e", "WHITE_LIST"),
        ]
    );

    // Split over a restart: the second run judges with the lists of the first's checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let job = job_with(dir.path(), &[first]);
    common::tidings(&["run", job.to_str().unwrap(), "--now", NOW]);
    write_parts(dir.path(), &[all]);
    common::tidings(&["run", job.to_str().unwrap(), "--now", NOW]);
    let (rows, _) = rows_of(dir.path());
    let terminal: Vec<(String, String)> = rows
        .into_iter()
        .filter(|(_, s, _)| s != "RECEIVE")
        .map(|(r, s, _)| (r, s))
        .collect();
    assert_eq!(
        terminal,
        vec![
            ("13800138001".to_string(), "DISCARD".to_string()),
            ("13800138001".to_string(), "SEND_SUCCESS".to_string()),
            ("13800138002".to_string(), "SEND_SUCCESS".to_string()),
            ("13800138002".to_string(), "WHITE_LIST".to_string()),
            ("13800138002".to_string(), "WHITE_LIST".to_string()),
        ]
    );
}

/// An account change: `out` writes to `var/outbox2` and refuses one receiver from T+5 s, and
/// is back to `var/outbox` (rate-limited) from T+20 s; a secret in clear and an unknown
/// account are refused as dead letters.
fn account_partitions() -> [Vec<String>; 2] {
    let account = |ts: i64, name: &str, table: serde_json::Value| {
        change(
            ts,
            serde_json::json!({"code": "account", "name": name, "account": table}),
        )
    };
    [
        vec![
            send(T, "13800138001", "a"),
            account(
                T + 5_000,
                "out",
                serde_json::json!({"channel": "sms", "provider": "outbox",
                    "dir": "var/outbox2", "reject_receivers": ["13800138005"]}),
            ),
            send(T + 10_000, "13800138003", "c"),
            account(
                T + 11_000,
                "out",
                serde_json::json!({"channel": "sms", "provider": "tencent_sms",
                    "settings": {"secret_id": "AKIDclear0123456", "secret_key": "${SMS_KEY}"}}),
            ),
            account(
                T + 11_500,
                "nope",
                serde_json::json!({"channel": "sms", "provider": "outbox", "dir": "x"}),
            ),
            account(
                T + 20_000,
                "out",
                serde_json::json!({"channel": "sms", "provider": "outbox",
                    "dir": "var/outbox", "rate_limit": {"per_second": 1000}}),
            ),
        ],
        second_partition(),
    ]
}

/// Receivers in each outbox, and (receiver, state) of every terminal row, and the dead
/// letters' reasons.
type AccountRun = (Vec<String>, Vec<String>, Vec<(String, String)>, Vec<String>);

fn account_run(dir: &Path) -> AccountRun {
    let receivers = |sub: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(sub).join("sms.jsonl")).unwrap_or_default();
        let mut r: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["receiver"].as_str().unwrap().to_string()
            })
            .collect();
        r.sort();
        r
    };
    let (rows, dead) = rows_of(dir);
    let terminal = rows
        .into_iter()
        .filter(|(_, s, _)| s != "RECEIVE")
        .map(|(r, s, _)| (r, s))
        .collect();
    (
        receivers("var/outbox"),
        receivers("var/outbox2"),
        terminal,
        dead,
    )
}

fn account_expected() -> AccountRun {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let terminal = [
        ("13800138001", "SEND_SUCCESS"),
        ("13800138002", "SEND_SUCCESS"),
        ("13800138003", "SEND_SUCCESS"),
        ("13800138004", "SEND_SUCCESS"),
        ("13800138005", "SEND_FAIL"),
        ("13800138006", "SEND_SUCCESS"),
        ("13800138007", "SEND_SUCCESS"),
    ]
    .iter()
    .map(|(r, s)| (r.to_string(), s.to_string()))
    .collect();
    (
        s(&["13800138001", "13800138002", "13800138007"]),
        s(&["13800138003", "13800138004", "13800138006"]),
        terminal,
        Vec::new(),
    )
}

/// Checks a run against [`account_expected`]; the dead letters by what they say.
fn check_account_run(run: &AccountRun, what: &str) {
    let expected = account_expected();
    assert_eq!(
        (&run.0, &run.1, &run.2),
        (&expected.0, &expected.1, &expected.2),
        "{what}"
    );
    assert_eq!(run.3.len(), 2, "{what}: {:?}", run.3);
    assert!(
        run.3[0].contains("account `nope`: not an account of the job"),
        "{what}: {:?}",
        run.3
    );
    assert!(
        run.3[1].contains("settings.secret_id holds a secret in clear"),
        "{what}: {:?}",
        run.3
    );
}

/// Account settings change the same way as templates: a message is sent with the account's
/// version at its event time — on 1 or 3 workers, a 2-process cluster, and over a restart.
#[test]
fn account_changes_apply_from_their_event_time_everywhere() {
    for workers in ["1", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let job = job_with(dir.path(), &account_partitions());
        common::tidings(&["run", job.to_str().unwrap(), "-w", workers, "--now", NOW]);
        let run = account_run(dir.path());
        check_account_run(&run, &format!("{workers} workers"));
        // The refused change's dead letter does not keep the secret written in clear.
        let payloads = common::sql_csv(
            &dir.path().join("var/tracking"),
            "SELECT payload FROM dead_letters",
        );
        assert!(
            payloads.contains("tencent_sms") && !payloads.contains("AKIDclear"),
            "{payloads}"
        );
        let failed = common::sql_csv(
            &dir.path().join("var/tracking"),
            "SELECT reason FROM events WHERE state = 'SEND_FAIL'",
        );
        assert!(
            failed.contains("out: receiver refused by the provider"),
            "{failed}"
        );
    }

    let whole = tempfile::tempdir().unwrap();
    let job = job_with(whole.path(), &account_partitions());
    run_on_two_processes(&job);
    check_account_run(&account_run(whole.path()), "2 processes");

    // The first run ends after the first change; the second resumes from its checkpoint,
    // whose book holds the change (its line is not read again: that would send its
    // partition's first messages twice; and a line overwritten makes another file, read from
    // its start).
    let split = tempfile::tempdir().unwrap();
    let [p0, p1] = account_partitions();
    let job = job_with(split.path(), &[p0[..2].to_vec(), p1[..2].to_vec()]);
    common::tidings(&["run", job.to_str().unwrap(), "--now", NOW]);
    write_parts(split.path(), &[p0, p1]);
    common::tidings(&["run", job.to_str().unwrap(), "--now", NOW]);
    check_account_run(&account_run(split.path()), "restart");
}
