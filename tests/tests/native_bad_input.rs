//! `shared/reference/reliability.md` section 5 over real TCP: for every bad-input case the
//! server answers with the documented status and closes (or keeps the connection, where the
//! frame was well delimited) within 1 s, another connection's PING stays fast throughout, the
//! process does not panic, and the bad-input counter moves by exactly one.

use shoal_proto::{header::FLAG_REPLY, Command, Opcode, Request, Status, StoreMode};
use shoal_tests::RawConn;
use shoald::testing::TestServer;
use shoald::Config;
use std::io::Write;
use std::time::{Duration, Instant};

const MAX_VALUE: usize = 4096;

use shoal_proto::raw::{frame, header, key_field};

fn config() -> Config {
    Config {
        max_value_size: MAX_VALUE,
        frame_timeout: Duration::from_millis(700),
        ..Config::default()
    }
}

/// The best of three PING round trips on an established connection: one slow sample from
/// scheduling noise does not fail the test, a stalled server does.
fn ping_ms(c: &mut RawConn) -> u128 {
    (0..3)
        .map(|i| {
            let start = Instant::now();
            c.send(&Request {
                id: 90_000 + i,
                command: Command::Ping,
            });
            assert_eq!(c.recv(|r| r.status), Status::Ok);
            start.elapsed().as_millis()
        })
        .min()
        .unwrap_or(u128::MAX)
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status, then the connection closes.
    Close(Status),
    /// This status, and the connection still works.
    Open(Status),
    /// The connection closes (no reply expected, e.g. a frame deadline).
    Closed,
}

/// Runs one case on a fresh server: HELLO (unless `hello` is false), send `bytes`, check.
fn case(name: &str, hello: bool, bytes: &[u8], expect: Expect, counter: Option<&str>) {
    let mut server = TestServer::start(config());
    let addr = server.native_addr;
    let mut watcher = RawConn::hello(addr);
    let before = counter.map(|c| {
        (
            RawConn::hello(addr).stat(c),
            RawConn::hello(addr).stat("bad_input"),
        )
    });
    let mut c = if hello {
        RawConn::hello(addr)
    } else {
        RawConn::connect(addr)
    };
    c.send_raw(bytes);
    let start = Instant::now();
    match expect {
        Expect::Close(status) | Expect::Open(status) => {
            let got = c.try_recv_header().map(|h| h.status);
            assert_eq!(got, Some(status as u16), "{name}: reply status");
        }
        Expect::Closed => {}
    }
    match expect {
        Expect::Close(_) | Expect::Closed => {
            assert!(
                c.closed_within(Duration::from_secs(2)),
                "{name}: connection must close"
            );
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{name}: closed late"
            );
        }
        Expect::Open(_) => {
            c.send(&Request {
                id: 77,
                command: Command::Ping,
            });
            assert_eq!(
                c.recv(|r| (r.id, r.status)),
                (77, Status::Ok),
                "{name}: still open"
            );
        }
    }
    let ms = ping_ms(&mut watcher);
    assert!(ms < 50, "{name}: another connection's PING took {ms} ms");
    if let (Some(counter), Some((class_before, all_before))) = (counter, before) {
        assert_eq!(
            RawConn::hello(addr).stat(counter),
            class_before + 1,
            "{name}: {counter} counter"
        );
        assert_eq!(
            RawConn::hello(addr).stat("bad_input"),
            all_before + 1,
            "{name}: bad_input counter"
        );
    }
    server.stop().expect("clean stop");
}

// --- Framing ---------------------------------------------------------------------------------

#[test]
fn c01_empty_body_where_fields_are_required() {
    case(
        "get with empty body",
        true,
        &frame(Opcode::Get, 1, &[]),
        Expect::Close(Status::BadRequest),
        Some("bad_input"),
    );
}

#[test]
fn c01_header_split_across_reads_byte_by_byte() {
    let server = TestServer::start(config());
    let mut c = RawConn::hello(server.native_addr);
    let mut ping = Vec::new();
    Request {
        id: 5,
        command: Command::Ping,
    }
    .encode(&mut ping);
    for b in &ping {
        c.stream.write_all(&[*b]).unwrap();
        c.stream.flush().unwrap();
    }
    assert_eq!(c.recv(|r| (r.id, r.status)), (5, Status::Ok));
}

#[test]
fn c02_frame_lengths_past_the_limit() {
    let max_frame = config().limits().max_frame as u32;
    for len in [max_frame + 1, 1 << 31, u32::MAX] {
        case(
            &format!("length {len}"),
            true,
            &header(Opcode::Set as u8, 0, 0, 1, len),
            Expect::Close(Status::ValueTooLarge),
            Some("frame_too_large"),
        );
    }
}

#[test]
fn c02_frame_length_at_the_limit_is_read() {
    // A SET whose body is exactly max_frame bytes: the frame is read in full; its value is
    // over max_value, so it is refused with VALUE_TOO_LARGE and the connection stays open.
    let max_frame = config().limits().max_frame;
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&key_field(b"k"));
    let value_len = max_frame - body.len() - 4;
    body.extend_from_slice(&(value_len as u32).to_be_bytes());
    body.resize(max_frame, b'v');
    case(
        "frame of max_frame",
        true,
        &frame(Opcode::Set, 1, &body),
        Expect::Open(Status::ValueTooLarge),
        Some("value_too_large"),
    );
}

#[test]
fn c03_little_endian_length_is_refused_as_too_large() {
    let mut f = header(Opcode::Ping as u8, 0, 0, 1, 0);
    f[12..16].copy_from_slice(&[3, 0, 0, 0]); // 3 written little-endian = 50,331,648
    case(
        "little-endian length",
        true,
        &f,
        Expect::Close(Status::ValueTooLarge),
        Some("frame_too_large"),
    );
}

#[test]
fn c04_short_body_then_eof_applies_nothing() {
    let server = TestServer::start(config());
    let mut c = RawConn::hello(server.native_addr);
    let mut f = Vec::new();
    Request {
        id: 1,
        command: Command::Store {
            mode: StoreMode::Set,
            key: b"half",
            value: b"0123456789",
            flags: 0,
            ttl: 0,
        },
    }
    .encode(&mut f);
    c.send_raw(&f[..f.len() - 3]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed_within(Duration::from_secs(1)));
    let mut check = RawConn::hello(server.native_addr);
    check.send(&Request {
        id: 2,
        command: Command::Get { key: b"half" },
    });
    assert_eq!(
        check.recv(|r| r.status),
        Status::NotFound,
        "nothing half-applied"
    );
}

#[test]
fn c05_short_body_then_silence_closes_at_the_frame_deadline() {
    let mut f = header(Opcode::Set as u8, 0, 0, 1, 100);
    f.extend_from_slice(&[0; 10]);
    // frame_timeout is 700 ms; the case allows 2 s in all.
    case(
        "slowloris frame",
        true,
        &f,
        Expect::Closed,
        Some("frame_timeouts"),
    );
}

#[test]
fn c06_ten_thousand_pipelined_frames_in_one_write() {
    let server = TestServer::start(config());
    let mut c = RawConn::hello(server.native_addr);
    let mut batch = Vec::new();
    for i in 0..10_000u32 {
        Request {
            id: i,
            command: Command::Ping,
        }
        .encode(&mut batch);
    }
    c.send_raw(&batch);
    for i in 0..10_000u32 {
        assert_eq!(c.recv(|r| r.id), i);
    }
}

#[test]
fn c07_trailing_junk_and_overrun() {
    let mut body = key_field(b"k");
    body.push(0);
    case(
        "trailing junk",
        true,
        &frame(Opcode::Get, 1, &body),
        Expect::Close(Status::BadRequest),
        Some("bad_input"),
    );
    let mut f = frame(Opcode::Get, 1, &[0, 10, b'a']);
    f.extend_from_slice(&frame(Opcode::Ping, 2, &[]));
    case(
        "inner field overruns the frame",
        true,
        &f,
        Expect::Close(Status::BadRequest),
        Some("bad_input"),
    );
}

// --- Inner fields ---------------------------------------------------------------------------

#[test]
fn c08_key_lengths() {
    case(
        "empty key",
        true,
        &frame(Opcode::Get, 1, &key_field(b"")),
        Expect::Open(Status::BadRequest),
        Some("bad_key"),
    );
    case(
        "key 251",
        true,
        &frame(Opcode::Get, 1, &key_field(&[b'k'; 251])),
        Expect::Open(Status::KeyTooLong),
        Some("bad_key"),
    );
    case(
        "key past the frame",
        true,
        &frame(Opcode::Get, 1, &[0, 200, b'k']),
        Expect::Close(Status::BadRequest),
        Some("bad_input"),
    );
}

#[test]
fn c09_c11_value_lengths() {
    let mut body = vec![0; 8];
    body.extend_from_slice(&key_field(b"k"));
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    case(
        "value length u32::MAX in a small frame",
        true,
        &frame(Opcode::Set, 1, &body),
        Expect::Open(Status::ValueTooLarge),
        Some("value_too_large"),
    );
    let max_frame = config().limits().max_frame as u32;
    case(
        "max_value+1 with no body sent",
        true,
        &header(Opcode::Set as u8, 0, 0, 1, max_frame + 1),
        Expect::Close(Status::ValueTooLarge),
        Some("frame_too_large"),
    );
}

#[test]
fn c10_multi_get_count_in_a_tiny_frame() {
    case(
        "count 65535",
        true,
        &frame(Opcode::MultiGet, 1, &[0xFF, 0xFF]),
        Expect::Open(Status::BadRequest),
        Some("bad_input"),
    );
}

#[test]
fn c12_unknown_opcode_reserved_bits_magic_version() {
    case(
        "unknown opcode",
        true,
        &header(0xEE, 0, 0, 1, 0),
        Expect::Open(Status::UnknownCommand),
        Some("unknown_command"),
    );
    case(
        "reserved flag bit",
        true,
        &header(Opcode::Ping as u8, 0x40, 0, 1, 0),
        Expect::Close(Status::BadRequest),
        Some("bad_input"),
    );
    let mut bad_magic = header(Opcode::Ping as u8, 0, 0, 1, 0);
    bad_magic[0] = 0x54;
    case(
        "bad magic",
        true,
        &bad_magic,
        Expect::Close(Status::BadRequest),
        Some("bad_magic"),
    );
    let mut future = header(Opcode::Ping as u8, 0, 0, 1, 0);
    future[1] = 9;
    case(
        "future version",
        true,
        &future,
        Expect::Close(Status::UnsupportedVersion),
        Some("bad_input"),
    );
}

#[test]
fn c13_reply_frame_sent_by_a_client() {
    case(
        "reply flag",
        true,
        &header(Opcode::Ping as u8, FLAG_REPLY, 0, 1, 0),
        Expect::Close(Status::BadRequest),
        Some("bad_input"),
    );
    case(
        "notice from a client",
        true,
        &header(Opcode::Notice as u8, 0, 0, 1, 0),
        Expect::Open(Status::UnknownCommand),
        Some("unknown_command"),
    );
}

#[test]
fn c14_to_c18_edge_values_are_ordinary_requests() {
    let server = TestServer::start(config());
    let mut c = RawConn::hello(server.native_addr);
    let call = |c: &mut RawConn, id: u32, command: Command<'_>| {
        c.send(&Request { id, command });
        c.recv(|r| (r.id, r.status, format!("{:?}", r.body)))
    };
    // 14: ids 0 and u32::MAX are echoed.
    assert_eq!(call(&mut c, 0, Command::Ping).0, 0);
    assert_eq!(call(&mut c, u32::MAX, Command::Ping).0, u32::MAX);
    // 15: CAS tokens 0 and MAX on a missing key, CAS over the value limit.
    for expected in [0, u64::MAX] {
        assert_eq!(
            call(
                &mut c,
                1,
                Command::Cas {
                    key: b"missing",
                    value: b"v",
                    flags: 0,
                    ttl: 0,
                    expected
                }
            )
            .1,
            Status::NotFound
        );
    }
    let big = vec![0u8; MAX_VALUE + 1];
    let mut f = Vec::new();
    Request {
        id: 2,
        command: Command::Cas {
            key: b"k",
            value: &big,
            flags: 0,
            ttl: 0,
            expected: 0,
        },
    }
    .encode(&mut f);
    c.send_raw(&f);
    assert_eq!(c.recv(|r| r.status), Status::ValueTooLarge);
    // 16: TTL u32::MAX stores an item that does not expire now.
    assert_eq!(
        call(
            &mut c,
            3,
            Command::Store {
                mode: StoreMode::Set,
                key: b"t",
                value: b"v",
                flags: 0,
                ttl: u32::MAX
            }
        )
        .1,
        Status::Ok
    );
    assert_eq!(call(&mut c, 4, Command::Get { key: b"t" }).1, Status::Ok);
    // 17: counters on non-numbers, wrap at u64::MAX, clamp at 0.
    assert_eq!(
        call(
            &mut c,
            5,
            Command::Counter {
                decr: false,
                key: b"t",
                delta: 1,
                create: None
            }
        )
        .1,
        Status::NonNumeric
    );
    let max = u64::MAX;
    let (_, st, body) = call(
        &mut c,
        6,
        Command::Counter {
            decr: false,
            key: b"n",
            delta: 0,
            create: Some((max, 0)),
        },
    );
    assert_eq!(st, Status::Ok);
    assert!(body.contains(&format!("value: {max}")), "{body}");
    let (_, _, body) = call(
        &mut c,
        7,
        Command::Counter {
            decr: false,
            key: b"n",
            delta: 2,
            create: None,
        },
    );
    assert!(body.contains("value: 1,"), "incr wraps at 2^64: {body}");
    let (_, _, body) = call(
        &mut c,
        8,
        Command::Counter {
            decr: true,
            key: b"n",
            delta: 5,
            create: None,
        },
    );
    assert!(body.contains("value: 0,"), "decr clamps at 0: {body}");
    // 18: keys with NUL, CR/LF, invalid UTF-8 are ordinary bytes.
    for key in [&b"a\0b"[..], b"x\r\ny", &[0xFF, 0xFE]] {
        assert_eq!(
            call(
                &mut c,
                9,
                Command::Store {
                    mode: StoreMode::Set,
                    key,
                    value: key,
                    flags: 0,
                    ttl: 0
                }
            )
            .1,
            Status::Ok
        );
        let (_, st, body) = call(&mut c, 10, Command::Get { key });
        assert_eq!(st, Status::Ok);
        assert!(body.contains(&format!("{key:?}")), "{body}");
    }
}

// --- Connection level -----------------------------------------------------------------------

#[test]
fn c19_requests_before_hello() {
    case(
        "get before hello",
        false,
        &frame(Opcode::Get, 4, &key_field(b"k")),
        Expect::Close(Status::HelloRequired),
        Some("hello_required"),
    );
}

#[test]
fn c20_foreign_protocols_on_the_native_port() {
    case(
        "http",
        false,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Expect::Close(Status::BadRequest),
        Some("bad_magic"),
    );
    case(
        "tls client hello",
        false,
        &[
            0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
        ],
        Expect::Close(Status::BadRequest),
        Some("bad_magic"),
    );
    case(
        "stray nul",
        false,
        &[0x00],
        Expect::Close(Status::BadRequest),
        Some("bad_magic"),
    );
}

#[test]
fn c21_half_close_after_the_request_still_gets_the_reply() {
    let server = TestServer::start(config());
    let mut c = RawConn::hello(server.native_addr);
    c.send(&Request {
        id: 8,
        command: Command::Ping,
    });
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.recv(|r| (r.id, r.status)), (8, Status::Ok));
}

#[test]
fn c22_thousands_of_one_byte_writes() {
    let server = TestServer::start(config());
    let mut c = RawConn::hello(server.native_addr);
    let mut pings = Vec::new();
    for i in 0..200u32 {
        Request {
            id: i,
            command: Command::Ping,
        }
        .encode(&mut pings);
    }
    for b in &pings {
        c.stream.write_all(&[*b]).unwrap();
    }
    for i in 0..200u32 {
        assert_eq!(c.recv(|r| r.id), i);
    }
}
