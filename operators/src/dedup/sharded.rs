//! The dedup rules' key tables: 256 hash maps chosen by the key's top 12 bits, each key held
//! as two `u64` (8-byte aligned: a `u128` is 16-byte aligned, which would pad a key with an
//! 8-byte value to 32 bytes).
//!
//! With the rules' 8-byte values an entry is 24 bytes and a control byte, so a table between
//! half and 7/8 full holds a key in 29–57 bytes. One table of 10M keys would double from 8M
//! to 16M slots in one move, holding both for the moment and stalling the worker for the whole
//! copy; 256 tables resize one at a time, each moving a 256th or so of the keys.
//!
//! The tables take unequal shares of the keys, growing geometrically from one to the next
//! over an octave (table `i` takes a share in proportion to `2^(i/256)`). Equal shares would
//! fill them alike and double them all close together, so the whole state would swing between
//! 29 and 57 bytes a key with the key count (52 at 1M keys, just past a doubling); staggered,
//! each table doubles at its own count and a key costs 38–43 bytes whatever the count.
//!
//! The keys are hashes (xxh3), so their top bits spread them evenly; each table still hashes
//! its keys, with `tidings_model::ids::FastState` (seeded at random per process, as `std`'s,
//! but without SipHash's cost).

use std::collections::HashMap;

use tidings_model::ids::FastMap;

const SHARDS: usize = 256;

/// How finely the top bits of a key choose its table: `CELLS` cells, each a table's.
const CELL_BITS: u32 = 12;
const CELLS: usize = 1 << CELL_BITS;

/// The table of each cell: table `i` holds cells from `CELLS · (2^(i/256) − 1)` on, so its
/// share of the keys is in proportion to `2^(i/256)` (11 to 22 cells; table 0 rounds to 12).
/// Built when compiled: each table's first cell from the last one's by a factor of
/// `2^(1/256)` (no cell lies within 1e-4 of a bound, far beyond the products' rounding).
static TABLE_OF: [u8; CELLS] = table_of();

const fn table_of() -> [u8; CELLS] {
    const STEP: f64 = 1.002_711_275_050_202_5; // 2^(1/256)
    let mut of = [0u8; CELLS];
    let (mut table, mut next_start) = (0usize, STEP);
    let mut cell = 0;
    while cell < CELLS {
        // Cell `cell` starts at 1 + cell/CELLS on the scale whose table bounds are 2^(i/256).
        while table + 1 < SHARDS && 1.0 + cell as f64 / CELLS as f64 >= next_start {
            table += 1;
            next_start *= STEP;
        }
        of[cell] = table as u8;
        cell += 1;
    }
    of
}

/// A map of 128-bit hashed keys in [`SHARDS`] tables.
#[derive(Debug)]
pub struct ShardedMap<V> {
    shards: Box<[FastMap<[u64; 2], V>]>,
    len: usize,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| FastMap::default()).collect(),
            len: 0,
        }
    }
}

/// The table `key` belongs to.
fn shard(key: u128) -> usize {
    usize::from(TABLE_OF[(key >> (128 - CELL_BITS)) as usize])
}

fn split(key: u128) -> [u64; 2] {
    [(key >> 64) as u64, key as u64]
}

fn join(k: &[u64; 2]) -> u128 {
    (u128::from(k[0]) << 64) | u128::from(k[1])
}

impl<V> ShardedMap<V> {
    /// The value of `key`.
    pub fn get(&self, key: &u128) -> Option<&V> {
        self.shards[shard(*key)].get(&split(*key))
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &u128) -> Option<&mut V> {
        self.shards[shard(*key)].get_mut(&split(*key))
    }

    /// Sets `key`'s value; the old one if there was one.
    pub fn insert(&mut self, key: u128, value: V) -> Option<V> {
        let old = self.shards[shard(key)].insert(split(key), value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// `key`'s value; or, when it has none, `value()` inserted for it and `None`. One lookup
    /// either way (a get that misses and then an insert look twice: both rules meet every new
    /// key so).
    pub fn get_mut_or_insert(&mut self, key: u128, value: impl FnOnce() -> V) -> Option<&mut V> {
        use std::collections::hash_map::Entry;
        match self.shards[shard(key)].entry(split(key)) {
            Entry::Occupied(o) => Some(o.into_mut()),
            Entry::Vacant(v) => {
                v.insert(value());
                self.len += 1;
                None
            }
        }
    }

    /// Removes `key`; its value if it had one.
    pub fn remove(&mut self, key: &u128) -> Option<V> {
        let old = self.shards[shard(*key)].remove(&split(*key));
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Keeps the entries `keep` says to keep.
    pub fn retain(&mut self, mut keep: impl FnMut(u128, &mut V) -> bool) {
        for s in self.shards.iter_mut() {
            s.retain(|k, v| keep(join(k), v));
        }
        self.len = self.shards.iter().map(HashMap::len).sum();
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated, over all tables.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (join(k), v)))
    }

    /// Bytes one slot takes (entry and control byte).
    pub const SLOT_BYTES: usize = std::mem::size_of::<([u64; 2], V)>() + 1;

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_a_map() {
        let mut m = ShardedMap::default();
        for k in 0..10_000u128 {
            let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            assert_eq!(m.insert(key, k), None);
        }
        assert_eq!(m.len(), 10_000);
        let key = 7u128.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        assert_eq!(m.get(&key), Some(&7));
        assert!(m.iter().any(|(k, v)| k == key && *v == 7));
        *m.get_mut(&key).unwrap() = 70;
        assert_eq!(m.insert(key, 71), Some(70));
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.remove(&key), Some(71));
        assert_eq!(m.remove(&key), None);
        assert_eq!(m.len(), 9_999);
        // Absent: inserted, and said so; present: its value, nothing inserted.
        assert_eq!(m.get_mut_or_insert(key, || 7), None);
        assert_eq!(m.len(), 10_000);
        assert_eq!(
            m.get_mut_or_insert(key, || unreachable!()).copied(),
            Some(7)
        );
        assert_eq!(m.len(), 10_000);
        m.retain(|_, v| *v % 2 == 0);
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.iter().count(), 5_000);
        assert!(m.values().all(|v| v % 2 == 0));
        // The keys spread over the tables.
        assert!(m.shards.iter().filter(|s| !s.is_empty()).count() > 200);
        assert!(m.capacity() >= 5_000);
    }

    #[test]
    fn each_table_takes_an_octave_step_more_than_the_last() {
        let cells = |t: u8| TABLE_OF.iter().filter(|&&x| x == t).count();
        // Every table has cells, in order, from 11 to 22 of them.
        assert!(TABLE_OF.windows(2).all(|w| w[0] <= w[1]));
        assert!((0..=255).all(|t| (11..=22).contains(&cells(t))));
        assert_eq!((cells(0), cells(255)), (12, 22));
        // The compiled table is the one `log2` draws.
        for (cell, &t) in TABLE_OF.iter().enumerate() {
            let i = (SHARDS as f64 * (1.0 + cell as f64 / CELLS as f64).log2()) as usize;
            assert_eq!(usize::from(t), i.min(SHARDS - 1), "cell {cell}");
        }
    }

    #[test]
    fn the_tables_double_at_staggered_counts() {
        // With equal shares every table of 256 doubles near 256 · 448 = 114,688 keys (from 512
        // slots to 1,024), and 120,000 keys would take 55 bytes each; staggered, no count
        // costs more than 45.
        let mut m = ShardedMap::default();
        let mut k = 0u128;
        for n in (20_000..=160_000).step_by(20_000) {
            while m.len() < n {
                k += 1;
                m.insert(
                    k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                    0u64,
                );
            }
            let slots = m.capacity() as f64 * 8.0 / 7.0;
            let per_key = slots * ShardedMap::<u64>::SLOT_BYTES as f64 / n as f64;
            assert!(per_key < 45.0, "{n} keys: {per_key:.1} bytes a key");
        }
    }
}
