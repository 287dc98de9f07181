//! `--client memcache`: a memcached text-protocol client of the nodes' memcached ports, so
//! the soak also covers that port (and, with several nodes, its forwarding to the owner).
//!
//! ```text
//!  call ──► pool: an idle connection, else a new one to a random server
//!       ──► write one request ──► read one reply (parse_reply) ──► back to the pool
//! ```
//!
//! This module owns the connection pool, the request encoding and the reply parser
//! ([`parse_reply`]). One request at a time per connection; a connection that saw an error,
//! a timeout or a reply it did not expect is dropped, never reused (a late reply would be
//! taken for the next request's). Each new connection goes to a server picked at random, so
//! the load spreads over every node's port.
//!
//! What a failure says about the request ([`OpError`]):
//! - not connected, or the request not fully written: `Failed`, and any call may try again
//!   on another connection within its deadline (nothing reached the server whole);
//! - written, then no reply, a broken one, or a timeout: a write is `InDoubt` and is not sent
//!   again; a read is tried again until the deadline, then `Failed`;
//! - `SERVER_ERROR` saying the command "may have been applied": `InDoubt`; any other
//!   `SERVER_ERROR`, `ERROR` or `CLIENT_ERROR`: `Failed` (reads try again on `SERVER_ERROR`).
//!
//! The cas unique of a `gets` is Shoal's 64-bit value hash, returned as [`Got::hash`].

use crate::backend::{ClientSettings, Got, OpError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections kept for reuse; more are closed when they come back.
const MAX_IDLE: usize = 32;
/// Longest reply line accepted (a `VALUE` line holds a key of at most 250 bytes).
const MAX_LINE: usize = 4096;
/// Largest data block accepted in a `VALUE` reply.
const MAX_VALUE: usize = 64 << 20;
/// Longest key the text protocol allows.
const MAX_KEY: usize = 250;
/// First and longest pause between attempts of one call.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));

/// A memcached text-protocol client over a pool of connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct McClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    servers: Vec<String>,
    request_timeout: Duration,
    deadline: Duration,
    idle: Mutex<Vec<TcpStream>>,
}

/// One reply of the text protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The items of a `gets` (hits only, in the server's order), ended by `END`.
    Values(Vec<Value>),
    /// `STORED`.
    Stored,
    /// `NOT_STORED`.
    NotStored,
    /// `EXISTS`.
    Exists,
    /// `NOT_FOUND`.
    NotFound,
    /// `DELETED`.
    Deleted,
    /// `TOUCHED`.
    Touched,
    /// `VERSION <text>`.
    Version(String),
    /// `ERROR`, `CLIENT_ERROR <text>` or `SERVER_ERROR <text>`: the whole line.
    Error(String),
}

/// One `VALUE` block of a `gets` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The key it is for.
    pub key: Vec<u8>,
    /// The data block.
    pub data: Vec<u8>,
    /// The cas unique (Shoal: the value hash).
    pub cas: u64,
}

/// A reply that is not one the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed reply: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

fn malformed<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(why.into()))
}

/// The line at the front of `buf` (without its `\r\n`) and the length it takes with it;
/// `None` while it is incomplete.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ParseError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_LINE => Ok(Some((&buf[..end], end + 2))),
        Some(_) => malformed("line too long"),
        None if buf.len() > MAX_LINE => malformed("line too long"),
        None => Ok(None),
    }
}

/// A decimal number of ASCII digits only (no sign, no spaces), within `u64`.
fn number(token: &[u8]) -> Result<u64, ParseError> {
    if token.is_empty() || token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
        return malformed(format!("bad number {:?}", String::from_utf8_lossy(token)));
    }
    std::str::from_utf8(token)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or_else(|| malformed("number out of range"), Ok)
}

/// An error line (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`), if `l` is one.
fn error_line(l: &[u8]) -> Option<Reply> {
    let is = l == b"ERROR" || l.starts_with(b"CLIENT_ERROR ") || l.starts_with(b"SERVER_ERROR ");
    is.then(|| Reply::Error(String::from_utf8_lossy(l).into_owned()))
}

/// Parses one reply from the front of `buf`: `Ok(None)` while it is incomplete, else the
/// reply and the bytes it took. `retrieval` says a `gets` was sent (a sequence of `VALUE`
/// blocks ended by `END`); otherwise the reply is one line. Every length is checked, and a
/// data block not followed by `\r\n` right where its declared length ends is an error.
///
/// # Errors
/// [`ParseError`] for anything the protocol does not allow.
pub fn parse_reply(buf: &[u8], retrieval: bool) -> Result<Option<(Reply, usize)>, ParseError> {
    if !retrieval {
        let Some((l, used)) = line(buf)? else {
            return Ok(None);
        };
        let reply = match l {
            b"STORED" => Reply::Stored,
            b"NOT_STORED" => Reply::NotStored,
            b"EXISTS" => Reply::Exists,
            b"NOT_FOUND" => Reply::NotFound,
            b"DELETED" => Reply::Deleted,
            b"TOUCHED" => Reply::Touched,
            _ if l.starts_with(b"VERSION ") => {
                Reply::Version(String::from_utf8_lossy(&l[8..]).into_owned())
            }
            _ => match error_line(l) {
                Some(e) => e,
                None => return malformed(format!("unknown line {:?}", String::from_utf8_lossy(l))),
            },
        };
        return Ok(Some((reply, used)));
    }
    let mut values = Vec::new();
    let mut pos = 0;
    loop {
        let Some((l, used)) = line(&buf[pos..])? else {
            return Ok(None);
        };
        if l == b"END" {
            return Ok(Some((Reply::Values(values), pos + used)));
        }
        if let Some(e) = error_line(l) {
            return Ok(Some((e, pos + used)));
        }
        let tokens: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
        let [b"VALUE", key, flags, len, cas] = tokens[..] else {
            return malformed(format!(
                "expected VALUE <key> <flags> <bytes> <cas> or END, got {:?}",
                String::from_utf8_lossy(l)
            ));
        };
        if key.is_empty() || key.len() > MAX_KEY {
            return malformed("bad key length");
        }
        if u32::try_from(number(flags)?).is_err() {
            return malformed("flags over 32 bits");
        }
        let len = usize::try_from(number(len)?)
            .ok()
            .filter(|&n| n <= MAX_VALUE)
            .map_or_else(|| malformed("data length over the limit"), Ok)?;
        let cas = number(cas)?;
        let start = pos + used;
        let Some(end) = start.checked_add(len) else {
            return malformed("data length overflows");
        };
        let Some(trailer) = buf.get(end..end + 2) else {
            return Ok(None);
        };
        if trailer != b"\r\n" {
            return malformed("data block not ended by \\r\\n where its length says");
        }
        values.push(Value {
            key: key.to_vec(),
            data: buf[start..end].to_vec(),
            cas,
        });
        pos = end + 2;
    }
}

/// What one attempt on one connection came to.
enum Attempt {
    /// The reply (the connection went back to the pool).
    Reply(Reply),
    /// Not connected, or the request not fully written: nothing reached the server whole.
    NotSent(String),
    /// Written, then no usable reply (closed, timed out, malformed).
    Sent(String),
}

/// What kind of call it is: whether it may be sent again after it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// What a request may be answered with (besides an error line). Any other reply is broken:
/// its connection is dropped, as after a malformed one.
#[derive(Debug, Clone, Copy)]
enum Expect<'a> {
    /// `gets` of these keys: hits of some of them, in their order.
    Values(&'a [Vec<u8>]),
    /// `version`.
    Version,
    /// set, add, cas.
    Store,
    /// delete.
    Delete,
    /// touch.
    Touch,
}

impl Expect<'_> {
    /// Reads may be sent again after they were written; writes may not.
    fn kind(self) -> Kind {
        match self {
            Expect::Values(_) | Expect::Version => Kind::Read,
            Expect::Store | Expect::Delete | Expect::Touch => Kind::Write,
        }
    }

    fn retrieval(self) -> bool {
        matches!(self, Expect::Values(_))
    }

    fn allows(self, reply: &Reply) -> bool {
        match (self, reply) {
            (_, Reply::Error(_)) => true,
            (Expect::Values(keys), Reply::Values(values)) => in_key_order(keys, values).is_ok(),
            (Expect::Version, Reply::Version(_)) => true,
            (Expect::Store, Reply::Stored | Reply::NotStored | Reply::Exists | Reply::NotFound) => {
                true
            }
            (Expect::Delete, Reply::Deleted | Reply::NotFound) => true,
            (Expect::Touch, Reply::Touched | Reply::NotFound) => true,
            _ => false,
        }
    }
}

/// A key the text protocol can carry: 1 to 250 bytes, no spaces or control characters.
fn check_key(key: &[u8]) -> Result<(), OpError> {
    let ok = !key.is_empty() && key.len() <= MAX_KEY && key.iter().all(|&b| b > b' ' && b != 0x7f);
    if ok {
        Ok(())
    } else {
        Err(OpError::Failed(format!(
            "key {:?} cannot be sent over the text protocol",
            String::from_utf8_lossy(key)
        )))
    }
}

/// `<cmd> <key> 0 <ttl> <bytes>[ <unique>]\r\n<data>\r\n`.
fn storage(cmd: &str, key: &[u8], value: &[u8], ttl: u32, unique: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + value.len() + 48);
    out.extend_from_slice(cmd.as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" 0 {ttl} {}", value.len()).as_bytes());
    if let Some(u) = unique {
        out.extend_from_slice(format!(" {u}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// The error for a reply the command does not allow.
fn unexpected(reply: &Reply, kind: Kind) -> OpError {
    match reply {
        Reply::Error(line) => error_reply(line),
        other => {
            let why = format!("unexpected reply {other:?}");
            match kind {
                Kind::Read => OpError::Failed(why),
                Kind::Write => OpError::InDoubt(why),
            }
        }
    }
}

/// An error line as an [`OpError`].
fn error_reply(line: &str) -> OpError {
    if line.starts_with("SERVER_ERROR") && line.contains("may have been applied") {
        OpError::InDoubt(line.to_string())
    } else {
        OpError::Failed(line.to_string())
    }
}

impl McClient {
    /// A client of `settings.memcache_servers` (connections open on first use).
    ///
    /// # Errors
    /// When no memcached address is given.
    pub fn new(settings: &ClientSettings) -> Result<Self, OpError> {
        if settings.memcache_servers.is_empty() {
            return Err(OpError::Failed(
                "--client memcache needs memcached addresses (--memcache-servers)".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                servers: settings.memcache_servers.clone(),
                request_timeout: settings.request_timeout,
                deadline: settings.deadline,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// `version`: one round trip.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn ping(&self) -> Result<(), OpError> {
        match self.call(b"version\r\n", Expect::Version).await? {
            Reply::Version(_) => Ok(()),
            other => Err(unexpected(&other, Kind::Read)),
        }
    }

    /// `gets <key>` (`Ok(None)`: a miss).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn get(&self, key: &[u8]) -> Result<Option<Got>, OpError> {
        let mut got = self.get_many(&[key.to_vec()]).await?;
        Ok(got.pop().flatten())
    }

    /// One `gets k1 k2 ...`; the values are put back in key order (`None`: a miss).
    ///
    /// # Errors
    /// See [`OpError`]; a reply with a key that was not asked for (or out of order) is an
    /// error.
    pub async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Got>>, OpError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = b"gets".to_vec();
        for key in keys {
            check_key(key)?;
            request.push(b' ');
            request.extend_from_slice(key);
        }
        request.extend_from_slice(b"\r\n");
        match self.call(&request, Expect::Values(keys)).await? {
            Reply::Values(values) => {
                in_key_order(keys, &values).map_err(|e| OpError::Failed(e.to_string()))
            }
            other => Err(unexpected(&other, Kind::Read)),
        }
    }

    /// `set <key> 0 <ttl> <bytes>` (`ttl` in seconds, 0 = none; over 30 days memcached reads
    /// it as a unix time).
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn set(&self, key: &[u8], value: &[u8], ttl: u32) -> Result<(), OpError> {
        check_key(key)?;
        self.stored(storage("set", key, value, ttl, None)).await
    }

    /// `add <key> 0 <ttl> <bytes>`.
    ///
    /// # Errors
    /// [`OpError::NotStored`] when the key is present; see [`OpError`].
    pub async fn add(&self, key: &[u8], value: &[u8], ttl: u32) -> Result<(), OpError> {
        check_key(key)?;
        self.stored(storage("add", key, value, ttl, None)).await
    }

    /// `cas <key> 0 <ttl> <bytes> <unique>`.
    ///
    /// # Errors
    /// [`OpError::Conflict`] (`EXISTS`) or [`OpError::NotFound`]; see [`OpError`].
    pub async fn cas(
        &self,
        key: &[u8],
        value: &[u8],
        unique: u64,
        ttl: u32,
    ) -> Result<(), OpError> {
        check_key(key)?;
        self.stored(storage("cas", key, value, ttl, Some(unique)))
            .await
    }

    /// `delete <key>`: `true` when deleted, `false` when it was not there.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn delete(&self, key: &[u8]) -> Result<bool, OpError> {
        check_key(key)?;
        let mut request = b"delete ".to_vec();
        request.extend_from_slice(key);
        request.extend_from_slice(b"\r\n");
        match self.call(&request, Expect::Delete).await? {
            Reply::Deleted => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected(&other, Kind::Write)),
        }
    }

    /// `touch <key> <ttl>`: `true` when touched, `false` when not found.
    ///
    /// # Errors
    /// See [`OpError`].
    pub async fn touch(&self, key: &[u8], ttl: u32) -> Result<bool, OpError> {
        check_key(key)?;
        let mut request = b"touch ".to_vec();
        request.extend_from_slice(key);
        request.extend_from_slice(format!(" {ttl}\r\n").as_bytes());
        match self.call(&request, Expect::Touch).await? {
            Reply::Touched => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected(&other, Kind::Write)),
        }
    }

    /// Closes the idle connections (the client stays usable).
    pub fn close(&self) {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A storage command and its one-line answer.
    async fn stored(&self, request: Vec<u8>) -> Result<(), OpError> {
        match self.call(&request, Expect::Store).await? {
            Reply::Stored => Ok(()),
            Reply::NotStored => Err(OpError::NotStored),
            Reply::Exists => Err(OpError::Conflict),
            Reply::NotFound => Err(OpError::NotFound),
            other => Err(unexpected(&other, Kind::Write)),
        }
    }

    /// Sends `request` until a reply comes or the call's deadline passes: again after
    /// anything that was not sent; a read also after a broken reply or a `SERVER_ERROR` that
    /// is not in doubt. A write that was sent is never sent again.
    async fn call(&self, request: &[u8], expect: Expect<'_>) -> Result<Reply, OpError> {
        let kind = expect.kind();
        let deadline = Instant::now() + self.inner.deadline;
        let mut failures: u32 = 0;
        let mut last = OpError::Failed("deadline passed before the request was sent".into());
        loop {
            if Instant::now() >= deadline {
                return Err(last);
            }
            match self.attempt(request, expect, deadline).await {
                Attempt::Reply(Reply::Error(line)) => {
                    let err = error_reply(&line);
                    let again = kind == Kind::Read
                        && line.starts_with("SERVER_ERROR")
                        && matches!(err, OpError::Failed(_));
                    if !again {
                        return Err(err);
                    }
                    last = err;
                }
                Attempt::Reply(reply) => return Ok(reply),
                Attempt::NotSent(why) => last = OpError::Failed(why),
                Attempt::Sent(why) => match kind {
                    Kind::Read => last = OpError::Failed(why),
                    Kind::Write => return Err(OpError::InDoubt(why)),
                },
            }
            failures = failures.saturating_add(1);
            let pause = BACKOFF
                .0
                .saturating_mul(1 << failures.min(8))
                .min(BACKOFF.1)
                .mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
        }
    }

    /// One request on one connection, within the request timeout (and the deadline). The
    /// connection goes back to the pool only after a reply that parsed, used up every byte
    /// that came, and is one `expect` allows (an error line is returned, the connection not
    /// kept).
    async fn attempt(&self, request: &[u8], expect: Expect<'_>, deadline: Instant) -> Attempt {
        let until = (Instant::now() + self.inner.request_timeout).min(deadline);
        let mut stream = match self.checkout(until).await {
            Ok(s) => s,
            Err(why) => return Attempt::NotSent(why),
        };
        match tokio::time::timeout_at(until, stream.write_all(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Attempt::NotSent(format!("write: {e}")),
            Err(_) => return Attempt::NotSent("write timed out".into()),
        }
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match parse_reply(&buf, expect.retrieval()) {
                Ok(Some((reply, used))) => {
                    if used != buf.len() {
                        return Attempt::Sent("bytes after the reply".into());
                    }
                    if !expect.allows(&reply) {
                        return Attempt::Sent(format!("reply {reply:?} does not fit the request"));
                    }
                    if !matches!(reply, Reply::Error(_)) {
                        self.checkin(stream);
                    }
                    return Attempt::Reply(reply);
                }
                Ok(None) => {}
                Err(e) => return Attempt::Sent(e.to_string()),
            }
            match tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Attempt::Sent("connection closed before the reply".into()),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Attempt::Sent(format!("read: {e}")),
                Err(_) => return Attempt::Sent("no reply within the request timeout".into()),
            }
        }
    }

    /// An idle connection that still looks open, else a new one to a random server.
    async fn checkout(&self, until: Instant) -> Result<TcpStream, String> {
        loop {
            let idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(stream) = idle else { break };
            // Between requests nothing may arrive: end of stream (the server closed it, e.g.
            // a graceful stop) or stray bytes mean it is not usable.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(stream),
                _ => continue,
            }
        }
        let server = &self.inner.servers[fastrand::usize(..self.inner.servers.len())];
        match tokio::time::timeout_at(until, TcpStream::connect(server.as_str())).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(format!("connect {server}: {e}")),
            Err(_) => Err(format!("connect {server}: timed out")),
        }
    }

    fn checkin(&self, stream: TcpStream) {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
    }
}

/// Puts the hits of a `gets` back in the order of `keys` (`None`: a miss). The hits must be
/// some of the keys, in their order.
fn in_key_order(keys: &[Vec<u8>], values: &[Value]) -> Result<Vec<Option<Got>>, ParseError> {
    let mut out: Vec<Option<Got>> = vec![None; keys.len()];
    let mut next = 0;
    for v in values {
        let Some(at) = keys[next..].iter().position(|k| *k == v.key) else {
            return malformed(format!(
                "VALUE for {:?}, which was not asked for (or out of order)",
                String::from_utf8_lossy(&v.key)
            ));
        };
        out[next + at] = Some(Got {
            value: v.data.clone(),
            hash: v.cas,
        });
        next += at + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], retrieval: bool) -> Result<Option<(Reply, usize)>, ParseError> {
        parse_reply(bytes, retrieval)
    }

    #[test]
    fn one_line_replies() {
        for (bytes, want) in [
            (&b"STORED\r\n"[..], Reply::Stored),
            (b"NOT_STORED\r\n", Reply::NotStored),
            (b"EXISTS\r\n", Reply::Exists),
            (b"NOT_FOUND\r\n", Reply::NotFound),
            (b"DELETED\r\n", Reply::Deleted),
            (b"TOUCHED\r\n", Reply::Touched),
            (b"VERSION 1.6.18\r\n", Reply::Version("1.6.18".into())),
            (b"ERROR\r\n", Reply::Error("ERROR".into())),
            (
                b"SERVER_ERROR out of memory\r\n",
                Reply::Error("SERVER_ERROR out of memory".into()),
            ),
        ] {
            assert_eq!(parse(bytes, false), Ok(Some((want, bytes.len()))));
        }
    }

    #[test]
    fn values_in_order_then_end() {
        let bytes = b"VALUE a 0 3 17\r\nabc\r\nVALUE b 5 0 9\r\n\r\nEND\r\n";
        let (reply, used) = parse(bytes, true).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Reply::Values(v) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(v.len(), 2);
        assert_eq!(
            (&v[0].key[..], &v[0].data[..], v[0].cas),
            (&b"a"[..], &b"abc"[..], 17)
        );
        assert_eq!(
            (&v[1].key[..], &v[1].data[..], v[1].cas),
            (&b"b"[..], &b""[..], 9)
        );
        // Binary data, CR LF inside included, is taken by its length.
        let bytes = b"VALUE k 0 4 1\r\n\r\n\0\xff\r\nEND\r\n";
        let (Reply::Values(v), _) = parse(bytes, true).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(v[0].data, b"\r\n\0\xff");
        assert_eq!(
            parse(b"END\r\n", true),
            Ok(Some((Reply::Values(vec![]), 5)))
        );
    }

    #[test]
    fn every_truncation_is_incomplete_not_an_error() {
        let bytes = b"VALUE a 0 3 17\r\nabc\r\nVALUE b 5 2 9\r\nxy\r\nEND\r\n";
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], true), Ok(None), "cut at {cut}");
        }
        for cut in 0..8 {
            assert_eq!(parse(&b"STORED\r\n"[..cut], false), Ok(None));
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bytes in [
            // A data block longer than declared, or shorter.
            &b"VALUE a 0 2 1\r\nabc\r\nEND\r\n"[..],
            b"VALUE a 0 4 1\r\nab\r\nEND\r\n\r\n",
            // No cas (a `get` reply), extra tokens, bad numbers.
            b"VALUE a 0 3\r\nabc\r\nEND\r\n",
            b"VALUE a 0 3 1 2\r\nabc\r\nEND\r\n",
            b"VALUE a x 3 1\r\nabc\r\nEND\r\n",
            b"VALUE a 0 -3 1\r\nabc\r\nEND\r\n",
            b"VALUE a 0 +3 1\r\nabc\r\nEND\r\n",
            b"VALUE a 0 3 99999999999999999999\r\nabc\r\nEND\r\n",
            b"VALUE a 4294967296 3 1\r\nabc\r\nEND\r\n",
            b"VALUE a 0 18446744073709551615 1\r\n",
            b"VALUE a 0 999999999999 1\r\n",
            b"VALUE  0 3 1\r\nabc\r\nEND\r\n",
            b"STORED\r\n",
            b"what\r\n",
        ] {
            assert!(
                parse(bytes, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        for bytes in [
            &b"STORE\r\n"[..],
            b"VALUE a 0 1 1\r\n",
            b"stored\r\n",
            b"\r\n",
        ] {
            assert!(parse(bytes, false).is_err());
        }
        // A line that never ends.
        assert!(parse(&vec![b'V'; MAX_LINE + 1], true).is_err());
        assert!(parse(&vec![b'S'; MAX_LINE + 1], false).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let pieces: [&[u8]; 8] = [
            b"VALUE ", b"k ", b"0 ", b"3 ", b"\r\n", b"abc", b"END", b"1",
        ];
        for _ in 0..20_000 {
            let mut bytes = Vec::new();
            for _ in 0..rng.usize(0..12) {
                if rng.bool() {
                    bytes.extend_from_slice(pieces[rng.usize(..pieces.len())]);
                } else {
                    bytes.push(rng.u8(..));
                }
            }
            let _ = parse(&bytes, true);
            let _ = parse(&bytes, false);
        }
    }

    #[test]
    fn hits_go_back_in_key_order_and_strangers_are_errors() {
        let keys = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let v = |k: &[u8], cas| Value {
            key: k.to_vec(),
            data: k.to_vec(),
            cas,
        };
        let out = in_key_order(&keys, &[v(b"a", 1), v(b"c", 3)]).unwrap();
        assert_eq!(out[0].as_ref().map(|g| g.hash), Some(1));
        assert!(out[1].is_none());
        assert_eq!(
            out[2].as_ref().map(|g| g.value.clone()),
            Some(b"c".to_vec())
        );
        assert!(in_key_order(&keys, &[v(b"z", 1)]).is_err());
        assert!(in_key_order(&keys, &[v(b"c", 1), v(b"a", 1)]).is_err());
        assert!(in_key_order(&keys, &[v(b"a", 1), v(b"a", 1)]).is_err());
    }

    #[test]
    fn requests_and_error_lines() {
        assert_eq!(
            storage("cas", b"k", b"v\r\n", 60, Some(42)),
            b"cas k 0 60 3 42\r\nv\r\n\r\n"
        );
        assert_eq!(storage("set", b"k", b"", 0, None), b"set k 0 0 0\r\n\r\n");
        assert!(check_key(b"a b").is_err() && check_key(b"").is_err());
        assert!(check_key(&[b'k'; 251]).is_err() && check_key(b"cc:1:2").is_ok());
        assert!(matches!(
            error_reply(
                "SERVER_ERROR no reply from owner x (reset); the command may have been applied"
            ),
            OpError::InDoubt(_)
        ));
        assert!(matches!(
            error_reply("SERVER_ERROR owner not ready"),
            OpError::Failed(_)
        ));
        assert!(matches!(error_reply("ERROR"), OpError::Failed(_)));
    }
}
