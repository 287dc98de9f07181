//! The boundary machinery, and the only place that casts: how each opaque C type maps to its
//! Rust type ([`Castable`]), how handles are boxed and freed, how pointer arguments are checked
//! for NULL and turned into references, slices and out-parameters, and the [`ffi_boundary!`]
//! macro that keeps panics on the Rust side.
//!
//! It does not know any Shoal operation; `client.rs`, `options.rs`, `value.rs` and `stats.rs`
//! use these helpers and macros, and never cast a pointer themselves.
//!
//! Ownership is a type, not a comment: every opaque type is a zero-sized struct without
//! `#[repr(C)]` (so cbindgen declares an incomplete C type, `typedef struct x x;`) whose
//! [`Castable::RustType`] is what the pointer really points to, a `Box<RustType>` made by
//! [`to_boxed_ptr`] and released by [`free_box`].

use crate::result::shoal_result;
use std::borrow::Cow;
use std::ffi::{c_char, CStr};
use std::ptr::NonNull;

/// Ties an opaque C type to the Rust value its pointers point to (always boxed).
pub(crate) trait Castable {
    /// The Rust value behind a `*const Self` / `*mut Self`.
    type RustType;
}

/// Boxes `value` and hands the box to C as an opaque pointer. The pointer must come back
/// exactly once through [`free_box`].
pub(crate) fn to_boxed_ptr<C: Castable>(value: C::RustType) -> *mut C {
    Box::into_raw(Box::new(value)).cast::<C>()
}

/// A shared reference to the value behind `ptr`, or `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or was returned by [`to_boxed_ptr::<C>`] and not yet freed, and nothing frees
/// it or mutates it through [`try_from_mut`] while the reference lives.
pub(crate) unsafe fn try_from_ptr<'a, C: Castable>(ptr: *const C) -> Option<&'a C::RustType> {
    // SAFETY: per this function's contract the pointer is NULL (`as_ref` gives None) or points
    // to a live, boxed `C::RustType` with no outstanding `&mut`.
    unsafe { ptr.cast::<C::RustType>().as_ref() }
}

/// An exclusive reference to the value behind `ptr`, or `None` for NULL.
///
/// # Safety
/// As [`try_from_ptr`], and no other reference to the value exists while this one lives (the
/// C caller does not use the handle from another thread at the same time).
pub(crate) unsafe fn try_from_mut<'a, C: Castable>(ptr: *mut C) -> Option<&'a mut C::RustType> {
    // SAFETY: per this function's contract the pointer is NULL or points to a live, boxed
    // `C::RustType` that nothing else references.
    unsafe { ptr.cast::<C::RustType>().as_mut() }
}

/// Drops the box behind `ptr`; NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or was returned by [`to_boxed_ptr::<C>`] and is freed here for the only time,
/// with no reference to it still in use.
pub(crate) unsafe fn free_box<C: Castable>(ptr: *mut C) {
    if !ptr.is_null() {
        // SAFETY: per this function's contract the pointer came from `Box::into_raw` of a
        // `C::RustType` and is released exactly once.
        drop(unsafe { Box::from_raw(ptr.cast::<C::RustType>()) });
    }
}

/// What a fallible call reports: a result code and, for the per-client last error, the
/// detail text.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: shoal_result,
    pub(crate) detail: Cow<'static, str>,
}

impl Fail {
    /// A failure with a fixed description.
    pub(crate) fn new(code: shoal_result, detail: &'static str) -> Self {
        Self {
            code,
            detail: Cow::Borrowed(detail),
        }
    }

    /// A NULL pointer where `what` was needed.
    pub(crate) fn null(what: &'static str) -> Self {
        Self::new(shoal_result::NullParameter, what)
    }

    /// A bad argument, described.
    pub(crate) fn invalid(detail: &'static str) -> Self {
        Self::new(shoal_result::InvalidArgument, detail)
    }
}

impl From<shoal_client::Error> for Fail {
    fn from(err: shoal_client::Error) -> Self {
        Self {
            code: shoal_result::from_error(&err),
            detail: Cow::Owned(err.to_string()),
        }
    }
}

/// Bytes `(ptr, len)` that must not be NULL (keys).
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes that stay unchanged while the slice lives.
pub(crate) unsafe fn bytes_arg<'a>(
    ptr: *const u8,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], Fail> {
    if ptr.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-NULL, and per this function's contract valid for `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Bytes `(ptr, len)` where `(NULL, 0)` means empty (values).
///
/// # Safety
/// As [`bytes_arg`].
pub(crate) unsafe fn bytes_or_empty_arg<'a>(
    ptr: *const u8,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], Fail> {
    if ptr.is_null() && len == 0 {
        return Ok(&[]);
    }
    // SAFETY: same contract as ours.
    unsafe { bytes_arg(ptr, len, what) }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays unchanged while it is used.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, what: &'static str) -> Result<&'a str, Fail> {
    if ptr.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-NULL, and per this function's contract NUL-terminated and unchanging.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map_err(|_| Fail::invalid("string argument is not valid UTF-8"))
}

/// A place to write one output: only ever written, never read, and written only on success.
#[derive(Debug)]
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks an out-pointer argument that must not be NULL.
    ///
    /// # Safety
    /// `ptr` is NULL or valid for a write of one `T` (alignment included) until `write`.
    pub(crate) unsafe fn required(ptr: *mut T, what: &'static str) -> Result<Self, Fail> {
        NonNull::new(ptr).map(Out).ok_or(Fail::null(what))
    }

    /// Checks an optional out-pointer argument: NULL means "not wanted".
    ///
    /// # Safety
    /// As [`Out::required`].
    pub(crate) unsafe fn optional(ptr: *mut T) -> Option<Self> {
        NonNull::new(ptr).map(Out)
    }

    /// Writes the output (without reading or dropping what was there).
    pub(crate) fn write(self, value: T) {
        // SAFETY: `required`/`optional` are the only constructors, and their callers promised
        // the pointer is valid for one write of `T`.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// Writes `text` into the caller's buffer `(buf, len)` as a NUL-terminated string, cut at a
/// UTF-8 character boundary to fit, and the number of bytes before the NUL into `out_n`.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes; `out_n` is NULL or valid for one write.
pub(crate) unsafe fn write_c_string(
    text: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> shoal_result {
    if buf.is_null() || out_n.is_null() {
        return shoal_result::NullParameter;
    }
    if len == 0 {
        return shoal_result::InvalidArgument;
    }
    let mut n = text.len().min(len - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf` is valid for `len` bytes (contract) and `n + 1 <= len`; the source is a
    // distinct Rust string, so the regions do not overlap. `out_n` is non-NULL and valid.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        buf.add(n).write(0);
        out_n.write(n);
    }
    shoal_result::Ok
}

/// What an `extern "C"` function returns when its body panicked or got a NULL it cannot
/// report otherwise: `SHOAL_RESULT_PANIC`/`SHOAL_RESULT_NULL_PARAMETER` for result-returning
/// functions, NULL or 0 for accessors, nothing for `void`.
pub(crate) trait Defaults {
    /// The value returned after a panic was caught.
    fn on_panic() -> Self;
    /// The value returned for a NULL handle.
    fn on_null() -> Self;
}

impl Defaults for shoal_result {
    fn on_panic() -> Self {
        shoal_result::Panic
    }
    fn on_null() -> Self {
        shoal_result::NullParameter
    }
}

impl Defaults for () {
    fn on_panic() -> Self {}
    fn on_null() -> Self {}
}

impl<T> Defaults for *const T {
    fn on_panic() -> Self {
        std::ptr::null()
    }
    fn on_null() -> Self {
        std::ptr::null()
    }
}

macro_rules! zero_defaults {
    ($($t:ty),*) => {$(
        impl Defaults for $t {
            fn on_panic() -> Self { 0 }
            fn on_null() -> Self { 0 }
        }
    )*};
}
zero_defaults!(usize, u32, u64);

/// Runs an `extern "C"` function body under `catch_unwind`, so no panic unwinds into C: a
/// panic returns [`Defaults::on_panic`] for the function's return type. Every `extern "C"`
/// function in this crate wraps its whole body in it. `return` inside the body returns from
/// the function.
macro_rules! ffi_boundary {
    ($($body:tt)*) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(_) => $crate::ffi::Defaults::on_panic(),
        }
    }};
}
pub(crate) use ffi_boundary;

/// `try_ref!(ptr)`: the Rust value behind a handle argument, or an early return of
/// [`Defaults::on_null`] for NULL. Only for use in an `unsafe extern "C"` function whose
/// `# Safety` section makes the handle's validity the caller's promise.
macro_rules! try_ref {
    ($ptr:expr) => {
        // SAFETY: the enclosing extern function's contract: the handle is NULL or live, and
        // is not freed while the call runs.
        match unsafe { $crate::ffi::try_from_ptr($ptr) } {
            Some(value) => value,
            None => return $crate::ffi::Defaults::on_null(),
        }
    };
}
pub(crate) use try_ref;

/// `try_mut!(ptr)`: as [`try_ref!`], exclusive (for setters on handles that are documented
/// as not shared between threads).
macro_rules! try_mut {
    ($ptr:expr) => {
        // SAFETY: the enclosing extern function's contract: the handle is NULL or live, and
        // no other call uses it at the same time.
        match unsafe { $crate::ffi::try_from_mut($ptr) } {
            Some(value) => value,
            None => return $crate::ffi::Defaults::on_null(),
        }
    };
}
pub(crate) use try_mut;

#[cfg(test)]
mod tests {
    use super::*;

    fn boom() -> shoal_result {
        ffi_boundary! {
            if std::hint::black_box(true) {
                panic!("deliberate panic in a test");
            }
            shoal_result::Ok
        }
    }

    fn boom_ptr() -> *const u8 {
        ffi_boundary! {
            if std::hint::black_box(true) {
                panic!("deliberate panic in a test");
            }
            b"x".as_ptr()
        }
    }

    #[test]
    fn a_panic_becomes_the_panic_result_or_a_default() {
        assert_eq!(boom(), shoal_result::Panic);
        assert!(boom_ptr().is_null());
    }

    #[test]
    fn c_strings_are_cut_to_fit_and_terminated() {
        let mut buf = [0x55 as c_char; 4];
        let mut n = 99usize;
        // SAFETY: `buf` has 4 writable bytes, `n` is a valid usize.
        let r = unsafe { write_c_string("héllo", buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(r, shoal_result::Ok);
        // "hé" is 3 bytes; 3 fit before the NUL.
        assert_eq!(n, 3);
        assert_eq!(buf[3], 0);
        // Cutting inside "é" must back off to a boundary.
        let mut small = [0x55 as c_char; 3];
        // SAFETY: as above.
        let r = unsafe { write_c_string("hé", small.as_mut_ptr(), small.len(), &mut n) };
        assert_eq!(r, shoal_result::Ok);
        assert_eq!(n, 1);
        // SAFETY: NULL buffer is refused before any write.
        let r = unsafe { write_c_string("x", std::ptr::null_mut(), 8, &mut n) };
        assert_eq!(r, shoal_result::NullParameter);
        // SAFETY: a zero-length buffer is refused before any write.
        let r = unsafe { write_c_string("x", buf.as_mut_ptr(), 0, &mut n) };
        assert_eq!(r, shoal_result::InvalidArgument);
    }
}
