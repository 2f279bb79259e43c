//! Frequency dedup (step 8): at most `num` sends per (receiver, channel) per local calendar day
//! of event time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono_tz::Tz;
use tidings_model::time::{Millis, end_of_local_day, local_day};
use tidings_model::{Delivery, State, Templates};

use super::KeyedRule;

/// The frequency rule's state: per key, the admissions per local day.
#[derive(Debug)]
pub struct FrequencyDedup {
    num: u32,
    tz: Tz,
    lateness: Millis,
    templates: Arc<Templates>,
    /// (day, count) per key; one day in the common case.
    counts: HashMap<u128, Vec<(i32, u32)>>,
    /// (end of day, key), lazily deleted.
    expiry: BinaryHeap<Reverse<(Millis, u128)>>,
}

impl FrequencyDedup {
    /// At most `num` per day in `tz`.
    pub fn new(num: u32, tz: Tz, lateness: Millis, templates: Arc<Templates>) -> FrequencyDedup {
        FrequencyDedup { num, tz, lateness, templates, counts: HashMap::new(), expiry: BinaryHeap::new() }
    }

    /// Judges an admission of `key` at event time `t`; `Err(count)` when the day is full.
    pub fn admit(&mut self, key: u128, t: Millis) -> Result<(), u32> {
        let day = local_day(self.tz, t);
        let days = self.counts.entry(key).or_default();
        match days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) if *n >= self.num => Err(*n),
            Some((_, n)) => {
                *n += 1;
                Ok(())
            }
            None if self.num == 0 => Err(0),
            None => {
                days.push((day, 1));
                self.expiry.push(Reverse((end_of_local_day(self.tz, day), key)));
                Ok(())
            }
        }
    }
}

impl KeyedRule for FrequencyDedup {
    const NAME: &'static str = "FrequencyDedup";

    fn key(d: &Delivery) -> u128 {
        d.frequency_key
    }

    fn judge(&mut self, key: u128, d: &Delivery) -> Result<(), (State, String)> {
        if self.templates.get(d.meta.template_id).is_some_and(|t| !t.dedup) {
            return Ok(());
        }
        self.admit(key, d.event_time)
            .map_err(|n| (State::RuleDeduplication, format!("{n} send(s) to this receiver on this channel today")))
    }

    fn evict(&mut self, watermark: Millis) {
        let horizon = watermark.saturating_sub(self.lateness);
        while let Some(Reverse((end, key))) = self.expiry.peek().copied() {
            if end > horizon {
                break;
            }
            self.expiry.pop();
            if let Some(days) = self.counts.get_mut(&key) {
                days.retain(|&(day, _)| end_of_local_day(self.tz, day) > horizon);
                if days.is_empty() {
                    self.counts.remove(&key);
                }
            }
        }
    }

    fn keys(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;

    #[test]
    fn per_local_day() {
        let tz = chrono_tz::Asia::Shanghai;
        let mut f = FrequencyDedup::new(2, tz, 0, Arc::new(Templates::default()));
        // 2025-11-22 00:30 Shanghai = 2025-11-21T16:30Z.
        let t = 1_763_742_600_000;
        assert!(f.admit(7, t).is_ok());
        assert!(f.admit(7, t + H).is_ok());
        assert_eq!(f.admit(7, t + 2 * H), Err(2));
        assert!(f.admit(8, t).is_ok(), "other key");
        assert!(f.admit(7, t - H).is_ok(), "23:30 the day before is another day");
        assert!(f.admit(7, t + 24 * H).is_ok(), "next day");
        f.evict(t + 48 * H);
        assert_eq!(f.keys(), 0);
    }
}
