//! Email over SMTP (lettre): one message per receiver (receivers never see each other), HTML
//! body, attachments fetched by URL. austin's content model: `title`, `content` (HTML),
//! `url` (attachment URLs, comma-separated).
//!
//! Attachments are fetched with SSRF protection (austin mailed `file:///etc/passwd`, its
//! issue #56): only `http`/`https`; the host is resolved once and every address must be
//! public unless the account sets `allow_private_attachments`; the request is pinned to the
//! checked address (no second DNS answer), redirects are not followed, and the body is cut
//! at `max_attachment_bytes`.

use std::net::{IpAddr, SocketAddr};
use tidings_model::Receiver;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::response::{Code, Severity};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use tidings_model::Channel;

use crate::SendBatch;
use crate::util::kit::{Delivered, Provider, content, field};
use crate::util::retry::SendError;

const NAME: &str = "email";

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connection, upgraded with STARTTLS (required). Port 587 by default.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS). Port 465 by default.
    Tls,
    /// No TLS (local relays and tests only). Port 25 by default.
    None,
}

fn default_max_attachment() -> u64 {
    10 * 1024 * 1024
}

/// `settings` of an `smtp` account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host. Example: `"smtp.qq.com"`.
    pub host: String,
    /// Port. Default by `tls`: 587, 465 or 25.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: TlsMode,
    /// Login user. Example: `"noreply@example.com"`.
    #[serde(default)]
    pub username: Option<String>,
    /// Login password. Example: `"${SMTP_PASSWORD}"`.
    #[serde(default)]
    pub password: Option<String>,
    /// The sender. Example: `"tidings <noreply@example.com>"`.
    pub from: String,
    /// Fetch attachments from private, loopback and link-local addresses too. Default false.
    #[serde(default)]
    pub allow_private_attachments: bool,
    /// Largest attachment fetched, in bytes. Default 10 MiB.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: u64,
}

/// An SMTP account.
pub struct Email {
    config: EmailConfig,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("host", &self.config.host)
            .finish()
    }
}

/// The account's SMTP port: `port`, or the default of its `tls` mode.
fn port(config: &EmailConfig) -> u16 {
    config.port.unwrap_or(match config.tls {
        TlsMode::Starttls => 587,
        TlsMode::Tls => 465,
        TlsMode::None => 25,
    })
}

/// Whether an address is one an attachment URL may not reach without permission.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a == 0
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // An IPv4 address inside an IPv6 one reaches that IPv4 address: mapped
            // (::ffff:a.b.c.d), compatible (::a.b.c.d; `::1` and `::` read as 0.0.0.1 and
            // 0.0.0.0, private too), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::),
            // each judged as its IPv4 address.
            if let Some(v4) = v6.to_ipv4() {
                return is_private(IpAddr::V4(v4));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private(IpAddr::V4(std::net::Ipv4Addr::from_bits(
                    v6.to_bits() as u32
                )));
            }
            if s[0] == 0x2002 {
                return is_private(IpAddr::V4(std::net::Ipv4Addr::from_bits(
                    (v6.to_bits() >> 80) as u32,
                )));
            }
            v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated, still routed inside)
        }
    }
}

impl Email {
    /// An account over `config`; a provider call may take `timeout`.
    pub fn new(config: EmailConfig, timeout: std::time::Duration) -> Result<Email, String> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("settings.from {:?}: {e}", config.from))?;
        let builder = match config.tls {
            TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(|e| format!("settings.host: {e}"))?,
            TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| format!("settings.host: {e}"))?,
            TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        let port = port(&config);
        let mut builder = builder.port(port).timeout(Some(timeout));
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Email {
            from,
            transport: builder.build(),
            config,
            timeout,
        })
    }

    /// Whether the server answers (connect, EHLO, TLS, login) within `timeout`: the account's
    /// health check. (lettre's own timeout bounds the connect only: a server that accepts and
    /// then says nothing would hold `tidings check` forever.)
    pub async fn check_server(&self, timeout: std::time::Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.transport.test_connection()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(format!("{NAME}: {} did not answer", self.config.host)),
            Ok(Err(e)) => Err(format!("{NAME}: {}: {e}", self.config.host)),
            Err(_) => Err(silent(&self.config.host, timeout)),
        }
    }

    /// Fetches one attachment, refusing what the account does not allow.
    pub async fn fetch(&self, url: &str) -> Result<(String, Vec<u8>, String), SendError> {
        let refuse = |why: String| SendError::Permanent(format!("{NAME}: attachment {url}: {why}"));
        let parsed = reqwest::Url::parse(url).map_err(|e| refuse(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refuse(format!(
                "scheme {} is not allowed (http and https only)",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| refuse("no host".into()))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| SendError::Transient(format!("{NAME}: attachment {url}: {e}")))?
            .collect();
        let Some(&first) = addrs.first() else {
            return Err(refuse("the host does not resolve".into()));
        };
        if !self.config.allow_private_attachments
            && let Some(a) = addrs.iter().find(|a| is_private(a.ip()))
        {
            return Err(refuse(format!(
                "{} is a private or loopback address (allow_private_attachments is off)",
                a.ip()
            )));
        }
        // No proxy: a proxy (HTTP(S)_PROXY) would resolve the host itself, past the check
        // above and the address pinned below.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, first)
            .build()
            .map_err(|e| refuse(e.to_string()))?;
        let mut response = client
            .get(parsed.clone())
            .send()
            .await
            .map_err(|e| crate::util::http::transport(NAME, &e))?;
        let status = response.status();
        if !status.is_success() {
            let text = format!("{NAME}: attachment {url}: HTTP {}", status.as_u16());
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                SendError::Transient(text)
            } else {
                SendError::Permanent(text)
            });
        }
        let max = self.config.max_attachment_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            return Err(refuse(format!("larger than {max} bytes")));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| crate::util::http::transport(NAME, &e))?
        {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > max {
                return Err(refuse(format!("larger than {max} bytes")));
            }
        }
        let name = parsed
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|s| !s.is_empty())
            .unwrap_or("attachment")
            .to_string();
        Ok((name, body, content_type))
    }

    /// The message to one receiver: HTML body, attachments, `Message-ID:
    /// <message_id@tidings>`.
    pub fn payload(
        &self,
        to: &str,
        subject: &str,
        html: &str,
        attachments: &[(String, Vec<u8>, String)],
        batch: &SendBatch,
    ) -> Result<Message, SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("{NAME}: receiver {to:?}: {e}")))?;
        let mut parts = MultiPart::mixed().singlepart(SinglePart::html(html.to_string()));
        for (name, body, ty) in attachments {
            let ty = ContentType::parse(ty).unwrap_or(ContentType::TEXT_PLAIN);
            parts = parts.singlepart(Attachment::new(name.clone()).body(body.clone(), ty));
        }
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@tidings>", batch.meta.message_id)))
            .multipart(parts)
            .map_err(|e| SendError::Permanent(format!("{NAME}: {e}")))
    }

    /// Classifies a failed SMTP send by the server's reply code (`None`: no reply, e.g. the
    /// connection or TLS failed): 535/530 refuse the login, other 5xx are permanent, 4xx
    /// and failures without a reply are transient.
    pub fn judge(code: Option<Code>, text: String) -> SendError {
        match code {
            Some(c) if matches!(c.to_string().as_str(), "535" | "530") => {
                SendError::Unauthorized(text)
            }
            Some(c) if matches!(c.severity, Severity::PermanentNegativeCompletion) => {
                SendError::Permanent(text)
            }
            _ => SendError::Transient(text),
        }
    }

    /// One receiver's message; `Err((_, true))` when the server itself failed (no reply).
    async fn send_one(
        &self,
        to: &str,
        subject: &str,
        html: &str,
        attachments: &[(String, Vec<u8>, String)],
        batch: &SendBatch,
    ) -> Result<(), (SendError, bool)> {
        let message = self
            .payload(to, subject, html, attachments, batch)
            .map_err(|e| (e, false))?;
        // The whole SMTP transaction (greeting, TLS, login, DATA) within the call's timeout:
        // lettre's own bounds the connect only.
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            // The server's own failure: no reply, and not this message's fault (a client
            // error, such as a non-ASCII address the server cannot take, is the receiver's).
            Ok(Err(e)) => Err((
                Self::judge(e.status(), format!("{NAME}: {e}")),
                e.status().is_none() && !e.is_client(),
            )),
            Err(_) => Err((
                SendError::Transient(silent(&self.config.host, self.timeout)),
                true,
            )),
        }
    }
}

/// A server that did not finish answering within `timeout`.
fn silent(host: &str, timeout: std::time::Duration) -> String {
    format!(
        "{NAME}: {host} did not finish answering within {} s",
        timeout.as_secs_f64()
    )
}

impl Provider for Email {
    type Settings = EmailConfig;
    const KIND: &'static str = "smtp";
    const CHANNELS: Option<&'static [Channel]> = Some(&[Channel::Email]);

    fn validate(key: &str, settings: &EmailConfig) -> Result<(), String> {
        settings.from.parse::<Mailbox>().map(|_| ()).map_err(|e| {
            format!(
                "{key}.settings.from: {:?}: {e}; write \"Name <a@b.c>\" or \"a@b.c\"",
                settings.from
            )
        })
    }

    fn base_url(settings: &EmailConfig) -> String {
        format!("smtp://{}:{}", settings.host, port(settings))
    }

    fn build(
        settings: EmailConfig,
        _client: reqwest::Client,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Email::new(settings, timeout)
    }

    /// Sends one message to each receiver.
    async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Result<Delivered, SendError> {
        let model = content(batch);
        let subject = field(&model, "title");
        let html = field(&model, "content");
        let mut attachments = Vec::new();
        for url in field(&model, "url")
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            attachments.push(self.fetch(url).await?);
        }
        let mut each = Vec::with_capacity(receivers.len());
        // Once the server itself failed (no reply: refused, TLS, silent), the receivers after
        // are not tried: each would wait out its own timeout for the same failure (100
        // receivers of a server that is down took 100 timeouts). They fail alike, retried.
        for r in receivers {
            match self.send_one(r, &subject, &html, &attachments, batch).await {
                Err((e, true)) => {
                    each.resize(receivers.len(), Err(e));
                    break;
                }
                sent => each.push(sent.map_err(|(e, _)| e)),
            }
        }
        // A failure of the connection itself fails the call (and is retried); refusals of
        // single receivers stay theirs.
        if each
            .iter()
            .all(|e| matches!(e, Err(SendError::Transient(_))))
            && !each.is_empty()
        {
            return Err(each.swap_remove(0).unwrap_err());
        }
        Ok(Delivered::Each(each))
    }

    async fn check(&self, base_url: &str, timeout: std::time::Duration) -> Result<String, String> {
        self.check_server(timeout)
            .await
            .map(|()| format!("{base_url} answered"))
    }
}

#[cfg(test)]
mod tests;
