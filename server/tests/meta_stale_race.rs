//! Stale-while-revalidate under contention: after `md <key> I` marks an item stale, many
//! clients asking `mg` at the same moment get the win flag `W` exactly once (that client
//! recomputes the value) and `Z` (someone already won) otherwise. And after a miss with `N`
//! (vivify), exactly one client wins the right to fill the key. Real sockets, one in-process
//! server, threads released together by a barrier.

use shoald::testing::TestServer;
use shoald::Config;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const CLIENTS: usize = 16;

fn ask(addr: SocketAddr, command: &str) -> String {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s);
    r.get_mut().write_all(command.as_bytes()).expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("read");
    line
}

/// Sends `command` from `CLIENTS` connections at once; returns each first reply line.
fn race(addr: SocketAddr, command: &str) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = barrier.clone();
            let command = command.to_string();
            std::thread::spawn(move || {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut r = BufReader::new(s);
                barrier.wait();
                r.get_mut().write_all(command.as_bytes()).expect("write");
                let mut line = String::new();
                r.read_line(&mut line).expect("read");
                line
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

fn flags(line: &str) -> Vec<&str> {
    line.split_whitespace().skip(1).collect()
}

#[test]
fn exactly_one_client_wins_a_stale_item_and_a_vivified_miss() {
    let server = TestServer::start(Config::default());
    let addr = server.memcache_addr.expect("memcached listener");
    for round in 0..20 {
        let key = format!("swr{round}");
        assert_eq!(
            ask(addr, &format!("set {key} 0 0 2\r\nhi\r\n")),
            "STORED\r\n"
        );
        assert_eq!(ask(addr, &format!("md {key} I\r\n")), "HD\r\n");
        let replies = race(addr, &format!("mg {key} s\r\n"));
        let winners = replies.iter().filter(|l| flags(l).contains(&"W")).count();
        assert_eq!(winners, 1, "round {round}: {replies:?}");
        for l in &replies {
            let f = flags(l);
            assert!(f.contains(&"X"), "every reader sees the item stale: {l:?}");
            assert!(
                f.contains(&"W") ^ f.contains(&"Z"),
                "W or Z, never both: {l:?}"
            );
        }
        // A miss with N: one client creates the placeholder and wins.
        let key = format!("viv{round}");
        let replies = race(addr, &format!("mg {key} s N30\r\n"));
        let winners = replies.iter().filter(|l| flags(l).contains(&"W")).count();
        assert_eq!(winners, 1, "vivify round {round}: {replies:?}");
    }
}
