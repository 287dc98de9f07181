//! `shoald`, the Shoal node.
//!
//! - [`store`]: the storage engine (slab memory, per-bucket indexes, eviction, expiry).
#![warn(missing_docs)]

pub mod store;
