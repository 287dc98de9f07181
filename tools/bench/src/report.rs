//! Counting and reporting: per-run tallies with an HDR histogram, the JSON record of a run,
//! and the side-by-side table (medians, min-max and ratios over repetitions). No I/O.

use crate::codec::{Kind, Outcome};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest latency the histogram tracks, in nanoseconds (larger values are clamped).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What one connection (or a whole run, after merging) counted.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Reply latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Fixed-rate loop only: latency from the actual send, in nanoseconds (what the server and
    /// the network cost, without the generator's own lateness).
    pub service: Histogram<u64>,
    /// Gets answered.
    pub gets: u64,
    /// Sets answered.
    pub sets: u64,
    /// Gets that found their key.
    pub hits: u64,
    /// Gets that found nothing.
    pub misses: u64,
    /// Error replies.
    pub errors: u64,
    /// Requests sent (fixed-rate loop only; the closed loop does not count them).
    pub sent: u64,
    /// Largest delay between a request's intended and actual send (fixed-rate loop).
    pub max_send_lag: Duration,
    /// Measured time.
    pub elapsed: Duration,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            service: histogram(),
            gets: 0,
            sets: 0,
            hits: 0,
            misses: 0,
            errors: 0,
            sent: 0,
            max_send_lag: Duration::ZERO,
            elapsed: Duration::ZERO,
        }
    }

    /// Counts a reply without a latency (preloading).
    pub fn count(&mut self, kind: Kind, outcome: Outcome) {
        match kind {
            Kind::Get => self.gets += 1,
            Kind::Set => self.sets += 1,
            Kind::Hello | Kind::Items => {}
        }
        match outcome {
            Outcome::Hit => self.hits += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Stored | Outcome::Ready | Outcome::Items(_) => {}
        }
    }

    /// Records a latency from the actual send (fixed-rate loop).
    pub fn record_service(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.service.saturating_record(ns.max(1));
    }

    /// Counts a reply and its latency.
    pub fn record(&mut self, kind: Kind, outcome: Outcome, latency: Duration) {
        self.count(kind, outcome);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.max(1));
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.gets += other.gets;
        self.sets += other.sets;
        self.hits += other.hits;
        self.misses += other.misses;
        self.errors += other.errors;
        self.sent += other.sent;
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// Replies counted.
    pub fn ops(&self) -> u64 {
        self.gets + self.sets
    }

    /// Gets that found their key, as a share of the gets; `None` without gets.
    pub fn hit_ratio(&self) -> Option<f64> {
        (self.gets > 0).then(|| self.hits as f64 / self.gets as f64)
    }

    /// Latency summary in microseconds.
    pub fn latency_us(&self) -> Latency {
        summarize(&self.latency)
    }

    /// Summary of the latency from the actual send (fixed-rate loop), in microseconds.
    pub fn service_us(&self) -> Option<Latency> {
        (!self.service.is_empty()).then(|| summarize(&self.service))
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(MAX_LATENCY_NS, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn summarize(h: &Histogram<u64>) -> Latency {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Latency {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: h.max() as f64 / 1000.0,
        mean: h.mean() / 1000.0,
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The server's CPU use over the measured window, sampled from `/proc/<pid>/stat` (syscall
/// counts come from `perf stat` in the script: `/proc/<pid>/io` misses `recv`/`sendmsg`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUse {
    /// User CPU seconds per wall second.
    pub cpu_user: f64,
    /// System CPU seconds per wall second.
    pub cpu_sys: f64,
}

/// The JSON record of one run (or one item count).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Which server this was (e.g. `shoald-native`, `memcached`, `redis`).
    pub label: String,
    /// Which workload (e.g. `p16`, `rate50k`, `capacity`).
    pub workload: String,
    /// `closed`, `fixed-rate`, `load` or `items`.
    pub mode: String,
    /// Protocol spoken.
    pub protocol: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    pub pipeline: usize,
    /// Offered rate (fixed-rate loop), operations per second.
    pub rate: Option<f64>,
    /// Measured seconds.
    pub duration_s: f64,
    /// Replies counted.
    pub ops: u64,
    /// Replies per second.
    pub ops_per_sec: f64,
    /// Gets answered.
    pub gets: u64,
    /// Sets answered.
    pub sets: u64,
    /// Gets that hit.
    pub hits: u64,
    /// Gets that missed.
    pub misses: u64,
    /// `hits / gets` (absent without gets).
    #[serde(default)]
    pub hit_ratio: Option<f64>,
    /// Error replies.
    pub errors: u64,
    /// Latency (closed loop: from the actual send; fixed rate: from the intended send).
    pub latency_us: Option<Latency>,
    /// Fixed rate: latency from the actual send, i.e. without the generator's own lateness.
    #[serde(default)]
    pub service_us: Option<Latency>,
    /// Largest lag of a send behind its schedule (fixed rate), microseconds.
    pub max_send_lag_us: Option<f64>,
    /// Requests sent (fixed rate); those beyond `ops` were never answered.
    #[serde(default)]
    pub sent: Option<u64>,
    /// The generator's CPU seconds per wall second.
    pub client_cpu: Option<f64>,
    /// The server's CPU and syscalls, when its pid was given.
    pub server: Option<ServerUse>,
    /// Items the server holds (item count).
    pub items: Option<u64>,
    /// One-minute load average when the run started.
    pub load_avg: Option<f64>,
}

/// Median, min and max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Number of samples.
    pub n: usize,
}

impl Spread {
    /// The spread of `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: s[0],
            max: s[n - 1],
            n,
        })
    }
}

/// The hit-ratio metric's name.
const HIT_RATIO: &str = "hit ratio";

/// A metric shown in the table, and whether more is better.
struct Metric {
    name: &'static str,
    higher_is_better: bool,
    /// Whether the table shows ratios against the reference labels.
    ratio: bool,
    get: fn(&Record) -> Option<f64>,
}

fn metrics_for(mode: &str) -> Vec<Metric> {
    match mode {
        "fixed-rate" => vec![
            Metric {
                name: "p50 us",
                higher_is_better: false,
                ratio: false,
                get: |r| r.latency_us.map(|l| l.p50),
            },
            Metric {
                name: "p99 us",
                higher_is_better: false,
                ratio: true,
                get: |r| r.latency_us.map(|l| l.p99),
            },
            Metric {
                name: "p99.9 us",
                higher_is_better: false,
                ratio: true,
                get: |r| r.latency_us.map(|l| l.p999),
            },
            Metric {
                name: "p99 from actual send us",
                higher_is_better: false,
                ratio: false,
                get: |r| r.service_us.map(|l| l.p99),
            },
            Metric {
                name: "generator max lag us",
                higher_is_better: false,
                ratio: false,
                get: |r| r.max_send_lag_us,
            },
            Metric {
                name: "unanswered",
                higher_is_better: false,
                ratio: false,
                get: |r| r.sent.map(|sent| sent.saturating_sub(r.ops) as f64),
            },
        ],
        "items" => vec![Metric {
            name: "items",
            higher_is_better: true,
            ratio: true,
            get: |r| r.items.map(|n| n as f64),
        }],
        _ => vec![
            Metric {
                name: "ops/s",
                higher_is_better: true,
                ratio: true,
                get: |r| Some(r.ops_per_sec),
            },
            Metric {
                name: "p99 us",
                higher_is_better: false,
                ratio: false,
                get: |r| r.latency_us.map(|l| l.p99),
            },
            // Shown only where some get missed (the full-cache workloads).
            Metric {
                name: HIT_RATIO,
                higher_is_better: true,
                ratio: true,
                get: |r| r.hit_ratio,
            },
            // Shown only for runs that counted the items held afterwards.
            Metric {
                name: "items held",
                higher_is_better: true,
                ratio: true,
                get: |r| r.items.map(|n| n as f64),
            },
            Metric {
                name: "server CPU",
                higher_is_better: false,
                ratio: false,
                get: |r| r.server.map(|s| s.cpu_user + s.cpu_sys),
            },
            Metric {
                name: "server user share",
                higher_is_better: true,
                ratio: false,
                get: |r| {
                    r.server
                        .map(|s| s.cpu_user / (s.cpu_user + s.cpu_sys).max(1e-9))
                },
            },
        ],
    }
}

/// Formats a number compactly (`1.23M`, `456k`, `12.3`).
fn human(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The side-by-side table of `records`, grouped by workload then label, with ratios of each
/// label's median against the medians of `refs` (e.g. `memcached`, `redis`). For metrics where
/// less is better (latency, syscalls) the ratio is still `label / ref`, so below 1 is better.
pub fn table(records: &[Record], refs: &[&str]) -> String {
    let mut groups: BTreeMap<(String, String), BTreeMap<String, Vec<&Record>>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.workload.clone(), r.mode.clone()))
            .or_default()
            .entry(r.label.clone())
            .or_default()
            .push(r);
    }
    let mut out = String::new();
    for ((workload, mode), labels) in &groups {
        // A metric no record of the group has (items without a count) gets no column, nor
        // does the hit ratio where every get hit.
        let records = || labels.values().flatten();
        let metrics: Vec<Metric> = metrics_for(mode)
            .into_iter()
            .filter(|m| records().any(|r| (m.get)(r).is_some()))
            .filter(|m| m.name != HIT_RATIO || records().any(|r| r.misses > 0))
            .collect();
        out.push_str(&format!("\n### {workload} ({mode})\n\n| server | n |"));
        for m in &metrics {
            let better = if m.higher_is_better { "↑" } else { "↓" };
            out.push_str(&format!(" {} {better} median (min-max) |", m.name));
            if m.ratio {
                for r in refs {
                    out.push_str(&format!(" ÷ {r} |"));
                }
            }
        }
        out.push_str("\n|---|---|");
        for m in &metrics {
            let columns = if m.ratio { 1 + refs.len() } else { 1 };
            out.push_str(&"---|".repeat(columns));
        }
        out.push('\n');
        let spread = |label: &str, m: &Metric| -> Option<Spread> {
            let recs = labels.get(label)?;
            let xs: Vec<f64> = recs.iter().filter_map(|r| (m.get)(r)).collect();
            Spread::of(&xs)
        };
        for (label, recs) in labels {
            out.push_str(&format!("| {label} | {} |", recs.len()));
            for m in &metrics {
                match spread(label, m) {
                    Some(s) => out.push_str(&format!(
                        " **{}** ({}-{}) |",
                        human(s.median),
                        human(s.min),
                        human(s.max)
                    )),
                    None => out.push_str(" - |"),
                }
                if !m.ratio {
                    continue;
                }
                for r in refs {
                    let ratio = match (spread(label, m), spread(r, m)) {
                        (Some(a), Some(b)) if b.median != 0.0 => {
                            format!("{:.2}x", a.median / b.median)
                        }
                        _ => "-".into(),
                    };
                    out.push_str(&format!(" {ratio} |"));
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: &str, workload: &str, ops: f64) -> Record {
        Record {
            label: label.into(),
            workload: workload.into(),
            mode: "closed".into(),
            protocol: "memcache".into(),
            connections: 50,
            pipeline: 1,
            rate: None,
            duration_s: 10.0,
            ops: ops as u64 * 10,
            ops_per_sec: ops,
            gets: 0,
            sets: 0,
            hits: 0,
            misses: 0,
            hit_ratio: None,
            errors: 0,
            latency_us: None,
            service_us: None,
            max_send_lag_us: None,
            sent: None,
            client_cpu: None,
            server: None,
            items: None,
            load_avg: None,
        }
    }

    #[test]
    fn spread_takes_median_min_max() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn tally_merges_and_reports() {
        let mut a = Tally::new();
        a.record(Kind::Get, Outcome::Hit, Duration::from_micros(10));
        a.record(Kind::Set, Outcome::Stored, Duration::from_micros(30));
        let mut b = Tally::new();
        b.record(Kind::Get, Outcome::Miss, Duration::from_micros(20));
        a.merge(&b);
        assert_eq!((a.ops(), a.gets, a.hits, a.misses, a.sets), (3, 2, 1, 1, 1));
        let l = a.latency_us();
        assert!((19.9..20.1).contains(&l.p50), "{l:?}");
        assert!((29.9..30.1).contains(&l.max), "{l:?}");
    }

    #[test]
    fn table_has_medians_and_ratios() {
        let records = vec![
            record("shoald", "p1", 300.0),
            record("shoald", "p1", 100.0),
            record("shoald", "p1", 200.0),
            record("memcached", "p1", 100.0),
            record("redis", "p1", 400.0),
        ];
        let t = table(&records, &["memcached", "redis"]);
        assert!(
            t.contains("| shoald | 3 | **200** (100-300) | 2.00x | 0.50x |"),
            "{t}"
        );
        assert!(t.contains("### p1 (closed)"), "{t}");
        // No misses and no item counts: no such columns.
        assert!(!t.contains("hit ratio") && !t.contains("items held"), "{t}");
    }

    #[test]
    fn table_shows_hit_ratio_and_items_held_where_measured() {
        let with = |label: &str, hits: u64, misses: u64, items: u64| {
            let mut r = record(label, "full-gauss", 100.0);
            let mut t = Tally::new();
            for _ in 0..hits {
                t.count(Kind::Get, Outcome::Hit);
            }
            for _ in 0..misses {
                t.count(Kind::Get, Outcome::Miss);
            }
            (r.gets, r.hits, r.misses, r.hit_ratio) = (t.gets, t.hits, t.misses, t.hit_ratio());
            r.items = Some(items);
            r
        };
        let records = vec![
            with("shoald", 9, 1, 300),
            with("memcached", 3, 1, 200),
            with("redis", 10, 0, 100),
        ];
        let t = table(&records, &["memcached", "redis"]);
        assert!(t.contains("hit ratio ↑"), "{t}");
        assert!(
            t.contains("| shoald | 1 | **100** (100-100) | 1.00x | 1.00x | **0.900** (0.900-0.900) | 1.20x | 0.90x | **300** (300-300) | 1.50x | 3.00x |"),
            "{t}"
        );
        assert_eq!(Tally::new().hit_ratio(), None);
    }
}
