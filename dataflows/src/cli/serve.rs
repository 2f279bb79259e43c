//! `tidings serve`: the job service ([`tidings_dataflows::serve`]) until SIGTERM or Ctrl-C,
//! which stop its jobs gracefully (they resume when the service starts again).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tidings_dataflows::serve::{Supervisor, TICK, api};
use tidings_sinks::util::server::Server;

use super::Failure;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The REST API's address (HOST:PORT; port 0 picks one, written to STATE_DIR/serve.addr).
    #[arg(long, default_value = "127.0.0.1:7070")]
    bind: SocketAddr,
    /// The service's state (`serve.json`) and its jobs' logs (`logs/NAME.log`).
    #[arg(long, default_value = "tidings-serve")]
    state_dir: PathBuf,
    /// Bearer token every request must carry; required unless --bind is a loopback address.
    #[arg(long)]
    token: Option<String>,
    /// A second, read-only token (support staff): it may read jobs, state, traces and run
    /// read-only SQL in the console, and change nothing.
    #[arg(long, requires = "token")]
    read_token: Option<String>,
    /// Run submitted jobs as one timely cluster over these service nodes: a file with every
    /// node's REST address (`host:port`), one per line, in process order (this node is the
    /// line equal to --bind, or --peer-index). Every node is started with the same file and
    /// token; jobs are submitted by a path every node reads, their state_dir and tracking.dir
    /// shared (a shared file system, or s3:// prefixes).
    #[arg(long, value_name = "FILE")]
    peers: Option<PathBuf>,
    /// This node's line in --peers, from 0 (when --bind is not written as in the file).
    #[arg(long, value_name = "I", requires = "peers")]
    peer_index: Option<usize>,
    /// The most memory the console's queries (trace, reports, SQL) may hold at once, in MiB:
    /// sorts and aggregations spill to disk beyond it, and a query that cannot is refused
    /// ("Resources exhausted") rather than growing the service.
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..))]
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    sql_memory_mb: u64,
}

pub fn run(args: ServeArgs) -> Result<(), Failure> {
    let token = args.token.filter(|t| !t.is_empty());
    if token.is_none() && args.read_token.as_deref().is_some_and(|t| !t.is_empty()) {
        // Without an operators' token every request is an operator's: the read-only token
        // would restrict nothing.
        return Err(Failure::Usage(
            "--read-token needs a non-empty --token: without one anyone may stop jobs".into(),
        ));
    }
    if !args.bind.ip().is_loopback() && token.is_none() {
        return Err(Failure::Usage(format!(
            "--bind {}: not a loopback address, so --token is required",
            args.bind
        )));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Failed(format!("cannot find the tidings binary: {e}")))?;
    let supervisor = Supervisor::open(&args.state_dir, exe)?;
    #[cfg(feature = "sql")]
    tidings_sql::limit_memory(
        usize::try_from(args.sql_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
    );
    if let Some(file) = &args.peers {
        let peers = tidings_dataflows::serve::peers::Peers::load(
            file,
            &args.bind.to_string(),
            args.peer_index,
            token.clone(),
        )
        .map_err(Failure::Usage)?;
        tracing::info!(
            "node {} of {}: submitted jobs run as a cluster over {}",
            peers.me,
            peers.apis.len(),
            peers.apis.join(", ")
        );
        supervisor.set_peers(peers);
    }
    let server = Server::start(
        args.bind,
        api::router(
            supervisor.clone(),
            api::Tokens {
                admin: token.as_deref().map(Into::into),
                read: args
                    .read_token
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .map(Into::into),
            },
        ),
    )
    .map_err(|e| Failure::Failed(format!("--bind {}: {e}", args.bind)))?;
    std::fs::write(args.state_dir.join("serve.addr"), server.addr.to_string())
        .map_err(|e| Failure::Failed(format!("{}: {e}", args.state_dir.display())))?;
    tracing::info!(
        "job service on http://{}/ (console; REST API under /jobs; state in {})",
        server.addr,
        args.state_dir.display()
    );

    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (supervisor, done) = (supervisor.clone(), done.clone());
        std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    supervisor.tick();
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| Failure::Failed(e.to_string()))?
    };
    let signal = super::current_thread_runtime()?.block_on(signalled());
    tracing::info!("stopping ({signal}): stopping the jobs gracefully");
    supervisor.shutdown();
    done.store(true, Ordering::SeqCst);
    let _ = ticker.join();
    server.stop();
    tracing::info!("job service stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM; its name.
pub(super) async fn signalled() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
