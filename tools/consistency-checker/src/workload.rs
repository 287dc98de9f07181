//! The workload: worker tasks that read and write the key space at a steady rate, check every
//! read against the model, and the final quiescent read that gives the verdict.
//!
//! Worker `w` is the only writer of the keys `k` with `k % writers == w` (set mode), so each
//! key's writes go one at a time and its sequence numbers grow one by one. A write is a set,
//! sometimes a delete (`delete_fraction`); every `ttl_every`-th key is set with a TTL and
//! sometimes touched instead (`touch_fraction`). Every worker reads any key. Half of the
//! operations (by default) go to the hot set, the first `hot` keys. In check-and-set mode every
//! worker increments any key with a get / check-and-set loop instead of setting it.
//!
//! This module does not decide what a value means ([`value`](crate::value)) or what was
//! expected ([`model`](crate::model)); it moves bytes between them and the client, and counts.

use crate::availability::Availability;
use crate::backend::{hash_matches, Backend, Got, OpError};
use crate::model::{Keyspace, Model, TouchOutcome, WriteKind, WriteOutcome, TTL_SLACK};
use crate::report::{Clock, Counters, FinalRead, Latencies};
use crate::value::{classify, decode, encode, Class, DecodeError, Expect};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most check-and-set attempts per increment before giving up on it (counted as an error).
pub const MAX_CAS_ATTEMPTS: u32 = 32;

/// Keys per batch in the final read.
const FINAL_BATCH: usize = 100;

/// What the checker writes: sets with sequence numbers, or check-and-set increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One owning writer per key; each write sets the next sequence number.
    Set,
    /// Every writer increments any key through get / check-and-set loops.
    Cas,
}

impl Mode {
    /// `set` or `cas`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Set => "set",
            Mode::Cas => "cas",
        }
    }
}

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Keys and hot set.
    pub keyspace: Keyspace,
    /// Number of workers (writers).
    pub writers: u32,
    /// Target operations per second over all workers (0: as fast as they go).
    pub rate: f64,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Fraction of operations on the hot set.
    pub hot_fraction: f64,
    /// Payload sizes, drawn uniformly from this range.
    pub value_size: (usize, usize),
    /// Set or check-and-set.
    pub mode: Mode,
    /// Seed of the key and operation choices.
    pub seed: u64,
    /// Set mode: fraction of writes that delete the key.
    pub delete_fraction: f64,
    /// Set mode: every `ttl_every`-th key (`index % ttl_every == ttl_every - 1`) is written
    /// with a TTL (0: no key is).
    pub ttl_every: u32,
    /// TTLs in seconds, drawn uniformly from this range.
    pub ttl: (u32, u32),
    /// Set mode: fraction of writes of keys with a TTL that touch the key instead.
    pub touch_fraction: f64,
}

impl WorkloadSpec {
    /// Whether key `index` is written with a TTL.
    pub fn has_ttl(&self, index: u32) -> bool {
        self.mode == Mode::Set && self.ttl_every > 0 && index % self.ttl_every == self.ttl_every - 1
    }
}

/// What the workers share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The client.
    pub backend: Backend,
    /// Expectations.
    pub model: Arc<Model>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// The run's clock.
    pub clock: Clock,
    /// Set to stop the workers.
    pub stop: Arc<AtomicBool>,
    /// Set by the first violation when stopping on violations.
    pub violated: Arc<AtomicBool>,
    /// Whether a violation stops the run.
    pub stop_on_violation: bool,
    /// Set or check-and-set (which expectation a read is held to).
    pub mode: Mode,
    /// Per-fault unavailability: told of every success, by bucket.
    pub availability: Arc<Availability>,
}

impl Shared {
    /// Whether workers should stop: asked to, or (with `stop_on_violation`) a violation was
    /// seen. Stopping at once keeps the violating key as it was for the final read.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || (self.stop_on_violation && self.violated.load(Ordering::Relaxed))
    }

    /// Judges a read of key `index` sent with `ticket` that returned `read`.
    pub(crate) fn check(
        &self,
        index: u32,
        key: &[u8],
        read: Option<&Got>,
        ticket: crate::model::ReadTicket,
    ) {
        let expect = match self.mode {
            Mode::Set => self
                .model
                .finish_read(index, ticket, false, self.clock.elapsed()),
            Mode::Cas => self
                .model
                .finish_counter_read(index, ticket, false, self.clock.elapsed()),
        };
        self.judge(index, key, read, &expect);
    }

    /// Classifies a read against `expect`, counts it, and raises the key's observed floor
    /// when the value was allowed.
    fn judge(&self, index: u32, key: &[u8], read: Option<&Got>, expect: &Expect) {
        let (class, seq) = match read {
            Some(got) if !hash_matches(got) => (Class::Corrupt(DecodeError::BadHash), None),
            _ => classify(key, read.map(|g| g.value.as_slice()), expect),
        };
        if let (Class::Ok | Class::NoAck, Some(seq)) = (class, seq) {
            self.model.observe(index, seq);
        }
        if self.counters.record(class, key, seq, &expect.describe()) && self.stop_on_violation {
            self.violated.store(true, Ordering::SeqCst);
        }
    }
}

/// One worker's fixed choices.
struct Worker {
    id: u32,
    spec: WorkloadSpec,
    shared: Shared,
    rng: fastrand::Rng,
    lat: Latencies,
}

/// Runs worker `id` until `shared.stop` is set; returns its latency histograms.
pub async fn worker(id: u32, spec: WorkloadSpec, shared: Shared) -> Latencies {
    let rng = fastrand::Rng::with_seed(
        spec.seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut w = Worker {
        id,
        shared,
        rng,
        lat: Latencies::new(),
        spec,
    };
    let mut pace = if w.spec.rate > 0.0 {
        let per_worker = w.spec.rate / f64::from(w.spec.writers.max(1));
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / per_worker));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(i)
    } else {
        None
    };
    while !w.shared.stopping() {
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        if w.rng.f64() < w.spec.read_fraction {
            let k = w.any_key();
            w.read(k).await;
        } else {
            match w.spec.mode {
                Mode::Set => {
                    let k = w.owned_key();
                    if w.spec.has_ttl(k) && w.rng.f64() < w.spec.touch_fraction {
                        w.touch(k).await;
                    } else {
                        w.write(k).await;
                    }
                }
                Mode::Cas => {
                    let k = w.any_key();
                    w.increment(k).await;
                }
            }
        }
        if pace.is_none() {
            tokio::task::yield_now().await;
        }
    }
    w.lat
}

impl Worker {
    fn hot(&mut self) -> bool {
        self.rng.f64() < self.spec.hot_fraction
    }

    /// Any key: hot set or the rest.
    fn any_key(&mut self) -> u32 {
        let (n, hot) = (self.spec.keyspace.len(), self.spec.keyspace.hot());
        if hot == n || (hot > 0 && self.hot()) {
            self.rng.u32(..hot)
        } else {
            self.rng.u32(hot..n)
        }
    }

    /// A key this worker owns (set mode), from the hot set or the rest.
    fn owned_key(&mut self) -> u32 {
        let (n, hot) = (self.spec.keyspace.len(), self.spec.keyspace.hot());
        let (writers, id) = (self.spec.writers.max(1), self.id);
        let count_below = |limit: u32| {
            if id < limit {
                (limit - 1 - id) / writers + 1
            } else {
                0
            }
        };
        let (owned_hot, owned) = (count_below(hot), count_below(n));
        if owned == 0 {
            // More writers than keys: this worker owns nothing; read instead.
            return self.any_key();
        }
        let i = if owned_hot == owned || (owned_hot > 0 && self.hot()) {
            self.rng.u32(..owned_hot)
        } else {
            self.rng.u32(owned_hot..owned)
        };
        id + writers * i
    }

    fn payload_len(&mut self) -> usize {
        let (lo, hi) = self.spec.value_size;
        self.rng.usize(lo..=hi.max(lo))
    }

    /// Records a successful read or write of key `index` (for the unavailability measures).
    fn success(&self, index: u32, write: bool) {
        let now = self.shared.clock.elapsed();
        self.shared.counters.success(now);
        let bucket = self.shared.model.bucket(index);
        self.shared.availability.success(bucket, write, now);
    }

    fn now(&self) -> Duration {
        self.shared.clock.elapsed()
    }

    /// A TTL for key `index`: 0 unless it is a key with a TTL.
    fn ttl_for(&mut self, index: u32) -> u32 {
        if self.spec.has_ttl(index) {
            let (lo, hi) = self.spec.ttl;
            self.rng.u32(lo.max(1)..=hi.max(lo).max(1))
        } else {
            0
        }
    }

    async fn read(&mut self, index: u32) {
        let key = self.spec.keyspace.name(index);
        let ticket = self.shared.model.begin_read(index, self.now());
        let start = Instant::now();
        match self.shared.backend.get(&key).await {
            Ok(got) => {
                Latencies::record(&mut self.lat.read, start.elapsed());
                Counters::bump(&self.shared.counters.reads);
                self.success(index, false);
                self.shared.check(index, &key, got.as_ref(), ticket);
            }
            Err(_) => Counters::bump(&self.shared.counters.read_errors),
        }
    }

    async fn write(&mut self, index: u32) {
        let key = self.spec.keyspace.name(index);
        if self.shared.model.owner(index) != self.id {
            return;
        }
        let kind = if self.rng.f64() < self.spec.delete_fraction {
            WriteKind::Delete
        } else {
            WriteKind::Set {
                ttl: self.ttl_for(index),
            }
        };
        let ticket = self.shared.model.begin_write(index, kind, self.now());
        let start = Instant::now();
        let result = match kind {
            WriteKind::Set { ttl } => {
                let value = encode(&key, self.id, ticket.seq, self.payload_len());
                self.shared.backend.set(&key, value, ttl).await
            }
            // Deleting a key that is not there leaves it absent too.
            WriteKind::Delete => self.shared.backend.delete(&key).await.map(drop),
        };
        let outcome = self.write_outcome(index, result, start);
        self.shared
            .model
            .finish_write(index, ticket, outcome, self.now());
    }

    /// Counts how a write ended and says what it means for the model.
    fn write_outcome(
        &mut self,
        index: u32,
        result: Result<(), OpError>,
        start: Instant,
    ) -> WriteOutcome {
        match result {
            Ok(()) => {
                Latencies::record(&mut self.lat.write, start.elapsed());
                Counters::bump(&self.shared.counters.writes);
                self.success(index, true);
                WriteOutcome::Acked
            }
            Err(OpError::InDoubt(_)) => {
                Counters::bump(&self.shared.counters.in_doubt);
                WriteOutcome::InDoubt
            }
            Err(_) => {
                Counters::bump(&self.shared.counters.write_errors);
                WriteOutcome::Failed
            }
        }
    }

    /// Touches a key with a TTL (set mode, its owner only). A touch that finds no key is
    /// judged like a miss.
    async fn touch(&mut self, index: u32) {
        let key = self.spec.keyspace.name(index);
        let ttl = self.ttl_for(index);
        let ticket = self.shared.model.begin_touch(index, ttl, self.now());
        let start = Instant::now();
        let result = self.shared.backend.touch(&key, ttl).await;
        let found = matches!(result, Ok(true));
        let outcome = match self.write_outcome(index, result.map(drop), start) {
            WriteOutcome::Acked if found => TouchOutcome::Touched,
            WriteOutcome::Acked => TouchOutcome::NotFound,
            WriteOutcome::InDoubt => TouchOutcome::InDoubt,
            WriteOutcome::Failed => TouchOutcome::Failed,
        };
        if let Some(expect) = self
            .shared
            .model
            .finish_touch(index, ticket, outcome, self.now())
        {
            self.shared.judge(index, &key, None, &expect);
        }
    }

    /// One increment through a get / check-and-set loop (ADD when the key is missing).
    async fn increment(&mut self, index: u32) {
        let key = self.spec.keyspace.name(index);
        let start = Instant::now();
        let c = self.shared.counters.clone();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let read_ticket = self.shared.model.begin_read(index, self.now());
            let got = match self.shared.backend.get(&key).await {
                Ok(got) => got,
                Err(_) => {
                    Counters::bump(&c.read_errors);
                    return;
                }
            };
            Counters::bump(&c.reads);
            self.success(index, false);
            self.shared.check(index, &key, got.as_ref(), read_ticket);
            let (from, hash) = match &got {
                None => (0, None),
                Some(g) => match decode(&g.value) {
                    Ok(v) if v.key == key => (v.seq, Some(g.hash)),
                    // Already counted as corrupt or unexpected by the check above.
                    _ => return,
                },
            };
            let ticket = self.shared.model.begin_increment(index, from);
            let value = encode(&key, self.id, ticket.seq, self.payload_len());
            let result = match hash {
                None => self.shared.backend.add(&key, value, 0).await,
                Some(h) => self.shared.backend.cas(&key, value, h, 0).await,
            };
            let (outcome, done) = match result {
                Ok(()) => {
                    Latencies::record(&mut self.lat.write, start.elapsed());
                    Counters::bump(&c.writes);
                    self.success(index, true);
                    (WriteOutcome::Acked, true)
                }
                Err(OpError::Conflict | OpError::NotStored | OpError::NotFound) => {
                    Counters::bump(&c.conflicts);
                    (WriteOutcome::Failed, false)
                }
                Err(OpError::InDoubt(_)) => {
                    Counters::bump(&c.in_doubt);
                    (WriteOutcome::InDoubt, true)
                }
                Err(OpError::Failed(_)) => {
                    Counters::bump(&c.write_errors);
                    (WriteOutcome::Failed, true)
                }
            };
            self.shared.model.finish_increment(index, ticket, outcome);
            if done || self.shared.stopping() {
                return;
            }
        }
        Counters::bump(&c.write_errors);
    }
}

/// Reads `keys` with one multi-get, retrying until `deadline`; `None` when it never worked.
async fn read_batch(
    backend: &Backend,
    keys: &[Vec<u8>],
    deadline: Instant,
) -> Option<Vec<Option<Got>>> {
    loop {
        match backend.get_many(keys).await {
            Ok(got) if got.len() == keys.len() => return Some(got),
            _ if Instant::now() >= deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads every key once, after the faults and the workload have stopped, and classifies it
/// as the verdict. Batches that fail are retried until `patience` runs out; keys that could
/// not be read are `unverified`.
pub async fn final_read(
    backend: &Backend,
    model: &Model,
    keyspace: &Keyspace,
    mode: Mode,
    counters: &Counters,
    clock: Clock,
    patience: Duration,
) -> FinalRead {
    let mut result = FinalRead::default();
    let indices: Vec<u32> = (0..keyspace.len()).collect();
    let deadline = Instant::now() + patience;
    for batch in indices.chunks(FINAL_BATCH) {
        let keys: Vec<Vec<u8>> = batch.iter().map(|&i| keyspace.name(i)).collect();
        let sent = clock.elapsed();
        let Some(got) = read_batch(backend, &keys, deadline).await else {
            result.keys += batch.len() as u64;
            result.unverified += batch.len() as u64;
            eprintln!(
                "final read: {} keys could not be read (from {})",
                batch.len(),
                String::from_utf8_lossy(&keys[0])
            );
            continue;
        };
        let answered = clock.elapsed();
        for ((&index, key), item) in batch.iter().zip(&keys).zip(&got) {
            let ticket = model.begin_read(index, sent);
            let value = item.as_ref().map(|g| g.value.as_slice());
            let expect = match mode {
                Mode::Set => model.finish_read(index, ticket, true, answered),
                Mode::Cas => model.finish_counter_read(index, ticket, true, answered),
            };
            let (mut class, seq) = match item {
                Some(got) if !hash_matches(got) => (Class::Corrupt(DecodeError::BadHash), None),
                _ => classify(key, value, &expect),
            };
            if mode == Mode::Cas && matches!(class, Class::Ok | Class::NoAck | Class::Miss) {
                let verdict = model.counter_verdict(index, seq.unwrap_or(0));
                if verdict.lost > 0 {
                    counters
                        .lost_increments
                        .fetch_add(verdict.lost, Ordering::Relaxed);
                    class = Class::Lost;
                }
            }
            let detail = format!("final read; {}", expect.describe());
            counters.record(class, key, seq, &detail);
            result.count(class);
        }
    }
    result.finish();
    result
}

/// After the final read: waits until every TTL sent has run out (plus [`TTL_SLACK`]), then
/// reads every key whose latest value had a TTL. Each must be gone; a value still there is
/// EXPIRED. Returns how many keys were checked and how many were still there.
pub async fn final_ttl_check(
    backend: &Backend,
    model: &Model,
    keyspace: &Keyspace,
    counters: &Counters,
    clock: Clock,
    patience: Duration,
) -> (u64, u64) {
    let Some(latest) = model.latest_expiry(clock.elapsed()) else {
        return (0, 0);
    };
    let wait = (latest + TTL_SLACK).saturating_sub(clock.elapsed());
    tokio::time::sleep(wait).await;
    let indices: Vec<u32> = (0..keyspace.len()).filter(|&i| model.expires(i)).collect();
    let (mut checked, mut still_there) = (0, 0);
    let deadline = Instant::now() + patience;
    for batch in indices.chunks(FINAL_BATCH) {
        let keys: Vec<Vec<u8>> = batch.iter().map(|&i| keyspace.name(i)).collect();
        let Some(got) = read_batch(backend, &keys, deadline).await else {
            eprintln!("final TTL check: {} keys could not be read", batch.len());
            continue;
        };
        for (key, item) in keys.iter().zip(&got) {
            checked += 1;
            if let Some(g) = item {
                still_there += 1;
                let seq = decode(&g.value).ok().map(|v| v.seq);
                counters.record(Class::Expired, key, seq, "every TTL sent had run out");
            }
        }
    }
    (checked, still_there)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: u32, writers: u32) -> Worker {
        let spec = WorkloadSpec {
            keyspace: Keyspace::new("t", 100, 10),
            writers,
            rate: 0.0,
            read_fraction: 0.5,
            hot_fraction: 0.5,
            value_size: (1, 8),
            mode: Mode::Set,
            seed: 1,
            delete_fraction: 0.0,
            ttl_every: 0,
            ttl: (1, 1),
            touch_fraction: 0.0,
        };
        let backend = Backend::new(
            crate::backend::ClientKind::Rust,
            &crate::backend::ClientSettings {
                servers: vec!["127.0.0.1:1".into()],
                memcache_servers: Vec::new(),
                request_timeout: Duration::from_millis(10),
                deadline: Duration::from_millis(10),
            },
        )
        .unwrap();
        Worker {
            id,
            shared: Shared {
                backend,
                model: Arc::new(Model::new(100, writers, false)),
                counters: Arc::default(),
                clock: Clock::start(),
                stop: Arc::default(),
                violated: Arc::default(),
                stop_on_violation: false,
                mode: Mode::Set,
                availability: Arc::new(Availability::new(1)),
            },
            rng: fastrand::Rng::with_seed(u64::from(id)),
            lat: Latencies::new(),
            spec,
        }
    }

    #[test]
    fn workers_pick_only_their_own_keys_and_half_from_the_hot_set() {
        for writers in [1, 3, 7, 16] {
            for id in 0..writers {
                let mut w = worker(id, writers);
                let mut hot = 0;
                for _ in 0..2000 {
                    let k = w.owned_key();
                    assert!(k < 100);
                    assert_eq!(k % writers, id);
                    hot += u32::from(k < 10);
                }
                if 10 > id {
                    assert!(
                        (800..1200).contains(&hot),
                        "writers {writers} id {id}: {hot}"
                    );
                }
            }
        }
    }

    #[test]
    fn any_key_covers_the_space() {
        let mut w = worker(0, 4);
        let mut seen = [false; 100];
        for _ in 0..20_000 {
            seen[w.any_key() as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
