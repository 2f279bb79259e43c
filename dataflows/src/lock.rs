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
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
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
