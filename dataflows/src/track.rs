//! The tracking stage: writes rows and dead letters, holding the capability of the earliest
//! buffered epoch until its rows are durable. The frontier after this stage means "done":
//! every receiver of every epoch before it reached a terminal state (or was durably parked)
//! and its rows are on disk. Rows then go on to Redis (if the job tracks there), which the
//! frontier never waits for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_model::State;
use tidings_operators::{Epoch, Flow};
use tidings_sinks::tracking::Tracking;
use tidings_sinks::tracking::redis::{RedisRow, RedisSink, UserTtl};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

/// Counts per state and dead letters, summed over workers for the end-of-run table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Rows per state.
    pub states: BTreeMap<State, u64>,
    /// Dead letters.
    pub dead_letters: u64,
    /// Rows per (template, state), for `/metrics`.
    pub per_template: BTreeMap<(i64, State), u64>,
}

impl Counts {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &Counts) {
        for (s, n) in &other.states {
            *self.states.entry(*s).or_default() += n;
        }
        self.dead_letters += other.dead_letters;
        for (k, n) in &other.per_template {
            *self.per_template.entry(*k).or_default() += n;
        }
    }
}

/// Writes `rows` (`Flow::Row` and `Flow::Dead`) to `tracking`.
pub fn track<'s>(
    rows: StreamVec<'s, Epoch, Flow>,
    mut tracking: Tracking,
    flush_rows: usize,
    flush_interval: Duration,
    counts: Arc<Mutex<Counts>>,
    dead_letter_topic: Option<crate::kafka::DeadLetterTopic>,
    redis: Option<(RedisSink, UserTtl)>,
) -> StreamVec<'s, Epoch, ()> {
    let scope = rows.scope();
    rows.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "Track",
        move |_, info| {
            let activator = scope.activator_for(info.address);
            let mut held: Option<Capability<Epoch>> = None;
            let mut since = Instant::now();
            let mut local = Counts::default();
            let mut for_redis: Vec<RedisRow> = Vec::new();
            move |(input, frontier), _output| {
                input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    if held.as_ref().is_none_or(|h| epoch < *h.time()) {
                        held = Some(cap.delayed(&epoch, 0));
                    }
                    for batch in batches {
                        for f in batch.drain(..) {
                            match f {
                                Flow::Row(r) => {
                                    *local.states.entry(r.state).or_default() += 1;
                                    *local
                                        .per_template
                                        .entry((r.meta.template_id, r.state))
                                        .or_default() += 1;
                                    if let Some((_, ttl)) = &redis {
                                        for_redis.push(RedisRow::of(&r, *ttl));
                                    }
                                    tracking.event(r);
                                }
                                Flow::Dead(d) => {
                                    local.dead_letters += 1;
                                    if let Some(t) = &dead_letter_topic {
                                        t.send(&d);
                                    }
                                    tracking.dead(d);
                                }
                                _ => {}
                            }
                        }
                    }
                });
                if held.is_none() {
                    since = Instant::now();
                }
                let due = tracking.buffered() >= flush_rows
                    || since.elapsed() >= flush_interval
                    || frontier.is_empty();
                if held.is_some() && due {
                    tracking.flush().unwrap_or_else(|e| panic!("tracking: {e}"));
                    if let Some(t) = &dead_letter_topic {
                        t.flush()
                            .unwrap_or_else(|e| panic!("dead-letter topic: {e}"));
                    }
                    // Redis is fed only rows already durable in Parquet, and never waited for.
                    if let Some((sink, _)) = &redis {
                        sink.send(std::mem::take(&mut for_redis));
                    }
                    counts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .merge(&std::mem::take(&mut local));
                    held = None;
                    since = Instant::now();
                } else if held.is_some() {
                    activator.activate_after(flush_interval.saturating_sub(since.elapsed()));
                }
            }
        },
    )
}
