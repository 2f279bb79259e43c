//! The running job's admin API: live windowed state, sends, source lag, and Prometheus
//! `/metrics`, on a small HTTP server of its own (two threads, never a timely worker).
//!
//! | path | answers |
//! |---|---|
//! | `/state` | everything below in one object |
//! | `/state/content?template=ID&receiver=R&var.NAME=V&at=T` | the content dedup window of a key |
//! | `/state/frequency?receiver=R&channel=C` (or `template=ID`) `&at=T` | the frequency counters of a key |
//! | `/state/operators` | keys, entries, bytes, oldest entry per keyed operator |
//! | `/state/park` | parked night_delay deliveries and the next release |
//! | `/state/accounts` | rate limiters (tokens, waiting) and sends (in flight, retrying) |
//! | `/state/source` | Kafka positions, high watermarks, lag; last checkpoint |
//! | `/metrics` | Prometheus text format |
//!
//! Key questions are answered by the operator that owns the key, from its state
//! ([`tidings_operators::live`]); `at` (RFC 3339 or ms; default now) also asks whether a
//! delivery of that event time would pass. When bound to a non-loopback address every request
//! must carry `Authorization: Bearer TOKEN`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidings_model::ids;
use tidings_model::render::Variables;
use tidings_operators::Clock;
use tidings_operators::live::{Live, iso};
use tidings_operators::validate::rendered_content;
use tidings_sinks::util::httpd;
use tidings_sinks::util::stats::LATENCY_BUCKETS;

use crate::job::{AdminSettings, Job};
use crate::send::SendContext;
use crate::track::Counts;

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
    server: httpd::Server,
    /// The bound address (the real port when the job asked for port 0).
    pub addr: SocketAddr,
}

impl AdminServer {
    /// Binds and serves until [`AdminServer::stop`]. The bound address is also written to
    /// `state_dir/admin.addr`, where `tidings state` and `tidings top` find it.
    pub fn start(settings: &AdminSettings, state: AdminState) -> anyhow::Result<AdminServer> {
        let state = Arc::new(state);
        let token: Option<Arc<str>> = settings.token.as_deref().map(Into::into);
        let server = {
            let state = state.clone();
            httpd::Server::start(
                settings.bind,
                Arc::new(move |request| serve(&state, token.as_deref(), request)),
            )
            .map_err(|e| anyhow::anyhow!("admin.bind {}: {e}", settings.bind))?
        };
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

fn serve(state: &AdminState, token: Option<&str>, request: httpd::Request) -> httpd::Response {
    let authorized =
        token.is_none_or(|t| request.header("Authorization").strip_prefix("Bearer ") == Some(t));
    let url = request.url.clone();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let params = parse_query(query);
    let (status, content_type, body) = if !authorized {
        (
            401,
            "application/json",
            json!({"error": "missing or wrong token: send Authorization: Bearer TOKEN (admin.token)"})
                .to_string(),
        )
    } else if request.method != "GET" {
        (
            405,
            "application/json",
            json!({"error": "only GET"}).to_string(),
        )
    } else if path == "/metrics" {
        (200, "text/plain; version=0.0.4", metrics(state))
    } else {
        match route(state, path, &params) {
            Ok(v) => (200, "application/json", v.to_string()),
            Err((code, msg)) => (code, "application/json", json!({"error": msg}).to_string()),
        }
    };
    httpd::Response {
        status,
        content_type,
        body,
    }
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space) of a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a query component (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

type Routed = Result<Value, (u16, String)>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn bad(msg: impl Into<String>) -> (u16, String) {
    (400, msg.into())
}

fn route(state: &AdminState, path: &str, params: &[(String, String)]) -> Routed {
    match path.trim_end_matches('/') {
        "" => Ok(json!({
            "job": state.job.file.name,
            "endpoints": ["/state", "/state/content", "/state/frequency", "/state/operators",
                "/state/park", "/state/accounts", "/state/source", "/metrics"],
        })),
        "/state" => Ok(json!({
            "job": state.job.file.name,
            "uptime_secs": state.started.elapsed().as_secs_f64(),
            "operators": operators(state)?,
            "park": park(state),
            "accounts": accounts(state),
            "source": source(state),
            "tracking": tracking(state),
        })),
        "/state/operators" => operators(state),
        "/state/park" => Ok(park(state)),
        "/state/accounts" => Ok(accounts(state)),
        "/state/source" => Ok(source(state)),
        "/state/content" => content(state, params),
        "/state/frequency" => frequency(state, params),
        other => Err((404, format!("no such path {other}; GET / lists them"))),
    }
}

fn at(state: &AdminState, params: &[(String, String)]) -> Result<i64, (u16, String)> {
    match param(params, "at") {
        None | Some("now") => Ok(state.clock.now_ms()),
        Some(t) => parse_at(t),
    }
}

/// An `at` given as ms or RFC 3339, within [`AT_MIN`]..=[`AT_MAX`].
fn parse_at(t: &str) -> Result<i64, (u16, String)> {
    let ms = t
        .parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp_millis())
        })
        .ok_or_else(|| {
            bad(format!(
                "at={t}: write RFC 3339 (2025-11-22T10:00:00+08:00) or ms since the epoch"
            ))
        })?;
    // Operators do arithmetic on it: a time no record can have is refused here.
    if (AT_MIN..=AT_MAX).contains(&ms) {
        Ok(ms)
    } else {
        Err(bad(format!(
            "at={t}: out of range; give a time between 2000-01-01 and 9999-12-31"
        )))
    }
}

/// The range of `at`: 2000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z, in ms.
const AT_MIN: i64 = 946_684_800_000;
const AT_MAX: i64 = 253_402_300_799_999;

fn template_of(
    state: &AdminState,
    params: &[(String, String)],
) -> Result<Option<Arc<tidings_model::Template>>, (u16, String)> {
    let Some(id) = param(params, "template") else {
        return Ok(None);
    };
    let id: i64 = id
        .parse()
        .map_err(|_| bad(format!("template={id}: not a template id")))?;
    state
        .job
        .templates
        .get(id)
        .cloned()
        .map(Some)
        .ok_or_else(|| (404, format!("template {id} is not in this job")))
}

fn hex_key(k: &str) -> Result<u128, (u16, String)> {
    u128::from_str_radix(k, 16).map_err(|_| bad(format!("key={k}: 32 hex digits")))
}

fn content(state: &AdminState, params: &[(String, String)]) -> Routed {
    let at = at(state, params)?;
    let key = match param(params, "key") {
        Some(k) => hex_key(k)?,
        None => {
            let template = template_of(state, params)?
                .ok_or_else(|| bad("give template=ID&receiver=R (and var.NAME=VALUE for each placeholder), or key=HEX"))?;
            let receiver = param(params, "receiver").ok_or_else(|| bad("give receiver=R"))?;
            let mut vars = Variables::new();
            for (k, v) in params {
                if let Some(name) = k.strip_prefix("var.") {
                    vars.insert(name.to_string(), Value::String(v.clone()));
                }
            }
            let rendered = rendered_content(&template, &vars).map_err(|e| bad(e.to_string()))?;
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
        .map_err(|e| (503, e.to_string()))
}

fn frequency(state: &AdminState, params: &[(String, String)]) -> Routed {
    let at = at(state, params)?;
    let key = match param(params, "key") {
        Some(k) => hex_key(k)?,
        None => {
            let receiver = param(params, "receiver").ok_or_else(|| bad("give receiver=R"))?;
            let template = template_of(state, params)?;
            let channel = match (param(params, "channel"), &template) {
                (Some(c), _) => c.to_string(),
                (None, Some(t)) => t.channel.name().to_string(),
                (None, None) => return Err(bad("give channel=NAME or template=ID")),
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
        .map_err(|e| (503, e.to_string()))
}

fn operators(state: &AdminState) -> Routed {
    let mut out = serde_json::Map::new();
    for name in state.live.operators() {
        let s = state
            .live
            .summary(name, ANSWER_TIMEOUT)
            .map_err(|e| (503, e.to_string()))?;
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["oldest_time"] = s.oldest.map(iso).into();
        v["watermark_time"] = s.watermark.map(iso).into();
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
                let mut v = a.get(i).live();
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
        .map(|(p, w, late)| {
            json!({"partition": p, "watermark": w.map(iso),
                "lag_secs": w.map(|w| now.saturating_sub(w).max(0) as f64 / 1000.0),
                "late_records": late})
        })
        .collect();
    let c = state.live.checkpoint();
    let (handed, read) = state.send.queues.handed_and_read();
    json!({
        "kind": if state.job.kafka.is_some() { "kafka" } else { "file" },
        "topic": state.job.kafka.as_ref().map(|k| k.topic.clone()),
        "partitions": parts,
        "status": state.live.source().status(),
        "event_time": {
            "low_watermark": state.live.source().low_watermark().map(iso),
            "late_records": state.live.source().late(),
            "max_out_of_order_ms": state.job.event.max_out_of_order_ms,
            "epoch_ms": state.job.event.epoch_ms,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders `/metrics` in the Prometheus text format (version 0.0.4).
pub fn metrics(state: &AdminState) -> String {
    let mut m = String::new();
    let family = |m: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let job = label(&state.job.file.name);

    family(
        &mut m,
        "tidings_events_total",
        "counter",
        "Tracking rows made durable, by state, channel and template.",
    );
    {
        let counts = state.counts.lock().unwrap_or_else(|p| p.into_inner());
        for ((template, st), n) in &counts.per_template {
            let channel = state
                .job
                .templates
                .get(*template)
                .map(|t| t.channel.name())
                .unwrap_or("unknown");
            let _ = writeln!(
                m,
                "tidings_events_total{{job=\"{job}\",state=\"{}\",state_code=\"{}\",channel=\"{channel}\",template=\"{template}\"}} {n}",
                st.name(),
                st.code()
            );
        }
        family(
            &mut m,
            "tidings_dead_letters_total",
            "counter",
            "Records and messages rejected as dead letters.",
        );
        let _ = writeln!(
            m,
            "tidings_dead_letters_total{{job=\"{job}\"}} {}",
            counts.dead_letters
        );
        family(
            &mut m,
            "tidings_tracking_write_failures_total",
            "counter",
            "Failed attempts to write tracking rows (each retried; new sends wait meanwhile).",
        );
        let _ = writeln!(
            m,
            "tidings_tracking_write_failures_total{{job=\"{job}\"}} {}",
            counts.tracking_write_failures
        );
        family(
            &mut m,
            "tidings_tracking_failing",
            "gauge",
            "Workers whose tracking writes are failing now (sends are held while above 0).",
        );
        let _ = writeln!(
            m,
            "tidings_tracking_failing{{job=\"{job}\"}} {}",
            counts.tracking_failing_workers
        );
    }

    let accounts = &state.send.accounts;
    family(
        &mut m,
        "tidings_send_latency_seconds",
        "histogram",
        "Provider call latency per attempt, by account and provider.",
    );
    for i in 0..accounts.len() {
        let a = accounts.get(i);
        let labels = format!(
            "job=\"{job}\",account=\"{}\",provider=\"{}\",channel=\"{}\"",
            label(&a.name),
            a.provider(),
            a.channel.name()
        );
        let (buckets, count, sum) = a.stats.latency.snapshot();
        for (le, n) in LATENCY_BUCKETS.iter().zip(&buckets) {
            let _ = writeln!(
                m,
                "tidings_send_latency_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            m,
            "tidings_send_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\ntidings_send_latency_seconds_sum{{{labels}}} {sum}\ntidings_send_latency_seconds_count{{{labels}}} {count}"
        );
    }
    let gauges: [(
        &str,
        &str,
        &str,
        fn(&tidings_sinks::util::stats::StatsSnapshot) -> u64,
    ); 6] = [
        (
            "tidings_sends_waiting",
            "gauge",
            "Sends waiting for rate-limit permits.",
            |s| s.waiting,
        ),
        (
            "tidings_sends_in_flight",
            "gauge",
            "Sends holding a concurrency slot.",
            |s| s.in_flight,
        ),
        (
            "tidings_sends_retrying",
            "gauge",
            "Sends pausing before another try.",
            |s| s.retrying,
        ),
        (
            "tidings_send_retries_total",
            "counter",
            "Retries made.",
            |s| s.retries,
        ),
        (
            "tidings_receivers_sent_total",
            "counter",
            "Receivers a provider accepted.",
            |s| s.sent,
        ),
        (
            "tidings_receivers_failed_total",
            "counter",
            "Receivers that ended in SEND_FAIL.",
            |s| s.failed,
        ),
    ];
    let snaps: Vec<_> = (0..accounts.len())
        .map(|i| (accounts.get(i), accounts.get(i).stats.snapshot()))
        .collect();
    for (name, kind, help, get) in gauges {
        family(&mut m, name, kind, help);
        for (a, s) in &snaps {
            let _ = writeln!(
                m,
                "{name}{{job=\"{job}\",account=\"{}\"}} {}",
                label(&a.name),
                get(s)
            );
        }
    }
    family(
        &mut m,
        "tidings_rate_limit_tokens",
        "gauge",
        "Rate-limit permits available now, by account.",
    );
    for (a, _) in &snaps {
        if let Some((per, burst)) = a.rate() {
            let _ = writeln!(
                m,
                "tidings_rate_limit_tokens{{job=\"{job}\",account=\"{}\"}} {:.1}",
                label(&a.name),
                a.stats.tokens(per, burst)
            );
        }
    }
    family(
        &mut m,
        "tidings_account_queue_read_not_sent",
        "gauge",
        "Deliveries read from an account topic and not yet sent.",
    );
    for (i, (a, _)) in snaps.iter().enumerate() {
        if state.send.queues.topic(i).is_some() {
            let _ = writeln!(
                m,
                "tidings_account_queue_read_not_sent{{job=\"{job}\",account=\"{}\"}} {}",
                label(&a.name),
                state.send.queues.queued(i)
            );
        }
    }

    let topic = state
        .job
        .kafka
        .as_ref()
        .map(|k| label(&k.topic))
        .unwrap_or_default();
    family(
        &mut m,
        "tidings_consumer_lag",
        "gauge",
        "Records behind the partition's high watermark.",
    );
    let parts = state.live.source().partitions();
    for (p, _, _, lag) in &parts {
        if let Some(lag) = lag {
            let _ = writeln!(
                m,
                "tidings_consumer_lag{{job=\"{job}\",topic=\"{topic}\",partition=\"{p}\"}} {lag}"
            );
        }
    }
    family(
        &mut m,
        "tidings_source_watermark_seconds",
        "gauge",
        "The event-time watermark of the partition (Unix seconds): records before it are late.",
    );
    let clocks = state.live.source().watermarks();
    for (p, w, _) in &clocks {
        if let Some(w) = w {
            let _ = writeln!(
                m,
                "tidings_source_watermark_seconds{{job=\"{job}\",topic=\"{topic}\",partition=\"{p}\"}} {}",
                *w as f64 / 1000.0
            );
        }
    }
    family(
        &mut m,
        "tidings_source_watermark_lag_seconds",
        "gauge",
        "How far the partition's watermark is behind the wall clock.",
    );
    let now = state.clock.now_ms();
    for (p, w, _) in &clocks {
        if let Some(w) = w {
            let _ = writeln!(
                m,
                "tidings_source_watermark_lag_seconds{{job=\"{job}\",topic=\"{topic}\",partition=\"{p}\"}} {}",
                now.saturating_sub(*w).max(0) as f64 / 1000.0
            );
        }
    }
    family(
        &mut m,
        "tidings_source_late_records_total",
        "counter",
        "Records that came later than source.max_out_of_order_ms behind their partition's watermark (judged at the watermark).",
    );
    for (p, _, late) in &clocks {
        let _ = writeln!(
            m,
            "tidings_source_late_records_total{{job=\"{job}\",topic=\"{topic}\",partition=\"{p}\"}} {late}"
        );
    }
    family(
        &mut m,
        "tidings_consumer_next_offset",
        "gauge",
        "The next offset the source reads, by partition.",
    );
    for (p, next, _, _) in &parts {
        let _ = writeln!(
            m,
            "tidings_consumer_next_offset{{job=\"{job}\",topic=\"{topic}\",partition=\"{p}\"}} {next}"
        );
    }
    let c = state.live.checkpoint();
    family(
        &mut m,
        "tidings_checkpoints_total",
        "counter",
        "Checkpoints completed by this run.",
    );
    let _ = writeln!(
        m,
        "tidings_checkpoints_total{{job=\"{job}\"}} {}",
        c.completed()
    );
    if let Some(last) = c.last() {
        family(
            &mut m,
            "tidings_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last completed checkpoint.",
        );
        let _ = writeln!(
            m,
            "tidings_checkpoint_age_seconds{{job=\"{job}\"}} {:.3}",
            (now_ms() - last) as f64 / 1000.0
        );
    }
    let park = state.live.park();
    family(
        &mut m,
        "tidings_parked",
        "gauge",
        "night_delay deliveries parked.",
    );
    let _ = writeln!(m, "tidings_parked{{job=\"{job}\"}} {}", park.count());
    family(
        &mut m,
        "tidings_dedup_keys",
        "gauge",
        "Keys held by a dedup operator.",
    );
    let summaries: Vec<_> = state
        .live
        .operators()
        .into_iter()
        .filter_map(|n| Some((n, state.live.summary(n, ANSWER_TIMEOUT).ok()?)))
        .collect();
    for (n, s) in &summaries {
        let _ = writeln!(
            m,
            "tidings_dedup_keys{{job=\"{job}\",operator=\"{n}\"}} {}",
            s.keys
        );
    }
    family(
        &mut m,
        "tidings_dedup_bytes",
        "gauge",
        "Estimated bytes held by a dedup operator.",
    );
    for (n, s) in &summaries {
        let _ = writeln!(
            m,
            "tidings_dedup_bytes{{job=\"{job}\",operator=\"{n}\"}} {}",
            s.bytes
        );
    }
    family(
        &mut m,
        "tidings_uptime_seconds",
        "gauge",
        "Seconds since the run started.",
    );
    let _ = writeln!(
        m,
        "tidings_uptime_seconds{{job=\"{job}\"}} {:.3}",
        state.started.elapsed().as_secs_f64()
    );
    m
}

/// The address of a running job's admin API: `admin.addr` in its state directory (written at
/// start), else the job's `admin.bind`.
pub fn address_of(job: &Job) -> Option<String> {
    std::fs::read_to_string(job.state_dir.join("admin.addr"))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| job.admin.as_ref().map(|a| a.bind.to_string()))
}

/// A blocking `GET`: the status and the body.
pub fn get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `at=-9223372036854775808` (which made an operator's subtraction overflow and killed a
    /// worker) and other times out of range are refused with 400 before any operator sees them.
    #[test]
    fn at_out_of_range_is_a_bad_request() {
        for v in [
            "-9223372036854775808",
            "9223372036854775807",
            "0",
            "1999-12-31T23:59:59Z",
        ] {
            let (code, msg) = parse_at(v).unwrap_err();
            assert!(code == 400 && msg.contains("out of range"), "{v}: {msg}");
        }
        assert_eq!(parse_at("1763784000000"), Ok(1_763_784_000_000));
        assert_eq!(parse_at("2025-11-22T12:00:00+08:00"), Ok(1_763_784_000_000));
        assert_eq!(parse_at("soon").unwrap_err().0, 400);
    }

    #[test]
    fn query_components_round_trip() {
        for s in ["a b", "x=y&z", "验证码", "100%", "{$code}"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
