//! Machinery every sink shares.

pub mod retry;
