//! One lock partition: the slab classes, bucket indexes, CLOCK hands and counters of the
//! buckets `b` with `b % partitions == p`.
//!
//! Everything here runs under the partition's mutex, held by [`super::Store`]. This module
//! owns the item lifecycle (write, lookup with lazy expiry, removal), eviction, page
//! rebalancing between classes, and the expiry crawler's steps. It does not hash values or
//! validate keys; the store does that before taking the lock.
//!
//! # Eviction (CLOCK)
//!
//! Each class has a hand that sweeps its chunks page by page, in the order of the class's
//! page list. Reads set a reference bit in the item's status byte. When the class needs a
//! chunk and no free page is left, the hand advances: an expired item is reclaimed (counted
//! as an expiration), an item with the bit set gets it cleared and is passed over, the first
//! item without it is evicted. This approximates LRU within a class at the cost of one bit
//! and no list maintenance on reads, as long as every item, read or written, is met by the
//! hand only after a full sweep:
//!
//! - an item written into the chunk the hand just freed, or into a new page (which joins the
//!   class just behind the hand), is the last the hand reaches;
//! - an item written into any other free chunk (freed by a delete, an overwrite, or a chained
//!   item whose chunks were spread over the class) may be just ahead of the hand, so it is
//!   written with the reference bit set: the hand passes it over once;
//! - a page leaving the class leaves the hand where it was among the other pages.
//!
//! So an item is evicted only after the hand swept the whole class since it was last read
//! or written, and never before an older item that nobody read.
//!
//! # Page rebalancing
//!
//! The partition counts its writes (the *write clock*), and every page carries the clock of
//! the last write of an item or part of one into it (its *stamp*). A class's *oldest page*
//! is the one with the oldest stamp: everything in it is at least that old, wherever the
//! hand is and however chained items are spread over the class, so it is the page the class
//! gives up when another class takes one (found in amortised O(1), see
//! [`Slab::oldest_page`]). When a class must evict and no free page is left:
//!
//! 1. a class with no page at all takes one: the oldest page of all the other classes, else
//!    a page of the class with the most pages;
//! 2. a class whose own oldest page is less than half as old as the oldest page of another
//!    class takes that page instead of evicting: memory goes where items are replaced
//!    fastest, so items of every size live about as long (a global LRU, within a factor of
//!    2), and a shift in value sizes moves memory to the new sizes at once instead of making
//!    them evict each other ("slab calcification"). This holds for a class's only page too:
//!    a class no longer written to keeps no page that the classes written now need (if it is
//!    written again, rule 1 gives it a page back);
//! 3. a class that cannot free enough chunks by evicting its own items (a large chain) takes
//!    a page from the class with the most pages.
//!
//! Moving a page evicts the items in it (counted as evictions). Items are never moved, only
//! evicted, so ids held by a snapshot stay meaningful.
//!
//! # Hidden buckets and change logs
//!
//! Items of hidden buckets are never evicted: the CLOCK hand passes over them and a page
//! holding one is not moved to another class (both checks run only while the partition has
//! a hidden bucket). Every change of a bucket that keeps a change log is recorded in it
//! here, under the same lock hold that makes the change; an eviction in such a bucket takes
//! a seq and is logged as a removal (expiry is not logged: expiry times are absolute).

use std::sync::Arc;

use shoal_proto::hash::{bucket_of_hash, key_hash, value_hash, ValueHasher};

use super::changelog::{Change, ChangeBatch, ChangeLog, ChangeLogError};
use super::error::StoreError;
use super::index::{table_hash, BucketIndex};
use super::item::{
    expiry_for, key_of, rd_u32, stale_hash, wr_u32, write_atime, write_expiry, write_hash,
    write_seq, Header, ItemRecord, ItemRef, OwnedItem, PartsCursor, CONT_HEADER, OFF_CONT_HEAD,
    OFF_CONT_NEXT, OFF_HEAD_NEXT, ST_FETCHED, ST_HEAD, ST_REF, ST_STALE, ST_USED, ST_WON,
};
use super::slab::{ChunkId, Class, Geometry, PagePool, Slab, NONE};
use super::stats::{BucketStats, StoreStats};
use super::{MetaGet, MetaIncr, MetaSeen, SetMode, WriteOk};

/// Where a key lives: partition-local bucket index and table probe hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loc {
    pub part: usize,
    pub local: usize,
    pub th: u64,
}

/// Event counters of a partition.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub crawler_reclaimed: u64,
    pub pages_moved: u64,
}

/// Crawler position: class, position in the class's page list, slot.
#[derive(Debug, Default, Clone, Copy)]
struct CrawlCursor {
    class: usize,
    pos: usize,
    slot: u32,
}

/// Why an item is being removed (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Evicted,
    Expired,
}

/// Largest scratch buffer kept between appends, in bytes.
const SCRATCH_KEEP: usize = 64 << 10;

/// The state behind one partition mutex.
pub(crate) struct Partition {
    slab: Slab,
    buckets: Vec<BucketIndex>,
    pool: Arc<PagePool>,
    /// The store's bucket count (for `shoal_proto`'s bucket function).
    bucket_count: u32,
    partitions: u32,
    max_value: usize,
    counters: Counters,
    crawl: CrawlCursor,
    /// Reused copy of an old value for append/prepend, so they do not allocate per call.
    scratch: Vec<u8>,
    /// Number of hidden buckets; eviction checks bucket membership only when it is not 0.
    hidden: usize,
    /// Byte cap of each bucket's change log.
    log_cap: usize,
    /// The write clock: items written into this partition, ever (see the module docs).
    tick: u64,
}

impl Partition {
    pub(crate) fn new(
        geo: Arc<Geometry>,
        pool: Arc<PagePool>,
        buckets: u32,
        partitions: u32,
        max_value: usize,
        log_cap: usize,
    ) -> Self {
        let local = (buckets / partitions) as usize;
        Self {
            slab: Slab::new(geo),
            buckets: (0..local).map(|_| BucketIndex::default()).collect(),
            pool,
            bucket_count: buckets,
            partitions,
            max_value,
            counters: Counters::default(),
            crawl: CrawlCursor::default(),
            scratch: Vec::new(),
            hidden: 0,
            log_cap,
            tick: 0,
        }
    }

    /// The slab, for building [`ItemRef`]s.
    pub(crate) fn slab(&self) -> &Slab {
        &self.slab
    }

    /// Finds a live item, reclaiming it if it has expired.
    fn lookup(&mut self, loc: Loc, key: &[u8], now: u32) -> Option<ChunkId> {
        let id = self.buckets[loc.local].find(&self.slab, loc.th, key)?;
        if Header::read(self.slab.chunk(id)).expired(now) {
            self.remove_item(loc.local, loc.th, id, Some(Reason::Expired));
            return None;
        }
        Some(id)
    }

    /// Unindexes and frees an item whose bucket is known.
    fn remove_item(&mut self, local: usize, th: u64, id: ChunkId, reason: Option<Reason>) {
        let removed = self.buckets[local].remove(th, id);
        debug_assert!(removed, "item {id} was not indexed");
        let class = self.slab.class_of(id);
        let chunks = self.slab.free_chain(id);
        let bucket = &mut self.buckets[local];
        bucket.items -= 1;
        bucket.bytes -= u64::from(chunks) * self.slab.classes[class].size as u64;
        match reason {
            Some(Reason::Evicted) => {
                self.counters.evictions += 1;
                self.slab.classes[class].evictions += 1;
            }
            Some(Reason::Expired) => self.counters.expirations += 1,
            None => {}
        }
    }

    /// Unindexes and frees an item found by walking the slab (bucket unknown). An eviction
    /// in a bucket that keeps a change log takes a seq and is logged.
    fn remove_by_id(&mut self, id: ChunkId, reason: Reason) {
        let key = key_of(self.slab.chunk(id));
        let kh = key_hash(key);
        let local = self.local_of_hash(kh);
        let bucket = &mut self.buckets[local];
        if let (Reason::Evicted, Some(log)) = (reason, bucket.log.as_deref_mut()) {
            bucket.seq += 1;
            log.push(bucket.seq, key);
        }
        self.remove_item(local, table_hash(kh), id, Some(reason));
    }

    /// The partition-local bucket of a key hash.
    #[inline]
    fn local_of_hash(&self, kh: u64) -> usize {
        (bucket_of_hash(kh, self.bucket_count) / self.partitions) as usize
    }

    /// Whether the item whose head is `id` belongs to a hidden bucket.
    fn in_hidden_bucket(&self, id: ChunkId) -> bool {
        let local = self.local_of_hash(key_hash(key_of(self.slab.chunk(id))));
        self.buckets[local].hidden
    }

    /// Whether a page holds (part of) an item of a hidden bucket.
    fn page_has_hidden(&self, page: u32) -> bool {
        (0..self.slab.page(page).init).any(|slot| {
            let chunk = self.slab.chunk(self.slab.make_id(page, slot));
            if chunk[0] & ST_USED == 0 {
                return false;
            }
            let head = if chunk[0] & ST_HEAD != 0 {
                self.slab.make_id(page, slot)
            } else {
                rd_u32(chunk, OFF_CONT_HEAD)
            };
            self.in_hidden_bucket(head)
        })
    }

    /// Client requests are not served from hidden buckets.
    #[inline]
    fn check_visible(&self, loc: Loc) -> Result<(), StoreError> {
        if self.buckets[loc.local].hidden {
            Err(StoreError::Hidden)
        } else {
            Ok(())
        }
    }

    /// Reads an item for a client: lazy expiry, hit/miss counting, reference bit, optional
    /// new expiry (get-and-touch).
    pub(crate) fn get(
        &mut self,
        loc: Loc,
        key: &[u8],
        now: u32,
        touch: Option<u32>,
    ) -> Option<ChunkId> {
        if self.buckets[loc.local].hidden {
            self.counters.misses += 1;
            return None;
        }
        let Some(id) = self.lookup(loc, key, now) else {
            self.counters.misses += 1;
            return None;
        };
        self.counters.hits += 1;
        if let Some(ttl) = touch {
            self.set_expiry(loc, id, expiry_for(now, ttl));
        }
        self.mark_read(id, now);
        Some(id)
    }

    /// Marks an item as read now: CLOCK reference bit, fetched bit, last-access time.
    #[inline]
    fn mark_read(&mut self, id: ChunkId, now: u32) {
        let chunk = self.slab.chunk_mut(id);
        chunk[0] |= ST_REF | ST_FETCHED;
        write_atime(chunk, now);
    }

    /// memcached's meta get (`mg`): a read that may touch, create a stub on a miss (`N`), and
    /// hand out the right to recache (`R`, stale items). Returns the item and what the
    /// client is told about it; `None` on a miss that created nothing.
    pub(crate) fn meta_get(
        &mut self,
        loc: Loc,
        key: &[u8],
        req: &MetaGet,
        now: u32,
    ) -> Option<(ChunkId, MetaSeen)> {
        if self.buckets[loc.local].hidden {
            self.counters.misses += 1;
            return None;
        }
        let (id, created) = match self.lookup(loc, key, now) {
            Some(id) => {
                self.counters.hits += 1;
                (id, false)
            }
            None => {
                self.counters.misses += 1;
                let ttl = req.vivify?;
                self.write(
                    loc,
                    key,
                    &[],
                    value_hash(b""),
                    0,
                    expiry_for(now, ttl),
                    None,
                    now,
                )
                .ok()?;
                let id = self.buckets[loc.local].find(&self.slab, loc.th, key)?;
                (id, true)
            }
        };
        let hdr = Header::read(self.slab.chunk(id));
        let status = self.slab.chunk(id)[0];
        let seen_ttl = |expiry: u32| (expiry != 0).then(|| expiry.saturating_sub(now));
        let mut seen = MetaSeen {
            created,
            fetched: status & ST_FETCHED != 0,
            idle: now.saturating_sub(Header::atime(self.slab.chunk(id))),
            ttl: if created { None } else { seen_ttl(hdr.expiry) },
            stale: status & ST_STALE != 0,
            win_sent: status & ST_WON != 0,
            won: false,
        };
        if !created {
            if let Some(ttl) = req.touch {
                self.set_expiry(loc, id, expiry_for(now, ttl));
            }
        }
        let recache = req.recache.is_some_and(|r| {
            r > 0 && hdr.expiry != 0 && hdr.expiry < expiry_for(now, r) && !created
        });
        seen.won = created || (!seen.win_sent && (recache || seen.stale));
        if seen.won {
            self.slab.chunk_mut(id)[0] |= ST_WON;
        }
        if !req.no_update {
            self.mark_read(id, now);
        }
        Some((id, seen))
    }

    /// memcached's `md <key> I`: marks the item stale and gives it a new check-and-set token
    /// (`stale_hash` of the old one), so a writer holding the old token is refused unless it
    /// asks to write a stale value; a later reader wins the right to recache. With `ttl`, the
    /// item also gets a new TTL. Returns the change's seq.
    pub(crate) fn invalidate(
        &mut self,
        loc: Loc,
        key: &[u8],
        expected: Option<u64>,
        ttl: Option<u32>,
        now: u32,
    ) -> Result<u64, StoreError> {
        self.check_visible(loc)?;
        let id = self.lookup(loc, key, now).ok_or(StoreError::NotFound)?;
        let hdr = Header::read(self.slab.chunk(id));
        if expected.is_some_and(|h| h != hdr.hash) {
            return Err(StoreError::Exists);
        }
        let chunk = self.slab.chunk_mut(id);
        chunk[0] = (chunk[0] | ST_STALE) & !ST_WON;
        write_hash(chunk, stale_hash(hdr.hash));
        let expiry = ttl.map_or(hdr.expiry, |ttl| expiry_for(now, ttl));
        Ok(self.set_expiry(loc, id, expiry))
    }

    /// memcached's `ms <key> I C<token>`: a check-and-set that, when the token is the one the
    /// item had before it was invalidated, still stores the value but keeps it stale (with
    /// its TTL and win-token state). Returns the write and whether it was stored stale.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set_cas_or_stale(
        &mut self,
        loc: Loc,
        key: &[u8],
        value: &[u8],
        hash: u64,
        flags: u32,
        ttl: u32,
        expected: u64,
        now: u32,
    ) -> Result<(WriteOk, bool), StoreError> {
        self.check_visible(loc)?;
        let id = self.lookup(loc, key, now).ok_or(StoreError::NotFound)?;
        let hdr = Header::read(self.slab.chunk(id));
        if hdr.hash == expected {
            let ok = self.write(
                loc,
                key,
                &[value],
                hash,
                flags,
                expiry_for(now, ttl),
                None,
                now,
            )?;
            return Ok((ok, false));
        }
        let status = self.slab.chunk(id)[0];
        if status & ST_STALE == 0 || stale_hash(expected) != hdr.hash {
            return Err(StoreError::Exists);
        }
        let stale = stale_hash(hash);
        let ok = self.write(loc, key, &[value], stale, flags, hdr.expiry, None, now)?;
        let id = self.buckets[loc.local]
            .find(&self.slab, loc.th, key)
            .ok_or(StoreError::NotFound)?;
        self.slab.chunk_mut(id)[0] |= ST_STALE | (status & ST_WON);
        Ok((ok, true))
    }

    /// set / add / replace / check-and-set.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set(
        &mut self,
        loc: Loc,
        mode: SetMode,
        key: &[u8],
        value: &[u8],
        hash: u64,
        flags: u32,
        ttl: u32,
        now: u32,
    ) -> Result<WriteOk, StoreError> {
        self.check_visible(loc)?;
        let existing = self.lookup(loc, key, now);
        match (mode, existing) {
            (SetMode::Add, Some(_)) | (SetMode::Replace, None) => {
                return Err(StoreError::NotStored)
            }
            (SetMode::Cas(_), None) => return Err(StoreError::NotFound),
            (SetMode::Cas(expected), Some(id))
                if Header::read(self.slab.chunk(id)).hash != expected =>
            {
                return Err(StoreError::Exists);
            }
            _ => {}
        }
        let expiry = expiry_for(now, ttl);
        self.write(loc, key, &[value], hash, flags, expiry, None, now)
    }

    /// append (`front == false`) or prepend (`front == true`); flags and expiry are kept.
    /// With `expected`, only if the value hash matches ([`StoreError::Exists`] otherwise).
    pub(crate) fn concat(
        &mut self,
        loc: Loc,
        key: &[u8],
        data: &[u8],
        front: bool,
        expected: Option<u64>,
        now: u32,
    ) -> Result<WriteOk, StoreError> {
        self.check_visible(loc)?;
        let id = self.lookup(loc, key, now).ok_or(StoreError::NotStored)?;
        let hdr = Header::read(self.slab.chunk(id));
        if expected.is_some_and(|h| h != hdr.hash) {
            return Err(StoreError::Exists);
        }
        if hdr.value_len + data.len() > self.max_value {
            return Err(StoreError::TooLarge);
        }
        let mut old = std::mem::take(&mut self.scratch);
        old.clear();
        ItemRef::new(&self.slab, id, now).copy_value_into(&mut old);
        let parts: [&[u8]; 2] = if front { [data, &old] } else { [&old, data] };
        let mut hasher = ValueHasher::new();
        hasher.update(parts[0]);
        hasher.update(parts[1]);
        let result = self.write(
            loc,
            key,
            &parts,
            hasher.finish(),
            hdr.flags,
            hdr.expiry,
            None,
            now,
        );
        if old.capacity() <= SCRATCH_KEEP {
            self.scratch = old;
        }
        result
    }

    /// incr / decr on a decimal value, or create it with `create = (initial, ttl)`.
    pub(crate) fn incr(
        &mut self,
        loc: Loc,
        key: &[u8],
        delta: u64,
        decr: bool,
        create: Option<(u64, u32)>,
        now: u32,
    ) -> Result<(u64, WriteOk), StoreError> {
        let req = MetaIncr {
            delta,
            decr,
            create,
            ..MetaIncr::default()
        };
        self.meta_incr(loc, key, &req, now)
            .map(|(value, ok, _)| (value, ok))
    }

    /// incr / decr with memcached's meta-arithmetic options: a check-and-set token, a new
    /// TTL on success, creation on a miss. Also returns the TTL the item had before (`None`:
    /// never expires, or created).
    pub(crate) fn meta_incr(
        &mut self,
        loc: Loc,
        key: &[u8],
        req: &MetaIncr,
        now: u32,
    ) -> Result<(u64, WriteOk, MetaSeen), StoreError> {
        let MetaIncr {
            delta,
            decr,
            create,
            expected,
            touch,
        } = *req;
        self.check_visible(loc)?;
        let mut buf = [0u8; 20];
        let Some(id) = self.lookup(loc, key, now) else {
            let (initial, ttl) = create.ok_or(StoreError::NotFound)?;
            let digits = format_u64(initial, &mut buf);
            let hash = value_hash(digits);
            let ok = self.write(
                loc,
                key,
                &[digits],
                hash,
                0,
                expiry_for(now, ttl),
                None,
                now,
            )?;
            let seen = MetaSeen {
                created: true,
                ..MetaSeen::default()
            };
            return Ok((initial, ok, seen));
        };
        let item = ItemRef::new(&self.slab, id, now);
        if expected.is_some_and(|h| h != item.hash()) {
            return Err(StoreError::Exists);
        }
        let seen = MetaSeen {
            ttl: item.ttl_remaining(),
            ..MetaSeen::default()
        };
        let len = item.value_len();
        if len == 0 || len > 20 {
            return Err(StoreError::NonNumeric);
        }
        let mut at = 0;
        for part in item.value_chunks() {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let current = parse_u64(&buf[..len]).ok_or(StoreError::NonNumeric)?;
        let (flags, expiry) = (item.flags(), Header::read(self.slab.chunk(id)).expiry);
        let new = if decr {
            current.saturating_sub(delta)
        } else {
            current.wrapping_add(delta)
        };
        let digits = format_u64(new, &mut buf);
        let hash = value_hash(digits);
        let expiry = touch.map_or(expiry, |ttl| expiry_for(now, ttl));
        let ok = self.write(loc, key, &[digits], hash, flags, expiry, None, now)?;
        Ok((new, ok, seen))
    }

    /// Deletes a key, optionally only if its value hash matches; returns the delete's seq.
    pub(crate) fn delete(
        &mut self,
        loc: Loc,
        key: &[u8],
        expected: Option<u64>,
        now: u32,
    ) -> Result<u64, StoreError> {
        self.check_visible(loc)?;
        let id = self.lookup(loc, key, now).ok_or(StoreError::NotFound)?;
        if expected.is_some_and(|h| h != Header::read(self.slab.chunk(id)).hash) {
            return Err(StoreError::Exists);
        }
        self.remove_item(loc.local, loc.th, id, None);
        let seq = self.buckets[loc.local].seq + 1;
        self.note_change(loc.local, seq, key);
        Ok(seq)
    }

    /// Sets a new TTL on a live item; returns the touch's seq.
    pub(crate) fn touch(
        &mut self,
        loc: Loc,
        key: &[u8],
        ttl: u32,
        now: u32,
    ) -> Result<u64, StoreError> {
        self.check_visible(loc)?;
        let id = self.lookup(loc, key, now).ok_or(StoreError::NotFound)?;
        self.mark_read(id, now);
        Ok(self.set_expiry(loc, id, expiry_for(now, ttl)))
    }

    /// Gives a live item a new expiry as a change of its own: the item takes the bucket's
    /// next seq. Returns that seq.
    fn set_expiry(&mut self, loc: Loc, id: ChunkId, expiry: u32) -> u64 {
        let seq = self.buckets[loc.local].seq + 1;
        self.set_expiry_seq(loc.local, id, expiry, seq);
        seq
    }

    /// Writes a new expiry and seq into a live item, and records the change.
    fn set_expiry_seq(&mut self, local: usize, id: ChunkId, expiry: u32, seq: u64) {
        let chunk = self.slab.chunk_mut(id);
        write_expiry(chunk, expiry);
        write_seq(chunk, seq);
        let bucket = &mut self.buckets[local];
        bucket.seq = bucket.seq.max(seq);
        if let Some(log) = bucket.log.as_deref_mut() {
            log.push(seq, key_of(self.slab.chunk(id)));
        }
    }

    /// Records a change of `key` (empty: of the whole bucket) at `seq`: raises the bucket's
    /// counter to it and logs it if the bucket keeps a log.
    fn note_change(&mut self, local: usize, seq: u64, key: &[u8]) {
        let bucket = &mut self.buckets[local];
        bucket.seq = bucket.seq.max(seq);
        if let Some(log) = bucket.log.as_deref_mut() {
            log.push(seq, key);
        }
    }

    /// Stores an item received from elsewhere, keeping its hash and seq, unless the item
    /// present under its key has a higher seq.
    pub(crate) fn insert(
        &mut self,
        loc: Loc,
        item: &ItemRecord<'_>,
        now: u32,
        wall: u64,
    ) -> Result<(), StoreError> {
        if self.buckets[loc.local].log.is_some() {
            return Err(StoreError::ChangeLogActive);
        }
        let present = self.lookup(loc, item.key, now);
        if present.is_some_and(|id| Header::read(self.slab.chunk(id)).seq > item.seq) {
            return Ok(());
        }
        let Some(expiry) = monotonic_expiry(item.expires_at, now, wall) else {
            // Already expired: the received version supersedes any local copy.
            if let Some(id) = present {
                self.remove_item(loc.local, loc.th, id, None);
            }
            let bucket = &mut self.buckets[loc.local];
            bucket.seq = bucket.seq.max(item.seq);
            return Ok(());
        };
        self.write(
            loc,
            item.key,
            &[item.value],
            item.hash,
            item.flags,
            expiry,
            Some(item.seq),
            now,
        )
        .map(|_| ())
    }

    /// Writes a new version of `key` (value given in parts) and indexes it, replacing and
    /// freeing the old version. `seq` is the received seq for inserted items, else the next.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        loc: Loc,
        key: &[u8],
        parts: &[&[u8]],
        hash: u64,
        flags: u32,
        expiry: u32,
        seq: Option<u64>,
        now: u32,
    ) -> Result<WriteOk, StoreError> {
        let value_len: usize = parts.iter().map(|p| p.len()).sum();
        let place = self.slab.geometry().placement(key.len(), value_len);
        self.ensure_free(place.class, place.chunks, now)?;
        // The seq is taken only once the write succeeds (evictions above may take some).
        let seq = seq.unwrap_or(self.buckets[loc.local].seq + 1);
        let hdr = Header {
            key_len: key.len(),
            value_len,
            flags,
            expiry,
            hash,
            seq,
            chained: place.chunks > 1,
        };
        let (head, recycled) = self
            .slab
            .alloc_placed(place.class)
            .ok_or(StoreError::OutOfMemory)?;
        self.tick += 1;
        let tick = self.tick;
        self.slab.stamp(self.slab.page_of(head), tick);
        // A chunk freed anywhere in the class may be just ahead of the hand (module docs).
        let ahead = recycled && !self.slab.hand_just_passed(place.class, head);
        let mut cursor = PartsCursor::new(parts);
        let chunk = self.slab.chunk_mut(head);
        hdr.write(chunk);
        if ahead {
            chunk[0] |= ST_REF;
        }
        write_atime(chunk, now);
        let key_off = hdr.key_offset();
        chunk[key_off..key_off + key.len()].copy_from_slice(key);
        if hdr.chained {
            wr_u32(chunk, OFF_HEAD_NEXT, NONE);
        }
        let value_off = key_off + key.len();
        let first = value_len.min(chunk.len() - value_off);
        cursor.fill(&mut chunk[value_off..value_off + first]);
        let mut remaining = value_len - first;
        let (mut prev, mut prev_link) = (head, OFF_HEAD_NEXT);
        while remaining > 0 {
            let Some(id) = self.slab.alloc(place.class) else {
                self.slab.free_chain(head);
                return Err(StoreError::OutOfMemory);
            };
            self.slab.stamp(self.slab.page_of(id), tick);
            let chunk = self.slab.chunk_mut(id);
            chunk[0] = ST_USED;
            wr_u32(chunk, OFF_CONT_HEAD, head);
            wr_u32(chunk, OFF_CONT_NEXT, NONE);
            let n = remaining.min(chunk.len() - CONT_HEADER);
            cursor.fill(&mut chunk[CONT_HEADER..CONT_HEADER + n]);
            remaining -= n;
            wr_u32(self.slab.chunk_mut(prev), prev_link, id);
            (prev, prev_link) = (id, OFF_CONT_NEXT);
        }
        let size = self.slab.classes[place.class].size as u64;
        let old = self.buckets[loc.local].upsert(&self.slab, loc.th, key, head);
        let freed = match old {
            Some(old) => {
                let class = self.slab.class_of(old);
                u64::from(self.slab.free_chain(old)) * self.slab.classes[class].size as u64
            }
            None => 0,
        };
        let bucket = &mut self.buckets[loc.local];
        if old.is_none() {
            bucket.items += 1;
        }
        bucket.bytes = bucket.bytes + u64::from(place.chunks) * size - freed;
        bucket.seq = bucket.seq.max(seq);
        if let Some(log) = bucket.log.as_deref_mut() {
            log.push(seq, key);
        }
        Ok(WriteOk { hash, seq })
    }

    /// Makes sure `class` has `n` free chunks: pool page, rebalancing, or eviction.
    fn ensure_free(&mut self, class: usize, n: u32, now: u32) -> Result<(), StoreError> {
        // Every round adds a page to `class` or frees at least one chunk, so this terminates;
        // the guard only turns a bug into an error instead of a hang.
        for _ in 0..(1u64 << 32) {
            if self.slab.free_count(class) >= n {
                return Ok(());
            }
            if let Some(page) = self.pool.take(self.slab.page_count()) {
                self.slab.add_page(page, class, self.tick);
                continue;
            }
            let victim = if self.slab.classes[class].pages.is_empty() {
                self.older_class(class, 0)
                    .or_else(|| self.largest_other_class(class))
            } else {
                let own = self.slab.oldest_page(class).map_or(0, |p| self.age(p));
                self.older_class(class, own.saturating_mul(2))
            };
            if victim.is_some_and(|victim| self.move_page(victim, class, now)) {
                continue;
            }
            if self.evict_one(class, now) {
                continue;
            }
            match self.largest_other_class(class) {
                Some(victim) if self.move_page(victim, class, now) => {}
                _ => return Err(StoreError::OutOfMemory),
            }
        }
        Err(StoreError::OutOfMemory)
    }

    /// The class other than `class` with the most pages (ties: most free chunks).
    fn largest_other_class(&self, class: usize) -> Option<usize> {
        (0..self.slab.classes.len())
            .filter(|&v| v != class && !self.slab.classes[v].pages.is_empty())
            .max_by_key(|&v| (self.slab.classes[v].pages.len(), self.slab.free_count(v)))
    }

    /// Write clock ticks since `page` was last written.
    #[inline]
    fn age(&self, page: u32) -> u64 {
        self.tick - self.slab.page(page).stamp
    }

    /// The class other than `class` whose oldest page is the oldest (a class's only page
    /// counts, unless it holds an item of a hidden bucket), if that page is older than
    /// `than` ticks (rules 1 and 2 of the module docs).
    fn older_class(&mut self, class: usize, than: u64) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for v in 0..self.slab.classes.len() {
            if v == class || self.slab.classes[v].pages.is_empty() {
                continue;
            }
            let Some(page) = self.slab.oldest_page(v) else {
                continue;
            };
            let age = self.age(page);
            // A class's only page holding an item of a hidden bucket cannot move (checked
            // last: it reads the page).
            let movable = |p: &Self| {
                p.hidden == 0 || p.slab.classes[v].pages.len() > 1 || !p.page_has_hidden(page)
            };
            if age > than && best.is_none_or(|(_, a)| age > a) && movable(self) {
                best = Some((v, age));
            }
        }
        best.map(|(v, _)| v)
    }

    /// Moves the oldest page of `from` (see the module docs) to `to`, evicting whatever it
    /// holds; pages holding items of hidden buckets are not moved (then the emptiest other
    /// page goes). Returns whether a page moved.
    fn move_page(&mut self, from: usize, to: usize, now: u32) -> bool {
        let oldest = self.slab.oldest_page(from);
        let movable = |p: u32| self.hidden == 0 || !self.page_has_hidden(p);
        let next = oldest.filter(|&p| movable(p));
        let Some(page) = next.or_else(|| {
            self.slab.classes[from]
                .pages
                .iter()
                .copied()
                .filter(|&p| movable(p))
                .min_by_key(|&p| self.slab.page(p).used)
        }) else {
            return false;
        };
        for slot in 0..self.slab.page(page).init {
            let id = self.slab.make_id(page, slot);
            let chunk = self.slab.chunk(id);
            if chunk[0] & ST_USED == 0 {
                continue;
            }
            let head = if chunk[0] & ST_HEAD != 0 {
                id
            } else {
                rd_u32(chunk, OFF_CONT_HEAD)
            };
            let reason = if Header::read(self.slab.chunk(head)).expired(now) {
                Reason::Expired
            } else {
                Reason::Evicted
            };
            self.remove_by_id(head, reason);
        }
        self.slab.move_page(page, to, self.tick);
        self.slab.classes[to].pages_gained += 1;
        self.counters.pages_moved += 1;
        true
    }

    /// Advances the CLOCK hand of `class` until one item is evicted or reclaimed.
    fn evict_one(&mut self, class: usize, now: u32) -> bool {
        let c = &self.slab.classes[class];
        let steps = 2 * (c.pages.len() as u64 * u64::from(c.per_page) + c.pages.len() as u64) + 2;
        for _ in 0..steps {
            let c = &mut self.slab.classes[class];
            if c.pages.is_empty() {
                return false;
            }
            if c.hand_pos >= c.pages.len() {
                c.hand_pos = 0;
                c.hand_slot = 0;
            }
            let (page, slot) = (c.pages[c.hand_pos], c.hand_slot);
            if slot >= self.slab.page(page).init {
                let c = &mut self.slab.classes[class];
                c.hand_pos += 1;
                c.hand_slot = 0;
                continue;
            }
            self.slab.classes[class].hand_slot += 1;
            let id = self.slab.make_id(page, slot);
            let chunk = self.slab.chunk_mut(id);
            if chunk[0] & (ST_USED | ST_HEAD) != ST_USED | ST_HEAD {
                continue;
            }
            if Header::read(chunk).expired(now) {
                self.remove_by_id(id, Reason::Expired);
                return true;
            }
            if self.hidden != 0 && self.in_hidden_bucket(id) {
                continue;
            }
            let chunk = self.slab.chunk_mut(id);
            if chunk[0] & ST_REF != 0 {
                chunk[0] &= !ST_REF;
                continue;
            }
            self.remove_by_id(id, Reason::Evicted);
            return true;
        }
        false
    }

    /// Examines up to `budget` chunks from the crawler cursor and reclaims expired items.
    /// Returns (chunks examined, items reclaimed, whether the cursor wrapped around).
    pub(crate) fn crawl(&mut self, budget: usize, now: u32) -> (usize, usize, bool) {
        let (mut examined, mut reclaimed) = (0, 0);
        let classes = self.slab.classes.len();
        let mut cur = self.crawl;
        let mut wrapped = false;
        let mut idle = 0;
        while examined < budget && idle <= classes {
            let c = &self.slab.classes[cur.class];
            if cur.pos >= c.pages.len() {
                cur = CrawlCursor {
                    class: (cur.class + 1) % classes,
                    pos: 0,
                    slot: 0,
                };
                idle += 1;
                if cur.class == 0 {
                    wrapped = true;
                    break;
                }
                continue;
            }
            let page = c.pages[cur.pos];
            if cur.slot >= self.slab.page(page).init {
                cur.pos += 1;
                cur.slot = 0;
                continue;
            }
            idle = 0;
            let id = self.slab.make_id(page, cur.slot);
            cur.slot += 1;
            examined += 1;
            let chunk = self.slab.chunk(id);
            if chunk[0] & (ST_USED | ST_HEAD) == ST_USED | ST_HEAD
                && Header::read(chunk).expired(now)
            {
                self.remove_by_id(id, Reason::Expired);
                reclaimed += 1;
            }
        }
        self.crawl = cur;
        self.counters.crawler_reclaimed += reclaimed as u64;
        (examined, reclaimed, wrapped)
    }

    /// Removes up to `max` items of a bucket; returns how many were removed.
    pub(crate) fn remove_some(&mut self, local: usize, max: usize) -> usize {
        let mut ids = [0u32; 256];
        let max = max.min(ids.len());
        let n = self.buckets[local].some_ids(&mut ids[..max]);
        for &id in &ids[..n] {
            let th = table_hash(key_hash(key_of(self.slab.chunk(id))));
            self.remove_item(local, th, id, None);
        }
        n
    }

    /// Removes every item of every visible bucket; each of them takes a seq (logged as a
    /// clear). Without hidden buckets all pages go back to the pool; with some, their items
    /// stay and the others are removed one by one (pages stay with the partition).
    pub(crate) fn flush(&mut self) {
        if self.hidden == 0 {
            for bucket in &mut self.buckets {
                bucket.reset();
            }
            self.pool.give_back(self.slab.drain_pages());
            self.crawl = CrawlCursor::default();
        } else {
            for local in 0..self.buckets.len() {
                if !self.buckets[local].hidden {
                    while self.remove_some(local, usize::MAX) > 0 {}
                }
            }
        }
        for local in 0..self.buckets.len() {
            if !self.buckets[local].hidden {
                let seq = self.buckets[local].seq + 1;
                self.note_change(local, seq, &[]);
            }
        }
    }

    /// Starts clearing a bucket: the clear takes `seq` (a new one if `None`) and is logged.
    /// Returns the clear's seq and the ids to hand to [`Self::clear_some`]; `None` if `seq`
    /// is not above the bucket's counter (an applied clear already reflected).
    pub(crate) fn begin_clear(
        &mut self,
        local: usize,
        seq: Option<u64>,
    ) -> Option<(u64, Vec<ChunkId>)> {
        let current = self.buckets[local].seq;
        let seq = match seq {
            Some(seq) if seq <= current => return None,
            Some(seq) => seq,
            None => current + 1,
        };
        self.note_change(local, seq, &[]);
        Some((seq, self.buckets[local].all_ids()))
    }

    /// Removes those of `ids` that are still live items of the bucket with a seq below
    /// `below`; returns how many.
    pub(crate) fn clear_some(&mut self, local: usize, ids: &[ChunkId], below: u64) -> usize {
        let mut n = 0;
        for &id in ids {
            let Some(chunk) = self.slab.checked_head(id) else {
                continue;
            };
            if Header::read(chunk).seq >= below {
                continue;
            }
            let key = key_of(chunk);
            let kh = key_hash(key);
            // Every item in this slab belongs to one of this partition's buckets.
            if self.local_of_hash(kh) != local {
                continue;
            }
            let th = table_hash(kh);
            if self.buckets[local].find(&self.slab, th, key) == Some(id) {
                self.remove_item(local, th, id, None);
                n += 1;
            }
        }
        n
    }

    /// Raises a bucket's sequence counter to at least `seq`.
    pub(crate) fn raise_seq(&mut self, local: usize, seq: u64) {
        let bucket = &mut self.buckets[local];
        bucket.seq = bucket.seq.max(seq);
    }

    /// Installs a change of one key made elsewhere, if its seq is above the bucket's
    /// counter (see [`super::Store::apply`]). Returns whether it was applied.
    pub(crate) fn apply(
        &mut self,
        loc: Loc,
        change: &Change,
        now: u32,
        wall: u64,
    ) -> Result<bool, StoreError> {
        let seq = change.seq();
        if seq <= self.buckets[loc.local].seq {
            return Ok(false);
        }
        let (key, expires_at) = match change {
            Change::Set(item) => (&item.key[..], item.expires_at),
            Change::Touch {
                key, expires_at, ..
            } => (&key[..], *expires_at),
            Change::Delete { key, .. } => (&key[..], 1),
            Change::Clear { .. } => return Ok(false),
        };
        let present = self.lookup(loc, key, now);
        let expiry = match change {
            Change::Delete { .. } => None,
            _ => monotonic_expiry(expires_at, now, wall),
        };
        match (change, expiry, present) {
            (Change::Set(item), Some(expiry), _) => {
                self.write(
                    loc,
                    key,
                    &[&item.value],
                    item.hash,
                    item.flags,
                    expiry,
                    Some(seq),
                    now,
                )?;
            }
            (Change::Touch { .. }, Some(expiry), Some(id)) => {
                self.set_expiry_seq(loc.local, id, expiry, seq);
            }
            (Change::Touch { .. }, Some(_), None) => self.note_change(loc.local, seq, key),
            // A delete, or a set or touch that has already expired: the key is gone.
            (_, _, present) => {
                if let Some(id) = present {
                    self.remove_item(loc.local, loc.th, id, None);
                }
                self.note_change(loc.local, seq, key);
            }
        }
        Ok(true)
    }

    /// Hides (`true`) or shows a bucket; returns whether that changed anything.
    pub(crate) fn set_hidden(&mut self, local: usize, hidden: bool) -> bool {
        let bucket = &mut self.buckets[local];
        if bucket.hidden == hidden {
            return false;
        }
        bucket.hidden = hidden;
        if hidden {
            self.hidden += 1;
        } else {
            self.hidden -= 1;
        }
        true
    }

    /// Whether a bucket is hidden.
    pub(crate) fn is_hidden(&self, local: usize) -> bool {
        self.buckets[local].hidden
    }

    /// First step of a drop: the bucket is hidden, stops its change log and forgets its
    /// sequence counter (a later copy brings the source's).
    pub(crate) fn begin_drop(&mut self, local: usize) {
        self.set_hidden(local, true);
        let bucket = &mut self.buckets[local];
        bucket.log = None;
        bucket.seq = 0;
    }

    /// Adds a reader to a bucket's change log, starting the log if it has none. Returns the
    /// log's floor: it holds every change above it.
    pub(crate) fn start_log(&mut self, local: usize) -> u64 {
        let cap = self.log_cap;
        let bucket = &mut self.buckets[local];
        match bucket.log.as_deref_mut() {
            Some(log) => {
                log.readers += 1;
                log.floor()
            }
            None => {
                bucket.log = Some(Box::new(ChangeLog::new(cap, bucket.seq)));
                bucket.seq
            }
        }
    }

    /// Removes a reader from a bucket's change log; the last one frees it.
    pub(crate) fn stop_log(&mut self, local: usize) {
        let bucket = &mut self.buckets[local];
        if let Some(log) = bucket.log.as_deref_mut() {
            log.readers = log.readers.saturating_sub(1);
            if log.readers == 0 {
                bucket.log = None;
            }
        }
    }

    /// Reads the changes of a bucket after `since`, at most `max` of them, with their
    /// current values (see [`super::changelog`]).
    pub(crate) fn changes_since(
        &self,
        local: usize,
        bucket: u32,
        since: u64,
        max: usize,
        now: u32,
        wall: u64,
    ) -> Result<ChangeBatch, ChangeLogError> {
        let b = &self.buckets[local];
        let log = b.log.as_deref().ok_or(ChangeLogError::NotKept { bucket })?;
        if since < log.floor() {
            return Err(ChangeLogError::Behind {
                bucket,
                since,
                floor: log.floor(),
            });
        }
        if since > b.seq {
            return Err(ChangeLogError::Ahead {
                bucket,
                since,
                seq: b.seq,
            });
        }
        // At least one change per call, so `through` always moves when there are changes.
        let max = max.max(1);
        let mut changes = Vec::new();
        let mut through = b.seq;
        let mut examined = since;
        log.for_each_after(since, |seq, key| {
            if changes.len() >= max {
                through = examined;
                return false;
            }
            examined = seq;
            if key.is_empty() {
                changes.push(Change::Clear { bucket, seq });
                return true;
            }
            let found = b.find(&self.slab, table_hash(key_hash(key)), key);
            match found.map(|id| (id, Header::read(self.slab.chunk(id)))) {
                Some((_, hdr)) if hdr.expired(now) => changes.push(Change::Delete {
                    key: key.to_vec(),
                    seq,
                }),
                Some((id, hdr)) if hdr.seq == seq => changes.push(Change::Set(
                    ItemRef::new(&self.slab, id, now).to_owned_item(wall),
                )),
                // A later change of the key has its own entry.
                Some(_) => {}
                None => changes.push(Change::Delete {
                    key: key.to_vec(),
                    seq,
                }),
            }
            true
        });
        Ok(ChangeBatch { changes, through })
    }

    /// The head ids of a bucket and its current seq, for a snapshot.
    pub(crate) fn snapshot_ids(&self, local: usize) -> (Vec<ChunkId>, u64) {
        (self.buckets[local].all_ids(), self.buckets[local].seq)
    }

    /// Copies out the item at `id` if it is still the live, indexed version of a key of
    /// `loc.bucket` with seq <= `max_seq`.
    pub(crate) fn export(
        &self,
        local: usize,
        bucket: u32,
        id: ChunkId,
        max_seq: u64,
        now: u32,
        wall: u64,
    ) -> Option<OwnedItem> {
        self.snapshot_item(local, bucket, id, max_seq, now)
            .map(|item| item.to_owned_item(wall))
    }

    /// The item at `id` if a snapshot of `bucket` taken at `max_seq` includes it (see
    /// [`Partition::export`]), borrowed from slab memory.
    pub(crate) fn snapshot_item(
        &self,
        local: usize,
        bucket: u32,
        id: ChunkId,
        max_seq: u64,
        now: u32,
    ) -> Option<ItemRef<'_>> {
        let chunk = self.slab.checked_head(id)?;
        let hdr = Header::read(chunk);
        if hdr.seq > max_seq || hdr.expired(now) {
            return None;
        }
        let key = key_of(chunk);
        let kh = key_hash(key);
        if bucket_of_hash(kh, self.bucket_count) != bucket {
            return None;
        }
        if self.buckets[local].find(&self.slab, table_hash(kh), key) != Some(id) {
            return None;
        }
        Some(ItemRef::new(&self.slab, id, now))
    }

    /// Accounting of one bucket.
    pub(crate) fn bucket_stats(&self, local: usize) -> BucketStats {
        let b = &self.buckets[local];
        BucketStats {
            items: b.items,
            bytes: b.bytes,
            seq: b.seq,
        }
    }

    /// Item heads in the pages of `class`.
    fn count_heads(&self, class: &Class) -> u64 {
        let mut heads = 0;
        for &page in &class.pages {
            for slot in 0..self.slab.page(page).init {
                let id = self.slab.make_id(page, slot);
                heads += u64::from(self.slab.checked_head(id).is_some());
            }
        }
        heads
    }

    /// Adds this partition's numbers to `stats`.
    pub(crate) fn add_stats(&self, stats: &mut StoreStats) {
        let c = &self.counters;
        stats.hits += c.hits;
        stats.misses += c.misses;
        stats.evictions += c.evictions;
        stats.expirations += c.expirations;
        stats.crawler_reclaimed += c.crawler_reclaimed;
        stats.pages_moved += c.pages_moved;
        for b in &self.buckets {
            if b.hidden {
                stats.hidden_items += b.items;
                stats.hidden_bytes += b.bytes;
            } else {
                stats.items += b.items;
                stats.bytes += b.bytes;
            }
            stats.index_bytes += b.table_bytes() as u64;
            if let Some(log) = b.log.as_deref() {
                stats.change_log_bytes +=
                    (log.heap_bytes() + std::mem::size_of::<ChangeLog>()) as u64;
            }
        }
        stats.overhead_bytes += (self.buckets.len() * std::mem::size_of::<BucketIndex>()
            + self.slab.page_count() * 64
            + self.slab.classes.len() * 128
            + self.scratch.capacity()) as u64;
        stats.pages_used += self.slab.page_count() as u64;
        let largest = self.slab.classes.len() - 1;
        for (i, class) in self.slab.classes.iter().enumerate() {
            let s = &mut stats.classes[i];
            // An item below the largest class is one chunk; the largest class also holds
            // the continuation chunks of long values, so its heads are counted (few chunks:
            // a page holds only a handful of the largest).
            s.items += if i == largest {
                self.count_heads(class)
            } else {
                class.used
            };
            s.pages += class.pages.len() as u64;
            s.chunks += class.pages.len() as u64 * u64::from(class.per_page);
            s.used += class.used;
            s.free += u64::from(self.slab.free_count(i));
            s.evictions += class.evictions;
            s.pages_gained += class.pages_gained;
        }
    }
}

/// The monotonic expiry for an absolute one (unix seconds, 0 = never) at wall time `wall`;
/// `None` if it has passed.
fn monotonic_expiry(expires_at: u64, now: u32, wall: u64) -> Option<u32> {
    match expires_at {
        0 => Some(0),
        at if at <= wall => None,
        at => Some(expiry_for(
            now,
            u32::try_from(at - wall).unwrap_or(u32::MAX),
        )),
    }
}

/// Parses 1 to 20 ASCII digits into a `u64`; `None` for anything else or overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parse_and_format() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b" 1"), None);
        let mut buf = [0u8; 20];
        assert_eq!(format_u64(0, &mut buf), b"0");
        assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
        assert_eq!(format_u64(1230, &mut buf), b"1230");
    }
}
