//! The client the checker drives: the Rust client (`shoal-client`), or libshoal through its
//! C ABI ([`client_c`](crate::client_c)). Both are reduced to the five calls the workload
//! needs, and every error to what it says about the request's fate ([`OpError`]).
//!
//! This module does not retry: the clients do their own retrying within their deadlines, and
//! what they give up on is what the checker counts.

use shoal_client::{Client, Error, Status};
use std::time::Duration;

/// A value read back with its check-and-set token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The value hash (check-and-set token).
    pub hash: u64,
}

/// How a call failed, sorted by what it says about the request's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// Check-and-set conflict: the value changed (nothing applied).
    Conflict,
    /// ADD found the key present (nothing applied).
    NotStored,
    /// Check-and-set found the key missing (nothing applied).
    NotFound,
    /// Sent, no reply: may or may not have been applied.
    InDoubt(String),
    /// Certainly not applied: not sent, or refused.
    Failed(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Conflict => f.write_str("conflict"),
            OpError::NotStored => f.write_str("not stored"),
            OpError::NotFound => f.write_str("not found"),
            OpError::InDoubt(why) => write!(f, "in doubt: {why}"),
            OpError::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl std::error::Error for OpError {}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        if e.is_conflict() {
            return OpError::Conflict;
        }
        match (&e, e.status()) {
            (_, Some(Status::NotStored)) => OpError::NotStored,
            (_, Some(Status::NotFound)) => OpError::NotFound,
            // A reply that made no sense still means the request reached the server.
            (Error::InDoubt(_) | Error::Protocol(_), _) => OpError::InDoubt(e.to_string()),
            _ => OpError::Failed(e.to_string()),
        }
    }
}

/// Which client library to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `shoal-client`, async.
    Rust,
    /// libshoal (`shoal-client-c`) through its C ABI, on blocking threads.
    C,
}

impl ClientKind {
    /// `rust` or `c`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Rust => "rust",
            ClientKind::C => "c",
        }
    }
}

/// Settings shared by both clients.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Server addresses (`host:port`), tried in turn.
    pub servers: Vec<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Whole-call deadline, retries included.
    pub deadline: Duration,
}

/// A connected client of either kind. Cheap to clone.
#[derive(Clone)]
pub enum Backend {
    /// The Rust client.
    Rust(Client),
    /// libshoal.
    C(crate::client_c::CClient),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Rust(_) => f.write_str("Backend::Rust"),
            Backend::C(_) => f.write_str("Backend::C"),
        }
    }
}

impl Backend {
    /// Builds a client of `kind` (connections open lazily).
    ///
    /// # Errors
    /// When the client refuses the settings.
    pub fn new(kind: ClientKind, settings: &ClientSettings) -> Result<Self, OpError> {
        match kind {
            ClientKind::Rust => {
                let client = Client::builder()
                    .seeds(settings.servers.iter().cloned())
                    .request_timeout(settings.request_timeout)
                    .connect_timeout(settings.request_timeout)
                    .deadline(settings.deadline)
                    .client_name("consistency-checker")
                    .build()?;
                Ok(Backend::Rust(client))
            }
            ClientKind::C => Ok(Backend::C(crate::client_c::CClient::new(settings)?)),
        }
    }

    /// Reads a key (`Ok(None)`: a miss).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn get(&self, key: &[u8]) -> Result<Option<Got>, OpError> {
        match self {
            Backend::Rust(c) => Ok(c.get(key).await?.map(|item| Got {
                value: item.value.to_vec(),
                hash: item.hash,
            })),
            Backend::C(c) => c.get(key.to_vec()).await,
        }
    }

    /// Reads many keys, one result per key in order.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Got>>, OpError> {
        match self {
            Backend::Rust(c) => Ok(c
                .get_many(keys)
                .await?
                .into_iter()
                .map(|item| {
                    item.map(|i| Got {
                        value: i.value.to_vec(),
                        hash: i.hash,
                    })
                })
                .collect()),
            Backend::C(c) => {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    out.push(c.get(key.clone()).await?);
                }
                Ok(out)
            }
        }
    }

    /// Stores a value expiring after `ttl` seconds (0: never).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn set(&self, key: &[u8], value: Vec<u8>, ttl: u32) -> Result<(), OpError> {
        match self {
            Backend::Rust(c) => c
                .set(key, value, ttl, 0)
                .await
                .map(drop)
                .map_err(Into::into),
            Backend::C(c) => c.set(key.to_vec(), value).await,
        }
    }

    /// Deletes a key; `false` when it was not there.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn delete(&self, key: &[u8]) -> Result<bool, OpError> {
        match self {
            Backend::Rust(c) => c.delete(key).await.map_err(Into::into),
            Backend::C(_) => Err(OpError::Failed("delete: not in this client".into())),
        }
    }

    /// Sets a key's TTL to `ttl` seconds; `false` when it was not there.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn touch(&self, key: &[u8], ttl: u32) -> Result<bool, OpError> {
        match self {
            Backend::Rust(c) => c.touch(key, ttl).await.map_err(Into::into),
            Backend::C(_) => Err(OpError::Failed("touch: not in this client".into())),
        }
    }

    /// Stores a value only if the key is absent.
    ///
    /// # Errors
    /// [`OpError::NotStored`] when it is present; see [`OpError`].
    pub async fn add(&self, key: &[u8], value: Vec<u8>, ttl: u32) -> Result<(), OpError> {
        match self {
            Backend::Rust(c) => c
                .add(key, value, ttl, 0)
                .await
                .map(drop)
                .map_err(Into::into),
            Backend::C(c) => c.add(key.to_vec(), value).await,
        }
    }

    /// Check-and-set against `hash`.
    ///
    /// # Errors
    /// [`OpError::Conflict`] or [`OpError::NotFound`]; see [`OpError`].
    pub async fn cas(
        &self,
        key: &[u8],
        value: Vec<u8>,
        hash: u64,
        ttl: u32,
    ) -> Result<(), OpError> {
        match self {
            Backend::Rust(c) => c
                .cas(key, value, hash, ttl, 0)
                .await
                .map(drop)
                .map_err(Into::into),
            Backend::C(c) => c.cas(key.to_vec(), value, hash).await,
        }
    }

    /// Round trip to a server.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn ping(&self) -> Result<(), OpError> {
        match self {
            Backend::Rust(c) => c.ping().await.map_err(Into::into),
            Backend::C(c) => c.ping().await,
        }
    }

    /// Closes connections.
    pub async fn close(&self) {
        if let Backend::Rust(c) = self {
            c.close().await;
        }
    }
}
