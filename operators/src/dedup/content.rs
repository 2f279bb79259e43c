//! Content dedup (step 7): at most `num` sends of the same (template, receiver, rendered
//! content) per sliding window `(t - window, t]` of event time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use tidings_model::time::Millis;
use tidings_model::{Delivery, State, Templates};

use super::KeyedRule;

/// The content rule's state: per key, the event times of its admissions.
#[derive(Debug)]
pub struct ContentDedup {
    num: usize,
    window: Millis,
    lateness: Millis,
    templates: Arc<Templates>,
    /// Admission times per key, ascending. Almost always one or two entries.
    admitted: HashMap<u128, Vec<Millis>>,
    /// (expiry, key), lazily deleted: a popped entry whose key still has younger admissions is
    /// simply dropped, because each admission pushed its own entry.
    expiry: BinaryHeap<Reverse<(Millis, u128)>>,
}

impl ContentDedup {
    /// At most `num` admissions per `window` ms; state older than `lateness` ms behind the
    /// watermark is evicted.
    pub fn new(num: u32, window: Millis, lateness: Millis, templates: Arc<Templates>) -> ContentDedup {
        ContentDedup {
            num: num as usize,
            window,
            lateness,
            templates,
            admitted: HashMap::new(),
            expiry: BinaryHeap::new(),
        }
    }

    /// Judges an admission of `key` at event time `t`.
    pub fn admit(&mut self, key: u128, t: Millis) -> Result<(), usize> {
        let times = self.admitted.entry(key).or_default();
        let seen = times.iter().filter(|&&a| a > t - self.window && a <= t).count();
        if seen >= self.num {
            return Err(seen);
        }
        let at = times.partition_point(|&a| a <= t);
        times.insert(at, t);
        self.expiry.push(Reverse((t + self.window, key)));
        Ok(())
    }

    /// Admissions held (for sizing).
    pub fn admissions(&self) -> usize {
        self.admitted.values().map(Vec::len).sum()
    }
}

impl KeyedRule for ContentDedup {
    const NAME: &'static str = "ContentDedup";

    fn key(d: &Delivery) -> u128 {
        d.content_key
    }

    fn judge(&mut self, key: u128, d: &Delivery) -> Result<(), (State, String)> {
        if self.templates.get(d.meta.template_id).is_some_and(|t| !t.dedup) {
            return Ok(());
        }
        let window = self.window / 1000;
        self.admit(key, d.event_time).map_err(|seen| {
            (State::ContentDeduplication, format!("{seen} send(s) of this content in the last {window}s"))
        })
    }

    fn evict(&mut self, watermark: Millis) {
        let horizon = watermark.saturating_sub(self.lateness);
        while let Some(Reverse((expiry, key))) = self.expiry.peek().copied() {
            if expiry > horizon {
                break;
            }
            self.expiry.pop();
            if let Some(times) = self.admitted.get_mut(&key) {
                times.retain(|&a| a + self.window > horizon);
                if times.is_empty() {
                    self.admitted.remove(&key);
                }
            }
        }
    }

    fn keys(&self) -> usize {
        self.admitted.len()
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
        let mut d = ContentDedup::new(1, 300, 100, Arc::new(Templates::default()));
        d.admit(1, 0).unwrap();
        d.admit(2, 1000).unwrap();
        d.evict(399);
        assert_eq!(d.keys(), 2);
        d.evict(400);
        assert_eq!(d.keys(), 1);
        d.evict(10_000);
        assert_eq!(d.keys(), 0);
        assert!(d.expiry.is_empty());
    }
}
