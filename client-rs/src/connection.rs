//! One connection to one server: HELLO, then a writer task, a reader task and a keepalive
//! task around a map of pending requests. Owns request ids, batching and the "sent or not"
//! bookkeeping that lets every failure be reported as [`Error::Connection`] (not sent) or
//! [`Error::InDoubt`] (sent). Does not retry, route or pick servers: that is `client.rs`.
//!
//! ```text
//!  callers ──request()──► pending map (id -> Queued/Written, oneshot) ◄──┐
//!     │                         ▲ marks Written                          │ takes entry,
//!     └─(id, frame)─► mpsc ─► writer task ─ one write per batch ─► TCP ─► reader task
//!                                                                  (replies, NOTICE, GOODBYE)
//! ```
//!
//! Invariants:
//! - A request is inserted as `Queued` under the state lock only while the connection is not
//!   failed, so [`Shared::fail`] (which drains the map under the same lock) answers every
//!   request exactly once: `Queued` ones with `Connection`, `Written` ones with `InDoubt`.
//! - The writer marks a request `Written` (under the lock) *before* its bytes go to the
//!   socket, and skips requests whose entry is gone (their caller gave up and was told
//!   "not sent"), so "not sent" is never a lie.
//! - Replies are matched by id only; a reply whose id has no entry (its caller timed out) is
//!   dropped, and one whose opcode differs from the request's fails the connection.

use crate::builder::Config;
use crate::error::{Error, Failure, FailureKind};
use bytes::{Bytes, BytesMut};
use shoal_proto::{
    decode_reply, Command, FrameWriter, Header, Limits, Opcode, ReplyBody, Request, Status,
    HEADER_LEN, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Most bytes the writer gathers into one write.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How long the reader waits for the server to close after our GOODBYE.
const GOODBYE_GRACE: Duration = Duration::from_secs(1);
/// Id of the HELLO request (ids of later requests start after it).
const HELLO_ID: u32 = 1;

/// What a reply channel carries: the whole reply frame, or why there is none.
type ReplyResult = Result<Bytes, Error>;

/// The `TABLE_CHANGED` notices a client's connections receive: the newest version announced,
/// who announced it, and a wake-up for the client's table refresher.
#[derive(Debug, Default)]
pub(crate) struct TableNotices {
    /// The newest table version a server announced; 0 = none.
    announced: AtomicU64,
    /// The server that announced it (the first place to fetch that table from).
    from: Mutex<Option<Arc<str>>>,
    /// Wakes the refresher (a permit is stored when it is busy, so no notice is missed).
    pub(crate) wake: tokio::sync::Notify,
}

impl TableNotices {
    /// Records that `from` announced table `version`, and wakes the refresher.
    pub(crate) fn announce(&self, version: u64, from: &Arc<str>) {
        if self.announced.fetch_max(version, Ordering::AcqRel) < version {
            *self.from.lock().unwrap_or_else(|e| e.into_inner()) = Some(from.clone());
        }
        self.wake.notify_one();
    }

    /// Asks the refresher for a fetch (a redirect named a newer epoch), from `from` first.
    pub(crate) fn wake_for(&self, from: Option<&Arc<str>>) {
        if let Some(addr) = from {
            *self.from.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
        }
        self.wake.notify_one();
    }

    /// The newest version announced (0 = none).
    pub(crate) fn announced(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// The server that announced the newest version (or whose redirect asked for a fetch).
    pub(crate) fn announced_by(&self) -> Option<Arc<str>> {
        self.from.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A request waiting for its reply.
struct Pending {
    /// Whether the writer has taken the frame for the socket (so it may have been applied).
    written: bool,
    /// The request's opcode, checked against the reply's.
    opcode: Opcode,
    /// Where the reply goes.
    tx: oneshot::Sender<ReplyResult>,
}

/// State changed under one lock so failure and insertion cannot interleave.
struct State {
    pending: HashMap<u32, Pending>,
    /// Set once, by [`Shared::fail`]; later requests are refused with it.
    failed: Option<Failure>,
}

/// What the three tasks and the callers share.
pub(crate) struct Shared {
    addr: Arc<str>,
    /// Where TABLE_CHANGED notices go (the client's refresher watches it).
    notices: Arc<TableNotices>,
    state: Mutex<State>,
    next_id: AtomicU32,
    /// False once the connection failed or the server asked us to go away; the client then
    /// opens a new connection for new calls.
    usable: AtomicBool,
    /// Why it is no longer usable when it has not failed (GOODBYE or NOTICE from the server).
    draining: Mutex<Option<Failure>>,
    /// When this connection saw its server go away (closed, reset, GOODBYE, SHUTTING_DOWN);
    /// the client then retires the server's other connections opened before that moment.
    server_gone_at: Mutex<Option<Instant>>,
    /// Milliseconds since `born` of the last write, for the keepalive.
    last_write_ms: AtomicU64,
    born: Instant,
    /// Flips to true when the connection fails; the tasks watch it to stop.
    dead: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that
        // matters more than losing the connection, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the connection: every pending request is answered (`InDoubt` if written,
    /// `Connection` if not), new requests are refused, and the tasks stop. Idempotent.
    pub(crate) fn fail(&self, failure: Failure) {
        self.usable.store(false, Ordering::Release);
        self.note_server_gone(&failure);
        let drained: Vec<Pending> = {
            let mut state = self.lock();
            if state.failed.is_some() {
                return;
            }
            state.failed = Some(failure.clone());
            state.pending.drain().map(|(_, p)| p).collect()
        };
        for p in drained {
            let err = if p.written {
                Error::InDoubt(failure.clone())
            } else {
                Error::Connection(failure.clone())
            };
            let _ = p.tx.send(Err(err));
        }
        self.dead.send_replace(true);
    }

    /// Stops new requests (the server is going away) without failing those in flight.
    fn drain(&self, failure: Failure) {
        self.note_server_gone(&failure);
        self.stop_new_requests(failure);
    }

    /// Refuses new requests from now on, keeping those in flight.
    fn stop_new_requests(&self, failure: Failure) {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        if draining.is_none() {
            *draining = Some(failure);
        }
        self.usable.store(false, Ordering::Release);
    }

    fn note_server_gone(&self, failure: &Failure) {
        let gone = matches!(
            failure.kind(),
            FailureKind::Closed
                | FailureKind::Io
                | FailureKind::Goodbye
                | FailureKind::ShuttingDown
        );
        if gone {
            let mut at = self
                .server_gone_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            at.get_or_insert_with(Instant::now);
        }
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_write_ms.store(ms, Ordering::Relaxed);
    }

    /// Hands one reply frame to its caller. Errors mean the stream can no longer be trusted.
    fn dispatch(&self, header: &Header, frame: Bytes, out: &WeakSender) -> Result<(), Failure> {
        let fail = |kind, detail: &str| Err(Failure::new(kind, &self.addr, detail));
        if !header.is_reply() {
            // The only request a server sends is GOODBYE: answer it and stop using the
            // connection; the server closes it after flushing what it owes us.
            if header.opcode == Opcode::Goodbye as u8 {
                let mut reply = Vec::with_capacity(HEADER_LEN);
                drop(FrameWriter::reply(
                    &mut reply,
                    Opcode::Goodbye,
                    Status::Ok,
                    header.request_id,
                ));
                if let Some(tx) = out.upgrade() {
                    let _ = tx.send(Outgoing::Raw(reply));
                }
                self.drain(Failure::new(FailureKind::Goodbye, &self.addr, ""));
                return Ok(());
            }
            return fail(
                FailureKind::Protocol,
                "server sent a request other than GOODBYE",
            );
        }
        if header.request_id == 0 {
            // Notices, or an error about a frame the server could not read (it then closes).
            if header.status == Status::ShuttingDown as u16 || header.status == Status::Busy as u16
            {
                self.drain(Failure::new(FailureKind::ShuttingDown, &self.addr, ""));
            } else if header.status == Status::TableChanged as u16 {
                // Remembered for routing; a notice this client cannot read is ignored.
                if let Ok(Some((reply, _))) = decode_reply(&frame, &Limits::default()) {
                    if let ReplyBody::TableChanged { version } = reply.body {
                        self.notices.announce(version, &self.addr);
                    }
                }
            }
            return Ok(());
        }
        let pending = self.lock().pending.remove(&header.request_id);
        let Some(pending) = pending else {
            return Ok(()); // its caller gave up waiting
        };
        if header.opcode != pending.opcode as u8 {
            let err = Error::Protocol(format!(
                "reply opcode {:#04x} to a {} request",
                header.opcode,
                pending.opcode.name()
            ));
            let _ = pending.tx.send(Err(err));
            return fail(
                FailureKind::Protocol,
                "reply opcode does not match its request",
            );
        }
        let _ = pending.tx.send(Ok(frame));
        Ok(())
    }
}

/// What the writer task is asked to write.
enum Outgoing {
    /// A request, written only if its entry is still pending.
    Request { id: u32, frame: Vec<u8> },
    /// Bytes written unconditionally (our reply to a server's GOODBYE).
    Raw(Vec<u8>),
}

type WeakSender = mpsc::WeakUnboundedSender<Outgoing>;

/// A live connection. Dropping the last handle sends GOODBYE and closes it.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    /// The writer's queue; when every handle is dropped the writer says GOODBYE and stops.
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Connection {
    /// Opens a connection to `addr` and completes HELLO, all within `timeout`.
    ///
    /// # Errors
    /// [`Error::Connection`] when the server cannot be reached or the handshake fails or is
    /// refused with a transient status; [`Error::Server`] when HELLO is refused for good
    /// (authentication, version).
    pub(crate) async fn connect(
        addr: &str,
        config: &Config,
        timeout: Duration,
    ) -> Result<Arc<Connection>, Error> {
        match tokio::time::timeout(timeout, Self::open(addr, config)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Connection(Failure::new(
                FailureKind::Connect,
                addr,
                format!("no connection and HELLO within {timeout:?}"),
            ))),
        }
    }

    async fn open(addr: &str, config: &Config) -> Result<Arc<Connection>, Error> {
        let conn_err = |kind, detail: String| Error::Connection(Failure::new(kind, addr, detail));
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| conn_err(FailureKind::Connect, e.to_string()))?;
        let _ = stream.set_nodelay(true);

        let mut hello = Vec::with_capacity(64);
        Request {
            id: HELLO_ID,
            command: Command::Hello {
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                client_name: config.client_name.as_bytes(),
                auth: b"",
            },
        }
        .encode(&mut hello);
        stream
            .write_all(&hello)
            .await
            .map_err(|e| conn_err(FailureKind::Handshake, e.to_string()))?;

        let limits = config.limits;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let decoded = decode_reply(&buf, &limits)
                .map_err(|e| conn_err(FailureKind::Handshake, format!("bad HELLO reply: {e}")))?;
            if let Some((reply, used)) = decoded {
                match (reply.opcode, reply.status, reply.body) {
                    (Opcode::Hello, Status::Ok, ReplyBody::Hello { version, .. })
                        if reply.id == HELLO_ID && version == PROTOCOL_VERSION => {}
                    (_, status, body) if status != Status::Ok => {
                        let message = match body {
                            ReplyBody::Message(m) => m,
                            _ => b"",
                        };
                        let err = Error::server(status, message);
                        return Err(if status.is_transient() {
                            conn_err(FailureKind::Handshake, err.to_string())
                        } else {
                            err
                        });
                    }
                    _ => {
                        return Err(conn_err(
                            FailureKind::Handshake,
                            "unexpected reply to HELLO".into(),
                        ))
                    }
                }
                let _ = buf.split_to(used);
                break;
            }
            buf.reserve(4096);
            match stream.read_buf(&mut buf).await {
                Ok(0) => {
                    return Err(conn_err(
                        FailureKind::Handshake,
                        "closed before answering HELLO".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(conn_err(FailureKind::Handshake, e.to_string())),
            }
        }

        let (dead_tx, dead_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            addr: Arc::from(addr),
            notices: config.table_notices.clone(),
            state: Mutex::new(State {
                pending: HashMap::new(),
                failed: None,
            }),
            next_id: AtomicU32::new(HELLO_ID + 1),
            usable: AtomicBool::new(true),
            draining: Mutex::new(None),
            last_write_ms: AtomicU64::new(0),
            born: Instant::now(),
            server_gone_at: Mutex::new(None),
            dead: dead_tx,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (read, write) = stream.into_split();
        let (closing_tx, closing_rx) = oneshot::channel();
        tokio::spawn(write_loop(
            shared.clone(),
            rx,
            write,
            dead_rx.clone(),
            closing_tx,
        ));
        tokio::spawn(read_loop(
            shared.clone(),
            read,
            buf,
            limits,
            tx.downgrade(),
            dead_rx.clone(),
            closing_rx,
        ));
        let conn = Arc::new(Connection { shared, tx });
        tokio::spawn(keepalive_loop(
            Arc::downgrade(&conn),
            config.keepalive,
            config.request_timeout,
            dead_rx,
        ));
        Ok(conn)
    }

    /// When this connection saw its server go away, if it did.
    pub(crate) fn server_gone_at(&self) -> Option<Instant> {
        *self
            .shared
            .server_gone_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection was opened before `at`.
    pub(crate) fn opened_before(&self, at: Instant) -> bool {
        self.shared.born < at
    }

    /// Takes no new requests (requests in flight go on): another connection to the same
    /// server saw it go away, so this one most likely is gone too.
    pub(crate) fn retire(&self) {
        self.shared.stop_new_requests(Failure::new(
            FailureKind::Closed,
            &self.shared.addr,
            "another connection to this server was closed",
        ));
    }

    /// Whether new requests may be sent here.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire)
    }

    /// The server address.
    pub(crate) fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Sends one request and waits up to `timeout` for its reply frame.
    ///
    /// `frame` is a complete request frame; its request id (bytes 8..12) is overwritten here.
    ///
    /// # Errors
    /// [`Error::Connection`] if it was not sent (connection failed or going away),
    /// [`Error::Timeout`] if the timeout passed before it was sent, [`Error::InDoubt`] if it
    /// was sent and no reply came (connection failed, or the timeout passed).
    pub(crate) async fn request(
        &self,
        opcode: Opcode,
        mut frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut state = self.shared.lock();
            if let Some(failure) = &state.failed {
                return Err(Error::Connection(failure.clone()));
            }
            if !self.is_usable() {
                return Err(Error::Connection(self.not_usable_reason()));
            }
            let id = loop {
                let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                if id != 0 && !state.pending.contains_key(&id) {
                    break id;
                }
            };
            state.pending.insert(
                id,
                Pending {
                    written: false,
                    opcode,
                    tx,
                },
            );
            id
        };
        // Removes the entry if this future is dropped before the reply (cancellation).
        let guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        if let Some(slot) = frame.get_mut(8..12) {
            slot.copy_from_slice(&id.to_be_bytes());
        }
        if self.tx.send(Outgoing::Request { id, frame }).is_err() {
            // The writer has stopped, so the connection failed (or is failing).
            self.shared.fail(Failure::new(
                FailureKind::Closed,
                &self.shared.addr,
                "writer stopped",
            ));
        }
        let result = match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::InDoubt(Failure::new(
                FailureKind::Closed,
                &self.shared.addr,
                "reply channel dropped",
            ))),
            Err(_) => {
                let removed = self.shared.lock().pending.remove(&id);
                match removed {
                    Some(p) if !p.written => Err(Error::Timeout),
                    Some(_) => {
                        // The server may be stalled: new calls go to a fresh connection, while
                        // requests already here keep waiting for their replies.
                        let failure = Failure::new(
                            FailureKind::Timeout,
                            &self.shared.addr,
                            format!("no reply within {timeout:?}"),
                        );
                        self.shared.drain(failure.clone());
                        Err(Error::InDoubt(failure))
                    }
                    // Answered (or failed) just as the time ran out.
                    None => rx.try_recv().unwrap_or_else(|_| {
                        Err(Error::InDoubt(Failure::new(
                            FailureKind::Timeout,
                            &self.shared.addr,
                            "no reply",
                        )))
                    }),
                }
            }
        };
        std::mem::forget(guard);
        result
    }

    /// Sends GOODBYE and waits (up to `timeout`) for the server's reply; then the connection
    /// is no longer used.
    pub(crate) async fn goodbye(&self, timeout: Duration) {
        let mut frame = Vec::with_capacity(HEADER_LEN);
        drop(FrameWriter::request(&mut frame, Opcode::Goodbye, 0));
        let _ = self.request(Opcode::Goodbye, frame, timeout).await;
        self.shared.drain(Failure::new(
            FailureKind::ClientClosed,
            &self.shared.addr,
            "",
        ));
    }

    fn not_usable_reason(&self) -> Failure {
        let draining = self
            .shared
            .draining
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        draining.clone().unwrap_or_else(|| {
            Failure::new(FailureKind::Closed, &self.shared.addr, "connection closed")
        })
    }
}

/// Removes a pending entry when the caller's future is dropped mid-request.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

/// Takes queued frames, marks them written, and writes each batch with one `write_all`.
/// On channel close (every handle dropped) it sends GOODBYE and shuts the socket down.
async fn write_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut socket: OwnedWriteHalf,
    mut dead: watch::Receiver<bool>,
    closing: oneshot::Sender<()>,
) {
    let mut batch: Vec<Outgoing> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            msg = rx.recv() => msg,
            _ = dead.wait_for(|d| *d) => return,
        };
        let Some(first) = first else {
            // Every handle is gone: say goodbye, then let the reader wait for the close.
            let mut bye = Vec::with_capacity(HEADER_LEN);
            drop(FrameWriter::request(&mut bye, Opcode::Goodbye, 0));
            let _ = socket.write_all(&bye).await;
            let _ = socket.shutdown().await;
            let _ = closing.send(());
            return;
        };
        // Let the other runnable tasks queue their requests first. A task that queues a
        // request wakes this one into tokio's "run next" slot, so without the yield every
        // request would go out in its own write (one syscall per request under load).
        tokio::task::yield_now().await;
        let mut bytes = frame_len(&first);
        batch.push(first);
        while bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(msg) => {
                    bytes += frame_len(&msg);
                    batch.push(msg);
                }
                Err(_) => break,
            }
        }
        {
            let mut state = shared.lock();
            if state.failed.is_some() {
                return;
            }
            for msg in batch.drain(..) {
                match msg {
                    Outgoing::Request { id, frame } => {
                        if let Some(p) = state.pending.get_mut(&id) {
                            if !p.written {
                                p.written = true;
                                out.extend_from_slice(&frame);
                            }
                        }
                    }
                    Outgoing::Raw(frame) => out.extend_from_slice(&frame),
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        if let Err(e) = socket.write_all(&out).await {
            shared.fail(Failure::new(FailureKind::Io, &shared.addr, e));
            return;
        }
        shared.touch();
        out.clear();
        if out.capacity() > 4 * MAX_BATCH_BYTES {
            out.shrink_to(64 * 1024);
        }
    }
}

fn frame_len(msg: &Outgoing) -> usize {
    match msg {
        Outgoing::Request { frame, .. } | Outgoing::Raw(frame) => frame.len(),
    }
}

/// Splits the byte stream into frames and dispatches them. Any invalid frame, EOF or read
/// error fails the connection.
async fn read_loop(
    shared: Arc<Shared>,
    mut socket: OwnedReadHalf,
    mut buf: BytesMut,
    limits: Limits,
    out: WeakSender,
    mut dead: watch::Receiver<bool>,
    mut closing: oneshot::Receiver<()>,
) {
    let addr = shared.addr.clone();
    let mut closing_at: Option<tokio::time::Instant> = None;
    loop {
        loop {
            let header = match Header::decode(&buf, &limits) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    shared.fail(Failure::new(FailureKind::Protocol, &addr, e));
                    return;
                }
            };
            let total = HEADER_LEN + header.body_len as usize;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                break;
            }
            let frame = buf.split_to(total).freeze();
            if let Err(failure) = shared.dispatch(&header, frame, &out) {
                shared.fail(failure);
                return;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let grace = async {
            match closing_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = socket.read_buf(&mut buf) => match read {
                Ok(0) => {
                    shared.fail(Failure::new(FailureKind::Closed, &addr, "end of stream"));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    shared.fail(Failure::new(FailureKind::Io, &addr, e));
                    return;
                }
            },
            _ = dead.wait_for(|d| *d) => return,
            r = &mut closing, if closing_at.is_none() => {
                if r.is_ok() {
                    closing_at = Some(tokio::time::Instant::now() + GOODBYE_GRACE);
                } else {
                    closing_at = Some(tokio::time::Instant::now());
                }
            }
            _ = grace => {
                shared.fail(Failure::new(FailureKind::ClientClosed, &addr, ""));
                return;
            }
        }
    }
}

/// Sends a PING when the connection has been idle for `idle`; fails the connection when the
/// PING gets no reply within `timeout`, so a dead server is found before a caller's request
/// is sent to it.
async fn keepalive_loop(
    conn: Weak<Connection>,
    idle: Duration,
    timeout: Duration,
    mut dead: watch::Receiver<bool>,
) {
    let mut wait = idle;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = dead.wait_for(|d| *d) => return,
        }
        let Some(c) = conn.upgrade() else { return };
        let idle_for = c.shared.idle_for();
        if idle_for < idle {
            wait = idle - idle_for;
            continue;
        }
        wait = idle;
        let mut frame = Vec::with_capacity(HEADER_LEN);
        drop(FrameWriter::request(&mut frame, Opcode::Ping, 0));
        if let Err(Error::InDoubt(f)) = c.request(Opcode::Ping, frame, timeout).await {
            if f.kind() == FailureKind::Timeout {
                c.shared.fail(Failure::new(
                    FailureKind::Unresponsive,
                    c.addr(),
                    "no reply to a keepalive PING",
                ));
            }
        }
    }
}
