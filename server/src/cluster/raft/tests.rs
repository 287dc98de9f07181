//! Tests of the Raft storage: openraft's own suite against both backings, then crashes,
//! damage, restarts and snapshots.

use super::files::{Damage, RaftStoreError, LOG_FILE, RAFT_DIR, SNAPSHOT_FILE, VOTE_FILE};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use super::{open_storage, LogStore, StateMachineStore, Storage};
use crate::cluster::state::{Command, NodeAddrs, Outcome, Settings};
use crate::datadir::{ClusterId, NodeId};
use crate::testing::TempDir;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, LogState, Membership, RaftLogReader, RaftSnapshotBuilder,
};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Builds stores kept in memory.
struct InMemory;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for InMemory {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let (sm, _) = StateMachineStore::in_memory();
        Ok(((), LogStore::in_memory(), sm))
    }
}

/// Builds stores on files, each in a new temporary data directory.
struct OnFiles;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for OnFiles {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new("raft-suite");
        let storage = open_storage(Some(dir.path())).expect("open the raft storage");
        Ok((dir, storage.log, storage.state_machine))
    }
}

#[test]
fn openraft_suite_passes_in_memory() {
    Suite::test_all(InMemory).unwrap();
}

#[test]
fn openraft_suite_passes_on_files() {
    Suite::test_all(OnFiles).unwrap();
}

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, NodeId::from(1)), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Blank,
    }
}

fn normal(term: u64, index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<NodeId> = voters.iter().map(|&n| NodeId::from(n)).collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

fn create(cluster: u8, buckets: u32) -> Command {
    Command::Create {
        cluster_id: ClusterId([cluster; 16]),
        settings: Settings {
            buckets,
            ..Settings::default()
        },
        node: NodeId::from(1),
        addrs: NodeAddrs {
            peer: "127.0.0.1:7402".to_string(),
            native: "127.0.0.1:7400".to_string(),
            memcache: None,
            durable: true,
        },
        assign_all: true,
    }
}

fn raft_dir(dir: &TempDir) -> PathBuf {
    dir.path().join(RAFT_DIR)
}

fn open(dir: &TempDir) -> Storage {
    open_storage(Some(dir.path())).unwrap()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let entries = log.try_get_log_entries(..).await.unwrap();
    entries.iter().map(|e| e.log_id.index).collect()
}

/// Writes entries 1..=3, 4..=5 and 6 in three appends (three records); returns the file
/// length after each.
async fn three_appends(log: &mut LogStore) -> [u64; 3] {
    let path = log.path().unwrap();
    let len = || fs::metadata(&path).unwrap().len();
    log.blocking_append([blank(1, 1), blank(1, 2), blank(1, 3)])
        .await
        .unwrap();
    let first = len();
    log.blocking_append([blank(1, 4), blank(1, 5)])
        .await
        .unwrap();
    let second = len();
    log.blocking_append([blank(1, 6)]).await.unwrap();
    [first, second, len()]
}

fn damaged_at(result: Result<Storage, RaftStoreError>) -> (PathBuf, u64) {
    match result {
        Err(RaftStoreError::Damaged { path, offset, .. }) => (path, offset),
        Err(e) => panic!("expected damage, got {e}"),
        Ok(_) => panic!("expected damage, the storage opened"),
    }
}

#[tokio::test]
async fn the_log_reopens_with_what_was_appended_truncated_purged_voted_and_committed() {
    let dir = TempDir::new("raft-reopen");
    {
        let mut log = open(&dir).log;
        log.blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();
        log.save_vote(&Vote::new(3, NodeId::from(2))).await.unwrap();
        log.truncate(lid(1, 8)).await.unwrap();
        log.blocking_append([blank(2, 8)]).await.unwrap();
        log.purge(lid(1, 3)).await.unwrap();
        log.save_committed(Some(lid(1, 5))).await.unwrap();
    }
    let mut log = open(&dir).log;
    assert_eq!(indexes(&mut log).await, vec![4, 5, 6, 7, 8]);
    let entries = log.try_get_log_entries(8..9).await.unwrap();
    assert_eq!(entries[0].log_id, lid(2, 8));
    assert_eq!(
        log.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(lid(1, 3)),
            last_log_id: Some(lid(2, 8)),
        }
    );
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new(3, NodeId::from(2)))
    );
    assert_eq!(log.read_committed().await.unwrap(), Some(lid(1, 5)));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_entries_before_it_kept() {
    for chop in [1, 5, 8, 9, 20] {
        let dir = TempDir::new("raft-torn");
        let mut log = open(&dir).log;
        let [_, second, third] = three_appends(&mut log).await;
        drop(log);
        let path = raft_dir(&dir).join(LOG_FILE);
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(third - chop.min(third - second)).unwrap();
        drop(file);

        let mut log = open(&dir).log;
        assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5], "chop {chop}");
        assert_eq!(fs::metadata(&path).unwrap().len(), second, "chop {chop}");
        // The log goes on from the cut, and reopens whole.
        log.blocking_append([blank(2, 6)]).await.unwrap();
        drop(log);
        let mut log = open(&dir).log;
        assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5, 6]);
    }
}

#[tokio::test]
async fn a_garbled_last_record_or_zeros_after_it_are_cut() {
    let dir = TempDir::new("raft-garbled");
    let mut log = open(&dir).log;
    let [_, second, third] = three_appends(&mut log).await;
    drop(log);
    let path = raft_dir(&dir).join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(second + 12) as usize] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let mut log = open(&dir).log;
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5]);
    log.blocking_append([blank(1, 6)]).await.unwrap();
    drop(log);
    assert_eq!(fs::metadata(&path).unwrap().len(), third);

    // A power loss can leave zeros where the last write was.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 100]);
    fs::write(&path, &bytes).unwrap();
    let mut log = open(&dir).log;
    assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(fs::metadata(&path).unwrap().len(), third);
}

#[tokio::test]
async fn damage_before_a_valid_record_refuses_to_open() {
    let dir = TempDir::new("raft-damage");
    let mut log = open(&dir).log;
    let [first, second, _] = three_appends(&mut log).await;
    drop(log);
    let path = raft_dir(&dir).join(LOG_FILE);
    let good = fs::read(&path).unwrap();

    // A flipped payload byte in the middle record.
    let mut bytes = good.clone();
    bytes[(first + 20) as usize] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let (at, offset) = damaged_at(open_storage(Some(dir.path())));
    assert_eq!((at, offset), (path.clone(), first));

    // A length field that runs past the end of the file, in the first record.
    let mut bytes = good.clone();
    bytes[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = open_storage(Some(dir.path())).unwrap_err();
    assert!(err.is_damaged(), "{err}");
    assert!(
        matches!(
            err,
            RaftStoreError::Damaged {
                offset: 0,
                damage: Damage::Length(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("damaged at byte 0"), "{err}");

    // A whole record of garbage between two good ones.
    let mut bytes = good[..first as usize].to_vec();
    bytes.extend_from_slice(&[0xAB; 40]);
    bytes.extend_from_slice(&good[second as usize..]);
    fs::write(&path, &bytes).unwrap();
    assert_eq!(damaged_at(open_storage(Some(dir.path()))).1, first);

    // Nothing was cut: the damaged file is left as it was for inspection.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_damaged_vote_or_snapshot_file_refuses_to_open() {
    let dir = TempDir::new("raft-vote-damage");
    let Storage {
        mut log,
        mut state_machine,
        ..
    } = open(&dir);
    log.save_vote(&Vote::new(1, NodeId::from(1))).await.unwrap();
    state_machine.apply([blank(1, 1)]).await.unwrap();
    state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop((log, state_machine));

    for name in [VOTE_FILE, SNAPSHOT_FILE] {
        let path = raft_dir(&dir).join(name);
        let good = fs::read(&path).unwrap();
        let mut bytes = good.clone();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(damaged_at(open_storage(Some(dir.path()))).0, path);
        // A file cut short is damage too: these files are replaced whole, never torn.
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert_eq!(damaged_at(open_storage(Some(dir.path()))).0, path);
        fs::write(&path, &good).unwrap();
        open(&dir);
    }
}

#[tokio::test]
async fn a_mostly_purged_log_is_rewritten_and_reopens_the_same() {
    let dir = TempDir::new("raft-compact");
    let path = raft_dir(&dir).join(LOG_FILE);
    let mut log = open(&dir).log;
    log.set_compact_min(1024);
    for i in 1..=100 {
        log.blocking_append([normal(1, i, Command::SetPaused(i % 2 == 0))])
            .await
            .unwrap();
    }
    log.save_committed(Some(lid(1, 95))).await.unwrap();
    let before = fs::metadata(&path).unwrap().len();
    log.purge(lid(1, 90)).await.unwrap();
    let after = fs::metadata(&path).unwrap().len();
    assert!(after * 4 < before, "{after} bytes after, {before} before");
    assert!(!raft_dir(&dir).join("log.tmp").exists());
    // Appends go on in the new file.
    log.blocking_append([blank(2, 101)]).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    let entries = log.try_get_log_entries(..).await.unwrap();
    drop(log);

    let mut log = open(&dir).log;
    assert_eq!(log.get_log_state().await.unwrap(), state);
    assert_eq!(log.read_committed().await.unwrap(), Some(lid(1, 95)));
    let again = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(format!("{again:?}"), format!("{entries:?}"));
    assert_eq!(indexes(&mut log).await, (91..=101).collect::<Vec<_>>());
}

#[tokio::test]
async fn applied_batches_are_published_through_the_watch() {
    let Storage {
        mut state_machine,
        mut applied,
        ..
    } = open_storage(None).unwrap();
    assert_eq!(applied.borrow().last_applied, None);
    let replies = state_machine
        .apply([
            membership(1, 0, &[1]),
            blank(1, 1),
            normal(1, 2, create(7, 16)),
            normal(1, 3, create(8, 16)),
        ])
        .await
        .unwrap();
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[2], Outcome::Done);
    assert!(
        matches!(replies[3], Outcome::Refused(_)),
        "{:?}",
        replies[3]
    );
    assert!(applied.has_changed().unwrap());
    let now = applied.borrow_and_update().clone();
    assert_eq!(now.last_applied, Some(3));
    assert_eq!(now.state.cluster_id, Some(ClusterId([7; 16])));
    assert_eq!(now.state.buckets.len(), 16);
    assert_eq!(
        now.state.buckets[0].epoch, 2,
        "a bucket's epoch is its entry's index"
    );
    assert_eq!(now.voters, BTreeSet::from([NodeId::from(1)]));
    assert!(now.learners.is_empty());
    assert_eq!(state_machine.applied(), now);
}

#[tokio::test]
async fn a_snapshot_survives_a_restart_and_later_entries_apply_on_top() {
    let dir = TempDir::new("raft-snapshot");
    let Storage {
        mut state_machine, ..
    } = open(&dir);
    state_machine
        .apply([membership(1, 0, &[1, 2]), normal(1, 1, create(3, 8))])
        .await
        .unwrap();
    let built = state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(lid(1, 1)));
    let expected = state_machine.applied();
    drop(state_machine);

    let Storage {
        mut state_machine,
        applied,
        ..
    } = open(&dir);
    assert_eq!(*applied.borrow(), expected);
    let (last, membership) = state_machine.applied_state().await.unwrap();
    assert_eq!(last, Some(lid(1, 1)));
    assert_eq!(membership, built.meta.last_membership);
    let current = state_machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());

    state_machine
        .apply([normal(1, 2, Command::SetPaused(true))])
        .await
        .unwrap();
    assert!(state_machine.applied().state.settings.paused);
}

#[tokio::test]
async fn installing_a_snapshot_replaces_the_state() {
    let (mut leader, _) = StateMachineStore::in_memory();
    leader
        .apply([
            membership(1, 0, &[1]),
            normal(1, 1, create(1, 4)),
            normal(1, 2, Command::SetPaused(true)),
        ])
        .await
        .unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let dir = TempDir::new("raft-install");
    let Storage {
        mut state_machine,
        mut applied,
        ..
    } = open(&dir);
    // Something else applied at index 1: replaced, not merged.
    state_machine
        .apply([normal(1, 1, create(2, 8))])
        .await
        .unwrap();
    applied.borrow_and_update();
    let mut receiving = state_machine.begin_receiving_snapshot().await.unwrap();
    *receiving = *snapshot.snapshot;
    state_machine
        .install_snapshot(&snapshot.meta, receiving)
        .await
        .unwrap();

    assert_eq!(state_machine.applied(), leader.applied());
    assert!(applied.has_changed().unwrap());
    assert_eq!(applied.borrow().state.cluster_id, Some(ClusterId([1; 16])));
    assert_eq!(
        state_machine.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    // And it is the snapshot found at the next start.
    drop(state_machine);
    assert_eq!(open(&dir).state_machine.applied(), leader.applied());
}

#[tokio::test]
async fn a_snapshot_not_newer_than_the_last_applied_entry_is_not_installed() {
    let (mut old, _) = StateMachineStore::in_memory();
    old.apply([membership(1, 0, &[1]), normal(1, 1, create(1, 4))])
        .await
        .unwrap();
    let stale = old
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let dir = TempDir::new("raft-stale-snapshot");
    let Storage {
        mut state_machine,
        applied,
        ..
    } = open(&dir);
    state_machine
        .apply([
            membership(1, 0, &[1, 2]),
            normal(1, 1, create(1, 4)),
            normal(1, 2, Command::SetPaused(true)),
            blank(1, 3),
        ])
        .await
        .unwrap();
    let before = state_machine.applied();
    let mut receiving = state_machine.begin_receiving_snapshot().await.unwrap();
    *receiving = *stale.snapshot;
    state_machine
        .install_snapshot(&stale.meta, receiving)
        .await
        .unwrap();
    assert_eq!(state_machine.applied(), before);
    assert_eq!(*applied.borrow(), before);
    assert_eq!(
        state_machine.applied_state().await.unwrap().0,
        Some(lid(1, 3))
    );
    assert!(state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .is_none());
    assert!(!raft_dir(&dir).join(SNAPSHOT_FILE).exists());
}

#[tokio::test]
async fn a_received_snapshot_that_does_not_decode_is_an_error_and_changes_nothing() {
    let (mut sm, _) = StateMachineStore::in_memory();
    let (mut leader, _) = StateMachineStore::in_memory();
    leader.apply([blank(1, 1)]).await.unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    receiving.get_mut().extend_from_slice(b"{not json");
    assert!(sm
        .install_snapshot(&snapshot.meta, receiving)
        .await
        .is_err());
    assert_eq!(sm.applied_state().await.unwrap().0, None);
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn without_a_data_dir_nothing_is_written_and_with_one_everything_goes_under_raft() {
    let dir = TempDir::new("raft-layout");
    open_storage(None).unwrap();
    assert!(names(dir.path()).is_empty());
    open(&dir);
    assert_eq!(names(dir.path()), vec![RAFT_DIR.to_string()]);
    assert_eq!(names(&raft_dir(&dir)), vec![LOG_FILE.to_string()]);
}
