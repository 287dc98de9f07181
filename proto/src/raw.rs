//! Frames built field by field, valid or not, for tests and tools that must send what a
//! well-behaved encoder never would: declared lengths that lie, reserved bits, unknown
//! opcodes, truncated bodies. Well-formed requests are better built with
//! [`Request::encode`](crate::Request::encode).

use crate::{Header, Opcode};

/// A header with the given fields (magic and version correct).
pub fn header(opcode: u8, flags: u8, status: u16, request_id: u32, body_len: u32) -> Vec<u8> {
    let mut h = Vec::new();
    Header {
        opcode,
        flags,
        status,
        request_id,
        body_len,
    }
    .encode(&mut h);
    h
}

/// A request frame: a header whose body length is `body.len()`, then `body` as given.
pub fn frame(opcode: Opcode, request_id: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut f = header(opcode as u8, 0, 0, request_id, len);
    f.extend_from_slice(body);
    f
}

/// A key field: its length (u16) then its bytes.
pub fn key_field(key: &[u8]) -> Vec<u8> {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(key);
    v
}

/// A SET body (flags 0, ttl 0) whose value length field says `value_len`, followed by
/// `value` as given (so the two may disagree).
pub fn set_body(key: &[u8], value_len: u32, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0u32.to_be_bytes()); // flags
    b.extend_from_slice(&0u32.to_be_bytes()); // ttl
    b.extend_from_slice(&key_field(key));
    b.extend_from_slice(&value_len.to_be_bytes());
    b.extend_from_slice(value);
    b
}
