//! Savefile I/O that bypasses the page cache (`O_DIRECT`) where the file system allows it,
//! and the aligned buffers it needs.
//!
//! A savefile is written once at stop and read once at start. Going through the page cache
//! costs a kernel copy of every byte on each side (on the measured machine that copy, not
//! the disk, bounded a buffered save to about 260 MB/s) and leaves the file's pages to be
//! flushed at fsync. Direct I/O moves the bytes between the disk and these buffers. It needs
//! file offsets, lengths and buffer addresses aligned to [`DIRECT_ALIGN`]; the callers
//! ([`super::save`], [`super::load`]) keep to that, and fall back to buffered I/O when a
//! file system refuses direct access (at open, or with `InvalidInput` on a transfer).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Alignment of direct transfers: file offsets, lengths and buffer addresses are multiples
/// of it (4 KiB covers every common logical block size).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// A buffer of `capacity` bytes at an address aligned to [`DIRECT_ALIGN`], holding `len`
/// bytes of the file at `offset`.
pub(crate) struct AlignedBuf {
    data: Vec<u8>,
    start: usize,
    capacity: usize,
    /// Bytes held.
    pub len: usize,
    /// File offset of the first byte.
    pub offset: u64,
}

impl AlignedBuf {
    /// An empty buffer; `capacity` must be a multiple of [`DIRECT_ALIGN`].
    pub(crate) fn new(capacity: usize) -> AlignedBuf {
        debug_assert!(capacity.is_multiple_of(DIRECT_ALIGN));
        let data = vec![0u8; capacity + DIRECT_ALIGN];
        let misalign = data.as_ptr() as usize % DIRECT_ALIGN;
        AlignedBuf {
            data,
            start: (DIRECT_ALIGN - misalign) % DIRECT_ALIGN,
            capacity,
            len: 0,
            offset: 0,
        }
    }

    /// Bytes that fit.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    /// The whole buffer (aligned start, `capacity` bytes), to fill.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.capacity]
    }

    /// Appends as much of `data` as fits; returns how much did.
    pub(crate) fn append(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.data[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Pads the bytes held with zeros up to a multiple of [`DIRECT_ALIGN`] (for the last
    /// direct write of a file, which is cut back to its length afterwards).
    pub(crate) fn pad(&mut self) {
        let padded = self.len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let (from, to) = (self.start + self.len, self.start + padded);
        self.data[from..to].fill(0);
        self.len = padded;
    }
}

/// Creates (or truncates) `path` for writing, direct if the file system allows. Returns the
/// file and whether it is direct.
pub(crate) fn create(path: &Path) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    open_maybe_direct(&options, path)
}

/// Opens `path` for reading, direct if the file system allows. Returns the file and whether
/// it is direct.
pub(crate) fn open(path: &Path) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true);
    open_maybe_direct(&options, path)
}

fn open_maybe_direct(options: &OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = options.clone();
        if let Ok(file) = direct.custom_flags(libc::O_DIRECT).open(path) {
            return Ok((file, true));
        }
    }
    options.open(path).map(|f| (f, false))
}
