//! The client end of the job service (reqwest, blocking): `tidings submit`, `jobs`, `job`,
//! `stop` and the tests.

use std::sync::OnceLock;
use std::time::Duration;

/// The default address of `tidings serve`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            // A stop waits for the job's drain (at most `STOP_BOUND`).
            .timeout(super::STOP_BOUND + Duration::from_secs(15))
            // An address nobody answers (a node down, a packet filter) fails in seconds, not
            // at the total bound: a cluster's submit reaches its nodes one after another.
            .connect_timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::blocking::Client::new())
    })
}

/// `server` as a base URL: `HOST:PORT` gets `http://`; a trailing `/` goes.
pub fn base(server: &str) -> String {
    let s = server.trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

/// A blocking request of `method` to `path` at `server`, with a JSON `body`: the status and
/// the body of the answer.
pub fn request(
    method: reqwest::Method,
    server: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut r = client().request(method, format!("{}{path}", base(server)));
    if let Some(b) = body {
        r = r.json(b);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let answer = r.send().map_err(std::io::Error::other)?;
    let status = answer.status().as_u16();
    let text = answer.text().map_err(std::io::Error::other)?;
    Ok((status, text))
}

/// `/jobs/NAME`, the name percent-encoded as a path segment.
pub fn job_path(name: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/jobs/").expect("a fixed URL");
    url.path_segments_mut()
        .expect("an http URL has segments")
        .pop_if_empty()
        .push(name);
    url.path().to_string()
}

#[cfg(test)]
mod tests {
    /// A name is one path segment, whatever it holds (a peer forwarded `a?b` as job `a`).
    #[test]
    fn a_job_name_is_one_path_segment() {
        assert_eq!(super::job_path("a?b/c#d%"), "/jobs/a%3Fb%2Fc%23d%25");
        assert_eq!(super::job_path("订单"), "/jobs/%E8%AE%A2%E5%8D%95");
    }
}
