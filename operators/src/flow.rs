//! The item every stage passes on, and a router that splits a stream by kind.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_model::time::Millis;
use tidings_model::{DeadLetter, Delivery, EventRow};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Partition;

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
}

/// What flows between stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flow {
    /// A receiver that goes on to the next stage.
    Pass(Delivery),
    /// A receiver to park until its release time (`night_delay`).
    Park {
        /// When to release it (ms, UTC).
        release_at: Millis,
        /// The receiver.
        delivery: Delivery,
    },
    /// A tracking row.
    Row(EventRow),
    /// A dead letter.
    Dead(DeadLetter),
    /// An epoch mark.
    Mark(Mark),
    /// A recall request, straight to the recall stage.
    Recall(RecallOrder),
}

/// The kind of a [`Flow`], for [`split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Pass`.
    Pass,
    /// `Park`.
    Park,
    /// `Row` and `Dead`: everything tracking writes.
    Track,
    /// `Mark`.
    Mark,
    /// `Recall`.
    Recall,
}

impl Flow {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Flow::Pass(_) => Kind::Pass,
            Flow::Park { .. } => Kind::Park,
            Flow::Row(_) | Flow::Dead(_) => Kind::Track,
            Flow::Mark(_) => Kind::Mark,
            Flow::Recall(_) => Kind::Recall,
        }
    }
}

/// The streams of one stage's output, by kind.
pub struct Split<'scope> {
    /// Receivers going on.
    pub pass: StreamVec<'scope, Epoch, Flow>,
    /// Receivers to park.
    pub park: StreamVec<'scope, Epoch, Flow>,
    /// Tracking rows and dead letters.
    pub track: StreamVec<'scope, Epoch, Flow>,
    /// Epoch marks.
    pub mark: StreamVec<'scope, Epoch, Flow>,
    /// Recall requests.
    pub recall: StreamVec<'scope, Epoch, Flow>,
}

/// Splits a stream of [`Flow`] by kind (a pipeline operator: no data crosses workers).
pub fn split(stream: StreamVec<'_, Epoch, Flow>) -> Split<'_> {
    let mut parts = stream
        .partition(5, |f| {
            let port = match f.kind() {
                Kind::Pass => 0,
                Kind::Park => 1,
                Kind::Track => 2,
                Kind::Mark => 3,
                Kind::Recall => 4,
            };
            (port, f)
        })
        .into_iter();
    let mut next = || parts.next().expect("partition gives 5 streams");
    Split {
        pass: next(),
        park: next(),
        track: next(),
        mark: next(),
        recall: next(),
    }
}
