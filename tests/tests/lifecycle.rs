//! The node's process lifecycle: a stop signal that arrives at any moment after start-up,
//! even the instant the ready line is printed, is a graceful stop (exit 0), never a kill.

use shoal_tests::ServerProcess;
use std::time::Duration;

#[test]
fn sigterm_right_after_the_ready_line_is_a_graceful_stop() {
    let mut server = ServerProcess::start(&[]);
    for round in 0..100 {
        // `start` and `restart` return as soon as the ready line is read.
        let status = server.terminate(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "round {round}: {status:?}");
        server.restart();
    }
}
