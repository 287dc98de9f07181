//! The replication stream to one replica node: the REPLICATE changes of every bucket this
//! node replicates there travel together, several buckets per REPLICATE_BATCH request.
//!
//! ```text
//!  bucket tasks (replicate.rs) ── call(REPLICATE body) ──► queue ──► batcher task
//!       ▲                                                              │ takes what queued
//!       └──────── each request's own reply ◄── REPLICATE_BATCH ◄──────┘ (up to BATCH_BYTES)
//! ```
//!
//! Each bucket's task still sends one request at a time and waits for its reply, so a
//! bucket's changes stay in order; what changes is that requests of many buckets share one
//! peer request and one reply. While [`IN_FLIGHT`] batches are on the wire, new requests
//! wait in the queue and leave together in the next one: the busier the node, the larger
//! the batches. A failed batch fails every request in it the way a failed REPLICATE would.

use crate::cluster::peer::{PeerCallError, PeerClient, PeerOpcode};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Batches on the wire at once per replica node.
const IN_FLIGHT: usize = 2;

/// Most REPLICATE bytes in one batch (a single larger request goes alone).
const BATCH_BYTES: usize = 4 << 20;

/// Most requests in one batch.
const BATCH_REQUESTS: usize = 1024;

/// One REPLICATE request waiting for a batch.
struct Queued {
    body: Vec<u8>,
    timeout: Duration,
    reply: oneshot::Sender<Result<Bytes, PeerCallError>>,
}

/// The sending end of one replica node's stream. Cheap to clone; the batcher task ends once
/// every clone is gone.
#[derive(Debug, Clone)]
pub struct Stream {
    queue: mpsc::UnboundedSender<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// A stream over `client` (a connection to one replica node); starts its batcher task
    /// on the current runtime.
    pub fn new(client: PeerClient) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(client, rx));
        Self { queue }
    }

    /// Sends one REPLICATE request `body` with the next batch and returns its reply, or
    /// fails as a REPLICATE call would (`Timeout` when no reply came within `timeout`).
    ///
    /// # Errors
    /// See [`PeerCallError`].
    pub async fn call(&self, body: Vec<u8>, timeout: Duration) -> Result<Bytes, PeerCallError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Queued {
                body,
                timeout,
                reply,
            })
            .map_err(|_| PeerCallError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PeerCallError::Closed),
            Err(_) => Err(PeerCallError::Timeout),
        }
    }
}

/// Takes whatever is queued (once a batch may go on the wire) and sends it as one
/// REPLICATE_BATCH, until every [`Stream`] handle is gone.
async fn batcher(client: PeerClient, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot lets more requests queue up behind `first`.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        while bytes < BATCH_BYTES && batch.len() < BATCH_REQUESTS {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.body.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            send(&client, batch).await;
            drop(slot);
        });
    }
}

/// Sends `batch` as one REPLICATE_BATCH and hands each request its reply.
async fn send(client: &PeerClient, batch: Vec<Queued>) {
    // Requests whose caller gave up already are left out.
    let batch: Vec<Queued> = batch.into_iter().filter(|q| !q.reply.is_closed()).collect();
    if batch.is_empty() {
        return;
    }
    let timeout = batch
        .iter()
        .map(|q| q.timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    let mut body = Vec::with_capacity(4 + batch.iter().map(|q| 4 + q.body.len()).sum::<usize>());
    super::wire::encode_batch(&mut body, batch.iter().map(|q| q.body.as_slice()));
    let replies = match client.call(PeerOpcode::ReplicateBatch, body, timeout).await {
        Ok(reply) => reply,
        Err(e) => {
            for q in batch {
                let _ = q.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    match super::wire::decode_batch_reply(&replies, batch.len()) {
        Ok(decoded) => {
            for (q, (status, body)) in batch.into_iter().zip(decoded) {
                let result = if status == shoal_proto::Status::Ok {
                    Ok(replies.slice_ref(body))
                } else {
                    Err(PeerCallError::Remote {
                        status,
                        message: String::from_utf8_lossy(body).into_owned(),
                    })
                };
                let _ = q.reply.send(result);
            }
        }
        Err(e) => {
            for q in batch {
                let _ = q.reply.send(Err(PeerCallError::Protocol {
                    reason: format!("REPLICATE_BATCH reply: {e}"),
                }));
            }
        }
    }
}
