//! Feishu (Lark) custom robot (`fei_shu_robot`): `POST {endpoint}/open-apis/bot/v2/hook/{hook}`
//! with `timestamp` (s) and `sign = base64(HmacSHA256(key = timestamp + "\n" + secret, ""))`
//! in the JSON body. Content model: `content` (text). Feishu allows 100 per minute per robot.

use serde::Deserialize;
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, field, now_ms};
use crate::util::retry::SendError;
use crate::util::sign;

/// `settings` of a `feishu_robot` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeishuRobotConfig {
    /// The hook id (the last part of the webhook URL). Example: `"${FEISHU_HOOK}"`.
    pub hook: String,
    /// The signing secret. Example: `"${FEISHU_SECRET}"`.
    pub secret: String,
    /// Base URL. Default `https://open.feishu.cn`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A Feishu robot.
#[derive(Debug)]
pub struct FeishuRobot {
    config: FeishuRobotConfig,
    client: reqwest::Client,
}

const NAME: &str = "feishu_robot";

impl FeishuRobot {
    /// A robot sending through `client`.
    pub fn new(config: FeishuRobotConfig, client: reqwest::Client) -> FeishuRobot {
        FeishuRobot { config, client }
    }

    /// The signed JSON body.
    pub fn payload(secret: &str, timestamp_s: i64, batch: &SendBatch) -> serde_json::Value {
        let model = content(batch);
        serde_json::json!({
            "timestamp": timestamp_s.to_string(),
            "sign": sign::feishu_robot(secret, timestamp_s),
            "msg_type": "text",
            "content": {"text": field(&model, "content")},
        })
    }

    /// The robot's own code in an answer: `code`, or `StatusCode` for older robots.
    fn code_of(v: &serde_json::Value) -> Option<i64> {
        v.get("code")
            .or_else(|| v.get("StatusCode"))
            .and_then(|c| c.as_i64())
    }

    /// Reads an answer of any HTTP status: Feishu sends some codes with HTTP 400 (9499, too
    /// many requests), so a body with a code is judged by it; one without (a proxy's error
    /// page) by the status.
    pub fn read(status: reqwest::StatusCode, answer: &str) -> Result<Delivered, SendError> {
        let coded = serde_json::from_str::<serde_json::Value>(answer)
            .is_ok_and(|v| Self::code_of(&v).is_some());
        http::judged(NAME, status, answer, coded, Self::judge)
    }

    /// Reads the robot's `{"code", "msg"}` answer (older robots answer `StatusCode`); one
    /// without a code is not taken as sent.
    pub fn judge(answer: &str) -> Result<Delivered, SendError> {
        let unreadable = || http::unreadable(NAME, answer);
        let v: serde_json::Value = serde_json::from_str(answer).map_err(|_| unreadable())?;
        let code = Self::code_of(&v).ok_or_else(unreadable)?;
        let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
        match code {
            0 => Ok(Delivered::All),
            // 11232: frequency limited; 9499: "too many request" (9499 is also its "Bad
            // Request" of a body it cannot take, which would fail the same way again).
            11232 => Err(SendError::Transient(format!("{NAME}: {code} {msg}"))),
            9499 if msg.to_ascii_lowercase().contains("too many") => {
                Err(SendError::Transient(format!("{NAME}: {code} {msg}")))
            }
            // 19021: signature mismatch; 19022: IP not allowed ("Ip Not Allowed"). 19024, "Key
            // Words Not Found", is the content's: permanent.
            19021 | 19022 => Err(SendError::Unauthorized(format!("{NAME}: {code} {msg}"))),
            _ => Err(SendError::Permanent(format!("{NAME}: {code} {msg}"))),
        }
    }
}

impl Provider for FeishuRobot {
    type Settings = FeishuRobotConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::FeiShuRobot]);
    // Feishu: 100 per minute (5 per second) per robot.
    const PER_MINUTE: Option<u32> = Some(100);

    fn base_url(settings: &FeishuRobotConfig) -> String {
        endpoint(&settings.endpoint, "https://open.feishu.cn")
    }

    fn build(
        settings: FeishuRobotConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(FeishuRobot::new(settings, client))
    }

    /// Sends one message to the robot's group.
    async fn send(
        &self,
        batch: &SendBatch,
        _receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let url = format!(
            "{}/open-apis/bot/v2/hook/{}",
            Self::base_url(&self.config),
            sign::percent(&self.config.hook)
        );
        let body = Self::payload(&self.config.secret, now_ms() / 1000, batch);
        let (status, answer) = http::call_raw(NAME, self.client.post(url).json(&body)).await?;
        Self::read(status, &answer)
    }
}

#[cfg(test)]
mod tests;
