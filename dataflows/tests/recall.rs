//! `code: "recall"` through the graph: WeCom app messages and DingTalk work notices sent in
//! one run (to the provider simulator, which answers a `msgid` / `task_id`) are recalled in
//! the next — by message id, and by template when no ids are given — ending in
//! RECALL_SUCCESS per receiver; an unknown id ends in RECALL_FAIL with the reason, a recall
//! on a channel without recall is a dead letter, and what was recalled cannot be again.

mod common;

use tidings_model::EventRow;
use tidings_sinks::simulator::{Credentials, Simulator};

const NOW: i64 = 1_763_802_000_000; // 2025-11-22 17:00 in Shanghai

fn templates() -> String {
    let t = |id: i64, channel: &str, id_type: &str, account: &str| {
        format!(
            "[[template]]\nid = {id}\nname = \"t{id}\"\nchannel = \"{channel}\"\nmsg_type = \"notice\"\nid_type = \"{id_type}\"\naccount = \"{account}\"\ndedup = false\n[template.content]\ncontent = \"task {{$v}}\"\n"
        )
    };
    format!(
        "{}{}{}",
        t(1, "enterprise_we_chat", "enterprise_user_id", "wecom"),
        t(2, "ding_ding_work_notice", "ding_ding_user_id", "ding"),
        t(3, "sms", "phone", "out")
    )
}

fn send(ts: i64, template: i64, to: &str, v: &str) -> String {
    common::envelope(ts, template, to, v)
}

fn recall(ts: i64, template: i64, ids: &[&str]) -> String {
    let payload = serde_json::json!({"code": "recall", "messageTemplateId": template,
        "recallMessageIds": ids});
    serde_json::json!({"ts": ts, "key": "k", "payload": payload.to_string()}).to_string()
}

/// `[accounts.ding]`: a DingTalk work notice app on the simulator.
fn ding_account(sim: &Simulator) -> String {
    let c = Credentials::default();
    format!(
        "[accounts.ding]\nchannel = \"ding_ding_work_notice\"\nprovider = \"dingtalk_work_notice\"\n\
         settings = {{ app_key = \"{}\", app_secret = \"{}\", agent_id = {}, endpoint = \"{}\" }}\n",
        c.dingapp.0,
        c.dingapp.1,
        c.dingapp.2,
        sim.endpoint("dingapp"),
    )
}

fn of(rows: &[EventRow], state: &str) -> Vec<(i64, String, String)> {
    let mut v: Vec<_> = rows
        .iter()
        .filter(|r| r.state.name() == state)
        .map(|r| {
            (
                r.meta.template_id,
                r.meta.message_id.to_string(),
                r.receiver.to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The receivers of the RECALL_SUCCESS rows, sorted.
fn recalled(rows: &[EventRow]) -> Vec<String> {
    let mut v: Vec<String> = of(rows, "RECALL_SUCCESS")
        .into_iter()
        .map(|r| r.2)
        .collect();
    v.sort();
    v
}

#[test]
fn recalls_reach_the_provider_and_end_in_recall_states() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let c = Credentials::default();
    let dir = tempfile::tempdir().unwrap();
    let accounts = format!(
        "state_dir = \"var/state\"\n\
         [accounts.wecom]\nchannel = \"enterprise_we_chat\"\nprovider = \"wecom_app\"\n\
         settings = {{ corp_id = \"{}\", corp_secret = \"{}\", agent_id = {}, endpoint = \"{}\" }}\n{}",
        c.wecomapp.0,
        c.wecomapp.1,
        c.wecomapp.2,
        sim.endpoint("wecomapp"),
        ding_account(&sim),
    );
    let first = [
        send(NOW - 60_000, 1, "zhangsan,lisi", "a"),
        send(NOW - 50_000, 1, "wangwu", "b"),
        send(NOW - 40_000, 2, "ding-u1", "c"),
        send(NOW - 30_000, 2, "ding-u2", "d"),
    ]
    .join("\n");
    // `accounts` go before [source], which write_job puts after `extra`.
    let job = common::write_job(dir.path(), &templates(), &first, &accounts);

    let (rows, dead, _) = common::run_memory(&job, 2, NOW);
    assert!(dead.is_empty(), "{dead:?}");
    let sent = of(&rows, "SEND_SUCCESS");
    assert_eq!(sent.len(), 5, "{sent:?}");
    let wecom_first = sent.iter().find(|s| s.2 == "zhangsan").unwrap().1.clone();

    // The next run (same state directory: the recall books are on disk): recall the first
    // WeCom message by id, every DingTalk notice by template, an id nobody sent, and an SMS.
    let second = [
        recall(NOW + 1_000, 1, &[&wecom_first]),
        recall(NOW + 2_000, 2, &[]),
        recall(NOW + 3_000, 1, &["no-such-message"]),
        recall(NOW + 4_000, 3, &["whatever"]),
    ]
    .join("\n");
    std::fs::write(dir.path().join("requests.jsonl"), second).unwrap();
    let (rows, dead, _) = common::run_memory(&job, 2, NOW + 10_000);
    let ok = of(&rows, "RECALL_SUCCESS");
    let mut ding: Vec<_> = ok
        .iter()
        .filter(|r| r.0 == 2)
        .map(|r| r.2.as_str())
        .collect();
    ding.sort();
    assert_eq!(ding, ["ding-u1", "ding-u2"], "{ok:?}");
    let wecom: Vec<_> = ok.iter().filter(|r| r.0 == 1).collect();
    assert_eq!(
        wecom.len(),
        2,
        "both receivers of the first message: {ok:?}"
    );
    assert!(wecom.iter().all(|r| r.1 == wecom_first));
    let failed: Vec<&EventRow> = rows
        .iter()
        .filter(|r| r.state.name() == "RECALL_FAIL")
        .collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert_eq!(failed[0].meta.message_id, "no-such-message");
    assert!(
        failed[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("not recallable by wecom")
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .reason
            .contains("recall is not supported on channel sms")
    );

    // What the simulator received: a recall per DingTalk task, and one per WeCom call that
    // carried the first message (its two receivers may have gone out in one call or two);
    // the simulator accepts a recall only of an id it answered to a send.
    let got = sim.received();
    let recalls_ding = got
        .iter()
        .filter(|r| r.provider == "dingapp" && r.body["msg_task_id"].is_i64())
        .count();
    let recalls_wecom = got
        .iter()
        .filter(|r| r.provider == "wecomapp" && r.body["msgid"].is_string())
        .count();
    assert_eq!(recalls_ding, 2);
    assert!((1..=2).contains(&recalls_wecom), "{recalls_wecom}");
    assert!(got.iter().all(|r| r.valid), "{got:#?}");

    // Recalled once: the same recall again fails; the other WeCom message is still recallable.
    std::fs::write(
        dir.path().join("requests.jsonl"),
        [
            recall(NOW + 20_000, 1, &[&wecom_first]),
            recall(NOW + 21_000, 1, &[]),
        ]
        .join("\n"),
    )
    .unwrap();
    let (rows, _, _) = common::run_memory(&job, 1, NOW + 30_000);
    assert_eq!(of(&rows, "RECALL_FAIL").len(), 1, "{rows:?}");
    let ok = of(&rows, "RECALL_SUCCESS");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].2, "wangwu");
    sim.stop();
}

#[test]
fn a_recall_in_the_same_epoch_runs_after_the_sends_before_it() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts = format!(
        "state_dir = \"var/state\"\n\
         [accounts.wecom]\nchannel = \"enterprise_we_chat\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n{}",
        ding_account(&sim),
    );
    // Three lines, one epoch: two notices and, right behind them, a recall of the template.
    let lines = [
        send(NOW - 3_000, 2, "ding-u1", "a"),
        send(NOW - 2_000, 2, "ding-u2", "b"),
        recall(NOW - 1_000, 2, &[]),
    ]
    .join("\n");
    let job = common::write_job(dir.path(), &templates(), &lines, &accounts);
    for workers in [1, 2] {
        let _ = std::fs::remove_dir_all(dir.path().join("var"));
        let (rows, dead, _) = common::run_memory(&job, workers, NOW);
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(
            recalled(&rows),
            ["ding-u1", "ding-u2"],
            "{workers} worker(s): {rows:?}"
        );
    }
    sim.stop();
}

/// A recall of a whole template takes back what was sent at or before its event time, and
/// nothing sent after it: not the sends later in its own epoch (which it waits for), nor
/// those of later epochs that ran ahead of it. The same messages on 1 and 2 workers and in
/// epochs of 1 s and 10 ms.
#[test]
fn a_template_recall_takes_back_only_what_was_sent_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = "state_dir = \"var/state\"\n\
         [accounts.wecom]\nchannel = \"enterprise_we_chat\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
         [accounts.ding]\nchannel = \"ding_ding_work_notice\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n";
    let mut lines = vec![
        send(NOW - 10_000, 1, "u-before-1", "a"),
        send(NOW - 4_900, 1, "u-before-2", "b"),
        recall(NOW - 4_900, 1, &[]),
    ];
    for i in 0..30 {
        // The first ones in the recall's 1 s epoch, the rest in later ones.
        lines.push(send(NOW - 4_800 + i * 100, 1, &format!("u-after-{i}"), "c"));
    }
    let job = common::write_job(dir.path(), &templates(), &lines.join("\n"), accounts);
    let base = std::fs::read_to_string(&job).unwrap();
    let mut seen = Vec::new();
    for (workers, epoch) in [(1, ""), (2, ""), (2, "epoch_ms = 10\n")] {
        let _ = std::fs::remove_dir_all(dir.path().join("var"));
        std::fs::write(
            &job,
            base.replace("[source]\n", &format!("[source]\n{epoch}")),
        )
        .unwrap();
        let (rows, dead, _) = common::run_memory(&job, workers, NOW);
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(of(&rows, "SEND_SUCCESS").len(), 32);
        let recalled = recalled(&rows);
        assert_eq!(
            recalled,
            ["u-before-1", "u-before-2"],
            "{workers} worker(s), {epoch:?}"
        );
        seen.push(recalled);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}
