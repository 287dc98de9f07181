//! `shoal-client` against a real `shoald`: every operation, the blocking client, and 100,000
//! pipelined requests from 64 tasks with every reply checked against its request.

use shoal_client::{Client, Error, Status};
use shoal_proto::hash::value_hash;
use shoal_tests::ServerProcess;
use std::sync::Arc;
use std::time::Duration;

fn client_for(server: &ServerProcess) -> Client {
    Client::builder()
        .seed(server.native_addr.to_string())
        .client_name("client-ops-test")
        .request_timeout(Duration::from_secs(5))
        .deadline(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn every_operation_against_shoald() {
    let server = ServerProcess::start(&["--memcache-listen", "off"]);
    let c = client_for(&server);

    c.ping().await.unwrap();

    // get / set / flags / hash
    assert_eq!(c.get("missing").await.unwrap(), None);
    let h = c.set("k", "v1", 0, 42).await.unwrap();
    assert_eq!(h, value_hash(b"v1"));
    let item = c.get("k").await.unwrap().unwrap();
    assert_eq!(
        (&item.value[..], item.flags, item.hash),
        (&b"v1"[..], 42, h)
    );

    // add / replace
    let err = c.add("k", "x", 0, 0).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::NotStored));
    c.add("fresh", "a", 0, 0).await.unwrap();
    let err = c.replace("nope", "x", 0, 0).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::NotStored));
    c.replace("fresh", "b", 0, 1).await.unwrap();
    assert_eq!(&c.get("fresh").await.unwrap().unwrap().value[..], b"b");

    // check-and-set
    let err = c.cas("k", "v2", h ^ 1, 0, 0).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(err.code(), shoal_client::ErrorCode::Exists);
    let h2 = c.cas("k", "v2", h, 0, 7).await.unwrap();
    assert_eq!(h2, value_hash(b"v2"));
    let err = c.cas("nope", "v", 1, 0, 0).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::NotFound));

    // append / prepend keep flags
    c.append("k", "-end").await.unwrap();
    let h3 = c.prepend("k", "start-").await.unwrap();
    let item = c.get("k").await.unwrap().unwrap();
    assert_eq!(&item.value[..], b"start-v2-end");
    assert_eq!((item.flags, item.hash), (7, h3));
    let err = c.append("nope", "x").await.unwrap_err();
    assert_eq!(err.status(), Some(Status::NotStored));

    // touch / get-and-touch
    assert!(c.touch("k", 100).await.unwrap());
    assert!(!c.touch("nope", 100).await.unwrap());
    let item = c.get_and_touch("k", 0).await.unwrap().unwrap();
    assert_eq!(&item.value[..], b"start-v2-end");
    assert_eq!(c.get_and_touch("nope", 5).await.unwrap(), None);

    // incr / decr
    assert_eq!(c.incr("n", 1, None).await.unwrap(), None);
    assert_eq!(c.incr("n", 5, Some((10, 0))).await.unwrap(), Some(10));
    assert_eq!(c.incr("n", 5, None).await.unwrap(), Some(15));
    assert_eq!(c.decr("n", 100, None).await.unwrap(), Some(0));
    let err = c.incr("k", 1, None).await.unwrap_err();
    assert_eq!(err.status(), Some(Status::NonNumeric));
    assert_eq!(err.code(), shoal_client::ErrorCode::NonNumeric);

    // delete, conditional delete
    let hf = c.set("d", "x", 0, 0).await.unwrap();
    let err = c.delete_if("d", hf ^ 1).await.unwrap_err();
    assert!(err.is_conflict());
    assert!(c.delete_if("d", hf).await.unwrap());
    assert!(!c.delete_if("d", hf).await.unwrap());
    assert!(c.delete("fresh").await.unwrap());
    assert!(!c.delete("fresh").await.unwrap());

    // multi-get, in order, with misses, across more keys than one batch
    let keys: Vec<String> = (0..2_500).map(|i| format!("m{i}")).collect();
    for key in keys.iter().step_by(2) {
        c.set(key, key, 0, 0).await.unwrap();
    }
    let got = c.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    for (i, (key, item)) in keys.iter().zip(&got).enumerate() {
        match item {
            Some(item) => {
                assert_eq!(i % 2, 0);
                assert_eq!(&item.value[..], key.as_bytes());
            }
            None => assert_eq!(i % 2, 1),
        }
    }
    assert!(c.get_many::<&str>(&[]).await.unwrap().is_empty());

    // stats
    let stats = c.stats("").await.unwrap();
    assert!(!stats.is_empty());

    // a value over the server's limit is refused client-side
    let big = vec![0u8; 1024 * 1024 + 1];
    assert!(matches!(
        c.set("big", &big, 0, 0).await.unwrap_err(),
        Error::TooLarge { .. }
    ));

    c.close().await;
    // Still usable after close: the next call reconnects.
    assert!(c.get("k").await.unwrap().is_some());
}

#[test]
fn blocking_client_against_shoald() {
    let server = ServerProcess::start(&["--memcache-listen", "off"]);
    let c = Client::builder()
        .seed(server.native_addr.to_string())
        .build_blocking()
        .unwrap();
    c.ping().unwrap();
    let h = c.set("b", "1", 0, 3).unwrap();
    assert_eq!(c.get("b").unwrap().unwrap().hash, h);
    assert_eq!(c.incr("b", 2, None).unwrap(), Some(3));
    assert!(c.delete("b").unwrap());
    assert_eq!(c.get("b").unwrap(), None);
    let items = c.get_many(&["a", "b"]).unwrap();
    assert_eq!(items, vec![None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_pipelined_requests_from_64_tasks_are_all_matched() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 100_000 / TASKS / 2 + 1; // one set + one get per round
    let server = ServerProcess::start(&["--memcache-listen", "off"]);
    let c = Client::builder()
        .seed(server.native_addr.to_string())
        .connections_per_node(2)
        .request_timeout(Duration::from_secs(10))
        .deadline(Duration::from_secs(20))
        .build()
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let c = c.clone();
        let done = done.clone();
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                // The value encodes the key, so a reply delivered to the wrong request shows.
                let key = format!("t{t}:{i}");
                let value = format!("value-of-{key}-{}", "x".repeat(i % 50));
                let flags = (t * 100_000 + i) as u32;
                let h = c.set(&key, &value, 0, flags).await.unwrap();
                assert_eq!(h, value_hash(value.as_bytes()));
                let item = c.get(&key).await.unwrap().expect("just stored");
                assert_eq!(&item.value[..], value.as_bytes(), "reply for {key}");
                assert_eq!(item.flags, flags);
                done.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert!(done.load(std::sync::atomic::Ordering::Relaxed) >= 100_000);
}
