//! Acknowledging after the copies: while a bucket has an in-sync copy on another node, a
//! request in it is answered only once that copy holds the bucket up to the request.
//!
//! ```text
//!  request in bucket b ──► store (seq s) ──► reply held ──► sent once acked(b) >= s
//!                                               ▲
//!  mover: changes of b up to seq n ──► copy ──► acked(b) = n   (or the gate closes)
//! ```
//!
//! A [`Gate`] is opened by whoever keeps the copy in sync (a move's source in its last
//! phase; replication later) and closed by dropping it, which releases every held reply at
//! once: the owner keeps serving without the copy. The owner's data path asks
//! [`InSync::wait`] after each request it ran in a bucket; with no gate open anywhere that
//! is one atomic load.
//!
//! What a gate promises is that a reply leaves only when the copy holds the bucket up to
//! the bucket's seq as it was after the request ran (so up to the request's own write, and
//! perhaps a few later ones). It throttles the writers of a bucket to the pace at which its
//! copy keeps up, which is how a move converges at any write rate: the writes the copy has
//! not acknowledged are bounded by the requests clients have in flight.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{watch, Notify};

/// A held reply's condition: completes once the copies hold what the request needs (or the
/// gate closed).
pub type CopiesHold = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The open gates of one node (held by the [`ClusterView`](super::ClusterView)).
#[derive(Debug, Default)]
pub struct InSync {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// How many gates are open (the data path looks at `gates` only when this is not 0).
    open: AtomicUsize,
    gates: Mutex<HashMap<u32, Arc<Shared>>>,
}

/// One bucket's gate, shared by its keeper and the replies it holds.
#[derive(Debug)]
struct Shared {
    /// The bucket's seq the copy holds; `u64::MAX` once the gate is closed.
    acked: watch::Sender<u64>,
    /// Told when a reply starts waiting (the keeper sends what is new).
    wanted: Notify,
}

/// The keeper's end of one bucket's gate. Dropping it closes the gate and releases the
/// replies it holds.
#[derive(Debug)]
pub struct Gate {
    bucket: u32,
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

impl InSync {
    /// Opens the gate of `bucket`, whose copy holds it up to seq `acked` already. A gate
    /// the bucket had is closed first (its replies are released).
    pub fn open(&self, bucket: u32, acked: u64) -> Gate {
        let (tx, _) = watch::channel(acked);
        let shared = Arc::new(Shared {
            acked: tx,
            wanted: Notify::new(),
        });
        let old = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bucket, shared.clone());
        match old {
            Some(old) => release(&old),
            None => {
                self.inner.open.fetch_add(1, Ordering::AcqRel);
            }
        }
        Gate {
            bucket,
            shared,
            inner: self.inner.clone(),
        }
    }

    /// Whether any gate is open (one atomic load).
    #[inline]
    pub fn any(&self) -> bool {
        self.inner.open.load(Ordering::Acquire) != 0
    }

    /// What a reply to a request just run in `bucket` must wait for: `None` when the bucket
    /// has no gate or its copy already holds `seq()` (the bucket's seq now, read only when
    /// the bucket has a gate).
    pub fn wait(&self, bucket: u32, seq: impl FnOnce() -> u64) -> Option<CopiesHold> {
        if !self.any() {
            return None;
        }
        let shared = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&bucket)?
            .clone();
        let mut rx = shared.acked.subscribe();
        let seq = seq();
        if *rx.borrow_and_update() >= seq {
            return None;
        }
        shared.wanted.notify_one();
        Some(Box::pin(async move {
            // An error means the gate is gone: released.
            let _ = rx.wait_for(|&acked| acked >= seq).await;
        }))
    }
}

impl Gate {
    /// The copy holds the bucket up to `seq`: releases the replies that waited for it.
    pub fn acked(&self, seq: u64) {
        self.shared.acked.send_if_modified(|acked| {
            let newer = seq > *acked;
            if newer {
                *acked = seq;
            }
            newer
        });
    }

    /// Completes when a reply starts waiting for the copy (at once if one did since the
    /// last call).
    pub async fn wanted(&self) {
        self.shared.wanted.notified().await;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut gates = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if gates
            .get(&self.bucket)
            .is_some_and(|g| Arc::ptr_eq(g, &self.shared))
        {
            gates.remove(&self.bucket);
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
        }
        drop(gates);
        release(&self.shared);
    }
}

/// Releases every reply a gate holds, and any that would wait on it later.
fn release(shared: &Shared) {
    shared.acked.send_replace(u64::MAX);
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
        let in_sync = InSync::default();
        assert!(!in_sync.any());
        assert!(in_sync
            .wait(3, || unreachable!("no gate: no seq read"))
            .is_none());
        let _gate = in_sync.open(3, 0);
        assert!(in_sync.wait(4, || unreachable!("other bucket")).is_none());
    }

    #[test]
    fn a_reply_waits_until_the_copy_holds_its_seq() {
        let in_sync = InSync::default();
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
        let in_sync = InSync::default();
        let gate = in_sync.open(1, 0);
        let mut a = in_sync.wait(1, || 5).expect("waits");
        let mut b = in_sync.wait(1, || 6).expect("waits");
        drop(gate);
        assert!(ready(&mut a) && ready(&mut b));
        assert!(!in_sync.any());
        assert!(in_sync.wait(1, || 7).is_none());
    }

    #[test]
    fn reopening_a_bucket_releases_the_old_gate_only() {
        let in_sync = InSync::default();
        let old = in_sync.open(2, 0);
        let mut held = in_sync.wait(2, || 3).expect("waits");
        let new = in_sync.open(2, 0);
        assert!(ready(&mut held), "the old gate's replies are released");
        drop(old);
        assert!(
            in_sync.any(),
            "dropping the old gate leaves the new one open"
        );
        let mut again = in_sync.wait(2, || 1).expect("waits on the new gate");
        new.acked(1);
        assert!(ready(&mut again));
        drop(new);
        assert!(!in_sync.any());
    }

    #[tokio::test]
    async fn the_keeper_is_told_when_a_reply_waits() {
        let in_sync = InSync::default();
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
