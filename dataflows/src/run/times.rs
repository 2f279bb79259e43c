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

/// One worker's operator times, filled by its timely logger, and the file they go to.
pub struct Times {
    path: PathBuf,
    by_id: BTreeMap<usize, Operator>,
}

/// Registers the logger on `worker` (before its dataflows are built, so that every operator's
/// name is seen); `None` when the times are not asked for.
pub fn register(worker: &mut timely::worker::Worker) -> Option<Rc<RefCell<Times>>> {
    let times = Rc::new(RefCell::new(Times {
        path: path()?,
        by_id: BTreeMap::new(),
    }));
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
    append(&t.path, &lines);
}

/// A `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line's command name and CPU time
/// (user + system) in seconds.
pub fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (11 and 12 after the name), in clock ticks of
    // 1/100 s on Linux.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((
        stat.get(open + 1..close)?,
        (ticks(11)? + ticks(12)?) / 100.0,
    ))
}

/// Appends one line per thread of this process with its CPU time (Linux only: nothing
/// elsewhere).
pub fn report_threads() {
    let Some(path) = path() else { return };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut lines = String::new();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((thread, cpu)) = stat_cpu(&stat) else {
            continue;
        };
        let line = serde_json::json!({ "thread": thread, "cpu_ms": cpu * 1000.0 });
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

#[cfg(test)]
mod tests {
    /// The name may hold spaces and parentheses; the times are the fields after it.
    #[test]
    fn a_stat_line_gives_its_name_and_cpu_seconds() {
        let line = "42 (tidings (send) 1) S 1 42 42 0 -1 4194560 10 0 0 0 150 25 0 0 20 0 1 0";
        assert_eq!(super::stat_cpu(line), Some(("tidings (send) 1", 1.75)));
        assert_eq!(super::stat_cpu("42 (x) S 1"), None);
    }
}
