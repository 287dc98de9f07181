//! `shoal-client`: the Rust client for Shoal, async (tokio) and blocking.
//!
//! # Quick start
//!
//! ```no_run
//! use shoal_client::{Client, Error};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), Error> {
//! let client = Client::builder()
//!     .seed("127.0.0.1:7400")
//!     .seed("127.0.0.1:7401") // tried in turn
//!     .request_timeout(Duration::from_millis(500))
//!     .deadline(Duration::from_secs(2)) // the whole call, retries included
//!     .build()?;
//!
//! let hash = client.set("user:1", "alice", 60, 0).await?; // ttl 60 s, flags 0
//! match client.get("user:1").await? {
//!     Some(item) => assert_eq!(item.hash, hash),
//!     None => println!("miss"), // a miss is Ok(None), not an error
//! }
//!
//! // Check-and-set with the hash read earlier.
//! match client.cas("user:1", "bob", hash, 60, 0).await {
//!     Ok(_new_hash) => {}
//!     Err(e) if e.is_conflict() => println!("someone else wrote it first"),
//!     Err(e) if e.is_in_doubt() => println!("sent, but no reply: it may have been applied"),
//!     Err(e) => return Err(e),
//! }
//! let n = client.incr("hits", 1, Some((0, 0))).await?; // create at 0 when missing
//! # let _ = n;
//! # Ok(())
//! # }
//! ```
//!
//! The blocking client (what `libshoal` wraps) has the same methods:
//!
//! ```no_run
//! let client = shoal_client::Client::builder().seed("127.0.0.1:7400").build_blocking()?;
//! client.set(b"k", b"v", 0, 7)?;
//! let items = client.get_many(&[&b"k"[..], &b"missing"[..]])?;
//! assert_eq!(items[0].as_ref().map(|i| i.flags), Some(7));
//! assert!(items[1].is_none());
//! # Ok::<(), shoal_client::Error>(())
//! ```
//!
//! # What a result tells you
//!
//! - `Ok(..)`: the server applied it (reads: `Ok(None)` is a miss).
//! - [`Error::Server`]: the server refused it; nothing was applied. A check-and-set conflict
//!   is `Status::Exists` ([`Error::is_conflict`]).
//! - [`Error::Connection`] / [`Error::Timeout`]: it was never sent; nothing was applied.
//! - [`Error::InDoubt`]: it was sent, and the connection failed or the request timed out
//!   before a reply. It may or may not have been applied ([`Error::is_in_doubt`]).
//! - [`Error::TooLarge`] / [`Error::InvalidArgument`]: refused locally, no network I/O.
//!
//! Every error maps to a stable number through [`Error::code`] ([`ErrorCode`]).
//!
//! # Retries and deadlines
//!
//! Each call has a deadline (the builder's `deadline`); it returns by then. Inside it the
//! client reconnects (with jittered, bounded backoff, trying each seed in turn) and resends a
//! request that was **not sent**, or that the server refused with a transient status
//! (`SHUTTING_DOWN`, `BUSY`, `PAUSED`, `LOADING`). A request that was sent and lost with its
//! connection is resent only when it is idempotent (GET, SET, DELETE, TOUCH, ...); ADD, CAS,
//! APPEND, PREPEND, INCR, DECR and conditional DELETE come back as [`Error::InDoubt`] instead.
//! A request that timed out is never resent. A `NOT_MY_BUCKET` redirect means the request
//! was not applied, so every operation (CAS, ADD and INCR included) is sent again, to the
//! owner it names when its epoch is newer than the client's (see Routing); if redirects go
//! on until the deadline the call returns [`Error::NotMyBucket`] with the last one.
//!
//! # Routing
//!
//! The client routes each keyed request to its bucket's primary by the cluster's bucket
//! table ([`TableView`]). Seeds are only for bootstrapping: one seed is enough for a
//! cluster of any size, and the client keeps working when that seed dies. The table is
//! fetched (TABLE_GET) in the background when the client is first used (the first calls go
//! to a seed, which redirects), again when a node announces a change (`TABLE_CHANGED`
//! notice), when a redirect names an epoch newer than the table, and every 30 s
//! ([`REFRESH_INTERVAL`]); from the node that announced it, else any member, else the
//! seeds; one fetch at a time.
//! - A redirect updates its bucket only when its epoch is newer than the entry's (an older
//!   one, from a node behind the cluster, is ignored: the request goes again where the table
//!   says, after a backoff). After 3 redirects in one call the client refetches the table.
//! - [`Client::get_many`] sends one MGET per owner and puts the answers back in order.
//! - An owner that cannot be reached: the client refetches the table from another node and
//!   goes on where it says; a read is sent again, a non-idempotent write that was sent is
//!   [`Error::InDoubt`] as always.
//! - Keyless calls ([`Client::ping`], [`Client::stats`], [`Client::table`],
//!   [`Client::node_status`]) go to the seeds.
//! - A node that belongs to no cluster answers an empty table: everything then goes to the
//!   seed, as with a single node.
//!
//! [`Client::table_version`] is the version the client routes by, and
//! [`Client::announced_table_version`] the newest a server announced to it.
//! [`Client::routing_stats`] counts the redirects followed and the tables fetched
//! ([`RoutingStats`]).
//!
//! # Cluster
//!
//! [`Client::table`] fetches the seed's bucket table ([`TableView`]),
//! [`Client::node_status`] what the seed says about itself ([`NodeStatus`], with the bucket
//! moves it runs: [`MoveProgress`]), and [`Client::cluster_admin`] asks the seed for a change
//! to the cluster ([`AdminRequest`]: move a bucket, cancel a move, drain a node, pause).
//!
//! # Connections
//!
//! Connections open lazily, start with HELLO, and carry many requests at once: concurrent
//! calls are pipelined, their frames gathered into one write, and replies matched by request
//! id. An idle connection sends PING. When a server says GOODBYE, announces SHUTTING_DOWN,
//! resets or dies, its connection is dropped and the next call opens another.
//!
//! # Layout
//! - [`builder`]: settings and defaults.
//! - `client` ([`Client`]): operations and the retry loop.
//! - `connection`: one connection's writer, reader and keepalive tasks, and the pending map.
//! - `routing`: bucket -> server table (no I/O; fetching it is `client`'s).
//! - [`blocking`]: the blocking client.
//! - [`error`]: the error type and result codes.

#![warn(missing_docs)]

pub mod blocking;
pub mod builder;
mod client;
mod connection;
pub mod error;
mod routing;

pub use builder::ClientBuilder;
pub use bytes::Bytes;
pub use client::{Client, Item, RoutingStats, REFRESH_INTERVAL};
pub use error::{Error, ErrorCode, Failure, FailureKind, LimitKind, Redirect};
pub use shoal_proto::cluster::{
    AdminRequest, MovePhase, MoveProgress, NodeState, RaftRole, ReplicationStatus, TableBucket,
    TableNode, NO_PRIMARY,
};
pub use shoal_proto::{Limits, NodeStatus, Status, TableView};
