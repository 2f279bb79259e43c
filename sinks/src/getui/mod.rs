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

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, content, endpoint, field, now_ms};
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

/// The auth signature: `hex(sha256(appkey + timestamp + mastersecret))`.
pub fn auth_sign(app_key: &str, timestamp: i64, master_secret: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "{app_key}{timestamp}{master_secret}"
    )))
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
            endpoint(&self.config.endpoint, "https://restapi.getui.com"),
            self.config.app_id
        )
    }

    async fn fetch_token(&self) -> Result<(String, std::time::Duration), SendError> {
        let ts = now_ms();
        let body = json!({"sign": auth_sign(&self.config.app_key, ts, &self.config.master_secret),
            "timestamp": ts.to_string(), "appkey": self.config.app_key});
        let answer = http::call(NAME, self.client.post(self.url("auth")).json(&body)).await?;
        let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        match (v["code"].as_i64(), v["data"]["token"].as_str()) {
            (Some(0), Some(token)) => {
                let expires = v["data"]["expire_time"]
                    .as_str()
                    .and_then(|e| e.parse::<i64>().ok())
                    .unwrap_or(ts + 86_400_000);
                let left = (expires - now_ms()).max(0) as u64;
                Ok((token.to_string(), std::time::Duration::from_millis(left)))
            }
            _ => Err(SendError::Unauthorized(format!(
                "{NAME}: auth: {} {}",
                v["code"],
                v["msg"].as_str().unwrap_or("")
            ))),
        }
    }

    /// The health check: fetches an access token with the account's credentials.
    pub async fn check(&self) -> Result<(), SendError> {
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
    pub fn request_id(batch: &SendBatch, receivers: &[String]) -> String {
        let digest = Sha256::digest(format!("{}|{}", batch.meta.message_id, receivers.join(",")));
        hex::encode(&digest[..16])
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, SendError> {
        self.token
            .with_token(
                || self.fetch_token(),
                |token| async move {
                    let answer = http::call(
                        NAME,
                        self.client
                            .post(self.url(path))
                            .header("token", token)
                            .json(body),
                    )
                    .await?;
                    let v: Value = serde_json::from_str(&answer).map_err(|_| {
                        SendError::Transient(format!("{NAME}: unreadable answer: {answer}"))
                    })?;
                    let msg =
                        || format!("{NAME}: {} {}", v["code"], v["msg"].as_str().unwrap_or(""));
                    match v["code"].as_i64() {
                        Some(0) => Ok(Answer::Done(v.clone())),
                        Some(TOKEN_INVALID) => Ok(Answer::TokenRejected(msg())),
                        _ => Err(SendError::Permanent(msg())),
                    }
                },
            )
            .await
    }

    /// Pushes to one cid (single) or several (a list message, then its cids).
    pub async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[String],
    ) -> Result<Delivered, SendError> {
        let request_id = Self::request_id(batch, receivers);
        let settings = json!({"ttl": 86_400_000});
        if let [cid] = receivers {
            let body = json!({"request_id": request_id, "settings": settings,
                "audience": {"cid": [cid]}, "push_message": Self::push_message(batch)});
            self.call("push/single/cid", &body).await?;
            return Ok(Delivered::All);
        }
        let created = self
            .call(
                "push/list/message",
                &json!({"request_id": request_id, "settings": settings,
                    "push_message": Self::push_message(batch)}),
            )
            .await?;
        let taskid = created["data"]["taskid"]
            .as_str()
            .ok_or_else(|| SendError::Transient(format!("{NAME}: no taskid in {created}")))?
            .to_string();
        self.call(
            "push/list/cid",
            &json!({"audience": {"cid": receivers}, "taskid": taskid, "is_async": false}),
        )
        .await?;
        Ok(Delivered::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_sign_is_sha256_hex_of_key_time_secret() {
        // sha256("key1700000000000secret"), computed independently with Python's hashlib.
        assert_eq!(
            auth_sign("key", 1_700_000_000_000, "secret"),
            "ee412f504f93d283888979ab4f37e98beb471243575d468a4048c57285abad84"
        );
    }
}
