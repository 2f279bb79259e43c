//! The global event-time watermark per epoch.
//!
//! Each worker sends every peer a [`crate::Mark`] with its largest event time of each epoch.
//! A keyed operator, once its inputs have passed epoch `e`, folds the marks of epochs `<= e` into
//! `W(e)`: the largest event time of the whole input up to and including epoch `e`, the same
//! value on every worker whatever the worker count. Eviction of windowed state uses `W(e)`,
//! never the wall clock, so it is deterministic too.

use std::collections::BTreeMap;

use tidings_model::time::Millis;

use crate::{Epoch, Mark};

/// Marks received and the watermark folded so far.
#[derive(Debug, Default)]
pub struct Watermark {
    pending: BTreeMap<Epoch, Millis>,
    current: Option<Millis>,
}

impl Watermark {
    /// Records a mark.
    pub fn push(&mut self, mark: &Mark) {
        let e = self
            .pending
            .entry(mark.epoch)
            .or_insert(mark.max_event_time);
        *e = (*e).max(mark.max_event_time);
    }

    /// Records every mark of `marks`.
    pub fn absorb(&mut self, marks: impl Iterator<Item = Mark>) {
        for m in marks {
            self.push(&m);
        }
    }

    /// Folds the marks of all epochs `<= epoch` and returns the watermark (None before any).
    pub fn advance_to(&mut self, epoch: Epoch) -> Option<Millis> {
        while let Some((&e, &m)) = self.pending.first_key_value() {
            if e > epoch {
                break;
            }
            self.pending.remove(&e);
            self.current = Some(self.current.map_or(m, |c| c.max(m)));
        }
        self.current
    }

    /// Folds every mark received (end of input).
    pub fn advance_all(&mut self) -> Option<Millis> {
        self.advance_to(Epoch::MAX)
    }

    /// The epochs with marks not yet folded.
    pub fn pending_epochs(&self) -> impl Iterator<Item = Epoch> + '_ {
        self.pending.keys().copied()
    }

    /// The watermark folded so far.
    pub fn current(&self) -> Option<Millis> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_in_epoch_order() {
        let mut w = Watermark::default();
        for (epoch, t) in [(2, 50), (0, 10), (1, 5), (0, 30)] {
            w.push(&Mark {
                to: 0,
                max_event_time: t,
                epoch,
            });
        }
        assert_eq!(w.advance_to(0), Some(30));
        assert_eq!(w.advance_to(1), Some(30));
        assert_eq!(w.advance_all(), Some(50));
    }
}
