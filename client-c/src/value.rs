//! `shoal_value`: one value read from the cache (its bytes, flags and hash), owned by the
//! caller until `shoal_value_free`. Values are immutable, so every accessor takes a
//! `const shoal_value *` and any number of threads may read one value at once. Reading values
//! is `client.rs`'s job; this module only exposes what was read.

use crate::ffi::{ffi_boundary, free_box, try_ref, Castable};
use shoal_client::Item;

/// A value read by `shoal_client_get`, `shoal_client_get_and_touch` or
/// `shoal_client_get_many`: the bytes, the flags stored with them, and the value hash (the
/// token for `shoal_client_cas` and `shoal_client_delete_if`).
///
/// Ownership: owned by the caller, freed with `shoal_value_free`. It does not depend on the
/// client: it stays valid after the client is freed.
///
/// Thread safety: immutable; may be read from several threads at once, and freed by any one
/// thread once nobody reads it.
#[allow(non_camel_case_types)]
pub struct shoal_value {
    _private: [u8; 0],
}

impl Castable for shoal_value {
    type RustType = Item;
}

/// The value's bytes (`shoal_value_len` of them; they may contain NUL bytes and are not
/// NUL-terminated). NULL if `value` is NULL. For an empty value the pointer is not NULL but
/// must not be read.
///
/// Ownership: the bytes belong to `value` and stay valid until `shoal_value_free(value)`.
///
/// # Safety
/// `value` is NULL or a live value.
#[no_mangle]
pub unsafe extern "C" fn shoal_value_data(value: *const shoal_value) -> *const u8 {
    ffi_boundary! {
        let item = try_ref!(value);
        item.value.as_ptr()
    }
}

/// The number of bytes in the value (0 for an empty value, and for NULL).
///
/// # Safety
/// `value` is NULL or a live value.
#[no_mangle]
pub unsafe extern "C" fn shoal_value_len(value: *const shoal_value) -> usize {
    ffi_boundary! {
        let item = try_ref!(value);
        item.value.len()
    }
}

/// The flags stored with the value (0 for NULL).
///
/// # Safety
/// `value` is NULL or a live value.
#[no_mangle]
pub unsafe extern "C" fn shoal_value_flags(value: *const shoal_value) -> u32 {
    ffi_boundary! {
        let item = try_ref!(value);
        item.flags
    }
}

/// The value hash, the check-and-set token for `shoal_client_cas` and
/// `shoal_client_delete_if` (0 for NULL).
///
/// # Safety
/// `value` is NULL or a live value.
#[no_mangle]
pub unsafe extern "C" fn shoal_value_hash(value: *const shoal_value) -> u64 {
    ffi_boundary! {
        let item = try_ref!(value);
        item.hash
    }
}

/// Frees a value. Passing NULL is fine (nothing happens). Must not be called twice for the same
/// value; the pointer from `shoal_value_data` is invalid afterwards.
///
/// # Safety
/// `value` is NULL or a live value that no other thread is reading.
#[no_mangle]
pub unsafe extern "C" fn shoal_value_free(value: *mut shoal_value) {
    ffi_boundary! {
        // SAFETY: this function's contract: NULL or live, freed only here, not in use.
        unsafe { free_box(value) }
    }
}
