//! The native protocol session: decodes every complete frame in the input, makes one
//! [`Keyspace`](crate::keyspace::Keyspace) call for it, and appends the reply. No I/O.
//!
//! HELLO must come first; anything else before it is answered with `HELLO_REQUIRED` and the
//! connection closes. Malformed frames are answered with the status of their error; the
//! connection stays open only when the frame was well delimited (see `DecodeError::skip`).
//! Every key-addressed command passes through [`NativeSession::keyed`], one keyspace call
//! each.
//!
//! A key of a bucket this node does not serve is answered `NOT_MY_BUCKET` with the redirect
//! (the keyspace refused it before touching the store, so it was not applied); in an MGET such
//! a key gets its own redirect entry and the other keys are answered as usual. TABLE_GET and
//! NODE_STATUS answer from the node's [`ClusterView`]; a connection that completed HELLO is
//! sent a `TABLE_CHANGED` notice whenever the applied table version changes (the connection
//! driver calls [`Session::on_table_change`]).
//!
//! SAVE writes the savefile on a blocking thread; its reply is a pending one
//! ([`Output::defer`]), so the connection goes on serving other requests meanwhile and the
//! SAVE reply leaves when the file is on disk (native replies carry their request id, so they
//! need not leave in order). CLUSTER_ADMIN is pending the same way, until the control plane
//! has committed the change (or refused it).

use super::{Output, Session, Shared, Step};
use crate::cluster::lease::LEASE_RAN_OUT;
use crate::cluster::state::{ClusterState, NodeState};
use crate::cluster::{ClusterView, Redirect};
use crate::keyspace::ItemRef;
use crate::keyspace::{Expiry, OpError, StoreError, WriteMode};
use crate::persist::PersistError;
use crate::stats::ServerStats;
use shoal_proto::cluster::{
    self as wire, encode_table_changed, AdminRequest, NotMyBucket, NO_PRIMARY,
};
use shoal_proto::{
    decode_request, Command, DecodeError, DecodeErrorKind, FrameWriter, Header, MultiGetWriter,
    Opcode, Reply, ReplyBody, Request, StatsWriter, Status, StoreMode, HEADER_LEN,
    PROTOCOL_VERSION,
};
use std::collections::BTreeMap;

/// Name and version the server reports in HELLO and STATS.
pub const SERVER_NAME: &str = concat!("shoald ", env!("CARGO_PKG_VERSION"));

/// Per-connection state of the native protocol.
pub struct NativeSession {
    shared: Shared,
    hello_done: bool,
}

impl NativeSession {
    /// A session for a new connection.
    pub fn new(shared: Shared) -> Self {
        Self {
            shared,
            hello_done: false,
        }
    }

    /// The frame sent to a connection refused at the connection limit.
    pub fn refusal() -> Vec<u8> {
        let mut out = Vec::new();
        notice(&mut out, Status::Busy, b"too many connections");
        out
    }

    /// Runs one request; returns true when the connection must close after the reply.
    fn handle(&mut self, req: Request<'_>, out: &mut Output) -> bool {
        let id = req.id;
        let op = req.command.opcode();
        if !self.hello_done {
            return match req.command {
                Command::Hello {
                    min_version,
                    max_version,
                    ..
                } => {
                    if (min_version..=max_version).contains(&PROTOCOL_VERSION) {
                        self.hello_done = true;
                        ok(
                            out,
                            op,
                            id,
                            ReplyBody::Hello {
                                version: PROTOCOL_VERSION,
                                server: SERVER_NAME.as_bytes(),
                                buckets: Some(self.shared.keyspace.buckets()),
                            },
                        );
                        false
                    } else {
                        error(
                            out,
                            op,
                            Status::UnsupportedVersion,
                            id,
                            b"this server speaks version 1",
                        );
                        true
                    }
                }
                _ => {
                    let stats = self.shared.keyspace.stats();
                    ServerStats::incr(&stats.hello_required);
                    ServerStats::incr(&stats.bad_input);
                    error(out, op, Status::HelloRequired, id, b"send HELLO first");
                    true
                }
            };
        }
        match req.command {
            Command::Hello { .. } => {
                error(out, op, Status::BadRequest, id, b"HELLO was already sent");
                true
            }
            Command::Goodbye => {
                ServerStats::incr(&self.shared.keyspace.stats().goodbyes);
                ok_empty(out, op, id);
                true
            }
            Command::Ping => {
                ok_empty(out, op, id);
                false
            }
            Command::Stats { .. } => {
                self.stats(out, id);
                false
            }
            Command::MultiGet { keys } => {
                self.multi_get(out, id, keys.iter());
                false
            }
            Command::Save => {
                self.save(out, id);
                false
            }
            Command::SetPersist { mode } => {
                match self.shared.keyspace.set_persist_mode(mode) {
                    Ok(()) => ok_empty(out, op, id),
                    Err(e) => persist_error(out, op, id, &e),
                }
                false
            }
            Command::TableGet => {
                let table = table_view(&self.shared.keyspace.cluster().state());
                table.encode(FrameWriter::reply(out, op, Status::Ok, id).buffer());
                false
            }
            Command::NodeStatus => {
                let status = self.node_status();
                status.encode(FrameWriter::reply(out, op, Status::Ok, id).buffer());
                false
            }
            Command::ClusterAdmin { request } => {
                self.cluster_admin(out, id, request);
                false
            }
            command => {
                self.keyed(out, id, command);
                false
            }
        }
    }

    /// Whether `command` addresses a parked bucket: it then waits (unconsumed) until the
    /// switchover ends, and is answered by the table that results (served, or redirected
    /// with the new owner). One atomic load when nothing is parked.
    #[inline]
    fn waits_for_park(&self, command: &Command<'_>) -> bool {
        let cluster = self.shared.keyspace.cluster();
        if !cluster.any_parked() {
            return false;
        }
        let buckets = self.shared.keyspace.buckets();
        let parked = |key: &[u8]| cluster.is_parked(shoal_proto::hash::bucket_of(key, buckets));
        match command {
            Command::MultiGet { keys } => keys.iter().any(parked),
            other => other.key().is_some_and(parked),
        }
    }

    /// Commands that address one key: one keyspace call each.
    fn keyed(&self, out: &mut Vec<u8>, id: u32, command: Command<'_>) {
        let keyspace = &self.shared.keyspace;
        let op = command.opcode();
        let result: Result<(), OpError> = match command {
            Command::Get { key } => keyspace
                .get(key, |item| {
                    let mut w = FrameWriter::reply(out, op, Status::Ok, id);
                    w.u32(item.flags());
                    write_value(&mut w, &item);
                })
                .and_then(hit),
            Command::GetWithHash { key } => keyspace
                .get(key, |item| value_with_hash(out, op, id, &item))
                .and_then(hit),
            Command::GetAndTouch { key, ttl } => keyspace
                .get_and_touch(key, Expiry::from_ttl(ttl), |item| {
                    value_with_hash(out, op, id, &item)
                })
                .and_then(hit),
            Command::Touch { key, ttl } => keyspace
                .touch(key, Expiry::from_ttl(ttl))
                .map(|()| ok_empty(out, op, id)),
            Command::Store {
                mode,
                key,
                value,
                flags,
                ttl,
            } => {
                #[cfg(feature = "fault-injection")]
                if matches!(mode, StoreMode::Set) && crate::fault::drop_write() {
                    stored(out, op, id, shoal_proto::hash::value_hash(value));
                    return;
                }
                let mode = match mode {
                    StoreMode::Set => WriteMode::Set,
                    StoreMode::Add => WriteMode::Add,
                    StoreMode::Replace => WriteMode::Replace,
                };
                keyspace
                    .set(mode, key, value, flags, Expiry::from_ttl(ttl))
                    .map(|w| stored(out, op, id, w.hash))
            }
            Command::Cas {
                key,
                value,
                flags,
                ttl,
                expected,
            } => keyspace
                .set(
                    WriteMode::Cas(expected),
                    key,
                    value,
                    flags,
                    Expiry::from_ttl(ttl),
                )
                .map(|w| stored(out, op, id, w.hash)),
            Command::Concat {
                prepend,
                key,
                value,
            } => keyspace
                .concat(key, value, prepend)
                .map(|w| stored(out, op, id, w.hash)),
            Command::Delete { key, expected } => keyspace
                .delete(key, expected)
                .map(|_| ok_empty(out, op, id)),
            Command::Counter {
                decr,
                key,
                delta,
                create,
            } => {
                let create = create.map(|(initial, ttl)| (initial, Expiry::from_ttl(ttl)));
                keyspace.incr(key, delta, decr, create).map(|(value, w)| {
                    let body = ReplyBody::Counter {
                        value,
                        hash: w.hash,
                    };
                    ok(out, op, id, body);
                })
            }
            Command::Hello { .. }
            | Command::Goodbye
            | Command::Ping
            | Command::Stats { .. }
            | Command::MultiGet { .. }
            | Command::Save
            | Command::SetPersist { .. }
            | Command::TableGet
            | Command::NodeStatus
            | Command::ClusterAdmin { .. } => Ok(()),
        };
        if let Err(e) = result {
            op_error(out, op, id, e);
        }
    }

    /// What this node says about itself (NODE_STATUS).
    fn node_status(&self) -> wire::NodeStatus {
        let keyspace = &self.shared.keyspace;
        let cluster = keyspace.cluster();
        let state = cluster.state();
        let raft = cluster.raft_status();
        let store = keyspace.store_stats();
        let wall_clock_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        wire::NodeStatus {
            node_id: cluster.me().0,
            cluster_id: state.cluster_id.map(|c| c.0),
            role: raft.role,
            term: raft.term,
            last_applied: raft.last_applied,
            leader: raft.leader.map(|l| l.0),
            table_version: state.table_version,
            buckets_owned: owned_count(cluster, keyspace.buckets()),
            memory_used: store.bytes,
            memory_limit: store.memory,
            items: store.items,
            wall_clock_us,
            version: SERVER_NAME.to_string(),
            moves: cluster.move_progress(),
            replication: {
                let (replica_of, in_sync_of, building) = state.replica_counts(cluster.me());
                wire::ReplicationStatus {
                    setting: state.settings.replicas,
                    replica_of,
                    in_sync_of,
                    building,
                }
            },
            lease_left_ms: Some(
                cluster
                    .lease()
                    .left(std::time::Instant::now())
                    .map_or(0, |left| {
                        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
                    }),
            ),
        }
    }

    /// CLUSTER_ADMIN: the control plane commits the change; the reply is pending until it
    /// has (or has refused it), and the connection goes on serving meanwhile.
    fn cluster_admin(&self, out: &mut Output, id: u32, request: AdminRequest) {
        let control = self.shared.keyspace.cluster().control().clone();
        out.defer(Box::pin(async move {
            let mut reply = Vec::new();
            let op = Opcode::ClusterAdmin;
            match control.admin(request).await {
                Ok(message) => {
                    FrameWriter::reply(&mut reply, op, Status::Ok, id)
                        .short(clip(&message).as_bytes());
                }
                Err(e) => error(
                    &mut reply,
                    op,
                    e.status(),
                    id,
                    clip(&e.to_string()).as_bytes(),
                ),
            }
            reply
        }));
    }

    fn multi_get<'k>(&self, out: &mut Vec<u8>, id: u32, keys: impl Iterator<Item = &'k [u8]>) {
        let max_frame = self.shared.limits.max_frame;
        let mut w = MultiGetWriter::new(out, id);
        for key in keys {
            let got = self.shared.keyspace.get(key, |item| {
                w.hit_header(item.flags(), item.hash(), item.value_len() as u32);
                for chunk in item.value_chunks() {
                    w.buffer().extend_from_slice(chunk);
                }
            });
            match got {
                Ok(Some(())) => {}
                // A get fails only for a foreign bucket; store errors cannot happen for keys
                // the decoder accepted, and would read as a miss.
                Ok(None) | Err(OpError::Store(_)) => w.miss(),
                Err(OpError::NotMyBucket(r)) => w.not_my_bucket(&redirect_body(&r)),
                Err(OpError::NoLease) => {
                    w.discard();
                    error(out, Opcode::MultiGet, Status::NoLease, id, NO_LEASE);
                    return;
                }
            }
            if w.body_len() > max_frame {
                w.discard();
                error(
                    out,
                    Opcode::MultiGet,
                    Status::ValueTooLarge,
                    id,
                    b"reply would exceed the frame limit; split the batch",
                );
                return;
            }
        }
    }

    /// SAVE: the savefile is written on a blocking thread; the reply is pending until it is
    /// on disk, and the connection goes on serving meanwhile.
    fn save(&self, out: &mut Output, id: u32) {
        let saving = self.shared.keyspace.save();
        out.defer(Box::pin(async move {
            let mut reply = Vec::new();
            match saving.await {
                Ok(s) => {
                    let body = ReplyBody::Saved {
                        items: s.items,
                        bytes: s.bytes,
                    };
                    ok(&mut reply, Opcode::Save, id, body);
                }
                Err(e) => persist_error(&mut reply, Opcode::Save, id, &e),
            }
            reply
        }));
    }

    fn stats(&self, out: &mut Vec<u8>, id: u32) {
        let mut w = StatsWriter::new(out, id);
        w.stat("version", SERVER_NAME);
        w.stat("pid", std::process::id());
        for (def, value) in self.shared.stats() {
            w.stat(def.name, value);
        }
        for (name, value) in self.shared.keyspace.persist_stats() {
            w.stat(name, value);
        }
    }

    /// Answers a frame that failed to decode; returns how far the stream can go on, or `None`
    /// when the connection must close.
    fn reject(&self, e: DecodeError, out: &mut Vec<u8>) -> Option<usize> {
        let stats = self.shared.keyspace.stats();
        ServerStats::incr(&stats.bad_input);
        match e.kind {
            DecodeErrorKind::BadMagic => ServerStats::incr(&stats.bad_magic),
            DecodeErrorKind::FrameTooLarge => ServerStats::incr(&stats.frame_too_large),
            DecodeErrorKind::KeyTooLong | DecodeErrorKind::EmptyKey => {
                ServerStats::incr(&stats.bad_key)
            }
            DecodeErrorKind::ValueTooLarge => ServerStats::incr(&stats.value_too_large),
            DecodeErrorKind::UnknownOpcode => ServerStats::incr(&stats.unknown_command),
            _ => {}
        }
        tracing::debug!(error = %e, request_id = ?e.request_id, "bad native frame");
        let message = e.kind.as_str().as_bytes();
        match (e.request_id, e.opcode) {
            (Some(id), Some(opcode)) => {
                FrameWriter::reply_raw(out, opcode, e.kind.status(), id).short(message);
            }
            _ => notice(out, e.kind.status(), message),
        }
        e.skip
    }
}

impl Session for NativeSession {
    fn on_input(&mut self, input: &[u8], out: &mut Output) -> Step {
        let mut consumed = 0;
        let mut parked = false;
        let mut requests = 0u64;
        let limits = self.shared.limits;
        let close = loop {
            if out.is_full() {
                break false;
            }
            match decode_request(&input[consumed..], &limits) {
                Ok(None) => break false,
                Ok(Some((req, used))) => {
                    if self.waits_for_park(&req.command) {
                        parked = true;
                        break false;
                    }
                    consumed += used;
                    requests += 1;
                    let keyspace = &self.shared.keyspace;
                    let gated = keyspace.gated(|| {
                        let many = match &req.command {
                            Command::MultiGet { keys } => Some(keys.iter()),
                            _ => None,
                        };
                        req.command
                            .key()
                            .into_iter()
                            .chain(many.into_iter().flatten())
                    });
                    let mark = out.mark();
                    let (op, id) = (req.command.opcode(), req.id);
                    if self.handle(req, out) {
                        break true;
                    }
                    let hold = gated.and_then(|g| self.shared.keyspace.copies_hold(g));
                    if let Some(hold) = hold {
                        out.hold_back(mark, hold, move || {
                            let mut reply = Vec::new();
                            error(
                                &mut reply,
                                op,
                                Status::InDoubt,
                                id,
                                LEASE_RAN_OUT.as_bytes(),
                            );
                            reply
                        });
                    }
                }
                Err(e) => match self.reject(e, out) {
                    Some(skip) => consumed += skip,
                    None => {
                        consumed = input.len();
                        break true;
                    }
                },
            }
        };
        ServerStats::add(&self.shared.keyspace.stats().native_requests, requests);
        Step {
            consumed,
            close,
            more: false,
            parked,
        }
    }

    fn request_len(&self, input: &[u8]) -> Option<usize> {
        match Header::decode(input, &self.shared.limits) {
            Ok(Some(h)) => Some(HEADER_LEN + h.body_len as usize),
            Ok(None) | Err(_) => None,
        }
    }

    fn on_shutdown(&mut self, out: &mut Output) {
        notice(out, Status::ShuttingDown, b"server is stopping");
    }

    fn table_notices(&self) -> bool {
        self.hello_done
    }

    fn on_table_change(&mut self, version: u64, out: &mut Output) {
        if self.hello_done {
            encode_table_changed(out, version);
        }
    }

    fn ordered_replies(&self) -> bool {
        false
    }
}

/// `Ok(())` for a hit, `NOT_FOUND` for a miss.
fn hit(found: Option<()>) -> Result<(), OpError> {
    found.ok_or(OpError::Store(StoreError::NotFound))
}

/// Answers a keyspace error: `NOT_MY_BUCKET` with the redirect, or the status and message
/// of a store error.
fn op_error(out: &mut Vec<u8>, op: Opcode, id: u32, e: OpError) {
    match e {
        OpError::NotMyBucket(r) => {
            let body = redirect_body(&r);
            body.encode(FrameWriter::reply(out, op, Status::NotMyBucket, id).buffer());
        }
        OpError::Store(e) => {
            let (status, message) = store_error_status(e);
            error(out, op, status, id, message.as_bytes());
        }
        OpError::NoLease => error(out, op, Status::NoLease, id, NO_LEASE),
    }
}

/// The message of a `NO_LEASE` reply.
const NO_LEASE: &[u8] = b"this node holds no lease from the cluster; try again";

/// The wire form of a redirect.
fn redirect_body(r: &Redirect) -> NotMyBucket<'_> {
    let (owner, addr) = match &r.owner {
        Some((id, addr)) => (id.0, addr.as_bytes()),
        None => ([0; 16], &b""[..]),
    };
    NotMyBucket {
        bucket: r.bucket,
        epoch: r.epoch,
        owner,
        addr,
    }
}

/// The applied table in its TABLE_GET form: nodes in id order, primaries as indexes.
fn table_view(state: &ClusterState) -> wire::TableView {
    let index: BTreeMap<_, u16> = state
        .nodes
        .keys()
        .take(wire::MAX_TABLE_NODES)
        .enumerate()
        .map(|(i, id)| (*id, i as u16))
        .collect();
    wire::TableView {
        version: state.table_version,
        nodes: state
            .nodes
            .iter()
            .take(wire::MAX_TABLE_NODES)
            .map(|(id, m)| wire::TableNode {
                id: id.0,
                state: match m.state {
                    NodeState::Joining => wire::NodeState::Joining,
                    NodeState::Active => wire::NodeState::Active,
                    NodeState::Draining => wire::NodeState::Draining,
                    NodeState::Down => wire::NodeState::Down,
                },
                native: m.addrs.native.clone(),
                memcache: m.addrs.memcache.clone().unwrap_or_default(),
            })
            .collect(),
        buckets: state
            .buckets
            .iter()
            .map(|b| wire::TableBucket {
                primary: b
                    .primary
                    .and_then(|p| index.get(&p).copied())
                    .unwrap_or(NO_PRIMARY),
                epoch: b.epoch,
            })
            .collect(),
    }
}

/// How many of `buckets` buckets this node serves now.
fn owned_count(cluster: &ClusterView, buckets: u32) -> u32 {
    (0..buckets).filter(|&b| cluster.owns(b)).count() as u32
}

/// The status and message that report a store error.
fn store_error_status(e: StoreError) -> (Status, &'static str) {
    match e {
        StoreError::NotFound => (Status::NotFound, ""),
        StoreError::Exists => (Status::Exists, ""),
        StoreError::NotStored => (Status::NotStored, ""),
        StoreError::TooLarge => (Status::ValueTooLarge, "value larger than the limit"),
        StoreError::KeyTooLong => (Status::KeyTooLong, "key longer than the limit"),
        StoreError::EmptyKey => (Status::BadRequest, "empty key"),
        StoreError::NonNumeric => (Status::NonNumeric, "value is not a decimal number"),
        StoreError::OutOfMemory => (Status::OutOfMemory, "no memory could be freed"),
        // The keyspace reports a hidden bucket as NOT_MY_BUCKET, with the redirect.
        StoreError::Hidden => (Status::Busy, "the bucket is being copied here"),
        // Only the bucket-copy operations fail so; no client request reaches them.
        StoreError::ChangeLogActive | StoreError::NoSuchBucket => {
            (Status::ServerError, "internal error")
        }
    }
}

/// Answers an admin request that persistence refused.
fn persist_error(out: &mut Vec<u8>, op: Opcode, id: u32, e: &PersistError) {
    let status = match e {
        PersistError::Disabled => Status::BadRequest,
        PersistError::Busy => Status::Busy,
        PersistError::Cancelled => Status::ShuttingDown,
        PersistError::Io { .. } | PersistError::Damaged { .. } | PersistError::DataDir(_) => {
            Status::ServerError
        }
    };
    error(out, op, status, id, clip(&e.to_string()).as_bytes());
}

/// A message cut to at most 1 KiB, on a character boundary.
fn clip(message: &str) -> &str {
    let mut end = message.len().min(1024);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

fn write_value(w: &mut FrameWriter<'_>, item: &ItemRef<'_>) {
    w.value_len(item.value_len() as u32);
    for chunk in item.value_chunks() {
        w.raw(chunk);
    }
}

fn value_with_hash(out: &mut Vec<u8>, op: Opcode, id: u32, item: &ItemRef<'_>) {
    let mut w = FrameWriter::reply(out, op, Status::Ok, id);
    w.u32(item.flags()).u64(item.hash());
    write_value(&mut w, item);
}

/// An OK reply with `body`.
fn ok(out: &mut Vec<u8>, op: Opcode, id: u32, body: ReplyBody<'_>) {
    Reply {
        id,
        opcode: op,
        status: Status::Ok,
        body,
    }
    .encode(out);
}

fn ok_empty(out: &mut Vec<u8>, op: Opcode, id: u32) {
    FrameWriter::reply(out, op, Status::Ok, id);
}

fn stored(out: &mut Vec<u8>, op: Opcode, id: u32, hash: u64) {
    FrameWriter::reply(out, op, Status::Ok, id).u64(hash);
}

fn error(out: &mut Vec<u8>, op: Opcode, status: Status, id: u32, message: &[u8]) {
    FrameWriter::reply(out, op, status, id).short(message);
}

fn notice(out: &mut Vec<u8>, status: Status, message: &[u8]) {
    FrameWriter::reply(out, Opcode::Notice, status, 0).short(message);
}
