//! `libshoal`: the C library for Shoal, a C ABI over the blocking `shoal-client`.
//!
//! C programs include `shoal.h` (committed in `client-c/include/`, generated from this crate
//! by a pinned cbindgen; `tests/header.rs` fails when they differ, `gen_header.sh` rewrites
//! it) and link `libshoal.a` or `libshoal.so`.
//!
//! ```c
//! shoal_options *opts = NULL;
//! shoal_client *client = NULL;
//! shoal_options_new(&opts);
//! shoal_options_add_seed(opts, "127.0.0.1:7400");
//! if (shoal_client_new(opts, &client) != SHOAL_RESULT_OK) { ... }
//! shoal_options_free(opts);
//!
//! shoal_client_set(client, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 0, NULL);
//! shoal_value *v = NULL;
//! if (shoal_client_get(client, (const uint8_t *)"k", 1, &v) == SHOAL_RESULT_OK) {
//!     fwrite(shoal_value_data(v), 1, shoal_value_len(v), stdout);
//!     shoal_value_free(v);
//! }
//! shoal_client_free(client);
//! ```
//!
//! # API conventions
//!
//! - **Names.** Types are `shoal_<noun>` (`shoal_client`, `shoal_options`, `shoal_value`,
//!   `shoal_stats`), opaque to C. Functions are `shoal_<noun>_<verb>`, a method on their first
//!   parameter. Parameters come in the order handle, inputs, outputs.
//! - **Results.** Every function that can fail returns `shoal_result`, whose numbers never
//!   change (`SHOAL_RESULT_OK` is 0). Other outputs go through out-pointers, which are written
//!   **only on success**: there are no partial results, and no in/out parameters. Accessors
//!   that cannot fail (`shoal_value_len`, ...) return their value and give 0 or NULL for a NULL
//!   handle. `shoal_result_message` and `shoal_result_name` describe a code;
//!   `shoal_client_last_error` gives the detail of a client's most recent failure.
//! - **What a failure says about a request.** `CONNECTION` and `TIMEOUT`: never sent, nothing
//!   applied. `IN_DOUBT`: sent, no reply; it may have been applied. The server's own refusals
//!   (`NOT_FOUND`, `EXISTS`, `NOT_STORED`, `NON_NUMERIC`, ...): definite, nothing applied. A
//!   miss is `SHOAL_RESULT_NOT_FOUND`, not OK with a NULL value.
//! - **Reconnecting.** A server that goes away, restarts or says GOODBYE costs at most the
//!   call in flight (`CONNECTION` or `IN_DOUBT`); the next call reconnects by itself, trying the
//!   seed servers in turn with jittered backoff, within its deadline. Requests that were not
//!   sent, and idempotent ones (GET, SET, DELETE, TOUCH, ...) lost with their connection, are
//!   resent within the deadline; ADD, CAS, APPEND, PREPEND, INCR, DECR and conditional DELETE
//!   are never resent once sent. Every call returns by its deadline.
//! - **Clusters.** The client routes each key to its owner by the cluster's bucket table,
//!   which it fetches from any seed and keeps up to date; one seed is enough, and a bucket
//!   that moves costs no error (the request is redirected and sent again, nothing having been
//!   applied). See `shoal_client` in the header for what a caller sees during a move or a
//!   failover.
//! - **Ownership.** Objects come from `shoal_<noun>_new` (or an operation such as
//!   `shoal_client_get`) and are freed exactly once with `shoal_<noun>_free`; `_free(NULL)` is
//!   always fine. Each function's documentation says who owns what it returns. Inputs are
//!   borrowed for the call only: strings and bytes are copied when kept.
//! - **Bytes.** Keys and values are `(const uint8_t *ptr, size_t len)` and may hold any bytes,
//!   NUL included. A value may be `(NULL, 0)`; a key pointer must not be NULL.
//! - **NULL.** A NULL pointer where one is required returns `SHOAL_RESULT_NULL_PARAMETER`;
//!   out-pointers that are optional (the new hash, a counter's new value) say so.
//! - **Threads.** A `shoal_client` may be shared by threads: calls on it may run at the same
//!   time and are pipelined, not serialized, except `shoal_client_free`, which must be the only
//!   call running. Values and stats are immutable and may be read from any thread. An
//!   options object must not be changed while another thread uses it. Each client runs one
//!   background thread for its connections, joined by `shoal_client_free`.
//! - **Panics.** None cross the boundary: every function body runs under `catch_unwind`, and a
//!   caught panic (a bug) returns `SHOAL_RESULT_PANIC` (or NULL/0 for accessors).
//!
//! # Layout
//!
//! - `ffi`: the boundary machinery, the only place that casts: opaque-type ownership,
//!   NULL checks, out-pointers, `ffi_boundary!`.
//! - `result`: `shoal_result` and its descriptions.
//! - `options`: `shoal_options`, the settings a client is created from.
//! - `client`: `shoal_client` and every operation.
//! - `value`: `shoal_value`, a value read.
//! - `stats`: `shoal_stats`, server counters.

#![warn(missing_docs)]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
// Each C function spells out its arguments (handle, key, value, TTL, flags, outputs) rather
// than taking a struct: that is the C API's shape, not an accident.
#![allow(clippy::too_many_arguments)]

mod client;
mod ffi;
mod options;
mod result;
mod stats;
mod value;

pub use client::*;
pub use options::*;
pub use result::*;
pub use stats::*;
pub use value::*;

use std::ffi::c_char;

/// The library's version as a static string, `"MAJOR.MINOR.PATCH"`; compare it with the
/// `SHOAL_VERSION` macros of the header you compiled against. Never NULL; do not free it.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn shoal_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    ffi::ffi_boundary! { VERSION.as_ptr().cast::<c_char>() }
}
