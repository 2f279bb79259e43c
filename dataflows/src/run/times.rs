//! Where a run's CPU goes, by timely operator and by thread: a diagnostic for `bench/`,
//! switched on by the environment (never by a job file), off by default.
//!
//! With `TIDINGS_OPERATOR_TIMES=PATH` set, each worker registers a timely logger that sums the
//! time each operator spends scheduled (timely's own `Schedule` start and stop events), and
//! appends one JSON line per operator to `PATH` when the run ends; the process then appends one
//! line per thread with its CPU time from `/proc/self/task` (the send runtime's threads, the
//! checkpoint writers, librdkafka's, which no operator's time includes). A profiler's samples
//! cannot be attributed to operators in a release build (no frame pointers, and the operators'
//! closures are inlined into each other); this can.
//!
//! An operator that contains others (a region, an iterative scope) is reported with
//! `"leaf": false`: its time includes theirs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

/// The environment variable naming the file the times are appended to.
pub const OPERATOR_TIMES: &str = "TIDINGS_OPERATOR_TIMES";

/// The file to append to, when asked for.
pub fn path() -> Option<PathBuf> {
    std::env::var_os(OPERATOR_TIMES)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

#[derive(Default)]
struct Operator {
    name: String,
    addr: Vec<usize>,
    busy: Duration,
    schedules: u64,
    started: Option<Duration>,
}

/// One worker's operator times, filled by its timely logger.
#[derive(Default)]
pub struct Times {
    by_id: BTreeMap<usize, Operator>,
}

/// Registers the logger on `worker` (before its dataflows are built, so that every operator's
/// name is seen); `None` when the times are not asked for.
pub fn register(worker: &mut timely::worker::Worker) -> Option<Rc<RefCell<Times>>> {
    path()?;
    let times = Rc::new(RefCell::new(Times::default()));
    let into = times.clone();
    let mut registry = worker.log_register()?;
    registry.insert::<TimelyEventBuilder, _>("timely", move |_, events| {
        let Some(events) = events else { return };
        let mut t = into.borrow_mut();
        for (at, event) in events.iter() {
            match event {
                TimelyEvent::Operates(o) => {
                    let op = t.by_id.entry(o.id).or_default();
                    op.name.clone_from(&o.name);
                    op.addr.clone_from(&o.addr);
                }
                TimelyEvent::Schedule(s) => {
                    let op = t.by_id.entry(s.id).or_default();
                    match s.start_stop {
                        StartStop::Start => op.started = Some(*at),
                        StartStop::Stop => {
                            if let Some(from) = op.started.take() {
                                op.busy += at.saturating_sub(from);
                                op.schedules += 1;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });
    Some(times)
}

/// Flushes `worker`'s logger and appends its operators' lines to the file.
pub fn report(worker: &mut timely::worker::Worker, times: &Rc<RefCell<Times>>) {
    if let Some(mut registry) = worker.log_register() {
        registry.flush();
        registry.remove("timely");
    }
    let Some(path) = path() else { return };
    let t = times.borrow();
    let parents: std::collections::BTreeSet<&[usize]> = t
        .by_id
        .values()
        .filter_map(|o| o.addr.split_last().map(|(_, parent)| parent))
        .collect();
    let mut lines = String::new();
    for op in t.by_id.values().filter(|o| o.schedules > 0) {
        let line = serde_json::json!({
            "worker": worker.index(),
            "operator": op.name,
            "addr": op.addr,
            "leaf": !parents.contains(op.addr.as_slice()),
            "busy_ms": op.busy.as_secs_f64() * 1000.0,
            "schedules": op.schedules,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    append(&path, &lines);
}

/// Appends one line per thread of this process with its CPU time (Linux only: nothing
/// elsewhere).
pub fn report_threads() {
    let Some(path) = path() else { return };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    // Clock ticks per second of /proc's times: 100 on Linux.
    let tick_ms = 10.0;
    let mut lines = String::new();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let (Ok(u), Ok(s)) = (utime.parse::<f64>(), stime.parse::<f64>()) else {
            continue;
        };
        let line = serde_json::json!({
            "thread": &stat[open + 1..close],
            "cpu_ms": (u + s) * tick_ms,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    append(&path, &lines);
}

fn append(path: &std::path::Path, lines: &str) {
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(lines.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("{OPERATOR_TIMES}: {}: {e}", path.display());
    }
}
