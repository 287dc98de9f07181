//! Checkable values and the classification of every read.
//!
//! Each value the checker writes says what it is: the key it was written under, the writer that
//! wrote it, a per-key sequence number (or, in check-and-set mode, the counter), a payload, and a
//! CRC-32 of everything before it. Any byte string read back can therefore be sorted into one
//! [`Class`] given what the [`model`](crate::model) expected of that key ([`Expect`]).
//!
//! ```text
//!  "SCC1" | key_len u16 | key | writer u32 | seq u64 | payload_len u32 | payload | crc32 u32
//! ```
//! All integers are big-endian; the CRC (crc32fast, IEEE) covers every byte before it.
//!
//! This module owns the byte layout and the decision rules; it does not know about clients,
//! time or processes.

use std::fmt;

/// The four bytes every checker value starts with.
pub const MAGIC: &[u8; 4] = b"SCC1";

/// Bytes of a value around its key and payload: magic, key length, writer, sequence, payload
/// length and CRC.
pub const OVERHEAD: usize = 4 + 2 + 4 + 8 + 4 + 4;

/// A value decoded from bytes read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The key the value says it was written under.
    pub key: Vec<u8>,
    /// The writer that wrote it.
    pub writer: u32,
    /// The per-key sequence number (the counter in check-and-set mode).
    pub seq: u64,
}

/// Why bytes read back are not a well-formed checker value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the fixed fields need.
    TooShort,
    /// The value does not start with [`MAGIC`].
    BadMagic,
    /// The declared key or payload length does not match the value's length.
    BadLength,
    /// The CRC does not match the bytes.
    BadCrc,
    /// The value hash the server returned with the value (the check-and-set token, the
    /// memcached cas unique) is not the hash of the value's bytes.
    BadHash,
}

impl DecodeError {
    /// A short, static description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooShort => "too short",
            Self::BadMagic => "bad magic",
            Self::BadLength => "bad length",
            Self::BadCrc => "bad crc",
            Self::BadHash => "value hash does not match the value",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a value for `key`, written by `writer` with sequence number `seq`, carrying
/// `payload_len` bytes of payload derived from the key and sequence (so two writes of the same
/// key differ in more than the header).
pub fn encode(key: &[u8], writer: u32, seq: u64, payload_len: usize) -> Vec<u8> {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let key = &key[..usize::from(key_len)];
    let payload_len32 = u32::try_from(payload_len).unwrap_or(u32::MAX);
    let payload_len = payload_len32 as usize;
    let mut out = Vec::with_capacity(OVERHEAD + key.len() + payload_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&writer.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&payload_len32.to_be_bytes());
    let mut rng = fastrand::Rng::with_seed(seq ^ (u64::from(crc32fast::hash(key)) << 32));
    out.extend((0..payload_len).map(|_| rng.alphanumeric() as u8));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes bytes read back. Never panics, whatever the input.
///
/// # Errors
/// A [`DecodeError`] when the bytes are not a whole, intact checker value.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.len() < OVERHEAD {
        return Err(DecodeError::TooShort);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if !body.starts_with(MAGIC) {
        return Err(DecodeError::BadMagic);
    }
    let stored_crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != stored_crc {
        return Err(DecodeError::BadCrc);
    }
    let mut r = Reader { buf: &body[4..] };
    let key_len = usize::from(u16::from_be_bytes(r.array()?));
    let key = r.take(key_len)?.to_vec();
    let writer = u32::from_be_bytes(r.array()?);
    let seq = u64::from_be_bytes(r.array()?);
    let payload_len = u32::from_be_bytes(r.array()?) as usize;
    r.take(payload_len)?;
    if !r.buf.is_empty() {
        return Err(DecodeError::BadLength);
    }
    Ok(Decoded { key, writer, seq })
}

/// A bounds-checked cursor over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::BadLength);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// What the model expected of one key for one read: the window a value must fall in.
///
/// `floor` is taken when the read is sent, everything else when its reply arrives, so a write
/// acknowledged while the read was in flight may or may not be seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// The writer that owns the key (`None`: any writer may write it, as in check-and-set mode).
    pub owner: Option<u32>,
    /// Number of writers; a value from a writer at or above it was never written by this run.
    pub writers: u32,
    /// Highest acknowledged sequence number when the read was sent: anything lower is older
    /// than a value the checker was already told was stored.
    pub floor: u64,
    /// Highest acknowledged sequence number when the reply arrived.
    pub acked: u64,
    /// Highest sequence number sent when the reply arrived: anything higher was never written.
    pub attempted: u64,
    /// What a miss means for this read.
    pub miss: Miss,
    /// Sequence numbers whose writes ended in doubt: they may be applied late, even after a
    /// later write was acknowledged, so reading one is never stale.
    pub doubt: Vec<u64>,
    /// This is the final, quiescent read: an older value is LOST, not STALE.
    pub verdict: bool,
}

impl Expect {
    /// The window, for violation lines.
    pub fn describe(&self) -> String {
        format!(
            "floor {} acked {} attempted {} miss {:?} doubt {:?}",
            self.floor, self.acked, self.attempted, self.miss, self.doubt
        )
    }
}

/// What a miss (no value) means for one read, decided by the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Miss {
    /// Nothing was acknowledged or observed for the key when the read was sent: allowed.
    #[default]
    NeverWritten,
    /// A delete that may be the key's latest write, or a TTL that may have run out: allowed.
    Absent,
    /// Allowed only because a crash may have wiped the only copy of the key's bucket.
    Crash,
    /// Not allowed: stale during the run, lost at the final read.
    Violation,
}

/// Why a value is one that this run never wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unexpected {
    /// The value names another key.
    WrongKey,
    /// The value names a writer that does not own the key (or does not exist).
    WrongWriter,
    /// The sequence number is higher than any sent for the key (or zero).
    FutureSeq,
}

impl Unexpected {
    /// A short, static description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongKey => "wrong key",
            Self::WrongWriter => "wrong writer",
            Self::FutureSeq => "sequence never written",
        }
    }
}

/// The class of one read, as defined in `reference/reliability.md` section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The value is an acknowledged one, at or above the floor.
    Ok,
    /// The value was written but its write was not (yet) acknowledged: in flight, in doubt, or
    /// failed after being sent. Allowed, counted.
    NoAck,
    /// A miss on a key that was never acknowledged. Allowed.
    NeverWritten,
    /// A miss allowed only because a crash may have wiped the key. Reported, not a violation.
    Miss,
    /// A miss explained by a delete or an expired TTL. Allowed, counted.
    Absent,
    /// A value read after its TTL had certainly run out (the final TTL check).
    Expired,
    /// During the run: older than the floor, or a miss where none is allowed.
    Stale,
    /// At the final read: older than the last acknowledged value, or missing.
    Lost,
    /// Not a well-formed value (bad CRC, truncated, bad magic or lengths).
    Corrupt(DecodeError),
    /// Well formed, but never written by this run under this key.
    Unexpected(Unexpected),
}

impl Class {
    /// Whether this class breaks a promise whatever the fault profile.
    pub fn is_violation(self) -> bool {
        matches!(
            self,
            Class::Stale | Class::Lost | Class::Expired | Class::Corrupt(_) | Class::Unexpected(_)
        )
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::NoAck => "noack",
            Class::NeverWritten => "never-written",
            Class::Miss => "miss",
            Class::Absent => "absent",
            Class::Expired => "EXPIRED",
            Class::Stale => "STALE",
            Class::Lost => "LOST",
            Class::Corrupt(_) => "CORRUPT",
            Class::Unexpected(_) => "UNEXPECTED",
        }
    }
}

/// Classifies what a read of `key` returned (`None`: a miss) against `expect`.
/// Returns the class and, when the value decoded, its sequence number.
pub fn classify(key: &[u8], read: Option<&[u8]>, expect: &Expect) -> (Class, Option<u64>) {
    let bytes = match read {
        None => {
            let class = match expect.miss {
                Miss::NeverWritten => Class::NeverWritten,
                Miss::Absent => Class::Absent,
                Miss::Crash => Class::Miss,
                Miss::Violation if expect.verdict => Class::Lost,
                Miss::Violation => Class::Stale,
            };
            return (class, None);
        }
        Some(b) => b,
    };
    let value = match decode(bytes) {
        Ok(v) => v,
        Err(e) => return (Class::Corrupt(e), None),
    };
    let seq = Some(value.seq);
    if value.key != key {
        return (Class::Unexpected(Unexpected::WrongKey), seq);
    }
    let wrong_writer = match expect.owner {
        Some(owner) => value.writer != owner,
        None => value.writer >= expect.writers,
    };
    if wrong_writer {
        return (Class::Unexpected(Unexpected::WrongWriter), seq);
    }
    if value.seq == 0 || value.seq > expect.attempted {
        return (Class::Unexpected(Unexpected::FutureSeq), seq);
    }
    let class = if value.seq >= expect.floor {
        if value.seq <= expect.acked {
            Class::Ok
        } else {
            Class::NoAck
        }
    } else if expect.doubt.contains(&value.seq) {
        Class::NoAck
    } else if expect.verdict {
        Class::Lost
    } else {
        Class::Stale
    };
    (class, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"cc:0001:00042";

    fn expect() -> Expect {
        Expect {
            owner: Some(2),
            writers: 4,
            floor: 5,
            acked: 6,
            attempted: 7,
            miss: Miss::Violation,
            doubt: vec![3],
            verdict: false,
        }
    }

    fn read(seq: u64) -> Class {
        classify(KEY, Some(&encode(KEY, 2, seq, 10)), &expect()).0
    }

    #[test]
    fn encode_decode_round_trip() {
        for len in [0, 1, 100, 4000] {
            let v = encode(KEY, 3, 99, len);
            assert_eq!(v.len(), OVERHEAD + KEY.len() + len);
            let d = decode(&v).unwrap();
            assert_eq!((d.key.as_slice(), d.writer, d.seq), (KEY, 3, 99));
        }
    }

    #[test]
    fn payload_differs_between_sequences() {
        assert_ne!(encode(KEY, 1, 1, 32)[30..], encode(KEY, 1, 2, 32)[30..]);
    }

    #[test]
    fn every_truncation_and_byte_flip_is_corrupt() {
        let v = encode(KEY, 1, 7, 20);
        for n in 0..v.len() {
            assert!(decode(&v[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x40;
            let (class, _) = classify(KEY, Some(&bad), &expect());
            assert!(matches!(class, Class::Corrupt(_)), "flip at {i}: {class:?}");
        }
    }

    #[test]
    fn corrupt_kinds() {
        let v = encode(KEY, 1, 7, 20);
        assert_eq!(decode(b"short"), Err(DecodeError::TooShort));
        let mut magic = v.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(DecodeError::BadMagic));
        let mut crc = v.clone();
        let last = crc.len() - 1;
        crc[last] ^= 1;
        assert_eq!(decode(&crc), Err(DecodeError::BadCrc));
        // A consistent CRC over a lying payload length.
        let mut body = v[..v.len() - 4].to_vec();
        let at = body.len() - 20 - 4;
        body[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&body), Err(DecodeError::BadLength));
    }

    #[test]
    fn decode_never_panics_on_noise() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let len = rng.usize(0..80);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() && bytes.len() >= 4 {
                bytes[..4].copy_from_slice(MAGIC);
            }
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn acked_and_in_flight_values() {
        assert_eq!(read(5), Class::Ok);
        assert_eq!(read(6), Class::Ok);
        assert_eq!(read(7), Class::NoAck);
    }

    #[test]
    fn older_than_the_floor_is_stale_during_the_run_and_lost_at_the_verdict() {
        assert_eq!(read(4), Class::Stale);
        let mut e = expect();
        e.verdict = true;
        assert_eq!(
            classify(KEY, Some(&encode(KEY, 2, 4, 1)), &e).0,
            Class::Lost
        );
    }

    #[test]
    fn an_in_doubt_write_may_land_late() {
        assert_eq!(read(3), Class::NoAck);
    }

    #[test]
    fn future_sequence_wrong_key_wrong_writer_are_unexpected() {
        assert_eq!(read(8), Class::Unexpected(Unexpected::FutureSeq));
        assert_eq!(read(0), Class::Unexpected(Unexpected::FutureSeq));
        let other = encode(b"cc:0001:00043", 2, 5, 1);
        assert_eq!(
            classify(KEY, Some(&other), &expect()).0,
            Class::Unexpected(Unexpected::WrongKey)
        );
        let wrong_writer = encode(KEY, 1, 5, 1);
        assert_eq!(
            classify(KEY, Some(&wrong_writer), &expect()).0,
            Class::Unexpected(Unexpected::WrongWriter)
        );
        let mut any = expect();
        any.owner = None;
        assert_eq!(classify(KEY, Some(&wrong_writer), &any).0, Class::Ok);
        let no_such_writer = encode(KEY, 4, 5, 1);
        assert_eq!(
            classify(KEY, Some(&no_such_writer), &any).0,
            Class::Unexpected(Unexpected::WrongWriter)
        );
    }

    #[test]
    fn misses() {
        let mut e = expect();
        assert_eq!(classify(KEY, None, &e).0, Class::Stale);
        e.verdict = true;
        assert_eq!(classify(KEY, None, &e).0, Class::Lost);
        e.miss = Miss::Crash;
        assert_eq!(classify(KEY, None, &e).0, Class::Miss);
        e.miss = Miss::Absent;
        assert_eq!(classify(KEY, None, &e).0, Class::Absent);
        e.miss = Miss::NeverWritten;
        assert_eq!(classify(KEY, None, &e).0, Class::NeverWritten);
    }

    #[test]
    fn violations() {
        assert!(Class::Stale.is_violation());
        assert!(Class::Lost.is_violation());
        assert!(Class::Corrupt(DecodeError::BadCrc).is_violation());
        assert!(Class::Unexpected(Unexpected::WrongKey).is_violation());
        assert!(Class::Expired.is_violation());
        for ok in [
            Class::Ok,
            Class::NoAck,
            Class::Miss,
            Class::Absent,
            Class::NeverWritten,
        ] {
            assert!(!ok.is_violation());
        }
    }
}
