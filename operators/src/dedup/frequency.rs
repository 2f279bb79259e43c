//! Frequency dedup (step 8): at most `num` sends per (receiver, channel) per local calendar day
//! of event time.

use std::sync::Arc;

use chrono_tz::Tz;
use tidings_model::ids::FastMap;
use tidings_model::time::{Millis, end_of_local_day, local_day};
use tidings_model::{Delivery, State, Templates};

use super::sharded::ShardedMap;
use super::{KeyedRule, Sweep, Swept};
use crate::live::{self, RuleSummary};

/// The frequency rule's state: per key, the admissions per local day. One day (the common
/// case) is the key's 8-byte slot `(day, count)`; a key with several days keeps them in `many`
/// (which then speaks for the key).
#[derive(Debug)]
pub struct FrequencyDedup {
    num: u32,
    tz: Tz,
    templates: Arc<Templates>,
    counts: ShardedMap<(i32, u32)>,
    many: FastMap<u128, Box<[(i32, u32)]>>,
    sweep: Sweep,
}

impl FrequencyDedup {
    /// At most `num` per day in `tz`; days ending more than `lateness` ms behind the watermark
    /// are evicted.
    pub fn new(num: u32, tz: Tz, lateness: Millis, templates: Arc<Templates>) -> FrequencyDedup {
        FrequencyDedup {
            num,
            tz,
            templates,
            counts: ShardedMap::default(),
            many: FastMap::default(),
            sweep: Sweep::new(lateness, 3_600_000),
        }
    }

    /// The days of `key`.
    fn days(&self, key: u128) -> Vec<(i32, u32)> {
        match self.many.get(&key) {
            Some(v) => v.to_vec(),
            None => self.counts.get(&key).map(|&d| vec![d]).unwrap_or_default(),
        }
    }

    /// Sets the days of `key` (none: forgets it).
    fn set(&mut self, key: u128, days: Vec<(i32, u32)>) {
        match days.as_slice() {
            [] => {
                self.many.remove(&key);
                self.counts.remove(&key);
            }
            [one] => {
                self.many.remove(&key);
                self.counts.insert(key, *one);
            }
            [first, ..] => {
                self.counts.insert(key, *first);
                self.many.insert(key, days.into_boxed_slice());
            }
        }
    }

    /// Judges an admission of `key` at event time `t`; `Err(count)` when the day is full.
    pub fn admit(&mut self, key: u128, t: Millis) -> Result<(), u32> {
        let day = local_day(self.tz, t);
        let num = self.num;
        if !self.many.contains_key(&key) {
            let slot = if num == 0 {
                match self.counts.get_mut(&key) {
                    None => return Err(0),
                    Some(slot) => slot,
                }
            } else {
                match self.counts.get_mut_or_insert(key, || (day, 1)) {
                    None => return Ok(()),
                    Some(slot) => slot,
                }
            };
            let (d, n) = slot;
            if *d == day {
                return bump(n, num);
            }
        }
        let mut days = self.days(key);
        let result = match days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => bump(n, num),
            None if num == 0 => Err(0),
            None => {
                days.push((day, 1));
                Ok(())
            }
        };
        self.set(key, days);
        result
    }
}

fn bump(n: &mut u32, num: u32) -> Result<(), u32> {
    if *n >= num {
        Err(*n)
    } else {
        *n += 1;
        Ok(())
    }
}

impl KeyedRule for FrequencyDedup {
    const NAME: &'static str = "FrequencyDedup";

    fn key(d: &Delivery) -> u128 {
        d.frequency_key
    }

    fn judge(&mut self, key: u128, d: &Delivery) -> Result<(), (State, String)> {
        if !d.deduplicated(&self.templates) {
            return Ok(());
        }
        self.admit(key, d.event_time).map_err(|n| {
            (
                State::RuleDeduplication,
                format!("{n} send(s) to this receiver on this channel today"),
            )
        })
    }

    fn evict_noting(&mut self, watermark: Millis, mut changed: Option<&mut Vec<u128>>) {
        if let Some(horizon) = self.sweep.due(watermark) {
            let tz = self.tz;
            let alive = |day: i32| end_of_local_day(tz, day) > horizon;
            let many = &mut self.many;
            self.counts.retain(|key, slot| {
                let swept = match many.get(&key) {
                    None if alive(slot.0) => Swept::Kept,
                    None => Swept::Dropped,
                    Some(v) => {
                        let kept: Vec<(i32, u32)> =
                            v.iter().copied().filter(|(d, _)| alive(*d)).collect();
                        match kept.as_slice() {
                            [] => {
                                many.remove(&key);
                                Swept::Dropped
                            }
                            _ if kept.len() == v.len() => Swept::Kept,
                            [one] => {
                                many.remove(&key);
                                *slot = *one;
                                Swept::Changed
                            }
                            _ => {
                                many.insert(key, kept.into_boxed_slice());
                                Swept::Changed
                            }
                        }
                    }
                };
                swept.note(key, &mut changed)
            });
        }
    }

    fn keys(&self) -> usize {
        self.counts.len()
    }

    const PART: &'static str = "frequency";

    /// `[day, count, day, count, ...]`.
    fn snapshot(&self) -> Box<dyn Iterator<Item = (u128, Vec<i64>)> + '_> {
        Box::new(self.counts.iter().map(|(k, &(d, n))| {
            let flat = match self.many.get(&k) {
                None => vec![i64::from(d), i64::from(n)],
                Some(v) => v
                    .iter()
                    .flat_map(|&(d, n)| [i64::from(d), i64::from(n)])
                    .collect(),
            };
            (k, flat)
        }))
    }

    fn flatten(&self, f: &mut super::Flat) {
        f.reserve(self.counts.len(), 2 * self.counts.len());
        if self.many.is_empty() {
            for (k, &(d, n)) in self.counts.iter() {
                f.push(k, &[i64::from(d), i64::from(n)]);
            }
            return;
        }
        let mut buf: Vec<i64> = Vec::new();
        for (k, &(d, n)) in self.counts.iter() {
            match self.many.get(&k) {
                None => f.push(k, &[i64::from(d), i64::from(n)]),
                Some(v) => {
                    buf.clear();
                    buf.extend(v.iter().flat_map(|&(d, n)| [i64::from(d), i64::from(n)]));
                    f.push(k, &buf);
                }
            }
        }
    }

    fn flatten_keys(&self, keys: &[u128], f: &mut super::Flat) {
        f.reserve(keys.len(), 2 * keys.len());
        let mut buf: Vec<i64> = Vec::new();
        for &k in keys {
            buf.clear();
            match (self.many.get(&k), self.counts.get(&k)) {
                (Some(v), _) => {
                    buf.extend(v.iter().flat_map(|&(d, n)| [i64::from(d), i64::from(n)]))
                }
                (None, Some(&(d, n))) => buf.extend([i64::from(d), i64::from(n)]),
                (None, None) => {}
            }
            f.push(k, &buf);
        }
    }

    fn restore(&mut self, key: u128, values: &[i64]) {
        let days: Vec<(i32, u32)> = values
            .chunks_exact(2)
            .map(|p| (p[0] as i32, p[1] as u32))
            .collect();
        self.set(key, days);
    }

    fn inspect(&self, key: u128, at: Option<Millis>) -> serde_json::Value {
        let days = self.days(key);
        let date = |d: i32| {
            chrono::NaiveDate::from_num_days_from_ce_opt(d)
                .map(|d| d.to_string())
                .unwrap_or_default()
        };
        let mut v = serde_json::json!({
            "rule": "frequency",
            "num": self.num,
            "timezone": self.tz.name(),
            "days": days.iter().map(|&(d, n)| serde_json::json!({
                "date": date(d),
                "count": n,
                "expires": live::iso(end_of_local_day(self.tz, d)),
            })).collect::<Vec<_>>(),
        });
        if let Some(at) = at {
            let day = local_day(self.tz, at);
            let count = days
                .iter()
                .find(|(d, _)| *d == day)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            v["at"] = live::iso(at).into();
            v["date"] = date(day).into();
            v["count_that_day"] = count.into();
            v["passes"] = (count < self.num).into();
        }
        v
    }

    fn summary(&self) -> RuleSummary {
        let mut spilled = 0usize;
        let mut entries = 0u64;
        let mut oldest: Option<i32> = None;
        for (key, &(day, _)) in self.counts.iter() {
            let first = match self.many.get(&key) {
                None => {
                    entries += 1;
                    day
                }
                Some(v) => {
                    entries += v.len() as u64;
                    spilled += v.len() * std::mem::size_of::<(i32, u32)>() + 40;
                    v.iter().map(|(d, _)| *d).min().unwrap_or(i32::MAX)
                }
            };
            oldest = Some(oldest.map_or(first, |o| o.min(first)));
        }
        RuleSummary {
            keys: self.counts.len() as u64,
            entries,
            bytes: (self.counts.capacity() * ShardedMap::<(i32, u32)>::SLOT_BYTES + spilled) as u64,
            // The start of the oldest day counted.
            oldest: oldest.map(|d| end_of_local_day(self.tz, d.saturating_sub(1))),
            watermark: None,
        }
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
        assert!(
            f.admit(7, t - H).is_ok(),
            "23:30 the day before is another day"
        );
        assert!(f.admit(7, t + 24 * H).is_ok(), "next day");
        assert_eq!(f.admit(7, t + 3 * H), Err(2), "the first day is still full");
        f.evict(t + 48 * H);
        assert_eq!(f.keys(), 0);
    }

    /// Issue 12: any event time, watermark or admin `at=` (i64::MIN..=i64::MAX) is judged
    /// without overflow.
    #[test]
    fn extreme_times_never_overflow() {
        let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        for tz in [chrono_tz::Asia::Shanghai, chrono_tz::America::Los_Angeles] {
            let mut f = FrequencyDedup::new(1, tz, 3_600_000, Arc::new(Templates::default()));
            for &t in &extremes {
                let _ = f.admit(1, t);
            }
            assert_eq!(f.admit(2, i64::MAX), Ok(()));
            assert_eq!(f.admit(2, i64::MAX), Err(1));
            for &at in &extremes {
                assert!(f.inspect(1, Some(at))["passes"].is_boolean(), "{at}");
                assert_eq!(f.inspect(99, Some(at))["passes"], true, "{at}");
            }
            let _ = f.summary();
            // Restored garbage (a corrupt checkpoint) is held, not a panic.
            f.restore(3, &[i64::MAX, i64::MAX, i64::MIN, -1]);
            let _ = f.inspect(3, Some(0));
            let _ = f.summary();
            for &w in &extremes {
                f.evict(w);
            }
        }
    }

    #[test]
    fn entries_are_small() {
        assert_eq!(ShardedMap::<(i32, u32)>::SLOT_BYTES, 25);
    }
}
