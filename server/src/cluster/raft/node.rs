//! The control plane of one node: Raft and the peer port on a thread of their own, how the
//! node becomes a member (create, restart, join), and the leader's reconciler.
//!
//! ```text
//!  control-plane thread (current-thread runtime)
//!    PeerServer ── RAFT_* ──► Raft ──► StateMachineStore ──applied──► ClusterView (data path)
//!               └─ JOIN ────► leader: plan_join, commit AddNode (or Redirect / Refused)
//!               └─ LEAVE_VOTERS ► leader: a stopping voter's vote goes to another member
//!               └─ PROPOSE ─────► leader: commit a command (Node::propose sends it)
//!    admin task: CLUSTER_ADMIN from the data path (ControlHandle) -> plan -> Node::propose
//!    reconciler (leader only, one change at a time):
//!      raft members not in the state -> removed;  new members -> learners -> active
//!      voters -> planner::desired_voters;  --initial-nodes reached -> spread;  orphans;
//!      stale moves -> cancelled;  planner::plan_moves -> moves started (up to --max-moves)
//!      planner::plan_replicas -> replicas added (built by their primaries) or dropped
//! ```
//!
//! Running Raft apart from the data path's runtime keeps heartbeats on time while clients
//! saturate the node's worker threads.

use super::network::{serve_raft, Network, Peers};
use super::types::{Raft, RaftTiming};
use super::{open_storage, Applied, RaftStoreError, Storage};
use crate::cluster::control::{self, AdminError, AdminJob};
use crate::cluster::forward::Executed;
use crate::cluster::identity::{
    clear_rejoin, forget_cluster, read_cluster_id, read_rejoin, write_cluster_id, IdentityError,
};
use crate::cluster::join::{plan_join, JoinPlan, JoinReply, JoinRequest};
use crate::cluster::lease::{LeaseBook, LeaseTiming};
use crate::cluster::moves::{self, source::MoveConfig, source::Proposer, HandOff, HandOffRequest};
use crate::cluster::peer::{
    ClusterSecret, InOrder, PeerCallError, PeerFailure, PeerHandler, PeerIdentity, PeerInfo,
    PeerOpcode, PeerServer,
};
use crate::cluster::state::{
    ClusterState, Command, NodeAddrs, NodeState, Outcome, PersistSetting, Settings,
};
use crate::cluster::{planner, ClusterView, RaftRole, RaftStatus};
use crate::datadir::{ClusterId, NodeId};
use bytes::Bytes;
use openraft::storage::RaftLogStorage;
use openraft::{ChangeMembers, EmptyNode, ServerState};
use shoal_proto::cluster::AdminRequest;
use shoal_proto::peer::{decode_forward_batch, ForwardReply};
use shoal_proto::Status;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How long one peer call of the join may take.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between rounds over the seeds while none accepts.
const JOIN_RETRY: Duration = Duration::from_millis(200);
/// How often the leader's reconciler looks again when nothing told it to.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How long Raft may take to shut down before the control plane stops without it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping voter waits for the leader to give its vote to another member.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a restarted member asks the leader again to count it back or active.
const REACTIVATE_RETRY: Duration = Duration::from_secs(1);
/// How long a stopping node with no active peer tries to mark itself draining before it
/// saves (a node whose peers are all down has no quorum and gives up after this).
const ALONE_MARK_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one PROPOSE call to the leader.
const PROPOSE_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one write to the Raft log on the leader. A leader cut off from the
/// others cannot commit, and once it learns of the new leader a write it began may never be
/// answered (seen after it installed the new leader's snapshot), so every write has a
/// deadline (past it, the write was not committed as far as the caller knows).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// First pause before proposing again (leader unknown or changed); doubles up to
/// [`PROPOSE_MAX_BACKOFF`].
const PROPOSE_MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between two proposals.
const PROPOSE_MAX_BACKOFF: Duration = Duration::from_millis(200);
/// How long an admin request (CLUSTER_ADMIN) may take: a leader election and a commit.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait at start for the node's first lease before it reports ready anyway.
const FIRST_LEASE_WAIT: Duration = Duration::from_secs(2);

/// What the control plane needs to know about its node.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Where it listens (given to the cluster).
    pub addrs: NodeAddrs,
    /// Its store's bucket count (a new cluster gets it; a joined one must match).
    pub buckets: u32,
    /// Backup copies per bucket for a new cluster.
    pub replicas: u32,
    /// The savefile setting for a new cluster.
    pub persist: PersistSetting,
    /// The data directory (Raft files, cluster id), if any.
    pub data_dir: Option<PathBuf>,
    /// Seeds to join through; empty = create a cluster (or restart in one).
    pub join: Vec<SocketAddr>,
    /// How long joining may take before the node gives up.
    pub join_timeout: Duration,
    /// Members to wait for before spreading the buckets (creator only).
    pub initial_nodes: usize,
    /// Most bucket moves in progress at once (`--max-moves`), when this node leads.
    pub max_moves: usize,
    /// Raft timing.
    pub timing: RaftTiming,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// How bucket moves run from this node.
    pub moves: MoveConfig,
    /// The node lease (`--lease`).
    pub lease: LeaseTiming,
}

/// Why the control plane could not start.
#[derive(Debug)]
pub enum StartError {
    /// The Raft files are damaged or unreadable.
    Storage(RaftStoreError),
    /// The cluster id file cannot be used.
    Identity(IdentityError),
    /// The node could not join (no seed answered in time, or it was refused).
    Join(String),
    /// Raft failed to start or to create the cluster.
    Raft(String),
}

impl StartError {
    /// Whether the Raft log or snapshot is damaged (exit code 4, like a damaged savefile).
    pub fn is_damaged(&self) -> bool {
        matches!(self, StartError::Storage(e) if e.is_damaged())
    }

    /// Whether joining failed (its own exit code).
    pub fn is_join(&self) -> bool {
        matches!(self, StartError::Join(_))
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Storage(e) => write!(f, "{e}"),
            StartError::Identity(e) => write!(f, "{e}"),
            StartError::Join(reason) => write!(f, "cannot join the cluster: {reason}"),
            StartError::Raft(reason) => write!(f, "control plane: {reason}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running control plane. Dropping it stops it.
pub struct ControlPlane {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts Raft and the peer port on their own thread and makes this node a member: it
    /// creates a cluster (no seeds, no cluster yet), comes back as the member it was (a
    /// cluster id in the data directory), or joins through the seeds. Returns once the node
    /// is a member, feeding `view` from then on. Blocking: call it before serving.
    ///
    /// # Errors
    /// [`StartError`]; the thread is stopped again.
    pub fn start(
        config: ControlPlaneConfig,
        peer_listener: std::net::TcpListener,
        view: ClusterView,
    ) -> Result<ControlPlane, StartError> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("shoal-control".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started_tx.send(Err(StartError::Raft(format!(
                            "cannot start the control plane's runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(run(config, peer_listener, view, started_tx, stop_rx));
            })
            .map_err(|e| StartError::Raft(format!("cannot start the control plane thread: {e}")))?;
        let mut plane = ControlPlane {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(plane),
            Ok(Err(e)) => {
                plane.stop();
                Err(e)
            }
            Err(_) => {
                plane.stop();
                Err(StartError::Raft("the control plane thread ended".into()))
            }
        }
    }

    /// Stops Raft and the peer port and waits for the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The control plane thread's body: start, report, serve until stopped.
async fn run(
    config: ControlPlaneConfig,
    peer_listener: std::net::TcpListener,
    view: ClusterView,
    started: std::sync::mpsc::Sender<Result<(), StartError>>,
    stop: oneshot::Receiver<()>,
) {
    let node = match Node::start(config, peer_listener, view).await {
        Ok(node) => node,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    // The lease is kept from now on, before the node is a member again: the leader may make
    // it active and give it buckets while it is still announcing itself, and would fence a
    // member that does not renew.
    let (first_tx, first_rx) = oneshot::channel();
    let leaser = tokio::spawn(node.clone().keep_lease(first_tx));
    if let Err(e) = node.become_member().await {
        leaser.abort();
        let _ = started.send(Err(e));
        node.shutdown().await;
        return;
    }
    // Serve (the ready line) once the node holds its first lease, or after a bound: a node
    // restarted before a quorum of its peers gets one only when they are back.
    let _ = tokio::time::timeout(FIRST_LEASE_WAIT, first_rx).await;
    let _ = started.send(Ok(()));
    let coming_back = node.clone();
    tokio::spawn(async move { coming_back.reactivate().await });
    let reconciler = tokio::spawn(node.clone().reconcile_forever());
    let copies = node.move_context();
    let mover = tokio::spawn(moves::source::drive(copies.clone()));
    let replicator = tokio::spawn(moves::replicate::drive(copies));
    let hand_offs = node
        .view
        .moves()
        .serve_hand_offs()
        .map(|rx| tokio::spawn(node.clone().serve_hand_offs(rx)));
    // Admin requests from the data path, from now on (a second control plane in the same
    // view, as in some tests, leaves the first one connected).
    let admin = node
        .view
        .control()
        .connect()
        .map(|jobs| tokio::spawn(node.clone().serve_admin(jobs)));
    let _ = stop.await;
    leaser.abort();
    reconciler.abort();
    mover.abort();
    replicator.abort();
    for task in [hand_offs, admin].into_iter().flatten() {
        task.abort();
    }
    node.leave_voters().await;
    let left = node.leave_if_handed_off().await;
    node.shutdown().await;
    if let Some(seeds) = left {
        node.forget_cluster(&seeds);
    }
}

/// Everything the control plane's tasks share.
#[derive(Clone)]
pub(crate) struct Node {
    config: Arc<ControlPlaneConfig>,
    raft: Raft,
    view: ClusterView,
    peers: Peers,
    /// This node on the peer port (for connections of its own, such as bucket copies).
    identity: PeerIdentity,
    /// Set when a graceful stop handed every bucket off: the node leaves the cluster.
    handed_off: Arc<std::sync::atomic::AtomicBool>,
    cluster_id: Arc<watch::Sender<Option<ClusterId>>>,
    /// One leader-side change at a time (joins and the reconciler).
    leader_lock: Arc<tokio::sync::Mutex<()>>,
    stop_peer_server: Arc<watch::Sender<bool>>,
    /// When the node started (the --initial-nodes wait counts from here).
    started: Instant,
    /// The last index the node had committed before this start.
    committed: Option<u64>,
    /// The applied state, to wait until `committed` is applied again.
    replayed: watch::Receiver<Applied>,
    /// When this node leads: the renewals it granted, by member (who may be fenced).
    leases: Arc<std::sync::Mutex<LeaseBook>>,
    /// When this node leads: the term and start time of the last quorum check that
    /// confirmed it (renewals that arrived before that start share it).
    confirmed: Arc<tokio::sync::Mutex<Option<(u64, std::time::Instant)>>>,
}

impl Node {
    async fn start(
        mut config: ControlPlaneConfig,
        peer_listener: std::net::TcpListener,
        view: ClusterView,
    ) -> Result<Node, StartError> {
        let known = match &config.data_dir {
            Some(dir) => read_cluster_id(dir).map_err(StartError::Identity)?,
            None => None,
        };
        if let (None, Some(dir)) = (known, &config.data_dir) {
            // The members it left behind first: the seeds it was started with may be gone.
            let mut seeds = read_rejoin(dir).map_err(StartError::Identity)?;
            if !seeds.is_empty() {
                tracing::info!(
                    ?seeds,
                    "this node left its cluster at its last stop; joining it again as a new member"
                );
                seeds.retain(|s| !config.join.contains(s));
                seeds.append(&mut config.join);
                config.join = seeds;
            }
        }
        let (cluster_tx, cluster_rx) = watch::channel(known);
        let identity = PeerIdentity::new(config.node_id, cluster_rx, config.secret.clone());
        view.forwarding().set_identity(identity.clone());
        let Storage {
            mut log,
            state_machine,
            mut applied,
        } = open_storage(config.data_dir.as_deref()).map_err(StartError::Storage)?;
        // What this node had committed before it stopped: it serves only once that is applied
        // again, so a restarted node never answers by an older table than it had.
        let committed = log
            .read_committed()
            .await
            .map_err(|e| StartError::Raft(format!("cannot read the committed index: {e}")))?
            .map(|id| id.index);
        let peers = Peers::new(identity.clone(), view.clone());
        let raft_config = config
            .timing
            .config()
            .map_err(|e| StartError::Raft(format!("invalid Raft timing: {e}")))?;
        let raft = Raft::new(
            config.node_id,
            raft_config,
            Network::new(peers.clone(), config.timing.heartbeat),
            log,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(format!("cannot start Raft: {e}")))?;

        // Nodes act on applied entries only: the view follows the state machine's watch.
        view.update(applied.borrow_and_update().state.clone());
        let replayed = applied.clone();
        tokio::spawn({
            let view = view.clone();
            async move {
                while applied.changed().await.is_ok() {
                    let state = applied.borrow_and_update().state.clone();
                    view.update(state);
                }
            }
        });
        tokio::spawn(forward_metrics(raft.clone(), view.clone()));

        let (stop_tx, mut stop_rx) = watch::channel(false);
        peer_listener
            .set_nonblocking(true)
            .map_err(|e| StartError::Raft(format!("peer listener: {e}")))?;
        let listener = tokio::net::TcpListener::from_std(peer_listener)
            .map_err(|e| StartError::Raft(format!("peer listener: {e}")))?;
        let node = Node {
            config: Arc::new(config),
            raft,
            view,
            peers,
            identity: identity.clone(),
            handed_off: Arc::default(),
            cluster_id: Arc::new(cluster_tx),
            leader_lock: Arc::default(),
            stop_peer_server: Arc::new(stop_tx),
            started: Instant::now(),
            committed,
            replayed,
            leases: Arc::default(),
            confirmed: Arc::default(),
        };
        let server = PeerServer::new(listener, identity, Service { node: node.clone() });
        tokio::spawn(server.run(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        Ok(node)
    }

    async fn shutdown(&self) {
        let _ = self.stop_peer_server.send(true);
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Raft did not shut down cleanly"),
            Err(_) => tracing::warn!("Raft did not shut down within {SHUTDOWN_TIMEOUT:?}"),
        }
    }

    fn me(&self) -> NodeId {
        self.config.node_id
    }

    /// Records the cluster id: in the data directory first, then for the peer port.
    fn adopt_cluster(&self, id: ClusterId) -> Result<(), StartError> {
        if *self.cluster_id.borrow() == Some(id) {
            return Ok(());
        }
        if let Some(dir) = &self.config.data_dir {
            write_cluster_id(dir, id).map_err(StartError::Identity)?;
        }
        let _ = self.cluster_id.send(Some(id));
        Ok(())
    }

    async fn become_member(&self) -> Result<(), StartError> {
        let deadline = Instant::now() + self.config.join_timeout;
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if let Some(committed) = self.committed {
            let mut replayed = self.replayed.clone();
            let caught_up = replayed.wait_for(|a| a.last_applied >= Some(committed));
            let state = match tokio::time::timeout_at(deadline, caught_up).await {
                Ok(Ok(applied)) => Some(applied.state.clone()),
                _ => None,
            };
            match state {
                // The forwarding task may be a step behind; never step the view back.
                Some(state) => {
                    if self.view.state().table_version < state.table_version {
                        self.view.update(state);
                    }
                }
                None => {
                    return Err(StartError::Raft(format!(
                        "the Raft log was not replayed up to index {committed} within {:?}",
                        self.config.join_timeout
                    )))
                }
            }
        }
        let known = *self.cluster_id.borrow();
        match known {
            Some(cluster) => {
                tracing::info!(%cluster, node = %self.me(), "rejoining my cluster");
                self.announce(cluster, deadline).await
            }
            None if initialized => {
                // Created or joined, then stopped before the cluster id was written down:
                // the replayed state names it.
                let cluster = self.wait_for_cluster_id(deadline).await?;
                self.adopt_cluster(cluster)?;
                self.announce(cluster, deadline).await
            }
            None if self.config.join.is_empty() => self.create().await,
            None => self.join(deadline).await,
        }
    }

    /// Creates a new cluster with this node as its only voter.
    async fn create(&self) -> Result<(), StartError> {
        let me = self.me();
        let members: BTreeMap<NodeId, EmptyNode> = [(me, EmptyNode {})].into();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| StartError::Raft(format!("cannot initialize Raft: {e}")))?;
        let cluster = ClusterId::generate();
        let create = Command::Create {
            cluster_id: cluster,
            settings: Settings {
                buckets: self.config.buckets,
                replicas: self.config.replicas,
                paused: false,
                persist: self.config.persist,
                stopping: false,
            },
            node: me,
            addrs: self.config.addrs.clone(),
            assign_all: self.config.initial_nodes <= 1,
        };
        let outcome = self
            .raft
            .client_write(create)
            .await
            .map_err(|e| StartError::Raft(format!("cannot create the cluster: {e}")))?;
        if outcome.data != Outcome::Done {
            return Err(StartError::Raft(format!(
                "cannot create the cluster: {:?}",
                outcome.data
            )));
        }
        self.adopt_cluster(cluster)?;
        tracing::info!(%cluster, node = %me, initial_nodes = self.config.initial_nodes, "created a new cluster");
        Ok(())
    }

    async fn wait_for_cluster_id(&self, deadline: Instant) -> Result<ClusterId, StartError> {
        self.wait_state(deadline, |state| state.cluster_id)
            .await
            .ok_or_else(|| {
                StartError::Raft(
                    "the Raft log names no cluster: remove the data directory's raft/ folder to \
                     start afresh"
                        .into(),
                )
            })
    }

    /// Waits until the applied state the view holds gives `done` an answer, or `deadline`
    /// passes (`None`). Wakes on every change of the applied table.
    async fn wait_state<T>(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&ClusterState) -> Option<T>,
    ) -> Option<T> {
        // Subscribe before the first look, so a change between the two is not missed.
        let mut changes = self.view.table_changes();
        loop {
            if let Some(answer) = done(&self.view.state()) {
                return Some(answer);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    fn join_request(&self, cluster: Option<ClusterId>) -> JoinRequest {
        JoinRequest {
            node: self.me(),
            cluster,
            addrs: self.config.addrs.clone(),
            buckets: self.config.buckets,
        }
    }

    /// A restarted member tells the cluster where it listens now (its ports may have
    /// changed), through the seeds given or the members it knows. A member nobody hears
    /// goes on: Raft reaches it if its addresses are unchanged.
    async fn announce(&self, cluster: ClusterId, deadline: Instant) -> Result<(), StartError> {
        let mut seeds = self.config.join.clone();
        let state = self.view.state();
        seeds.extend(
            state
                .nodes
                .iter()
                .filter(|(id, _)| **id != self.me())
                .filter_map(|(_, m)| m.addrs.peer.parse::<SocketAddr>().ok()),
        );
        if seeds.is_empty() {
            return Ok(());
        }
        match self.ask_seeds(&seeds, Some(cluster), deadline).await {
            Ok(_) => Ok(()),
            Err(JoinFailure::Refused(reason)) => Err(StartError::Join(reason)),
            Err(JoinFailure::NoAnswer(reason)) => {
                tracing::warn!(%reason, "no member heard this node's addresses; going on as a member");
                Ok(())
            }
        }
    }

    /// Joins through the configured seeds, then waits until the leader has made this node an
    /// active member.
    async fn join(&self, deadline: Instant) -> Result<(), StartError> {
        let cluster = match self.ask_seeds(&self.config.join, None, deadline).await {
            Ok(cluster) => cluster,
            Err(JoinFailure::Refused(reason)) => return Err(StartError::Join(reason)),
            Err(JoinFailure::NoAnswer(reason)) => {
                return Err(StartError::Join(format!(
                    "no seed accepted within {:?} ({reason})",
                    self.config.join_timeout
                )))
            }
        };
        self.adopt_cluster(cluster)?;
        if let Some(dir) = &self.config.data_dir {
            clear_rejoin(dir);
        }
        tracing::info!(%cluster, node = %self.me(), "accepted; catching up as a learner");
        let me = self.me();
        let member = self
            .wait_state(deadline, |state| {
                (state.cluster_id == Some(cluster)
                    && state
                        .nodes
                        .get(&me)
                        .is_some_and(|m| m.state == NodeState::Active))
                .then_some(())
            })
            .await;
        match member {
            Some(()) => {
                tracing::info!(%cluster, node = %me, "joined");
                Ok(())
            }
            None => Err(StartError::Join(format!(
                "accepted, but not made a member within {:?}",
                self.config.join_timeout
            ))),
        }
    }

    /// Sends JOIN to each seed in turn (following redirects to the leader) until one accepts,
    /// one refuses, or the deadline passes.
    async fn ask_seeds(
        &self,
        seeds: &[SocketAddr],
        cluster: Option<ClusterId>,
        deadline: Instant,
    ) -> Result<ClusterId, JoinFailure> {
        let body = serde_json::to_vec(&self.join_request(cluster))
            .map_err(|e| JoinFailure::Refused(format!("cannot encode JOIN: {e}")))?;
        let mut last = String::from("no seed given");
        loop {
            for seed in seeds {
                let mut addr = *seed;
                for _hop in 0..4 {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(JoinFailure::NoAnswer(last));
                    }
                    let reply = self
                        .peers
                        .seed(addr)
                        .call(PeerOpcode::Join, body.clone(), JOIN_CALL_TIMEOUT.min(left))
                        .await;
                    let reply = match reply {
                        Ok(bytes) => serde_json::from_slice::<JoinReply>(&bytes)
                            .map_err(|e| format!("{addr}: undecodable JOIN reply: {e}")),
                        Err(PeerCallError::Refused { reason }) => {
                            return Err(JoinFailure::Refused(format!("{addr}: {reason}")))
                        }
                        Err(e) => Err(format!("{addr}: {e}")),
                    };
                    match reply {
                        Ok(JoinReply::Accepted { cluster }) => return Ok(cluster),
                        Ok(JoinReply::Refused { reason }) => {
                            return Err(JoinFailure::Refused(format!("{addr}: {reason}")))
                        }
                        Ok(JoinReply::Redirect { leader }) => match leader.parse() {
                            Ok(leader) => addr = leader,
                            Err(_) => {
                                last = format!("{addr}: bad leader address {leader:?}");
                                break;
                            }
                        },
                        Ok(JoinReply::Retry { reason }) => {
                            last = format!("{addr}: {reason}");
                            break;
                        }
                        Err(reason) => {
                            last = reason;
                            break;
                        }
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(JoinFailure::NoAnswer(last));
            }
            tokio::time::sleep(JOIN_RETRY.min(left)).await;
        }
    }

    /// The leader's side of JOIN.
    async fn handle_join(&self, req: JoinRequest) -> JoinReply {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.me()) {
            let state = self.view.state();
            return match metrics
                .current_leader
                .and_then(|l| state.nodes.get(&l))
                .map(|m| m.addrs.peer.clone())
            {
                Some(leader) => JoinReply::Redirect { leader },
                None => JoinReply::Retry {
                    reason: "no leader known yet".into(),
                },
            };
        }
        let _one_at_a_time = self.leader_lock.lock().await;
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return JoinReply::Retry {
                    reason: format!("leadership not confirmed: {e}"),
                }
            }
            Err(_) => {
                return JoinReply::Retry {
                    reason: "leadership not confirmed in time".into(),
                }
            }
        }
        let state = self.view.state();
        let commands = match plan_join(&state, &req) {
            JoinPlan::Reply(reply) => {
                if let JoinReply::Refused { reason } = &reply {
                    tracing::warn!(node = %req.node, %reason, "refused a node's join");
                }
                return reply;
            }
            JoinPlan::Commit(commands) => commands,
        };
        for cmd in commands {
            if let Err(reason) = self.write(cmd).await {
                return JoinReply::Retry { reason };
            }
        }
        tracing::info!(node = %req.node, peer = %req.addrs.peer, "node joined (or announced new addresses)");
        match self.view.cluster_id() {
            Some(cluster) => JoinReply::Accepted { cluster },
            None => JoinReply::Retry {
                reason: "the cluster is still being created".into(),
            },
        }
    }

    /// A voter that stops gracefully asks the leader to give its vote to another member first,
    /// so the cluster keeps as many voters while it is gone. Best effort, within
    /// [`LEAVE_TIMEOUT`]: a node that cannot reach the leader stops anyway.
    async fn leave_voters(&self) {
        let metrics = self.raft.metrics().borrow().clone();
        let me = self.me();
        let membership = metrics.membership_config.membership();
        let others = membership.nodes().any(|(id, _)| *id != me);
        if !others || !membership.voter_ids().any(|v| v == me) {
            return;
        }
        let asked = async {
            match metrics.current_leader {
                Some(leader) if leader == me => self.handle_leave(me).await,
                Some(leader) => {
                    let client = self
                        .peers
                        .member(leader)
                        .ok_or_else(|| format!("no address for leader {leader}"))?;
                    let body = serde_json::to_vec(&me).map_err(|e| e.to_string())?;
                    let reply = client
                        .call(PeerOpcode::LeaveVoters, body, LEAVE_TIMEOUT)
                        .await
                        .map_err(|e| e.to_string())?;
                    serde_json::from_slice::<bool>(&reply).map_err(|e| e.to_string())
                }
                None => Err("no leader known".to_string()),
            }
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, asked).await {
            Ok(Ok(true)) => tracing::info!("another member took this node's vote"),
            Ok(Ok(false)) => {
                tracing::info!("no member can take this node's vote; stopping as a voter")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not give this node's vote away"),
            Err(_) => tracing::warn!("the leader did not take this node's vote in time"),
        }
    }

    /// The leader's side of LEAVE_VOTERS: marks `node` draining (no new buckets, no vote)
    /// and, when another member can vote instead, moves the vote in one membership change.
    /// `Ok(false)`: nobody can take the vote, and nothing changed.
    async fn handle_leave(&self, node: NodeId) -> Result<bool, String> {
        let _one_at_a_time = self.leader_lock.lock().await;
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.me()) {
            return Err("not the leader".into());
        }
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        if !voters.contains(&node) {
            return Ok(true);
        }
        let state = self.view.state();
        let Some(spare) = planner::replacement_voter(&state, &voters, node) else {
            return Ok(false);
        };
        self.write(Command::SetNodeState {
            node,
            state: NodeState::Draining,
        })
        .await?;
        let mut want = voters;
        want.remove(&node);
        want.insert(spare);
        tracing::info!(leaving = %node, %spare, "moving a stopping voter's vote");
        self.change(ChangeMembers::ReplaceAllVoters(want), true)
            .await?;
        Ok(true)
    }

    /// The leader's reconciler: until stopped, on every Raft or table change (and every
    /// [`RECONCILE_EVERY`]), makes one change towards the wanted membership and ownership.
    async fn reconcile_forever(self) {
        let mut metrics = self.raft.metrics();
        let mut table = self.view.table_changes();
        loop {
            let changed = {
                let _one_at_a_time = self.leader_lock.lock().await;
                self.reconcile_once().await
            };
            match changed {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "reconciler step failed; retrying"),
            }
            tokio::select! {
                _ = metrics.changed() => {}
                _ = table.changed() => {}
                _ = tokio::time::sleep(RECONCILE_EVERY.min(self.config.lease.renew_every)) => {}
            }
        }
    }

    /// One step; `Ok(true)` when it changed something (look again at once).
    async fn reconcile_once(&self) -> Result<bool, String> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            self.lease_book().follow();
            return Ok(false);
        }
        let state = self.view.state();
        if state.cluster_id.is_none() {
            return Ok(false);
        }

        // 0. Active members whose lease has surely run out are fenced: their buckets fail
        // over. Not draining ones: a stopping node that could not hand everything off saves
        // the rest and stays a member owning it (its savefile serves it again when it is
        // back), so its silence is not a failure.
        let now = std::time::Instant::now();
        let expired: Vec<(NodeId, u64)> = {
            let mut book = self.lease_book();
            book.lead(metrics.current_term, now);
            state
                .nodes
                .iter()
                .filter(|(id, m)| {
                    **id != self.me()
                        && m.state == NodeState::Active
                        && book.expired(**id, now, &self.config.lease)
                })
                .map(|(id, m)| (*id, m.liveness_epoch))
                .collect()
        };
        // Not during a whole-cluster stop: the members are saving, not failing.
        if !expired.is_empty() && !state.settings.stopping {
            for (node, liveness_epoch) in expired {
                let (owned, without_copy) = state
                    .buckets
                    .iter()
                    .filter(|b| b.primary == Some(node))
                    .fold((0, 0), |(n, empty), b| {
                        (n + 1, empty + usize::from(b.in_sync.is_empty()))
                    });
                tracing::warn!(%node, buckets = owned, "its lease ran out: fencing it, its buckets fail over");
                if without_copy > 0 {
                    tracing::warn!(%node, buckets = without_copy, "buckets without an in-sync replica come back empty");
                }
                #[cfg(feature = "fault-injection")]
                self.fault_mark_all_in_sync(&state, node).await?;
                self.write(Command::FenceNode {
                    node,
                    liveness_epoch,
                })
                .await?;
            }
            return Ok(true);
        }
        let membership = metrics.membership_config.membership().clone();
        if membership.get_joint_config().len() > 1 {
            // An interrupted change left a joint config: finish it (openraft finalises on the
            // next change).
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            self.change(ChangeMembers::ReplaceAllVoters(voters), true)
                .await?;
            return Ok(true);
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();

        // 1. Raft members that are no longer members of the cluster leave Raft.
        let gone_voters: BTreeSet<NodeId> = voters
            .iter()
            .filter(|id| !state.nodes.contains_key(id))
            .copied()
            .collect();
        if !gone_voters.is_empty() {
            let kept: BTreeSet<NodeId> = voters.difference(&gone_voters).copied().collect();
            let want = planner::desired_voters(&state, &kept).unwrap_or(kept);
            tracing::info!(gone = ?gone_voters, voters = ?want, "replacing removed voters");
            self.change(ChangeMembers::ReplaceAllVoters(want), false)
                .await?;
            return Ok(true);
        }
        let gone_learners: BTreeSet<NodeId> = learners
            .iter()
            .filter(|id| !state.nodes.contains_key(id))
            .copied()
            .collect();
        if !gone_learners.is_empty() {
            self.change(ChangeMembers::RemoveNodes(gone_learners), false)
                .await?;
            return Ok(true);
        }

        // 2. New members become learners (caught up), then active.
        for (id, member) in &state.nodes {
            if voters.contains(id) || learners.contains(id) {
                if member.state == NodeState::Joining {
                    self.write(Command::SetNodeState {
                        node: *id,
                        state: NodeState::Active,
                    })
                    .await?;
                    return Ok(true);
                }
                continue;
            }
            tracing::info!(node = %id, "adding a learner");
            let add = self.raft.add_learner(*id, EmptyNode {}, true);
            match tokio::time::timeout(self.config.join_timeout, add).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("add learner {id}: {e}")),
                Err(_) => return Err(format!("learner {id} did not catch up in time")),
            }
            return Ok(true);
        }

        // 3. The voter set.
        if let Some(want) = planner::desired_voters(&state, &voters) {
            tracing::info!(voters = ?want, "changing the voters");
            self.change(ChangeMembers::ReplaceAllVoters(want), true)
                .await?;
            return Ok(true);
        }

        // 4. Buckets: the initial spread (on the creator), then orphans.
        if state.forming && self.config.initial_nodes > 1 {
            let active: Vec<NodeId> = state
                .nodes
                .iter()
                .filter(|(_, m)| m.state == NodeState::Active)
                .map(|(id, _)| *id)
                .collect();
            let waited = self.started.elapsed() >= self.config.join_timeout;
            if active.len() >= self.config.initial_nodes || waited {
                if active.len() < self.config.initial_nodes {
                    tracing::warn!(
                        joined = active.len(),
                        wanted = self.config.initial_nodes,
                        "spreading the buckets over the members that joined in time"
                    );
                }
                if let Some(cmd) = planner::spread_evenly(&state, &active) {
                    self.write(cmd).await?;
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        if let Some(cmd) = planner::assign_orphans(&state) {
            self.write(cmd).await?;
            return Ok(true);
        }

        // 5. Bucket moves: first give up those that can no longer finish, then start the
        // planned ones (none while forming or paused; at most `max_moves` in progress).
        let cancels = planner::stale_moves(&state);
        if !cancels.is_empty() {
            for cmd in cancels {
                tracing::info!(?cmd, "cancelling a bucket move");
                self.write(cmd).await?;
            }
            return Ok(true);
        }
        let starts = planner::plan_moves(&state, self.config.max_moves);
        for cmd in &starts {
            tracing::info!(?cmd, "starting a bucket move");
            // Stale when a primary changed the bucket's replicas meanwhile: planned again.
            self.write_settled(cmd.clone()).await?;
        }

        // 6. Replicas: added where missing (built by the primaries), dropped where extra.
        let replicas =
            planner::plan_replicas(&state, self.config.max_moves * planner::BUILDS_PER_MOVE);
        // Proposed together, so that Raft commits them in a few batches rather than one
        // entry (and one log flush) after another.
        let changed = !replicas.is_empty();
        let mut writes = tokio::task::JoinSet::new();
        for cmd in replicas {
            tracing::debug!(?cmd, "changing a bucket's replicas");
            let node = self.clone();
            writes.spawn(async move { node.write_settled(cmd).await });
        }
        while let Some(done) = writes.join_next().await {
            done.map_err(|e| format!("replica change: {e}"))??;
        }
        Ok(!starts.is_empty() || changed)
    }

    /// Commits `cmd` through the Raft leader and returns what applying it did: here, under
    /// `leader_lock`, when this node leads; otherwise as PROPOSE to the leader it knows.
    /// Retries (no leader known, the leader changed, a connection failed) with a short
    /// backoff until `deadline`. A retry after a call that failed once sent may commit the
    /// command twice: commands are compare-and-set or idempotent, so the second application
    /// answers `Stale` or `Unchanged`. Must not be called while holding `leader_lock`.
    ///
    /// # Errors
    /// Why nothing was committed by `deadline` (the last failure), or the leader's refusal
    /// to decode the command.
    pub(crate) async fn propose(&self, cmd: Command, deadline: Instant) -> Result<Outcome, String> {
        let body = serde_json::to_vec(&cmd).map_err(|e| format!("cannot encode {cmd:?}: {e}"))?;
        let mut backoff = PROPOSE_MIN_BACKOFF;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            let attempt = match leader {
                Some(leader) if leader == self.me() => {
                    self.commit_as_leader(cmd.clone(), deadline).await
                }
                Some(leader) => self.propose_to(leader, &body, deadline).await,
                None => Err(ProposeFailure::Retry("no leader known".into())),
            };
            let last = match attempt {
                Ok(outcome) => return Ok(outcome),
                Err(ProposeFailure::Fatal(reason)) => return Err(reason),
                Err(ProposeFailure::Retry(reason)) => reason,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no leader committed the change in time ({last})"));
            }
            tracing::debug!(reason = %last, "proposing again");
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(PROPOSE_MAX_BACKOFF);
        }
    }

    /// One PROPOSE to `leader`.
    async fn propose_to(
        &self,
        leader: NodeId,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Outcome, ProposeFailure> {
        let client = self
            .peers
            .member(leader)
            .ok_or_else(|| ProposeFailure::Retry(format!("no address for leader {leader}")))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = client
            .call(
                PeerOpcode::Propose,
                body.to_vec(),
                PROPOSE_CALL_TIMEOUT.min(left),
            )
            .await;
        match reply {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ProposeFailure::Retry(format!("undecodable PROPOSE reply from {leader}: {e}"))
            }),
            Err(PeerCallError::Remote {
                status: Status::BadRequest,
                message,
            }) => Err(ProposeFailure::Fatal(format!(
                "leader {leader} refused the command: {message}"
            ))),
            Err(e) => Err(ProposeFailure::Retry(format!("leader {leader}: {e}"))),
        }
    }

    /// The leader's side of a proposal (its own or a PROPOSE): one write, given up at
    /// `deadline` (and after [`COMMIT_TIMEOUT`] at most).
    async fn commit_as_leader(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<Outcome, ProposeFailure> {
        // No leader lock: every command is checked by the state machine when applied
        // (bucket commands are compare-and-sets), and a switchover must not wait behind the
        // reconciler's slower steps (adding a learner) while its bucket is parked.
        if self.raft.metrics().borrow().current_leader != Some(self.me()) {
            return Err(ProposeFailure::Retry("not the leader".into()));
        }
        let deadline = deadline.min(Instant::now() + COMMIT_TIMEOUT);
        match tokio::time::timeout_at(deadline, self.raft.client_write(cmd)).await {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(e)) => Err(ProposeFailure::Retry(format!("not committed: {e}"))),
            Err(_) => Err(ProposeFailure::Retry("not committed in time".into())),
        }
    }

    fn lease_book(&self) -> std::sync::MutexGuard<'_, LeaseBook> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The leader's side of LEASE_RENEW from `node` (this node included), which arrived at
    /// `arrived`: granted once a quorum confirmed this node leads after that, and only under
    /// the member's current liveness epoch, read after everything committed is applied.
    async fn grant_lease(
        &self,
        node: NodeId,
        liveness_epoch: u64,
        arrived: std::time::Instant,
    ) -> Result<(), PeerFailure> {
        let term = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                return Err(PeerFailure::not_ready("not the leader"));
            }
            m.current_term
        };
        self.confirm_leader(term, arrived).await?;
        match self.replayed.borrow().state.nodes.get(&node) {
            Some(m) if m.liveness_epoch == liveness_epoch => {}
            Some(m) => {
                return Err(PeerFailure::new(
                    Status::Exists,
                    format!(
                        "liveness epoch {liveness_epoch} is not current ({}): the node was fenced",
                        m.liveness_epoch
                    ),
                ))
            }
            None => return Err(PeerFailure::new(Status::NotFound, "not a member")),
        }
        let mut book = self.lease_book();
        book.lead(term, std::time::Instant::now());
        book.renewed(term, node, arrived);
        Ok(())
    }

    /// Confirms with a quorum that this node still leads `term`, by a check that started
    /// after `arrived` (one check serves every renewal that arrived before it started), and
    /// waits until everything committed is applied.
    async fn confirm_leader(
        &self,
        term: u64,
        arrived: std::time::Instant,
    ) -> Result<(), PeerFailure> {
        let mut confirmed = self.confirmed.lock().await;
        if confirmed.is_some_and(|(t, started)| t == term && started >= arrived) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let check = self.raft.ensure_linearizable();
        match tokio::time::timeout(self.config.lease.renew_every, check).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(PeerFailure::not_ready(format!(
                    "not confirmed as leader: {e}"
                )))
            }
            Err(_) => {
                return Err(PeerFailure::not_ready(
                    "no quorum confirmed the leader in time",
                ))
            }
        }
        if self.raft.metrics().borrow().current_term != term {
            return Err(PeerFailure::not_ready("the term changed"));
        }
        *confirmed = Some((term, started));
        Ok(())
    }

    /// One renewal of this node's lease under `liveness_epoch`, with the leader it knows.
    async fn renew_lease(&self, liveness_epoch: u64) -> Result<(), String> {
        let leader = self
            .raft
            .metrics()
            .borrow()
            .current_leader
            .ok_or("no leader known")?;
        if leader == self.me() {
            return self
                .grant_lease(leader, liveness_epoch, std::time::Instant::now())
                .await
                .map_err(|f| f.message);
        }
        let client = self
            .peers
            .member(leader)
            .ok_or_else(|| format!("no address for leader {leader}"))?;
        client
            .call(
                PeerOpcode::LeaseRenew,
                liveness_epoch.to_be_bytes().to_vec(),
                self.config.lease.renew_every,
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("leader {leader}: {e}"))
    }

    /// Keeps this node's lease for as long as the control plane runs: renews it every
    /// [`LeaseTiming::renew_every`] under the liveness epoch the applied state gives the
    /// node; ends it when that epoch changes (the node was fenced); brings a fenced node
    /// back (Revive) once it holds a lease again. First, a node that restarted without the
    /// copies the table gives it fences itself, so their in-sync replicas take over at once
    /// rather than after the lease. `first` is told when the first lease is granted.
    async fn keep_lease(self, first: oneshot::Sender<()>) {
        let me = self.me();
        let timing = self.config.lease;
        let mut first = Some(first);
        let mut checked_restart = false;
        let mut renewed_under: Option<u64> = None;
        let mut lapsed = false;
        let mut applied = self.view.applied_changes();
        loop {
            let round = Instant::now();
            applied.mark_unchanged();
            let state = self.replayed.borrow().state.clone();
            if let Some(member) = state.nodes.get(&me) {
                let epoch = member.liveness_epoch;
                if renewed_under.is_some_and(|e| e != epoch) {
                    // Fenced (its lease had run out already; this only makes sure).
                    self.view.lease().end();
                    renewed_under = None;
                }
                if !checked_restart {
                    // Judged on the state as it was when the node stopped, at the earliest.
                    let replayed = self.committed.is_none_or(|c| {
                        self.replayed.borrow().last_applied.is_some_and(|a| a >= c)
                    });
                    if replayed {
                        checked_restart = self.fence_after_restart(&state, epoch).await;
                        continue;
                    }
                    let _ = tokio::time::timeout_at(round + timing.renew_every, applied.changed())
                        .await;
                    continue;
                }
                let sent = std::time::Instant::now();
                match self.renew_lease(epoch).await {
                    Ok(()) => {
                        self.view.lease().extend(sent, timing.lease);
                        renewed_under = Some(epoch);
                        if lapsed {
                            tracing::info!("lease renewed: serving again");
                            lapsed = false;
                        }
                        if let Some(first) = first.take() {
                            let _ = first.send(());
                        }
                        if member.state == NodeState::Down {
                            self.revive(epoch).await;
                        }
                    }
                    Err(e) => {
                        if !lapsed && !self.view.leased() {
                            tracing::warn!(error = %e, "lease ran out: serving nothing until it is renewed");
                            lapsed = true;
                        }
                        tracing::debug!(error = %e, "lease not renewed");
                    }
                }
            }
            if renewed_under.is_some() {
                tokio::time::sleep_until(round + timing.renew_every).await;
            } else {
                // Not a member yet, or no lease: look again as soon as the state changes.
                let _ =
                    tokio::time::timeout_at(round + timing.renew_every, applied.changed()).await;
            }
        }
    }

    /// At start: a member that restarted (it had a Raft log) without the copies the table
    /// gives it (it loaded no savefile, and outside a whole-cluster stop): primary of a
    /// bucket with in-sync replicas, or a replica, fences itself. `true` once done or not
    /// needed. (A move to it fails by itself: the restarted target refuses the copy.)
    async fn fence_after_restart(&self, state: &ClusterState, liveness_epoch: u64) -> bool {
        if self.committed.is_none() {
            // A new member: whatever the table gives it now was given to this process.
            return true;
        }
        let me = self.me();
        let holds_copies = state
            .buckets
            .iter()
            .any(|b| (b.primary == Some(me) && !b.in_sync.is_empty()) || b.replicas.contains(&me));
        if state.settings.stopping || self.view.holds_loaded() || !holds_copies {
            return true;
        }
        let cmd = Command::FenceNode {
            node: me,
            liveness_epoch,
        };
        let deadline = Instant::now() + self.config.join_timeout;
        match self.propose(cmd, deadline).await {
            Ok(_) => {
                tracing::info!("restarted without this node's copies: fenced it, its buckets fail over to their replicas");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fence this restarted node yet; trying again");
                false
            }
        }
    }

    /// A fenced node that holds a lease again becomes an active member (it owns nothing).
    async fn revive(&self, liveness_epoch: u64) {
        let cmd = Command::Revive {
            node: self.me(),
            liveness_epoch,
        };
        let deadline = Instant::now() + self.config.lease.renew_every;
        match self.propose(cmd, deadline).await {
            Ok(_) => tracing::info!("back after a fence: an active member again"),
            Err(e) => tracing::debug!(error = %e, "revival not committed yet"),
        }
    }

    /// `--fault-promote-any`: marks every replica of `node`'s buckets in sync before the
    /// fence, so a copy that is not may be promoted.
    #[cfg(feature = "fault-injection")]
    async fn fault_mark_all_in_sync(
        &self,
        state: &ClusterState,
        node: NodeId,
    ) -> Result<(), String> {
        if !crate::fault::promote_any() {
            return Ok(());
        }
        for (b, bucket) in state.buckets.iter().enumerate() {
            if bucket.primary != Some(node) {
                continue;
            }
            for r in bucket
                .replicas
                .iter()
                .filter(|r| !bucket.in_sync.contains(r))
            {
                tracing::warn!(bucket = b, replica = %r, "FAULT INJECTION: marking a replica in sync");
                self.write_settled(Command::JoinInSync {
                    bucket: b as u32,
                    epoch: bucket.epoch,
                    node: *r,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Serves admin requests from the data path until the control plane stops: each runs
    /// on its own task, within [`ADMIN_TIMEOUT`].
    async fn serve_admin(self, mut jobs: mpsc::Receiver<AdminJob>) {
        while let Some((req, reply)) = jobs.recv().await {
            let node = self.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + ADMIN_TIMEOUT;
                let answer = node.admin(req, deadline).await;
                match &answer {
                    Ok(message) => tracing::info!(request = ?req, %message, "cluster admin"),
                    Err(e) => tracing::info!(request = ?req, error = %e, "cluster admin refused"),
                }
                let _ = reply.send(answer);
            });
        }
    }

    /// Carries out one admin request: plans it on the applied state, proposes it, and when
    /// the leader's state was ahead (`Stale`), waits for this node to catch up and plans
    /// again.
    async fn admin(&self, req: AdminRequest, deadline: Instant) -> Result<String, AdminError> {
        loop {
            let state = self.replayed.borrow().state.clone();
            let cmd = control::plan(&state, &req)?;
            let outcome = self
                .propose(cmd, deadline)
                .await
                .map_err(AdminError::Unavailable)?;
            let Outcome::Stale {
                bucket, version, ..
            } = outcome
            else {
                return control::outcome(&req, &outcome);
            };
            // Plan again once this node has applied what made the command stale.
            let mut applied = self.replayed.clone();
            let caught_up =
                applied.wait_for(|a| a.state.bucket(bucket).is_none_or(|b| b.version >= version));
            if !matches!(
                tokio::time::timeout_at(deadline, caught_up).await,
                Ok(Ok(_))
            ) {
                return control::outcome(&req, &outcome);
            }
        }
    }

    async fn change(
        &self,
        change: ChangeMembers<NodeId, EmptyNode>,
        retain: bool,
    ) -> Result<(), String> {
        // Two commits (joint, then final): bounded like the join they usually serve.
        let change = self.raft.change_membership(change, retain);
        match tokio::time::timeout(self.config.join_timeout, change).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("membership change: {e}")),
            Err(_) => Err("membership change: not committed in time".into()),
        }
    }

    /// A member that starts again after a whole-cluster stop reports itself back, and one
    /// that a stop marked draining (it saved its buckets instead of handing them all off)
    /// becomes a full member again. Both need the leader: without a quorum (its peers are
    /// still down) it tries again every [`REACTIVATE_RETRY`] until they come back.
    async fn reactivate(&self) {
        let me = self.me();
        loop {
            let state = self.view.state();
            let (cmd, done) = if state.settings.stopping && !state.back.contains(&me) {
                (
                    Command::Back { node: me },
                    "back after a whole-cluster stop",
                )
            } else if state
                .nodes
                .get(&me)
                .is_some_and(|m| m.state == NodeState::Draining)
            {
                let cmd = Command::SetNodeState {
                    node: me,
                    state: NodeState::Active,
                };
                (
                    cmd,
                    "active again after a stop that kept this node's buckets",
                )
            } else {
                return;
            };
            drop(state);
            let mut applied = self.view.applied_changes();
            applied.mark_unchanged();
            let deadline = Instant::now() + self.config.join_timeout;
            match self.propose(cmd, deadline).await {
                Ok(_) => {
                    tracing::info!("{done}");
                    // Look again once this node applied it (or a while later).
                    let _ = tokio::time::timeout(REACTIVATE_RETRY, applied.changed()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not reach the leader to rejoin service; trying again");
                    tokio::time::sleep(REACTIVATE_RETRY).await;
                }
            }
        }
    }

    /// Answers hand-off requests from the data path (one per graceful stop).
    async fn serve_hand_offs(self, mut rx: tokio::sync::mpsc::Receiver<HandOffRequest>) {
        while let Some(req) = rx.recv().await {
            let result = self.hand_off(req.deadline).await;
            if result == HandOff::Done {
                self.handed_off
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let _ = req.reply.send(result);
        }
    }

    /// Marks this node draining, so the leader's planner moves its buckets to the other
    /// active members, and waits until it holds none, no active member is left to take
    /// them, or `deadline`.
    ///
    /// A node with no active peer but other members (the last of several stopped at once,
    /// or one whose peers are down) is marked draining too, within [`ALONE_MARK_TIMEOUT`],
    /// before it saves: from then on no switchover can make it the owner of a bucket its
    /// savefile would miss, and the nodes still handing off see that it cannot take their
    /// buckets. A whole-cluster stop marks nobody (it cancelled every move when committed).
    async fn hand_off(&self, deadline: Instant) -> HandOff {
        let me = self.me();
        let owned = |s: &ClusterState| s.buckets.iter().filter(|b| b.primary == Some(me)).count();
        let peers = |s: &ClusterState| {
            s.nodes
                .iter()
                .any(|(id, m)| *id != me && m.state == NodeState::Active)
        };
        let state = self.view.state();
        if !state.nodes.contains_key(&me) {
            return HandOff::Done;
        }
        if state.settings.stopping {
            return HandOff::Alone {
                left: owned(&state),
            };
        }
        let alone = !peers(&state);
        // Only another member can move a bucket here: a lone member has nothing to fence.
        let others = state.nodes.keys().any(|id| *id != me);
        drop(state);
        if alone && !others {
            return HandOff::Alone {
                left: owned(&self.view.state()),
            };
        }
        if alone {
            let until = deadline.min(Instant::now() + ALONE_MARK_TIMEOUT);
            if let Err(e) = self.mark_draining(until).await {
                tracing::warn!(error = %e, "could not mark this node draining before saving");
            }
            return HandOff::Alone {
                left: owned(&self.view.state()),
            };
        }
        tracing::info!("handing this node's buckets off to the other members");
        if let Err(e) = self.mark_draining(deadline).await {
            tracing::warn!(error = %e, "could not mark this node draining");
            return HandOff::Partial {
                left: owned(&self.view.state()),
            };
        }
        let mut applied = self.view.applied_changes();
        loop {
            applied.mark_unchanged();
            let state = self.view.state();
            let left = owned(&state);
            if left == 0 {
                tracing::info!("every bucket handed off");
                return HandOff::Done;
            }
            if !peers(&state) {
                tracing::warn!(left, "no active member left to take the remaining buckets");
                return HandOff::Alone { left };
            }
            drop(state);
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::warn!(left, "the hand-off ran out of time");
                    return HandOff::Partial { left };
                }
            }
        }
    }

    /// Commits this node's draining state and waits until this node applied it (so every
    /// switchover committed before it is applied here too), by `deadline`.
    async fn mark_draining(&self, deadline: Instant) -> Result<(), String> {
        let me = self.me();
        let cmd = Command::SetNodeState {
            node: me,
            state: NodeState::Draining,
        };
        self.propose(cmd, deadline)
            .await
            .map_err(|e| e.to_string())?;
        let mut applied = self.view.applied_changes();
        loop {
            applied.mark_unchanged();
            let state = self.view.state();
            if state
                .nodes
                .get(&me)
                .is_none_or(|m| m.state == NodeState::Draining)
            {
                return Ok(());
            }
            drop(state);
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err("the draining state was not applied here in time".into()),
            }
        }
    }

    /// After a hand-off that moved every bucket away: removes this node from the cluster.
    /// Returns the peer addresses of the members that stay (the seeds to rejoin through),
    /// or `None` when the node did not hand off or the removal was not committed.
    async fn leave_if_handed_off(&self) -> Option<Vec<String>> {
        if !self.handed_off.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let me = self.me();
        let cmd = Command::RemoveNode {
            node: me,
            heir: None,
        };
        match self.propose(cmd, Instant::now() + LEAVE_TIMEOUT).await {
            Ok(Outcome::Done) => {}
            other => {
                tracing::warn!(outcome = ?other, "could not leave the cluster; staying a member");
                return None;
            }
        }
        tracing::info!("left the cluster");
        let state = self.view.state();
        Some(
            state
                .nodes
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(_, m)| m.addrs.peer.clone())
                .collect(),
        )
    }

    /// Forgets the cluster this node left, so it starts again as a new member.
    fn forget_cluster(&self, seeds: &[String]) {
        let Some(dir) = &self.config.data_dir else {
            return;
        };
        let raft = dir.join(super::RAFT_DIR);
        match forget_cluster(dir, &raft, seeds) {
            Ok(()) => tracing::info!(
                ?seeds,
                "forgot the cluster; a restart joins it again as a new member"
            ),
            Err(e) => tracing::warn!(error = %e, "could not forget the cluster this node left"),
        }
    }

    /// What this node's bucket moves need (the proposer goes through the leader).
    fn move_context(&self) -> moves::source::Context {
        let node = self.clone();
        let propose: Proposer = Arc::new(move |cmd, deadline| {
            let node = node.clone();
            Box::pin(async move { node.propose(cmd, deadline).await })
        });
        moves::source::Context::new(
            self.view.clone(),
            self.identity.clone(),
            propose,
            self.config.moves.clone(),
        )
    }

    /// Like [`Node::write`], but a stale compare-and-set is not an error (the planner looks
    /// again at the next round).
    async fn write_settled(&self, cmd: Command) -> Result<(), String> {
        match self.commit(cmd.clone()).await? {
            Outcome::Done | Outcome::Unchanged | Outcome::Stale { .. } => Ok(()),
            other => Err(format!("{cmd:?}: {other:?}")),
        }
    }

    async fn write(&self, cmd: Command) -> Result<(), String> {
        match self.commit(cmd.clone()).await? {
            Outcome::Done | Outcome::Unchanged => Ok(()),
            other => Err(format!("{cmd:?}: {other:?}")),
        }
    }

    /// Commits `cmd` as the leader: what applying it did (an error after
    /// [`COMMIT_TIMEOUT`]).
    async fn commit(&self, cmd: Command) -> Result<Outcome, String> {
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(cmd.clone())).await {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(e)) => Err(format!("{cmd:?}: {e}")),
            Err(_) => Err(format!("{cmd:?}: not committed in time")),
        }
    }
}

/// Why one attempt to commit a proposal failed.
enum ProposeFailure {
    /// Try again (perhaps with another leader): nothing is known to be committed.
    Retry(String),
    /// Trying again cannot help (the leader cannot decode the command).
    Fatal(String),
}

/// Why asking the seeds did not give a cluster.
enum JoinFailure {
    /// A seed or the leader refused this node (exit at once).
    Refused(String),
    /// Nobody accepted before the deadline (the last reason heard).
    NoAnswer(String),
}

/// Copies openraft's metrics into the view, for status requests.
async fn forward_metrics(raft: Raft, view: ClusterView) {
    let mut metrics = raft.metrics();
    loop {
        let status = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            RaftStatus {
                role: match m.state {
                    ServerState::Learner => RaftRole::Learner,
                    ServerState::Follower => RaftRole::Follower,
                    ServerState::Candidate => RaftRole::Candidate,
                    ServerState::Leader => RaftRole::Leader,
                    ServerState::Shutdown => RaftRole::Shutdown,
                },
                term: m.current_term,
                last_applied: m.last_applied.map_or(0, |l| l.index),
                leader: m.current_leader,
                voters: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
            }
        };
        view.set_raft_status(status);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// The peer requests a member serves: Raft's, JOIN, LEAVE_VOTERS, PROPOSE and FORWARD.
struct Service {
    node: Node,
}

impl PeerHandler for Service {
    fn handle_in_order(&self, from: &PeerInfo, op: PeerOpcode, body: &[u8]) -> Option<InOrder> {
        if matches!(op, PeerOpcode::Move | PeerOpcode::Replicate) {
            let replica = op == PeerOpcode::Replicate;
            let view = &self.node.view;
            return view
                .moves()
                .receive_now(view, from.node_id, replica, body)
                .map(|reply| InOrder { reply, after: None });
        }
        if op == PeerOpcode::ForwardBatch {
            let forwarding = self.node.view.forwarding();
            return Some(match decode_forward_batch(body) {
                Ok(commands) => match forwarding.run_local_batch(&commands) {
                    Ok((reply, after)) => InOrder {
                        reply: Ok(reply),
                        after,
                    },
                    Err(e) => InOrder {
                        reply: Err(PeerFailure::not_ready(e.to_string())),
                        after: None,
                    },
                },
                Err(kind) => InOrder {
                    reply: Err(PeerFailure::bad_request(format!(
                        "malformed FORWARD_BATCH: {}",
                        kind.as_str()
                    ))),
                    after: None,
                },
            });
        }
        if op != PeerOpcode::Forward {
            return None;
        }
        let ran = match self.node.view.forwarding().run_local(body) {
            Ok(ran) => ran,
            Err(e) => {
                return Some(InOrder {
                    reply: Err(PeerFailure::not_ready(e.to_string())),
                    after: None,
                })
            }
        };
        let mut out = Vec::new();
        match &ran.executed {
            Executed::Reply(bytes) => ForwardReply::Executed(bytes).encode(&mut out),
            Executed::NotMine { bucket, epoch } => ForwardReply::NotMine {
                bucket: *bucket,
                epoch: *epoch,
            }
            .encode(&mut out),
        }
        Some(InOrder {
            reply: Ok(out),
            after: ran.after,
        })
    }

    async fn handle(
        &self,
        from: &PeerInfo,
        op: PeerOpcode,
        body: Bytes,
    ) -> Result<Vec<u8>, PeerFailure> {
        match op {
            PeerOpcode::RaftAppend | PeerOpcode::RaftVote | PeerOpcode::RaftSnapshot => {
                serve_raft(&self.node.raft, op, &body)
                    .await
                    .map_err(PeerFailure::bad_request)
            }
            PeerOpcode::Move | PeerOpcode::Replicate => {
                self.node
                    .view
                    .moves()
                    .receive(
                        &self.node.view,
                        from.node_id,
                        op == PeerOpcode::Replicate,
                        &body,
                    )
                    .await
            }
            PeerOpcode::LeaveVoters => {
                let node: NodeId = serde_json::from_slice(&body).map_err(|e| {
                    PeerFailure::bad_request(format!("undecodable LEAVE_VOTERS: {e}"))
                })?;
                if node != from.node_id {
                    return Err(PeerFailure::bad_request(
                        "LEAVE_VOTERS names another node than the connection's",
                    ));
                }
                let replaced = self
                    .node
                    .handle_leave(node)
                    .await
                    .map_err(PeerFailure::not_ready)?;
                serde_json::to_vec(&replaced)
                    .map_err(|e| PeerFailure::new(Status::ServerError, e.to_string()))
            }
            PeerOpcode::LeaseRenew => {
                let arrived = std::time::Instant::now();
                let epoch: [u8; 8] = body[..].try_into().map_err(|_| {
                    PeerFailure::bad_request("LEASE_RENEW body is not a u64 liveness epoch")
                })?;
                self.node
                    .grant_lease(from.node_id, u64::from_be_bytes(epoch), arrived)
                    .await
                    .map(|()| Vec::new())
            }
            PeerOpcode::Propose => {
                let cmd: Command = serde_json::from_slice(&body)
                    .map_err(|e| PeerFailure::bad_request(format!("undecodable PROPOSE: {e}")))?;
                let deadline = Instant::now() + PROPOSE_CALL_TIMEOUT;
                let outcome = match self.node.commit_as_leader(cmd, deadline).await {
                    Ok(outcome) => outcome,
                    Err(ProposeFailure::Retry(reason) | ProposeFailure::Fatal(reason)) => {
                        return Err(PeerFailure::not_ready(reason))
                    }
                };
                serde_json::to_vec(&outcome)
                    .map_err(|e| PeerFailure::new(Status::ServerError, e.to_string()))
            }
            PeerOpcode::Join => {
                let req: JoinRequest = serde_json::from_slice(&body)
                    .map_err(|e| PeerFailure::bad_request(format!("undecodable JOIN: {e}")))?;
                if req.node != from.node_id {
                    return Err(PeerFailure::bad_request(
                        "JOIN names another node than the connection's",
                    ));
                }
                let reply = self.node.handle_join(req).await;
                serde_json::to_vec(&reply)
                    .map_err(|e| PeerFailure::new(Status::ServerError, e.to_string()))
            }
            other => Err(PeerFailure::new(
                Status::UnknownCommand,
                format!("{} is not served here", other.name()),
            )),
        }
    }
}
