//! Live counters of an account's sends, read by the admin API and `/metrics`.
//!
//! Everything is an atomic written on the send path (no locks); readers take a consistent
//! enough [`StatsSnapshot`] at any time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tidings_model::time::wall_ms as now_ms;

/// Upper bounds (seconds) of the send latency histogram's buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus-style cumulative histogram of durations. Each observation adds to its own
/// bucket only (not one add per bucket it is under), in one of a few shards of its own cache
/// line chosen by the thread: the send threads observing every call no longer pass the same
/// line between them (a sixth of their time went to the three shared adds in the 1M-request
/// bench, bench/MEASURED.md "The send latency histogram"). A snapshot sums them up.
#[derive(Debug, Default)]
pub struct Histogram {
    shards: [Shard; SHARDS],
}

/// Shards of a [`Histogram`]: more than the send threads of a machine this size.
const SHARDS: usize = 8;

/// One shard's counts, on a cache line (two) of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Observations whose bucket is `LATENCY_BUCKETS[i]` (the first bound at or above them).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// The shard this thread observes into: threads take the next one in turn as they first
/// observe.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|i| *i)
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&le| le < secs);
        let shard = &self.shards[shard_index()];
        if let Some(b) = shard.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        shard.count.fetch_add(1, Ordering::Relaxed);
        shard
            .sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts per bucket of [`LATENCY_BUCKETS`] (each its own, not those below it), total
    /// count, sum in seconds.
    pub fn per_bucket(&self) -> (Vec<u64>, u64, f64) {
        let mut buckets = vec![0; LATENCY_BUCKETS.len()];
        let (mut count, mut sum_us) = (0, 0);
        for shard in &self.shards {
            for (total, b) in buckets.iter_mut().zip(&shard.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            count += shard.count.load(Ordering::Relaxed);
            sum_us += shard.sum_us.load(Ordering::Relaxed);
        }
        (buckets, count, sum_us as f64 / 1e6)
    }

    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], total count, sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let (mut buckets, count, sum) = self.per_bucket();
        let mut below = 0;
        for b in &mut buckets {
            below += *b;
            *b = below;
        }
        (buckets, count, sum)
    }
}

/// An account's live counters.
#[derive(Debug)]
pub struct SendStats {
    /// Batches waiting for rate-limit permits.
    pub waiting: AtomicU64,
    /// Batches holding a concurrency slot (calling the provider, or pausing between tries).
    pub in_flight: AtomicU64,
    /// Batches pausing before another try.
    pub retrying: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Receivers sent successfully.
    pub sent: AtomicU64,
    /// Receivers that failed (SEND_FAIL).
    pub failed: AtomicU64,
    /// Provider calls that carried several messages (`Provider::MESSAGES_PER_CALL`).
    pub shared_calls: AtomicU64,
    /// Messages those calls carried.
    pub shared_call_messages: AtomicU64,
    /// Provider call latency, per attempt.
    pub latency: Histogram,
    /// Rate limiter: permits left after the last acquisition, and when (ms since the epoch).
    tokens_left: AtomicU64,
    tokens_at: AtomicI64,
}

impl Default for SendStats {
    fn default() -> Self {
        SendStats {
            waiting: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shared_calls: AtomicU64::new(0),
            shared_call_messages: AtomicU64::new(0),
            latency: Histogram::default(),
            tokens_left: AtomicU64::new(0),
            tokens_at: AtomicI64::new(i64::MIN),
        }
    }
}

/// A gauge held up while a guard lives.
pub struct Raised<'a>(&'a AtomicU64);

impl<'a> Raised<'a> {
    /// Adds one to `gauge` until dropped.
    pub fn new(gauge: &'a AtomicU64) -> Raised<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Raised(gauge)
    }
}

impl Drop for Raised<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SendStats {
    /// Records the limiter's state after an acquisition: `left` permits remained.
    pub fn tokens_after_acquire(&self, left: u32) {
        self.tokens_left.store(u64::from(left), Ordering::Relaxed);
        self.tokens_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Permits available now, derived from the last acquisition and the refill rate
    /// (`per_second`, capped at `burst`); `burst` when nothing was acquired yet.
    pub fn tokens(&self, per_second: f64, burst: u32) -> f64 {
        let at = self.tokens_at.load(Ordering::Relaxed);
        if at == i64::MIN {
            return f64::from(burst);
        }
        let left = self.tokens_left.load(Ordering::Relaxed) as f64;
        let refilled = (now_ms() - at).max(0) as f64 / 1000.0 * per_second;
        (left + refilled).min(f64::from(burst))
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            waiting: self.waiting.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            retrying: self.retrying.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            shared_calls: self.shared_calls.load(Ordering::Relaxed),
            shared_call_messages: self.shared_call_messages.load(Ordering::Relaxed),
        }
    }
}

/// The counters of [`SendStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Batches waiting for rate-limit permits.
    pub waiting: u64,
    /// Batches holding a concurrency slot.
    pub in_flight: u64,
    /// Batches pausing before another try.
    pub retrying: u64,
    /// Retries made.
    pub retries: u64,
    /// Receivers sent.
    pub sent: u64,
    /// Receivers failed.
    pub failed: u64,
    /// Provider calls that carried several messages.
    pub shared_calls: u64,
    /// Messages those calls carried.
    pub shared_call_messages: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1500));
        h.observe(Duration::from_millis(70));
        h.observe(Duration::from_secs(60));
        let (b, n, sum) = h.snapshot();
        assert_eq!(n, 3);
        assert_eq!(b[0], 0, "le 1ms");
        assert_eq!(b[1], 1, "le 2ms");
        assert_eq!(b[6], 2, "le 100ms");
        assert_eq!(
            *b.last().unwrap(),
            2,
            "le 30s; the 60 s one is only in +Inf"
        );
        assert!((sum - 60.0715).abs() < 1e-6);
    }

    /// Each bucket counts the observations at or below its bound, as Prometheus reads it:
    /// a bound itself falls in its own bucket, one past the last bound in none but the count.
    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 3, 10, 700, 40_000] {
            h.observe(Duration::from_millis(ms));
        }
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 7);
        assert!((sum - 40.716).abs() < 1e-9, "{sum}");
        let want: Vec<u64> = LATENCY_BUCKETS
            .iter()
            .map(|&le| {
                [0u64, 1, 2, 3, 10, 700, 40_000]
                    .iter()
                    .filter(|&&ms| ms as f64 / 1000.0 <= le)
                    .count() as u64
            })
            .collect();
        assert_eq!(buckets, want);
        assert_eq!(&buckets[..4], &[2, 3, 4, 5]);
    }

    /// Observations from more threads than shards all count, in the buckets they fall in.
    #[test]
    fn histogram_sums_every_threads_shard() {
        let h = Histogram::default();
        std::thread::scope(|s| {
            for t in 0..SHARDS as u64 + 3 {
                let h = &h;
                s.spawn(move || {
                    for _ in 0..100 {
                        h.observe(Duration::from_millis(t % 2 * 20));
                    }
                });
            }
        });
        let (buckets, count, sum) = h.per_bucket();
        let threads = SHARDS as u64 + 3;
        assert_eq!(count, threads * 100);
        assert_eq!(buckets[0], threads.div_ceil(2) * 100, "0 ms: le 1ms");
        assert_eq!(buckets[4], threads / 2 * 100, "20 ms: le 25ms");
        assert_eq!(buckets.iter().sum::<u64>(), count);
        assert!(
            (sum - (threads / 2 * 100) as f64 * 0.02).abs() < 1e-9,
            "{sum}"
        );
    }

    #[test]
    fn tokens_refill_up_to_the_burst() {
        let s = SendStats::default();
        assert_eq!(s.tokens(10.0, 10), 10.0);
        s.tokens_after_acquire(0);
        let t = s.tokens(10.0, 10);
        assert!((0.0..1.0).contains(&t), "{t}");
        let gauge = AtomicU64::new(0);
        {
            let _a = Raised::new(&gauge);
            let _b = Raised::new(&gauge);
            assert_eq!(gauge.load(Ordering::Relaxed), 2);
        }
        assert_eq!(gauge.load(Ordering::Relaxed), 0);
    }
}
