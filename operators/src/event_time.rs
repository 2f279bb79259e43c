//! Event time as the graph's time: epochs are event-time buckets, and each source partition
//! keeps its own watermark.
//!
//! A record's epoch is `event_time / epoch_ms`. A source holds its capability at the lowest
//! watermark of the partitions it reads, so a keyed operator whose frontier has passed epoch `e`
//! has seen every record of every partition with an event time in `e` or before — except
//! records *later than the bound*: a partition's watermark is its largest event time so far less
//! `max_out_of_order_ms`, and a record behind its partition's watermark is judged *at* the
//! watermark (its event time becomes the watermark; the row's reason says how late it was).
//! Lateness is decided per partition, from that partition's records alone, so it is the same
//! whoever reads the partition and whatever the interleaving of partitions.
//!
//! A partition that is caught up (nothing more to read) moves its watermark with the wall clock
//! (`now − max_out_of_order_ms`), so an idle partition never holds the frontier back and parked
//! messages are released on time on a quiet topic. That is the one place the wall clock enters,
//! and it only ever concerns records that arrive after their partition was caught up.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tidings_model::time::Millis;

use crate::Epoch;

/// How event time becomes epochs, and how late a record may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// Length of one epoch in event time (ms, at least 1).
    pub epoch_ms: Millis,
    /// How far behind its partition's largest event time a record may be and still be judged
    /// at its own event time.
    pub max_out_of_order_ms: Millis,
    /// How far ahead of the wall clock an event time may be (further is a dead letter).
    pub max_future_ms: Millis,
}

impl EventTime {
    /// The epoch of event time `t`.
    pub fn epoch_of(&self, t: Millis) -> Epoch {
        (t.max(0) / self.epoch_ms.max(1)) as Epoch
    }

    /// The first event time of epoch `e`.
    pub fn start_of(&self, e: Epoch) -> Millis {
        (e.min(i64::MAX as u64) as i64).saturating_mul(self.epoch_ms.max(1))
    }

    /// Why `t` cannot be an event time at wall-clock `now`, if it cannot (before 2000, more
    /// than `max_future_ms` ahead, after 9999): the validator's own rule.
    pub fn insane(&self, t: Millis, now: Millis) -> Option<String> {
        tidings_model::time::check_event_time(t, now, self.max_future_ms).err()
    }
}

/// The event time of a file line: an envelope's `ts` (ms; -1 or absent: the read time), or the
/// read time of a bare request. Unparsable lines are judged at the read time (they become dead
/// letters in the admit stage).
pub fn line_event_time(bytes: &[u8], read_time: Millis) -> Result<Millis, String> {
    #[derive(Deserialize)]
    struct Probe {
        ts: Option<serde_json::Value>,
        payload: Option<IgnoredAny>,
        code: Option<IgnoredAny>,
        #[serde(rename = "messageTemplateId")]
        template: Option<IgnoredAny>,
    }
    let bytes = tidings_model::request::strip_bom(bytes);
    let Ok(p) = serde_json::from_slice::<Probe>(bytes) else {
        return Ok(read_time);
    };
    if p.code.is_some() || p.template.is_some() || p.payload.is_none() {
        return Ok(read_time);
    }
    match p.ts {
        None | Some(serde_json::Value::Null) => Ok(read_time),
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            // kcat's "no timestamp".
            Some(-1) => Ok(read_time),
            Some(t) => Ok(t),
            None => Err(format!(
                "envelope ts {n} is not a whole number of milliseconds that fits in 64 bits"
            )),
        },
        Some(other) => Err(format!(
            "envelope ts {other} is not a number of milliseconds"
        )),
    }
}

/// When a record is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The event time the rules use (the record's own, or its partition's watermark if it was
    /// later than the bound).
    pub at: Millis,
    /// How far behind the watermark the record was (0 when on time).
    pub late_by: Millis,
}

/// The watermark of one partition: a pure function of the partition's records, in order, and of
/// when it was caught up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// The largest event time read so far.
    pub max_seen: Option<Millis>,
    /// The watermark: records before it are late.
    pub watermark: Option<Millis>,
}

impl PartitionClock {
    /// Judges a record of event time `t` read next from this partition.
    pub fn judge(&mut self, t: Millis, bound: Millis) -> Judged {
        if let Some(w) = self.watermark
            && t < w
        {
            return Judged {
                at: w,
                late_by: w - t,
            };
        }
        let max = self.max_seen.map_or(t, |m| m.max(t));
        self.max_seen = Some(max);
        self.raise(max.saturating_sub(bound));
        Judged { at: t, late_by: 0 }
    }

    /// Moves the watermark up to `w` (never down).
    pub fn raise(&mut self, w: Millis) {
        self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_records_are_judged_at_the_watermark() {
        let mut p = PartitionClock::default();
        let mut judge = |t| {
            let j = p.judge(t, 100);
            (j.at, j.late_by, p.watermark)
        };
        assert_eq!(judge(1_000), (1_000, 0, Some(900)));
        // Within the bound: on time, and the watermark does not move back.
        assert_eq!(judge(950), (950, 0, Some(900)));
        // Behind the watermark: judged at it.
        assert_eq!(judge(850), (900, 50, Some(900)));
        assert_eq!(p.max_seen, Some(1_000));
        p.raise(5_000);
        assert_eq!(p.judge(4_000, 100).at, 5_000);
    }

    #[test]
    fn epochs_and_sanity() {
        let e = EventTime {
            epoch_ms: 100,
            max_out_of_order_ms: 0,
            max_future_ms: 86_400_000,
        };
        assert_eq!(e.epoch_of(1_234), 12);
        assert_eq!(e.epoch_of(i64::MIN), 0);
        assert_eq!(e.start_of(12), 1_200);
        assert_eq!(e.start_of(u64::MAX), i64::MAX);
        let now = 1_763_740_800_000;
        assert!(e.insane(now, now).is_none());
        assert!(e.insane(i64::MAX, now).unwrap().contains("max_future_ms"));
        assert!(e.insane(-5, now).unwrap().contains("2000"));
        assert!(e.insane(now + 86_400_001, now).is_some());
    }
}
