//! Accounts (`[accounts.NAME]` in the job): a provider plus the rate limit, concurrency and
//! retry policy around it. [`Accounts`] is built once per job and shared by every worker.
//!
//! - `config.rs`: the account's table and its checks.
//! - `send.rs`: [`Account::send`], step by step: the reject list, rate-limit permits, a
//!   concurrency slot, the provider call under the retry policy, the recall book, the stats.
//! - `retry.rs`: the retry policy over per-receiver answers ([`retry::PartialRetry`]: which
//!   receivers to try again, after what pause).

mod coalesce;
mod config;
pub mod retry;
mod send;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tidings_model::Channel;
use tidings_model::message::LiveAccount;
use tokio::sync::Semaphore;

pub use config::{
    AccountConfig, ProviderKind, QueueKind, RateLimitConfig, RateStrategy, change_check,
};

use crate::outbox::{Outbox, Outboxes};
use crate::provider::Remote;
use crate::util::http;
use crate::util::retry::RetryPolicy;
use crate::util::secrets::Secrets;
use crate::util::stats::SendStats;
use crate::{Outcomes, SendBatch};

/// A direct limiter that reports the permits left after each acquisition.
type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Where an account's calls go: a local provider, or a network provider with its base URL.
enum Backend {
    Outbox(Arc<Outbox>),
    Blackhole,
    Remote(ProviderKind, Arc<Remote>, String),
}

/// A run's halt, as the accounts see it: raised once; sends still waiting for a permit or a
/// slot are woken by it (no timer per waiting send).
#[derive(Debug, Default)]
pub struct Halt {
    raised: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Halt {
    /// Raises it and wakes every send waiting on it.
    pub fn raise(&self) {
        self.raised.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Whether it was raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once it is raised.
    pub async fn raised(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before the flag is read: a raise in between still wakes it.
            woken.as_mut().enable();
            if self.is_raised() {
                return;
            }
            woken.await;
        }
    }
}

/// A built account.
pub struct Account {
    /// Its name in the job.
    pub name: String,
    /// Its channel.
    pub channel: Channel,
    backend: Backend,
    /// Its calls shared by several messages, when its provider takes that.
    coalescer: Option<coalesce::Coalescer>,
    /// Shared with the account's other versions while they keep its rate limit.
    limiter: Option<Arc<(Limiter, RateLimitConfig, NonZeroU32)>>,
    /// Shared with the account's other versions while they keep its concurrency.
    slots: Arc<Semaphore>,
    concurrency: usize,
    /// Live counters (admin API, `/metrics`), shared by the account's versions.
    pub stats: Arc<SendStats>,
    /// Its version: 0 as the job file has it, else the change record's.
    pub version: u32,
    retry: RetryPolicy,
    reject: Vec<String>,
    /// Raised when the run halts: a send still waiting for its permits or slot gives up
    /// (its receivers are not sent) instead of calling the provider.
    halt: Arc<Halt>,
    /// What it sent that can be recalled (shared by the account's versions).
    book: Arc<crate::recall::RecallBook>,
    /// Its settings' secrets: every reason leaving the account is scrubbed of them.
    secrets: Secrets,
}

/// The end of the outcome of a receiver not sent because the run halted first: no provider
/// was called, so it has no terminal state (a new run sends it).
pub const NOT_SENT_HALTED: &str = "not sent: the run was halted";

impl Account {
    /// Every receiver of `batch` failed without a call: the run halted before it.
    fn not_sent(&self, batch: &SendBatch) -> Outcomes {
        batch
            .receivers
            .iter()
            .map(|_| Err(format!("{}: {NOT_SENT_HALTED}", self.name)))
            .collect()
    }

    /// Recalls `message_id` (of `template_id`) if this account sent it within the recall window
    /// at or before event time `up_to` (the recall's): each provider call of the message
    /// (receivers, businessId) with the provider's answer, after retries. Empty when the
    /// account does not know the message.
    pub async fn recall(
        &self,
        message_id: &str,
        template_id: i64,
        now: i64,
        up_to: i64,
    ) -> Vec<(crate::recall::Entry, Result<(), String>)> {
        let mut out = Vec::new();
        let calls = self.book.get(message_id, now, up_to);
        // A recall names its template: a message of another template is not taken back.
        for entry in calls.into_iter().filter(|e| e.template_id == template_id) {
            let result = self
                .retry
                .run_observed(&self.stats, || async {
                    match &self.backend {
                        Backend::Outbox(o) => o.recall(self.channel, message_id),
                        Backend::Blackhole => Ok(()),
                        Backend::Remote(_, r, _) => r.recall(&entry.reference).await,
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

    /// The messages of a template this account can still recall, sent at or before event time
    /// `up_to`.
    pub fn recallable(&self, template_id: i64, now: i64, up_to: i64) -> Vec<String> {
        self.book
            .of_template(template_id, now, up_to)
            .into_iter()
            .map(|e| e.message_id)
            .collect()
    }

    /// The account's health check: what was reached, or why not. Secrets never appear.
    pub async fn check(&self) -> Result<String, String> {
        let r = match &self.backend {
            Backend::Outbox(o) => Ok(format!("writes to {}", o.dir().display())),
            Backend::Blackhole => Ok("accepts everything (blackhole)".into()),
            Backend::Remote(_, r, base) => r.check(base, std::time::Duration::from_secs(5)).await,
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
        match &self.backend {
            Backend::Outbox(_) => "outbox",
            Backend::Blackhole => "blackhole",
            Backend::Remote(kind, _, _) => kind.name(),
        }
    }

    /// The rate limit: (permits per second, burst), when the account has one.
    pub fn rate(&self) -> Option<(f64, u32)> {
        self.limiter
            .as_ref()
            .map(|l| (l.1.permits_per_second(), l.2.get()))
    }

    /// The live view of this account: its limiter and its sends.
    pub fn live(&self) -> serde_json::Value {
        let stats = self.stats.snapshot();
        serde_json::json!({
            "account": self.name,
            "version": self.version,
            "channel": self.channel.name(),
            "provider": self.provider(),
            "rate_limit": self.rate().map(|(per, burst)| serde_json::json!({
                "per_second": self.limiter.as_ref().and_then(|l| l.1.per_second),
                "per_minute": self.limiter.as_ref().and_then(|l| l.1.per_minute),
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

/// Every account of a job, by index, and the versions change records made of them.
pub struct Accounts {
    list: Vec<Account>,
    /// What builds a version: the job file's directory, shared outboxes and HTTP clients.
    maker: Maker,
    /// Versions built so far, by account index, version and table (a version number names
    /// one table within a run; the table guards against a stale one from an older run).
    versions: Mutex<HashMap<(usize, u32, String), Arc<Account>>>,
}

/// What an account is built with.
#[derive(Default)]
struct Maker {
    /// The processes of the run: each sends at 1/n of a version's rate, as of the job file's.
    processes: u32,
    /// Accounts whose versions keep their whole rate in this process.
    whole: std::collections::HashSet<String>,
    base: PathBuf,
    /// The job region's country calling code: national phone numbers are dialled with it.
    calling_code: u16,
    outboxes: Outboxes,
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
}

impl Maker {
    fn build(&self, name: &str, c: &AccountConfig) -> std::io::Result<Account> {
        let secrets = Secrets::of_settings(&c.settings);
        let scrubbed = |e: String| std::io::Error::other(secrets.scrub(&e));
        let backend = match c.provider {
            ProviderKind::Outbox => {
                let dir = self
                    .base
                    .join(c.dir.as_deref().unwrap_or(Path::new("var/outbox")));
                Backend::Outbox(self.outboxes.get(&dir)?)
            }
            ProviderKind::Blackhole => Backend::Blackhole,
            kind => {
                let timeout = Duration::try_from_secs_f64(
                    c.timeout_secs
                        .unwrap_or(10.0)
                        .clamp(config::MIN_TIMEOUT_SECS, config::MAX_TIMEOUT_SECS),
                )
                .unwrap_or(Duration::from_secs(10));
                let client = self
                    .clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(timeout)
                    .or_insert_with(|| http::client(timeout))
                    .clone();
                let (remote, base) = Remote::open(
                    kind,
                    &format!("accounts.{name}"),
                    &c.settings,
                    client,
                    timeout,
                    self.calling_code,
                )
                .map_err(scrubbed)?;
                Backend::Remote(kind, Arc::new(remote), base)
            }
        };
        let coalescer = match &backend {
            Backend::Remote(kind, remote, _) => {
                coalesce::Coalescer::new(remote, kind.messages_per_call())
            }
            _ => None,
        };
        let limiter = c.effective_rate_limit().and_then(|r| {
            let (quota, burst) = match (r.per_second, r.per_minute) {
                (Some(n), _) => {
                    let n = NonZeroU32::new(n)?;
                    (Quota::per_second(n), n)
                }
                // A minute's quota (a robot's: DingTalk stops one for 10 minutes past 20 in
                // a minute) is spaced evenly, one permit every 60/N s: with a minute's worth
                // at once, up to 2N-1 would go within one minute.
                (None, Some(n)) => {
                    let n = NonZeroU32::new(n)?;
                    let one = NonZeroU32::MIN;
                    (Quota::per_minute(n).allow_burst(one), one)
                }
                (None, None) => return None,
            };
            let limiter =
                RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>();
            Some(Arc::new((limiter, r, burst)))
        });
        let mut retry = RetryPolicy::default();
        if let Some(a) = c.attempts {
            retry.attempts = a.max(1);
        }
        Ok(Account {
            name: name.to_string(),
            channel: c.channel,
            backend,
            coalescer,
            limiter,
            slots: Arc::new(Semaphore::new(
                c.concurrency.clamp(1, config::MAX_CONCURRENCY),
            )),
            concurrency: c.concurrency.clamp(1, config::MAX_CONCURRENCY),
            stats: Arc::default(),
            version: 0,
            retry,
            reject: c.reject_receivers.clone(),
            book: Arc::default(),
            secrets,
            halt: Arc::default(),
        })
    }
}

/// An account to send with: as the job file has it, or a version a change record made.
pub enum Picked<'a> {
    /// The job file's.
    Base(&'a Account),
    /// A change record's.
    Version(Arc<Account>),
}

impl std::ops::Deref for Picked<'_> {
    type Target = Account;

    fn deref(&self) -> &Account {
        match self {
            Picked::Base(a) => a,
            Picked::Version(a) => a,
        }
    }
}

impl Accounts {
    /// Builds accounts from their configs; relative outbox directories resolve against `base`;
    /// phone numbers written nationally (the job region's) are dialled with `calling_code`
    /// (`ReceiverValidator::calling_code`).
    pub fn build(
        configs: &BTreeMap<String, AccountConfig>,
        base: &Path,
        calling_code: u16,
    ) -> std::io::Result<Accounts> {
        let maker = Maker {
            processes: 1,
            base: base.to_path_buf(),
            calling_code,
            ..Maker::default()
        };
        let list = configs
            .iter()
            .map(|(name, c)| maker.build(name, c))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Accounts {
            list,
            maker,
            versions: Mutex::default(),
        })
    }

    /// Versions made by change records send at 1/`n` of their rate, as the job file's
    /// accounts of a process of an `n`-process cluster do; those of the accounts `whole` names
    /// keep their whole rate (the one process that sends them, as of the job file's).
    pub fn shared_by(mut self, n: u32, whole: impl Fn(&str) -> bool) -> Accounts {
        self.maker.processes = n.max(1);
        self.maker.whole = (self.list.iter())
            .filter(|a| whole(&a.name))
            .map(|a| a.name.clone())
            .collect();
        self
    }

    /// The account at `index` as a message must be sent with: the version `live` names for
    /// it (built on first use: its `${ENV}` references read in this process), else the job
    /// file's. `Err` says why that version cannot send (its receivers fail with the reason).
    pub fn pick(&self, index: usize, live: Option<&LiveAccount>) -> Result<Picked<'_>, String> {
        let base = &self.list[index];
        let Some(live) = live else {
            return Ok(Picked::Base(base));
        };
        let key = (index, live.version, live.settings.to_string());
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(built) = versions.get(&key) {
            return Ok(Picked::Version(built.clone()));
        }
        // Not cached when it fails: a later message tries again (the variable may be set by
        // then, a directory may be writable again).
        let built = self.build_version(base, live)?;
        versions.insert(key, built.clone());
        Ok(Picked::Version(built))
    }

    fn build_version(&self, base: &Account, live: &LiveAccount) -> Result<Arc<Account>, String> {
        let why = |e: String| {
            format!(
                "account `{}` version {} cannot send: {e}",
                base.name, live.version
            )
        };
        let c: AccountConfig = serde_json::from_value(live.settings.clone())
            .map_err(|e| why(format!("not an [accounts.NAME] table: {e}")))?;
        let c = if self.maker.whole.contains(&base.name) {
            c
        } else {
            c.shared_by(self.maker.processes)
        };
        // Its own secrets and the job file's: neither may leave in a reason.
        let secrets = {
            let mut s = Secrets::of_settings(&c.settings);
            s.extend(&base.secrets);
            s
        };
        if c.channel != base.channel {
            return Err(why(format!(
                "its channel is {}, the job's account sends {}",
                c.channel.name(),
                base.channel.name()
            )));
        }
        let problems = c.validate(&format!("accounts.{}", base.name));
        if !problems.is_empty() {
            return Err(secrets.scrub(&why(problems.join("; "))));
        }
        let mut a = self
            .maker
            .build(&base.name, &c)
            .map_err(|e| secrets.scrub(&why(e.to_string())))?;
        a.version = live.version;
        a.secrets = secrets;
        // The same rate limit or concurrency: the same permits, so old and new versions
        // together keep the account's limits.
        if let (Some(mine), Some(theirs)) = (&a.limiter, &base.limiter)
            && mine.1 == theirs.1
        {
            a.limiter = Some(theirs.clone());
        }
        if a.concurrency == base.concurrency {
            a.slots = base.slots.clone();
        }
        a.stats = base.stats.clone();
        a.book = base.book.clone();
        a.halt = base.halt.clone();
        Ok(Arc::new(a))
    }

    /// The newest version of the account at `index` built in this process (the job file's
    /// until a message sent with a changed one).
    pub fn newest(&self, index: usize) -> Picked<'_> {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions
            .iter()
            .filter(|((i, _, _), _)| *i == index)
            .max_by_key(|((_, v, _), _)| *v)
            .map(|(_, built)| built.clone())
            .map_or(Picked::Base(&self.list[index]), Picked::Version)
    }

    /// Keeps each recall-channel account's recallable messages in `dir/<account>.jsonl`
    /// (loaded now, so a recall reaches messages sent before a restart). Without it they
    /// are kept in memory only. Each account's book also takes in its books under the
    /// directories `adopt` (of processes a cluster no longer has), which are removed once
    /// empty.
    pub fn keep_recall_books(
        &mut self,
        dir: &Path,
        now: i64,
        adopt: &[std::path::PathBuf],
    ) -> std::io::Result<()> {
        for a in self.list.iter_mut().filter(|a| a.channel.supports_recall()) {
            let file = format!("{}.jsonl", a.name);
            let others: Vec<_> = adopt.iter().map(|d| d.join(&file)).collect();
            a.book = Arc::new(crate::recall::RecallBook::open_adopting(
                &dir.join(&file),
                now,
                &others,
            )?);
        }
        for d in adopt {
            // Books of accounts the job no longer has stay (as in `dir`).
            let _ = std::fs::remove_dir(d);
        }
        Ok(())
    }

    /// Sends still waiting for permits give up once `halt` is raised (calls already made are
    /// let finish).
    pub fn halt_with(&mut self, halt: Arc<Halt>) {
        self.halt_some_with(halt, |_| true);
    }

    /// The accounts at the indexes `which` picks wait on `halt` instead (the `kafka`-queued
    /// accounts: a graceful stop raises theirs alone).
    pub fn halt_some_with(&mut self, halt: Arc<Halt>, which: impl Fn(usize) -> bool) {
        for (i, a) in self.list.iter_mut().enumerate() {
            if which(i) {
                a.halt = halt.clone();
            }
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
                live: None,
                accounts: None,
                message_id: "m".into(),
                template_id: 1,
                business_id: 1,
                biz_id: None,
                content: "{}".into(),
                event_time: 0,
                seq: 0,
            }),
            channel: Channel::Sms,
            msg_type: tidings_model::MsgType::Notice,
            event_time: 0,
            receivers: receivers.iter().map(|s| (*s).into()).collect(),
        }
    }

    fn config(toml_text: &str) -> BTreeMap<String, AccountConfig> {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_send_future_does_not_carry_the_slow_paths() {
        // Every message in flight holds one of these: an HTTP call, the limiter's wait, a retry
        // timer and a failover member's send are boxed where they are taken, so a blackhole or
        // outbox send does not carry kilobytes of them (release build: 2,816 -> 632 bytes for
        // `Account::send`, 3,040 -> 728 for `send_routed`; bench/MEASURED.md).
        let text = "[a]\nchannel = \"sms\"\nprovider = \"blackhole\"\n";
        let accounts = Accounts::build(&config(text), Path::new("/"), 86).unwrap();
        let b = batch(&["1"]);
        let one = std::mem::size_of_val(&accounts.get(0).send(&b));
        let routed = std::mem::size_of_val(&accounts.send_routed(&[0], &b));
        assert!(one <= 1024, "Account::send's future is {one} bytes");
        assert!(routed <= 1280, "send_routed's future is {routed} bytes");
    }

    #[tokio::test]
    async fn rejects_some_and_sends_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[a]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = {:?}\nreject_receivers = [\"bad\"]\n",
            dir.path().display().to_string()
        );
        let accounts = Accounts::build(&config(&text), Path::new("/"), 86).unwrap();
        let out = accounts.get(0).send(&batch(&["ok", "bad", "ok2"])).await;
        assert!(out[0].is_ok() && out[2].is_ok());
        assert!(out[1].as_ref().unwrap_err().contains("refused"));
        let lines = std::fs::read_to_string(dir.path().join("sms.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2);
    }

    #[tokio::test]
    async fn rate_limit_waits_and_never_drops() {
        let text = "[a]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = { per_second = 20, strategy = \"receivers\" }\n";
        let accounts = Accounts::build(&config(text), Path::new("/"), 86).unwrap();
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

    /// A minute's quota is spaced evenly from the first send: 600 a minute is one every 100
    /// ms, so four sends take at least 300 ms (a minute's worth at once took none).
    #[tokio::test]
    async fn a_minutes_quota_is_spaced_evenly() {
        let text =
            "[a]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = { per_minute = 600 }\n";
        let accounts = Accounts::build(&config(text), Path::new("/"), 86).unwrap();
        assert_eq!(accounts.get(0).rate(), Some((10.0, 1)));
        let start = Instant::now();
        for _ in 0..4 {
            assert!(accounts.get(0).send(&batch(&["1"])).await[0].is_ok());
        }
        assert!(start.elapsed().as_millis() >= 290, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn the_outbox_on_a_recall_channel_books_what_it_reached_and_counts_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[a]\nchannel = \"ding_ding_work_notice\"\nprovider = \"outbox\"\ndir = {:?}\nreject_receivers = [\"gone\"]\n",
            dir.path().display().to_string()
        );
        let accounts = Accounts::build(&config(&text), Path::new("/"), 86).unwrap();
        let a = accounts.get(0);
        let mut b = batch(&["u1", "gone", "u2"]);
        b.channel = Channel::DingDingWorkNotice;
        let out = a.send(&b).await;
        assert_eq!(out.iter().filter(|o| o.is_ok()).count(), 2);
        let now = crate::util::kit::now_ms();
        assert_eq!(a.recallable(1, now, 0), vec!["m".to_string()]);
        assert_eq!(a.recallable(1, now, -1), Vec::<String>::new(), "sent at 0");
        let recalled = a.recall("m", 1, now, 0).await;
        assert_eq!(recalled.len(), 1);
        assert_eq!(
            recalled[0].0.receivers,
            vec!["u1", "u2"],
            "the refused one was not reached"
        );
        let stats = a.stats.snapshot();
        assert_eq!((stats.sent, stats.failed), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_halted_run_sends_nothing_and_counts_nothing() {
        let text =
            "[a]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = { per_second = 1 }\n";
        let mut accounts = Accounts::build(&config(text), Path::new("/"), 86).unwrap();
        let halt = Arc::new(Halt::default());
        accounts.halt_with(halt.clone());
        let a = accounts.get(0);
        // The burst's one permit goes to the first send; the second waits for the next.
        assert!(a.send(&batch(&["1"])).await[0].is_ok());
        let second = batch(&["2"]);
        let waiting = a.send(&second);
        let raise = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            halt.raise();
        };
        let (out, ()) = tokio::join!(waiting, raise);
        assert!(out[0].as_ref().unwrap_err().ends_with(NOT_SENT_HALTED));
        assert!(
            a.send(&batch(&["3"])).await[0]
                .as_ref()
                .unwrap_err()
                .ends_with(NOT_SENT_HALTED)
        );
        let stats = a.stats.snapshot();
        assert_eq!(
            (stats.sent, stats.failed),
            (1, 0),
            "a send given up is not an outcome"
        );
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
