//! Saved buckets loaded at start, held (not served) until the applied table says whether
//! they are still this node's.
//!
//! A savefile of a cluster node lists the buckets it served with their epochs
//! ([`Owned`]). At start the node loads the file, then holds those buckets (parked: native
//! requests wait, forwarded ones are retried) while its Raft log is applied. For each one:
//!
//! | applied table, same cluster                         | verdict |
//! |-----------------------------------------------------|---------|
//! | bucket epoch below the saved one (log still replaying) | wait |
//! | this node primary at the saved epoch, cluster stopping | wait (a whole-cluster stop: serve once every member is back) |
//! | this node primary at the saved epoch                 | serve |
//! | a later epoch, or another primary                    | drop (the table moved past the file) |
//!
//! A file of another cluster, or without a list (older format), is trusted for the buckets
//! the table names this node primary of (a node restoring a savefile into a new cluster);
//! the rest is dropped. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use super::state::ClusterState;
use crate::datadir::NodeId;
use crate::persist::savefile::Owned;
use crate::persist::Loaded;

/// What to do with one held bucket, by the applied table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: keep it held.
    Wait,
    /// The table confirms it: serve the loaded items.
    Serve,
    /// The table moved past it: free the loaded items, then serve the bucket by the table.
    Drop,
}

/// The held buckets: for each, the epoch the savefile gave it (`None`: the file did not
/// say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// The cluster the file was written in (`None`: the file did not say).
    cluster: Option<[u8; 16]>,
    buckets: BTreeMap<u32, Option<u64>>,
}

impl Held {
    /// The buckets to hold for what the savefile said (`buckets`: the store's count).
    pub fn new(loaded: &Loaded, buckets: u32) -> Held {
        match loaded {
            Loaded::Nothing => Held::default(),
            Loaded::Unscoped => Held {
                cluster: None,
                buckets: (0..buckets).map(|b| (b, None)).collect(),
            },
            Loaded::Owned(Owned { cluster, buckets }) => Held {
                cluster: Some(*cluster),
                buckets: buckets.iter().map(|&(b, e)| (b, Some(e))).collect(),
            },
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The held buckets, ascending.
    pub fn buckets(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets.keys().copied()
    }

    /// Whether `bucket` is held.
    pub fn contains(&self, bucket: u32) -> bool {
        self.buckets.contains_key(&bucket)
    }

    /// The saved epoch of `bucket` if it is held with one.
    pub fn epoch(&self, bucket: u32) -> Option<u64> {
        self.buckets.get(&bucket).copied().flatten()
    }

    /// The verdict on `bucket` (held with `saved`) by `state`, for node `me`.
    fn verdict(
        &self,
        me: NodeId,
        state: &ClusterState,
        bucket: u32,
        saved: Option<u64>,
    ) -> Verdict {
        let (Some(cluster), Some(b)) = (state.cluster_id, state.bucket(bucket)) else {
            return Verdict::Wait;
        };
        let mine = b.primary == Some(me);
        let saved = saved.filter(|_| self.cluster == Some(cluster.0));
        match saved {
            Some(e) if b.epoch < e => Verdict::Wait,
            Some(e) if b.epoch > e || !mine => Verdict::Drop,
            None if !mine => Verdict::Drop,
            _ if state.settings.stopping => Verdict::Wait,
            _ => Verdict::Serve,
        }
    }

    /// Decides every held bucket by `state` (a table of another size decides nothing);
    /// returns the buckets to serve and the buckets to drop, which are held no more.
    pub fn resolve(
        &mut self,
        me: NodeId,
        state: &ClusterState,
        buckets: u32,
    ) -> (Vec<u32>, Vec<u32>) {
        let (mut serve, mut drop) = (Vec::new(), Vec::new());
        if state.buckets.len() != buckets as usize {
            return (serve, drop);
        }
        let verdicts: Vec<(u32, Verdict)> = self
            .buckets
            .iter()
            .map(|(&b, &saved)| (b, self.verdict(me, state, b, saved)))
            .collect();
        for (b, verdict) in verdicts {
            match verdict {
                Verdict::Wait => continue,
                Verdict::Serve => serve.push(b),
                Verdict::Drop => drop.push(b),
            }
            self.buckets.remove(&b);
        }
        (serve, drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::fixtures::{addrs, created_by, CLUSTER};
    use crate::cluster::state::Command;

    const ME: NodeId = NodeId([1; 16]);
    const OTHER: NodeId = NodeId([2; 16]);

    fn owned(cluster: [u8; 16], buckets: &[(u32, u64)]) -> Loaded {
        Loaded::Owned(Owned {
            cluster,
            buckets: buckets.to_vec(),
        })
    }

    /// A cluster of ME and OTHER: ME primary of every even bucket, OTHER of every odd one.
    fn two_nodes() -> ClusterState {
        let mut s = created_by(ME, 8, true);
        s.apply(
            2,
            &Command::AddNode {
                node: OTHER,
                addrs: addrs(2),
            },
        );
        let cmd = crate::cluster::planner::spread_evenly(&s, &[ME, OTHER]).unwrap();
        s.apply(3, &cmd);
        s
    }

    #[test]
    fn a_bucket_is_served_only_at_the_saved_epoch_and_dropped_once_the_table_moved_past() {
        let s = two_nodes();
        let epoch = |b: u32| s.bucket(b).unwrap().epoch;
        assert_eq!(s.bucket(0).unwrap().primary, Some(ME));
        let mut held = Held::new(
            &owned(
                CLUSTER.0,
                &[
                    (0, epoch(0)),
                    (2, epoch(2) + 5),
                    (4, epoch(4) - 1),
                    (1, epoch(1)),
                ],
            ),
            8,
        );
        assert_eq!(held.epoch(2), Some(epoch(2) + 5));
        // Bucket 0: confirmed. Bucket 2: the log has not reached the saved epoch yet. Bucket
        // 4: the table moved past the file. Bucket 1: another node's now.
        assert_eq!(held.resolve(ME, &s, 8), (vec![0], vec![1, 4]));
        assert_eq!(held.buckets().collect::<Vec<_>>(), vec![2]);
        // A table of another size, or none yet, decides nothing.
        assert_eq!(
            held.resolve(ME, &ClusterState::default(), 8),
            (vec![], vec![])
        );
        assert_eq!(
            held.resolve(ME, &created_by(ME, 16, true), 8),
            (vec![], vec![])
        );
        assert!(!held.is_empty());
    }

    #[test]
    fn a_stopped_cluster_holds_its_buckets_until_the_stop_is_over() {
        let mut s = two_nodes();
        let e0 = s.bucket(0).unwrap().epoch;
        s.apply(4, &Command::StopCluster);
        let mut held = Held::new(&owned(CLUSTER.0, &[(0, e0)]), 8);
        assert_eq!(held.resolve(ME, &s, 8), (vec![], vec![]));
        s.apply(5, &Command::Back { node: ME });
        assert_eq!(
            held.resolve(ME, &s, 8),
            (vec![], vec![]),
            "OTHER is not back"
        );
        s.apply(6, &Command::Back { node: OTHER });
        assert!(!s.settings.stopping);
        assert_eq!(held.resolve(ME, &s, 8), (vec![0], vec![]));
        assert!(held.is_empty());
    }

    #[test]
    fn a_file_of_another_cluster_or_without_a_list_keeps_what_the_table_gives_this_node() {
        let s = two_nodes();
        for loaded in [owned([9; 16], &[(0, 999), (1, 1)]), Loaded::Unscoped] {
            let mut held = Held::new(&loaded, 8);
            let (serve, drop) = held.resolve(ME, &s, 8);
            assert!(serve.contains(&0) && !serve.contains(&1), "{serve:?}");
            assert!(drop.contains(&1), "{drop:?}");
            assert!(held.is_empty());
        }
        assert!(Held::new(&Loaded::Nothing, 8).is_empty());
    }
}
