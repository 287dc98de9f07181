//! The memcached text protocol, so existing memcached clients and tools work unchanged.
//!
//! ```text
//!  input bytes ──► parse.rs ──► TextCommand ──► exec.rs ──► Keyspace ──► reply bytes
//!                  (line + data block,          (exptime rules,
//!                   borrowed, limits checked)    reply strings, counters)
//!        session.rs: the loop over pipelined commands, flush_at, data-block swallowing
//!        forward.rs: commands for buckets served elsewhere, sent to their owner (and the
//!                    owner's side: running a forwarded command)
//! ```
//!
//! This module owns decoding, executing and answering text commands ([`TextSession`]). It
//! does not own sockets, timeouts or buffer caps (the connection driver in `net/conn.rs`),
//! nor the peer connections forwarded commands travel on (`cluster::forward`).
//!
//! Commands: get, gets, gat, gats, set, add, replace, append, prepend, cas, delete, incr,
//! decr, touch, flush_all, version, verbosity, stats (general, `slabs`, `items`, `settings`,
//! `sizes`, `conns`, `reset`, `detail`), cache_memlimit, shutdown, lru_crawler, lru, slabs,
//! watch, quit, and the meta commands mg, ms, md, ma, me, mn (`meta.rs` decodes them,
//! `exec/meta.rs` runs them). The administrative ones act on this node only (`admin.rs`).
//! Replies are byte-for-byte those of memcached 1.6, checked against memcached 1.6.18. The
//! cas unique is the item's value hash, so writing the same bytes again keeps the same
//! unique; `md <key> I` gives the item a token derived from the old one.
//!
//! Where Shoal differs from memcached 1.6, and why:
//! - **Closing on a desynchronised stream.** A data block not followed by `\r\n`
//!   (`CLIENT_ERROR bad data chunk`), a data length that is not a number or is over
//!   `max_value + 16 MiB` (`CLIENT_ERROR bad command line format`), and a line over the
//!   length limit (`CLIENT_ERROR line too long`; memcached closes silently) close the
//!   connection. memcached goes on reading, so value bytes could run as commands.
//! - **Rejected storage lines** (bad key, flags, exptime or cas unique, but a valid length)
//!   have their data block discarded; memcached would parse the block as commands.
//! - **Line limits:** 8 KiB, or for the get family the largest frame (about `max_value`); a
//!   get takes any number of keys, as in memcached.
//! - **Keys** with control characters are rejected (`CLIENT_ERROR bad command line format`);
//!   flags above `u32::MAX` are rejected (memcached 1.6.18 accepts and truncates them).
//! - **`flush_all <delay>`** flushes after `delay` seconds (a value over 30 days is a unix
//!   time, as for exptimes); a later `flush_all` replaces a pending one. memcached instead
//!   hides items written before the flush time from then on; the effect is the same except
//!   for items written while the flush runs.
//! - **Expired exptimes** (negative, or an absolute time in the past) are one keyspace
//!   operation that leaves nothing visible (see `Keyspace::set`); no reader ever sees the
//!   item. Absolute exptimes are read with the node's clock.
//! - **Meta commands:** an `ms` whose length is unreadable closes the connection; a rejected
//!   `ms` (and a storage command with the wrong number of tokens whose length is readable)
//!   has its data block discarded: a data block is never run as commands. `ms I C<token>`
//!   writes stale only with the token from before the last invalidation (memcached: any
//!   older token). `mg k` shows a key written with `b` base64-encoded only when read with
//!   `b`. `me` reports Shoal's slab class and item size.
//! - **incr/decr** write plain digits (memcached pads a shrinking decr with spaces) and accept
//!   only values that are 1 to 20 digits (memcached also skips surrounding spaces).
//! - **Buckets served elsewhere.** A command for a key of a bucket another node serves is
//!   forwarded to that node and its reply relayed byte for byte (`forward.rs`); a multi-get
//!   is split by owner. When no owner runs it within `--forward-timeout` the client gets
//!   `SERVER_ERROR <reason>` (nothing under `noreply`). A node that cannot forward (no
//!   control plane, as in some tests) answers `SERVER_ERROR not my bucket (owner ADDR)`
//!   instead and changes nothing (`exec.rs`).
//! - **`stats`** reports memcached's main fields plus Shoal's counters. `stats settings`
//!   lists only settings shoald has, with its values; `stats items` only `number` and
//!   `evicted` per class; `stats conns` only the listening socket (no registry of client
//!   connections); `stats sizes_enable` stays `disabled` (no histogram). `stats reset`
//!   restarts every counter of the stats table for all readers (native STATS too), not the
//!   gauges nor the per-class lines. `VERSION` reports the shoald version.
//! - **Administration.** `cache_memlimit` limits item memory within what was allocated at
//!   start, by pages per lock partition (at least what the largest value needs); pages
//!   already in use stay until `flush_all` (`Store::set_memory_limit`). `shutdown` needs
//!   `--enable-shutdown` and stops the node as SIGTERM does. `lru_crawler` answers as a
//!   disabled crawler that cannot be enabled (shoald's expiry crawler is not steerable, and
//!   `metadump` is not implemented); `slabs automove`, `lru`, `stats detail` and `watch` are
//!   accepted with memcached's replies and no effect (`watch` sends no log lines); `slabs
//!   reassign` is refused with `NOSPARE` (pages move only by the store's rebalancing). None
//!   of these is forwarded: each acts on the node asked.

mod admin;
mod base64;
mod exec;
mod forward;
mod meta;
mod parse;
mod session;

pub use admin::Admin;
pub use exec::VERSION;
pub(crate) use forward::run_forwarded;
pub use session::TextSession;
