//! Aliyun SMS (`SendSms` and `SendBatchSms`, dysmsapi 2017-05-25, RPC style): the query is
//! signed with HMAC-SHA1 over the sorted, percent-encoded parameters (SignatureVersion 1.0).
//! A message is one `SendSms` call for all its numbers (comma-separated); several messages
//! of the account (notices and marketing, not verification codes) may share one
//! `SendBatchSms` call of up to 100 numbers, each number with its own signature and
//! template parameters (`PhoneNumberJson`, `SignNameJson`, `TemplateParamJson`). Either way
//! the answer is one `Code` for the call.

use std::borrow::Cow;

use serde::Deserialize;
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{
    Delivered, Dial, Provider, content, dialled, endpoint, endpoint_url, field, now_ms, url_checked,
};
use crate::util::retry::SendError;
use crate::util::sign;

/// `settings` of an `aliyun_sms` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliyunSmsConfig {
    /// AccessKey id. Example: `"${ALIYUN_ACCESS_KEY_ID}"`.
    pub access_key_id: String,
    /// AccessKey secret. Example: `"${ALIYUN_ACCESS_KEY_SECRET}"`.
    pub access_key_secret: String,
    /// The approved signature. Example: `"阿里云短信测试"`.
    pub sign_name: String,
    /// The approved template code. Example: `"SMS_154950909"`.
    pub template_code: String,
    /// Region. Default `cn-hangzhou`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Base URL. Default `https://dysmsapi.aliyuncs.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_region() -> String {
    "cn-hangzhou".into()
}

/// An Aliyun SMS account.
#[derive(Debug)]
pub struct AliyunSms {
    config: AliyunSmsConfig,
    client: reqwest::Client,
    /// `{endpoint}/`, parsed once.
    url: reqwest::Url,
    /// The job region's country calling code (86 unless told: [`Provider::dial_with`]).
    calling_code: u16,
}

const NAME: &str = "aliyun_sms";
const DEFAULT_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com";

impl AliyunSms {
    /// An account sending through `client`; an error names its `endpoint`.
    pub fn new(config: AliyunSmsConfig, client: reqwest::Client) -> Result<AliyunSms, String> {
        let url = endpoint_url(&config.endpoint, DEFAULT_ENDPOINT, "")?;
        Ok(AliyunSms {
            config,
            client,
            url,
            calling_code: 86,
        })
    }

    /// `receivers` as Aliyun takes them: mainland numbers national, others their country
    /// code and number without `+` (its documentation's `8521245567****`).
    fn numbers<'r>(&self, receivers: &'r [Receiver]) -> impl Iterator<Item = Cow<'r, str>> {
        receivers
            .iter()
            .map(|r| dialled(r, self.calling_code, Dial::MainlandNationalElseDigits))
    }

    /// The signed query parameters of a call at `now_ms` with `nonce`.
    pub fn payload(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
        now_ms: i64,
        nonce: &str,
    ) -> Vec<(String, String)> {
        self.signed(
            "SendSms",
            [
                (
                    "PhoneNumbers",
                    self.numbers(receivers).collect::<Vec<_>>().join(","),
                ),
                ("SignName", self.config.sign_name.clone()),
                ("TemplateParam", template_param(batch).to_string()),
                ("OutId", batch.meta.message_id.to_string()),
            ],
            now_ms,
            nonce,
        )
    }

    /// The signed query parameters of a `SendBatchSms` call for several messages at `now_ms`
    /// with `nonce`: one entry per number, each with its message's template parameters.
    pub fn batch_payload(
        &self,
        calls: &[(&SendBatch, &[Receiver])],
        now_ms: i64,
        nonce: &str,
    ) -> Vec<(String, String)> {
        // Each message's parameters made once, each number's entry a reference to them; the
        // three lists written straight from references (no value cloned per number).
        let params: Vec<serde_json::Value> = calls.iter().map(|(b, _)| template_param(b)).collect();
        let numbers: Vec<Cow<str>> = calls
            .iter()
            .flat_map(|(_, receivers)| self.numbers(receivers))
            .collect();
        let each_param: Vec<&serde_json::Value> = calls
            .iter()
            .zip(&params)
            .flat_map(|((_, receivers), p)| std::iter::repeat_n(p, receivers.len()))
            .collect();
        let signs = vec![self.config.sign_name.as_str(); numbers.len()];
        let json = |v: Result<String, serde_json::Error>| {
            v.expect("lists of strings and JSON values are written as JSON")
        };
        self.signed(
            "SendBatchSms",
            [
                ("PhoneNumberJson", json(serde_json::to_string(&numbers))),
                ("SignNameJson", json(serde_json::to_string(&signs))),
                (
                    "TemplateParamJson",
                    json(serde_json::to_string(&each_param)),
                ),
            ],
            now_ms,
            nonce,
        )
    }

    /// `action`'s own parameters with the common ones (key, format, region, signature
    /// method and nonce, template code, timestamp, version) and the signature over them all.
    fn signed<const N: usize>(
        &self,
        action: &str,
        own: [(&str, String); N],
        now_ms: i64,
        nonce: &str,
    ) -> Vec<(String, String)> {
        let common = [
            ("AccessKeyId", self.config.access_key_id.clone()),
            ("Action", action.to_string()),
            ("Format", "JSON".into()),
            ("RegionId", self.config.region.clone()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            ("SignatureNonce", nonce.to_string()),
            ("SignatureVersion", "1.0".into()),
            ("TemplateCode", self.config.template_code.clone()),
            ("Timestamp", timestamp(now_ms)),
            ("Version", "2017-05-25".into()),
        ];
        let mut p: Vec<(String, String)> = common
            .into_iter()
            .chain(own)
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // The signature sorts the parameters itself.
        let signature = sign::aliyun_rpc("POST", &self.config.access_key_secret, &p);
        p.push(("Signature".into(), signature));
        p
    }

    /// Posts signed `params` as a form; the call's answer.
    async fn post(&self, params: &[(String, String)]) -> Result<Delivered, SendError> {
        let form = sign::form(params);
        let request = self
            .client
            .post(self.url.clone())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form);
        let (status, answer) = http::call_raw(NAME, request).await?;
        Self::read(status, &answer)
    }

    /// Reads an answer of any HTTP status: Aliyun's gateway sends its codes with HTTP 400
    /// and 404 (`Throttling.User`, `SignatureDoesNotMatch`, `InvalidAccessKeyId.NotFound`),
    /// so a body with a `Code` is judged by it; one without (a proxy's error page) by the
    /// status.
    pub fn read(status: reqwest::StatusCode, answer: &str) -> Result<Delivered, SendError> {
        let coded =
            serde_json::from_str::<serde_json::Value>(answer).is_ok_and(|v| v["Code"].is_string());
        http::judged(NAME, status, answer, coded, Self::judge)
    }

    /// Reads the answer: one `Code` for the whole call.
    pub fn judge(answer: &str) -> Result<Delivered, SendError> {
        let v: serde_json::Value =
            serde_json::from_str(answer).map_err(|_| http::unreadable(NAME, answer))?;
        let code = v["Code"].as_str().unwrap_or("");
        let text = format!("{NAME}: {code} {}", v["Message"].as_str().unwrap_or(""));
        match code {
            "OK" => Ok(Delivered::All),
            "isv.BUSINESS_LIMIT_CONTROL"
            // A nonce seen before (a retry is signed with a new one).
            | "SignatureNonceUsed"
            | "isp.SYSTEM_ERROR"
            | "ServiceUnavailable" => Err(SendError::Transient(text)),
            // Every throttle (`Throttling`, `Throttling.User`, `Throttling.Api`, sent with HTTP
            // 400): Aliyun asks for a wait and a retry, not a refusal.
            c if c.starts_with("Throttling") => Err(SendError::Transient(text)),
            c if c.starts_with("InvalidAccessKeyId")
                || c == "SignatureDoesNotMatch"
                || c == "IncompleteSignature" =>
            {
                Err(SendError::Unauthorized(text))
            }
            _ => Err(SendError::Permanent(text)),
        }
    }
}

/// Refusals a single number of a message's call may be at fault for (it is made again in
/// halves of its numbers: [`crate::provider::Remote::send`]).
const ONE_NUMBER: &[&str] = &[
    "isv.MOBILE_NUMBER_ILLEGAL",
    "isv.MOBILE_COUNT_OVER_LIMIT",
    "isv.BUSINESS_LIMIT_CONTROL",
    // A mainland number on an international template (or the other way round).
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
];

/// Refusals of one message's parameter set: every half of its numbers is refused alike, but a
/// shared call is made again in halves of its messages.
const ONE_PARAMETER_SET: &[&str] = &[
    "isv.INVALID_PARAMETERS",
    "isv.INVALID_JSON_PARAM",
    "isv.TEMPLATE_PARAMS_ILLEGAL",
    "isv.PARAM_LENGTH_LIMIT",
    "isv.PARAM_NOT_SUPPORT_URL",
    "isv.BLACK_KEY_CONTROL_LIMIT",
];

/// The `Code` of a refusal (its reason reads "aliyun_sms: CODE message").
fn code_of(error: &SendError) -> &str {
    error.reason().split_whitespace().nth(1).unwrap_or("")
}

impl Provider for AliyunSms {
    type Settings = AliyunSmsConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::Sms]);
    // SendSms: at most 1000 numbers per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(1000);
    // SendBatchSms: at most 100 numbers per request, each with its own parameters.
    const MESSAGES_PER_CALL: Option<usize> = Some(100);

    // One `Code` answers a whole call: these name a number or a parameter of one message
    // (or one number's rate limit), so a shared call refused with them is made again in
    // halves; the others (credentials, balance, signature, template, the account's daily cap
    // `isv.DAY_LIMIT_CONTROL`: halving that made ~2n calls all refused alike) are the
    // account's.
    fn refuses_one(error: &SendError) -> bool {
        let code = code_of(error);
        ONE_NUMBER.contains(&code) || ONE_PARAMETER_SET.contains(&code)
    }

    fn refuses_one_number(error: &SendError) -> bool {
        ONE_NUMBER.contains(&code_of(error))
    }

    fn validate(key: &str, settings: &Self::Settings) -> Result<(), String> {
        url_checked(key, endpoint_url(&settings.endpoint, DEFAULT_ENDPOINT, ""))
    }

    fn base_url(settings: &AliyunSmsConfig) -> String {
        endpoint(&settings.endpoint, DEFAULT_ENDPOINT)
    }

    fn build(
        settings: AliyunSmsConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        AliyunSms::new(settings, client)
    }

    fn dial_with(&mut self, calling_code: u16) {
        self.calling_code = calling_code;
    }

    /// Sends one message to its numbers.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let now = now_ms();
        let nonce = nonce(batch.meta.message_id.as_str(), now);
        let params = self.payload(batch, receivers, now, &nonce);
        self.post(&params).await
    }

    /// Sends several messages in one `SendBatchSms` call.
    async fn send_many(&self, calls: &[(&SendBatch, &[Receiver])]) -> Result<Delivered, SendError> {
        let now = now_ms();
        let first = calls
            .first()
            .map_or("", |(b, _)| b.meta.message_id.as_str());
        let nonce = nonce(first, now);
        let params = self.batch_payload(calls, now, &nonce);
        self.post(&params).await
    }
}

/// A `SignatureNonce` no other call of the account makes (Aliyun refuses a repeated one with
/// `SignatureNonceUsed`): one message's receivers are sent from several workers and
/// processes at once, and a call is made again on a retry, so the message and the
/// millisecond are not enough; a number this process drew at random and a count of its calls
/// are added.
fn nonce(message_id: &str, now_ms: i64) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: LazyLock<u64> = LazyLock::new(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("{message_id}-{now_ms}-{:016x}-{call}", *PROCESS)
}

/// A message's template parameters: its content model's `params` object, else its text as
/// `content`.
fn template_param(batch: &SendBatch) -> serde_json::Value {
    let model = content(batch);
    match model.get("params") {
        Some(p @ serde_json::Value::Object(_)) => p.clone(),
        _ => serde_json::json!({"content": field(&model, "content")}),
    }
}

/// `Timestamp`: UTC, ISO 8601 to the second (`2017-07-12T02:42:19Z`). Written by chrono's
/// RFC 3339 writer, not through a format string read again on every call (~3,400
/// instructions a call; test `the_timestamp_is_iso_8601_to_the_second`).
fn timestamp(now_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
