//! The admit operator: validate (step 1) and gate (steps 2–6) for each record, on the worker
//! that read it; at the end of each epoch it sends every peer a [`Mark`] with the epoch's
//! largest event time. Each kind of output is its own typed stream ([`Admitted`]).
//!
//! ```ignore
//! let admitted = records.admit(validator, gate, clock);
//! let released = admitted.parked.park(store, clock, event, checkpoints, live);
//! let content = admitted.pass.dedup_by(rule, &admitted.marks, clock, checkpoints, live);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::container::Trimming;
use tidings_model::time::Millis;
use tidings_model::{DeadLetter, Delivery, State};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::ToStream;
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::book::{Applied, Change};
use crate::checkpoint::{Checkpoints, FINAL};
use crate::gate::{Gate, Verdict};
use crate::park::Parked;
use crate::validate::{Validated, Validator};
use crate::{Clock, Epoch, InFlight, Mark, RecallOrder, Received, SourceRecord, Tracked};

/// The streams the admit stage produces.
pub struct Admitted<'s> {
    /// Receivers that go on to dedup.
    pub pass: StreamVec<'s, Epoch, Delivery>,
    /// Receivers to park until their release time (`night_delay`).
    pub parked: StreamVec<'s, Epoch, Parked>,
    /// Each epoch's largest event time, one mark per peer (`Mark::to`).
    pub marks: StreamVec<'s, Epoch, Mark>,
    /// RECEIVE and the rows of steps 2–6, and dead letters.
    pub rows: StreamVec<'s, Epoch, Tracked>,
    /// Valid `recall` requests, straight to the recall stage.
    pub recalls: StreamVec<'s, Epoch, RecallOrder>,
}

/// Admits a stream of source records: `records.admit(validator, gate, clock)`.
pub trait Admit<'s> {
    /// Runs validate + gate over the records (pipeline: on the worker that read them), with
    /// the job file's templates only.
    fn admit(self, validator: Validator, gate: Gate, clock: Clock) -> Admitted<'s>;

    /// Runs validate + gate with live template changes: `changes` must carry every change to
    /// every worker (broadcast). An epoch's records are judged once no change of that epoch or
    /// before can still come, each with the newest version at or before its event time. With
    /// `checkpoints`, worker 0 writes the book of changes as its part of every cut.
    ///
    /// With `pace`, an epoch waits before it is judged while the receivers given on and not
    /// yet past the send stage reach `pace.max` (see [`Pace`]).
    fn admit_with(
        self,
        changes: StreamVec<'s, Epoch, Change>,
        validator: Validator,
        gate: Gate,
        clock: Clock,
        checkpoints: Option<Checkpoints>,
        pace: Option<Pace>,
    ) -> Admitted<'s>;
}

/// How the admit stage paces the epochs it judges. Records wait here until no change of
/// their epoch can still come; a burst's records (the sources read an epoch whole) can then be
/// settled many at once. Judged all at once, each of their receivers would become a delivery
/// and a row together. So the next epoch waits while `max` receivers given on are not past
/// `sent` (the send stage's probe) and the graph can still progress below it. An epoch is
/// never split, and what is decided does not change: only when.
#[derive(Clone)]
pub struct Pace {
    /// The probe after the send stage.
    pub sent: ProbeHandle<Epoch>,
    /// Receivers given on (passed or parked) and not yet past `sent`.
    pub max: usize,
}

/// How soon a paced admit stage looks at the send stage's probe again.
const PACE_LOOK: Duration = Duration::from_millis(2);

/// A late record's own event time, read back from its RECEIVE row's reason (written by
/// [`note_late`]); the row's `event_time` column holds the watermark it was judged at.
pub fn late_own_time(reason: &str) -> Option<i64> {
    let rest = reason.strip_prefix("late: event time ")?;
    rest[..rest.find(' ')?].parse().ok()
}

/// Says on a late record's RECEIVE rows that it was judged at its partition's watermark.
fn note_late(verdicts: &mut [Verdict], rec: &SourceRecord) {
    let own = rec.event_time - rec.late_by;
    for v in verdicts {
        if let Verdict::Row(row) = v
            && row.state == State::Receive
            && row.reason.is_none()
        {
            row.reason = Some(format!(
                "late: event time {own} came {} ms behind its partition's watermark (source.max_out_of_order_ms); judged at the watermark {}",
                rec.late_by, rec.event_time
            ));
        }
    }
}

/// One record's outputs, by kind.
#[derive(Default)]
struct Outputs {
    pass: Vec<Delivery>,
    parked: Vec<Parked>,
    rows: Vec<Tracked>,
    recalls: Vec<RecallOrder>,
    /// One record's validation, its lists reused from record to record.
    validated: Validated,
}

impl Outputs {
    /// Validates and gates one record; returns the largest event time of its messages.
    fn admit(
        &mut self,
        rec: SourceRecord,
        validator: &Validator,
        gate: &Gate,
        now: Millis,
        verdicts: &mut Vec<Verdict>,
    ) -> Option<Millis> {
        if let Some(reason) = &rec.bad_time {
            self.rows.push(Tracked::Dead(Box::new(DeadLetter::of_record(
                now,
                rec.position(),
                &rec.bytes,
                reason.clone(),
            ))));
            return None;
        }
        validator.validate_into(&rec, now, &mut self.validated);
        self.rows.extend(
            self.validated
                .dead
                .drain(..)
                .map(|d| Tracked::Dead(Box::new(d))),
        );
        self.recalls.append(&mut self.validated.recalls);
        let mut max: Option<Millis> = None;
        for m in self.validated.messages.drain(..) {
            max = Some(max.map_or(m.meta.event_time, |t| t.max(m.meta.event_time)));
            let (discard, whitelist) = validator.book().lists_at(m.meta.event_time);
            gate.judge_with(m, now, verdicts, discard, whitelist);
            if rec.late_by > 0 {
                note_late(verdicts, &rec);
            }
            // The message's RECEIVE rows go in one group, where its first one was.
            let mut group: Option<usize> = None;
            for verdict in verdicts.drain(..) {
                match verdict {
                    Verdict::Row(row) if row.state == State::Receive => {
                        let row = match group.map(|i| &mut self.rows[i]) {
                            Some(Tracked::Received(g)) => match g.absorb(row) {
                                Ok(()) => continue,
                                Err(row) => row,
                            },
                            _ => row,
                        };
                        group = Some(self.rows.len());
                        self.rows.push(Tracked::Received(Received::of(row)));
                    }
                    Verdict::Row(row) => self.rows.push(Tracked::Row(row)),
                    Verdict::Pass(d) => self.pass.push(d),
                    Verdict::Park(p) => self.parked.push(p),
                }
            }
        }
        max
    }
}

impl<'s> Admit<'s> for StreamVec<'s, Epoch, SourceRecord> {
    fn admit(self, validator: Validator, gate: Gate, clock: Clock) -> Admitted<'s> {
        let none = Vec::<Change>::new().to_stream(self.scope());
        self.admit_with(none, validator, gate, clock, None, None)
    }

    fn admit_with(
        self,
        changes: StreamVec<'s, Epoch, Change>,
        mut validator: Validator,
        gate: Gate,
        clock: Clock,
        checkpoints: Option<Checkpoints>,
        pace: Option<Pace>,
    ) -> Admitted<'s> {
        let (index, peers) = (self.scope().index(), self.scope().peers() as u32);
        // Every worker holds the same book; worker 0 writes it into each checkpoint.
        let checkpoints = checkpoints.filter(|_| index == 0);
        if let Some(c) = &checkpoints {
            c.register();
        }
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("Admit".to_owned(), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let mut input = builder.new_input(self, Pipeline);
        let mut change_input = builder.new_input(changes, Pipeline);
        let (pass_out, pass) = builder.new_output();
        let (parked_out, parked) = builder.new_output();
        let marks_port = builder.shape().outputs();
        let (marks_out, marks) = builder.new_output();
        let (rows_out, rows) = builder.new_output();
        let (recalls_out, recalls) = builder.new_output();
        let mut pass_out = OutputBuilder::<_, Trimming<Delivery>>::from(pass_out);
        let mut parked_out = OutputBuilder::<_, Trimming<Parked>>::from(parked_out);
        let mut marks_out = OutputBuilder::<_, Trimming<Mark>>::from(marks_out);
        let mut rows_out = OutputBuilder::<_, Trimming<Tracked>>::from(rows_out);
        let mut recalls_out = OutputBuilder::<_, Trimming<RecallOrder>>::from(recalls_out);
        builder.build(move |initial| {
            // Epochs seen and not yet closed: the capability to send their marks, and their
            // largest event time.
            let mut open: BTreeMap<Epoch, (Capability<Epoch>, Option<Millis>)> = BTreeMap::new();
            // Records not judged yet (a change of their epoch may still come, or, paced, no
            // room yet): the capabilities of their outputs (pass, parked, rows, recalls) and
            // the records.
            let mut waiting: BTreeMap<Epoch, (Vec<Capability<Epoch>>, Vec<Vec<SourceRecord>>)> =
                BTreeMap::new();
            // Changes not applied yet, by epoch, with the capability of their dead letters.
            let mut staged: BTreeMap<Epoch, (Capability<Epoch>, Vec<Change>)> = BTreeMap::new();
            let mut written: Option<Epoch> = None;
            let mut held = checkpoints.as_ref().map(|_| initial);
            let mut out = Outputs::default();
            let mut verdicts = Vec::new();
            let mut flight = InFlight::default();
            move |frontiers| {
                let (frontier, change_frontier) = (&frontiers[0], &frontiers[1]);
                let (mut pass, mut parked, mut rows, mut recalls) = (
                    pass_out.activate(),
                    parked_out.activate(),
                    rows_out.activate(),
                    recalls_out.activate(),
                );
                let ports = [
                    pass.output_index(),
                    parked.output_index(),
                    rows.output_index(),
                    recalls.output_index(),
                ];
                change_input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = staged
                        .entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, ports[2]), Vec::new()));
                    for batch in batches {
                        entry.1.append(batch);
                    }
                });
                // No change of an epoch before `bound` can still come.
                let bound = change_frontier.frontier().first().copied();
                let settled = |e: Epoch| bound.is_none_or(|b| e < b);
                let now = clock.now_ms();
                while let Some((&epoch, _)) = staged.first_key_value() {
                    if !settled(epoch) {
                        break;
                    }
                    if let Some(c) = &checkpoints {
                        write_cuts(c, &validator, &mut written, epoch);
                    }
                    let (cap, mut list) = staged.remove(&epoch).expect("first key exists");
                    list.sort_by_key(|c| (c.event_time, c.order));
                    for change in list {
                        let applied = validator.book_mut().apply(&change);
                        if change.origin != index {
                            continue;
                        }
                        match applied {
                            Ok(Applied::Template { id, version }) => tracing::info!(
                                "template change from {} applied: template {id} version {version} from event time {}",
                                change.source,
                                crate::live::iso(change.event_time)
                            ),
                            Ok(Applied::Account { version }) => tracing::info!(
                                "account change from {} applied: version {version} from event time {}",
                                change.source,
                                crate::live::iso(change.event_time)
                            ),
                            Ok(Applied::Lists) => tracing::info!(
                                "lists change from {} applied from event time {}",
                                change.source,
                                crate::live::iso(change.event_time)
                            ),
                            Err(reason) => rows.session_with_builder(&cap).give(Tracked::Dead(Box::new(
                                DeadLetter::of_record(now, change.source, &change.bytes, reason),
                            ))),
                        }
                    }
                }
                // Every epoch waits here and is judged below, in epoch order, once no change
                // of it can still come (and, paced, once there is room).
                input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    open.entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, marks_port), None));
                    let wait = waiting.entry(epoch).or_insert_with(|| {
                        (
                            ports.iter().map(|&p| cap.delayed(&epoch, p)).collect(),
                            Vec::new(),
                        )
                    });
                    // Kept as the batches they came in (moved, not copied into one growing
                    // list: an epoch of a burst holds ~100,000 records).
                    wait.1
                        .extend(batches.map(std::mem::take).filter(|b| !b.is_empty()));
                });
                while let Some((&epoch, _)) = waiting.first_key_value() {
                    if !settled(epoch) {
                        break;
                    }
                    if let Some(p) = &pace
                        && flight.full(&p.sent, epoch, p.max)
                    {
                        activator.activate_after(PACE_LOOK);
                        break;
                    }
                    let (caps, records) = waiting.remove(&epoch).expect("first key exists");
                    let mut max = None;
                    for rec in records.into_iter().flatten() {
                        if let Some(t) = out.admit(rec, &validator, &gate, now, &mut verdicts) {
                            max = Some(max.map_or(t, |m: Millis| m.max(t)));
                        }
                    }
                    if let (Some(t), Some(entry)) = (max, open.get_mut(&epoch)) {
                        entry.1 = Some(entry.1.map_or(t, |m: Millis| m.max(t)));
                    }
                    if pace.is_some() {
                        flight.add(epoch, out.pass.len() + out.parked.len());
                    }
                    pass.session_with_builder(&caps[0]).give_iterator(out.pass.drain(..));
                    parked.session_with_builder(&caps[1]).give_iterator(out.parked.drain(..));
                    rows.session_with_builder(&caps[2]).give_iterator(out.rows.drain(..));
                    recalls.session_with_builder(&caps[3]).give_iterator(out.recalls.drain(..));
                }
                let mut marks = marks_out.activate();
                while let Some((&epoch, _)) = open.first_key_value() {
                    if frontier.less_equal(&epoch) || waiting.contains_key(&epoch) {
                        break;
                    }
                    let (cap, max) = open.remove(&epoch).expect("first key exists");
                    if let Some(max_event_time) = max {
                        marks.session_with_builder(&cap).give_iterator((0..peers).map(|to| Mark {
                            to,
                            max_event_time,
                            epoch,
                        }));
                    }
                }
                if let (Some(c), Some(caps)) = (&checkpoints, held.as_mut()) {
                    if frontiers.iter().all(|f| f.is_empty()) {
                        write_cuts(c, &validator, &mut written, FINAL);
                        book_part(c, &validator, FINAL);
                        held = None;
                    } else {
                        let limit = frontiers
                            .iter()
                            .filter_map(|f| f.frontier().first().copied())
                            .min()
                            .unwrap_or(FINAL);
                        write_cuts(c, &validator, &mut written, limit);
                        for cap in caps.iter_mut() {
                            if limit > *cap.time() {
                                cap.downgrade(&limit);
                            }
                        }
                    }
                }
            }
        });
        Admitted {
            pass,
            parked,
            marks,
            rows,
            recalls,
        }
    }
}

/// Writes the book as worker 0's part of every cut before `limit` not written yet: every
/// change of the epochs up to the cut is applied, and none later.
fn write_cuts(c: &Checkpoints, v: &Validator, written: &mut Option<Epoch>, limit: Epoch) {
    for cut in c.cuts_between(*written, limit) {
        book_part(c, v, cut);
        *written = Some(cut);
    }
}

fn book_part(c: &Checkpoints, v: &Validator, cut: Epoch) {
    let saved = c
        .part_path(cut, crate::book::PART)
        .and_then(|path| v.book().save(&path))
        .and_then(|()| c.publish(cut, crate::book::PART))
        .and_then(|()| c.part_written(cut, &[crate::book::PART.to_string()]));
    if let Err(e) = saved {
        panic!("template book checkpoint: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use timely::dataflow::operators::Capture;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::vec::Map;

    use super::*;
    use crate::testkit::{at, epoch, gate, record, run, validator};

    fn send(template: i64, receiver: &str, vars: &str) -> String {
        format!(
            r#"{{"code":"send","messageTemplateId":{template},"messageParam":{{"receiver":"{receiver}","variables":{vars}}}}}"#
        )
    }

    /// Each kind of output comes out on its own stream, at the epoch of its record; each epoch
    /// with messages ends with one mark per peer carrying its largest event time.
    #[test]
    fn every_kind_on_its_own_stream() {
        let night = at(3, 0);
        let (noon, later) = (at(12, 0), at(12, 0) + 30_000);
        let mut late = record(5, later, &send(1, "13800138002", r#"{"code":"5"}"#));
        late.late_by = 90_000;
        let mut bad_time = record(6, noon, &send(1, "13800138000", r#"{"code":"6"}"#));
        bad_time.bad_time = Some("event time before 2000".into());
        let epochs = vec![
            (
                epoch(night),
                vec![record(1, night, &send(2, "x@y.cn", r#"{"n":"1"}"#))],
            ),
            (
                epoch(noon),
                vec![
                    record(2, noon, &send(1, "13800138000", r#"{"code":"2"}"#)),
                    record(3, noon, &send(1, "123", r#"{"code":"3"}"#)),
                    record(4, noon, "{oops"),
                    late,
                    bad_time,
                    record(
                        7,
                        noon,
                        r#"{"code":"recall","messageTemplateId":3,"recallMessageIds":["m1"]}"#,
                    ),
                ],
            ),
        ];
        let (pass_tx, pass_rx) = mpsc::channel();
        let (parked_tx, parked_rx) = mpsc::channel();
        let (marks_tx, marks_rx) = mpsc::channel();
        let (rows_tx, rows_rx) = mpsc::channel();
        let (recalls_tx, recalls_rx) = mpsc::channel();
        run(epochs, move |records| {
            let a = records.admit(validator(), gate(), Clock::Fixed(at(13, 0)));
            a.pass
                .map(|d| (d.receiver.to_string(), d.event_time))
                .capture_into(pass_tx);
            a.parked
                .map(|p| {
                    (
                        p.delivery.receiver.to_string(),
                        p.delivery.event_time,
                        p.release_at,
                    )
                })
                .capture_into(parked_tx);
            a.marks
                .map(|m| (m.to, m.epoch, m.max_event_time))
                .capture_into(marks_tx);
            a.rows
                .flat_map(Tracked::into_rows)
                .map(|t| match t {
                    Tracked::Row(r) => (
                        r.state.name().to_string(),
                        r.receiver.to_string(),
                        r.reason.unwrap_or_default(),
                    ),
                    Tracked::Dead(d) => ("dead".into(), d.source, d.reason),
                    Tracked::Received(_) => unreachable!("expanded above"),
                })
                .capture_into(rows_tx);
            a.recalls
                .map(|r| (r.template_id, r.message_ids, r.source))
                .capture_into(recalls_tx);
        });
        let (e_night, e_noon) = (epoch(night), epoch(noon));
        assert_eq!(
            pass_rx.extract(),
            vec![(
                e_noon,
                vec![
                    ("13800138000".to_string(), noon),
                    ("13800138002".to_string(), later)
                ]
            )]
        );
        assert_eq!(
            parked_rx.extract(),
            vec![(e_night, vec![("x@y.cn".to_string(), night, at(9, 0))])]
        );
        assert_eq!(
            marks_rx.extract(),
            vec![
                (e_night, vec![(0, e_night, night)]),
                (e_noon, vec![(0, e_noon, later)])
            ]
        );
        let rows = rows_rx.extract();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let states = |i: usize| -> Vec<(&str, &str)> {
            rows[i]
                .1
                .iter()
                .map(|(s, r, _)| (s.as_str(), r.as_str()))
                .collect()
        };
        assert_eq!(rows[0].0, e_night);
        assert_eq!(
            states(0),
            vec![("NIGHT_SHIELD_NEXT_SEND", "x@y.cn"), ("RECEIVE", "x@y.cn")]
        );
        assert_eq!(rows[1].0, e_noon);
        assert_eq!(
            states(1),
            vec![
                ("RECEIVE", "123"),
                ("RECEIVE", "13800138000"),
                ("RECEIVE", "13800138002"),
                ("RECEIVER_INVALID", "123"),
                ("dead", "file:t.jsonl:4"),
                ("dead", "file:t.jsonl:6"),
            ]
        );
        let reason = |receiver: &str| {
            rows[1]
                .1
                .iter()
                .find(|(s, r, _)| s == "RECEIVE" && r == receiver)
                .map(|(_, _, why)| why.clone())
                .unwrap_or_default()
        };
        assert_eq!(reason("13800138000"), "");
        // The harness reads a late record's own time back (bench: latency from the Kafka
        // timestamp, not the watermark).
        assert_eq!(late_own_time(&reason("13800138002")), Some(later - 90_000));
        assert_eq!(late_own_time(&reason("13800138000")), None);
        assert!(
            reason("13800138002").starts_with(&format!(
                "late: event time {} came 90000 ms behind",
                later - 90_000
            )),
            "{}",
            reason("13800138002")
        );
        let dead = &rows[1].1[5];
        assert_eq!(dead.2, "event time before 2000");
        assert_eq!(
            recalls_rx.extract(),
            vec![(
                e_noon,
                vec![(3, vec!["m1".to_string()], "file:t.jsonl:7".to_string())]
            )]
        );
    }
}
