//! [`ItemsBlock`]: one ITEMS block's payload, encoded record by record.
//!
//! [`super::SavefileWriter`] fills one for [`super::SavefileWriter::push`]; a save fills its
//! own straight from the store's memory (under the store's lock, where nothing may wait for
//! the disk) and hands each full block to the writer on another thread
//! ([`super::SavefileWriter::write_items`]), so encoding and checksumming overlap.

use std::io;

use super::{ITEMS_HEADER_LEN, MAX_BLOCK_LEN, RECORD_FIXED_LEN};
use crate::store::{ItemRecord, ItemRef};

/// The payload of one ITEMS block: a bucket's header (bucket, bucket seq, count) and its
/// records. A block is full once its payload reaches its block size; a record that would
/// take it past that size is refused unless the block is empty (so a record larger than
/// the block size gets a block of its own).
#[derive(Debug)]
pub struct ItemsBlock {
    /// The ITEMS header (count filled in by [`ItemsBlock::payload`]) and the records.
    payload: Vec<u8>,
    block_size: usize,
    bucket: u32,
    seq: u64,
    count: u32,
    /// Key and value bytes of the records.
    bytes: u64,
}

/// A record's fields other than its key and value.
#[derive(Clone, Copy)]
struct Fixed {
    flags: u32,
    expires_at: u64,
    hash: u64,
    seq: u64,
}

impl ItemsBlock {
    /// An empty block of `bucket`, whose sequence number is `seq`, closed at `block_size`
    /// payload bytes.
    pub fn new(bucket: u32, seq: u64, block_size: usize) -> Self {
        let block_size = block_size.max(1);
        let mut block = Self {
            payload: Vec::with_capacity(
                block_size.min(super::DEFAULT_BLOCK_SIZE) + ITEMS_HEADER_LEN + RECORD_FIXED_LEN,
            ),
            block_size,
            bucket,
            seq,
            count: 0,
            bytes: 0,
        };
        block.reset(bucket, seq);
        block
    }

    /// Empties the block (keeping its memory) for records of `bucket` at `seq`.
    pub fn reset(&mut self, bucket: u32, seq: u64) {
        self.bucket = bucket;
        self.seq = seq;
        self.count = 0;
        self.bytes = 0;
        self.payload.clear();
        self.payload.extend_from_slice(&bucket.to_be_bytes());
        self.payload.extend_from_slice(&seq.to_be_bytes());
        self.payload.extend_from_slice(&0u32.to_be_bytes());
    }

    /// The bucket and the bucket sequence number the block was started with.
    pub fn bucket(&self) -> (u32, u64) {
        (self.bucket, self.seq)
    }

    /// Records held.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Key and value bytes of the records held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the block holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the payload reached the block size (the next record is refused).
    pub fn is_full(&self) -> bool {
        self.payload.len() >= self.block_size
    }

    /// The payload, its record count filled in.
    pub(super) fn payload(&mut self) -> &[u8] {
        self.payload[12..16].copy_from_slice(&self.count.to_be_bytes());
        &self.payload
    }

    /// Adds `rec`. Returns `Ok(false)`, adding nothing, when the block has no room for it.
    ///
    /// # Errors
    /// `InvalidInput` when the key is empty or longer than 65,535 bytes, or the record is
    /// larger than [`MAX_BLOCK_LEN`] allows.
    pub fn append_record(&mut self, rec: &ItemRecord<'_>) -> io::Result<bool> {
        if !self.has_room(rec.key.len(), rec.value.len())? {
            return Ok(false);
        }
        let fixed = Fixed {
            flags: rec.flags,
            expires_at: rec.expires_at,
            hash: rec.hash,
            seq: rec.seq,
        };
        self.append(rec.key, rec.value.len(), std::iter::once(rec.value), fixed);
        Ok(true)
    }

    /// Adds a store item, copying its key and value straight from the store's memory (this
    /// never waits for anything: a caller may hold the store's lock). `expires_at` is its
    /// absolute expiry. Returns `Ok(false)`, adding nothing, when the block has no room.
    ///
    /// # Errors
    /// `InvalidInput` as for [`ItemsBlock::append_record`].
    pub fn append_item(&mut self, item: &ItemRef<'_>, expires_at: u64) -> io::Result<bool> {
        if !self.has_room(item.key().len(), item.value_len())? {
            return Ok(false);
        }
        let fixed = Fixed {
            flags: item.flags(),
            expires_at,
            hash: item.hash(),
            seq: item.seq(),
        };
        self.append(item.key(), item.value_len(), item.value_chunks(), fixed);
        Ok(true)
    }

    /// Whether a record with a key and value of these lengths fits (an empty block takes
    /// any valid record).
    fn has_room(&self, key_len: usize, value_len: usize) -> io::Result<bool> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        if key_len == 0 || key_len > usize::from(u16::MAX) {
            return Err(bad("savefile record key must be 1 to 65535 bytes"));
        }
        let len = RECORD_FIXED_LEN + key_len + value_len;
        if u32::try_from(value_len).is_err() || len + ITEMS_HEADER_LEN > MAX_BLOCK_LEN as usize {
            return Err(bad("savefile record too large"));
        }
        Ok(self.count == 0
            || (self.count < u32::MAX && self.payload.len() + len <= self.block_size))
    }

    /// Appends one record whose lengths [`ItemsBlock::has_room`] accepted, its value in
    /// `parts` (`value_len` bytes in all).
    fn append<'v>(
        &mut self,
        key: &[u8],
        value_len: usize,
        parts: impl Iterator<Item = &'v [u8]>,
        fixed: Fixed,
    ) {
        let b = &mut self.payload;
        b.reserve(RECORD_FIXED_LEN + key.len() + value_len);
        // Both lengths were checked by has_room.
        b.extend_from_slice(&(key.len() as u16).to_be_bytes());
        b.extend_from_slice(&(value_len as u32).to_be_bytes());
        b.extend_from_slice(&fixed.flags.to_be_bytes());
        b.extend_from_slice(&fixed.expires_at.to_be_bytes());
        b.extend_from_slice(&fixed.hash.to_be_bytes());
        b.extend_from_slice(&fixed.seq.to_be_bytes());
        b.extend_from_slice(key);
        let value_at = b.len();
        for part in parts {
            b.extend_from_slice(part);
        }
        debug_assert_eq!(b.len() - value_at, value_len);
        self.count += 1;
        self.bytes += (key.len() + value_len) as u64;
    }
}
