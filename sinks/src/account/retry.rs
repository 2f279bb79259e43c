//! The account's retry policy over a provider's per-receiver answers (Vector's `RetryLogic`
//! with `RetryAction::RetryPartial`). [`PartialRetry`] reads each attempt's answer, settles the
//! receivers it decided (accepted, or refused for good), and says what comes next: nothing,
//! the same call again, or a call to only the receivers that answered transiently — after
//! the backoff of [`RetryPolicy::after`]. [`send_with_policy`] is the loop around it, so an
//! accepted receiver is never sent twice.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tidings_model::Receiver;
use tidings_model::time::monotonic_ns;

use crate::util::kit::Delivered;
use crate::util::retry::{RetryAction, RetryPolicy, SendError};
use crate::util::stats::{Raised, SendStats};

/// The receivers' outcomes as the answers settle them: a list only once an answer settles
/// them one by one (an answer accepting the whole list, nearly every send's only one, needs
/// none). The size of a list (a send's future is boxed per message: the same size as before).
#[derive(Debug)]
enum Settled {
    /// None of this many receivers settled yet.
    None(usize),
    /// All of this many accepted by one answer to the whole list.
    AllOk(usize),
    /// Each receiver's outcome once an answer settled it.
    Each(Vec<Option<Result<(), SendError>>>),
}

impl Settled {
    fn receivers(&self) -> usize {
        match self {
            Settled::None(n) | Settled::AllOk(n) => *n,
            Settled::Each(v) => v.len(),
        }
    }
}

/// One send's receivers as its attempts settle them.
#[derive(Debug)]
pub struct PartialRetry<'a> {
    account: &'a str,
    policy: RetryPolicy,
    /// Spreads the pauses; taken from the clock at the first pause when not given (a send that
    /// is never retried, nearly all of them, reads no clock for it).
    seed: Option<u64>,
    attempt: u32,
    settled: Settled,
    /// Provider references (for a recall) with the receivers each call reached.
    references: Vec<(String, Vec<usize>)>,
    /// Why the receivers still unsettled at the end failed.
    end: Option<SendError>,
}

impl<'a> PartialRetry<'a> {
    /// The policy of one send of `account` to `receivers` receivers; `seed` spreads its
    /// pauses ([`RetryPolicy::seed`]).
    pub fn new(account: &'a str, policy: RetryPolicy, receivers: usize, seed: u64) -> Self {
        let mut retry = Self::unseeded(account, policy, receivers);
        retry.seed = Some(seed);
        retry
    }

    /// [`Self::new`] with the seed read from the clock ([`RetryPolicy::seed`]) if and when
    /// the send pauses.
    pub fn unseeded(account: &'a str, policy: RetryPolicy, receivers: usize) -> Self {
        PartialRetry {
            account,
            policy,
            seed: None,
            attempt: 1,
            settled: Settled::None(receivers),
            references: Vec::new(),
            end: None,
        }
    }

    /// The attempt about to be made (or just made), from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The receivers (indices) the next attempt goes to: those not settled yet.
    #[cfg(test)]
    pub fn pending(&self) -> Vec<usize> {
        self.unsettled()
            .unwrap_or_else(|| (0..self.settled.receivers()).collect())
    }

    /// [`Self::pending`], or `None` while no receiver is settled (the whole list, without
    /// a list of its indices).
    fn unsettled(&self) -> Option<Vec<usize>> {
        match &self.settled {
            Settled::None(_) => None,
            Settled::AllOk(_) => Some(Vec::new()),
            Settled::Each(v) => Some((0..v.len()).filter(|&i| v[i].is_none()).collect()),
        }
    }

    /// Reads the answer of an attempt to `pending`: settles every receiver it decided and
    /// records its reference; says whether the call, some receivers, or nothing is retried.
    #[cfg(test)]
    pub fn judge(
        &mut self,
        pending: &[usize],
        answer: Result<Delivered, SendError>,
    ) -> RetryAction {
        self.judge_at(Some(pending), answer)
    }

    /// Every receiver accepted by one answer to the whole list: what [`Self::judge_at`] makes
    /// of it, and the send loop's shortcut for it (`end` is left as it is: `None` until the
    /// loop stops).
    fn accept_all(&mut self) {
        self.settled = Settled::AllOk(self.settled.receivers());
    }

    /// [`Self::judge`] of an attempt to `pending`, `None` being the whole list.
    fn judge_at(
        &mut self,
        pending: Option<&[usize]>,
        answer: Result<Delivered, SendError>,
    ) -> RetryAction {
        let (each, reference) = match answer {
            Err(SendError::Transient(why)) => return RetryAction::Retry(why),
            Err(e) => return RetryAction::DontRetry(e),
            Ok(Delivered::All) => (None, None),
            Ok(Delivered::Each(v)) => (Some(v), None),
            Ok(Delivered::Tracked { reference, each }) => (each, Some(reference)),
        };
        if pending.is_none() && each.is_none() && reference.is_none() {
            self.accept_all();
            return RetryAction::Successful;
        }
        let n = self.settled.receivers();
        if !matches!(self.settled, Settled::Each(_)) {
            // Those accepted already stay accepted (no loop judges again after that, but a
            // caller could).
            let before = matches!(self.settled, Settled::AllOk(_)).then_some(Ok(()));
            self.settled = Settled::Each(vec![before; n]);
        }
        let Settled::Each(settled) = &mut self.settled else {
            unreachable!("a list was made above")
        };
        let count = pending.map_or(n, <[usize]>::len);
        let mut retry = Vec::new();
        let mut why = String::new();
        let mut reached = Vec::new();
        for k in 0..count {
            let i = pending.map_or(k, |p| p[k]);
            let one = match &each {
                None => Ok(()),
                Some(v) => v.get(k).cloned().unwrap_or_else(|| {
                    Err(SendError::Permanent(format!(
                        "{}: no answer for this receiver",
                        self.account
                    )))
                }),
            };
            match one {
                Err(SendError::Transient(w)) => {
                    retry.push(i);
                    why = w;
                }
                other => {
                    if other.is_ok() && reference.is_some() {
                        reached.push(i);
                    }
                    settled[i] = Some(other);
                }
            }
        }
        if let Some(reference) = reference {
            self.references.push((reference, reached));
        }
        if retry.is_empty() {
            RetryAction::Successful
        } else {
            RetryAction::RetryPartial {
                receivers: retry,
                why,
            }
        }
    }

    /// After the current attempt ended in `action`: the pause before the next one, or `None`
    /// when the send is over (then the receivers still unsettled fail with the last error,
    /// with the attempt count when retries were made).
    pub fn next(&mut self, action: RetryAction) -> Option<Duration> {
        let seed = match action {
            RetryAction::Retry(_) | RetryAction::RetryPartial { .. } => {
                *self.seed.get_or_insert_with(RetryPolicy::seed)
            }
            // No pause follows: the seed is not read.
            RetryAction::Successful | RetryAction::DontRetry(_) => 0,
        };
        match self.policy.after(self.attempt, &action, seed) {
            Some(pause) => {
                self.attempt += 1;
                Some(pause)
            }
            None => {
                self.end = match action {
                    RetryAction::Successful => None,
                    RetryAction::Retry(why) | RetryAction::RetryPartial { why, .. } => {
                        Some(RetryPolicy::spent(why, self.attempt))
                    }
                    RetryAction::DontRetry(e) => Some(e),
                };
                None
            }
        }
    }

    /// The outcome of every receiver, in order, and the references with the receivers
    /// (indices) each reached.
    #[cfg(test)]
    pub fn finish(self) -> (Vec<Result<(), SendError>>, Vec<(String, Vec<usize>)>) {
        let (outcomes, references) = self.finish_with(|e| e);
        (outcomes.into_vec(), references)
    }

    /// [`Self::finish`] with each error as `error` makes it, in a list of the receivers' size.
    pub fn finish_with<E>(
        self,
        mut error: impl FnMut(SendError) -> E,
    ) -> (
        smallvec::SmallVec<[Result<(), E>; 1]>,
        Vec<(String, Vec<usize>)>,
    ) {
        let account = self.account;
        let end = self.end;
        // A receiver no answer settled fails with the last error.
        let unsettled = || match &end {
            Some(e) => e.clone(),
            None => SendError::Permanent(format!("{account}: no answer for this receiver")),
        };
        let mut outcomes = smallvec::SmallVec::with_capacity(self.settled.receivers());
        match self.settled {
            // Pushed, not `resize_with` (which, left out of line, cost ~50 instructions a
            // send for its one outcome).
            Settled::AllOk(n) => (0..n).for_each(|_| outcomes.push(Ok(()))),
            Settled::None(n) => outcomes.resize_with(n, || Err(error(unsettled()))),
            Settled::Each(v) => {
                for s in v {
                    outcomes.push(match s {
                        Some(Ok(())) => Ok(()),
                        Some(Err(e)) => Err(error(e)),
                        None => Err(error(unsettled())),
                    });
                }
            }
        }
        (outcomes, self.references)
    }
}

/// One provider call of a send: the account's provider, or a test's script.
pub trait Attempt {
    /// Calls the provider for `receivers`.
    fn attempt(
        &self,
        receivers: &[Receiver],
    ) -> impl Future<Output = Result<Delivered, SendError>> + Send;
}

/// Sends to `receivers` under `retry`: each attempt goes to the receivers still unsettled
/// (the first, and any with nothing settled, to the list as is), with the policy's pause
/// between attempts. Records each attempt's latency, the retries, and the pauses in `stats`.
///
/// `retry` is borrowed, not moved in and given back: it is ~200 bytes, and each move was a
/// copy (four a send, ~120 instructions; bench/MEASURED.md).
pub async fn send_with_policy(
    retry: &mut PartialRetry<'_>,
    stats: &SendStats,
    receivers: &[Receiver],
    target: &impl Attempt,
) {
    loop {
        let pending = retry.unsettled();
        let subset: Vec<Receiver>;
        let to: &[Receiver] = match &pending {
            Some(p) if p.len() != receivers.len() => {
                subset = p.iter().map(|&i| receivers[i].clone()).collect();
                &subset
            }
            _ => receivers,
        };
        let started = monotonic_ns();
        let answer = target.attempt(to).await;
        stats
            .latency
            .observe(Duration::from_nanos(monotonic_ns().saturating_sub(started)));
        // The usual answer, the whole list accepted: settled as `judge_at` and `next` settle
        // it (all accepted, nothing retried, no error), without their matches (~75
        // instructions a send; bench/MEASURED.md).
        if pending.is_none() && matches!(answer, Ok(Delivered::All)) {
            retry.accept_all();
            return;
        }
        let action = retry.judge_at(pending.as_deref(), answer);
        match retry.next(action) {
            Some(pause) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                let _pausing = Raised::new(&stats.retrying);
                // Boxed: a timer is large, and only a retried send needs one.
                Box::pin(tokio::time::sleep(pause)).await;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests;
