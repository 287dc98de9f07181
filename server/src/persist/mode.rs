//! The persistence mode: when the node writes a savefile on its own. The enum is the
//! protocol's ([`shoal_proto::PersistMode`], also the `--persist` values and the STATS
//! `persist` value); this module adds the default and the cell that holds the current mode
//! while the node runs (changed by SET_PERSIST).

use std::sync::atomic::{AtomicU8, Ordering};

/// When the node writes a savefile on its own (`--persist`, SET_PERSIST): the protocol's
/// enum, so the flag, the admin request and STATS share one definition.
/// `on-last-stop` (the default) saves at a graceful stop when no peer can take the node's
/// buckets (until clustering lands no peer ever can, so on a single node this is every
/// graceful stop); `always` at every graceful stop; `never` not at stop (a savefile found
/// at start is still loaded, and SAVE still works).
pub use shoal_proto::PersistMode;

/// The mode a node starts with unless told otherwise.
pub const DEFAULT_PERSIST_MODE: PersistMode = PersistMode::OnLastStop;

/// The current mode, shared by the node's tasks and changed at run time.
#[derive(Debug)]
pub(super) struct ModeCell(AtomicU8);

impl ModeCell {
    pub(super) fn new(mode: PersistMode) -> ModeCell {
        ModeCell(AtomicU8::new(mode.as_u8()))
    }

    pub(super) fn get(&self) -> PersistMode {
        // Only new() and set() store into it, always a valid wire value.
        PersistMode::from_u8(self.0.load(Ordering::Relaxed)).unwrap_or(DEFAULT_PERSIST_MODE)
    }

    pub(super) fn set(&self, mode: PersistMode) {
        self.0.store(mode.as_u8(), Ordering::Relaxed);
    }
}
