//! Retry decisions come from a typed classification of the error, never from its text
//! (Vector's `RetryLogic`, Arroyo's `ErrorDomain` + `RetryHint`): an attempt ends in a
//! [`RetryAction`], and [`RetryPolicy::after`] says whether another attempt follows and after
//! what pause. [`RetryPolicy::run`] is that loop for a call with one outcome; the account's
//! loop over per-receiver answers (`account/retry.rs`) uses the same decision.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::stats::{Raised, SendStats};

/// What went wrong, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another try after a pause: 429, 5xx, timeouts, connection and I/O errors.
    Transient(String),
    /// Trying again cannot help: invalid receiver, bad request, other 4xx.
    Permanent(String),
    /// The provider refused the credentials (401/403, an invalid signature or token): not
    /// retried as is; a provider holding a token refreshes it and tries once more.
    Unauthorized(String),
}

impl SendError {
    /// The reason text, for SEND_FAIL.
    pub fn reason(&self) -> &str {
        match self {
            SendError::Transient(r) | SendError::Permanent(r) | SendError::Unauthorized(r) => r,
        }
    }
}

/// What one attempt's answer asks of the retry loop (Vector's `RetryAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAction {
    /// Everything the attempt sent is settled (accepted, or refused for good).
    Successful,
    /// The whole call failed transiently: try the same again.
    Retry(String),
    /// Some receivers answered transiently: try only those again (indices into the send's
    /// receivers); `why` is the last of their reasons.
    RetryPartial {
        /// The receivers to send to again.
        receivers: Vec<usize>,
        /// Why (the last transient answer).
        why: String,
    },
    /// The call failed for good (a permanent error or refused credentials): stop.
    DontRetry(SendError),
}

impl RetryAction {
    /// The action of a call with one outcome: a transient error retries, others stop.
    pub fn of(result: Result<(), SendError>) -> RetryAction {
        match result {
            Ok(()) => RetryAction::Successful,
            Err(SendError::Transient(why)) => RetryAction::Retry(why),
            Err(e) => RetryAction::DontRetry(e),
        }
    }
}

/// Retry budget and backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First pause.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `n` (1-based retry count): exponential, capped, with ±25%
    /// jitter so that many failing sends do not retry in lockstep.
    pub fn backoff(&self, n: u32, jitter_seed: u64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << n.min(16).saturating_sub(1))
            .min(self.max);
        // A cheap deterministic-per-call spread in [0.75, 1.25).
        let spread = 0.75 + (splitmix(jitter_seed) % 1000) as f64 / 2000.0;
        base.mul_f64(spread)
    }

    /// After attempt `attempt` (1-based) ended in `action`: the pause before the next attempt,
    /// or `None` when there is none (success, a final error, or the budget spent). `seed`
    /// spreads the pauses of different calls ([`RetryPolicy::seed`]).
    pub fn after(&self, attempt: u32, action: &RetryAction, seed: u64) -> Option<Duration> {
        match action {
            RetryAction::Retry(_) | RetryAction::RetryPartial { .. } if attempt < self.attempts => {
                Some(self.backoff(attempt, seed ^ attempt as u64))
            }
            _ => None,
        }
    }

    /// The error that ends a call whose last attempt `attempt` still answered transiently:
    /// its reason, with the attempt count when retries were made.
    pub fn spent(why: String, attempt: u32) -> SendError {
        if attempt > 1 {
            SendError::Transient(format!("{why} (after {attempt} attempts)"))
        } else {
            SendError::Transient(why)
        }
    }

    /// A seed for the jitter of one call's pauses.
    pub fn seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(7)
    }

    /// Runs `op` until it succeeds, fails permanently, or the budget is spent; the error is
    /// the last one, with the attempt count when retries were made.
    pub async fn run<F, Fut>(&self, op: F) -> Result<(), SendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), SendError>>,
    {
        self.run_observed(&SendStats::default(), op).await
    }

    /// [`RetryPolicy::run`], recording each attempt's latency, the retries, and the pauses
    /// between tries in `stats`.
    pub async fn run_observed<F, Fut>(&self, stats: &SendStats, mut op: F) -> Result<(), SendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), SendError>>,
    {
        let seed = Self::seed();
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let action = RetryAction::of(op().await);
            stats.latency.observe(started.elapsed());
            match self.after(attempt, &action, seed) {
                Some(pause) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    let _pausing = Raised::new(&stats.retrying);
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                None => {
                    return match action {
                        RetryAction::Successful => Ok(()),
                        RetryAction::Retry(why) | RetryAction::RetryPartial { why, .. } => {
                            Err(Self::spent(why, attempt))
                        }
                        RetryAction::DontRetry(e) => Err(e),
                    };
                }
            }
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_errors_retry_until_the_budget() {
        let calls = AtomicU32::new(0);
        let r = fast(3)
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(SendError::Transient("503".into())) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            r,
            Err(SendError::Transient("503 (after 3 attempts)".into()))
        );
    }

    #[tokio::test]
    async fn permanent_errors_do_not_retry_and_success_stops() {
        let calls = AtomicU32::new(0);
        let r = fast(5)
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(SendError::Permanent("invalid receiver".into())) }
            })
            .await;
        assert_eq!((calls.load(Ordering::SeqCst), r.is_err()), (1, true));
        let calls = AtomicU32::new(0);
        let r = fast(5)
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(SendError::Transient("429".into()))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert_eq!((calls.load(Ordering::SeqCst), r), (3, Ok(())));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let b1 = p.backoff(1, 1);
        let b3 = p.backoff(3, 1);
        assert!(b1 >= Duration::from_millis(75) && b1 < Duration::from_millis(125));
        assert!(b3 >= Duration::from_millis(300) && b3 < Duration::from_millis(500));
        assert!(p.backoff(9, 1) <= Duration::from_millis(1250));
    }

    #[test]
    fn only_transient_actions_retry_and_only_within_the_budget() {
        let p = RetryPolicy {
            attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let partial = RetryAction::RetryPartial {
            receivers: vec![1],
            why: "busy".into(),
        };
        assert_eq!(
            p.after(1, &RetryAction::Retry("503".into()), 9),
            Some(p.backoff(1, 9 ^ 1))
        );
        assert_eq!(p.after(2, &partial, 9), Some(p.backoff(2, 9 ^ 2)));
        assert_eq!(
            p.after(3, &partial, 9),
            None,
            "the third attempt was the last"
        );
        assert_eq!(p.after(1, &RetryAction::Successful, 9), None);
        let refused = RetryAction::DontRetry(SendError::Unauthorized("401".into()));
        assert_eq!(p.after(1, &refused, 9), None);
        assert_eq!(
            RetryPolicy::spent("busy".into(), 3),
            SendError::Transient("busy (after 3 attempts)".into())
        );
        assert_eq!(
            RetryPolicy::spent("busy".into(), 1),
            SendError::Transient("busy".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pauses_between_attempts_are_the_backoff_in_virtual_time() {
        let p = RetryPolicy {
            attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let stats = SendStats::default();
        let calls = std::sync::Mutex::new(Vec::new());
        let start = tokio::time::Instant::now();
        let r = p
            .run_observed(&stats, || {
                calls.lock().unwrap().push(start.elapsed());
                async { Err(SendError::Transient("503".into())) }
            })
            .await;
        assert_eq!(
            r,
            Err(SendError::Transient("503 (after 3 attempts)".into()))
        );
        let at = calls.into_inner().unwrap();
        assert_eq!(at.len(), 3);
        assert_eq!(at[0], Duration::ZERO);
        // 100 ms then 200 ms, each within the ±25% jitter (the timer rounds up to 1 ms).
        let first = at[1] - at[0];
        let second = at[2] - at[1];
        assert!(
            first >= Duration::from_millis(75) && first <= Duration::from_millis(126),
            "{first:?}"
        );
        assert!(
            second >= Duration::from_millis(150) && second <= Duration::from_millis(251),
            "{second:?}"
        );
        assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
        assert_eq!(
            stats.retrying.load(Ordering::Relaxed),
            0,
            "no pause is still counted"
        );
    }
}
