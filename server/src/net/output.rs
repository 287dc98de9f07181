//! [`Output`]: a connection's reply bytes, including replies that are not ready yet.
//!
//! A session appends reply bytes (through `Deref<Target = Vec<u8>>`) and, for a request that
//! must wait for something (a savefile being written; later, replication acknowledgements,
//! forwarding, parked requests), hands over a [`PendingReply`] with [`Output::defer`]. The
//! connection driver writes what is ready, keeps reading and serving, and writes each pending
//! reply when it completes:
//!
//! - **ordered** (memcached text: replies in request order): bytes after a pending reply wait
//!   behind it;
//! - **unordered** (native: replies carry the request id): a pending reply is written as soon
//!   as it completes, and other replies do not wait for it.
//!
//! Memory stays bounded: a session stops once [`Output::is_full`], and the driver stops
//! reading while [`Output::pending`] is at the connection's limit.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The bytes of a reply that completes later. The work must make progress without this
/// future being polled (run it on a task or a blocking thread; the future only collects the
/// result), because an ordered connection polls only its oldest pending reply.
pub type PendingReply = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// A position in an [`Output`] ([`Output::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pending: usize,
    len: usize,
}

/// A pending reply and, on an ordered connection, the bytes queued behind it.
struct Waiting {
    reply: PendingReply,
    after: Vec<u8>,
}

/// A connection's output: bytes ready to write, and replies still pending.
pub struct Output {
    /// Bytes that can be written now, in order.
    ready: Vec<u8>,
    /// Ordered: pending replies in request order, each with the bytes that follow it.
    /// Unordered: pending replies in any order (their `after` stays empty).
    waiting: VecDeque<Waiting>,
    ordered: bool,
    /// The session stops adding once this many bytes are buffered.
    flush_at: usize,
    /// The session stops adding once this many replies are pending.
    max_pending: usize,
}

impl Output {
    /// An empty output. `ordered`: replies leave in request order (text protocol).
    pub fn new(ordered: bool, flush_at: usize, capacity: usize) -> Output {
        Output {
            ready: Vec::with_capacity(capacity),
            waiting: VecDeque::new(),
            ordered,
            flush_at,
            max_pending: usize::MAX,
        }
    }

    /// The same output, full once `max_pending` replies are pending (at least 1).
    pub fn with_max_pending(mut self, max_pending: usize) -> Output {
        self.max_pending = max_pending.max(1);
        self
    }

    /// Bytes buffered, ready or queued behind a pending reply.
    pub fn buffered(&self) -> usize {
        self.ready.len() + self.waiting.iter().map(|w| w.after.len()).sum::<usize>()
    }

    /// Whether a session must stop adding replies until the driver has written some (or
    /// some pending ones completed).
    pub fn is_full(&self) -> bool {
        self.buffered() >= self.flush_at || self.waiting.len() >= self.max_pending
    }

    /// Replies still pending.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a reply that completes later; see [`PendingReply`] for what it must do.
    pub fn defer(&mut self, reply: PendingReply) {
        self.waiting.push_back(Waiting {
            reply,
            after: Vec::new(),
        });
    }

    /// Where the next reply starts, for [`Output::hold_back`].
    pub fn mark(&self) -> Mark {
        Mark {
            pending: self.waiting.len(),
            len: self.len(),
        }
    }

    /// Holds the reply bytes added since `mark` until `until` completes: they become a
    /// pending reply (so on an ordered connection the replies after them wait too), sent as
    /// they are if `until` gives `true`, replaced by `otherwise` if it gives `false`.
    /// Nothing is held when nothing was added, or when a reply was deferred since `mark`
    /// (its bytes are not all in one place; the callers hold back requests run here, which
    /// never defer).
    pub fn hold_back(
        &mut self,
        mark: Mark,
        until: impl Future<Output = bool> + Send + 'static,
        otherwise: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) {
        if self.waiting.len() != mark.pending || self.len() <= mark.len {
            return;
        }
        let bytes = self.split_off(mark.len);
        self.defer(Box::pin(async move {
            if until.await {
                bytes
            } else {
                otherwise()
            }
        }));
    }

    /// The bytes that can be written now.
    pub(crate) fn ready(&mut self) -> &mut Vec<u8> {
        &mut self.ready
    }

    /// Gives back a large ready buffer once it has been written.
    pub(crate) fn shrink(&mut self, above: usize, to: usize) {
        if self.ready.is_empty() && self.ready.capacity() > above {
            self.ready = Vec::with_capacity(to);
        }
    }

    /// Moves every completed pending reply (for an ordered connection, only those at the
    /// front, with the bytes behind them) to the ready bytes. `Ready` once at least one moved.
    pub(crate) fn poll_completed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut moved = false;
        if self.ordered {
            while let Some(front) = self.waiting.front_mut() {
                let Poll::Ready(bytes) = front.reply.as_mut().poll(cx) else {
                    break;
                };
                self.ready.extend_from_slice(&bytes);
                if let Some(done) = self.waiting.pop_front() {
                    self.ready.extend_from_slice(&done.after);
                }
                moved = true;
            }
        } else {
            let mut i = 0;
            while i < self.waiting.len() {
                if let Poll::Ready(bytes) = self.waiting[i].reply.as_mut().poll(cx) {
                    self.ready.extend_from_slice(&bytes);
                    self.waiting.swap_remove_back(i);
                    moved = true;
                } else {
                    i += 1;
                }
            }
        }
        if moved {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Completes when at least one pending reply has moved to the ready bytes.
    pub(crate) async fn completed(&mut self) {
        std::future::poll_fn(|cx| self.poll_completed(cx)).await;
    }
}

impl Deref for Output {
    type Target = Vec<u8>;

    /// Where the next reply bytes go: behind the last pending reply on an ordered connection,
    /// otherwise the ready bytes.
    fn deref(&self) -> &Vec<u8> {
        match self.waiting.back() {
            Some(w) if self.ordered => &w.after,
            _ => &self.ready,
        }
    }
}

impl DerefMut for Output {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        match self.waiting.back_mut() {
            Some(w) if self.ordered => &mut w.after,
            _ => &mut self.ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(rx: tokio::sync::oneshot::Receiver<Vec<u8>>) -> PendingReply {
        Box::pin(async move { rx.await.unwrap_or_default() })
    }

    #[tokio::test]
    async fn ordered_output_keeps_request_order() {
        let mut out = Output::new(true, 1 << 20, 0);
        out.extend_from_slice(b"a");
        let (tx, rx) = tokio::sync::oneshot::channel();
        out.defer(later(rx));
        out.extend_from_slice(b"c");
        assert_eq!(out.ready().as_slice(), b"a");
        assert_eq!(out.buffered(), 2);
        tx.send(b"b".to_vec()).expect("receiver alive");
        out.completed().await;
        assert_eq!(out.ready().as_slice(), b"abc");
        assert_eq!(out.pending(), 0);
        out.extend_from_slice(b"d");
        assert_eq!(out.ready().as_slice(), b"abcd");
    }

    #[tokio::test]
    async fn unordered_output_does_not_wait() {
        let mut out = Output::new(false, 1 << 20, 0);
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        out.defer(later(rx1));
        out.defer(later(rx2));
        out.extend_from_slice(b"x");
        assert_eq!(out.ready().as_slice(), b"x");
        tx2.send(b"2".to_vec()).expect("receiver alive");
        out.completed().await;
        assert_eq!(out.ready().as_slice(), b"x2");
        assert_eq!(out.pending(), 1);
        tx1.send(b"1".to_vec()).expect("receiver alive");
        out.completed().await;
        assert_eq!(out.ready().as_slice(), b"x21");
    }

    #[tokio::test]
    async fn held_back_bytes_leave_when_their_condition_completes() {
        let mut out = Output::new(true, 1 << 20, 0);
        out.extend_from_slice(b"a");
        let mark = out.mark();
        out.extend_from_slice(b"b");
        let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
        let in_doubt = || b"?".to_vec();
        out.hold_back(mark, async move { rx.await.unwrap_or(false) }, in_doubt);
        out.extend_from_slice(b"c");
        assert_eq!(out.ready().as_slice(), b"a");
        assert_eq!(out.pending(), 1);
        tx.send(true).expect("receiver alive");
        out.completed().await;
        assert_eq!(out.ready().as_slice(), b"abc");

        // Nothing added since the mark: nothing held.
        let mark = out.mark();
        out.hold_back(mark, std::future::pending(), in_doubt);
        assert_eq!(out.pending(), 0);

        // A reply deferred since the mark: not split.
        let mark = out.mark();
        out.defer(Box::pin(async { b"d".to_vec() }));
        out.extend_from_slice(b"e");
        out.hold_back(mark, std::future::pending(), in_doubt);
        assert_eq!(out.pending(), 1);
        out.completed().await;
        assert_eq!(out.ready().as_slice(), b"abcde");

        // A condition that fails: the held bytes are replaced.
        let mark = out.mark();
        out.extend_from_slice(b"f");
        out.hold_back(mark, async { false }, in_doubt);
        out.extend_from_slice(b"g");
        out.completed().await;
        assert_eq!(out.ready().as_slice(), b"abcde?g");
    }

    #[test]
    fn full_counts_bytes_behind_a_pending_reply() {
        let mut out = Output::new(true, 4, 0);
        out.defer(Box::pin(std::future::pending()));
        out.extend_from_slice(b"1234");
        assert!(out.is_full());
        assert!(out.ready().is_empty());
    }
}
