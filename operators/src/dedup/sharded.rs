//! The dedup rules' key tables: 256 hash maps chosen by the key's top byte, each key held as
//! two `u64` (8-byte aligned: a `u128` is 16-byte aligned, which would pad a key with an
//! 8-byte value to 32 bytes).
//!
//! With the rules' 8-byte values an entry is 24 bytes and a control byte, so a table between
//! half and 7/8 full holds a key in 29–50 bytes. One table of 10M keys would double from 8M
//! to 16M slots in one move, holding both for the moment and stalling the worker for the whole
//! copy; 256 tables resize one at a time, each moving 1/256 of the keys. The keys are hashes
//! (xxh3), so their top byte spreads them evenly; each table still hashes its keys with the
//! standard (randomly seeded) hasher.
//!
//! Copy on write: each table is behind an `Arc`, so a clone of the map (a checkpoint's frozen
//! copy, written out on another thread) takes 256 pointer copies, not the keys. A table is
//! copied only when it is written while a frozen copy still holds it, one table at a time.

use std::collections::HashMap;
use std::sync::Arc;

const SHARDS: usize = 256;

/// A map of 128-bit hashed keys in [`SHARDS`] tables.
#[derive(Debug)]
pub struct ShardedMap<V> {
    shards: Box<[Arc<HashMap<[u64; 2], V>>]>,
    len: usize,
}

impl<V> Clone for ShardedMap<V> {
    /// A frozen copy: the tables are shared until one side writes one.
    fn clone(&self) -> Self {
        ShardedMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
            len: 0,
        }
    }
}

fn shard(key: u128) -> usize {
    (key >> 120) as usize
}

fn split(key: u128) -> [u64; 2] {
    [(key >> 64) as u64, key as u64]
}

fn join(k: &[u64; 2]) -> u128 {
    (u128::from(k[0]) << 64) | u128::from(k[1])
}

impl<V: Clone> ShardedMap<V> {
    /// The value of `key`.
    pub fn get(&self, key: &u128) -> Option<&V> {
        self.shards[shard(*key)].get(&split(*key))
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &u128) -> Option<&mut V> {
        Arc::make_mut(&mut self.shards[shard(*key)]).get_mut(&split(*key))
    }

    /// Sets `key`'s value; the old one if there was one.
    pub fn insert(&mut self, key: u128, value: V) -> Option<V> {
        let old = Arc::make_mut(&mut self.shards[shard(key)]).insert(split(key), value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Keeps the entries `keep` says to keep.
    pub fn retain(&mut self, mut keep: impl FnMut(u128, &mut V) -> bool) {
        for s in self.shards.iter_mut() {
            Arc::make_mut(s).retain(|k, v| keep(join(k), v));
        }
        self.len = self.shards.iter().map(|s| s.len()).sum();
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
        self.shards.iter().map(|s| s.capacity()).sum()
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
        m.retain(|_, v| *v % 2 == 0);
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.iter().count(), 5_000);
        assert!(m.values().all(|v| v % 2 == 0));
        // The keys spread over the tables.
        assert!(m.shards.iter().filter(|s| !s.is_empty()).count() > 200);
        assert!(m.capacity() >= 5_000);
    }

    #[test]
    fn a_frozen_copy_keeps_its_keys_while_the_map_changes() {
        let mut m = ShardedMap::default();
        let key = |k: u128| k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        for k in 0..1_000u128 {
            m.insert(key(k), k);
        }
        let frozen = m.clone();
        // Shared: no table was copied.
        assert!(
            m.shards
                .iter()
                .zip(frozen.shards.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        m.insert(key(5), 500);
        m.insert(key(5_000), 1);
        m.retain(|_, v| *v != 7);
        assert_eq!(frozen.get(&key(5)), Some(&5));
        assert_eq!(frozen.get(&key(7)), Some(&7));
        assert_eq!(frozen.get(&key(5_000)), None);
        assert_eq!(frozen.len(), 1_000);
        assert_eq!(frozen.iter().count(), 1_000);
        assert_eq!(m.get(&key(5)), Some(&500));
        assert_eq!(m.get(&key(7)), None);
        assert_eq!(m.len(), 1_000);
        // Once the frozen copy is gone, writes copy nothing.
        drop(frozen);
        let before: Vec<*const HashMap<[u64; 2], u128>> =
            m.shards.iter().map(Arc::as_ptr).collect();
        m.insert(key(9_999), 2);
        assert!(m.shards.iter().map(Arc::as_ptr).eq(before));
    }
}
