//! Shoal's native binary wire protocol: frames, opcodes, status codes, limits and the two
//! hashes that every node and client must agree on. No I/O, no async runtime.
//!
//! # Layout
//! - [`header`]: the fixed 16-byte frame header.
//! - [`opcode`] and [`status`]: the one table of opcodes and the one table of status codes.
//! - [`request`] and [`reply`]: typed bodies, decoded without copying from the receive buffer.
//! - [`writer`]: encoding, which cannot fail and appends to an output buffer.
//! - [`limits`]: what the decoder checks every declared length against.
//! - [`cluster`]: the cluster's client-visible types (redirects, bucket table, node status).
//! - [`peer`]: the peer protocol (node to node, on the peer port): its opcode table and
//!   handshake bodies.
//! - [`hash`]: the key hash (bucket placement) and the value hash (check-and-set token).
//!
//! # Decoding contract
//! [`decode_request`] and [`decode_reply`] return `Ok(None)` when more bytes are needed,
//! `Ok(Some((frame, consumed)))` for a frame, and `Err` for a frame that is not valid.
//! Every length is checked against the bytes present and the [`Limits`] before use, and
//! nothing is allocated from a declared length.
//!
//! ```
//! use shoal_proto::{decode_request, Command, Limits, Request};
//! let mut buf = Vec::new();
//! Request { id: 7, command: Command::Get { key: b"user:1" } }.encode(&mut buf);
//! let (req, used) = decode_request(&buf, &Limits::default()).unwrap().unwrap();
//! assert_eq!(used, buf.len());
//! assert_eq!(req.command, Command::Get { key: b"user:1" });
//! // Every strict prefix is "need more bytes".
//! assert!(decode_request(&buf[..used - 1], &Limits::default()).unwrap().is_none());
//! ```

pub mod cluster;
pub mod error;
mod field;
pub mod hash;
pub mod header;
pub mod limits;
pub mod opcode;
pub mod peer;
pub mod raw;
pub mod reply;
pub mod request;
pub mod status;
mod table;
pub mod writer;

pub use cluster::{AdminRequest, MovePhase, MoveProgress, NodeStatus, NotMyBucket, TableView};
pub use error::{DecodeError, DecodeErrorKind};
pub use header::{Header, HEADER_LEN};
pub use limits::Limits;
pub use opcode::{Opcode, OPCODES};
pub use peer::{PeerOpcode, PEER_OPCODES};
pub use reply::{
    decode_reply, Found, MultiGetEntry, MultiGetWriter, NodeStatusReply, Reply, ReplyBody,
    StatList, StatsWriter, TableReply, ValueList,
};
pub use request::{
    decode_request, encode_multi_get, Command, KeyList, PersistMode, Request, StoreMode,
};
pub use status::{Status, STATUSES};
pub use writer::FrameWriter;

/// First byte of every frame (`'S'`).
pub const MAGIC: u8 = 0x53;
/// The protocol version this crate speaks; HELLO negotiates it.
pub const PROTOCOL_VERSION: u8 = 1;
