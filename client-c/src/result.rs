//! `shoal_result`, the numbered outcome every fallible function returns, and the functions
//! that describe a result code to a person. The numbers 0 to 14 are the Rust client's
//! [`shoal_client::ErrorCode`] numbers (a test keeps them equal); 100 and up are raised by this
//! C layer itself. Numbers are never changed or reused; a retired one stays as a comment.
//!
//! The per-call detail (which server, what the I/O error was) is not here: it is kept per
//! client and read with `shoal_client_last_error` (`client.rs`).

use crate::ffi::{ffi_boundary, write_c_string};
use shoal_client::{Error, ErrorCode};
use std::ffi::{c_char, CStr};

/// The outcome of a call. `SHOAL_RESULT_OK` (0) is success; everything else says what went
/// wrong, and for a request that reached the network, what is known about its fate:
/// `CONNECTION` and `TIMEOUT` were not sent (nothing applied); `IN_DOUBT` was sent and may or
/// may not have been applied; the server's own answers (`NOT_FOUND`, `EXISTS`, `NOT_STORED`,
/// ...) are definite, nothing was applied. The numbers are stable across releases.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum shoal_result {
    /// Success.
    Ok = 0,
    /// The key does not exist (a miss, or a delete/touch/incr/cas on a missing key).
    NotFound = 1,
    /// Check-and-set conflict: the stored value's hash is not the expected one.
    Exists = 2,
    /// ADD (key exists), REPLACE/APPEND/PREPEND (key missing): the condition was not met.
    NotStored = 3,
    /// A key or value over the size limits; refused before sending, or by the server.
    TooLarge = 4,
    /// The call's deadline passed before the request could be sent. Nothing was applied.
    Timeout = 5,
    /// Not sent: no connection to a server could be used within the deadline. Nothing was
    /// applied; the next call reconnects.
    Connection = 6,
    /// Sent, but the connection failed or the reply did not come in time: the request may or
    /// may not have been applied. The next call reconnects.
    InDoubt = 7,
    /// The server sent a reply that makes no sense for this request (treat a write as in doubt).
    Protocol = 8,
    /// An argument was refused (an empty key, a zero timeout, a string that is not UTF-8, a
    /// zero-length buffer, ...), locally or by the server.
    InvalidArgument = 9,
    /// INCR/DECR on a value that is not a decimal number.
    NonNumeric = 10,
    /// The server is paused, busy, loading or stopping: nothing was done; try later.
    Unavailable = 11,
    /// The server had no memory for the write.
    OutOfMemory = 12,
    /// Authentication was required or failed.
    Auth = 13,
    /// Any other server-side failure.
    ServerError = 14,
    /// A pointer argument that must not be NULL was NULL. Nothing was done.
    NullParameter = 100,
    /// A bug in libshoal: a Rust panic was caught at the boundary. The call did not complete;
    /// the handle stays safe to free.
    Panic = 101,
}

/// Every result, its constant's name and its message.
const RESULTS: &[(shoal_result, &CStr, &str)] = &[
    (shoal_result::Ok, c"SHOAL_RESULT_OK", "success"),
    (
        shoal_result::NotFound,
        c"SHOAL_RESULT_NOT_FOUND",
        "key not found",
    ),
    (
        shoal_result::Exists,
        c"SHOAL_RESULT_EXISTS",
        "check-and-set conflict: the value changed",
    ),
    (
        shoal_result::NotStored,
        c"SHOAL_RESULT_NOT_STORED",
        "not stored: the add/replace/append/prepend condition was not met",
    ),
    (
        shoal_result::TooLarge,
        c"SHOAL_RESULT_TOO_LARGE",
        "key or value too large",
    ),
    (
        shoal_result::Timeout,
        c"SHOAL_RESULT_TIMEOUT",
        "deadline passed before the request was sent",
    ),
    (
        shoal_result::Connection,
        c"SHOAL_RESULT_CONNECTION",
        "not sent: no usable connection to a server",
    ),
    (
        shoal_result::InDoubt,
        c"SHOAL_RESULT_IN_DOUBT",
        "in doubt: sent, but no reply; it may or may not have been applied",
    ),
    (
        shoal_result::Protocol,
        c"SHOAL_RESULT_PROTOCOL",
        "the server sent an unexpected reply",
    ),
    (
        shoal_result::InvalidArgument,
        c"SHOAL_RESULT_INVALID_ARGUMENT",
        "invalid argument",
    ),
    (
        shoal_result::NonNumeric,
        c"SHOAL_RESULT_NON_NUMERIC",
        "the value is not a decimal number",
    ),
    (
        shoal_result::Unavailable,
        c"SHOAL_RESULT_UNAVAILABLE",
        "the server is busy, paused, loading or stopping",
    ),
    (
        shoal_result::OutOfMemory,
        c"SHOAL_RESULT_OUT_OF_MEMORY",
        "the server is out of memory",
    ),
    (
        shoal_result::Auth,
        c"SHOAL_RESULT_AUTH",
        "authentication required or failed",
    ),
    (
        shoal_result::ServerError,
        c"SHOAL_RESULT_SERVER_ERROR",
        "server error",
    ),
    (
        shoal_result::NullParameter,
        c"SHOAL_RESULT_NULL_PARAMETER",
        "a required pointer argument was NULL",
    ),
    (
        shoal_result::Panic,
        c"SHOAL_RESULT_PANIC",
        "internal error in libshoal (a panic was caught)",
    ),
];

impl shoal_result {
    /// The code for a Rust client error (the numbers are shared).
    pub(crate) fn from_error(err: &Error) -> Self {
        match err.code() {
            ErrorCode::Ok => Self::Ok,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::Exists => Self::Exists,
            ErrorCode::NotStored => Self::NotStored,
            ErrorCode::TooLarge => Self::TooLarge,
            ErrorCode::Timeout => Self::Timeout,
            ErrorCode::Connection => Self::Connection,
            ErrorCode::InDoubt => Self::InDoubt,
            ErrorCode::Protocol => Self::Protocol,
            ErrorCode::InvalidArgument => Self::InvalidArgument,
            ErrorCode::NonNumeric => Self::NonNumeric,
            ErrorCode::Unavailable => Self::Unavailable,
            ErrorCode::OutOfMemory => Self::OutOfMemory,
            ErrorCode::Auth => Self::Auth,
            ErrorCode::ServerError => Self::ServerError,
            // A code added to the Rust client later and not yet here.
            _ => Self::ServerError,
        }
    }

    fn lookup(code: u32) -> Option<&'static (shoal_result, &'static CStr, &'static str)> {
        RESULTS.iter().find(|(r, _, _)| *r as u32 == code)
    }
}

/// Writes a message describing `result` into the caller's buffer `buf` of `len` bytes, as a
/// NUL-terminated string (cut to fit), and the number of bytes before the NUL into `*out_n`.
/// An unknown number gets "unknown result code".
///
/// `result` is a plain integer (not `shoal_result`) so any value may be passed safely.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if `buf` or `out_n` is NULL;
/// `SHOAL_RESULT_INVALID_ARGUMENT` if `len` is 0. Nothing is written on error.
///
/// Thread safety: may be called from any thread at any time.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes; `out_n` is NULL or a valid `size_t *`.
#[no_mangle]
pub unsafe extern "C" fn shoal_result_message(
    result: u32,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> shoal_result {
    ffi_boundary! {
        let text = shoal_result::lookup(result).map_or("unknown result code", |(_, _, m)| *m);
        // SAFETY: this function's contract on `buf`, `len` and `out_n`.
        unsafe { write_c_string(text, buf, len, out_n) }
    }
}

/// The name of `result`'s constant (`"SHOAL_RESULT_NOT_FOUND"`), or `"SHOAL_RESULT_UNKNOWN"`
/// for a number that is not a result code. Never NULL.
///
/// Ownership: the string is static; do not free it.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn shoal_result_name(result: u32) -> *const c_char {
    ffi_boundary! {
        shoal_result::lookup(result)
            .map_or(c"SHOAL_RESULT_UNKNOWN", |(_, name, _)| *name)
            .as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_rust_client_codes() {
        let pairs = [
            (ErrorCode::Ok, shoal_result::Ok),
            (ErrorCode::NotFound, shoal_result::NotFound),
            (ErrorCode::Exists, shoal_result::Exists),
            (ErrorCode::NotStored, shoal_result::NotStored),
            (ErrorCode::TooLarge, shoal_result::TooLarge),
            (ErrorCode::Timeout, shoal_result::Timeout),
            (ErrorCode::Connection, shoal_result::Connection),
            (ErrorCode::InDoubt, shoal_result::InDoubt),
            (ErrorCode::Protocol, shoal_result::Protocol),
            (ErrorCode::InvalidArgument, shoal_result::InvalidArgument),
            (ErrorCode::NonNumeric, shoal_result::NonNumeric),
            (ErrorCode::Unavailable, shoal_result::Unavailable),
            (ErrorCode::OutOfMemory, shoal_result::OutOfMemory),
            (ErrorCode::Auth, shoal_result::Auth),
            (ErrorCode::ServerError, shoal_result::ServerError),
        ];
        for (code, result) in pairs {
            assert_eq!(code as i64, result as i64, "{code:?}");
        }
    }

    #[test]
    fn every_result_has_a_name_and_a_message() {
        for (r, name, msg) in RESULTS {
            assert!(!msg.is_empty());
            assert_eq!(shoal_result_name(*r as u32), name.as_ptr());
            let expected = format!("SHOAL_RESULT_{}", screaming(&format!("{r:?}")));
            assert_eq!(name.to_str().unwrap(), expected);
        }
        // SAFETY: a static, NUL-terminated string.
        let unknown = unsafe { CStr::from_ptr(shoal_result_name(9999)) };
        assert_eq!(unknown.to_str().unwrap(), "SHOAL_RESULT_UNKNOWN");
        let mut buf = [0 as c_char; 64];
        let mut n = 0usize;
        // SAFETY: `buf` has 64 writable bytes and `n` is a valid usize.
        let r = unsafe { shoal_result_message(9999, buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(r, shoal_result::Ok);
        assert_eq!(n, "unknown result code".len());
    }

    fn screaming(camel: &str) -> String {
        let mut out = String::new();
        for (i, ch) in camel.chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }
}
