//! The one opcode table. `docs/protocol.md` is checked against [`OPCODES`] by a test.
//!
//! Opcode numbers are never changed or reused once published; new behaviour gets a new opcode.
//! Ranges reserved for later message families:
//!
//! | range       | family                                   |
//! |-------------|------------------------------------------|
//! | 0x01..=0x0F | session (HELLO, GOODBYE, PING, ...)      |
//! | 0x10..=0x3F | data commands                            |
//! | 0x40..=0x5F | cluster (bucket table, membership)       |
//! | 0x60..=0x7F | replication and bucket movement          |
//! | 0x80..=0x9F | change stream                            |
//! | 0xA0..=0xBF | admin                                    |
//! | 0xC0..=0xDF | peer (node to node; [`crate::peer`]), served only on the peer port |
//! | 0xE0..=0xFF | unassigned                               |

use crate::table::wire_table;

wire_table! {
    /// A command of the native protocol.
    enum Opcode: u8, fn from_u8;
    /// Every assigned opcode: number and documented name.
    const OPCODES;
    /// Negotiate the protocol version; must be the first request on a connection.
    Hello = 0x01, "HELLO";
    /// Either side ends the connection cleanly; the other replies, flushes and closes.
    Goodbye = 0x02, "GOODBYE";
    /// Liveness check.
    Ping = 0x03, "PING";
    /// Server-initiated notice (for example SHUTTING_DOWN); never sent by a client.
    Notice = 0x04, "NOTICE";
    /// Server, store and connection counters.
    Stats = 0x05, "STATS";
    /// Read a value and its flags.
    Get = 0x10, "GET";
    /// Read a value, its flags and its check-and-set hash.
    GetWithHash = 0x11, "GETH";
    /// Read many keys in one request.
    MultiGet = 0x12, "MGET";
    /// Change a key's time to live.
    Touch = 0x13, "TOUCH";
    /// Read a value (with hash) and change its time to live.
    GetAndTouch = 0x14, "GAT";
    /// Store unconditionally.
    Set = 0x20, "SET";
    /// Store only if the key is absent.
    Add = 0x21, "ADD";
    /// Store only if the key is present.
    Replace = 0x22, "REPLACE";
    /// Store only if the stored value's hash equals the one given.
    Cas = 0x23, "CAS";
    /// Add bytes after an existing value.
    Append = 0x24, "APPEND";
    /// Add bytes before an existing value.
    Prepend = 0x25, "PREPEND";
    /// Remove a key, optionally only if its hash matches.
    Delete = 0x26, "DELETE";
    /// Add to a decimal counter.
    Incr = 0x27, "INCR";
    /// Subtract from a decimal counter (clamped at zero).
    Decr = 0x28, "DECR";
    /// The whole bucket table with its version.
    TableGet = 0x40, "TABLE_GET";
    /// What one node says about itself: ids, Raft role, table version, memory, clock.
    NodeStatus = 0x41, "NODE_STATUS";
    /// Cluster admin: start or cancel a bucket move, drain a node, pause or resume movement
    /// ([`crate::cluster::AdminRequest`]); the reply is a message saying what was done.
    ClusterAdmin = 0x42, "CLUSTER_ADMIN";
    /// Admin: write a savefile now, without stopping; replies when the file is complete.
    Save = 0xA0, "SAVE";
    /// Admin: change when the node writes a savefile (`--persist`) while it runs.
    SetPersist = 0xA1, "SET_PERSIST";
}
