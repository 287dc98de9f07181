//! The storage engine: items in preallocated slab memory, indexed per bucket.
//!
//! ```text
//!            Store (Clone, Arc inside)
//!              | key -> key_hash -> bucket = hash & (buckets-1) -> partition = bucket % P
//!   +----------+-----------+---------- ... ----+
//!   Mutex<Partition 0>   Mutex<Partition 1>    Mutex<Partition P-1>
//!     slab classes (pages, free lists, CLOCK hands)
//!     bucket indexes (HashTable<u32 chunk id>, seq, items, bytes, hidden, change log)
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
//! - **Items.** A 34-byte header (status, key length, value length, flags, expiry, value hash,
//!   seq, last access), then key and value; see [`item`]. With the defaults the classes are 49,
//!   61, 77, 96, 120, 150, ... bytes, so a 16-byte key with a 100-byte value takes exactly one
//!   150-byte chunk (memcached 1.6 needs 175 bytes in a 192-byte chunk).
//! - **Partitions.** `P` mutexes (a power of two, 16 by default, fewer when memory is small so
//!   each has at least 16 pages); bucket `b` belongs to partition `b % P`. Each holds its own
//!   classes, free lists, CLOCK hands, bucket indexes and counters. A partition keeps the
//!   pages it took until `flush_all`; keys spread evenly over buckets, so partitions fill
//!   evenly.
//! - **Eviction and rebalancing.** CLOCK per class, pages moved to a class whose items are
//!   replaced faster than another class's (by the age of the pages each would give up next);
//!   the policy is documented in [`partition`].
//! - **Expiry.** TTLs are relative seconds (0 = never) turned into monotonic expiry times
//!   ([`Clock::now`]). Expired items are reclaimed on access, by the eviction hand, and by
//!   [`Store::crawl_expired`], which examines a bounded number of chunks per lock hold.
//!   Absolute times (unix seconds) appear only on [`OwnedItem`]s. Converting memcached's
//!   "absolute time if above 30 days" TTLs is the protocol layer's job.
//! - **Sequence numbers.** Every change of a bucket takes the bucket's next seq: set, add,
//!   replace, cas, append, prepend, incr/decr, delete, touch, get-and-touch (on a hit),
//!   `flush_all` (one per visible bucket) and `remove_bucket` (one per call); an eviction takes
//!   one in a bucket that keeps a change log. Expiry takes none (expiry times are absolute
//!   and every node uses the same wall clock). Every stored item carries the seq of its last
//!   change. Counters never go back, except on [`Store::drop_bucket`]; the savefile keeps
//!   them across restarts. Changes that come from elsewhere ([`Store::apply`],
//!   [`Store::insert_item`]) keep their seq and raise the counter to it.
//! - **One item record.** [`OwnedItem`] (key, value, flags, hash, seq, absolute expiry) is
//!   what snapshots, change logs, savefiles and peers exchange.
//! - **Change logs** ([`changelog`]). A bucket keeps an in-memory log of its changes only
//!   while someone reads it ([`Store::start_change_log`]), within
//!   [`StoreConfig::change_log_bytes`] per bucket (default 64 KiB; 0 = off); about 10 + key
//!   bytes per change and no value copies, and no allocation per write once the ring is
//!   full. [`Store::changes_since`] returns each changed key with its current state (the item,
//!   or a removal; a flush or `remove_bucket` is a bucket-wide [`Change::Clear`]), so
//!   evictions and flushes reach a follower. A reader whose position was dropped for the cap
//!   is told ([`ChangeLogError::Behind`]) and starts again from a snapshot: never a silent
//!   gap. Guarantee: a bucket snapshot started after `start_change_log`, inserted into an
//!   empty bucket, followed by the log from the snapshot's `start_seq` applied in order
//!   (duplicates and re-reads allowed), gives the source bucket's content.
//! - **Applying changes** ([`Store::apply`]). A change is installed, with its hash, seq,
//!   flags and absolute expiry, only if its seq is above the bucket's counter; so a bucket's
//!   changes must be applied in seq order, and replays do nothing.
//! - **Hidden buckets** ([`Store::hide_bucket`], [`Store::show_bucket`],
//!   [`Store::drop_bucket`]). A hidden bucket is filled by `apply`/`insert_item` only: reads
//!   miss, writes get [`StoreError::Hidden`], its items are not evicted, not counted in
//!   [`Store::stats`] and not flushed. Showing it is one lock hold; dropping it hides it at
//!   once, then frees its items a few hundred per lock hold.
//! - **Memory overhead** outside slab memory: the change logs being read
//!   ([`StoreStats::change_log_bytes`]), the index tables (4-byte id + 1 control byte per
//!   table slot, load factor 7/8 to 7/16, so about 6 to 12 bytes per item at the peak item
//!   count, since tables do not shrink; plus up to ~128 bytes per table), ~40 bytes per
//!   bucket, ~64 bytes per page and 128 per class and partition, and one scratch buffer per
//!   partition for append/prepend (kept up to 64 KiB). [`StoreStats::index_bytes`] and
//!   [`StoreStats::overhead_bytes`] report it.
//!
//! The store does no I/O and owns no task: the server calls [`Store::crawl_expired`] from its
//! own task.

mod changelog;
mod clock;
mod config;
mod error;
mod index;
mod item;
mod partition;
mod slab;
mod snapshot;
mod stats;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use shoal_proto::hash::{bucket_of, key_hash, value_hash};

pub use changelog::{Change, ChangeBatch, ChangeLogError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    StoreConfig, DEFAULT_BUCKETS, DEFAULT_CHANGE_LOG_BYTES, DEFAULT_GROWTH_FACTOR,
    DEFAULT_MAX_CHUNK, DEFAULT_MAX_KEY, DEFAULT_MAX_VALUE, DEFAULT_MEMORY, DEFAULT_MIN_CHUNK,
    DEFAULT_PAGE_SIZE, MAX_AUTO_PARTITIONS, MIN_PAGES_PER_PARTITION,
};
pub use error::{ConfigError, StoreError};
pub use item::{ItemRecord, ItemRef, OwnedItem, ValueChunks};
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

/// What a meta get ([`Store::meta_get`], memcached's `mg`) does besides reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaGet {
    /// New TTL of a found item, in seconds (0 = never expires).
    pub touch: Option<u32>,
    /// On a miss, create an empty item (flags 0) with this TTL and tell this client it won
    /// the right to recache it (`N`).
    pub vivify: Option<u32>,
    /// Tell this client it won the right to recache when the item's remaining TTL is below
    /// this many seconds and nobody won it yet (`R`).
    pub recache: Option<u32>,
    /// Leave the fetched bit, last-access time and CLOCK bit alone (`u`).
    pub no_update: bool,
}

/// What a meta get saw, as of before this request changed the item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaSeen {
    /// The item was created by this request (`N` on a miss).
    pub created: bool,
    /// The item had been read before (`h`).
    pub fetched: bool,
    /// Seconds since the item was last read or written (`l`).
    pub idle: u32,
    /// Remaining TTL in seconds before any touch (`None`: never expires, or just created).
    pub ttl: Option<u32>,
    /// The item is stale (`X`).
    pub stale: bool,
    /// Another client was already told it won the right to recache (`Z`).
    pub win_sent: bool,
    /// This client won the right to recache (`W`).
    pub won: bool,
}

/// Options of a meta arithmetic ([`Store::meta_incr`], memcached's `ma`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaIncr {
    /// Amount to add or subtract.
    pub delta: u64,
    /// Subtract instead of add.
    pub decr: bool,
    /// On a miss, store this value with this TTL instead (the delta is not applied).
    pub create: Option<(u64, u32)>,
    /// Only if the value hash equals this check-and-set token.
    pub expected: Option<u64>,
    /// New TTL in seconds on success (0 = never expires).
    pub touch: Option<u32>,
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
    /// `flush_all` calls so far (a bucket move that saw one during its switchover starts
    /// again).
    flushes: AtomicU64,
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
    /// [`ConfigError`] if `config` does not validate.
    pub fn new(config: StoreConfig) -> Result<Store, ConfigError> {
        Self::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// A store with the given clock (tests use [`ManualClock`]). Allocates all slab memory.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if `config` does not validate.
    pub fn with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store, ConfigError> {
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
                    config.change_log_bytes,
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
                flushes: AtomicU64::new(0),
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

    /// The bucket of `key` (`shoal_proto`'s bucket function, as every node and client).
    pub fn bucket_of(&self, key: &[u8]) -> u32 {
        bucket_of(key, self.buckets())
    }

    /// The node clock's wall time (unix seconds): the one clock that turns protocol expiry
    /// times into TTLs.
    pub fn wall(&self) -> u64 {
        self.inner.clock.wall()
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
        let bucket = shoal_proto::hash::bucket_of_hash(kh, self.buckets());
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

    /// Runs `f` on the item under `key`, then removes it, under one lock hold (one store
    /// operation, one sequence number). `None` on a miss.
    pub fn get_and_delete<R>(&self, key: &[u8], f: impl FnOnce(ItemRef<'_>) -> R) -> Option<R> {
        self.check_key(key).ok()?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        let mut part = self.lock(loc.part);
        let id = part.get(loc, key, now, None)?;
        let item = ItemRef::new(part.slab(), id, now);
        let hash = item.hash();
        let r = f(item);
        let _ = part.delete(loc, key, Some(hash), now);
        Some(r)
    }

    /// Stores `value` under `key` with `flags` and a TTL in seconds (0 = never), as `mode`
    /// allows. The value hash is computed here, before the lock is taken.
    ///
    /// A [`SetMode::Set`] that fails because the value is too large or no memory could be
    /// freed removes the key's old value in the same operation (as memcached), so a client
    /// never reads back the value it just tried to replace.
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
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        if let Err(e) = self.check_value(value) {
            if mode == SetMode::Set {
                let _ = self.lock(loc.part).delete(loc, key, None, now);
            }
            return Err(e);
        }
        let hash = value_hash(value);
        let mut part = self.lock(loc.part);
        let result = part.set(loc, mode, key, value, hash, flags, ttl, now);
        if mode == SetMode::Set && result == Err(StoreError::OutOfMemory) {
            let _ = part.delete(loc, key, None, now);
        }
        result
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
        self.concat_if(key, data, front, None)
    }

    /// Appends (or with `front`, prepends) `data`; with `expected`, only if the value hash
    /// matches.
    ///
    /// # Errors
    ///
    /// As [`Store::append`], and [`StoreError::Exists`] on a hash mismatch.
    pub fn concat_if(
        &self,
        key: &[u8],
        data: &[u8],
        front: bool,
        expected: Option<u64>,
    ) -> Result<WriteOk, StoreError> {
        self.check_key(key)?;
        self.check_value(data)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part)
            .concat(loc, key, data, front, expected, now)
    }

    /// memcached's meta get: runs `f` on the item under `key` with what this request saw and
    /// decided ([`MetaSeen`]), after the touch, creation and win decisions of `req`, all under
    /// one lock hold. `None` on a miss that created nothing (or a bad key).
    pub fn meta_get<R>(
        &self,
        key: &[u8],
        req: &MetaGet,
        f: impl FnOnce(ItemRef<'_>, MetaSeen) -> R,
    ) -> Option<R> {
        self.check_key(key).ok()?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        let mut part = self.lock(loc.part);
        let (id, seen) = part.meta_get(loc, key, req, now)?;
        Some(f(ItemRef::new(part.slab(), id, now), seen))
    }

    /// Marks `key` stale with a new check-and-set token (memcached's `md <key> I`); with
    /// `expected`, only if the value hash matches; with `ttl`, also sets a new TTL. Returns
    /// the change's seq.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Exists`], key errors.
    pub fn invalidate(
        &self,
        key: &[u8],
        expected: Option<u64>,
        ttl: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.check_key(key)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part).invalidate(loc, key, expected, ttl, now)
    }

    /// A check-and-set that also accepts the token an invalidated item had before its
    /// invalidation, storing the value as still stale (memcached's `ms <key> I C<token>`).
    /// Returns the write and whether the value was stored stale.
    ///
    /// # Errors
    ///
    /// As [`Store::set`] in [`SetMode::Cas`].
    pub fn set_cas_or_stale(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u32,
        ttl: u32,
        expected: u64,
    ) -> Result<(WriteOk, bool), StoreError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let hash = value_hash(value);
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part)
            .set_cas_or_stale(loc, key, value, hash, flags, ttl, expected, now)
    }

    /// incr/decr with memcached's meta-arithmetic options ([`MetaIncr`]). Returns the new
    /// number, the write, and whether the item was created and the TTL it had before
    /// ([`MetaSeen::created`], [`MetaSeen::ttl`]).
    ///
    /// # Errors
    ///
    /// As [`Store::incr`], and [`StoreError::Exists`] on a hash mismatch.
    pub fn meta_incr(
        &self,
        key: &[u8],
        req: &MetaIncr,
    ) -> Result<(u64, WriteOk, MetaSeen), StoreError> {
        self.check_key(key)?;
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        self.lock(loc.part).meta_incr(loc, key, req, now)
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

    /// Makes the OS commit up to `bytes` of the memory not yet given to any slab class, page
    /// by page on the calling thread, stopping early once `stop` is set. A savefile load runs
    /// it on a second thread: otherwise committing fresh memory (the kernel zeroing it on
    /// first touch) takes half of the loading thread's time. Returns the bytes committed.
    pub fn prefault(&self, bytes: u64, stop: &std::sync::atomic::AtomicBool) -> u64 {
        let page = self.inner.config.page_size as u64;
        let mut done = 0;
        while done < bytes && !stop.load(Ordering::Relaxed) && self.inner.pool.prefault_one() {
            done += page;
        }
        done
    }

    /// Removes every item and returns all pages to the pool, one partition at a time.
    /// Every bucket's sequence number takes one step (it is never reset).
    pub fn flush_all(&self) {
        self.inner.flushes.fetch_add(1, Ordering::SeqCst);
        for part in 0..self.inner.partitions.len() {
            self.lock(part).flush();
        }
    }

    /// How many times [`Store::flush_all`] began.
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::SeqCst)
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
        stats.memory_limit = self.memory_limit();
        stats
    }

    /// Limits item memory to about `bytes` at run time (memcached's `cache_memlimit`), within
    /// the memory allocated at start, and returns the limit in force, in bytes.
    ///
    /// The limit is a share of whole pages per partition: from now on a partition takes a
    /// page from the pool only while it holds fewer than its share, and otherwise makes room
    /// by moving pages between its classes and evicting. The share is at least what the
    /// largest value needs (so every key stays storable); `bytes` at or above the allocated
    /// memory lifts the limit. Pages a partition already holds above its share stay in use
    /// (nothing is evicted to shrink it) until `flush_all` returns them to the pool. Pages
    /// no partition ever took are never touched, so the OS does not commit them.
    pub fn set_memory_limit(&self, bytes: u64) -> u64 {
        let cfg = &self.inner.config;
        let parts = self.inner.partitions.len();
        let memory = (cfg.pages() * cfg.page_size) as u64;
        if bytes >= memory {
            self.inner.pool.set_per_partition(usize::MAX);
        } else {
            // As StoreConfig::validate: the largest value fits in half of a partition's
            // pages but one.
            let least = (1 + (2 * cfg.max_value).div_ceil(cfg.page_size)).max(2);
            let share = usize::try_from(bytes / cfg.page_size as u64).unwrap_or(usize::MAX) / parts;
            self.inner.pool.set_per_partition(share.max(least));
        }
        self.memory_limit()
    }

    /// The item memory limit in force, in bytes (see [`Store::set_memory_limit`]).
    pub fn memory_limit(&self) -> u64 {
        let cfg = &self.inner.config;
        let pages = self
            .inner
            .pool
            .per_partition()
            .saturating_mul(self.inner.partitions.len())
            .min(cfg.pages());
        (pages * cfg.page_size) as u64
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

    /// Passes the items of `bucket` at `ids` that a snapshot taken at `max_seq` includes to
    /// `f`, under one lock hold, with their absolute expiry (unix seconds, 0 = never).
    /// Returns how many of `ids` were examined: all of them, or fewer when `f` broke (the
    /// id `f` broke on is not counted).
    fn visit_ids(
        &self,
        bucket: u32,
        ids: &[u32],
        max_seq: u64,
        mut f: impl FnMut(&ItemRef<'_>, u64) -> ControlFlow<()>,
    ) -> usize {
        let loc = self.bucket_loc(bucket, 0);
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall();
        let part = self.lock(loc.part);
        for (done, &id) in ids.iter().enumerate() {
            if let Some(item) = part.snapshot_item(loc.local, bucket, id, max_seq, now) {
                if f(&item, item.expires_at(wall)).is_break() {
                    return done;
                }
            }
        }
        ids.len()
    }

    /// Removes every item of `bucket`, a few hundred per lock hold; returns how many. The
    /// removal is one change: it takes one sequence number (logged as [`Change::Clear`]) and
    /// removes the items with a lower seq, so writes made while it runs are kept.
    pub fn remove_bucket(&self, bucket: u32) -> usize {
        if bucket >= self.buckets() {
            return 0;
        }
        let loc = self.bucket_loc(bucket, 0);
        let begun = self.lock(loc.part).begin_clear(loc.local, None);
        begun.map_or(0, |(seq, ids)| self.clear_ids(loc, &ids, seq))
    }

    /// Removes, a batch per lock hold, those of `ids` still holding items of the bucket with a
    /// seq below `below`.
    fn clear_ids(&self, loc: Loc, ids: &[u32], below: u64) -> usize {
        ids.chunks(REMOVE_BATCH)
            .map(|batch| self.lock(loc.part).clear_some(loc.local, batch, below))
            .sum()
    }

    /// Installs a change made on another node (read from its change log, or replicated),
    /// keeping its seq, hash, flags and absolute expiry. Returns `Ok(true)` if it was
    /// applied, `Ok(false)` if it was already reflected.
    ///
    /// **A bucket's changes must be applied in seq order**: a change whose seq is not above
    /// the bucket's counter is ignored, so duplicates and re-reads of a range already applied
    /// do nothing, and a set replayed after a newer delete cannot bring the key back. An
    /// applied change raises the bucket's counter to its seq. A [`Change::Set`] replaces the
    /// key's item; [`Change::Delete`] removes it; [`Change::Touch`] gives it the new expiry
    /// and seq (nothing if absent); [`Change::Clear`] removes every item of the bucket with a
    /// lower seq, a few hundred per lock hold. A set or touch whose expiry has passed removes
    /// the key. Works on hidden and visible buckets; the change is logged if the bucket keeps
    /// a log. For a snapshot's items (any seq order), use [`Store::insert_item`] first.
    ///
    /// The bucket's seqs must all come from the source while it applies: do not write to it
    /// locally, and do not keep a change log on it while it can evict (a visible replica short
    /// of memory): an eviction in a logged bucket takes a local seq, and the source's changes
    /// at or below that seq would then be ignored. Hidden buckets are never evicted.
    ///
    /// # Errors
    ///
    /// Key and value size errors, [`StoreError::OutOfMemory`] (the change was not applied
    /// and may be retried), [`StoreError::NoSuchBucket`] (a clear of a bucket out of range).
    pub fn apply(&self, change: &Change) -> Result<bool, StoreError> {
        if let Change::Clear { bucket, seq } = *change {
            if bucket >= self.buckets() {
                return Err(StoreError::NoSuchBucket);
            }
            let loc = self.bucket_loc(bucket, 0);
            let begun = self.lock(loc.part).begin_clear(loc.local, Some(seq));
            return Ok(begun
                .map(|(seq, ids)| self.clear_ids(loc, &ids, seq))
                .is_some());
        }
        let key = change.key().unwrap_or_default();
        self.check_key(key)?;
        if let Change::Set(item) = change {
            self.check_value(&item.value)?;
        }
        let loc = self.locate(key);
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall();
        self.lock(loc.part).apply(loc, change, now, wall)
    }

    /// Starts (or joins) the change log of `bucket` for one more reader. Returns the seq
    /// above which the log holds every change: take the bucket's snapshot after this call
    /// (its [`BucketSnapshot::start_seq`] is at least this), then read
    /// [`Store::changes_since`] the snapshot's start. Call [`Store::stop_change_log`] once
    /// per start; the last stop frees the log.
    ///
    /// # Errors
    ///
    /// [`ChangeLogError::Off`] when [`StoreConfig::change_log_bytes`] is 0,
    /// [`ChangeLogError::NoSuchBucket`].
    pub fn start_change_log(&self, bucket: u32) -> Result<u64, ChangeLogError> {
        if self.inner.config.change_log_bytes == 0 {
            return Err(ChangeLogError::Off);
        }
        if bucket >= self.buckets() {
            return Err(ChangeLogError::NoSuchBucket { bucket });
        }
        let loc = self.bucket_loc(bucket, 0);
        Ok(self.lock(loc.part).start_log(loc.local))
    }

    /// One reader of `bucket`'s change log less; the last one frees the log.
    pub fn stop_change_log(&self, bucket: u32) {
        if bucket < self.buckets() {
            let loc = self.bucket_loc(bucket, 0);
            self.lock(loc.part).stop_log(loc.local);
        }
    }

    /// The changes of `bucket` after seq `since`, at most `max` (at least 1) of them, in seq
    /// order, under one lock hold. Each logged key comes with its current state: [`Change::Set`] with the
    /// item if that entry is the key's latest change, [`Change::Delete`] if the key is gone,
    /// nothing if a later change of the key supersedes the entry; a flush or
    /// [`Store::remove_bucket`] is a [`Change::Clear`]. Applying the batches to a copy made
    /// from a snapshot that started at `since` gives the bucket's current content once
    /// [`ChangeBatch::through`] reaches the bucket's seq.
    ///
    /// # Errors
    ///
    /// [`ChangeLogError::Behind`] when changes after `since` were dropped for the cap (or
    /// the log started later): start again from a snapshot. Never a silent gap.
    /// [`ChangeLogError::NotKept`], [`ChangeLogError::Ahead`],
    /// [`ChangeLogError::NoSuchBucket`].
    pub fn changes_since(
        &self,
        bucket: u32,
        since: u64,
        max: usize,
    ) -> Result<ChangeBatch, ChangeLogError> {
        if bucket >= self.buckets() {
            return Err(ChangeLogError::NoSuchBucket { bucket });
        }
        let loc = self.bucket_loc(bucket, 0);
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall();
        self.lock(loc.part)
            .changes_since(loc.local, bucket, since, max, now, wall)
    }

    /// Hides `bucket`: from now on client requests miss ([`Store::get`]) or are refused
    /// ([`StoreError::Hidden`] for writes), its items are not evicted and not counted in
    /// [`Store::stats`], and `flush_all` leaves it alone; [`Store::apply`] and
    /// [`Store::insert_item`] fill it. Returns false if it was hidden already (or out of
    /// range).
    pub fn hide_bucket(&self, bucket: u32) -> bool {
        if bucket >= self.buckets() {
            return false;
        }
        let loc = self.bucket_loc(bucket, 0);
        self.lock(loc.part).set_hidden(loc.local, true)
    }

    /// Makes a hidden bucket visible, all at once (one lock hold). Returns false if it was
    /// visible already (or out of range).
    pub fn show_bucket(&self, bucket: u32) -> bool {
        if bucket >= self.buckets() {
            return false;
        }
        let loc = self.bucket_loc(bucket, 0);
        self.lock(loc.part).set_hidden(loc.local, false)
    }

    /// Whether `bucket` is hidden.
    pub fn is_bucket_hidden(&self, bucket: u32) -> bool {
        if bucket >= self.buckets() {
            return false;
        }
        let loc = self.bucket_loc(bucket, 0);
        self.lock(loc.part).is_hidden(loc.local)
    }

    /// Drops `bucket`: it is hidden at once (first lock hold), its change log is stopped
    /// (readers get [`ChangeLogError::NotKept`]) and its sequence counter reset to 0 (a later
    /// copy brings the source's); then its items are freed a few hundred per lock hold, so
    /// requests to other buckets are not stalled. It stays hidden and empty: call
    /// [`Store::show_bucket`] to serve it again. Returns the number of items freed. Do not
    /// fill the bucket while this runs.
    pub fn drop_bucket(&self, bucket: u32) -> usize {
        if bucket >= self.buckets() {
            return 0;
        }
        let loc = self.bucket_loc(bucket, 0);
        self.lock(loc.part).begin_drop(loc.local);
        let mut total = 0;
        loop {
            let n = self.lock(loc.part).remove_some(loc.local, REMOVE_BATCH);
            total += n;
            if n == 0 {
                return total;
            }
        }
    }

    /// Stores an item of a snapshot or a savefile (any seq order), keeping its hash, seq and
    /// flags, unless the item present under its key has a higher seq. `expires_at` (unix
    /// seconds) becomes a TTL from the current wall-clock time; an item already expired is
    /// dropped (and removes an older local copy of the key), returning `Ok`. The bucket's
    /// sequence counter is raised to at least the item's seq. Works on hidden buckets. Load
    /// a snapshot into an empty (or dropped) bucket, before applying the change log.
    ///
    /// # Errors
    ///
    /// Key and value size errors, [`StoreError::OutOfMemory`],
    /// [`StoreError::ChangeLogActive`] if the bucket keeps a change log.
    pub fn insert_item(&self, item: &ItemRecord<'_>) -> Result<(), StoreError> {
        self.check_key(item.key)?;
        self.check_value(item.value)?;
        let loc = self.locate(item.key);
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
