//! Every client kind against a real 3-node cluster, call by call (routed, redirected or
//! forwarded): the same answers for the same requests (hits, misses, ADD on a present key, CAS
//! conflicts, DELETE and TOUCH of present and missing keys), and every value's hash is the value hash (the memcached port's cas
//! unique included).

mod common;

use shoal_consistency_checker::backend::{
    hash_matches, Backend, ClientKind, ClientSettings, OpError, RoutingStats,
};
use shoal_consistency_checker::nemesis::{Cluster, ClusterSpec};
use std::time::Duration;

async fn exercise(kind: ClientKind, settings: &ClientSettings) {
    let b = Backend::new(kind, settings).expect("client");
    let key = |k: &str| format!("{}:{k}", kind.as_str()).into_bytes();
    let (k, other, missing) = (key("k"), key("other"), key("missing"));

    b.ping().await.expect("ping");
    b.set(&k, b"one".to_vec(), 0).await.expect("set");
    let got = b.get(&k).await.expect("get").expect("hit");
    assert_eq!(got.value, b"one");
    assert!(hash_matches(&got), "{kind:?}: {got:?}");
    assert_eq!(b.get(&missing).await, Ok(None));

    assert_eq!(b.add(&k, b"two".to_vec(), 0).await, Err(OpError::NotStored));
    b.add(&other, b"other".to_vec(), 600).await.expect("add");
    assert_eq!(
        b.cas(&k, b"two".to_vec(), got.hash ^ 1, 0).await,
        Err(OpError::Conflict)
    );
    b.cas(&k, b"two".to_vec(), got.hash, 600)
        .await
        .expect("cas");
    assert_eq!(
        b.cas(&missing, b"x".to_vec(), 1, 0).await,
        Err(OpError::NotFound)
    );

    let many = b
        .get_many(&[missing.clone(), k.clone(), other.clone()])
        .await
        .expect("get_many");
    assert!(many[0].is_none(), "{kind:?}");
    assert_eq!(many[1].as_ref().map(|g| &g.value[..]), Some(&b"two"[..]));
    assert_eq!(many[2].as_ref().map(|g| &g.value[..]), Some(&b"other"[..]));
    assert!(many.iter().flatten().all(hash_matches), "{kind:?}");

    assert_eq!(b.touch(&k, 3600).await, Ok(true));
    assert_eq!(b.touch(&missing, 60).await, Ok(false));
    assert_eq!(b.delete(&k).await, Ok(true));
    assert_eq!(b.delete(&k).await, Ok(false));
    assert_eq!(b.get(&k).await, Ok(None));

    // The routed clients fetched the table (a request sent before it arrived may have been
    // redirected); a memcached client knows nothing of buckets.
    let stats = b.routing_stats();
    if kind == ClientKind::Memcache {
        assert_eq!(stats, RoutingStats::default());
    } else {
        assert!(stats.table_fetches >= 1, "{kind:?}: {stats:?}");
    }
    b.close().await;
}

#[test]
fn every_client_kind_gives_the_same_answers_on_a_real_cluster() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let spec = ClusterSpec {
            shoald: common::shoald(),
            nodes: 3,
            replicas: 0,
            root: std::env::temp_dir(),
            keep: false,
            args: vec!["--memory".into(), "16MiB".into()],
            stop_timeout: Duration::from_secs(30),
        };
        let control = shoal_consistency_checker::control::Control::new();
        let cluster = Cluster::start(spec, &control)
            .await
            .expect("the cluster forms");
        let settings = ClientSettings {
            servers: cluster.addrs(),
            memcache_servers: cluster.memcache_addrs(),
            request_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
        };
        assert_eq!(settings.memcache_servers.len(), 3);
        for kind in [ClientKind::Rust, ClientKind::C, ClientKind::Memcache] {
            exercise(kind, &settings).await;
        }
    });
}
