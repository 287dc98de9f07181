//! Memory pressure: writing ten times the configured memory in mixed sizes keeps the store
//! inside its slab memory plus the documented overhead, with consistent accounting.

use shoald::store::{SetMode, Store, StoreConfig, StoreStats};

/// Cheap deterministic generator (xorshift), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_accounting(stats: &StoreStats, store: &Store, max_items: u64) {
    assert!(
        stats.bytes <= stats.memory,
        "{} > {}",
        stats.bytes,
        stats.memory
    );
    assert_eq!(stats.pages_used + stats.pages_free, stats.pages_total);
    let class_pages: u64 = stats.classes.iter().map(|c| c.pages).sum();
    assert_eq!(class_pages, stats.pages_used);
    let chunk_bytes: u64 = stats.classes.iter().map(|c| c.used * c.chunk_size).sum();
    assert_eq!(
        chunk_bytes, stats.bytes,
        "class and bucket accounting agree"
    );
    for c in &stats.classes {
        assert_eq!(c.used + c.free, c.chunks, "class {}", c.chunk_size);
    }
    let bucket_bytes: u64 = (0..store.buckets())
        .map(|b| store.bucket_stats(b).bytes)
        .sum();
    let bucket_items: u64 = (0..store.buckets())
        .map(|b| store.bucket_stats(b).items)
        .sum();
    assert_eq!((bucket_bytes, bucket_items), (stats.bytes, stats.items));
    // Documented overhead: index <= ~12 bytes per item at the peak, plus ~128 B per table;
    // records: ~40 B per bucket, 64 B per page, 128 B per class and partition, scratch.
    let index_bound = 12 * max_items + u64::from(store.buckets()) * 128;
    assert!(
        stats.index_bytes <= index_bound,
        "index {} > {}",
        stats.index_bytes,
        index_bound
    );
    let other_bound = u64::from(store.buckets()) * 64
        + stats.pages_total * 64
        + stats.partitions * (stats.classes.len() as u64 * 128 + (64 << 10));
    assert!(
        stats.overhead_bytes <= other_bound,
        "overhead {} > {}",
        stats.overhead_bytes,
        other_bound
    );
}

#[test]
fn ten_times_memory_in_mixed_sizes_stays_within_budget() {
    let config = StoreConfig {
        memory: 8 << 20,
        page_size: 64 << 10,
        buckets: 64,
        max_value: 100 << 10,
        ..StoreConfig::default()
    };
    let store = Store::new(config.clone()).expect("config");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0usize;
    let mut max_items = 0;
    let mut i = 0u64;
    let mut value = Vec::new();
    while written < 10 * config.memory {
        // Mostly small values, some medium, a few chained ones.
        let len = match rng.next() % 100 {
            0..=69 => (rng.next() % 200) as usize,
            70..=97 => (rng.next() % 4000) as usize,
            _ => (rng.next() % (100 << 10)) as usize,
        };
        value.clear();
        value.extend((0..len).map(|j| (j as u64 ^ i) as u8));
        let key = format!("key:{i}");
        store
            .set(SetMode::Set, key.as_bytes(), &value, 0, 0)
            .expect("set under pressure");
        let back = store
            .get(key.as_bytes(), |item| item.value_vec())
            .expect("just written");
        assert_eq!(back, value);
        written += len + key.len();
        i += 1;
        if i % 500 == 499 {
            let stats = store.stats();
            max_items = max_items.max(stats.items);
            check_accounting(&stats, &store, max_items);
        }
    }
    let stats = store.stats();
    max_items = max_items.max(stats.items);
    check_accounting(&stats, &store, max_items);
    assert!(stats.evictions > 0);
    assert_eq!(stats.pages_free, 0);
    assert!(
        stats.bytes > stats.memory / 2,
        "memory is put to use: {}",
        stats.bytes
    );
}

/// Every slab class in use at the default size, with a third of memory filled: nothing is
/// evicted (each partition has pages for all its classes).
#[test]
fn mixed_value_sizes_at_the_default_memory_do_not_evict_early() {
    let store = Store::new(StoreConfig::default()).expect("default store");
    let sizes: Vec<usize> = (0..30).map(|i| (40.0 * 1.27f64.powi(i)) as usize).collect();
    let budget = StoreConfig::default().memory / 3;
    let mut written = 0;
    let mut i = 0u32;
    while written < budget {
        let size = sizes[i as usize % sizes.len()].min(64 * 1024);
        let value = vec![b'v'; size];
        store
            .set(SetMode::Set, format!("key{i}").as_bytes(), &value, 0, 0)
            .expect("set");
        written += size + 16;
        i += 1;
    }
    let stats = store.stats();
    assert_eq!(stats.evictions, 0, "{i} items, {written} bytes in 64 MiB");
    assert_eq!(stats.items, u64::from(i));
}
