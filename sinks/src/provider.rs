//! The provider registry: the one list of network providers. Each line names a provider's
//! [`ProviderKind`] variant and the type implementing [`Provider`]; the `registry!` macro
//! generates from it the job file's `provider` names, the settings check, the build and the
//! dispatch of a call ([`Remote`]). Adding a provider is its module (a leaf importing only
//! `crate::util`) and one line here. Providers never import this file.

use std::time::Duration;
use tidings_model::Receiver;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value};
use tidings_model::Channel;

use crate::SendBatch;
use crate::util::kit::{Delivered, Provider, settings};
use crate::util::retry::SendError;

/// A provider's settings, parsed and checked; errors name `key` and never show a secret.
fn parse<P: Provider>(key: &str, raw: &Map<String, Value>) -> Result<P::Settings, String> {
    let s = settings::<P::Settings>(key, raw)?;
    P::validate(key, &s)?;
    Ok(s)
}

/// Parses and builds a provider; returns it with its base URL.
fn open<P: Provider>(
    key: &str,
    raw: &Map<String, Value>,
    client: reqwest::Client,
    timeout: Duration,
    calling_code: u16,
) -> Result<(P, String), String> {
    let s = parse::<P>(key, raw)?;
    let base = P::base_url(&s);
    let mut p = P::build(s, client, timeout).map_err(|e| format!("{key}.{e}"))?;
    p.dial_with(calling_code);
    Ok((p, base))
}

macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident => $ty:path, )*) => {
        /// Which provider an account uses (`provider = "..."` in the job file).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ProviderKind {
            /// Writes each rendered message to `DIR/<channel>.jsonl`, sends nothing.
            Outbox,
            /// Accepts and forgets (benchmarks).
            Blackhole,
            $( $(#[$doc])* $variant, )*
        }

        impl ProviderKind {
            /// Every kind, the local ones first, then the registry's order.
            pub const ALL: &[ProviderKind] =
                &[ProviderKind::Outbox, ProviderKind::Blackhole, $(ProviderKind::$variant),*];

            /// The names of [`ProviderKind::ALL`], as the job file writes them.
            pub const NAMES: &[&str] = &["outbox", "blackhole", $(<$ty as Provider>::KIND),*];

            /// The name used in the job file and in labels.
            pub fn name(self) -> &'static str {
                match self {
                    ProviderKind::Outbox => "outbox",
                    ProviderKind::Blackhole => "blackhole",
                    $(ProviderKind::$variant => <$ty as Provider>::KIND,)*
                }
            }

            /// The channels the provider can send on (`None`: any).
            pub fn channels(self) -> Option<&'static [Channel]> {
                match self {
                    ProviderKind::Outbox | ProviderKind::Blackhole => None,
                    $(ProviderKind::$variant => <$ty as Provider>::CHANNELS,)*
                }
            }

            /// The provider's own quota in messages per minute, if it has one.
            pub fn per_minute(self) -> Option<u32> {
                match self {
                    ProviderKind::Outbox | ProviderKind::Blackhole => None,
                    $(ProviderKind::$variant => <$ty as Provider>::PER_MINUTE,)*
                }
            }

            /// The most receivers the provider's API takes in one request (`None`: one
            /// request per receiver, or no limit).
            pub fn receivers_per_call(self) -> Option<usize> {
                match self {
                    ProviderKind::Outbox | ProviderKind::Blackhole => None,
                    $(ProviderKind::$variant => <$ty as Provider>::RECEIVERS_PER_CALL,)*
                }
            }

            /// The most receivers one call takes across several messages (`None`: one
            /// message per call).
            pub fn messages_per_call(self) -> Option<usize> {
                match self {
                    ProviderKind::Outbox | ProviderKind::Blackhole => None,
                    $(ProviderKind::$variant => <$ty as Provider>::MESSAGES_PER_CALL,)*
                }
            }

            /// Checks a network provider's settings (for the job check); `key` names the
            /// account.
            pub fn check_settings(self, key: &str, raw: &Map<String, Value>) -> Result<(), String> {
                match self {
                    ProviderKind::Outbox | ProviderKind::Blackhole => {
                        Err(format!("{key}: {} is not a network provider", self.name()))
                    }
                    $(ProviderKind::$variant => parse::<$ty>(key, raw).map(|_| ()),)*
                }
            }
        }

        /// A network provider, built: what an account dispatches its calls to.
        #[derive(Debug)]
        pub enum Remote {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl Remote {
            /// Parses the `settings` of a `kind` account named by `key` and builds the
            /// provider over a shared client (a call may take `timeout`; national phone
            /// numbers are dialled with `calling_code`); returns it with its base URL.
            pub fn open(
                kind: ProviderKind,
                key: &str,
                raw: &Map<String, Value>,
                client: reqwest::Client,
                timeout: Duration,
                calling_code: u16,
            ) -> Result<(Remote, String), String> {
                match kind {
                    ProviderKind::Outbox | ProviderKind::Blackhole => {
                        Err(format!("{key}: {} is not a network provider", kind.name()))
                    }
                    $(ProviderKind::$variant => open::<$ty>(key, raw, client, timeout, calling_code)
                        .map(|(p, base)| (Remote::$variant(p), base)),)*
                }
            }

            /// The health check: what was reached, or why not.
            pub async fn check(&self, base_url: &str, timeout: Duration) -> Result<String, String> {
                match self {
                    $(Remote::$variant(p) => p.check(base_url, timeout).await,)*
                }
            }

            /// Takes back the message the provider knows as `reference`.
            pub async fn recall(&self, reference: &str) -> Result<(), SendError> {
                match self {
                    $(Remote::$variant(p) => p.recall(reference).await,)*
                }
            }

            /// One provider call, as the provider answers it ([`Remote::send`] halves it).
            async fn send_once(
                &self,
                batch: &SendBatch,
                receivers: &[Receiver],
            ) -> Result<Delivered, SendError> {
                match self {
                    $(Remote::$variant(p) => p.send(batch, receivers).await,)*
                }
            }

            /// Whether two messages may share one call.
            pub fn shares_call(&self, a: &SendBatch, b: &SendBatch) -> bool {
                match self {
                    $(Remote::$variant(_) => <$ty as Provider>::shares_call(a, b),)*
                }
            }

            /// Whether an error of a shared call may be one message's fault.
            pub fn refuses_one(&self, e: &SendError) -> bool {
                match self {
                    $(Remote::$variant(_) => <$ty as Provider>::refuses_one(e),)*
                }
            }

            /// Whether an error of one message's call may be one number's fault.
            pub fn refuses_one_number(&self, e: &SendError) -> bool {
                match self {
                    $(Remote::$variant(_) => <$ty as Provider>::refuses_one_number(e),)*
                }
            }

            /// A receiver as the provider writes it in a call.
            pub fn number(&self, r: &Receiver) -> String {
                match self {
                    $(Remote::$variant(_) => <$ty as Provider>::number(r),)*
                }
            }

            /// One provider call for several messages.
            pub async fn send_many(
                &self,
                calls: &[(&SendBatch, &[Receiver])],
            ) -> Result<Delivered, SendError> {
                match self {
                    $(Remote::$variant(p) => p.send_many(calls).await,)*
                }
            }
        }
    };
}

registry! {
    /// tidings' signed JSON webhook ([`crate::webhook`]).
    Webhook => crate::webhook::Webhook,
    /// DingTalk custom robot ([`crate::dingtalk_robot`]).
    DingtalkRobot => crate::dingtalk_robot::DingTalkRobot,
    /// Feishu custom robot ([`crate::feishu_robot`]).
    FeishuRobot => crate::feishu_robot::FeishuRobot,
    /// WeCom group robot ([`crate::wecom_robot`]).
    WecomRobot => crate::wecom_robot::WecomRobot,
    /// Tencent Cloud SMS ([`crate::tencent_sms`]).
    TencentSms => crate::tencent_sms::TencentSms,
    /// Aliyun SMS ([`crate::aliyun_sms`]).
    AliyunSms => crate::aliyun_sms::AliyunSms,
    /// Email over SMTP ([`crate::email`]).
    Smtp => crate::email::Email,
    /// Yunpian SMS ([`crate::yunpian_sms`]).
    YunpianSms => crate::yunpian_sms::YunpianSms,
    /// DingTalk work notice ([`crate::dingtalk_work_notice`]).
    DingtalkWorkNotice => crate::dingtalk_work_notice::DingTalkWorkNotice,
    /// WeCom app message ([`crate::wecom_app`]).
    WecomApp => crate::wecom_app::WecomApp,
    /// WeChat official account template message ([`crate::wechat_official_account`]).
    WechatOfficialAccount => crate::wechat_official_account::WechatOfficialAccount,
    /// WeChat mini program subscribe message ([`crate::wechat_mini_program`]).
    WechatMiniProgram => crate::wechat_mini_program::WechatMiniProgram,
    /// GeTui push ([`crate::getui`]).
    Getui => crate::getui::Getui,
    /// Alipay mini program template message ([`crate::alipay_mini_program`]).
    AlipayMiniProgram => crate::alipay_mini_program::AlipayMiniProgram,
}

impl Remote {
    /// One message's call to `receivers`. A refusal that may be one number's
    /// ([`Provider::refuses_one_number`]: Aliyun refuses a whole `SendSms` for one illegal
    /// number in it) is answered by making the call again in halves, one after the other, down to the
    /// number at fault alone, so no other number's outcome depends on it (about 2·log2(n)
    /// calls more for one bad number among n, made in the call's slot and without rate-limit
    /// permits, as a shared call's halves are).
    ///
    /// Boxed: a provider call's future is kilobytes, and the halves recurse.
    pub fn send<'a>(
        &'a self,
        batch: &'a SendBatch,
        receivers: &'a [Receiver],
    ) -> BoxFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            match self.send_once(batch, receivers).await {
                Err(e) if receivers.len() > 1 && self.refuses_one_number(&e) => {
                    let (first, second) = receivers.split_at(receivers.len() / 2);
                    let mut each = each_of(self.send(batch, first).await, first.len());
                    each.extend(each_of(self.send(batch, second).await, second.len()));
                    Ok(Delivered::Each(each))
                }
                answer => answer,
            }
        })
    }
}

/// A call's answer for each of its `n` receivers (an answer for fewer is padded with a
/// transient error: those are sent again). A provider reference is not kept: no provider
/// that refuses one number for a whole call answers with one.
pub(crate) fn each_of(
    answer: Result<Delivered, SendError>,
    n: usize,
) -> Vec<Result<(), SendError>> {
    match answer {
        Ok(Delivered::All | Delivered::Tracked { each: None, .. }) => vec![Ok(()); n],
        Ok(
            Delivered::Each(mut each)
            | Delivered::Tracked {
                each: Some(mut each),
                ..
            },
        ) => {
            each.resize(
                n,
                Err(SendError::Transient(
                    "the provider answered for fewer receivers than it was sent".into(),
                )),
            );
            each
        }
        Err(e) => vec![Err(e); n],
    }
}

impl ProviderKind {
    /// Whether the provider sends over the network (and so takes `settings`).
    pub fn is_remote(self) -> bool {
        !matches!(self, ProviderKind::Outbox | ProviderKind::Blackhole)
    }
}

/// `provider = "..."`: one of [`ProviderKind::NAMES`] (an unknown name is refused with the
/// list, as a derived enum would).
impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = ProviderKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a provider name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProviderKind, E> {
                ProviderKind::NAMES
                    .iter()
                    .position(|n| *n == v)
                    .map(|i| ProviderKind::ALL[i])
                    .ok_or_else(|| E::unknown_variant(v, ProviderKind::NAMES))
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_and_parses_back() {
        assert_eq!(ProviderKind::ALL.len(), ProviderKind::NAMES.len());
        for (kind, name) in ProviderKind::ALL.iter().zip(ProviderKind::NAMES) {
            assert_eq!(kind.name(), *name);
            let parsed: ProviderKind =
                serde_json::from_value(serde_json::json!(name)).expect("a registered name");
            assert_eq!(parsed, *kind);
        }
        let mut names = ProviderKind::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            ProviderKind::NAMES.len(),
            "a name is used twice"
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Account {
            provider: ProviderKind,
        }
        let e = toml::from_str::<Account>("provider = \"pigeon\"").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(
                "unknown variant `pigeon`, expected one of `outbox`, `blackhole`, `webhook`"
            ),
            "{text}"
        );
        assert!(text.contains("`alipay_mini_program`"), "{text}");
    }

    #[test]
    fn one_call_per_message_fits_every_provider() {
        for kind in ProviderKind::ALL {
            if let Some(n) = kind.receivers_per_call() {
                assert!(
                    n >= tidings_model::receiver::MAX_RECEIVERS,
                    "{}: {n} receivers per request",
                    kind.name()
                );
            }
        }
    }

    /// The SMS providers post to a URL parsed once from their `endpoint` (the webhook from its
    /// `url`): one that is not an http(s) URL is refused by the job's check, naming the key
    /// and showing a good one; a good one (a trailing slash or not) passes and builds.
    #[test]
    fn an_sms_endpoint_or_a_webhook_url_is_checked_as_a_url() {
        // The setting that holds the URL.
        let field_of = |kind: ProviderKind| {
            if kind == ProviderKind::Webhook {
                "url"
            } else {
                "endpoint"
            }
        };
        let settings = |kind: ProviderKind, endpoint: &str| -> Map<String, Value> {
            let mut raw = match kind {
                ProviderKind::TencentSms => serde_json::json!({"secret_id": "id",
                    "secret_key": "key", "sdk_app_id": "1400006666", "sign_name": "s",
                    "template_id": "1110"}),
                ProviderKind::AliyunSms => serde_json::json!({"access_key_id": "id",
                    "access_key_secret": "secret", "sign_name": "s", "template_code": "SMS_1"}),
                ProviderKind::YunpianSms => serde_json::json!({"apikey": "key"}),
                _ => serde_json::json!({}),
            };
            raw[field_of(kind)] = endpoint.into();
            raw.as_object().cloned().unwrap()
        };
        let kinds = [
            (ProviderKind::TencentSms, "https://sms.tencentcloudapi.com"),
            (ProviderKind::AliyunSms, "https://dysmsapi.aliyuncs.com"),
            (ProviderKind::YunpianSms, "https://sms.yunpian.com"),
            (ProviderKind::Webhook, "https://example.com/hooks/tidings"),
        ];
        for (kind, default) in kinds {
            for bad in ["127.0.0.1:9000", "ftp://host/sms", "http//host", "https://"] {
                // Quoted as written.
                let e = kind
                    .check_settings("accounts.sms", &settings(kind, bad))
                    .unwrap_err();
                let field = field_of(kind);
                assert!(
                    e.starts_with(&format!("accounts.sms.settings.{field}: `{bad}`"))
                        && e.ends_with(&format!("write one such as `{default}`")),
                    "{}: {e}",
                    kind.name()
                );
            }
            // The call's path would land in an endpoint's query: refused (a webhook's URL is
            // posted to as written, its query too).
            let queried = "https://gw.example.com/sms?token=a";
            let checked = kind.check_settings("accounts.sms", &settings(kind, queried));
            if kind == ProviderKind::Webhook {
                checked.unwrap();
            } else {
                let e = checked.unwrap_err();
                assert!(e.contains("has a query or a fragment"), "{e}");
            }
            for good in ["http://127.0.0.1:9000", "https://sms.example.com/"] {
                let raw = settings(kind, good);
                kind.check_settings("accounts.sms", &raw).unwrap();
                let client = reqwest::Client::new();
                let (_, base) = Remote::open(
                    kind,
                    "accounts.sms",
                    &raw,
                    client,
                    Duration::from_secs(1),
                    86,
                )
                .unwrap();
                if kind != ProviderKind::Webhook {
                    assert_eq!(base, good.trim_end_matches('/'));
                }
            }
        }
    }

    #[test]
    fn robots_carry_their_quota_and_sms_providers_their_channel() {
        assert_eq!(ProviderKind::DingtalkRobot.per_minute(), Some(20));
        assert_eq!(ProviderKind::WecomRobot.per_minute(), Some(20));
        assert_eq!(ProviderKind::FeishuRobot.per_minute(), Some(100));
        assert_eq!(ProviderKind::TencentSms.per_minute(), None);
        assert_eq!(
            ProviderKind::AliyunSms.channels(),
            Some(&[Channel::Sms][..])
        );
        assert_eq!(ProviderKind::Webhook.channels(), None);
        assert!(!ProviderKind::Outbox.is_remote() && ProviderKind::Getui.is_remote());
    }
}
