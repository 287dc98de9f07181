//! [`PeerServer`]: the peer port's accept loop and, per connection, the listener side of the
//! handshake, then a request loop that hands every request to a [`PeerHandler`].
//!
//! ```text
//!  accept ─> handshake (deadline, tiny frames) ─> request loop ─┬─> PEER_PING: answered here
//!                 │ refused: reply with the status,             ├─> refused (joining, unknown)
//!                 │ warn, close                                 └─> spawn handler task ─> reply
//!  replies of all tasks go through one writer task per connection, matched by request id
//! ```
//!
//! In `fault-injection` builds cut off from its peers (SIGUSR1), the server drops every new
//! connection at accept and closes every live one.
//!
//! Requests on one connection run concurrently, at most [`PeerLimits::max_in_flight`] at a
//! time: past that, the connection is not read until one finishes.

use super::handshake::{check_allowed, new_nonce, ListenerHandshake, Local, Verified};
use super::wire::{write_frames, FrameReader, ReadError, HANDSHAKE_MAX_BODY};
use super::{cut, PeerIdentity};
use crate::cluster::in_sync::Held;
use crate::cluster::lease::LEASE_RAN_OUT;
use crate::datadir::{ClusterId, NodeId};
use bytes::Bytes;
use shoal_proto::peer::{
    check_request, encode_refusal, encode_reply, AuthRequest, HelloRequest, PeerOpcode,
    DEFAULT_MAX_PEER_BODY,
};
use shoal_proto::{DecodeErrorKind, Header, Status};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Shortest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after repeated failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The other end of a peer connection, as the handshake proved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The other node's id.
    pub node_id: NodeId,
    /// The other node's cluster id at the handshake (`None` when it had none).
    pub cluster_id: Option<ClusterId>,
    /// The other node had no cluster id: it may only send JOIN and PEER_PING.
    pub joining: bool,
    /// Its address.
    pub addr: SocketAddr,
}

/// A request that a [`PeerHandler`] did not carry out: the reply's status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFailure {
    /// The reply status (not OK).
    pub status: Status,
    /// Why, for the other node's log.
    pub message: String,
}

impl PeerFailure {
    /// A failure with `status` and `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `NOT_READY`: the node cannot serve this yet; the caller retries later.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(Status::NotReady, message)
    }

    /// `BAD_REQUEST`: the body does not decode.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, message)
    }
}

/// Serves the requests that arrive on authenticated peer connections (everything except the
/// handshake and PEER_PING, which [`PeerServer`] answers itself).
pub trait PeerHandler: Send + Sync + 'static {
    /// Carries out one request from `from` and returns the OK reply body, or the failure to
    /// answer with. Several calls run at once (from one connection and from several).
    fn handle(
        &self,
        from: &PeerInfo,
        op: PeerOpcode,
        body: Bytes,
    ) -> impl Future<Output = Result<Vec<u8>, PeerFailure>> + Send;

    /// Carries out `op` at once when this handler serves it in order (FORWARD: memcached
    /// commands, whose order on one connection matters; a copy's items and changes, applied
    /// as they arrive without a task each), before the connection's next
    /// request is read; its reply is queued then, or once [`InOrder::after`] completes.
    /// `None` (the default): [`PeerHandler::handle`] serves it, concurrently with others.
    fn handle_in_order(&self, _from: &PeerInfo, _op: PeerOpcode, _body: &[u8]) -> Option<InOrder> {
        None
    }
}

/// A request carried out in order ([`PeerHandler::handle_in_order`]).
pub struct InOrder {
    /// The OK reply body, or the failure to answer with.
    pub reply: Result<Vec<u8>, PeerFailure>,
    /// What must complete before the reply is sent (an in-sync copy acknowledging the
    /// write); the next requests are carried out meanwhile. `None`: sent at once.
    pub after: Option<Held>,
}

/// The handler of a node whose cluster layer is not running: every request is answered
/// `NOT_READY` (PEER_PING is still answered, by the server).
#[derive(Debug, Clone, Copy, Default)]
pub struct PingOnly;

impl PeerHandler for PingOnly {
    async fn handle(
        &self,
        _from: &PeerInfo,
        op: PeerOpcode,
        _body: Bytes,
    ) -> Result<Vec<u8>, PeerFailure> {
        Err(PeerFailure::not_ready(format!(
            "{} refused: this node's cluster layer is not running yet",
            op.name()
        )))
    }
}

/// Limits of the peer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Largest frame body after the handshake; a larger one is refused (`VALUE_TOO_LARGE`)
    /// on its header and the connection closed.
    pub max_body: usize,
    /// Most requests of one connection being handled at once.
    pub max_in_flight: usize,
    /// Most peer connections at once; more are answered `BUSY` and closed.
    pub max_connections: usize,
    /// Time a dialer has to complete the handshake.
    pub handshake_timeout: Duration,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_PEER_BODY,
            max_in_flight: 256,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// The peer port's server: accepts, runs the listener side of the handshake, and serves
/// requests through a [`PeerHandler`].
pub struct PeerServer<H> {
    listener: TcpListener,
    identity: PeerIdentity,
    handler: Arc<H>,
    limits: PeerLimits,
}

impl<H: PeerHandler> PeerServer<H> {
    /// A server on a bound `listener`, as the node `identity`, handing requests to `handler`.
    pub fn new(listener: TcpListener, identity: PeerIdentity, handler: H) -> Self {
        Self {
            listener,
            identity,
            handler: Arc::new(handler),
            limits: PeerLimits::default(),
        }
    }

    /// The same server with other limits.
    pub fn with_limits(mut self, limits: PeerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address the server listens on.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves until `shutdown` completes; then closes every peer connection and
    /// returns. Requests being handled at that moment finish, but their replies are dropped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut conns = JoinSet::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(err) => {
                    tracing::warn!(cause = %err, pause_ms = backoff.as_millis() as u64, "peer accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            if cut::now() {
                tracing::debug!(peer = %addr, "peer connection dropped: cut off from peers (fault injection)");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            if conns.len() >= self.limits.max_connections {
                tracing::warn!(peer = %addr, limit = self.limits.max_connections, "peer connection refused: too many peer connections");
                conns.spawn(refuse_busy(stream));
                continue;
            }
            let conn = Connection {
                addr,
                identity: self.identity.clone(),
                handler: self.handler.clone(),
                limits: self.limits,
            };
            conns.spawn(conn.serve(stream));
        }
        conns.shutdown().await;
    }
}

async fn refuse_busy(mut stream: TcpStream) {
    let mut out = Vec::new();
    encode_refusal(
        &mut out,
        PeerOpcode::PeerHello as u8,
        Status::Busy,
        0,
        "too many peer connections",
    );
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One accepted peer connection.
struct Connection<H> {
    addr: SocketAddr,
    identity: PeerIdentity,
    handler: Arc<H>,
    limits: PeerLimits,
}

/// How the handshake on one connection ended, when it did not succeed (already logged).
struct Refused;

impl<H: PeerHandler> Connection<H> {
    async fn serve(self, stream: TcpStream) {
        let (rd, mut wr) = stream.into_split();
        let mut reader = FrameReader::new(rd, HANDSHAKE_MAX_BODY);
        let handshake = tokio::time::timeout(
            self.limits.handshake_timeout,
            self.handshake(&mut reader, &mut wr),
        )
        .await;
        let verified = match handshake {
            Ok(Ok(v)) => v,
            Ok(Err(Refused)) => {
                let _ = wr.shutdown().await;
                reader.linger().await;
                return;
            }
            Err(_) => {
                tracing::warn!(peer = %self.addr, timeout_ms = self.limits.handshake_timeout.as_millis() as u64,
                    "peer connection closed: the handshake did not complete in time");
                return;
            }
        };
        let info = PeerInfo {
            node_id: verified.node_id,
            cluster_id: verified.cluster_id,
            joining: verified.joining,
            addr: self.addr,
        };
        tracing::info!(peer = %self.addr, node = %info.node_id, joining = info.joining, "peer connected");
        reader.max_body = self.limits.max_body;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(self.limits.max_in_flight.saturating_add(16));
        let writer = tokio::spawn(cut::unless_cut(write_frames(wr, rx)));
        let Some(close_after_refusal) =
            cut::unless_cut(self.requests(&info, &mut reader, &tx)).await
        else {
            // The writer ends by itself; dropping the reader closes the socket.
            tracing::debug!(peer = %self.addr, node = %info.node_id, "peer connection closed: cut off from peers (fault injection)");
            return;
        };
        drop(tx);
        let _ = writer.await;
        if close_after_refusal {
            reader.linger().await;
        }
        tracing::debug!(peer = %self.addr, node = %info.node_id, "peer connection closed");
    }

    /// The listener side of the handshake; every refusal is answered and logged here.
    async fn handshake(
        &self,
        reader: &mut FrameReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<Verified, Refused> {
        let addr = self.addr;
        let (header, body) = self.read_handshake_frame(reader, wr, "PEER_HELLO").await?;
        if check_request(&header) != Ok(PeerOpcode::PeerHello) {
            tracing::warn!(peer = %addr, opcode = header.opcode, "peer refused: the first frame is not PEER_HELLO");
            return Err(refuse(
                wr,
                &header,
                Status::HelloRequired,
                "the first frame on a peer connection must be PEER_HELLO",
            )
            .await);
        }
        let hello = match HelloRequest::decode(&body) {
            Ok(h) => h,
            Err(kind) => {
                tracing::warn!(peer = %addr, cause = kind.as_str(), "peer refused: malformed PEER_HELLO");
                return Err(refuse(
                    wr,
                    &header,
                    Status::BadRequest,
                    &format!("malformed PEER_HELLO: {}", kind.as_str()),
                )
                .await);
            }
        };
        let cluster = self.identity.current_cluster();
        let local = Local {
            node_id: self.identity.node_id,
            cluster_id: cluster,
            secret: &self.identity.secret,
        };
        let claimed = NodeId(hello.node_id);
        let (state, reply) = match ListenerHandshake::on_hello(local, &hello, new_nonce()) {
            Ok(x) => x,
            Err(refusal) => {
                tracing::warn!(peer = %addr, peer_node = %claimed, our_node = %self.identity.node_id,
                    our_cluster = %show(cluster), peer_cluster = %show(super::handshake::cluster_from_wire(hello.cluster_id)),
                    "refused a peer: {refusal}");
                return Err(refuse(wr, &header, refusal.status(), &refusal.to_string()).await);
            }
        };
        let mut body = Vec::new();
        reply.encode(&mut body);
        let mut out = Vec::new();
        encode_reply(
            &mut out,
            header.opcode,
            Status::Ok,
            header.request_id,
            &body,
        );
        if wr.write_all(&out).await.is_err() {
            return Err(Refused);
        }
        let (header, body) = match reader.next().await {
            Ok(frame) => frame,
            Err(ReadError::Closed) => {
                tracing::warn!(peer = %addr, peer_node = %claimed,
                    "peer closed the handshake after our PEER_HELLO reply: it refused this node \
                     (different cluster secrets, or another cluster or node than it expected; see its log)");
                return Err(Refused);
            }
            Err(e) => return Err(self.read_failed(wr, e, "PEER_AUTH").await),
        };
        if check_request(&header) != Ok(PeerOpcode::PeerAuth) {
            tracing::warn!(peer = %addr, peer_node = %claimed, opcode = header.opcode, "peer refused: PEER_AUTH must follow PEER_HELLO");
            return Err(refuse(
                wr,
                &header,
                Status::AuthRequired,
                "PEER_AUTH must follow PEER_HELLO",
            )
            .await);
        }
        let auth = match AuthRequest::decode(&body) {
            Ok(a) => a,
            Err(kind) => {
                tracing::warn!(peer = %addr, peer_node = %claimed, cause = kind.as_str(), "peer refused: malformed PEER_AUTH");
                return Err(refuse(
                    wr,
                    &header,
                    Status::BadRequest,
                    &format!("malformed PEER_AUTH: {}", kind.as_str()),
                )
                .await);
            }
        };
        match state.on_auth(&auth) {
            Ok(verified) => {
                let mut out = Vec::new();
                encode_reply(&mut out, header.opcode, Status::Ok, header.request_id, &[]);
                wr.write_all(&out).await.map_err(|_| Refused)?;
                Ok(verified)
            }
            Err(refusal) => {
                tracing::warn!(peer = %addr, peer_node = %claimed, "refused a peer: {refusal}");
                Err(refuse(wr, &header, refusal.status(), &refusal.to_string()).await)
            }
        }
    }

    async fn read_handshake_frame(
        &self,
        reader: &mut FrameReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
        what: &str,
    ) -> Result<(Header, Bytes), Refused> {
        match reader.next().await {
            Ok(frame) => Ok(frame),
            Err(ReadError::Closed) => {
                tracing::debug!(peer = %self.addr, "peer connection closed before {what}");
                Err(Refused)
            }
            Err(e) => Err(self.read_failed(wr, e, what).await),
        }
    }

    /// Logs a frame that could not be read during the handshake and answers it when the
    /// header was readable.
    async fn read_failed(&self, wr: &mut OwnedWriteHalf, e: ReadError, what: &str) -> Refused {
        tracing::warn!(peer = %self.addr, cause = %e, "peer refused: no valid {what} frame");
        if let ReadError::Decode(d) = e {
            let (status, message) = decode_refusal(d.kind, HANDSHAKE_MAX_BODY);
            let mut out = Vec::new();
            encode_refusal(
                &mut out,
                d.opcode.unwrap_or(0),
                status,
                d.request_id.unwrap_or(0),
                &message,
            );
            let _ = wr.write_all(&out).await;
        }
        Refused
    }

    /// Reads and serves requests until the connection ends; true when it ends because this
    /// side refused a frame (the caller then lingers so the refusal arrives).
    async fn requests(
        &self,
        info: &PeerInfo,
        reader: &mut FrameReader<OwnedReadHalf>,
        tx: &mpsc::Sender<Vec<u8>>,
    ) -> bool {
        let in_flight = Arc::new(Semaphore::new(self.limits.max_in_flight.max(1)));
        loop {
            let (header, body) = match reader.next().await {
                Ok(frame) => frame,
                Err(ReadError::Closed) => return false,
                Err(ReadError::Io(e)) => {
                    tracing::debug!(peer = %info.addr, cause = %e, "peer connection failed");
                    return false;
                }
                Err(ReadError::Decode(d)) => {
                    let (status, message) = decode_refusal(d.kind, self.limits.max_body);
                    tracing::warn!(peer = %info.addr, node = %info.node_id, "closing a peer connection: {message}");
                    let mut out = Vec::new();
                    encode_refusal(
                        &mut out,
                        d.opcode.unwrap_or(0),
                        status,
                        d.request_id.unwrap_or(0),
                        &message,
                    );
                    let _ = tx.send(out).await;
                    return true;
                }
            };
            let id = header.request_id;
            let op = match check_request(&header) {
                Ok(op) => op,
                Err(DecodeErrorKind::UnknownOpcode) => {
                    let msg = format!("opcode {:#04x} is not a peer request", header.opcode);
                    send_refusal(tx, header.opcode, Status::UnknownCommand, id, &msg).await;
                    continue;
                }
                Err(kind) => {
                    tracing::warn!(peer = %info.addr, node = %info.node_id, cause = kind.as_str(), "closing a peer connection");
                    send_refusal(tx, header.opcode, Status::BadRequest, id, kind.as_str()).await;
                    return true;
                }
            };
            match op {
                PeerOpcode::PeerPing => {
                    let mut out = Vec::new();
                    encode_reply(&mut out, op as u8, Status::Ok, id, &[]);
                    if tx.send(out).await.is_err() {
                        return false;
                    }
                    continue;
                }
                PeerOpcode::PeerHello | PeerOpcode::PeerAuth => {
                    send_refusal(
                        tx,
                        op as u8,
                        Status::BadRequest,
                        id,
                        "the handshake is already complete",
                    )
                    .await;
                    continue;
                }
                _ => {}
            }
            if let Err(refusal) = check_allowed(info.joining, op) {
                tracing::warn!(peer = %info.addr, node = %info.node_id, "refused a peer request: {refusal}");
                send_refusal(tx, op as u8, refusal.status(), id, &refusal.to_string()).await;
                continue;
            }
            if let Some(done) = self.handler.handle_in_order(info, op, &body) {
                let mut out = Vec::new();
                match done.reply {
                    Ok(reply) => encode_reply(&mut out, op as u8, Status::Ok, id, &reply),
                    Err(f) => encode_refusal(&mut out, op as u8, f.status, id, &f.message),
                }
                match done.after {
                    None => {
                        if tx.send(out).await.is_err() {
                            return false;
                        }
                    }
                    Some(after) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            if !after.await {
                                out.clear();
                                encode_refusal(
                                    &mut out,
                                    op as u8,
                                    Status::InDoubt,
                                    id,
                                    LEASE_RAN_OUT,
                                );
                            }
                            let _ = tx.send(out).await;
                        });
                    }
                }
                continue;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return false;
            };
            let handler = self.handler.clone();
            let info = *info;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                match handler.handle(&info, op, body).await {
                    Ok(reply) => encode_reply(&mut out, op as u8, Status::Ok, id, &reply),
                    Err(f) => encode_refusal(&mut out, op as u8, f.status, id, &f.message),
                }
                let _ = tx.send(out).await;
                drop(permit);
            });
        }
    }
}

/// The status and message that answer a frame that could not be decoded.
fn decode_refusal(kind: DecodeErrorKind, max_body: usize) -> (Status, String) {
    match kind {
        DecodeErrorKind::FrameTooLarge => (
            Status::ValueTooLarge,
            format!("peer frame larger than the limit of {max_body} bytes"),
        ),
        other => (other.status(), other.as_str().to_string()),
    }
}

async fn send_refusal(tx: &mpsc::Sender<Vec<u8>>, op: u8, status: Status, id: u32, message: &str) {
    let mut out = Vec::new();
    encode_refusal(&mut out, op, status, id, message);
    let _ = tx.send(out).await;
}

/// Answers `header` with `status` and `message` (the caller then closes).
async fn refuse(
    wr: &mut OwnedWriteHalf,
    header: &Header,
    status: Status,
    message: &str,
) -> Refused {
    let mut out = Vec::new();
    encode_refusal(&mut out, header.opcode, status, header.request_id, message);
    let _ = wr.write_all(&out).await;
    Refused
}

/// A cluster id for a log line (`none` when there is none).
fn show(id: Option<ClusterId>) -> String {
    id.map_or_else(|| "none".to_string(), |c| c.to_string())
}
