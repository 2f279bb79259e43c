//! A provider simulator owned by the project: HTTP on 127.0.0.1 that checks what each
//! provider's real API checks — signature, credentials, required fields — records every
//! request it accepted, and can answer with faults (429, 5xx, slow) to rehearse retries.
//!
//! Each provider lives under its own prefix, so an account points at it with
//! `endpoint = "http://127.0.0.1:PORT/<prefix>"`: `/dingtalk`, `/feishu`, `/wecom`,
//! `/tencent`, `/aliyun`, `/webhook`, and the token-based ones in [`apps`]: `/dingapp`,
//! `/wecomapp`, `/wechat`, `/getui`, `/yunpian`, `/alipay`.
//!
//! Receivers that rehearse a provider's per-receiver answers: SMS numbers ending in `0000`
//! (Tencent, Yunpian: incorrect number; Aliyun, which answers one code per call:
//! `isv.MOBILE_NUMBER_ILLEGAL` for the whole call), WeCom users `bad-*` (`invaliduser`), WeChat openids
//! `unfollowed*` (43004), `refused*` (43101) and `busyonce*` (45047 the first time, accepted
//! after), Alipay users `unknown*` (USER_NOT_EXIST). A rejected signature gets the provider's own error
//! answer (DingTalk 310000, Feishu 19021, Tencent `AuthFailure.SignatureFailure`, Aliyun
//! `SignatureDoesNotMatch`, webhook HTTP 401).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::any;
use serde_json::{Value, json};

use crate::util::server;
use crate::util::sign::{self, Tc3Request};

mod apps;

/// One request as the providers' checks read it.
pub(crate) struct Request {
    /// Path and query.
    url: String,
    headers: HeaderMap,
}

impl Request {
    /// A header's value (`""` when absent or not text); names compare case-insensitively.
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

/// The credentials the simulator expects (the accounts under test must use the same).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// DingTalk robot access token and secret.
    pub dingtalk: (String, String),
    /// Feishu hook id and secret.
    pub feishu: (String, String),
    /// WeCom robot key.
    pub wecom_key: String,
    /// Tencent SecretId and SecretKey.
    pub tencent: (String, String),
    /// Aliyun AccessKeyId and AccessKeySecret.
    pub aliyun: (String, String),
    /// Webhook HMAC secret.
    pub webhook_secret: String,
    /// DingTalk app key, secret and agent id (work notice).
    pub dingapp: (String, String, i64),
    /// WeCom corp id, app secret and agent id.
    pub wecomapp: (String, String, i64),
    /// WeChat app id and secret (official account and mini program).
    pub wechat: (String, String),
    /// GeTui app id, app key and master secret.
    pub getui: (String, String, String),
    /// Yunpian API key.
    pub yunpian_apikey: String,
    /// Alipay app id and the app's RSA private key (the simulator checks with its public
    /// half).
    pub alipay: (String, String),
}

impl Default for Credentials {
    fn default() -> Self {
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        Credentials {
            dingtalk: pair("ding-token", "SECding-secret"),
            feishu: pair("feishu-hook", "feishu-secret"),
            wecom_key: "wecom-key".into(),
            tencent: pair("AKIDsimulated", "tencent-secret-key"),
            aliyun: pair("LTAIsimulated", "aliyun-secret"),
            webhook_secret: "webhook-secret".into(),
            dingapp: ("ding-app-key".into(), "ding-app-secret".into(), 2_000_001),
            wecomapp: ("wecom-corp".into(), "wecom-app-secret".into(), 1_000_002),
            wechat: pair("wx-app-id", "wx-app-secret"),
            getui: (
                "getui-app".into(),
                "getui-key".into(),
                "getui-master".into(),
            ),
            yunpian_apikey: "yunpian-key".into(),
            alipay: ("2021000000000000".into(), sign::TEST_RSA_KEY.to_string()),
        }
    }
}

/// A fault a provider answers with.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The provider prefix, e.g. `tencent`.
    pub provider: String,
    /// HTTP status to answer (0: answer normally, only late).
    pub status: u16,
    /// How many requests get it (`None`: all).
    pub times: Option<u32>,
    /// Delay before answering.
    pub delay: Duration,
}

impl Fault {
    /// Parses `PROVIDER=STATUS[xTIMES][@DELAY_MS]`, e.g. `tencent=503x2`, `feishu=0@3000`.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let bad =
            || format!("fault `{s}`: write PROVIDER=STATUS[xTIMES][@DELAY_MS], e.g. tencent=503x2");
        let (provider, rest) = s.split_once('=').ok_or_else(bad)?;
        let (rest, delay) = match rest.split_once('@') {
            Some((r, d)) => (r, d.parse::<u64>().map_err(|_| bad())?),
            None => (rest, 0),
        };
        let (status, times) = match rest.split_once('x') {
            Some((st, n)) => (st, Some(n.parse::<u32>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        Ok(Fault {
            provider: provider.to_string(),
            status: status.parse().map_err(|_| bad())?,
            times,
            delay: Duration::from_millis(delay),
        })
    }
}

/// A request the simulator received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The provider prefix.
    pub provider: String,
    /// Whether it passed every check.
    pub valid: bool,
    /// What failed, when it did not.
    pub problem: Option<String>,
    /// The request body as JSON (form fields as an object for Aliyun).
    pub body: Value,
    /// Whether it was answered with an injected fault.
    pub faulted: bool,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Requests that arrived (counted before any fault's delay).
    arrived: std::sync::atomic::AtomicU64,
    faults: Mutex<Vec<Fault>>,
    tokens: apps::Tokens,
}

/// A running simulator.
pub struct Simulator {
    server: server::Server,
    shared: Arc<Shared>,
    /// Its address.
    pub addr: SocketAddr,
}

impl Simulator {
    /// Listens on `bind` (port 0 picks one) with `faults`.
    pub fn start(
        bind: &str,
        credentials: Credentials,
        faults: Vec<Fault>,
    ) -> std::io::Result<Simulator> {
        let shared = Arc::new(Shared::default());
        *shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
        let router = Router::new()
            .route("/{provider}", any(answer))
            .route("/{provider}/", any(answer))
            .route("/{provider}/{*rest}", any(answer))
            .with_state((shared.clone(), Arc::new(credentials)));
        let server = server::Server::start_for_any_host(bind, router)?;
        Ok(Simulator {
            addr: server.addr,
            server,
            shared,
        })
    }

    /// The base URL of a provider's prefix.
    pub fn endpoint(&self, provider: &str) -> String {
        format!("http://{}/{provider}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests have arrived, answered or not yet (a delayed answer is counted as
    /// soon as its request is in).
    pub fn arrived(&self) -> u64 {
        self.shared
            .arrived
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes every access token issued so far invalid (as an expiry would): the next send
    /// with one is refused with the provider's invalid-token answer.
    pub fn revoke_tokens(&self) {
        self.shared.tokens.revoke();
    }

    /// How many access tokens were issued.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens.issued()
    }

    /// Stops the server.
    pub fn stop(self) {
        self.server.stop();
    }
}

fn query(url: &str) -> BTreeMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form(q)
}

fn form(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn header(request: &Request, name: &str) -> String {
    request.header(name)
}

/// The answer: status, body, and the check result.
type Checked = (u16, Value, Result<(), String>);

fn check(ok: bool, why: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why.to_string()) }
}

fn fresh(ts_ms: i64) -> bool {
    (crate::util::kit::now_ms() - ts_ms).abs() < 3_600_000
}

fn dingtalk(c: &Credentials, url: &str, body: &Value) -> Checked {
    let q = query(url);
    let ts: i64 = q.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let verdict = check(
        q.get("access_token") == Some(&c.dingtalk.0),
        "wrong access_token",
    )
    .and_then(|()| check(fresh(ts), "timestamp not within an hour"))
    .and_then(|()| {
        check(
            q.get("sign") == Some(&sign::dingtalk_robot(&c.dingtalk.1, ts)),
            "sign does not match",
        )
    })
    .and_then(|()| check(body["msgtype"].is_string(), "no msgtype"));
    match &verdict {
        Ok(()) => (200, json!({"errcode": 0, "errmsg": "ok"}), verdict),
        Err(e) => (
            200,
            json!({"errcode": 310000, "errmsg": format!("sign not match: {e}")}),
            verdict,
        ),
    }
}

fn feishu(c: &Credentials, url: &str, body: &Value) -> Checked {
    let path = url.split('?').next().unwrap_or("");
    let ts: i64 = body["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let verdict = check(
        path.ends_with(&format!("/open-apis/bot/v2/hook/{}", c.feishu.0)),
        "unknown hook",
    )
    .and_then(|()| check(fresh(ts * 1000), "timestamp not within an hour"))
    .and_then(|()| {
        check(
            body["sign"].as_str() == Some(&sign::feishu_robot(&c.feishu.1, ts)),
            "sign does not match",
        )
    })
    .and_then(|()| check(body["content"]["text"].is_string(), "no content.text"));
    match &verdict {
        Ok(()) => (200, json!({"code": 0, "msg": "success"}), verdict),
        Err(e) => (
            200,
            json!({"code": 19021, "msg": format!("sign match fail or timestamp is not within one hour from current time: {e}")}),
            verdict,
        ),
    }
}

fn wecom(c: &Credentials, url: &str, body: &Value) -> Checked {
    let verdict = check(
        query(url).get("key") == Some(&c.wecom_key),
        "invalid webhook key",
    )
    .and_then(|()| check(body["text"]["content"].is_string(), "no text.content"));
    match &verdict {
        Ok(()) => (200, json!({"errcode": 0, "errmsg": "ok"}), verdict),
        Err(e) => (200, json!({"errcode": 93000, "errmsg": e}), verdict),
    }
}

fn tencent(c: &Credentials, request: &Request, raw: &str, body: &Value) -> Checked {
    let ts: i64 = header(request, "X-TC-Timestamp").parse().unwrap_or(0);
    let expected = sign::tc3_authorization(
        &c.tencent.0,
        &c.tencent.1,
        &Tc3Request {
            service: "sms",
            host: &header(request, "Host"),
            action: &header(request, "X-TC-Action"),
            content_type: &header(request, "Content-Type"),
            payload: raw,
            timestamp: ts,
        },
    );
    let verdict = check(
        header(request, "X-TC-Action") == "SendSms",
        "X-TC-Action is not SendSms",
    )
    .and_then(|()| {
        check(
            header(request, "X-TC-Version") == "2021-01-11",
            "X-TC-Version",
        )
    })
    .and_then(|()| check(fresh(ts * 1000), "timestamp expired"))
    .and_then(|()| {
        check(
            header(request, "Authorization") == expected,
            "signature does not match",
        )
    })
    .and_then(|()| check(body["PhoneNumberSet"].is_array(), "no PhoneNumberSet"));
    let numbers = || body["PhoneNumberSet"].as_array().into_iter().flatten();
    let mainland = numbers().filter(|n| n.as_str().is_some_and(|n| n.starts_with("+86")));
    let mixed = (1..numbers().count()).contains(&mainland.count());
    match &verdict {
        // As Tencent: one call is the mainland's numbers or the others', not both.
        Ok(()) if mixed => (
            200,
            json!({"Response": {"Error": {"Code": "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber", "Message": "both mainland and international numbers"}, "RequestId": "sim"}}),
            verdict,
        ),
        Ok(()) => {
            // Numbers ending in 0000 are refused, as an unknown number would be.
            let statuses: Vec<Value> = body["PhoneNumberSet"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
                .map(|n| {
                    if n.ends_with("0000") {
                        json!({"PhoneNumber": n, "Code": "InvalidParameterValue.IncorrectPhoneNumber", "Message": "incorrect phone number"})
                    } else {
                        json!({"PhoneNumber": n, "Code": "Ok", "Message": "send success", "SerialNo": "sim"})
                    }
                })
                .collect();
            (
                200,
                json!({"Response": {"SendStatusSet": statuses, "RequestId": "sim"}}),
                verdict,
            )
        }
        Err(e) => (
            200,
            json!({"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": e}, "RequestId": "sim"}}),
            verdict,
        ),
    }
}

fn aliyun(c: &Credentials, raw: &str) -> Checked {
    let f = form(raw);
    let given = f.get("Signature").cloned().unwrap_or_default();
    let params: Vec<(String, String)> = f
        .iter()
        .filter(|(k, _)| *k != "Signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let action = f.get("Action").map(String::as_str);
    let verdict = check(
        f.get("AccessKeyId") == Some(&c.aliyun.0),
        "InvalidAccessKeyId.NotFound",
    )
    .and_then(|()| check(matches!(action, Some("SendSms" | "SendBatchSms")), "Action"))
    .and_then(|()| {
        check(
            given == sign::aliyun_rpc("POST", &c.aliyun.1, &params),
            "signature does not match",
        )
    })
    .and_then(|()| {
        if action == Some("SendBatchSms") {
            aliyun_batch(&f).map(|_| ())
        } else {
            check(
                f.contains_key("PhoneNumbers") && f.contains_key("TemplateCode"),
                "missing PhoneNumbers or TemplateCode",
            )
        }
    });
    // A number ending in 0000 (as the other SMS providers here refuse it) refuses the whole
    // call, as Aliyun answers `isv.MOBILE_NUMBER_ILLEGAL` for a number it cannot take.
    let numbers: Vec<String> = if action == Some("SendBatchSms") {
        aliyun_batch(&f).unwrap_or_default()
    } else {
        f.get("PhoneNumbers")
            .map(|n| n.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let illegal = numbers.iter().any(|n| n.ends_with("0000"));
    match &verdict {
        Ok(()) if illegal => (
            200,
            json!({"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": "sim"}),
            verdict,
        ),
        Ok(()) => (
            200,
            json!({"Code": "OK", "Message": "OK", "BizId": "sim", "RequestId": "sim"}),
            verdict,
        ),
        Err(e) if e.starts_with("SendBatchSms") => (
            200,
            json!({"Code": "isv.INVALID_PARAMETERS", "Message": e, "RequestId": "sim"}),
            verdict,
        ),
        Err(e) => (
            200,
            json!({"Code": "SignatureDoesNotMatch", "Message": e, "RequestId": "sim"}),
            verdict,
        ),
    }
}

/// A `SendBatchSms` call's numbers, after checking its arrays: JSON arrays of one length (1 to
/// 100) for the numbers, the signatures and the template parameters (objects).
fn aliyun_batch(f: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let array = |k: &str| -> Result<Vec<Value>, String> {
        match f.get(k).map(|v| serde_json::from_str::<Value>(v)) {
            Some(Ok(Value::Array(a))) => Ok(a),
            _ => Err(format!("SendBatchSms: {k} is not a JSON array")),
        }
    };
    let numbers = array("PhoneNumberJson")?;
    let signs = array("SignNameJson")?;
    let params = array("TemplateParamJson")?;
    if numbers.is_empty() || numbers.len() > 100 {
        return Err(format!(
            "SendBatchSms: {} numbers (1 to 100)",
            numbers.len()
        ));
    }
    if signs.len() != numbers.len() || params.len() != numbers.len() {
        return Err(format!(
            "SendBatchSms: {} numbers, {} signatures, {} parameter sets",
            numbers.len(),
            signs.len(),
            params.len()
        ));
    }
    if !f.contains_key("TemplateCode") || !params.iter().all(Value::is_object) {
        return Err("SendBatchSms: missing TemplateCode or a parameter set not an object".into());
    }
    numbers
        .into_iter()
        .map(|n| match n {
            Value::String(s) => Ok(s),
            _ => Err("SendBatchSms: a number is not a string".into()),
        })
        .collect()
}

fn webhook(c: &Credentials, request: &Request, raw: &str) -> Checked {
    let ts: i64 = header(request, "X-Tidings-Timestamp").parse().unwrap_or(0);
    let verdict = check(fresh(ts * 1000), "timestamp expired").and_then(|()| {
        check(
            header(request, "X-Tidings-Signature")
                == sign::webhook(&c.webhook_secret, ts, raw.as_bytes()),
            "signature does not match",
        )
    });
    match &verdict {
        Ok(()) => (200, json!({"ok": true}), verdict),
        Err(e) => (401, json!({"error": e}), verdict),
    }
}

/// Answers a request under a provider's prefix: a fault if one is due (after its delay),
/// else the provider's own check and answer. Every request is recorded.
async fn answer(
    State((shared, credentials)): State<(Arc<Shared>, Arc<Credentials>)>,
    Path(path): Path<BTreeMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    shared
        .arrived
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let provider = path.get("provider").cloned().unwrap_or_default();
    let fault = due_fault(&shared, &provider);
    // Only a fault with a delay waits: a sleep of zero still waits for the timer's next
    // tick (up to a millisecond), which paced every call of a fault without one (the
    // providers bench's failover case: 16 calls in flight, ~8,500 a second).
    if let Some(f) = fault.as_ref().filter(|f| !f.delay.is_zero()) {
        tokio::time::sleep(f.delay).await;
    }
    let request = Request {
        url: uri.to_string(),
        headers,
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    let (status, answer) = judge(&shared, &credentials, &request, provider, fault, raw);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(answer),
    )
}

/// The first fault of `provider` with tries left (one is used up).
fn due_fault(shared: &Shared, provider: &str) -> Option<Fault> {
    let mut faults = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    let hit = faults
        .iter_mut()
        .find(|f| f.provider == provider && f.times != Some(0))?;
    if let Some(n) = hit.times.as_mut() {
        *n -= 1;
    }
    Some(hit.clone())
}

/// Checks a request as its provider would, records it, and gives the status and answer.
fn judge(
    shared: &Shared,
    c: &Credentials,
    request: &Request,
    provider: String,
    fault: Option<Fault>,
    raw: String,
) -> (u16, Value) {
    let url = &request.url;
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let (status, answer, verdict) = match provider.as_str() {
        "dingtalk" => dingtalk(c, url, &body),
        "feishu" => feishu(c, url, &body),
        "wecom" => wecom(c, url, &body),
        "tencent" => tencent(c, request, &raw, &body),
        "aliyun" => aliyun(c, &raw),
        "webhook" => webhook(c, request, &raw),
        "dingapp" => apps::dingapp(c, &shared.tokens, url, &body),
        "wecomapp" => apps::wecomapp(c, &shared.tokens, url, &body),
        "wechat" => apps::wechat(c, &shared.tokens, url, &body),
        "getui" => apps::getui(c, &shared.tokens, request, url, &body),
        "yunpian" => apps::yunpian(c, url, &raw),
        "alipay" => apps::alipay(c, &raw),
        _ => (
            404,
            json!({"error": "unknown provider prefix"}),
            Err("unknown provider".into()),
        ),
    };
    let faulted = fault.as_ref().is_some_and(|f| f.status != 0);
    let recorded_body = if ["aliyun", "yunpian", "alipay"].contains(&provider.as_str()) {
        Value::Object(
            form(&raw)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    } else {
        body
    };
    shared
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            provider,
            valid: verdict.is_ok(),
            problem: verdict.err(),
            body: recorded_body,
            faulted,
        });
    match &fault {
        Some(f) if f.status != 0 => (f.status, json!({"error": "injected fault"})),
        _ => (status, answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        let f = Fault::parse("tencent=503x2@10").unwrap();
        assert_eq!(
            (f.provider.as_str(), f.status, f.times, f.delay),
            ("tencent", 503, Some(2), Duration::from_millis(10))
        );
        let f = Fault::parse("aliyun=500").unwrap();
        assert_eq!(f.times, None);
        assert!(Fault::parse("nope").is_err());
    }
}
