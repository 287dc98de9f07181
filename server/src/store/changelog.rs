//! Per-bucket change logs, and the change records that travel between stores.
//!
//! A bucket keeps a log only while someone reads it
//! ([`Store::start_change_log`](super::Store::start_change_log)): a node that replicates or
//! moves nothing pays one `Option` check per write. The log is a byte ring holding, per change, only the seq and the
//! key (`seq u64 | key_len u8 | key`; `key_len` 0 = the whole bucket was cleared), about
//! 10 + key bytes per change, within
//! [`StoreConfig::change_log_bytes`](super::StoreConfig::change_log_bytes). The ring grows by doubling up to the cap and then
//! reuses its memory, so the write path allocates nothing once it is full.
//!
//! Values are read when the log is read, not when the change is made: a reader gets, for
//! each logged key, the item as it is *now* if the log entry is its latest change, a
//! [`Change::Delete`] if the key is gone, and nothing for an entry that a later change of
//! the same key supersedes (that later entry speaks for it). So a reader that has read up to
//! the bucket's current seq holds exactly the bucket's current content, and intermediate
//! versions of a key may be skipped (the log is for convergence: replication catch-up and
//! bucket movement, not an audit trail).
//!
//! **No silent gap.** The log knows a `floor`: every change with a seq above it is in the
//! log. Entries dropped for the cap raise the floor; a reader asking for changes since a seq
//! below the floor gets [`ChangeLogError::Behind`] and must start again from a snapshot.
//!
//! This module owns the ring and the record types; the partition decides what is logged.

use std::collections::VecDeque;
use std::fmt;

use super::item::OwnedItem;

/// Bytes of an entry before its key: seq (8) and key length (1).
const ENTRY_HEADER: usize = 9;

/// Entries between two marks (see [`ChangeLog::marks`]): a reader skips at most this many
/// to reach where it asked to start.
const MARK_EVERY: u32 = 32;

/// One change of a bucket, as [`Store::changes_since`](super::Store::changes_since) returns
/// it and [`Store::apply`](super::Store::apply) installs it. Every variant carries the
/// bucket sequence number the change took on the node that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The item now stored under its key (with its hash, flags, seq and absolute expiry).
    Set(OwnedItem),
    /// The key is gone (deleted, evicted, or expired before the change was read).
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Sequence number of the removal.
        seq: u64,
    },
    /// The item's expiry changed (touch, get-and-touch). Never produced by
    /// [`Store::changes_since`](super::Store::changes_since), which sends the whole item; a
    /// replication path may send it.
    Touch {
        /// The key.
        key: Vec<u8>,
        /// Sequence number of the touch.
        seq: u64,
        /// New absolute expiry in unix seconds, 0 = never.
        expires_at: u64,
    },
    /// Every item of the bucket with a lower seq is gone (flush_all, remove_bucket).
    Clear {
        /// The bucket.
        bucket: u32,
        /// Sequence number of the clear.
        seq: u64,
    },
}

impl Change {
    /// The sequence number of the change.
    pub fn seq(&self) -> u64 {
        match self {
            Change::Set(item) => item.seq,
            Change::Delete { seq, .. } | Change::Touch { seq, .. } | Change::Clear { seq, .. } => {
                *seq
            }
        }
    }

    /// The key the change is about (`None` for [`Change::Clear`]).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Change::Set(item) => Some(&item.key),
            Change::Delete { key, .. } | Change::Touch { key, .. } => Some(key),
            Change::Clear { .. } => None,
        }
    }
}

/// A run of changes read from a bucket's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The changes, in seq order.
    pub changes: Vec<Change>,
    /// Every change of the bucket with a seq up to this one is reflected in `changes` (or
    /// in what the reader had): pass it as `since` next time. When it equals the bucket's
    /// seq the reader has caught up.
    pub through: u64,
}

/// Why a change log could not be read (or kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeLogError {
    /// The bucket keeps no change log (never started, stopped, or dropped since).
    NotKept {
        /// The bucket.
        bucket: u32,
    },
    /// Changes after `since` are no longer all in the log (it dropped them to stay within
    /// its cap, or it started later): the reader must start again from a snapshot.
    Behind {
        /// The bucket.
        bucket: u32,
        /// The seq the reader asked from.
        since: u64,
        /// The log holds every change above this seq.
        floor: u64,
    },
    /// The reader asked from a seq the bucket has not reached (it read another store, or
    /// the bucket was dropped since).
    Ahead {
        /// The bucket.
        bucket: u32,
        /// The seq the reader asked from.
        since: u64,
        /// The bucket's seq.
        seq: u64,
    },
    /// Change logs are turned off
    /// ([`StoreConfig::change_log_bytes`](super::StoreConfig::change_log_bytes) is 0).
    Off,
    /// The bucket number is not below the bucket count.
    NoSuchBucket {
        /// The bucket.
        bucket: u32,
    },
}

impl fmt::Display for ChangeLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeLogError::NotKept { bucket } => {
                write!(f, "bucket {bucket} keeps no change log")
            }
            ChangeLogError::Behind {
                bucket,
                since,
                floor,
            } => write!(
                f,
                "the change log of bucket {bucket} no longer holds the changes after seq \
                 {since} (it starts after {floor}): start again from a snapshot"
            ),
            ChangeLogError::Ahead { bucket, since, seq } => write!(
                f,
                "changes of bucket {bucket} asked from seq {since}, but the bucket is at {seq}"
            ),
            ChangeLogError::Off => f.write_str("change logs are turned off"),
            ChangeLogError::NoSuchBucket { bucket } => write!(f, "no bucket {bucket}"),
        }
    }
}

impl std::error::Error for ChangeLogError {}

/// The change log of one bucket: a ring of `(seq, key)` entries in ascending seq order.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    ring: VecDeque<u8>,
    /// Where every [`MARK_EVERY`]-th entry starts: `(seq, offset)`, the offset counted from
    /// the first byte ever pushed, so a reader asking for the changes after a seq starts
    /// near them instead of scanning the ring from its oldest entry (which made every
    /// replicated write cost a scan of the whole log).
    marks: VecDeque<(u64, u64)>,
    /// The offset (as in `marks`) of the ring's first byte: bytes dropped from the front.
    base: u64,
    /// Entries pushed since the last mark.
    unmarked: u32,
    cap: usize,
    /// Every change with a seq above this is in the ring.
    floor: u64,
    /// How many readers asked for the log; it is freed when the last one stops.
    pub readers: u32,
}

impl ChangeLog {
    /// An empty log of a bucket at `seq`, holding at most `cap` bytes (allocated as used).
    pub(crate) fn new(cap: usize, seq: u64) -> Self {
        Self {
            ring: VecDeque::new(),
            marks: VecDeque::new(),
            base: 0,
            unmarked: 0,
            cap,
            floor: seq,
            readers: 1,
        }
    }

    /// The log holds every change with a seq above this.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.capacity() + self.marks.capacity() * std::mem::size_of::<(u64, u64)>()
    }

    /// Records that `key` changed at `seq` (an empty key: the bucket was cleared). `seq`
    /// must be above every seq already logged (the partition gives seqs in order).
    pub(crate) fn push(&mut self, seq: u64, key: &[u8]) {
        let key = &key[..key.len().min(usize::from(u8::MAX))];
        let len = ENTRY_HEADER + key.len();
        if len > self.cap {
            self.base += self.ring.len() as u64;
            self.ring.clear();
            self.marks.clear();
            self.unmarked = 0;
            self.floor = seq;
            return;
        }
        while self.ring.len() + len > self.cap {
            match self.pop_front() {
                Some(dropped) => self.floor = dropped,
                None => break,
            }
        }
        if self.ring.capacity() < self.ring.len() + len {
            // Grow by doubling, but never past the cap.
            let want = (self.ring.capacity() * 2)
                .max(self.ring.len() + len)
                .max(1024)
                .min(self.cap);
            self.ring.reserve_exact(want - self.ring.len());
        }
        if self.unmarked == 0 {
            self.marks
                .push_back((seq, self.base + self.ring.len() as u64));
        }
        self.unmarked = (self.unmarked + 1) % MARK_EVERY;
        self.ring.extend(seq.to_le_bytes());
        self.ring.push_back(key.len() as u8);
        self.ring.extend(key.iter().copied());
    }

    /// Removes the oldest entry; returns its seq.
    fn pop_front(&mut self) -> Option<u64> {
        let (seq, key_len) = self.header_at(0)?;
        self.ring.drain(..ENTRY_HEADER + key_len);
        self.base += (ENTRY_HEADER + key_len) as u64;
        while self.marks.front().is_some_and(|&(_, at)| at < self.base) {
            self.marks.pop_front();
        }
        Some(seq)
    }

    /// The seq and key length of the entry starting at `at`.
    fn header_at(&self, at: usize) -> Option<(u64, usize)> {
        if at + ENTRY_HEADER > self.ring.len() {
            return None;
        }
        let mut seq = [0u8; 8];
        for (i, b) in seq.iter_mut().enumerate() {
            *b = self.ring[at + i];
        }
        Some((u64::from_le_bytes(seq), usize::from(self.ring[at + 8])))
    }

    /// Calls `f(seq, key)` for each entry with a seq above `since`, in order (an empty key
    /// for a clear), until it returns false. Starts at the last mark at or below `since`, so
    /// it skips fewer than [`MARK_EVERY`] older entries however long the log is.
    pub(crate) fn for_each_after(&self, since: u64, mut f: impl FnMut(u64, &[u8]) -> bool) {
        let mut key = [0u8; 256];
        let first_after = self.marks.partition_point(|&(seq, _)| seq <= since);
        let mut at = match first_after.checked_sub(1) {
            Some(i) => usize::try_from(self.marks[i].1 - self.base).unwrap_or(usize::MAX),
            None => 0,
        };
        while let Some((seq, key_len)) = self.header_at(at) {
            let start = at + ENTRY_HEADER;
            at = start + key_len;
            if seq <= since {
                continue;
            }
            for (i, b) in self.ring.range(start..at).enumerate() {
                key[i] = *b;
            }
            if !f(seq, &key[..key_len]) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(log: &ChangeLog) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        log.for_each_after(0, |seq, key| {
            out.push((seq, key.to_vec()));
            true
        });
        out
    }

    #[test]
    fn reading_after_a_seq_starts_there_whatever_the_log_dropped() {
        // Entries of 9 + 1..=12 key bytes; a cap that keeps a few hundred of them, so the
        // marks' offsets are checked across many drops from the front.
        let mut log = ChangeLog::new(4000, 0);
        let mut seq = 0;
        for round in 0..3000u64 {
            seq += 1 + round % 3;
            let key = vec![b'k'; 1 + (round % 12) as usize];
            log.push(seq, &key);
            if round % 97 != 0 {
                continue;
            }
            let all = entries(&log);
            for since in log.floor()..=seq {
                let mut after = Vec::new();
                log.for_each_after(since, |s, k| {
                    after.push((s, k.to_vec()));
                    true
                });
                let expected: Vec<_> = all.iter().filter(|(s, _)| *s > since).cloned().collect();
                assert_eq!(after, expected, "after {since} at round {round}");
            }
        }
        assert!(log.marks.len() > 1, "marks kept: {}", log.marks.len());
        // An entry larger than the cap empties the log, marks included.
        log.push(seq + 1, &[b'x'; 255]);
        let mut small = ChangeLog::new(100, 0);
        small.push(1, b"a");
        small.push(2, &[b'x'; 200]);
        assert!(entries(&small).is_empty());
        small.push(3, b"b");
        assert_eq!(entries(&small), vec![(3, b"b".to_vec())]);
    }

    #[test]
    fn entries_come_back_in_order() {
        let mut log = ChangeLog::new(1 << 10, 5);
        log.push(6, b"a");
        log.push(7, b"");
        log.push(9, b"key-c");
        assert_eq!(
            entries(&log),
            vec![(6, b"a".to_vec()), (7, vec![]), (9, b"key-c".to_vec())]
        );
        assert_eq!(log.floor(), 5);
    }

    #[test]
    fn the_cap_drops_the_oldest_entries_and_raises_the_floor() {
        // Entries of 10 bytes, a 35-byte cap: three fit.
        let mut log = ChangeLog::new(35, 0);
        for seq in 1..=10 {
            log.push(seq, b"k");
            assert!(log.ring.len() <= 35);
            // The ring, and the smallest allocation of marks (4 of 16 bytes).
            assert!(log.heap_bytes() <= 64 + 64, "{}", log.heap_bytes());
        }
        assert_eq!(log.floor(), 7);
        let seqs: Vec<u64> = entries(&log).iter().map(|e| e.0).collect();
        assert_eq!(seqs, vec![8, 9, 10]);
    }

    #[test]
    fn an_entry_larger_than_the_cap_empties_the_log() {
        let mut log = ChangeLog::new(12, 0);
        log.push(1, b"abc");
        log.push(2, b"a much longer key");
        assert_eq!(entries(&log), vec![]);
        assert_eq!(log.floor(), 2, "change 2 is not in the log");
    }

    #[test]
    fn the_ring_stops_growing_at_the_cap() {
        let mut log = ChangeLog::new(4096, 0);
        for seq in 1..10_000 {
            log.push(seq, &[b'k'; 40]);
        }
        assert!(log.heap_bytes() <= 4096 * 2, "{}", log.heap_bytes());
        assert_eq!(entries(&log).len(), 4096 / 49);
    }
}
