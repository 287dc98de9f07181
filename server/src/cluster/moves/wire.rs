//! The MOVE peer request's body: what a bucket's source sends its target, encoded and
//! decoded without I/O. Every length is checked; nothing here panics on a peer's bytes.
//!
//! ```text
//! kind u8 | move_id u64 | bucket u32 | ...
//!   OPEN     (nothing more)                       the target makes an empty hidden copy
//!   ITEMS    count u32 | item*                    snapshot items, any seq order
//!   CHANGES  through u64 | count u32 | change*    change-log records, in seq order
//! item   = key_len u16 | key | value_len u32 | value | flags u32 | hash u64 | seq u64 | expires_at u64
//! change = 1 item | 2 key_len u16 key seq u64 | 3 key_len u16 key seq u64 expires_at u64
//!        | 4 seq u64                            (set, delete, touch, clear of this bucket)
//! ```
//! All integers are big-endian. The reply to every kind is the target's bucket sequence
//! number after it (u64).

use crate::store::{Change, OwnedItem};

/// What one MOVE request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Start (or restart) the copy: the target drops whatever it holds of the bucket.
    Open,
    /// Snapshot items.
    Items(Vec<OwnedItem>),
    /// Change-log records after the snapshot; every change up to `through` is reflected.
    Changes {
        /// The source's read position after these changes.
        through: u64,
        /// The changes, in seq order.
        changes: Vec<Change>,
    },
}

/// One MOVE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRequest {
    /// The move (the log index of its StartMove).
    pub move_id: u64,
    /// The bucket.
    pub bucket: u32,
    /// What it carries.
    pub payload: Payload,
}

/// Why a MOVE body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The body ends inside a field.
    Truncated,
    /// Bytes are left after the last record.
    Trailing,
    /// An unknown request kind or change tag.
    UnknownKind(u8),
    /// A record count larger than the body could hold.
    BadCount,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("MOVE body is truncated"),
            WireError::Trailing => f.write_str("MOVE body has trailing bytes"),
            WireError::UnknownKind(k) => write!(f, "MOVE body has an unknown kind or tag {k}"),
            WireError::BadCount => f.write_str("MOVE body declares more records than it holds"),
        }
    }
}

impl std::error::Error for WireError {}

const OPEN: u8 = 1;
const ITEMS: u8 = 2;
const CHANGES: u8 = 3;

const SET: u8 = 1;
const DELETE: u8 = 2;
const TOUCH: u8 = 3;
const CLEAR: u8 = 4;

/// The smallest encoded item (1-byte key, empty value), to bound declared counts.
const MIN_ITEM: usize = 2 + 1 + 4 + 4 + 8 + 8 + 8;
/// The smallest encoded change (a clear).
const MIN_CHANGE: usize = 1 + 8;

/// The encoded size of `item`, to fill requests up to a size.
pub fn item_len(item: &OwnedItem) -> usize {
    MIN_ITEM - 1 + item.key.len() + item.value.len()
}

impl MoveRequest {
    /// Appends the encoded request to `dst`. Keys longer than 65,535 bytes cannot exist
    /// (the store's key limit is below that).
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let kind = match self.payload {
            Payload::Open => OPEN,
            Payload::Items(_) => ITEMS,
            Payload::Changes { .. } => CHANGES,
        };
        dst.push(kind);
        dst.extend_from_slice(&self.move_id.to_be_bytes());
        dst.extend_from_slice(&self.bucket.to_be_bytes());
        match &self.payload {
            Payload::Open => {}
            Payload::Items(items) => {
                put_u32(dst, items.len());
                for item in items {
                    put_item(dst, item);
                }
            }
            Payload::Changes { through, changes } => {
                dst.extend_from_slice(&through.to_be_bytes());
                put_u32(dst, changes.len());
                for change in changes {
                    put_change(dst, change);
                }
            }
        }
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// [`WireError`] for anything but exactly one well-formed request.
    pub fn decode(body: &[u8]) -> Result<MoveRequest, WireError> {
        let mut r = Reader(body);
        let kind = r.u8()?;
        let move_id = r.u64()?;
        let bucket = r.u32()?;
        let payload = match kind {
            OPEN => Payload::Open,
            ITEMS => {
                let n = r.count(MIN_ITEM)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(r.item()?);
                }
                Payload::Items(items)
            }
            CHANGES => {
                let through = r.u64()?;
                let n = r.count(MIN_CHANGE)?;
                let mut changes = Vec::with_capacity(n);
                for _ in 0..n {
                    changes.push(r.change(bucket)?);
                }
                Payload::Changes { through, changes }
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        if !r.0.is_empty() {
            return Err(WireError::Trailing);
        }
        Ok(MoveRequest {
            move_id,
            bucket,
            payload,
        })
    }
}

fn put_u32(dst: &mut Vec<u8>, n: usize) {
    dst.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_key(dst: &mut Vec<u8>, key: &[u8]) {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    dst.extend_from_slice(&len.to_be_bytes());
    dst.extend_from_slice(&key[..usize::from(len)]);
}

fn put_item(dst: &mut Vec<u8>, item: &OwnedItem) {
    put_key(dst, &item.key);
    put_u32(dst, item.value.len());
    dst.extend_from_slice(&item.value);
    dst.extend_from_slice(&item.flags.to_be_bytes());
    dst.extend_from_slice(&item.hash.to_be_bytes());
    dst.extend_from_slice(&item.seq.to_be_bytes());
    dst.extend_from_slice(&item.expires_at.to_be_bytes());
}

fn put_change(dst: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Set(item) => {
            dst.push(SET);
            put_item(dst, item);
        }
        Change::Delete { key, seq } => {
            dst.push(DELETE);
            put_key(dst, key);
            dst.extend_from_slice(&seq.to_be_bytes());
        }
        Change::Touch {
            key,
            seq,
            expires_at,
        } => {
            dst.push(TOUCH);
            put_key(dst, key);
            dst.extend_from_slice(&seq.to_be_bytes());
            dst.extend_from_slice(&expires_at.to_be_bytes());
        }
        Change::Clear { seq, .. } => {
            dst.push(CLEAR);
            dst.extend_from_slice(&seq.to_be_bytes());
        }
    }
}

/// A cursor over a body; every read checks the length first.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A record count, refused when the rest of the body cannot hold that many records of
    /// at least `min` bytes (so a forged count cannot make us allocate).
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(WireError::BadCount);
        }
        Ok(n)
    }

    fn key(&mut self) -> Result<Vec<u8>, WireError> {
        let len = usize::from(self.u16()?);
        Ok(self.take(len)?.to_vec())
    }

    fn item(&mut self) -> Result<OwnedItem, WireError> {
        let key = self.key()?;
        let len = self.u32()? as usize;
        let value = self.take(len)?.to_vec();
        Ok(OwnedItem {
            key,
            value,
            flags: self.u32()?,
            hash: self.u64()?,
            seq: self.u64()?,
            expires_at: self.u64()?,
        })
    }

    fn change(&mut self, bucket: u32) -> Result<Change, WireError> {
        match self.u8()? {
            SET => Ok(Change::Set(self.item()?)),
            DELETE => Ok(Change::Delete {
                key: self.key()?,
                seq: self.u64()?,
            }),
            TOUCH => Ok(Change::Touch {
                key: self.key()?,
                seq: self.u64()?,
                expires_at: self.u64()?,
            }),
            CLEAR => Ok(Change::Clear {
                bucket,
                seq: self.u64()?,
            }),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(key: &[u8], value: &[u8], seq: u64) -> OwnedItem {
        OwnedItem {
            key: key.to_vec(),
            value: value.to_vec(),
            flags: 7,
            hash: 0xdead_beef,
            seq,
            expires_at: 1_900_000_000,
        }
    }

    fn samples() -> Vec<MoveRequest> {
        vec![
            MoveRequest {
                move_id: 9,
                bucket: 3,
                payload: Payload::Open,
            },
            MoveRequest {
                move_id: 9,
                bucket: 3,
                payload: Payload::Items(vec![item(b"a", b"", 1), item(b"bb", &[0; 300], 2)]),
            },
            MoveRequest {
                move_id: u64::MAX,
                bucket: u32::MAX,
                payload: Payload::Changes {
                    through: 44,
                    changes: vec![
                        Change::Set(item(b"k", b"v", 40)),
                        Change::Delete {
                            key: b"gone".to_vec(),
                            seq: 41,
                        },
                        Change::Touch {
                            key: b"t".to_vec(),
                            seq: 42,
                            expires_at: 5,
                        },
                        Change::Clear {
                            bucket: u32::MAX,
                            seq: 43,
                        },
                    ],
                },
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_and_sizes_add_up() {
        for req in samples() {
            let mut body = Vec::new();
            req.encode(&mut body);
            assert_eq!(MoveRequest::decode(&body), Ok(req.clone()));
            if let Payload::Items(items) = &req.payload {
                let sum: usize = items.iter().map(item_len).sum();
                assert_eq!(body.len(), 1 + 8 + 4 + 4 + sum);
            }
        }
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_an_error() {
        for req in samples() {
            let mut body = Vec::new();
            req.encode(&mut body);
            for cut in 0..body.len() {
                assert!(MoveRequest::decode(&body[..cut]).is_err(), "cut at {cut}");
            }
            body.push(0);
            assert_eq!(MoveRequest::decode(&body), Err(WireError::Trailing));
        }
    }

    #[test]
    fn unknown_kinds_and_forged_counts_are_refused() {
        let mut body = vec![OPEN + 10];
        body.extend_from_slice(&[0; 12]);
        assert_eq!(MoveRequest::decode(&body), Err(WireError::UnknownKind(11)));
        let mut body = vec![ITEMS];
        body.extend_from_slice(&[0; 12]);
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(MoveRequest::decode(&body), Err(WireError::BadCount));
        let mut body = vec![CHANGES];
        body.extend_from_slice(&[0; 12]);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[9; 9]);
        assert_eq!(MoveRequest::decode(&body), Err(WireError::UnknownKind(9)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MoveRequest::decode(&body);
        }

        #[test]
        fn arbitrary_items_round_trip(
            items in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..40),
                 proptest::collection::vec(any::<u8>(), 0..100),
                 any::<u64>()),
                0..20),
        ) {
            let req = MoveRequest {
                move_id: 1,
                bucket: 2,
                payload: Payload::Items(items.iter().map(|(k, v, s)| item(k, v, *s)).collect()),
            };
            let mut body = Vec::new();
            req.encode(&mut body);
            prop_assert_eq!(MoveRequest::decode(&body), Ok(req));
        }
    }
}
