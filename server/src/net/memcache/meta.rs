//! Decoding of memcached's meta commands (`mg`, `ms`, `md`, `ma`, `me`, `mn`), as memcached
//! 1.6.18 decodes them (`proto_text.c`): the same token limits, the same flag rules and the
//! same error line for each mistake. No I/O, no allocation; execution is in `exec/meta.rs`.
//!
//! A meta line is `<cm> <key> [<datalen>] <flag>*`. Each flag is one character, some with a
//! token after it (`T30`, `Oopaque`). Flags are kept in order, because replies echo them in
//! the order they were sent and `t` shows the TTL as of its position (before or after `T`).

use super::base64;
use super::parse::{check_key, parse_i64, parse_u64, ParseError, ParseErrorKind};
use super::parse::{TextCommand, SWALLOW_MARGIN};
use shoal_proto::Limits;

/// memcached's limit on tokens in a meta line, command and key included (its
/// `MFLAG_MAX_OPT_LENGTH` counts a terminating empty token too, so 20 allows 19).
const MAX_META_TOKENS: usize = 19;
/// Most flags a meta line can carry.
pub const MAX_META_FLAGS: usize = MAX_META_TOKENS - 2;
/// Longest opaque token, `O` included (memcached's `MFLAG_MAX_OPAQUE_LENGTH`).
const MAX_OPAQUE: usize = 32;
/// Longest key token on a meta line (memcached's `KEY_MAX_LENGTH`, checked before base64
/// decoding); a decoded key is at most 3/4 of it.
const MAX_KEY_TOKEN: usize = 250;
/// Room for a decoded base64 key.
const DECODED_KEY_MAX: usize = MAX_KEY_TOKEN / 4 * 3 + 3;

/// Which meta command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    /// `mg`: get.
    Get,
    /// `ms`: set (and add, replace, append, prepend, check-and-set).
    Set,
    /// `md`: delete or invalidate.
    Delete,
    /// `ma`: increment or decrement.
    Arith,
    /// `me`: debug dump of an item's metadata.
    Debug,
}

/// The `M` mode of `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaSetMode {
    /// `MS` (default): store.
    Set,
    /// `ME`: store if absent.
    Add,
    /// `MR`: store if present.
    Replace,
    /// `MA`: append to the value.
    Append,
    /// `MP`: prepend to the value.
    Prepend,
}

/// Why a meta line was refused; each has memcached's exact reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// A flag given twice (mg, ms).
    DuplicateFlag,
    /// A flag memcached does not know (mg, ms).
    InvalidFlag,
    /// Any flag error on md and ma.
    InvalidOrDuplicateFlag,
    /// A numeric token (`N`, `T`, `R`, `C`) that is not a number.
    BadToken,
    /// A `b` key that is not base64.
    KeyDecode,
    /// More than [`MAX_META_TOKENS`] tokens on an `mg` line.
    GetFlagsTooLong,
    /// More than [`MAX_META_TOKENS`] tokens on an `ms`, `md` or `ma` line.
    FlagsTooLong,
    /// An opaque token over [`MAX_OPAQUE`] bytes.
    OpaqueTooLong,
    /// An `M` flag with other than one character after it.
    ModeLength,
    /// An `ms` mode other than E, A, P, R, S.
    SetMode,
    /// An `ma` mode other than I, +, D, -.
    ArithMode,
    /// A `J` token that is not an unsigned 64-bit number.
    BadInitial,
    /// A `D` token that is not an unsigned 64-bit number.
    BadDelta,
    /// An `F` token that is not an unsigned 32-bit number.
    BadFormat,
}

impl MetaError {
    /// The reply line.
    pub fn reply(self) -> &'static [u8] {
        match self {
            MetaError::DuplicateFlag => b"CLIENT_ERROR duplicate flag\r\n",
            MetaError::InvalidFlag => b"CLIENT_ERROR invalid flag\r\n",
            MetaError::InvalidOrDuplicateFlag => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            MetaError::BadToken => b"CLIENT_ERROR bad token in command line format\r\n",
            MetaError::KeyDecode => b"CLIENT_ERROR error decoding key\r\n",
            MetaError::GetFlagsTooLong => b"CLIENT_ERROR options flags are too long\r\n",
            MetaError::FlagsTooLong => b"CLIENT_ERROR options flags too long\r\n",
            MetaError::OpaqueTooLong => b"CLIENT_ERROR opaque token too long\r\n",
            MetaError::ModeLength => b"CLIENT_ERROR incorrect length for M token\r\n",
            MetaError::SetMode => b"CLIENT_ERROR invalid mode for ms M token\r\n",
            MetaError::ArithMode => b"CLIENT_ERROR invalid mode for ma M token\r\n",
            MetaError::BadInitial => b"CLIENT_ERROR invalid numeric initial value\r\n",
            MetaError::BadDelta => b"CLIENT_ERROR invalid numeric delta value\r\n",
            MetaError::BadFormat => b"CLIENT_ERROR bad command line format\r\n",
        }
    }
}

/// The flags of a meta line: the tokens in order, and what they ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaFlags<'a> {
    toks: [&'a [u8]; MAX_META_FLAGS],
    n: usize,
    /// `b`: the key is base64.
    pub base64: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `q`: no reply for the nominal outcome.
    pub quiet: bool,
    /// `u`: do not mark the item read.
    pub no_update: bool,
    /// `I`: invalidate (md) or allow a stale write (ms).
    pub invalidate: bool,
    /// `C`: compare this check-and-set token.
    pub cas: Option<u64>,
    /// `F`: client flags to store.
    pub client_flags: u32,
    /// `T`: new TTL (memcached exptime).
    pub ttl: Option<i64>,
    /// `N`: create on a miss with this TTL.
    pub vivify: Option<i64>,
    /// `R`: win the recache below this remaining TTL.
    pub recache: Option<i64>,
    /// The `M` token's character.
    mode: Option<u8>,
    /// `M` of `ms`.
    pub set_mode: MetaSetMode,
    /// `M` of `ma`: decrement.
    pub decr: bool,
    /// `D`: delta (default 1).
    pub delta: u64,
    /// `J`: initial value (default 0).
    pub initial: u64,
}

impl<'a> MetaFlags<'a> {
    /// The flag tokens in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.toks[..self.n].iter().copied()
    }
}

/// A decoded meta command, borrowing from the input (a base64 key is decoded into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    /// Which command.
    pub kind: MetaKind,
    /// The key token as sent.
    pub key_token: &'a [u8],
    decoded: [u8; DECODED_KEY_MAX],
    decoded_len: usize,
    /// Its flags.
    pub flags: MetaFlags<'a>,
    /// `ms`: the value, without its `\r\n`.
    pub data: &'a [u8],
}

impl MetaRequest<'_> {
    /// The key: the token, or its base64 decoding with `b`.
    pub fn key(&self) -> &[u8] {
        if self.flags.base64 {
            &self.decoded[..self.decoded_len]
        } else {
            self.key_token
        }
    }
}

/// Decodes a meta command whose two-character name starting with `m` is `name`.
///
/// `line` is the line without its terminator and `line_len` the bytes it covers; `input`
/// holds the data block of `ms`.
///
/// # Errors
/// As [`super::parse::parse`].
pub(super) fn parse<'a>(
    input: &'a [u8],
    line: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Result<Option<(TextCommand<'a>, usize)>, ParseError> {
    let mut toks: [&[u8]; MAX_META_TOKENS + 1] = [&[]; MAX_META_TOKENS + 1];
    let mut n = 0;
    for t in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        if n > MAX_META_TOKENS {
            break;
        }
        toks[n] = t;
        n += 1;
    }
    let err = |kind| Err(ParseError::skip(kind, line_len, false));
    let meta = |e| Err(ParseError::skip(ParseErrorKind::Meta(e), line_len, false));
    let kind = match toks[0] {
        b"mn" => return Ok(Some((TextCommand::MetaNoop, line_len))),
        b"mg" => MetaKind::Get,
        b"ms" => MetaKind::Set,
        b"md" => MetaKind::Delete,
        b"ma" => MetaKind::Arith,
        b"me" => MetaKind::Debug,
        _ => return err(ParseErrorKind::UnknownCommand),
    };
    if n < 2 {
        return err(if kind == MetaKind::Debug {
            ParseErrorKind::BadFormat
        } else {
            ParseErrorKind::UnknownCommand
        });
    }
    let key_token = toks[1];
    if key_token.len() > MAX_KEY_TOKEN {
        return err(ParseErrorKind::BadFormat);
    }
    let mut req = MetaRequest {
        kind,
        key_token,
        decoded: [0; DECODED_KEY_MAX],
        decoded_len: 0,
        flags: MetaFlags {
            toks: [&[]; MAX_META_FLAGS],
            n: 0,
            base64: false,
            value: false,
            quiet: false,
            no_update: false,
            invalidate: false,
            cas: None,
            client_flags: 0,
            ttl: None,
            vivify: None,
            recache: None,
            mode: None,
            set_mode: MetaSetMode::Set,
            decr: false,
            delta: 1,
            initial: 0,
        },
        data: &[],
    };
    if kind == MetaKind::Debug {
        // `me <key> [b]`: only a `b` right after the key means anything.
        if n > 2 && toks[2] == b"b" {
            req.flags.base64 = true;
            req.decoded_len = base64::decode(key_token, &mut req.decoded)
                .ok_or(ParseError::skip(ParseErrorKind::BadFormat, line_len, false))?;
        } else if check_key(key_token, limits).is_none() {
            return err(ParseErrorKind::BadKey);
        }
        return Ok(Some((TextCommand::Meta(req), line_len)));
    }
    if kind == MetaKind::Set {
        return parse_set(input, &toks[..n], n, line_len, limits, req);
    }
    if n > MAX_META_TOKENS {
        return meta(if kind == MetaKind::Get {
            MetaError::GetFlagsTooLong
        } else {
            MetaError::FlagsTooLong
        });
    }
    if let Err(e) = parse_flags(&toks[2..n], &mut req) {
        let e = match kind {
            MetaKind::Delete | MetaKind::Arith => MetaError::InvalidOrDuplicateFlag,
            _ => e,
        };
        return meta(e);
    }
    if let Err(e) = req.flags.apply_mode(kind) {
        return meta(e);
    }
    if !req.flags.base64 && check_key(key_token, limits).is_none() {
        return err(ParseErrorKind::BadKey);
    }
    Ok(Some((TextCommand::Meta(req), line_len)))
}

/// `ms <key> <datalen> <flag>*` and its data block.
fn parse_set<'a>(
    input: &'a [u8],
    toks: &[&'a [u8]],
    n: usize,
    line_len: usize,
    limits: &Limits,
    mut req: MetaRequest<'a>,
) -> Result<Option<(TextCommand<'a>, usize)>, ParseError> {
    let err = |kind| Err(ParseError::skip(kind, line_len, false));
    if n == 2 {
        return err(ParseErrorKind::BadFormat);
    }
    if n > MAX_META_TOKENS {
        return err(ParseErrorKind::Meta(MetaError::FlagsTooLong));
    }
    // memcached reads the length as a 32-bit signed number. A length that cannot be read
    // closes the connection (Shoal's rule: its data block must never run as commands).
    let declared = parse_i64(toks[2])
        .filter(|&l| (0..=i64::from(i32::MAX) - 2).contains(&l))
        .and_then(|l| usize::try_from(l).ok())
        .filter(|&l| l <= limits.max_value.saturating_add(SWALLOW_MARGIN))
        .ok_or(ParseError::fatal(ParseErrorKind::BadLength))?;
    // Cannot overflow: declared <= i32::MAX - 2.
    let block = declared + 2;
    let skip = |e| {
        Err(ParseError::skip(
            ParseErrorKind::Meta(e),
            line_len + block,
            false,
        ))
    };
    if let Err(e) = parse_flags(&toks[3..n], &mut req) {
        return skip(e);
    }
    if let Err(e) = req.flags.apply_mode(MetaKind::Set) {
        return skip(e);
    }
    if !req.flags.base64 && check_key(req.key_token, limits).is_none() {
        return Err(ParseError::skip(
            ParseErrorKind::BadKey,
            line_len + block,
            false,
        ));
    }
    if declared > limits.max_value {
        let cmd = TextCommand::TooLarge {
            key: req.key_token,
            unlink: !req.flags.base64,
            swallow: block,
            noreply: false,
        };
        return Ok(Some((cmd, line_len)));
    }
    let end = line_len + block;
    if input.len() < end {
        return Ok(None);
    }
    if &input[end - 2..end] != b"\r\n" {
        return Err(ParseError::fatal(ParseErrorKind::BadDataChunk));
    }
    req.data = &input[line_len..end - 2];
    Ok(Some((TextCommand::Meta(req), end)))
}

impl MetaFlags<'_> {
    /// Reads the `M` mode (after the other flags, as memcached).
    fn apply_mode(&mut self, kind: MetaKind) -> Result<(), MetaError> {
        let Some(m) = self.mode else {
            return Ok(());
        };
        match (kind, m) {
            (MetaKind::Set, b'E') => self.set_mode = MetaSetMode::Add,
            (MetaKind::Set, b'A') => self.set_mode = MetaSetMode::Append,
            (MetaKind::Set, b'P') => self.set_mode = MetaSetMode::Prepend,
            (MetaKind::Set, b'R') => self.set_mode = MetaSetMode::Replace,
            (MetaKind::Set, b'S') => self.set_mode = MetaSetMode::Set,
            (MetaKind::Set, _) => return Err(MetaError::SetMode),
            (MetaKind::Arith, b'I' | b'+') => self.decr = false,
            (MetaKind::Arith, b'D' | b'-') => self.decr = true,
            (MetaKind::Arith, _) => return Err(MetaError::ArithMode),
            _ => {}
        }
        Ok(())
    }
}

/// memcached's `_meta_flag_preparse`: every flag once, known flags only, tokens that parse.
/// As memcached, a duplicate or unknown flag stops at once; other errors let the rest be
/// read and the last one is reported.
fn parse_flags<'a>(flags: &[&'a [u8]], req: &mut MetaRequest<'a>) -> Result<(), MetaError> {
    let mut seen = [false; 127];
    let mut error = None;
    let f = &mut req.flags;
    for &tok in flags {
        let o = tok[0];
        if o >= 127 || seen[usize::from(o)] {
            return Err(MetaError::DuplicateFlag);
        }
        seen[usize::from(o)] = true;
        let arg = &tok[1..];
        let int = || parse_i64(arg).filter(|v| i32::try_from(*v).is_ok());
        match o {
            b'b' => {
                f.base64 = true;
                match base64::decode(req.key_token, &mut req.decoded) {
                    Some(len) => req.decoded_len = len,
                    None => error = Some(MetaError::KeyDecode),
                }
            }
            b'N' => match int() {
                Some(v) => f.vivify = Some(v),
                None => error = Some(MetaError::BadToken),
            },
            b'T' => match int() {
                Some(v) => f.ttl = Some(v),
                None => error = Some(MetaError::BadToken),
            },
            b'R' => match int() {
                Some(v) => f.recache = Some(v),
                None => error = Some(MetaError::BadToken),
            },
            b'O' if tok.len() > MAX_OPAQUE => error = Some(MetaError::OpaqueTooLong),
            b'l' | b'h' | b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' => {}
            b'v' => f.value = true,
            b'u' => f.no_update = true,
            b'q' => f.quiet = true,
            b'F' => match parse_u64(arg).and_then(|v| u32::try_from(v).ok()) {
                Some(v) => f.client_flags = v,
                None => error = Some(MetaError::BadFormat),
            },
            b'C' => match parse_u64(arg) {
                Some(v) => f.cas = Some(v),
                None => error = Some(MetaError::BadToken),
            },
            b'M' if tok.len() != 2 => error = Some(MetaError::ModeLength),
            b'M' => f.mode = Some(tok[1]),
            b'J' => match parse_u64(arg) {
                Some(v) => f.initial = v,
                None => error = Some(MetaError::BadInitial),
            },
            b'D' => match parse_u64(arg) {
                Some(v) => f.delta = v,
                None => error = Some(MetaError::BadDelta),
            },
            b'I' => f.invalidate = true,
            _ => return Err(MetaError::InvalidFlag),
        }
        f.toks[f.n] = tok;
        f.n += 1;
    }
    error.map_or(Ok(()), Err)
}
