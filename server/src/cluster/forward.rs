//! Forwarding: a memcached text command runs on the node that serves its key.
//!
//! memcached clients know nothing of buckets, so any node's memcached port takes commands for
//! the whole keyspace; a command for a bucket this node does not serve travels to the
//! bucket's primary as a FORWARD request on the peer port, and the primary's reply bytes go
//! back to the client unchanged. This module owns both ends of that, and none of the text
//! protocol (which lives in `net/memcache`):
//!
//! - **The sending side:** [`send_once`] makes one attempt at a command: it finds the
//!   bucket's primary in the applied table and sends the command over one of a few pooled,
//!   pipelined peer connections to it (or runs it here when the primary is this node), and
//!   says what happened ([`Attempt`]); [`send_to`] does the same on a named member, and
//!   [`send_batch_to`] sends several commands for one owner in one FORWARD_BATCH.
//!   [`forward`] is the retry loop for one key, inside a deadline; multi-key and all-member
//!   callers build their own loop from these and [`wait_to_retry`].
//! - **The owning side:** [`Forwarding::run_local`] runs a forwarded command through the
//!   [`LocalRunner`] the data path installs at start; [`Forwarding::run_local_batch`] runs
//!   a FORWARD_BATCH's commands in order.
//!
//! What may be retried: a command that was not applied (the owner answered NOT_MINE, could
//! not be reached, or was not ready) is sent again once the table changed or after a short
//! backoff, until the deadline. A command that may have been applied (the connection failed
//! or the deadline passed after it was sent) is retried only when it is idempotent (a read);
//! otherwise the client is told it is in doubt. Nothing here ever turns a failure into a
//! miss or a value.

use super::in_sync::Held;
use super::lease::LEASE_RAN_OUT;
use super::peer::{PeerCallError, PeerClient, PeerIdentity, PeerOpcode};
use super::ClusterView;
use crate::datadir::NodeId;
use shoal_proto::peer::{
    encode_forward_batch, ForwardBatchReplies, ForwardReply, FORWARD_BATCH_REPLY_BUDGET,
};
use shoal_proto::Status;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Peer connections kept to each owner. A command's connection is picked by its bucket, so
/// commands for one key always travel in order on one connection.
const CONNECTIONS_PER_OWNER: usize = 2;
/// First pause before a retry; it doubles up to [`MAX_BACKOFF`] (a table change ends it
/// sooner).
const MIN_BACKOFF: Duration = Duration::from_millis(2);
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// How long an owner that could not be reached is not dialled again.
const DOWN_FOR: Duration = Duration::from_millis(100);

/// Runs one forwarded text command on this node (installed by the data path).
pub type LocalRunner = Arc<dyn Fn(&[u8]) -> Ran + Send + Sync>;

/// A command run on this node: what it gave, and what its reply must wait for.
pub struct Ran {
    /// What running it gave.
    pub executed: Executed,
    /// Completes when the reply may leave (an in-sync copy of the bucket holds the write;
    /// see [`super::in_sync`]), with `false` when the owner's lease ran out meanwhile (the
    /// command is in doubt); `None`: at once.
    pub after: Option<Held>,
}

impl From<Executed> for Ran {
    fn from(executed: Executed) -> Ran {
        Ran {
            executed,
            after: None,
        }
    }
}

/// What running a command on its owner gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    /// The reply bytes, exactly as the client is to get them (empty under noreply).
    Reply(Vec<u8>),
    /// A key's bucket is not served by the node that ran it; nothing was applied.
    NotMine {
        /// The bucket.
        bucket: u32,
        /// Its epoch in that node's applied table.
        epoch: u64,
    },
}

/// Why a command could not be run on its owner; the text a client sees after
/// `SERVER_ERROR `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// The bucket has no primary in the applied table.
    NoOwner {
        /// The bucket.
        bucket: u32,
    },
    /// The owner could not be reached (nothing was sent).
    Unreachable {
        /// The owner's peer address.
        owner: String,
        /// Why.
        cause: String,
    },
    /// The command was sent but no reply came: it may or may not have been applied.
    InDoubt {
        /// The owner's peer address.
        owner: String,
        /// What happened.
        cause: String,
    },
    /// The owner (or this node) is not ready to run forwarded commands.
    NotReady,
    /// The owner refused or failed the request.
    Failed {
        /// What the owner or the transport said.
        reason: String,
    },
    /// The deadline passed before the owner's table and this node's agreed on an owner.
    Moving {
        /// The bucket.
        bucket: u32,
    },
}

impl ForwardError {
    /// Whether the command was certainly not applied.
    pub fn not_applied(&self) -> bool {
        !matches!(self, ForwardError::InDoubt { .. })
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        match self {
            ForwardError::NoOwner { bucket } => {
                write!(f, "bucket {bucket} has no owner in the cluster table")
            }
            ForwardError::Unreachable { owner, cause } => {
                write!(f, "owner {owner} unreachable: {}", clean(cause))
            }
            ForwardError::InDoubt { owner, cause } => write!(
                f,
                "no reply from owner {owner} ({}); the command may have been applied",
                clean(cause)
            ),
            ForwardError::NotReady => f.write_str("owner not ready"),
            ForwardError::Failed { reason } => write!(f, "forwarding failed: {}", clean(reason)),
            ForwardError::Moving { bucket } => {
                write!(f, "bucket {bucket} is changing owner; try again")
            }
        }
    }
}

/// One attempt's outcome.
#[derive(Debug)]
pub enum Attempt {
    /// The owner ran the command: its reply bytes.
    Done(Vec<u8>),
    /// The node asked does not serve this bucket (nothing applied): retry once the tables
    /// agree.
    NotMine {
        /// The bucket.
        bucket: u32,
    },
    /// It failed; `error.not_applied()` tells whether it may be sent again.
    Failed(ForwardError),
}

/// The forwarding state of one node: who it is on the peer port, how it runs commands
/// here, and its connections to owners. Held by the node's [`ClusterView`].
#[derive(Default)]
pub struct Forwarding {
    identity: OnceLock<PeerIdentity>,
    local: OnceLock<LocalRunner>,
    /// Set when the node stops: forwarded commands are refused from then on. Commands run
    /// under the read lock, so setting it (the write lock) waits for the ones running.
    stopped: RwLock<bool>,
    owners: Mutex<HashMap<NodeId, Arc<Owner>>>,
}

impl fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarding")
            .field("dialer", &self.identity.get().is_some())
            .field("runner", &self.local.get().is_some())
            .finish()
    }
}

/// Connections to one owner.
struct Owner {
    addr: SocketAddr,
    clients: Vec<PeerClient>,
    /// Not dialled again before this instant (it could not be reached).
    down_until: Mutex<Option<Instant>>,
}

impl Forwarding {
    /// Lets this node send commands to owners, as `identity` on the peer port (set once, by
    /// the control plane).
    pub fn set_identity(&self, identity: PeerIdentity) {
        let _ = self.identity.set(identity);
    }

    /// Lets this node run forwarded commands (set once, by the data path).
    pub fn set_runner(&self, runner: LocalRunner) {
        let _ = self.local.set(runner);
    }

    /// Whether commands can be forwarded from here (a control plane runs and the data path
    /// serves).
    pub fn can_send(&self) -> bool {
        self.identity.get().is_some() && self.local.get().is_some()
    }

    /// Runs a forwarded command here.
    ///
    /// # Errors
    /// [`ForwardError::NotReady`] until the data path installed its runner, and from
    /// [`Forwarding::stop_running`] on (nothing applied: the sender may try again elsewhere).
    pub fn run_local(&self, command: &[u8]) -> Result<Ran, ForwardError> {
        let stopped = self.stopped.read().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return Err(ForwardError::NotReady);
        }
        let runner = self.local.get().ok_or(ForwardError::NotReady)?;
        Ok(runner(command))
    }

    /// Runs the commands of a FORWARD_BATCH here, in order, and returns the reply body (the
    /// replies of the commands run) and what it must wait for (in-sync copies, as
    /// [`Ran::after`]). It stops after the first NOT_MINE (nothing behind a
    /// command that was not applied is applied before it) and once the replies pass
    /// [`FORWARD_BATCH_REPLY_BUDGET`]; the sender sends the rest again. One check that the
    /// node still runs forwarded commands covers the whole batch.
    ///
    /// # Errors
    /// As [`Forwarding::run_local`], for the whole batch (nothing ran).
    pub fn run_local_batch(
        &self,
        commands: &[&[u8]],
    ) -> Result<(Vec<u8>, Option<Held>), ForwardError> {
        let stopped = self.stopped.read().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return Err(ForwardError::NotReady);
        }
        let runner = self.local.get().ok_or(ForwardError::NotReady)?;
        let mut replies = ForwardBatchReplies::new();
        let mut holds = Vec::new();
        for command in commands {
            if !replies.is_empty() && replies.len() >= FORWARD_BATCH_REPLY_BUDGET {
                break;
            }
            let ran = runner(command);
            holds.extend(ran.after);
            match ran.executed {
                Executed::Reply(bytes) => replies.push(&ForwardReply::Executed(&bytes)),
                Executed::NotMine { bucket, epoch } => {
                    replies.push(&ForwardReply::NotMine { bucket, epoch });
                    break;
                }
            }
        }
        let after = (!holds.is_empty()).then(|| -> Held {
            Box::pin(async move {
                let mut sure = true;
                for hold in holds {
                    sure &= hold.await;
                }
                sure
            })
        });
        Ok((replies.finish(), after))
    }

    /// Refuses forwarded commands from now on, once the ones running have finished: called
    /// when the node starts to stop, so that nothing is applied after its connections have
    /// drained and its savefile is being written.
    pub fn stop_running(&self) {
        *self.stopped.write().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// The pooled connections to `node` at `addr` (replaced when its address changed).
    fn owner(&self, node: NodeId, addr: SocketAddr, identity: &PeerIdentity) -> Arc<Owner> {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = owners.get(&node).filter(|o| o.addr == addr) {
            return o.clone();
        }
        let owner = Arc::new(Owner {
            addr,
            clients: (0..CONNECTIONS_PER_OWNER)
                .map(|_| PeerClient::new(addr, Some(node), identity.clone()))
                .collect(),
            down_until: Mutex::new(None),
        });
        owners.insert(node, owner.clone());
        owner
    }
}

/// One attempt at `command`, routed by `bucket` (for a multi-key command: the bucket of any
/// of its keys, all of which the caller found on one owner). Runs it here when this node is
/// the primary.
pub async fn send_once(
    view: &ClusterView,
    bucket: u32,
    command: &[u8],
    deadline: Instant,
) -> Attempt {
    let state = view.state();
    let Some(primary) = state.bucket(bucket).and_then(|b| b.primary) else {
        return Attempt::Failed(ForwardError::NoOwner { bucket });
    };
    drop(state);
    send_to(view, primary, bucket, command, deadline).await
}

/// One attempt at `command` on the member `node` (this node included); `bucket` picks the
/// connection, so commands for one bucket travel in order.
pub async fn send_to(
    view: &ClusterView,
    node: NodeId,
    bucket: u32,
    command: &[u8],
    deadline: Instant,
) -> Attempt {
    let forwarding = view.forwarding();
    if node == view.me() {
        let ran = match forwarding.run_local(command) {
            Ok(ran) => ran,
            Err(e) => return Attempt::Failed(e),
        };
        if let Some(after) = ran.after {
            if !after.await {
                return Attempt::Failed(ForwardError::InDoubt {
                    owner: "this node".into(),
                    cause: LEASE_RAN_OUT.into(),
                });
            }
        }
        return match ran.executed {
            Executed::Reply(bytes) => Attempt::Done(bytes),
            Executed::NotMine { bucket, .. } => Attempt::NotMine { bucket },
        };
    }
    let (body, owner) =
        match call_member(view, node, bucket, PeerOpcode::Forward, command, deadline).await {
            Ok(x) => x,
            Err(e) => return Attempt::Failed(e),
        };
    match ForwardReply::decode(&body) {
        Ok(ForwardReply::Executed(bytes)) => Attempt::Done(bytes.to_vec()),
        Ok(ForwardReply::NotMine { bucket, .. }) => Attempt::NotMine { bucket },
        Err(e) => Attempt::Failed(ForwardError::Failed {
            reason: format!("undecodable FORWARD reply from {owner}: {}", e.as_str()),
        }),
    }
}

/// One attempt at several commands on the member `node` (not this node), in one
/// FORWARD_BATCH; `bucket` picks the connection. `Ok` holds the replies of the commands the
/// owner ran, in order: fewer than sent when it stopped early (the rest did not run), and a
/// NOT_MINE only as the last one.
///
/// # Errors
/// The transport's or the owner's failure, for the whole batch; an undecodable reply is in
/// doubt (the commands may have run).
pub async fn send_batch_to(
    view: &ClusterView,
    node: NodeId,
    bucket: u32,
    commands: &[&[u8]],
    deadline: Instant,
) -> Result<Vec<Attempt>, ForwardError> {
    let mut body = Vec::with_capacity(4 + commands.iter().map(|c| c.len() + 4).sum::<usize>());
    encode_forward_batch(&mut body, commands.iter().copied());
    let (reply, owner) = call_member(
        view,
        node,
        bucket,
        PeerOpcode::ForwardBatch,
        &body,
        deadline,
    )
    .await?;
    let in_doubt = |cause: String| ForwardError::InDoubt {
        owner: owner.clone(),
        cause,
    };
    let replies = ForwardBatchReplies::decode(&reply)
        .map_err(|e| in_doubt(format!("undecodable FORWARD_BATCH reply: {}", e.as_str())))?;
    if replies.len() > commands.len() {
        return Err(in_doubt("more FORWARD_BATCH replies than commands".into()));
    }
    Ok(replies
        .into_iter()
        .map(|r| match r {
            ForwardReply::Executed(bytes) => Attempt::Done(bytes.to_vec()),
            ForwardReply::NotMine { bucket, .. } => Attempt::NotMine { bucket },
        })
        .collect())
}

/// Sends one peer request to the member `node` over the pooled connection that `bucket`
/// picks, within `deadline`: its OK reply body and the member's peer address (for errors).
async fn call_member(
    view: &ClusterView,
    node: NodeId,
    bucket: u32,
    op: PeerOpcode,
    body: &[u8],
    deadline: Instant,
) -> Result<(bytes::Bytes, String), ForwardError> {
    let forwarding = view.forwarding();
    let identity = forwarding.identity.get().ok_or(ForwardError::NotReady)?;
    let state = view.state();
    let Some(member) = state.nodes.get(&node) else {
        return Err(ForwardError::Failed {
            reason: format!("node {node} is not a member"),
        });
    };
    let addr_text = member.addrs.peer.clone();
    let Ok(addr) = addr_text.parse::<SocketAddr>() else {
        return Err(ForwardError::Unreachable {
            owner: addr_text,
            cause: "not a socket address".into(),
        });
    };
    drop(state);
    let owner = forwarding.owner(node, addr, identity);
    let now = Instant::now();
    {
        let down = owner
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if down.is_some_and(|until| now < until) {
            return Err(ForwardError::Unreachable {
                owner: addr_text,
                cause: "it did not answer a moment ago".into(),
            });
        }
    }
    let client = &owner.clients[bucket as usize % owner.clients.len()];
    let timeout = deadline.saturating_duration_since(now);
    match client.call(op, body.to_vec(), timeout).await {
        Ok(reply) => Ok((reply, addr_text)),
        Err(e) => {
            if matches!(e, PeerCallError::Unreachable { .. }) {
                *owner
                    .down_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + DOWN_FOR);
            }
            Err(call_error(addr_text, e))
        }
    }
}

/// What a failed peer call means for the command.
fn call_error(owner: String, e: PeerCallError) -> ForwardError {
    match e {
        PeerCallError::Unreachable { cause } => ForwardError::Unreachable { owner, cause },
        PeerCallError::Refused { reason } => ForwardError::Unreachable {
            owner,
            cause: format!("refused: {reason}"),
        },
        PeerCallError::Remote {
            status: Status::NotReady,
            ..
        } => ForwardError::NotReady,
        PeerCallError::Remote {
            status: Status::InDoubt,
            message,
        } => ForwardError::InDoubt {
            owner,
            cause: message,
        },
        PeerCallError::Timeout => ForwardError::InDoubt {
            owner,
            cause: "deadline passed".into(),
        },
        PeerCallError::Closed => ForwardError::InDoubt {
            owner,
            cause: "connection lost".into(),
        },
        PeerCallError::Remote { status, message } => ForwardError::Failed {
            reason: format!("{owner} answered {}: {message}", status.name()),
        },
        PeerCallError::Protocol { reason } => ForwardError::Failed { reason },
        PeerCallError::TooLarge { len } => ForwardError::Failed {
            reason: format!("command of {len} bytes is over the peer frame limit"),
        },
    }
}

/// Waits before attempt number `attempt` (1 for the first retry): until the applied table
/// changes (`table` was subscribed before the failed attempt) or a backoff passes. Returns
/// false when the deadline passes first.
pub async fn wait_to_retry(
    table: &mut tokio::sync::watch::Receiver<u64>,
    attempt: u32,
    deadline: Instant,
) -> bool {
    let backoff = MIN_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    let wake = (Instant::now() + backoff).min(deadline);
    tokio::select! {
        _ = table.changed() => {}
        _ = tokio::time::sleep_until(wake) => {}
    }
    Instant::now() < deadline
}

/// Runs a single-key command on its bucket's owner, retrying within `deadline` as the
/// module documentation says; `idempotent` commands are also retried after a reply was lost.
///
/// # Errors
/// The last failure once the deadline passed (or at once for a failure that no retry can
/// fix, such as an in-doubt write).
pub async fn forward(
    view: &ClusterView,
    bucket: u32,
    command: &[u8],
    idempotent: bool,
    deadline: Instant,
) -> Result<Vec<u8>, ForwardError> {
    let mut table = view.table_changes();
    let mut attempt = 0u32;
    loop {
        table.mark_unchanged();
        let error = match send_once(view, bucket, command, deadline).await {
            Attempt::Done(bytes) => return Ok(bytes),
            Attempt::NotMine { bucket } => ForwardError::Moving { bucket },
            Attempt::Failed(e) if e.not_applied() || idempotent => e,
            Attempt::Failed(e) => return Err(e),
        };
        attempt += 1;
        if !wait_to_retry(&mut table, attempt, deadline).await {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_stopping_node_refuses_forwarded_commands_without_running_them() {
        let forwarding = Forwarding::default();
        assert!(matches!(
            forwarding.run_local(b"get k\r\n"),
            Err(ForwardError::NotReady)
        ));
        let ran = Arc::new(AtomicU32::new(0));
        let counter = ran.clone();
        forwarding.set_runner(Arc::new(move |_: &[u8]| {
            counter.fetch_add(1, Ordering::SeqCst);
            Executed::Reply(b"END\r\n".to_vec()).into()
        }));
        assert!(matches!(
            forwarding.run_local(b"get k\r\n"),
            Ok(Ran {
                executed: Executed::Reply(_),
                after: None
            })
        ));
        forwarding.stop_running();
        let refused = forwarding.run_local(b"set k 0 0 1\r\nx\r\n");
        assert!(matches!(refused, Err(ForwardError::NotReady)));
        assert!(refused.is_err_and(|e| e.not_applied()));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_batch_runs_in_order_and_stops_after_a_command_that_is_not_mine() {
        let forwarding = Forwarding::default();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let log = ran.clone();
        forwarding.set_runner(Arc::new(move |command: &[u8]| {
            log.lock().expect("log").push(command.to_vec());
            let executed = if command.starts_with(b"get moved") {
                Executed::NotMine {
                    bucket: 4,
                    epoch: 9,
                }
            } else if command.starts_with(b"get big") {
                Executed::Reply(vec![b'x'; FORWARD_BATCH_REPLY_BUDGET])
            } else {
                Executed::Reply(command.to_ascii_uppercase())
            };
            executed.into()
        }));
        let decode = |(body, after): &(Vec<u8>, Option<Held>)| -> Vec<Vec<u8>> {
            assert!(after.is_none(), "no in-sync copy: nothing to wait for");
            ForwardBatchReplies::decode(body)
                .expect("reply")
                .into_iter()
                .map(|r| match r {
                    ForwardReply::Executed(b) => b.to_vec(),
                    ForwardReply::NotMine { bucket, epoch } => {
                        format!("NOT_MINE {bucket} {epoch}").into_bytes()
                    }
                })
                .collect()
        };
        let body = forwarding
            .run_local_batch(&[b"get a\r\n", b"set b 0 0 1\r\nx\r\n"])
            .expect("runs");
        assert_eq!(
            decode(&body),
            vec![b"GET A\r\n".to_vec(), b"SET B 0 0 1\r\nX\r\n".to_vec()]
        );
        // Nothing after a NOT_MINE runs.
        ran.lock().expect("log").clear();
        let body = forwarding
            .run_local_batch(&[b"get a\r\n", b"get moved\r\n", b"set a 0 0 1\r\ny\r\n"])
            .expect("runs");
        assert_eq!(
            decode(&body),
            vec![b"GET A\r\n".to_vec(), b"NOT_MINE 4 9".to_vec()]
        );
        assert_eq!(ran.lock().expect("log").len(), 2);
        // Past the reply budget, the rest waits for the next request.
        let body = forwarding
            .run_local_batch(&[b"get big\r\n", b"get a\r\n"])
            .expect("runs");
        assert_eq!(decode(&body).len(), 1);
        // A stopping node runs none of a batch.
        forwarding.stop_running();
        ran.lock().expect("log").clear();
        assert!(matches!(
            forwarding.run_local_batch(&[b"get a\r\n"]),
            Err(ForwardError::NotReady)
        ));
        assert!(ran.lock().expect("log").is_empty());
    }
}
