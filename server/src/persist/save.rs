//! Writing a savefile: the store's buckets, snapshot by snapshot, into `savefile.tmp` through
//! a background writing thread, then fsync, rename over `savefile`, and fsync the directory.
//! At every moment `savefile` is the previous complete save or the new one, never a part.
//! The byte format is [`super::savefile`]'s; when to save is [`super::Persistence`]'s.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::direct::{self, AlignedBuf};
use super::savefile::{self, Header, Owned, SavefileWriter};
use super::{mb_per_s, PersistError, PROGRESS_EVERY, SAVEFILE, SAVEFILE_TMP};
use crate::datadir::sync_dir;
use crate::store::Store;

/// Buffer between the savefile writer and the file (4 MiB, a multiple of
/// [`direct::DIRECT_ALIGN`]).
const WRITE_BUFFER: usize = 4 << 20;
/// Full write buffers queued for the writing threads; with the one being filled and the
/// ones being written, this bounds a save's extra memory to about 30 MiB.
const BUFFERS_IN_FLIGHT: usize = 4;

/// What a save wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveSummary {
    /// Items written.
    pub items: u64,
    /// Size of the savefile, in bytes.
    pub bytes: u64,
    /// Time taken, fsync and rename included.
    pub duration: Duration,
}

/// Writes a savefile of `store` into `dir` (temporary file, fsync, rename, directory fsync):
/// every bucket that is not hidden, or with `owned` (a cluster node) only the buckets it
/// lists, and the list itself (the OWNED block). `cancelled` is asked between batches of items; when it says yes the save stops, the
/// temporary file is removed and [`PersistError::Cancelled`] returned.
///
/// # Errors
/// [`PersistError::Io`] naming the step that failed; [`PersistError::Cancelled`].
pub fn save(
    store: &Store,
    dir: &Path,
    header: &Header,
    owned: Option<&Owned>,
    cancelled: &dyn Fn() -> bool,
) -> Result<SaveSummary, PersistError> {
    let started = Instant::now();
    let tmp = dir.join(SAVEFILE_TMP);
    let dst = dir.join(SAVEFILE);
    let (file, direct) = direct::create(&tmp).map_err(PersistError::io("create", &tmp))?;
    let written = write_savefile(store, file, direct, header, owned, &tmp, cancelled);
    let totals = match written {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &dst).map_err(PersistError::io("rename the new savefile to", &dst))?;
    sync_dir(dir).map_err(PersistError::io("fsync the directory", dir))?;
    Ok(SaveSummary {
        items: totals.items,
        bytes: totals.file_bytes,
        duration: started.elapsed(),
    })
}

fn write_savefile(
    store: &Store,
    file: File,
    direct: bool,
    header: &Header,
    owned: Option<&Owned>,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<savefile::Totals, PersistError> {
    let write_err = PersistError::io("write", path);
    let buffered = BackgroundWriter::new(file, direct, path)
        .map_err(PersistError::io("start writing", path))?;
    let mut w = match SavefileWriter::new(buffered, header) {
        Ok(w) => w,
        Err(e) => return Err(write_err(e)),
    };
    let buckets = store.buckets();
    // A hidden bucket is a copy being made (not ours yet): it is not saved; nor, in a
    // cluster, a bucket this node does not serve.
    let saved = |b: u32| {
        !store.is_bucket_hidden(b)
            && owned.is_none_or(|o| o.buckets.binary_search_by_key(&b, |&(x, _)| x).is_ok())
    };
    let mut last_report = Instant::now();
    let started = last_report;
    for bucket in 0..buckets {
        if !saved(bucket) {
            continue;
        }
        let mut snapshot = store.snapshot_bucket(bucket);
        if let Err(e) = w.begin_bucket(bucket, snapshot.start_seq()) {
            return Err(PersistError::io("write", path)(e));
        }
        while let Some(batch) = snapshot.next_batch() {
            if cancelled() {
                return Err(PersistError::Cancelled);
            }
            for item in &batch {
                if let Err(e) = w.push(&item.as_record()) {
                    return Err(PersistError::io("write", path)(e));
                }
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let t = w.totals();
            tracing::info!(
                buckets_done = bucket + 1,
                buckets,
                items = t.items,
                mb = t.file_bytes >> 20,
                mb_per_s = mb_per_s(t.file_bytes, started.elapsed()),
                "saving"
            );
        }
    }
    if cancelled() {
        return Err(PersistError::Cancelled);
    }
    // Taken after every item was copied, so they cover every write the file holds (and the
    // writes made while saving): a node loading the file never gives a seq twice.
    let seqs = (0..buckets)
        .filter(|&b| saved(b))
        .map(|b| (b, store.bucket_stats(b).seq))
        .filter(|&(_, seq)| seq != 0);
    w.bucket_seqs(seqs)
        .map_err(PersistError::io("write", path))?;
    if let Some(owned) = owned {
        w.owned(owned).map_err(PersistError::io("write", path))?;
    }
    let (buffered, totals) = w.finish().map_err(PersistError::io("write", path))?;
    let file = buffered.finish().map_err(PersistError::io("write", path))?;
    file.sync_all().map_err(PersistError::io("fsync", path))?;
    Ok(totals)
}

/// A [`Write`] that hands full buffers of [`WRITE_BUFFER`] bytes to [`WRITER_THREADS`]
/// threads writing them at their offsets in the file, so copying items out of the store
/// overlaps with the writes, and several writes are in flight at once (a direct write waits
/// for the device). Memory stays bounded: at most [`BUFFERS_IN_FLIGHT`] buffers wait for the
/// threads. With a direct file (see [`super::direct`]) every write is aligned; the last,
/// partial buffer is padded with zeros and the file cut back to its length. A direct write
/// the file system refuses is done again through the page cache.
struct BackgroundWriter {
    /// The buffer being filled.
    buf: AlignedBuf,
    /// File offset of the next buffer.
    offset: u64,
    /// Full buffers to the threads; `None` once finished.
    full: Option<SyncSender<AlignedBuf>>,
    /// Written buffers back from the threads, for reuse.
    empty: Receiver<AlignedBuf>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    /// The file, shared with the threads until they end; `None` once finished.
    file: Option<Arc<File>>,
    direct: bool,
}

/// Threads writing a savefile's buffers.
const WRITER_THREADS: usize = 2;

impl BackgroundWriter {
    fn new(file: File, direct: bool, path: &Path) -> io::Result<Self> {
        let (full, to_write) = sync_channel::<AlignedBuf>(BUFFERS_IN_FLIGHT);
        let to_write = Arc::new(Mutex::new(to_write));
        let (written, empty) = channel();
        let file = Arc::new(file);
        let mut threads = Vec::with_capacity(WRITER_THREADS);
        for _ in 0..WRITER_THREADS {
            let to_write = to_write.clone();
            let written = written.clone();
            let file = file.clone();
            let path = path.to_path_buf();
            let thread = std::thread::Builder::new()
                .name("shoald-save".into())
                .spawn(move || -> io::Result<()> {
                    let mut buffered: Option<File> = None;
                    loop {
                        let next = to_write
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        let Ok(chunk) = next else {
                            return Ok(());
                        };
                        let bytes = chunk.bytes();
                        let result = match &buffered {
                            Some(f) => f.write_all_at(bytes, chunk.offset),
                            None => file.write_all_at(bytes, chunk.offset),
                        };
                        match result {
                            Ok(()) => {}
                            // A direct write this file system does not take (alignment, or
                            // no O_DIRECT support): through the page cache from now on (the
                            // caller's fsync of the file covers those pages too).
                            Err(e) if direct && e.kind() == io::ErrorKind::InvalidInput => {
                                let f = fs::OpenOptions::new().write(true).open(&path)?;
                                f.write_all_at(bytes, chunk.offset)?;
                                buffered = Some(f);
                            }
                            Err(e) => return Err(e),
                        }
                        let _ = written.send(chunk);
                    }
                })?;
            threads.push(thread);
        }
        Ok(Self {
            buf: AlignedBuf::new(WRITE_BUFFER),
            offset: 0,
            full: Some(full),
            empty,
            threads,
            file: Some(file),
            direct,
        })
    }

    /// Hands the current buffer to the threads.
    fn send(&mut self) -> io::Result<()> {
        let mut next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| AlignedBuf::new(WRITE_BUFFER));
        next.len = 0;
        next.offset = self.offset + self.buf.len as u64;
        let buf = std::mem::replace(&mut self.buf, next);
        self.offset = self.buf.offset;
        let sent = self.full.as_ref().map(|tx| tx.send(buf).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // A thread stopped: it failed to write. Its error is the one to report.
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("the savefile writing thread stopped")))
    }

    /// Stops the threads once they wrote what is queued; the first error of any of them.
    fn join(&mut self) -> io::Result<()> {
        self.full = None;
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the savefile writing thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Writes what is left, waits for the threads and returns the file (not yet synced),
    /// cut to the length written.
    fn finish(mut self) -> io::Result<File> {
        let len = self.offset + self.buf.len as u64;
        if self.buf.len > 0 {
            if self.direct {
                // Padded to the alignment; the file is cut back below.
                self.buf.pad();
            }
            self.send()?;
        }
        self.join()?;
        let file = self
            .file
            .take()
            .and_then(|f| Arc::try_unwrap(f).ok())
            .ok_or_else(|| io::Error::other("the savefile is still shared by a writing thread"))?;
        if self.direct {
            file.set_len(len)?;
        }
        Ok(file)
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let n = self.buf.append(data);
            data = &data[n..];
            if self.buf.len == WRITE_BUFFER {
                self.send()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        // An abandoned save: let the threads finish what they have queued and end.
        if !self.threads.is_empty() {
            let _ = self.join();
        }
    }
}
