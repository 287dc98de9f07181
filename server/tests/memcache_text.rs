//! Raw-byte tests of the memcached text protocol over TCP: exact request bytes in, exact reply
//! bytes out, against an in-process server and against a real memcached 1.6.
//!
//! `raw_byte_table_matches_memcached` starts the `memcached` binary on an ephemeral loopback
//! port (CI installs it; without it the test says SKIPPED) and runs every case not marked
//! Shoal-only against it, byte for byte. `MEMCACHE_TEXT_TARGET=host:port` runs those cases
//! against another server instead.
//!
//! A case is one or more steps on one connection. Expected replies may hold `{c0}`..`{c9}`,
//! which match a decimal number and bind it (a check-and-set token: memcached counts, Shoal
//! hashes the value, so the numbers differ but must be used consistently), and `{_}`, which
//! matches any number (a TTL or idle time that may tick over a second boundary). A request
//! may use a bound `{cN}`.

use shoald::testing::{wait_for, TestServer};
use shoald::Config;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One or more exchanges on a fresh connection.
struct Case {
    name: &'static str,
    /// Requests and their expected replies, in order.
    steps: Vec<(Vec<u8>, Vec<u8>)>,
    /// The server closes the connection after the reply.
    closes: bool,
    /// memcached 1.6.18 answers the same bytes (checked by hand with MEMCACHE_TEXT_TARGET).
    memcached_same: bool,
}

fn case(name: &'static str, send: &[u8], want: &[u8]) -> Case {
    Case {
        name,
        steps: vec![(send.to_vec(), want.to_vec())],
        closes: false,
        memcached_same: true,
    }
}

/// A case of several steps (for replies that bind a token a later request uses).
fn steps(name: &'static str, steps: &[(&str, &str)]) -> Case {
    Case {
        name,
        steps: steps
            .iter()
            .map(|(s, w)| (s.as_bytes().to_vec(), w.as_bytes().to_vec()))
            .collect(),
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
        case(
            "meta: miss, quiet miss, opaque and key echoed, mn",
            b"mg foo v\r\nmg foo v q\r\nmg foo k O123 q\r\nmg foo k O123\r\nmn\r\n",
            b"EN\r\nEN kfoo O123\r\nMN\r\n",
        ),
        case(
            "meta: ms with flags, mg with every return flag",
            b"ms foo 2 T0 F5 k O9\r\nhi\r\nmg foo v q\r\nmg foo q\r\nmg foo s f t k v h O1 u\r\nmg foo h\r\n",
            b"HD kfoo O9\r\nVA 2\r\nhi\r\nHD\r\nVA 2 s2 f5 t-1 kfoo h1 O1\r\nhi\r\nHD h1\r\n",
        ),
        case(
            "meta: h before and after the first read; u leaves it alone",
            b"ms a 1\r\nx\r\nmg a h u\r\nmg a h\r\nmg a h\r\nmg a l\r\n",
            b"HD\r\nHD h0\r\nHD h0\r\nHD h1\r\nHD l0\r\n",
        ),
        case(
            "meta: quiet pipeline ending in mn shows only what is not nominal",
            b"ms a 1 q\r\nx\r\nms a 1 q ME\r\ny\r\nmg a v q Oa\r\nmg b v q Ob\r\nmd a q\r\nmd a q O2\r\nmn\r\n",
            b"NS\r\nVA 1 Oa\r\nx\r\nNF O2\r\nMN\r\n",
        ),
        case(
            "meta: ms modes E A P R S and the cas flag on append",
            b"ms a 1 MA\r\nx\r\nms a 1 MP\r\nx\r\nms a 1 MR\r\nx\r\nms a 1 ME\r\nx\r\nms a 1 ME\r\ny\r\n\
              ms a 1 MA\r\nz\r\nms a 1 MP\r\nw\r\nms a 3 MS F7\r\nabc\r\nmg a v f\r\nms a 1 C1 MA\r\nx\r\n\
              ms a 1 C123 q\r\nx\r\nms b 1 C123\r\nx\r\nms b 1 C123 MR\r\nx\r\n",
            b"NS\r\nNS\r\nNS\r\nHD\r\nNS\r\nHD\r\nHD\r\nHD\r\nVA 3 f7\r\nabc\r\nEX\r\nEX\r\nNF\r\nNF\r\n",
        ),
        case(
            "meta: md with cas, quiet, opaque and key",
            b"ms a 1\r\nx\r\nmd a C1 q\r\nmd b q O1 k\r\nmd a k O2\r\nmd a\r\n",
            b"HD\r\nEX\r\nNF O1 kb\r\nHD ka O2\r\nNF\r\n",
        ),
        case(
            "meta: ma incr, decr, vivify with J, quiet, v, t",
            b"ma n\r\nma n N0 J10 v\r\nma n q\r\nma n v\r\nma n MD D5 v q\r\nma n MD D5 v\r\n\
              ma n t N0 v\r\nma n M- D100 v\r\nma n M+ v k O1\r\nma m q N0 J7 v\r\nmn\r\n",
            b"NF\r\nVA 2\r\n10\r\nVA 2\r\n12\r\nVA 1\r\n2\r\nVA 1 t-1\r\n3\r\nVA 1\r\n0\r\n\
              VA 1 kn O1\r\n1\r\nVA 1\r\n7\r\nMN\r\n",
        ),
        case(
            "meta: ma on a non-number, bad delta, initial and mode",
            b"ms s 1\r\nx\r\nma s\r\nma s Dx\r\nma s Jx N0\r\nma s MX\r\nma s MII\r\nma s q q\r\n",
            b"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
              CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n\
              CLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid or duplicate flag\r\n\
              CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        case(
            "meta: errors as memcached",
            b"mg\r\nmg foo zz\r\nmg foo v v\r\nmg foo T\r\nmg foo Tx\r\nms foo\r\nms foo 1 MZ\r\nx\r\n\
              md foo zz\r\nme\r\nme foo\r\nmx\r\nms foo 2 S2\r\nhi\r\nms foo 1 E5\r\nx\r\nmg foo Fx\r\n\
              ms foo 1 Fx\r\nx\r\nms foo 1 MAA\r\nx\r\nmg foo \xff\r\n",
            b"ERROR\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\n\
              CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\n\
              CLIENT_ERROR bad command line format\r\nCLIENT_ERROR invalid mode for ms M token\r\n\
              CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR bad command line format\r\nEN\r\n\
              ERROR\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\n\
              CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n\
              CLIENT_ERROR incorrect length for M token\r\nCLIENT_ERROR duplicate flag\r\n",
        ),
        case(
            "meta: opaque at 32 bytes and 33, 17 flags and 18",
            b"mg foo O1234567890123456789012345678901\r\nmg foo O12345678901234567890123456789012\r\n\
              mg a b c d e f g h i j k l m n o p q r s t u v w x y\r\n\
              mg a s t v k c f h l O1 q u P L T0 N0 R0 I\r\nmg a s t v k c f h l O1 q u P L T0 N0 R0 I x\r\n\
              md a q k O1 C1 T1 I P L b d e f g h i j l\r\nmd a q k O1 C1 T1 I P L b d e f g h i j l x\r\n\
              ma a q k O1 C1 T1 I P L b d e f g h i j l x\r\n",
            b"EN O1234567890123456789012345678901\r\nCLIENT_ERROR opaque token too long\r\n\
              CLIENT_ERROR options flags are too long\r\nVA 0 s0 t-1 ka c{_} f0 h0 l0 O1 W\r\n\r\n\
              CLIENT_ERROR options flags are too long\r\nCLIENT_ERROR invalid or duplicate flag\r\n\
              CLIENT_ERROR options flags too long\r\nCLIENT_ERROR options flags too long\r\n",
        ),
        case(
            "meta: key of 250 bytes and 251",
            format!("ms {k250} 1\r\nx\r\nmg {k250} v\r\nmg {k251} v\r\nmd {k251}\r\nma {k251}\r\nme {k251}\r\n").as_bytes(),
            b"HD\r\nVA 1\r\nx\r\nCLIENT_ERROR bad command line format\r\n\
              CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n\
              CLIENT_ERROR bad command line format\r\n",
        ),
        case(
            "meta: base64 keys",
            b"ms Zm9v 2 b k\r\nhi\r\nmg Zm9v b k v\r\nmg foo v\r\nma bnVt b N0 J5 v k\r\nmd Zm9v b k q\r\nmd Zm9v b k\r\n\
              mg foo v\r\nmg Zm9v! b\r\nmg Zm9 b\r\nme Zm9v b\r\nme Zm9 b\r\n",
            b"HD kZm9v b\r\nVA 2 kZm9v b\r\nhi\r\nVA 2\r\nhi\r\nVA 1 kbnVt b\r\n5\r\nNF kZm9v b\r\nEN\r\nEN\r\n\
              CLIENT_ERROR error decoding key\r\nEN\r\nCLIENT_ERROR bad command line format\r\n",
        ),
        case(
            "meta: too large value is swallowed",
            &{
                let mut v = format!("ms big {big} T0\r\n").into_bytes();
                v.resize(v.len() + big, b'x');
                v.extend_from_slice(b"\r\nmg big v\r\n");
                v
            },
            b"SERVER_ERROR object too large for cache\r\nEN\r\n",
        ),
        steps(
            "meta: cas tokens from ms, mg, gets work with ms C, md C and cas",
            &[
                ("ms a 1 c\r\nx\r\n", "HD c{c0}\r\n"),
                ("mg a c v\r\ngets a\r\n", "VA 1 c{c0}\r\nx\r\nVALUE a 0 1 {c0}\r\nx\r\nEND\r\n"),
                ("ms a 1 C{c0} c\r\ny\r\n", "HD c{c1}\r\n"),
                ("ms a 1 C{c0} c\r\nz\r\nmd a C{c0}\r\n", "EX c0\r\nEX\r\n"),
                ("ma a C{c0}\r\n", "EX\r\n"),
                ("cas a 0 0 1 {c1}\r\n5\r\nmg a v c\r\n", "STORED\r\nVA 1 c{c2}\r\n5\r\n"),
                ("ma a C{c2} c v\r\n", "VA 1 c{c3}\r\n6\r\n"),
                ("md a C{c3} q\r\nmg a\r\n", "EN\r\n"),
            ],
        ),
        steps(
            "meta: stale-while-revalidate: invalidate, one W, then Z, recache clears it",
            &[
                ("ms foo 2 T100 c\r\nhi\r\n", "HD c{c0}\r\n"),
                ("md foo I T30\r\n", "HD\r\n"),
                ("mg foo v c\r\n", "VA 2 c{c1} X W\r\nhi\r\n"),
                ("mg foo v t\r\nmg foo s\r\n", "VA 2 t{_} Z X\r\nhi\r\nHD s2 Z X\r\n"),
                ("ms foo 2 C{c0}\r\nno\r\n", "EX\r\n"),
                ("ms foo 2 I C{c0}\r\nst\r\nmg foo v\r\n", "HD\r\nVA 2 Z X\r\nst\r\n"),
                ("mg foo c\r\n", "HD c{c2} Z X\r\n"),
                ("ms foo 2 C{c2} T100\r\nok\r\nmg foo v\r\n", "HD\r\nVA 2\r\nok\r\n"),
                ("md foo I q\r\nmd foo I\r\nmg foo\r\nmg foo\r\n", "HD\r\nHD X W\r\nHD Z X\r\n"),
            ],
        ),
        case(
            "meta: vivify on miss wins once, then Z",
            b"mg foo N30 v t\r\nmg foo N30 v t\r\nmg foo v\r\nms foo 2\r\nhi\r\nmg foo v N30\r\n",
            b"VA 0 t{_} W\r\n\r\nVA 0 t{_} Z\r\n\r\nVA 0 Z\r\n\r\nHD\r\nVA 2\r\nhi\r\n",
        ),
        case(
            "meta: recache win when the TTL is below R",
            b"ms foo 2 T100\r\nhi\r\nmg foo R200 v\r\nmg foo R200 v\r\nms bar 2 T100\r\nhi\r\nmg bar R50 v\r\n\
              ms inf 1\r\nx\r\nmg inf R50\r\n",
            b"HD\r\nVA 2 W\r\nhi\r\nVA 2 Z\r\nhi\r\nHD\r\nVA 2\r\nhi\r\nHD\r\nHD\r\n",
        ),
        case(
            "meta: T touches; mg t shows the TTL before and after T",
            b"ms a 1 T0\r\nx\r\nmg a t T100 s\r\nmg a t\r\nmg a T-1 v\r\nmg a v\r\n",
            b"HD\r\nHD t-1 s1\r\nHD t{_}\r\nVA 1\r\nx\r\nEN\r\n",
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
        // Administrative commands; the ones that change a setting put it back.
        case(
            "stats sizes, detail and unknown groups",
            b"stats sizes\r\nstats sizes extra\r\nstats sizes_disable\r\nstats detail on\r\n\
              stats detail off\r\nstats detail dump\r\nstats detail\r\nstats detail x\r\nstats bogus\r\n",
            b"STAT sizes_status disabled\r\nEND\r\nSTAT sizes_status disabled\r\nEND\r\n\
              STAT sizes_status disabled\r\nOK\r\nOK\r\nEND\r\n\
              CLIENT_ERROR usage: stats detail on|off|dump\r\n\
              CLIENT_ERROR usage: stats detail on|off|dump\r\nERROR\r\n",
        ),
        case(
            "stats reset",
            b"stats reset\r\nstats reset extra\r\n",
            b"RESET\r\nRESET\r\n",
        ),
        case(
            "stats items counts items per class",
            b"set a 0 0 1\r\nx\r\nstats items\r\n",
            b"STORED\r\nSTAT items:1:number 1\r\nSTAT items:1:evicted 0\r\nEND\r\n",
        )
        .shoal_only(),
        case(
            "stats conns lists the listening socket",
            b"stats conns\r\n",
            b"STAT {_}:addr tcp:127.0.0.1:{_}\r\nSTAT {_}:state conn_listening\r\nEND\r\n",
        )
        .shoal_only(),
        case(
            "cache_memlimit",
            b"cache_memlimit\r\ncache_memlimit x\r\ncache_memlimit -1\r\ncache_memlimit 7\r\n\
              cache_memlimit 7 noreply\r\ncache_memlimit 1000000001\r\ncache_memlimit 8 noreply x\r\n\
              cache_memlimit 8\r\ncache_memlimit 32 noreply\r\ncache_memlimit 64 extra\r\n",
            b"ERROR\r\nERROR\r\nERROR\r\nMEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n\
              MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\nERROR\r\nOK\r\nOK\r\n",
        ),
        case(
            "shutdown is off by default",
            b"shutdown\r\nshutdown graceful\r\nshutdown bogus\r\nget a\r\n",
            b"ERROR: shutdown not enabled\r\nERROR: shutdown not enabled\r\n\
              ERROR: shutdown not enabled\r\nEND\r\n",
        ),
        case(
            "slabs",
            b"slabs automove 1\r\nslabs automove 2 noreply\r\nslabs automove 3\r\nslabs automove\r\n\
              slabs reassign 1 1\r\nslabs reassign 1 99\r\nslabs reassign -1 2\r\nslabs reassign x 2\r\n\
              slabs reassign 1\r\nslabs bogus\r\nslabs automove 1\r\n",
            b"OK\r\nERROR\r\nERROR\r\nSAME src and dst class are identical\r\n\
              BADCLASS invalid src or dst class id\r\nBADCLASS invalid src or dst class id\r\n\
              CLIENT_ERROR bad command line format\r\nERROR\r\nERROR\r\nOK\r\n",
        ),
        case(
            "slabs reassign is refused",
            b"slabs reassign 1 2\r\n",
            b"NOSPARE source class has no spare pages\r\n",
        )
        .shoal_only(),
        case(
            "lru",
            b"lru mode flat\r\nlru mode segmented noreply\r\nlru mode bogus\r\nlru temp_ttl 5\r\n\
              lru tune 10 20 0.1 2\r\nlru tune 10\r\nlru bogus\r\nlru\r\n",
            b"OK\r\nERROR\r\nOK\r\nOK\r\nERROR\r\nERROR\r\nERROR\r\n",
        ),
        case(
            "lru_crawler",
            b"lru_crawler\r\nlru_crawler bogus\r\nlru_crawler sleep 2000000\r\nlru_crawler sleep x\r\n\
              lru_crawler sleep 100\r\nlru_crawler tocrawl x\r\nlru_crawler tocrawl 5\r\n\
              lru_crawler crawl\r\nlru_crawler enable extra\r\n",
            b"ERROR\r\nERROR\r\nCLIENT_ERROR sleep must be one second or less\r\n\
              CLIENT_ERROR bad command line format\r\nOK\r\nCLIENT_ERROR bad command line format\r\n\
              OK\r\nERROR\r\nERROR\r\n",
        ),
        // memcached answers these bytes once its crawler thread has stopped (not when
        // pipelined right after `disable`); shoald's is always disabled.
        case(
            "lru_crawler is disabled",
            b"lru_crawler disable\r\nlru_crawler crawl all\r\nlru_crawler metadump all\r\n\
              lru_crawler metadump 1\r\n",
            b"OK\r\nCLIENT_ERROR lru crawler disabled\r\nCLIENT_ERROR lru crawler disabled\r\n\
              CLIENT_ERROR lru crawler disabled\r\n",
        )
        .shoal_only(),
        case(
            "lru_crawler cannot be enabled",
            b"lru_crawler enable\r\n",
            b"ERROR failed to start lru crawler thread\r\n",
        )
        .shoal_only(),
        case("watch bad kind", b"watch bogus\r\n", b"ERROR\r\n"),
        // Not pipelined: memcached refuses `watch` after other commands in the same read.
        steps("watch", &[("watch\r\n", "OK\r\n")]),
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

/// A piece of an expected reply.
enum Piece<'a> {
    Literal(&'a [u8]),
    /// `{cN}`: a number bound to slot N.
    Bind(usize),
    /// `{_}`: any number.
    Any,
}

/// Splits an expected reply into literals and placeholders.
fn pieces(want: &[u8]) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = want;
    while let Some(open) = rest.windows(2).position(|w| w == b"{c" || w == b"{_") {
        let close = rest[open..]
            .iter()
            .position(|&b| b == b'}')
            .expect("closing brace")
            + open;
        out.push(Piece::Literal(&rest[..open]));
        let inner = &rest[open + 1..close];
        out.push(if inner == b"_" {
            Piece::Any
        } else {
            Piece::Bind(usize::from(inner[1] - b'0'))
        });
        rest = &rest[close + 1..];
    }
    out.push(Piece::Literal(rest));
    out
}

/// Whether `got` is `want` with its placeholders filled, binding new `{cN}`.
fn matches(got: &[u8], want: &[u8], bound: &mut [Option<Vec<u8>>; 10]) -> bool {
    let mut at = 0;
    let mut new = bound.clone();
    for piece in pieces(want) {
        match piece {
            Piece::Literal(lit) => {
                if !got[at..].starts_with(lit) {
                    return false;
                }
                at += lit.len();
            }
            Piece::Bind(_) | Piece::Any => {
                let n = got[at..].iter().take_while(|b| b.is_ascii_digit()).count();
                if n == 0 {
                    return false;
                }
                let number = got[at..at + n].to_vec();
                if let Piece::Bind(slot) = piece {
                    match &new[slot] {
                        Some(v) if *v != number => return false,
                        Some(_) => {}
                        None => new[slot] = Some(number),
                    }
                }
                at += n;
            }
        }
    }
    *bound = new;
    at == got.len()
}

/// `send` with bound `{cN}` replaced by their numbers.
fn substitute(send: &[u8], bound: &[Option<Vec<u8>>; 10]) -> Vec<u8> {
    let mut out = send.to_vec();
    for (slot, value) in bound.iter().enumerate() {
        if let Some(value) = value {
            let pat = format!("{{c{slot}}}").into_bytes();
            while let Some(p) = out.windows(pat.len()).position(|w| w == pat.as_slice()) {
                out.splice(p..p + pat.len(), value.iter().copied());
            }
        }
    }
    out
}

/// Sends `bytes` on `conn` and reads until the reply matches `want`, or nothing more
/// arrives for 100 ms after at least `want`'s literal length, or the server closes.
fn step(conn: &mut TcpStream, bytes: &[u8], want: &[u8]) -> (Vec<u8>, bool) {
    let mut writer = conn.try_clone().expect("clone");
    let bytes = bytes.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let min_len: usize = pieces(want)
        .iter()
        .map(|p| match p {
            Piece::Literal(l) => l.len(),
            _ => 1,
        })
        .sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let closed = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.len() >= min_len || Instant::now() > deadline {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    let _ = sender.join();
    (got, closed)
}

fn run_table(addr: SocketAddr, only_memcached: bool) {
    for c in cases() {
        if only_memcached && !c.memcached_same {
            continue;
        }
        flush(addr);
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set timeout");
        let mut bound: [Option<Vec<u8>>; 10] = Default::default();
        let mut closed = false;
        for (i, (send, want)) in c.steps.iter().enumerate() {
            let send = substitute(send, &bound);
            let got;
            (got, closed) = step(&mut conn, &send, want);
            assert!(
                matches(&got, want, &mut bound),
                "case {:?} step {i}:\n got: {:?}\nwant: {:?}",
                c.name,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
            );
        }
        assert_eq!(closed, c.closes, "case {:?}: closed", c.name);
    }
}

/// A real memcached on an ephemeral loopback port, stopped when dropped.
struct Memcached {
    child: std::process::Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Memcached {
    /// Starts `memcached`; `None` when it is not installed.
    fn start() -> Option<Memcached> {
        let dir = std::env::temp_dir().join(format!("shoal-mc-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ports = dir.join("ports");
        let _ = std::fs::remove_file(&ports);
        // `-p -1` binds an ephemeral port and writes it to MEMCACHED_PORT_FILENAME.
        let child = std::process::Command::new("memcached")
            .args([
                "-p",
                "-1",
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-m",
                "64",
                "-u",
                "root",
            ])
            .env("MEMCACHED_PORT_FILENAME", &ports)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut port = None;
        let found = wait_for(Duration::from_secs(10), || {
            port = std::fs::read_to_string(&ports).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TCP INET: "))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
            port.is_some()
        });
        let mc = Memcached {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            dir,
        };
        assert!(found, "memcached wrote its port");
        Some(mc)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
    let (_server, addr) = server();
    run_table(addr, false);
}

#[test]
fn raw_byte_table_matches_memcached() {
    if let Ok(target) = std::env::var("MEMCACHE_TEXT_TARGET") {
        let addr = target.parse().expect("MEMCACHE_TEXT_TARGET is host:port");
        println!("running the memcached-compatible cases against {addr}");
        run_table(addr, true);
        return;
    }
    let Some(memcached) = Memcached::start() else {
        println!("SKIPPED: memcached is not installed (scripts/install-deps.sh installs it)");
        return;
    };
    run_table(memcached.addr, true);
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

#[test]
fn get_with_ten_thousand_keys_answers_all() {
    let (_server, addr) = server();
    let mut sets = Vec::new();
    for i in 0..10_000 {
        sets.extend_from_slice(format!("set key{i} 0 0 1 noreply\r\nx\r\n").as_bytes());
    }
    let mut get = b"get".to_vec();
    let mut want = Vec::new();
    for i in 0..10_000 {
        get.extend_from_slice(format!(" key{i}").as_bytes());
        want.extend_from_slice(format!("VALUE key{i} 0 1\r\nx\r\n").as_bytes());
    }
    get.extend_from_slice(b" absent\r\n");
    want.extend_from_slice(b"END\r\n");
    sets.extend_from_slice(&get);
    let (got, closed) = exchange(addr, &sets, want.len());
    assert!(!closed);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "all 10,000 keys answered in order");
}

/// `stats` lines as (name, value).
fn stats_of(addr: SocketAddr, command: &str) -> Vec<(String, String)> {
    let (reply, _) = exchange(
        addr,
        format!("{command}\r\nquit\r\n").as_bytes(),
        usize::MAX,
    );
    String::from_utf8(reply)
        .expect("ascii")
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fn stat_value(stats: &[(String, String)], name: &str) -> String {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
}

#[test]
fn stats_settings_report_the_node_configuration_and_follow_cache_memlimit() {
    let config = Config {
        max_connections: 77,
        idle_timeout: Duration::from_secs(9),
        ..Config::default()
    };
    let server = TestServer::start(config);
    let addr = server.memcache_addr.expect("memcached port");
    let settings = stats_of(addr, "stats settings");
    for (name, want) in [
        ("maxbytes", (64u64 << 20).to_string()),
        ("maxconns", "77".into()),
        ("tcpport", addr.port().to_string()),
        ("inter", "127.0.0.1".into()),
        ("item_size_max", (1u64 << 20).to_string()),
        ("idle_timeout", "9".into()),
        ("shutdown_command", "no".into()),
        ("cas_enabled", "yes".into()),
        ("growth_factor", "1.25".into()),
    ] {
        assert_eq!(stat_value(&settings, name), want, "{name}");
    }
    // 4 partitions of 1 MiB pages: 16 MiB is 4 pages each, more than a 1 MiB value needs.
    let (reply, _) = exchange(addr, b"cache_memlimit 16\r\n", 4);
    assert_eq!(reply, b"OK\r\n");
    let limit = (16u64 << 20).to_string();
    assert_eq!(
        stat_value(&stats_of(addr, "stats settings"), "maxbytes"),
        limit
    );
    assert_eq!(
        stat_value(&stats_of(addr, "stats"), "limit_maxbytes"),
        limit
    );
    // Above the memory allocated at start, the limit is that memory.
    let (reply, _) = exchange(addr, b"cache_memlimit 100000\r\n", 4);
    assert_eq!(reply, b"OK\r\n");
    let all = (64u64 << 20).to_string();
    assert_eq!(stat_value(&stats_of(addr, "stats"), "limit_maxbytes"), all);
}

#[test]
fn stats_reset_zeroes_counters_but_not_gauges() {
    let (_server, addr) = server();
    let (reply, _) = exchange(addr, b"set a 0 0 1\r\nx\r\nget a\r\nget b\r\n", 36);
    assert_eq!(reply, b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nEND\r\n");
    let before = stats_of(addr, "stats");
    assert_eq!(stat_value(&before, "get_hits"), "1");
    assert_eq!(stat_value(&before, "cmd_get"), "2");
    let (reply, _) = exchange(addr, b"stats reset\r\n", 7);
    assert_eq!(reply, b"RESET\r\n");
    let after = stats_of(addr, "stats");
    for name in [
        "get_hits",
        "get_misses",
        "cmd_get",
        "cmd_set",
        "total_items",
    ] {
        assert_eq!(stat_value(&after, name), "0", "{name}");
    }
    assert_eq!(stat_value(&after, "curr_items"), "1");
    assert_eq!(
        stat_value(&after, "limit_maxbytes"),
        (64u64 << 20).to_string()
    );
    // Counting goes on from the reset.
    let (reply, _) = exchange(addr, b"get a\r\n", 20);
    assert_eq!(reply, b"VALUE a 0 1\r\nx\r\nEND\r\n");
    assert_eq!(stat_value(&stats_of(addr, "stats"), "get_hits"), "1");
}

#[test]
fn shutdown_command_stops_the_node_when_enabled() {
    let config = Config {
        enable_shutdown: true,
        ..Config::default()
    };
    let mut server = TestServer::start(config);
    let addr = server.memcache_addr.expect("memcached port");
    assert_eq!(
        stat_value(&stats_of(addr, "stats settings"), "shutdown_command"),
        "yes"
    );
    let (reply, _) = exchange(addr, b"shutdown bogus\r\n", 36);
    assert_eq!(reply, b"CLIENT_ERROR invalid shutdown mode\r\n");
    // No reply, the connection closes, and the node stops on its own.
    let (reply, closed) = exchange(addr, b"shutdown graceful\r\nget a\r\n", usize::MAX);
    assert_eq!(reply, b"");
    assert!(closed);
    assert!(
        wait_for(Duration::from_secs(10), || TcpStream::connect(addr)
            .is_err()),
        "the node stopped listening"
    );
    server.stop().expect("stopped gracefully");
}
