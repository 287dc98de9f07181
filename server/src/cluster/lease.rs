//! Node leases: a node serves only while it holds a lease from the Raft leader, and the
//! leader fails a node over only once the node's lease has surely run out.
//!
//! ```text
//!  node N                                   Raft leader
//!  t0 = now; LEASE_RENEW(liveness epoch) ─► epoch matches the applied one? quorum confirms
//!                                           this leader after the request arrived? then
//!  OK ◄──────────────────────────────────── renewed[N] = arrival time
//!  lease until t0 + L                       fence N once now > max(renewed[N], since) + L + margin
//!  (every request checks now < until)       (since: when this node became leader)
//! ```
//!
//! The holder counts from the time it *sent* the request, the leader from the time the
//! request *arrived*, so the holder's lease always ends before the leader may fence it
//! (both on monotonic clocks; the margin covers clock rate drift, not steps). A leader
//! counts a node's lease from its own start as leader at the latest, which covers leases a
//! previous leader granted: that leader could not confirm its leadership with a quorum
//! after this one was elected. Everything here is pure and takes the time as an argument;
//! the control plane ([`super::raft`]) sends the requests and commits the fences.

use crate::datadir::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a request applied here is in doubt: the lease ran out before every in-sync copy was
/// known to hold it (the bucket may have failed over without it).
pub const LEASE_RAN_OUT: &str =
    "this node's lease ran out before the copies confirmed it; it may have been applied";

/// The lease length and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a renewal keeps a node serving.
    pub lease: Duration,
    /// How much longer the leader waits past a lease before it fences the node.
    pub margin: Duration,
    /// How often a node renews.
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `lease`: renewed and padded by a sixth of it each (so a
    /// node misses five renewals in a row before its lease runs out).
    pub fn new(lease: Duration) -> LeaseTiming {
        LeaseTiming {
            lease,
            margin: lease / 6,
            renew_every: lease / 6,
        }
    }

    /// How long after the last renewal the leader may fence a node.
    pub fn fence_after(&self) -> Duration {
        self.lease + self.margin
    }
}

/// A node's own lease, read by the data path on every request (one clock read and one
/// atomic load).
#[derive(Debug)]
pub struct Lease {
    /// What `until` counts from.
    origin: Instant,
    /// End of the lease in nanoseconds after `origin`: 0 none, `u64::MAX` never ends (a
    /// data path with no cluster behind it).
    until: AtomicU64,
    /// How many times the lease was granted again after it had run out (or was ended): a
    /// reply held across a change of this count is in doubt even if the lease holds again.
    lapses: AtomicU64,
}

impl Lease {
    /// No lease yet: nothing is served until the first renewal.
    pub fn none() -> Lease {
        Lease {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            lapses: AtomicU64::new(0),
        }
    }

    /// Whether the lease holds now.
    #[inline]
    pub fn valid(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// Whether the lease holds at `now`.
    #[inline]
    pub fn valid_at(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until == u64::MAX || self.nanos(now) < until
    }

    /// A renewal sent at `sent` was granted: the lease holds until `sent + length` (never
    /// shortened by a late answer to an earlier renewal).
    ///
    /// A grant after the lease ran out counts a lapse first, so that whoever sees the new
    /// end also sees the lapse.
    pub fn extend(&self, sent: Instant, length: Duration) {
        let until = self.nanos(sent).saturating_add(nanos_of(length));
        let before = self.until.load(Ordering::Acquire);
        if before != u64::MAX && before <= self.nanos(Instant::now()) && until > before {
            self.lapses.fetch_add(1, Ordering::AcqRel);
        }
        self.until.fetch_max(until, Ordering::AcqRel);
    }

    /// The count of lapses so far, to compare with [`Lease::held_since`] later.
    pub fn mark(&self) -> u64 {
        self.lapses.load(Ordering::Acquire)
    }

    /// Whether the lease holds now and has not run out since [`Lease::mark`] gave `mark`.
    pub fn held_since(&self, mark: u64) -> bool {
        // The end first: a grant counts its lapse before it moves the end.
        self.valid() && self.lapses.load(Ordering::Acquire) == mark
    }

    /// Makes the lease never end: a data path run by a table with no control plane behind
    /// it (tests that drive a view by hand).
    pub fn never_end(&self) {
        self.until.store(u64::MAX, Ordering::Release);
    }

    /// Ends the lease now (the node learnt it was fenced).
    pub fn end(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// How much of the lease is left at `now` (`None`: it has run out; `Duration::MAX`: it
    /// never ends).
    pub fn left(&self, now: Instant) -> Option<Duration> {
        match self.until.load(Ordering::Acquire) {
            u64::MAX => Some(Duration::MAX),
            until => until
                .checked_sub(self.nanos(now))
                .filter(|n| *n > 0)
                .map(Duration::from_nanos),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        nanos_of(at.saturating_duration_since(self.origin))
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

/// The leader's record of renewals under its current term.
#[derive(Debug, Default)]
pub struct LeaseBook {
    /// The term this node leads, and since when it has known it.
    leading: Option<(u64, Instant)>,
    /// The arrival time of each member's last granted renewal in that term.
    renewed: HashMap<NodeId, Instant>,
}

impl LeaseBook {
    /// This node leads `term` as of `now` (a new term starts a new book).
    pub fn lead(&mut self, term: u64, now: Instant) {
        if self.leading.is_none_or(|(t, _)| t != term) {
            self.leading = Some((term, now));
            self.renewed.clear();
        }
    }

    /// This node does not lead (any more).
    pub fn follow(&mut self) {
        self.leading = None;
        self.renewed.clear();
    }

    /// `node`'s renewal that arrived at `arrived` was granted in `term`.
    pub fn renewed(&mut self, term: u64, node: NodeId, arrived: Instant) {
        if self.leading.is_some_and(|(t, _)| t == term) {
            let last = self.renewed.entry(node).or_insert(arrived);
            *last = (*last).max(arrived);
        }
    }

    /// Whether `node`'s lease has surely run out at `now` (so it may be fenced): only while
    /// leading, and `fence_after` past both its last renewal and the start of this term.
    pub fn expired(&self, node: NodeId, now: Instant, timing: &LeaseTiming) -> bool {
        let Some((_, since)) = self.leading else {
            return false;
        };
        let last = self.renewed.get(&node).map_or(since, |r| (*r).max(since));
        now.saturating_duration_since(last) > timing.fence_after()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lease_holds_from_the_send_time_and_only_grows() {
        let lease = Lease::none();
        let t0 = Instant::now();
        assert!(!lease.valid_at(t0) && lease.left(t0).is_none());
        lease.extend(t0, ms(600));
        assert!(lease.valid_at(t0 + ms(599)));
        assert!(!lease.valid_at(t0 + ms(600)));
        // A late answer to an older renewal does not shorten it.
        lease.extend(t0 - ms(300), ms(600));
        assert!(lease.valid_at(t0 + ms(599)));
        assert_eq!(lease.left(t0 + ms(100)), Some(ms(500)));
        lease.end();
        assert!(!lease.valid_at(t0));
        lease.never_end();
        assert!(lease.valid());
        assert_eq!(lease.left(t0), Some(Duration::MAX));
    }

    #[test]
    fn a_grant_after_the_lease_ran_out_breaks_every_earlier_mark() {
        let lease = Lease::none();
        let now = Instant::now();
        lease.extend(now, ms(60_000));
        let mark = lease.mark();
        assert!(lease.held_since(mark));
        // Renewed while it holds: still the same run.
        lease.extend(now + ms(10), ms(60_000));
        assert!(lease.held_since(mark));
        // Ended (fenced), then granted again: valid, but not since the mark.
        lease.end();
        assert!(!lease.held_since(mark));
        lease.extend(Instant::now(), ms(60_000));
        assert!(lease.valid() && !lease.held_since(mark));
        let mark = lease.mark();
        assert!(lease.held_since(mark));
        // Ran out by itself (its end long past), then granted again.
        lease.until.store(1, Ordering::Release);
        assert!(!lease.held_since(mark));
        lease.extend(Instant::now(), ms(60_000));
        assert!(lease.valid() && !lease.held_since(mark));
    }

    #[test]
    fn the_leader_fences_only_past_the_last_renewal_and_its_own_start() {
        let timing = LeaseTiming::new(ms(600));
        assert_eq!(timing.fence_after(), ms(700));
        let n = NodeId([1; 16]);
        let t0 = Instant::now();
        let mut book = LeaseBook::default();
        assert!(
            !book.expired(n, t0 + ms(10_000), &timing),
            "a follower fences nobody"
        );
        book.lead(3, t0);
        assert!(!book.expired(n, t0 + ms(700), &timing));
        assert!(book.expired(n, t0 + ms(701), &timing));
        book.renewed(3, n, t0 + ms(500));
        assert!(!book.expired(n, t0 + ms(1200), &timing));
        assert!(book.expired(n, t0 + ms(1201), &timing));
        // A renewal granted under another term does not count; a new term starts over.
        book.renewed(2, n, t0 + ms(5000));
        assert!(book.expired(n, t0 + ms(1300), &timing));
        book.lead(4, t0 + ms(2000));
        assert!(!book.expired(n, t0 + ms(2700), &timing));
        book.follow();
        assert!(!book.expired(n, t0 + ms(99_000), &timing));
    }

    proptest! {
        /// Whatever the renewals and their delays: every instant at which the holder
        /// believes it holds the lease comes before the leader may fence it.
        #[test]
        fn the_holder_always_stops_before_the_leader_may_fence(
            lease_ms in 6u64..5000,
            rounds in proptest::collection::vec((0u64..3000, 0u64..500, any::<bool>()), 1..20),
        ) {
            let timing = LeaseTiming::new(ms(lease_ms));
            let n = NodeId([7; 16]);
            let start = Instant::now();
            let holder = Lease::none();
            let mut book = LeaseBook::default();
            book.lead(1, start);
            let mut now = start;
            for (gap, delay, granted) in rounds {
                let sent = now + ms(gap);
                let arrived = sent + ms(delay);
                if granted {
                    book.renewed(1, n, arrived);
                    holder.extend(sent, timing.lease);
                }
                now = arrived;
                // The first moment the leader may fence: the holder has stopped by then.
                let mut t = now;
                while !book.expired(n, t, &timing) {
                    t += ms(1);
                }
                prop_assert!(!holder.valid_at(t));
            }
        }
    }
}
