//! Replies (and server notices), borrowed from the receive buffer.
//!
//! A reply echoes the request's opcode and id and carries a [`Status`]. Its body layout follows
//! from the pair: `OK` replies have an opcode-specific body, `NOT_MY_BUCKET` carries the
//! redirect ([`NotMyBucket`]), a `TABLE_CHANGED` notice the new table version, and every other
//! status carries a short message (possibly empty).
//!
//! HELLO's reply is the one body that may grow: fields are appended at its end (the bucket
//! count was), and decoders ignore bytes after the fields they know.

use crate::cluster::{NodeStatus, NotMyBucket, TableView};
use crate::error::{DecodeError, DecodeErrorKind};
use crate::field::Reader;
use crate::header::{Header, HEADER_LEN};
use crate::limits::Limits;
use crate::opcode::Opcode;
use crate::status::Status;
use crate::writer::FrameWriter;

/// One entry of a multi-get reply: the value of a key that was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    /// Client flags.
    pub flags: u32,
    /// Value hash (the check-and-set token).
    pub hash: u64,
    /// Value bytes.
    pub value: &'a [u8],
}

/// The entries of a multi-get reply in request order, validated, in wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueList<'a> {
    count: u16,
    raw: &'a [u8],
}

impl<'a> ValueList<'a> {
    /// Number of entries (one per requested key).
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entries in request order.
    pub fn iter(&self) -> impl Iterator<Item = MultiGetEntry<'a>> + 'a {
        let mut r = Reader::new(self.raw);
        let unlimited = Limits {
            max_value: usize::MAX,
            ..Limits::default()
        };
        (0..self.count).map_while(move |_| read_entry(&mut r, &unlimited).ok())
    }
}

/// One entry of a multi-get reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiGetEntry<'a> {
    /// The key was not found (tag 0).
    Miss,
    /// The key's value (tag 1).
    Hit(Found<'a>),
    /// The key's bucket is not served by this node (tag 2): where it is. Only a node that
    /// serves part of the buckets sends this; nothing was read for the key.
    NotMyBucket(NotMyBucket<'a>),
}

impl<'a> MultiGetEntry<'a> {
    /// The value, for a hit.
    pub fn found(&self) -> Option<Found<'a>> {
        match self {
            MultiGetEntry::Hit(f) => Some(*f),
            MultiGetEntry::Miss | MultiGetEntry::NotMyBucket(_) => None,
        }
    }
}

/// MGET entry tags.
const ENTRY_MISS: u8 = 0;
const ENTRY_HIT: u8 = 1;
const ENTRY_NOT_MY_BUCKET: u8 = 2;

fn read_entry<'a>(
    r: &mut Reader<'a>,
    limits: &Limits,
) -> Result<MultiGetEntry<'a>, DecodeErrorKind> {
    match r.u8()? {
        ENTRY_MISS => Ok(MultiGetEntry::Miss),
        ENTRY_HIT => Ok(MultiGetEntry::Hit(Found {
            flags: r.u32()?,
            hash: r.u64()?,
            value: r.value(limits)?,
        })),
        ENTRY_NOT_MY_BUCKET => Ok(MultiGetEntry::NotMyBucket(NotMyBucket::read(r)?)),
        _ => Err(DecodeErrorKind::BadField),
    }
}

/// A validated `TABLE_GET` reply body; [`TableReply::view`] builds the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableReply<'a> {
    raw: &'a [u8],
}

impl TableReply<'_> {
    /// The table.
    ///
    /// # Errors
    /// None in practice: the body was validated when the reply was decoded.
    pub fn view(&self) -> Result<TableView, DecodeErrorKind> {
        TableView::decode(self.raw)
    }

    /// The body bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.raw
    }
}

/// A validated `NODE_STATUS` reply body; [`NodeStatusReply::status`] builds the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatusReply<'a> {
    raw: &'a [u8],
}

impl NodeStatusReply<'_> {
    /// The status.
    ///
    /// # Errors
    /// None in practice: the body was validated when the reply was decoded.
    pub fn status(&self) -> Result<NodeStatus, DecodeErrorKind> {
        NodeStatus::decode(self.raw)
    }

    /// The body bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.raw
    }
}

/// Name/value pairs of a STATS reply, in wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatList<'a> {
    count: u16,
    raw: &'a [u8],
}

impl<'a> StatList<'a> {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut r = Reader::new(self.raw);
        (0..self.count).map_while(move |_| Some((r.short().ok()?, r.short().ok()?)))
    }
}

/// A decoded reply or notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The request id it answers (0 for notices).
    pub id: u32,
    /// The request's opcode, or [`Opcode::Notice`].
    pub opcode: Opcode,
    /// The outcome.
    pub status: Status,
    /// Status- and opcode-specific fields.
    pub body: ReplyBody<'a>,
}

/// The fields of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody<'a> {
    /// No fields (PING, GOODBYE, TOUCH, DELETE, SET_PERSIST).
    Empty,
    /// HELLO: the version chosen, the server's name and the cluster's bucket count.
    Hello {
        /// Negotiated protocol version.
        version: u8,
        /// Server software and version.
        server: &'a [u8],
        /// The cluster's bucket count (`None` from a server that does not send it).
        buckets: Option<u32>,
    },
    /// GET.
    Value {
        /// Client flags.
        flags: u32,
        /// Value bytes.
        value: &'a [u8],
    },
    /// GETH and GAT.
    ValueWithHash(Found<'a>),
    /// MGET.
    Values(ValueList<'a>),
    /// SET, ADD, REPLACE, CAS, APPEND, PREPEND: the new value's hash.
    Stored {
        /// Hash of the value now stored.
        hash: u64,
    },
    /// INCR, DECR.
    Counter {
        /// The counter after the change.
        value: u64,
        /// Hash of its decimal text.
        hash: u64,
    },
    /// STATS.
    Stats(StatList<'a>),
    /// SAVE: what the savefile holds.
    Saved {
        /// Items written.
        items: u64,
        /// Size of the savefile in bytes.
        bytes: u64,
    },
    /// NOT_MY_BUCKET: where the key's bucket lives now.
    Redirect(NotMyBucket<'a>),
    /// TABLE_GET: the bucket table.
    Table(TableReply<'a>),
    /// NODE_STATUS: the node's status.
    NodeStatus(NodeStatusReply<'a>),
    /// A `TABLE_CHANGED` notice: the new table version.
    TableChanged {
        /// The table version now applied by the node.
        version: u64,
    },
    /// Any other non-OK status: a human-readable message (possibly empty). Also the OK
    /// reply to CLUSTER_ADMIN: what the change did.
    Message(&'a [u8]),
}

impl Reply<'_> {
    /// Appends the encoded reply to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let mut w = FrameWriter::reply(dst, self.opcode, self.status, self.id);
        match self.body {
            ReplyBody::Empty => {}
            ReplyBody::Hello {
                version,
                server,
                buckets,
            } => {
                w.u8(version).short(server);
                if let Some(b) = buckets {
                    w.u32(b);
                }
            }
            ReplyBody::Value { flags, value } => {
                w.u32(flags).value(value);
            }
            ReplyBody::ValueWithHash(f) => {
                w.u32(f.flags).u64(f.hash).value(f.value);
            }
            ReplyBody::Values(list) => {
                w.u16(list.count).raw(list.raw);
            }
            ReplyBody::Stored { hash } => {
                w.u64(hash);
            }
            ReplyBody::Counter { value, hash } => {
                w.u64(value).u64(hash);
            }
            ReplyBody::Stats(list) => {
                w.u16(list.count).raw(list.raw);
            }
            ReplyBody::Saved { items, bytes } => {
                w.u64(items).u64(bytes);
            }
            ReplyBody::Redirect(r) => r.encode(w.buffer()),
            ReplyBody::Table(t) => {
                w.raw(t.raw);
            }
            ReplyBody::NodeStatus(s) => {
                w.raw(s.raw);
            }
            ReplyBody::TableChanged { version } => {
                w.u64(version);
            }
            ReplyBody::Message(m) => {
                w.short(m);
            }
        }
    }
}

/// Builds a MGET reply entry by entry, straight into the output buffer.
#[derive(Debug)]
pub struct MultiGetWriter<'a> {
    w: FrameWriter<'a>,
    count_at: usize,
    count: u16,
}

impl<'a> MultiGetWriter<'a> {
    /// Starts an OK reply to MGET request `request_id`.
    pub fn new(dst: &'a mut Vec<u8>, request_id: u32) -> Self {
        let mut w = FrameWriter::reply(dst, Opcode::MultiGet, Status::Ok, request_id);
        let count_at = w.buffer().len();
        w.u16(0);
        Self {
            w,
            count_at,
            count: 0,
        }
    }

    /// Appends a miss.
    pub fn miss(&mut self) {
        self.w.u8(ENTRY_MISS);
        self.bump();
    }

    /// Appends a hit; the caller then appends exactly `value_len` value bytes to
    /// [`MultiGetWriter::buffer`].
    pub fn hit_header(&mut self, flags: u32, hash: u64, value_len: u32) {
        self.w
            .u8(ENTRY_HIT)
            .u32(flags)
            .u64(hash)
            .value_len(value_len);
        self.bump();
    }

    /// Appends a redirect: the key's bucket is not served here.
    pub fn not_my_bucket(&mut self, redirect: &NotMyBucket<'_>) {
        self.w.u8(ENTRY_NOT_MY_BUCKET);
        redirect.encode(self.w.buffer());
        self.bump();
    }

    /// The output buffer, for appending value bytes after [`MultiGetWriter::hit_header`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.w.buffer()
    }

    /// Bytes of body written so far.
    pub fn body_len(&self) -> usize {
        self.w.body_len()
    }

    /// Drops the partial reply from the buffer.
    pub fn discard(self) {
        self.w.discard();
    }

    fn bump(&mut self) {
        self.count = self.count.saturating_add(1);
        let at = self.count_at;
        self.w.buffer()[at..at + 2].copy_from_slice(&self.count.to_be_bytes());
    }
}

/// Builds a STATS reply pair by pair.
#[derive(Debug)]
pub struct StatsWriter<'a> {
    w: FrameWriter<'a>,
    count_at: usize,
    count: u16,
}

impl<'a> StatsWriter<'a> {
    /// Starts an OK reply to STATS request `request_id`.
    pub fn new(dst: &'a mut Vec<u8>, request_id: u32) -> Self {
        let mut w = FrameWriter::reply(dst, Opcode::Stats, Status::Ok, request_id);
        let count_at = w.buffer().len();
        w.u16(0);
        Self {
            w,
            count_at,
            count: 0,
        }
    }

    /// Appends one pair (at most 65,535 pairs are kept; more are dropped).
    pub fn stat(&mut self, name: &str, value: impl std::fmt::Display) {
        if self.count == u16::MAX {
            return;
        }
        self.w.short(name.as_bytes());
        let value = value.to_string();
        self.w.short(value.as_bytes());
        self.count += 1;
        let at = self.count_at;
        self.w.buffer()[at..at + 2].copy_from_slice(&self.count.to_be_bytes());
    }
}

/// Decodes one reply (or notice) from the start of `buf`. Same contract as
/// [`crate::decode_request`]; every error is fatal for the connection.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode_reply<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Reply<'a>, usize)>, DecodeError> {
    let Some(header) = Header::decode(buf, limits)? else {
        return Ok(None);
    };
    let fail = |kind| DecodeError {
        kind,
        request_id: Some(header.request_id),
        opcode: Some(header.opcode),
        skip: None,
    };
    if !header.is_reply() {
        return Err(fail(DecodeErrorKind::WrongDirection));
    }
    let total = HEADER_LEN + header.body_len as usize;
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    let opcode = Opcode::from_u8(header.opcode).ok_or(fail(DecodeErrorKind::UnknownOpcode))?;
    let status = Status::from_u16(header.status).ok_or(fail(DecodeErrorKind::UnknownStatus))?;
    let body = decode_reply_body(opcode, status, body, limits).map_err(fail)?;
    Ok(Some((
        Reply {
            id: header.request_id,
            opcode,
            status,
            body,
        },
        total,
    )))
}

fn decode_reply_body<'a>(
    opcode: Opcode,
    status: Status,
    body: &'a [u8],
    limits: &Limits,
) -> Result<ReplyBody<'a>, DecodeErrorKind> {
    let mut r = Reader::new(body);
    let out = match status {
        Status::Ok => match opcode {
            Opcode::Hello => {
                // The one extensible body: later fields are optional, unknown ones ignored.
                let version = r.u8()?;
                let server = r.short()?;
                let buckets = if r.rest().len() >= 4 {
                    Some(r.u32()?)
                } else {
                    None
                };
                return Ok(ReplyBody::Hello {
                    version,
                    server,
                    buckets,
                });
            }
            Opcode::TableGet => {
                TableView::decode(body)?;
                return Ok(ReplyBody::Table(TableReply { raw: body }));
            }
            Opcode::NodeStatus => {
                NodeStatus::decode(body)?;
                return Ok(ReplyBody::NodeStatus(NodeStatusReply { raw: body }));
            }
            // What the change did, for a person to read.
            Opcode::ClusterAdmin => ReplyBody::Message(r.short()?),
            Opcode::Goodbye
            | Opcode::Ping
            | Opcode::Touch
            | Opcode::Delete
            | Opcode::Notice
            | Opcode::SetPersist => ReplyBody::Empty,
            Opcode::Save => ReplyBody::Saved {
                items: r.u64()?,
                bytes: r.u64()?,
            },
            Opcode::Get => ReplyBody::Value {
                flags: r.u32()?,
                value: r.value(limits)?,
            },
            Opcode::GetWithHash | Opcode::GetAndTouch => ReplyBody::ValueWithHash(Found {
                flags: r.u32()?,
                hash: r.u64()?,
                value: r.value(limits)?,
            }),
            Opcode::MultiGet => {
                let count = r.u16()?;
                if usize::from(count) > limits.max_batch {
                    return Err(DecodeErrorKind::BadBatchSize);
                }
                let raw = r.rest();
                for _ in 0..count {
                    read_entry(&mut r, limits)?;
                }
                let used = raw.len() - r.rest().len();
                ReplyBody::Values(ValueList {
                    count,
                    raw: &raw[..used],
                })
            }
            Opcode::Set
            | Opcode::Add
            | Opcode::Replace
            | Opcode::Cas
            | Opcode::Append
            | Opcode::Prepend => ReplyBody::Stored { hash: r.u64()? },
            Opcode::Incr | Opcode::Decr => ReplyBody::Counter {
                value: r.u64()?,
                hash: r.u64()?,
            },
            Opcode::Stats => {
                let count = r.u16()?;
                let raw = r.rest();
                for _ in 0..count {
                    r.short()?;
                    r.short()?;
                }
                let used = raw.len() - r.rest().len();
                ReplyBody::Stats(StatList {
                    count,
                    raw: &raw[..used],
                })
            }
        },
        Status::NotMyBucket => ReplyBody::Redirect(NotMyBucket::read(&mut r)?),
        Status::TableChanged => ReplyBody::TableChanged { version: r.u64()? },
        _ => ReplyBody::Message(r.short()?),
    };
    r.finish()?;
    Ok(out)
}
