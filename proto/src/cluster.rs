//! Client-visible cluster wire types: the `NOT_MY_BUCKET` redirect, the bucket table
//! (`TABLE_GET`), a node's status (`NODE_STATUS`, with the bucket moves it runs), the
//! cluster admin requests (`CLUSTER_ADMIN`) and the table-changed notice. No I/O.
//!
//! Every decoder here checks each length against the bytes present before it uses it, and
//! allocates only after the bytes for what it allocates are known to be there. Errors are
//! [`DecodeErrorKind`]s: `Truncated` (a field runs past the body), `TrailingBytes`, and
//! `BadField` (a count, index, state or string out of range).
//!
//! ```text
//!  NOT_MY_BUCKET   bucket u32, epoch u64, owner id [16] (zero = none), owner addr short
//!  TABLE_GET       version u64, buckets u32, nodes u16,
//!                  nodes x (id [16], state u8, native short, memcache short),
//!                  buckets x (primary u16 (index into nodes, 0xFFFF = none), epoch u64)
//!  NODE_STATUS     node id [16], cluster id [16], role u8, term u64, last applied u64,
//!                  leader id [16], table version u64, buckets owned u32, memory used u64,
//!                  memory limit u64, items u64, wall clock us u64, version short,
//!                  moves u16, moves x (bucket u32, to [16], phase u8, bytes u64, items u64,
//!                  elapsed ms u64)   (an older node ends after `version`: no moves),
//!                  replicas setting u32, replica of u32, in sync of u32, building u32,
//!                  lease left ms u64 (0: none; each group absent from an older node)
//!  CLUSTER_ADMIN   kind u8: 1 MOVE bucket u32, to [16] | 2 CANCEL_MOVE bucket u32
//!                  | 3 DRAIN node [16] | 4 PAUSE paused u8 (0/1)
//!  NOTICE TABLE_CHANGED   version u64
//! ```

use crate::error::DecodeErrorKind;
use crate::field::{put_short, Reader};
use crate::opcode::Opcode;
use crate::status::Status;
use crate::writer::FrameWriter;

/// A 128-bit node or cluster id as it travels; all zeros means "none".
pub type WireId = [u8; 16];

/// The `primary` of a bucket without one in a [`TableView`].
pub const NO_PRIMARY: u16 = u16::MAX;
/// The most buckets a table may declare (the cluster's own ceiling).
pub const MAX_TABLE_BUCKETS: u32 = 1 << 16;
/// The most nodes a table may list (indexes are `u16`, and [`NO_PRIMARY`] is reserved).
pub const MAX_TABLE_NODES: usize = NO_PRIMARY as usize - 1;

/// Bytes of one node entry in a table without its two strings.
const NODE_FIXED: usize = 16 + 1 + 2 + 2;
/// Bytes of one bucket entry in a table.
const BUCKET_LEN: usize = 2 + 8;
/// Bytes of one [`MoveProgress`] entry in a node status.
const MOVE_LEN: usize = 4 + 16 + 1 + 8 + 8 + 8;
/// The most moves a node status carries (the count is a `u16`).
pub const MAX_STATUS_MOVES: usize = u16::MAX as usize;

fn id_or_none(id: WireId) -> Option<WireId> {
    (id != [0; 16]).then_some(id)
}

fn read_id(r: &mut Reader<'_>) -> Result<WireId, DecodeErrorKind> {
    let mut id = [0u8; 16];
    for b in &mut id {
        *b = r.u8()?;
    }
    Ok(id)
}

fn read_string(r: &mut Reader<'_>) -> Result<String, DecodeErrorKind> {
    let s = std::str::from_utf8(r.short()?).map_err(|_| DecodeErrorKind::BadField)?;
    Ok(s.to_owned())
}

/// A member's place in the cluster's life cycle, as the table carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Added, catching up; owns nothing yet. (0)
    Joining,
    /// A full member. (1)
    Active,
    /// Leaving: gets no new buckets. (2)
    Draining,
    /// Fenced: its lease ran out or it restarted without its copies; owns and copies
    /// nothing until it renews its lease again. (3)
    Down,
}

impl NodeState {
    /// The state with this wire value.
    pub fn from_u8(n: u8) -> Option<NodeState> {
        match n {
            0 => Some(NodeState::Joining),
            1 => Some(NodeState::Active),
            2 => Some(NodeState::Draining),
            3 => Some(NodeState::Down),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name used in status output (`joining`, `active`, `draining`, `down`).
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// A node's role in Raft, as NODE_STATUS carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RaftRole {
    /// Not in a Raft group (yet). (0)
    #[default]
    None,
    /// Receives the log, does not vote. (1)
    Learner,
    /// Votes, follows the leader. (2)
    Follower,
    /// Asking for votes. (3)
    Candidate,
    /// The leader. (4)
    Leader,
    /// Raft stopped. (5)
    Shutdown,
}

impl RaftRole {
    /// The role with this wire value.
    pub fn from_u8(n: u8) -> Option<RaftRole> {
        match n {
            0 => Some(RaftRole::None),
            1 => Some(RaftRole::Learner),
            2 => Some(RaftRole::Follower),
            3 => Some(RaftRole::Candidate),
            4 => Some(RaftRole::Leader),
            5 => Some(RaftRole::Shutdown),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name used in status output.
    pub fn name(self) -> &'static str {
        match self {
            RaftRole::None => "none",
            RaftRole::Learner => "learner",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::Leader => "leader",
            RaftRole::Shutdown => "shutdown",
        }
    }
}

/// The body of a `NOT_MY_BUCKET` reply (and of a per-key redirect entry in an MGET reply):
/// where the key's bucket is served, by the answering node's applied table. The request was
/// not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotMyBucket<'a> {
    /// The key's bucket.
    pub bucket: u32,
    /// The bucket's epoch in that table (0: never assigned).
    pub epoch: u64,
    /// The owner's node id; all zeros when the bucket has no owner.
    pub owner: WireId,
    /// The owner's native address (`host:port`); empty when there is no owner.
    pub addr: &'a [u8],
}

impl<'a> NotMyBucket<'a> {
    /// The owner's id, if the bucket has one.
    pub fn owner_id(&self) -> Option<WireId> {
        id_or_none(self.owner)
    }

    /// The owner's native address, if the bucket has an owner and the address is UTF-8.
    pub fn owner_addr(&self) -> Option<&'a str> {
        std::str::from_utf8(self.addr)
            .ok()
            .filter(|a| !a.is_empty())
    }

    /// Appends the body fields to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.bucket.to_be_bytes());
        dst.extend_from_slice(&self.epoch.to_be_bytes());
        dst.extend_from_slice(&self.owner);
        put_short(dst, self.addr);
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// `Truncated` or `TrailingBytes`.
    pub fn decode(body: &'a [u8]) -> Result<NotMyBucket<'a>, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let out = Self::read(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    pub(crate) fn read(r: &mut Reader<'a>) -> Result<NotMyBucket<'a>, DecodeErrorKind> {
        Ok(NotMyBucket {
            bucket: r.u32()?,
            epoch: r.u64()?,
            owner: read_id(r)?,
            addr: r.short()?,
        })
    }
}

/// One member in a [`TableView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNode {
    /// Its node id.
    pub id: WireId,
    /// Its life-cycle state.
    pub state: NodeState,
    /// Its native protocol address.
    pub native: String,
    /// Its memcached address; empty when that port is off.
    pub memcache: String,
}

/// One bucket in a [`TableView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableBucket {
    /// Index of its primary in [`TableView::nodes`], or [`NO_PRIMARY`].
    pub primary: u16,
    /// Its epoch: the log index of the entry that last changed its primary.
    pub epoch: u64,
}

/// The whole bucket table as a node's applied state has it (the `TABLE_GET` reply).
///
/// Nodes are listed in node-id order, so every member encodes the same table identically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableView {
    /// The table version: log index of the last change to the table or to a member.
    pub version: u64,
    /// The members.
    pub nodes: Vec<TableNode>,
    /// One entry per bucket (empty while the node belongs to no cluster).
    pub buckets: Vec<TableBucket>,
}

impl TableView {
    /// The primary of `bucket`, if it has one.
    pub fn primary_of(&self, bucket: u32) -> Option<&TableNode> {
        let b = self.buckets.get(bucket as usize)?;
        self.nodes.get(usize::from(b.primary))
    }

    /// How many buckets each node (by index in [`TableView::nodes`]) is primary of.
    pub fn owned_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        for b in &self.buckets {
            if let Some(c) = counts.get_mut(usize::from(b.primary)) {
                *c += 1;
            }
        }
        counts
    }

    /// Appends the body to `dst`. Nodes beyond [`MAX_TABLE_NODES`] and buckets beyond
    /// [`MAX_TABLE_BUCKETS`] are not encoded (no cluster has them).
    pub fn encode(&self, dst: &mut Vec<u8>) {
        let nodes = &self.nodes[..self.nodes.len().min(MAX_TABLE_NODES)];
        let buckets = &self.buckets[..self.buckets.len().min(MAX_TABLE_BUCKETS as usize)];
        dst.reserve(12 + nodes.len() * 64 + buckets.len() * BUCKET_LEN);
        dst.extend_from_slice(&self.version.to_be_bytes());
        dst.extend_from_slice(&(buckets.len() as u32).to_be_bytes());
        dst.extend_from_slice(&(nodes.len() as u16).to_be_bytes());
        for n in nodes {
            dst.extend_from_slice(&n.id);
            dst.push(n.state.as_u8());
            put_short(dst, n.native.as_bytes());
            put_short(dst, n.memcache.as_bytes());
        }
        for b in buckets {
            let primary = if usize::from(b.primary) < nodes.len() {
                b.primary
            } else {
                NO_PRIMARY
            };
            dst.extend_from_slice(&primary.to_be_bytes());
            dst.extend_from_slice(&b.epoch.to_be_bytes());
        }
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// `Truncated`, `TrailingBytes`, or `BadField` for a bucket count that is neither 0 nor
    /// a power of two up to [`MAX_TABLE_BUCKETS`], a node count over [`MAX_TABLE_NODES`], an
    /// unknown node state, an address that is not UTF-8, or a primary index past the nodes.
    pub fn decode(body: &[u8]) -> Result<TableView, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let version = r.u64()?;
        let bucket_count = r.u32()?;
        if bucket_count != 0
            && (!bucket_count.is_power_of_two() || bucket_count > MAX_TABLE_BUCKETS)
        {
            return Err(DecodeErrorKind::BadField);
        }
        let node_count = usize::from(r.u16()?);
        if node_count > MAX_TABLE_NODES {
            return Err(DecodeErrorKind::BadField);
        }
        // Allocate only for entries whose fixed bytes are present.
        if r.rest().len() < node_count * NODE_FIXED {
            return Err(DecodeErrorKind::Truncated);
        }
        let mut nodes = Vec::with_capacity(node_count);
        for _ in 0..node_count {
            let id = read_id(&mut r)?;
            let state = NodeState::from_u8(r.u8()?).ok_or(DecodeErrorKind::BadField)?;
            nodes.push(TableNode {
                id,
                state,
                native: read_string(&mut r)?,
                memcache: read_string(&mut r)?,
            });
        }
        let bucket_count = bucket_count as usize;
        if r.rest().len() < bucket_count * BUCKET_LEN {
            return Err(DecodeErrorKind::Truncated);
        }
        let mut buckets = Vec::with_capacity(bucket_count);
        for _ in 0..bucket_count {
            let primary = r.u16()?;
            if primary != NO_PRIMARY && usize::from(primary) >= node_count {
                return Err(DecodeErrorKind::BadField);
            }
            buckets.push(TableBucket {
                primary,
                epoch: r.u64()?,
            });
        }
        r.finish()?;
        Ok(TableView {
            version,
            nodes,
            buckets,
        })
    }
}

/// What one node says about itself (the `NODE_STATUS` reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its node id.
    pub node_id: WireId,
    /// Its cluster's id, once it belongs to one.
    pub cluster_id: Option<WireId>,
    /// Its Raft role.
    pub role: RaftRole,
    /// Its current Raft term.
    pub term: u64,
    /// The index of the last log entry it applied.
    pub last_applied: u64,
    /// The leader it knows of.
    pub leader: Option<WireId>,
    /// The version of its applied table.
    pub table_version: u64,
    /// How many buckets it serves.
    pub buckets_owned: u32,
    /// Memory its items use, in bytes.
    pub memory_used: u64,
    /// Its memory limit, in bytes.
    pub memory_limit: u64,
    /// Items it holds.
    pub items: u64,
    /// Its wall clock when it answered, in microseconds since the unix epoch.
    pub wall_clock_us: u64,
    /// Its software and version (`shoald 0.1.0`).
    pub version: String,
    /// The bucket moves it runs now, by bucket (empty from a node that predates them).
    pub moves: Vec<MoveProgress>,
    /// Its replica roles (zeros from a node that predates replication).
    pub replication: ReplicationStatus,
    /// How much of its lease is left, in milliseconds: 0 when it holds none (it serves
    /// nothing), `u64::MAX` when it needs none; `None` from a node that predates leases.
    pub lease_left_ms: Option<u64>,
}

/// A node's replica roles, by its applied table (part of [`NodeStatus`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The cluster's replica setting (copies per bucket besides its primary).
    pub setting: u32,
    /// Buckets it holds a replica copy of.
    pub replica_of: u32,
    /// Of those, the ones it is in sync for (it may be promoted for them).
    pub in_sync_of: u32,
    /// Replicas of the buckets it is primary of that are not in sync yet (being built or
    /// catching up).
    pub building: u32,
}

impl NodeStatus {
    /// Appends the body to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.node_id);
        dst.extend_from_slice(&self.cluster_id.unwrap_or_default());
        dst.push(self.role.as_u8());
        dst.extend_from_slice(&self.term.to_be_bytes());
        dst.extend_from_slice(&self.last_applied.to_be_bytes());
        dst.extend_from_slice(&self.leader.unwrap_or_default());
        dst.extend_from_slice(&self.table_version.to_be_bytes());
        dst.extend_from_slice(&self.buckets_owned.to_be_bytes());
        dst.extend_from_slice(&self.memory_used.to_be_bytes());
        dst.extend_from_slice(&self.memory_limit.to_be_bytes());
        dst.extend_from_slice(&self.items.to_be_bytes());
        dst.extend_from_slice(&self.wall_clock_us.to_be_bytes());
        put_short(dst, self.version.as_bytes());
        let moves = &self.moves[..self.moves.len().min(MAX_STATUS_MOVES)];
        dst.reserve(2 + moves.len() * MOVE_LEN);
        dst.extend_from_slice(&(moves.len() as u16).to_be_bytes());
        for m in moves {
            m.encode(dst);
        }
        let r = &self.replication;
        for n in [r.setting, r.replica_of, r.in_sync_of, r.building] {
            dst.extend_from_slice(&n.to_be_bytes());
        }
        if let Some(left) = self.lease_left_ms {
            dst.extend_from_slice(&left.to_be_bytes());
        }
    }

    /// Decodes a whole body. A body that ends right after `version` (a node that predates
    /// moves in the status) has no moves; one that ends after the moves has no replication
    /// figures (zeros); one that ends after those has no lease.
    ///
    /// # Errors
    /// `Truncated`, `TrailingBytes`, or `BadField` for an unknown role or move phase or a
    /// version string that is not UTF-8.
    pub fn decode(body: &[u8]) -> Result<NodeStatus, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let mut out = NodeStatus {
            node_id: read_id(&mut r)?,
            cluster_id: id_or_none(read_id(&mut r)?),
            role: RaftRole::from_u8(r.u8()?).ok_or(DecodeErrorKind::BadField)?,
            term: r.u64()?,
            last_applied: r.u64()?,
            leader: id_or_none(read_id(&mut r)?),
            table_version: r.u64()?,
            buckets_owned: r.u32()?,
            memory_used: r.u64()?,
            memory_limit: r.u64()?,
            items: r.u64()?,
            wall_clock_us: r.u64()?,
            version: read_string(&mut r)?,
            moves: Vec::new(),
            replication: ReplicationStatus::default(),
            lease_left_ms: None,
        };
        if !r.rest().is_empty() {
            let count = usize::from(r.u16()?);
            // Every entry must be present before anything is allocated for them.
            if r.rest().len() < count * MOVE_LEN {
                return Err(DecodeErrorKind::Truncated);
            }
            out.moves.reserve_exact(count);
            for _ in 0..count {
                out.moves.push(MoveProgress::read(&mut r)?);
            }
        }
        if !r.rest().is_empty() {
            out.replication = ReplicationStatus {
                setting: r.u32()?,
                replica_of: r.u32()?,
                in_sync_of: r.u32()?,
                building: r.u32()?,
            };
        }
        if !r.rest().is_empty() {
            out.lease_left_ms = Some(r.u64()?);
        }
        r.finish()?;
        Ok(out)
    }
}

/// Where a bucket move stands (a [`MoveProgress`]'s phase; the wire value in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MovePhase {
    /// Copying the bucket's items as they were when the move started. (1)
    Snapshot,
    /// Sending the writes made since the copy started. (2)
    Tail,
    /// Caught up: every reply in the bucket waits until the target holds its write. (5)
    InSync,
    /// Writes to the bucket are held for the switchover. (3)
    Parked,
    /// The switchover is being committed. (4)
    Finishing,
}

impl MovePhase {
    /// The phase with this wire value.
    pub fn from_u8(n: u8) -> Option<MovePhase> {
        match n {
            1 => Some(MovePhase::Snapshot),
            2 => Some(MovePhase::Tail),
            3 => Some(MovePhase::Parked),
            4 => Some(MovePhase::Finishing),
            5 => Some(MovePhase::InSync),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            MovePhase::Snapshot => 1,
            MovePhase::Tail => 2,
            MovePhase::Parked => 3,
            MovePhase::Finishing => 4,
            MovePhase::InSync => 5,
        }
    }

    /// The name used in status output (`snapshot`, `tail`, `in-sync`, `parked`,
    /// `finishing`).
    pub fn name(self) -> &'static str {
        match self {
            MovePhase::Snapshot => "snapshot",
            MovePhase::Tail => "tail",
            MovePhase::InSync => "in-sync",
            MovePhase::Parked => "parked",
            MovePhase::Finishing => "finishing",
        }
    }
}

/// One bucket move a node runs, as its NODE_STATUS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveProgress {
    /// The bucket.
    pub bucket: u32,
    /// The node receiving it.
    pub to: WireId,
    /// Where the move stands.
    pub phase: MovePhase,
    /// Bytes copied so far.
    pub bytes: u64,
    /// Items copied so far.
    pub items: u64,
    /// Milliseconds since the move started.
    pub elapsed_ms: u64,
}

impl MoveProgress {
    /// Appends the entry ([`MOVE_LEN`] bytes).
    fn encode(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.bucket.to_be_bytes());
        dst.extend_from_slice(&self.to);
        dst.push(self.phase.as_u8());
        dst.extend_from_slice(&self.bytes.to_be_bytes());
        dst.extend_from_slice(&self.items.to_be_bytes());
        dst.extend_from_slice(&self.elapsed_ms.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<MoveProgress, DecodeErrorKind> {
        Ok(MoveProgress {
            bucket: r.u32()?,
            to: read_id(r)?,
            phase: MovePhase::from_u8(r.u8()?).ok_or(DecodeErrorKind::BadField)?,
            bytes: r.u64()?,
            items: r.u64()?,
            elapsed_ms: r.u64()?,
        })
    }
}

/// A CLUSTER_ADMIN request: one change to the cluster, committed through the Raft leader.
/// Node ids are never all zeros (that means "none" on the wire).
///
/// ```text
///  kind u8 = 1 MOVE         bucket u32, to [16]
///  kind u8 = 2 CANCEL_MOVE  bucket u32
///  kind u8 = 3 DRAIN        node [16]
///  kind u8 = 4 PAUSE        paused u8 (1 pause, 0 resume)
///  kind u8 = 5 STOP_CLUSTER (nothing more)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminRequest {
    /// Start moving `bucket` from its primary to node `to` (an active member).
    Move {
        /// The bucket.
        bucket: u32,
        /// The node to receive it.
        to: WireId,
    },
    /// Cancel the move of `bucket`, whichever it is.
    CancelMove {
        /// The bucket.
        bucket: u32,
    },
    /// Mark `node` draining: it gets no new buckets and hands its own away, then stops.
    Drain {
        /// The node.
        node: WireId,
    },
    /// Pause (`true`) or resume (`false`) the movement of buckets.
    Pause(bool),
    /// Stop the whole cluster: every node saves its buckets and exits, staying a member.
    StopCluster,
    /// Set the number of replicas per bucket (copies besides the primary).
    SetReplicas(u32),
}

/// CLUSTER_ADMIN request kinds.
const ADMIN_MOVE: u8 = 1;
const ADMIN_CANCEL_MOVE: u8 = 2;
const ADMIN_DRAIN: u8 = 3;
const ADMIN_PAUSE: u8 = 4;
const ADMIN_STOP_CLUSTER: u8 = 5;
const ADMIN_SET_REPLICAS: u8 = 6;

impl AdminRequest {
    /// Appends the body to `dst`.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        match *self {
            AdminRequest::Move { bucket, to } => {
                dst.push(ADMIN_MOVE);
                dst.extend_from_slice(&bucket.to_be_bytes());
                dst.extend_from_slice(&to);
            }
            AdminRequest::CancelMove { bucket } => {
                dst.push(ADMIN_CANCEL_MOVE);
                dst.extend_from_slice(&bucket.to_be_bytes());
            }
            AdminRequest::Drain { node } => {
                dst.push(ADMIN_DRAIN);
                dst.extend_from_slice(&node);
            }
            AdminRequest::Pause(paused) => {
                dst.push(ADMIN_PAUSE);
                dst.push(u8::from(paused));
            }
            AdminRequest::StopCluster => dst.push(ADMIN_STOP_CLUSTER),
            AdminRequest::SetReplicas(n) => {
                dst.push(ADMIN_SET_REPLICAS);
                dst.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// `Truncated`, `TrailingBytes`, or `BadField` for an unknown kind, an all-zeros node id
    /// or a pause flag other than 0 or 1.
    pub fn decode(body: &[u8]) -> Result<AdminRequest, DecodeErrorKind> {
        let mut r = Reader::new(body);
        let out = Self::read(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<AdminRequest, DecodeErrorKind> {
        let node = |r: &mut Reader<'_>| id_or_none(read_id(r)?).ok_or(DecodeErrorKind::BadField);
        Ok(match r.u8()? {
            ADMIN_MOVE => AdminRequest::Move {
                bucket: r.u32()?,
                to: node(r)?,
            },
            ADMIN_CANCEL_MOVE => AdminRequest::CancelMove { bucket: r.u32()? },
            ADMIN_DRAIN => AdminRequest::Drain { node: node(r)? },
            ADMIN_PAUSE => AdminRequest::Pause(r.flag()?),
            ADMIN_STOP_CLUSTER => AdminRequest::StopCluster,
            ADMIN_SET_REPLICAS => AdminRequest::SetReplicas(r.u32()?),
            _ => return Err(DecodeErrorKind::BadField),
        })
    }
}

/// Appends a NOTICE frame (request id 0, status `TABLE_CHANGED`) announcing table `version`.
pub fn encode_table_changed(dst: &mut Vec<u8>, version: u64) {
    FrameWriter::reply(dst, Opcode::Notice, Status::TableChanged, 0).u64(version);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableView {
        TableView {
            version: 42,
            nodes: vec![
                TableNode {
                    id: [1; 16],
                    state: NodeState::Active,
                    native: "127.0.0.1:7400".into(),
                    memcache: "127.0.0.1:11211".into(),
                },
                TableNode {
                    id: [2; 16],
                    state: NodeState::Draining,
                    native: "127.0.0.1:7500".into(),
                    memcache: String::new(),
                },
            ],
            buckets: vec![
                TableBucket {
                    primary: 0,
                    epoch: 1,
                },
                TableBucket {
                    primary: 1,
                    epoch: 9,
                },
                TableBucket {
                    primary: NO_PRIMARY,
                    epoch: 0,
                },
                TableBucket {
                    primary: 0,
                    epoch: 3,
                },
            ],
        }
    }

    fn status() -> NodeStatus {
        NodeStatus {
            node_id: [7; 16],
            cluster_id: Some([8; 16]),
            role: RaftRole::Leader,
            term: 3,
            last_applied: 17,
            leader: Some([7; 16]),
            table_version: 12,
            buckets_owned: 1024,
            memory_used: 1 << 20,
            memory_limit: 64 << 20,
            items: 99,
            wall_clock_us: 1_800_000_000_000_000,
            version: "shoald 0.1.0".into(),
            moves: vec![
                MoveProgress {
                    bucket: 5,
                    to: [2; 16],
                    phase: MovePhase::Snapshot,
                    bytes: 3 << 20,
                    items: 1000,
                    elapsed_ms: 1500,
                },
                MoveProgress {
                    bucket: 900,
                    to: [3; 16],
                    phase: MovePhase::Finishing,
                    bytes: 0,
                    items: 0,
                    elapsed_ms: 0,
                },
            ],
            replication: ReplicationStatus {
                setting: 1,
                replica_of: 300,
                in_sync_of: 290,
                building: 4,
            },
            lease_left_ms: Some(4200),
        }
    }

    /// Every strict prefix of a valid body is `Truncated`; one byte more is `TrailingBytes`.
    fn check_prefixes<T: std::fmt::Debug>(
        body: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, DecodeErrorKind>,
    ) {
        for n in 0..body.len() {
            assert_eq!(
                decode(&body[..n]).err(),
                Some(DecodeErrorKind::Truncated),
                "prefix of {n} bytes"
            );
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer).err(), Some(DecodeErrorKind::TrailingBytes));
    }

    #[test]
    fn not_my_bucket_round_trips_and_refuses_truncation() {
        let r = NotMyBucket {
            bucket: 513,
            epoch: 77,
            owner: [5; 16],
            addr: b"10.0.0.2:7400",
        };
        let mut body = Vec::new();
        r.encode(&mut body);
        assert_eq!(body.len(), 4 + 8 + 16 + 2 + 13);
        let back = NotMyBucket::decode(&body).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.owner_id(), Some([5; 16]));
        assert_eq!(back.owner_addr(), Some("10.0.0.2:7400"));
        check_prefixes(&body, |b| NotMyBucket::decode(b).map(|r| r.bucket));
        let none = NotMyBucket {
            bucket: 1,
            epoch: 0,
            owner: [0; 16],
            addr: b"",
        };
        body.clear();
        none.encode(&mut body);
        let back = NotMyBucket::decode(&body).unwrap();
        assert_eq!((back.owner_id(), back.owner_addr()), (None, None));
    }

    #[test]
    fn table_round_trips_and_refuses_truncation() {
        let t = table();
        let mut body = Vec::new();
        t.encode(&mut body);
        assert_eq!(TableView::decode(&body).unwrap(), t);
        check_prefixes(&body, TableView::decode);
        assert_eq!(t.owned_counts(), vec![2, 1]);
        assert_eq!(t.primary_of(1).map(|n| n.id), Some([2; 16]));
        assert_eq!(t.primary_of(2), None);
        assert_eq!(t.primary_of(99), None);
        // An empty table (a node in no cluster) is valid.
        body.clear();
        TableView::default().encode(&mut body);
        assert_eq!(TableView::decode(&body).unwrap(), TableView::default());
    }

    #[test]
    fn a_full_table_of_1024_buckets_is_about_10_kb() {
        let mut t = table();
        t.buckets = vec![
            TableBucket {
                primary: 1,
                epoch: 5
            };
            1024
        ];
        let mut body = Vec::new();
        t.encode(&mut body);
        assert!(body.len() < 10 * 1024 + 200, "{}", body.len());
        assert_eq!(TableView::decode(&body).unwrap(), t);
    }

    #[test]
    fn table_refuses_out_of_range_fields() {
        let mut body = Vec::new();
        table().encode(&mut body);
        // Bucket count 3 (bytes 8..12): not a power of two.
        let mut bad = body.clone();
        bad[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::BadField));
        // Bucket count over the ceiling.
        bad[8..12].copy_from_slice(&(MAX_TABLE_BUCKETS * 2).to_be_bytes());
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::BadField));
        // A huge bucket count that is a power of two: refused as truncated before any
        // allocation for it.
        bad[8..12].copy_from_slice(&MAX_TABLE_BUCKETS.to_be_bytes());
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::Truncated));
        // Node count over the ceiling.
        let mut bad = body.clone();
        bad[12..14].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::BadField));
        // Unknown node state (first node's state byte at 14 + 16).
        let mut bad = body.clone();
        bad[30] = 9;
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::BadField));
        // A primary index past the nodes: the first bucket entry starts 40 bytes from the end.
        let mut bad = body.clone();
        let at = bad.len() - 4 * BUCKET_LEN;
        bad[at..at + 2].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::BadField));
        // An address that is not UTF-8 (first node's native address starts at 14+16+1+2).
        let mut bad = body;
        bad[33] = 0xff;
        assert_eq!(TableView::decode(&bad), Err(DecodeErrorKind::BadField));
    }

    #[test]
    fn node_status_round_trips_and_refuses_truncation() {
        let s = status();
        let mut body = Vec::new();
        s.encode(&mut body);
        assert_eq!(NodeStatus::decode(&body).unwrap(), s);
        // Every strict prefix is truncated, except the one that ends after `version` (an
        // older node's status, without moves), the one that ends after the moves
        // (without replication figures) and the one that ends after those (no lease).
        let old_len = body.len() - 8 - 16 - 2 - 2 * MOVE_LEN;
        for n in 0..body.len() {
            let got = NodeStatus::decode(&body[..n]);
            if n == old_len {
                assert_eq!(got.map(|o| o.moves), Ok(vec![]));
            } else if n == body.len() - 8 - 16 {
                let got = got.unwrap();
                assert_eq!(
                    (got.moves, got.replication),
                    (s.moves.clone(), ReplicationStatus::default())
                );
            } else if n == body.len() - 8 {
                let got = got.unwrap();
                assert_eq!((got.replication, got.lease_left_ms), (s.replication, None));
            } else {
                assert_eq!(
                    got.err(),
                    Some(DecodeErrorKind::Truncated),
                    "prefix of {n} bytes"
                );
            }
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            NodeStatus::decode(&longer),
            Err(DecodeErrorKind::TrailingBytes)
        );
        // A move phase out of range (the first move's phase byte) is refused, not a panic.
        for bad_phase in [0u8, 6, 255] {
            let mut bad = body.clone();
            bad[old_len + 2 + 4 + 16] = bad_phase;
            assert_eq!(NodeStatus::decode(&bad), Err(DecodeErrorKind::BadField));
        }
        // A move count larger than the entries present is refused before any allocation.
        let mut bad = body.clone();
        bad[old_len..old_len + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(NodeStatus::decode(&bad), Err(DecodeErrorKind::Truncated));
        let lone = NodeStatus {
            cluster_id: None,
            leader: None,
            role: RaftRole::None,
            ..status()
        };
        body.clear();
        lone.encode(&mut body);
        assert_eq!(NodeStatus::decode(&body).unwrap(), lone);
        // Role byte (offset 32) out of range.
        body[32] = 6;
        assert_eq!(NodeStatus::decode(&body), Err(DecodeErrorKind::BadField));
    }

    #[test]
    fn node_status_carries_at_most_the_limit_of_moves() {
        let one = status().moves[0];
        let at = NodeStatus {
            moves: vec![one; MAX_STATUS_MOVES],
            ..status()
        };
        let mut body = Vec::new();
        at.encode(&mut body);
        assert_eq!(
            NodeStatus::decode(&body).unwrap().moves.len(),
            MAX_STATUS_MOVES
        );
        // Past the limit, the extra moves are not encoded (no node runs that many).
        let past = NodeStatus {
            moves: vec![one; MAX_STATUS_MOVES + 1],
            ..status()
        };
        let mut past_body = Vec::new();
        past.encode(&mut past_body);
        assert_eq!(past_body, body);
    }

    #[test]
    fn move_phases_round_trip() {
        for n in 0..=255u8 {
            match MovePhase::from_u8(n) {
                Some(p) => {
                    assert!((1..=5).contains(&n));
                    assert_eq!(p.as_u8(), n);
                }
                None => assert!(n == 0 || n > 5),
            }
        }
        assert_eq!(MovePhase::Parked.name(), "parked");
        assert_eq!(MovePhase::InSync.name(), "in-sync");
    }

    #[test]
    fn admin_requests_round_trip_and_refuse_truncation_and_extra_bytes() {
        let all = [
            AdminRequest::Move {
                bucket: 1023,
                to: [4; 16],
            },
            AdminRequest::CancelMove { bucket: u32::MAX },
            AdminRequest::Drain { node: [9; 16] },
            AdminRequest::Pause(true),
            AdminRequest::Pause(false),
            AdminRequest::StopCluster,
            AdminRequest::SetReplicas(2),
        ];
        let lens = [21, 5, 17, 2, 2, 1, 5];
        for (req, len) in all.iter().zip(lens) {
            let mut body = Vec::new();
            req.encode(&mut body);
            assert_eq!(body.len(), len, "{req:?}");
            assert_eq!(AdminRequest::decode(&body), Ok(*req));
            check_prefixes(&body, AdminRequest::decode);
        }
        // Unknown kinds, a pause flag other than 0/1, and an all-zeros node id.
        for bad in [&[0u8][..], &[7], &[255, 0, 0, 0, 0], &[4, 2]] {
            assert_eq!(
                AdminRequest::decode(bad),
                Err(DecodeErrorKind::BadField),
                "{bad:?}"
            );
        }
        let mut zero_to = vec![1, 0, 0, 0, 1];
        zero_to.extend_from_slice(&[0; 16]);
        assert_eq!(
            AdminRequest::decode(&zero_to),
            Err(DecodeErrorKind::BadField)
        );
        let mut zero_node = vec![3];
        zero_node.extend_from_slice(&[0; 16]);
        assert_eq!(
            AdminRequest::decode(&zero_node),
            Err(DecodeErrorKind::BadField)
        );
        // A large body is refused at its first extra byte, whatever follows.
        let mut huge = Vec::new();
        AdminRequest::Pause(true).encode(&mut huge);
        huge.resize(64 * 1024, 0xAB);
        assert_eq!(
            AdminRequest::decode(&huge),
            Err(DecodeErrorKind::TrailingBytes)
        );
    }

    #[test]
    fn admin_requests_travel_in_frames_and_their_replies_carry_a_message() {
        use crate::{decode_reply, decode_request, Command, Limits, ReplyBody, Request};
        let limits = Limits::default();
        let req = Request {
            id: 11,
            command: Command::ClusterAdmin {
                request: AdminRequest::Move {
                    bucket: 7,
                    to: [6; 16],
                },
            },
        };
        let mut f = Vec::new();
        req.encode(&mut f);
        let (back, used) = decode_request(&f, &limits).unwrap().unwrap();
        assert_eq!((back, used), (req, f.len()));
        assert!(!req.command.is_idempotent());
        // A body that does not decode is a BAD_REQUEST.
        let mut bad = Vec::new();
        FrameWriter::request(&mut bad, Opcode::ClusterAdmin, 12).u8(9);
        let e = decode_request(&bad, &limits).unwrap_err();
        assert_eq!(
            (e.kind.status(), e.request_id),
            (Status::BadRequest, Some(12))
        );
        // The OK reply is a message.
        let mut r = Vec::new();
        FrameWriter::reply(&mut r, Opcode::ClusterAdmin, Status::Ok, 11).short(b"moving");
        let (reply, _) = decode_reply(&r, &limits).unwrap().unwrap();
        assert_eq!(reply.body, ReplyBody::Message(b"moving"));
    }

    #[test]
    fn decoders_never_panic_on_garbage() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = NotMyBucket::decode(&bytes);
            let _ = TableView::decode(&bytes);
            let _ = NodeStatus::decode(&bytes);
            let _ = AdminRequest::decode(&bytes);
        }
    }

    #[test]
    fn wire_enums_round_trip() {
        for n in 0..=255u8 {
            if let Some(s) = NodeState::from_u8(n) {
                assert_eq!(s.as_u8(), n);
            }
            if let Some(r) = RaftRole::from_u8(n) {
                assert_eq!(r.as_u8(), n);
            }
        }
        assert_eq!(RaftRole::from_u8(4), Some(RaftRole::Leader));
        assert_eq!(NodeState::from_u8(3), Some(NodeState::Down));
        assert_eq!(NodeState::from_u8(4), None);
    }

    #[test]
    fn replies_carry_the_cluster_bodies() {
        use crate::{decode_reply, Limits, MultiGetEntry, MultiGetWriter, ReplyBody};
        let limits = Limits::default();
        // An MGET reply mixing a hit, a miss and a per-key redirect.
        let mut out = Vec::new();
        let mut w = MultiGetWriter::new(&mut out, 9);
        w.hit_header(3, 4, 2);
        w.buffer().extend_from_slice(b"hi");
        w.miss();
        let redirect = NotMyBucket {
            bucket: 7,
            epoch: 5,
            owner: [2; 16],
            addr: b"h:1",
        };
        w.not_my_bucket(&redirect);
        drop(w);
        let (reply, used) = decode_reply(&out, &limits).unwrap().unwrap();
        assert_eq!(used, out.len());
        let ReplyBody::Values(list) = reply.body else {
            panic!("{reply:?}")
        };
        let entries: Vec<_> = list.iter().collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].found().map(|f| f.value), Some(&b"hi"[..]));
        assert_eq!(entries[1], MultiGetEntry::Miss);
        assert_eq!(entries[2], MultiGetEntry::NotMyBucket(redirect));
        // An unknown entry tag is refused.
        let at = out.len() - (1 + 4 + 8 + 16 + 2 + 3);
        out[at] = 3;
        assert!(decode_reply(&out, &limits).is_err());

        // HELLO: with the bucket count, without it (an older server), and with fields a later
        // server may append (ignored).
        for (extra, want) in [
            (&[0u8, 0, 4, 0][..], Some(1024)),
            (&[][..], None),
            (&[0, 0, 4, 0, 9, 9, 9][..], Some(1024)),
            (&[1][..], None),
        ] {
            let mut f = Vec::new();
            let mut w = FrameWriter::reply(&mut f, Opcode::Hello, Status::Ok, 1);
            w.u8(1).short(b"shoald").raw(extra);
            drop(w);
            let (reply, _) = decode_reply(&f, &limits).unwrap().unwrap();
            assert_eq!(
                reply.body,
                ReplyBody::Hello {
                    version: 1,
                    server: b"shoald",
                    buckets: want
                },
                "{extra:?}"
            );
        }

        // The table-changed notice.
        let mut f = Vec::new();
        encode_table_changed(&mut f, 77);
        let (reply, _) = decode_reply(&f, &limits).unwrap().unwrap();
        assert_eq!((reply.id, reply.opcode), (0, Opcode::Notice));
        assert_eq!(reply.body, ReplyBody::TableChanged { version: 77 });

        // TABLE_GET and NODE_STATUS replies, and a damaged table refused at decode time.
        let mut body = Vec::new();
        table().encode(&mut body);
        let mut f = Vec::new();
        FrameWriter::reply(&mut f, Opcode::TableGet, Status::Ok, 3).raw(&body);
        let (reply, _) = decode_reply(&f, &limits).unwrap().unwrap();
        let ReplyBody::Table(t) = reply.body else {
            panic!("{reply:?}")
        };
        assert_eq!(t.view().unwrap(), table());
        let last = f.len() - 1;
        f.truncate(last);
        let len = (body.len() - 1) as u32;
        f[12..16].copy_from_slice(&len.to_be_bytes());
        assert!(decode_reply(&f, &limits).is_err());
        body.clear();
        status().encode(&mut body);
        let mut g = Vec::new();
        FrameWriter::reply(&mut g, Opcode::NodeStatus, Status::Ok, 4).raw(&body);
        let (reply, _) = decode_reply(&g, &limits).unwrap().unwrap();
        let ReplyBody::NodeStatus(s) = reply.body else {
            panic!("{reply:?}")
        };
        assert_eq!(s.status().unwrap(), status());
        let mut again = Vec::new();
        reply.encode(&mut again);
        assert_eq!(again, g);
    }
}
