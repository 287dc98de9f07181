//! The test-only faults of a `fault-injection` build (server/src/fault.rs), on a cluster of
//! real processes: the consistency-checker relies on them to inject partitions and to prove
//! it notices broken promises, so each fault is shown to be live here.
//!
//! - SIGUSR1 cuts a node off from its peers (forwarding to it fails, Raft elects around it,
//!   its client ports keep serving); SIGUSR2 heals it (forwarding works again, the cluster
//!   settles with one leader).
//! - `--fault-ignore-table` makes a node keep keys of buckets it does not own.

mod cluster_common;

use cluster_common::{key_owned_by, mc, Cluster, Text};
use shoal_proto::cluster::RaftRole;
use shoal_proto::{Command as Cmd, Request, Status};
use shoal_tests::{fault_shoald_binary, wait_for, RawConn};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a fault may take to show (or a heal to undo it).
const LIMIT: Duration = Duration::from_secs(10);

/// Flags of every node: forwarded commands give up quickly, so a cut-off owner shows soon.
const FAST_FORWARD: &[&str] = &["--forward-timeout", "300ms"];

/// The status of a native GET of `key` on the node at `addr`.
fn native_get(addr: SocketAddr, key: &str) -> Status {
    let mut c = RawConn::hello(addr);
    c.send(&Request {
        id: 1,
        command: Cmd::Get {
            key: key.as_bytes(),
        },
    });
    c.recv(|r| r.status)
}

#[test]
fn sigusr1_cuts_a_node_off_from_its_peers_and_sigusr2_heals_it() {
    let c = Cluster::start_nodes(fault_shoald_binary(), &[FAST_FORWARD; 3]);
    // Cut off the leader: the other two must then elect one of their own.
    let cut = c.leader().expect("one leader");
    let via = (cut + 1) % 3;
    let term = c.members[cut].status().expect("status").term;
    let table = c.members[0].table().expect("table");
    let theirs = key_owned_by(&table, &c.members[cut], "cut");
    let ours = key_owned_by(&table, &c.members[via], "via");
    let mut t = Text::connect(mc(&c.members[via]));
    assert_eq!(t.set(&theirs, "before"), "STORED\r\n", "forwarded set");

    c.members[cut].proc.signal("USR1");
    let cut_at = Instant::now();
    // Forwarding to the cut-off owner fails; the forwarding node's own keys still work.
    assert!(
        wait_for(LIMIT, || t
            .get(&theirs)
            .is_err_and(|l| l.starts_with("SERVER_ERROR "))),
        "a get forwarded to the cut-off node did not fail"
    );
    let failed_in = cut_at.elapsed();
    let set = t.set(&theirs, "during");
    assert!(set.starts_with("SERVER_ERROR "), "forwarded set: {set:?}");
    assert_eq!(t.set(&ours, "here"), "STORED\r\n");
    // The cut-off node still serves its own keys to clients, on both ports.
    let mut own = Text::connect(mc(&c.members[cut]));
    assert_eq!(own.get(&theirs), Ok(Some("before".to_string())));
    assert_eq!(native_get(c.members[cut].native(), &theirs), Status::Ok);
    // The other two elect a new leader among themselves.
    let others = [via, 3 - cut - via];
    assert!(
        wait_for(LIMIT, || others.iter().any(|&i| c.members[i]
            .status()
            .is_some_and(|s| s.role == RaftRole::Leader && s.term > term))),
        "no new leader among the others: {:?}",
        c.statuses()
    );
    let elected_in = cut_at.elapsed();

    c.members[cut].proc.signal("USR2");
    let healed_at = Instant::now();
    // Healed: forwarding reaches the owner again, and the cluster agrees on one leader.
    assert!(
        wait_for(LIMIT, || t.get(&theirs) == Ok(Some("before".to_string()))),
        "a forwarded get still fails after the heal"
    );
    let forwarding_in = healed_at.elapsed();
    // A write may still be held a moment longer (the node's replication is taking the
    // replicas it could not reach out of the in-sync sets, through the new leader), past
    // the forwarder's 300 ms: it is answered once that committed.
    assert!(
        wait_for(LIMIT, || t.set(&theirs, "after") == "STORED\r\n"),
        "a forwarded set still fails after the heal"
    );
    assert_eq!(own.get(&theirs), Ok(Some("after".to_string())));
    assert!(
        c.wait_settled(3, LIMIT),
        "the cluster did not settle after the heal: {:?}",
        c.statuses()
    );
    eprintln!(
        "cut off: forwarding failed after {failed_in:?}, new leader after {elected_in:?}; \
         healed: forwarding back after {forwarding_in:?}, settled after {:?}",
        healed_at.elapsed()
    );
}

#[test]
fn a_node_ignoring_the_table_keeps_keys_of_buckets_it_does_not_own() {
    // No replicas: a replica copy on the faulty node would be hidden there, and a write to
    // it forwarded to the owner instead of kept.
    let c = Cluster::start_nodes(
        fault_shoald_binary(),
        &[
            &["--replicas", "0"],
            &["--replicas", "0"],
            &["--replicas", "0", "--fault-ignore-table"],
        ],
    );
    let (owner, normal, faulty) = (&c.members[0], &c.members[1], &c.members[2]);
    let table = c.members[0].table().expect("table");
    let kept = key_owned_by(&table, owner, "kept");
    // Written through the faulty node: stored there, not forwarded to the owner.
    assert_eq!(Text::connect(mc(faulty)).set(&kept, "stray"), "STORED\r\n");
    assert_eq!(Text::connect(mc(owner)).get(&kept), Ok(None));
    assert_eq!(
        Text::connect(mc(faulty)).get(&kept),
        Ok(Some("stray".to_string()))
    );
    // On the native port too: served there, redirected by a normal node.
    assert_eq!(native_get(faulty.native(), &kept), Status::Ok);
    assert_eq!(native_get(normal.native(), &kept), Status::NotMyBucket);
    // Sanity: through normal nodes the same kind of key lands on its owner.
    let routed = key_owned_by(&table, owner, "routed");
    assert_eq!(Text::connect(mc(normal)).set(&routed, "home"), "STORED\r\n");
    assert_eq!(
        Text::connect(mc(owner)).get(&routed),
        Ok(Some("home".to_string()))
    );
}
