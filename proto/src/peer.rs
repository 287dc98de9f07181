//! The peer protocol: what nodes say to each other on the peer port (`--peer-listen`). No I/O.
//!
//! Peer frames use the native 16-byte [`Header`] (same magic, version, flags, request id and
//! body length; replies set the REPLY flag and carry a [`Status`]), with their own opcode
//! table, [`PeerOpcode`], in the range `0xC0..=0xDF`. Client opcodes are never served on the
//! peer port, and peer opcodes never on the client ports.
//!
//! A connection starts with a handshake, in which each side proves to the other that it holds
//! the cluster secret (an HMAC over both nonces and both ids; the server crate computes it):
//!
//! ```text
//!  dialer                                              listener
//!  PEER_HELLO {version, cluster, node, expected, nonce} ->
//!                    <- PEER_HELLO reply {version, cluster, node, nonce, listener proof}
//!  PEER_AUTH {dialer proof}                             ->
//!                                                       <- OK (empty)
//! ```
//!
//! Either side refuses by closing; the listener first answers the request it refuses with an
//! error status ([`Status::WrongCluster`], [`Status::WrongNode`], [`Status::AuthFailed`],
//! ...) and a [`message`](encode_message) saying why. After the handshake the dialer sends
//! requests ([`PeerOpcode::RaftAppend`], ...) and the listener answers each, in any order,
//! matched by request id. Every non-OK reply carries a message body.

use crate::error::{DecodeError, DecodeErrorKind};
use crate::field::{put_short, Reader};
use crate::header::{Header, FLAG_REPLY, HEADER_LEN};
use crate::limits::Limits;
use crate::status::Status;
use crate::table::wire_table;

wire_table! {
    /// A request of the peer protocol (node to node, on the peer port only).
    enum PeerOpcode: u8, fn from_u8;
    /// Every assigned peer opcode: number and documented name.
    const PEER_OPCODES;
    /// First request on a peer connection: versions, ids and the dialer's nonce.
    PeerHello = 0xC0, "PEER_HELLO";
    /// Second request on a peer connection: the dialer's proof that it holds the secret.
    PeerAuth = 0xC1, "PEER_AUTH";
    /// Raft AppendEntries (and heartbeats), leader to follower or learner.
    RaftAppend = 0xC2, "RAFT_APPEND";
    /// Raft RequestVote, candidate to voter.
    RaftVote = 0xC3, "RAFT_VOTE";
    /// Raft InstallSnapshot, leader to a node that is too far behind.
    RaftSnapshot = 0xC4, "RAFT_SNAPSHOT";
    /// A new node asks to become a member of the cluster.
    Join = 0xC5, "JOIN";
    /// Liveness check, answered by the peer listener itself.
    PeerPing = 0xC6, "PEER_PING";
    /// A voter that is stopping asks the leader to give its vote to another member first.
    LeaveVoters = 0xC7, "LEAVE_VOTERS";
    /// A memcached text command for a bucket the sender does not serve, run by its owner
    /// ([`ForwardReply`]). Served in the order the connection sent them.
    Forward = 0xC8, "FORWARD";
    /// A change to the cluster state for the leader to commit: the body is a command of the
    /// replicated state (JSON), the reply what applying it did (JSON). Served by the leader
    /// only; other members answer `NOT_READY`, so the sender retries with the leader.
    Propose = 0xC9, "PROPOSE";
    /// A bucket's copy, from its primary to the target of a move: open, snapshot items, or
    /// change-log records (the body is defined by the server's mover).
    Move = 0xCA, "MOVE";
    /// Several memcached text commands for buckets of one owner, run in order by that owner
    /// ([`encode_forward_batch`], [`ForwardBatchReplies`]). Served in the order the connection
    /// sent them, with FORWARD.
    ForwardBatch = 0xCB, "FORWARD_BATCH";
    /// A bucket's copy, from its primary to a replica: open, snapshot items, or change-log
    /// records (the MOVE body, whose id is the primary's epoch; the replica refuses an epoch
    /// its applied table has passed).
    Replicate = 0xCC, "REPLICATE";
    /// A member asks the Raft leader to renew its lease: the body is its liveness epoch
    /// (u64) as its applied state has it. Answered OK (empty) by the leader once a quorum
    /// confirmed it leads; `NOT_READY` by other members and by a leader that cannot confirm;
    /// `EXISTS` when the epoch is not the member's current one (it was fenced).
    LeaseRenew = 0xCD, "LEASE_RENEW";
}

/// The peer protocol version this crate speaks (carried in PEER_HELLO, separate from the
/// frame header's version).
pub const PEER_PROTOCOL_VERSION: u8 = 1;
/// Length of a handshake nonce, in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of a handshake proof (an HMAC-SHA256 tag), in bytes.
pub const PROOF_LEN: usize = 32;
/// Length of a node id or a cluster id, in bytes.
pub const ID_LEN: usize = 16;
/// Default largest peer frame body (64 MiB): a Raft snapshot of the control plane fits many
/// times over, and a peer that declares more is refused on the header alone.
pub const DEFAULT_MAX_PEER_BODY: usize = 64 * 1024 * 1024;

/// A node id or cluster id on the wire; all zeros means "none" (see [`HelloRequest`]).
pub type WireId = [u8; ID_LEN];

/// The PEER_HELLO request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRequest {
    /// The dialer's peer protocol version.
    pub proto_version: u8,
    /// The dialer's cluster id; all zeros when it has none yet (it is joining).
    pub cluster_id: WireId,
    /// The dialer's node id.
    pub node_id: WireId,
    /// The node the dialer means to reach; all zeros for any node.
    pub expected_node_id: WireId,
    /// The dialer's fresh random nonce.
    pub nonce: [u8; NONCE_LEN],
}

/// The PEER_HELLO reply body (status OK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloReply {
    /// The listener's peer protocol version.
    pub proto_version: u8,
    /// The listener's cluster id; all zeros when it has none yet.
    pub cluster_id: WireId,
    /// The listener's node id.
    pub node_id: WireId,
    /// The listener's fresh random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The listener's proof that it holds the secret.
    pub proof: [u8; PROOF_LEN],
}

/// The PEER_AUTH request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest {
    /// The dialer's proof that it holds the secret.
    pub proof: [u8; PROOF_LEN],
}

/// The FORWARD reply body (status OK). The request body is one complete memcached text
/// command (its line and, for a storage command, its data block) exactly as a client sent it.
///
/// ```text
///  tag u8 = 0 (EXECUTED)   reply bytes (the rest of the body; empty under noreply)
///  tag u8 = 1 (NOT_MINE)   bucket u32, epoch u64 (the answering node's epoch of the bucket)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardReply<'a> {
    /// The command ran; these are its reply bytes, byte for byte what a client gets.
    Executed(&'a [u8]),
    /// The answering node does not serve a key of the command (nothing was applied).
    NotMine {
        /// The bucket it does not serve.
        bucket: u32,
        /// That bucket's epoch in the answering node's applied table.
        epoch: u64,
    },
}

impl ForwardReply<'_> {
    /// Appends the encoded body.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        match self {
            ForwardReply::Executed(bytes) => {
                dst.reserve(1 + bytes.len());
                dst.push(0);
                dst.extend_from_slice(bytes);
            }
            ForwardReply::NotMine { bucket, epoch } => {
                dst.push(1);
                dst.extend_from_slice(&bucket.to_be_bytes());
                dst.extend_from_slice(&epoch.to_be_bytes());
            }
        }
    }

    /// Decodes a body.
    ///
    /// # Errors
    /// `Truncated` for an empty or short body, `BadField` for an unknown tag,
    /// `TrailingBytes` after a NOT_MINE.
    pub fn decode(body: &[u8]) -> Result<ForwardReply<'_>, DecodeErrorKind> {
        let (&tag, rest) = body.split_first().ok_or(DecodeErrorKind::Truncated)?;
        match tag {
            0 => Ok(ForwardReply::Executed(rest)),
            1 => {
                let mut r = Reader::new(rest);
                let reply = ForwardReply::NotMine {
                    bucket: r.u32()?,
                    epoch: r.u64()?,
                };
                r.finish()?;
                Ok(reply)
            }
            _ => Err(DecodeErrorKind::BadField),
        }
    }
}

/// Most bytes of replies an owner gathers into one FORWARD_BATCH reply: once past it, it runs
/// no more of the batch's commands (the sender sends them again). A single command's reply
/// may still exceed it.
pub const FORWARD_BATCH_REPLY_BUDGET: usize = 8 * 1024 * 1024;

/// Appends a FORWARD_BATCH request body: `count u32`, then for each command `len u32` and
/// the command (its line and data block, exactly as a client sent it), in the order the
/// owner is to run them.
pub fn encode_forward_batch<'a>(
    dst: &mut Vec<u8>,
    commands: impl ExactSizeIterator<Item = &'a [u8]>,
) {
    dst.extend_from_slice(&(commands.len() as u32).to_be_bytes());
    for command in commands {
        dst.extend_from_slice(&(command.len() as u32).to_be_bytes());
        dst.extend_from_slice(command);
    }
}

/// Decodes a FORWARD_BATCH request body into its commands, in order.
///
/// # Errors
/// `Truncated` when a length runs past the body (a count larger than the body can hold is
/// refused before anything is allocated), `TrailingBytes` after the last command.
pub fn decode_forward_batch(body: &[u8]) -> Result<Vec<&[u8]>, DecodeErrorKind> {
    let mut r = Reader::new(body);
    let count = r.u32()? as usize;
    // Each command takes at least its 4-byte length.
    if count > r.rest().len() / 4 {
        return Err(DecodeErrorKind::Truncated);
    }
    let mut commands = Vec::with_capacity(count);
    for _ in 0..count {
        commands.push(r.long()?);
    }
    r.finish()?;
    Ok(commands)
}

/// Builds a FORWARD_BATCH reply body: `count u32`, then for each command run, in order, `len
/// u32` and its [`ForwardReply`] body. `count` may be smaller than the number of commands
/// sent: the owner ran none of the commands after the ones answered (it stops after a
/// NOT_MINE, so that nothing behind a command that was not applied is applied before it, and
/// once [`FORWARD_BATCH_REPLY_BUDGET`] is passed).
#[derive(Debug)]
pub struct ForwardBatchReplies {
    body: Vec<u8>,
    count: u32,
}

impl Default for ForwardBatchReplies {
    fn default() -> Self {
        Self::new()
    }
}

impl ForwardBatchReplies {
    /// An empty reply (no command answered yet).
    pub fn new() -> Self {
        Self {
            body: vec![0; 4],
            count: 0,
        }
    }

    /// Appends the reply of the next command.
    pub fn push(&mut self, reply: &ForwardReply<'_>) {
        let at = self.body.len();
        self.body.extend_from_slice(&[0; 4]);
        reply.encode(&mut self.body);
        let len = (self.body.len() - at - 4) as u32;
        self.body[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.count += 1;
    }

    /// Commands answered so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the body so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether no command was answered yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished body.
    pub fn finish(mut self) -> Vec<u8> {
        self.body[..4].copy_from_slice(&self.count.to_be_bytes());
        self.body
    }

    /// Decodes a FORWARD_BATCH reply body into the replies of the first commands, in order.
    ///
    /// # Errors
    /// `Truncated` when a length runs past the body, `TrailingBytes` after the last reply,
    /// and [`ForwardReply::decode`]'s errors for a reply.
    pub fn decode(body: &[u8]) -> Result<Vec<ForwardReply<'_>>, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let count = r.u32()? as usize;
        // Each reply takes at least its 4-byte length and its tag.
        if count > r.rest().len() / 5 {
            return Err(DecodeErrorKind::Truncated);
        }
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            replies.push(ForwardReply::decode(r.long()?)?);
        }
        r.finish()?;
        Ok(replies)
    }
}

/// Size of an encoded [`HelloRequest`].
pub const HELLO_REQUEST_LEN: usize = 1 + ID_LEN * 3 + NONCE_LEN;
/// Size of an encoded [`HelloReply`].
pub const HELLO_REPLY_LEN: usize = 1 + ID_LEN * 2 + NONCE_LEN + PROOF_LEN;
/// Size of an encoded [`AuthRequest`].
pub const AUTH_REQUEST_LEN: usize = PROOF_LEN;

fn array<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], DecodeErrorKind> {
    let mut a = [0u8; N];
    for b in &mut a {
        *b = r.u8()?;
    }
    Ok(a)
}

impl HelloRequest {
    /// Appends the encoded body.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.push(self.proto_version);
        dst.extend_from_slice(&self.cluster_id);
        dst.extend_from_slice(&self.node_id);
        dst.extend_from_slice(&self.expected_node_id);
        dst.extend_from_slice(&self.nonce);
    }

    /// Decodes a body.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] or [`DecodeErrorKind::TrailingBytes`] when the body is
    /// not exactly [`HELLO_REQUEST_LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let v = Self {
            proto_version: r.u8()?,
            cluster_id: array(&mut r)?,
            node_id: array(&mut r)?,
            expected_node_id: array(&mut r)?,
            nonce: array(&mut r)?,
        };
        r.finish()?;
        Ok(v)
    }
}

impl HelloReply {
    /// Appends the encoded body.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.push(self.proto_version);
        dst.extend_from_slice(&self.cluster_id);
        dst.extend_from_slice(&self.node_id);
        dst.extend_from_slice(&self.nonce);
        dst.extend_from_slice(&self.proof);
    }

    /// Decodes a body.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] or [`DecodeErrorKind::TrailingBytes`] when the body is
    /// not exactly [`HELLO_REPLY_LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let v = Self {
            proto_version: r.u8()?,
            cluster_id: array(&mut r)?,
            node_id: array(&mut r)?,
            nonce: array(&mut r)?,
            proof: array(&mut r)?,
        };
        r.finish()?;
        Ok(v)
    }
}

impl AuthRequest {
    /// Appends the encoded body.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.proof);
    }

    /// Decodes a body.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] or [`DecodeErrorKind::TrailingBytes`] when the body is
    /// not exactly [`AUTH_REQUEST_LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let v = Self {
            proof: array(&mut r)?,
        };
        r.finish()?;
        Ok(v)
    }
}

/// Appends a message body (a `short`: `u16` length, then UTF-8 bytes, cut at 65535 bytes),
/// the body of every non-OK peer reply.
pub fn encode_message(dst: &mut Vec<u8>, message: &str) {
    put_short(dst, message.as_bytes());
}

/// Reads a message body; bytes that are not UTF-8 are replaced, so a reason can always be
/// logged.
///
/// # Errors
/// [`DecodeErrorKind::Truncated`] or [`DecodeErrorKind::TrailingBytes`].
pub fn decode_message(body: &[u8]) -> Result<String, DecodeErrorKind> {
    let mut r = Reader::new(body);
    let m = r.short()?;
    r.finish()?;
    Ok(String::from_utf8_lossy(m).into_owned())
}

/// Appends a whole peer request frame: header (opcode, request id, body length) and body.
/// A body longer than `u32::MAX` bytes is a caller bug that the frame limit prevents; its
/// length is clamped so the frame stays well formed.
pub fn encode_request(dst: &mut Vec<u8>, op: PeerOpcode, request_id: u32, body: &[u8]) {
    encode_frame(dst, op as u8, 0, Status::Ok, request_id, body);
}

/// Appends a whole peer reply frame. `op` is raw so that an opcode this side does not know
/// can be answered.
pub fn encode_reply(dst: &mut Vec<u8>, op: u8, status: Status, request_id: u32, body: &[u8]) {
    encode_frame(dst, op, FLAG_REPLY, status, request_id, body);
}

/// Appends a whole non-OK peer reply frame whose body is `message`.
pub fn encode_refusal(dst: &mut Vec<u8>, op: u8, status: Status, request_id: u32, message: &str) {
    let mut body = Vec::with_capacity(message.len().min(usize::from(u16::MAX)) + 2);
    encode_message(&mut body, message);
    encode_reply(dst, op, status, request_id, &body);
}

fn encode_frame(dst: &mut Vec<u8>, op: u8, flags: u8, status: Status, id: u32, body: &[u8]) {
    let body = &body[..body.len().min(u32::MAX as usize)];
    Header {
        opcode: op,
        flags,
        status: status as u16,
        request_id: id,
        body_len: body.len() as u32,
    }
    .encode(dst);
    dst.extend_from_slice(body);
}

/// The limits a peer frame header is checked against: only the body size matters on the
/// peer port.
pub fn peer_limits(max_body: usize) -> Limits {
    Limits {
        max_frame: max_body,
        ..Limits::default()
    }
}

/// Where a whole peer frame lies in a receive buffer: its header, and the body's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFrame {
    /// The header.
    pub header: Header,
    /// Total length of the frame (header and body) at the start of the buffer.
    pub len: usize,
}

impl PeerFrame {
    /// The body's range in the buffer the frame was found in.
    pub fn body_range(&self) -> std::ops::Range<usize> {
        HEADER_LEN..self.len
    }
}

/// Finds the whole peer frame at the start of `buf`: `Ok(None)` while more bytes are needed.
/// The header is checked (magic, version, reserved bits, body length at most `max_body`)
/// before the body is awaited, so a frame too large is refused on its header alone.
/// Opcode, direction and status are the caller's to check (see [`check_request`] and
/// [`check_reply`]).
///
/// # Errors
/// A fatal [`DecodeError`]: the stream cannot continue.
pub fn decode_frame(buf: &[u8], max_body: usize) -> Result<Option<PeerFrame>, DecodeError> {
    let Some(header) = Header::decode(buf, &peer_limits(max_body))? else {
        return Ok(None);
    };
    let len = HEADER_LEN + header.body_len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(PeerFrame { header, len }))
}

/// Checks that `header` is a well-formed peer request: no REPLY flag, no status, a known peer
/// opcode.
///
/// # Errors
/// [`DecodeErrorKind::WrongDirection`], [`DecodeErrorKind::StatusInRequest`] (both mean the
/// peer is confused: close), or [`DecodeErrorKind::UnknownOpcode`] (answer
/// `UNKNOWN_COMMAND`, keep the connection).
pub fn check_request(header: &Header) -> Result<PeerOpcode, DecodeErrorKind> {
    if header.is_reply() {
        return Err(DecodeErrorKind::WrongDirection);
    }
    if header.status != 0 {
        return Err(DecodeErrorKind::StatusInRequest);
    }
    PeerOpcode::from_u8(header.opcode).ok_or(DecodeErrorKind::UnknownOpcode)
}

/// Checks that `header` is a peer reply with a known status, and returns the status.
///
/// # Errors
/// [`DecodeErrorKind::WrongDirection`] for a request, [`DecodeErrorKind::UnknownStatus`].
pub fn check_reply(header: &Header) -> Result<Status, DecodeErrorKind> {
    if !header.is_reply() {
        return Err(DecodeErrorKind::WrongDirection);
    }
    Status::from_u16(header.status).ok_or(DecodeErrorKind::UnknownStatus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> HelloRequest {
        HelloRequest {
            proto_version: PEER_PROTOCOL_VERSION,
            cluster_id: [1; 16],
            node_id: [2; 16],
            expected_node_id: [0; 16],
            nonce: [3; 32],
        }
    }

    fn hello_reply() -> HelloReply {
        HelloReply {
            proto_version: PEER_PROTOCOL_VERSION,
            cluster_id: [1; 16],
            node_id: [4; 16],
            nonce: [5; 32],
            proof: [6; 32],
        }
    }

    /// Every strict prefix is Truncated, one more byte is TrailingBytes.
    fn check_lengths<T: PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, DecodeErrorKind>,
    ) {
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(DecodeErrorKind::Truncated),
                "cut {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), Err(DecodeErrorKind::TrailingBytes));
    }

    #[test]
    fn opcodes_are_in_the_peer_range_and_round_trip() {
        assert_eq!(PEER_OPCODES.len(), 14);
        for &(n, name) in PEER_OPCODES {
            assert!((0xC0..=0xDF).contains(&n), "{name}");
            let op = PeerOpcode::from_u8(n).expect("assigned");
            assert_eq!(op as u8, n);
            assert_eq!(op.name(), name);
            assert!(
                crate::Opcode::from_u8(n).is_none(),
                "{name} is a client opcode"
            );
        }
        assert_eq!(PeerOpcode::from_u8(0xCE), None);
        assert_eq!(PeerOpcode::from_u8(0x10), None);
    }

    #[test]
    fn hello_request_round_trips_and_checks_its_length() {
        let mut b = Vec::new();
        hello().encode(&mut b);
        assert_eq!(b.len(), HELLO_REQUEST_LEN);
        assert_eq!(HelloRequest::decode(&b), Ok(hello()));
        check_lengths(&b, HelloRequest::decode);
    }

    #[test]
    fn hello_reply_round_trips_and_checks_its_length() {
        let mut b = Vec::new();
        hello_reply().encode(&mut b);
        assert_eq!(b.len(), HELLO_REPLY_LEN);
        assert_eq!(HelloReply::decode(&b), Ok(hello_reply()));
        check_lengths(&b, HelloReply::decode);
    }

    #[test]
    fn auth_request_round_trips_and_checks_its_length() {
        let auth = AuthRequest { proof: [9; 32] };
        let mut b = Vec::new();
        auth.encode(&mut b);
        assert_eq!(b.len(), AUTH_REQUEST_LEN);
        assert_eq!(AuthRequest::decode(&b), Ok(auth));
        check_lengths(&b, AuthRequest::decode);
    }

    #[test]
    fn messages_round_trip_and_bad_ones_are_typed_errors() {
        let mut b = Vec::new();
        encode_message(&mut b, "wrong cluster: é");
        assert_eq!(decode_message(&b).as_deref(), Ok("wrong cluster: é"));
        check_lengths(&b, decode_message);
        // Not UTF-8: replaced, not an error.
        assert_eq!(
            decode_message(&[0, 2, 0xff, b'x']).as_deref(),
            Ok("\u{fffd}x")
        );
        // Longer than a short: cut, still well formed.
        let long = "x".repeat(70_000);
        let mut b = Vec::new();
        encode_message(&mut b, &long);
        assert_eq!(decode_message(&b).map(|m| m.len()), Ok(65_535));
    }

    #[test]
    fn frames_are_found_whole_and_checked() {
        let mut buf = Vec::new();
        encode_request(&mut buf, PeerOpcode::PeerPing, 9, b"abc");
        let f = decode_frame(&buf, 16).unwrap().unwrap();
        assert_eq!(f.len, buf.len());
        assert_eq!(&buf[f.body_range()], b"abc");
        assert_eq!(check_request(&f.header), Ok(PeerOpcode::PeerPing));
        assert_eq!(f.header.request_id, 9);
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut], 16), Ok(None), "cut {cut}");
        }
        // Oversized: refused on the header alone.
        let err = decode_frame(&buf[..HEADER_LEN], 2).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::FrameTooLarge);
        assert!(!err.is_recoverable());
        // Bad magic.
        assert_eq!(
            decode_frame(b"X", 16).unwrap_err().kind,
            DecodeErrorKind::BadMagic
        );
        // A reply is not a request, and vice versa.
        let mut reply = Vec::new();
        encode_refusal(&mut reply, 0xC5, Status::WrongCluster, 3, "no");
        let f = decode_frame(&reply, 1024).unwrap().unwrap();
        assert_eq!(
            check_request(&f.header),
            Err(DecodeErrorKind::WrongDirection)
        );
        assert_eq!(check_reply(&f.header), Ok(Status::WrongCluster));
        assert_eq!(decode_message(&reply[f.body_range()]).as_deref(), Ok("no"));
        let f = decode_frame(&buf, 16).unwrap().unwrap();
        assert_eq!(check_reply(&f.header), Err(DecodeErrorKind::WrongDirection));
        // A client opcode is unknown here; a status in a request is refused.
        let mut get = Vec::new();
        encode_request(&mut get, PeerOpcode::Join, 1, b"");
        get[2] = 0x10;
        let f = decode_frame(&get, 16).unwrap().unwrap();
        assert_eq!(
            check_request(&f.header),
            Err(DecodeErrorKind::UnknownOpcode)
        );
        get[5] = 1;
        let f = decode_frame(&get, 16).unwrap().unwrap();
        assert_eq!(
            check_request(&f.header),
            Err(DecodeErrorKind::StatusInRequest)
        );
        let mut unknown_status = reply.clone();
        unknown_status[4] = 0xff;
        let f = decode_frame(&unknown_status, 1024).unwrap().unwrap();
        assert_eq!(check_reply(&f.header), Err(DecodeErrorKind::UnknownStatus));
    }

    #[test]
    fn forward_batches_round_trip_and_bad_bodies_are_refused() {
        let commands: [&[u8]; 3] = [b"get a\r\n", b"", b"set b 0 0 1\r\nx\r\n"];
        let mut body = Vec::new();
        encode_forward_batch(&mut body, commands.iter().copied());
        assert_eq!(decode_forward_batch(&body), Ok(commands.to_vec()));
        for cut in 0..body.len() {
            assert!(decode_forward_batch(&body[..cut]).is_err(), "prefix {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert_eq!(
            decode_forward_batch(&long),
            Err(DecodeErrorKind::TrailingBytes)
        );
        // A count the body cannot hold is refused before anything is allocated.
        assert_eq!(
            decode_forward_batch(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Err(DecodeErrorKind::Truncated)
        );

        let mut replies = ForwardBatchReplies::new();
        assert!(replies.is_empty());
        let sent = [
            ForwardReply::Executed(b"VALUE a 0 1\r\nx\r\nEND\r\n"),
            ForwardReply::Executed(b""),
            ForwardReply::NotMine {
                bucket: 3,
                epoch: 9,
            },
        ];
        for reply in &sent {
            replies.push(reply);
        }
        assert_eq!(replies.count(), 3);
        let body = replies.finish();
        assert_eq!(ForwardBatchReplies::decode(&body), Ok(sent.to_vec()));
        assert_eq!(
            ForwardBatchReplies::decode(&ForwardBatchReplies::new().finish()),
            Ok(Vec::new())
        );
        for cut in 0..body.len() {
            assert!(
                ForwardBatchReplies::decode(&body[..cut]).is_err(),
                "prefix {cut}"
            );
        }
        assert_eq!(
            ForwardBatchReplies::decode(&[0, 0, 0, 1, 0, 0, 0, 1, 7]),
            Err(DecodeErrorKind::BadField)
        );
        assert_eq!(
            ForwardBatchReplies::decode(&[0, 0, 0, 9, 0, 0, 0, 1, 0]),
            Err(DecodeErrorKind::Truncated)
        );
    }

    #[test]
    fn forward_replies_round_trip_and_bad_bodies_are_refused() {
        for reply in [
            ForwardReply::Executed(b"STORED\r\n"),
            ForwardReply::Executed(b""),
            ForwardReply::NotMine {
                bucket: 7,
                epoch: u64::MAX,
            },
        ] {
            let mut body = Vec::new();
            reply.encode(&mut body);
            assert_eq!(ForwardReply::decode(&body), Ok(reply));
        }
        assert_eq!(ForwardReply::decode(b""), Err(DecodeErrorKind::Truncated));
        assert_eq!(ForwardReply::decode(&[2]), Err(DecodeErrorKind::BadField));
        assert_eq!(
            ForwardReply::decode(&[1, 0, 0, 0, 1, 0]),
            Err(DecodeErrorKind::Truncated)
        );
        let mut long = Vec::new();
        ForwardReply::NotMine {
            bucket: 1,
            epoch: 2,
        }
        .encode(&mut long);
        long.push(0);
        assert_eq!(
            ForwardReply::decode(&long),
            Err(DecodeErrorKind::TrailingBytes)
        );
    }
}
