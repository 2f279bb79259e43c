//! Several messages in one provider call, against the simulator. Aliyun (`SendBatchSms`):
//! messages sent together share calls of up to 100 numbers, each number with its own
//! message's parameters; one bad message refuses the shared call and is then the only one to
//! fail; verification codes always go one message per call (`SendSms`). Tencent (`SendSms`,
//! one parameter set per call): only messages of the same content share a call, a number is
//! never twice in one, and each number's own status reaches its message. Yunpian
//! (`batch_send`, one text per call) shares calls the same way.

mod common;

use std::sync::atomic::Ordering;

use tidings_model::{Channel, MsgType};
use tidings_sinks::SendBatch;
use tidings_sinks::account::{Accounts, Halt, NOT_SENT_HALTED};
use tidings_sinks::simulator::{Credentials, Fault, Received, Simulator};

/// Accounts `tencent`, `aliyun` and `yunpian` on the simulator, `concurrency` calls at a
/// time each.
fn accounts(sim: &Simulator, concurrency: usize) -> Accounts {
    let c = Credentials::default();
    let ((tencent_id, tencent_key), (aliyun_id, aliyun_secret)) = (&c.tencent, &c.aliyun);
    let (tencent, aliyun) = (sim.endpoint("tencent"), sim.endpoint("aliyun"));
    let (yunpian, yunpian_key) = (sim.endpoint("yunpian"), &c.yunpian_apikey);
    common::accounts(&format!(
        r#"
[tencent]
channel = "sms"
provider = "tencent_sms"
concurrency = {concurrency}
settings = {{ secret_id = "{tencent_id}", secret_key = "{tencent_key}", sdk_app_id = "1400006666", sign_name = "tidings", template_id = "1110", endpoint = "{tencent}" }}
[aliyun]
channel = "sms"
provider = "aliyun_sms"
concurrency = {concurrency}
settings = {{ access_key_id = "{aliyun_id}", access_key_secret = "{aliyun_secret}", sign_name = "tidings", template_code = "SMS_1", endpoint = "{aliyun}" }}
[yunpian]
channel = "sms"
provider = "yunpian_sms"
concurrency = {concurrency}
settings = {{ apikey = "{yunpian_key}", endpoint = "{yunpian}" }}
"#
    ))
}

/// Message `i` of `kind`, with the code `i`, to `receivers`.
fn message(i: usize, kind: MsgType, receivers: &[String]) -> SendBatch {
    let mut b = common::batch(
        &format!("m-{i}"),
        Channel::Sms,
        &format!(r#"{{"params":{{"code":"{i}"}}}}"#),
        receivers,
    );
    b.msg_type = kind;
    b
}

/// A runtime of two threads, as the send stage's.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Resolves once `cond` holds; panics naming `what` if it does not within 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 10 s for: {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Sends `messages` through the account together, on one runtime; their outcomes in order.
fn send_together(acc: &Accounts, messages: &[SendBatch]) -> Vec<Vec<Result<(), String>>> {
    send_with(acc, "aliyun", messages)
}

/// [`send_together`] through account `name`.
fn send_with(acc: &Accounts, name: &str, messages: &[SendBatch]) -> Vec<Vec<Result<(), String>>> {
    let rt = runtime();
    let account = acc.get(acc.index(name).unwrap());
    rt.block_on(futures_util::future::join_all(
        messages.iter().map(|m| account.send(m)),
    ))
    .into_iter()
    .map(|o| o.into_vec())
    .collect()
}

fn numbers(i: usize) -> Vec<String> {
    vec![format!("1380{i:04}123"), format!("1390{i:04}456")]
}

/// Each number the calls reached, with the code it was sent.
fn reached(got: &[Received]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in got.iter().filter(|r| r.provider == "aliyun") {
        let b = &r.body;
        match b["Action"].as_str() {
            Some("SendBatchSms") => {
                let n: Vec<String> =
                    serde_json::from_str(b["PhoneNumberJson"].as_str().unwrap()).unwrap();
                let p: Vec<serde_json::Value> =
                    serde_json::from_str(b["TemplateParamJson"].as_str().unwrap()).unwrap();
                for (n, p) in n.into_iter().zip(p) {
                    out.push((n, p["code"].as_str().unwrap().to_string()));
                }
            }
            _ => {
                let p: serde_json::Value =
                    serde_json::from_str(b["TemplateParam"].as_str().unwrap()).unwrap();
                for n in b["PhoneNumbers"].as_str().unwrap().split(',') {
                    out.push((n.to_string(), p["code"].as_str().unwrap().to_string()));
                }
            }
        }
    }
    out.sort();
    out
}

fn actions(got: &[Received]) -> (usize, usize) {
    let n = |a: &str| got.iter().filter(|r| r.body["Action"] == a).count();
    (n("SendBatchSms"), n("SendSms"))
}

#[test]
fn notices_share_calls_and_each_number_gets_its_own_parameters() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, 2);
    let messages: Vec<SendBatch> = (0..120)
        .map(|i| message(i, MsgType::Notice, &numbers(i)))
        .collect();
    let out = send_together(&acc, &messages);
    assert!(out.iter().flatten().all(|o| o.is_ok()), "{out:?}");
    let got = sim.received();
    assert!(got.iter().all(|r| r.valid), "{got:#?}");
    let (batch_calls, single_calls) = actions(&got);
    // 240 numbers: at most 100 a call; fewer calls than messages by far.
    assert!(batch_calls >= 3, "{batch_calls} SendBatchSms calls");
    assert!(
        batch_calls + single_calls < 60,
        "{batch_calls} + {single_calls} calls"
    );
    // The account's counters (the admin API, `/metrics`) say so.
    let stats = acc.get(acc.index("aliyun").unwrap()).stats.snapshot();
    assert_eq!(stats.shared_calls as usize, batch_calls);
    assert_eq!(stats.sent, 240);
    assert!(stats.shared_call_messages as usize > 100);
    for r in got.iter().filter(|r| r.body["Action"] == "SendBatchSms") {
        let n: Vec<String> =
            serde_json::from_str(r.body["PhoneNumberJson"].as_str().unwrap()).unwrap();
        assert!(n.len() <= 100);
    }
    let mut want: Vec<(String, String)> = (0..120)
        .flat_map(|i| numbers(i).into_iter().map(move |n| (n, i.to_string())))
        .collect();
    want.sort();
    assert_eq!(
        reached(&got),
        want,
        "every number once, with its message's code"
    );
    sim.stop();
}

#[test]
fn a_bad_message_fails_alone_and_codes_go_one_by_one() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, 2);
    let mut messages: Vec<SendBatch> = (0..20)
        .map(|i| message(i, MsgType::Notice, &numbers(i)))
        .collect();
    messages.push(message(20, MsgType::Notice, &["13800200000".to_string()]));
    let out = send_together(&acc, &messages);
    for (i, o) in out.iter().enumerate() {
        if i == 20 {
            let why = o[0].as_ref().unwrap_err();
            assert!(why.contains("isv.MOBILE_NUMBER_ILLEGAL"), "{why}");
        } else {
            assert!(o.iter().all(|o| o.is_ok()), "message {i}: {o:?}");
        }
    }
    // Every good number was reached (by the calls that were not refused).
    let got = sim.received();
    let ok: Vec<Received> = got
        .iter()
        .filter(|r| {
            !r.body["PhoneNumbers"]
                .as_str()
                .is_some_and(|n| n.contains("13800200000"))
        })
        .filter(|r| {
            !r.body["PhoneNumberJson"]
                .as_str()
                .is_some_and(|n| n.contains("13800200000"))
        })
        .cloned()
        .collect();
    let mut want: Vec<(String, String)> = (0..20)
        .flat_map(|i| numbers(i).into_iter().map(move |n| (n, i.to_string())))
        .collect();
    want.sort();
    // Each once: the refused calls' good messages went again in halves without it.
    assert_eq!(reached(&ok), want);

    // Verification codes: one SendSms per message, never a shared call.
    let before = actions(&sim.received());
    let codes: Vec<SendBatch> = (100..110)
        .map(|i| message(i, MsgType::AuthCode, &numbers(i)))
        .collect();
    let out = send_together(&acc, &codes);
    assert!(out.iter().flatten().all(|o| o.is_ok()), "{out:?}");
    let after = actions(&sim.received());
    assert_eq!((after.0 - before.0, after.1 - before.1), (0, 10));
    sim.stop();
}

/// Aliyun refuses a whole `SendSms` for one illegal number in it: a message alone (a code,
/// or a notice with nothing to share its call) is sent again in halves down to that number,
/// which alone fails; each other number is reached once and accepted.
#[test]
fn one_bad_number_fails_alone_in_a_message_sent_alone() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, 2);
    let to: Vec<String> = (0..7)
        .map(|n| {
            if n == 4 {
                "13800300000".to_string()
            } else {
                format!("1371234{n:03}5")
            }
        })
        .collect();
    for (i, kind) in [(0, MsgType::AuthCode), (1, MsgType::Notice)] {
        let before = sim.received().len();
        let out = send_together(&acc, &[message(i, kind, &to)]);
        for (n, o) in out[0].iter().enumerate() {
            if n == 4 {
                let why = o.as_ref().unwrap_err();
                assert!(why.contains("isv.MOBILE_NUMBER_ILLEGAL"), "{why}");
            } else {
                assert!(o.is_ok(), "{kind:?} number {n}: {o:?}");
            }
        }
        let got = &sim.received()[before..];
        assert!(got.iter().all(|r| r.valid), "{got:#?}");
        // The six good numbers each in exactly one accepted call (the calls without the bad
        // one), and the calls are few: the whole, then halves down to the bad number.
        let accepted: Vec<Received> = got
            .iter()
            .filter(|r| {
                !r.body["PhoneNumbers"]
                    .as_str()
                    .is_some_and(|n| n.contains("13800300000"))
            })
            .cloned()
            .collect();
        let mut want: Vec<(String, String)> = to
            .iter()
            .filter(|n| !n.ends_with("0000"))
            .map(|n| (n.clone(), i.to_string()))
            .collect();
        want.sort();
        assert_eq!(reached(&accepted), want, "{kind:?}");
        assert!(got.len() <= 7, "{kind:?}: {} calls", got.len());
        assert_eq!(actions(got), (0, got.len()), "{kind:?}: one SendSms a call");
    }
    sim.stop();
}

#[test]
fn a_halt_gives_back_what_waits_for_a_slot() {
    // Every call answered after 400 ms, one call at a time: once the first message's call has
    // reached the provider it holds the slot, and the others wait for it in the coalescer.
    let sim = Simulator::start(
        "127.0.0.1:0",
        Credentials::default(),
        vec![Fault::parse("aliyun=0@400").unwrap()],
    )
    .unwrap();
    let mut acc = accounts(&sim, 1);
    let halt = std::sync::Arc::new(Halt::default());
    acc.halt_with(halt.clone());
    let rt = runtime();
    let account = acc.get(acc.index("aliyun").unwrap());
    let first = message(0, MsgType::Notice, &numbers(0));
    let later: Vec<SendBatch> = (1..4)
        .map(|i| message(i, MsgType::Notice, &numbers(i)))
        .collect();
    let (first_out, later_out) = rt.block_on(async {
        let first_send = account.send(&first);
        let later_sends = async {
            until("the first call reached the provider", || sim.arrived() == 1).await;
            let waiting = futures_util::future::join_all(later.iter().map(|m| account.send(m)));
            let raise = async {
                // All four sends past their permits: three of them wait in the coalescer.
                until("every send in flight", || {
                    account.stats.in_flight.load(Ordering::SeqCst) == 4
                })
                .await;
                halt.raise();
            };
            tokio::join!(waiting, raise).0
        };
        tokio::join!(first_send, later_sends)
    });
    assert!(first_out.iter().all(|o| o.is_ok()), "{first_out:?}");
    for o in later_out.iter().flatten() {
        assert!(o.as_ref().unwrap_err().ends_with(NOT_SENT_HALTED), "{o:?}");
    }
    // Only the first message reached the provider; the others were not counted.
    assert_eq!(reached(&sim.received()).len(), 2);
    let stats = account.stats.snapshot();
    assert_eq!((stats.sent, stats.failed), (2, 0));
    sim.stop();
}

/// `n` notices: the first `split` of text `texts.0`, the rest of `texts.1`; message 11 goes to
/// message 10's number written as `same_as_10`, message 5 to a number ending in 0000 (which
/// the simulator refuses number by number, as Tencent and Yunpian answer).
fn notices(n: usize, split: usize, texts: (&str, &str), same_as_10: &str) -> Vec<SendBatch> {
    (0..n)
        .map(|i| {
            let text = if i < split { texts.0 } else { texts.1 };
            let to = match i {
                11 => same_as_10.to_string(),
                5 => "13911110000".to_string(),
                _ => format!("139111{i:03}12"),
            };
            let mut b = common::batch(
                &format!("n-{i}"),
                Channel::Sms,
                &format!(r#"{{"content":"{text}"}}"#),
                &[to],
            );
            b.msg_type = MsgType::Notice;
            b
        })
        .collect()
}

/// Message 5 failed with `why` in its reason; every other one was sent.
fn only_the_refused_number_failed(out: &[Vec<Result<(), String>>], why: &str) {
    for (i, o) in out.iter().enumerate() {
        if i == 5 {
            assert!(o[0].as_ref().unwrap_err().contains(why), "{o:?}");
        } else {
            assert_eq!(o, &vec![Ok(())], "message {i}");
        }
    }
}

/// The calls the simulator received, each valid, fewer than `most` of them.
fn calls_made(sim: &Simulator, most: usize) -> Vec<Received> {
    let got = sim.received();
    assert!(got.iter().all(|r| r.valid), "{got:#?}");
    assert!(got.len() < most, "{} calls", got.len());
    got
}

/// Each call's numbers (as `number` writes them) with the text it carried: no number twice in
/// a call, at most `most` in one, and every message's number once with its own text.
fn each_number_once_with_its_text(
    messages: &[SendBatch],
    calls: Vec<(Vec<String>, String)>,
    most: usize,
    number: impl Fn(&str) -> String,
) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (numbers, text) in calls {
        let numbers: Vec<String> = numbers.iter().map(|n| number(n)).collect();
        assert!(
            numbers.len() <= most,
            "{} numbers in one call",
            numbers.len()
        );
        let mut unique = numbers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), numbers.len(), "a number twice in one call");
        seen.extend(numbers.into_iter().map(|n| (n, text.clone())));
    }
    let mut want: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            let content: serde_json::Value = serde_json::from_str(&m.meta.content).unwrap();
            let text = content["content"].as_str().unwrap().to_string();
            (number(&m.receivers[0]), text)
        })
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
}

#[test]
fn tencent_shares_a_call_only_among_messages_of_one_content() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, 2);
    let messages = notices(90, 60, ("sale today", "parcel here"), "13911101012");
    only_the_refused_number_failed(
        &send_with(&acc, "tencent", &messages),
        "IncorrectPhoneNumber",
    );
    let calls = calls_made(&sim, 30)
        .iter()
        .map(|r| {
            let params = r.body["TemplateParamSet"].as_array().unwrap();
            assert_eq!(params.len(), 1);
            let numbers = r.body["PhoneNumberSet"].as_array().unwrap();
            let numbers = numbers.iter().map(|n| n.as_str().unwrap().to_string());
            (numbers.collect(), params[0].as_str().unwrap().to_string())
        })
        .collect();
    let e164 = |n: &str| {
        if n.starts_with('+') {
            n.to_string()
        } else {
            format!("+86{n}")
        }
    };
    each_number_once_with_its_text(&messages, calls, 200, e164);
}

#[test]
fn yunpian_shares_a_call_only_among_messages_of_one_text() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, 2);
    // More of one text than one call's 200 numbers; message 10's number also written +86.
    let texts = ("【tidings】Sale today", "【tidings】Parcel here");
    let messages = notices(340, 300, texts, "+8613911101012");
    only_the_refused_number_failed(&send_with(&acc, "yunpian", &messages), "yunpian_sms: 2 ");
    let calls = calls_made(&sim, 100)
        .iter()
        .map(|r| {
            let numbers = r.body["mobile"].as_str().unwrap().split(',');
            let text = r.body["text"].as_str().unwrap().to_string();
            (numbers.map(String::from).collect(), text)
        })
        .collect();
    let national = |n: &str| n.trim_start_matches("+86").to_string();
    each_number_once_with_its_text(&messages, calls, 200, national);
    let stats = acc.get(acc.index("yunpian").unwrap()).stats.snapshot();
    assert!(stats.shared_calls > 0, "{stats:?}");
    sim.stop();
}

#[test]
fn a_new_runtime_gets_a_new_coalescer() {
    // Each send on a runtime of its own (the coalescer's task ends with the first one's).
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, 2);
    for i in 0..3 {
        let out = common::send(&acc, "aliyun", &message(i, MsgType::Notice, &numbers(i)));
        assert_eq!(out, vec![Ok(()), Ok(())], "send {i}");
    }
    assert_eq!(reached(&sim.received()).len(), 6);
    sim.stop();
}
