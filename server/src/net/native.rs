//! The native protocol session: decodes every complete frame in the input, makes one
//! [`Keyspace`](crate::keyspace::Keyspace) call for it, and appends the reply. No I/O.
//!
//! HELLO must come first; anything else before it is answered with `HELLO_REQUIRED` and the
//! connection closes. Malformed frames are answered with the status of their error; the
//! connection stays open only when the frame was well delimited (see `DecodeError::skip`).
//! Every key-addressed command passes through [`NativeSession::keyed`], one keyspace call
//! each.
//!
//! SAVE writes the savefile on a blocking thread; its reply is a pending one
//! ([`Output::defer`]), so the connection goes on serving other requests meanwhile and the
//! SAVE reply leaves when the file is on disk (native replies carry their request id, so they
//! need not leave in order).

use super::{Output, Session, Shared, Step};
use crate::keyspace::ItemRef;
use crate::keyspace::{Expiry, OpError, StoreError, WriteMode};
use crate::persist::PersistError;
use crate::stats::ServerStats;
use shoal_proto::{
    decode_request, Command, DecodeError, DecodeErrorKind, FrameWriter, Header, MultiGetWriter,
    Opcode, Reply, ReplyBody, Request, StatsWriter, Status, StoreMode, HEADER_LEN,
    PROTOCOL_VERSION,
};

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
            command => {
                self.keyed(out, id, command);
                false
            }
        }
    }

    /// Commands that address one key: one keyspace call each.
    fn keyed(&self, out: &mut Vec<u8>, id: u32, command: Command<'_>) {
        let keyspace = &self.shared.keyspace;
        let op = command.opcode();
        let result: Result<(), OpError> = match command {
            Command::Get { key } => {
                let hit = keyspace.get(key, |item| {
                    let mut w = FrameWriter::reply(out, op, Status::Ok, id);
                    w.u32(item.flags());
                    write_value(&mut w, &item);
                });
                hit.ok_or(StoreError::NotFound.into())
            }
            Command::GetWithHash { key } => keyspace
                .get(key, |item| value_with_hash(out, op, id, &item))
                .ok_or(StoreError::NotFound.into()),
            Command::GetAndTouch { key, ttl } => keyspace
                .get_and_touch(key, Expiry::from_ttl(ttl), |item| {
                    value_with_hash(out, op, id, &item)
                })
                .ok_or(StoreError::NotFound.into()),
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
            | Command::SetPersist { .. } => Ok(()),
        };
        if let Err(e) = result {
            let (status, message) = op_error_status(e);
            error(out, op, status, id, message.as_bytes());
        }
    }

    fn multi_get<'k>(&self, out: &mut Vec<u8>, id: u32, keys: impl Iterator<Item = &'k [u8]>) {
        let max_frame = self.shared.limits.max_frame;
        let mut w = MultiGetWriter::new(out, id);
        for key in keys {
            let hit = self.shared.keyspace.get(key, |item| {
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
        let mut requests = 0u64;
        let limits = self.shared.limits;
        let close = loop {
            if out.is_full() {
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
        ServerStats::add(&self.shared.keyspace.stats().native_requests, requests);
        Step {
            consumed,
            close,
            more: false,
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

    fn ordered_replies(&self) -> bool {
        false
    }
}

/// The status and message that report a keyspace error.
fn op_error_status(e: OpError) -> (Status, &'static str) {
    match e {
        OpError::Store(e) => match e {
            StoreError::NotFound => (Status::NotFound, ""),
            StoreError::Exists => (Status::Exists, ""),
            StoreError::NotStored => (Status::NotStored, ""),
            StoreError::TooLarge => (Status::ValueTooLarge, "value larger than the limit"),
            StoreError::KeyTooLong => (Status::KeyTooLong, "key longer than the limit"),
            StoreError::EmptyKey => (Status::BadRequest, "empty key"),
            StoreError::NonNumeric => (Status::NonNumeric, "value is not a decimal number"),
            StoreError::OutOfMemory => (Status::OutOfMemory, "no memory could be freed"),
            StoreError::Hidden => (Status::NotMyBucket, "the bucket is being copied here"),
            // Only the bucket-copy operations fail so; no client request reaches them.
            StoreError::ChangeLogActive | StoreError::NoSuchBucket => {
                (Status::ServerError, "internal error")
            }
        },
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
