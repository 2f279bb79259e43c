//! The token-based providers (DingTalk work notice, WeCom app, WeChat official account and
//! mini program, GeTui) and Yunpian SMS against the project's simulator: tokens are fetched
//! once and reused, fetched again when the provider says they are no longer valid, a wrong
//! app secret ends in SEND_FAIL without retries, and per-receiver refusals fail alone.

mod common;

use std::collections::BTreeMap;

use common::send;
use tidings_model::Channel;
use tidings_sinks::SendBatch;
use tidings_sinks::account::{AccountConfig, Accounts};
use tidings_sinks::simulator::{Credentials, Simulator};

fn batch(channel: Channel, content: &str, receivers: &[&str]) -> SendBatch {
    common::batch("m-token-1", channel, content, receivers)
}

fn accounts(sim: &Simulator, secret_suffix: &str) -> Accounts {
    let c = Credentials::default();
    let text = format!(
        r#"
[ding-app]
channel = "ding_ding_work_notice"
provider = "dingtalk_work_notice"
settings = {{ app_key = "{}", app_secret = "{}{secret_suffix}", agent_id = {}, endpoint = "{}" }}
[wecom-app]
channel = "enterprise_we_chat"
provider = "wecom_app"
settings = {{ corp_id = "{}", corp_secret = "{}{secret_suffix}", agent_id = {}, endpoint = "{}" }}
[oa]
channel = "official_accounts"
provider = "wechat_official_account"
settings = {{ app_id = "{}", app_secret = "{}{secret_suffix}", endpoint = "{}" }}
[mini]
channel = "mini_program"
provider = "wechat_mini_program"
settings = {{ app_id = "{}", app_secret = "{}{secret_suffix}", endpoint = "{}" }}
[getui]
channel = "push"
provider = "getui"
settings = {{ app_id = "{}", app_key = "{}", master_secret = "{}{secret_suffix}", endpoint = "{}" }}
[yunpian]
channel = "sms"
provider = "yunpian_sms"
settings = {{ apikey = "{}{secret_suffix}", endpoint = "{}" }}
[yunpian-tpl]
channel = "sms"
provider = "yunpian_sms"
settings = {{ apikey = "{}{secret_suffix}", tpl_id = 1, endpoint = "{}" }}
"#,
        c.dingapp.0,
        c.dingapp.1,
        c.dingapp.2,
        sim.endpoint("dingapp"),
        c.wecomapp.0,
        c.wecomapp.1,
        c.wecomapp.2,
        sim.endpoint("wecomapp"),
        c.wechat.0,
        c.wechat.1,
        sim.endpoint("wechat"),
        c.wechat.0,
        c.wechat.1,
        sim.endpoint("wechat"),
        c.getui.0,
        c.getui.1,
        c.getui.2,
        sim.endpoint("getui"),
        c.yunpian_apikey,
        sim.endpoint("yunpian"),
        c.yunpian_apikey,
        sim.endpoint("yunpian"),
    );
    common::accounts(&text)
}

/// Another throwaway RSA key (generated with `openssl genpkey` for this test only): valid,
/// but not the app's.
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDZOsJDhWWECS7P\nduBD2iG9Ew3+WmXEcfcDTQYLfFOZe11Jr4HLEzpEBJXP7MBj3IiFGI8M93v162Yo\nlJie3OLaN+UlxJG77PlPFaf54lyut4micsTH6B+nau/v7IbaqeXI5FdlPJ3TcPiY\ntc3NloD4fcql1NLAuQv9RwBfPlKCpOLXYhVPoTZHQo1C4bpWDvEcKmkkOBHHUeSw\n6/2dOhGFTtIzkn58l/QUSYCVvYiQduIXIGQb9WGQfTUUrTqIW9OaB5zWhgDgFZ5w\n58DcNUx/iaHY8b+RfnIupLpZSrRKURNQTHKfLavnLzRkJE8Ba+Jya6wNU7bsHYz8\n1psWJ5ylAgMBAAECggEAAyepk1HSDKpvN0MbmM/8elNiQo7rzpZqiIRZKqYPQikj\nICX5GEJ5faPAoDdo6XmvLbuB7TwGD04zDiem26DZS0zW9OLbth8u9rikwR7xB+tc\nks7mK7PhFq6ZhuUiygAhhE/ZMwHQoVdDNx+zyuEeng38mpo6xsFu06qHR2BohBwo\nW+bSSxUfKKY8GRIYQlEuPa1lLfQiH11MttY4V8mlstcWeZDAkTv/QiaJnjMN3SMv\nswwjUi2B48CYI9iFdKomj26RP8pbcC6xOPAiPTZiNvvFMXUB63qTUkvWSKlsOgWV\nPx1Pz28m1oP0VAecNWYBL03BLY+RIw/8u5CRgaZ50QKBgQDtJqhLeZ1532ZljAbk\nULZGpv+hXlRUODPn2OGAuF3LjvN9a/d3/y/bGlfSqSigO+3s17RiAzMExbMdp9I7\n+aV5cqGLxH2s/0+F0jjNVDJbgCzqxBixy7hZRwRCrCB1EcAqrplFVXcK3cGM1Sad\nblnIv7+01wjGmq7Ljuz/8FytlwKBgQDqfsGqFAIymQUdwDpqAABATgVLJvgRMAna\nbXJQtnxP40t+s5tLLsQooTJKkBEgCNnjPyNiZE/ivp1bUVxl/FGSv0E2OwUS4Rbr\nfN/djyQSZsMy2Ho4oMgmkAJyEc9zkkL9uglYWrD3WzBE6ggnaQhgxYbWR4oboFIL\nRHKCXkFHIwKBgQCNPZDOIshfZWYe5J7WLBvjSGLHQN8IqdCALPNhLmzuZ10tPbhN\nh3aBD9duZ8ECba7ueCm+lhk0pmpfJyxW/ABJrLP6AjS3a/d4xBOAdrznMheOWuw6\nOBK7WUh4TPunvcKtqP8wBA66MgisT+aHrMlcfpc2pTtczZN9OMp+RDFuUQKBgQCx\nJk1cFX2Lh/pLfXsjtRh7e/WXzrq9EVOARgqEWzgSih3we/Mnmw7pus1pcujdEJK6\nkGpE3I9VNrdd01tAWJuvhvjW5UNx/cX45P+iO47+r89rTAsZWK2cJFMUpcvY/XfK\ngo6oxurGE4elqD+8tiZ0JQU2QBlfwX/5rx3qyxX5jQKBgGOaeemFQevfGK8SmYb+\nTCUbaVEWogW/O1gZ9kttdpkljC48/U5XfyX5Yt1e7DyqG4DsMGYHw31VOpn+rend\nFPf5J98gc048gUiw48vJO497/+dP/DJSNiwHmX02RaPZaubfI7ZB0Sd8iltMK4bF\nSkONBZtde0huaCaMMkCO3Oft\n-----END PRIVATE KEY-----";

const OA: &str = r#"{"templateId":"TMPL_PAYMENT","url":"https://shop.example.com/o/1","data":{"first":"Paid","keyword1":"o-1"}}"#;
const MINI: &str =
    r#"{"templateId":"TMPL_SUB","page":"pages/order?id=1","map":{"thing1":"Order shipped"}}"#;

fn every_channel_once(acc: &Accounts) {
    let text = r#"{"content":"build 7 done"}"#;
    let push = r#"{"title":"Sale","content":"20% off","url":"https://shop.example.com/sale"}"#;
    assert_eq!(
        send(
            acc,
            "ding-app",
            &batch(Channel::DingDingWorkNotice, text, &["u1", "u2"])
        ),
        vec![Ok(()), Ok(())]
    );
    let out = send(
        acc,
        "wecom-app",
        &batch(Channel::EnterpriseWeChat, text, &["zhangsan", "bad-lisi"]),
    );
    assert_eq!(out[0], Ok(()));
    assert!(
        out[1]
            .as_ref()
            .unwrap_err()
            .contains("invaliduser bad-lisi"),
        "{out:?}"
    );
    let out = send(
        acc,
        "oa",
        &batch(Channel::OfficialAccounts, OA, &["openid-1", "unfollowed-2"]),
    );
    assert_eq!(out[0], Ok(()));
    assert!(out[1].as_ref().unwrap_err().contains("43004"), "{out:?}");
    let out = send(
        acc,
        "mini",
        &batch(Channel::MiniProgram, MINI, &["openid-1", "refused-2"]),
    );
    assert_eq!(out[0], Ok(()));
    assert!(out[1].as_ref().unwrap_err().contains("43101"), "{out:?}");
    assert_eq!(
        send(acc, "getui", &batch(Channel::Push, push, &["cid-1"])),
        vec![Ok(())]
    );
    assert_eq!(
        send(
            acc,
            "getui",
            &batch(Channel::Push, push, &["cid-1", "cid-2", "cid-3"])
        ),
        vec![Ok(()), Ok(()), Ok(())]
    );
    let sms = batch(
        Channel::Sms,
        r#"{"content":"【tidings】code 4711"}"#,
        &["13800138000", "13900000000"],
    );
    for account in ["yunpian", "yunpian-tpl"] {
        let out = send(acc, account, &sms);
        assert_eq!(out[0], Ok(()));
        assert!(
            out[1].as_ref().unwrap_err().contains("yunpian_sms: 2"),
            "{out:?}"
        );
    }
}

#[test]
fn tokens_are_reused_refreshed_when_revoked_and_every_call_is_valid() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, "");
    every_channel_once(&acc);
    // One token per app (the official account and mini program are separate accounts).
    assert_eq!(sim.tokens_issued(), 5);
    every_channel_once(&acc);
    assert_eq!(sim.tokens_issued(), 5, "cached tokens are reused");
    // Every token expires at once: each app is refused once, fetches a new token, and sends.
    sim.revoke_tokens();
    every_channel_once(&acc);
    assert_eq!(sim.tokens_issued(), 10);

    let got = sim.received();
    let refused = got.iter().filter(|r| !r.valid).count();
    // The five refusals of a revoked token are the only invalid calls.
    assert_eq!(
        refused,
        5,
        "{:#?}",
        got.iter().filter(|r| !r.valid).collect::<Vec<_>>()
    );
    for r in got.iter().filter(|r| !r.valid) {
        assert_eq!(
            r.problem.as_deref().map(|p| p.contains("token")),
            Some(true),
            "{r:?}"
        );
    }
    let oa = got
        .iter()
        .find(|r| {
            r.provider == "wechat" && r.body["touser"] == "openid-1" && r.body["url"].is_string()
        })
        .unwrap();
    assert_eq!(oa.body["data"]["keyword1"]["value"], "o-1");
    let tpl = got
        .iter()
        .find(|r| r.provider == "yunpian" && r.body["tpl_id"] == "1")
        .unwrap();
    assert_eq!(
        tpl.body["tpl_value"],
        "%23content%23=%E3%80%90tidings%E3%80%91code%204711"
    );
    sim.stop();
}

#[test]
fn a_wrong_app_secret_fails_without_retries() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, "-wrong");
    let text = r#"{"content":"x"}"#;
    for (name, channel, content) in [
        ("ding-app", Channel::DingDingWorkNotice, text),
        ("wecom-app", Channel::EnterpriseWeChat, text),
        ("oa", Channel::OfficialAccounts, OA),
        ("getui", Channel::Push, text),
        ("yunpian", Channel::Sms, text),
    ] {
        let before = sim.received().len();
        let out = send(&acc, name, &batch(channel, content, &["r-1"]));
        let reason = out[0].as_ref().unwrap_err();
        assert!(!reason.contains("attempts"), "{name}: retried: {reason}");
        assert_eq!(
            sim.received().len(),
            before + 1,
            "{name}: one call, no retry"
        );
    }
    assert_eq!(sim.tokens_issued(), 0);
    sim.stop();
}

#[test]
fn alipay_calls_are_rsa2_signed_and_a_wrong_key_is_refused() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let c = Credentials::default();
    let account = |key: &str| {
        let text = format!(
            "[alipay]\nchannel = \"alipay_mini_program\"\nprovider = \"alipay_mini_program\"\n\
             settings = {{ app_id = \"{}\", private_key = \"\"\"{key}\"\"\", endpoint = \"{}\" }}\n",
            c.alipay.0,
            sim.endpoint("alipay")
        );
        common::accounts(&text)
    };
    let model = r#"{"templateId":"TPL_1","page":"pages/index","data":{"keyword1":"Order 1"}}"#;
    let acc = account(&c.alipay.1);
    let out = send(
        &acc,
        "alipay",
        &batch(
            Channel::AlipayMiniProgram,
            model,
            &["2088000000000001", "unknown-2"],
        ),
    );
    assert_eq!(out[0], Ok(()));
    assert!(
        out[1].as_ref().unwrap_err().contains("USER_NOT_EXIST"),
        "{out:?}"
    );
    let got = sim.received();
    assert!(got.iter().all(|r| r.valid), "{got:#?}");
    let biz: serde_json::Value =
        serde_json::from_str(got[0].body["biz_content"].as_str().unwrap()).unwrap();
    assert_eq!(biz["user_template_id"], "TPL_1");

    // Another key (a valid one, not the app's): the signature does not verify, no retry.
    let other = OTHER_KEY.to_string();
    let acc = account(&other);
    let before = sim.received().len();
    let out = send(
        &acc,
        "alipay",
        &batch(Channel::AlipayMiniProgram, model, &["2088000000000001"]),
    );
    let reason = out[0].as_ref().unwrap_err();
    assert!(
        reason.contains("invalid-signature") && !reason.contains("attempts"),
        "{reason}"
    );
    assert_eq!(sim.received().len(), before + 1);
    // A key that is not a key is a job-file error naming the setting.
    let text = "[a]\nchannel = \"alipay_mini_program\"\nprovider = \"alipay_mini_program\"\nsettings = { app_id = \"x\", private_key = \"bm90IGEga2V5\" }\n";
    let configs: BTreeMap<String, AccountConfig> = toml::from_str(text).unwrap();
    let problems = configs["a"].validate("accounts.a");
    assert!(
        problems[0].contains("accounts.a.settings.private_key"),
        "{problems:?}"
    );
    sim.stop();
}

#[test]
fn a_transient_refusal_retries_only_the_unsettled_receivers() {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), vec![]).unwrap();
    let acc = accounts(&sim, "");
    let out = send(
        &acc,
        "oa",
        &batch(
            Channel::OfficialAccounts,
            OA,
            &["openid-1", "busyonce-2", "openid-3"],
        ),
    );
    assert_eq!(out, vec![Ok(()), Ok(()), Ok(())]);
    let got = sim.received();
    let calls = |to: &str| {
        got.iter()
            .filter(|r| r.provider == "wechat" && r.body["touser"] == to)
            .count()
    };
    // openid-1 was accepted before busyonce-2 was refused: it is not sent again.
    assert_eq!(
        (calls("openid-1"), calls("busyonce-2"), calls("openid-3")),
        (1, 2, 1)
    );
    assert_eq!(
        acc.get(acc.index("oa").unwrap()).stats.snapshot().retries,
        1
    );
    sim.stop();
}
