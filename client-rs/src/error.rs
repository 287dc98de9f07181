//! The client's error type: what a call can tell its caller about a request that did not
//! succeed, sorted by what the client *knows* about the request's fate.
//!
//! | variant             | reached the server? | applied?            | retried by the client          |
//! |---------------------|---------------------|---------------------|--------------------------------|
//! | [`Error::Server`]   | yes                 | no (server decided) | only transient statuses        |
//! | [`Error::NotMyBucket`] | yes              | no                  | once, to the owner named       |
//! | [`Error::Connection`] | no                | no                  | yes, within the deadline       |
//! | [`Error::Timeout`]  | no                  | no                  | no (time is up)                |
//! | [`Error::InDoubt`]  | maybe               | maybe               | only idempotent operations     |
//! | [`Error::TooLarge`], [`Error::InvalidArgument`] | no (checked locally) | no | no            |
//! | [`Error::Protocol`] | yes                 | maybe               | no                             |
//!
//! A miss is not an error: reads answer `Ok(None)`. A check-and-set conflict is
//! `Error::Server { status: Status::Exists, .. }` (see [`Error::is_conflict`]); a condition not
//! met by ADD/REPLACE/APPEND/PREPEND is `Status::NotStored`; INCR/DECR on a non-number is
//! `Status::NonNumeric`. [`Error::code`] maps every variant to a stable [`ErrorCode`], which is
//! what the C library reports.
//!
//! This module does not decide retries; `client.rs` does, using the predicates here.

use shoal_proto::{NotMyBucket, Status};
use std::fmt;
use std::sync::Arc;

/// Why a connection could not be used, or stopped working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The TCP connection could not be opened (refused, unreachable, DNS, connect timeout).
    Connect,
    /// The HELLO handshake failed (closed, junk, refused or timed out before the server agreed).
    Handshake,
    /// The server closed the connection (EOF).
    Closed,
    /// Reading or writing the socket failed (reset, broken pipe, ...).
    Io,
    /// The server said GOODBYE.
    Goodbye,
    /// The server sent a NOTICE that it is stopping (SHUTTING_DOWN) or overloaded (BUSY).
    ShuttingDown,
    /// No reply to this request within its timeout.
    Timeout,
    /// The server did not answer a keepalive PING; the connection was given up.
    Unresponsive,
    /// The server sent bytes that are not a valid frame; the stream cannot be trusted.
    Protocol,
    /// The client itself was closed.
    ClientClosed,
}

impl FailureKind {
    /// A short, static description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect failed",
            Self::Handshake => "handshake failed",
            Self::Closed => "connection closed by the server",
            Self::Io => "connection i/o error",
            Self::Goodbye => "server said goodbye",
            Self::ShuttingDown => "server is shutting down",
            Self::Timeout => "no reply in time",
            Self::Unresponsive => "server stopped answering",
            Self::Protocol => "server sent an invalid frame",
            Self::ClientClosed => "client closed",
        }
    }
}

/// A connection failure: what happened, to which server, and details for logs.
///
/// Cheap to clone (one failure is handed to every request pending on the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    kind: FailureKind,
    addr: Arc<str>,
    detail: Arc<str>,
}

impl Failure {
    /// A failure of `kind` on the connection to `addr`.
    pub fn new(kind: FailureKind, addr: &str, detail: impl fmt::Display) -> Self {
        Self {
            kind,
            addr: Arc::from(addr),
            detail: Arc::from(detail.to_string()),
        }
    }

    /// What happened.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The server address (`host:port`) the connection was to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Free-form details (the I/O error text, the decode error, ...).
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind.as_str(), self.addr)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Which client-side limit an argument broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// The key is longer than `max_key`.
    Key,
    /// The value is longer than `max_value`.
    Value,
}

/// A `NOT_MY_BUCKET` answer: the server does not serve the key's bucket, and says where it
/// is served by its applied table. The request was not applied, so it may be sent again to the
/// owner whatever it was (CAS and INCR included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// The key's bucket.
    pub bucket: u32,
    /// The bucket's epoch in the server's table (0: never assigned); newer epochs win.
    pub epoch: u64,
    /// The owner's node id, if the bucket has an owner.
    pub owner: Option<[u8; 16]>,
    /// The owner's native address (`host:port`), if the bucket has an owner.
    pub owner_addr: Option<String>,
}

impl From<NotMyBucket<'_>> for Redirect {
    fn from(r: NotMyBucket<'_>) -> Redirect {
        Redirect {
            bucket: r.bucket,
            epoch: r.epoch,
            owner: r.owner_id(),
            owner_addr: r.owner_addr().map(str::to_owned),
        }
    }
}

impl fmt::Display for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner_addr {
            Some(addr) => write!(
                f,
                "bucket {} is served at {addr} (epoch {})",
                self.bucket, self.epoch
            ),
            None => write!(
                f,
                "bucket {} has no owner (epoch {})",
                self.bucket, self.epoch
            ),
        }
    }
}

/// Everything a call can fail with. See the module documentation for what each variant says
/// about the request's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-OK status: a definite outcome, nothing was applied.
    /// `Exists` is a check-and-set conflict, `NotStored` an unmet ADD/REPLACE/APPEND/PREPEND
    /// condition, `NonNumeric` a counter on a non-number, `NotFound` a condition on a missing key
    /// (CAS, conditional delete, APPEND/PREPEND report `NotStored` instead).
    Server {
        /// The status from the reply.
        status: Status,
        /// The server's message (possibly empty).
        message: String,
    },
    /// The server does not serve the key's bucket (after the client followed one redirect,
    /// or when the bucket has no owner): where it is served. Nothing was applied.
    NotMyBucket(Redirect),
    /// The request was not sent: no connection could be used. Safe to retry; the client has
    /// already retried within the call's deadline.
    Connection(Failure),
    /// The request was sent (or partly sent) and no reply came before the connection failed or
    /// the request timed out. It may or may not have been applied.
    InDoubt(Failure),
    /// The deadline passed before the request could be sent. Nothing was applied.
    Timeout,
    /// A key or value is larger than the client's limits; checked before touching the network.
    TooLarge {
        /// Which limit.
        what: LimitKind,
        /// The argument's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An argument the server would refuse (an empty key, say); checked locally.
    InvalidArgument(&'static str),
    /// The server's reply to this request was well framed but made no sense (wrong opcode,
    /// wrong body). The request reached the server: treat a write as in doubt.
    Protocol(String),
}

/// A stable, numbered result code for every outcome: the C library returns these numbers.
/// Numbers are never changed or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// The key does not exist (a miss, or a condition on a missing key).
    NotFound = 1,
    /// Check-and-set conflict: the stored value's hash differs.
    Exists = 2,
    /// ADD/REPLACE/APPEND/PREPEND condition not met.
    NotStored = 3,
    /// A key or value over the limits (client- or server-side).
    TooLarge = 4,
    /// The deadline passed before the request was sent.
    Timeout = 5,
    /// Not sent: no usable connection.
    Connection = 6,
    /// Sent, no reply: may or may not have been applied.
    InDoubt = 7,
    /// The server sent something the client cannot understand.
    Protocol = 8,
    /// An argument was refused locally (or the server called the request malformed).
    InvalidArgument = 9,
    /// INCR/DECR on a value that is not a decimal number.
    NonNumeric = 10,
    /// The server is paused, busy, loading or stopping: nothing was done, try later.
    Unavailable = 11,
    /// The server could not get memory for the write.
    OutOfMemory = 12,
    /// Authentication was required or failed.
    Auth = 13,
    /// Any other server-side failure.
    ServerError = 14,
}

impl Error {
    /// Whether the request may have been applied although no reply said so.
    pub fn is_in_doubt(&self) -> bool {
        matches!(
            self,
            Error::InDoubt(_)
                | Error::Server {
                    status: Status::InDoubt,
                    ..
                }
        )
    }

    /// Whether the request certainly was not applied and trying again may succeed
    /// (connection failures, timeouts before sending, transient server statuses).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection(_) | Error::Timeout | Error::NotMyBucket(_) => true,
            Error::Server { status, .. } => status.is_transient(),
            _ => false,
        }
    }

    /// Whether this is a check-and-set conflict (`EXISTS`).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(Status::Exists)
    }

    /// The server's status, for [`Error::Server`] and [`Error::NotMyBucket`].
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Server { status, .. } => Some(*status),
            Error::NotMyBucket(_) => Some(Status::NotMyBucket),
            _ => None,
        }
    }

    /// The connection failure behind [`Error::Connection`] or [`Error::InDoubt`].
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Error::Connection(f) | Error::InDoubt(f) => Some(f),
            _ => None,
        }
    }

    /// The stable result code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Server { status, .. } => match status {
                Status::Ok => ErrorCode::Ok,
                Status::NotFound => ErrorCode::NotFound,
                Status::Exists => ErrorCode::Exists,
                Status::NotStored => ErrorCode::NotStored,
                Status::ValueTooLarge | Status::KeyTooLong => ErrorCode::TooLarge,
                Status::BadRequest | Status::UnknownCommand => ErrorCode::InvalidArgument,
                Status::NonNumeric => ErrorCode::NonNumeric,
                Status::Paused
                | Status::ShuttingDown
                | Status::Busy
                | Status::Loading
                | Status::NotReady
                | Status::NoLease
                | Status::NotMyBucket => ErrorCode::Unavailable,
                Status::InDoubt => ErrorCode::InDoubt,
                Status::OutOfMemory => ErrorCode::OutOfMemory,
                Status::AuthRequired | Status::AuthFailed => ErrorCode::Auth,
                // WRONG_CLUSTER and WRONG_NODE are peer-port statuses; a client never sees them.
                Status::ServerError
                | Status::UnsupportedVersion
                | Status::HelloRequired
                | Status::WrongCluster
                | Status::WrongNode => ErrorCode::ServerError,
                // Only ever sent in a notice, never as a reply.
                Status::TableChanged => ErrorCode::Protocol,
            },
            Error::NotMyBucket(_) => ErrorCode::Unavailable,
            Error::Connection(_) => ErrorCode::Connection,
            Error::InDoubt(_) => ErrorCode::InDoubt,
            Error::Timeout => ErrorCode::Timeout,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Protocol(_) => ErrorCode::Protocol,
        }
    }

    pub(crate) fn server(status: Status, message: &[u8]) -> Self {
        Error::Server {
            status,
            message: String::from_utf8_lossy(message).into_owned(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Server { status, message } if message.is_empty() => {
                write!(f, "server answered {}", status.name())
            }
            Error::Server { status, message } => {
                write!(f, "server answered {}: {message}", status.name())
            }
            Error::NotMyBucket(r) => write!(f, "server answered NOT_MY_BUCKET: {r}"),
            Error::Connection(failure) => write!(f, "not sent: {failure}"),
            Error::InDoubt(failure) => write!(f, "in doubt (sent, no reply): {failure}"),
            Error::Timeout => f.write_str("deadline passed before the request was sent"),
            Error::TooLarge { what, len, max } => {
                let what = match what {
                    LimitKind::Key => "key",
                    LimitKind::Value => "value",
                };
                write!(f, "{what} of {len} bytes is over the limit of {max} bytes")
            }
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_to_a_code() {
        for &(n, _) in shoal_proto::STATUSES {
            let status = Status::from_u16(n).unwrap();
            let _ = Error::server(status, b"").code();
        }
        assert_eq!(Error::server(Status::Exists, b"").code(), ErrorCode::Exists);
        assert!(Error::server(Status::Exists, b"").is_conflict());
    }

    #[test]
    fn display_says_what_is_known() {
        let f = Failure::new(FailureKind::Closed, "127.0.0.1:1", "eof");
        assert!(Error::InDoubt(f.clone()).to_string().contains("in doubt"));
        assert!(Error::Connection(f).to_string().contains("not sent"));
        assert!(Error::InDoubt(Failure::new(FailureKind::Timeout, "a:1", "")).is_in_doubt());
    }
}
