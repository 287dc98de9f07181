//! Decode errors: why a byte stream is not a valid frame.

use crate::status::Status;
use std::fmt;

/// What was wrong with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The first byte is not [`crate::MAGIC`].
    BadMagic,
    /// The header carries a protocol version this side does not speak.
    UnsupportedVersion,
    /// A reserved header bit or field is not zero.
    ReservedBitsSet,
    /// A reply frame arrived where requests are expected, or a request where replies are.
    WrongDirection,
    /// A request header carries a non-zero status.
    StatusInRequest,
    /// The declared body length exceeds `max_frame`.
    FrameTooLarge,
    /// The opcode is not in the opcode table (or not valid in this direction).
    UnknownOpcode,
    /// The reply status is not in the status table.
    UnknownStatus,
    /// A key of zero bytes.
    EmptyKey,
    /// A key longer than `max_key`.
    KeyTooLong,
    /// A value longer than `max_value`.
    ValueTooLarge,
    /// A multi-get with more than `max_batch` keys, or with none.
    BadBatchSize,
    /// A field runs past the end of the body.
    Truncated,
    /// The body holds bytes after its last field.
    TrailingBytes,
    /// A field holds a value outside its defined range (a tag other than 0 or 1, say).
    BadField,
}

impl DecodeErrorKind {
    /// A short, static description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMagic => "bad magic byte",
            Self::UnsupportedVersion => "unsupported protocol version",
            Self::ReservedBitsSet => "reserved header bits set",
            Self::WrongDirection => "frame sent in the wrong direction",
            Self::StatusInRequest => "status set in a request",
            Self::FrameTooLarge => "frame larger than the limit",
            Self::UnknownOpcode => "unknown opcode",
            Self::UnknownStatus => "unknown status code",
            Self::EmptyKey => "empty key",
            Self::KeyTooLong => "key longer than the limit",
            Self::ValueTooLarge => "value larger than the limit",
            Self::BadBatchSize => "multi-get key count out of range",
            Self::Truncated => "field runs past the end of the frame",
            Self::TrailingBytes => "bytes after the last field",
            Self::BadField => "field value out of range",
        }
    }

    /// The reply status that reports this error to the peer.
    pub fn status(self) -> Status {
        match self {
            Self::UnsupportedVersion => Status::UnsupportedVersion,
            Self::FrameTooLarge | Self::ValueTooLarge => Status::ValueTooLarge,
            Self::KeyTooLong => Status::KeyTooLong,
            Self::UnknownOpcode => Status::UnknownCommand,
            _ => Status::BadRequest,
        }
    }
}

/// A frame that cannot be decoded.
///
/// `request_id` and `opcode` are set when the header could be read, so the error can be
/// answered with the request's id. `skip` is set when the frame was well delimited (its whole
/// body is present and its length is within limits): the stream may then go on after `skip`
/// bytes. When `skip` is `None` the stream is corrupt and the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The request id from the header, when the header was readable.
    pub request_id: Option<u32>,
    /// The raw opcode byte from the header, when the header was readable.
    pub opcode: Option<u8>,
    /// Length of the whole frame when the stream can continue after it.
    pub skip: Option<usize>,
}

impl DecodeError {
    pub(crate) fn fatal(kind: DecodeErrorKind) -> Self {
        Self {
            kind,
            request_id: None,
            opcode: None,
            skip: None,
        }
    }

    /// Whether the stream can go on after this frame.
    pub fn is_recoverable(&self) -> bool {
        self.skip.is_some()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())
    }
}

impl std::error::Error for DecodeError {}
