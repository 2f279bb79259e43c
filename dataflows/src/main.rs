//! `tidings`: run a job, query its tracking tables.
//!
//! Each subcommand is a module of `cli` with its arguments and its `run`; here they are put
//! together, and a failure becomes its exit code.

/// mimalloc, not glibc malloc: send futures are allocated on timely worker threads and freed
/// on tokio threads, and glibc's per-thread arenas then keep growing (measured: peak RSS of the
/// 1M-request run).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

/// `println!` that ends quietly when the reader of stdout has gone (`tidings sql … | head`)
/// instead of panicking with "failed printing to stdout: Broken pipe".
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod cli;

use clap::{Parser, Subcommand};
use cli::Failure;

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "A message-push platform in one timely dataflow"
)]
struct Cli {
    /// How log lines on stderr are written: `text` (for a person) or `json` (one object per
    /// line, for a log collector).
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job until its source ends (file) or Ctrl-C.
    Run(cli::run::RunArgs),
    /// Check a job file and reach everything it names: every account's provider (SMTP
    /// greets and logs in; HTTP providers are reached, nothing is sent), the Kafka brokers
    /// and Redis. Secrets are never shown.
    Check(cli::check::CheckArgs),
    /// Produce send requests to the job's Kafka topic.
    Send(cli::send::SendArgs),
    /// A job's campaigns (`cron` templates with a crowd): list them, or send one by hand.
    Campaign(cli::campaign::CampaignArgs),
    /// Trace a message, a receiver or a template in the job's Redis tracking (real time).
    Trace(cli::trace::TraceArgs),
    /// Run SQL over a job's tracking tables `events` and `dead_letters`.
    Sql(cli::sql::SqlArgs),
    /// Run a named report (`sql/queries/NAME.sql`) over a job's tracking tables.
    Report(cli::report::ReportArgs),
    /// Ask a running job's admin API about its live state.
    State(cli::state::StateArgs),
    /// Run the provider simulator (HTTP): it checks each provider's signature and fields as
    /// the real API does, and prints what it receives (`examples/simulated/job.toml` uses it).
    Simulator(cli::simulator::SimulatorArgs),
    /// Per-stage rates and backlogs of a running job, refreshed every second.
    Top(cli::top::TopArgs),
    /// Run the job service: a REST API that starts, supervises (restarting crashed jobs with
    /// backoff), stops and lists jobs, each a `tidings run` child; resumes its jobs on restart.
    Serve(cli::serve::ServeArgs),
    /// Serve a job's austin-compatible HTTP send API (`POST /send`, `/batchSend`, `/recall`),
    /// producing to its Kafka topic and answering the messageIds.
    Gateway(cli::gateway::GatewayArgs),
    /// Submit a job file to a running `tidings serve`.
    Submit(cli::jobs::SubmitArgs),
    /// List the jobs of a running `tidings serve`.
    Jobs(cli::jobs::JobsArgs),
    /// Show one job of a running `tidings serve` (with its live state when it has `[admin]`).
    Job(cli::jobs::NameArgs),
    /// Stop a job of a running `tidings serve` gracefully (final checkpoint, offsets committed).
    Stop(cli::jobs::NameArgs),
    /// Restart a job of `tidings serve` (a graceful stop, then a start from its checkpoint).
    Restart(cli::jobs::NameArgs),
    /// Stop a job of `tidings serve` and forget it.
    Delete(cli::jobs::NameArgs),
    /// Change a running job's templates through `tidings serve` (put, disable, list): each
    /// change takes effect at its event time (docs/templates.md "Live changes").
    Template(cli::jobs::TemplateArgs),
}

fn main() -> ExitCode {
    let huge_pages = tidings_dataflows::memory::init();
    let cli = Cli::parse();
    tidings_dataflows::logging::init(match cli.log_format {
        LogFormatArg::Text => tidings_dataflows::logging::LogFormat::Text,
        LogFormatArg::Json => tidings_dataflows::logging::LogFormat::Json,
    });
    tracing::debug!(?huge_pages, "transparent huge pages");
    let outcome = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Send(args) => cli::send::run(args),
        Command::Campaign(args) => cli::campaign::run(args),
        Command::Trace(args) => cli::trace::run(args),
        #[cfg(feature = "sql")]
        Command::Sql(args) => cli::sql::run(args),
        #[cfg(feature = "sql")]
        Command::Report(args) => cli::report::run(args),
        #[cfg(not(feature = "sql"))]
        Command::Sql(_) | Command::Report(_) => Err(Failure::Usage(cli::NO_SQL.into())),
        Command::State(args) => cli::state::run(args),
        Command::Simulator(args) => cli::simulator::run(args),
        Command::Top(args) => cli::top::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Gateway(args) => cli::gateway::run(args),
        Command::Submit(args) => cli::jobs::submit(args),
        Command::Jobs(args) => cli::jobs::jobs(args),
        Command::Job(args) => cli::jobs::job(args),
        Command::Stop(args) => cli::jobs::stop(args),
        Command::Restart(args) => cli::jobs::restart(args),
        Command::Delete(args) => cli::jobs::delete(args),
        Command::Template(args) => cli::jobs::template(args),
    };
    exit_code(outcome)
}

/// The one place a failure is shown and becomes an exit code: 2 for a bad flag or job file,
/// 1 for anything else that failed.
fn exit_code(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            tracing::error!("{message}");
            ExitCode::from(2)
        }
        Err(Failure::Problems(problems)) => {
            for p in problems {
                tracing::error!("{p}");
            }
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
        Err(Failure::Silent) => ExitCode::FAILURE,
    }
}
