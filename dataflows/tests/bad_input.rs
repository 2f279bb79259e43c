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
