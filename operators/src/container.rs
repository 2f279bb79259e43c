//! How the graph's operators and exchanges build the containers they ship.
//!
//! Timely's `CapacityContainerBuilder` gives every container room for 8 KB of items the moment
//! its first item arrives, and ships it at an epoch's end however few items it holds. A dense
//! epoch fills its containers; a sparse one, as when a backlog of hours is read after the job
//! was down (at most a record per 10 ms epoch when its traffic was light), ships one 8 KB
//! container per item per channel, and every one of them waits in its channel's queue until
//! the operator after it runs: under heaptrack, a 1-hour backlog of 50,000 requests had a heap
//! peak of 1.0 GB, 900 MB of it such containers (bench/MEASURED.md "A backlog read after
//! downtime").
//!
//! [`Trimming`] builds the same containers in the same order, full ones at the same size, but
//! trims a container it ships a sixteenth full or less to what it holds.

use timely::container::{
    CapacityContainerBuilder, ContainerBuilder, LengthPreservingContainerBuilder, PushInto,
};
use timely::dataflow::channels::pact::ExchangeCore;

/// A container builder for `Vec<T>`: [`timely::container::CapacityContainerBuilder`] itself,
/// except that a container it ships part full (at the end of a session: an epoch's last items)
/// is trimmed to its items when they fill a sixteenth of it or less (a sparse epoch's one or
/// two records; a burst's last container per epoch is left as it is, not reallocated).
#[derive(Debug)]
pub struct Trimming<T>(CapacityContainerBuilder<Vec<T>>);

impl<T> Default for Trimming<T> {
    fn default() -> Self {
        Trimming(CapacityContainerBuilder::default())
    }
}

impl<T> PushInto<T> for Trimming<T> {
    #[inline]
    fn push_into(&mut self, item: T) {
        self.0.push_into(item);
    }
}

impl<T: Clone + 'static> ContainerBuilder for Trimming<T> {
    type Container = Vec<T>;

    #[inline]
    fn extract(&mut self) -> Option<&mut Vec<T>> {
        self.0.extract()
    }

    #[inline]
    fn finish(&mut self) -> Option<&mut Vec<T>> {
        let container = self.0.finish()?;
        // Only the part-full one: a full container's items fill it.
        if container.len() * 16 <= container.capacity() {
            container.shrink_to_fit();
        }
        Some(container)
    }
}

impl<T: Clone + 'static> LengthPreservingContainerBuilder for Trimming<T> {}

/// An exchange pact whose containers are built by [`Trimming`].
pub fn exchange<T, F>(route: F) -> ExchangeCore<Trimming<T>, F>
where
    T: Clone + 'static,
    F: FnMut(&T) -> u64 + 'static,
{
    ExchangeCore::<Trimming<T>, F>::new_core(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items come out in order, in full containers of timely's size and a last one part full;
    /// the part-full one is trimmed when its items fill a sixteenth of it or less.
    #[test]
    fn containers_keep_their_items_in_order_and_part_full_ones_are_trimmed() {
        let full = timely::container::buffer::default_capacity::<u64>();
        for n in [
            0,
            1,
            full / 16,
            full / 4,
            full - 1,
            full,
            full + 1,
            3 * full + 7,
        ] {
            let mut b = Trimming::<u64>::default();
            let mut out: Vec<Vec<u64>> = Vec::new();
            for i in 0..n as u64 {
                b.push_into(i);
                while let Some(c) = b.extract() {
                    out.push(std::mem::take(c));
                }
            }
            while let Some(c) = b.finish() {
                out.push(std::mem::take(c));
            }
            let items: Vec<u64> = out.iter().flatten().copied().collect();
            assert_eq!(items, (0..n as u64).collect::<Vec<_>>(), "{n} items");
            for (i, c) in out.iter().enumerate() {
                if i + 1 < out.len() || c.len() == full {
                    assert_eq!(c.len(), full, "{n} items: container {i}");
                } else if c.len() * 16 <= full {
                    assert!(
                        c.capacity() < full,
                        "{n} items: the last, {} of {}",
                        c.len(),
                        c.capacity()
                    );
                }
            }
        }
    }
}
