//! What the checker knows about every key: the per-key expectations that reads are judged by.
//!
//! In set mode each key has one owning writer (`key % writers`), so its sequence numbers grow
//! one by one and the model only has to remember, per key, the highest sequence number
//! acknowledged, the highest one sent, the few whose writes ended in doubt, and whether a miss
//! is currently allowed. In check-and-set mode every writer may increment every key; the model
//! counts acknowledged and in-doubt increments instead.
//!
//! Crashes: the nemesis calls [`Model::crash`] after it has killed the only copy of the data
//! (and reaped the process) and before it starts it again. From then on a miss is allowed for
//! every key until a write *sent after the crash* is acknowledged; a write sent before it may
//! have been acknowledged by the dead process, so its acknowledgement proves nothing about the
//! new one. Present values are still held to the floor: the restarted node can only hold values
//! written to it, and those are never older than the last acknowledgement.
//!
//! This module has no I/O and no clock; [`value`](crate::value) turns an [`Expect`] and the
//! bytes read into a verdict.

use crate::value::Expect;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// How many in-doubt sequence numbers are remembered per key (the most recent ones).
pub const MAX_DOUBT: usize = 8;

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

/// Proof that a write was registered with the model; hand it back to [`Model::finish_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicket {
    /// The sequence number (the new counter value in check-and-set mode) being written.
    pub seq: u64,
    /// The crash epoch when the write was sent.
    epoch: u64,
}

/// Taken when a read is sent; hand it back to [`Model::finish_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTicket {
    floor: u64,
    miss_ok: bool,
    ever_acked: bool,
}

/// One key's expectations.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// Highest acknowledged sequence number (set mode) or counter value (check-and-set mode).
    acked: u64,
    /// Highest sequence number sent (set mode).
    attempted: u64,
    /// Whether anything was ever acknowledged.
    ever_acked: bool,
    /// A miss is allowed (see the module documentation).
    miss_ok: bool,
    /// The last few in-doubt sequence numbers.
    doubt: Vec<u64>,
    /// Check-and-set mode: increments acknowledged since the last crash.
    incr_acked: u64,
    /// Check-and-set mode: increments in doubt since the last crash (including those sent
    /// before it and acknowledged after it).
    incr_doubt: u64,
    /// Check-and-set mode: increments sent and not yet answered.
    incr_inflight: u64,
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
    writers: u32,
    /// Check-and-set mode: keys hold counters.
    counters: bool,
    /// Incremented by every crash; writes remember the epoch they were sent in.
    epoch: AtomicU64,
}

impl Model {
    /// A model of `keys` keys written by `writers` writers, nothing written yet; `counters`
    /// selects check-and-set mode.
    pub fn new(keys: u32, writers: u32, counters: bool) -> Self {
        let fresh = KeyState {
            miss_ok: true,
            ..KeyState::default()
        };
        Self {
            keys: (0..keys).map(|_| Mutex::new(fresh.clone())).collect(),
            writers: writers.max(1),
            counters,
            epoch: AtomicU64::new(0),
        }
    }

    /// The writer that owns key `index` in set mode.
    pub fn owner(&self, index: u32) -> u32 {
        index % self.writers
    }

    /// Number of writers.
    pub fn writers(&self) -> u32 {
        self.writers
    }

    /// Number of crashes recorded.
    pub fn crashes(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn key(&self, index: u32) -> MutexGuard<'_, KeyState> {
        let slot = &self.keys[index as usize % self.keys.len().max(1)];
        slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the next write of key `index` (set mode; only its owner may call this).
    pub fn begin_write(&self, index: u32) -> WriteTicket {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut k = self.key(index);
        k.attempted += 1;
        WriteTicket {
            seq: k.attempted,
            epoch,
        }
    }

    /// Records how a write registered by [`Model::begin_write`] ended.
    pub fn finish_write(&self, index: u32, ticket: WriteTicket, outcome: WriteOutcome) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut k = self.key(index);
        match outcome {
            WriteOutcome::Acked => {
                k.acked = k.acked.max(ticket.seq);
                k.ever_acked = true;
                if ticket.epoch == epoch {
                    k.miss_ok = false;
                }
            }
            WriteOutcome::InDoubt => {
                if k.doubt.len() == MAX_DOUBT {
                    k.doubt.remove(0);
                }
                k.doubt.push(ticket.seq);
            }
            WriteOutcome::Failed => {}
        }
    }

    /// Registers an increment of key `index` from counter value `from` (check-and-set mode).
    pub fn begin_increment(&self, index: u32, from: u64) -> WriteTicket {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.key(index).incr_inflight += 1;
        WriteTicket {
            seq: from + 1,
            epoch,
        }
    }

    /// Records how an increment ended. A conflict is [`WriteOutcome::Failed`].
    pub fn finish_increment(&self, index: u32, ticket: WriteTicket, outcome: WriteOutcome) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut k = self.key(index);
        k.incr_inflight = k.incr_inflight.saturating_sub(1);
        match outcome {
            WriteOutcome::Acked if ticket.epoch == epoch => {
                k.incr_acked += 1;
                k.acked = k.acked.max(ticket.seq);
                k.ever_acked = true;
                k.miss_ok = false;
            }
            // Sent before a crash, answered after it: by the old process or the new one.
            WriteOutcome::Acked | WriteOutcome::InDoubt => {
                k.incr_doubt += 1;
                k.ever_acked = true;
            }
            WriteOutcome::Failed => {}
        }
    }

    /// Call when a read of key `index` is sent.
    pub fn begin_read(&self, index: u32) -> ReadTicket {
        let k = self.key(index);
        ReadTicket {
            floor: k.acked,
            miss_ok: k.miss_ok,
            ever_acked: k.ever_acked,
        }
    }

    /// Call when the reply to a read arrives: what the value must be (set mode).
    /// `verdict` marks the final, quiescent read.
    pub fn finish_read(&self, index: u32, ticket: ReadTicket, verdict: bool) -> Expect {
        let k = self.key(index);
        Expect {
            owner: Some(self.owner(index)),
            writers: self.writers,
            floor: ticket.floor,
            acked: k.acked,
            attempted: k.attempted,
            miss_ok: ticket.miss_ok || k.miss_ok,
            ever_acked: ticket.ever_acked,
            doubt: k.doubt.clone(),
            verdict,
        }
    }

    /// Like [`Model::finish_read`] for check-and-set mode: any writer, and the counter may be
    /// anywhere from the floor up to every increment acknowledged, in doubt or in flight.
    pub fn finish_counter_read(&self, index: u32, ticket: ReadTicket, verdict: bool) -> Expect {
        let k = self.key(index);
        let ceiling = k.incr_acked + k.incr_doubt + k.incr_inflight;
        Expect {
            owner: None,
            writers: self.writers,
            floor: ticket.floor,
            acked: ceiling,
            attempted: ceiling,
            miss_ok: ticket.miss_ok || k.miss_ok,
            ever_acked: ticket.ever_acked,
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

    /// Records a crash of the only copy of the data: from now on every key may read as a miss
    /// until a write sent after this call is acknowledged. Check-and-set counters start again
    /// from zero (their floor and increment counts are reset).
    pub fn crash(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for slot in &self.keys {
            let mut k = slot.lock().unwrap_or_else(|e| e.into_inner());
            k.miss_ok = true;
            if self.counters {
                k.acked = 0;
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

    fn read(model: &Model, seq: Option<u64>) -> Class {
        let ticket = model.begin_read(K);
        let key = b"k";
        let value = seq.map(|s| encode(key, model.owner(K), s, 4));
        let expect = model.finish_read(K, ticket, false);
        classify(key, value.as_deref(), &expect).0
    }

    #[test]
    fn ack_raises_the_floor() {
        let m = Model::new(10, 4, false);
        assert_eq!(read(&m, None), Class::NeverWritten);
        let t = m.begin_write(K);
        assert_eq!(read(&m, Some(1)), Class::NoAck);
        m.finish_write(K, t, WriteOutcome::Acked);
        assert_eq!(read(&m, Some(1)), Class::Ok);
        assert_eq!(read(&m, None), Class::Stale);
        let t2 = m.begin_write(K);
        m.finish_write(K, t2, WriteOutcome::Acked);
        assert_eq!(read(&m, Some(1)), Class::Stale);
        assert_eq!(
            read(&m, Some(3)),
            Class::Unexpected(crate::value::Unexpected::FutureSeq)
        );
    }

    #[test]
    fn an_ack_during_the_read_does_not_raise_its_floor() {
        let m = Model::new(10, 4, false);
        let t = m.begin_write(K);
        let r = m.begin_read(K);
        m.finish_write(K, t, WriteOutcome::Acked);
        let e = m.finish_read(K, r, false);
        assert_eq!(classify(b"k", None, &e).0, Class::NeverWritten);
        let e = m.finish_read(K, m.begin_read(K), false);
        assert_eq!(classify(b"k", None, &e).0, Class::Stale);
    }

    #[test]
    fn in_doubt_writes_may_land_late() {
        let m = Model::new(10, 4, false);
        let t1 = m.begin_write(K);
        m.finish_write(K, t1, WriteOutcome::InDoubt);
        let t2 = m.begin_write(K);
        m.finish_write(K, t2, WriteOutcome::Acked);
        assert_eq!(read(&m, Some(1)), Class::NoAck);
        assert_eq!(read(&m, Some(2)), Class::Ok);
    }

    #[test]
    fn after_a_crash_misses_are_allowed_until_a_new_write_is_acked() {
        let m = Model::new(10, 4, false);
        let t1 = m.begin_write(K);
        m.finish_write(K, t1, WriteOutcome::Acked);
        let in_flight = m.begin_write(K);
        m.crash();
        assert_eq!(read(&m, None), Class::Miss);
        // Acknowledged by whichever process: proves nothing about the new one.
        m.finish_write(K, in_flight, WriteOutcome::Acked);
        assert_eq!(read(&m, None), Class::Miss);
        // An old value may not come back.
        assert_eq!(read(&m, Some(1)), Class::Stale);
        let t3 = m.begin_write(K);
        m.finish_write(K, t3, WriteOutcome::Acked);
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
        let e = m.finish_counter_read(K, m.begin_read(K), false);
        assert_eq!(
            classify(b"k", Some(&encode(b"k", 3, 1, 0)), &e).0,
            Class::Ok
        );
        assert_eq!(
            classify(b"k", Some(&encode(b"k", 3, 3, 0)), &e).0,
            Class::Unexpected(crate::value::Unexpected::FutureSeq)
        );
        m.crash();
        assert_eq!(m.counter_verdict(K, 0), CounterVerdict::default());
    }
}
