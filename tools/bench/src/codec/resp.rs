//! RESP2 (redis-server): `GET`, `SET` and `DBSIZE` (for the item count).
//!
//! ```text
//! *2\r\n$3\r\nGET\r\n$<n>\r\n<key>\r\n              -> $<len>\r\n<data>\r\n | $-1\r\n
//! *3\r\n$3\r\nSET\r\n$<n>\r\n<key>\r\n$<n>\r\n<v>\r\n -> +OK\r\n
//! *1\r\n$6\r\nDBSIZE\r\n                              -> :<n>\r\n
//! ```
//! `-ERR ...` replies are counted as errors.

use super::memcache::push_decimal;
use super::{find_crlf, parse_u64, Decoded, Kind, Op, Outcome, ProtocolError};

/// Appends the request for `op`.
pub fn encode(op: &Op<'_>, out: &mut Vec<u8>) {
    match *op {
        Op::Get { key } => {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            bulk(out, key);
        }
        Op::Set { key, value } => {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            bulk(out, key);
            bulk(out, value);
        }
        Op::Items => out.extend_from_slice(b"*1\r\n$6\r\nDBSIZE\r\n"),
    }
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Decodes the reply to a request of kind `kind`.
///
/// # Errors
/// A reply type that does not answer `kind`, or a malformed length.
pub fn decode(input: &[u8], kind: Kind) -> Result<Decoded, ProtocolError> {
    let Some(end) = find_crlf(input) else {
        return Ok(None);
    };
    let line = &input[..end];
    let after = end + 2;
    match (line.first(), kind) {
        (Some(b'-'), _) => Ok(Some((Outcome::Error, after))),
        (Some(b'$'), Kind::Get) => {
            if line == b"$-1" {
                return Ok(Some((Outcome::Miss, after)));
            }
            let len =
                parse_u64(&line[1..]).ok_or_else(|| super::bad("resp", "bad bulk length", line))?;
            let len =
                usize::try_from(len).map_err(|_| super::bad("resp", "bulk too large", line))?;
            let total = after + len + 2;
            if input.len() < total {
                return Ok(None);
            }
            if &input[after + len..total] != b"\r\n" {
                return Err(super::bad("resp", "bulk not closed by CRLF", line));
            }
            Ok(Some((Outcome::Hit, total)))
        }
        (Some(b'+'), Kind::Set) => Ok(Some((Outcome::Stored, after))),
        (Some(b':'), Kind::Items) => {
            let n = parse_u64(&line[1..]).ok_or_else(|| super::bad("resp", "bad integer", line))?;
            Ok(Some((Outcome::Items(n), after)))
        }
        _ => Err(super::bad("resp", "unexpected reply", line)),
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
        assert_eq!(
            encoded(Op::Get { key: b"k1" }),
            b"*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n"
        );
        assert_eq!(
            encoded(Op::Set {
                key: b"k1",
                value: b"hello"
            }),
            b"*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n"
        );
        assert_eq!(encoded(Op::Items), b"*1\r\n$6\r\nDBSIZE\r\n");
    }

    #[test]
    fn decodes_replies() {
        assert_eq!(
            decode(b"$5\r\nhello\r\n", Kind::Get).unwrap(),
            Some((Outcome::Hit, 11))
        );
        assert_eq!(
            decode(b"$-1\r\n", Kind::Get).unwrap(),
            Some((Outcome::Miss, 5))
        );
        assert_eq!(
            decode(b"+OK\r\n", Kind::Set).unwrap(),
            Some((Outcome::Stored, 5))
        );
        assert_eq!(
            decode(b":100000\r\n", Kind::Items).unwrap(),
            Some((Outcome::Items(100_000), 9))
        );
        assert_eq!(
            decode(b"-OOM command not allowed\r\n", Kind::Set).unwrap(),
            Some((Outcome::Error, 26))
        );
    }

    #[test]
    fn every_prefix_needs_more() {
        let replies: [(&[u8], Kind); 4] = [
            (b"$5\r\nhe\r\no\r\n", Kind::Get),
            (b"$-1\r\n", Kind::Get),
            (b"+OK\r\n", Kind::Set),
            (b":7\r\n", Kind::Items),
        ];
        for (reply, kind) in replies {
            for cut in 0..reply.len() {
                assert_eq!(decode(&reply[..cut], kind).unwrap(), None, "{cut}");
            }
            assert_eq!(decode(reply, kind).unwrap().unwrap().1, reply.len());
        }
    }

    #[test]
    fn pipelined_replies_decode_in_turn() {
        let buf = b"$1\r\nx\r\n+OK\r\n$-1\r\n";
        let (o1, u1) = decode(buf, Kind::Get).unwrap().unwrap();
        let (o2, u2) = decode(&buf[u1..], Kind::Set).unwrap().unwrap();
        let (o3, u3) = decode(&buf[u1 + u2..], Kind::Get).unwrap().unwrap();
        assert_eq!((o1, o2, o3), (Outcome::Hit, Outcome::Stored, Outcome::Miss));
        assert_eq!(u1 + u2 + u3, buf.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"+OK\r\n", Kind::Get).is_err());
        assert!(decode(b"$x\r\n", Kind::Get).is_err());
        assert!(decode(b"$1\r\nxYY", Kind::Get).is_err());
        assert!(decode(b"$1\r\n", Kind::Set).is_err());
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..2000 {
            let len = rng.usize(0..30);
            let buf: Vec<u8> = (0..len)
                .map(|_| *rng.choice(b"$-+:*\r\n019OK").unwrap_or(&b' '))
                .collect();
            for kind in [Kind::Get, Kind::Set, Kind::Items] {
                let _ = decode(&buf, kind);
            }
        }
    }
}
