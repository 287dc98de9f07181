//! Test support: an in-process server that binds port 0 on loopback, runs on its own thread
//! and runtime, and stops (gracefully) when dropped; [`wait_for`], the way tests wait for
//! something to happen instead of sleeping; and [`TempDir`], a directory removed on drop.

use crate::cluster::ClusterView;
use crate::config::Config;
use crate::server::{prepare, serve, start_cluster, Listeners, RunError};
use crate::store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A running in-process server. Dropping it stops the server and waits for it.
pub struct TestServer {
    /// Native protocol address.
    pub native_addr: SocketAddr,
    /// memcached text protocol address (`None` when disabled in the config).
    pub memcache_addr: Option<SocketAddr>,
    /// The server's store, readable after the server stopped (to check what was applied).
    pub store: Store,
    /// The cluster view the server serves by; tests update it to change what it serves.
    pub cluster: ClusterView,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), RunError>>>,
}

impl TestServer {
    /// Starts a server with `config`, overriding its listen addresses (peer port included)
    /// with `127.0.0.1:0` (the memcached listener stays off if the config has it off). With a `data_dir`, the
    /// savefile there is loaded first, as `shoald` does.
    ///
    /// # Panics
    /// When the configuration is invalid or the server cannot start: a test cannot go on.
    pub fn start(config: Config) -> TestServer {
        TestServer::start_with(config, |_, _| None)
    }

    /// Starts a server that serves by the [`ClusterView`] `cluster` returns, given the node
    /// id and the bound native address; `None`: the node starts its control plane and serves
    /// as `shoald` does (a new cluster of one, its Raft in memory or in the data directory).
    /// A given view's bucket count must be the store's; such a node runs no control plane.
    ///
    /// # Panics
    /// As [`TestServer::start`].
    pub fn start_with(
        mut config: Config,
        cluster: impl FnOnce(crate::datadir::NodeId, SocketAddr) -> Option<ClusterView>,
    ) -> TestServer {
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        config.peer_listen = "127.0.0.1:0".parse().expect("loopback address");
        if config.memcache_listen.0.is_some() {
            config.memcache_listen.0 = Some("127.0.0.1:0".parse().expect("loopback address"));
        }
        config.validate().expect("test config is valid");
        let node = prepare(&config).expect("test node starts");
        let store = node.store.clone();
        let me = node.persistence.node_id();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (view_tx, view_rx) = std::sync::mpsc::channel::<Option<ClusterView>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<ClusterView, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let mut listeners = runtime.block_on(Listeners::bind(&config))?;
            let _ = addr_tx.send((listeners.native_addr(), listeners.memcache_addr()));
            let (view, control) = match view_rx.recv().ok().flatten() {
                Some(view) => (view, None),
                None => {
                    let _inside = runtime.enter();
                    match start_cluster(&config, &node, &mut listeners) {
                        Ok((view, control)) => (view, Some(control)),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return Err(e);
                        }
                    }
                }
            };
            let _ = ready_tx.send(Ok(view.clone()));
            let served = runtime.block_on(serve(config, node, listeners, view, async {
                let _ = stop_rx.await;
            }));
            drop(control);
            served
        });
        let (native, memcache_addr) = addr_rx.recv().expect("listeners bound");
        let native_addr = native.expect("native address");
        let _ = view_tx.send(cluster(me, native_addr));
        let view = ready_rx
            .recv()
            .expect("server started")
            .unwrap_or_else(|e| panic!("test node cannot start its control plane: {e}"));
        TestServer {
            native_addr,
            memcache_addr,
            store,
            cluster: view,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Starts a server with the default configuration.
    pub fn start_default() -> TestServer {
        TestServer::start(Config::default())
    }

    /// Stops the server gracefully and returns how `run` ended.
    ///
    /// # Panics
    /// When the server thread panicked.
    pub fn stop(&mut self) -> Result<(), RunError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes; returns whether it
/// held. The way tests wait for something to happen, instead of sleeping.
pub fn wait_for(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}

/// A directory under the system temp dir, unique to this process and moment, created at
/// once and removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `<temp>/shoal-<name>-<pid>-<nanos>-<n>`, `n` counting the directories this
    /// process made: two tests on parallel threads can read the same clock value (the CI
    /// once gave two clusters' `node1` the same directory).
    ///
    /// # Panics
    /// When the directory cannot be created: a test cannot go on.
    pub fn new(name: &str) -> TempDir {
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("shoal-{name}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }

    /// The names of the files in the directory, sorted.
    ///
    /// # Panics
    /// When the directory cannot be listed.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .expect("list dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
