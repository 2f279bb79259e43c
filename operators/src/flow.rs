//! The items that pass between stages, besides deliveries: source records, epoch marks, recall
//! orders and what the tracking stage writes ([`Tracked`]). Each stage's outputs are separate
//! typed streams ([`crate::admit::Admitted`], [`crate::dedup::Deduped`]), so a stream wired
//! into the wrong stage does not compile.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_model::time::Millis;
use tidings_model::{DeadLetter, EventRow};

use crate::Epoch;

/// One raw record from a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's name: `file:<path>` or a topic.
    pub source: Arc<str>,
    /// Kafka partition (0 for files).
    pub partition: i32,
    /// Kafka offset, or the 1-based line number of a file.
    pub offset: i64,
    /// The record's bytes.
    pub bytes: Vec<u8>,
    /// Wall-clock time it was read (event time of bare file lines).
    pub read_time: Millis,
    /// The record's own timestamp (Kafka), if any.
    pub timestamp: Option<Millis>,
    /// The event time the rules judge it by, chosen by the source: the record's own (envelope
    /// `ts`, Kafka timestamp, or read time of a bare line), or its partition's watermark when
    /// it came later than `source.max_out_of_order_ms` ([`crate::event_time`]).
    pub event_time: Millis,
    /// How far behind its partition's watermark the record came (0: on time).
    pub late_by: Millis,
    /// Why the record's own time cannot be judged (before 2000, or too far in the future): the
    /// record becomes a dead letter with this reason and never moves a watermark.
    pub bad_time: Option<String>,
}

impl SourceRecord {
    /// `file:line` or `topic/partition/offset`, as dead letters name it.
    pub fn position(&self) -> String {
        if self.source.starts_with("file:") {
            format!("{}:{}", self.source, self.offset)
        } else {
            format!("{}/{}/{}", self.source, self.partition, self.offset)
        }
    }
}

/// A worker's largest event time in one epoch, sent to one peer (`to`). Every keyed operator
/// folds all peers' marks into the same global watermark per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The worker the mark is for.
    pub to: u32,
    /// The largest event time seen in the epoch.
    pub max_event_time: Millis,
    /// The epoch (also the mark's timestamp; kept so operators need not track capabilities).
    pub epoch: Epoch,
}

/// A valid `recall` request: messages of `template_id` to take back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallOrder {
    /// The template whose messages are recalled.
    pub template_id: i64,
    /// The messages; empty means every message of the template still recallable.
    pub message_ids: Vec<String>,
    /// The request's event time.
    pub event_time: Millis,
    /// Where the request came from (`file:line` or `topic/partition/offset`).
    pub source: String,
    /// The account (or group) of the template version it was judged with, when a change
    /// record set it (else the job file's template's).
    #[serde(default)]
    pub account: Option<String>,
    /// The changed accounts' settings at its event time (`None`: the job file's).
    #[serde(default)]
    pub accounts: Option<Arc<tidings_model::message::LiveAccounts>>,
}

/// What the tracking stage writes: an event row, or a dead letter. Every stage's row output
/// carries these, so the rows of all stages can be concatenated into the one tracking input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tracked {
    /// A tracking row (RECEIVE, a terminal state, SEND_*, RECALL_*).
    Row(EventRow),
    /// A dead letter (boxed: rare, and larger than a row, so a row does not pay its size).
    Dead(Box<DeadLetter>),
}
