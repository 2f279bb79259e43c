//! `examples/simulated/job.toml` — the demo with every channel on a real provider API —
//! pointed at the project's provider simulator and the SMTP server of scripts/services.sh:
//! every delivery arrives signed and authenticated as the provider documents, a flaky SMS
//! provider is retried, SMS that picked a failing provider fail over to the other member of
//! the group, and a provider that keeps failing ends its receivers in SEND_FAIL with the
//! provider's reason — nothing stuck.

mod common;

use std::path::Path;

use tidings_sinks::simulator::{Credentials, Fault, Simulator};

#[test]
fn the_demo_reaches_the_simulated_providers() {
    let sim = Simulator::start(
        "127.0.0.1:0",
        Credentials::default(),
        vec![
            Fault::parse("tencent=503x3").unwrap(),
            Fault::parse("aliyun=500").unwrap(),
            Fault::parse("feishu=500").unwrap(),
        ],
    )
    .unwrap();
    let c = Credentials::default();
    let root = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    common::copy_dir(&examples.join("demo"), &root.path().join("demo"));
    common::copy_dir(&examples.join("simulated"), &root.path().join("simulated"));
    let dir = root.path().join("simulated");
    let job = dir.join("job.toml");
    let smtp = std::env::var("SMTP_ADDR").unwrap_or_else(|_| "127.0.0.1:12525".into());
    let (smtp_host, smtp_port) = smtp.rsplit_once(':').unwrap();
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("http://127.0.0.1:18080", &format!("http://{}", sim.addr))
        .replace(
            "host = \"127.0.0.1\", port = 12525",
            &format!("host = \"{smtp_host}\", port = {smtp_port}"),
        );
    assert!(!text.contains(":18080") && text.contains(smtp_port));
    std::fs::write(&job, text).unwrap();

    // `tidings check` reaches every account (SMTP greets, HTTP providers are reached) and
    // never prints a secret.
    let checked = common::tidings(&["check", job.to_str().unwrap()]);
    assert_eq!(checked.matches("ok    account").count(), 8, "{checked}");
    // The token-based accounts proved their credentials by fetching a token.
    assert_eq!(
        checked.matches("access token fetched").count(),
        3,
        "{checked}"
    );
    let checked_tokens = sim.tokens_issued();
    assert_eq!(checked_tokens, 3);
    for secret in [
        &c.tencent.1,
        &c.dingtalk.1,
        &c.feishu.1,
        &c.aliyun.1,
        &c.wechat.1,
        &c.getui.2,
    ] {
        assert!(!checked.contains(secret.as_str()), "{checked}");
    }
    common::tidings(&[
        "run",
        job.to_str().unwrap(),
        "--now",
        "2025-11-23T12:00:00+08:00",
    ]);

    let tracking = dir.join("var/tracking");
    let by = |channel: &str, state: &str| -> u64 {
        common::first_row::<u64>(&common::sql_csv(
            &tracking,
            &format!(
                "SELECT count(*) AS n FROM events WHERE channel = '{channel}' AND state = '{state}'"
            ),
        ))[0]
    };
    let got = sim.received();
    for r in &got {
        assert!(
            r.valid,
            "{} rejected: {:?} {}",
            r.provider, r.problem, r.body
        );
    }
    // SMS: every receiver sent despite three 503s from Tencent (retried) and an Aliyun that
    // always fails (its receivers failed over to Tencent).
    let sms_sent = by("sms", "SEND_SUCCESS");
    assert!(sms_sent > 100, "{sms_sent}");
    assert_eq!(by("sms", "SEND_FAIL"), 0);
    let aliyun_calls = got.iter().filter(|r| r.provider == "aliyun").count();
    assert!(
        aliyun_calls > 0,
        "the group's weights send some messages to Aliyun first"
    );
    assert!(
        got.iter()
            .filter(|r| r.provider == "aliyun")
            .all(|r| r.faulted)
    );
    // Each (message, number) reached the provider; a call whose answer was lost (a timeout)
    // is sent again, so the provider may see a number twice: at-least-once, as documented.
    let delivered: std::collections::BTreeSet<(String, String)> = got
        .iter()
        .filter(|r| r.provider == "tencent" && !r.faulted)
        .flat_map(|r| {
            let m = r.body["SessionContext"].to_string();
            r.body["PhoneNumberSet"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |n| (m.clone(), n.to_string()))
        })
        .collect();
    assert_eq!(delivered.len() as u64, sms_sent);
    // DingTalk: one signed call per message, every receiver sent.
    let ding_calls = got.iter().filter(|r| r.provider == "dingtalk").count();
    assert!(ding_calls > 0);
    assert_eq!(by("ding_ding_robot", "SEND_FAIL"), 0);
    // Feishu always answers 500: after 2 attempts each receiver is SEND_FAIL with the reason.
    let failed = by("fei_shu_robot", "SEND_FAIL");
    assert!(failed > 0);
    assert_eq!(by("fei_shu_robot", "SEND_SUCCESS"), 0);
    let reasons = common::sql_csv(
        &tracking,
        "SELECT DISTINCT reason FROM events WHERE channel = 'fei_shu_robot' AND state = 'SEND_FAIL'",
    );
    assert!(
        reasons.contains("feishu_robot: HTTP 500") && reasons.contains("after 2 attempts"),
        "{reasons}"
    );
    // Email: every SEND_SUCCESS receiver's message is in the SMTP server's mailbox, read
    // back by its Message-ID and envelope recipient.
    let mail_dir =
        std::env::var("SMTP_DIR").unwrap_or_else(|_| "/tmp/tidings-services/mail".into());
    let mails: Vec<String> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let sent = common::sql_csv(
        &tracking,
        "SELECT message_id, receiver FROM events WHERE channel = 'email' AND state = 'SEND_SUCCESS'",
    );
    let pairs: Vec<(&str, &str)> = sent
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .collect();
    assert!(pairs.len() > 100, "{}", pairs.len());
    for (id, to) in &pairs {
        let found = mails.iter().any(|m| {
            m.lines().next().is_some_and(|l| l.ends_with(to))
                && m.contains(&format!("<{id}@tidings>"))
        });
        assert!(found, "no mail for {to} of message {id}");
    }
    assert_eq!(by("email", "SEND_FAIL"), 0);
    // Push (GeTui), WeCom app and the official account: authenticated with their tokens
    // (one each: cached), every receiver sent.
    for (channel, provider) in [
        ("push", "getui"),
        ("enterprise_we_chat", "wecomapp"),
        ("official_accounts", "wechat"),
    ] {
        assert!(by(channel, "SEND_SUCCESS") > 0, "{channel}");
        assert_eq!(by(channel, "SEND_FAIL"), 0, "{channel}");
        assert!(got.iter().any(|r| r.provider == provider), "{provider}");
    }
    // One token per app, reused for every call (a token call whose answer was lost to a
    // client timeout is asked again, so a few more may be issued).
    let app_calls = got
        .iter()
        .filter(|r| ["getui", "wecomapp", "wechat"].contains(&r.provider.as_str()))
        .count() as u64;
    let issued = sim.tokens_issued() - checked_tokens;
    assert!(
        (3..=6).contains(&issued) && app_calls > 10 * issued,
        "{issued} tokens for {app_calls} calls"
    );
    let oa = got
        .iter()
        .find(|r| r.provider == "wechat" && r.body["template_id"].is_string())
        .unwrap();
    assert_eq!(oa.body["template_id"], "TMPL_PAYMENT");
    assert!(
        oa.body["data"]["keyword1"]["value"].is_string(),
        "{}",
        oa.body
    );
    // Nothing stuck: every RECEIVE has exactly one terminal state.
    let bad = common::sql_csv(
        &tracking,
        "SELECT count(*) AS bad FROM (SELECT message_id, receiver, \
           sum(CASE WHEN state = 'RECEIVE' THEN 1 ELSE 0 END) AS received, \
           sum(CASE WHEN state_code IN (15, 20, 22, 30, 40, 50, 60, 70) THEN 1 ELSE 0 END) AS terminal \
         FROM events GROUP BY message_id, receiver HAVING received <> 1 OR terminal <> 1)",
    );
    assert_eq!(bad.trim(), "bad\n0");
    sim.stop();

    // With the simulator gone, the check names the accounts it cannot reach and fails.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["check", job.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAIL  account sms-tencent (tencent_sms)"),
        "{text}"
    );
}

/// An SMS template of `account` (no shield, no dedup) with `content`.
fn sms_template(id: i64, msg_type: &str, account: &str, content: &str) -> String {
    format!(
        "[[template]]\nid = {id}\nname = \"t{id}\"\nchannel = \"sms\"\nmsg_type = \"{msg_type}\"\nid_type = \"phone\"\nshield = \"none\"\naccount = \"{account}\"\ndedup = false\n[template.content]\ncontent = \"{content}\"\n"
    )
}

/// 240 requests 10 ms apart, request `i` of template `template_of(i)` with `v = "v{i}"`, to
/// `139{i:04}1234`, except every 60th (from the 7th) to `138{i:04}0000`, a number the
/// simulator refuses.
fn requests_240(template_of: impl Fn(i64) -> i64) -> String {
    let mut requests = String::new();
    for i in 0..240i64 {
        let to = if i % 60 == 7 {
            format!("138{i:04}0000")
        } else {
            format!("139{i:04}1234")
        };
        let at = 1_763_870_400_000 + i * 10;
        requests.push_str(&common::envelope(at, template_of(i), &to, &format!("v{i}")));
        requests.push('\n');
    }
    requests
}

/// A receiver's terminal state: message id, receiver, state, reason.
type Outcome = (String, String, String, String);

/// Runs `requests` through a job of `templates` and `account` with `workers` workers and
/// epochs of `epoch_lines` requests; every receiver's terminal state (sorted) and the calls
/// the simulator received in the run.
fn run_sharing(
    sim: &Simulator,
    templates: &str,
    requests: &str,
    account: &str,
    workers: usize,
    epoch_lines: usize,
) -> (Vec<Outcome>, Vec<tidings_sinks::simulator::Received>) {
    let dir = tempfile::tempdir().unwrap();
    let job = common::write_job(dir.path(), templates, requests, "");
    // Epochs of 120 requests: a send task carries many messages at once, as under load.
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("epoch_lines = 3", &format!("epoch_lines = {epoch_lines}"))
        + account;
    std::fs::write(&job, text).unwrap();
    let before = sim.received().len();
    let (rows, dead, _) = common::run_memory(&job, workers, 1_763_870_400_000);
    assert!(dead.is_empty(), "{dead:?}");
    let mut outcomes: Vec<Outcome> = rows
        .iter()
        .filter(|r| r.state.name() != "RECEIVE")
        .map(|r| {
            (
                r.meta.message_id.to_string(),
                r.receiver.to_string(),
                r.state.name().to_string(),
                r.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    outcomes.sort();
    (outcomes, sim.received()[before..].to_vec())
}

/// [`run_sharing`] with 1 worker, 2 workers, and 2 workers with epochs of 7 requests (other
/// messages wait together, so other calls are shared): the outcomes are the same, one per
/// receiver of the 240 requests, and only the 4 refused numbers failed, with `why` in their
/// reason; returns each run's calls.
fn same_outcomes_however_run(
    sim: &Simulator,
    templates: &str,
    requests: &str,
    account: &str,
    why: &str,
) -> [Vec<tidings_sinks::simulator::Received>; 3] {
    let run =
        |workers, epoch_lines| run_sharing(sim, templates, requests, account, workers, epoch_lines);
    let (one, calls_one) = run(1, 120);
    let (two, calls_two) = run(2, 120);
    let (small, calls_small) = run(2, 7);
    assert_eq!(one.len(), 240, "one terminal row per receiver");
    assert_eq!(one, two, "the same outcomes with 1 and 2 workers");
    assert_eq!(one, small, "the same outcomes with epochs of 7 requests");
    let failed: Vec<_> = one.iter().filter(|o| o.2 == "SEND_FAIL").collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|o| o.1.ends_with("0000") && o.3.contains(why)),
        "{failed:?}"
    );
    [calls_one, calls_two, calls_small]
}

/// Notices of one text to a Yunpian account share `batch_send` calls, codes go one call each,
/// and which messages shared a call never shows in the outcome: 1 and 2 workers and small
/// epochs end every receiver the same (a refused number fails alone), and every good number
/// reaches Yunpian once per run with its own message's text.
#[test]
fn yunpian_shared_calls_do_not_change_any_outcome() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let c = Credentials::default();
    let templates = sms_template(1, "notice", "yp", "【tidings】Sale today")
        + &sms_template(3, "marketing", "yp", "【tidings】New arrivals")
        + &sms_template(2, "auth_code", "yp", "【tidings】Your code is {$v}");
    // The refused numbers are answered in their own `data` entries, as Yunpian answers.
    let requests = requests_240(|i| match i % 8 {
        3 => 2,
        0 | 4 => 3,
        _ => 1,
    });
    let account = format!(
        "[accounts.yp]\nchannel = \"sms\"\nprovider = \"yunpian_sms\"\nconcurrency = 2\n\
         settings = {{ apikey = \"{}\", endpoint = \"{}\" }}\n",
        c.yunpian_apikey,
        sim.endpoint("yunpian")
    );
    let calls = same_outcomes_however_run(&sim, &templates, &requests, &account, "yunpian_sms: 2 ");
    for calls in &calls {
        assert!(calls.iter().all(|r| r.valid), "{calls:#?}");
        let mut reached: Vec<(String, String)> = Vec::new();
        for r in calls.iter() {
            let text = r.body["text"].as_str().unwrap().to_string();
            for n in r.body["mobile"].as_str().unwrap().split(',') {
                reached.push((n.to_string(), text.clone()));
            }
        }
        // 210 notices of two texts share calls, 30 codes go alone: far fewer calls.
        assert!(calls.len() < 120, "{} calls for 240 messages", calls.len());
        let n = reached.len();
        reached.sort();
        reached.dedup();
        assert_eq!(n, reached.len(), "a number reached twice");
        assert_eq!(n, 240);
        assert!(reached.iter().all(|(n, text)| {
            let i: i64 = n[3..7].parse().unwrap();
            let want = match i % 8 {
                3 => format!("【tidings】Your code is v{i}"),
                0 | 4 => "【tidings】New arrivals".to_string(),
                _ => "【tidings】Sale today".to_string(),
            };
            text == &want
        }));
    }
    sim.stop();
}

/// Notices to an Aliyun account share `SendBatchSms` calls, codes go one `SendSms` each, and
/// which messages shared a call never shows in the outcome: the same job with 1 and with 2
/// workers, and with other epochs (so other messages wait together), ends every receiver in
/// the same state with the same reason (a bad number fails
/// alone), and every good number reached the provider once per run with its own message's
/// parameters.
#[test]
fn shared_provider_calls_do_not_change_any_outcome() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let c = Credentials::default();
    let templates = sms_template(1, "notice", "ali", "hi {$v}")
        + &sms_template(2, "auth_code", "ali", "hi {$v}");
    // A refused number refuses the whole Aliyun call it is in.
    let requests = requests_240(|i| if i % 8 == 3 { 2 } else { 1 });
    let account = format!(
        "[accounts.ali]\nchannel = \"sms\"\nprovider = \"aliyun_sms\"\nconcurrency = 2\n\
         settings = {{ access_key_id = \"{}\", access_key_secret = \"{}\", sign_name = \"tidings\", template_code = \"SMS_1\", endpoint = \"{}\" }}\n",
        c.aliyun.0,
        c.aliyun.1,
        sim.endpoint("aliyun")
    );
    let [calls_one, calls_two, calls_small] = same_outcomes_however_run(
        &sim,
        &templates,
        &requests,
        &account,
        "isv.MOBILE_NUMBER_ILLEGAL",
    );
    assert!(calls_small.iter().all(|r| r.valid));
    for calls in [&calls_one, &calls_two] {
        assert!(calls.iter().all(|r| r.valid), "{calls:#?}");
        let shared = calls
            .iter()
            .filter(|r| r.body["Action"] == "SendBatchSms")
            .count();
        let single = calls
            .iter()
            .filter(|r| r.body["Action"] == "SendSms")
            .count();
        // 210 notices in shared calls (a refused one made again in halves down to its bad
        // message), 30 codes alone: far fewer calls than messages.
        assert!(
            shared >= 2 && single < 80,
            "{shared} shared, {single} single calls"
        );
        // Each good number once, with its own message's value.
        let mut reached: Vec<(String, String)> = Vec::new();
        for r in calls.iter() {
            let b = &r.body;
            let (numbers, params): (Vec<String>, Vec<serde_json::Value>) =
                if b["Action"] == "SendBatchSms" {
                    (
                        serde_json::from_str(b["PhoneNumberJson"].as_str().unwrap()).unwrap(),
                        serde_json::from_str(b["TemplateParamJson"].as_str().unwrap()).unwrap(),
                    )
                } else {
                    let p: serde_json::Value =
                        serde_json::from_str(b["TemplateParam"].as_str().unwrap()).unwrap();
                    let n: Vec<String> = b["PhoneNumbers"]
                        .as_str()
                        .unwrap()
                        .split(',')
                        .map(String::from)
                        .collect();
                    let ps = vec![p; n.len()];
                    (n, ps)
                };
            if numbers.iter().any(|n| n.ends_with("0000")) {
                continue;
            }
            for (n, p) in numbers.into_iter().zip(params) {
                reached.push((n, p["content"].as_str().unwrap_or_default().to_string()));
            }
        }
        reached.sort();
        let n = reached.len();
        reached.dedup();
        assert_eq!(n, reached.len(), "a number reached twice");
        assert_eq!(n, 236);
        assert!(reached.iter().all(|(n, p)| {
            let i: i64 = n[3..7].parse().unwrap();
            p == &format!("hi v{i}")
        }));
    }
    sim.stop();
}

/// A job of region `HK` holds its own numbers nationally (`+852 9123 4568` is `91234568`,
/// one receiver however written); each SMS provider dials them with +852, as its API takes
/// numbers, never as mainland ones, and a mainland number still goes as one.
#[test]
fn a_job_regions_numbers_are_dialled_with_its_country_code() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let c = Credentials::default();
    let templates = sms_template(1, "notice", "tc", "hi {$v}")
        + &sms_template(2, "notice", "ali", "hi {$v}")
        + &sms_template(3, "notice", "yp", "【tidings】hi {$v}");
    let receivers = "9123 4567,+852 9123 4568,+8613912341234";
    let requests: String = (1..=3)
        .map(|t| common::envelope(1_763_870_400_000 + t * 10, t, receivers, "x") + "\n")
        .collect();
    let accounts = format!(
        "[accounts.tc]\nchannel = \"sms\"\nprovider = \"tencent_sms\"\n\
         settings = {{ secret_id = \"{}\", secret_key = \"{}\", sdk_app_id = \"1400006666\", sign_name = \"tidings\", template_id = \"1110\", endpoint = \"{}\" }}\n\
         [accounts.ali]\nchannel = \"sms\"\nprovider = \"aliyun_sms\"\n\
         settings = {{ access_key_id = \"{}\", access_key_secret = \"{}\", sign_name = \"tidings\", template_code = \"SMS_1\", endpoint = \"{}\" }}\n\
         [accounts.yp]\nchannel = \"sms\"\nprovider = \"yunpian_sms\"\n\
         settings = {{ apikey = \"{}\", endpoint = \"{}\" }}\n",
        c.tencent.0,
        c.tencent.1,
        sim.endpoint("tencent"),
        c.aliyun.0,
        c.aliyun.1,
        sim.endpoint("aliyun"),
        c.yunpian_apikey,
        sim.endpoint("yunpian"),
    );
    let dir = tempfile::tempdir().unwrap();
    let job = common::write_job(dir.path(), &templates, &requests, "region = \"HK\"");
    let text = std::fs::read_to_string(&job).unwrap() + &accounts;
    std::fs::write(&job, text).unwrap();
    // The same numbers on 1 and 2 workers (a pure function of the receiver and the region).
    for workers in [1, 2] {
        let _ = std::fs::remove_dir_all(dir.path().join("var"));
        let before = sim.received().len();
        let (rows, dead, _) = common::run_memory(&job, workers, 1_763_870_400_000);
        assert!(dead.is_empty(), "{dead:?}");
        // Tracked as the job holds them; every one sent.
        let mut sent: Vec<(i64, String)> = rows
            .iter()
            .filter(|r| r.state.name() == "SEND_SUCCESS")
            .map(|r| (r.meta.template_id, r.receiver.to_string()))
            .collect();
        sent.sort();
        let want = |t: i64| {
            [
                (t, "+8613912341234".to_string()),
                (t, "91234567".to_string()),
                (t, "91234568".to_string()),
            ]
        };
        assert_eq!(sent, [want(1), want(2), want(3)].concat());
        // Dialled as each API takes them.
        let got = sim.received()[before..].to_vec();
        assert!(got.iter().all(|r| r.valid), "{got:#?}");
        let numbers = |provider: &str| -> Vec<String> {
            let mut n: Vec<String> = got
                .iter()
                .filter(|r| r.provider == provider)
                .flat_map(|r| match provider {
                    "tencent" => r.body["PhoneNumberSet"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_str().unwrap().to_string())
                        .collect::<Vec<_>>(),
                    "aliyun" => split(&r.body["PhoneNumbers"]),
                    _ => split(&r.body["mobile"]),
                })
                .collect();
            n.sort();
            n
        };
        assert_eq!(
            numbers("tencent"),
            ["+85291234567", "+85291234568", "+8613912341234"]
        );
        assert_eq!(
            numbers("aliyun"),
            ["85291234567", "85291234568", "8613912341234"]
        );
        assert_eq!(
            numbers("yunpian"),
            ["+85291234567", "+85291234568", "+8613912341234"]
        );
    }
    sim.stop();
}

/// A comma-separated list of numbers in a call's field.
fn split(v: &serde_json::Value) -> Vec<String> {
    v.as_str().unwrap().split(',').map(String::from).collect()
}
