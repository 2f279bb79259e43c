//! Campaigns: a `cron` template sent to its crowd on a schedule (austin's 定时任务 with a
//! crowd file, run by xxl-job there).
//!
//! A template with `template_type = "cron"`, a `cron` expression and a `crowd` CSV is a
//! campaign. At each time the expression names (in the job's time zone), process 0 of the
//! running job reads the crowd and produces its requests to the job's own topic, stamped as
//! they are produced, like any request: the graph judges them at that event time, so a
//! replay of the topic decides the campaign as it was decided (a request stamped with the
//! scheduled time instead would be read after the watermark passed it, and be judged late).
//!
//! What was fired is remembered in `state_dir/campaigns.json` (written once every request
//! was acknowledged), so a restart does not fire a time again; a time missed while the job
//! was down is fired at its start if it is at most [`MISFIRE_MS`] old, and otherwise
//! skipped with a warning. A fire interrupted before it was recorded is fired again whole
//! (at least once: the template's content dedup takes the repeats within its window).

pub use tidings_model::cron;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;
use tidings_model::Template;
use tidings_operators::Clock;
use tidings_operators::book::CampaignWatch;
use tidings_operators::checkpoint::write_durably;
use tidings_operators::live::Live;

pub use cron::Cron;

use tidings_sinks::tracking::ObjectDir;

use crate::kafka::{KafkaSettings, Outgoing, produce_acked};

/// How old a missed time may be and still be fired at the job's start.
pub const MISFIRE_MS: i64 = 10 * 60 * 1000;

/// MessageParams per request: austin's batch of a crowd.
const PER_REQUEST: usize = 100;

/// The largest request a campaign produces: under the broker's default `message.max.bytes`
/// (1,000,000) and the job's `max_record_bytes` (1 MiB), so a crowd of long variables is
/// sent in more, smaller requests instead of failing at the broker.
pub const REQUEST_BYTES: usize = 900_000;

/// One campaign of a job.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// The template sent.
    pub template_id: i64,
    /// The template's name.
    pub name: String,
    /// The expression as written.
    pub expr: String,
    /// The expression parsed.
    pub cron: Cron,
    /// The crowd file.
    pub crowd: PathBuf,
}

/// The campaign of template `t`, if it is one (`cron::campaign_cron`), its crowd under `dir`
/// (the templates file's folder).
pub fn of_template(t: &Template, kafka: bool, dir: &Path) -> Result<Option<Campaign>, String> {
    let (Some(cron), Some(expr), Some(crowd)) = (cron::campaign_cron(t, kafka)?, &t.cron, &t.crowd)
    else {
        return Ok(None);
    };
    Ok(Some(Campaign {
        template_id: t.id,
        name: t.name.clone(),
        expr: expr.clone(),
        cron,
        crowd: dir.join(crowd),
    }))
}

/// Refuses a campaign whose expression names no time in the next five years (from the wall
/// clock: a check at the door, never a judgement of the graph). With `past_ok` (a job file's,
/// loaded) one whose times have all passed (a one-off campaign of a year gone by) is said and
/// kept, firing nothing: a job must not stop loading because a date went by.
pub fn fires(c: &Campaign, tz: Tz, past_ok: bool) -> Result<(), String> {
    let now = tidings_model::time::wall_ms();
    if c.cron.next_after(tz, now).is_some() {
        return Ok(());
    }
    let passed = c
        .cron
        .first_year()
        .and_then(|y| tz.with_ymd_and_hms(y, 1, 1, 0, 0, 0).earliest())
        .map(|start| start.timestamp_millis() - 1_000)
        .is_some_and(|from| from < now && c.cron.next_after(tz, from).is_some());
    match (passed, past_ok) {
        (true, true) => {
            tracing::warn!(
                "template {}: every time its cron `{}` names has passed: it sends nothing",
                c.template_id,
                c.expr
            );
            Ok(())
        }
        (true, false) => Err(format!(
            "cron: every time `{}` names has passed; check its year",
            c.expr
        )),
        (false, _) => Err(format!(
            "cron: `{}` names no time in the next five years; check its day, month and year",
            c.expr
        )),
    }
}

/// A template's campaign checked as a job file's is: [`of_template`], [`fires`] (`past_ok`
/// as it says) and, with `read_crowd`, the crowd's header. `Ok(None)`: the template is no
/// campaign.
pub fn checked(
    t: &Template,
    kafka: bool,
    dir: &Path,
    tz: Tz,
    read_crowd: bool,
    past_ok: bool,
) -> Result<Option<Campaign>, String> {
    let Some(c) = of_template(t, kafka, dir)? else {
        return Ok(None);
    };
    fires(&c, tz, past_ok)?;
    if read_crowd {
        check_crowd(&c.crowd).map_err(|why| format!("crowd: {why}"))?;
    }
    Ok(Some(c))
}

/// The campaigns of `job` as the book restored from `checkpoints` has them (live template
/// changes outlive restarts).
pub fn restored(
    job: &crate::Job,
    checkpoints: &tidings_operators::checkpoint::Checkpoints,
) -> anyhow::Result<Vec<Template>> {
    let mut validator = crate::run::validator(job);
    validator.book_mut().restore(checkpoints)?;
    Ok(validator.book().campaign_templates())
}

/// The campaigns of `job` as its newest checkpoint has them, for reading verbs (the job file's
/// when it has none).
pub fn current(job: &crate::Job) -> anyhow::Result<Vec<Campaign>> {
    let Some(kafka) = job.kafka.as_ref() else {
        return Ok(job.campaigns.clone());
    };
    if !job.state_dir.join("checkpoints").is_dir() {
        return Ok(job.campaigns.clone());
    }
    // A running job deletes its older cuts as it goes: one read while it went is read again.
    let mut tries = 0;
    let templates = loop {
        let read =
            tidings_operators::checkpoint::Checkpoints::open(&job.state_dir, &kafka.topic, false)
                .map_err(anyhow::Error::from)
                .and_then(|c| restored(job, &c));
        match read {
            Err(_) if tries < 3 => tries += 1,
            read => break read?,
        }
    };
    Ok(templates
        .iter()
        .filter_map(|t| of_template(t, true, &job.crowd_dir).ok().flatten())
        .collect())
}

/// One receiver of a crowd and its variables.
pub type Member = (String, serde_json::Map<String, serde_json::Value>);

/// Reads a crowd CSV: a header row naming a `userId` (austin's) or `receiver` column, whose
/// cells are the receivers; every other column is a variable of that name. A row without a
/// receiver is an error naming its line.
pub fn read_crowd(path: &Path) -> Result<Vec<Member>, String> {
    let shown = path.display();
    let (mut reader, header, at) = open_crowd(path)?;
    let mut members = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("{shown}: {e}"))?;
        let receiver = row.get(at).unwrap_or_default();
        if receiver.is_empty() {
            let line = row.position().map_or(0, |p| line_at(path, p.byte()));
            return Err(format!(
                "{shown}: line {line}: no receiver in column `{}`",
                &header[at]
            ));
        }
        let variables = header
            .iter()
            .zip(row.iter())
            .enumerate()
            .filter(|(c, _)| *c != at)
            .map(|(_, (name, value))| (name.to_string(), serde_json::Value::from(value)))
            .collect();
        members.push((receiver.to_string(), variables));
    }
    Ok(members)
}

/// The line of `path` a row the reader placed at `byte` is on: the reader's own line count
/// misses blank lines it skipped and the `\n` of a CRLF before the row, so its byte is
/// stepped past line ends and the lines before it counted.
fn line_at(path: &Path, byte: u64) -> u64 {
    let Ok(text) = std::fs::read(path) else {
        return 0;
    };
    let start = usize::try_from(byte).unwrap_or(usize::MAX).min(text.len());
    let at = start
        + text[start..]
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
    text[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

/// Checks a crowd file's header (at load: the rows are read when the campaign fires).
pub fn check_crowd(path: &Path) -> Result<(), String> {
    open_crowd(path).map(|_| ())
}

/// A crowd file's reader, its header and the receivers' column.
fn open_crowd(
    path: &Path,
) -> Result<(csv::Reader<std::fs::File>, csv::StringRecord, usize), String> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let header = reader
        .headers()
        .map_err(|e| format!("{shown}: {e}"))?
        .clone();
    let lower: Vec<String> = header
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let at = ["userid", "receiver"]
        .iter()
        .find_map(|name| lower.iter().position(|h| h == name))
        .ok_or_else(|| {
            format!("{shown}: no `userId` or `receiver` column in the header row; name the receivers' column userId")
        })?;
    Ok((reader, header, at))
}

/// The requests of a campaign: its crowd in requests of up to 100 MessageParams
/// (`messageParamList`) and [`REQUEST_BYTES`], each stamped `stamp` (`None`: the moment it is
/// produced). A receiver whose param alone is larger is refused, naming it.
pub fn requests(
    template_id: i64,
    members: &[Member],
    stamp: Option<i64>,
) -> Result<Vec<Outgoing>, String> {
    let head = format!(r#"{{"code":"send","messageTemplateId":{template_id},"messageParamList":["#);
    let request = |params: &[String]| Outgoing {
        key: Some(format!("campaign-{template_id}")),
        payload: format!("{head}{}]}}", params.join(",")),
        timestamp: stamp,
    };
    let (mut out, mut params, mut bytes) = (Vec::new(), Vec::new(), head.len());
    for (receiver, variables) in members {
        let param = serde_json::json!({"receiver": receiver, "variables": variables}).to_string();
        if head.len() + param.len() + 2 > REQUEST_BYTES {
            return Err(format!(
                "receiver {receiver}: its row is {} bytes as a request, more than the {REQUEST_BYTES} a request may be; shorten its variables",
                param.len()
            ));
        }
        if params.len() == PER_REQUEST || bytes + param.len() + 2 > REQUEST_BYTES {
            out.push(request(&params));
            (params, bytes) = (Vec::new(), head.len());
        }
        bytes += param.len() + 1;
        params.push(param);
    }
    if !params.is_empty() {
        out.push(request(&params));
    }
    Ok(out)
}

/// Sends a campaign's crowd to the job's topic, its requests stamped `stamp` (`None`: each
/// when it is produced); returns the receivers once every request was acknowledged.
/// `acked` holds the requests (by a hash of their body) acknowledged by earlier tries of the
/// same time: those are not produced again (a failed try was tried again whole, every 10 s
/// for 10 minutes, and each copy was a new message to its receivers), and this try's are
/// added.
pub fn fire(
    kafka: &KafkaSettings,
    c: &Campaign,
    stamp: Option<i64>,
    stop: &AtomicBool,
    acked: &mut HashSet<u64>,
) -> anyhow::Result<usize> {
    let members = read_crowd(&c.crowd).map_err(anyhow::Error::msg)?;
    let hash = |r: &Outgoing| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        r.payload.hash(&mut h);
        h.finish()
    };
    let (hashes, records): (Vec<u64>, Vec<Outgoing>) = requests(c.template_id, &members, stamp)
        .map_err(|why| anyhow::anyhow!("{}: {why}", c.crowd.display()))?
        .into_iter()
        .map(|r| (hash(&r), r))
        .filter(|(h, _)| !acked.contains(h))
        .unzip();
    let (produced, now_acked) = produce_acked(
        &kafka.brokers,
        &kafka.properties,
        &kafka.topic,
        records,
        || {},
        stop,
    );
    acked.extend(now_acked.into_iter().filter_map(|i| hashes.get(i)));
    produced?;
    Ok(members.len())
}

/// `state_dir/campaigns.json`: the last time fired, per template. With `state_dir` on an
/// object store it is kept there too (`prefix/campaigns.json`), so a job moved to another
/// machine does not send a time again.
pub struct Fired {
    path: PathBuf,
    last: BTreeMap<i64, i64>,
    store: Option<ObjectDir>,
}

const FIRED: &str = "campaigns.json";

impl Fired {
    /// Reads the file (none yet: nothing fired), and the store's copy: each template's later
    /// time of the two.
    pub fn open(state_dir: &Path, store: Option<&ObjectDir>) -> anyhow::Result<Fired> {
        let path = state_dir.join(FIRED);
        let if_bad = "; delete it to fire each campaign's next time only";
        let mut last: BTreeMap<i64, i64> = crate::read_json_or_default(&path, if_bad)?;
        if let Some(store) = store {
            let kept: BTreeMap<i64, i64> = match store.get(FIRED) {
                Ok(body) => serde_json::from_slice(&body)
                    .map_err(|e| anyhow::anyhow!("{}/{FIRED}: {e}{if_bad}", store.url()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(e.into()),
            };
            for (id, at) in kept {
                let t = last.entry(id).or_insert(at);
                *t = (*t).max(at);
            }
        }
        Ok(Fired {
            path,
            last,
            store: store.cloned(),
        })
    }

    /// The last time `template_id` was fired.
    pub fn last(&self, template_id: i64) -> Option<i64> {
        self.last.get(&template_id).copied()
    }

    /// Records that `template_id` was fired at `at_ms` (the file, then the store's copy).
    pub fn record(&mut self, template_id: i64, at_ms: i64) -> std::io::Result<()> {
        let last = self.last.entry(template_id).or_insert(at_ms);
        *last = (*last).max(at_ms);
        let body = serde_json::to_vec_pretty(&self.last).unwrap_or_default();
        write_durably(&self.path, &body)?;
        match &self.store {
            Some(store) => store.put(FIRED, body),
            None => Ok(()),
        }
    }
}

/// The time `c` is due at, `now_ms` (after its last fire, at most [`MISFIRE_MS`] ago).
pub fn due(c: &Campaign, tz: Tz, last: Option<i64>, now_ms: i64) -> Option<i64> {
    let from = last.unwrap_or(i64::MIN).max(now_ms - MISFIRE_MS - 1);
    c.cron.last_in(tz, from, now_ms)
}

/// The campaigns whose next time after the last one fired passed more than [`MISFIRE_MS`]
/// before `now_ms` and that are not due (no later time to fire): a start after a long
/// stop, which says so (a due one says it when it fires). With the first time missed.
pub fn missed<'c>(
    campaigns: &'c [Campaign],
    tz: Tz,
    fired: &Fired,
    now_ms: i64,
) -> Vec<(&'c Campaign, i64)> {
    campaigns
        .iter()
        .filter_map(|c| {
            let last = fired.last(c.template_id)?;
            let next = c.cron.next_after(tz, last)?;
            let due = due(c, tz, Some(last), now_ms);
            (next < now_ms - MISFIRE_MS && due.is_none()).then_some((c, next))
        })
        .collect()
}

/// Fires every campaign due at `now_ms` and records each one sent. One that cannot be
/// read or sent is logged (one line naming it) and not recorded, so it is tried again while
/// its time is due; returns whether any failed. A stop (Ctrl-C) ends a send at once,
/// unrecorded.
pub fn fire_due(
    campaigns: &[Campaign],
    tz: Tz,
    kafka: &KafkaSettings,
    fired: &mut Fired,
    clock: Clock,
    stop: &AtomicBool,
    tries: &mut Tries,
) -> bool {
    let now_ms = clock.now_ms();
    // A time no longer due (sent, or past its 10 minutes) needs no memory of its tries.
    tries.retain(|&(id, at), _| {
        campaigns
            .iter()
            .any(|c| c.template_id == id && due(c, tz, fired.last(id), now_ms) == Some(at))
    });
    // Stamped as produced (the system clock: librdkafka's time), as any request is: a
    // request stamped with the scheduled time would be late by the time it is read.
    let stamp = match clock {
        Clock::Fixed(t) => Some(t),
        Clock::System => None,
    };
    let mut failed = false;
    for c in campaigns {
        let last = fired.last(c.template_id);
        let Some(at) = due(c, tz, last, now_ms) else {
            continue;
        };
        let what = format!(
            "campaign of template {} ({}) at {}",
            c.template_id,
            c.name,
            shown(tz, at)
        );
        if let Some(missed) = last
            .and_then(|l| c.cron.next_after(tz, l))
            .filter(|&n| n < at)
        {
            tracing::warn!(
                "{what}: earlier times from {} on were missed (the job was down, or they could not be sent within {} minutes); not sent",
                shown(tz, missed),
                MISFIRE_MS / 60_000
            );
        }
        match fire(
            kafka,
            c,
            stamp,
            stop,
            tries.entry((c.template_id, at)).or_default(),
        ) {
            Ok(n) => {
                tries.remove(&(c.template_id, at));
                tracing::info!("{what}: {n} receiver(s) sent to {}", kafka.topic);
                // (The store's copy is written without the run's lease: a writer that lost it
                // can only write a time that was sent.)
                if let Err(e) = fired.record(c.template_id, at) {
                    tracing::error!(
                        "{what}: sent, but the time could not be recorded: {e} (it may be sent again)"
                    );
                }
            }
            Err(e) if stop.load(Ordering::Relaxed) => {
                tracing::warn!(
                    "{what}: not sent whole: {e:#}; sent again at the next start if it is still due then"
                );
                return true;
            }
            Err(e) => {
                failed = true;
                tracing::error!("{what}: not sent: {e:#}; tried again in 10 s while it is due");
            }
        }
    }
    failed
}

/// Per (template, time) being tried: the requests the broker acknowledged ([`fire`]).
pub type Tries = HashMap<(i64, i64), HashSet<u64>>;

/// A time as the job's zone writes it.
pub fn shown(tz: Tz, ms: i64) -> String {
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Fires what is due now, then starts a thread that fires each next time until `finished`
/// or `stop` is set (process 0 of a Kafka job). `campaigns` are the restored book's; `watch`
/// then says what they are (live template changes), crowds read under `crowd_dir`. It is
/// followed only while the source is current (the source's low watermark in `live` within `current_ms`
/// of the clock): while a backlog or a replay is read, the book passes through versions a
/// later change replaced, and one of those must not send a time.
pub fn schedule(
    mut campaigns: Vec<Campaign>,
    watch: CampaignWatch,
    (live, current_ms): (Live, i64),
    crowd_dir: PathBuf,
    tz: Tz,
    kafka: KafkaSettings,
    (state_dir, store): (&Path, Option<&ObjectDir>),
    clock: Clock,
    finished: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut fired = Fired::open(state_dir, store)?;
    for (c, missed) in missed(&campaigns, tz, &fired, clock.now_ms()) {
        tracing::warn!(
            "campaign of template {} ({}): its times from {} on were missed while the job was down (more than {} minutes ago); not sent",
            c.template_id,
            c.name,
            shown(tz, missed),
            MISFIRE_MS / 60_000
        );
    }
    let mut tries = Tries::new();
    // Real time, not the job's clock: under `--now` (a fixed clock) a failed try was never
    // tried again.
    let retry_at = |failed: bool| failed.then(|| std::time::Instant::now() + RETRY);
    let mut not_before = retry_at(fire_due(
        &campaigns, tz, &kafka, &mut fired, clock, &stop, &mut tries,
    ));
    let thread = std::thread::Builder::new()
        .name("campaigns".into())
        .spawn(move || {
            let mut seen: Option<Arc<Vec<Template>>> = None;
            // Looked at every 200 ms: a stop is seen at once, a time within 200 ms of it.
            while !finished.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                let now = clock.now_ms();
                let current = live
                    .source()
                    .low_watermark()
                    .is_some_and(|w| w >= now.saturating_sub(current_ms));
                if let Some(templates) = watch
                    .get()
                    .filter(|t| current && !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, t)))
                {
                    campaigns = follow(&campaigns, &templates, &crowd_dir, tz, now);
                    seen = Some(templates);
                }
                let any_due = campaigns
                    .iter()
                    .any(|c| due(c, tz, fired.last(c.template_id), now).is_some());
                if any_due && not_before.is_none_or(|t| std::time::Instant::now() >= t) {
                    not_before = retry_at(fire_due(
                        &campaigns, tz, &kafka, &mut fired, clock, &stop, &mut tries,
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })?;
    Ok(thread)
}

/// The campaigns `templates` make now (the book's newest versions), saying which of `was`
/// were added, changed or removed. A campaign added or changed live is due as at a start: a
/// time at most [`MISFIRE_MS`] old that it has not sent is sent.
pub fn follow(
    was: &[Campaign],
    templates: &[Template],
    crowd_dir: &Path,
    tz: Tz,
    now_ms: i64,
) -> Vec<Campaign> {
    let mut next = Vec::new();
    for t in templates {
        let c = match of_template(t, true, crowd_dir) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(why) => {
                tracing::warn!("template {} ({}): not scheduled: {why}", t.id, t.name);
                continue;
            }
        };
        let old = was.iter().find(|o| o.template_id == c.template_id);
        if old.is_none_or(|o| (&o.expr, &o.crowd) != (&c.expr, &c.crowd)) {
            let after = c.cron.next_after(tz, now_ms);
            tracing::info!(
                "campaign of template {} ({}) {}: `{}` to {}, next {}",
                c.template_id,
                c.name,
                if old.is_some() { "changed" } else { "added" },
                c.expr,
                c.crowd.display(),
                after.map_or("never (no time in five years)".into(), |n| shown(tz, n))
            );
        }
        next.push(c);
    }
    for o in was
        .iter()
        .filter(|o| !next.iter().any(|c| c.template_id == o.template_id))
    {
        tracing::info!(
            "campaign of template {} ({}) is no longer scheduled: the template was disabled or lost its cron",
            o.template_id,
            o.name
        );
    }
    next
}

/// How long a campaign that could not be sent waits before it is tried again.
const RETRY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_is_read_into_receivers_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crowd.csv");
        std::fs::write(
            &path,
            "\u{feff}userId,name,amount\n13800138000, Li ,12\n13900139000,\"Wang, Jr\",\n",
        )
        .unwrap();
        let members = read_crowd(&path).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].0, "13800138000");
        assert_eq!(members[0].1["name"], "Li");
        assert_eq!(members[1].1["name"], "Wang, Jr");
        assert_eq!(members[1].1["amount"], "");
        check_crowd(&path).unwrap();

        let requests = requests(7, &members, Some(1_000)).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].timestamp, Some(1_000));
        let r: serde_json::Value = serde_json::from_str(&requests[0].payload).unwrap();
        assert_eq!(r["messageTemplateId"], 7);
        assert_eq!(r["messageParamList"][1]["receiver"], "13900139000");
        assert_eq!(r["messageParamList"][0]["variables"]["amount"], "12");
        let many: Vec<Member> = (0..250)
            .map(|i| (format!("u{i}"), Default::default()))
            .collect();
        assert_eq!(super::requests(7, &many, None).unwrap().len(), 3);
        // Long variables: requests of at most REQUEST_BYTES, every receiver once, in order.
        let long: Vec<Member> = (0..30)
            .map(|i| {
                let mut v = serde_json::Map::new();
                v.insert("offer".into(), "x".repeat(100_000).into());
                (format!("u{i}"), v)
            })
            .collect();
        let split = super::requests(7, &long, None).unwrap();
        assert_eq!(split.len(), 4);
        let mut receivers = Vec::new();
        for r in &split {
            assert!(r.payload.len() <= REQUEST_BYTES, "{}", r.payload.len());
            let v: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
            for p in v["messageParamList"].as_array().unwrap() {
                receivers.push(p["receiver"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(
            receivers,
            (0..30).map(|i| format!("u{i}")).collect::<Vec<_>>()
        );
        let mut huge = long[..1].to_vec();
        huge[0]
            .1
            .insert("offer".into(), "x".repeat(REQUEST_BYTES).into());
        let e = super::requests(7, &huge, None).unwrap_err();
        assert!(e.contains("receiver u0") && e.contains("shorten"), "{e}");
    }

    #[test]
    fn a_bad_crowd_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crowd.csv");
        std::fs::write(&path, "phone,name\n1,a\n").unwrap();
        let e = check_crowd(&path).unwrap_err();
        assert!(
            e.contains("crowd.csv") && e.contains("name the receivers' column userId"),
            "{e}"
        );
        std::fs::write(&path, "receiver,name\n1,a\n,b\n").unwrap();
        let e = read_crowd(&path).unwrap_err();
        assert!(e.contains("line 3: no receiver"), "{e}");
        // A blank line and a quoted line break before it: the line the row is on.
        std::fs::write(&path, "receiver,name\n\n1,\"a\nb\"\n,c\n").unwrap();
        let e = read_crowd(&path).unwrap_err();
        assert!(e.contains("line 5: no receiver"), "{e}");
        // CRLF line ends, and a blank line just before the row.
        for (text, line) in [
            ("receiver,name\r\n1,a\r\n,b\r\n", 3),
            ("receiver,name\n1,a\n\n,b\n", 4),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = read_crowd(&path).unwrap_err();
            assert!(
                e.contains(&format!("line {line}: no receiver")),
                "{text:?}: {e}"
            );
        }
        std::fs::write(&path, "receiver,name\n1,a,extra\n").unwrap();
        assert!(read_crowd(&path).is_err());
        let e = check_crowd(&dir.path().join("none.csv")).unwrap_err();
        assert!(e.contains("none.csv"), "{e}");
    }

    #[test]
    fn a_stop_ends_a_send_at_once_unrecorded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.csv"), "userId\na@example.com\n").unwrap();
        let c = Campaign {
            template_id: 1,
            name: "daily".into(),
            expr: "* * * * * ?".into(),
            cron: Cron::parse("* * * * * ?").unwrap(),
            crowd: dir.path().join("c.csv"),
        };
        // No broker listens there: without the stop this would wait its 60 s.
        let kafka = KafkaSettings {
            brokers: "127.0.0.1:9".into(),
            topic: "t".into(),
            group: "g".into(),
            dead_letter_topic: None,
            checkpoint: Duration::from_secs(1),
            tick: Duration::from_millis(100),
            properties: Vec::new(),
            unresolved: Vec::new(),
        };
        // Set while the records wait for the broker's acknowledgement (the flush).
        let stop = AtomicBool::new(false);
        let records = requests(1, &read_crowd(&c.crowd).unwrap(), Some(0)).unwrap();
        let set = || stop.store(true, Ordering::Relaxed);
        let e = produce_acked(&kafka.brokers, &[], "t", records, set, &stop)
            .0
            .unwrap_err();
        assert!(e.to_string().contains("stopped"), "{e:#}");
        // Set before the send.
        let e = fire(&kafka, &c, Some(0), &stop, &mut HashSet::new()).unwrap_err();
        assert!(e.to_string().contains("stopped"), "{e:#}");
        let mut fired = Fired::open(dir.path(), None).unwrap();
        let now = Clock::Fixed(1_000);
        assert!(fire_due(
            &[c],
            chrono_tz::UTC,
            &kafka,
            &mut fired,
            now,
            &stop,
            &mut Tries::new()
        ));
        assert_eq!(fired.last(1), None);
    }

    #[test]
    fn a_time_is_due_once_and_not_when_missed_long_ago() {
        let tz = chrono_tz::Asia::Shanghai;
        let ten = tz
            .with_ymd_and_hms(2026, 12, 7, 10, 0, 0)
            .unwrap()
            .timestamp_millis();
        let c = Campaign {
            template_id: 1,
            name: "daily".into(),
            expr: "0 0 10 * * ?".into(),
            cron: Cron::parse("0 0 10 * * ?").unwrap(),
            crowd: PathBuf::new(),
        };
        assert_eq!(due(&c, tz, None, ten - 1), None);
        assert_eq!(due(&c, tz, None, ten), Some(ten));
        assert_eq!(due(&c, tz, None, ten + MISFIRE_MS), Some(ten));
        assert_eq!(due(&c, tz, None, ten + MISFIRE_MS + 1), None);
        assert_eq!(due(&c, tz, Some(ten), ten + 60_000), None);
        // The day after, yesterday's fire recorded: today's.
        let day = 86_400_000;
        assert_eq!(due(&c, tz, Some(ten), ten + day + 5), Some(ten + day));

        // Started 20 minutes after the next day's time, yesterday's recorded: that time is
        // missed, and said so at the start; within its 10 minutes it is due, not missed.
        let dir = tempfile::tempdir().unwrap();
        let mut fired = Fired::open(dir.path(), None).unwrap();
        let campaigns = [c];
        assert!(missed(&campaigns, tz, &fired, ten + day + 20 * 60_000).is_empty());
        fired.record(1, ten).unwrap();
        let late = missed(&campaigns, tz, &fired, ten + day + 20 * 60_000);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].1, ten + day);
        assert!(missed(&campaigns, tz, &fired, ten + day + 5).is_empty());
        assert!(missed(&campaigns, tz, &fired, ten + 60_000).is_empty());
    }
}
