//! The accept loop: connection limit, accept-error backoff, and spawning one task per
//! connection. Shared by both protocols; `make_session` picks the protocol.

use super::conn::{drive, ConnLimits};
use super::{Session, Shared};
use crate::stats::ServerStats;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

/// Shortest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after repeated failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Everything one accept loop needs.
pub(crate) struct Listener<F> {
    /// The bound socket.
    pub listener: TcpListener,
    /// Builds the protocol session for a new connection.
    pub make_session: F,
    /// Bytes written to a connection refused at the limit, before it is closed.
    pub refusal: Vec<u8>,
    /// Shared with the other listener: one pool of connection slots for the node.
    pub slots: Arc<Semaphore>,
    /// Per-connection limits.
    pub limits: ConnLimits,
    /// Store, counters, protocol limits.
    pub shared: Shared,
    /// Flips to `true` when the node stops.
    pub shutdown: watch::Receiver<bool>,
    /// Held by every connection task; the server waits until all are dropped.
    pub done: mpsc::Sender<()>,
}

impl<F, S> Listener<F>
where
    F: Fn(Shared) -> S,
    S: Session + 'static,
{
    /// Accepts until shutdown. Accept errors (EMFILE, ENFILE, ...) are counted and followed by
    /// an increasing pause, so a process out of descriptors recovers instead of spinning.
    pub(crate) async fn run(mut self) {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.changed() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (mut stream, peer) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(err) => {
                    ServerStats::incr(&self.shared.keyspace.stats().accept_errors);
                    tracing::warn!(cause = %err, pause_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = self.shutdown.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                ServerStats::incr(&self.shared.keyspace.stats().rejected_connections);
                let refusal = self.refusal.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(200), async {
                        let _ = stream.write_all(&refusal).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                });
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stats = self.shared.keyspace.stats().clone();
            ServerStats::incr(&stats.total_connections);
            ServerStats::incr(&stats.curr_connections);
            let session = (self.make_session)(self.shared.clone());
            let shared = self.shared.clone();
            let limits = self.limits;
            let shutdown = self.shutdown.clone();
            let done = self.done.clone();
            tokio::spawn(async move {
                tracing::debug!(%peer, "connection opened");
                drive(stream, session, shared, limits, shutdown).await;
                stats
                    .curr_connections
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                drop(permit);
                drop(done);
            });
        }
    }
}
