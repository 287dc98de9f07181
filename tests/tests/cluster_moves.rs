//! Moving buckets between real `shoald` processes while they serve: a node that joins gets
//! its share, a node stopped with SIGTERM hands its buckets off and leaves, and every key
//! written before reads back byte for byte from its new owner.

mod cluster_common;

use cluster_common::{Cluster, Member, BUCKETS, SETTLE};
use shoal_client::blocking::Client;
use shoal_client::Client as AsyncClient;
use shoal_proto::cluster::TableView;
use shoal_tests::wait_for;
use std::time::Duration;

/// A routed client of the whole cluster through `seed`.
fn routed(seed: std::net::SocketAddr) -> Client {
    AsyncClient::builder()
        .seed(seed.to_string())
        .connect_timeout(Duration::from_secs(2))
        .build_blocking()
        .expect("client")
}

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
