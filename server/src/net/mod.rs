//! Listeners and connections: everything between a socket and the keyspace door.
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
//! one write. A session reaches the data only through [`Keyspace`] (one call per request);
//! a reply that must wait is handed to the driver as a [`PendingReply`] ([`Output`]), and
//! the driver goes on serving meanwhile. Input held for partially received large requests is
//! charged to the node-wide [`InputBudget`].

pub(crate) mod conn;
mod input;
pub(crate) mod listener;
pub mod memcache;
pub mod native;
mod output;

pub use input::InputBudget;
pub use output::{Mark, Output, PendingReply};

use crate::keyspace::Keyspace;
use shoal_proto::Limits;

/// What a session decided after handling input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Bytes of input fully handled (the driver drops them).
    pub consumed: usize,
    /// Close the connection once the output is flushed (GOODBYE, quit, or a fatal error).
    pub close: bool,
    /// The session stopped because its output is full, with work left in the input it has
    /// (e.g. a multi-get half answered): call it again once the output has drained, even if
    /// no more input arrives.
    pub more: bool,
    /// The session stopped before a request for a parked bucket (a move is switching its
    /// owner): call it again once a bucket is unparked, with the same input.
    pub parked: bool,
}

/// One protocol's per-connection state machine. No I/O: input bytes in, reply bytes out.
pub trait Session: Send {
    /// Handles the complete requests at the start of `input`, appending replies to `out`
    /// (or handing it replies that complete later, [`Output::defer`]).
    ///
    /// Must stop early (returning what it consumed so far) once [`Output::is_full`], so
    /// output stays bounded; the driver writes and calls again. A partial request at the end
    /// is left unconsumed.
    fn on_input(&mut self, input: &[u8], out: &mut Output) -> Step;

    /// The total length of the partial request at the start of `input`, once the protocol
    /// can tell (a native header, a text storage line); `None` when it cannot tell yet. The
    /// driver reserves input memory for it from the node-wide [`InputBudget`].
    fn request_len(&self, input: &[u8]) -> Option<usize>;

    /// The server is stopping: append a notice to `out` if the protocol has one.
    fn on_shutdown(&mut self, out: &mut Output);

    /// Whether replies leave in request order (text) or as they complete (native).
    fn ordered_replies(&self) -> bool;

    /// Whether the session wants table-changed notices now (the driver watches the table
    /// version only while this holds, so sessions without notices pay nothing).
    fn table_notices(&self) -> bool {
        false
    }

    /// The applied table version changed to `version`: append a notice to `out` if the
    /// protocol has one.
    fn on_table_change(&mut self, _version: u64, _out: &mut Output) {}
}

/// What every session of a server shares.
#[derive(Clone)]
pub struct Shared {
    /// The door to the node's data.
    pub keyspace: Keyspace,
    /// Protocol limits (frame, key, value, batch).
    pub limits: Limits,
    /// A session returns from `on_input` once its output holds this many bytes.
    pub flush_at: usize,
    /// Node-wide memory for partially received large requests.
    pub input_budget: InputBudget,
    /// How long a memcached command for a bucket served elsewhere may take to be run by its
    /// owner (`--forward-timeout`).
    pub forward_timeout: std::time::Duration,
    /// What memcached's administrative commands report and control (settings, listening
    /// socket, the `shutdown` switch).
    pub admin: std::sync::Arc<memcache::Admin>,
}

impl Shared {
    /// Every statistic of [`crate::stats::table`] with its value now.
    pub(crate) fn stats(&self) -> Vec<(&'static crate::stats::StatDef, u64)> {
        let store = self.keyspace.store_stats();
        crate::stats::report(&self.sources(&store)).collect()
    }

    /// Where the statistics are read from, with the store's taken as `store`.
    fn sources<'a>(&'a self, store: &'a crate::store::StoreStats) -> crate::stats::Sources<'a> {
        crate::stats::Sources {
            server: self.keyspace.stats(),
            store,
            buckets: self.keyspace.buckets(),
            input: &self.input_budget,
        }
    }

    /// `stats reset`: every counter of [`crate::stats::table`] restarts from zero for every
    /// reader; gauges are untouched.
    pub(crate) fn reset_stats(&self) {
        let store = self.keyspace.store_stats();
        crate::stats::reset(&self.sources(&store));
    }
}
