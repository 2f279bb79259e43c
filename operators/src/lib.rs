//! The stages of the tidings pipeline (CONTRACT §4), each a plain state machine that knows
//! nothing of timely, plus a thin timely wrapper that only moves data and capabilities.
//!
//! # Layout
//!
//! - [`flow`]: [`Flow`], the one item type every stage passes on, and [`split`] to route it.
//! - [`validate`]: step 1, record → messages or dead letters ([`validate::Validator`]).
//! - [`gate`]: steps 2–6 per receiver: RECEIVE, receiver check, discard, whitelist, night shield
//!   ([`gate::Gate`]); [`admit`] runs validate + gate as one operator and emits the epoch marks.
//! - [`shield`]: [`shield::NightShield::decide`] → send, drop or defer.
//! - [`park`]: durable parking of night_delay deliveries and their release.
//! - [`dedup`]: steps 7–8, keyed windowed state ([`dedup::ContentDedup`],
//!   [`dedup::FrequencyDedup`]) behind one keyed operator.
//! - [`watermark`]: the global event-time watermark per epoch, built from every worker's marks.
//! - [`checkpoint`]: consistent cuts of the dedup windows, parked deliveries and offsets.
//! - [`clock`]: the injected wall clock.
//!
//! # Time
//!
//! The timely timestamp is an *epoch*: a deterministic function of the record's position in its
//! source (for a file, `line / epoch_lines`). Keyed operators buffer an epoch until their input
//! frontier passes it, then judge its deliveries sorted by [`tidings_model::Delivery::order`], so
//! decisions never depend on the number of workers or on which worker read a line. Event time
//! (from the record) drives every time rule; the wall clock is never consulted for decisions.

pub mod admit;
pub mod checkpoint;
pub mod clock;
pub mod dedup;
pub mod event_time;
pub mod flow;
pub mod gate;
pub mod live;
pub mod park;
pub mod shield;
pub mod validate;
pub mod watermark;

pub use clock::Clock;
pub use flow::{Flow, Mark, RecallOrder, SourceRecord, split};

/// The timely timestamp of the graph: an epoch number.
pub type Epoch = u64;
