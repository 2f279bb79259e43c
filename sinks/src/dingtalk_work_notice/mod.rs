//! DingTalk work notice (`ding_ding_work_notice`): an app's message to users' work
//! notifications. `GET {endpoint}/gettoken?appkey=K&appsecret=S` gives an access token (two
//! hours, cached); `POST {endpoint}/topapi/message/corpconversation/asyncsend_v2
//! ?access_token=T` with `{"agent_id", "userid_list": "u1,u2", "msg": {...}}` sends to up to
//! 100 users at once (or `to_all_user` for `@all`) and answers a `task_id`, which
//! `.../corpconversation/recall` takes back. Content model (austin's): `sendType` `text`
//! (default) or `markdown` (with `title`), `content`.

use serde::Deserialize;
use serde_json::{Value, json};
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, field, token_checked};
use crate::util::retry::SendError;
use crate::util::sign;
use crate::util::token::{TokenCache, token_answer};

/// `settings` of a `dingtalk_work_notice` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkWorkNoticeConfig {
    /// The app's AppKey. Example: `"${DING_APP_KEY}"`.
    pub app_key: String,
    /// The app's AppSecret. Example: `"${DING_APP_SECRET}"`.
    pub app_secret: String,
    /// The app's AgentId.
    pub agent_id: i64,
    /// Base URL. Default `https://oapi.dingtalk.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A DingTalk app sending work notices.
#[derive(Debug)]
pub struct DingTalkWorkNotice {
    config: DingTalkWorkNoticeConfig,
    client: reqwest::Client,
    token: TokenCache,
}

const NAME: &str = "dingtalk_work_notice";
/// DingTalk's answers for an invalid or expired access token (88 without a `sub_code`:
/// one with is judged by it, `errcode_answer`).
const TOKEN_CODES: [i64; 3] = [40014, 42001, 88];
/// 90018: too many calls in a short time (the app's frequency limit).
const BUSY_CODES: [i64; 1] = [90018];

impl DingTalkWorkNotice {
    /// An app sending through `client`.
    pub fn new(config: DingTalkWorkNoticeConfig, client: reqwest::Client) -> Self {
        DingTalkWorkNotice {
            config,
            client,
            token: TokenCache::default(),
        }
    }

    fn base(&self) -> String {
        Self::base_url(&self.config)
    }

    /// How many tokens were fetched.
    pub fn token_fetches(&self) -> u64 {
        self.token.fetches()
    }

    async fn fetch_token(&self) -> Result<(String, std::time::Duration), SendError> {
        let url = format!(
            "{}/gettoken?appkey={}&appsecret={}",
            self.base(),
            sign::percent(&self.config.app_key),
            sign::percent(&self.config.app_secret)
        );
        token_answer(NAME, &http::call(NAME, self.client.get(url)).await?)
    }

    /// Fetches an access token with the account's credentials (the health check).
    pub async fn check_token(&self) -> Result<(), SendError> {
        self.token.get(|| self.fetch_token()).await.map(|_| ())
    }

    /// The `msg` object of austin's content model.
    pub fn msg(batch: &SendBatch) -> Value {
        let model = content(batch);
        match field(&model, "sendType").as_str() {
            "markdown" => json!({"msgtype": "markdown",
                "markdown": {"title": field(&model, "title"), "text": field(&model, "content")}}),
            _ => json!({"msgtype": "text", "text": {"content": field(&model, "content")}}),
        }
    }

    /// The asyncsend_v2 body.
    pub fn payload(&self, batch: &SendBatch, receivers: &[Receiver]) -> Value {
        let mut body = json!({"agent_id": self.config.agent_id, "msg": Self::msg(batch)});
        if receivers.iter().any(|r| &**r == "@all") {
            body["to_all_user"] = json!(true);
        } else {
            body["userid_list"] = json!(receivers.join(","));
        }
        body
    }

    /// What an accepted asyncsend_v2 answer delivered: its `task_id` is what recall takes.
    pub fn delivered(answer: &Value) -> Delivered {
        match answer["task_id"].as_i64() {
            Some(task_id) => Delivered::Tracked {
                reference: task_id.to_string(),
                each: None,
            },
            None => Delivered::All,
        }
    }

    /// Recalls the work notice sent as `task_id`.
    pub async fn recall_task(&self, task_id: i64) -> Result<(), SendError> {
        let body = json!({"agent_id": self.config.agent_id, "msg_task_id": task_id});
        self.call("topapi/message/corpconversation/recall", &body)
            .await
            .map(|_| ())
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, SendError> {
        let url = |token: &str| {
            format!(
                "{}/{path}?access_token={}",
                self.base(),
                sign::percent(token)
            )
        };
        self.token
            .post_errcode(
                NAME,
                &self.client,
                || self.fetch_token(),
                url,
                body,
                &TOKEN_CODES,
                &BUSY_CODES,
            )
            .await
    }
}

impl Provider for DingTalkWorkNotice {
    type Settings = DingTalkWorkNoticeConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::DingDingWorkNotice]);
    // asyncsend_v2: at most 100 users per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(100);

    fn base_url(settings: &DingTalkWorkNoticeConfig) -> String {
        endpoint(&settings.endpoint, "https://oapi.dingtalk.com")
    }

    fn build(
        settings: DingTalkWorkNoticeConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(DingTalkWorkNotice::new(settings, client))
    }

    /// Sends one work notice to `receivers`; the answer's `task_id` is what recall takes.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let body = self.payload(batch, receivers);
        let answer = self
            .call("topapi/message/corpconversation/asyncsend_v2", &body)
            .await?;
        Ok(Self::delivered(&answer))
    }

    async fn recall(&self, reference: &str) -> Result<(), SendError> {
        match reference.parse::<i64>() {
            Ok(task_id) => self.recall_task(task_id).await,
            Err(_) => Err(SendError::Permanent(format!(
                "{NAME}: task id {reference:?} is not a number"
            ))),
        }
    }

    async fn check(&self, base_url: &str, _timeout: std::time::Duration) -> Result<String, String> {
        token_checked(base_url, self.check_token().await)
    }
}

#[cfg(test)]
mod tests;
