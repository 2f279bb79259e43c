//! Who may call the send API: per-caller bearer tokens, kept only as SHA-256 hashes, and a
//! rate limit per caller (a token bucket of `per_second` with a burst of one second).

use std::num::NonZeroU32;

use axum::http::{HeaderMap, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::{Answer, TOO_MANY, UNAUTHORIZED};
use crate::job::Caller;

/// The callers of one gateway. With none configured anyone may call (the job file allows
/// that only on a loopback address).
pub struct Callers {
    list: Vec<(Caller, Option<DefaultDirectRateLimiter>)>,
}

/// The SHA-256 of a token, as `token_sha256` is written.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Callers {
    /// The callers of a job's `[gateway.callers]`.
    pub fn new(callers: &[Caller]) -> Callers {
        Callers {
            list: callers
                .iter()
                .map(|c| {
                    let limiter = c.per_second.map(|n: NonZeroU32| {
                        RateLimiter::direct(Quota::per_second(n).allow_burst(n))
                    });
                    (c.clone(), limiter)
                })
                .collect(),
        }
    }

    /// Whether `caller` may change templates: any one when none are configured, else one
    /// with `templates = true`.
    pub fn may_change_templates(&self, caller: Option<usize>) -> bool {
        match caller {
            None => self.list.is_empty(),
            Some(i) => self.list.get(i).is_some_and(|(c, _)| c.templates),
        }
    }

    /// Whether any caller is configured.
    pub fn any(&self) -> bool {
        !self.list.is_empty()
    }

    /// Which caller `headers` name by their token (`None` when no callers are configured),
    /// or the 401 answer.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<usize>, Answer> {
        if self.list.is_empty() {
            return Ok(None);
        }
        let given = crate::admin::bearer_token(headers);
        let Some(given) = given else {
            return Err(Answer::new(
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "missing token: send Authorization: Bearer TOKEN (a [gateway.callers] token)"
                    .into(),
            ));
        };
        let hash: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Every caller is compared, in time independent of which one matches.
        let mut found = None;
        for (i, (c, _)) in self.list.iter().enumerate() {
            let same = c
                .token_sha256
                .iter()
                .zip(&hash)
                .fold(0u8, |d, (x, y)| d | (x ^ y))
                == 0;
            if same {
                found = Some(i);
            }
        }
        match found {
            Some(i) => Ok(Some(i)),
            None => Err(Answer::new(
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "wrong token: no [gateway.callers] entry has it".into(),
            )),
        }
    }

    /// Takes `messages` from the caller's rate, or the 429 answer (a request of more messages
    /// than one second's worth is refused whole).
    pub fn within_rate(&self, caller: Option<usize>, messages: usize) -> Result<(), Answer> {
        let Some((caller, Some(limiter))) = caller.and_then(|i| self.list.get(i)) else {
            return Ok(());
        };
        let rate = caller.per_second.map_or(0, NonZeroU32::get);
        let n =
            NonZeroU32::new(u32::try_from(messages).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let wait = match limiter.check_n(n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => not_until.wait_time_from(DefaultClock::default().now()),
            Err(_) => {
                return Err(Answer::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    TOO_MANY,
                    format!(
                        "caller {} may send {rate} messages/s; this request has {messages}: split it",
                        caller.name
                    ),
                ));
            }
        };
        let mut answer = Answer::new(
            StatusCode::TOO_MANY_REQUESTS,
            TOO_MANY,
            format!(
                "caller {} is over its rate of {rate} messages/s; retry in {} ms",
                caller.name,
                wait.as_millis().max(1)
            ),
        );
        answer.retry_after = Some(wait.as_secs().max(1));
        Err(answer)
    }

    /// The caller `headers` name, within its rate for one message (for tests and callers
    /// that count requests).
    pub fn admit(&self, headers: &HeaderMap) -> Result<Option<&str>, Answer> {
        let caller = self.identify(headers)?;
        self.within_rate(caller, 1)?;
        Ok(caller.map(|i| self.list[i].0.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(token: &str, per_second: Option<u32>) -> Caller {
        let mut h = [0u8; 32];
        hex::decode_to_slice(hash_token(token), &mut h).unwrap();
        Caller {
            name: "shop".into(),
            token_sha256: h,
            per_second: per_second.and_then(NonZeroU32::new),
            templates: false,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn tokens_are_checked_by_their_hash_and_rates_per_caller() {
        let callers = Callers::new(&[caller("s3cret", Some(2))]);
        assert_eq!(callers.admit(&bearer("s3cret")).unwrap(), Some("shop"));
        let wrong = callers.admit(&bearer("guess")).unwrap_err();
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        let none = callers.admit(&HeaderMap::new()).unwrap_err();
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        // The burst is one second's worth: the second passes, the third is over.
        assert!(callers.admit(&bearer("s3cret")).is_ok());
        let over = callers.admit(&bearer("s3cret")).unwrap_err();
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(over.body["code"], TOO_MANY);
        assert!(over.retry_after.is_some());
        // No callers: open (loopback only, by the job file's rule).
        assert_eq!(Callers::new(&[]).admit(&HeaderMap::new()).unwrap(), None);
        // A request of more messages than a second's worth is refused whole.
        let batch = Callers::new(&[caller("b", Some(5))]);
        let who = batch.identify(&bearer("b")).unwrap();
        assert!(batch.within_rate(who, 3).is_ok());
        let over = batch.within_rate(who, 3).unwrap_err();
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
        let huge = batch.within_rate(who, 6).unwrap_err();
        assert!(
            huge.body["msg"].as_str().unwrap().contains("split it"),
            "{:?}",
            huge.body
        );
        // A published SHA-256 test vector.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
