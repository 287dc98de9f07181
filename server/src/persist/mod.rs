//! Persistence: the node's data directory, its node id, and writing and loading savefiles.
//!
//! This module owns the files in `--data-dir` and the crash-safety steps around them; the
//! byte format is [`savefile`]'s. It does not decide *when* to save beyond the
//! [`PersistMode`] rule: the server calls [`Persistence::save`] at a graceful stop, and the
//! native protocol's SAVE calls it on request.
//!
//! ```text
//! data-dir/
//!   node-id                     32 hex digits, generated once
//!   savefile                    the last complete save; loaded (then moved aside) at start
//!   savefile.tmp                a save in progress; deleted at start (an interrupted save)
//!   savefile.loaded-<unix>      loaded savefiles, newest KEEP_ASIDE kept
//!   savefile.bad-<unix>         damaged savefiles set aside by --discard-bad-savefile
//! ```
//!
//! A save writes `savefile.tmp`, fsyncs it, renames it over `savefile` and fsyncs the
//! directory, so at any moment `savefile` is either the previous complete save or the new
//! one, never a partial file. A save stopped by a deadline or a crash leaves at most the
//! temporary file. A loaded savefile is renamed aside before the node serves, so it is never
//! loaded twice (which would bring back keys deleted after the load).

pub mod savefile;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::{Clock, OwnedItem, Store, StoreError, SystemClock};
use savefile::{Header, Record, SavefileError, SavefileReader, SavefileWriter};

/// Name of the savefile in the data directory.
pub const SAVEFILE: &str = "savefile";
/// Name of a save in progress.
pub const SAVEFILE_TMP: &str = "savefile.tmp";
/// Name of the node id file.
pub const NODE_ID_FILE: &str = "node-id";
/// Loaded (`savefile.loaded-*`) and damaged (`savefile.bad-*`) savefiles kept, each.
pub const KEEP_ASIDE: usize = 2;
/// Buffer between the savefile writer and the file (1 MiB).
const WRITE_BUFFER: usize = 1 << 20;
/// Full write buffers queued for the writing thread; with the one being filled, this bounds
/// a save's extra memory to about 6 MiB.
const BUFFERS_IN_FLIGHT: usize = 4;
/// Buffer between the file and the savefile reader (1 MiB).
const READ_BUFFER: usize = 1 << 20;
/// A save or load logs its progress at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// When the node writes a savefile on its own (`--persist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PersistMode {
    /// At a graceful stop when no peer can take the node's buckets. Until clustering lands no
    /// peer ever can, so on a single node this is every graceful stop.
    #[default]
    OnLastStop,
    /// At every graceful stop, even when peers took the buckets (a cluster that must survive
    /// a full restart from disk alone).
    Always,
    /// Never at stop. A savefile found at start is still loaded, and SAVE still works.
    Never,
}

impl PersistMode {
    /// The flag value (`on-last-stop`, `always`, `never`).
    pub fn as_str(self) -> &'static str {
        match self {
            PersistMode::OnLastStop => "on-last-stop",
            PersistMode::Always => "always",
            PersistMode::Never => "never",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            PersistMode::Never => 0,
            PersistMode::OnLastStop => 1,
            PersistMode::Always => 2,
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            0 => PersistMode::Never,
            2 => PersistMode::Always,
            _ => PersistMode::OnLastStop,
        }
    }
}

impl fmt::Display for PersistMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<shoal_proto::PersistMode> for PersistMode {
    fn from(m: shoal_proto::PersistMode) -> Self {
        match m {
            shoal_proto::PersistMode::Never => PersistMode::Never,
            shoal_proto::PersistMode::OnLastStop => PersistMode::OnLastStop,
            shoal_proto::PersistMode::Always => PersistMode::Always,
        }
    }
}

/// A node's identity: 128 random bits generated once and kept in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeId(pub [u8; 16]);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl NodeId {
    /// Parses 32 hex digits.
    pub fn parse(s: &str) -> Option<NodeId> {
        let s = s.trim();
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(NodeId(id))
    }

    /// A new random id (from the OS's random source, else from std's random hasher keys).
    pub fn generate() -> NodeId {
        use std::hash::{BuildHasher, Hasher};
        let mut id = [0u8; 16];
        let from_os = File::open("/dev/urandom")
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut id))
            .is_ok();
        if !from_os || id == [0; 16] {
            for half in id.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                h.write_u32(std::process::id());
                half.copy_from_slice(&h.finish().to_be_bytes());
            }
        }
        NodeId(id)
    }
}

/// The persistence settings of a node.
#[derive(Debug, Clone, Default)]
pub struct PersistConfig {
    /// Data directory; `None` turns persistence off.
    pub data_dir: Option<PathBuf>,
    /// When to save at stop.
    pub mode: PersistMode,
    /// Start empty (setting the file aside) instead of refusing a damaged savefile.
    pub discard_bad_savefile: bool,
}

/// Why a persistence step failed.
#[derive(Debug)]
pub enum PersistError {
    /// The node has no data directory.
    Disabled,
    /// Another save is running.
    Busy,
    /// The save was stopped (shutdown deadline reached); no savefile was written.
    Cancelled,
    /// A file-system operation failed.
    Io {
        /// What was being done ("create", "rename", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The savefile failed a check: refuse to start (exit code 4) unless told to discard it.
    Damaged {
        /// The savefile.
        path: PathBuf,
        /// The check that failed.
        error: SavefileError,
    },
    /// Another process holds the data directory's lock (another node uses this directory).
    DirInUse {
        /// The data directory.
        path: PathBuf,
    },
    /// The node-id file does not hold an id.
    BadNodeId {
        /// The file.
        path: PathBuf,
    },
}

impl PersistError {
    /// Whether this is a damaged savefile (the node exits with `exit_code::BAD_SAVEFILE`).
    pub fn is_damaged_savefile(&self) -> bool {
        matches!(self, PersistError::Damaged { .. })
    }

    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.to_path_buf();
        move |error| PersistError::Io {
            action,
            path,
            error,
        }
    }
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Disabled => {
                f.write_str("persistence is off: the node was started without --data-dir")
            }
            PersistError::Busy => f.write_str("a save is already running"),
            PersistError::Cancelled => {
                f.write_str("the save was stopped before it completed; no savefile was written")
            }
            PersistError::Io {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
            PersistError::Damaged { path, error } => write!(
                f,
                "savefile {} is damaged: {error}. Move it away, or start with \
                 --discard-bad-savefile to set it aside and start empty",
                path.display()
            ),
            PersistError::DirInUse { path } => write!(
                f,
                "data directory {} is in use by another running node",
                path.display()
            ),
            PersistError::BadNodeId { path } => write!(
                f,
                "{} does not hold a node id (32 hex digits); fix or remove it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PersistError::Io { error, .. } => Some(error),
            PersistError::Damaged { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What a save wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveSummary {
    /// Items written.
    pub items: u64,
    /// Size of the savefile, in bytes.
    pub bytes: u64,
    /// Time taken, fsync and rename included.
    pub duration: Duration,
}

/// What a load found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

/// Writes a savefile of `store` into `dir` (temporary file, fsync, rename, directory fsync).
/// `cancelled` is asked between batches of items; when it says yes the save stops, the
/// temporary file is removed and [`PersistError::Cancelled`] returned.
///
/// # Errors
/// [`PersistError::Io`] naming the step that failed; [`PersistError::Cancelled`].
pub fn save(
    store: &Store,
    dir: &Path,
    header: &Header,
    cancelled: &dyn Fn() -> bool,
) -> Result<SaveSummary, PersistError> {
    let started = Instant::now();
    let tmp = dir.join(SAVEFILE_TMP);
    let dst = dir.join(SAVEFILE);
    let file = File::create(&tmp).map_err(PersistError::io("create", &tmp))?;
    let written = write_savefile(store, file, header, &tmp, cancelled);
    let totals = match written {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &dst).map_err(PersistError::io("rename the new savefile to", &dst))?;
    sync_dir(dir)?;
    Ok(SaveSummary {
        items: totals.items,
        bytes: totals.file_bytes,
        duration: started.elapsed(),
    })
}

fn write_savefile(
    store: &Store,
    file: File,
    header: &Header,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<savefile::Totals, PersistError> {
    let write_err = PersistError::io("write", path);
    let buffered = BackgroundWriter::new(file).map_err(PersistError::io("start writing", path))?;
    let mut w = match SavefileWriter::new(buffered, header) {
        Ok(w) => w,
        Err(e) => return Err(write_err(e)),
    };
    let buckets = store.buckets();
    let mut last_report = Instant::now();
    let started = last_report;
    for bucket in 0..buckets {
        // A hidden bucket is a copy being made (not ours yet): it is not saved.
        if store.is_bucket_hidden(bucket) {
            continue;
        }
        let mut snapshot = store.snapshot_bucket(bucket);
        if let Err(e) = w.begin_bucket(bucket, snapshot.start_seq()) {
            return Err(PersistError::io("write", path)(e));
        }
        while let Some(batch) = snapshot.next_batch() {
            if cancelled() {
                return Err(PersistError::Cancelled);
            }
            for item in &batch {
                let rec = Record {
                    key: &item.key,
                    value: &item.value,
                    flags: item.flags,
                    expires_at: item.expires_at,
                    hash: item.hash,
                    seq: item.seq,
                };
                if let Err(e) = w.push(&rec) {
                    return Err(PersistError::io("write", path)(e));
                }
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let t = w.totals();
            tracing::info!(
                buckets_done = bucket + 1,
                buckets,
                items = t.items,
                mb = t.file_bytes >> 20,
                mb_per_s = mb_per_s(t.file_bytes, started.elapsed()),
                "saving"
            );
        }
    }
    if cancelled() {
        return Err(PersistError::Cancelled);
    }
    // Taken after every item was copied, so they cover every write the file holds (and the
    // writes made while saving): a node loading the file never gives a seq twice.
    let seqs = (0..buckets)
        .filter(|&b| !store.is_bucket_hidden(b))
        .map(|b| (b, store.bucket_stats(b).seq))
        .filter(|&(_, seq)| seq != 0);
    w.bucket_seqs(seqs)
        .map_err(PersistError::io("write", path))?;
    let (buffered, totals) = w.finish().map_err(PersistError::io("write", path))?;
    let file = buffered.finish().map_err(PersistError::io("write", path))?;
    file.sync_all().map_err(PersistError::io("fsync", path))?;
    Ok(totals)
}

/// A [`Write`] that hands full 1 MiB buffers to a thread writing them to the file, so copying
/// items out of the store overlaps with the kernel's write path (the slower part: copying
/// into the page cache and writeback throttling). Memory stays bounded: at most
/// [`BUFFERS_IN_FLIGHT`] buffers wait for the thread.
struct BackgroundWriter {
    /// The buffer being filled.
    buf: Vec<u8>,
    /// Full buffers to the thread; `None` once finished.
    full: Option<SyncSender<Vec<u8>>>,
    /// Written buffers back from the thread, for reuse.
    empty: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<File>>>,
}

impl BackgroundWriter {
    fn new(mut file: File) -> io::Result<Self> {
        let (full, to_write) = sync_channel::<Vec<u8>>(BUFFERS_IN_FLIGHT);
        let (written, empty) = channel();
        let thread = std::thread::Builder::new()
            .name("shoald-save".into())
            .spawn(move || {
                for buf in to_write {
                    file.write_all(&buf)?;
                    let _ = written.send(buf);
                }
                Ok(file)
            })?;
        Ok(Self {
            buf: Vec::with_capacity(WRITE_BUFFER),
            full: Some(full),
            empty,
            thread: Some(thread),
        })
    }

    /// Hands the current buffer to the thread.
    fn send(&mut self) -> io::Result<()> {
        let mut next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(WRITE_BUFFER));
        next.clear();
        let buf = std::mem::replace(&mut self.buf, next);
        let sent = self.full.as_ref().map(|tx| tx.send(buf).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: it failed to write. Its error is the one to report.
        self.full = None;
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("the savefile writing thread stopped")))
    }

    fn join(&mut self) -> io::Result<File> {
        self.full = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the savefile writing thread panicked"))),
            None => Err(io::Error::other("the savefile writer was already finished")),
        }
    }

    /// Writes what is left, waits for the thread and returns the file (not yet synced).
    fn finish(mut self) -> io::Result<File> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        // An abandoned save: let the thread finish what it has queued and end.
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
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
    let mut item = OwnedItem {
        key: Vec::new(),
        value: Vec::new(),
        flags: 0,
        hash: 0,
        seq: 0,
        expires_at: 0,
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
            item.key.clear();
            item.key.extend_from_slice(rec.key);
            item.value.clear();
            item.value.extend_from_slice(rec.value);
            item.flags = rec.flags;
            item.hash = rec.hash;
            item.seq = rec.seq;
            item.expires_at = rec.expires_at;
            match store.insert_item(&item) {
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

fn mb_per_s(bytes: u64, took: Duration) -> u64 {
    let secs = took.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (bytes as f64 / secs / 1e6) as u64
}

/// fsyncs a directory, so a rename in it survives a power loss.
fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PersistError::io("fsync the directory", dir))
}

/// Reads the node id in `dir`, generating and storing one the first time.
/// Takes the exclusive lock on `<dir>/lock`.
fn lock_dir(dir: &Path) -> Result<fs::File, PersistError> {
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(PersistError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(PersistError::DirInUse {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(PersistError::io("lock", &path)(e)),
    }
}

fn node_id(dir: &Path) -> Result<NodeId, PersistError> {
    let path = dir.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(&text).ok_or(PersistError::BadNodeId { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = NodeId::generate();
            let tmp = dir.join("node-id.tmp");
            let mut f = File::create(&tmp).map_err(PersistError::io("create", &tmp))?;
            writeln!(f, "{id}")
                .and_then(|()| f.sync_all())
                .map_err(PersistError::io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(PersistError::io("rename to", &path))?;
            sync_dir(dir)?;
            tracing::info!(node_id = %id, "generated a node id");
            Ok(id)
        }
        Err(e) => Err(PersistError::io("read", &path)(e)),
    }
}

/// Renames `path` to `<dir>/savefile.<kind>-<unix>` (a free name) and keeps only the newest
/// [`KEEP_ASIDE`] files of that kind. Returns the new path.
fn set_aside(dir: &Path, path: &Path, kind: &str, now: u64) -> Result<PathBuf, PersistError> {
    let prefix = format!("{SAVEFILE}.{kind}-");
    let mut target = dir.join(format!("{prefix}{now}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{prefix}{now}-{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(PersistError::io("rename aside", path))?;
    sync_dir(dir)?;
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

/// The node's persistence: its data directory, node id and mode, and the one-save-at-a-time
/// rule. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Persistence {
    inner: Arc<Inner>,
}

struct Inner {
    dir: Option<PathBuf>,
    /// An exclusive lock on `<dir>/lock`, held for the node's lifetime so that two nodes never
    /// share a data directory (the OS releases it when the process ends, even on a crash).
    _dir_lock: Option<fs::File>,
    node_id: NodeId,
    mode: AtomicU8,
    clock: Arc<dyn Clock>,
    /// Held for the whole of a save: two saves would write the same temporary file.
    save_lock: Mutex<()>,
    /// Set when the node's stop deadline passes: a running save ends at its next batch.
    stopping: AtomicBool,
    saves: AtomicU64,
    failed_saves: AtomicU64,
    last_save_unix: AtomicU64,
    last_save_items: AtomicU64,
    last_save_bytes: AtomicU64,
    last_save_ms: AtomicU64,
    loaded_items: AtomicU64,
}

impl fmt::Debug for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.inner.dir)
            .field("node_id", &self.inner.node_id)
            .field("mode", &self.mode())
            .finish()
    }
}

impl Persistence {
    fn with(
        dir: Option<PathBuf>,
        dir_lock: Option<fs::File>,
        node_id: NodeId,
        mode: PersistMode,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir,
                _dir_lock: dir_lock,
                node_id,
                mode: AtomicU8::new(mode.to_u8()),
                clock,
                save_lock: Mutex::new(()),
                stopping: AtomicBool::new(false),
                saves: AtomicU64::new(0),
                failed_saves: AtomicU64::new(0),
                last_save_unix: AtomicU64::new(0),
                last_save_items: AtomicU64::new(0),
                last_save_bytes: AtomicU64::new(0),
                last_save_ms: AtomicU64::new(0),
                loaded_items: AtomicU64::new(0),
            }),
        }
    }

    /// Persistence turned off (no data directory): nothing is loaded or saved.
    pub fn disabled() -> Self {
        Self::with(
            None,
            None,
            NodeId::default(),
            PersistMode::Never,
            Arc::new(SystemClock::new()),
        )
    }

    /// Opens the data directory: creates it if missing, reads or generates the node id,
    /// deletes a temporary file left by an interrupted save, and loads the savefile into
    /// `store` if there is one, then renames it aside. A damaged savefile is refused, or with
    /// `discard_bad_savefile` set aside (the store is emptied) with a warning. `clock` gives
    /// the wall time used for expiry and file headers (the store's clock).
    ///
    /// # Errors
    /// [`PersistError::Damaged`] (exit code 4), [`PersistError::BadNodeId`],
    /// [`PersistError::Io`].
    pub fn open(
        config: &PersistConfig,
        store: &Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Persistence, PersistError> {
        let mode = config.mode;
        let Some(dir) = config.data_dir.clone() else {
            tracing::info!(
                "persistence is off (no --data-dir): the node starts empty and writes no savefile"
            );
            return Ok(Self::with(None, None, NodeId::default(), mode, clock));
        };
        fs::create_dir_all(&dir).map_err(PersistError::io("create the data directory", &dir))?;
        let dir_lock = lock_dir(&dir)?;
        let node_id = node_id(&dir)?;
        let tmp = dir.join(SAVEFILE_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(PersistError::io("remove", &tmp))?;
            tracing::warn!(path = %tmp.display(), "removed an incomplete savefile left by an interrupted save");
        }
        let persistence = Self::with(
            Some(dir.clone()),
            Some(dir_lock),
            node_id,
            mode,
            clock.clone(),
        );
        let path = dir.join(SAVEFILE);
        if !path.exists() {
            tracing::info!(dir = %dir.display(), %node_id, persist = %mode, "no savefile: starting empty");
            return Ok(persistence);
        }
        let now = clock.wall();
        match load(store, &path, now) {
            Ok(summary) => {
                persistence
                    .inner
                    .loaded_items
                    .store(summary.loaded, Ordering::Relaxed);
                if let Some(h) = summary.header.filter(|h| h.node_id != node_id.0) {
                    tracing::warn!(file_node = %NodeId(h.node_id), %node_id, "the savefile was written by another node; loading it anyway");
                }
                let aside = set_aside(&dir, &path, "loaded", now)?;
                tracing::info!(
                    items = summary.loaded,
                    expired = summary.expired,
                    refused = summary.refused,
                    mb = summary.bytes >> 20,
                    ms = summary.duration.as_millis() as u64,
                    mb_per_s = mb_per_s(summary.bytes, summary.duration),
                    moved_to = %aside.display(),
                    "loaded the savefile"
                );
                Ok(persistence)
            }
            Err(e @ PersistError::Damaged { .. }) if config.discard_bad_savefile => {
                store.flush_all();
                let aside = set_aside(&dir, &path, "bad", now)?;
                tracing::warn!(cause = %e, moved_to = %aside.display(), "--discard-bad-savefile: starting empty");
                Ok(persistence)
            }
            Err(e) => {
                store.flush_all();
                Err(e)
            }
        }
    }

    /// Whether the node has a data directory.
    pub fn is_enabled(&self) -> bool {
        self.inner.dir.is_some()
    }

    /// The data directory.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// The node id (all zeros when persistence is off).
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The current mode.
    pub fn mode(&self) -> PersistMode {
        PersistMode::from_u8(self.inner.mode.load(Ordering::Relaxed))
    }

    /// Changes the mode until the node stops.
    ///
    /// # Errors
    /// [`PersistError::Disabled`] without a data directory.
    pub fn set_mode(&self, mode: PersistMode) -> Result<(), PersistError> {
        if !self.is_enabled() {
            return Err(PersistError::Disabled);
        }
        self.inner.mode.store(mode.to_u8(), Ordering::Relaxed);
        tracing::info!(persist = %mode, "persistence mode changed");
        Ok(())
    }

    /// Whether a graceful stop writes a savefile: the node has a data directory and its mode
    /// is not `never` (with no cluster yet, no peer can take the buckets, so `on-last-stop`
    /// always applies).
    pub fn saves_on_stop(&self) -> bool {
        self.is_enabled() && self.mode() != PersistMode::Never
    }

    /// Tells running and future saves to stop at their next batch (the stop deadline passed).
    pub fn cancel_saves(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    /// Writes a savefile of `store` now; blocks until it is complete and on disk. With
    /// `wait`, waits for a save already running to end first; without, answers
    /// [`PersistError::Busy`]. A save still running at `deadline` (or after
    /// [`Persistence::cancel_saves`]) stops and writes nothing.
    ///
    /// # Errors
    /// [`PersistError::Disabled`], [`PersistError::Busy`], [`PersistError::Cancelled`],
    /// [`PersistError::Io`].
    pub fn save(
        &self,
        store: &Store,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<SaveSummary, PersistError> {
        let Some(dir) = self.inner.dir.as_deref() else {
            return Err(PersistError::Disabled);
        };
        let _guard = if wait {
            self.inner
                .save_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            match self.inner.save_lock.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(PersistError::Busy),
            }
        };
        let now = self.inner.clock.wall();
        let header = Header::new(self.inner.node_id.0, now, store.buckets());
        let stopping = &self.inner.stopping;
        let cancelled =
            || stopping.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
        tracing::info!(dir = %dir.display(), "saving");
        let result = save(store, dir, &header, &cancelled);
        let inner = &self.inner;
        match &result {
            Ok(s) => {
                inner.saves.fetch_add(1, Ordering::Relaxed);
                inner.last_save_unix.store(now, Ordering::Relaxed);
                inner.last_save_items.store(s.items, Ordering::Relaxed);
                inner.last_save_bytes.store(s.bytes, Ordering::Relaxed);
                inner
                    .last_save_ms
                    .store(s.duration.as_millis() as u64, Ordering::Relaxed);
                tracing::info!(
                    items = s.items,
                    mb = s.bytes >> 20,
                    ms = s.duration.as_millis() as u64,
                    mb_per_s = mb_per_s(s.bytes, s.duration),
                    "savefile written"
                );
            }
            Err(e) => {
                inner.failed_saves.fetch_add(1, Ordering::Relaxed);
                tracing::error!(cause = %e, "savefile not written");
            }
        }
        result
    }

    /// Name/value pairs for STATS.
    pub fn stats(&self) -> Vec<(&'static str, String)> {
        let inner = &self.inner;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        if !self.is_enabled() {
            return vec![("persist", "off".into())];
        }
        vec![
            ("persist", self.mode().to_string()),
            ("node_id", inner.node_id.to_string()),
            ("saves", get(&inner.saves)),
            ("saves_failed", get(&inner.failed_saves)),
            ("last_save_time", get(&inner.last_save_unix)),
            ("last_save_items", get(&inner.last_save_items)),
            ("last_save_bytes", get(&inner.last_save_bytes)),
            ("last_save_ms", get(&inner.last_save_ms)),
            ("loaded_items", get(&inner.loaded_items)),
        ]
    }
}

#[cfg(test)]
mod tests;
