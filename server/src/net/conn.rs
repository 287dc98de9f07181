//! The connection driver: one task per client connection, for either protocol.
//!
//! It owns the socket, the input and output buffers, and every per-connection limit:
//! - a started frame must complete within `frame_timeout` (slowloris);
//! - an idle connection is closed after `idle_timeout`;
//! - output is written once per batch, and at the latest when it reaches the session's
//!   `flush_at`; a client that does not take its replies within `send_timeout` is dropped, so a
//!   client that never reads cannot grow server memory;
//! - input is bounded by one frame (the session consumes every complete request);
//! - on shutdown it drains what the client already sent, answers it, sends the session's
//!   notice, flushes and closes.

use super::{Session, Shared};
use crate::stats::ServerStats;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

/// Size of each read, and the buffer size a connection returns to after a large frame.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers larger than this are given back once they are empty.
const SHRINK_ABOVE: usize = 256 * 1024;

/// Per-connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Time allowed to complete a started request.
    pub frame_timeout: Duration,
    /// Idle time before the connection is closed (`None` = never).
    pub idle_timeout: Option<Duration>,
    /// Time the client has to take pending output.
    pub send_timeout: Duration,
    /// Most bytes of input held at once (one maximal frame plus a read).
    pub max_input: usize,
}

/// Why a connection ended (for counters and debug logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed, or the session asked to close (GOODBYE, quit, fatal error).
    Normal,
    FrameTimeout,
    IdleTimeout,
    SlowReader,
    Shutdown,
    InputTooLarge,
    Io,
}

/// Serves one connection until it ends. Never panics on client input.
pub(crate) async fn drive<S: Session>(
    mut stream: TcpStream,
    mut session: S,
    shared: Shared,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // When the oldest unfinished request started arriving; reset whenever a request completes.
    let mut partial_since: Option<Instant> = None;
    let end = 'conn: loop {
        // Handle every complete request, flushing whenever the session fills its output.
        loop {
            let step = session.on_input(&input, &mut out);
            input.advance(step.consumed.min(input.len()));
            if step.consumed > 0 {
                partial_since = None;
            }
            if !out.is_empty() {
                if let Err(end) = flush(&mut stream, &mut out, limits.send_timeout).await {
                    break 'conn end;
                }
            }
            if step.close {
                break 'conn End::Normal;
            }
            if step.consumed == 0 || input.is_empty() {
                break;
            }
        }
        if input.is_empty() {
            partial_since = None;
            if input.capacity() > SHRINK_ABOVE {
                input = BytesMut::with_capacity(READ_CHUNK);
            }
            if out.capacity() > SHRINK_ABOVE {
                out = Vec::with_capacity(READ_CHUNK);
            }
        } else if partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        if input.len() > limits.max_input {
            break End::InputTooLarge;
        }
        input.reserve(READ_CHUNK);
        let deadline = match partial_since {
            Some(since) => Some((since + limits.frame_timeout, End::FrameTimeout)),
            None => limits
                .idle_timeout
                .map(|idle| (Instant::now() + idle, End::IdleTimeout)),
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => break End::Shutdown,
            read = read_until(&mut stream, &mut input, deadline) => match read {
                Ok(0) => break End::Normal,
                Ok(_) => {}
                Err(end) => break end,
            },
        }
    };
    if end == End::Shutdown {
        drain_on_shutdown(&mut stream, &mut session, &mut input, &mut out, limits).await;
    }
    let stats = &shared.stats;
    match end {
        End::FrameTimeout => {
            ServerStats::incr(&stats.frame_timeouts);
            ServerStats::incr(&stats.bad_input);
        }
        End::IdleTimeout => ServerStats::incr(&stats.idle_timeouts),
        End::SlowReader => ServerStats::incr(&stats.slow_reader_closes),
        End::InputTooLarge => ServerStats::incr(&stats.bad_input),
        End::Normal | End::Shutdown | End::Io => {}
    }
    tracing::debug!(reason = ?end, "connection closed");
    let _ = timeout(Duration::from_millis(100), stream.shutdown()).await;
}

/// Reads once, within `deadline` if one is set. `Ok(0)` is end of stream.
async fn read_until(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    deadline: Option<(Instant, End)>,
) -> Result<usize, End> {
    match deadline {
        Some((at, why)) => match timeout_at(at, stream.read_buf(input)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(End::Io),
            Err(_) => Err(why),
        },
        None => stream.read_buf(input).await.map_err(|_| End::Io),
    }
}

/// Writes all pending output within `send_timeout`.
async fn flush(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    send_timeout: Duration,
) -> Result<(), End> {
    let result = timeout(send_timeout, stream.write_all(out)).await;
    out.clear();
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Io),
        Err(_) => Err(End::SlowReader),
    }
}

/// On shutdown: take what the client already sent (without waiting for more), answer every
/// complete request, append the session's notice, flush, and return.
async fn drain_on_shutdown<S: Session>(
    stream: &mut TcpStream,
    session: &mut S,
    input: &mut BytesMut,
    out: &mut Vec<u8>,
    limits: ConnLimits,
) {
    loop {
        if input.len() >= limits.max_input {
            break;
        }
        input.reserve(READ_CHUNK);
        match stream.try_read_buf(input) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    session.on_shutdown(out);
    loop {
        let step = session.on_input(input, out);
        input.advance(step.consumed.min(input.len()));
        if !out.is_empty() && flush(stream, out, limits.send_timeout).await.is_err() {
            return;
        }
        if step.close || step.consumed == 0 || input.is_empty() {
            break;
        }
    }
}
