//! R13, last-node persistence on real processes: 100,000 keys of 1 byte to the largest value,
//! some deleted, some with a 5 s and some with a 200 s TTL; SIGTERM; 10 s of downtime
//! (simulated with the test-only clock offset); restart. Every live key comes back byte-exact
//! with its flags and hash, no deleted or 5 s key comes back, every 200 s key comes back with
//! 185..=200 s left.

mod savefile_common;

use std::time::Duration;

use savefile_common::*;
use shoal_proto::hash::value_hash;
use shoal_proto::{Command, ReplyBody, Status, StoreMode};
use shoal_tests::{RawConn, ServerProcess};
use shoald::persist::savefile::read_all;

const KEYS: usize = 100_000;
const MAX_VALUE: usize = 64 << 10;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Live,
    Deleted,
    Ttl5,
    Ttl200,
}

fn class(i: usize) -> Class {
    match i % 100 {
        10 => Class::Ttl5,
        11 => Class::Ttl200,
        12 => Class::Deleted,
        _ => Class::Live,
    }
}

fn key(i: usize) -> Vec<u8> {
    let mut k = format!("key:{i:06}").into_bytes();
    if i.is_multiple_of(97) {
        k.resize(250, b'k');
    }
    k
}

/// 1 % at the largest value, 9 % between 1 KiB and 16 KiB, the rest 1 to 1000 bytes:
/// about 190 MB in all.
fn size(i: usize) -> usize {
    match i % 100 {
        0 => MAX_VALUE,
        1..=9 => 1024 + (i * 7919) % (15 << 10),
        _ => 1 + (i * 31) % 1000,
    }
}

fn flags(i: usize) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761)
}

fn start(dir: &TempDir, clock_offset: u32) -> ServerProcess {
    ServerProcess::start(&[
        "--data-dir",
        &dir.arg(),
        "--memory",
        "1GiB",
        "--max-value-size",
        "64KiB",
        "--test-clock-offset",
        &clock_offset.to_string(),
    ])
}

/// Checks every key against its class; returns the number found.
fn check_all(conn: &mut RawConn, hashes: &[u64], ttl200_present: bool) -> usize {
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let mut found = 0;
    pipeline(
        conn,
        keys.iter().map(|k| Command::GetWithHash { key: k }),
        |i, r| {
            let expect_present = match class(i) {
                Class::Live => true,
                Class::Ttl200 => ttl200_present,
                Class::Deleted | Class::Ttl5 => false,
            };
            match (r.status, r.body) {
                (Status::Ok, ReplyBody::ValueWithHash(f)) => {
                    assert!(expect_present, "key {i} ({:?}) came back", class(i));
                    assert_eq!(f.flags, flags(i), "flags of key {i}");
                    assert_eq!(f.hash, hashes[i], "hash of key {i}");
                    assert!(
                        f.value == value_bytes(i as u64, size(i)).as_slice(),
                        "value of key {i} differs"
                    );
                    found += 1;
                }
                (Status::NotFound, _) => {
                    assert!(!expect_present, "key {i} ({:?}) is missing", class(i))
                }
                (status, _) => panic!("GETH of key {i}: {status:?}"),
            }
        },
    );
    found
}

#[test]
fn last_node_restart_brings_back_every_live_key_and_no_dead_one() {
    let dir = TempDir::new("savefile-restart");
    let mut server = start(&dir, 0);
    let mut conn = RawConn::hello(server.native_addr);

    // Write everything, pipelined; remember each stored hash.
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let values: Vec<Vec<u8>> = (0..KEYS).map(|i| value_bytes(i as u64, size(i))).collect();
    let mut hashes = vec![0u64; KEYS];
    pipeline(
        &mut conn,
        (0..KEYS).map(|i| Command::Store {
            mode: StoreMode::Set,
            key: &keys[i],
            value: &values[i],
            flags: flags(i),
            ttl: match class(i) {
                Class::Ttl5 => 5,
                Class::Ttl200 => 200,
                _ => 0,
            },
        }),
        |i, r| match r.body {
            ReplyBody::Stored { hash } => hashes[i] = hash,
            _ => panic!("SET of key {i}: {:?}", r.status),
        },
    );
    for (i, v) in values.iter().enumerate() {
        assert_eq!(hashes[i], value_hash(v), "the hash is the value hash");
    }
    drop(values);
    let deleted: Vec<usize> = (0..KEYS).filter(|&i| class(i) == Class::Deleted).collect();
    assert_eq!(deleted.len(), 1_000);
    pipeline(
        &mut conn,
        deleted.iter().map(|&i| Command::Delete {
            key: &keys[i],
            expected: None,
        }),
        |_, r| assert_eq!(r.status, Status::Ok),
    );
    assert_eq!(
        stat(&mut conn, "evictions").as_deref(),
        Some("0"),
        "the data set fits in memory"
    );
    drop(conn);

    // Graceful stop: exit 0 with a complete savefile.
    let status = server.terminate(Duration::from_secs(60));
    assert!(status.success(), "shoald exited with {status}");
    assert!(dir.path().join("savefile").exists(), "{:?}", dir.names());

    // 10 s down, simulated: the restarted node's clocks run 10 s ahead.
    let mut server = start(&dir, 10);
    let mut conn = RawConn::hello(server.native_addr);
    let names = dir.names();
    assert!(
        !names.contains(&"savefile".to_string()),
        "loaded file set aside: {names:?}"
    );
    assert!(!names.contains(&"savefile.tmp".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("savefile.loaded-")),
        "{names:?}"
    );
    let live = KEYS - 3_000;
    assert_eq!(check_all(&mut conn, &hashes, true), live + 1_000);
    assert_eq!(
        stat(&mut conn, "curr_items"),
        Some((live + 1_000).to_string())
    );

    // Remaining TTLs: write a savefile now and read the expiry of every 200 s key from it.
    let (items, _) = save(&mut conn).expect("SAVE");
    assert_eq!(items as usize, live + 1_000);
    let node_now = unix_now() + 10;
    let mut ttl200 = 0;
    read_all(
        std::fs::File::open(dir.path().join("savefile")).expect("savefile"),
        |_, rec| {
            let i: usize = std::str::from_utf8(&rec.key[4..10])
                .expect("ascii key")
                .parse()
                .expect("key number");
            match class(i) {
                Class::Ttl200 => {
                    let left = rec.expires_at.saturating_sub(node_now);
                    assert!((185..=200).contains(&left), "key {i} has {left} s left");
                    ttl200 += 1;
                }
                _ => assert_eq!(rec.expires_at, 0, "key {i} has no TTL"),
            }
        },
    )
    .expect("the savefile reads back");
    assert_eq!(ttl200, 1_000);
    drop(conn);

    // Stop again and come back 200 s later: the 200 s keys are gone, the rest is still there.
    assert!(server.terminate(Duration::from_secs(60)).success());
    let server = start(&dir, 10 + 200);
    let mut conn = RawConn::hello(server.native_addr);
    assert_eq!(check_all(&mut conn, &hashes, false), live);
    let loaded = dir
        .names()
        .into_iter()
        .filter(|n| n.starts_with("savefile.loaded-"))
        .count();
    assert!(loaded <= 2, "at most two loaded savefiles are kept");
}
