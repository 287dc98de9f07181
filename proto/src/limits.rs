//! Size limits that the decoder enforces before it trusts any declared length.

/// Default largest key, in bytes (memcached's limit, so both protocols agree).
pub const DEFAULT_MAX_KEY: usize = 250;
/// Default largest value, in bytes (1 MiB).
pub const DEFAULT_MAX_VALUE: usize = 1024 * 1024;
/// Default largest number of keys in one multi-get.
pub const DEFAULT_MAX_BATCH: usize = 1024;
/// Room that a frame body needs beyond its value: the fixed fields and the key.
pub const FRAME_OVERHEAD: usize = 1024;
/// Hard ceiling on any configured frame size (256 MiB): lengths travel as `u32`, and no
/// configuration may let a peer make a node buffer more than this for one frame.
pub const MAX_FRAME_CEILING: usize = 256 * 1024 * 1024;
/// Longest key the wire format can carry (keys are prefixed by a `u16`).
pub const MAX_KEY_CEILING: usize = u16::MAX as usize;

/// The limits a decoder checks every declared length against.
///
/// Both sides build one: the server from its configuration, a client from its builder.
/// A frame is only decoded when its body length is at most `max_frame`; a key must be
/// 1..=`max_key` bytes, a value at most `max_value` bytes, a multi-get at most `max_batch` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body, in bytes.
    pub max_frame: usize,
    /// Largest key, in bytes.
    pub max_key: usize,
    /// Largest value, in bytes.
    pub max_value: usize,
    /// Largest number of keys in one multi-get request (and entries in its reply).
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::for_value_size(DEFAULT_MAX_VALUE)
    }
}

impl Limits {
    /// Default key and batch limits for a given largest value.
    pub fn for_value_size(max_value: usize) -> Self {
        Self::new(DEFAULT_MAX_KEY, max_value, DEFAULT_MAX_BATCH)
    }

    /// Limits with a frame size that fits both a maximal write (value, key and fixed fields,
    /// [`FRAME_OVERHEAD`]) and a maximal multi-get request (`max_batch` keys of `max_key`).
    pub fn new(max_key: usize, max_value: usize, max_batch: usize) -> Self {
        let write = max_value.saturating_add(FRAME_OVERHEAD);
        let multi_get = max_batch
            .saturating_mul(max_key.saturating_add(2))
            .saturating_add(2);
        Self {
            max_frame: write.max(multi_get),
            max_key,
            max_value,
            max_batch,
        }
    }

    /// Checks that the limits are usable: every one non-zero, keys within what a `u16` prefix
    /// carries, frames within [`MAX_FRAME_CEILING`] and large enough for a maximal value.
    ///
    /// # Errors
    /// A static description of the first limit that is out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_key == 0 || self.max_key > MAX_KEY_CEILING {
            return Err("max key size must be between 1 and 65535 bytes");
        }
        if self.max_batch == 0 || self.max_batch > u16::MAX as usize {
            return Err("max batch must be between 1 and 65535 keys");
        }
        if self.max_frame > MAX_FRAME_CEILING {
            return Err("max frame size must be at most 256 MiB");
        }
        if self.max_value > self.max_frame.saturating_sub(self.max_key + 32) {
            return Err("max frame size must exceed max value size plus max key size plus 32");
        }
        Ok(())
    }
}
