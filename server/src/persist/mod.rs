//! Persistence: savefiles in the node's data directory, written at a graceful stop or on
//! request and loaded at start.
//!
//! This module owns the savefiles in `--data-dir` and the crash-safety steps around them. It
//! does not own the directory, its lock or the node id ([`crate::datadir`]), nor the byte
//! format ([`savefile`]), nor *when* to save beyond the [`PersistMode`] rule: the server
//! calls [`Persistence::save`] at a graceful stop, and the native protocol's SAVE calls it
//! on request.
//!
//! - [`mode`]: the persistence mode and its default.
//! - [`save`](mod@save): writing a savefile (temporary file, fsync, rename).
//! - [`load`](mod@load): loading a savefile at start and setting it aside.
//! - [`error`]: why a step failed ([`PersistError`]).
//! - this file: [`Persistence`], the node's handle that ties them together.
//!
//! ```text
//! data-dir/
//!   lock, node-id               crate::datadir's
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

mod direct;
pub mod error;
pub mod load;
pub mod mode;
pub mod save;
pub mod savefile;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use crate::datadir::DataDir;
use crate::store::{Clock, Store, SystemClock};
use load::set_aside;
use mode::ModeCell;
use savefile::{Header, Owned};

pub use crate::datadir::{NodeId, NODE_ID_FILE};
pub use error::PersistError;
pub use load::{load, LoadSummary};
pub use mode::{PersistMode, DEFAULT_PERSIST_MODE};
pub use save::{save, SaveSummary};

/// Name of the savefile in the data directory.
pub const SAVEFILE: &str = "savefile";
/// Name of a save in progress.
pub const SAVEFILE_TMP: &str = "savefile.tmp";
/// Loaded (`savefile.loaded-*`) and damaged (`savefile.bad-*`) savefiles kept, each.
pub const KEEP_ASIDE: usize = 2;
/// A save or load logs its progress at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What the savefile loaded at start says about its buckets: the cluster checks it against
/// its applied table before it serves them ([`crate::cluster::held`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Loaded {
    /// No savefile was loaded.
    #[default]
    Nothing,
    /// A file without an OWNED block (an older format): it may hold any bucket.
    Unscoped,
    /// The buckets the writer served, with their epochs (the file holds only these).
    Owned(Owned),
}

/// The persistence settings of a node.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// Data directory; `None` turns persistence off.
    pub data_dir: Option<PathBuf>,
    /// When to save at stop.
    pub mode: PersistMode,
    /// Start empty (setting the file aside) instead of refusing a damaged savefile.
    pub discard_bad_savefile: bool,
}

impl Default for PersistConfig {
    /// Persistence off (no data directory), [`DEFAULT_PERSIST_MODE`].
    fn default() -> Self {
        PersistConfig {
            data_dir: None,
            mode: DEFAULT_PERSIST_MODE,
            discard_bad_savefile: false,
        }
    }
}

/// Throughput for log lines, in MB (10^6 bytes) per second.
fn mb_per_s(bytes: u64, took: Duration) -> u64 {
    let secs = took.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (bytes as f64 / secs / 1e6) as u64
}

/// The node's persistence: its data directory, node id and mode, and the one-save-at-a-time
/// rule. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Persistence {
    inner: Arc<Inner>,
}

struct Inner {
    /// The data directory, locked for this node as long as the handle lives; `None` when
    /// persistence is off.
    data_dir: Option<DataDir>,
    /// The data directory's node id, or a random one of this node's own without one.
    node_id: NodeId,
    mode: ModeCell,
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
    /// What the savefile loaded at start said about its buckets, until taken.
    loaded: Mutex<Loaded>,
}

impl fmt::Debug for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.dir())
            .field("node_id", &self.inner.node_id)
            .field("mode", &self.mode())
            .finish()
    }
}

impl Persistence {
    fn with(data_dir: Option<DataDir>, mode: PersistMode, clock: Arc<dyn Clock>) -> Self {
        let node_id = data_dir
            .as_ref()
            .map_or_else(NodeId::generate, DataDir::node_id);
        Self {
            inner: Arc::new(Inner {
                data_dir,
                node_id,
                mode: ModeCell::new(mode),
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
                loaded: Mutex::new(Loaded::Nothing),
            }),
        }
    }

    /// Persistence turned off (no data directory): nothing is loaded or saved; the node id is
    /// random.
    pub fn disabled() -> Self {
        Self::with(None, PersistMode::Never, Arc::new(SystemClock::new()))
    }

    /// Opens the data directory ([`DataDir::open`]: creates it if missing, locks it, reads or
    /// generates the node id), deletes a temporary file left by an interrupted save, and loads the savefile into
    /// `store` if there is one, then renames it aside. A damaged savefile is refused, or with
    /// `discard_bad_savefile` set aside (the store is emptied) with a warning. `clock` gives
    /// the wall time used for expiry and file headers (the store's clock). Without a data
    /// directory nothing is loaded and the node gets a random id.
    ///
    /// # Errors
    /// [`PersistError::Damaged`] (exit code 4), [`PersistError::DataDir`] (exit code 5
    /// when the directory is in use), [`PersistError::Io`].
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
            return Ok(Self::with(None, mode, clock));
        };
        let data_dir = DataDir::open(&dir)?;
        let node_id = data_dir.node_id();
        let tmp = data_dir.file(SAVEFILE_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(PersistError::io("remove", &tmp))?;
            tracing::warn!(path = %tmp.display(), "removed an incomplete savefile left by an interrupted save");
        }
        let persistence = Self::with(Some(data_dir), mode, clock.clone());
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
                *persistence
                    .inner
                    .loaded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = match summary.owned {
                    Some(owned) => Loaded::Owned(owned),
                    None => Loaded::Unscoped,
                };
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

    /// What the savefile loaded at start said about its buckets (once: later calls get
    /// [`Loaded::Nothing`]).
    pub fn take_loaded(&self) -> Loaded {
        std::mem::take(
            &mut *self
                .inner
                .loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Whether the node has a data directory.
    pub fn is_enabled(&self) -> bool {
        self.inner.data_dir.is_some()
    }

    /// The data directory.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_ref().map(DataDir::path)
    }

    /// The node id: the data directory's, or without one a random id of this node's own
    /// (never all zeros).
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The current mode.
    pub fn mode(&self) -> PersistMode {
        self.inner.mode.get()
    }

    /// Changes the mode until the node stops.
    ///
    /// # Errors
    /// [`PersistError::Disabled`] without a data directory.
    pub fn set_mode(&self, mode: PersistMode) -> Result<(), PersistError> {
        if !self.is_enabled() {
            return Err(PersistError::Disabled);
        }
        self.inner.mode.set(mode);
        tracing::info!(persist = %mode, "persistence mode changed");
        Ok(())
    }

    /// Whether a graceful stop writes a savefile: the node has a data directory, and its mode
    /// is `always`, or `on-last-stop` unless every bucket was `handed_off` to peers.
    pub fn saves_on_stop(&self, handed_off: bool) -> bool {
        self.is_enabled()
            && match self.mode() {
                PersistMode::Never => false,
                PersistMode::OnLastStop => !handed_off,
                PersistMode::Always => true,
            }
    }

    /// Tells running and future saves to stop at their next batch (the stop deadline passed).
    pub fn cancel_saves(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    /// Writes a savefile of `store` now (with `owned`, a cluster node's, only the buckets it
    /// lists, and the list); blocks until it is complete and on disk. With
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
        owned: Option<&Owned>,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<SaveSummary, PersistError> {
        let Some(dir) = self.dir() else {
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
        let result = save(store, dir, &header, owned, &cancelled);
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
