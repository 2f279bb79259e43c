//! One job, one runner: `state_dir/LOCK`, held with an OS advisory lock for the whole run and
//! holding the runner's pid. A second `tidings run` of the same job (the same state directory)
//! is refused with one line naming the holder. The lock goes with the process, however it
//! ends (the file stays; a stale pid in it means nothing once the lock is free).
//!
//! Also here: [`probe_writable`], the check that a directory the job writes (tracking, state)
//! can take a file, for `tidings check` and the start of a run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The held lock: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The job's lock on the object store, when its state is there: given up before the local
    /// lock, so a runner that takes the local lock next finds the store's free too.
    store: Option<StoreLock>,
}

impl RunLock {
    /// Takes `state_dir/LOCK`, or says who holds it.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<RunLock> {
        RunLock::acquire_named(state_dir, "LOCK")
    }

    /// Takes `state_dir/NAME` (process `p > 0` of a cluster takes `LOCK-p`), or says who
    /// holds it.
    pub fn acquire_named(state_dir: &Path, name: &str) -> anyhow::Result<RunLock> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| anyhow::anyhow!("state dir {}: {e}", state_dir.display()))?;
        let path = state_dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {holder}")
                };
                anyhow::bail!(
                    "{}: this job is already running ({who} holds the lock); stop it first, or give this run its own state_dir",
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("{}: cannot lock: {e}", path.display())
            }
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_data()?;
        Ok(RunLock {
            file,
            path,
            store: None,
        })
    }

    /// Holds `store` too, given up before this lock.
    pub fn hold_store(&mut self, store: StoreLock) {
        self.store = Some(store);
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = self.file.unlock();
    }
}

/// The run lock of a job whose `state_dir` is on an object store: a lease object
/// (`LOCK`, `LOCK-p`) beside the checkpoints, taken by a conditional PUT and renewed every
/// [`STORE_LOCK_TTL`] / 3 by a thread of its own. Its owner is the id kept in the local state
/// directory (`store-lock.id`, made once: random, with the host and path to read): runners
/// elsewhere are refused while it has not run out; a runner with the same local state
/// directory (which holds the local lock, so the old runner is gone) takes it over at once,
/// so a restart after a crash does not wait. Held only while renewed in time: a runner whose
/// lease may have run out writes no checkpoint ([`LeaseClock`]) and fails.
#[derive(Debug)]
pub struct StoreLock {
    dir: tidings_sinks::tracking::ObjectDir,
    name: String,
    owner: String,
    clock: LeaseClock,
    stop: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Disconnected once the renewal thread has ended: the lease is released after it, so a
    /// renewal in flight cannot put the lease back after the release.
    renewing: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// What to check when an object store does not answer.
pub const STORE_HINT: &str = "check the bucket and AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_ALLOW_HTTP=true for an http:// endpoint)";

/// How long a store lock lasts without a renewal.
pub const STORE_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How much earlier than the store a runner counts its lease as run out (requests take time).
const STORE_LOCK_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Until when this runner surely holds its store lock: the start of the last renewal that
/// succeeded plus the lease, less a margin.
#[derive(Clone, Debug)]
pub struct LeaseClock(std::sync::Arc<std::sync::Mutex<std::time::Instant>>);

impl LeaseClock {
    fn renewed(&self, asked: std::time::Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            asked + STORE_LOCK_TTL - STORE_LOCK_MARGIN;
    }

    /// Whether the lease is surely still this runner's.
    pub fn held(&self) -> bool {
        std::time::Instant::now() < *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This local state directory's owner id for store locks: read from `store-lock.id`, made the
/// first time.
fn owner_id(local: &Path) -> anyhow::Result<String> {
    use std::hash::{BuildHasher, Hasher};
    let path = local.join("store-lock.id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    let drawn = h.finish();
    let local_shown = std::fs::canonicalize(local).unwrap_or_else(|_| local.to_path_buf());
    let id = format!("{drawn:016x}@{host}:{}", local_shown.display());
    // The processes of a cluster on one machine share the directory and may all start here
    // at once: each writes its id aside under a name of its own, and the first to link it
    // in place wins (a link never replaces a file); the others read the winner's.
    let named = |p: &Path, e: std::io::Error| anyhow::anyhow!("{}: {e}", p.display());
    let aside = local.join(format!(".store-lock.id.{drawn:016x}"));
    let linked = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&aside)?;
        f.write_all(id.as_bytes())?;
        f.sync_data()?;
        std::fs::hard_link(&aside, &path)
    })();
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => {
            tidings_operators::checkpoint::sync_parent(&path).map_err(|e| named(&path, e))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let theirs = std::fs::read_to_string(&path).map_err(|e| named(&path, e))?;
            if !theirs.trim().is_empty() {
                return Ok(theirs.trim().to_string());
            }
            // An empty file (of no writer of this code): replaced.
            tidings_operators::checkpoint::write_durably(&path, id.as_bytes())
                .map_err(|e| named(&path, e))?;
            Ok(id)
        }
        Err(e) => Err(named(&path, e)),
    }
}

impl StoreLock {
    /// Takes lease `name` of `dir` for the runner whose local state directory is `local`, or
    /// says who holds it; `lost` is called (once) if the lease is lost later.
    pub fn acquire(
        dir: &tidings_sinks::tracking::ObjectDir,
        name: &str,
        local: &Path,
        lost: impl Fn(String) + Send + 'static,
    ) -> anyhow::Result<StoreLock> {
        let owner = owner_id(local)?;
        let url = format!("{}/{name}", dir.url());
        let asked = std::time::Instant::now();
        if !dir
            .lease(name, &owner, STORE_LOCK_TTL)
            .map_err(|e| anyhow::anyhow!("state_dir {e}; {STORE_HINT}"))?
        {
            let holder = dir
                .get(name)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|l| l["owner"].as_str().map(str::to_string))
                .unwrap_or_else(|| "another runner".into());
            anyhow::bail!(
                "{url}: this job is already running ({holder} holds the lock, renewed every {} s); stop it first, or give this run its own state_dir",
                STORE_LOCK_TTL.as_secs() / 3
            );
        }
        let clock = LeaseClock(std::sync::Arc::new(std::sync::Mutex::new(asked)));
        clock.renewed(asked);
        let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (d, n, o, flag, c) = (
            dir.clone(),
            name.to_string(),
            owner.clone(),
            stop.clone(),
            clock.clone(),
        );
        // Waited for at most a few seconds when the lock goes (`renewing`): a renewal stuck on
        // an unreachable store must not hold up the end of the run. It stops at its next turn.
        let (renewing_tx, renewing) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("tidings-lock".into())
            .spawn(move || {
                let _renewing = renewing_tx;
                loop {
                    let (m, cv) = &*flag;
                    let stopped = m.lock().unwrap_or_else(|p| p.into_inner());
                    let (stopped, _) = cv
                        .wait_timeout_while(stopped, STORE_LOCK_TTL / 3, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    let asked = std::time::Instant::now();
                    let renewal = d.lease(&n, &o, STORE_LOCK_TTL);
                    if *flag.0.lock().unwrap_or_else(|p| p.into_inner()) {
                        return;
                    }
                    match renewal {
                        Ok(true) => c.renewed(asked),
                        Ok(false) => {
                            return lost(format!(
                                "{url}: the job's lock was taken by another runner (this one could not renew it in time); stopped"
                            ));
                        }
                        Err(e) if !c.held() => {
                            return lost(format!(
                                "{url}: the job's lock could not be renewed in time ({e}); stopped, another runner may take the job"
                            ));
                        }
                        Err(e) => tracing::warn!("renewing the job's lock: {e}"),
                    }
                }
            })?;
        Ok(StoreLock {
            dir: dir.clone(),
            name: name.to_string(),
            owner,
            clock,
            stop,
            renewing: std::sync::Mutex::new(renewing),
        })
    }

    /// Until when the lease is surely held (the checkpoints' mirror checks it).
    pub fn clock(&self) -> LeaseClock {
        self.clock.clone()
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let (m, cv) = &*self.stop;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        // A renewal in flight ends first (else it could write the lease again after the
        // release, holding the next runner off for a lease's time).
        let _ = self
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv_timeout(std::time::Duration::from_secs(5));
        // Given up for the next runner, waiting at most a few seconds for the store.
        let (dir, name, owner) = (self.dir.clone(), self.name.clone(), self.owner.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let released = std::thread::Builder::new()
            .name("tidings-unlock".into())
            .spawn(move || {
                let _ = tx.send(dir.release(&name, &owner));
            });
        if released.is_ok() {
            match rx.recv_timeout(std::time::Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("releasing the job's lock: {e}"),
                Err(_) => tracing::warn!(
                    "releasing the job's lock: the store did not answer in 5 s; it runs out in {} s",
                    STORE_LOCK_TTL.as_secs()
                ),
            }
        }
    }
}

/// Checks that `dir` (created if missing) takes a new file: creates, syncs and removes a probe
/// file. The error names `key` (e.g. `tracking.dir`) and the path.
pub fn probe_writable(key: &str, dir: &Path) -> anyhow::Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        anyhow::anyhow!(
            "{key} {}: {what}: {e}; make it a writable directory",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create", e))?;
    let probe = dir.join(format!(".tidings-probe-{}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| {
        f.write_all(b"probe\n")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written.map_err(|e| fail("cannot write a file", e))?;
    removed.map_err(|e| fail("cannot remove a file", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Processes of one machine starting at once in a fresh directory all take one owner id
    /// (none fails, none is left with an id the file does not hold).
    #[test]
    fn runners_starting_at_once_share_one_owner_id() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let ids: Vec<String> = std::thread::scope(|s| {
                let all: Vec<_> = (0..6)
                    .map(|_| s.spawn(|| super::owner_id(dir.path()).unwrap()))
                    .collect();
                all.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let held = std::fs::read_to_string(dir.path().join("store-lock.id")).unwrap();
            assert!(ids.iter().all(|id| *id == held), "{ids:?} vs {held}");
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(names.len(), 1, "nothing left aside: {names:?}");
            assert_eq!(super::owner_id(dir.path()).unwrap(), held);
        }
    }

    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(first.path()).unwrap().trim(), pid);
        let second = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            second.contains(&format!("pid {pid} holds the lock")) && second.contains("LOCK"),
            "{second}"
        );
        drop(first);
        RunLock::acquire(dir.path()).expect("free again");
    }

    #[test]
    fn probe_names_the_key_and_path_of_an_unwritable_dir() {
        let dir = tempfile::tempdir().unwrap();
        probe_writable("tracking.dir", &dir.path().join("a/b")).unwrap();
        assert!(
            std::fs::read_dir(dir.path().join("a/b"))
                .unwrap()
                .next()
                .is_none()
        );
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let e = probe_writable("tracking.dir", &file.join("t"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("tracking.dir {}/t: cannot create", file.display())),
            "{e}"
        );
    }
}
