//! Unit tests of the store API on small configurations.

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
        max_chunk - 40,
        max_chunk - 31,
        max_chunk - 30,
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
    assert_eq!(store.get(b"t", |i| i.seq()), Some(seq), "the item carries it");
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
    assert_eq!(ok.seq, seq + 2, "a flush takes a seq; numbers are never reused");
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
    store.insert_item(&item).expect("insert");
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
        .insert_item(&expired)
        .expect("expired insert is dropped");
    assert_eq!(value(&store, b"moved"), None);
    let forever = OwnedItem {
        expires_at: 0,
        ..item
    };
    store.insert_item(&forever).expect("insert");
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
            .position(|c| c.chunk_size >= 30 + 10 + 60)
            .expect("class")
    };
    let before = store.stats();
    assert_eq!(before.pages_free, 0);
    let big_class = before
        .classes
        .iter()
        .position(|c| c.chunk_size >= 30 + 10 + 2000)
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
