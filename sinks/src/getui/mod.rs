//! GeTui push (`push`), REST API v2: `POST {endpoint}/v2/{appId}/auth` with `{"sign":
//! hex(sha256(appkey + timestamp + mastersecret)), "timestamp", "appkey"}` gives a token
//! (valid until its `expire_time`, cached), sent as the `token` header. One receiver (cid):
//! `POST .../push/single/cid`; several: `POST .../push/list/message` creates the message and
//! `POST .../push/list/cid` sends it to up to 1000 cids. `request_id` is derived from the
//! message and its receivers, so a retried call is the same request to GeTui. Content model
//! (austin's): `title`, `content`, `url` (opened on click; without it the app starts).

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tidings_model::Channel;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, content, endpoint, field, now_ms, token_checked};
use crate::util::retry::SendError;
use crate::util::token::{Answer, TokenCache};

/// `settings` of a `getui` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetuiConfig {
    /// The AppID.
    pub app_id: String,
    /// The AppKey. Example: `"${GETUI_APP_KEY}"`.
    pub app_key: String,
    /// The MasterSecret. Example: `"${GETUI_MASTER_SECRET}"`.
    pub master_secret: String,
    /// Base URL. Default `https://restapi.getui.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A GeTui app.
#[derive(Debug)]
pub struct Getui {
    config: GetuiConfig,
    client: reqwest::Client,
    token: TokenCache,
}

const NAME: &str = "getui";
/// GeTui's answer for an invalid or expired token.
const TOKEN_INVALID: i64 = 10001;
/// Calls over the allowed rate.
const RATE_LIMITED: i64 = 10005;
/// Auth calls over the allowed rate (a cluster's processes refreshing at once): not refused
/// credentials.
const AUTH_RATE_LIMITED: i64 = 10003;
/// "The service is starting, please wait" (HTTP 200).
const STARTING: i64 = 2;

/// The auth signature: `hex(sha256(appkey + timestamp + mastersecret))`.
pub fn auth_sign(app_key: &str, timestamp: i64, master_secret: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "{app_key}{timestamp}{master_secret}"
    )))
}

/// Whether an answer carries GeTui's `code` (then it is judged by it, whatever its status).
fn coded(answer: &str) -> bool {
    serde_json::from_str::<Value>(answer).is_ok_and(|v| v["code"].as_i64().is_some())
}

impl Getui {
    /// An app pushing through `client`.
    pub fn new(config: GetuiConfig, client: reqwest::Client) -> Self {
        Getui {
            config,
            client,
            token: TokenCache::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v2/{}/{path}",
            Self::base_url(&self.config),
            self.config.app_id
        )
    }

    async fn fetch_token(&self) -> Result<(String, std::time::Duration), SendError> {
        let ts = now_ms();
        let body = json!({"sign": auth_sign(&self.config.app_key, ts, &self.config.master_secret),
            "timestamp": ts.to_string(), "appkey": self.config.app_key});
        let (status, answer) =
            http::call_raw(NAME, self.client.post(self.url("auth")).json(&body)).await?;
        Self::read_auth(status, &answer)
    }

    /// An auth answer of any HTTP status, as [`Getui::read`] reads a send's: a 5xx or 429 is
    /// tried again whatever code it carries.
    pub fn read_auth(
        status: reqwest::StatusCode,
        answer: &str,
    ) -> Result<(String, std::time::Duration), SendError> {
        http::judged(NAME, status, answer, coded(answer), Self::auth_answer)
    }

    /// Reads an auth answer: code 0 and a token is the token (until its `expire_time`); over
    /// the rate (10005) or not an answer (an error page) is tried again; other codes are
    /// refused credentials.
    pub fn auth_answer(answer: &str) -> Result<(String, std::time::Duration), SendError> {
        let v: Value = serde_json::from_str(answer).map_err(|_| http::unreadable(NAME, answer))?;
        let why = || {
            format!(
                "{NAME}: auth: {} {}",
                v["code"],
                v["msg"].as_str().unwrap_or("")
            )
        };
        match (v["code"].as_i64(), v["data"]["token"].as_str()) {
            (Some(0), Some(token)) => {
                let now = now_ms();
                let expires = v["data"]["expire_time"]
                    .as_str()
                    .and_then(|e| e.parse::<i64>().ok())
                    .unwrap_or(now + 86_400_000);
                let left = expires.saturating_sub(now).max(0) as u64;
                Ok((token.to_string(), std::time::Duration::from_millis(left)))
            }
            (Some(RATE_LIMITED | AUTH_RATE_LIMITED | STARTING), _) => {
                Err(SendError::Transient(why()))
            }
            (None, _) => Err(http::unreadable(NAME, answer)),
            _ => Err(SendError::Unauthorized(why())),
        }
    }

    /// Fetches an access token with the account's credentials (the health check).
    pub async fn check_token(&self) -> Result<(), SendError> {
        self.token.get(|| self.fetch_token()).await.map(|_| ())
    }

    /// The notification of austin's content model.
    pub fn push_message(batch: &SendBatch) -> Value {
        let model = content(batch);
        let url = field(&model, "url");
        let mut n = json!({"title": field(&model, "title"), "body": field(&model, "content")});
        if url.is_empty() {
            n["click_type"] = json!("startapp");
        } else {
            n["click_type"] = json!("url");
            n["url"] = json!(url);
        }
        json!({"notification": n})
    }

    /// GeTui's `request_id` (10 to 32 characters): the same for a retried call.
    pub fn request_id(batch: &SendBatch, receivers: &[Receiver]) -> String {
        let digest = Sha256::digest(format!("{}|{}", batch.meta.message_id, receivers.join(",")));
        hex::encode(&digest[..16])
    }

    /// The body of a push to one cid (`push/single/cid`).
    pub fn single_payload(batch: &SendBatch, cid: &str) -> Value {
        json!({"request_id": Self::request_id(batch, &[Receiver::from(cid)]),
            "settings": {"ttl": 86_400_000},
            "audience": {"cid": [cid]}, "push_message": Self::push_message(batch)})
    }

    /// The body creating a list message (`push/list/message`) for `receivers`.
    pub fn list_payload(batch: &SendBatch, receivers: &[Receiver]) -> Value {
        json!({"request_id": Self::request_id(batch, receivers),
            "settings": {"ttl": 86_400_000},
            "push_message": Self::push_message(batch)})
    }

    /// The body sending list message `taskid` to its cids (`push/list/cid`).
    pub fn list_cids_payload(taskid: &str, receivers: &[Receiver]) -> Value {
        json!({"audience": {"cid": receivers}, "taskid": taskid, "is_async": false})
    }

    /// Reads a `{"code", "msg", "data"}` answer: 0 is done, 10001 rejects the token, 10005 and
    /// 10003 (calls over the rate) and 2 (the service is starting) are transient, other codes
    /// are permanent.
    pub fn judge(answer: &str) -> Result<Answer<Value>, SendError> {
        let v: Value = serde_json::from_str(answer).map_err(|_| http::unreadable(NAME, answer))?;
        let msg = || format!("{NAME}: {} {}", v["code"], v["msg"].as_str().unwrap_or(""));
        match v["code"].as_i64() {
            Some(0) => Ok(Answer::Done(v.clone())),
            Some(TOKEN_INVALID) => Ok(Answer::TokenRejected(msg())),
            Some(RATE_LIMITED | AUTH_RATE_LIMITED | STARTING) => Err(SendError::Transient(msg())),
            _ => Err(SendError::Permanent(msg())),
        }
    }

    /// Reads an answer of any HTTP status: GeTui sends its codes with HTTP 401 (10001, 10005)
    /// and 400 (parameter errors), so a body with a `code` is judged by the code; one without
    /// (a proxy's error page) by the status; a code it calls final yields to a 5xx or 429
    /// (an internal error or a throttle with a code of its own is tried again: `http::judged`).
    pub fn read(status: reqwest::StatusCode, answer: &str) -> Result<Answer<Value>, SendError> {
        http::judged(NAME, status, answer, coded(answer), Self::judge)
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, SendError> {
        self.token
            .with_token(
                || self.fetch_token(),
                |token| async move {
                    let (status, answer) = http::call_raw(
                        NAME,
                        self.client
                            .post(self.url(path))
                            .header("token", token)
                            .json(body),
                    )
                    .await?;
                    Self::read(status, &answer)
                },
            )
            .await
    }
}

impl Provider for Getui {
    type Settings = GetuiConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::Push]);
    // push/list/cid: at most 1000 cids per request.
    const RECEIVERS_PER_CALL: Option<usize> = Some(1000);

    fn base_url(settings: &GetuiConfig) -> String {
        endpoint(&settings.endpoint, "https://restapi.getui.com")
    }

    fn build(
        settings: GetuiConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(Getui::new(settings, client))
    }

    /// Pushes to one cid (single) or several (a list message, then its cids).
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        if let [cid] = receivers {
            self.call("push/single/cid", &Self::single_payload(batch, cid))
                .await?;
            return Ok(Delivered::All);
        }
        let created = self
            .call("push/list/message", &Self::list_payload(batch, receivers))
            .await?;
        let taskid = created["data"]["taskid"]
            .as_str()
            .ok_or_else(|| http::unreadable(NAME, &created.to_string()))?
            .to_string();
        self.call(
            "push/list/cid",
            &Self::list_cids_payload(&taskid, receivers),
        )
        .await?;
        Ok(Delivered::All)
    }

    async fn check(&self, base_url: &str, _timeout: std::time::Duration) -> Result<String, String> {
        token_checked(base_url, self.check_token().await)
    }
}

#[cfg(test)]
mod tests;
