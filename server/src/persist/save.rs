//! Writing a savefile: the store's buckets, snapshot by snapshot, encoded straight from the
//! store's memory into blocks, which a second thread checksums into write buffers and two
//! more write into `savefile.tmp`; then fsync, rename over `savefile`, and fsync the directory.
//! At every moment `savefile` is the previous complete save or the new one, never a part.
//! The byte format is [`super::savefile`]'s; when to save is [`super::Persistence`]'s.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use super::direct::{self, AlignedBuf};
use super::savefile::{self, Header, ItemsBlock, Owned, SavefileWriter};
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
    let write_err = |e: io::Error| PersistError::io("write", path)(e);
    let buffered = BackgroundWriter::new(file, direct, path)
        .map_err(PersistError::io("start writing", path))?;
    let w = SavefileWriter::new(buffered, header).map_err(&write_err)?;
    let block_size = w.block_size();
    // This thread encodes the items into blocks; a second one checksums each block and
    // copies it into the write buffers (see BlockWriter).
    let mut w = std::thread::scope(|scope| {
        let mut blocks = BlockWriter::new(scope, w, block_size).map_err(&write_err)?;
        let encoded = encode_buckets(store, owned, &mut blocks, path, cancelled);
        let w = blocks.finish().map_err(&write_err);
        encoded.and(w)
    })?;
    // Taken after every item was copied, so they cover every write the file holds (and the
    // writes made while saving): a node loading the file never gives a seq twice.
    let buckets = store.buckets();
    let seqs = (0..buckets)
        .filter(|&b| is_saved(store, owned, b))
        .map(|b| (b, store.bucket_stats(b).seq))
        .filter(|&(_, seq)| seq != 0);
    w.bucket_seqs(seqs).map_err(&write_err)?;
    if let Some(owned) = owned {
        w.owned(owned).map_err(&write_err)?;
    }
    let (buffered, totals) = w.finish().map_err(&write_err)?;
    let file = buffered.finish().map_err(&write_err)?;
    file.sync_all().map_err(PersistError::io("fsync", path))?;
    Ok(totals)
}

/// Whether `bucket` goes into the savefile. A hidden bucket is a copy being made (not ours
/// yet): it is not saved; nor, in a cluster, a bucket this node does not serve.
fn is_saved(store: &Store, owned: Option<&Owned>, bucket: u32) -> bool {
    !store.is_bucket_hidden(bucket)
        && owned.is_none_or(|o| o.buckets.binary_search_by_key(&bucket, |&(b, _)| b).is_ok())
}

/// Encodes every saved bucket's items into blocks, straight from the store's memory under
/// each batch's partition lock, and hands the full blocks to `blocks`.
fn encode_buckets(
    store: &Store,
    owned: Option<&Owned>,
    blocks: &mut BlockWriter<'_>,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), PersistError> {
    let write_err = |e: io::Error| PersistError::io("write", path)(e);
    let buckets = store.buckets();
    let (mut items, mut bytes) = (0u64, 0u64);
    let mut block = blocks.empty_block(0, 0);
    let mut last_report = Instant::now();
    let started = last_report;
    for bucket in 0..buckets {
        if !is_saved(store, owned, bucket) {
            continue;
        }
        let mut snapshot = store.snapshot_bucket(bucket);
        block.reset(bucket, snapshot.start_seq());
        loop {
            if cancelled() {
                return Err(PersistError::Cancelled);
            }
            let (mut full, mut refused) = (false, None);
            let visited = snapshot.visit_batch(|item, expires_at| {
                match block.append_item(item, expires_at) {
                    Ok(true) => return ControlFlow::Continue(()),
                    Ok(false) => full = true,
                    Err(e) => refused = Some(e),
                }
                ControlFlow::Break(())
            });
            if let Some(e) = refused {
                return Err(write_err(e));
            }
            // A full block, or the bucket's last one, is handed over without the lock.
            if (full || visited.is_none()) && !block.is_empty() {
                items += u64::from(block.count());
                bytes += block.bytes();
                block = blocks.send(block).map_err(&write_err)?;
            }
            if visited.is_none() {
                break;
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            tracing::info!(
                buckets_done = bucket + 1,
                buckets,
                items,
                mb = bytes >> 20,
                mb_per_s = mb_per_s(bytes, started.elapsed()),
                "saving"
            );
        }
    }
    Ok(())
}

/// Encoded blocks queued for the [`BlockWriter`]'s thread (about 1 MiB each).
const BLOCKS_IN_FLIGHT: usize = 2;

/// A thread that checksums and writes encoded ITEMS blocks through the [`SavefileWriter`],
/// in the order they are sent, and hands them back emptied for reuse. It takes the
/// checksum and the copy into the write buffers off the thread that encodes the items.
struct BlockWriter<'scope> {
    /// Blocks to write; `None` once stopped.
    full: Option<SyncSender<ItemsBlock>>,
    /// Written blocks back from the thread.
    empty: Receiver<ItemsBlock>,
    thread: Option<ScopedJoinHandle<'scope, io::Result<SavefileWriter<BackgroundWriter>>>>,
    block_size: usize,
}

impl<'scope> BlockWriter<'scope> {
    fn new<'env>(
        scope: &'scope Scope<'scope, 'env>,
        mut w: SavefileWriter<BackgroundWriter>,
        block_size: usize,
    ) -> io::Result<Self> {
        let (full, to_write) = sync_channel::<ItemsBlock>(BLOCKS_IN_FLIGHT);
        let (written, empty) = channel();
        let thread = std::thread::Builder::new()
            .name("shoald-save-blocks".into())
            .spawn_scoped(scope, move || {
                for mut block in to_write {
                    w.write_items(&mut block)?;
                    let _ = written.send(block);
                }
                Ok(w)
            })?;
        Ok(Self {
            full: Some(full),
            empty,
            thread: Some(thread),
            block_size,
        })
    }

    /// An empty block of `bucket` at `seq`: a written one back from the thread, or a new one.
    fn empty_block(&self, bucket: u32, seq: u64) -> ItemsBlock {
        match self.empty.try_recv() {
            Ok(mut block) => {
                block.reset(bucket, seq);
                block
            }
            Err(_) => ItemsBlock::new(bucket, seq, self.block_size),
        }
    }

    /// Queues `block` to be written (waits while [`BLOCKS_IN_FLIGHT`] are queued) and
    /// returns an empty block of the same bucket to fill next.
    fn send(&mut self, block: ItemsBlock) -> io::Result<ItemsBlock> {
        let (bucket, seq) = block.bucket();
        let next = self.empty_block(bucket, seq);
        if self.full.as_ref().is_some_and(|tx| tx.send(block).is_ok()) {
            return Ok(next);
        }
        // The thread stopped: it failed to write. Its error is the one to report.
        Err(self
            .stop()
            .err()
            .unwrap_or_else(|| io::Error::other("the savefile block writing thread stopped")))
    }

    /// Waits for the thread to write what is queued; returns the savefile writer.
    fn finish(mut self) -> io::Result<SavefileWriter<BackgroundWriter>> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<SavefileWriter<BackgroundWriter>> {
        self.full = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the savefile block writing thread panicked",
                ))
            }),
            None => Err(io::Error::other(
                "the savefile block writing thread stopped",
            )),
        }
    }
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
