//! Connections and timing: the closed loop, the fixed-rate (open) loop, preloading and the
//! item count. The only module that does I/O.
//!
//! ```text
//!  closed loop, per connection            fixed rate, one pacer + one reader per connection
//!  ┌──────────────────────────────┐       ┌─────────────────────┐  intended send times
//!  │ top up to `pipeline` in flight│       │ pacer: op i is due at├──► per-connection FIFO
//!  │ one write for all new requests│       │ start + i/rate; sends│           │
//!  │ read, decode every reply,     │       │ every due op, then   │   reader: decode reply,
//!  │ latency = reply - actual send │       │ one write per conn   │   latency = reply -
//!  └──────────────────────────────┘       └─────────────────────┘   *intended* send time
//! ```
//! Replies come back in request order on every protocol, so a FIFO of what was sent tells
//! the codec what the next reply answers. In the fixed-rate loop the pacer never waits for a
//! reply, and latency counts from when a request *should* have gone out, so a server (or a
//! client) that falls behind shows up as latency instead of as fewer requests
//! (coordinated omission). The pacer spins (yielding to the readers) for the last 2 ms before
//! a due time, because tokio's timer only has millisecond resolution. Every request scheduled
//! before the end is sent, however late, and counted in `sent`; the readers stop when the
//! pacer has finished and their FIFO is empty (or a grace period later).

use crate::codec::{Codec, Kind, Op, Outcome, ProtocolError, ReplyId};
use crate::report::Tally;
use crate::workload::{Generator, Workload};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

/// Bytes read at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Requests per write while preloading.
const PRELOAD_BATCH: usize = 64;
/// Connections used to preload.
const PRELOAD_CONNECTIONS: usize = 8;
/// Time allowed to connect and to finish the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the fixed-rate readers wait for replies after the last send.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Below this distance to the next due time the pacer spins instead of sleeping.
const SPIN_WINDOW: Duration = Duration::from_millis(2);
/// Requests a fixed-rate reader's queue holds without growing.
const READER_QUEUE: usize = 1024;

/// A deadline that is never reached within a run.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// Why a run failed.
#[derive(Debug)]
pub enum RunError {
    /// Connecting, reading or writing failed.
    Io(std::io::Error),
    /// The server answered something the codec does not accept.
    Protocol(ProtocolError),
    /// The server did not answer in time (connect, handshake, preload, item count).
    Timeout(&'static str),
    /// The server closed the connection.
    Closed,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Io(e) => write!(f, "i/o error: {e}"),
            RunError::Protocol(e) => write!(f, "protocol error: {e}"),
            RunError::Timeout(what) => write!(f, "timed out during {what}"),
            RunError::Closed => f.write_str("the server closed the connection"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

impl From<ProtocolError> for RunError {
    fn from(e: ProtocolError) -> Self {
        RunError::Protocol(e)
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Protocol codec.
    pub codec: Codec,
    /// Keys, values, mix.
    pub workload: Workload,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    pub pipeline: usize,
    /// Measured time.
    pub duration: Duration,
    /// Total operations per second (fixed-rate loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Base seed; connection `i` uses `seed + i`.
    pub seed: u64,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    kind: Kind,
    id: u32,
    /// Actual (closed loop) or intended (fixed rate) send time.
    at: Instant,
    /// When the request was handed to the socket (equal to `at` in the closed loop).
    sent: Instant,
}

/// One connection after the handshake.
struct Conn {
    stream: TcpStream,
    codec: Codec,
    input: Vec<u8>,
    next_id: u32,
}

impl Conn {
    async fn open(addr: SocketAddr, codec: Codec) -> Result<Conn, RunError> {
        let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| RunError::Timeout("connect"))??;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            codec,
            input: Vec::with_capacity(READ_CHUNK),
            next_id: 1,
        };
        let mut out = Vec::new();
        if codec.hello(&mut out) {
            conn.stream.write_all(&out).await?;
            let outcome = timeout(CONNECT_TIMEOUT, conn.reply(Kind::Hello, 0))
                .await
                .map_err(|_| RunError::Timeout("handshake"))??;
            if outcome != Outcome::Ready {
                return Err(RunError::Protocol(ProtocolError(format!(
                    "handshake answered {outcome:?}"
                ))));
            }
        }
        Ok(conn)
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Reads until one reply of `kind` is complete.
    async fn reply(&mut self, kind: Kind, id: u32) -> Result<Outcome, RunError> {
        loop {
            if let Some((outcome, used)) = self.codec.decode(&self.input, kind, id)? {
                self.input.drain(..used);
                return Ok(outcome);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), RunError> {
        self.input.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.input).await? {
            0 => Err(RunError::Closed),
            _ => Ok(()),
        }
    }
}

/// Connects every connection of `config` (in parallel) and completes their handshakes.
async fn open_all(config: &RunConfig, count: usize) -> Result<Vec<Conn>, RunError> {
    let tasks: Vec<_> = (0..count)
        .map(|_| tokio::spawn(Conn::open(config.addr, config.codec)))
        .collect();
    let mut conns = Vec::with_capacity(count);
    for task in tasks {
        conns.push(
            task.await
                .map_err(|e| RunError::Io(std::io::Error::other(e)))??,
        );
    }
    Ok(conns)
}

/// Stores every key of the workload once (keys `0..keys` in order, spread over a few
/// connections, `PRELOAD_BATCH` requests per write). Returns the tally (sets and errors).
///
/// # Errors
/// Connection and protocol failures.
pub async fn preload(config: &RunConfig) -> Result<Tally, RunError> {
    let count = PRELOAD_CONNECTIONS.min(config.connections.max(1));
    let conns = open_all(config, count).await?;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let keys = config.workload.keys;
            let gen = Generator::new(
                config.workload.clone(),
                config.seed ^ 0x9e37_79b9 ^ i as u64,
            );
            tokio::spawn(preload_conn(conn, gen, i as u64, count as u64, keys))
        })
        .collect();
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(
            &task
                .await
                .map_err(|e| RunError::Io(std::io::Error::other(e)))??,
        );
    }
    Ok(tally)
}

async fn preload_conn(
    mut conn: Conn,
    mut gen: Generator,
    first: u64,
    step: u64,
    keys: u64,
) -> Result<Tally, RunError> {
    let mut tally = Tally::new();
    let (mut key, mut value, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending = Vec::with_capacity(PRELOAD_BATCH);
    let mut index = first;
    while index < keys {
        out.clear();
        pending.clear();
        while index < keys && pending.len() < PRELOAD_BATCH {
            gen.key_and_value(index, &mut key, &mut value);
            let id = conn.take_id();
            conn.codec.encode(
                &Op::Set {
                    key: &key,
                    value: &value,
                },
                id,
                &mut out,
            );
            pending.push(id);
            index += step;
        }
        conn.stream.write_all(&out).await?;
        for &id in &pending {
            let outcome = timeout(CONNECT_TIMEOUT, conn.reply(Kind::Set, id))
                .await
                .map_err(|_| RunError::Timeout("preload"))??;
            tally.count(Kind::Set, outcome);
        }
    }
    Ok(tally)
}

/// Asks the server how many items it holds.
///
/// # Errors
/// Connection and protocol failures, or a reply that is not a count.
pub async fn items(addr: SocketAddr, codec: Codec) -> Result<u64, RunError> {
    let mut conn = Conn::open(addr, codec).await?;
    let mut out = Vec::new();
    let id = conn.take_id();
    codec.encode(&Op::Items, id, &mut out);
    conn.stream.write_all(&out).await?;
    match timeout(CONNECT_TIMEOUT, conn.reply(Kind::Items, id))
        .await
        .map_err(|_| RunError::Timeout("item count"))??
    {
        Outcome::Items(n) => Ok(n),
        other => Err(RunError::Protocol(ProtocolError(format!(
            "item count answered {other:?}"
        )))),
    }
}

/// Runs the measured part: closed loop, or fixed rate when `config.rate` is set. All
/// connections are open before the clock starts.
///
/// # Errors
/// Connection and protocol failures.
pub async fn run(config: &RunConfig) -> Result<Tally, RunError> {
    let conns = open_all(config, config.connections).await?;
    let mut tally = Tally::new();
    match config.rate {
        None => {
            // Histograms are allocated before the clock starts.
            let tallies: Vec<Tally> = conns.iter().map(|_| Tally::new()).collect();
            let end = Instant::now() + config.duration;
            let tasks: Vec<_> = conns
                .into_iter()
                .zip(tallies)
                .enumerate()
                .map(|(i, (conn, tally))| {
                    let gen = Generator::new(config.workload.clone(), config.seed + i as u64);
                    tokio::spawn(closed_loop(conn, gen, tally, config.pipeline.max(1), end))
                })
                .collect();
            for task in tasks {
                tally.merge(
                    &task
                        .await
                        .map_err(|e| RunError::Io(std::io::Error::other(e)))??,
                );
            }
        }
        Some(rate) => {
            tally = fixed_rate(conns, config, rate).await?;
        }
    }
    tally.elapsed = config.duration;
    Ok(tally)
}

/// Keeps `pipeline` requests in flight until `end`.
async fn closed_loop(
    mut conn: Conn,
    mut gen: Generator,
    mut tally: Tally,
    pipeline: usize,
    end: Instant,
) -> Result<Tally, RunError> {
    let mut inflight: VecDeque<Inflight> = VecDeque::with_capacity(pipeline);
    let mut out = Vec::with_capacity(pipeline * 256);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while inflight.len() < pipeline {
            let choice = gen.next_choice();
            let id = conn.take_id();
            let kind = encode_choice(&mut gen, conn.codec, choice, id, &mut out);
            inflight.push_back(Inflight {
                kind,
                id,
                at: now,
                sent: now,
            });
        }
        conn.stream.write_all(&out).await?;
        out.clear();
        conn.input.reserve(READ_CHUNK);
        let read = match timeout_at(end, conn.stream.read_buf(&mut conn.input)).await {
            Ok(read) => read?,
            Err(_) => break,
        };
        if read == 0 {
            return Err(RunError::Closed);
        }
        let now = Instant::now();
        let mut pos = 0;
        while let Some(next) = answered(conn.codec, &conn.input[pos..], &inflight)? {
            let req = &inflight[next];
            let Some((outcome, used)) = conn.codec.decode(&conn.input[pos..], req.kind, req.id)?
            else {
                break;
            };
            pos += used;
            tally.record(req.kind, outcome, now - req.at);
            inflight.remove(next);
        }
        conn.input.drain(..pos);
    }
    Ok(tally)
}

/// The position in `inflight` of the request the next reply in `input` answers: the
/// oldest, except on the native protocol, whose replies carry request ids and may come in
/// any order (a reply held for a bucket's in-sync replicas lets later ones pass). `None`
/// when nothing is in flight or the reply's header is not complete yet.
///
/// # Errors
/// A native reply whose id no request in flight has.
fn answered(
    codec: Codec,
    input: &[u8],
    inflight: &VecDeque<Inflight>,
) -> Result<Option<usize>, ProtocolError> {
    if inflight.is_empty() {
        return Ok(None);
    }
    match codec.reply_id(input) {
        ReplyId::InOrder => Ok(Some(0)),
        ReplyId::Incomplete => Ok(None),
        ReplyId::Id(id) => inflight
            .iter()
            .position(|r| r.id == id)
            .map(Some)
            .ok_or_else(|| ProtocolError(format!("native: reply #{id} to no request in flight"))),
    }
}

/// Encodes the operation `choice` describes; returns its kind.
fn encode_choice(
    gen: &mut Generator,
    codec: Codec,
    choice: crate::workload::Choice,
    id: u32,
    out: &mut Vec<u8>,
) -> Kind {
    if choice.get {
        codec.encode(
            &Op::Get {
                key: gen.key(choice.key),
            },
            id,
            out,
        );
        Kind::Get
    } else {
        // The key buffer and the value pool are separate fields; copy the key (16 bytes).
        let mut key = [0u8; crate::workload::MAX_PREFIX + crate::workload::KEY_DIGITS];
        let k = gen.key(choice.key);
        let klen = k.len();
        key[..klen].copy_from_slice(k);
        let value = gen.value(choice.value_len);
        codec.encode(
            &Op::Set {
                key: &key[..klen],
                value,
            },
            id,
            out,
        );
        Kind::Set
    }
}

/// Per-connection state shared by the pacer (pushes) and the connection's reader (pops).
type Queue = Arc<Mutex<VecDeque<Inflight>>>;

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Inflight>> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends `rate` operations per second in total, round-robin over the connections, for
/// `config.duration`, and measures each reply from its intended send time.
///
/// Everything the loop needs (reader tasks, their histograms, queues and buffers) is set up
/// and the readers have run once before the clock starts: allocating the readers' histograms
/// inside the measured time stalled the first round by 11.6 ms, which showed as lateness in
/// every run's p99.9.
async fn fixed_rate(conns: Vec<Conn>, config: &RunConfig, rate: f64) -> Result<Tally, RunError> {
    let codec = config.codec;
    let mut writers = Vec::with_capacity(conns.len());
    let mut readers = Vec::with_capacity(conns.len());
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Setup);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(conns.len().max(1));
    for conn in conns {
        let queue: Queue = Arc::new(Mutex::new(VecDeque::with_capacity(READER_QUEUE)));
        let (rd, wr) = conn.stream.into_split();
        readers.push(tokio::spawn(read_replies(
            rd,
            conn.input,
            codec,
            queue.clone(),
            Reader {
                tally: Tally::new(),
                ready: ready_tx.clone(),
                phase: phase_rx.clone(),
            },
        )));
        writers.push((
            wr,
            queue,
            Vec::<u8>::with_capacity(READ_CHUNK),
            conn.next_id,
        ));
    }
    drop(ready_tx);
    // Every reader has allocated its tally and is waiting for the start time.
    while ready_rx.recv().await.is_some() {}
    let start = Instant::now();
    let end = start + config.duration;
    let _ = phase_tx.send(Phase::Running);
    let mut gen = Generator::new(config.workload.clone(), config.seed);
    let nanos_per_op = 1e9 / rate.max(1e-3);
    let due_at = |n: u64| start + Duration::from_nanos((n as f64 * nanos_per_op) as u64);
    let mut sent: u64 = 0;
    let mut max_lag = Duration::ZERO;
    // Every request scheduled before the end is sent, late if the generator is behind.
    while due_at(sent) < end {
        let now = Instant::now();
        let due = due_at(sent);
        if due > now {
            if due - now > SPIN_WINDOW {
                sleep_until(due - SPIN_WINDOW / 2).await;
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        // Every op due by now goes out in this round.
        loop {
            let due = due_at(sent);
            if due > now || due >= end {
                break;
            }
            let (_, queue, out, next_id) =
                &mut writers[(sent % config.connections as u64) as usize];
            let id = *next_id;
            *next_id = next_id.wrapping_add(1).max(1);
            let choice = gen.next_choice();
            let kind = encode_choice(&mut gen, codec, choice, id, out);
            lock(queue).push_back(Inflight {
                kind,
                id,
                at: due,
                sent: now,
            });
            max_lag = max_lag.max(now - due);
            sent += 1;
        }
        for (wr, _, out, _) in writers.iter_mut().filter(|w| !w.2.is_empty()) {
            match wr.try_write(out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Whatever is still buffered goes out now (it is already late, and counted so).
    for (wr, _, out, _) in &mut writers {
        if !out.is_empty() {
            wr.write_all(out).await?;
        }
    }
    let _ = phase_tx.send(Phase::Finished);
    let mut tally = Tally::new();
    for reader in readers {
        tally.merge(
            &reader
                .await
                .map_err(|e| RunError::Io(std::io::Error::other(e)))??,
        );
    }
    tally.sent = sent;
    tally.max_send_lag = max_lag;
    drop(writers);
    Ok(tally)
}

/// Where the pacer of a fixed-rate run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Readers are being set up; the clock has not started.
    Setup,
    /// Requests are going out.
    Running,
    /// Every request has been sent.
    Finished,
}

/// What a fixed-rate reader is handed before the clock starts.
struct Reader {
    /// Its tally, allocated up front.
    tally: Tally,
    /// Dropped once the reader is set up (the pacer waits for all of them).
    ready: tokio::sync::mpsc::Sender<()>,
    /// The pacer's phase.
    phase: tokio::sync::watch::Receiver<Phase>,
}

/// Decodes replies for one connection of the fixed-rate loop until the pacer has finished and
/// every request it sent has been answered, or until `DRAIN_GRACE` after it finished.
async fn read_replies(
    mut rd: OwnedReadHalf,
    mut input: Vec<u8>,
    codec: Codec,
    queue: Queue,
    reader: Reader,
) -> Result<Tally, RunError> {
    let Reader {
        mut tally,
        ready,
        mut phase,
    } = reader;
    input.reserve(READ_CHUNK);
    drop(ready);
    if phase.wait_for(|p| *p != Phase::Setup).await.is_err() {
        // The pacer is gone before starting: nothing to read.
        return Ok(tally);
    }
    // One timer for the whole run, armed for the grace period once the pacer has finished.
    let grace = sleep_until(far_future());
    tokio::pin!(grace);
    let mut finished = false;
    loop {
        if !finished && *phase.borrow() == Phase::Finished {
            finished = true;
            grace.as_mut().reset(Instant::now() + DRAIN_GRACE);
        }
        if finished && lock(&queue).is_empty() {
            break;
        }
        input.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = rd.read_buf(&mut input) => read?,
            // Re-check the phase (an error means the pacer is gone: finished too).
            changed = phase.changed(), if !finished => {
                if changed.is_err() {
                    finished = true;
                    grace.as_mut().reset(Instant::now() + DRAIN_GRACE);
                }
                continue;
            }
            () = &mut grace => break,
        };
        if read == 0 {
            return Err(RunError::Closed);
        }
        let now = Instant::now();
        let mut pos = 0;
        let mut q = lock(&queue);
        while let Some(next) = answered(codec, &input[pos..], &q)? {
            let req = &q[next];
            let Some((outcome, used)) = codec.decode(&input[pos..], req.kind, req.id)? else {
                break;
            };
            pos += used;
            tally.record(req.kind, outcome, now - req.at);
            tally.record_service(now - req.sent);
            q.remove(next);
        }
        drop(q);
        input.drain(..pos);
    }
    Ok(tally)
}
