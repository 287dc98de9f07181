//! Shoal's native wire protocol.
pub mod hash;
