//! What flows through the graph: messages, deliveries (one per receiver), tracking rows and
//! dead letters.
//!
//! The per-message facts live once in an [`Arc<MessageMeta>`] shared by all of the message's
//! deliveries and rows: a 100-receiver message clones a pointer, not its content, 100 times.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::ids::MessageId;
use crate::state::State;
use crate::template::{Template, Templates};
use crate::time::Millis;

/// Where a record came from, and the facts shared by every receiver of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// Pure function of (source, partition, offset, param index).
    pub message_id: MessageId,
    /// The template it renders.
    pub template_id: i64,
    /// austin's businessId (template type, template id, event-time date).
    pub business_id: i64,
    /// The producer's own id (`bizId`), if given.
    pub biz_id: Option<String>,
    /// The rendered content model, as compact JSON.
    pub content: String,
    /// The event time of the record it came from.
    pub event_time: Millis,
    /// Position in the source, for a total, worker-independent order: (partition, offset,
    /// param index) packed as `partition << 96 | offset << 32 | param`.
    pub seq: u128,
    /// The template version it was judged with, when a change record (docs/templates.md
    /// "Live changes") replaced the job file's template; `None` is version 0, the job file's.
    /// (Always written: deliveries cross processes in bincode, which cannot skip a field.)
    #[serde(default)]
    pub live: Option<Arc<LiveTemplate>>,
    /// The account settings in force at its event time, when change records
    /// (`{"code":"account",…}`) replaced some of the job file's; `None`: the job file's. The
    /// send stage sends through these versions, wherever and whenever it runs.
    #[serde(default)]
    pub accounts: Option<Arc<LiveAccounts>>,
}

/// Message `m{seq}` of template 1 (business 1, no `bizId`, the job file's template and
/// accounts) at `event_time`, with `content`: the message tests build their deliveries of.
#[cfg(any(test, feature = "testkit"))]
impl MessageMeta {
    pub fn sample(seq: u128, event_time: Millis, content: &str) -> Arc<MessageMeta> {
        Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: format!("m{seq}").into(),
            template_id: 1,
            business_id: 1,
            biz_id: None,
            content: content.into(),
            event_time,
            seq,
        })
    }
}

/// An account's settings as a change record set them (docs/templates.md "Live changes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAccount {
    /// The account's name in the job.
    pub name: String,
    /// The number of changes of this account up to and including this one.
    pub version: u32,
    /// The `[accounts.NAME]` table as JSON (secrets as `${ENV}` references only), as JSON
    /// text on the wire.
    #[serde(with = "json_text")]
    pub settings: serde_json::Value,
}

/// The changed accounts at one event time, each at its newest version then (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LiveAccounts(pub Vec<LiveAccount>);

impl LiveAccounts {
    /// The version of account `name`, if a change set one.
    pub fn get(&self, name: &str) -> Option<&LiveAccount> {
        self.0
            .binary_search_by(|a| a.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i])
    }
}

/// A template as a change record set it, with its version (1 for the first change of that id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTemplate {
    /// The number of changes of this template id up to and including this one.
    pub version: u32,
    /// The template (as JSON text on the wire: its content model is free-form JSON, which
    /// the cluster's binary encoding cannot carry as a tree).
    #[serde(with = "json_text")]
    pub template: Template,
}

/// Serializes a value as its JSON text (a string), for encodings that cannot carry
/// `serde_json::Value` trees (bincode): `#[serde(with = "json_text")]`.
pub mod json_text {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `v` as a JSON string.
    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(v).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    /// Reads a value written by [`serialize`].
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

impl MessageMeta {
    /// The template the message was judged with: its live version, else the job file's.
    pub fn template<'a>(&'a self, templates: &'a Templates) -> Option<&'a Template> {
        match &self.live {
            Some(l) => Some(&l.template),
            None => templates.get(self.template_id).map(|t| &**t),
        }
    }

    /// The template version it was judged with (0: the job file's).
    pub fn template_version(&self) -> u32 {
        self.live.as_ref().map_or(0, |l| l.version)
    }

    /// The version of account `name` it is sent with (`None`: the job file's).
    pub fn account(&self, name: &str) -> Option<&LiveAccount> {
        self.accounts.as_deref().and_then(|a| a.get(name))
    }
}

/// One receiver's id (a phone number, an email address, an openId...), shared: within a
/// process the delivery, each of its tracking rows and the provider call hold the same text,
/// allocated once when the request's list is split (or once more if the receiver is
/// normalised). A delivery decoded from another process or from an account topic gets a copy
/// of its own; the encoding is a string's, as before.
pub type Receiver = Arc<str>;

/// A message's receivers: one held in place (most requests name one: no list allocated for
/// it, ~120 instructions a request), more in a list.
pub type Receivers = smallvec::SmallVec<[Receiver; 1]>;

/// A validated message: its shared facts and its receivers (split, trimmed, unique).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Shared facts.
    pub meta: Arc<MessageMeta>,
    /// The receivers, in request order.
    pub receivers: Receivers,
}

/// One receiver of one message on its way through the pipeline.
///
/// Besides its own facts it carries copies of the few facts of its message that the dedup
/// rules read for every delivery (the message's event time and source position, for
/// [`Delivery::order`], and whether its template is deduplicated), so those rules sort and judge
/// an epoch without reading each message behind its `Arc`: after the exchange that read mostly
/// misses the cache (bench/MEASURED.md, "The order in the delivery"). Build one with
/// [`Delivery::new`]; the copies are not written when it is serialized and are taken from the
/// message again when it is read.
///
/// Every field it serializes must be a field of [`DeliveryWire`], in the same order: bincode
/// (a cluster's exchange) reads them by position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "DeliveryWire")]
pub struct Delivery {
    /// The message.
    pub meta: Arc<MessageMeta>,
    /// This receiver.
    pub receiver: Receiver,
    /// Index of the receiver inside the message (for ordering).
    pub index: u32,
    /// The time rules judge by: the record's event time, or the release time after a
    /// night_delay park.
    pub event_time: Millis,
    /// Key of the content dedup rule (template, receiver, rendered content).
    pub content_key: u128,
    /// Key of the frequency dedup rule (receiver, channel).
    pub frequency_key: u128,
    /// Whether the dedup rules judge it: its template's `dedup`, as the template it was made
    /// with said. `None` (a delivery parked by a binary that did not write it): the rules read
    /// the template when they judge it.
    pub dedup: Option<bool>,
    /// `meta.event_time`, copied.
    #[serde(skip_serializing)]
    origin: Millis,
    /// `meta.seq`, copied.
    #[serde(skip_serializing)]
    seq: u128,
}

/// What a [`Delivery`] is serialized as: every field but the copies of its message's facts.
#[derive(Deserialize)]
struct DeliveryWire {
    meta: Arc<MessageMeta>,
    receiver: Receiver,
    index: u32,
    event_time: Millis,
    content_key: u128,
    frequency_key: u128,
    #[serde(default)]
    dedup: Option<bool>,
}

impl From<DeliveryWire> for Delivery {
    fn from(w: DeliveryWire) -> Delivery {
        Delivery {
            dedup: w.dedup,
            ..Delivery::new(
                w.meta,
                w.receiver,
                w.index,
                w.event_time,
                (w.content_key, w.frequency_key),
            )
        }
    }
}

impl Delivery {
    /// A delivery of `meta` to `receiver` (the `index`th of the message), judged at
    /// `event_time` under the dedup `keys` (content, frequency); [`Delivery::dedup`] unknown.
    pub fn new(
        meta: Arc<MessageMeta>,
        receiver: Receiver,
        index: u32,
        event_time: Millis,
        keys: (u128, u128),
    ) -> Delivery {
        Delivery {
            origin: meta.event_time,
            seq: meta.seq,
            meta,
            receiver,
            index,
            event_time,
            content_key: keys.0,
            frequency_key: keys.1,
            dedup: None,
        }
    }

    /// The order in which keyed operators judge deliveries within one epoch: event time, then
    /// the original event time (released parked messages keep their order), then the position
    /// in the source. Independent of worker count.
    pub fn order(&self) -> (Millis, Millis, u128, u32) {
        debug_assert_eq!(
            (self.origin, self.seq),
            (self.meta.event_time, self.meta.seq),
            "a delivery's copies of its message's order"
        );
        (self.event_time, self.origin, self.seq, self.index)
    }

    /// Whether the dedup rules judge it: [`Delivery::dedup`], else its template's `dedup`
    /// (an unknown template is judged).
    pub fn deduplicated(&self, templates: &Templates) -> bool {
        self.dedup
            .unwrap_or_else(|| self.meta.template(templates).is_none_or(|t| t.dedup))
    }
}

/// One tracking row: a receiver reached a state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// Wall-clock time the state was reached (ms, UTC).
    pub time: Millis,
    /// The event time the decision used (ms, UTC).
    pub event_time: Millis,
    /// The message.
    pub meta: Arc<MessageMeta>,
    /// The receiver.
    pub receiver: Receiver,
    /// The state reached.
    pub state: State,
    /// Why (for rejections and failures).
    pub reason: Option<String>,
}

/// A record or message that could not be taken: kept with its payload and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Wall-clock time it was rejected (ms, UTC).
    pub time: Millis,
    /// Where it came from: `topic/partition/offset` or `file:line`.
    pub source: String,
    /// The payload as received (lossy UTF-8).
    pub payload: String,
    /// Why it was rejected.
    pub reason: String,
}

impl DeadLetter {
    /// A dead letter of a raw record: keeps at most the first
    /// [`crate::limits::DEAD_LETTER_PAYLOAD_MAX`] bytes of it (a 100 MB line is not stored
    /// whole) and, when it was cut, says so and gives the record's size in the reason.
    pub fn of_record(time: Millis, source: String, bytes: &[u8], reason: String) -> DeadLetter {
        let (payload, cut) = crate::limits::payload_prefix(bytes);
        DeadLetter {
            time,
            source,
            payload,
            reason: match cut {
                None => reason,
                Some(note) => format!("{reason} ({note})"),
            },
        }
    }
}

impl EventRow {
    /// The row for a delivery reaching `state` at wall-clock `time`.
    pub fn of(d: &Delivery, state: State, reason: Option<String>, time: Millis) -> EventRow {
        EventRow {
            time,
            event_time: d.event_time,
            meta: d.meta.clone(),
            receiver: d.receiver.clone(),
            state,
            reason,
        }
    }
}
