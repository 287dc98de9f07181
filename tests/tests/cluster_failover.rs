//! Failover between real `shoald` processes with `replicas = 1`: a node that is killed, or
//! restarted without its copies, is fenced once its lease has run out (or at once, by
//! itself, when it restarts) and its buckets are served by their in-sync replicas with every
//! acknowledged write; a paused node whose lease ran out serves nothing it lost; a fenced
//! node comes back as an active member that owns nothing it had; a node cut off from its
//! peers (a `fault-injection` build) stops serving within its lease.

mod cluster_common;

use cluster_common::{index_in, keys_owned_by, routed, Cluster, Member, SETTLE};
use shoal_proto::cluster::{NodeState, TableView};
use shoal_proto::Status;
use shoal_tests::wait_for;
use std::time::{Duration, Instant};

/// Short leases and Raft timeouts, so that failover takes about two seconds.
const FAST: &[&str] = &[
    "--lease",
    "1500ms",
    "--raft-election-timeout",
    "300ms",
    "--raft-heartbeat",
    "100ms",
];

/// Writes `n` keys through a routed client (each acknowledged) and returns them with
/// their values.
fn write_keys(c: &Cluster, prefix: &str, n: usize) -> Vec<(String, String)> {
    let client = routed(c.members[0].native());
    (0..n)
        .map(|i| {
            let (key, value) = (format!("{prefix}{i}"), format!("v{i}-{prefix}"));
            client
                .set(key.as_bytes(), value.as_bytes(), 0, 0)
                .expect("set");
            (key, value)
        })
        .collect()
}

/// Whether every key reads back its value through a routed client seeded at `seed`.
fn all_read_back(seed: &Member, keys: &[(String, String)]) -> bool {
    let Some(client) = cluster_common::client(seed.native()) else {
        return false;
    };
    keys.iter().all(
        |(k, v)| matches!(client.get(k.as_bytes()), Ok(Some(got)) if got.value == v.as_bytes()),
    )
}

/// The member's state and how many buckets it is primary of, by `table`.
fn standing(table: &TableView, member: &Member) -> (NodeState, u32) {
    let i = index_in(table, member);
    (table.nodes[i].state, table.owned_counts()[i])
}

#[test]
fn a_killed_node_is_fenced_after_its_lease_and_its_in_sync_replicas_serve_every_write() {
    let mut c = Cluster::start(3, FAST);
    let table = c.members[0].table().expect("table");
    let victim = 2;
    let theirs = keys_owned_by(&table, index_in(&table, &c.members[victim]), "k", 100);
    let keys = write_keys(&c, "k", 300);
    assert!(!theirs.is_empty());
    c.members[victim].proc.kill();
    let killed = Instant::now();
    // Within the lease plus its margin and a commit, every key reads back: the victim's
    // buckets are served by the replicas that were in sync with it.
    assert!(
        wait_for(SETTLE, || all_read_back(&c.members[0], &keys)),
        "not every acknowledged write came back after the failover"
    );
    eprintln!(
        "failover: every key readable {:?} after the kill",
        killed.elapsed()
    );
    let table = c.members[0].table().expect("table");
    assert_eq!(standing(&table, &c.members[victim]), (NodeState::Down, 0));

    // Restarted, it renews its lease under its new liveness epoch and is active again,
    // owning nothing it had; replicas are rebuilt and buckets spread back.
    c.members[victim].proc.restart();
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let table = c.members[0].table().expect("table");
    assert_eq!(standing(&table, &c.members[victim]).0, NodeState::Active);
    assert!(all_read_back(&c.members[victim], &keys));
}

#[test]
fn a_node_restarted_without_its_copies_fences_itself_at_once() {
    // A lease far longer than the test: only the restarted node's own fence can move its
    // buckets.
    let mut c = Cluster::start(3, &["--lease", "120s"]);
    let keys = write_keys(&c, "r", 300);
    let victim = 1;
    c.members[victim].proc.kill();
    c.members[victim].proc.restart();
    assert!(
        wait_for(SETTLE, || all_read_back(&c.members[0], &keys)),
        "the restarted node's buckets did not fail over to their replicas"
    );
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    assert!(all_read_back(&c.members[victim], &keys));
}

#[test]
fn a_paused_primary_serves_nothing_it_lost_when_it_resumes() {
    let c = Cluster::start(3, FAST);
    let table = c.members[0].table().expect("table");
    let paused = &c.members[2];
    let key = keys_owned_by(&table, index_in(&table, paused), "p", 1)
        .pop()
        .expect("a key of the paused node");
    let client = routed(c.members[0].native());
    client.set(key.as_bytes(), b"old", 0, 0).expect("set");
    paused.proc.pause();
    // Twice the lease: fenced, its buckets failed over; the new value is written there.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut wrote = false;
    while Instant::now() < deadline || !wrote {
        wrote = client.set(key.as_bytes(), b"new", 0, 0).is_ok();
        assert!(Instant::now() < deadline + SETTLE, "no write went through");
    }
    // Resumed, it answers for the key (directly, no routing) only with NO_LEASE or
    // NOT_MY_BUCKET, never the value it held.
    paused.proc.resume();
    let mut direct = shoal_tests::RawConn::hello(paused.native());
    for _ in 0..50 {
        direct.send(&shoal_proto::Request {
            id: 7,
            command: shoal_proto::Command::Get {
                key: key.as_bytes(),
            },
        });
        let status = direct.recv(|r| r.status);
        assert!(
            status == Status::NoLease || status == Status::NotMyBucket,
            "the resumed node answered {status:?} for a bucket it lost"
        );
    }
    let got = client.get(key.as_bytes()).expect("get").expect("hit");
    assert_eq!(&got.value[..], b"new");
    // It comes back as an active member.
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
}

/// The status of one native request to the node at `addr`, on a connection of its own.
fn direct(addr: std::net::SocketAddr, command: shoal_proto::Command<'_>) -> Status {
    let mut c = shoal_tests::RawConn::hello(addr);
    c.send(&shoal_proto::Request { id: 1, command });
    c.recv(|r| r.status)
}

/// The status of the next reply on `conn`, past TABLE_CHANGED notices; `None` when none
/// came within the read timeout.
fn reply_status(conn: &mut shoal_tests::RawConn) -> Option<Status> {
    loop {
        match conn.try_recv(|r| r.status) {
            Some(Status::TableChanged) => {}
            other => return other,
        }
    }
}

/// A 3-node cluster of the fault-injection build with the fast timings, its table, which
/// member leads Raft, and a key of a bucket that member is primary of.
fn leader_and_its_key() -> (Cluster, TableView, usize, String) {
    let c = Cluster::start_nodes(shoal_tests::fault_shoald_binary(), &[FAST; 3]);
    let table = c.members[0].table().expect("table");
    let leader = c.leader().expect("a leader");
    let key = keys_owned_by(&table, index_in(&table, &c.members[leader]), "c", 1)
        .pop()
        .expect("a key of the leader");
    (c, table, leader, key)
}

/// Sends `cut` (just cut off from its peers) a write to a key of its own in another bucket
/// than `key` (so that reads of `key` do not wait behind it) and returns the connection once
/// the write is held: applied there while its lease still holds, its reply waiting for the
/// replica it cannot reach. (A write sent before the cut took hold is answered at once: it
/// sends another.)
fn hold_a_write(cut: &Member, table: &TableView, key: &str) -> shoal_tests::RawConn {
    let bucket = |k: &str| shoal_proto::hash::bucket_of(k.as_bytes(), table.buckets.len() as u32);
    let held_key = keys_owned_by(table, index_in(table, cut), "h", 50)
        .into_iter()
        .find(|k| bucket(k) != bucket(key))
        .expect("a key in another bucket of the cut node");
    let stray = shoal_proto::Command::Store {
        mode: shoal_proto::StoreMode::Set,
        key: held_key.as_bytes(),
        value: b"stray",
        flags: 0,
        ttl: 0,
    };
    let mut held = shoal_tests::RawConn::hello(cut.native());
    held.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut attempts = 0;
    loop {
        held.send(&shoal_proto::Request {
            id: 7,
            command: stray,
        });
        match reply_status(&mut held) {
            Some(Status::Ok) if attempts < 5 => attempts += 1,
            None => return held,
            other => panic!("a write right after the cut answered {other:?} at once"),
        }
    }
}

#[test]
fn a_primary_cut_off_from_its_peers_stops_within_its_lease_and_the_majority_takes_over() {
    // The Raft leader: the majority elects another one, which fences it.
    let (c, table, leader, key) = leader_and_its_key();
    let cut = &c.members[leader];
    let get = shoal_proto::Command::Get {
        key: key.as_bytes(),
    };
    let set = shoal_proto::Command::Store {
        mode: shoal_proto::StoreMode::Set,
        key: key.as_bytes(),
        value: b"stray",
        flags: 0,
        ttl: 0,
    };
    let other = c
        .members
        .iter()
        .find(|m| m.native() != cut.native())
        .expect("another member");
    let client = routed(other.native());
    client.set(key.as_bytes(), b"before", 0, 0).expect("set");
    assert_eq!(direct(cut.native(), get), Status::Ok);

    cut.proc.signal("USR1");
    let cut_at = Instant::now();
    let mut held = hold_a_write(cut, &table, &key);
    // Its lease runs out: it serves nothing, reads or writes, on its own client port.
    assert!(
        wait_for(SETTLE, || direct(cut.native(), get) == Status::NoLease),
        "the cut-off node kept serving"
    );
    eprintln!("cut off: no lease after {:?}", cut_at.elapsed());
    assert_eq!(direct(cut.native(), set), Status::NoLease);
    // The majority fences it and serves the key from the promoted replica.
    assert!(
        wait_for(SETTLE, || all_read_back(
            other,
            &[(key.clone(), "before".to_string())]
        )),
        "the majority did not take the cut node's bucket over"
    );
    client.set(key.as_bytes(), b"after", 0, 0).expect("set");

    // Healed, it comes back (active again) without anything it lost.
    cut.proc.signal("USR2");
    assert!(
        wait_for(SETTLE, || other
            .table()
            .is_some_and(|t| standing(&t, cut).0 == NodeState::Active)),
        "the healed node did not come back"
    );
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    // The held write is answered "in doubt", never OK: its bucket failed over without it
    // while the reply waited (and the node's lease ran out meanwhile).
    held.stream.set_read_timeout(Some(SETTLE)).expect("timeout");
    assert_eq!(reply_status(&mut held), Some(Status::InDoubt));
    assert!(all_read_back(cut, &[(key, "after".to_string())]));
}

#[test]
fn a_raft_leader_healed_as_its_lease_runs_out_answers_what_it_held_and_serves_again() {
    let (c, table, leader, key) = leader_and_its_key();
    let cut = &c.members[leader];
    let client = routed(cut.native());
    client.set(key.as_bytes(), b"before", 0, 0).expect("set");

    // Cut off while it leads Raft, with a reply held for the replica it cannot reach (its
    // replication then asks its own log, as the leader, to take that replica out of the
    // in-sync set: a write no one will commit).
    cut.proc.signal("USR1");
    let mut held = hold_a_write(cut, &table, &key);
    let get = shoal_proto::Command::Get {
        key: key.as_bytes(),
    };
    assert!(
        wait_for(SETTLE, || direct(cut.native(), get) == Status::NoLease),
        "the cut-off node kept serving"
    );
    // Healed at once: usually before the majority's new leader (which waits a lease past
    // its own election) fences it.
    cut.proc.signal("USR2");
    // The held write is answered, "in doubt" (the lease ran out while it waited), and the
    // node serves again: nothing waits on the write its old term never committed.
    held.stream.set_read_timeout(Some(SETTLE)).expect("timeout");
    assert_eq!(reply_status(&mut held), Some(Status::InDoubt));
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let client = routed(cut.native());
    client.set(key.as_bytes(), b"after", 0, 0).expect("set");
    assert!(
        wait_for(SETTLE, || all_read_back(
            cut,
            &[(key.clone(), "after".into())]
        )),
        "the healed node does not serve"
    );
}

#[test]
fn a_lagging_replica_is_never_promoted_and_a_kill_after_it_loses_nothing() {
    // Four nodes: with one fenced and one killed, two of the three voters remain.
    let mut c = Cluster::start(4, FAST);
    let (lagging, primary) = (1, 2);
    let before = write_keys(&c, "l", 200);
    c.members[lagging].proc.pause();
    // Writes go on without it (it leaves the in-sync sets, then is fenced).
    let during = write_keys(&c, "m", 200);
    // Every bucket gets its in-sync replica again, on the other running members.
    assert!(
        wait_for(SETTLE, || {
            let t = c.members[0].table().expect("table");
            standing(&t, &c.members[lagging]) == (NodeState::Down, 0)
                && [0, primary, 3]
                    .iter()
                    .filter_map(|&i| c.members[i].status())
                    .map(|s| s.replication.in_sync_of)
                    .sum::<u32>()
                    == t.buckets.len() as u32
        }),
        "the replicas were not rebuilt without the lagging node: {:?}",
        c.statuses()
    );
    c.members[primary].proc.kill();
    let all: Vec<(String, String)> = before.into_iter().chain(during).collect();
    assert!(
        wait_for(SETTLE, || all_read_back(&c.members[0], &all)),
        "an acknowledged write was lost"
    );
    // The lagging node was never given anything while it lagged.
    let table = c.members[0].table().expect("table");
    assert_eq!(standing(&table, &c.members[lagging]), (NodeState::Down, 0));
    c.members[lagging].proc.resume();
    c.members[primary].proc.restart();
    assert!(c.wait_settled(4, SETTLE), "{:?}", c.statuses());
    assert!(all_read_back(&c.members[lagging], &all));
}
