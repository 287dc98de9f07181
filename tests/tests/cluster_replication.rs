//! Replication between real `shoald` processes: every bucket gets its replicas on other
//! nodes, a write is acknowledged only once every in-sync replica holds it, a replica that
//! stops answering leaves the in-sync set (writes go on) and is rebuilt when it is back, and
//! the replica count changes at run time.

mod cluster_common;

use cluster_common::{mc, routed, stat, workspace_binary, Cluster, Member, Text, BUCKETS, SETTLE};
use shoal_proto::cluster::ReplicationStatus;
use shoal_proto::Status;
use shoal_tests::wait_for;
use std::time::Duration;

/// Every member's replication figures (a member that does not answer counts as zeros).
fn replication(c: &Cluster) -> Vec<ReplicationStatus> {
    c.statuses()
        .into_iter()
        .map(|s| s.map(|s| s.replication).unwrap_or_default())
        .collect()
}

/// Buckets with an in-sync replica, summed over the members (a bucket counts once per
/// replica).
fn in_sync_total(c: &Cluster) -> u32 {
    replication(c).iter().map(|r| r.in_sync_of).sum()
}

/// Items held as replica copies, summed over the members.
fn copies_total(members: &[&Member]) -> u64 {
    members.iter().map(|m| stat(mc(m), "copy_items")).sum()
}

/// Items served, summed over the members.
fn items_total(members: &[&Member]) -> u64 {
    members.iter().map(|m| stat(mc(m), "curr_items")).sum()
}

fn ctl(c: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(workspace_binary("shoal-ctl"))
        .args(["--server", &c.members[0].native().to_string()])
        .args(args)
        .output()
        .expect("run shoal-ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn every_bucket_gets_an_in_sync_replica_and_a_write_is_acknowledged_once_its_replica_holds_it() {
    // The default: one replica per bucket.
    let c = Cluster::start(3, &[]);
    let reps = replication(&c);
    assert_eq!(in_sync_total(&c), BUCKETS, "{reps:?}");
    for r in &reps {
        // Spread: each node holds about a third of the copies.
        assert!(r.replica_of >= BUCKETS / 3 - 2, "{reps:?}");
        assert_eq!(r.replica_of, r.in_sync_of, "{reps:?}");
    }
    let members: Vec<&Member> = c.members.iter().collect();
    // Through a routed native client, a node's memcached port (its own buckets, and others'
    // forwarded): after each reply the item is on its replica already.
    let native = routed(c.members[0].native());
    let mut text = Text::connect(mc(&c.members[1]));
    for i in 0..60u64 {
        let key = format!("r{i}");
        if i % 2 == 0 {
            native.set(key.as_bytes(), b"v", 0, 0).expect("set");
        } else {
            assert_eq!(text.set(&key, "v"), "STORED\r\n");
        }
        assert_eq!(copies_total(&members), i + 1, "after {key}");
    }
    // Every kind of change reaches the replica before its reply: overwrite, append, delete.
    assert_eq!(text.ask("append r1 0 0 1\r\nw\r\n"), "STORED\r\n");
    native.delete(b"r0").expect("delete");
    assert_eq!(copies_total(&members), 59);
    assert_eq!(items_total(&members), 59);
}

#[test]
fn a_replica_that_stops_answering_leaves_the_in_sync_set_and_is_rebuilt_when_back() {
    let c = Cluster::start(3, &[]);
    let members: Vec<&Member> = c.members.iter().collect();
    let native = routed(c.members[0].native());
    for i in 0..200 {
        native
            .set(format!("a{i}").as_bytes(), b"before", 0, 0)
            .expect("set");
    }
    let paused = &c.members[2];
    let held_before = stat(mc(paused), "copy_items");
    assert!(held_before > 0);
    paused.proc.pause();
    // The other primaries take it out of the in-sync set of their buckets (it does not
    // answer within the bound), and their writes go on without it.
    let others = [&c.members[0], &c.members[1]];
    let table = c.members[0].table().expect("table");
    let paused_index = cluster_common::index_in(&table, paused);
    assert!(
        wait_for(SETTLE, || {
            others
                .iter()
                .filter_map(|m| m.status())
                .map(|s| s.replication.building)
                .sum::<u32>()
                > 0
        }),
        "the paused replica never left the in-sync set"
    );
    let mut writer = Text::connect(mc(&c.members[0]));
    let mut written = 0;
    for i in 0..200 {
        let key = format!("a{i}");
        if cluster_common::owner(&table, &key) == paused_index {
            continue; // its primary is the paused node: no failover yet
        }
        let started = std::time::Instant::now();
        assert_eq!(writer.set(&key, "during"), "STORED\r\n");
        // Bounded by the in-sync timeout (1 s) and one commit, not by the pause.
        assert!(started.elapsed() < Duration::from_secs(5), "{key}");
        written += 1;
    }
    assert!(written > 100);
    paused.proc.resume();
    // Back: rebuilt and in sync again; every served item has its copy.
    assert!(
        wait_for(SETTLE, || in_sync_total(&c) == BUCKETS
            && replication(&c).iter().all(|r| r.building == 0)),
        "{:?}",
        replication(&c)
    );
    assert!(wait_for(SETTLE, || copies_total(&members) == items_total(&members)));
    for i in 0..200 {
        let key = format!("a{i}");
        let got = native.get(key.as_bytes()).expect("get").expect("present");
        assert!(
            got.value.as_ref() == b"during" || got.value.as_ref() == b"before",
            "{key}"
        );
    }
}

#[test]
fn the_replica_count_changes_at_run_time() {
    let c = Cluster::start(3, &[]);
    let members: Vec<&Member> = c.members.iter().collect();
    let native = routed(c.members[0].native());
    for i in 0..300 {
        native
            .set(format!("n{i}").as_bytes(), b"x", 0, 0)
            .expect("set");
    }
    assert_eq!(copies_total(&members), 300);

    let (code, out) = ctl(&c, &["set", "replicas", "2"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        wait_for(SETTLE, || in_sync_total(&c) == 2 * BUCKETS),
        "{:?}",
        replication(&c)
    );
    assert!(wait_for(SETTLE, || copies_total(&members) == 600));
    // Each bucket now lives on every node: one primary, two replicas.
    for s in c.statuses().into_iter().map(|s| s.expect("status")) {
        assert_eq!(s.replication.replica_of + s.buckets_owned, BUCKETS, "{s:?}");
    }

    // More than the limit is refused; one node short of copies is not an error (as many as
    // there are other members).
    let (code, out) = ctl(&c, &["set", "replicas", "5"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("at most 4"), "{out}");

    let (code, out) = ctl(&c, &["set", "replicas", "0"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        wait_for(SETTLE, || replication(&c).iter().all(|r| r.replica_of == 0)),
        "{:?}",
        replication(&c)
    );
    assert!(wait_for(SETTLE, || copies_total(&members) == 0));
    assert_eq!(items_total(&members), 300);
    let (code, out) = ctl(&c, &["set", "replicas", "0"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("already 0"), "{out}");
}

#[test]
fn a_move_to_an_in_sync_replica_promotes_its_copy_and_every_key_reads_back() {
    // Two nodes, one replica: every bucket's replica is the other node.
    let c = Cluster::start(2, &[]);
    let members: Vec<&Member> = c.members.iter().collect();
    let table = c.members[0].table().expect("table");
    let key = cluster_common::key_owned_by(&table, &c.members[0], "p");
    let bucket = shoal_proto::hash::bucket_of(key.as_bytes(), BUCKETS);
    let keys: Vec<String> = (0..)
        .map(|i| format!("p{i}"))
        .filter(|k| shoal_proto::hash::bucket_of(k.as_bytes(), BUCKETS) == bucket)
        .take(50)
        .collect();
    let native = routed(c.members[0].native());
    for k in &keys {
        native.set(k.as_bytes(), k.as_bytes(), 0, 0).expect("set");
    }
    let held_before = stat(mc(&c.members[1]), "copy_items");
    let target = c.members[1].status().expect("status").node_id;
    let to: String = target.iter().map(|b| format!("{b:02x}")).collect();
    let (code, out) = ctl(&c, &["move", &bucket.to_string(), "--to", &to]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        wait_for(SETTLE, || c.members[0].table().is_some_and(|t| t
            .primary_of(bucket)
            .is_some_and(|p| p.id == target))),
        "the switchover did not happen"
    );
    // The bucket's items left node 1's replica copies for its served ones (no other write
    // happens, and node 1 is the replica of every other bucket of node 0).
    assert!(
        wait_for(SETTLE, || stat(mc(&c.members[1]), "copy_items")
            == held_before - keys.len() as u64),
        "{} copies on node 1, {held_before} before",
        stat(mc(&c.members[1]), "copy_items")
    );
    for k in &keys {
        let got = native.get(k.as_bytes()).expect("get").expect("present");
        assert_eq!(got.value.as_ref(), k.as_bytes());
    }
    // The old primary becomes the replica again, in sync.
    assert!(c.wait_settled(2, SETTLE), "{:?}", replication(&c));
    assert_eq!(in_sync_total(&c), BUCKETS);
    assert_eq!(copies_total(&members), items_total(&members));
}

/// The value of the next GET reply on `conn` (past TABLE_CHANGED notices); `None` when no
/// reply came within the read timeout, `Some(None)` for anything but a hit.
fn get_reply(conn: &mut shoal_tests::RawConn) -> Option<Option<Vec<u8>>> {
    loop {
        let reply = conn.try_recv(|r| match (r.status, &r.body) {
            (Status::TableChanged, _) => None,
            (_, shoal_proto::ReplyBody::Value { value, .. }) => Some(Some(value.to_vec())),
            _ => Some(None),
        })?;
        if let Some(reply) = reply {
            return Some(reply);
        }
    }
}

#[test]
fn a_read_waits_for_the_replica_only_when_the_item_it_read_is_newer_than_the_replica_holds() {
    use shoal_proto::{Command, Request, StoreMode};
    // Two nodes: every bucket of member 0 has its replica on member 1.
    let c = Cluster::start(2, &[]);
    let (primary, replica) = (&c.members[0], &c.members[1]);
    let table = c.members[0].table().expect("table");
    let keys =
        cluster_common::keys_owned_by(&table, cluster_common::index_in(&table, primary), "w", 200);
    let bucket = |k: &str| shoal_proto::hash::bucket_of(k.as_bytes(), BUCKETS);
    let (old, new) = keys
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            let b = keys[i + 1..].iter().find(|b| bucket(b) == bucket(a))?;
            Some((a.clone(), b.clone()))
        })
        .expect("two keys of one bucket");
    let client = routed(primary.native());
    client.set(old.as_bytes(), b"old", 0, 0).expect("set");
    client.set(new.as_bytes(), b"before", 0, 0).expect("set");
    let all_in_sync = || {
        wait_for(SETTLE, || {
            in_sync_total(&c) == BUCKETS && replication(&c).iter().all(|r| r.building == 0)
        })
    };
    let connect = |timeout| {
        let conn = shoal_tests::RawConn::hello(primary.native());
        conn.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        conn
    };
    let get = |conn: &mut shoal_tests::RawConn, key: &str| {
        conn.send(&Request {
            id: 2,
            command: Command::Get {
                key: key.as_bytes(),
            },
        });
    };
    // The replica is paused, so a write in the bucket is held (the primary cannot take the
    // replica out of the in-sync set either: that needs the paused node's Raft vote).
    // Meanwhile a read of an item the replica holds is answered, and a read of the held
    // write is not. (All of it well within the 5 s lease, after which member 0 would serve
    // nothing.)
    assert!(all_in_sync(), "{:?}", replication(&c));
    replica.proc.pause();
    let mut writer = connect(Duration::from_millis(300));
    writer.send(&Request {
        id: 1,
        command: Command::Store {
            mode: StoreMode::Set,
            key: new.as_bytes(),
            value: b"after",
            flags: 0,
            ttl: 0,
        },
    });
    assert_eq!(get_reply(&mut writer), None, "the write is held");
    let mut fresh = connect(Duration::from_millis(300));
    get(&mut fresh, &new);
    let mut reader = connect(Duration::from_secs(2));
    get(&mut reader, &old);
    assert_eq!(
        get_reply(&mut reader),
        Some(Some(b"old".to_vec())),
        "a read of an item the replica holds waited for a write to another key"
    );
    assert_eq!(
        get_reply(&mut fresh),
        None,
        "a read of a write the replica does not hold was answered"
    );
    replica.proc.resume();
    writer
        .stream
        .set_read_timeout(Some(SETTLE))
        .expect("timeout");
    fresh
        .stream
        .set_read_timeout(Some(SETTLE))
        .expect("timeout");
    assert_eq!(get_reply(&mut writer), Some(None), "the write is answered");
    assert_eq!(get_reply(&mut fresh), Some(Some(b"after".to_vec())));
}
