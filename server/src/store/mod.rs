//! The storage engine: items in preallocated slab memory, indexed per bucket.
//!
//! ```text
//!            Store (Clone, Arc inside)
//!              | key -> key_hash -> bucket = hash & (buckets-1) -> partition = bucket % P
//!   +----------+-----------+---------- ... ----+
//!   Mutex<Partition 0>   Mutex<Partition 1>    Mutex<Partition P-1>
//!     slab classes (pages, free lists, CLOCK hands)
//!     bucket indexes (HashTable<u32 chunk id>, seq, items, bytes) for its buckets
//!              \___________ take pages from ___________/
//!                        PagePool (all pages, allocated at start)
//! ```
//!
//! - **Memory.** `memory / page_size` pages are allocated at start. A partition's slab class
//!   takes a page from the shared pool when it has no free chunk (the pool lock is taken only
//!   then). Chunk sizes start at `min_chunk` and grow by `growth_factor` up to `max_chunk`;
//!   larger items are chains of `max_chunk` chunks. Writes do no per-item heap allocation:
//!   the item goes into slab chunks and the index stores a 4-byte chunk id (the index table
//!   grows by doubling, amortised).
//! - **Items.** A 30-byte header (status, key length, value length, flags, expiry, value hash,
//!   seq), then key and value; see [`item`]. With the defaults the classes are 48, 60, 75, 94,
//!   117, 146, ... bytes, so a 16-byte key with a 100-byte value takes exactly one 146-byte
//!   chunk (memcached 1.6 needs 175 bytes in a 192-byte chunk).
//! - **Partitions.** `P` mutexes (a power of two, 16 by default, fewer when memory is small so
//!   each has at least 16 pages); bucket `b` belongs to partition `b % P`. Each holds its own
//!   classes, free lists, CLOCK hands, bucket indexes and counters. A partition keeps the
//!   pages it took until `flush_all`; keys spread evenly over buckets, so partitions fill
//!   evenly.
//! - **Eviction and rebalancing.** CLOCK per class, pages moved between classes under
//!   pressure; the policy is documented in [`partition`].
//! - **Expiry.** TTLs are relative seconds (0 = never) turned into monotonic expiry times
//!   ([`Clock::now`]). Expired items are reclaimed on access, by the eviction hand, and by
//!   [`Store::crawl_expired`], which examines a bounded number of chunks per lock hold.
//!   Absolute times (unix seconds) appear only on [`OwnedItem`]s. Converting memcached's
//!   "absolute time if above 30 days" TTLs is the protocol layer's job.
//! - **Sequence numbers.** Each bucket counts its writes (set, add, replace, cas, append,
//!   prepend, incr/decr, delete); every stored item carries the seq of its last write. touch
//!   and get-and-touch change only the expiry and do not take a seq.
//! - **Memory overhead** outside slab memory: the index tables (4-byte id + 1 control byte per
//!   table slot, load factor 7/8 to 7/16, so about 6 to 12 bytes per item at the peak item
//!   count, since tables do not shrink; plus up to ~128 bytes per table), ~40 bytes per
//!   bucket, ~64 bytes per page and 128 per class and partition, and one scratch buffer per
//!   partition for append/prepend (kept up to 64 KiB). [`StoreStats::index_bytes`] and
//!   [`StoreStats::overhead_bytes`] report it.
//!
//! The store does no I/O and owns no task: the server calls [`Store::crawl_expired`] from its
//! own task.

mod clock;
mod config;
mod error;
mod index;
mod item;
mod partition;
mod slab;
mod snapshot;
mod stats;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use shoal_proto::hash::{key_hash, value_hash};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    StoreConfig, DEFAULT_BUCKETS, DEFAULT_GROWTH_FACTOR, DEFAULT_MAX_CHUNK, DEFAULT_MAX_KEY,
    DEFAULT_MAX_VALUE, DEFAULT_MEMORY, DEFAULT_MIN_CHUNK, DEFAULT_PAGE_SIZE, MAX_AUTO_PARTITIONS,
    MIN_PAGES_PER_PARTITION,
};
pub use error::StoreError;
pub use item::{ItemRef, OwnedItem, ValueChunks};
pub use snapshot::{BucketSnapshot, SNAPSHOT_BATCH};
pub use stats::{BucketStats, ClassStats, StoreStats};

use index::table_hash;
use partition::{Loc, Partition};
use slab::{Geometry, PagePool};

/// How [`Store::set`] treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Store unconditionally.
    Set,
    /// Store only if the key is absent, else [`StoreError::NotStored`].
    Add,
    /// Store only if the key is present, else [`StoreError::NotStored`].
    Replace,
    /// Store only if the key is present ([`StoreError::NotFound`]) and its value hash equals
    /// this one ([`StoreError::Exists`]).
    Cas(u64),
}

/// The result of a successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOk {
    /// Value hash of the stored value (the new check-and-set token).
    pub hash: u64,
    /// Bucket sequence number of the write.
    pub seq: u64,
}

/// Largest number of items a `remove_bucket` step frees under one lock hold.
const REMOVE_BATCH: usize = 256;
/// Largest number of chunks a crawler step examines under one lock hold.
const CRAWL_STEP: usize = 512;

/// The storage engine. Cheap to clone; all clones share the same data.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    partitions: Box<[Mutex<Partition>]>,
    pool: Arc<PagePool>,
    geometry: Arc<Geometry>,
    clock: Arc<dyn Clock>,
    /// Partition the next crawler call starts with, so calls with small budgets take turns.
    crawl_next: AtomicUsize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .field("partitions", &self.inner.partitions.len())
            .finish()
    }
}

impl Store {
    /// A store with the real clock.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidConfig`] if `config` does not validate.
    pub fn new(config: StoreConfig) -> Result<Store, StoreError> {
        Self::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// A store with the given clock (tests use [`ManualClock`]). Allocates all slab memory.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidConfig`] if `config` does not validate.
    pub fn with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        config.validate()?;
        let geometry = Arc::new(Geometry::new(&config)?);
        let pool = Arc::new(PagePool::new(config.pages(), config.page_size));
        let count = config.effective_partitions() as u32;
        let partitions = (0..count)
            .map(|_| {
                Mutex::new(Partition::new(
                    geometry.clone(),
                    pool.clone(),
                    config.buckets,
                    count,
                    config.max_value,
                ))
            })
            .collect();
        Ok(Store {
            inner: Arc::new(Inner {
                config,
                partitions,
                pool,
                geometry,
                clock,
                crawl_next: AtomicUsize::new(0),
            }),
        })
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Number of buckets.
    pub fn buckets(&self) -> u32 {
        self.inner.config.buckets
    }

    /// The bucket of `key`.
    pub fn bucket_of(&self, key: &[u8]) -> u32 {
        (key_hash(key) & u64::from(self.buckets() - 1)) as u32
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            Err(StoreError::EmptyKey)
        } else if key.len() > self.inner.config.max_key {
            Err(StoreError::KeyTooLong)
        } else {
            Ok(())
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > self.inner.config.max_value {
            Err(StoreError::TooLarge)
        } else {
            Ok(())
        }
    }

    fn locate(&self, key: &[u8]) -> Loc {
        let kh = key_hash(key);
        let bucket = (kh & u64::from(self.buckets() - 1)) as u32;
        self.bucket_loc(bucket, table_hash(kh))
    }

    fn bucket_loc(&self, bucket: u32, th: u64) -> Loc {
        let parts = self.inner.partitions.len() as u32;
        Loc {
            part: (bucket % parts) as usize,
            local: (bucket / parts) as usize,
            th,
        }
    }

    fn lock(&self, part: usize) -> MutexGuard<'_, Partition> {
        // A panic in a caller's closure cannot leave the partition half-updated (closures
        // only read), so a poisoned lock is safe to keep using.
        self.inner.partitions[part]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the item stored under `key`, with the partition lock held (no copy).
    /// `None` if the key is absent, expired, empty or too long. Counts a hit or a miss and
    /// marks the item recently used.
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(ItemRef<'_>) -> R) -> Option<R> {
        self.check_key(key).ok()?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        let mut part = self.lock(loc.part);
        let id = part.get(loc, key, now, None)?;
        Some(f(ItemRef::new(part.slab(), id, now)))
    }

    /// Like [`Store::get`], and sets the item's TTL to `ttl` seconds (0 = never expires). On a
    /// hit the touch takes the bucket's next sequence number; `f` sees the touched item, so
    /// [`ItemRef::seq`] is that number.
    pub fn get_and_touch<R>(
        &self,
        key: &[u8],
        ttl: u32,
        f: impl FnOnce(ItemRef<'_>) -> R,
    ) -> Option<R> {
        self.check_key(key).ok()?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        let mut part = self.lock(loc.part);
        let id = part.get(loc, key, now, Some(ttl))?;
        Some(f(ItemRef::new(part.slab(), id, now)))
    }

    /// Stores `value` under `key` with `flags` and a TTL in seconds (0 = never), as `mode`
    /// allows. The value hash is computed here, before the lock is taken.
    ///
    /// # Errors
    ///
    /// [`StoreError::EmptyKey`], [`StoreError::KeyTooLong`], [`StoreError::TooLarge`];
    /// [`StoreError::NotStored`] (add on a present key, replace on an absent one);
    /// [`StoreError::NotFound`] / [`StoreError::Exists`] (cas); [`StoreError::OutOfMemory`].
    pub fn set(
        &self,
        mode: SetMode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        ttl: u32,
    ) -> Result<WriteOk, StoreError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let hash = value_hash(value);
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part)
            .set(loc, mode, key, value, hash, flags, ttl, now)
    }

    /// Appends `data` to the value of `key`, keeping flags and TTL.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotStored`] if the key is absent (as memcached); key errors;
    /// [`StoreError::TooLarge`] if the result exceeds `max_value`; [`StoreError::OutOfMemory`].
    pub fn append(&self, key: &[u8], data: &[u8]) -> Result<WriteOk, StoreError> {
        self.concat(key, data, false)
    }

    /// Prepends `data` to the value of `key`, keeping flags and TTL.
    ///
    /// # Errors
    ///
    /// As [`Store::append`].
    pub fn prepend(&self, key: &[u8], data: &[u8]) -> Result<WriteOk, StoreError> {
        self.concat(key, data, true)
    }

    fn concat(&self, key: &[u8], data: &[u8], front: bool) -> Result<WriteOk, StoreError> {
        self.check_key(key)?;
        self.check_value(data)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part).concat(loc, key, data, front, now)
    }

    /// Deletes `key`; with `expected_hash`, only if the value hash matches. Returns the
    /// bucket sequence number given to the delete.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Exists`] (hash mismatch), key errors.
    pub fn delete(&self, key: &[u8], expected_hash: Option<u64>) -> Result<u64, StoreError> {
        self.check_key(key)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part).delete(loc, key, expected_hash, now)
    }

    /// Sets the TTL of `key` to `ttl` seconds (0 = never expires). A touch is a change: the
    /// item takes the bucket's next sequence number, which is returned.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], key errors.
    pub fn touch(&self, key: &[u8], ttl: u32) -> Result<u64, StoreError> {
        self.check_key(key)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part).touch(loc, key, ttl, now)
    }

    /// Adds `delta` to (or with `decr`, subtracts it from) the decimal value of `key`, and
    /// returns the new number.
    ///
    /// As memcached: the value must be 1 to 20 ASCII digits holding a `u64`; incr wraps
    /// around at 2^64, decr stops at 0. The new value is written as plain decimal digits
    /// (memcached pads a shrinking decr with spaces; Shoal does not). Flags and TTL are kept.
    /// If the key is absent and `create` is `Some((initial, ttl))`, `initial` is stored (flags
    /// 0) and returned without applying `delta` (the binary-protocol behaviour).
    ///
    /// # Errors
    ///
    /// [`StoreError::NonNumeric`], [`StoreError::NotFound`] (absent, no `create`), key errors,
    /// [`StoreError::OutOfMemory`].
    pub fn incr(
        &self,
        key: &[u8],
        delta: u64,
        decr: bool,
        create: Option<(u64, u32)>,
    ) -> Result<(u64, WriteOk), StoreError> {
        self.check_key(key)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part).incr(loc, key, delta, decr, create, now)
    }

    /// Removes every item and returns all pages to the pool, one partition at a time.
    /// Every bucket's sequence number takes one step (it is never reset).
    pub fn flush_all(&self) {
        for part in 0..self.inner.partitions.len() {
            self.lock(part).flush();
        }
    }

    /// Store-wide statistics.
    pub fn stats(&self) -> StoreStats {
        let cfg = &self.inner.config;
        let mut stats = StoreStats {
            memory: (cfg.pages() * cfg.page_size) as u64,
            page_size: cfg.page_size as u64,
            pages_total: cfg.pages() as u64,
            partitions: self.inner.partitions.len() as u64,
            classes: self
                .inner
                .geometry
                .sizes
                .iter()
                .map(|&size| ClassStats {
                    chunk_size: size as u64,
                    ..ClassStats::default()
                })
                .collect(),
            ..StoreStats::default()
        };
        for part in 0..self.inner.partitions.len() {
            self.lock(part).add_stats(&mut stats);
        }
        stats.pages_free = self.inner.pool.free_pages() as u64;
        stats
    }

    /// Items, bytes and sequence number of one bucket (zeros for a bucket out of range).
    pub fn bucket_stats(&self, bucket: u32) -> BucketStats {
        if bucket >= self.buckets() {
            return BucketStats::default();
        }
        let loc = self.bucket_loc(bucket, 0);
        self.lock(loc.part).bucket_stats(loc.local)
    }

    /// Raises the sequence counter of `bucket` to at least `seq` (nothing for a bucket out of
    /// range). Used when a savefile is loaded, so a restarted node never gives a seq twice,
    /// and after a copied snapshot, so the copy's counter is the source's.
    pub fn raise_bucket_seq(&self, bucket: u32, seq: u64) {
        if bucket >= self.buckets() {
            return;
        }
        let loc = self.bucket_loc(bucket, 0);
        self.lock(loc.part).raise_seq(loc.local, seq);
    }

    /// Starts a snapshot of `bucket`; see [`BucketSnapshot`] for what it contains. Writes go
    /// on while it is read. A bucket out of range gives an empty snapshot.
    pub fn snapshot_bucket(&self, bucket: u32) -> BucketSnapshot {
        if bucket >= self.buckets() {
            return BucketSnapshot::new(self.clone(), bucket, Vec::new(), 0);
        }
        let loc = self.bucket_loc(bucket, 0);
        let (ids, seq) = self.lock(loc.part).snapshot_ids(loc.local);
        BucketSnapshot::new(self.clone(), bucket, ids, seq)
    }

    fn export_ids(&self, bucket: u32, ids: &[u32], max_seq: u64) -> Vec<OwnedItem> {
        let loc = self.bucket_loc(bucket, 0);
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall();
        let part = self.lock(loc.part);
        ids.iter()
            .filter_map(|&id| part.export(loc.local, bucket, id, max_seq, now, wall))
            .collect()
    }

    /// Removes every item of `bucket`, a few hundred per lock hold; returns how many.
    /// The bucket's sequence number is kept.
    pub fn remove_bucket(&self, bucket: u32) -> usize {
        if bucket >= self.buckets() {
            return 0;
        }
        let loc = self.bucket_loc(bucket, 0);
        let mut total = 0;
        loop {
            let n = self.lock(loc.part).remove_some(loc.local, REMOVE_BATCH);
            total += n;
            if n == 0 {
                return total;
            }
        }
    }

    /// Stores an item received from another node or a savefile, keeping its hash, seq and
    /// flags. `expires_at` (unix seconds) becomes a TTL from the current wall-clock time; an
    /// item already expired is dropped (and removes any local copy of the key), returning
    /// `Ok`. The bucket's sequence counter is raised to at least the item's seq.
    ///
    /// # Errors
    ///
    /// Key and value size errors, [`StoreError::OutOfMemory`].
    pub fn insert_item(&self, item: &OwnedItem) -> Result<(), StoreError> {
        self.check_key(&item.key)?;
        self.check_value(&item.value)?;
        let loc = self.locate(&item.key);
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall();
        self.lock(loc.part).insert(loc, item, now, wall)
    }

    /// Reclaims expired items, examining about `budget` chunks in steps of at most 512 per
    /// lock hold, and at most one full sweep per partition per call. Returns the number of
    /// items reclaimed. Meant to be called periodically from a background task.
    pub fn crawl_expired(&self, budget: usize) -> usize {
        let parts = self.inner.partitions.len();
        let first = self.inner.crawl_next.fetch_add(1, Ordering::Relaxed) % parts;
        let share = (budget / parts).max(1);
        let now = self.inner.clock.now();
        let mut reclaimed = 0;
        for i in 0..parts {
            let part = (first + i) % parts;
            let mut left = share;
            while left > 0 {
                let (examined, n, wrapped) = self.lock(part).crawl(left.min(CRAWL_STEP), now);
                reclaimed += n;
                left = left.saturating_sub(examined.max(1));
                if wrapped || examined == 0 {
                    break;
                }
            }
        }
        reclaimed
    }
}

#[cfg(test)]
mod tests;
