//! `MemoryCache`: verified chunks kept in memory, so the many small FUSE reads that fall inside one chunk
//! cost one disk read and one hash check, not one each. Bounded in bytes, least recently used out first.

use crate::hash::ChunkHash;
use bytes::Bytes;
use musicfs_core::sync_util::lock_or_recover;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub struct MemoryCache {
    budget: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<ChunkHash, (Bytes, u64)>,
    order: BTreeMap<u64, ChunkHash>,
    bytes: u64,
    tick: u64,
}

impl MemoryCache {
    pub fn new(budget: u64) -> Self {
        Self { budget, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is complete under the lock, so a poisoned lock still holds a consistent map (2.9).
        lock_or_recover(&self.inner)
    }

    /// The most bytes kept.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Whether the chunk is here, without counting it as a use.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.lock().map.contains_key(hash)
    }

    pub fn get(&self, hash: &ChunkHash) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (data, old) = inner.map.get_mut(hash).map(|(data, t)| (data.clone(), std::mem::replace(t, tick)))?;
        inner.order.remove(&old);
        inner.order.insert(tick, *hash);
        Some(data)
    }

    pub fn insert(&self, hash: ChunkHash, data: Bytes) {
        if data.len() as u64 > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let len = data.len() as u64;
        if let Some((old, old_tick)) = inner.map.insert(hash, (data, tick)) {
            inner.order.remove(&old_tick);
            inner.bytes -= old.len() as u64;
        }
        inner.order.insert(tick, hash);
        inner.bytes += len;
        while inner.bytes > self.budget {
            let Some((_, victim)) = inner.order.pop_first() else { break };
            if let Some((old, _)) = inner.map.remove(&victim) {
                inner.bytes -= old.len() as u64;
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_keeps_recently_used() {
        let cache = MemoryCache::new(250);
        let h = |n: u8| ChunkHash::of(&[n]);
        cache.insert(h(1), Bytes::from(vec![1; 100]));
        cache.insert(h(2), Bytes::from(vec![2; 100]));
        assert!(cache.get(&h(1)).is_some());
        cache.insert(h(3), Bytes::from(vec![3; 100]));
        assert!(cache.bytes() <= 250);
        assert!(cache.get(&h(1)).is_some());
        assert!(cache.get(&h(2)).is_none());
        assert!(cache.get(&h(3)).is_some());
    }

    /// The budget is a bound, not a trigger: chunks that fill it exactly all stay, and the same chunk inserted
    /// twice counts once. A chunk larger than the whole budget is not kept, and pushes nothing out.
    #[test]
    fn counts_each_chunk_once_keeps_a_full_budget_and_skips_a_chunk_larger_than_it() {
        let cache = MemoryCache::new(200);
        let h = |n: u8| ChunkHash::of(&[n]);
        cache.insert(h(1), Bytes::from(vec![1; 100]));
        cache.insert(h(1), Bytes::from(vec![1; 100]));
        assert_eq!(cache.bytes(), 100, "the same chunk twice");
        cache.insert(h(2), Bytes::from(vec![2; 100]));
        assert_eq!(cache.bytes(), 200);
        assert!(cache.contains(&h(1)) && cache.contains(&h(2)), "a budget filled exactly keeps every chunk");
        cache.insert(h(3), Bytes::from(vec![3; 201]));
        assert!(!cache.contains(&h(3)), "a chunk larger than the budget is not kept");
        assert!(cache.contains(&h(1)) && cache.contains(&h(2)), "nor does it push the others out");
        let whole = MemoryCache::new(100);
        whole.insert(h(4), Bytes::from(vec![4; 100]));
        assert_eq!((whole.contains(&h(4)), whole.bytes()), (true, 100), "a chunk of exactly the budget is kept");
    }
}
