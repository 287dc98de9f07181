//! The two hashes every node and client must agree on.
//!
//! - [`key_hash`] picks a key's bucket: `bucket = key_hash(key) & (buckets - 1)` ([`bucket_of`]).
//! - [`value_hash`] is the check-and-set token: the hash of the stored value bytes, computed once
//!   when the value is written. Writing the same bytes again gives the same token.
//!
//! Both are XXH64 (seed 0) over the raw, unsigned bytes. XXH64 is fast (several GB/s), well
//! distributed, and has public reference implementations, so other clients can reproduce it.
//! The test vectors below are also listed in `docs/protocol.md`.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// The hash that places a key in a bucket (XXH64 of the key bytes, seed 0).
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// The check-and-set token of a value (XXH64 of the value bytes, seed 0).
#[inline]
pub fn value_hash(value: &[u8]) -> u64 {
    xxh64(value, 0)
}

/// The bucket of `key` in a cluster of `buckets` buckets.
///
/// `buckets` must be a power of two (the cluster enforces it when it is created); the result is
/// always below `buckets`.
#[inline]
pub fn bucket_of(key: &[u8], buckets: u32) -> u32 {
    debug_assert!(
        buckets.is_power_of_two(),
        "bucket count must be a power of two"
    );
    bucket_of_hash(key_hash(key), buckets)
}

/// The bucket of a key whose [`key_hash`] is already known (the same function as
/// [`bucket_of`], for callers that need the hash too).
#[inline]
pub fn bucket_of_hash(key_hash: u64, buckets: u32) -> u32 {
    (key_hash & u64::from(buckets.saturating_sub(1))) as u32
}

/// Incremental XXH64, for values that are not contiguous in memory (chunk chains).
#[derive(Debug, Clone)]
pub struct ValueHasher {
    acc: [u64; 4],
    buf: [u8; 32],
    buf_len: usize,
    total: u64,
    seed: u64,
}

impl Default for ValueHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ValueHasher {
    /// A hasher that produces [`value_hash`] of everything given to [`ValueHasher::update`].
    pub fn new() -> Self {
        let seed = 0u64;
        Self {
            acc: [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ],
            buf: [0; 32],
            buf_len: 0,
            total: 0,
            seed,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let take = (32 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 32 {
                return;
            }
            let block = self.buf;
            self.stripe(&block);
            self.buf_len = 0;
        }
        let mut chunks = data.chunks_exact(32);
        for block in &mut chunks {
            self.stripe(block);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    #[inline]
    fn stripe(&mut self, block: &[u8]) {
        for (i, acc) in self.acc.iter_mut().enumerate() {
            *acc = round(*acc, read_u64(&block[i * 8..]));
        }
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        let mut h = if self.total >= 32 {
            let [a, b, c, d] = self.acc;
            let mut h = a
                .rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18));
            for v in self.acc {
                h = merge_round(h, v);
            }
            h
        } else {
            self.seed.wrapping_add(P5)
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.buf[..self.buf_len];
        while rest.len() >= 8 {
            h ^= round(0, read_u64(rest));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            h ^= u64::from(read_u32(rest)).wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            rest = &rest[4..];
        }
        for &byte in rest {
            h ^= u64::from(byte).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^= h >> 32;
        h
    }
}

/// XXH64 of `data` with `seed`.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let mut hasher = ValueHasher::new();
    if seed != 0 {
        hasher.seed = seed;
        hasher.acc = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
    }
    hasher.update(data);
    hasher.finish()
}

#[inline]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline]
fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

#[inline]
fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[inline]
fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the canonical XXH64 implementation (seed 0).
    pub(crate) const VECTORS: &[(&[u8], u64)] = &[
        (b"", 0xef46_db37_51d8_e999),
        (b"a", 0xd24e_c4f1_a98c_6e5b),
        (b"abc", 0x44bc_2cf5_ad77_0999),
        (b"shoal", 0xbfaf_2987_186c_0d51),
        (b"0123456789abcdef0123456789abcdef", 0x642a_9495_8e71_e6c5),
    ];

    #[test]
    fn matches_reference_vectors() {
        for (input, want) in VECTORS {
            assert_eq!(key_hash(input), *want, "input {input:?}");
            assert_eq!(value_hash(input), *want, "input {input:?}");
        }
        let long: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
        assert_eq!(value_hash(&long), 0x6f39_14f1_8fe4_df57);
    }

    #[test]
    fn incremental_equals_one_shot_at_every_split() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 5, 31, 32, 33, 64, 100, 200] {
            let whole = value_hash(&data[..len]);
            for split in 0..=len {
                let mut h = ValueHasher::new();
                h.update(&data[..split]);
                h.update(&data[split..len]);
                assert_eq!(h.finish(), whole, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn bucket_is_in_range() {
        for i in 0..1000u32 {
            let key = i.to_be_bytes();
            assert!(bucket_of(&key, 1024) < 1024);
            assert_eq!(bucket_of(&key, 1), 0);
        }
    }
}
