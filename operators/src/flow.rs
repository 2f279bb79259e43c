//! The items that pass between stages, besides deliveries: source records, epoch marks, recall
//! orders and what the tracking stage writes ([`Tracked`]). Each stage's outputs are separate
//! typed streams ([`crate::admit::Admitted`], [`crate::dedup::Deduped`]), so a stream wired
//! into the wrong stage does not compile.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_model::message::Receivers;
use tidings_model::time::Millis;
use tidings_model::{DeadLetter, EventRow, MessageMeta, State};

use timely::dataflow::ProbeHandle;

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
    /// The record's bytes: a Kafka record's value; a file's line, or the payload of a line
    /// that is a kcat `-J` envelope (then `timestamp` is its `ts`).
    pub bytes: Vec<u8>,
    /// Wall-clock time it was read (event time of bare file lines).
    pub read_time: Millis,
    /// The record's own timestamp (Kafka's, or a file envelope's `ts`), if any: `bytes` is
    /// then the request body itself.
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

/// What the tracking stage writes: an event row, the RECEIVE rows of one message, or a dead
/// letter. Every stage's row output carries these, so the rows of all stages can be
/// concatenated into the one tracking input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tracked {
    /// A tracking row (a terminal state, SEND_*, RECALL_*; RECEIVE outside a group).
    Row(EventRow),
    /// The RECEIVE rows of one message, one item for all its receivers.
    Received(Received),
    /// A dead letter (boxed: rare, and larger than a row, so a row does not pay its size).
    Dead(Box<DeadLetter>),
}

impl Tracked {
    /// The rows (or dead letter) it stands for: a group counts each receiver.
    pub fn len(&self) -> usize {
        match self {
            Tracked::Received(g) => g.receivers.len(),
            Tracked::Row(_) | Tracked::Dead(_) => 1,
        }
    }

    /// Never empty: a group has at least one receiver.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each row it stands for, in order, as [`Tracked::Row`] (a dead letter as itself); the
    /// tracking stage expands a group itself, as it writes it.
    #[cfg(test)]
    pub(crate) fn into_rows(self) -> impl Iterator<Item = Tracked> {
        let (group, single) = match self {
            Tracked::Received(g) => (Some(g), None),
            other => (None, Some(other)),
        };
        group
            .into_iter()
            .flat_map(|g| g.into_rows().map(Tracked::Row))
            .chain(single)
    }
}

/// The RECEIVE rows of one message (same time, event time and reason for every receiver),
/// held as one item until the tracking stage writes them: a burst's epoch holds a million
/// receivers, and a row each would cost a million rows of memory until the sources pass it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Wall-clock time the message was received (ms, UTC).
    pub time: Millis,
    /// The event time the decisions use (ms, UTC).
    pub event_time: Millis,
    /// The message.
    pub meta: Arc<MessageMeta>,
    /// Its receivers, in the order their rows were made (one held in place: most messages
    /// have one).
    pub receivers: Receivers,
    /// Why, when there is something to say (a late record).
    pub reason: Option<String>,
}

impl Received {
    /// A group of the one RECEIVE row `row`.
    pub fn of(row: EventRow) -> Received {
        Received {
            time: row.time,
            event_time: row.event_time,
            meta: row.meta,
            receivers: Receivers::from_buf([row.receiver]),
            reason: row.reason,
        }
    }

    /// Adds `row` when it is a RECEIVE row of the same message, time and reason; else hands
    /// it back.
    pub fn absorb(&mut self, row: EventRow) -> Result<(), EventRow> {
        if row.state == State::Receive
            && row.time == self.time
            && row.event_time == self.event_time
            && Arc::ptr_eq(&row.meta, &self.meta)
            && row.reason == self.reason
        {
            self.receivers.push(row.receiver);
            Ok(())
        } else {
            Err(row)
        }
    }

    /// Takes the group of the first `n` receivers out of this one.
    pub fn split_front(&mut self, n: usize) -> Received {
        Received {
            time: self.time,
            event_time: self.event_time,
            meta: self.meta.clone(),
            receivers: self
                .receivers
                .drain(..n.min(self.receivers.len()))
                .collect(),
            reason: self.reason.clone(),
        }
    }

    /// Its rows, one per receiver.
    pub fn into_rows(self) -> impl Iterator<Item = EventRow> {
        let Received {
            time,
            event_time,
            meta,
            receivers,
            reason,
        } = self;
        receivers.into_iter().map(move |receiver| EventRow {
            time,
            event_time,
            meta: meta.clone(),
            receiver,
            state: State::Receive,
            reason: reason.clone(),
        })
    }
}

/// Items per epoch given on and not yet passed by the "sent" probe (backpressure): records at a
/// source, receivers at the admit stage.
#[derive(Debug, Default)]
pub struct InFlight {
    per_epoch: BTreeMap<Epoch, usize>,
    total: usize,
}

impl InFlight {
    /// Counts `n` items given at `epoch`.
    pub fn add(&mut self, epoch: Epoch, n: usize) {
        *self.per_epoch.entry(epoch).or_default() += n;
        self.total += n;
    }

    /// Whether to wait before giving on epoch `next`: `max` items are out and the graph can
    /// still make progress below `next` (if it cannot, giving on is the only way forward).
    pub fn full(&mut self, progress: &ProbeHandle<Epoch>, next: Epoch, max: usize) -> bool {
        let frontier = progress.with_frontier(|f| f.first().copied());
        match frontier {
            None => {
                self.per_epoch.clear();
                self.total = 0;
            }
            Some(f) => {
                let rest = self.per_epoch.split_off(&f);
                let gone: usize = self.per_epoch.values().sum();
                self.total -= gone;
                self.per_epoch = rest;
            }
        }
        self.total >= max.max(1) && frontier.is_some_and(|f| f < next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::delivery;

    fn receive(d: &tidings_model::Delivery, reason: Option<&str>) -> EventRow {
        EventRow::of(d, State::Receive, reason.map(String::from), 7)
    }

    /// A message's RECEIVE rows go in one group and come out as the same rows, in order, however
    /// the group is split.
    #[test]
    fn a_group_holds_the_rows_it_was_given() {
        let ds: Vec<_> = (0..5)
            .map(|i| delivery(1, i, &format!("1380013800{i}"), 100, "c"))
            .collect();
        // The deliveries of one message share its meta.
        let meta = ds[0].meta.clone();
        let ds: Vec<_> = ds
            .into_iter()
            .map(|mut d| {
                d.meta = meta.clone();
                d
            })
            .collect();
        let rows: Vec<EventRow> = ds.iter().map(|d| receive(d, None)).collect();
        let mut group = Received::of(rows[0].clone());
        for r in &rows[1..] {
            group.absorb(r.clone()).unwrap();
        }
        // Another state, reason, time or message is not absorbed.
        let sent = EventRow::of(&ds[0], State::SendSuccess, None, 7);
        assert_eq!(group.absorb(sent.clone()), Err(sent));
        let late = receive(&ds[0], Some("late"));
        assert_eq!(group.absorb(late.clone()), Err(late));
        let other = delivery(2, 0, "13800138009", 100, "c");
        assert!(group.absorb(receive(&other, None)).is_err());

        let item = Tracked::Received(group.clone());
        assert_eq!(item.len(), 5);
        let back: Vec<Tracked> = item.into_rows().collect();
        assert_eq!(
            back,
            rows.iter().cloned().map(Tracked::Row).collect::<Vec<_>>()
        );

        let head = group.split_front(2);
        assert_eq!((head.receivers.len(), group.receivers.len()), (2, 3));
        let joined: Vec<EventRow> = head.into_rows().chain(group.into_rows()).collect();
        assert_eq!(joined, rows);
    }
}
