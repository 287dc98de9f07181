//! Command-line options ([`Args`], clap derive) and their translation into a [`Config`].
//!
//! Durations are written `500ms`, `5s`, `2m` or `1h`; ranges `5s..30s` (or one duration for a
//! fixed value); sizes `64MiB`. Nothing here runs anything.

use crate::backend::ClientKind;
use crate::nemesis::Fault;
use crate::workload::Mode;
use crate::{CheckerError, Config, Target};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Soak test for Shoal: writes values that can be checked, reads them back while cycling the
/// nodes, and reports every value that is wrong or missing. Exits 1 when a gated counter is
/// not zero, 2 when the run could not be done.
#[derive(Debug, Parser)]
#[command(name = "consistency-checker", version, args_override_self = true)]
pub struct Args {
    /// Run against servers someone else started (comma-separated `host:port`), without a
    /// nemesis. Without it, the checker starts its own nodes.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// The memcached addresses (comma-separated `host:port`) of the servers given with
    /// `--servers`, for `--client memcache` (required then). The checker's own nodes report
    /// theirs.
    #[arg(long, value_delimiter = ',')]
    pub memcache_servers: Vec<String>,
    /// Nodes to start, formed into one cluster (own cluster only).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Copies of each bucket besides its primary (`--replicas` of the node that creates the
    /// cluster). With 0, a kill loses the killed node's buckets.
    #[arg(long, default_value_t = 0)]
    pub replicas: u32,
    /// Most live nodes: `join` faults stop there (default: `--nodes` + 2).
    #[arg(long)]
    pub max_nodes: Option<usize>,
    /// Most faults (so nodes affected) at once; above 1, faults overlap.
    #[arg(long, default_value_t = 1)]
    pub max_down: usize,
    /// The `shoald` binary (default: `shoald` next to this executable, else on the PATH).
    #[arg(long)]
    pub shoald: Option<PathBuf>,
    /// An extra argument for every node (repeat for several), e.g. `--shoald-arg=--threads=2`.
    #[arg(long = "shoald-arg", allow_hyphen_values = true)]
    pub shoald_args: Vec<String>,
    /// Memory of every node.
    #[arg(long, default_value = "64MiB")]
    pub memory: String,
    /// Where to create the temporary directory for the nodes' data and logs.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the data directories and node logs at the end.
    #[arg(long)]
    pub keep_data: bool,
    /// Faults to inject, comma-separated: graceful, kill, pause, join, drain, leader,
    /// full-stop (or full-restart), partition, lag-kill (or none). Each fault is drawn with equal
    /// chance; name one twice to make it twice as likely.
    #[arg(long, default_value = "graceful", value_delimiter = ',')]
    pub nemesis: Vec<String>,
    /// Time between faults, drawn from this range.
    #[arg(long, default_value = "5s..30s")]
    pub interval: String,
    /// Length of a pause fault, drawn from this range.
    #[arg(long, default_value = "1s..5s")]
    pub pause: String,
    /// Length of a partition fault, drawn from this range.
    #[arg(long, default_value = "2s..6s")]
    pub partition: String,
    /// How long a node stopped (graceful, leader) or killed (kill, leader) stays down before
    /// it starts again, drawn from this range: long enough and a killed leader's peers elect
    /// another.
    #[arg(long, default_value = "0s..2s")]
    pub down: String,
    /// Time the nodes stay down in a full stop.
    #[arg(long, default_value = "1s")]
    pub full_stop_wait: String,
    /// How long a graceful stop may take before the node is killed (a node failure).
    #[arg(long, default_value = "60s")]
    pub stop_timeout: String,
    /// Length of the loaded run (faults stop at its end; then the final read).
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Number of keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u32,
    /// Size of the hot set (the first keys).
    #[arg(long, default_value_t = 1_000)]
    pub hot: u32,
    /// Fraction of operations on the hot set.
    #[arg(long, default_value_t = 0.5)]
    pub hot_fraction: f64,
    /// Fraction of operations that are reads.
    #[arg(long, default_value_t = 0.5)]
    pub read_fraction: f64,
    /// Concurrent workers; worker w owns (writes) the keys k with k % workers == w.
    #[arg(long, default_value_t = 16)]
    pub workers: u32,
    /// Target operations per second over all workers (0: unlimited).
    #[arg(long, default_value_t = 4000.0)]
    pub rate: f64,
    /// Payload size range in bytes.
    #[arg(long, default_value = "16..256")]
    pub value_size: String,
    /// Set mode: fraction of writes that delete the key (a deleted key must never come back).
    #[arg(long, default_value_t = 0.05)]
    pub delete_fraction: f64,
    /// Set mode: fraction of keys written with a TTL (each must exist until its TTL runs out
    /// and be gone after it); 0 for none.
    #[arg(long, default_value_t = 0.1)]
    pub ttl_keys: f64,
    /// TTLs of those keys, drawn from this range (whole seconds).
    #[arg(long, default_value = "3s..8s")]
    pub ttl: String,
    /// Set mode: fraction of writes of keys with a TTL that touch the key (new TTL) instead.
    #[arg(long, default_value_t = 0.2)]
    pub touch_fraction: f64,
    /// `set` (one writer per key, sequence numbers) or `cas` (increments via check-and-set).
    #[arg(long, default_value = "set")]
    pub mode: String,
    /// `rust` (shoal-client), `c` (libshoal through its C ABI) or `memcache` (the memcached
    /// text protocol, against the nodes' memcached ports).
    #[arg(long, default_value = "rust")]
    pub client: String,
    /// Seed of the nemesis and the workload (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Per-request timeout of the client.
    #[arg(long, default_value = "1s")]
    pub request_timeout: String,
    /// Whole-call deadline of the client, retries included.
    #[arg(long, default_value = "3s")]
    pub deadline: String,
    /// Stop at the first violation (then do the final read).
    #[arg(long)]
    pub stop_on_violation: bool,
    /// Fail unless at least this many faults of a kind were done, e.g. `graceful=10,full-restart=2`.
    #[arg(long, value_delimiter = ',')]
    pub require_faults: Vec<String>,
    /// Fail unless at least this many operations per second were achieved.
    #[arg(long, default_value_t = 0.0)]
    pub min_ops_rate: f64,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Key prefix (default: `cc:` and a random run id, so runs never see each other's keys).
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// No per-second lines.
    #[arg(long)]
    pub quiet: bool,
    /// Period of the one-line summary so far (counts, faults, ops/s), for long runs.
    #[arg(long, default_value = "1h")]
    pub report_every: String,
}

impl Args {
    /// Checks the options and builds the run's [`Config`].
    ///
    /// # Errors
    /// [`CheckerError::Config`] for a bad value.
    pub fn into_config(self) -> Result<Config, CheckerError> {
        let bad = |what: &str, v: &str| CheckerError::Config(format!("bad {what}: {v:?}"));
        let mut faults = Vec::new();
        for name in &self.nemesis {
            if name == "none" || name.is_empty() {
                continue;
            }
            faults.push(Fault::parse(name).ok_or_else(|| bad("--nemesis fault", name))?);
        }
        let mut require = Vec::new();
        for r in &self.require_faults {
            let (kind, n) = r
                .split_once('=')
                .ok_or_else(|| bad("--require-faults", r))?;
            let kind = Fault::parse(kind).ok_or_else(|| bad("--require-faults kind", kind))?;
            let n = n.parse().map_err(|_| bad("--require-faults count", r))?;
            require.push((kind, n));
        }
        let target = if self.servers.is_empty() {
            if self.nodes == 0 {
                return Err(bad("--nodes", "0"));
            }
            let shoald = self.shoald.clone().unwrap_or_else(default_shoald);
            let mut node_args = vec!["--memory".to_string(), self.memory.clone()];
            node_args.extend(self.shoald_args.iter().cloned());
            let max_nodes = self.max_nodes.unwrap_or(self.nodes + 2);
            if max_nodes < self.nodes {
                return Err(bad("--max-nodes", "below --nodes"));
            }
            Target::Own {
                shoald,
                nodes: self.nodes,
                replicas: self.replicas,
                max_nodes,
                node_args,
                work_dir: self.work_dir.clone().unwrap_or_else(std::env::temp_dir),
                keep: self.keep_data,
            }
        } else {
            if !faults.is_empty() && self.nemesis != ["graceful"] {
                return Err(CheckerError::Config(
                    "--nemesis needs the checker's own nodes (leave out --servers)".into(),
                ));
            }
            faults.clear();
            Target::External(self.servers.clone())
        };
        let mode = match self.mode.as_str() {
            "set" => Mode::Set,
            "cas" => Mode::Cas,
            other => return Err(bad("--mode", other)),
        };
        let client = match self.client.as_str() {
            "rust" => ClientKind::Rust,
            "c" => ClientKind::C,
            "memcache" => ClientKind::Memcache,
            other => return Err(bad("--client", other)),
        };
        match (&target, client, self.memcache_servers.is_empty()) {
            (Target::External(_), ClientKind::Memcache, true) => {
                return Err(CheckerError::Config(
                    "--client memcache with --servers needs --memcache-servers".into(),
                ))
            }
            (Target::Own { .. }, _, false) => {
                return Err(CheckerError::Config(
                    "--memcache-servers goes with --servers (own nodes report theirs)".into(),
                ))
            }
            _ => {}
        }
        let fractions = [
            self.read_fraction,
            self.hot_fraction,
            self.delete_fraction,
            self.ttl_keys,
            self.touch_fraction,
        ];
        if !fractions.iter().all(|f| (0.0..=1.0).contains(f)) {
            return Err(bad("fraction", "must be within 0..1"));
        }
        if self.max_down == 0 || self.max_down >= crate::availability::MAX_WINDOWS / 2 {
            return Err(bad("--max-down", "must be within 1..=31"));
        }
        if self.workers == 0 || self.keys == 0 {
            return Err(bad("--workers/--keys", "must be at least 1"));
        }
        let (vmin, vmax) = parse_range(&self.value_size, |s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("--value-size", &self.value_size))?;
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        let prefix = self
            .key_prefix
            .clone()
            .unwrap_or_else(|| format!("cc:{:08x}", fastrand::u32(..)));
        let dur = |what: &str, v: &str| parse_duration(v).ok_or_else(|| bad(what, v));
        let range =
            |what: &str, v: &str| parse_range(v, parse_duration).ok_or_else(|| bad(what, v));
        let (ttl_lo, ttl_hi) = range("--ttl", &self.ttl)?;
        let whole_secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1);
        let ttl_every = if self.ttl_keys > 0.0 {
            (1.0 / self.ttl_keys)
                .round()
                .clamp(1.0, f64::from(u32::MAX)) as u32
        } else {
            0
        };
        Ok(Config {
            target,
            faults,
            interval: range("--interval", &self.interval)?,
            pause: range("--pause", &self.pause)?,
            partition: range("--partition", &self.partition)?,
            down: range("--down", &self.down)?,
            max_down: self.max_down,
            full_stop_wait: dur("--full-stop-wait", &self.full_stop_wait)?,
            stop_timeout: dur("--stop-timeout", &self.stop_timeout)?,
            duration: dur("--duration", &self.duration)?,
            keys: self.keys,
            hot: self.hot,
            hot_fraction: self.hot_fraction,
            read_fraction: self.read_fraction,
            workers: self.workers,
            rate: self.rate.max(0.0),
            value_size: (vmin, vmax),
            mode,
            delete_fraction: self.delete_fraction,
            ttl_every,
            ttl: (whole_secs(ttl_lo), whole_secs(ttl_hi)),
            touch_fraction: self.touch_fraction,
            client,
            memcache_servers: self.memcache_servers.clone(),
            seed,
            request_timeout: dur("--request-timeout", &self.request_timeout)?,
            deadline: dur("--deadline", &self.deadline)?,
            stop_on_violation: self.stop_on_violation,
            require_faults: require,
            min_ops_rate: self.min_ops_rate,
            key_prefix: prefix,
            quiet: self.quiet,
            report_every: dur("--report-every", &self.report_every)?,
        })
    }
}

/// `shoald` next to the running executable (as cargo lays out target/<profile>/), else
/// `shoald` on the PATH.
fn default_shoald() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("shoald")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("shoald"))
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Parses `lo..hi` (or a single value for both) with `one`; `lo` must not exceed `hi`.
pub fn parse_range<T: PartialOrd + Copy>(
    s: &str,
    one: impl Fn(&str) -> Option<T>,
) -> Option<(T, T)> {
    let (lo, hi) = match s.split_once("..") {
        Some((lo, hi)) => (one(lo)?, one(hi)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    (lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("5s..30s", parse_duration),
            Some((Duration::from_secs(5), Duration::from_secs(30)))
        );
        assert_eq!(
            parse_range("16..256", |s| s.parse::<usize>().ok()),
            Some((16, 256))
        );
        assert_eq!(parse_range("7", |s| s.parse::<usize>().ok()), Some((7, 7)));
        assert_eq!(parse_range("9..3", |s| s.parse::<usize>().ok()), None);
    }

    #[test]
    fn options_build_a_config() {
        let args = Args::parse_from([
            "cc",
            "--nemesis",
            "graceful,full-restart,leader,join",
            "--require-faults",
            "graceful=10,full-stop=2",
            "--nodes",
            "3",
            "--seed",
            "7",
        ]);
        let c = args.into_config().unwrap();
        assert_eq!(
            c.faults,
            vec![Fault::Graceful, Fault::FullStop, Fault::Leader, Fault::Join]
        );
        assert_eq!(
            c.require_faults,
            vec![(Fault::Graceful, 10), (Fault::FullStop, 2)]
        );
        assert!(matches!(
            c.target,
            Target::Own {
                nodes: 3,
                replicas: 0,
                max_nodes: 5,
                ..
            }
        ));
        assert_eq!(c.max_down, 1);
        assert_eq!(c.report_every, Duration::from_secs(3600));
        assert_eq!(c.seed, 7);
        let bad = Args::parse_from(["cc", "--nemesis", "reboot"]).into_config();
        assert!(matches!(bad, Err(CheckerError::Config(_))));
    }

    #[test]
    fn the_memcache_client_needs_memcached_addresses_for_external_servers() {
        let own = Args::parse_from(["cc", "--client", "memcache"]).into_config();
        assert_eq!(own.unwrap().client, ClientKind::Memcache);
        let external = ["cc", "--servers", "h:7400", "--nemesis", "none", "--client"];
        let missing = Args::parse_from(external.iter().chain(&["memcache"])).into_config();
        assert!(matches!(missing, Err(CheckerError::Config(_))));
        let given = Args::parse_from(external.iter().chain(&[
            "memcache",
            "--memcache-servers",
            "h:11211,i:11211",
        ]))
        .into_config()
        .unwrap();
        assert_eq!(given.memcache_servers, ["h:11211", "i:11211"]);
        let stray = Args::parse_from(["cc", "--memcache-servers", "h:11211"]).into_config();
        assert!(matches!(stray, Err(CheckerError::Config(_))));
    }
}
