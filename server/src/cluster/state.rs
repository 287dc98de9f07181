//! The replicated cluster state: membership, settings and the bucket table, and the commands
//! that change them.
//!
//! This is the state machine behind Raft, as plain data with no I/O: every node applies the
//! same committed [`Command`]s in the same order with [`ClusterState::apply`] and so holds the
//! same state. `apply` is deterministic (no clock, no randomness, no hashing with random keys):
//! the only outside input is the log index of the entry, which gives bucket epochs and
//! versions.
//!
//! Rules the commands enforce:
//! - Every bucket change is a compare-and-set on the bucket's `(epoch, version)`; a stale
//!   command changes nothing and answers [`Outcome::Stale`] with the current values.
//! - A bucket's `epoch` is the log index of the entry that last changed its primary; its
//!   `version` is the log index of the entry that last changed anything about it.
//! - A node id is added once. A node that announces itself again (restart, new addresses)
//!   is updated in place; a removed id is never taken back (a restored old data directory
//!   must not come back as a second copy of a member).
//! - Only a joining or active node can be given buckets.

use crate::datadir::{ClusterId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The largest bucket count a cluster can be created with.
pub const MAX_BUCKETS: u32 = 1 << 16;

/// When nodes write a savefile on their own, cluster-wide (the creator's `--persist`).
/// Recorded for the graceful-stop and hand-off work; until then each node follows its own
/// `--persist`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistSetting {
    /// Never at stop.
    Never,
    /// At a graceful stop when no peer can take the node's buckets.
    #[default]
    OnLastStop,
    /// At every graceful stop.
    Always,
}

impl From<crate::persist::PersistMode> for PersistSetting {
    fn from(mode: crate::persist::PersistMode) -> Self {
        match mode {
            crate::persist::PersistMode::Never => PersistSetting::Never,
            crate::persist::PersistMode::OnLastStop => PersistSetting::OnLastStop,
            crate::persist::PersistMode::Always => PersistSetting::Always,
        }
    }
}

/// Cluster-wide settings, fixed or changed through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Number of buckets: a power of two, fixed when the cluster is created.
    pub buckets: u32,
    /// Copies per bucket besides its primary, kept in sync by replication.
    pub replicas: u32,
    /// While paused, the planner starts no movement.
    pub paused: bool,
    /// When nodes write a savefile on their own.
    pub persist: PersistSetting,
    /// The whole cluster was told to stop (`shoal-ctl stop-cluster`): every node saves its
    /// buckets and exits without leaving; set until every member is back.
    #[serde(default)]
    pub stopping: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            buckets: 1024,
            replicas: 1,
            paused: false,
            persist: PersistSetting::default(),
            stopping: false,
        }
    }
}

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddrs {
    /// Peer port address (Raft, and later replication and moves).
    pub peer: String,
    /// Native protocol address, given to clients in redirects and the table.
    pub native: String,
    /// memcached text protocol address, if that port is enabled.
    pub memcache: Option<String>,
    /// Whether the node keeps its Raft state on disk (it has a data directory). Only such
    /// nodes vote: openraft assumes a vote and an acknowledged log survive a restart.
    pub durable: bool,
}

/// A member's place in the cluster's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Added, not yet a full member (catching up on the log).
    Joining,
    /// A full member: may own buckets.
    Active,
    /// Leaving: gets no new buckets, gives its buckets away.
    Draining,
    /// Fenced ([`Command::FenceNode`]): its lease ran out, or it restarted and lost its
    /// copies. Owns and copies nothing; back to active once it renews its lease again
    /// ([`Command::Revive`]).
    Down,
}

impl NodeState {
    /// The name used in status output.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where it listens.
    pub addrs: NodeAddrs,
    /// Its life-cycle state.
    pub state: NodeState,
    /// Bumped when the node is fenced: a node renews its lease under the epoch it has
    /// applied, so a lease is granted only to a node that knows it was fenced.
    pub liveness_epoch: u64,
}

/// One bucket's owners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The node that serves it, if any.
    pub primary: Option<NodeId>,
    /// Nodes given a copy of it, kept by replication from the primary (never the primary
    /// or a move's target). A replica not in `in_sync` is being built or catching up.
    pub replicas: Vec<NodeId>,
    /// The replicas that hold every write the primary acknowledged (a subset of `replicas`):
    /// joined by the primary once a copy caught up, left (committed before any write is
    /// acknowledged without it) when one falls behind, emptied when the primary changes.
    pub in_sync: Vec<NodeId>,
    /// Log index of the entry that last changed `primary` (0: never assigned).
    pub epoch: u64,
    /// Log index of the entry that last changed anything here (0: never changed).
    pub version: u64,
    /// The copy of this bucket to another node in progress, if any.
    #[serde(default)]
    pub moving: Option<Move>,
    /// When the primary's data is the replica copy it held under the previous primary, that
    /// primary's epoch (a promoted in-sync replica keeps its copy and serves it); `None` when
    /// it came from a move's copy, a savefile, or nothing.
    #[serde(default)]
    pub promoted_from: Option<u64>,
}

impl Bucket {
    /// Makes `node` the primary at log index `index` (a new epoch): a move in progress ends,
    /// `node` stops being a replica, and no replica is in sync with it until it says so.
    fn new_primary(&mut self, node: NodeId, index: u64) {
        self.primary = Some(node);
        self.epoch = index;
        self.version = index;
        self.moving = None;
        self.replicas.retain(|r| *r != node);
        self.in_sync.clear();
        self.promoted_from = None;
    }

    /// Makes in-sync replica `node` the primary at log index `index`: it serves the copy it
    /// holds.
    fn promote(&mut self, node: NodeId, index: u64) {
        let from = self.epoch;
        self.new_primary(node, index);
        self.promoted_from = Some(from);
    }

    /// A planned promotion of `node` ends when it stops being a replica.
    fn end_promotion_of(&mut self, node: NodeId) {
        if self.moving.is_some_and(|m| m.promote && m.to == node) {
            self.moving = None;
        }
    }

    /// A planned promotion of `node`, which just left the in-sync set, becomes a copy to it
    /// (a new move, named by `index`): it stops being a replica and the move makes its copy
    /// again, as a move to a replica that is not in sync does from the start. (The move was
    /// asked for; a replica that falls behind, e.g. one not yet rebuilt after a
    /// whole-cluster restart, does not cancel it.)
    fn copy_instead_of_promoting(&mut self, node: NodeId, index: u64) {
        if self.moving.is_some_and(|m| m.promote && m.to == node) {
            self.moving = Some(Move {
                id: index,
                to: node,
                promote: false,
            });
            self.replicas.retain(|r| *r != node);
        }
    }

    /// How many of its replicas are not in sync (being built or catching up).
    pub fn building(&self) -> usize {
        self.replicas.len() - self.in_sync.len()
    }
}

/// A bucket being copied from its primary to another node (the first step of a move).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The log index of the entry that started it: names this copy (a restarted copy of the
    /// same bucket has another id).
    pub id: u64,
    /// The node receiving the copy (the new primary once the move finishes).
    pub to: NodeId,
    /// `to` is an in-sync replica: no copy is made, the switchover promotes its replica
    /// copy (a planned switchover). Ends (the move is dropped) when `to` leaves the in-sync
    /// set.
    #[serde(default)]
    pub promote: bool,
}

/// One bucket's new primary, conditional on the bucket being unchanged since it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The bucket.
    pub bucket: u32,
    /// The epoch it must still have.
    pub epoch: u64,
    /// The version it must still have.
    pub version: u64,
    /// Its new primary.
    pub primary: NodeId,
}

/// A change to the cluster state: the payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates the cluster: its id, settings and first member (active). When
    /// `assign_all` is set, the creator becomes primary of every bucket in the same entry.
    Create {
        /// The new cluster's id.
        cluster_id: ClusterId,
        /// Its settings (`buckets` must be a power of two, 1..=[`MAX_BUCKETS`]).
        settings: Settings,
        /// The creating node.
        node: NodeId,
        /// Its addresses.
        addrs: NodeAddrs,
        /// Give the creator every bucket now (a cluster of one).
        assign_all: bool,
    },
    /// Adds a node as joining, or updates the addresses of a member that announces itself
    /// again.
    AddNode {
        /// The node.
        node: NodeId,
        /// Its addresses.
        addrs: NodeAddrs,
    },
    /// Moves a member to another life-cycle state.
    SetNodeState {
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
    },
    /// Removes a member for good; its buckets go to `heir` (or to no one), with a new epoch.
    RemoveNode {
        /// The node.
        node: NodeId,
        /// Who takes its buckets.
        heir: Option<NodeId>,
    },
    /// Gives buckets new primaries, all or none: every assignment's `(epoch, version)` must
    /// match.
    Assign(Vec<Assignment>),
    /// Pauses or resumes movement planning. Resuming also ends a whole-cluster stop that is
    /// waiting for members that will not come back.
    SetPaused(bool),
    /// The whole cluster stops: movement is paused and every node saves its buckets and
    /// exits, staying a member.
    StopCluster,
    /// A member started again after a whole-cluster stop; once every member has, the stop is
    /// over (movement resumes).
    Back {
        /// The member.
        node: NodeId,
    },
    /// Starts copying a bucket from its primary to `to`, conditional on the bucket's
    /// `(epoch, version)`; the move's id is this entry's index. Refused when the bucket has
    /// no primary, `to` is its primary, or `to` cannot take buckets; stale when the bucket
    /// changed (a move already running changed its version). A replica named as `to` stops
    /// being one.
    StartMove {
        /// The bucket.
        bucket: u32,
        /// The epoch it must still have.
        epoch: u64,
        /// The version it must still have.
        version: u64,
        /// The node receiving it.
        to: NodeId,
    },
    /// The switchover: the target of move `move_id` becomes the bucket's primary (new
    /// epoch). Stale unless that move is still the bucket's current one.
    FinishMove {
        /// The bucket.
        bucket: u32,
        /// The move's id.
        move_id: u64,
    },
    /// Ends a move without a switchover (the target drops its copy). `move_id: None` cancels
    /// whatever move the bucket has; unchanged when it has none (or another one).
    CancelMove {
        /// The bucket.
        bucket: u32,
        /// The move to cancel, if only that one.
        move_id: Option<u64>,
    },
    /// Gives a bucket one more replica (not in sync: its primary builds the copy),
    /// conditional on the bucket's `(epoch, version)`. Refused when the bucket has no
    /// primary, or `node` is its primary, a replica already, the target of its move, or not
    /// an active member.
    AddReplica {
        /// The bucket.
        bucket: u32,
        /// The epoch it must still have.
        epoch: u64,
        /// The version it must still have.
        version: u64,
        /// The new replica.
        node: NodeId,
    },
    /// Takes a replica away (the node drops its copy); unchanged when it is not one.
    DropReplica {
        /// The bucket.
        bucket: u32,
        /// The replica.
        node: NodeId,
    },
    /// The primary of epoch `epoch` reports that replica `node` holds every write it
    /// acknowledged, and will acknowledge none without it from now on. Stale when the
    /// bucket's primary changed since; refused when `node` is not a replica.
    JoinInSync {
        /// The bucket.
        bucket: u32,
        /// The primary's epoch.
        epoch: u64,
        /// The replica.
        node: NodeId,
    },
    /// The primary of epoch `epoch` acknowledges writes without replica `node` from now on
    /// (it fell behind). Stale when the bucket's primary changed since; unchanged when the
    /// replica is not in sync.
    LeaveInSync {
        /// The bucket.
        bucket: u32,
        /// The primary's epoch.
        epoch: u64,
        /// The replica.
        node: NodeId,
    },
    /// Sets the number of replicas per bucket (the planner adds or drops copies to match).
    SetReplicas(u32),
    /// Fences a member whose lease ran out (or that restarted without its copies): its
    /// liveness epoch is bumped and it goes down; each bucket it was primary of gets an
    /// in-sync replica on an active member promoted, or no primary (it comes back empty);
    /// it stops being a replica or a move's target anywhere. Unchanged unless the member
    /// still has `liveness_epoch`.
    FenceNode {
        /// The member.
        node: NodeId,
        /// Its liveness epoch when its lease was seen to run out.
        liveness_epoch: u64,
    },
    /// A fenced member renewed its lease under its new liveness epoch: active again (it owns
    /// nothing yet). Unchanged unless it is down with `liveness_epoch`.
    Revive {
        /// The member.
        node: NodeId,
        /// Its liveness epoch.
        liveness_epoch: u64,
    },
}

/// Why a command was refused (deterministically, so every node refuses it alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// A command other than `Create` arrived before the cluster was created.
    NotCreated,
    /// `Create` arrived for a cluster that exists.
    AlreadyCreated,
    /// The settings are invalid (bucket count not a power of two in range).
    BadSettings,
    /// The node is not a member.
    UnknownNode(NodeId),
    /// The node was removed and cannot come back under the same id.
    RemovedNode(NodeId),
    /// The bucket number is out of range.
    NoSuchBucket(u32),
    /// The node cannot take buckets in its state.
    NotEligible(NodeId),
    /// Another member already uses this peer address.
    AddressInUse(NodeId),
    /// The node is not a replica of the bucket.
    NotReplica(NodeId),
    /// More replicas than [`MAX_REPLICAS`].
    TooManyReplicas(u32),
}

/// The most replicas per bucket a cluster can be set to.
pub const MAX_REPLICAS: u32 = 4;

/// What applying a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied.
    #[default]
    Done,
    /// Valid, but nothing needed changing.
    Unchanged,
    /// A bucket moved on since the command was made: its current epoch and version.
    Stale {
        /// The bucket.
        bucket: u32,
        /// Its epoch now.
        epoch: u64,
        /// Its version now.
        version: u64,
    },
    /// Refused.
    Refused(Refusal),
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's id, once created.
    pub cluster_id: Option<ClusterId>,
    /// Settings.
    pub settings: Settings,
    /// Current members.
    pub nodes: BTreeMap<NodeId, Member>,
    /// Ids removed for good.
    pub removed: BTreeSet<NodeId>,
    /// One entry per bucket (empty before creation).
    pub buckets: Vec<Bucket>,
    /// Log index of the last entry that changed the bucket table or a member's addresses or
    /// state: what clients compare to know whether their table is current.
    pub table_version: u64,
    /// Created without owners, waiting for its initial members (`--initial-nodes`): until an
    /// assignment gives every bucket a primary, nobody hands out buckets left without one.
    pub forming: bool,
    /// After a whole-cluster stop: the members that started again.
    #[serde(default)]
    pub back: BTreeSet<NodeId>,
}

impl ClusterState {
    /// Applies one committed command, found at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Outcome {
        match self.try_apply(index, cmd) {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn try_apply(&mut self, index: u64, cmd: &Command) -> Result<Outcome, Refusal> {
        if self.cluster_id.is_none() && !matches!(cmd, Command::Create { .. }) {
            return Err(Refusal::NotCreated);
        }
        match cmd {
            Command::Create {
                cluster_id,
                settings,
                node,
                addrs,
                assign_all,
            } => {
                if self.cluster_id.is_some() {
                    return Err(Refusal::AlreadyCreated);
                }
                if !settings.buckets.is_power_of_two() || settings.buckets > MAX_BUCKETS {
                    return Err(Refusal::BadSettings);
                }
                self.cluster_id = Some(*cluster_id);
                self.settings = settings.clone();
                self.nodes.insert(
                    *node,
                    Member {
                        addrs: addrs.clone(),
                        state: NodeState::Active,
                        liveness_epoch: 0,
                    },
                );
                let owner = assign_all.then_some(*node);
                let stamp = if *assign_all { index } else { 0 };
                self.buckets = vec![
                    Bucket {
                        primary: owner,
                        epoch: stamp,
                        version: stamp,
                        ..Bucket::default()
                    };
                    settings.buckets as usize
                ];
                self.table_version = index;
                self.forming = !assign_all;
                Ok(Outcome::Done)
            }
            Command::AddNode { node, addrs } => {
                if self.removed.contains(node) {
                    return Err(Refusal::RemovedNode(*node));
                }
                if let Some((other, _)) = self
                    .nodes
                    .iter()
                    .find(|(id, m)| *id != node && m.addrs.peer == addrs.peer)
                {
                    return Err(Refusal::AddressInUse(*other));
                }
                match self.nodes.get_mut(node) {
                    Some(member) if member.addrs == *addrs => Ok(Outcome::Unchanged),
                    Some(member) => {
                        member.addrs = addrs.clone();
                        self.table_version = index;
                        Ok(Outcome::Done)
                    }
                    None => {
                        self.nodes.insert(
                            *node,
                            Member {
                                addrs: addrs.clone(),
                                state: NodeState::Joining,
                                liveness_epoch: 0,
                            },
                        );
                        self.table_version = index;
                        Ok(Outcome::Done)
                    }
                }
            }
            Command::SetNodeState { node, state } => {
                let member = self
                    .nodes
                    .get_mut(node)
                    .ok_or(Refusal::UnknownNode(*node))?;
                if member.state == *state {
                    return Ok(Outcome::Unchanged);
                }
                // In and out of `Down` only by a fence and a revival (each conditional on
                // the liveness epoch), so no late command brings a fenced node back.
                if member.state == NodeState::Down || *state == NodeState::Down {
                    return Err(Refusal::NotEligible(*node));
                }
                member.state = *state;
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::RemoveNode { node, heir } => {
                if !self.nodes.contains_key(node) {
                    return Err(Refusal::UnknownNode(*node));
                }
                if let Some(heir) = heir {
                    self.check_eligible(heir, Some(node))?;
                }
                self.nodes.remove(node);
                self.removed.insert(*node);
                for bucket in &mut self.buckets {
                    let mut changed = false;
                    if bucket.primary == Some(*node) {
                        bucket.primary = *heir;
                        bucket.epoch = index;
                        // The heir holds none of it: no copy is in sync with it.
                        bucket.in_sync.clear();
                        bucket.promoted_from = None;
                        if let Some(heir) = heir {
                            bucket.replicas.retain(|r| r != heir);
                        }
                        changed = true;
                    }
                    // A move from or to the removed node ends with it.
                    if changed || bucket.moving.is_some_and(|m| m.to == *node) {
                        changed |= bucket.moving.take().is_some();
                    }
                    let before = (bucket.replicas.len(), bucket.in_sync.len());
                    bucket.replicas.retain(|r| r != node);
                    bucket.in_sync.retain(|r| r != node);
                    changed |= before != (bucket.replicas.len(), bucket.in_sync.len());
                    if changed {
                        bucket.version = index;
                    }
                }
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::Assign(assignments) => {
                for a in assignments {
                    let bucket = self
                        .buckets
                        .get(a.bucket as usize)
                        .ok_or(Refusal::NoSuchBucket(a.bucket))?;
                    if (bucket.epoch, bucket.version) != (a.epoch, a.version) {
                        return Ok(Outcome::Stale {
                            bucket: a.bucket,
                            epoch: bucket.epoch,
                            version: bucket.version,
                        });
                    }
                    self.check_eligible(&a.primary, None)?;
                }
                let mut changed = false;
                for a in assignments {
                    let bucket = &mut self.buckets[a.bucket as usize];
                    if bucket.primary != Some(a.primary) {
                        bucket.new_primary(a.primary, index);
                        changed = true;
                    }
                }
                if !changed {
                    return Ok(Outcome::Unchanged);
                }
                self.table_version = index;
                if self.buckets.iter().all(|b| b.primary.is_some()) {
                    self.forming = false;
                }
                Ok(Outcome::Done)
            }
            Command::SetPaused(paused) => {
                let stop_ended = !*paused && self.settings.stopping;
                if self.settings.paused == *paused && !stop_ended {
                    return Ok(Outcome::Unchanged);
                }
                self.settings.paused = *paused;
                if stop_ended {
                    self.settings.stopping = false;
                    self.back.clear();
                }
                Ok(Outcome::Done)
            }
            Command::StopCluster => {
                if self.settings.stopping {
                    return Ok(Outcome::Unchanged);
                }
                self.settings.stopping = true;
                self.settings.paused = true;
                self.back.clear();
                // No switchover may commit once the nodes start saving: a bucket would land
                // on a node whose savefile does not hold it.
                for b in self.buckets.iter_mut().filter(|b| b.moving.is_some()) {
                    b.moving = None;
                    b.version = index;
                }
                Ok(Outcome::Done)
            }
            Command::Back { node } => {
                if !self.settings.stopping {
                    return Ok(Outcome::Unchanged);
                }
                if !self.nodes.contains_key(node) {
                    return Err(Refusal::UnknownNode(*node));
                }
                self.back.insert(*node);
                if self.nodes.keys().all(|id| self.back.contains(id)) {
                    self.settings.stopping = false;
                    self.settings.paused = false;
                    self.back.clear();
                }
                Ok(Outcome::Done)
            }
            Command::StartMove {
                bucket,
                epoch,
                version,
                to,
            } => {
                let b = match self.unchanged_bucket(*bucket, *epoch, *version)? {
                    Ok(b) => b,
                    Err(stale) => return Ok(stale),
                };
                if b.primary.is_none() || b.primary == Some(*to) || b.moving.is_some() {
                    return Err(Refusal::NotEligible(*to));
                }
                self.check_active(to)?;
                let b = &mut self.buckets[*bucket as usize];
                let promote = b.in_sync.contains(to);
                b.moving = Some(Move {
                    id: index,
                    to: *to,
                    promote,
                });
                // A replica not in sync that becomes the target stops being a replica in the
                // same entry: its copy is made again by the move.
                if !promote && b.replicas.contains(to) {
                    b.replicas.retain(|r| r != to);
                    b.in_sync.retain(|r| r != to);
                    self.table_version = index;
                }
                b.version = index;
                Ok(Outcome::Done)
            }
            Command::FinishMove { bucket, move_id } => {
                let nodes = &self.nodes;
                let active =
                    |to: &NodeId| nodes.get(to).is_some_and(|n| n.state == NodeState::Active);
                let b = self
                    .buckets
                    .get_mut(*bucket as usize)
                    .ok_or(Refusal::NoSuchBucket(*bucket))?;
                // A target that stopped being active (it is stopping too) takes nothing; a
                // replica to promote must still be in sync.
                let Some(m) = b.moving.filter(|m| {
                    m.id == *move_id && active(&m.to) && (!m.promote || b.in_sync.contains(&m.to))
                }) else {
                    return Ok(Outcome::Stale {
                        bucket: *bucket,
                        epoch: b.epoch,
                        version: b.version,
                    });
                };
                if m.promote {
                    b.promote(m.to, index);
                } else {
                    b.new_primary(m.to, index);
                }
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::CancelMove { bucket, move_id } => {
                let b = self
                    .buckets
                    .get_mut(*bucket as usize)
                    .ok_or(Refusal::NoSuchBucket(*bucket))?;
                match b.moving {
                    Some(m) if move_id.is_none_or(|id| id == m.id) => {
                        b.moving = None;
                        b.version = index;
                        Ok(Outcome::Done)
                    }
                    _ => Ok(Outcome::Unchanged),
                }
            }
            Command::AddReplica {
                bucket,
                epoch,
                version,
                node,
            } => {
                let b = match self.unchanged_bucket(*bucket, *epoch, *version)? {
                    Ok(b) => b,
                    Err(stale) => return Ok(stale),
                };
                if b.primary.is_none()
                    || b.primary == Some(*node)
                    || b.replicas.contains(node)
                    || b.moving.is_some_and(|m| m.to == *node)
                {
                    return Err(Refusal::NotEligible(*node));
                }
                self.check_active(node)?;
                let b = &mut self.buckets[*bucket as usize];
                b.replicas.push(*node);
                b.version = index;
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::DropReplica { bucket, node } => {
                let b = self
                    .buckets
                    .get_mut(*bucket as usize)
                    .ok_or(Refusal::NoSuchBucket(*bucket))?;
                if !b.replicas.contains(node) {
                    return Ok(Outcome::Unchanged);
                }
                b.replicas.retain(|r| r != node);
                b.in_sync.retain(|r| r != node);
                b.end_promotion_of(*node);
                b.version = index;
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::JoinInSync {
                bucket,
                epoch,
                node,
            }
            | Command::LeaveInSync {
                bucket,
                epoch,
                node,
            } => {
                let join = matches!(cmd, Command::JoinInSync { .. });
                let b = self
                    .buckets
                    .get_mut(*bucket as usize)
                    .ok_or(Refusal::NoSuchBucket(*bucket))?;
                if b.epoch != *epoch || b.primary.is_none() {
                    return Ok(Outcome::Stale {
                        bucket: *bucket,
                        epoch: b.epoch,
                        version: b.version,
                    });
                }
                if !b.replicas.contains(node) {
                    return if join {
                        Err(Refusal::NotReplica(*node))
                    } else {
                        Ok(Outcome::Unchanged)
                    };
                }
                if join == b.in_sync.contains(node) {
                    return Ok(Outcome::Unchanged);
                }
                if join {
                    b.in_sync.push(*node);
                } else {
                    b.in_sync.retain(|r| r != node);
                    b.copy_instead_of_promoting(*node, index);
                }
                b.version = index;
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::FenceNode {
                node,
                liveness_epoch,
            } => self.fence(index, *node, *liveness_epoch),
            Command::Revive {
                node,
                liveness_epoch,
            } => {
                let member = self
                    .nodes
                    .get_mut(node)
                    .ok_or(Refusal::UnknownNode(*node))?;
                if member.state != NodeState::Down || member.liveness_epoch != *liveness_epoch {
                    return Ok(Outcome::Unchanged);
                }
                member.state = NodeState::Active;
                self.table_version = index;
                Ok(Outcome::Done)
            }
            Command::SetReplicas(n) => {
                if *n > MAX_REPLICAS {
                    return Err(Refusal::TooManyReplicas(*n));
                }
                if self.settings.replicas == *n {
                    return Ok(Outcome::Unchanged);
                }
                self.settings.replicas = *n;
                Ok(Outcome::Done)
            }
        }
    }

    /// [`Command::FenceNode`]: `node` goes down under a new liveness epoch and its buckets
    /// fail over.
    fn fence(&mut self, index: u64, node: NodeId, liveness_epoch: u64) -> Result<Outcome, Refusal> {
        let member = self
            .nodes
            .get_mut(&node)
            .ok_or(Refusal::UnknownNode(node))?;
        if member.liveness_epoch != liveness_epoch {
            return Ok(Outcome::Unchanged);
        }
        member.liveness_epoch += 1;
        member.state = NodeState::Down;
        let nodes = &self.nodes;
        let active = |n: &NodeId| nodes.get(n).is_some_and(|m| m.state == NodeState::Active);
        for bucket in &mut self.buckets {
            if bucket.primary == Some(node) {
                // Never a replica that is not in sync: it may lack acknowledged writes.
                match bucket.in_sync.iter().copied().find(|r| active(r)) {
                    Some(heir) => bucket.promote(heir, index),
                    None => {
                        bucket.primary = None;
                        bucket.epoch = index;
                        bucket.version = index;
                        bucket.moving = None;
                        bucket.in_sync.clear();
                        bucket.promoted_from = None;
                    }
                }
                continue;
            }
            let copied = bucket.replicas.contains(&node);
            let target = bucket.moving.is_some_and(|m| m.to == node);
            if !copied && !target {
                continue;
            }
            bucket.replicas.retain(|r| *r != node);
            bucket.in_sync.retain(|r| *r != node);
            if target {
                bucket.moving = None;
            }
            bucket.version = index;
        }
        self.table_version = index;
        Ok(Outcome::Done)
    }

    /// The bucket, if it still has `(epoch, version)`; `Err(Stale)` with its current values
    /// otherwise.
    fn unchanged_bucket(
        &self,
        bucket: u32,
        epoch: u64,
        version: u64,
    ) -> Result<Result<&Bucket, Outcome>, Refusal> {
        let b = self
            .buckets
            .get(bucket as usize)
            .ok_or(Refusal::NoSuchBucket(bucket))?;
        if (b.epoch, b.version) != (epoch, version) {
            return Ok(Err(Outcome::Stale {
                bucket,
                epoch: b.epoch,
                version: b.version,
            }));
        }
        Ok(Ok(b))
    }

    /// Whether `node` is an active member (it may receive a copy).
    fn check_active(&self, node: &NodeId) -> Result<(), Refusal> {
        match self.nodes.get(node) {
            Some(m) if m.state == NodeState::Active => Ok(()),
            Some(_) => Err(Refusal::NotEligible(*node)),
            None => Err(Refusal::UnknownNode(*node)),
        }
    }

    /// Whether `node` may be given buckets (`leaving` is about to go and may not).
    fn check_eligible(&self, node: &NodeId, leaving: Option<&NodeId>) -> Result<(), Refusal> {
        match self.nodes.get(node) {
            Some(m)
                if Some(node) != leaving
                    && !matches!(m.state, NodeState::Draining | NodeState::Down) =>
            {
                Ok(())
            }
            Some(_) => Err(Refusal::NotEligible(*node)),
            None => Err(Refusal::UnknownNode(*node)),
        }
    }

    /// The bucket, if the number is in range.
    pub fn bucket(&self, bucket: u32) -> Option<&Bucket> {
        self.buckets.get(bucket as usize)
    }

    /// How many buckets each member is primary for (members owning none included).
    pub fn owned_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|id| (*id, 0)).collect();
        for b in &self.buckets {
            if let Some(p) = b.primary {
                *counts.entry(p).or_default() += 1;
            }
        }
        counts
    }

    /// `node`'s replica roles: buckets it is a replica of, of those the ones it is in sync
    /// for, and the replicas of its own buckets that are not in sync.
    pub fn replica_counts(&self, node: NodeId) -> (u32, u32, u32) {
        let (mut of, mut in_sync, mut building) = (0, 0, 0);
        for b in &self.buckets {
            if b.replicas.contains(&node) {
                of += 1;
                in_sync += u32::from(b.in_sync.contains(&node));
            }
            if b.primary == Some(node) {
                building += b.building() as u32;
            }
        }
        (of, in_sync, building)
    }

    /// The member whose peer address is `peer`, if any.
    pub fn node_at_peer(&self, peer: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, m)| m.addrs.peer == peer)
            .map(|(id, _)| *id)
    }
}

/// States for unit tests elsewhere, built through [`ClusterState::apply`] as every node
/// builds them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The cluster id of every fixture state.
    pub(crate) const CLUSTER: ClusterId = ClusterId([3; 16]);

    /// Addresses of test node `n`: peer `p{n}`, native `n{n}`, no memcached port, durable.
    pub(crate) fn addrs(n: u8) -> NodeAddrs {
        NodeAddrs {
            peer: format!("p{n}"),
            native: format!("n{n}"),
            memcache: None,
            durable: true,
        }
    }

    /// A cluster of `buckets` buckets created at index 1 by `creator` (addresses
    /// `addrs(creator.0[0])`), which owns every bucket when `assign_all`.
    pub(crate) fn created_by(creator: NodeId, buckets: u32, assign_all: bool) -> ClusterState {
        let mut s = ClusterState::default();
        let out = s.apply(
            1,
            &Command::Create {
                cluster_id: CLUSTER,
                settings: Settings {
                    buckets,
                    ..Settings::default()
                },
                node: creator,
                addrs: addrs(creator.0[0]),
                assign_all,
            },
        );
        assert_eq!(out, Outcome::Done);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn addrs(n: u8) -> NodeAddrs {
        NodeAddrs {
            peer: format!("127.0.0.1:{}", 7000 + u16::from(n)),
            native: format!("127.0.0.1:{}", 8000 + u16::from(n)),
            memcache: None,
            durable: true,
        }
    }

    fn created(buckets: u32, assign_all: bool) -> ClusterState {
        let mut s = ClusterState::default();
        let out = s.apply(
            1,
            &Command::Create {
                cluster_id: ClusterId([9; 16]),
                settings: Settings {
                    buckets,
                    ..Settings::default()
                },
                node: id(1),
                addrs: addrs(1),
                assign_all,
            },
        );
        assert_eq!(out, Outcome::Done);
        s
    }

    #[test]
    fn nothing_but_create_applies_before_creation() {
        let mut s = ClusterState::default();
        let out = s.apply(
            1,
            &Command::AddNode {
                node: id(2),
                addrs: addrs(2),
            },
        );
        assert_eq!(out, Outcome::Refused(Refusal::NotCreated));
        assert_eq!(s, ClusterState::default());
    }

    #[test]
    fn create_assigns_everything_to_a_lone_creator_at_its_index() {
        let s = created(8, true);
        assert!(s
            .buckets
            .iter()
            .all(|b| b.primary == Some(id(1)) && b.epoch == 1 && b.version == 1));
        assert_eq!(s.table_version, 1);
        let mut again = s.clone();
        let out = again.apply(
            2,
            &Command::Create {
                cluster_id: ClusterId([7; 16]),
                settings: Settings::default(),
                node: id(2),
                addrs: addrs(2),
                assign_all: true,
            },
        );
        assert_eq!(out, Outcome::Refused(Refusal::AlreadyCreated));
        assert_eq!(again, s);
    }

    #[test]
    fn create_refuses_a_bucket_count_that_is_not_a_power_of_two() {
        for buckets in [0, 3, 1000, MAX_BUCKETS * 2] {
            let mut s = ClusterState::default();
            let out = s.apply(
                1,
                &Command::Create {
                    cluster_id: ClusterId([9; 16]),
                    settings: Settings {
                        buckets,
                        ..Settings::default()
                    },
                    node: id(1),
                    addrs: addrs(1),
                    assign_all: true,
                },
            );
            assert_eq!(out, Outcome::Refused(Refusal::BadSettings), "{buckets}");
        }
    }

    #[test]
    fn a_node_is_added_once_and_updated_in_place() {
        let mut s = created(4, true);
        let add = |n, a| Command::AddNode { node: n, addrs: a };
        assert_eq!(s.apply(2, &add(id(2), addrs(2))), Outcome::Done);
        assert_eq!(s.apply(3, &add(id(2), addrs(2))), Outcome::Unchanged);
        let mut moved = addrs(2);
        moved.native = "127.0.0.1:9999".into();
        assert_eq!(s.apply(4, &add(id(2), moved.clone())), Outcome::Done);
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes[&id(2)].addrs, moved);
        assert_eq!(s.nodes[&id(2)].state, NodeState::Joining);
        assert_eq!(s.table_version, 4);
        // Another id on a member's peer address is refused while that member exists.
        assert_eq!(
            s.apply(5, &add(id(3), addrs(2))),
            Outcome::Refused(Refusal::AddressInUse(id(2)))
        );
    }

    #[test]
    fn a_removed_node_gives_its_buckets_to_the_heir_and_never_comes_back() {
        let mut s = created(4, true);
        s.apply(
            2,
            &Command::AddNode {
                node: id(2),
                addrs: addrs(2),
            },
        );
        let out = s.apply(
            3,
            &Command::RemoveNode {
                node: id(1),
                heir: Some(id(2)),
            },
        );
        assert_eq!(out, Outcome::Done);
        assert!(s
            .buckets
            .iter()
            .all(|b| b.primary == Some(id(2)) && b.epoch == 3));
        assert_eq!(
            s.apply(
                4,
                &Command::AddNode {
                    node: id(1),
                    addrs: addrs(1)
                }
            ),
            Outcome::Refused(Refusal::RemovedNode(id(1)))
        );
        // The removed node's peer address is free for a new id (a wiped directory).
        assert_eq!(
            s.apply(
                5,
                &Command::AddNode {
                    node: id(3),
                    addrs: addrs(1)
                }
            ),
            Outcome::Done
        );
    }

    #[test]
    fn assignments_are_compare_and_set_and_all_or_nothing() {
        let mut s = created(4, true);
        s.apply(
            2,
            &Command::AddNode {
                node: id(2),
                addrs: addrs(2),
            },
        );
        let before = s.clone();
        let stale = Command::Assign(vec![
            Assignment {
                bucket: 0,
                epoch: 1,
                version: 1,
                primary: id(2),
            },
            Assignment {
                bucket: 1,
                epoch: 0,
                version: 1,
                primary: id(2),
            },
        ]);
        assert_eq!(
            s.apply(3, &stale),
            Outcome::Stale {
                bucket: 1,
                epoch: 1,
                version: 1
            }
        );
        assert_eq!(s, before);
        let good = Command::Assign(vec![Assignment {
            bucket: 1,
            epoch: 1,
            version: 1,
            primary: id(2),
        }]);
        assert_eq!(s.apply(4, &good), Outcome::Done);
        assert_eq!(s.buckets[1].primary, Some(id(2)));
        assert_eq!((s.buckets[1].epoch, s.buckets[1].version), (4, 4));
        // The same command again is now stale: it cannot be applied twice.
        assert!(matches!(s.apply(5, &good), Outcome::Stale { .. }));
    }

    #[test]
    fn draining_and_unknown_nodes_get_no_buckets() {
        let mut s = created(4, true);
        s.apply(
            2,
            &Command::AddNode {
                node: id(2),
                addrs: addrs(2),
            },
        );
        s.apply(
            3,
            &Command::SetNodeState {
                node: id(2),
                state: NodeState::Draining,
            },
        );
        let to = |n| {
            Command::Assign(vec![Assignment {
                bucket: 0,
                epoch: 1,
                version: 1,
                primary: n,
            }])
        };
        assert_eq!(
            s.apply(4, &to(id(2))),
            Outcome::Refused(Refusal::NotEligible(id(2)))
        );
        assert_eq!(
            s.apply(5, &to(id(7))),
            Outcome::Refused(Refusal::UnknownNode(id(7)))
        );
        assert_eq!(
            s.apply(
                6,
                &Command::RemoveNode {
                    node: id(1),
                    heir: Some(id(1))
                }
            ),
            Outcome::Refused(Refusal::NotEligible(id(1)))
        );
    }

    /// Four buckets on node 1, node 2 active, node 3 joining, node 4 draining; last index 6.
    fn with_move_targets() -> ClusterState {
        let mut s = created(4, true);
        for n in 2..=4 {
            let out = s.apply(
                u64::from(n),
                &Command::AddNode {
                    node: id(n),
                    addrs: addrs(n),
                },
            );
            assert_eq!(out, Outcome::Done);
        }
        for (index, n, state) in [(5, 2, NodeState::Active), (6, 4, NodeState::Draining)] {
            let out = s.apply(index, &Command::SetNodeState { node: id(n), state });
            assert_eq!(out, Outcome::Done);
        }
        s
    }

    #[test]
    fn a_switchover_target_that_leaves_the_in_sync_set_gets_a_copy_instead() {
        let mut s = with_move_targets();
        let add = Command::AddReplica {
            bucket: 0,
            epoch: 1,
            version: 1,
            node: id(2),
        };
        assert_eq!(s.apply(7, &add), Outcome::Done);
        let sync = |join| {
            let (bucket, epoch, node) = (0, 1, id(2));
            if join {
                Command::JoinInSync {
                    bucket,
                    epoch,
                    node,
                }
            } else {
                Command::LeaveInSync {
                    bucket,
                    epoch,
                    node,
                }
            }
        };
        assert_eq!(s.apply(8, &sync(true)), Outcome::Done);
        let start = Command::StartMove {
            bucket: 0,
            epoch: 1,
            version: 8,
            to: id(2),
        };
        assert_eq!(s.apply(9, &start), Outcome::Done);
        let promote = Move {
            id: 9,
            to: id(2),
            promote: true,
        };
        assert_eq!(s.buckets[0].moving, Some(promote));
        // Out of sync: the move goes on as a new copy to the same node, no longer a replica.
        assert_eq!(s.apply(10, &sync(false)), Outcome::Done);
        let b = &s.buckets[0];
        let copy = Move {
            id: 10,
            to: id(2),
            promote: false,
        };
        assert_eq!(b.moving, Some(copy));
        assert!(b.replicas.is_empty() && b.in_sync.is_empty());
        assert_eq!((b.primary, b.epoch, b.version), (Some(id(1)), 1, 10));
        // The switchover the old move would propose is stale; the copy finishes.
        let finish = |move_id| Command::FinishMove { bucket: 0, move_id };
        assert!(matches!(s.apply(11, &finish(9)), Outcome::Stale { .. }));
        assert_eq!(s.apply(12, &finish(10)), Outcome::Done);
        assert_eq!(s.buckets[0].primary, Some(id(2)));
    }

    #[test]
    fn a_fence_promotes_in_sync_replicas_only_and_takes_the_node_out_of_everything() {
        let mut s = with_move_targets();
        let add = |bucket, node| Command::AddReplica {
            bucket,
            epoch: 1,
            version: 1,
            node,
        };
        assert_eq!(s.apply(7, &add(0, id(2))), Outcome::Done);
        let join = Command::JoinInSync {
            bucket: 0,
            epoch: 1,
            node: id(2),
        };
        assert_eq!(s.apply(8, &join), Outcome::Done);
        assert_eq!(s.apply(9, &add(1, id(2))), Outcome::Done);
        let fence = |node, liveness_epoch| Command::FenceNode {
            node,
            liveness_epoch,
        };
        assert_eq!(s.apply(10, &fence(id(1), 0)), Outcome::Done);
        assert_eq!(s.nodes[&id(1)].state, NodeState::Down);
        assert_eq!(s.nodes[&id(1)].liveness_epoch, 1);
        // The in-sync replica serves its copy; the one being built is no heir.
        let b0 = &s.buckets[0];
        assert_eq!(
            (b0.primary, b0.epoch, b0.promoted_from),
            (Some(id(2)), 10, Some(1))
        );
        assert!(b0.replicas.is_empty() && b0.in_sync.is_empty());
        let b1 = &s.buckets[1];
        assert_eq!((b1.primary, b1.epoch, b1.promoted_from), (None, 10, None));
        assert_eq!(b1.replicas, vec![id(2)]);
        assert!(s.buckets[2..].iter().all(|b| b.primary.is_none()));
        assert_eq!(s.table_version, 10);
        // Once only: a late fence of the same epoch changes nothing.
        assert_eq!(s.apply(11, &fence(id(1), 0)), Outcome::Unchanged);
        // Down stays down but for a revival under the new epoch; it gets nothing meanwhile.
        let active = Command::SetNodeState {
            node: id(1),
            state: NodeState::Active,
        };
        assert_eq!(
            s.apply(12, &active),
            Outcome::Refused(Refusal::NotEligible(id(1)))
        );
        let assign = Command::Assign(vec![Assignment {
            bucket: 1,
            epoch: 10,
            version: 10,
            primary: id(1),
        }]);
        assert_eq!(
            s.apply(13, &assign),
            Outcome::Refused(Refusal::NotEligible(id(1)))
        );
        let revive = |liveness_epoch| Command::Revive {
            node: id(1),
            liveness_epoch,
        };
        assert_eq!(s.apply(14, &revive(0)), Outcome::Unchanged);
        assert_eq!(s.apply(15, &revive(1)), Outcome::Done);
        assert_eq!(s.nodes[&id(1)].state, NodeState::Active);
        // Fencing a replica (and primary) with no in-sync copy: its buckets come back empty
        // and it is a replica nowhere.
        assert_eq!(s.apply(16, &fence(id(2), 0)), Outcome::Done);
        assert_eq!(s.buckets[0].primary, None);
        assert!(s.buckets[1].replicas.is_empty());
        assert_eq!(s.buckets[1].version, 16);
    }

    fn start(bucket: u32, epoch: u64, version: u64, to: NodeId) -> Command {
        Command::StartMove {
            bucket,
            epoch,
            version,
            to,
        }
    }

    #[test]
    fn a_move_starts_with_the_entry_index_as_its_id_and_bumps_only_the_version() {
        let mut s = with_move_targets();
        let table_version = s.table_version;
        assert_eq!(s.apply(7, &start(2, 1, 1, id(2))), Outcome::Done);
        let b = &s.buckets[2];
        assert_eq!(
            b.moving,
            Some(Move {
                id: 7,
                to: id(2),
                promote: false
            })
        );
        assert_eq!(
            b.primary,
            Some(id(1)),
            "the primary serves until the switchover"
        );
        assert_eq!((b.epoch, b.version), (1, 7));
        assert_eq!(s.table_version, table_version, "clients route as before");
        assert!(s
            .buckets
            .iter()
            .enumerate()
            .all(|(n, b)| n == 2 || b.moving.is_none()));
    }

    #[test]
    fn a_stale_start_changes_nothing() {
        let mut s = with_move_targets();
        let before = s.clone();
        let stale = Outcome::Stale {
            bucket: 0,
            epoch: 1,
            version: 1,
        };
        assert_eq!(s.apply(7, &start(0, 0, 1, id(2))), stale);
        assert_eq!(s.apply(8, &start(0, 1, 0, id(2))), stale);
        assert_eq!(s, before);
        assert_eq!(
            s.apply(9, &start(4, 1, 1, id(2))),
            Outcome::Refused(Refusal::NoSuchBucket(4))
        );
        assert_eq!(s, before);
    }

    #[test]
    fn a_start_is_refused_without_a_primary_to_its_primary_or_to_a_node_that_cannot_take_it() {
        let mut orphans = created(4, false);
        let before = orphans.clone();
        assert_eq!(
            orphans.apply(2, &start(0, 0, 0, id(1))),
            Outcome::Refused(Refusal::NotEligible(id(1)))
        );
        assert_eq!(orphans, before);

        let mut s = with_move_targets();
        let before = s.clone();
        for (to, refusal) in [
            (id(1), Refusal::NotEligible(id(1))),
            (id(3), Refusal::NotEligible(id(3))),
            (id(4), Refusal::NotEligible(id(4))),
            (id(9), Refusal::UnknownNode(id(9))),
        ] {
            assert_eq!(
                s.apply(7, &start(0, 1, 1, to)),
                Outcome::Refused(refusal),
                "{to:?}"
            );
            assert_eq!(s, before);
        }
    }

    #[test]
    fn a_second_start_on_a_moving_bucket_is_stale_or_refused() {
        let mut s = with_move_targets();
        assert_eq!(s.apply(7, &start(0, 1, 1, id(2))), Outcome::Done);
        let before = s.clone();
        // Made from the state before the first move: the version moved on.
        assert_eq!(
            s.apply(8, &start(0, 1, 1, id(2))),
            Outcome::Stale {
                bucket: 0,
                epoch: 1,
                version: 7
            }
        );
        // Made from the current state: one move at a time.
        assert_eq!(
            s.apply(9, &start(0, 1, 7, id(2))),
            Outcome::Refused(Refusal::NotEligible(id(2)))
        );
        assert_eq!(s, before);
    }

    #[test]
    fn finishing_a_move_makes_its_target_the_primary_at_a_new_epoch() {
        let mut s = with_move_targets();
        s.apply(7, &start(1, 1, 1, id(2)));
        let before = s.clone();
        let stale = Outcome::Stale {
            bucket: 1,
            epoch: 1,
            version: 7,
        };
        assert_eq!(
            s.apply(
                8,
                &Command::FinishMove {
                    bucket: 1,
                    move_id: 6
                }
            ),
            stale
        );
        assert_eq!(s, before);
        let finish = Command::FinishMove {
            bucket: 1,
            move_id: 7,
        };
        assert_eq!(s.apply(9, &finish), Outcome::Done);
        let b = &s.buckets[1];
        assert_eq!(b.primary, Some(id(2)));
        assert_eq!(b.moving, None);
        assert_eq!((b.epoch, b.version, s.table_version), (9, 9, 9));
        // Finished once: again is stale, and a bucket that never moved is stale too.
        let after = s.clone();
        assert_eq!(
            s.apply(10, &finish),
            Outcome::Stale {
                bucket: 1,
                epoch: 9,
                version: 9
            }
        );
        assert_eq!(
            s.apply(
                11,
                &Command::FinishMove {
                    bucket: 0,
                    move_id: 7
                }
            ),
            Outcome::Stale {
                bucket: 0,
                epoch: 1,
                version: 1
            }
        );
        assert_eq!(s, after);
    }

    #[test]
    fn a_whole_cluster_stop_cancels_every_move_so_no_switchover_commits_while_nodes_save() {
        let mut s = with_move_targets();
        s.apply(7, &start(0, 1, 1, id(2)));
        s.apply(8, &start(1, 1, 1, id(2)));
        assert_eq!(s.apply(9, &Command::StopCluster), Outcome::Done);
        assert!(s.settings.stopping && s.settings.paused);
        assert!(s.buckets.iter().all(|b| b.moving.is_none()));
        assert_eq!((s.buckets[0].version, s.buckets[1].version), (9, 9));
        assert_eq!(s.buckets[0].primary, Some(id(1)), "owners stay");
        let finish = Command::FinishMove {
            bucket: 1,
            move_id: 8,
        };
        assert!(matches!(s.apply(10, &finish), Outcome::Stale { .. }));
        assert_eq!(s.buckets[1].primary, Some(id(1)));
    }

    #[test]
    fn a_cancel_ends_the_named_move_or_any_move_and_leaves_others_alone() {
        let mut s = with_move_targets();
        s.apply(7, &start(0, 1, 1, id(2)));
        s.apply(8, &start(1, 1, 1, id(2)));
        let table_version = s.table_version;
        let cancel = |bucket, move_id| Command::CancelMove { bucket, move_id };
        let before = s.clone();
        assert_eq!(s.apply(9, &cancel(0, Some(8))), Outcome::Unchanged);
        assert_eq!(s.apply(9, &cancel(2, None)), Outcome::Unchanged);
        assert_eq!(s, before);
        assert_eq!(s.apply(10, &cancel(0, Some(7))), Outcome::Done);
        assert_eq!(s.apply(11, &cancel(1, None)), Outcome::Done);
        for (bucket, version) in [(0, 10), (1, 11)] {
            let b = &s.buckets[bucket];
            assert_eq!(b.moving, None);
            assert_eq!(b.primary, Some(id(1)));
            assert_eq!((b.epoch, b.version), (1, version));
        }
        assert_eq!(s.table_version, table_version);
        assert_eq!(s.apply(12, &cancel(0, Some(7))), Outcome::Unchanged);
        assert_eq!(
            s.apply(13, &cancel(4, None)),
            Outcome::Refused(Refusal::NoSuchBucket(4))
        );
    }

    #[test]
    fn removing_the_target_or_the_source_of_a_move_ends_it() {
        let mut s = with_move_targets();
        let out = s.apply(
            7,
            &Command::SetNodeState {
                node: id(3),
                state: NodeState::Active,
            },
        );
        assert_eq!(out, Outcome::Done);
        s.apply(8, &start(0, 1, 1, id(2)));
        s.apply(9, &start(1, 1, 1, id(3)));
        // The target goes: the primary keeps the bucket, at the same epoch.
        let out = s.apply(
            10,
            &Command::RemoveNode {
                node: id(3),
                heir: None,
            },
        );
        assert_eq!(out, Outcome::Done);
        assert_eq!(s.buckets[1].moving, None);
        assert_eq!(s.buckets[1].primary, Some(id(1)));
        assert_eq!((s.buckets[1].epoch, s.buckets[1].version), (1, 10));
        assert_eq!(
            s.buckets[0].moving,
            Some(Move {
                id: 8,
                to: id(2),
                promote: false
            })
        );
        assert_eq!(
            s.buckets[2].version, 1,
            "untouched buckets keep their version"
        );
        // The source goes: its heir gets the bucket and the move ends.
        let out = s.apply(
            11,
            &Command::RemoveNode {
                node: id(1),
                heir: Some(id(2)),
            },
        );
        assert_eq!(out, Outcome::Done);
        assert!(s.buckets.iter().all(|b| b.moving.is_none()
            && b.primary == Some(id(2))
            && (b.epoch, b.version) == (11, 11)));
    }

    #[test]
    fn a_bucket_written_before_moves_existed_still_reads() {
        let old = r#"{"primary":null,"replicas":[],"in_sync":[],"epoch":3,"version":5}"#;
        let b: Bucket = serde_json::from_str(old).unwrap();
        assert_eq!(b.moving, None);
        assert_eq!((b.epoch, b.version), (3, 5));
        let mut s = with_move_targets();
        s.apply(7, &start(0, 1, 1, id(2)));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ClusterState>(&json).unwrap(), s);
    }

    fn command() -> impl Strategy<Value = Command> {
        let node = (1u8..6).prop_map(id);
        prop_oneof![
            (node.clone(), 1u8..8).prop_map(|(n, a)| Command::AddNode {
                node: n,
                addrs: addrs(a)
            }),
            (node.clone(), 0u8..3).prop_map(|(n, s)| Command::SetNodeState {
                node: n,
                state: [NodeState::Joining, NodeState::Active, NodeState::Draining][s as usize],
            }),
            (node.clone(), proptest::option::of(node.clone()))
                .prop_map(|(n, heir)| Command::RemoveNode { node: n, heir }),
            proptest::collection::vec((0u32..9, 0u64..20, 0u64..20, node.clone()), 1..4).prop_map(
                |v| {
                    Command::Assign(
                        v.into_iter()
                            .map(|(bucket, epoch, version, primary)| Assignment {
                                bucket,
                                epoch,
                                version,
                                primary,
                            })
                            .collect(),
                    )
                }
            ),
            any::<bool>().prop_map(Command::SetPaused),
            (0u32..9, 0u64..3, 0u64..3, node.clone()).prop_map(|(bucket, epoch, version, to)| {
                Command::StartMove {
                    bucket,
                    epoch,
                    version,
                    to,
                }
            }),
            (0u32..9, 0u64..40)
                .prop_map(|(bucket, move_id)| Command::FinishMove { bucket, move_id }),
            (0u32..9, proptest::option::of(0u64..40))
                .prop_map(|(bucket, move_id)| Command::CancelMove { bucket, move_id }),
            (0u32..9, 0u64..40, 0u64..40, node.clone()).prop_map(
                |(bucket, epoch, version, node)| {
                    Command::AddReplica {
                        bucket,
                        epoch,
                        version,
                        node,
                    }
                }
            ),
            (0u32..9, node.clone())
                .prop_map(|(bucket, node)| Command::DropReplica { bucket, node }),
            (0u32..9, 0u64..40, node.clone(), any::<bool>()).prop_map(
                |(bucket, epoch, node, join)| {
                    if join {
                        Command::JoinInSync {
                            bucket,
                            epoch,
                            node,
                        }
                    } else {
                        Command::LeaveInSync {
                            bucket,
                            epoch,
                            node,
                        }
                    }
                }
            ),
            (0u32..6).prop_map(Command::SetReplicas),
            (node.clone(), 0u64..3, any::<bool>()).prop_map(|(node, liveness_epoch, fence)| {
                if fence {
                    Command::FenceNode {
                        node,
                        liveness_epoch,
                    }
                } else {
                    Command::Revive {
                        node,
                        liveness_epoch,
                    }
                }
            }),
        ]
    }

    proptest! {
        /// Whatever is applied: epochs and versions never go backwards, a bucket's epoch
        /// changes exactly when its primary does, every primary is a member, a move runs
        /// from a primary to another member, removed ids stay out, and applying the same log
        /// on a second state gives the same state.
        #[test]
        fn invariants_hold_for_any_command_sequence(cmds in proptest::collection::vec(command(), 0..40)) {
            let mut s = created(8, true);
            let mut replica = s.clone();
            for (i, cmd) in cmds.iter().enumerate() {
                let index = i as u64 + 2;
                let before = s.clone();
                let out = s.apply(index, cmd);
                prop_assert_eq!(replica.apply(index, cmd), out.clone());
                if matches!(out, Outcome::Refused(_) | Outcome::Stale { .. }) {
                    prop_assert_eq!(&s, &before);
                }
                prop_assert!(s.table_version >= before.table_version);
                for (b, (old, new)) in before.buckets.iter().zip(&s.buckets).enumerate() {
                    prop_assert!(new.epoch >= old.epoch && new.version >= old.version, "bucket {}", b);
                    prop_assert_eq!(new.primary != old.primary, new.epoch != old.epoch);
                    if let Some(p) = new.primary {
                        prop_assert!(s.nodes.contains_key(&p));
                    }
                    if let Some(m) = new.moving {
                        // A move runs from a primary to another member.
                        prop_assert!(new.primary.is_some_and(|p| p != m.to), "bucket {}", b);
                        prop_assert!(s.nodes.contains_key(&m.to));
                        prop_assert!(m.id <= new.version);
                        // A copy goes to a node that is no replica; a promotion to an
                        // in-sync one.
                        prop_assert_eq!(m.promote, new.in_sync.contains(&m.to), "bucket {}", b);
                        prop_assert_eq!(m.promote, new.replicas.contains(&m.to), "bucket {}", b);
                    }
                    // Replicas are members other than the primary, each once; the in-sync
                    // ones are among them, and none is in sync with a new primary.
                    for r in &new.replicas {
                        prop_assert!(s.nodes.contains_key(r) && Some(*r) != new.primary);
                        prop_assert_eq!(new.replicas.iter().filter(|x| *x == r).count(), 1);
                    }
                    prop_assert!(new.in_sync.iter().all(|r| new.replicas.contains(r)));
                    if new.epoch != old.epoch {
                        prop_assert!(new.in_sync.is_empty(), "bucket {}", b);
                    }
                    // A promoted copy was in sync with the primary before (never an unclean
                    // election).
                    if new.epoch != old.epoch && new.promoted_from.is_some() {
                        prop_assert_eq!(new.promoted_from, Some(old.epoch));
                        prop_assert!(new.primary.is_some_and(|p| old.in_sync.contains(&p)), "bucket {}", b);
                    }
                    // A fenced member owns, copies and receives nothing.
                    let down = |n: &NodeId| s.nodes.get(n).is_some_and(|m| m.state == NodeState::Down);
                    prop_assert!(!new.primary.is_some_and(|p| down(&p)), "bucket {}", b);
                    prop_assert!(!new.replicas.iter().any(down), "bucket {}", b);
                    prop_assert!(!new.moving.is_some_and(|m| down(&m.to)), "bucket {}", b);
                    prop_assert!(s.settings.replicas <= MAX_REPLICAS);
                }
                for r in &s.removed {
                    prop_assert!(!s.nodes.contains_key(r));
                }
                // Liveness epochs only go up; a fence bumps exactly one.
                for (id, m) in &s.nodes {
                    if let Some(old) = before.nodes.get(id) {
                        prop_assert!(m.liveness_epoch >= old.liveness_epoch);
                    }
                }
                if let (Command::FenceNode { node, .. }, Outcome::Done) = (cmd, &out) {
                    prop_assert_eq!(s.nodes[node].liveness_epoch, before.nodes[node].liveness_epoch + 1);
                    prop_assert_eq!(s.nodes[node].state, NodeState::Down);
                }
            }
            prop_assert_eq!(s, replica);
        }
    }
}
