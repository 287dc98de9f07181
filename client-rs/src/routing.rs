//! The bucket table: which server owns each bucket, as far as this client knows.
//!
//! Today a cluster is one node, so every bucket starts out with no known owner and goes to the
//! connected seed. A `NOT_MY_BUCKET` redirect fills in one entry (when its epoch is newer than
//! what the table holds). The cluster work fills the whole table from the control plane later.
//! This module only stores and looks up; following redirects is `client.rs`'s job.

use std::sync::Arc;

/// One bucket's owner.
#[derive(Debug, Clone, Default)]
struct Route {
    /// Epoch of the bucket table the owner came from (0 = never told).
    epoch: u64,
    /// The owner's `host:port`; `None` = the connected seed.
    owner: Option<Arc<str>>,
}

/// Bucket -> owner address.
#[derive(Debug)]
pub(crate) struct RoutingTable {
    buckets: u32,
    routes: Vec<Route>,
}

impl RoutingTable {
    /// A table of `buckets` buckets (a power of two), all routed to the seed.
    pub(crate) fn new(buckets: u32) -> Self {
        Self {
            buckets,
            routes: vec![Route::default(); buckets as usize],
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
