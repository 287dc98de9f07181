//! Counting and reporting: the shared counters, the per-second line, the violation log, the
//! latency histograms, and the final JSON [`Summary`] with its gates.
//!
//! Counters are plain atomics bumped by the workers; the reporter task prints one line per
//! second from them. Latencies are recorded per worker (no shared lock on the hot path) and
//! merged at the end. This module decides which counters are gated; it does not classify
//! reads (that is [`value`](crate::value)).

use crate::value::Class;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most violation lines printed in full; later ones are only counted.
pub const MAX_VIOLATION_LINES: u64 = 1000;

/// Highest latency the histograms record, in microseconds (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counters shared by every worker, the nemesis and the reporter.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reads answered (hit or miss).
    pub reads: AtomicU64,
    /// Reads that failed (not answered).
    pub read_errors: AtomicU64,
    /// Writes acknowledged (sets, or check-and-set increments).
    pub writes: AtomicU64,
    /// Writes that certainly failed (not sent, refused).
    pub write_errors: AtomicU64,
    /// Check-and-set conflicts (retried by the loop; not errors).
    pub conflicts: AtomicU64,
    /// Writes that ended in doubt.
    pub in_doubt: AtomicU64,
    /// Reads of a written but not (yet) acknowledged value.
    pub noack: AtomicU64,
    /// Misses allowed only by a crash.
    pub miss: AtomicU64,
    /// Misses explained by a delete or an expired TTL.
    pub absent: AtomicU64,
    /// Values read after their TTL had certainly run out (final TTL check).
    pub expired: AtomicU64,
    /// Reads older than the last acknowledgement, during the run.
    pub stale: AtomicU64,
    /// Acknowledged values missing or older at the final read.
    pub lost: AtomicU64,
    /// Values that do not decode or fail their CRC.
    pub corrupt: AtomicU64,
    /// Values never written under that key by this run.
    pub unexpected: AtomicU64,
    /// Check-and-set mode: acknowledged increments missing at the final read.
    pub lost_increments: AtomicU64,
    /// Reads the probe sent straight to a cut-off node that it answered (`probe.rs`).
    pub probe_reads: AtomicU64,
    /// Probe reads it refused or did not answer in time.
    pub probe_refused: AtomicU64,
    /// Faults injected.
    pub faults: AtomicU64,
    /// Node processes that failed on their own: exited unasked, or not cleanly when asked to
    /// stop gracefully, or did not start.
    pub node_failures: AtomicU64,
    /// Violation lines printed so far.
    violation_lines: AtomicU64,
    /// Nanoseconds since the start of the last successful operation.
    last_success_ns: AtomicU64,
    /// Longest gap between two successful operations, in nanoseconds.
    max_gap_ns: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a successful operation at `now` (time since the run started), updating the
    /// longest stretch without one.
    pub fn success(&self, now: Duration) {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let prev = self.last_success_ns.fetch_max(now, Ordering::Relaxed);
        self.max_gap_ns
            .fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
    }

    /// Also counts the time from the last success up to `now` (call once at the end, so a
    /// run that ends unavailable shows it).
    pub fn close_gap(&self, now: Duration) {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let prev = self.last_success_ns.load(Ordering::Relaxed);
        self.max_gap_ns
            .fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
    }

    /// Longest time without a successful operation so far.
    pub fn max_unavailability(&self) -> Duration {
        Duration::from_nanos(self.max_gap_ns.load(Ordering::Relaxed))
    }

    /// Counts a read's class; returns whether it is a violation. Violations are logged on
    /// standard error with the key and what was expected (the first
    /// [`MAX_VIOLATION_LINES`] of them).
    pub fn record(&self, class: Class, key: &[u8], seq: Option<u64>, detail: &str) -> bool {
        let counter = match class {
            Class::Ok | Class::NeverWritten => None,
            Class::NoAck => Some(&self.noack),
            Class::Miss => Some(&self.miss),
            Class::Absent => Some(&self.absent),
            Class::Expired => Some(&self.expired),
            Class::Stale => Some(&self.stale),
            Class::Lost => Some(&self.lost),
            Class::Corrupt(_) => Some(&self.corrupt),
            Class::Unexpected(_) => Some(&self.unexpected),
        };
        if let Some(c) = counter {
            Self::bump(c);
        }
        if !class.is_violation() {
            return false;
        }
        let n = self.violation_lines.fetch_add(1, Ordering::Relaxed);
        if n < MAX_VIOLATION_LINES {
            let what = match class {
                Class::Corrupt(e) => e.as_str(),
                Class::Unexpected(u) => u.as_str(),
                _ => "",
            };
            let seq = seq.map_or_else(|| "miss".to_string(), |s| format!("seq {s}"));
            eprintln!(
                "{} violation {} key {} read {seq} {what} ({detail})",
                timestamp(),
                class.name(),
                String::from_utf8_lossy(key),
            );
        } else if n == MAX_VIOLATION_LINES {
            eprintln!(
                "{} further violations are counted, not printed",
                timestamp()
            );
        }
        true
    }

    /// Sum of the counters that are violations under every profile.
    pub fn violations(&self) -> u64 {
        [
            &self.stale,
            &self.lost,
            &self.expired,
            &self.corrupt,
            &self.unexpected,
            &self.lost_increments,
        ]
        .iter()
        .map(|c| Self::get(c))
        .sum()
    }
}

/// Wall-clock time and time since the process started, for log lines:
/// `2026-11-22T11:47:35.123Z`-free, just `unix=1700000000.123`.
pub fn timestamp() -> String {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("[unix={}.{:03}]", unix.as_secs(), unix.subsec_millis())
}

/// Formats the one line printed every second: per-second rates for operations, running totals
/// for everything that can go wrong.
pub fn second_line(elapsed: Duration, c: &Counters, prev: &mut [u64; 4]) -> String {
    let now = [
        Counters::get(&c.reads),
        Counters::get(&c.read_errors),
        Counters::get(&c.writes),
        Counters::get(&c.write_errors),
    ];
    let d: Vec<u64> = now.iter().zip(prev.iter()).map(|(a, b)| a - b).collect();
    *prev = now;
    format!(
        "{:>5}s R {} (err {}) | W {} (err {}) | doubt {} | noack {} | absent {} | miss {} | lost {} | stale {} | corrupt {} | unexpected {} | faults {}",
        elapsed.as_secs(),
        d[0],
        d[1],
        d[2],
        d[3],
        Counters::get(&c.in_doubt),
        Counters::get(&c.noack),
        Counters::get(&c.absent),
        Counters::get(&c.miss),
        Counters::get(&c.lost),
        Counters::get(&c.stale),
        Counters::get(&c.corrupt),
        Counters::get(&c.unexpected),
        Counters::get(&c.faults),
    )
}

/// Formats the periodic summary line (`--report-every`): totals so far, faults so far, and
/// the average operations per second since the load began (`load` is its length so far).
pub fn period_line(elapsed: Duration, load: Duration, c: &Counters) -> String {
    let get = Counters::get;
    let ops = get(&c.reads) + get(&c.writes);
    let rate = ops as f64 / load.as_secs_f64().max(1e-9);
    format!(
        "{} {:>8.0}s summary so far: reads {} (err {}) writes {} (err {}) doubt {} noack {} miss {} stale {} lost {} corrupt {} unexpected {} node_failures {} faults {} ops/s {:.0}",
        timestamp(),
        elapsed.as_secs_f64(),
        get(&c.reads),
        get(&c.read_errors),
        get(&c.writes),
        get(&c.write_errors),
        get(&c.in_doubt),
        get(&c.noack),
        get(&c.miss),
        get(&c.stale),
        get(&c.lost),
        get(&c.corrupt),
        get(&c.unexpected),
        get(&c.node_failures),
        get(&c.faults),
        rate,
    )
}

/// Latency histograms of one worker (microseconds).
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Successful reads.
    pub read: Histogram<u64>,
    /// Acknowledged writes (a whole check-and-set loop in check-and-set mode).
    pub write: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// Empty histograms.
    pub fn new() -> Self {
        // hdrhistogram only refuses invalid bounds; these are valid constants.
        let h =
            || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Self {
            read: h(),
            write: h(),
        }
    }

    /// Records one latency in `hist`.
    pub fn record(hist: &mut Histogram<u64>, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds another worker's histograms.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.read.add(&other.read);
        let _ = self.write.add(&other.write);
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What the final, quiescent read of every key found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FinalRead {
    /// Keys read.
    pub keys: u64,
    /// Keys holding their last acknowledged value (or, in check-and-set mode, a counter
    /// within the acknowledged and in-doubt increments).
    pub correct: u64,
    /// Keys holding a later, unacknowledged value (in doubt).
    pub noack: u64,
    /// Keys never acknowledged and missing.
    pub never_written: u64,
    /// Keys missing because a crash wiped them (kill profile).
    pub miss: u64,
    /// Keys missing because they were deleted or their TTL ran out.
    pub absent: u64,
    /// Keys missing or older than their last acknowledged value.
    pub lost: u64,
    /// Keys holding a corrupt value.
    pub corrupt: u64,
    /// Keys holding a value this run never wrote there.
    pub unexpected: u64,
    /// Keys that could not be read at all: the verdict is incomplete.
    pub unverified: u64,
    /// Keys with a TTL read again after every TTL had run out.
    pub ttl_checked: u64,
    /// Of those, keys still there (EXPIRED, gated).
    pub expired: u64,
    /// Percentage of keys whose value is allowed (correct, noack, never written, miss,
    /// absent).
    pub percent_ok: f64,
}

impl FinalRead {
    /// Counts one key's class.
    pub fn count(&mut self, class: Class) {
        self.keys += 1;
        match class {
            Class::Ok => self.correct += 1,
            Class::NoAck => self.noack += 1,
            Class::NeverWritten => self.never_written += 1,
            Class::Miss => self.miss += 1,
            Class::Absent => self.absent += 1,
            Class::Stale | Class::Lost => self.lost += 1,
            Class::Expired => self.expired += 1,
            Class::Corrupt(_) => self.corrupt += 1,
            Class::Unexpected(_) => self.unexpected += 1,
        }
    }

    /// Fills in `percent_ok`.
    pub fn finish(&mut self) {
        let ok = self.correct + self.noack + self.never_written + self.miss + self.absent;
        self.percent_ok = if self.keys == 0 {
            0.0
        } else {
            (ok as f64 * 100_000.0 / self.keys as f64).round() / 1000.0
        };
    }
}

/// One injected fault, for the summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultRecord {
    /// Seconds since the run started.
    pub at_s: f64,
    /// Fault kind (`graceful`, `kill`, `pause`, `join`, `drain`, `leader`, `full-stop`,
    /// `partition`).
    pub kind: String,
    /// Node index (`None` for whole-cluster faults).
    pub node: Option<usize>,
    /// The node's native address (`None` for whole-cluster faults).
    pub addr: Option<String>,
    /// Buckets the fault touched: the node's (as primary), every bucket for a full stop,
    /// none for a join.
    pub buckets: u32,
    /// How long the fault took, until the node(s) served again, in seconds.
    pub took_s: f64,
    /// Longest stretch from the fault's start without a successful read on its buckets,
    /// until the next fault began or the load ended (`None`: no buckets, nothing measured).
    pub unavailable_read_ms: Option<u64>,
    /// The same for writes.
    pub unavailable_write_ms: Option<u64>,
    /// Redirects the clients followed in the same window (`None`: nothing measured).
    pub redirects: Option<u64>,
    /// Bucket tables the clients fetched in the same window.
    pub table_fetches: Option<u64>,
}

/// The final JSON summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `pass` or `fail`.
    pub verdict: &'static str,
    /// The gates that failed, with their values (empty on a pass).
    pub failed_gates: Vec<String>,
    /// Client used (`rust` or `c`).
    pub client: String,
    /// Mode (`set` or `cas`).
    pub mode: String,
    /// Nemesis faults enabled.
    pub nemesis: Vec<String>,
    /// Native addresses of the cluster's members at the end (the servers given, for
    /// `--servers`).
    pub nodes: Vec<String>,
    /// Seed of the nemesis and the workload.
    pub seed: u64,
    /// Length of the loaded run, in seconds.
    pub duration_s: f64,
    /// Operations per second achieved (answered reads plus acknowledged writes).
    pub ops_per_s: f64,
    /// Operation counts.
    pub counts: BTreeMap<&'static str, u64>,
    /// The final read.
    pub final_read: FinalRead,
    /// Latency percentiles per operation, microseconds.
    pub latency_us: BTreeMap<&'static str, Percentiles>,
    /// Longest time with no successful operation, milliseconds.
    pub max_unavailability_ms: u64,
    /// Faults done, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Every fault, in order.
    pub fault_log: Vec<FaultRecord>,
    /// Stopped early at the first violation (`--stop-on-violation`).
    pub stopped_on_violation: bool,
    /// Own cluster: how many buckets each member was primary of at the end (by native
    /// address), read before the nodes stop.
    pub owners: BTreeMap<String, usize>,
    /// Own cluster: buckets with no primary at the end.
    pub unowned_buckets: usize,
}

impl Summary {
    /// Whether every gate passed.
    pub fn passed(&self) -> bool {
        self.failed_gates.is_empty()
    }
}

/// A running stopwatch for the run, shared by everything that timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// Starts now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::DecodeError;

    #[test]
    fn classes_go_to_their_counters() {
        let c = Counters::default();
        assert!(!c.record(Class::Ok, b"k", Some(1), ""));
        assert!(!c.record(Class::Miss, b"k", None, ""));
        assert!(c.record(Class::Stale, b"k", Some(1), "floor 2"));
        assert!(c.record(Class::Corrupt(DecodeError::BadCrc), b"k", None, ""));
        assert_eq!(Counters::get(&c.miss), 1);
        assert_eq!(c.violations(), 2);
    }

    #[test]
    fn unavailability_is_the_longest_gap() {
        let c = Counters::default();
        c.success(Duration::from_millis(10));
        c.success(Duration::from_millis(500));
        c.success(Duration::from_millis(600));
        assert_eq!(c.max_unavailability(), Duration::from_millis(490));
        c.close_gap(Duration::from_millis(2000));
        assert_eq!(c.max_unavailability(), Duration::from_millis(1400));
    }

    #[test]
    fn the_period_line_says_totals_and_rate() {
        let c = Counters::default();
        c.reads.store(300, Ordering::Relaxed);
        c.writes.store(100, Ordering::Relaxed);
        c.faults.store(2, Ordering::Relaxed);
        let line = period_line(Duration::from_secs(12), Duration::from_secs(10), &c);
        assert!(line.contains("reads 300 (err 0) writes 100"), "{line}");
        assert!(line.contains("faults 2 ops/s 40"), "{line}");
    }

    #[test]
    fn final_read_percentage() {
        let mut f = FinalRead::default();
        f.count(Class::Ok);
        f.count(Class::Ok);
        f.count(Class::NeverWritten);
        f.count(Class::Lost);
        f.finish();
        assert_eq!(f.percent_ok, 75.0);
    }
}
