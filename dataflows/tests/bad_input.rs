//! Every bad-input case of docs/states.md becomes one dead letter with its reason, and the job
//! goes on: the good records around them are sent.

mod common;

#[test]
fn bad_records_become_dead_letters_and_the_job_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let templates = common::sms_template(1, "none", true, "phone");
    let ts = 1_763_784_000_000; // 2025-11-22 12:00 Shanghai
    let many: Vec<String> = (0..101).map(|i| format!("1380013{i:04}")).collect();
    let bad_payloads = [
        ("{not json".to_string(), "unparsable JSON"),
        (r#"{"code":"blast","messageTemplateId":1,"messageParam":{"receiver":"13800138000"}}"#.into(), "unknown code `blast`"),
        (r#"{"code":"send","messageTemplateId":42,"messageParam":{"receiver":"13800138000"}}"#.into(), "unknown template 42"),
        (r#"{"code":"send","messageTemplateId":1,"messageParam":{},"messageParamList":[]}"#.into(), "both messageParam and messageParamList"),
        (r#"{"code":"send","messageTemplateId":1}"#.into(), "neither messageParam nor messageParamList"),
        (r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":" ,, ","variables":{"v":"x"}}}"#.into(), "no receivers"),
        (
            serde_json::json!({"code":"send","messageTemplateId":1,"messageParam":{"receiver": many.join(","),"variables":{"v":"x"}}}).to_string(),
            "101 receivers",
        ),
        (r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"13800138000"}}"#.into(), "missing variable `v`"),
    ];
    let mut lines = vec![common::envelope(ts, 1, "13800138000", "first")];
    for (payload, _) in &bad_payloads {
        lines.push(serde_json::json!({"ts": ts, "payload": payload}).to_string());
    }
    // A bare request line (event time = read time), and one sibling dead among good params.
    lines.push(r#"{"code":"send","messageTemplateId":1,"messageParamList":[{"receiver":"13800138001","variables":{"v":"ok"}},{"receiver":"13800138002"}]}"#.into());
    lines.push(common::envelope(ts, 1, "13800138003", "last"));
    let job = common::write_job(dir.path(), &templates, &(lines.join("\n") + "\n"), "");
    let (events, dead, _) = common::run_memory(&job, 2, ts + 1000);

    assert_eq!(dead.len(), bad_payloads.len() + 1, "{dead:#?}");
    for (i, (_, reason)) in bad_payloads.iter().enumerate() {
        let line = i + 2;
        let d = dead
            .iter()
            .find(|d| d.source.ends_with(&format!(":{line}")))
            .unwrap_or_else(|| panic!("line {line}"));
        assert!(
            d.reason.contains(reason),
            "line {line}: {} (want {reason})",
            d.reason
        );
        // The file's name and its fingerprint's first 8 hex digits, then the line.
        assert!(d.source.starts_with("file:requests.jsonl#"), "{}", d.source);
        assert_eq!(
            d.source.split(['#', ':']).nth(2).map(str::len),
            Some(8),
            "{}",
            d.source
        );
    }
    let sibling = dead
        .iter()
        .find(|d| d.reason.starts_with("messageParamList[1]"))
        .expect("sibling dead letter");
    assert!(
        sibling.reason.contains("missing variable"),
        "{}",
        sibling.reason
    );

    let sent: Vec<&str> = events
        .iter()
        .filter(|e| e.state.name() == "SEND_SUCCESS")
        .map(|e| &*e.receiver)
        .collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(
        sent_sorted,
        vec!["13800138000", "13800138001", "13800138003"]
    );
    // The bare line's event time is the (fixed) read time.
    let bare = events
        .iter()
        .find(|e| &*e.receiver == "13800138001")
        .unwrap();
    assert_eq!(bare.event_time, ts + 1000);
}

/// Requests as austin's producers write them decide alike on 1, 2 and 4 workers: a receiver
/// and bizId written as numbers are read as their text and sent; a blank variable is a dead
/// letter; a list whose params fail keeps the record's payload in its first dead letter only,
/// whichever worker judged which param.
#[test]
fn austin_shaped_params_decide_alike_on_any_worker_count() {
    let ts = 1_763_784_000_000; // 2025-11-22 12:00 Shanghai
    let line = |n: i64, payload: serde_json::Value| {
        serde_json::json!({"ts": ts + n, "key": "k", "payload": payload.to_string()}).to_string()
    };
    let list: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                serde_json::json!({"variables": {"v": "x"}})
            } else {
                serde_json::json!({"receiver": format!("1380013800{i}"), "variables": {"v": "x"}})
            }
        })
        .collect();
    let lines = [
        line(
            0,
            serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": 13900139000u64, "bizId": 7, "variables": {"v": "a"}}}),
        ),
        line(
            1,
            serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": "13900139001", "variables": {"v": " "}}}),
        ),
        line(
            2,
            serde_json::json!({"code": "send", "messageTemplateId": 1, "messageParamList": list}),
        ),
        // A price written as the number 9.90: its text fills the content on every worker.
        line(3, serde_json::json!("PAYLOAD")).replace(
            r#""\"PAYLOAD\"""#,
            r#""{\"code\":\"send\",\"messageTemplateId\":1,\"messageParam\":{\"receiver\":\"13900139002\",\"variables\":{\"v\":9.90}}}""#,
        ),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let decided = |workers: usize| {
        let dir = tempfile::tempdir().unwrap();
        let job = common::write_job(
            dir.path(),
            &common::sms_template(1, "none", true, "phone"),
            &body,
            "",
        );
        let (events, dead, _) = common::run_memory(&job, workers, ts + 3_600_000);
        let mut rows: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {:?} {:?} {}",
                    e.meta.message_id,
                    e.receiver,
                    e.state.name(),
                    e.meta.biz_id,
                    e.reason,
                    e.meta.content
                )
            })
            .collect();
        rows.sort();
        let mut letters: Vec<(String, String, String)> = dead
            .into_iter()
            .map(|d| (d.source, d.reason, d.payload))
            .collect();
        letters.sort();
        (rows, letters)
    };
    let (rows, letters) = decided(1);
    let sent = |to: &str| {
        rows.iter()
            .any(|r| r.contains(&format!(" {to} SEND_SUCCESS ")))
    };
    assert!(sent("13900139000"), "{rows:#?}");
    assert!(rows.iter().any(|r| r.contains("Some(\"7\")")), "{rows:#?}");
    assert!(
        sent("13800138001") && sent("13800138003") && sent("13800138005"),
        "{rows:#?}"
    );
    assert!(!rows.iter().any(|r| r.contains("13900139001")), "{rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r.contains(" 13900139002 SEND_SUCCESS ") && r.contains("hi 9.90")),
        "{rows:#?}"
    );
    let blank: Vec<_> = letters
        .iter()
        .filter(|l| l.1.contains("empty or blank"))
        .collect();
    assert_eq!(blank.len(), 1, "{letters:#?}");
    let listed: Vec<_> = letters
        .iter()
        .filter(|l| l.1.contains("no receivers"))
        .collect();
    assert_eq!(listed.len(), 3, "{letters:#?}");
    assert_eq!(
        listed.iter().filter(|l| !l.2.is_empty()).count(),
        1,
        "one of the list's dead letters keeps the payload: {letters:#?}"
    );
    assert!(
        listed
            .iter()
            .any(|l| l.1.starts_with("messageParamList[0]: ") && !l.2.is_empty())
    );
    for workers in [2, 4] {
        assert_eq!(
            decided(workers),
            (rows.clone(), letters.clone()),
            "{workers} workers"
        );
    }
}
