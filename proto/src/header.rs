//! The fixed 16-byte frame header.
//!
//! ```text
//!  0       1       2       3       4               6               8                              12                             16
//!  +-------+-------+-------+-------+---------------+---------------+------------------------------+------------------------------+
//!  | magic |version|opcode | flags |    status     |   reserved    |          request id          |         body length          |
//!  +-------+-------+-------+-------+---------------+---------------+------------------------------+------------------------------+
//! ```
//! Every multi-byte integer is big-endian.

use crate::error::{DecodeError, DecodeErrorKind};
use crate::limits::Limits;
use crate::{MAGIC, PROTOCOL_VERSION};

/// Size of the frame header, in bytes.
pub const HEADER_LEN: usize = 16;
/// Flag bit: this frame is a reply (or a server notice), not a request.
pub const FLAG_REPLY: u8 = 0x01;
/// Flag bits that are defined; any other bit set is an error.
pub const KNOWN_FLAGS: u8 = FLAG_REPLY;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Raw opcode byte (checked against the opcode table by the body decoder).
    pub opcode: u8,
    /// Flag bits.
    pub flags: u8,
    /// Raw status (zero in requests).
    pub status: u16,
    /// The id the reply echoes.
    pub request_id: u32,
    /// Length of the body that follows the header.
    pub body_len: u32,
}

impl Header {
    /// Whether the reply flag is set.
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    /// Appends the encoded header to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.push(MAGIC);
        dst.push(PROTOCOL_VERSION);
        dst.push(self.opcode);
        dst.push(self.flags);
        dst.extend_from_slice(&self.status.to_be_bytes());
        dst.extend_from_slice(&[0, 0]);
        dst.extend_from_slice(&self.request_id.to_be_bytes());
        dst.extend_from_slice(&self.body_len.to_be_bytes());
    }

    /// Reads a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when fewer than [`HEADER_LEN`] bytes are present. Checks the magic,
    /// the version, the reserved bits and the body length against `limits.max_frame`, so a
    /// frame too large is refused before its body is awaited.
    ///
    /// # Errors
    /// A fatal [`DecodeError`] (the stream cannot continue), with the request id and opcode
    /// filled in when they were readable.
    pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<Header>, DecodeError> {
        if let Some(&first) = buf.first() {
            if first != MAGIC {
                return Err(DecodeError::fatal(DecodeErrorKind::BadMagic));
            }
        }
        let Some(raw) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header = Header {
            opcode: raw[2],
            flags: raw[3],
            status: u16::from_be_bytes([raw[4], raw[5]]),
            request_id: u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]),
            body_len: u32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]),
        };
        let fail = |kind| DecodeError {
            kind,
            request_id: Some(header.request_id),
            opcode: Some(header.opcode),
            skip: None,
        };
        if raw[1] != PROTOCOL_VERSION {
            return Err(fail(DecodeErrorKind::UnsupportedVersion));
        }
        if header.flags & !KNOWN_FLAGS != 0 || raw[6] != 0 || raw[7] != 0 {
            return Err(fail(DecodeErrorKind::ReservedBitsSet));
        }
        // Compare in u64 so no platform's usize can truncate the declared length.
        if u64::from(header.body_len) > limits.max_frame as u64 {
            return Err(fail(DecodeErrorKind::FrameTooLarge));
        }
        Ok(Some(header))
    }
}
