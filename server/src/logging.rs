//! Where the node's log lines go: standard error, or with `--log-file PATH` a file rotated
//! daily (`PATH.YYYY-MM-DD`), and reopening that file on request (SIGHUP, after an outside
//! tool such as logrotate moved it away).
//!
//! Colour: ANSI colour codes are written only when standard error is a terminal; a file or a
//! pipe (a service manager's journal, a redirect) gets plain text.
//!
//! ```text
//!  tracing ─> fmt layer ─> non-blocking channel ─> worker thread ─> LogFile ─> appender
//!                                                                   (swapped by reopen)
//! ```
//!
//! This module does not decide when to reopen; [`crate::signals`] does.

use std::fmt;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// Why logging could not be set up or the log file reopened.
#[derive(Debug)]
pub enum LogError {
    /// `--log-level` is not a filter tracing understands.
    BadLevel {
        /// The filter given.
        level: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log file cannot be used (no file name, not UTF-8, or cannot be created).
    BadFile {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::BadLevel { level, reason } => {
                write!(f, "bad --log-level {level:?}: {reason}")
            }
            LogError::BadFile { path, reason } => {
                write!(f, "cannot log to {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for LogError {}

/// The installed logging. Keep it alive until the process ends: dropping it flushes the
/// lines still queued for the log file.
pub struct Logging {
    /// Flushes the non-blocking writer's queue when dropped.
    _worker: Option<WorkerGuard>,
    /// The log file, when logging to one.
    file: Option<Arc<LogFile>>,
}

/// Reopens the log file; cheap to clone. A no-op when logging to standard error.
#[derive(Clone)]
pub struct LogReopener {
    file: Option<Arc<LogFile>>,
}

/// The daily-rotated log file, behind a lock so that it can be replaced while the writer
/// thread writes to it.
struct LogFile {
    /// The `--log-file` path as given (for messages).
    path: PathBuf,
    /// Its directory.
    dir: PathBuf,
    /// Its file name: the appender's prefix (files are `<prefix>.YYYY-MM-DD`).
    prefix: String,
    appender: Mutex<RollingFileAppender>,
}

impl LogFile {
    fn open(path: &Path) -> Result<LogFile, LogError> {
        let bad = |reason: &str| LogError::BadFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or_else(|| Path::new(".")).to_path_buf();
        let prefix = path
            .file_name()
            .ok_or_else(|| bad("the path has no file name"))?
            .to_str()
            .ok_or_else(|| bad("the file name is not UTF-8"))?
            .to_string();
        let appender = Self::appender(path, &dir, &prefix)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            dir,
            prefix,
            appender: Mutex::new(appender),
        })
    }

    fn appender(path: &Path, dir: &Path, prefix: &str) -> Result<RollingFileAppender, LogError> {
        RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(prefix)
            .build(dir)
            .map_err(|e| LogError::BadFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Opens (creates) the file at the configured path again and writes there from now on.
    fn reopen(&self) -> Result<(), LogError> {
        let fresh = Self::appender(&self.path, &self.dir, &self.prefix)?;
        let mut current = self.appender.lock().unwrap_or_else(PoisonError::into_inner);
        *current = fresh;
        Ok(())
    }
}

/// What the non-blocking worker thread writes to: the current [`LogFile`] appender.
struct LogFileWriter(Arc<LogFile>);

impl io::Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut appender = self
            .0
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        appender.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut appender = self
            .0
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        appender.flush()
    }
}

impl Logging {
    /// Installs the global subscriber: `level` as the filter, lines to `file` (rotated daily)
    /// or else to standard error, with colour only when standard error is a terminal.
    /// Call once per process. A plain level (`info`, ...) keeps openraft's own lines at
    /// `error`: its info and warn lines narrate routine Raft steps; `--log-level
    /// info,openraft=info` shows them.
    ///
    /// # Errors
    /// [`LogError::BadLevel`], or [`LogError::BadFile`] when the file cannot be created.
    pub fn init(level: &str, file: Option<&Path>) -> Result<Logging, LogError> {
        let directives = if level.contains("openraft") {
            level.to_string()
        } else {
            format!("{level},openraft=error")
        };
        let filter = tracing_subscriber::EnvFilter::try_new(&directives).map_err(|e| {
            LogError::BadLevel {
                level: level.to_string(),
                reason: e.to_string(),
            }
        })?;
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        match file {
            None => {
                builder
                    .with_writer(io::stderr)
                    .with_ansi(io::stderr().is_terminal())
                    .init();
                Ok(Logging {
                    _worker: None,
                    file: None,
                })
            }
            Some(path) => {
                let file = Arc::new(LogFile::open(path)?);
                let (writer, worker) = tracing_appender::non_blocking(LogFileWriter(file.clone()));
                builder.with_writer(writer).with_ansi(false).init();
                Ok(Logging {
                    _worker: Some(worker),
                    file: Some(file),
                })
            }
        }
    }

    /// A handle that reopens the log file.
    pub fn reopener(&self) -> LogReopener {
        LogReopener {
            file: self.file.clone(),
        }
    }
}

impl LogReopener {
    /// Opens the log file at its configured path again (creating it), so lines go there from
    /// now on and not to a file that was moved away. Returns the path, or `None` when the
    /// node logs to standard error (nothing to reopen).
    ///
    /// # Errors
    /// [`LogError::BadFile`] when the file cannot be created; logging goes on to the
    /// previous file.
    pub fn reopen(&self) -> Result<Option<&Path>, LogError> {
        match &self.file {
            None => Ok(None),
            Some(file) => file.reopen().map(|()| Some(file.path.as_path())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_moved_log_file_is_recreated_by_reopen() {
        let dir = std::env::temp_dir().join(format!("shoald-logging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Arc::new(LogFile::open(&dir.join("node.log")).unwrap());
        let mut writer = LogFileWriter(file.clone());
        writer.write_all(b"before\n").unwrap();
        let current = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("node.log")
                })
                .collect::<Vec<_>>()
        };
        let [first] = current().try_into().unwrap();
        let moved = dir.join("moved");
        std::fs::rename(&first, &moved).unwrap();
        file.reopen().unwrap();
        writer.write_all(b"after\n").unwrap();
        writer.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "before\n");
        let [second] = current().try_into().unwrap();
        assert_eq!(std::fs::read_to_string(second).unwrap(), "after\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_file_without_a_name_is_an_error() {
        assert!(matches!(
            LogFile::open(Path::new("/")),
            Err(LogError::BadFile { .. })
        ));
    }
}
