//! Event time as the graph's time: epochs are event-time buckets, and each source partition
//! keeps its own watermark.
//!
//! A record's epoch is `event_time / epoch_ms`, or for a backlog's event time (before the run's
//! [`Backlog`] line) that of the first event time of its coarser bucket. A source holds its capability at the lowest
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
use tidings_model::request::envelope_time;
use tidings_model::time::Millis;

use crate::Epoch;

mod scan;

/// How event time becomes epochs, and how late a record may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// Length of one epoch in event time (ms, at least 1).
    pub epoch_ms: Millis,
    /// How far behind its partition's largest event time a record may be and still be judged
    /// at its own time.
    pub max_out_of_order_ms: Millis,
    /// How far ahead of the wall clock an event time may be (further is a dead letter).
    pub max_future_ms: Millis,
    /// The coarser epochs of event times before the run began (a backlog).
    pub backlog: Backlog,
}

/// Event times before `before` are in epochs of `epoch_ms` (a multiple of the job's epoch, and
/// `before` a multiple of it): a backlog read after downtime keeps its records' times, and
/// light traffic would otherwise leave a record or two per epoch, each costing the graph's
/// progress tracking as much as a full one (bench/MEASURED.md, "A backlog's coarser epochs").
///
/// Epochs stay numbered in units of the job's epoch: a backlog epoch is the number of its first
/// event time's, and no record is given at the numbers in between (a stop's bound may be one). So epochs are one monotone function
/// of event time on either side of `before`, and decisions, which follow event time within and
/// across epochs, are the same whatever `before` is (the oracle test samples it); `before` only
/// has to be the same for every worker of a run.
/// Built by [`EventTime::with_backlog`], which keeps `before` a multiple of `epoch_ms` and that a
/// multiple of the job's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// The first event time of the job's own epochs (0 or less: no backlog epochs).
    pub before: Millis,
    /// The length of a backlog epoch (ms).
    pub epoch_ms: Millis,
}

impl Backlog {
    /// No backlog epochs: every event time in the job's own.
    pub const NONE: Backlog = Backlog {
        before: Millis::MIN,
        epoch_ms: 1,
    };
}

impl EventTime {
    /// Event times before `before` (rounded down to a backlog epoch) in backlog epochs of
    /// `backlog_ms` (rounded up to a multiple of the job's epoch).
    pub fn with_backlog(self, before: Millis, backlog_ms: Millis) -> EventTime {
        let unit = self.epoch_ms.max(1);
        let len = (backlog_ms.max(unit) as u64).div_ceil(unit as u64) as i64 * unit;
        EventTime {
            backlog: Backlog {
                before: before.max(0) / len * len,
                epoch_ms: len,
            },
            ..self
        }
    }

    /// The backlog epochs, when they put any event time in an epoch other than the job's own
    /// would (a line after 0, and epochs longer than the job's).
    pub fn active_backlog(&self) -> Option<Backlog> {
        Some(self.backlog).filter(|b| b.before > 0 && b.epoch_ms > self.epoch_ms.max(1))
    }

    /// How event times are put in epochs, in words: equal for two `EventTime`s exactly when
    /// they put every event time in the same epoch (a cluster's processes must).
    pub fn grid(&self) -> String {
        let unit = self.epoch_ms.max(1);
        match self.active_backlog() {
            None => format!("{unit} ms epochs"),
            Some(b) => format!("{unit} ms epochs, {} ms before {}", b.epoch_ms, b.before),
        }
    }

    /// The epoch of event time `t`.
    pub fn epoch_of(&self, t: Millis) -> Epoch {
        debug_assert!(
            self.backlog.before <= 0
                || (self.backlog.before % self.backlog.epoch_ms == 0
                    && self.backlog.epoch_ms % self.epoch_ms.max(1) == 0),
            "a backlog not built by with_backlog: {self:?}"
        );
        let t = t.max(0);
        let t = if t < self.backlog.before {
            t - t % self.backlog.epoch_ms.max(1)
        } else {
            t
        };
        (t / self.epoch_ms.max(1)) as Epoch
    }

    /// The first event time of epoch `e`.
    pub fn start_of(&self, e: Epoch) -> Millis {
        (e.min(i64::MAX as u64) as i64).saturating_mul(self.epoch_ms.max(1))
    }

    /// The last event time of epoch `e`: of the job's epoch, or of the backlog epoch that holds
    /// its first event time.
    pub fn end_of(&self, e: Epoch) -> Millis {
        let start = self.start_of(e);
        let next = if start < self.backlog.before {
            let len = self.backlog.epoch_ms.max(1);
            start - start % len + len
        } else {
            start.saturating_add(self.epoch_ms.max(1))
        };
        next - 1
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
    read_line(bytes, read_time).time
}

/// A file line as the source reads it: its event time and, for a kcat `-J` envelope whose
/// payload is a string, that payload (the request body, unescaped).
#[derive(Debug, PartialEq, Eq)]
pub struct LineRead {
    /// As [`line_event_time`] says.
    pub time: Result<Millis, String>,
    /// The envelope's payload, when the line is an envelope with a string payload and a
    /// usable `ts`: the record a Kafka topic would hold, so admit decodes it as it decodes a
    /// Kafka record's value and the line's JSON is parsed once.
    pub payload: Option<Vec<u8>>,
}

/// Reads a file line once: its event time (as [`line_event_time`]) and an envelope's payload.
///
/// The envelopes kcat writes are read by a scanner of our own ([`scan`]: one pass, the payload
/// unescaped into one buffer); anything it is not sure of is read by serde, and both
/// give every line the same reading (`the_scanner_reads_every_line_as_serde_does`).
pub fn read_line(bytes: &[u8], read_time: Millis) -> LineRead {
    match scan::scan(tidings_model::request::strip_bom(bytes)) {
        Some(scan::Scan::Bare) => LineRead {
            time: Ok(read_time),
            payload: None,
        },
        Some(scan::Scan::Envelope { ts, payload }) => LineRead {
            time: Ok(envelope_time(ts, read_time)),
            payload: Some(payload),
        },
        None => read_line_serde(bytes, read_time),
    }
}

/// [`read_line`] by serde alone: every line the scanner leaves, and the scanner's oracle.
fn read_line_serde(bytes: &[u8], read_time: Millis) -> LineRead {
    #[derive(Deserialize)]
    struct Probe<P> {
        ts: Option<serde_json::Value>,
        payload: Option<P>,
        code: Option<IgnoredAny>,
        #[serde(rename = "messageTemplateId")]
        template: Option<IgnoredAny>,
    }
    impl<P> Probe<P> {
        /// The line is an envelope: a payload, and neither `code` nor `messageTemplateId`.
        fn envelope(self) -> Option<(Option<serde_json::Value>, P)> {
            if self.code.is_some() || self.template.is_some() {
                return None;
            }
            Some((self.ts, self.payload?))
        }
    }
    let bare = LineRead {
        time: Ok(read_time),
        payload: None,
    };
    let bytes = tidings_model::request::strip_bom(bytes);
    // The payload as text (a request's JSON in a string always has escapes: never borrowed).
    // An object only (serde's derived structs also take an array of their fields in order).
    use tidings_model::request::Object;
    let envelope = match serde_json::from_slice::<Object<Probe<String>>>(bytes) {
        Ok(Object(p)) => p.envelope().map(|(ts, text)| (ts, Some(text))),
        // The payload is not a string, or not valid text (invalid UTF-8, a lone surrogate), or
        // the line is not JSON: probed again with the payload skipped unread, as the `ts` alone
        // was probed before, an envelope keeps its `ts` and goes on whole, for admit to refuse.
        // (A replay judges it at its `ts`, never at the wall clock, which would move the
        // partition's watermark.)
        Err(_) => serde_json::from_slice::<Object<Probe<IgnoredAny>>>(bytes)
            .ok()
            .and_then(|Object(p)| p.envelope())
            .map(|(ts, _)| (ts, None)),
    };
    let Some((ts, payload)) = envelope else {
        return bare;
    };
    let time = match ts {
        None | Some(serde_json::Value::Null) => Ok(read_time),
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(t) => Ok(envelope_time(Some(t), read_time)),
            None => Err(format!(
                "envelope ts {n} is not a whole number of milliseconds that fits in 64 bits"
            )),
        },
        Some(other) => Err(format!(
            "envelope ts {other} is not a number of milliseconds"
        )),
    };
    let payload = payload.filter(|_| time.is_ok()).map(String::into_bytes);
    LineRead { time, payload }
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
    use proptest::strategy::Strategy as _;

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
            backlog: Backlog::NONE,
        };
        assert_eq!(e.epoch_of(1_234), 12);
        assert_eq!(e.end_of(12), 1_299);
        assert_eq!(e.epoch_of(i64::MIN), 0);
        assert_eq!(e.start_of(12), 1_200);
        assert_eq!(e.start_of(u64::MAX), i64::MAX);
        let now = 1_763_740_800_000;
        assert!(e.insane(now, now).is_none());
        assert!(e.insane(i64::MAX, now).unwrap().contains("max_future_ms"));
        assert!(e.insane(-5, now).unwrap().contains("2000"));
        assert!(e.insane(now + 86_400_001, now).is_some());
    }

    /// Backlog epochs before the boundary, the job's after it: one monotone function of event
    /// time, each epoch's first and last event time exact, whatever the lengths and boundary.
    #[test]
    fn backlog_epochs_are_coarser_before_the_boundary_and_monotone() {
        let job = EventTime {
            epoch_ms: 10,
            max_out_of_order_ms: 0,
            max_future_ms: 86_400_000,
            backlog: Backlog::NONE,
        };
        let e = job.with_backlog(10_250, 1_000);
        assert_eq!(
            e.backlog,
            Backlog {
                before: 10_000,
                epoch_ms: 1_000
            }
        );
        assert_eq!(e.epoch_of(9_999), 900);
        assert_eq!(e.epoch_of(9_000), 900);
        assert_eq!(e.epoch_of(8_999), 800);
        assert_eq!(e.epoch_of(10_000), 1_000);
        assert_eq!(e.epoch_of(10_011), 1_001);
        assert_eq!((e.start_of(900), e.end_of(900)), (9_000, 9_999));
        assert_eq!((e.start_of(1_000), e.end_of(1_000)), (10_000, 10_009));
        // A number inside a backlog epoch ends with it.
        assert_eq!(e.end_of(950), 9_999);
        // Rounded up to a multiple of the job's epoch; a boundary at or before 0: none.
        assert_eq!(job.with_backlog(5_000, 995).backlog.epoch_ms, 1_000);
        assert_eq!(job.with_backlog(Millis::MIN, 1_000).epoch_of(999), 99);
        for (unit, len, before) in [
            (10, 1_000, 10_250),
            (7, 100, 3_333),
            (1, 1, 50),
            (100, 60_000, 200_000),
        ] {
            let e = EventTime {
                epoch_ms: unit,
                ..job
            }
            .with_backlog(before, len);
            let mut last = 0;
            for t in 0..(before + 3 * len) {
                let epoch = e.epoch_of(t);
                assert!(epoch >= last, "{unit}/{len}/{before}: {t} went back");
                assert!(
                    (e.start_of(epoch)..=e.end_of(epoch)).contains(&t),
                    "{unit}/{len}/{before}: {t}"
                );
                assert_eq!(e.epoch_of(e.start_of(epoch)), epoch);
                assert_eq!(e.epoch_of(e.end_of(epoch)), epoch);
                last = epoch;
            }
        }
    }

    /// What admit decoded from the line before, it decodes from the payload the source takes
    /// out: the same request, or the same refusal.
    fn payload_decodes_as_the_line(line: &str) {
        use tidings_model::request::{decode_line, decode_request};
        const READ: Millis = 1_763_740_800_000;
        let read = read_line(line.as_bytes(), READ);
        assert_eq!(read.time, line_event_time(line.as_bytes(), READ));
        if let Some(payload) = &read.payload {
            let time = read
                .time
                .clone()
                .expect("a payload is taken out only with its time");
            assert_eq!(
                decode_request(payload).map(|r| (time, r)),
                decode_line(line.as_bytes(), READ),
                "{line}"
            );
        }
    }

    #[test]
    fn an_envelopes_payload_is_taken_out_once() {
        let request = r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"a\"b","variables":{"x":"\u00e9"}}}"#;
        let envelope = |ts: &str| {
            format!(
                r#"{{"topic":"t","key":"k","ts":{ts},"payload":{}}}"#,
                serde_json::to_string(request).unwrap()
            )
        };
        let read = read_line(envelope("1763740800123").as_bytes(), 5);
        assert_eq!(read.time, Ok(1_763_740_800_123));
        assert_eq!(read.payload.as_deref(), Some(request.as_bytes()));
        // kcat's "no timestamp": the read time, and the payload still taken out.
        let read = read_line(envelope("-1").as_bytes(), 5);
        assert_eq!((read.time, read.payload.is_some()), (Ok(5), true));
        // A `ts` that is not a time: the line goes on whole (it becomes a dead letter).
        assert_eq!(read_line(envelope("\"x\"").as_bytes(), 5).payload, None);
        // A bare request, a tombstone, a payload that is not a string, garbage: the line itself.
        for line in [
            request,
            r#"{"ts": 5, "payload": null}"#,
            r#"{"ts": 5, "payload": {"code": "send"}}"#,
            r#"{"ts": 5, "payload": [1, "x", {"a": null}]}"#,
            r#"{"ts": 5, "payload": 7}"#,
            r#"{"code": "send", "payload": "{}"}"#,
            "{oops",
            // An array of an envelope's fields in order is not an envelope.
            r#"[1763740800123, "{}", null, null]"#,
        ] {
            let read = read_line(line.as_bytes(), 5);
            assert_eq!((read.time, read.payload), (Ok(5), None), "{line}");
            payload_decodes_as_the_line(line);
        }
        // A payload that is not valid text (a GBK byte pair, a lone surrogate's escape): the
        // envelope keeps its `ts` and goes on whole (the admit stage refuses it), as when only
        // the `ts` was probed; never the read time, which would move the watermark.
        let gbk = b"{\"ts\": 1763740800123, \"payload\": \"{\\\"v\\\":\\\"\xC4\xE3\\\"}\"}";
        let surrogate = br#"{"ts": 1763740800123, "payload": "{\"v\":\"\ud800\"}"}"#;
        for line in [&gbk[..], &surrogate[..]] {
            assert_eq!(
                read_line(line, 5),
                LineRead {
                    time: Ok(1_763_740_800_123),
                    payload: None
                },
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // A byte order mark before the envelope, escapes, and a payload that is not a request.
        payload_decodes_as_the_line(&format!("\u{feff}{}", envelope("7")));
        payload_decodes_as_the_line(r#"{"ts": 9, "payload": "{\"code\":\"nope\"}"}"#);
        payload_decodes_as_the_line(r#"{"ts": 9, "payload": "not json"}"#);
        payload_decodes_as_the_line(r#"{"ts": 9, "payload": "\ufeff{\"code\":\"send\"}"}"#);
    }

    proptest::proptest! {
        #[test]
        fn any_envelope_decodes_as_its_line(
            receiver in "\\PC{0,12}",
            variable in "[\"\\\\/a-z\u{e9}\u{1F600} ]{0,12}",
            ts in proptest::prop_oneof![
                proptest::strategy::Just(None),
                proptest::strategy::Just(Some(serde_json::json!(-1))),
                proptest::strategy::Just(Some(serde_json::json!(null))),
                proptest::strategy::Just(Some(serde_json::json!("1"))),
                proptest::strategy::Just(Some(serde_json::json!(1.5))),
                (0i64..i64::MAX).prop_map(|t| Some(serde_json::json!(t))),
            ],
            garbage in proptest::option::of("\\PC{0,20}"),
            code in proptest::option::of("send|recall|x"),
        ) {
            let mut request = serde_json::json!({
                "messageTemplateId": 1,
                "messageParam": {"receiver": receiver, "variables": {"v": variable}},
            });
            if let Some(code) = &code {
                request["code"] = serde_json::json!(code);
            }
            let payload = garbage.clone().unwrap_or_else(|| request.to_string());
            let mut envelope = serde_json::json!({"key": "k", "payload": payload});
            if let Some(ts) = ts {
                envelope["ts"] = ts;
            }
            payload_decodes_as_the_line(&envelope.to_string());
        }
    }

    /// The probe of the event time before the payload was taken out at the source: `ts` read,
    /// the payload skipped unread. `read_line` must give every line the same time.
    fn ts_probe(bytes: &[u8], read_time: Millis) -> Result<Millis, String> {
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
                Some(-1) => Ok(read_time),
                Some(t) => Ok(t),
                None => Err(String::new()),
            },
            Some(_) => Err(String::new()),
        }
    }

    proptest::proptest! {
        /// Any bytes in an envelope's payload (invalid UTF-8, escapes cut short, lone
        /// surrogates): the line's time is what the `ts` probe said.
        #[test]
        fn any_bytes_in_a_payload_keep_the_envelopes_time(
            inner in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::num::u8::ANY,
                    proptest::strategy::Just(b'\\'),
                    proptest::strategy::Just(b'"'),
                    proptest::strategy::Just(b'u'),
                ],
                0..24,
            ),
            surrogate in proptest::option::of("\\\\u[dD][89abAB][0-9a-f]{2}"),
        ) {
            let mut line = br#"{"ts": 1763740800123, "key": "k", "payload": "{\"v\":\""#.to_vec();
            line.extend_from_slice(&inner);
            if let Some(s) = &surrogate {
                line.extend_from_slice(s.as_bytes());
            }
            line.extend_from_slice(br#"\"}"}"#);
            let read = read_line(&line, 5);
            let probed = ts_probe(&line, 5);
            proptest::prop_assert_eq!(read.time.is_ok(), probed.is_ok());
            if let Ok(t) = probed {
                proptest::prop_assert_eq!(read.time, Ok(t));
            }
            if let Some(payload) = read.payload {
                // What was taken out is the string the line holds.
                let whole: serde_json::Value = serde_json::from_slice(&line).unwrap();
                proptest::prop_assert_eq!(whole["payload"].as_str().unwrap().as_bytes(), &payload[..]);
            }
        }
    }

    #[test]
    fn the_scanner_reads_kcats_envelopes() {
        use scan::{Scan, scan};
        let kcat = br#"{"topic":"requests","partition":0,"offset":7,"tstype":"create","ts":1763740800123,"broker":1,"headers":null,"key":"k\"1","payload":"{\"code\":\"send\",\"v\":\"\u00e9\ud83d\ude00\\\\\"}"}"#;
        assert_eq!(
            scan(kcat),
            Some(Scan::Envelope {
                ts: Some(1_763_740_800_123),
                payload: "{\"code\":\"send\",\"v\":\"\u{e9}\u{1f600}\\\\\"}".into(),
            })
        );
        assert_eq!(read_line(kcat, 5), read_line_serde(kcat, 5));
        let ours = b"{\"ts\": -1, \"key\": \"0\", \"payload\": \"{}\"}\n";
        assert_eq!(
            read_line(ours, 5),
            LineRead {
                time: Ok(5),
                payload: Some(b"{}".to_vec())
            }
        );
        // A bare request is told at its first field.
        assert_eq!(
            scan(br#"{"code":"send","messageParam":[}"#),
            Some(Scan::Bare)
        );
        assert_eq!(scan(b"{}"), Some(Scan::Bare));
        // A field twice: serde refuses the line, so it goes on whole.
        assert_eq!(
            scan(br#"{"ts": 1, "payload": "x", "ts": 2}"#),
            Some(Scan::Bare)
        );
        // Left to serde: escaped keys, fractions, arrays, lone surrogates, raw bytes not text.
        for line in [
            &br#"{"t\u0073": 1, "payload": "x"}"#[..],
            br#"{"ts": 1.0, "payload": "x"}"#,
            br#"{"ts": 1, "h": [], "payload": "x"}"#,
            br#"{"ts": 1, "payload": "\ud800"}"#,
            b"{\"ts\": 1, \"payload\": \"\xC4\xE3\"}",
            br#"{"ts": 9223372036854775808, "payload": "x"}"#,
            // serde reads -0 as a float.
            br#"{"ts": -0, "payload": "x"}"#,
            // serde reads a `null` request field as none.
            br#"{"code": null, "payload": "x"}"#,
        ] {
            assert_eq!(scan(line), None, "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(
            scan(br#"{"ts": -9223372036854775808, "payload": ""}"#),
            Some(Scan::Envelope {
                ts: Some(i64::MIN),
                payload: Vec::new()
            })
        );
    }

    /// A line of JSON-ish pieces: keys the probe reads and others, values of every kind and of
    /// none, whitespace JSON allows and some it does not; and whether the line is a well-formed
    /// envelope the scanner must read itself (not leave to serde).
    fn jsonish_line() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, bool)> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("\"ts\"".to_string()),
            Just("\"payload\"".to_string()),
            Just("\"key\"".to_string()),
            Just("\"code\"".to_string()),
            Just("\"messageTemplateId\"".to_string()),
            Just("\"t\\u0073\"".to_string()),
            Just("\"\u{e9}\"".to_string()),
            "\\PC{0,4}".prop_map(|k| serde_json::to_string(&k).unwrap()),
        ];
        let edge = prop_oneof![
            Just("-0"),
            Just("01"),
            Just("1.5"),
            Just("1e3"),
            Just("-"),
            Just("-1"),
            Just("9223372036854775807"),
            Just("9223372036854775808"),
            Just("18446744073709551616"),
            Just("-9223372036854775808"),
            Just("-9223372036854775809"),
            Just("null"),
            Just("nullx"),
            Just("true"),
            Just("false"),
            Just("nul"),
            Just("[1, \"x\"]"),
            Just("{\"a\": null}"),
            Just("\"1\""),
        ]
        .prop_map(|v| v.as_bytes().to_vec());
        let value = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            any::<u64>().prop_map(|n| n.to_string().into_bytes()),
            edge.clone(),
            "\\PC{0,16}".prop_map(|t| serde_json::to_string(&t).unwrap().into_bytes()),
            tidings_model::json::strategies::json_string(true),
        ];
        let space = prop_oneof![
            40 => Just(""),
            20 => Just(" "),
            4 => Just("\t"),
            4 => Just("\r\n"),
            1 => Just("\x0c"),
        ];
        // Mostly an envelope's own members, so that most lines are read by the scanner (a `ts`,
        // a key and a payload, in any order, as kcat writes them), and any keys with any values.
        let ts = prop_oneof![
            6 => any::<i64>().prop_map(|n| (n.to_string().into_bytes(), true)),
            2 => Just((b"-1".to_vec(), true)),
            1 => Just((b"null".to_vec(), true)),
            1 => edge.prop_map(|v| (v, false)),
        ]
        .prop_map(|(v, fine)| ("\"ts\"".to_string(), v, fine));
        let payload = prop_oneof![
            "\\PC{0,40}".prop_map(|t| (serde_json::to_string(&t).unwrap().into_bytes(), true)),
            tidings_model::json::strategies::json_string(false).prop_map(|t| (t, true)),
            tidings_model::json::strategies::json_string(true).prop_map(|t| (t, false)),
        ]
        .prop_map(|(v, fine)| ("\"payload\"".to_string(), v, fine));
        let kafka = prop_oneof![
            "[ -~]{0,8}".prop_map(|t| ("\"key\"", serde_json::to_string(&t).unwrap())),
            Just(("\"topic\"", "\"requests\"".to_string())),
            any::<i32>().prop_map(|n| ("\"partition\"", n.to_string())),
            Just(("\"headers\"", "null".to_string())),
            Just(("\"tstype\"", "\"create\"".to_string())),
        ]
        .prop_map(|(k, v)| (k.to_string(), v.into_bytes(), true));
        let members = (
            proptest::option::weighted(0.9, ts),
            proptest::collection::vec(kafka, 0..3),
            proptest::option::weighted(0.9, payload),
            proptest::option::weighted(0.3, (key, value).prop_map(|(k, v)| (k, v, false))),
        )
            .prop_map(|(ts, mut kafka, p, any)| {
                // Whether the scanner must read it: a payload, a `ts` and every other member
                // as kcat writes them, and no key twice.
                let fine = p.is_some()
                    && [&ts, &p].iter().all(|m| m.as_ref().is_none_or(|m| m.2))
                    && any.is_none()
                    && kafka
                        .iter()
                        .map(|m| &m.0)
                        .collect::<std::collections::HashSet<_>>()
                        .len()
                        == kafka.len();
                let mut all: Vec<_> = ts.into_iter().chain(p).collect();
                all.append(&mut kafka);
                all.extend(any);
                (all, fine)
            })
            .prop_flat_map(|(all, fine)| (Just(all).prop_shuffle(), Just(fine)));
        let spaces = proptest::collection::vec(space.clone(), 16);
        (
            proptest::option::of(Just("\u{feff}")),
            members,
            spaces,
            space,
            proptest::option::weighted(
                0.2,
                (any::<proptest::sample::Index>(), any::<u8>(), 0..3u8),
            ),
        )
            .prop_map(|(bom, (members, fine), spaces, end, edit)| {
                let mut line = bom.unwrap_or_default().as_bytes().to_vec();
                line.push(b'{');
                let mut space = spaces.iter().cycle();
                for (i, (key, value, _)) in members.into_iter().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    line.extend_from_slice(space.next().unwrap().as_bytes());
                    line.extend_from_slice(key.as_bytes());
                    line.extend_from_slice(space.next().unwrap().as_bytes());
                    line.push(b':');
                    line.extend_from_slice(space.next().unwrap().as_bytes());
                    line.extend_from_slice(&value);
                    line.extend_from_slice(space.next().unwrap().as_bytes());
                }
                line.push(b'}');
                line.extend_from_slice(end.as_bytes());
                let fine = fine && edit.is_none() && !line.contains(&0x0c);
                // One byte put in, taken out or changed anywhere.
                if let Some((at, byte, how)) = edit {
                    let at = at.index(line.len() + 1);
                    match how {
                        0 => line.insert(at, byte),
                        1 if at < line.len() => {
                            line.remove(at);
                        }
                        _ if at < line.len() => line[at] = byte,
                        _ => {}
                    }
                }
                (line, fine)
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4096))]
        /// The scanner reads every line as serde does: same time, same payload, or it leaves
        /// the line to serde.
        #[test]
        fn the_scanner_reads_every_line_as_serde_does((line, fine) in jsonish_line()) {
            proptest::prop_assert_eq!(read_line(&line, 5), read_line_serde(&line, 5));
            if fine {
                // Well formed as kcat writes it: read by the scanner, not left to serde.
                let scanned = scan::scan(tidings_model::request::strip_bom(&line));
                proptest::prop_assert!(
                    matches!(scanned, Some(scan::Scan::Envelope { .. })),
                    "left to serde: {}",
                    String::from_utf8_lossy(&line)
                );
            }
        }
    }
}
