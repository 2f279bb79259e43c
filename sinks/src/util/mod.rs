//! Machinery every sink shares.

pub mod http;
pub mod kit;
pub mod retry;
pub mod secrets;
pub mod server;
pub mod sign;
pub mod stats;
pub mod token;
