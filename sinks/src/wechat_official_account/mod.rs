//! WeChat official account template message (`official_accounts`): `POST {endpoint}/cgi-bin/
//! stable_token` with `{"grant_type": "client_credential", "appid", "secret"}` gives an access
//! token (two hours, cached; the stable token does not invalidate one in use elsewhere);
//! `POST {endpoint}/cgi-bin/message/template/send?access_token=T` sends to one openid per
//! call: `{"touser", "template_id", "url", "miniprogram": {"appid", "pagepath"}, "data":
//! {"k": {"value": "v"}}}`. Content model (austin's): `templateId`, `url`, `miniProgramId`,
//! `path`, and the template's fields as `data` (or austin's `map`).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, field, one_by_one, token_checked};
use crate::util::retry::SendError;
use crate::util::sign;
use crate::util::token::{TokenCache, token_answer};

/// `settings` of a `wechat_official_account` or `wechat_mini_program` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatConfig {
    /// The AppID. Example: `"${WECHAT_APP_ID}"`.
    pub app_id: String,
    /// The AppSecret. Example: `"${WECHAT_APP_SECRET}"`.
    pub app_secret: String,
    /// Base URL. Default `https://api.weixin.qq.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// 40001 invalid credential, 40014 invalid access_token, 42001 expired.
pub const TOKEN_CODES: [i64; 3] = [40001, 40014, 42001];
/// 45009 daily quota reached, 45047 too frequent.
pub const BUSY_CODES: [i64; 2] = [45009, 45047];

/// A WeChat app's endpoint: its `endpoint`, or WeChat's own.
pub fn base_url(config: &WechatConfig) -> String {
    endpoint(&config.endpoint, "https://api.weixin.qq.com")
}

/// A WeChat app's token and client, shared by the official account and mini program senders.
#[derive(Debug)]
pub struct WechatApi {
    config: WechatConfig,
    client: reqwest::Client,
    token: TokenCache,
    name: &'static str,
}

impl WechatApi {
    /// The API of one app.
    pub fn new(name: &'static str, config: WechatConfig, client: reqwest::Client) -> Self {
        WechatApi {
            config,
            client,
            token: TokenCache::default(),
            name,
        }
    }

    fn base(&self) -> String {
        base_url(&self.config)
    }

    async fn fetch_token(&self) -> Result<(String, std::time::Duration), SendError> {
        let body = json!({"grant_type": "client_credential", "appid": self.config.app_id,
            "secret": self.config.app_secret, "force_refresh": false});
        let url = format!("{}/cgi-bin/stable_token", self.base());
        token_answer(
            self.name,
            &http::call(self.name, self.client.post(url).json(&body)).await?,
        )
    }

    /// Fetches an access token with the account's credentials (the health check).
    pub async fn check_token(&self) -> Result<(), SendError> {
        self.token.get(|| self.fetch_token()).await.map(|_| ())
    }

    /// One call per receiver (WeChat takes one `touser` per message); each answer is that
    /// receiver's result.
    pub async fn each(
        &self,
        path: &str,
        receivers: &[Receiver],
        body_for: impl Fn(&str) -> Value,
    ) -> Result<Delivered, SendError> {
        let url = |token: &str| {
            format!(
                "{}/cgi-bin/{path}?access_token={}",
                self.base(),
                sign::percent(token)
            )
        };
        one_by_one(receivers, |r| {
            let body = body_for(&r);
            async move {
                self.token
                    .post_errcode(
                        self.name,
                        &self.client,
                        || self.fetch_token(),
                        url,
                        &body,
                        &TOKEN_CODES,
                        &BUSY_CODES,
                    )
                    .await
                    .map(|_| ())
            }
        })
        .await
    }
}

/// The template fields `{"k": {"value": "v"}}` from `data` (or austin's `map`).
pub fn template_data(model: &Map<String, Value>) -> Value {
    let fields = model
        .get("data")
        .or_else(|| model.get("map"))
        .and_then(|d| d.as_object());
    Value::Object(
        fields
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let value = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (k.clone(), json!({"value": value}))
            })
            .collect(),
    )
}

/// A WeChat official account.
#[derive(Debug)]
pub struct WechatOfficialAccount {
    api: WechatApi,
}

const NAME: &str = "wechat_official_account";

impl WechatOfficialAccount {
    /// An official account sending through `client`.
    pub fn new(config: WechatConfig, client: reqwest::Client) -> Self {
        WechatOfficialAccount {
            api: WechatApi::new(NAME, config, client),
        }
    }

    /// The template/send body for one openid.
    pub fn payload(batch: &SendBatch, openid: &str) -> Value {
        let model = content(batch);
        let mut body = json!({"touser": openid, "template_id": field(&model, "templateId"),
            "data": template_data(&model)});
        let url = field(&model, "url");
        if !url.is_empty() {
            body["url"] = json!(url);
        }
        let mini = field(&model, "miniProgramId");
        if !mini.is_empty() {
            body["miniprogram"] = json!({"appid": mini, "pagepath": field(&model, "path")});
        }
        body
    }
}

impl Provider for WechatOfficialAccount {
    type Settings = WechatConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::OfficialAccounts]);

    fn base_url(settings: &WechatConfig) -> String {
        base_url(settings)
    }

    fn build(
        settings: WechatConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(WechatOfficialAccount::new(settings, client))
    }

    /// Sends the template message to each openid.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        self.api
            .each("message/template/send", receivers, |r| {
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
