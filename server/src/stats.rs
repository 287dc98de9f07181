//! The node's statistics: server-wide counters ([`ServerStats`]: connections, commands, bad
//! input, limits hit) and the one table of every reported statistic ([`table`]: name, counter
//! or gauge, help text, where the value comes from). Native STATS, the memcached `stats`
//! command (under memcached's name where it has one) and a future metrics endpoint all read
//! [`table`], so each fact is reported once, under one name per protocol. Store counters
//! (items, memory, hits, evictions) live in the store and are read through the table.
//!
//! Counters are relaxed atomics. Sessions count commands locally and add them once per batch,
//! so the hot path touches no shared cache line per request.

use crate::net::InputBudget;
use crate::store::StoreStats;
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

/// Whether a statistic only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// Only grows while the node runs.
    Counter,
    /// A current level.
    Gauge,
}

/// What a statistic's value is read from.
pub struct Sources<'a> {
    /// Server-wide counters.
    pub server: &'a ServerStats,
    /// The store's statistics, taken once per report.
    pub store: &'a StoreStats,
    /// Number of buckets.
    pub buckets: u32,
    /// The node-wide input budget.
    pub input: &'a InputBudget,
}

/// One reported statistic.
pub struct StatDef {
    /// Shoal's name (native STATS, metrics).
    pub name: &'static str,
    /// memcached's name for the same fact, used by the text `stats` command.
    pub memcached: Option<&'static str>,
    /// Counter or gauge.
    pub kind: StatKind,
    /// What it counts.
    pub help: &'static str,
    /// Reads the value.
    pub read: fn(&Sources<'_>) -> u64,
}

impl StatDef {
    /// The name on the memcached text port.
    pub fn text_name(&self) -> &'static str {
        self.memcached.unwrap_or(self.name)
    }
}

impl std::fmt::Debug for StatDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatDef").field("name", &self.name).finish()
    }
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident: $kind:ident $(as $mc:literal)?, )*) => {
        /// Server-wide counters, each reported through [`table`].
        #[derive(Debug, Default)]
        pub struct ServerStats {
            /// When the counters were created (server start), for `uptime`.
            pub started: StartTime,
            /// Each row's value at the last [`reset`], in [`table`] order (empty before the
            /// first); reports subtract it from counters.
            pub baseline: std::sync::Mutex<Vec<u64>>,
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        /// The server counters' rows of [`table`].
        const SERVER_ROWS: &[StatDef] = &[ $( StatDef {
            name: stringify!($name),
            memcached: first_some(&[$(Some($mc),)? None]),
            kind: StatKind::$kind,
            help: concat!($($doc,)*),
            read: |s| s.server.$name.load(Ordering::Relaxed),
        }, )* ];
    };
}

/// The first `Some` of a list (a const helper for the table macro).
const fn first_some(list: &[Option<&'static str>]) -> Option<&'static str> {
    match list {
        [first, ..] => *first,
        [] => None,
    }
}

macro_rules! store_rows {
    ($( $(#[doc = $doc:literal])* $name:ident: $kind:ident $(as $mc:literal)? = $read:expr, )*) => {
        /// The store's rows of [`table`].
        const STORE_ROWS: &[StatDef] = &[ $( StatDef {
            name: stringify!($name),
            memcached: first_some(&[$(Some($mc),)? None]),
            kind: StatKind::$kind,
            help: concat!($($doc,)*),
            read: $read,
        }, )* ];
    };
}

store_rows! {
    /// Items stored now.
    curr_items: Gauge = |s| s.store.items,
    /// Bytes of keys and values stored now.
    bytes: Gauge = |s| s.store.bytes,
    /// Items of bucket copies being received from another node (hidden until the move
    /// switches the bucket to this node; not in `curr_items`).
    copy_items: Gauge = |s| s.store.hidden_items,
    /// Bytes of those copies (not in `bytes`).
    copy_bytes: Gauge = |s| s.store.hidden_bytes,
    /// Item memory limit: the memory reserved at start, unless lowered by `cache_memlimit`.
    limit_maxbytes: Gauge = |s| s.store.memory_limit,
    /// Reads that found their key.
    get_hits: Counter = |s| s.store.hits,
    /// Reads that did not find their key.
    get_misses: Counter = |s| s.store.misses,
    /// Items removed to make room.
    evictions: Counter = |s| s.store.evictions,
    /// Expired items reclaimed when accessed or evicted.
    expired_unfetched: Counter as "reclaimed" = |s| s.store.expirations,
    /// Expired items reclaimed by the background crawler.
    crawler_reclaimed: Counter = |s| s.store.crawler_reclaimed,
    /// Pages of item memory.
    pages_total: Gauge = |s| s.store.pages_total,
    /// Pages holding items.
    pages_used: Gauge = |s| s.store.pages_used,
    /// Pages not assigned to a slab class.
    pages_free: Gauge = |s| s.store.pages_free,
    /// Pages moved between slab classes.
    pages_moved: Counter as "slabs_moved" = |s| s.store.pages_moved,
    /// Memory of the per-bucket index tables.
    index_bytes: Gauge = |s| s.store.index_bytes,
    /// Number of buckets.
    buckets: Gauge = |s| u64::from(s.buckets),
    /// Bytes of partially received requests held against --max-input-memory.
    input_buffered_bytes: Gauge = |s| s.input.used() as u64,
    /// The node-wide limit on input held for partially received requests.
    input_buffer_limit: Gauge = |s| s.input.limit() as u64,
    /// Times a connection waited for input memory (the node-wide limit was reached).
    input_buffer_waits: Counter = |s| s.input.waits(),
}

/// Every reported statistic, in report order: the server's counters, then the store's.
pub fn table() -> impl Iterator<Item = &'static StatDef> {
    SERVER_ROWS.iter().chain(STORE_ROWS.iter())
}

/// Every statistic's value, in [`table`] order: counters since the last [`reset`].
pub fn report<'a>(sources: &'a Sources<'a>) -> impl Iterator<Item = (&'static StatDef, u64)> + 'a {
    let baseline = lock(&sources.server.baseline).clone();
    table().enumerate().map(move |(i, def)| {
        let value = (def.read)(sources);
        let since = match def.kind {
            StatKind::Counter => value.saturating_sub(baseline.get(i).copied().unwrap_or(0)),
            StatKind::Gauge => value,
        };
        (def, since)
    })
}

/// Restarts every counter of [`table`] from zero for all readers (memcached's `stats reset`,
/// which also zeroes `total_connections`, `evictions`, `get_hits` and the like); gauges
/// (`curr_items`, `bytes`, ...) are levels and stay. The underlying counters keep counting;
/// reports subtract the values taken here.
pub fn reset(sources: &Sources<'_>) {
    let now = table().map(|def| (def.read)(sources)).collect();
    *lock(&sources.server.baseline) = now;
}

fn lock(m: &std::sync::Mutex<Vec<u64>>) -> std::sync::MutexGuard<'_, Vec<u64>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

counters! {
    /// Connections open now.
    curr_connections: Gauge,
    /// Connections accepted since start.
    total_connections: Counter,
    /// Connections refused because the connection limit was reached.
    rejected_connections: Counter,
    /// Accept calls that failed (EMFILE and the like); the listener backs off and goes on.
    accept_errors: Counter,
    /// Native requests handled.
    native_requests: Counter,
    /// memcached text commands handled.
    text_commands: Counter,
    /// Frames or lines rejected as malformed (every class of bad input).
    bad_input: Counter,
    /// Bad input: wrong magic byte or a non-Shoal stream on the native port.
    bad_magic: Counter,
    /// Bad input: a declared frame length over the limit.
    frame_too_large: Counter,
    /// Bad input: keys over the limit or empty.
    bad_key: Counter,
    /// Bad input: values over the limit.
    value_too_large: Counter,
    /// Bad input: unknown opcodes or text commands.
    unknown_command: Counter,
    /// Bad input: requests before HELLO.
    hello_required: Counter,
    /// Connections closed because a started frame did not complete in time.
    frame_timeouts: Counter,
    /// Connections closed after being idle too long.
    idle_timeouts: Counter,
    /// Connections closed because the client did not read its replies in time.
    slow_reader_closes: Counter,
    /// Connections closed by GOODBYE or quit.
    goodbyes: Counter,
    /// Bad input: text command lines with a malformed field (flags, exptime, delta, arity of
    /// delete, meta flags).
    bad_line: Counter,
    /// Bad input: text storage commands whose data block did not end in `\r\n`.
    bad_data_chunk: Counter,
    /// Bad input: text command lines over the length limit.
    line_too_long: Counter,
    /// Text protocol: keys looked up by get, gets, gat and gats (memcached's `cmd_get`).
    text_cmd_get: Counter as "cmd_get",
    /// Text protocol: storage commands (memcached's `cmd_set`).
    text_cmd_set: Counter as "cmd_set",
    /// Text protocol: touch commands and gat/gats keys (memcached's `cmd_touch`).
    text_cmd_touch: Counter as "cmd_touch",
    /// Text protocol: flush_all commands (memcached's `cmd_flush`).
    text_cmd_flush: Counter as "cmd_flush",
    /// Text protocol: items stored (memcached's `total_items`).
    text_items_stored: Counter as "total_items",
    /// Text commands sent to the node serving their bucket (forwarded over the peer port).
    forwarded_out: Counter,
    /// Text commands other nodes forwarded here and this node ran.
    forwarded_in: Counter,
    /// Forwarded text commands answered `SERVER_ERROR` (no owner ran them in time, or one
    /// may have run them and its reply was lost).
    forward_errors: Counter,
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
