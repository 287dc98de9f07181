//! Requests: what a client asks, borrowed from the receive buffer (no copy, no allocation).

use crate::cluster::AdminRequest;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::field::Reader;
use crate::header::{Header, HEADER_LEN};
use crate::limits::Limits;
use crate::opcode::Opcode;
use crate::writer::FrameWriter;

/// How SET, ADD and REPLACE differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if absent.
    Add,
    /// Store only if present.
    Replace,
}

/// When a node writes a savefile on its own (SET_PERSIST); the wire value is the `u8` in
/// parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistMode {
    /// Never write one at stop (SAVE still works). (0)
    Never,
    /// Write one at a graceful stop when no peer can take the node's buckets. (1)
    OnLastStop,
    /// Write one at every graceful stop, even when peers take the buckets. (2)
    Always,
}

impl PersistMode {
    /// The mode with this wire value, if it is defined.
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::Never),
            1 => Some(Self::OnLastStop),
            2 => Some(Self::Always),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Never => 0,
            Self::OnLastStop => 1,
            Self::Always => 2,
        }
    }

    /// The mode's name, as `shoald --persist` and STATS spell it (`never`, `on-last-stop`,
    /// `always`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnLastStop => "on-last-stop",
            Self::Always => "always",
        }
    }

    /// The mode with this [name](PersistMode::name), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Never, Self::OnLastStop, Self::Always]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

impl core::fmt::Display for PersistMode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys of a multi-get, validated and still in wire form (iterate with [`KeyList::iter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyList<'a> {
    count: u16,
    raw: &'a [u8],
}

impl<'a> KeyList<'a> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no keys (never true for a decoded request).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The keys in request order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut reader = Reader::new(self.raw);
        (0..self.count).map_while(move |_| reader.short().ok())
    }
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Id echoed by the reply.
    pub id: u32,
    /// The command and its fields.
    pub command: Command<'a>,
}

/// A command with its fields. Byte fields borrow from the buffer the request was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Version negotiation; the server picks the highest version in `min_version..=max_version`.
    Hello {
        /// Lowest version the client speaks.
        min_version: u8,
        /// Highest version the client speaks.
        max_version: u8,
        /// Free-form client name (for logs and stats).
        client_name: &'a [u8],
        /// Authentication data (empty when none).
        auth: &'a [u8],
    },
    /// End the connection cleanly.
    Goodbye,
    /// Liveness check.
    Ping,
    /// Counters; `group` selects a subset (empty: all).
    Stats {
        /// Stats group name.
        group: &'a [u8],
    },
    /// Read a value.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Read a value and its hash.
    GetWithHash {
        /// The key.
        key: &'a [u8],
    },
    /// Read many keys.
    MultiGet {
        /// The keys.
        keys: KeyList<'a>,
    },
    /// Change the time to live.
    Touch {
        /// The key.
        key: &'a [u8],
        /// Seconds to live from now; 0 = never expires.
        ttl: u32,
    },
    /// Read (with hash) and change the time to live.
    GetAndTouch {
        /// The key.
        key: &'a [u8],
        /// Seconds to live from now; 0 = never expires.
        ttl: u32,
    },
    /// SET, ADD or REPLACE.
    Store {
        /// Which of the three.
        mode: StoreMode,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Opaque client flags stored with the value.
        flags: u32,
        /// Seconds to live; 0 = never expires.
        ttl: u32,
    },
    /// Store only if the stored value's hash equals `expected`.
    Cas {
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
        /// Opaque client flags.
        flags: u32,
        /// Seconds to live; 0 = never expires.
        ttl: u32,
        /// The hash of the value the client last read.
        expected: u64,
    },
    /// APPEND (`prepend == false`) or PREPEND.
    Concat {
        /// True for PREPEND.
        prepend: bool,
        /// The key.
        key: &'a [u8],
        /// Bytes to add.
        value: &'a [u8],
    },
    /// Remove a key, only if its hash equals `expected` when given.
    Delete {
        /// The key.
        key: &'a [u8],
        /// Required current hash, if any.
        expected: Option<u64>,
    },
    /// INCR (`decr == false`) or DECR.
    Counter {
        /// True for DECR.
        decr: bool,
        /// The key.
        key: &'a [u8],
        /// Amount to add or subtract.
        delta: u64,
        /// When the key is missing: create it with `(initial value, ttl)`; `None` = NOT_FOUND.
        create: Option<(u64, u32)>,
    },
    /// The whole bucket table (TABLE_GET).
    TableGet,
    /// The node's own status (NODE_STATUS).
    NodeStatus,
    /// A change to the cluster (CLUSTER_ADMIN).
    ClusterAdmin {
        /// What to change.
        request: AdminRequest,
    },
    /// Admin: write a savefile now.
    Save,
    /// Admin: change the node's persistence mode.
    SetPersist {
        /// The new mode.
        mode: PersistMode,
    },
}

impl Command<'_> {
    /// The opcode this command travels under.
    pub fn opcode(&self) -> Opcode {
        match self {
            Command::Hello { .. } => Opcode::Hello,
            Command::Goodbye => Opcode::Goodbye,
            Command::Ping => Opcode::Ping,
            Command::Stats { .. } => Opcode::Stats,
            Command::Get { .. } => Opcode::Get,
            Command::GetWithHash { .. } => Opcode::GetWithHash,
            Command::MultiGet { .. } => Opcode::MultiGet,
            Command::Touch { .. } => Opcode::Touch,
            Command::GetAndTouch { .. } => Opcode::GetAndTouch,
            Command::Store { mode, .. } => match mode {
                StoreMode::Set => Opcode::Set,
                StoreMode::Add => Opcode::Add,
                StoreMode::Replace => Opcode::Replace,
            },
            Command::Cas { .. } => Opcode::Cas,
            Command::Concat { prepend: false, .. } => Opcode::Append,
            Command::Concat { prepend: true, .. } => Opcode::Prepend,
            Command::Delete { .. } => Opcode::Delete,
            Command::Counter { decr: false, .. } => Opcode::Incr,
            Command::Counter { decr: true, .. } => Opcode::Decr,
            Command::TableGet => Opcode::TableGet,
            Command::NodeStatus => Opcode::NodeStatus,
            Command::ClusterAdmin { .. } => Opcode::ClusterAdmin,
            Command::Save => Opcode::Save,
            Command::SetPersist { .. } => Opcode::SetPersist,
        }
    }

    /// The key the command addresses, if it has exactly one (used for bucket routing).
    pub fn key(&self) -> Option<&[u8]> {
        match *self {
            Command::Get { key }
            | Command::GetWithHash { key }
            | Command::Touch { key, .. }
            | Command::GetAndTouch { key, .. }
            | Command::Store { key, .. }
            | Command::Cas { key, .. }
            | Command::Concat { key, .. }
            | Command::Delete { key, .. }
            | Command::Counter { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether sending the command twice has the same effect as sending it once. Clients retry
    /// only these on their own.
    pub fn is_idempotent(&self) -> bool {
        !matches!(
            self,
            Command::Store {
                mode: StoreMode::Add,
                ..
            } | Command::Cas { .. }
                | Command::Concat { .. }
                | Command::Counter { .. }
                | Command::ClusterAdmin { .. }
                | Command::Delete {
                    expected: Some(_),
                    ..
                }
        )
    }
}

impl Request<'_> {
    /// Appends the encoded request to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let mut w = FrameWriter::request(dst, self.command.opcode(), self.id);
        match self.command {
            Command::Hello {
                min_version,
                max_version,
                client_name,
                auth,
            } => {
                w.u8(min_version)
                    .u8(max_version)
                    .short(client_name)
                    .short(auth);
            }
            Command::Goodbye
            | Command::Ping
            | Command::Save
            | Command::TableGet
            | Command::NodeStatus => {}
            Command::SetPersist { mode } => {
                w.u8(mode.as_u8());
            }
            Command::ClusterAdmin { request } => {
                request.encode(w.buffer());
            }
            Command::Stats { group } => {
                w.short(group);
            }
            Command::Get { key } | Command::GetWithHash { key } => {
                w.key(key);
            }
            Command::MultiGet { keys } => {
                w.u16(keys.count).raw(keys.raw);
            }
            Command::Touch { key, ttl } | Command::GetAndTouch { key, ttl } => {
                w.u32(ttl).key(key);
            }
            Command::Store {
                key,
                value,
                flags,
                ttl,
                ..
            } => {
                w.u32(flags).u32(ttl).key(key).value(value);
            }
            Command::Cas {
                key,
                value,
                flags,
                ttl,
                expected,
            } => {
                w.u32(flags).u32(ttl).u64(expected).key(key).value(value);
            }
            Command::Concat { key, value, .. } => {
                w.key(key).value(value);
            }
            Command::Delete { key, expected } => {
                match expected {
                    Some(hash) => w.u8(1).u64(hash),
                    None => w.u8(0),
                };
                w.key(key);
            }
            Command::Counter {
                key, delta, create, ..
            } => {
                w.u64(delta);
                match create {
                    Some((initial, ttl)) => w.u8(1).u64(initial).u32(ttl),
                    None => w.u8(0),
                };
                w.key(key);
            }
        }
    }
}

/// Appends a MGET request for `keys` to `dst` (the keys are not checked against limits here;
/// the receiver checks them).
pub fn encode_multi_get<'k>(
    dst: &mut Vec<u8>,
    request_id: u32,
    keys: impl IntoIterator<Item = &'k [u8]>,
) {
    let mut w = FrameWriter::request(dst, Opcode::MultiGet, request_id);
    let count_at = w.buffer().len();
    w.u16(0);
    let mut count: u16 = 0;
    for key in keys {
        w.key(key);
        count = count.saturating_add(1);
    }
    w.buffer()[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
}

/// Decodes one request from the start of `buf`.
///
/// - `Ok(None)`: more bytes are needed.
/// - `Ok(Some((request, consumed)))`: a request, and how many bytes it took.
/// - `Err(e)`: not a valid request; see [`DecodeError::skip`] for whether the stream can go on.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Request<'a>, usize)>, DecodeError> {
    let Some(header) = Header::decode(buf, limits)? else {
        return Ok(None);
    };
    let fatal = |kind| DecodeError {
        kind,
        request_id: Some(header.request_id),
        opcode: Some(header.opcode),
        skip: None,
    };
    if header.is_reply() {
        return Err(fatal(DecodeErrorKind::WrongDirection));
    }
    if header.status != 0 {
        return Err(fatal(DecodeErrorKind::StatusInRequest));
    }
    // `body_len <= max_frame <= 256 MiB` was checked, so this cannot overflow.
    let total = HEADER_LEN + header.body_len as usize;
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    match decode_command(header.opcode, body, limits) {
        Ok(command) => Ok(Some((
            Request {
                id: header.request_id,
                command,
            },
            total,
        ))),
        Err(kind) => {
            let recoverable = matches!(
                kind,
                DecodeErrorKind::UnknownOpcode
                    | DecodeErrorKind::EmptyKey
                    | DecodeErrorKind::KeyTooLong
                    | DecodeErrorKind::ValueTooLarge
                    | DecodeErrorKind::BadBatchSize
            );
            Err(DecodeError {
                skip: recoverable.then_some(total),
                ..fatal(kind)
            })
        }
    }
}

fn decode_command<'a>(
    opcode: u8,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Command<'a>, DecodeErrorKind> {
    let op = Opcode::from_u8(opcode).ok_or(DecodeErrorKind::UnknownOpcode)?;
    let mut r = Reader::new(body);
    let command = match op {
        Opcode::Hello => Command::Hello {
            min_version: r.u8()?,
            max_version: r.u8()?,
            client_name: r.short()?,
            auth: r.short()?,
        },
        Opcode::Goodbye => Command::Goodbye,
        Opcode::Ping => Command::Ping,
        Opcode::Save => Command::Save,
        Opcode::TableGet => Command::TableGet,
        Opcode::NodeStatus => Command::NodeStatus,
        Opcode::ClusterAdmin => Command::ClusterAdmin {
            request: AdminRequest::read(&mut r)?,
        },
        Opcode::SetPersist => Command::SetPersist {
            mode: PersistMode::from_u8(r.u8()?).ok_or(DecodeErrorKind::BadField)?,
        },
        Opcode::Notice => return Err(DecodeErrorKind::UnknownOpcode),
        Opcode::Stats => Command::Stats { group: r.short()? },
        Opcode::Get => Command::Get {
            key: r.key(limits)?,
        },
        Opcode::GetWithHash => Command::GetWithHash {
            key: r.key(limits)?,
        },
        Opcode::MultiGet => {
            let count = r.u16()?;
            if count == 0 || usize::from(count) > limits.max_batch {
                return Err(DecodeErrorKind::BadBatchSize);
            }
            let raw = r.rest();
            for _ in 0..count {
                r.key(limits)?;
            }
            let used = raw.len() - r.rest().len();
            Command::MultiGet {
                keys: KeyList {
                    count,
                    raw: &raw[..used],
                },
            }
        }
        Opcode::Touch | Opcode::GetAndTouch => {
            let ttl = r.u32()?;
            let key = r.key(limits)?;
            if op == Opcode::Touch {
                Command::Touch { key, ttl }
            } else {
                Command::GetAndTouch { key, ttl }
            }
        }
        Opcode::Set | Opcode::Add | Opcode::Replace => {
            let flags = r.u32()?;
            let ttl = r.u32()?;
            let key = r.key(limits)?;
            let value = r.value(limits)?;
            let mode = match op {
                Opcode::Add => StoreMode::Add,
                Opcode::Replace => StoreMode::Replace,
                _ => StoreMode::Set,
            };
            Command::Store {
                mode,
                key,
                value,
                flags,
                ttl,
            }
        }
        Opcode::Cas => {
            let flags = r.u32()?;
            let ttl = r.u32()?;
            let expected = r.u64()?;
            let key = r.key(limits)?;
            let value = r.value(limits)?;
            Command::Cas {
                key,
                value,
                flags,
                ttl,
                expected,
            }
        }
        Opcode::Append | Opcode::Prepend => Command::Concat {
            prepend: op == Opcode::Prepend,
            key: r.key(limits)?,
            value: r.value(limits)?,
        },
        Opcode::Delete => {
            let expected = if r.flag()? { Some(r.u64()?) } else { None };
            Command::Delete {
                expected,
                key: r.key(limits)?,
            }
        }
        Opcode::Incr | Opcode::Decr => {
            let delta = r.u64()?;
            let create = if r.flag()? {
                Some((r.u64()?, r.u32()?))
            } else {
                None
            };
            Command::Counter {
                decr: op == Opcode::Decr,
                key: r.key(limits)?,
                delta,
                create,
            }
        }
    };
    r.finish()?;
    Ok(command)
}
