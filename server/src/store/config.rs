//! Store configuration: sizes and limits, with their defaults and validation.
//!
//! Owns the numbers only; the slab geometry derived from them lives in [`super::slab`].

use super::error::ConfigError;
use super::item::{CHAIN_HEAD_HEADER, HEADER};

/// Default slab memory, in bytes (64 MiB).
pub const DEFAULT_MEMORY: usize = 64 << 20;
/// Default page size, in bytes (1 MiB).
pub const DEFAULT_PAGE_SIZE: usize = 1 << 20;
/// Default growth factor between consecutive slab classes.
pub const DEFAULT_GROWTH_FACTOR: f64 = 1.25;
/// Default smallest chunk, in bytes. With a 34-byte header, 49 x 1.25^5 rounds to 150 = 34 +
/// 16 + 100, so a 16-byte key with a 100-byte value wastes nothing.
pub const DEFAULT_MIN_CHUNK: usize = 49;
/// Default largest chunk, in bytes (16 KiB). Larger items are chains of chunks of this size.
pub const DEFAULT_MAX_CHUNK: usize = 16 << 10;
/// Default number of buckets.
pub const DEFAULT_BUCKETS: u32 = 1024;
/// Default largest value, in bytes (1 MiB).
pub const DEFAULT_MAX_VALUE: usize = 1 << 20;
/// Default (and largest allowed) key length, in bytes.
pub const DEFAULT_MAX_KEY: usize = 250;
/// Default cap of one bucket's change log, in bytes (64 KiB: about 2,000 changes of 20-byte
/// keys). Only buckets someone reads keep a log, so a node with no replica or movement pays
/// nothing; with every one of 1024 buckets read it is 64 MiB.
pub const DEFAULT_CHANGE_LOG_BYTES: usize = 64 << 10;
/// Largest number of partitions chosen automatically.
pub const MAX_AUTO_PARTITIONS: usize = 16;
/// Automatic partitioning keeps at least this many pages per partition, and at least two per
/// slab class: each partition has its own classes, so with fewer pages than classes a mix of
/// value sizes would evict while memory is mostly empty.
pub const MIN_PAGES_PER_PARTITION: usize = 16;

/// Sizes and limits of a [`Store`](super::Store).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Slab memory in bytes, reserved at start. Rounded down to whole pages.
    pub memory: usize,
    /// Page size in bytes; pages are handed to slab classes whole.
    pub page_size: usize,
    /// Each slab class's chunk is this factor larger than the previous one (> 1.0).
    pub growth_factor: f64,
    /// Chunk size of the smallest slab class, in bytes (at least 32).
    pub min_chunk: usize,
    /// Chunk size of the largest slab class, in bytes; bigger items span several such chunks.
    pub max_chunk: usize,
    /// Number of buckets, a power of two.
    pub buckets: u32,
    /// Number of lock partitions (a power of two, at most `buckets`); 0 picks one from memory.
    pub partitions: usize,
    /// Largest value in bytes; longer values get [`StoreError::TooLarge`](super::StoreError::TooLarge).
    pub max_value: usize,
    /// Largest key in bytes (at most 250); longer keys get [`StoreError::KeyTooLong`](super::StoreError::KeyTooLong).
    pub max_key: usize,
    /// Byte cap of each bucket's change log (kept only while someone reads it); 0 turns
    /// change logs off.
    pub change_log_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY,
            page_size: DEFAULT_PAGE_SIZE,
            growth_factor: DEFAULT_GROWTH_FACTOR,
            min_chunk: DEFAULT_MIN_CHUNK,
            max_chunk: DEFAULT_MAX_CHUNK,
            buckets: DEFAULT_BUCKETS,
            partitions: 0,
            max_value: DEFAULT_MAX_VALUE,
            max_key: DEFAULT_MAX_KEY,
            change_log_bytes: DEFAULT_CHANGE_LOG_BYTES,
        }
    }
}

impl StoreConfig {
    /// Number of whole pages in [`StoreConfig::memory`].
    pub fn pages(&self) -> usize {
        self.memory / self.page_size.max(1)
    }

    /// The partition count actually used: [`StoreConfig::partitions`], or when it is 0 the
    /// largest power of two up to [`MAX_AUTO_PARTITIONS`] that leaves every partition at least
    /// [`MIN_PAGES_PER_PARTITION`] pages and two pages per slab class (never more than the
    /// bucket count). The default 64 MiB store has one partition; 16 partitions from 1 GiB.
    pub fn effective_partitions(&self) -> usize {
        if self.partitions != 0 {
            return self.partitions;
        }
        let classes = super::slab::Geometry::new(self).map_or(1, |g| g.sizes.len());
        let min_pages = MIN_PAGES_PER_PARTITION.max(2 * classes);
        let mut p = MAX_AUTO_PARTITIONS;
        while p > 1 && self.pages() / p < min_pages {
            p /= 2;
        }
        p.min(self.buckets.max(1) as usize)
    }

    /// Checks that the settings make sense together.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting that does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = ConfigError;
        if self.buckets == 0 || !self.buckets.is_power_of_two() || self.buckets > 1 << 24 {
            return Err(bad("buckets must be a power of two between 1 and 2^24"));
        }
        if self.page_size < 4096 || self.page_size > 1 << 30 {
            return Err(bad("page_size must be between 4 KiB and 1 GiB"));
        }
        if !(self.growth_factor.is_finite()
            && self.growth_factor >= 1.01
            && self.growth_factor <= 4.0)
        {
            return Err(bad("growth_factor must be between 1.01 and 4"));
        }
        if self.max_key == 0 || self.max_key > DEFAULT_MAX_KEY {
            return Err(bad("max_key must be between 1 and 250"));
        }
        if self.min_chunk < 32 || self.min_chunk > self.max_chunk {
            return Err(bad("min_chunk must be at least 32 and at most max_chunk"));
        }
        if self.max_chunk > self.page_size || self.max_chunk < CHAIN_HEAD_HEADER + self.max_key + 16
        {
            return Err(bad(
                "max_chunk must fit in a page and hold a header and the longest key",
            ));
        }
        if self.min_chunk < HEADER + 2 {
            return Err(bad("min_chunk must hold the item header"));
        }
        let partitions = self.effective_partitions();
        if !partitions.is_power_of_two() || partitions > self.buckets as usize || partitions > 256 {
            return Err(bad(
                "partitions must be a power of two, at most buckets and 256",
            ));
        }
        let per_partition = self.pages() / partitions;
        if per_partition < 2 {
            return Err(bad("memory must give every partition at least two pages"));
        }
        if self.max_value == 0 || self.max_value > (per_partition - 1) * self.page_size / 2 {
            return Err(bad("max_value must fit in half of a partition's pages"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_leave_two_pages_per_class() {
        let cfg = StoreConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            cfg.effective_partitions(),
            1,
            "64 pages hold ~28 classes twice once"
        );
        let mid = StoreConfig {
            memory: 256 << 20,
            ..StoreConfig::default()
        };
        assert_eq!(mid.effective_partitions(), 4);
        let big = StoreConfig {
            memory: 1 << 30,
            ..StoreConfig::default()
        };
        assert_eq!(big.effective_partitions(), 16);
    }

    #[test]
    fn nonsense_is_rejected() {
        let cases = [
            StoreConfig {
                buckets: 1000,
                ..StoreConfig::default()
            },
            StoreConfig {
                growth_factor: 1.0,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_key: 251,
                ..StoreConfig::default()
            },
            StoreConfig {
                min_chunk: 16,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_chunk: 2 << 20,
                ..StoreConfig::default()
            },
            StoreConfig {
                memory: 1 << 20,
                ..StoreConfig::default()
            },
            StoreConfig {
                partitions: 3,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_value: 64 << 20,
                ..StoreConfig::default()
            },
        ];
        for cfg in cases {
            assert!(matches!(cfg.validate(), Err(ConfigError(_))), "{cfg:?}");
        }
    }
}
