//! Plain statistics structs returned by [`Store::stats`](super::Store::stats) and
//! [`Store::bucket_stats`](super::Store::bucket_stats). Values are summed over partitions
//! one partition at a time, so they are not one atomic picture while writes go on.

/// Store-wide numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live items (expired items not yet reclaimed included) of visible buckets.
    pub items: u64,
    /// Slab bytes held by items of visible buckets (whole chunks, so header and slack
    /// included).
    pub bytes: u64,
    /// Items of hidden buckets (copies being received from another node).
    pub hidden_items: u64,
    /// Slab bytes held by items of hidden buckets.
    pub hidden_bytes: u64,
    /// Slab memory in bytes (whole pages of the configured memory).
    pub memory: u64,
    /// The memory limit in force ([`Store::set_memory_limit`](super::Store::set_memory_limit)):
    /// `memory` unless lowered at run time.
    pub memory_limit: u64,
    /// Page size in bytes.
    pub page_size: u64,
    /// Pages in total.
    pub pages_total: u64,
    /// Pages handed to partitions.
    pub pages_used: u64,
    /// Pages still in the shared pool.
    pub pages_free: u64,
    /// Items evicted to make room (including items in pages moved between classes).
    pub evictions: u64,
    /// Expired items reclaimed (on access, by the eviction hand, or by the crawler).
    pub expirations: u64,
    /// Of `expirations`, those reclaimed by [`Store::crawl_expired`](super::Store::crawl_expired).
    pub crawler_reclaimed: u64,
    /// Pages moved from one slab class to another by rebalancing.
    pub pages_moved: u64,
    /// Reads that found a live item.
    pub hits: u64,
    /// Reads that found nothing (or an expired item).
    pub misses: u64,
    /// Heap bytes of the per-bucket index tables (outside slab memory).
    pub index_bytes: u64,
    /// Other heap bytes outside slab memory: bucket records, page and class records, scratch
    /// buffers. Total memory is `memory + index_bytes + change_log_bytes + overhead_bytes`
    /// (plus the allocator's own overhead).
    pub overhead_bytes: u64,
    /// Heap bytes of the change logs (outside slab memory; only buckets someone reads keep
    /// one).
    pub change_log_bytes: u64,
    /// Number of lock partitions.
    pub partitions: u64,
    /// Per slab class, smallest chunk first.
    pub classes: Vec<ClassStats>,
}

/// Numbers for one slab class, summed over partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Pages assigned to the class.
    pub pages: u64,
    /// Chunks in those pages.
    pub chunks: u64,
    /// Chunks holding items (heads and continuations).
    pub used: u64,
    /// Items whose first chunk is in the class (items of every bucket held, hidden ones
    /// included).
    pub items: u64,
    /// Chunks ready to be handed out without eviction.
    pub free: u64,
    /// Items evicted from the class.
    pub evictions: u64,
    /// Pages the class received from other classes through rebalancing.
    pub pages_gained: u64,
}

/// Numbers for one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Live items in the bucket.
    pub items: u64,
    /// Slab bytes they hold (whole chunks).
    pub bytes: u64,
    /// Last sequence number given to a write in the bucket.
    pub seq: u64,
}
