//! Where messages and tracking rows leave tidings: channel providers behind accounts, rate
//! limits, retries, and the tracking writers. Async (tokio); knows nothing of timely.
//!
//! # Layout
//!
//! - [`account`]: an account of the job (`[accounts.NAME]`): its provider, rate limit,
//!   concurrency and retry policy; [`account::Accounts`] dispatches a [`SendBatch`] to one.
//!   `Account::send` is one step per function (`account/send.rs`); its retries over
//!   per-receiver answers are a policy of their own ([`account::retry`]).
//! - [`provider`]: the provider registry: one line per network provider, from which the
//!   `ProviderKind` names, the settings check, the build and the dispatch of a call are
//!   generated. Providers are leaves that implement [`util::kit::Provider`] and import only
//!   [`util`] (`util::kit`: the trait, settings, content fields, endpoints, answers), so the
//!   chain runs one way. Each has a `tests.rs` of the provider's documented requests and
//!   answers.
//! - [`route`]: account groups: a template's deliveries spread over members by weight, with
//!   failover.
//! - [`recall`]: the recall books (what was sent where, so a recall can reach it).
//! - [`outbox`]: the `outbox`, `blackhole` and `memory` providers: real sinks for the demo,
//!   tests and benches.
//! - The network providers, one module each, each building and signing its request as the
//!   provider documents it: [`webhook`], [`dingtalk_robot`], [`dingtalk_work_notice`],
//!   [`feishu_robot`], [`wecom_robot`], [`wecom_app`], [`tencent_sms`], [`aliyun_sms`],
//!   [`yunpian_sms`], [`email`] (SMTP), [`wechat_official_account`], [`wechat_mini_program`],
//!   [`alipay_mini_program`], [`getui`].
//! - [`simulator`]: a local server that speaks the providers' APIs and checks what it
//!   receives (tests, benches, `tidings simulator`).
//! - [`util`]: machinery every provider shares: typed retry decisions with backoff, request
//!   signing, the HTTP client, access-token caches, `${ENV}` secrets, call statistics; and
//!   the one HTTP server (`util::server`: axum on hyper) the simulator and the admin API run on.
//! - [`tracking`]: the Parquet writer of the `events` and `dead_letters` tables
//!   (`docs/tables.md`), the Redis writer, and an in-memory collector for tests.

pub mod account;
pub mod alipay_mini_program;
pub mod aliyun_sms;
pub mod dingtalk_robot;
pub mod dingtalk_work_notice;
pub mod email;
pub mod feishu_robot;
pub mod getui;
pub mod outbox;
pub mod provider;
pub mod recall;
pub mod route;
pub mod simulator;
pub mod tencent_sms;
pub mod tracking;
pub mod util;
pub mod webhook;
pub mod wechat_mini_program;
pub mod wechat_official_account;
pub mod wecom_app;
pub mod wecom_robot;
pub mod yunpian_sms;

use std::sync::Arc;

pub use tidings_model::Receiver;
use tidings_model::{Channel, MessageMeta, MsgType};

/// One call to a provider: one message to some of its receivers.
#[derive(Debug, Clone)]
pub struct SendBatch {
    /// The message.
    pub meta: Arc<MessageMeta>,
    /// Its channel.
    pub channel: Channel,
    /// Its template's kind: a verification code is never held to share a call with other
    /// messages (`Provider::MESSAGES_PER_CALL`).
    pub msg_type: MsgType,
    /// The receivers to send to in this call (one held in place: most messages have one).
    pub receivers: tidings_model::message::Receivers,
    /// The event time the send was judged at (its deliveries': the record's, or the release
    /// time after a night park). A recall reaches the sends at or before its own event time,
    /// whatever else has been sent by the time it runs.
    pub event_time: tidings_model::time::Millis,
}

/// The outcome of one receiver: `Ok`, or the provider's reason after retries.
pub type Outcome = Result<(), String>;

/// The outcomes of a send's receivers, in order: one held in place (most messages have one
/// receiver: no list allocated for it).
pub type Outcomes = smallvec::SmallVec<[Outcome; 1]>;
