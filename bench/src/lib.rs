//! Benchmarks of tidings.
//!
//! - `benches/operators.rs`: criterion micro benches of the plain state machines (parse +
//!   validate, content and frequency dedup, shield).
//! - `src/main.rs` (`cargo run -p tidings-bench --release -- throughput JOB.toml`): runs a job
//!   end to end and reports requests/s, receivers/s and peak RSS.

pub mod isolation;

/// Peak resident set size of this process, in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current resident set size of this process, in bytes (Linux `VmRSS`), if known.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
