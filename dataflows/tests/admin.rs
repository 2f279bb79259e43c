//! The admin API on a running Kafka job (`scripts/services.sh start`): the live dedup windows
//! answer from the operators' state and agree with the decisions they then make; the park,
//! accounts and source views; `/metrics` parses as Prometheus text and counts what was
//! tracked; `tidings state` and `tidings top` read it; a token is enforced.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Timelike;
use serde_json::Value;
use tidings_dataflows::admin::get;
use tidings_dataflows::kafka::{Outgoing, produce};
use tidings_dataflows::{Job, RunOptions, TrackingTarget, run};
use tidings_model::EventRow;
use tidings_operators::Clock;
use tidings_sinks::tracking::MemoryTracking;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

const TOKEN: &str = "s3cret-admin";

fn request(template: i64, receiver: &str, code: &str) -> Outgoing {
    let payload = serde_json::json!({"code": "send", "messageTemplateId": template,
        "messageParam": {"receiver": receiver, "variables": {"code": code}}});
    Outgoing {
        key: Some(receiver.into()),
        payload: payload.to_string(),
        timestamp: None,
    }
}

/// Polls `path` until `ok` holds for its JSON answer.
fn wait_json(addr: &str, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(addr, path, Some(TOKEN)).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {path} answered {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_rows(
    memory: &MemoryTracking,
    rows: &mut Vec<EventRow>,
    what: &str,
    ok: impl Fn(&[EventRow]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        rows.extend(memory.take().events);
        if ok(rows) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {rows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state_of<'a>(rows: &'a [EventRow], receiver: &str, nth_message: usize) -> Option<&'a str> {
    let mut ids: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| &*r.receiver == receiver) {
        if !ids.contains(&r.meta.message_id.as_str()) {
            ids.push(&r.meta.message_id);
        }
    }
    let id = ids.get(nth_message)?;
    rows.iter()
        .filter(|r| &*r.receiver == receiver && r.meta.message_id == *id)
        .filter(|r| r.state.is_terminal() || r.state.name() == "NIGHT_SHIELD_NEXT_SEND")
        .map(|r| r.state.name())
        .next()
}

fn write_job(dir: &Path, topic: &str, group: &str) -> std::path::PathBuf {
    // A night window around now (local), so the night_delay template parks until after the
    // test; the dedup template is not shielded.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    let hhmm = |h: i64| format!("{:02}:{:02}", (now.hour() as i64 + 24 + h) % 24, 0);
    std::fs::write(
        dir.join("templates.toml"),
        "[[template]]\nid = 1\nname = \"code\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"sms\"\n[template.content]\ncontent = \"code {$code}\"\n\
         [[template]]\nid = 2\nname = \"later\"\nchannel = \"sms\"\nmsg_type = \"marketing\"\nid_type = \"phone\"\nshield = \"night_delay\"\naccount = \"sms\"\n[template.content]\ncontent = \"later {$code}\"\n",
    )
    .unwrap();
    let job = format!(
        "name = \"admin-test\"\ntimezone = \"Asia/Shanghai\"\ntemplates = \"templates.toml\"\nworkers = 2\nstate_dir = \"var/state\"\n\
         [source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n\
         [dedup]\ncontent = {{ num = 1, time = 300 }}\nfrequency = {{ num = 2 }}\n\
         [shield]\nnight = \"{}-{}\"\nrelease_at = \"{}\"\n\
         [tracking]\ndir = \"var/tracking\"\n\
         [admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [accounts.sms]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\nrate_limit = {{ per_second = 50, strategy = \"receivers\" }}\n",
        brokers(),
        hhmm(-1),
        hhmm(2),
        hhmm(2),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

#[test]
fn live_state_agrees_with_the_decisions_and_metrics_parse() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("tidings-admin-{unique}");
    let job_path = write_job(dir.path(), &topic, &format!("g-{unique}"));
    let job = Job::load(&job_path).unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryTracking::default();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        workers: 2,
        clock: Clock::System,
        tracking: TrackingTarget::Memory(memory.clone()),
        in_flight: 20_000,
        in_flight_receivers: 100_000,
        from_start: false,
        handle_signals: false,
        idle_exit: None,
        stop: Some(stop.clone()),
        drain_timeout: None,
        tracking_give_up: None,
        cluster: None,
        backlog_before: None,
    };
    let running = {
        let job = job.clone();
        std::thread::spawn(move || run(&job, &opts).unwrap())
    };
    let addr_file = job.state_dir.join("admin.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !addr_file.exists() {
        assert!(Instant::now() < deadline, "no admin.addr");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = std::fs::read_to_string(&addr_file).unwrap();

    // The token is enforced.
    let (status, _) = get(&addr, "/state", None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = get(&addr, "/state", Some("wrong")).unwrap();
    assert_eq!(status, 401);

    let content_a = "/state/content?template=1&receiver=13800138000&var.code=4711";
    let before = wait_json(&addr, content_a, "empty window", |v| v["count"] == 0);
    assert_eq!(before["passes"], true, "{before}");

    // One send: the window of its key now holds it, and another would not pass.
    produce(
        &brokers(),
        &topic,
        [request(1, "13800138000", "4711")],
        || {},
    )
    .unwrap();
    let full = wait_json(&addr, content_a, "admission recorded", |v| v["count"] == 1);
    assert_eq!(full["passes"], false, "{full}");
    assert_eq!(full["in_window"], 1, "{full}");
    let admitted = full["admissions_ms"][0].as_i64().unwrap();
    assert_eq!(
        full["expires"].as_str().unwrap(),
        tidings_operators::live::iso(admitted + 300_000)
    );
    // The same receiver with other content has an empty window; the CLI answers the same.
    let other = wait_json(
        &addr,
        "/state/content?template=1&receiver=13800138000&var.code=1234",
        "other content",
        |_| true,
    );
    assert_eq!(
        (other["count"].as_i64(), other["passes"].as_bool()),
        (Some(0), Some(true))
    );
    let cli = common::tidings(&[
        "state",
        "--job",
        job_path.to_str().unwrap(),
        "content",
        "--template",
        "1",
        "--receiver",
        "13800138000",
        "--var",
        "code=4711",
    ]);
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli["admissions_ms"], full["admissions_ms"]);
    assert_eq!(cli["passes"], false);

    // The frequency counter of (receiver, sms): one today, room for one more.
    let freq = wait_json(
        &addr,
        "/state/frequency?receiver=13800138000&template=1",
        "frequency",
        |v| v["count_that_day"] == 1,
    );
    assert_eq!(freq["passes"], true, "{freq}");

    // Now the duplicate, the other content and a parked one: the operators decide as answered.
    produce(
        &brokers(),
        &topic,
        [
            request(1, "13800138000", "4711"),
            request(1, "13800138000", "1234"),
            request(2, "13800138001", "1"),
        ],
        || {},
    )
    .unwrap();
    let mut rows = Vec::new();
    wait_rows(&memory, &mut rows, "all decided", |rows| {
        state_of(rows, "13800138000", 2).is_some() && state_of(rows, "13800138001", 0).is_some()
    });
    let mut firsts: Vec<&str> = (0..3)
        .filter_map(|i| state_of(&rows, "13800138000", i))
        .collect();
    firsts.sort();
    assert_eq!(
        firsts,
        ["CONTENT_DEDUPLICATION", "SEND_SUCCESS", "SEND_SUCCESS"],
        "{rows:#?}"
    );
    assert_eq!(
        state_of(&rows, "13800138001", 0),
        Some("NIGHT_SHIELD_NEXT_SEND")
    );
    // Two admitted today: the frequency window is now full, as the next judgement will find.
    let freq = wait_json(
        &addr,
        "/state/frequency?receiver=13800138000&channel=sms",
        "frequency full",
        |v| v["count_that_day"] == 2,
    );
    assert_eq!(freq["passes"], false, "{freq}");
    // Issue 12: `at` at either end of i64 is a 400 naming the range (no operator does
    // arithmetic on it), and the worker that owns the key lives on (the next question is
    // answered). A spelled-out phone asks about the same key.
    for at in [i64::MIN, i64::MAX] {
        for path in [
            format!("/state/content?template=1&receiver=13800138000&var.code=4711&at={at}"),
            format!("/state/frequency?receiver=13800138000&channel=sms&at={at}"),
        ] {
            let (status, body) = get(&addr, &path, Some(TOKEN)).unwrap();
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("between 2000-01-01 and 9999-12-31"), "{body}");
        }
    }
    let spelled = wait_json(
        &addr,
        "/state/frequency?receiver=%2B86%20138%200013%208000&channel=sms",
        "spelled-out phone",
        |_| true,
    );
    assert_eq!(spelled["count_that_day"], 2, "{spelled}");

    let park = wait_json(&addr, "/state/park", "parked", |v| v["parked"] == 1);
    assert!(park["next_release_ms"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis());
    let ops = wait_json(&addr, "/state/operators", "operators", |_| true);
    assert_eq!(ops["ContentDedup"]["keys"], 2, "{ops}");
    assert_eq!(ops["FrequencyDedup"]["keys"], 1, "{ops}");
    assert!(ops["ContentDedup"]["bytes"].as_u64().unwrap() > 0);
    let accounts = wait_json(&addr, "/state/accounts", "accounts", |v| v[0]["sent"] == 2);
    assert_eq!(accounts[0]["rate_limit"]["per_second"], 50, "{accounts}");
    assert_eq!(accounts[0]["in_flight"], 0);
    let source = wait_json(&addr, "/state/source", "source lag", |v| {
        v["partitions"].as_array().is_some_and(|p| !p.is_empty())
            && v["checkpoint"]["completed"].as_u64() > Some(0)
    });
    assert_eq!(source["lag"], 0, "{source}");
    // The event-time view: a watermark per partition read, its lag, late records (none here).
    let clocks = source["event_time"]["partitions"].as_array().unwrap();
    assert!(!clocks.is_empty(), "{source}");
    assert!(
        clocks.iter().all(|c| c["watermark"].is_string()),
        "{source}"
    );
    assert_eq!(source["event_time"]["late_records"], 0, "{source}");
    assert!(
        clocks.iter().all(|c| c["unreadable_offsets"] == 0),
        "{source}"
    );
    assert_eq!(source["event_time"]["max_out_of_order_ms"], 200, "{source}");
    // Event times from over a minute (and the out-of-order bound) before the start are a
    // backlog's, in 1 s epochs.
    assert_eq!(source["event_time"]["epoch_ms"], 10, "{source}");
    assert_eq!(source["event_time"]["backlog_epoch_ms"], 1000, "{source}");
    let before = chrono::DateTime::parse_from_rfc3339(
        source["event_time"]["backlog_before"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp_millis();
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - 600_000..=now - 60_000).contains(&before), "{source}");

    // /metrics parses as Prometheus text and counts the tracked rows (once durable: counters
    // move when the tracking stage flushes, at most `flush_interval_ms` after the rows).
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = get(&addr, "/metrics", Some(TOKEN)).unwrap();
        assert_eq!(status, 200);
        let counted = |line: &str| text.lines().any(|l| l.contains(line));
        if counted(r#"state="SEND_SUCCESS",state_code="60",channel="sms",template="1"} 2"#)
            && counted(r#"state="RECEIVE",state_code="10",channel="sms",template="1"} 3"#)
            && counted(
                r#"state="CONTENT_DEDUPLICATION",state_code="30",channel="sms",template="1"} 1"#,
            )
            && counted(
                r#"state="NIGHT_SHIELD_NEXT_SEND",state_code="24",channel="sms",template="2"} 1"#,
            )
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{text}\n{:?}",
            get(&addr, "/state", Some(TOKEN))
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => 0.0,
            })
            .sum()
    };
    let events = |state: &str| {
        value(
            "tidings_events_total",
            &[("state", state), ("template", "1"), ("channel", "sms")],
        )
    };
    assert_eq!(events("SEND_SUCCESS"), 2.0, "{text}");
    // Watermarks are recent (the records were produced just now), nothing came late.
    let watermarks: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "tidings_source_watermark_seconds")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .collect();
    assert!(!watermarks.is_empty(), "{text}");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        watermarks.iter().all(|w| now_s - w < 600.0),
        "{watermarks:?}"
    );
    assert_eq!(
        value("tidings_source_late_records_total", &[]),
        0.0,
        "{text}"
    );
    // Exported per partition read, none here.
    let unreadable = "tidings_source_unreadable_offsets_total";
    assert!(
        scrape.samples.iter().any(|s| s.metric == unreadable),
        "{text}"
    );
    assert_eq!(value(unreadable, &[]), 0.0, "{text}");
    assert_eq!(events("CONTENT_DEDUPLICATION"), 1.0, "{text}");
    assert_eq!(events("RECEIVE"), 3.0, "{text}");
    assert_eq!(
        value(
            "tidings_events_total",
            &[("state", "NIGHT_SHIELD_NEXT_SEND"), ("template", "2")]
        ),
        1.0
    );
    assert_eq!(value("tidings_parked", &[]), 1.0);
    assert!(
        value(
            "tidings_send_latency_seconds",
            &[("account", "sms"), ("provider", "outbox")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "tidings_consumer_lag"),
        "{text}"
    );
    assert!(value("tidings_checkpoint_age_seconds", &[]) >= 0.0);
    assert_eq!(
        value("tidings_dedup_keys", &[("operator", "ContentDedup")]),
        2.0
    );

    // `tidings top` renders a frame from two scrapes.
    let top = common::tidings(&[
        "top",
        "--job",
        job_path.to_str().unwrap(),
        "--frames",
        "1",
        "--interval",
        "0.2",
    ]);
    assert!(top.contains("received") && top.contains("sent"), "{top}");
    let sent_line = top.lines().find(|l| l.starts_with("sent ")).unwrap();
    assert_eq!(sent_line.split_whitespace().nth(1), Some("2"), "{top}");

    stop.store(true, Ordering::Relaxed);
    let summary = common::join_within(running, Duration::from_secs(120), "the stopped job");
    assert_eq!(summary.parked, 1);
    // After the run the API is gone.
    assert!(get(&addr, "/state", Some(TOKEN)).is_err());
}

#[test]
fn a_public_bind_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_job(
        dir.path(),
        &common::sms_template(1, "none", true, "phone"),
        "",
        "[admin]\nbind = \"0.0.0.0:9464\"",
    );
    let e = Job::load(&path).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{:?}", e.problems);
    assert!(
        e.problems[0].contains("admin.bind") && e.problems[0].contains("admin.token"),
        "{:?}",
        e.problems
    );
}
