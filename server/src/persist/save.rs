//! Writing a savefile: the store's buckets, snapshot by snapshot, into `savefile.tmp` through
//! a background writing thread, then fsync, rename over `savefile`, and fsync the directory.
//! At every moment `savefile` is the previous complete save or the new one, never a part.
//! The byte format is [`super::savefile`]'s; when to save is [`super::Persistence`]'s.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::savefile::{self, Header, Owned, SavefileWriter};
use super::{mb_per_s, PersistError, PROGRESS_EVERY, SAVEFILE, SAVEFILE_TMP};
use crate::datadir::sync_dir;
use crate::store::Store;

/// Buffer between the savefile writer and the file (1 MiB).
const WRITE_BUFFER: usize = 1 << 20;
/// Full write buffers queued for the writing thread; with the one being filled, this bounds
/// a save's extra memory to about 6 MiB.
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
    let file = File::create(&tmp).map_err(PersistError::io("create", &tmp))?;
    let written = write_savefile(store, file, header, owned, &tmp, cancelled);
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
    header: &Header,
    owned: Option<&Owned>,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<savefile::Totals, PersistError> {
    let write_err = PersistError::io("write", path);
    let buffered = BackgroundWriter::new(file).map_err(PersistError::io("start writing", path))?;
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

/// A [`Write`] that hands full 1 MiB buffers to a thread writing them to the file, so copying
/// items out of the store overlaps with the kernel's write path (the slower part: copying
/// into the page cache and writeback throttling). Memory stays bounded: at most
/// [`BUFFERS_IN_FLIGHT`] buffers wait for the thread.
struct BackgroundWriter {
    /// The buffer being filled.
    buf: Vec<u8>,
    /// Full buffers to the thread; `None` once finished.
    full: Option<SyncSender<Vec<u8>>>,
    /// Written buffers back from the thread, for reuse.
    empty: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<File>>>,
}

impl BackgroundWriter {
    fn new(mut file: File) -> io::Result<Self> {
        let (full, to_write) = sync_channel::<Vec<u8>>(BUFFERS_IN_FLIGHT);
        let (written, empty) = channel();
        let thread = std::thread::Builder::new()
            .name("shoald-save".into())
            .spawn(move || {
                for buf in to_write {
                    file.write_all(&buf)?;
                    let _ = written.send(buf);
                }
                Ok(file)
            })?;
        Ok(Self {
            buf: Vec::with_capacity(WRITE_BUFFER),
            full: Some(full),
            empty,
            thread: Some(thread),
        })
    }

    /// Hands the current buffer to the thread.
    fn send(&mut self) -> io::Result<()> {
        let mut next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(WRITE_BUFFER));
        next.clear();
        let buf = std::mem::replace(&mut self.buf, next);
        let sent = self.full.as_ref().map(|tx| tx.send(buf).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: it failed to write. Its error is the one to report.
        self.full = None;
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("the savefile writing thread stopped")))
    }

    fn join(&mut self) -> io::Result<File> {
        self.full = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the savefile writing thread panicked"))),
            None => Err(io::Error::other("the savefile writer was already finished")),
        }
    }

    /// Writes what is left, waits for the thread and returns the file (not yet synced).
    fn finish(mut self) -> io::Result<File> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        // An abandoned save: let the thread finish what it has queued and end.
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}
