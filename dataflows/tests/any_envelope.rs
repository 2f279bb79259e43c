//! Arbitrary envelopes (any `ts`, any payload, any bytes) through the real dataflow with 1 and
//! 2 workers: no panic, every line becomes dead letters or messages, and every RECEIVE ends in
//! exactly one terminal state.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tidings_dataflows::source::{fingerprint, printed_name};
use tidings_model::State;
use tidings_model::ids::message_id;

// 2025-11-22 00:00 Asia/Shanghai.
const DAY: i64 = 1_763_740_800_000;

fn ts() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => (DAY..DAY + 2 * 86_400_000).prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::from(-1)),
        1 => any::<f64>().prop_map(|f| serde_json::json!(f)),
        1 => Just(serde_json::Value::from("soon")),
        1 => Just(serde_json::Value::from(u64::MAX)),
    ]
}

fn variable() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        "[a-z0-9]{0,8}".prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!({"x": 1})),
        Just(serde_json::json!([1, 2])),
    ]
}

fn receiver() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..30).prop_map(|i| format!("138001380{i:02}")),
        "[ +0-9a-z,-]{0,14}",
        Just(String::new()),
    ]
}

fn request() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("send"), Just("recall"), Just("blast")],
        0i64..5,
        proptest::collection::vec(receiver(), 1..4),
        variable(),
        any::<bool>(),
    )
        .prop_map(|(code, template, receivers, v, list)| {
            let param = serde_json::json!({"receiver": receivers.join(","), "variables": {"v": v}});
            if list {
                serde_json::json!({"code": code, "messageTemplateId": template,
                    "messageParamList": [param.clone(), param]})
            } else {
                serde_json::json!({"code": code, "messageTemplateId": template, "messageParam": param})
            }
            .to_string()
        })
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (ts(), request()).prop_map(|(ts, payload)| {
            serde_json::json!({"ts": ts, "key": "k", "payload": payload}).to_string()
        }),
        1 => request(),
        1 => (ts(), "[^\n\r]{0,40}").prop_map(|(ts, payload)| {
            serde_json::json!({"ts": ts, "payload": payload}).to_string()
        }),
        1 => proptest::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n' && *b != b'\r'), 1..60)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => "[{}\\[\\]\":,0-9a-z ]{1,30}",
    ]
}

fn check(lines: &[String], workers: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let templates = [
        common::sms_template(1, "none", true, "phone"),
        common::sms_template(2, "night_delay", true, "user_id"),
        common::sms_template(3, "night_drop", false, "user_id"),
    ]
    .concat();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let job = common::write_job(dir.path(), &templates, &body, "");
    // The wall clock is noon after the envelopes' two days: their parks are released at the
    // end; a bare line (read at the clock) or a time up to a day ahead may stay parked.
    let (events, dead, summary) =
        common::run_memory(&job, workers, DAY + 3 * 86_400_000 + 12 * 3_600_000);
    let ids: BTreeSet<&str> = events.iter().map(|e| e.meta.message_id.as_str()).collect();
    let print = fingerprint(&dir.path().join("requests.jsonl")).unwrap();
    let source = printed_name("file:requests.jsonl", print.as_deref());
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let n = i as i64 + 1;
        let has_dead = dead.iter().any(|d| d.source.ends_with(&format!(":{n}")));
        let has_messages = (0..2).any(|k| ids.contains(message_id(&source, 0, n, k).as_str()));
        let recall = l.contains("recall");
        prop_assert!(
            has_dead || has_messages || recall,
            "line {n} left no trace: {l}"
        );
    }
    // Per receiver: RECEIVE, terminal states, parks.
    let mut per: BTreeMap<(&str, &str), (usize, usize, usize)> = BTreeMap::new();
    for e in &events {
        let entry = per
            .entry((e.meta.message_id.as_str(), &*e.receiver))
            .or_default();
        match e.state {
            State::Receive => entry.0 += 1,
            State::NightShieldNextSend => entry.2 += 1,
            State::RecallSuccess | State::RecallFail => {}
            _ => entry.1 += 1,
        }
    }
    // Every RECEIVE ends in one terminal state, or is still parked (and counted as parked).
    let mut still_parked = 0;
    for (key, (received, terminal, parked)) in per {
        if received == terminal + 1 && parked == 1 {
            still_parked += 1;
        } else {
            prop_assert_eq!(received, terminal, "{:?}", key);
        }
    }
    prop_assert_eq!(summary.parked, still_parked);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_envelope_through_the_graph(lines in proptest::collection::vec(line(), 1..30)) {
        check(&lines, 1)?;
        check(&lines, 2)?;
    }
}
