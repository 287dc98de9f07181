//! The native protocol over real TCP against an in-process server on port 0: every request,
//! pipelined batches with arbitrary ids, exact wire bytes, and STATS.

use shoal_proto::{Command, Opcode, ReplyBody, Request, Status, StoreMode};
use shoal_tests::RawConn;
use shoald::testing::TestServer;
use shoald::Config;

fn server() -> TestServer {
    TestServer::start(Config::default())
}

fn req(id: u32, command: Command<'_>) -> Request<'_> {
    Request { id, command }
}

/// Status and owned body summary of the next reply.
fn next(c: &mut RawConn) -> (u32, Opcode, Status, String) {
    c.recv(|r| (r.id, r.opcode, r.status, format!("{:?}", r.body)))
}

#[test]
fn hello_is_answered_with_exact_bytes() {
    let s = server();
    let mut c = RawConn::connect(s.native_addr);
    // HELLO from client "c", versions 1..1, no auth, id 1 (the docs/protocol.md example).
    c.send_raw(&[
        0x53, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 1, 1, 0, 1, b'c', 0, 0,
    ]);
    let mut want = vec![0x53, 1, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 1];
    let name = shoald::net::native::SERVER_NAME.as_bytes();
    want.extend_from_slice(&(7 + name.len() as u32).to_be_bytes());
    want.push(1);
    want.extend_from_slice(&(name.len() as u16).to_be_bytes());
    want.extend_from_slice(name);
    want.extend_from_slice(&1024u32.to_be_bytes()); // the cluster's bucket count
    let mut got = vec![0u8; want.len()];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, want);
}

#[test]
fn get_set_reply_bytes_are_pinned() {
    let s = server();
    let mut c = RawConn::hello(s.native_addr);
    // SET k=v flags 0 ttl 60, id 2 (the docs example), then GET k id 7.
    c.send_raw(&[
        0x53, 1, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x3c, 0, 1,
        b'k', 0, 0, 0, 1, b'v',
    ]);
    let mut set_reply = [0u8; 24];
    std::io::Read::read_exact(&mut c.stream, &mut set_reply).unwrap();
    let hash = shoal_proto::hash::value_hash(b"v").to_be_bytes();
    let mut want = vec![0x53, 1, 0x20, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 8];
    want.extend_from_slice(&hash);
    assert_eq!(set_reply.to_vec(), want);

    c.send_raw(&[
        0x53, 1, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 1, b'k',
    ]);
    let mut get_reply = [0u8; 25];
    std::io::Read::read_exact(&mut c.stream, &mut get_reply).unwrap();
    assert_eq!(
        get_reply.to_vec(),
        vec![0x53, 1, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, b'v']
    );
    // A miss: NOT_FOUND with an empty message (the docs example).
    c.send_raw(&[
        0x53, 1, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 1, b'z',
    ]);
    let mut miss = [0u8; 18];
    std::io::Read::read_exact(&mut c.stream, &mut miss).unwrap();
    assert_eq!(
        miss.to_vec(),
        vec![0x53, 1, 0x10, 1, 0, 1, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0]
    );
}

#[test]
fn every_request_type_behaves_as_documented() {
    let s = server();
    let mut c = RawConn::hello(s.native_addr);
    let mut id = 100;
    let mut call = |c: &mut RawConn, command: Command<'_>| {
        id += 1;
        c.send(&req(id, command));
        let r = next(c);
        assert_eq!(r.0, id, "reply id");
        assert_eq!(r.1, command.opcode(), "reply opcode");
        (r.2, r.3)
    };
    let set = |mode, value: &'static [u8]| Command::Store {
        mode,
        key: b"k",
        value,
        flags: 9,
        ttl: 0,
    };
    assert_eq!(call(&mut c, Command::Ping).0, Status::Ok);
    assert_eq!(call(&mut c, Command::Get { key: b"k" }).0, Status::NotFound);
    assert_eq!(
        call(&mut c, set(StoreMode::Replace, b"x")).0,
        Status::NotStored
    );
    assert_eq!(call(&mut c, set(StoreMode::Add, b"one")).0, Status::Ok);
    assert_eq!(
        call(&mut c, set(StoreMode::Add, b"two")).0,
        Status::NotStored
    );
    assert_eq!(
        call(&mut c, set(StoreMode::Replace, b"three")).0,
        Status::Ok
    );
    let h3 = shoal_proto::hash::value_hash(b"three");
    let (st, body) = call(&mut c, Command::GetWithHash { key: b"k" });
    assert_eq!(st, Status::Ok);
    assert!(body.contains(&format!("hash: {h3}")), "{body}");
    assert!(body.contains("flags: 9"), "{body}");
    // CAS with a stale hash, then the right one.
    let cas = |expected, value: &'static [u8]| Command::Cas {
        key: b"k",
        value,
        flags: 1,
        ttl: 0,
        expected,
    };
    assert_eq!(call(&mut c, cas(h3 ^ 1, b"four")).0, Status::Exists);
    assert_eq!(call(&mut c, cas(h3, b"four")).0, Status::Ok);
    assert_eq!(
        call(
            &mut c,
            Command::Cas {
                key: b"nope",
                value: b"",
                flags: 0,
                ttl: 0,
                expected: 1
            }
        )
        .0,
        Status::NotFound
    );
    assert_eq!(
        call(
            &mut c,
            Command::Concat {
                prepend: false,
                key: b"k",
                value: b"-end"
            }
        )
        .0,
        Status::Ok
    );
    assert_eq!(
        call(
            &mut c,
            Command::Concat {
                prepend: true,
                key: b"k",
                value: b"start-"
            }
        )
        .0,
        Status::Ok
    );
    assert_eq!(
        call(
            &mut c,
            Command::Concat {
                prepend: true,
                key: b"absent",
                value: b"x"
            }
        )
        .0,
        Status::NotStored
    );
    let (st, body) = call(&mut c, Command::Get { key: b"k" });
    assert_eq!(st, Status::Ok);
    assert!(body.contains(&format!("{:?}", b"start-four-end")), "{body}");
    assert_eq!(
        call(
            &mut c,
            Command::Touch {
                key: b"k",
                ttl: 100
            }
        )
        .0,
        Status::Ok
    );
    assert_eq!(
        call(
            &mut c,
            Command::Touch {
                key: b"absent",
                ttl: 100
            }
        )
        .0,
        Status::NotFound
    );
    assert_eq!(
        call(&mut c, Command::GetAndTouch { key: b"k", ttl: 0 }).0,
        Status::Ok
    );
    // Counters.
    let counter = |decr, delta, create| Command::Counter {
        decr,
        key: b"n",
        delta,
        create,
    };
    assert_eq!(call(&mut c, counter(false, 1, None)).0, Status::NotFound);
    let (st, body) = call(&mut c, counter(false, 5, Some((10, 0))));
    assert_eq!(st, Status::Ok);
    assert!(
        body.contains("value: 10"),
        "created with the initial value: {body}"
    );
    let (_, body) = call(&mut c, counter(false, 5, None));
    assert!(body.contains("value: 15"), "{body}");
    let (_, body) = call(&mut c, counter(true, 100, None));
    assert!(body.contains("value: 0,"), "decr stops at zero: {body}");
    assert_eq!(
        call(
            &mut c,
            Command::Counter {
                decr: false,
                key: b"k",
                delta: 1,
                create: None
            }
        )
        .0,
        Status::NonNumeric
    );
    // Conditional and plain delete.
    assert_eq!(
        call(
            &mut c,
            Command::Delete {
                key: b"k",
                expected: Some(1)
            }
        )
        .0,
        Status::Exists
    );
    assert_eq!(
        call(
            &mut c,
            Command::Delete {
                key: b"k",
                expected: None
            }
        )
        .0,
        Status::Ok
    );
    assert_eq!(
        call(
            &mut c,
            Command::Delete {
                key: b"k",
                expected: None
            }
        )
        .0,
        Status::NotFound
    );
    // STATS carries server and store counters.
    c.send(&req(9_999, Command::Stats { group: b"" }));
    let names = c.recv(|r| match r.body {
        ReplyBody::Stats(list) => list
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect::<Vec<_>>(),
        other => panic!("unexpected {other:?}"),
    });
    for name in [
        "curr_items",
        "native_requests",
        "curr_connections",
        "evictions",
        "bad_input",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "missing {name} in {names:?}"
        );
    }
    // GOODBYE: OK, then the server closes.
    assert_eq!(call(&mut c, Command::Goodbye).0, Status::Ok);
    assert!(c.closed_within(std::time::Duration::from_secs(1)));
}

#[test]
fn multi_get_answers_in_request_order() {
    let s = server();
    let mut c = RawConn::hello(s.native_addr);
    for (i, key) in [b"a", b"c"].iter().enumerate() {
        c.send(&req(
            i as u32,
            Command::Store {
                mode: StoreMode::Set,
                key: *key,
                value: *key,
                flags: i as u32,
                ttl: 0,
            },
        ));
        assert_eq!(next(&mut c).2, Status::Ok);
    }
    let mut frame = Vec::new();
    shoal_proto::encode_multi_get(&mut frame, 55, [&b"a"[..], b"b", b"c", b"a"]);
    c.send_raw(&frame);
    let entries = c.recv(|r| match r.body {
        ReplyBody::Values(list) => list
            .iter()
            .map(|e| e.found().map(|f| (f.flags, f.value.to_vec())))
            .collect::<Vec<_>>(),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(
        entries,
        vec![
            Some((0, b"a".to_vec())),
            None,
            Some((1, b"c".to_vec())),
            Some((0, b"a".to_vec()))
        ]
    );
}

#[test]
fn pipelined_requests_with_arbitrary_ids_all_get_their_replies() {
    let s = server();
    let mut c = RawConn::hello(s.native_addr);
    let mut batch = Vec::new();
    let ids: Vec<u32> = (0..2000u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let key = format!("key{}", (i / 2) % 50);
        let value = format!("value{i}");
        let command = if i % 2 == 0 {
            Command::Store {
                mode: StoreMode::Set,
                key: key.as_bytes(),
                value: value.as_bytes(),
                flags: 0,
                ttl: 0,
            }
        } else {
            Command::Get {
                key: key.as_bytes(),
            }
        };
        req(*id, command).encode(&mut batch);
    }
    c.send_raw(&batch);
    for (i, id) in ids.iter().enumerate() {
        let (got, _, status, body) = next(&mut c);
        assert_eq!(got, *id, "reply {i}");
        assert_eq!(status, Status::Ok);
        if i % 2 == 1 {
            // The GET right after a SET of the same key sees that SET.
            assert!(
                body.contains(&format!("{:?}", format!("value{}", i - 1).as_bytes())),
                "{body}"
            );
        }
    }
}

#[test]
fn limits_at_max_are_accepted_and_past_max_rejected() {
    let config = Config {
        max_value_size: 4096,
        ..Config::default()
    };
    let s = TestServer::start(config);
    let mut c = RawConn::hello(s.native_addr);
    let key = vec![b'k'; 250];
    let value = vec![b'v'; 4096];
    c.send(&req(
        1,
        Command::Store {
            mode: StoreMode::Set,
            key: &key,
            value: &value,
            flags: 0,
            ttl: 0,
        },
    ));
    assert_eq!(next(&mut c).2, Status::Ok);
    // Key 251: KEY_TOO_LONG, connection stays usable.
    let long_key = vec![b'k'; 251];
    c.send(&req(2, Command::Get { key: &long_key }));
    assert_eq!(next(&mut c).2, Status::KeyTooLong);
    // Value max+1: VALUE_TOO_LARGE, and the key keeps its old value (never half-written).
    let big = vec![b'x'; 4097];
    c.send(&req(
        3,
        Command::Store {
            mode: StoreMode::Set,
            key: &key,
            value: &big,
            flags: 0,
            ttl: 0,
        },
    ));
    assert_eq!(next(&mut c).2, Status::ValueTooLarge);
    c.send(&req(4, Command::Get { key: &key }));
    let len = c.recv(|r| match r.body {
        ReplyBody::Value { value, .. } => value.len(),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(len, 4096);
    // Multi-get at the batch limit works; one more key is refused.
    let keys: Vec<Vec<u8>> = (0..1025).map(|i| format!("m{i}").into_bytes()).collect();
    let mut frame = Vec::new();
    shoal_proto::encode_multi_get(&mut frame, 5, keys[..1024].iter().map(Vec::as_slice));
    c.send_raw(&frame);
    assert_eq!(next(&mut c).2, Status::Ok);
    let mut frame = Vec::new();
    shoal_proto::encode_multi_get(&mut frame, 6, keys.iter().map(Vec::as_slice));
    c.send_raw(&frame);
    assert_eq!(next(&mut c).2, Status::BadRequest);
    c.send(&req(7, Command::Ping));
    assert_eq!(next(&mut c).2, Status::Ok);
}

#[test]
fn requests_before_hello_are_refused_and_the_connection_closed() {
    let s = server();
    let mut c = RawConn::connect(s.native_addr);
    c.send(&req(3, Command::Get { key: b"k" }));
    let (id, _, status, _) = next(&mut c);
    assert_eq!((id, status), (3, Status::HelloRequired));
    assert!(c.closed_within(std::time::Duration::from_secs(1)));
    // A HELLO that offers only future versions.
    let mut c = RawConn::connect(s.native_addr);
    c.send(&req(
        1,
        Command::Hello {
            min_version: 2,
            max_version: 9,
            client_name: b"",
            auth: b"",
        },
    ));
    assert_eq!(next(&mut c).2, Status::UnsupportedVersion);
    assert!(c.closed_within(std::time::Duration::from_secs(1)));
}
