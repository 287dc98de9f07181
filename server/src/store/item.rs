//! Item layout inside slab chunks, and the borrowed / owned views of an item.
//!
//! Every chunk starts with a status byte. A chunk is free, the head of an item, or a
//! continuation of a chained item (values too large for one chunk of the largest class).
//!
//! ```text
//! head chunk (34-byte header, little-endian):
//!   0 status | 1 key_len u8 | 2 value_len u32 | 6 flags u32 | 10 expiry u32 | 14 hash u64 | 22 seq u64
//!   | 30 last access u32
//!   34: key, value                       (single chunk)
//!   34: next u32, key, first value part  (chained head, status has CHAINED)
//! continuation chunk: 0 status | 1 head u32 | 5 next u32 | 9: value part
//! free chunk:         0 status = 0 | 1 prev u32 | 5 next u32   (doubly linked per-class free list)
//! ```
//!
//! `expiry` and `last access` are monotonic seconds since store start (expiry 0 = never). The
//! CLOCK reference bit and the memcached meta-protocol bits (fetched, stale, win token sent)
//! live in the status byte; a new version of an item starts with them clear. This module owns
//! the byte layout only; allocation is in [`super::slab`] and the item lifecycle in
//! [`super::partition`].

use super::slab::{ChunkId, Slab, NONE};

/// Status bit: the chunk is allocated (head or continuation).
pub(crate) const ST_USED: u8 = 1;
/// Status bit: the chunk is the head of an item.
pub(crate) const ST_HEAD: u8 = 2;
/// Status bit: CLOCK reference bit, set on access, cleared by the eviction hand.
pub(crate) const ST_REF: u8 = 4;
/// Status bit: the item continues in further chunks.
pub(crate) const ST_CHAINED: u8 = 8;
/// Status bit (head): the item has been read since it was written (memcached's `h`).
pub(crate) const ST_FETCHED: u8 = 16;
/// Status bit (head): the item was invalidated (memcached's `md <key> I`) and is served stale.
pub(crate) const ST_STALE: u8 = 32;
/// Status bit (head): a client was told it won the right to recache the item (memcached's
/// `W`; later readers see `Z`).
pub(crate) const ST_WON: u8 = 64;

/// Size of an item header in bytes.
pub(crate) const HEADER: usize = 34;
/// Header of a chained head chunk (header plus the link to the next chunk).
pub(crate) const CHAIN_HEAD_HEADER: usize = HEADER + 4;
/// Header of a continuation chunk (status, head link, next link).
pub(crate) const CONT_HEADER: usize = 9;

const OFF_KEY_LEN: usize = 1;
const OFF_VALUE_LEN: usize = 2;
const OFF_FLAGS: usize = 6;
const OFF_EXPIRY: usize = 10;
const OFF_HASH: usize = 14;
const OFF_SEQ: usize = 22;
const OFF_ATIME: usize = 30;
/// Offset of the next-chunk link in a chained head.
pub(crate) const OFF_HEAD_NEXT: usize = 34;
/// Offset of the head link in a continuation chunk.
pub(crate) const OFF_CONT_HEAD: usize = 1;
/// Offset of the next-chunk link in a continuation chunk.
pub(crate) const OFF_CONT_NEXT: usize = 5;

#[inline]
pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
pub(crate) fn wr_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn rd_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// The decoded fixed header of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub key_len: usize,
    pub value_len: usize,
    pub flags: u32,
    pub expiry: u32,
    pub hash: u64,
    pub seq: u64,
    pub chained: bool,
}

impl Header {
    /// Reads the header of a head chunk.
    #[inline]
    pub(crate) fn read(chunk: &[u8]) -> Header {
        Header {
            key_len: usize::from(chunk[OFF_KEY_LEN]),
            value_len: rd_u32(chunk, OFF_VALUE_LEN) as usize,
            flags: rd_u32(chunk, OFF_FLAGS),
            expiry: rd_u32(chunk, OFF_EXPIRY),
            hash: rd_u64(chunk, OFF_HASH),
            seq: rd_u64(chunk, OFF_SEQ),
            chained: chunk[0] & ST_CHAINED != 0,
        }
    }

    /// Writes the header into a head chunk, status included (reference bit clear).
    #[inline]
    pub(crate) fn write(&self, chunk: &mut [u8]) {
        chunk[0] = ST_USED | ST_HEAD | if self.chained { ST_CHAINED } else { 0 };
        // key_len <= 250 and value_len <= max_value (< 4 GiB) are checked before writing.
        chunk[OFF_KEY_LEN] = self.key_len as u8;
        wr_u32(chunk, OFF_VALUE_LEN, self.value_len as u32);
        wr_u32(chunk, OFF_FLAGS, self.flags);
        wr_u32(chunk, OFF_EXPIRY, self.expiry);
        chunk[OFF_HASH..OFF_HASH + 8].copy_from_slice(&self.hash.to_le_bytes());
        chunk[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// The last-access time (monotonic seconds) of a head chunk.
    #[inline]
    pub(crate) fn atime(chunk: &[u8]) -> u32 {
        rd_u32(chunk, OFF_ATIME)
    }

    /// Offset of the key in the head chunk.
    #[inline]
    pub(crate) fn key_offset(&self) -> usize {
        if self.chained {
            CHAIN_HEAD_HEADER
        } else {
            HEADER
        }
    }

    /// Whether the item has expired at monotonic time `now`.
    #[inline]
    pub(crate) fn expired(&self, now: u32) -> bool {
        self.expiry != 0 && now >= self.expiry
    }
}

/// Overwrites the expiry field of a head chunk.
#[inline]
pub(crate) fn write_expiry(chunk: &mut [u8], expiry: u32) {
    wr_u32(chunk, OFF_EXPIRY, expiry);
}

/// Overwrites the seq field of a head chunk.
#[inline]
pub(crate) fn write_seq(chunk: &mut [u8], seq: u64) {
    chunk[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
}

/// Overwrites the last-access time (monotonic seconds) of a head chunk.
#[inline]
pub(crate) fn write_atime(chunk: &mut [u8], now: u32) {
    wr_u32(chunk, OFF_ATIME, now);
}

/// Overwrites the value hash (check-and-set token) of a head chunk.
#[inline]
pub(crate) fn write_hash(chunk: &mut [u8], hash: u64) {
    chunk[OFF_HASH..OFF_HASH + 8].copy_from_slice(&hash.to_le_bytes());
}

/// The check-and-set token an item gets when it is invalidated (memcached's `md <key> I`,
/// which "bumps the CAS"): a fixed bijection of the old one, so the token from before the
/// invalidation is recognised by `ms <key> I C<token>`.
#[inline]
pub(crate) fn stale_hash(hash: u64) -> u64 {
    (hash ^ 0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// The key stored in a head chunk.
#[inline]
pub(crate) fn key_of(chunk: &[u8]) -> &[u8] {
    let off = if chunk[0] & ST_CHAINED != 0 {
        CHAIN_HEAD_HEADER
    } else {
        HEADER
    };
    &chunk[off..off + usize::from(chunk[OFF_KEY_LEN])]
}

/// Monotonic expiry for a relative TTL (0 = never).
#[inline]
pub(crate) fn expiry_for(now: u32, ttl: u32) -> u32 {
    if ttl == 0 {
        0
    } else {
        now.saturating_add(ttl).max(1)
    }
}

/// Where an item of a given size goes: its class and how many chunks it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub class: usize,
    pub chunks: u32,
}

/// Copies a value made of several parts (e.g. old value + appended data) into chunk slices.
pub(crate) struct PartsCursor<'a> {
    parts: &'a [&'a [u8]],
    part: usize,
    off: usize,
}

impl<'a> PartsCursor<'a> {
    pub(crate) fn new(parts: &'a [&'a [u8]]) -> Self {
        Self {
            parts,
            part: 0,
            off: 0,
        }
    }

    /// Fills `dst` completely from the parts, in order. The caller sized `dst` from the total.
    pub(crate) fn fill(&mut self, mut dst: &mut [u8]) {
        while !dst.is_empty() {
            let Some(src) = self.parts.get(self.part) else {
                return;
            };
            let avail = &src[self.off..];
            let n = avail.len().min(dst.len());
            dst[..n].copy_from_slice(&avail[..n]);
            dst = &mut dst[n..];
            self.off += n;
            if self.off == src.len() {
                self.part += 1;
                self.off = 0;
            }
        }
    }
}

/// A borrowed view of a stored item, valid while the partition lock is held.
///
/// Handed to the closures of [`Store::get`](super::Store::get) and
/// [`Store::get_and_touch`](super::Store::get_and_touch); nothing is copied until asked.
#[derive(Clone, Copy)]
pub struct ItemRef<'a> {
    slab: &'a Slab,
    id: ChunkId,
    head: &'a [u8],
    hdr: Header,
    now: u32,
}

impl<'a> ItemRef<'a> {
    pub(crate) fn new(slab: &'a Slab, id: ChunkId, now: u32) -> Self {
        let head = slab.chunk(id);
        Self {
            slab,
            id,
            head,
            hdr: Header::read(head),
            now,
        }
    }

    /// The key.
    pub fn key(&self) -> &'a [u8] {
        let off = self.hdr.key_offset();
        &self.head[off..off + self.hdr.key_len]
    }

    /// The client flags.
    pub fn flags(&self) -> u32 {
        self.hdr.flags
    }

    /// The value hash (check-and-set token).
    pub fn hash(&self) -> u64 {
        self.hdr.hash
    }

    /// The bucket sequence number of the item's last write.
    pub fn seq(&self) -> u64 {
        self.hdr.seq
    }

    /// The value length in bytes.
    pub fn value_len(&self) -> usize {
        self.hdr.value_len
    }

    /// The item's slab class, numbered from 1 as memcached does, and its bytes (header, key
    /// and value) for memcached's `me`.
    pub fn slab_class_and_size(&self) -> (usize, usize) {
        let size = self.hdr.key_offset() + self.hdr.key_len + self.hdr.value_len;
        (self.slab.class_of(self.id) + 1, size)
    }

    /// Seconds since the item was last read or written.
    pub fn idle_secs(&self) -> u32 {
        self.now.saturating_sub(rd_u32(self.head, OFF_ATIME))
    }

    /// Whether the item was read since it was written (before the current access).
    pub fn fetched(&self) -> bool {
        self.head[0] & ST_FETCHED != 0
    }

    /// Whether the item is marked stale (invalidated, waiting to be recached).
    pub fn stale(&self) -> bool {
        self.head[0] & ST_STALE != 0
    }

    /// Whether a client was already told it won the right to recache the item.
    pub fn win_sent(&self) -> bool {
        self.head[0] & ST_WON != 0
    }

    /// Seconds until the item expires, or `None` if it never does.
    pub fn ttl_remaining(&self) -> Option<u32> {
        (self.hdr.expiry != 0).then(|| self.hdr.expiry.saturating_sub(self.now))
    }

    /// The value as a sequence of slices (one for most items, several for chained ones).
    pub fn value_chunks(&self) -> ValueChunks<'a> {
        let off = self.hdr.key_offset() + self.hdr.key_len;
        let first_len = self.hdr.value_len.min(self.head.len() - off);
        ValueChunks {
            slab: self.slab,
            first: Some(&self.head[off..off + first_len]),
            next: if self.hdr.chained {
                rd_u32(self.head, OFF_HEAD_NEXT)
            } else {
                NONE
            },
            remaining: self.hdr.value_len - first_len,
        }
    }

    /// Appends the value to `out`.
    pub fn copy_value_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.hdr.value_len);
        for part in self.value_chunks() {
            out.extend_from_slice(part);
        }
    }

    /// Writes the value into a [`bytes::BufMut`] (e.g. a connection's output buffer).
    pub fn write_value_to<B: bytes::BufMut>(&self, buf: &mut B) {
        for part in self.value_chunks() {
            buf.put_slice(part);
        }
    }

    /// The value as one owned vector.
    pub fn value_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.hdr.value_len);
        self.copy_value_into(&mut out);
        out
    }

    /// An owned copy, with expiry converted to unix seconds using `wall` as the current time.
    pub fn to_owned_item(&self, wall: u64) -> OwnedItem {
        OwnedItem {
            key: self.key().to_vec(),
            value: self.value_vec(),
            flags: self.flags(),
            hash: self.hash(),
            seq: self.seq(),
            expires_at: self.expires_at(wall),
        }
    }

    /// Absolute expiry in unix seconds (0 = never), with `wall` as the current time; an
    /// item due to expire this second gets `wall + 1`.
    pub fn expires_at(&self, wall: u64) -> u64 {
        self.ttl_remaining()
            .map_or(0, |ttl| wall + u64::from(ttl.max(1)))
    }
}

impl std::fmt::Debug for ItemRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemRef")
            .field("key", &self.key())
            .field("value_len", &self.hdr.value_len)
            .field("flags", &self.hdr.flags)
            .field("hash", &self.hdr.hash)
            .field("seq", &self.hdr.seq)
            .finish()
    }
}

/// Iterator over the value slices of an item, see [`ItemRef::value_chunks`].
pub struct ValueChunks<'a> {
    slab: &'a Slab,
    first: Option<&'a [u8]>,
    next: ChunkId,
    remaining: usize,
}

impl<'a> Iterator for ValueChunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.remaining == 0 || self.next == NONE {
            return None;
        }
        let chunk = self.slab.chunk(self.next);
        let n = self.remaining.min(chunk.len() - CONT_HEADER);
        self.remaining -= n;
        self.next = rd_u32(chunk, OFF_CONT_NEXT);
        Some(&chunk[CONT_HEADER..CONT_HEADER + n])
    }
}

/// An item copied out of the store: THE item record shared by the store, the savefile and
/// the peer protocol.
///
/// Snapshots ([`BucketSnapshot`](super::BucketSnapshot)) and change logs
/// ([`Store::changes_since`](super::Store::changes_since)) produce it;
/// [`Store::insert_item`](super::Store::insert_item) and [`Store::apply`](super::Store::apply)
/// consume it; the savefile writes and reads exactly these fields through its borrowed form,
/// [`ItemRecord`]. Everything needed to install the same version elsewhere is here:
/// the hash (CAS token) and seq travel unchanged, and the expiry is absolute (unix seconds),
/// so a copy expires at the same moment as the original on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedItem {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Client flags.
    pub flags: u32,
    /// Value hash (check-and-set token), kept as is on insert.
    pub hash: u64,
    /// Bucket sequence number of the item's last write, kept as is on insert.
    pub seq: u64,
    /// Absolute expiry in unix seconds, 0 = never.
    pub expires_at: u64,
}

/// The borrowed form of [`OwnedItem`]: the same fields, with key and value borrowed (from a
/// savefile block, a network buffer, or an [`OwnedItem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRecord<'a> {
    /// The key (at least 1 byte).
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Client flags.
    pub flags: u32,
    /// Absolute expiry in unix seconds, 0 = never.
    pub expires_at: u64,
    /// Value hash (check-and-set token).
    pub hash: u64,
    /// Bucket sequence number of the item's last write.
    pub seq: u64,
}

impl OwnedItem {
    /// This item as a borrowed record.
    pub fn as_record(&self) -> ItemRecord<'_> {
        ItemRecord {
            key: &self.key,
            value: &self.value,
            flags: self.flags,
            expires_at: self.expires_at,
            hash: self.hash,
            seq: self.seq,
        }
    }
}

impl ItemRecord<'_> {
    /// An owned copy.
    pub fn to_owned_item(&self) -> OwnedItem {
        OwnedItem {
            key: self.key.to_vec(),
            value: self.value.to_vec(),
            flags: self.flags,
            hash: self.hash,
            seq: self.seq,
            expires_at: self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut chunk = [0u8; 64];
        let hdr = Header {
            key_len: 16,
            value_len: 100_000,
            flags: 0xdead_beef,
            expiry: 77,
            hash: 0x0123_4567_89ab_cdef,
            seq: 42,
            chained: true,
        };
        hdr.write(&mut chunk);
        assert_eq!(Header::read(&chunk), hdr);
        assert_eq!(chunk[0], ST_USED | ST_HEAD | ST_CHAINED);
        assert_eq!(hdr.key_offset(), CHAIN_HEAD_HEADER);
    }

    #[test]
    fn parts_cursor_spans_parts() {
        let parts: [&[u8]; 3] = [b"ab", b"", b"cdef"];
        let mut cursor = PartsCursor::new(&parts);
        let mut a = [0u8; 3];
        let mut b = [0u8; 3];
        cursor.fill(&mut a);
        cursor.fill(&mut b);
        assert_eq!((&a, &b), (b"abc", b"def"));
    }

    #[test]
    fn expiry_never_and_saturating() {
        assert_eq!(expiry_for(10, 0), 0);
        assert_eq!(expiry_for(10, 5), 15);
        assert_eq!(expiry_for(u32::MAX - 1, 5), u32::MAX);
    }
}
