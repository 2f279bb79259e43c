//! `state_dir = "s3://bucket/prefix"`: the checkpoints kept on an object store, so processes
//! of a cluster on machines without a shared file system restore from one place. Each part is
//! written to the local state directory first (as always), then copied to
//! `prefix/checkpoints/<cut>/<part>` before it counts as written (a part over 16 MiB in a
//! multipart upload, and fetched back in ranges, so its size is not bound by one request's
//! timeout or held in memory); the manifest follows every
//! part; a run fetches the newest complete cut from there before it starts. The run lock is a
//! lease beside them ([`crate::lock::StoreLock`]).

use std::io;
use std::path::Path;

use tidings_operators::checkpoint::Mirror;
use tidings_sinks::tracking::ObjectDir;

use crate::lock::LeaseClock;

/// The checkpoints' [`Mirror`] on an object store.
#[derive(Debug, Clone)]
pub struct ObjectMirror {
    dir: ObjectDir,
    /// The job's lock on the store: nothing is written once it may have run out.
    lease: Option<LeaseClock>,
}

const CHECKPOINTS: &str = "checkpoints";

impl ObjectMirror {
    /// The mirror under `dir/checkpoints`, written while `lease` is held.
    pub fn new(dir: ObjectDir, lease: Option<LeaseClock>) -> ObjectMirror {
        ObjectMirror { dir, lease }
    }

    fn rel(rel: &str) -> String {
        format!("{CHECKPOINTS}/{rel}")
    }

    /// Nothing is written once the job's lock on the store may have run out.
    fn held(&self) -> io::Result<()> {
        if self.lease.as_ref().is_some_and(|l| !l.held()) {
            return Err(io::Error::other(format!(
                "{}/LOCK: the job's lock on the store may have run out (not renewed in time); no checkpoint is written without it",
                self.dir.url()
            )));
        }
        Ok(())
    }
}

impl Mirror for ObjectMirror {
    fn list(&self) -> io::Result<Vec<String>> {
        let prefix = format!("{CHECKPOINTS}/");
        Ok(self
            .dir
            .list(CHECKPOINTS)?
            .into_iter()
            .filter_map(|o| o.rel.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }

    fn put(&self, rel: &str, from: &Path) -> io::Result<()> {
        self.held()?;
        self.dir.put_file(&Self::rel(rel), from)
    }

    fn get(&self, rel: &str, to: &Path) -> io::Result<()> {
        self.dir.get_file(&Self::rel(rel), to)
    }

    fn delete(&self, rel: &str) -> io::Result<()> {
        self.dir.delete(&Self::rel(rel))
    }

    fn copy(&self, from: &str, to: &str) -> io::Result<()> {
        self.held()?;
        self.dir.copy(&Self::rel(from), &Self::rel(to))
    }
}
