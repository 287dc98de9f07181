//! Time sources for the store.
//!
//! The store keeps expiry times as monotonic seconds since the store started ([`Clock::now`]),
//! so a wall-clock jump (NTP step, manual change) neither expires nor revives items. Wall-clock
//! unix seconds ([`Clock::wall`]) are used only where items leave or enter the process
//! (snapshots, exports, [`insert_item`](super::Store::insert_item)).
//!
//! This module does not own any timer or background task: the server decides when to call the
//! crawler.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time for the store.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic seconds since the store started. Never goes backwards.
    fn now(&self) -> u32;
    /// Current wall-clock time in unix seconds.
    fn wall(&self) -> u64;
}

/// The real clock: [`Instant`] for [`Clock::now`], [`SystemTime`] for [`Clock::wall`].
///
/// Its seconds tick in phase with the wall clock's: [`Clock::now`] counts from the last whole
/// unix second before the clock was made, not from the moment it was made. So an expiry
/// turned into unix seconds and back (a savefile written by one process and loaded by the
/// next, a bucket sent to a peer) lands on the same second boundary, instead of drifting by
/// up to a second each way at every conversion.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
    /// How far into its unix second the wall clock was at `start`.
    phase: Duration,
}

impl SystemClock {
    /// A clock whose [`Clock::now`] counts from the unix second this call falls in.
    pub fn new() -> Self {
        let start = Instant::now();
        let phase = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(Duration::ZERO, |d| {
                Duration::from_nanos(u64::from(d.subsec_nanos()))
            });
        Self { start, phase }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        u32::try_from((self.start.elapsed() + self.phase).as_secs()).unwrap_or(u32::MAX)
    }

    fn wall(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that only moves when told to, for tests.
///
/// [`Clock::now`] starts at 0 and [`Clock::wall`] is `wall_base + now`, so both move together.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU32,
    wall_base: u64,
}

impl ManualClock {
    /// A clock at monotonic time 0 and wall time `wall_base` (unix seconds).
    pub fn new(wall_base: u64) -> Self {
        Self {
            now: AtomicU32::new(0),
            wall_base,
        }
    }

    /// Moves the clock forward by `secs` seconds (saturating).
    pub fn advance(&self, secs: u32) {
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(secs))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u32 {
        self.now.load(Ordering::SeqCst)
    }

    fn wall(&self) -> u64 {
        self.wall_base + u64::from(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_now_and_wall_together() {
        let clock = ManualClock::new(1_000);
        assert_eq!((clock.now(), clock.wall()), (0, 1_000));
        clock.advance(5);
        assert_eq!((clock.now(), clock.wall()), (5, 1_005));
    }

    #[test]
    fn system_clock_starts_near_zero() {
        let clock = SystemClock::new();
        assert!(clock.now() <= 1);
        assert!(clock.wall() > 1_600_000_000);
    }

    #[test]
    fn system_clock_seconds_tick_with_the_wall_clock() {
        // wall - now stays the same while both tick on the same boundaries. Sampled only well
        // inside a wall-clock second (the two reads of a pair are a few ns apart), over more
        // than one boundary.
        let clock = SystemClock::new();
        let inside = || {
            let frac = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_millis());
            (100..900).contains(&frac)
        };
        let mut offset = None;
        let deadline = Instant::now() + Duration::from_millis(2100);
        while Instant::now() < deadline {
            if !inside() {
                continue;
            }
            let o = clock.wall() - u64::from(clock.now());
            assert_eq!(*offset.get_or_insert(o), o);
        }
        assert!(offset.is_some());
    }
}
