//! The async [`Client`]: operations, their argument checks and reply decoding, and the one
//! retry loop that every operation goes through (deadline, backoff, seeds, redirects).
//!
//! Retry policy of one call, all inside its deadline:
//! - not sent ([`Error::Connection`]): wait a jittered backoff, reconnect (same or next seed),
//!   send again. Nothing reached the server, so this holds for every operation.
//! - a transient status (`SHUTTING_DOWN`, `BUSY`, `PAUSED`, `LOADING`: nothing was done):
//!   back off and send again, for every operation.
//! - `NOT_MY_BUCKET` (nothing was applied, so this holds for every operation, CAS, ADD and
//!   INCR included): a redirect whose epoch is newer than the bucket's entry updates that
//!   entry and the request goes straight to the new owner; an older (or equal) one is ignored
//!   and the request goes again, after a backoff, where the table says. Every third redirect
//!   of a call refetches the whole table first. An MGET entry for a key whose bucket the
//!   server does not serve is handled the same way for that key alone. At the deadline the
//!   last redirect is returned ([`Error::NotMyBucket`]).
//! - in doubt ([`Error::InDoubt`]) because the connection failed: send again only if the
//!   command is idempotent ([`shoal_proto::Command::is_idempotent`]); otherwise the caller
//!   gets `InDoubt`. A request that timed out is never resent (the server may just be slow).
//! - an owner that cannot be reached (not sent, or an idempotent request in doubt): refetch
//!   the table from another node, then go where it says (at once if the owner changed).
//!
//! Where requests go: each keyed request to its bucket's primary in the routing table
//! (`routing.rs`); a bucket without a known owner, and every keyless request, to the seeds.
//! The table is fetched (TABLE_GET) in the background when the client is first used, when a
//! connection receives a `TABLE_CHANGED` notice, when a redirect names an epoch newer than
//! the table, and every [`REFRESH_INTERVAL`]; one fetch runs at a time and callers that want
//! one while it runs share it, and background fetches are at least [`NOTICE_COALESCE`]
//! apart (a burst of notices costs a few fetches). A fetch asks the node that announced the change first, then
//! the table's members, then the seeds.
//!
//! Connections live in per-server [`Node`]s, opened lazily and replaced when they fail.

use crate::builder::{ClientBuilder, Config};
use crate::connection::Connection;
use crate::error::{Error, FailureKind, LimitKind, Redirect};
use crate::routing::RoutingTable;
use bytes::Bytes;
use shoal_proto::{
    cluster::AdminRequest, decode_reply, encode_multi_get, Command, MultiGetEntry, NodeStatus,
    Opcode, Reply, ReplyBody, Request, Status, StoreMode, TableView,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often the client refetches the bucket table when nothing told it to (a safety net for
/// a lost notice).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two background fetches: the notices of a burst of table changes (a
/// drain switches hundreds of buckets within a second) are answered by a few fetches, not
/// one each; a request routed by the older table meanwhile is redirected once.
const NOTICE_COALESCE: Duration = Duration::from_millis(50);
/// Redirects one call follows before it refetches the whole table (then it goes on until its
/// deadline).
const HOPS_BEFORE_REFETCH: u32 = 3;
/// Time budget of one background table fetch (all sources together).
const FETCH_BUDGET: Duration = Duration::from_secs(5);
/// Longest wait between background fetches that failed or found an older table than
/// announced.
const FETCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value bytes.
    pub value: Bytes,
    /// The client flags stored with it.
    pub flags: u32,
    /// The value hash: pass it to [`Client::cas`] or [`Client::delete_if`].
    pub hash: u64,
}

/// What a client's routing has done so far ([`Client::routing_stats`]): counters since the
/// client was built, shared by its clones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// `NOT_MY_BUCKET` replies (and MGET entries) the client followed: each one sent its
    /// request again, to the owner it named or where the table says.
    pub redirects: u64,
    /// Bucket tables fetched (`TABLE_GET` answered with a table): by the background
    /// refresher, by refetches after redirects or unreachable owners, and by [`Client::table`].
    pub table_fetches: u64,
}

/// Timeouts of the calls made through one [`Client`] handle.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    request: Duration,
    deadline: Duration,
}

/// An async Shoal client. Cheap to clone (clones share connections); `Send + Sync`.
///
/// Every method takes `&self`, may be called from many tasks at once (their requests are
/// pipelined on shared connections), and returns within the call's deadline.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("seeds", &self.inner.config.seeds)
            .field("request_timeout", &self.timeouts.request)
            .field("deadline", &self.timeouts.deadline)
            .finish()
    }
}

struct Inner {
    config: Config,
    routing: Mutex<RoutingTable>,
    /// Servers by address (seeds and redirect targets).
    nodes: Mutex<HashMap<Arc<str>, Arc<Node>>>,
    /// Index of the seed that answered last; tried first.
    seed_cursor: AtomicUsize,
    /// Serializes table fetches: a caller that wants one while another runs waits for it and
    /// uses its result instead of fetching again (no thundering herd).
    fetching: tokio::sync::Mutex<()>,
    /// Table fetches finished so far (applied or not). A caller that read it before waiting
    /// for `fetching` and finds it changed knows a fetch completed meanwhile.
    fetches: AtomicU64,
    /// Whether the background refresher runs (started by the first call, inside a runtime).
    refresher_started: AtomicBool,
    /// Redirects followed ([`RoutingStats::redirects`]).
    redirects: AtomicU64,
    /// Tables fetched ([`RoutingStats::table_fetches`]).
    table_fetches: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The refresher holds only a `Weak`: wake it so it sees the client is gone and ends.
        self.config.table_notices.wake.notify_one();
    }
}

/// Where a request goes.
#[derive(Clone, PartialEq, Eq)]
enum Target {
    /// The connected seed (buckets with no known owner).
    Seed,
    /// A named server.
    Node(Arc<str>),
}

/// One server: its connections and its reconnect backoff.
struct Node {
    addr: Arc<str>,
    slots: Vec<Mutex<Option<Arc<Connection>>>>,
    next_slot: AtomicUsize,
    /// Serializes connection attempts, and holds the backoff between failed ones.
    connecting: tokio::sync::Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<Error>,
}

impl Node {
    fn slot(&self, i: usize) -> Option<Arc<Connection>> {
        let slot = self.slots.get(i)?;
        let conn = slot.lock().unwrap_or_else(|e| e.into_inner());
        conn.as_ref().filter(|c| c.is_usable()).cloned()
    }

    fn any_usable(&self) -> Option<Arc<Connection>> {
        (0..self.slots.len()).find_map(|i| self.slot(i))
    }

    /// When one connection saw the server go away (closed, reset, GOODBYE, SHUTTING_DOWN),
    /// the others opened before then are retired too, so the next call reconnects instead of
    /// trying a sibling that is most likely dead as well (which would cost the caller a second
    /// failed call).
    fn retire_siblings_of_gone(&self) {
        let conns: Vec<Arc<Connection>> = self
            .slots
            .iter()
            .filter_map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        let Some(gone_at) = conns.iter().filter_map(|c| c.server_gone_at()).max() else {
            return;
        };
        for c in conns {
            if c.is_usable() && c.opened_before(gone_at) {
                c.retire();
            }
        }
    }

    /// A usable connection, opening one if needed (at most one attempt per backoff period).
    async fn connection(
        &self,
        config: &Config,
        deadline: Instant,
    ) -> Result<Arc<Connection>, Error> {
        if self.slots.len() > 1 {
            self.retire_siblings_of_gone();
        }
        let i = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        if let Some(c) = self.slot(i) {
            return Ok(c);
        }
        let mut backoff = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| Error::Timeout)?;
        if let Some(c) = self.slot(i) {
            return Ok(c);
        }
        let now = Instant::now();
        if let (Some(at), Some(err)) = (backoff.retry_at, &backoff.last_error) {
            if now < at {
                return self.any_usable().ok_or_else(|| err.clone());
            }
        }
        let timeout = config.connect_timeout.min(deadline - now);
        match Connection::connect(&self.addr, config, timeout).await {
            Ok(conn) => {
                *backoff = Backoff::default();
                if let Some(slot) = self.slots.get(i) {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                }
                Ok(conn)
            }
            Err(err) => {
                backoff.failures = backoff.failures.saturating_add(1);
                backoff.retry_at = Some(Instant::now() + config.backoff(backoff.failures));
                backoff.last_error = Some(err.clone());
                self.any_usable().ok_or(err)
            }
        }
    }

    fn connections(&self) -> Vec<Arc<Connection>> {
        (0..self.slots.len()).filter_map(|i| self.slot(i)).collect()
    }
}

/// What one call sends: everything the retry loop needs besides the bytes.
struct Call<'a> {
    opcode: Opcode,
    /// Key used for bucket routing and redirects (`None`: send to the seed).
    route_key: Option<&'a [u8]>,
    idempotent: bool,
}

impl Client {
    /// A builder; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn from_config(mut config: Config) -> Self {
        // Each client hears the notices of its own connections only.
        config.table_notices = Default::default();
        let timeouts = Timeouts {
            request: config.request_timeout,
            deadline: config.deadline,
        };
        Self {
            inner: Arc::new(Inner {
                routing: Mutex::new(RoutingTable::new(config.buckets)),
                nodes: Mutex::new(HashMap::new()),
                seed_cursor: AtomicUsize::new(0),
                fetching: tokio::sync::Mutex::new(()),
                fetches: AtomicU64::new(0),
                refresher_started: AtomicBool::new(false),
                redirects: AtomicU64::new(0),
                table_fetches: AtomicU64::new(0),
                config,
            }),
            timeouts,
        }
    }

    /// A handle on the same connections whose calls use these timeouts instead.
    pub fn with_timeouts(&self, request_timeout: Duration, deadline: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeouts: Timeouts {
                request: request_timeout.max(Duration::from_millis(1)),
                deadline: deadline.max(Duration::from_millis(1)),
            },
        }
    }

    /// Reads a key: `Ok(None)` on a miss.
    ///
    /// # Errors
    /// See [`Error`]; a miss is not an error.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Item>, Error> {
        let key = key.as_ref();
        self.check_key(key)?;
        let reply = self.command(Command::GetWithHash { key }).await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::ValueWithHash(f)) => Ok(Some(item(&reply, f))),
            (Status::NotFound, _) => Ok(None),
            _ => Err(r),
        })
    }

    /// Reads a key and sets its time to live (seconds; 0 = never expires). `Ok(None)` on a miss.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn get_and_touch(
        &self,
        key: impl AsRef<[u8]>,
        ttl: u32,
    ) -> Result<Option<Item>, Error> {
        let key = key.as_ref();
        self.check_key(key)?;
        let reply = self.command(Command::GetAndTouch { key, ttl }).await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::ValueWithHash(f)) => Ok(Some(item(&reply, f))),
            (Status::NotFound, _) => Ok(None),
            _ => Err(r),
        })
    }

    /// Reads many keys; the result has one entry per key, in order (`None` for a miss).
    /// The keys are split by owner (one MGET per server, batches of at most the `max_batch`
    /// limit, halved when the server finds one too large to answer in one frame) and the
    /// answers put back in order; a key whose owner moved is asked again of its new owner.
    ///
    /// # Errors
    /// See [`Error`]; the first failing batch's error is returned, and
    /// [`Error::NotMyBucket`] when a key was still redirected at the deadline.
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Item>>, Error> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        for key in &keys {
            self.check_key(key)?;
        }
        let deadline = Instant::now() + self.timeouts.deadline;
        let mut out: Vec<Option<Item>> = vec![None; keys.len()];
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let mut hops: u32 = 0;
        loop {
            // Group by owner so each MGET goes to one server; redirected keys come back to
            // `pending` and are grouped again by the updated table.
            let mut redirected: Vec<usize> = Vec::new();
            let mut moved = false;
            let mut last_redirect: Option<Error> = None;
            let mut work = self.group_by_owner(&keys, &pending);
            while let Some(batch) = work.pop() {
                let batch_keys: Vec<&[u8]> = batch.iter().map(|&i| keys[i]).collect();
                let call = Call {
                    opcode: Opcode::MultiGet,
                    route_key: batch_keys.first().copied(),
                    idempotent: true,
                };
                let target = self.target_of(call.route_key);
                let reply = self
                    .call_until(&call, deadline, |buf| {
                        encode_multi_get(buf, 0, batch_keys.iter().copied());
                    })
                    .await?;
                let got = self.decode(&reply, |r| match (r.status, r.body) {
                    (Status::Ok, ReplyBody::Values(list)) if list.len() == batch.len() => {
                        let entries: Vec<Result<Option<Item>, Redirect>> = list
                            .iter()
                            .map(|entry| match entry {
                                MultiGetEntry::Miss => Ok(None),
                                MultiGetEntry::Hit(f) => Ok(Some(item(&reply, f))),
                                MultiGetEntry::NotMyBucket(n) => Err(Redirect::from(n)),
                            })
                            .collect();
                        Ok(Some(entries))
                    }
                    (Status::ValueTooLarge, _) if batch.len() > 1 => Ok(None),
                    _ => Err(r),
                })?;
                let Some(entries) = got else {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    work.push(a.to_vec());
                    work.push(b.to_vec());
                    continue;
                };
                for (&i, entry) in batch.iter().zip(entries) {
                    match entry {
                        Ok(found) => out[i] = found,
                        Err(redirect) => {
                            let (err, changed) = self.learn(&redirect, keys[i], &target);
                            moved |= changed;
                            last_redirect = Some(err);
                            redirected.push(i);
                        }
                    }
                }
            }
            let Some(err) = last_redirect else {
                return Ok(out);
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            hops += 1;
            if hops.is_multiple_of(HOPS_BEFORE_REFETCH) {
                let seen = self.inner.fetches.load(Ordering::Acquire);
                self.refetch(seen, None, None, deadline).await;
            } else if !moved {
                let wake = (Instant::now() + self.inner.config.backoff(hops)).min(deadline);
                tokio::time::sleep_until(wake).await;
            }
            pending = redirected;
        }
    }

    /// Indexes of `pending` keys grouped by their owner, in batches of at most `max_batch`.
    fn group_by_owner(&self, keys: &[&[u8]], pending: &[usize]) -> Vec<Vec<usize>> {
        let mut groups: HashMap<Option<Arc<str>>, Vec<usize>> = HashMap::new();
        {
            let routing = self.lock_routing();
            for &i in pending {
                groups.entry(routing.owner_of(keys[i])).or_default().push(i);
            }
        }
        let max_batch = self.inner.config.limits.max_batch.max(1);
        groups
            .into_values()
            .flat_map(|idx| {
                idx.chunks(max_batch)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Stores a value unconditionally; returns its hash. `ttl` in seconds (0 = never expires).
    ///
    /// # Errors
    /// See [`Error`]; [`Error::TooLarge`] without network I/O for a value over the limit.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.store(StoreMode::Set, key.as_ref(), value.as_ref(), ttl, flags)
            .await
    }

    /// Stores a value only if the key is absent; returns its hash.
    ///
    /// # Errors
    /// `Error::Server { status: NotStored }` when the key exists. Never retried once sent.
    pub async fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.store(StoreMode::Add, key.as_ref(), value.as_ref(), ttl, flags)
            .await
    }

    /// Stores a value only if the key is present; returns its hash.
    ///
    /// # Errors
    /// `Error::Server { status: NotStored }` when the key is missing.
    pub async fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.store(StoreMode::Replace, key.as_ref(), value.as_ref(), ttl, flags)
            .await
    }

    /// Check-and-set: stores `value` only if the stored value's hash is `expected` (from
    /// [`Item::hash`] or a previous store); returns the new hash.
    ///
    /// # Errors
    /// A conflict is `Error::Server { status: Exists }` ([`Error::is_conflict`]); a missing
    /// key is `Error::Server { status: NotFound }`. Never retried once sent.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        expected: u64,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check_key(key)?;
        self.check_value(value)?;
        let reply = self
            .command(Command::Cas {
                key,
                value,
                flags,
                ttl,
                expected,
            })
            .await?;
        self.decode_stored(&reply)
    }

    /// Appends bytes to an existing value (flags and expiry kept); returns the new hash.
    ///
    /// # Errors
    /// `Error::Server { status: NotStored }` when the key is missing. Never retried once sent.
    pub async fn append(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.concat(false, key.as_ref(), value.as_ref()).await
    }

    /// Prepends bytes to an existing value (flags and expiry kept); returns the new hash.
    ///
    /// # Errors
    /// `Error::Server { status: NotStored }` when the key is missing. Never retried once sent.
    pub async fn prepend(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.concat(true, key.as_ref(), value.as_ref()).await
    }

    /// Deletes a key: `Ok(true)` if it was there, `Ok(false)` if it was not.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        self.delete_inner(key.as_ref(), None).await
    }

    /// Deletes a key only if its value hash is `expected`: `Ok(true)` if deleted, `Ok(false)`
    /// if the key was missing.
    ///
    /// # Errors
    /// `Error::Server { status: Exists }` when the hash differs. Never retried once sent.
    pub async fn delete_if(&self, key: impl AsRef<[u8]>, expected: u64) -> Result<bool, Error> {
        self.delete_inner(key.as_ref(), Some(expected)).await
    }

    /// Sets a key's time to live (seconds; 0 = never expires): `Ok(false)` if it is missing.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn touch(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<bool, Error> {
        let key = key.as_ref();
        self.check_key(key)?;
        let reply = self.command(Command::Touch { key, ttl }).await?;
        self.decode(&reply, |r| match r.status {
            Status::Ok => Ok(true),
            Status::NotFound => Ok(false),
            _ => Err(r),
        })
    }

    /// Adds `delta` to a decimal counter (wrapping at 2^64); returns the new value. When the
    /// key is missing: `create = Some((initial, ttl))` creates it holding `initial` (the delta
    /// is not applied); `None` answers `Ok(None)`.
    ///
    /// # Errors
    /// `Error::Server { status: NonNumeric }` when the value is not a number. Never retried
    /// once sent.
    pub async fn incr(
        &self,
        key: impl AsRef<[u8]>,
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Result<Option<u64>, Error> {
        self.counter(false, key.as_ref(), delta, create).await
    }

    /// Subtracts `delta` from a decimal counter (stopping at 0); otherwise as [`Client::incr`].
    ///
    /// # Errors
    /// As [`Client::incr`].
    pub async fn decr(
        &self,
        key: impl AsRef<[u8]>,
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Result<Option<u64>, Error> {
        self.counter(true, key.as_ref(), delta, create).await
    }

    /// Server counters of `group` (empty: all), as name/value pairs in the server's order.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn stats(&self, group: &str) -> Result<Vec<(String, String)>, Error> {
        if group.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument("stats group over 65535 bytes"));
        }
        let reply = self
            .command(Command::Stats {
                group: group.as_bytes(),
            })
            .await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::Stats(list)) => Ok(list
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect()),
            _ => Err(r),
        })
    }

    /// The whole bucket table of the seed server (TABLE_GET), as it has applied it. The
    /// client also routes by it (where it is newer than what the client knows).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn table(&self) -> Result<TableView, Error> {
        let reply = self.command(Command::TableGet).await?;
        let view = self.decode_table(&reply)?;
        self.lock_routing().apply(&view);
        Ok(view)
    }

    /// Version of the bucket table this client routes by: the newest it fetched (0 before
    /// the first fetch, and against a node that belongs to no cluster).
    pub fn table_version(&self) -> u64 {
        self.lock_routing().version()
    }

    /// Redirects followed and bucket tables fetched since the client was built (all clones
    /// together). A client that routes well shows few redirects: about one per bucket that
    /// moved, plus the first calls before the first table arrives.
    pub fn routing_stats(&self) -> RoutingStats {
        RoutingStats {
            redirects: self.inner.redirects.load(Ordering::Relaxed),
            table_fetches: self.inner.table_fetches.load(Ordering::Relaxed),
        }
    }

    /// What the seed server says about itself (NODE_STATUS): ids, Raft role, table version,
    /// memory, its wall clock.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn node_status(&self) -> Result<NodeStatus, Error> {
        let reply = self.command(Command::NodeStatus).await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::NodeStatus(s)) => Ok(s.status()),
            _ => Err(r),
        })?
        .map_err(|e| Error::Protocol(format!("invalid node status: {}", e.as_str())))
    }

    /// Asks the seed server for a change to the cluster (CLUSTER_ADMIN): start or cancel a
    /// bucket move, drain a node, pause or resume movement. The server commits it through
    /// the Raft leader and answers what it did, for a person to read. Never retried once
    /// sent (a second MOVE would be refused as "in progress").
    ///
    /// # Errors
    /// `Error::Server` with the reason: `NotFound` (unknown node or bucket), `NotStored`
    /// (refused as the cluster stands), `Busy` (no leader committed it in time: nothing
    /// changed), `ServerError` (no control plane), `BadRequest`; or see [`Error`].
    pub async fn cluster_admin(&self, request: AdminRequest) -> Result<String, Error> {
        let reply = self.command(Command::ClusterAdmin { request }).await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::Message(m)) => Ok(String::from_utf8_lossy(m).into_owned()),
            _ => Err(r),
        })
    }

    /// The newest bucket-table version a server announced to this client (a
    /// `TABLE_CHANGED` notice on any of its connections); 0 when none did. The client
    /// fetches that table in the background; [`Client::table_version`] says when it has.
    pub fn announced_table_version(&self) -> u64 {
        self.inner.config.table_notices.announced()
    }

    /// Round trip to the seed server (connecting first if needed).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn ping(&self) -> Result<(), Error> {
        let reply = self.command(Command::Ping).await?;
        self.decode(&reply, |r| match r.status {
            Status::Ok => Ok(()),
            _ => Err(r),
        })
    }

    /// Says GOODBYE on every open connection (waiting up to the request timeout for each
    /// reply) and stops using them. The client stays usable: a later call reconnects.
    pub async fn close(&self) {
        let nodes: Vec<Arc<Node>> = {
            let nodes = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.values().cloned().collect()
        };
        for node in nodes {
            for conn in node.connections() {
                conn.goodbye(self.timeouts.request).await;
            }
        }
    }

    // ---- helpers -------------------------------------------------------------------------

    async fn store(
        &self,
        mode: StoreMode,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.check_key(key)?;
        self.check_value(value)?;
        let reply = self
            .command(Command::Store {
                mode,
                key,
                value,
                flags,
                ttl,
            })
            .await?;
        self.decode_stored(&reply)
    }

    async fn concat(&self, prepend: bool, key: &[u8], value: &[u8]) -> Result<u64, Error> {
        self.check_key(key)?;
        self.check_value(value)?;
        let reply = self
            .command(Command::Concat {
                prepend,
                key,
                value,
            })
            .await?;
        self.decode_stored(&reply)
    }

    async fn delete_inner(&self, key: &[u8], expected: Option<u64>) -> Result<bool, Error> {
        self.check_key(key)?;
        let reply = self.command(Command::Delete { key, expected }).await?;
        self.decode(&reply, |r| match r.status {
            Status::Ok => Ok(true),
            Status::NotFound => Ok(false),
            _ => Err(r),
        })
    }

    async fn counter(
        &self,
        decr: bool,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Result<Option<u64>, Error> {
        self.check_key(key)?;
        let reply = self
            .command(Command::Counter {
                decr,
                key,
                delta,
                create,
            })
            .await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::Counter { value, .. }) => Ok(Some(value)),
            (Status::NotFound, _) => Ok(None),
            _ => Err(r),
        })
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        let max = self.inner.config.limits.max_key;
        if key.is_empty() {
            return Err(Error::InvalidArgument("empty key"));
        }
        if key.len() > max {
            return Err(Error::TooLarge {
                what: LimitKind::Key,
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        let max = self.inner.config.limits.max_value;
        if value.len() > max {
            return Err(Error::TooLarge {
                what: LimitKind::Value,
                len: value.len(),
                max,
            });
        }
        Ok(())
    }

    fn decode_stored(&self, reply: &Bytes) -> Result<u64, Error> {
        self.decode(reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::Stored { hash }) => Ok(hash),
            _ => Err(r),
        })
    }

    /// Decodes a reply frame and lets `f` pick out the result; a reply `f` hands back is
    /// turned into an error (its status, or a protocol error for an OK with the wrong body).
    fn decode<'a, T>(
        &self,
        frame: &'a Bytes,
        f: impl FnOnce(Reply<'a>) -> Result<T, Reply<'a>>,
    ) -> Result<T, Error> {
        let reply = match decode_reply(frame, &self.inner.config.limits) {
            Ok(Some((reply, _))) => reply,
            Ok(None) => return Err(Error::Protocol("truncated reply".into())),
            Err(e) => return Err(Error::Protocol(format!("invalid reply: {e}"))),
        };
        f(reply).map_err(|r| match (r.status, r.body) {
            (Status::Ok, _) => {
                Error::Protocol(format!("unexpected OK body to {}", r.opcode.name()))
            }
            (_, ReplyBody::Redirect(n)) => Error::NotMyBucket(Redirect::from(n)),
            (status, ReplyBody::Message(m)) => Error::server(status, m),
            (status, _) => Error::server(status, b""),
        })
    }

    /// Sends a single-key (or keyless) command through the retry loop.
    async fn command(&self, command: Command<'_>) -> Result<Bytes, Error> {
        let call = Call {
            opcode: command.opcode(),
            route_key: command.key(),
            idempotent: command.is_idempotent(),
        };
        self.call(&call, |buf| Request { id: 0, command }.encode(buf))
            .await
    }

    /// The retry loop (see the module documentation), with a deadline from now.
    async fn call(&self, call: &Call<'_>, encode: impl Fn(&mut Vec<u8>)) -> Result<Bytes, Error> {
        let deadline = Instant::now() + self.timeouts.deadline;
        self.call_until(call, deadline, encode).await
    }

    /// The retry loop, until `deadline`. `encode` appends the request frame (any request id;
    /// the connection sets it) and may be called once per attempt.
    async fn call_until(
        &self,
        call: &Call<'_>,
        deadline: Instant,
        encode: impl Fn(&mut Vec<u8>),
    ) -> Result<Bytes, Error> {
        self.start_refresher();
        let config = &self.inner.config;
        let mut hops: u32 = 0;
        let mut retries: u32 = 0;
        let mut last_error: Option<Error> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.unwrap_or(Error::Timeout));
            }
            let target = self.target_of(call.route_key);
            let outcome = match self.connection(&target, deadline).await {
                Ok(conn) => {
                    let mut frame = Vec::with_capacity(64);
                    encode(&mut frame);
                    let timeout = self.timeouts.request.min(deadline - Instant::now());
                    conn.request(call.opcode, frame, timeout).await
                }
                Err(e) => Err(e),
            };
            let err = match outcome {
                Ok(reply) => {
                    let status = reply
                        .get(4..6)
                        .map(|s| u16::from_be_bytes([s[0], s[1]]))
                        .and_then(Status::from_u16)
                        .unwrap_or(Status::Ok);
                    if status == Status::NotMyBucket {
                        let learned = match (call.route_key, self.redirect_of(&reply)) {
                            (Some(key), Some(redirect)) => {
                                Some(self.learn(&redirect, key, &target))
                            }
                            _ => None,
                        };
                        // Undecodable, or for a keyless request: the caller decodes it.
                        let Some((err, moved)) = learned else {
                            return Ok(reply);
                        };
                        hops += 1;
                        if hops.is_multiple_of(HOPS_BEFORE_REFETCH) {
                            let seen = self.inner.fetches.load(Ordering::Acquire);
                            self.refetch(seen, None, None, deadline).await;
                        }
                        last_error = Some(err);
                        if moved || self.target_of(call.route_key) != target {
                            continue;
                        }
                        retries = retries.saturating_add(1);
                        let wake = (Instant::now() + config.backoff(retries)).min(deadline);
                        tokio::time::sleep_until(wake).await;
                        continue;
                    }
                    if !status.is_transient() {
                        return Ok(reply);
                    }
                    self.decode(&reply, Err::<(), _>)
                        .err()
                        .unwrap_or(Error::server(status, b""))
                }
                Err(e @ Error::Connection(_)) => e,
                Err(Error::InDoubt(f)) if call.idempotent && f.kind() != FailureKind::Timeout => {
                    Error::InDoubt(f)
                }
                Err(e) => return Err(e),
            };
            last_error = Some(err);
            if let Target::Node(addr) = &target {
                // The owner could not be reached: maybe it is gone and the table has moved on.
                let seen = self.inner.fetches.load(Ordering::Acquire);
                self.refetch(seen, None, Some(addr), deadline).await;
                if self.target_of(call.route_key) != target {
                    continue;
                }
            }
            retries = retries.saturating_add(1);
            let pause = config.backoff(retries);
            let wake = (Instant::now() + pause).min(deadline);
            tokio::time::sleep_until(wake).await;
        }
    }

    fn lock_routing(&self) -> std::sync::MutexGuard<'_, RoutingTable> {
        self.inner.routing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a request with this routing key goes now.
    fn target_of(&self, route_key: Option<&[u8]>) -> Target {
        route_key
            .and_then(|key| self.lock_routing().owner_of(key))
            .map_or(Target::Seed, Target::Node)
    }

    /// The redirect in a NOT_MY_BUCKET reply, if it decodes.
    fn redirect_of(&self, reply: &Bytes) -> Option<Redirect> {
        let decoded = decode_reply(reply, &self.inner.config.limits).ok()??.0;
        match decoded.body {
            ReplyBody::Redirect(r) => Some(Redirect::from(r)),
            _ => None,
        }
    }

    /// Takes in a redirect for `key` that `from` answered: updates the bucket's entry if the
    /// redirect's epoch is newer, and asks the refresher for the whole table when the epoch
    /// is newer than the table (or the bucket count differs). Returns the error to report if
    /// the call ends here, and whether the entry changed.
    fn learn(&self, redirect: &Redirect, key: &[u8], from: &Target) -> (Error, bool) {
        self.inner.redirects.fetch_add(1, Ordering::Relaxed);
        let (moved, stale_table) = {
            let mut routing = self.lock_routing();
            let same_count = routing.bucket_of(key) == redirect.bucket;
            let moved = same_count
                && redirect
                    .owner_addr
                    .as_deref()
                    .is_some_and(|owner| routing.update(redirect.bucket, redirect.epoch, owner));
            (moved, !same_count || redirect.epoch > routing.version())
        };
        if stale_table {
            let hint = match from {
                Target::Node(addr) => Some(addr),
                Target::Seed => None,
            };
            self.inner.config.table_notices.wake_for(hint);
        }
        (Error::NotMyBucket(redirect.clone()), moved)
    }

    /// Fetches the bucket table and merges it into the routing table, unless a fetch finished
    /// since the caller read `seen` from `fetches` (then it waits for that one and uses it).
    /// Sources, each tried once until one answers: `first`, the table's members, the seeds;
    /// `avoid` (an owner just found unreachable) is skipped. Returns whether a table arrived.
    async fn refetch(
        &self,
        seen: u64,
        first: Option<Arc<str>>,
        avoid: Option<&str>,
        deadline: Instant,
    ) -> bool {
        let Ok(_one_at_a_time) =
            tokio::time::timeout_at(deadline, self.inner.fetching.lock()).await
        else {
            return false;
        };
        if self.inner.fetches.load(Ordering::Acquire) != seen {
            return true;
        }
        let mut sources: Vec<Arc<str>> = first.into_iter().collect();
        {
            let routing = self.lock_routing();
            let members = routing.nodes();
            // Start at a random member so that clients spread their fetches.
            let start = fastrand::usize(..members.len().max(1));
            for k in 0..members.len() {
                sources.push(members[(start + k) % members.len()].clone());
            }
        }
        sources.extend(
            self.inner
                .config
                .seeds
                .iter()
                .map(|s| Arc::from(s.as_str())),
        );
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut got = false;
        for addr in sources {
            if Instant::now() >= deadline {
                break;
            }
            if avoid == Some(&*addr) || tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let Ok(view) = self.fetch_table_from(&addr, deadline).await else {
                continue;
            };
            got = true;
            let version = {
                let mut routing = self.lock_routing();
                routing.apply(&view);
                routing.version()
            };
            if view.buckets.is_empty() {
                // A node in no cluster: route everything to the seed, unless the client
                // already knows a cluster (then this node is new or wiped: ask another).
                if version == 0 {
                    break;
                }
                continue;
            }
            // A member that has not applied the announced table yet: ask another.
            if version >= self.inner.config.table_notices.announced() {
                break;
            }
        }
        self.inner.fetches.fetch_add(1, Ordering::AcqRel);
        got
    }

    /// TABLE_GET on one server, one attempt.
    async fn fetch_table_from(&self, addr: &str, deadline: Instant) -> Result<TableView, Error> {
        let conn = self
            .node(addr)
            .connection(&self.inner.config, deadline)
            .await?;
        let mut frame = Vec::with_capacity(16);
        Request {
            id: 0,
            command: Command::TableGet,
        }
        .encode(&mut frame);
        let timeout = self
            .timeouts
            .request
            .min(deadline.saturating_duration_since(Instant::now()));
        let reply = conn.request(Opcode::TableGet, frame, timeout).await?;
        self.decode_table(&reply)
    }

    /// Decodes a TABLE_GET reply, counting a table that arrived.
    fn decode_table(&self, reply: &Bytes) -> Result<TableView, Error> {
        let view = self
            .decode(reply, |r| match (r.status, r.body) {
                (Status::Ok, ReplyBody::Table(t)) => Ok(t.view()),
                _ => Err(r),
            })?
            .map_err(|e| Error::Protocol(format!("invalid table: {}", e.as_str())))?;
        self.inner.table_fetches.fetch_add(1, Ordering::Relaxed);
        Ok(view)
    }

    /// Starts the background refresher once, from inside the caller's runtime. It fetches
    /// the table at once, then whenever a notice or a redirect wakes it, and every
    /// [`REFRESH_INTERVAL`]. It holds the client only weakly and ends once the last clone is
    /// dropped.
    fn start_refresher(&self) {
        if self.inner.refresher_started.load(Ordering::Relaxed)
            || self.inner.refresher_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.refresher_started.store(false, Ordering::Release);
            return;
        };
        let notices = self.inner.config.table_notices.clone();
        // The first fetch happens at once.
        notices.wake.notify_one();
        runtime.spawn(refresh_loop(
            Arc::downgrade(&self.inner),
            notices,
            self.timeouts,
        ));
    }

    /// A usable connection to `target`; for the seed, each seed address in turn.
    async fn connection(
        &self,
        target: &Target,
        deadline: Instant,
    ) -> Result<Arc<Connection>, Error> {
        let config = &self.inner.config;
        match target {
            Target::Node(addr) => self.node(addr).connection(config, deadline).await,
            Target::Seed => {
                let seeds = &config.seeds;
                let start = self.inner.seed_cursor.load(Ordering::Relaxed);
                let mut last = Error::Timeout;
                for k in 0..seeds.len() {
                    let idx = (start + k) % seeds.len();
                    match self.node(&seeds[idx]).connection(config, deadline).await {
                        Ok(conn) => {
                            if idx != start {
                                self.inner.seed_cursor.store(idx, Ordering::Relaxed);
                            }
                            return Ok(conn);
                        }
                        Err(e @ (Error::Connection(_) | Error::Timeout)) => last = e,
                        Err(e) => return Err(e),
                    }
                    if Instant::now() >= deadline {
                        return Err(last);
                    }
                }
                // Every seed is gone (the members it was given may have left the cluster):
                // the members of the last table are as good.
                let members: Vec<Arc<str>> = self.lock_routing().nodes().to_vec();
                for addr in members
                    .iter()
                    .filter(|a| !seeds.iter().any(|s| ***a == **s))
                {
                    match self.node(addr).connection(config, deadline).await {
                        Ok(conn) => return Ok(conn),
                        Err(e @ (Error::Connection(_) | Error::Timeout)) => last = e,
                        Err(e) => return Err(e),
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Err(last)
            }
        }
    }

    fn node(&self, addr: &str) -> Arc<Node> {
        let mut nodes = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = nodes.get(addr) {
            return node.clone();
        }
        let addr: Arc<str> = Arc::from(addr);
        let node = Arc::new(Node {
            addr: addr.clone(),
            slots: (0..self.inner.config.connections_per_node)
                .map(|_| Mutex::new(None))
                .collect(),
            next_slot: AtomicUsize::new(0),
            connecting: tokio::sync::Mutex::new(Backoff::default()),
        });
        nodes.insert(addr, node.clone());
        node
    }
}

/// The background refresher (see [`Client::start_refresher`]).
async fn refresh_loop(
    inner: Weak<Inner>,
    notices: Arc<crate::connection::TableNotices>,
    timeouts: Timeouts,
) {
    let mut failures: u32 = 0;
    loop {
        let wait = if failures == 0 {
            REFRESH_INTERVAL
        } else {
            let shift = (failures - 1).min(6);
            (Duration::from_millis(100) * (1u32 << shift)).min(FETCH_RETRY_MAX)
        };
        tokio::select! {
            () = notices.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client { inner, timeouts };
        let seen = client.inner.fetches.load(Ordering::Acquire);
        let deadline = Instant::now() + FETCH_BUDGET;
        client
            .refetch(seen, notices.announced_by(), None, deadline)
            .await;
        // Try again soon only while an announced table is still missing; a server that
        // cannot answer TABLE_GET (or a cluster that is down) is asked again on the next
        // notice, redirect or interval.
        if client.table_version() >= notices.announced() {
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
        drop(client);
        tokio::time::sleep(NOTICE_COALESCE).await;
    }
}

fn item(frame: &Bytes, found: shoal_proto::Found<'_>) -> Item {
    Item {
        value: frame.slice_ref(found.value),
        flags: found.flags,
        hash: found.hash,
    }
}
