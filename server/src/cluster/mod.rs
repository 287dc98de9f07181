//! The control plane: which nodes form the cluster and which node serves each bucket.
//!
//! ```text
//!  raft/ (openraft, its own thread) ──applied entries──► watch<Arc<ClusterState>>
//!                                                          │
//!       ClusterView (bitmap of buckets this node serves) ◄──┤  (the data path reads this)
//!       TABLE_GET / NODE_STATUS / table-changed notices ◄──┘
//! ```
//!
//! - [`state`]: the replicated state machine as plain data (members, settings, bucket table).
//! - [`planner`]: the leader's decisions (bucket spread, orphans, voters), pure.
//! - [`join`]: the JOIN request and the leader's decision on it, pure.
//! - [`identity`]: the cluster id file in the data directory.
//! - [`peer`]: the peer port: handshake, cluster secret, peer server and clients.
//! - [`forward`]: memcached commands for buckets served elsewhere, run on their owner.
//! - [`control`]: cluster admin requests (CLUSTER_ADMIN) from the data path to the control
//!   plane, and what they mean as commands.
//!
//! Nodes act on applied entries only: everything here reads the applied state through one
//! `watch` channel, fed by the Raft state machine after each apply.

pub mod control;
pub mod forward;
pub mod identity;
pub mod join;
pub mod peer;
pub mod planner;
pub mod raft;
pub mod state;

use crate::datadir::{ClusterId, NodeId};
use shoal_proto::cluster::MoveProgress;
use state::ClusterState;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

pub use shoal_proto::cluster::RaftRole;

/// This node's view of the cluster, as the data path and the client-facing requests need it:
/// which buckets it serves (readable without locks on every request), the applied state
/// behind that (for redirects, TABLE_GET and status), its Raft role, and a watch of the
/// table version (for table-changed notices).
///
/// Ownership changes only with applied cluster state ([`ClusterView::update`]); a node
/// serves a bucket exactly while the last applied table names it primary.
#[derive(Debug, Clone)]
pub struct ClusterView {
    inner: Arc<ClusterViewInner>,
}

#[derive(Debug)]
struct ClusterViewInner {
    me: NodeId,
    buckets: u32,
    /// Bit `b` set: this node is primary of bucket `b`.
    bits: Box<[AtomicU64]>,
    /// Every bit is set (a lone node): the data path skips per-key checks.
    all: AtomicBool,
    /// The applied state the bits were computed from.
    state: Mutex<Arc<ClusterState>>,
    /// What Raft last reported about this node.
    raft: Mutex<RaftStatus>,
    /// The applied table version, for connections that push table-changed notices.
    table_version: watch::Sender<u64>,
    /// Connections to owners and the runner of forwarded commands.
    forwarding: forward::Forwarding,
    /// The way to the control plane for admin requests (connected by the control plane).
    control: control::ControlHandle,
    /// The bucket moves this node runs, by bucket (reported in NODE_STATUS).
    moves: Mutex<BTreeMap<u32, MoveProgress>>,
}

/// What Raft reports about this node (from openraft's metrics), for status requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// Its role.
    pub role: RaftRole,
    /// The current term.
    pub term: u64,
    /// The index of the last applied log entry.
    pub last_applied: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The voters of the current membership.
    pub voters: Vec<NodeId>,
    /// The learners of the current membership.
    pub learners: Vec<NodeId>,
}

/// Where a client should send a request for a bucket this node does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The bucket.
    pub bucket: u32,
    /// Its epoch in the applied table (0: never assigned).
    pub epoch: u64,
    /// The primary's id and native address, if the bucket has a primary.
    pub owner: Option<(NodeId, String)>,
}

impl ClusterView {
    /// A node that serves nothing yet (its table is empty until the first applied state).
    pub fn new(me: NodeId, buckets: u32) -> ClusterView {
        let words = (buckets as usize).div_ceil(64);
        ClusterView {
            inner: Arc::new(ClusterViewInner {
                me,
                buckets,
                bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
                all: AtomicBool::new(false),
                state: Mutex::new(Arc::new(ClusterState::default())),
                raft: Mutex::new(RaftStatus::default()),
                table_version: watch::channel(0).0,
                forwarding: forward::Forwarding::default(),
                control: control::ControlHandle::default(),
                moves: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// A node that serves every bucket, with no cluster behind it (unit tests of the data
    /// path).
    pub fn everything(buckets: u32) -> ClusterView {
        let o = ClusterView::new(NodeId::default(), buckets);
        for word in o.inner.bits.iter() {
            word.store(u64::MAX, Ordering::Relaxed);
        }
        o.inner.all.store(true, Ordering::Relaxed);
        o
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.inner.me
    }

    /// Whether this node serves `bucket` now. In `fault-injection` builds run with
    /// `--fault-ignore-table`, every bucket (see `crate::fault`).
    #[inline]
    pub fn owns(&self, bucket: u32) -> bool {
        #[cfg(feature = "fault-injection")]
        if crate::fault::ignore_table() {
            return true;
        }
        let word = (bucket / 64) as usize;
        self.inner
            .bits
            .get(word)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (bucket % 64)) != 0)
    }

    /// Whether this node serves every bucket now (a lone node), so no key needs a check. In
    /// `fault-injection` builds run with `--fault-ignore-table`, always.
    #[inline]
    pub fn owns_all(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if crate::fault::ignore_table() {
            return true;
        }
        self.inner.all.load(Ordering::Acquire)
    }

    /// Forwarding of commands to the nodes that serve their buckets.
    pub fn forwarding(&self) -> &forward::Forwarding {
        &self.inner.forwarding
    }

    /// The way to the control plane for admin requests. Without a control plane (a view
    /// made by [`ClusterView::everything`]) every request answers "no control plane".
    pub fn control(&self) -> &control::ControlHandle {
        &self.inner.control
    }

    /// Records how the move of `bucket` this node runs is going; `None` when it ended (done,
    /// cancelled or failed). NODE_STATUS reports what is recorded.
    pub fn set_move_progress(&self, bucket: u32, progress: Option<MoveProgress>) {
        let mut moves = self
            .inner
            .moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match progress {
            Some(p) => moves.insert(bucket, p),
            None => moves.remove(&bucket),
        };
    }

    /// The moves this node runs, by bucket.
    pub fn move_progress(&self) -> Vec<MoveProgress> {
        self.inner
            .moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .copied()
            .collect()
    }

    /// Takes a newly applied state: serve exactly the buckets it names this node primary of.
    /// Buckets given up are dropped from service before buckets gained are served. A state
    /// with another bucket count than this node's store serves nothing (the join refuses
    /// such a node before it gets here).
    pub fn update(&self, state: Arc<ClusterState>) {
        let me = self.inner.me;
        let mut words = vec![0u64; self.inner.bits.len()];
        if state.buckets.len() == self.inner.buckets as usize {
            for (b, bucket) in state.buckets.iter().enumerate() {
                if bucket.primary == Some(me) {
                    words[b / 64] |= 1 << (b % 64);
                }
            }
        }
        let all = state.buckets.len() == self.inner.buckets as usize
            && state.buckets.iter().all(|b| b.primary == Some(me));
        if !all {
            self.inner.all.store(false, Ordering::Release);
        }
        for (cell, new) in self.inner.bits.iter().zip(&words) {
            cell.fetch_and(*new, Ordering::AcqRel);
        }
        *self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = state;
        for (cell, new) in self.inner.bits.iter().zip(&words) {
            cell.fetch_or(*new, Ordering::AcqRel);
        }
        if all {
            self.inner.all.store(true, Ordering::Release);
        }
        let version = self.state().table_version;
        self.inner.table_version.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
    }

    /// A receiver that sees every change of the applied table version (a connection waits
    /// on it to push a table-changed notice).
    pub fn table_changes(&self) -> watch::Receiver<u64> {
        self.inner.table_version.subscribe()
    }

    /// Records what Raft reports about this node.
    pub fn set_raft_status(&self, status: RaftStatus) {
        *self
            .inner
            .raft
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// What Raft last reported about this node.
    pub fn raft_status(&self) -> RaftStatus {
        self.inner
            .raft
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The applied state last given to [`ClusterView::update`].
    pub fn state(&self) -> Arc<ClusterState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cluster id, once this node belongs to a cluster.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.state().cluster_id
    }

    /// Where requests for `bucket` go, by the applied table.
    pub fn redirect(&self, bucket: u32) -> Redirect {
        let state = self.state();
        let Some(b) = state.bucket(bucket) else {
            return Redirect {
                bucket,
                epoch: 0,
                owner: None,
            };
        };
        Redirect {
            bucket,
            epoch: b.epoch,
            owner: b
                .primary
                .and_then(|p| state.nodes.get(&p).map(|m| (p, m.addrs.native.clone()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::state::{Command, NodeAddrs, Settings};
    use super::*;

    #[test]
    fn ownership_follows_the_applied_table() {
        let me = NodeId([1; 16]);
        let other = NodeId([2; 16]);
        let o = ClusterView::new(me, 128);
        assert!(!(0..128).any(|b| o.owns(b)));
        let addrs = |n: &str| NodeAddrs {
            peer: format!("p{n}"),
            native: format!("n{n}"),
            memcache: None,
            durable: true,
        };
        let mut s = ClusterState::default();
        s.apply(
            1,
            &Command::Create {
                cluster_id: ClusterId([3; 16]),
                settings: Settings {
                    buckets: 128,
                    ..Settings::default()
                },
                node: me,
                addrs: addrs("1"),
                assign_all: true,
            },
        );
        o.update(Arc::new(s.clone()));
        assert!((0..128).all(|b| o.owns(b)));
        assert!(o.owns_all());
        assert!(!o.owns(128));
        s.apply(
            2,
            &Command::AddNode {
                node: other,
                addrs: addrs("2"),
            },
        );
        let cmd = planner::spread_evenly(&s, &[me, other]).unwrap();
        s.apply(3, &cmd);
        o.update(Arc::new(s));
        assert!(o.owns(0) && !o.owns(1) && o.owns(126) && !o.owns(127));
        assert!(!o.owns_all());
        assert_eq!(
            o.redirect(1),
            Redirect {
                bucket: 1,
                epoch: 3,
                owner: Some((other, "n2".into()))
            }
        );
        assert_eq!(o.cluster_id(), Some(ClusterId([3; 16])));
        // A table of another size serves nothing.
        let mut wrong = ClusterState::default();
        wrong.apply(
            1,
            &Command::Create {
                cluster_id: ClusterId([3; 16]),
                settings: Settings {
                    buckets: 64,
                    ..Settings::default()
                },
                node: me,
                addrs: addrs("1"),
                assign_all: true,
            },
        );
        o.update(Arc::new(wrong));
        assert!(!(0..128).any(|b| o.owns(b)));
        assert!(ClusterView::everything(128).owns(127));
        assert!(ClusterView::everything(16).owns_all());
    }

    #[test]
    fn move_progress_is_kept_by_bucket_until_cleared() {
        use shoal_proto::cluster::MovePhase;
        let o = ClusterView::everything(16);
        assert!(o.move_progress().is_empty());
        let p = |bucket, bytes| MoveProgress {
            bucket,
            to: [2; 16],
            phase: MovePhase::Snapshot,
            bytes,
            items: 1,
            elapsed_ms: 10,
        };
        o.set_move_progress(9, Some(p(9, 1)));
        o.set_move_progress(3, Some(p(3, 1)));
        o.clone().set_move_progress(9, Some(p(9, 500)));
        assert_eq!(o.move_progress(), vec![p(3, 1), p(9, 500)]);
        o.set_move_progress(3, None);
        o.set_move_progress(4, None);
        assert_eq!(o.move_progress(), vec![p(9, 500)]);
    }
}
