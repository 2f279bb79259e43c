//! The running job's admin API: live windowed state, sends, source lag, and `/metrics`, on
//! the project's one HTTP server ([`tidings_sinks::util::server`], axum on its own thread,
//! never a timely worker).
//!
//! | path | answers |
//! |---|---|
//! | `/state` | everything below in one object |
//! | `/state/content?template=ID&receiver=R&var.NAME=V&at=T` | the content dedup window of a key |
//! | `/state/frequency?receiver=R&channel=C` (or `template=ID`) `&at=T` | the frequency counters of a key |
//! | `/state/operators` | keys, entries, bytes, oldest entry per keyed operator |
//! | `/state/park` | parked night_delay deliveries and the next release |
//! | `/state/accounts` | rate limiters (tokens, waiting), sends (in flight, retrying), latency |
//! | `/state/source` | Kafka positions, high watermarks, lag; last checkpoint |
//! | `/metrics` | OpenMetrics text ([`metrics`]) |
//!
//! Key questions are answered by the operator that owns the key, from its state
//! ([`tidings_operators::live`]); `at` (RFC 3339 or ms; default now) also asks whether a
//! delivery of that event time would pass. When bound to a non-loopback address every request
//! must carry `Authorization: Bearer TOKEN` (one layer in front of every route).
//! [`client`] is the other end: `tidings state`, `tidings top` and the tests.

pub mod client;
pub mod metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_model::ids;
use tidings_model::render::Variables;
use tidings_operators::Clock;
use tidings_operators::live::{Live, iso};
use tidings_sinks::util::server::Server;
use tidings_sinks::util::stats::LATENCY_BUCKETS;

use crate::job::{AdminSettings, Job};
use crate::send::SendContext;
use crate::track::Counts;

pub use client::{address_of, get};
use tidings_model::time::wall_ms as now_ms;

/// How long a question may wait for its operator.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin API reads, shared with the running job.
pub struct AdminState {
    /// The job.
    pub job: Arc<Job>,
    /// Operators' live state.
    pub live: Live,
    /// Accounts and their queues.
    pub send: Arc<SendContext>,
    /// Durable tracking rows so far.
    pub counts: Arc<Mutex<Counts>>,
    /// The job's clock (the default `at`).
    pub clock: Clock,
    /// When the run started.
    pub started: Instant,
}

/// The running server.
pub struct AdminServer {
    server: Server,
    /// The bound address (the real port when the job asked for port 0).
    pub addr: SocketAddr,
}

impl AdminServer {
    /// Binds and serves until [`AdminServer::stop`]. The bound address is also written to
    /// `state_dir/admin.addr`, where `tidings state` and `tidings top` find it.
    pub fn start(settings: &AdminSettings, state: AdminState) -> anyhow::Result<AdminServer> {
        let state = Arc::new(state);
        let token: Option<Arc<str>> = settings.token.as_deref().map(Into::into);
        let server = Server::start(settings.bind, router(state.clone(), token))
            .map_err(|e| anyhow::anyhow!("admin.bind {}: {e}", settings.bind))?;
        let addr = server.addr;
        std::fs::create_dir_all(&state.job.state_dir)?;
        std::fs::write(state.job.state_dir.join("admin.addr"), addr.to_string())?;
        tracing::info!("admin API on http://{addr}/ (state, metrics)");
        Ok(AdminServer { server, addr })
    }

    /// Stops serving.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// The routes, behind the bearer-token layer when the job set `admin.token`.
pub fn router(state: Arc<AdminState>, token: Option<Arc<str>>) -> Router {
    let registry = Arc::new(metrics::registry(state.clone()));
    // A scrape asks the keyed operators for their summaries: it may wait, so it blocks a
    // thread of the blocking pool, not the server's.
    let metrics_route = routing::get(move || {
        let registry = registry.clone();
        async move {
            tokio::task::spawn_blocking(move || metrics::answer(&registry))
                .await
                .unwrap_or_else(|e| Problem::unavailable(e).into_response())
        }
    });
    Router::new()
        .route("/", routing::get(index))
        .route("/state", routing::get(everything))
        .route("/state/operators", routing::get(operators_route))
        .route(
            "/state/park",
            routing::get(|State(s): State<Arc<AdminState>>| async move { Json(park(&s)) }),
        )
        .route(
            "/state/accounts",
            routing::get(|State(s): State<Arc<AdminState>>| async move { Json(accounts(&s)) }),
        )
        .route(
            "/state/source",
            routing::get(|State(s): State<Arc<AdminState>>| async move { Json(source(&s)) }),
        )
        .route("/state/content", routing::get(content_route))
        .route("/state/frequency", routing::get(frequency_route))
        .route("/metrics", metrics_route)
        .fallback(|uri: axum::http::Uri| async move {
            Problem(
                StatusCode::NOT_FOUND,
                format!("no such path {}; GET / lists them", uri.path()),
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem(StatusCode::METHOD_NOT_ALLOWED, "only GET".into())
        })
        .layer(axum::middleware::from_fn_with_state(token, bearer))
        .with_state(state)
}

/// An error answer: its status and `{"error": message}`.
#[derive(Debug, PartialEq)]
pub struct Problem(pub StatusCode, pub String);

impl Problem {
    fn bad(msg: impl Into<String>) -> Problem {
        Problem(StatusCode::BAD_REQUEST, msg.into())
    }

    fn unavailable(e: impl std::fmt::Display) -> Problem {
        Problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// Lets a request through only with `Authorization: Bearer TOKEN` when a token is set (also
/// the job service's layer, [`crate::serve::api`]).
pub(crate) async fn bearer(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    let given = bearer_token(request.headers());
    match token {
        Some(t) if !given.is_some_and(|g| same(g.as_bytes(), t.as_bytes())) => Problem(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer TOKEN (admin.token, or serve --token)".into(),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme's name in any case, as
/// HTTP's are; RFC 9110 11.1).
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compares two secrets in time that depends on their length only.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Runs a question that may wait for an operator on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Problem::unavailable(e)))
}

async fn index(State(state): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({
        "job": state.job.file.name,
        "endpoints": ["/state", "/state/content", "/state/frequency", "/state/operators",
            "/state/park", "/state/accounts", "/state/source", "/metrics"],
    }))
}

async fn everything(State(state): State<Arc<AdminState>>) -> Result<Json<Value>, Problem> {
    blocking(move || {
        Ok(Json(json!({
            "job": state.job.file.name,
            "uptime_secs": state.started.elapsed().as_secs_f64(),
            "operators": operators(&state)?,
            "park": park(&state),
            "accounts": accounts(&state),
            "source": source(&state),
            "tracking": tracking(&state),
        })))
    })
    .await
}

async fn operators_route(State(state): State<Arc<AdminState>>) -> Result<Json<Value>, Problem> {
    blocking(move || operators(&state).map(Json)).await
}

/// The query of `/state/content` and `/state/frequency`: a key given as hex, or the parts it
/// is made of; `var.NAME=VALUE` for each placeholder of a content key.
#[derive(Debug, Default, Deserialize)]
pub struct KeyQuery {
    /// The key itself (32 hex digits).
    pub key: Option<String>,
    /// A template id.
    pub template: Option<String>,
    /// A receiver (normalised as the gate does).
    pub receiver: Option<String>,
    /// A channel (frequency keys).
    pub channel: Option<String>,
    /// An event time (RFC 3339 or ms; `now` or absent: the job's clock).
    pub at: Option<String>,
    /// Everything else; `var.NAME` entries are placeholder values.
    #[serde(flatten)]
    pub rest: BTreeMap<String, String>,
}

async fn content_route(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Value>, Problem> {
    blocking(move || content(&state, &q).map(Json)).await
}

async fn frequency_route(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Value>, Problem> {
    blocking(move || frequency(&state, &q).map(Json)).await
}

fn at(state: &AdminState, q: &KeyQuery) -> Result<i64, Problem> {
    match q.at.as_deref() {
        None | Some("now") => Ok(state.clock.now_ms()),
        Some(t) => parse_at(t),
    }
}

/// An `at` given as ms or RFC 3339, within [`AT_MIN`]..=[`AT_MAX`].
fn parse_at(t: &str) -> Result<i64, Problem> {
    let ms = t
        .parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp_millis())
        })
        .ok_or_else(|| {
            Problem::bad(format!(
                "at={t}: write RFC 3339 (2025-11-22T10:00:00+08:00) or ms since the epoch"
            ))
        })?;
    // Operators do arithmetic on it: a time no record can have is refused here.
    if (AT_MIN..=AT_MAX).contains(&ms) {
        Ok(ms)
    } else {
        Err(Problem::bad(format!(
            "at={t}: out of range; give a time between 2000-01-01 and 9999-12-31"
        )))
    }
}

/// The range of `at`: 2000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z, in ms.
const AT_MIN: i64 = 946_684_800_000;
const AT_MAX: i64 = 253_402_300_799_999;

fn template_of(
    state: &AdminState,
    q: &KeyQuery,
) -> Result<Option<Arc<tidings_model::Template>>, Problem> {
    let Some(id) = q.template.as_deref() else {
        return Ok(None);
    };
    let id: i64 = id
        .parse()
        .map_err(|_| Problem::bad(format!("template={id}: not a template id")))?;
    state
        .job
        .templates
        .get(id)
        .cloned()
        .map(Some)
        .ok_or_else(|| {
            Problem(
                StatusCode::NOT_FOUND,
                format!("template {id} is not in this job"),
            )
        })
}

fn hex_key(k: &str) -> Result<u128, Problem> {
    u128::from_str_radix(k, 16).map_err(|_| Problem::bad(format!("key={k}: 32 hex digits")))
}

fn content(state: &AdminState, q: &KeyQuery) -> Result<Value, Problem> {
    let at = at(state, q)?;
    let key = match q.key.as_deref() {
        Some(k) => hex_key(k)?,
        None => {
            let template = template_of(state, q)?.ok_or_else(|| {
                Problem::bad("give template=ID&receiver=R (and var.NAME=VALUE for each placeholder), or key=HEX")
            })?;
            let receiver = q
                .receiver
                .as_deref()
                .ok_or_else(|| Problem::bad("give receiver=R"))?;
            let mut vars = Variables::new();
            for (k, v) in &q.rest {
                if let Some(name) = k.strip_prefix("var.") {
                    vars.insert(name, Value::String(v.clone()));
                }
            }
            // As the validator renders it: what the content key and the sinks see.
            let rendered = template
                .render(&vars)
                .map_err(|e| Problem::bad(e.to_string()))?;
            // Keys hold the receiver as the gate passes it on: normalised.
            let receiver = state
                .job
                .receivers
                .normalise(template.id_type, receiver)
                .unwrap_or(receiver.into());
            ids::content_key(template.id, &receiver, &rendered)
        }
    };
    state
        .live
        .key("ContentDedup", key, Some(at), ANSWER_TIMEOUT)
        .map_err(Problem::unavailable)
}

fn frequency(state: &AdminState, q: &KeyQuery) -> Result<Value, Problem> {
    let at = at(state, q)?;
    let key = match q.key.as_deref() {
        Some(k) => hex_key(k)?,
        None => {
            let receiver = q
                .receiver
                .as_deref()
                .ok_or_else(|| Problem::bad("give receiver=R"))?;
            let template = template_of(state, q)?;
            let channel = match (q.channel.as_deref(), &template) {
                (Some(c), _) => c.to_string(),
                (None, Some(t)) => t.channel.name().to_string(),
                (None, None) => return Err(Problem::bad("give channel=NAME or template=ID")),
            };
            // Keys hold the receiver as the gate passes it on: normalised (SMS: a phone).
            let id_type = match &template {
                Some(t) => Some(t.id_type),
                None if channel == "sms" => Some(tidings_model::IdType::Phone),
                None => None,
            };
            let receiver = id_type
                .and_then(|id| state.job.receivers.normalise(id, receiver).ok())
                .unwrap_or(receiver.into());
            ids::frequency_key(&receiver, &channel)
        }
    };
    state
        .live
        .key("FrequencyDedup", key, Some(at), ANSWER_TIMEOUT)
        .map_err(Problem::unavailable)
}

fn operators(state: &AdminState) -> Result<Value, Problem> {
    let mut out = serde_json::Map::new();
    for name in state.live.operators() {
        let s = state
            .live
            .summary(name, ANSWER_TIMEOUT)
            .map_err(Problem::unavailable)?;
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["oldest_time"] = s.oldest.map(iso).into();
        v["watermark_time"] = s.watermark.map(iso).into();
        // A cluster's process 0 answers for its own workers only.
        let (here, peers) = state.live.workers(name);
        if here.len() < peers {
            v["workers"] = here.len().into();
            v["of_workers"] = peers.into();
        }
        out.insert(name.to_string(), v);
    }
    Ok(Value::Object(out))
}

fn park(state: &AdminState) -> Value {
    let g = state.live.park();
    json!({
        "parked": g.count(),
        "next_release": g.next_release().map(iso),
        "next_release_ms": g.next_release(),
    })
}

fn accounts(state: &AdminState) -> Value {
    let a = &state.send.accounts;
    Value::Array(
        (0..a.len())
            .map(|i| {
                let mut v = a.newest(i).live();
                let (buckets, count, _) = a.get(i).stats.latency.snapshot();
                v["latency_ms"] = json!({
                    "calls": count,
                    "p50": quantile_ms(&buckets, count, 0.5),
                    "p99": quantile_ms(&buckets, count, 0.99),
                });
                v["queue"] = match state.send.queues.topic(i) {
                    Some(topic) => json!({"kind": "kafka", "topic": topic,
                        "read_not_sent": state.send.queues.queued(i)}),
                    None => json!({"kind": "memory"}),
                };
                v
            })
            .collect(),
    )
}

fn source(state: &AdminState) -> Value {
    let parts: Vec<Value> = state
        .live
        .source()
        .partitions()
        .into_iter()
        .map(|(p, next, high, lag)| json!({"partition": p, "next_offset": next, "high_watermark": high, "lag": lag}))
        .collect();
    let now = state.clock.now_ms();
    let clocks: Vec<Value> = state
        .live
        .source()
        .watermarks()
        .into_iter()
        .map(|(p, w, late, unreadable)| {
            json!({"partition": p, "watermark": w.map(iso),
                "lag_secs": w.map(|w| now.saturating_sub(w).max(0) as f64 / 1000.0),
                "late_records": late, "unreadable_offsets": unreadable})
        })
        .collect();
    let c = state.live.checkpoint();
    let (handed, read) = state.send.queues.handed_and_read();
    // A cluster's line is agreed after the start: the run records it once known.
    let event = state.live.source().event_time().unwrap_or(state.job.event);
    let backlog = event.active_backlog();
    json!({
        "kind": if state.job.kafka.is_some() { "kafka" } else { "file" },
        "topic": state.job.kafka.as_ref().map(|k| k.topic.clone()),
        "partitions": parts,
        "status": state.live.source().status(),
        "event_time": {
            "low_watermark": state.live.source().low_watermark().map(iso),
            "late_records": state.live.source().late(),
            "max_out_of_order_ms": event.max_out_of_order_ms,
            "epoch_ms": event.epoch_ms,
            // Earlier event times are a backlog's, in epochs of `backlog_epoch_ms`.
            "backlog_before": backlog.map(|b| iso(b.before)),
            "backlog_epoch_ms": backlog.map(|b| b.epoch_ms),
            "partitions": clocks,
        },
        "lag": state.live.source().lag(),
        "checkpoint": {
            "completed": c.completed(),
            "last": c.last().map(iso),
            "age_secs": c.last().map(|t| (now_ms() - t) as f64 / 1000.0),
        },
        "account_topics": {"handed": handed, "read": read},
    })
}

/// The upper bound (ms) of the latency bucket holding quantile `q` of `count` calls; `None`
/// before any call or past the last bucket.
fn quantile_ms(cumulative: &[u64], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = (count as f64 * q).ceil() as u64;
    cumulative
        .iter()
        .zip(LATENCY_BUCKETS)
        .find(|(n, _)| **n >= rank)
        .map(|(_, le)| le * 1000.0)
}

fn tracking(state: &AdminState) -> Value {
    let counts = state.counts.lock().unwrap_or_else(|p| p.into_inner());
    let states: serde_json::Map<String, Value> = counts
        .states
        .iter()
        .map(|(s, n)| (s.name().to_string(), json!(n)))
        .collect();
    let failing = counts.tracking_failing(now_ms()).map(|(for_ms, error)| {
        json!({"for_ms": for_ms, "error": error, "workers": counts.tracking_failing_workers})
    });
    json!({"rows": states, "dead_letters": counts.dead_letters,
        "write_failures": counts.tracking_write_failures, "failing": failing})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `at=-9223372036854775808` (which made an operator's subtraction overflow and killed a
    /// worker) and other times out of range are refused with 400 before any operator sees them.
    #[test]
    fn a_bearer_token_is_read_whatever_the_schemes_case() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer_token(&h).map(str::to_string)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("BEARER  abc").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearerabc"), None);
        assert_eq!(bearer_token(&axum::http::HeaderMap::new()), None);
    }

    #[test]
    fn at_out_of_range_is_a_bad_request() {
        for v in [
            "-9223372036854775808",
            "9223372036854775807",
            "0",
            "1999-12-31T23:59:59Z",
        ] {
            let Problem(code, msg) = parse_at(v).unwrap_err();
            assert!(
                code == StatusCode::BAD_REQUEST && msg.contains("out of range"),
                "{v}: {msg}"
            );
        }
        assert_eq!(parse_at("1763784000000"), Ok(1_763_784_000_000));
        assert_eq!(parse_at("2025-11-22T12:00:00+08:00"), Ok(1_763_784_000_000));
        assert_eq!(parse_at("soon").unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_key_query_takes_placeholders_by_name() {
        let q: KeyQuery =
            serde_urlencoded_of("template=7&receiver=13800138000&var.code=12%2034&at=now");
        assert_eq!(q.template.as_deref(), Some("7"));
        assert_eq!(q.rest.get("var.code").map(String::as_str), Some("12 34"));
        assert!(same(b"token", b"token") && !same(b"token", b"tokem") && !same(b"t", b"tt"));
    }

    #[test]
    fn latency_quantiles_are_bucket_bounds() {
        // 10 calls: 5 within 2 ms, 9 within 10 ms, all within 25 ms.
        let mut cumulative = vec![0u64; LATENCY_BUCKETS.len()];
        for (n, le) in cumulative.iter_mut().zip(LATENCY_BUCKETS) {
            *n = if le >= 0.025 {
                10
            } else if le >= 0.01 {
                9
            } else if le >= 0.002 {
                5
            } else {
                0
            };
        }
        assert_eq!(quantile_ms(&cumulative, 10, 0.5), Some(2.0));
        assert_eq!(quantile_ms(&cumulative, 10, 0.9), Some(10.0));
        assert_eq!(quantile_ms(&cumulative, 10, 0.99), Some(25.0));
        assert_eq!(quantile_ms(&cumulative, 0, 0.5), None);
    }

    fn serde_urlencoded_of(q: &str) -> KeyQuery {
        let uri: axum::http::Uri = format!("/x?{q}").parse().unwrap();
        Query::<KeyQuery>::try_from_uri(&uri).unwrap().0
    }
}
