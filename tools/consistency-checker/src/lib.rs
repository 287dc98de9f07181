//! `shoal-consistency-checker`: the soak tool that judges every promise of
//! `docs/architecture.md` ("What each guarantee rests on"). It writes values that say what
//! they are, reads them back continuously while a nemesis restarts, kills, pauses and fully
//! restarts the nodes, classifies every read, and ends with a quiescent read of every key. See the crate's README for the rules.
//!
//! ```text
//!   workers (workload.rs) ──get/set/cas──► Backend (backend.rs: Rust client | libshoal)
//!      │  begin/finish ▲                          │
//!      ▼               │ classify (value.rs)      ▼
//!   Model (model.rs) ──┘                    one shoald cluster ◄── nemesis (nemesis/)
//!      ▲                                   ▲   SIGTERM / SIGKILL / SIGSTOP / join / drain /
//!      │                    TABLE_GET,     │   leader / full stop / partition
//!      │                    NODE_STATUS ── control.rs
//!      └─ crash(buckets) ◄────────────────────────┘
//!   workers ── success(bucket) ──► Availability (availability.rs) ◄── a window per fault
//!   Counters ──► per-second line, periodic summary, JSON Summary and gates (report.rs)
//! ```
//!
//! # Layout
//! - [`value`]: the value encoding and the classification of one read.
//! - [`model`]: per-key expectations (acknowledged, attempted, observed, in doubt, deletes,
//!   TTLs, crashes per bucket).
//! - [`workload`]: the workers and the final read.
//! - [`nemesis`]: `shoald` processes (`nemesis::process`) and fault injection
//!   (`nemesis::faults`, scheduled in `nemesis`).
//! - [`control`]: the cluster's table, bucket count and Raft leader, for the nemesis.
//! - [`probe`]: reads straight from a node cut off from its peers (the `partition` fault).
//! - [`availability`]: per-fault unavailability windows over the faulted buckets.
//! - [`backend`], `client_c` and [`memcache`]: the Rust client, libshoal and a memcached
//!   text-protocol client behind one interface.
//! - [`report`]: counters, per-second lines, latency, the summary and its gates.
//! - [`cli`]: command-line options.

#![deny(unsafe_code)]

pub mod availability;
pub mod backend;
pub mod cli;
#[allow(unsafe_code)]
pub mod client_c;
pub mod control;
pub mod memcache;
pub mod model;
pub mod nemesis;
pub mod probe;
pub mod report;
pub mod value;
pub mod workload;

use availability::Availability;
use backend::{Backend, ClientKind, ClientSettings};
use control::Control;
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

/// How long the servers may take to give a first table (external servers: their bucket count).
pub const TABLE_TIMEOUT: Duration = Duration::from_secs(30);

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
        /// Number of nodes to start with.
        nodes: usize,
        /// Copies of each bucket besides its primary.
        replicas: u32,
        /// Most live nodes (joins stop there).
        max_nodes: usize,
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
    /// Length of partitions.
    pub partition: (Duration, Duration),
    /// How long a stopped or killed node stays down.
    pub down: (Duration, Duration),
    /// Most faults at once.
    pub max_down: usize,
    /// Time down in a full stop.
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
    /// Fraction of set-mode writes that are deletes.
    pub delete_fraction: f64,
    /// Every `ttl_every`-th key is written with a TTL (0: none).
    pub ttl_every: u32,
    /// TTL range, seconds.
    pub ttl: (u32, u32),
    /// Fraction of writes of keys with a TTL that are touches.
    pub touch_fraction: f64,
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
    /// Period of the summary-so-far line.
    pub report_every: Duration,
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

    let control = Arc::new(Control::new());
    let (cluster, servers, memcache_servers, replicas, max_nodes) = match &config.target {
        Target::Own {
            shoald,
            nodes,
            replicas,
            max_nodes,
            node_args,
            work_dir,
            keep,
        } => {
            let spec = ClusterSpec {
                shoald: shoald.clone(),
                nodes: *nodes,
                replicas: *replicas,
                root: work_dir.clone(),
                keep: *keep,
                args: node_args.clone(),
                stop_timeout: config.stop_timeout,
            };
            let cluster = Cluster::start(spec, &control).await?;
            let addrs = cluster.addrs();
            println!(
                "{} started a cluster of {} node(s) (replicas {}) at {} in {}",
                timestamp(),
                nodes,
                replicas,
                addrs.join(","),
                cluster.dir().display()
            );
            let memcache = cluster.memcache_addrs();
            (Some(cluster), addrs, memcache, *replicas, *max_nodes)
        }
        Target::External(servers) => (None, servers.clone(), config.memcache_servers.clone(), 0, 0),
    };
    // The bucket count: keys map to buckets with `shoal_proto::hash::bucket_of(key, buckets)`
    // (for the model's per-bucket crashes and the per-fault unavailability).
    let buckets = bucket_count(&control, &servers).await?;
    // Shared with the nemesis (which opens a window per fault) and the workers (which report
    // every success).
    let availability = Arc::new(Availability::new(buckets));
    let model = Arc::new(
        Model::new(config.keys, config.workers, config.mode == Mode::Cas).with_buckets(
            (0..config.keys)
                .map(|i| shoal_proto::hash::bucket_of(&keyspace.name(i), buckets))
                .collect(),
        ),
    );
    // A crash explains misses only in the buckets whose only copy it lost.
    let crash: nemesis::CrashFn = {
        let model = model.clone();
        Arc::new(move |lost: &[u32]| model.crash_buckets(lost))
    };

    let settings_servers = servers.clone();
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
        availability: availability.clone(),
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
        delete_fraction: config.delete_fraction,
        ttl_every: config.ttl_every,
        ttl: config.ttl,
        touch_fraction: config.touch_fraction,
    };
    let load_start = clock.elapsed();
    counters.success(load_start);
    let workers: Vec<_> = (0..config.workers)
        .map(|id| tokio::spawn(workload::worker(id, spec.clone(), shared.clone())))
        .collect();
    let probe = Arc::new(probe::Probe::default());
    let prober = tokio::spawn(probe::run(
        probe.clone(),
        shared.clone(),
        keyspace.clone(),
        config.seed,
    ));
    let mut nemesis = cluster.map(|cluster| {
        let spec = NemesisSpec {
            faults: config.faults.clone(),
            interval: config.interval,
            pause: config.pause,
            partition: config.partition,
            down: config.down,
            full_stop_wait: config.full_stop_wait,
            seed: config.seed,
            replicas,
            max_down: config.max_down,
            max_nodes,
        };
        let routing: nemesis::RoutingFn = {
            let backend = backend.clone();
            Arc::new(move || backend.routing_stats())
        };
        let ctx = NemesisContext {
            crash,
            routing,
            availability: availability.clone(),
            control: control.clone(),
            counters: counters.clone(),
            clock,
            stop: stop_nemesis.clone(),
            probe: probe.clone(),
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

    let periodic = {
        let counters = counters.clone();
        let stop = stop_workers.clone();
        let every = config.report_every.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let now = clock.elapsed();
                println!(
                    "{}",
                    report::period_line(now, now.saturating_sub(load_start), &counters)
                );
            }
        })
    };

    // The loaded run: until the duration is over, (when asked) the first violation, or the
    // nemesis gave up (a fault could not be done).
    let end = tokio::time::Instant::now() + config.duration;
    while tokio::time::Instant::now() < end
        && !violated.load(Ordering::SeqCst)
        && !nemesis.as_ref().is_some_and(|n| n.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_on_violation = violated.load(Ordering::SeqCst);
    if stopped_on_violation {
        println!("{} stopping at the first violation", timestamp());
    }

    // Faults stop first (the nemesis finishes its current fault and revives every node), then
    // the load; then the quiescent final read.
    stop_nemesis.store(true, Ordering::SeqCst);
    let (mut cluster, fault_log, nemesis_result) = match nemesis.take() {
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
    let _ = prober.await;
    if let Some(r) = reporter {
        let _ = r.await;
    }
    periodic.abort();
    counters.close_gap(load_end);
    nemesis_result?;

    println!("{} final read of {} keys", timestamp(), config.keys);
    let ready = wait_ready(&backend).await;
    let mut final_read = workload::final_read(
        &backend,
        &model,
        &keyspace,
        config.mode,
        &counters,
        clock,
        FINAL_READ_PATIENCE,
    )
    .await;
    if !stopped_on_violation {
        let (checked, expired) = workload::final_ttl_check(
            &backend,
            &model,
            &keyspace,
            &counters,
            clock,
            FINAL_READ_PATIENCE,
        )
        .await;
        final_read.ttl_checked = checked;
        final_read.expired = expired;
    }
    let routing = backend.routing_stats();
    backend.close().await;
    let owners = match cluster.as_ref() {
        Some(c) => control
            .table(&c.addrs())
            .await
            .ok()
            .map(|t| control::owner_counts(&t)),
        None => None,
    };
    control.close().await;
    let nodes = cluster
        .as_ref()
        .map_or_else(|| settings_servers.clone(), Cluster::addrs);
    if let Some(cluster) = cluster.as_mut() {
        if stopped_on_violation {
            cluster.kill().await;
        } else {
            let failures = cluster.stop().await;
            counters
                .node_failures
                .fetch_add(failures, Ordering::Relaxed);
        }
    }
    drop(cluster);
    ready?;

    let mut summary = summarise(
        &config,
        &counters,
        &latencies,
        final_read,
        Cast { fault_log, nodes },
        load_time,
        stopped_on_violation,
    );
    if let Some((owners, unowned)) = owners {
        summary.owners = owners;
        summary.unowned_buckets = unowned;
    }
    // What the routed clients saw of the cluster's changes (0 for memcached clients).
    summary.counts.insert("redirects", routing.redirects);
    summary
        .counts
        .insert("table_fetches", routing.table_fetches);
    Ok(summary)
}

/// The servers' bucket count, from the first of `servers` that gives its table.
async fn bucket_count(control: &Control, servers: &[String]) -> Result<u32, CheckerError> {
    let deadline = tokio::time::Instant::now() + TABLE_TIMEOUT;
    loop {
        match control.bucket_count(servers).await {
            Ok(n) if n > 0 => return Ok(n),
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => {
                return Err(CheckerError::Client(format!(
                    "the servers' table had no buckets within {TABLE_TIMEOUT:?}"
                )))
            }
            Err(e) => {
                return Err(CheckerError::Client(format!(
                    "no table within {TABLE_TIMEOUT:?}: {e}"
                )))
            }
        }
    }
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

/// The cluster side of a finished run, for the summary.
struct Cast {
    /// Every fault, in order.
    fault_log: Vec<FaultRecord>,
    /// The members' native addresses at the end.
    nodes: Vec<String>,
}

/// Builds the summary and decides the gates.
///
/// Gated under every profile (the Promises table promises none of these in any situation):
/// stale, lost, expired, corrupt, unexpected, lost increments, unverified keys at the final
/// read, and node failures. Misses are never gated: a miss is only classified MISS when a
/// crash of the only copy explains it, which the crash promise allows, and ABSENT when a
/// delete or a TTL explains it. In-doubt, noack and errors are reported. `--require-faults` and `--min-ops-rate` add gates on the run itself.
fn summarise(
    config: &Config,
    c: &Counters,
    lat: &Latencies,
    final_read: report::FinalRead,
    cast: Cast,
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
        ("absent", &c.absent),
        ("expired", &c.expired),
        ("stale", &c.stale),
        ("lost", &c.lost),
        ("corrupt", &c.corrupt),
        ("unexpected", &c.unexpected),
        ("lost_increments", &c.lost_increments),
        ("probe_reads", &c.probe_reads),
        ("probe_refused", &c.probe_refused),
        ("faults", &c.faults),
        ("node_failures", &c.node_failures),
    ] {
        counts.insert(name, get(counter));
    }
    let secs = load_time.as_secs_f64().max(1e-9);
    let ops_per_s = ((get(&c.reads) + get(&c.writes)) as f64 / secs).round();
    let Cast { fault_log, nodes } = cast;
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for f in &fault_log {
        *faults.entry(f.kind.clone()).or_default() += 1;
    }

    let mut failed = Vec::new();
    for name in [
        "stale",
        "lost",
        "expired",
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
        nodes,
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
        owners: BTreeMap::new(),
        unowned_buckets: 0,
    }
}
