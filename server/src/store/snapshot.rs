//! Bucket snapshots: a bucket's items copied out in batches while writes continue.
//!
//! Taking a snapshot records, under the partition lock, the bucket's current sequence
//! number `start_seq` and the chunk ids of its items (4 bytes per item, one short lock hold).
//! Each batch then takes the lock again and copies the items at those ids that are still the
//! live, indexed version of their key with `seq <= start_seq`.
//!
//! What a consumer gets:
//!
//! - every item that existed when the snapshot started and was not overwritten, deleted,
//!   expired or evicted since, with its contents at start;
//! - no key twice, and nothing written after the start (an item written after the start has
//!   a seq above `start_seq`);
//! - an item overwritten or deleted after the start is left out: those writes are above
//!   `start_seq`, and a bucket move follows the snapshot with the writes after `start_seq`.
//!
//! [`BucketSnapshot::visit_batch`] gives the same items without copying them, as views of the
//! store's memory under the lock (the savefile writer encodes them straight into its block).
//!
//! Items inserted with [`Store::insert_item`](super::Store::insert_item) keep their received
//! seq, so on a store that receives and snapshots the same bucket at once an inserted item
//! may also be left out. Nothing in this module holds a lock between batches.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use super::item::{ItemRef, OwnedItem};
use super::Store;

/// Items copied per lock hold.
pub const SNAPSHOT_BATCH: usize = 256;

/// A snapshot of one bucket; iterate it for [`OwnedItem`]s, or call
/// [`BucketSnapshot::next_batch`].
pub struct BucketSnapshot {
    store: Store,
    bucket: u32,
    start_seq: u64,
    ids: Vec<u32>,
    pos: usize,
    ready: VecDeque<OwnedItem>,
}

impl BucketSnapshot {
    pub(crate) fn new(store: Store, bucket: u32, ids: Vec<u32>, start_seq: u64) -> Self {
        Self {
            store,
            bucket,
            start_seq,
            ids,
            pos: 0,
            ready: VecDeque::new(),
        }
    }

    /// The bucket's sequence number when the snapshot started; writes after the snapshot
    /// have higher numbers.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// The bucket this snapshot reads.
    pub fn bucket(&self) -> u32 {
        self.bucket
    }

    /// Copies out the next batch (at most [`SNAPSHOT_BATCH`] candidates examined under one
    /// lock hold). Returns `None` when the snapshot is exhausted; a batch may be empty.
    pub fn next_batch(&mut self) -> Option<Vec<OwnedItem>> {
        if self.pos >= self.ids.len() {
            return None;
        }
        let end = (self.pos + SNAPSHOT_BATCH).min(self.ids.len());
        let batch = self
            .store
            .export_ids(self.bucket, &self.ids[self.pos..end], self.start_seq);
        self.pos = end;
        Some(batch)
    }

    /// Like [`BucketSnapshot::next_batch`] without copying: passes the next items (at most
    /// [`SNAPSHOT_BATCH`] candidates examined under one lock hold) to `f` as views of the
    /// store's memory, each with its absolute expiry (unix seconds, 0 = never). `f` runs
    /// with a partition lock held: it must be quick and must not touch the store. When it
    /// returns [`ControlFlow::Break`] the batch ends there and that item is offered again
    /// by the next call. Returns `None` when the snapshot is exhausted, else how many items
    /// `f` took.
    pub fn visit_batch(
        &mut self,
        mut f: impl FnMut(&ItemRef<'_>, u64) -> ControlFlow<()>,
    ) -> Option<usize> {
        if self.pos >= self.ids.len() {
            return None;
        }
        let end = (self.pos + SNAPSHOT_BATCH).min(self.ids.len());
        let mut taken = 0;
        let examined = self.store.visit_ids(
            self.bucket,
            &self.ids[self.pos..end],
            self.start_seq,
            |item, expires_at| {
                let flow = f(item, expires_at);
                taken += usize::from(flow.is_continue());
                flow
            },
        );
        self.pos += examined;
        Some(taken)
    }
}

impl Iterator for BucketSnapshot {
    type Item = OwnedItem;

    fn next(&mut self) -> Option<OwnedItem> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let batch = self.next_batch()?;
            self.ready.extend(batch);
        }
    }
}

impl std::fmt::Debug for BucketSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketSnapshot")
            .field("bucket", &self.bucket)
            .field("start_seq", &self.start_seq)
            .field("remaining", &(self.ids.len() - self.pos))
            .finish()
    }
}
