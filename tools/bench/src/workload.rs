//! What to send: keys, values and the get/set mix. No I/O.
//!
//! Keys are `<prefix><index>` with the index zero-padded to [`KEY_DIGITS`] digits, so with the
//! default prefix `key:` every key is 16 bytes. Indexes are uniform over `0..keys`, drawn
//! from a hot set (`hot_fraction` of the keys receive `hot_probability` of the operations),
//! Gaussian around the middle key or Zipfian over key ranks (see [`crate::keys`]).
//! Values are `value_min..=value_max` bytes taken from a fixed pseudo-random pool, so building
//! a value costs nothing.

/// Digits of the key index.
pub const KEY_DIGITS: usize = 12;
/// Longest key prefix accepted.
pub const MAX_PREFIX: usize = 64;

use crate::keys::{Gaussian, Zipf, DEFAULT_GAUSSIAN_SD, DEFAULT_ZIPF_EXPONENT};

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// `fraction` of the keys get `probability` of the operations.
    HotSet {
        /// Share of the keyspace that is hot (0..=1).
        fraction: f64,
        /// Share of the operations that go to the hot keys (0..=1).
        probability: f64,
    },
    /// Normal around the middle key (memtier's `G` pattern).
    Gaussian {
        /// Standard deviation as a fraction of the key count (above 0).
        sd_fraction: f64,
    },
    /// Key `i` with probability proportional to `(i + 1)^-exponent` (key 0 the hottest).
    Zipf {
        /// The exponent (above 0; 0.99 in YCSB).
        exponent: f64,
    },
}

/// A `--key-distribution` spec that is not `uniform`, `gaussian[:SD]` or `zipf[:EXPONENT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDistribution(pub String);

impl std::fmt::Display for BadDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad key distribution {:?}: want uniform, gaussian[:SD_FRACTION] or zipf[:EXPONENT] \
             (numbers above 0)",
            self.0
        )
    }
}

impl std::error::Error for BadDistribution {}

impl std::str::FromStr for KeyDistribution {
    type Err = BadDistribution;

    /// `uniform`, `gaussian` (sd a sixth of the keys), `gaussian:0.1`, `zipf` (exponent
    /// 0.99), `zipf:1.2`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = || BadDistribution(spec.to_string());
        let (name, arg) = match spec.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (spec, None),
        };
        let number = |default: f64| -> Result<f64, BadDistribution> {
            match arg {
                None => Ok(default),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(bad),
            }
        };
        match name {
            "uniform" if arg.is_none() => Ok(KeyDistribution::Uniform),
            "gaussian" => Ok(KeyDistribution::Gaussian {
                sd_fraction: number(DEFAULT_GAUSSIAN_SD)?,
            }),
            "zipf" => Ok(KeyDistribution::Zipf {
                exponent: number(DEFAULT_ZIPF_EXPONENT)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// A distribution ready to draw from (the Zipf constants are computed once per generator).
#[derive(Debug, Clone, Copy)]
enum Sampler {
    Uniform,
    HotSet { hot: u64, probability: f64 },
    Gaussian(Gaussian),
    Zipf(Zipf),
}

impl Sampler {
    fn new(distribution: KeyDistribution, keys: u64) -> Sampler {
        match distribution {
            KeyDistribution::Uniform => Sampler::Uniform,
            KeyDistribution::HotSet {
                fraction,
                probability,
            } => Sampler::HotSet {
                hot: ((keys as f64 * fraction) as u64).clamp(1, keys),
                probability,
            },
            KeyDistribution::Gaussian { sd_fraction } => {
                Sampler::Gaussian(Gaussian::new(keys, sd_fraction))
            }
            KeyDistribution::Zipf { exponent } => Sampler::Zipf(Zipf::new(keys, exponent)),
        }
    }

    fn sample(&self, rng: &mut fastrand::Rng, keys: u64) -> u64 {
        match *self {
            Sampler::Uniform => rng.u64(0..keys),
            Sampler::HotSet { hot, probability } => {
                if hot == keys || rng.f64() < probability {
                    rng.u64(0..hot)
                } else {
                    rng.u64(hot..keys)
                }
            }
            Sampler::Gaussian(g) => g.sample(rng),
            Sampler::Zipf(z) => z.sample(rng),
        }
    }
}

/// The workload of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Workload {
    /// Number of distinct keys.
    pub keys: u64,
    /// Key prefix.
    pub prefix: String,
    /// Key choice.
    pub distribution: KeyDistribution,
    /// Smallest value, in bytes.
    pub value_min: usize,
    /// Largest value, in bytes.
    pub value_max: usize,
    /// Share of operations that are gets (0..=1); the rest are sets.
    pub get_ratio: f64,
}

/// One operation chosen by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Get (true) or set.
    pub get: bool,
    /// Key index.
    pub key: u64,
    /// Value length for a set.
    pub value_len: usize,
}

/// Draws operations for one connection.
pub struct Generator {
    workload: Workload,
    sampler: Sampler,
    rng: fastrand::Rng,
    values: Vec<u8>,
    key: Vec<u8>,
}

impl Generator {
    /// A generator with its own seed (use a different seed per connection).
    pub fn new(workload: Workload, seed: u64) -> Generator {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Printable bytes so the same value works in every protocol and shows in dumps.
        let values = (0..workload.value_max.max(1) + 4096)
            .map(|_| rng.u8(b'a'..=b'z'))
            .collect();
        let mut key = Vec::with_capacity(workload.prefix.len() + KEY_DIGITS);
        key.extend_from_slice(workload.prefix.as_bytes());
        key.resize(workload.prefix.len() + KEY_DIGITS, b'0');
        Generator {
            sampler: Sampler::new(workload.distribution, workload.keys),
            workload,
            rng,
            values,
            key,
        }
    }

    /// The next operation.
    pub fn next_choice(&mut self) -> Choice {
        let w = &self.workload;
        let get = self.rng.f64() < w.get_ratio;
        let key = self.sampler.sample(&mut self.rng, w.keys);
        let value_len = if get {
            0
        } else {
            self.rng.usize(w.value_min..=w.value_max)
        };
        Choice {
            get,
            key,
            value_len,
        }
    }

    /// The key with index `index` (valid until the next call).
    pub fn key(&mut self, index: u64) -> &[u8] {
        let digits = &mut self.key[self.workload.prefix.len()..];
        let mut n = index;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        &self.key
    }

    /// A value of `len` bytes (from a random offset of the pool, so values differ).
    pub fn value(&mut self, len: usize) -> &[u8] {
        let start = self.rng.usize(0..4096);
        &self.values[start..start + len]
    }

    /// Fills `key_out` and `value_out` with key `index` and a value for it (for preloading).
    pub fn key_and_value(&mut self, index: u64, key_out: &mut Vec<u8>, value_out: &mut Vec<u8>) {
        key_out.clear();
        key_out.extend_from_slice(self.key(index));
        let len = self
            .rng
            .usize(self.workload.value_min..=self.workload.value_max);
        value_out.clear();
        let v = self.value(len).to_vec();
        value_out.extend_from_slice(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(distribution: KeyDistribution) -> Workload {
        Workload {
            keys: 1000,
            prefix: "key:".into(),
            distribution,
            value_min: 100,
            value_max: 100,
            get_ratio: 0.9,
        }
    }

    #[test]
    fn keys_are_sixteen_bytes_and_zero_padded() {
        let mut g = Generator::new(workload(KeyDistribution::Uniform), 1);
        assert_eq!(g.key(0), b"key:000000000000");
        assert_eq!(g.key(99_999), b"key:000000099999");
        assert_eq!(g.key(7).len(), 16);
    }

    #[test]
    fn mix_and_range_follow_the_workload() {
        let mut g = Generator::new(workload(KeyDistribution::Uniform), 2);
        let n = 100_000;
        let mut gets = 0;
        for _ in 0..n {
            let c = g.next_choice();
            assert!(c.key < 1000);
            if c.get {
                gets += 1;
            } else {
                assert_eq!(c.value_len, 100);
                assert_eq!(g.value(c.value_len).len(), 100);
            }
        }
        let ratio = f64::from(gets) / f64::from(n);
        assert!((0.88..0.92).contains(&ratio), "{ratio}");
    }

    #[test]
    fn hot_set_gets_its_share() {
        let mut g = Generator::new(
            workload(KeyDistribution::HotSet {
                fraction: 0.01,
                probability: 0.9,
            }),
            3,
        );
        let n = 100_000;
        let hot = (0..n).filter(|_| g.next_choice().key < 10).count();
        let share = hot as f64 / f64::from(n);
        assert!((0.88..0.92).contains(&share), "{share}");
    }

    #[test]
    fn distributions_parse() {
        let parse = |s: &str| s.parse::<KeyDistribution>();
        assert_eq!(parse("uniform"), Ok(KeyDistribution::Uniform));
        assert_eq!(
            parse("gaussian"),
            Ok(KeyDistribution::Gaussian {
                sd_fraction: DEFAULT_GAUSSIAN_SD
            })
        );
        assert_eq!(
            parse("gaussian:0.1"),
            Ok(KeyDistribution::Gaussian { sd_fraction: 0.1 })
        );
        assert_eq!(parse("zipf"), Ok(KeyDistribution::Zipf { exponent: 0.99 }));
        assert_eq!(
            parse("zipf:1.2"),
            Ok(KeyDistribution::Zipf { exponent: 1.2 })
        );
        for bad in [
            "",
            "normal",
            "zipf:0",
            "zipf:-1",
            "gaussian:x",
            "uniform:1",
            "zipf:nan",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skewed_keys_stay_in_the_keyspace() {
        for distribution in [
            KeyDistribution::Gaussian { sd_fraction: 0.5 },
            KeyDistribution::Zipf { exponent: 0.99 },
        ] {
            let mut g = Generator::new(workload(distribution), 5);
            let mut top = 0;
            for _ in 0..20_000 {
                let key = g.next_choice().key;
                assert!(key < 1000, "{distribution:?}: {key}");
                top += u32::from(key == 0);
            }
            // Zipf: key 0 is the hottest (about 13% of draws over 1,000 keys); Gaussian:
            // key 0 is at the edge.
            match distribution {
                KeyDistribution::Zipf { .. } => assert!(top > 2000, "{top}"),
                _ => assert!(top < 100, "{top}"),
            }
        }
    }

    #[test]
    fn ranged_values_stay_in_range() {
        let mut w = workload(KeyDistribution::Uniform);
        w.value_min = 10;
        w.value_max = 20;
        w.get_ratio = 0.0;
        let mut g = Generator::new(w, 4);
        let mut seen = [false; 21];
        for _ in 0..10_000 {
            let c = g.next_choice();
            assert!((10..=20).contains(&c.value_len));
            seen[c.value_len] = true;
        }
        assert!(seen[10] && seen[20]);
    }
}
