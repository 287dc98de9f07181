//! Bounds-checked readers and writers for the fields inside a frame body.
//!
//! Every length read from the wire is checked against the bytes left and the limits before a
//! slice is taken. Nothing here allocates.

use crate::error::DecodeErrorKind;
use crate::limits::Limits;

/// Reads fields from a body slice; every read checks the bytes left.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeErrorKind> {
        if n > self.buf.len() {
            return Err(DecodeErrorKind::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeErrorKind> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeErrorKind> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeErrorKind> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeErrorKind> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A 0/1 tag.
    pub(crate) fn flag(&mut self) -> Result<bool, DecodeErrorKind> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeErrorKind::BadField),
        }
    }

    /// A key: `u16` length, 1..=`max_key` bytes.
    pub(crate) fn key(&mut self, limits: &Limits) -> Result<&'a [u8], DecodeErrorKind> {
        let len = usize::from(self.u16()?);
        if len == 0 {
            return Err(DecodeErrorKind::EmptyKey);
        }
        if len > limits.max_key {
            return Err(DecodeErrorKind::KeyTooLong);
        }
        self.take(len)
    }

    /// A value: `u32` length, at most `max_value` bytes.
    pub(crate) fn value(&mut self, limits: &Limits) -> Result<&'a [u8], DecodeErrorKind> {
        let len = self.u32()?;
        if u64::from(len) > limits.max_value as u64 {
            return Err(DecodeErrorKind::ValueTooLarge);
        }
        self.take(len as usize)
    }

    /// A short byte string: `u16` length.
    pub(crate) fn short(&mut self) -> Result<&'a [u8], DecodeErrorKind> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A byte string with a `u32` length (checked against the bytes left).
    pub(crate) fn long(&mut self) -> Result<&'a [u8], DecodeErrorKind> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeErrorKind> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeErrorKind::TrailingBytes)
        }
    }
}

/// Appends a key (`u16` length prefix). Keys longer than `u16::MAX` are a caller bug that the
/// limits prevent; the length is clamped so the frame stays well formed.
pub(crate) fn put_key(dst: &mut Vec<u8>, key: &[u8]) {
    put_short(dst, key);
}

/// Appends a short byte string (`u16` length prefix), truncated to `u16::MAX` bytes.
pub(crate) fn put_short(dst: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(usize::from(u16::MAX))];
    dst.extend_from_slice(&(s.len() as u16).to_be_bytes());
    dst.extend_from_slice(s);
}

/// Appends a value (`u32` length prefix).
pub(crate) fn put_value(dst: &mut Vec<u8>, value: &[u8]) {
    let v = &value[..value.len().min(u32::MAX as usize)];
    dst.extend_from_slice(&(v.len() as u32).to_be_bytes());
    dst.extend_from_slice(v);
}
