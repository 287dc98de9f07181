//! The Raft state machine: [`StateMachineStore`], openraft's `RaftStateMachine` and snapshot
//! builder around the pure [`ClusterState`].
//!
//! The state is held in memory. After each applied batch (and each installed snapshot) it is
//! published through one `watch` of [`Applied`]: the rest of the node acts on applied
//! entries only, through that watch.
//!
//! A snapshot is the JSON of the state with its last applied log id and membership. On a
//! node with a data directory the current snapshot is also kept in `data-dir/raft/snapshot`
//! (two framed records, see [`super::files`]: the snapshot meta, then the snapshot bytes),
//! replaced atomically, and loaded back at the next start; the log then holds what came
//! after it.
//!
//! Rules from openraft users' losses: installing a snapshot *replaces* the state (never
//! merges into it), and a snapshot that is not newer than the last applied entry is not
//! installed (openraft#543: it would roll the state back). The snapshot builder runs
//! beside `apply`; it copies the state under the same lock `apply` takes, so a snapshot is
//! always one consistent applied state.

use super::files::{self, frame, unframe, Damage, RaftStoreError, MAX_RECORD, SNAPSHOT_FILE};
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::cluster::state::{ClusterState, Outcome};
use crate::datadir::NodeId;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::watch;

/// The applied cluster state, as the rest of the node sees it (published after every
/// applied batch and installed snapshot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The state after the last applied entry.
    pub state: Arc<ClusterState>,
    /// The index of the last applied log entry (`None` before the first).
    pub last_applied: Option<u64>,
    /// The Raft voters of the last applied membership.
    pub voters: BTreeSet<NodeId>,
    /// The Raft learners of the last applied membership.
    pub learners: BTreeSet<NodeId>,
}

/// The control plane's Raft state machine. Cloning gives another handle on the same state
/// (the snapshot builder is such a clone).
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `data-dir/raft`, when snapshots are kept on disk.
    dir: Option<PathBuf>,
    /// What has been applied; locked by `apply` and by the snapshot builder.
    data: Mutex<SmData>,
    /// The current snapshot; locked while one is written.
    snapshot: Mutex<Option<StoredSnapshot>>,
    /// Where applied states are published.
    applied: watch::Sender<Applied>,
    /// Makes snapshot ids unique within this process.
    builds: AtomicU64,
}

#[derive(Debug, Clone, Default)]
struct SmData {
    state: Arc<ClusterState>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A snapshot's bytes, as written.
#[derive(Serialize)]
struct BodyOut<'a> {
    last_applied: Option<LogId>,
    membership: &'a StoredMembership,
    state: &'a ClusterState,
}

/// A snapshot's bytes, as read.
#[derive(Deserialize)]
struct Body {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

impl SmData {
    fn applied(&self) -> Applied {
        let membership = self.membership.membership();
        Applied {
            state: Arc::clone(&self.state),
            last_applied: self.last_applied.map(|id| id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }
}

impl StateMachineStore {
    /// A state machine with no snapshot file: empty state, nothing applied.
    pub fn in_memory() -> (StateMachineStore, watch::Receiver<Applied>) {
        StateMachineStore::new(None, SmData::default(), None)
    }

    /// Opens the state machine whose snapshot is kept in `dir` (`data-dir/raft`, created if
    /// missing): it starts from the snapshot there, if any.
    ///
    /// # Errors
    /// [`RaftStoreError::Damaged`] when the snapshot file does not check out;
    /// [`RaftStoreError::Io`].
    pub fn open(
        dir: &Path,
    ) -> Result<(StateMachineStore, watch::Receiver<Applied>), RaftStoreError> {
        std::fs::create_dir_all(dir).map_err(RaftStoreError::io("create", dir))?;
        files::remove_leftover(dir, SNAPSHOT_FILE)?;
        let (data, snapshot) = match read_snapshot(&dir.join(SNAPSHOT_FILE))? {
            Some((snapshot, body)) => {
                let data = SmData {
                    state: Arc::new(body.state),
                    last_applied: body.last_applied,
                    membership: body.membership,
                };
                (data, Some(snapshot))
            }
            None => (SmData::default(), None),
        };
        Ok(StateMachineStore::new(
            Some(dir.to_path_buf()),
            data,
            snapshot,
        ))
    }

    fn new(
        dir: Option<PathBuf>,
        data: SmData,
        snapshot: Option<StoredSnapshot>,
    ) -> (StateMachineStore, watch::Receiver<Applied>) {
        let (applied, receiver) = watch::channel(data.applied());
        let store = StateMachineStore {
            shared: Arc::new(Shared {
                dir,
                data: Mutex::new(data),
                snapshot: Mutex::new(snapshot),
                applied,
                builds: AtomicU64::new(0),
            }),
        };
        (store, receiver)
    }

    /// Another receiver of the applied-state watch.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }

    /// The applied state now.
    pub fn applied(&self) -> Applied {
        self.shared.applied.borrow().clone()
    }

    fn data(&self) -> MutexGuard<'_, SmData> {
        self.shared
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> MutexGuard<'_, Option<StoredSnapshot>> {
        self.shared
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `snapshot` the current one (on disk first, when there is a directory), unless
    /// the current one is newer.
    fn keep_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), RaftStoreError> {
        let mut current = self.snapshot();
        if let Some(have) = current.as_ref() {
            if have.meta.last_log_id > snapshot.meta.last_log_id {
                return Ok(());
            }
        }
        if let Some(dir) = self.shared.dir.as_deref() {
            files::write_atomically(dir, SNAPSHOT_FILE, &encode_snapshot(&snapshot)?)?;
        }
        *current = Some(snapshot);
        Ok(())
    }
}

/// The snapshot file's bytes: the meta record, then the data record.
fn encode_snapshot(snapshot: &StoredSnapshot) -> Result<Vec<u8>, RaftStoreError> {
    let meta = serde_json::to_vec(&snapshot.meta).map_err(RaftStoreError::Encode)?;
    let mut out = Vec::with_capacity(meta.len() + snapshot.data.len() + 2 * files::HEADER);
    frame(&meta, &mut out)?;
    frame(&snapshot.data, &mut out)?;
    Ok(out)
}

/// Reads and checks the snapshot file, if there is one.
fn read_snapshot(path: &Path) -> Result<Option<(StoredSnapshot, Body)>, RaftStoreError> {
    let limit = 2 * (u64::from(MAX_RECORD) + files::HEADER as u64);
    let Some(bytes) = files::read_file(path, limit)? else {
        return Ok(None);
    };
    let damaged = |offset: usize, damage| RaftStoreError::Damaged {
        path: path.to_path_buf(),
        offset: offset as u64,
        damage,
    };
    let (meta, next) = unframe(&bytes, 0).map_err(|d| damaged(0, d))?;
    let (data, end) = unframe(&bytes, next).map_err(|d| damaged(next, d))?;
    if end != bytes.len() {
        return Err(damaged(end, Damage::Trailing));
    }
    let meta: SnapshotMeta =
        serde_json::from_slice(meta).map_err(|e| damaged(0, Damage::Decode(e)))?;
    let body: Body = serde_json::from_slice(data).map_err(|e| damaged(next, Damage::Decode(e)))?;
    if body.last_applied != meta.last_log_id || body.membership != meta.last_membership {
        return Err(damaged(next, Damage::Inconsistent));
    }
    let snapshot = StoredSnapshot {
        meta,
        data: data.to_vec(),
    };
    Ok(Some((snapshot, body)))
}

fn snapshot_error(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
) -> impl FnOnce(RaftStoreError) -> StorageError {
    files::to_storage(ErrorSubject::Snapshot(meta.map(|m| m.signature())), verb)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = self.data().clone();
        let bytes = serde_json::to_vec(&BodyOut {
            last_applied: data.last_applied,
            membership: &data.membership,
            state: &data.state,
        })
        .map_err(|e| snapshot_error(None, ErrorVerb::Write)(RaftStoreError::Encode(e)))?;
        let build = self.shared.builds.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match data.last_applied {
            Some(id) => format!("{}-{}-{build}", id.leader_id, id.index),
            None => format!("none-{build}"),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id,
        };
        let snapshot = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        self.keep_snapshot(snapshot)
            .map_err(snapshot_error(Some(&meta), ErrorVerb::Write))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = self.data();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut data = self.data();
        let mut replies = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Outcome::default(),
                EntryPayload::Normal(cmd) => {
                    let outcome = Arc::make_mut(&mut data.state).apply(entry.log_id.index, &cmd);
                    tracing::debug!(index = entry.log_id.index, ?cmd, ?outcome, "applied");
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::default()
                }
            };
            replies.push(reply);
        }
        if !replies.is_empty() {
            self.shared.applied.send_replace(data.applied());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let last_applied = self.data().last_applied;
        if meta.last_log_id <= last_applied {
            tracing::info!(
                snapshot = %meta,
                "not installing a snapshot that is not newer than the last applied entry"
            );
            return Ok(());
        }
        let bytes = snapshot.into_inner();
        let body: Body = serde_json::from_slice(&bytes).map_err(|e| {
            snapshot_error(Some(meta), ErrorVerb::Read)(RaftStoreError::BadSnapshot(
                Damage::Decode(e),
            ))
        })?;
        if body.last_applied != meta.last_log_id || body.membership != meta.last_membership {
            return Err(snapshot_error(Some(meta), ErrorVerb::Read)(
                RaftStoreError::BadSnapshot(Damage::Inconsistent),
            ));
        }
        self.keep_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        })
        .map_err(snapshot_error(Some(meta), ErrorVerb::Write))?;
        let mut data = self.data();
        *data = SmData {
            state: Arc::new(body.state),
            last_applied: body.last_applied,
            membership: body.membership,
        };
        self.shared.applied.send_replace(data.applied());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
