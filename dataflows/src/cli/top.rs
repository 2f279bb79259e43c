//! `tidings top`: per-stage totals and rates and the backlogs of a running job, from its
//! `/metrics`, refreshed every interval (like `vector top`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tidings_dataflows::admin;

use super::{AdminTarget, Failure};

#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
}

pub fn run(args: TopArgs) -> Result<(), Failure> {
    let (addr, token) = args.target.resolve()?;
    let every = Duration::from_secs_f64(args.interval.max(0.1));
    watch(&addr, token.as_deref(), every, args.frames).map_err(Failure::Failed)
}

/// One sample: metric name → (labels → value).
type Sample = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// Parses the Prometheus text format as the job writes it.
pub fn parse(text: &str) -> Sample {
    let mut out = Sample::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                Some((k.to_string(), v.trim_end_matches('"').to_string()))
            })
            .collect();
        out.entry(name.to_string())
            .or_default()
            .push((labels, value));
    }
    out
}

fn sum(s: &Sample, name: &str, filter: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
    // An empty float sum is -0.0, which would print as "-0".
    s.get(name)
        .map(|v| {
            v.iter()
                .filter(|(l, _)| filter(l))
                .map(|(_, x)| x)
                .sum::<f64>()
        })
        .unwrap_or(0.0)
        + 0.0
}

fn by_state(s: &Sample, states: &[&str]) -> f64 {
    sum(s, "tidings_events_total", |l| {
        l.get("state")
            .is_some_and(|st| states.contains(&st.as_str()))
    })
}

const STAGES: &[(&str, &[&str])] = &[
    ("received", &["RECEIVE"]),
    ("invalid receiver", &["RECEIVER_INVALID"]),
    ("discarded", &["DISCARD"]),
    ("not whitelisted", &["WHITE_LIST"]),
    ("night shield (dropped)", &["NIGHT_SHIELD"]),
    ("night delay (parked)", &["NIGHT_SHIELD_NEXT_SEND"]),
    ("content dedup", &["CONTENT_DEDUPLICATION"]),
    ("frequency dedup", &["RULE_DEDUPLICATION"]),
    ("sent", &["SEND_SUCCESS"]),
    ("send failed", &["SEND_FAIL"]),
];

/// Renders one frame from two samples `dt` apart.
pub fn frame(addr: &str, prev: &Sample, cur: &Sample, dt: f64) -> String {
    let mut f = String::new();
    let uptime = sum(cur, "tidings_uptime_seconds", |_| true);
    let job = cur
        .get("tidings_uptime_seconds")
        .and_then(|v| v.first())
        .and_then(|(l, _)| l.get("job").cloned())
        .unwrap_or_default();
    f.push_str(&format!(
        "tidings top — job {job} — http://{addr} — up {uptime:.0}s\n\n"
    ));
    f.push_str(&format!(
        "{:<26} {:>12} {:>10}\n",
        "STAGE", "TOTAL", "PER SEC"
    ));
    let row = |f: &mut String, name: &str, now: f64, before: f64| {
        let rate = if dt > 0.0 { (now - before) / dt } else { 0.0 };
        f.push_str(&format!("{name:<26} {now:>12.0} {rate:>10.1}\n"));
    };
    for (name, states) in STAGES {
        row(&mut f, name, by_state(cur, states), by_state(prev, states));
    }
    let dead = |s: &Sample| sum(s, "tidings_dead_letters_total", |_| true);
    row(&mut f, "dead letters", dead(cur), dead(prev));
    f.push_str(&format!("\n{:<26} {:>12}\n", "BACKLOG", "NOW"));
    let mut gauge = |name: &str, v: f64| f.push_str(&format!("{name:<26} {v:>12.0}\n"));
    gauge("consumer lag", sum(cur, "tidings_consumer_lag", |_| true));
    gauge("parked (night delay)", sum(cur, "tidings_parked", |_| true));
    gauge(
        "waiting for rate limit",
        sum(cur, "tidings_sends_waiting", |_| true),
    );
    gauge(
        "sends in flight",
        sum(cur, "tidings_sends_in_flight", |_| true),
    );
    gauge(
        "sends retrying",
        sum(cur, "tidings_sends_retrying", |_| true),
    );
    gauge(
        "account queues (read)",
        sum(cur, "tidings_account_queue_read_not_sent", |_| true),
    );
    gauge("dedup keys", sum(cur, "tidings_dedup_keys", |_| true));
    if let Some(age) = cur
        .get("tidings_checkpoint_age_seconds")
        .and_then(|v| v.first())
    {
        f.push_str(&format!("{:<26} {:>11.1}s\n", "checkpoint age", age.1));
    }
    let mut accounts: Vec<String> = cur
        .get("tidings_sends_in_flight")
        .map(|v| {
            v.iter()
                .filter_map(|(l, _)| l.get("account").cloned())
                .collect()
        })
        .unwrap_or_default();
    accounts.sort();
    if !accounts.is_empty() {
        f.push_str(&format!(
            "\n{:<20} {:>10} {:>8} {:>9} {:>8} {:>8} {:>9}\n",
            "ACCOUNT", "SENT/s", "FAILED", "IN FLIGHT", "WAITING", "TOKENS", "p50 ms"
        ));
    }
    for a in accounts {
        let of = |s: &Sample, n: &str| sum(s, n, |l| l.get("account") == Some(&a));
        let sent = of(cur, "tidings_receivers_sent_total");
        let rate = if dt > 0.0 {
            (sent - of(prev, "tidings_receivers_sent_total")) / dt
        } else {
            0.0
        };
        let tokens = cur
            .get("tidings_rate_limit_tokens")
            .and_then(|v| v.iter().find(|(l, _)| l.get("account") == Some(&a)))
            .map(|(_, v)| format!("{v:.0}"))
            .unwrap_or_else(|| "-".into());
        f.push_str(&format!(
            "{a:<20} {rate:>10.1} {:>8.0} {:>9.0} {:>8.0} {tokens:>8} {:>9}\n",
            of(cur, "tidings_receivers_failed_total"),
            of(cur, "tidings_sends_in_flight"),
            of(cur, "tidings_sends_waiting"),
            median_ms(cur, &a).map_or("-".into(), |m| format!("{m:.1}")),
        ));
    }
    f
}

/// The latency histogram's median for an account (upper bound of the bucket holding it).
fn median_ms(s: &Sample, account: &str) -> Option<f64> {
    let buckets = s.get("tidings_send_latency_seconds_bucket")?;
    let mut mine: Vec<(f64, f64)> = buckets
        .iter()
        .filter(|(l, _)| l.get("account").map(String::as_str) == Some(account))
        .filter_map(|(l, v)| Some((l.get("le")?.parse::<f64>().ok()?, *v)))
        .collect();
    mine.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = mine.last()?.1;
    if total == 0.0 {
        return None;
    }
    mine.iter()
        .find(|(_, n)| *n >= total / 2.0)
        .map(|(le, _)| le * 1000.0)
}

/// Shows frames until interrupted, or for `frames` frames.
fn watch(
    addr: &str,
    token: Option<&str>,
    every: Duration,
    frames: Option<u64>,
) -> Result<(), String> {
    let scrape = || -> Result<Sample, String> {
        match admin::get(addr, "/metrics", token) {
            Ok((200, body)) => Ok(parse(&body)),
            Ok((status, body)) => Err(format!("http://{addr}/metrics: {status} {body}")),
            Err(e) => Err(format!(
                "http://{addr}/metrics: {e} (is the job running with [admin]?)"
            )),
        }
    };
    let tty = std::io::stdout().is_terminal();
    let mut prev = scrape()?;
    let mut at = Instant::now();
    let mut shown = 0;
    loop {
        std::thread::sleep(every);
        let cur = scrape()?;
        let dt = at.elapsed().as_secs_f64();
        at = Instant::now();
        let text = frame(addr, &prev, &cur, dt);
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        prev = cur;
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}
