//! WeChat mini program subscribe message (`mini_program`): the same stable access token as
//! an official account ([`crate::wechat_official_account::WechatApi`]), then `POST
//! {endpoint}/cgi-bin/message/subscribe/send?access_token=T` per openid with `{"touser",
//! "template_id", "page", "data": {"k": {"value": "v"}}, "miniprogram_state", "lang"}`.
//! Content model (austin's): `templateId`, `page` (or `path`), the fields as `data` / `map`.
//! A user who did not accept the subscription (43101) fails alone.

use serde_json::{Value, json};
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::kit::{Delivered, Provider, content, field, token_checked};
use crate::util::retry::SendError;
use crate::wechat_official_account::{WechatApi, WechatConfig, base_url, template_data};

/// A WeChat mini program.
#[derive(Debug)]
pub struct WechatMiniProgram {
    api: WechatApi,
}

const NAME: &str = "wechat_mini_program";

impl WechatMiniProgram {
    /// A mini program sending through `client`.
    pub fn new(config: WechatConfig, client: reqwest::Client) -> Self {
        WechatMiniProgram {
            api: WechatApi::new(NAME, config, client),
        }
    }

    /// The subscribe/send body for one openid.
    pub fn payload(batch: &SendBatch, openid: &str) -> Value {
        let model = content(batch);
        let page = match field(&model, "page") {
            p if p.is_empty() => field(&model, "path"),
            p => p,
        };
        let state = match field(&model, "miniprogramState") {
            s if s.is_empty() => "formal".to_string(),
            s => s,
        };
        json!({"touser": openid, "template_id": field(&model, "templateId"), "page": page,
            "data": template_data(&model), "miniprogram_state": state, "lang": "zh_CN"})
    }
}

impl Provider for WechatMiniProgram {
    type Settings = WechatConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::MiniProgram]);

    fn base_url(settings: &WechatConfig) -> String {
        base_url(settings)
    }

    fn build(
        settings: WechatConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(WechatMiniProgram::new(settings, client))
    }

    /// Sends the subscribe message to each openid.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        self.api
            .each("message/subscribe/send", receivers, |r| {
                Self::payload(batch, r)
            })
            .await
    }

    async fn check(&self, base_url: &str, _timeout: std::time::Duration) -> Result<String, String> {
        token_checked(base_url, self.api.check_token().await)
    }
}

#[cfg(test)]
mod tests;
