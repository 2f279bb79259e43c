//! The client end of the admin API (reqwest): `tidings state`, `tidings top` and the tests.

use std::sync::OnceLock;
use std::time::Duration;

use crate::job::Job;

/// The address of a running job's admin API: `admin.addr` in its state directory (written at
/// start), else the job's `admin.bind`.
pub fn address_of(job: &Job) -> Option<String> {
    std::fs::read_to_string(job.state_dir.join("admin.addr"))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| job.admin.as_ref().map(|a| a.bind.to_string()))
}

/// One client for the process (its connections are kept alive between calls).
fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::blocking::Client::new())
    })
}

/// A blocking `GET` of `path` (with its query) at `addr`: the status and the body.
pub fn get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    get_query(addr, path, &[], token)
}

/// A blocking `GET` of `path` with `query` pairs (encoded here): the status and the body.
pub fn get_query(
    addr: &str,
    path: &str,
    query: &[(&str, &str)],
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut request = client().get(format!("http://{addr}{path}"));
    if !query.is_empty() {
        request = request.query(query);
    }
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let answer = request.send().map_err(std::io::Error::other)?;
    let status = answer.status().as_u16();
    let body = answer.text().map_err(std::io::Error::other)?;
    Ok((status, body))
}
