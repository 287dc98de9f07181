//! Unit tests of the store API on small configurations.

use std::ops::ControlFlow;
use std::sync::Arc;

use shoal_proto::hash::value_hash;

use super::*;

/// 4 MiB in 64 KiB pages, 16 buckets, 4 partitions.
fn small_config() -> StoreConfig {
    StoreConfig {
        memory: 4 << 20,
        page_size: 64 << 10,
        buckets: 16,
        max_value: 200 << 10,
        ..StoreConfig::default()
    }
}

fn store_with_clock(cfg: StoreConfig) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let store = Store::with_clock(cfg, clock.clone()).expect("valid config");
    (store, clock)
}

fn small() -> (Store, Arc<ManualClock>) {
    store_with_clock(small_config())
}

fn value(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    store.get(key, |item| item.value_vec())
}

#[test]
fn set_then_get_returns_value_flags_hash_and_seq() {
    let (store, _) = small();
    let ok = store.set(SetMode::Set, b"k", b"hello", 7, 0).expect("set");
    assert_eq!(ok.hash, value_hash(b"hello"));
    assert_eq!(ok.seq, 1);
    let got = store.get(b"k", |i| {
        (
            i.key().to_vec(),
            i.value_vec(),
            i.flags(),
            i.hash(),
            i.seq(),
            i.ttl_remaining(),
        )
    });
    assert_eq!(
        got,
        Some((b"k".to_vec(), b"hello".to_vec(), 7, ok.hash, 1, None))
    );
    let ok2 = store
        .set(SetMode::Set, b"k", b"hello", 8, 0)
        .expect("set again");
    assert_eq!(ok2.hash, ok.hash, "same bytes give the same token");
    assert_eq!(ok2.seq, 2);
    assert_eq!(store.bucket_stats(store.bucket_of(b"k")).items, 1);
    let stats = store.stats();
    assert_eq!((stats.items, stats.hits, stats.misses), (1, 1, 0));
    assert_eq!(value(&store, b"other"), None);
    assert_eq!(store.stats().misses, 1);
}

#[test]
fn add_replace_and_cas_follow_memcached() {
    let (store, _) = small();
    assert_eq!(
        store.set(SetMode::Replace, b"k", b"v", 0, 0),
        Err(StoreError::NotStored)
    );
    assert_eq!(
        store.set(SetMode::Cas(1), b"k", b"v", 0, 0),
        Err(StoreError::NotFound)
    );
    let first = store.set(SetMode::Add, b"k", b"v1", 0, 0).expect("add");
    assert_eq!(
        store.set(SetMode::Add, b"k", b"v2", 0, 0),
        Err(StoreError::NotStored)
    );
    store
        .set(SetMode::Replace, b"k", b"v2", 0, 0)
        .expect("replace");
    assert_eq!(
        store.set(SetMode::Cas(first.hash), b"k", b"v3", 0, 0),
        Err(StoreError::Exists)
    );
    let h2 = value_hash(b"v2");
    store.set(SetMode::Cas(h2), b"k", b"v3", 0, 0).expect("cas");
    assert_eq!(value(&store, b"k").as_deref(), Some(&b"v3"[..]));
}

#[test]
fn delete_by_hash_and_seq() {
    let (store, _) = small();
    let ok = store.set(SetMode::Set, b"k", b"v", 0, 0).expect("set");
    assert_eq!(
        store.delete(b"k", Some(ok.hash ^ 1)),
        Err(StoreError::Exists)
    );
    assert_eq!(store.delete(b"k", Some(ok.hash)), Ok(ok.seq + 1));
    assert_eq!(store.delete(b"k", None), Err(StoreError::NotFound));
    assert_eq!(
        store.bucket_stats(store.bucket_of(b"k")),
        BucketStats {
            items: 0,
            bytes: 0,
            seq: 2
        }
    );
}

#[test]
fn ttl_expires_lazily_and_touch_extends_it() {
    let (store, clock) = small();
    store.set(SetMode::Set, b"a", b"1", 0, 10).expect("set");
    store.set(SetMode::Set, b"b", b"2", 0, 10).expect("set");
    store.set(SetMode::Set, b"c", b"3", 0, 10).expect("set");
    assert_eq!(store.get(b"a", |i| i.ttl_remaining()), Some(Some(10)));
    clock.advance(5);
    store.touch(b"a", 100).expect("touch");
    assert_eq!(
        store.get_and_touch(b"b", 0, |i| i.ttl_remaining()),
        Some(None)
    );
    clock.advance(5);
    assert_eq!(value(&store, b"c"), None, "expired at 10 s");
    assert_eq!(store.get(b"a", |i| i.ttl_remaining()), Some(Some(95)));
    assert_eq!(value(&store, b"b").as_deref(), Some(&b"2"[..]));
    assert_eq!(store.touch(b"c", 5), Err(StoreError::NotFound));
    assert_eq!(store.stats().expirations, 1);
    assert_eq!(store.stats().items, 2);
    // Expired keys are absent for add.
    store.set(SetMode::Set, b"d", b"4", 0, 1).expect("set");
    clock.advance(1);
    store
        .set(SetMode::Add, b"d", b"5", 0, 0)
        .expect("add over expired");
}

#[test]
fn incr_decr_follow_memcached_rules() {
    let (store, clock) = small();
    assert_eq!(store.incr(b"n", 1, false, None), Err(StoreError::NotFound));
    let (v, _) = store.incr(b"n", 5, false, Some((10, 0))).expect("create");
    assert_eq!(v, 10);
    store
        .set(SetMode::Set, b"n", b"18446744073709551615", 3, 100)
        .expect("set");
    let (v, ok) = store.incr(b"n", 2, false, None).expect("wrap");
    assert_eq!(v, 1);
    assert_eq!(ok.hash, value_hash(b"1"));
    assert_eq!(
        store.get(b"n", |i| (i.value_vec(), i.flags(), i.ttl_remaining())),
        Some((b"1".to_vec(), 3, Some(100)))
    );
    assert_eq!(
        store.incr(b"n", 5, true, None).map(|r| r.0),
        Ok(0),
        "decr clamps at 0"
    );
    store.set(SetMode::Set, b"n", b"100", 0, 0).expect("set");
    assert_eq!(store.incr(b"n", 1, true, None).map(|r| r.0), Ok(99));
    assert_eq!(
        value(&store, b"n").as_deref(),
        Some(&b"99"[..]),
        "no space padding"
    );
    for bad in [
        &b""[..],
        b"abc",
        b"12 ",
        b"-1",
        b"18446744073709551616",
        b"000000000000000000001",
    ] {
        store.set(SetMode::Set, b"n", bad, 0, 0).expect("set");
        assert_eq!(
            store.incr(b"n", 1, false, None),
            Err(StoreError::NonNumeric),
            "{bad:?}"
        );
    }
    store
        .set(SetMode::Set, b"n", b"00000000000000000001", 0, 0)
        .expect("set");
    assert_eq!(
        store.incr(b"n", 1, false, None).map(|r| r.0),
        Ok(2),
        "20 digits with zeros"
    );
    store.set(SetMode::Set, b"t", b"1", 0, 2).expect("set");
    clock.advance(2);
    assert_eq!(store.incr(b"t", 1, false, None), Err(StoreError::NotFound));
}

#[test]
fn append_and_prepend_keep_flags_and_ttl() {
    let (store, _) = small();
    assert_eq!(store.append(b"k", b"x"), Err(StoreError::NotStored));
    assert_eq!(store.prepend(b"k", b"x"), Err(StoreError::NotStored));
    store.set(SetMode::Set, b"k", b"mid", 9, 50).expect("set");
    store.append(b"k", b"-end").expect("append");
    let ok = store.prepend(b"k", b"start-").expect("prepend");
    assert_eq!(ok.hash, value_hash(b"start-mid-end"));
    assert_eq!(
        store.get(b"k", |i| (
            i.value_vec(),
            i.flags(),
            i.ttl_remaining(),
            i.hash()
        )),
        Some((b"start-mid-end".to_vec(), 9, Some(50), ok.hash))
    );
    let max = store.config().max_value;
    store
        .set(SetMode::Set, b"big", &vec![1u8; max - 1], 0, 0)
        .expect("set");
    assert_eq!(store.append(b"big", b"ab"), Err(StoreError::TooLarge));
    store.append(b"big", b"a").expect("append up to max");
    assert_eq!(store.get(b"big", |i| i.value_len()), Some(max));
}

#[test]
fn key_and_value_limits_at_max_and_max_plus_one() {
    let (store, _) = small();
    let max_key = vec![b'k'; 250];
    let long_key = vec![b'k'; 251];
    store
        .set(SetMode::Set, &max_key, b"v", 0, 0)
        .expect("250-byte key");
    assert_eq!(value(&store, &max_key).as_deref(), Some(&b"v"[..]));
    assert_eq!(
        store.set(SetMode::Set, &long_key, b"v", 0, 0),
        Err(StoreError::KeyTooLong)
    );
    assert_eq!(store.get(&long_key, |_| ()), None);
    assert_eq!(
        store.set(SetMode::Set, b"", b"v", 0, 0),
        Err(StoreError::EmptyKey)
    );
    assert_eq!(store.delete(b"", None), Err(StoreError::EmptyKey));
    assert_eq!(store.incr(b"", 1, false, None), Err(StoreError::EmptyKey));
    assert_eq!(store.get(b"", |_| ()), None);
    let max = store.config().max_value;
    let big: Vec<u8> = (0..max).map(|i| (i * 31 % 251) as u8).collect();
    store
        .set(SetMode::Set, &max_key, &big, 0, 0)
        .expect("max value");
    assert_eq!(value(&store, &max_key), Some(big.clone()));
    let mut too_big = big;
    too_big.push(0);
    assert_eq!(
        store.set(SetMode::Set, b"k", &too_big, 0, 0),
        Err(StoreError::TooLarge)
    );
}

#[test]
fn large_values_span_chunks_and_round_trip() {
    let (store, _) = small();
    let max_chunk = store.config().max_chunk;
    for (i, len) in [
        0,
        1,
        max_chunk - 44,
        max_chunk - 35,
        max_chunk - 34,
        max_chunk,
        3 * max_chunk + 7,
        150_000,
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("key-{i}");
        let v: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        let ok = store
            .set(SetMode::Set, key.as_bytes(), &v, 1, 0)
            .expect("set");
        assert_eq!(ok.hash, value_hash(&v));
        let (got, parts) = store
            .get(key.as_bytes(), |item| {
                (item.value_vec(), item.value_chunks().count())
            })
            .expect("present");
        assert_eq!(got, v, "len {len}");
        if len > max_chunk {
            assert!(parts > 1, "len {len} should be chained");
        }
        let mut buf = bytes::BytesMut::new();
        store.get(key.as_bytes(), |item| item.write_value_to(&mut buf));
        assert_eq!(&buf[..], &v[..]);
    }
    let used_before = store.stats().bytes;
    store.delete(b"key-7", None).expect("delete");
    assert!(store.stats().bytes < used_before - 150_000);
}

#[test]
fn crawler_reclaims_expired_items_in_small_steps() {
    let (store, clock) = small();
    for i in 0..2000u32 {
        let ttl = if i % 2 == 0 { 5 } else { 0 };
        store
            .set(SetMode::Set, format!("k{i}").as_bytes(), b"value", 0, ttl)
            .expect("set");
    }
    assert_eq!(store.crawl_expired(10_000), 0);
    clock.advance(5);
    let mut reclaimed = 0;
    for _ in 0..10 {
        reclaimed += store.crawl_expired(64);
    }
    assert!(
        reclaimed > 0 && reclaimed < 1000,
        "small budgets reclaim gradually: {reclaimed}"
    );
    reclaimed += store.crawl_expired(usize::MAX);
    reclaimed += store.crawl_expired(usize::MAX);
    assert_eq!(reclaimed, 1000);
    let stats = store.stats();
    assert_eq!(
        (stats.items, stats.crawler_reclaimed, stats.expirations),
        (1000, 1000, 1000)
    );
}

#[test]
fn touch_and_get_and_touch_take_a_sequence_number() {
    let (store, _) = small();
    let ok = store.set(SetMode::Set, b"t", b"v", 3, 0).expect("set");
    let bucket = store.bucket_of(b"t");
    let seq = store.touch(b"t", 50).expect("touch");
    assert_eq!(seq, ok.seq + 1);
    assert_eq!(store.bucket_stats(bucket).seq, seq);
    assert_eq!(
        store.get(b"t", |i| i.seq()),
        Some(seq),
        "the item carries it"
    );
    let gat = store.get_and_touch(b"t", 0, |i| (i.seq(), i.ttl_remaining()));
    assert_eq!(gat, Some((seq + 1, None)));
    assert_eq!(store.bucket_stats(bucket).seq, seq + 1);
    assert_eq!(store.get_and_touch(b"absent", 5, |i| i.seq()), None);
    assert_eq!(
        store.bucket_stats(bucket).seq,
        seq + 1,
        "a miss is no change"
    );
    assert_eq!(store.get(b"t", |i| i.hash()), Some(ok.hash), "token kept");
}

#[test]
fn flush_all_empties_the_store_and_returns_pages() {
    let (store, _) = small();
    for i in 0..500u32 {
        store
            .set(SetMode::Set, format!("k{i}").as_bytes(), &[0u8; 500], 0, 0)
            .expect("set");
    }
    let seq = store.bucket_stats(store.bucket_of(b"k1")).seq;
    store.flush_all();
    let stats = store.stats();
    assert_eq!((stats.items, stats.bytes, stats.pages_used), (0, 0, 0));
    assert_eq!(stats.pages_free, stats.pages_total);
    assert_eq!(value(&store, b"k1"), None);
    let ok = store
        .set(SetMode::Set, b"k1", b"again", 0, 0)
        .expect("set after flush");
    assert_eq!(
        ok.seq,
        seq + 2,
        "a flush takes a seq; numbers are never reused"
    );
    assert_eq!(value(&store, b"k1").as_deref(), Some(&b"again"[..]));
}

#[test]
fn insert_item_keeps_hash_seq_and_remaining_ttl() {
    let (store, clock) = small();
    let wall = clock.wall();
    let item = OwnedItem {
        key: b"moved".to_vec(),
        value: b"payload".to_vec(),
        flags: 5,
        hash: 0xfeed,
        seq: 1000,
        expires_at: wall + 30,
    };
    store.insert_item(&item.as_record()).expect("insert");
    assert_eq!(
        store.get(b"moved", |i| (
            i.hash(),
            i.seq(),
            i.flags(),
            i.ttl_remaining()
        )),
        Some((0xfeed, 1000, 5, Some(30)))
    );
    let bucket = store.bucket_of(b"moved");
    assert_eq!(store.bucket_stats(bucket).seq, 1000);
    let snap: Vec<_> = store.snapshot_bucket(bucket).collect();
    assert_eq!(snap, vec![item.clone()]);
    let expired = OwnedItem {
        expires_at: wall,
        ..item.clone()
    };
    store
        .insert_item(&expired.as_record())
        .expect("expired insert is dropped");
    assert_eq!(value(&store, b"moved"), None);
    let forever = OwnedItem {
        expires_at: 0,
        ..item
    };
    store.insert_item(&forever.as_record()).expect("insert");
    assert_eq!(store.get(b"moved", |i| i.ttl_remaining()), Some(None));
    assert_eq!(
        store
            .set(SetMode::Set, b"moved", b"x", 0, 0)
            .map(|ok| ok.seq),
        Ok(1001)
    );
}

#[test]
fn snapshot_and_remove_bucket_cover_exactly_one_bucket() {
    let (store, _) = small();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..3000u32 {
        let key = format!("key{i}").into_bytes();
        let v = vec![(i % 256) as u8; (i % 700) as usize];
        store.set(SetMode::Set, &key, &v, i, 0).expect("set");
        if store.bucket_of(&key) == 3 {
            expected.insert(key, v);
        }
    }
    let got: std::collections::BTreeMap<_, _> = store
        .snapshot_bucket(3)
        .map(|item| (item.key, item.value))
        .collect();
    assert_eq!(got, expected);
    let before = store.stats();
    let removed = store.remove_bucket(3);
    assert_eq!(removed, expected.len());
    let after = store.stats();
    assert_eq!(after.items, before.items - removed as u64);
    assert_eq!(store.bucket_stats(3).items, 0);
    assert_eq!(store.bucket_stats(3).bytes, 0);
    assert_eq!(
        after.bytes,
        before.bytes - store_bucket_bytes(&before, &after)
    );
    let used_chunks: u64 = after.classes.iter().map(|c| c.used).sum();
    let per_bucket: u64 = (0..16).map(|b| store.bucket_stats(b).bytes).sum();
    assert_eq!(per_bucket, after.bytes);
    assert!(used_chunks > 0);
    assert_eq!(store.snapshot_bucket(3).count(), 0);
    assert_eq!(store.snapshot_bucket(99).count(), 0);
}

#[test]
fn visit_batch_gives_the_snapshot_items_without_copies_and_reoffers_on_break() {
    let (store, clock) = store_with_clock(StoreConfig {
        memory: 32 << 20,
        ..small_config()
    });
    for i in 0..6000u32 {
        let key = format!("key{i}").into_bytes();
        // Some values span several chunks (chained items), some expire.
        let len = if i % 197 == 0 {
            40_000
        } else {
            (i % 300) as usize
        };
        let ttl = if i % 5 == 0 { 60 } else { 0 };
        store
            .set(SetMode::Set, &key, &vec![i as u8; len], i, ttl)
            .expect("set");
    }
    clock.advance(10);
    let expected: Vec<OwnedItem> = store.snapshot_bucket(3).collect();
    assert!(expected.len() > SNAPSHOT_BATCH, "{}", expected.len());
    let mut snapshot = store.snapshot_bucket(3);
    let (mut got, mut calls, mut offered) = (Vec::new(), 0, 0);
    // Take at most 7 items per call: the item a call breaks on comes first in the next.
    while let Some(taken) = snapshot.visit_batch(|item, expires_at| {
        offered += 1;
        if offered % 8 == 0 {
            return ControlFlow::Break(());
        }
        let mut value = Vec::new();
        for part in item.value_chunks() {
            value.extend_from_slice(part);
        }
        got.push(OwnedItem {
            key: item.key().to_vec(),
            value,
            flags: item.flags(),
            hash: item.hash(),
            seq: item.seq(),
            expires_at,
        });
        ControlFlow::Continue(())
    }) {
        assert!(taken <= 7);
        calls += 1;
    }
    assert_eq!(got, expected);
    assert!(calls >= expected.len().div_ceil(7), "{calls}");
    assert_eq!(
        store.snapshot_bucket(99).visit_batch(|_, _| unreachable!()),
        None
    );
}

fn store_bucket_bytes(before: &StoreStats, after: &StoreStats) -> u64 {
    before.bytes - after.bytes
}

#[test]
fn full_class_evicts_least_recently_used_first() {
    let (store, _) = small();
    // Fill well past memory with 500-byte values; keep reading the first 50 keys.
    for i in 0..20_000u32 {
        store
            .set(SetMode::Set, format!("k{i}").as_bytes(), &[7u8; 500], 0, 0)
            .expect("set");
        if i % 50 == 0 {
            for hot in 0..50u32 {
                store.get(format!("k{hot}").as_bytes(), |_| ());
            }
        }
    }
    let stats = store.stats();
    assert!(stats.evictions > 10_000, "{stats:?}");
    assert!(stats.bytes <= stats.memory);
    for hot in 0..50u32 {
        assert!(
            value(&store, format!("k{hot}").as_bytes()).is_some(),
            "hot key {hot} evicted"
        );
    }
    assert_eq!(value(&store, b"k60"), None, "a cold early key is gone");
}

#[test]
fn pages_move_to_a_class_that_starts_evicting() {
    let (store, _) = small();
    for i in 0..40_000u32 {
        store
            .set(
                SetMode::Set,
                format!("small{i}").as_bytes(),
                &[1u8; 60],
                0,
                0,
            )
            .expect("set");
    }
    let small_class = |s: &StoreStats| {
        s.classes
            .iter()
            .position(|c| c.chunk_size >= 34 + 10 + 60)
            .expect("class")
    };
    let before = store.stats();
    assert_eq!(before.pages_free, 0);
    let big_class = before
        .classes
        .iter()
        .position(|c| c.chunk_size >= 34 + 10 + 2000)
        .expect("class");
    assert_eq!(before.classes[big_class].pages, 0);
    for i in 0..20_000u32 {
        store
            .set(
                SetMode::Set,
                format!("big{i}").as_bytes(),
                &[2u8; 2000],
                0,
                0,
            )
            .expect("set");
    }
    let after = store.stats();
    assert!(after.pages_moved > 0);
    assert!(
        after.classes[big_class].pages > after.pages_total / 2,
        "{:?}",
        after.classes[big_class]
    );
    assert!(
        after.classes[small_class(&after)].pages < before.classes[small_class(&before)].pages / 2
    );
    // Recently written large items are readable.
    for i in 19_900..20_000u32 {
        assert!(value(&store, format!("big{i}").as_bytes()).is_some());
    }
}

// ---- change logs, apply, hidden buckets ----

/// A key of `bucket` (16 buckets in `small_config`), the `n`-th one found.
fn key_in(store: &Store, bucket: u32, n: usize) -> Vec<u8> {
    (0u32..)
        .map(|i| format!("key-{i}").into_bytes())
        .filter(|k| store.bucket_of(k) == bucket)
        .nth(n)
        .expect("keys of every bucket exist")
}

/// Every live item of `bucket`, sorted by key.
fn bucket_items(store: &Store, bucket: u32) -> Vec<OwnedItem> {
    let mut items: Vec<OwnedItem> = store.snapshot_bucket(bucket).collect();
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
}

/// Reads all of `bucket`'s changes after `since` in batches of `max` and applies them to `to`.
fn catch_up(from: &Store, to: &Store, bucket: u32, mut since: u64, max: usize) -> u64 {
    loop {
        let batch = from
            .changes_since(bucket, since, max)
            .expect("log readable");
        for change in &batch.changes {
            to.apply(change).expect("apply");
        }
        if batch.through == since {
            return since;
        }
        since = batch.through;
    }
}

/// Copies `bucket` from `from` into `to` (hidden): log started, snapshot, then the log.
fn copy_bucket(from: &Store, to: &Store, bucket: u32) -> u64 {
    from.start_change_log(bucket).expect("log");
    let mut snap = from.snapshot_bucket(bucket);
    to.hide_bucket(bucket);
    let start = snap.start_seq();
    while let Some(batch) = snap.next_batch() {
        for item in &batch {
            to.insert_item(&item.as_record()).expect("insert");
        }
    }
    to.raise_bucket_seq(bucket, start);
    start
}

#[test]
fn the_change_log_reports_every_kind_of_change_with_current_values() {
    let (store, clock) = small();
    let b = 5;
    let [k0, k1, k2, k3] = [0, 1, 2, 3].map(|n| key_in(&store, b, n));
    store.set(SetMode::Set, &k0, b"before", 0, 0).expect("set");
    assert_eq!(
        store.changes_since(b, 0, 10),
        Err(ChangeLogError::NotKept { bucket: b })
    );
    let floor = store.start_change_log(b).expect("start");
    assert_eq!(floor, 1);
    let s1 = store
        .set(SetMode::Set, &k1, b"one", 7, 100)
        .expect("set")
        .seq;
    store.set(SetMode::Set, &k2, b"two", 0, 0).expect("set");
    let d2 = store.delete(&k2, None).expect("delete");
    store
        .set(SetMode::Set, &k0, b"superseded", 0, 0)
        .expect("set");
    let a0 = store.append(&k0, b"+").expect("append").seq;
    let t1 = store.touch(&k1, 50).expect("touch");
    store.set(SetMode::Set, &k3, b"5", 0, 0).expect("set");
    let i3 = store.incr(&k3, 1, false, None).expect("incr").1.seq;
    let cleared = {
        store.remove_bucket(b);
        store.bucket_stats(b).seq
    };
    let after = store
        .set(SetMode::Set, &k1, b"after", 1, 0)
        .expect("set")
        .seq;
    assert!(s1 < t1);

    let batch = store.changes_since(b, floor, 100).expect("read");
    assert_eq!(batch.through, after);
    let wall = clock.wall();
    // Every entry of a key that is gone now reads as a removal; the entries of k1 before
    // its last change read as nothing.
    let expected = vec![
        Change::Delete {
            key: k2.clone(),
            seq: 3,
        },
        Change::Delete {
            key: k2.clone(),
            seq: d2,
        },
        Change::Delete {
            key: k0.clone(),
            seq: a0 - 1,
        },
        Change::Delete {
            key: k0.clone(),
            seq: a0,
        },
        Change::Delete {
            key: k3.clone(),
            seq: i3 - 1,
        },
        Change::Delete {
            key: k3.clone(),
            seq: i3,
        },
        Change::Clear {
            bucket: b,
            seq: cleared,
        },
        Change::Set(OwnedItem {
            key: k1.clone(),
            value: b"after".to_vec(),
            flags: 1,
            hash: value_hash(b"after"),
            seq: after,
            expires_at: 0,
        }),
    ];
    assert_eq!(batch.changes, expected, "wall {wall}");
    // In small batches the same changes come, with `through` moving on.
    let mut since = floor;
    let mut all = Vec::new();
    loop {
        let batch = store.changes_since(b, since, 1).expect("read");
        assert!(batch.changes.len() <= 1);
        all.extend(batch.changes);
        if batch.through == since {
            break;
        }
        since = batch.through;
    }
    assert_eq!(all, expected);
    assert_eq!(since, after);
    assert_eq!(
        store.changes_since(b, after + 1, 10),
        Err(ChangeLogError::Ahead {
            bucket: b,
            since: after + 1,
            seq: after
        })
    );
}

#[test]
fn a_log_that_dropped_changes_says_so_every_time() {
    let cfg = StoreConfig {
        change_log_bytes: 200,
        ..small_config()
    };
    let (store, _) = store_with_clock(cfg);
    let b = 2;
    let k = key_in(&store, b, 0);
    let floor = store.start_change_log(b).expect("start");
    for i in 0..100u32 {
        store
            .set(SetMode::Set, &k, &i.to_be_bytes(), 0, 0)
            .expect("set");
    }
    let seq = store.bucket_stats(b).seq;
    for _ in 0..3 {
        match store.changes_since(b, floor, 1000) {
            Err(ChangeLogError::Behind {
                since, floor: f, ..
            }) => {
                assert_eq!(since, floor);
                assert!(f > floor && f < seq, "{f}");
            }
            other => panic!("expected Behind, got {other:?}"),
        }
    }
    let stats = store.stats();
    assert!(
        stats.change_log_bytes > 0 && stats.change_log_bytes < 1024,
        "{stats:?}"
    );
    let recent = store
        .changes_since(b, seq - 1, 10)
        .expect("recent changes kept");
    assert_eq!(recent.through, seq);
    store.stop_change_log(b);
    assert_eq!(
        store.changes_since(b, seq, 10),
        Err(ChangeLogError::NotKept { bucket: b })
    );
    assert_eq!(
        store.stats().change_log_bytes,
        0,
        "freed with the last reader"
    );
    let off = StoreConfig {
        change_log_bytes: 0,
        ..small_config()
    };
    let (off, _) = store_with_clock(off);
    assert_eq!(off.start_change_log(b), Err(ChangeLogError::Off));
}

#[test]
fn apply_installs_newer_changes_once_and_in_order() {
    let (store, clock) = small();
    let k = b"applied".to_vec();
    let b = store.bucket_of(&k);
    let item = |value: &[u8], seq: u64, expires_at: u64| {
        Change::Set(OwnedItem {
            key: k.clone(),
            value: value.to_vec(),
            flags: 4,
            hash: 1234,
            seq,
            expires_at,
        })
    };
    let wall = clock.wall();
    assert_eq!(store.apply(&item(b"v3", 3, 0)), Ok(true));
    assert_eq!(store.apply(&item(b"v3", 3, 0)), Ok(false), "duplicate");
    assert_eq!(store.apply(&item(b"v2", 2, 0)), Ok(false), "older");
    assert_eq!(
        store.get(&k, |i| (i.value_vec(), i.hash(), i.seq(), i.flags())),
        Some((b"v3".to_vec(), 1234, 3, 4))
    );
    assert_eq!(
        store.apply(&Change::Touch {
            key: k.clone(),
            seq: 4,
            expires_at: wall + 30
        }),
        Ok(true)
    );
    assert_eq!(
        store.get(&k, |i| (i.seq(), i.ttl_remaining())),
        Some((4, Some(30)))
    );
    assert_eq!(
        store.apply(&Change::Delete {
            key: k.clone(),
            seq: 6
        }),
        Ok(true)
    );
    assert_eq!(value(&store, &k), None);
    assert_eq!(
        store.apply(&item(b"v5", 5, 0)),
        Ok(false),
        "a replayed set cannot come back"
    );
    assert_eq!(store.bucket_stats(b).seq, 6);
    assert_eq!(
        store.apply(&item(b"gone", 7, wall)),
        Ok(true),
        "expired on arrival"
    );
    assert_eq!(value(&store, &k), None);
    assert_eq!(store.apply(&item(b"v8", 8, wall + 5)), Ok(true));
    clock.advance(5);
    assert_eq!(value(&store, &k), None, "absolute expiry kept");
    store.apply(&item(b"v9", 9, 0)).expect("apply");
    assert_eq!(store.apply(&Change::Clear { bucket: b, seq: 10 }), Ok(true));
    assert_eq!(value(&store, &k), None);
    assert_eq!(
        store.apply(&Change::Clear { bucket: b, seq: 10 }),
        Ok(false)
    );
    assert_eq!(
        store.apply(&Change::Clear {
            bucket: 99,
            seq: 11
        }),
        Err(StoreError::NoSuchBucket)
    );
    assert_eq!(store.bucket_stats(b).seq, 10);
    let next = store.set(SetMode::Set, &k, b"local", 0, 0).expect("set");
    assert_eq!(next.seq, 11, "local writes continue after the applied seq");
}

#[test]
fn insert_item_keeps_the_newer_version_and_is_refused_while_logging() {
    let (store, _) = small();
    let item = |value: &[u8], seq: u64| OwnedItem {
        key: b"ins".to_vec(),
        value: value.to_vec(),
        flags: 0,
        hash: value_hash(value),
        seq,
        expires_at: 0,
    };
    store
        .insert_item(&item(b"new", 9).as_record())
        .expect("insert");
    store
        .insert_item(&item(b"old", 4).as_record())
        .expect("insert");
    assert_eq!(value(&store, b"ins").as_deref(), Some(&b"new"[..]));
    let b = store.bucket_of(b"ins");
    store.start_change_log(b).expect("log");
    assert_eq!(
        store.insert_item(&item(b"x", 20).as_record()),
        Err(StoreError::ChangeLogActive)
    );
}

#[test]
fn snapshot_and_log_rebuild_the_bucket_elsewhere_and_replays_change_nothing() {
    let (a, clock) = small();
    let target = Store::with_clock(small_config(), clock.clone()).expect("config");
    let b = 9;
    let keys: Vec<Vec<u8>> = (0..40).map(|n| key_in(&a, b, n)).collect();
    for (i, k) in keys.iter().enumerate() {
        a.set(
            SetMode::Set,
            k,
            &vec![i as u8; i * 50],
            i as u32,
            (i % 3) as u32 * 10,
        )
        .expect("set");
    }
    let start = copy_bucket(&a, &target, b);
    for (i, k) in keys.iter().enumerate() {
        match i % 5 {
            0 => drop(a.delete(k, None)),
            1 => drop(a.touch(k, 100)),
            2 => drop(a.set(SetMode::Set, k, b"changed", 1, 0)),
            3 => drop(a.get_and_touch(k, 0, |_| ())),
            _ => {}
        }
    }
    clock.advance(10);
    let through = catch_up(&a, &target, b, start, 7);
    assert_eq!(through, a.bucket_stats(b).seq);
    assert!(target.is_bucket_hidden(b));
    assert_eq!(bucket_items(&target, b), bucket_items(&a, b));
    // Replaying everything again (from the snapshot's start) changes nothing.
    catch_up(&a, &target, b, start, 3);
    assert_eq!(bucket_items(&target, b), bucket_items(&a, b));
    // More changes, a flush, more changes.
    a.set(SetMode::Set, &keys[4], b"pre-flush", 0, 0)
        .expect("set");
    a.flush_all();
    a.set(SetMode::Set, &keys[9], b"post-flush", 0, 0)
        .expect("set");
    catch_up(&a, &target, b, through, 100);
    assert_eq!(bucket_items(&target, b), bucket_items(&a, b));
    assert_eq!(bucket_items(&target, b).len(), 1);
    assert_eq!(target.bucket_stats(b).seq, a.bucket_stats(b).seq);
}

#[test]
fn hidden_buckets_are_not_served_counted_flushed_or_evicted() {
    let (store, _) = small();
    let b = 4;
    let k = key_in(&store, b, 0);
    store.set(SetMode::Set, &k, b"v", 0, 0).expect("set");
    assert!(store.hide_bucket(b));
    assert!(!store.hide_bucket(b), "already hidden");
    assert!(store.is_bucket_hidden(b));
    assert_eq!(value(&store, &k), None, "reads miss");
    assert_eq!(store.get_and_touch(&k, 5, |_| ()), None);
    assert_eq!(
        store.set(SetMode::Set, &k, b"w", 0, 0),
        Err(StoreError::Hidden)
    );
    assert_eq!(store.delete(&k, None), Err(StoreError::Hidden));
    assert_eq!(store.touch(&k, 1), Err(StoreError::Hidden));
    assert_eq!(store.append(&k, b"x"), Err(StoreError::Hidden));
    assert_eq!(
        store.incr(&k, 1, false, Some((1, 0))),
        Err(StoreError::Hidden)
    );
    assert_eq!(store.stats().items, 0, "not counted");
    assert_eq!(store.bucket_stats(b).items, 1, "but known per bucket");
    // Fill the hidden bucket through apply, then press memory hard from other buckets.
    let hidden_keys: Vec<Vec<u8>> = (1..200).map(|n| key_in(&store, b, n)).collect();
    for (i, hk) in hidden_keys.iter().enumerate() {
        let change = Change::Set(OwnedItem {
            key: hk.clone(),
            value: vec![3u8; 500],
            flags: 0,
            hash: value_hash(&[3u8; 500]),
            seq: 10 + i as u64,
            expires_at: 0,
        });
        assert_eq!(store.apply(&change), Ok(true));
    }
    for i in 0..30_000u32 {
        let key = format!("press{i}");
        if store.bucket_of(key.as_bytes()) != b {
            let size = if i % 2 == 0 { 500 } else { 3000 };
            store
                .set(SetMode::Set, key.as_bytes(), &vec![1u8; size], 0, 0)
                .expect("set");
        }
    }
    assert!(store.stats().evictions > 1000);
    assert!(store.stats().pages_moved > 0);
    store.flush_all();
    assert_eq!(store.stats().items, 0);
    assert_eq!(
        store.bucket_stats(b).items,
        200,
        "nothing of the hidden bucket went"
    );
    assert!(store.show_bucket(b));
    assert!(!store.show_bucket(b));
    assert_eq!(store.stats().items, 200);
    assert_eq!(value(&store, &k).as_deref(), Some(&b"v"[..]));
    assert_eq!(value(&store, &hidden_keys[5]), Some(vec![3u8; 500]));
}

#[test]
fn drop_bucket_hides_at_once_frees_everything_and_forgets_the_seq() {
    let (store, _) = small();
    let b = 6;
    for n in 0..1000 {
        store
            .set(SetMode::Set, &key_in(&store, b, n), &[1u8; 100], 0, 0)
            .expect("set");
    }
    store.start_change_log(b).expect("log");
    let other = key_in(&store, 7, 0);
    store.set(SetMode::Set, &other, b"kept", 0, 0).expect("set");
    assert_eq!(store.drop_bucket(b), 1000);
    assert!(store.is_bucket_hidden(b));
    let stats = store.bucket_stats(b);
    assert_eq!((stats.items, stats.bytes, stats.seq), (0, 0, 0));
    assert_eq!(
        store.changes_since(b, 0, 1),
        Err(ChangeLogError::NotKept { bucket: b })
    );
    assert_eq!(value(&store, &other).as_deref(), Some(&b"kept"[..]));
    assert!(store.show_bucket(b));
    assert_eq!(
        store
            .set(SetMode::Set, &key_in(&store, b, 0), b"x", 0, 0)
            .map(|ok| ok.seq),
        Ok(1)
    );
}

#[test]
fn evictions_in_a_logged_bucket_are_logged_as_removals() {
    let (store, _) = store_with_clock(StoreConfig {
        change_log_bytes: 16 << 10,
        ..small_config()
    });
    let b = 1;
    let floor = store.start_change_log(b).expect("log");
    for i in 0..20_000u32 {
        store
            .set(SetMode::Set, format!("ev{i}").as_bytes(), &[7u8; 500], 0, 0)
            .expect("set");
    }
    assert!(store.stats().evictions > 1000);
    let target = Store::with_clock(small_config(), Arc::new(ManualClock::new(1_700_000_000)))
        .expect("config");
    target.hide_bucket(b);
    // The log is far too small for 20,000 writes: the reader is told, then copies again.
    assert!(matches!(
        store.changes_since(b, floor, 10),
        Err(ChangeLogError::Behind { .. })
    ));
    let start = copy_bucket(&store, &target, b);
    for i in 20_000..24_000u32 {
        store
            .set(SetMode::Set, format!("ev{i}").as_bytes(), &[7u8; 500], 0, 0)
            .expect("set");
    }
    let batch = store
        .changes_since(b, start, 100_000)
        .expect("within the cap");
    let removals = batch
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Delete { .. }))
        .count();
    assert!(removals > 100, "{removals}");
    for c in &batch.changes {
        target.apply(c).expect("apply");
    }
    assert_eq!(batch.through, store.bucket_stats(b).seq);
    assert_eq!(bucket_items(&target, b), bucket_items(&store, b));
}

#[test]
fn memory_limit_caps_the_pages_partitions_take_and_can_be_lifted() {
    let (store, _) = small();
    assert_eq!(store.memory_limit(), 4 << 20);
    // 64 KiB pages; a partition keeps at least the 8 pages a 200 KiB value needs.
    let least = 8 * (64 << 10) * store.stats().partitions;
    assert_eq!(
        store.set_memory_limit(1 << 10),
        least,
        "raised to what max_value needs"
    );
    assert_eq!(store.set_memory_limit(3 << 20), 3 << 20);
    let fill = |store: &Store, prefix: &str| {
        for i in 0..8000 {
            let key = format!("{prefix}{i}");
            store
                .set(SetMode::Set, key.as_bytes(), &[b'v'; 1000], 0, 0)
                .expect("a write under the limit evicts instead of failing");
        }
    };
    fill(&store, "a");
    let s = store.stats();
    assert_eq!(s.memory_limit, 3 << 20);
    assert!(s.pages_used <= 48, "{} pages used", s.pages_used);
    assert!(s.evictions > 0);
    assert_eq!(store.set_memory_limit(u64::MAX), 4 << 20, "lifted");
    fill(&store, "b");
    assert!(store.stats().pages_used > 48);
}

// ---- eviction order under a full store (issue 20) ----

/// A small deterministic generator (xorshift64*), so the size sequences are reproducible.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A size between `lo` and `hi`, log-uniform (every order of magnitude as likely).
    fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((l + (h - l) * x).exp() as usize).clamp(lo, hi)
    }

    /// A size between `lo` and `hi`, uniform.
    fn uniform(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// Writes `sizes` under keys `{prefix}{i}` (each value filled with a byte of its index), then
/// checks that the most recently written items whose sizes add up to at most `window` bytes
/// are all readable with their values. Reads nothing before the check (a read would protect
/// an item). Returns how many items the window held.
fn recent_items_survive(store: &Store, prefix: &str, sizes: &[usize], window: usize) -> usize {
    for (i, &len) in sizes.iter().enumerate() {
        store
            .set(
                SetMode::Set,
                format!("{prefix}{i}").as_bytes(),
                &vec![i as u8; len],
                0,
                0,
            )
            .expect("set");
    }
    let (mut bytes, mut n, mut lost) = (0, 0, Vec::new());
    for (i, &len) in sizes.iter().enumerate().rev() {
        bytes += len;
        if bytes > window {
            break;
        }
        n += 1;
        let key = format!("{prefix}{i}");
        let no_update = MetaGet {
            no_update: true,
            ..MetaGet::default()
        };
        match store.meta_get(key.as_bytes(), &no_update, |item, _| item.value_vec()) {
            Some(v) if v.len() == len && v.iter().all(|&b| b == i as u8) => {}
            Some(_) => panic!("{key}: wrong value"),
            None => lost.push((sizes.len() - 1 - i, len)),
        }
    }
    let stats = store.stats();
    assert!(stats.evictions > 0, "the store never filled: {stats:?}");
    assert!(
        lost.is_empty(),
        "{} of the {n} most recent items ({window} bytes of {} memory) were evicted; \
         (age in writes, size) of the first: {:?}; pages moved {}, evictions {}",
        lost.len(),
        stats.memory,
        &lost[..lost.len().min(10)],
        stats.pages_moved,
        stats.evictions
    );
    n
}

fn eviction_config(memory: usize) -> StoreConfig {
    StoreConfig {
        memory,
        max_value: 512 << 10,
        ..StoreConfig::default()
    }
}

#[test]
fn recent_items_survive_mixed_sizes_up_to_500k() {
    let (store, _) = store_with_clock(eviction_config(64 << 20));
    let mut rng = Sizes(0x9e37_79b9_7f4a_7c15);
    let sizes: Vec<usize> = (0..4_000)
        .map(|_| rng.log_uniform(100, 500 << 10))
        .collect();
    let n = recent_items_survive(&store, "mixed", &sizes, 16 << 20);
    assert!(n > 50, "{n}");
}

#[test]
fn recent_items_survive_uniform_sizes_up_to_500k() {
    let (store, _) = store_with_clock(eviction_config(64 << 20));
    let mut rng = Sizes(0x1234_5678_9abc_def1);
    let sizes: Vec<usize> = (0..1_000).map(|_| rng.uniform(100, 500 << 10)).collect();
    let n = recent_items_survive(&store, "uniform", &sizes, 16 << 20);
    assert!(n > 10, "{n}");
}

#[test]
fn recent_items_survive_a_shift_from_small_to_large_values() {
    let (store, _) = store_with_clock(eviction_config(32 << 20));
    let mut rng = Sizes(0xdead_beef_cafe_f00d);
    // Many small values (about twice the memory), then larger ones (twice the memory).
    let mut sizes: Vec<usize> = (0..300_000).map(|_| rng.uniform(100, 200)).collect();
    let mut large = 0;
    while large < 64 << 20 {
        let len = rng.uniform(2 << 10, 60 << 10);
        large += len;
        sizes.push(len);
    }
    let n = recent_items_survive(&store, "shift", &sizes, 8 << 20);
    assert!(n > 100, "{n}");
}

#[test]
fn recent_items_survive_a_shift_partway_through() {
    // The check right after the new size starts to take over: the class still grows.
    let (store, _) = store_with_clock(eviction_config(32 << 20));
    let mut rng = Sizes(0x0bad_cafe_1234_5678);
    let mut sizes: Vec<usize> = (0..300_000).map(|_| rng.uniform(100, 200)).collect();
    let mut large = 0;
    while large < 12 << 20 {
        let len = rng.uniform(2 << 10, 60 << 10);
        large += len;
        sizes.push(len);
    }
    recent_items_survive(&store, "partway", &sizes, 8 << 20);
}

/// Sizes adding up to about `total` bytes: `first` for the first half of the bytes, then
/// `second`.
fn two_phases(
    rng: &mut Sizes,
    total: usize,
    first: impl Fn(&mut Sizes) -> usize,
    second: impl Fn(&mut Sizes) -> usize,
) -> Vec<usize> {
    let (mut sizes, mut sum) = (Vec::new(), 0);
    while sum < total {
        let len = if sum < total / 2 {
            first(rng)
        } else {
            second(rng)
        };
        sum += len;
        sizes.push(len);
    }
    sizes
}

/// A store of few pages for its slab classes (8 MiB in 256 KiB pages: 32 pages, 27
/// classes): the most recent quarter of the memory survives four times the memory of
/// 100 B-500 KB values. A class left with a single page it no longer writes to used to keep
/// it, so classes written to now evicted their fresh items instead (2 of the last 48 lost).
#[test]
fn recent_items_survive_mixed_sizes_in_a_small_store() {
    let cfg = StoreConfig {
        page_size: 256 << 10,
        ..eviction_config(8 << 20)
    };
    let (store, _) = store_with_clock(cfg);
    let mut rng = Sizes(0x9e37_79b9_7f4a_7c1d);
    let size = |r: &mut Sizes| r.log_uniform(100, 500 << 10);
    let sizes = two_phases(&mut rng, 32 << 20, size, size);
    let n = recent_items_survive(&store, "few", &sizes, 2 << 20);
    assert!(n > 20, "{n}");
}

/// 16 MiB in 1 MiB pages: values of 100 B-2 KB (a page for each of their 13 classes), then
/// 20-500 KB values (all in the largest class). The small classes' single pages used to stay
/// with them, leaving 3 pages to the large values: 4 of the last 15 were lost.
#[test]
fn recent_items_survive_a_shift_to_large_values_in_a_small_store() {
    let (store, _) = store_with_clock(eviction_config(16 << 20));
    let mut rng = Sizes(0x9e37_79b9_7f4a_7c05);
    let sizes = two_phases(
        &mut rng,
        64 << 20,
        |r| r.uniform(100, 2000),
        |r| r.uniform(20 << 10, 500 << 10),
    );
    let n = recent_items_survive(&store, "up", &sizes, 4 << 20);
    assert!(n > 10, "{n}");
}

/// The other way round: 20-500 KB values, then 100 B-2 KB values, in the small store of
/// `recent_items_survive_mixed_sizes_in_a_small_store`.
#[test]
fn recent_items_survive_a_shift_to_small_values_in_a_small_store() {
    let cfg = StoreConfig {
        page_size: 256 << 10,
        ..eviction_config(8 << 20)
    };
    let (store, _) = store_with_clock(cfg);
    let mut rng = Sizes(0x9e37_79b9_7f4a_7c1d);
    let sizes = two_phases(
        &mut rng,
        32 << 20,
        |r| r.uniform(20 << 10, 500 << 10),
        |r| r.uniform(100, 2000),
    );
    let n = recent_items_survive(&store, "down", &sizes, 2 << 20);
    assert!(n > 1000, "{n}");
}
