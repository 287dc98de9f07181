//! Listeners and connections: everything between a socket and the store.
//!
//! ```text
//!  accept loop (listener.rs)          one task per connection (conn.rs)
//!  ┌──────────────────────┐          ┌──────────────────────────────────────────────┐
//!  │ connection limit      │ spawn    │ read ──► input buffer ──► Session::on_input    │
//!  │ EMFILE backoff        ├────────► │          (partial frame     decodes every     │
//!  │ shutdown              │          │           deadline)         complete request, │
//!  └──────────────────────┘          │                             runs it, appends  │
//!                                     │ write ◄── output buffer ◄── the reply         │
//!                                     └──────────────────────────────────────────────┘
//! ```
//! The connection driver owns timeouts, buffer limits, flushing and shutdown; a [`Session`]
//! owns one protocol (native in `native.rs`, memcached text in `memcache/`). Sessions do no
//! I/O: they turn input bytes into output bytes, so a whole pipelined batch costs one read and
//! one write.

pub(crate) mod conn;
pub(crate) mod listener;
pub mod memcache;
pub mod native;

use crate::stats::ServerStats;
use crate::store::Store;
use shoal_proto::Limits;
use std::sync::Arc;

/// What a session decided after handling input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Bytes of input fully handled (the driver drops them).
    pub consumed: usize,
    /// Close the connection once the output is flushed (GOODBYE, quit, or a fatal error).
    pub close: bool,
}

/// One protocol's per-connection state machine. No I/O: input bytes in, reply bytes out.
pub trait Session: Send {
    /// Handles the complete requests at the start of `input`, appending replies to `out`.
    ///
    /// Must stop early (returning what it consumed so far) once `out` holds at least
    /// `ctx.flush_at` bytes, so output stays bounded; the driver flushes and calls again.
    /// A partial request at the end is left unconsumed.
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step;

    /// The server is stopping: append a notice to `out` if the protocol has one.
    fn on_shutdown(&mut self, out: &mut Vec<u8>);
}

/// What every session of a server shares.
#[derive(Clone)]
pub struct Shared {
    /// The node's items.
    pub store: Store,
    /// Server-wide counters.
    pub stats: Arc<ServerStats>,
    /// Protocol limits (frame, key, value, batch).
    pub limits: Limits,
    /// A session returns from `on_input` once its output holds this many bytes.
    pub flush_at: usize,
    /// `flush_all` with a delay, scheduled for later.
    pub delayed_flush: memcache::DelayedFlush,
}
