//! Secrets never leave an account: a provider whose endpoint refuses the connection or
//! answers HTTP 500 (echoing what it got, as some gateways do) fails the receivers with a
//! reason that names the provider and the host but none of the account's secrets — path
//! tokens (Feishu hook, webhook paths), query tokens (DingTalk `access_token`, WeCom `key`),
//! userinfo and signing secrets. (Values read from `${ENV}` are covered end to end in
//! dataflows/tests/job_file.rs, which sets the environment of a child process.)

mod common;

use tidings_model::Channel;

/// An HTTP server answering every request with 500 and the request's URL and body. It
/// lives as long as the test process (leaked).
fn echo_500() -> String {
    let router = axum::Router::new().fallback(|uri: axum::http::Uri, body: String| async move {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("no route for {uri} (body {body})"),
        )
    });
    let server = tidings_sinks::util::server::Server::start("127.0.0.1:0", router).unwrap();
    let addr = server.addr;
    std::mem::forget(server);
    format!("http://{addr}")
}

/// An address nothing listens on (a port bound, then released).
fn refused() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

const HOOK: &str = "6f1e2d3c-aaaa-4bbb-8ccc-feishuhook42";
const SECRETS: [&str; 8] = [
    HOOK,
    "FeishuSignSecret",
    "DingAccessToken77",
    "DingSignSecret",
    "WecomRobotKey99",
    "T0123456",
    "XyZwebh00ktoken",
    "hookpa55",
];

fn accounts(base: &str) -> tidings_sinks::account::Accounts {
    common::accounts(&format!(
        r#"
[feishu]
channel = "fei_shu_robot"
provider = "feishu_robot"
attempts = 1
settings = {{ hook = "{HOOK}", secret = "FeishuSignSecret", endpoint = "{base}" }}
[ding]
channel = "ding_ding_robot"
provider = "dingtalk_robot"
attempts = 1
settings = {{ access_token = "DingAccessToken77", secret = "DingSignSecret", endpoint = "{base}" }}
[wecom]
channel = "enterprise_we_chat_robot"
provider = "wecom_robot"
attempts = 1
settings = {{ key = "WecomRobotKey99", endpoint = "{base}" }}
[hook]
channel = "webhook"
provider = "webhook"
attempts = 1
settings = {{ url = "{}/services/T0123456/XyZwebh00ktoken/send", secret = "hookpa55" }}
"#,
        base.replacen("http://", "http://user:hookpa55@", 1)
    ))
}

fn reasons(base: &str) -> Vec<String> {
    let accounts = accounts(base);
    let mut out = Vec::new();
    for (name, channel) in [
        ("feishu", Channel::FeiShuRobot),
        ("ding", Channel::DingDingRobot),
        ("wecom", Channel::EnterpriseWeChatRobot),
        ("hook", Channel::Webhook),
    ] {
        let b = common::batch("m-1", channel, r#"{"content":"hi"}"#, &["@all"]);
        let got = common::send(&accounts, name, &b);
        let reason = got[0].clone().expect_err("the endpoint fails");
        out.push(format!("{name}: {reason}"));
    }
    out
}

fn assert_clean(reasons: &[String], want: &str) {
    for r in reasons {
        assert!(r.contains(want), "{r}");
        for s in SECRETS {
            assert!(!r.contains(s), "secret {s} shown in: {r}");
        }
    }
}

#[test]
fn http_500_reasons_show_no_secret() {
    let reasons = reasons(&echo_500());
    assert_clean(&reasons, "HTTP 500");
    // The echo is still there, its tokens masked: the reason stays useful.
    assert!(
        reasons[0].contains("/open-apis/bot/v2/hook/***"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[3].contains("/services/***/***/send"),
        "{}",
        reasons[3]
    );
}

#[test]
fn refused_connection_reasons_show_no_secret() {
    let reasons = reasons(&refused());
    assert_clean(&reasons, "cannot connect");
    assert!(reasons[0].contains("127.0.0.1"), "{}", reasons[0]);
}

#[test]
fn check_lines_show_no_secret() {
    let accounts = accounts(&refused());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..accounts.len() {
        let line = match rt.block_on(accounts.get(i).check()) {
            Ok(m) | Err(m) => m,
        };
        for s in SECRETS {
            assert!(!line.contains(s), "secret {s} shown in: {line}");
        }
    }
}

#[test]
fn an_unset_variable_names_the_key_and_the_variable() {
    let c: tidings_sinks::account::AccountConfig = toml::from_str(
        "channel = \"webhook\"\nprovider = \"webhook\"\nsettings = { url = \"https://h/x/${TIDINGS_SURELY_UNSET_7}/y\" }\n",
    )
    .unwrap();
    let problems = c.validate("accounts.hook");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("accounts.hook.settings.url: ")
            && problems[0].contains("TIDINGS_SURELY_UNSET_7"),
        "{problems:?}"
    );
    // Read-only checks (sql, report, trace) do not need it.
    assert!(c.validate_as("accounts.hook", false).is_empty());
}
