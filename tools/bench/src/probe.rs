//! The machine's own noise floor: a thread that only reads the clock sees every moment it was
//! not running (preempted by another task, an interrupt, or the hypervisor) as a gap between
//! two readings. Run on the cores the benchmark uses, the gaps bound what any server's tail
//! latency can be there. No I/O: the clock is passed in.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Gaps of at least these lengths are counted, in microseconds.
pub const GAP_THRESHOLDS_US: [u64; 4] = [100, 500, 1_000, 5_000];

/// What a spinning thread saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stalls {
    /// Time spun, in seconds.
    pub duration_s: f64,
    /// Gaps of at least `GAP_THRESHOLDS_US[i]` microseconds, for each `i`.
    pub gaps_at_least_us: Vec<(u64, u64)>,
    /// Sum of the gaps of at least 100 us, in milliseconds.
    pub stalled_ms: f64,
    /// Longest gap, in microseconds.
    pub max_gap_us: f64,
}

/// Reads `clock` until `duration` has passed since its first reading and counts the gaps
/// between consecutive readings.
pub fn spin(duration: Duration, mut clock: impl FnMut() -> Instant) -> Stalls {
    let start = clock();
    let mut last = start;
    let mut counts = [0u64; GAP_THRESHOLDS_US.len()];
    let mut stalled = Duration::ZERO;
    let mut max_gap = Duration::ZERO;
    let floor = Duration::from_micros(GAP_THRESHOLDS_US[0]);
    loop {
        let now = clock();
        let gap = now.saturating_duration_since(last);
        last = now;
        if gap >= floor {
            stalled += gap;
            for (count, us) in counts.iter_mut().zip(GAP_THRESHOLDS_US) {
                if gap >= Duration::from_micros(us) {
                    *count += 1;
                }
            }
        }
        max_gap = max_gap.max(gap);
        if now.saturating_duration_since(start) >= duration {
            break;
        }
    }
    // Microsecond resolution is all a reader needs.
    let micros = |d: Duration| d.as_micros() as f64;
    Stalls {
        duration_s: micros(last.saturating_duration_since(start)) / 1e6,
        gaps_at_least_us: GAP_THRESHOLDS_US.into_iter().zip(counts).collect(),
        stalled_ms: micros(stalled) / 1e3,
        max_gap_us: micros(max_gap),
    }
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} s spun; gaps", self.duration_s)?;
        for (us, n) in &self.gaps_at_least_us {
            write!(f, " >={us}us: {n}")?;
        }
        write!(
            f,
            "; stalled {:.1} ms in all, longest {:.0} us",
            self.stalled_ms, self.max_gap_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that advances by the given steps (microseconds), then by 1 us forever.
    fn fake(steps: &[u64]) -> impl FnMut() -> Instant + '_ {
        let base = Instant::now();
        let mut t = base;
        let mut i = 0;
        move || {
            let now = t;
            t += Duration::from_micros(steps.get(i).copied().unwrap_or(1));
            i += 1;
            now
        }
    }

    #[test]
    fn counts_each_gap_under_every_threshold_it_reaches() {
        // Readings 1 us apart, with gaps of 99, 100, 600, 1000 and 7000 us among them.
        let steps = [1, 99, 1, 100, 1, 600, 1, 1000, 1, 7000];
        let s = spin(Duration::from_millis(20), fake(&steps));
        assert_eq!(
            s.gaps_at_least_us,
            vec![(100, 4), (500, 3), (1000, 2), (5000, 1)]
        );
        assert!((s.stalled_ms - 8.7).abs() < 1e-9, "{}", s.stalled_ms);
        assert!((s.max_gap_us - 7000.0).abs() < 1e-6);
        assert!(s.duration_s >= 0.020);
    }

    #[test]
    fn a_quiet_clock_has_no_gaps() {
        let s = spin(Duration::from_millis(5), fake(&[]));
        assert!(s.gaps_at_least_us.iter().all(|&(_, n)| n == 0));
        assert_eq!(s.stalled_ms, 0.0);
        assert!((s.max_gap_us - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_real_clock_runs_for_the_duration() {
        let s = spin(Duration::from_millis(20), Instant::now);
        assert!(s.duration_s >= 0.020 && s.duration_s < 5.0, "{s}");
    }
}
