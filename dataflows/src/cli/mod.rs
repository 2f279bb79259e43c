//! The `tidings` binary's interactive and live-state verbs.

pub mod repl;
pub mod top;
