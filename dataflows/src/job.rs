//! The job file (docs/job-file.md): parsed with unknown keys refused, then checked as a whole so that
//! every problem is reported at once, one line each, naming the file, the key and the fix.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;
use tidings_model::Templates;
use tidings_model::receiver::ReceiverValidator;
use tidings_model::template::toml_error_line;
use tidings_model::time::{NightWindow, parse_hhmm};
use tidings_sinks::account::AccountConfig;

use crate::kafka::KafkaSettings;

/// A job file that cannot be used: every line names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct JobError {
    /// One line per problem.
    pub problems: Vec<String>,
}

fn default_timezone() -> String {
    "Asia/Shanghai".into()
}
/// The region of phone numbers written without a country code, unless a job says another.
pub const DEFAULT_REGION: &str = "CN";

fn default_region() -> String {
    DEFAULT_REGION.into()
}

/// The receivers of `code`'s region (a job's `region`, `trace --region`), or why not.
pub fn region(code: &str) -> Result<ReceiverValidator, String> {
    ReceiverValidator::new(code)
        .ok_or_else(|| format!("unknown region `{code}`; use an ISO 3166 code such as \"CN\""))
}

/// The job file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job's name, e.g. `"demo"`.
    pub name: String,
    /// IANA time zone of every local-time rule. Default `"Asia/Shanghai"`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The templates file, relative to the job file. Example: `"templates.toml"`.
    pub templates: PathBuf,
    /// Timely worker threads; `tidings run -w N` overrides. Default: the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Checkpoints and parked (night_delay) messages. Default: `state` beside the tracking dir.
    /// An object-store prefix (`s3://bucket/prefix`) keeps the checkpoints and the run lock
    /// there, shared by machines, and the rest in `local_state_dir`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// With `state_dir` on an object store: this machine's working files (the live park
    /// store, recall books, Redis spool, the fetched checkpoint). Default: `var/state` beside
    /// the job file.
    #[serde(default)]
    pub local_state_dir: Option<PathBuf>,
    /// Region (ISO 3166) of phone receivers written without a country code. Default `"CN"`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Where requests come from.
    pub source: SourceConfig,
    /// The two dedup rules.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// The night window.
    #[serde(default)]
    pub shield: ShieldConfig,
    /// Discarded templates.
    #[serde(default)]
    pub discard: DiscardConfig,
    /// Allowed receivers.
    #[serde(default)]
    pub whitelist: WhitelistConfig,
    /// Tracking output.
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Sending accounts by name.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    /// Account groups by name: a template naming one spreads its messages over the members
    /// by weight and fails over to the next member (`tidings_sinks::route`).
    #[serde(default)]
    pub groups: BTreeMap<String, tidings_sinks::route::GroupConfig>,
    /// The admin HTTP API (live state, `/metrics`). Default: off.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The HTTP send API (`tidings gateway`, `serve`). Default: loopback, no callers.
    #[serde(default)]
    pub gateway: Option<GatewayConfig>,
}

/// `[admin]`: the running job's HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on. Example: `"127.0.0.1:9464"` (port 0 picks a free one).
    pub bind: String,
    /// Bearer token every request must carry; required unless `bind` is a loopback address.
    /// `"${NAME}"` reads the environment variable NAME.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_gateway_bind() -> String {
    "127.0.0.1:8080".into()
}

/// `[gateway]`: the austin-compatible HTTP send API (docs/api.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address `tidings gateway` listens on. Default `"127.0.0.1:8080"`.
    #[serde(default = "default_gateway_bind")]
    pub bind: String,
    /// The callers, by name; each request must carry one's token. Required unless `bind` is
    /// a loopback address.
    #[serde(default)]
    pub callers: BTreeMap<String, CallerConfig>,
    /// The HTTP status of a send, batchSend or recall answer: `"tidings"` (default) says what
    /// happened (400, 401, 429, 503...); `"austin"` answers 200 with the code in the body, as
    /// austin does (clients whose HTTP library throws on a 4xx).
    #[serde(default)]
    pub http_status: HttpStatus,
}

/// `gateway.http_status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpStatus {
    /// The status says what happened.
    #[default]
    Tidings,
    /// 200 for every answer with a code, as austin.
    Austin,
}

/// `[gateway.callers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// SHA-256 of the caller's bearer token, 64 hex digits (`tidings gateway --hash-token`);
    /// the token itself is never stored.
    pub token_sha256: String,
    /// Messages (params) per second the caller may send (answered 429 above it). Default: no
    /// limit.
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Whether the caller may change templates (`POST /templates`); default false.
    #[serde(default)]
    pub templates: bool,
}

/// A `[gateway]` section, checked.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The address.
    pub bind: std::net::SocketAddr,
    /// The callers (none: anyone on loopback).
    pub callers: Vec<Caller>,
    /// The statuses of the send routes' answers.
    pub http_status: HttpStatus,
}

/// One caller of the send API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its name (in logs and metrics).
    pub name: String,
    /// SHA-256 of its token.
    pub token_sha256: [u8; 32],
    /// Its rate limit.
    pub per_second: Option<std::num::NonZeroU32>,
    /// Whether it may change templates.
    pub templates: bool,
}

/// An `[admin]` section, checked.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The address.
    pub bind: std::net::SocketAddr,
    /// The token, resolved.
    pub token: Option<String>,
}

/// Checks `[gateway]` (defaults when absent); each problem goes to `bad(key, message)`.
fn gateway_settings(
    config: Option<&GatewayConfig>,
    bad: &mut impl FnMut(&str, String),
) -> GatewaySettings {
    let default = GatewayConfig {
        bind: default_gateway_bind(),
        callers: BTreeMap::new(),
        http_status: HttpStatus::default(),
    };
    let g = config.unwrap_or(&default);
    let bind = g.bind.parse().unwrap_or_else(|_| {
        bad(
            "gateway.bind",
            format!(
                "`{}` is not an address; write IP:PORT, e.g. \"127.0.0.1:8080\"",
                g.bind
            ),
        );
        std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let mut callers = Vec::new();
    for (name, c) in &g.callers {
        let key = format!("gateway.callers.{name}");
        let hex = match env_value(&c.token_sha256) {
            Ok(h) => h,
            Err(e) => {
                bad(&format!("{key}.token_sha256"), format!("{e}; export it"));
                continue;
            }
        };
        let mut hash = [0u8; 32];
        if hex.len() != 64 || hex::decode_to_slice(&hex, &mut hash).is_err() {
            bad(
                &format!("{key}.token_sha256"),
                "is not 64 hex digits; write the SHA-256 of the token (`tidings gateway --hash-token` prints it)".into(),
            );
            continue;
        }
        let per_second = match c.per_second {
            Some(0) => {
                bad(
                    &format!("{key}.per_second"),
                    "is 0, which refuses every request; give at least 1, or leave it out for no limit".into(),
                );
                continue;
            }
            n => n.and_then(std::num::NonZeroU32::new),
        };
        callers.push(Caller {
            name: name.clone(),
            token_sha256: hash,
            per_second,
            templates: c.templates,
        });
    }
    if callers.is_empty() && !g.callers.is_empty() {
        // Every caller was refused above: the problems say why.
    } else if callers.is_empty() && !bind.ip().is_loopback() {
        bad(
            "gateway.bind",
            format!(
                "{bind} is not a loopback address, so [gateway.callers.NAME] with a token_sha256 is required; add a caller or bind 127.0.0.1"
            ),
        );
    }
    GatewaySettings {
        bind,
        callers,
        http_status: g.http_status,
    }
}

/// Expands every `${NAME}` in `v` from the environment, whole or inside a longer string
/// (`"Bearer ${TOKEN}"`); `$${` writes a literal `${`.
pub fn env_value(v: &str) -> Result<String, String> {
    tidings_sinks::util::secrets::expand(v).map(|(text, _)| text)
}

/// The most timely workers a job may ask for. Workers are CPU-bound threads and every pair
/// of them shares channels (n² of them), so more than the machine's cores only costs
/// memory: 3000 workers took 19 GB. 256 covers the largest machines tidings runs on; the
/// bound is the same everywhere, so a job file valid on one machine is valid on another.
pub const MAX_WORKERS: usize = 256;

/// The most sends of one content to one receiver `dedup.content` may allow per window.
pub const MAX_CONTENT_NUM: u32 = 1_000_000;

/// How a job file is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// To run it (or check it, or reach its admin API): everything is checked and every
    /// `${ENV}` reference is resolved.
    Run,
    /// Only to read what it wrote (`tidings sql`, `report`, `trace`): accounts' `settings`,
    /// `admin` and the source file are not looked at, so no provider secret needs to be in
    /// the environment and a job copied without its input still answers.
    Read,
}

/// The text of a file with a leading UTF-8 byte order mark removed (editors on Windows
/// write one; TOML and JSON parsers refuse it at "line 1 column 1").
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Why `dir` cannot be a directory (it or one of its parents is a file), or `None`.
pub fn dir_problem(dir: &Path) -> Option<String> {
    for a in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::metadata(a) {
            Ok(m) if m.is_dir() => return None,
            Ok(_) if a == dir => {
                return Some(format!("{} is a file, not a directory", dir.display()));
            }
            Ok(_) => {
                return Some(format!(
                    "{} cannot be a directory: {} is a file",
                    dir.display(),
                    a.display()
                ));
            }
            Err(_) => continue,
        }
    }
    None
}

/// One structural problem: where (the top-level key and, in `accounts`/`groups`, the name)
/// and the line to show (`dedup: unknown field ...`).
struct Broken {
    top: String,
    name: Option<String>,
    line: String,
}

/// Reads and parses the templates file; a problem is said and leaves no templates.
fn read_templates(templates_path: &Path, shown: &str, problems: &mut Vec<String>) -> Templates {
    match std::fs::read(templates_path) {
        Err(e) => {
            problems.push(format!(
                "{shown}: templates: cannot read {}: {e}; give the templates file's path relative to the job file",
                templates_path.display()
            ));
            Templates::default()
        }
        Ok(bytes) => match String::from_utf8(bytes) {
            Err(e) => {
                problems.push(format!(
                    "{}: not UTF-8 (byte {}); save it as UTF-8",
                    templates_path.display(),
                    e.utf8_error().valid_up_to()
                ));
                Templates::default()
            }
            Ok(text) => {
                match Templates::parse(&templates_path.display().to_string(), strip_bom(&text)) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(e.to_string());
                        Templates::default()
                    }
                }
            }
        },
    }
}

/// Each template's account (or group), checked against the job's accounts and groups; the
/// discarded templates must exist.
fn route_templates(
    file: &JobFile,
    templates: &Templates,
    templates_path: &Path,
    shown: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<i64, String> {
    let mut account_of = BTreeMap::new();
    for t in templates.iter() {
        let where_ = format!("{}: template {}", templates_path.display(), t.id);
        let channel = file
            .accounts
            .get(&t.account)
            .map(|a| a.channel)
            .or_else(|| file.groups.get(&t.account).map(|g| g.channel));
        match channel {
            None => problems.push(format!(
                "{where_}: account `{}` is not defined; add [accounts.{}] (or [groups.{}]) to {shown}",
                t.account, t.account, t.account
            )),
            Some(c) if c != t.channel => problems.push(format!(
                "{where_}: channel {} but account `{}` sends {}; use an account of the same channel",
                t.channel.name(),
                t.account,
                c.name()
            )),
            Some(_) => {
                account_of.insert(t.id, t.account.clone());
            }
        }
    }
    let known: HashSet<i64> = templates.iter().map(|t| t.id).collect();
    for id in &file.discard.templates {
        if !known.contains(id) {
            problems.push(format!(
                "{shown}: discard.templates: template {id} is not in {}",
                templates_path.display()
            ));
        }
    }
    account_of
}

/// The templates' campaigns (`cron` and `crowd`), checked: both given, on a `cron`
/// template of a Kafka job, the expression readable and (to run) the crowd's header naming
/// its receivers.
fn campaigns_of(
    templates: &Templates,
    templates_path: &Path,
    kafka: bool,
    run: bool,
    tz: Tz,
    problems: &mut Vec<String>,
) -> Vec<crate::campaign::Campaign> {
    let dir = templates_path.parent().unwrap_or(Path::new("."));
    let mut campaigns = Vec::new();
    for t in templates.iter() {
        // Reading verbs (sql, trace, campaign list) need no crowd file.
        match crate::campaign::checked(t, kafka, dir, tz, run, true) {
            Ok(Some(c)) => campaigns.push(c),
            Ok(None) => {}
            Err(why) => problems.push(format!(
                "{}: template {}: {why}",
                templates_path.display(),
                t.id
            )),
        }
    }
    campaigns
}

/// Checks the `[groups.NAME]` sections; every member is set to queue in memory.
fn check_groups(file: &mut JobFile, shown: &str, problems: &mut Vec<String>) {
    // Group members wait in memory: a failed-over receiver must reach the next member
    // from the same send, which an account's own Kafka topic would not know of.
    for (group, g) in &file.groups {
        if g.accounts.is_empty() {
            problems.push(format!("{shown}: groups.{group}.accounts: name at least one account, e.g. {{ sms-a = 70, sms-b = 30 }}"));
        }
        if file.accounts.contains_key(group) {
            problems.push(format!(
                "{shown}: groups.{group}: an account has the same name; rename the group"
            ));
        }
        if g.accounts.values().all(|w| *w == 0) && !g.accounts.is_empty() {
            problems.push(format!("{shown}: groups.{group}.accounts: every weight is 0; give at least one a weight above 0"));
        }
        for member in g.accounts.keys() {
            match file.accounts.get_mut(member) {
                None => problems.push(format!(
                    "{shown}: groups.{group}.accounts: account `{member}` is not defined; add [accounts.{member}]"
                )),
                Some(a) if a.channel != g.channel => problems.push(format!(
                    "{shown}: groups.{group}.accounts: `{member}` sends {}, the group {}; use accounts of the group's channel",
                    a.channel.name(),
                    g.channel.name()
                )),
                Some(a) if a.queue == Some(tidings_sinks::account::QueueKind::Kafka) => problems.push(format!(
                    "{shown}: accounts.{member}.queue: a member of group `{group}` queues in memory; remove queue = \"kafka\""
                )),
                Some(a) => a.queue = Some(tidings_sinks::account::QueueKind::Memory),
            }
        }
    }
}

/// Checks the `[accounts.NAME]` sections (with `run`, their provider settings and secrets).
fn check_accounts(file: &JobFile, base: &Path, run: bool, shown: &str, problems: &mut Vec<String>) {
    for (name, account) in &file.accounts {
        // A name is a file's name (a recall book) and part of a topic's (a Kafka queue).
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 100 || !name.chars().all(plain) || name.starts_with('.')
        {
            problems.push(format!(
                "{shown}: accounts.{name:?}: name it with up to 100 letters, digits, '.', '_' and \
                 '-' (not beginning with '.'), e.g. [accounts.sms-main]"
            ));
        }
        for p in account.validate_as(&format!("accounts.{name}"), run) {
            problems.push(format!("{shown}: {p}"));
        }
        if let Some(dir) = &account.dir
            && let Some(why) = dir_problem(&base.join(dir))
        {
            problems.push(format!(
                "{shown}: accounts.{name}.dir: {why}; choose a directory"
            ));
        }
        let kafka_job = file.source.kind == SourceKind::Kafka;
        if account.max_queued.is_some() && !account.queues_in_kafka(kafka_job) {
            problems.push(format!(
                "{shown}: accounts.{name}.max_queued: only an account queued in Kafka holds its \
                 deliveries by it (this one waits in the send stage, bounded by in_flight); \
                 remove it"
            ));
        }
        if account.queue == Some(tidings_sinks::account::QueueKind::Kafka) && !kafka_job {
            problems.push(format!("{shown}: accounts.{name}.queue: \"kafka\" needs a Kafka source (the queue is a topic on its brokers); use \"memory\" or omit it"));
        }
    }
}

/// Checks the rules (time zone, region, night window, workers, dedup, tracking); returns the
/// parsed time zone, receiver validator, night window and release time.
fn check_rules(
    file: &JobFile,
    bad: &mut impl FnMut(&str, String),
) -> (Tz, ReceiverValidator, NightWindow, NaiveTime) {
    let tz: Tz = file.timezone.parse().unwrap_or_else(|_| {
        bad(
            "timezone",
            format!(
                "unknown time zone `{}`; use an IANA name such as \"Asia/Shanghai\"",
                file.timezone
            ),
        );
        Tz::UTC
    });
    let receivers = region(&file.region).unwrap_or_else(|why| {
        bad("region", why);
        ReceiverValidator::new(DEFAULT_REGION).expect("CN is a region")
    });
    let night = NightWindow::parse(&file.shield.night).unwrap_or_else(|| {
        bad(
            "shield.night",
            format!(
                "`{}` is not HH:MM-HH:MM, e.g. \"00:00-08:00\"",
                file.shield.night
            ),
        );
        NightWindow {
            start: NaiveTime::MIN,
            end: NaiveTime::MIN,
        }
    });
    if NightWindow::parse(&file.shield.night).is_some_and(|n| n.start == n.end) {
        bad(
            "shield.night",
            format!(
                "`{}` is an empty window (it ends where it starts), which shields nothing; give \
                 one such as \"00:00-08:00\" (a template that is never shielded has shield = \
                 \"none\")",
                file.shield.night
            ),
        );
    }
    let release_at = parse_hhmm(&file.shield.release_at).unwrap_or_else(|| {
        bad(
            "shield.release_at",
            format!("`{}` is not HH:MM, e.g. \"09:00\"", file.shield.release_at),
        );
        NaiveTime::MIN
    });
    match file.workers {
        Some(0) => bad("workers", "must be at least 1".into()),
        Some(n) if n > MAX_WORKERS => bad(
            "workers",
            format!(
                "{n} is more than {MAX_WORKERS}; use at most the number of cores (omit it for that)"
            ),
        ),
        _ => {}
    }
    if file.dedup.content.num == 0 || file.dedup.content.time == 0 {
        bad(
            "dedup.content",
            "num and time must be at least 1, e.g. { num = 1, time = 300 }".into(),
        );
    }
    // A key keeps one admission time per send in its window; a checkpoint part holds a key's
    // list in one block, and each admission copies it.
    if file.dedup.content.num > MAX_CONTENT_NUM {
        bad(
            "dedup.content.num",
            format!(
                "{} is more than {MAX_CONTENT_NUM}; use at most that (default 1)",
                file.dedup.content.num
            ),
        );
    }
    // Seconds held as milliseconds in an i64: a year bounds them far below its overflow.
    const YEAR_SECS: u64 = 366 * 86_400;
    if file.dedup.content.time > YEAR_SECS {
        bad(
            "dedup.content.time",
            format!(
                "{} seconds is over a year ({YEAR_SECS}); use at most that (default 300)",
                file.dedup.content.time
            ),
        );
    }
    if file.dedup.lateness > YEAR_SECS {
        bad(
            "dedup.lateness",
            format!(
                "{} seconds is over a year ({YEAR_SECS}); use at most that (default 3600)",
                file.dedup.lateness
            ),
        );
    }
    if file.dedup.frequency.num == 0 {
        bad(
            "dedup.frequency.num",
            "must be at least 1, e.g. { num = 5 }".into(),
        );
    }
    if let Some(url) = &file.tracking.redis
        && let Err(e) = url
            .starts_with("redis://")
            .then_some(())
            .ok_or_else(|| "the scheme must be redis://".to_string())
            .and_then(|()| redis::Client::open(url.as_str()).map_err(|e| e.to_string()))
    {
        bad(
            "tracking.redis",
            format!(
                "{:?} is not a Redis URL ({e}); write e.g. \"redis://127.0.0.1:6379\"",
                tidings_sinks::util::http::shown_url(url)
            ),
        );
    }
    if file.tracking.compact_every_secs > 366 * 86_400 {
        bad(
            "tracking.compact_every_secs",
            "is over a year (31622400); use at most that, or 0 to never compact (default 600)"
                .into(),
        );
    }
    if file.tracking.retain_days.is_some_and(|d| d > 36_600) {
        bad(
            "tracking.retain_days",
            "is over 100 years (36600 days); use at most that, or omit it to keep everything"
                .into(),
        );
    }
    if file.tracking.flush_rows == 0 {
        bad("tracking.flush_rows", "must be at least 1".into());
    }
    if file.tracking.retain_days.is_some() && file.tracking.compact_every_secs == 0 {
        bad(
            "tracking.retain_days",
            "is applied by the compaction passes, which compact_every_secs = 0 turns off; give \
             compact_every_secs a number of seconds (default 600), or remove retain_days"
                .into(),
        );
    }
    if !(1..=3_600_000).contains(&file.tracking.flush_interval_ms) {
        bad(
            "tracking.flush_interval_ms",
            "is out of range; use 1 to 3600000 (an hour; default 1000)".into(),
        );
    }
    if file
        .tracking
        .redis_user_ttl_secs
        .is_some_and(|s| !(1..=366 * 86_400).contains(&s))
    {
        bad(
            "tracking.redis_user_ttl_secs",
            "is out of range; use 1 to 31622400 (a year), or omit it to keep a receiver's list \
             until the end of its last row's day"
                .into(),
        );
    }
    (tz, receivers, night, release_at)
}

/// Checks the `[source]` section; returns the file source's path or the Kafka settings.
fn check_source(
    source: &SourceConfig,
    base: &Path,
    run: bool,
    bad: &mut impl FnMut(&str, String),
) -> (Option<PathBuf>, Option<KafkaSettings>) {
    let source_path = match source.kind {
        SourceKind::File => match &source.path {
            Some(p) => {
                let p = base.join(p);
                // A followed file may be made after the job starts (as `tail -F` waits).
                let awaited = source.follow
                    && matches!(p.try_exists(), Ok(false))
                    && p.parent()
                        .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir());
                if run && !awaited && !p.is_file() && !p.is_dir() {
                    let hint = if source.follow {
                        "; a followed file may be made later, but its directory must exist"
                    } else {
                        ""
                    };
                    bad(
                        "source.path",
                        format!(
                            "{} is not a readable file (or a directory of partition files){hint}",
                            p.display()
                        ),
                    );
                }
                if run && p.is_dir() && partition_files(&p).is_empty() {
                    bad(
                        "source.path",
                        format!(
                            "{} is a directory without files; put one JSON-lines file per partition in it",
                            p.display()
                        ),
                    );
                }
                Some(p)
            }
            None => {
                bad(
                    "source.path",
                    "the file source needs a path, e.g. path = \"requests.jsonl\"".into(),
                );
                None
            }
        },
        SourceKind::Kafka => None,
    };
    let (properties, unresolved) = kafka_properties(source, run, bad);
    let kafka = (source.kind == SourceKind::Kafka).then(|| KafkaSettings {
        brokers: source
            .brokers
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9092".into()),
        topic: source
            .topic
            .clone()
            .unwrap_or_else(|| "tidings.send".into()),
        group: source.group.clone().unwrap_or_else(|| "tidings".into()),
        dead_letter_topic: source.dead_letter_topic.clone(),
        checkpoint: std::time::Duration::from_millis(source.checkpoint_ms.max(1)),
        tick: std::time::Duration::from_millis(source.epoch_ms().max(1)),
        properties,
        unresolved,
    });
    if !(1..=10_000).contains(&source.epoch_ms()) {
        bad(
            "source.epoch_ms",
            format!(
                "{} is out of range; use 1 to 10000 (default 1000 for a file, 100 for a followed one, 10 for Kafka)",
                source.epoch_ms()
            ),
        );
    }
    let (unit, backlog) = (source.epoch_ms(), source.backlog_epoch_ms());
    if !(1..=3_600_000).contains(&backlog) {
        bad(
            "source.backlog_epoch_ms",
            format!("{backlog} is out of range; use 1 to 3600000 (default 1000)"),
        );
    } else if unit > 0 && backlog % unit != 0 {
        bad(
            "source.backlog_epoch_ms",
            format!(
                "{backlog} is not a multiple of source.epoch_ms ({unit}); use a multiple of it (epoch_ms itself: no coarser epochs for a backlog)"
            ),
        );
    }
    if !(10..=3_600_000).contains(&source.checkpoint_ms) {
        bad(
            "source.checkpoint_ms",
            format!(
                "{} is out of range; use 10 to 3600000 (default 1000)",
                source.checkpoint_ms
            ),
        );
    }
    if source
        .max_out_of_order_ms
        .is_some_and(|m| m > 7 * 86_400_000)
    {
        bad(
            "source.max_out_of_order_ms",
            "is over 7 days (604800000); records that far apart in one partition need a re-sort before tidings".into(),
        );
    }
    if source.max_future_ms > 365 * 86_400_000 {
        bad(
            "source.max_future_ms",
            "is over a year (31536000000); use at most that (default 86400000)".into(),
        );
    }
    if source.follow && source.kind != SourceKind::File {
        bad(
            "source.follow",
            "only a file source follows its file; remove it".into(),
        );
    }
    // A key of the other kind of source would be ignored: a Kafka job that names a file
    // would read its topic and never the file.
    if source.kind == SourceKind::Kafka && source.path.is_some() {
        bad(
            "source.path",
            "only a file source reads a path; remove it, or set kind = \"file\"".into(),
        );
    }
    if source.kind == SourceKind::File {
        for (key, set) in [
            ("brokers", source.brokers.is_some()),
            ("topic", source.topic.is_some()),
            ("group", source.group.is_some()),
        ] {
            if set {
                bad(
                    &format!("source.{key}"),
                    "only a Kafka source reads it; remove it, or set kind = \"kafka\"".into(),
                );
            }
        }
    }
    if source.dead_letter_topic.is_some() && source.kind != SourceKind::Kafka {
        bad(
            "source.dead_letter_topic",
            "needs kind = \"kafka\" (the topic lives on its brokers); remove it for a file source"
                .into(),
        );
    }
    if source.epoch_lines == Some(0) {
        bad("source.epoch_lines", "must be at least 1".into());
    }
    if source.kind == SourceKind::Kafka && source.epoch_lines.is_some() {
        bad(
            "source.epoch_lines",
            "only a file source reads lines in turns of it (a Kafka source's batches are its \
             epochs); remove it"
                .into(),
        );
    }
    if source.in_flight.is_some_and(|n| n == 0 || n > 10_000_000) {
        bad(
            "source.in_flight",
            "must be between 1 and 10000000 records (default 2000)".into(),
        );
    }
    if source
        .in_flight_receivers
        .is_some_and(|n| n == 0 || n > 100_000_000)
    {
        bad(
            "source.in_flight_receivers",
            "must be between 1 and 100000000 receivers (default 100000)".into(),
        );
    }
    (source_path, kafka)
}

/// `source.properties` as librdkafka's text, each checked ([`crate::kafka::refused`],
/// [`crate::kafka::check_value`])
/// and named as librdkafka names it. A `${NAME}` in a value is read from the environment.
/// Only to read what a job wrote, an unset one is let be: the property is kept in
/// [`KafkaSettings::unresolved`] instead, and a command that makes a client from it
/// (`tidings send`, `gateway`) refuses to start ([`KafkaSettings::ready`]).
fn kafka_properties(
    source: &SourceConfig,
    run: bool,
    bad: &mut impl FnMut(&str, String),
) -> (Vec<(String, String)>, Vec<String>) {
    if source.kind != SourceKind::Kafka {
        if !source.properties.is_empty() {
            bad(
                "source.properties",
                "are librdkafka's, for kind = \"kafka\"; remove them for a file source".into(),
            );
        }
        return (Vec::new(), Vec::new());
    }
    let mut properties: Vec<(String, String)> = Vec::new();
    let mut unresolved = Vec::new();
    let mut named: BTreeMap<String, &str> = BTreeMap::new();
    for (key, value) in &source.properties {
        let at = format!("source.properties.\"{key}\"");
        if let Some(why) = crate::kafka::refused(key) {
            bad(&at, why);
            continue;
        }
        let own = crate::kafka::canonical(key).to_string();
        if let Some(first) = named.insert(own.clone(), key) {
            bad(
                &at,
                format!("sets the property {first:?} sets too (librdkafka's {own:?}); keep one"),
            );
            continue;
        }
        let value = match value {
            PropertyValue::Text(t) => match env_value(t) {
                Ok(v) => v,
                Err(why) => {
                    // A malformed reference's error quotes the value: never a secret's (an
                    // unset variable's names only the variable).
                    let why = if crate::kafka::secret(&own) && why.starts_with('`') {
                        "has a malformed ${…} reference (not shown: a secret); write ${NAME}, or $${ for a literal ${".to_string()
                    } else {
                        why
                    };
                    if run {
                        bad(&at, why);
                    } else {
                        unresolved.push(format!("{at}: {why}"));
                    }
                    continue;
                }
            },
            PropertyValue::Decimal(d)
                if !d.is_finite() || (d.fract() != 0.0 && own != "queue.buffering.max.ms") =>
            {
                bad(
                    &at,
                    "is a whole number here (only linger.ms, queue.buffering.max.ms, takes a fraction)"
                        .into(),
                );
                continue;
            }
            v => v.to_string(),
        };
        match crate::kafka::check_value(&own, &value) {
            Ok(()) => properties.push((own, value)),
            Err(why) => bad(&at, why),
        }
    }
    (properties, unresolved)
}

/// Every structural problem of a job file that did not deserialize, section by section
/// (serde stops at the first): unknown keys, missing keys and wrong types anywhere.
fn section_problems(table: &toml::Table) -> Vec<Broken> {
    type Check = fn(&toml::Value) -> Option<String>;
    fn of<T: serde::de::DeserializeOwned>(v: &toml::Value) -> Option<String> {
        v.clone()
            .try_into::<T>()
            .err()
            .map(|e| e.message().trim().replace('\n', " "))
    }
    const KEYS: [&str; 17] = [
        "name",
        "timezone",
        "templates",
        "workers",
        "state_dir",
        "local_state_dir",
        "region",
        "source",
        "dedup",
        "shield",
        "discard",
        "whitelist",
        "tracking",
        "accounts",
        "groups",
        "admin",
        "gateway",
    ];
    let mut out = Vec::new();
    for required in ["name", "templates", "source"] {
        if !table.contains_key(required) {
            out.push(Broken {
                top: required.into(),
                name: None,
                line: format!("{required}: missing field `{required}`"),
            });
        }
    }
    for (k, v) in table {
        let check: Check = match k.as_str() {
            "name" | "timezone" | "region" => of::<String>,
            "templates" | "state_dir" | "local_state_dir" => of::<PathBuf>,
            "workers" => of::<usize>,
            "source" => of::<SourceConfig>,
            "dedup" => of::<DedupConfig>,
            "shield" => of::<ShieldConfig>,
            "discard" => of::<DiscardConfig>,
            "whitelist" => of::<WhitelistConfig>,
            "tracking" => of::<TrackingConfig>,
            "admin" => of::<AdminConfig>,
            "gateway" => of::<GatewayConfig>,
            "accounts" | "groups" => {
                let per: Check = if k == "accounts" {
                    of::<AccountConfig>
                } else {
                    of::<tidings_sinks::route::GroupConfig>
                };
                match v.as_table() {
                    Some(t) => {
                        for (n, x) in t {
                            if let Some(m) = per(x) {
                                out.push(Broken {
                                    top: k.clone(),
                                    name: Some(n.clone()),
                                    line: format!("{k}.{n}: {m}"),
                                });
                            }
                        }
                    }
                    None => out.push(Broken {
                        top: k.clone(),
                        name: None,
                        line: format!("{k}: must be a table of [{k}.NAME] sections"),
                    }),
                }
                continue;
            }
            other => {
                out.push(Broken {
                    top: other.into(),
                    name: None,
                    line: format!(
                        "{other}: unknown field `{other}`, expected one of {}",
                        KEYS.map(|k| format!("`{k}`")).join(", ")
                    ),
                });
                continue;
            }
        };
        if let Some(m) = check(v) {
            out.push(Broken {
                top: k.clone(),
                name: None,
                line: format!("{k}: {m}"),
            });
        }
    }
    out
}

/// `file` or `kafka`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A JSON-lines file (bare requests or kcat `-J` envelopes).
    File,
    /// A Kafka topic.
    Kafka,
}

/// `source.epoch_lines` left out.
pub const DEFAULT_EPOCH_LINES: usize = 4096;

/// The partitions of a file source: the file itself, or the files of a directory (one per
/// partition, in name order; hidden files skipped).
pub fn partition_files(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A value of `source.properties`: librdkafka takes text, and a number or a switch is written
/// as TOML's own.
#[derive(Debug, Clone)]
pub enum PropertyValue {
    /// `"SASL_PLAINTEXT"`.
    Text(String),
    /// `2097152`.
    Number(i64),
    /// `0.5`.
    Decimal(f64),
    /// `true`.
    Switch(bool),
}

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Value;
        impl serde::de::Visitor<'_> for Value {
            type Value = PropertyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a librdkafka property's value: text, a number or true/false")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Decimal(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PropertyValue, E> {
                Ok(PropertyValue::Switch(v))
            }
        }
        d.deserialize_any(Value)
    }
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Text(t) => f.write_str(t),
            PropertyValue::Number(n) => write!(f, "{n}"),
            PropertyValue::Decimal(d) => write!(f, "{d}"),
            PropertyValue::Switch(b) => write!(f, "{b}"),
        }
    }
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `file` or `kafka`.
    pub kind: SourceKind,
    /// File source: the JSON-lines file, or a directory with one file per partition (read in
    /// parallel, each with its own watermark), relative to the job file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Kafka: bootstrap servers. Default `"127.0.0.1:9092"`.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Kafka: the send topic. Default `"tidings.send"`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Kafka: the consumer group. Default `"tidings"`.
    #[serde(default)]
    pub group: Option<String>,
    /// Kafka: also produce every dead letter (JSON: time, source, payload, reason) to this
    /// topic. Default: Parquet only.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Kafka: librdkafka client properties for every client the job makes to its brokers
    /// (SASL, timeouts, fetch sizes: docs/job-file.md "Kafka client properties"), applied
    /// after the job's own settings; those tidings needs to lose nothing are refused
    /// ([`crate::kafka::RESERVED_PROPERTIES`]).
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// File source: lines read per turn of the source (batching). Default
    /// [`DEFAULT_EPOCH_LINES`].
    #[serde(default)]
    pub epoch_lines: Option<usize>,
    /// Milliseconds of wall time between checkpoints (dedup windows, parked deliveries and
    /// source positions, one consistent cut; Kafka offsets are committed to the group only
    /// with a checkpoint). Default 1000.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_ms: u64,
    /// Milliseconds of event time per epoch, the unit of progress: a record is judged once the
    /// frontier passes its epoch. Default 1000 for a file, 100 for a followed file, 10 for
    /// Kafka ([`SourceConfig::epoch_ms`]).
    #[serde(default)]
    pub epoch_ms: Option<u64>,
    /// Milliseconds of event time per epoch for records from before the run began (more than
    /// [`crate::run::BACKLOG_AGE`] and `max_out_of_order_ms` before it: a backlog read after
    /// downtime, or a replay). A
    /// multiple of `epoch_ms`; `epoch_ms` itself: no coarser epochs. Default 1000, or the
    /// first multiple of `epoch_ms` from it ([`SourceConfig::backlog_epoch_ms`]).
    #[serde(default)]
    pub backlog_epoch_ms: Option<u64>,
    /// How far (ms) a record's event time may be behind the largest event time of its
    /// partition and still be judged at its own time; a later record is judged at the
    /// partition's watermark and counted as late. Also the latency floor of a busy
    /// partition. Default 300000 (5 minutes) for a file, 200 for Kafka.
    #[serde(default)]
    pub max_out_of_order_ms: Option<u64>,
    /// How far (ms) ahead of the wall clock an event time may be; further ahead (or before
    /// 2000) is a dead letter. Default 86400000 (one day).
    #[serde(default = "default_max_future_ms")]
    pub max_future_ms: u64,
    /// File source: keep reading lines appended to the file (a live source) until stopped.
    #[serde(default)]
    pub follow: bool,
    /// Records a source reader may have given on and not yet seen sent before it waits (the
    /// graph's memory bound, and how long a stop's drain can take behind a rate-limited
    /// account). Default [`crate::run::IN_FLIGHT`].
    #[serde(default)]
    pub in_flight: Option<usize>,
    /// Receivers the admit stage may have given on and not yet seen sent before the next
    /// epoch waits (a burst's memory bound; an epoch is never split). Default
    /// [`crate::run::IN_FLIGHT_RECEIVERS`].
    #[serde(default)]
    pub in_flight_receivers: Option<usize>,
}

fn default_max_future_ms() -> u64 {
    86_400_000
}

impl SourceConfig {
    /// The epoch (ms): the job file's, else 1000 for a file read whole (a replay: the fewer
    /// epochs a day of event times makes, the less the graph's progress tracking costs; the
    /// throughput job of 12 hours runs 1.7x faster than at 100, bench/MEASURED.md "A replay's
    /// epochs"), 100 for a file followed as a live source, and [`crate::kafka::TICK`] (10) for
    /// Kafka (a live source: its latency floor, and a burst's memory, follow the epoch;
    /// bench/MEASURED.md "A burst, paced").
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms.unwrap_or(match self.kind {
            SourceKind::File if self.follow => 100,
            SourceKind::File => 1000,
            SourceKind::Kafka => crate::kafka::TICK.as_millis() as u64,
        })
    }

    /// The epoch (ms) of event times from before the run: the job file's, else 1000 rounded up
    /// to a multiple of [`SourceConfig::epoch_ms`] (a file read whole: its own epoch). A backlog
    /// at Kafka's 10 ms leaves a record or two per epoch, and reads ~5x slower than at 1000
    /// (bench/MEASURED.md, "A backlog's coarser epochs").
    pub fn backlog_epoch_ms(&self) -> u64 {
        let unit = self.epoch_ms().max(1);
        self.backlog_epoch_ms
            .unwrap_or_else(|| 1000u64.div_ceil(unit) * unit)
    }
}

fn default_checkpoint_ms() -> u64 {
    1000
}

/// `{ num = 1, time = 300 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRule {
    /// Sends allowed per window. Default 1.
    pub num: u32,
    /// The window, in seconds. Default 300.
    pub time: u64,
}

/// `{ num = 5 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyRule {
    /// Sends allowed per receiver per channel per local day. Default 5.
    pub num: u32,
}

fn default_lateness() -> u64 {
    3600
}

/// `[dedup]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Content rule. Default `{ num = 1, time = 300 }`.
    #[serde(default = "DedupConfig::default_content")]
    pub content: ContentRule,
    /// Frequency rule. Default `{ num = 5 }`.
    #[serde(default = "DedupConfig::default_frequency")]
    pub frequency: FrequencyRule,
    /// How far behind the event-time watermark (seconds) a record may arrive and still see
    /// the full dedup state; older state is evicted. Default 3600.
    #[serde(default = "default_lateness")]
    pub lateness: u64,
}

impl DedupConfig {
    fn default_content() -> ContentRule {
        ContentRule { num: 1, time: 300 }
    }
    fn default_frequency() -> FrequencyRule {
        FrequencyRule { num: 5 }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            content: Self::default_content(),
            frequency: Self::default_frequency(),
            lateness: default_lateness(),
        }
    }
}

fn default_night() -> String {
    "00:00-08:00".into()
}
fn default_release() -> String {
    "09:00".into()
}

/// `[shield]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShieldConfig {
    /// Local night window, start inclusive, end exclusive. Default `"00:00-08:00"`.
    #[serde(default = "default_night")]
    pub night: String,
    /// Local time night_delay messages are released. Default `"09:00"`.
    #[serde(default = "default_release")]
    pub release_at: String,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        ShieldConfig {
            night: default_night(),
            release_at: default_release(),
        }
    }
}

/// `[discard]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {
    /// Template ids whose messages are discarded. Default none.
    #[serde(default)]
    pub templates: Vec<i64>,
}

/// `[whitelist]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhitelistConfig {
    /// When non-empty, only these receivers are sent to. Default none.
    #[serde(default)]
    pub receivers: Vec<String>,
}

fn default_tracking_dir() -> PathBuf {
    "var/tracking".into()
}
fn default_redis_prefix() -> String {
    tidings_sinks::tracking::redis::PREFIX.into()
}
fn default_flush_rows() -> usize {
    200_000
}
fn default_flush_ms() -> u64 {
    1000
}

/// `[tracking]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// Where the Parquet tables live, relative to the job file. Default `"var/tracking"`.
    #[serde(default = "default_tracking_dir")]
    pub dir: PathBuf,
    /// Redis URL for real-time tracking (`redis://host:port[/db]`). Default: none.
    #[serde(default)]
    pub redis: Option<String>,
    /// Seconds a receiver's Redis list lives after its last row. Default: until the end of
    /// the local day.
    #[serde(default)]
    pub redis_user_ttl_secs: Option<u64>,
    /// Prefix of every Redis key. Default `"tidings:"`.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// Rows a worker buffers before writing a Parquet file. Default 200000.
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// Longest time (ms) a row waits in the buffer. Default 1000.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Seconds between compaction passes over the Parquet tables (0: never). Default 600.
    #[serde(default = "default_compact_every")]
    pub compact_every_secs: u64,
    /// Seconds a file replaced by a compacted one stays for queries that listed it. Default 600.
    #[serde(default = "default_compact_every")]
    pub compact_grace_secs: u64,
    /// Days of `date=` partitions kept (the local date; older ones are deleted). Default: all.
    #[serde(default)]
    pub retain_days: Option<u32>,
}

fn default_compact_every() -> u64 {
    600
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            dir: default_tracking_dir(),
            redis: None,
            redis_user_ttl_secs: None,
            redis_prefix: default_redis_prefix(),
            flush_rows: default_flush_rows(),
            flush_interval_ms: default_flush_ms(),
            compact_every_secs: default_compact_every(),
            compact_grace_secs: default_compact_every(),
            retain_days: None,
        }
    }
}

/// A checked job, paths resolved against the job file's directory.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job file.
    pub path: PathBuf,
    /// The directory relative paths resolve against.
    pub base: PathBuf,
    /// As written.
    pub file: JobFile,
    /// The time zone.
    pub tz: Tz,
    /// The templates.
    pub templates: Arc<Templates>,
    /// Receiver validation.
    pub receivers: ReceiverValidator,
    /// The night window.
    pub night: NightWindow,
    /// The release time.
    pub release_at: NaiveTime,
    /// The source file (file source).
    pub source_path: Option<PathBuf>,
    /// Where the tracking tables live (a directory, or an `s3://` prefix).
    pub tracking_dir: tidings_sinks::tracking::TrackingDir,
    /// The state directory on this machine (`local_state_dir` when `state_dir` is on an
    /// object store).
    pub state_dir: PathBuf,
    /// `state_dir` on an object store: where the checkpoints and the run lock are shared.
    pub state_store: Option<tidings_sinks::tracking::ObjectDir>,
    /// Template id → account name.
    pub account_of: BTreeMap<i64, String>,
    /// The Kafka source (kafka source).
    pub kafka: Option<KafkaSettings>,
    /// The admin API, when the job has one.
    pub admin: Option<AdminSettings>,
    /// The send API's settings (defaults when the file has no `[gateway]`).
    pub gateway: GatewaySettings,
    /// Epochs and lateness of the source.
    pub event: tidings_operators::event_time::EventTime,
    /// Wall time between checkpoints.
    pub checkpoint: std::time::Duration,
    /// The templates' campaigns (`cron` templates with a crowd).
    pub campaigns: Vec<crate::campaign::Campaign>,
    /// The folder a template's `crowd` is read from: the templates file's.
    pub crowd_dir: PathBuf,
}

impl Job {
    /// The forms a receiver a user typed may be tracked under: as typed, and as the gate
    /// writes it when it reads as a phone number (`+86 138 0013 8000` is tracked as
    /// `13800138000`). Both are looked up: a user id that also reads as a phone keeps its own.
    pub fn receiver_forms(&self, typed: &str) -> Vec<String> {
        receiver_forms(&self.receivers, typed)
    }

    /// Reads, parses and checks a job file to run it.
    pub fn load(path: &Path) -> Result<Job, JobError> {
        Job::load_as(path, LoadMode::Run)
    }

    /// Reads a job file only to read its tracking: provider secrets need not be set.
    pub fn load_for_reading(path: &Path) -> Result<Job, JobError> {
        Job::load_as(path, LoadMode::Read)
    }

    /// Reads, parses and checks a job file; every problem at once.
    pub fn load_as(path: &Path, mode: LoadMode) -> Result<Job, JobError> {
        let shown = path.display().to_string();
        let one = |p: String| JobError { problems: vec![p] };
        let bytes = std::fs::read(path)
            .map_err(|e| one(format!("{shown}: cannot read the job file: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            one(format!(
                "{shown}: the job file is not UTF-8 (byte {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let text = strip_bom(&text);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let first = match toml::from_str::<JobFile>(text) {
            Ok(file) => return Job::check_as(path, base, file, mode),
            Err(first) => first,
        };
        let mut problems = vec![format!("{shown}: {}", toml_error_line(text, &first))];
        // serde stops at the first problem; the others are found section by section.
        let Ok(mut table) = text.parse::<toml::Table>() else {
            return Err(JobError { problems });
        };
        let broken = section_problems(&table);
        let mut first_seen = false;
        for b in &broken {
            let message = b.line.split_once(": ").map_or(b.line.as_str(), |(_, m)| m);
            if !first_seen && first.message().contains(message) {
                first_seen = true;
            } else {
                problems.push(format!("{shown}: {}", b.line));
            }
        }
        // The rest of the file is checked too: without the broken parts, whose names the
        // check must then not complain of (`account `x` is not defined`).
        let mut removed = Vec::new();
        for b in &broken {
            match &b.name {
                Some(n) => {
                    if let Some(t) = table.get_mut(&b.top).and_then(|t| t.as_table_mut()) {
                        t.remove(n);
                    }
                    removed.push(format!("`{n}`"));
                }
                None => {
                    table.remove(&b.top);
                }
            }
        }
        if let Ok(file) = toml::Value::Table(table).try_into::<JobFile>()
            && let Err(rest) = Job::check_as(path, base, file, mode)
        {
            problems.extend(
                rest.problems
                    .into_iter()
                    .filter(|p| !removed.iter().any(|n| p.contains(n.as_str()))),
            );
        }
        Err(JobError { problems })
    }

    /// Checks a parsed job file to run it; every problem at once.
    pub fn check(path: &Path, base: PathBuf, file: JobFile) -> Result<Job, JobError> {
        Job::check_as(path, base, file, LoadMode::Run)
    }

    /// Checks a parsed job file for `mode`; every problem at once.
    pub fn check_as(
        path: &Path,
        base: PathBuf,
        mut file: JobFile,
        mode: LoadMode,
    ) -> Result<Job, JobError> {
        let run = mode == LoadMode::Run;
        let shown = path.display().to_string();
        let mut problems = Vec::new();
        check_groups(&mut file, &shown, &mut problems);
        let mut bad = |key: &str, msg: String| problems.push(format!("{shown}: {key}: {msg}"));
        let (tz, receivers, night, release_at) = check_rules(&file, &mut bad);
        let (source_path, kafka) = check_source(&file.source, &base, run, &mut bad);
        let admin = file.admin.as_ref().filter(|_| run).and_then(|a| {
            let bind: std::net::SocketAddr = match a.bind.parse() {
                Ok(b) => b,
                Err(_) => {
                    bad(
                        "admin.bind",
                        format!("`{}` is not an address; write IP:PORT, e.g. \"127.0.0.1:9464\"", a.bind),
                    );
                    return None;
                }
            };
            let token = match a.token.as_deref().map(env_value).transpose() {
                Ok(t) => t.filter(|t| !t.is_empty()),
                Err(e) => {
                    bad("admin.token", format!("{e} or write the token"));
                    return None;
                }
            };
            if !bind.ip().is_loopback() && token.is_none() {
                bad(
                    "admin.bind",
                    format!("{bind} is not a loopback address, so admin.token is required; set token = \"${{ADMIN_TOKEN}}\" or bind 127.0.0.1"),
                );
                return None;
            }
            Some(AdminSettings { bind, token })
        });
        let gateway = gateway_settings(file.gateway.as_ref(), &mut bad);
        check_accounts(&file, &base, run, &shown, &mut problems);
        let templates_path = base.join(&file.templates);
        let templates = read_templates(&templates_path, &shown, &mut problems);
        let account_of = route_templates(&file, &templates, &templates_path, &shown, &mut problems);
        let campaigns = campaigns_of(
            &templates,
            &templates_path,
            file.source.kind == SourceKind::Kafka,
            run,
            tz,
            &mut problems,
        );
        use tidings_sinks::tracking::TrackingDir;
        let tracking_dir = TrackingDir::parse(&file.tracking.dir.to_string_lossy(), &base)
            .unwrap_or_else(|why| {
                problems.push(format!("{shown}: tracking.dir: {why}"));
                TrackingDir::Local(base.join("var/tracking"))
            });
        let state_store = file
            .state_dir
            .as_ref()
            .map(|s| s.to_string_lossy().to_string())
            .filter(|s| s.contains("://"))
            .and_then(
                |url| match tidings_sinks::tracking::ObjectDir::parse(&url) {
                    Ok(o) => Some(o),
                    Err(why) => {
                        problems.push(format!("{shown}: state_dir: {why}"));
                        None
                    }
                },
            );
        let local_named = match (&file.state_dir, &file.local_state_dir) {
            (Some(s), _) if !s.to_string_lossy().contains("://") => {
                if file.local_state_dir.is_some() {
                    problems.push(format!(
                        "{shown}: local_state_dir: only with state_dir on an object store (s3://…); remove it, or move state_dir there"
                    ));
                }
                Some(s.clone())
            }
            (Some(_), l) => Some(l.clone().unwrap_or_else(|| PathBuf::from("var/state"))),
            (None, Some(_)) => {
                problems.push(format!(
                    "{shown}: local_state_dir: only with state_dir on an object store (s3://…); remove it, or set state_dir = \"s3://BUCKET/PREFIX\""
                ));
                None
            }
            (None, None) => None,
        };
        let state_dir = match (&local_named, &tracking_dir) {
            (Some(s), _) => base.join(s),
            (None, TrackingDir::Local(t)) => t
                .parent()
                .map(|p| p.join("state"))
                .unwrap_or_else(|| base.join("state")),
            // Tracking on an object store: state stays on this machine, beside the job file.
            (None, TrackingDir::Object(_)) => base.join("var/state"),
        };
        let default_bound = match file.source.kind {
            SourceKind::File => 300_000,
            SourceKind::Kafka => 200,
        };
        let event = tidings_operators::event_time::EventTime {
            epoch_ms: file.source.epoch_ms().max(1) as i64,
            max_out_of_order_ms: file.source.max_out_of_order_ms.unwrap_or(default_bound) as i64,
            max_future_ms: file.source.max_future_ms as i64,
            backlog: tidings_operators::event_time::Backlog::NONE,
        }
        // Which event times are a backlog is known when a run starts (`run::build`).
        .with_backlog(i64::MIN, file.source.backlog_epoch_ms() as i64);
        let checkpoint = std::time::Duration::from_millis(file.source.checkpoint_ms.max(1));
        if let Some(why) = tracking_dir.local().and_then(dir_problem) {
            problems.push(format!("{shown}: tracking.dir: {why}; choose a directory"));
        }
        if run && let Some(why) = dir_problem(&state_dir) {
            let key = if state_store.is_some() {
                "local_state_dir (default: var/state beside the job file)"
            } else if file.state_dir.is_some() {
                "state_dir"
            } else {
                "state_dir (default: beside tracking.dir)"
            };
            problems.push(format!("{shown}: {key}: {why}; choose a directory"));
        }
        if !problems.is_empty() {
            return Err(JobError { problems });
        }
        Ok(Job {
            path: path.to_path_buf(),
            base,
            event,
            checkpoint,
            campaigns,
            crowd_dir: templates_path
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            tz,
            templates: Arc::new(templates),
            receivers,
            night,
            release_at,
            source_path,
            tracking_dir,
            state_dir,
            state_store,
            account_of,
            kafka,
            admin,
            gateway,
            file,
        })
    }
}

/// The forms `typed` may be tracked under: as typed (trimmed), and, when it reads as a phone
/// number of `receivers`' region, its normal form (`+86 138 0013 8000` → `13800138000`).
pub fn receiver_forms(receivers: &ReceiverValidator, typed: &str) -> Vec<String> {
    let typed = typed.trim();
    let mut forms = vec![typed.to_string()];
    if let Ok(n) = receivers.phone(typed)
        && n != typed
    {
        forms.push(n);
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys a section's structure accepts, from the parser itself (the unknown-key error
    /// lists them).
    fn keys_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let err = toml::from_str::<T>("tidings_probe_key = 1\n")
            .err()
            .expect("an unknown key is refused");
        let msg = err.message().to_string();
        let (_, expected) = msg
            .split_once("expected")
            .unwrap_or_else(|| panic!("no key list in {msg:?}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_job_file_reference_names_every_key() {
        let doc = include_str!("../../docs/job-file.md");
        let section = |heading: &str| -> &str {
            let start = doc
                .find(heading)
                .unwrap_or_else(|| panic!("docs/job-file.md has no section {heading}"));
            let rest = &doc[start + heading.len()..];
            &rest[..rest.find("\n### ").unwrap_or(rest.len())]
        };
        let sections = [
            ("### Top level", keys_of::<JobFile>()),
            ("### `[source]`", keys_of::<SourceConfig>()),
            ("### `[dedup]`", keys_of::<DedupConfig>()),
            ("### `[shield]`", keys_of::<ShieldConfig>()),
            ("### `[discard]`", keys_of::<DiscardConfig>()),
            ("### `[whitelist]`", keys_of::<WhitelistConfig>()),
            ("### `[tracking]`", keys_of::<TrackingConfig>()),
            ("### `[accounts.NAME]`", keys_of::<AccountConfig>()),
            (
                "### `[groups.NAME]`",
                keys_of::<tidings_sinks::route::GroupConfig>(),
            ),
            ("### `[admin]`", keys_of::<AdminConfig>()),
            ("### `[gateway]`", keys_of::<GatewayConfig>()),
        ];
        for (heading, keys) in sections {
            assert!(!keys.is_empty(), "{heading}: no keys found");
            let text = section(heading);
            for k in keys {
                assert!(
                    text.contains(&format!("`{k}`")),
                    "docs/job-file.md, {heading}: the key `{k}` is not documented"
                );
            }
        }
        // The example at the top is a job file the parser takes.
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("an example job file");
        toml::from_str::<JobFile>(example).unwrap_or_else(|e| panic!("the example: {e}"));
    }

    /// The `[source]` of a job file with these lines in it.
    fn source_of(lines: &str) -> SourceConfig {
        let text = format!("name = \"e\"\ntemplates = \"t.toml\"\n[source]\n{lines}\n");
        toml::from_str::<JobFile>(&text)
            .unwrap_or_else(|e| panic!("{lines}: {e}"))
            .source
    }

    /// A file read whole is a replay (1000 ms epochs), a followed file and Kafka are live
    /// (100 and 10); the job file's own value wins.
    #[test]
    fn epochs_default_by_source() {
        let epoch = |source: &str| source_of(source).epoch_ms();
        assert_eq!(epoch("kind = \"file\"\npath = \"r.jsonl\""), 1000);
        assert_eq!(
            epoch("kind = \"file\"\npath = \"r.jsonl\"\nfollow = true"),
            100
        );
        assert_eq!(epoch("kind = \"kafka\""), 10);
        assert_eq!(
            epoch("kind = \"file\"\npath = \"r.jsonl\"\nepoch_ms = 5"),
            5
        );
        assert_eq!(epoch("kind = \"kafka\"\nepoch_ms = 50"), 50);
    }

    /// A backlog's epochs are 1000 ms, or the first multiple of the job's epoch from it; the job
    /// file's own value wins.
    #[test]
    fn backlog_epochs_default_to_a_second() {
        let backlog = |source: &str| source_of(source).backlog_epoch_ms();
        assert_eq!(backlog("kind = \"kafka\""), 1000);
        assert_eq!(backlog("kind = \"file\"\npath = \"r.jsonl\""), 1000);
        assert_eq!(backlog("kind = \"kafka\"\nepoch_ms = 300"), 1200);
        assert_eq!(backlog("kind = \"kafka\"\nepoch_ms = 5000"), 5000);
        assert_eq!(backlog("kind = \"kafka\"\nbacklog_epoch_ms = 60000"), 60000);
    }

    #[test]
    fn env_references_resolve() {
        let path = std::env::var("PATH").unwrap();
        assert_eq!(env_value("${PATH}"), Ok(path));
        assert_eq!(env_value("plain"), Ok("plain".to_string()));
        assert!(
            env_value("${TIDINGS_SURELY_UNSET_42}")
                .unwrap_err()
                .contains("TIDINGS_SURELY_UNSET_42")
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const TEMPLATES: &str = "[[template]]\nid = 1\nname = \"x\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"sms-main\"\n";

    #[test]
    fn the_example_job_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/job.toml");
        let job = Job::load(&root).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(job.file.name, "demo");
        assert!(job.templates.len() >= 5);
    }

    #[test]
    fn in_flight_is_the_run_default_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t.toml", TEMPLATES);
        write(dir.path(), "r.jsonl", "");
        let job = |in_flight: &str| {
            write(
                dir.path(),
                "job.toml",
                &format!(
                    "name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n{in_flight}\n[accounts.sms-main]\nchannel = \"sms\"\nprovider = \"blackhole\"\n"
                ),
            )
        };
        let default = Job::load(&job("")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            crate::RunOptions::for_job(&default).in_flight,
            crate::run::IN_FLIGHT
        );
        let set = Job::load(&job("in_flight = 50000")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crate::RunOptions::for_job(&set).in_flight, 50_000);
        let err = Job::load(&job("in_flight = 0")).unwrap_err().to_string();
        assert!(
            err.contains("source.in_flight") && err.contains("job.toml"),
            "{err}"
        );
    }

    /// `source.properties` reach every Kafka client as librdkafka text under librdkafka's own
    /// names (numbers, decimals and switches written as TOML's own; a `${NAME}` read from the
    /// environment); a property tidings sets itself (under any of its names), one librdkafka
    /// does not know, a value it refuses (a secret never shown), one property given twice and
    /// properties on a file source are each one line naming the file, the key and the fix.
    #[test]
    fn kafka_properties_are_checked_and_kept_as_text() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t.toml", TEMPLATES);
        write(dir.path(), "r.jsonl", "");
        let job = |source: &str, properties: &str| {
            write(
                dir.path(),
                "job.toml",
                &format!(
                    "name = \"x\"\ntemplates = \"t.toml\"\n[source]\n{source}\n[source.properties]\n{properties}\n[accounts.sms-main]\nchannel = \"sms\"\nprovider = \"blackhole\"\n"
                ),
            )
        };
        let kafka = "kind = \"kafka\"";
        let ok = Job::load(&job(
            kafka,
            "\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"tidings\"\n\"sasl.password\" = \"${HOME}\"\n\"fetch.max.bytes\" = 2097152\n\"check.crcs\" = true\n\"linger.ms\" = 0.5\n\"topic.message.timeout.ms\" = 9000",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let props = &ok.kafka.as_ref().expect("a Kafka job").properties;
        let home = std::env::var("HOME").expect("HOME is set");
        for (key, value) in [
            ("fetch.max.bytes", "2097152"),
            ("check.crcs", "true"),
            // librdkafka's own names: an alias's property, a topic's without its prefix.
            ("sasl.mechanisms", "PLAIN"),
            ("queue.buffering.max.ms", "0.5"),
            ("message.timeout.ms", "9000"),
            ("sasl.password", home.as_str()),
        ] {
            assert!(
                props.contains(&(key.to_string(), value.to_string())),
                "{key}: {props:?}"
            );
        }
        assert_eq!(props.len(), 8);
        // Applied after a client's own settings, a property replaces the client's own under
        // another of its names.
        let mut config = rdkafka::ClientConfig::new();
        config.set("linger.ms", "5");
        crate::kafka::WithProperties::with_properties(&mut config, props);
        assert_eq!(config.get("linger.ms"), None);
        assert_eq!(config.get("queue.buffering.max.ms"), Some("0.5"));
        for (properties, want) in [
            ("\"group.id\" = \"other\"", "set source.group instead"),
            ("\"enable.auto.commit\" = true", "only with a checkpoint"),
            (
                "\"topic.enable.auto.commit\" = true",
                "only with a checkpoint",
            ),
            (
                "\"auto.offset.reset\" = \"latest\"",
                "reads its topic from the start",
            ),
            (
                "\"topic.auto.offset.reset\" = \"latest\"",
                "reads its topic from the start",
            ),
            (
                "\"bootstrap.servers\" = \"b:9092\"",
                "set source.brokers instead",
            ),
            ("\"acks\" = 0", "acks=all"),
            ("\"request.required.acks\" = 1", "acks=all"),
            (
                "\"isolation.level\" = \"read_uncommitted\"",
                "only committed records",
            ),
            ("\"plugin.library.paths\" = \"x.so\"", "no library"),
            ("\"fetch.max.byte\" = 1", "librdkafka has no such property"),
            ("\"fetch.wait.max.ms\" = \"soon\"", "librdkafka refuses it"),
            (
                "\"sasl.password\" = \"${TIDINGS_SURELY_UNSET_42}\"",
                "TIDINGS_SURELY_UNSET_42",
            ),
            ("\"sasl.password\" = \"pa${ss\"", "not shown: a secret"),
            ("\"fetch.wait.max.ms\" = 10.5", "is a whole number here"),
            ("\"linger.ms\" = nan", "is a whole number here"),
            (
                "\"linger.ms\" = 5\n\"queue.buffering.max.ms\" = 6",
                "keep one",
            ),
        ] {
            let err = Job::load(&job(kafka, properties)).unwrap_err().to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            let key = properties
                .rsplit("\n")
                .next()
                .unwrap()
                .split('"')
                .nth(1)
                .unwrap();
            assert!(
                err.contains("job.toml")
                    && err.contains(&format!("source.properties.\"{key}\""))
                    && err.contains(want),
                "{properties}: {err}"
            );
        }
        // A value that is neither text, a number nor a switch is one line naming its line.
        let err = Job::load(&job(kafka, "\"client.id\" = [1, 2]"))
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("job.toml")
                && err.contains("line 6")
                && err.contains("text, a number or true/false"),
            "{err}"
        );
        // A secret's value is never in the error: OIDC's client secret is refused by this
        // build (no libcurl), and a malformed reference in a password is not quoted.
        let err = Job::load(&job(kafka, "\"sasl.password\" = \"pa${ss\""))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("${ss"), "{err}");
        let err = Job::load(&job(
            kafka,
            "\"sasl.oauthbearer.client.secret\" = \"hunter2-very-secret\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sasl.oauthbearer.client.secret") && !err.contains("hunter2"),
            "{err}"
        );
        // Only to read what the job wrote, an unset variable is let be (a reserved property
        // is refused all the same).
        let read = Job::load_for_reading(&job(
            kafka,
            "\"sasl.password\" = \"${TIDINGS_SURELY_UNSET_42}\"",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        // Left out, and a client cannot be made from the job (`tidings send`, `gateway`).
        let read = read.kafka.expect("a Kafka job");
        assert!(read.properties.is_empty(), "{:?}", read.properties);
        let why = read.ready().unwrap_err();
        assert!(
            why.contains("source.properties.\"sasl.password\"")
                && why.contains("TIDINGS_SURELY_UNSET_42"),
            "{why}"
        );
        let err =
            Job::load_for_reading(&job(kafka, "\"group.id\" = \"${TIDINGS_SURELY_UNSET_42}\""))
                .unwrap_err()
                .to_string();
        assert!(err.contains("set source.group instead"), "{err}");
        let err = Job::load(&job(
            "kind = \"file\"\npath = \"r.jsonl\"",
            "\"client.id\" = \"x\"",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("job.toml")
                && err.contains("source.properties")
                && err.contains("kind = \"kafka\""),
            "{err}"
        );
    }

    /// `job.toml` in `dir`: a file source, one blackhole SMS account, and `extra` (sections)
    /// between them.
    fn small_job(dir: &Path, extra: &str) -> PathBuf {
        write(dir, "t.toml", TEMPLATES);
        write(dir, "r.jsonl", "");
        write(
            dir,
            "job.toml",
            &format!(
                "name = \"x\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n{extra}[accounts.sms-main]\nchannel = \"sms\"\nprovider = \"blackhole\"\n"
            ),
        )
    }

    #[test]
    fn unknown_key_is_one_line_naming_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let job = small_job(dir.path(), "[dedup]\ncontnet = { num = 1, time = 3 }\n");
        let err = Job::load(&job).unwrap_err().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("job.toml") && err.contains("contnet") && err.contains("line 7"),
            "{err}"
        );
    }

    /// A receiver typed to trace is looked up as typed and as the gate tracks a phone.
    #[test]
    fn a_traced_phone_is_looked_up_as_it_is_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job::load(&small_job(dir.path(), "")).unwrap();
        assert_eq!(
            job.receiver_forms(" +86 138 0013 8000"),
            ["+86 138 0013 8000", "13800138000"]
        );
        assert_eq!(job.receiver_forms("13800138000"), ["13800138000"]);
        assert_eq!(job.receiver_forms("alice"), ["alice"]);
    }

    #[test]
    fn every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t.toml", TEMPLATES);
        let job = write(
            dir.path(),
            "job.toml",
            "name = \"x\"\ntimezone = \"Mars/Base\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"missing.jsonl\"\nepoch_ms = 100\nbacklog_epoch_ms = 150\n[dedup]\ncontent = { num = 10000000, time = 60 }\n[shield]\nnight = \"late\"\n[accounts.other]\nchannel = \"email\"\nprovider = \"outbox\"\n",
        );
        let err = Job::load(&job).unwrap_err();
        let text = err.to_string();
        for want in [
            "timezone",
            "shield.night",
            "source.path",
            "accounts.other.dir",
            "account `sms-main` is not defined",
            "source.backlog_epoch_ms: 150 is not a multiple of source.epoch_ms (100)",
            "dedup.content.num: 10000000 is more than 1000000",
        ] {
            assert!(text.contains(want), "missing {want} in:\n{text}");
        }
        assert!(err.problems.iter().all(|p| p.contains(".toml")), "{text}");
    }

    #[test]
    fn state_on_an_object_store_keeps_working_files_local_and_misuse_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t.toml", TEMPLATES);
        write(dir.path(), "r.jsonl", "");
        let job_with = |top: &str| {
            write(
                dir.path(),
                "job.toml",
                &format!(
                    "name = \"x\"\ntemplates = \"t.toml\"\n{top}\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n[accounts.sms-main]\nchannel = \"sms\"\nprovider = \"blackhole\"\n"
                ),
            )
        };
        let job = Job::load(&job_with("state_dir = \"s3://b/jobs/x\"")).unwrap();
        assert_eq!(
            job.state_store.as_ref().map(|s| s.url()),
            Some("s3://b/jobs/x")
        );
        assert_eq!(job.state_dir, dir.path().join("var/state"));
        let job = Job::load(&job_with(
            "state_dir = \"s3://b/jobs/x\"\nlocal_state_dir = \"here\"",
        ))
        .unwrap();
        assert_eq!(job.state_dir, dir.path().join("here"));
        for (top, want) in [
            (
                "local_state_dir = \"here\"",
                "local_state_dir: only with state_dir on an object store",
            ),
            (
                "state_dir = \"s\"\nlocal_state_dir = \"here\"",
                "local_state_dir: only with",
            ),
            (
                "state_dir = \"gs://b/x\"",
                "state_dir: `gs://b/x`: the gs:// scheme is not supported",
            ),
        ] {
            let err = Job::load(&job_with(top)).unwrap_err().to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("job.toml: ") && err.contains(want), "{err}");
        }
    }
}
