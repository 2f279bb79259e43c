//! The wall clock, injected: decisions never read it, only the `time` column of tracking rows,
//! the read time of bare file lines and the end-of-run release of parked messages do.

use tidings_model::time::Millis;

/// A wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// A clock stopped at a fixed instant (replays and tests: `tidings run --now`).
    Fixed(Millis),
}

impl Clock {
    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> Millis {
        match self {
            Clock::System => tidings_model::time::wall_ms(),
            Clock::Fixed(t) => *t,
        }
    }
}
