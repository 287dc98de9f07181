//! The openraft type configuration for the control plane, short names for the openraft types
//! the rest of `cluster::raft` uses, and the Raft timing settings.
//!
//! Log entries carry [`Command`]s and answer [`Outcome`]s; nodes are named by their
//! [`NodeId`]. openraft's own node record is empty ([`openraft::EmptyNode`]): a node's
//! addresses live in our state machine's node table, so an address change is one of our
//! commands and never openraft's `SetNodes`.

use crate::cluster::state::{Command, Outcome};
use crate::datadir::NodeId;
use std::sync::Arc;
use std::time::Duration;

openraft::declare_raft_types!(
    /// The control plane's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::EmptyNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log entry's id: the term and node of the leader that wrote it, and its index.
pub type LogId = openraft::LogId<NodeId>;
/// A vote (term, candidate, whether committed).
pub type Vote = openraft::Vote<NodeId>;
/// A membership config with the log id of the entry that carried it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::EmptyNode>;
/// What a snapshot covers: last included log id, membership, snapshot id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::EmptyNode>;
/// A snapshot: its meta and its bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The error type of every storage call openraft makes.
pub type StorageError = openraft::StorageError<NodeId>;
/// A running Raft node of the control plane.
pub type Raft = openraft::Raft<TypeConfig>;

/// Raft timing and log-compaction settings, with defaults that suit a busy 2-core machine
/// (openraft's own defaults, 50 ms heartbeats and 150-300 ms elections, are too tight when
/// the data path saturates the CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in `election_min..election_max`
    /// starts an election.
    pub election_min: Duration,
    /// See `election_min`.
    pub election_max: Duration,
    /// Build a snapshot (and purge the log behind it) after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log rather than through a snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            snapshot_every: 1000,
            keep_behind_snapshot: 100,
        }
    }
}

impl RaftTiming {
    /// The openraft config for these settings, validated (the election timeout must exceed
    /// the heartbeat, `election_min < election_max`).
    ///
    /// # Errors
    /// openraft's reason when the settings are inconsistent.
    pub fn config(&self) -> Result<Arc<openraft::Config>, Box<openraft::ConfigError>> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "shoal".to_string(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_min),
            election_timeout_max: millis(self.election_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            ..openraft::Config::default()
        };
        config.validate().map(Arc::new).map_err(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timing_is_a_valid_openraft_config() {
        let config = RaftTiming::default().config().unwrap();
        assert_eq!(config.heartbeat_interval, 250);
        assert_eq!(config.election_timeout_min, 1000);
        assert_eq!(config.election_timeout_max, 2000);
    }

    #[test]
    fn an_election_timeout_below_the_heartbeat_is_refused() {
        let timing = RaftTiming {
            election_min: Duration::from_millis(100),
            election_max: Duration::from_millis(200),
            ..RaftTiming::default()
        };
        assert!(timing.config().is_err());
    }
}
