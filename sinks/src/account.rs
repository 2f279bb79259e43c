//! Accounts (`[accounts.NAME]` in the job): a provider plus the rate limit, concurrency and
//! retry policy around it. [`Accounts`] is built once per job and shared by every worker.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use governor::clock::DefaultClock;
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use tidings_model::Channel;
use tokio::sync::Semaphore;

use crate::outbox::{Outbox, Outboxes};
use crate::provider::Remote;
use crate::util::http;
use crate::util::kit::Delivered;
use crate::util::retry::{RetryPolicy, SendError};
use crate::util::secrets::Secrets;
use crate::util::stats::{Raised, SendStats};

/// A direct limiter that reports the permits left after each acquisition.
type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
use crate::{Outcome, SendBatch};

fn default_concurrency() -> usize {
    16
}

pub use crate::provider::ProviderKind;

/// What a rate-limit permit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateStrategy {
    /// One permit per provider call.
    #[default]
    Request,
    /// One permit per receiver.
    Receivers,
}

/// `rate_limit = { per_second = 50, strategy = "request" }` or `{ per_minute = 20 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Permits per second (also the burst). Example: `50`.
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Permits per minute (the burst is one minute's worth), instead of `per_second`.
    /// Example: `20` (a DingTalk robot's quota).
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// `request` (default) or `receivers`.
    #[serde(default)]
    pub strategy: RateStrategy,
}

/// One `[accounts.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The channel the account sends on, e.g. `"sms"`; templates using it must match.
    pub channel: Channel,
    /// The provider's own settings (credentials, endpoint), per provider; string values
    /// `"${NAME}"` are read from the environment. Example: `settings = { url = "..." }`.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Seconds a provider call may take before it counts as a (retried) timeout. Default 10.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// The provider, e.g. `"outbox"` or `"tencent_sms"` (one of [`ProviderKind::NAMES`]).
    pub provider: ProviderKind,
    /// Outbox directory (outbox only; relative to the job file). Example: `"var/outbox"`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Rate limit; sends wait for a permit, none is dropped. Default: unlimited.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Provider calls in flight at once. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per call, retries included, for transient errors. Default 4.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Receivers the local provider refuses with a permanent error, to rehearse SEND_FAIL
    /// (local providers only). Default: none.
    #[serde(default)]
    pub reject_receivers: Vec<String>,
    /// Where deliveries wait for this account: `memory` (in the send stage, holding back the
    /// epoch they came in) or `kafka` (the account's own topic, read back at the account's
    /// pace, so a backlog here never delays another account). Default: `kafka` for a
    /// rate-limited account of a Kafka job, else `memory`.
    #[serde(default)]
    pub queue: Option<QueueKind>,
    /// A `kafka`-queued account's deliveries held in memory at once. Default: two seconds of
    /// its rate limit, at least 100.
    #[serde(default)]
    pub max_queued: Option<usize>,
}

/// Where an account's deliveries wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// In the send stage.
    Memory,
    /// In the account's own Kafka topic.
    Kafka,
}

impl RateLimitConfig {
    /// The sustained rate in permits per second.
    pub fn permits_per_second(&self) -> f64 {
        match (self.per_second, self.per_minute) {
            (Some(n), _) => f64::from(n),
            (None, Some(n)) => f64::from(n) / 60.0,
            (None, None) => 0.0,
        }
    }
}

impl AccountConfig {
    /// The account's rate limit, or its provider's quota when it sets none.
    pub fn effective_rate_limit(&self) -> Option<RateLimitConfig> {
        self.rate_limit.or_else(|| {
            self.provider.per_minute().map(|n| RateLimitConfig {
                per_second: None,
                per_minute: Some(n),
                strategy: RateStrategy::Request,
            })
        })
    }

    /// Whether this account's deliveries wait in its own Kafka topic.
    pub fn queues_in_kafka(&self, kafka_job: bool) -> bool {
        match self.queue {
            Some(QueueKind::Kafka) => true,
            Some(QueueKind::Memory) => false,
            None => kafka_job && self.effective_rate_limit().is_some(),
        }
    }

    /// Deliveries held in memory at once when queued in Kafka.
    pub fn queue_capacity(&self) -> usize {
        self.max_queued.unwrap_or_else(|| {
            self.effective_rate_limit()
                .map(|r| (r.permits_per_second() * 2.0) as usize)
                .unwrap_or(0)
                .max(100)
        })
    }

    /// Every problem with this account, each naming `key` (e.g. `accounts.sms-main`).
    pub fn validate(&self, key: &str) -> Vec<String> {
        self.validate_as(key, true)
    }

    /// Every problem with this account; with `resolve_settings` false the provider's
    /// `settings` are not read at all (their `${ENV}` secrets need not be set): the check of
    /// a job loaded only to read its tracking (`tidings sql`, `report`, `trace`).
    pub fn validate_as(&self, key: &str, resolve_settings: bool) -> Vec<String> {
        let mut p = Vec::new();
        if self.provider == ProviderKind::Outbox && self.dir.is_none() {
            p.push(format!(
                "{key}.dir: the outbox provider needs a directory, e.g. dir = \"var/outbox\""
            ));
        }
        if self.concurrency == 0 {
            p.push(format!("{key}.concurrency: must be at least 1"));
        }
        if let Some(r) = self.rate_limit {
            match (r.per_second, r.per_minute) {
                (Some(0), _) | (_, Some(0)) => p.push(format!(
                    "{key}.rate_limit: must allow at least 1 (omit rate_limit for none)"
                )),
                (Some(_), Some(_)) | (None, None) => p.push(format!(
                    "{key}.rate_limit: give exactly one of per_second and per_minute"
                )),
                _ => {}
            }
        }
        if !self.provider.is_remote() && !self.settings.is_empty() {
            p.push(format!(
                "{key}.settings: the {} provider takes no settings; remove them",
                self.provider.name()
            ));
        }
        if self.provider.is_remote()
            && resolve_settings
            && let Err(e) = self.provider.check_settings(key, &self.settings)
        {
            p.push(e);
        }
        if let Some(channels) = self.provider.channels()
            && !channels.contains(&self.channel)
        {
            p.push(format!(
                "{key}.provider: {} sends {}, not {}; use a provider of the channel or change the channel",
                self.provider.name(),
                channels.iter().map(|c| c.name()).collect::<Vec<_>>().join(" or "),
                self.channel.name()
            ));
        }
        if self.attempts == Some(0) {
            p.push(format!("{key}.attempts: must be at least 1"));
        }
        if self.max_queued == Some(0) {
            p.push(format!("{key}.max_queued: must be at least 1"));
        }
        p
    }
}

enum Provider {
    Outbox(Arc<Outbox>),
    Blackhole,
    Remote(ProviderKind, Box<Remote>, String),
}

/// A built account.
pub struct Account {
    /// Its name in the job.
    pub name: String,
    /// Its channel.
    pub channel: Channel,
    provider: Provider,
    limiter: Option<(Limiter, RateLimitConfig, NonZeroU32)>,
    slots: Semaphore,
    concurrency: usize,
    /// Live counters (admin API, `/metrics`).
    pub stats: SendStats,
    retry: RetryPolicy,
    reject: Vec<String>,
    /// Raised when the run halts: a send still waiting for its permits or slot gives up
    /// (its receivers are not sent) instead of calling the provider.
    halt: Arc<std::sync::atomic::AtomicBool>,
    /// What it sent that can be recalled.
    book: crate::recall::RecallBook,
    /// Its settings' secrets: every reason leaving the account is scrubbed of them.
    secrets: Secrets,
}

/// The end of the outcome of a receiver not sent because the run halted first: no provider
/// was called, so it has no terminal state (a new run sends it).
pub const NOT_SENT_HALTED: &str = "not sent: the run was halted";

impl Account {
    /// Every receiver of `batch` failed without a call: the run halted before it.
    fn not_sent(&self, batch: &SendBatch) -> Vec<Outcome> {
        batch
            .receivers
            .iter()
            .map(|_| Err(format!("{}: {NOT_SENT_HALTED}", self.name)))
            .collect()
    }

    /// Sends one batch: waits for rate-limit permits and a concurrency slot, then calls the
    /// provider with retries. One outcome per receiver, in order.
    pub async fn send(&self, batch: &SendBatch) -> Vec<Outcome> {
        let (refused, to_send): (Vec<&String>, Vec<&String>) = batch
            .receivers
            .iter()
            .partition(|r| self.reject.contains(r));
        let mut outcome_of = BTreeMap::new();
        for r in refused {
            outcome_of.insert(
                r.as_str(),
                Err(format!("{}: receiver refused by the provider", self.name)),
            );
        }
        if !to_send.is_empty() && self.halt.load(Ordering::Relaxed) {
            return self.not_sent(batch);
        }
        if !to_send.is_empty() {
            let halted = async {
                while !self.halt.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            };
            tokio::pin!(halted);
            if let Some((limiter, rate, burst)) = &self.limiter {
                let _waiting = Raised::new(&self.stats.waiting);
                let mut need = match rate.strategy {
                    RateStrategy::Request => 1,
                    RateStrategy::Receivers => to_send.len() as u32,
                };
                while need > 0 {
                    let n = need.min(burst.get());
                    let ready = tokio::select! {
                        r = limiter.until_n_ready(NonZeroU32::new(n).expect("n > 0")) => r,
                        () = &mut halted => return self.not_sent(batch),
                    };
                    if let Ok(state) = ready {
                        self.stats
                            .tokens_after_acquire(state.remaining_burst_capacity());
                    }
                    need -= n;
                }
            }
            let _slot = tokio::select! {
                s = self.slots.acquire() => s.expect("semaphore is never closed"),
                () = &mut halted => return self.not_sent(batch),
            };
            if self.halt.load(Ordering::Relaxed) {
                return self.not_sent(batch);
            }
            let _in_flight = Raised::new(&self.stats.in_flight);
            let receivers: Vec<String> = to_send.iter().map(|r| r.to_string()).collect();
            // Receivers settle one by one: a provider that answers per receiver gets only the
            // ones still unsettled (a transient refusal) on the next attempt, so those it
            // accepted are not sent twice.
            let settled: std::sync::Mutex<Vec<Option<Result<(), SendError>>>> =
                std::sync::Mutex::new(vec![None; receivers.len()]);
            let references: std::sync::Mutex<Vec<(String, Vec<String>)>> =
                std::sync::Mutex::new(Vec::new());
            let result = self
                .retry
                .run_observed(&self.stats, || async {
                    let pending: Vec<usize> = {
                        let done = settled.lock().unwrap_or_else(|p| p.into_inner());
                        (0..receivers.len())
                            .filter(|&i| done[i].is_none())
                            .collect()
                    };
                    // The first attempt (and any with nothing settled) sends the batch as is.
                    let subset: Vec<String>;
                    let subset: &[String] = if pending.len() == receivers.len() {
                        &receivers
                    } else {
                        subset = pending.iter().map(|&i| receivers[i].clone()).collect();
                        &subset
                    };
                    let answer = match &self.provider {
                        Provider::Outbox(o) => o.send(batch, subset).map(|()| Delivered::All),
                        Provider::Blackhole => Ok(Delivered::All),
                        Provider::Remote(_, r, _) => r.send(batch, subset).await,
                    }?;
                    let (each, reference) = match answer {
                        Delivered::All => (None, None),
                        Delivered::Each(v) => (Some(v), None),
                        Delivered::Tracked { reference, each } => (each, Some(reference)),
                    };
                    let mut settle = settled.lock().unwrap_or_else(|p| p.into_inner());
                    let mut retry = None;
                    let mut reached = Vec::new();
                    for (k, &i) in pending.iter().enumerate() {
                        let one = match &each {
                            None => Ok(()),
                            Some(v) => v.get(k).cloned().unwrap_or_else(|| {
                                Err(SendError::Permanent(format!(
                                    "{}: no answer for this receiver",
                                    self.name
                                )))
                            }),
                        };
                        match one {
                            Err(SendError::Transient(why)) => retry = Some(why),
                            other => {
                                if other.is_ok() && reference.is_some() {
                                    reached.push(receivers[i].clone());
                                }
                                settle[i] = Some(other);
                            }
                        }
                    }
                    drop(settle);
                    if let Some(reference) = reference {
                        references
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((reference, reached));
                    }
                    match retry {
                        Some(why) => Err(SendError::Transient(why)),
                        None => Ok(()),
                    }
                })
                .await;
            let settled = settled.into_inner().unwrap_or_else(|p| p.into_inner());
            for (i, r) in to_send.iter().enumerate() {
                let outcome = match (&settled[i], &result) {
                    (Some(Ok(())), _) => Ok(()),
                    (Some(Err(e)), _) => Err(self.secrets.scrub(e.reason())),
                    (None, Err(e)) => Err(self.secrets.scrub(e.reason())),
                    (None, Ok(())) => Err(format!("{}: no answer for this receiver", self.name)),
                };
                outcome_of.insert(r.as_str(), outcome);
            }
            let mut references = references.into_inner().unwrap_or_else(|p| p.into_inner());
            // The outbox stands in for a recall-capable provider on a recall channel.
            if self.channel.supports_recall() && matches!(self.provider, Provider::Outbox(_)) {
                let reached = receivers
                    .iter()
                    .filter(|r| outcome_of.get(r.as_str()).is_some_and(|o| o.is_ok()))
                    .cloned()
                    .collect();
                references.push((batch.meta.message_id.clone(), reached));
            }
            for (reference, reached) in references {
                if reached.is_empty() {
                    continue;
                }
                self.book.record(crate::recall::Entry {
                    message_id: batch.meta.message_id.clone(),
                    template_id: batch.meta.template_id,
                    business_id: batch.meta.business_id,
                    reference,
                    receivers: reached,
                    time: crate::util::kit::now_ms(),
                    recalled: false,
                });
            }
        }
        let outcomes: Vec<Outcome> = batch
            .receivers
            .iter()
            .map(|r| outcome_of.get(r.as_str()).cloned().unwrap_or(Ok(())))
            .collect();
        let failed = outcomes.iter().filter(|o| o.is_err()).count() as u64;
        self.stats.failed.fetch_add(failed, Ordering::Relaxed);
        self.stats
            .sent
            .fetch_add(outcomes.len() as u64 - failed, Ordering::Relaxed);
        outcomes
    }

    /// Recalls `message_id` (of `template_id`) if this account sent it within the recall window: each provider
    /// call of the message (receivers, businessId) with the provider's answer, after retries.
    /// Empty when the account does not know the message.
    pub async fn recall(
        &self,
        message_id: &str,
        template_id: i64,
        now: i64,
    ) -> Vec<(crate::recall::Entry, Result<(), String>)> {
        let mut out = Vec::new();
        let calls = self.book.get(message_id, now);
        // A recall names its template: a message of another template is not taken back.
        for entry in calls.into_iter().filter(|e| e.template_id == template_id) {
            let result = self
                .retry
                .run_observed(&self.stats, || async {
                    match &self.provider {
                        Provider::Outbox(o) => o.recall(self.channel, message_id),
                        Provider::Blackhole => Ok(()),
                        Provider::Remote(_, r, _) => r.recall(&entry.reference).await,
                    }
                })
                .await
                .map_err(|e| self.secrets.scrub(e.reason()));
            if result.is_ok() {
                self.book.forget(message_id, &entry.reference);
            }
            out.push((entry, result));
        }
        out
    }

    /// The messages of a template this account can still recall.
    pub fn recallable(&self, template_id: i64, now: i64) -> Vec<String> {
        self.book
            .of_template(template_id, now)
            .into_iter()
            .map(|e| e.message_id)
            .collect()
    }

    /// The account's health check: what was reached, or why not. Secrets never appear.
    pub async fn check(&self) -> Result<String, String> {
        let r = match &self.provider {
            Provider::Outbox(o) => Ok(format!("writes to {}", o.dir().display())),
            Provider::Blackhole => Ok("accepts everything (blackhole)".into()),
            Provider::Remote(_, r, base) => r.check(base, std::time::Duration::from_secs(5)).await,
        };
        r.map(|m| self.secrets.scrub(&m))
            .map_err(|e| self.secrets.scrub(&e))
    }

    /// `text` without this account's secrets (for anything else that shows its answers).
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.scrub(text)
    }

    /// The provider's kind, for labels.
    pub fn provider(&self) -> &'static str {
        match &self.provider {
            Provider::Outbox(_) => "outbox",
            Provider::Blackhole => "blackhole",
            Provider::Remote(kind, _, _) => kind.name(),
        }
    }

    /// The rate limit: (permits per second, burst), when the account has one.
    pub fn rate(&self) -> Option<(f64, u32)> {
        self.limiter
            .as_ref()
            .map(|(_, r, burst)| (r.permits_per_second(), burst.get()))
    }

    /// The live view of this account: its limiter and its sends.
    pub fn live(&self) -> serde_json::Value {
        let stats = self.stats.snapshot();
        serde_json::json!({
            "account": self.name,
            "channel": self.channel.name(),
            "provider": self.provider(),
            "rate_limit": self.rate().map(|(per, burst)| serde_json::json!({
                "per_second": self.limiter.as_ref().and_then(|(_, r, _)| r.per_second),
                "per_minute": self.limiter.as_ref().and_then(|(_, r, _)| r.per_minute),
                "burst": burst,
                "tokens": (self.stats.tokens(per, burst) * 10.0).floor() / 10.0,
                "waiting": stats.waiting,
            })),
            "concurrency": self.concurrency,
            "in_flight": stats.in_flight,
            "retrying": stats.retrying,
            "retries": stats.retries,
            "sent": stats.sent,
            "failed": stats.failed,
        })
    }
}

/// Every account of a job, by index.
pub struct Accounts {
    list: Vec<Account>,
}

impl Accounts {
    /// Builds accounts from their configs; relative outbox directories resolve against `base`.
    pub fn build(
        configs: &BTreeMap<String, AccountConfig>,
        base: &Path,
    ) -> std::io::Result<Accounts> {
        let outboxes = Outboxes::default();
        let mut clients: std::collections::HashMap<std::time::Duration, reqwest::Client> =
            std::collections::HashMap::new();
        let mut list = Vec::new();
        for (name, c) in configs {
            let secrets = Secrets::of_settings(&c.settings);
            let scrubbed = |e: String| std::io::Error::other(secrets.scrub(&e));
            let provider = match c.provider {
                ProviderKind::Outbox => {
                    let dir = base.join(c.dir.as_deref().unwrap_or(Path::new("var/outbox")));
                    Provider::Outbox(outboxes.get(&dir)?)
                }
                ProviderKind::Blackhole => Provider::Blackhole,
                kind => {
                    let timeout = std::time::Duration::from_secs_f64(
                        c.timeout_secs.unwrap_or(10.0).max(0.05),
                    );
                    let client = clients
                        .entry(timeout)
                        .or_insert_with(|| http::client(timeout))
                        .clone();
                    let (remote, base) = Remote::open(
                        kind,
                        &format!("accounts.{name}"),
                        &c.settings,
                        client,
                        timeout,
                    )
                    .map_err(scrubbed)?;
                    Provider::Remote(kind, Box::new(remote), base)
                }
            };
            let limiter = c.effective_rate_limit().and_then(|r| {
                let (quota, burst) = match (r.per_second, r.per_minute) {
                    (Some(n), _) => {
                        let n = NonZeroU32::new(n)?;
                        (Quota::per_second(n), n)
                    }
                    (None, Some(n)) => {
                        let n = NonZeroU32::new(n)?;
                        (Quota::per_minute(n), n)
                    }
                    (None, None) => return None,
                };
                let limiter =
                    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>();
                Some((limiter, r, burst))
            });
            let mut retry = RetryPolicy::default();
            if let Some(a) = c.attempts {
                retry.attempts = a.max(1);
            }
            list.push(Account {
                name: name.clone(),
                channel: c.channel,
                provider,
                limiter,
                slots: Semaphore::new(c.concurrency.max(1)),
                concurrency: c.concurrency.max(1),
                stats: SendStats::default(),
                retry,
                reject: c.reject_receivers.clone(),
                book: crate::recall::RecallBook::default(),
                secrets,
                halt: Arc::default(),
            });
        }
        Ok(Accounts { list })
    }

    /// Keeps each recall-channel account's recallable messages in `dir/<account>.jsonl`
    /// (loaded now, so a recall reaches messages sent before a restart). Without it they
    /// are kept in memory only.
    pub fn keep_recall_books(&mut self, dir: &Path, now: i64) -> std::io::Result<()> {
        for a in self.list.iter_mut().filter(|a| a.channel.supports_recall()) {
            a.book = crate::recall::RecallBook::open(&dir.join(format!("{}.jsonl", a.name)), now)?;
        }
        Ok(())
    }

    /// Sends still waiting for permits give up once `halt` is raised (calls already made are
    /// let finish).
    pub fn halt_with(&mut self, halt: Arc<std::sync::atomic::AtomicBool>) {
        for a in &mut self.list {
            a.halt = halt.clone();
        }
    }

    /// The index of an account by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|a| a.name == name)
    }

    /// The account at `index`.
    pub fn get(&self, index: usize) -> &Account {
        &self.list[index]
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tidings_model::MessageMeta;

    fn batch(receivers: &[&str]) -> SendBatch {
        SendBatch {
            meta: Arc::new(MessageMeta {
                message_id: "m".into(),
                template_id: 1,
                business_id: 1,
                biz_id: None,
                content: "{}".into(),
                event_time: 0,
                seq: 0,
            }),
            channel: Channel::Sms,
            receivers: receivers.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn config(toml_text: &str) -> BTreeMap<String, AccountConfig> {
        toml::from_str(toml_text).unwrap()
    }

    #[tokio::test]
    async fn rejects_some_and_sends_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[a]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = {:?}\nreject_receivers = [\"bad\"]\n",
            dir.path().display().to_string()
        );
        let accounts = Accounts::build(&config(&text), Path::new("/")).unwrap();
        let out = accounts.get(0).send(&batch(&["ok", "bad", "ok2"])).await;
        assert!(out[0].is_ok() && out[2].is_ok());
        assert!(out[1].as_ref().unwrap_err().contains("refused"));
        let lines = std::fs::read_to_string(dir.path().join("sms.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2);
    }

    #[tokio::test]
    async fn rate_limit_waits_and_never_drops() {
        let text = "[a]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = { per_second = 20, strategy = \"receivers\" }\n";
        let accounts = Accounts::build(&config(text), Path::new("/")).unwrap();
        let start = Instant::now();
        let mut ok = 0;
        // 20 burst + 20 more at 20/s: at least ~1 s.
        for _ in 0..4 {
            ok += accounts
                .get(0)
                .send(&batch(&["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]))
                .await
                .iter()
                .filter(|o| o.is_ok())
                .count();
        }
        assert_eq!(ok, 40);
        assert!(start.elapsed().as_millis() >= 900, "{:?}", start.elapsed());
    }

    #[test]
    fn validation_names_keys() {
        let c: AccountConfig =
            toml::from_str("channel = \"sms\"\nprovider = \"outbox\"\nconcurrency = 0\n").unwrap();
        let p = c.validate("accounts.x");
        assert_eq!(p.len(), 2);
        assert!(p[0].starts_with("accounts.x.dir"));
    }
}
