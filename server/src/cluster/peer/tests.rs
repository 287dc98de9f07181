//! PeerServer and PeerClient together, over real loopback sockets (port 0).

use super::*;
use crate::datadir::{ClusterId, NodeId};
use bytes::Bytes;
use shoal_proto::Status;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Barrier};

const LONG: Duration = Duration::from_secs(10);

/// Echoes RAFT_APPEND and JOIN bodies reversed; RAFT_VOTE waits at a barrier (to prove
/// concurrency); RAFT_SNAPSHOT never answers; remembers the addresses it served.
struct TestHandler {
    barrier: Arc<Barrier>,
    calls: AtomicUsize,
    addrs: std::sync::Mutex<Vec<SocketAddr>>,
}

impl TestHandler {
    fn new(barrier: usize) -> Self {
        Self {
            barrier: Arc::new(Barrier::new(barrier)),
            calls: AtomicUsize::new(0),
            addrs: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl PeerHandler for Arc<TestHandler> {
    fn handle(
        &self,
        from: &PeerInfo,
        op: PeerOpcode,
        body: Bytes,
    ) -> impl Future<Output = Result<Vec<u8>, PeerFailure>> + Send {
        let this = self.clone();
        let from = *from;
        async move {
            this.calls.fetch_add(1, Ordering::SeqCst);
            this.addrs.lock().unwrap().push(from.addr);
            match op {
                PeerOpcode::RaftVote => {
                    this.barrier.wait().await;
                    Ok(body.to_vec())
                }
                PeerOpcode::RaftSnapshot => std::future::pending().await,
                PeerOpcode::Join if from.joining => Ok(b"welcome".to_vec()),
                _ => Ok(body.iter().rev().copied().collect()),
            }
        }
    }
}

/// A node's identity with its own cluster-id sender.
struct Node {
    identity: PeerIdentity,
    cluster: watch::Sender<Option<ClusterId>>,
}

fn node(cluster: Option<ClusterId>, secret: &[u8]) -> Node {
    let (tx, rx) = watch::channel(cluster);
    Node {
        identity: PeerIdentity::new(NodeId::generate(), rx, ClusterSecret::from_bytes(secret)),
        cluster: tx,
    }
}

/// A running PeerServer; stopped (and awaited) by [`Running::stop`].
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

async fn serve_on<H: PeerHandler>(
    listener: TcpListener,
    identity: &PeerIdentity,
    handler: H,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let server = PeerServer::new(listener, identity.clone(), handler).with_limits(PeerLimits {
        handshake_timeout: Duration::from_secs(2),
        ..PeerLimits::default()
    });
    assert_eq!(server.local_addr().unwrap(), addr);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

async fn serve<H: PeerHandler>(identity: &PeerIdentity, handler: H) -> Running {
    serve_on(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        identity,
        handler,
    )
    .await
}

#[tokio::test]
async fn calls_are_answered_and_ping_is_answered_by_the_server() {
    let c = Some(ClusterId::generate());
    let (a, b) = (node(c, b"s"), node(c, b"s"));
    let handler = Arc::new(TestHandler::new(1));
    let server = serve(&a.identity, handler.clone()).await;
    let client = PeerClient::new(server.addr, Some(a.identity.node_id), b.identity.clone());
    assert_eq!(client.connected_node().await, None);
    let pong = client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await;
    assert_eq!(pong, Ok(Bytes::new()));
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        0,
        "ping never reaches the handler"
    );
    let reply = client
        .call(PeerOpcode::RaftAppend, b"abc".to_vec(), LONG)
        .await;
    assert_eq!(reply, Ok(Bytes::from_static(b"cba")));
    assert_eq!(client.connected_node().await, Some(a.identity.node_id));
    // The handshake requests are not requests once connected.
    let again = client.call(PeerOpcode::PeerHello, Vec::new(), LONG).await;
    assert!(
        matches!(
            again,
            Err(PeerCallError::Remote {
                status: Status::BadRequest,
                ..
            })
        ),
        "{again:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_node_that_is_not_ready_answers_ping_and_not_ready() {
    let c = Some(ClusterId::generate());
    let (a, b) = (node(c, b""), node(c, b""));
    let server = serve(&a.identity, PingOnly).await;
    let client = PeerClient::new(server.addr, None, b.identity.clone());
    assert_eq!(
        client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await,
        Ok(Bytes::new())
    );
    match client
        .call(PeerOpcode::RaftVote, b"{}".to_vec(), LONG)
        .await
    {
        Err(PeerCallError::Remote { status, message }) => {
            assert_eq!(status, Status::NotReady);
            assert!(
                message.contains("RAFT_VOTE") && message.contains("not running"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_connection_run_concurrently() {
    const N: usize = 16;
    let c = Some(ClusterId::generate());
    let (a, b) = (node(c, b"s"), node(c, b"s"));
    let handler = Arc::new(TestHandler::new(N));
    let server = serve(&a.identity, handler.clone()).await;
    let client = PeerClient::new(server.addr, None, b.identity.clone());
    // Every RAFT_VOTE waits until all N are being handled: they complete only if the server
    // runs them at once, on the one connection the client shares.
    let calls: Vec<_> = (0..N)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(
                async move { client.call(PeerOpcode::RaftVote, vec![i as u8], LONG).await },
            )
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(Bytes::from(vec![i as u8])));
    }
    let addrs = handler.addrs.lock().unwrap().clone();
    assert_eq!(addrs.len(), N);
    assert!(
        addrs.iter().all(|a| *a == addrs[0]),
        "one connection: {addrs:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_call_times_out_and_the_connection_goes_on() {
    let c = Some(ClusterId::generate());
    let (a, b) = (node(c, b"s"), node(c, b"s"));
    let server = serve(&a.identity, Arc::new(TestHandler::new(1))).await;
    let client = PeerClient::new(server.addr, None, b.identity.clone());
    let started = Instant::now();
    let r = client
        .call(
            PeerOpcode::RaftSnapshot,
            Vec::new(),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r, Err(PeerCallError::Timeout));
    assert!(started.elapsed() < LONG);
    assert_eq!(
        client
            .call(PeerOpcode::RaftAppend, b"xy".to_vec(), LONG)
            .await,
        Ok(Bytes::from_static(b"yx"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_reconnects_after_the_server_restarts() {
    let c = Some(ClusterId::generate());
    let (a, b) = (node(c, b"s"), node(c, b"s"));
    let server = serve(&a.identity, Arc::new(TestHandler::new(1))).await;
    let addr = server.addr;
    let client = PeerClient::new(addr, Some(a.identity.node_id), b.identity.clone());
    assert!(client
        .call(PeerOpcode::PeerPing, Vec::new(), LONG)
        .await
        .is_ok());
    server.stop().await;
    // The server is gone: calls fail (the connection closed, then nothing listens).
    let deadline = Instant::now() + LONG;
    loop {
        match client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await {
            Err(PeerCallError::Unreachable { .. }) => break,
            Err(PeerCallError::Closed) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the client never saw the server gone"
        );
        tokio::task::yield_now().await;
    }
    // The same node comes back on the same address: the next call reconnects.
    let server = serve_on(
        TcpListener::bind(addr).await.unwrap(),
        &a.identity,
        Arc::new(TestHandler::new(1)),
    )
    .await;
    assert_eq!(
        client
            .call(PeerOpcode::RaftAppend, b"ab".to_vec(), LONG)
            .await,
        Ok(Bytes::from_static(b"ba"))
    );
    server.stop().await;
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let b = node(None, b"s");
    let client = PeerClient::new(free, None, b.identity.clone());
    let r = client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await;
    assert!(matches!(r, Err(PeerCallError::Unreachable { .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains(&free.to_string()));
}

#[tokio::test]
async fn handshake_refusals_reach_the_caller() {
    let c = Some(ClusterId::generate());
    let a = node(c, b"secret");
    let server = serve(&a.identity, Arc::new(TestHandler::new(1))).await;
    let refused = |r: Result<Bytes, PeerCallError>| match r {
        Err(PeerCallError::Refused { reason }) => reason,
        other => panic!("not refused: {other:?}"),
    };
    // Wrong secret, no secret: the dialer refuses the listener's proof.
    for secret in [&b"other"[..], b""] {
        let b = node(c, secret);
        let client = PeerClient::new(server.addr, None, b.identity.clone());
        let reason = refused(client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await);
        assert!(reason.contains("authentication failed"), "{reason}");
    }
    // Wrong cluster: the listener refuses.
    let b = node(Some(ClusterId::generate()), b"secret");
    let client = PeerClient::new(server.addr, None, b.identity.clone());
    let reason = refused(client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await);
    assert!(
        reason.starts_with("WRONG_CLUSTER: wrong cluster"),
        "{reason}"
    );
    // Wrong node.
    let b = node(c, b"secret");
    let client = PeerClient::new(server.addr, Some(NodeId::generate()), b.identity.clone());
    let reason = refused(client.call(PeerOpcode::PeerPing, Vec::new(), LONG).await);
    assert!(reason.starts_with("WRONG_NODE: wrong node"), "{reason}");
    // The listener still serves the right peer afterwards.
    let client = PeerClient::new(server.addr, Some(a.identity.node_id), b.identity.clone());
    assert!(client
        .call(PeerOpcode::PeerPing, Vec::new(), LONG)
        .await
        .is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_joining_node_may_only_join_and_ping_until_it_has_a_cluster() {
    let c = ClusterId::generate();
    let member = node(Some(c), b"s");
    let newcomer = node(None, b"s");
    let server = serve(&member.identity, Arc::new(TestHandler::new(1))).await;
    let client = PeerClient::new(server.addr, None, newcomer.identity.clone());
    assert!(client
        .call(PeerOpcode::PeerPing, Vec::new(), LONG)
        .await
        .is_ok());
    assert_eq!(
        client.call(PeerOpcode::Join, Vec::new(), LONG).await,
        Ok(Bytes::from_static(b"welcome"))
    );
    match client.call(PeerOpcode::RaftAppend, Vec::new(), LONG).await {
        Err(PeerCallError::Remote { status, message }) => {
            assert_eq!(status, Status::WrongCluster);
            assert!(message.contains("only JOIN and PEER_PING"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The node is given the cluster id: the client reconnects as a member.
    newcomer.cluster.send_replace(Some(c));
    assert_eq!(
        client
            .call(PeerOpcode::RaftAppend, b"12".to_vec(), LONG)
            .await,
        Ok(Bytes::from_static(b"21"))
    );
    server.stop().await;
}
