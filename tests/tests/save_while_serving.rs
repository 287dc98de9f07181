//! SAVE no longer blocks its connection or the node: while a savefile of a large cache is
//! written, the same connection and another one keep getting PING answers, and the SAVE reply
//! comes when the file is on disk. The data set is 256 MiB here (CI); set
//! `SHOAL_SAVE_TEST_MIB=1024` to run it with 1 GiB by hand. The PING latencies' p99 is printed.

#[path = "savefile_common/mod.rs"]
mod common;

use common::TempDir;
use shoal_proto::{Command, Opcode, Request, Status};
use shoal_tests::{RawConn, ServerProcess};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Values of 4 KiB.
const VALUE: usize = 4096;

fn fill(server: &ServerProcess, bytes: usize) {
    let mut c = TcpStream::connect(server.memcache_addr.expect("memcached port")).expect("connect");
    let value = vec![b'v'; VALUE];
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..bytes / VALUE {
        batch.extend_from_slice(format!("set key{i} 0 0 {VALUE} noreply\r\n").as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
        if batch.len() >= 1 << 20 {
            c.write_all(&batch).expect("write");
            batch.clear();
        }
    }
    batch.extend_from_slice(b"version\r\n");
    c.write_all(&batch).expect("write");
    let mut reply = [0u8; 64];
    let n = std::io::Read::read(&mut c, &mut reply).expect("read");
    assert!(reply[..n].starts_with(b"VERSION"), "{:?}", &reply[..n]);
}

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
    fill(&server, mib << 20);

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
