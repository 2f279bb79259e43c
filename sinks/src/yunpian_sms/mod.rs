//! Yunpian SMS, API v2 (`application/x-www-form-urlencoded`, the `apikey` is the credential):
//! with a `tpl_id`, `POST {endpoint}/v2/sms/tpl_batch_send.json` with `tpl_value` built
//! from the content model's `params` (`#name#=value`, each part URL-encoded) or `#content#`;
//! without one, `POST {endpoint}/v2/sms/batch_send.json` with the rendered `text` (it must
//! match an approved template, signature included). Up to 1000 numbers per call; the answer
//! has one `data` entry per number (code 0 is sent).
//!
//! Both calls take one text for all their numbers, so messages of the same content share a
//! call (`Provider::send_many`), up to the 200 numbers Yunpian advises per call; verification
//! codes never do (Yunpian advises against its batch calls for them, as the coalescer does for
//! every provider).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use tidings_model::Channel;
use tidings_model::Receiver;
use tidings_model::request::Object;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{
    Delivered, Dial, Provider, Text, content, dialled, endpoint, endpoint_url, field, text_of,
    url_checked,
};
use crate::util::retry::SendError;
use crate::util::sign;

/// `settings` of a `yunpian_sms` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YunpianSmsConfig {
    /// The API key. Example: `"${YUNPIAN_APIKEY}"`.
    pub apikey: String,
    /// An approved template id; without it the rendered text is sent.
    #[serde(default)]
    pub tpl_id: Option<i64>,
    /// Base URL. Default `https://sms.yunpian.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A Yunpian account.
#[derive(Debug)]
pub struct YunpianSms {
    config: YunpianSmsConfig,
    client: reqwest::Client,
    /// Its call's URL (`tpl_batch_send.json` with a `tpl_id`, else `batch_send.json`), parsed
    /// once.
    url: reqwest::Url,
    /// The job region's country calling code (86 unless told: [`Provider::dial_with`]).
    calling_code: u16,
}

const NAME: &str = "yunpian_sms";
const DEFAULT_ENDPOINT: &str = "https://sms.yunpian.com";

/// Codes worth another try: the call rate over the account's (-5, 访问频率超限) and Yunpian's
/// own failures (-50 unknown, -51 busy, -52, -53 submitting failed). Its per-number
/// frequency limits (8: same content within 30 s, 9: same number 5 times in 5 min, 17: daily
/// cap, 22: hourly cap, 33: too frequent) do not pass within a retry's backoff, so they are
/// final, as are the calls over the account's quota (-4) and its settings (-54 and below).
fn transient(code: i64) -> bool {
    matches!(code, -5 | -53..=-50)
}

/// A number as Yunpian answers it: mainland numbers without `+86` (its documentation: "no
/// +86 prefix needed"), others in E.164.
fn national(m: &str) -> &str {
    m.strip_prefix("+86").unwrap_or(m)
}

/// A number's digits, whichever way it is written (`+86…`, `0086…`, `86…` for a mainland
/// mobile; `+1…` and `001…` alike): two receivers with the same digits never share a call, so
/// an answer written another way still finds its one number.
fn digits(m: &str) -> &str {
    let m = m
        .strip_prefix('+')
        .or_else(|| m.strip_prefix("00"))
        .unwrap_or(m);
    match m.strip_prefix("86") {
        Some(rest) if rest.len() == 11 && rest.starts_with('1') => rest,
        _ => m,
    }
}

/// Whether a whole-call refusal names a number: a parameter error (code 2) about `mobile`. The
/// other whole-call refusals of a shared call are its text's or the account's (its numbers
/// are answered one by one in `data`), the same for each message alone.
fn names_a_number(reason: &str) -> bool {
    let code = reason.split_whitespace().nth(1);
    code == Some("2") && (reason.contains("mobile") || reason.contains("手机"))
}

impl YunpianSms {
    /// `receivers` as Yunpian takes them (mainland numbers national, others E.164 with `+`):
    /// a job region's national numbers get its code unless it is the mainland's.
    pub fn dialled<'r>(&self, receivers: &'r [Receiver]) -> Cow<'r, [Receiver]> {
        if self.calling_code == 86 || receivers.iter().all(|r| r.starts_with('+')) {
            return Cow::Borrowed(receivers);
        }
        receivers
            .iter()
            .map(
                |r| match dialled(r, self.calling_code, Dial::MainlandNational) {
                    Cow::Borrowed(_) => r.clone(),
                    Cow::Owned(d) => d.into(),
                },
            )
            .collect()
    }

    /// An account sending through `client`; an error names its `endpoint`.
    pub fn new(config: YunpianSmsConfig, client: reqwest::Client) -> Result<Self, String> {
        let url = Self::call_url(&config)?;
        Ok(YunpianSms {
            config,
            client,
            url,
            calling_code: 86,
        })
    }

    /// Its call's URL: `tpl_batch_send.json` with a `tpl_id`, else `batch_send.json`.
    fn call_url(config: &YunpianSmsConfig) -> Result<reqwest::Url, String> {
        let path = if config.tpl_id.is_some() {
            "v2/sms/tpl_batch_send.json"
        } else {
            "v2/sms/batch_send.json"
        };
        endpoint_url(&config.endpoint, DEFAULT_ENDPOINT, path)
    }

    /// The form fields of one call.
    pub fn payload(&self, batch: &SendBatch, receivers: &[Receiver]) -> Vec<(String, String)> {
        let model = content(batch);
        let mut f = vec![
            ("apikey".to_string(), self.config.apikey.clone()),
            ("mobile".to_string(), receivers.join(",")),
        ];
        match self.config.tpl_id {
            Some(id) => {
                let pairs: Vec<(String, String)> =
                    match model.get("params").and_then(|p| p.as_object()) {
                        Some(p) => p
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v.as_str()
                                        .map(str::to_string)
                                        .unwrap_or_else(|| v.to_string()),
                                )
                            })
                            .collect(),
                        None => vec![("content".into(), field(&model, "content"))],
                    };
                let value = pairs
                    .iter()
                    .map(|(k, v)| {
                        format!("{}={}", sign::percent(&format!("#{k}#")), sign::percent(v))
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                f.push(("tpl_id".into(), id.to_string()));
                f.push(("tpl_value".into(), value));
            }
            None => f.push(("text".into(), field(&model, "content"))),
        }
        f
    }

    /// Reads an answer of HTTP `status`: a whole-call error `{"code", "msg", "detail"}`, or
    /// one `data` entry per number.
    ///
    /// The documented shape is read into borrowed structs; an answer of another shape (a
    /// field of another type, a key twice) is read as a `Value`, as it always was, and judged
    /// alike either way (`both_readings_judge_alike`). As with Tencent's answer, the fields
    /// the structs do not name are skipped unchecked (a lone surrogate there no longer makes
    /// the whole answer unreadable).
    pub fn judge(
        status: reqwest::StatusCode,
        text: &str,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        match serde_json::from_str::<Object<BatchSendAnswer>>(text) {
            Ok(Object(read)) => Self::judge_read(status, text, read, receivers),
            Err(_) => Self::judge_value(status, text, receivers),
        }
    }

    /// [`Self::judge`] of an answer of the documented shape.
    fn judge_read(
        status: reqwest::StatusCode,
        text: &str,
        read: BatchSendAnswer,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let whole = read.code.and_then(|c| c.as_i64()).map(|code| {
            (
                code,
                text_of(&read.msg).unwrap_or(""),
                text_of(&read.detail).unwrap_or(""),
            )
        });
        let data = read.data.as_ref().map(|data| {
            data.iter()
                .map(|Object(d)| Entry {
                    mobile: text_of(&d.mobile).unwrap_or(""),
                    code: d.code.as_ref().and_then(serde_json::Number::as_i64),
                    msg: text_of(&d.msg).unwrap_or(""),
                })
                .collect()
        });
        Self::judge_parts(status, text, whole, data, receivers)
    }

    /// [`Self::judge`] of any answer, by `serde_json::Value`.
    fn judge_value(
        status: reqwest::StatusCode,
        text: &str,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let whole = v["code"].as_i64().map(|code| {
            (
                code,
                v["msg"].as_str().unwrap_or(""),
                v["detail"].as_str().unwrap_or(""),
            )
        });
        let data = v["data"].as_array().map(|data| {
            data.iter()
                .map(|d| Entry {
                    mobile: d["mobile"].as_str().unwrap_or(""),
                    code: d["code"].as_i64(),
                    msg: d["msg"].as_str().unwrap_or(""),
                })
                .collect()
        });
        Self::judge_parts(status, text, whole, data, receivers)
    }

    /// An answer's whole-call error (a `code` that is a whole number, with its `msg` and
    /// `detail`), else its HTTP status, else its `data` entries judged number by number
    /// (`None`: no `data` list, an unreadable answer).
    fn judge_parts(
        status: reqwest::StatusCode,
        text: &str,
        whole: Option<(i64, &str, &str)>,
        data: Option<Vec<Entry>>,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        // A whole-call error: HTTP 400 (or 401/403) with {"code", "msg", "detail"}.
        if let Some((code, msg, detail)) = whole {
            let why = format!("{NAME}: {code} {msg} {detail}");
            return Err(match code {
                // -1 invalid apikey, -2 the API not allowed for it, -3 the IP not allowed.
                -3..=-1 => SendError::Unauthorized(why),
                c if transient(c) => SendError::Transient(why),
                // A code it calls final yields to a 5xx or 429 (as `http::judged`).
                _ => match http::status(NAME, status, text) {
                    Err(again @ SendError::Transient(_)) => again,
                    _ => SendError::Permanent(why),
                },
            });
        }
        http::status(NAME, status, text)?;
        let data = data.ok_or_else(|| http::unreadable(NAME, text))?;
        // Each number's first entry as written, and (built at the first number not found so)
        // by its digits: looked up once per number, where a search of `data` per number was
        // most of a shared call's cost (up to 200 numbers).
        let first_by = |key: fn(&str) -> &str| {
            let mut by: HashMap<&str, &Entry> = HashMap::with_capacity(data.len());
            for d in &data {
                by.entry(key(d.mobile)).or_insert(d);
            }
            by
        };
        let as_written = first_by(national);
        let mut by_digits = None;
        Ok(Delivered::Each(
            receivers
                .iter()
                .map(|r| {
                    // As written, else by its digits (an answer that writes it otherwise).
                    let entry = as_written.get(national(r)).copied().or_else(|| {
                        by_digits
                            .get_or_insert_with(|| first_by(digits))
                            .get(digits(r))
                            .copied()
                    });
                    match entry.map(|d| (d.code, d.msg)) {
                        Some((Some(0), _)) => Ok(()),
                        Some((Some(code), msg)) => {
                            let why = format!("{NAME}: {code} {msg}");
                            Err(if transient(code) {
                                SendError::Transient(why)
                            } else {
                                SendError::Permanent(why)
                            })
                        }
                        _ => Err(SendError::Transient(format!("{NAME}: no answer for {r}"))),
                    }
                })
                .collect(),
        ))
    }
}

/// One `data` entry as judged: its number as written (`""` if none), its code when a whole
/// number, its message (`""` if none).
struct Entry<'s> {
    mobile: &'s str,
    code: Option<i64>,
    msg: &'s str,
}

/// A `batch_send` answer, as documented: `{"code", "msg", "detail"}` for a whole-call error,
/// else `{"data": [{"code", "msg", "mobile", …}, …], …}`; its strings borrowed where they
/// have no escapes. Objects are read as objects only (`Object`), and a field of another type
/// fails the reading, so [`YunpianSms::judge`] reads that answer as a `Value` instead.
#[derive(Deserialize)]
struct BatchSendAnswer<'a> {
    #[serde(default)]
    code: Option<serde_json::Number>,
    #[serde(default, borrow)]
    msg: Option<Text<'a>>,
    #[serde(default, borrow)]
    detail: Option<Text<'a>>,
    #[serde(default, borrow)]
    data: Option<Vec<Object<DataEntry<'a>>>>,
}

#[derive(Deserialize)]
struct DataEntry<'a> {
    #[serde(default, borrow)]
    mobile: Option<Text<'a>>,
    #[serde(default)]
    code: Option<serde_json::Number>,
    #[serde(default, borrow)]
    msg: Option<Text<'a>>,
}

impl Provider for YunpianSms {
    type Settings = YunpianSmsConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::Sms]);
    // batch_send / tpl_batch_send: at most 1000 numbers per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(1000);
    // Several messages share a call only when their text is one; Yunpian advises at most 200
    // numbers per call.
    const MESSAGES_PER_CALL: Option<usize> = Some(200);
    const ONE_CONTENT_PER_CALL: bool = true;

    // `138…`, `+86138…` and `0086138…` are one number to Yunpian.
    fn number(receiver: &Receiver) -> String {
        digits(receiver).to_string()
    }

    fn refuses_one(error: &SendError) -> bool {
        names_a_number(error.reason())
    }

    // What `refuses_one` takes names a number.
    fn refuses_one_number(error: &SendError) -> bool {
        names_a_number(error.reason())
    }

    fn validate(key: &str, settings: &Self::Settings) -> Result<(), String> {
        url_checked(key, Self::call_url(settings))
    }

    fn base_url(settings: &YunpianSmsConfig) -> String {
        endpoint(&settings.endpoint, DEFAULT_ENDPOINT)
    }

    fn build(
        settings: YunpianSmsConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        YunpianSms::new(settings, client)
    }

    fn dial_with(&mut self, calling_code: u16) {
        self.calling_code = calling_code;
    }

    /// Sends to `receivers`; each number gets its own answer.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let receivers = &*self.dialled(receivers);
        let body = sign::form(&self.payload(batch, receivers));
        let request = self
            .client
            .post(self.url.clone())
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .header("Accept", "application/json;charset=utf-8")
            .body(body);
        let (status, text) = http::call_raw(NAME, request).await?;
        Self::judge(status, &text, receivers)
    }
}

#[cfg(test)]
mod tests;
