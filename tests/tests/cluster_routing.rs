//! `shoal-client` routing by the bucket table against real clusters: one seed is enough for
//! every node, the client outlives its seed, and a table change reaches a working client
//! (notice, refetch) without a single failed request. The scripted cases (stale tables,
//! redirects with old epochs) are in `client-rs/tests/misbehaving_server.rs`; the C library
//! over the same client in `client-c/tests/c_api.rs`.

mod cluster_common;

use cluster_common::{Cluster, Member, BUCKETS, SETTLE};
use shoal_client::blocking::Client;
use shoal_tests::wait_for;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A client of `seed` alone, with a deadline long enough to wait out a failover.
fn client(seed: &Member) -> Client {
    shoal_client::Client::builder()
        .seed(seed.native().to_string())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(20))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build_blocking()
        .expect("client")
}

/// One seed reaches every node; then the seed dies and the table changes (a sixth node
/// joins): the client learns the new table from the members it knows, and every key whose
/// owner is alive works. (The dead seed's own buckets stay unserved until the cluster fails
/// them over, which the server does not do yet: those keys are not used after the kill.)
#[test]
fn one_seed_reaches_every_node_and_the_client_outlives_its_seed() {
    let mut c = Cluster::start(5, &[]);
    let leader = c.leader().expect("one leader");
    let seed = (0..5).find(|&i| i != leader).expect("a follower");
    let client = client(&c.members[seed]);
    let keys: Vec<String> = (0..2_000).map(|i| format!("k{i}")).collect();
    for key in &keys {
        client.set(key, key, 0, 0).expect("set");
    }
    // Every node got its share, not only the seed.
    let statuses: Vec<_> = c
        .statuses()
        .into_iter()
        .map(|s| s.expect("status"))
        .collect();
    assert!(statuses.iter().all(|s| s.items > 0), "{statuses:?}");
    assert_eq!(statuses.iter().map(|s| s.items).sum::<u64>(), 2_000);
    let before = c.members[leader].table().expect("table");
    assert_eq!(before.nodes.len(), 5);
    assert!(
        wait_for(Duration::from_secs(5), || client.table_version()
            == before.version),
        "the client fetched the table: {} of {}",
        client.table_version(),
        before.version
    );

    c.members[seed].proc.kill();
    // A sixth node joins through a live member: the table version moves, and the client,
    // whose only seed is dead, hears of it and fetches the new table from another member.
    let join = c.members[leader].peer();
    c.members.push(Member::start("node5", &["--join", &join]));
    let mut after = None;
    assert!(
        wait_for(SETTLE, || {
            after = c.members[leader].table().filter(|t| t.nodes.len() == 6);
            after.is_some()
        }),
        "the sixth node joined: {:?}",
        c.members[leader].table()
    );
    let after = after.expect("table");
    assert!(after.version > before.version);
    assert!(
        wait_for(Duration::from_secs(5), || client.table_version()
            >= after.version),
        "the client fetched the new table without its seed: {} of {}",
        client.table_version(),
        after.version
    );

    let dead = c.members[seed].native().to_string();
    let live: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let bucket = shoal_proto::hash::bucket_of(k.as_bytes(), BUCKETS);
            after.primary_of(bucket).is_some_and(|p| p.native != dead)
        })
        .collect();
    assert!(live.len() > 1_000, "{}", live.len());
    for key in &live {
        client
            .set(key, format!("again {key}"), 0, 0)
            .expect("set after the seed died");
    }
    let items = client
        .get_many(&live)
        .expect("get_many after the seed died");
    for (key, item) in live.iter().zip(items) {
        assert_eq!(
            item.map(|it| it.value.to_vec()),
            Some(format!("again {key}").into_bytes())
        );
    }
}

#[test]
fn a_table_change_reaches_a_busy_client_within_a_second_and_no_request_fails() {
    let mut c = Cluster::start(3, &[]);
    let client = Arc::new(client(&c.members[0]));
    client.ping().expect("ping");
    let version = c.members[0].status().expect("status").table_version;
    assert!(wait_for(Duration::from_secs(5), || client.table_version() == version));

    // A loop of sets and gets across the keyspace, counting failures and wrong values. A key
    // of the wiped node's buckets may read as a miss (no replicas: its data is gone), never
    // as another value.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let worker = {
        let (client, stop, ops) = (client.clone(), stop.clone(), ops.clone());
        std::thread::spawn(move || {
            let mut last: HashMap<u32, String> = HashMap::new();
            let mut failures = Vec::new();
            let mut n: u32 = 0;
            while !stop.load(Ordering::SeqCst) {
                let k = n % 500;
                let key = format!("loop-{k}");
                let value = format!("v{n}");
                match client.set(&key, &value, 0, 0) {
                    Ok(_) => {
                        last.insert(k, value);
                    }
                    Err(e) => failures.push(format!("set {key}: {e}")),
                }
                let probe = (n * 7 + 3) % 500;
                let probe_key = format!("loop-{probe}");
                match client.get(&probe_key) {
                    Ok(Some(item))
                        if last.get(&probe).map(String::as_bytes) != Some(&item.value[..]) =>
                    {
                        failures.push(format!("get {probe_key}: {:?}", item.value))
                    }
                    Ok(_) => {}
                    Err(e) => failures.push(format!("get {probe_key}: {e}")),
                }
                ops.fetch_add(2, Ordering::Relaxed);
                n = n.wrapping_add(1);
            }
            failures
        })
    };
    assert!(wait_for(Duration::from_secs(10), || ops
        .load(Ordering::Relaxed)
        > 1_000));

    // The table changes: member 2 comes back wiped on the same addresses; the leader removes
    // its old id and gives its buckets to the others.
    c.members[2].proc.kill();
    c.members[2].wipe();
    c.members[2].proc.restart();
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let version = c.members[0].status().expect("status").table_version;
    assert!(
        wait_for(Duration::from_secs(1), || client.table_version() >= version),
        "the client routes by table {} of the cluster's {version} after 1 s",
        client.table_version()
    );
    assert!(client.announced_table_version() >= version);

    // It goes on working by the new table.
    let done = ops.load(Ordering::Relaxed);
    assert!(wait_for(Duration::from_secs(10), || ops
        .load(Ordering::Relaxed)
        > done + 1_000));
    stop.store(true, Ordering::SeqCst);
    let failures = worker.join().expect("worker");
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
}
