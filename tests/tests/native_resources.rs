//! Resource exhaustion against real servers: connection flood, slow reader, slowloris, and the
//! graceful stop under load. Every test bounds its own run time and stops its servers.

use shoal_proto::{Command, Request, Status, StoreMode};
use shoal_tests::{wait_for, RawConn, ServerProcess};
use shoald::testing::TestServer;
use shoald::Config;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn connection_flood_is_refused_and_existing_clients_keep_working() {
    const MAX: usize = 40;
    const ESTABLISHED: usize = 5;
    const EXCESS: usize = 200;
    let config = Config {
        max_connections: MAX,
        ..Config::default()
    };
    let server = TestServer::start(config);
    let addr = server.native_addr;
    let mut established: Vec<RawConn> = (0..ESTABLISHED).map(|_| RawConn::hello(addr)).collect();
    // Fill the remaining slots, then 200 more.
    let mut flood: Vec<Option<TcpStream>> = (0..(MAX - ESTABLISHED + EXCESS))
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nonblocking(true).unwrap();
            Some(s)
        })
        .collect();
    // A refused connection gets a BUSY notice and then EOF; an accepted one stays silent.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused < EXCESS && Instant::now() < deadline {
        for slot in flood.iter_mut() {
            let Some(s) = slot else { continue };
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) if n >= 16 => {
                    assert_eq!(u16::from_be_bytes([buf[4], buf[5]]), Status::Busy as u16);
                    refused += 1;
                    *slot = None;
                }
                Ok(_) => *slot = None,
                Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        refused, EXCESS,
        "exactly the connections past the limit are refused"
    );
    // The established clients see no errors.
    for (i, c) in established.iter_mut().enumerate() {
        c.send(&Request {
            id: i as u32,
            command: Command::Ping,
        });
        assert_eq!(c.recv(|r| (r.id, r.status)), (i as u32, Status::Ok));
    }
    assert_eq!(established[0].stat("rejected_connections"), EXCESS as u64);
    drop(flood);
    // Slots come back: connections are counted down and new clients are served again.
    assert!(wait_for(Duration::from_secs(5), || {
        established[0].stat("curr_connections") == ESTABLISHED as u64
    }));
    let mut fresh = RawConn::hello(addr);
    fresh.send(&Request {
        id: 3,
        command: Command::Ping,
    });
    assert_eq!(fresh.recv(|r| r.status), Status::Ok);
}

#[test]
fn a_client_that_never_reads_is_disconnected_with_bounded_memory() {
    let mut server = ServerProcess::start(&["--memory", "64MiB", "--send-timeout", "1s"]);
    let addr = server.native_addr;
    let pid = server.pid().expect("pid");
    let value = vec![b'v'; 64 * 1024];
    let mut c = RawConn::hello(addr);
    c.send(&Request {
        id: 1,
        command: Command::Store {
            mode: StoreMode::Set,
            key: b"big",
            value: &value,
            flags: 0,
            ttl: 0,
        },
    });
    assert_eq!(c.recv(|r| r.status), Status::Ok);
    let baseline = rss_kib(pid);
    // 10,000 GETs of 64 KiB (625 MiB of replies), never read.
    let mut slow = TcpStream::connect(addr).expect("connect");
    let mut hello = Vec::new();
    Request {
        id: 0,
        command: Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"slow",
            auth: b"",
        },
    }
    .encode(&mut hello);
    slow.write_all(&hello).unwrap();
    let mut batch = Vec::new();
    for i in 0..10_000u32 {
        Request {
            id: i,
            command: Command::Get { key: b"big" },
        }
        .encode(&mut batch);
    }
    slow.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = slow.write_all(&batch); // may stop early once the server stops reading
    assert!(
        wait_for(Duration::from_secs(10), || RawConn::hello(addr)
            .stat("slow_reader_closes")
            == 1),
        "the slow reader is disconnected"
    );
    let grown_mib = rss_kib(pid).saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 48,
        "server memory grew by {grown_mib} MiB for one slow reader"
    );
    // Other clients are served.
    c.send(&Request {
        id: 2,
        command: Command::Ping,
    });
    assert_eq!(c.recv(|r| r.status), Status::Ok);
    server.kill();
}

#[test]
fn slowloris_connections_are_closed_at_the_frame_deadline() {
    let config = Config {
        frame_timeout: Duration::from_millis(800),
        ..Config::default()
    };
    let server = TestServer::start(config);
    let addr = server.native_addr;
    let mut hello = Vec::new();
    Request {
        id: 0,
        command: Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"slow",
            auth: b"",
        },
    }
    .encode(&mut hello);
    let mut set = Vec::new();
    let value = vec![b'x'; 200];
    Request {
        id: 1,
        command: Command::Store {
            mode: StoreMode::Set,
            key: b"k",
            value: &value,
            flags: 0,
            ttl: 0,
        },
    }
    .encode(&mut set);
    let mut conns: Vec<(TcpStream, usize)> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&hello).unwrap();
            s.write_all(&set[..20]).unwrap(); // the header and a little more
            s.set_nonblocking(true).unwrap();
            (s, 20)
        })
        .collect();
    let start = Instant::now();
    let mut normal = RawConn::hello(addr);
    // Trickle one byte per connection every 100 ms until every connection is closed.
    let mut open = conns.len();
    while open > 0 && start.elapsed() < Duration::from_secs(3) {
        open = 0;
        for (s, sent) in conns.iter_mut() {
            if *sent == usize::MAX {
                continue;
            }
            let mut buf = [0u8; 256];
            let closed = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if closed || s.write_all(&set[*sent..*sent + 1]).is_err() {
                *sent = usize::MAX;
            } else {
                *sent += 1;
                open += 1;
            }
        }
        normal.send(&Request {
            id: 9,
            command: Command::Ping,
        });
        assert_eq!(
            normal.recv(|r| r.status),
            Status::Ok,
            "normal clients are served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open, 0, "every slowloris connection was closed");
    assert!(start.elapsed() < Duration::from_millis(800) + Duration::from_secs(1));
    assert_eq!(RawConn::hello(addr).stat("frame_timeouts"), 50);
}

/// 50 clients pipeline writes while the server stops: every request gets a reply or its
/// connection closes; every acknowledged write is in the store; no value is half-written.
#[test]
fn graceful_stop_under_load_answers_or_closes_and_applies_whole_requests() {
    let mut server = TestServer::start(Config::default());
    let addr = server.native_addr;
    let clients: Vec<_> = (0..50u32)
        .map(|client| {
            std::thread::spawn(move || {
                let mut c = RawConn::hello(addr);
                let key = format!("client{client}");
                let mut last_acked = None;
                let mut seq = 0u32;
                'outer: for _round in 0..10_000 {
                    let mut batch = Vec::new();
                    for _ in 0..16 {
                        seq += 1;
                        let value = format!("{seq:010}").repeat(20);
                        Request {
                            id: seq,
                            command: Command::Store {
                                mode: StoreMode::Set,
                                key: key.as_bytes(),
                                value: value.as_bytes(),
                                flags: seq,
                                ttl: 0,
                            },
                        }
                        .encode(&mut batch);
                    }
                    if c.stream.write_all(&batch).is_err() {
                        break;
                    }
                    for _ in 0..16 {
                        match c.try_recv(|r| (r.id, r.opcode, r.status)) {
                            None => break 'outer,
                            Some((_, shoal_proto::Opcode::Notice, Status::ShuttingDown)) => {
                                continue
                            }
                            Some((id, _, Status::Ok)) => last_acked = Some(id),
                            Some(other) => panic!("unexpected reply {other:?}"),
                        }
                    }
                }
                (key, last_acked)
            })
        })
        .collect();
    // Let every client get going, then stop the server.
    assert!(wait_for(Duration::from_secs(10), || server
        .store
        .stats()
        .items
        >= 50));
    server.stop().expect("clean stop");
    for client in clients {
        let (key, last_acked) = client.join().expect("client thread");
        let stored = server
            .store
            .get(key.as_bytes(), |item| (item.flags(), item.value_vec()));
        let (flags, value) = stored.expect("every client wrote at least once");
        // Whole values only: the value encodes the same sequence number as its flags.
        assert_eq!(
            value,
            format!("{flags:010}").repeat(20).into_bytes(),
            "{key}"
        );
        if let Some(acked) = last_acked {
            assert!(
                flags >= acked,
                "{key}: acknowledged write {acked} lost (stored {flags})"
            );
        }
    }
}

#[test]
fn sigterm_under_load_exits_zero_after_answering_or_closing() {
    let mut server = ServerProcess::start(&[]);
    let addr = server.native_addr;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..50u32)
        .map(|client| {
            let started = started_tx.clone();
            std::thread::spawn(move || {
                let mut c = RawConn::hello(addr);
                let _ = started.send(());
                let mut sent = 0u64;
                let mut answered = 0u64;
                loop {
                    let mut batch = Vec::new();
                    for i in 0..16u32 {
                        Request {
                            id: i,
                            command: Command::Store {
                                mode: StoreMode::Set,
                                key: format!("c{client}").as_bytes(),
                                value: b"v",
                                flags: 0,
                                ttl: 0,
                            },
                        }
                        .encode(&mut batch);
                    }
                    if c.stream.write_all(&batch).is_err() {
                        return (sent, answered);
                    }
                    sent += 16;
                    for _ in 0..16 {
                        match c.try_recv(|r| r.opcode) {
                            None => return (sent, answered),
                            Some(shoal_proto::Opcode::Notice) => {}
                            Some(_) => answered += 1,
                        }
                    }
                }
            })
        })
        .collect();
    for _ in 0..50 {
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("client started");
    }
    let status = server.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
    let mut total_answered = 0;
    for c in clients {
        let (sent, answered) = c.join().expect("client ended (no hang)");
        assert!(answered <= sent);
        total_answered += answered;
    }
    assert!(total_answered > 0);
}
