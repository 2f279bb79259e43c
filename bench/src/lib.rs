//! Benchmarks of tidings.
//!
//! - `benches/operators.rs`: criterion micro benches of the plain state machines (parse +
//!   validate, content and frequency dedup, shield).
//! - `src/main.rs` (`cargo run -p tidings-bench --release -- throughput JOB.toml`): runs a job
//!   end to end and reports requests/s, receivers/s and peak RSS.
//! - `e2e`: the job against the broker beside a raw consumer of the same topic ([`e2e`]).
//! - `austin-dedup`: austin's Redis dedup beside the in-graph state machines ([`austin`]).
//! - `isolation`: a rate-limited backlog beside another channel's notices ([`isolation`]).
//! - `providers`: the graph to a blackhole, to a provider over HTTP (the simulator), and
//!   through a failing group member, side by side ([`providers`]).

pub mod austin;
pub mod e2e;
#[cfg(feature = "heap-count")]
pub mod heap_count;
pub mod isolation;
pub mod providers;
pub mod storage;

/// Peak resident set size of this process, in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux: `5` to
/// `/proc/self/clear_refs`); returns that RSS, or `None` when the reset is not available.
pub fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    rss_bytes()
}

/// Current resident set size of this process, in bytes (Linux `VmRSS`), if known.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
