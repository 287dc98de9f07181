//! Per-bucket index: a `hashbrown::HashTable` of chunk ids.
//!
//! The table stores only the 4-byte [`ChunkId`] of each item's head chunk. Lookups hash the
//! key once, probe with the high bits of that hash (the low bits chose the bucket, so they
//! are equal for every key here), and compare the full key bytes stored in slab memory.
//! Growing the table rehashes keys read back from the slab, so no hash is stored per item.
//!
//! Each bucket also carries its sequence counter and its memory accounting. Table memory is
//! outside the slab budget and reported as overhead in the stats.

use hashbrown::HashTable;
use shoal_proto::hash::key_hash;

use super::changelog::ChangeLog;
use super::item::key_of;
use super::slab::{ChunkId, Slab};

/// Probe hash for the table, from the 64-bit key hash (high 32 bits, spread again).
#[inline]
pub(crate) fn table_hash(key_hash: u64) -> u64 {
    (key_hash >> 32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// One bucket: index, sequence counter and accounting.
#[derive(Debug, Default)]
pub(crate) struct BucketIndex {
    table: HashTable<ChunkId>,
    /// Last sequence number given to a write in this bucket.
    pub seq: u64,
    /// Live items.
    pub items: u64,
    /// Slab bytes used by those items (whole chunks).
    pub bytes: u64,
    /// Hidden: filled by a copy, not served, not evicted, not counted in the store stats.
    pub hidden: bool,
    /// The change log, while someone reads it.
    pub log: Option<Box<ChangeLog>>,
}

impl BucketIndex {
    /// The head chunk of `key`, if indexed.
    #[inline]
    pub(crate) fn find(&self, slab: &Slab, th: u64, key: &[u8]) -> Option<ChunkId> {
        self.table
            .find(th, |&id| key_of(slab.chunk(id)) == key)
            .copied()
    }

    /// Points `key` at `id`; returns the chunk it pointed at before, if any.
    pub(crate) fn upsert(
        &mut self,
        slab: &Slab,
        th: u64,
        key: &[u8],
        id: ChunkId,
    ) -> Option<ChunkId> {
        if let Some(slot) = self
            .table
            .find_mut(th, |&old| key_of(slab.chunk(old)) == key)
        {
            return Some(std::mem::replace(slot, id));
        }
        self.table.insert_unique(th, id, |&other| {
            table_hash(key_hash(key_of(slab.chunk(other))))
        });
        None
    }

    /// Removes the entry pointing at `id` (whose key hashes to `th`); false if there was none.
    pub(crate) fn remove(&mut self, th: u64, id: ChunkId) -> bool {
        match self.table.find_entry(th, |&x| x == id) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Copies up to `out.len()` ids into `out`; returns how many.
    pub(crate) fn some_ids(&self, out: &mut [ChunkId]) -> usize {
        let mut n = 0;
        for (slot, &id) in out.iter_mut().zip(self.table.iter()) {
            *slot = id;
            n += 1;
        }
        n
    }

    /// All ids, for a snapshot.
    pub(crate) fn all_ids(&self) -> Vec<ChunkId> {
        self.table.iter().copied().collect()
    }

    /// Heap bytes held by the table.
    pub(crate) fn table_bytes(&self) -> usize {
        self.table.allocation_size()
    }

    /// Forgets every entry and releases the table memory (the chunks are freed elsewhere).
    pub(crate) fn reset(&mut self) {
        self.table = HashTable::new();
        self.items = 0;
        self.bytes = 0;
    }
}
