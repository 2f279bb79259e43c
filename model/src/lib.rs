//! The data of tidings, shared by every other crate.
//!
//! # Layout
//!
//! - [`request`]: the austin-compatible send request (docs/requests.md) and the two line forms of the
//!   file source (bare request, kcat `-J` envelope).
//! - [`template`]: templates (docs/templates.md) and their enums (channel, msg_type, id_type, shield).
//! - [`render`]: `{$name}` placeholder rendering of a template's content model.
//! - [`receiver`]: splitting a `receiver` list and validating each receiver by `id_type`.
//! - [`message`]: what flows through the graph: a validated [`message::Message`], one
//!   [`message::Delivery`] per receiver, tracking rows and dead letters.
//! - [`state`]: the anchor states and their austin codes (docs/states.md).
//! - [`limits`]: providers' content limits per channel; how much of a bad record a dead letter keeps.
//! - [`ids`]: message ids, business ids and the deterministic key hashes used for routing.
//! - [`schema`]: the Arrow schemas of the Parquet tracking tables (docs/tables.md).
//! - [`json`]: a JSON cursor for the hot paths that read JSON by hand (serde_json reads the rest).
//! - [`text`]: short text kept inline (message ids).
//! - [`time`]: event-time helpers: the job's time zone, local dates, the night window.
//!
//! Nothing here knows timely, tokio or any service: every function is pure and is tested alone.

pub mod compaction;
pub mod cron;
pub mod ids;
pub mod json;
pub mod limits;
pub mod message;
mod phone_plan;
pub mod receiver;
pub mod render;
pub mod request;
pub mod schema;
pub mod state;
pub mod template;
pub mod text;
pub mod time;
pub mod variables;

pub use message::{DeadLetter, Delivery, EventRow, Message, MessageMeta, Receiver};
pub use state::State;
pub use template::{Channel, IdType, MsgType, Shield, Template, TemplateType, Templates};
