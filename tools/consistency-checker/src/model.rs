//! What the checker knows about every key: the per-key expectations that reads are judged by.
//!
//! In set mode each key has one owning writer (`key % writers`), so its writes (sets, deletes,
//! touches) are sent one at a time and its sequence numbers grow one by one. The model
//! remembers, per key, the highest sequence number acknowledged, the highest one sent, the
//! highest one a completed read returned (the observed floor), the few whose writes ended in
//! doubt, the recent deletes, the TTLs that may decide when the key expires, and whether a
//! crash may have wiped it. In check-and-set mode every writer may increment every key; the
//! model counts acknowledged and in-doubt increments instead.
//!
//! The floor of a read is taken when it is sent: the highest sequence number acknowledged, or
//! returned by a read that had completed by then, whichever is higher. A value below it is
//! stale unless its write ended in doubt (it may be applied late). A miss is allowed when
//! nothing was acknowledged or observed yet, when a delete at or above the floor (or in doubt)
//! may be the key's latest write, when one of the TTLs that may be in force could have run
//! out ([`TTL_SLACK`] early, for the server's one-second clock), or when a crash wiped the
//! only copy of the key's bucket.
//!
//! Crashes: the nemesis calls [`Model::crash_buckets`] after it has killed the only copy of
//! some buckets (and reaped the process) and before it starts it again. From then on a miss is
//! allowed for every key of those buckets until a write *sent after the crash* is
//! acknowledged; a write sent before it may have been acknowledged by the dead process, so
//! its acknowledgement proves nothing about the new one. Present values are still held to the
//! floor: the restarted node can only hold values written to it, and those are never older
//! than the last acknowledgement or observation.
//!
//! This module has no I/O and no clock: times are passed in as durations since the run's
//! start. [`value`](crate::value) turns an [`Expect`] and the bytes read into a verdict.

use crate::value::{Expect, Miss};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How many in-doubt sequence numbers (and in-doubt TTLs) are remembered per key.
pub const MAX_DOUBT: usize = 8;

/// How many recent deletes are remembered per key.
pub const MAX_DELETES: usize = 8;

/// How far a TTL may be off either way: the server counts expiry in whole seconds on its own
/// clock, so an item may go up to a second early, and a read is timed when it is sent.
pub const TTL_SLACK: Duration = Duration::from_millis(1500);

/// The key space: `keys` keys named `{prefix}:{index}`, the first `hot` of them hot.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
    keys: u32,
    hot: u32,
}

impl Keyspace {
    /// A key space of `keys` keys whose first `hot` (at most `keys`) form the hot set.
    pub fn new(prefix: impl Into<String>, keys: u32, hot: u32) -> Self {
        let keys = keys.max(1);
        Self {
            prefix: prefix.into(),
            keys,
            hot: hot.min(keys),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> u32 {
        self.keys
    }

    /// Whether the key space is empty (never: it has at least one key).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Size of the hot set.
    pub fn hot(&self) -> u32 {
        self.hot
    }

    /// The key's bytes.
    pub fn name(&self, index: u32) -> Vec<u8> {
        format!("{}:{index:06}", self.prefix).into_bytes()
    }
}

/// How a write ended, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The server acknowledged it.
    Acked,
    /// Sent, no reply: it may or may not have been applied.
    InDoubt,
    /// Certainly not applied (never sent, or refused by the server).
    Failed,
}

/// What a set-mode write does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Stores the next value, expiring after `ttl` seconds (0: never).
    Set {
        /// Seconds until it expires (0: never).
        ttl: u32,
    },
    /// Deletes the key.
    Delete,
}

/// Proof that a write was registered with the model; hand it back to [`Model::finish_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicket {
    /// The sequence number (the new counter value in check-and-set mode) being written.
    pub seq: u64,
    /// The key's crash count when the write was sent.
    crash: u64,
    /// What it does.
    kind: WriteKind,
    /// When it expires at the earliest (sent + TTL), for a write with a TTL.
    expires: Option<Duration>,
}

/// Proof that a touch was registered; hand it back to [`Model::finish_touch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TouchTicket {
    id: u64,
    read: ReadTicket,
}

/// How a touch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchOutcome {
    /// The key was there and has the new TTL.
    Touched,
    /// The server said the key was not there (judged like a miss).
    NotFound,
    /// Sent, no reply.
    InDoubt,
    /// Certainly not applied.
    Failed,
}

/// Taken when a read is sent; hand it back to [`Model::finish_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTicket {
    floor: u64,
    crash_miss: bool,
    seen: bool,
    sent: Duration,
    /// The earliest expiry that could be in force when the read was sent (a later write
    /// may replace it before the reply comes, but the server may have read the key first).
    expiry: Option<Duration>,
}

/// One TTL that may decide when the key expires: when it runs out at the earliest, and (once
/// acknowledged) at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TtlMark {
    /// Which operation set it (a write's sequence number, or a touch id above `TOUCH_IDS`).
    id: u64,
    /// Sent time plus the TTL.
    expires: Duration,
    /// The TTL itself.
    ttl: Duration,
    /// Acknowledgement time plus the TTL (`None` while not acknowledged).
    latest: Option<Duration>,
}

/// Touch ids live above every sequence number, so marks of writes and touches never collide.
const TOUCH_IDS: u64 = 1 << 62;

/// One key's expectations.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// Highest acknowledged sequence number (set mode) or counter value (check-and-set mode).
    acked: u64,
    /// Highest sequence number sent (set mode).
    attempted: u64,
    /// Highest sequence number (counter) a completed read returned.
    observed: u64,
    /// Whether anything was ever acknowledged.
    ever_acked: bool,
    /// A crash may have wiped the key (see the module documentation).
    crash_miss: bool,
    /// Crashes of the key's bucket so far.
    crashes: u64,
    /// The last few in-doubt sequence numbers.
    doubt: Vec<u64>,
    /// Recent deletes that were sent and not known to have failed.
    deletes: Vec<u64>,
    /// The TTL of the last acknowledged set or touch (`None`: no expiry).
    ttl_acked: Option<TtlMark>,
    /// TTLs of operations sent and not yet answered, or answered in doubt (bounded).
    ttl_pending: Vec<TtlMark>,
    /// Touches sent so far (for their ids).
    touches: u64,
    /// Check-and-set mode: increments acknowledged since the last crash.
    incr_acked: u64,
    /// Check-and-set mode: increments in doubt since the last crash (including those sent
    /// before it and acknowledged after it).
    incr_doubt: u64,
    /// Check-and-set mode: increments sent and not yet answered.
    incr_inflight: u64,
}

impl KeyState {
    /// The earliest time a TTL that may be in force runs out.
    fn earliest_expiry(&self) -> Option<Duration> {
        self.ttl_acked
            .iter()
            .chain(&self.ttl_pending)
            .map(|m| m.expires)
            .min()
    }

    /// Whether a delete may be the key's latest write for a read whose floor is `floor`.
    fn deleted_since(&self, floor: u64) -> bool {
        self.deletes
            .iter()
            .any(|d| *d >= floor || self.doubt.contains(d))
    }

    fn pending_ttl(&mut self, mark: TtlMark) {
        if self.ttl_pending.len() > MAX_DOUBT {
            // Keep the earliest expiries: they are the ones that allow a miss.
            if let Some((at, latest)) = self
                .ttl_pending
                .iter()
                .enumerate()
                .max_by_key(|(_, m)| m.expires)
                .map(|(i, m)| (i, m.expires))
            {
                if latest <= mark.expires {
                    return;
                }
                self.ttl_pending.remove(at);
            }
        }
        self.ttl_pending.push(mark);
    }

    /// Settles the TTL of operation `id`, answered at `now`.
    fn settle_ttl(&mut self, id: u64, outcome: WriteOutcome, now: Duration) {
        let Some(at) = self.ttl_pending.iter().position(|m| m.id == id) else {
            return;
        };
        match outcome {
            // Stays pending: it may be applied late.
            WriteOutcome::InDoubt => {}
            WriteOutcome::Acked => {
                let mut mark = self.ttl_pending.remove(at);
                mark.latest = Some(now.max(mark.expires - mark.ttl) + mark.ttl);
                self.ttl_acked = Some(mark);
            }
            WriteOutcome::Failed => {
                self.ttl_pending.remove(at);
            }
        }
    }
}

/// The result of comparing a check-and-set counter with its increments at the final read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterVerdict {
    /// Acknowledged increments missing from the counter.
    pub lost: u64,
    /// Increments in the counter beyond every acknowledged and in-doubt one.
    pub extra: u64,
}

/// Per-key expectations for the whole key space. Shared by every worker; one lock per key.
#[derive(Debug)]
pub struct Model {
    keys: Vec<Mutex<KeyState>>,
    /// The bucket of each key.
    buckets: Vec<u32>,
    writers: u32,
    /// Check-and-set mode: keys hold counters.
    counters: bool,
}

impl Model {
    /// A model of `keys` keys written by `writers` writers, nothing written yet; `counters`
    /// selects check-and-set mode. Every key is in bucket 0 until [`Model::with_buckets`].
    pub fn new(keys: u32, writers: u32, counters: bool) -> Self {
        let fresh = KeyState {
            crash_miss: true,
            ..KeyState::default()
        };
        Self {
            keys: (0..keys).map(|_| Mutex::new(fresh.clone())).collect(),
            buckets: vec![0; keys as usize],
            writers: writers.max(1),
            counters,
        }
    }

    /// Sets the bucket of every key (`buckets[i]` is key `i`'s), so crashes can be limited
    /// to the buckets they wiped.
    pub fn with_buckets(mut self, buckets: Vec<u32>) -> Self {
        if buckets.len() == self.keys.len() {
            self.buckets = buckets;
        }
        self
    }

    /// The bucket of key `index`.
    pub fn bucket(&self, index: u32) -> u32 {
        self.buckets.get(index as usize).copied().unwrap_or(0)
    }

    /// The writer that owns key `index` in set mode.
    pub fn owner(&self, index: u32) -> u32 {
        index % self.writers
    }

    /// Number of writers.
    pub fn writers(&self) -> u32 {
        self.writers
    }

    fn key(&self, index: u32) -> MutexGuard<'_, KeyState> {
        let slot = &self.keys[index as usize % self.keys.len().max(1)];
        slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the next write of key `index`, sent at `now` (set mode; only its owner may
    /// call this).
    pub fn begin_write(&self, index: u32, kind: WriteKind, now: Duration) -> WriteTicket {
        let mut k = self.key(index);
        k.attempted += 1;
        let seq = k.attempted;
        let expires = match kind {
            WriteKind::Set { ttl } if ttl > 0 => {
                let ttl = Duration::from_secs(u64::from(ttl));
                k.pending_ttl(TtlMark {
                    id: seq,
                    expires: now + ttl,
                    ttl,
                    latest: None,
                });
                let expires = now + ttl;
                Some(expires)
            }
            WriteKind::Set { .. } => None,
            WriteKind::Delete => {
                if k.deletes.len() == MAX_DELETES {
                    k.deletes.remove(0);
                }
                k.deletes.push(seq);
                None
            }
        };
        WriteTicket {
            seq,
            crash: k.crashes,
            kind,
            expires,
        }
    }

    /// Records how a write registered by [`Model::begin_write`] ended, answered at `now`.
    pub fn finish_write(
        &self,
        index: u32,
        ticket: WriteTicket,
        outcome: WriteOutcome,
        now: Duration,
    ) {
        let mut k = self.key(index);
        k.settle_ttl(ticket.seq, outcome, now);
        match outcome {
            WriteOutcome::Acked => {
                k.acked = k.acked.max(ticket.seq);
                k.ever_acked = true;
                if ticket.crash == k.crashes {
                    k.crash_miss = false;
                }
                if matches!(ticket.kind, WriteKind::Set { .. }) && ticket.expires.is_none() {
                    // The latest value never expires.
                    k.ttl_acked = None;
                }
            }
            WriteOutcome::InDoubt => {
                if k.doubt.len() == MAX_DOUBT {
                    k.doubt.remove(0);
                }
                k.doubt.push(ticket.seq);
            }
            WriteOutcome::Failed => {
                if ticket.kind == WriteKind::Delete {
                    k.deletes.retain(|d| *d != ticket.seq);
                }
            }
        }
    }

    /// Registers a touch of key `index` with `ttl` seconds, sent at `now`. A touch that finds
    /// no key is judged like a read sent at the same time.
    pub fn begin_touch(&self, index: u32, ttl: u32, now: Duration) -> TouchTicket {
        let read = self.begin_read(index, now);
        let mut k = self.key(index);
        k.touches += 1;
        let id = TOUCH_IDS + k.touches;
        let ttl = Duration::from_secs(u64::from(ttl));
        k.pending_ttl(TtlMark {
            id,
            expires: now + ttl,
            ttl,
            latest: None,
        });
        TouchTicket { id, read }
    }

    /// Records how a touch ended. For [`TouchOutcome::NotFound`] it returns what a miss must
    /// be judged against (the caller classifies it); otherwise `None`.
    pub fn finish_touch(
        &self,
        index: u32,
        ticket: TouchTicket,
        outcome: TouchOutcome,
        now: Duration,
    ) -> Option<Expect> {
        let settle = match outcome {
            TouchOutcome::Touched => WriteOutcome::Acked,
            TouchOutcome::InDoubt => WriteOutcome::InDoubt,
            TouchOutcome::NotFound | TouchOutcome::Failed => WriteOutcome::Failed,
        };
        self.key(index).settle_ttl(ticket.id, settle, now);
        (outcome == TouchOutcome::NotFound)
            .then(|| self.finish_read(index, ticket.read, false, now))
    }

    /// Registers an increment of key `index` from counter value `from` (check-and-set mode).
    pub fn begin_increment(&self, index: u32, from: u64) -> WriteTicket {
        let mut k = self.key(index);
        k.incr_inflight += 1;
        WriteTicket {
            seq: from + 1,
            crash: k.crashes,
            kind: WriteKind::Set { ttl: 0 },
            expires: None,
        }
    }

    /// Records how an increment ended. A conflict is [`WriteOutcome::Failed`].
    pub fn finish_increment(&self, index: u32, ticket: WriteTicket, outcome: WriteOutcome) {
        let mut k = self.key(index);
        k.incr_inflight = k.incr_inflight.saturating_sub(1);
        match outcome {
            WriteOutcome::Acked if ticket.crash == k.crashes => {
                k.incr_acked += 1;
                k.acked = k.acked.max(ticket.seq);
                k.ever_acked = true;
                k.crash_miss = false;
            }
            // Sent before a crash, answered after it: by the old process or the new one.
            WriteOutcome::Acked | WriteOutcome::InDoubt => {
                k.incr_doubt += 1;
                k.ever_acked = true;
            }
            WriteOutcome::Failed => {}
        }
    }

    /// Call when a read of key `index` is sent, at `now`.
    pub fn begin_read(&self, index: u32, now: Duration) -> ReadTicket {
        let k = self.key(index);
        ReadTicket {
            floor: k.acked.max(k.observed),
            crash_miss: k.crash_miss,
            seen: k.ever_acked || k.observed > 0,
            sent: now,
            expiry: k.earliest_expiry(),
        }
    }

    /// Call when a completed read of key `index` returned a value with sequence number (or
    /// counter) `seq` that was judged allowed: later reads must not return anything older.
    pub fn observe(&self, index: u32, seq: u64) {
        let mut k = self.key(index);
        k.observed = k.observed.max(seq);
    }

    /// What a miss means for a read sent with `ticket` and answered at `now`, as the key is
    /// now. A TTL may run out at any moment until the reply (a paused or restarting node
    /// reads the key late), so expiry is judged at `now`.
    fn miss_rule(k: &KeyState, ticket: &ReadTicket, now: Duration) -> Miss {
        if !ticket.seen {
            Miss::NeverWritten
        } else if k.deleted_since(ticket.floor)
            || ticket
                .expiry
                .into_iter()
                .chain(k.earliest_expiry())
                .min()
                .is_some_and(|e| now.max(ticket.sent) + TTL_SLACK >= e)
        {
            Miss::Absent
        } else if ticket.crash_miss || k.crash_miss {
            Miss::Crash
        } else {
            Miss::Violation
        }
    }

    /// Call when the reply to a read arrives, at `now`: what the value must be (set mode).
    /// `verdict` marks the final, quiescent read.
    pub fn finish_read(
        &self,
        index: u32,
        ticket: ReadTicket,
        verdict: bool,
        now: Duration,
    ) -> Expect {
        let k = self.key(index);
        Expect {
            owner: Some(self.owner(index)),
            writers: self.writers,
            floor: ticket.floor,
            acked: k.acked,
            attempted: k.attempted,
            miss: Self::miss_rule(&k, &ticket, now),
            doubt: k.doubt.clone(),
            verdict,
        }
    }

    /// Like [`Model::finish_read`] for check-and-set mode: any writer, and the counter may be
    /// anywhere from the floor up to every increment acknowledged, in doubt or in flight.
    pub fn finish_counter_read(
        &self,
        index: u32,
        ticket: ReadTicket,
        verdict: bool,
        now: Duration,
    ) -> Expect {
        let k = self.key(index);
        let ceiling = k.incr_acked + k.incr_doubt + k.incr_inflight;
        Expect {
            owner: None,
            writers: self.writers,
            floor: ticket.floor,
            acked: ceiling,
            attempted: ceiling,
            miss: Self::miss_rule(&k, &ticket, now),
            doubt: Vec::new(),
            verdict,
        }
    }

    /// Check-and-set mode, final read: compares the counter (0 for a miss) with the
    /// increments acknowledged and in doubt since the last crash.
    pub fn counter_verdict(&self, index: u32, counter: u64) -> CounterVerdict {
        let k = self.key(index);
        CounterVerdict {
            lost: k.incr_acked.saturating_sub(counter),
            extra: counter.saturating_sub(k.incr_acked + k.incr_doubt + k.incr_inflight),
        }
    }

    /// The latest time any TTL sent so far can run out, if any key was written with one:
    /// after it (plus [`TTL_SLACK`]) every key with a TTL must be gone. Call when the load has
    /// stopped, at `now`: an operation not acknowledged may still be applied until then (a
    /// request that waited for a paused or restarting node), never later.
    pub fn latest_expiry(&self, now: Duration) -> Option<Duration> {
        self.keys
            .iter()
            .filter_map(|slot| {
                let k = slot.lock().unwrap_or_else(|e| e.into_inner());
                k.ttl_acked
                    .iter()
                    .chain(&k.ttl_pending)
                    .map(|m| m.latest.unwrap_or(now.max(m.expires - m.ttl) + m.ttl))
                    .max()
            })
            .max()
    }

    /// Whether key `index` was ever written with a TTL, and its latest value had one (the
    /// keys the final TTL check reads).
    pub fn expires(&self, index: u32) -> bool {
        self.key(index).ttl_acked.is_some()
    }

    /// Records a crash that wiped the only copy of `buckets`: from now on every key of those
    /// buckets may read as a miss until a write sent after this call is acknowledged.
    /// Check-and-set counters of those keys start again from zero. Nothing happens for an
    /// empty list.
    pub fn crash_buckets(&self, buckets: &[u32]) {
        if buckets.is_empty() {
            return;
        }
        let wiped: HashSet<u32> = buckets.iter().copied().collect();
        for (slot, bucket) in self.keys.iter().zip(&self.buckets) {
            if !wiped.contains(bucket) {
                continue;
            }
            let mut k = slot.lock().unwrap_or_else(|e| e.into_inner());
            k.crashes += 1;
            k.crash_miss = true;
            if self.counters {
                k.acked = 0;
                k.observed = 0;
                k.incr_acked = 0;
                k.incr_doubt = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{classify, encode, Class};

    const K: u32 = 5;
    const T0: Duration = Duration::ZERO;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn read_at(model: &Model, seq: Option<u64>, now: Duration) -> Class {
        let ticket = model.begin_read(K, now);
        let key = b"k";
        let value = seq.map(|s| encode(key, model.owner(K), s, 4));
        let expect = model.finish_read(K, ticket, false, now);
        let (class, got) = classify(key, value.as_deref(), &expect);
        if let (Class::Ok | Class::NoAck, Some(s)) = (class, got) {
            model.observe(K, s);
        }
        class
    }

    fn read(model: &Model, seq: Option<u64>) -> Class {
        read_at(model, seq, T0)
    }

    fn set(m: &Model, outcome: WriteOutcome) -> u64 {
        let t = m.begin_write(K, WriteKind::Set { ttl: 0 }, T0);
        m.finish_write(K, t, outcome, T0);
        t.seq
    }

    #[test]
    fn ack_raises_the_floor() {
        let m = Model::new(10, 4, false);
        assert_eq!(read(&m, None), Class::NeverWritten);
        let t = m.begin_write(K, WriteKind::Set { ttl: 0 }, T0);
        assert_eq!(read(&m, Some(1)), Class::NoAck);
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        assert_eq!(read(&m, Some(1)), Class::Ok);
        assert_eq!(read(&m, None), Class::Stale);
        set(&m, WriteOutcome::Acked);
        assert_eq!(read(&m, Some(1)), Class::Stale);
        assert_eq!(
            read(&m, Some(3)),
            Class::Unexpected(crate::value::Unexpected::FutureSeq)
        );
    }

    #[test]
    fn an_ack_during_the_read_does_not_raise_its_floor() {
        let m = Model::new(10, 4, false);
        let t = m.begin_write(K, WriteKind::Set { ttl: 0 }, T0);
        let r = m.begin_read(K, T0);
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        let e = m.finish_read(K, r, false, T0);
        assert_eq!(classify(b"k", None, &e).0, Class::NeverWritten);
        let e = m.finish_read(K, m.begin_read(K, T0), false, T0);
        assert_eq!(classify(b"k", None, &e).0, Class::Stale);
    }

    #[test]
    fn a_value_once_read_never_goes_back_or_away() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::Acked);
        // Written, not yet acknowledged, but read: from now on the floor.
        let t = m.begin_write(K, WriteKind::Set { ttl: 0 }, T0);
        assert_eq!(read(&m, Some(2)), Class::NoAck);
        assert_eq!(read(&m, Some(1)), Class::Stale);
        assert_eq!(read(&m, None), Class::Stale);
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        assert_eq!(read(&m, Some(2)), Class::Ok);
    }

    #[test]
    fn a_read_in_flight_is_not_held_to_an_observation_made_after_it_was_sent() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::Acked);
        let _t = m.begin_write(K, WriteKind::Set { ttl: 0 }, T0);
        let early = m.begin_read(K, T0);
        assert_eq!(read(&m, Some(2)), Class::NoAck);
        let e = m.finish_read(K, early, false, T0);
        assert_eq!(
            classify(b"k", Some(&encode(b"k", 1, 1, 4)), &e).0,
            Class::Ok
        );
    }

    #[test]
    fn in_doubt_writes_may_land_late() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::InDoubt);
        set(&m, WriteOutcome::Acked);
        assert_eq!(read(&m, Some(1)), Class::NoAck);
        assert_eq!(read(&m, Some(2)), Class::Ok);
        // Even below an observed floor.
        assert_eq!(read(&m, Some(1)), Class::NoAck);
    }

    #[test]
    fn deletes_allow_misses_until_a_later_write_and_never_resurrect() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::Acked);
        let d = m.begin_write(K, WriteKind::Delete, T0);
        // In flight: either state may be read.
        assert_eq!(read(&m, None), Class::Absent);
        m.finish_write(K, d, WriteOutcome::Acked, T0);
        assert_eq!(read(&m, None), Class::Absent);
        // The deleted value must not come back.
        assert_eq!(read(&m, Some(1)), Class::Stale);
        set(&m, WriteOutcome::Acked);
        assert_eq!(read(&m, None), Class::Stale);
        assert_eq!(read(&m, Some(3)), Class::Ok);
    }

    #[test]
    fn a_failed_delete_explains_nothing_and_one_in_doubt_explains_a_late_miss() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::Acked);
        let d = m.begin_write(K, WriteKind::Delete, T0);
        m.finish_write(K, d, WriteOutcome::Failed, T0);
        assert_eq!(read(&m, None), Class::Stale);
        let d = m.begin_write(K, WriteKind::Delete, T0);
        m.finish_write(K, d, WriteOutcome::InDoubt, T0);
        set(&m, WriteOutcome::Acked);
        assert_eq!(read(&m, None), Class::Absent);
    }

    #[test]
    fn a_key_with_a_ttl_exists_until_it_expires() {
        let m = Model::new(10, 4, false);
        let t = m.begin_write(K, WriteKind::Set { ttl: 5 }, secs(10));
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        assert_eq!(read_at(&m, None, secs(11)), Class::Stale);
        assert_eq!(read_at(&m, None, secs(13)), Class::Stale);
        assert_eq!(read_at(&m, None, secs(14)), Class::Absent);
        assert!(m.expires(K));
        assert_eq!(m.latest_expiry(secs(11)), Some(secs(15)));
        // A touch at 12 s for 10 s keeps it until 22 s.
        let touch = m.begin_touch(K, 10, secs(12));
        assert_eq!(
            m.finish_touch(K, touch, TouchOutcome::Touched, secs(12)),
            None
        );
        assert_eq!(read_at(&m, None, secs(16)), Class::Stale);
        assert_eq!(read_at(&m, None, secs(21)), Class::Absent);
        // A set without a TTL: never expires.
        set(&m, WriteOutcome::Acked);
        assert!(!m.expires(K));
        assert_eq!(read_at(&m, None, secs(100)), Class::Stale);
    }

    #[test]
    fn a_read_sent_before_a_new_ttl_may_still_see_the_old_one_run_out() {
        let m = Model::new(10, 4, false);
        let t = m.begin_write(K, WriteKind::Set { ttl: 3 }, secs(0));
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        // Sent at 2 s, when the value may expire at 3 s; a write with a long TTL is acked
        // while the read is in flight, but the server may have read the key first.
        let r = m.begin_read(K, secs(2));
        let t = m.begin_write(K, WriteKind::Set { ttl: 8 }, secs(2));
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        let e = m.finish_read(K, r, false, secs(2));
        assert_eq!(classify(b"k", None, &e).0, Class::Absent);
        // A read sent after that is held to the new TTL.
        assert_eq!(read_at(&m, None, secs(3)), Class::Stale);
    }

    #[test]
    fn a_ttl_may_run_out_while_the_read_waits_for_its_reply() {
        let m = Model::new(10, 4, false);
        let t = m.begin_write(K, WriteKind::Set { ttl: 5 }, secs(0));
        m.finish_write(K, t, WriteOutcome::Acked, T0);
        // Sent at 1 s to a paused node, answered at 6 s: the key may have expired at 5 s.
        let r = m.begin_read(K, secs(1));
        let e = m.finish_read(K, r, false, secs(6));
        assert_eq!(classify(b"k", None, &e).0, Class::Absent);
        let r = m.begin_read(K, secs(1));
        let e = m.finish_read(K, r, false, secs(2));
        assert_eq!(classify(b"k", None, &e).0, Class::Stale);
    }

    #[test]
    fn a_touch_that_finds_nothing_is_judged_as_a_miss() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::Acked);
        let touch = m.begin_touch(K, 10, T0);
        let e = m
            .finish_touch(K, touch, TouchOutcome::NotFound, T0)
            .unwrap();
        assert_eq!(classify(b"k", None, &e).0, Class::Stale);
        // A touch in doubt may shorten nothing, but its TTL counts while it may land.
        let touch = m.begin_touch(K, 3, secs(1));
        assert_eq!(
            m.finish_touch(K, touch, TouchOutcome::InDoubt, secs(1)),
            None
        );
        assert_eq!(read_at(&m, None, secs(3)), Class::Absent);
    }

    #[test]
    fn a_crash_explains_misses_only_in_the_buckets_it_wiped() {
        let m = Model::new(10, 4, false).with_buckets((0..10).map(|i| i % 2).collect());
        for k in [4, 5] {
            let t = m.begin_write(k, WriteKind::Set { ttl: 0 }, T0);
            m.finish_write(k, t, WriteOutcome::Acked, T0);
        }
        m.crash_buckets(&[m.bucket(5)]);
        assert_eq!(read(&m, None), Class::Miss);
        let e = m.finish_read(4, m.begin_read(4, T0), false, T0);
        assert_eq!(classify(b"k", None, &e).0, Class::Stale);
        m.crash_buckets(&[]);
        let e = m.finish_read(4, m.begin_read(4, T0), false, T0);
        assert_eq!(classify(b"k", None, &e).0, Class::Stale);
    }

    #[test]
    fn after_a_crash_misses_are_allowed_until_a_new_write_is_acked() {
        let m = Model::new(10, 4, false);
        set(&m, WriteOutcome::Acked);
        let in_flight = m.begin_write(K, WriteKind::Set { ttl: 0 }, T0);
        m.crash_buckets(&[0]);
        assert_eq!(read(&m, None), Class::Miss);
        // Acknowledged by whichever process: proves nothing about the new one.
        m.finish_write(K, in_flight, WriteOutcome::Acked, T0);
        assert_eq!(read(&m, None), Class::Miss);
        // An old value may not come back.
        assert_eq!(read(&m, Some(1)), Class::Stale);
        set(&m, WriteOutcome::Acked);
        assert_eq!(read(&m, None), Class::Stale);
        assert_eq!(read(&m, Some(3)), Class::Ok);
    }

    #[test]
    fn counters() {
        let m = Model::new(10, 4, true);
        let a = m.begin_increment(K, 0);
        m.finish_increment(K, a, WriteOutcome::Acked);
        let b = m.begin_increment(K, 1);
        m.finish_increment(K, b, WriteOutcome::InDoubt);
        assert_eq!(m.counter_verdict(K, 1), CounterVerdict::default());
        assert_eq!(m.counter_verdict(K, 2), CounterVerdict::default());
        assert_eq!(m.counter_verdict(K, 0).lost, 1);
        assert_eq!(m.counter_verdict(K, 3).extra, 1);
        let e = m.finish_counter_read(K, m.begin_read(K, T0), false, T0);
        assert_eq!(
            classify(b"k", Some(&encode(b"k", 3, 1, 0)), &e).0,
            Class::Ok
        );
        assert_eq!(
            classify(b"k", Some(&encode(b"k", 3, 3, 0)), &e).0,
            Class::Unexpected(crate::value::Unexpected::FutureSeq)
        );
        m.crash_buckets(&[0]);
        assert_eq!(m.counter_verdict(K, 0), CounterVerdict::default());
    }
}
