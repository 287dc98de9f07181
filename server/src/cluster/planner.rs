//! Decisions the Raft leader takes from the applied state, as pure functions: how to spread
//! buckets over members, and which members vote. No I/O and no clock; the leader turns each
//! decision into a [`Command`] (or a membership change) and proposes it.

use super::state::{Assignment, ClusterState, Command, NodeState};
use crate::datadir::NodeId;
use std::collections::BTreeSet;

/// Voters a cluster keeps: 3, or 5 once it has at least 5 members; never more than members.
pub fn voter_target(members: usize) -> usize {
    if members >= 5 {
        5
    } else {
        members.min(3)
    }
}

/// The voter set the leader should move to: the current voters that are still active
/// members, topped up (in id order) with other active members up to [`voter_target`]
/// (joining members are still catching up; draining ones are leaving). Returns `None` when
/// the current set is already right.
pub fn desired_voters(
    state: &ClusterState,
    current: &BTreeSet<NodeId>,
) -> Option<BTreeSet<NodeId>> {
    let eligible: Vec<NodeId> = state
        .nodes
        .iter()
        .filter(|(_, m)| m.state == NodeState::Active)
        .map(|(id, _)| *id)
        .collect();
    let target = voter_target(eligible.len()).max(1);
    let mut voters: BTreeSet<NodeId> = current
        .iter()
        .filter(|id| eligible.contains(id))
        .copied()
        .take(target)
        .collect();
    for id in &eligible {
        if voters.len() >= target {
            break;
        }
        voters.insert(*id);
    }
    if voters.is_empty() || voters == *current {
        None
    } else {
        Some(voters)
    }
}

/// The member that should take the vote of `leaving` (a voter that is stopping): the first
/// active, durable member (in id order) that does not vote yet. `None` when there is none:
/// the voter then stops without a replacement, and the cluster keeps its majority only if
/// the other voters are up.
pub fn replacement_voter(
    state: &ClusterState,
    voters: &BTreeSet<NodeId>,
    leaving: NodeId,
) -> Option<NodeId> {
    state
        .nodes
        .iter()
        .find(|(id, m)| {
            **id != leaving
                && !voters.contains(id)
                && m.state == NodeState::Active
                && m.addrs.durable
        })
        .map(|(id, _)| *id)
}

/// An even spread of every bucket over `owners` (sorted, deduplicated): bucket `b` goes to
/// `owners[b % n]`, so counts differ by at most one. As compare-and-sets against `state`;
/// buckets already in place are left out. Empty when there are no owners.
pub fn spread_evenly(state: &ClusterState, owners: &[NodeId]) -> Option<Command> {
    let owners: Vec<NodeId> = owners
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if owners.is_empty() {
        return None;
    }
    let assignments: Vec<Assignment> = state
        .buckets
        .iter()
        .enumerate()
        .filter_map(|(b, bucket)| {
            let primary = owners[b % owners.len()];
            (bucket.primary != Some(primary)).then_some(Assignment {
                bucket: b as u32,
                epoch: bucket.epoch,
                version: bucket.version,
                primary,
            })
        })
        .collect();
    (!assignments.is_empty()).then_some(Command::Assign(assignments))
}

/// Gives every bucket without a primary (its owner was removed) to the active member that
/// owns the fewest, one bucket at a time (ties by id), as one compare-and-set command. None
/// while the cluster is still forming (the initial spread does that), when nothing is
/// orphaned, or when no member is active.
pub fn assign_orphans(state: &ClusterState) -> Option<Command> {
    if state.forming {
        return None;
    }
    let mut load: Vec<(usize, NodeId)> = state
        .owned_counts()
        .into_iter()
        .filter(|(id, _)| {
            state
                .nodes
                .get(id)
                .is_some_and(|m| m.state == NodeState::Active)
        })
        .map(|(id, n)| (n, id))
        .collect();
    if load.is_empty() {
        return None;
    }
    let mut assignments = Vec::new();
    for (b, bucket) in state.buckets.iter().enumerate() {
        if bucket.primary.is_some() {
            continue;
        }
        load.sort();
        let (n, primary) = &mut load[0];
        *n += 1;
        assignments.push(Assignment {
            bucket: b as u32,
            epoch: bucket.epoch,
            version: bucket.version,
            primary: *primary,
        });
    }
    (!assignments.is_empty()).then_some(Command::Assign(assignments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{NodeAddrs, Outcome, Settings};
    use crate::datadir::ClusterId;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn state_with(members: u8, buckets: u32) -> ClusterState {
        let addrs = |n: u8| NodeAddrs {
            peer: format!("p{n}"),
            native: format!("n{n}"),
            memcache: None,
            durable: true,
        };
        let mut s = ClusterState::default();
        s.apply(
            1,
            &Command::Create {
                cluster_id: ClusterId([1; 16]),
                settings: Settings {
                    buckets,
                    ..Settings::default()
                },
                node: id(1),
                addrs: addrs(1),
                assign_all: false,
            },
        );
        for n in 2..=members {
            s.apply(
                u64::from(n),
                &Command::AddNode {
                    node: id(n),
                    addrs: addrs(n),
                },
            );
        }
        s
    }

    #[test]
    fn voter_targets() {
        let t: Vec<usize> = (0..8).map(voter_target).collect();
        assert_eq!(t, vec![0, 1, 2, 3, 3, 5, 5, 5]);
    }

    #[test]
    fn voters_are_kept_and_topped_up() {
        let mut s = state_with(5, 4);
        for n in 2..=4 {
            s.apply(
                10 + u64::from(n),
                &Command::SetNodeState {
                    node: id(n),
                    state: NodeState::Active,
                },
            );
        }
        let current: BTreeSet<NodeId> = [id(4)].into();
        let want = desired_voters(&s, &current).unwrap();
        assert_eq!(want, [id(1), id(2), id(4)].into());
        assert_eq!(desired_voters(&s, &want), None);
        // A voter that left the membership is replaced.
        let gone: BTreeSet<NodeId> = [id(1), id(2), id(9)].into();
        assert_eq!(
            desired_voters(&s, &gone).unwrap(),
            [id(1), id(2), id(3)].into()
        );
    }

    #[test]
    fn a_stopping_voter_is_replaced_by_an_active_durable_non_voter() {
        let mut s = state_with(4, 4);
        for n in 2..=4 {
            s.apply(
                10 + u64::from(n),
                &Command::SetNodeState {
                    node: id(n),
                    state: NodeState::Active,
                },
            );
        }
        let voters: BTreeSet<NodeId> = [id(1), id(2), id(3)].into();
        assert_eq!(replacement_voter(&s, &voters, id(2)), Some(id(4)));
        let all: BTreeSet<NodeId> = [id(1), id(2), id(3), id(4)].into();
        assert_eq!(replacement_voter(&s, &all, id(2)), None);
    }

    #[test]
    fn orphans_go_to_the_least_loaded_active_members_once_formed() {
        let mut s = state_with(3, 8);
        assert!(s.forming);
        assert_eq!(assign_orphans(&s), None, "the initial spread's job");
        let spread = spread_evenly(&s, &[id(1), id(2)]).unwrap();
        assert_eq!(s.apply(10, &spread), Outcome::Done);
        assert!(!s.forming);
        s.apply(
            11,
            &Command::SetNodeState {
                node: id(3),
                state: NodeState::Active,
            },
        );
        s.apply(
            12,
            &Command::RemoveNode {
                node: id(1),
                heir: None,
            },
        );
        let cmd = assign_orphans(&s).unwrap();
        assert_eq!(s.apply(13, &cmd), Outcome::Done);
        let counts = s.owned_counts();
        assert_eq!(counts[&id(2)], 4);
        assert_eq!(counts[&id(3)], 4);
        assert_eq!(assign_orphans(&s), None);
    }

    proptest! {
        /// Any member count and power-of-two bucket count: the spread applies, every bucket
        /// gets one of the owners, and counts differ by at most one; spreading again changes
        /// nothing.
        #[test]
        fn spread_is_even_and_stable(members in 1u8..8, shift in 0u32..11) {
            let buckets = 1u32 << shift;
            let mut s = state_with(members, buckets);
            let owners: Vec<NodeId> = (1..=members).map(id).collect();
            let cmd = spread_evenly(&s, &owners).unwrap();
            prop_assert_eq!(s.apply(100, &cmd), Outcome::Done);
            let counts = s.owned_counts();
            let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
            prop_assert!(max - min <= 1);
            prop_assert_eq!(counts.values().sum::<usize>(), buckets as usize);
            prop_assert!(spread_evenly(&s, &owners).is_none());
        }
    }
}
