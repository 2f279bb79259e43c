//! The stages of the tidings pipeline (docs/states.md), each a plain state machine that knows
//! nothing of timely, plus a thin timely wrapper that only moves data and capabilities.
//!
//! # Layout
//!
//! Each stage's timely wrapper is an extension trait on the stream it reads and returns the
//! typed streams it produces, so the graph is wired by the compiler:
//!
//! ```ignore
//! let admitted = records.admit(validator, gate, clock);         // admit::Admitted
//! let released = admitted.parked.park(store, clock, event, ..); // deliveries
//! let content = passes.dedup_by(content_rule, &admitted.marks, clock, ..); // dedup::Deduped
//! ```
//!
//! - [`flow`]: the items besides deliveries: [`SourceRecord`], [`Mark`], [`RecallOrder`], and
//!   [`Tracked`] (what the tracking stage writes).
//! - [`validate`]: step 1, record → messages or dead letters ([`validate::Validator`]).
//! - [`gate`]: steps 2–6 per receiver: RECEIVE, receiver check, discard, whitelist, night shield
//!   ([`gate::Gate`]); [`admit`] runs validate + gate as one operator ([`admit::Admit`]) and
//!   emits the epoch marks.
//! - [`shield`]: [`shield::NightShield::decide`] → send, drop or defer.
//! - [`park`]: durable parking of night_delay deliveries ([`park::ParkStore`]), their release
//!   schedule ([`park::Schedule`]) and the operator ([`park::Park`]).
//! - [`dedup`]: steps 7–8, keyed windowed state ([`dedup::ContentDedup`],
//!   [`dedup::FrequencyDedup`]) behind one keyed operator ([`dedup::DedupBy`]).
//! - [`watermark`]: the global event-time watermark per epoch, built from every worker's marks.
//! - [`event_time`]: epochs of event time and the per-partition watermark ([`event_time::PartitionClock`]).
//! - [`checkpoint`]: consistent cuts of the dedup windows, parked deliveries and source positions.
//! - [`clock`]: the injected wall clock.
//!
//! # Time
//!
//! The timely timestamp is an *epoch*: the record's event-time bucket ([`event_time`]). Each
//! source partition keeps its own watermark and a source holds the least of them, so keyed
//! operators, which buffer an epoch until their input frontier passes it and then judge its
//! deliveries sorted by [`tidings_model::Delivery::order`], judge in event-time order whatever
//! the partitioning, worker count or read order. The wall clock never decides; it only moves
//! the watermark of a source with nothing more to read.

pub mod admit;
pub mod book;
pub mod checkpoint;
pub mod clock;
pub mod container;
pub mod dedup;
pub mod event_time;
pub mod flow;
pub mod gate;
pub mod live;
pub mod park;
pub mod shield;
pub mod validate;
pub mod watermark;

#[cfg(test)]
mod testkit;

pub use clock::Clock;
pub use flow::{InFlight, Mark, RecallOrder, Received, SourceRecord, Tracked};

/// The timely timestamp of the graph: an epoch number.
pub type Epoch = u64;
