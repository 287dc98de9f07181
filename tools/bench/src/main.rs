//! `shoal-bench`: one load generator for shoald, memcached and redis-server.
//!
//! ```text
//! shoal-bench run   --protocol native|memcache|resp --addr HOST:PORT [workload] [--rate N]
//! shoal-bench run   --protocol ... --addr ... --preset NAME  a named workload (`presets`)
//! shoal-bench load  --protocol ... --addr ... [workload]      preload only (capacity fills)
//! shoal-bench items --protocol ... --addr ...                  curr_items / DBSIZE
//! shoal-bench table FILE...                                    medians, min-max, ratios
//! shoal-bench presets                                          named workloads, their memory
//! shoal-bench probe [--duration S]                             this core's scheduling stalls
//! ```
//! Each `run`, `load` and `items` prints one JSON record on stdout (see `report::Record`) and a
//! one-line summary on stderr. `bench/side-by-side.sh` drives all three servers with it.
//!
//! Layout: `codec/` (I/O-free protocol codecs), `workload.rs` (keys, values, mix),
//! `keys.rs` (Gaussian and Zipfian keys), `preset.rs` (a run's phases, named workloads),
//! `driver.rs` (connections, closed and fixed-rate loops), `report.rs` (tallies, JSON, table),
//! `procfs.rs` (server CPU and syscall samples), `probe.rs` (the machine's noise floor).

mod codec;
mod driver;
mod keys;
mod preset;
mod probe;
mod procfs;
mod report;
mod workload;

use clap::{Args, Parser, Subcommand};
use codec::{Codec, Protocol};
use driver::RunConfig;
use preset::{Phase, Preset, Settings};
use report::{Record, ServerUse, Tally};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use workload::{KeyDistribution, Workload};

/// Load generator for Shoal, memcached and redis-server.
#[derive(Parser, Debug)]
#[command(name = "shoal-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure: closed loop (connections x pipeline), or fixed rate with --rate.
    Run(RunArgs),
    /// Store every key once (keys 0..keys in order) and report.
    Load(RunArgs),
    /// Report how many items the server holds.
    Items(RunArgs),
    /// Print the side-by-side table of JSON records (one record per line or file).
    Table {
        /// Files holding records written by `run` and `items`.
        files: Vec<std::path::PathBuf>,
        /// Labels to compare every other label against.
        #[arg(long, value_delimiter = ',', default_value = "memcached,redis")]
        refs: Vec<String>,
    },
    /// List the named workloads (`run --preset NAME`): name, server memory in MiB, what.
    Presets,
    /// Spin on the clock and report the gaps: how often and how long this thread was kept
    /// off its core (run it pinned, on the cores a benchmark uses). Prints one JSON object.
    Probe {
        /// Seconds to spin.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Protocol to speak.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// Server name in the record (for the table).
    #[arg(long, default_value = "server")]
    label: String,
    /// Workload name in the record (for the table) [default: the preset's name, or `run`].
    #[arg(long)]
    workload: Option<String>,
    /// A named workload (see `shoal-bench presets`): sets keys, value sizes, mix, key
    /// distribution, connections, pipeline, fill and item count; flags given override it.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Connections [default: 50].
    #[arg(long)]
    connections: Option<usize>,
    /// Requests in flight per connection (closed loop) [default: 1].
    #[arg(long)]
    pipeline: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Fixed total rate in operations per second (open loop) instead of a closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct keys [default: 100000].
    #[arg(long)]
    keys: Option<u64>,
    /// Key prefix (the 12-digit index follows; `key:` gives 16-byte keys).
    #[arg(long, default_value = "key:")]
    key_prefix: String,
    /// Value size in bytes: `N` or `MIN-MAX` (uniform) [default: 100].
    #[arg(long)]
    value_size: Option<String>,
    /// Share of gets (the rest are sets) [default: 0.9].
    #[arg(long)]
    get_ratio: Option<f64>,
    /// Hot set `FRACTION:PROBABILITY` (e.g. `0.01:0.9`); uniform keys when absent.
    #[arg(long, conflicts_with = "key_distribution")]
    hot: Option<String>,
    /// Key distribution: `uniform`, `gaussian[:SD]` (centred, SD a fraction of the keys,
    /// default 1/6 as memtier's) or `zipf[:EXPONENT]` (key 0 hottest, default 0.99).
    #[arg(long)]
    key_distribution: Option<workload::KeyDistribution>,
    /// Store every key once before measuring.
    #[arg(long)]
    preload: bool,
    /// Value sizes of the preload (`N` or `MIN-MAX`) when they differ from --value-size;
    /// implies --preload.
    #[arg(long)]
    preload_value_size: Option<String>,
    /// Count the server's items after the measured window (the record's `items`).
    #[arg(long)]
    count_items: bool,
    /// Seed of the key and value choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Server process id: report its user and system CPU over the measured window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Tokio worker threads (0 = a current-thread runtime, the lightest on one core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl RunArgs {
    /// The run's settings: the preset's (or the defaults), then every flag given.
    fn settings(&self) -> Result<Settings, String> {
        let mut s = self.preset.map(Preset::settings).unwrap_or_default();
        if let Some(keys) = self.keys {
            s.keys = keys;
        }
        if let Some(size) = &self.value_size {
            s.value_size = parse_range(size)?;
        }
        if let Some(ratio) = self.get_ratio {
            s.get_ratio = ratio;
        }
        if let Some(distribution) = self.key_distribution {
            s.distribution = distribution;
        }
        if let Some(spec) = &self.hot {
            s.distribution = parse_hot(spec)?;
        }
        if let Some(n) = self.connections {
            s.connections = n;
        }
        if let Some(n) = self.pipeline {
            s.pipeline = n;
        }
        if let Some(size) = &self.preload_value_size {
            s.fill_value_size = Some(parse_range(size)?);
        }
        s.fill |= self.preload || self.preload_value_size.is_some();
        s.count_items |= self.count_items;
        Ok(s)
    }

    /// The workload name written in the record.
    fn workload_name(&self) -> String {
        match (&self.workload, self.preset) {
            (Some(name), _) => name.clone(),
            (None, Some(p)) => p.name().into(),
            (None, None) => "run".into(),
        }
    }

    fn config(&self, s: &Settings) -> Result<RunConfig, String> {
        let (value_min, value_max) = s.value_size;
        if s.keys == 0 || self.key_prefix.len() > workload::MAX_PREFIX {
            return Err("--keys must be > 0 and --key-prefix at most 64 bytes".into());
        }
        if !(0.0..=1.0).contains(&s.get_ratio) {
            return Err("--get-ratio must be in 0..=1".into());
        }
        if s.connections == 0 || self.duration.is_nan() || self.duration < 0.0 {
            return Err("--connections must be > 0 and --duration >= 0".into());
        }
        Ok(RunConfig {
            addr: self.addr,
            codec: Codec::new(self.protocol),
            workload: Workload {
                keys: s.keys,
                prefix: self.key_prefix.clone(),
                distribution: s.distribution,
                value_min,
                value_max,
                get_ratio: s.get_ratio,
            },
            connections: s.connections,
            pipeline: s.pipeline.max(1),
            duration: Duration::from_secs_f64(self.duration),
            rate: self.rate.filter(|r| *r > 0.0),
            seed: self.seed,
        })
    }

    fn record(&self, s: &Settings, mode: &str, tally: &Tally) -> Record {
        let secs = tally.elapsed.as_secs_f64();
        Record {
            label: self.label.clone(),
            workload: self.workload_name(),
            mode: mode.into(),
            protocol: serde_json::to_value(self.protocol)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            connections: s.connections,
            pipeline: s.pipeline,
            rate: self.rate,
            duration_s: secs,
            ops: tally.ops(),
            ops_per_sec: if secs > 0.0 {
                tally.ops() as f64 / secs
            } else {
                0.0
            },
            gets: tally.gets,
            sets: tally.sets,
            hits: tally.hits,
            misses: tally.misses,
            hit_ratio: tally.hit_ratio(),
            errors: tally.errors,
            latency_us: (!tally.latency.is_empty()).then(|| tally.latency_us()),
            service_us: tally.service_us(),
            max_send_lag_us: (mode == "fixed-rate")
                .then_some(tally.max_send_lag.as_secs_f64() * 1e6),
            sent: (mode == "fixed-rate").then_some(tally.sent),
            client_cpu: None,
            server: None,
            items: None,
            load_avg: procfs::load_average(),
        }
    }
}

/// `FRACTION:PROBABILITY`, both in 0..=1.
fn parse_hot(spec: &str) -> Result<KeyDistribution, String> {
    let (f, p) = spec
        .split_once(':')
        .ok_or("--hot wants FRACTION:PROBABILITY")?;
    let parse = |s: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or(format!("--hot: {s:?} is not in 0..=1"))
    };
    Ok(KeyDistribution::HotSet {
        fraction: parse(f)?,
        probability: parse(p)?,
    })
}

/// `N` or `MIN-MAX`.
fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("bad size {s:?}: want N or MIN-MAX");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let n = s.parse().map_err(|_| bad())?;
            (n, n)
        }
    };
    if lo > hi || hi > 64 << 20 {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Table { files, refs } => table(&files, &refs),
        Cmd::Probe { duration } => probe(duration),
        Cmd::Presets => {
            presets();
            Ok(())
        }
        Cmd::Run(args) => with_runtime(args.threads, measure(args)),
        Cmd::Load(args) => with_runtime(args.threads, load(args)),
        Cmd::Items(args) => with_runtime(args.threads, items(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn with_runtime(threads: usize, work: impl std::future::Future<Output = Res>) -> Res {
    let runtime = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(work)
}

fn emit(record: &Record) -> Res {
    println!("{}", serde_json::to_string(record)?);
    let lat = record
        .latency_us
        .map(|l| {
            format!(
                " p50 {:.0}us p99 {:.0}us p99.9 {:.0}us",
                l.p50, l.p99, l.p999
            )
        })
        .unwrap_or_default();
    let hits = record
        .hit_ratio
        .map(|h| format!(" hit ratio {h:.3}"))
        .unwrap_or_default();
    let items = record
        .items
        .map(|n| format!(" items {n}"))
        .unwrap_or_default();
    eprintln!(
        "{} {} {}: {:.0} ops/s ({} ops, {} errors, {} misses){lat}{hits}{items}",
        record.label,
        record.workload,
        record.mode,
        record.ops_per_sec,
        record.ops,
        record.errors,
        record.misses
    );
    Ok(())
}

/// Runs the phases of `args` in order: fill, measured window, item count.
async fn measure(args: RunArgs) -> Res {
    let settings = args.settings()?;
    let config = args.config(&settings)?;
    let mut record = None;
    for phase in settings.phases() {
        match phase {
            Phase::Fill {
                value_min,
                value_max,
            } => {
                let mut fill = config.clone();
                fill.workload.value_min = value_min;
                fill.workload.value_max = value_max;
                let t = driver::preload(&fill).await?;
                eprintln!(
                    "preloaded {} keys of {value_min}-{value_max} B ({} errors)",
                    t.sets, t.errors
                );
            }
            Phase::Measure => record = Some(measured(&args, &settings, &config).await?),
            Phase::CountItems => {
                if let Some(r) = record.as_mut() {
                    r.items = Some(driver::items(config.addr, config.codec).await?);
                }
            }
        }
    }
    match record {
        Some(r) => emit(&r),
        None => Err("no measured phase".into()),
    }
}

/// The measured window, with the client's and the server's CPU over it.
async fn measured(
    args: &RunArgs,
    settings: &Settings,
    config: &RunConfig,
) -> Result<Record, Box<dyn std::error::Error>> {
    let client0 = procfs::sample(None);
    let server0 = args.server_pid.and_then(|p| procfs::sample(Some(p)));
    let tally = driver::run(config).await?;
    let client1 = procfs::sample(None);
    let server1 = args.server_pid.and_then(|p| procfs::sample(Some(p)));
    let mode = if config.rate.is_some() {
        "fixed-rate"
    } else {
        "closed"
    };
    let mut record = args.record(settings, mode, &tally);
    if let (Some(a), Some(b)) = (client0, client1) {
        let d = a.delta(&b);
        record.client_cpu = Some(d.cpu_user + d.cpu_sys);
    }
    if let (Some(a), Some(b)) = (server0, server1) {
        let d = a.delta(&b);
        record.server = Some(ServerUse {
            cpu_user: d.cpu_user,
            cpu_sys: d.cpu_sys,
        });
    }
    Ok(record)
}

async fn load(args: RunArgs) -> Res {
    let settings = args.settings()?;
    let config = args.config(&settings)?;
    let started = std::time::Instant::now();
    let mut tally = driver::preload(&config).await?;
    tally.elapsed = started.elapsed();
    emit(&args.record(&settings, "load", &tally))
}

async fn items(args: RunArgs) -> Res {
    let settings = args.settings()?;
    let config = args.config(&settings)?;
    let n = driver::items(config.addr, config.codec).await?;
    let mut record = args.record(&settings, "items", &Tally::new());
    record.items = Some(n);
    emit(&record)
}

/// Prints one line per named workload: name, server memory in MiB, what it measures.
fn presets() {
    for p in Preset::ALL {
        println!("{} {} {}", p.name(), p.memory_mib(), p.about());
    }
}

fn probe(duration: f64) -> Res {
    if !(0.0..=3600.0).contains(&duration) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    let stalls = probe::spin(Duration::from_secs_f64(duration), std::time::Instant::now);
    println!("{}", serde_json::to_string(&stalls)?);
    eprintln!("probe: {stalls}");
    Ok(())
}

fn table(files: &[std::path::PathBuf], refs: &[String]) -> Res {
    let mut records = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            records.push(serde_json::from_str::<Record>(line)?);
        }
    }
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    print!("{}", report::table(&records, &refs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_range("100"), Ok((100, 100)));
        assert_eq!(parse_range("10-20"), Ok((10, 20)));
        assert!(parse_range("20-10").is_err());
        assert!(parse_range("x").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
