//! The cluster id file in the data directory: which cluster this node belongs to.
//!
//! ```text
//! data-dir/
//!   cluster-id   32 hex digits, written (crash-safely) when the node creates or joins a
//!                cluster; absent on a node that never belonged to one
//!   rejoin       peer addresses, one per line: the node handed all its buckets off and left
//!                its cluster; started again, it joins through them as a new member
//! ```
//!
//! A node restarted on its directory knows its cluster before Raft replays its log, so its
//! peer handshake can refuse another cluster's nodes from the first connection; a node
//! pointed at another cluster's seeds is refused by them.

use crate::datadir::{sync_dir, ClusterId, NODE_ID_FILE};
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Name of the cluster id file in the data directory.
pub const CLUSTER_ID_FILE: &str = "cluster-id";
/// Name of the file of seeds a node that left its cluster rejoins through.
pub const REJOIN_FILE: &str = "rejoin";

/// Why the cluster id file cannot be used.
#[derive(Debug)]
pub enum IdentityError {
    /// Reading or writing it failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// It holds something else than an id.
    Bad {
        /// The file.
        path: PathBuf,
    },
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::Io { path, error } => {
                write!(f, "cannot use {}: {error}", path.display())
            }
            IdentityError::Bad { path } => write!(
                f,
                "{} does not hold a cluster id (32 hex digits); fix or remove it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

/// The cluster id kept in `dir`, if the node ever belonged to a cluster.
///
/// # Errors
/// [`IdentityError`] when the file exists but cannot be read or parsed.
pub fn read_cluster_id(dir: &Path) -> Result<Option<ClusterId>, IdentityError> {
    let path = dir.join(CLUSTER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => ClusterId::parse(&text)
            .map(Some)
            .ok_or(IdentityError::Bad { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(IdentityError::Io { path, error }),
    }
}

/// Keeps `id` in `dir` (temporary file, fsync, rename, directory fsync).
///
/// # Errors
/// [`IdentityError::Io`].
pub fn write_cluster_id(dir: &Path, id: ClusterId) -> Result<(), IdentityError> {
    let path = dir.join(CLUSTER_ID_FILE);
    let tmp = dir.join("cluster-id.tmp");
    let io = |error| IdentityError::Io {
        path: path.clone(),
        error,
    };
    let mut f = File::create(&tmp).map_err(io)?;
    writeln!(f, "{id}")
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir).map_err(io)
}

/// After the node handed every bucket off and left its cluster: keeps `seeds` (the peer
/// addresses of the members that stay) in the rejoin file, then forgets the cluster: its id,
/// the Raft files in `raft_dir`, and the node id (a removed id never comes back, so the next
/// start is a new member that joins through the seeds).
///
/// # Errors
/// [`IdentityError::Io`].
pub fn forget_cluster(dir: &Path, raft_dir: &Path, seeds: &[String]) -> Result<(), IdentityError> {
    let path = dir.join(REJOIN_FILE);
    let tmp = dir.join("rejoin.tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| IdentityError::Io { path, error }
    };
    let mut f = File::create(&tmp).map_err(io(&path))?;
    for seed in seeds {
        writeln!(f, "{seed}").map_err(io(&path))?;
    }
    f.sync_all().map_err(io(&path))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    for file in [CLUSTER_ID_FILE, NODE_ID_FILE] {
        let p = dir.join(file);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&p)(e)),
            _ => {}
        }
    }
    match fs::remove_dir_all(raft_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(raft_dir)(e)),
        _ => {}
    }
    sync_dir(dir).map_err(io(dir))
}

/// The seeds a node that left its cluster rejoins through (empty when it did not leave).
/// Lines that are not socket addresses are skipped.
///
/// # Errors
/// [`IdentityError::Io`] when the file exists but cannot be read.
pub fn read_rejoin(dir: &Path) -> Result<Vec<SocketAddr>, IdentityError> {
    let path = dir.join(REJOIN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(IdentityError::Io { path, error }),
    }
}

/// Removes the rejoin file once the node joined again.
pub fn clear_rejoin(dir: &Path) {
    let _ = fs::remove_file(dir.join(REJOIN_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn the_cluster_id_is_kept_and_a_bad_file_refused() {
        let dir = TempDir::new("cluster-id");
        fs::create_dir_all(&dir.0).unwrap();
        assert!(read_cluster_id(&dir.0).unwrap().is_none());
        let id = ClusterId::generate();
        write_cluster_id(&dir.0, id).unwrap();
        assert_eq!(read_cluster_id(&dir.0).unwrap(), Some(id));
        fs::write(dir.0.join(CLUSTER_ID_FILE), "nope").unwrap();
        let err = read_cluster_id(&dir.0).unwrap_err();
        assert!(
            err.to_string().contains("does not hold a cluster id"),
            "{err}"
        );
    }

    #[test]
    fn a_node_that_left_forgets_its_cluster_and_keeps_its_seeds() {
        let dir = TempDir::new("forget");
        let raft = dir.0.join("raft");
        fs::create_dir_all(&raft).unwrap();
        fs::write(raft.join("log"), "x").unwrap();
        fs::write(dir.0.join(NODE_ID_FILE), "id").unwrap();
        write_cluster_id(&dir.0, ClusterId::generate()).unwrap();
        assert!(read_rejoin(&dir.0).unwrap().is_empty());
        let seeds = ["127.0.0.1:7001".to_string(), "not an address".to_string()];
        forget_cluster(&dir.0, &raft, &seeds).unwrap();
        assert!(read_cluster_id(&dir.0).unwrap().is_none());
        assert!(!raft.exists() && !dir.0.join(NODE_ID_FILE).exists());
        assert_eq!(
            read_rejoin(&dir.0).unwrap(),
            vec!["127.0.0.1:7001".parse::<SocketAddr>().unwrap()]
        );
        clear_rejoin(&dir.0);
        assert!(read_rejoin(&dir.0).unwrap().is_empty());
    }
}
