//! Moving buckets between real `shoald` processes while they serve: a node that joins gets
//! its share, a node stopped with SIGTERM hands its buckets off and leaves, and every key
//! written before reads back byte for byte from its new owner.

mod cluster_common;

use cluster_common::{routed, Cluster, Member, BUCKETS, SETTLE};
use shoal_client::blocking::Client;
use shoal_proto::cluster::TableView;
use shoal_tests::wait_for;
use std::time::Duration;

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 300)).into_bytes()
}

/// Writes `n` keys through a routed client.
fn write_keys(c: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        c.set(format!("{prefix}{i}").as_bytes(), value(i), 0, 0)
            .unwrap_or_else(|e| panic!("set {prefix}{i}: {e}"));
    }
}

/// Reads them all back through a routed client.
fn check_keys(c: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let got = c
            .get(key.as_bytes())
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(got.map(|v| v.value.to_vec()), Some(value(i)), "{key}");
    }
}

/// Whether no bucket moves and the active members' shares differ by at most one.
fn balanced(t: &TableView, members: usize) -> bool {
    let counts = t.owned_counts();
    counts.len() == members
        && counts
            .iter()
            .max()
            .zip(counts.iter().min())
            .is_some_and(|(a, b)| a - b <= 1)
        && counts.iter().sum::<u32>() == BUCKETS
}

#[test]
fn a_joining_node_gets_its_share_and_every_key_moves_with_its_bucket() {
    let mut c = Cluster::start(1, &[]);
    let seed = c.members[0].native();
    let writer = routed(seed);
    write_keys(&writer, "k", 4000);
    let joiner = Member::start("node1", &["--join", &c.members[0].peer()]);
    c.members.push(joiner);
    assert!(
        wait_for(SETTLE, || c.members[0]
            .table()
            .is_some_and(|t| balanced(&t, 2))),
        "no even spread: {:?}",
        c.members[0].table().map(|t| t.owned_counts())
    );
    check_keys(&routed(seed), "k", 4000);
    // Each node holds exactly the items of the buckets it owns.
    let items: Vec<u64> = c
        .statuses()
        .iter()
        .map(|s| s.as_ref().expect("status").items)
        .collect();
    assert_eq!(items.iter().sum::<u64>(), 4000, "{items:?}");
    assert!(items.iter().all(|&n| n > 1000), "{items:?}");
}

#[test]
fn sigterm_hands_every_bucket_off_and_the_node_rejoins_as_a_new_member() {
    let mut c = Cluster::start(3, &[]);
    let seed = c.members[0].native();
    write_keys(&routed(seed), "h", 3000);
    let before = c.members[2].status().expect("status").node_id;
    let status = c.members[2].proc.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(
        !c.members[2].dir.0.join("savefile").exists(),
        "a node that handed everything off writes no savefile"
    );
    assert!(
        wait_for(SETTLE, || c.members[0].table().is_some_and(|t| t
            .nodes
            .len()
            == 2
            && balanced(&t, 2))),
        "the stopped node did not leave: {:?}",
        c.members[0].table()
    );
    check_keys(&routed(seed), "h", 3000);
    // Started again with the same flags, it joins as a new member and gets its share.
    c.members[2].proc.restart();
    assert!(
        wait_for(SETTLE, || c.members[0].table().is_some_and(|t| t
            .nodes
            .len()
            == 3
            && balanced(&t, 3))),
        "the restarted node got no share: {:?}",
        c.members[0].table().map(|t| t.owned_counts())
    );
    let after = c.members[2].status().expect("status").node_id;
    assert_ne!(before, after, "a node that left comes back under a new id");
    check_keys(&routed(seed), "h", 3000);
}

/// A memcached `stats` value of `member`.
fn stat(member: &Member, name: &str) -> u64 {
    cluster_common::stat(cluster_common::mc(member), name)
}

/// `n` keys of `bucket`.
fn keys_of_bucket(bucket: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("b{i}"))
        .filter(|k| shoal_proto::hash::bucket_of(k.as_bytes(), BUCKETS) == bucket)
        .take(n)
        .collect()
}

/// Two nodes of the fault build whose moves stall at `phase` (a parked stall lasts
/// `park_timeout`), movement planning paused, 50 keys written to a bucket of node 0, and a
/// move of that bucket to node 1 started and seen at the stall by node 0's status.
struct StalledMove {
    c: Cluster,
    admin: Client,
    bucket: u32,
    keys: Vec<String>,
    src_id: [u8; 16],
}

impl StalledMove {
    fn start(phase: &str, park_timeout: &str) -> StalledMove {
        // No replicas: the move to the other node copies the bucket (a move to an in-sync
        // replica copies nothing, so it has none of these phases).
        let flags: &[&str] = &[
            "--fault-stall-move-at",
            phase,
            "--park-timeout",
            park_timeout,
            "--replicas",
            "0",
        ];
        let c = Cluster::start_nodes(shoal_tests::fault_shoald_binary(), &[flags, flags]);
        let admin = routed(c.members[0].native());
        admin
            .cluster_admin(shoal_proto::cluster::AdminRequest::Pause(true))
            .expect("pause");
        let table = c.members[0].table().expect("table");
        let src_id = c.members[0].status().expect("status").node_id;
        let dst_id = c.members[1].status().expect("status").node_id;
        let bucket = (0..BUCKETS)
            .find(|&b| table.primary_of(b).is_some_and(|p| p.id == src_id))
            .expect("a bucket of the source");
        let keys = keys_of_bucket(bucket, 50);
        for k in &keys {
            admin.set(k.as_bytes(), k.as_bytes(), 0, 0).expect("set");
        }
        admin
            .cluster_admin(shoal_proto::cluster::AdminRequest::Move { bucket, to: dst_id })
            .expect("move");
        assert!(
            wait_for(SETTLE, || c.members[0].status().is_some_and(|s| s
                .moves
                .iter()
                .any(|m| m.bucket == bucket && m.phase.name() == phase))),
            "{phase}: the move did not reach its stall: {:?}",
            c.members[0].status().map(|s| s.moves)
        );
        StalledMove {
            c,
            admin,
            bucket,
            keys,
            src_id,
        }
    }
}

impl StalledMove {
    /// Resumes movement (a snapshot or tail stall ends) and waits until the target is the
    /// bucket's primary.
    fn finish(&self) {
        let dst_id = self.c.members[1].status().expect("status").node_id;
        self.admin
            .cluster_admin(shoal_proto::cluster::AdminRequest::Pause(false))
            .expect("resume");
        assert!(
            wait_for(SETTLE, || self.c.members[0].table().is_some_and(|t| t
                .primary_of(self.bucket)
                .is_some_and(|p| p.id == dst_id))),
            "the move did not finish"
        );
    }
}

#[test]
fn a_move_cancelled_at_each_phase_leaves_the_target_nothing_and_the_source_serving() {
    for phase in ["snapshot", "tail", "in-sync", "parked"] {
        let StalledMove {
            c,
            admin,
            bucket,
            keys,
            src_id,
        } = StalledMove::start(phase, "10s");
        let (src, dst) = (0usize, 1usize);
        // At the stall the target holds the copy (nothing yet at the snapshot stall).
        let want = if phase == "snapshot" {
            0
        } else {
            keys.len() as u64
        };
        assert!(
            wait_for(SETTLE, || stat(&c.members[dst], "copy_items") == want),
            "{phase}: {:?}",
            c.members[src].status().map(|s| s.moves)
        );
        admin
            .cluster_admin(shoal_proto::cluster::AdminRequest::CancelMove { bucket })
            .expect("cancel");
        assert!(
            wait_for(SETTLE, || stat(&c.members[dst], "copy_items") == 0
                && c.members[src].status().is_some_and(|s| s.moves.is_empty())),
            "{phase}: the target dropped its copy"
        );
        let reader = routed(c.members[1].native());
        for k in &keys {
            let got = reader
                .get(k.as_bytes())
                .expect("get")
                .map(|v| v.value.to_vec());
            assert_eq!(got, Some(k.clone().into_bytes()), "{phase}: {k}");
        }
        let owner = c.members[0].table().expect("table");
        assert_eq!(
            owner.primary_of(bucket).map(|p| p.id),
            Some(src_id),
            "{phase}"
        );
        reader
            .set(keys[0].as_bytes(), b"after", 0, 0)
            .expect("the source takes writes");
    }
}

#[test]
fn a_kill_of_the_source_or_the_target_at_each_phase_never_gives_a_wrong_value() {
    for phase in ["snapshot", "tail", "in-sync", "parked"] {
        for kill_source in [false, true] {
            // A parked stall lasts the park timeout (then the move goes on): short, so the
            // requests it holds are answered within the client's deadline.
            let StalledMove {
                mut c,
                admin,
                bucket,
                keys,
                ..
            } = StalledMove::start(phase, "1s");
            let victim = if kill_source { 0 } else { 1 };
            c.members[victim].proc.kill();
            c.members[victim].proc.restart();
            // The move goes on or ends; either way every key reads as written or, where its
            // only copy died with the source, as a miss; never anything else.
            let reader = routed(c.members[1 - victim].native());
            assert!(
                wait_for(SETTLE, || keys.iter().all(|k| {
                    match reader.get(k.as_bytes()) {
                        Ok(Some(v)) => {
                            assert_eq!(&v.value[..], k.as_bytes(), "{phase}: {k}");
                            true
                        }
                        Ok(None) => kill_source,
                        Err(e) => {
                            eprintln!("{phase}: {k}: {e}");
                            false
                        }
                    }
                })),
                "{phase}, killed {}: keys did not read back",
                if kill_source { "source" } else { "target" }
            );
            let _ = admin.cluster_admin(shoal_proto::cluster::AdminRequest::CancelMove { bucket });
        }
    }
}

#[test]
fn sets_deletes_touches_and_appends_in_every_phase_reach_the_new_owner() {
    for phase in ["snapshot", "tail", "in-sync", "parked"] {
        // A parked stall lasts the park timeout; the requests it holds wait that long.
        let stalled = StalledMove::start(phase, "1s");
        let (c, keys) = (&stalled.c, &stalled.keys);
        let writer = routed(c.members[1].native());
        let (set, rest) = keys.split_at(10);
        let (deleted, rest) = rest.split_at(10);
        let (touched, rest) = rest.split_at(10);
        let (appended, untouched) = rest.split_at(10);
        for k in set {
            writer.set(k.as_bytes(), b"new", 0, 0).expect("set");
        }
        for k in deleted {
            assert!(writer.delete(k.as_bytes()).expect("delete"), "{phase}: {k}");
        }
        for k in touched {
            assert!(
                writer.touch(k.as_bytes(), 1000).expect("touch"),
                "{phase}: {k}"
            );
        }
        for k in appended {
            writer.append(k.as_bytes(), b"+x").expect("append");
        }
        // Let the move go on (the parked stall ends by itself).
        stalled.finish();
        let get = |k: &String| {
            writer
                .get(k.as_bytes())
                .expect("get")
                .map(|v| v.value.to_vec())
        };
        for k in set {
            assert_eq!(get(k), Some(b"new".to_vec()), "{phase}: {k}");
        }
        for k in deleted {
            assert_eq!(get(k), None, "{phase}: {k}");
        }
        for k in appended {
            assert_eq!(get(k), Some(format!("{k}+x").into_bytes()), "{phase}: {k}");
        }
        for k in untouched {
            assert_eq!(get(k), Some(k.clone().into_bytes()), "{phase}: {k}");
        }
        // The touched keys kept their value and their new time to live on the new owner.
        let mut text = cluster_common::Text::connect(cluster_common::mc(&c.members[1]));
        for k in touched {
            assert_eq!(get(k), Some(k.clone().into_bytes()), "{phase}: {k}");
            let meta = text.ask(&format!("mg {k} t\r\n"));
            let ttl: i64 = meta
                .split_whitespace()
                .find_map(|f| f.strip_prefix('t'))
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("{phase}: {k}: {meta}"));
            assert!((1..=1000).contains(&ttl), "{phase}: {k}: {meta}");
        }
    }
}

#[test]
fn a_flush_all_during_a_move_leaves_nothing_of_the_bucket_on_the_new_owner() {
    let stalled = StalledMove::start("tail", "1s");
    let (c, keys) = (&stalled.c, &stalled.keys);
    let mut text = cluster_common::Text::connect(cluster_common::mc(&c.members[0]));
    assert_eq!(text.ask("flush_all\r\n"), "OK\r\n");
    stalled.finish();
    let reader = routed(c.members[1].native());
    for k in keys {
        assert_eq!(reader.get(k.as_bytes()).expect("get"), None, "{k}");
    }
    reader.set(keys[0].as_bytes(), b"after", 0, 0).expect("set");
    assert_eq!(
        reader
            .get(keys[0].as_bytes())
            .expect("get")
            .map(|v| v.value.to_vec()),
        Some(b"after".to_vec())
    );
}

#[test]
fn in_sync_a_write_is_acknowledged_only_once_the_target_holds_it() {
    let stalled = StalledMove::start("in-sync", "2s");
    let (c, bucket) = (&stalled.c, stalled.bucket);
    let (src, dst) = (&c.members[0], &c.members[1]);
    let held = stalled.keys.len() as u64;
    assert!(
        wait_for(SETTLE, || stat(dst, "copy_items") == held),
        "the target caught up before the stall"
    );
    let fresh = keys_of_bucket(bucket, stalled.keys.len() + 30);
    let fresh = &fresh[stalled.keys.len()..];
    // Native, routed to the source; memcached on the source's port; memcached on the
    // target's port (forwarded to the source): each write's reply comes only once the
    // target holds it, so the target's copy has it when the client hears OK.
    let native = routed(src.native());
    let mut direct = cluster_common::Text::connect(cluster_common::mc(src));
    let mut forwarded = cluster_common::Text::connect(cluster_common::mc(dst));
    for (i, k) in fresh.iter().enumerate() {
        match i % 3 {
            0 => drop(native.set(k.as_bytes(), b"v", 0, 0).expect("set")),
            1 => assert_eq!(direct.set(k, "v"), "STORED\r\n"),
            _ => assert_eq!(forwarded.set(k, "v"), "STORED\r\n"),
        }
        assert_eq!(stat(dst, "copy_items"), held + i as u64 + 1, "after {k}");
    }
    // A delete too.
    assert_eq!(
        direct.ask(&format!("delete {}\r\n", fresh[0])),
        "DELETED\r\n"
    );
    assert_eq!(stat(dst, "copy_items"), held + fresh.len() as u64 - 1);

    // A target that stops answering leaves the in-sync set: writes are acknowledged by the
    // source alone (after the in-sync timeout) instead of hanging.
    dst.proc.pause();
    assert_eq!(direct.set(&fresh[1], "w"), "STORED\r\n");
    dst.proc.resume();
    stalled.finish();
    let reader = routed(dst.native());
    let got = reader.get(fresh[1].as_bytes()).expect("get");
    assert_eq!(got.map(|v| v.value.to_vec()), Some(b"w".to_vec()));
    assert_eq!(reader.get(fresh[0].as_bytes()).expect("get"), None);
}
