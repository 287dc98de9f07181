//! Server-wide counters (connections, commands, bad input, limits hit), reported by STATS on
//! both protocols. Store counters (items, memory, hits, evictions) live in the store.
//!
//! Counters are relaxed atomics. Sessions count commands locally and add them once per batch,
//! so the hot path touches no shared cache line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A start time that defaults to now, so `ServerStats::default()` records when it was made.
#[derive(Debug, Clone, Copy)]
pub struct StartTime(pub Instant);

impl Default for StartTime {
    fn default() -> Self {
        StartTime(Instant::now())
    }
}

impl StartTime {
    /// Whole seconds since the start.
    pub fn uptime_secs(&self) -> u64 {
        self.0.elapsed().as_secs()
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// Server-wide counters. Every counter is reported by STATS under its own name.
        #[derive(Debug, Default)]
        pub struct ServerStats {
            /// When the counters were created (server start), for `uptime`.
            pub started: StartTime,
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl ServerStats {
            /// Every counter as `(name, value)`, in a fixed order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

counters! {
    /// Connections open now.
    curr_connections,
    /// Connections accepted since start.
    total_connections,
    /// Connections refused because the connection limit was reached.
    rejected_connections,
    /// Accept calls that failed (EMFILE and the like); the listener backs off and goes on.
    accept_errors,
    /// Native requests handled.
    native_requests,
    /// memcached text commands handled.
    text_commands,
    /// Frames or lines rejected as malformed (every class of bad input).
    bad_input,
    /// Bad input: wrong magic byte or a non-Shoal stream on the native port.
    bad_magic,
    /// Bad input: a declared frame length over the limit.
    frame_too_large,
    /// Bad input: keys over the limit or empty.
    bad_key,
    /// Bad input: values over the limit.
    value_too_large,
    /// Bad input: unknown opcodes or text commands.
    unknown_command,
    /// Bad input: requests before HELLO.
    hello_required,
    /// Connections closed because a started frame did not complete in time.
    frame_timeouts,
    /// Connections closed after being idle too long.
    idle_timeouts,
    /// Connections closed because the client did not read its replies in time.
    slow_reader_closes,
    /// Connections closed by GOODBYE or quit.
    goodbyes,
    /// Bad input: text command lines with a malformed field (flags, exptime, delta, arity of
    /// delete, too many keys).
    bad_line,
    /// Bad input: text storage commands whose data block did not end in `\r\n`.
    bad_data_chunk,
    /// Bad input: text command lines over the length limit.
    line_too_long,
    /// Text protocol: keys looked up by get, gets, gat and gats (memcached's `cmd_get`).
    text_cmd_get,
    /// Text protocol: storage commands (memcached's `cmd_set`).
    text_cmd_set,
    /// Text protocol: touch commands and gat/gats keys (memcached's `cmd_touch`).
    text_cmd_touch,
    /// Text protocol: flush_all commands (memcached's `cmd_flush`).
    text_cmd_flush,
    /// Text protocol: items stored (memcached's `total_items`).
    text_items_stored,
}

impl ServerStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds one to a counter.
    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
