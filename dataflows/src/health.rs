//! A run's health, shared by its workers, its signal handler and its teardown: the first
//! worker failure (a panic is a bug: the job fails fast instead of spinning on a dead peer) and
//! the order to halt at once (a second signal, or the drain timeout).
//!
//! Every worker runs inside [`Health::guard`]: a panic is caught, its message (with the place
//! it was raised) recorded as the run's failure, and every other worker leaves its step loop at
//! its next turn ([`Health::must_leave`]), so the process ends with one line naming the panic
//! instead of hanging.

use std::cell::RefCell;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// After a halt, how long workers go on stepping once no send is outstanding (their
/// outcomes reach tracking), and the longest they wait for outstanding sends.
const SETTLE: Duration = Duration::from_millis(100);
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// Why a run ends before its graph drained.
#[derive(Debug, Default)]
pub struct Health {
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Whether the first failure was a worker's panic (in a cluster, often a broken
    /// connection to a peer that ended first).
    panicked_first: AtomicBool,
    halt: Arc<tidings_sinks::account::Halt>,
    /// The halt of the `kafka`-queued accounts: raised by a halt, and by a graceful stop
    /// (their deliveries still waiting for a permit stay in their topics for the next run).
    queued: Arc<tidings_sinks::account::Halt>,
    halt_reason: Mutex<Option<String>>,
    /// Sends handed to the runtime whose outcome has not come back to their worker.
    outstanding: AtomicUsize,
    /// Since when a halted run has had no send outstanding.
    settled_since: Mutex<Option<Instant>>,
    halted_at: std::sync::OnceLock<Instant>,
    /// Set to stop the sources (the run's `stop` flag), raised on a failure too.
    stop: Option<Arc<AtomicBool>>,
}

impl Health {
    /// Health for a run whose sources stop when `stop` is raised.
    pub fn new(stop: Arc<AtomicBool>) -> Arc<Health> {
        Arc::new(Health {
            stop: Some(stop),
            ..Health::default()
        })
    }

    /// Records the run's failure (the first one wins) and stops the sources.
    pub fn fail(&self, what: impl Into<String>) {
        self.record(what.into(), false);
    }

    fn record(&self, what: String, panic: bool) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(what);
            self.panicked_first.store(panic, Ordering::SeqCst);
        }
        self.failed.store(true, Ordering::SeqCst);
        if let Some(s) = &self.stop {
            s.store(true, Ordering::SeqCst);
        }
    }

    /// The run's failure, if any.
    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::SeqCst) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the run's failure is a worker's panic (not a failure the run recorded itself).
    pub fn failed_by_panic(&self) -> bool {
        self.panicked_first.load(Ordering::SeqCst)
    }

    /// Whether a worker failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Orders every worker to leave now (what is owed is still written: tracking flushes what
    /// it holds as its operator is dropped).
    pub fn halt(&self, why: impl Into<String>) {
        let mut r = self.halt_reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(why.into());
        }
        self.halted_at.get_or_init(Instant::now);
        self.halt.raise();
        self.queued.raise();
        if let Some(s) = &self.stop {
            s.store(true, Ordering::SeqCst);
        }
    }

    /// Why the run was halted, if it was.
    pub fn halted(&self) -> Option<String> {
        if !self.halt.is_raised() {
            return None;
        }
        self.halt_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the run is ending before its graph drained (a failure or a halt): no new
    /// send starts.
    pub fn must_leave(&self) -> bool {
        self.failed.load(Ordering::Relaxed) || self.halt.is_raised()
    }

    /// Whether a worker leaves its step loop now: at once after a failure; after a halt once
    /// the sends already made have come back (their rows are then written as tracking is
    /// dropped), waiting at most [`SETTLE_MAX`].
    pub fn may_leave(&self) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return true;
        }
        if !self.halt.is_raised() {
            return false;
        }
        let mut since = self.settled_since.lock().unwrap_or_else(|p| p.into_inner());
        let halted_at = *self.halted_at.get_or_init(Instant::now);
        if halted_at.elapsed() >= SETTLE_MAX {
            return true;
        }
        if self.outstanding.load(Ordering::SeqCst) > 0 {
            *since = None;
            return false;
        }
        since.get_or_insert_with(Instant::now).elapsed() >= SETTLE
    }

    /// The flag a halt raises (accounts stop waiting for permits on it).
    pub fn halt_flag(&self) -> Arc<tidings_sinks::account::Halt> {
        self.halt.clone()
    }

    /// The flag the `kafka`-queued accounts wait on instead (raised by a halt too).
    pub fn queued_flag(&self) -> Arc<tidings_sinks::account::Halt> {
        self.queued.clone()
    }

    /// A graceful stop: the `kafka`-queued accounts' sends still waiting for a permit give up
    /// (their deliveries are read again from their topics by the next run), so a stop is not
    /// held for the minutes a slow account's room takes to send.
    pub fn stop_queued(&self) {
        if !self.queued.is_raised() {
            self.queued.raise();
        }
    }

    /// Whether the `kafka`-queued accounts' sends give up (a stop or a halt).
    pub fn queued_stopped(&self) -> bool {
        self.queued.is_raised()
    }

    /// A send was handed to the runtime.
    pub fn send_started(&self) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    /// A send's outcome went back to its worker.
    pub fn send_returned(&self) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }

    /// Call first thing in a worker: while the returned guard lives, a panic on this thread
    /// becomes the run's failure, named `worker N panicked at FILE:LINE: MESSAGE` (recorded as
    /// the guard is dropped during the unwinding), and is not printed with a backtrace.
    pub fn on_panic(self: &Arc<Health>, index: usize) -> PanicGuard {
        install_hook();
        GUARDED.with(|g| *g.borrow_mut() = Some(None));
        PanicGuard {
            health: self.clone(),
            index,
        }
    }
}

/// Turns a panic of its worker into the run's failure (see [`Health::on_panic`]).
#[derive(Debug)]
pub struct PanicGuard {
    health: Arc<Health>,
    index: usize,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        let seen = GUARDED.with(|g| g.borrow_mut().take()).flatten();
        if std::thread::panicking() {
            let msg = seen.unwrap_or_else(|| ": (no message)".to_string());
            self.health
                .record(format!("worker {} panicked{msg}", self.index), true);
        }
    }
}

/// Leaves a worker now: drops its dataflows (their operators let go of what they hold;
/// tracking writes its rows), so timely does not wait for them to complete, which a failed
/// peer would never let happen.
pub fn leave(worker: &mut timely::worker::Worker) {
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
}

thread_local! {
    /// `Some` while a guarded worker runs on this thread: then holds its panic's place and
    /// message, which the hook records instead of printing a backtrace.
    static GUARDED: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

fn message_of(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!(": {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!(": {s}")
    } else {
        ": (no message)".to_string()
    }
}

/// The first panic of a timely network thread (a cluster peer's connection broke).
static NETWORK_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Whether a worker of this process panicked: a network thread's panic after it (its queue
/// poisoned by the worker's unwinding) is that panic's doing, not a peer's going.
static WORKER_PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Why a cluster's connection to a peer broke, if it did.
pub fn network_failure() -> Option<String> {
    NETWORK_FAILURE.get().cloned()
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let guarded = GUARDED.with(|g| {
                let mut g = g.borrow_mut();
                match g.as_mut() {
                    Some(slot) => {
                        let place = info
                            .location()
                            .map(|l| format!(" at {}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        let msg = message_of(info.payload());
                        // One line: a newline in a message would break it.
                        *slot = Some(format!("{place}{}", msg.replace('\n', " ")));
                        true
                    }
                    None => false,
                }
            });
            // timely's network threads panic when a peer process's connection breaks; the
            // workers then fail, and the run names the cause once.
            if guarded {
                WORKER_PANICKED.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let network = !guarded && network_thread(std::thread::current().name());
            if network && !WORKER_PANICKED.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = NETWORK_FAILURE.set(
                    message_of(info.payload())
                        .trim_start_matches(": ")
                        .to_string(),
                );
            }
            // A guarded worker's panic is reported once, by the run; with RUST_BACKTRACE set the
            // usual report (and backtrace) is printed too.
            if !(guarded || network) || std::env::var_os("RUST_BACKTRACE").is_some() {
                previous(info);
            }
        }));
    });
}

/// Whether a thread of this name is one of timely's network threads (`timely:send-N`,
/// `timely:recv-N`; its workers are `timely:work-N`, and a worker's panic is a bug's).
fn network_thread(name: Option<&str>) -> bool {
    name.is_some_and(|n| n.starts_with("timely:send-") || n.starts_with("timely:recv-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use timely::dataflow::ProbeHandle;
    use timely::dataflow::operators::{Input, Inspect, Probe};

    /// A worker thread's panic is not blamed on the network (timely names its workers
    /// `timely:work-N`: the hook once read every `timely:` thread as a network thread, so a
    /// bug's panic in a cluster said "a peer process of the cluster is gone").
    #[test]
    fn only_timelys_send_and_receive_threads_are_the_network() {
        assert!(network_thread(Some("timely:send-1")));
        assert!(network_thread(Some("timely:recv-0")));
        assert!(!network_thread(Some("timely:work-0")));
        assert!(!network_thread(Some("main")));
        assert!(!network_thread(None));
    }

    /// Worker 1 panics inside an operator while worker 0 waits on the shared frontier: without
    /// the guard worker 0 spins forever on its dead peer; with it both leave and the failure is
    /// named.
    #[test]
    fn a_panicking_worker_stops_every_worker() {
        let stop = Arc::new(AtomicBool::new(false));
        let health = Health::new(stop.clone());
        let h = health.clone();
        let started = Instant::now();
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let _fails_the_run = h.on_panic(worker.index());
            let probe = ProbeHandle::<u64>::new();
            let index = worker.index();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u64>>();
                stream
                    .inspect(move |x| {
                        if index == 1 && *x == 3 {
                            panic!("bad record {x}");
                        }
                    })
                    .probe_with(&probe);
                input
            });
            for round in 0..10u64 {
                input.send(round);
                input.advance_to(round + 1);
                while probe.less_than(input.time()) {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    if h.must_leave() {
                        return leave(worker);
                    }
                }
            }
        })
        .unwrap();
        let joined = guards.join();
        assert!(joined[0].is_ok() && joined[1].is_err(), "{joined:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let failure = health.failure().expect("the panic is the run's failure");
        assert!(
            failure.starts_with("worker 1 panicked at dataflows/src/health.rs:")
                && failure.ends_with(": bad record 3"),
            "{failure}"
        );
        assert!(stop.load(Ordering::SeqCst), "the sources are told to stop");
    }
}
