//! tidings' generic webhook (`webhook`): `POST url` with the message as JSON,
//! `X-Tidings-Timestamp` (s) and `X-Tidings-Signature: sha256=hex(HmacSHA256(secret,
//! timestamp + "." + body))`. Any 2xx accepts every receiver; 429/5xx are retried.

use serde::Deserialize;
use tidings_model::Receiver;

use crate::SendBatch;
use crate::util::http;
use crate::util::kit::{Delivered, Provider, http_url, now_ms, url_checked};
use crate::util::retry::SendError;
use crate::util::sign;

/// `settings` of a `webhook` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. Example: `"https://example.com/hooks/tidings"`.
    pub url: String,
    /// HMAC secret; without it requests are unsigned. Example: `"${WEBHOOK_SECRET}"`.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A webhook.
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
    /// `url`, parsed once.
    url: reqwest::Url,
}

const NAME: &str = "webhook";
const EXAMPLE_URL: &str = "https://example.com/hooks/tidings";

impl Webhook {
    /// A webhook posting through `client`; an error names its `url`.
    pub fn new(config: WebhookConfig, client: reqwest::Client) -> Result<Webhook, String> {
        let url = http_url("settings.url", &config.url, EXAMPLE_URL)?;
        Ok(Webhook {
            config,
            client,
            url,
        })
    }

    /// The JSON body.
    pub fn payload(batch: &SendBatch, receivers: &[Receiver]) -> Vec<u8> {
        let content: serde_json::Value =
            serde_json::from_str(&batch.meta.content).unwrap_or(serde_json::Value::Null);
        serde_json::to_vec(&serde_json::json!({
            "message_id": batch.meta.message_id,
            "template_id": batch.meta.template_id,
            "channel": batch.channel.name(),
            "receivers": receivers,
            "content": content,
        }))
        .unwrap_or_default()
    }
}

impl Provider for Webhook {
    type Settings = WebhookConfig;
    const KIND: &'static str = NAME;
    const CHANNELS: Option<&'static [tidings_model::Channel]> = None;

    fn validate(key: &str, settings: &Self::Settings) -> Result<(), String> {
        url_checked(key, http_url("settings.url", &settings.url, EXAMPLE_URL))
    }

    fn base_url(settings: &WebhookConfig) -> String {
        settings.url.clone()
    }

    fn build(
        settings: WebhookConfig,
        client: reqwest::Client,
        _timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Webhook::new(settings, client)
    }

    /// Posts one message; any 2xx accepts every receiver ([`http::status`] judges the rest).
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let body = Self::payload(batch, receivers);
        let ts = now_ms() / 1000;
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Content-Type", "application/json")
            .header("X-Tidings-Timestamp", ts.to_string());
        if let Some(secret) = &self.config.secret {
            request = request.header("X-Tidings-Signature", sign::webhook(secret, ts, &body));
        }
        http::call(NAME, request.body(body)).await?;
        Ok(Delivered::All)
    }
}

#[cfg(test)]
mod tests;
