//! `shoal-client` while its server is frozen, SIGKILLed and restarted on the same port, and
//! while it stops gracefully: every call returns within its deadline, no reply reaches the
//! wrong request, non-idempotent calls cut off come back in doubt (never silently retried),
//! and once the server is back calls succeed with no action by the caller.

use shoal_client::{Client, Error};
use shoal_tests::ServerProcess;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TASKS: usize = 16;
const DEADLINE: Duration = Duration::from_millis(1_000);
const SLACK: Duration = Duration::from_millis(100);

/// What the worker tasks saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    in_doubt: AtomicUsize,
    in_doubt_incr: AtomicUsize,
    not_sent: AtomicUsize,
    /// Calls that started after `epoch` was raised, per task, that succeeded.
    ok_after_restart: Vec<AtomicBool>,
    /// Per task: a call is in progress that started while the server was frozen.
    frozen_call: Vec<AtomicBool>,
    slowest: Mutex<Duration>,
    unexpected: Mutex<Vec<String>>,
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
async fn wait_for(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_under_load() {
    let mut server = ServerProcess::start(&["--memcache-listen", "off"]);
    let client = Client::builder()
        .seed(server.native_addr.to_string())
        .connect_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(600))
        .deadline(DEADLINE)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .build()
        .unwrap();
    client.ping().await.unwrap();

    let tally = Arc::new(Tally {
        ok_after_restart: (0..TASKS).map(|_| AtomicBool::new(false)).collect(),
        frozen_call: (0..TASKS).map(|_| AtomicBool::new(false)).collect(),
        ..Tally::default()
    });
    // 0 = running, 1 = frozen (SIGSTOP), 2 = killed, 3 = restarted.
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (client, tally, phase, stop) =
            (client.clone(), tally.clone(), phase.clone(), stop.clone());
        tasks.spawn(async move {
            let mut i: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let key = format!("f{t}:{}", i % 100);
                let started_in = phase.load(Ordering::SeqCst);
                if started_in == 1 {
                    tally.frozen_call[t].store(true, Ordering::SeqCst);
                }
                let start = Instant::now();
                let (is_incr, result) = match i % 3 {
                    0 => (false, client.set(&key, &key, 0, t as u32).await.map(|_| ())),
                    1 => (
                        false,
                        client.get(&key).await.map(|item| {
                            if let Some(item) = item {
                                // Values encode their key: a misdelivered reply shows here.
                                if item.value != key.as_bytes() {
                                    tally.unexpected.lock().unwrap().push(format!(
                                        "{key} read {:?}",
                                        String::from_utf8_lossy(&item.value)
                                    ));
                                }
                            }
                        }),
                    ),
                    _ => (
                        true,
                        client
                            .incr(format!("c{t}"), 1, Some((0, 0)))
                            .await
                            .map(|_| ()),
                    ),
                };
                let took = start.elapsed();
                {
                    let mut slowest = tally.slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
                match result {
                    Ok(()) => {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                        if started_in == 3 {
                            tally.ok_after_restart[t].store(true, Ordering::SeqCst);
                        }
                    }
                    Err(Error::InDoubt(_)) => {
                        tally.in_doubt.fetch_add(1, Ordering::SeqCst);
                        if is_incr {
                            tally.in_doubt_incr.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(Error::Connection(_) | Error::Timeout) => {
                        tally.not_sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(other) => tally
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{key}: {other}")),
                }
                if started_in == 1 {
                    tally.frozen_call[t].store(false, Ordering::SeqCst);
                }
            }
        });
    }

    let t = tally.clone();
    assert!(
        wait_for(Duration::from_secs(10), || t.ok.load(Ordering::SeqCst)
            > 2_000)
        .await
    );

    // Freeze the server so every task has a request on the wire, then kill it.
    server.pause();
    phase.store(1, Ordering::SeqCst);
    let t = tally.clone();
    assert!(
        wait_for(Duration::from_secs(5), || t
            .frozen_call
            .iter()
            .all(|b| b.load(Ordering::SeqCst)))
        .await
    );
    server.kill();
    phase.store(2, Ordering::SeqCst);
    let down = tally.not_sent.load(Ordering::SeqCst);
    let t = tally.clone();
    // While it is down, calls fail fast as "not sent".
    assert!(
        wait_for(Duration::from_secs(5), || t.not_sent.load(Ordering::SeqCst)
            > down + 10)
        .await
    );

    let mut server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    phase.store(3, Ordering::SeqCst);
    let t = tally.clone();
    let recovered = wait_for(Duration::from_secs(10), || {
        t.ok_after_restart.iter().all(|b| b.load(Ordering::SeqCst))
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    server.kill();

    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected outcomes: {unexpected:?}");
    assert!(recovered, "every task succeeds after the restart, unaided");
    let slowest = *tally.slowest.lock().unwrap();
    assert!(slowest < DEADLINE + SLACK, "slowest call took {slowest:?}");
    // Every task had a request on the wire when the server froze and died: those requests
    // are in doubt (INCRs among them were not resent).
    assert!(tally.in_doubt.load(Ordering::SeqCst) >= 1);
    eprintln!(
        "ok={} in_doubt={} (incr {}) not_sent={} slowest={slowest:?}",
        tally.ok.load(Ordering::SeqCst),
        tally.in_doubt.load(Ordering::SeqCst),
        tally.in_doubt_incr.load(Ordering::SeqCst),
        tally.not_sent.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn frozen_server_incr_is_in_doubt_and_not_resent() {
    let mut server = ServerProcess::start(&["--memcache-listen", "off"]);
    let client = Client::builder()
        .seed(server.native_addr.to_string())
        .connections_per_node(1) // a second connection would wait on the frozen HELLO
        .request_timeout(Duration::from_millis(300))
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap();
    assert_eq!(client.incr("n", 1, Some((5, 0))).await.unwrap(), Some(5));
    // Three trials; the bound must hold for the best of them, so one slow sample from a busy
    // machine does not fail the test while a client that ignores its timeout fails all three.
    let mut fastest = Duration::MAX;
    for trial in 0..3u64 {
        server.pause();
        let start = Instant::now();
        let got = client.incr("n", 1, None).await;
        let err = got.unwrap_err();
        fastest = fastest.min(start.elapsed());
        assert!(err.is_in_doubt(), "{err:?}");
        server.resume();
        // The INCR was applied once (it reached the server), never twice.
        assert_eq!(client.incr("n", 0, None).await.unwrap(), Some(6 + trial));
    }
    assert!(
        fastest < Duration::from_millis(300) + SLACK,
        "in doubt after {fastest:?} with a 300 ms request timeout"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_then_restart_needs_nothing_from_the_caller() {
    let mut server = ServerProcess::start(&["--memcache-listen", "off"]);
    let client = Client::builder()
        .seed(server.native_addr.to_string())
        .deadline(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap();
    client.set("k", "v", 0, 0).await.unwrap();
    let mut server = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(10));
        assert!(status.success(), "{status:?}");
        server.restart();
        server
    })
    .await
    .unwrap();
    // The old connection saw SHUTTING_DOWN / EOF; this call reconnects on its own.
    client.set("k", "v2", 0, 0).await.unwrap();
    assert_eq!(&client.get("k").await.unwrap().unwrap().value[..], b"v2");
    server.kill();
}
