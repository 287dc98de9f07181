//! libshoal (`--client c`): not available until `client-c/` lands in the workspace. Until
//! then, choosing it fails at start with a clear error.

use crate::backend::{ClientSettings, Got, OpError};

/// A libshoal client handle (placeholder until libshoal lands).
#[derive(Debug, Clone)]
pub struct CClient {
    _private: (),
}

impl CClient {
    /// Always fails: libshoal is not part of the workspace yet.
    ///
    /// # Errors
    /// Always.
    pub fn new(_settings: &ClientSettings) -> Result<Self, OpError> {
        Err(OpError::Failed(
            "the C client (libshoal) is not available in this build".into(),
        ))
    }

    /// Reads a key.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn get(&self, _key: Vec<u8>) -> Result<Option<Got>, OpError> {
        Err(OpError::Failed("no C client".into()))
    }

    /// Stores a value.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn set(&self, _key: Vec<u8>, _value: Vec<u8>) -> Result<(), OpError> {
        Err(OpError::Failed("no C client".into()))
    }

    /// Stores a value if absent.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn add(&self, _key: Vec<u8>, _value: Vec<u8>) -> Result<(), OpError> {
        Err(OpError::Failed("no C client".into()))
    }

    /// Check-and-set.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn cas(&self, _key: Vec<u8>, _value: Vec<u8>, _hash: u64) -> Result<(), OpError> {
        Err(OpError::Failed("no C client".into()))
    }
}
