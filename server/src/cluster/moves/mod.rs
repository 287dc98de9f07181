//! Moving a bucket to another node while it is served: one mechanism for rebalancing,
//! drains, hand-off at stop, and the copies replicas keep.
//!
//! ```text
//!  leader: StartMove(b, S→T) committed
//!  S (source, this bucket's primary)             T (target)
//!  start the bucket's change log
//!  MOVE open ─────────────────────────────────►  empty hidden copy of b
//!  MOVE items (snapshot, in batches) ─────────►  insert (hidden: not served, not evicted)
//!  MOVE changes (log after the snapshot) ─────►  apply in seq order
//!  ... until caught up, then park b: no call runs in b any more
//!  MOVE changes (the rest) ───────────────────►  apply: T holds everything S acknowledged
//!  propose FinishMove(b, move) ─ committed ───►  T applies it: shows b, serves it
//!  S applies it, unparks: waiting requests are redirected to T; S drops its copy
//! ```
//!
//! - [`wire`]: the MOVE request body.
//! - [`source`]: the mover on the source, one task per move this node is the source of.
//! - [`replicate`]: replication on a bucket's primary, one task per replica: the same copy,
//!   kept in sync for good instead of switched over.
//! - this module: the target's side ([`Moves::receive`]) and the rules for hidden copies
//!   ([`Moves::before_serving`]).
//!
//! Rules: a copy is hidden on the target until the applied table names the target primary,
//! and dropped as soon as the table no longer names it the target of that move (cancel,
//! restart under another move id, source gone). The source parks the bucket only for the
//! final changes and the commit of the switchover; if the outcome of the commit is not
//! known in time it asks the log again (a cancel that fails tells it the switchover won),
//! never deciding by a timer alone. The source drops its copy only once it has applied a
//! table that names another primary.

pub mod replicate;
pub mod source;
pub mod wire;

use crate::cluster::peer::server::PeerFailure;
use crate::cluster::state::ClusterState;
use crate::datadir::NodeId;
use crate::store::{Store, StoreError};
use shoal_proto::Status;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wire::{MoveRequest, Payload};

/// How long a target waits for its applied table to show a move it is asked to open (the
/// source may have applied the StartMove a moment earlier).
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// Memory a copy leaves free on the target, as a fraction of the limit (1/16): a copy is
/// refused rather than make the target evict the data it serves.
const HEADROOM_SHIFT: u32 = 4;

/// The bucket mover's state on one node (held by the [`ClusterView`](super::ClusterView)).
#[derive(Debug, Default)]
pub struct Moves {
    store: OnceLock<Store>,
    /// Copies being received or kept here: bucket → whose.
    incoming: Mutex<BTreeMap<u32, Incoming>>,
    /// Buckets hidden here by moves (being received, or moved away and dropped): shown
    /// again when this node becomes their primary.
    hidden: Mutex<BTreeSet<u32>>,
    /// Where a stopping node asks its control plane to hand its buckets off.
    hand_offs: OnceLock<mpsc::Sender<HandOffRequest>>,
}

/// Why this node receives a copy of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incoming {
    /// It is the target of this move (the id of its StartMove).
    Move(u64),
    /// It is a replica under the primary of this epoch.
    Replica(u64),
}

impl Incoming {
    /// A replica's copy under the primary of epoch `id`, or the target of move `id`.
    fn of(replica: bool, id: u64) -> Incoming {
        if replica {
            Incoming::Replica(id)
        } else {
            Incoming::Move(id)
        }
    }

    /// Whether `state` still sends this copy to `me`.
    fn wanted(self, bucket: u32, me: NodeId, state: &ClusterState) -> bool {
        state.bucket(bucket).is_some_and(|b| match self {
            Incoming::Move(id) => b
                .moving
                .is_some_and(|m| m.id == id && m.to == me && !m.promote),
            Incoming::Replica(epoch) => b.epoch == epoch && b.replicas.contains(&me),
        })
    }
}

/// Whether `state` sends `copy` of `bucket` to `me` from the primary `from`.
fn shows(state: &ClusterState, me: NodeId, from: NodeId, copy: Incoming, bucket: u32) -> bool {
    copy.wanted(bucket, me, state)
        && state
            .bucket(bucket)
            .is_some_and(|b| b.primary == Some(from))
}

/// What the hand-off at a graceful stop achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// No control plane (a node without a cluster): nothing to hand off.
    NoCluster,
    /// No other active member could take the buckets (the last node, or every node stopping
    /// at once): the node keeps them, saves them, and stays a member.
    Alone {
        /// Buckets it still holds.
        left: usize,
    },
    /// Every bucket moved to another member: the node leaves the cluster when it stops.
    Done,
    /// The time budget ran out (or the leader could not be reached) with buckets left.
    Partial {
        /// Buckets it still holds.
        left: usize,
    },
}

/// A stopping node's request to its control plane.
#[derive(Debug)]
pub struct HandOffRequest {
    /// When the hand-off must end.
    pub deadline: Instant,
    /// Where the result goes.
    pub reply: oneshot::Sender<HandOff>,
}

impl Moves {
    /// Gives the mover the node's store (set once, by the data path at startup).
    pub fn set_store(&self, store: Store) {
        let _ = self.store.set(store);
    }

    /// Lets the control plane take hand-off requests (set once, when it starts).
    pub fn serve_hand_offs(&self) -> Option<mpsc::Receiver<HandOffRequest>> {
        let (tx, rx) = mpsc::channel(1);
        self.hand_offs.set(tx).ok().map(|()| rx)
    }

    /// At a graceful stop: asks the control plane to move every bucket this node is primary
    /// of to the other members (the node serves meanwhile), until `deadline`.
    pub async fn hand_off(&self, deadline: Instant) -> HandOff {
        let Some(tx) = self.hand_offs.get() else {
            return HandOff::NoCluster;
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(HandOffRequest { deadline, reply }).await.is_err() {
            return HandOff::NoCluster;
        }
        rx.await.unwrap_or(HandOff::NoCluster)
    }

    /// The node's store, once the data path gave it.
    pub fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    /// Called with each newly applied state (after `before`) before the node serves by it:
    /// a bucket hidden here that the state names this node primary of is made visible (a
    /// finished move's copy, or a bucket given back after it moved away), and a bucket this
    /// node was primary of that the state gives to another node or to none (a fence, a
    /// failover, a move) is hidden for good: the table has moved past this copy, which must
    /// never be served again (given the bucket back by a new assignment, the node starts it
    /// empty). Buckets for which `loaded(b)` holds (a savefile's, waiting for the table to
    /// confirm them: the replay of the log passes through older tables) are left to
    /// [`super::held`]. Returns the copies to free, for [`Moves::drop_copies`] (freeing them
    /// is slow for a large copy, so the caller does it after releasing what the data path
    /// waits on).
    pub fn before_serving(
        &self,
        me: NodeId,
        (before, state): (&ClusterState, &ClusterState),
        loaded: impl Fn(u32) -> bool,
    ) -> Vec<u32> {
        let Some(store) = self.store.get() else {
            return Vec::new();
        };
        let mut hidden = self.hidden.lock().unwrap_or_else(PoisonError::into_inner);
        let mut incoming = self.incoming.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ended = Vec::new();
        hidden.retain(|&b| {
            let mine = state.bucket(b).is_some_and(|x| x.primary == Some(me));
            if mine {
                // A replica's copy becomes the bucket only through a promotion; given the
                // bucket any other way (a new assignment), this node starts it empty.
                let promoted = state.bucket(b).and_then(|x| x.promoted_from);
                match incoming.remove(&b) {
                    Some(Incoming::Replica(epoch)) if promoted == Some(epoch) => {
                        tracing::info!(bucket = b, "promoted: serving its replica copy");
                    }
                    Some(Incoming::Replica(_)) => {
                        tracing::info!(
                            bucket = b,
                            "given a bucket it was a replica of: starting it empty"
                        );
                        store.drop_bucket(b);
                    }
                    _ => {}
                }
                store.show_bucket(b);
            }
            !mine
        });
        for (b, (was, now)) in before.buckets.iter().zip(&state.buckets).enumerate() {
            let b = b as u32;
            if was.primary == Some(me) && now.primary != Some(me) && !loaded(b) && hidden.insert(b)
            {
                ended.push(b);
            }
        }
        incoming.retain(|&b, copy| {
            let wanted = copy.wanted(b, me, state);
            if !wanted {
                tracing::info!(
                    bucket = b,
                    copy = ?copy,
                    "copy no longer wanted here: dropping it"
                );
                ended.push(b);
            }
            wanted
        });
        ended
    }

    /// Frees the copies [`Moves::before_serving`] found ended or past, except one opened again
    /// meanwhile (a new move of the bucket to this node drops and refills it itself). Holds
    /// the copies' lock while freeing, so no copy is opened under a drop.
    pub fn drop_copies(&self, buckets: &[u32]) {
        let Some(store) = self.store.get() else {
            return;
        };
        if buckets.is_empty() {
            return;
        }
        let incoming = self.incoming.lock().unwrap_or_else(PoisonError::into_inner);
        for &b in buckets.iter().filter(|b| !incoming.contains_key(b)) {
            store.drop_bucket(b);
        }
    }

    /// Frees the items a savefile loaded into `buckets` whose applied table has moved past
    /// them ([`crate::cluster::held`]); the buckets stay visible, empty. A bucket with a
    /// copy coming in is left to the copy (which empties it first). Holds the copies' lock
    /// while freeing, so no copy is opened under a drop.
    pub fn drop_loaded(&self, buckets: &[u32]) {
        let Some(store) = self.store.get() else {
            return;
        };
        let incoming = self.incoming.lock().unwrap_or_else(PoisonError::into_inner);
        for &b in buckets.iter().filter(|b| !incoming.contains_key(b)) {
            let freed = store.drop_bucket(b);
            store.show_bucket(b);
            tracing::debug!(bucket = b, items = freed, "dropped a saved bucket");
        }
    }

    /// Drops this node's copy of `bucket` after it moved away (the applied table names
    /// another primary): hidden at once, freed in batches.
    pub fn drop_moved_away(&self, bucket: u32) {
        let Some(store) = self.store.get() else {
            return;
        };
        self.hidden
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bucket);
        let freed = store.drop_bucket(bucket);
        tracing::info!(
            bucket,
            items = freed,
            "dropped the copy of a bucket that moved away"
        );
    }

    /// Serves one MOVE request (the target's side) or REPLICATE request (a replica's side,
    /// `replica`: the body's id is the primary's epoch) from `from`. Returns the reply body:
    /// the bucket's sequence number here after the request.
    ///
    /// # Errors
    /// A [`PeerFailure`]: undecodable body; a move or replica the applied table does not
    /// show (after waiting [`OPEN_WAIT`] for it) or that is not open here; a primary whose
    /// epoch the table has passed; short of memory (a copy never evicts what this node
    /// serves).
    pub async fn receive(
        &self,
        view: &super::ClusterView,
        from: NodeId,
        replica: bool,
        body: &[u8],
    ) -> Result<Vec<u8>, PeerFailure> {
        let req = MoveRequest::decode(body).map_err(|e| PeerFailure::bad_request(e.to_string()))?;
        let store = self.data_path()?;
        let copy = Incoming::of(replica, req.move_id);
        let shows = |s: &ClusterState| shows(s, view.me(), from, copy, req.bucket);
        if let Payload::Open = req.payload {
            let mut applied = view.applied_changes();
            let deadline = tokio::time::Instant::now() + OPEN_WAIT;
            while !shows(&view.state()) {
                match tokio::time::timeout_at(deadline, applied.changed()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        return Err(PeerFailure::new(
                            Status::NotMyBucket,
                            format!(
                                "the table here does not send bucket {} from {from} to this node ({copy:?})",
                                req.bucket
                            ),
                        ))
                    }
                }
            }
            self.hidden
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(req.bucket);
            self.incoming
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(req.bucket, copy);
            store.drop_bucket(req.bucket);
            tracing::info!(bucket = req.bucket, ?copy, %from, "receiving a bucket");
            return Ok(0u64.to_be_bytes().to_vec());
        }
        self.apply(view, from, copy, &req, store)
    }

    /// Serves a MOVE or REPLICATE request that needs no waiting (items or changes of an
    /// open copy) at once, in the connection's order, as [`Moves::receive`] would; `None`
    /// for one that may wait (an open, which waits for the applied table to show the copy),
    /// which the caller hands to [`Moves::receive`]. Applying a replica's changes as they
    /// arrive spares a task per write.
    pub fn receive_now(
        &self,
        view: &super::ClusterView,
        from: NodeId,
        replica: bool,
        body: &[u8],
    ) -> Option<Result<Vec<u8>, PeerFailure>> {
        let req = match MoveRequest::decode(body) {
            Ok(req) => req,
            Err(e) => return Some(Err(PeerFailure::bad_request(e.to_string()))),
        };
        if let Payload::Open = req.payload {
            return None;
        }
        let copy = Incoming::of(replica, req.move_id);
        Some(
            self.data_path()
                .and_then(|store| self.apply(view, from, copy, &req, store)),
        )
    }

    /// The store, once the data path runs.
    fn data_path(&self) -> Result<&Store, PeerFailure> {
        self.store
            .get()
            .ok_or_else(|| PeerFailure::not_ready("the data path is not running yet"))
    }

    /// Applies the items or changes of `req` to the open `copy` (see [`Moves::receive`]).
    fn apply(
        &self,
        view: &super::ClusterView,
        from: NodeId,
        copy: Incoming,
        req: &MoveRequest,
        store: &Store,
    ) -> Result<Vec<u8>, PeerFailure> {
        let open = self
            .incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&req.bucket)
            == Some(&copy);
        if !open {
            return Err(PeerFailure::bad_request(format!(
                "{copy:?} of bucket {} is not open here",
                req.bucket
            )));
        }
        // A replica takes records only from the primary the applied table names: an old
        // primary (the table passed its epoch) can have no write acknowledged through here.
        if matches!(copy, Incoming::Replica(_))
            && !shows(&view.state(), view.me(), from, copy, req.bucket)
        {
            return Err(PeerFailure::new(
                Status::NotMyBucket,
                format!(
                    "bucket {}: the table here has moved past the primary of epoch {}",
                    req.bucket, req.move_id
                ),
            ));
        }
        match &req.payload {
            Payload::Open => {}
            Payload::Items(items) => {
                let bytes: usize = items.iter().map(wire::item_len).sum();
                check_room(store, bytes)?;
                for item in items {
                    store
                        .insert_item(&item.as_record())
                        .map_err(store_failure)?;
                }
            }
            Payload::Changes { through, changes } => {
                // A replica keeps up with what its primary holds; the room check is for
                // copies still being made.
                if let Incoming::Move(_) = copy {
                    let bytes: usize = changes
                        .iter()
                        .map(|c| match c {
                            crate::store::Change::Set(item) => wire::item_len(item),
                            _ => 0,
                        })
                        .sum();
                    check_room(store, bytes)?;
                }
                for change in changes {
                    store.apply(change).map_err(store_failure)?;
                }
                store.raise_bucket_seq(req.bucket, *through);
            }
        }
        Ok(store.bucket_stats(req.bucket).seq.to_be_bytes().to_vec())
    }
}

/// Runs until the node stops: in every applied state, `jobs` lists the work this node should
/// be doing as `(key, id, job)`; a task `run(job)` is started for each unless one with the
/// same key and id runs already. Tasks end on their own (each checks the table); a key whose
/// id changed gets a new task. With `abort_unwanted`, a task whose key the table no longer
/// lists, or lists with another id, is aborted (so whatever it holds, such as a gate leg
/// that replies wait on, is released even if it is stuck on a peer that does not answer).
pub(super) async fn drive_tasks<K, J, Fut>(
    view: super::ClusterView,
    jobs: impl Fn(&ClusterState, NodeId) -> Vec<(K, u64, J)>,
    run: impl Fn(J) -> Fut,
    abort_unwanted: bool,
) where
    K: Ord + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    type Running<K> = BTreeMap<K, (u64, tokio::task::AbortHandle)>;
    let mut applied = view.applied_changes();
    let running: std::sync::Arc<Mutex<Running<K>>> = Default::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        applied.mark_unchanged();
        let wanted = jobs(&view.state(), view.me());
        if abort_unwanted {
            let ids: BTreeMap<K, u64> = wanted.iter().map(|(k, id, _)| (*k, *id)).collect();
            let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
            running.retain(|key, (id, handle)| {
                let keep = ids.get(key) == Some(id);
                if !keep {
                    handle.abort();
                }
                keep
            });
        }
        for (key, id, job) in wanted {
            let mut running_now = running.lock().unwrap_or_else(PoisonError::into_inner);
            if running_now.get(&key).is_some_and(|(r, _)| *r == id) {
                continue;
            }
            let task = run(job);
            let running = running.clone();
            let handle = tasks.spawn(async move {
                task.await;
                let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
                if running.get(&key).is_some_and(|(r, _)| *r == id) {
                    running.remove(&key);
                }
            });
            running_now.insert(key, (id, handle));
        }
        while tasks.try_join_next().is_some() {}
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// Refuses `bytes` more of a copy when they would leave less than the headroom free.
fn check_room(store: &Store, bytes: usize) -> Result<(), PeerFailure> {
    let stats = store.stats();
    let limit = stats.memory_limit;
    let used = stats.bytes + stats.hidden_bytes;
    let room = limit.saturating_sub(limit >> HEADROOM_SHIFT);
    if used.saturating_add(bytes as u64) > room {
        return Err(PeerFailure::new(
            Status::OutOfMemory,
            format!("no room for the copy: {used} of {limit} bytes used"),
        ));
    }
    Ok(())
}

fn store_failure(e: StoreError) -> PeerFailure {
    match e {
        StoreError::OutOfMemory => PeerFailure::new(Status::OutOfMemory, e.to_string()),
        e => PeerFailure::bad_request(e.to_string()),
    }
}
