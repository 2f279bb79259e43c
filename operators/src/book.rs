//! Live template changes (docs/templates.md "Live changes"): change records in the send stream,
//! applied at their event time.
//!
//! A record `{"code":"template","template":{…}}` creates or replaces a template;
//! `{"code":"template","disable":ID}` disables one. [`SplitChanges::split_changes`] takes them
//! out of the records on the worker that read them; the graph broadcasts them to every worker,
//! whose [`Book`] applies them in (event time, source position) order once every change of
//! their epoch has arrived. A message is judged with the newest version whose event time is at
//! or before its own, so the version a record gets is a function of the records and their
//! event times only: the same on any worker count, partitioning, read order, replay or restore
//! (the book is part of every checkpoint).
//!
//! ```ignore
//! let (records, changes) = records.split_changes();
//! let admitted = records.admit(changes.broadcast(), validator, gate, clock, checkpoints);
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::container::Trimming;
use serde::{Deserialize, Serialize};
use tidings_model::message::{LiveAccount, LiveAccounts, LiveTemplate};
use tidings_model::time::Millis;
use tidings_model::{Channel, Template, Templates};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::{Epoch, SourceRecord};

/// The file name of the book's checkpoint part.
pub const PART: &str = "templates.json";

/// What a change record asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace the template of this id (and enable it).
    Put(#[serde(with = "tidings_model::message::json_text")] Box<Template>),
    /// Disable the template of this id: its messages become dead letters.
    Disable(i64),
    /// Replace the discard list, the whitelist, or both (`{"code":"lists",…}`).
    Lists {
        /// The new discard list (template ids), if given.
        discard: Option<Vec<i64>>,
        /// The new whitelist (receivers; empty: everyone), if given.
        whitelist: Option<Vec<String>>,
    },
    /// Replace an account's settings (`{"code":"account","name":…,"account":{…}}`): the
    /// `[accounts.NAME]` table as JSON, its secrets as `${ENV}` references.
    Account {
        /// The account's name in the job.
        name: String,
        /// Its new table.
        #[serde(with = "tidings_model::message::json_text")]
        settings: serde_json::Value,
    },
    /// A change record that cannot be applied, and why.
    Bad(String),
}

/// A change record taken out of the send stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The record's event time (chosen by the source, as for any record).
    pub event_time: Millis,
    /// Its position: `partition << 96 | offset << 32` (ties of event time go by it).
    pub order: u128,
    /// `file:line` or `topic/partition/offset`.
    pub source: String,
    /// The worker that read it: the one that writes its dead letter, if any.
    pub origin: usize,
    /// What it asks for.
    pub op: Op,
    /// The record (kept for a dead letter; at most 4 KiB are stored).
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
struct Probe {
    code: Option<String>,
    payload: Option<serde_json::Value>,
    template: Option<serde_json::Value>,
    disable: Option<serde_json::Value>,
    discard: Option<serde_json::Value>,
    whitelist: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
    account: Option<serde_json::Value>,
}

/// The change a record asks for, or `None` when it is not a change record (`code` other than
/// `"template"`, `"lists"` or `"account"`; a kcat envelope's payload is looked into).
pub fn parse_change(bytes: &[u8]) -> Option<Op> {
    // A request as producers write it starts with its code, and `{"code":"send"` is no change
    // (a second `code` would leave the record unreadable as one): no search at all.
    if bytes.starts_with(br#"{"code":"send""#) {
        return None;
    }
    // Cheap test next: a change record spells `template`, `lists` or `account` in lower case.
    // The finders are built once: `memmem::find` builds one per call (1.7% of the end-to-end
    // run, as every record is probed).
    static WORDS: LazyLock<[memchr::memmem::Finder<'static>; 3]> = LazyLock::new(|| {
        [b"template".as_slice(), b"lists", b"account"].map(memchr::memmem::Finder::new)
    });
    if WORDS.iter().all(|w| w.find(bytes).is_none()) {
        return None;
    }
    let bytes = tidings_model::request::strip_bom(bytes);
    // An account change that does not read is refused as one (its dead letter masked), not
    // taken for a request (whose dead letter keeps the record: a secret written in clear).
    let unreadable = |e: serde_json::Error| {
        names_account_code(bytes)
            .then(|| Op::Bad(format!("account change: not readable JSON: {e}")))
    };
    let probe: Probe = match serde_json::from_slice(bytes) {
        Ok(p) => p,
        Err(e) => return unreadable(e),
    };
    match probe.code.as_deref() {
        None => match probe.payload {
            Some(serde_json::Value::String(inner)) => {
                let p: Probe = match serde_json::from_str(&inner) {
                    Ok(p) => p,
                    Err(e) => return unreadable(e),
                };
                p.code.is_some().then(|| op_by_code(p)).flatten()
            }
            _ => None,
        },
        Some(_) => op_by_code(probe),
    }
}

/// Whether `bytes` say `"code":"account"` anywhere, however spaced or escaped (a kcat
/// envelope's payload): read leniently, for records that do not read as JSON.
fn names_account_code(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"code").any(|at| {
        let mut rest = bytes[at + 4..]
            .iter()
            .filter(|b| !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\\'));
        b":account".iter().all(|want| rest.next() == Some(want))
    })
}

fn op_by_code(p: Probe) -> Option<Op> {
    match p.code.as_deref() {
        Some("template") => Some(op_of(p)),
        Some("lists") => Some(lists_of(p)),
        Some("account") => Some(account_of(p)),
        _ => None,
    }
}

fn account_of(p: Probe) -> Op {
    match (p.name, p.account) {
        (Some(serde_json::Value::String(name)), Some(settings @ serde_json::Value::Object(_))) => {
            Op::Account { name, settings }
        }
        _ => Op::Bad(
            "account change: give `name` (the account's name) and `account` (its [accounts.NAME] table, as JSON)".into(),
        ),
    }
}

/// A list field of a lists change: absent, or a list of `T`.
fn list_field<T: serde::de::DeserializeOwned>(
    v: Option<serde_json::Value>,
    name: &str,
    what: &str,
) -> Result<Option<Vec<T>>, Op> {
    v.map(serde_json::from_value::<Vec<T>>)
        .transpose()
        .map_err(|e| {
            Op::Bad(format!(
                "lists change: `{name}` must be a list of {what}: {e}"
            ))
        })
}

fn lists_of(p: Probe) -> Op {
    let discard = match list_field::<i64>(p.discard, "discard", "template ids") {
        Ok(d) => d,
        Err(bad) => return bad,
    };
    let whitelist = match list_field::<String>(p.whitelist, "whitelist", "receivers (strings)") {
        Ok(w) => w,
        Err(bad) => return bad,
    };
    if discard.is_none() && whitelist.is_none() {
        return Op::Bad(
            "lists change: give `discard` (template ids), `whitelist` (receivers) or both".into(),
        );
    }
    Op::Lists { discard, whitelist }
}

fn op_of(p: Probe) -> Op {
    match (p.template, p.disable) {
        (Some(t), None) => match serde_json::from_value::<Template>(t) {
            Ok(t) => Op::Put(Box::new(t)),
            Err(e) => Op::Bad(format!(
                "template change: `template` is not a template: {e} (the fields of a [[template]] table, as JSON)"
            )),
        },
        (None, Some(serde_json::Value::Number(n))) if n.as_i64().is_some() => {
            Op::Disable(n.as_i64().unwrap_or_default())
        }
        (None, Some(other)) => Op::Bad(format!(
            "template change: `disable` must be a template id (a number), not {other}"
        )),
        (Some(_), Some(_)) => {
            Op::Bad("template change: give `template` or `disable`, not both".into())
        }
        (None, None) => Op::Bad(
            "template change: give `template` (the template to put) or `disable` (an id)".into(),
        ),
    }
}

/// One change applied to one template id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The template id.
    pub id: i64,
    /// Its event time.
    pub at: Millis,
    /// Its position (ties).
    #[serde(with = "u128_text")]
    pub order: u128,
    /// The template's version from it on (1 for the first change of the id).
    pub version: u32,
    /// The template from it on; `None`: disabled.
    pub template: Option<Arc<LiveTemplate>>,
    /// Where the change came from.
    pub source: String,
}

mod u128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The discard list and whitelist from one change on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListsEntry {
    /// Its event time.
    pub at: Millis,
    /// Its position (ties).
    #[serde(with = "u128_text")]
    pub order: u128,
    /// Template ids discarded.
    pub discard: Arc<HashSet<i64>>,
    /// Receivers sent to (empty: everyone).
    pub whitelist: Arc<HashSet<String>>,
    /// Where the change came from.
    pub source: String,
}

/// One account's settings from one change on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountEntry {
    /// The account's name.
    pub name: String,
    /// Its event time.
    pub at: Millis,
    /// Its position (ties).
    #[serde(with = "u128_text")]
    pub order: u128,
    /// The account's version from it on (1 for the first change of the name).
    pub version: u32,
    /// The `[accounts.NAME]` table, as JSON.
    pub settings: serde_json::Value,
    /// Where the change came from.
    pub source: String,
}

/// Everything a book holds, as written into a checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    templates: Vec<Entry>,
    #[serde(default)]
    lists: Vec<ListsEntry>,
    #[serde(default)]
    accounts: Vec<AccountEntry>,
}

/// Why an account change cannot be applied (a pure function of the job file and the change:
/// every worker must come to the same answer); given by the job, which knows its accounts.
#[derive(Clone, Default)]
pub struct AccountCheck(
    Option<Arc<dyn Fn(&str, &serde_json::Value) -> Result<(), String> + Send + Sync>>,
);

impl AccountCheck {
    /// A check of `(name, table)`.
    pub fn new(
        f: impl Fn(&str, &serde_json::Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> AccountCheck {
        AccountCheck(Some(Arc::new(f)))
    }

    fn check(&self, name: &str, settings: &serde_json::Value) -> Result<(), String> {
        match &self.0 {
            Some(f) => f(name, settings),
            None => Err("account change: this job takes no account changes".into()),
        }
    }
}

impl std::fmt::Debug for AccountCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountCheck")
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A template's new version.
    Template {
        /// The template id.
        id: i64,
        /// Its version from the change on.
        version: u32,
    },
    /// New lists.
    Lists,
    /// An account's new version.
    Account {
        /// Its version from the change on.
        version: u32,
    },
}

/// What the book says about a template id at an event time.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<'a> {
    /// The job file's template (version 0).
    Base(&'a Arc<Template>),
    /// A version set by a change record.
    Live(&'a Arc<LiveTemplate>),
    /// Disabled by a change record.
    Disabled {
        /// The version the disabling change made.
        version: u32,
        /// Its event time.
        at: Millis,
    },
    /// No such template.
    Unknown,
}

impl<'a> Found<'a> {
    /// The template, if the id names an enabled one.
    pub fn template(&self) -> Option<&'a Template> {
        match self {
            Found::Base(t) => Some(t),
            Found::Live(l) => Some(&l.template),
            _ => None,
        }
    }
}

/// The job file's templates and every change applied to them, by id.
#[derive(Debug, Clone, Default)]
pub struct Book {
    base: Arc<Templates>,
    /// Account (or group) name → its channel: a put must name one of the same channel.
    accounts: Arc<BTreeMap<String, Channel>>,
    history: BTreeMap<i64, Vec<Entry>>,
    /// The job file's discard list and whitelist.
    base_lists: (Arc<HashSet<i64>>, Arc<HashSet<String>>),
    lists: Vec<ListsEntry>,
    /// Account name → its changes, in (event time, position) order.
    account_history: BTreeMap<String, Vec<AccountEntry>>,
    /// After each account change, in order: every changed account's newest version then.
    account_snapshots: Vec<(Millis, u128, Arc<LiveAccounts>)>,
    account_check: AccountCheck,
    /// Whether a put may make a campaign (`cron` and `crowd`): the job has a topic to send to.
    campaigns: bool,
    /// Told the newest campaign templates after each template change (worker 0's book).
    watch: Option<CampaignWatch>,
}

/// The enabled templates that make campaigns (those with a `cron`), newest versions, as one
/// book holds them: published when the book is first watched (after its restore) and after
/// every template change it applies, for a reader outside the graph, the campaign scheduler,
/// which so follows live changes of a campaign.
#[derive(Debug, Clone, Default)]
pub struct CampaignWatch(Arc<Mutex<Option<Arc<Vec<Template>>>>>);

impl CampaignWatch {
    fn publish(&self, book: &Book) {
        let now = book.campaign_templates();
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(now));
    }

    /// The campaign templates last published (`None`: the book is not watched yet).
    pub fn get(&self) -> Option<Arc<Vec<Template>>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Book {
    /// A book of the job file's templates, checking puts against `accounts`.
    pub fn new(base: Arc<Templates>, accounts: Arc<BTreeMap<String, Channel>>) -> Book {
        Book {
            base,
            accounts,
            history: BTreeMap::new(),
            base_lists: Default::default(),
            lists: Vec::new(),
            account_history: BTreeMap::new(),
            account_snapshots: Vec::new(),
            account_check: AccountCheck::default(),
            campaigns: false,
            watch: None,
        }
    }

    /// The newest enabled templates that have a `cron` (campaigns), by id.
    pub fn campaign_templates(&self) -> Vec<Template> {
        self.latest()
            .iter()
            .filter_map(|(_, found)| found.template())
            .filter(|t| t.cron.is_some())
            .cloned()
            .collect()
    }

    /// Publishes the book's campaign templates to `watch` now and after every template change.
    pub fn watched_by(&mut self, watch: CampaignWatch) {
        watch.publish(self);
        self.watch = Some(watch);
    }

    /// Puts may make campaigns (a job with a Kafka source); without it a put with `cron` is
    /// refused.
    pub fn with_campaigns(mut self, allowed: bool) -> Book {
        self.campaigns = allowed;
        self
    }

    /// Account changes are checked by `check` (without one, every account change is refused).
    pub fn with_account_check(mut self, check: AccountCheck) -> Book {
        self.account_check = check;
        self
    }

    /// Why an account change cannot be applied, if it cannot.
    pub fn check_account(&self, name: &str, settings: &serde_json::Value) -> Result<(), String> {
        self.account_check.check(name, settings)
    }

    /// The changed accounts' settings at event time `t` (`None`: every account as the job
    /// file has it).
    pub fn accounts_at(&self, t: Millis) -> Option<Arc<LiveAccounts>> {
        let n = self
            .account_snapshots
            .partition_point(|(at, _, _)| *at <= t);
        n.checked_sub(1)
            .map(|i| self.account_snapshots[i].2.clone())
    }

    /// Every account's changes, by name.
    pub fn account_history(&self) -> &BTreeMap<String, Vec<AccountEntry>> {
        &self.account_history
    }

    /// Rebuilds the snapshots from the history.
    fn snapshot_accounts(&mut self) {
        let mut all: Vec<&AccountEntry> = self.account_history.values().flatten().collect();
        all.sort_by_key(|e| (e.at, e.order));
        let mut now: BTreeMap<&str, &AccountEntry> = BTreeMap::new();
        self.account_snapshots = all
            .into_iter()
            .map(|e| {
                now.insert(&e.name, e);
                let live = now
                    .values()
                    .map(|e| LiveAccount {
                        name: e.name.clone(),
                        version: e.version,
                        settings: e.settings.clone(),
                    })
                    .collect();
                (e.at, e.order, Arc::new(LiveAccounts(live)))
            })
            .collect();
    }

    /// The job file's discard list and whitelist (before any change).
    pub fn with_lists(mut self, discard: HashSet<i64>, whitelist: HashSet<String>) -> Book {
        self.base_lists = (Arc::new(discard), Arc::new(whitelist));
        self
    }

    /// The discard list and whitelist at event time `t`: the newest change at or before it,
    /// else the job file's.
    pub fn lists_at(&self, t: Millis) -> (&HashSet<i64>, &HashSet<String>) {
        let n = self.lists.partition_point(|e| e.at <= t);
        match n.checked_sub(1).map(|i| &self.lists[i]) {
            Some(e) => (&e.discard, &e.whitelist),
            None => (&self.base_lists.0, &self.base_lists.1),
        }
    }

    /// The job file's templates.
    pub fn base(&self) -> &Arc<Templates> {
        &self.base
    }

    /// What template `id` is at event time `t`: the newest change at or before `t`, else the
    /// job file's.
    pub fn at(&self, id: i64, t: Millis) -> Found<'_> {
        let entries = self.history.get(&id).map_or(&[][..], Vec::as_slice);
        let n = entries.partition_point(|e| e.at <= t);
        match n.checked_sub(1).map(|i| &entries[i]) {
            Some(e) => match &e.template {
                Some(l) => Found::Live(l),
                None => Found::Disabled {
                    version: e.version,
                    at: e.at,
                },
            },
            None => match self.base.get(id) {
                Some(b) => Found::Base(b),
                None => Found::Unknown,
            },
        }
    }

    /// Every template id's newest state: the job file's or the last change's.
    pub fn latest(&self) -> Vec<(i64, Found<'_>)> {
        let mut ids: Vec<i64> = self.base.iter().map(|t| t.id).collect();
        ids.extend(self.history.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| (id, self.at(id, Millis::MAX)))
            .collect()
    }

    /// Why `t` cannot be put, if it cannot: its account must exist and send its channel.
    pub fn check(&self, t: &Template) -> Result<(), String> {
        tidings_model::template::check_id(t.id).map_err(|why| format!("template change: {why}"))?;
        tidings_model::cron::campaign_cron(t, self.campaigns)
            .map_err(|why| format!("template change: template {}: {why}", t.id))?;
        match self.accounts.get(&t.account) {
            None => Err(format!(
                "template change: template {}: account `{}` is not in the job; use one of {}",
                t.id,
                t.account,
                self.accounts
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(&c) if c != t.channel => Err(format!(
                "template change: template {}: channel {} but account `{}` sends {}; use an account of the same channel",
                t.id,
                t.channel.name(),
                t.account,
                c.name()
            )),
            Some(_) => Ok(()),
        }
    }

    /// Applies one change (changes are applied in (event time, position) order); `Err` says why
    /// it was refused (the book is unchanged).
    pub fn apply(&mut self, change: &Change) -> Result<Applied, String> {
        let (id, template) = match &change.op {
            Op::Bad(reason) => return Err(reason.clone()),
            Op::Account { name, settings } => return self.apply_account(change, name, settings),
            Op::Lists { discard, whitelist } => {
                if self.lists.iter().any(|e| {
                    (e.at, e.order, &e.source) == (change.event_time, change.order, &change.source)
                }) {
                    return Ok(Applied::Lists);
                }
                let (d, w) = self.lists_at(Millis::MAX);
                let discard = match discard {
                    Some(ids) => {
                        if let Some(id) = ids
                            .iter()
                            .find(|id| self.at(**id, Millis::MAX) == Found::Unknown)
                        {
                            return Err(format!(
                                "lists change: discard: template {id} does not exist"
                            ));
                        }
                        Arc::new(ids.iter().copied().collect())
                    }
                    None => Arc::new(d.clone()),
                };
                let whitelist = match whitelist {
                    Some(r) => Arc::new(r.iter().map(|r| r.trim().to_string()).collect()),
                    None => Arc::new(w.clone()),
                };
                let entry = ListsEntry {
                    at: change.event_time,
                    order: change.order,
                    discard,
                    whitelist,
                    source: change.source.clone(),
                };
                let at = self
                    .lists
                    .partition_point(|e| (e.at, e.order) <= (entry.at, entry.order));
                self.lists.insert(at, entry);
                return Ok(Applied::Lists);
            }
            Op::Put(t) => {
                self.check(t)?;
                (t.id, Some(t.clone()))
            }
            Op::Disable(id) => {
                if self.at(*id, Millis::MAX) == Found::Unknown {
                    return Err(format!(
                        "template change: template {id} does not exist: nothing to disable"
                    ));
                }
                (*id, None)
            }
        };
        let entries = self.history.entry(id).or_default();
        // The same record read again (a restore whose positions were not used) changes nothing.
        if let Some(same) = entries.iter().find(|e| {
            (e.at, e.order, &e.source) == (change.event_time, change.order, &change.source)
        }) {
            return Ok(Applied::Template {
                id,
                version: same.version,
            });
        }
        // After the newest, not after the count: a restore may have dropped a version that
        // no longer fits the job file, and its number is not given again.
        let version = entries.iter().map(|e| e.version).max().unwrap_or(0) + 1;
        let entry = Entry {
            id,
            at: change.event_time,
            order: change.order,
            version,
            template: template.map(|template| {
                Arc::new(LiveTemplate {
                    version,
                    template: *template,
                })
            }),
            source: change.source.clone(),
        };
        // Applied in order; a change older than the last (never, by the operator's order) still
        // lands where lookups expect it.
        let at = entries.partition_point(|e| (e.at, e.order) <= (entry.at, entry.order));
        entries.insert(at, entry);
        if let Some(w) = &self.watch {
            w.publish(self);
        }
        Ok(Applied::Template { id, version })
    }

    fn apply_account(
        &mut self,
        change: &Change,
        name: &str,
        settings: &serde_json::Value,
    ) -> Result<Applied, String> {
        self.check_account(name, settings)?;
        let entries = self.account_history.entry(name.to_string()).or_default();
        if let Some(same) = entries.iter().find(|e| {
            (e.at, e.order, &e.source) == (change.event_time, change.order, &change.source)
        }) {
            return Ok(Applied::Account {
                version: same.version,
            });
        }
        // After the newest, not after the count: a restore may have dropped a version that
        // no longer fits the job file, and its number is not given again.
        let version = entries.iter().map(|e| e.version).max().unwrap_or(0) + 1;
        let entry = AccountEntry {
            name: name.to_string(),
            at: change.event_time,
            order: change.order,
            version,
            settings: settings.clone(),
            source: change.source.clone(),
        };
        let at = entries.partition_point(|e| (e.at, e.order) <= (entry.at, entry.order));
        entries.insert(at, entry);
        self.snapshot_accounts();
        Ok(Applied::Account { version })
    }

    /// Writes every change applied as a checkpoint part (JSON), durably.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let saved = Saved {
            templates: self.history.values().flatten().cloned().collect(),
            lists: self.lists.clone(),
            accounts: self.account_history.values().flatten().cloned().collect(),
        };
        let body = serde_json::to_vec(&saved).map_err(io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::checkpoint::write_durably(path, &body)
    }

    /// Restores the book of the checkpoint restored on start, if it has one.
    pub fn restore(&mut self, c: &crate::checkpoint::Checkpoints) -> io::Result<()> {
        match c.restored_parts(PART)?.first() {
            Some(path) => self.load(path),
            None => Ok(()),
        }
    }

    /// Restores the changes written by [`Book::save`].
    pub fn load(&mut self, path: &Path) -> io::Result<()> {
        let body = std::fs::read(path)?;
        let saved: Saved = serde_json::from_slice(&body)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        self.history.clear();
        self.lists = saved.lists;
        self.lists.sort_by_key(|e| (e.at, e.order));
        for e in saved.templates {
            // Saved before ids were bounded: a version austin's businessId cannot tell apart.
            if let Err(why) = tidings_model::template::check_id(e.id) {
                tracing::warn!(
                    "{}: a change of template {} dropped: {why}",
                    path.display(),
                    e.id
                );
                continue;
            }
            self.history.entry(e.id).or_default().push(e);
        }
        for entries in self.history.values_mut() {
            entries.sort_by_key(|e| (e.at, e.order));
        }
        self.account_history.clear();
        for e in saved.accounts {
            // The job file may have changed since (an account gone, another channel): a
            // version that no longer fits is dropped, and the job file's table holds.
            if let Err(why) = self.check_account(&e.name, &e.settings) {
                tracing::warn!(
                    "{}: account `{}` version {} from {} no longer fits the job file, dropped: {why}",
                    path.display(),
                    e.name,
                    e.version,
                    e.source
                );
                continue;
            }
            self.account_history
                .entry(e.name.clone())
                .or_default()
                .push(e);
        }
        for entries in self.account_history.values_mut() {
            entries.sort_by_key(|e| (e.at, e.order));
        }
        self.snapshot_accounts();
        Ok(())
    }
}

/// The records that are not changes, and the changes.
pub type Split<'s> = (
    StreamVec<'s, Epoch, SourceRecord>,
    StreamVec<'s, Epoch, Change>,
);

/// Splits the change records out of a stream of source records (on the worker that read them).
pub trait SplitChanges<'s> {
    /// `(records, changes)`: every record that is not a change record, and the changes. A
    /// change stamped at a later epoch than its event time's (a source's floor) applies from
    /// the start of that epoch: no message of an earlier epoch can have been judged without it.
    fn split_changes(self, event: crate::event_time::EventTime) -> Split<'s>;
}

impl<'s> SplitChanges<'s> for StreamVec<'s, Epoch, SourceRecord> {
    fn split_changes(self, event: crate::event_time::EventTime) -> Split<'s> {
        let origin = self.scope().index();
        let mut builder = OperatorBuilder::new("SplitChanges".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (records_out, records) = builder.new_output();
        let (changes_out, changes) = builder.new_output();
        let mut records_out = OutputBuilder::<_, Trimming<SourceRecord>>::from(records_out);
        let mut changes_out = OutputBuilder::<_, Trimming<Change>>::from(changes_out);
        builder.build(move |_| {
            let mut found = Vec::new();
            move |_frontiers| {
                let (mut records, mut changes) = (records_out.activate(), changes_out.activate());
                input.for_each_stamp(|cap, batches| {
                    let start = cap.least().map_or(0, |&e| event.start_of(e));
                    let mut keep = records.session_with_builder(&cap);
                    for batch in batches {
                        for rec in batch.drain(..) {
                            match rec.bad_time.is_none().then(|| parse_change(&rec.bytes)) {
                                Some(Some(op)) => {
                                    let mut c = change_of(rec, op, origin);
                                    c.event_time = c.event_time.max(start);
                                    found.push(c)
                                }
                                _ => keep.give(rec),
                            }
                        }
                    }
                    drop(keep);
                    if !found.is_empty() {
                        changes
                            .session_with_builder(&cap)
                            .give_iterator(found.drain(..));
                    }
                });
            }
        });
        (records, changes)
    }
}

fn change_of(rec: SourceRecord, op: Op, origin: usize) -> Change {
    let source = rec.position();
    let bytes = redacted(&op, rec.bytes);
    Change {
        event_time: rec.event_time,
        order: ((rec.partition as u32 as u128) << 96) | ((rec.offset as u64 as u128) << 32),
        source,
        origin,
        op,
        bytes,
    }
}

/// The record as a dead letter may keep it: an account change's provider settings may hold a
/// secret written in clear (the reason it is refused), so they are not kept.
fn redacted(op: &Op, bytes: Vec<u8>) -> Vec<u8> {
    fn mask(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => m.values_mut().for_each(mask),
            serde_json::Value::Array(a) => a.iter_mut().for_each(mask),
            leaf => *leaf = "***".into(),
        }
    }
    match op {
        Op::Account { name, settings } => {
            let mut table = settings.clone();
            if let Some(s) = table.get_mut("settings") {
                mask(s);
            }
            serde_json::json!({"code": "account", "name": name, "account": table})
                .to_string()
                .into_bytes()
        }
        // Read leniently: a byte-order mark, a duplicate key or a missing brace kept the
        // strict read from seeing an account change, and the record was kept whole.
        Op::Bad(_) if names_account_code(&bytes) => {
            br#"{"code":"account","account":"(not kept: it may hold secrets)"}"#.to_vec()
        }
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Book {
        let t = Templates::parse(
            "t.toml",
            "[[template]]\nid = 1\nname = \"a\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"out\"\n[template.content]\ncontent = \"A {$v}\"\n",
        )
        .unwrap();
        let accounts = BTreeMap::from([("out".to_string(), Channel::Sms)]);
        Book::new(Arc::new(t), Arc::new(accounts))
    }

    /// The change record `line`, read at `offset` of a file, at event time `at`.
    fn change_of_line(at: Millis, offset: i64, line: String) -> Change {
        Change {
            event_time: at,
            order: (offset as u128) << 32,
            source: format!("f:{offset}"),
            origin: 0,
            op: parse_change(line.as_bytes()).unwrap(),
            bytes: line.into_bytes(),
        }
    }

    fn put(at: Millis, offset: i64, content: &str) -> Change {
        let line = serde_json::json!({"code": "template", "template": {"id": 1, "name": "a",
            "channel": "sms", "msg_type": "notice", "id_type": "phone", "account": "out",
            "content": {"content": content}}})
        .to_string();
        change_of_line(at, offset, line)
    }

    fn content(f: Found<'_>) -> String {
        f.template().unwrap().content["content"].to_string()
    }

    /// A put of template 1 as a campaign with `cron`.
    fn campaign(at: Millis, offset: i64, cron: &str) -> Change {
        let line = serde_json::json!({"code": "template", "template": {"id": 1, "name": "a",
            "channel": "sms", "msg_type": "notice", "id_type": "phone", "account": "out",
            "template_type": "cron", "cron": cron, "crowd": "c.csv",
            "content": {"content": "A"}}})
        .to_string();
        change_of_line(at, offset, line)
    }

    #[test]
    fn a_campaign_put_is_checked_and_its_watch_follows_the_book() {
        // A job without a topic refuses campaigns; a bad expression is refused with its field.
        let refused = base().apply(&campaign(10, 1, "0 0 10 * * ?")).unwrap_err();
        assert!(
            refused.contains("a campaign is sent to the job's Kafka topic"),
            "{refused}"
        );
        let mut b = base().with_campaigns(true);
        let bad = b.apply(&campaign(10, 1, "0 0 25 * * ?")).unwrap_err();
        assert!(bad.contains("template 1: cron: hour `25`"), "{bad}");
        // A crowd outside the templates file's folder is refused.
        for crowd in ["/etc/crowd.csv", "../crowd.csv", "a/../../crowd.csv"] {
            let line = serde_json::json!({"code": "template", "template": {"id": 1,
                "name": "a", "channel": "sms", "msg_type": "notice", "id_type": "phone",
                "account": "out", "template_type": "cron", "cron": "0 0 10 * * ?",
                "crowd": crowd, "content": {"content": "A"}}})
            .to_string();
            let why = b.apply(&change_of_line(10, 1, line)).unwrap_err();
            assert!(
                why.contains("under the templates file's folder"),
                "{crowd}: {why}"
            );
        }
        let watch = CampaignWatch::default();
        assert!(watch.get().is_none());
        b.watched_by(watch.clone());
        assert!(
            watch.get().unwrap().is_empty(),
            "the job file's template is no campaign"
        );
        b.apply(&campaign(20, 2, "0 0 10 * * ?")).unwrap();
        let now = watch.get().unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].cron.as_deref(), Some("0 0 10 * * ?"));
        // Replaced by a template without cron, the campaign is gone from the watch.
        b.apply(&put(30, 3, "B")).unwrap();
        assert!(watch.get().unwrap().is_empty());
        b.apply(&campaign(40, 4, "0 30 9 ? * MON")).unwrap();
        let line = br#"{"code":"template","disable":1}"#.to_vec();
        b.apply(&Change {
            event_time: 50,
            order: 5 << 32,
            source: "f:5".into(),
            origin: 0,
            op: parse_change(&line).unwrap(),
            bytes: line,
        })
        .unwrap();
        assert!(
            watch.get().unwrap().is_empty(),
            "a disabled campaign is gone"
        );
    }

    #[test]
    fn newest_change_at_or_before_the_event_time_wins() {
        let mut b = base();
        b.apply(&put(100, 1, "B {$v}")).unwrap();
        b.apply(&put(200, 2, "C {$v}")).unwrap();
        assert_eq!(content(b.at(1, 99)), "\"A {$v}\"");
        assert_eq!(content(b.at(1, 100)), "\"B {$v}\"");
        assert_eq!(content(b.at(1, 199)), "\"B {$v}\"");
        assert!(matches!(b.at(1, 200), Found::Live(l) if l.version == 2));
        assert!(matches!(b.at(1, 0), Found::Base(_)));
        assert_eq!(b.at(9, 500), Found::Unknown);
    }

    #[test]
    fn disable_then_put_again_and_a_saved_book_restores_the_same_answers() {
        let mut b = base();
        let line = br#"{"code":"template","disable":1}"#.to_vec();
        let off = Change {
            event_time: 50,
            order: 7 << 32,
            source: "f:7".into(),
            origin: 0,
            op: parse_change(&line).unwrap(),
            bytes: line,
        };
        b.apply(&off).unwrap();
        b.apply(&put(80, 8, "D {$v}")).unwrap();
        assert_eq!(b.at(1, 60), Found::Disabled { version: 1, at: 50 });
        assert_eq!(content(b.at(1, 90)), "\"D {$v}\"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("templates.json");
        b.save(&path).unwrap();
        let mut r = base();
        r.load(&path).unwrap();
        for t in [0, 50, 60, 80, 1000] {
            assert_eq!(r.at(1, t), b.at(1, t), "at {t}");
        }
    }

    #[test]
    fn the_same_change_read_again_changes_nothing() {
        let mut b = base();
        let c = put(100, 1, "B {$v}");
        assert_eq!(
            b.apply(&c).unwrap(),
            Applied::Template { id: 1, version: 1 }
        );
        assert_eq!(
            b.apply(&c).unwrap(),
            Applied::Template { id: 1, version: 1 }
        );
        assert!(matches!(b.at(1, 200), Found::Live(l) if l.version == 1));
    }

    /// A version restored from a checkpoint whose account the job file no longer has: its
    /// messages are dead letters with the reason, never sent through another account.
    #[test]
    fn a_restored_version_naming_a_gone_account_is_refused() {
        let mut b = base();
        b.apply(&put(100, 1, "B {$v}")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PART);
        b.save(&path).unwrap();
        let mut gone = Book::new(b.base().clone(), Default::default());
        gone.load(&path).unwrap();
        let v = crate::validate::Validator::new(b.base().clone(), chrono_tz::Asia::Shanghai)
            .with_book(gone);
        let at = 1_763_949_600_000;
        let rec = SourceRecord {
            source: "t".into(),
            partition: 0,
            offset: 1,
            bytes: br#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"13800138000","variables":{"v":"x"}}}"#.to_vec(),
            read_time: at,
            timestamp: Some(at),
            event_time: at,
            late_by: 0,
            bad_time: None,
        };
        let out = v.validate(&rec, at);
        assert!(out.messages.is_empty());
        assert!(
            out.dead[0].reason.contains("template 1 version 1")
                && out.dead[0].reason.contains("account `out`"),
            "{:?}",
            out.dead
        );
    }

    #[test]
    fn bad_changes_are_refused_with_a_reason() {
        let mut b = base();
        let mut c = put(1, 1, "x");
        if let Op::Put(t) = &mut c.op {
            t.account = "nope".into();
        }
        assert!(b.apply(&c).unwrap_err().contains("account `nope`"));
        let op = parse_change(br#"{"code":"template","template":{"id":1}}"#).unwrap();
        assert!(matches!(op, Op::Bad(r) if r.contains("not a template")));
        assert!(parse_change(br#"{"code":"send","messageTemplateId":1}"#).is_none());
        // A send that spells a change's words, or a second code, is no change either way.
        assert!(parse_change(br#"{"code":"send","template":{"id":1},"account":1}"#).is_none());
        assert!(parse_change(br#"{"code":"send","code":"template","disable":1}"#).is_none());
        assert!(parse_change(br#" {"code":"send","code":"template","disable":1}"#).is_none());
        let env = serde_json::json!({"ts": 5, "payload": r#"{"code":"template","disable":1}"#});
        assert_eq!(
            parse_change(env.to_string().as_bytes()),
            Some(Op::Disable(1))
        );
        assert!(matches!(b.at(1, 5), Found::Base(_)));
    }

    /// A refused account change's dead letter never keeps its settings, however the record
    /// is spelled: after a byte-order mark, with a duplicate key, cut short, in an envelope.
    /// (A record that did not read strictly was taken for a request and kept whole.)
    #[test]
    fn an_account_change_that_does_not_read_keeps_no_secret() {
        let secret = r#"{"settings":{"secret_key":"AKIDclear"}}"#;
        let table = serde_json::json!({"code": "account", "name": "a", "account": secret});
        let records = [
            format!("\u{feff}{table}"),
            r#"{"code":"account","name":"a","name":"a","account":{"settings":{"secret_key":"AKIDclear"}}}"#.to_string(),
            r#"{ "code" : "account", "account": {"settings": {"secret_key": "AKIDclear"}}"#.to_string(),
            serde_json::json!({"ts": 1, "payload": r#"{"code":"account","account":{"settings":{"secret_key":"AKIDclear"}"#})
                .to_string(),
        ];
        for line in records {
            let op = parse_change(line.as_bytes());
            let Some(op @ Op::Bad(_)) = op else {
                panic!("{line}: {op:?}");
            };
            let kept = String::from_utf8(redacted(&op, line.clone().into_bytes())).unwrap();
            assert!(!kept.contains("AKIDclear"), "{line}: {kept}");
        }
        // A request that only mentions the word is still a request.
        let send = r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"account"}}"#;
        assert_eq!(parse_change(send.as_bytes()), None);
        let other = r#"{"messageTemplateId":1,"code":"send","x":"accounts"}"#;
        assert_eq!(parse_change(other.as_bytes()), None);
    }

    fn account(at: Millis, offset: i64, name: &str, dir: &str) -> Change {
        let line = serde_json::json!({"code": "account", "name": name,
            "account": {"channel": "sms", "provider": "outbox", "dir": dir}})
        .to_string();
        change_of_line(at, offset, line)
    }

    #[test]
    fn account_versions_by_event_time_survive_a_save_and_bad_ones_are_refused() {
        let check = AccountCheck::new(|name, table| match name {
            "out" | "two" if table["dir"] != "bad" => Ok(()),
            _ => Err(format!("no {name}")),
        });
        // Without a check every account change is refused.
        assert!(base().apply(&account(10, 1, "out", "a")).is_err());
        let mut b = base().with_account_check(check.clone());
        // (event time, position, account, dir) → the version it makes; the last one is the
        // third read again, which changes nothing.
        for (at, offset, name, dir, version) in [
            (100, 1, "out", "a", 1),
            (150, 2, "two", "t", 1),
            (200, 3, "out", "b", 2),
            (200, 3, "out", "b", 2),
        ] {
            assert_eq!(
                b.apply(&account(at, offset, name, dir)),
                Ok(Applied::Account { version })
            );
        }
        assert_eq!(
            b.apply(&account(300, 4, "nope", "c")),
            Err("no nope".into())
        );
        assert_eq!(
            b.apply(&account(300, 5, "out", "bad")),
            Err("no out".into())
        );
        let at = |b: &Book, t: Millis| -> Vec<(String, u32, String)> {
            b.accounts_at(t)
                .map(|a| {
                    a.0.iter()
                        .map(|l| (l.name.clone(), l.version, l.settings["dir"].to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let v = |n: &str, ver: u32, d: &str| (n.to_string(), ver, format!("\"{d}\""));
        assert_eq!(at(&b, 99), vec![]);
        assert_eq!(at(&b, 100), vec![v("out", 1, "a")]);
        assert_eq!(at(&b, 199), vec![v("out", 1, "a"), v("two", 1, "t")]);
        assert_eq!(at(&b, 900), vec![v("out", 2, "b"), v("two", 1, "t")]);
        assert_eq!(
            b.accounts_at(900).unwrap().get("out").map(|l| l.version),
            Some(2)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PART);
        b.save(&path).unwrap();
        let mut restored = base().with_account_check(check);
        restored.load(&path).unwrap();
        for t in [99, 100, 150, 199, 200, 900] {
            assert_eq!(at(&restored, t), at(&b, t), "at {t}");
        }
        // A record without a name or table is a bad change.
        assert!(matches!(
            parse_change(br#"{"code":"account","name":"out"}"#),
            Some(Op::Bad(_))
        ));
    }
}
