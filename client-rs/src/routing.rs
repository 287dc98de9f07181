//! The bucket table: which server owns each bucket, as far as this client knows.
//!
//! Two things feed it: a whole table fetched with `TABLE_GET` ([`RoutingTable::apply`]) and
//! one entry named by a `NOT_MY_BUCKET` redirect ([`RoutingTable::update`]). A bucket's epoch
//! never moves backwards: a fetched table's entry replaces ours when its epoch is at least
//! ours (the same epoch names the same owner), a redirect's only when it is strictly newer.
//! A bucket without a known owner goes to the seed, which redirects.
//!
//! This module only stores and looks up (no I/O); fetching tables and following redirects is
//! `client.rs`'s job.

use shoal_proto::cluster::MAX_TABLE_BUCKETS;
use shoal_proto::TableView;
use std::sync::Arc;

/// One bucket's owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Route {
    /// The bucket's epoch the owner came with (0 = never told).
    epoch: u64,
    /// The owner's `host:port`; `None` = the connected seed.
    owner: Option<Arc<str>>,
}

/// Bucket -> owner address, plus the members of the newest table applied.
#[derive(Debug)]
pub(crate) struct RoutingTable {
    buckets: u32,
    routes: Vec<Route>,
    /// Version of the newest table applied (0 = none yet).
    version: u64,
    /// Native addresses of that table's members: where to fetch the next table from.
    nodes: Vec<Arc<str>>,
}

impl RoutingTable {
    /// A table of `buckets` buckets (a power of two), all routed to the seed.
    pub(crate) fn new(buckets: u32) -> Self {
        Self {
            buckets,
            routes: vec![Route::default(); buckets as usize],
            version: 0,
            nodes: Vec::new(),
        }
    }

    /// The bucket of `key`.
    pub(crate) fn bucket_of(&self, key: &[u8]) -> u32 {
        shoal_proto::hash::bucket_of(key, self.buckets)
    }

    /// The owner of `key`'s bucket, or `None` for "the connected seed".
    pub(crate) fn owner_of(&self, key: &[u8]) -> Option<Arc<str>> {
        let bucket = self.bucket_of(key) as usize;
        self.routes.get(bucket).and_then(|r| r.owner.clone())
    }

    /// The epoch this table holds for `bucket` (0 when unknown or out of range).
    #[cfg(test)]
    pub(crate) fn epoch_of(&self, bucket: u32) -> u64 {
        self.routes.get(bucket as usize).map_or(0, |r| r.epoch)
    }

    /// Version of the newest table applied (0 = none).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The members' native addresses, as the newest table applied lists them.
    pub(crate) fn nodes(&self) -> &[Arc<str>] {
        &self.nodes
    }

    /// Records that `owner` holds `bucket` as of `epoch`, if that is newer than what the table
    /// knows. Returns whether the entry changed. Out-of-range buckets are ignored.
    pub(crate) fn update(&mut self, bucket: u32, epoch: u64, owner: &str) -> bool {
        match self.routes.get_mut(bucket as usize) {
            Some(route) if epoch > route.epoch => {
                route.epoch = epoch;
                route.owner = Some(Arc::from(owner));
                true
            }
            _ => false,
        }
    }

    /// Merges a fetched table: each bucket whose epoch is at least ours takes the table's
    /// primary (none: the seed). A table with no buckets (its node belongs to no cluster) is
    /// ignored. A table with another bucket count replaces ours when it is not older, since
    /// the cluster's count is authoritative; an older one of another count is ignored.
    /// Returns whether any route changed.
    pub(crate) fn apply(&mut self, view: &TableView) -> bool {
        let count = view.buckets.len();
        if count == 0 || count > MAX_TABLE_BUCKETS as usize || !count.is_power_of_two() {
            return false;
        }
        let newer = view.version >= self.version;
        let mut changed = false;
        if count != self.routes.len() {
            if !newer {
                return false;
            }
            self.buckets = count as u32;
            self.routes = vec![Route::default(); count];
            changed = true;
        }
        let addrs: Vec<Arc<str>> = view
            .nodes
            .iter()
            .map(|n| Arc::from(n.native.as_str()))
            .collect();
        for (route, b) in self.routes.iter_mut().zip(&view.buckets) {
            if b.epoch < route.epoch {
                continue;
            }
            let owner = addrs
                .get(usize::from(b.primary))
                .filter(|a| !a.is_empty())
                .cloned();
            let new = Route {
                epoch: b.epoch,
                owner,
            };
            if *route != new {
                *route = new;
                changed = true;
            }
        }
        if newer {
            self.version = view.version;
            self.nodes = addrs.into_iter().filter(|a| !a.is_empty()).collect();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_proto::cluster::{NodeState, TableBucket, TableNode, NO_PRIMARY};

    fn view(version: u64, nodes: &[&str], buckets: &[(u16, u64)]) -> TableView {
        TableView {
            version,
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, a)| TableNode {
                    id: [i as u8 + 1; 16],
                    state: NodeState::Active,
                    native: (*a).to_string(),
                    memcache: String::new(),
                })
                .collect(),
            buckets: buckets
                .iter()
                .map(|&(primary, epoch)| TableBucket { primary, epoch })
                .collect(),
        }
    }

    fn owner(t: &RoutingTable, bucket: usize) -> Option<String> {
        t.routes[bucket].owner.as_deref().map(str::to_string)
    }

    #[test]
    fn newer_epochs_win_and_older_are_ignored() {
        let mut t = RoutingTable::new(16);
        let b = t.bucket_of(b"k");
        assert!(t.owner_of(b"k").is_none());
        assert!(t.update(b, 5, "h:1"));
        assert_eq!(t.owner_of(b"k").as_deref(), Some("h:1"));
        assert!(!t.update(b, 4, "h:2"));
        assert!(!t.update(b, 5, "h:2"));
        assert_eq!(t.owner_of(b"k").as_deref(), Some("h:1"));
        assert!(!t.update(99, 9, "h:3"));
    }

    #[test]
    fn a_fetched_table_fills_every_bucket_and_keeps_newer_redirects() {
        let mut t = RoutingTable::new(4);
        assert!(t.update(1, 9, "c:3"));
        let v = view(
            8,
            &["a:1", "b:2"],
            &[(0, 3), (1, 8), (1, 8), (NO_PRIMARY, 2)],
        );
        assert!(t.apply(&v));
        assert_eq!(t.version(), 8);
        assert_eq!(owner(&t, 0).as_deref(), Some("a:1"));
        // The redirect at epoch 9 is newer than the table's 8.
        assert_eq!(owner(&t, 1).as_deref(), Some("c:3"));
        assert_eq!(owner(&t, 2).as_deref(), Some("b:2"));
        assert_eq!(owner(&t, 3), None);
        assert_eq!(t.nodes().len(), 2);
        // The same table again changes nothing; an older one neither.
        assert!(!t.apply(&v));
        let old = view(5, &["x:9"], &[(0, 2), (0, 2), (0, 2), (0, 1)]);
        assert!(!t.apply(&old));
        assert_eq!(t.version(), 8);
        assert_eq!(owner(&t, 0).as_deref(), Some("a:1"));
        assert_eq!(t.nodes()[0].as_ref(), "a:1");
    }

    #[test]
    fn an_empty_table_is_ignored_and_another_bucket_count_replaces_the_table() {
        let mut t = RoutingTable::new(4);
        assert!(!t.apply(&view(3, &["a:1"], &[])));
        assert_eq!(t.version(), 0);
        assert!(t.apply(&view(4, &["a:1"], &[(0, 4); 8])));
        assert_eq!(t.routes.len(), 8);
        assert_eq!(t.owner_of(b"any").as_deref(), Some("a:1"));
        // An older table of another count is ignored; so is a count that is not a power of 2.
        assert!(!t.apply(&view(3, &["b:1"], &[(0, 9); 4])));
        assert!(!t.apply(&view(9, &["b:1"], &[(0, 9); 6])));
        assert_eq!((t.routes.len(), t.version()), (8, 4));
    }

    proptest! {
        /// Whatever order tables and redirects arrive in, each bucket ends at the highest
        /// epoch it was given, with an owner given at that epoch, and the version is the
        /// highest applied.
        #[test]
        fn epochs_never_move_backwards(
            steps in proptest::collection::vec(
                (any::<bool>(), 0u64..20, proptest::collection::vec((0u16..3, 0u64..20), 4)),
                1..20,
            )
        ) {
            let names = ["a:1", "b:2", "c:3"];
            let mut t = RoutingTable::new(4);
            let mut best = [0u64; 4];
            let mut version = 0;
            for (whole, v, buckets) in &steps {
                let before: Vec<u64> = (0..4).map(|b| t.epoch_of(b)).collect();
                if *whole {
                    t.apply(&view(*v, &names, buckets));
                    version = version.max(*v);
                    for (b, (_, e)) in buckets.iter().enumerate() {
                        best[b] = best[b].max(*e);
                    }
                } else {
                    let (p, e) = buckets[0];
                    let b = (*v % 4) as u32;
                    t.update(b, e, names[usize::from(p)]);
                    best[b as usize] = best[b as usize].max(e);
                }
                for b in 0..4u32 {
                    prop_assert!(t.epoch_of(b) >= before[b as usize]);
                }
            }
            prop_assert_eq!(t.version(), version);
            for (b, &e) in best.iter().enumerate() {
                prop_assert_eq!(t.epoch_of(b as u32), e);
            }
        }
    }
}
