//! Content dedup (step 7): at most `num` sends of the same (template, receiver, rendered
//! content) per sliding window `(t - window, t]` of event time.

use std::sync::Arc;

use tidings_model::ids::FastMap;
use tidings_model::time::Millis;
use tidings_model::{Delivery, State, Templates};

use super::sharded::ShardedMap;
use super::{KeyedRule, Sweep, Swept};
use crate::live::{self, RuleSummary};

/// An admission time as two `u32`: 8 bytes, 4-byte aligned, so a table entry is 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed([u32; 2]);

impl Packed {
    fn of(t: Millis) -> Packed {
        let u = t as u64;
        Packed([(u >> 32) as u32, u as u32])
    }

    fn time(self) -> Millis {
        ((u64::from(self.0[0]) << 32) | u64::from(self.0[1])) as i64
    }
}

/// The content rule's state: per key, the event times of its admissions. One admission (the
/// common case with `num = 1`) is the key's 8-byte slot; a key with several keeps them, sorted,
/// in `many` (which then speaks for the key).
#[derive(Debug)]
pub struct ContentDedup {
    num: usize,
    window: Millis,
    templates: Arc<Templates>,
    admitted: ShardedMap<Packed>,
    many: FastMap<u128, Box<[Millis]>>,
    sweep: Sweep,
}

/// Keeps the admissions still inside a window ending after `horizon`.
fn alive(times: &[Millis], window: Millis, horizon: Millis) -> Vec<Millis> {
    times
        .iter()
        .copied()
        .filter(|&a| a.saturating_add(window) > horizon)
        .collect()
}

impl ContentDedup {
    /// At most `num` admissions per `window` ms; state older than `lateness` ms behind the
    /// watermark is evicted.
    pub fn new(
        num: u32,
        window: Millis,
        lateness: Millis,
        templates: Arc<Templates>,
    ) -> ContentDedup {
        ContentDedup {
            num: num as usize,
            window,
            templates,
            admitted: ShardedMap::default(),
            many: FastMap::default(),
            sweep: Sweep::new(lateness, window.max(60_000)),
        }
    }

    /// The admission times of `key`, sorted.
    fn times(&self, key: u128) -> Vec<Millis> {
        match self.many.get(&key) {
            Some(ts) => ts.to_vec(),
            None => self
                .admitted
                .get(&key)
                .map(|p| vec![p.time()])
                .unwrap_or_default(),
        }
    }

    /// Judges an admission of `key` at event time `t`; `Err(seen)` when the window is full.
    pub fn admit(&mut self, key: u128, t: Millis) -> Result<(), usize> {
        let slot = if self.num == 0 {
            match self.admitted.get(&key) {
                None => return Err(0),
                Some(slot) => *slot,
            }
        } else {
            match self.admitted.get_mut_or_insert(key, || Packed::of(t)) {
                None => return Ok(()),
                Some(slot) => *slot,
            }
        };
        let mut ts = match self.many.get(&key) {
            Some(ts) => ts.to_vec(),
            None => vec![slot.time()],
        };
        let from = t.saturating_sub(self.window);
        let seen = ts.iter().filter(|&&x| x > from && x <= t).count();
        if seen >= self.num {
            return Err(seen);
        }
        let at = ts.partition_point(|&a| a <= t);
        ts.insert(at, t);
        self.many.insert(key, ts.into_boxed_slice());
        Ok(())
    }

    /// Admissions held (for sizing).
    pub fn admissions(&self) -> usize {
        self.admitted.len() - self.many.len() + self.many.values().map(|ts| ts.len()).sum::<usize>()
    }
}

impl KeyedRule for ContentDedup {
    const NAME: &'static str = "ContentDedup";

    fn key(d: &Delivery) -> u128 {
        d.content_key
    }

    fn judge(&mut self, key: u128, d: &Delivery) -> Result<(), (State, String)> {
        if !d.deduplicated(&self.templates) {
            return Ok(());
        }
        let window = self.window / 1000;
        self.admit(key, d.event_time).map_err(|seen| {
            (
                State::ContentDeduplication,
                format!("{seen} send(s) of this content in the last {window}s"),
            )
        })
    }

    fn evict_noting(&mut self, watermark: Millis, mut changed: Option<&mut Vec<u128>>) {
        if let Some(horizon) = self.sweep.due(watermark) {
            let window = self.window;
            let many = &mut self.many;
            self.admitted.retain(|key, slot| {
                let swept = match many.get(&key) {
                    None if slot.time().saturating_add(window) > horizon => Swept::Kept,
                    None => Swept::Dropped,
                    Some(ts) => {
                        let kept = alive(ts, window, horizon);
                        match kept.len() {
                            0 => {
                                many.remove(&key);
                                Swept::Dropped
                            }
                            n if n == ts.len() => Swept::Kept,
                            1 => {
                                many.remove(&key);
                                *slot = Packed::of(kept[0]);
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
        self.admitted.len()
    }

    const PART: &'static str = "content";

    fn snapshot(&self) -> Box<dyn Iterator<Item = (u128, Vec<i64>)> + '_> {
        Box::new(self.admitted.iter().map(|(k, slot)| {
            let times = match self.many.get(&k) {
                Some(ts) => ts.to_vec(),
                None => vec![slot.time()],
            };
            (k, times)
        }))
    }

    fn flatten(&self, f: &mut super::Flat) {
        f.reserve(self.admitted.len(), self.admissions());
        if self.many.is_empty() {
            for (k, slot) in self.admitted.iter() {
                f.push(k, &[slot.time()]);
            }
        } else {
            for (k, slot) in self.admitted.iter() {
                match self.many.get(&k) {
                    Some(ts) => f.push(k, ts),
                    None => f.push(k, &[slot.time()]),
                }
            }
        }
    }

    fn flatten_keys(&self, keys: &[u128], f: &mut super::Flat) {
        f.reserve(keys.len(), keys.len());
        for &k in keys {
            match (self.many.get(&k), self.admitted.get(&k)) {
                (Some(ts), _) => f.push(k, ts),
                (None, Some(slot)) => f.push(k, &[slot.time()]),
                (None, None) => f.push(k, &[]),
            }
        }
    }

    fn restore(&mut self, key: u128, values: &[i64]) {
        match values {
            [] => {
                self.many.remove(&key);
                self.admitted.remove(&key);
            }
            [t] => {
                self.many.remove(&key);
                self.admitted.insert(key, Packed::of(*t));
            }
            ts => {
                let mut ts = ts.to_vec();
                ts.sort_unstable();
                self.admitted.insert(key, Packed::of(ts[0]));
                self.many.insert(key, ts.into_boxed_slice());
            }
        }
    }

    fn inspect(&self, key: u128, at: Option<Millis>) -> serde_json::Value {
        let times = self.times(key);
        let times: &[Millis] = &times;
        let mut v = serde_json::json!({
            "rule": "content",
            "num": self.num,
            "window_secs": self.window / 1000,
            "admissions": times.iter().map(|&t| live::iso(t)).collect::<Vec<_>>(),
            "admissions_ms": times,
            "count": times.len(),
            // When the newest admission leaves its window, and the key with it.
            "expires": times.iter().max().map(|&t| live::iso(t.saturating_add(self.window))),
        });
        if let Some(at) = at {
            let from = at.saturating_sub(self.window);
            let seen = times.iter().filter(|&&x| x > from && x <= at).count();
            v["at"] = live::iso(at).into();
            v["in_window"] = seen.into();
            v["passes"] = (seen < self.num).into();
        }
        v
    }

    fn summary(&self) -> RuleSummary {
        let spilled: usize = self
            .many
            .values()
            .map(|ts| ts.len() * std::mem::size_of::<Millis>() + 40)
            .sum();
        RuleSummary {
            keys: self.admitted.len() as u64,
            entries: self.admissions() as u64,
            bytes: (self.admitted.capacity() * ShardedMap::<Packed>::SLOT_BYTES + spilled) as u64,
            oldest: self
                .admitted
                .iter()
                .map(|(k, slot)| match self.many.get(&k) {
                    Some(ts) => ts[0],
                    None => slot.time(),
                })
                .min(),
            watermark: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_table() {
        // (num, window, admissions at, probe at, passes?)
        let cases: &[(u32, Millis, &[Millis], Millis, bool)] = &[
            (1, 300, &[], 0, true),
            (1, 300, &[0], 0, false),
            (1, 300, &[0], 299, false),
            (1, 300, &[0], 300, true),
            (2, 300, &[0], 100, true),
            (2, 300, &[0, 100], 200, false),
            (2, 300, &[100, 0], 350, true),
            (1, 300, &[500], 100, true), // a later admission is not in (t - w, t]
        ];
        for (i, (num, window, before, t, pass)) in cases.iter().enumerate() {
            let mut d = ContentDedup::new(*num, *window, 0, Arc::new(Templates::default()));
            for a in *before {
                d.admit(1, *a).unwrap();
            }
            assert_eq!(d.admit(1, *t).is_ok(), *pass, "case {i}");
        }
    }

    #[test]
    fn eviction_follows_the_watermark() {
        let mut d = ContentDedup::new(2, 60_000, 1000, Arc::new(Templates::default()));
        d.admit(1, 0).unwrap();
        d.admit(2, 110_000).unwrap();
        d.admit(2, 130_000).unwrap();
        d.evict(60_999);
        assert_eq!(d.keys(), 2);
        // Sweeps evict up to the minute step the horizon (watermark − lateness) is in.
        d.evict(150_000);
        assert_eq!(
            (d.keys(), d.admissions()),
            (1, 2),
            "key 1 gone; the step 120000 keeps both of key 2"
        );
        d.evict(182_000);
        assert_eq!(
            (d.keys(), d.admissions()),
            (1, 1),
            "the step 180000 leaves key 2 its 130000"
        );
        d.evict(1_000_000);
        assert_eq!(d.keys(), 0);
    }

    /// Issue 12: any event time, watermark or admin `at=` (i64::MIN..=i64::MAX) is judged
    /// without overflow.
    #[test]
    fn extreme_times_never_overflow() {
        let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        let mut d = ContentDedup::new(2, 300_000, 60_000, Arc::new(Templates::default()));
        for &t in &extremes {
            let _ = d.admit(1, t);
            let _ = d.admit(2, t);
        }
        assert_eq!(d.admit(3, i64::MAX), Ok(()));
        assert_eq!(d.admit(3, i64::MAX), Ok(()));
        assert_eq!(d.admit(3, i64::MAX), Err(2), "the window is still counted");
        for &at in &extremes {
            let v = d.inspect(1, Some(at));
            assert!(v["passes"].is_boolean(), "{at}: {v}");
            let v = d.inspect(99, Some(at));
            assert_eq!(v["passes"], true, "{at}");
        }
        let _ = d.summary();
        for &w in &extremes {
            d.evict(w);
        }
        d.evict(i64::MAX);
    }

    #[test]
    fn entries_are_small() {
        // 24 bytes and a control byte per slot.
        assert_eq!(ShardedMap::<Packed>::SLOT_BYTES, 25);
        for t in [i64::MIN, -1, 0, 1, 1_763_784_000_000, i64::MAX] {
            assert_eq!(Packed::of(t).time(), t);
        }
    }

    #[test]
    fn several_admissions_snapshot_and_restore() {
        let mut d = ContentDedup::new(3, 300, 0, Arc::new(Templates::default()));
        d.admit(7, 10).unwrap();
        d.admit(7, 5).unwrap();
        d.admit(9, 1).unwrap();
        let mut snap: Vec<(u128, Vec<i64>)> = d.snapshot().collect();
        snap.sort();
        assert_eq!(snap, vec![(7, vec![5, 10]), (9, vec![1])]);
        let mut r = ContentDedup::new(3, 300, 0, Arc::new(Templates::default()));
        for (k, v) in &snap {
            r.restore(*k, v);
        }
        assert_eq!(r.admit(7, 20), Ok(()));
        assert_eq!(r.admit(7, 21), Err(3));
        assert_eq!(r.admissions(), 4);
    }
}
