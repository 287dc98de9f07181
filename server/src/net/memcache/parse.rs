//! Decoding of memcached text commands: one command line and, for storage commands, its
//! `<bytes>\r\n` data block, borrowed from the input buffer.
//!
//! [`parse`] follows the crate's decoder contract: `Ok(None)` means "read more",
//! `Ok(Some((command, consumed)))` a complete command, `Err` a rejected one. It does no I/O,
//! touches no store and allocates nothing. Execution lives in `exec.rs`; the wire text of
//! every rejection lives here, in [`ParseErrorKind::reply`].
//!
//! Rules, as memcached 1.6 unless noted in the module docs of `memcache`:
//! - A line ends at `\n`; one `\r` before it is dropped. Tokens are separated by runs of
//!   spaces. Command names are case-sensitive.
//! - Keys are 1..=`max_key` bytes with no control characters (and no spaces, which split
//!   tokens). Flags are `u32`, exptime a signed integer, the data length and cas unique `u64`.
//! - A line longer than [`MAX_LINE`] (get family: [`get_line_limit`]) is rejected and the
//!   connection closes.
//! - A data length that is not a number, or above `max_value + SWALLOW_MARGIN`, closes the
//!   connection; between `max_value` and that bound the block is discarded and the client
//!   told `SERVER_ERROR object too large for cache`.

use super::meta::{MetaError, MetaRequest};
use shoal_proto::Limits;
use std::fmt;

/// Longest command line, in bytes including its terminator, for every command except the
/// get family (memcached's own limit before it gives up on a line is 2048).
pub const MAX_LINE: usize = 8192;
/// Largest declared data length above `max_value` whose data block is still read and
/// discarded (so the stream stays in sync); anything larger closes the connection. 16 MiB.
pub const SWALLOW_MARGIN: usize = 16 << 20;
/// Most tokens a non-get command line may have (`cas` has 7).
const MAX_TOKENS: usize = 8;
/// Most digits (after a sign) in a numeric field.
const MAX_DIGITS: usize = 20;

/// Longest get/gets/gat/gats line: room for `max_batch` keys of `max_key` bytes, and at
/// least the largest frame the node accepts (about `max_value`: 10,000 keys of 100 bytes fit
/// the default). The number of keys is not limited, as in memcached.
pub fn get_line_limit(limits: &Limits) -> usize {
    limits
        .max_batch
        .saturating_mul(limits.max_key.saturating_add(1))
        .saturating_add(64)
        .max(limits.max_frame)
        .max(MAX_LINE)
}

/// What a storage command does with the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `set`: store unconditionally.
    Set,
    /// `add`: store if absent.
    Add,
    /// `replace`: store if present.
    Replace,
    /// `append`: add the data after the existing value.
    Append,
    /// `prepend`: add the data before the existing value.
    Prepend,
    /// `cas`: store if the value hash still equals this unique.
    Cas(u64),
}

/// Which `stats` group was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGroup {
    /// `stats`: general counters.
    General,
    /// `stats slabs`: per slab class memory.
    Slabs,
    /// `stats items`: per slab class items.
    Items,
    /// `stats settings`: the node's settings under memcached's names.
    Settings,
    /// `stats sizes`: the item size histogram (not kept: `sizes_status disabled`).
    Sizes,
    /// `stats conns`: the listening socket (no registry of client connections is kept).
    Conns,
    /// `stats reset`: counters restart from zero.
    Reset,
}

/// The keys of a multi-key command: the rest of its line, split on spaces when iterated.
/// Every key has been checked by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a> {
    rest: &'a [u8],
}

impl<'a> Keys<'a> {
    /// The keys in the order the client sent them (duplicates included).
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        tokens(self.rest)
    }
}

/// A decoded command, borrowing keys and data from the input.
///
/// Built on the stack for each command and never stored, so the size of the meta variant
/// (its flag tokens and decoded key inline) costs nothing a box would save.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCommand<'a> {
    /// `get <key>*` (`cas: false`) or `gets <key>*` (`cas: true`).
    Get {
        /// The keys.
        keys: Keys<'a>,
        /// Whether replies carry the cas unique.
        cas: bool,
    },
    /// `gat <exptime> <key>*` or `gats <exptime> <key>*`: get and touch.
    Gat {
        /// The new expiration time (memcached rules, see `exec`).
        exptime: i64,
        /// The keys.
        keys: Keys<'a>,
        /// Whether replies carry the cas unique.
        cas: bool,
    },
    /// set, add, replace, append, prepend and cas with their data block.
    Store {
        /// Which of them.
        kind: StoreKind,
        /// The key.
        key: &'a [u8],
        /// Client flags.
        flags: u32,
        /// Expiration time (memcached rules).
        exptime: i64,
        /// The value, without its `\r\n`.
        data: &'a [u8],
        /// No reply wanted.
        noreply: bool,
    },
    /// A storage command whose value exceeds `max_value` (but not by more than
    /// [`SWALLOW_MARGIN`]): `consumed` covers the line only, and the caller must discard the
    /// next `swallow` bytes (data block and terminator) as they arrive.
    TooLarge {
        /// The key.
        key: &'a [u8],
        /// `set` removes the old item on failure, as memcached does, so no stale value stays.
        unlink: bool,
        /// Bytes still to discard after the line: the declared length plus 2.
        swallow: usize,
        /// No reply wanted.
        noreply: bool,
    },
    /// `delete <key> [0] [noreply]`.
    Delete {
        /// The key.
        key: &'a [u8],
        /// No reply wanted.
        noreply: bool,
    },
    /// `incr|decr <key> <delta> [noreply]`.
    Incr {
        /// The key.
        key: &'a [u8],
        /// Amount to add or subtract.
        delta: u64,
        /// Subtract instead of add.
        decr: bool,
        /// No reply wanted.
        noreply: bool,
    },
    /// `touch <key> <exptime> [noreply]`.
    Touch {
        /// The key.
        key: &'a [u8],
        /// The new expiration time.
        exptime: i64,
        /// No reply wanted.
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`.
    FlushAll {
        /// Seconds to wait before flushing; 0 or less means now.
        delay: i64,
        /// No reply wanted.
        noreply: bool,
    },
    /// `verbosity <level> [noreply]` (accepted and ignored, as logging is configured at start).
    Verbosity {
        /// No reply wanted.
        noreply: bool,
    },
    /// `version`.
    Version,
    /// `stats [group]`.
    Stats(StatsGroup),
    /// `quit`: close the connection.
    Quit,
    /// A meta command (`mg`, `ms`, `md`, `ma`, `me`).
    Meta(MetaRequest<'a>),
    /// `mn`: the meta no-op.
    MetaNoop,
    /// A command with a fixed reply: tuning knobs of memcached that shoald accepts without
    /// effect, and memcached's answers for features shoald does not have (empty under
    /// `noreply`).
    Fixed(&'static [u8]),
    /// `cache_memlimit <megabytes> [noreply]`: limit item memory.
    CacheMemlimit {
        /// The new limit in MiB (8 ..= 1,000,000,000, as memcached).
        megabytes: u64,
        /// No reply wanted.
        noreply: bool,
    },
    /// `shutdown [graceful]`: stop the node, when `--enable-shutdown` allows it.
    Shutdown {
        /// The mode is valid (none or `graceful`).
        valid_mode: bool,
    },
    /// `slabs reassign <src> <dst>`: refused (pages move only by shoald's own rebalancing).
    SlabsReassign {
        /// Source class id.
        src: i64,
        /// Destination class id.
        dst: i64,
    },
}

impl TextCommand<'_> {
    /// Every key the command reads or writes (none for commands without keys), for the
    /// in-sync gate.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (one, many) = match self {
            TextCommand::Get { keys, .. } | TextCommand::Gat { keys, .. } => {
                (None, Some(keys.iter()))
            }
            TextCommand::Store { key, .. }
            | TextCommand::Delete { key, .. }
            | TextCommand::Incr { key, .. }
            | TextCommand::Touch { key, .. } => (Some(*key), None),
            TextCommand::Meta(req) => (Some(req.key()), None),
            _ => (None, None),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Why a command was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Unknown command, or a known one with the wrong number of tokens: `ERROR`.
    UnknownCommand,
    /// A malformed field: `CLIENT_ERROR bad command line format`.
    BadFormat,
    /// A key that is empty, too long, or has control characters (same reply as `BadFormat`).
    BadKey,
    /// `delete` with something other than `0` or `noreply` after the key.
    BadDeleteFormat,
    /// An exptime (touch, gat, flush_all delay) that is not a number.
    BadExptime,
    /// An incr/decr delta that is not an unsigned 64-bit number.
    BadDelta,
    /// Fatal: no `\r\n` right after the declared number of data bytes.
    BadDataChunk,
    /// Fatal: a line over the length limit.
    LineTooLong,
    /// Fatal: a data length that is not an unsigned number.
    BadLength,
    /// Fatal: a data length over `max_value + SWALLOW_MARGIN`.
    LengthTooLarge,
    /// Fatal: an HTTP request line; memcached closes without a reply.
    Http,
    /// A meta command's flags, with memcached's reply for each mistake.
    Meta(MetaError),
}

impl ParseErrorKind {
    /// Whether the connection must close: the stream can no longer be trusted to be in sync.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ParseErrorKind::BadDataChunk
                | ParseErrorKind::LineTooLong
                | ParseErrorKind::BadLength
                | ParseErrorKind::LengthTooLarge
                | ParseErrorKind::Http
        )
    }

    /// The reply line, `\r\n` included (empty for [`ParseErrorKind::Http`]).
    pub fn reply(self) -> &'static [u8] {
        match self {
            ParseErrorKind::UnknownCommand => b"ERROR\r\n",
            ParseErrorKind::BadFormat
            | ParseErrorKind::BadKey
            | ParseErrorKind::BadLength
            | ParseErrorKind::LengthTooLarge => b"CLIENT_ERROR bad command line format\r\n",
            ParseErrorKind::BadDeleteFormat => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            ParseErrorKind::BadExptime => b"CLIENT_ERROR invalid exptime argument\r\n",
            ParseErrorKind::BadDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            ParseErrorKind::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            ParseErrorKind::LineTooLong => b"CLIENT_ERROR line too long\r\n",
            ParseErrorKind::Http => b"",
            ParseErrorKind::Meta(e) => e.reply(),
        }
    }
}

/// A rejected command and how much input it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong.
    pub kind: ParseErrorKind,
    /// For a recoverable error, the bytes the command covers: its line and, for a storage
    /// command with a valid length, its data block, which may not have arrived yet (the caller
    /// discards the rest as it comes). 0 for fatal errors.
    pub skip: usize,
    /// The line asked for no reply (memcached then stays silent even about errors).
    pub noreply: bool,
}

impl ParseError {
    pub(super) fn fatal(kind: ParseErrorKind) -> Self {
        Self {
            kind,
            skip: 0,
            noreply: false,
        }
    }

    pub(super) fn skip(kind: ParseErrorKind, skip: usize, noreply: bool) -> Self {
        Self {
            kind,
            skip,
            noreply,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ParseErrorKind::UnknownCommand => "unknown command",
            ParseErrorKind::BadFormat => "bad command line format",
            ParseErrorKind::BadKey => "bad key",
            ParseErrorKind::BadDeleteFormat => "bad delete command",
            ParseErrorKind::BadExptime => "invalid exptime",
            ParseErrorKind::BadDelta => "invalid numeric delta",
            ParseErrorKind::BadDataChunk => "bad data chunk terminator",
            ParseErrorKind::LineTooLong => "line too long",
            ParseErrorKind::BadLength => "bad data length",
            ParseErrorKind::LengthTooLarge => "data length over the limit",
            ParseErrorKind::Http => "HTTP request on the memcached port",
            ParseErrorKind::Meta(_) => "bad meta command flags",
        })
    }
}

impl std::error::Error for ParseError {}

/// Decodes the command at the start of `input`.
///
/// Returns `Ok(None)` when the line (or a storage command's data block) is incomplete, and
/// `Ok(Some((command, consumed)))` otherwise; `consumed` never exceeds `input.len()`.
///
/// # Errors
///
/// A [`ParseError`]: recoverable ones carry the bytes to skip, fatal ones
/// ([`ParseErrorKind::is_fatal`]) mean the connection must close after the reply.
pub fn parse<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<Option<(TextCommand<'a>, usize)>, ParseError> {
    let limit = if is_get_family(input) {
        get_line_limit(limits)
    } else {
        MAX_LINE
    };
    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
        if input.len() >= limit {
            return Err(ParseError::fatal(ParseErrorKind::LineTooLong));
        }
        return Ok(None);
    };
    let line_len = nl + 1;
    if line_len > limit {
        return Err(ParseError::fatal(ParseErrorKind::LineTooLong));
    }
    let line = &input[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);

    let Some((name, rest)) = first_token(line) else {
        return Err(ParseError::skip(
            ParseErrorKind::UnknownCommand,
            line_len,
            false,
        ));
    };
    if name.len() == 2 && name[0] == b'm' {
        return super::meta::parse(input, line, line_len, limits);
    }
    match name {
        b"get" | b"gets" => {
            let keys = check_keys(rest, limits, line_len, false)?;
            let cas = name == b"gets";
            Ok(Some((TextCommand::Get { keys, cas }, line_len)))
        }
        b"gat" | b"gats" => {
            let Some((exptime, rest)) = first_token(rest) else {
                return Err(ParseError::skip(
                    ParseErrorKind::UnknownCommand,
                    line_len,
                    false,
                ));
            };
            // As memcached: the exptime is checked first, and no keys is an empty reply.
            let exptime = parse_i64(exptime).ok_or(ParseError::skip(
                ParseErrorKind::BadExptime,
                line_len,
                false,
            ))?;
            let keys = check_keys(rest, limits, line_len, true)?;
            let cas = name == b"gats";
            Ok(Some((TextCommand::Gat { exptime, keys, cas }, line_len)))
        }
        _ => {
            let mut toks: [&[u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
            let mut n = 0;
            for t in tokens(line) {
                if n == MAX_TOKENS {
                    // Longer than any command accepts; the arity checks below reject it.
                    n += 1;
                    break;
                }
                toks[n] = t;
                n += 1;
            }
            parse_line(input, &toks[..n.min(MAX_TOKENS)], n, line_len, limits)
        }
    }
}

/// Parses a non-get command from its tokens (`n` may exceed `toks.len()` when the line had
/// too many).
fn parse_line<'a>(
    input: &'a [u8],
    toks: &[&'a [u8]],
    n: usize,
    line_len: usize,
    limits: &Limits,
) -> Result<Option<(TextCommand<'a>, usize)>, ParseError> {
    use ParseErrorKind as K;
    let unknown = ParseError::skip(K::UnknownCommand, line_len, false);
    // memcached's set_noreply_maybe: the last token decides.
    let noreply = toks.last() == Some(&&b"noreply"[..]);
    let fail = |kind| ParseError::skip(kind, line_len, noreply);
    let cmd = match toks[0] {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return parse_storage(input, toks, n, line_len, limits);
        }
        b"delete" => {
            if !(2..=4).contains(&n) {
                return Err(unknown);
            }
            if n > 2 {
                let hold_is_zero = toks[2] == b"0";
                let valid =
                    (n == 3 && (hold_is_zero || noreply)) || (n == 4 && hold_is_zero && noreply);
                if !valid {
                    return Err(fail(K::BadDeleteFormat));
                }
            }
            let key = check_key(toks[1], limits).ok_or(fail(K::BadKey))?;
            TextCommand::Delete { key, noreply }
        }
        b"incr" | b"decr" => {
            if !(3..=4).contains(&n) {
                return Err(unknown);
            }
            let key = check_key(toks[1], limits).ok_or(fail(K::BadKey))?;
            let delta = parse_u64(toks[2]).ok_or(fail(K::BadDelta))?;
            let decr = toks[0] == b"decr";
            TextCommand::Incr {
                key,
                delta,
                decr,
                noreply,
            }
        }
        b"touch" => {
            if !(3..=4).contains(&n) {
                return Err(unknown);
            }
            let key = check_key(toks[1], limits).ok_or(fail(K::BadKey))?;
            let exptime = parse_i64(toks[2]).ok_or(fail(K::BadExptime))?;
            TextCommand::Touch {
                key,
                exptime,
                noreply,
            }
        }
        b"flush_all" => {
            if !(1..=3).contains(&n) {
                return Err(unknown);
            }
            let delay = if n == if noreply { 2 } else { 1 } {
                0
            } else {
                parse_i64(toks[1]).ok_or(fail(K::BadExptime))?
            };
            TextCommand::FlushAll { delay, noreply }
        }
        b"verbosity" => {
            if !(2..=3).contains(&n) {
                return Err(unknown);
            }
            parse_u64(toks[1]).ok_or(fail(K::BadFormat))?;
            TextCommand::Verbosity { noreply }
        }
        b"version" => TextCommand::Version,
        b"quit" => TextCommand::Quit,
        b"stats" => match toks.get(1).copied() {
            None => TextCommand::Stats(StatsGroup::General),
            // As memcached, tokens after a group's name are ignored.
            Some(b"slabs") => TextCommand::Stats(StatsGroup::Slabs),
            Some(b"items") => TextCommand::Stats(StatsGroup::Items),
            Some(b"settings") => TextCommand::Stats(StatsGroup::Settings),
            Some(b"sizes") => TextCommand::Stats(StatsGroup::Sizes),
            Some(b"conns") => TextCommand::Stats(StatsGroup::Conns),
            Some(b"reset") => TextCommand::Stats(StatsGroup::Reset),
            // No size histogram is kept, so it stays disabled (memcached: no END here).
            Some(b"sizes_enable" | b"sizes_disable") => {
                TextCommand::Fixed(b"STAT sizes_status disabled\r\n")
            }
            // No per-prefix statistics are kept: accepted, nothing to dump.
            Some(b"detail") => TextCommand::Fixed(match toks.get(2).copied() {
                Some(b"on" | b"off") => b"OK\r\n",
                Some(b"dump") => b"END\r\n",
                _ => b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
            }),
            Some(_) => return Err(unknown),
        },
        b"cache_memlimit" => {
            if !(2..=3).contains(&n) {
                return Err(unknown);
            }
            let megabytes = parse_u64(toks[1]).ok_or(unknown)?;
            TextCommand::CacheMemlimit { megabytes, noreply }
        }
        b"shutdown" => TextCommand::Shutdown {
            valid_mode: n == 1 || (n == 2 && toks[1] == b"graceful"),
        },
        b"slabs" => match (toks.get(1).copied(), n) {
            (Some(b"automove"), 3..) if matches!(toks[2], b"0" | b"1" | b"2") => {
                fixed(b"OK\r\n", noreply)
            }
            (Some(b"reassign"), 4) => TextCommand::SlabsReassign {
                src: parse_i64(toks[2]).ok_or(fail(K::BadFormat))?,
                dst: parse_i64(toks[3]).ok_or(fail(K::BadFormat))?,
            },
            _ => return Err(unknown),
        },
        b"lru" => {
            let valid = match (toks.get(1).copied(), n) {
                (Some(b"mode"), 3..=4) => matches!(toks[2], b"flat" | b"segmented"),
                (Some(b"temp_ttl"), 3..=4) => parse_i64(toks[2]).is_some(),
                (Some(b"tune"), 6..=7) => toks[2..6].iter().all(|t| is_decimal(t)),
                _ => false,
            };
            if !valid {
                return Err(unknown);
            }
            fixed(b"OK\r\n", noreply)
        }
        b"lru_crawler" => TextCommand::Fixed(match (toks.get(1).copied(), n) {
            // shoald has no LRU crawler of memcached's kind (its expiry crawler is not
            // steerable), so it reports one that is disabled and cannot be started.
            (Some(b"enable"), 2) => b"ERROR failed to start lru crawler thread\r\n",
            (Some(b"disable"), 2) => b"OK\r\n",
            (Some(b"crawl" | b"metadump"), 3) => b"CLIENT_ERROR lru crawler disabled\r\n",
            (Some(b"tocrawl"), 3) => match parse_u64(toks[2]) {
                Some(n) if n <= u64::from(u32::MAX) => b"OK\r\n",
                _ => b"CLIENT_ERROR bad command line format\r\n",
            },
            (Some(b"sleep"), 3) => match parse_u64(toks[2]) {
                Some(n) if n <= 1_000_000 => b"OK\r\n",
                Some(n) if n <= u64::from(u32::MAX) => {
                    b"CLIENT_ERROR sleep must be one second or less\r\n"
                }
                _ => b"CLIENT_ERROR bad command line format\r\n",
            },
            _ => return Err(unknown),
        }),
        b"watch" => {
            let kinds = &toks[1..toks.len() - usize::from(noreply)];
            if n > MAX_TOKENS || !kinds.iter().all(|k| WATCH_KINDS.contains(k)) {
                return Err(unknown);
            }
            fixed(b"OK\r\n", noreply)
        }
        _ => {
            // memcached closes silently when an unknown line ends in an HTTP version.
            if toks.last().is_some_and(|t| t.starts_with(b"HTTP/")) {
                return Err(ParseError::fatal(K::Http));
            }
            return Err(unknown);
        }
    };
    Ok(Some((cmd, line_len)))
}

/// What `watch` may be asked to show (memcached 1.6.18's log types).
const WATCH_KINDS: &[&[u8]] = &[
    b"rawcmds",
    b"fetchers",
    b"mutations",
    b"sysevents",
    b"connevents",
    b"proxyreqs",
    b"proxyevents",
    b"proxyuser",
    b"deletions",
];

/// A fixed reply, or none under `noreply`.
fn fixed(reply: &'static [u8], noreply: bool) -> TextCommand<'static> {
    TextCommand::Fixed(if noreply { b"" } else { reply })
}

/// Digits with at most one `.` (the ratios of `lru tune`).
fn is_decimal(t: &[u8]) -> bool {
    !t.is_empty()
        && t.iter().filter(|&&b| b == b'.').count() <= 1
        && t.iter().all(|&b| b.is_ascii_digit() || b == b'.')
}

/// The data block (value and `\r\n`) a storage line announces with `len`, when `len` is a
/// number within what the parser would accept.
fn block_len(len: &[u8], limits: &Limits) -> Option<usize> {
    let declared = usize::try_from(parse_u64(len)?).ok()?;
    if declared > limits.max_value.saturating_add(SWALLOW_MARGIN) {
        return None;
    }
    declared.checked_add(2)
}

/// The total length of the command at the start of `input` when its line is complete and
/// announces a data block (storage commands, `ms`); `None` otherwise. The connection driver
/// uses it to reserve input memory for the whole command at once.
pub fn request_len(input: &[u8], limits: &Limits) -> Option<usize> {
    let nl = input.iter().take(MAX_LINE).position(|&b| b == b'\n')?;
    let line = &input[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut toks = tokens(line);
    let len = match toks.next()? {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => toks.nth(3)?,
        b"ms" => toks.nth(1)?,
        _ => return None,
    };
    Some(nl + 1 + block_len(len, limits)?)
}

fn parse_storage<'a>(
    input: &'a [u8],
    toks: &[&'a [u8]],
    n: usize,
    line_len: usize,
    limits: &Limits,
) -> Result<Option<(TextCommand<'a>, usize)>, ParseError> {
    use ParseErrorKind as K;
    let is_cas = toks[0] == b"cas";
    let want = if is_cas { 6 } else { 5 };
    if n != want && n != want + 1 {
        // Wrong arity (memcached: ERROR). If a length can be read, a data block may follow:
        // discard it too, so its bytes never run as commands.
        return Err(ParseError::skip(
            K::UnknownCommand,
            line_len + toks.get(4).and_then(|t| block_len(t, limits)).unwrap_or(0),
            false,
        ));
    }
    let noreply = n == want + 1 && toks[want] == b"noreply";

    // The length first: it decides whether the stream can stay in sync.
    let declared = parse_u64(toks[4]).ok_or(ParseError::fatal(K::BadLength))?;
    let bound = limits.max_value.saturating_add(SWALLOW_MARGIN);
    let data_len = usize::try_from(declared)
        .ok()
        .filter(|&len| len <= bound)
        .ok_or(ParseError::fatal(K::LengthTooLarge))?;
    // Cannot overflow: data_len <= bound and line_len <= MAX_LINE.
    let block = data_len + 2;
    let fail = |kind| ParseError::skip(kind, line_len + block, noreply);

    let key = check_key(toks[1], limits).ok_or(fail(K::BadKey))?;
    let flags = parse_u64(toks[2])
        .and_then(|f| u32::try_from(f).ok())
        .ok_or(fail(K::BadFormat))?;
    let exptime = parse_i64(toks[3]).ok_or(fail(K::BadFormat))?;
    let kind = match toks[0] {
        b"set" => StoreKind::Set,
        b"add" => StoreKind::Add,
        b"replace" => StoreKind::Replace,
        b"append" => StoreKind::Append,
        b"prepend" => StoreKind::Prepend,
        _ => StoreKind::Cas(parse_u64(toks[5]).ok_or(fail(K::BadFormat))?),
    };

    if data_len > limits.max_value {
        let unlink = kind == StoreKind::Set;
        let cmd = TextCommand::TooLarge {
            key,
            unlink,
            swallow: block,
            noreply,
        };
        return Ok(Some((cmd, line_len)));
    }
    let end = line_len + block;
    if input.len() < end {
        return Ok(None);
    }
    if &input[end - 2..end] != b"\r\n" {
        return Err(ParseError::fatal(K::BadDataChunk));
    }
    let data = &input[line_len..end - 2];
    let cmd = TextCommand::Store {
        kind,
        key,
        flags,
        exptime,
        data,
        noreply,
    };
    Ok(Some((cmd, end)))
}

/// Whether the input starts with a get-family command name and a space (these lines may be
/// longer than [`MAX_LINE`]).
fn is_get_family(input: &[u8]) -> bool {
    [&b"get "[..], b"gets ", b"gat ", b"gats "]
        .iter()
        .any(|p| input.starts_with(p))
}

/// The tokens of `line`: runs of non-space bytes.
fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// The first token of `line` and what follows it.
fn first_token(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = line.iter().position(|&b| b != b' ')?;
    let line = &line[start..];
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    Some((&line[..end], &line[end..]))
}

/// Checks every key of a multi-key command: at least one (unless `allow_empty`), all valid.
fn check_keys<'a>(
    rest: &'a [u8],
    limits: &Limits,
    line_len: usize,
    allow_empty: bool,
) -> Result<Keys<'a>, ParseError> {
    let mut count = 0usize;
    for key in tokens(rest) {
        if check_key(key, limits).is_none() {
            return Err(ParseError::skip(ParseErrorKind::BadKey, line_len, false));
        }
        count += 1;
    }
    if count == 0 && !allow_empty {
        return Err(ParseError::skip(
            ParseErrorKind::UnknownCommand,
            line_len,
            false,
        ));
    }
    Ok(Keys { rest })
}

/// `key` if it is 1..=`max_key` bytes without control characters.
pub(super) fn check_key<'a>(key: &'a [u8], limits: &Limits) -> Option<&'a [u8]> {
    let ok = !key.is_empty()
        && key.len() <= limits.max_key
        && key.iter().all(|&b| b > b' ' && b != 0x7f);
    ok.then_some(key)
}

/// An unsigned decimal with an optional `+`, at most [`MAX_DIGITS`] digits, fitting a `u64`.
pub(super) fn parse_u64(t: &[u8]) -> Option<u64> {
    let digits = t.strip_prefix(b"+").unwrap_or(t);
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A signed decimal (optional `+` or `-`) fitting an `i64`.
pub(super) fn parse_i64(t: &[u8]) -> Option<i64> {
    match t.strip_prefix(b"-") {
        Some(digits) if !digits.starts_with(b"+") => {
            let magnitude = parse_u64(digits)?;
            0i64.checked_sub_unsigned(magnitude)
        }
        Some(_) => None,
        None => i64::try_from(parse_u64(t)?).ok(),
    }
}

#[cfg(test)]
mod tests;
