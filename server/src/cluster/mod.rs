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
//! - [`moves`]: copying a bucket to another node while it is served, and the switchover.
//! - [`in_sync`]: replies held until an in-sync copy of their bucket has the write.
//! - [`held`]: saved buckets loaded at start, held until the applied table confirms them.
//! - [`lease`]: the node's lease (nothing is served without one) and the leader's record of
//!   renewals (when a silent node may be fenced).
//! - [`control`]: cluster admin requests (CLUSTER_ADMIN) from the data path to the control
//!   plane, and what they mean as commands.
//!
//! Nodes act on applied entries only: everything here reads the applied state through one
//! `watch` channel, fed by the Raft state machine after each apply.

pub mod control;
pub mod forward;
pub mod held;
pub mod identity;
pub mod in_sync;
pub mod join;
pub mod lease;
pub mod moves;
pub mod peer;
pub mod planner;
pub mod raft;
pub mod state;

use crate::datadir::{ClusterId, NodeId};
use shoal_proto::cluster::MoveProgress;
use state::ClusterState;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// Per bucket: keyspace calls inside the bucket right now ([`ClusterView::enter`]).
    inflight: Box<[AtomicU32]>,
    /// Bit `b` set: bucket `b` is parked (its switchover is under way): not served, its
    /// native requests wait ([`ClusterView::park`]).
    parked: Box<[AtomicU64]>,
    /// How many buckets are parked (the data path looks at `parked` only when this is not 0).
    parked_count: AtomicU32,
    /// Bumped whenever a bucket is unparked, for the connections waiting on one.
    unparked: watch::Sender<u64>,
    /// Bumped on every applied state, for the tasks that act on moves.
    applied: watch::Sender<u64>,
    /// The applied state the bits were computed from.
    state: Mutex<Arc<ClusterState>>,
    /// What Raft last reported about this node.
    raft: Mutex<RaftStatus>,
    /// The applied table version, for connections that push table-changed notices.
    table_version: watch::Sender<u64>,
    /// Connections to owners and the runner of forwarded commands.
    forwarding: forward::Forwarding,
    /// Copies of buckets received here and buckets hidden after moving away.
    moves: moves::Moves,
    /// Buckets whose requests are answered only once an in-sync copy holds them.
    in_sync: in_sync::InSync,
    /// The way to the control plane for admin requests (connected by the control plane).
    control: control::ControlHandle,
    /// The bucket moves this node runs, by bucket (reported in NODE_STATUS).
    progress: Mutex<BTreeMap<u32, MoveProgress>>,
    /// Saved buckets loaded at start and not yet confirmed by the table (parked meanwhile);
    /// locked after `state`.
    held: Mutex<held::Held>,
    /// This node's lease: no bucket is served without it.
    lease: lease::Lease,
    /// The node loaded saved buckets at start ([`ClusterView::hold_loaded`]).
    loaded: AtomicBool,
}

/// A keyspace call inside one bucket ([`ClusterView::enter`]); dropping it ends the call.
#[derive(Debug)]
pub struct BucketGuard<'a> {
    count: &'a AtomicU32,
}

impl Drop for BucketGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Release);
    }
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
                inflight: (0..buckets).map(|_| AtomicU32::new(0)).collect(),
                parked: (0..words).map(|_| AtomicU64::new(0)).collect(),
                parked_count: AtomicU32::new(0),
                unparked: watch::channel(0).0,
                applied: watch::channel(0).0,
                state: Mutex::new(Arc::new(ClusterState::default())),
                raft: Mutex::new(RaftStatus::default()),
                table_version: watch::channel(0).0,
                forwarding: forward::Forwarding::default(),
                moves: moves::Moves::default(),
                in_sync: in_sync::InSync::new(buckets),
                control: control::ControlHandle::default(),
                progress: Mutex::new(BTreeMap::new()),
                held: Mutex::new(held::Held::default()),
                lease: lease::Lease::none(),
                loaded: AtomicBool::new(false),
            }),
        }
    }

    /// A node that serves every bucket, with no cluster behind it and a lease that never
    /// ends (unit tests of the data path).
    pub fn everything(buckets: u32) -> ClusterView {
        let o = ClusterView::new(NodeId::default(), buckets);
        o.inner.lease.never_end();
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

    /// This node's lease (renewed by the control plane; checked on every request). In
    /// `fault-injection` builds run with `--fault-ignore-lease`, always valid.
    pub fn lease(&self) -> &lease::Lease {
        &self.inner.lease
    }

    /// Whether this node holds its lease now (it serves nothing otherwise).
    #[inline]
    pub fn leased(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if crate::fault::ignore_lease() {
            return true;
        }
        self.inner.lease.valid()
    }

    /// A mark of this node's lease now, for [`ClusterView::leased_since`].
    pub fn lease_mark(&self) -> u64 {
        self.inner.lease.mark()
    }

    /// Whether this node holds its lease now and held it without a break since
    /// [`ClusterView::lease_mark`] gave `mark`: a reply held meanwhile may go out as it is.
    pub fn leased_since(&self, mark: u64) -> bool {
        #[cfg(feature = "fault-injection")]
        if crate::fault::ignore_lease() {
            return true;
        }
        self.inner.lease.held_since(mark)
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
            .progress
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
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .copied()
            .collect()
    }

    /// Takes a newly applied state: serve exactly the buckets it names this node primary of
    /// (but not while parked). Buckets given up are dropped from service before buckets
    /// gained are served; a bucket gained after a move is made visible in the store first
    /// ([`moves::Moves::before_serving`]). A state with another bucket count than this
    /// node's store serves nothing (the join refuses such a node before it gets here).
    pub fn update(&self, state: Arc<ClusterState>) {
        let mut current = self.lock_state();
        let ended = {
            let held = self.held();
            self.inner
                .moves
                .before_serving(self.inner.me, (&current, &state), |b| held.contains(b))
        };
        *current = state;
        let (confirmed, refuted) = self
            .held()
            .resolve(self.inner.me, &current, self.inner.buckets);
        for &b in &confirmed {
            self.mark_parked(b, false);
        }
        if !confirmed.is_empty() {
            tracing::info!(
                buckets = confirmed.len(),
                "serving the saved buckets the table confirms"
            );
        }
        self.apply_bits(&current);
        let version = current.table_version;
        drop(current);
        self.inner.moves.drop_copies(&ended);
        if !refuted.is_empty() {
            // Freed outside the state lock (a large bucket takes a while), still held.
            tracing::info!(
                buckets = refuted.len(),
                "dropping saved buckets the table has moved past"
            );
            self.inner.moves.drop_loaded(&refuted);
            let state = self.lock_state();
            for &b in &refuted {
                self.mark_parked(b, false);
            }
            self.apply_bits(&state);
        }
        if !confirmed.is_empty() || !refuted.is_empty() {
            self.inner.unparked.send_modify(|n| *n += 1);
        }
        self.inner.table_version.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
        self.inner.applied.send_modify(|n| *n += 1);
    }

    /// Holds the buckets of the savefile loaded at start (call it before the first
    /// [`ClusterView::update`]): they are parked until the applied table confirms them
    /// (served) or has moved past them (dropped); see [`held`].
    pub fn hold_loaded(&self, loaded: &crate::persist::Loaded) {
        let held = held::Held::new(loaded, self.inner.buckets);
        if held.is_empty() {
            return;
        }
        self.inner.loaded.store(true, Ordering::SeqCst);
        let state = self.lock_state();
        for b in held.buckets() {
            self.mark_parked(b, true);
        }
        tracing::info!(
            buckets = held.buckets().count(),
            "saved buckets held until the cluster table confirms them"
        );
        *self.held() = held;
        self.apply_bits(&state);
    }

    /// Whether this node loaded saved buckets at start.
    pub fn holds_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::SeqCst)
    }

    /// Whether `bucket` holds saved items not yet confirmed by the table.
    pub fn is_held(&self, bucket: u32) -> bool {
        self.held().contains(bucket)
    }

    /// The buckets this node serves by the applied table, with their epochs, for a
    /// savefile (held buckets keep their saved epoch); `None` without a table of this
    /// node's size.
    pub fn owned_for_save(&self) -> Option<crate::persist::savefile::Owned> {
        let state = self.lock_state();
        let held = self.held();
        let cluster = state.cluster_id?;
        if state.buckets.len() != self.inner.buckets as usize {
            return None;
        }
        let buckets = state
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(b, bucket)| {
                let b = b as u32;
                match held.epoch(b) {
                    Some(saved) => Some((b, saved)),
                    None => (bucket.primary == Some(self.inner.me)).then_some((b, bucket.epoch)),
                }
            })
            .collect();
        Some(crate::persist::savefile::Owned {
            cluster: cluster.0,
            buckets,
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, held::Held> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Arc<ClusterState>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the ownership bits from `state`, parked buckets left out; called with the state
    /// lock held, so parking and table updates never interleave.
    fn apply_bits(&self, state: &ClusterState) {
        let me = self.inner.me;
        let mut words = vec![0u64; self.inner.bits.len()];
        if state.buckets.len() == self.inner.buckets as usize {
            for (b, bucket) in state.buckets.iter().enumerate() {
                if bucket.primary == Some(me) {
                    words[b / 64] |= 1 << (b % 64);
                }
            }
        }
        for (word, parked) in words.iter_mut().zip(self.inner.parked.iter()) {
            *word &= !parked.load(Ordering::SeqCst);
        }
        let all = state.buckets.len() == self.inner.buckets as usize
            && words.iter().enumerate().all(|(i, w)| {
                let valid = (self.inner.buckets as usize - i * 64).min(64);
                let mask = if valid == 64 {
                    u64::MAX
                } else {
                    (1 << valid) - 1
                };
                w & mask == mask
            });
        if !all {
            self.inner.all.store(false, Ordering::SeqCst);
        }
        for (cell, new) in self.inner.bits.iter().zip(&words) {
            cell.fetch_and(*new, Ordering::SeqCst);
        }
        for (cell, new) in self.inner.bits.iter().zip(&words) {
            cell.fetch_or(*new, Ordering::SeqCst);
        }
        if all {
            self.inner.all.store(true, Ordering::SeqCst);
        }
    }

    /// Enters `bucket` for one keyspace call: `None` when this node does not serve it (or it
    /// is parked). While the guard lives, [`ClusterView::park`] waits: a call that entered
    /// before a park finishes before the park's final copy is read, and a call that enters
    /// after it is refused (the in-flight count and the ownership bit are a Dekker pair, both
    /// sequentially consistent).
    #[inline]
    pub fn enter(&self, bucket: u32) -> Option<BucketGuard<'_>> {
        let count = self.inner.inflight.get(bucket as usize)?;
        count.fetch_add(1, Ordering::SeqCst);
        #[cfg(feature = "fault-injection")]
        if crate::fault::ignore_table() {
            return Some(BucketGuard { count });
        }
        let word = &self.inner.bits[(bucket / 64) as usize];
        if word.load(Ordering::SeqCst) & (1 << (bucket % 64)) != 0 {
            Some(BucketGuard { count })
        } else {
            count.fetch_sub(1, Ordering::Release);
            None
        }
    }

    /// Whether any bucket is parked now (one load; the data path checks keys only then).
    #[inline]
    pub fn any_parked(&self) -> bool {
        self.inner.parked_count.load(Ordering::Acquire) != 0
    }

    /// Whether `bucket` is parked now.
    pub fn is_parked(&self, bucket: u32) -> bool {
        let word = (bucket / 64) as usize;
        self.inner
            .parked
            .get(word)
            .is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (bucket % 64)) != 0)
    }

    /// A receiver that changes whenever a bucket is unparked (mark it seen before checking
    /// [`ClusterView::is_parked`], then wait on it).
    pub fn unparks(&self) -> watch::Receiver<u64> {
        self.inner.unparked.subscribe()
    }

    /// A receiver that changes on every applied state (moves start and end without a table
    /// version change).
    pub fn applied_changes(&self) -> watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// Parks `bucket`: from now on it is not served (keyspace calls are refused, native
    /// requests wait, forwarded ones are retried), and once this returns no call that
    /// entered it before is still running, so its data changes no more. Waits for the
    /// calls in flight at most `patience`; returns false (and unparks) if they did not end.
    pub async fn park(&self, bucket: u32, patience: std::time::Duration) -> bool {
        let Some(count) = self.inner.inflight.get(bucket as usize) else {
            return false;
        };
        self.set_parked(bucket, true);
        let deadline = tokio::time::Instant::now() + patience;
        while count.load(Ordering::SeqCst) != 0 {
            if tokio::time::Instant::now() >= deadline {
                self.unpark(bucket);
                return false;
            }
            tokio::task::yield_now().await;
        }
        true
    }

    /// Ends a park: `bucket` is served again if the applied table still names this node its
    /// primary, and the requests waiting on it run (or are redirected).
    pub fn unpark(&self, bucket: u32) {
        if bucket >= self.inner.buckets {
            return;
        }
        self.set_parked(bucket, false);
        self.inner.unparked.send_modify(|n| *n += 1);
    }

    /// Sets or clears `bucket`'s parked bit (in range) and serves by the bits that result,
    /// under the state lock, so parking and table updates never interleave.
    fn set_parked(&self, bucket: u32, parked: bool) {
        let state = self.lock_state();
        self.mark_parked(bucket, parked);
        self.apply_bits(&state);
    }

    /// Sets or clears `bucket`'s parked bit (in range) and its count; the caller holds the
    /// state lock and applies the bits after.
    fn mark_parked(&self, bucket: u32, parked: bool) {
        if bucket >= self.inner.buckets {
            return;
        }
        let bit = 1u64 << (bucket % 64);
        let word = &self.inner.parked[(bucket / 64) as usize];
        let before = if parked {
            word.fetch_or(bit, Ordering::SeqCst)
        } else {
            word.fetch_and(!bit, Ordering::SeqCst)
        };
        match (before & bit != 0, parked) {
            (false, true) => {
                self.inner.parked_count.fetch_add(1, Ordering::SeqCst);
            }
            (true, false) => {
                self.inner.parked_count.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// Completes when the applied table tells this node to stop: it was marked draining
    /// (`shoal-ctl drain`: it then hands its buckets off, as on SIGTERM) or the whole cluster
    /// is stopping (`shoal-ctl stop-cluster`: it saves them). Only a change counts: a node
    /// that starts draining or stopping (it is coming back) waits until that is over first.
    pub async fn told_to_stop(&self) {
        let me = self.me();
        let told = |s: &ClusterState| {
            s.settings.stopping
                || s.nodes
                    .get(&me)
                    .is_some_and(|m| m.state == state::NodeState::Draining)
        };
        let mut applied = self.applied_changes();
        let mut armed = false;
        loop {
            applied.mark_unchanged();
            let now = told(&self.state());
            if now && armed {
                return;
            }
            armed |= !now;
            if applied.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The bucket mover's state on this node.
    pub fn moves(&self) -> &moves::Moves {
        &self.inner.moves
    }

    /// The buckets whose requests wait for an in-sync copy ([`in_sync`]).
    pub fn in_sync(&self) -> &in_sync::InSync {
        &self.inner.in_sync
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
        self.lock_state().clone()
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
    use super::state::fixtures::{addrs, created_by, CLUSTER};
    use super::state::Command;
    use super::*;

    #[test]
    fn ownership_follows_the_applied_table() {
        let me = NodeId([1; 16]);
        let other = NodeId([2; 16]);
        let o = ClusterView::new(me, 128);
        assert!(!(0..128).any(|b| o.owns(b)));
        let mut s = created_by(me, 128, true);
        o.update(Arc::new(s.clone()));
        assert!((0..128).all(|b| o.owns(b)));
        assert!(o.owns_all());
        assert!(!o.owns(128));
        s.apply(
            2,
            &Command::AddNode {
                node: other,
                addrs: addrs(2),
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
        assert_eq!(o.cluster_id(), Some(CLUSTER));
        // A table of another size serves nothing.
        let wrong = created_by(me, 64, true);
        o.update(Arc::new(wrong));
        assert!(!(0..128).any(|b| o.owns(b)));
        assert!(ClusterView::everything(128).owns(127));
        assert!(ClusterView::everything(16).owns_all());
    }

    #[tokio::test]
    async fn a_parked_bucket_is_not_entered_and_park_waits_for_calls_inside() {
        let me = NodeId([1; 16]);
        let o = ClusterView::new(me, 128);
        let s = created_by(me, 128, true);
        o.update(Arc::new(s.clone()));
        assert!(o.owns_all() && !o.any_parked());
        let inside = o.enter(5).expect("served");
        // A call inside keeps the park waiting; with no patience left it gives up and
        // unparks.
        assert!(!o.park(5, std::time::Duration::from_millis(20)).await);
        assert!(o.owns(5) && !o.is_parked(5));
        drop(inside);
        let mut unparks = o.unparks();
        unparks.mark_unchanged();
        assert!(o.park(5, std::time::Duration::from_secs(1)).await);
        assert!(o.is_parked(5) && o.any_parked() && !o.owns(5) && !o.owns_all());
        assert!(o.enter(5).is_none());
        assert!(o.enter(6).is_some());
        // A new applied state does not serve a parked bucket.
        o.update(Arc::new(s.clone()));
        assert!(!o.owns(5));
        o.unpark(5);
        assert!(unparks.has_changed().unwrap());
        assert!(o.owns(5) && o.owns_all() && !o.any_parked());
        assert!(o.enter(5).is_some());
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
