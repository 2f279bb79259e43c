//! The tidings job: the job file, the sources, the timely graph, and the `tidings` binary.
//!
//! # Layout
//!
//! - [`job`]: the job file (docs/job-file.md), parsed and checked.
//! - [`source`]: the file source (epochs, backpressure).
//! - [`kafka`]: the Kafka source (offsets committed behind the done frontier) and the producer.
//! - [`send`]: the send stage: timely ↔ tokio, capabilities held until sends finish.
//! - [`track`]: the tracking stage: capabilities held until rows are durable.
//! - [`run`]: the graph and the worker loop.
//! - [`health`]: a worker panic fails the run fast; halts.
//! - [`lock`]: one runner per job (`state_dir/LOCK`); the writable-directory probe.
//! - [`serve`]: `tidings serve`, the job service: supervised `tidings run` children, REST API.
//! - [`memory`]: process-wide memory settings (transparent huge pages off).
//! - [`signals`]: SIGINT/SIGTERM/SIGHUP drains, a second signal halts, the drain's bound.
//!
//! See `docs/ARCHITECTURE.md` for the graph and its invariants.

pub mod admin;
pub mod backlog;
pub mod campaign;
pub mod gateway;
pub mod health;
pub mod job;
pub mod kafka;
mod kafka_batch;
pub mod lock;
pub mod logging;
pub mod memory;
pub mod run;
pub mod send;
pub mod serve;
pub mod signals;
pub mod source;
pub mod state_store;
pub mod track;

pub use job::Job;
pub use run::{BACKLOG_AGE, Cluster, RunOptions, Summary, TrackingTarget, run};

/// Reads a JSON file of the state directory (written with `write_durably`); the default when
/// there is none. An error names the file, and for one that cannot be read as `T`, `if_bad`
/// (what to do about it).
pub(crate) fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    path: &std::path::Path,
    if_bad: &str,
) -> anyhow::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}{if_bad}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}
