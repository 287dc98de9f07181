//! What a run does, in order, and the named workloads that set it (issue 20). No I/O.
//!
//! A run has up to three phases: an unmeasured **fill** that stores every key once (with the
//! run's value sizes, or others: `shift` fills with large values before it measures small
//! ones), the **measured** window, and an **item count** afterwards (how many items the
//! server still holds: `stats` `curr_items` over the memcached protocol and the native one,
//! `DBSIZE` on redis). [`Settings`] holds every choice; [`Preset`] gives the named
//! workloads' settings, which explicit flags then override one by one.
//!
//! The named workloads are the memtier runs of issue 20, each meant for a server given the
//! memory [`Preset::memory_mib`] says (8 connections, one core per server):
//!
//! | name | fill | measured | after |
//! |---|---|---|---|
//! | `full-gauss` | 100,000 keys, 100-4,000 B | 1:3 set:get, Gaussian keys, 100-4,000 B | |
//! | `full-zipf` | as `full-gauss` | 1:3 set:get, Zipfian keys (0.99), 100-4,000 B | |
//! | `shift` | 100,000 keys, 1,000-4,000 B | sets only, uniform, 100-200 B | item count |
//! | `large` | | sets only, uniform over 100,000 keys, 2-60 KB | item count |
//! | `large-notfull` | 100,000 keys, 1-8 KB (2 GiB server) | 80/20 get:set, pipeline 4 | |

use crate::keys::{DEFAULT_GAUSSIAN_SD, DEFAULT_ZIPF_EXPONENT};
use crate::workload::KeyDistribution;

/// Distinct keys of every named workload (memtier's key range in issue 20).
pub const PRESET_KEYS: u64 = 100_000;
/// Connections of every named workload (memtier's 8).
pub const PRESET_CONNECTIONS: usize = 8;

/// Everything a run does apart from where it connects and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Distinct keys.
    pub keys: u64,
    /// Value sizes of the measured window's sets, in bytes (inclusive range).
    pub value_size: (usize, usize),
    /// Share of gets in the measured window.
    pub get_ratio: f64,
    /// Key choice in the measured window.
    pub distribution: KeyDistribution,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    pub pipeline: usize,
    /// Store every key once before measuring.
    pub fill: bool,
    /// Value sizes of the fill when they differ from the measured window's.
    pub fill_value_size: Option<(usize, usize)>,
    /// Count the server's items after the measured window.
    pub count_items: bool,
}

impl Default for Settings {
    /// The side-by-side defaults: 100,000 uniform keys, 100-byte values, 90% gets, 50
    /// connections, one request in flight each, no fill, no item count.
    fn default() -> Settings {
        Settings {
            keys: 100_000,
            value_size: (100, 100),
            get_ratio: 0.9,
            distribution: KeyDistribution::Uniform,
            connections: 50,
            pipeline: 1,
            fill: false,
            fill_value_size: None,
            count_items: false,
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Store every key once with values of `value_min..=value_max` bytes (not measured).
    Fill {
        /// Smallest value, bytes.
        value_min: usize,
        /// Largest value, bytes.
        value_max: usize,
    },
    /// The measured window.
    Measure,
    /// Ask the server how many items it holds.
    CountItems,
}

impl Settings {
    /// The phases of the run, in order.
    pub fn phases(&self) -> Vec<Phase> {
        let mut phases = Vec::with_capacity(3);
        if self.fill {
            let (value_min, value_max) = self.fill_value_size.unwrap_or(self.value_size);
            phases.push(Phase::Fill {
                value_min,
                value_max,
            });
        }
        phases.push(Phase::Measure);
        if self.count_items {
            phases.push(Phase::CountItems);
        }
        phases
    }
}

/// The named workloads (`shoal-bench run --preset NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Full cache: every key stored (100-4,000 B) in 64 MiB, then 1:3 set:get with Gaussian
    /// keys over 100,000 and 100-4,000 B values.
    FullGauss,
    /// As full-gauss with Zipfian keys (exponent 0.99).
    FullZipf,
    /// Size shift: every key stored with 1,000-4,000 B values, then only sets of 100-200 B;
    /// items held counted afterwards.
    Shift,
    /// Large values: only sets of 2-60 KB over 100,000 keys; items held counted afterwards.
    Large,
    /// Large values, not full: every key stored with 1-8 KB values in 2 GiB, then 80/20
    /// get:set with 4 requests in flight per connection.
    LargeNotfull,
}

impl Preset {
    /// Every named workload, in the order the side-by-side script lists them.
    pub const ALL: [Preset; 5] = [
        Preset::FullGauss,
        Preset::FullZipf,
        Preset::Shift,
        Preset::Large,
        Preset::LargeNotfull,
    ];

    /// The name on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Preset::FullGauss => "full-gauss",
            Preset::FullZipf => "full-zipf",
            Preset::Shift => "shift",
            Preset::Large => "large",
            Preset::LargeNotfull => "large-notfull",
        }
    }

    /// Memory every server is given for this workload, in MiB (shoald `--memory`, memcached
    /// `-m`, redis `--maxmemory`).
    pub fn memory_mib(self) -> u64 {
        match self {
            Preset::LargeNotfull => 2048,
            _ => 64,
        }
    }

    /// What the workload measures, in one line.
    pub fn about(self) -> &'static str {
        match self {
            Preset::FullGauss => {
                "full cache, Gaussian keys, 100-4000 B, 1:3 set:get: ops/s, hit ratio"
            }
            Preset::FullZipf => {
                "full cache, Zipfian keys, 100-4000 B, 1:3 set:get: ops/s, hit ratio"
            }
            Preset::Shift => "100-200 B sets after 1000-4000 B ones: ops/s, items held",
            Preset::Large => "2-60 KB sets into a full cache: ops/s, items held",
            Preset::LargeNotfull => "1-8 KB values, 80/20 get:set, pipeline 4, not full: ops/s",
        }
    }

    /// The workload's settings.
    pub fn settings(self) -> Settings {
        let base = Settings {
            keys: PRESET_KEYS,
            connections: PRESET_CONNECTIONS,
            ..Settings::default()
        };
        match self {
            Preset::FullGauss | Preset::FullZipf => Settings {
                value_size: (100, 4000),
                get_ratio: 0.75,
                distribution: if self == Preset::FullGauss {
                    KeyDistribution::Gaussian {
                        sd_fraction: DEFAULT_GAUSSIAN_SD,
                    }
                } else {
                    KeyDistribution::Zipf {
                        exponent: DEFAULT_ZIPF_EXPONENT,
                    }
                },
                fill: true,
                ..base
            },
            Preset::Shift => Settings {
                value_size: (100, 200),
                get_ratio: 0.0,
                fill: true,
                fill_value_size: Some((1000, 4000)),
                count_items: true,
                ..base
            },
            Preset::Large => Settings {
                value_size: (2000, 60_000),
                get_ratio: 0.0,
                count_items: true,
                ..base
            },
            Preset::LargeNotfull => Settings {
                value_size: (1000, 8000),
                get_ratio: 0.8,
                pipeline: 4,
                fill: true,
                ..base
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_match_the_command_line() {
        for p in Preset::ALL {
            let value = p.to_possible_value().expect("every preset is listed");
            assert_eq!(value.get_name(), p.name());
            assert_eq!(Preset::from_str(p.name(), false), Ok(p));
        }
        assert_eq!(Preset::ALL.len(), Preset::value_variants().len());
    }

    #[test]
    fn plain_runs_only_measure_unless_asked() {
        let mut s = Settings::default();
        assert_eq!(s.phases(), [Phase::Measure]);
        s.fill = true;
        s.count_items = true;
        assert_eq!(
            s.phases(),
            [
                Phase::Fill {
                    value_min: 100,
                    value_max: 100
                },
                Phase::Measure,
                Phase::CountItems
            ]
        );
    }

    #[test]
    fn shift_fills_with_larger_values_then_measures_small_sets() {
        let s = Preset::Shift.settings();
        assert_eq!(
            s.phases(),
            [
                Phase::Fill {
                    value_min: 1000,
                    value_max: 4000
                },
                Phase::Measure,
                Phase::CountItems
            ]
        );
        assert_eq!((s.value_size, s.get_ratio), ((100, 200), 0.0));
    }

    #[test]
    fn full_cache_fills_with_the_measured_sizes() {
        for (p, distribution) in [
            (
                Preset::FullGauss,
                KeyDistribution::Gaussian {
                    sd_fraction: 1.0 / 6.0,
                },
            ),
            (Preset::FullZipf, KeyDistribution::Zipf { exponent: 0.99 }),
        ] {
            let s = p.settings();
            assert_eq!(s.distribution, distribution);
            assert_eq!((s.keys, s.connections, s.pipeline), (100_000, 8, 1));
            assert_eq!(s.get_ratio, 0.75);
            assert_eq!(
                s.phases(),
                [
                    Phase::Fill {
                        value_min: 100,
                        value_max: 4000
                    },
                    Phase::Measure
                ]
            );
            assert_eq!(p.memory_mib(), 64);
        }
    }

    #[test]
    fn large_values_with_and_without_a_full_cache() {
        let large = Preset::Large.settings();
        assert_eq!(large.phases(), [Phase::Measure, Phase::CountItems]);
        assert_eq!((large.value_size, large.get_ratio), ((2000, 60_000), 0.0));
        let notfull = Preset::LargeNotfull.settings();
        assert_eq!(
            notfull.phases()[0],
            Phase::Fill {
                value_min: 1000,
                value_max: 8000
            }
        );
        assert_eq!((notfull.get_ratio, notfull.pipeline), (0.8, 4));
        assert_eq!(Preset::LargeNotfull.memory_mib(), 2048);
        // 100,000 values of 4.5 KB on average: about a fifth of the memory, never full.
        let bytes = notfull.keys as f64 * 4500.0;
        assert!(bytes < 0.25 * (2048u64 << 20) as f64);
    }
}
