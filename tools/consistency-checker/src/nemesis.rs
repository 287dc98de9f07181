//! Process control and fault injection: a local cluster of `shoald` processes on loopback
//! ports, in data directories under one temporary directory, and the nemesis that disturbs
//! them at random intervals drawn from a seed.
//!
//! ```text
//!  Cluster ── Node 0: shoald --listen 127.0.0.1:P0 --memcache-listen 127.0.0.1:M0 --peer-listen 127.0.0.1:0 --data-dir DIR/node-0
//!          ├─ Node 1: ...                                     (stderr -> DIR/node-1.log)
//!          └─ TempDir guard: kills leftover processes and removes DIR when dropped
//! ```
//!
//! Faults ([`Fault`]): graceful restart (SIGTERM, wait for exit, start again on the same port
//! and data directory), kill (SIGKILL, then start again), pause (SIGSTOP, wait, SIGCONT), and
//! full restart (stop every node gracefully, wait, start them all). Signals are sent with the
//! `kill` command, as the workspace forbids unsafe code; SIGKILL goes through
//! [`tokio::process::Child::start_kill`]. Every fault is printed with a timestamp.
//!
//! A kill of a node whose data has no other copy (one node, no replicas) is reported to the
//! [`Model`](crate::model::Model) as a crash, so that misses are expected afterwards. So is a
//! graceful stop that had to be finished with SIGKILL, and a node that died by itself; those
//! also count as node failures, which are gated.

use crate::model::Model;
use crate::report::{timestamp, Clock, Counters, FaultRecord};
use crate::CheckerError;
use shoald::ready::ReadyLine;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a node may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a start is tried when the port is still taken.
const START_ATTEMPTS: u32 = 50;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGTERM, wait for a clean exit, start again.
    Graceful,
    /// SIGKILL, start again.
    Kill,
    /// SIGSTOP, wait, SIGCONT.
    Pause,
    /// Stop every node gracefully, wait, start every node.
    FullRestart,
}

impl Fault {
    /// Every fault kind.
    pub const ALL: [Fault; 4] = [
        Fault::Graceful,
        Fault::Kill,
        Fault::Pause,
        Fault::FullRestart,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Graceful => "graceful",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::FullRestart => "full-restart",
        }
    }

    /// Parses a name from [`Fault::as_str`].
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// How to start nodes.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `shoald` binary.
    pub shoald: PathBuf,
    /// Number of nodes.
    pub nodes: usize,
    /// Directory to create the cluster's temporary directory in.
    pub root: PathBuf,
    /// Keep the data directories and logs at the end.
    pub keep: bool,
    /// Extra arguments for every node (`--memory 64MiB`, test-only fault flags, ...).
    pub args: Vec<String>,
    /// How long a graceful stop may take before the node is killed (and a failure counted).
    pub stop_timeout: Duration,
}

/// One `shoald` process (or none, between a stop and a start).
#[derive(Debug)]
pub struct Node {
    index: usize,
    data_dir: PathBuf,
    log: PathBuf,
    addr: Option<SocketAddr>,
    /// The memcached address (known once started; kept across restarts like `addr`).
    memcache_addr: Option<SocketAddr>,
    child: Option<Child>,
}

/// How a graceful stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Exited with status 0.
    Clean,
    /// Exited, but not with status 0.
    BadExit(ExitStatus),
    /// Did not exit in time and was killed.
    Killed,
}

impl Node {
    /// The native protocol address (known once started).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The memcached text protocol address (known once started).
    pub fn memcache_addr(&self) -> Option<SocketAddr> {
        self.memcache_addr
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the process (on its previous port after the first start) and waits for its
    /// ready line. Retries while the port is still taken.
    ///
    /// # Errors
    /// When it cannot be spawned or does not become ready.
    pub async fn start(&mut self, spec: &ClusterSpec) -> Result<(), CheckerError> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.try_start(spec).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(CheckerError::Node(format!(
            "node {} did not start after {START_ATTEMPTS} attempts: {last} (log: {})",
            self.index,
            self.log.display()
        )))
    }

    async fn try_start(&mut self, spec: &ClusterSpec) -> Result<(), CheckerError> {
        let listen = self
            .addr
            .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let memcache_listen = self
            .memcache_addr
            .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| CheckerError::io(&self.log, e))?;
        let mut cmd = Command::new(&spec.shoald);
        cmd.args([
            "--listen",
            &listen,
            "--memcache-listen",
            &memcache_listen,
            "--peer-listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(&self.data_dir)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| CheckerError::Node(format!("spawn {}: {e}", spec.shoald.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CheckerError::Node("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if ReadyLine::is_ready_line(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        let line = match ready {
            Ok(Some(line)) => line,
            Ok(None) | Err(_) => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                return Err(CheckerError::Node(format!(
                    "node {} exited or hung before its ready line (status {status:?})",
                    self.index
                )));
            }
        };
        let ready = ReadyLine::parse(&line)
            .map_err(|e| CheckerError::Node(format!("unreadable ready line {line:?}: {e}")))?;
        self.addr = Some(ready.native);
        self.memcache_addr = ready.memcache;
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; kills the process after that.
    pub async fn stop_gracefully(&mut self, limit: Duration) -> Stopped {
        let Some(mut child) = self.child.take() else {
            return Stopped::Clean;
        };
        if let Some(pid) = child.id() {
            signal(pid, "TERM").await;
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) if status.success() => Stopped::Clean,
            Ok(Ok(status)) => Stopped::BadExit(status),
            Ok(Err(_)) | Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Stopped::Killed
            }
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub async fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            signal(pid, name).await;
        }
    }

    /// If the process has exited by itself, reaps it and returns its status.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

/// Sends signal `name` to `pid` with kill(1).
async fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// A local cluster of `shoald` processes and the temporary directory holding their data.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    /// The nodes, in index order.
    pub nodes: Vec<Node>,
    dir: TempDir,
}

impl Cluster {
    /// Creates the temporary directory and starts every node.
    ///
    /// # Errors
    /// When the directory cannot be created or a node does not start.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster, CheckerError> {
        let name = format!("shoal-cc-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let dir = TempDir::create(spec.root.join(name), spec.keep)?;
        let mut nodes = Vec::with_capacity(spec.nodes);
        for index in 0..spec.nodes {
            let data_dir = dir.path.join(format!("node-{index}"));
            std::fs::create_dir_all(&data_dir).map_err(|e| CheckerError::io(&data_dir, e))?;
            nodes.push(Node {
                index,
                data_dir,
                log: dir.path.join(format!("node-{index}.log")),
                addr: None,
                memcache_addr: None,
                child: None,
            });
        }
        let mut cluster = Cluster { spec, nodes, dir };
        for node in &mut cluster.nodes {
            node.start(&cluster.spec).await?;
        }
        Ok(cluster)
    }

    /// The nodes' native protocol addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.addr().map(|a| a.to_string()))
            .collect()
    }

    /// The nodes' memcached addresses.
    pub fn memcache_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.memcache_addr().map(|a| a.to_string()))
            .collect()
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Stops every node gracefully; returns how many did not stop cleanly.
    pub async fn stop(&mut self) -> u64 {
        let limit = self.spec.stop_timeout;
        let mut failures = 0;
        for node in &mut self.nodes {
            if node.stop_gracefully(limit).await != Stopped::Clean {
                failures += 1;
            }
        }
        failures
    }
}

/// A directory removed when dropped, unless asked to keep it.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn create(path: PathBuf, keep: bool) -> Result<TempDir, CheckerError> {
        std::fs::create_dir_all(&path).map_err(|e| CheckerError::io(&path, e))?;
        Ok(TempDir { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "{} kept data and logs in {}",
                timestamp(),
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How the nemesis behaves.
#[derive(Debug, Clone)]
pub struct NemesisSpec {
    /// Faults to choose from (none: the nemesis only watches for nodes that die).
    pub faults: Vec<Fault>,
    /// Time between faults, drawn uniformly from this range.
    pub interval: (Duration, Duration),
    /// Length of a pause, drawn uniformly from this range.
    pub pause: (Duration, Duration),
    /// Time every node stays down in a full restart.
    pub full_stop_wait: Duration,
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Whether a kill loses the killed node's data (one node, or no replicas).
    pub kill_loses_data: bool,
}

/// Everything the nemesis shares with the rest of the run.
#[derive(Debug, Clone)]
pub struct NemesisContext {
    /// The model, told about crashes.
    pub model: Arc<Model>,
    /// Counters (faults, node failures).
    pub counters: Arc<Counters>,
    /// The run's clock.
    pub clock: Clock,
    /// Set to stop injecting faults.
    pub stop: Arc<AtomicBool>,
}

/// Runs the nemesis until `ctx.stop` is set, then makes sure every node is running again.
/// Returns the cluster, the faults done, and an error when a node could not be started again
/// (the run cannot go on without it).
pub async fn run(
    mut cluster: Cluster,
    spec: NemesisSpec,
    ctx: NemesisContext,
) -> (Cluster, Vec<FaultRecord>, Result<(), CheckerError>) {
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let mut log = Vec::new();
    let result = loop {
        let wait = between(&mut rng, spec.interval);
        if sleep_unless_stopped(wait, &ctx.stop).await {
            break Ok(());
        }
        if let Err(e) = revive_dead(&mut cluster, &ctx, spec.kill_loses_data).await {
            break Err(e);
        }
        if spec.faults.is_empty() {
            continue;
        }
        let fault = spec.faults[rng.usize(..spec.faults.len())];
        let node = rng.usize(..cluster.nodes.len());
        let started = ctx.clock.elapsed();
        let target = match fault {
            Fault::FullRestart => "all nodes".to_string(),
            _ => format!("node {node}"),
        };
        println!(
            "{} {:>8.3}s fault {} {target}: begin",
            timestamp(),
            started.as_secs_f64(),
            fault.as_str()
        );
        let done = inject(&mut cluster, fault, node, &spec, &ctx, &mut rng).await;
        let took = ctx.clock.elapsed().saturating_sub(started);
        Counters::bump(&ctx.counters.faults);
        println!(
            "{} {:>8.3}s fault {} {target}: done in {:.3}s",
            timestamp(),
            ctx.clock.elapsed().as_secs_f64(),
            fault.as_str(),
            took.as_secs_f64()
        );
        log.push(FaultRecord {
            at_s: started.as_secs_f64(),
            kind: fault.as_str().to_string(),
            node: (fault != Fault::FullRestart).then_some(node),
            took_s: took.as_secs_f64(),
        });
        if let Err(e) = done {
            break Err(e);
        }
    };
    let result = match result {
        Ok(()) => revive_dead(&mut cluster, &ctx, spec.kill_loses_data).await,
        Err(e) => Err(e),
    };
    (cluster, log, result)
}

/// Does one fault and brings the node(s) back.
async fn inject(
    cluster: &mut Cluster,
    fault: Fault,
    index: usize,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
    rng: &mut fastrand::Rng,
) -> Result<(), CheckerError> {
    let cspec = cluster.spec.clone();
    match fault {
        Fault::Graceful => {
            let node = &mut cluster.nodes[index];
            let stopped = node.stop_gracefully(cspec.stop_timeout).await;
            note_stop(ctx, index, stopped, spec.kill_loses_data);
            node.start(&cspec).await
        }
        Fault::Kill => {
            let node = &mut cluster.nodes[index];
            node.kill().await;
            if spec.kill_loses_data {
                ctx.model.crash();
            }
            node.start(&cspec).await
        }
        Fault::Pause => {
            let node = &cluster.nodes[index];
            node.signal("STOP").await;
            tokio::time::sleep(between(rng, spec.pause)).await;
            node.signal("CONT").await;
            Ok(())
        }
        Fault::FullRestart => {
            for (i, node) in cluster.nodes.iter_mut().enumerate() {
                let stopped = node.stop_gracefully(cspec.stop_timeout).await;
                note_stop(ctx, i, stopped, spec.kill_loses_data);
            }
            tokio::time::sleep(spec.full_stop_wait).await;
            for node in &mut cluster.nodes {
                node.start(&cspec).await?;
            }
            Ok(())
        }
    }
}

/// Counts a graceful stop that was not clean as a node failure (and a crash when it had to
/// be killed).
fn note_stop(ctx: &NemesisContext, index: usize, stopped: Stopped, kill_loses_data: bool) {
    match stopped {
        Stopped::Clean => {}
        Stopped::BadExit(status) => {
            Counters::bump(&ctx.counters.node_failures);
            eprintln!(
                "{} NODE FAILURE node {index} exited with {status} on a graceful stop",
                timestamp()
            );
        }
        Stopped::Killed => {
            Counters::bump(&ctx.counters.node_failures);
            if kill_loses_data {
                ctx.model.crash();
            }
            eprintln!(
                "{} NODE FAILURE node {index} did not stop in time and was killed",
                timestamp()
            );
        }
    }
}

/// Restarts nodes that died by themselves (each is a node failure, and a crash).
async fn revive_dead(
    cluster: &mut Cluster,
    ctx: &NemesisContext,
    kill_loses_data: bool,
) -> Result<(), CheckerError> {
    let cspec = cluster.spec.clone();
    for node in &mut cluster.nodes {
        let status = node.exited();
        if node.child.is_some() {
            continue;
        }
        Counters::bump(&ctx.counters.node_failures);
        eprintln!(
            "{} NODE FAILURE node {} was not running (exit status {status:?}); starting it",
            timestamp(),
            node.index
        );
        if kill_loses_data {
            ctx.model.crash();
        }
        node.start(&cspec).await?;
    }
    Ok(())
}

/// Sleeps for `d`, waking early when `stop` is set; returns whether it was.
async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
    stop.load(Ordering::SeqCst)
}

/// A duration drawn uniformly from `[lo, hi]`.
pub fn between(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let (lo, hi) = (
        lo.as_millis() as u64,
        hi.as_millis().max(lo.as_millis()) as u64,
    );
    Duration::from_millis(rng.u64(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.as_str()), Some(f));
        }
        assert_eq!(Fault::parse("reboot"), None);
    }

    #[test]
    fn between_stays_in_range() {
        let mut rng = fastrand::Rng::with_seed(1);
        let r = (Duration::from_millis(100), Duration::from_millis(200));
        for _ in 0..1000 {
            let d = between(&mut rng, r);
            assert!(d >= r.0 && d <= r.1);
        }
        let fixed = (Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(between(&mut rng, fixed), Duration::from_secs(1));
    }
}
