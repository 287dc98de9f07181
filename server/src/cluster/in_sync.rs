//! Acknowledging after the copies: while a bucket has an in-sync copy on another node, a
//! request in it is answered only once every such copy holds the bucket up to the request.
//!
//! ```text
//!  request in bucket b ──► store (seq s) ──► reply held ──► sent once acked(b) >= s
//!                                               ▲
//!  mover: changes of b up to seq n ──► copy ──► acked(b) = n   (or the gate closes)
//! ```
//!
//! A [`Gate`] leg is opened by whoever keeps a copy in sync (a move's source in its last
//! phase; the primary's replication to each replica, [`super::replication`]) and closed by
//! dropping it: replies then stop waiting for that copy (with no leg left, every held reply
//! is released at once and the owner serves without copies). The owner's data path asks
//! [`InSync::wait`] after each request it ran in a bucket; with no gate open anywhere that
//! is one atomic load, and one more (the bucket's seq every copy holds) when the copies hold
//! the request already; only a reply that must wait takes a lock, on one of 64 shards.
//!
//! What a gate promises is that a reply leaves only when the copy holds the bucket up to
//! the bucket's seq as it was after the request ran (so up to the request's own write, and
//! perhaps a few later ones). It throttles the writers of a bucket to the pace at which its
//! copy keeps up, which is how a move converges at any write rate: the writes the copy has
//! not acknowledged are bounded by the requests clients have in flight.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{watch, Notify};

/// A held reply's condition: completes once the copies hold what the request needs (or the
/// gate closed).
pub type CopiesHold = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A reply held until the in-sync copies have its request
/// ([`crate::keyspace::Keyspace::copies_hold`]): completes with whether the reply may go out
/// as it is (`false`: this node's lease ran out meanwhile, so the request is in doubt).
pub type Held = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Shards of the bucket → gate map (by bucket number), so that requests in different
/// buckets rarely meet on one lock.
const SHARDS: usize = 64;

/// One shard's gates: bucket → its gate.
type Gates = HashMap<u32, Arc<Shared>>;

/// The open gates of one node (held by the [`ClusterView`](super::ClusterView)).
#[derive(Debug)]
pub struct InSync {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// How many buckets have a gate (the data path looks at `gates` only when this is not 0).
    open: AtomicUsize,
    gates: Box<[Mutex<Gates>]>,
    /// Names the legs.
    next_leg: AtomicU64,
    /// Per bucket, the seq every copy holds as the bucket's gate last published it
    /// (`u64::MAX`: no gate), read by [`InSync::wait`] without a lock. Written under the
    /// bucket's shard lock, by the gate that is the shard's entry for the bucket only.
    held: Box<[AtomicU64]>,
}

impl Inner {
    fn shard(&self, bucket: u32) -> std::sync::MutexGuard<'_, Gates> {
        self.gates[bucket as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One bucket's gate, shared by its keepers and the replies it holds.
#[derive(Debug)]
struct Shared {
    bucket: u32,
    /// The bucket's seq every copy holds (the least over the legs); `u64::MAX` once the
    /// last leg closed.
    acked: watch::Sender<u64>,
    /// One per copy kept in sync.
    legs: Mutex<Vec<Leg>>,
}

#[derive(Debug)]
struct Leg {
    id: u64,
    acked: u64,
    /// Told when a reply starts waiting (the keeper sends what is new).
    wanted: Arc<Notify>,
}

impl Shared {
    fn legs(&self) -> std::sync::MutexGuard<'_, Vec<Leg>> {
        self.legs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the least seq over the legs (`u64::MAX` with none left). Called with the
    /// bucket's shard locked, and with `current` only when this is the shard's entry for
    /// the bucket (a gate already replaced must not write the bucket's lock-free slot).
    fn publish(&self, legs: &[Leg], inner: &Inner, current: bool) {
        let least = legs.iter().map(|l| l.acked).min().unwrap_or(u64::MAX);
        if current {
            if let Some(held) = inner.held.get(self.bucket as usize) {
                held.store(least, Ordering::Release);
            }
        }
        self.acked.send_if_modified(|acked| {
            let changed = *acked != least;
            *acked = least;
            changed
        });
    }
}

/// One keeper's end of a bucket's gate: a copy of the bucket on another node that replies in
/// the bucket wait for. A bucket may have several (a move's target and replicas); a reply
/// waits for all of them. Dropping a `Gate` stops waiting for its copy (the replies the
/// other copies hold already are released; with no copy left, every reply is).
#[derive(Debug)]
pub struct Gate {
    bucket: u32,
    leg: u64,
    wanted: Arc<Notify>,
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

impl InSync {
    /// No gate open yet, for a node of `buckets` buckets (a bucket number past that still
    /// works, through the locked path only).
    pub fn new(buckets: u32) -> InSync {
        InSync {
            inner: Arc::new(Inner {
                open: AtomicUsize::new(0),
                gates: (0..SHARDS).map(|_| Mutex::default()).collect(),
                next_leg: AtomicU64::new(0),
                held: (0..buckets).map(|_| AtomicU64::new(u64::MAX)).collect(),
            }),
        }
    }

    /// Opens a gate leg on `bucket` for a copy that holds it up to seq `acked` already:
    /// from now on replies in the bucket also wait for this copy.
    pub fn open(&self, bucket: u32, acked: u64) -> Gate {
        let leg = self.inner.next_leg.fetch_add(1, Ordering::Relaxed);
        let wanted = Arc::new(Notify::new());
        let mut gates = self.inner.shard(bucket);
        let shared = gates
            .entry(bucket)
            .or_insert_with(|| {
                self.inner.open.fetch_add(1, Ordering::AcqRel);
                let (tx, _) = watch::channel(acked);
                Arc::new(Shared {
                    bucket,
                    acked: tx,
                    legs: Mutex::default(),
                })
            })
            .clone();
        {
            let mut legs = shared.legs();
            legs.push(Leg {
                id: leg,
                acked,
                wanted: wanted.clone(),
            });
            shared.publish(&legs, &self.inner, true);
        }
        drop(gates);
        Gate {
            bucket,
            leg,
            wanted,
            shared,
            inner: self.inner.clone(),
        }
    }

    /// Whether any gate is open (one atomic load).
    #[inline]
    pub fn any(&self) -> bool {
        self.inner.open.load(Ordering::Acquire) != 0
    }

    /// Whether `bucket` has a gate open.
    pub fn is_open(&self, bucket: u32) -> bool {
        self.any() && self.inner.shard(bucket).contains_key(&bucket)
    }

    /// What a reply to a request just run in `bucket` must wait for: `None` when the bucket
    /// has no gate or its copies already hold `seq()` (the bucket's seq now, read only when
    /// the bucket has a gate).
    pub fn wait(&self, bucket: u32, seq: impl FnOnce() -> u64) -> Option<CopiesHold> {
        if !self.any() {
            return None;
        }
        // Most requests (reads of items the copies hold, any request once they caught up)
        // need not wait: answered from the bucket's slot, without a lock.
        let held = self
            .inner
            .held
            .get(bucket as usize)
            .map(|h| h.load(Ordering::Acquire));
        if held == Some(u64::MAX) {
            return None;
        }
        let seq = seq();
        if held.is_some_and(|h| h >= seq) {
            return None;
        }
        let shared = self.inner.shard(bucket).get(&bucket)?.clone();
        if *shared.acked.borrow() >= seq {
            return None;
        }
        let mut rx = shared.acked.subscribe();
        if *rx.borrow_and_update() >= seq {
            return None;
        }
        for leg in shared.legs().iter().filter(|l| l.acked < seq) {
            leg.wanted.notify_one();
        }
        Some(Box::pin(async move {
            // An error means the gate is gone: released.
            let _ = rx.wait_for(|&acked| acked >= seq).await;
        }))
    }
}

impl Gate {
    /// The copy holds the bucket up to `seq`: releases the replies that waited only for it.
    pub fn acked(&self, seq: u64) {
        let gates = self.inner.shard(self.bucket);
        let current = self.is_current(&gates);
        let mut legs = self.shared.legs();
        if let Some(leg) = legs.iter_mut().find(|l| l.id == self.leg) {
            if seq > leg.acked {
                leg.acked = seq;
                self.shared.publish(&legs, &self.inner, current);
            }
        }
    }

    /// Whether this leg's gate is the shard's entry for the bucket.
    fn is_current(&self, gates: &Gates) -> bool {
        gates
            .get(&self.bucket)
            .is_some_and(|g| Arc::ptr_eq(g, &self.shared))
    }

    /// Completes when a reply starts waiting for this copy (at once if one did since the
    /// last call).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut gates = self.inner.shard(self.bucket);
        let current = self.is_current(&gates);
        let mut legs = self.shared.legs();
        legs.retain(|l| l.id != self.leg);
        self.shared.publish(&legs, &self.inner, current);
        if legs.is_empty() && current {
            gates.remove(&self.bucket);
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ready(hold: &mut CopiesHold) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        hold.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn without_a_gate_nothing_waits_and_the_seq_is_not_read() {
        let in_sync = InSync::new(16);
        assert!(!in_sync.any());
        assert!(in_sync
            .wait(3, || unreachable!("no gate: no seq read"))
            .is_none());
        let _gate = in_sync.open(3, 0);
        assert!(in_sync.wait(4, || unreachable!("other bucket")).is_none());
    }

    #[test]
    fn a_reply_waits_until_the_copy_holds_its_seq() {
        let in_sync = InSync::new(16);
        let gate = in_sync.open(7, 10);
        assert!(in_sync.any());
        assert!(in_sync.wait(7, || 10).is_none(), "held already");
        let mut hold = in_sync.wait(7, || 12).expect("seq 12 not acked");
        assert!(!ready(&mut hold));
        gate.acked(11);
        assert!(!ready(&mut hold));
        gate.acked(9); // older: ignored
        assert!(!ready(&mut hold));
        gate.acked(12);
        assert!(ready(&mut hold));
    }

    #[test]
    fn closing_the_gate_releases_every_reply() {
        let in_sync = InSync::new(16);
        let gate = in_sync.open(1, 0);
        let mut a = in_sync.wait(1, || 5).expect("waits");
        let mut b = in_sync.wait(1, || 6).expect("waits");
        drop(gate);
        assert!(ready(&mut a) && ready(&mut b));
        assert!(!in_sync.any());
        assert!(in_sync.wait(1, || 7).is_none());
    }

    #[test]
    fn a_reply_waits_for_every_leg_and_a_closed_leg_stops_holding_it() {
        let in_sync = InSync::new(16);
        let a = in_sync.open(2, 0);
        let mut held = in_sync.wait(2, || 3).expect("waits");
        let b = in_sync.open(2, 1);
        assert!(in_sync.is_open(2) && !in_sync.is_open(3));
        a.acked(3);
        assert!(!ready(&mut held), "leg b holds seq 1 only");
        let mut later = in_sync.wait(2, || 4).expect("waits on both");
        drop(b);
        assert!(ready(&mut held), "with b closed, a's seq releases it");
        assert!(!ready(&mut later));
        assert!(in_sync.any(), "leg a is still open");
        a.acked(4);
        assert!(ready(&mut later));
        let mut last = in_sync.wait(2, || 9).expect("waits");
        drop(a);
        assert!(ready(&mut last));
        assert!(!in_sync.any());
    }

    #[test]
    fn a_bucket_past_the_slots_takes_the_locked_path() {
        let in_sync = InSync::new(4);
        let gate = in_sync.open(9, 2);
        assert!(in_sync.wait(9, || 2).is_none(), "held already");
        let mut hold = in_sync.wait(9, || 3).expect("waits");
        assert!(in_sync.wait(8, || 3).is_none(), "no gate");
        gate.acked(3);
        assert!(ready(&mut hold));
        drop(gate);
        assert!(in_sync.wait(9, || 4).is_none());
    }

    #[tokio::test]
    async fn the_keeper_is_told_when_a_reply_waits() {
        let in_sync = InSync::new(16);
        let gate = in_sync.open(5, 0);
        let hold = in_sync.wait(5, || 1).expect("waits");
        tokio::time::timeout(Duration::from_secs(10), gate.wanted())
            .await
            .expect("told");
        gate.acked(1);
        tokio::time::timeout(Duration::from_secs(10), hold)
            .await
            .expect("released");
    }
}
