//! The node's data directory (`--data-dir`) and the node's identity.
//!
//! This module owns the directory itself: creating it, the lock that keeps a second node off
//! it for as long as the first one runs, and the node id kept in it. The modules that keep
//! files there own those files: [`crate::persist`] its savefiles, and next the cluster its
//! own state.
//!
//! ```text
//! data-dir/
//!   lock        locked (flock, exclusive) while a node runs; the OS releases it when the
//!               process ends, even on a crash
//!   node-id     32 hex digits, generated at the first start, kept for good
//!   savefile*   crate::persist's files
//! ```
//!
//! A node without a data directory has no directory to keep an id in: it gets a random
//! [`NodeId`] of its own at every start ([`NodeId::generate`]), never all zeros, so two such
//! nodes never share an id.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "lock";
/// Name of the node id file in the data directory.
pub const NODE_ID_FILE: &str = "node-id";

/// Defines a 128-bit identity newtype: printed and parsed as 32 hex digits (also in serde,
/// so it can key a JSON map), generated from the OS's random source, never all zeros.
macro_rules! id128 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 16]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_hex(&self.0, f)
            }
        }

        impl $name {
            /// Parses 32 hex digits (surrounding white space ignored).
            pub fn parse(s: &str) -> Option<$name> {
                parse_hex(s).map($name)
            }

            /// A new random id; never all zeros.
            pub fn generate() -> $name {
                $name(random_id())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text)
                    .ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
            }
        }
    };
}

id128! {
    /// A node's identity: 128 random bits, kept in the data directory (if there is one).
    NodeId
}

/// Small ids for openraft's storage test suite, which names its nodes by number: `n` in
/// the last 8 bytes, big-endian.
#[cfg(test)]
impl From<u64> for NodeId {
    fn from(n: u64) -> NodeId {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        NodeId(id)
    }
}

id128! {
    /// A cluster's identity: 128 random bits chosen by the node that creates the cluster,
    /// kept in the replicated state and in each member's data directory.
    ClusterId
}

fn fmt_hex(bytes: &[u8; 16], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// Fills `buf` from the OS's random source (`/dev/urandom`); false when it cannot be read.
pub fn os_random(buf: &mut [u8]) -> bool {
    File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, buf))
        .is_ok()
}

/// 16 random bytes (from the OS's random source, else from std's random hasher keys); never
/// all zeros.
fn random_id() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    if !os_random(&mut id) || id == [0; 16] {
        for half in id.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            half.copy_from_slice(&h.finish().to_be_bytes());
        }
    }
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

/// Why the data directory cannot be used.
#[derive(Debug)]
pub enum DataDirError {
    /// A file-system operation failed.
    Io {
        /// What was being done ("create", "lock", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// Another process holds the directory's lock (another node uses this directory).
    InUse {
        /// The data directory.
        path: PathBuf,
    },
    /// The node-id file does not hold an id.
    BadNodeId {
        /// The file.
        path: PathBuf,
    },
}

impl DataDirError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataDirError {
        let path = path.to_path_buf();
        move |error| DataDirError::Io {
            action,
            path,
            error,
        }
    }
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::Io {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
            DataDirError::InUse { path } => write!(
                f,
                "data directory {} is in use by another running node",
                path.display()
            ),
            DataDirError::BadNodeId { path } => write!(
                f,
                "{} does not hold a node id (32 hex digits); fix or remove it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataDirError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// An open data directory: locked for this node, with its node id read. The lock is held
/// until the value is dropped (or the process ends).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    node_id: NodeId,
    /// The exclusive lock on `<dir>/lock`: while it is held, no other node opens the
    /// directory, so two nodes never overwrite each other's files.
    _lock: File,
}

impl DataDir {
    /// Opens the data directory at `path`: creates it if missing, takes its lock, and reads
    /// the node id, generating and storing one (crash-safely) the first time.
    ///
    /// # Errors
    /// [`DataDirError::InUse`] when another node holds the lock; [`DataDirError::BadNodeId`]
    /// when the node-id file holds something else; [`DataDirError::Io`].
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(path).map_err(DataDirError::io("create the data directory", path))?;
        let lock = lock(path)?;
        let node_id = read_or_create_node_id(path)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            node_id,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node id kept in the directory.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The path of the file `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// fsyncs a directory, so a rename in it survives a power loss.
///
/// # Errors
/// The OS error.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Takes the exclusive lock on `<dir>/lock`, without waiting.
fn lock(dir: &Path) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(DataDirError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(DataDirError::InUse {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(DataDirError::io("lock", &path)(e)),
    }
}

/// Reads the node id in `dir`, generating and storing one the first time (temporary file,
/// fsync, rename, directory fsync).
fn read_or_create_node_id(dir: &Path) -> Result<NodeId, DataDirError> {
    let path = dir.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(&text).ok_or(DataDirError::BadNodeId { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = NodeId::generate();
            let tmp = dir.join("node-id.tmp");
            let mut f = File::create(&tmp).map_err(DataDirError::io("create", &tmp))?;
            writeln!(f, "{id}")
                .and_then(|()| f.sync_all())
                .map_err(DataDirError::io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(DataDirError::io("rename to", &path))?;
            sync_dir(dir).map_err(DataDirError::io("fsync the directory", dir))?;
            tracing::info!(node_id = %id, "generated a node id");
            Ok(id)
        }
        Err(e) => Err(DataDirError::io("read", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn the_directory_is_created_and_its_node_id_kept() {
        let dir = TempDir::new("create");
        let first = DataDir::open(&dir.0.join("nested")).unwrap();
        let id = first.node_id();
        assert_ne!(id, NodeId::default());
        assert_eq!(first.file(NODE_ID_FILE), dir.0.join("nested/node-id"));
        sync_dir(first.path()).unwrap();
        drop(first);
        let again = DataDir::open(&dir.0.join("nested")).unwrap();
        assert_eq!(again.node_id(), id);
        assert_eq!(again.path(), dir.0.join("nested"));
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_lives() {
        let dir = TempDir::new("lock");
        let first = DataDir::open(&dir.0).unwrap();
        let err = DataDir::open(&dir.0).unwrap_err();
        assert!(matches!(err, DataDirError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use by another running node"));
        drop(first);
        DataDir::open(&dir.0).unwrap();
    }

    #[test]
    fn a_bad_node_id_file_is_refused() {
        let dir = TempDir::new("bad-id");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join(NODE_ID_FILE), b"not an id\n").unwrap();
        let err = DataDir::open(&dir.0).unwrap_err();
        assert!(matches!(err, DataDirError::BadNodeId { .. }), "{err}");
    }

    #[test]
    fn node_ids_parse_and_print_as_32_hex_digits() {
        let id = NodeId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(NodeId::parse(&text), Some(id));
        assert_eq!(NodeId::parse("xyz"), None);
        assert_eq!(NodeId::parse(&"é".repeat(16)), None);
        assert_ne!(NodeId::generate(), id);
    }

    #[test]
    fn cluster_ids_are_written_like_node_ids() {
        let id = ClusterId::generate();
        assert_ne!(id, ClusterId::default());
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(ClusterId::parse(&format!(" {text}\n")), Some(id));
        assert_eq!(ClusterId::parse("0123"), None);
        assert_eq!(
            ClusterId::parse("000102030405060708090a0b0c0d0e0f").map(|c| c.0[15]),
            Some(15)
        );
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ClusterId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ClusterId>("\"zz\"").is_err());
    }
}
