//! Execution of meta commands: one keyspace call each, and memcached 1.6.18's reply bytes
//! (return code, then the requested flags in the order they were sent, then `Z`, `X`, `W`).
//!
//! The check-and-set token (`c`, `C`) is the value hash, as for `gets`/`cas`: writing the same
//! bytes again keeps the same token, and `md <key> I` gives the item a new token derived
//! from the old one. memcached 1.6.18 has no flag that sets a token explicitly (a later
//! memcached's `E<token>` is answered `CLIENT_ERROR invalid flag` here as in 1.6.18).

use super::{push_u64, Exec};
use crate::keyspace::{Expiry, MetaGetOpts, MetaIncrOpts, OpError, StoreError, WriteMode};
use crate::net::memcache::base64;
use crate::net::memcache::meta::{MetaKind, MetaRequest, MetaSetMode};

/// The outcome codes of the meta writes.
const HD: &[u8] = b"HD";

impl Exec<'_> {
    /// Runs one meta command, appending its reply (if any) to `out`.
    pub(super) fn meta(&mut self, req: &MetaRequest<'_>, out: &mut Vec<u8>) {
        match req.kind {
            MetaKind::Get => self.meta_get(req, out),
            MetaKind::Set => self.meta_set(req, out),
            MetaKind::Delete => self.meta_delete(req, out),
            MetaKind::Arith => self.meta_arith(req, out),
            MetaKind::Debug => self.meta_debug(req, out),
        }
    }

    /// `mg`.
    fn meta_get(&mut self, req: &MetaRequest<'_>, out: &mut Vec<u8>) {
        let f = &req.flags;
        self.counts.cmd_get += 1;
        if f.ttl.is_some() {
            self.counts.cmd_touch += 1;
        }
        let opts = MetaGetOpts {
            touch: f.ttl.map(Expiry::from_memcached),
            vivify: last_ttl_if_created(req).map(Expiry::from_memcached),
            recache: f.recache.map(Expiry::from_memcached),
            no_update: f.no_update,
        };
        let keyspace = &self.shared.keyspace;
        let hit = keyspace.meta_get(req.key(), opts, |item, seen| {
            if f.value {
                out.extend_from_slice(b"VA ");
                push_u64(out, item.value_len() as u64);
            } else {
                out.extend_from_slice(HD);
            }
            let mut changed = false;
            for tok in f.iter() {
                match tok[0] {
                    b'T' => changed = true,
                    b'N' => changed |= seen.created,
                    b's' => flag_u64(out, b's', item.value_len() as u64),
                    b't' => {
                        let ttl = if changed {
                            item.ttl_remaining()
                        } else {
                            seen.ttl
                        };
                        push_ttl(out, ttl);
                    }
                    b'c' => flag_u64(out, b'c', item.hash()),
                    b'f' => flag_u64(out, b'f', u64::from(item.flags())),
                    b'l' => flag_u64(out, b'l', u64::from(seen.idle)),
                    b'h' => flag_u64(out, b'h', u64::from(seen.fetched)),
                    b'O' => push_opaque(out, tok),
                    b'k' => push_key(out, req.key(), f.base64),
                    _ => {}
                }
            }
            for (on, c) in [(seen.win_sent, b'Z'), (seen.stale, b'X'), (seen.won, b'W')] {
                if on {
                    out.extend_from_slice(&[b' ', c]);
                }
            }
            out.extend_from_slice(b"\r\n");
            if f.value {
                out.reserve(item.value_len() + 2);
                for part in item.value_chunks() {
                    out.extend_from_slice(part);
                }
                out.extend_from_slice(b"\r\n");
            }
        });
        match hit {
            Ok(Some(())) => {}
            Ok(None) => {
                if !f.quiet {
                    out.extend_from_slice(b"EN");
                    echo_opaque_and_key(req, out);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Err(e) => {
                let reply = self.error_reply(e);
                out.extend_from_slice(&reply);
            }
        }
    }

    /// `ms`.
    fn meta_set(&mut self, req: &MetaRequest<'_>, out: &mut Vec<u8>) {
        let f = &req.flags;
        self.counts.cmd_set += 1;
        let keyspace = &self.shared.keyspace;
        let (key, data) = (req.key(), req.data);
        let expiry = Expiry::from_memcached(f.ttl.unwrap_or(0));
        let set = |mode| keyspace.set(mode, key, data, f.client_flags, expiry);
        let result = match (f.set_mode, f.cas) {
            (MetaSetMode::Set | MetaSetMode::Replace, Some(cas)) if f.invalidate => keyspace
                .set_cas_or_stale(key, data, f.client_flags, expiry, cas)
                .map(|(ok, _)| ok),
            (MetaSetMode::Set | MetaSetMode::Replace, Some(cas)) => set(WriteMode::Cas(cas)),
            (MetaSetMode::Set, None) => set(WriteMode::Set),
            (MetaSetMode::Replace, None) => set(WriteMode::Replace),
            // As memcached: add with a token is a plain add.
            (MetaSetMode::Add, _) => set(WriteMode::Add),
            // As memcached: a token of 0 means none for append and prepend.
            (MetaSetMode::Append | MetaSetMode::Prepend, cas) => keyspace.concat_if(
                key,
                data,
                f.set_mode == MetaSetMode::Prepend,
                cas.filter(|&c| c != 0),
            ),
        };
        let (code, cas) = match result {
            Ok(ok) => {
                self.counts.items_stored += 1;
                if f.quiet {
                    return;
                }
                (HD, ok.hash)
            }
            Err(e) => match outcome_code(&e) {
                Some(code) => (code, 0),
                None => {
                    let reply = self.error_reply(e);
                    out.extend_from_slice(&reply);
                    return;
                }
            },
        };
        out.extend_from_slice(code);
        for tok in f.iter() {
            match tok[0] {
                b'O' => push_opaque(out, tok),
                b'k' => push_key(out, key, f.base64),
                b'c' => flag_u64(out, b'c', cas),
                _ => {}
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// `md`.
    fn meta_delete(&mut self, req: &MetaRequest<'_>, out: &mut Vec<u8>) {
        let f = &req.flags;
        let keyspace = &self.shared.keyspace;
        let result = if f.invalidate {
            keyspace.invalidate(req.key(), f.cas, f.ttl.map(Expiry::from_memcached))
        } else {
            keyspace.delete(req.key(), f.cas)
        };
        let code = match result {
            Ok(_) if f.quiet => return,
            Ok(_) => HD,
            Err(e) => match outcome_code(&e) {
                Some(code) => code,
                None => {
                    let reply = self.error_reply(e);
                    out.extend_from_slice(&reply);
                    return;
                }
            },
        };
        out.extend_from_slice(code);
        echo_opaque_and_key(req, out);
        out.extend_from_slice(b"\r\n");
    }

    /// `ma`.
    fn meta_arith(&mut self, req: &MetaRequest<'_>, out: &mut Vec<u8>) {
        let f = &req.flags;
        let keyspace = &self.shared.keyspace;
        let opts = MetaIncrOpts {
            delta: f.delta,
            decr: f.decr,
            create: last_ttl_if_created(req).map(|e| (f.initial, Expiry::from_memcached(e))),
            expected: f.cas,
            touch: f.ttl.map(Expiry::from_memcached),
        };
        let (value, ok, seen) = match keyspace.meta_incr(req.key(), opts) {
            Ok(done) => done,
            Err(e) => {
                match outcome_code(&e) {
                    Some(code) => {
                        out.extend_from_slice(code);
                        echo_opaque_and_key(req, out);
                        out.extend_from_slice(b"\r\n");
                    }
                    None => {
                        let reply = self.error_reply(e);
                        out.extend_from_slice(&reply);
                    }
                }
                return;
            }
        };
        // As memcached: a created item is answered even in quiet mode.
        if f.quiet && !seen.created {
            return;
        }
        let mut digits = Vec::with_capacity(20);
        push_u64(&mut digits, value);
        if f.value {
            out.extend_from_slice(b"VA ");
            push_u64(out, digits.len() as u64);
        } else {
            out.extend_from_slice(HD);
        }
        let mut ttl = seen.ttl;
        for tok in f.iter() {
            match tok[0] {
                b'c' => flag_u64(out, b'c', ok.hash),
                b't' => push_ttl(out, ttl),
                b'T' => ttl = self.ttl_shown(f.ttl),
                b'N' if seen.created => ttl = self.ttl_shown(f.vivify),
                b'O' => push_opaque(out, tok),
                b'k' => push_key(out, req.key(), f.base64),
                _ => {}
            }
        }
        if f.value {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&digits);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// `me`: memcached's debug line. `cls` and `size` are Shoal's slab class and item bytes.
    fn meta_debug(&mut self, req: &MetaRequest<'_>, out: &mut Vec<u8>) {
        let opts = MetaGetOpts {
            no_update: true,
            ..MetaGetOpts::default()
        };
        let keyspace = &self.shared.keyspace;
        let hit = keyspace.meta_get(req.key(), opts, |item, seen| {
            out.extend_from_slice(b"ME ");
            if req.flags.base64 {
                base64::encode(req.key(), out);
            } else {
                out.extend_from_slice(req.key());
            }
            // memcached prints the expiry as now minus the expiry time (negative while live).
            out.extend_from_slice(b" exp=");
            match item.ttl_remaining() {
                None => out.extend_from_slice(b"-1"),
                Some(0) => out.push(b'0'),
                Some(t) => {
                    out.push(b'-');
                    push_u64(out, u64::from(t));
                }
            }
            let (class, size) = item.slab_class_and_size();
            out.extend_from_slice(b" la=");
            push_u64(out, u64::from(seen.idle));
            out.extend_from_slice(b" cas=");
            push_u64(out, item.hash());
            out.extend_from_slice(if seen.fetched {
                b" fetch=yes cls="
            } else {
                b" fetch=no cls="
            });
            push_u64(out, class as u64);
            out.extend_from_slice(b" size=");
            push_u64(out, size as u64);
            out.extend_from_slice(b"\r\n");
        });
        match hit {
            Ok(Some(())) => {}
            Ok(None) => out.extend_from_slice(b"EN\r\n"),
            Err(e) => {
                let reply = self.error_reply(e);
                out.extend_from_slice(&reply);
            }
        }
    }

    /// The TTL a meta reply shows for a TTL token (`None`: none given or never expires).
    fn ttl_shown(&self, exptime: Option<i64>) -> Option<u32> {
        match Expiry::from_memcached(exptime?) {
            Expiry::Never => None,
            Expiry::After(s) => Some(s),
            Expiry::At(at) => Some(
                u32::try_from(at.saturating_sub(self.shared.keyspace.wall())).unwrap_or(u32::MAX),
            ),
            Expiry::Expired => Some(0),
        }
    }
}

/// The TTL an item created by `N` ends with: `N`'s, or `T`'s when `T` comes after it
/// (memcached applies both in the order sent). `None` without `N`.
fn last_ttl_if_created(req: &MetaRequest<'_>) -> Option<i64> {
    let f = &req.flags;
    f.vivify?;
    let mut last = None;
    for tok in f.iter() {
        match tok[0] {
            b'N' => last = f.vivify,
            b'T' => last = f.ttl,
            _ => {}
        }
    }
    last
}

/// The two-letter meta code for the outcomes that are not errors.
fn outcome_code(e: &OpError) -> Option<&'static [u8]> {
    match e {
        OpError::Store(StoreError::NotStored) => Some(b"NS"),
        OpError::Store(StoreError::Exists) => Some(b"EX"),
        OpError::Store(StoreError::NotFound) => Some(b"NF"),
        _ => None,
    }
}

/// ` <c><n>`.
fn flag_u64(out: &mut Vec<u8>, c: u8, n: u64) {
    out.extend_from_slice(&[b' ', c]);
    push_u64(out, n);
}

/// ` t<secs>`, or ` t-1` for an item that never expires.
fn push_ttl(out: &mut Vec<u8>, ttl: Option<u32>) {
    match ttl {
        Some(t) => flag_u64(out, b't', u64::from(t)),
        None => out.extend_from_slice(b" t-1"),
    }
}

/// The opaque token echoed, `O` included.
fn push_opaque(out: &mut Vec<u8>, tok: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(tok);
}

/// ` k<key>`, base64-encoded and followed by ` b` for a binary key.
fn push_key(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        base64::encode(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// The `O` and `k` flags, echoed in order (misses and failed writes).
fn echo_opaque_and_key(req: &MetaRequest<'_>, out: &mut Vec<u8>) {
    for tok in req.flags.iter() {
        match tok[0] {
            b'O' => push_opaque(out, tok),
            b'k' => push_key(out, req.key(), req.flags.base64),
            _ => {}
        }
    }
}
