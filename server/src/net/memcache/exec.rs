//! Execution of decoded text commands: command -> one keyspace call -> reply bytes.
//!
//! Owns the memcached reply strings for executed commands and the per-batch command counters.
//! It does not own decoding (`parse.rs`), the input loop (`session.rs`), or the exptime rules
//! (`keyspace::Expiry`, applied with the node's clock).
//!
//! Commands for buckets served elsewhere normally never get here (the session forwards them,
//! `forward.rs`). When one does (this node cannot forward, or the table changed between the
//! check and the call), it is answered `SERVER_ERROR not my bucket (owner ADDR)` (ADDR: the
//! owner's memcached address, else its native address; `no owner` when the bucket has none)
//! and nothing is applied; under `noreply` nothing is answered, as for other errors. A
//! multi-get that names such a key is answered with that one line and no values, so a client
//! never takes a key it could not read for a miss. A command run for another node
//! ([`Exec::forwarded`]) records the bucket instead, so that node retries on the owner.

use super::parse::{Keys, StatsGroup, StoreKind, TextCommand};
use crate::cluster::Redirect;
use crate::keyspace::ItemRef;
use crate::keyspace::{Expiry, OpError, StoreError, WriteMode};
use crate::net::{Output, Shared};
use crate::stats::ServerStats;
use std::borrow::Cow;

/// What `version` and `stats` report: the memcached version whose text protocol this
/// emulates, then shoald's own. Clients parse the leading `major.minor.patch` and some
/// (libmemcached, so PHP memcached, pylibmc, memcstat) refuse a major version of 0, which
/// shoald's own version alone would give.
pub const VERSION: &str = concat!("1.6.18-shoald-", env!("CARGO_PKG_VERSION"));
/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Fully handled; its input can be consumed.
    Done,
    /// A multi-get stopped because the output is full: keep its input and call again, it
    /// resumes after the keys already answered.
    Paused,
    /// Close the connection (quit).
    Close,
}

/// Counters kept per session and added to [`ServerStats`] once per input batch, so the hot
/// path touches no shared cache line per command.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub commands: u64,
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_touch: u64,
    pub cmd_flush: u64,
    pub items_stored: u64,
    pub goodbyes: u64,
    pub bad_input: u64,
    pub bad_key: u64,
    pub bad_line: u64,
    pub bad_data_chunk: u64,
    pub line_too_long: u64,
    pub frame_too_large: u64,
    pub value_too_large: u64,
    pub unknown_command: u64,
    pub forwarded_out: u64,
    pub forwarded_in: u64,
}

impl Counts {
    /// Adds everything to the server counters and starts again from zero.
    pub fn flush_into(&mut self, stats: &ServerStats) {
        let c = std::mem::take(self);
        ServerStats::add(&stats.text_commands, c.commands);
        ServerStats::add(&stats.text_cmd_get, c.cmd_get);
        ServerStats::add(&stats.text_cmd_set, c.cmd_set);
        ServerStats::add(&stats.text_cmd_touch, c.cmd_touch);
        ServerStats::add(&stats.text_cmd_flush, c.cmd_flush);
        ServerStats::add(&stats.text_items_stored, c.items_stored);
        ServerStats::add(&stats.goodbyes, c.goodbyes);
        ServerStats::add(&stats.bad_input, c.bad_input);
        ServerStats::add(&stats.bad_key, c.bad_key);
        ServerStats::add(&stats.bad_line, c.bad_line);
        ServerStats::add(&stats.bad_data_chunk, c.bad_data_chunk);
        ServerStats::add(&stats.line_too_long, c.line_too_long);
        ServerStats::add(&stats.frame_too_large, c.frame_too_large);
        ServerStats::add(&stats.value_too_large, c.value_too_large);
        ServerStats::add(&stats.unknown_command, c.unknown_command);
        ServerStats::add(&stats.forwarded_out, c.forwarded_out);
        ServerStats::add(&stats.forwarded_in, c.forwarded_in);
    }
}

/// Runs commands for one session.
pub(super) struct Exec<'s> {
    pub shared: &'s Shared,
    pub counts: &'s mut Counts,
    /// Keys of the current multi-get already answered in earlier calls.
    pub resume: &'s mut usize,
    /// Running a command another node forwarded: a key of a bucket this node does not
    /// serve is recorded in `not_mine` (and answered nothing) instead of being answered
    /// `SERVER_ERROR not my bucket`, so the sender can retry on the owner.
    pub forwarded: bool,
    /// The first bucket found not served here while `forwarded`.
    pub not_mine: Option<Redirect>,
}

impl Exec<'_> {
    /// Runs `cmd`, appending its reply (if any) to `out`.
    pub fn run(&mut self, cmd: TextCommand<'_>, out: &mut Output) -> Outcome {
        match cmd {
            TextCommand::Get { keys, cas } => return self.get(keys, cas, None, out),
            TextCommand::Gat { exptime, keys, cas } => {
                return self.get(keys, cas, Some(Expiry::from_memcached(exptime)), out)
            }
            TextCommand::Store {
                kind,
                key,
                flags,
                exptime,
                data,
                noreply,
            } => {
                let reply = self.store(kind, key, flags, exptime, data);
                reply_unless(noreply, out, &reply);
            }
            TextCommand::TooLarge {
                key,
                unlink,
                noreply,
                ..
            } => {
                self.counts.cmd_set += 1;
                self.counts.bad_input += 1;
                self.counts.value_too_large += 1;
                if unlink {
                    // As memcached: a failed set leaves no stale value behind (in a bucket
                    // this node serves; any other holds nothing here).
                    let _ = self.shared.keyspace.unlink_after_failed_set(key);
                }
                reply_unless(noreply, out, b"SERVER_ERROR object too large for cache\r\n");
            }
            TextCommand::Delete { key, noreply } => {
                let reply = match self.shared.keyspace.delete(key, None) {
                    Ok(_) => Cow::Borrowed(&b"DELETED\r\n"[..]),
                    Err(e) => self.error_reply(e),
                };
                reply_unless(noreply, out, &reply);
            }
            TextCommand::Incr {
                key,
                delta,
                decr,
                noreply,
            } => match self.shared.keyspace.incr(key, delta, decr, None) {
                Ok((value, _)) => {
                    if !noreply {
                        push_u64(out, value);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Err(e) => {
                    let reply = self.error_reply(e);
                    reply_unless(noreply, out, &reply);
                }
            },
            TextCommand::Touch {
                key,
                exptime,
                noreply,
            } => {
                self.counts.cmd_touch += 1;
                let reply = match self
                    .shared
                    .keyspace
                    .touch(key, Expiry::from_memcached(exptime))
                {
                    Ok(()) => Cow::Borrowed(&b"TOUCHED\r\n"[..]),
                    Err(e) => self.error_reply(e),
                };
                reply_unless(noreply, out, &reply);
            }
            TextCommand::FlushAll { delay, noreply } => {
                self.counts.cmd_flush += 1;
                // The delay reads like an exptime: over 30 days it is a unix time; 0, negative
                // or past means now.
                let delay = self
                    .shared
                    .keyspace
                    .delay_until(Expiry::from_memcached(delay));
                self.shared.keyspace.flush_all(delay);
                reply_unless(noreply, out, b"OK\r\n");
            }
            TextCommand::Verbosity { noreply } => reply_unless(noreply, out, b"OK\r\n"),
            TextCommand::Version => {
                out.extend_from_slice(b"VERSION ");
                out.extend_from_slice(VERSION.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            TextCommand::Stats(group) => self.stats(group, out),
            TextCommand::Meta(req) => self.meta(&req, out),
            TextCommand::MetaNoop => out.extend_from_slice(b"MN\r\n"),
            TextCommand::Fixed(reply) => out.extend_from_slice(reply),
            TextCommand::CacheMemlimit { megabytes, noreply } => {
                let reply: &[u8] = if megabytes < 8 {
                    b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
                } else if megabytes > 1_000_000_000 {
                    b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"
                } else {
                    // Within the memory allocated at start; `limit_maxbytes` shows the result.
                    let limit = self.shared.keyspace.set_memory_limit(megabytes << 20);
                    tracing::info!(requested_mib = megabytes, limit, "cache_memlimit");
                    b"OK\r\n"
                };
                reply_unless(noreply, out, reply);
            }
            TextCommand::Shutdown { valid_mode } => match &self.shared.admin.shutdown {
                None => out.extend_from_slice(b"ERROR: shutdown not enabled\r\n"),
                Some(_) if !valid_mode => {
                    out.extend_from_slice(b"CLIENT_ERROR invalid shutdown mode\r\n");
                }
                Some(stop) => {
                    // As memcached: no reply; this connection closes, the node stops
                    // gracefully as on SIGTERM.
                    tracing::info!("shutdown command: stopping gracefully");
                    stop.notify_one();
                    return Outcome::Close;
                }
            },
            TextCommand::SlabsReassign { src, dst } => {
                let classes = self.shared.keyspace.store_stats().classes.len() as i64;
                let valid = |c: i64| (1..=classes).contains(&c);
                out.extend_from_slice(if !valid(src) || !valid(dst) {
                    b"BADCLASS invalid src or dst class id\r\n"
                } else if src == dst {
                    b"SAME src and dst class are identical\r\n"
                } else {
                    // Pages move between classes only by the store's own rebalancing.
                    b"NOSPARE source class has no spare pages\r\n"
                });
            }
            TextCommand::Quit => {
                self.counts.goodbyes += 1;
                return Outcome::Close;
            }
        }
        Outcome::Done
    }

    /// get, gets, gat, gats: one keyspace call per key. Stops (returning
    /// [`Outcome::Paused`]) once the output is full and at least one key was answered in
    /// this call.
    ///
    /// Before the first value, every key's bucket is checked: one this node does not serve
    /// answers the whole command with `SERVER_ERROR not my bucket`. Should a bucket stop
    /// being served between two calls of a paused multi-get, the reply is cut with the same
    /// line and the connection closed, since values were already sent.
    fn get(
        &mut self,
        keys: Keys<'_>,
        cas: bool,
        touch: Option<Expiry>,
        out: &mut Output,
    ) -> Outcome {
        let shared = self.shared;
        let keyspace = &shared.keyspace;
        let first = *self.resume;
        if first == 0 && !keyspace.cluster().owns_all() {
            if let Some(key) = keys.iter().find(|k| !keyspace.serves(k)) {
                let redirect = keyspace.cluster().redirect(self.bucket_of(key));
                let reply = self.not_my_bucket(redirect);
                out.extend_from_slice(&reply);
                return Outcome::Done;
            }
        }
        for (i, key) in keys.iter().enumerate().skip(first) {
            if i > first && out.is_full() {
                *self.resume = i;
                return Outcome::Paused;
            }
            self.counts.cmd_get += 1;
            let write = |item: ItemRef<'_>| write_value(out, &item, cas);
            let got = match touch {
                None => keyspace.get(key, write),
                Some(expiry) => {
                    self.counts.cmd_touch += 1;
                    keyspace.get_and_touch(key, expiry, write)
                }
            };
            if let Err(e) = got {
                *self.resume = 0;
                let reply = self.error_reply(e);
                out.extend_from_slice(&reply);
                return Outcome::Close;
            }
        }
        *self.resume = 0;
        out.extend_from_slice(b"END\r\n");
        Outcome::Done
    }

    /// The memcached reply for a keyspace error (nothing for a bucket served elsewhere when
    /// the command was forwarded: see [`Exec::forwarded`]).
    fn error_reply(&mut self, e: OpError) -> Cow<'static, [u8]> {
        match e {
            OpError::NotMyBucket(r) => self.not_my_bucket(r),
            OpError::Store(e) => Cow::Borrowed(store_error_reply(e)),
            OpError::NoLease => {
                Cow::Borrowed(b"SERVER_ERROR no lease: this node is not serving now; try again\r\n")
            }
        }
    }

    /// The reply for a key of a bucket this node does not serve.
    #[cold]
    fn not_my_bucket(&mut self, r: Redirect) -> Cow<'static, [u8]> {
        if self.forwarded {
            self.not_mine.get_or_insert(r);
            return Cow::Borrowed(b"");
        }
        Cow::Owned(not_my_bucket(self.shared, &r))
    }

    /// The bucket of `key`.
    fn bucket_of(&self, key: &[u8]) -> u32 {
        shoal_proto::hash::bucket_of(key, self.shared.keyspace.buckets())
    }

    /// The storage commands: one keyspace call; returns the reply line.
    fn store(
        &mut self,
        kind: StoreKind,
        key: &[u8],
        flags: u32,
        exptime: i64,
        data: &[u8],
    ) -> Cow<'static, [u8]> {
        self.counts.cmd_set += 1;
        let shared = self.shared;
        let keyspace = &shared.keyspace;
        let mode = match kind {
            StoreKind::Set => WriteMode::Set,
            StoreKind::Add => WriteMode::Add,
            StoreKind::Replace => WriteMode::Replace,
            StoreKind::Cas(unique) => WriteMode::Cas(unique),
            // append/prepend keep the item's flags and TTL (memcached ignores both fields).
            StoreKind::Append | StoreKind::Prepend => {
                let front = kind == StoreKind::Prepend;
                return match keyspace.concat(key, data, front) {
                    Ok(_) => {
                        self.counts.items_stored += 1;
                        Cow::Borrowed(b"STORED\r\n")
                    }
                    Err(e) => self.error_reply(e),
                };
            }
        };
        match keyspace.set(mode, key, data, flags, Expiry::from_memcached(exptime)) {
            Ok(_) => {
                self.counts.items_stored += 1;
                Cow::Borrowed(b"STORED\r\n")
            }
            Err(e) => self.error_reply(e),
        }
    }

    /// The `stats` groups.
    fn stats(&mut self, group: StatsGroup, out: &mut Vec<u8>) {
        match group {
            StatsGroup::Reset => {
                // Counters of this batch so far count before the reset, so they go first.
                self.counts.flush_into(self.shared.keyspace.stats());
                self.shared.reset_stats();
                out.extend_from_slice(b"RESET\r\n");
                return;
            }
            StatsGroup::Sizes => out.extend_from_slice(b"STAT sizes_status disabled\r\n"),
            StatsGroup::Settings => {
                let s = self.shared.keyspace.store_stats();
                stat(out, "maxbytes", s.memory_limit);
                for (name, value) in &self.shared.admin.settings {
                    stat_str(out, name, value);
                }
                if let Some(first) = s.classes.first() {
                    stat(out, "chunk_size", first.chunk_size);
                }
            }
            StatsGroup::Conns => {
                // Only the listening socket: no registry of client connections is kept.
                if let Some((fd, addr)) = self.shared.admin.listening {
                    let tcp = if addr.is_ipv6() { "tcp6" } else { "tcp" };
                    let line = format!(
                        "STAT {fd}:addr {tcp}:{addr}\r\nSTAT {fd}:state conn_listening\r\n"
                    );
                    out.extend_from_slice(line.as_bytes());
                }
            }
            StatsGroup::Items => {
                let s = self.shared.keyspace.store_stats();
                for (i, class) in s.classes.iter().enumerate() {
                    if class.items == 0 {
                        continue;
                    }
                    for (name, value) in [("number", class.items), ("evicted", class.evictions)] {
                        out.extend_from_slice(b"STAT items:");
                        push_u64(out, i as u64 + 1);
                        out.push(b':');
                        out.extend_from_slice(name.as_bytes());
                        out.push(b' ');
                        push_u64(out, value);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            StatsGroup::General => {
                let keyspace = &self.shared.keyspace;
                // Counters of this batch so far are not yet in the server's: add them first.
                self.counts.flush_into(keyspace.stats());
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                stat(out, "pid", u64::from(std::process::id()));
                stat(out, "uptime", keyspace.stats().started.uptime_secs());
                stat(out, "time", keyspace.wall());
                stat_str(out, "version", VERSION);
                stat(out, "pointer_size", usize::BITS.into());
                stat(out, "threads", threads as u64);
                // Every statistic of the one table, under memcached's name where it has one.
                for (def, value) in self.shared.stats() {
                    stat(out, def.text_name(), value);
                }
            }
            StatsGroup::Slabs => {
                let s = self.shared.keyspace.store_stats();
                let mut active = 0u64;
                for (i, class) in s.classes.iter().enumerate() {
                    if class.pages == 0 {
                        continue;
                    }
                    active += 1;
                    let prefix = i + 1;
                    let per_page = s.page_size / class.chunk_size.max(1);
                    for (name, value) in [
                        ("chunk_size", class.chunk_size),
                        ("chunks_per_page", per_page),
                        ("total_pages", class.pages),
                        ("total_chunks", class.chunks),
                        ("used_chunks", class.used),
                        ("free_chunks", class.free),
                        ("evicted", class.evictions),
                    ] {
                        out.extend_from_slice(b"STAT ");
                        push_u64(out, prefix as u64);
                        out.push(b':');
                        out.extend_from_slice(name.as_bytes());
                        out.push(b' ');
                        push_u64(out, value);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                stat(out, "active_slabs", active);
                stat(out, "total_malloced", s.pages_used * s.page_size);
            }
        }
        out.extend_from_slice(b"END\r\n");
    }
}

/// `SERVER_ERROR not my bucket (owner ADDR)`: the owner's memcached address when it has that
/// port open, else its native address.
#[cold]
fn not_my_bucket(shared: &Shared, r: &Redirect) -> Vec<u8> {
    let line = match &r.owner {
        Some((id, native)) => {
            let state = shared.keyspace.cluster().state();
            let addr = state
                .nodes
                .get(id)
                .and_then(|m| m.addrs.memcache.clone())
                .unwrap_or_else(|| native.clone());
            format!("SERVER_ERROR not my bucket (owner {addr})\r\n")
        }
        None => "SERVER_ERROR not my bucket (no owner)\r\n".to_string(),
    };
    line.into_bytes()
}

/// The memcached reply for a store error.
fn store_error_reply(e: StoreError) -> &'static [u8] {
    match e {
        StoreError::NotFound => b"NOT_FOUND\r\n",
        StoreError::Exists => b"EXISTS\r\n",
        StoreError::NotStored => b"NOT_STORED\r\n",
        StoreError::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
        StoreError::OutOfMemory => b"SERVER_ERROR out of memory storing object\r\n",
        StoreError::NonNumeric => {
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        }
        // The parser checks keys against the protocol limits; the store's may be stricter.
        StoreError::KeyTooLong | StoreError::EmptyKey => {
            b"CLIENT_ERROR bad command line format\r\n"
        }
        StoreError::Hidden => b"SERVER_ERROR bucket not served by this node\r\n",
        // Only the bucket-copy operations fail so; no client request reaches them.
        StoreError::ChangeLogActive | StoreError::NoSuchBucket => {
            b"SERVER_ERROR internal error\r\n"
        }
    }
}

fn reply_unless(noreply: bool, out: &mut Vec<u8>, reply: &[u8]) {
    if !noreply {
        out.extend_from_slice(reply);
    }
}

/// `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n`.
fn write_value(out: &mut Vec<u8>, item: &ItemRef<'_>, cas: bool) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(item.key());
    out.push(b' ');
    push_u64(out, u64::from(item.flags()));
    out.push(b' ');
    push_u64(out, item.value_len() as u64);
    if cas {
        out.push(b' ');
        push_u64(out, item.hash());
    }
    out.extend_from_slice(b"\r\n");
    out.reserve(item.value_len() + 2);
    for part in item.value_chunks() {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// `STAT <name> <value>\r\n`.
fn stat(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    push_u64(out, value);
    out.extend_from_slice(b"\r\n");
}

fn stat_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without allocating.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

mod meta;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_u64_writes_decimal() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
