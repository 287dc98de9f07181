//! [`InputBudget`]: the node-wide cap on input held for partially received requests.
//!
//! Every connection reads into a small buffer of its own ([`FREE_INPUT`], not charged). A
//! request larger than that (a big value, a long multi-get line) needs room to arrive in; the
//! connection first takes that room from the node's budget (`--max-input-memory`), all of it
//! at once when the protocol can tell the request's length. When the budget is spent, the
//! connection stops reading and waits (its frame timeout still runs) until another connection
//! gives memory back: when its request completes, or when it closes. So input memory is
//! bounded by `max-input-memory + connections x FREE_INPUT` however many clients send large
//! requests slowly, and it is returned when they finish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Input bytes a connection may hold without charging the node budget.
pub(crate) const FREE_INPUT: usize = 32 * 1024;

/// The node-wide budget for input beyond each connection's [`FREE_INPUT`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InputBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One permit per byte.
    bytes: Arc<Semaphore>,
    limit: usize,
    /// Times a connection had to wait for budget.
    waits: AtomicU64,
}

impl InputBudget {
    /// A budget of `limit` bytes (capped at what a semaphore can count).
    pub fn new(limit: usize) -> InputBudget {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        InputBudget {
            inner: Arc::new(Inner {
                bytes: Arc::new(Semaphore::new(limit)),
                limit,
                waits: AtomicU64::new(0),
            }),
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes held by connections now.
    pub fn used(&self) -> usize {
        self.inner.limit - self.inner.bytes.available_permits()
    }

    /// Times a connection waited for budget since start.
    pub fn waits(&self) -> u64 {
        self.inner.waits.load(Ordering::Relaxed)
    }

    /// An empty reservation for one connection.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: None,
            size: 0,
        }
    }
}

/// What one connection holds of the budget; given back when dropped or released.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: InputBudget,
    held: Option<OwnedSemaphorePermit>,
    size: usize,
}

impl Reservation {
    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Makes the reservation at least `bytes`, without waiting. False when the budget does
    /// not have it now (then [`Reservation::grow`] waits for it).
    pub(crate) fn try_grow(&mut self, bytes: usize) -> bool {
        let Some(more) = self.missing(bytes) else {
            return true;
        };
        match self.budget.inner.bytes.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                self.add(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Makes the reservation at least `bytes`, waiting for other connections to give memory
    /// back. `bytes` must not exceed the budget's limit (configuration ensures a maximal
    /// request fits), or this never completes.
    pub(crate) async fn grow(&mut self, bytes: usize) {
        let Some(more) = self.missing(bytes) else {
            return;
        };
        self.budget.inner.waits.fetch_add(1, Ordering::Relaxed);
        if let Ok(permit) = self
            .budget
            .inner
            .bytes
            .clone()
            .acquire_many_owned(more)
            .await
        {
            self.add(permit);
        }
    }

    /// Gives everything back.
    pub(crate) fn release(&mut self) {
        self.held = None;
        self.size = 0;
    }

    /// Permits still needed to hold `bytes`, when some are.
    fn missing(&self, bytes: usize) -> Option<u32> {
        let bytes = bytes.min(self.budget.inner.limit);
        (bytes > self.size).then(|| u32::try_from(bytes - self.size).unwrap_or(u32::MAX))
    }

    fn add(&mut self, permit: OwnedSemaphorePermit) {
        self.size += permit.num_permits();
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_share_the_budget_and_give_it_back() {
        let budget = InputBudget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.try_grow(60));
        assert!(a.try_grow(40), "growing takes only the difference");
        assert_eq!(a.size(), 60);
        assert_eq!(budget.used(), 60);
        assert!(!b.try_grow(50), "only 40 left");
        assert!(b.try_grow(40));
        assert_eq!(budget.used(), 100);
        let waiter = tokio::spawn(async move {
            let mut c = budget.reservation();
            c.grow(30).await;
            (c.size(), budget)
        });
        a.release();
        let (size, budget) = waiter.await.expect("waiter finishes");
        assert_eq!(size, 30);
        assert_eq!(budget.waits(), 1);
        drop(b);
        assert_eq!(
            budget.used(),
            0,
            "the waiter's reservation was dropped with it"
        );
    }
}
