//! WeCom app message (`enterprise_we_chat`): `GET {endpoint}/cgi-bin/gettoken?corpid=C
//! &corpsecret=S` gives an access token (two hours, cached); `POST {endpoint}/cgi-bin/message/
//! send?access_token=T` with `{"touser": "u1|u2", "msgtype", "agentid", ...}` sends to up to
//! 1000 users (`@all` for everyone) and answers `invaliduser` (those fail alone) and a
//! `msgid`, which `/cgi-bin/message/recall` takes back. Content model (austin's): `sendType`
//! `text` (default), `markdown`, or `textcard` (with `title`, `description`, `url`), `content`.

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

/// `settings` of a `wecom_app` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomAppConfig {
    /// The corp id. Example: `"${WECOM_CORP_ID}"`.
    pub corp_id: String,
    /// The app's secret. Example: `"${WECOM_APP_SECRET}"`.
    pub corp_secret: String,
    /// The app's AgentId.
    pub agent_id: i64,
    /// Base URL. Default `https://qyapi.weixin.qq.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A WeCom app.
#[derive(Debug)]
pub struct WecomApp {
    config: WecomAppConfig,
    client: reqwest::Client,
    token: TokenCache,
}

const NAME: &str = "wecom_app";
/// 40014 invalid access_token, 42001 expired, 40001 invalid credential.
const TOKEN_CODES: [i64; 3] = [40014, 42001, 40001];
/// 45009 API frequency limit, 45033 too many concurrent calls.
const BUSY_CODES: [i64; 2] = [45009, 45033];

impl WecomApp {
    /// An app sending through `client`.
    pub fn new(config: WecomAppConfig, client: reqwest::Client) -> Self {
        WecomApp {
            config,
            client,
            token: TokenCache::default(),
        }
    }

    fn base(&self) -> String {
        Self::base_url(&self.config)
    }

    async fn fetch_token(&self) -> Result<(String, std::time::Duration), SendError> {
        let url = format!(
            "{}/cgi-bin/gettoken?corpid={}&corpsecret={}",
            self.base(),
            sign::percent(&self.config.corp_id),
            sign::percent(&self.config.corp_secret)
        );
        token_answer(NAME, &http::call(NAME, self.client.get(url)).await?)
    }

    /// Fetches an access token with the account's credentials (the health check).
    pub async fn check_token(&self) -> Result<(), SendError> {
        self.token.get(|| self.fetch_token()).await.map(|_| ())
    }

    /// The message/send body.
    pub fn payload(&self, batch: &SendBatch, receivers: &[Receiver]) -> Value {
        let model = content(batch);
        let touser = if receivers.iter().any(|r| &**r == "@all") {
            "@all".to_string()
        } else {
            receivers.join("|")
        };
        let mut body = json!({"touser": touser, "agentid": self.config.agent_id});
        match field(&model, "sendType").as_str() {
            "markdown" => {
                body["msgtype"] = json!("markdown");
                body["markdown"] = json!({"content": field(&model, "content")});
            }
            "textcard" => {
                body["msgtype"] = json!("textcard");
                body["textcard"] = json!({"title": field(&model, "title"),
                    "description": field(&model, "description"), "url": field(&model, "url")});
            }
            _ => {
                body["msgtype"] = json!("text");
                body["text"] = json!({"content": field(&model, "content")});
            }
        }
        body
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, SendError> {
        let url = |token: &str| {
            format!(
                "{}/cgi-bin/{path}?access_token={}",
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

    /// What an accepted message/send answer delivered: users named in `invaliduser` (no such
    /// user, or not in the app's range) or `unlicenseduser` (no license for the app: WeCom
    /// sends the rest and does not reach them) fail alone; its `msgid` is what recall takes.
    pub fn delivered(answer: &Value, receivers: &[Receiver]) -> Delivered {
        let named = |field: &'static str| {
            answer[field]
                .as_str()
                .unwrap_or("")
                .split('|')
                .filter(|u| !u.is_empty())
                .map(move |u| (field, u))
        };
        let refused: Vec<(&str, &str)> = named("invaliduser")
            .chain(named("unlicenseduser"))
            .collect();
        let each = (!refused.is_empty()).then(|| {
            receivers
                .iter()
                .map(|r| {
                    // WeCom answers userids lower-cased; they match whatever case was sent.
                    match refused.iter().find(|(_, u)| u.eq_ignore_ascii_case(r)) {
                        Some((field, _)) => {
                            Err(SendError::Permanent(format!("{NAME}: {field} {r}")))
                        }
                        None => Ok(()),
                    }
                })
                .collect()
        });
        match answer["msgid"].as_str() {
            Some(msgid) => Delivered::Tracked {
                reference: msgid.to_string(),
                each,
            },
            None => match each {
                Some(each) => Delivered::Each(each),
                None => Delivered::All,
            },
        }
    }
}

impl Provider for WecomApp {
    type Settings = WecomAppConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::EnterpriseWeChat]);
    // message/send: at most 1000 users per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(1000);

    fn base_url(settings: &WecomAppConfig) -> String {
        endpoint(&settings.endpoint, "https://qyapi.weixin.qq.com")
    }

    fn build(
        settings: WecomAppConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(WecomApp::new(settings, client))
    }

    /// Sends one message; users named in `invaliduser` fail alone.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let answer = self
            .call("message/send", &self.payload(batch, receivers))
            .await?;
        Ok(Self::delivered(&answer, receivers))
    }

    /// Recalls the message sent as `msgid` (within 24 hours).
    async fn recall(&self, msgid: &str) -> Result<(), SendError> {
        self.call("message/recall", &json!({"msgid": msgid}))
            .await
            .map(|_| ())
    }

    async fn check(&self, base_url: &str, _timeout: std::time::Duration) -> Result<String, String> {
        token_checked(base_url, self.check_token().await)
    }
}

#[cfg(test)]
mod tests;
