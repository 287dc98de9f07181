//! The cluster secret (`--cluster-secret-file`) and the rule that keeps a node without one
//! from listening for peers where anyone could reach it.
//!
//! The file is read once, at start. Its content, less surrounding white space, is the key of
//! every handshake proof (HMAC-SHA256, see [`super::handshake`]). A node without a secret uses
//! the empty key: it can talk to other nodes without one, never to nodes with one, and it may
//! listen for peers on a loopback address only ([`check_peer_listen`]).

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest secret file accepted, in bytes: a secret is a line of random characters, and a
/// larger file is a wrong path (a log, a binary) more likely than a key.
pub const MAX_SECRET_FILE: usize = 4096;

/// The key both sides of a peer handshake prove they hold. Empty when the node has none.
/// `Debug` never prints it.
#[derive(Clone, Default)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_set() {
            f.write_str("ClusterSecret(<set>)")
        } else {
            f.write_str("ClusterSecret(<none>)")
        }
    }
}

/// A secret read from its file, with what start-up should warn about.
#[derive(Debug, Clone)]
pub struct LoadedSecret {
    /// The secret.
    pub secret: ClusterSecret,
    /// Whether the file's permissions let users other than its owner read or change it.
    pub open_to_others: bool,
}

impl ClusterSecret {
    /// No secret: the empty key.
    pub fn none() -> Self {
        Self::default()
    }

    /// A secret from its bytes, as given (tests, tools).
    pub fn from_bytes(key: &[u8]) -> Self {
        Self(Arc::from(key))
    }

    /// Whether there is a secret (the key is not empty).
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.0
    }

    /// Reads the secret file at `path`: at most [`MAX_SECRET_FILE`] bytes, white space around
    /// the secret removed.
    ///
    /// # Errors
    /// [`SecretError`] when the file cannot be read, is too large, or holds nothing but white
    /// space.
    pub fn load(path: &Path) -> Result<LoadedSecret, SecretError> {
        let unreadable = |error: std::io::Error| SecretError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mut bytes = Vec::new();
        // Read one byte past the cap, so a file that grew after the metadata was read is
        // still caught.
        file.take(MAX_SECRET_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() > MAX_SECRET_FILE {
            return Err(SecretError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let key = bytes.trim_ascii();
        if key.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        use std::os::unix::fs::PermissionsExt;
        Ok(LoadedSecret {
            secret: ClusterSecret::from_bytes(key),
            open_to_others: meta.permissions().mode() & 0o077 != 0,
        })
    }
}

/// Why the secret file cannot be used.
#[derive(Debug)]
pub enum SecretError {
    /// The file cannot be opened or read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The path is a directory or a device, not a file.
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_SECRET_FILE`].
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file holds nothing but white space.
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Unreadable { path, error } => {
                write!(
                    f,
                    "cannot read the cluster secret file {}: {error}",
                    path.display()
                )
            }
            SecretError::NotAFile { path } => {
                write!(
                    f,
                    "the cluster secret file {} is not a file",
                    path.display()
                )
            }
            SecretError::TooLarge { path } => write!(
                f,
                "the cluster secret file {} is larger than {MAX_SECRET_FILE} bytes",
                path.display()
            ),
            SecretError::Empty { path } => {
                write!(f, "the cluster secret file {} is empty", path.display())
            }
        }
    }
}

impl std::error::Error for SecretError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretError::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The rule that keeps a cluster closed to strangers: without a secret, the peer port may
/// listen on a loopback address only.
///
/// # Errors
/// A one-line reason, when `addr` is not loopback and there is no secret.
pub fn check_peer_listen(addr: SocketAddr, has_secret: bool) -> Result<(), String> {
    if has_secret || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "--peer-listen {addr} is not a loopback address and there is no --cluster-secret-file: \
         anyone who can reach the port could join the cluster; give a secret file or listen \
         on 127.0.0.1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_file_is_read_and_trimmed() {
        let dir = TempDir::new("secret-ok");
        let path = dir.path().join("secret");
        std::fs::write(&path, b"  s3cret value\n\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = ClusterSecret::load(&path).unwrap();
        assert_eq!(loaded.secret.key(), b"s3cret value");
        assert!(loaded.secret.is_set());
        assert!(!loaded.open_to_others);
        assert_eq!(format!("{:?}", loaded.secret), "ClusterSecret(<set>)");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ClusterSecret::load(&path).unwrap().open_to_others);
    }

    #[test]
    fn bad_secret_files_are_refused_with_a_reason() {
        let dir = TempDir::new("secret-bad");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b" \n\t\n").unwrap();
        let err = ClusterSecret::load(&empty).unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("is empty"), "{err}");

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_FILE + 1]).unwrap();
        let err = ClusterSecret::load(&big).unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err}");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_FILE]).unwrap();
        assert_eq!(ClusterSecret::load(&big).unwrap().secret.key().len(), 4096);

        let missing = dir.path().join("missing");
        let err = ClusterSecret::load(&missing).unwrap_err();
        assert!(matches!(err, SecretError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("cannot read"), "{err}");

        let err = ClusterSecret::load(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                SecretError::NotAFile { .. } | SecretError::Unreadable { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn no_secret_means_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:7402".parse().unwrap();
        let lo6: SocketAddr = "[::1]:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7402".parse().unwrap();
        let public: SocketAddr = "10.1.2.3:7402".parse().unwrap();
        assert!(check_peer_listen(lo, false).is_ok());
        assert!(check_peer_listen(lo6, false).is_ok());
        assert!(check_peer_listen(any, true).is_ok());
        let reason = check_peer_listen(any, false).unwrap_err();
        assert!(reason.contains("not a loopback address"), "{reason}");
        assert!(!reason.contains('\n'));
        assert!(check_peer_listen(public, false).is_err());
        assert!(!ClusterSecret::none().is_set());
        assert_eq!(
            format!("{:?}", ClusterSecret::none()),
            "ClusterSecret(<none>)"
        );
    }
}
