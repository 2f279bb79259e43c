//! Every network provider against the project's simulator (HTTP on 127.0.0.1): requests
//! arrive signed as documented, faults are retried or end in a failure with the provider's
//! reason, per-number answers map to receivers, and a wrong secret is not retried.

mod common;

use common::send;
use tidings_model::Channel;
use tidings_sinks::SendBatch;
use tidings_sinks::account::Accounts;
use tidings_sinks::simulator::{Credentials, Fault, Simulator};

fn batch(channel: Channel, content: &str, receivers: &[&str]) -> SendBatch {
    common::batch("m-1", channel, content, receivers)
}

fn accounts(sim: &Simulator, wrong_secret: bool) -> Accounts {
    let c = Credentials::default();
    let secret = if wrong_secret {
        "not-the-secret".to_string()
    } else {
        c.webhook_secret.clone()
    };
    let text = format!(
        r#"
[ding]
channel = "ding_ding_robot"
provider = "dingtalk_robot"
settings = {{ access_token = "{}", secret = "{}", endpoint = "{}" }}
[feishu]
channel = "fei_shu_robot"
provider = "feishu_robot"
settings = {{ hook = "{}", secret = "{}", endpoint = "{}" }}
[wecom]
channel = "enterprise_we_chat_robot"
provider = "wecom_robot"
settings = {{ key = "{}", endpoint = "{}" }}
[tencent]
channel = "sms"
provider = "tencent_sms"
attempts = 3
settings = {{ secret_id = "{}", secret_key = "{}", sdk_app_id = "1400006666", sign_name = "tidings", template_id = "1110", endpoint = "{}" }}
[aliyun]
channel = "sms"
provider = "aliyun_sms"
attempts = 3
settings = {{ access_key_id = "{}", access_key_secret = "{}", sign_name = "tidings", template_code = "SMS_1", endpoint = "{}" }}
[hook]
channel = "webhook"
provider = "webhook"
settings = {{ url = "{}", secret = "{secret}" }}
"#,
        c.dingtalk.0,
        c.dingtalk.1,
        sim.endpoint("dingtalk"),
        c.feishu.0,
        c.feishu.1,
        sim.endpoint("feishu"),
        c.wecom_key,
        sim.endpoint("wecom"),
        c.tencent.0,
        c.tencent.1,
        sim.endpoint("tencent"),
        c.aliyun.0,
        c.aliyun.1,
        sim.endpoint("aliyun"),
        sim.endpoint("webhook"),
    );
    common::accounts(&text)
}

#[test]
fn every_provider_arrives_signed_and_faults_end_right() {
    let sim = Simulator::start(
        "127.0.0.1:0",
        Credentials::default(),
        vec![
            Fault::parse("tencent=503x2").unwrap(),
            Fault::parse("aliyun=500").unwrap(),
        ],
    )
    .unwrap();
    let acc = accounts(&sim, false);
    let text = r#"{"content":"build 7 done"}"#;
    assert_eq!(
        send(
            &acc,
            "ding",
            &batch(Channel::DingDingRobot, text, &["13800138000"])
        ),
        vec![Ok(())]
    );
    assert_eq!(
        send(
            &acc,
            "feishu",
            &batch(Channel::FeiShuRobot, text, &["@all"])
        ),
        vec![Ok(())]
    );
    assert_eq!(
        send(
            &acc,
            "wecom",
            &batch(Channel::EnterpriseWeChatRobot, text, &["@all"])
        ),
        vec![Ok(())]
    );
    assert_eq!(
        send(&acc, "hook", &batch(Channel::Webhook, text, &["svc-a"])),
        vec![Ok(())]
    );
    // Two 503s, then through: retried within the budget of 3; the number ending in 0000 is
    // refused by the provider, the other sent.
    let sms = batch(
        Channel::Sms,
        r#"{"content":"code 4711"}"#,
        &["13800138000", "13900000000"],
    );
    let out = send(&acc, "tencent", &sms);
    assert_eq!(out[0], Ok(()));
    assert!(
        out[1]
            .as_ref()
            .unwrap_err()
            .contains("IncorrectPhoneNumber"),
        "{out:?}"
    );
    // Always 500: SEND_FAIL with the provider's answer after 3 attempts.
    let out = send(&acc, "aliyun", &sms);
    let reason = out[0].as_ref().unwrap_err();
    assert!(
        reason.contains("HTTP 500") && reason.contains("after 3 attempts"),
        "{reason}"
    );
    let stats = acc.get(acc.index("tencent").unwrap()).stats.snapshot();
    assert_eq!(stats.retries, 2);
    // Mainland and other numbers, which Tencent refuses in one call: a call each, both sent,
    // each answer to its numbers.
    let mixed = batch(
        Channel::Sms,
        r#"{"content":"code 4711"}"#,
        &["+85291234567", "13800138000", "+85291230000"],
    );
    let out = send(&acc, "tencent", &mixed);
    assert_eq!(out[..2], [Ok(()), Ok(())], "{out:?}");
    assert!(
        out[2]
            .as_ref()
            .unwrap_err()
            .contains("IncorrectPhoneNumber")
    );

    let got = sim.received();
    let count = |p: &str| got.iter().filter(|r| r.provider == p).count();
    assert_eq!((count("tencent"), count("aliyun")), (5, 3), "{got:#?}");
    for r in &got {
        assert!(
            r.valid,
            "{} rejected: {:?} {}",
            r.provider, r.problem, r.body
        );
    }
    let ding = got.iter().find(|r| r.provider == "dingtalk").unwrap();
    assert_eq!(ding.body["at"]["atMobiles"][0], "13800138000");
    let ali = got.iter().find(|r| r.provider == "aliyun").unwrap();
    assert_eq!(ali.body["PhoneNumbers"], "13800138000,13900000000");
    assert_eq!(ali.body["TemplateParam"], r#"{"content":"code 4711"}"#);
    sim.stop();
}

#[test]
fn a_wrong_secret_is_refused_and_not_retried() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, true);
    let out = send(
        &acc,
        "hook",
        &batch(Channel::Webhook, r#"{"content":"x"}"#, &["svc"]),
    );
    assert!(out[0].as_ref().unwrap_err().contains("HTTP 401"), "{out:?}");
    let got = sim.received();
    assert_eq!(got.len(), 1, "an authentication failure is not retried");
    assert!(!got[0].valid);
    sim.stop();
}

/// A webhook whose URL answers with a redirect fails with that status: a client following it
/// would send a GET without the message (301–303 turn a POST into one) and count the 200
/// there as delivered.
#[test]
fn a_redirect_fails_the_call_and_is_not_followed() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming() {
            let mut reader = BufReader::new(stream.unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            if first.starts_with("QUIT") {
                return seen;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            std::io::Read::read_exact(&mut reader, &mut vec![0; length]).unwrap();
            let answer = if first.contains("/hook ") {
                "HTTP/1.1 301 Moved Permanently\r\nLocation: /moved\r\n"
            } else {
                "HTTP/1.1 200 OK\r\n"
            };
            let mut stream = reader.into_inner();
            write!(
                stream,
                "{answer}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            seen.push(first.trim().to_string());
        }
        seen
    });
    let acc = common::accounts(&format!(
        r#"
[hook]
channel = "webhook"
provider = "webhook"
settings = {{ url = "http://{addr}/hook", secret = "s" }}
"#
    ));
    let out = send(
        &acc,
        "hook",
        &batch(Channel::Webhook, r#"{"content":"x"}"#, &["svc"]),
    );
    write!(std::net::TcpStream::connect(addr).unwrap(), "QUIT\r\n").unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen, ["POST /hook HTTP/1.1"]);
    let reason = out[0].as_ref().unwrap_err();
    assert!(reason.contains("HTTP 301"), "{reason}");
}
