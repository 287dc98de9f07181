//! Peer frames over a socket: reading whole frames (bounded), writing frames from a queue,
//! and closing after a refusal so that the refusal reaches the other side.

use bytes::{Bytes, BytesMut};
use shoal_proto::peer::decode_frame;
use shoal_proto::{DecodeError, Header, HEADER_LEN};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest body accepted before the handshake completes: the handshake bodies are tiny, so
/// an unauthenticated peer cannot make the node buffer more than this.
pub(crate) const HANDSHAKE_MAX_BODY: usize = 1024;
/// Most bytes reserved for one read, however large the frame being received.
const READ_CHUNK: usize = 256 * 1024;
/// How long a connection closed after a refusal keeps reading (and discarding) what the
/// other side still sends, so the close is a FIN after the refusal and not a reset that
/// could destroy it.
const LINGER: Duration = Duration::from_millis(500);

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The other side closed the connection between frames.
    Closed,
    /// The connection ended or failed in the middle of a frame.
    Io(std::io::Error),
    /// The bytes are not a valid frame (bad magic, too large, ...); the stream is unusable.
    Decode(DecodeError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Decode(e) => write!(f, "{e}"),
        }
    }
}

/// Reads whole frames from one half of a connection.
pub(crate) struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    /// Largest body accepted; a header declaring more is a [`ReadError::Decode`].
    pub(crate) max_body: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that accepts bodies of at most `max_body` bytes.
    pub(crate) fn new(rd: R, max_body: usize) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(8 * 1024),
            max_body,
        }
    }

    /// The next whole frame: its header and body. The body is a slice of the receive buffer;
    /// nothing is reserved from a declared length beyond [`READ_CHUNK`] at a time.
    pub(crate) async fn next(&mut self) -> Result<(Header, Bytes), ReadError> {
        loop {
            match decode_frame(&self.buf, self.max_body) {
                Ok(Some(frame)) => {
                    let whole = self.buf.split_to(frame.len).freeze();
                    return Ok((frame.header, whole.slice(HEADER_LEN..)));
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            let wanted =
                match Header::decode(&self.buf, &shoal_proto::peer::peer_limits(self.max_body)) {
                    Ok(Some(h)) => HEADER_LEN + h.body_len as usize - self.buf.len(),
                    _ => HEADER_LEN,
                };
            self.buf.reserve(wanted.clamp(HEADER_LEN, READ_CHUNK));
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Err(ReadError::Closed),
                Ok(0) => {
                    return Err(ReadError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a frame",
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Reads and discards what the other side still sends, until it closes or [`LINGER`]
    /// passes (at most a few MiB): called after a refusal, before the socket is dropped.
    pub(crate) async fn linger(&mut self) {
        let mut left: usize = 4 << 20;
        let _ = tokio::time::timeout(LINGER, async {
            let mut chunk = [0u8; 8192];
            while left > 0 {
                match self.rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

/// Most bytes gathered into one write.
const WRITE_BATCH: usize = 256 * 1024;

/// Writes every frame queued on `rx`, in order, until every sender is gone (or a write
/// fails); then shuts the write half down (FIN).
///
/// Frames queued together leave in one write: after the first frame the writer yields once,
/// so the tasks that are about to queue theirs (a burst of forwarded commands, the replies to
/// a pipelined batch) do so first, then gathers up to [`WRITE_BATCH`] bytes. One write per
/// burst instead of one per frame.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let mut batch = Vec::new();
    while let Some(frame) = rx.recv().await {
        tokio::task::yield_now().await;
        let out: &[u8] = match rx.try_recv() {
            Err(_) => &frame,
            Ok(second) => {
                batch.clear();
                batch.extend_from_slice(&frame);
                batch.extend_from_slice(&second);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                &batch
            }
        };
        if wr.write_all(out).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        if batch.capacity() > 2 * WRITE_BATCH {
            batch = Vec::new();
        }
    }
    let _ = wr.shutdown().await;
}
