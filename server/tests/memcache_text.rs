//! Raw-byte tests of the memcached text protocol over TCP: exact request bytes in, exact reply
//! bytes out, against an in-process server.
//!
//! The same table runs against any memcached-compatible server: set
//! `MEMCACHE_TEXT_TARGET=127.0.0.1:11211` to check the cases marked as memcached's behaviour
//! against a real memcached 1.6 (the Shoal-only cases are skipped then).

use shoald::testing::{wait_for, TestServer};
use shoald::Config;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One exchange on a fresh connection.
struct Case {
    name: &'static str,
    send: Vec<u8>,
    want: Vec<u8>,
    /// The server closes the connection after the reply.
    closes: bool,
    /// memcached 1.6.18 answers the same bytes (checked by hand with MEMCACHE_TEXT_TARGET).
    memcached_same: bool,
}

fn case(name: &'static str, send: &[u8], want: &[u8]) -> Case {
    Case {
        name,
        send: send.to_vec(),
        want: want.to_vec(),
        closes: false,
        memcached_same: true,
    }
}

impl Case {
    fn closes(mut self) -> Case {
        self.closes = true;
        self
    }

    fn shoal_only(mut self) -> Case {
        self.memcached_same = false;
        self
    }
}

fn cases() -> Vec<Case> {
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    let big = 2_000_000;
    let mut too_large = format!("set big 0 0 {big}\r\n").into_bytes();
    too_large.resize(too_large.len() + big, b'x');
    too_large.extend_from_slice(b"\r\nget big\r\n");
    let binary = b"set bin 7 0 10\r\n\0\x01\r\nEND\r\n\xff\r\nget bin\r\n";
    vec![
        case("set get", b"set a 5 0 3\r\nabc\r\nget a b\r\n", b"STORED\r\nVALUE a 5 3\r\nabc\r\nEND\r\n"),
        case("binary value", binary, b"STORED\r\nVALUE bin 7 10\r\n\0\x01\r\nEND\r\n\xff\r\nEND\r\n"),
        case("bare newlines", b"set a 0 0 1\nx\r\nget a\n", b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
        case(
            "add replace append prepend",
            b"set a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nadd b 0 0 1\r\ny\r\nreplace c 0 0 1\r\nz\r\n\
              replace a 5 0 1\r\nz\r\nappend a 9 0 2\r\nAB\r\nprepend a 9 0 2\r\nCD\r\n\
              append q 0 0 1\r\nx\r\nprepend q 0 0 1\r\nx\r\nget a b\r\n",
            b"STORED\r\nNOT_STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n\
              NOT_STORED\r\nNOT_STORED\r\nVALUE a 5 5\r\nCDzAB\r\nVALUE b 0 1\r\ny\r\nEND\r\n",
        ),
        case(
            "noreply",
            b"set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\nx\r\nappend a 0 0 1 noreply\r\ny\r\n\
              prepend a 0 0 1 noreply\r\nw\r\nincr a 1 noreply\r\ndecr a x noreply\r\n\
              touch zz 1 noreply\r\nverbosity 1 noreply\r\nget a\r\ndelete a noreply\r\nget a\r\n",
            b"VALUE a 0 3\r\nwxy\r\nEND\r\nEND\r\n",
        ),
        case(
            "cas missing and bad unique",
            b"set a 0 0 1\r\nx\r\ncas a 0 0 1 1\r\ny\r\ncas zz 0 0 1 1\r\ny\r\n",
            b"STORED\r\nEXISTS\r\nNOT_FOUND\r\n",
        ),
        case(
            "delete",
            b"set a 0 0 1\r\nx\r\ndelete a 0\r\ndelete a\r\ndelete a 1\r\ndelete a 0 noreply\r\ndelete\r\n",
            b"STORED\r\nDELETED\r\nNOT_FOUND\r\n\
              CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\nERROR\r\n",
        ),
        case(
            "incr decr",
            b"set n 5 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n abc\r\nincr n -1\r\n\
              set s 0 0 1\r\nx\r\nincr s 1\r\nincr missing 1\r\nincr n\r\n",
            b"STORED\r\n15\r\n0\r\nCLIENT_ERROR invalid numeric delta argument\r\n\
              CLIENT_ERROR invalid numeric delta argument\r\nSTORED\r\n\
              CLIENT_ERROR cannot increment or decrement non-numeric value\r\nNOT_FOUND\r\nERROR\r\n",
        ),
        case(
            "incr wraps",
            b"set n 0 0 20\r\n18446744073709551615\r\nincr n 1\r\n",
            b"STORED\r\n0\r\n",
        ),
        case(
            "touch",
            b"set a 0 0 1\r\nx\r\ntouch a 10\r\ntouch b 10\r\ntouch a abc\r\ntouch a\r\ntouch a -1\r\nget a\r\n",
            b"STORED\r\nTOUCHED\r\nNOT_FOUND\r\nCLIENT_ERROR invalid exptime argument\r\nERROR\r\nTOUCHED\r\nEND\r\n",
        ),
        case(
            "gat",
            b"set a 3 0 1\r\nx\r\ngat 100 a b a\r\ngat abc a\r\ngat 100\r\ngat\r\n",
            b"STORED\r\nVALUE a 3 1\r\nx\r\nVALUE a 3 1\r\nx\r\nEND\r\n\
              CLIENT_ERROR invalid exptime argument\r\nEND\r\nERROR\r\n",
        ),
        case(
            "exptime negative and absolute past",
            b"set a 0 -1 1\r\nx\r\nget a\r\nset b 0 1000000000 1\r\nx\r\nget b\r\nset c 0 2592000 1\r\nx\r\nget c\r\n",
            b"STORED\r\nEND\r\nSTORED\r\nEND\r\nSTORED\r\nVALUE c 0 1\r\nx\r\nEND\r\n",
        ),
        case(
            "flags range",
            b"set a 4294967295 0 1\r\nx\r\nget a\r\n",
            b"STORED\r\nVALUE a 4294967295 1\r\nx\r\nEND\r\n",
        ),
        case(
            "flags over u32",
            b"set a 4294967296 0 1\r\nx\r\nget a\r\n",
            b"CLIENT_ERROR bad command line format\r\nEND\r\n",
        )
        .shoal_only(),
        case(
            "key 250 and 251",
            format!("set {k250} 0 0 1\r\nx\r\nget {k250}\r\nget {k251}\r\n").as_bytes(),
            format!("STORED\r\nVALUE {k250} 0 1\r\nx\r\nEND\r\nCLIENT_ERROR bad command line format\r\n")
                .as_bytes(),
        ),
        case(
            "bad key on set skips the data block",
            format!("set {k251} 0 0 9\r\nget zzz\r\n\r\nget a\r\n").as_bytes(),
            b"CLIENT_ERROR bad command line format\r\nEND\r\n",
        )
        .shoal_only(),
        case(
            "unknown commands",
            b"\r\n  \r\nfoo\r\nGET a\r\nget\r\nset a 0 0\r\nstats foo\r\nverbosity\r\n",
            b"ERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\n",
        ),
        case(
            "verbosity and flush_all",
            b"set a 0 0 1\r\nx\r\nverbosity 1\r\nverbosity x\r\nflush_all\r\nflush_all 0\r\nflush_all abc\r\nget a\r\n",
            b"STORED\r\nOK\r\nCLIENT_ERROR bad command line format\r\nOK\r\nOK\r\n\
              CLIENT_ERROR invalid exptime argument\r\nEND\r\n",
        ),
        case(
            "flush_all with a delay is accepted; the key stays until then",
            b"set d 0 0 1\r\nx\r\nflush_all 100\r\nget d\r\nflush_all 0\r\n",
            b"STORED\r\nOK\r\nVALUE d 0 1\r\nx\r\nEND\r\nOK\r\n",
        ),
        case(
            "version",
            b"version\r\n",
            format!("VERSION {}\r\n", shoald::net::memcache::VERSION).as_bytes(),
        )
        .shoal_only(),
        case(
            "too large value is swallowed",
            &too_large,
            b"SERVER_ERROR object too large for cache\r\nEND\r\n",
        ),
        case("quit", b"quit\r\nget a\r\n", b"").closes(),
        case("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"").closes(),
        case(
            "bad data chunk",
            b"set a 0 0 1\r\nab\r\nget a\r\n",
            b"CLIENT_ERROR bad data chunk\r\n",
        )
        .closes()
        .shoal_only(),
        case(
            "negative length",
            b"set a 0 0 -1\r\nget a\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        )
        .closes()
        .shoal_only(),
        case(
            "absurd length",
            b"set a 0 0 4294967295\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        )
        .closes()
        .shoal_only(),
        case("line too long", &[b'x'; 10_000], b"CLIENT_ERROR line too long\r\n")
            .closes()
            .shoal_only(),
    ]
}

/// Sends `bytes` on a new connection and reads until `want_len` bytes arrived and nothing
/// more follows, or the server closes. Returns the reply and whether the server closed.
fn exchange(addr: SocketAddr, bytes: &[u8], want_len: usize) -> (Vec<u8>, bool) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set timeout");
    // Write from another thread: a large request and its replies may fill both directions.
    let mut writer = conn.try_clone().expect("clone");
    let bytes = bytes.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let closed = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.len() >= want_len || Instant::now() > deadline {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    let _ = sender.join();
    (got, closed)
}

fn flush(addr: SocketAddr) {
    let (reply, _) = exchange(addr, b"flush_all\r\n", 4);
    assert_eq!(reply, b"OK\r\n");
}

fn run_table(addr: SocketAddr, only_memcached: bool) {
    for c in cases() {
        if only_memcached && !c.memcached_same {
            continue;
        }
        flush(addr);
        let (got, closed) = exchange(addr, &c.send, c.want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&c.want),
            "case {:?}",
            c.name
        );
        assert_eq!(closed, c.closes, "case {:?}: closed", c.name);
    }
}

fn server() -> (TestServer, SocketAddr) {
    let server = TestServer::start(Config::default());
    let addr = server
        .memcache_addr
        .expect("memcached listener on by default");
    (server, addr)
}

#[test]
fn raw_byte_table_matches_exactly() {
    if let Ok(target) = std::env::var("MEMCACHE_TEXT_TARGET") {
        let addr = target.parse().expect("MEMCACHE_TEXT_TARGET is host:port");
        println!("running the memcached-compatible cases against {addr}");
        run_table(addr, true);
        return;
    }
    let (_server, addr) = server();
    run_table(addr, false);
}

#[test]
fn gets_unique_works_with_cas_over_tcp() {
    let (_server, addr) = server();
    let (reply, _) = exchange(addr, b"set k 0 0 3\r\nabc\r\ngets k\r\n", 30);
    let text = String::from_utf8_lossy(&reply).into_owned();
    let unique = text
        .lines()
        .find_map(|l| l.strip_prefix("VALUE k 0 3 "))
        .expect("gets line")
        .to_owned();
    let cas = format!("cas k 0 0 3 {unique}\r\nxyz\r\ncas k 0 0 3 {unique}\r\nzzz\r\nget k\r\n");
    let want = b"STORED\r\nEXISTS\r\nVALUE k 0 3\r\nxyz\r\nEND\r\n";
    let (reply, _) = exchange(addr, cas.as_bytes(), want.len());
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn bad_input_closes_only_that_connection_and_is_counted() {
    let (server, addr) = server();
    let mut good = TcpStream::connect(addr).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for bad in [
        &b"set a 0 0 1\r\nxyz\r\n"[..],
        b"set a 0 0 99999999999\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let (_, closed) = exchange(addr, bad, usize::MAX);
        assert!(closed, "{bad:?}");
        let started = Instant::now();
        good.write_all(b"version\r\n").expect("write");
        let mut buf = [0u8; 64];
        let n = good.read(&mut buf).expect("read");
        assert!(buf[..n].starts_with(b"VERSION "));
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let (stats, _) = exchange(addr, b"stats\r\nquit\r\n", usize::MAX);
    let stats = String::from_utf8_lossy(&stats).into_owned();
    for line in [
        "STAT bad_input 3\r\n",
        "STAT bad_data_chunk 1\r\n",
        "STAT frame_too_large 1\r\n",
    ] {
        assert!(stats.contains(line), "{line} in {stats}");
    }
    drop(server);
}

#[test]
fn pipelined_thousands_of_commands_in_one_write() {
    let (_server, addr) = server();
    let mut send = Vec::new();
    let mut want = Vec::new();
    for i in 0..5000 {
        send.extend_from_slice(format!("set k{i} 0 0 4\r\n{i:04}\r\nget k{i}\r\n").as_bytes());
        want.extend_from_slice(format!("STORED\r\nVALUE k{i} 0 4\r\n{i:04}\r\nEND\r\n").as_bytes());
    }
    let (got, closed) = exchange(addr, &send, want.len());
    assert!(!closed);
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}

#[test]
fn delayed_flush_all_empties_the_store_when_due_and_a_later_flush_replaces_it() {
    let (_server, addr) = server();
    let get_d = b"get d\r\n";
    let set_d = b"set d 0 0 1\r\nx\r\n";
    let present = b"VALUE d 0 1\r\nx\r\nEND\r\n";
    assert_eq!(exchange(addr, set_d, 8).0, b"STORED\r\n");
    assert_eq!(exchange(addr, b"flush_all 1\r\n", 4).0, b"OK\r\n");
    assert_eq!(exchange(addr, get_d, present.len()).0, present.to_vec());
    assert!(
        wait_for(Duration::from_secs(5), || exchange(addr, get_d, 5).0
            == b"END\r\n"),
        "the delayed flush ran"
    );
    // A pending flush is replaced by a later flush_all (here one far in the future).
    assert_eq!(exchange(addr, set_d, 8).0, b"STORED\r\n");
    assert_eq!(exchange(addr, b"flush_all 1\r\n", 4).0, b"OK\r\n");
    assert_eq!(exchange(addr, b"flush_all 3600\r\n", 4).0, b"OK\r\n");
    let end = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < end {
        assert_eq!(
            exchange(addr, get_d, present.len()).0,
            present.to_vec(),
            "replaced flush must not run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn version_parses_as_a_memcached_version() {
    // libmemcached-based clients refuse a major version of 0; pin the shape they parse.
    let (_server, addr) = server();
    let want = format!("VERSION {}\r\n", shoald::net::memcache::VERSION);
    let (got, _) = exchange(addr, b"version\r\n", want.len());
    let text = String::from_utf8(got).expect("ascii");
    let version = text
        .trim_end()
        .strip_prefix("VERSION ")
        .expect("VERSION line");
    let mut parts = version.split(['.', '-']);
    let major: u32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("numeric major");
    let minor: u32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("numeric minor");
    assert!(major >= 1, "{version}");
    assert!((major, minor) >= (1, 6), "{version}");
}
