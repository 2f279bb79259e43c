//! `tidings`: run a job, query its tracking tables.

/// mimalloc, not glibc malloc: send futures are allocated on timely worker threads and freed
/// on tokio threads, and glibc's per-thread arenas then keep growing (measured: peak RSS of the
/// 1M-request run).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
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

use clap::{Parser, Subcommand, ValueEnum};
use tidings_dataflows::job::{LoadMode, MAX_WORKERS};
use tidings_dataflows::{Job, RunOptions, Summary, run};
use tidings_model::State;
use tidings_operators::Clock;
use tidings_sinks::util::http::shown_url;

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "A message-push platform in one timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job until its source ends (file) or Ctrl-C.
    Run {
        /// The job file.
        job: PathBuf,
        /// Timely worker threads (overrides the job's `workers`).
        #[arg(short, long)]
        workers: Option<usize>,
        /// Pretend the wall clock reads this instant (RFC 3339), for replays and tests: it
        /// stamps bare lines' event time, the `time` column and end-of-run releases.
        #[arg(long)]
        now: Option<String>,
        /// Kafka source: stop gracefully once every partition is read to its end and no record
        /// has arrived for this many seconds (counted from the start while the brokers cannot
        /// be reached; time spent held back by backpressure does not count).
        #[arg(long, value_name = "SECS")]
        idle_exit: Option<f64>,
        /// Start without the newest checkpoint: read the source from its start, with fresh
        /// dedup windows and no parked messages (a deliberate replay; message ids repeat).
        #[arg(long)]
        from_start: bool,
        /// A graceful stop (Ctrl-C, SIGTERM, SIGHUP) drains at most this long, then halts: the
        /// rest is read again from the last checkpoint by the next run. Default 30.
        #[arg(long, value_name = "SECS")]
        drain_timeout: Option<f64>,
    },
    /// Check a job file and reach everything it names: every account's provider (SMTP
    /// greets and logs in; HTTP providers are reached, nothing is sent), the Kafka brokers
    /// and Redis. Secrets are never shown.
    Check {
        /// The job file.
        job: PathBuf,
    },
    /// Produce send requests to the job's Kafka topic.
    Send {
        /// The job whose topic to produce to.
        #[arg(long)]
        job: PathBuf,
        /// The template of a single request.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        template: Option<i64>,
        /// Receivers of a single request, comma-separated.
        #[arg(long, requires = "template")]
        to: Option<String>,
        /// A placeholder value of a single request, `name=value` (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// A JSON-lines file of bare requests or kcat `-J` envelopes (`ts` becomes the record
        /// timestamp, `key` the record key).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Trace a message, a receiver or a template in the job's Redis tracking (real time).
    Trace {
        /// The job whose `tracking.redis` to read.
        #[arg(long, conflicts_with = "redis", required_unless_present = "redis")]
        job: Option<PathBuf>,
        /// A Redis URL, instead of a job.
        #[arg(long)]
        redis: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        #[command(subcommand)]
        what: TraceWhat,
    },
    /// Run SQL over a job's tracking tables `events` and `dead_letters`.
    Sql {
        /// The job whose tracking directory to read.
        #[arg(long, conflicts_with = "dir")]
        job: Option<PathBuf>,
        /// A tracking directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Leave out files of the tables that are not readable Parquet (each is named in a
        /// warning) instead of failing.
        #[arg(long)]
        skip_corrupt: bool,
        /// The statement. Without one, an interactive shell (statements end with `;`).
        query: Option<String>,
    },
    /// Run a named report (`sql/queries/NAME.sql`) over a job's tracking tables.
    Report {
        /// The report; `--list` shows them.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the reports.
        #[arg(long)]
        list: bool,
        /// The job whose tracking directory to read (and whose time zone to use).
        #[arg(long, conflicts_with = "dir")]
        job: Option<PathBuf>,
        /// A tracking directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only this local date, `YYYY-MM-DD`.
        #[arg(long)]
        date: Option<String>,
        /// Only this template id.
        #[arg(long)]
        template: Option<i64>,
        /// Only this receiver.
        #[arg(long)]
        receiver: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Leave out files of the tables that are not readable Parquet (each is named in a
        /// warning) instead of failing.
        #[arg(long)]
        skip_corrupt: bool,
    },
    /// Ask a running job's admin API about its live state.
    State {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        what: Option<StateWhat>,
    },
    /// Run the provider simulator (HTTP): it checks each provider's signature and fields as
    /// the real API does, and prints what it receives (`examples/simulated/job.toml` uses it).
    Simulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18080")]
        bind: String,
        /// Answer a provider with a fault: `PROVIDER=STATUS[xTIMES][@DELAY_MS]` (repeatable),
        /// e.g. `tencent=503x2`, `feishu=0@3000` (slow).
        #[arg(long = "fault")]
        faults: Vec<String>,
    },
    /// Per-stage rates and backlogs of a running job, refreshed every second.
    Top {
        #[command(flatten)]
        target: AdminTarget,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many frames.
        #[arg(long)]
        frames: Option<u64>,
    },
}

/// Which running job to ask.
#[derive(clap::Args)]
struct AdminTarget {
    /// The job (its `admin` section, and the address it wrote to its state directory).
    #[arg(long, global = true)]
    job: Option<PathBuf>,
    /// The admin API's address, HOST:PORT, instead of a job.
    #[arg(long, global = true)]
    addr: Option<String>,
    /// Bearer token (default: the job's `admin.token`).
    #[arg(long, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum StateWhat {
    /// Everything at once (the default).
    Summary,
    /// The content dedup window of (template, receiver, rendered content).
    Content {
        /// The template id.
        #[arg(long)]
        template: i64,
        /// The receiver.
        #[arg(long)]
        receiver: String,
        /// A placeholder value, `name=value` (repeatable), as in the request.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Judge a delivery at this event time (RFC 3339 or ms). Default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// The frequency counters of (receiver, channel).
    Frequency {
        /// The receiver.
        #[arg(long)]
        receiver: String,
        /// The channel (e.g. sms); or give --template.
        #[arg(long, required_unless_present = "template")]
        channel: Option<String>,
        /// A template, for its channel.
        #[arg(long)]
        template: Option<i64>,
        /// Judge a delivery at this event time (RFC 3339 or ms). Default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Keys, entries, bytes and the oldest entry of each keyed operator.
    Operators,
    /// Parked night_delay deliveries.
    Park,
    /// Rate limiters and sends per account.
    Accounts,
    /// Kafka positions, lag, last checkpoint.
    Source,
}

#[derive(Subcommand)]
enum TraceWhat {
    /// Every state every receiver of one message reached.
    Message {
        /// The messageId.
        id: String,
    },
    /// Every state a receiver's messages reached (kept until the end of the local day).
    User {
        /// The receiver (phone, email, user id...).
        receiver: String,
    },
    /// The template's funnel: receivers per state on one day (austin's businessId view).
    Template {
        /// The template id.
        id: i64,
        /// The local date, `YYYY-MM-DD`. Default: today in the job's time zone.
        #[arg(long)]
        date: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            job,
            workers,
            now,
            idle_exit,
            from_start,
            drain_timeout,
        } => run_job(job, workers, now, idle_exit, from_start, drain_timeout),
        Command::Send {
            job,
            template,
            to,
            vars,
            file,
        } => send(job, template, to, vars, file),
        Command::Sql {
            job,
            dir,
            format,
            skip_corrupt,
            query,
        } => sql(job, dir, format, corrupt(skip_corrupt), query.as_deref()),
        Command::Report {
            name,
            list,
            job,
            dir,
            date,
            template,
            receiver,
            format,
            skip_corrupt,
        } => report(
            name,
            list,
            job,
            dir,
            tidings_sql::reports::Params {
                date,
                template,
                receiver,
                timezone: None,
            },
            format,
            corrupt(skip_corrupt),
        ),
        Command::Simulator { bind, faults } => simulator(&bind, &faults),
        Command::Check { job } => check(&job),
        Command::State { target, what } => state(target, what.unwrap_or(StateWhat::Summary)),
        Command::Top {
            target,
            interval,
            frames,
        } => match resolve(&target) {
            Ok((addr, token)) => match cli::top::run(
                &addr,
                token.as_deref(),
                std::time::Duration::from_secs_f64(interval.max(0.1)),
                frames,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::Trace {
            job,
            redis,
            format,
            what,
        } => trace(job, redis, format, what),
    }
}

fn load(path: &std::path::Path) -> Result<Job, ExitCode> {
    load_as(path, LoadMode::Run)
}

/// Loads a job only to read its tracking: no provider secret needs to be set.
fn load_for_reading(path: &std::path::Path) -> Result<Job, ExitCode> {
    load_as(path, LoadMode::Read)
}

fn load_as(path: &std::path::Path, mode: LoadMode) -> Result<Job, ExitCode> {
    Job::load_as(path, mode).map_err(|e| {
        for p in &e.problems {
            eprintln!("error: {p}");
        }
        ExitCode::from(2)
    })
}

fn run_job(
    path: PathBuf,
    workers: Option<usize>,
    now: Option<String>,
    idle_exit: Option<f64>,
    from_start: bool,
    drain_timeout: Option<f64>,
) -> ExitCode {
    let job = match load(&path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let mut opts = RunOptions::for_job(&job);
    opts.handle_signals = true;
    opts.from_start = from_start;
    if let Some(secs) = drain_timeout {
        if !(secs.is_finite() && secs > 0.0) {
            eprintln!("error: --drain-timeout {secs}: give a number of seconds above 0");
            return ExitCode::FAILURE;
        }
        opts.drain_timeout = Some(std::time::Duration::from_secs_f64(secs.min(86_400.0)));
    }
    opts.idle_exit = idle_exit.map(std::time::Duration::from_secs_f64);
    if let Some(w) = workers {
        if w == 0 || w > MAX_WORKERS {
            eprintln!(
                "error: -w {w}: use 1 to {MAX_WORKERS} workers (at most the number of cores pays)"
            );
            return ExitCode::from(2);
        }
        opts.workers = w;
    }
    if let Some(now) = now {
        match chrono::DateTime::parse_from_rfc3339(&now) {
            Ok(t) => opts.clock = Clock::Fixed(t.timestamp_millis()),
            Err(e) => {
                eprintln!(
                    "error: --now `{now}`: {e}; use RFC 3339, e.g. 2025-11-22T10:00:00+08:00"
                );
                return ExitCode::from(2);
            }
        }
    }
    match run(&job, &opts) {
        Ok(summary) => {
            print_summary(&job, &opts, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e:#}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn print_summary(job: &Job, opts: &RunOptions, s: &Summary) {
    println!(
        "job `{}` finished in {:.2?} with {} worker(s)",
        job.file.name, s.elapsed, opts.workers
    );
    println!("{:<24} {:>6} {:>10}", "state", "code", "rows");
    println!("{}", "-".repeat(42));
    for state in State::ALL {
        if let Some(n) = s.counts.states.get(&state) {
            println!("{:<24} {:>6} {:>10}", state.name(), state.code(), n);
        }
    }
    println!("{}", "-".repeat(42));
    println!(
        "{:<24} {:>6} {:>10}",
        "dead letters", "", s.counts.dead_letters
    );
    println!("{:<24} {:>6} {:>10}", "parked at exit", "", s.parked);
    if let Some(r) = &s.redis {
        println!(
            "redis: {} rows written, {} waiting in the spool for Redis{}",
            r.written,
            r.spooled,
            if r.failures > 0 {
                format!(" ({} failed attempts)", r.failures)
            } else {
                String::new()
            }
        );
    }
    let receive = s.counts.states.get(&State::Receive).copied().unwrap_or(0);
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "receivers/s: {:.0}   tracking: {}",
        receive as f64 / secs,
        job.tracking_dir.display()
    );
}

fn trace(
    job: Option<PathBuf>,
    redis: Option<String>,
    format: OutputFormat,
    what: TraceWhat,
) -> ExitCode {
    use tidings_sinks::tracking::redis::RedisTrace;
    let job = match job.as_deref().map(load_for_reading).transpose() {
        Ok(j) => j,
        Err(code) => return code,
    };
    let prefix = job
        .as_ref()
        .map(|j| j.file.tracking.redis_prefix.clone())
        .unwrap_or_else(|| tidings_sinks::tracking::redis::PREFIX.into());
    let url = match (redis, job.as_ref()) {
        (Some(url), _) => url,
        (None, Some(j)) => match &j.file.tracking.redis {
            Some(url) => url.clone(),
            None => {
                eprintln!(
                    "error: {}: tracking.redis is not set, so nothing is traced in Redis; use `tidings sql` for the Parquet tables",
                    j.path.display()
                );
                return ExitCode::from(2);
            }
        },
        (None, None) => unreachable!("clap requires --job or --redis"),
    };
    let mut redis = match RedisTrace::connect(&url, &prefix) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: redis {}: {e}", shown_url(&url));
            return ExitCode::FAILURE;
        }
    };
    let rows: Result<Vec<serde_json::Value>, String> = match what {
        TraceWhat::Message { id } => redis.message(&id).map_err(|e| e.to_string()),
        TraceWhat::User { receiver } => redis.user(&receiver).map_err(|e| e.to_string()),
        TraceWhat::Template { id, date } => {
            let tz = job
                .as_ref()
                .map(|j| j.tz)
                .unwrap_or(chrono_tz::Asia::Shanghai);
            let date = match date {
                Some(d) => match chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d") {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("error: --date {d:?}: {e}; write YYYY-MM-DD");
                        return ExitCode::from(2);
                    }
                },
                None => chrono::Utc::now().with_timezone(&tz).date_naive(),
            };
            // The job knows the template's type; without it, both of austin's types are asked.
            let types: Vec<i64> = match job.as_ref().and_then(|j| j.templates.get(id)) {
                Some(t) => vec![t.template_type.code()],
                None => vec![20, 10],
            };
            let mut rows = Vec::new();
            for ty in types {
                let business_id = tidings_model::ids::business_id(ty, id, date);
                match redis.business(business_id) {
                    Ok(counts) => rows.extend(counts.into_iter().map(|(state, n)| {
                        serde_json::json!({"business_id": business_id, "state": state,
                            "code": State::from_name(&state).map(State::code), "receivers": n})
                    })),
                    Err(e) => {
                        eprintln!("error: redis {}: {e}", shown_url(&url));
                        return ExitCode::FAILURE;
                    }
                }
            }
            rows.sort_by_key(|r| r["code"].as_i64());
            Ok(rows)
        }
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: redis {}: {e}", shown_url(&url));
            return ExitCode::FAILURE;
        }
    };
    print_json_rows(&rows, format);
    ExitCode::SUCCESS
}

/// Prints JSON objects as a table (columns in first-seen order), CSV or JSON lines.
fn print_json_rows(rows: &[serde_json::Value], format: OutputFormat) {
    let mut columns: Vec<String> = Vec::new();
    for r in rows {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let cell = |r: &serde_json::Value, c: &str| match &r[c] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    match format {
        OutputFormat::Json => {
            for r in rows {
                println!("{r}");
            }
        }
        OutputFormat::Csv => {
            println!("{}", columns.join(","));
            for r in rows {
                let line: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let v = cell(r, c);
                        if v.contains([',', '"', '\n']) {
                            format!("\"{}\"", v.replace('"', "\"\""))
                        } else {
                            v
                        }
                    })
                    .collect();
                println!("{}", line.join(","));
            }
        }
        OutputFormat::Table => {
            let widths: Vec<usize> = columns
                .iter()
                .map(|c| {
                    rows.iter()
                        .map(|r| cell(r, c).chars().count())
                        .chain([c.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            println!("{}", line(columns.clone()));
            for r in rows {
                println!("{}", line(columns.iter().map(|c| cell(r, c)).collect()));
            }
            println!(
                "({} row{})",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            );
        }
    }
}

/// The tracking directory (and time zone) of `--job` or `--dir`.
fn tracking_of(
    job: Option<PathBuf>,
    dir: Option<PathBuf>,
) -> Result<(PathBuf, Option<String>), ExitCode> {
    match (job, dir) {
        (Some(j), _) => load_for_reading(&j).map(|job| (job.tracking_dir, Some(job.file.timezone))),
        (None, Some(d)) => Ok((d, None)),
        (None, None) => {
            eprintln!("error: give --job JOB.toml or --dir TRACKING_DIR");
            Err(ExitCode::from(2))
        }
    }
}

fn sql_format(format: OutputFormat) -> tidings_sql::Format {
    match format {
        OutputFormat::Table => tidings_sql::Format::Table,
        OutputFormat::Csv => tidings_sql::Format::Csv,
        OutputFormat::Json => tidings_sql::Format::Json,
    }
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })
}

fn corrupt(skip: bool) -> tidings_sql::Corrupt {
    if skip {
        tidings_sql::Corrupt::Skip
    } else {
        tidings_sql::Corrupt::Fail
    }
}

/// Opens the tracking tables; a skipped file is named in a warning line.
async fn open_tracking(
    dir: &std::path::Path,
    corrupt: tidings_sql::Corrupt,
) -> Result<tidings_sql::Tracking, tidings_sql::SqlError> {
    let t = tidings_sql::Tracking::open_with(dir, corrupt).await?;
    for (file, why) in t.skipped() {
        eprintln!(
            "warning: skipped {}: not a readable Parquet file ({why})",
            file.display()
        );
    }
    Ok(t)
}

fn sql(
    job: Option<PathBuf>,
    dir: Option<PathBuf>,
    format: OutputFormat,
    corrupt: tidings_sql::Corrupt,
    query: Option<&str>,
) -> ExitCode {
    let (dir, _) = match tracking_of(job, dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let format = sql_format(format);
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let tracking = match rt.block_on(open_tracking(&dir, corrupt)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(query) = query else {
        return if cli::repl::run(&rt, &tracking, format) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    let result = rt.block_on(async {
        let batches = tracking.query(query).await?;
        tidings_sql::format(&batches, format)
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    name: Option<String>,
    list: bool,
    job: Option<PathBuf>,
    dir: Option<PathBuf>,
    mut params: tidings_sql::reports::Params,
    format: OutputFormat,
    corrupt: tidings_sql::Corrupt,
) -> ExitCode {
    use tidings_sql::reports::{REPORTS, Report};
    if list {
        for r in REPORTS {
            println!(
                "{:<20} {}  [{}]",
                r.name,
                r.description(),
                r.params().join(", ")
            );
        }
        return ExitCode::SUCCESS;
    }
    let report = match Report::find(name.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (dir, tz) = match tracking_of(job, dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    params.timezone = tz;
    if let Err(e) = report.render(&params) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let t = open_tracking(&dir, corrupt).await?;
        let batches = t.report(&report, &params).await?;
        tidings_sql::format(&batches, sql_format(format))
    });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: report {}: {e}", report.name);
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let job = match load(path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    println!("{}: the job file is valid", path.display());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let accounts = match tidings_sinks::account::Accounts::build(&job.file.accounts, &job.base) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
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
    for (key, dir) in [
        ("tracking.dir", &job.tracking_dir),
        ("state_dir", &job.state_dir),
    ] {
        let r = tidings_dataflows::lock::probe_writable(key, dir)
            .map(|()| "writable".to_string())
            .map_err(|e| e.to_string());
        line(format!("{key} {}", dir.display()), r);
    }
    if let Some(k) = &job.kafka {
        let r = tidings_dataflows::kafka::reach(&k.brokers, &k.topic);
        line(format!("kafka {}", k.brokers), r);
    }
    if let Some(url) = &job.file.tracking.redis {
        let r = tidings_sinks::tracking::redis::RedisTrace::connect(
            url,
            &job.file.tracking.redis_prefix,
        )
        .map(|_| "connected".to_string())
        .map_err(|e| e.to_string());
        line("redis (tracking)".to_string(), r);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} check(s) failed");
        ExitCode::FAILURE
    }
}

fn simulator(bind: &str, faults: &[String]) -> ExitCode {
    use tidings_sinks::simulator::{Credentials, Fault, Simulator};
    let faults: Result<Vec<Fault>, String> = faults.iter().map(|f| Fault::parse(f)).collect();
    let faults = match faults {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --fault: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::start(bind, Credentials::default(), faults) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --bind {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "provider simulator on http://{0}/ — endpoints http://{0}/dingtalk, /feishu, /wecom, /tencent, /aliyun, /webhook; Ctrl-C stops",
        sim.addr
    );
    let mut shown = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let got = sim.received();
        for r in &got[shown..] {
            let verdict = match (&r.problem, r.faulted) {
                (_, true) => "FAULT".to_string(),
                (None, false) => "ok".to_string(),
                (Some(p), false) => format!("REJECTED: {p}"),
            };
            println!("{:<9} {verdict:<10} {}", r.provider, r.body);
        }
        shown = got.len();
    }
}

/// The admin address and token of `--addr`/`--job`.
fn resolve(t: &AdminTarget) -> Result<(String, Option<String>), ExitCode> {
    let job = t.job.as_deref().map(load).transpose()?;
    let token = t.token.clone().or_else(|| {
        job.as_ref()
            .and_then(|j| j.admin.as_ref())
            .and_then(|a| a.token.clone())
    });
    let addr = match (&t.addr, &job) {
        (Some(a), _) => a.clone(),
        (None, Some(j)) => match tidings_dataflows::admin::address_of(j) {
            Some(a) => a,
            None => {
                eprintln!(
                    "error: {}: the job has no [admin] section; add `[admin]\nbind = \"127.0.0.1:9464\"` and restart it",
                    j.path.display()
                );
                return Err(ExitCode::from(2));
            }
        },
        (None, None) => {
            eprintln!("error: name the running job: --job JOB.toml, or --addr HOST:PORT");
            return Err(ExitCode::from(2));
        }
    };
    Ok((addr, token))
}

fn state(target: AdminTarget, what: StateWhat) -> ExitCode {
    use tidings_dataflows::admin::percent_encode as enc;
    let (addr, token) = match resolve(&target) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let at = |at: &Option<String>| {
        at.as_deref()
            .map(|a| format!("&at={}", enc(a)))
            .unwrap_or_default()
    };
    let path = match &what {
        StateWhat::Summary => "/state".to_string(),
        StateWhat::Content {
            template,
            receiver,
            vars,
            at: t,
        } => {
            let mut p = format!(
                "/state/content?template={template}&receiver={}",
                enc(receiver)
            );
            for v in vars {
                let Some((k, val)) = v.split_once('=') else {
                    eprintln!("error: --var `{v}`: use NAME=VALUE");
                    return ExitCode::from(2);
                };
                p.push_str(&format!("&var.{}={}", enc(k), enc(val)));
            }
            p + &at(t)
        }
        StateWhat::Frequency {
            receiver,
            channel,
            template,
            at: t,
        } => {
            let by = match (channel, template) {
                (Some(c), _) => format!("channel={}", enc(c)),
                (None, Some(id)) => format!("template={id}"),
                (None, None) => unreachable!("clap requires --channel or --template"),
            };
            format!("/state/frequency?receiver={}&{by}{}", enc(receiver), at(t))
        }
        StateWhat::Operators => "/state/operators".into(),
        StateWhat::Park => "/state/park".into(),
        StateWhat::Accounts => "/state/accounts".into(),
        StateWhat::Source => "/state/source".into(),
    };
    match tidings_dataflows::admin::get(&addr, &path, token.as_deref()) {
        Ok((200, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            println!("{pretty}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("error: http://{addr}{path}: {status} {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: http://{addr}{path}: {e} (is the job running?)");
            ExitCode::FAILURE
        }
    }
}

fn send(
    path: PathBuf,
    template: Option<i64>,
    to: Option<String>,
    vars: Vec<String>,
    file: Option<PathBuf>,
) -> ExitCode {
    use tidings_dataflows::kafka::{Outgoing, produce};
    let job = match load_for_reading(&path) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let Some(kafka) = job.kafka.clone() else {
        eprintln!(
            "error: {}: source.kind is not \"kafka\": there is no topic to send to",
            path.display()
        );
        return ExitCode::from(2);
    };
    let result = match file {
        Some(file) => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let bar = indicatif::ProgressBar::new(lines.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} requests {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let records = lines
                .iter()
                .map(|l| tidings_dataflows::kafka::Outgoing::of_line(l));
            let r = produce(&kafka.brokers, &kafka.topic, records, || bar.inc(1));
            bar.finish();
            r
        }
        None => {
            let mut variables = serde_json::Map::new();
            for v in &vars {
                let Some((k, val)) = v.split_once('=') else {
                    eprintln!("error: --var `{v}`: use NAME=VALUE");
                    return ExitCode::from(2);
                };
                variables.insert(k.to_string(), serde_json::Value::String(val.to_string()));
            }
            let request = serde_json::json!({"code": "send", "messageTemplateId": template,
                "messageParam": {"receiver": to.unwrap_or_default(), "variables": variables}});
            produce(
                &kafka.brokers,
                &kafka.topic,
                [Outgoing {
                    key: None,
                    payload: request.to_string(),
                    timestamp: None,
                }],
                || {},
            )
        }
    };
    match result {
        Ok(n) => {
            eprintln!(
                "sent {n} request(s) to {} on {}",
                kafka.topic, kafka.brokers
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: kafka {}: {e:#}", kafka.brokers);
            ExitCode::FAILURE
        }
    }
}
