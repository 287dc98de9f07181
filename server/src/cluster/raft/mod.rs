//! Raft for the control plane: every openraft type lives in this module.
//!
//! - [`types`]: the openraft type configuration, short type names, and [`RaftTiming`].
//! - [`log_store`]: [`LogStore`], the Raft log and vote (in memory, or files in
//!   `data-dir/raft/`).
//! - [`state_machine`]: [`StateMachineStore`], which applies committed [`Command`]s to the
//!   [`ClusterState`] and publishes each applied state through one watch of [`Applied`].
//! - [`files`]: the framing of the Raft files, and [`RaftStoreError`].
//! - [`network`]: Raft's messages over the peer port.
//! - [`node`]: [`ControlPlane`]: Raft and the peer port on their own thread, creating,
//!   rejoining and joining a cluster, and the leader's reconciler.
//!
//! ```text
//! data-dir/raft/
//!   log        append-only records (entries, truncations, purges, committed id)
//!   vote       the last vote, replaced atomically
//!   snapshot   the last snapshot (meta, then state), replaced atomically
//! ```
//!
//! A node without a data directory keeps all of this in memory: it must never be a voter
//! (openraft assumes a vote and an acknowledged log survive a restart).
//!
//! [`Command`]: crate::cluster::state::Command
//! [`ClusterState`]: crate::cluster::state::ClusterState

pub mod files;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

pub use files::{Damage, RaftStoreError, RAFT_DIR};
pub use log_store::LogStore;
pub use node::{ControlPlane, ControlPlaneConfig, StartError};
pub use state_machine::{Applied, StateMachineStore};
pub use types::{RaftTiming, TypeConfig};

use std::path::Path;
use tokio::sync::watch;

/// A node's Raft storage, ready for `Raft::new`, and the watch of the applied state.
#[derive(Debug)]
pub struct Storage {
    /// The log and vote.
    pub log: LogStore,
    /// The state machine.
    pub state_machine: StateMachineStore,
    /// The applied state, published after every applied batch and installed snapshot.
    pub applied: watch::Receiver<Applied>,
}

/// Opens the Raft storage: the files in `data_dir/raft/` (created if missing, replayed,
/// a torn log tail cut off), or memory only when there is no data directory.
///
/// # Errors
/// [`RaftStoreError::Damaged`] when a Raft file is damaged beyond a torn tail (the node
/// exits with code 4); [`RaftStoreError::Io`].
pub fn open_storage(data_dir: Option<&Path>) -> Result<Storage, RaftStoreError> {
    let (log, (state_machine, applied)) = match data_dir {
        Some(dir) => {
            let dir = dir.join(RAFT_DIR);
            (LogStore::open(&dir)?, StateMachineStore::open(&dir)?)
        }
        None => (LogStore::in_memory(), StateMachineStore::in_memory()),
    };
    Ok(Storage {
        log,
        state_machine,
        applied,
    })
}
