//! What a server restart costs a caller that makes one call at a time (the way a C program
//! uses libshoal): at most the call in flight, even with several connections per server.
//! When one connection sees the server go away, the client retires the others to that server
//! instead of trying them one after another.

use shoal_client::Client;
use shoal_tests::{wait_for, ServerProcess};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const RESTARTS: usize = 20;

/// One thread calls INCR in a loop while another restarts the server `RESTARTS` times (each
/// after the caller has had 30 more successes). Returns the longest run of consecutive
/// failed calls.
fn longest_failure_run(connections: usize, graceful: bool) -> usize {
    let mut server = ServerProcess::start(&[]);
    let client = Client::builder()
        .seed(server.native_addr.to_string())
        .connections_per_node(connections)
        .request_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(5))
        .build_blocking()
        .expect("client");
    let successes = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let restarter = {
        let successes = successes.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..RESTARTS {
                let target = successes.load(Ordering::SeqCst) + 30;
                assert!(wait_for(Duration::from_secs(20), || {
                    successes.load(Ordering::SeqCst) >= target
                }));
                if graceful {
                    assert!(server.terminate(Duration::from_secs(20)).success());
                } else {
                    server.kill();
                }
                server.restart();
            }
            done.store(true, Ordering::SeqCst);
            server
        })
    };
    let (mut run, mut longest) = (0, 0);
    let mut i = 0u64;
    while !done.load(Ordering::SeqCst) {
        i += 1;
        // INCR is not idempotent: a call cut off in flight comes back in doubt, not retried.
        match client.incr(format!("key{}", i % 10), 1, Some((0, 0))) {
            Ok(_) => {
                run = 0;
                successes.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                assert!(
                    e.is_in_doubt() || e.is_retryable(),
                    "unexpected failure: {e}"
                );
                run += 1;
                longest = longest.max(run);
            }
        }
    }
    drop(restarter.join().expect("restarter"));
    longest
}

#[test]
fn graceful_restarts_cost_at_most_the_call_in_flight_with_two_connections() {
    let longest = longest_failure_run(2, true);
    assert!(longest <= 1, "{longest} calls in a row failed");
}

#[test]
fn kills_cost_at_most_the_call_in_flight_with_two_connections() {
    let longest = longest_failure_run(2, false);
    assert!(longest <= 1, "{longest} calls in a row failed");
}
