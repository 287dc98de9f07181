//! libshoal (`--client c`): the checker drives the C library through its C ABI, so the soak
//! covers libshoal's own reconnect logic and result codes, not only the Rust client under it.
//!
//! This is the only module of the checker allowed `unsafe` (the crate root denies it, and
//! `lib.rs` allows it here): it links `shoal-client-c` as a Rust library and calls its
//! `extern "C"` functions exactly as a C program would, pointer and length arguments included.
//! Every call is a blocking one, made on tokio's blocking thread pool. libshoal documents that
//! calls on one client may run at the same time from any thread; that is what makes sharing
//! the handle between workers sound.
//!
//! Result codes map to [`OpError`] as the header documents them: `IN_DOUBT` and `PROTOCOL`
//! are in doubt; `EXISTS`, `NOT_STORED`, `NOT_FOUND` are definite answers; the rest were not
//! applied.

use crate::backend::{ClientSettings, Got, OpError, RoutingStats};
use shoal::{shoal_client, shoal_options, shoal_result, shoal_value};
use std::ffi::CString;
use std::ptr;
use std::sync::Arc;

/// An owned libshoal client handle, freed when the last clone of the [`CClient`] goes.
#[derive(Debug)]
struct Handle(*mut shoal_client);

// SAFETY: libshoal's client functions are documented as callable from any thread, at the same
// time as other calls on the same client; the only call that needs exclusive use,
// `shoal_client_free`, runs in `Drop`, when no other reference exists.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `shoal_client_new`, is freed only here, and this is
        // the last reference (the handle lives in an `Arc`).
        unsafe { shoal::shoal_client_free(self.0) }
    }
}

/// A libshoal client, shared by every worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CClient {
    handle: Arc<Handle>,
}

/// Maps a libshoal result that is not OK to what it says about the request's fate.
fn op_error(result: shoal_result) -> OpError {
    match result {
        shoal_result::Exists => OpError::Conflict,
        shoal_result::NotStored => OpError::NotStored,
        shoal_result::NotFound => OpError::NotFound,
        shoal_result::InDoubt | shoal_result::Protocol => {
            OpError::InDoubt(format!("libshoal {result:?}"))
        }
        other => OpError::Failed(format!("libshoal {other:?}")),
    }
}

fn check(result: shoal_result) -> Result<(), OpError> {
    if result == shoal_result::Ok {
        Ok(())
    } else {
        Err(op_error(result))
    }
}

/// A millisecond count for libshoal's setters (at least 1).
fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Options owned for the length of [`CClient::new`].
struct Options(*mut shoal_options);

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: from `shoal_options_new`, freed only here.
        unsafe { shoal::shoal_options_free(self.0) }
    }
}

impl CClient {
    /// Creates a libshoal client for `settings.servers` (connections open on first use).
    ///
    /// # Errors
    /// When libshoal refuses an option or cannot create the client.
    pub fn new(settings: &ClientSettings) -> Result<Self, OpError> {
        let mut raw = ptr::null_mut();
        // SAFETY: `raw` is valid for writing one pointer.
        check(unsafe { shoal::shoal_options_new(&mut raw) })?;
        let options = Options(raw);
        for seed in &settings.servers {
            let seed = CString::new(seed.as_str())
                .map_err(|_| OpError::Failed(format!("server address {seed:?} has a NUL")))?;
            // SAFETY: live options; a NUL-terminated string that outlives the call.
            check(unsafe { shoal::shoal_options_add_seed(options.0, seed.as_ptr()) })?;
        }
        let name = c"consistency-checker";
        // SAFETY (all four): live options, used by this thread only; a static C string.
        unsafe {
            check(shoal::shoal_options_set_request_timeout_ms(
                options.0,
                millis(settings.request_timeout),
            ))?;
            check(shoal::shoal_options_set_connect_timeout_ms(
                options.0,
                millis(settings.request_timeout),
            ))?;
            check(shoal::shoal_options_set_deadline_ms(
                options.0,
                millis(settings.deadline),
            ))?;
            check(shoal::shoal_options_set_client_name(
                options.0,
                name.as_ptr(),
            ))?;
        }
        let mut client = ptr::null_mut();
        // SAFETY: live options; `client` valid for writing one pointer.
        check(unsafe { shoal::shoal_client_new(options.0, &mut client) })?;
        Ok(Self {
            handle: Arc::new(Handle(client)),
        })
    }

    /// Runs a blocking libshoal call on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(*mut shoal_client) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let handle = self.handle.clone();
        tokio::task::spawn_blocking(move || f(handle.0))
            .await
            .map_err(|e| OpError::Failed(format!("blocking task: {e}")))?
    }

    /// One round trip to a server.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn ping(&self) -> Result<(), OpError> {
        // SAFETY: a live client (held by the Arc).
        self.blocking(|client| check(unsafe { shoal::shoal_client_ping(client) }))
            .await
    }

    /// Reads a key (`Ok(None)`: a miss).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Got>, OpError> {
        self.blocking(move |client| {
            let mut value: *mut shoal_value = ptr::null_mut();
            // SAFETY: a live client (held by the Arc); `key` valid for its length; `value`
            // valid for writing one pointer.
            let r = unsafe { shoal::shoal_client_get(client, key.as_ptr(), key.len(), &mut value) };
            match r {
                shoal_result::Ok => {
                    // SAFETY: OK means `value` is a live value owned by us; its data pointer
                    // is valid for its length until it is freed, after the copy.
                    let got = unsafe {
                        let data = shoal::shoal_value_data(value);
                        let len = shoal::shoal_value_len(value);
                        let bytes = if data.is_null() || len == 0 {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(data, len).to_vec()
                        };
                        let hash = shoal::shoal_value_hash(value);
                        shoal::shoal_value_free(value);
                        Got { value: bytes, hash }
                    };
                    Ok(Some(got))
                }
                shoal_result::NotFound => Ok(None),
                other => Err(op_error(other)),
            }
        })
        .await
    }

    /// Stores a value (`ttl` in seconds, 0 = none).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn set(&self, key: Vec<u8>, value: Vec<u8>, ttl: u32) -> Result<(), OpError> {
        self.blocking(move |client| {
            let mut hash = 0u64;
            // SAFETY: live client; key and value valid for their lengths; `hash` writable.
            check(unsafe {
                shoal::shoal_client_set(
                    client,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                    ttl,
                    0,
                    &mut hash,
                )
            })
        })
        .await
    }

    /// Stores a value if the key is absent (`ttl` in seconds, 0 = none).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn add(&self, key: Vec<u8>, value: Vec<u8>, ttl: u32) -> Result<(), OpError> {
        self.blocking(move |client| {
            let mut hash = 0u64;
            // SAFETY: as in `set`.
            check(unsafe {
                shoal::shoal_client_add(
                    client,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                    ttl,
                    0,
                    &mut hash,
                )
            })
        })
        .await
    }

    /// Check-and-set against `expected` (`ttl` in seconds, 0 = none).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn cas(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        expected: u64,
        ttl: u32,
    ) -> Result<(), OpError> {
        self.blocking(move |client| {
            let mut hash = 0u64;
            // SAFETY: as in `set`.
            check(unsafe {
                shoal::shoal_client_cas(
                    client,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                    expected,
                    ttl,
                    0,
                    &mut hash,
                )
            })
        })
        .await
    }

    /// Deletes a key: `true` when deleted, `false` when it was not there (`NOT_FOUND`).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn delete(&self, key: Vec<u8>) -> Result<bool, OpError> {
        self.blocking(move |client| {
            // SAFETY: a live client (held by the Arc); `key` valid for its length.
            let r = unsafe { shoal::shoal_client_delete(client, key.as_ptr(), key.len()) };
            found(r)
        })
        .await
    }

    /// Sets a key's time to live: `true` when touched, `false` when not found.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn touch(&self, key: Vec<u8>, ttl: u32) -> Result<bool, OpError> {
        self.blocking(move |client| {
            // SAFETY: a live client (held by the Arc); `key` valid for its length.
            let r = unsafe { shoal::shoal_client_touch(client, key.as_ptr(), key.len(), ttl) };
            found(r)
        })
        .await
    }

    /// libshoal's routing counters (`shoal_client_routing_stats`; zeros if it refuses).
    pub fn routing_stats(&self) -> RoutingStats {
        let (mut redirects, mut table_fetches) = (0u64, 0u64);
        // SAFETY: a live client (held by `self`); both out-pointers valid for one `u64`. The
        // call does no I/O, so it runs on the caller's thread.
        let r = unsafe {
            shoal::shoal_client_routing_stats(self.handle.0, &mut redirects, &mut table_fetches)
        };
        if r != shoal_result::Ok {
            return RoutingStats::default();
        }
        RoutingStats {
            redirects,
            table_fetches,
        }
    }
}

/// OK as `true`, `NOT_FOUND` as `false`, anything else as an error.
fn found(result: shoal_result) -> Result<bool, OpError> {
    match result {
        shoal_result::Ok => Ok(true),
        shoal_result::NotFound => Ok(false),
        other => Err(op_error(other)),
    }
}
