//! The provider registry: the one list of network providers (`ProviderKind` → settings →
//! implementation) and the dispatch of a call to the account's provider. Providers are leaves:
//! they import `crate::util::kit`, never this file.

use serde_json::{Map, Value};

use crate::SendBatch;
use crate::account::ProviderKind;
use crate::alipay_mini_program::{AlipayConfig, AlipayMiniProgram};
use crate::aliyun_sms::{AliyunSms, AliyunSmsConfig};
use crate::dingtalk_robot::{DingTalkRobot, DingTalkRobotConfig};
use crate::dingtalk_work_notice::{DingTalkWorkNotice, DingTalkWorkNoticeConfig};
use crate::email::{Email, EmailConfig};
use crate::feishu_robot::{FeishuRobot, FeishuRobotConfig};
use crate::getui::{Getui, GetuiConfig};
use crate::tencent_sms::{TencentSms, TencentSmsConfig};
use crate::util::kit::{Delivered, endpoint, settings};
use crate::util::retry::SendError;
use crate::webhook::{Webhook, WebhookConfig};
use crate::wechat_mini_program::WechatMiniProgram;
use crate::wechat_official_account::{WechatConfig, WechatOfficialAccount};
use crate::wecom_app::{WecomApp, WecomAppConfig};
use crate::wecom_robot::{WecomRobot, WecomRobotConfig};
use crate::yunpian_sms::{YunpianSms, YunpianSmsConfig};

/// A network provider's checked settings.
#[derive(Debug, Clone)]
pub enum RemoteConfig {
    /// `webhook`.
    Webhook(WebhookConfig),
    /// `dingtalk_robot`.
    DingTalkRobot(DingTalkRobotConfig),
    /// `feishu_robot`.
    FeishuRobot(FeishuRobotConfig),
    /// `wecom_robot`.
    WecomRobot(WecomRobotConfig),
    /// `tencent_sms`.
    TencentSms(TencentSmsConfig),
    /// `aliyun_sms`.
    AliyunSms(AliyunSmsConfig),
    /// `smtp`.
    Email(EmailConfig),
    /// `yunpian_sms`.
    YunpianSms(YunpianSmsConfig),
    /// `dingtalk_work_notice`.
    DingTalkWorkNotice(DingTalkWorkNoticeConfig),
    /// `wecom_app`.
    WecomApp(WecomAppConfig),
    /// `wechat_official_account`.
    WechatOfficialAccount(WechatConfig),
    /// `wechat_mini_program`.
    WechatMiniProgram(WechatConfig),
    /// `getui`.
    Getui(GetuiConfig),
    /// `alipay_mini_program`.
    AlipayMiniProgram(AlipayConfig),
}

impl RemoteConfig {
    /// Parses the `settings` of a `kind` account named by `key`.
    pub fn parse(
        kind: ProviderKind,
        key: &str,
        raw: &Map<String, Value>,
    ) -> Result<RemoteConfig, String> {
        Ok(match kind {
            ProviderKind::Webhook => RemoteConfig::Webhook(settings(key, raw)?),
            ProviderKind::DingtalkRobot => RemoteConfig::DingTalkRobot(settings(key, raw)?),
            ProviderKind::FeishuRobot => RemoteConfig::FeishuRobot(settings(key, raw)?),
            ProviderKind::WecomRobot => RemoteConfig::WecomRobot(settings(key, raw)?),
            ProviderKind::TencentSms => RemoteConfig::TencentSms(settings(key, raw)?),
            ProviderKind::AliyunSms => RemoteConfig::AliyunSms(settings(key, raw)?),
            ProviderKind::YunpianSms => RemoteConfig::YunpianSms(settings(key, raw)?),
            ProviderKind::DingtalkWorkNotice => {
                RemoteConfig::DingTalkWorkNotice(settings(key, raw)?)
            }
            ProviderKind::WecomApp => RemoteConfig::WecomApp(settings(key, raw)?),
            ProviderKind::WechatOfficialAccount => {
                RemoteConfig::WechatOfficialAccount(settings(key, raw)?)
            }
            ProviderKind::WechatMiniProgram => RemoteConfig::WechatMiniProgram(settings(key, raw)?),
            ProviderKind::Getui => RemoteConfig::Getui(settings(key, raw)?),
            ProviderKind::AlipayMiniProgram => {
                let c: AlipayConfig = settings(key, raw)?;
                crate::util::sign::rsa_key(&c.private_key)
                    .map_err(|e| format!("{key}.settings.private_key: {e}"))?;
                RemoteConfig::AlipayMiniProgram(c)
            }
            ProviderKind::Smtp => {
                let c: EmailConfig = settings(key, raw)?;
                c.from.parse::<lettre::message::Mailbox>().map_err(|e| {
                    format!(
                        "{key}.settings.from: {:?}: {e}; write \"Name <a@b.c>\" or \"a@b.c\"",
                        c.from
                    )
                })?;
                RemoteConfig::Email(c)
            }
            ProviderKind::Outbox | ProviderKind::Blackhole => {
                return Err(format!("{key}: {} is not a network provider", kind.name()));
            }
        })
    }
}

impl RemoteConfig {
    /// Where the provider is reached: its endpoint's base URL (SMTP: `smtp://host:port`).
    pub fn base_url(&self) -> String {
        match self {
            RemoteConfig::Webhook(c) => c.url.clone(),
            RemoteConfig::DingTalkRobot(c) => endpoint(&c.endpoint, "https://oapi.dingtalk.com"),
            RemoteConfig::FeishuRobot(c) => endpoint(&c.endpoint, "https://open.feishu.cn"),
            RemoteConfig::WecomRobot(c) => endpoint(&c.endpoint, "https://qyapi.weixin.qq.com"),
            RemoteConfig::TencentSms(c) => endpoint(&c.endpoint, "https://sms.tencentcloudapi.com"),
            RemoteConfig::AliyunSms(c) => endpoint(&c.endpoint, "https://dysmsapi.aliyuncs.com"),
            RemoteConfig::YunpianSms(c) => endpoint(&c.endpoint, "https://sms.yunpian.com"),
            RemoteConfig::DingTalkWorkNotice(c) => {
                endpoint(&c.endpoint, "https://oapi.dingtalk.com")
            }
            RemoteConfig::WecomApp(c) => endpoint(&c.endpoint, "https://qyapi.weixin.qq.com"),
            RemoteConfig::WechatOfficialAccount(c) | RemoteConfig::WechatMiniProgram(c) => {
                endpoint(&c.endpoint, "https://api.weixin.qq.com")
            }
            RemoteConfig::Getui(c) => endpoint(&c.endpoint, "https://restapi.getui.com"),
            RemoteConfig::AlipayMiniProgram(c) => {
                endpoint(&c.endpoint, "https://openapi.alipay.com")
            }
            RemoteConfig::Email(c) => format!(
                "smtp://{}:{}",
                c.host,
                c.port.unwrap_or(match c.tls {
                    crate::email::TlsMode::Starttls => 587,
                    crate::email::TlsMode::Tls => 465,
                    crate::email::TlsMode::None => 25,
                })
            ),
        }
    }
}

/// Opens a TCP connection to a URL's host and port: the health check of an HTTP provider
/// (nothing is sent). Returns the address reached.
pub async fn reach(url: &str, timeout: std::time::Duration) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => Ok(s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| format!("{host}:{port}"))),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!("{host}:{port}: no answer within {timeout:?}")),
    }
}

/// Checks a network provider's settings (for the job check).
pub fn check_settings(
    kind: ProviderKind,
    key: &str,
    raw: &Map<String, Value>,
) -> Result<(), String> {
    RemoteConfig::parse(kind, key, raw).map(|_| ())
}

/// A network provider, built.
#[derive(Debug)]
pub enum Remote {
    /// `webhook`.
    Webhook(Webhook),
    /// `dingtalk_robot`.
    DingTalkRobot(DingTalkRobot),
    /// `feishu_robot`.
    FeishuRobot(FeishuRobot),
    /// `wecom_robot`.
    WecomRobot(WecomRobot),
    /// `tencent_sms`.
    TencentSms(TencentSms),
    /// `aliyun_sms`.
    AliyunSms(AliyunSms),
    /// `smtp`.
    Email(Email),
    /// `yunpian_sms`.
    YunpianSms(YunpianSms),
    /// `dingtalk_work_notice`.
    DingTalkWorkNotice(DingTalkWorkNotice),
    /// `wecom_app`.
    WecomApp(WecomApp),
    /// `wechat_official_account`.
    WechatOfficialAccount(WechatOfficialAccount),
    /// `wechat_mini_program`.
    WechatMiniProgram(WechatMiniProgram),
    /// `getui`.
    Getui(Getui),
    /// `alipay_mini_program`.
    AlipayMiniProgram(AlipayMiniProgram),
}

impl Remote {
    /// The health check: SMTP connects, greets and logs in; token-based providers fetch an
    /// access token (so the credentials are checked); other HTTP providers are reached by
    /// TCP (no message is sent).
    pub async fn check(
        &self,
        base_url: &str,
        timeout: std::time::Duration,
    ) -> Result<String, String> {
        let token = |r: Result<(), SendError>| {
            r.map(|()| format!("{base_url}: access token fetched"))
                .map_err(|e| e.reason().to_string())
        };
        match self {
            Remote::Email(e) => e.check().await.map(|()| format!("{base_url} answered")),
            Remote::DingTalkWorkNotice(p) => token(p.check().await),
            Remote::WecomApp(p) => token(p.check().await),
            Remote::WechatOfficialAccount(p) => token(p.check().await),
            Remote::WechatMiniProgram(p) => token(p.check().await),
            Remote::Getui(p) => token(p.check().await),
            _ => reach(base_url, timeout)
                .await
                .map(|a| format!("reached {a}")),
        }
    }

    /// Builds the provider over a shared client; a call may take `timeout`.
    pub fn new(
        config: RemoteConfig,
        client: reqwest::Client,
        timeout: std::time::Duration,
    ) -> Result<Remote, String> {
        Ok(match config {
            RemoteConfig::Email(c) => Remote::Email(Email::new(c, timeout)?),
            RemoteConfig::Webhook(c) => Remote::Webhook(Webhook::new(c, client)),
            RemoteConfig::DingTalkRobot(c) => Remote::DingTalkRobot(DingTalkRobot::new(c, client)),
            RemoteConfig::FeishuRobot(c) => Remote::FeishuRobot(FeishuRobot::new(c, client)),
            RemoteConfig::WecomRobot(c) => Remote::WecomRobot(WecomRobot::new(c, client)),
            RemoteConfig::TencentSms(c) => Remote::TencentSms(TencentSms::new(c, client)),
            RemoteConfig::AliyunSms(c) => Remote::AliyunSms(AliyunSms::new(c, client)),
            RemoteConfig::YunpianSms(c) => Remote::YunpianSms(YunpianSms::new(c, client)),
            RemoteConfig::DingTalkWorkNotice(c) => {
                Remote::DingTalkWorkNotice(DingTalkWorkNotice::new(c, client))
            }
            RemoteConfig::WecomApp(c) => Remote::WecomApp(WecomApp::new(c, client)),
            RemoteConfig::WechatOfficialAccount(c) => {
                Remote::WechatOfficialAccount(WechatOfficialAccount::new(c, client))
            }
            RemoteConfig::WechatMiniProgram(c) => {
                Remote::WechatMiniProgram(WechatMiniProgram::new(c, client))
            }
            RemoteConfig::Getui(c) => Remote::Getui(Getui::new(c, client)),
            RemoteConfig::AlipayMiniProgram(c) => {
                Remote::AlipayMiniProgram(AlipayMiniProgram::new(c, client)?)
            }
        })
    }

    /// Takes back the message the provider knows as `reference`.
    pub async fn recall(&self, reference: &str) -> Result<(), SendError> {
        match self {
            Remote::DingTalkWorkNotice(p) => match reference.parse::<i64>() {
                Ok(task_id) => p.recall(task_id).await,
                Err(_) => Err(SendError::Permanent(format!(
                    "dingtalk_work_notice: task id {reference:?} is not a number"
                ))),
            },
            Remote::WecomApp(p) => p.recall(reference).await,
            _ => Err(SendError::Permanent(
                "this provider cannot recall a message".into(),
            )),
        }
    }

    /// One provider call.
    pub async fn send(
        &self,
        batch: &SendBatch,
        receivers: &[String],
    ) -> Result<Delivered, SendError> {
        match self {
            Remote::Webhook(p) => p.send(batch, receivers).await,
            Remote::DingTalkRobot(p) => p.send(batch, receivers).await,
            Remote::FeishuRobot(p) => p.send(batch, receivers).await,
            Remote::WecomRobot(p) => p.send(batch, receivers).await,
            Remote::TencentSms(p) => p.send(batch, receivers).await,
            Remote::AliyunSms(p) => p.send(batch, receivers).await,
            Remote::Email(p) => p.send(batch, receivers).await,
            Remote::YunpianSms(p) => p.send(batch, receivers).await,
            Remote::DingTalkWorkNotice(p) => p.send(batch, receivers).await,
            Remote::WecomApp(p) => p.send(batch, receivers).await,
            Remote::WechatOfficialAccount(p) => p.send(batch, receivers).await,
            Remote::WechatMiniProgram(p) => p.send(batch, receivers).await,
            Remote::Getui(p) => p.send(batch, receivers).await,
            Remote::AlipayMiniProgram(p) => p.send(batch, receivers).await,
        }
    }
}
