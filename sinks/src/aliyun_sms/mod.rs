//! Aliyun SMS (`SendSms`, dysmsapi 2017-05-25, RPC style): the query is signed with
//! HMAC-SHA1 over the sorted, percent-encoded parameters (SignatureVersion 1.0). One call
//! for all numbers (comma-separated); the answer is one `Code` for the call.

use serde::Deserialize;
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, field, now_ms};
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
}

const NAME: &str = "aliyun_sms";

impl AliyunSms {
    /// An account sending through `client`.
    pub fn new(config: AliyunSmsConfig, client: reqwest::Client) -> AliyunSms {
        AliyunSms { config, client }
    }

    /// The signed query parameters of a call at `now_ms` with `nonce`.
    pub fn payload(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
        now_ms: i64,
        nonce: &str,
    ) -> Vec<(String, String)> {
        let model = content(batch);
        let template_param = match model.get("params") {
            Some(p @ serde_json::Value::Object(_)) => p.to_string(),
            _ => serde_json::json!({"content": field(&model, "content")}).to_string(),
        };
        let timestamp = chrono::DateTime::from_timestamp_millis(now_ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let mut p: Vec<(String, String)> = [
            ("AccessKeyId", self.config.access_key_id.as_str()),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("PhoneNumbers", &receivers.join(",")),
            ("RegionId", &self.config.region),
            ("SignName", &self.config.sign_name),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", &self.config.template_code),
            ("TemplateParam", &template_param),
            ("Timestamp", &timestamp),
            ("Version", "2017-05-25"),
            ("OutId", &batch.meta.message_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let signature = sign::aliyun_rpc("POST", &self.config.access_key_secret, &p);
        p.push(("Signature".into(), signature));
        p
    }

    /// Reads the answer: one `Code` for the whole call.
    pub fn judge(answer: &str) -> Result<Delivered, SendError> {
        let v: serde_json::Value = serde_json::from_str(answer)
            .map_err(|_| SendError::Transient(format!("{NAME}: unreadable answer: {answer}")))?;
        let code = v["Code"].as_str().unwrap_or("");
        let text = format!("{NAME}: {code} {}", v["Message"].as_str().unwrap_or(""));
        match code {
            "OK" => Ok(Delivered::All),
            "isv.BUSINESS_LIMIT_CONTROL"
            | "Throttling.User"
            | "isp.SYSTEM_ERROR"
            | "ServiceUnavailable" => Err(SendError::Transient(text)),
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

impl Provider for AliyunSms {
    type Settings = AliyunSmsConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::Sms]);
    // SendSms: at most 1000 numbers per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(1000);

    fn base_url(settings: &AliyunSmsConfig) -> String {
        endpoint(&settings.endpoint, "https://dysmsapi.aliyuncs.com")
    }

    fn build(
        settings: AliyunSmsConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(AliyunSms::new(settings, client))
    }

    /// Sends one message to its numbers.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let now = now_ms();
        let nonce = format!("{}-{now}", batch.meta.message_id);
        let params = self.payload(batch, receivers, now, &nonce);
        let form = params
            .iter()
            .map(|(k, v)| format!("{}={}", sign::percent(k), sign::percent(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .client
            .post(format!("{}/", Self::base_url(&self.config)))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form);
        let answer = http::call(NAME, request).await?;
        Self::judge(&answer)
    }
}

#[cfg(test)]
mod tests;
