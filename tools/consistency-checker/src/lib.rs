//! `shoal-consistency-checker`: the soak tool that judges every promise of
//! `docs/architecture.md` ("What each guarantee rests on"). It writes values that say what
//! they are, reads them back continuously while a nemesis restarts, kills, pauses and fully
//! restarts the nodes, classifies every read, and ends with a quiescent read of every key. See the crate's README for the rules.
//!
//! ```text
//!   workers (workload.rs) ──get/set/cas──► Backend (backend.rs: Rust client | libshoal)
//!      │  begin/finish ▲                          │
//!      ▼               │ classify (value.rs)      ▼
//!   Model (model.rs) ──┘                    shoald nodes ◄── nemesis (nemesis.rs)
//!      ▲                                          SIGTERM / SIGKILL / SIGSTOP / full restart
//!      └─ crash() ◄───────────────────────────────┘
//!   Counters ──► per-second line, JSON Summary and gates (report.rs)
//! ```
//!
//! # Layout
//! - [`value`]: the value encoding and the classification of one read.
//! - [`model`]: per-key expectations (acknowledged, attempted, in doubt, crash epochs).
//! - [`workload`]: the workers and the final read.
//! - [`nemesis`]: `shoald` processes and fault injection.
//! - [`backend`], `client_c` and [`memcache`]: the Rust client, libshoal and a memcached
//!   text-protocol client behind one interface.
//! - [`report`]: counters, per-second lines, latency, the summary and its gates.
//! - [`cli`]: command-line options.

#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
#[allow(unsafe_code)]
pub mod client_c;
pub mod memcache;
pub mod model;
pub mod nemesis;
pub mod report;
pub mod value;
pub mod workload;

use backend::{Backend, ClientKind, ClientSettings};
use model::{Keyspace, Model};
use nemesis::{Cluster, ClusterSpec, Fault, NemesisContext, NemesisSpec};
use report::{timestamp, Clock, Counters, FaultRecord, Latencies, Percentiles, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use workload::{Mode, Shared, WorkloadSpec};

/// How long the final read keeps retrying keys it could not read.
pub const FINAL_READ_PATIENCE: Duration = Duration::from_secs(60);

/// How long the cluster may take to answer a first ping.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a run could not be done (as opposed to a run that found violations).
#[derive(Debug)]
pub enum CheckerError {
    /// A bad option.
    Config(String),
    /// A file or directory operation failed.
    Io {
        /// The path involved.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A node could not be started or controlled.
    Node(String),
    /// The client could not be built, or the servers never answered.
    Client(String),
}

impl CheckerError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CheckerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl std::fmt::Display for CheckerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckerError::Config(why) => write!(f, "configuration: {why}"),
            CheckerError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CheckerError::Node(why) => write!(f, "node: {why}"),
            CheckerError::Client(why) => write!(f, "client: {why}"),
        }
    }
}

impl std::error::Error for CheckerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckerError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<backend::OpError> for CheckerError {
    fn from(e: backend::OpError) -> Self {
        CheckerError::Client(e.to_string())
    }
}

/// Which servers to check.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start a local cluster of `shoald` processes (and disturb it).
    Own {
        /// The `shoald` binary.
        shoald: PathBuf,
        /// Number of nodes.
        nodes: usize,
        /// Extra arguments for every node.
        node_args: Vec<String>,
        /// Where to create the temporary directory.
        work_dir: PathBuf,
        /// Keep data and logs.
        keep: bool,
    },
    /// Servers someone else started; no nemesis.
    External(Vec<String>),
}

/// Everything a run needs (see [`cli::Args`] for the meaning and defaults of each field).
#[derive(Debug, Clone)]
pub struct Config {
    /// Which servers.
    pub target: Target,
    /// Faults the nemesis chooses from.
    pub faults: Vec<Fault>,
    /// Time between faults.
    pub interval: (Duration, Duration),
    /// Length of pauses.
    pub pause: (Duration, Duration),
    /// Time down in a full restart.
    pub full_stop_wait: Duration,
    /// Limit for a graceful stop.
    pub stop_timeout: Duration,
    /// Length of the loaded run.
    pub duration: Duration,
    /// Number of keys.
    pub keys: u32,
    /// Hot set size.
    pub hot: u32,
    /// Fraction of operations on the hot set.
    pub hot_fraction: f64,
    /// Fraction of reads.
    pub read_fraction: f64,
    /// Workers (writers).
    pub workers: u32,
    /// Target operations per second (0: unlimited).
    pub rate: f64,
    /// Payload size range.
    pub value_size: (usize, usize),
    /// Set or check-and-set.
    pub mode: Mode,
    /// Which client.
    pub client: ClientKind,
    /// Memcached addresses of external servers (`--client memcache`; own nodes report theirs).
    pub memcache_servers: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// Client request timeout.
    pub request_timeout: Duration,
    /// Client deadline.
    pub deadline: Duration,
    /// Stop at the first violation.
    pub stop_on_violation: bool,
    /// Minimum faults per kind (gated).
    pub require_faults: Vec<(Fault, u64)>,
    /// Minimum operations per second (gated).
    pub min_ops_rate: f64,
    /// Key prefix.
    pub key_prefix: String,
    /// No per-second lines.
    pub quiet: bool,
}

/// Runs one check: start (or connect to) the servers, load them while the nemesis works,
/// stop the faults, read every key, and summarise. Per-second lines and faults go to standard
/// output, violations to standard error.
///
/// # Errors
/// When the run could not be done (a node would not start, the servers never answered).
/// Violations are not errors: they are in the [`Summary`].
pub async fn run(config: Config) -> Result<Summary, CheckerError> {
    let clock = Clock::start();
    let counters = Arc::new(Counters::default());
    let model = Arc::new(Model::new(
        config.keys,
        config.workers,
        config.mode == Mode::Cas,
    ));
    let keyspace = Keyspace::new(config.key_prefix.clone(), config.keys, config.hot);
    println!(
        "{} consistency-checker seed={} mode={} client={} keys={} hot={} workers={} rate={} nemesis={}",
        timestamp(),
        config.seed,
        config.mode.as_str(),
        config.client.as_str(),
        config.keys,
        config.hot,
        config.workers,
        config.rate,
        fault_names(&config.faults).join(","),
    );

    let (cluster, servers, memcache_servers, kill_loses_data) = match &config.target {
        Target::Own {
            shoald,
            nodes,
            node_args,
            work_dir,
            keep,
        } => {
            let spec = ClusterSpec {
                shoald: shoald.clone(),
                nodes: *nodes,
                root: work_dir.clone(),
                keep: *keep,
                args: node_args.clone(),
                stop_timeout: config.stop_timeout,
            };
            let cluster = Cluster::start(spec).await?;
            let addrs = cluster.addrs();
            println!(
                "{} started {} node(s) at {} in {}",
                timestamp(),
                nodes,
                addrs.join(","),
                cluster.dir().display()
            );
            // Until clustering lands there are no replicas: a kill loses the node's data.
            let memcache = cluster.memcache_addrs();
            (Some(cluster), addrs, memcache, true)
        }
        Target::External(servers) => (
            None,
            servers.clone(),
            config.memcache_servers.clone(),
            false,
        ),
    };

    let settings = ClientSettings {
        servers,
        memcache_servers,
        request_timeout: config.request_timeout,
        deadline: config.deadline,
    };
    let backend = Backend::new(config.client, &settings)?;
    wait_ready(&backend).await?;

    let stop_workers = Arc::new(AtomicBool::new(false));
    let stop_nemesis = Arc::new(AtomicBool::new(false));
    let violated = Arc::new(AtomicBool::new(false));
    let shared = Shared {
        backend: backend.clone(),
        model: model.clone(),
        counters: counters.clone(),
        clock,
        stop: stop_workers.clone(),
        violated: violated.clone(),
        stop_on_violation: config.stop_on_violation,
        mode: config.mode,
    };
    let spec = WorkloadSpec {
        keyspace: keyspace.clone(),
        writers: config.workers,
        rate: config.rate,
        read_fraction: config.read_fraction,
        hot_fraction: config.hot_fraction,
        value_size: config.value_size,
        mode: config.mode,
        seed: config.seed,
    };
    let load_start = clock.elapsed();
    counters.success(load_start);
    let workers: Vec<_> = (0..config.workers)
        .map(|id| tokio::spawn(workload::worker(id, spec.clone(), shared.clone())))
        .collect();
    let nemesis = cluster.map(|cluster| {
        let spec = NemesisSpec {
            faults: config.faults.clone(),
            interval: config.interval,
            pause: config.pause,
            full_stop_wait: config.full_stop_wait,
            seed: config.seed,
            kill_loses_data,
        };
        let ctx = NemesisContext {
            model: model.clone(),
            counters: counters.clone(),
            clock,
            stop: stop_nemesis.clone(),
        };
        tokio::spawn(nemesis::run(cluster, spec, ctx))
    });
    let reporter = (!config.quiet).then(|| {
        let counters = counters.clone();
        let stop = stop_workers.clone();
        tokio::spawn(async move {
            let mut prev = [0u64; 4];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                println!(
                    "{}",
                    report::second_line(clock.elapsed(), &counters, &mut prev)
                );
            }
        })
    });

    // The loaded run: until the duration is over or (when asked) the first violation.
    let end = tokio::time::Instant::now() + config.duration;
    while tokio::time::Instant::now() < end && !violated.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_on_violation = violated.load(Ordering::SeqCst);
    if stopped_on_violation {
        println!("{} stopping at the first violation", timestamp());
    }

    // Faults stop first (the nemesis finishes its current fault and revives every node), then
    // the load; then the quiescent final read.
    stop_nemesis.store(true, Ordering::SeqCst);
    let (mut cluster, fault_log, nemesis_result) = match nemesis {
        Some(handle) => match handle.await {
            Ok((cluster, log, result)) => (Some(cluster), log, result),
            Err(e) => (
                None,
                Vec::new(),
                Err(CheckerError::Node(format!("nemesis task: {e}"))),
            ),
        },
        None => (None, Vec::new(), Ok(())),
    };
    stop_workers.store(true, Ordering::SeqCst);
    let load_end = clock.elapsed();
    let load_time = load_end.saturating_sub(load_start);
    let mut latencies = Latencies::new();
    for w in workers {
        if let Ok(lat) = w.await {
            latencies.merge(&lat);
        }
    }
    if let Some(r) = reporter {
        let _ = r.await;
    }
    counters.close_gap(load_end);
    nemesis_result?;

    println!("{} final read of {} keys", timestamp(), config.keys);
    let ready = wait_ready(&backend).await;
    let final_read = workload::final_read(
        &backend,
        &model,
        &keyspace,
        config.mode,
        &counters,
        FINAL_READ_PATIENCE,
    )
    .await;
    backend.close().await;
    if let Some(cluster) = cluster.as_mut() {
        let failures = cluster.stop().await;
        counters
            .node_failures
            .fetch_add(failures, Ordering::Relaxed);
    }
    drop(cluster);
    ready?;

    Ok(summarise(
        &config,
        &counters,
        &latencies,
        final_read,
        fault_log,
        load_time,
        stopped_on_violation,
    ))
}

/// Waits until the servers answer a ping.
async fn wait_ready(backend: &Backend) -> Result<(), CheckerError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        match backend.ping().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(CheckerError::Client(format!(
                    "servers did not answer within {READY_TIMEOUT:?}: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn fault_names(faults: &[Fault]) -> Vec<String> {
    if faults.is_empty() {
        return vec!["none".into()];
    }
    let mut names: Vec<String> = Vec::new();
    for f in faults {
        if !names.iter().any(|n| n == f.as_str()) {
            names.push(f.as_str().to_string());
        }
    }
    names
}

/// Builds the summary and decides the gates.
///
/// Gated under every profile (the Promises table promises none of these in any situation):
/// stale, lost, corrupt, unexpected, lost increments, unverified keys at the final read, and
/// node failures. Misses are never gated: a miss is only classified MISS when a crash of the
/// only copy explains it, which the crash promise allows. In-doubt, noack and errors are
/// reported. `--require-faults` and `--min-ops-rate` add gates on the run itself.
fn summarise(
    config: &Config,
    c: &Counters,
    lat: &Latencies,
    final_read: report::FinalRead,
    fault_log: Vec<FaultRecord>,
    load_time: Duration,
    stopped_on_violation: bool,
) -> Summary {
    let get = Counters::get;
    let mut counts = BTreeMap::new();
    for (name, counter) in [
        ("reads", &c.reads),
        ("read_errors", &c.read_errors),
        ("writes", &c.writes),
        ("write_errors", &c.write_errors),
        ("cas_conflicts", &c.conflicts),
        ("in_doubt", &c.in_doubt),
        ("noack", &c.noack),
        ("miss", &c.miss),
        ("stale", &c.stale),
        ("lost", &c.lost),
        ("corrupt", &c.corrupt),
        ("unexpected", &c.unexpected),
        ("lost_increments", &c.lost_increments),
        ("faults", &c.faults),
        ("node_failures", &c.node_failures),
    ] {
        counts.insert(name, get(counter));
    }
    let secs = load_time.as_secs_f64().max(1e-9);
    let ops_per_s = ((get(&c.reads) + get(&c.writes)) as f64 / secs).round();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for f in &fault_log {
        *faults.entry(f.kind.clone()).or_default() += 1;
    }

    let mut failed = Vec::new();
    for name in [
        "stale",
        "lost",
        "corrupt",
        "unexpected",
        "lost_increments",
        "node_failures",
    ] {
        let v = counts.get(name).copied().unwrap_or(0);
        if v > 0 {
            failed.push(format!("{name}={v}"));
        }
    }
    if final_read.unverified > 0 {
        failed.push(format!("final_read.unverified={}", final_read.unverified));
    }
    for &(kind, min) in &config.require_faults {
        let done = faults.get(kind.as_str()).copied().unwrap_or(0);
        if done < min && !stopped_on_violation {
            failed.push(format!("faults.{}={done}<{min}", kind.as_str()));
        }
    }
    if config.min_ops_rate > 0.0 && ops_per_s < config.min_ops_rate && !stopped_on_violation {
        failed.push(format!("ops_per_s={ops_per_s}<{}", config.min_ops_rate));
    }

    let mut latency_us = BTreeMap::new();
    latency_us.insert("read", Percentiles::of(&lat.read));
    latency_us.insert("write", Percentiles::of(&lat.write));
    Summary {
        verdict: if failed.is_empty() { "pass" } else { "fail" },
        failed_gates: failed,
        client: config.client.as_str().into(),
        mode: config.mode.as_str().into(),
        nemesis: fault_names(&config.faults),
        seed: config.seed,
        duration_s: (secs * 1000.0).round() / 1000.0,
        ops_per_s,
        counts,
        final_read,
        latency_us,
        max_unavailability_ms: u64::try_from(c.max_unavailability().as_millis())
            .unwrap_or(u64::MAX),
        faults,
        fault_log,
        stopped_on_violation,
    }
}
