//! Session tests: [`TextSession`] driven with byte strings against a real [`Store`] on a
//! [`ManualClock`], comparing exact reply bytes. No sockets.

use super::*;
use crate::keyspace::Keyspace;
use crate::net::InputBudget;
use crate::persist::Persistence;
use crate::stats::ServerStats;
use crate::store::{Clock, ManualClock, Store, StoreConfig};
use shoal_proto::hash::value_hash;
use shoal_proto::Limits;
use std::sync::Arc;

const MAX_VALUE: usize = 200 << 10;

/// A session plus what a connection driver would keep: the unconsumed input.
struct Driver {
    session: TextSession,
    shared: Shared,
    clock: Arc<ManualClock>,
    input: Vec<u8>,
    closed: bool,
}

impl Driver {
    fn new() -> Driver {
        Driver::with_flush_at(64 << 10)
    }

    fn with_flush_at(flush_at: usize) -> Driver {
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let config = StoreConfig {
            memory: 4 << 20,
            page_size: 64 << 10,
            buckets: 16,
            max_value: MAX_VALUE,
            ..StoreConfig::default()
        };
        let store = Store::with_clock(config, clock.clone()).expect("valid store config");
        let shared = Shared {
            keyspace: Keyspace::new(
                store,
                Persistence::disabled(),
                Arc::new(ServerStats::default()),
                crate::cluster::ClusterView::everything(16),
            ),
            limits: Limits::for_value_size(MAX_VALUE),
            flush_at,
            input_budget: InputBudget::new(64 << 20),
            forward_timeout: std::time::Duration::from_secs(1),
            admin: Default::default(),
        };
        Driver {
            session: TextSession::new(shared.clone()),
            shared,
            clock,
            input: Vec::new(),
            closed: false,
        }
    }

    /// Appends `bytes` to the input and runs the session until it needs more input or
    /// closes, flushing the output in between as the driver does. Returns all output.
    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        assert!(!self.closed, "send after close");
        self.input.extend_from_slice(bytes);
        let mut all = Vec::new();
        loop {
            let mut out = output(self.shared.flush_at);
            let step = self.session.on_input(&self.input, &mut out);
            assert!(step.consumed <= self.input.len());
            self.input.drain(..step.consumed);
            let progressed = step.consumed > 0 || step.more;
            all.extend_from_slice(out.ready());
            if step.close {
                self.closed = true;
                return all;
            }
            if !progressed {
                return all;
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.shared
            .stats()
            .into_iter()
            .find(|(def, _)| def.name == name)
            .map(|(_, v)| v)
            .expect("counter exists")
    }
}

/// An empty ordered output, as the driver gives the text session.
fn output(flush_at: usize) -> Output {
    Output::new(true, flush_at, 0)
}

/// Sends `input` to a fresh session and returns the reply as a string.
fn reply(input: &[u8]) -> String {
    let mut d = Driver::new();
    String::from_utf8_lossy(&d.send(input)).into_owned()
}

fn s(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn set_then_get_returns_value_and_flags() {
    assert_eq!(
        reply(b"set k 42 0 5\r\nhello\r\nget k\r\nget nope\r\n"),
        "STORED\r\nVALUE k 42 5\r\nhello\r\nEND\r\nEND\r\n"
    );
}

#[test]
fn gets_returns_value_hash_as_cas_unique_and_cas_uses_it() {
    let mut d = Driver::new();
    d.send(b"set k 1 0 3\r\nabc\r\n");
    let unique = value_hash(b"abc");
    assert_eq!(
        s(d.send(b"gets k\r\n")),
        format!("VALUE k 1 3 {unique}\r\nabc\r\nEND\r\n")
    );
    assert_eq!(
        s(d.send(format!("cas k 2 0 3 {}\r\nxyz\r\n", unique + 1).as_bytes())),
        "EXISTS\r\n"
    );
    assert_eq!(
        s(d.send(format!("cas k 2 0 3 {unique}\r\nxyz\r\n").as_bytes())),
        "STORED\r\n"
    );
    assert_eq!(s(d.send(b"cas nope 0 0 1 1\r\nx\r\n")), "NOT_FOUND\r\n");
    assert_eq!(s(d.send(b"get k\r\n")), "VALUE k 2 3\r\nxyz\r\nEND\r\n");
    // Writing the same bytes again keeps the same unique.
    d.send(b"set k 0 0 3\r\nabc\r\n");
    assert!(s(d.send(b"gets k\r\n")).contains(&format!(" {unique}\r\n")));
}

#[test]
fn multi_get_returns_hits_in_order_with_duplicates() {
    assert_eq!(
        reply(b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nget a x b a\r\n"),
        "STORED\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    );
}

#[test]
fn add_replace_append_prepend_follow_memcached() {
    assert_eq!(
        reply(
            b"set a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nadd b 0 0 1\r\ny\r\nreplace c 0 0 1\r\nz\r\n\
              replace a 5 0 1\r\nz\r\nappend a 9 0 2\r\nAB\r\nprepend a 9 0 2\r\nCD\r\n\
              append q 0 0 1\r\nx\r\nprepend q 0 0 1\r\nx\r\nget a b\r\n"
        ),
        "STORED\r\nNOT_STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n\
         NOT_STORED\r\nNOT_STORED\r\nVALUE a 5 5\r\nCDzAB\r\nVALUE b 0 1\r\ny\r\nEND\r\n"
    );
}

#[test]
fn delete_incr_decr_touch_follow_memcached() {
    assert_eq!(
        reply(
            b"set n 5 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n abc\r\nincr n -1\r\n\
              set t 0 0 1\r\nx\r\nincr t 1\r\nincr missing 1\r\n\
              delete n 0\r\ndelete n\r\ndelete t 1\r\ndelete\r\n\
              touch t 10\r\ntouch nope 10\r\ntouch t abc\r\n"
        ),
        "STORED\r\n15\r\n0\r\nCLIENT_ERROR invalid numeric delta argument\r\n\
         CLIENT_ERROR invalid numeric delta argument\r\nSTORED\r\n\
         CLIENT_ERROR cannot increment or decrement non-numeric value\r\nNOT_FOUND\r\n\
         DELETED\r\nNOT_FOUND\r\n\
         CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\nERROR\r\n\
         TOUCHED\r\nNOT_FOUND\r\nCLIENT_ERROR invalid exptime argument\r\n"
    );
    // incr wraps at 2^64.
    assert_eq!(
        reply(b"set n 0 0 20\r\n18446744073709551615\r\nincr n 2\r\n"),
        "STORED\r\n1\r\n"
    );
}

#[test]
fn noreply_suppresses_replies_including_errors() {
    assert_eq!(
        reply(
            b"set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\nx\r\nreplace zz 0 0 1 noreply\r\nx\r\n\
              append a 0 0 1 noreply\r\ny\r\nprepend a 0 0 1 noreply\r\nw\r\nincr a 1 noreply\r\n\
              decr a x noreply\r\ntouch zz 1 noreply\r\nverbosity 1 noreply\r\nget a\r\n\
              delete a noreply\r\ndelete a 0 noreply\r\nflush_all noreply\r\nget a\r\n"
        ),
        "VALUE a 0 3\r\nwxy\r\nEND\r\nEND\r\n"
    );
}

#[test]
fn gat_and_gats_return_values_and_set_the_ttl() {
    let mut d = Driver::new();
    d.send(b"set a 3 0 1\r\nx\r\n");
    let unique = value_hash(b"x");
    assert_eq!(
        s(d.send(b"gat 100 a b a\r\ngats 100 a\r\ngat abc a\r\ngat 100\r\n")),
        format!(
            "VALUE a 3 1\r\nx\r\nVALUE a 3 1\r\nx\r\nEND\r\nVALUE a 3 1 {unique}\r\nx\r\nEND\r\n\
             CLIENT_ERROR invalid exptime argument\r\nEND\r\n"
        )
    );
    d.clock.advance(99);
    assert_eq!(s(d.send(b"get a\r\n")), "VALUE a 3 1\r\nx\r\nEND\r\n");
    d.clock.advance(1);
    assert_eq!(s(d.send(b"get a\r\n")), "END\r\n");
    // A negative gat returns the value once, then it is gone.
    d.send(b"set a 0 0 1\r\nx\r\n");
    assert_eq!(
        s(d.send(b"gat -1 a\r\nget a\r\n")),
        "VALUE a 0 1\r\nx\r\nEND\r\nEND\r\n"
    );
}

#[test]
fn exptime_rules_relative_negative_and_absolute() {
    let mut d = Driver::new();
    assert_eq!(
        s(d.send(
            b"set neg 0 -1 1\r\nx\r\nget neg\r\nset rel 0 10 1\r\nx\r\nset never 0 0 1\r\nx\r\n"
        )),
        "STORED\r\nEND\r\nSTORED\r\nSTORED\r\n"
    );
    // Over 30 days is absolute unix time: 1000000000 (2001) is in the past.
    assert_eq!(
        s(d.send(b"set past 0 1000000000 1\r\nx\r\nget past\r\nset past 0 2592001 1\r\nx\r\nget past\r\n")),
        "STORED\r\nEND\r\nSTORED\r\nEND\r\n"
    );
    // Absolute times are read with the node's clock, never the system's.
    let now = d.clock.wall();
    let abs = format!("set abs 0 {} 1\r\nx\r\n", now + 100);
    assert_eq!(s(d.send(abs.as_bytes())), "STORED\r\n");
    d.clock.advance(9);
    assert_eq!(
        s(d.send(b"get rel abs never\r\n")).matches("VALUE").count(),
        3
    );
    d.clock.advance(1);
    assert_eq!(
        s(d.send(b"get rel abs never\r\n")),
        "VALUE abs 0 1\r\nx\r\nVALUE never 0 1\r\nx\r\nEND\r\n"
    );
    d.clock.advance(95);
    assert_eq!(
        s(d.send(b"get abs never\r\n")),
        "VALUE never 0 1\r\nx\r\nEND\r\n"
    );
    // touch with a negative exptime expires the item; add/replace/cas with one store and expire.
    assert_eq!(
        s(d.send(b"touch never -1\r\nget never\r\nadd a 0 -1 1\r\nx\r\nget a\r\n")),
        "TOUCHED\r\nEND\r\nSTORED\r\nEND\r\n"
    );
}

#[test]
fn flush_all_empties_the_store_now_or_schedules_a_delayed_flush() {
    // No timer runs here, so the delayed flush stays pending for the whole test.
    assert_eq!(
        reply(
            b"set a 0 0 1\r\nx\r\nflush_all 10\r\nget a\r\nflush_all\r\nget a\r\n\
              set a 0 0 1\r\nx\r\nflush_all 0\r\nflush_all -1\r\nflush_all abc\r\nget a\r\n"
        ),
        "STORED\r\nOK\r\nVALUE a 0 1\r\nx\r\nEND\r\n\
         OK\r\nEND\r\nSTORED\r\nOK\r\nOK\r\nCLIENT_ERROR invalid exptime argument\r\nEND\r\n"
    );
}

#[test]
fn version_verbosity_quit() {
    let mut d = Driver::new();
    assert_eq!(
        s(d.send(b"version\r\nverbosity 1\r\nverbosity\r\nverbosity x\r\n")),
        format!(
            "VERSION {}\r\nOK\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n",
            crate::net::memcache::VERSION
        )
    );
    assert_eq!(s(d.send(b"quit\r\nget a\r\n")), "");
    assert!(d.closed);
    assert_eq!(d.counter("goodbyes"), 1);
}

#[test]
fn stats_reports_memcached_fields() {
    let mut d = Driver::new();
    let out = s(d.send(b"set a 0 0 1\r\nx\r\nget a b\r\nstats\r\n"));
    let stats = out
        .split("VALUE a 0 1\r\nx\r\nEND\r\n")
        .nth(1)
        .expect("stats after get");
    assert!(stats.ends_with("END\r\n"));
    let value = |name: &str| -> String {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
            .to_owned()
    };
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_connections",
        "total_connections",
        "limit_maxbytes",
        "threads",
        "evictions",
    ] {
        value(name);
    }
    assert_eq!(value("curr_items"), "1");
    assert_eq!(value("total_items"), "1");
    assert_eq!(value("cmd_get"), "2");
    assert_eq!(value("cmd_set"), "1");
    assert_eq!(value("get_hits"), "1");
    assert_eq!(value("get_misses"), "1");
    assert_eq!(value("limit_maxbytes"), (4 << 20).to_string());
    assert!(value("bytes").parse::<u64>().expect("number") > 0);
    assert!(stats.lines().all(|l| l == "END" || l.starts_with("STAT ")));

    let slabs = s(d.send(b"stats slabs\r\n"));
    assert!(slabs.contains(":chunk_size "), "{slabs}");
    assert!(slabs.contains("STAT active_slabs 1\r\n"), "{slabs}");
    let items = s(d.send(b"stats items\r\n"));
    assert!(items.contains(":number 1\r\n"), "{items}");
    assert!(items.ends_with("END\r\n"), "{items}");
    assert_eq!(s(d.send(b"stats reset\r\n")), "RESET\r\n");
    let after = s(d.send(b"stats\r\n"));
    assert!(after.contains("STAT get_hits 0\r\n"), "{after}");
    assert!(after.contains("STAT curr_items 1\r\n"), "{after}");
    assert_eq!(
        s(d.send(b"cache_memlimit 7\r\ncache_memlimit 8 noreply\r\nshutdown\r\n")),
        "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\nERROR: shutdown not enabled\r\n"
    );
}

#[test]
fn pipelined_batch_is_answered_in_order_and_counted_once() {
    let mut d = Driver::new();
    let mut batch = Vec::new();
    let mut want = String::new();
    for i in 0..200 {
        batch.extend_from_slice(format!("set k{i} {i} 0 2\r\nv{}\r\n", i % 10).as_bytes());
        want.push_str("STORED\r\n");
    }
    for i in 0..200 {
        batch.extend_from_slice(format!("get k{i}\r\n").as_bytes());
        want.push_str(&format!("VALUE k{i} {i} 2\r\nv{}\r\nEND\r\n", i % 10));
    }
    let mut out = output(d.shared.flush_at);
    let step = d.session.on_input(&batch, &mut out);
    assert_eq!(
        step,
        Step {
            consumed: batch.len(),
            close: false,
            more: false,
            parked: false,
        }
    );
    assert_eq!(s(std::mem::take(out.ready())), want);
    assert_eq!(d.counter("text_commands"), 400);
}

#[test]
fn byte_at_a_time_gives_the_same_replies() {
    let input: &[u8] = b"set a 1 0 3\r\nabc\r\nget a\r\nappend a 0 0 1\r\nd\r\ngets a b\r\n\
        incr x 1\r\nbogus\r\nset big 0 0 300000\r\n";
    let mut whole = Driver::new();
    let want = s(whole.send(input));
    let mut d = Driver::new();
    let mut got = Vec::new();
    for b in input {
        got.extend_from_slice(&d.send(std::slice::from_ref(b)));
    }
    assert_eq!(s(got), want);
    assert!(
        want.ends_with("SERVER_ERROR object too large for cache\r\n"),
        "{want}"
    );
}

#[test]
fn flush_at_returns_early_and_resumes_a_multi_get() {
    let mut d = Driver::with_flush_at(1000);
    let value = vec![b'v'; 400];
    for k in ["a", "b", "c", "d"] {
        let mut cmd = format!("set {k} 0 0 400\r\n").into_bytes();
        cmd.extend_from_slice(&value);
        cmd.extend_from_slice(b"\r\n");
        d.send(&cmd);
    }
    // Three commands whose replies exceed flush_at: the first call stops early.
    let input = b"get a b c d\r\nget a\r\nget b\r\n";
    let mut first = output(1000);
    let step = d.session.on_input(input, &mut first);
    assert_eq!(step.consumed, 0, "the multi-get is not done yet");
    assert!(
        step.more,
        "the driver must call again without waiting for input"
    );
    let mut out = std::mem::take(first.ready());
    assert!(out.len() >= 1000 && out.len() < 1500, "{}", out.len());
    // The driver flushes and calls again with the same input: it resumes after b... c.
    let mut rest = Vec::new();
    let mut consumed = 0;
    let mut calls = 1;
    while consumed < input.len() {
        let mut more = output(1000);
        let step = d.session.on_input(&input[consumed..], &mut more);
        consumed += step.consumed;
        rest.extend_from_slice(more.ready());
        calls += 1;
        assert!(calls < 20);
    }
    out.extend_from_slice(&rest);
    let v = String::from_utf8_lossy(&value).into_owned();
    let item = |k: &str| format!("VALUE {k} 0 400\r\n{v}\r\n");
    assert_eq!(
        s(out),
        format!(
            "{}{}{}{}END\r\n{}END\r\n{}END\r\n",
            item("a"),
            item("b"),
            item("c"),
            item("d"),
            item("a"),
            item("b")
        )
    );
    assert_eq!(d.counter("text_cmd_get"), 6);
}

#[test]
fn too_large_value_is_swallowed_across_reads_and_set_unlinks_the_old_value() {
    let mut d = Driver::new();
    d.send(b"set k 0 0 3\r\nold\r\n");
    let len = MAX_VALUE + 1;
    assert_eq!(
        s(d.send(format!("set k 0 0 {len}\r\n").as_bytes())),
        "SERVER_ERROR object too large for cache\r\n"
    );
    // The data block arrives in pieces and is discarded without being buffered.
    let chunk = vec![b'x'; 4096];
    let mut sent = 0;
    while sent + chunk.len() < len {
        assert_eq!(d.send(&chunk), b"");
        assert!(d.input.is_empty());
        sent += chunk.len();
    }
    let mut last = vec![b'x'; len - sent];
    last.extend_from_slice(b"\r\nget k\r\n");
    assert_eq!(s(d.send(&last)), "END\r\n");
    // add/replace keep the old value; noreply is silent.
    d.send(b"set k 0 0 3\r\nold\r\n");
    let mut cmd = format!("add k 0 0 {len} noreply\r\n").into_bytes();
    cmd.resize(cmd.len() + len, b'y');
    cmd.extend_from_slice(b"\r\nget k\r\n");
    assert_eq!(s(d.send(&cmd)), "VALUE k 0 3\r\nold\r\nEND\r\n");
    assert_eq!(d.counter("value_too_large"), 2);
    assert_eq!(d.counter("bad_input"), 2);
}

#[test]
fn rejected_storage_line_skips_its_data_block() {
    let mut d = Driver::new();
    let key = "k".repeat(251);
    let out = s(d.send(
        format!("set {key} 0 0 10\r\ndelete a\r\n\r\nset a -1 0 1\r\nx\r\nget a\r\n").as_bytes(),
    ));
    assert_eq!(
        out,
        "CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nEND\r\n"
    );
    assert_eq!(d.counter("bad_key"), 1);
    assert_eq!(d.counter("bad_line"), 1);
}

#[test]
fn fatal_errors_reply_and_close() {
    let cases: [(&[u8], &str, &str); 6] = [
        (
            b"set a 0 0 1\r\nab\r\nget a\r\n",
            "CLIENT_ERROR bad data chunk\r\n",
            "bad_data_chunk",
        ),
        (
            b"set a 0 0 1 noreply\r\nab\r\n",
            "CLIENT_ERROR bad data chunk\r\n",
            "bad_data_chunk",
        ),
        (
            b"set a 0 0 -1\r\nget a\r\n",
            "CLIENT_ERROR bad command line format\r\n",
            "bad_line",
        ),
        (
            b"set a 0 0 99999999999\r\n",
            "CLIENT_ERROR bad command line format\r\n",
            "frame_too_large",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "", "unknown_command"),
        (
            &[b'x'; 9000],
            "CLIENT_ERROR line too long\r\n",
            "line_too_long",
        ),
    ];
    for (input, want, counter) in cases {
        let mut d = Driver::new();
        assert_eq!(
            s(d.send(input)),
            want,
            "{:?}",
            String::from_utf8_lossy(&input[..20])
        );
        assert!(d.closed);
        assert_eq!(d.counter(counter), 1, "{counter}");
        assert_eq!(d.counter("bad_input"), 1);
    }
}

#[test]
fn unknown_commands_answer_error_and_go_on() {
    assert_eq!(
        reply(b"\r\n\n  \r\nfoo\r\nGET a\r\nget a\r\n"),
        "ERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nEND\r\n"
    );
}

#[test]
fn counters_reach_server_stats_once_per_batch() {
    let mut d = Driver::new();
    d.send(b"set a 0 0 1\r\nx\r\nget a b\r\ntouch a 1\r\nflush_all\r\nbogus\r\n");
    assert_eq!(d.counter("text_commands"), 5);
    assert_eq!(d.counter("text_cmd_get"), 2);
    assert_eq!(d.counter("text_cmd_set"), 1);
    assert_eq!(d.counter("text_cmd_touch"), 1);
    assert_eq!(d.counter("text_cmd_flush"), 1);
    assert_eq!(d.counter("unknown_command"), 1);
    assert_eq!(d.counter("bad_input"), 1);
}

#[test]
fn binary_values_round_trip() {
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\nEND\r\n").collect();
    let mut cmd = format!("set bin 7 0 {}\r\n", value.len()).into_bytes();
    cmd.extend_from_slice(&value);
    cmd.extend_from_slice(b"\r\nget bin\r\n");
    let mut want = format!("STORED\r\nVALUE bin 7 {}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(Driver::new().send(&cmd), want);
}

#[test]
fn random_input_never_panics() {
    let mut d = Driver::new();
    let mut x = 0x1234_5678_9abc_def1u64;
    let words: [&[u8]; 10] = [
        b"get a ",
        b"set a 0 0 3\r\n",
        b"abc\r\n",
        b"gat -1 a\r\n",
        b"incr a 1\r\n",
        b"cas a 0 0 1 5\r\n",
        b"\r\n",
        b"delete a 0\r\n",
        b"touch a -1\r\n",
        b"\0",
    ];
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if d.closed {
            d = Driver::new();
        }
        let w = words[(x % words.len() as u64) as usize];
        d.send(w);
    }
}

#[test]
fn meta_set_data_block_never_runs_as_a_command() {
    // The data block of `ms` is exactly `flush_all`: it must be discarded, not executed.
    let mut d = Driver::new();
    assert_eq!(s(d.send(b"set keep 0 0 1\r\nx\r\n")), "STORED\r\n");
    assert_eq!(
        s(d.send(b"ms mkey 9 T0\r\nflush_all\r\nget keep\r\n")),
        "HD\r\nVALUE keep 0 1\r\nx\r\nEND\r\n"
    );
    // A rejected meta set (bad flag) discards its block too, also a byte at a time.
    let mut got = Vec::new();
    for b in b"ms mkey 9 T0 Z\r\nflush_all\r\nget keep\r\n" {
        got.extend_from_slice(&d.send(std::slice::from_ref(b)));
    }
    assert_eq!(
        s(got),
        "CLIENT_ERROR invalid flag\r\nVALUE keep 0 1\r\nx\r\nEND\r\n"
    );
    assert_eq!(
        s(d.send(b"mn\r\nmg mkey v\r\nget keep\r\n")),
        "MN\r\nVA 9\r\nflush_all\r\nVALUE keep 0 1\r\nx\r\nEND\r\n"
    );
    // An unreadable meta-set length cannot be skipped safely: the connection closes.
    assert_eq!(
        s(d.send(b"ms mkey abc\r\nflush_all\r\n")),
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert!(d.closed);
    assert_eq!(d.counter("curr_items"), 2);
}

#[test]
fn storage_line_with_wrong_arity_discards_its_data_block() {
    let mut d = Driver::new();
    assert_eq!(s(d.send(b"set keep 0 0 1\r\nx\r\n")), "STORED\r\n");
    assert_eq!(
        s(d.send(b"set k 0 0 9 noreply extra\r\nflush_all\r\nget keep\r\n")),
        "ERROR\r\nVALUE keep 0 1\r\nx\r\nEND\r\n"
    );
}

#[test]
fn expired_exptimes_leave_nothing_and_answer_as_memcached() {
    let mut d = Driver::new();
    assert_eq!(
        s(d.send(
            b"set a 0 0 1\r\nx\r\nset a 0 -1 1\r\ny\r\nget a\r\n\
              add b 0 -1 1\r\ny\r\nget b\r\nreplace c 0 -1 1\r\ny\r\n\
              set d 0 0 1\r\nx\r\nreplace d 0 -1 1\r\ny\r\nget d\r\n"
        )),
        "STORED\r\nSTORED\r\nEND\r\nSTORED\r\nEND\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nEND\r\n"
    );
    // An absolute exptime in the past (by the node's clock, 1_700_000_000 here).
    assert_eq!(
        s(d.send(b"set e 0 1699999999 1\r\nx\r\nget e\r\nset f 0 1700000100 1\r\nx\r\nget f\r\n")),
        "STORED\r\nEND\r\nSTORED\r\nVALUE f 0 1\r\nx\r\nEND\r\n"
    );
    d.clock.advance(100);
    assert_eq!(s(d.send(b"get f\r\n")), "END\r\n");
    // gat and touch with a past exptime return / touch, and leave nothing.
    assert_eq!(
        s(d.send(
            b"set g 0 0 1\r\nx\r\ngat -1 g\r\nget g\r\nset h 0 0 1\r\nx\r\ntouch h -1\r\nget h\r\n"
        )),
        "STORED\r\nVALUE g 0 1\r\nx\r\nEND\r\nEND\r\nSTORED\r\nTOUCHED\r\nEND\r\n"
    );
}
