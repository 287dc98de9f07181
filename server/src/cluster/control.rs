//! Cluster admin requests (CLUSTER_ADMIN), from the data path to the control plane.
//!
//! ```text
//!  data runtime: native.rs ── ControlHandle::admin(req) ──mpsc──►  control-plane thread:
//!                    ▲                                              plan(state, req) -> Command
//!                    └──────────── oneshot: Ok(message) / AdminError ◄── Node::propose(cmd)
//! ```
//!
//! [`ControlHandle`] is the data path's end: a cloneable sender the control plane connects
//! at start ([`ControlHandle::connect`]); without one (a node with no control plane, unit
//! tests) every request answers [`AdminError::NoControlPlane`]. [`plan`] turns a request
//! into the [`Command`] to commit, by the applied state, and refuses what the state machine
//! would refuse, with a reason a person can act on; [`outcome`] says what committing it
//! did. Both are pure; the control plane runs them around `Node::propose`.

use super::state::{ClusterState, Command, NodeState, Outcome, Refusal, MAX_REPLICAS};
use crate::datadir::NodeId;
use shoal_proto::cluster::AdminRequest;
use shoal_proto::Status;
use std::fmt;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// How many admin requests may wait for the control plane at once.
const QUEUE: usize = 64;

/// One admin request on its way to the control plane, with where its answer goes.
pub type AdminJob = (AdminRequest, oneshot::Sender<Result<String, AdminError>>);

/// Why an admin request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// A node or bucket that does not exist.
    NotFound(String),
    /// The cluster as it stands refuses the change.
    Refused(String),
    /// No leader committed the change in time (nothing changed; try again).
    Unavailable(String),
    /// This node runs no control plane (or it stopped).
    NoControlPlane,
}

impl AdminError {
    /// The CLUSTER_ADMIN reply status that reports it.
    pub fn status(&self) -> Status {
        match self {
            AdminError::NotFound(_) => Status::NotFound,
            AdminError::Refused(_) => Status::NotStored,
            AdminError::Unavailable(_) => Status::Busy,
            AdminError::NoControlPlane => Status::ServerError,
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::NotFound(m) | AdminError::Refused(m) | AdminError::Unavailable(m) => {
                f.write_str(m)
            }
            AdminError::NoControlPlane => f.write_str("no control plane"),
        }
    }
}

impl std::error::Error for AdminError {}

/// The data path's way to the control plane (held in the
/// [`ClusterView`](super::ClusterView), so every clone reaches the same control plane).
#[derive(Debug, Clone, Default)]
pub struct ControlHandle {
    sender: Arc<OnceLock<mpsc::Sender<AdminJob>>>,
}

impl ControlHandle {
    /// Connects the control plane (once, at its start): returns the receiving end its task
    /// serves, or `None` when one is connected already.
    pub fn connect(&self) -> Option<mpsc::Receiver<AdminJob>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.sender.set(tx).ok().map(|()| rx)
    }

    /// Hands `req` to the control plane and waits for what it did: a message for the
    /// operator. Runs on any runtime.
    ///
    /// # Errors
    /// [`AdminError`]: refused, unknown node or bucket, no leader in time, or no control
    /// plane (none connected, or it stopped).
    pub async fn admin(&self, req: AdminRequest) -> Result<String, AdminError> {
        let sender = self.sender.get().ok_or(AdminError::NoControlPlane)?;
        let (tx, rx) = oneshot::channel();
        sender
            .send((req, tx))
            .await
            .map_err(|_| AdminError::NoControlPlane)?;
        rx.await.map_err(|_| AdminError::NoControlPlane)?
    }
}

/// The command that carries out `req` on the applied `state`, or why it cannot be done.
///
/// # Errors
/// [`AdminError::NotFound`] for an unknown node or a bucket out of range;
/// [`AdminError::Refused`] for a MOVE the state machine would refuse (the target not active
/// or already the primary, a move in progress, no primary).
pub fn plan(state: &ClusterState, req: &AdminRequest) -> Result<Command, AdminError> {
    let member = |id: [u8; 16]| {
        let node = NodeId(id);
        state
            .nodes
            .get(&node)
            .map(|m| (node, m.state))
            .ok_or_else(|| AdminError::NotFound(format!("no member has node id {node}")))
    };
    let bucket = |b: u32| {
        state.bucket(b).ok_or_else(|| {
            AdminError::NotFound(format!(
                "no bucket {b}: the cluster has {} buckets (0..={})",
                state.buckets.len(),
                state.buckets.len().saturating_sub(1)
            ))
        })
    };
    match *req {
        AdminRequest::Move { bucket: b, to } => {
            let current = bucket(b)?;
            let (to, to_state) = member(to)?;
            if to_state != NodeState::Active {
                return Err(AdminError::Refused(format!(
                    "node {} is {}, not active: it cannot take buckets",
                    to,
                    to_state.name()
                )));
            }
            if let Some(m) = current.moving {
                return Err(AdminError::Refused(format!(
                    "bucket {b}: a move is in progress (to node {}); cancel it first",
                    m.to
                )));
            }
            match current.primary {
                None => Err(AdminError::Refused(format!(
                    "bucket {b} has no primary to move it from"
                ))),
                Some(p) if p == to => Err(AdminError::Refused(format!(
                    "node {} is already the primary of bucket {b}",
                    to
                ))),
                Some(_) => Ok(Command::StartMove {
                    bucket: b,
                    epoch: current.epoch,
                    version: current.version,
                    to,
                }),
            }
        }
        AdminRequest::CancelMove { bucket: b } => {
            bucket(b)?;
            Ok(Command::CancelMove {
                bucket: b,
                move_id: None,
            })
        }
        AdminRequest::Drain { node } => {
            let (node, _) = member(node)?;
            Ok(Command::SetNodeState {
                node,
                state: NodeState::Draining,
            })
        }
        AdminRequest::Pause(paused) => Ok(Command::SetPaused(paused)),
        AdminRequest::StopCluster => Ok(Command::StopCluster),
        AdminRequest::SetReplicas(n) if n > MAX_REPLICAS => Err(AdminError::Refused(format!(
            "{n} replicas: at most {MAX_REPLICAS} per bucket"
        ))),
        AdminRequest::SetReplicas(n) => Ok(Command::SetReplicas(n)),
    }
}

/// What committing `cmd` (planned from `req`) did, as the operator is told: `Ok(message)`
/// for a change made (or already in place), `Err` for a refusal. A [`Outcome::Stale`] is
/// not handled here: the caller plans again once its state caught up.
///
/// # Errors
/// [`AdminError`] for a command the state machine refused.
pub fn outcome(req: &AdminRequest, outcome: &Outcome) -> Result<String, AdminError> {
    let refused = |r: &Refusal| match r {
        Refusal::UnknownNode(n) => AdminError::NotFound(format!("no member has node id {n}")),
        Refusal::NoSuchBucket(b) => AdminError::NotFound(format!("no bucket {b}")),
        Refusal::NotEligible(n) => AdminError::Refused(format!(
            "node {} cannot take the bucket now (not active, already its primary, or a move \
             is in progress)",
            n
        )),
        other => AdminError::Refused(format!("the cluster refused the change: {other:?}")),
    };
    let changed = matches!(outcome, Outcome::Done);
    match outcome {
        Outcome::Refused(r) => return Err(refused(r)),
        Outcome::Stale { bucket, .. } => {
            return Err(AdminError::Unavailable(format!(
                "bucket {bucket} kept changing; try again"
            )))
        }
        Outcome::Done | Outcome::Unchanged => {}
    }
    Ok(match *req {
        AdminRequest::Move { bucket, to } => {
            format!("bucket {bucket}: move to node {} started", NodeId(to))
        }
        AdminRequest::CancelMove { bucket } if changed => {
            format!("bucket {bucket}: move cancelled")
        }
        AdminRequest::CancelMove { bucket } => {
            format!("bucket {bucket}: no move in progress; nothing to cancel")
        }
        AdminRequest::Drain { node } if changed => format!(
            "node {} is draining: it gets no new buckets, hands its own away and stops",
            NodeId(node)
        ),
        AdminRequest::Drain { node } => {
            format!("node {} was already draining", NodeId(node))
        }
        AdminRequest::Pause(true) if changed => "bucket movement paused".to_string(),
        AdminRequest::Pause(true) => "bucket movement was already paused".to_string(),
        AdminRequest::Pause(false) if changed => "bucket movement resumed".to_string(),
        AdminRequest::Pause(false) => "bucket movement was not paused".to_string(),
        AdminRequest::StopCluster if changed => {
            "the cluster is stopping: every node saves its buckets and exits".to_string()
        }
        AdminRequest::StopCluster => "the cluster was already stopping".to_string(),
        AdminRequest::SetReplicas(n) if changed => format!(
            "replicas set to {n}: copies are added or dropped in the background (see status)"
        ),
        AdminRequest::SetReplicas(n) => format!("replicas were already {n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::fixtures::{addrs, created_by};

    const A: NodeId = NodeId([1; 16]);
    const B: NodeId = NodeId([2; 16]);
    const C: NodeId = NodeId([3; 16]);

    /// A, B and C active; A owns all 4 buckets.
    fn state() -> ClusterState {
        let mut s = created_by(A, 4, true);
        for (i, n) in [B, C].into_iter().enumerate() {
            let i = i as u64;
            s.apply(
                2 + 2 * i,
                &Command::AddNode {
                    node: n,
                    addrs: addrs(n.0[0]),
                },
            );
            s.apply(
                3 + 2 * i,
                &Command::SetNodeState {
                    node: n,
                    state: NodeState::Active,
                },
            );
        }
        s
    }

    fn refused(r: Result<Command, AdminError>) -> String {
        match r {
            Err(AdminError::Refused(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_move_is_planned_on_the_buckets_current_epoch_and_version_and_applies() {
        let mut s = state();
        let req = AdminRequest::Move { bucket: 2, to: B.0 };
        let cmd = plan(&s, &req).unwrap();
        assert_eq!(
            cmd,
            Command::StartMove {
                bucket: 2,
                epoch: 1,
                version: 1,
                to: B
            }
        );
        let done = s.apply(10, &cmd);
        assert!(outcome(&req, &done).unwrap().contains("started"));
        // Now in progress: a second move is refused, to any node.
        let m = refused(plan(&s, &AdminRequest::Move { bucket: 2, to: C.0 }));
        assert!(m.contains("a move is in progress"), "{m}");
        // Cancelled, it can start again.
        let cancel = AdminRequest::CancelMove { bucket: 2 };
        let cmd = plan(&s, &cancel).unwrap();
        let done = s.apply(11, &cmd);
        assert_eq!(outcome(&cancel, &done).unwrap(), "bucket 2: move cancelled");
        let again = s.apply(12, &cmd);
        assert!(outcome(&cancel, &again)
            .unwrap()
            .contains("nothing to cancel"));
        assert!(plan(&s, &AdminRequest::Move { bucket: 2, to: C.0 }).is_ok());
    }

    #[test]
    fn moves_the_cluster_would_refuse_are_refused_with_the_reason() {
        let mut s = state();
        let m = refused(plan(&s, &AdminRequest::Move { bucket: 0, to: A.0 }));
        assert!(m.contains("already the primary of bucket 0"), "{m}");
        let unknown = AdminRequest::Move {
            bucket: 0,
            to: [7; 16],
        };
        assert!(
            matches!(plan(&s, &unknown), Err(AdminError::NotFound(m)) if m.contains("no member"))
        );
        let far = AdminRequest::Move { bucket: 4, to: B.0 };
        let e = plan(&s, &far).unwrap_err();
        assert_eq!(e.status(), Status::NotFound);
        assert!(e.to_string().contains("no bucket 4"), "{e}");
        s.apply(
            20,
            &Command::SetNodeState {
                node: C,
                state: NodeState::Draining,
            },
        );
        let m = refused(plan(&s, &AdminRequest::Move { bucket: 0, to: C.0 }));
        assert!(m.contains("draining, not active"), "{m}");
        s.buckets[1].primary = None;
        let m = refused(plan(&s, &AdminRequest::Move { bucket: 1, to: B.0 }));
        assert!(m.contains("no primary"), "{m}");
        // What the leader refuses (its state ahead of ours) reads as a refusal too.
        let e = outcome(&far, &Outcome::Refused(Refusal::NotEligible(B))).unwrap_err();
        assert_eq!(e.status(), Status::NotStored);
    }

    #[test]
    fn drain_pause_and_resume_say_what_changed() {
        let mut s = state();
        let drain = AdminRequest::Drain { node: B.0 };
        let cmd = plan(&s, &drain).unwrap();
        let done = s.apply(30, &cmd);
        assert!(outcome(&drain, &done).unwrap().contains("is draining"));
        let again = s.apply(31, &cmd);
        assert!(outcome(&drain, &again)
            .unwrap()
            .contains("already draining"));
        assert!(matches!(
            plan(&s, &AdminRequest::Drain { node: [8; 16] }),
            Err(AdminError::NotFound(_))
        ));
        let pause = AdminRequest::Pause(true);
        let cmd = plan(&s, &pause).unwrap();
        assert_eq!(cmd, Command::SetPaused(true));
        let done = s.apply(32, &cmd);
        assert_eq!(outcome(&pause, &done).unwrap(), "bucket movement paused");
        let resume = AdminRequest::Pause(false);
        let done = s.apply(33, &plan(&s, &resume).unwrap());
        assert_eq!(outcome(&resume, &done).unwrap(), "bucket movement resumed");
        let done = s.apply(34, &plan(&s, &resume).unwrap());
        assert_eq!(
            outcome(&resume, &done).unwrap(),
            "bucket movement was not paused"
        );
    }

    #[tokio::test]
    async fn without_a_control_plane_every_request_says_so() {
        let handle = ControlHandle::default();
        let e = handle.admin(AdminRequest::Pause(true)).await.unwrap_err();
        assert_eq!(e, AdminError::NoControlPlane);
        assert_eq!(e.to_string(), "no control plane");
        assert_eq!(e.status(), Status::ServerError);
        // Connected once; a second connect is refused; a stopped control plane says so.
        let rx = handle.connect().expect("first connect");
        assert!(handle.clone().connect().is_none());
        drop(rx);
        let e = handle.admin(AdminRequest::Pause(true)).await.unwrap_err();
        assert_eq!(e, AdminError::NoControlPlane);
    }

    #[tokio::test]
    async fn a_request_is_answered_by_the_task_that_serves_the_receiver() {
        let handle = ControlHandle::default();
        let mut rx = handle.connect().expect("connect");
        let serve = tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let _ = reply.send(Ok(format!("did {req:?}")));
            }
        });
        let got = handle.admin(AdminRequest::Pause(false)).await;
        assert_eq!(got, Ok("did Pause(false)".to_string()));
        serve.abort();
    }
}
