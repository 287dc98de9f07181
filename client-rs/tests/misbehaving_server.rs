//! The client against a server written here that misbehaves on purpose: it closes mid-reply,
//! sends junk, stalls, resets connections, redirects, and announces shutdowns. Every call must
//! return within its timeout (+100 ms) with the right kind of error, and the next call against
//! a well-behaved server must succeed. No shoald needed.

// The test server's helpers panic on setup failures, like the tests themselves.
#![allow(clippy::unwrap_used)]

use shoal_client::{Client, Error, FailureKind, LimitKind, Limits, RoutingStats};
use shoal_proto::cluster::{NodeState, TableBucket, TableNode};
use shoal_proto::TableView;
use shoal_proto::{
    decode_request, hash::value_hash, Command, FrameWriter, Opcode, Reply, ReplyBody, Status,
    StoreMode,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the test server treats what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Answers like a real server (a tiny in-memory store).
    Good = 0,
    /// Writes half of each reply, then closes.
    CloseMidReply = 1,
    /// Answers requests with bytes that are not a frame.
    Junk = 2,
    /// Reads requests and never answers (the connection stalls for good).
    Stall = 3,
    /// Resets each new connection right after accepting it.
    ResetOnAccept = 4,
    /// Accepts and never answers HELLO.
    StallHello = 5,
    /// Answers keyed requests with NOT_MY_BUCKET naming `redirect_to` at `redirect_epoch`:
    /// those of `redirect_buckets` (all when `None`), `redirects_left` times, then as `Good`.
    Redirect = 6,
    /// Answers one request, then sends NOTICE SHUTTING_DOWN and closes.
    NoticeAndClose = 7,
    /// Answers one request, then sends a GOODBYE request and closes once answered.
    GoodbyeAfterReply = 8,
}

impl Mode {
    fn from_u8(n: u8) -> Mode {
        [
            Mode::Good,
            Mode::CloseMidReply,
            Mode::Junk,
            Mode::Stall,
            Mode::ResetOnAccept,
            Mode::StallHello,
            Mode::Redirect,
            Mode::NoticeAndClose,
            Mode::GoodbyeAfterReply,
        ][usize::from(n)]
    }
}

/// The test server's data: key -> (flags, value).
type Store = HashMap<Vec<u8>, (u32, Vec<u8>)>;

struct Shared {
    mode: AtomicU8,
    accepted: AtomicUsize,
    requests: AtomicUsize,
    store: Mutex<Store>,
    redirect_to: Mutex<String>,
    redirect_epoch: AtomicU64,
    redirect_buckets: Mutex<Option<HashSet<u32>>>,
    redirects_left: AtomicUsize,
    /// Redirects sent, per bucket.
    redirected: Mutex<HashMap<u32, usize>>,
    /// What TABLE_GET answers (`UNKNOWN_COMMAND` when `None`); not counted in `requests`.
    table: Mutex<Option<TableView>>,
    table_gets: AtomicUsize,
}

struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(mode: Mode) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(mode as u8),
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            store: Mutex::new(HashMap::new()),
            redirect_to: Mutex::new(String::new()),
            redirect_epoch: AtomicU64::new(7),
            redirect_buckets: Mutex::new(None),
            redirects_left: AtomicUsize::new(usize::MAX),
            redirected: Mutex::new(HashMap::new()),
            table: Mutex::new(None),
            table_gets: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(stream, s.clone()));
            }
        });
        TestServer { addr, shared, task }
    }

    fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        Mode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn client(&self, request_timeout_ms: u64, deadline_ms: u64) -> Client {
        Client::builder()
            .seed(self.addr.to_string())
            .connections_per_node(1)
            .connect_timeout(Duration::from_millis(request_timeout_ms))
            .request_timeout(Duration::from_millis(request_timeout_ms))
            .deadline(Duration::from_millis(deadline_ms))
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(50))
            .build()
            .unwrap()
    }
}

async fn serve(mut stream: TcpStream, s: Arc<Shared>) {
    let mode = Mode::from_u8(s.mode.load(Ordering::SeqCst));
    if mode == Mode::ResetOnAccept {
        #[allow(deprecated)] // a reset is the point here
        let _ = stream.set_linger(Some(Duration::ZERO));
        return; // dropped with linger 0: RST
    }
    let limits = Limits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut stalled = false;
    let mut said_goodbye = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut then_close = false;
        let mut used_total = 0;
        while let Ok(Some((req, used))) = decode_request(&buf[used_total..], &limits) {
            used_total += used;
            let mode = Mode::from_u8(s.mode.load(Ordering::SeqCst));
            if let Command::Hello { .. } = req.command {
                if mode == Mode::StallHello {
                    stalled = true;
                    continue;
                }
                Reply {
                    id: req.id,
                    opcode: Opcode::Hello,
                    status: Status::Ok,
                    body: ReplyBody::Hello {
                        version: 1,
                        server: b"test",
                        buckets: Some(1024),
                    },
                }
                .encode(&mut out);
                continue;
            }
            if let Command::Goodbye = req.command {
                drop(FrameWriter::reply(
                    &mut out,
                    Opcode::Goodbye,
                    Status::Ok,
                    req.id,
                ));
                then_close = true;
                continue;
            }
            if let Command::TableGet = req.command {
                s.table_gets.fetch_add(1, Ordering::SeqCst);
                if !(stalled || mode == Mode::Stall) {
                    answer_table(&s, req.id, &mut out);
                }
                continue;
            }
            s.requests.fetch_add(1, Ordering::SeqCst);
            if stalled || mode == Mode::Stall {
                stalled = true;
                continue;
            }
            let start = out.len();
            match mode {
                Mode::Redirect if redirects(&s, req.command.key()) => {
                    let owner = s.redirect_to.lock().unwrap().clone();
                    let bucket = shoal_proto::hash::bucket_of(req.command.key().unwrap(), 1024);
                    *s.redirected.lock().unwrap().entry(bucket).or_default() += 1;
                    Reply {
                        id: req.id,
                        opcode: req.command.opcode(),
                        status: Status::NotMyBucket,
                        body: ReplyBody::Redirect(shoal_proto::NotMyBucket {
                            bucket,
                            epoch: s.redirect_epoch.load(Ordering::SeqCst),
                            owner: [7; 16],
                            addr: owner.as_bytes(),
                        }),
                    }
                    .encode(&mut out);
                }
                _ => answer(&s, req.id, req.command, &mut out),
            }
            match mode {
                Mode::CloseMidReply => {
                    let half = start + (out.len() - start) / 2;
                    out.truncate(half.max(start + 1));
                    then_close = true;
                }
                Mode::Junk => {
                    out.truncate(start);
                    out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                }
                Mode::NoticeAndClose => {
                    Reply {
                        id: 0,
                        opcode: Opcode::Notice,
                        status: Status::ShuttingDown,
                        body: ReplyBody::Message(b"stopping"),
                    }
                    .encode(&mut out);
                    then_close = true;
                }
                Mode::GoodbyeAfterReply => {
                    drop(FrameWriter::request(&mut out, Opcode::Goodbye, 99));
                    said_goodbye = true;
                }
                _ => {}
            }
            if then_close {
                break;
            }
        }
        buf.drain(..used_total);
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        if then_close {
            let _ = stream.shutdown().await;
            return;
        }
        if said_goodbye {
            // Wait for the client's answer to our GOODBYE, then close.
            let mut rest = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut rest)).await;
            return;
        }
    }
}

/// Whether Redirect mode redirects a request with this key (and uses up one redirect).
fn redirects(s: &Shared, key: Option<&[u8]>) -> bool {
    let Some(key) = key else {
        return false;
    };
    let bucket = shoal_proto::hash::bucket_of(key, 1024);
    let listed = match &*s.redirect_buckets.lock().unwrap() {
        Some(set) => set.contains(&bucket),
        None => true,
    };
    listed
        && s.redirects_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
}

fn answer_table(s: &Shared, id: u32, out: &mut Vec<u8>) {
    match &*s.table.lock().unwrap() {
        Some(table) => {
            let mut w = FrameWriter::reply(out, Opcode::TableGet, Status::Ok, id);
            table.encode(w.buffer());
        }
        None => Reply {
            id,
            opcode: Opcode::TableGet,
            status: Status::UnknownCommand,
            body: ReplyBody::Message(b"test"),
        }
        .encode(out),
    }
}

/// A table of 1024 buckets at `version` over `nodes`: `owner(bucket)` gives each bucket's
/// primary (index into `nodes`) and epoch.
fn table(version: u64, nodes: &[SocketAddr], owner: impl Fn(u32) -> (u16, u64)) -> TableView {
    TableView {
        version,
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, a)| TableNode {
                id: [i as u8 + 1; 16],
                state: NodeState::Active,
                native: a.to_string(),
                memcache: String::new(),
            })
            .collect(),
        buckets: (0..1024)
            .map(|b| {
                let (primary, epoch) = owner(b);
                TableBucket { primary, epoch }
            })
            .collect(),
    }
}

/// Polls `f` every 5 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}

/// A minimal, correct store for the commands the tests use.
fn answer(s: &Shared, id: u32, command: Command<'_>, out: &mut Vec<u8>) {
    let op = command.opcode();
    let mut store = s.store.lock().unwrap();
    let reply = |out: &mut Vec<u8>, status, body| {
        Reply {
            id,
            opcode: op,
            status,
            body,
        }
        .encode(out)
    };
    match command {
        Command::Ping => reply(out, Status::Ok, ReplyBody::Empty),
        Command::Store {
            mode: StoreMode::Set,
            key,
            value,
            flags,
            ..
        } => {
            store.insert(key.to_vec(), (flags, value.to_vec()));
            reply(
                out,
                Status::Ok,
                ReplyBody::Stored {
                    hash: value_hash(value),
                },
            )
        }
        Command::GetWithHash { key } => match store.get(key) {
            Some((flags, value)) => reply(
                out,
                Status::Ok,
                ReplyBody::ValueWithHash(shoal_proto::Found {
                    flags: *flags,
                    hash: value_hash(value),
                    value,
                }),
            ),
            None => reply(out, Status::NotFound, ReplyBody::Message(b"")),
        },
        Command::Counter { key, delta, .. } => {
            let entry = store.entry(key.to_vec()).or_insert((0, b"0".to_vec()));
            let n: u64 = std::str::from_utf8(&entry.1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                .wrapping_add(delta);
            entry.1 = n.to_string().into_bytes();
            reply(
                out,
                Status::Ok,
                ReplyBody::Counter {
                    value: n,
                    hash: value_hash(&entry.1),
                },
            )
        }
        _ => reply(out, Status::UnknownCommand, ReplyBody::Message(b"test")),
    }
}

/// Runs `f`, returning its output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

const SLACK: Duration = Duration::from_millis(100);

#[tokio::test]
async fn stalled_server_gives_in_doubt_within_the_request_timeout_then_recovers() {
    let server = TestServer::start(Mode::Good).await;
    let client = server.client(300, 2_000);
    client.set("k", "v", 0, 0).await.unwrap();
    server.set_mode(Mode::Stall);

    let (res, took) = timed(client.get("k")).await;
    match res {
        Err(Error::InDoubt(f)) => assert_eq!(f.kind(), FailureKind::Timeout),
        other => panic!("expected in doubt, got {other:?}"),
    }
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");

    server.set_mode(Mode::Good);
    let item = client.get("k").await.unwrap().unwrap();
    assert_eq!(&item.value[..], b"v");
}

#[tokio::test]
async fn junk_reply_fails_the_connection_and_non_idempotent_calls_are_in_doubt() {
    let server = TestServer::start(Mode::Good).await;
    let client = server.client(300, 300);
    client.ping().await.unwrap();
    server.set_mode(Mode::Junk);

    let (res, took) = timed(client.incr("n", 1, None)).await;
    match res {
        Err(Error::InDoubt(f)) => assert_eq!(f.kind(), FailureKind::Protocol),
        other => panic!("expected in doubt, got {other:?}"),
    }
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");

    // A read is idempotent: retried until the deadline, then reported.
    let (res, took) = timed(client.get("k")).await;
    assert!(res.unwrap_err().is_in_doubt());
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");

    server.set_mode(Mode::Good);
    // The junk replaced a reply: the INCR *was* applied, which is what "in doubt" allows.
    assert_eq!(client.incr("n", 5, None).await.unwrap(), Some(6));
}

#[tokio::test]
async fn close_mid_reply_is_in_doubt_and_the_next_call_reconnects() {
    let server = TestServer::start(Mode::Good).await;
    let client = server.client(300, 300);
    client.ping().await.unwrap();
    server.set_mode(Mode::CloseMidReply);

    let (res, took) = timed(client.incr("n", 1, None)).await;
    match res {
        Err(Error::InDoubt(f)) => assert_eq!(f.kind(), FailureKind::Closed),
        other => panic!("expected in doubt, got {other:?}"),
    }
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");
    // Exactly one INCR reached the server: it was not retried.
    assert_eq!(server.requests(), 2);

    let (res, took) = timed(client.set("k", "v", 0, 0)).await;
    assert!(res.unwrap_err().is_in_doubt());
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");

    server.set_mode(Mode::Good);
    client.set("k", "v2", 0, 3).await.unwrap();
    assert_eq!(client.get("k").await.unwrap().unwrap().flags, 3);
}

#[tokio::test]
async fn reset_on_accept_is_a_connection_error_within_the_deadline_then_recovers() {
    let server = TestServer::start(Mode::ResetOnAccept).await;
    let client = server.client(300, 300);

    let (res, took) = timed(client.incr("n", 1, None)).await;
    let err = res.unwrap_err();
    assert!(
        matches!(err, Error::Connection(_) | Error::Timeout),
        "not sent, got {err:?}"
    );
    assert!(err.is_retryable());
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");
    assert!(server.shared.accepted.load(Ordering::SeqCst) >= 1);
    assert_eq!(server.requests(), 0);

    server.set_mode(Mode::Good);
    assert_eq!(client.incr("n", 2, None).await.unwrap(), Some(2));
}

#[tokio::test]
async fn server_that_never_answers_hello_costs_one_deadline() {
    let server = TestServer::start(Mode::StallHello).await;
    let client = Client::builder()
        .seed(server.addr.to_string())
        .connect_timeout(Duration::from_secs(10))
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let (res, took) = timed(client.get("k")).await;
    let err = res.unwrap_err();
    assert!(
        matches!(err, Error::Connection(_) | Error::Timeout),
        "{err:?}"
    );
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");

    server.set_mode(Mode::Good);
    assert_eq!(client.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn unreachable_seed_is_skipped_for_the_next_one() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let server = TestServer::start(Mode::Good).await;
    let client = Client::builder()
        .seed(dead_addr.to_string())
        .seed(server.addr.to_string())
        .deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    client.set("k", "v", 0, 0).await.unwrap();
    assert!(client.get("k").await.unwrap().is_some());
}

#[tokio::test]
async fn too_large_value_fails_without_touching_the_network() {
    let server = TestServer::start(Mode::Good).await;
    let client = Client::builder()
        .seed(server.addr.to_string())
        .limits(Limits::for_value_size(1000))
        .build()
        .unwrap();
    let err = client.set("k", vec![0u8; 1001], 0, 0).await.unwrap_err();
    assert!(matches!(
        err,
        Error::TooLarge {
            what: LimitKind::Value,
            len: 1001,
            max: 1000
        }
    ));
    let err = client.get(vec![b'k'; 251]).await.unwrap_err();
    assert!(matches!(
        err,
        Error::TooLarge {
            what: LimitKind::Key,
            ..
        }
    ));
    assert!(matches!(
        client.get("").await.unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert_eq!(server.shared.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redirect_with_a_newer_epoch_is_followed_and_remembered_and_an_older_one_ignored() {
    let owner = TestServer::start(Mode::Good).await;
    let wrong = TestServer::start(Mode::Redirect).await;
    *wrong.shared.redirect_to.lock().unwrap() = owner.addr.to_string();
    let client = wrong.client(1_000, 2_000);

    client.set("k", "v", 0, 0).await.unwrap();
    assert_eq!(wrong.requests(), 1);
    assert_eq!(owner.requests(), 1);
    // The table now sends this key straight to its owner.
    assert!(client.get("k").await.unwrap().is_some());
    assert_eq!(wrong.requests(), 1);
    assert_eq!(owner.requests(), 2);

    // The owner, now behind the cluster, redirects twice at an older epoch: the client does
    // not believe it, and asks it again until it answers.
    *owner.shared.redirect_to.lock().unwrap() = wrong.addr.to_string();
    owner.shared.redirect_epoch.store(3, Ordering::SeqCst);
    owner.shared.redirects_left.store(2, Ordering::SeqCst);
    owner.set_mode(Mode::Redirect);
    assert_eq!(client.get("k").await.unwrap().unwrap().value, "v");
    assert_eq!(owner.requests(), 5);
    assert_eq!(wrong.requests(), 1);

    // Redirects that never end are reported at the deadline.
    owner
        .shared
        .redirects_left
        .store(usize::MAX, Ordering::SeqCst);
    let (result, took) = timed(client.get("k")).await;
    let err = result.unwrap_err();
    assert!(took < Duration::from_millis(2_000) + SLACK, "{took:?}");
    assert_eq!(err.status(), Some(Status::NotMyBucket));
    match err {
        shoal_client::Error::NotMyBucket(r) => {
            assert_eq!((r.epoch, r.owner), (3, Some([7; 16])));
            assert_eq!(r.owner_addr, Some(wrong.addr.to_string()));
        }
        other => panic!("expected NotMyBucket, got {other:?}"),
    }
    assert_eq!(wrong.requests(), 1);
}

/// `routing_stats` counts every NOT_MY_BUCKET reply the client follows (believed or not) and
/// every bucket table that arrives; an answer without a table is not a fetch.
#[tokio::test]
async fn routing_stats_count_each_redirect_followed_and_each_table_fetched() {
    let owner = TestServer::start(Mode::Good).await;
    let wrong = TestServer::start(Mode::Redirect).await;
    *wrong.shared.redirect_to.lock().unwrap() = owner.addr.to_string();
    let client = wrong.client(1_000, 2_000);
    assert_eq!(client.routing_stats(), RoutingStats::default());

    client.set("k", "v", 0, 0).await.unwrap();
    assert_eq!(client.routing_stats().redirects, 1);
    // The key now goes straight to its owner: no redirect.
    assert!(client.get("k").await.unwrap().is_some());
    assert_eq!(client.routing_stats().redirects, 1);
    // Two redirects at an older epoch are followed too (the request goes again).
    *owner.shared.redirect_to.lock().unwrap() = wrong.addr.to_string();
    owner.shared.redirect_epoch.store(3, Ordering::SeqCst);
    owner.shared.redirects_left.store(2, Ordering::SeqCst);
    owner.set_mode(Mode::Redirect);
    assert!(client.get("k").await.unwrap().is_some());
    assert_eq!(client.routing_stats().redirects, 3);
    // Neither server has a table to give (UNKNOWN_COMMAND): nothing was fetched.
    assert_eq!(client.routing_stats().table_fetches, 0);

    *wrong.shared.table.lock().unwrap() = Some(table(5, &[owner.addr], |_| (0, 9)));
    client.table().await.unwrap();
    let stats = client.routing_stats();
    assert!(stats.table_fetches >= 1, "{stats:?}");
    assert_eq!(stats.redirects, 3);
    // Clones share the counters.
    assert_eq!(client.clone().routing_stats(), client.routing_stats());
}

/// Two scripted nodes: the client fetches the table (every bucket on `a`), then a quarter of
/// the buckets move to `b` without a notice. Each moved bucket costs at most one redirect (the
/// first one names a newer epoch, so the client refetches the whole table), every key lands
/// on its owner, and non-idempotent writes are retried after a redirect.
#[tokio::test]
async fn a_stale_table_costs_at_most_one_redirect_per_moved_bucket_and_converges() {
    let a = TestServer::start(Mode::Good).await;
    let b = TestServer::start(Mode::Good).await;
    let nodes = [a.addr, b.addr];
    let moved = |bucket: u32| bucket.is_multiple_of(4);
    *a.shared.table.lock().unwrap() = Some(table(5, &nodes, |_| (0, 5)));
    let client = a.client(1_000, 5_000);
    client.set("first", "x", 0, 0).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || client.table_version() == 5).await);

    let after = table(9, &nodes, |bk| if moved(bk) { (1, 9) } else { (0, 5) });
    *a.shared.table.lock().unwrap() = Some(after.clone());
    *b.shared.table.lock().unwrap() = Some(after);
    *a.shared.redirect_to.lock().unwrap() = b.addr.to_string();
    a.shared.redirect_epoch.store(9, Ordering::SeqCst);
    *a.shared.redirect_buckets.lock().unwrap() = Some((0..1024).filter(|&bk| moved(bk)).collect());
    a.set_mode(Mode::Redirect);

    let keys: Vec<String> = (0..400).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        client.set(key, key, 0, 0).await.unwrap();
    }
    // INCR (not idempotent) is retried after a redirect: nothing was applied.
    let counter = (0..)
        .map(|i| format!("counter-{i}"))
        .find(|k| moved(shoal_proto::hash::bucket_of(k.as_bytes(), 1024)))
        .unwrap();
    assert_eq!(client.incr(&counter, 1, None).await.unwrap(), Some(1));

    let redirected = a.shared.redirected.lock().unwrap().clone();
    assert!(!redirected.is_empty());
    assert!(redirected.values().all(|&n| n == 1), "{redirected:?}");
    assert!(wait_until(Duration::from_secs(5), || client.table_version() == 9).await);
    let (on_a, on_b) = {
        let a_store = a.shared.store.lock().unwrap();
        let b_store = b.shared.store.lock().unwrap();
        let on_a: Vec<&String> = keys
            .iter()
            .filter(|k| a_store.contains_key(k.as_bytes()))
            .collect();
        let on_b: Vec<&String> = keys
            .iter()
            .filter(|k| b_store.contains_key(k.as_bytes()))
            .collect();
        (on_a.len(), on_b.len())
    };
    let want_b = keys
        .iter()
        .filter(|k| moved(shoal_proto::hash::bucket_of(k.as_bytes(), 1024)))
        .count();
    assert_eq!((on_a, on_b), (keys.len() - want_b, want_b));

    // Converged: another pass costs no redirect, and reads come back from the owners.
    let before = a.shared.redirected.lock().unwrap().values().sum::<usize>();
    for key in &keys {
        let item = client.get(key).await.unwrap();
        assert_eq!(item.unwrap().value, key.as_bytes(), "{key}");
    }
    assert_eq!(
        a.shared.redirected.lock().unwrap().values().sum::<usize>(),
        before
    );
}

#[tokio::test]
async fn shutting_down_notice_makes_the_next_call_use_a_new_connection() {
    let server = TestServer::start(Mode::NoticeAndClose).await;
    let client = server.client(1_000, 2_000);
    client.set("k", "v", 0, 0).await.unwrap();
    assert_eq!(server.mode(), Mode::NoticeAndClose);
    server.set_mode(Mode::Good);
    let item = client.get("k").await.unwrap().unwrap();
    assert_eq!(&item.value[..], b"v");
    assert_eq!(server.shared.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn goodbye_from_the_server_is_answered_and_the_next_call_reconnects() {
    let server = TestServer::start(Mode::GoodbyeAfterReply).await;
    let client = server.client(1_000, 2_000);
    client.set("k", "v", 0, 0).await.unwrap();
    server.set_mode(Mode::Good);
    assert!(client.get("k").await.unwrap().is_some());
    assert_eq!(server.shared.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_calls_share_one_connection_and_get_their_own_replies() {
    let server = TestServer::start(Mode::Good).await;
    let client = server.client(2_000, 5_000);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let client = client.clone();
        tasks.spawn(async move {
            for i in 0..200 {
                let key = format!("k{t}-{i}");
                client.set(&key, &key, 0, t).await.unwrap();
                let item = client.get(&key).await.unwrap().unwrap();
                assert_eq!(&item.value[..], key.as_bytes());
                assert_eq!(item.flags, t);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(server.shared.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn blocking_client_works_and_reports_errors_the_same_way() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(Mode::Good));
    let client = Client::builder()
        .seed(server.addr.to_string())
        .request_timeout(Duration::from_millis(300))
        .deadline(Duration::from_millis(300))
        .build_blocking()
        .unwrap();
    client.set("k", "v", 0, 9).unwrap();
    assert_eq!(client.get("k").unwrap().unwrap().flags, 9);
    assert_eq!(client.get("nope").unwrap(), None);
    server.set_mode(Mode::Stall);
    let start = Instant::now();
    assert!(client.get("k").unwrap_err().is_in_doubt());
    assert!(start.elapsed() < Duration::from_millis(300) + SLACK);
    server.set_mode(Mode::Good);
    assert_eq!(client.incr("n", 3, None).unwrap(), Some(3));
    drop(client);
}
