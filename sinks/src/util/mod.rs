//! Machinery every sink shares.

pub mod retry;
pub mod stats;
