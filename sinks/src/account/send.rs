//! [`Account::send`], one step per function: the reject list, the rate-limit permits, a
//! concurrency slot, the provider call under the retry policy (`retry.rs`), the recall book,
//! the stats. A halted run gives up while waiting for permits or a slot (nothing was sent).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;

use tokio::sync::SemaphorePermit;

use super::retry::{Attempt, PartialRetry, send_with_policy};
use super::{Account, Backend, RateStrategy};
use crate::util::kit::Delivered;
use crate::util::retry::{RetryPolicy, SendError};
use crate::util::stats::Raised;
use crate::{Outcome, SendBatch};

/// One call of the account's provider for one batch.
struct Call<'a> {
    backend: &'a Backend,
    batch: &'a SendBatch,
}

impl Attempt for Call<'_> {
    async fn attempt(&self, receivers: &[String]) -> Result<Delivered, SendError> {
        match self.backend {
            Backend::Outbox(o) => o.send(self.batch, receivers).map(|()| Delivered::All),
            Backend::Blackhole => Ok(Delivered::All),
            Backend::Remote(_, r, _) => r.send(self.batch, receivers).await,
        }
    }
}

impl Account {
    /// Sends one batch: waits for rate-limit permits and a concurrency slot, then calls the
    /// provider with retries. One outcome per receiver, in order.
    pub async fn send(&self, batch: &SendBatch) -> Vec<Outcome> {
        let (mut outcome_of, to_send) = self.refuse(batch);
        if !to_send.is_empty() {
            if !self.permits(to_send.len()).await {
                return self.not_sent(batch);
            }
            let Some(_slot) = self.slot().await else {
                return self.not_sent(batch);
            };
            let _in_flight = Raised::new(&self.stats.in_flight);
            let receivers: Vec<String> = to_send.iter().map(|r| r.to_string()).collect();
            let policy =
                PartialRetry::new(&self.name, self.retry, receivers.len(), RetryPolicy::seed());
            let call = Call {
                backend: &self.backend,
                batch,
            };
            let (settled, references) = send_with_policy(policy, &self.stats, &receivers, &call)
                .await
                .finish();
            for (r, outcome) in to_send.iter().zip(settled) {
                outcome_of.insert(
                    r.as_str(),
                    outcome.map_err(|e| self.secrets.scrub(e.reason())),
                );
            }
            self.book(batch, &receivers, references, &outcome_of);
        }
        let outcomes: Vec<Outcome> = batch
            .receivers
            .iter()
            .map(|r| outcome_of.get(r.as_str()).cloned().unwrap_or(Ok(())))
            .collect();
        self.count(&outcomes);
        outcomes
    }

    /// The reject list: receivers the account refuses without a call (their outcomes), and
    /// the receivers to send to.
    fn refuse<'b>(&self, batch: &'b SendBatch) -> (BTreeMap<&'b str, Outcome>, Vec<&'b String>) {
        let (refused, to_send): (Vec<&String>, Vec<&String>) = batch
            .receivers
            .iter()
            .partition(|r| self.reject.contains(r));
        let outcome_of = refused
            .into_iter()
            .map(|r| {
                (
                    r.as_str(),
                    Err(format!("{}: receiver refused by the provider", self.name)),
                )
            })
            .collect();
        (outcome_of, to_send)
    }

    /// Resolves once the run halts.
    async fn halted(&self) {
        self.halt.raised().await;
    }

    /// Waits for the rate-limit permits of a call to `receivers` receivers (one per call or
    /// one per receiver, at most a burst at a time); `false` when the run halted first.
    async fn permits(&self, receivers: usize) -> bool {
        if self.halt.is_raised() {
            return false;
        }
        let Some((limiter, rate, burst)) = self.limiter.as_deref() else {
            return true;
        };
        let _waiting = Raised::new(&self.stats.waiting);
        let halted = self.halted();
        tokio::pin!(halted);
        let mut need = match rate.strategy {
            RateStrategy::Request => 1,
            RateStrategy::Receivers => receivers as u32,
        };
        while need > 0 {
            let n = need.min(burst.get());
            let ready = tokio::select! {
                r = limiter.until_n_ready(NonZeroU32::new(n).expect("n > 0")) => r,
                () = &mut halted => return false,
            };
            if let Ok(state) = ready {
                self.stats
                    .tokens_after_acquire(state.remaining_burst_capacity());
            }
            need -= n;
        }
        true
    }

    /// One of the account's `concurrency` slots; `None` when the run halted first.
    async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        let slot = tokio::select! {
            s = self.slots.acquire() => s.expect("semaphore is never closed"),
            () = self.halted() => return None,
        };
        (!self.halt.is_raised()).then_some(slot)
    }

    /// The recall book: each provider reference with the receivers its call reached (the
    /// outbox stands in for a recall-capable provider on a recall channel).
    fn book(
        &self,
        batch: &SendBatch,
        receivers: &[String],
        references: Vec<(String, Vec<usize>)>,
        outcome_of: &BTreeMap<&str, Outcome>,
    ) {
        let mut calls: Vec<(String, Vec<String>)> = references
            .into_iter()
            .map(|(reference, reached)| {
                let reached = reached.into_iter().map(|i| receivers[i].clone()).collect();
                (reference, reached)
            })
            .collect();
        if self.channel.supports_recall() && matches!(self.backend, Backend::Outbox(_)) {
            let reached = receivers
                .iter()
                .filter(|r| outcome_of.get(r.as_str()).is_some_and(|o| o.is_ok()))
                .cloned()
                .collect();
            calls.push((batch.meta.message_id.clone(), reached));
        }
        for (reference, reached) in calls {
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

    /// The stats: the outcomes sent and failed.
    fn count(&self, outcomes: &[Outcome]) {
        let failed = outcomes.iter().filter(|o| o.is_err()).count() as u64;
        self.stats.failed.fetch_add(failed, Ordering::Relaxed);
        self.stats
            .sent
            .fetch_add(outcomes.len() as u64 - failed, Ordering::Relaxed);
    }
}
