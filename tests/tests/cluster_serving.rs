//! Serving by the table: a node answers only for the buckets its cluster view says it owns
//! (`NOT_MY_BUCKET` on the native port, `SERVER_ERROR not my bucket` on the memcached port,
//! nothing applied), TABLE_GET and NODE_STATUS, and the table-changed notice.
//!
//! Nodes that own only part of the buckets run in-process with a [`ClusterView`] built here
//! (a two-member table in which another node owns one bucket); TABLE_GET and NODE_STATUS are
//! also checked against a real `shoald` process on its own.

use shoal_proto::{
    encode_multi_get, Command, MultiGetEntry, Opcode, ReplyBody, Request, Status, StoreMode,
};
use shoal_tests::{wait_for, RawConn, ServerProcess};
use shoald::cluster::state::{
    Assignment, ClusterState, Command as ClusterCommand, NodeAddrs, Settings,
};
use shoald::cluster::ClusterView;
use shoald::config::OptionalAddr;
use shoald::datadir::{ClusterId, NodeId};
use shoald::testing::TestServer;
use shoald::Config;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const BUCKETS: u32 = 1024;
/// The other member: owns the bucket of [`FOREIGN`].
const OTHER: NodeId = NodeId([0xee; 16]);
const OTHER_NATIVE: &str = "127.0.0.1:9";
const OTHER_MEMCACHE: &str = "127.0.0.1:10";
const FOREIGN: &[u8] = b"foreign-key";
/// The epoch the foreign bucket gets: the log index of its assignment.
const FOREIGN_EPOCH: u64 = 3;

fn bucket(key: &[u8]) -> u32 {
    shoal_proto::hash::bucket_of(key, BUCKETS)
}

/// A key of a bucket this node serves.
fn mine(n: usize) -> String {
    (n..)
        .map(|i| format!("mine-{i}"))
        .find(|k| bucket(k.as_bytes()) != bucket(FOREIGN))
        .expect("some key is in another bucket")
}

/// The applied state of a two-member cluster: `me` created it and owns every bucket except
/// the one of [`FOREIGN`], which [`OTHER`] got at log index [`FOREIGN_EPOCH`].
fn two_members(me: NodeId, native: SocketAddr) -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(
        1,
        &ClusterCommand::Create {
            cluster_id: ClusterId([9; 16]),
            settings: Settings {
                buckets: BUCKETS,
                ..Settings::default()
            },
            node: me,
            addrs: NodeAddrs {
                peer: "127.0.0.1:1".into(),
                native: native.to_string(),
                memcache: None,
                durable: false,
            },
            assign_all: true,
        },
    );
    s.apply(
        2,
        &ClusterCommand::AddNode {
            node: OTHER,
            addrs: NodeAddrs {
                peer: "127.0.0.1:2".into(),
                native: OTHER_NATIVE.into(),
                memcache: Some(OTHER_MEMCACHE.into()),
                durable: false,
            },
        },
    );
    s.apply(
        FOREIGN_EPOCH,
        &ClusterCommand::Assign(vec![Assignment {
            bucket: bucket(FOREIGN),
            epoch: 1,
            version: 1,
            primary: OTHER,
        }]),
    );
    s
}

/// An in-process node serving by [`two_members`], memcached port on.
fn partial_node() -> TestServer {
    let config = Config {
        buckets: BUCKETS,
        memcache_listen: OptionalAddr(Some("127.0.0.1:0".parse().expect("addr"))),
        ..Config::default()
    };
    TestServer::start_with(config, |me, native| {
        let view = ClusterView::new(me, BUCKETS);
        view.lease().never_end();
        view.update(Arc::new(two_members(me, native)));
        Some(view)
    })
}

fn send(c: &mut RawConn, id: u32, command: Command<'_>) {
    c.send(&Request { id, command });
}

#[test]
fn keyed_native_requests_for_a_bucket_not_served_get_not_my_bucket_and_are_not_applied() {
    let s = partial_node();
    let mut c = RawConn::hello(s.native_addr);
    let commands = [
        Command::Store {
            mode: StoreMode::Set,
            key: FOREIGN,
            value: b"v",
            flags: 0,
            ttl: 0,
        },
        Command::Store {
            mode: StoreMode::Add,
            key: FOREIGN,
            value: b"v",
            flags: 0,
            ttl: 0,
        },
        Command::Cas {
            key: FOREIGN,
            value: b"v",
            flags: 0,
            ttl: 0,
            expected: 1,
        },
        Command::Counter {
            decr: false,
            key: FOREIGN,
            delta: 1,
            create: Some((5, 0)),
        },
        Command::Concat {
            prepend: false,
            key: FOREIGN,
            value: b"v",
        },
        Command::Delete {
            key: FOREIGN,
            expected: None,
        },
        Command::Touch {
            key: FOREIGN,
            ttl: 5,
        },
        Command::Get { key: FOREIGN },
        Command::GetWithHash { key: FOREIGN },
        Command::GetAndTouch {
            key: FOREIGN,
            ttl: 5,
        },
    ];
    for (i, command) in commands.into_iter().enumerate() {
        let id = i as u32 + 10;
        let opcode = command.opcode();
        send(&mut c, id, command);
        let (got_id, got_op, status, redirect) = c.recv(|r| {
            let redirect = match r.body {
                ReplyBody::Redirect(n) => Some((
                    n.bucket,
                    n.epoch,
                    n.owner_id(),
                    n.owner_addr().map(str::to_owned),
                )),
                _ => None,
            };
            (r.id, r.opcode, r.status, redirect)
        });
        assert_eq!((got_id, got_op, status), (id, opcode, Status::NotMyBucket));
        assert_eq!(
            redirect,
            Some((
                bucket(FOREIGN),
                FOREIGN_EPOCH,
                Some(OTHER.0),
                Some(OTHER_NATIVE.to_string())
            )),
            "{}",
            opcode.name()
        );
    }
    // Nothing was applied: not even the INCR with create or the SET.
    assert_eq!(s.store.get(FOREIGN, |_| ()), None);

    // A key of a served bucket works as always.
    let key = mine(0);
    send(
        &mut c,
        50,
        Command::Store {
            mode: StoreMode::Set,
            key: key.as_bytes(),
            value: b"here",
            flags: 3,
            ttl: 0,
        },
    );
    assert_eq!(c.recv(|r| r.status), Status::Ok);

    // MGET: the foreign key gets its own redirect entry, the others are answered.
    let missing = mine(1000);
    let mut frame = Vec::new();
    encode_multi_get(
        &mut frame,
        51,
        [key.as_bytes(), FOREIGN, missing.as_bytes()],
    );
    c.send_raw(&frame);
    let entries = c.recv(|r| match r.body {
        ReplyBody::Values(list) => list
            .iter()
            .map(|e| match e {
                MultiGetEntry::Miss => "miss".to_string(),
                MultiGetEntry::Hit(f) => String::from_utf8_lossy(f.value).into_owned(),
                MultiGetEntry::NotMyBucket(n) => {
                    format!("redirect {} {} {:?}", n.bucket, n.epoch, n.owner_addr())
                }
            })
            .collect::<Vec<_>>(),
        ref other => panic!("unexpected {other:?}"),
    });
    assert_eq!(
        entries,
        vec![
            "here".to_string(),
            format!(
                "redirect {} {FOREIGN_EPOCH} Some({OTHER_NATIVE:?})",
                bucket(FOREIGN)
            ),
            "miss".to_string()
        ]
    );
}

#[test]
fn hello_tells_the_bucket_count() {
    let s = partial_node();
    let mut c = RawConn::connect(s.native_addr);
    send(
        &mut c,
        1,
        Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"t",
            auth: b"",
        },
    );
    let body = c.recv(|r| format!("{:?}", r.body));
    assert!(body.contains("buckets: Some(1024)"), "{body}");
}

/// Reads one `\r\n`-terminated line.
fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("read a line");
    l
}

#[test]
fn the_memcached_port_refuses_foreign_keys_with_the_owner_and_never_a_false_miss() {
    let s = partial_node();
    let addr = s.memcache_addr.expect("memcached port on");
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let refusal = format!("SERVER_ERROR not my bucket (owner {OTHER_MEMCACHE})\r\n");
    let foreign = std::str::from_utf8(FOREIGN).expect("ascii");
    let key = mine(0);

    write!(w, "set {foreign} 0 0 1\r\nx\r\n").expect("write");
    assert_eq!(line(&mut r), refusal);
    write!(w, "get {foreign}\r\n").expect("write");
    assert_eq!(line(&mut r), refusal);
    write!(
        w,
        "incr {foreign} 1\r\ndelete {foreign}\r\ntouch {foreign} 1\r\n"
    )
    .expect("write");
    for _ in 0..3 {
        assert_eq!(line(&mut r), refusal);
    }
    // A multi-get naming a foreign key: one refusal line, no values, no END.
    write!(w, "set {key} 0 0 2\r\nok\r\n").expect("write");
    assert_eq!(line(&mut r), "STORED\r\n");
    write!(w, "get {key} {foreign}\r\n").expect("write");
    assert_eq!(line(&mut r), refusal);
    // noreply stays silent (and applies nothing); the next reply is the version's.
    write!(w, "set {foreign} 0 0 1 noreply\r\nx\r\nversion\r\n").expect("write");
    assert!(line(&mut r).starts_with("VERSION "));
    write!(w, "gets {key}\r\n").expect("write");
    assert!(line(&mut r).starts_with(&format!("VALUE {key} 0 2 ")));
    assert_eq!(line(&mut r), "ok\r\n");
    assert_eq!(line(&mut r), "END\r\n");
    assert_eq!(s.store.get(FOREIGN, |_| ()), None);
}

#[test]
fn table_get_and_node_status_describe_a_partial_node() {
    let s = partial_node();
    let client = shoal_client::Client::builder()
        .seed(s.native_addr.to_string())
        .build_blocking()
        .expect("client");
    let table = client.table().expect("table");
    assert_eq!(table.version, FOREIGN_EPOCH);
    assert_eq!(table.buckets.len(), BUCKETS as usize);
    assert_eq!(table.nodes.len(), 2);
    let me = s.cluster.me();
    let ids: Vec<[u8; 16]> = table.nodes.iter().map(|n| n.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "nodes are listed in id order");
    let other = table.primary_of(bucket(FOREIGN)).expect("foreign owner");
    assert_eq!(
        (other.id, other.native.as_str(), other.memcache.as_str()),
        (OTHER.0, OTHER_NATIVE, OTHER_MEMCACHE)
    );
    let counts = table.owned_counts();
    let mine_index = ids.iter().position(|id| *id == me.0).expect("me listed");
    assert_eq!(counts[mine_index], BUCKETS - 1);
    assert_eq!(table.buckets[bucket(FOREIGN) as usize].epoch, FOREIGN_EPOCH);

    let status = client.node_status().expect("node status");
    assert_eq!(status.node_id, me.0);
    assert_eq!(status.cluster_id, Some([9; 16]));
    assert_eq!(status.table_version, FOREIGN_EPOCH);
    assert_eq!(status.buckets_owned, BUCKETS - 1);
    assert_eq!(status.role, shoal_client::RaftRole::None);

    // The other member leaves with no heir: its bucket has no owner (epoch 4). A request for
    // it is a typed error carrying the redirect, and nothing was applied.
    let mut state = two_members(me, s.native_addr);
    state.apply(
        4,
        &ClusterCommand::RemoveNode {
            node: OTHER,
            heir: None,
        },
    );
    s.cluster.update(Arc::new(state));
    match client.incr(FOREIGN, 1, Some((1, 0))) {
        Err(shoal_client::Error::NotMyBucket(r)) => {
            assert_eq!(
                r,
                shoal_client::Redirect {
                    bucket: bucket(FOREIGN),
                    epoch: 4,
                    owner: None,
                    owner_addr: None,
                }
            );
        }
        other => panic!("expected NotMyBucket, got {other:?}"),
    }
    assert_eq!(s.store.get(FOREIGN, |_| ()), None);
}

#[test]
fn a_table_change_sends_a_notice_to_connections_that_said_hello() {
    let s = partial_node();
    let client = shoal_client::Client::builder()
        .seed(s.native_addr.to_string())
        .build_blocking()
        .expect("client");
    client.ping().expect("ping");
    let mut hello = RawConn::hello(s.native_addr);
    let mut before_hello = RawConn::connect(s.native_addr);

    // Give the foreign bucket back to this node at log index 4: the table version moves.
    let me = s.cluster.me();
    let mut state = two_members(me, s.native_addr);
    state.apply(
        4,
        &ClusterCommand::Assign(vec![Assignment {
            bucket: bucket(FOREIGN),
            epoch: FOREIGN_EPOCH,
            version: FOREIGN_EPOCH,
            primary: me,
        }]),
    );
    s.cluster.update(Arc::new(state));

    let notice = hello.recv(|r| (r.id, r.opcode, r.status, format!("{:?}", r.body)));
    assert_eq!(
        notice,
        (
            0,
            Opcode::Notice,
            Status::TableChanged,
            "TableChanged { version: 4 }".to_string()
        )
    );
    assert!(
        wait_for(Duration::from_secs(5), || client.announced_table_version()
            == 4),
        "the client saw the notice"
    );
    // The client goes on working, and the bucket is served now.
    client.set(FOREIGN, b"now mine", 0, 0).expect("set");
    assert_eq!(
        client.get(FOREIGN).expect("get").map(|i| i.value.to_vec()),
        Some(b"now mine".to_vec())
    );
    // A connection that had not said HELLO got no notice: its first frame is HELLO's reply.
    send(
        &mut before_hello,
        1,
        Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"late",
            auth: b"",
        },
    );
    assert_eq!(
        before_hello.recv(|r| (r.id, r.opcode, r.status)),
        (1, Opcode::Hello, Status::Ok)
    );
}

#[test]
fn a_single_shoald_answers_table_get_and_node_status_as_a_cluster_of_one() {
    let server = ServerProcess::start(&[]);
    let client = shoal_client::Client::builder()
        .seed(server.native_addr.to_string())
        .build_blocking()
        .expect("client");
    let table = client.table().expect("table");
    // A new node's log: Raft's first membership entry (1), then the cluster's creation (2).
    assert_eq!(table.version, 2);
    assert_eq!(table.nodes.len(), 1);
    let node = &table.nodes[0];
    assert_eq!(node.native, server.native_addr.to_string());
    assert_eq!(
        Some(node.memcache.clone()),
        server.memcache_addr.map(|a| a.to_string())
    );
    assert_eq!(node.state, shoal_client::NodeState::Active);
    assert_eq!(table.buckets.len(), 1024);
    assert!(table.buckets.iter().all(|b| b.primary == 0 && b.epoch == 2));

    let status = client.node_status().expect("node status");
    assert_eq!(status.node_id, node.id);
    assert_eq!(status.role, shoal_client::RaftRole::Leader);
    assert_eq!((status.term, status.last_applied), (1, 2));
    assert_eq!(status.leader, Some(node.id));
    assert_eq!(status.table_version, 2);
    assert_eq!(status.buckets_owned, 1024);
    assert!(status.memory_limit > 0);
    assert!(status.version.starts_with("shoald "), "{}", status.version);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    assert!(now_us.abs_diff(status.wall_clock_us) < 60_000_000);
}
