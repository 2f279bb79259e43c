//! Content dedup (step 7): at most `num` sends of the same (template, receiver, rendered
//! content) per sliding window `(t - window, t]` of event time.

use std::collections::HashMap;
use std::sync::Arc;

use tidings_model::time::Millis;
use tidings_model::{Delivery, State, Templates};

use super::{KeyedRule, Sweep};
use crate::live::{self, RuleSummary};

/// The admissions of one key. One admission (the common case with `num = 1`) is held inline:
/// 16 bytes in all, so the map's entry is 32 bytes plus its control byte.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Admitted {
    One(Millis),
    Many(Box<[Millis]>),
}

impl Admitted {
    fn times(&self) -> &[Millis] {
        match self {
            Admitted::One(t) => std::slice::from_ref(t),
            Admitted::Many(ts) => ts,
        }
    }

    fn insert(&mut self, t: Millis) {
        let mut ts = self.times().to_vec();
        let at = ts.partition_point(|&a| a <= t);
        ts.insert(at, t);
        *self = Admitted::Many(ts.into_boxed_slice());
    }

    /// Keeps the admissions still inside a window ending after `horizon`; false when none is.
    fn retain_alive(&mut self, window: Millis, horizon: Millis) -> bool {
        let alive: Vec<Millis> = self
            .times()
            .iter()
            .copied()
            .filter(|&a| a.saturating_add(window) > horizon)
            .collect();
        match alive.len() {
            0 => false,
            1 => {
                *self = Admitted::One(alive[0]);
                true
            }
            n if n == self.times().len() => true,
            _ => {
                *self = Admitted::Many(alive.into_boxed_slice());
                true
            }
        }
    }
}

/// The content rule's state: per key, the event times of its admissions.
#[derive(Debug)]
pub struct ContentDedup {
    num: usize,
    window: Millis,
    templates: Arc<Templates>,
    admitted: HashMap<u128, Admitted>,
    sweep: Sweep,
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
            admitted: HashMap::new(),
            sweep: Sweep::new(lateness, window.max(60_000)),
        }
    }

    /// Judges an admission of `key` at event time `t`; `Err(seen)` when the window is full.
    pub fn admit(&mut self, key: u128, t: Millis) -> Result<(), usize> {
        match self.admitted.get_mut(&key) {
            None if self.num > 0 => {
                self.admitted.insert(key, Admitted::One(t));
                Ok(())
            }
            None => Err(0),
            Some(a) => {
                let from = t.saturating_sub(self.window);
                let seen = a.times().iter().filter(|&&x| x > from && x <= t).count();
                if seen >= self.num {
                    return Err(seen);
                }
                a.insert(t);
                Ok(())
            }
        }
    }

    /// Admissions held (for sizing).
    pub fn admissions(&self) -> usize {
        self.admitted.values().map(|a| a.times().len()).sum()
    }
}

impl KeyedRule for ContentDedup {
    const NAME: &'static str = "ContentDedup";

    fn key(d: &Delivery) -> u128 {
        d.content_key
    }

    fn judge(&mut self, key: u128, d: &Delivery) -> Result<(), (State, String)> {
        if self
            .templates
            .get(d.meta.template_id)
            .is_some_and(|t| !t.dedup)
        {
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

    fn evict(&mut self, watermark: Millis) {
        if let Some(horizon) = self.sweep.due(watermark) {
            let window = self.window;
            self.admitted.retain(|_, a| a.retain_alive(window, horizon));
        }
    }

    fn keys(&self) -> usize {
        self.admitted.len()
    }

    const PART: &'static str = "content";

    fn snapshot(&self) -> Box<dyn Iterator<Item = (u128, Vec<i64>)> + '_> {
        Box::new(self.admitted.iter().map(|(k, a)| (*k, a.times().to_vec())))
    }

    fn restore(&mut self, key: u128, values: &[i64]) {
        let entry = match values {
            [] => return,
            [t] => Admitted::One(*t),
            ts => Admitted::Many(ts.into()),
        };
        self.admitted.insert(key, entry);
    }

    fn inspect(&self, key: u128, at: Option<Millis>) -> serde_json::Value {
        let times: &[Millis] = self.admitted.get(&key).map(|a| a.times()).unwrap_or(&[]);
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
            .admitted
            .values()
            .map(|a| match a {
                Admitted::One(_) => 0,
                Admitted::Many(ts) => ts.len() * std::mem::size_of::<Millis>(),
            })
            .sum();
        RuleSummary {
            keys: self.admitted.len() as u64,
            entries: self.admissions() as u64,
            bytes: (self.admitted.capacity() * (std::mem::size_of::<(u128, Admitted)>() + 1)
                + spilled) as u64,
            oldest: self
                .admitted
                .values()
                .filter_map(|a| a.times().first().copied())
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
        d.admit(2, 100_000).unwrap();
        d.admit(2, 110_000).unwrap();
        d.evict(60_999);
        assert_eq!(d.keys(), 2);
        d.evict(170_000);
        assert_eq!(
            (d.keys(), d.admissions()),
            (1, 1),
            "key 1 gone, key 2 keeps 110000"
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
        assert_eq!(std::mem::size_of::<Admitted>(), 16);
    }
}
