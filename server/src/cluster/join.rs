//! Joining a cluster: the JOIN request a new (or restarted) node sends over the peer port,
//! the reply, and the leader's decision, as pure code.
//!
//! ```text
//!  joiner ──JOIN{node, cluster?, addrs, buckets}──► any member
//!         ◄── Redirect{leader}           (not the leader: ask the leader)
//!         ◄── Refused{reason}            (other cluster, other bucket count, removed id)
//!         ◄── Accepted{cluster, buckets} (the leader committed AddNode; Raft brings the
//!                                         node in as a learner, then a voter if needed)
//! ```
//!
//! A node is recognised by its id, never its address: a known id that joins again (a restart,
//! maybe on new ports) is updated in place, never added twice. Another id on a member's peer
//! address is that member's machine with a wiped data directory: the old id is removed (its
//! buckets are handed out again) and the new one added.

use super::state::{ClusterState, Command, NodeAddrs, NodeState};
use crate::datadir::{ClusterId, NodeId};
use serde::{Deserialize, Serialize};

/// A node asks to be a member (or announces new addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its id.
    pub node: NodeId,
    /// The cluster it belongs to, if it ever joined one.
    pub cluster: Option<ClusterId>,
    /// Where it listens.
    pub addrs: NodeAddrs,
    /// Its store's bucket count (must equal the cluster's).
    pub buckets: u32,
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// The node is (or stays) a member of this cluster.
    Accepted {
        /// The cluster's id.
        cluster: ClusterId,
    },
    /// Ask the leader, at this peer address.
    Redirect {
        /// The leader's peer address.
        leader: String,
    },
    /// Try again shortly (no leader known, or the cluster is still being created).
    Retry {
        /// Why.
        reason: String,
    },
    /// The node cannot be a member of this cluster.
    Refused {
        /// Why, for the node's one-line exit reason.
        reason: String,
    },
}

/// What the leader does with a join request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinPlan {
    /// Answer this, changing nothing.
    Reply(JoinReply),
    /// Commit these commands in order (none: already a member as announced), then accept.
    Commit(Vec<Command>),
}

/// Decides a join request against the applied state (on the leader).
pub fn plan_join(state: &ClusterState, req: &JoinRequest) -> JoinPlan {
    let refuse = |reason: String| JoinPlan::Reply(JoinReply::Refused { reason });
    let Some(cluster) = state.cluster_id else {
        return JoinPlan::Reply(JoinReply::Retry {
            reason: "the cluster is still being created".into(),
        });
    };
    if let Some(theirs) = req.cluster {
        if theirs != cluster {
            return refuse(format!(
                "node {} belongs to cluster {theirs}, this is cluster {cluster}",
                req.node
            ));
        }
    }
    if req.buckets != state.settings.buckets {
        return refuse(format!(
            "the cluster has {} buckets and the node {}: start it with --buckets {}",
            state.settings.buckets, req.buckets, state.settings.buckets
        ));
    }
    if state.removed.contains(&req.node) {
        return refuse(format!(
            "node {} was removed from the cluster; start it on an empty data directory",
            req.node
        ));
    }
    let add = Command::AddNode {
        node: req.node,
        addrs: req.addrs.clone(),
    };
    if let Some(member) = state.nodes.get(&req.node) {
        let mut commands = Vec::new();
        if member.addrs != req.addrs {
            commands.push(add);
        }
        // It stopped gracefully (and gave its vote away): it is back.
        if member.state == NodeState::Draining {
            commands.push(Command::SetNodeState {
                node: req.node,
                state: NodeState::Active,
            });
        }
        return JoinPlan::Commit(commands);
    }
    match state.node_at_peer(&req.addrs.peer) {
        Some(old) => JoinPlan::Commit(vec![
            Command::RemoveNode {
                node: old,
                heir: None,
            },
            add,
        ]),
        None => JoinPlan::Commit(vec![add]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Outcome, Settings};

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn addrs(port: u16) -> NodeAddrs {
        NodeAddrs {
            peer: format!("127.0.0.1:{port}"),
            native: format!("127.0.0.1:{}", port + 1),
            memcache: None,
            durable: true,
        }
    }

    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        let out = s.apply(
            1,
            &Command::Create {
                cluster_id: ClusterId([5; 16]),
                settings: Settings::default(),
                node: id(1),
                addrs: addrs(100),
                assign_all: true,
            },
        );
        assert_eq!(out, Outcome::Done);
        s
    }

    fn req(node: u8, cluster: Option<ClusterId>, port: u16) -> JoinRequest {
        JoinRequest {
            node: id(node),
            cluster,
            addrs: addrs(port),
            buckets: 1024,
        }
    }

    fn join(s: &mut ClusterState, r: JoinRequest) {
        let plan = plan_join(s, &r);
        let JoinPlan::Commit(cmds) = plan else {
            panic!("not a commit: {plan:?}")
        };
        for (i, c) in cmds.iter().enumerate() {
            let out = s.apply(10 + i as u64, c);
            assert!(matches!(out, Outcome::Done | Outcome::Unchanged), "{out:?}");
        }
    }

    #[test]
    fn a_new_node_is_added_once_and_a_known_one_updated() {
        let mut s = cluster();
        join(&mut s, req(2, None, 200));
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(
            plan_join(&s, &req(2, Some(ClusterId([5; 16])), 200)),
            JoinPlan::Commit(vec![])
        );
        join(&mut s, req(2, Some(ClusterId([5; 16])), 300));
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes[&id(2)].addrs, addrs(300));
        // A member that stopped gracefully (draining) is active again when it comes back.
        s.apply(
            20,
            &Command::SetNodeState {
                node: id(2),
                state: NodeState::Draining,
            },
        );
        join(&mut s, req(2, Some(ClusterId([5; 16])), 300));
        assert_eq!(s.nodes[&id(2)].state, NodeState::Active);
    }

    #[test]
    fn a_wiped_node_on_a_members_address_replaces_it() {
        let mut s = cluster();
        join(&mut s, req(2, None, 200));
        join(&mut s, req(3, None, 200));
        assert!(s.nodes.contains_key(&id(3)) && !s.nodes.contains_key(&id(2)));
        assert!(s.removed.contains(&id(2)));
        let JoinPlan::Reply(JoinReply::Refused { reason }) = plan_join(&s, &req(2, None, 400))
        else {
            panic!()
        };
        assert!(reason.contains("was removed"), "{reason}");
    }

    #[test]
    fn other_clusters_and_bucket_counts_are_refused() {
        let s = cluster();
        let JoinPlan::Reply(JoinReply::Refused { reason }) =
            plan_join(&s, &req(2, Some(ClusterId([6; 16])), 200))
        else {
            panic!()
        };
        assert!(reason.contains("belongs to cluster"), "{reason}");
        let mut r = req(2, None, 200);
        r.buckets = 512;
        let JoinPlan::Reply(JoinReply::Refused { reason }) = plan_join(&s, &r) else {
            panic!()
        };
        assert!(reason.contains("--buckets 1024"), "{reason}");
        assert!(matches!(
            plan_join(&ClusterState::default(), &r),
            JoinPlan::Reply(JoinReply::Retry { .. })
        ));
    }
}
