//! Oracle test: random request streams (lines in any event-time order) through the real
//! dataflow with 1 and 4 workers, compared with a short sequential model of docs/states.md steps
//! 6–8 (night shield, content and frequency dedup, parking and release) applied in event-time
//! order.

mod common;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use tidings_dataflows::source::{line_print, printed_name};
use tidings_model::Shield;
use tidings_model::ids::message_id;
use tidings_model::time::{NightWindow, local_day};
use tidings_operators::shield::{Decision, NightShield};

// 2025-11-22 00:00 Asia/Shanghai.
const DAY: i64 = 1_763_740_800_000;
const MIN: i64 = 60_000;
const CONTENT_WINDOW: i64 = 30 * MIN;
const FREQ_NUM: u32 = 3;

#[derive(Debug, Clone)]
struct Req {
    ts: i64,
    template: i64,
    receivers: Vec<&'static str>,
    v: &'static str,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0i64..(2 * 24 * 60),
        1i64..=4,
        proptest::sample::subsequence(vec!["u1", "u2", "u3", "u4"], 1..=3),
        proptest::sample::select(vec!["a", "b"]),
    )
        .prop_map(|(m, template, receivers, v)| Req {
            ts: DAY + m * MIN,
            template,
            receivers,
            v,
        })
}

/// Requests to phones: the same few numbers written in several ways (national, with `+86`,
/// spaced, dashed), a foreign mobile, and numbers that are not mobiles or not numbers.
fn phone_req() -> impl Strategy<Value = Req> {
    let phones = vec![
        "13800138000",
        "+86 138 0013 8000",
        "138-0013-8000",
        "+8613800138000",
        "13900139000",
        "+86 139-0013-9000",
        "+447911123456",
        "010 6552 9988",
        "12345",
        "1380013800a",
    ];
    (
        0i64..(2 * 24 * 60),
        1i64..=4,
        proptest::sample::subsequence(phones, 1..=4),
        proptest::sample::select(vec!["a", "b"]),
    )
        .prop_map(|(m, template, receivers, v)| Req {
            ts: DAY + m * MIN,
            template,
            receivers,
            v,
        })
}

type Row = (String, String, String, i64);

/// The sequential model of docs/states.md in event-time order: every delivery judged at its event
/// time (a parked one at its release time), in (event time, original event time, line,
/// receiver index) order, whatever the lines' order in the file.
/// Where request `i` is read from: its message id and its place in the source order
/// (partition, line within the partition).
fn place(reqs: &[Req], parts: &[usize], i: usize) -> (String, (usize, i64)) {
    let p = parts[i];
    let line = parts[..=i].iter().filter(|&&q| q == p).count() as i64;
    let k = parts.iter().max().copied().unwrap_or(0) + 1;
    // The partition's file begins with its first request (write_graph_job).
    let first = parts
        .iter()
        .position(|&q| q == p)
        .map(|j| &reqs[j])
        .unwrap();
    let print = line_print(
        common::envelope(
            first.ts,
            first.template,
            &first.receivers.join(","),
            first.v,
        )
        .as_bytes(),
    );
    let base = if k == 1 {
        "file:requests.jsonl".to_string()
    } else {
        format!("file:requests/p{p}.jsonl")
    };
    let id = message_id(&printed_name(&base, Some(&print)), p as i32, line, 0);
    (id.to_string(), (p, line))
}

fn model(reqs: &[Req], parts: &[usize]) -> Vec<Row> {
    let tz = chrono_tz::Asia::Shanghai;
    let night = NightWindow::parse("00:00-08:00").unwrap();
    let mut rows = Vec::new();
    let mut content: HashMap<(i64, &str, &str), Vec<i64>> = HashMap::new();
    let mut freq: HashMap<(&str, i32), u32> = HashMap::new();
    let shield = NightShield {
        window: night,
        release_at: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
        tz,
    };
    let mut items = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let (id, line) = place(reqs, parts, i);
        let local = tidings_model::time::to_utc(r.ts).with_timezone(&tz);
        for (k, rcv) in r.receivers.iter().enumerate() {
            rows.push((id.clone(), rcv.to_string(), "RECEIVE".to_string(), r.ts));
            let at_night = night.contains(local.time());
            if at_night && r.template == 2 {
                rows.push((id.clone(), rcv.to_string(), "NIGHT_SHIELD".into(), r.ts));
            } else if at_night && r.template == 3 {
                rows.push((
                    id.clone(),
                    rcv.to_string(),
                    "NIGHT_SHIELD_NEXT_SEND".into(),
                    r.ts,
                ));
                let Decision::DeferUntil(at) = shield.decide(Shield::NightDelay, r.ts) else {
                    unreachable!()
                };
                items.push(((at, r.ts, line, k), id.clone(), *rcv, r.template, r.v));
            } else {
                items.push(((r.ts, r.ts, line, k), id.clone(), *rcv, r.template, r.v));
            }
        }
    }
    items.sort_by_key(|i| i.0);
    for ((t, ..), id, rcv, template, v) in items {
        let mut state = "SEND_SUCCESS";
        if template != 4 {
            let times = content.entry((template, rcv, v)).or_default();
            if times.iter().any(|&a| a > t - CONTENT_WINDOW && a <= t) {
                state = "CONTENT_DEDUPLICATION";
            } else {
                times.push(t);
                let n = freq.entry((rcv, local_day(tz, t))).or_default();
                if *n >= FREQ_NUM {
                    state = "RULE_DEDUPLICATION";
                } else {
                    *n += 1;
                }
            }
        }
        rows.push((id, rcv.to_string(), state.to_string(), t));
    }
    rows.sort();
    rows
}

/// Writes the job over `reqs` cut into `parts` (one file, or a directory of partition files).
fn write_graph_job(
    dir: &std::path::Path,
    reqs: &[Req],
    parts: &[usize],
    id_type: &str,
) -> std::path::PathBuf {
    let templates = [
        common::sms_template(1, "none", true, id_type),
        common::sms_template(2, "night_drop", true, id_type),
        common::sms_template(3, "night_delay", true, id_type),
        common::sms_template(4, "none", false, id_type),
    ]
    .concat();
    let lines: String = reqs
        .iter()
        .map(|r| common::envelope(r.ts, r.template, &r.receivers.join(","), r.v) + "\n")
        .collect();
    let extra =
        "[dedup]\ncontent = { num = 1, time = 1800 }\nfrequency = { num = 3 }\nlateness = 864000\n";
    let job = common::write_job(dir, &templates, &lines, extra);
    let k = parts.iter().max().copied().unwrap_or(0) + 1;
    if k > 1 {
        // One file per partition, each in the stream's order; read by `p % workers`.
        let files = dir.join("requests");
        std::fs::create_dir_all(&files).unwrap();
        for p in 0..k {
            let body: String = reqs
                .iter()
                .zip(parts)
                .filter(|(_, q)| **q == p)
                .map(|(r, _)| {
                    common::envelope(r.ts, r.template, &r.receivers.join(","), r.v) + "\n"
                })
                .collect();
            std::fs::write(files.join(format!("p{p}.jsonl")), body).unwrap();
        }
        let text = std::fs::read_to_string(&job)
            .unwrap()
            .replace("path = \"requests.jsonl\"", "path = \"requests\"");
        std::fs::write(&job, text).unwrap();
    }
    // Nothing is late: the lines are up to two days apart in any order.
    common::set_source(&job, "max_out_of_order_ms = 259200000");
    job
}

/// The clock is far in the future: whatever is still parked at the end is released.
const NOW: i64 = DAY + 30 * 24 * 60 * MIN;

fn rows_of(events: Vec<tidings_model::EventRow>) -> Vec<Row> {
    let mut rows: Vec<Row> = events
        .into_iter()
        .map(|e| {
            (
                e.meta.message_id.to_string(),
                e.receiver.to_string(),
                e.state.name().to_string(),
                e.event_time,
            )
        })
        .collect();
    rows.sort();
    rows
}

/// How a run paces its decisions: the event time per epoch, the receivers the admit stage lets
/// out before the next epoch waits, and where its backlog's coarser epochs end and how many of
/// its epochs one of them is. They change when a decision is made, never which
/// (docs/job-file.md).
#[derive(Debug, Clone, Copy)]
struct Pacing {
    epoch_ms: i64,
    receivers: usize,
    /// `backlog_before` (`i64::MIN`: no backlog epochs).
    backlog_before: i64,
    /// `backlog_epoch_ms` in epochs.
    backlog_epochs: i64,
}

/// Any pacing: epochs of 1 ms to 10 s, backlog epochs of 1 to 360 of them (up to an hour)
/// before no instant, one inside the requests' two days, or one after them all.
fn pacing() -> impl Strategy<Value = Pacing> {
    (
        proptest::sample::select(vec![1i64, 100, 1000, 10_000]),
        proptest::sample::select(vec![1usize, 3, 100_000]),
        prop_oneof![
            Just(i64::MIN),
            (0i64..(2 * 24 * 60)).prop_map(|m| DAY + m * MIN),
            Just(NOW)
        ],
        proptest::sample::select(vec![1i64, 7, 360]),
    )
        .prop_map(
            |(epoch_ms, receivers, backlog_before, backlog_epochs)| Pacing {
                epoch_ms,
                receivers,
                backlog_before,
                backlog_epochs,
            },
        )
}

/// Where two runs' backlog epochs end (`None`: their default) and how long those are.
fn backlogs() -> impl Strategy<Value = ([Option<i64>; 2], i64)> {
    let before = || {
        prop_oneof![
            Just(None),
            Just(Some(i64::MIN)),
            (0i64..(2 * 24 * 60)).prop_map(|m| Some(DAY + m * MIN))
        ]
    };
    // A file read whole has 1000 ms epochs (a followed one 100): both lengths are coarser.
    (
        before(),
        before(),
        proptest::sample::select(vec![5000i64, 60_000]),
    )
        .prop_map(|(a, b, len)| ([a, b], len))
}

/// `pacing`: as [`Pacing`] says (`None`: the defaults: the clock is a month after the requests,
/// so every one is a backlog's, in a file's 1000 ms epochs either way).
fn graph(reqs: &[Req], parts: &[usize], workers: usize, pacing: Option<Pacing>) -> Vec<Row> {
    graph_of(reqs, parts, workers, pacing, "user_id")
}

/// [`graph`] with the templates' receivers of `id_type`.
fn graph_of(
    reqs: &[Req],
    parts: &[usize],
    workers: usize,
    pacing: Option<Pacing>,
    id_type: &str,
) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let job = write_graph_job(dir.path(), reqs, parts, id_type);
    if let Some(p) = pacing {
        common::set_source(
            &job,
            &format!(
                "epoch_ms = {}\nin_flight_receivers = {}\nbacklog_epoch_ms = {}",
                p.epoch_ms,
                p.receivers,
                p.epoch_ms * p.backlog_epochs
            ),
        );
    }
    let before = pacing.map(|p| p.backlog_before);
    let (events, dead, summary) = common::run_memory_backlog(&job, workers, NOW, before);
    assert!(dead.is_empty(), "{dead:?}");
    counted_as_tracked(&[summary], &events);
    rows_of(events)
}

/// The runs' counts per (template, state), behind `/metrics`, are the rows they tracked,
/// whatever the workers and however the rows came (Track counts them in runs of one key).
fn counted_as_tracked(runs: &[tidings_dataflows::Summary], events: &[tidings_model::EventRow]) {
    let mut tracked = BTreeMap::new();
    for e in events {
        *tracked.entry((e.meta.template_id, e.state)).or_insert(0u64) += 1;
    }
    let mut counted = BTreeMap::new();
    for run in runs {
        for (key, n) in &run.counts.per_template {
            *counted.entry(*key).or_insert(0u64) += n;
        }
    }
    counted.retain(|_, n| *n > 0);
    assert_eq!(
        counted, tracked,
        "counts per (template, state) against the rows tracked"
    );
}

/// Two runs over the same file: the first (following it or not) is stopped gracefully (as
/// Ctrl-C does) once it tracked `stop_after` rows, at whatever point it then is (a run that does
/// not follow may end first, or finish its file while stopping); the second reads on from the
/// stop's cut to the end. Together they must decide exactly what one run decides: nothing lost,
/// nothing twice.
///
/// `backlog`: the two runs' `backlog_before` (`None`: the default, after every request; a run
/// that restores a cut may draw the line elsewhere than the run that took it) and the job's
/// `backlog_epoch_ms`.
fn graph_stopped(
    reqs: &[Req],
    parts: &[usize],
    workers: usize,
    stop_after: usize,
    follow: bool,
    id_type: &str,
    backlog: ([Option<i64>; 2], i64),
) -> Vec<Row> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tidings_dataflows::{RunOptions, TrackingTarget};
    use tidings_operators::Clock;
    use tidings_sinks::tracking::MemoryTracking;

    let dir = tempfile::tempdir().unwrap();
    let job = write_graph_job(dir.path(), reqs, parts, id_type);
    common::set_source(
        &job,
        &format!(
            "follow = {follow}\ncheckpoint_ms = 10\nbacklog_epoch_ms = {}",
            backlog.1
        ),
    );
    let memory = MemoryTracking::default();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        workers,
        // The wall clock: a stop waits for the (caught-up) watermark to pass its cut.
        clock: Clock::System,
        tracking: TrackingTarget::Memory(memory.clone()),
        in_flight: 20,
        in_flight_receivers: 5,
        from_start: false,
        handle_signals: false,
        idle_exit: None,
        stop: Some(stop.clone()),
        // A stop that does not end is a failure, not a hang.
        drain_timeout: Some(std::time::Duration::from_secs(20)),
        tracking_give_up: None,
        cluster: None,
        backlog_before: backlog.0[0],
    };
    let loaded = tidings_dataflows::job::Job::load(&job).unwrap();
    let first = std::thread::spawn(move || tidings_dataflows::run(&loaded, &opts));
    common::wait_until(
        std::time::Duration::from_secs(60),
        "rows to be tracked",
        || memory.events_len() >= stop_after || first.is_finished(),
    );
    stop.store(true, Ordering::SeqCst);
    let stopped = first.join().unwrap().unwrap();
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("follow = true", "follow = false");
    std::fs::write(&job, text).unwrap();
    let (events, dead, resumed) = common::run_memory_backlog(&job, workers, NOW, backlog.0[1]);
    assert!(dead.is_empty(), "{dead:?}");
    let mut all = memory.take().events;
    all.extend(events);
    counted_as_tracked(&[stopped, resumed], &all);
    rows_of(all)
}

fn by_state(rows: &[Row]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.2.as_str()).or_default() += 1;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn dataflow_matches_sequential_model(
        (reqs, parts) in (proptest::collection::vec(req(), 1..40), 1usize..=8).prop_flat_map(|(reqs, k)| {
            let n = reqs.len();
            (Just(reqs), proptest::collection::vec(0..k, n))
        }),
        pacing in pacing(),
    ) {
        let want = model(&reqs, &parts);
        let one = graph(&reqs, &parts, 1, None);
        prop_assert_eq!(&one, &want, "1 worker vs model: {:?} vs {:?}", by_state(&one), by_state(&want));
        let four = graph(&reqs, &parts, 4, Some(pacing));
        prop_assert_eq!(&four, &want, "4 workers, {:?} vs model", pacing);
        // The caps hold whatever the order: per (receiver, local day) at most FREQ_NUM sends
        // (template 4 is exempt from the rules).
        let exempt: std::collections::HashSet<String> = (0..reqs.len())
            .filter(|&i| reqs[i].template == 4)
            .map(|i| place(&reqs, &parts, i).0)
            .collect();
        let mut sends: HashMap<(&str, i32), u32> = HashMap::new();
        for r in four.iter().filter(|r| r.2 == "SEND_SUCCESS" && !exempt.contains(&r.0)) {
            *sends.entry((r.1.as_str(), local_day(chrono_tz::Asia::Shanghai, r.3))).or_default() += 1;
        }
        prop_assert!(sends.values().all(|&n| n <= FREQ_NUM), "{:?}", sends);
    }

    /// A graceful stop anywhere, then a restart: the two runs together decide what the model
    /// decides, each row once.
    #[test]
    fn a_stop_and_a_restart_match_the_sequential_model(
        (reqs, parts) in (proptest::collection::vec(req(), 1..40), 1usize..=4).prop_flat_map(|(reqs, k)| {
            let n = reqs.len();
            (Just(reqs), proptest::collection::vec(0..k, n))
        }),
        workers in proptest::sample::select(vec![1usize, 3]),
        stop_after in 0usize..120,
        follow in any::<bool>(),
        backlog in backlogs(),
    ) {
        let want = model(&reqs, &parts);
        let got = graph_stopped(&reqs, &parts, workers, stop_after.min(want.len()), follow, "user_id", backlog);
        prop_assert_eq!(&got, &want, "stopped after {} rows, {} workers, follow {}, backlog {:?}: {:?} vs {:?}", stop_after, workers, follow, backlog, by_state(&got), by_state(&want));
    }

    /// Phone receivers, checked and normalised per worker thread (model/src/phone_plan.rs
    /// compiles each region's patterns once per thread), decide alike on 1 and 4 workers, with
    /// any partitioning and pacing, and across a stop and a restart on 3; one number written
    /// in several ways is one receiver.
    #[test]
    fn phone_receivers_decide_alike_whatever_the_workers_and_a_restart(
        (reqs, parts) in (proptest::collection::vec(phone_req(), 1..30), 1usize..=4).prop_flat_map(|(reqs, k)| {
            let n = reqs.len();
            (Just(reqs), proptest::collection::vec(0..k, n))
        }),
        pacing in pacing(),
        stop_after in 0usize..60,
        backlog in backlogs(),
    ) {
        let one = graph_of(&reqs, &parts, 1, None, "phone");
        let four = graph_of(&reqs, &parts, 4, Some(pacing), "phone");
        prop_assert_eq!(&four, &one, "4 workers, {:?} vs 1 worker", pacing);
        let stopped = graph_stopped(&reqs, &parts, 3, stop_after.min(one.len()), false, "phone", backlog);
        prop_assert_eq!(&stopped, &one, "stopped after {} rows on 3 workers, backlog {:?}, vs 1 worker", stop_after, backlog);
        // A valid number is tracked in its normal form whatever way it was written (an
        // invalid one as written, with its reason).
        for r in &one {
            prop_assert!(
                !["+86 138 0013 8000", "138-0013-8000", "+8613800138000", "+86 139-0013-9000"]
                    .contains(&r.1.as_str()),
                "a receiver not in its normal form: {:?}", r
            );
        }
    }
}
