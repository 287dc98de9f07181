//! Raft's messages over the peer port: openraft's network traits on [`PeerClient`]s, and the
//! receiving side's dispatch into the local Raft.
//!
//! Requests and replies are JSON (the control plane is a few kilobytes and changes only on
//! membership or ownership changes). A remote Raft error travels back inside an OK reply as
//! `Err(..)`, so the sending Raft sees exactly what the receiving one said; transport failures
//! become openraft's `Unreachable` (back off) or `Network` (retry) errors.
//!
//! Peer addresses come from the applied cluster state, never from openraft's membership
//! (its node record is empty): a member that comes back on new ports announces them with a
//! JOIN, the leader commits them, and the next call here dials the new address. The dialler
//! names the node it expects, so an address now used by another node is refused by the
//! handshake (the split brain openraft's docs warn of).

use super::types::{Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::cluster::peer::{PeerCallError, PeerClient, PeerIdentity, PeerOpcode};
use crate::cluster::ClusterView;
use crate::datadir::NodeId;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::EmptyNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The peer clients of one node, one per member, dialled at the address the applied state
/// gives. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    identity: PeerIdentity,
    view: ClusterView,
    clients: Arc<Mutex<HashMap<NodeId, PeerClient>>>,
}

impl Peers {
    /// The peers of the node with `identity`, addressed by `view`'s applied state.
    pub fn new(identity: PeerIdentity, view: ClusterView) -> Peers {
        Peers {
            identity,
            view,
            clients: Arc::default(),
        }
    }

    /// A client for member `node` at its applied peer address; `None` when the applied state
    /// does not know the node or its address does not parse. A client whose address is out of
    /// date is replaced.
    pub fn member(&self, node: NodeId) -> Option<PeerClient> {
        let state = self.view.state();
        let addr: SocketAddr = state.nodes.get(&node)?.addrs.peer.parse().ok()?;
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(&node) {
            if c.addr() == addr {
                return Some(c.clone());
            }
        }
        let client = PeerClient::new(addr, Some(node), self.identity.clone());
        clients.insert(node, client.clone());
        Some(client)
    }

    /// A client for an address whose node is not known (a seed), not kept.
    pub fn seed(&self, addr: SocketAddr) -> PeerClient {
        PeerClient::new(addr, None, self.identity.clone())
    }
}

/// openraft's network factory: one [`Connection`] per replication target.
pub struct Network {
    peers: Peers,
    backoff: Duration,
}

impl Network {
    /// A factory over `peers`, whose connections wait `backoff` before they call a member
    /// that could not be reached again (the heartbeat interval: a member that accepts and
    /// closes every connection would otherwise be called, and an error logged, in a tight
    /// loop).
    pub fn new(peers: Peers, backoff: Duration) -> Network {
        Network { peers, backoff }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> Connection {
        Connection {
            target,
            peers: self.peers.clone(),
            backoff: self.backoff,
        }
    }
}

/// Raft's link to one other member; dials lazily, on each call, at the address the applied
/// state gives then.
pub struct Connection {
    target: NodeId,
    peers: Peers,
    backoff: Duration,
}

/// The target is not in the applied state (yet), so there is no address to dial.
#[derive(Debug)]
struct NoAddress(NodeId);

impl std::fmt::Display for NoAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no peer address known for node {}", self.0)
    }
}

impl std::error::Error for NoAddress {}

/// A whole snapshot in one peer message (the state is a few tens of kilobytes).
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotMessage {
    vote: Vote,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// How a call failed below Raft: no address, the transport, or an undecodable reply.
enum CallError {
    Unreachable(Unreachable),
    Network(NetworkError),
}

impl<E: std::error::Error> From<CallError> for RPCError<NodeId, EmptyNode, E> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(e),
            CallError::Network(e) => RPCError::Network(e),
        }
    }
}

impl From<CallError> for StreamingError<TypeConfig, Fatal<NodeId>> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(e) => StreamingError::Unreachable(e),
            CallError::Network(e) => StreamingError::Network(e),
        }
    }
}

impl Connection {
    /// Sends `req` as `op` and decodes the reply: the remote Raft's own `Result`.
    async fn call<Req, Resp, E>(
        &self,
        op: PeerOpcode,
        req: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, E>, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let client = self
            .peers
            .member(self.target)
            .ok_or_else(|| CallError::Unreachable(Unreachable::new(&NoAddress(self.target))))?;
        let body =
            serde_json::to_vec(req).map_err(|e| CallError::Network(NetworkError::new(&e)))?;
        let reply = client.call(op, body, timeout).await.map_err(|e| match e {
            // Closed: the member accepted the connection and ended it before answering
            // (stopping, or cut off); calling it again at once would only fail again.
            PeerCallError::Unreachable { .. }
            | PeerCallError::Refused { .. }
            | PeerCallError::Closed => CallError::Unreachable(Unreachable::new(&e)),
            _ => CallError::Network(NetworkError::new(&e)),
        })?;
        serde_json::from_slice(&reply).map_err(|e| CallError::Network(NetworkError::new(&e)))
    }

    /// [`Connection::call`] for requests whose remote error is a [`RaftError`].
    async fn rpc<Req, Resp>(
        &self,
        op: PeerOpcode,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, EmptyNode, RaftError<NodeId>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.call::<Req, Resp, RaftError<NodeId>>(op, req, timeout)
            .await?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, EmptyNode, RaftError<NodeId>>> {
        self.rpc(PeerOpcode::RaftAppend, &rpc, option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let message = SnapshotMessage {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let send = self.call::<_, SnapshotResponse<NodeId>, Fatal<NodeId>>(
            PeerOpcode::RaftSnapshot,
            &message,
            option.hard_ttl(),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result?
                .map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, EmptyNode, RaftError<NodeId>>> {
        self.rpc(PeerOpcode::RaftVote, &rpc, option.hard_ttl())
            .await
    }
}

/// Hands a Raft request that arrived on the peer port to the local Raft and encodes its
/// answer (`Ok` or the Raft error) as the reply body.
///
/// # Errors
/// The body does not decode (the caller answers BAD_REQUEST).
pub async fn serve_raft(raft: &Raft, op: PeerOpcode, body: &[u8]) -> Result<Vec<u8>, String> {
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("undecodable Raft request: {e}"))
    }
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| format!("cannot encode the Raft reply: {e}"))
    }
    match op {
        PeerOpcode::RaftAppend => encode(&raft.append_entries(decode(body)?).await),
        PeerOpcode::RaftVote => encode(&raft.vote(decode(body)?).await),
        PeerOpcode::RaftSnapshot => {
            let message: SnapshotMessage = decode(body)?;
            let snapshot = Snapshot {
                meta: message.meta,
                snapshot: Box::new(std::io::Cursor::new(message.data)),
            };
            encode(&raft.install_full_snapshot(message.vote, snapshot).await)
        }
        other => Err(format!("{} is not a Raft request", other.name())),
    }
}
