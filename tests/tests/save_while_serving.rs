//! SAVE no longer blocks its connection or the node: while a savefile of a large cache is
//! written, the same connection and another one keep getting PING answers, and the SAVE reply
//! comes when the file is on disk. The data set is 256 MiB here (CI); set
//! `SHOAL_SAVE_TEST_MIB=1024` to run it with 1 GiB by hand. The PING latencies' p99 is printed.

use shoal_proto::{Command, Opcode, Request, Status};
use shoal_tests::{set_all_text, RawConn, ServerProcess};
use shoald::testing::TempDir;
use std::time::{Duration, Instant};

/// Values of 4 KiB.
const VALUE: usize = 4096;

fn ping(conn: &mut RawConn, id: u32) -> Duration {
    let started = Instant::now();
    conn.send(&Request {
        id,
        command: Command::Ping,
    });
    let (got, status) = conn.recv(|r| (r.id, r.status));
    assert_eq!((got, status), (id, Status::Ok));
    started.elapsed()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[test]
fn pings_are_answered_while_a_large_save_runs() {
    let mib: usize = std::env::var("SHOAL_SAVE_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = TempDir::new("save-while-serving");
    let memory = format!("{}MiB", mib * 5 / 4 + 64);
    let server = ServerProcess::start(&["--memory", &memory, "--data-dir", &dir.arg()]);
    let value = vec![b'v'; VALUE];
    let items = (0..(mib << 20) / VALUE).map(|i| (format!("key{i}"), value.clone()));
    set_all_text(server.memcache_addr.expect("memcached port"), items);

    let mut saver = RawConn::hello(server.native_addr);
    let mut other = RawConn::hello(server.native_addr);
    saver.send(&Request {
        id: 7,
        command: Command::Save,
    });
    // The same connection answers a PING before the SAVE: its reply is pending, not blocking.
    saver.send(&Request {
        id: 8,
        command: Command::Ping,
    });
    let first = saver.recv(|r| (r.id, r.opcode));
    assert_eq!(first, (8, Opcode::Ping), "the PING waited for the SAVE");
    // Another connection pings until the SAVE reply arrives.
    saver.stream.set_nonblocking(true).expect("nonblocking");
    let started = Instant::now();
    let mut latencies = Vec::new();
    let saved = loop {
        latencies.push(ping(&mut other, latencies.len() as u32 + 100));
        saver.stream.set_nonblocking(true).expect("nonblocking");
        let mut probe = [0u8; 1];
        let ready = matches!(saver.stream.peek(&mut probe), Ok(n) if n > 0);
        saver.stream.set_nonblocking(false).expect("blocking");
        if ready {
            break saver.recv(|r| (r.id, r.opcode, r.status));
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "SAVE did not finish"
        );
    };
    assert_eq!(saved, (7, Opcode::Save, Status::Ok));
    let took = started.elapsed();
    assert!(
        latencies.len() > 1,
        "no PING was answered while the save ran"
    );
    eprintln!(
        "save of {mib} MiB took {took:?}; {} PINGs meanwhile, p99 {:?}, max {:?}",
        latencies.len(),
        p99(latencies.clone()),
        latencies.iter().max().copied().unwrap_or_default()
    );
    assert!(dir.path().join("savefile").exists());
}
