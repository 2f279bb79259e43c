//! The admit operator: validate (step 1) and gate (steps 2–6) for each record, on the worker
//! that read it; at the end of each epoch it sends every peer a [`Mark`] with the epoch's
//! largest event time.
//!
//! ```ignore
//! let flows = admit(records, validator, gate, clock); // StreamVec<Epoch, Flow>
//! let parts = split(flows);
//! ```

use std::collections::BTreeMap;

use tidings_model::time::Millis;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

use crate::gate::Gate;
use crate::validate::Validator;
use crate::{Clock, Epoch, Flow, Mark, SourceRecord};
use tidings_model::{DeadLetter, State};

/// Says on a late record's RECEIVE rows that it was judged at its partition's watermark.
fn note_late(flows: &mut [Flow], rec: &SourceRecord) {
    let own = rec.event_time - rec.late_by;
    for f in flows {
        if let Flow::Row(row) = f
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

/// Runs validate + gate over a stream of records.
pub fn admit<'s>(
    records: StreamVec<'s, Epoch, SourceRecord>,
    validator: Validator,
    gate: Gate,
    clock: Clock,
) -> StreamVec<'s, Epoch, Flow> {
    let peers = records.scope().peers() as u32;
    records.unary_frontier::<CapacityContainerBuilder<Vec<Flow>>, _, _, _>(
        Pipeline,
        "Admit",
        move |_, _| {
            // Epochs seen and not yet closed: their capability (to send the marks) and max event time.
            let mut open: BTreeMap<Epoch, (Capability<Epoch>, Option<Millis>)> = BTreeMap::new();
            let mut buf = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = open
                        .entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, 0), None));
                    let now = clock.now_ms();
                    for batch in batches {
                        for rec in batch.drain(..) {
                            if let Some(reason) = &rec.bad_time {
                                buf.push(Flow::Dead(DeadLetter::of_record(
                                    now,
                                    rec.position(),
                                    &rec.bytes,
                                    reason.clone(),
                                )));
                                continue;
                            }
                            let v = validator.validate(&rec, now);
                            buf.extend(v.dead.into_iter().map(Flow::Dead));
                            buf.extend(v.recalls.into_iter().map(Flow::Recall));
                            for m in v.messages {
                                entry.1 = Some(entry.1.map_or(m.meta.event_time, |t: Millis| {
                                    t.max(m.meta.event_time)
                                }));
                                let from = buf.len();
                                gate.judge(m, now, &mut buf);
                                if rec.late_by > 0 {
                                    note_late(&mut buf[from..], &rec);
                                }
                            }
                        }
                    }
                    output.session(&cap).give_iterator(buf.drain(..));
                });
                while let Some((&epoch, _)) = open.first_key_value() {
                    if frontier.less_equal(&epoch) {
                        break;
                    }
                    let (cap, max) = open.remove(&epoch).expect("first key exists");
                    if let Some(max_event_time) = max {
                        let mut session = output.session(&cap);
                        for to in 0..peers {
                            session.give(Flow::Mark(Mark {
                                to,
                                max_event_time,
                                epoch,
                            }));
                        }
                    }
                }
            }
        },
    )
}
