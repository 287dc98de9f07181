//! [`PersistError`]: why a persistence step failed, and which failures the node reports
//! with an exit code of their own.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::savefile::SavefileError;
use crate::datadir::DataDirError;

/// Why a persistence step failed.
#[derive(Debug)]
pub enum PersistError {
    /// The node has no data directory.
    Disabled,
    /// Another save is running.
    Busy,
    /// The save was stopped (shutdown deadline reached); no savefile was written.
    Cancelled,
    /// A file-system operation failed.
    Io {
        /// What was being done ("create", "rename", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The savefile failed a check: refuse to start (exit code 4) unless told to discard it.
    Damaged {
        /// The savefile.
        path: PathBuf,
        /// The check that failed.
        error: SavefileError,
    },
    /// The data directory could not be opened: in use by another node, a bad node-id file,
    /// or a file-system error.
    DataDir(DataDirError),
}

impl PersistError {
    /// Whether this is a damaged savefile (the node exits with `exit_code::BAD_SAVEFILE`).
    pub fn is_damaged_savefile(&self) -> bool {
        matches!(self, PersistError::Damaged { .. })
    }

    pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.to_path_buf();
        move |error| PersistError::Io {
            action,
            path,
            error,
        }
    }
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Disabled => {
                f.write_str("persistence is off: the node was started without --data-dir")
            }
            PersistError::Busy => f.write_str("a save is already running"),
            PersistError::Cancelled => {
                f.write_str("the save was stopped before it completed; no savefile was written")
            }
            PersistError::Io {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
            PersistError::Damaged { path, error } => write!(
                f,
                "savefile {} is damaged: {error}. Move it away, or start with \
                 --discard-bad-savefile to set it aside and start empty",
                path.display()
            ),
            PersistError::DataDir(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PersistError::Io { error, .. } => Some(error),
            PersistError::Damaged { error, .. } => Some(error),
            PersistError::DataDir(e) => Some(e),
            PersistError::Disabled | PersistError::Busy | PersistError::Cancelled => None,
        }
    }
}

impl From<DataDirError> for PersistError {
    fn from(e: DataDirError) -> Self {
        PersistError::DataDir(e)
    }
}
