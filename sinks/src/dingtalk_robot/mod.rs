//! DingTalk custom robot (`ding_ding_robot`): `POST {endpoint}/robot/send?access_token=T
//! &timestamp=MS&sign=S` with `S = urlencode(base64(HmacSHA256(secret, MS + "\n" + secret)))`.
//! The content model is austin's (`content`, optional `title` for markdown via `sendType`);
//! receivers are mentioned by mobile, `@all` mentions everyone. DingTalk allows 20 messages
//! per minute per robot: the account's default rate limit.

use serde::Deserialize;
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, errcode, field, mentions, now_ms};
use crate::util::retry::SendError;
use crate::util::sign;

/// `settings` of a `dingtalk_robot` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkRobotConfig {
    /// The robot's access token (from its webhook URL). Example: `"${DING_TOKEN}"`.
    pub access_token: String,
    /// The robot's signing secret (`SEC...`). Example: `"${DING_SECRET}"`.
    pub secret: String,
    /// Base URL. Default `https://oapi.dingtalk.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A DingTalk robot.
#[derive(Debug)]
pub struct DingTalkRobot {
    config: DingTalkRobotConfig,
    client: reqwest::Client,
}

const NAME: &str = "dingtalk_robot";

impl DingTalkRobot {
    /// A robot sending through `client`.
    pub fn new(config: DingTalkRobotConfig, client: reqwest::Client) -> DingTalkRobot {
        DingTalkRobot { config, client }
    }

    /// The JSON body for a batch.
    pub fn payload(batch: &SendBatch, receivers: &[Receiver]) -> serde_json::Value {
        let model = content(batch);
        let (all, mobiles) = mentions(receivers);
        let text = field(&model, "content");
        let body = if field(&model, "sendType") == "markdown" {
            serde_json::json!({"msgtype": "markdown",
                "markdown": {"title": field(&model, "title"), "text": text}})
        } else {
            serde_json::json!({"msgtype": "text", "text": {"content": text}})
        };
        let mut body = body;
        body["at"] = serde_json::json!({"atMobiles": mobiles, "isAtAll": all});
        body
    }

    /// Reads the robot's `{"errcode", "errmsg"}` answer.
    pub fn judge(body: &str) -> Result<Delivered, SendError> {
        match errcode(body) {
            Some((0, _)) => Ok(Delivered::All),
            // 130101 and 410100 (the current table's "发送速度太快而限流"): sending too fast;
            // -1: system busy.
            Some((code @ (130101 | 410100 | -1), msg)) => {
                Err(SendError::Transient(format!("{NAME}: {code} {msg}")))
            }
            // 310000: signature, keyword or IP check failed; 300001 and 400101: no such
            // access_token; 400102: the robot is stopped.
            Some((code @ (310000 | 300001 | 400101 | 400102), msg)) => {
                Err(SendError::Unauthorized(format!("{NAME}: {code} {msg}")))
            }
            Some((code, msg)) => Err(SendError::Permanent(format!("{NAME}: {code} {msg}"))),
            None => Err(http::unreadable(NAME, body)),
        }
    }
}

impl Provider for DingTalkRobot {
    type Settings = DingTalkRobotConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::DingDingRobot]);
    // DingTalk: 20 messages per minute per robot.
    const PER_MINUTE: Option<u32> = Some(20);

    fn base_url(settings: &DingTalkRobotConfig) -> String {
        endpoint(&settings.endpoint, "https://oapi.dingtalk.com")
    }

    fn build(
        settings: DingTalkRobotConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(DingTalkRobot::new(settings, client))
    }

    /// Sends one message to the robot's group.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let ts = now_ms();
        let url = format!(
            "{}/robot/send?access_token={}&timestamp={ts}&sign={}",
            Self::base_url(&self.config),
            sign::percent(&self.config.access_token),
            sign::percent(&sign::dingtalk_robot(&self.config.secret, ts))
        );
        let body = http::call(
            NAME,
            self.client.post(url).json(&Self::payload(batch, receivers)),
        )
        .await?;
        Self::judge(&body)
    }
}

#[cfg(test)]
mod tests;
