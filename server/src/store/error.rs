//! The store's error types: [`StoreError`] for one operation (each variant maps to one
//! memcached / native protocol reply), [`ConfigError`] for a store that cannot be built.

use std::fmt;

/// Why a store operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The key does not exist (or has expired).
    NotFound,
    /// The key exists but its value hash differs from the expected one (check-and-set failed).
    Exists,
    /// The condition of `add`, `replace`, `append` or `prepend` did not hold.
    NotStored,
    /// The value is longer than [`StoreConfig::max_value`](super::StoreConfig::max_value).
    TooLarge,
    /// The key is longer than [`StoreConfig::max_key`](super::StoreConfig::max_key).
    KeyTooLong,
    /// The key is empty. Empty keys are rejected by every operation.
    EmptyKey,
    /// `incr`/`decr` on a value that is not 1 to 20 decimal digits fitting in a `u64`.
    NonNumeric,
    /// No memory could be found for the item: nothing left to evict in its partition.
    OutOfMemory,
    /// The key's bucket is hidden (being filled by a copy): client requests are not served
    /// from it; only [`Store::apply`](super::Store::apply) and
    /// [`Store::insert_item`](super::Store::insert_item) fill it.
    Hidden,
    /// [`Store::insert_item`](super::Store::insert_item) on a bucket that keeps a change log:
    /// items inserted out of seq order cannot be logged (use
    /// [`Store::apply`](super::Store::apply)).
    ChangeLogActive,
    /// The bucket number is not below the bucket count.
    NoSuchBucket,
}

/// The store configuration is not usable; the text says which setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid store configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Exists => f.write_str("exists with a different value hash"),
            StoreError::NotStored => f.write_str("not stored"),
            StoreError::TooLarge => f.write_str("value too large"),
            StoreError::KeyTooLong => f.write_str("key too long"),
            StoreError::EmptyKey => f.write_str("empty key"),
            StoreError::NonNumeric => {
                f.write_str("cannot increment or decrement non-numeric value")
            }
            StoreError::OutOfMemory => f.write_str("out of memory storing object"),
            StoreError::Hidden => f.write_str("the bucket is hidden (being copied here)"),
            StoreError::ChangeLogActive => {
                f.write_str("items cannot be inserted into a bucket that keeps a change log")
            }
            StoreError::NoSuchBucket => f.write_str("no such bucket"),
        }
    }
}

impl std::error::Error for StoreError {}
