//! The memcached port of any node serves the whole keyspace: commands for buckets another
//! node serves are forwarded to it over the peer port and its reply relayed byte for byte.
//! Real `shoald` processes on loopback, spoken to over raw text-protocol sockets.

mod cluster_common;

use cluster_common::{
    index_in, keys_owned_by, mc, owner, stat, Cluster, Member, Text, BUCKETS, SETTLE,
};
use std::net::SocketAddr;
use std::time::Instant;

fn key(i: usize) -> String {
    format!("fwd:{i}")
}

/// A value of varying length holding every byte value, CRLFs included.
fn value(i: usize) -> Vec<u8> {
    (0..(i * 37) % 3000 + 1)
        .map(|j| ((i * 7 + j * 13) % 256) as u8)
        .collect()
}

/// Starts 3 nodes, then a 4th that joins after the buckets were spread, with movement
/// paused, and so owns none.
fn four_nodes(extra: &[&str]) -> (Cluster, usize) {
    let mut c = Cluster::start(3, extra);
    cluster_common::client(c.members[0].native())
        .expect("client")
        .cluster_admin(shoal_proto::cluster::AdminRequest::Pause(true))
        .expect("pause movement");
    let seed = c.members[0].peer();
    let mut args = vec!["--join", seed.as_str()];
    args.extend_from_slice(extra);
    c.members.push(Member::start("late", &args));
    let late = 3;
    assert!(c.wait_settled(4, SETTLE), "{:?}", c.statuses());
    let table = c.members[0].table().expect("table");
    let li = index_in(&table, &c.members[late]);
    assert_eq!(table.owned_counts()[li], 0, "the late node owns nothing");
    (c, late)
}

#[test]
fn every_node_serves_the_whole_keyspace_byte_exact_even_one_owning_nothing() {
    let (c, late) = four_nodes(&[]);
    let table = c.members[0].table().expect("table");
    const N: usize = 3000;
    // Written through the node that owns nothing, with a reply per set.
    let mut w = Text::connect(mc(&c.members[late]));
    let mut batch = Vec::new();
    for i in 0..N {
        let v = value(i);
        batch.extend_from_slice(format!("set {} {} 0 {}\r\n", key(i), i, v.len()).as_bytes());
        batch.extend_from_slice(&v);
        batch.extend_from_slice(b"\r\n");
    }
    let feeder = w.send_in_background(batch);
    for i in 0..N {
        assert_eq!(w.line(), "STORED\r\n", "set {}", key(i));
    }
    feeder.join().expect("feeder");
    assert_eq!(stat(mc(&c.members[late]), "forwarded_out"), N as u64);
    // Each item is stored on its owner, and nowhere else.
    let mut per_node = vec![0u64; table.nodes.len()];
    for i in 0..N {
        per_node[owner(&table, &key(i))] += 1;
    }
    for m in &c.members {
        let expected = per_node[index_in(&table, m)];
        assert_eq!(
            stat(mc(m), "curr_items"),
            expected,
            "items on {}",
            m.native()
        );
    }
    // Read back through every node: multi-gets of 1,000 keys spanning every owner, in the
    // order asked, byte for byte; misses stay misses.
    let mut expected_reply = Vec::new();
    let mut get = b"get".to_vec();
    for i in 0..1000 {
        get.extend_from_slice(format!(" {}", key(i)).as_bytes());
        let v = value(i);
        expected_reply
            .extend_from_slice(format!("VALUE {} {} {}\r\n", key(i), i, v.len()).as_bytes());
        expected_reply.extend_from_slice(&v);
        expected_reply.extend_from_slice(b"\r\n");
        if i % 100 == 99 {
            get.extend_from_slice(b" fwd:never-set");
        }
    }
    get.extend_from_slice(b"\r\n");
    expected_reply.extend_from_slice(b"END\r\n");
    for m in &c.members {
        let mut r = Text::connect(mc(m));
        r.send(&get);
        let got = r.get_reply();
        assert!(
            got == expected_reply,
            "multi-get through {} differs",
            m.native()
        );
        for i in (0..N).step_by(7) {
            r.send(format!("get {}\r\n", key(i)).as_bytes());
            let v = value(i);
            let mut want = format!("VALUE {} {} {}\r\n", key(i), i, v.len()).into_bytes();
            want.extend_from_slice(&v);
            want.extend_from_slice(b"\r\nEND\r\n");
            assert!(
                r.get_reply() == want,
                "get {} through {}",
                key(i),
                m.native()
            );
        }
    }
    // The cas unique is the same whichever node answers.
    let gets = |m: &Member| {
        let mut r = Text::connect(mc(m));
        r.send(b"gets fwd:5\r\n");
        r.get_reply()
    };
    let first = gets(&c.members[0]);
    for m in &c.members[1..] {
        assert_eq!(gets(m), first);
    }
}

/// Runs `script` (commands with `{k}` for the key) once on a key the node does not own and
/// once directly on the owner with a key of its own; the replies must be the same bytes.
#[test]
fn forwarded_commands_answer_exactly_what_the_owner_answers() {
    let (c, late) = four_nodes(&[]);
    let table = c.members[0].table().expect("table");
    let owner_idx = index_in(&table, &c.members[0]);
    let owned = keys_owned_by(&table, owner_idx, "exact", 2);
    let script = [
        "get {k}\r\n",
        "add {k} 5 0 3\r\nabc\r\n",
        "add {k} 5 0 3\r\nxyz\r\n",
        "replace {k} 6 0 2\r\nde\r\n",
        "append {k} 0 0 2\r\nfg\r\n",
        "prepend {k} 0 0 2\r\nhi\r\n",
        "gets {k}\r\n",
        "cas {k} 0 0 1 1\r\nz\r\n",
        "touch {k} 100\r\n",
        "gat 0 {k}\r\n",
        "gats 0 {k}\r\n",
        "incr {k} 1\r\n",
        "set {k} 0 0 2\r\n41\r\n",
        "incr {k} 5\r\n",
        "decr {k} 100\r\n",
        "mg {k} v f t c s k\r\n",
        "ms {k} 3 T0 F9\r\nnew\r\n",
        "mg {k} v f\r\n",
        "ma {k} MI D2\r\n",
        "ms {k} 2\r\n10\r\n",
        "ma {k} D3 v\r\n",
        "md {k} q\r\n",
        "mg {k} v\r\n",
        "mn\r\n",
        "delete {k}\r\n",
        "delete {k}\r\n",
        "incr {k} 1\r\n",
        "set {k} 0 0 1 noreply\r\nq\r\nget {k}\r\n",
    ];
    let run = |addr: SocketAddr, k: &str| -> Vec<u8> {
        let mut t = Text::connect(addr);
        let mut all = Vec::new();
        for step in script {
            t.send(step.replace("{k}", k).as_bytes());
            // Every step ends with a command that answers: collect until its last line.
            let last_is_get = step.ends_with("get {k}\r\n")
                || step.starts_with("gets")
                || step.starts_with("gat");
            if last_is_get {
                all.extend_from_slice(&t.get_reply());
            } else if (step.starts_with("mg") || step.starts_with("ma")) && step.contains(" v") {
                let l = t.line();
                all.extend_from_slice(l.as_bytes());
                if l.starts_with("VA ") {
                    all.extend_from_slice(t.line().as_bytes());
                }
            } else if step.starts_with("md {k} q") {
                // Quiet success answers nothing; `mn` after it proves the order.
                t.send(b"mn\r\n");
                all.extend_from_slice(t.line().as_bytes());
            } else {
                all.extend_from_slice(t.line().as_bytes());
            }
        }
        String::from_utf8_lossy(&all).replace(k, "K").into_bytes()
    };
    let forwarded = run(mc(&c.members[late]), &owned[0]);
    let direct = run(mc(&c.members[0]), &owned[1]);
    assert_eq!(
        String::from_utf8_lossy(&forwarded),
        String::from_utf8_lossy(&direct)
    );
    assert!(String::from_utf8_lossy(&forwarded).contains("EXISTS\r\n"));
}

#[test]
fn pipelined_noreply_writes_are_read_in_order_through_a_forwarding_node() {
    let (c, late) = four_nodes(&[]);
    let mut t = Text::connect(mc(&c.members[late]));
    let mut batch = Vec::new();
    for i in 0..2000 {
        let k = format!("order:{}", i % 5);
        let v = format!("v{i}");
        batch.extend_from_slice(
            format!("set {k} 0 0 {} noreply\r\n{v}\r\nget {k}\r\n", v.len()).as_bytes(),
        );
    }
    let feeder = t.send_in_background(batch);
    for i in 0..2000 {
        let k = format!("order:{}", i % 5);
        let v = format!("v{i}");
        let want = format!("VALUE {k} 0 {}\r\n{v}\r\nEND\r\n", v.len());
        assert_eq!(String::from_utf8_lossy(&t.get_reply()), want, "step {i}");
    }
    feeder.join().expect("feeder");
}

/// Many commands pipelined on one connection to a node that owns nothing: they leave for
/// their owners in batches (FORWARD_BATCH), keys repeat within a batch and across batches,
/// and the replies come back in request order, byte for byte what a model of the cache says.
#[test]
fn pipelined_forwarded_commands_are_answered_in_order_byte_exact() {
    let (c, late) = four_nodes(&[]);
    const N: usize = 6000;
    let mut model: std::collections::HashMap<String, (u32, Vec<u8>)> = Default::default();
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..N {
        // 301 keys: every key sees every kind of command; consecutive commands on one key
        // are often in the same client batch.
        let k = format!("pipe:{}", (i * 7) % 301);
        let flags = (i % 13) as u32;
        let v = value(i);
        let stored = |cmd: &str, batch: &mut Vec<u8>| {
            batch.extend_from_slice(format!("{cmd} {k} {flags} 0 {}\r\n", v.len()).as_bytes());
            batch.extend_from_slice(&v);
            batch.extend_from_slice(b"\r\n");
        };
        match i % 6 {
            0 | 3 => {
                stored("set", &mut batch);
                want.extend_from_slice(b"STORED\r\n");
                model.insert(k.clone(), (flags, v.clone()));
            }
            1 | 4 => {
                batch.extend_from_slice(format!("get {k}\r\n").as_bytes());
                if let Some((f, val)) = model.get(&k) {
                    want.extend_from_slice(format!("VALUE {k} {f} {}\r\n", val.len()).as_bytes());
                    want.extend_from_slice(val);
                    want.extend_from_slice(b"\r\n");
                }
                want.extend_from_slice(b"END\r\n");
            }
            2 => {
                stored("add", &mut batch);
                if model.contains_key(&k) {
                    want.extend_from_slice(b"NOT_STORED\r\n");
                } else {
                    want.extend_from_slice(b"STORED\r\n");
                    model.insert(k.clone(), (flags, v.clone()));
                }
            }
            _ => {
                batch.extend_from_slice(format!("delete {k}\r\n").as_bytes());
                if model.remove(&k).is_some() {
                    want.extend_from_slice(b"DELETED\r\n");
                } else {
                    want.extend_from_slice(b"NOT_FOUND\r\n");
                }
            }
        }
    }
    let mut t = Text::connect(mc(&c.members[late]));
    let forwarded_before = stat(mc(&c.members[late]), "forwarded_out");
    let feeder = t.send_in_background(batch);
    let got = t.bytes(want.len());
    feeder.join().expect("feeder");
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        let from = at.saturating_sub(80);
        panic!(
            "replies differ at byte {at}: got {:?}, want {:?}",
            String::from_utf8_lossy(&got[from..(at + 80).min(got.len())]),
            String::from_utf8_lossy(&want[from..(at + 80).min(want.len())])
        );
    }
    assert_eq!(
        stat(mc(&c.members[late]), "forwarded_out") - forwarded_before,
        N as u64
    );
    assert_eq!(stat(mc(&c.members[late]), "forward_errors"), 0);
    // Nothing more is pending on the connection.
    assert_eq!(t.ask("version\r\n").split(' ').next(), Some("VERSION"));
}

#[test]
fn forwarding_to_a_stopped_owner_ends_in_server_error_within_the_deadline() {
    let mut c = Cluster::start(3, &["--forward-timeout", "300ms"]);
    let table = c.members[0].table().expect("table");
    let gone = index_in(&table, &c.members[2]);
    let keys = keys_owned_by(&table, gone, "lost", 100);
    let local = keys_owned_by(&table, index_in(&table, &c.members[0]), "here", 1).remove(0);
    let mut t = Text::connect(mc(&c.members[0]));
    assert_eq!(
        t.ask(&format!("set {} 0 0 1\r\nx\r\n", keys[0])),
        "STORED\r\n"
    );
    c.members[2].proc.kill();
    let pid = c.members[0].proc.pid().expect("pid");
    let rss_before = shoal_tests::rss_of(pid).expect("rss");
    // 10,000 pipelined requests for the stopped node's keys, written from another thread
    // while this one reads.
    const N: usize = 10_000;
    let mut batch = Vec::new();
    for i in 0..N {
        let k = &keys[i % keys.len()];
        if i % 2 == 0 {
            batch.extend_from_slice(format!("get {k}\r\n").as_bytes());
        } else {
            batch.extend_from_slice(format!("set {k} 0 0 1\r\ny\r\n").as_bytes());
        }
    }
    let feeder = t.send_in_background(batch);
    let started = Instant::now();
    for i in 0..N {
        let l = t.line();
        assert!(l.starts_with("SERVER_ERROR "), "reply {i}: {l:?}");
    }
    let took = started.elapsed();
    feeder.join().expect("feeder");
    assert_eq!(stat(mc(&c.members[0]), "forward_errors"), N as u64);
    let rss_after = shoal_tests::rss_of(pid).expect("rss");
    assert!(
        rss_after < rss_before + (64 << 20),
        "forwarding node grew from {rss_before} to {rss_after} bytes"
    );
    // A multi-get that includes a key of the stopped node answers the error, no values.
    let mixed = format!("get {local} {}\r\n", keys[1]);
    t.send(mixed.as_bytes());
    assert!(t.get_reply().starts_with(b"SERVER_ERROR "));
    // The node's own keys are served as before.
    assert_eq!(t.ask(&format!("set {local} 0 0 1\r\nz\r\n")), "STORED\r\n");
    eprintln!("10,000 forwarded requests to a stopped owner answered in {took:?}");
}

#[test]
fn forwarded_commands_wait_out_a_change_of_owner_and_run_on_the_new_one() {
    let mut c = Cluster::start(3, &["--forward-timeout", "30s"]);
    let table = c.members[0].table().expect("table");
    let gone = index_in(&table, &c.members[2]);
    let keys = keys_owned_by(&table, gone, "moved", 50);
    // The owner dies with its data; its buckets get a new owner once the wiped node
    // rejoins as a new member and the leader removes the old one.
    c.members[2].proc.kill();
    c.members[2].wipe();
    let mut t = Text::connect(mc(&c.members[0]));
    let mut batch = Vec::new();
    for k in &keys {
        batch.extend_from_slice(format!("set {k} 0 0 3\r\nnew\r\nget {k}\r\n").as_bytes());
    }
    t.send(&batch);
    c.members[2].proc.restart();
    for k in &keys {
        assert_eq!(t.line(), "STORED\r\n", "set {k}");
        let want = format!("VALUE {k} 0 3\r\nnew\r\nEND\r\n");
        assert_eq!(String::from_utf8_lossy(&t.get_reply()), want);
    }
    assert!(c.wait_settled(3, SETTLE), "{:?}", c.statuses());
    let after = c.members[0].table().expect("table");
    for k in &keys {
        let bucket = shoal_proto::hash::bucket_of(k.as_bytes(), BUCKETS) as usize;
        assert!(after.buckets[bucket].epoch > table.buckets[bucket].epoch);
    }
    // Through another node, the writes are there.
    let mut r = Text::connect(mc(&c.members[1]));
    for k in &keys {
        r.send(format!("get {k}\r\n").as_bytes());
        let want = format!("VALUE {k} 0 3\r\nnew\r\nEND\r\n");
        assert_eq!(String::from_utf8_lossy(&r.get_reply()), want);
    }
}

/// Runs `program` with `args`; `None` (and a SKIPPED line) when it is not installed.
fn run_tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) => {
            println!("SKIPPED: {program} is not available ({e}); CI installs it");
            None
        }
    }
}

fn succeeded(what: &str, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pymemcache, the libmemcached tools and libmemcached's conformance checker, each pointed at
/// one node of a 3-node cluster, see one whole cache: what one node stores another reads,
/// a 1,000-key multi-get spans every owner, and flush_all empties every node.
#[test]
fn memcached_clients_pointed_at_one_node_see_the_whole_cluster() {
    let c = Cluster::start(3, &[]);
    let addrs: Vec<String> = c.members.iter().map(|m| mc(m).to_string()).collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/pymemcache_compat.py");
    let script = script.to_str().expect("utf-8 path");
    let spread = r#"
import sys
from pymemcache.client.base import Client
def client(a):
    host, port = a.rsplit(":", 1)
    return Client((host, int(port)), connect_timeout=5, timeout=10)
w, r = client(sys.argv[1]), client(sys.argv[2])
items = {f"spread:{i}": (b"v%d" % i) * (i % 50 + 1) for i in range(1000)}
assert w.set_many(items, noreply=False) == []
got = r.get_many(list(items) + ["spread:absent"])
assert got == items, f"{len(got)} of {len(items)} read back"
assert r.flush_all(noreply=False)
assert w.get_many(list(items)) == {}, "flush_all through one node empties every node"
"#;
    let Some(probe) = run_tool("python3", &["-c", "import pymemcache"]) else {
        return;
    };
    if probe.status.success() {
        succeeded(
            "pymemcache_compat.py",
            &run_tool("python3", &[script, &addrs[1]]).expect("python3"),
        );
        succeeded(
            "pymemcache 1,000 keys",
            &run_tool("python3", &["-c", spread, &addrs[0], &addrs[2]]).expect("python3"),
        );
        for a in &addrs {
            assert_eq!(stat(a.parse().expect("addr"), "curr_items"), 0, "{a}");
        }
    } else {
        println!("SKIPPED: pymemcache is not installed; CI installs it");
    }
    let Some(_) = run_tool("memcstat", &["--help"]) else {
        return;
    };
    let stats = succeeded(
        "memcstat",
        &run_tool("memcstat", &[&format!("--servers={}", addrs[2])]).expect("memcstat"),
    );
    assert!(stats.contains("version: 1.6.18-shoald-"), "{stats}");
    let dir = shoald::testing::TempDir::new("memccp");
    let file = dir.0.join("cluster-greeting");
    let content = b"hello through the cluster\n\0binary tail";
    std::fs::write(&file, content).expect("write file");
    let file = file.to_str().expect("utf-8 path");
    for (i, a) in addrs.iter().enumerate() {
        succeeded(
            "memccp",
            &run_tool("memccp", &[&format!("--servers={a}"), file]).expect("memccp"),
        );
        let reader = &addrs[(i + 1) % addrs.len()];
        let got = run_tool(
            "memccat",
            &[&format!("--servers={reader}"), "cluster-greeting"],
        )
        .expect("memccat");
        succeeded("memccat", &got);
        let mut want = content.to_vec();
        want.push(b'\n');
        assert_eq!(
            got.stdout, want,
            "written through {a}, read through {reader}"
        );
    }
    let addr: SocketAddr = addrs[1].parse().expect("addr");
    let report = succeeded(
        "memccapable",
        &run_tool(
            "memccapable",
            &[
                "-a",
                "-t",
                "5",
                "-h",
                &addr.ip().to_string(),
                "-p",
                &addr.port().to_string(),
            ],
        )
        .expect("memccapable"),
    );
    assert!(
        report.contains("All tests passed") && !report.contains("[FAIL]"),
        "{report}"
    );
}
