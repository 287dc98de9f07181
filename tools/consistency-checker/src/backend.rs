//! The client the checker drives: the Rust client (`shoal-client`), libshoal through its
//! C ABI ([`client_c`](crate::client_c)), or a memcached text-protocol client of the nodes'
//! memcached ports ([`memcache`](crate::memcache)). All are reduced to the same few calls
//! (reads, set/add/cas with a ttl, delete, touch, ping, routing counters), and every error to
//! what it says about the request's fate ([`OpError`]).
//!
//! This module does not retry: the clients do their own retrying within their deadlines, and
//! what they give up on is what the checker counts.

use shoal_client::{Client, Error, Status};
use std::time::Duration;

pub use shoal_client::RoutingStats;

/// A value read back with its check-and-set token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The value hash (check-and-set token).
    pub hash: u64,
}

/// Whether `got.hash` is the hash of `got.value` (`shoal_proto::hash::value_hash`): what every
/// client kind must return as the check-and-set token (the memcached port as its cas unique).
pub fn hash_matches(got: &Got) -> bool {
    got.hash == shoal_proto::hash::value_hash(&got.value)
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
            (Error::InDoubt(_) | Error::Protocol(_), _) | (_, Some(Status::InDoubt)) => {
                OpError::InDoubt(e.to_string())
            }
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
    /// The memcached text protocol, against the nodes' memcached ports.
    Memcache,
}

impl ClientKind {
    /// `rust`, `c` or `memcache`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Rust => "rust",
            ClientKind::C => "c",
            ClientKind::Memcache => "memcache",
        }
    }
}

/// Settings shared by every client kind.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Server addresses (`host:port`, native protocol), tried in turn.
    pub servers: Vec<String>,
    /// The nodes' memcached addresses (`host:port`), for [`ClientKind::Memcache`] only.
    pub memcache_servers: Vec<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Whole-call deadline, retries included.
    pub deadline: Duration,
}

/// A connected client of any kind. Cheap to clone.
#[derive(Clone)]
pub enum Backend {
    /// The Rust client.
    Rust(Client),
    /// libshoal.
    C(crate::client_c::CClient),
    /// The memcached text protocol.
    Memcache(crate::memcache::McClient),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Rust(_) => f.write_str("Backend::Rust"),
            Backend::C(_) => f.write_str("Backend::C"),
            Backend::Memcache(_) => f.write_str("Backend::Memcache"),
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
            ClientKind::Memcache => {
                Ok(Backend::Memcache(crate::memcache::McClient::new(settings)?))
            }
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
            Backend::Memcache(c) => c.get(key).await,
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
            Backend::Memcache(c) => c.get_many(keys).await,
        }
    }

    /// Stores a value; `ttl` in seconds (0 = no expiry).
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
            Backend::C(c) => c.set(key.to_vec(), value, ttl).await,
            Backend::Memcache(c) => c.set(key, &value, ttl).await,
        }
    }

    /// Stores a value only if the key is absent; `ttl` as for [`Backend::set`].
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
            Backend::C(c) => c.add(key.to_vec(), value, ttl).await,
            Backend::Memcache(c) => c.add(key, &value, ttl).await,
        }
    }

    /// Check-and-set against `hash`; `ttl` as for [`Backend::set`].
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
            Backend::C(c) => c.cas(key.to_vec(), value, hash, ttl).await,
            Backend::Memcache(c) => c.cas(key, &value, hash, ttl).await,
        }
    }

    /// Deletes a key: `true` when it was deleted, `false` when it was not there.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn delete(&self, key: &[u8]) -> Result<bool, OpError> {
        match self {
            Backend::Rust(c) => c.delete(key).await.map_err(Into::into),
            Backend::C(c) => c.delete(key.to_vec()).await,
            Backend::Memcache(c) => c.delete(key).await,
        }
    }

    /// Sets a key's time to live (seconds, 0 = none): `true` when touched, `false` when not
    /// found.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn touch(&self, key: &[u8], ttl: u32) -> Result<bool, OpError> {
        match self {
            Backend::Rust(c) => c.touch(key, ttl).await.map_err(Into::into),
            Backend::C(c) => c.touch(key.to_vec(), ttl).await,
            Backend::Memcache(c) => c.touch(key, ttl).await,
        }
    }

    /// Redirects the client followed and bucket tables it fetched so far (zero for the
    /// memcached client, which leaves routing to the nodes).
    pub fn routing_stats(&self) -> RoutingStats {
        match self {
            Backend::Rust(c) => c.routing_stats(),
            Backend::C(c) => c.routing_stats(),
            Backend::Memcache(_) => RoutingStats::default(),
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
            Backend::Memcache(c) => c.ping().await,
        }
    }

    /// Closes connections.
    pub async fn close(&self) {
        match self {
            Backend::Rust(c) => c.close().await,
            Backend::C(_) => {}
            Backend::Memcache(c) => c.close(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_only_its_own_value() {
        let value = b"SCC1 some value".to_vec();
        let hash = shoal_proto::hash::value_hash(&value);
        assert!(hash_matches(&Got {
            value: value.clone(),
            hash
        }));
        assert!(!hash_matches(&Got {
            value: value.clone(),
            hash: hash ^ 1
        }));
        assert!(!hash_matches(&Got {
            value: b"other".to_vec(),
            hash
        }));
    }
}
