//! The savefile format: a streaming writer and a verifying reader over [`Write`] and [`Read`].
//!
//! This module owns the byte layout (documented in `docs/savefile.md`) and every check made on
//! a file's content. It does no file-system work (no paths, fsync, renames: that is
//! [`super`]'s job), so it is tested on byte buffers.
//!
//! ```text
//! header (48 bytes, crc32)
//! block 0: tag=ITEMS index=0 len crc | bucket seq count | record record ...
//! block 1: tag=ITEMS index=1 ...        (one bucket per block; a big bucket spans blocks)
//! ...
//! block m: tag=SEQS  index=m len crc | count (bucket seq)*   (version 2: every bucket's seq)
//! block o: tag=OWNED index=o len crc | cluster count (bucket epoch)*   (version 3, optional)
//! block n: tag=END   index=n len crc | item_blocks items bytes file_crc
//! ```
//!
//! The OWNED block (version 3) names the cluster the writer belonged to and every bucket it
//! served, with the bucket's epoch in the applied table: a node started on the file keeps a
//! saved bucket only while the table still names it primary at that epoch ([`Owned`]).
//!
//! The SEQS blocks (version 2) carry the sequence counter of every bucket whose counter is not
//! 0, taken after the items were copied, so a node restarted from the file never gives a seq
//! twice, even in a bucket whose items were all deleted. A version 1 file has only the
//! `bucket seq` of its ITEMS blocks (buckets with items); it is still read.
//!
//! All integers are big-endian. Every block carries a CRC-32 of its header fields and
//! payload; the END block carries a CRC-32 of every byte before it. Memory use is one block
//! buffer (about [`DEFAULT_BLOCK_SIZE`], or one record when a record is larger) on each side.
//! No content can make the reader panic or allocate more than the bytes actually present.

use std::fmt;
use std::io::{self, Read, Write};

use crc32fast::Hasher;
use shoal_proto::hash::bucket_of;

use crate::store::ItemRecord;

mod block;
pub use block::ItemsBlock;

/// First 8 bytes of every savefile.
pub const MAGIC: [u8; 8] = *b"SHOALSAV";
/// The format version this build writes, and the newest it reads (it reads 1 too).
pub const FORMAT_VERSION: u16 = 3;
/// The first format version with SEQS blocks.
pub const SEQS_VERSION: u16 = 2;
/// The first format version with an OWNED block.
pub const OWNED_VERSION: u16 = 3;
/// Size of the file header, in bytes.
pub const HEADER_LEN: usize = 48;
/// Size of a block header, in bytes.
pub const BLOCK_HEADER_LEN: usize = 16;
/// Size of the fixed part of a record (before key and value), in bytes.
pub const RECORD_FIXED_LEN: usize = 34;
/// Size of an ITEMS block's payload header (bucket, bucket seq, count), in bytes.
pub const ITEMS_HEADER_LEN: usize = 16;
/// Size of one SEQS entry (bucket u32, seq u64), in bytes.
pub const SEQ_ENTRY_LEN: usize = 12;
/// Size of one OWNED entry (bucket u32, epoch u64), in bytes.
pub const OWNED_ENTRY_LEN: usize = 12;
/// Size of an OWNED block's payload before its entries (cluster id, count), in bytes.
pub const OWNED_HEADER_LEN: usize = 20;
/// Size of the END block's payload, in bytes.
pub const END_LEN: usize = 24;
/// A block is closed once its payload reaches this many bytes (1 MiB).
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
/// Largest block payload a reader accepts (512 MiB): one record of the largest value the
/// protocol allows fits. A longer declared length is refused before anything is read.
pub const MAX_BLOCK_LEN: u32 = 512 << 20;
/// Largest bucket count a header may declare.
pub const MAX_BUCKETS: u32 = 1 << 24;

/// Block tag: a run of records of one bucket.
const TAG_ITEMS: u8 = 1;
/// Block tag: the last block, with totals and the whole-file checksum.
const TAG_END: u8 = 2;
/// Block tag: bucket sequence counters (version 2).
const TAG_SEQS: u8 = 3;
/// Block tag: the buckets the writer served, with their epochs (version 3).
const TAG_OWNED: u8 = 4;

/// The buckets a cluster node served when it wrote the file, with each one's epoch in the
/// applied table (the OWNED block, version 3). A file without one (older versions, or a
/// node with no cluster table yet) holds whatever the store held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// The cluster the writer belonged to.
    pub cluster: [u8; 16],
    /// `(bucket, epoch)`, strictly ascending by bucket; the file's items are of these
    /// buckets only.
    pub buckets: Vec<(u32, u64)>,
}

/// What the file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version (the reader accepts 1..=[`FORMAT_VERSION`]).
    pub version: u16,
    /// Id of the node that wrote the file (its `node-id`).
    pub node_id: [u8; 16],
    /// When the save started, unix seconds.
    pub created_at: u64,
    /// Number of buckets of the writer's keyspace (a power of two); every record's key hashes
    /// to its block's bucket under this count.
    pub buckets: u32,
}

impl Header {
    /// A header of the current format version.
    pub fn new(node_id: [u8; 16], created_at: u64, buckets: u32) -> Self {
        Self {
            version: FORMAT_VERSION,
            node_id,
            created_at,
            buckets,
        }
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_be_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
        // 12..16: flags, zero in version 1.
        b[16..32].copy_from_slice(&self.node_id);
        b[32..40].copy_from_slice(&self.created_at.to_be_bytes());
        b[40..44].copy_from_slice(&self.buckets.to_be_bytes());
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// Counts of what a writer wrote or a reader read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// ITEMS blocks.
    pub item_blocks: u32,
    /// Records.
    pub items: u64,
    /// Key and value bytes of all records.
    pub bytes: u64,
    /// Size of the whole file, in bytes.
    pub file_bytes: u64,
}

/// Why a savefile was refused. Every variant says which check failed and, where it applies,
/// at which byte offset of the file.
#[derive(Debug)]
pub enum SavefileError {
    /// The file has no bytes at all.
    Empty,
    /// The file ends in the middle of something (or before its END block).
    Truncated {
        /// Offset where the missing part starts.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The first 8 bytes are not [`MAGIC`]: this is not a savefile.
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The file was written by a newer format version than this build reads.
    NewerVersion {
        /// Version in the file.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// A checksum does not match the bytes it covers.
    Checksum {
        /// Offset of the part the checksum covers.
        offset: u64,
        /// Which checksum (header, block n, whole file).
        what: String,
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A field holds a value the format does not allow.
    Invalid {
        /// Offset of the field (or of the structure holding it).
        offset: u64,
        /// Which check failed.
        what: String,
    },
    /// Reading failed (the file could not be read, as opposed to holding bad bytes).
    Io {
        /// Offset of the read.
        offset: u64,
        /// The error.
        error: io::Error,
    },
}

impl SavefileError {
    fn invalid(offset: u64, what: impl Into<String>) -> Self {
        SavefileError::Invalid {
            offset,
            what: what.into(),
        }
    }
}

impl fmt::Display for SavefileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SavefileError::Empty => write!(f, "the savefile is empty (0 bytes)"),
            SavefileError::Truncated { offset, what } => {
                write!(
                    f,
                    "the savefile ends at byte {offset}, in the middle of {what}"
                )
            }
            SavefileError::BadMagic { found } => write!(
                f,
                "not a savefile: the first bytes are {:?}, expected {:?}",
                String::from_utf8_lossy(found),
                String::from_utf8_lossy(&MAGIC)
            ),
            SavefileError::NewerVersion { found, supported } => write!(
                f,
                "the savefile has format version {found}, newer than this build reads \
                 (up to {supported}); start a newer shoald on it"
            ),
            SavefileError::Checksum {
                offset,
                what,
                stored,
                computed,
            } => write!(
                f,
                "checksum mismatch in {what} at byte {offset}: stored {stored:#010x}, \
                 computed {computed:#010x}"
            ),
            SavefileError::Invalid { offset, what } => {
                write!(f, "invalid savefile at byte {offset}: {what}")
            }
            SavefileError::Io { offset, error } => {
                write!(f, "cannot read the savefile at byte {offset}: {error}")
            }
        }
    }
}

impl std::error::Error for SavefileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SavefileError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Writes a savefile to `W` block by block. Call [`SavefileWriter::begin_bucket`] before the
/// records of each bucket (in ascending bucket order), [`SavefileWriter::push`] per record,
/// then [`SavefileWriter::finish`]; or fill [`ItemsBlock`]s elsewhere and hand them over with
/// [`SavefileWriter::write_items`]. Nothing is complete until `finish` returns: a writer
/// dropped earlier leaves a file without an END block, which every reader refuses.
pub struct SavefileWriter<W: Write> {
    w: W,
    /// The block [`SavefileWriter::push`] fills; `None` before the first bucket.
    block: Option<ItemsBlock>,
    block_size: usize,
    next_index: u32,
    file_crc: Hasher,
    totals: Totals,
}

impl<W: Write> fmt::Debug for SavefileWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavefileWriter")
            .field("bucket", &self.block.as_ref().map(ItemsBlock::bucket))
            .field("totals", &self.totals)
            .finish()
    }
}

impl<W: Write> SavefileWriter<W> {
    /// Writes `header` and returns a writer with [`DEFAULT_BLOCK_SIZE`] blocks.
    ///
    /// # Errors
    /// The write error.
    pub fn new(w: W, header: &Header) -> io::Result<Self> {
        Self::with_block_size(w, header, DEFAULT_BLOCK_SIZE)
    }

    /// As [`SavefileWriter::new`], closing blocks at `block_size` payload bytes (tests use
    /// small blocks to get many of them).
    ///
    /// # Errors
    /// The write error.
    pub fn with_block_size(mut w: W, header: &Header, block_size: usize) -> io::Result<Self> {
        let bytes = header.encode();
        w.write_all(&bytes)?;
        let mut file_crc = Hasher::new();
        file_crc.update(&bytes);
        Ok(Self {
            w,
            block: None,
            block_size: block_size.max(1),
            next_index: 0,
            file_crc,
            totals: Totals {
                file_bytes: HEADER_LEN as u64,
                ..Totals::default()
            },
        })
    }

    /// Starts the records of `bucket`, whose sequence number is `seq`; closes the block of
    /// the previous bucket.
    ///
    /// # Errors
    /// The write error.
    pub fn begin_bucket(&mut self, bucket: u32, seq: u64) -> io::Result<()> {
        self.flush_block()?;
        match &mut self.block {
            Some(block) => block.reset(bucket, seq),
            None => self.block = Some(ItemsBlock::new(bucket, seq, self.block_size)),
        }
        Ok(())
    }

    /// Adds one record to the current bucket; writes the block out once it is full.
    ///
    /// # Errors
    /// The write error; `InvalidInput` when no bucket was begun, the key is empty or longer
    /// than 65,535 bytes, or the record is larger than [`MAX_BLOCK_LEN`] allows.
    pub fn push(&mut self, rec: &ItemRecord<'_>) -> io::Result<()> {
        let Some(block) = &mut self.block else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "savefile record pushed before begin_bucket",
            ));
        };
        if !block.append_record(rec)? {
            self.flush_block()?;
            if let Some(block) = &mut self.block {
                // An empty block takes any record append_record did not refuse as invalid.
                block.append_record(rec)?;
            }
        }
        if self.block.as_ref().is_some_and(ItemsBlock::is_full) {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Payload bytes at which this writer closes a block; blocks for
    /// [`SavefileWriter::write_items`] are made with it ([`ItemsBlock::new`]).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Writes `block`, filled elsewhere, after everything written so far (the block of
    /// [`SavefileWriter::push`] first, if it holds records), and empties it for reuse. A
    /// block without records writes nothing. Blocks must come in ascending bucket order.
    ///
    /// # Errors
    /// The write error.
    pub fn write_items(&mut self, block: &mut ItemsBlock) -> io::Result<()> {
        self.flush_block()?;
        let result = self.write_items_block(block);
        let (bucket, seq) = block.bucket();
        block.reset(bucket, seq);
        result
    }

    /// Writes the sequence counter of every bucket (SEQS blocks), after the last bucket's
    /// records and before [`SavefileWriter::finish`]. `seqs` must be in strictly ascending
    /// bucket order; buckets whose counter is 0 may be left out. Call it once.
    ///
    /// # Errors
    /// The write error; `InvalidInput` when the buckets are not strictly ascending.
    pub fn bucket_seqs(&mut self, seqs: impl IntoIterator<Item = (u32, u64)>) -> io::Result<()> {
        self.flush_block()?;
        self.block = None;
        let mut last: Option<u32> = None;
        let mut payload = Vec::new();
        let per_block = (self.block_size / SEQ_ENTRY_LEN).clamp(1, u32::MAX as usize);
        let mut count = 0u32;
        let mut result = Ok(());
        for (bucket, seq) in seqs {
            if last.is_some_and(|l| l >= bucket) {
                result = Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "savefile bucket seqs must be in strictly ascending bucket order",
                ));
                break;
            }
            last = Some(bucket);
            if payload.is_empty() {
                payload.extend_from_slice(&0u32.to_be_bytes());
            }
            payload.extend_from_slice(&bucket.to_be_bytes());
            payload.extend_from_slice(&seq.to_be_bytes());
            count += 1;
            if count as usize == per_block {
                result = self.write_seqs_block(&mut payload, &mut count);
                if result.is_err() {
                    break;
                }
            }
        }
        if result.is_ok() && count > 0 {
            result = self.write_seqs_block(&mut payload, &mut count);
        }
        result
    }

    /// Writes the OWNED block: the cluster and the buckets (with epochs) the writer served.
    /// After [`SavefileWriter::bucket_seqs`] and before [`SavefileWriter::finish`]; once.
    ///
    /// # Errors
    /// The write error; `InvalidInput` when the buckets are not strictly ascending.
    pub fn owned(&mut self, owned: &Owned) -> io::Result<()> {
        self.flush_block()?;
        self.block = None;
        if owned.buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "savefile owned buckets must be in strictly ascending bucket order",
            ));
        }
        let mut payload =
            Vec::with_capacity(OWNED_HEADER_LEN + owned.buckets.len() * OWNED_ENTRY_LEN);
        payload.extend_from_slice(&owned.cluster);
        payload.extend_from_slice(&(owned.buckets.len() as u32).to_be_bytes());
        for &(bucket, epoch) in &owned.buckets {
            payload.extend_from_slice(&bucket.to_be_bytes());
            payload.extend_from_slice(&epoch.to_be_bytes());
        }
        self.write_block(TAG_OWNED, &payload)
    }

    fn write_seqs_block(&mut self, payload: &mut Vec<u8>, count: &mut u32) -> io::Result<()> {
        payload[0..4].copy_from_slice(&count.to_be_bytes());
        let result = self.write_block(TAG_SEQS, payload);
        payload.clear();
        *count = 0;
        result
    }

    /// Writes the last ITEMS block and the END block and returns the inner writer (not
    /// flushed or synced: that is the caller's job) with the totals.
    ///
    /// # Errors
    /// The write error.
    pub fn finish(mut self) -> io::Result<(W, Totals)> {
        self.flush_block()?;
        let mut end = [0u8; END_LEN];
        end[0..4].copy_from_slice(&self.totals.item_blocks.to_be_bytes());
        end[4..12].copy_from_slice(&self.totals.items.to_be_bytes());
        end[12..20].copy_from_slice(&self.totals.bytes.to_be_bytes());
        let file_crc = self.file_crc.clone().finalize();
        end[20..24].copy_from_slice(&file_crc.to_be_bytes());
        self.write_block(TAG_END, &end)?;
        Ok((self.w, self.totals))
    }

    /// Writes the block [`SavefileWriter::push`] fills, if it holds records, and empties it.
    fn flush_block(&mut self) -> io::Result<()> {
        let Some(mut block) = self.block.take() else {
            return Ok(());
        };
        let result = self.write_items_block(&mut block);
        let (bucket, seq) = block.bucket();
        block.reset(bucket, seq);
        self.block = Some(block);
        result
    }

    /// Writes `block` as an ITEMS block, if it holds records, and counts it.
    fn write_items_block(&mut self, block: &mut ItemsBlock) -> io::Result<()> {
        if block.is_empty() {
            return Ok(());
        }
        self.write_block(TAG_ITEMS, block.payload())?;
        self.totals.item_blocks += 1;
        self.totals.items += u64::from(block.count());
        self.totals.bytes += block.bytes();
        Ok(())
    }

    fn write_block(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let mut hdr = [0u8; BLOCK_HEADER_LEN];
        hdr[0] = tag;
        hdr[4..8].copy_from_slice(&self.next_index.to_be_bytes());
        hdr[8..12].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut payload_crc = Hasher::new();
        payload_crc.update(payload);
        let crc = block_crc(&hdr[..12], &payload_crc);
        hdr[12..16].copy_from_slice(&crc.to_be_bytes());
        self.w.write_all(&hdr)?;
        self.w.write_all(payload)?;
        self.file_crc.update(&hdr);
        self.file_crc.combine(&payload_crc);
        self.next_index = self.next_index.wrapping_add(1);
        self.totals.file_bytes += (BLOCK_HEADER_LEN + payload.len()) as u64;
        Ok(())
    }
}

/// CRC-32 of a block's first 12 header bytes followed by its payload, whose CRC is given.
fn block_crc(hdr12: &[u8], payload: &Hasher) -> u32 {
    let mut h = Hasher::new();
    h.update(hdr12);
    h.combine(payload);
    h.finalize()
}

/// Reads and verifies a savefile from `R`, one block at a time.
///
/// [`SavefileReader::new`] reads and checks the header; [`SavefileReader::next_block`]
/// returns each ITEMS block, fully checked (checksum, structure, every record's bounds and
/// bucket), and `Ok(None)` once the END block, the whole-file checksum, the totals and the end
/// of the input have been checked. Records of a block returned before an error was found are
/// from a damaged file: a caller that must not keep them drops them when an error comes.
pub struct SavefileReader<R: Read> {
    r: R,
    header: Header,
    /// Offset of the next byte to read.
    offset: u64,
    next_index: u32,
    buf: Vec<u8>,
    file_crc: Hasher,
    last_bucket: Option<u32>,
    /// Bucket counters from SEQS blocks, ascending by bucket.
    seqs: Vec<(u32, u64)>,
    /// The OWNED block, once read.
    owned: Option<Owned>,
    totals: Totals,
    done: bool,
}

impl<R: Read> fmt::Debug for SavefileReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavefileReader")
            .field("header", &self.header)
            .field("offset", &self.offset)
            .field("totals", &self.totals)
            .finish()
    }
}

/// One verified ITEMS block.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// The bucket all its records belong to.
    pub bucket: u32,
    /// The bucket's sequence number when the writer copied it.
    pub bucket_seq: u64,
    /// Number of records.
    pub count: u32,
    /// Offset of the block in the file.
    pub offset: u64,
    records: &'a [u8],
}

impl<'a> Block<'a> {
    /// The records, in file order.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.records,
            left: self.count,
        }
    }
}

/// A verified ITEMS block that owns its bytes (see [`SavefileReader::next_owned_block`]), so
/// that another thread can insert its records while the reader checks the next blocks.
#[derive(Debug)]
pub struct OwnedBlock {
    /// The bucket all its records belong to.
    pub bucket: u32,
    /// The bucket's sequence number when the writer copied it.
    pub bucket_seq: u64,
    /// Number of records.
    pub count: u32,
    /// Offset of the block in the file.
    pub offset: u64,
    /// The whole payload (ITEMS header included).
    payload: Vec<u8>,
}

impl OwnedBlock {
    /// The records, in file order.
    pub fn records(&self) -> Records<'_> {
        Records {
            rest: &self.payload[ITEMS_HEADER_LEN..],
            left: self.count,
        }
    }

    /// Bytes the block takes in the file (header and payload).
    pub fn file_len(&self) -> u64 {
        (BLOCK_HEADER_LEN + self.payload.len()) as u64
    }

    /// The block's memory, to hand back to [`SavefileReader::next_owned_block`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.payload
    }
}

/// Iterator over the records of a verified [`Block`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = ItemRecord<'a>;

    fn next(&mut self) -> Option<ItemRecord<'a>> {
        if self.left == 0 {
            return None;
        }
        // The block was verified when it was read, so this parse cannot fail; `?` keeps a
        // broken invariant from turning into a panic.
        let (rec, used) = parse_record(self.rest).ok()?;
        self.rest = self.rest.get(used..)?;
        self.left -= 1;
        Some(rec)
    }
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Parses one record at the start of `b`; `Err` names what does not fit.
fn parse_record(b: &[u8]) -> Result<(ItemRecord<'_>, usize), &'static str> {
    if b.len() < RECORD_FIXED_LEN {
        return Err("record header runs past the end of its block");
    }
    let key_len = usize::from(be_u16(b, 0));
    let value_len = be_u32(b, 2) as usize;
    if key_len == 0 {
        return Err("record with an empty key");
    }
    let end = RECORD_FIXED_LEN + key_len;
    let total = end
        .checked_add(value_len)
        .ok_or("record length overflows")?;
    if total > b.len() {
        return Err("record key or value runs past the end of its block");
    }
    Ok((
        ItemRecord {
            flags: be_u32(b, 6),
            expires_at: be_u64(b, 10),
            hash: be_u64(b, 18),
            seq: be_u64(b, 26),
            key: &b[RECORD_FIXED_LEN..end],
            value: &b[end..total],
        },
        total,
    ))
}

impl<R: Read> SavefileReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    /// [`SavefileError::Empty`], [`SavefileError::Truncated`], [`SavefileError::BadMagic`],
    /// [`SavefileError::NewerVersion`], [`SavefileError::Checksum`],
    /// [`SavefileError::Invalid`] (version 0, flags set, bad bucket count),
    /// [`SavefileError::Io`].
    pub fn new(mut r: R) -> Result<Self, SavefileError> {
        let mut b = [0u8; HEADER_LEN];
        let got = read_full(&mut r, &mut b, 0)?;
        if got == 0 {
            return Err(SavefileError::Empty);
        }
        if got >= 8 && b[0..8] != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(&b[0..8]);
            return Err(SavefileError::BadMagic { found });
        }
        if got < HEADER_LEN {
            if b[..got] != MAGIC[..got.min(8)] {
                let mut found = [0u8; 8];
                found[..got.min(8)].copy_from_slice(&b[..got.min(8)]);
                return Err(SavefileError::BadMagic { found });
            }
            return Err(SavefileError::Truncated {
                offset: got as u64,
                what: "the file header",
            });
        }
        let stored = be_u32(&b, 44);
        let computed = crc32fast::hash(&b[..44]);
        let version = be_u16(&b, 8);
        // A newer version may lay out (and checksum) its header differently: say so first.
        if version > FORMAT_VERSION {
            return Err(SavefileError::NewerVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if stored != computed {
            return Err(SavefileError::Checksum {
                offset: 0,
                what: "the file header".into(),
                stored,
                computed,
            });
        }
        if version == 0 {
            return Err(SavefileError::invalid(8, "format version 0"));
        }
        if usize::from(be_u16(&b, 10)) != HEADER_LEN {
            return Err(SavefileError::invalid(10, "header length is not 48"));
        }
        if be_u32(&b, 12) != 0 {
            return Err(SavefileError::invalid(12, "unknown header flags"));
        }
        let buckets = be_u32(&b, 40);
        if !buckets.is_power_of_two() || buckets > MAX_BUCKETS {
            return Err(SavefileError::invalid(
                40,
                format!("bucket count {buckets} is not a power of two up to {MAX_BUCKETS}"),
            ));
        }
        let mut node_id = [0u8; 16];
        node_id.copy_from_slice(&b[16..32]);
        let mut file_crc = Hasher::new();
        file_crc.update(&b);
        Ok(Self {
            r,
            header: Header {
                version,
                node_id,
                created_at: be_u64(&b, 32),
                buckets,
            },
            offset: HEADER_LEN as u64,
            next_index: 0,
            buf: Vec::new(),
            file_crc,
            last_bucket: None,
            seqs: Vec::new(),
            owned: None,
            totals: Totals {
                file_bytes: HEADER_LEN as u64,
                ..Totals::default()
            },
            done: false,
        })
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// What has been read and verified so far (everything, once `next_block` returned
    /// `Ok(None)`).
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The bucket sequence counters of the SEQS blocks read so far, ascending by bucket:
    /// all of them once [`SavefileReader::next_block`] returned `Ok(None)`. Empty for a
    /// version 1 file (use each block's [`Block::bucket_seq`] there).
    pub fn bucket_seqs(&self) -> &[(u32, u64)] {
        &self.seqs
    }

    /// The OWNED block (version 3), once read: the cluster and the buckets the writer served,
    /// with their epochs. `None` for a file without one (read to the end first).
    pub fn owned(&self) -> Option<&Owned> {
        self.owned.as_ref()
    }

    /// The next verified ITEMS block, or `None` after the END block was verified. SEQS and
    /// OWNED blocks are verified and collected on the way (see
    /// [`SavefileReader::bucket_seqs`], [`SavefileReader::owned`]).
    ///
    /// # Errors
    /// Any failed check, with its offset; see [`SavefileError`].
    pub fn next_block(&mut self) -> Result<Option<Block<'_>>, SavefileError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(at) = self.read_block()? {
                return self.check_items(at).map(Some);
            }
        }
    }

    /// As [`SavefileReader::next_block`], checked the same way, but the block owns its
    /// bytes: the reader's buffer goes with it and `spare` (the buffer of a block already
    /// used, or an empty vector) takes its place.
    ///
    /// # Errors
    /// As [`SavefileReader::next_block`].
    pub fn next_owned_block(
        &mut self,
        spare: Vec<u8>,
    ) -> Result<Option<OwnedBlock>, SavefileError> {
        let Some(block) = self.next_block()? else {
            return Ok(None);
        };
        let (bucket, bucket_seq, count, offset) =
            (block.bucket, block.bucket_seq, block.count, block.offset);
        Ok(Some(OwnedBlock {
            bucket,
            bucket_seq,
            count,
            offset,
            payload: std::mem::replace(&mut self.buf, spare),
        }))
    }

    /// Reads and verifies the next block. `Some(offset)` for an ITEMS block (left in the
    /// buffer for [`Self::check_items`]); `None` after a SEQS or the END block.
    fn read_block(&mut self) -> Result<Option<u64>, SavefileError> {
        let at = self.offset;
        let mut hdr = [0u8; BLOCK_HEADER_LEN];
        let got = read_full(&mut self.r, &mut hdr, at)?;
        if got < BLOCK_HEADER_LEN {
            return Err(SavefileError::Truncated {
                offset: at + got as u64,
                what: if got == 0 {
                    "the blocks (no END block)"
                } else {
                    "a block header"
                },
            });
        }
        let tag = hdr[0];
        let index = be_u32(&hdr, 4);
        let len = be_u32(&hdr, 8);
        let stored = be_u32(&hdr, 12);
        if len > MAX_BLOCK_LEN {
            return Err(SavefileError::invalid(
                at + 8,
                format!(
                    "block {index} declares {len} bytes, more than the {MAX_BLOCK_LEN} allowed"
                ),
            ));
        }
        self.buf.clear();
        let read = (&mut self.r)
            .take(u64::from(len))
            .read_to_end(&mut self.buf)
            .map_err(|error| SavefileError::Io {
                offset: at + BLOCK_HEADER_LEN as u64,
                error,
            })?;
        if read < len as usize {
            return Err(SavefileError::Truncated {
                offset: at + (BLOCK_HEADER_LEN + read) as u64,
                what: "a block payload",
            });
        }
        let mut payload_crc = Hasher::new();
        payload_crc.update(&self.buf);
        let computed = block_crc(&hdr[..12], &payload_crc);
        if computed != stored {
            return Err(SavefileError::Checksum {
                offset: at,
                what: format!("block {}", self.next_index),
                stored,
                computed,
            });
        }
        if hdr[1..4] != [0, 0, 0] {
            return Err(SavefileError::invalid(at + 1, "reserved block bytes set"));
        }
        if index != self.next_index {
            return Err(SavefileError::invalid(
                at + 4,
                format!("block index {index} where {} was expected", self.next_index),
            ));
        }
        // The whole-file checksum covers everything before the END block.
        let file_crc_before = self.file_crc.clone().finalize();
        self.file_crc.update(&hdr);
        self.file_crc.combine(&payload_crc);
        self.offset = at + (BLOCK_HEADER_LEN + len as usize) as u64;
        self.next_index = self.next_index.wrapping_add(1);
        self.totals.file_bytes = self.offset;
        match tag {
            TAG_ITEMS | TAG_SEQS if self.owned.is_some() => Err(SavefileError::invalid(
                at,
                "items or seqs block after the owned block",
            )),
            TAG_ITEMS if !self.seqs.is_empty() => {
                Err(SavefileError::invalid(at, "items block after a seqs block"))
            }
            TAG_ITEMS => Ok(Some(at)),
            TAG_OWNED if self.owned.is_some() => {
                Err(SavefileError::invalid(at, "a second owned block"))
            }
            TAG_OWNED if self.header.version >= OWNED_VERSION => {
                self.check_owned(at)?;
                Ok(None)
            }
            TAG_SEQS if self.header.version >= SEQS_VERSION => {
                self.check_seqs(at)?;
                Ok(None)
            }
            TAG_END => {
                self.check_end(at, file_crc_before)?;
                self.done = true;
                Ok(None)
            }
            other => Err(SavefileError::invalid(
                at,
                format!("unknown block tag {other}"),
            )),
        }
    }

    fn check_items(&mut self, at: u64) -> Result<Block<'_>, SavefileError> {
        let b = &self.buf;
        let payload_at = at + BLOCK_HEADER_LEN as u64;
        if b.len() < ITEMS_HEADER_LEN {
            return Err(SavefileError::invalid(
                payload_at,
                "items block shorter than its header",
            ));
        }
        let bucket = be_u32(b, 0);
        let bucket_seq = be_u64(b, 4);
        let count = be_u32(b, 12);
        if bucket >= self.header.buckets {
            return Err(SavefileError::invalid(
                payload_at,
                format!(
                    "bucket {bucket} out of range (file has {})",
                    self.header.buckets
                ),
            ));
        }
        if self.last_bucket.is_some_and(|last| bucket < last) {
            return Err(SavefileError::invalid(
                payload_at,
                format!("bucket {bucket} after a higher bucket: buckets out of order"),
            ));
        }
        if count == 0 {
            return Err(SavefileError::invalid(
                payload_at + 12,
                "items block with no records",
            ));
        }
        let mut pos = ITEMS_HEADER_LEN;
        let mut bytes = 0u64;
        for i in 0..count {
            let rec_at = payload_at + pos as u64;
            let rest = b.get(pos..).unwrap_or_default();
            let (rec, used) = parse_record(rest).map_err(|what| {
                SavefileError::invalid(rec_at, format!("record {i} of {count}: {what}"))
            })?;
            if bucket_of(rec.key, self.header.buckets) != bucket {
                return Err(SavefileError::invalid(
                    rec_at,
                    format!("record {i}: key does not belong to bucket {bucket}"),
                ));
            }
            bytes += (rec.key.len() + rec.value.len()) as u64;
            pos += used;
        }
        if pos != b.len() {
            return Err(SavefileError::invalid(
                payload_at + pos as u64,
                "bytes after the last record of a block",
            ));
        }
        self.last_bucket = Some(bucket);
        self.totals.item_blocks += 1;
        self.totals.items += u64::from(count);
        self.totals.bytes += bytes;
        Ok(Block {
            bucket,
            bucket_seq,
            count,
            offset: at,
            records: &self.buf[ITEMS_HEADER_LEN..],
        })
    }

    fn check_seqs(&mut self, at: u64) -> Result<(), SavefileError> {
        let b = &self.buf;
        let payload_at = at + BLOCK_HEADER_LEN as u64;
        if b.len() < 4 {
            return Err(SavefileError::invalid(
                payload_at,
                "seqs block shorter than its count",
            ));
        }
        let count = be_u32(b, 0) as usize;
        if count == 0 || b.len() - 4 != count.saturating_mul(SEQ_ENTRY_LEN) {
            return Err(SavefileError::invalid(
                payload_at,
                format!("seqs block of {} bytes for {count} entries", b.len()),
            ));
        }
        for i in 0..count {
            let pos = 4 + i * SEQ_ENTRY_LEN;
            let bucket = be_u32(b, pos);
            let seq = be_u64(b, pos + 4);
            if bucket >= self.header.buckets {
                return Err(SavefileError::invalid(
                    payload_at + pos as u64,
                    format!(
                        "seqs entry for bucket {bucket}, out of range (file has {})",
                        self.header.buckets
                    ),
                ));
            }
            if self.seqs.last().is_some_and(|&(last, _)| last >= bucket) {
                return Err(SavefileError::invalid(
                    payload_at + pos as u64,
                    format!("seqs entry for bucket {bucket} out of order"),
                ));
            }
            self.seqs.push((bucket, seq));
        }
        Ok(())
    }

    fn check_owned(&mut self, at: u64) -> Result<(), SavefileError> {
        let b = &self.buf;
        let payload_at = at + BLOCK_HEADER_LEN as u64;
        if b.len() < OWNED_HEADER_LEN {
            return Err(SavefileError::invalid(
                payload_at,
                "owned block shorter than its header",
            ));
        }
        let mut cluster = [0u8; 16];
        cluster.copy_from_slice(&b[..16]);
        let count = be_u32(b, 16) as usize;
        if b.len() - OWNED_HEADER_LEN != count.saturating_mul(OWNED_ENTRY_LEN) {
            return Err(SavefileError::invalid(
                payload_at,
                format!("owned block of {} bytes for {count} entries", b.len()),
            ));
        }
        let mut buckets: Vec<(u32, u64)> = Vec::with_capacity(count);
        for i in 0..count {
            let pos = OWNED_HEADER_LEN + i * OWNED_ENTRY_LEN;
            let bucket = be_u32(b, pos);
            if bucket >= self.header.buckets || buckets.last().is_some_and(|&(l, _)| l >= bucket) {
                return Err(SavefileError::invalid(
                    payload_at + pos as u64,
                    format!(
                        "owned entry for bucket {bucket}: out of range (file has {}) or out of order",
                        self.header.buckets
                    ),
                ));
            }
            buckets.push((bucket, be_u64(b, pos + 4)));
        }
        self.owned = Some(Owned { cluster, buckets });
        Ok(())
    }

    fn check_end(&mut self, at: u64, file_crc: u32) -> Result<(), SavefileError> {
        let b = &self.buf;
        let payload_at = at + BLOCK_HEADER_LEN as u64;
        if b.len() != END_LEN {
            return Err(SavefileError::invalid(
                payload_at,
                "END block of the wrong size",
            ));
        }
        let checks = [
            (
                "item blocks",
                u64::from(be_u32(b, 0)),
                u64::from(self.totals.item_blocks),
            ),
            ("items", be_u64(b, 4), self.totals.items),
            ("key and value bytes", be_u64(b, 12), self.totals.bytes),
        ];
        for (what, stored, counted) in checks {
            if stored != counted {
                return Err(SavefileError::invalid(
                    payload_at,
                    format!("END block says {stored} {what}, the file holds {counted}"),
                ));
            }
        }
        let stored = be_u32(b, 20);
        if stored != file_crc {
            return Err(SavefileError::Checksum {
                offset: 0,
                what: "the whole file".into(),
                stored,
                computed: file_crc,
            });
        }
        let mut extra = [0u8; 1];
        if read_full(&mut self.r, &mut extra, self.offset)? != 0 {
            return Err(SavefileError::invalid(
                self.offset,
                "bytes after the END block",
            ));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, SavefileError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(SavefileError::Io {
                    offset: offset + got as u64,
                    error,
                })
            }
        }
    }
    Ok(got)
}

/// Reads a whole savefile from `r` and calls `f` on every record; returns the header and
/// totals. Records of a damaged file may have been passed to `f` before the error.
///
/// # Errors
/// See [`SavefileError`].
pub fn read_all<R: Read>(
    r: R,
    mut f: impl FnMut(u32, &ItemRecord<'_>),
) -> Result<(Header, Totals), SavefileError> {
    let mut reader = SavefileReader::new(r)?;
    while let Some(block) = reader.next_block()? {
        for rec in block.records() {
            f(block.bucket, &rec);
        }
    }
    Ok((*reader.header(), reader.totals()))
}

#[cfg(test)]
mod tests;
