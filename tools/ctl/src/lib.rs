//! `shoal-ctl`, the admin tool for a Shoal cluster.
//!
//! - [`status`]: `shoal-ctl --server ADDR status [--json]`, the whole cluster in one call.
//! - [`admin`]: `move`, `cancel-move`, `drain`, `pause`, `resume`: one change to the cluster.
//! - [`exit_code`]: what the process exit codes mean.
//!
//! The binary (`src/main.rs`) parses the command line and calls in here.

pub mod admin;
pub mod status;

/// The exit codes of `shoal-ctl`.
pub mod exit_code {
    /// The cluster is healthy; or the change was made.
    pub const HEALTHY: u8 = 0;
    /// The cluster is unhealthy: no leader, a member unreachable, or a bucket without a live
    /// primary. The report says which.
    pub const UNHEALTHY: u8 = 1;
    /// A change was refused (unknown node, a move in progress, no leader in time, ...);
    /// stderr says why.
    pub const REFUSED: u8 = 1;
    /// The command line is wrong (clap's code).
    pub const USAGE: u8 = 2;
    /// The server named by `--server` could not be reached or did not answer TABLE_GET.
    pub const SERVER_UNREACHABLE: u8 = 3;
}
