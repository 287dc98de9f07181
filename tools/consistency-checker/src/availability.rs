//! Per-fault unavailability: for each fault, the longest stretch during which no read (and,
//! separately, no write) on the buckets the fault touched succeeded.
//!
//! ```text
//!  nemesis: open(buckets, t0) ──► Window slot (start, last read/write success, longest gaps)
//!                                   ▲ bit i set in the mask of every affected bucket
//!  workers: success(bucket, write, now) ── mask of the bucket ── for each bit: gap = now - last
//!  nemesis: close(id, t1) ──► Unavailability { read, write } (an open stretch counts to t1)
//! ```
//!
//! This module is pure: it does no I/O and reads no clock (every time is a [`Duration`] since
//! the run's start, passed in). The hot path ([`Availability::success`]) is one atomic load of
//! the bucket's window mask and, only when a window covers that bucket, two atomic maxima per
//! open window. Memory is fixed at creation: one mask per bucket and [`MAX_WINDOWS`] slots.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Most windows open at once (one bit of a bucket's mask each).
pub const MAX_WINDOWS: usize = 64;

/// Which window a fault opened (a slot, free again once closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowId(usize);

/// What a closed window measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailability {
    /// Longest stretch from the window's start without a successful read on its buckets.
    pub read: Duration,
    /// The same for writes.
    pub write: Duration,
}

/// One window slot. Times are nanoseconds since the run's start.
#[derive(Debug, Default)]
struct Slot {
    /// Taken by an open window.
    open: AtomicBool,
    /// When the window opened.
    start: AtomicU64,
    /// Last successful read on one of its buckets (the start until there is one).
    last_read: AtomicU64,
    /// Last successful write on one of its buckets.
    last_write: AtomicU64,
    /// Longest stretch without a successful read so far.
    max_read: AtomicU64,
    /// Longest stretch without a successful write so far.
    max_write: AtomicU64,
}

/// Successes per bucket, measured against the open fault windows. Shared (`Arc`) by the
/// workers, which report successes, and the nemesis, which opens and closes windows.
#[derive(Debug)]
pub struct Availability {
    /// Bit `i` set: window slot `i` covers this bucket.
    masks: Vec<AtomicU64>,
    slots: Vec<Slot>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Availability {
    /// No windows, for a table of `buckets` buckets.
    pub fn new(buckets: u32) -> Self {
        Self {
            masks: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            slots: (0..MAX_WINDOWS).map(|_| Slot::default()).collect(),
        }
    }

    /// The number of buckets.
    pub fn buckets(&self) -> u32 {
        u32::try_from(self.masks.len()).unwrap_or(u32::MAX)
    }

    /// The bucket of `key` in this table (`shoal_proto::hash::bucket_of`).
    pub fn bucket_of(&self, key: &[u8]) -> u32 {
        shoal_proto::hash::bucket_of(key, self.buckets().max(1))
    }

    /// Records a successful read (`write` false) or write on `bucket` at `now` (time since
    /// the run's start). Unknown buckets are ignored.
    pub fn success(&self, bucket: u32, write: bool, now: Duration) {
        let Some(mask) = self.masks.get(bucket as usize) else {
            return;
        };
        let mut mask = mask.load(Ordering::Relaxed);
        if mask == 0 {
            return;
        }
        let now = nanos(now);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let slot = &self.slots[i];
            let (last, max) = if write {
                (&slot.last_write, &slot.max_write)
            } else {
                (&slot.last_read, &slot.max_read)
            };
            let prev = last.fetch_max(now, Ordering::Relaxed);
            max.fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
        }
    }

    /// Opens a window at `now` over `buckets` (out-of-range buckets are ignored; an empty
    /// list opens a window that measures nothing). `None` when [`MAX_WINDOWS`] are open.
    pub fn open(&self, buckets: &[u32], now: Duration) -> Option<WindowId> {
        let i = self.slots.iter().position(|s| {
            s.open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let slot = &self.slots[i];
        let now = nanos(now);
        for t in [
            &slot.start,
            &slot.last_read,
            &slot.last_write,
            &slot.max_read,
            &slot.max_write,
        ] {
            t.store(0, Ordering::Relaxed);
        }
        slot.start.store(now, Ordering::Relaxed);
        slot.last_read.store(now, Ordering::Relaxed);
        slot.last_write.store(now, Ordering::Relaxed);
        let bit = 1u64 << i;
        for &b in buckets {
            if let Some(mask) = self.masks.get(b as usize) {
                mask.fetch_or(bit, Ordering::Release);
            }
        }
        Some(WindowId(i))
    }

    /// Closes window `id` at `now`: a stretch still open counts up to `now`. The slot is free
    /// again afterwards.
    pub fn close(&self, id: WindowId, now: Duration) -> Unavailability {
        let i = id.0;
        let slot = &self.slots[i];
        let keep = !(1u64 << i);
        for mask in &self.masks {
            mask.fetch_and(keep, Ordering::AcqRel);
        }
        let now = nanos(now);
        let longest = |last: &AtomicU64, max: &AtomicU64| {
            let open = now.saturating_sub(last.load(Ordering::Relaxed));
            Duration::from_nanos(max.load(Ordering::Relaxed).max(open))
        };
        let measured = Unavailability {
            read: longest(&slot.last_read, &slot.max_read),
            write: longest(&slot.last_write, &slot.max_write),
        };
        slot.open.store(false, Ordering::Release);
        measured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn longest_stretch_from_the_start_and_between_successes() {
        let a = Availability::new(8);
        let w = a.open(&[1, 2], ms(1000)).unwrap();
        a.success(1, false, ms(1300)); // read gap 300 from the start
        a.success(2, false, ms(1400));
        a.success(2, true, ms(2500)); // write gap 1500 from the start
        a.success(1, false, ms(2200)); // read gap 800
        let u = a.close(w, ms(2600));
        assert_eq!(u.read, ms(800));
        assert_eq!(u.write, ms(1500));
    }

    #[test]
    fn other_buckets_and_closed_windows_do_not_count() {
        let a = Availability::new(8);
        let w = a.open(&[3], ms(0)).unwrap();
        a.success(4, false, ms(100));
        a.success(4, true, ms(100));
        a.success(99, true, ms(100)); // out of range: ignored
        let u = a.close(w, ms(500));
        assert_eq!(u.read, ms(500), "nothing on bucket 3: the whole window");
        assert_eq!(u.write, ms(500));
        // After the close, successes touch no window.
        a.success(3, false, ms(600));
        let w2 = a.open(&[3], ms(1000)).unwrap();
        let u2 = a.close(w2, ms(1000));
        assert_eq!(u2.read, Duration::ZERO);
    }

    #[test]
    fn an_open_stretch_counts_up_to_the_close() {
        let a = Availability::new(4);
        let w = a.open(&[0], ms(0)).unwrap();
        a.success(0, false, ms(100));
        a.success(0, true, ms(100));
        let u = a.close(w, ms(3100));
        assert_eq!(u.read, ms(3000));
        assert_eq!(u.write, ms(3000));
    }

    #[test]
    fn windows_overlap_and_slots_are_reused() {
        let a = Availability::new(4);
        let w1 = a.open(&[0, 1], ms(0)).unwrap();
        let w2 = a.open(&[1], ms(500)).unwrap();
        a.success(1, false, ms(700));
        a.success(0, false, ms(900));
        let u2 = a.close(w2, ms(1000));
        assert_eq!(
            u2.read,
            ms(300),
            "w2: 500..700 open, then 700..1000 at the close"
        );
        let u1 = a.close(w1, ms(1000));
        assert_eq!(u1.read, ms(700), "w1: 0..700");
        let mut ids = Vec::new();
        for _ in 0..MAX_WINDOWS {
            ids.push(a.open(&[2], ms(0)).expect("a free slot"));
        }
        assert!(a.open(&[2], ms(0)).is_none());
        a.close(ids[5], ms(1));
        assert_eq!(a.open(&[2], ms(1)), Some(ids[5]));
    }

    #[test]
    fn a_window_over_no_buckets_measures_its_length() {
        let a = Availability::new(4);
        let w = a.open(&[], ms(10)).unwrap();
        a.success(0, true, ms(20));
        assert_eq!(a.close(w, ms(40)).write, ms(30));
        assert_eq!(a.bucket_of(b"key"), shoal_proto::hash::bucket_of(b"key", 4));
    }
}
