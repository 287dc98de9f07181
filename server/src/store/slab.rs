//! Slab memory: the page pool, slab classes, chunk addressing and per-class free lists.
//!
//! All slab memory is allocated once, at start, as `memory / page_size` pages (`Box<[u8]>`,
//! zero-filled, so the OS commits them as they are touched) and put in the shared
//! [`PagePool`]. A partition takes a page from the pool when one of its classes runs out of
//! chunks, and owns it from then on (pages go back to the pool on `flush_all`). Inside a
//! partition a page belongs to one slab class and is cut into that class's chunk size.
//!
//! A chunk is named by a `u32` [`ChunkId`]: `local page index << slot_bits | slot`. Free
//! chunks form a doubly linked list per class threaded through the chunks themselves (no side
//! allocation), so a page can be taken away from a class in time proportional to the page.
//! A new page is not cut up front: a bump cursor hands out its chunks in order.
//!
//! This module does not know about keys, buckets or eviction policy; see
//! [`super::partition`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::config::StoreConfig;
use super::error::ConfigError;
use super::item::{
    rd_u32, wr_u32, Placement, CHAIN_HEAD_HEADER, CONT_HEADER, HEADER, OFF_CONT_NEXT,
    OFF_HEAD_NEXT, ST_CHAINED, ST_HEAD, ST_USED,
};

/// A chunk reference, local to a partition.
pub(crate) type ChunkId = u32;
/// The "no chunk" link value.
pub(crate) const NONE: ChunkId = u32::MAX;

const OFF_FREE_PREV: usize = 1;
const OFF_FREE_NEXT: usize = 5;

/// Chunk sizes and addressing, derived once from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    /// Page size in bytes.
    pub page_size: usize,
    /// Chunk size of each class, ascending; the last is the largest chunk.
    pub sizes: Vec<usize>,
    /// Bits of a [`ChunkId`] used for the slot inside a page.
    pub slot_bits: u32,
}

impl Geometry {
    pub(crate) fn new(cfg: &StoreConfig) -> Result<Self, ConfigError> {
        let mut sizes: Vec<usize> = Vec::new();
        let mut size = cfg.min_chunk as f64;
        loop {
            let s = size.round() as usize;
            if s >= cfg.max_chunk {
                break;
            }
            if sizes.last() < Some(&s) {
                sizes.push(s);
            }
            if sizes.len() > 200 {
                return Err(ConfigError("too many slab classes"));
            }
            size *= cfg.growth_factor;
        }
        sizes.push(cfg.max_chunk);
        let max_slots = cfg.page_size / cfg.min_chunk;
        let slot_bits = usize::BITS - (max_slots.max(2) - 1).leading_zeros();
        let page_bits = u32::BITS - slot_bits;
        if cfg.pages() >= (1usize << page_bits) - 1 {
            return Err(ConfigError(
                "too many pages for the chunk id: raise page_size or min_chunk",
            ));
        }
        Ok(Self {
            page_size: cfg.page_size,
            sizes,
            slot_bits,
        })
    }

    /// Number of chunks of `class` in one page.
    #[inline]
    pub(crate) fn per_page(&self, class: usize) -> u32 {
        (self.page_size / self.sizes[class]) as u32
    }

    /// The largest class.
    #[inline]
    pub(crate) fn largest(&self) -> usize {
        self.sizes.len() - 1
    }

    /// The class and chunk count for an item with this key and value length.
    pub(crate) fn placement(&self, key_len: usize, value_len: usize) -> Placement {
        let total = HEADER + key_len + value_len;
        let largest = self.largest();
        let max_chunk = self.sizes[largest];
        if total <= max_chunk {
            let class = self.sizes.partition_point(|&s| s < total);
            return Placement { class, chunks: 1 };
        }
        let head_cap = max_chunk - CHAIN_HEAD_HEADER - key_len;
        let rest = value_len - head_cap;
        let cont_cap = max_chunk - CONT_HEADER;
        Placement {
            class: largest,
            chunks: 1 + rest.div_ceil(cont_cap) as u32,
        }
    }
}

/// The pages not yet given to a partition. Locked briefly, only when a class needs a page.
#[derive(Debug)]
pub(crate) struct PagePool {
    /// Pages never written to since they were allocated (the OS commits them on first touch).
    pages: Mutex<Vec<Box<[u8]>>>,
    /// Pages already touched by [`PagePool::prefault_one`]; handed out first.
    ready: Mutex<Vec<Box<[u8]>>>,
    /// Most pages one partition may hold (the memory limit, `Store::set_memory_limit`);
    /// `usize::MAX` (no limit beyond the pool) at start.
    per_partition: AtomicUsize,
}

impl PagePool {
    /// Allocates `count` zeroed pages of `page_size` bytes.
    pub(crate) fn new(count: usize, page_size: usize) -> Self {
        let pages = (0..count)
            .map(|_| vec![0u8; page_size].into_boxed_slice())
            .collect();
        Self {
            pages: Mutex::new(pages),
            ready: Mutex::new(Vec::new()),
            per_partition: AtomicUsize::new(usize::MAX),
        }
    }

    /// A page for a partition that holds `held` pages, unless it holds its share already
    /// or the pool is empty.
    pub(crate) fn take(&self, held: usize) -> Option<Box<[u8]>> {
        if held >= self.per_partition.load(Ordering::Relaxed) {
            return None;
        }
        let ready = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        ready.or_else(|| {
            self.pages
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
        })
    }

    /// Touches one untouched page (a write per 4 KiB, outside any lock) so that the OS
    /// commits it now, on the calling thread, instead of in the middle of a write under a
    /// partition lock; returns whether there was one. Used while loading a savefile, where
    /// committing fresh pages is half of the loading thread's time.
    pub(crate) fn prefault_one(&self) -> bool {
        let page = self
            .pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Some(mut page) = page else {
            return false;
        };
        for at in (0..page.len()).step_by(4096) {
            page[at] = std::hint::black_box(0);
        }
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(page);
        true
    }

    pub(crate) fn give_back(&self, pages: impl Iterator<Item = Box<[u8]>>) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(pages);
    }

    /// Sets the most pages one partition may take (`usize::MAX`: no limit).
    pub(crate) fn set_per_partition(&self, pages: usize) {
        self.per_partition.store(pages, Ordering::Relaxed);
    }

    /// Most pages one partition may take (`usize::MAX`: no limit).
    pub(crate) fn per_partition(&self) -> usize {
        self.per_partition.load(Ordering::Relaxed)
    }

    pub(crate) fn free_pages(&self) -> usize {
        let ready = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        ready
            + self
                .pages
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
    }
}

/// One page owned by a partition.
#[derive(Debug)]
pub(crate) struct Page {
    data: Box<[u8]>,
    /// Slab class of the page.
    pub class: usize,
    /// Chunk size of that class.
    size: usize,
    /// Slots below this have been handed out at least once (their status byte is valid).
    pub init: u32,
    /// Slots currently allocated.
    pub used: u32,
    /// The partition's write clock when an item (or part of one) was last written into the
    /// page, or when the page joined its class: how long the page has gone unwritten.
    pub stamp: u64,
}

/// One slab class of a partition.
#[derive(Debug)]
pub(crate) struct Class {
    /// Chunk size in bytes.
    pub size: usize,
    /// Chunks per page.
    pub per_page: u32,
    /// Local indexes of the pages of this class.
    pub pages: Vec<u32>,
    free_head: ChunkId,
    /// Chunks on the free list.
    pub free_len: u32,
    /// The page whose uninitialised tail is being handed out, or [`NONE`].
    bump: u32,
    /// Chunks allocated.
    pub used: u64,
    /// CLOCK hand: position in `pages`. `pages` is kept in the hand's order: a page joins
    /// just behind the hand, and a page leaving keeps the order of the others.
    pub hand_pos: usize,
    /// CLOCK hand: slot within the page.
    pub hand_slot: u32,
    /// Items evicted from this class, ever.
    pub evictions: u64,
    /// Pages moved into this class by rebalancing.
    pub pages_gained: u64,
    /// Cache of [`Slab::oldest_page`]: the page and its stamp when it was found.
    oldest: (u32, u64),
}

/// The slab memory of one partition.
#[derive(Debug)]
pub(crate) struct Slab {
    geo: std::sync::Arc<Geometry>,
    pages: Vec<Page>,
    /// The classes, indexed by class id.
    pub classes: Vec<Class>,
}

impl Slab {
    pub(crate) fn new(geo: std::sync::Arc<Geometry>) -> Self {
        let classes = (0..geo.sizes.len())
            .map(|c| Class {
                size: geo.sizes[c],
                per_page: geo.per_page(c),
                pages: Vec::new(),
                free_head: NONE,
                free_len: 0,
                bump: NONE,
                used: 0,
                hand_pos: 0,
                hand_slot: 0,
                evictions: 0,
                pages_gained: 0,
                oldest: (NONE, 0),
            })
            .collect();
        Self {
            geo,
            pages: Vec::new(),
            classes,
        }
    }

    /// The geometry shared by all partitions.
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    #[inline]
    pub(crate) fn make_id(&self, page: u32, slot: u32) -> ChunkId {
        (page << self.geo.slot_bits) | slot
    }

    #[inline]
    fn split(&self, id: ChunkId) -> (usize, usize) {
        (
            (id >> self.geo.slot_bits) as usize,
            (id & ((1 << self.geo.slot_bits) - 1)) as usize,
        )
    }

    /// The bytes of a chunk. `id` must name a chunk of this slab.
    #[inline]
    pub(crate) fn chunk(&self, id: ChunkId) -> &[u8] {
        let (page, slot) = self.split(id);
        let p = &self.pages[page];
        &p.data[slot * p.size..(slot + 1) * p.size]
    }

    /// The bytes of a chunk, mutable. `id` must name a chunk of this slab.
    #[inline]
    pub(crate) fn chunk_mut(&mut self, id: ChunkId) -> &mut [u8] {
        let (page, slot) = self.split(id);
        let p = &mut self.pages[page];
        &mut p.data[slot * p.size..(slot + 1) * p.size]
    }

    /// The head chunk `id` if it names an initialised, live item head; `None` for anything
    /// else (stale ids kept by snapshots).
    pub(crate) fn checked_head(&self, id: ChunkId) -> Option<&[u8]> {
        let (page, slot) = self.split(id);
        let p = self.pages.get(page)?;
        if slot >= p.init as usize {
            return None;
        }
        let chunk = &p.data[slot * p.size..(slot + 1) * p.size];
        (chunk[0] & (ST_USED | ST_HEAD) == ST_USED | ST_HEAD).then_some(chunk)
    }

    /// The class of the page holding `id`.
    #[inline]
    pub(crate) fn class_of(&self, id: ChunkId) -> usize {
        self.pages[self.split(id).0].class
    }

    /// The page record at local index `page`.
    pub(crate) fn page(&self, page: u32) -> &Page {
        &self.pages[page as usize]
    }

    /// Number of pages owned.
    pub(crate) fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Chunks of `class` available without evicting or taking a page.
    pub(crate) fn free_count(&self, class: usize) -> u32 {
        let c = &self.classes[class];
        let bump_left = if c.bump == NONE {
            0
        } else {
            c.per_page - self.pages[c.bump as usize].init
        };
        c.free_len + bump_left
    }

    /// Takes a free chunk of `class`, or `None` when there is none.
    pub(crate) fn alloc(&mut self, class: usize) -> Option<ChunkId> {
        self.alloc_placed(class).map(|(id, _)| id)
    }

    /// Takes a free chunk of `class`; also says whether it came from the free list (a chunk
    /// freed anywhere in the class) rather than from a fresh page's bump cursor.
    pub(crate) fn alloc_placed(&mut self, class: usize) -> Option<(ChunkId, bool)> {
        let recycled = self.classes[class].free_head != NONE;
        let id = if recycled {
            let id = self.classes[class].free_head;
            let next = rd_u32(self.chunk(id), OFF_FREE_NEXT);
            if next != NONE {
                wr_u32(self.chunk_mut(next), OFF_FREE_PREV, NONE);
            }
            let c = &mut self.classes[class];
            c.free_head = next;
            c.free_len -= 1;
            id
        } else {
            let bump = self.classes[class].bump;
            if bump == NONE {
                return None;
            }
            let per_page = self.classes[class].per_page;
            let page = &mut self.pages[bump as usize];
            let slot = page.init;
            page.init += 1;
            if page.init == per_page {
                self.classes[class].bump = NONE;
            }
            self.make_id(bump, slot)
        };
        let (page, _) = self.split(id);
        self.pages[page].used += 1;
        self.classes[class].used += 1;
        // Mark as used right away so a half-written chain is never mistaken for free.
        self.chunk_mut(id)[0] = ST_USED;
        Some((id, recycled))
    }

    /// Whether the CLOCK hand of `class` passed `id` last: the chunk is in the hand's page,
    /// before the hand. An item written there is the last one the hand reaches again.
    #[inline]
    pub(crate) fn hand_just_passed(&self, class: usize, id: ChunkId) -> bool {
        let c = &self.classes[class];
        let (page, slot) = self.split(id);
        c.pages.get(c.hand_pos) == Some(&(page as u32)) && (slot as u32) < c.hand_slot
    }

    /// The page of `class` written longest ago (oldest [`Page::stamp`]): every item (part)
    /// in it is at least that old, so it is the one the class gives up when another class
    /// takes a page. `None` without pages. Amortised O(1): the answer is cached and
    /// recomputed only once that page was written or left the class (stamps only grow).
    pub(crate) fn oldest_page(&mut self, class: usize) -> Option<u32> {
        let (page, stamp) = self.classes[class].oldest;
        if page != NONE {
            let p = &self.pages[page as usize];
            if p.class == class && p.stamp == stamp {
                return Some(page);
            }
        }
        let c = &self.classes[class];
        let oldest = c
            .pages
            .iter()
            .map(|&p| (p, self.pages[p as usize].stamp))
            .min_by_key(|&(_, stamp)| stamp);
        self.classes[class].oldest = oldest.unwrap_or((NONE, 0));
        oldest.map(|(p, _)| p)
    }

    /// Records that page `page` was written at write clock `tick`.
    #[inline]
    pub(crate) fn stamp(&mut self, page: u32, tick: u64) {
        self.pages[page as usize].stamp = tick;
    }

    /// The page holding chunk `id`.
    #[inline]
    pub(crate) fn page_of(&self, id: ChunkId) -> u32 {
        self.split(id).0 as u32
    }

    /// Returns one chunk to its class's free list.
    pub(crate) fn free(&mut self, id: ChunkId) {
        let (page, _) = self.split(id);
        let class = self.pages[page].class;
        self.pages[page].used -= 1;
        self.classes[class].used -= 1;
        let head = self.classes[class].free_head;
        let chunk = self.chunk_mut(id);
        chunk[0] = 0;
        wr_u32(chunk, OFF_FREE_PREV, NONE);
        wr_u32(chunk, OFF_FREE_NEXT, head);
        if head != NONE {
            wr_u32(self.chunk_mut(head), OFF_FREE_PREV, id);
        }
        let c = &mut self.classes[class];
        c.free_head = id;
        c.free_len += 1;
    }

    /// Unlinks a free chunk from its class's free list (used when a page leaves the class).
    fn unlink_free(&mut self, class: usize, id: ChunkId) {
        let chunk = self.chunk(id);
        let prev = rd_u32(chunk, OFF_FREE_PREV);
        let next = rd_u32(chunk, OFF_FREE_NEXT);
        if prev == NONE {
            self.classes[class].free_head = next;
        } else {
            wr_u32(self.chunk_mut(prev), OFF_FREE_NEXT, next);
        }
        if next != NONE {
            wr_u32(self.chunk_mut(next), OFF_FREE_PREV, prev);
        }
        self.classes[class].free_len -= 1;
    }

    /// Frees every chunk of the item whose head is `head`; returns the chunk count.
    pub(crate) fn free_chain(&mut self, head: ChunkId) -> u32 {
        let chunk = self.chunk(head);
        let mut next = if chunk[0] & ST_CHAINED != 0 {
            rd_u32(chunk, OFF_HEAD_NEXT)
        } else {
            NONE
        };
        self.free(head);
        let mut count = 1;
        while next != NONE {
            let id = next;
            next = rd_u32(self.chunk(id), OFF_CONT_NEXT);
            self.free(id);
            count += 1;
        }
        count
    }

    /// Gives `class` a page: a fresh one from the pool (`data`), handed out by the bump cursor,
    /// stamped with write clock `tick`.
    pub(crate) fn add_page(&mut self, data: Box<[u8]>, class: usize, tick: u64) {
        let index = self.pages.len() as u32;
        self.pages.push(Page {
            data,
            class,
            size: self.classes[class].size,
            init: 0,
            used: 0,
            stamp: tick,
        });
        self.attach(index, class, tick);
    }

    /// Makes the (emptied) page `index` part of `class`, with its bump cursor at slot 0, just
    /// behind the class's CLOCK hand (its new items are the last the hand reaches).
    fn attach(&mut self, index: u32, class: usize, tick: u64) {
        // A partly used bump page is cut up first, so the class has one bump page at most.
        let old = self.classes[class].bump;
        if old != NONE {
            let per_page = self.classes[class].per_page;
            while self.pages[old as usize].init < per_page {
                let slot = self.pages[old as usize].init;
                self.pages[old as usize].init += 1;
                let id = self.make_id(old, slot);
                self.pages[old as usize].used += 1;
                self.classes[class].used += 1;
                self.free(id);
            }
        }
        let size = self.classes[class].size;
        let page = &mut self.pages[index as usize];
        page.class = class;
        page.size = size;
        page.init = 0;
        page.used = 0;
        page.stamp = tick;
        let c = &mut self.classes[class];
        let at = c.hand_pos.min(c.pages.len());
        c.pages.insert(at, index);
        c.hand_pos = at + 1;
        c.bump = index;
    }

    /// Moves the page `index`, whose chunks must all be free already, from its class to `to`
    /// (stamped with write clock `tick`). The other pages of its class keep their order and
    /// the hand stays where it was among them.
    pub(crate) fn move_page(&mut self, index: u32, to: usize, tick: u64) {
        let from = self.pages[index as usize].class;
        debug_assert_eq!(self.pages[index as usize].used, 0, "page still holds items");
        for slot in 0..self.pages[index as usize].init {
            let id = self.make_id(index, slot);
            self.unlink_free(from, id);
        }
        let c = &mut self.classes[from];
        if c.bump == index {
            c.bump = NONE;
        }
        if let Some(pos) = c.pages.iter().position(|&p| p == index) {
            c.pages.remove(pos);
            if pos < c.hand_pos {
                c.hand_pos -= 1;
            } else if pos == c.hand_pos {
                c.hand_slot = 0;
            }
        }
        self.attach(index, to, tick);
    }

    /// Takes every page back (for `flush_all`), leaving the slab empty.
    pub(crate) fn drain_pages(&mut self) -> impl Iterator<Item = Box<[u8]>> + '_ {
        for c in &mut self.classes {
            c.pages.clear();
            c.free_head = NONE;
            c.free_len = 0;
            c.bump = NONE;
            c.used = 0;
            c.hand_pos = 0;
            c.hand_slot = 0;
            c.oldest = (NONE, 0);
        }
        self.pages.drain(..).map(|p| p.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn geo() -> Arc<Geometry> {
        let cfg = StoreConfig::default();
        Arc::new(Geometry::new(&cfg).expect("default geometry"))
    }

    #[test]
    fn default_classes_fit_16_plus_100_exactly() {
        let g = geo();
        assert_eq!(&g.sizes[..6], &[49, 61, 77, 96, 120, 150]);
        assert_eq!(*g.sizes.last().expect("classes"), 16 << 10);
        let p = g.placement(16, 100);
        assert_eq!((g.sizes[p.class], p.chunks), (150, 1));
        assert!(g.sizes.len() < 40);
    }

    #[test]
    fn large_values_are_chained_in_the_largest_class() {
        let g = geo();
        let max = 16 << 10;
        let p = g.placement(10, max - HEADER - 10);
        assert_eq!((p.class, p.chunks), (g.largest(), 1));
        let p = g.placement(10, max - HEADER - 9);
        assert_eq!((p.class, p.chunks), (g.largest(), 2));
        let p = g.placement(250, 1 << 20);
        let cap = (max - CHAIN_HEAD_HEADER - 250) + (p.chunks as usize - 1) * (max - CONT_HEADER);
        assert!(cap >= 1 << 20 && cap - (1 << 20) < max);
    }

    #[test]
    fn alloc_free_and_move_page_keep_counts() {
        let g = geo();
        let mut slab = Slab::new(g.clone());
        slab.add_page(vec![0u8; g.page_size].into_boxed_slice(), 0, 0);
        let per = g.per_page(0);
        assert_eq!(slab.free_count(0), per);
        let ids: Vec<_> = (0..10).map(|_| slab.alloc(0).expect("chunk")).collect();
        assert_eq!(slab.free_count(0), per - 10);
        for &id in &ids {
            slab.free(id);
        }
        assert_eq!(slab.free_count(0), per);
        assert_eq!(slab.alloc(0), Some(ids[9]), "free list is LIFO");
        slab.free(ids[9]);
        slab.move_page(0, 3, 0);
        assert_eq!(slab.free_count(0), 0);
        assert_eq!(slab.free_count(3), g.per_page(3));
        assert_eq!(slab.classes[0].free_len, 0);
    }
}
