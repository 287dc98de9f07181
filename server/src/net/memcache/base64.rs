//! Base64 for the meta protocol's binary keys (`b` flag), decoding exactly as memcached 1.6
//! does (its `base64.c`): bytes outside the alphabet are skipped, the remaining characters
//! must be a non-zero multiple of four, and decoding stops after the first padded block.

/// The standard alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Marks a byte outside the alphabet in [`decode_table`].
const SKIP: u8 = 0x80;

/// The value of each byte (`=` is 0, others outside the alphabet [`SKIP`]).
const fn decode_table() -> [u8; 256] {
    let mut t = [SKIP; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t[b'=' as usize] = 0;
    t
}

const TABLE: [u8; 256] = decode_table();

/// Decodes `src` into `out`, returning the decoded length; `None` when memcached's decoder
/// would fail (no or a partial block, bad padding, or more than `out.len()` bytes).
pub fn decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    let count = src
        .iter()
        .filter(|&&b| TABLE[usize::from(b)] != SKIP)
        .count();
    if count == 0 || count % 4 != 0 || count / 4 * 3 > out.len() {
        return None;
    }
    let (mut pos, mut n, mut pad) = (0usize, 0usize, 0usize);
    let mut block = [0u8; 4];
    for &b in src {
        let v = TABLE[usize::from(b)];
        if v == SKIP {
            continue;
        }
        if b == b'=' {
            pad += 1;
        }
        block[n] = v;
        n += 1;
        if n == 4 {
            out[pos] = (block[0] << 2) | (block[1] >> 4);
            out[pos + 1] = (block[1] << 4) | (block[2] >> 2);
            out[pos + 2] = (block[2] << 6) | block[3];
            pos += 3;
            n = 0;
            if pad > 0 {
                if pad > 2 {
                    return None;
                }
                pos -= pad;
                break;
            }
        }
    }
    Some(pos)
}

/// Appends the padded base64 encoding of `src` to `out`.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    for chunk in src.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let idx = [
            b[0] >> 2,
            ((b[0] & 3) << 4) | (b[1] >> 4),
            ((b[1] & 15) << 2) | (b[2] >> 6),
            b[2] & 63,
        ];
        for (i, &x) in idx.iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[usize::from(x)]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Option<Vec<u8>> {
        let mut out = [0u8; 64];
        decode(s, &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 1..40 {
            let mut enc = Vec::new();
            encode(&data[..len], &mut enc);
            assert_eq!(dec(&enc).as_deref(), Some(&data[..len]), "{len}");
        }
        let mut enc = Vec::new();
        encode(b"foo", &mut enc);
        assert_eq!(enc, b"Zm9v");
        enc.clear();
        encode(b"fo", &mut enc);
        assert_eq!(enc, b"Zm8=");
    }

    #[test]
    fn decodes_as_memcached() {
        assert_eq!(dec(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        // Bytes outside the alphabet are skipped.
        assert_eq!(dec(b"Zm!9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(dec(b"Zm9"), None);
        assert_eq!(dec(b""), None);
        assert_eq!(dec(b"!!!!"), None);
        assert_eq!(dec(b"A==="), None);
        assert_eq!(dec(b"===="), None);
        assert_eq!(dec(b"AA==").as_deref(), Some(&[0u8][..]));
        // Decoding stops after the first padded block.
        assert_eq!(dec(b"Zm8=Zm9v").as_deref(), Some(&b"fo"[..]));
        let mut small = [0u8; 2];
        assert_eq!(decode(b"Zm9v", &mut small), None);
    }
}
