//! Frame encoding: a writer that appends one frame to an output buffer and fills in the body
//! length when it is dropped, so a frame can never be left with a wrong length.
//!
//! Encoding cannot fail. Servers append replies for a whole pipelined batch to one buffer and
//! write it once.

use crate::field;
use crate::header::{Header, FLAG_REPLY, HEADER_LEN};
use crate::opcode::Opcode;
use crate::status::Status;

/// Appends one frame to a buffer; the body length is patched in on drop.
#[derive(Debug)]
pub struct FrameWriter<'a> {
    dst: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> FrameWriter<'a> {
    /// Starts a request frame.
    pub fn request(dst: &'a mut Vec<u8>, opcode: Opcode, request_id: u32) -> Self {
        Self::start(dst, opcode, 0, Status::Ok, request_id)
    }

    /// Starts a reply frame (or a server notice).
    pub fn reply(dst: &'a mut Vec<u8>, opcode: Opcode, status: Status, request_id: u32) -> Self {
        Self::start(dst, opcode, FLAG_REPLY, status, request_id)
    }

    /// Starts a reply whose opcode is only known as a raw byte (answering an unknown opcode).
    pub fn reply_raw(dst: &'a mut Vec<u8>, opcode: u8, status: Status, request_id: u32) -> Self {
        let start = dst.len();
        Header {
            opcode,
            flags: FLAG_REPLY,
            status: status as u16,
            request_id,
            body_len: 0,
        }
        .encode(dst);
        Self { dst, start }
    }

    fn start(
        dst: &'a mut Vec<u8>,
        opcode: Opcode,
        flags: u8,
        status: Status,
        request_id: u32,
    ) -> Self {
        let start = dst.len();
        Header {
            opcode: opcode as u8,
            flags,
            status: status as u16,
            request_id,
            body_len: 0,
        }
        .encode(dst);
        Self { dst, start }
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.dst.push(v);
        self
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.dst.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.dst.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.dst.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a key with its `u16` length prefix.
    pub fn key(&mut self, key: &[u8]) -> &mut Self {
        field::put_key(self.dst, key);
        self
    }

    /// Appends a short string with its `u16` length prefix.
    pub fn short(&mut self, s: &[u8]) -> &mut Self {
        field::put_short(self.dst, s);
        self
    }

    /// Appends a value with its `u32` length prefix.
    pub fn value(&mut self, v: &[u8]) -> &mut Self {
        field::put_value(self.dst, v);
        self
    }

    /// Appends a value's `u32` length prefix only; the caller then appends exactly `len` bytes
    /// with [`FrameWriter::raw`] (for values gathered from several chunks).
    pub fn value_len(&mut self, len: u32) -> &mut Self {
        self.u32(len)
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.dst.extend_from_slice(bytes);
        self
    }

    /// The buffer the frame is written into, for callers that fill a value in place.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.dst
    }

    /// Bytes of body written so far.
    pub fn body_len(&self) -> usize {
        self.dst.len() - self.start - HEADER_LEN
    }

    /// Drops everything this writer appended (used when a reply turns out too large and an
    /// error reply replaces it).
    pub fn discard(self) {
        self.dst.truncate(self.start);
        std::mem::forget(self);
    }
}

impl Drop for FrameWriter<'_> {
    fn drop(&mut self) {
        let len = u32::try_from(self.body_len()).unwrap_or(u32::MAX);
        let at = self.start + 12;
        self.dst[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}
