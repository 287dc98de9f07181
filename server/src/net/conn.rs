//! The connection driver: one task per client connection, for either protocol.
//!
//! It owns the socket, the input and output buffers, and every per-connection limit:
//! - a started frame must complete within `frame_timeout` (slowloris);
//! - an idle connection is closed after `idle_timeout`;
//! - output is written once per batch, and at the latest when it reaches the session's
//!   `flush_at`; a client that does not take its replies within `send_timeout` is dropped, so a
//!   client that never reads cannot grow server memory;
//! - before the first write of a batch the task yields once, so every connection the runtime
//!   found readable handles its input before any of them writes: replies leave in a burst, as
//!   in redis' event loop, and a client is woken once per burst instead of once per connection
//!   (this halved the server's system time per request at pipeline 16 on loopback);
//! - the deadlines use one timer per connection, moved only when a frame starts or when it
//!   fires early, so a read costs no timer registration;
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
use tokio::time::{timeout, Instant};

/// Size of each read, and the buffer size a connection returns to after a large frame.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers larger than this are given back once they are empty.
const SHRINK_ABOVE: usize = 256 * 1024;
/// A deadline that is never reached (no idle timeout and no partial frame).
const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

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
    // When the connection last went back to waiting after handling input (idle timeout).
    let mut idle_since = Instant::now();
    let mut got_input = false;
    // One timer and one shutdown waiter for the whole connection, instead of registering a new
    // timer and a new waiter for every read: the timer is only moved earlier (a frame started)
    // or, when it fires early, re-armed for the deadline that holds by then.
    let never = idle_since + NEVER;
    let mut armed = never;
    let timer = tokio::time::sleep_until(armed);
    tokio::pin!(timer);
    let stop = shutdown.changed();
    tokio::pin!(stop);
    let end = 'conn: loop {
        // Handle every complete request, flushing whenever the session fills its output.
        let mut first_flush = true;
        loop {
            let step = session.on_input(&input, &mut out);
            input.advance(step.consumed.min(input.len()));
            if step.consumed > 0 {
                partial_since = None;
            }
            if !out.is_empty() {
                if first_flush {
                    // Let the other connections that are ready handle their input first, so
                    // replies leave in a burst after the runtime's poll of the sockets and the
                    // clients are woken once per burst rather than once per connection.
                    first_flush = false;
                    tokio::task::yield_now().await;
                }
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
        if got_input {
            got_input = false;
            idle_since = Instant::now();
        }
        let (deadline, why) = match (partial_since, limits.idle_timeout) {
            (Some(since), _) => (since + limits.frame_timeout, End::FrameTimeout),
            (None, Some(idle)) => (idle_since + idle, End::IdleTimeout),
            (None, None) => (never, End::IdleTimeout),
        };
        if deadline < armed {
            armed = deadline;
            timer.as_mut().reset(armed);
        }
        tokio::select! {
            biased;
            _ = &mut stop => break End::Shutdown,
            read = stream.read_buf(&mut input) => match read {
                Ok(0) => break End::Normal,
                Ok(_) => got_input = true,
                Err(_) => break End::Io,
            },
            () = &mut timer => {
                if Instant::now() >= deadline {
                    break why;
                }
                armed = deadline;
                timer.as_mut().reset(armed);
            }
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
