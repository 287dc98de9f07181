//! `shoal_options`: the settings a client is created from (seed servers, timeouts, reconnect
//! backoff, limits, name). A thin, checked wrapper over [`shoal_client::ClientBuilder`]; each
//! setter refuses a bad value at once so the error points at the right call. It does not
//! create or connect clients (`client.rs` does).

use crate::ffi::{ffi_boundary, free_box, str_arg, to_boxed_ptr, try_mut, Castable, Fail, Out};
use crate::result::shoal_result;
use shoal_client::{ClientBuilder, Limits};
use std::ffi::c_char;
use std::time::Duration;

/// Default time to open a connection and finish the handshake, in milliseconds.
pub const SHOAL_DEFAULT_CONNECT_TIMEOUT_MS: u32 = 1_000;
/// Default time to wait for one reply, in milliseconds.
pub const SHOAL_DEFAULT_REQUEST_TIMEOUT_MS: u32 = 2_000;
/// Default deadline of one call, reconnects and retries included, in milliseconds.
pub const SHOAL_DEFAULT_DEADLINE_MS: u32 = 5_000;
/// Default number of connections a client opens to each server.
///
/// One, unlike the Rust client's default of two: every request is pipelined on it, and when
/// the server goes away the call in flight discovers it and retires the connection, so the
/// next call reconnects. With several connections, a call may be sent on a sibling
/// connection whose loss has not been noticed yet, costing one more call.
pub const SHOAL_DEFAULT_CONNECTIONS_PER_SERVER: u32 = 1;
/// Default largest value, in bytes (1 MiB, the server's default).
pub const SHOAL_DEFAULT_MAX_VALUE_SIZE: usize = 1_048_576;

/// Settings for creating a client. Create with `shoal_options_new`, set what differs from
/// the defaults, pass to `shoal_client_new` (which copies it), free with `shoal_options_free`.
///
/// Thread safety: an options object may be read by several threads at once
/// (`shoal_client_new`), but a setter must not run at the same time as any other use of it.
#[allow(non_camel_case_types)]
pub struct shoal_options {
    _private: [u8; 0],
}

impl Castable for shoal_options {
    type RustType = Options;
}

/// What a `shoal_options` points to.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) builder: ClientBuilder,
    /// Whether at least one seed was added (the builder does not say).
    pub(crate) has_seed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            builder: ClientBuilder::new()
                .client_name("libshoal")
                .connections_per_node(SHOAL_DEFAULT_CONNECTIONS_PER_SERVER as usize),
            has_seed: false,
        }
    }
}

impl Options {
    fn update(&mut self, f: impl FnOnce(ClientBuilder) -> ClientBuilder) {
        self.builder = f(std::mem::take(&mut self.builder));
    }
}

/// Runs a setter body against the options behind `options`.
macro_rules! setter {
    ($options:expr, |$o:ident| $body:block) => {
        ffi_boundary! {
            let $o: &mut Options = try_mut!($options);
            // A closure so that `?` and `return` in the body end the body, not the function.
            #[allow(clippy::redundant_closure_call)]
            let outcome: Result<(), Fail> = (|| $body)();
            match outcome {
                Ok(()) => shoal_result::Ok,
                Err(fail) => fail.code,
            }
        }
    };
}

fn millis(ms: u32) -> Result<Duration, Fail> {
    if ms == 0 {
        return Err(Fail::invalid("a timeout of 0 ms"));
    }
    Ok(Duration::from_millis(u64::from(ms)))
}

/// Creates options holding the defaults (no seeds yet) and writes them to `*out`.
///
/// Ownership: the caller owns the new options and must free them with `shoal_options_free`.
///
/// Returns `SHOAL_RESULT_OK`, or `SHOAL_RESULT_NULL_PARAMETER` if `out` is NULL (nothing is
/// written on error).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_new(out: *mut *mut shoal_options) -> shoal_result {
    ffi_boundary! {
        // SAFETY: this function's contract on `out`.
        let out = match unsafe { Out::required(out, "out") } {
            Ok(out) => out,
            Err(fail) => return fail.code,
        };
        out.write(to_boxed_ptr::<shoal_options>(Options::default()));
        shoal_result::Ok
    }
}

/// Frees options made by `shoal_options_new`. Passing NULL is fine (nothing happens). Must not
/// be called twice for the same options. Clients already created from them are not affected.
///
/// # Safety
/// `options` is NULL or a live pointer from `shoal_options_new`, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_free(options: *mut shoal_options) {
    ffi_boundary! {
        // SAFETY: this function's contract: NULL or live, freed only here, not in use.
        unsafe { free_box(options) }
    }
}

/// Adds seed servers: one `"host:port"` address, or several separated by commas
/// (`"10.0.0.1:7400,10.0.0.2:7400"`). Seeds are tried in turn when (re)connecting. The string
/// is copied. For a cluster one seed (any member) is enough: the client learns every node
/// from it; more seeds only help when some are down when the client starts.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if an argument is NULL;
/// `SHOAL_RESULT_INVALID_ARGUMENT` if the string is not UTF-8 or an address is empty or has no
/// `:port`. Nothing is added on error.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call; `addresses` is
/// NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_add_seed(
    options: *mut shoal_options,
    addresses: *const c_char,
) -> shoal_result {
    setter!(options, |o| {
        // SAFETY: this function's contract on `addresses`.
        let text = unsafe { str_arg(addresses, "addresses") }?;
        let list: Vec<&str> = text.split(',').map(str::trim).collect();
        for addr in &list {
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(Fail::invalid("a seed address is not host:port")),
            }
        }
        o.update(|b| b.seeds(list.iter().map(|s| s.to_string())));
        o.has_seed = true;
        Ok(())
    })
}

/// Sets the time allowed to open a connection and finish the handshake, in milliseconds
/// (default `SHOAL_DEFAULT_CONNECT_TIMEOUT_MS`). Always capped by the call's deadline.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` for 0.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_connect_timeout_ms(
    options: *mut shoal_options,
    ms: u32,
) -> shoal_result {
    setter!(options, |o| {
        let d = millis(ms)?;
        o.update(|b| b.connect_timeout(d));
        Ok(())
    })
}

/// Sets the time to wait for one reply once a request is sent, in milliseconds (default
/// `SHOAL_DEFAULT_REQUEST_TIMEOUT_MS`). A request that was sent and got no reply in time
/// returns `SHOAL_RESULT_IN_DOUBT`.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` for 0.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_request_timeout_ms(
    options: *mut shoal_options,
    ms: u32,
) -> shoal_result {
    setter!(options, |o| {
        let d = millis(ms)?;
        o.update(|b| b.request_timeout(d));
        Ok(())
    })
}

/// Sets the deadline of one call, in milliseconds (default `SHOAL_DEFAULT_DEADLINE_MS`): every
/// reconnect, backoff wait and retry of the call fits inside it, and the call returns by then.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` for 0.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_deadline_ms(
    options: *mut shoal_options,
    ms: u32,
) -> shoal_result {
    setter!(options, |o| {
        let d = millis(ms)?;
        o.update(|b| b.deadline(d));
        Ok(())
    })
}

/// Sets the reconnect backoff, in milliseconds: the first wait after a failed connection is
/// about `min_ms`, doubling per consecutive failure up to `max_ms`, each with random jitter
/// (defaults 10 and 1000).
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` unless `0 < min_ms <= max_ms`.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_reconnect_backoff_ms(
    options: *mut shoal_options,
    min_ms: u32,
    max_ms: u32,
) -> shoal_result {
    setter!(options, |o| {
        if min_ms > max_ms {
            return Err(Fail::invalid("backoff minimum above maximum"));
        }
        let (min, max) = (millis(min_ms)?, millis(max_ms)?);
        o.update(|b| b.reconnect_backoff(min, max));
        Ok(())
    })
}

/// Sets the idle time after which a connection sends a PING to check the server is there, in
/// milliseconds (default 15000).
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` for 0.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_keepalive_ms(
    options: *mut shoal_options,
    ms: u32,
) -> shoal_result {
    setter!(options, |o| {
        let d = millis(ms)?;
        o.update(|b| b.keepalive(d));
        Ok(())
    })
}

/// Sets the largest value the client will send, in bytes (default
/// `SHOAL_DEFAULT_MAX_VALUE_SIZE`); it should match the servers' `--max-value-size`. Larger
/// values fail with `SHOAL_RESULT_TOO_LARGE` without network I/O.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` for a size the protocol cannot carry.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_max_value_size(
    options: *mut shoal_options,
    bytes: usize,
) -> shoal_result {
    setter!(options, |o| {
        let limits = Limits::for_value_size(bytes);
        limits.validate().map_err(Fail::invalid)?;
        o.update(|b| b.limits(limits));
        Ok(())
    })
}

/// Sets how many connections the client opens to each server (default
/// `SHOAL_DEFAULT_CONNECTIONS_PER_SERVER`, 1). Requests are spread over them; each carries
/// many requests at once. More than one can help many threads that share a client. When one
/// connection sees its server go away, the client stops using the others to that server
/// too, so a restart still costs a caller at most the call it had in flight.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` for NULL `options`;
/// `SHOAL_RESULT_INVALID_ARGUMENT` for 0 or more than 64.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_connections_per_server(
    options: *mut shoal_options,
    count: u32,
) -> shoal_result {
    setter!(options, |o| {
        if count == 0 || count > 64 {
            return Err(Fail::invalid("connections per server must be 1 to 64"));
        }
        o.update(|b| b.connections_per_node(count as usize));
        Ok(())
    })
}

/// Sets the client name sent to servers when connecting (shown in their logs). The string is
/// copied.
///
/// Returns `SHOAL_RESULT_OK`; `SHOAL_RESULT_NULL_PARAMETER` if an argument is NULL;
/// `SHOAL_RESULT_INVALID_ARGUMENT` if `name` is not UTF-8 or is over 65535 bytes.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call; `name` is NULL
/// or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shoal_options_set_client_name(
    options: *mut shoal_options,
    name: *const c_char,
) -> shoal_result {
    setter!(options, |o| {
        // SAFETY: this function's contract on `name`.
        let name = unsafe { str_arg(name, "name") }?;
        if name.len() > usize::from(u16::MAX) {
            return Err(Fail::invalid("client name over 65535 bytes"));
        }
        let name = name.to_string();
        o.update(|b| b.client_name(name));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::builder;

    #[test]
    fn documented_defaults_are_the_rust_client_defaults() {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap();
        assert_eq!(
            ms(builder::DEFAULT_CONNECT_TIMEOUT),
            SHOAL_DEFAULT_CONNECT_TIMEOUT_MS
        );
        assert_eq!(
            ms(builder::DEFAULT_REQUEST_TIMEOUT),
            SHOAL_DEFAULT_REQUEST_TIMEOUT_MS
        );
        assert_eq!(ms(builder::DEFAULT_DEADLINE), SHOAL_DEFAULT_DEADLINE_MS);
        assert_eq!(Limits::default().max_value, SHOAL_DEFAULT_MAX_VALUE_SIZE);
    }

    #[test]
    fn setters_refuse_bad_values_and_null() {
        let mut o: *mut shoal_options = std::ptr::null_mut();
        // SAFETY: `o` is a valid place for one pointer.
        assert_eq!(unsafe { shoal_options_new(&mut o) }, shoal_result::Ok);
        // SAFETY: `o` is live and used by this thread only; strings are NUL-terminated.
        unsafe {
            assert_eq!(
                shoal_options_set_deadline_ms(o, 0),
                shoal_result::InvalidArgument
            );
            assert_eq!(shoal_options_set_deadline_ms(o, 10), shoal_result::Ok);
            assert_eq!(
                shoal_options_set_reconnect_backoff_ms(o, 20, 10),
                shoal_result::InvalidArgument
            );
            assert_eq!(
                shoal_options_add_seed(o, c"nohost".as_ptr()),
                shoal_result::InvalidArgument
            );
            assert_eq!(
                shoal_options_add_seed(o, c"a:1,:2".as_ptr()),
                shoal_result::InvalidArgument
            );
            assert_eq!(
                shoal_options_add_seed(o, c"a:1, b:2".as_ptr()),
                shoal_result::Ok
            );
            assert_eq!(
                shoal_options_add_seed(o, std::ptr::null()),
                shoal_result::NullParameter
            );
            assert_eq!(
                shoal_options_set_deadline_ms(std::ptr::null_mut(), 5),
                shoal_result::NullParameter
            );
            assert_eq!(shoal_options_set_max_value_size(o, 0), shoal_result::Ok);
            shoal_options_free(o);
            shoal_options_free(std::ptr::null_mut());
        }
    }
}
