//! Access tokens of the token-based providers (DingTalk and WeCom apps, WeChat, GeTui):
//! fetched on first use, cached until shortly before they expire, fetched again when the
//! provider answers that the token is invalid or expired. One fetch at a time: concurrent
//! sends wait for it instead of each asking for a token (providers cap token calls per day).
//! Also the `{"errcode", "errmsg"}` answers of DingTalk, WeCom and WeChat, token or call.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock (std's outside a paused test runtime): the tests move it.
use tokio::time::Instant;

use serde_json::Value;
use tokio::sync::Mutex;

use super::retry::SendError;
use crate::util::kit::errcode;

/// What a call made with a token came back with.
#[derive(Debug)]
pub enum Answer<T> {
    /// The call's own result.
    Done(T),
    /// The provider refused the token (expired, revoked, invalid): fetch another, try again.
    TokenRejected(String),
}

/// One cached token.
#[derive(Debug, Default)]
pub struct TokenCache {
    cell: Mutex<Cell>,
    fetches: AtomicU64,
}

/// A token and until when it is used, or the last fetch's failure and when it came.
#[derive(Debug, Default)]
struct Cell {
    token: Option<(String, Instant)>,
    failed: Option<(SendError, Instant)>,
}

/// How long a failed token fetch answers for every send that asks in the meantime: the sends
/// queued behind a failed fetch share its answer instead of each fetching again (a throttled
/// token endpoint is not asked once per waiting send, each charged to the daily quota).
const FAILED_FOR: Duration = Duration::from_secs(1);

/// The longest a token is kept, whatever lifetime its endpoint gave it.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

impl TokenCache {
    /// How many times a token was fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The cached token, or a fresh one from `fetch` (which returns the token and its
    /// lifetime). A token is used until a tenth of its lifetime (at most five minutes) before
    /// it expires.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<String, SendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), SendError>>,
    {
        let mut cell = self.cell.lock().await;
        if let Some((token, until)) = &cell.token
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        if let Some((e, at)) = &cell.failed
            && at.elapsed() < FAILED_FOR
        {
            return Err(e.clone());
        }
        let (token, lifetime) = match fetch().await {
            Ok(t) => t,
            Err(e) => {
                cell.failed = Some((e.clone(), Instant::now()));
                return Err(e);
            }
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // An endpoint's lifetime is believed up to a day (a larger one, up to u64's seconds,
        // would overflow the instant it ends at).
        let lifetime = lifetime.min(MAX_LIFETIME);
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        *cell = Cell {
            token: Some((
                token.clone(),
                Instant::now() + lifetime.saturating_sub(margin),
            )),
            failed: None,
        };
        Ok(token)
    }

    /// Forgets `token` if it is still the cached one (another send may have replaced it).
    pub async fn invalidate(&self, token: &str) {
        let mut cell = self.cell.lock().await;
        if cell.token.as_ref().is_some_and(|(t, _)| t == token) {
            cell.token = None;
        }
    }

    /// Runs `call` with a token; when the provider rejects it, fetches a new one and calls
    /// once more. A second rejection is [`SendError::Unauthorized`].
    pub async fn with_token<T, F, Fut, C, CFut>(&self, fetch: F, call: C) -> Result<T, SendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(String, Duration), SendError>>,
        C: Fn(String) -> CFut,
        CFut: Future<Output = Result<Answer<T>, SendError>>,
    {
        let mut last = String::new();
        for _ in 0..2 {
            let token = self.get(&fetch).await?;
            match call(token.clone()).await? {
                Answer::Done(t) => return Ok(t),
                Answer::TokenRejected(why) => {
                    self.invalidate(&token).await;
                    last = why;
                }
            }
        }
        Err(SendError::Unauthorized(last))
    }
}

/// Reads a `{"errcode", "errmsg", "access_token", "expires_in"}` token answer (DingTalk,
/// WeCom, WeChat).
pub fn token_answer(
    provider: &str,
    answer: &str,
) -> Result<(String, std::time::Duration), SendError> {
    let v: Value = serde_json::from_str(answer)
        .map_err(|_| SendError::Transient(format!("{provider}: unreadable token answer")))?;
    match (v["access_token"].as_str(), errcode(answer)) {
        (Some(t), None | Some((0, _))) => Ok((
            t.to_string(),
            std::time::Duration::from_secs(v["expires_in"].as_u64().unwrap_or(7200)),
        )),
        // -1: system busy; over the token endpoint's rate (WeChat 45009 "reach max api daily
        // quota limit" and 45011 "api minute-quota reach limit, must slower", WeCom 45009 "api
        // freq out of limit" and 45033 "api concurrent out of limit", DingTalk 90018): tried
        // again, not taken as bad credentials.
        (_, Some((code @ (-1 | 45009 | 45011 | 45033 | 90018), msg))) => Err(SendError::Transient(
            format!("{provider}: token: {code} {msg}"),
        )),
        (_, Some((code, msg))) => Err(SendError::Unauthorized(format!(
            "{provider}: token: {code} {msg}"
        ))),
        (None, None) => Err(SendError::Transient(format!(
            "{provider}: token answer without access_token"
        ))),
    }
}

/// Classifies an `{"errcode", "errmsg"}` answer: 0 is done, `token_codes` reject the
/// token, `busy_codes` (and -1) are transient, anything else is permanent. DingTalk's 88
/// ("see `sub_code`") is judged by its `sub_code` when it has one: an invalid or expired
/// token (40014, 42001) or another refusal (60011: no permission for the API), which a new
/// token would not change.
pub fn errcode_answer(
    provider: &str,
    answer: &str,
    token_codes: &[i64],
    busy_codes: &[i64],
) -> Result<Answer<Value>, SendError> {
    let sub_code = || {
        let v: Value = serde_json::from_str(answer).ok()?;
        match &v["sub_code"] {
            Value::String(s) => s.trim().parse().ok(),
            n => n.as_i64(),
        }
    };
    let code = errcode(answer).map(|(code, msg)| match code {
        88 => (sub_code().unwrap_or(88), msg),
        _ => (code, msg),
    });
    match code {
        Some((0, _)) => Ok(Answer::Done(
            serde_json::from_str(answer).unwrap_or(Value::Null),
        )),
        Some((code, msg)) if token_codes.contains(&code) => {
            Ok(Answer::TokenRejected(format!("{provider}: {code} {msg}")))
        }
        Some((code, msg)) if code == -1 || busy_codes.contains(&code) => {
            Err(SendError::Transient(format!("{provider}: {code} {msg}")))
        }
        Some((code, msg)) => Err(SendError::Permanent(format!("{provider}: {code} {msg}"))),
        None => Err(super::http::unreadable(provider, answer)),
    }
}

impl TokenCache {
    /// POSTs `body` as JSON to `url(token)` with the cached token, and reads an `{"errcode",
    /// "errmsg"}` answer (DingTalk, WeCom, WeChat): `token_codes` make it fetch a new token
    /// and call once more, `busy_codes` (and -1) are transient, other codes permanent.
    #[allow(clippy::too_many_arguments)]
    pub async fn post_errcode<F, Fut>(
        &self,
        provider: &str,
        client: &reqwest::Client,
        fetch: F,
        url: impl Fn(&str) -> String,
        body: &Value,
        token_codes: &[i64],
        busy_codes: &[i64],
    ) -> Result<Value, SendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(String, Duration), SendError>>,
    {
        self.with_token(fetch, |token| {
            let url = url(&token);
            async move {
                let answer = super::http::call(provider, client.post(url).json(body)).await?;
                errcode_answer(provider, &answer, token_codes, busy_codes)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn cached_until_rejected_then_fetched_once_more() {
        let cache = TokenCache::default();
        let issued = AtomicU32::new(0);
        let fetch = || async {
            let n = issued.fetch_add(1, Ordering::Relaxed);
            Ok((format!("t{n}"), Duration::from_secs(7200)))
        };
        // t0 is accepted twice; one fetch.
        for _ in 0..2 {
            let got = cache
                .with_token(fetch, |t| async move { Ok(Answer::Done(t)) })
                .await;
            assert_eq!(got.unwrap(), "t0");
        }
        assert_eq!(cache.fetches(), 1);
        // The provider rejects t0: t1 is fetched and used.
        let got = cache
            .with_token(fetch, |t| async move {
                Ok(if t == "t0" {
                    Answer::TokenRejected("40001 invalid credential".into())
                } else {
                    Answer::Done(t)
                })
            })
            .await;
        assert_eq!(got.unwrap(), "t1");
        // Rejected every time: Unauthorized after one refresh, not a loop.
        let got: Result<(), _> = cache
            .with_token(fetch, |_| async {
                Ok(Answer::TokenRejected("42001 expired".into()))
            })
            .await;
        assert_eq!(got, Err(SendError::Unauthorized("42001 expired".into())));
        assert_eq!(cache.fetches(), 3, "t0, t1, and t2 after t1 was refused");
    }

    #[tokio::test]
    async fn an_expired_token_is_fetched_again() {
        let cache = TokenCache::default();
        let fetch = || async { Ok(("t".to_string(), Duration::ZERO)) };
        cache.get(fetch).await.unwrap();
        cache.get(fetch).await.unwrap();
        assert_eq!(cache.fetches(), 2);
        // A lifetime past any instant (a broken endpoint's u64::MAX seconds) is kept a day.
        let answer = r#"{"access_token":"T","expires_in":18446744073709551615}"#;
        let cache = TokenCache::default();
        let fetch = || async { token_answer("wechat", answer) };
        assert_eq!(cache.get(fetch).await.unwrap(), "T");
        assert_eq!(cache.get(fetch).await.unwrap(), "T");
        assert_eq!(cache.fetches(), 1);
    }

    /// A failed fetch answers the sends that ask within [`FAILED_FOR`] (one call to a
    /// throttled endpoint, not one per waiting send); after it the next send fetches again.
    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_is_shared_for_a_moment() {
        let cache = TokenCache::default();
        let calls = AtomicU32::new(0);
        let fetch = || async {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                token_answer(
                    "wechat",
                    r#"{"errcode":45011,"errmsg":"api minute-quota reach limit, must slower, retry next minute"}"#,
                )
            } else {
                Ok(("t".to_string(), Duration::from_secs(7200)))
            }
        };
        for _ in 0..3 {
            let e = cache.get(fetch).await.unwrap_err();
            assert!(matches!(e, SendError::Transient(_)), "{e:?}");
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        tokio::time::advance(FAILED_FOR).await;
        assert_eq!(cache.get(fetch).await.unwrap(), "t");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    /// The token endpoints' throttles are tried again; bad credentials are not.
    #[test]
    fn a_throttled_token_endpoint_is_transient() {
        for busy in [
            r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#,
            r#"{"errcode":45033,"errmsg":"api concurrent out of limit"}"#,
            r#"{"errcode":-1,"errmsg":"system busy"}"#,
        ] {
            let e = token_answer("wecom_app", busy).unwrap_err();
            assert!(matches!(e, SendError::Transient(_)), "{busy}: {e:?}");
        }
        let e = token_answer(
            "wecom_app",
            r#"{"errcode":40001,"errmsg":"invalid credential"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    }
}
