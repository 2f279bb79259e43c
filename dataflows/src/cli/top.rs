//! `tidings top`: per-stage totals and rates and the backlogs of a running job, from its
//! `/state` JSON, refreshed every interval (like `vector top`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
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
    if !(args.interval.is_finite() && (0.1..=3600.0).contains(&args.interval)) {
        return Err(Failure::Usage(format!(
            "--interval {}: give 0.1 to 3600 seconds",
            args.interval
        )));
    }
    if args.frames == Some(0) {
        return Err(Failure::Usage("--frames 0: give at least 1".into()));
    }
    let (addr, token) = args.target.resolve()?;
    let every = Duration::from_secs_f64(args.interval);
    watch(&addr, token.as_deref(), every, args.frames).map_err(Failure::Failed)
}

/// One scrape of `/state`.
type Sample = Value;

/// A number at a JSON pointer (0 when absent).
fn num(s: &Sample, pointer: &str) -> f64 {
    s.pointer(pointer).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Durable tracking rows of these states.
fn by_state(s: &Sample, states: &[&str]) -> f64 {
    states
        .iter()
        .map(|st| num(s, &format!("/tracking/rows/{st}")))
        .sum()
}

/// The sum of a number over every account.
fn over_accounts(s: &Sample, pointer: &str) -> f64 {
    accounts(s).iter().map(|a| num(a, pointer)).sum::<f64>() + 0.0
}

fn accounts(s: &Sample) -> &[Value] {
    s["accounts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
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

/// Renders one frame from two scrapes of `/state` taken `dt` seconds apart.
pub fn frame(addr: &str, prev: &Sample, cur: &Sample, dt: f64) -> String {
    let mut f = String::new();
    let uptime = num(cur, "/uptime_secs");
    let job = cur["job"].as_str().unwrap_or_default();
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
    let dead = |s: &Sample| num(s, "/tracking/dead_letters");
    row(&mut f, "dead letters", dead(cur), dead(prev));
    f.push_str(&format!("\n{:<26} {:>12}\n", "BACKLOG", "NOW"));
    let mut gauge = |name: &str, v: f64| f.push_str(&format!("{name:<26} {v:>12.0}\n"));
    gauge("consumer lag", num(cur, "/source/lag"));
    gauge("parked (night delay)", num(cur, "/park/parked"));
    gauge(
        "waiting for rate limit",
        over_accounts(cur, "/rate_limit/waiting"),
    );
    gauge("sends in flight", over_accounts(cur, "/in_flight"));
    gauge("sends retrying", over_accounts(cur, "/retrying"));
    gauge(
        "account queues (read)",
        over_accounts(cur, "/queue/read_not_sent"),
    );
    let keys: f64 = cur["operators"]
        .as_object()
        .map(|ops| ops.values().map(|o| num(o, "/keys")).sum())
        .unwrap_or(0.0);
    gauge("dedup keys", keys + 0.0);
    if let Some(age) = cur
        .pointer("/source/checkpoint/age_secs")
        .and_then(Value::as_f64)
    {
        f.push_str(&format!("{:<26} {:>11.1}s\n", "checkpoint age", age));
    }
    if !accounts(cur).is_empty() {
        f.push_str(&format!(
            "\n{:<20} {:>10} {:>8} {:>9} {:>8} {:>8} {:>9}\n",
            "ACCOUNT", "SENT/s", "FAILED", "IN FLIGHT", "WAITING", "TOKENS", "p50 ms"
        ));
    }
    for a in accounts(cur) {
        let name = a["account"].as_str().unwrap_or_default();
        let before = accounts(prev)
            .iter()
            .find(|b| b["account"] == a["account"])
            .map_or(0.0, |b| num(b, "/sent"));
        let rate = if dt > 0.0 {
            (num(a, "/sent") - before) / dt
        } else {
            0.0
        };
        let tokens = a
            .pointer("/rate_limit/tokens")
            .and_then(Value::as_f64)
            .map_or("-".into(), |t| format!("{t:.0}"));
        let p50 = a
            .pointer("/latency_ms/p50")
            .and_then(Value::as_f64)
            .map_or("-".into(), |m| format!("{m:.1}"));
        f.push_str(&format!(
            "{name:<20} {rate:>10.1} {:>8.0} {:>9.0} {:>8.0} {tokens:>8} {p50:>9}\n",
            num(a, "/failed"),
            num(a, "/in_flight"),
            num(a, "/rate_limit/waiting"),
        ));
    }
    f
}

/// Shows frames until interrupted, or for `frames` frames.
fn watch(
    addr: &str,
    token: Option<&str>,
    every: Duration,
    frames: Option<u64>,
) -> Result<(), String> {
    let scrape = || -> Result<Sample, String> {
        match admin::get(addr, "/state", token) {
            Ok((200, body)) => serde_json::from_str(&body)
                .map_err(|e| format!("http://{addr}/state: not JSON ({e})")),
            Ok((status, body)) => Err(format!("http://{addr}/state: {status} {body}")),
            Err(e) => Err(format!(
                "http://{addr}/state: {e} (is the job running with [admin]?)"
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
