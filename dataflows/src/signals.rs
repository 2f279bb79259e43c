//! Stopping a run: SIGINT, SIGTERM and SIGHUP drain it (the sources read no more; what was
//! read is sent, tracked and parked); a second signal during the drain halts it at once (the
//! workers leave; tracking writes what it holds); a drain shows its progress every
//! [`PROGRESS_EVERY`] and is bounded: past the drain timeout the run halts the same way, and the
//! rest waits in Kafka or in the file, read again from the last checkpoint by the next run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::health::Health;

/// How often a drain says how far it is.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long after a halt the process is ended if its workers have not left by then.
const HALT_GRACE: Duration = Duration::from_secs(10);

/// Set by `tidings serve` for its children, whose stdin is a pipe it holds: the pipe closing
/// (the service gone, however it ended) is a stop, as SIGTERM.
pub const STOP_WITH_STDIN: &str = "TIDINGS_STOP_WITH_STDIN";

/// Describes what a drain still waits for, e.g. `120 received, 80 done`.
pub type Progress = Arc<dyn Fn() -> String + Send + Sync>;

/// Listens for SIGINT, SIGTERM and SIGHUP on `runtime`: the first raises `stop`, the second
/// halts the run through `health` (and ends the process if it has not ended
/// [`HALT_GRACE`] later).
pub fn handle_signals(
    runtime: &tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
) {
    runtime.spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                (SignalKind::interrupt(), "SIGINT"),
                (SignalKind::terminate(), "SIGTERM"),
                (SignalKind::hangup(), "SIGHUP"),
            ];
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
            for (kind, name) in kinds {
                match signal(kind) {
                    Ok(mut s) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            while s.recv().await.is_some() {
                                if tx.send(name).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    Err(e) => tracing::warn!("cannot handle {name}: {e}"),
                }
            }
            if std::env::var_os(STOP_WITH_STDIN).is_some() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut buf = [0u8; 64];
                    // Whatever is written is ignored; the end of the pipe is the stop.
                    loop {
                        match std::io::stdin().read(&mut buf) {
                            Ok(0) => break,
                            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                            _ => {}
                        }
                    }
                    let _ = tx.send("its service's pipe closed");
                });
            }
            drop(tx);
            let mut seen = 0;
            while let Some(name) = rx.recv().await {
                seen += 1;
                if seen == 1 && !stop.load(Ordering::SeqCst) {
                    tracing::info!(
                        "stopping ({name}): draining what was read, flushing tracking; send it again to stop at once"
                    );
                    stop.store(true, Ordering::SeqCst);
                } else {
                    tracing::info!("stopping at once ({name}): writing what is owed");
                    health.halt(format!("stopped at once by a second signal ({name})"));
                    std::thread::spawn(|| {
                        std::thread::sleep(HALT_GRACE);
                        tracing::error!(
                            "the workers did not stop within {} s of the halt; exiting",
                            HALT_GRACE.as_secs()
                        );
                        std::process::exit(1);
                    });
                }
            }
        }
        #[cfg(not(unix))]
        {
            let mut seen = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                seen += 1;
                if seen == 1 {
                    tracing::info!("stopping: draining what was read, flushing tracking");
                    stop.store(true, Ordering::SeqCst);
                } else {
                    health.halt("stopped at once by a second Ctrl-C");
                }
            }
        }
    });
}

/// Watches a drain: once `stop` is raised, prints `progress` every [`PROGRESS_EVERY`] and
/// halts the run `timeout` after the stop. Ends when `finished` is raised.
pub fn watch_drain(
    runtime: &tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    health: Arc<Health>,
    timeout: Option<Duration>,
    progress: Progress,
) {
    runtime.spawn(async move {
        let tick = Duration::from_millis(50);
        while !stop.load(Ordering::SeqCst) {
            if finished.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(tick).await;
        }
        let since = Instant::now();
        let mut shown = Instant::now();
        loop {
            if finished.load(Ordering::SeqCst) || health.must_leave() {
                return;
            }
            let waited = since.elapsed();
            if let Some(t) = timeout
                && waited >= t
            {
                tracing::info!(
                    "stopping at once: the drain timeout ({} s) passed; {}",
                    t.as_secs_f64(),
                    progress()
                );
                health.halt(format!(
                    "the drain did not finish within --drain-timeout {} s",
                    t.as_secs_f64()
                ));
                return;
            }
            if shown.elapsed() >= PROGRESS_EVERY {
                let bound = timeout
                    .map(|t| format!(" of {} s", t.as_secs()))
                    .unwrap_or_default();
                tracing::info!("draining for {} s{bound}: {}", waited.as_secs(), progress());
                shown = Instant::now();
            }
            tokio::time::sleep(tick).await;
        }
    });
}
