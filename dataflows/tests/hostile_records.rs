//! Issue 12 (and 11 item 4) through the real dataflow: records whose values are extreme or
//! hostile never panic a worker; each is one dead letter with a reason (or a RECEIVER_INVALID
//! row), and the records around them are judged as if they were not there.

mod common;

use std::time::Duration;

/// 2025-11-22 12:00 Shanghai; the fixed wall clock is one second later.
const TS: i64 = 1_763_784_000_000;

#[test]
fn extreme_times_and_hostile_values_are_dead_letters_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let templates = common::sms_template(1, "none", true, "phone");
    let payload = |receiver: &str, vars: serde_json::Value| {
        serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": receiver, "variables": vars}})
        .to_string()
    };
    let env =
        |ts: serde_json::Value, p: String| serde_json::json!({"ts": ts, "payload": p}).to_string();
    let same = payload("13800138000", serde_json::json!({"v": "same"}));
    let mut lines = vec![
        // Line 1: an ordinary send, then the same content again later (content dedup).
        env(TS.into(), same.clone()),
        // Lines 2-6: event times outside the sane range.
        env(i64::MAX.into(), same.clone()),
        env(i64::MIN.into(), same.clone()),
        env((-5).into(), same.clone()),
        env(253_402_300_800_000i64.into(), same.clone()),
        env((TS + 2 * 86_400_000).into(), same.clone()),
        // Line 7: a null variable; line 8: an object variable.
        env(
            TS.into(),
            payload("13800138001", serde_json::json!({"v": null})),
        ),
        env(
            TS.into(),
            payload("13800138001", serde_json::json!({"v": {"a": 1}})),
        ),
        // Line 9: content over the SMS limit.
        env(
            TS.into(),
            payload("13800138001", serde_json::json!({"v": "9".repeat(600)})),
        ),
        // Line 10: phones: letters, a fixed line, a spelled-out mobile, a UK mobile.
        env(
            TS.into(),
            payload(
                "1380013800a,010-12345678,+86 138 0013 8002,+44 7911 123456",
                serde_json::json!({"v": "p"}),
            ),
        ),
    ];
    // Lines 11-60: the same content to the same receiver inside the 300 s window.
    for i in 0..50 {
        lines.push(env((TS + 1000 + i).into(), same.clone()));
    }
    let job = common::write_job(dir.path(), &templates, &(lines.join("\n") + "\n"), "");
    let (events, dead, _) =
        common::within(Duration::from_secs(120), "the hostile job", move || {
            common::run_memory(&job, 2, TS + 1000)
        });

    let reason = |line: usize| {
        dead.iter()
            .find(|d| d.source.ends_with(&format!(":{line}")))
            .map(|d| d.reason.clone())
            .unwrap_or_else(|| panic!("no dead letter for line {line}: {dead:#?}"))
    };
    let wants: [(usize, &str); 8] = [
        (
            2,
            "event time 9223372036854775807 ms (out of range) is more than 86400000 ms ahead",
        ),
        (
            3,
            "event time -9223372036854775808 ms (out of range) is before 2000-01-01",
        ),
        (4, "event time -5 ms"),
        (5, "+10000-01-01T00:00:00.000Z"),
        (6, "is more than 86400000 ms ahead of the wall clock"),
        (7, "missing variable `v`: its value is null"),
        (8, "variable `v` is an object"),
        (9, "more than the sms limit of 500 characters"),
    ];
    for (line, want) in wants {
        let r = reason(line);
        assert!(r.contains(want), "line {line}: {r} (want {want})");
    }
    assert_eq!(dead.len(), wants.len(), "{dead:#?}");

    // The out-of-range records moved no window: one send of `same`, 50 content dedups.
    let of = |receiver: &str, state: &str| {
        events
            .iter()
            .filter(|e| &*e.receiver == receiver && e.state.name() == state)
            .count()
    };
    assert_eq!(of("13800138000", "SEND_SUCCESS"), 1);
    assert_eq!(of("13800138000", "CONTENT_DEDUPLICATION"), 50);
    // Phones: rows carry the normalised form of valid ones, the written form of invalid ones.
    let invalid: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.state.name() == "RECEIVER_INVALID")
        .map(|e| (&*e.receiver, e.reason.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    assert!(
        invalid
            .iter()
            .any(|(r, why)| *r == "1380013800a" && why.contains("`a` at position 11"))
    );
    assert!(
        invalid
            .iter()
            .any(|(r, why)| *r == "010-12345678" && why.contains("not a mobile number"))
    );
    assert_eq!(of("13800138002", "SEND_SUCCESS"), 1);
    assert_eq!(of("+447911123456", "SEND_SUCCESS"), 1);
    // Every RECEIVE has one terminal state.
    let receives = events
        .iter()
        .filter(|e| e.state.name() == "RECEIVE")
        .count();
    let terminal = events.iter().filter(|e| e.state.is_terminal()).count();
    assert_eq!(receives, terminal);
}
