//! Half-received requests are held within a node-wide budget (`--max-input-memory`): many
//! connections that each send most of a 1 MiB request do not grow the node past it; those
//! over the budget wait, are served once memory is given back, and the memory is returned when
//! they finish. Before the fix, 300 such connections took a node from 5 MB to 353 MB RSS.

use shoal_proto::{Command, Request, Status, StoreMode};
use shoal_tests::{wait_for, RawConn, ServerProcess};
use std::io::Write;
use std::time::Duration;

const CONNS: usize = 60;
const VALUE: usize = 1_000_000;

#[test]
fn partial_large_requests_stay_within_the_node_budget() {
    let server = ServerProcess::start(&["--memory", "128MiB", "--max-input-memory", "8MiB"]);
    let mut admin = RawConn::hello(server.native_addr);
    let before = server.rss_bytes().expect("rss");
    let value = vec![b'x'; VALUE];
    let mut conns = Vec::new();
    let mut frames = Vec::new();
    for i in 0..CONNS {
        let c = RawConn::hello(server.native_addr);
        let key = format!("big{i}");
        let mut frame = Vec::new();
        Request {
            id: 1,
            command: Command::Store {
                mode: StoreMode::Set,
                key: key.as_bytes(),
                value: &value,
                flags: 0,
                ttl: 0,
            },
        }
        .encode(&mut frame);
        // All but the last 10 bytes, from a thread (the server may not read it all yet).
        let head = frame[..frame.len() - 10].to_vec();
        let stream = c.stream.try_clone().expect("clone");
        frames.push(frame);
        conns.push((
            c,
            std::thread::spawn(move || {
                let mut s = stream;
                s.write_all(&head).expect("write");
            }),
        ));
    }
    // The budget fills and the connections beyond it wait.
    assert!(
        wait_for(Duration::from_secs(20), || admin.stat("input_buffer_waits")
            > 0),
        "no connection waited for input memory"
    );
    let held = admin.stat("input_buffered_bytes");
    assert!(held <= 8 << 20, "{held} bytes held over the 8 MiB budget");
    let grown = server.rss_bytes().expect("rss").saturating_sub(before);
    eprintln!(
        "{CONNS} partial 1 MB requests: {held} bytes held, RSS grew {} KiB",
        grown >> 10
    );
    assert!(
        grown < 48 << 20,
        "RSS grew {grown} bytes with an 8 MiB input budget"
    );
    // Finish every request at once, as real clients would: each is served, the waiting ones
    // as memory is given back (in the order they started waiting).
    let finishers: Vec<_> = conns
        .into_iter()
        .zip(frames)
        .map(|((mut c, writer), frame)| {
            std::thread::spawn(move || {
                writer.join().expect("writer");
                c.send_raw(&frame[frame.len() - 10..]);
                c.recv(|r| r.status)
            })
        })
        .collect();
    for f in finishers {
        assert_eq!(f.join().expect("finisher"), Status::Ok);
    }
    assert!(
        wait_for(Duration::from_secs(5), || admin
            .stat("input_buffered_bytes")
            == 0),
        "input memory was not given back"
    );
    assert_eq!(admin.stat("curr_items"), CONNS as u64);
}
