//! `tidings serve --peers FILE`: the service nodes that run a submitted job together as one
//! timely cluster. FILE has one REST address (`host:port`) per node, in process order; this
//! node is the line equal to its `--bind` (or `--peer-index`). A job submitted to any node is
//! given a cluster hostfile (`host_i:P+i`, P a port free here) and submitted by path to every
//! other node with it; each node then runs process `i` of the job under its own supervision
//! (a crash anywhere fails the whole cluster, and every node restarts its process with
//! backoff: timely's connections wait until all are up again). Stops, restarts and deletes
//! are passed on the same way. The nodes must read the job file at the same path and share
//! its `state_dir` and `tracking.dir` (a shared file system, or `s3://` prefixes).

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use super::client::request;

/// The service nodes of a cluster, and which one this is.
#[derive(Debug, Clone)]
pub struct Peers {
    /// This node's index (its line in the file).
    pub me: usize,
    /// Every node's REST address, in process order.
    pub apis: Vec<String>,
    /// The bearer token of the nodes (the same `--token` on every node).
    pub token: Option<String>,
}

impl Peers {
    /// Reads the peers file; this node is line `index`, or the line equal to `bind`.
    pub fn load(
        file: &Path,
        bind: &str,
        index: Option<usize>,
        token: Option<String>,
    ) -> Result<Peers, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--peers {}: {e}", file.display()))?;
        let apis: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if apis.len() < 2 {
            return Err(format!(
                "--peers {}: {} node(s); list every node's host:port, one per line (at least 2)",
                file.display(),
                apis.len()
            ));
        }
        let me = match index {
            Some(i) if i < apis.len() => i,
            Some(i) => {
                return Err(format!(
                    "--peer-index {i}: --peers {} has {} nodes",
                    file.display(),
                    apis.len()
                ));
            }
            None => apis.iter().position(|a| a == bind).ok_or_else(|| {
                format!(
                    "--peers {}: no line is this node's --bind {bind}; add it or give --peer-index",
                    file.display()
                )
            })?,
        };
        Ok(Peers { me, apis, token })
    }

    /// A cluster hostfile for a new job: node `i`'s host with port `P + i`, `P` a port free on
    /// this node (and the next ones, for nodes on this same host).
    pub fn new_cluster(&self) -> Result<Vec<String>, String> {
        let n = self.apis.len() as u16;
        for _ in 0..20 {
            let base = std::net::TcpListener::bind("0.0.0.0:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port for the job's cluster: {e}"))?
                .port();
            let Some(last) = base.checked_add(n) else {
                continue;
            };
            let free = (base..last).all(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok());
            if free {
                return Ok(self
                    .apis
                    .iter()
                    .zip(base..)
                    .map(|(api, port)| {
                        let host = api.rsplit_once(':').map_or(api.as_str(), |(h, _)| h);
                        format!("{host}:{port}")
                    })
                    .collect());
            }
        }
        Err("no run of free ports for the job's cluster".into())
    }

    /// Sends a request to every other node; the first refusal, naming the node.
    pub fn forward(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(), String> {
        for (i, api) in self.apis.iter().enumerate() {
            if i == self.me {
                continue;
            }
            match request(method.clone(), api, path, body, self.token.as_deref()) {
                Ok((status, _)) if status < 300 => {}
                Ok((status, text)) => {
                    return Err(format!(
                        "peer {i} ({api}) answered {status}: {}",
                        said(&text)
                    ));
                }
                Err(e) => return Err(format!("peer {i} ({api}): {e}")),
            }
        }
        Ok(())
    }
}

/// What a peer's refusal says, on one line: its `{"error": …}`, or the start of a page that is
/// not one (a proxy's).
fn said(text: &str) -> String {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text)
        && let Some(Value::String(e)) = o.get("error")
    {
        return e.clone();
    }
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let shown = tidings_sinks::util::http::excerpt(&line);
    if shown.len() < line.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peers_refusal_is_one_line() {
        assert_eq!(super::said(r#"{"error":"job x: bad"}"#), "job x: bad");
        let page = format!("<html>\n<body>\n{}</body></html>", "x".repeat(500));
        let said = super::said(&page);
        assert!(
            !said.contains('\n') && said.chars().count() == 201,
            "{said}"
        );
    }
}
