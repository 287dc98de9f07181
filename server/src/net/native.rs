//! The native protocol session: decodes every complete frame in the input, runs it against the
//! store, and appends the reply. No I/O.
//!
//! HELLO must come first; anything else before it is answered with `HELLO_REQUIRED` and the
//! connection closes. Malformed frames are answered with the status of their error; the
//! connection stays open only when the frame was well delimited (see `DecodeError::skip`).
//! Every key-addressed command passes through [`NativeSession::keyed`], the one place where
//! bucket ownership checks and redirects are made once the node is part of a cluster.
//!
//! Admin requests (SAVE, SET_PERSIST) go to the node's [`Persistence`]. SAVE writes the whole
//! savefile before it answers; it runs in `block_in_place`, so the runtime moves other tasks
//! off this worker thread meanwhile, and this connection waits for the reply.

use super::{Session, Shared, Step};
use crate::persist::{PersistError, Persistence};
use crate::stats::ServerStats;
use crate::store::{ItemRef, SetMode, StoreError};
use shoal_proto::{
    decode_request, Command, DecodeError, DecodeErrorKind, FrameWriter, MultiGetWriter, Opcode,
    Reply, ReplyBody, Request, StatsWriter, Status, StoreMode, PROTOCOL_VERSION,
};

/// Name and version the server reports in HELLO and STATS.
pub const SERVER_NAME: &str = concat!("shoald ", env!("CARGO_PKG_VERSION"));

/// Per-connection state of the native protocol.
pub struct NativeSession {
    shared: Shared,
    /// The node's persistence, for the admin requests.
    persistence: Persistence,
    hello_done: bool,
}

impl NativeSession {
    /// A session for a new connection on a node without persistence.
    pub fn new(shared: Shared) -> Self {
        Self::with_persistence(shared, Persistence::disabled())
    }

    /// A session for a new connection; admin requests act on `persistence`.
    pub fn with_persistence(shared: Shared, persistence: Persistence) -> Self {
        Self {
            shared,
            persistence,
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
    fn handle(&mut self, req: Request<'_>, out: &mut Vec<u8>) -> bool {
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
                        let body = ReplyBody::Hello {
                            version: PROTOCOL_VERSION,
                            server: SERVER_NAME.as_bytes(),
                        };
                        Reply {
                            id,
                            opcode: op,
                            status: Status::Ok,
                            body,
                        }
                        .encode(out);
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
                    ServerStats::incr(&self.shared.stats.hello_required);
                    ServerStats::incr(&self.shared.stats.bad_input);
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
                ServerStats::incr(&self.shared.stats.goodbyes);
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
                match self.persistence.set_mode(mode.into()) {
                    Ok(()) => ok_empty(out, op, id),
                    Err(e) => persist_error(out, op, id, &e),
                }
                false
            }
            command => {
                self.keyed(out, id, command);
                false
            }
        }
    }

    /// Commands that address one key.
    fn keyed(&self, out: &mut Vec<u8>, id: u32, command: Command<'_>) {
        let store = &self.shared.store;
        let op = command.opcode();
        let result: Result<(), StoreError> = match command {
            Command::Get { key } => {
                let hit = store.get(key, |item| {
                    let mut w = FrameWriter::reply(out, op, Status::Ok, id);
                    w.u32(item.flags());
                    write_value(&mut w, &item);
                });
                hit.ok_or(StoreError::NotFound)
            }
            Command::GetWithHash { key } => store
                .get(key, |item| value_with_hash(out, op, id, &item))
                .ok_or(StoreError::NotFound),
            Command::GetAndTouch { key, ttl } => store
                .get_and_touch(key, ttl, |item| value_with_hash(out, op, id, &item))
                .ok_or(StoreError::NotFound),
            Command::Touch { key, ttl } => store.touch(key, ttl).map(|_seq| ok_empty(out, op, id)),
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
                    StoreMode::Set => SetMode::Set,
                    StoreMode::Add => SetMode::Add,
                    StoreMode::Replace => SetMode::Replace,
                };
                store
                    .set(mode, key, value, flags, ttl)
                    .map(|w| stored(out, op, id, w.hash))
            }
            Command::Cas {
                key,
                value,
                flags,
                ttl,
                expected,
            } => store
                .set(SetMode::Cas(expected), key, value, flags, ttl)
                .map(|w| stored(out, op, id, w.hash)),
            Command::Concat {
                prepend,
                key,
                value,
            } => {
                let written = if prepend {
                    store.prepend(key, value)
                } else {
                    store.append(key, value)
                };
                written.map(|w| stored(out, op, id, w.hash))
            }
            Command::Delete { key, expected } => {
                store.delete(key, expected).map(|_| ok_empty(out, op, id))
            }
            Command::Counter {
                decr,
                key,
                delta,
                create,
            } => store.incr(key, delta, decr, create).map(|(value, w)| {
                let body = ReplyBody::Counter {
                    value,
                    hash: w.hash,
                };
                Reply {
                    id,
                    opcode: op,
                    status: Status::Ok,
                    body,
                }
                .encode(out);
            }),
            Command::Hello { .. }
            | Command::Goodbye
            | Command::Ping
            | Command::Stats { .. }
            | Command::MultiGet { .. }
            | Command::Save
            | Command::SetPersist { .. } => Ok(()),
        };
        if let Err(e) = result {
            let (status, message) = store_error_status(&e);
            error(out, op, status, id, message.as_bytes());
        }
    }

    fn multi_get<'k>(&self, out: &mut Vec<u8>, id: u32, keys: impl Iterator<Item = &'k [u8]>) {
        let max_frame = self.shared.limits.max_frame;
        let mut w = MultiGetWriter::new(out, id);
        for key in keys {
            let hit = self.shared.store.get(key, |item| {
                w.hit_header(item.flags(), item.hash(), item.value_len() as u32);
                for chunk in item.value_chunks() {
                    w.buffer().extend_from_slice(chunk);
                }
            });
            if hit.is_none() {
                w.miss();
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

    /// SAVE: writes the savefile now and answers when it is on disk.
    fn save(&self, out: &mut Vec<u8>, id: u32) {
        let store = &self.shared.store;
        match blocking(|| self.persistence.save(store, None, false)) {
            Ok(s) => Reply {
                id,
                opcode: Opcode::Save,
                status: Status::Ok,
                body: ReplyBody::Saved {
                    items: s.items,
                    bytes: s.bytes,
                },
            }
            .encode(out),
            Err(e) => persist_error(out, Opcode::Save, id, &e),
        }
    }

    fn stats(&self, out: &mut Vec<u8>, id: u32) {
        let mut w = StatsWriter::new(out, id);
        w.stat("version", SERVER_NAME);
        w.stat("pid", std::process::id());
        for (name, value) in self.shared.stats.snapshot() {
            w.stat(name, value);
        }
        let s = self.shared.store.stats();
        w.stat("curr_items", s.items);
        w.stat("bytes", s.bytes);
        w.stat("limit_maxbytes", s.memory);
        w.stat("get_hits", s.hits);
        w.stat("get_misses", s.misses);
        w.stat("evictions", s.evictions);
        w.stat("expired_unfetched", s.expirations);
        w.stat("crawler_reclaimed", s.crawler_reclaimed);
        w.stat("pages_total", s.pages_total);
        w.stat("pages_used", s.pages_used);
        w.stat("pages_free", s.pages_free);
        w.stat("pages_moved", s.pages_moved);
        w.stat("index_bytes", s.index_bytes);
        w.stat("buckets", self.shared.store.buckets());
        for (name, value) in self.persistence.stats() {
            w.stat(name, value);
        }
    }

    /// Answers a frame that failed to decode; returns how far the stream can go on, or `None`
    /// when the connection must close.
    fn reject(&self, e: DecodeError, out: &mut Vec<u8>) -> Option<usize> {
        let stats = &self.shared.stats;
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
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let mut consumed = 0;
        let mut requests = 0u64;
        let limits = self.shared.limits;
        let close = loop {
            if out.len() >= self.shared.flush_at {
                break false;
            }
            match decode_request(&input[consumed..], &limits) {
                Ok(None) => break false,
                Ok(Some((req, used))) => {
                    consumed += used;
                    requests += 1;
                    if self.handle(req, out) {
                        break true;
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
        ServerStats::add(&self.shared.stats.native_requests, requests);
        Step { consumed, close }
    }

    fn on_shutdown(&mut self, out: &mut Vec<u8>) {
        notice(out, Status::ShuttingDown, b"server is stopping");
    }
}

/// The status and message that report a store error.
pub(crate) fn store_error_status(e: &StoreError) -> (Status, &'static str) {
    match e {
        StoreError::NotFound => (Status::NotFound, ""),
        StoreError::Exists => (Status::Exists, ""),
        StoreError::NotStored => (Status::NotStored, ""),
        StoreError::TooLarge => (Status::ValueTooLarge, "value larger than the limit"),
        StoreError::KeyTooLong => (Status::KeyTooLong, "key longer than the limit"),
        StoreError::EmptyKey => (Status::BadRequest, "empty key"),
        StoreError::NonNumeric => (Status::NonNumeric, "value is not a decimal number"),
        StoreError::OutOfMemory => (Status::OutOfMemory, "no memory could be freed"),
        _ => (Status::ServerError, "internal error"),
    }
}

/// Runs `f`, a blocking call, on this worker thread after telling a multi-threaded runtime to
/// move its other tasks elsewhere (`block_in_place` would panic on a current-thread runtime,
/// which then simply waits).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Answers an admin request that persistence refused.
fn persist_error(out: &mut Vec<u8>, op: Opcode, id: u32, e: &PersistError) {
    let status = match e {
        PersistError::Disabled => Status::BadRequest,
        PersistError::Busy => Status::Busy,
        PersistError::Cancelled => Status::ShuttingDown,
        _ => Status::ServerError,
    };
    let mut message = e.to_string();
    let mut end = message.len().min(1024);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    error(out, op, status, id, message.as_bytes());
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
