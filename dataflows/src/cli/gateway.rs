//! `tidings gateway`: the austin-compatible send API of one job ([`tidings_dataflows::gateway`])
//! until SIGTERM or Ctrl-C; `--hash-token` prints a token's `token_sha256`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tidings_dataflows::gateway::{Gateway, hash_token};
use tidings_sinks::util::server::Server;

use super::{Failure, load_for_reading};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The job whose Kafka topic requests go to (its `[gateway]` names the callers).
    #[arg(long, required_unless_present = "hash_token")]
    job: Option<PathBuf>,
    /// Listen here instead of `gateway.bind`.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Produce through these brokers instead of the job's `source.brokers`.
    #[arg(long, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
    /// Read a token on stdin and print the `token_sha256` of `[gateway.callers.NAME]`.
    #[arg(long, conflicts_with_all = ["job", "bind", "brokers"])]
    hash_token: bool,
}

pub fn run(args: GatewayArgs) -> Result<(), Failure> {
    if args.hash_token {
        let mut token = String::new();
        std::io::stdin()
            .read_to_string(&mut token)
            .map_err(|e| Failure::Failed(format!("stdin: {e}")))?;
        let token = token.trim_end_matches(['\r', '\n']);
        if token.is_empty() {
            return Err(Failure::Usage(
                "--hash-token: give the token on stdin (printf %s \"$TOKEN\" | tidings gateway --hash-token)".into(),
            ));
        }
        println!("{}", hash_token(token));
        return Ok(());
    }
    let path = args.job.expect("clap requires --job");
    let job = load_for_reading(&path)?;
    let bind = args.bind.unwrap_or(job.gateway.bind);
    if !bind.ip().is_loopback() && job.gateway.callers.is_empty() {
        return Err(Failure::Usage(format!(
            "--bind {bind}: not a loopback address, so the job needs [gateway.callers.NAME] with a token_sha256"
        )));
    }
    let gateway = Gateway::connect(&job, args.brokers.as_deref())
        .map_err(|e| Failure::Failed(format!("{e:#}")))?;
    let server = Server::start(bind, Arc::new(gateway).router())
        .map_err(|e| Failure::Failed(format!("--bind {bind}: {e}")))?;
    // Tests and scripts bound to port 0 read the address from here.
    println!("http://{}", server.addr);
    tracing::info!(
        "send API of job {} on http://{} (POST /send, /batchSend, /recall; GET /openapi.json)",
        job.file.name,
        server.addr
    );
    let signal = super::current_thread_runtime()?.block_on(super::serve::signalled());
    tracing::info!("stopping ({signal})");
    server.stop();
    Ok(())
}
