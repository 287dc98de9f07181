//! The Raft log and vote: [`LogStore`], openraft's `RaftLogStorage`.
//!
//! The log is held in memory (a `BTreeMap` by index) and, on a node with a data directory,
//! in `data-dir/raft/log`: an append-only file of framed records ([`super::files`]), each
//! one write of the store, as JSON:
//!
//! ```text
//! Append([entry, ...])   one append call (split only if over the record limit)
//! Truncate { from }      entries from index `from` on are gone
//! Purge { upto }         entries up to `upto` (a log id) are gone
//! Committed(log id)      the last committed log id, so a restart re-applies up to it
//! ```
//!
//! Opening replays every record. Every write is fsynced before the call returns (for
//! `append`, before the flush callback runs). The vote is kept in its own small file,
//! replaced atomically.
//!
//! Crash rules on open: a bad last record (torn by a crash during its write: incomplete,
//! failing its CRC, or not decoding) with no valid record after it is cut off, with a
//! warning. A bad record with a valid record after it cannot come from a crash (every
//! earlier write was fsynced): the open fails with [`RaftStoreError::Damaged`].
//!
//! When purges and truncations leave most of the file dead, it is rewritten with only the
//! live records (atomically: temporary file, fsync, rename).

use super::files::{
    self, frame, to_storage, unframe, Damage, RaftStoreError, LOG_FILE, MAX_RECORD, VOTE_FILE,
};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::datadir::sync_dir;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The log file is rewritten once it is at least this long and more than half dead.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// A log or vote file longer than this is refused without being read.
const MAX_FILE: u64 = 1 << 32;
/// A vote file longer than this is refused without being read.
const MAX_VOTE_FILE: u64 = 64 << 10;

/// One record of the log file, as written (borrowing what it writes).
#[derive(Serialize)]
enum RecordOut<'a> {
    Append(&'a [Entry]),
    Truncate { from: u64 },
    Purge { upto: LogId },
    Committed(Option<LogId>),
}

/// One record of the log file, as read.
#[derive(Deserialize)]
enum Record {
    Append(Vec<Entry>),
    Truncate { from: u64 },
    Purge { upto: LogId },
    Committed(Option<LogId>),
}

/// The Raft log and vote of this node, in memory or backed by files. Cloning gives another
/// handle on the same log (openraft's log reader is such a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    /// The entries present, by index.
    entries: BTreeMap<u64, Stored>,
    /// The last purged log id (entries up to it are gone).
    last_purged: Option<LogId>,
    /// The last committed log id saved.
    committed: Option<LogId>,
    /// The last vote saved.
    vote: Option<Vote>,
    /// The files, when the log is durable.
    file: Option<LogFile>,
}

#[derive(Debug)]
struct Stored {
    entry: Entry,
    /// This entry's share of the log file's bytes (0 in memory).
    bytes: u64,
}

#[derive(Debug)]
struct LogFile {
    /// `data-dir/raft`.
    dir: PathBuf,
    /// `data-dir/raft/log`.
    path: PathBuf,
    file: File,
    /// The file's length: where the next record goes.
    len: u64,
    /// Rewrite threshold ([`COMPACT_MIN_BYTES`]; lower in tests).
    compact_min: u64,
    /// A write failed: take no more.
    broken: bool,
}

impl LogStore {
    /// A log kept in memory only (a node without a data directory, which must never vote).
    pub fn in_memory() -> LogStore {
        LogStore::from_log(Log::default())
    }

    /// Opens (or creates) the log and vote files in `dir` (`data-dir/raft`, created if
    /// missing) and replays them. A torn last record is cut off with a warning.
    ///
    /// # Errors
    /// [`RaftStoreError::Damaged`] for damage a crash cannot explain;
    /// [`RaftStoreError::Io`].
    pub fn open(dir: &Path) -> Result<LogStore, RaftStoreError> {
        std::fs::create_dir_all(dir).map_err(RaftStoreError::io("create", dir))?;
        files::remove_leftover(dir, LOG_FILE)?;
        files::remove_leftover(dir, VOTE_FILE)?;
        let mut log = Log {
            vote: read_vote(&dir.join(VOTE_FILE))?,
            ..Log::default()
        };
        let path = dir.join(LOG_FILE);
        let bytes = files::read_file(&path, MAX_FILE)?.unwrap_or_default();
        let good = log.replay(&path, &bytes)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(RaftStoreError::io("open", &path))?;
        if good < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                offset = good,
                bytes = bytes.len() - good,
                "cutting a torn record off the end of the Raft log (a crash during its write)"
            );
            file.set_len(good as u64)
                .and_then(|()| file.sync_all())
                .map_err(RaftStoreError::io("truncate", &path))?;
        }
        // The log file (and raft/ itself) may be new: make their names durable before the
        // first acknowledged append relies on them.
        sync_dir(dir).map_err(RaftStoreError::io("fsync the directory", dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(RaftStoreError::io("fsync the directory", parent))?;
        }
        log.file = Some(LogFile {
            dir: dir.to_path_buf(),
            path,
            file,
            len: good as u64,
            compact_min: COMPACT_MIN_BYTES,
            broken: false,
        });
        Ok(LogStore::from_log(log))
    }

    fn from_log(log: Log) -> LogStore {
        LogStore {
            inner: Arc::new(Mutex::new(log)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log file, when the log is durable.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().file.as_ref().map(|f| f.path.clone())
    }

    /// Sets the length from which a mostly dead log file is rewritten (tests use a small
    /// one).
    #[cfg(test)]
    pub(super) fn set_compact_min(&self, bytes: u64) {
        if let Some(file) = self.lock().file.as_mut() {
            file.compact_min = bytes;
        }
    }
}

/// Reads the vote file, if there is one.
fn read_vote(path: &Path) -> Result<Option<Vote>, RaftStoreError> {
    let Some(bytes) = files::read_file(path, MAX_VOTE_FILE)? else {
        return Ok(None);
    };
    let damaged = |damage| RaftStoreError::Damaged {
        path: path.to_path_buf(),
        offset: 0,
        damage,
    };
    let (payload, end) = unframe(&bytes, 0).map_err(damaged)?;
    if end != bytes.len() {
        return Err(damaged(Damage::Trailing));
    }
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| damaged(Damage::Decode(e)))
}

/// The record at `offset`, decoded, and the offset after it.
fn read_record(buf: &[u8], offset: usize) -> Result<(Record, usize), Damage> {
    let (payload, next) = unframe(buf, offset)?;
    let record = serde_json::from_slice(payload).map_err(Damage::Decode)?;
    Ok((record, next))
}

/// Whether a valid record starts anywhere after `offset`.
fn valid_record_after(buf: &[u8], offset: usize) -> bool {
    (offset + 1..buf.len()).any(|at| read_record(buf, at).is_ok())
}

/// Encodes `entries` as framed `Append` records into `out` (one record, or more when one
/// would pass [`MAX_RECORD`]), and returns each entry's share of the bytes.
fn encode_append(entries: &[Entry], out: &mut Vec<u8>) -> Result<Vec<u64>, RaftStoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let payload =
        serde_json::to_vec(&RecordOut::Append(entries)).map_err(RaftStoreError::Encode)?;
    if payload.len() > MAX_RECORD as usize && entries.len() > 1 {
        let (left, right) = entries.split_at(entries.len() / 2);
        let mut shares = encode_append(left, out)?;
        shares.extend(encode_append(right, out)?);
        return Ok(shares);
    }
    let before = out.len();
    frame(&payload, out)?;
    let total = (out.len() - before) as u64;
    let n = entries.len() as u64;
    let mut shares = vec![total / n; entries.len()];
    shares[0] += total % n;
    Ok(shares)
}

/// Encodes one framed non-append record.
fn encode(record: &RecordOut<'_>) -> Result<Vec<u8>, RaftStoreError> {
    let payload = serde_json::to_vec(record).map_err(RaftStoreError::Encode)?;
    let mut out = Vec::with_capacity(payload.len() + files::HEADER);
    frame(&payload, &mut out)?;
    Ok(out)
}

impl Log {
    /// Replays the log file's bytes; returns how many of them are good (the rest is a torn
    /// tail to cut).
    fn replay(&mut self, path: &Path, bytes: &[u8]) -> Result<usize, RaftStoreError> {
        let mut offset = 0;
        while offset < bytes.len() {
            match read_record(bytes, offset) {
                Ok((record, next)) => {
                    self.apply_record(record, (next - offset) as u64);
                    offset = next;
                }
                Err(damage) if valid_record_after(bytes, offset) => {
                    return Err(RaftStoreError::Damaged {
                        path: path.to_path_buf(),
                        offset: offset as u64,
                        damage,
                    })
                }
                Err(_) => break,
            }
        }
        Ok(offset)
    }

    /// Applies one record (read back, or just written) to the in-memory log.
    fn apply_record(&mut self, record: Record, bytes: u64) {
        match record {
            Record::Append(entries) => {
                let n = entries.len().max(1) as u64;
                for (i, entry) in entries.into_iter().enumerate() {
                    let share = bytes / n + if i == 0 { bytes % n } else { 0 };
                    self.insert(entry, share);
                }
            }
            Record::Truncate { from } => self.truncate(from),
            Record::Purge { upto } => self.purge(upto),
            Record::Committed(committed) => self.committed = committed,
        }
    }

    fn insert(&mut self, entry: Entry, bytes: u64) {
        self.entries
            .insert(entry.log_id.index, Stored { entry, bytes });
    }

    fn truncate(&mut self, from: u64) {
        self.entries.split_off(&from);
    }

    fn purge(&mut self, upto: LogId) {
        if self.last_purged.is_none_or(|purged| purged < upto) {
            self.last_purged = Some(upto);
        }
        self.entries = self.entries.split_off(&(upto.index + 1));
    }

    /// Writes `bytes` at the end of the log file and fsyncs it (nothing to do in memory).
    /// After a failed write the file is cut back to where it was and takes no more writes.
    fn write(&mut self, bytes: &[u8]) -> Result<(), RaftStoreError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if file.broken {
            return Err(RaftStoreError::Broken);
        }
        let result = file
            .file
            .write_all_at(bytes, file.len)
            .and_then(|()| file.file.sync_data());
        match result {
            Ok(()) => {
                file.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                file.broken = true;
                // Best effort: leave no partial record behind for the next open to judge.
                let _ = file.file.set_len(file.len);
                Err(RaftStoreError::io("write", &file.path)(e))
            }
        }
    }

    /// Writes one non-append record durably, if the log has a file.
    fn write_record(&mut self, record: RecordOut<'_>) -> Result<(), RaftStoreError> {
        if self.file.is_none() {
            return Ok(());
        }
        let bytes = encode(&record)?;
        self.write(&bytes)
    }

    /// Appends entries: durable (file backing) when this returns.
    fn append(&mut self, entries: Vec<Entry>) -> Result<(), RaftStoreError> {
        let shares = if self.file.is_some() && !entries.is_empty() {
            let mut bytes = Vec::new();
            let shares = encode_append(&entries, &mut bytes)?;
            self.write(&bytes)?;
            shares
        } else {
            vec![0; entries.len()]
        };
        for (entry, share) in entries.into_iter().zip(shares) {
            self.insert(entry, share);
        }
        Ok(())
    }

    /// Rewrites the log file with only its live records, when it is long enough and more
    /// than half dead.
    fn maybe_compact(&mut self) -> Result<(), RaftStoreError> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let live: u64 = self.entries.values().map(|s| s.bytes).sum();
        if file.len < file.compact_min || live * 2 >= file.len {
            return Ok(());
        }
        let result = self.compact();
        if result.is_err() {
            if let Some(file) = self.file.as_mut() {
                file.broken = true;
            }
        }
        result
    }

    fn compact(&mut self) -> Result<(), RaftStoreError> {
        let mut bytes = Vec::new();
        if let Some(upto) = self.last_purged {
            bytes.extend(encode(&RecordOut::Purge { upto })?);
        }
        if self.committed.is_some() {
            bytes.extend(encode(&RecordOut::Committed(self.committed))?);
        }
        let entries: Vec<Entry> = self.entries.values().map(|s| s.entry.clone()).collect();
        let shares = encode_append(&entries, &mut bytes)?;
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let before = file.len;
        files::write_atomically(&file.dir, LOG_FILE, &bytes)?;
        file.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file.path)
            .map_err(RaftStoreError::io("open", &file.path))?;
        file.len = bytes.len() as u64;
        for (stored, share) in self.entries.values_mut().zip(shares) {
            stored.bytes = share;
        }
        tracing::info!(
            path = %file.path.display(),
            before,
            after = bytes.len(),
            "rewrote the Raft log without its purged records"
        );
        Ok(())
    }

    fn save_vote(&mut self, vote: Vote) -> Result<(), RaftStoreError> {
        if let Some(file) = self.file.as_ref() {
            let bytes = encode_vote(&vote)?;
            files::write_atomically(&file.dir, VOTE_FILE, &bytes)?;
        }
        self.vote = Some(vote);
        Ok(())
    }
}

fn encode_vote(vote: &Vote) -> Result<Vec<u8>, RaftStoreError> {
    let payload = serde_json::to_vec(vote).map_err(RaftStoreError::Encode)?;
    let mut out = Vec::with_capacity(payload.len() + files::HEADER);
    frame(&payload, &mut out)?;
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let log = self.lock();
        Ok(log
            .entries
            .range(range)
            .map(|(_, s)| s.entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock();
        let last_log_id = log
            .entries
            .last_key_value()
            .map(|(_, s)| s.entry.log_id)
            .or(log.last_purged);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.lock()
            .save_vote(*vote)
            .map_err(to_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut log = self.lock();
        if log.committed == committed {
            return Ok(());
        }
        log.write_record(RecordOut::Committed(committed))
            .map_err(to_storage(ErrorSubject::Store, ErrorVerb::Write))?;
        log.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.lock()
            .append(entries)
            .map_err(to_storage(ErrorSubject::Logs, ErrorVerb::Write))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        log.write_record(RecordOut::Truncate { from: log_id.index })
            .and_then(|()| {
                log.truncate(log_id.index);
                log.maybe_compact()
            })
            .map_err(to_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        log.write_record(RecordOut::Purge { upto: log_id })
            .and_then(|()| {
                log.purge(log_id);
                log.maybe_compact()
            })
            .map_err(to_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
