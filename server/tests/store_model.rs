//! Model-based tests: random sequences of every store operation, with TTLs on a manual clock,
//! give the same results as a plain `HashMap` model (memory never fills there); and a bucket
//! copied to another store by snapshot plus change log equals the original at every
//! checkpoint (with eviction, expiry, flush, cap overruns, duplicates and re-reads).

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use shoal_proto::hash::value_hash;
use shoald::store::{
    ChangeLogError, Clock, ManualClock, OwnedItem, SetMode, Store, StoreConfig, StoreError, WriteOk,
};

#[derive(Debug, Clone)]
enum Op {
    Get(usize),
    GetAndTouch(usize, u32),
    Set(u8, usize, Vec<u8>, u32, u32),
    CasRight(usize, Vec<u8>),
    CasWrong(usize, Vec<u8>),
    Append(usize, Vec<u8>),
    Prepend(usize, Vec<u8>),
    Delete(usize, u8),
    Touch(usize, u32),
    Incr(usize, u64, bool, bool),
    Insert(usize, Vec<u8>, u64, u32),
    Advance(u32),
    Crawl(usize),
    RemoveBucket(usize),
    FlushAll,
}

const KEYS: [&[u8]; 8] = [
    b"a",
    b"bb",
    b"key-c",
    b"d",
    b"counter",
    b"n2",
    b"long-key-name-g",
    b"h",
];

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        (0u64..1000).prop_map(|n| n.to_string().into_bytes()),
        Just(b"18446744073709551615".to_vec()),
        proptest::collection::vec(any::<u8>(), 16_000..17_000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let ttl = prop_oneof![Just(0u32), 1u32..6];
    prop_oneof![
        4 => k.clone().prop_map(Op::Get),
        1 => (k.clone(), ttl.clone()).prop_map(|(k, t)| Op::GetAndTouch(k, t)),
        4 => (0u8..3, k.clone(), value(), any::<u32>(), ttl.clone()).prop_map(|(m, k, v, f, t)| Op::Set(m, k, v, f, t)),
        1 => (k.clone(), value()).prop_map(|(k, v)| Op::CasRight(k, v)),
        1 => (k.clone(), value()).prop_map(|(k, v)| Op::CasWrong(k, v)),
        1 => (k.clone(), value()).prop_map(|(k, v)| Op::Append(k, v)),
        1 => (k.clone(), value()).prop_map(|(k, v)| Op::Prepend(k, v)),
        1 => (k.clone(), 0u8..3).prop_map(|(k, h)| Op::Delete(k, h)),
        1 => (k.clone(), ttl.clone()).prop_map(|(k, t)| Op::Touch(k, t)),
        2 => (k.clone(), prop_oneof![0u64..10, Just(u64::MAX)], any::<bool>(), any::<bool>()).prop_map(|(k, d, dec, c)| Op::Incr(k, d, dec, c)),
        1 => (k.clone(), value(), 1u64..50, ttl.clone()).prop_map(|(k, v, s, t)| Op::Insert(k, v, s, t)),
        1 => (0u32..4).prop_map(Op::Advance),
        1 => (1usize..64).prop_map(Op::Crawl),
        1 => k.clone().prop_map(Op::RemoveBucket),
        1 => Just(Op::FlushAll),
    ]
}

#[derive(Debug, Clone)]
struct Item {
    value: Vec<u8>,
    flags: u32,
    expiry: u32,
    hash: u64,
    seq: u64,
}

#[derive(Default)]
struct Model {
    items: HashMap<Vec<u8>, Item>,
    seqs: HashMap<u32, u64>,
    now: u32,
}

impl Model {
    fn live(&mut self, key: &[u8]) -> Option<&mut Item> {
        let now = self.now;
        if self
            .items
            .get(key)
            .is_some_and(|i| i.expiry != 0 && now >= i.expiry)
        {
            self.items.remove(key);
        }
        self.items.get_mut(key)
    }

    fn next_seq(&mut self, bucket: u32) -> u64 {
        let seq = self.seqs.entry(bucket).or_default();
        *seq += 1;
        *seq
    }

    fn expiry(&self, ttl: u32) -> u32 {
        if ttl == 0 {
            0
        } else {
            self.now + ttl
        }
    }

    fn write(
        &mut self,
        bucket: u32,
        key: &[u8],
        value: Vec<u8>,
        flags: u32,
        expiry: u32,
    ) -> WriteOk {
        let seq = self.seqs.entry(bucket).or_default();
        *seq += 1;
        let hash = value_hash(&value);
        let seq = *seq;
        self.items.insert(
            key.to_vec(),
            Item {
                value,
                flags,
                expiry,
                hash,
                seq,
            },
        );
        WriteOk { hash, seq }
    }
}

type Outcome = Result<String, StoreError>;

fn show(item: &Item, now: u32) -> String {
    let ttl = (item.expiry != 0).then(|| item.expiry - now);
    format!(
        "{:?}/{}/{:x}/{}/{:?}",
        item.value, item.flags, item.hash, item.seq, ttl
    )
}

fn apply_store(store: &Store, clock: &ManualClock, op: &Op, model_hash: Option<u64>) -> Outcome {
    let show_ref = |i: shoald::store::ItemRef<'_>| {
        format!(
            "{:?}/{}/{:x}/{}/{:?}",
            i.value_vec(),
            i.flags(),
            i.hash(),
            i.seq(),
            i.ttl_remaining()
        )
    };
    match op {
        Op::Get(k) => store.get(KEYS[*k], show_ref).ok_or(StoreError::NotFound),
        Op::GetAndTouch(k, t) => store
            .get_and_touch(KEYS[*k], *t, show_ref)
            .ok_or(StoreError::NotFound),
        Op::Set(m, k, v, f, t) => {
            let mode = [SetMode::Set, SetMode::Add, SetMode::Replace][*m as usize];
            store
                .set(mode, KEYS[*k], v, *f, *t)
                .map(|ok| format!("{ok:?}"))
        }
        Op::CasRight(k, v) => store
            .set(SetMode::Cas(model_hash.unwrap_or(1)), KEYS[*k], v, 1, 0)
            .map(|ok| format!("{ok:?}")),
        Op::CasWrong(k, v) => store
            .set(
                SetMode::Cas(model_hash.unwrap_or(1) ^ 0x55),
                KEYS[*k],
                v,
                1,
                0,
            )
            .map(|ok| format!("{ok:?}")),
        Op::Append(k, v) => store.append(KEYS[*k], v).map(|ok| format!("{ok:?}")),
        Op::Prepend(k, v) => store.prepend(KEYS[*k], v).map(|ok| format!("{ok:?}")),
        Op::Delete(k, h) => {
            let expected = match h {
                0 => None,
                1 => Some(model_hash.unwrap_or(1)),
                _ => Some(model_hash.unwrap_or(1) ^ 0x55),
            };
            store.delete(KEYS[*k], expected).map(|seq| seq.to_string())
        }
        Op::Touch(k, t) => store.touch(KEYS[*k], *t).map(|seq| seq.to_string()),
        Op::Incr(k, d, dec, c) => store
            .incr(KEYS[*k], *d, *dec, c.then_some((7, 3)))
            .map(|(n, ok)| format!("{n}/{ok:?}")),
        Op::Insert(k, v, s, t) => {
            let item = OwnedItem {
                key: KEYS[*k].to_vec(),
                value: v.clone(),
                flags: 2,
                hash: value_hash(v),
                seq: *s,
                expires_at: if *t == 0 {
                    0
                } else {
                    clock.wall() + u64::from(*t)
                },
            };
            store.insert_item(&item.as_record()).map(|()| String::new())
        }
        Op::Advance(s) => {
            clock.advance(*s);
            Ok(String::new())
        }
        Op::Crawl(b) => {
            store.crawl_expired(*b);
            Ok(String::new())
        }
        Op::RemoveBucket(k) => {
            store.remove_bucket(store.bucket_of(KEYS[*k]));
            Ok(String::new())
        }
        Op::FlushAll => {
            store.flush_all();
            Ok(String::new())
        }
    }
}

fn apply_model(model: &mut Model, store: &Store, op: &Op) -> Outcome {
    let bucket = |k: usize| store.bucket_of(KEYS[k]);
    let now = model.now;
    let concat = |model: &mut Model, k: usize, v: &[u8], front: bool| -> Outcome {
        let item = model.live(KEYS[k]).ok_or(StoreError::NotStored)?.clone();
        let value = if front {
            [v, &item.value].concat()
        } else {
            [&item.value[..], v].concat()
        };
        if value.len() > store.config().max_value {
            return Err(StoreError::TooLarge);
        }
        Ok(format!(
            "{:?}",
            model.write(bucket(k), KEYS[k], value, item.flags, item.expiry)
        ))
    };
    match op {
        Op::Get(k) => model
            .live(KEYS[*k])
            .map(|i| show(i, now))
            .ok_or(StoreError::NotFound),
        Op::GetAndTouch(k, t) => {
            let expiry = model.expiry(*t);
            model.live(KEYS[*k]).ok_or(StoreError::NotFound)?;
            let seq = model.next_seq(bucket(*k));
            let item = model.live(KEYS[*k]).ok_or(StoreError::NotFound)?;
            item.expiry = expiry;
            item.seq = seq;
            Ok(show(item, now))
        }
        Op::Set(m, k, v, f, t) => {
            let exists = model.live(KEYS[*k]).is_some();
            match (m, exists) {
                (1, true) | (2, false) => Err(StoreError::NotStored),
                _ => {
                    let expiry = model.expiry(*t);
                    Ok(format!(
                        "{:?}",
                        model.write(bucket(*k), KEYS[*k], v.clone(), *f, expiry)
                    ))
                }
            }
        }
        Op::CasRight(k, v) | Op::CasWrong(k, v) => {
            model.live(KEYS[*k]).ok_or(StoreError::NotFound)?;
            if matches!(op, Op::CasWrong(..)) {
                return Err(StoreError::Exists);
            }
            Ok(format!(
                "{:?}",
                model.write(bucket(*k), KEYS[*k], v.clone(), 1, 0)
            ))
        }
        Op::Append(k, v) => concat(model, *k, v, false),
        Op::Prepend(k, v) => concat(model, *k, v, true),
        Op::Delete(k, h) => {
            model.live(KEYS[*k]).ok_or(StoreError::NotFound)?;
            if *h == 2 {
                return Err(StoreError::Exists);
            }
            model.items.remove(KEYS[*k]);
            let seq = model.seqs.entry(bucket(*k)).or_default();
            *seq += 1;
            Ok(seq.to_string())
        }
        Op::Touch(k, t) => {
            let expiry = model.expiry(*t);
            model.live(KEYS[*k]).ok_or(StoreError::NotFound)?;
            let seq = model.next_seq(bucket(*k));
            let item = model.live(KEYS[*k]).ok_or(StoreError::NotFound)?;
            item.expiry = expiry;
            item.seq = seq;
            Ok(seq.to_string())
        }
        Op::Incr(k, d, dec, c) => match model.live(KEYS[*k]).cloned() {
            None if *c => {
                let expiry = model.expiry(3);
                let ok = model.write(bucket(*k), KEYS[*k], b"7".to_vec(), 0, expiry);
                Ok(format!("7/{ok:?}"))
            }
            None => Err(StoreError::NotFound),
            Some(item) => {
                let text = std::str::from_utf8(&item.value).map_err(|_| StoreError::NonNumeric)?;
                if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(StoreError::NonNumeric);
                }
                let n: u64 = text.parse().map_err(|_| StoreError::NonNumeric)?;
                let new = if *dec {
                    n.saturating_sub(*d)
                } else {
                    n.wrapping_add(*d)
                };
                let ok = model.write(
                    bucket(*k),
                    KEYS[*k],
                    new.to_string().into_bytes(),
                    item.flags,
                    item.expiry,
                );
                Ok(format!("{new}/{ok:?}"))
            }
        },
        Op::Insert(k, v, s, t) => {
            let expiry = model.expiry(*t);
            let seq = model.seqs.entry(bucket(*k)).or_default();
            *seq = (*seq).max(*s);
            if model.live(KEYS[*k]).is_some_and(|i| i.seq > *s) {
                return Ok(String::new());
            }
            model.items.insert(
                KEYS[*k].to_vec(),
                Item {
                    value: v.clone(),
                    flags: 2,
                    expiry,
                    hash: value_hash(v),
                    seq: *s,
                },
            );
            Ok(String::new())
        }
        Op::Advance(s) => {
            model.now += s;
            Ok(String::new())
        }
        Op::Crawl(_) => Ok(String::new()),
        Op::RemoveBucket(k) => {
            let b = bucket(*k);
            model.items.retain(|key, _| store.bucket_of(key) != b);
            model.next_seq(b);
            Ok(String::new())
        }
        Op::FlushAll => {
            model.items.clear();
            for b in 0..store.buckets() {
                model.next_seq(b);
            }
            Ok(String::new())
        }
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        memory: 4 << 20,
        page_size: 64 << 10,
        buckets: 4,
        max_value: 40 << 10,
        ..StoreConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_hashmap_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::with_clock(config(), clock.clone()).expect("config");
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let key_hash = match op {
                Op::CasRight(k, _) | Op::CasWrong(k, _) | Op::Delete(k, _) => {
                    model.live(KEYS[*k]).map(|i| i.hash)
                }
                _ => None,
            };
            let want = apply_model(&mut model, &store, op);
            let got = apply_store(&store, &clock, op, key_hash);
            prop_assert_eq!(&got, &want, "step {} op {:?}", step, op);
        }
        let stats = store.stats();
        let live = KEYS.iter().filter(|k| model.live(k).is_some()).count() as u64;
        prop_assert!(stats.items >= live);
        prop_assert_eq!(stats.evictions, 0);
    }
}

// ---- replication model: store A, and a copy of one of its buckets on store B ----
//
// Random interleavings of every operation on A (expiry on a shared manual clock, eviction
// pressure in a tiny memory, flush, remove_bucket). One bucket of A is copied to B the way a
// bucket move does it: change log started, snapshot (read after some of A's operations),
// inserted into a hidden bucket, then the log applied in batches, with duplicates and
// re-reads. At every checkpoint B's bucket equals A's. A reader that falls behind the
// log's cap is told so (`Behind`) and copies again; a silent gap would show as a difference.

/// Keys spread over the 4 buckets; the copied bucket is the bucket of `rkey(0)`.
const RKEYS: usize = 32;

fn rkey(i: usize) -> Vec<u8> {
    format!("r{i}").into_bytes()
}

#[derive(Debug, Clone)]
enum AOp {
    Get(usize),
    GetAndTouch(usize, u32),
    Set(u8, usize, (u8, usize), u32, u32),
    Cas(usize, (u8, usize)),
    Append(usize, (u8, usize)),
    Prepend(usize, (u8, usize)),
    Delete(usize),
    Touch(usize, u32),
    Incr(usize, u64, bool),
    Advance(u32),
    Crawl(usize),
    RemoveBucket(usize),
    FlushAll,
    /// Catch B up in batches of this many changes; apply each change twice if set; then
    /// re-read and re-apply everything from the snapshot's start if set.
    Checkpoint(usize, bool, bool),
}

fn rvalue() -> impl Strategy<Value = (u8, usize)> {
    prop_oneof![
        3 => (any::<u8>(), 0usize..40),
        2 => (any::<u8>(), 8_000usize..40_000),
    ]
}

fn aop() -> impl Strategy<Value = AOp> {
    let k = 0..RKEYS;
    let ttl = prop_oneof![3 => Just(0u32), 1 => 1u32..6];
    prop_oneof![
        2 => k.clone().prop_map(AOp::Get),
        1 => (k.clone(), ttl.clone()).prop_map(|(k, t)| AOp::GetAndTouch(k, t)),
        8 => (0u8..3, k.clone(), rvalue(), any::<u32>(), ttl.clone())
            .prop_map(|(m, k, v, f, t)| AOp::Set(m, k, v, f, t)),
        1 => (k.clone(), rvalue()).prop_map(|(k, v)| AOp::Cas(k, v)),
        1 => (k.clone(), rvalue()).prop_map(|(k, v)| AOp::Append(k, v)),
        1 => (k.clone(), rvalue()).prop_map(|(k, v)| AOp::Prepend(k, v)),
        2 => k.clone().prop_map(AOp::Delete),
        1 => (k.clone(), ttl.clone()).prop_map(|(k, t)| AOp::Touch(k, t)),
        1 => (k.clone(), 0u64..5, any::<bool>()).prop_map(|(k, d, c)| AOp::Incr(k, d, c)),
        1 => (0u32..4).prop_map(AOp::Advance),
        1 => (1usize..64).prop_map(AOp::Crawl),
        1 => k.clone().prop_map(AOp::RemoveBucket),
        1 => Just(AOp::FlushAll),
        2 => (1usize..6, any::<bool>(), any::<bool>())
            .prop_map(|(m, d, r)| AOp::Checkpoint(m, d, r)),
    ]
}

/// Store A: 128 KiB in 16 KiB pages, so large values evict and move pages; a change log
/// cap of `log` bytes (40 holds 3 changes, so the reader often falls behind).
fn config_a(log: usize) -> StoreConfig {
    StoreConfig {
        memory: 128 << 10,
        page_size: 16 << 10,
        max_chunk: 4 << 10,
        buckets: 4,
        max_value: 48 << 10,
        change_log_bytes: log,
        ..StoreConfig::default()
    }
}

/// Store B holds one bucket of A's (and, between catch-ups, some removed items): more memory,
/// so the hidden bucket (never evicted) always fits.
fn config_b() -> StoreConfig {
    StoreConfig {
        memory: 4 << 20,
        ..config_a(4096)
    }
}

/// Discards an operation's result (only its effect on the store matters here).
fn ignore<T>(_: T) {}

fn run_a(store: &Store, clock: &ManualClock, op: &AOp) {
    let key = |k: usize| rkey(k);
    let val = |(b, n): (u8, usize)| vec![b; n];
    // Results are not checked here (the HashMap model test does that): only what B sees.
    match op {
        AOp::Get(k) => ignore(store.get(&key(*k), |_| ())),
        AOp::GetAndTouch(k, t) => ignore(store.get_and_touch(&key(*k), *t, |_| ())),
        AOp::Set(m, k, v, f, t) => {
            let mode = [SetMode::Set, SetMode::Add, SetMode::Replace][*m as usize];
            ignore(store.set(mode, &key(*k), &val(*v), *f, *t));
        }
        AOp::Cas(k, v) => {
            let hash = store.get(&key(*k), |i| i.hash()).unwrap_or(0);
            ignore(store.set(SetMode::Cas(hash), &key(*k), &val(*v), 9, 0));
        }
        AOp::Append(k, v) => ignore(store.append(&key(*k), &val(*v))),
        AOp::Prepend(k, v) => ignore(store.prepend(&key(*k), &val(*v))),
        AOp::Delete(k) => ignore(store.delete(&key(*k), None)),
        AOp::Touch(k, t) => ignore(store.touch(&key(*k), *t)),
        AOp::Incr(k, d, c) => ignore(store.incr(&key(*k), *d, false, c.then_some((5, 0)))),
        AOp::Advance(s) => clock.advance(*s),
        AOp::Crawl(n) => ignore(store.crawl_expired(*n)),
        AOp::RemoveBucket(k) => ignore(store.remove_bucket(store.bucket_of(&key(*k)))),
        AOp::FlushAll => store.flush_all(),
        AOp::Checkpoint(..) => {}
    }
}

/// The copy of one bucket on B, and where its reader stands.
struct Copy {
    bucket: u32,
    /// Snapshot taken but not read yet.
    pending: Option<shoald::store::BucketSnapshot>,
    /// The snapshot's start: the oldest point a re-read may start from.
    start: u64,
    /// Changes up to here are applied.
    since: u64,
    restarts: u32,
}

impl Copy {
    /// Starts (or restarts) the copy: B's bucket dropped and hidden, A's log (re)started,
    /// a snapshot taken (read later).
    fn start(a: &Store, b: &Store, bucket: u32, restart: bool) -> Copy {
        if restart {
            a.stop_change_log(bucket);
        }
        b.drop_bucket(bucket);
        a.start_change_log(bucket).expect("log");
        let snap = a.snapshot_bucket(bucket);
        let start = snap.start_seq();
        Copy {
            bucket,
            pending: Some(snap),
            start,
            since: start,
            restarts: 0,
        }
    }

    fn load_snapshot(&mut self, b: &Store) {
        if let Some(mut snap) = self.pending.take() {
            while let Some(batch) = snap.next_batch() {
                for item in &batch {
                    b.insert_item(&item.as_record())
                        .expect("insert into the copy");
                }
            }
            b.raise_bucket_seq(self.bucket, self.start);
        }
    }

    /// Reads A's log from `from` in batches of `max` and applies it to B (twice if `dup`).
    /// `Err` when A's log no longer holds `from`.
    fn apply_log(
        &mut self,
        a: &Store,
        b: &Store,
        from: u64,
        max: usize,
        dup: bool,
    ) -> Result<(), ChangeLogError> {
        let mut since = from;
        loop {
            let batch = a.changes_since(self.bucket, since, max)?;
            assert!(batch.changes.len() <= max);
            for change in &batch.changes {
                assert!(change.seq() > since && change.seq() <= batch.through);
                b.apply(change).expect("apply to the copy");
                if dup {
                    assert_eq!(b.apply(change), Ok(false), "a duplicate is ignored");
                }
            }
            if batch.through == since {
                self.since = self.since.max(since);
                return Ok(());
            }
            since = batch.through;
        }
    }

    /// Catches B up with A; restarts from a new snapshot when A's log says it is behind.
    fn checkpoint(&mut self, a: &Store, b: &Store, max: usize, dup: bool, replay: bool) {
        self.load_snapshot(b);
        if let Err(e) = self.apply_log(a, b, self.since, max, dup) {
            assert!(matches!(e, ChangeLogError::Behind { .. }), "{e}");
            let restarts = self.restarts + 1;
            *self = Copy::start(a, b, self.bucket, true);
            self.restarts = restarts;
            self.load_snapshot(b);
            self.apply_log(a, b, self.since, max, dup)
                .expect("fresh log");
        }
        if replay {
            // The whole log again from the snapshot's start, if A still holds it.
            match self.apply_log(a, b, self.start, max, false) {
                Ok(()) | Err(ChangeLogError::Behind { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn bucket_content(store: &Store, bucket: u32) -> Vec<OwnedItem> {
    let mut items: Vec<OwnedItem> = store.snapshot_bucket(bucket).collect();
    items.sort_by(|x, y| x.key.cmp(&y.key));
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn snapshot_plus_change_log_rebuilds_the_bucket(
        before in proptest::collection::vec(aop(), 0..30),
        during in proptest::collection::vec(aop(), 1..60),
        read_snapshot_after in 0usize..8,
        log in prop_oneof![Just(40usize), Just(4096)],
    ) {
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let a = Store::with_clock(config_a(log), clock.clone()).expect("config a");
        let b = Store::with_clock(config_b(), clock.clone()).expect("config b");
        let bucket = a.bucket_of(&rkey(0));
        for op in &before {
            run_a(&a, &clock, op);
        }
        let mut copy = Copy::start(&a, &b, bucket, false);
        prop_assert!(b.is_bucket_hidden(bucket));
        for (step, op) in during.iter().enumerate() {
            if step == read_snapshot_after {
                copy.load_snapshot(&b);
            }
            run_a(&a, &clock, op);
            if let AOp::Checkpoint(max, dup, replay) = *op {
                copy.checkpoint(&a, &b, max, dup, replay);
                prop_assert_eq!(
                    bucket_content(&b, bucket),
                    bucket_content(&a, bucket),
                    "step {} op {:?}", step, op
                );
                prop_assert_eq!(b.bucket_stats(bucket).seq, a.bucket_stats(bucket).seq);
            }
        }
        copy.checkpoint(&a, &b, 4, false, true);
        prop_assert_eq!(bucket_content(&b, bucket), bucket_content(&a, bucket), "at the end");
        prop_assert_eq!(b.bucket_stats(bucket).seq, a.bucket_stats(bucket).seq);
        prop_assert_eq!(b.stats().evictions, 0, "the copy is never evicted");
        prop_assert_eq!(b.stats().items, 0, "a hidden bucket is not counted");
        b.show_bucket(bucket);
        prop_assert_eq!(b.stats().items, b.bucket_stats(bucket).items, "counted once shown");
        for item in bucket_content(&a, bucket) {
            let served = b.get(&item.key, |i| (i.value_vec(), i.hash(), i.seq()));
            prop_assert_eq!(served, Some((item.value, item.hash, item.seq)));
        }
    }
}

// ---- the change log's cap: a reader behind it is told, every time ----

#[derive(Debug, Clone)]
enum LogOp {
    Set(usize, usize),
    Delete(usize),
    Touch(usize),
    GetAndTouch(usize),
    FlushAll,
    /// Read from a seq chosen by this fraction of the way from the log's start to now.
    Read(u8),
}

fn log_op() -> impl Strategy<Value = LogOp> {
    let k = 0..RKEYS;
    prop_oneof![
        6 => (k.clone(), 0usize..30).prop_map(|(k, n)| LogOp::Set(k, n)),
        1 => k.clone().prop_map(LogOp::Delete),
        1 => k.clone().prop_map(LogOp::Touch),
        1 => k.clone().prop_map(LogOp::GetAndTouch),
        1 => Just(LogOp::FlushAll),
        3 => any::<u8>().prop_map(LogOp::Read),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The log is mirrored entry by entry (9 bytes + key per change, oldest dropped first
    /// within the cap); `changes_since` must answer `Behind` exactly when a change after the
    /// reader's seq was dropped.
    #[test]
    fn a_reader_behind_the_cap_is_told_every_time(
        ops in proptest::collection::vec(log_op(), 1..150),
        cap in 0usize..200,
    ) {
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let store = Store::with_clock(
            StoreConfig { change_log_bytes: cap.max(1), ..config_b() },
            clock,
        ).expect("config");
        let bucket = store.bucket_of(&rkey(0));
        let start = store.start_change_log(bucket).expect("log");
        let mut mirror: std::collections::VecDeque<(u64, usize)> = Default::default();
        let mut floor = start;
        for op in &ops {
            let before = store.bucket_stats(bucket).seq;
            let key = match op {
                LogOp::Set(k, n) => {
                    let _ = store.set(SetMode::Set, &rkey(*k), &vec![1; *n], 0, 0);
                    Some(rkey(*k))
                }
                LogOp::Delete(k) => {
                    let _ = store.delete(&rkey(*k), None);
                    Some(rkey(*k))
                }
                LogOp::Touch(k) => {
                    let _ = store.touch(&rkey(*k), 100);
                    Some(rkey(*k))
                }
                LogOp::GetAndTouch(k) => {
                    let _ = store.get_and_touch(&rkey(*k), 0, |_| ());
                    Some(rkey(*k))
                }
                LogOp::FlushAll => {
                    store.flush_all();
                    Some(Vec::new())
                }
                LogOp::Read(at) => {
                    let now = store.bucket_stats(bucket).seq;
                    let since = start + (now - start) * u64::from(*at) / 255;
                    match store.changes_since(bucket, since, 1000) {
                        Ok(batch) => {
                            prop_assert!(since >= floor, "since {} floor {}: a silent gap", since, floor);
                            prop_assert_eq!(batch.through, now);
                            prop_assert!(batch.changes.iter().all(|c| c.seq() > since));
                        }
                        Err(ChangeLogError::Behind { floor: f, .. }) => {
                            prop_assert!(since < floor, "since {} floor {}: needlessly behind", since, floor);
                            prop_assert_eq!(f, floor);
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                    None
                }
            };
            let after = store.bucket_stats(bucket).seq;
            let Some(key) = key else { continue };
            if after == before || (!key.is_empty() && store.bucket_of(&key) != bucket) {
                continue;
            }
            prop_assert_eq!(after, before + 1);
            let len = 9 + key.len();
            let cap = cap.max(1);
            if len > cap {
                mirror.clear();
                floor = after;
                continue;
            }
            while mirror.iter().map(|e| e.1).sum::<usize>() + len > cap {
                let Some((seq, _)) = mirror.pop_front() else { break };
                floor = seq;
            }
            mirror.push_back((after, len));
        }
        prop_assert_eq!(store.stats().evictions, 0);
    }
}
