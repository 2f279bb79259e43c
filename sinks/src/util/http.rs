//! The HTTP client every network provider shares, and the typed classification of what a
//! call returned: transport errors and HTTP statuses become [`SendError`]s here; each
//! provider then classifies its own error codes inside a 200 answer.

use std::time::Duration;

use reqwest::StatusCode;

use super::retry::SendError;

/// One client per process (connection pools are per host inside it). Redirects are not
/// followed: a 301/302/303 to a POST would be followed as a GET without its body, and a 200
/// there taken for a delivery; the 3xx fails the call with its status.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client without custom TLS roots always builds")
}

/// A transport error: timeouts, refused connections and broken bodies are worth another
/// try; a request that could not even be built is not.
pub fn transport(provider: &str, e: &reqwest::Error) -> SendError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let text = format!("{provider}: {what}: {}", redacted(e));
    if e.is_builder() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// The error's text without the query string of its URL: providers take tokens, keys and
/// secrets as query parameters (DingTalk `access_token`, WeCom `key`, `appsecret`), and the
/// reason of a SEND_FAIL is written to tracking and logs.
pub fn redacted(e: &reqwest::Error) -> String {
    let text = e.to_string();
    match e.url() {
        Some(url) => {
            let mut shown = url.clone();
            shown.set_query(None);
            let _ = shown.set_password(None);
            let _ = shown.set_username("");
            text.replace(url.as_str(), shown.as_str())
        }
        None => text,
    }
}

/// A URL as it may be shown: the credentials of `scheme://user:password@host` become `***`
/// (a Redis URL carries its password there).
pub fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The HTTP status of an answer: 2xx is `Ok`; 408, 429 and 5xx are transient; 401/403 are
/// authentication failures ([`SendError::Unauthorized`]); other 4xx are permanent.
pub fn status(provider: &str, code: StatusCode, body: &str) -> Result<(), SendError> {
    if code.is_success() {
        return Ok(());
    }
    let text = format!("{provider}: HTTP {}: {}", code.as_u16(), excerpt(body));
    Err(match code.as_u16() {
        408 | 429 => SendError::Transient(text),
        401 | 403 => SendError::Unauthorized(text),
        500..=599 => SendError::Transient(text),
        _ => SendError::Permanent(text),
    })
}

/// The first 200 characters of an answer, as a failure reason shows it: a reason is copied
/// into every receiver's SEND_FAIL row, and an error page can be a megabyte.
pub fn excerpt(answer: &str) -> String {
    answer.chars().take(200).collect()
}

/// An answer that is not what the provider documents (an error page, an empty body): tried
/// again, with its first characters as the reason.
pub fn unreadable(provider: &str, answer: &str) -> SendError {
    SendError::Transient(format!(
        "{provider}: unreadable answer: {}",
        excerpt(answer)
    ))
}

/// An answer of any HTTP status, for a provider that puts its own codes in the body of
/// non-2xx answers: judged by `judge` when the body carries a code (`coded`), else by the
/// status; a code `judge` calls final or refused credentials yields to a status that says to
/// try again (a 5xx or 429 with a code of its own: an internal error, a throttle).
pub fn judged<T>(
    provider: &str,
    code: StatusCode,
    body: &str,
    coded: bool,
    judge: impl FnOnce(&str) -> Result<T, SendError>,
) -> Result<T, SendError> {
    if !coded {
        status(provider, code, body)?;
    }
    let judged = judge(body);
    if let Err(SendError::Permanent(_) | SendError::Unauthorized(_)) = judged
        && let Err(again @ SendError::Transient(_)) = status(provider, code, body)
    {
        return Err(again);
    }
    judged
}

/// Sends `request`, checks the status, and returns the body.
pub async fn call(provider: &str, request: reqwest::RequestBuilder) -> Result<String, SendError> {
    let (code, body) = call_raw(provider, request).await?;
    status(provider, code, &body)?;
    Ok(body)
}

/// Sends `request` and returns the status and the body, whatever the status (for providers
/// that put their own codes in the body of non-2xx answers); only transport errors fail.
pub async fn call_raw(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, String), SendError> {
    let mut response = request.send().await.map_err(|e| transport(provider, &e))?;
    let code = response.status();
    // At most MAX_ANSWER bytes are kept (the largest answer, a shared call's 200 numbers,
    // is tens of KB): an endpoint that streams more cannot fill the memory; the rest is not
    // read and the connection is dropped.
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport(provider, &e))?
    {
        let room = MAX_ANSWER - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() >= room {
            break;
        }
    }
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The most of an answer's body a provider's call keeps.
pub const MAX_ANSWER: usize = 1024 * 1024;

/// Opens a TCP connection to a URL's host and port: the health check of an HTTP provider
/// (nothing is sent). Returns the address reached.
pub async fn reach(url: &str, timeout: Duration) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => Ok(s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| format!("{host}:{port}"))),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!("{host}:{port}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_hide_credentials() {
        assert_eq!(shown_url("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(shown_url("redis://h:6379"), "redis://h:6379");
    }

    /// An endpoint that answers 3 MiB: the call keeps the first MAX_ANSWER bytes and is
    /// judged on them.
    #[tokio::test]
    async fn an_answer_is_read_to_at_most_its_cap() {
        let big = axum::Router::new()
            .fallback(axum::routing::any(|| async { "x".repeat(3 * MAX_ANSWER) }));
        let server = crate::util::server::Server::start("127.0.0.1:0", big).unwrap();
        let url = format!("http://{}/", server.addr);
        let (code, body) = call_raw("p", client(Duration::from_secs(10)).get(url))
            .await
            .unwrap();
        assert_eq!((code.as_u16(), body.len()), (200, MAX_ANSWER));
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_query() {
        // Nothing listens on port 9 of 127.0.0.1 here: connection refused.
        let e = client(Duration::from_secs(2))
            .get("http://127.0.0.1:9/gettoken?appkey=k&appsecret=TOP-SECRET")
            .send()
            .await
            .unwrap_err();
        let reason = transport("p", &e).reason().to_string();
        assert!(!reason.contains("TOP-SECRET"), "{reason}");
        assert!(reason.contains("127.0.0.1:9/gettoken"), "{reason}");
    }

    #[test]
    fn statuses_classify() {
        let c = |n: u16| status("p", StatusCode::from_u16(n).unwrap(), "x");
        assert!(c(200).is_ok());
        assert!(matches!(c(429), Err(SendError::Transient(_))));
        assert!(matches!(c(503), Err(SendError::Transient(_))));
        assert!(matches!(c(401), Err(SendError::Unauthorized(_))));
        assert!(matches!(c(400), Err(SendError::Permanent(_))));
        assert_eq!(c(404).unwrap_err().reason(), "p: HTTP 404: x");
    }
}
