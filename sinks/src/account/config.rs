//! The `[accounts.NAME]` table of a job: its provider, rate limit, concurrency, retries and
//! queue, and the checks of it (each problem naming its key).

use std::path::PathBuf;

use serde::Deserialize;
use tidings_model::Channel;

pub use crate::provider::ProviderKind;

fn default_concurrency() -> usize {
    16
}

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
    /// Permits per minute, instead of `per_second`: one every 60/N seconds (no burst), so no
    /// minute holds more than N first calls (a retry takes none). Example: `20` (a DingTalk
    /// robot's quota).
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// `request` (default) or `receivers`.
    #[serde(default)]
    pub strategy: RateStrategy,
}

impl RateLimitConfig {
    /// 1/`n` of the limit, rounded down, so `n` processes together never pass it (a robot
    /// past its quota is stopped for minutes): a per-second limit `n` does not divide is
    /// shared as a per-minute one; at least one a minute.
    pub fn shared_by(self, n: u32) -> RateLimitConfig {
        let n = n.max(1);
        let per_minute = match (self.per_second, self.per_minute) {
            (Some(s), _) if s % n == 0 => {
                return RateLimitConfig {
                    per_second: Some(s / n),
                    ..self
                };
            }
            (Some(s), _) => s.saturating_mul(60),
            (None, Some(m)) => m,
            (None, None) => return self,
        };
        RateLimitConfig {
            per_second: None,
            per_minute: Some((per_minute / n).max(1)),
            ..self
        }
    }
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

/// The check of an account change record (`{"code":"account","name":…,"account":{…}}`)
/// against the job file's accounts, as every worker makes it: a pure function of the job file
/// and the change (the `${ENV}` references are not read here; a process that cannot read one
/// fails that version's sends with the reason). The account must be one of the job's (not a
/// group), keep its channel and its queue (`queue` left out: the job file's; `max_queued`
/// stays the job file's), pass the table's checks, and hold its secrets as `${ENV}`
/// references only.
pub fn change_check(
    configs: &std::collections::BTreeMap<String, AccountConfig>,
    kafka_job: bool,
) -> impl Fn(&str, &serde_json::Value) -> Result<(), String> + Send + Sync + 'static {
    let configs = configs.clone();
    move |name: &str, table: &serde_json::Value| {
        let why = |e: String| format!("account change: account `{name}`: {e}");
        let Some(base) = configs.get(name) else {
            return Err(why(format!(
                "not an account of the job (accounts are added in the job file); use one of {}",
                configs
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let c: AccountConfig = serde_json::from_value(table.clone())
            .map_err(|e| why(format!("not an [accounts.NAME] table: {e}")))?;
        if c.channel != base.channel {
            return Err(why(format!(
                "channel {} but the account sends {}; an account keeps its channel",
                c.channel.name(),
                base.channel.name()
            )));
        }
        // Left out, the queue stays the job file's (a rate limit added to a memory-queued
        // account does not move it to Kafka); given, it must be the same.
        if c.queue.is_some() && c.queues_in_kafka(kafka_job) != base.queues_in_kafka(kafka_job) {
            return Err(why(
                "its queue (memory or kafka) would change; that needs the job file and a restart"
                    .into(),
            ));
        }
        let mut problems = c.validate_as(&format!("accounts.{name}"), false);
        problems.extend(
            crate::util::secrets::clear_secrets(&c.settings)
                .into_iter()
                .map(|key| format!("settings.{key} holds a secret in clear (or a malformed ${{…}}); write it as a \"${{ENV}}\" reference")),
        );
        // A change names where it writes only inside the job's directory.
        if let Some(dir) = &c.dir
            && (dir.is_absolute()
                || dir
                    .components()
                    .any(|p| matches!(p, std::path::Component::ParentDir)))
        {
            problems.push(format!(
                "dir {}: a change writes inside the job's directory only (a relative path without ..)",
                dir.display()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(why(problems.join("; ")))
        }
    }
}

/// The most provider calls an account may have in flight.
pub const MAX_CONCURRENCY: usize = 100_000;
/// The longest a provider call may take, in seconds.
pub const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// The shortest, in seconds.
pub const MIN_TIMEOUT_SECS: f64 = 0.05;
/// The most attempts of a call (its retries back off up to 5 s apart: 100 is minutes).
pub const MAX_ATTEMPTS: u32 = 100;

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
    /// The account as one of `n` processes sends with it: 1/`n` of its rate (its provider's
    /// own quota too), [`RateLimitConfig::shared_by`].
    pub fn shared_by(&self, n: u32) -> AccountConfig {
        let mut a = self.clone();
        if n > 1 {
            a.rate_limit = a.effective_rate_limit().map(|r| r.shared_by(n));
        }
        a
    }

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
        if self.provider != ProviderKind::Outbox && self.dir.is_some() {
            p.push(format!(
                "{key}.dir: only the outbox provider writes to a directory; remove dir"
            ));
        }
        if self.provider.is_remote() && !self.reject_receivers.is_empty() {
            p.push(format!(
                "{key}.reject_receivers: only a local provider (outbox, blackhole) rehearses \
                 refusals; remove it (the {} provider would fail those receivers for real)",
                self.provider.name()
            ));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            p.push(format!(
                "{key}.concurrency: must be between 1 and {MAX_CONCURRENCY}"
            ));
        }
        if let Some(t) = self.timeout_secs
            && !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&t)
        {
            p.push(format!(
                "{key}.timeout_secs: must be from {MIN_TIMEOUT_SECS} to {MAX_TIMEOUT_SECS}"
            ));
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
        if self
            .attempts
            .is_some_and(|a| !(1..=MAX_ATTEMPTS).contains(&a))
        {
            p.push(format!("{key}.attempts: must be from 1 to {MAX_ATTEMPTS}"));
        }
        if self.max_queued == Some(0) {
            p.push(format!("{key}.max_queued: must be at least 1"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: Option<u32>, per_minute: Option<u32>) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            per_minute,
            strategy: RateStrategy::default(),
        }
    }

    /// Shared by `n` processes, a limit is never passed by all of them together: a DingTalk
    /// robot's 20 a minute over 3 is 6 each (7, rounded up, made 21), 1 a second over 4 is
    /// 15 a minute each, and what `n` divides stays per second.
    #[test]
    fn processes_together_never_pass_the_limit() {
        let each = |r: RateLimitConfig, n| {
            let s = r.shared_by(n);
            (s.per_second, s.per_minute)
        };
        assert_eq!(each(limit(None, Some(20)), 3), (None, Some(6)));
        assert_eq!(each(limit(Some(1), None), 4), (None, Some(15)));
        assert_eq!(each(limit(Some(100), None), 2), (Some(50), None));
        assert_eq!(each(limit(Some(100), None), 3), (None, Some(2000)));
        assert_eq!(each(limit(None, Some(2)), 3), (None, Some(1)));
        assert_eq!(each(limit(Some(7), None), 1), (Some(7), None));
        for (r, n) in [
            (limit(None, Some(20)), 3),
            (limit(Some(1), None), 4),
            (limit(Some(100), None), 3),
        ] {
            let total = r.permits_per_second();
            assert!(r.shared_by(n).permits_per_second() * f64::from(n) <= total + 1e-9);
        }
    }
}
