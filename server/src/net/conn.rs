//! The connection driver: one task per client connection, for either protocol.
//!
//! It owns the socket, the input buffer, the [`Output`], and every per-connection limit:
//! - a started frame must complete within `frame_timeout` (slowloris);
//! - an idle connection is closed after `idle_timeout` (never while a reply is pending);
//! - output is written once per batch, and at the latest when the session finds it full
//!   (`flush_at`); a session that stopped on a full output with work left (a multi-get half
//!   answered) is called again as soon as the output is written, without waiting for more
//!   input; a client that does not take its replies within `send_timeout` is dropped, so a
//!   client that never reads cannot grow server memory;
//! - replies that complete later ([`Output::defer`]) are written when they complete, while
//!   the connection goes on reading and serving; at most `max_pending` per connection, after
//!   which it stops reading until one completes;
//! - before the first write of a batch the task yields once, so every connection the runtime
//!   found readable handles its input before any of them writes: replies leave in a burst, as
//!   in redis' event loop, and a client is woken once per burst instead of once per connection
//!   (this halved the server's system time per request at pipeline 16 on loopback);
//! - the deadlines use one timer per connection, moved only when a frame starts or when it
//!   fires early, so a read costs no timer registration;
//! - input is bounded by one frame (the session consumes every complete request); beyond
//!   [`FREE_INPUT`] it is charged to the node's [`InputBudget`](super::InputBudget) before
//!   it is read, and given back when the request completes or the connection closes;
//! - on shutdown it drains what the client already sent, answers it (waiting for pending
//!   replies up to `send_timeout`), sends the session's notice, flushes and closes;
//! - while the session wants them ([`Session::table_notices`]), it waits on the cluster's
//!   table version alongside the socket, and when it changes lets the session append a
//!   notice, written like any reply (one waiter for the connection's life, nothing per
//!   request).

use super::input::{Reservation, FREE_INPUT};
use super::{Output, Session, Shared};
use crate::stats::ServerStats;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

/// Size of each read, and the buffer size a connection returns to after a large frame.
const READ_CHUNK: usize = 16 * 1024;
/// Output buffers larger than this are given back once they are written.
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
    /// Most replies pending at once; the connection stops reading at this many.
    pub max_pending: usize,
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
    let mut conn = Conn {
        input: BytesMut::with_capacity(READ_CHUNK),
        out: Output::new(session.ordered_replies(), shared.flush_at, READ_CHUNK)
            .with_max_pending(limits.max_pending),
        reservation: shared.input_budget.reservation(),
        more: false,
        closing: false,
        parked: false,
        limits,
    };
    // Parked requests wait for any unpark, then the session looks again.
    let mut unparks = shared.keyspace.cluster().unparks();
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
    // The table-changed waiter owns its receiver, so it can be re-armed after it fires.
    let table = table_changed(shared.keyspace.cluster().table_changes(), true);
    tokio::pin!(table);
    let end = 'conn: loop {
        if !conn.parked {
            // Seen before the session looks, so an unpark after its look wakes the wait.
            unparks.mark_unchanged();
        }
        match conn.serve(&mut session, &mut stream).await {
            Ok(true) => partial_since = None,
            Ok(false) => {}
            Err(end) => break 'conn end,
        }
        if conn.closing && conn.out.pending() == 0 {
            break End::Normal;
        }
        if conn.input.is_empty() {
            partial_since = None;
            conn.shrink();
        } else if partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        if conn.input.len() > limits.max_input {
            break End::InputTooLarge;
        }
        let can_read = conn.may_read();
        // Room for the next read: free up to FREE_INPUT, beyond that charged to the budget
        // (the whole request at once when the protocol can tell its length).
        let mut budget_short = None;
        if can_read {
            let want = conn.room_wanted(&session);
            if conn.reservation.try_grow(want.saturating_sub(FREE_INPUT)) {
                conn.make_room(want);
            } else {
                budget_short = Some(want);
            }
        }
        if got_input {
            got_input = false;
            idle_since = Instant::now();
        }
        let (deadline, why) = match (partial_since, limits.idle_timeout) {
            (Some(since), _) => (since + limits.frame_timeout, End::FrameTimeout),
            (None, Some(_)) if conn.out.pending() > 0 => (never, End::IdleTimeout),
            (None, Some(idle)) => (idle_since + idle, End::IdleTimeout),
            (None, None) => (never, End::IdleTimeout),
        };
        if deadline < armed {
            armed = deadline;
            timer.as_mut().reset(armed);
        }
        let waiting_park = conn.parked;
        let mut unparked = false;
        let Conn {
            input,
            out,
            reservation,
            ..
        } = &mut conn;
        let pending = out.pending() > 0;
        let reading = can_read && budget_short.is_none();
        let notices = session.table_notices();
        tokio::select! {
            biased;
            _ = &mut stop => break End::Shutdown,
            (rx, changed) = &mut table, if notices => {
                if changed {
                    let version = *rx.borrow();
                    session.on_table_change(version, out);
                    table.set(table_changed(rx, true));
                } else {
                    // The cluster view is gone (the node is stopping): stop watching.
                    table.set(table_changed(rx, false));
                }
            }
            () = out.completed(), if pending => {}
            _ = unparks.changed(), if waiting_park => unparked = true,
            read = stream.read_buf(input), if reading => match read {
                Ok(0) => break End::Normal,
                Ok(_) => got_input = true,
                Err(_) => break End::Io,
            },
            () = reservation.grow(budget_short.unwrap_or(0).saturating_sub(FREE_INPUT)),
                if budget_short.is_some() => {}
            () = &mut timer => {
                if Instant::now() >= deadline {
                    break why;
                }
                armed = deadline;
                timer.as_mut().reset(armed);
            }
        }
        if unparked {
            conn.parked = false;
        }
    };
    if end == End::Shutdown {
        conn.drain_on_shutdown(&mut session, &mut stream).await;
    }
    let stats = shared.keyspace.stats();
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

/// Waits for the next table version change; returns the receiver (to wait again) and
/// whether a change arrived (false: the sender is gone). With `live` false it never completes
/// (one future type for both, so the pinned waiter is replaced in place).
async fn table_changed(mut rx: watch::Receiver<u64>, live: bool) -> (watch::Receiver<u64>, bool) {
    if !live {
        std::future::pending::<()>().await;
    }
    let changed = rx.changed().await.is_ok();
    (rx, changed)
}

/// One connection's buffers and state between reads.
struct Conn {
    input: BytesMut,
    out: Output,
    reservation: Reservation,
    /// The session stopped on a full output with work left: call it again after a write.
    more: bool,
    /// The session asked to close: finish the pending replies, write, close.
    closing: bool,
    /// The session stopped before a request for a parked bucket: wait for an unpark.
    parked: bool,
    limits: ConnLimits,
}

impl Conn {
    /// Whether the session may be given input (or called again) now.
    fn may_serve(&self) -> bool {
        !self.closing
            && !self.parked
            && !self.out.is_full()
            && self.out.pending() < self.limits.max_pending
            && (self.more || !self.input.is_empty())
    }

    /// Whether to read more input now.
    fn may_read(&self) -> bool {
        !self.closing && !self.out.is_full() && self.out.pending() < self.limits.max_pending
    }

    /// Handles every complete request, writing whenever the output is full, until the
    /// session can make no more progress. Returns whether any request completed.
    async fn serve<S: Session>(
        &mut self,
        session: &mut S,
        stream: &mut TcpStream,
    ) -> Result<bool, End> {
        let mut completed = false;
        let mut first_write = true;
        loop {
            let mut progressed = false;
            if self.may_serve() {
                let step = session.on_input(&self.input, &mut self.out);
                self.input.advance(step.consumed.min(self.input.len()));
                completed |= step.consumed > 0;
                progressed = step.consumed > 0 || step.more;
                self.more = step.more;
                self.closing |= step.close;
                self.parked = step.parked;
            }
            if !self.out.ready().is_empty() {
                if first_write {
                    // Let the other connections that are ready handle their input first, so
                    // replies leave in a burst after the runtime's poll of the sockets and the
                    // clients are woken once per burst rather than once per connection.
                    first_write = false;
                    tokio::task::yield_now().await;
                    // Replies that completed meanwhile (forwarded commands answered by
                    // their owner) leave in the same write.
                    std::future::poll_fn(|cx| {
                        let _ = self.out.poll_completed(cx);
                        std::task::Poll::Ready(())
                    })
                    .await;
                }
                write(stream, self.out.ready(), self.limits.send_timeout).await?;
            }
            if !progressed {
                return Ok(completed);
            }
        }
    }

    /// The input capacity wanted before the next read.
    fn room_wanted<S: Session>(&self, session: &S) -> usize {
        let next_read = self.input.len() + READ_CHUNK;
        if next_read <= FREE_INPUT {
            return next_read;
        }
        let request = session.request_len(&self.input).unwrap_or(0);
        next_read
            .max(request)
            .min(self.limits.max_input + READ_CHUNK)
    }

    /// Makes the input buffer's capacity at least `want` (exactly `want` when it must grow
    /// past [`FREE_INPUT`], so it matches what was charged to the budget).
    fn make_room(&mut self, want: usize) {
        if self.input.capacity() >= want {
            return;
        }
        if want <= FREE_INPUT {
            self.input.reserve(want - self.input.len());
        } else {
            let mut bigger = BytesMut::with_capacity(want);
            bigger.extend_from_slice(&self.input);
            self.input = bigger;
        }
    }

    /// With no input left: give large buffers and the budget back.
    fn shrink(&mut self) {
        if self.input.capacity() > FREE_INPUT {
            self.input = BytesMut::with_capacity(READ_CHUNK);
        }
        self.reservation.release();
        self.out.shrink(SHRINK_ABOVE, READ_CHUNK);
    }

    /// On shutdown: take what the client already sent (without waiting for more), answer
    /// every complete request, wait for pending replies (up to `send_timeout`), append the
    /// session's notice, write, and return.
    async fn drain_on_shutdown<S: Session>(&mut self, session: &mut S, stream: &mut TcpStream) {
        loop {
            if self.input.len() >= self.limits.max_input {
                break;
            }
            self.input.reserve(READ_CHUNK);
            match stream.try_read_buf(&mut self.input) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let deadline = Instant::now() + self.limits.send_timeout;
        loop {
            if self.serve(session, stream).await.is_err() {
                return;
            }
            if self.out.pending() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, self.out.completed())
                .await
                .is_err()
            {
                break;
            }
        }
        session.on_shutdown(&mut self.out);
        let _ = write(stream, self.out.ready(), self.limits.send_timeout).await;
    }
}

/// Writes all of `out` within `send_timeout`, and empties it.
async fn write(
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
