//! Concurrency: many threads on one store (CAS increments, snapshots under writes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use shoald::store::{SetMode, Store, StoreConfig, StoreError};
use shoald::testing::wait_for;
use std::time::Duration;

fn config() -> StoreConfig {
    StoreConfig {
        memory: 16 << 20,
        page_size: 64 << 10,
        buckets: 8,
        max_value: 64 << 10,
        ..StoreConfig::default()
    }
}

#[test]
fn concurrent_cas_increments_are_never_lost() {
    const THREADS: u64 = 8;
    const EACH: u64 = 500;
    let store = Store::new(config()).expect("config");
    store
        .set(SetMode::Set, b"counter", b"0", 0, 0)
        .expect("set");
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let store = store.clone();
            s.spawn(move || {
                let mut done = 0;
                while done < EACH {
                    let (n, hash) = store
                        .get(b"counter", |item| {
                            let text = String::from_utf8(item.value_vec()).expect("utf8");
                            (text.parse::<u64>().expect("number"), item.hash())
                        })
                        .expect("counter exists");
                    let next = (n + 1).to_string();
                    match store.set(SetMode::Cas(hash), b"counter", next.as_bytes(), 0, 0) {
                        Ok(_) => done += 1,
                        Err(StoreError::Exists) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            });
        }
    });
    let end = store
        .get(b"counter", |item| item.value_vec())
        .expect("counter");
    assert_eq!(end, (THREADS * EACH).to_string().into_bytes());
}

#[test]
fn snapshot_under_writes_sees_every_old_item_once_and_remove_frees_the_bucket() {
    let store = Store::new(config()).expect("config");
    let bucket = 5;
    let mut stable = HashMap::new();
    let mut volatile = Vec::new();
    for i in 0..20_000u32 {
        let key = format!("pre{i}").into_bytes();
        let value = format!("value-{i}-{}", "x".repeat((i % 300) as usize)).into_bytes();
        store.set(SetMode::Set, &key, &value, i, 0).expect("set");
        if store.bucket_of(&key) == bucket {
            if i % 4 == 0 {
                volatile.push(key);
            } else {
                stable.insert(key, value);
            }
        }
    }
    let stop = AtomicBool::new(false);
    let writes = AtomicUsize::new(0);
    let items = std::thread::scope(|s| {
        for t in 0..4u32 {
            let (store, volatile, stop, writes) = (store.clone(), &volatile, &stop, &writes);
            s.spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("new{t}-{i}");
                    store
                        .set(SetMode::Set, key.as_bytes(), b"fresh", 0, 0)
                        .expect("set");
                    let v = &volatile[(i as usize * 7 + t as usize) % volatile.len()];
                    if i % 3 == 2 {
                        let _ = store.delete(v, None);
                    } else {
                        store.set(SetMode::Set, v, b"rewritten", 0, 0).expect("set");
                    }
                    i += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The snapshot must run while writers are busy: wait until each has done some work.
        let busy = wait_for(Duration::from_secs(30), || {
            writes.load(Ordering::Relaxed) >= 4_000
        });
        if !busy {
            // Let the scope's threads end, so the assertion fails instead of hanging.
            stop.store(true, Ordering::Relaxed);
        }
        assert!(busy, "the writers stopped writing");
        let snapshot = store.snapshot_bucket(bucket);
        let start_seq = snapshot.start_seq();
        let items: Vec<_> = snapshot.collect();
        stop.store(true, Ordering::Relaxed);
        assert!(items.iter().all(|item| item.seq <= start_seq));
        items
    });
    let mut seen = HashMap::new();
    for item in &items {
        assert_eq!(store.bucket_of(&item.key), bucket);
        assert!(
            seen.insert(item.key.clone(), item.value.clone()).is_none(),
            "key twice"
        );
    }
    for (key, value) in &stable {
        assert_eq!(seen.get(key), Some(value), "stable key missing");
    }
    let total_before = store.stats();
    let in_bucket = store.bucket_stats(bucket);
    let removed = store.remove_bucket(bucket);
    assert_eq!(removed as u64, in_bucket.items);
    let after = store.stats();
    assert_eq!(store.bucket_stats(bucket).items, 0);
    assert_eq!(store.bucket_stats(bucket).bytes, 0);
    assert_eq!(after.bytes, total_before.bytes - in_bucket.bytes);
    let chunk_bytes: u64 = after.classes.iter().map(|c| c.used * c.chunk_size).sum();
    assert_eq!(
        chunk_bytes, after.bytes,
        "every chunk of the bucket was freed"
    );
    assert_eq!(store.snapshot_bucket(bucket).count(), 0);
}
