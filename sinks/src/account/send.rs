//! [`Account::send`], one step per function: the reject list, the rate-limit permits, a
//! concurrency slot, the provider call under the retry policy (`retry.rs`), the recall book,
//! the stats. A halted run gives up while waiting for permits or a slot (nothing was sent).

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use tidings_model::Receiver;

use tokio::sync::SemaphorePermit;

use super::coalesce::Coalescer;
use super::retry::{Attempt, PartialRetry, send_with_policy};
use super::{Account, Backend, Limiter, NOT_SENT_HALTED, RateLimitConfig, RateStrategy};
use crate::util::kit::Delivered;
use crate::util::retry::SendError;
use crate::util::stats::Raised;
use crate::{Outcome, Outcomes, SendBatch};

/// One call of the account's provider for one batch (through its coalescer when the batch
/// may share a call with other messages).
struct Call<'a> {
    account: &'a Account,
    batch: &'a SendBatch,
    /// The account's coalescer, when this batch goes through it.
    coalescer: Option<&'a Coalescer>,
    /// Attempts made so far.
    attempts: AtomicU32,
}

impl Attempt for Call<'_> {
    async fn attempt(&self, receivers: &[Receiver]) -> Result<Delivered, SendError> {
        if let Some(c) = self.coalescer {
            let first = self.attempts.fetch_add(1, Ordering::Relaxed) == 0;
            return match Box::pin(c.call(self.account, self.batch, receivers, first)).await {
                Some(answer) => answer,
                // Given back unsent: the receivers not yet settled end as a send waiting for
                // its slot does at a halt (no row; a new run sends them).
                None => Err(SendError::Permanent(format!(
                    "{}: {NOT_SENT_HALTED}",
                    self.account.name
                ))),
            };
        }
        match &self.account.backend {
            Backend::Outbox(o) => o.send(self.batch, receivers).map(|()| Delivered::All),
            Backend::Blackhole => Ok(Delivered::All),
            // Boxed (by `Remote::send`): an HTTP call's future is kilobytes, and every send's
            // future (one per message in flight) would carry that size even for the blackhole
            // and the outbox.
            Backend::Remote(_, r, _) => r.send(self.batch, receivers).await,
        }
    }
}

impl Account {
    /// Sends one batch: waits for rate-limit permits and a concurrency slot, then calls the
    /// provider with retries. One outcome per receiver, in order.
    ///
    /// Outcomes are kept by receiver index (receivers are unique within a message), and the
    /// batch's receivers are passed to the provider as they are when none is refused: the hot
    /// path allocates the outcomes and nothing per receiver.
    pub async fn send(&self, batch: &SendBatch) -> Outcomes {
        let (mut outcomes, to_send) = self.refuse(batch);
        let sending = to_send.as_ref().map_or(batch.receivers.len(), Vec::len);
        if sending > 0 {
            if !self.permits(sending).await {
                return self.not_sent(batch);
            }
            // A call the coalescer may share takes its slot there, one per call.
            let coalescer = self
                .coalescer
                .as_ref()
                .filter(|c| c.takes(batch.msg_type, sending));
            let _slot = if coalescer.is_some() {
                None
            } else {
                let Some(slot) = self.slot().await else {
                    return self.not_sent(batch);
                };
                Some(slot)
            };
            let _in_flight = Raised::new(&self.stats.in_flight);
            let receivers: Cow<'_, [Receiver]> = match &to_send {
                None => Cow::Borrowed(&batch.receivers),
                Some(to_send) => Cow::Owned(
                    to_send
                        .iter()
                        .map(|&i| batch.receivers[i].clone())
                        .collect(),
                ),
            };
            let mut policy = PartialRetry::unseeded(&self.name, self.retry, receivers.len());
            let call = Call {
                account: self,
                batch,
                coalescer,
                attempts: AtomicU32::new(0),
            };
            send_with_policy(&mut policy, &self.stats, &receivers, &call).await;
            let (settled, references) = policy.finish_with(|e| self.secrets.scrub(e.reason()));
            self.book(batch, &receivers, references, &settled);
            match &to_send {
                None => outcomes = settled,
                Some(to_send) => {
                    for (&i, outcome) in to_send.iter().zip(settled) {
                        outcomes[i] = outcome;
                    }
                }
            }
        }
        self.count(&outcomes);
        outcomes
    }

    /// The reject list: every receiver's outcome so far (`Ok` for those to send, the refusal
    /// for the others), and the indices of the receivers to send to. With no reject list
    /// (nearly every account) there are no outcomes yet and every receiver is sent to (`None`):
    /// the send's own outcomes are the outcomes, without a copy.
    fn refuse(&self, batch: &SendBatch) -> (Outcomes, Option<Vec<usize>>) {
        let n = batch.receivers.len();
        if self.reject.is_empty() {
            return (Outcomes::new(), None);
        }
        let mut outcomes = Outcomes::with_capacity(n);
        let mut to_send = Vec::with_capacity(n);
        for (i, r) in batch.receivers.iter().enumerate() {
            if self.reject.iter().any(|x| **x == **r) {
                outcomes.push(Err(format!(
                    "{}: receiver refused by the provider",
                    self.name
                )));
            } else {
                outcomes.push(Ok(()));
                to_send.push(i);
            }
        }
        (outcomes, Some(to_send))
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
        // Boxed, as the provider call: only rate-limited sends carry the limiter's wait.
        Box::pin(self.wait_for_permits(limiter, rate, *burst, receivers)).await
    }

    /// [`Self::permits`] for an account with a limiter.
    async fn wait_for_permits(
        &self,
        limiter: &Limiter,
        rate: &RateLimitConfig,
        burst: NonZeroU32,
        receivers: usize,
    ) -> bool {
        let _waiting = Raised::new(&self.stats.waiting);
        let halted = self.halted();
        tokio::pin!(halted);
        let mut need = match rate.strategy {
            RateStrategy::Request => 1,
            RateStrategy::Receivers => receivers as u32,
        };
        while need > 0 {
            let n = need.min(burst.get());
            let count = NonZeroU32::new(n).expect("n > 0");
            // Permits there now: taken without the wait's futures (as `slot` does).
            let ready = match limiter.check_n(count) {
                Ok(Ok(state)) => Ok(state),
                _ => tokio::select! {
                    r = limiter.until_n_ready(count) => r,
                    () = &mut halted => return false,
                },
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
        // Most sends find a slot free: they build no acquire and halt futures to drop at once
        // (a permit released while others wait goes to them, so this never jumps the queue).
        let slot = match self.slots.try_acquire() {
            Ok(s) => s,
            Err(_) => tokio::select! {
                s = self.slots.acquire() => s.expect("semaphore is never closed"),
                () = self.halted() => return None,
            },
        };
        (!self.halt.is_raised()).then_some(slot)
    }

    /// The recall book: each provider reference with the receivers its call reached (the
    /// outbox stands in for a recall-capable provider on a recall channel).
    fn book(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
        references: Vec<(String, Vec<usize>)>,
        settled: &[Outcome],
    ) {
        let outbox_recall =
            self.channel.supports_recall() && matches!(self.backend, Backend::Outbox(_));
        if references.is_empty() && !outbox_recall {
            return;
        }
        let mut calls: Vec<(String, Vec<String>)> = references
            .into_iter()
            .map(|(reference, reached)| {
                let reached = reached
                    .into_iter()
                    .map(|i| receivers[i].to_string())
                    .collect();
                (reference, reached)
            })
            .collect();
        if outbox_recall {
            let reached = receivers
                .iter()
                .zip(settled)
                .filter(|(_, o)| o.is_ok())
                .map(|(r, _)| r.to_string())
                .collect();
            calls.push((batch.meta.message_id.to_string(), reached));
        }
        for (reference, reached) in calls {
            if reached.is_empty() {
                continue;
            }
            self.book.record(crate::recall::Entry {
                message_id: batch.meta.message_id.to_string(),
                template_id: batch.meta.template_id,
                business_id: batch.meta.business_id,
                reference,
                receivers: reached,
                time: crate::util::kit::now_ms(),
                event_time: batch.event_time,
                recalled: false,
            });
        }
    }

    /// The stats: the outcomes sent and failed (a receiver given back unsent at a halt is
    /// neither).
    fn count(&self, outcomes: &[Outcome]) {
        let (mut sent, mut failed) = (0, 0);
        for o in outcomes {
            match o {
                Ok(()) => sent += 1,
                Err(why) if why.ends_with(NOT_SENT_HALTED) => {}
                Err(_) => failed += 1,
            }
        }
        self.stats.failed.fetch_add(failed, Ordering::Relaxed);
        self.stats.sent.fetch_add(sent, Ordering::Relaxed);
    }
}
