//! Alipay mini program template message (`alipay_mini_program`): the open platform's gateway,
//! `POST {endpoint}/gateway.do` (form-encoded) with the common parameters (`app_id`,
//! `method = alipay.open.app.mini.templatemessage.send`, `format`, `charset`, `sign_type =
//! RSA2`, `timestamp` in Beijing time, `version`), `biz_content` = `{"to_user_id",
//! "user_template_id", "page", "data"}` (one user per call), and `sign` = RSA2 over the sorted
//! parameters with the app's private key. The answer is
//! `{"alipay_open_app_mini_templatemessage_send_response": {"code": "10000", ...}}`. Content
//! model (austin's): `templateId`, `page`, the fields as `data` (or `map`).

use serde::Deserialize;
use serde_json::{Value, json};
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, field, now_ms, one_by_one};
use crate::util::retry::SendError;
use crate::util::sign;
use crate::wechat_official_account::template_data;

/// `settings` of an `alipay_mini_program` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipayConfig {
    /// The app id.
    pub app_id: String,
    /// The app's RSA private key (PKCS#8 or PKCS#1, PEM or bare base64). Example:
    /// `"${ALIPAY_PRIVATE_KEY}"`.
    pub private_key: String,
    /// Base URL. Default `https://openapi.alipay.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// An Alipay mini program.
pub struct AlipayMiniProgram {
    config: AlipayConfig,
    key: ring::signature::RsaKeyPair,
    client: reqwest::Client,
}

impl std::fmt::Debug for AlipayMiniProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AlipayMiniProgram")
            .field("app_id", &self.config.app_id)
            .finish()
    }
}

const NAME: &str = "alipay_mini_program";
const METHOD: &str = "alipay.open.app.mini.templatemessage.send";

impl AlipayMiniProgram {
    /// A mini program sending through `client`; the key must parse.
    pub fn new(config: AlipayConfig, client: reqwest::Client) -> Result<Self, String> {
        let key = sign::rsa_key(&config.private_key)
            .map_err(|e| format!("{NAME}.settings.private_key: {e}"))?;
        Ok(AlipayMiniProgram {
            config,
            key,
            client,
        })
    }

    /// The signed form parameters for one user.
    pub fn payload(
        &self,
        batch: &SendBatch,
        user: &str,
        now: i64,
    ) -> Result<Vec<(String, String)>, SendError> {
        let model = content(batch);
        let biz = json!({"to_user_id": user, "user_template_id": field(&model, "templateId"),
            "page": field(&model, "page"), "data": template_data(&model).to_string()});
        let timestamp = chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let mut params: Vec<(String, String)> = [
            ("app_id", self.config.app_id.as_str()),
            ("method", METHOD),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("timestamp", timestamp.as_str()),
            ("version", "1.0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        params.push(("biz_content".into(), biz.to_string()));
        let sig = sign::alipay_rsa2(&self.key, &sign::alipay_content(&params))
            .map_err(|e| SendError::Permanent(format!("{NAME}: {e}")))?;
        params.push(("sign".into(), sig));
        Ok(params)
    }

    async fn send_one(&self, batch: &SendBatch, user: &str) -> Result<(), SendError> {
        let body = sign::form(&self.payload(batch, user, now_ms())?);
        let url = format!("{}/gateway.do", Self::base_url(&self.config));
        let answer = http::call(
            NAME,
            self.client
                .post(url)
                .header(
                    "Content-Type",
                    "application/x-www-form-urlencoded;charset=utf-8",
                )
                .body(body),
        )
        .await?;
        Self::judge(&answer)
    }

    /// Reads the gateway's answer for one user: `code` 10000 is sent, busy answers are
    /// transient, a refused signature or app id is unauthorized, the rest permanent. The
    /// gateway answers under the method's key, or under `error_response` when it refuses the
    /// call before the method (a wrong app id, a bad signature; as Alipay's SDK reads it).
    pub fn judge(answer: &str) -> Result<(), SendError> {
        let v: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
        let r = v
            .get("alipay_open_app_mini_templatemessage_send_response")
            .or_else(|| v.get("error_response"))
            .unwrap_or(&Value::Null);
        let code = r["code"].as_str().unwrap_or("");
        let sub = r["sub_code"].as_str().unwrap_or("");
        let why = || {
            format!(
                "{NAME}: {code} {} {sub} {}",
                r["msg"].as_str().unwrap_or(""),
                r["sub_msg"].as_str().unwrap_or("")
            )
        };
        match code {
            "10000" => Ok(()),
            // 20000: service unavailable; 40004 ACQ.SYSTEM_ERROR-like busy answers.
            "20000" => Err(SendError::Transient(why())),
            _ if sub.contains("SYSTEM_ERROR") || sub.contains("FREQUENCY") => {
                Err(SendError::Transient(why()))
            }
            // 20001: invalid auth token; 40002 with an invalid signature or app id.
            "20001" => Err(SendError::Unauthorized(why())),
            _ if sub.contains("invalid-signature") || sub.contains("invalid-app-id") => {
                Err(SendError::Unauthorized(why()))
            }
            "" => Err(http::unreadable(NAME, answer)),
            _ => Err(SendError::Permanent(why())),
        }
    }
}

impl Provider for AlipayMiniProgram {
    type Settings = AlipayConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::AlipayMiniProgram]);

    fn validate(key: &str, settings: &AlipayConfig) -> Result<(), String> {
        sign::rsa_key(&settings.private_key)
            .map(|_| ())
            .map_err(|e| format!("{key}.settings.private_key: {e}"))
    }

    fn base_url(settings: &AlipayConfig) -> String {
        endpoint(&settings.endpoint, "https://openapi.alipay.com")
    }

    fn build(
        settings: AlipayConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        AlipayMiniProgram::new(settings, client)
    }

    /// Sends the template message to each user (one call each).
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        one_by_one(receivers, |r| async move { self.send_one(batch, &r).await }).await
    }
}

#[cfg(test)]
mod tests;
