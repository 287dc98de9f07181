//! Reading a savefile back into the store at start, and setting savefiles aside afterwards
//! (`savefile.loaded-<unix>`, `savefile.bad-<unix>`, the newest [`KEEP_ASIDE`] of each kept)
//! so that a file is never loaded twice. Which file to load and when is
//! [`super::Persistence::open`]'s.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::savefile::{Header, Owned, SavefileReader};
use super::{mb_per_s, PersistError, KEEP_ASIDE, PROGRESS_EVERY, SAVEFILE};
use crate::datadir::sync_dir;
use crate::store::{Store, StoreError};

/// Buffer between the file and the savefile reader (1 MiB).
const READ_BUFFER: usize = 1 << 20;

/// What a load found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Records in the file.
    pub records: u64,
    /// Items stored.
    pub loaded: u64,
    /// Items left out because they expired while the node was down.
    pub expired: u64,
    /// Items the store refused (larger than the current limits, or no memory).
    pub refused: u64,
    /// Items evicted while loading because the data did not fit in `--memory`.
    pub evicted: u64,
    /// Size of the file, in bytes.
    pub bytes: u64,
    /// Time taken.
    pub duration: Duration,
    /// The header: who wrote the file and when.
    pub header: Option<Header>,
    /// The buckets the writer served in its cluster, with their epochs (version 3), if the
    /// file says.
    pub owned: Option<Owned>,
}

/// Loads the savefile at `path` into `store`, leaving out items that expired by `wall_now`
/// (unix seconds). Hashes, flags, sequence numbers and absolute expiry times are kept, and
/// every bucket's sequence counter is raised to the one saved.
/// Records are inserted in file order, so if a key appears twice the last record wins.
///
/// On [`PersistError::Damaged`] the store may hold part of the file: the caller empties it.
///
/// # Errors
/// [`PersistError::Io`] when the file cannot be opened; [`PersistError::Damaged`] for any
/// failed check (including read errors part-way).
pub fn load(store: &Store, path: &Path, wall_now: u64) -> Result<LoadSummary, PersistError> {
    let started = Instant::now();
    let file = File::open(path).map_err(PersistError::io("open", path))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let damaged = |error| PersistError::Damaged {
        path: path.to_path_buf(),
        error,
    };
    let mut reader =
        SavefileReader::new(BufReader::with_capacity(READ_BUFFER, file)).map_err(damaged)?;
    let header = *reader.header();
    let evictions_before = store.stats().evictions;
    let mut summary = LoadSummary {
        header: Some(header),
        ..LoadSummary::default()
    };
    let mut first_refusal: Option<StoreError> = None;
    let mut last_report = Instant::now();
    loop {
        let block = match reader.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(error) => return Err(damaged(error)),
        };
        // Version 1 files carry a bucket's counter only here (buckets with items).
        store.raise_bucket_seq(block.bucket, block.bucket_seq);
        for rec in block.records() {
            summary.records += 1;
            if rec.expires_at != 0 && rec.expires_at <= wall_now {
                summary.expired += 1;
                continue;
            }
            match store.insert_item(&rec) {
                Ok(()) => summary.loaded += 1,
                Err(e) => {
                    summary.refused += 1;
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            tracing::info!(
                items = summary.records,
                mb = reader.offset() >> 20,
                of_mb = size >> 20,
                mb_per_s = mb_per_s(reader.offset(), started.elapsed()),
                "loading savefile"
            );
        }
    }
    for &(bucket, seq) in reader.bucket_seqs() {
        store.raise_bucket_seq(bucket, seq);
    }
    summary.owned = reader.owned().cloned();
    summary.bytes = reader.totals().file_bytes;
    summary.evicted = store.stats().evictions.saturating_sub(evictions_before);
    summary.duration = started.elapsed();
    if let Some(e) = first_refusal {
        tracing::warn!(
            refused = summary.refused,
            first_cause = %e,
            "the store refused some savefile items (limits lowered, or not enough memory)"
        );
    }
    if summary.evicted > 0 {
        tracing::warn!(
            evicted = summary.evicted,
            "the savefile holds more than --memory: items were evicted while loading"
        );
    }
    Ok(summary)
}

/// Renames `path` to `<dir>/savefile.<kind>-<unix>` (a free name) and keeps only the newest
/// [`KEEP_ASIDE`] files of that kind. Returns the new path.
pub(super) fn set_aside(
    dir: &Path,
    path: &Path,
    kind: &str,
    now: u64,
) -> Result<PathBuf, PersistError> {
    let prefix = format!("{SAVEFILE}.{kind}-");
    let mut target = dir.join(format!("{prefix}{now}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{prefix}{now}-{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(PersistError::io("rename aside", path))?;
    sync_dir(dir).map_err(PersistError::io("fsync the directory", dir))?;
    let mut kept: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
        .map_err(PersistError::io("list", dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, e.path())
        })
        .collect();
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP_ASIDE);
    for (_, old) in kept.into_iter().take(excess) {
        if old != target {
            let _ = fs::remove_file(&old);
        }
    }
    Ok(target)
}
