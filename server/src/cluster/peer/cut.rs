//! The peer layer's view of the fault-injection partition (`crate::fault`: SIGUSR1 cuts the
//! node off from its peers, SIGUSR2 heals it). Default builds are never cut off, and both
//! functions here reduce to nothing there.
//!
//! The choke points that check it: [`super::PeerServer`] drops new connections at accept and
//! ends live ones; [`super::PeerClient`] fails every call at once (as an unreachable peer
//! would) and ends its live connection.

use std::future::Future;

/// Whether this node is cut off from its peers now.
#[cfg(feature = "fault-injection")]
pub(crate) use crate::fault::peers_cut as now;

/// Whether this node is cut off from its peers now: never in default builds.
#[cfg(not(feature = "fault-injection"))]
#[inline]
pub(crate) fn now() -> bool {
    false
}

/// Runs `work` until it completes (`Some`) or this node is cut off from its peers (`None`:
/// `work` is dropped, and with it the sockets it owns).
#[cfg(feature = "fault-injection")]
pub(crate) async fn unless_cut<T>(work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = crate::fault::until_peers_cut() => None,
        out = work => Some(out),
    }
}

/// Runs `work` to completion: default builds are never cut off.
#[cfg(not(feature = "fault-injection"))]
#[inline]
pub(crate) async fn unless_cut<T>(work: impl Future<Output = T>) -> Option<T> {
    Some(work.await)
}
