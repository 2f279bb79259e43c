//! `tidings check`: check a job file and reach everything it names.

use std::path::PathBuf;

use tidings_sinks::account::Accounts;
use tidings_sinks::tracking::redis::RedisTrace;

use super::{Failure, load};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The job file.
    job: PathBuf,
}

pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let path = &args.job;
    let job = load(path)?;
    println!("{}: the job file is valid", path.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let accounts = Accounts::build(&job.file.accounts, &job.base, job.receivers.calling_code())
        .map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?;
    let mut failed = 0;
    let mut line = |what: String, r: Result<String, String>| match r {
        Ok(m) => println!("ok    {what}: {m}"),
        Err(e) => {
            failed += 1;
            println!("FAIL  {what}: {e}");
        }
    };
    for i in 0..accounts.len() {
        let a = accounts.get(i);
        let r = rt.block_on(a.check());
        line(format!("account {} ({})", a.name, a.provider()), r);
    }
    let stores = [
        ("tracking.dir", job.tracking_dir.object()),
        ("state_dir", job.state_store.as_ref()),
    ];
    for (key, o) in stores {
        let Some(o) = o else { continue };
        let r = o
            .probe()
            .map(|()| "writable".to_string())
            .map_err(|e| e.to_string());
        line(format!("{key} {}", o.url()), r);
    }
    let state_key = match job.state_store {
        Some(_) => "local_state_dir",
        None => "state_dir",
    };
    for (key, dir) in [
        ("tracking.dir", job.tracking_dir.local()),
        (state_key, Some(job.state_dir.as_path())),
    ] {
        let Some(dir) = dir else { continue };
        let r = tidings_dataflows::lock::probe_writable(key, dir)
            .map(|()| "writable".to_string())
            .map_err(|e| e.to_string());
        line(format!("{key} {}", dir.display()), r);
    }
    if let Some(k) = &job.kafka {
        let r = tidings_dataflows::kafka::reach(k);
        line(format!("kafka {}", k.brokers), r);
    }
    if let Some(url) = &job.file.tracking.redis {
        let r = RedisTrace::connect(url, &job.file.tracking.redis_prefix)
            .map(|_| "connected".to_string())
            .map_err(|e| e.to_string());
        line("redis (tracking)".to_string(), r);
    }
    if failed == 0 {
        Ok(())
    } else {
        tracing::error!("{failed} check(s) failed");
        Err(Failure::Silent)
    }
}
