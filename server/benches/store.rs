//! Store micro-benchmark: get and set at 1 and 2 threads (ns per operation), a set into a
//! full store (every set evicts), and the capacity of the default 64 MiB store for 16-byte
//! keys with 100-byte values.
//!
//! `cargo bench -p shoald --bench store` (plain timing loop, no harness). Compare the capacity
//! with memcached using `server/benches/memcached_capacity.py`.

use std::time::Instant;

use shoald::store::{SetMode, Store, StoreConfig};

const KEYS: u64 = 200_000;
const OPS_PER_THREAD: u64 = 2_000_000;

/// A 16-byte key `key:` + 12 decimal digits, built without allocating.
fn key(mut i: u64) -> [u8; 16] {
    let mut k = *b"key:000000000000";
    for at in (4..16).rev() {
        k[at] = b'0' + (i % 10) as u8;
        i /= 10;
    }
    k
}

/// Runs `op(thread, i)` OPS_PER_THREAD times on each of `threads` threads; returns ns/op as
/// seen by one thread and the aggregate throughput in Mops/s.
fn run(threads: u64, op: impl Fn(u64, u64) + Sync) -> (f64, f64) {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || {
                for i in 0..OPS_PER_THREAD {
                    op(t, i);
                }
            });
        }
    });
    let elapsed = start.elapsed().as_nanos() as f64;
    let total = (threads * OPS_PER_THREAD) as f64;
    (elapsed / OPS_PER_THREAD as f64, total / elapsed * 1e3)
}

fn main() {
    let store = Store::new(StoreConfig::default()).expect("default config");
    let value = [b'v'; 100];
    for i in 0..KEYS {
        store
            .set(SetMode::Set, &key(i), &value, 0, 0)
            .expect("prefill");
    }
    println!("partitions: {}", store.stats().partitions);
    for threads in [1, 2] {
        let (ns, mops) = run(threads, |t, i| {
            let k = key((i.wrapping_mul(0x9E37_79B9) + t * 7919) % KEYS);
            let hit = store.get(&k, |item| item.value_len());
            std::hint::black_box(hit);
        });
        println!("get  threads={threads}: {ns:7.1} ns/op per thread, {mops:6.2} Mops/s total");
        let (ns, mops) = run(threads, |t, i| {
            let k = key((i.wrapping_mul(0x9E37_79B9) + t * 7919) % KEYS);
            let ok = store.set(SetMode::Set, &k, &value, 0, 0);
            std::hint::black_box(ok.is_ok());
        });
        println!("set  threads={threads}: {ns:7.1} ns/op per thread, {mops:6.2} Mops/s total");
    }

    // Capacity: how many 16 + 100 byte items fit in the default 64 MiB. The second half of
    // the fill evicts on every set: its time is the cost of a set into a full store.
    let store = Store::new(StoreConfig::default()).expect("default config");
    let fill = |from: u64, to: u64| {
        for i in from..to {
            store
                .set(SetMode::Set, &key(i), &value, 0, 0)
                .expect("fill");
        }
    };
    fill(0, 500_000);
    let start = Instant::now();
    fill(500_000, 1_000_000);
    let ns = start.elapsed().as_nanos() as f64 / 500_000.0;
    println!("set into a full store (evicting), 1 thread: {ns:7.1} ns/op");
    let stats = store.stats();
    println!(
        "capacity: {} items of 16-byte key + 100-byte value in {} MiB ({} evictions, index {} KiB, other overhead {} KiB)",
        stats.items,
        stats.memory >> 20,
        stats.evictions,
        stats.index_bytes >> 10,
        stats.overhead_bytes >> 10
    );
}
