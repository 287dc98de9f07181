//! `shoald`, the Shoal node.
//!
//! - [`cluster`]: the control plane: membership and the bucket table (Raft), ownership.
//! - [`keyspace`]: the one door from every protocol to the data.
//! - [`store`]: the storage engine (slab memory, per-bucket indexes, eviction, expiry).
//! - [`net`]: listeners, the connection driver, and the two protocols (native, memcached text).
//! - [`cluster`]: the cluster layer; so far its peer port ([`cluster::peer`]).
//! - [`config`]: every setting, with defaults and validation.
//! - [`datadir`]: the data directory, its lock, and the node id.
//! - [`persist`]: savefiles in the data directory (format in [`persist::savefile`]).
//! - [`server`]: [`server::run`], which serves until a shutdown future completes.
//! - [`signals`]: what each process signal does to a running node.
//! - [`logging`]: log lines to standard error or a daily-rotated file, reopened on SIGHUP.
//! - [`ready`]: the ready line `shoald` prints once it serves, written and parsed.
//! - [`stats`]: server-wide counters.
//! - [`testing`]: an in-process server for tests.
#![warn(missing_docs)]

pub mod cluster;
pub mod config;
pub mod datadir;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod keyspace;
pub mod logging;
pub mod net;
pub mod persist;
pub mod ready;
pub mod server;
pub mod signals;
pub mod stats;
pub mod store;
pub mod testing;

pub use config::Config;
pub use server::{prepare, run, serve, start_cluster, Listeners, Node, RunError};
