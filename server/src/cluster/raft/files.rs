//! The files in `data-dir/raft/`, their framing, and the storage error type.
//!
//! Every file is a sequence of framed records:
//!
//! ```text
//! len    u32 BE   payload length, 1..=MAX_RECORD
//! crc    u32 BE   crc32 (crc32fast) of the payload
//! payload         len bytes
//! ```
//!
//! - `log`: append-only, one record per write (see [`super::log_store`]).
//! - `vote`: one record (the vote as JSON), replaced atomically.
//! - `snapshot`: two records (the snapshot meta as JSON, then the snapshot bytes), replaced
//!   atomically.
//!
//! "Atomically" is: write `<name>.tmp`, fsync it, rename it over `<name>`, fsync the
//! directory. A leftover `.tmp` file is from a crash before the rename and is removed.

use crate::datadir::sync_dir;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory under the data directory that holds the Raft files.
pub const RAFT_DIR: &str = "raft";
/// The log file's name.
pub const LOG_FILE: &str = "log";
/// The vote file's name.
pub const VOTE_FILE: &str = "vote";
/// The snapshot file's name.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// The largest payload of one record: a longer length field is damage, and a longer record
/// is never written.
pub const MAX_RECORD: u32 = 64 << 20;
/// Bytes before a record's payload.
pub const HEADER: usize = 8;

/// What is wrong with a record in a Raft file.
#[derive(Debug)]
pub enum Damage {
    /// The record runs past the end of the file.
    Truncated,
    /// The length field is zero or over [`MAX_RECORD`].
    Length(u32),
    /// The payload does not match its CRC.
    Crc,
    /// The payload passed its CRC but does not decode.
    Decode(serde_json::Error),
    /// The file holds records after its last expected one.
    Trailing,
    /// A snapshot's meta and body name different log ids or memberships.
    Inconsistent,
    /// The file is longer than any such file can be (its length).
    FileTooLarge(u64),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Truncated => write!(f, "a record runs past the end of the file"),
            Damage::Length(len) => write!(f, "a record length of {len} bytes"),
            Damage::Crc => write!(f, "a record fails its CRC"),
            Damage::Decode(e) => write!(f, "a record does not decode: {e}"),
            Damage::Trailing => write!(f, "unexpected bytes after the last record"),
            Damage::Inconsistent => write!(f, "a snapshot's meta and body disagree"),
            Damage::FileTooLarge(len) => write!(f, "the file is {len} bytes, too long"),
        }
    }
}

/// Why the Raft storage cannot be opened or written.
#[derive(Debug)]
pub enum RaftStoreError {
    /// A file-system operation failed.
    Io {
        /// What was being done ("write", "fsync", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// A file is damaged in a way a crash cannot explain (a bad record with valid records
    /// after it, or a bad vote or snapshot file). The node must not start on it: exit code
    /// 4, like a damaged savefile.
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        damage: Damage,
    },
    /// A snapshot received from the leader does not decode or check out.
    BadSnapshot(Damage),
    /// A record to write is longer than [`MAX_RECORD`].
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A value did not encode as JSON.
    Encode(serde_json::Error),
    /// An earlier write to the log failed; the log takes no more writes (openraft stops on
    /// the first storage error anyway).
    Broken,
}

impl RaftStoreError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |error| RaftStoreError::Io {
            action,
            path,
            error,
        }
    }

    /// Whether this is damage on disk (the node exits with code 4) rather than an I/O
    /// failure.
    pub fn is_damaged(&self) -> bool {
        matches!(self, RaftStoreError::Damaged { .. })
    }
}

impl fmt::Display for RaftStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaftStoreError::Io {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
            RaftStoreError::Damaged {
                path,
                offset,
                damage,
            } => write!(
                f,
                "{} is damaged at byte {offset}: {damage}; restore it or remove the data \
                 directory's raft/ to rejoin as a new member",
                path.display()
            ),
            RaftStoreError::BadSnapshot(damage) => {
                write!(f, "a received snapshot is unusable: {damage}")
            }
            RaftStoreError::TooLarge { len } => write!(
                f,
                "a Raft record of {len} bytes is over the {MAX_RECORD}-byte limit"
            ),
            RaftStoreError::Encode(e) => write!(f, "cannot encode a Raft record: {e}"),
            RaftStoreError::Broken => write!(f, "the Raft log failed an earlier write"),
        }
    }
}

impl std::error::Error for RaftStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RaftStoreError::Io { error, .. } => Some(error),
            RaftStoreError::Damaged {
                damage: Damage::Decode(e),
                ..
            }
            | RaftStoreError::BadSnapshot(Damage::Decode(e))
            | RaftStoreError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// Appends one framed record holding `payload` to `out`.
///
/// # Errors
/// [`RaftStoreError::TooLarge`] for an empty payload or one over [`MAX_RECORD`] (nothing
/// is appended).
pub fn frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RaftStoreError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len > 0 && len <= MAX_RECORD)
        .ok_or(RaftStoreError::TooLarge { len: payload.len() })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads the framed record at `offset` in `buf`: its payload and the offset after it.
///
/// # Errors
/// What is wrong with the record; never reads out of bounds.
pub fn unframe(buf: &[u8], offset: usize) -> Result<(&[u8], usize), Damage> {
    let header = buf
        .get(offset..)
        .and_then(|rest| rest.get(..HEADER))
        .ok_or(Damage::Truncated)?;
    let mut word = [0u8; 4];
    word.copy_from_slice(&header[..4]);
    let len = u32::from_be_bytes(word);
    word.copy_from_slice(&header[4..]);
    let crc = u32::from_be_bytes(word);
    if len == 0 || len > MAX_RECORD {
        return Err(Damage::Length(len));
    }
    let start = offset + HEADER;
    let end = start + len as usize;
    let payload = buf.get(start..end).ok_or(Damage::Truncated)?;
    if crc32fast::hash(payload) != crc {
        return Err(Damage::Crc);
    }
    Ok((payload, end))
}

/// Reads a whole file, or `None` when it does not exist. Refuses a file over `limit`
/// bytes before reading it (as damage at offset 0).
pub fn read_file(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, RaftStoreError> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() > limit => Err(RaftStoreError::Damaged {
            path: path.to_path_buf(),
            offset: 0,
            damage: Damage::FileTooLarge(meta.len()),
        }),
        Ok(_) => fs::read(path)
            .map(Some)
            .map_err(RaftStoreError::io("read", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RaftStoreError::io("read", path)(e)),
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: `name.tmp`, fsync, rename,
/// directory fsync.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RaftStoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(RaftStoreError::io("create", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(RaftStoreError::io("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(RaftStoreError::io("rename to", &path))?;
    sync_dir(dir).map_err(RaftStoreError::io("fsync the directory", dir))
}

/// Removes `dir/name.tmp` if a crash left it behind.
pub fn remove_leftover(dir: &Path, name: &str) -> Result<(), RaftStoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::info!(path = %tmp.display(), "removed a temporary file left by a crash");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RaftStoreError::io("remove", &tmp)(e)),
    }
}

/// Wraps a storage error for openraft, which reports it and stops Raft.
pub fn to_storage(
    subject: openraft::ErrorSubject<crate::datadir::NodeId>,
    verb: openraft::ErrorVerb,
) -> impl FnOnce(RaftStoreError) -> super::types::StorageError {
    move |e| openraft::StorageError::from_io_error(subject, verb, io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_record_reads_back_and_every_damage_is_named() {
        let mut buf = Vec::new();
        frame(b"hello", &mut buf).unwrap();
        frame(b"world!", &mut buf).unwrap();
        let (first, next) = unframe(&buf, 0).unwrap();
        assert_eq!((first, next), (&b"hello"[..], HEADER + 5));
        let (second, end) = unframe(&buf, next).unwrap();
        assert_eq!((second, end), (&b"world!"[..], buf.len()));
        assert!(matches!(unframe(&buf, end), Err(Damage::Truncated)));
        assert!(matches!(
            unframe(&buf[..end - 1], next),
            Err(Damage::Truncated)
        ));
        assert!(matches!(
            unframe(&buf, usize::MAX - 3),
            Err(Damage::Truncated)
        ));

        let mut bad = buf.clone();
        bad[HEADER] ^= 1;
        assert!(matches!(unframe(&bad, 0), Err(Damage::Crc)));
        bad[..4].copy_from_slice(&(MAX_RECORD + 1).to_be_bytes());
        assert!(matches!(unframe(&bad, 0), Err(Damage::Length(_))));
        assert!(matches!(unframe(&[0; 8], 0), Err(Damage::Length(0))));
    }

    #[test]
    fn empty_and_oversized_payloads_are_not_framed() {
        let mut buf = Vec::new();
        assert!(matches!(
            frame(b"", &mut buf),
            Err(RaftStoreError::TooLarge { len: 0 })
        ));
        let big = vec![0u8; MAX_RECORD as usize + 1];
        assert!(matches!(
            frame(&big, &mut buf),
            Err(RaftStoreError::TooLarge { .. })
        ));
        assert!(buf.is_empty());
    }
}
