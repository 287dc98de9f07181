//! `shoald` processes: one [`Node`] per process (its data directory, log, ports and the child
//! it runs), and the [`Cluster`] of them under one temporary directory.
//!
//! ```text
//!  Cluster ── Node 0: shoald --initial-nodes N --replicas R --data-dir DIR/node-0 ...
//!          ├─ Node 1: shoald --join <node 0's peer address> ...  (stderr -> DIR/node-1.log)
//!          └─ TempDir guard: removes DIR when dropped (children are killed on drop)
//! ```
//!
//! A node is first started on port 0 for its native, memcached and peer ports; every later
//! start reuses the ports it got and its data directory, so it comes back as the same member
//! at the same addresses. Signals are sent with the `kill` command, as the workspace forbids
//! unsafe code; SIGKILL goes through [`tokio::process::Child::start_kill`].
//!
//! Nodes are shared (`Arc<Node>`) so that several faults can work on different nodes at
//! once; each method takes the node's process lock only for as long as it needs it.

use crate::control::Control;
use crate::report::timestamp;
use crate::CheckerError;
use shoald::ready::ReadyLine;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a node may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a new cluster (or one after a full stop) may take to give every bucket a primary.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a start is tried when a port is still taken.
const START_ATTEMPTS: u32 = 50;

/// How to start nodes.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `shoald` binary.
    pub shoald: PathBuf,
    /// Number of nodes to start with.
    pub nodes: usize,
    /// Copies of each bucket besides its primary (`--replicas` of node 0).
    pub replicas: u32,
    /// Directory to create the cluster's temporary directory in.
    pub root: PathBuf,
    /// Keep the data directories and logs at the end.
    pub keep: bool,
    /// Extra arguments for every node (`--memory 64MiB`, test-only fault flags, ...).
    pub args: Vec<String>,
    /// How long a graceful stop may take before the node is killed (and a failure counted).
    pub stop_timeout: Duration,
}

/// The addresses a node serves on (known after its first start, then kept).
#[derive(Debug, Clone, Copy, Default)]
struct Addrs {
    native: Option<SocketAddr>,
    memcache: Option<SocketAddr>,
    peer: Option<SocketAddr>,
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

/// One `shoald` process (or none, between a stop and a start).
#[derive(Debug)]
pub struct Node {
    /// Its index in the cluster (start order; never reused).
    pub index: usize,
    data_dir: PathBuf,
    log: PathBuf,
    /// How it becomes a member (`--initial-nodes`/`--replicas`, or `--join`).
    role_args: Vec<String>,
    addrs: Mutex<Addrs>,
    child: tokio::sync::Mutex<Option<Child>>,
    /// Left the cluster (drained): never started again.
    left: AtomicBool,
}

impl Node {
    fn new(dir: &Path, index: usize, role_args: Vec<String>) -> Result<Node, CheckerError> {
        let data_dir = dir.join(format!("node-{index}"));
        std::fs::create_dir_all(&data_dir).map_err(|e| CheckerError::io(&data_dir, e))?;
        Ok(Node {
            index,
            data_dir,
            log: dir.join(format!("node-{index}.log")),
            role_args,
            addrs: Mutex::new(Addrs::default()),
            child: tokio::sync::Mutex::new(None),
            left: AtomicBool::new(false),
        })
    }

    fn addrs(&self) -> Addrs {
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The native protocol address (known once started).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addrs().native
    }

    /// The native address as text (`?` before the first start).
    pub fn addr_text(&self) -> String {
        self.addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string())
    }

    /// The memcached address (known once started).
    pub fn memcache_addr(&self) -> Option<SocketAddr> {
        self.addrs().memcache
    }

    /// The peer port address (known once started).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.addrs().peer
    }

    /// Its log file (the process's standard error, appended over restarts).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it left the cluster (drained).
    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    /// Marks it as gone for good.
    pub fn set_left(&self) {
        self.left.store(true, Ordering::SeqCst);
    }

    /// Starts the process on its ports and data directory and waits for its ready line,
    /// retrying while a port is still taken.
    ///
    /// # Errors
    /// When it does not become ready after every attempt.
    pub async fn start(&self, spec: &ClusterSpec) -> Result<(), CheckerError> {
        let mut child = self.child.lock().await;
        if child.is_some() {
            return Ok(());
        }
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.try_start(spec).await {
                Ok(c) => {
                    *child = Some(c);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            // Back off before the next attempt (a port of the last process may linger).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(CheckerError::Node(format!(
            "node {} did not start after {START_ATTEMPTS} attempts: {last} (log: {})",
            self.index,
            self.log.display()
        )))
    }

    async fn try_start(&self, spec: &ClusterSpec) -> Result<Child, CheckerError> {
        let addrs = self.addrs();
        let listen =
            |a: Option<SocketAddr>| a.map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| CheckerError::io(&self.log, e))?;
        let mut cmd = Command::new(&spec.shoald);
        cmd.arg("--listen")
            .arg(listen(addrs.native))
            .arg("--memcache-listen")
            .arg(listen(addrs.memcache))
            .arg("--peer-listen")
            .arg(listen(addrs.peer))
            .args(["--log-level", "warn"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.role_args)
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
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = Addrs {
            native: Some(ready.native),
            memcache: ready.memcache,
            peer: ready.peer,
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(child)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; kills the process after that.
    pub async fn stop_gracefully(&self, limit: Duration) -> Stopped {
        let Some(mut child) = self.child.lock().await.take() else {
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
    pub async fn kill(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `USR1`, ...) to the running process.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.lock().await.as_ref().and_then(Child::id);
        if let Some(pid) = pid {
            signal(pid, name).await;
        }
    }

    /// Whether a process is running (or being worked on by a fault).
    pub fn running(&self) -> bool {
        self.child.try_lock().map_or(true, |c| c.is_some())
    }

    /// If the process has exited by itself, reaps it and returns its status (`None` while a
    /// fault holds the process).
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.try_lock().ok()?;
        let status = child.as_mut()?.try_wait().ok()??;
        *child = None;
        Some(status)
    }

    /// The length of its log now (where to look for lines written from now on).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Waits up to `limit` for `needle` in its log after byte `from`; returns whether it
    /// appeared.
    pub async fn wait_for_log(&self, needle: &str, from: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(bytes) = tokio::fs::read(&self.log).await {
                let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
                if String::from_utf8_lossy(&bytes[start..]).contains(needle) {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    /// How nodes are started.
    pub spec: ClusterSpec,
    /// Every node ever started, in index order (drained ones included, marked as left).
    pub nodes: Vec<Arc<Node>>,
    dir: TempDir,
}

impl Cluster {
    /// Creates the temporary directory, starts node 0 (which creates the cluster and waits
    /// for `spec.nodes` members), then the others joining through it, and waits until the
    /// cluster is formed: every member in the table and every bucket with a primary.
    ///
    /// # Errors
    /// When the directory cannot be created, a node does not start, or the cluster does
    /// not form within [`FORM_TIMEOUT`].
    pub async fn start(spec: ClusterSpec, control: &Control) -> Result<Cluster, CheckerError> {
        let name = format!("shoal-cc-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let dir = TempDir::create(spec.root.join(name), spec.keep)?;
        let mut cluster = Cluster {
            spec,
            nodes: Vec::new(),
            dir,
        };
        let first = vec![
            "--initial-nodes".to_string(),
            cluster.spec.nodes.to_string(),
            "--replicas".to_string(),
            cluster.spec.replicas.to_string(),
        ];
        let node = cluster.add(first)?;
        node.start(&cluster.spec).await?;
        for _ in 1..cluster.spec.nodes {
            let node = cluster.add_joiner()?;
            node.start(&cluster.spec).await?;
        }
        control
            .wait_formed(&cluster.addrs(), cluster.spec.nodes, FORM_TIMEOUT)
            .await
            .map_err(|e| CheckerError::Node(format!("the cluster did not form: {e}")))?;
        Ok(cluster)
    }

    fn add(&mut self, role_args: Vec<String>) -> Result<Arc<Node>, CheckerError> {
        let node = Arc::new(Node::new(&self.dir.path, self.nodes.len(), role_args)?);
        self.nodes.push(node.clone());
        Ok(node)
    }

    /// Adds a node (not started) that joins through the peer addresses of the live members.
    ///
    /// # Errors
    /// When no member has a peer address yet, or its directory cannot be created.
    pub fn add_joiner(&mut self) -> Result<Arc<Node>, CheckerError> {
        let seeds: Vec<String> = self
            .live()
            .filter_map(|n| n.peer_addr().map(|a| a.to_string()))
            .collect();
        if seeds.is_empty() {
            return Err(CheckerError::Node("no member to join through".into()));
        }
        self.add(vec!["--join".to_string(), seeds.join(",")])
    }

    /// The nodes that have not left.
    pub fn live(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.iter().filter(|n| !n.has_left())
    }

    /// The native protocol addresses of the nodes that have not left.
    pub fn addrs(&self) -> Vec<String> {
        self.live()
            .filter_map(|n| n.addr().map(|a| a.to_string()))
            .collect()
    }

    /// The memcached addresses of the nodes that have not left.
    pub fn memcache_addrs(&self) -> Vec<String> {
        self.live()
            .filter_map(|n| n.memcache_addr().map(|a| a.to_string()))
            .collect()
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Kills every node (after a violation: the run has failed, and a graceful stop of a
    /// faulty cluster can take its whole stop budget per node).
    pub async fn kill(&mut self) {
        for node in &self.nodes {
            node.kill().await;
        }
    }

    /// Stops every node gracefully; returns how many did not stop cleanly.
    pub async fn stop(&mut self) -> u64 {
        let limit = self.spec.stop_timeout;
        let mut failures = 0;
        for node in &self.nodes {
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
