//! Test-only faults, compiled in only with the `fault-injection` cargo feature and never in
//! default builds. They exist so the consistency-checker can prove it notices broken promises:
//!
//! - `--fault-drop-writes N`: one in N SETs is acknowledged without being stored.
//! - `--fault-old-savefile`: every start after the first loads the savefile written one stop
//!   earlier than the latest (it keeps a copy of each savefile it finds), so the node comes
//!   back with older values than it acknowledged.
//! - `--fault-ignore-table`: the node serves every bucket whatever the applied bucket table
//!   says ([`ignore_table`], read by `ClusterView::owns`): native requests for buckets it does
//!   not own are run here instead of answered `NOT_MY_BUCKET`, memcached commands are run here
//!   instead of forwarded to the owner.
//! - `--fault-stall-move-at PHASE`: bucket moves from this node wait at `snapshot`, `tail`,
//!   `in-sync` or `parked` (a parked bucket for the park timeout only; the other phases while
//!   movement is paused; in `in-sync` the target keeps getting every change meanwhile).
//! - `--fault-drop-move-change`: each bucket move leaves out one change-log record.
//! - `--fault-early-drop`: a move drops the source's copy at park time and serves the bucket
//!   again at once, before the switchover commits.
//! - `--fault-ignore-lease`: the node keeps serving after its lease ran out
//!   ([`ignore_lease`], read by `ClusterView::leased`).
//! - `--fault-promote-any`: a leader that fences a node first marks every replica of its
//!   buckets in sync, so a replica that was not may be promoted.
//! - `--fault-ack-early`: replies do not wait for the in-sync replicas.
//! - SIGUSR1 / SIGUSR2 (a partition): SIGUSR1 cuts the node off from every peer
//!   ([`cut_peers`]), SIGUSR2 heals it. While cut off, live peer connections (both directions)
//!   are closed, new incoming ones are dropped at accept and every peer call fails at once as
//!   `Unreachable`; the client ports keep serving. Healed, the peer clients dial again on
//!   their next call, so Raft and forwarding resume by themselves.
//!
//! Build: `CARGO_TARGET_DIR=target/fault cargo build -p shoald --features fault-injection`.

use crate::config::Config;
use crate::persist::SAVEFILE;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use tokio::sync::watch;

/// Name of the copy of the previous savefile kept by `--fault-old-savefile`.
pub const OLD_SAVEFILE: &str = "fault-old-savefile";

/// Drop one in this many SETs (0: none).
static DROP_EVERY: AtomicU64 = AtomicU64::new(0);
/// SETs seen, for `DROP_EVERY`.
static SETS: AtomicU64 = AtomicU64::new(0);

/// Serve every bucket, whatever the applied table says.
static IGNORE_TABLE: AtomicBool = AtomicBool::new(false);
/// Whether this node is cut off from its peers; watched, so live peer connections end at once.
static PEERS_CUT: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::Sender::new(false));

/// A phase of a bucket move, as `--fault-stall-move-at` names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MovePhaseName {
    /// After the copy was opened on the target, before any item is sent.
    Snapshot,
    /// After the snapshot, before the change log is sent.
    Tail,
    /// In sync: the target gets every change as it comes and replies wait for it; stays
    /// there while movement is paused.
    #[serde(rename = "in-sync")]
    InSync,
    /// With the bucket parked, before the last changes are sent.
    Parked,
}

/// Where moves stall (0: nowhere; else 1 + the phase's index).
static STALL_AT: AtomicU64 = AtomicU64::new(0);
/// Leave one change-log record out of each move.
static DROP_MOVE_CHANGE: AtomicBool = AtomicBool::new(false);
/// Drop the source's copy at park time.
static EARLY_DROP: AtomicBool = AtomicBool::new(false);
/// Serve without a lease.
static IGNORE_LEASE: AtomicBool = AtomicBool::new(false);
/// Promote replicas that are not in sync.
static PROMOTE_ANY: AtomicBool = AtomicBool::new(false);
/// Acknowledge before the replicas hold the write.
static ACK_EARLY: AtomicBool = AtomicBool::new(false);

/// Whether the node serves without a lease (`--fault-ignore-lease`).
#[inline]
pub fn ignore_lease() -> bool {
    IGNORE_LEASE.load(Ordering::Relaxed)
}

/// Whether a fencing leader marks every replica in sync first (`--fault-promote-any`).
pub fn promote_any() -> bool {
    PROMOTE_ANY.load(Ordering::Relaxed)
}

/// Whether replies go out before the in-sync replicas hold them (`--fault-ack-early`).
#[inline]
pub fn ack_early() -> bool {
    ACK_EARLY.load(Ordering::Relaxed)
}

/// Whether moves stall at `phase` (`--fault-stall-move-at`).
pub fn stall_move_at(phase: MovePhaseName) -> bool {
    STALL_AT.load(Ordering::Relaxed) == 1 + phase as u64
}

/// Whether each move leaves out one change-log record (`--fault-drop-move-change`).
pub fn drop_move_change() -> bool {
    DROP_MOVE_CHANGE.load(Ordering::Relaxed)
}

/// Whether a move drops the source's copy at park time (`--fault-early-drop`).
pub fn early_drop() -> bool {
    EARLY_DROP.load(Ordering::Relaxed)
}

/// Applies the fault settings; called once at start, before the savefile is loaded.
pub fn install(config: &Config) {
    STALL_AT.store(
        config.fault_stall_move_at.map_or(0, |p| 1 + p as u64),
        Ordering::Relaxed,
    );
    DROP_MOVE_CHANGE.store(config.fault_drop_move_change, Ordering::Relaxed);
    EARLY_DROP.store(config.fault_early_drop, Ordering::Relaxed);
    if let Some(phase) = config.fault_stall_move_at {
        tracing::warn!(?phase, "FAULT INJECTION: bucket moves stall");
    }
    if config.fault_drop_move_change {
        tracing::warn!("FAULT INJECTION: bucket moves leave out a change-log record");
    }
    if config.fault_early_drop {
        tracing::warn!("FAULT INJECTION: bucket moves drop the source's copy at park time");
    }
    IGNORE_LEASE.store(config.fault_ignore_lease, Ordering::Relaxed);
    PROMOTE_ANY.store(config.fault_promote_any, Ordering::Relaxed);
    ACK_EARLY.store(config.fault_ack_early, Ordering::Relaxed);
    for (on, what) in [
        (config.fault_ignore_lease, "serving without a lease"),
        (
            config.fault_promote_any,
            "fencing promotes replicas that are not in sync",
        ),
        (
            config.fault_ack_early,
            "acknowledging before the replicas hold the write",
        ),
    ] {
        if on {
            tracing::warn!("FAULT INJECTION: {what}");
        }
    }
    DROP_EVERY.store(config.fault_drop_writes, Ordering::Relaxed);
    IGNORE_TABLE.store(config.fault_ignore_table, Ordering::Relaxed);
    if config.fault_ignore_table {
        tracing::warn!("FAULT INJECTION: serving every bucket, ignoring the bucket table");
    }
    if config.fault_drop_writes > 0 {
        tracing::warn!(
            every = config.fault_drop_writes,
            "FAULT INJECTION: dropping acknowledged writes"
        );
    }
    if let (true, Some(dir)) = (config.fault_old_savefile, config.data_dir.as_deref()) {
        if let Err(e) = swap_in_old_savefile(dir) {
            tracing::error!(error = %e, "FAULT INJECTION: could not swap savefiles");
        }
    }
}

/// Whether this SET is to be acknowledged without being stored.
pub fn drop_write() -> bool {
    let every = DROP_EVERY.load(Ordering::Relaxed);
    every > 0 && SETS.fetch_add(1, Ordering::Relaxed) % every == every - 1
}

/// Whether the node serves every bucket regardless of the applied table
/// (`--fault-ignore-table`).
#[inline]
pub fn ignore_table() -> bool {
    IGNORE_TABLE.load(Ordering::Relaxed)
}

/// Cuts this node off from every peer (`true`, SIGUSR1) or heals it (`false`, SIGUSR2).
pub fn cut_peers(cut: bool) {
    let changed = PEERS_CUT.send_replace(cut) != cut;
    match (cut, changed) {
        (true, true) => tracing::warn!("FAULT INJECTION: peers cut off"),
        (false, true) => tracing::warn!("FAULT INJECTION: peers healed"),
        (true, false) => tracing::warn!("FAULT INJECTION: peers already cut off"),
        (false, false) => tracing::warn!("FAULT INJECTION: peers not cut off; nothing to heal"),
    }
}

/// Whether this node is cut off from its peers now.
pub fn peers_cut() -> bool {
    *PEERS_CUT.borrow()
}

/// Completes once this node is cut off from its peers (at once when it is now).
pub async fn until_peers_cut() {
    let mut rx = PEERS_CUT.subscribe();
    // The sender is a static, never dropped, so this ends only when the switch is on.
    let _ = rx.wait_for(|cut| *cut).await;
}

/// Puts the previous savefile (if kept) in place of the current one, and keeps the current
/// one for next time.
fn swap_in_old_savefile(dir: &Path) -> std::io::Result<()> {
    let current = dir.join(SAVEFILE);
    if !current.exists() {
        return Ok(());
    }
    let old = dir.join(OLD_SAVEFILE);
    let keep = dir.join("fault-old-savefile.next");
    std::fs::copy(&current, &keep)?;
    if old.exists() {
        std::fs::rename(&old, &current)?;
        tracing::warn!("FAULT INJECTION: loading the savefile before last");
    }
    std::fs::rename(&keep, &old)
}
