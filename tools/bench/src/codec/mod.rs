//! Wire codecs of the load generator: one small I/O-free module per protocol.
//!
//! A codec turns an operation into request bytes ([`Codec::encode`]) and recognises one
//! complete reply at the start of a buffer ([`Codec::decode`]). It owns no socket and no
//! buffer: the driver (`driver.rs`) appends requests to its output buffer, remembers what it
//! sent in order, and asks the codec to decode the reply it expects next. Every protocol here
//! answers in request order on one connection (the native protocol's request ids are checked).
//!
//! The codecs only understand the replies the generator provokes (get, set, the handshake and
//! the item count); anything else is a [`ProtocolError`], which ends the run.

pub mod memcache;
pub mod native;
pub mod resp;

/// One request the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Read a key.
    Get {
        /// The key.
        key: &'a [u8],
    },
    /// Store a value under a key (no expiry, flags 0).
    Set {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Ask how many items the server holds.
    Items,
}

/// What the reply being decoded answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The connection handshake (native HELLO).
    Hello,
    /// A get.
    Get,
    /// A set.
    Set,
    /// An item-count query.
    Items,
}

/// What a reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A get found its key.
    Hit,
    /// A get found nothing.
    Miss,
    /// A set was stored.
    Stored,
    /// The handshake was accepted.
    Ready,
    /// The server holds this many items.
    Items(u64),
    /// The server answered with an error (counted, the run goes on).
    Error,
}

/// A reply the codec cannot make sense of; the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// A [`ProtocolError`] for an unexpected reply line of `protocol`, showing its first 80
/// characters.
pub(crate) fn bad(protocol: &str, what: &str, line: &[u8]) -> ProtocolError {
    let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
    ProtocolError(format!("{protocol}: {what}: {shown:?}"))
}

/// The protocols the generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// memcached text protocol (memcached, shoald `--memcache-listen`).
    Memcache,
    /// RESP2 (redis-server).
    Resp,
    /// Shoal's native binary protocol (shoald `--listen`).
    Native,
}

/// One complete reply: what it said and how many bytes it took.
pub type Decoded = Option<(Outcome, usize)>;

/// A protocol codec. Stateless: the native request id is passed in by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    protocol: Protocol,
}

impl Codec {
    /// A codec for `protocol`.
    pub fn new(protocol: Protocol) -> Codec {
        Codec { protocol }
    }

    /// Appends the handshake that must open a connection, if the protocol has one; returns
    /// whether a reply of kind [`Kind::Hello`] must be awaited.
    pub fn hello(&self, out: &mut Vec<u8>) -> bool {
        match self.protocol {
            Protocol::Native => {
                native::encode_hello(out);
                true
            }
            Protocol::Memcache | Protocol::Resp => false,
        }
    }

    /// Appends the request for `op` (with request id `id` where the protocol has ids).
    pub fn encode(&self, op: &Op<'_>, id: u32, out: &mut Vec<u8>) {
        match self.protocol {
            Protocol::Memcache => memcache::encode(op, out),
            Protocol::Resp => resp::encode(op, out),
            Protocol::Native => native::encode(op, id, out),
        }
    }

    /// Which request the reply at the start of `input` answers.
    pub fn reply_id(&self, input: &[u8]) -> ReplyId {
        match self.protocol {
            Protocol::Memcache | Protocol::Resp => ReplyId::InOrder,
            Protocol::Native => native::reply_id(input),
        }
    }

    /// Decodes the reply to a request of kind `kind` (and id `id`) at the start of `input`.
    /// `Ok(None)`: more bytes are needed.
    ///
    /// # Errors
    /// A reply that is malformed or does not answer `kind`.
    pub fn decode(&self, input: &[u8], kind: Kind, id: u32) -> Result<Decoded, ProtocolError> {
        match self.protocol {
            Protocol::Memcache => memcache::decode(input, kind),
            Protocol::Resp => resp::decode(input, kind),
            Protocol::Native => native::decode(input, kind, id),
        }
    }
}

/// Which request a reply answers ([`Codec::reply_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyId {
    /// The oldest one in flight (replies come in request order).
    InOrder,
    /// The one with this request id.
    Id(u32),
    /// Not known until more of the reply arrived.
    Incomplete,
}

/// Position of the first `\r\n` in `buf`, if any.
pub(crate) fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

/// Parses an unsigned decimal number.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_crlf_skips_lone_cr() {
        assert_eq!(find_crlf(b"ab\rc\r\n"), Some(4));
        assert_eq!(find_crlf(b"abc\r"), None);
        assert_eq!(find_crlf(b""), None);
        assert_eq!(find_crlf(b"\r\n"), Some(0));
    }

    #[test]
    fn parse_u64_accepts_digits_only() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(parse_u64(b"-1"), None);
    }
}
