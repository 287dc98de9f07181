//! [`PeerClient`]: this node's connection to one other node's peer port.
//!
//! The connection is opened on the first call and handshaken (the dialer side); calls then
//! share it, each with its own request id, and their replies come back in any order. When the
//! connection fails, the calls in flight fail with [`PeerCallError::Closed`] and the next call
//! opens a new one. Every call has a deadline that covers connecting and the handshake too.
//!
//! In `fault-injection` builds cut off from its peers (SIGUSR1), every call fails at once
//! with [`PeerCallError::Unreachable`] and the live connection is closed (its calls in flight
//! fail with [`PeerCallError::Closed`]).

use super::handshake::{new_nonce, DialerHandshake, Local, Verified};
use super::wire::{write_frames, FrameReader, ReadError, HANDSHAKE_MAX_BODY};
use super::{cut, PeerIdentity};
use crate::datadir::NodeId;
use bytes::Bytes;
use shoal_proto::peer::{
    check_reply, decode_message, encode_request, HelloReply, PeerOpcode, DEFAULT_MAX_PEER_BODY,
};
use shoal_proto::{Header, Status};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Frames queued for the writer of one connection before callers wait.
const WRITE_QUEUE: usize = 256;

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCallError {
    /// The handshake failed: the other node refused this one, or this one refused it (wrong
    /// secret, cluster or node). Both sides logged why.
    Refused {
        /// Why, as the refusing side said it.
        reason: String,
    },
    /// No connection could be opened.
    Unreachable {
        /// The OS error.
        cause: String,
    },
    /// No reply within the call's deadline (the request may or may not have been handled).
    Timeout,
    /// The other node answered with an error status.
    Remote {
        /// The reply status.
        status: Status,
        /// The message the other node gave.
        message: String,
    },
    /// The connection ended before the reply came (the request may or may not have been
    /// handled); the next call reconnects.
    Closed,
    /// The other node sent something that is not the peer protocol.
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The request body is larger than the peer port accepts.
    TooLarge {
        /// The body's length.
        len: usize,
    },
}

impl fmt::Display for PeerCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerCallError::Refused { reason } => write!(f, "peer handshake refused: {reason}"),
            PeerCallError::Unreachable { cause } => write!(f, "peer unreachable: {cause}"),
            PeerCallError::Timeout => f.write_str("peer call timed out"),
            PeerCallError::Remote { status, message } => {
                write!(f, "peer answered {}: {message}", status.name())
            }
            PeerCallError::Closed => f.write_str("peer connection closed"),
            PeerCallError::Protocol { reason } => write!(f, "peer protocol error: {reason}"),
            PeerCallError::TooLarge { len } => write!(
                f,
                "peer request of {len} bytes is larger than the limit of {DEFAULT_MAX_PEER_BODY}"
            ),
        }
    }
}

impl std::error::Error for PeerCallError {}

type ReplySender = oneshot::Sender<Result<(Status, Bytes), PeerCallError>>;

/// Calls waiting for their replies on one connection.
#[derive(Default)]
struct Pending {
    waiting: HashMap<u32, ReplySender>,
    /// Set once the connection has ended: no call may wait on it any more.
    closed: bool,
}

/// One open, handshaken connection.
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
    peer: Verified,
    /// This node's cluster id when the connection was handshaken: once it changes (a joining
    /// node was given one), the next call reconnects, so the other side sees a member.
    local_cluster: Option<crate::datadir::ClusterId>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.pending.lock().map_or(true, |p| p.closed)
    }
}

/// Removes a call's entry when the call ends (answered, timed out or dropped).
struct Waiting<'a> {
    pending: &'a Mutex<Pending>,
    id: u32,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.waiting.remove(&self.id);
        }
    }
}

/// A client for one remote node's peer port. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    expected: Option<NodeId>,
    identity: PeerIdentity,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU32,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("addr", &self.inner.addr)
            .field("expected", &self.inner.expected)
            .finish()
    }
}

impl PeerClient {
    /// A client for the peer port at `addr`, which must be the node `expected` when given
    /// (the handshake refuses any other). Nothing is opened until the first call.
    pub fn new(addr: SocketAddr, expected: Option<NodeId>, identity: PeerIdentity) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                expected,
                identity,
                conn: tokio::sync::Mutex::new(None),
                next_id: AtomicU32::new(1),
            }),
        }
    }

    /// The remote address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The remote node's id as its last handshake proved it, while connected.
    pub async fn connected_node(&self) -> Option<NodeId> {
        let conn = self.inner.conn.lock().await;
        conn.as_ref()
            .filter(|c| !c.is_closed())
            .map(|c| c.peer.node_id)
    }

    /// Sends `op` with `body` and returns the OK reply's body. Opens and handshakes the
    /// connection first when there is none (or the last one failed). `timeout` bounds the
    /// whole call, connecting included.
    ///
    /// # Errors
    /// [`PeerCallError`]: `Remote` for an error status, the others for the transport.
    pub async fn call(
        &self,
        op: PeerOpcode,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, PeerCallError> {
        if body.len() > DEFAULT_MAX_PEER_BODY {
            return Err(PeerCallError::TooLarge { len: body.len() });
        }
        if cut::now() {
            return Err(self.cut_off());
        }
        match tokio::time::timeout(timeout, self.call_inner(op, body)).await {
            Ok(result) => result,
            Err(_) => Err(PeerCallError::Timeout),
        }
    }

    async fn call_inner(&self, op: PeerOpcode, body: Vec<u8>) -> Result<Bytes, PeerCallError> {
        let conn = self.connection().await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut p = conn.pending.lock().map_err(|_| PeerCallError::Closed)?;
            if p.closed {
                return Err(PeerCallError::Closed);
            }
            p.waiting.insert(id, reply_tx);
        }
        let _waiting = Waiting {
            pending: &conn.pending,
            id,
        };
        let mut frame = Vec::with_capacity(shoal_proto::HEADER_LEN + body.len());
        encode_request(&mut frame, op, id, &body);
        conn.tx
            .send(frame)
            .await
            .map_err(|_| PeerCallError::Closed)?;
        let (status, body) = reply_rx.await.map_err(|_| PeerCallError::Closed)??;
        if status == Status::Ok {
            Ok(body)
        } else {
            Err(PeerCallError::Remote {
                status,
                message: decode_message(&body)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned()),
            })
        }
    }

    /// The open connection, opened now when there is none.
    async fn connection(&self) -> Result<Arc<Conn>, PeerCallError> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.is_closed() && conn.local_cluster == self.inner.identity.current_cluster() {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        let conn = Arc::new(self.connect().await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The error of a call while this node is cut off from its peers (fault injection).
    fn cut_off(&self) -> PeerCallError {
        PeerCallError::Unreachable {
            cause: format!(
                "{}: this node is cut off from its peers (fault injection)",
                self.inner.addr
            ),
        }
    }

    /// Opens and handshakes a connection; fails as unreachable when this node is cut off
    /// from its peers meanwhile.
    async fn connect(&self) -> Result<Conn, PeerCallError> {
        cut::unless_cut(self.open())
            .await
            .unwrap_or_else(|| Err(self.cut_off()))
    }

    async fn open(&self) -> Result<Conn, PeerCallError> {
        let addr = self.inner.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| PeerCallError::Unreachable {
                cause: format!("{addr}: {e}"),
            })?;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut reader = FrameReader::new(rd, HANDSHAKE_MAX_BODY);
        let local_cluster = self.inner.identity.current_cluster();
        let peer = match self.handshake(&mut reader, &mut wr, local_cluster).await {
            Ok(peer) => peer,
            Err(e) => {
                let _ = wr.shutdown().await;
                return Err(e);
            }
        };
        tracing::debug!(peer = %addr, node = %peer.node_id, "connected to a peer");
        reader.max_body = DEFAULT_MAX_PEER_BODY;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(cut::unless_cut(write_frames(wr, rx)));
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(read_replies(reader, pending.clone(), addr));
        Ok(Conn {
            tx,
            pending,
            peer,
            local_cluster,
        })
    }

    /// The dialer side of the handshake; refusals are logged here.
    async fn handshake(
        &self,
        reader: &mut FrameReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
        cluster: Option<crate::datadir::ClusterId>,
    ) -> Result<Verified, PeerCallError> {
        let addr = self.inner.addr;
        let identity = &self.inner.identity;
        let local = Local {
            node_id: identity.node_id,
            cluster_id: cluster,
            secret: &identity.secret,
        };
        let (state, hello) = DialerHandshake::start(local, self.inner.expected, new_nonce());
        let mut body = Vec::new();
        hello.encode(&mut body);
        let reply = self
            .exchange(reader, wr, PeerOpcode::PeerHello, &body)
            .await?;
        let reply = HelloReply::decode(&reply).map_err(|kind| PeerCallError::Protocol {
            reason: format!("malformed PEER_HELLO reply: {}", kind.as_str()),
        })?;
        let (auth, verified) = match state.on_reply(&reply) {
            Ok(x) => x,
            Err(refusal) => {
                let theirs = super::handshake::cluster_from_wire(reply.cluster_id);
                tracing::warn!(peer = %addr, peer_node = %NodeId(reply.node_id), our_node = %identity.node_id,
                    our_cluster = %cluster.map_or_else(|| "none".into(), |c| c.to_string()),
                    peer_cluster = %theirs.map_or_else(|| "none".into(), |c| c.to_string()),
                    "refused to talk to a peer: {refusal}");
                return Err(PeerCallError::Refused {
                    reason: refusal.to_string(),
                });
            }
        };
        let mut body = Vec::new();
        auth.encode(&mut body);
        self.exchange(reader, wr, PeerOpcode::PeerAuth, &body)
            .await?;
        Ok(verified)
    }

    /// Sends one handshake request and reads its reply; an error status is a refusal.
    async fn exchange(
        &self,
        reader: &mut FrameReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
        op: PeerOpcode,
        body: &[u8],
    ) -> Result<Bytes, PeerCallError> {
        let addr = self.inner.addr;
        let mut frame = Vec::new();
        encode_request(&mut frame, op, 0, body);
        wr.write_all(&frame)
            .await
            .map_err(|_| PeerCallError::Closed)?;
        let (header, body) = reader.next().await.map_err(|e| match e {
            ReadError::Closed | ReadError::Io(_) => PeerCallError::Closed,
            ReadError::Decode(d) => PeerCallError::Protocol {
                reason: d.to_string(),
            },
        })?;
        let status = check_handshake_reply(&header, op)?;
        if status == Status::Ok {
            return Ok(body);
        }
        let reason = decode_message(&body).unwrap_or_else(|_| status.name().to_string());
        tracing::warn!(peer = %addr, status = status.name(), "a peer refused this node at {}: {reason}", op.name());
        Err(PeerCallError::Refused {
            reason: format!("{}: {reason}", status.name()),
        })
    }
}

fn check_handshake_reply(header: &Header, op: PeerOpcode) -> Result<Status, PeerCallError> {
    let status = check_reply(header).map_err(|kind| PeerCallError::Protocol {
        reason: format!("bad reply to {}: {}", op.name(), kind.as_str()),
    })?;
    // A refusal may answer with another opcode (a BUSY at the connection limit).
    if header.opcode != op as u8 && status == Status::Ok {
        return Err(PeerCallError::Protocol {
            reason: format!("{} answered with opcode {:#04x}", op.name(), header.opcode),
        });
    }
    Ok(status)
}

/// Hands each reply to the call waiting for it; when the connection ends, fails every call
/// still waiting and marks the connection closed.
async fn read_replies(
    mut reader: FrameReader<OwnedReadHalf>,
    pending: Arc<Mutex<Pending>>,
    addr: SocketAddr,
) {
    let end = cut::unless_cut(hand_out_replies(&mut reader, &pending))
        .await
        .unwrap_or_else(|| "cut off from peers (fault injection)".to_string());
    drop(reader);
    tracing::debug!(peer = %addr, cause = %end, "peer connection ended");
    if let Ok(mut p) = pending.lock() {
        p.closed = true;
        for (_, w) in p.waiting.drain() {
            let _ = w.send(Err(PeerCallError::Closed));
        }
    }
}

/// Hands each reply read to the call waiting for it, until the connection ends; returns why
/// it ended.
async fn hand_out_replies(
    reader: &mut FrameReader<OwnedReadHalf>,
    pending: &Mutex<Pending>,
) -> String {
    loop {
        let (header, body) = match reader.next().await {
            Ok(frame) => frame,
            Err(e) => return e.to_string(),
        };
        let status = match check_reply(&header) {
            Ok(status) => status,
            Err(kind) => return kind.as_str().to_string(),
        };
        let waiter = match pending.lock() {
            Ok(mut p) => p.waiting.remove(&header.request_id),
            Err(_) => return "internal lock poisoned".to_string(),
        };
        // No waiter: the call timed out or was dropped; its reply is discarded.
        if let Some(w) = waiter {
            let _ = w.send(Ok((status, body)));
        }
    }
}
