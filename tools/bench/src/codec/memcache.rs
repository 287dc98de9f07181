//! memcached text protocol: `get`, `set` and `stats` (for `curr_items`).
//!
//! ```text
//! get <key>\r\n                        -> VALUE <key> <flags> <len>\r\n<data>\r\nEND\r\n | END\r\n
//! set <key> 0 0 <len>\r\n<data>\r\n    -> STORED\r\n
//! stats\r\n                            -> STAT <name> <value>\r\n ... END\r\n
//! ```
//! `ERROR`, `CLIENT_ERROR ...` and `SERVER_ERROR ...` lines are counted as errors.

use super::{find_crlf, parse_u64, Decoded, Kind, Op, Outcome, ProtocolError};

/// Appends the request for `op`.
pub fn encode(op: &Op<'_>, out: &mut Vec<u8>) {
    match *op {
        Op::Get { key } => {
            out.extend_from_slice(b"get ");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\r\n");
        }
        Op::Set { key, value } => {
            out.extend_from_slice(b"set ");
            out.extend_from_slice(key);
            out.extend_from_slice(b" 0 0 ");
            push_decimal(out, value.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        Op::Items => out.extend_from_slice(b"stats\r\n"),
    }
}

/// Appends `n` in decimal without going through `fmt`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Decodes the reply to a request of kind `kind`.
///
/// # Errors
/// A line that is not a reply to `kind`, or a malformed `VALUE` line.
pub fn decode(input: &[u8], kind: Kind) -> Result<Decoded, ProtocolError> {
    let Some(end) = find_crlf(input) else {
        return Ok(None);
    };
    let line = &input[..end];
    let after = end + 2;
    if is_error(line) {
        return Ok(Some((Outcome::Error, after)));
    }
    match kind {
        Kind::Get => {
            if line == b"END" {
                return Ok(Some((Outcome::Miss, after)));
            }
            let len = value_len(line)?;
            // data, "\r\n", "END\r\n"
            let total = after + len + 2 + 5;
            if input.len() < total {
                return Ok(None);
            }
            if &input[after + len..total] != b"\r\nEND\r\n" {
                return Err(super::bad("memcache", "get reply not closed by END", line));
            }
            Ok(Some((Outcome::Hit, total)))
        }
        Kind::Set => match line {
            b"STORED" => Ok(Some((Outcome::Stored, after))),
            b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => Ok(Some((Outcome::Error, after))),
            _ => Err(super::bad("memcache", "unexpected set reply", line)),
        },
        Kind::Items => decode_stats(input),
        Kind::Hello => Err(ProtocolError("the text protocol has no handshake".into())),
    }
}

fn is_error(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
}

/// The data length of a `VALUE <key> <flags> <bytes> [<cas>]` line.
fn value_len(line: &[u8]) -> Result<usize, ProtocolError> {
    let mut fields = line.split(|&b| b == b' ');
    if fields.next() != Some(b"VALUE") {
        return Err(super::bad("memcache", "unexpected get reply", line));
    }
    let len = fields
        .nth(2)
        .and_then(parse_u64)
        .ok_or_else(|| super::bad("memcache", "bad VALUE line", line))?;
    usize::try_from(len).map_err(|_| super::bad("memcache", "VALUE length too large", line))
}

/// Reads a whole `stats` reply and returns `curr_items`.
fn decode_stats(input: &[u8]) -> Result<Decoded, ProtocolError> {
    let mut pos = 0;
    let mut items = None;
    loop {
        let Some(end) = find_crlf(&input[pos..]) else {
            return Ok(None);
        };
        let line = &input[pos..pos + end];
        pos += end + 2;
        if line == b"END" {
            let items =
                items.ok_or_else(|| super::bad("memcache", "stats without curr_items", b""))?;
            return Ok(Some((Outcome::Items(items), pos)));
        }
        if let Some(value) = line.strip_prefix(b"STAT curr_items ") {
            items = Some(
                parse_u64(value).ok_or_else(|| super::bad("memcache", "bad curr_items", line))?,
            );
        } else if !line.starts_with(b"STAT ") {
            return Err(super::bad("memcache", "unexpected stats line", line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(op: Op<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&op, &mut out);
        out
    }

    #[test]
    fn encodes_requests() {
        assert_eq!(encoded(Op::Get { key: b"k1" }), b"get k1\r\n");
        assert_eq!(
            encoded(Op::Set {
                key: b"k1",
                value: b"hello"
            }),
            b"set k1 0 0 5\r\nhello\r\n"
        );
        assert_eq!(encoded(Op::Items), b"stats\r\n");
    }

    #[test]
    fn push_decimal_writes_every_width() {
        for n in [0u64, 7, 10, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn decodes_hit_miss_stored() {
        let hit = b"VALUE k1 0 5\r\nhello\r\nEND\r\n";
        assert_eq!(
            decode(hit, Kind::Get).unwrap(),
            Some((Outcome::Hit, hit.len()))
        );
        assert_eq!(
            decode(b"END\r\nEND\r\n", Kind::Get).unwrap(),
            Some((Outcome::Miss, 5))
        );
        assert_eq!(
            decode(b"STORED\r\n", Kind::Set).unwrap(),
            Some((Outcome::Stored, 8))
        );
        assert_eq!(
            decode(b"SERVER_ERROR out of memory\r\n", Kind::Set).unwrap(),
            Some((Outcome::Error, 28))
        );
    }

    #[test]
    fn every_prefix_needs_more() {
        let replies: [(&[u8], Kind); 4] = [
            (b"VALUE k1 0 5\r\nhe\r\no\r\nEND\r\n", Kind::Get),
            (b"END\r\n", Kind::Get),
            (b"STORED\r\n", Kind::Set),
            (b"STAT pid 1\r\nSTAT curr_items 42\r\nEND\r\n", Kind::Items),
        ];
        for (reply, kind) in replies {
            for cut in 0..reply.len() {
                assert_eq!(decode(&reply[..cut], kind).unwrap(), None, "{cut}");
            }
            let (_, used) = decode(reply, kind).unwrap().unwrap();
            assert_eq!(used, reply.len());
        }
    }

    #[test]
    fn pipelined_replies_decode_in_turn() {
        let buf = b"VALUE a 0 1\r\nx\r\nEND\r\nSTORED\r\nEND\r\n";
        let (o1, u1) = decode(buf, Kind::Get).unwrap().unwrap();
        let (o2, u2) = decode(&buf[u1..], Kind::Set).unwrap().unwrap();
        let (o3, u3) = decode(&buf[u1 + u2..], Kind::Get).unwrap().unwrap();
        assert_eq!((o1, o2, o3), (Outcome::Hit, Outcome::Stored, Outcome::Miss));
        assert_eq!(u1 + u2 + u3, buf.len());
    }

    #[test]
    fn stats_reports_curr_items() {
        let reply = b"STAT pid 1\r\nSTAT curr_items 349504\r\nSTAT x y\r\nEND\r\n";
        assert_eq!(
            decode(reply, Kind::Items).unwrap(),
            Some((Outcome::Items(349_504), reply.len()))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"HELLO\r\n", Kind::Get).is_err());
        assert!(decode(b"VALUE k1 0\r\n", Kind::Get).is_err());
        assert!(decode(b"VALUE k1 0 1\r\nxXXXXXXX", Kind::Get).is_err());
        assert!(decode(b"WHAT\r\n", Kind::Set).is_err());
        assert!(decode(b"STAT pid 1\r\nEND\r\n", Kind::Items).is_err());
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..2000 {
            let len = rng.usize(0..40);
            let buf: Vec<u8> = (0..len)
                .map(|_| *rng.choice(b"VALUE END\r\n0123 STORED").unwrap_or(&b' '))
                .collect();
            for kind in [Kind::Get, Kind::Set, Kind::Items] {
                let _ = decode(&buf, kind);
            }
        }
    }
}
