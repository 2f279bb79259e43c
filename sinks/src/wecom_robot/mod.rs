//! WeCom group robot (`enterprise_we_chat_robot`): `POST {endpoint}/cgi-bin/webhook/send?key=K`
//! with `{"msgtype": "text", "text": {"content", "mentioned_mobile_list"}}`. The key is the
//! credential; WeCom allows 20 messages per minute per robot.

use serde::Deserialize;
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, errcode, field, mentions};
use crate::util::retry::SendError;
use crate::util::sign;

/// `settings` of a `wecom_robot` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomRobotConfig {
    /// The robot's webhook key. Example: `"${WECOM_ROBOT_KEY}"`.
    pub key: String,
    /// Base URL. Default `https://qyapi.weixin.qq.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A WeCom robot.
#[derive(Debug)]
pub struct WecomRobot {
    config: WecomRobotConfig,
    client: reqwest::Client,
}

const NAME: &str = "wecom_robot";

impl WecomRobot {
    /// A robot sending through `client`.
    pub fn new(config: WecomRobotConfig, client: reqwest::Client) -> WecomRobot {
        WecomRobot { config, client }
    }

    /// The JSON body.
    pub fn payload(batch: &SendBatch, receivers: &[Receiver]) -> serde_json::Value {
        let model = content(batch);
        let (all, mobiles) = mentions(receivers);
        let mut list = mobiles;
        if all {
            list.push("@all".into());
        }
        serde_json::json!({"msgtype": "text",
            "text": {"content": field(&model, "content"), "mentioned_mobile_list": list}})
    }

    /// Reads the robot's `{"errcode", "errmsg"}` answer.
    pub fn judge(answer: &str) -> Result<Delivered, SendError> {
        match errcode(answer) {
            Some((0, _)) => Ok(Delivered::All),
            // 45009: API frequency limit; -1: system busy.
            Some((code @ (45009 | -1), msg)) => {
                Err(SendError::Transient(format!("{NAME}: {code} {msg}")))
            }
            // 93000: invalid webhook key.
            Some((code @ 93000, msg)) => {
                Err(SendError::Unauthorized(format!("{NAME}: {code} {msg}")))
            }
            Some((code, msg)) => Err(SendError::Permanent(format!("{NAME}: {code} {msg}"))),
            None => Err(http::unreadable(NAME, answer)),
        }
    }
}

impl Provider for WecomRobot {
    type Settings = WecomRobotConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::EnterpriseWeChatRobot]);
    // WeCom: 20 messages per minute per robot.
    const PER_MINUTE: Option<u32> = Some(20);

    fn base_url(settings: &WecomRobotConfig) -> String {
        endpoint(&settings.endpoint, "https://qyapi.weixin.qq.com")
    }

    fn build(
        settings: WecomRobotConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(WecomRobot::new(settings, client))
    }

    /// Sends one message to the robot's group.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let url = format!(
            "{}/cgi-bin/webhook/send?key={}",
            Self::base_url(&self.config),
            sign::percent(&self.config.key)
        );
        let answer = http::call(
            NAME,
            self.client.post(url).json(&Self::payload(batch, receivers)),
        )
        .await?;
        Self::judge(&answer)
    }
}

#[cfg(test)]
mod tests;
