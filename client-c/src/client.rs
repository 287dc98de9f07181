//! `shoal_client`: the C face of [`shoal_client::blocking::Client`]. Each function checks its
//! pointer arguments, runs one blocking call, maps the outcome to a `shoal_result`, writes the
//! outputs only on success, and records the detail of a failure for
//! `shoal_client_last_error`.
//!
//! Reconnecting, retrying within the deadline, and telling "not sent" from "in doubt" are the
//! Rust client's job and are not repeated here; this module maps them one to one
//! (`Error::Connection` -> `SHOAL_RESULT_CONNECTION`, `Error::InDoubt` ->
//! `SHOAL_RESULT_IN_DOUBT`, `Error::Timeout` -> `SHOAL_RESULT_TIMEOUT`). Misses, which the Rust
//! client reports as `Ok(None)` / `Ok(false)`, become `SHOAL_RESULT_NOT_FOUND`.

use crate::ffi::{
    bytes_arg, bytes_or_empty_arg, ffi_boundary, free_box, to_boxed_ptr, try_ref, write_c_string,
    Castable, Fail, Out,
};
use crate::options::shoal_options;
use crate::result::shoal_result;
use crate::stats::{shoal_stats, Stats};
use crate::value::shoal_value;
use ::shoal_client::{blocking, Error, Item};
use std::ffi::{c_char, CStr};
use std::sync::{Mutex, PoisonError};

/// A connection to a Shoal cluster: seed servers, pooled connections, reconnect and retry
/// state. Create with `shoal_client_new`, free with `shoal_client_free`.
///
/// Thread safety: a client may be shared by several threads. Calls on it from different
/// threads run at the same time (their requests are pipelined on shared connections; nothing
/// is serialized behind a lock). The exceptions: `shoal_client_free` must not run while any
/// other call on the client runs, and `shoal_client_last_error` describes the most recent
/// failure on the client by any thread.
///
/// Each client runs one background thread that drives its connections (replies, keepalive
/// PINGs, server notices, table refreshes); `shoal_client_free` stops and joins it.
///
/// Clusters: nothing changes for the caller. The client fetches the cluster's bucket table
/// from a seed (one seed is enough; more only help when some are down at start), sends each
/// key's request to its owner, splits `shoal_client_get_many` by owner and returns the
/// values in order, and keeps working when its seeds later die (it asks any node it knows).
/// What a caller sees while the cluster changes:
/// - a bucket moved to another node, or the client's table is out of date: nothing. The old
///   owner answers "not my bucket" (nothing was applied), and the client sends the request
///   again to the new owner, for every operation, CAS, ADD and INCR included; it refetches
///   the table when a node announces a change.
/// - a node fails: requests for its buckets are tried again within their deadline, on the
///   node when it comes back, or on the buckets' new owners once the cluster has given them
///   to other nodes (the client refetches the table from another node); if neither happens
///   in time the call returns `SHOAL_RESULT_CONNECTION` or `SHOAL_RESULT_TIMEOUT` (nothing
///   applied). A non-idempotent request already sent to the failed node returns
///   `SHOAL_RESULT_IN_DOUBT` as always. Without replicas the failed node's keys read as
///   misses (`SHOAL_RESULT_NOT_FOUND`) on their new owners.
/// - a call whose deadline passes while its bucket has no owner, or while nodes keep
///   redirecting it, returns `SHOAL_RESULT_TIMEOUT`, `SHOAL_RESULT_CONNECTION` or
///   `SHOAL_RESULT_UNAVAILABLE` (nothing applied).
///
/// Calls without a key (`shoal_client_ping`, `shoal_client_stats`) go to the seeds.
#[allow(non_camel_case_types)]
pub struct shoal_client {
    _private: [u8; 0],
}

impl Castable for shoal_client {
    type RustType = ClientState;
}

/// What a `shoal_client` points to.
#[derive(Debug)]
pub(crate) struct ClientState {
    client: blocking::Client,
    /// Detail of the most recent call that did not return OK (any thread), for
    /// `shoal_client_last_error`. A mutex because calls may come from several threads.
    last_error: Mutex<String>,
}

impl ClientState {
    /// Records a failure's detail and returns its code; OK passes through.
    fn outcome(&self, outcome: Result<(), Fail>) -> shoal_result {
        match outcome {
            Ok(()) => shoal_result::Ok,
            Err(fail) => {
                let mut last = self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *last = fail.detail.into_owned();
                fail.code
            }
        }
    }
}

fn not_found() -> Fail {
    Fail::new(shoal_result::NotFound, "key not found")
}

/// Runs `body` (which returns `Result<(), Fail>`) against the client behind a handle
/// argument, inside the panic boundary, recording a failure's detail.
macro_rules! call {
    ($client:expr, |$c:ident| $body:block) => {
        ffi_boundary! {
            let $c: &ClientState = try_ref!($client);
            // A closure so that `?` and `return` in the body end the body, not the function.
            #[allow(clippy::redundant_closure_call)]
            let outcome: Result<(), Fail> = (|| $body)();
            $c.outcome(outcome)
        }
    };
}

/// Writes a new hash to an optional out-pointer.
///
/// # Safety
/// `out_hash` is NULL or valid for writing one `uint64_t`.
unsafe fn write_optional<T>(out: *mut T, value: T) {
    // SAFETY: this function's contract.
    if let Some(out) = unsafe { Out::optional(out) } {
        out.write(value);
    }
}

/// The common shape of SET/ADD/REPLACE/CAS/APPEND/PREPEND: key, value, optional new hash out.
///
/// # Safety
/// As the extern functions that call it: `client` NULL or live; `key` NULL or valid for
/// `key_len` bytes; `value` NULL or valid for `value_len` bytes; `out_hash` NULL or writable.
unsafe fn store_call(
    client: *const shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    out_hash: *mut u64,
    op: impl FnOnce(&blocking::Client, &[u8], &[u8]) -> Result<u64, Error>,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `key`, `value` and `out_hash`.
        let (key, value) = unsafe {
            (
                bytes_arg(key, key_len, "key is NULL")?,
                bytes_or_empty_arg(value, value_len, "value is NULL with a non-zero length")?,
            )
        };
        let hash = op(&c.client, key, value)?;
        // SAFETY: this function's contract on `out_hash`.
        unsafe { write_optional(out_hash, hash) };
        Ok(())
    })
}

/// The common shape of GET and GET-AND-TOUCH: key in, owned value out.
///
/// # Safety
/// `client` NULL or live; `key` NULL or valid for `key_len` bytes; `out_value` NULL or valid
/// for writing one pointer.
unsafe fn read_call(
    client: *const shoal_client,
    key: *const u8,
    key_len: usize,
    out_value: *mut *mut shoal_value,
    op: impl FnOnce(&blocking::Client, &[u8]) -> Result<Option<Item>, Error>,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `key` and `out_value`.
        let (key, out) = unsafe {
            (
                bytes_arg(key, key_len, "key is NULL")?,
                Out::required(out_value, "out_value is NULL")?,
            )
        };
        let item = op(&c.client, key)?.ok_or_else(not_found)?;
        out.write(to_boxed_ptr::<shoal_value>(item));
        Ok(())
    })
}

/// The common shape of INCR/DECR: key and delta in, optional creation, new value out.
///
/// # Safety
/// `client` NULL or live; `key` NULL or valid for `key_len` bytes; `out_value` NULL or
/// writable.
unsafe fn counter_call(
    client: *const shoal_client,
    key: *const u8,
    key_len: usize,
    delta: u64,
    create: Option<(u64, u32)>,
    decrement: bool,
    out_value: *mut u64,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `key`.
        let key = unsafe { bytes_arg(key, key_len, "key is NULL")? };
        let value = if decrement {
            c.client.decr(key, delta, create)?
        } else {
            c.client.incr(key, delta, create)?
        };
        let value = value.ok_or_else(not_found)?;
        // SAFETY: this function's contract on `out_value`.
        unsafe { write_optional(out_value, value) };
        Ok(())
    })
}

/// Creates a client from `options` (which are copied; free them whenever you like) and writes
/// it to `*out`. Does not connect: the first call connects, or `shoal_client_connect`.
///
/// Ownership: the caller owns the new client and must free it with `shoal_client_free`.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if an argument is NULL;
/// `SHOAL_RESULT_INVALID_ARGUMENT` if the options have no seed server (or the client's thread
/// cannot start). Nothing is written on error.
///
/// Thread safety: may be called from any thread; `options` may be read by several threads
/// at once.
///
/// # Safety
/// `options` is NULL or live; `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_new(
    options: *const shoal_options,
    out: *mut *mut shoal_client,
) -> shoal_result {
    ffi_boundary! {
        let options = try_ref!(options);
        // SAFETY: this function's contract on `out`.
        let out = match unsafe { Out::required(out, "out") } {
            Ok(out) => out,
            Err(fail) => return fail.code,
        };
        if !options.has_seed {
            return shoal_result::InvalidArgument;
        }
        let client = match options.builder.clone().build_blocking() {
            Ok(client) => client,
            Err(err) => return shoal_result::from_error(&err),
        };
        out.write(to_boxed_ptr::<shoal_client>(ClientState {
            client,
            last_error: Mutex::new(String::new()),
        }));
        shoal_result::Ok
    }
}

/// Frees a client: says GOODBYE to the servers it is connected to (waiting at most 200 ms),
/// closes its connections and stops its thread. Passing NULL is fine (nothing happens). Must
/// not be called twice for the same client.
///
/// Values and stats read through the client stay valid (they are independent).
///
/// Thread safety: no other call on `client` may be running or start.
///
/// # Safety
/// `client` is NULL or a live client that no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_free(client: *mut shoal_client) {
    ffi_boundary! {
        // SAFETY: this function's contract: NULL or live, freed only here, not in use.
        unsafe { free_box(client) }
    }
}

/// Opens a connection now (one PING round trip), so that a wrong address or a down server
/// shows up here and not at the first operation. Optional: every call connects on demand.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER`; `SHOAL_RESULT_CONNECTION` or
/// `SHOAL_RESULT_TIMEOUT` when no seed answered within the deadline; see `shoal_result`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_connect(client: *mut shoal_client) -> shoal_result {
    call!(client, |c| {
        c.client.ping()?;
        Ok(())
    })
}

/// One round trip to a server (connecting first if needed).
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER`; connection results as
/// `shoal_client_connect`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_ping(client: *mut shoal_client) -> shoal_result {
    call!(client, |c| {
        c.client.ping()?;
        Ok(())
    })
}

/// Says GOODBYE on every open connection (waiting up to the request timeout for each reply)
/// and stops using them. The client stays usable: the next call reconnects. Use it before a
/// pause, or before `shoal_client_free` to choose the wait.
///
/// Returns `SHOAL_RESULT_OK`, or `SHOAL_RESULT_NULL_PARAMETER`.
///
/// Thread safety: may run at the same time as other calls on the same client; theirs may then
/// fail with `SHOAL_RESULT_IN_DOUBT` or reconnect.
///
/// # Safety
/// `client` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_close(client: *mut shoal_client) -> shoal_result {
    call!(client, |c| {
        c.client.close();
        Ok(())
    })
}

/// Reads `key` and writes a new value to `*out_value`.
///
/// Ownership: the caller owns the value and must free it with `shoal_value_free`.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NOT_FOUND` on a miss; `SHOAL_RESULT_NULL_PARAMETER`
/// if `client`, `key` or `out_value` is NULL; `SHOAL_RESULT_INVALID_ARGUMENT` for an empty
/// key; `SHOAL_RESULT_TOO_LARGE` for a key over 250 bytes; connection results (`CONNECTION`,
/// `TIMEOUT`, `IN_DOUBT`). `*out_value` is written only on OK.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `key` is NULL or valid for `key_len` bytes (any bytes, NUL
/// included); `out_value` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_get(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    out_value: *mut *mut shoal_value,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `read_call`'s.
        unsafe { read_call(client, key, key_len, out_value, |c, key| c.get(key)) }
    }
}

/// Reads `key` and sets its time to live to `ttl` seconds (0 = never expires) in one step;
/// otherwise as `shoal_client_get`.
///
/// Ownership: the caller owns the value and must free it with `shoal_value_free`.
///
/// Returns as `shoal_client_get`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_get`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_get_and_touch(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    ttl: u32,
    out_value: *mut *mut shoal_value,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `read_call`'s.
        unsafe { read_call(client, key, key_len, out_value, |c, key| c.get_and_touch(key, ttl)) }
    }
}

/// Reads `count` keys at once. Key `i` is `keys[i]` of `key_lens[i]` bytes. On success
/// `out_values[i]` is a new value, or NULL for a miss.
///
/// Ownership: the caller owns every non-NULL value written and must free each with
/// `shoal_value_free` (`shoal_value_free(NULL)` is fine, so freeing all `count` is simplest).
///
/// Returns `SHOAL_RESULT_OK` (misses included); `SHOAL_RESULT_NULL_PARAMETER` if `client`,
/// `keys`, `key_lens`, `out_values` or any `keys[i]` is NULL; key errors and connection
/// results as `shoal_client_get` (the first failing batch's). Nothing is written to
/// `out_values` unless the result is OK. `count` 0 returns OK without network I/O.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `keys` and `key_lens` are NULL or arrays of `count` elements,
/// each `keys[i]` NULL or valid for `key_lens[i]` bytes; `out_values` is NULL or valid for
/// writing `count` pointers.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_get_many(
    client: *mut shoal_client,
    keys: *const *const u8,
    key_lens: *const usize,
    count: usize,
    out_values: *mut *mut shoal_value,
) -> shoal_result {
    call!(client, |c| {
        if keys.is_null() || key_lens.is_null() || out_values.is_null() {
            return Err(Fail::null("keys, key_lens or out_values is NULL"));
        }
        // SAFETY: non-NULL, and per this function's contract arrays of `count` elements.
        let (ptrs, lens) = unsafe {
            (
                std::slice::from_raw_parts(keys, count),
                std::slice::from_raw_parts(key_lens, count),
            )
        };
        let mut list: Vec<&[u8]> = Vec::with_capacity(count);
        for (&ptr, &len) in ptrs.iter().zip(lens) {
            // SAFETY: per this function's contract each key is NULL or valid for its length.
            list.push(unsafe { bytes_arg(ptr, len, "a key in keys is NULL")? });
        }
        let items = if list.is_empty() {
            Vec::new()
        } else {
            c.client.get_many(&list)?
        };
        for (i, item) in items.into_iter().enumerate() {
            let ptr = item.map_or(std::ptr::null_mut(), to_boxed_ptr::<shoal_value>);
            // SAFETY: `out_values` is non-NULL and per this function's contract valid for
            // `count` writes; `i < count` (one item per key).
            unsafe { out_values.add(i).write(ptr) };
        }
        Ok(())
    })
}

/// Stores `value` under `key` unconditionally, with `flags` and a time to live of `ttl`
/// seconds (0 = never expires). Writes the new value hash to `*out_hash` if `out_hash` is not
/// NULL.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if `client` or `key` is NULL, or
/// `value` is NULL with a non-zero `value_len`; `SHOAL_RESULT_INVALID_ARGUMENT` for an empty
/// key; `SHOAL_RESULT_TOO_LARGE` for a key or value over the limits (no network I/O);
/// connection results. SET is idempotent: a request lost with its connection is resent
/// within the deadline.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `key` is NULL or valid for `key_len` bytes; `value` is NULL or
/// valid for `value_len` bytes (any bytes; `(NULL, 0)` is the empty value); `out_hash` is NULL
/// or valid for writing one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_set(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl: u32,
    flags: u32,
    out_hash: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `store_call`'s.
        unsafe {
            store_call(client, key, key_len, value, value_len, out_hash, |c, k, v| {
                c.set(k, v, ttl, flags)
            })
        }
    }
}

/// Stores `value` only if `key` is absent; otherwise as `shoal_client_set`.
///
/// Returns as `shoal_client_set`, plus `SHOAL_RESULT_NOT_STORED` when the key exists. Not
/// idempotent: if the connection fails after sending, the result is `SHOAL_RESULT_IN_DOUBT`
/// (never resent).
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_set`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_add(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl: u32,
    flags: u32,
    out_hash: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `store_call`'s.
        unsafe {
            store_call(client, key, key_len, value, value_len, out_hash, |c, k, v| {
                c.add(k, v, ttl, flags)
            })
        }
    }
}

/// Stores `value` only if `key` is present; otherwise as `shoal_client_set`.
///
/// Returns as `shoal_client_set`, plus `SHOAL_RESULT_NOT_STORED` when the key is missing.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_set`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_replace(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl: u32,
    flags: u32,
    out_hash: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `store_call`'s.
        unsafe {
            store_call(client, key, key_len, value, value_len, out_hash, |c, k, v| {
                c.replace(k, v, ttl, flags)
            })
        }
    }
}

/// Check-and-set: stores `value` only if the stored value's hash is `expected_hash` (from
/// `shoal_value_hash` or a previous store's `out_hash`); otherwise as `shoal_client_set`.
///
/// Returns as `shoal_client_set`, plus `SHOAL_RESULT_EXISTS` when the hash differs (someone
/// else wrote first) and `SHOAL_RESULT_NOT_FOUND` when the key is missing. Not idempotent:
/// `SHOAL_RESULT_IN_DOUBT` if the connection fails after sending (never resent).
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_set`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_cas(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    expected_hash: u64,
    ttl: u32,
    flags: u32,
    out_hash: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `store_call`'s.
        unsafe {
            store_call(client, key, key_len, value, value_len, out_hash, |c, k, v| {
                c.cas(k, v, expected_hash, ttl, flags)
            })
        }
    }
}

/// Appends `value` to the value stored under `key` (flags and expiry kept). Writes the new
/// hash to `*out_hash` if `out_hash` is not NULL.
///
/// Returns as `shoal_client_set`, plus `SHOAL_RESULT_NOT_STORED` when the key is missing and
/// `SHOAL_RESULT_TOO_LARGE` when the result would be over the value limit. Not idempotent:
/// `SHOAL_RESULT_IN_DOUBT` if the connection fails after sending (never resent).
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_set`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_append(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    out_hash: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `store_call`'s.
        unsafe {
            store_call(client, key, key_len, value, value_len, out_hash, |c, k, v| c.append(k, v))
        }
    }
}

/// Prepends `value` to the value stored under `key`; otherwise as `shoal_client_append`.
///
/// Returns as `shoal_client_append`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_set`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_prepend(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    out_hash: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `store_call`'s.
        unsafe {
            store_call(client, key, key_len, value, value_len, out_hash, |c, k, v| c.prepend(k, v))
        }
    }
}

/// Deletes `key`.
///
/// Returns `SHOAL_RESULT_OK` if it was deleted; `SHOAL_RESULT_NOT_FOUND` if it was not there;
/// `SHOAL_RESULT_NULL_PARAMETER` if `client` or `key` is NULL; key errors and connection
/// results as `shoal_client_get`. Idempotent (resent within the deadline if lost).
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `key` is NULL or valid for `key_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_delete(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `key`.
        let key = unsafe { bytes_arg(key, key_len, "key is NULL")? };
        if c.client.delete(key)? {
            Ok(())
        } else {
            Err(not_found())
        }
    })
}

/// Deletes `key` only if its value hash is `expected_hash`.
///
/// Returns `SHOAL_RESULT_OK` if deleted; `SHOAL_RESULT_EXISTS` if the hash differs;
/// `SHOAL_RESULT_NOT_FOUND` if the key is missing; otherwise as `shoal_client_delete`. Not
/// idempotent: `SHOAL_RESULT_IN_DOUBT` if the connection fails after sending.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_delete`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_delete_if(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    expected_hash: u64,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `key`.
        let key = unsafe { bytes_arg(key, key_len, "key is NULL")? };
        if c.client.delete_if(key, expected_hash)? {
            Ok(())
        } else {
            Err(not_found())
        }
    })
}

/// Sets the time to live of `key` to `ttl` seconds (0 = never expires).
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NOT_FOUND` if the key is missing; otherwise as
/// `shoal_client_delete`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_delete`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_touch(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    ttl: u32,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `key`.
        let key = unsafe { bytes_arg(key, key_len, "key is NULL")? };
        if c.client.touch(key, ttl)? {
            Ok(())
        } else {
            Err(not_found())
        }
    })
}

/// Adds `delta` to the decimal counter stored under `key` (wrapping at 2^64) and writes the
/// new value to `*out_value` if `out_value` is not NULL.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NOT_FOUND` if the key is missing;
/// `SHOAL_RESULT_NON_NUMERIC` if the value is not a decimal number; otherwise as
/// `shoal_client_delete`. Not idempotent: `SHOAL_RESULT_IN_DOUBT` if the connection fails
/// after sending (never resent).
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `key` is NULL or valid for `key_len` bytes; `out_value` is NULL
/// or valid for writing one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_incr(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    delta: u64,
    out_value: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `counter_call`'s.
        unsafe { counter_call(client, key, key_len, delta, None, false, out_value) }
    }
}

/// Subtracts `delta` from the counter under `key`, stopping at 0; otherwise as
/// `shoal_client_incr`.
///
/// Returns as `shoal_client_incr`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_incr`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_decr(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    delta: u64,
    out_value: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `counter_call`'s.
        unsafe { counter_call(client, key, key_len, delta, None, true, out_value) }
    }
}

/// As `shoal_client_incr`, but a missing key is created holding `initial` (the delta is not
/// applied), with a time to live of `ttl` seconds, and the result is OK.
///
/// Returns as `shoal_client_incr`, never `SHOAL_RESULT_NOT_FOUND`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_incr`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_incr_or_create(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    delta: u64,
    initial: u64,
    ttl: u32,
    out_value: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `counter_call`'s.
        unsafe { counter_call(client, key, key_len, delta, Some((initial, ttl)), false, out_value) }
    }
}

/// As `shoal_client_decr`, but a missing key is created holding `initial`, as
/// `shoal_client_incr_or_create`.
///
/// Returns as `shoal_client_incr_or_create`.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// As `shoal_client_incr`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_decr_or_create(
    client: *mut shoal_client,
    key: *const u8,
    key_len: usize,
    delta: u64,
    initial: u64,
    ttl: u32,
    out_value: *mut u64,
) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract, which is `counter_call`'s.
        unsafe { counter_call(client, key, key_len, delta, Some((initial, ttl)), true, out_value) }
    }
}

/// Reads the counters of the server the client talks to: group `group` (NULL or `""` for
/// all groups), and writes them to `*out_stats`.
///
/// Ownership: the caller owns the stats and must free them with `shoal_stats_free`.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if `client` or `out_stats` is
/// NULL; `SHOAL_RESULT_INVALID_ARGUMENT` if `group` is not UTF-8; connection results.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `group` is NULL or a NUL-terminated string; `out_stats` is NULL or
/// valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_stats(
    client: *mut shoal_client,
    group: *const c_char,
    out_stats: *mut *mut shoal_stats,
) -> shoal_result {
    call!(client, |c| {
        // SAFETY: this function's contract on `out_stats`.
        let out = unsafe { Out::required(out_stats, "out_stats is NULL")? };
        let group = if group.is_null() {
            ""
        } else {
            // SAFETY: non-NULL, and per this function's contract NUL-terminated.
            unsafe { CStr::from_ptr(group) }
                .to_str()
                .map_err(|_| Fail::invalid("group is not UTF-8"))?
        };
        let pairs = c.client.stats(group)?;
        out.write(to_boxed_ptr::<shoal_stats>(Stats::new(pairs)));
        Ok(())
    })
}

/// Writes what the client's routing has done since it was created: the number of "not my
/// bucket" redirects it followed (each one sent a request again, to the bucket's new owner or
/// where its table says) to `*out_redirects`, and the number of bucket tables it fetched
/// from the cluster to `*out_table_fetches`. Either pointer may be NULL (that count is not
/// written). No network I/O. Against one node that belongs to no cluster both stay 0; a
/// client that routes well shows about one redirect per bucket that moved.
///
/// Returns `SHOAL_RESULT_OK`, or `SHOAL_RESULT_NULL_PARAMETER` if `client` is NULL.
///
/// Thread safety: may run at the same time as other calls on the same client.
///
/// # Safety
/// `client` is NULL or live; `out_redirects` and `out_table_fetches` are each NULL or valid
/// for writing one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_routing_stats(
    client: *mut shoal_client,
    out_redirects: *mut u64,
    out_table_fetches: *mut u64,
) -> shoal_result {
    call!(client, |c| {
        let stats = c.client.routing_stats();
        // SAFETY: this function's contract on both out-pointers.
        unsafe {
            write_optional(out_redirects, stats.redirects);
            write_optional(out_table_fetches, stats.table_fetches);
        }
        Ok(())
    })
}

/// Writes the detail of the most recent call on `client` that did not return
/// `SHOAL_RESULT_OK` (for example `not sent: connect failed (127.0.0.1:7400): Connection
/// refused`) into `buf` of `len` bytes, NUL-terminated and cut to fit, and the number of bytes
/// before the NUL into `*out_n`. An empty string if no call failed yet. Successful calls do not
/// clear it.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if `client`, `buf` or `out_n` is
/// NULL; `SHOAL_RESULT_INVALID_ARGUMENT` if `len` is 0. Nothing is written on error.
///
/// Thread safety: may run at the same time as other calls on the same client; when several
/// threads share the client, the detail may be another thread's failure.
///
/// # Safety
/// `client` is NULL or live; `buf` is NULL or valid for writing `len` bytes; `out_n` is NULL
/// or valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn shoal_client_last_error(
    client: *const shoal_client,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> shoal_result {
    ffi_boundary! {
        let c = try_ref!(client);
        let last = c.last_error.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: this function's contract on `buf`, `len` and `out_n`.
        unsafe { write_c_string(&last, buf, len, out_n) }
    }
}
