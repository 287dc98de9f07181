//! The cluster id file in the data directory: which cluster this node belongs to.
//!
//! ```text
//! data-dir/
//!   cluster-id   32 hex digits, written (crash-safely) when the node creates or joins a
//!                cluster; absent on a node that never belonged to one
//! ```
//!
//! A node restarted on its directory knows its cluster before Raft replays its log, so its
//! peer handshake can refuse another cluster's nodes from the first connection; a node
//! pointed at another cluster's seeds is refused by them.

use crate::datadir::{sync_dir, ClusterId};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Name of the cluster id file in the data directory.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

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
}
