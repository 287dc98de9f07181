//! Running a node: prepare (store, data directory, savefile), bind, serve both protocols, run
//! the expiry crawler, and stop gracefully.
//!
//! ```text
//!  prepare(config)          serve(config, node, listeners, shutdown)
//!  store + clock            accept (native, memcached, peer), serve ... shutdown fires
//!  data dir, node id        stop accepting; connections drain        \ all within
//!  load savefile, set aside background tasks stop                     | shutdown_timeout
//!                           savefile (temp, fsync, rename), if due   /
//! ```
//!
//! `main.rs` binds, calls [`prepare`] (a long load happens here, before the ready line and
//! before any connection is accepted), then [`serve`] with the process's signals as the
//! shutdown future; tests do the same with a channel, or call [`run`] for all three. Stop
//! order: stop accepting, tell every connection (each drains what its client already sent,
//! answers it, sends a notice and closes), wait for the connections, stop background tasks,
//! write the savefile when [`Persistence::saves_on_stop`] says so, return. The connection wait
//! and the save share one deadline, `shutdown_timeout` after the stop began; a save still
//! running at the deadline is abandoned and leaves no savefile behind (only a temporary file,
//! deleted at the next start).

use crate::cluster::lease::LeaseTiming;
use crate::cluster::moves::source::MoveConfig;
use crate::cluster::moves::HandOff;
use crate::cluster::peer::{ClusterSecret, SecretError};
use crate::cluster::raft::{ControlPlane, ControlPlaneConfig, RaftTiming, StartError};
use crate::cluster::state::NodeAddrs;
use crate::cluster::ClusterView;
use crate::config::Config;
use crate::datadir::DataDirError;
use crate::keyspace::Keyspace;
use crate::net::conn::ConnLimits;
use crate::net::listener::Listener;
use crate::net::memcache::{Admin, TextSession};
use crate::net::native::NativeSession;
use crate::net::{InputBudget, Shared};
use crate::persist::savefile::Owned;
use crate::persist::{PersistError, Persistence};
use crate::stats::ServerStats;
use crate::store::{Clock, ConfigError, Store, SystemClock};
use shoal_proto::HEADER_LEN;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify, Semaphore};

/// How often the expiry crawler wakes up.
const CRAWL_INTERVAL: Duration = Duration::from_millis(500);
/// Items the crawler examines per step before it yields to request handling.
const CRAWL_BUDGET: usize = 2_000;

/// The node's bound sockets, bound before [`run`] so callers learn the ports (port 0).
pub struct Listeners {
    /// Native protocol listener.
    pub native: TcpListener,
    /// memcached text protocol listener, unless disabled.
    pub memcache: Option<TcpListener>,
    /// Peer port listener (node to node); taken by [`start_cluster`].
    pub peer: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the configuration names.
    ///
    /// # Errors
    /// The address and the OS error of the first bind that failed.
    pub async fn bind(config: &Config) -> Result<Listeners, RunError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Bind(addr, e))
        };
        let native = bind(config.listen).await?;
        let memcache = match config.memcache_listen.0 {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let peer = bind(config.peer_listen).await?;
        Ok(Listeners {
            native,
            memcache,
            peer: Some(peer),
        })
    }

    /// The native protocol address.
    pub fn native_addr(&self) -> Option<SocketAddr> {
        self.native.local_addr().ok()
    }

    /// The memcached text protocol address, when enabled.
    pub fn memcache_addr(&self) -> Option<SocketAddr> {
        self.memcache.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The peer port address (while the listener has not been taken).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Why a node failed to start or run.
#[derive(Debug)]
pub enum RunError {
    /// A listener could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The store could not be created from the configuration.
    Store(ConfigError),
    /// The data directory or savefile could not be used at start, or the savefile could not
    /// be written at stop.
    Persist(PersistError),
    /// The cluster secret file cannot be used (exit code 2, like any configuration error).
    Secret(SecretError),
    /// The control plane could not start or the node could not become a member.
    Cluster(StartError),
}

impl RunError {
    /// Whether the node refused to start because of its configuration (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(self, RunError::Secret(_))
    }

    /// Whether the node refused to start because its savefile or its Raft log is damaged
    /// (exit code 4).
    pub fn is_bad_savefile(&self) -> bool {
        match self {
            RunError::Persist(e) => e.is_damaged_savefile(),
            RunError::Cluster(e) => e.is_damaged(),
            _ => false,
        }
    }

    /// Whether the node could not join a cluster (exit code 6).
    pub fn is_join_failed(&self) -> bool {
        matches!(self, RunError::Cluster(e) if e.is_join())
    }

    /// Whether the node refused to start because another running node holds its data
    /// directory (exit code 5).
    pub fn is_data_dir_in_use(&self) -> bool {
        matches!(
            self,
            RunError::Persist(PersistError::DataDir(DataDirError::InUse { .. }))
        )
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            RunError::Store(e) => write!(f, "cannot create the store: {e}"),
            RunError::Persist(e) => write!(f, "{e}"),
            RunError::Secret(e) => write!(f, "{e}"),
            RunError::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// A node ready to serve: its store (holding the savefile's items, if there was one) and its
/// persistence handle.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's items.
    pub store: Store,
    /// Data directory, node id, persistence mode.
    pub persistence: Persistence,
    /// The cluster secret (`--cluster-secret-file`), or none.
    pub peer_secret: ClusterSecret,
}

/// The node's clock: the system clock, shifted forward by `--test-clock-offset` seconds
/// (a test-only setting that simulates time passing while the node was down).
#[derive(Debug)]
struct NodeClock {
    system: SystemClock,
    offset: u32,
}

impl Clock for NodeClock {
    fn now(&self) -> u32 {
        self.system.now().saturating_add(self.offset)
    }

    fn wall(&self) -> u64 {
        self.system.wall() + u64::from(self.offset)
    }
}

/// Creates the store the configuration describes and opens the data directory: node id,
/// and the savefile, loaded before this returns. Blocking (a large savefile takes seconds);
/// call it before serving.
///
/// # Errors
/// [`RunError::Store`] when the store cannot be created; [`RunError::Persist`] when the data
/// directory cannot be used or the savefile is damaged ([`RunError::is_bad_savefile`]);
/// [`RunError::Secret`] when the cluster secret file cannot be read.
pub fn prepare(config: &Config) -> Result<Node, RunError> {
    let peer_secret = match config.cluster_secret().map_err(RunError::Secret)? {
        Some(loaded) => {
            if loaded.open_to_others {
                tracing::warn!(
                    file = %config.cluster_secret_file.as_deref().unwrap_or(std::path::Path::new("")).display(),
                    "the cluster secret file can be read or changed by other users; chmod 600 it"
                );
            }
            loaded.secret
        }
        None => ClusterSecret::none(),
    };
    let clock: Arc<dyn Clock> = Arc::new(NodeClock {
        system: SystemClock::new(),
        offset: config.test_clock_offset,
    });
    if config.test_clock_offset > 0 {
        tracing::warn!(
            secs = config.test_clock_offset,
            "test-only clock offset in use: expiry times are shifted"
        );
    }
    let store = Store::with_clock(config.store_config(), clock.clone()).map_err(RunError::Store)?;
    #[cfg(feature = "fault-injection")]
    crate::fault::install(config);
    let persistence =
        Persistence::open(&config.persist_config(), &store, clock).map_err(RunError::Persist)?;
    Ok(Node {
        store,
        persistence,
        peer_secret,
    })
}

/// Starts the node's control plane on the peer listener (taken from `listeners`) and makes
/// the node a member: it creates a cluster, comes back to its own, or joins through
/// `--join`. Returns the view the node serves by (fed by applied Raft entries from now on)
/// and the running control plane, which stops when dropped (after [`serve`] returns).
/// Blocking: joining may take up to `--join-timeout`.
///
/// # Errors
/// [`RunError::Cluster`]: damaged Raft files ([`RunError::is_bad_savefile`]), a failed join
/// ([`RunError::is_join_failed`]), or Raft failing to start.
pub fn start_cluster(
    config: &Config,
    node: &Node,
    listeners: &mut Listeners,
) -> Result<(ClusterView, ControlPlane), RunError> {
    let no_listener = || {
        RunError::Cluster(StartError::Raft(
            "the peer listener was already taken".into(),
        ))
    };
    let peer = listeners.peer.take().ok_or_else(no_listener)?;
    let peer_addr = peer
        .local_addr()
        .map_err(|e| RunError::Bind(config.peer_listen, e))?;
    let peer = peer
        .into_std()
        .map_err(|e| RunError::Bind(config.peer_listen, e))?;
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    let me = node.persistence.node_id();
    let buckets = node.store.buckets();
    let view = ClusterView::new(me, buckets);
    view.moves().set_store(node.store.clone());
    view.hold_loaded(&node.persistence.take_loaded());
    let control = ControlPlane::start(
        ControlPlaneConfig {
            node_id: me,
            addrs: NodeAddrs {
                peer: peer_addr.to_string(),
                native: addr(listeners.native_addr()).unwrap_or_default(),
                memcache: addr(listeners.memcache_addr()),
                durable: config.data_dir.is_some(),
            },
            buckets,
            replicas: config.replicas,
            persist: config.persist.into(),
            data_dir: config.data_dir.clone(),
            join: config.join.clone(),
            join_timeout: config.join_timeout,
            initial_nodes: config.initial_nodes,
            max_moves: config.max_moves,
            timing: RaftTiming {
                heartbeat: config.raft_heartbeat,
                election_min: config.raft_election_timeout,
                election_max: config.raft_election_timeout * 2,
                ..RaftTiming::default()
            },
            secret: node.peer_secret.clone(),
            moves: MoveConfig {
                bandwidth: config.move_bandwidth as u64,
                park_timeout: config.park_timeout,
            },
            lease: LeaseTiming::new(config.lease),
        },
        peer,
        view.clone(),
    )
    .map_err(RunError::Cluster)?;
    Ok((view, control))
}

/// [`prepare`]s the node and [`start_cluster`]s it (on a blocking thread), then [`serve`]s
/// it; the control plane stops after serving ends.
///
/// # Errors
/// As [`prepare`], [`start_cluster`] and [`serve`].
pub async fn run(
    config: Config,
    mut listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let for_prepare = config.clone();
    let (node, listeners, view, control) = tokio::task::spawn_blocking(move || {
        let node = prepare(&for_prepare)?;
        let (view, control) = start_cluster(&for_prepare, &node, &mut listeners)?;
        Ok::<_, RunError>((node, listeners, view, control))
    })
    .await
    .map_err(|e| {
        RunError::Persist(PersistError::Io {
            action: "prepare",
            path: Default::default(),
            error: std::io::Error::other(e.to_string()),
        })
    })??;
    let served = serve(config, node, listeners, view, shutdown).await;
    drop(control);
    served
}

/// Serves `node` until `shutdown` completes, then stops gracefully (writing a savefile when
/// due). The node serves the buckets `cluster` says it serves, now and as the view is
/// updated (`cluster` must have the store's bucket count): the view [`start_cluster`]
/// returns, or one a test builds.
///
/// # Errors
/// [`RunError::Persist`] when the savefile due at stop could not be written completely
/// (the error says why; the previous savefile, if any, is untouched).
pub async fn serve(
    config: Config,
    node: Node,
    listeners: Listeners,
    cluster: ClusterView,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let Node {
        store, persistence, ..
    } = node;
    let limits = config.limits();
    let keyspace = Keyspace::new(
        store.clone(),
        persistence.clone(),
        Arc::new(ServerStats::default()),
        cluster,
    );
    // The memcached `shutdown` command (with --enable-shutdown) stops the node as the
    // `shutdown` future does.
    let stop_command = Arc::new(Notify::new());
    let listening = listeners.memcache.as_ref().and_then(|l| {
        use std::os::fd::AsRawFd;
        Some((l.as_raw_fd(), l.local_addr().ok()?))
    });
    let admin = Admin::new(
        &config,
        listening,
        config.enable_shutdown.then(|| stop_command.clone()),
    );
    let shared = Shared {
        keyspace: keyspace.clone(),
        limits,
        flush_at: config.output_buffer,
        input_budget: InputBudget::new(config.max_input_memory),
        forward_timeout: config.forward_timeout,
        admin: Arc::new(admin),
    };
    // Commands other nodes forward run here like any connection's.
    let runner = shared.clone();
    keyspace
        .cluster()
        .forwarding()
        .set_runner(Arc::new(move |command: &[u8]| {
            crate::net::memcache::run_forwarded(&runner, command)
        }));
    let conn_limits = ConnLimits {
        frame_timeout: config.frame_timeout,
        idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
        send_timeout: config.send_timeout,
        max_input: limits.max_frame + HEADER_LEN + 64 * 1024,
        max_pending: config.max_pending,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(config.max_connections));

    let mut accept_tasks = Vec::new();
    accept_tasks.push(tokio::spawn(
        Listener {
            listener: listeners.native,
            make_session: NativeSession::new,
            refusal: NativeSession::refusal(),
            slots: slots.clone(),
            limits: conn_limits,
            shared: shared.clone(),
            shutdown: stop_rx.clone(),
            done: done_tx.clone(),
        }
        .run(),
    ));
    if let Some(listener) = listeners.memcache {
        accept_tasks.push(tokio::spawn(
            Listener {
                listener,
                make_session: TextSession::new,
                refusal: b"SERVER_ERROR too many open connections\r\n".to_vec(),
                slots: slots.clone(),
                limits: conn_limits,
                shared: shared.clone(),
                shutdown: stop_rx.clone(),
                done: done_tx.clone(),
            }
            .run(),
        ));
    }
    drop(done_tx);
    let crawler = tokio::spawn(crawl_expired(store.clone(), stop_rx.clone()));
    let flush_timer = tokio::spawn({
        let mut stop = stop_rx.clone();
        async move {
            keyspace
                .run_flush_timer(async move {
                    let _ = stop.changed().await;
                })
                .await;
        }
    });

    let view = shared.keyspace.cluster().clone();
    tokio::select! {
        () = shutdown => {}
        () = stop_command.notified() => {}
        () = view.told_to_stop() => tracing::info!("the cluster told this node to stop"),
    }
    let began = Instant::now();
    let deadline = began + config.shutdown_timeout;
    // In a cluster, the node's buckets go to the other members first, while it serves;
    // what is left when a quarter of the budget remains is saved below.
    let hand_off_until = began + config.shutdown_timeout * 3 / 4;
    let hand_off = view.moves().hand_off(hand_off_until.into()).await;
    match hand_off {
        HandOff::NoCluster => {}
        HandOff::Done => tracing::info!("every bucket was handed off"),
        HandOff::Alone { left } => {
            tracing::info!(
                buckets = left,
                "no other member can take this node's buckets"
            )
        }
        HandOff::Partial { left } => {
            tracing::warn!(buckets = left, "buckets not handed off in time are saved")
        }
    }
    tracing::info!("stopping: no new connections; draining the open ones");
    let _ = stop_tx.send(true);
    // Commands other nodes forward are refused from here on (their senders retry or answer
    // an error; none is applied after the savefile's snapshot).
    shared.keyspace.cluster().forwarding().stop_running();
    for task in accept_tasks {
        let _ = task.await;
    }
    // Every connection task holds a sender; recv() returns None once all have ended.
    if tokio::time::timeout_at(deadline.into(), done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached with connections still open");
    }
    let _ = crawler.await;
    let _ = flush_timer.await;
    let handed_off = matches!(hand_off, HandOff::Done);
    let saved = save_on_stop(
        &store,
        &persistence,
        (handed_off, view.owned_for_save()),
        deadline,
    )
    .await;
    tracing::info!("stopped");
    saved.map_err(RunError::Persist)
}

/// Writes the savefile at stop when the persistence mode says so (`handed_off`: every bucket
/// went to a peer), of the `owned` buckets, within `deadline`.
async fn save_on_stop(
    store: &Store,
    persistence: &Persistence,
    (handed_off, owned): (bool, Option<Owned>),
    deadline: Instant,
) -> Result<(), PersistError> {
    if !persistence.saves_on_stop(handed_off) {
        if persistence.is_enabled() {
            tracing::info!(persist = %persistence.mode(), handed_off, "not writing a savefile at this stop");
        }
        return Ok(());
    }
    // What no peer took (or everything, with `--persist always`) goes to disk.
    let (p, s) = (persistence.clone(), store.clone());
    let mut task =
        tokio::task::spawn_blocking(move || p.save(&s, owned.as_ref(), Some(deadline), true));
    let joined = match tokio::time::timeout_at(deadline.into(), &mut task).await {
        Ok(joined) => joined,
        Err(_) => {
            // The save checks between batches; it ends promptly and removes its temp file.
            persistence.cancel_saves();
            task.await
        }
    };
    match joined {
        Ok(result) => result.map(|_| ()),
        Err(e) => Err(PersistError::Io {
            action: "finish the save (task failed)",
            path: persistence
                .dir()
                .map(|d| d.to_path_buf())
                .unwrap_or_default(),
            error: std::io::Error::other(e.to_string()),
        }),
    }
}

/// Reclaims expired items in small steps, yielding between steps so requests are not stalled.
async fn crawl_expired(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(CRAWL_INTERVAL) => {}
        }
        loop {
            let store2 = store.clone();
            let reclaimed = tokio::task::spawn_blocking(move || store2.crawl_expired(CRAWL_BUDGET))
                .await
                .unwrap_or(0);
            if reclaimed < CRAWL_BUDGET / 2 || *stop.borrow() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}
