//! `shoal_stats`: the server counters returned by `shoal_client_stats`, as name/value string
//! pairs in the server's order, owned by the caller until `shoal_stats_free`. Immutable once
//! made. Asking the server is `client.rs`'s job.

use crate::ffi::{ffi_boundary, free_box, try_ref, Castable};
use std::ffi::{c_char, CStr, CString};

/// Server statistics: `shoal_stats_count` pairs of NUL-terminated name and value strings.
///
/// Ownership: owned by the caller, freed with `shoal_stats_free`; independent of the client.
///
/// Thread safety: immutable; may be read from several threads at once.
#[allow(non_camel_case_types)]
pub struct shoal_stats {
    _private: [u8; 0],
}

impl Castable for shoal_stats {
    type RustType = Stats;
}

/// What a `shoal_stats` points to.
#[derive(Debug)]
pub(crate) struct Stats {
    pairs: Vec<(CString, CString)>,
}

impl Stats {
    /// Converts the client's pairs to C strings (a NUL inside a string becomes `?`).
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        let c =
            |s: String| CString::new(s.replace('\0', "?")).unwrap_or_else(|_| CString::from(c"?"));
        Self {
            pairs: pairs.into_iter().map(|(n, v)| (c(n), c(v))).collect(),
        }
    }
}

/// The number of name/value pairs (0 for NULL).
///
/// # Safety
/// `stats` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn shoal_stats_count(stats: *const shoal_stats) -> usize {
    ffi_boundary! {
        try_ref!(stats).pairs.len()
    }
}

/// The name of pair `index` (0-based), a NUL-terminated string; NULL if `stats` is NULL or
/// `index` is not below `shoal_stats_count`.
///
/// Ownership: the string belongs to `stats` and is valid until `shoal_stats_free(stats)`.
///
/// # Safety
/// `stats` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn shoal_stats_name(
    stats: *const shoal_stats,
    index: usize,
) -> *const c_char {
    ffi_boundary! {
        try_ref!(stats)
            .pairs
            .get(index)
            .map_or(std::ptr::null(), |(name, _)| name.as_ptr())
    }
}

/// The value of pair `index`, as `shoal_stats_name`.
///
/// Ownership: the string belongs to `stats` and is valid until `shoal_stats_free(stats)`.
///
/// # Safety
/// `stats` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn shoal_stats_value(
    stats: *const shoal_stats,
    index: usize,
) -> *const c_char {
    ffi_boundary! {
        try_ref!(stats)
            .pairs
            .get(index)
            .map_or(std::ptr::null(), |(_, value)| value.as_ptr())
    }
}

/// The value of the first pair called `name`, or NULL if there is none (or an argument is
/// NULL).
///
/// Ownership: the string belongs to `stats` and is valid until `shoal_stats_free(stats)`.
///
/// # Safety
/// `stats` is NULL or live; `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shoal_stats_find(
    stats: *const shoal_stats,
    name: *const c_char,
) -> *const c_char {
    ffi_boundary! {
        let stats = try_ref!(stats);
        if name.is_null() {
            return std::ptr::null();
        }
        // SAFETY: non-NULL, and per this function's contract NUL-terminated.
        let name = unsafe { CStr::from_ptr(name) };
        stats
            .pairs
            .iter()
            .find(|(n, _)| n.as_c_str() == name)
            .map_or(std::ptr::null(), |(_, value)| value.as_ptr())
    }
}

/// Frees statistics. Passing NULL is fine (nothing happens). Must not be called twice for the
/// same object; the strings read from it are invalid afterwards.
///
/// # Safety
/// `stats` is NULL or live and not being read by another thread.
#[no_mangle]
pub unsafe extern "C" fn shoal_stats_free(stats: *mut shoal_stats) {
    ffi_boundary! {
        // SAFETY: this function's contract: NULL or live, freed only here, not in use.
        unsafe { free_box(stats) }
    }
}
