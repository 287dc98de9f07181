//! Model-based test: random sequences of every store operation, with TTLs on a manual clock,
//! give the same results as a plain `HashMap` model (memory never fills here).

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use shoal_proto::hash::value_hash;
use shoald::store::{
    Clock, ManualClock, OwnedItem, SetMode, Store, StoreConfig, StoreError, WriteOk,
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
            store.insert_item(&item).map(|()| String::new())
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
