//! The peer port: how nodes reach each other (Raft, joining, and later replication).
//!
//! - [`secret`]: the cluster secret (`--cluster-secret-file`) and the rule that keeps a node
//!   without one off non-loopback addresses.
//! - [`handshake`]: the challenge-response both sides run before any other peer message
//!   (pure: no I/O).
//! - [`server`]: [`PeerServer`], the accept loop and per-connection request loop that hands
//!   each request to a [`PeerHandler`].
//! - [`client`]: [`PeerClient`], one remote node: connects lazily, multiplexes calls by request
//!   id, reconnects after a failure.
//! - `cut`: the fault-injection partition switch (SIGUSR1/SIGUSR2 in `fault-injection`
//!   builds), checked at accept, at every call, and by every live connection.
//!
//! The wire format (header, opcodes, bodies) is `shoal_proto::peer`.
//!
//! ```no_run
//! # async fn example(listener: tokio::net::TcpListener) {
//! use shoald::cluster::peer::*;
//! use shoald::datadir::{ClusterId, NodeId};
//! use std::time::Duration;
//! let (_cluster_tx, cluster_rx) = tokio::sync::watch::channel(Some(ClusterId::generate()));
//! let identity = PeerIdentity::new(NodeId::generate(), cluster_rx, ClusterSecret::none());
//! let server = PeerServer::new(listener, identity.clone(), PingOnly);
//! tokio::spawn(server.run(std::future::pending()));
//! let client = PeerClient::new("127.0.0.1:7402".parse().unwrap(), None, identity);
//! let pong = client.call(PeerOpcode::PeerPing, Vec::new(), Duration::from_secs(1)).await;
//! # }
//! ```

pub mod client;
mod cut;
pub mod handshake;
pub mod secret;
pub mod server;
mod wire;

#[cfg(test)]
mod tests;

pub use client::{PeerCallError, PeerClient};
pub use secret::{ClusterSecret, SecretError};
pub use server::{InOrder, PeerFailure, PeerHandler, PeerInfo, PeerLimits, PeerServer, PingOnly};
pub use shoal_proto::peer::PeerOpcode;

use crate::datadir::{ClusterId, NodeId};
use tokio::sync::watch;

/// Who this node is on the peer port: its node id, its cluster id (watched, so a joining
/// node's listener and dialers learn it when it is assigned), and the cluster secret.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's cluster id; `None` until the node created or joined a cluster.
    pub cluster_id: watch::Receiver<Option<ClusterId>>,
    /// The key both sides prove they hold.
    pub secret: ClusterSecret,
}

impl PeerIdentity {
    /// An identity from its parts.
    pub fn new(
        node_id: NodeId,
        cluster_id: watch::Receiver<Option<ClusterId>>,
        secret: ClusterSecret,
    ) -> Self {
        Self {
            node_id,
            cluster_id,
            secret,
        }
    }

    /// The cluster id right now.
    pub fn current_cluster(&self) -> Option<ClusterId> {
        *self.cluster_id.borrow()
    }
}
