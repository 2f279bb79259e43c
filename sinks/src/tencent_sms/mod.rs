//! Tencent Cloud SMS (`SendSms`, API 2021-01-11), signed with TC3-HMAC-SHA256: one call for
//! up to 200 numbers, one `SendStatusSet` entry per number. austin's content model: the
//! rendered `content` is the single template parameter unless the model has `params`. One
//! parameter set goes to every number of a call, so several messages share a call only when
//! their content is the same (notices and marketing; `SessionContext` is then the first
//! message's id).

use std::collections::HashMap;

use reqwest::header::{self, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tidings_model::Channel;
use tidings_model::Receiver;
use tidings_model::request::Object;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{
    Delivered, Dial, Provider, Text, content, dialled, endpoint, endpoint_url, field, now_ms,
    text_of, url_checked,
};
use crate::util::retry::SendError;
use crate::util::sign::{self, Tc3Request};

/// `settings` of a `tencent_sms` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentSmsConfig {
    /// API key id. Example: `"${TENCENT_SECRET_ID}"`.
    pub secret_id: String,
    /// API key secret. Example: `"${TENCENT_SECRET_KEY}"`.
    pub secret_key: String,
    /// The SMS application id. Example: `"1400006666"`.
    pub sdk_app_id: String,
    /// The approved signature. Example: `"腾讯云"`.
    pub sign_name: String,
    /// The approved template id. Example: `"1110"`.
    pub template_id: String,
    /// Region. Default `ap-guangzhou`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Base URL. Default `https://sms.tencentcloudapi.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_region() -> String {
    "ap-guangzhou".into()
}

/// A Tencent Cloud SMS account.
#[derive(Debug)]
pub struct TencentSms {
    config: TencentSmsConfig,
    client: reqwest::Client,
    /// `{endpoint}/`, parsed once.
    url: reqwest::Url,
    /// The signing key of the day of the last call (TC3's first three HMACs, the same all
    /// day): made again when the UTC day turns.
    signing: std::sync::Mutex<Option<std::sync::Arc<sign::Tc3Key>>>,
    /// The job region's country calling code (86 unless told: [`Provider::dial_with`]).
    calling_code: u16,
}

const NAME: &str = "tencent_sms";
const X_TC_ACTION: HeaderName = HeaderName::from_static("x-tc-action");
const X_TC_TIMESTAMP: HeaderName = HeaderName::from_static("x-tc-timestamp");
const X_TC_VERSION: HeaderName = HeaderName::from_static("x-tc-version");
const X_TC_REGION: HeaderName = HeaderName::from_static("x-tc-region");
const HOST: &str = "sms.tencentcloudapi.com";
/// The service TC3 signs for.
const SERVICE: &str = "sms";

/// E.164 for a number written nationally (a number of the job region, whose country calling
/// code is `calling_code`) or already so.
fn e164(r: &str, calling_code: u16) -> String {
    dialled(r, calling_code, Dial::E164).into_owned()
}

impl TencentSms {
    /// An account sending through `client`; an error names its `endpoint`.
    pub fn new(config: TencentSmsConfig, client: reqwest::Client) -> Result<TencentSms, String> {
        let url = endpoint_url(&config.endpoint, &format!("https://{HOST}"), "")?;
        Ok(TencentSms {
            config,
            client,
            url,
            signing: std::sync::Mutex::default(),
            calling_code: 86,
        })
    }

    /// The signing key of `timestamp`'s UTC day: the one kept, or a new one kept in its place.
    fn signing_key(&self, timestamp: i64) -> std::sync::Arc<sign::Tc3Key> {
        let mut kept = self
            .signing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*kept {
            Some(key) if key.day == sign::Tc3Key::day_of(timestamp) => key.clone(),
            _ => {
                let key = std::sync::Arc::new(sign::Tc3Key::new(
                    &self.config.secret_key,
                    SERVICE,
                    timestamp,
                ));
                *kept = Some(key.clone());
                key
            }
        }
    }

    /// The JSON payload.
    pub fn payload(&self, batch: &SendBatch, receivers: &[Receiver]) -> String {
        let model = content(batch);
        let params: Vec<String> = match model.get("params") {
            Some(serde_json::Value::Array(ps)) => ps
                .iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| p.to_string())
                })
                .collect(),
            _ => vec![field(&model, "content")],
        };
        // Written from a struct of borrowed fields, not built as a `serde_json::Value` (a map
        // of owned keys and values, then written): the same JSON object, its keys in the
        // API's documented order (the `Value` wrote them sorted).
        serde_json::to_string(&SendSmsRequest {
            phone_number_set: receivers
                .iter()
                .map(|r| e164(r, self.calling_code))
                .collect(),
            sms_sdk_app_id: &self.config.sdk_app_id,
            sign_name: &self.config.sign_name,
            template_id: &self.config.template_id,
            template_param_set: &params,
            session_context: batch.meta.message_id.as_str(),
        })
        .expect("strings and lists of strings are written as JSON")
    }

    /// Reads an answer: a request-level `Error`, or one status per number.
    ///
    /// The documented shape is read into borrowed structs; an answer that is JSON of another
    /// shape (a field of another type, a key twice) is read as a `serde_json::Value`, as it
    /// always was, and judged alike either way (`both_readings_judge_alike`). One difference:
    /// the structs skip the fields they do not name unchecked, so an answer whose other
    /// fields hold what a `Value` refuses (a lone surrogate escape, a number beyond `f64`,
    /// nesting deeper than 128) is judged by its statuses, where the `Value` reading called
    /// it unreadable, to be retried (`unread_fields_are_not_checked`).
    /// Numbers written nationally are of the region of `calling_code`.
    pub fn judge(
        answer: &str,
        receivers: &[Receiver],
        calling_code: u16,
    ) -> Result<Delivered, SendError> {
        match serde_json::from_str::<Object<SendSmsAnswer>>(answer) {
            Ok(Object(read)) => {
                Self::judge_read(read.response.map(|Object(r)| r), receivers, calling_code)
            }
            Err(_) => Self::judge_value(answer, receivers, calling_code),
        }
    }

    /// [`Self::judge`] of an answer of the documented shape.
    fn judge_read(
        response: Option<SendSmsResponse>,
        receivers: &[Receiver],
        calling_code: u16,
    ) -> Result<Delivered, SendError> {
        let (error, set) = response.map_or((None, Vec::new()), |r| (r.error, r.send_status_set));
        Self::judge_parts(
            error.as_ref(),
            set.iter().map(|Object(s)| {
                (
                    text_of(&s.phone_number),
                    text_of(&s.code),
                    text_of(&s.message),
                )
            }),
            receivers,
            calling_code,
        )
    }

    /// [`Self::judge`] of any JSON answer, by `serde_json::Value`.
    fn judge_value(
        answer: &str,
        receivers: &[Receiver],
        calling_code: u16,
    ) -> Result<Delivered, SendError> {
        let v: serde_json::Value =
            serde_json::from_str(answer).map_err(|_| http::unreadable(NAME, answer))?;
        let response = &v["Response"];
        Self::judge_parts(
            response.get("Error"),
            response["SendStatusSet"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|s| {
                    (
                        s["PhoneNumber"].as_str(),
                        s["Code"].as_str(),
                        s["Message"].as_str(),
                    )
                }),
            receivers,
            calling_code,
        )
    }

    /// An answer's request-level `Error` (when it has one, whatever its value), else its
    /// statuses (number, code, message: each a string or not there) judged number by number.
    fn judge_parts<'s>(
        error: Option<&serde_json::Value>,
        statuses: impl Iterator<Item = (Option<&'s str>, Option<&'s str>, Option<&'s str>)>,
        receivers: &[Receiver],
        calling_code: u16,
    ) -> Result<Delivered, SendError> {
        if let Some(e) = error {
            return Err(Self::request_error(
                e["Code"].as_str().unwrap_or(""),
                e["Message"].as_str().unwrap_or(""),
            ));
        }
        // Each number's first status, looked up once per number (a call carries up to 200:
        // a search of the set per number was most of a shared call's cost).
        let mut first: HashMap<&str, (Option<&str>, Option<&str>)> = HashMap::new();
        for (number, code, message) in statuses {
            if let Some(n) = number {
                first.entry(n).or_insert((code, message));
            }
        }
        Ok(Delivered::Each(
            receivers
                .iter()
                .map(|r| {
                    let number = e164(r, calling_code);
                    match first.get(number.as_str()) {
                        Some((Some("Ok"), _)) => Ok(()),
                        Some((code, message)) => Err(SendError::Permanent(format!(
                            "{NAME}: {} {}",
                            code.unwrap_or(""),
                            message.unwrap_or("")
                        ))),
                        None => Err(SendError::Permanent(format!(
                            "{NAME}: no status for {number}"
                        ))),
                    }
                })
                .collect(),
        ))
    }

    /// A request-level `Error`: the whole call's.
    fn request_error(code: &str, message: &str) -> SendError {
        let text = format!("{NAME}: {code} {message}");
        if code.starts_with("AuthFailure") {
            SendError::Unauthorized(text)
        } else if code.starts_with("RequestLimitExceeded")
            || code.starts_with("InternalError")
            || code == "LimitExceeded.AppGlobalDailyLimit"
        {
            SendError::Transient(text)
        } else {
            SendError::Permanent(text)
        }
    }
}

/// `SendSms`'s request body (its field names as the API writes them).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendSmsRequest<'a> {
    phone_number_set: Vec<String>,
    sms_sdk_app_id: &'a str,
    sign_name: &'a str,
    template_id: &'a str,
    template_param_set: &'a [String],
    session_context: &'a str,
}

/// `SendSms`'s answer, as documented: `{"Response": {"Error": …} | {"SendStatusSet": […]}}`,
/// its statuses' strings borrowed from the answer where they have no escapes ([`Text`]).
/// Objects are read as objects only (`Object`: a derived struct would also take an array of
/// its fields), and a field of another type fails the reading, so [`TencentSms::judge`] reads
/// that answer as a `Value` instead.
#[derive(Deserialize)]
struct SendSmsAnswer<'a> {
    #[serde(rename = "Response", default, borrow)]
    response: Option<Object<SendSmsResponse<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendSmsResponse<'a> {
    /// Read whole (rare: a failed call), so that `null` or any other value is judged as the
    /// `Value` reading judges it.
    #[serde(default, deserialize_with = "present")]
    error: Option<serde_json::Value>,
    #[serde(default, borrow)]
    send_status_set: Vec<Object<SendStatus<'a>>>,
}

/// A field that is there, whatever its value (`null` too); absent, `None` (by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendStatus<'a> {
    #[serde(default, borrow)]
    phone_number: Option<Text<'a>>,
    #[serde(default, borrow)]
    code: Option<Text<'a>>,
    #[serde(default, borrow)]
    message: Option<Text<'a>>,
}

impl Provider for TencentSms {
    type Settings = TencentSmsConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::Sms]);
    // SendSms: at most 200 numbers per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(200);
    // The same SendSms, for messages of the same content.
    const MESSAGES_PER_CALL: Option<usize> = Some(200);
    const ONE_CONTENT_PER_CALL: bool = true;

    // Statuses come back per number in E.164: `138…` and `+86138…` are one number. (A key
    // within a call: the job region's numbers are all written nationally, so 86 or the
    // region's own code tells the same numbers apart.)
    fn number(receiver: &Receiver) -> String {
        e164(receiver, 86)
    }

    fn dial_with(&mut self, calling_code: u16) {
        self.calling_code = calling_code;
    }

    fn validate(key: &str, settings: &Self::Settings) -> Result<(), String> {
        url_checked(
            key,
            endpoint_url(&settings.endpoint, &format!("https://{HOST}"), ""),
        )
    }

    fn base_url(settings: &TencentSmsConfig) -> String {
        endpoint(&settings.endpoint, &format!("https://{HOST}"))
    }

    fn build(
        settings: TencentSmsConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        TencentSms::new(settings, client)
    }

    /// Sends one message to its numbers: the mainland's (+86) and the others' in calls of
    /// their own, as Tencent refuses a call with both as a whole
    /// (`UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber`), which would fail
    /// every number of the call, also those of other messages sharing it.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        // As `e164` writes it, without making the string: a national number is the region's.
        let mainland = |r: &Receiver| match r.strip_prefix('+') {
            Some(digits) => digits.starts_with("86"),
            None => self.calling_code == 86,
        };
        let home = receivers.iter().filter(|r| mainland(r)).count();
        if home == 0 || home == receivers.len() {
            return self.send_sms(batch, receivers).await;
        }
        let (home, abroad): (Vec<Receiver>, Vec<Receiver>) =
            receivers.iter().cloned().partition(|r| mainland(r));
        let (a, b) = tokio::join!(self.send_sms(batch, &home), self.send_sms(batch, &abroad));
        let mut each = [(a, home.len()), (b, abroad.len())].map(|(d, n)| match d {
            Ok(Delivered::Each(each)) => each.into_iter(),
            Ok(_) => vec![Ok(()); n].into_iter(),
            Err(e) => vec![Err(e); n].into_iter(),
        });
        Ok(Delivered::Each(
            receivers
                .iter()
                .map(|r| {
                    let half = if mainland(r) { 0 } else { 1 };
                    each[half].next().unwrap_or_else(|| {
                        Err(SendError::Transient(format!("{NAME}: no status for {r}")))
                    })
                })
                .collect(),
        ))
    }
}

impl TencentSms {
    /// One `SendSms` call: one message to its numbers.
    async fn send_sms(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let payload = self.payload(batch, receivers);
        let timestamp = now_ms() / 1000;
        let content_type = "application/json; charset=utf-8";
        let authorization = sign::tc3_authorization_with(
            &self.config.secret_id,
            &self.signing_key(timestamp),
            &Tc3Request {
                service: SERVICE,
                host: HOST,
                action: "SendSms",
                content_type,
                payload: &payload,
                timestamp,
            },
        );
        let request = self
            .client
            .post(self.url.clone())
            // Names (and the fixed values) made once, not parsed from text on every call.
            .header(header::AUTHORIZATION, authorization)
            .header(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(header::HOST, HeaderValue::from_static(HOST))
            .header(X_TC_ACTION, HeaderValue::from_static("SendSms"))
            .header(X_TC_TIMESTAMP, timestamp.to_string())
            .header(X_TC_VERSION, HeaderValue::from_static("2021-01-11"))
            .header(X_TC_REGION, &self.config.region)
            .body(payload);
        let answer = http::call(NAME, request).await?;
        Self::judge(&answer, receivers, self.calling_code)
    }
}

#[cfg(test)]
mod tests;
