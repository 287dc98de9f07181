//! The one status table. Numbers are stable and never reused; `docs/protocol.md` is checked
//! against [`STATUSES`] by a test.

use crate::table::wire_table;

wire_table! {
    /// The outcome of a request, carried in every reply header.
    enum Status: u16, fn from_u16;
    /// Every assigned status: number and documented name.
    const STATUSES;
    /// Success.
    Ok = 0, "OK";
    /// The key does not exist (a miss).
    NotFound = 1, "NOT_FOUND";
    /// The stored value's hash differs from the one given (check-and-set conflict).
    Exists = 2, "EXISTS";
    /// The condition of ADD, REPLACE, APPEND or PREPEND was not met.
    NotStored = 3, "NOT_STORED";
    /// The value (or the whole frame) is larger than the limit.
    ValueTooLarge = 4, "VALUE_TOO_LARGE";
    /// The key is longer than the limit.
    KeyTooLong = 5, "KEY_TOO_LONG";
    /// The request is malformed.
    BadRequest = 6, "BAD_REQUEST";
    /// The opcode is not known to this server.
    UnknownCommand = 7, "UNKNOWN_COMMAND";
    /// Another node owns the key's bucket; the body says which.
    NotMyBucket = 8, "NOT_MY_BUCKET";
    /// The cluster is paused; retry later.
    Paused = 9, "PAUSED";
    /// The server is stopping; reconnect elsewhere.
    ShuttingDown = 10, "SHUTTING_DOWN";
    /// Authentication is needed first.
    AuthRequired = 11, "AUTH_REQUIRED";
    /// The server is overloaded or out of connections; retry later.
    Busy = 12, "BUSY";
    /// The server failed internally.
    ServerError = 13, "SERVER_ERROR";
    /// INCR or DECR on a value that is not a decimal number.
    NonNumeric = 14, "NON_NUMERIC";
    /// No memory could be freed for the write.
    OutOfMemory = 15, "OUT_OF_MEMORY";
    /// The server is still loading its savefile; retry later.
    Loading = 16, "LOADING";
    /// No protocol version in common.
    UnsupportedVersion = 17, "UNSUPPORTED_VERSION";
    /// The credentials were wrong.
    AuthFailed = 18, "AUTH_FAILED";
    /// A request other than HELLO arrived before HELLO.
    HelloRequired = 19, "HELLO_REQUIRED";
    /// Peer port: the other node belongs to another cluster (both cluster ids are logged).
    WrongCluster = 20, "WRONG_CLUSTER";
    /// Peer port: the node reached is not the one the dialer expected.
    WrongNode = 21, "WRONG_NODE";
    /// Peer port: the node cannot serve this request yet (its cluster layer is starting);
    /// retry later.
    NotReady = 22, "NOT_READY";
    /// Only in a NOTICE: the bucket table changed; the body is the new table version.
    TableChanged = 23, "TABLE_CHANGED";
    /// The node holds no valid lease from the cluster (it cannot reach the Raft leader, or
    /// it was fenced): it serves nothing; retry later, perhaps on another node after
    /// fetching the table again. Nothing was applied.
    NoLease = 24, "NO_LEASE";
    /// The write was applied on this node, but its lease ran out before every copy was known
    /// to hold it: it may or may not survive (the bucket may have failed over without it).
    InDoubt = 25, "IN_DOUBT";
}

impl Status {
    /// Whether the request may have been applied partially or at all is unknown to the
    /// client only for transport failures; a status always means the server decided. This
    /// says whether the decision means "try again later, unchanged".
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Paused
                | Self::ShuttingDown
                | Self::Busy
                | Self::Loading
                | Self::NotReady
                | Self::NoLease
        )
    }
}
