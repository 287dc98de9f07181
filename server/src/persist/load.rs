//! Reading a savefile back into the store at start, and setting savefiles aside afterwards
//! (`savefile.loaded-<unix>`, `savefile.bad-<unix>`, the newest [`KEEP_ASIDE`] of each kept)
//! so that a file is never loaded twice. Which file to load and when is
//! [`super::Persistence::open`]'s.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::direct::{self, AlignedBuf, DIRECT_ALIGN};
use super::savefile::{Header, Owned, OwnedBlock, SavefileReader};
use super::{mb_per_s, PersistError, KEEP_ASIDE, PROGRESS_EVERY, SAVEFILE};
use crate::datadir::sync_dir;
use crate::store::{Store, StoreError};

/// Size of the reads a load makes (4 MiB, a multiple of [`DIRECT_ALIGN`]).
const READ_BUFFER: usize = 4 << 20;
/// Buffers read ahead of the savefile reader.
const READS_AHEAD: usize = 4;
/// Checked blocks (about 1 MiB each) queued for the inserting thread.
const BLOCKS_AHEAD: usize = 4;

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
    let size = fs::metadata(path)
        .map_err(PersistError::io("open", path))?
        .len();
    // A second thread commits the store's fresh memory ahead of the items (see
    // `Store::prefault`), about as much as the file holds; it stops when the load ends.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let prefault = std::thread::Builder::new()
            .name("shoald-prefault".into())
            .spawn_scoped(scope, || store.prefault(size, &stop));
        let loaded = load_items(store, path, size, wall_now);
        stop.store(true, Ordering::Relaxed);
        if let Ok(t) = prefault {
            let _ = t.join();
        }
        loaded
    })
}

fn load_items(
    store: &Store,
    path: &Path,
    size: u64,
    wall_now: u64,
) -> Result<LoadSummary, PersistError> {
    let started = Instant::now();
    let damaged = |error| PersistError::Damaged {
        path: path.to_path_buf(),
        error,
    };
    let read_ahead = ReadAhead::new(path).map_err(PersistError::io("open", path))?;
    let reader = SavefileReader::new(read_ahead).map_err(damaged)?;
    let header = *reader.header();
    let evictions_before = store.stats().evictions;
    let mut summary = LoadSummary {
        header: Some(header),
        ..LoadSummary::default()
    };
    let mut first_refusal: Option<StoreError> = None;
    let mut last_report = Instant::now();
    let mut offset = 0u64;
    // A second thread reads and checks the blocks (copy out of the read buffers, checksums,
    // structure) while this one inserts the records of the blocks it checked.
    let (reader, checked) = std::thread::scope(|scope| {
        let (full, blocks) = sync_channel::<OwnedBlock>(BLOCKS_AHEAD);
        let (spare, spares) = channel::<Vec<u8>>();
        let checker = std::thread::Builder::new()
            .name("shoald-load-check".into())
            .spawn_scoped(scope, move || {
                let mut reader = reader;
                loop {
                    let buf = spares.try_recv().unwrap_or_default();
                    match reader.next_owned_block(buf) {
                        Ok(Some(block)) => {
                            if full.send(block).is_err() {
                                return (reader, Ok(()));
                            }
                        }
                        Ok(None) => return (reader, Ok(())),
                        Err(e) => return (reader, Err(e)),
                    }
                }
            })
            .map_err(PersistError::io("start reading", path))?;
        for block in blocks {
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
            offset = block.offset + block.file_len();
            let _ = spare.send(block.into_buffer());
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                tracing::info!(
                    items = summary.records,
                    mb = offset >> 20,
                    of_mb = size >> 20,
                    mb_per_s = mb_per_s(offset, started.elapsed()),
                    "loading savefile"
                );
            }
        }
        checker.join().map_err(|_| {
            PersistError::io("read", path)(io::Error::other(
                "the savefile checking thread panicked",
            ))
        })
    })?;
    checked.map_err(damaged)?;
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

/// A [`Read`] over a file read by a thread of its own, [`READS_AHEAD`] buffers of
/// [`READ_BUFFER`] bytes ahead: the disk's reads overlap with checking and storing the
/// items. The file is read directly (bypassing the page cache, see [`super::direct`]) when
/// the file system allows. A read error reaches the reader where it happened; the thread
/// stops when the reader is dropped.
struct ReadAhead {
    current: Option<AlignedBuf>,
    at: usize,
    full: Receiver<io::Result<AlignedBuf>>,
    empty: Sender<AlignedBuf>,
    thread: Option<JoinHandle<()>>,
}

/// Fills `buf` from `file` at `offset`, until full or the end of the file.
fn read_full(file: &File, buf: &mut AlignedBuf, offset: u64) -> io::Result<()> {
    buf.offset = offset;
    buf.len = 0;
    let cap = buf.capacity();
    while buf.len < cap {
        let at = buf.len;
        let n = file.read_at(&mut buf.space()[at..], offset + at as u64)?;
        if n == 0 {
            break;
        }
        buf.len += n;
        if direct_short(n) {
            // A direct read that stops short of the alignment is at the end of the file.
            break;
        }
    }
    Ok(())
}

/// Whether a direct read of `n` bytes ended off the alignment (only at the end of the file).
fn direct_short(n: usize) -> bool {
    !n.is_multiple_of(DIRECT_ALIGN)
}

impl ReadAhead {
    fn new(path: &Path) -> io::Result<Self> {
        let (mut file, mut direct) = direct::open(path)?;
        let path = path.to_path_buf();
        let (tx, full) = sync_channel::<io::Result<AlignedBuf>>(READS_AHEAD);
        let (empty, recycled) = channel::<AlignedBuf>();
        let thread = std::thread::Builder::new()
            .name("shoald-load".into())
            .spawn(move || {
                let mut offset = 0u64;
                loop {
                    let mut buf = recycled
                        .try_recv()
                        .unwrap_or_else(|_| AlignedBuf::new(READ_BUFFER));
                    let mut result = read_full(&file, &mut buf, offset);
                    if direct
                        && matches!(&result, Err(e) if e.kind() == io::ErrorKind::InvalidInput)
                    {
                        // The file system does not take direct reads after all.
                        result = File::open(&path).and_then(|f| {
                            file = f;
                            direct = false;
                            read_full(&file, &mut buf, offset)
                        });
                    }
                    offset += buf.len as u64;
                    let done = !matches!(&result, Ok(()) if buf.len > 0);
                    if tx.send(result.map(|()| buf)).is_err() || done {
                        return;
                    }
                }
            })?;
        Ok(Self {
            current: None,
            at: 0,
            full,
            empty,
            thread: Some(thread),
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(buf) = &self.current {
                if self.at < buf.len {
                    let n = out.len().min(buf.len - self.at);
                    out[..n].copy_from_slice(&buf.bytes()[self.at..self.at + n]);
                    self.at += n;
                    return Ok(n);
                }
            }
            match self.full.recv() {
                Ok(Ok(buf)) if buf.len == 0 => return Ok(0),
                Ok(Ok(buf)) => {
                    if let Some(old) = self.current.replace(buf) {
                        let _ = self.empty.send(old);
                    }
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The thread ended after the end of the file or an error, both delivered.
                Err(_) => return Ok(0),
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Unblock the thread (its send fails once the receiver is gone) and wait for it.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.full, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
