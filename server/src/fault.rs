//! Test-only faults, compiled in only with the `fault-injection` cargo feature and never in
//! default builds. They exist so the consistency-checker can prove it notices broken promises:
//!
//! - `--fault-drop-writes N`: one in N SETs is acknowledged without being stored.
//! - `--fault-old-savefile`: every start after the first loads the savefile written one stop
//!   earlier than the latest (it keeps a copy of each savefile it finds), so the node comes
//!   back with older values than it acknowledged.
//!
//! Build: `CARGO_TARGET_DIR=target/fault cargo build -p shoald --features fault-injection`.

use crate::config::Config;
use crate::persist::SAVEFILE;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Name of the copy of the previous savefile kept by `--fault-old-savefile`.
pub const OLD_SAVEFILE: &str = "fault-old-savefile";

/// Drop one in this many SETs (0: none).
static DROP_EVERY: AtomicU64 = AtomicU64::new(0);
/// SETs seen, for `DROP_EVERY`.
static SETS: AtomicU64 = AtomicU64::new(0);

/// Applies the fault settings; called once at start, before the savefile is loaded.
pub fn install(config: &Config) {
    DROP_EVERY.store(config.fault_drop_writes, Ordering::Relaxed);
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
