//! The async [`Client`]: operations, their argument checks and reply decoding, and the one
//! retry loop that every operation goes through (deadline, backoff, seeds, redirects).
//!
//! Retry policy of one call, all inside its deadline:
//! - not sent ([`Error::Connection`]): wait a jittered backoff, reconnect (same or next seed),
//!   send again. Nothing reached the server, so this holds for every operation.
//! - a transient status (`SHUTTING_DOWN`, `BUSY`, `PAUSED`, `LOADING`: nothing was done):
//!   back off and send again, for every operation.
//! - `NOT_MY_BUCKET`: update the bucket table (newer epoch only) and send once more, to the
//!   owner named in the redirect; a second one (or one naming no owner) is returned as
//!   [`Error::NotMyBucket`]. An MGET entry for a key whose bucket the server does not serve
//!   fails the call with the same error. (Routing by the whole table comes later.)
//! - in doubt ([`Error::InDoubt`]) because the connection failed: send again only if the
//!   command is idempotent ([`shoal_proto::Command::is_idempotent`]); otherwise the caller
//!   gets `InDoubt`. A request that timed out is never resent (the server may just be slow).
//!
//! Connections live in per-server [`Node`]s, opened lazily and replaced when they fail.

use crate::builder::{ClientBuilder, Config};
use crate::connection::Connection;
use crate::error::{Error, FailureKind, LimitKind, Redirect};
use crate::routing::RoutingTable;
use bytes::Bytes;
use shoal_proto::{
    decode_reply, encode_multi_get, Command, MultiGetEntry, NodeStatus, Opcode, Reply, ReplyBody,
    Request, Status, StoreMode, TableView,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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
}

/// Where a request goes.
#[derive(Clone)]
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
        // Each client counts the notices its own connections receive.
        config.announced_table = Default::default();
        let timeouts = Timeouts {
            request: config.request_timeout,
            deadline: config.deadline,
        };
        Self {
            inner: Arc::new(Inner {
                routing: Mutex::new(RoutingTable::new(config.buckets)),
                nodes: Mutex::new(HashMap::new()),
                seed_cursor: AtomicUsize::new(0),
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
    /// Batches larger than the `max_batch` limit are split, as are batches the server finds
    /// too large to answer in one frame.
    ///
    /// # Errors
    /// See [`Error`]; the first failing batch's error is returned.
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Item>>, Error> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        for key in &keys {
            self.check_key(key)?;
        }
        let mut out: Vec<Option<Item>> = vec![None; keys.len()];
        // Group by owner so each MGET goes to one server.
        let mut groups: HashMap<Option<Arc<str>>, Vec<usize>> = HashMap::new();
        {
            let routing = self.inner.routing.lock().unwrap_or_else(|e| e.into_inner());
            for (i, key) in keys.iter().enumerate() {
                groups.entry(routing.owner_of(key)).or_default().push(i);
            }
        }
        let max_batch = self.inner.config.limits.max_batch;
        let mut work: Vec<Vec<usize>> = groups
            .into_values()
            .flat_map(|idx| {
                idx.chunks(max_batch)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        while let Some(batch) = work.pop() {
            let batch_keys: Vec<&[u8]> = batch.iter().map(|&i| keys[i]).collect();
            let call = Call {
                opcode: Opcode::MultiGet,
                route_key: batch_keys.first().copied(),
                idempotent: true,
            };
            let reply = self
                .call(&call, |buf| {
                    encode_multi_get(buf, 0, batch_keys.iter().copied());
                })
                .await?;
            let got = self.decode(&reply, |r| match (r.status, r.body) {
                (Status::Ok, ReplyBody::Values(list)) if list.len() == batch.len() => {
                    let mut items = Vec::with_capacity(batch.len());
                    for entry in list.iter() {
                        match entry {
                            MultiGetEntry::Miss => items.push(None),
                            MultiGetEntry::Hit(f) => items.push(Some(item(&reply, f))),
                            MultiGetEntry::NotMyBucket(n) => {
                                return Ok(Err(Error::NotMyBucket(Redirect::from(n))))
                            }
                        }
                    }
                    Ok(Ok(Some(items)))
                }
                (Status::ValueTooLarge, _) if batch.len() > 1 => Ok(Ok(None)),
                _ => Err(r),
            })??;
            match got {
                Some(items) => {
                    for (&i, entry) in batch.iter().zip(items) {
                        out[i] = entry;
                    }
                }
                None => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    work.push(a.to_vec());
                    work.push(b.to_vec());
                }
            }
        }
        Ok(out)
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

    /// The whole bucket table of the seed server (TABLE_GET), as it has applied it.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn table(&self) -> Result<TableView, Error> {
        let reply = self.command(Command::TableGet).await?;
        self.decode(&reply, |r| match (r.status, r.body) {
            (Status::Ok, ReplyBody::Table(t)) => Ok(t.view()),
            _ => Err(r),
        })?
        .map_err(|e| Error::Protocol(format!("invalid table: {}", e.as_str())))
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

    /// The newest bucket-table version a server announced to this client (a
    /// `TABLE_CHANGED` notice on any of its connections); 0 when none did. The client does
    /// not act on it yet.
    pub fn announced_table_version(&self) -> u64 {
        self.inner.config.announced_table.load(Ordering::Relaxed)
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

    /// The retry loop (see the module documentation). `encode` appends the request frame
    /// (any request id; the connection sets it) and may be called once per attempt.
    async fn call(&self, call: &Call<'_>, encode: impl Fn(&mut Vec<u8>)) -> Result<Bytes, Error> {
        let config = &self.inner.config;
        let deadline = Instant::now() + self.timeouts.deadline;
        let mut target = match call.route_key {
            Some(key) => {
                let routing = self.inner.routing.lock().unwrap_or_else(|e| e.into_inner());
                routing.owner_of(key).map_or(Target::Seed, Target::Node)
            }
            None => Target::Seed,
        };
        let mut redirected = false;
        let mut retries: u32 = 0;
        let mut last_error: Option<Error> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.unwrap_or(Error::Timeout));
            }
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
                    if status == Status::NotMyBucket && !redirected {
                        if let Some(owner) = self.follow_redirect(&reply) {
                            redirected = true;
                            target = Target::Node(owner);
                            continue;
                        }
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
            retries = retries.saturating_add(1);
            let pause = config.backoff(retries);
            let wake = (Instant::now() + pause).min(deadline);
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Reads a NOT_MY_BUCKET reply, updates the table, and returns the owner to retry at.
    fn follow_redirect(&self, reply: &Bytes) -> Option<Arc<str>> {
        let decoded = decode_reply(reply, &self.inner.config.limits).ok()??.0;
        let ReplyBody::Redirect(redirect) = decoded.body else {
            return None;
        };
        let owner = redirect.owner_addr()?;
        let mut routing = self.inner.routing.lock().unwrap_or_else(|e| e.into_inner());
        routing.update(redirect.bucket, redirect.epoch, owner);
        Some(Arc::from(owner))
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

fn item(frame: &Bytes, found: shoal_proto::Found<'_>) -> Item {
    Item {
        value: frame.slice_ref(found.value),
        flags: found.flags,
        hash: found.hash,
    }
}
