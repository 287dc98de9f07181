//! Decisions the Raft leader takes from the applied state, as pure functions: how to spread
//! buckets over members, which buckets to move (and which moves to give up), and which
//! members vote. No I/O and no clock; the leader turns each
//! decision into a [`Command`] (or a membership change) and proposes it.

use super::state::{Assignment, ClusterState, Command, NodeState};
use crate::datadir::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// Whether `id` is an active member (one that may be given buckets and copies).
fn is_active(state: &ClusterState, id: &NodeId) -> bool {
    state
        .nodes
        .get(id)
        .is_some_and(|m| m.state == NodeState::Active)
}

/// Every active member, each with a count of 0 (for the planners to fill).
fn active_members(state: &ClusterState) -> BTreeMap<NodeId, usize> {
    state
        .nodes
        .iter()
        .filter(|(_, m)| m.state == NodeState::Active)
        .map(|(id, _)| (*id, 0))
        .collect()
}

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

/// The bucket moves to start now: every bucket whose primary is not an active member
/// (draining ones first) goes to an active member, and buckets go from the most loaded
/// active members to the least loaded until their counts differ by at most one. As
/// [`Command::StartMove`]s, each a compare-and-set on its bucket's current epoch and version.
///
/// A bucket with a move in progress counts as its target's already and is never given a
/// second move, so calling this again while moves run continues the same plan instead of
/// undoing it. Moves in progress plus the new ones stay within `max_moves`. Each move goes to
/// the active member with the fewest buckets (ties by id) and, when balancing, comes from the
/// most loaded one (ties by id), highest bucket number first. Buckets without a primary are
/// [`assign_orphans`]'s. Empty while the cluster is forming or paused, or has no active
/// member.
pub fn plan_moves(state: &ClusterState, max_moves: usize) -> Vec<Command> {
    if state.forming || state.settings.paused {
        return Vec::new();
    }
    let is_active = |id: &NodeId| is_active(state, id);
    let mut load = active_members(state);
    let in_flight = state.buckets.iter().filter(|b| b.moving.is_some()).count();
    let mut budget = max_moves.saturating_sub(in_flight);
    if load.is_empty() || budget == 0 {
        return Vec::new();
    }
    // Who holds each bucket once the moves in progress are done, and what can move now.
    let mut movable: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
    let mut leaving: Vec<(bool, u32)> = Vec::new();
    for (b, bucket) in state.buckets.iter().enumerate() {
        let b = b as u32;
        let owner = bucket.moving.map(|m| m.to).or(bucket.primary);
        if let Some(n) = owner.and_then(|o| load.get_mut(&o)) {
            *n += 1;
        }
        match (bucket.primary, bucket.moving) {
            (Some(p), None) if is_active(&p) => movable.entry(p).or_default().push(b),
            (Some(p), None) => {
                let draining = state
                    .nodes
                    .get(&p)
                    .is_some_and(|m| m.state == NodeState::Draining);
                leaving.push((!draining, b));
            }
            _ => {}
        }
    }
    // Draining members' buckets first, then other inactive primaries; highest number first.
    leaving.sort_by_key(|(later, b)| (*later, std::cmp::Reverse(*b)));
    // How good a target `to` is for `bucket`, best first: an in-sync replica (the move is a
    // promotion: nothing is copied), a member holding no copy, a replica still being built
    // (its copy is dropped and made again).
    let rank = |bucket: u32, to: &NodeId| {
        let b = &state.buckets[bucket as usize];
        if b.in_sync.contains(to) {
            0
        } else if !b.replicas.contains(to) {
            1
        } else {
            2
        }
    };
    let least_loaded = |load: &BTreeMap<NodeId, usize>| {
        load.iter()
            .min_by_key(|(id, n)| (**n, **id))
            .map(|(id, n)| (*id, *n))
    };
    let mut moves = Vec::new();
    let mut start = |bucket: u32, to: NodeId| {
        let b = &state.buckets[bucket as usize];
        moves.push(Command::StartMove {
            bucket,
            epoch: b.epoch,
            version: b.version,
            to,
        });
    };
    for (_, bucket) in leaving {
        if budget == 0 {
            break;
        }
        // A leaving bucket goes to its in-sync replica if it has one (a promotion, no copy),
        // else to the least loaded member.
        let Some(to) = load
            .iter()
            .min_by_key(|(id, n)| (rank(bucket, id), **n, **id))
            .map(|(id, _)| *id)
        else {
            break;
        };
        start(bucket, to);
        *load.entry(to).or_default() += 1;
        budget -= 1;
    }
    while budget > 0 {
        let Some((to, min)) = least_loaded(&load) else {
            break;
        };
        let mut donors: Vec<(usize, NodeId)> = load
            .iter()
            .filter(|(id, n)| **n >= min + 2 && movable.get(*id).is_some_and(|v| !v.is_empty()))
            .map(|(id, n)| (*n, *id))
            .collect();
        donors.sort_by_key(|(n, id)| (std::cmp::Reverse(*n), *id));
        let Some(&(_, from)) = donors.first() else {
            break;
        };
        let Some(list) = movable.get_mut(&from) else {
            break;
        };
        // The best-ranked bucket for `to` (highest number first among equals).
        let Some(pos) = (0..list.len()).rev().min_by_key(|i| rank(list[*i], &to)) else {
            break;
        };
        let bucket = list.remove(pos);
        start(bucket, to);
        *load.entry(from).or_default() -= 1;
        *load.entry(to).or_default() += 1;
        budget -= 1;
    }
    moves
}

/// Replica copies built at once per move allowed (`--max-moves`): a copy costs what a move
/// does in bandwidth (they share the node's budget) but parks nothing and hands nothing over,
/// and most of a new cluster's copies are of empty buckets.
pub const BUILDS_PER_MOVE: usize = 4;

/// The replica changes to make now, so that every bucket with a primary has
/// `settings.replicas` copies on other active members (fewer when there are not enough
/// members): replicas on members that are not active are dropped (once the bucket has its
/// count of in-sync copies elsewhere, or at once when the node is gone), extra replicas are
/// dropped (those not in sync first), and missing ones are added on the active member
/// holding the fewest replica copies (ties by id), never the primary or a move's target.
/// Copies being built (replicas not in sync) stay within `max_builds`, counting those in
/// progress; drops are not limited. As compare-and-set [`Command::AddReplica`]s and
/// [`Command::DropReplica`]s. Empty while the cluster is forming, paused or stopping.
pub fn plan_replicas(state: &ClusterState, max_builds: usize) -> Vec<Command> {
    if state.forming || state.settings.paused || state.settings.stopping {
        return Vec::new();
    }
    let is_active = |id: &NodeId| is_active(state, id);
    let mut copies = active_members(state);
    let want = (state.settings.replicas as usize).min(copies.len().saturating_sub(1));
    for b in &state.buckets {
        for r in &b.replicas {
            if let Some(n) = copies.get_mut(r) {
                *n += 1;
            }
        }
    }
    let building: usize = state.buckets.iter().map(|b| b.building()).sum();
    let mut budget = max_builds.saturating_sub(building);
    let mut out = Vec::new();
    for (i, b) in state.buckets.iter().enumerate() {
        let bucket = i as u32;
        let Some(primary) = b.primary else {
            continue;
        };
        let (good, bad): (Vec<NodeId>, Vec<NodeId>) = b.replicas.iter().partition(|r| is_active(r));
        let good_in_sync = good.iter().filter(|r| b.in_sync.contains(r)).count();
        let mut drops: Vec<NodeId> = bad
            .into_iter()
            .filter(|r| !state.nodes.contains_key(r) || good_in_sync >= want)
            .collect();
        if good.len() > want {
            let mut extra = good.clone();
            // Not in sync first, then the most loaded.
            extra.sort_by_key(|r| {
                (
                    b.in_sync.contains(r),
                    std::cmp::Reverse(copies.get(r).copied().unwrap_or(0)),
                    *r,
                )
            });
            drops.extend(extra.into_iter().take(good.len() - want));
        }
        for node in drops {
            if let Some(n) = copies.get_mut(&node) {
                *n -= 1;
            }
            out.push(Command::DropReplica { bucket, node });
        }
        if good.len() < want && budget > 0 {
            let taken = |id: &NodeId| {
                *id == primary || b.replicas.contains(id) || b.moving.is_some_and(|m| m.to == *id)
            };
            let to = copies
                .iter()
                .filter(|(id, _)| !taken(id))
                .min_by_key(|(id, n)| (**n, **id))
                .map(|(id, _)| *id);
            if let Some(node) = to {
                *copies.entry(node).or_default() += 1;
                budget -= 1;
                out.push(Command::AddReplica {
                    bucket,
                    epoch: b.epoch,
                    version: b.version,
                    node,
                });
            }
        }
    }
    out
}

/// The moves to cancel: those whose target is no longer an active member (draining,
/// joining, or gone) or whose bucket has no primary that is a member, as
/// [`Command::CancelMove`]s naming each move (so a move started since is left alone).
pub fn stale_moves(state: &ClusterState) -> Vec<Command> {
    state
        .buckets
        .iter()
        .enumerate()
        .filter_map(|(b, bucket)| {
            let m = bucket.moving?;
            let target_ok = state
                .nodes
                .get(&m.to)
                .is_some_and(|n| n.state == NodeState::Active);
            let primary_ok = bucket.primary.is_some_and(|p| state.nodes.contains_key(&p));
            (!target_ok || !primary_ok).then_some(Command::CancelMove {
                bucket: b as u32,
                move_id: Some(m.id),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::fixtures::{addrs, created_by};
    use crate::cluster::state::{Bucket, Outcome};
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn state_with(members: u8, buckets: u32) -> ClusterState {
        let mut s = created_by(id(1), buckets, false);
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

    /// Members 1..=`states.len()` in those states; bucket `b` owned by `id(owners[b])`.
    /// Returns the state and the next free log index.
    fn owned(states: &[NodeState], owners: &[u8]) -> (ClusterState, u64) {
        let mut s = state_with(states.len() as u8, owners.len() as u32);
        let assign = Command::Assign(
            owners
                .iter()
                .enumerate()
                .map(|(b, n)| Assignment {
                    bucket: b as u32,
                    epoch: 0,
                    version: 0,
                    primary: id(*n),
                })
                .collect(),
        );
        assert_eq!(s.apply(100, &assign), Outcome::Done);
        assert!(!s.forming);
        let mut index = 101;
        for (n, state) in states.iter().enumerate() {
            s.apply(
                index,
                &Command::SetNodeState {
                    node: id(n as u8 + 1),
                    state: *state,
                },
            );
            index += 1;
        }
        (s, index)
    }

    /// `(bucket, to)` of each planned move.
    fn targets(moves: &[Command]) -> Vec<(u32, NodeId)> {
        moves
            .iter()
            .map(|m| match m {
                Command::StartMove { bucket, to, .. } => (*bucket, *to),
                other => panic!("not a start: {other:?}"),
            })
            .collect()
    }

    /// Applies every command in turn from `index`, each of which must be done.
    fn apply_all(s: &mut ClusterState, index: &mut u64, cmds: &[Command]) {
        for cmd in cmds {
            assert_eq!(s.apply(*index, cmd), Outcome::Done, "{cmd:?}");
            *index += 1;
        }
    }

    use NodeState::{Active, Draining, Joining};

    #[test]
    fn nothing_moves_while_forming_or_paused_or_without_active_members() {
        let forming = state_with(3, 8);
        assert!(forming.forming);
        assert!(plan_moves(&forming, 4).is_empty());
        let (mut s, index) = owned(&[Active, Active], &[1; 8]);
        assert_eq!(plan_moves(&s, 4).len(), 4);
        assert!(plan_moves(&s, 0).is_empty());
        s.apply(index, &Command::SetPaused(true));
        assert!(plan_moves(&s, 4).is_empty());
        let (s, _) = owned(&[Draining, Joining], &[1, 2, 1, 2]);
        assert!(plan_moves(&s, 4).is_empty());
    }

    #[test]
    fn a_draining_members_buckets_go_first_to_the_least_loaded() {
        // Node 1 (draining) owns 0..4, nodes 2 and 3 two each.
        let (s, _) = owned(&[Draining, Active, Active], &[1, 1, 1, 1, 2, 2, 3, 3]);
        let moves = plan_moves(&s, 3);
        assert_eq!(
            targets(&moves),
            vec![(3, id(2)), (2, id(3)), (1, id(2))],
            "ties go to the lower id"
        );
        assert_eq!(
            moves[0],
            Command::StartMove {
                bucket: 3,
                epoch: 100,
                version: 100,
                to: id(2)
            }
        );
        assert_eq!(
            targets(&plan_moves(&s, 8)),
            vec![(3, id(2)), (2, id(3)), (1, id(2)), (0, id(3))]
        );
    }

    #[test]
    fn buckets_go_from_the_most_loaded_to_a_new_member() {
        let (s, _) = owned(&[Active, Active, Active], &[1, 1, 1, 1, 1, 2, 2, 2]);
        assert_eq!(targets(&plan_moves(&s, 8)), vec![(4, id(3)), (3, id(3))]);
        let (even, _) = owned(&[Active, Active, Active], &[1, 1, 1, 2, 2, 2, 3, 3]);
        assert!(plan_moves(&even, 8).is_empty());
    }

    #[test]
    fn moves_in_progress_count_for_their_target_and_against_the_limit() {
        let (mut s, mut index) = owned(&[Active, Active], &[1; 8]);
        let first = plan_moves(&s, 3);
        assert_eq!(targets(&first), vec![(7, id(2)), (6, id(2)), (5, id(2))]);
        apply_all(&mut s, &mut index, &first);
        assert!(plan_moves(&s, 3).is_empty(), "the limit is reached");
        // A higher limit continues the plan with other buckets, and no further.
        let second = plan_moves(&s, 8);
        assert_eq!(targets(&second), vec![(4, id(2))]);
        apply_all(&mut s, &mut index, &second);
        assert!(plan_moves(&s, 8).is_empty());
        // Finishing them changes nothing: the plan is done.
        for b in 4..8 {
            let move_id = s.buckets[b].moving.unwrap().id;
            let finish = Command::FinishMove {
                bucket: b as u32,
                move_id,
            };
            apply_all(&mut s, &mut index, &[finish]);
        }
        assert!(plan_moves(&s, 8).is_empty());
        assert_eq!(s.owned_counts().into_values().collect::<Vec<_>>(), [4, 4]);
    }

    #[test]
    fn moves_to_members_that_stopped_being_active_are_stale() {
        let (mut s, mut index) = owned(&[Active, Active, Active, Active], &[1; 8]);
        let moves = plan_moves(&s, 3);
        assert_eq!(targets(&moves), vec![(7, id(2)), (6, id(3)), (5, id(4))]);
        apply_all(&mut s, &mut index, &moves);
        assert!(stale_moves(&s).is_empty());
        let to = |node, state| Command::SetNodeState { node, state };
        apply_all(
            &mut s,
            &mut index,
            &[to(id(2), Draining), to(id(3), Joining)],
        );
        let ids = |b: usize| s.buckets[b].moving.unwrap().id;
        assert_eq!(
            stale_moves(&s),
            vec![
                Command::CancelMove {
                    bucket: 6,
                    move_id: Some(ids(6))
                },
                Command::CancelMove {
                    bucket: 7,
                    move_id: Some(ids(7))
                },
            ]
        );
        let cancels = stale_moves(&s);
        apply_all(&mut s, &mut index, &cancels);
        assert!(stale_moves(&s).is_empty());
        assert_eq!(s.buckets[5].moving.map(|m| m.to), Some(id(4)));
    }

    /// Plans, starts and finishes moves until the planner has nothing more, checking the
    /// limit and that a second plan never repeats the first; returns the rounds taken.
    fn settle(
        s: &mut ClusterState,
        index: &mut u64,
        max_moves: usize,
        finish_all: bool,
        max_rounds: usize,
    ) -> Result<usize, TestCaseError> {
        for round in 0..max_rounds {
            let in_flight =
                |s: &ClusterState| s.buckets.iter().filter(|b| b.moving.is_some()).count();
            let budget = max_moves.saturating_sub(in_flight(s));
            let plan = plan_moves(s, max_moves);
            if plan.is_empty() && in_flight(s) == 0 {
                return Ok(round);
            }
            prop_assert_eq!(plan_moves(s, max_moves), plan.clone(), "not stable");
            for (bucket, to) in targets(&plan) {
                let b = &s.buckets[bucket as usize];
                prop_assert!(b.moving.is_none(), "bucket {} moves twice", bucket);
                prop_assert!(b.primary != Some(to));
                prop_assert_eq!(s.nodes[&to].state, Active);
            }
            for cmd in &plan {
                prop_assert_eq!(s.apply(*index, cmd), Outcome::Done);
                *index += 1;
                prop_assert!(in_flight(s) <= max_moves);
            }
            // Asked again before anything finishes: only buckets not moving yet, and
            // nothing at all unless the limit cut the first plan short.
            let again = plan_moves(s, max_moves);
            for (bucket, _) in targets(&again) {
                prop_assert!(s.buckets[bucket as usize].moving.is_none());
            }
            if plan.len() < budget {
                prop_assert!(again.is_empty(), "over-moving: {:?}", again);
            }
            let moving: Vec<(u32, u64)> = s
                .buckets
                .iter()
                .enumerate()
                .filter_map(|(b, bucket)| bucket.moving.map(|m| (b as u32, m.id)))
                .collect();
            let finish = if finish_all { moving.len() } else { 1 };
            for (bucket, move_id) in moving.into_iter().take(finish) {
                let out = s.apply(*index, &Command::FinishMove { bucket, move_id });
                prop_assert_eq!(out, Outcome::Done);
                *index += 1;
            }
        }
        Err(TestCaseError::fail(format!(
            "not settled in {max_rounds} rounds"
        )))
    }

    fn node_state() -> impl Strategy<Value = NodeState> {
        prop_oneof![Just(Active), Just(Draining), Just(Joining)]
    }

    proptest! {
        /// Any members in any states owning any buckets: planning, starting and finishing
        /// moves ends, within a bound, with every bucket on an active member and the active
        /// members' counts within one of each other, never more than `max_moves` moves at
        /// once (also when moves finish one at a time).
        #[test]
        fn moves_settle_evenly_on_active_members(
            states in proptest::collection::vec(node_state(), 1..=8),
            owners in proptest::collection::vec(any::<prop::sample::Index>(), 256),
            shift in 3u32..=8,
            max_moves in 1usize..=8,
            finish_all in any::<bool>(),
        ) {
            let buckets = 1usize << shift;
            let owners: Vec<u8> = owners[..buckets]
                .iter()
                .map(|i| i.index(states.len()) as u8 + 1)
                .collect();
            let (mut s, mut index) = owned(&states, &owners);
            let max_rounds = if finish_all { buckets + 10 } else { 3 * buckets + 10 };
            settle(&mut s, &mut index, max_moves, finish_all, max_rounds)?;
            let active: BTreeSet<NodeId> = s
                .nodes
                .iter()
                .filter(|(_, m)| m.state == Active)
                .map(|(id, _)| *id)
                .collect();
            if active.is_empty() {
                prop_assert_eq!(s.buckets.iter().map(|b| b.primary.unwrap()).collect::<Vec<_>>(),
                    owners.iter().map(|n| id(*n)).collect::<Vec<_>>());
                return Ok(());
            }
            for (b, bucket) in s.buckets.iter().enumerate() {
                let p = bucket.primary.unwrap();
                prop_assert!(active.contains(&p), "bucket {} on {:?}", b, s.nodes[&p].state);
            }
            let counts: Vec<usize> = s
                .owned_counts()
                .into_iter()
                .filter(|(id, _)| active.contains(id))
                .map(|(_, n)| n)
                .collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}", counts);
        }
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

    /// Plans and applies replica changes, and has every primary bring its new replicas in
    /// sync, until the planner has nothing more; checks the build limit on the way and
    /// returns the rounds taken.
    fn settle_replicas(
        s: &mut ClusterState,
        index: &mut u64,
        max_builds: usize,
    ) -> Result<usize, TestCaseError> {
        for round in 0..400 {
            let plan = plan_replicas(s, max_builds);
            if plan.is_empty() && s.buckets.iter().all(|b| b.building() == 0) {
                return Ok(round);
            }
            for cmd in &plan {
                let out = s.apply(*index, cmd);
                *index += 1;
                prop_assert!(
                    matches!(out, Outcome::Done | Outcome::Stale { .. }),
                    "{:?}: {:?}",
                    cmd,
                    out
                );
                let building: usize = s.buckets.iter().map(Bucket::building).sum();
                prop_assert!(building <= max_builds, "{} copies building", building);
            }
            // Every primary catches its new replicas up.
            let joins: Vec<Command> = s
                .buckets
                .iter()
                .enumerate()
                .flat_map(|(b, bucket)| {
                    bucket
                        .replicas
                        .iter()
                        .filter(|r| !bucket.in_sync.contains(r))
                        .map(move |r| Command::JoinInSync {
                            bucket: b as u32,
                            epoch: bucket.epoch,
                            node: *r,
                        })
                })
                .collect();
            apply_all(s, index, &joins);
        }
        Err(TestCaseError::fail("replicas did not settle in 400 rounds"))
    }

    #[test]
    fn replicas_go_to_the_members_holding_fewest_never_the_primary() {
        let (mut s, mut index) = owned(&[Active, Active, Active], &[1, 1, 2, 3, 1, 2, 3, 3]);
        // Replicas 1 (the default): one copy per bucket, within the build limit.
        let plan = plan_replicas(&s, 4);
        assert_eq!(plan.len(), 4);
        apply_all(&mut s, &mut index, &plan);
        assert!(plan_replicas(&s, 4).is_empty(), "4 copies building already");
        settle_replicas(&mut s, &mut index, 4).unwrap();
        let (of_1, of_2, of_3) = (
            s.replica_counts(id(1)).0,
            s.replica_counts(id(2)).0,
            s.replica_counts(id(3)).0,
        );
        assert_eq!(of_1 + of_2 + of_3, 8);
        assert!([of_1, of_2, of_3].iter().all(|n| (2..=3).contains(n)));
        for b in &s.buckets {
            assert_eq!(b.replicas.len(), 1);
            assert_ne!(Some(b.replicas[0]), b.primary);
            assert_eq!(b.in_sync, b.replicas);
        }
        // A draining member's copies go once each bucket is in sync elsewhere.
        apply_all(
            &mut s,
            &mut index,
            &[Command::SetNodeState {
                node: id(3),
                state: Draining,
            }],
        );
        let plan = plan_replicas(&s, 8);
        assert!(
            plan.iter().all(|c| matches!(c, Command::AddReplica { .. })),
            "nothing dropped before its replacement is in sync: {plan:?}"
        );
        settle_replicas(&mut s, &mut index, 8).unwrap();
        for b in s.buckets.iter().filter(|b| b.primary != Some(id(3))) {
            assert_eq!(b.replicas.len(), 1);
            assert_ne!(b.replicas[0], id(3));
        }
        // Replicas 0: every copy dropped at once.
        apply_all(&mut s, &mut index, &[Command::SetReplicas(0)]);
        settle_replicas(&mut s, &mut index, 1).unwrap();
        assert!(s.buckets.iter().all(|b| b.replicas.is_empty()));
    }

    proptest! {
        /// Any members in any states owning any buckets, any replica count and build limit:
        /// the replicas settle with every bucket holding as many in-sync copies as there
        /// are other active members, up to the setting, all on active members other than
        /// its primary.
        #[test]
        fn replicas_settle_on_other_active_members(
            states in proptest::collection::vec(node_state(), 1..=6),
            owners in proptest::collection::vec(any::<prop::sample::Index>(), 64),
            replicas in 0u32..=3,
            max_builds in 1usize..=8,
        ) {
            let owners: Vec<u8> = owners
                .iter()
                .map(|i| i.index(states.len()) as u8 + 1)
                .collect();
            let (mut s, mut index) = owned(&states, &owners);
            s.apply(index, &Command::SetReplicas(replicas));
            index += 1;
            settle_replicas(&mut s, &mut index, max_builds)?;
            let active: BTreeSet<NodeId> = s
                .nodes
                .iter()
                .filter(|(_, m)| m.state == Active)
                .map(|(id, _)| *id)
                .collect();
            let want = (replicas as usize).min(active.len().saturating_sub(1));
            for (b, bucket) in s.buckets.iter().enumerate() {
                let p = bucket.primary.unwrap();
                let others = active.iter().filter(|n| **n != p).count();
                prop_assert_eq!(bucket.replicas.len(), want.min(others), "bucket {}", b);
                prop_assert_eq!(&bucket.in_sync, &bucket.replicas);
                for r in &bucket.replicas {
                    prop_assert!(active.contains(r) && *r != p, "bucket {}", b);
                }
            }
        }
    }
}
