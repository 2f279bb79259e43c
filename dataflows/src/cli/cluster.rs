//! `tidings run JOB --local N`: an N-process timely cluster of the job on this machine, and its
//! supervisor. Each process is this binary's `run JOB -n N -p I -h HOSTFILE` (the same flags,
//! free localhost ports); the cluster is fail-stop, so when one process fails every process is
//! stopped and the cluster starts again from the newest complete checkpoint (5 attempts, with
//! backoff). A signal to the supervisor is passed to every process (a graceful stop).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidings_dataflows::Job;
use tidings_dataflows::serve::{exit_text, terminate};

use super::Failure;

/// Attempts of a local cluster before it gives up.
const ATTEMPTS: u32 = 5;

/// Runs the job as an `n`-process cluster here until every process ended well.
pub fn run_local(job: &Job, n: usize) -> Result<(), Failure> {
    if !(2..=64).contains(&n) {
        return Err(Failure::Usage(format!(
            "--local {n}: use 2 to 64 processes (one process is a plain run)"
        )));
    }
    let dir = job.state_dir.join("local-cluster");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::Failed(format!("{}: {e}", dir.display())))?;
    // Ctrl-C, SIGTERM or SIGHUP to the supervisor stops the cluster gracefully.
    let stop = Arc::new(AtomicBool::new(false));
    let signals = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("local cluster: {e}")))?;
    // A second signal halts: passed on as a second SIGTERM to every process, which are ended
    // before the supervisor itself gives up on them, so none is left behind.
    let health = tidings_dataflows::health::Health::new(stop.clone());
    tidings_dataflows::signals::handle_signals(&signals, stop.clone(), health.clone());
    let mut attempt = 1;
    loop {
        // Restarts resume from the checkpoint: a replay from the start is asked for once.
        let args = child_args(attempt > 1);
        let mut procs = start(&dir, n, &args)?;
        let supervised = supervise(&mut procs, &stop, &health);
        if let Some(why) = health.halted() {
            return Err(Failure::Failed(format!(
                "local cluster: {why}; every process was ended (the next run resumes from the newest complete checkpoint)"
            )));
        }
        match supervised {
            Ok(()) => return Ok(()),
            Err((who, status)) if status.code() == Some(2) => {
                return Err(Failure::Failed(format!(
                    "local cluster: process {who} refused the job ({})",
                    exit_text(status)
                )));
            }
            Err((who, status)) => {
                if attempt >= ATTEMPTS || stop.load(Ordering::SeqCst) {
                    return Err(Failure::Failed(format!(
                        "local cluster: process {who} failed ({}); gave up after {attempt} attempt(s)",
                        exit_text(status)
                    )));
                }
                let backoff = Duration::from_secs(1 << (attempt - 1).min(4));
                tracing::warn!(
                    "local cluster: process {who} failed ({}); every process stopped; starting all {n} again from the newest complete checkpoint in {backoff:?} (attempt {} of {ATTEMPTS})",
                    exit_text(status),
                    attempt + 1
                );
                std::thread::sleep(backoff);
                attempt += 1;
            }
        }
    }
}

/// This binary's arguments without `--local N` (and, on a restart, without `--from-start`).
/// The processes agree on one backlog line at each start (process 0's).
/// Taken as they were given: a path need not be UTF-8.
fn child_args(restart: bool) -> Vec<std::ffi::OsString> {
    without_local(std::env::args_os().skip(1), restart)
}

fn without_local(
    mut args: impl Iterator<Item = std::ffi::OsString>,
    restart: bool,
) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    while let Some(a) = args.next() {
        if a == "--local" {
            args.next();
        } else if a.as_encoded_bytes().starts_with(b"--local=") || (restart && a == "--from-start")
        {
        } else {
            out.push(a);
        }
    }
    out
}

/// Starts the `n` processes on free localhost ports (written to `dir/hosts`, their pids to
/// `dir/pids`, one per line in index order).
fn start(
    dir: &std::path::Path,
    n: usize,
    args: &[std::ffi::OsString],
) -> Result<Vec<Child>, Failure> {
    let failed = |what: String| Failure::Failed(format!("local cluster: {what}"));
    let mut ports = Vec::new();
    {
        // Held together so they differ; released just before the processes bind them.
        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| failed(format!("no free port: {e}")))?;
        for l in &listeners {
            ports.push(l.local_addr().map_err(|e| failed(e.to_string()))?.port());
        }
    }
    let hosts: PathBuf = dir.join("hosts");
    let lines: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hosts, lines).map_err(|e| failed(format!("{}: {e}", hosts.display())))?;
    let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
    let mut procs = Vec::new();
    for i in 0..n {
        // Its own process group: a Ctrl-C in the terminal reaches the supervisor alone, which
        // passes one SIGTERM on (a second signal would halt a process instead of draining).
        let child = Command::new(&exe)
            .process_group(0)
            .args(args)
            .args(["-n", &n.to_string(), "-p", &i.to_string(), "-h"])
            .arg(&hosts)
            .spawn()
            .map_err(|e| failed(format!("cannot start process {i}: {e}")));
        match child {
            Ok(c) => procs.push(c),
            Err(e) => {
                kill_all(&mut procs);
                return Err(e);
            }
        }
    }
    let pids: String = procs.iter().map(|c| format!("{}\n", c.id())).collect();
    let _ = std::fs::write(dir.join("pids"), pids);
    Ok(procs)
}

/// Waits for every process; on the first failure stops the rest (they are failing too: the
/// cluster lost a peer) and says which failed and how.
fn supervise(
    procs: &mut [Child],
    stop: &AtomicBool,
    health: &tidings_dataflows::health::Health,
) -> Result<(), (usize, ExitStatus)> {
    let mut ended: Vec<Option<ExitStatus>> = vec![None; procs.len()];
    let mut forwarded = false;
    let mut halted: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) && !forwarded {
            for (c, e) in procs.iter().zip(&ended) {
                if e.is_none() {
                    terminate(c.id());
                }
            }
            forwarded = true;
        }
        if health.halted().is_some() && halted.is_none() {
            for (c, e) in procs.iter().zip(&ended) {
                if e.is_none() {
                    terminate(c.id());
                }
            }
            halted = Some(Instant::now());
        }
        // The supervisor exits HALT_GRACE after a halt: its processes are ended before that.
        if halted.is_some_and(|h| h.elapsed() > HALTED_PROCESSES_GRACE) {
            kill_all(procs);
            return Ok(());
        }
        for (i, c) in procs.iter_mut().enumerate() {
            if ended[i].is_some() {
                continue;
            }
            if let Ok(Some(status)) = c.try_wait() {
                ended[i] = Some(status);
                if !status.success() {
                    // The others break with it; give them a moment to say so, then end them.
                    let grace = Instant::now();
                    while grace.elapsed() < Duration::from_secs(5)
                        && procs.iter_mut().any(|c| matches!(c.try_wait(), Ok(None)))
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    kill_all(procs);
                    return Err((i, status));
                }
            }
        }
        if ended.iter().all(Option::is_some) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long halted processes may take before the supervisor ends them (under the 10 s after
/// which a halted supervisor exits).
const HALTED_PROCESSES_GRACE: Duration = Duration::from_secs(7);

fn kill_all(procs: &mut [Child]) {
    for c in procs.iter_mut() {
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    /// A job file's path that is not UTF-8 is passed on as it was given.
    #[test]
    fn the_processes_get_the_arguments_without_local() {
        let path = OsString::from_vec(b"job\xff.toml".to_vec());
        let given = ["run".into(), path.clone(), "--local".into(), "2".into()];
        assert_eq!(
            super::without_local(given.into_iter(), false),
            vec![OsString::from("run"), path.clone()]
        );
        let given = ["run", "--local=2", "--from-start", "-w", "1"].map(OsString::from);
        assert_eq!(
            super::without_local(given.into_iter(), true),
            ["run", "-w", "1"].map(OsString::from)
        );
    }
}
