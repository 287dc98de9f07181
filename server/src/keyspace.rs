//! The keyspace door: the one path from every protocol to the data.
//!
//! ```text
//!  native session ──┐                       ┌──► Store (items, per-bucket seq)
//!                   ├──► Keyspace ──────────┼──► DelayedFlush (one node-level timer)
//!  text session ────┘   one call per        └──► Persistence (SAVE, on a blocking thread)
//!                       request / command
//! ```
//!
//! Protocol sessions (`net/`) never touch the store: they decode a request, make exactly one
//! call here, and encode the result.
//!
//! Every keyed operation first checks that this node serves the key's bucket
//! ([`ClusterView::owns`], one atomic load) and otherwise fails with
//! [`OpError::NotMyBucket`] before touching the store, so a refused request was never
//! applied. Each data-changing call is one store operation, so it
//! takes one per-bucket sequence number and will be one replicated write; the cluster issues
//! hook ownership checks, redirects, forwarding and replication acknowledgements in here, in
//! one place for both protocols.
//!
//! What this module owns:
//! - [`Expiry`]: every protocol's expiry (native TTLs, memcached's relative-or-absolute
//!   exptimes) turned into the store's TTL once, by the node's clock ([`Store::wall`]); no
//!   protocol reads the system clock.
//! - [`OpError`]: the per-operation errors, matched exhaustively by both sessions. Start-up
//!   errors (an invalid configuration) are not in it.
//! - The memcached rules that would otherwise take two store calls: a write whose exptime is
//!   already past, gat/touch with a past exptime, and a failed `set` that must not leave the
//!   old value behind are each one store operation.
//! - Admin operations that take time (SAVE) run off the session and return a future, which the
//!   connection driver waits on while it goes on serving (see `net::Output`).

use crate::cluster::in_sync::{CopiesHold, Held};
use crate::cluster::{BucketGuard, ClusterView, Redirect};
use crate::persist::{PersistError, PersistMode, Persistence, SaveSummary};
use crate::stats::ServerStats;
use crate::store::{SetMode, Store, StoreStats};

pub use crate::store::{ItemRef, MetaSeen, StoreError, WriteOk};
use crate::store::{MetaGet, MetaIncr};
use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// memcached's boundary between relative and absolute exptimes: 30 days, in seconds.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// When an item expires, as a protocol expressed it. Turned into a store TTL by
/// [`Keyspace`] with the node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never expires.
    Never,
    /// Expires this many seconds from now (at least 1).
    After(u32),
    /// Expires at this unix time (seconds).
    At(u64),
    /// Already expired: the write happens and is invisible at once.
    Expired,
}

impl Expiry {
    /// A native-protocol TTL: 0 never expires, otherwise seconds from now.
    pub fn from_ttl(ttl: u32) -> Expiry {
        if ttl == 0 {
            Expiry::Never
        } else {
            Expiry::After(ttl)
        }
    }

    /// memcached's exptime rules: 0 never expires, negative is already expired, up to 30 days
    /// is relative, beyond that an absolute unix time.
    pub fn from_memcached(exptime: i64) -> Expiry {
        match exptime {
            0 => Expiry::Never,
            e if e < 0 => Expiry::Expired,
            // 1..=2592000 fits a u32.
            e if e <= REALTIME_MAXDELTA => Expiry::After(u32::try_from(e).unwrap_or(u32::MAX)),
            e => Expiry::At(u64::try_from(e).unwrap_or(u64::MAX)),
        }
    }

    /// The store TTL when the wall-clock time (unix seconds) is `wall()`: `Some(0)` never
    /// expires, `None` is already expired. The clock is read only for an absolute time, so
    /// the common relative TTLs cost no clock read.
    fn ttl(self, wall: impl FnOnce() -> u64) -> Option<u32> {
        match self {
            Expiry::Never => Some(0),
            Expiry::After(secs) => Some(secs.max(1)),
            Expiry::Expired => None,
            Expiry::At(at) => {
                let wall = wall();
                (at > wall).then(|| u32::try_from(at - wall).unwrap_or(u32::MAX))
            }
        }
    }
}

/// Why one keyspace operation did not happen. Every variant is a reply on both protocols;
/// sessions match it exhaustively, so a new kind of failure (the cluster's redirects, for
/// one) cannot fall into a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The store refused the operation (miss, condition, size, memory).
    Store(StoreError),
    /// This node does not serve the key's bucket: where it is served, by the applied table.
    /// Nothing was applied.
    NotMyBucket(Redirect),
    /// This node holds no lease from the cluster, so it serves nothing (see
    /// [`crate::cluster::lease`]). Nothing was applied.
    NoLease,
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Store(e)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Store(e) => e.fmt(f),
            OpError::NotMyBucket(r) => match &r.owner {
                Some((id, addr)) => write!(f, "bucket {} is served by {id} at {addr}", r.bucket),
                None => write!(f, "bucket {} has no owner", r.bucket),
            },
            OpError::NoLease => f.write_str("this node holds no lease from the cluster"),
        }
    }
}

impl std::error::Error for OpError {}

/// The result of one keyspace operation.
pub type OpResult<T> = Result<T, OpError>;

/// What a meta get asks for besides the read (see [`Keyspace::meta_get`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaGetOpts {
    /// New expiry of a found item (`T`).
    pub touch: Option<Expiry>,
    /// Create an empty stub with this expiry on a miss (`N`).
    pub vivify: Option<Expiry>,
    /// Win the right to recache when the remaining TTL is below this (`R`).
    pub recache: Option<Expiry>,
    /// Do not mark the item read (`u`).
    pub no_update: bool,
}

/// What a meta arithmetic asks for (see [`Keyspace::meta_incr`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaIncrOpts {
    /// Amount to add or subtract.
    pub delta: u64,
    /// Subtract instead of add.
    pub decr: bool,
    /// On a miss, store this number with this expiry instead.
    pub create: Option<(u64, Expiry)>,
    /// Only if the value hash equals this token.
    pub expected: Option<u64>,
    /// New expiry on success.
    pub touch: Option<Expiry>,
}

/// What a write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Store unconditionally.
    Set,
    /// Only if the key is absent.
    Add,
    /// Only if the key is present.
    Replace,
    /// Only if the key holds a value with this hash.
    Cas(u64),
}

impl From<WriteMode> for SetMode {
    fn from(m: WriteMode) -> SetMode {
        match m {
            WriteMode::Set => SetMode::Set,
            WriteMode::Add => SetMode::Add,
            WriteMode::Replace => SetMode::Replace,
            WriteMode::Cas(h) => SetMode::Cas(h),
        }
    }
}

/// The buckets a request's reply may have to wait for ([`Keyspace::gated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gated {
    /// The bucket of a single-key request: a plain read of it waits only for the item it
    /// read (see [`READ_SEQ`]).
    Key(u32),
    /// One bucket (keys of one bucket).
    One(u32),
    /// Several distinct buckets (a multi-get).
    Many(Vec<u32>),
}

thread_local! {
    /// What the single-key request running on this thread needs its bucket's in-sync copies
    /// to hold, when it only read: `Some(seq)` of the item a hit returned (`Some(0)` before
    /// it ran), `None` (the bucket's seq, as for a write) once it did anything else: a miss
    /// (the key may be gone by a delete the copies do not have yet), a write, or a second
    /// keyed call. [`Keyspace::gated`] starts it, the keyspace calls move it, and
    /// [`Keyspace::copies_hold`] takes it, all on the session's thread within one request.
    static READ_SEQ: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The node's data as every protocol sees it. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Keyspace {
    store: Store,
    /// Which buckets this node serves.
    cluster: ClusterView,
    persistence: Persistence,
    flush: DelayedFlush,
    stats: Arc<ServerStats>,
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace").finish_non_exhaustive()
    }
}

impl Keyspace {
    /// The door to `store`, serving the buckets `cluster` says this node serves; SAVE and
    /// SET_PERSIST act on `persistence`. `cluster` must have the store's bucket count.
    pub fn new(
        store: Store,
        persistence: Persistence,
        stats: Arc<ServerStats>,
        cluster: ClusterView,
    ) -> Keyspace {
        Keyspace {
            store,
            cluster,
            persistence,
            flush: DelayedFlush::default(),
            stats,
        }
    }

    /// Server-wide counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The cluster view this node serves by.
    pub fn cluster(&self) -> &ClusterView {
        &self.cluster
    }

    /// Whether this node serves `key`'s bucket now.
    #[inline]
    pub fn serves(&self, key: &[u8]) -> bool {
        self.cluster
            .owns(shoal_proto::hash::bucket_of(key, self.store.buckets()))
    }

    /// Enters `key`'s bucket for one call (hold the guard until the store call returns);
    /// fails with [`OpError::NotMyBucket`] unless this node serves the bucket now (a parked
    /// bucket is not served: see [`ClusterView::enter`]), and with [`OpError::NoLease`]
    /// while it holds no lease.
    #[inline]
    fn enter(&self, key: &[u8]) -> OpResult<BucketGuard<'_>> {
        READ_SEQ.set(None);
        self.enter_to_read(key)
    }

    /// [`Keyspace::enter`] for a plain read, which leaves [`READ_SEQ`] to the caller.
    #[inline]
    fn enter_to_read(&self, key: &[u8]) -> OpResult<BucketGuard<'_>> {
        let bucket = shoal_proto::hash::bucket_of(key, self.store.buckets());
        let guard = self
            .cluster
            .enter(bucket)
            .ok_or_else(|| self.not_mine(bucket))?;
        if !self.cluster.leased() {
            return Err(OpError::NoLease);
        }
        Ok(guard)
    }

    /// The buckets of `keys` (a request's keys, asked only when some bucket of this node
    /// has an in-sync copy: otherwise `None` at the cost of one atomic load). After the
    /// request ran, [`Keyspace::copies_hold`] says what its reply waits for.
    #[inline]
    pub fn gated<'k, I: Iterator<Item = &'k [u8]>>(
        &self,
        keys: impl FnOnce() -> I,
    ) -> Option<Gated> {
        if !self.cluster.in_sync().any() {
            return None;
        }
        let buckets = self.store.buckets();
        let mut keys = keys().map(|k| shoal_proto::hash::bucket_of(k, buckets));
        let first = keys.next()?;
        let Some(second) = keys.next() else {
            READ_SEQ.set(Some(0));
            return Some(Gated::Key(first));
        };
        let mut rest: Vec<u32> = std::iter::once(second)
            .chain(keys)
            .filter(|b| *b != first)
            .collect();
        if rest.is_empty() {
            return Some(Gated::One(first));
        }
        rest.push(first);
        rest.sort_unstable();
        rest.dedup();
        Some(Gated::Many(rest))
    }

    /// What the reply to a request just run here must wait for: the in-sync copies of its
    /// buckets to hold them up to now (see [`crate::cluster::in_sync`]); `None` when they
    /// have no such copy or the copies hold everything already. The future answers whether
    /// the reply may go out: `false` when this node's lease ran out meanwhile, even if it
    /// was granted again since (the copies may have been let go because the bucket failed
    /// over without this write), so the session answers "in doubt" instead.
    pub fn copies_hold(&self, gated: Gated) -> Option<Held> {
        #[cfg(feature = "fault-injection")]
        if crate::fault::ack_early() {
            return None;
        }
        let hold = self.copies_of(gated)?;
        let cluster = self.cluster.clone();
        // After the request ran under a valid lease: a lapse since then is long enough for
        // a fence only after this mark (the leader waits a margin past the lease's end).
        let mark = cluster.lease_mark();
        Some(Box::pin(async move {
            hold.await;
            cluster.leased_since(mark)
        }))
    }

    fn copies_of(&self, gated: Gated) -> Option<CopiesHold> {
        let in_sync = self.cluster.in_sync();
        let seq = |b: u32| move || self.store.bucket_stats(b).seq;
        match gated {
            Gated::Key(b) => match READ_SEQ.take() {
                Some(read) => in_sync.wait(b, move || read),
                None => in_sync.wait(b, seq(b)),
            },
            Gated::One(b) => in_sync.wait(b, seq(b)),
            Gated::Many(buckets) => {
                let holds: Vec<CopiesHold> = buckets
                    .into_iter()
                    .filter_map(|b| in_sync.wait(b, seq(b)))
                    .collect();
                (!holds.is_empty()).then(|| -> CopiesHold {
                    Box::pin(async move {
                        for hold in holds {
                            hold.await;
                        }
                    })
                })
            }
        }
    }

    #[cold]
    fn not_mine(&self, bucket: u32) -> OpError {
        OpError::NotMyBucket(self.cluster.redirect(bucket))
    }

    /// A store refusal as an [`OpError`]: a bucket hidden on this node (a copy being filled,
    /// not served) is [`OpError::NotMyBucket`] like any bucket it does not serve.
    fn refused(&self, key: &[u8], e: StoreError) -> OpError {
        match e {
            StoreError::Hidden => {
                self.not_mine(shoal_proto::hash::bucket_of(key, self.store.buckets()))
            }
            e => OpError::Store(e),
        }
    }

    /// Runs `f` on the item under `key` (no copy). `Ok(None)` on a miss or a bad key.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`].
    #[inline]
    pub fn get<R>(&self, key: &[u8], f: impl FnOnce(ItemRef<'_>) -> R) -> OpResult<Option<R>> {
        let read = READ_SEQ.take();
        let _inside = self.enter_to_read(key)?;
        let got = self.store.get(key, |item| {
            let seq = item.seq();
            (f(item), seq)
        });
        Ok(got.map(|(r, seq)| {
            READ_SEQ.set(read.map(|r| r.max(seq)));
            r
        }))
    }

    /// Runs `f` on the item under `key` and gives it a new expiry, in one store operation.
    /// With [`Expiry::Expired`] the item is returned and removed. `Ok(None)` on a miss.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`].
    pub fn get_and_touch<R>(
        &self,
        key: &[u8],
        expiry: Expiry,
        f: impl FnOnce(ItemRef<'_>) -> R,
    ) -> OpResult<Option<R>> {
        let _inside = self.enter(key)?;
        Ok(match self.ttl(expiry) {
            Some(ttl) => self.store.get_and_touch(key, ttl, f),
            None => self.store.get_and_delete(key, f),
        })
    }

    /// Gives `key` a new expiry. With [`Expiry::Expired`] the key is removed.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`], `NotFound`, key errors.
    pub fn touch(&self, key: &[u8], expiry: Expiry) -> OpResult<()> {
        let _inside = self.enter(key)?;
        match self.ttl(expiry) {
            Some(ttl) => self
                .store
                .touch(key, ttl)
                .map(drop)
                .map_err(|e| self.refused(key, e)),
            None => self
                .store
                .delete(key, None)
                .map(drop)
                .map_err(|e| self.refused(key, e)),
        }
    }

    /// Stores `value` under `key` as `mode` allows, in one store operation.
    ///
    /// - A failed `Set` (too large, out of memory) removes the key's old value, as memcached
    ///   does, so a client never reads the value it just tried to replace.
    /// - An expiry already past stores nothing visible: `Set` removes the key, `Replace` and
    ///   `Cas` remove it if their condition holds, `Add` succeeds only if the key is absent;
    ///   each answers as if the item had been stored and expired at once.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`]; the store's: key errors, [`StoreError::TooLarge`],
    /// [`StoreError::NotStored`], `NotFound` / [`StoreError::Exists`] (cas),
    /// [`StoreError::OutOfMemory`].
    pub fn set(
        &self,
        mode: WriteMode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        expiry: Expiry,
    ) -> OpResult<WriteOk> {
        let _inside = self.enter(key)?;
        let store = &self.store;
        let Some(ttl) = self.ttl(expiry) else {
            return self.set_expired(mode, key, value);
        };
        store
            .set(mode.into(), key, value, flags, ttl)
            .map_err(|e| self.refused(key, e))
    }

    /// [`Keyspace::set`] with an expiry already past.
    fn set_expired(&self, mode: WriteMode, key: &[u8], value: &[u8]) -> OpResult<WriteOk> {
        let store = &self.store;
        let hash = shoal_proto::hash::value_hash(value);
        let written = |seq| WriteOk { hash, seq };
        match mode {
            WriteMode::Set => match store.delete(key, None) {
                Ok(seq) => Ok(written(seq)),
                Err(StoreError::NotFound) => Ok(written(0)),
                Err(e) => Err(self.refused(key, e)),
            },
            WriteMode::Add => match store.get(key, |_| ()) {
                Some(()) => Err(StoreError::NotStored.into()),
                None => Ok(written(0)),
            },
            WriteMode::Replace => match store.delete(key, None) {
                Ok(seq) => Ok(written(seq)),
                Err(StoreError::NotFound) => Err(StoreError::NotStored.into()),
                Err(e) => Err(self.refused(key, e)),
            },
            WriteMode::Cas(expected) => store
                .delete(key, Some(expected))
                .map(written)
                .map_err(|e| self.refused(key, e)),
        }
    }

    /// Appends (or with `front`, prepends) `data` to the value of `key`, keeping its flags
    /// and expiry.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`]; [`StoreError::NotStored`] when the key is absent; key and
    /// size errors; [`StoreError::OutOfMemory`].
    pub fn concat(&self, key: &[u8], data: &[u8], front: bool) -> OpResult<WriteOk> {
        let _inside = self.enter(key)?;
        let done = if front {
            self.store.prepend(key, data)
        } else {
            self.store.append(key, data)
        };
        done.map_err(|e| self.refused(key, e))
    }

    /// Deletes `key`; with `expected`, only if its value hash matches. Returns the seq.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`], `NotFound`, [`StoreError::Exists`], key errors.
    pub fn delete(&self, key: &[u8], expected: Option<u64>) -> OpResult<u64> {
        let _inside = self.enter(key)?;
        self.store
            .delete(key, expected)
            .map_err(|e| self.refused(key, e))
    }

    /// A failed oversized `set`: removes the old value of `key` (as memcached), ignoring a
    /// miss.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`] (nothing removed).
    pub fn unlink_after_failed_set(&self, key: &[u8]) -> OpResult<()> {
        let _inside = self.enter(key)?;
        let _ = self.store.delete(key, None);
        Ok(())
    }

    /// incr/decr; with `create`, an absent key is created with that value and expiry.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`], [`StoreError::NonNumeric`], [`StoreError::NotFound`], key
    /// errors, [`StoreError::OutOfMemory`].
    pub fn incr(
        &self,
        key: &[u8],
        delta: u64,
        decr: bool,
        create: Option<(u64, Expiry)>,
    ) -> OpResult<(u64, WriteOk)> {
        let _inside = self.enter(key)?;
        let create = match create {
            // An initial value that would expire at once is simply not created.
            Some((initial, expiry)) => self.ttl(expiry).map(|ttl| (initial, ttl)),
            None => None,
        };
        self.store
            .incr(key, delta, decr, create)
            .map_err(|e| self.refused(key, e))
    }

    /// memcached's meta get (`mg`): one store operation that reads `key` and, as asked,
    /// touches it (`touch`), creates an empty stub on a miss (`vivify`), and decides who wins
    /// the right to recache (`recache`, stale items). `f` sees the item and [`MetaSeen`]. The
    /// caller gives `vivify` the TTL a created stub ends with (memcached applies `N` and `T`
    /// in the order they were sent).
    /// `Ok(None)` is a miss. An already-past `touch` leaves the item readable this once and
    /// removes it, as memcached's past exptime makes it invisible from then on.
    ///
    /// # Errors
    /// [`OpError::NotMyBucket`].
    pub fn meta_get<R>(
        &self,
        key: &[u8],
        opts: MetaGetOpts,
        f: impl FnOnce(ItemRef<'_>, MetaSeen) -> R,
    ) -> OpResult<Option<R>> {
        let _inside = self.enter(key)?;
        let touch = opts.touch.map(|e| self.ttl(e));
        let req = MetaGet {
            touch: touch.flatten(),
            // A stub that would expire at once is not created.
            vivify: opts.vivify.and_then(|e| self.ttl(e)),
            recache: opts.recache.and_then(|e| self.ttl(e)),
            no_update: opts.no_update,
        };
        let got = self.store.meta_get(key, &req, f);
        if got.is_some() && touch == Some(None) {
            let _ = self.store.delete(key, None);
        }
        Ok(got)
    }

    /// memcached's `md <key> I`: marks `key` stale and gives it a new check-and-set token
    /// instead of deleting it; with `expected`, only if its value hash matches; with
    /// `expiry`, also a new expiry (already past: the key is removed). Returns the seq.
    ///
    /// # Errors
    /// `NotFound`, [`StoreError::Exists`], key errors.
    pub fn invalidate(
        &self,
        key: &[u8],
        expected: Option<u64>,
        expiry: Option<Expiry>,
    ) -> OpResult<u64> {
        let _inside = self.enter(key)?;
        let ttl = match expiry.map(|e| self.ttl(e)) {
            Some(None) => return self.delete(key, expected),
            Some(Some(ttl)) => Some(ttl),
            None => None,
        };
        self.store
            .invalidate(key, expected, ttl)
            .map_err(OpError::from)
    }

    /// memcached's `ms <key> I C<token>`: a check-and-set that also accepts the token `key`
    /// had before it was invalidated, and then stores `value` still stale (keeping its
    /// expiry). Returns the write and whether it was stored stale.
    ///
    /// # Errors
    /// As [`Keyspace::set`] with [`WriteMode::Cas`].
    pub fn set_cas_or_stale(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u32,
        expiry: Expiry,
        expected: u64,
    ) -> OpResult<(WriteOk, bool)> {
        let _inside = self.enter(key)?;
        let Some(ttl) = self.ttl(expiry) else {
            return self
                .set(WriteMode::Cas(expected), key, value, flags, expiry)
                .map(|ok| (ok, false));
        };
        self.store
            .set_cas_or_stale(key, value, flags, ttl, expected)
            .map_err(OpError::from)
    }

    /// append/prepend (see [`Keyspace::concat`]) only if the value hash equals `expected`.
    ///
    /// # Errors
    /// As [`Keyspace::concat`], and [`StoreError::Exists`] on a mismatch.
    pub fn concat_if(
        &self,
        key: &[u8],
        data: &[u8],
        front: bool,
        expected: Option<u64>,
    ) -> OpResult<WriteOk> {
        let _inside = self.enter(key)?;
        self.store
            .concat_if(key, data, front, expected)
            .map_err(OpError::from)
    }

    /// memcached's meta arithmetic (`ma`): incr/decr with a check-and-set token, a new
    /// expiry on success, and creation on a miss. Returns the new number, the write, and
    /// whether the item was created and the TTL it had before ([`MetaSeen`]).
    ///
    /// # Errors
    /// As [`Keyspace::incr`], and [`StoreError::Exists`] on a hash mismatch.
    pub fn meta_incr(&self, key: &[u8], opts: MetaIncrOpts) -> OpResult<(u64, WriteOk, MetaSeen)> {
        let _inside = self.enter(key)?;
        let req = MetaIncr {
            delta: opts.delta,
            decr: opts.decr,
            create: opts
                .create
                .and_then(|(initial, e)| self.ttl(e).map(|ttl| (initial, ttl))),
            expected: opts.expected,
            // A past expiry keeps the item until it is next looked at; here, the next second.
            touch: opts.touch.map(|e| self.ttl(e).unwrap_or(1)),
        };
        self.store.meta_incr(key, &req).map_err(OpError::from)
    }

    /// `expiry` as a store TTL, by the node's clock (`None`: already expired).
    #[inline]
    fn ttl(&self, expiry: Expiry) -> Option<u32> {
        expiry.ttl(|| self.store.wall())
    }

    /// The node clock's wall time (unix seconds).
    pub fn wall(&self) -> u64 {
        self.store.wall()
    }

    /// How long until `expiry`, by the node's clock (zero when it is past or never: a
    /// `flush_all` delay of 0 means now).
    pub fn delay_until(&self, expiry: Expiry) -> Duration {
        match self.ttl(expiry) {
            Some(secs) => Duration::from_secs(u64::from(secs)),
            None => Duration::ZERO,
        }
    }

    /// Flushes every item now (`delay` zero) or after `delay`; a later flush replaces a
    /// pending one.
    pub fn flush_all(&self, delay: Duration) {
        self.flush.schedule(&self.store, delay);
    }

    /// Runs the node's delayed-flush timer until `stop` completes. The server runs one.
    pub async fn run_flush_timer(&self, stop: impl Future<Output = ()>) {
        self.flush.run(&self.store, stop).await;
    }

    /// Store-wide statistics.
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Limits item memory to about `bytes` on this node (memcached's `cache_memlimit`);
    /// returns the limit in force. See [`Store::set_memory_limit`].
    pub fn set_memory_limit(&self, bytes: u64) -> u64 {
        self.store.set_memory_limit(bytes)
    }

    /// Number of buckets.
    pub fn buckets(&self) -> u32 {
        self.store.buckets()
    }

    /// Persistence counters, for STATS.
    pub fn persist_stats(&self) -> Vec<(&'static str, String)> {
        self.persistence.stats()
    }

    /// Changes the persistence mode (SET_PERSIST).
    ///
    /// # Errors
    /// As [`Persistence::set_mode`].
    pub fn set_persist_mode(&self, mode: PersistMode) -> Result<(), PersistError> {
        self.persistence.set_mode(mode)
    }

    /// SAVE: writes the savefile on a blocking thread; the future completes when it is on
    /// disk. The caller's connection goes on serving meanwhile.
    pub fn save(&self) -> impl Future<Output = Result<SaveSummary, PersistError>> + Send {
        let (p, s) = (self.persistence.clone(), self.store.clone());
        let owned = self.cluster.owned_for_save();
        let task = tokio::task::spawn_blocking(move || p.save(&s, owned.as_ref(), None, false));
        async move {
            task.await.unwrap_or_else(|e| {
                Err(PersistError::Io {
                    action: "save (task failed)",
                    path: Default::default(),
                    error: std::io::Error::other(e.to_string()),
                })
            })
        }
    }
}

/// `flush_all <delay>`: one pending flush per node, run by one timer task; the newest
/// `flush_all` wins (a later one, delayed or not, replaces a pending one, as in memcached).
#[derive(Debug, Clone, Default)]
struct DelayedFlush {
    inner: Arc<FlushState>,
}

#[derive(Debug, Default)]
struct FlushState {
    /// When the pending flush is due.
    due: Mutex<Option<Instant>>,
    /// Wakes the timer when `due` changes.
    changed: Notify,
}

impl DelayedFlush {
    fn schedule(&self, store: &Store, delay: Duration) {
        let mut due = self
            .inner
            .due
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if delay.is_zero() {
            *due = None;
            store.flush_all();
        } else {
            *due = Some(Instant::now() + delay);
        }
        drop(due);
        self.inner.changed.notify_one();
    }

    async fn run(&self, store: &Store, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let due = *self
                .inner
                .due
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = self.inner.changed.notified() => continue,
                () = sleep => {}
            }
            let mut guard = self
                .inner
                .due
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *guard == due {
                *guard = None;
                // Flushing under the lock: a flush_all that arrives meanwhile waits and wins.
                store.flush_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_exptime_rules() {
        assert_eq!(Expiry::from_memcached(0), Expiry::Never);
        assert_eq!(Expiry::from_memcached(-1), Expiry::Expired);
        assert_eq!(Expiry::from_memcached(i64::MIN), Expiry::Expired);
        assert_eq!(
            Expiry::from_memcached(REALTIME_MAXDELTA),
            Expiry::After(2_592_000)
        );
        assert_eq!(
            Expiry::from_memcached(REALTIME_MAXDELTA + 1),
            Expiry::At(2_592_001)
        );
        let wall = 1_800_000_000;
        // Just over 30 days is an absolute time in 1970: long past.
        assert_eq!(Expiry::At(2_592_001).ttl(|| wall), None);
        assert_eq!(Expiry::At(wall + 100).ttl(|| wall), Some(100));
        assert_eq!(Expiry::At(wall).ttl(|| wall), None);
        assert_eq!(Expiry::At(u64::MAX).ttl(|| wall), Some(u32::MAX));
        assert_eq!(Expiry::Never.ttl(|| wall), Some(0));
        assert_eq!(Expiry::Expired.ttl(|| wall), None);
        assert_eq!(Expiry::from_ttl(0), Expiry::Never);
        assert_eq!(Expiry::from_ttl(5).ttl(|| wall), Some(5));
    }
}
