//! Skewed key choices: a Gaussian around the middle of the keyspace and a Zipfian over key
//! ranks. No I/O and no allocation: each sampler is a few constants, drawn from with the
//! connection's own `fastrand::Rng`.
//!
//! - [`Gaussian`] is memtier's `G` key pattern: a normal distribution centred on the middle
//!   key with a standard deviation given as a fraction of the key count (memtier's default is
//!   a sixth), redrawn when it falls outside the keyspace.
//! - [`Zipf`] gives key `i` (0-based) a probability proportional to `1 / (i + 1)^exponent`,
//!   so key 0 is the hottest. It uses rejection-inversion (Hörmann and Derflinger, as in
//!   Apache Commons' `RejectionInversionZipfSampler`): constant time per draw and no table,
//!   whatever the number of keys.

/// Standard deviation of [`Gaussian`] keys, as a fraction of the key count, when none is
/// given (memtier's default: a sixth, so 99.7% of draws fall inside the keyspace).
pub const DEFAULT_GAUSSIAN_SD: f64 = 1.0 / 6.0;
/// Zipf exponent when none is given (YCSB's default).
pub const DEFAULT_ZIPF_EXPONENT: f64 = 0.99;

/// Normally distributed key indexes centred on the middle of `0..keys`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    keys: u64,
    mean: f64,
    sd: f64,
}

impl Gaussian {
    /// Keys `0..keys` (at least 1) with a standard deviation of `sd_fraction * keys`.
    pub fn new(keys: u64, sd_fraction: f64) -> Gaussian {
        let keys = keys.max(1);
        Gaussian {
            keys,
            mean: (keys as f64 - 1.0) / 2.0,
            sd: (sd_fraction * keys as f64).max(0.0),
        }
    }

    /// One key index (Box-Muller; draws outside the keyspace are drawn again).
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        loop {
            // 1 - f64() is in (0, 1], so the logarithm is finite.
            let radius = (-2.0 * (1.0 - rng.f64()).ln()).sqrt();
            let z = radius * (std::f64::consts::TAU * rng.f64()).cos();
            let x = (self.mean + self.sd * z).round();
            if x >= 0.0 && x < self.keys as f64 {
                return x as u64;
            }
        }
    }
}

/// Zipf-distributed key indexes: key `i` with probability proportional to `(i + 1)^-s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zipf {
    n: f64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    /// Keys `0..keys` (at least 1) with exponent `exponent` (above 0).
    pub fn new(keys: u64, exponent: f64) -> Zipf {
        let mut z = Zipf {
            n: keys.max(1) as f64,
            exponent: exponent.max(1e-6),
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// One key index (0 is the most frequent).
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64 - 1;
            }
        }
    }

    /// `x^-s`.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// The integral of `h`: `(x^(1-s) - 1) / (1 - s)`, or `ln x` when `s` is 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 200_000;

    fn counts(keys: u64, mut draw: impl FnMut(&mut fastrand::Rng) -> u64) -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..DRAWS {
            let k = draw(&mut rng);
            assert!(k < keys, "{k} out of 0..{keys}");
            counts[k as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipf_top_key_gets_its_share() {
        let keys = 1000;
        let z = Zipf::new(keys, DEFAULT_ZIPF_EXPONENT);
        let c = counts(keys, |rng| z.sample(rng));
        // P(key 0) = 1 / H(n, s), the generalised harmonic number.
        let harmonic: f64 = (1..=keys).map(|k| (k as f64).powf(-0.99)).sum();
        let expected = 1.0 / harmonic;
        let top = c[0] as f64 / DRAWS as f64;
        assert!(
            (top - expected).abs() < 0.1 * expected,
            "{top} vs {expected}"
        );
        // Rank 1 against rank 2: 2^s.
        let ratio = c[0] as f64 / c[1] as f64;
        assert!((1.8..2.2).contains(&ratio), "{ratio}");
        // Frequencies fall with rank.
        assert!(
            c[0] > c[9] && c[9] > c[99] && c[99] > c[999],
            "{:?}",
            &c[..10]
        );
    }

    #[test]
    fn zipf_with_exponent_one_and_one_key() {
        let z = Zipf::new(1000, 1.0);
        let c = counts(1000, |rng| z.sample(rng));
        let harmonic: f64 = (1..=1000).map(|k| 1.0 / k as f64).sum();
        let top = c[0] as f64 / DRAWS as f64;
        assert!((top - 1.0 / harmonic).abs() < 0.01, "{top}");
        let one = Zipf::new(1, 0.99);
        let mut rng = fastrand::Rng::with_seed(1);
        assert!((0..100).all(|_| one.sample(&mut rng) == 0));
    }

    #[test]
    fn gaussian_is_centred_with_its_spread() {
        let keys = 10_000;
        let g = Gaussian::new(keys, DEFAULT_GAUSSIAN_SD);
        let c = counts(keys, |rng| g.sample(rng));
        let mean = c
            .iter()
            .enumerate()
            .map(|(k, &n)| k as f64 * n as f64)
            .sum::<f64>()
            / DRAWS as f64;
        assert!((mean - 4999.5).abs() < 50.0, "{mean}");
        // About 68% within one standard deviation (keys / 6) of the middle.
        let sd = keys as f64 / 6.0;
        let within: u64 = c
            .iter()
            .enumerate()
            .filter(|(k, _)| (*k as f64 - 4999.5).abs() <= sd)
            .map(|(_, &n)| n)
            .sum();
        let share = within as f64 / DRAWS as f64;
        assert!((0.66..0.70).contains(&share), "{share}");
        // The ends of the keyspace are rare, the middle common.
        assert!(c[5000] > 10 * c[0].max(1), "{} {}", c[5000], c[0]);
    }

    #[test]
    fn gaussian_stays_inside_a_tiny_keyspace() {
        let g = Gaussian::new(3, 10.0);
        let c = counts(3, |rng| g.sample(rng));
        assert!(c.iter().all(|&n| n > 0), "{c:?}");
    }
}
