//! Unit tests of the text command parser: every command, every strict prefix, the limits at
//! `max` and `max + 1`, each documented error, and a no-panic loop over random lines.

use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn ok(input: &[u8]) -> (TextCommand<'_>, usize) {
    match parse(input, &limits()) {
        Ok(Some(r)) => r,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn err(input: &[u8]) -> ParseError {
    match parse(input, &limits()) {
        Err(e) => e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn keys<'a>(cmd: &TextCommand<'a>) -> Vec<&'a [u8]> {
    match cmd {
        TextCommand::Get { keys, .. } | TextCommand::Gat { keys, .. } => keys.iter().collect(),
        _ => panic!("not a multi-key command"),
    }
}

/// Every command in its valid forms, with the expected decoding.
fn valid_cases() -> Vec<(&'static [u8], TextCommand<'static>)> {
    let store = |kind, key, flags, exptime, data, noreply| TextCommand::Store {
        kind,
        key,
        flags,
        exptime,
        data,
        noreply,
    };
    vec![
        (
            &b"set k 5 10 3\r\nabc\r\n"[..],
            store(StoreKind::Set, &b"k"[..], 5, 10, &b"abc"[..], false),
        ),
        (
            b"set k 0 0 0 noreply\r\n\r\n",
            store(StoreKind::Set, b"k", 0, 0, b"", true),
        ),
        (
            b"add k 4294967295 -1 1\r\nx\r\n",
            store(StoreKind::Add, b"k", u32::MAX, -1, b"x", false),
        ),
        (
            b"replace k 1 2 1\r\nx\r\n",
            store(StoreKind::Replace, b"k", 1, 2, b"x", false),
        ),
        (
            b"append k 1 2 2\r\n\r\n\r\n",
            store(StoreKind::Append, b"k", 1, 2, b"\r\n", false),
        ),
        (
            b"prepend k 1 2 1 noreply\r\n\0\r\n",
            store(StoreKind::Prepend, b"k", 1, 2, b"\0", true),
        ),
        (
            b"cas k 1 2 1 18446744073709551615\r\nx\r\n",
            store(StoreKind::Cas(u64::MAX), b"k", 1, 2, b"x", false),
        ),
        (
            b"cas k 1 2 1 7 noreply\r\nx\r\n",
            store(StoreKind::Cas(7), b"k", 1, 2, b"x", true),
        ),
        (
            b"set  k  +1  +2  +1\nx\r\n",
            store(StoreKind::Set, b"k", 1, 2, b"x", false),
        ),
        (
            b"delete k\r\n",
            TextCommand::Delete {
                key: b"k",
                noreply: false,
            },
        ),
        (
            b"delete k 0\r\n",
            TextCommand::Delete {
                key: b"k",
                noreply: false,
            },
        ),
        (
            b"delete k noreply\r\n",
            TextCommand::Delete {
                key: b"k",
                noreply: true,
            },
        ),
        (
            b"delete k 0 noreply\r\n",
            TextCommand::Delete {
                key: b"k",
                noreply: true,
            },
        ),
        (
            b"incr k 5\r\n",
            TextCommand::Incr {
                key: b"k",
                delta: 5,
                decr: false,
                noreply: false,
            },
        ),
        (
            b"decr k 18446744073709551615 noreply\r\n",
            TextCommand::Incr {
                key: b"k",
                delta: u64::MAX,
                decr: true,
                noreply: true,
            },
        ),
        (
            b"touch k -5\r\n",
            TextCommand::Touch {
                key: b"k",
                exptime: -5,
                noreply: false,
            },
        ),
        (
            b"touch k 5 noreply\r\n",
            TextCommand::Touch {
                key: b"k",
                exptime: 5,
                noreply: true,
            },
        ),
        (
            b"flush_all\r\n",
            TextCommand::FlushAll {
                delay: 0,
                noreply: false,
            },
        ),
        (
            b"flush_all noreply\r\n",
            TextCommand::FlushAll {
                delay: 0,
                noreply: true,
            },
        ),
        (
            b"flush_all 10\r\n",
            TextCommand::FlushAll {
                delay: 10,
                noreply: false,
            },
        ),
        (
            b"flush_all -1 noreply\r\n",
            TextCommand::FlushAll {
                delay: -1,
                noreply: true,
            },
        ),
        (
            b"verbosity 1\r\n",
            TextCommand::Verbosity { noreply: false },
        ),
        (
            b"verbosity 1 noreply\r\n",
            TextCommand::Verbosity { noreply: true },
        ),
        (b"version\r\n", TextCommand::Version),
        (b"stats\r\n", TextCommand::Stats(StatsGroup::General)),
        (b"stats slabs\r\n", TextCommand::Stats(StatsGroup::Slabs)),
        (b"quit\r\n", TextCommand::Quit),
        (b"quit\n", TextCommand::Quit),
    ]
}

#[test]
fn every_command_parses() {
    for (input, want) in valid_cases() {
        assert_eq!(
            ok(input),
            (want, input.len()),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let (get, n) = ok(b"get a bb  ccc\r\n");
    assert_eq!(n, 15);
    assert!(matches!(get, TextCommand::Get { cas: false, .. }));
    assert_eq!(keys(&get), [&b"a"[..], b"bb", b"ccc"]);
    let (gets, _) = ok(b"gets a\n");
    assert!(matches!(gets, TextCommand::Get { cas: true, .. }));
    let (gat, _) = ok(b"gat 100 a b\r\n");
    assert!(matches!(
        gat,
        TextCommand::Gat {
            exptime: 100,
            cas: false,
            ..
        }
    ));
    assert_eq!(keys(&gat), [&b"a"[..], b"b"]);
    let (gat, _) = ok(b"gat 1\r\n");
    assert_eq!(keys(&gat), Vec::<&[u8]>::new());
    let (gats, _) = ok(b"gats -1 a\r\n");
    assert!(matches!(
        gats,
        TextCommand::Gat {
            exptime: -1,
            cas: true,
            ..
        }
    ));
}

#[test]
fn every_strict_prefix_needs_more() {
    let mut inputs: Vec<&[u8]> = valid_cases().into_iter().map(|(i, _)| i).collect();
    inputs.extend([&b"get a bb ccc\r\n"[..], b"gats 1 a\r\n"]);
    for input in inputs {
        for end in 0..input.len() {
            assert_eq!(
                parse(&input[..end], &limits()),
                Ok(None),
                "{:?}",
                String::from_utf8_lossy(&input[..end])
            );
        }
    }
}

#[test]
fn pipelined_commands_decode_in_turn() {
    let input = b"set a 0 0 1\r\nx\r\nget a\r\ndelete a\r\n";
    let (first, n1) = ok(input);
    assert!(matches!(first, TextCommand::Store { data: b"x", .. }));
    let (second, n2) = ok(&input[n1..]);
    assert_eq!(keys(&second), [&b"a"[..]]);
    let (third, n3) = ok(&input[n1 + n2..]);
    assert!(matches!(third, TextCommand::Delete { key: b"a", .. }));
    assert_eq!(n1 + n2 + n3, input.len());
}

#[test]
fn key_of_max_len_is_accepted_and_one_more_rejected() {
    let max = "k".repeat(250);
    let over = "k".repeat(251);
    assert!(matches!(
        ok(format!("get {max}\r\n").as_bytes()).0,
        TextCommand::Get { .. }
    ));
    let e = err(format!("get a {over}\r\n").as_bytes());
    assert_eq!((e.kind, e.skip), (ParseErrorKind::BadKey, 259));
    assert_eq!(e.kind.reply(), b"CLIENT_ERROR bad command line format\r\n");
    let line = format!("set {over} 0 0 1\r\n");
    let e = err(format!("{line}x\r\n").as_bytes());
    // The data block is skipped along with the line.
    assert_eq!((e.kind, e.skip), (ParseErrorKind::BadKey, line.len() + 3));
    for cmd in ["delete {k}", "incr {k} 1", "touch {k} 1"] {
        let e = err(format!("{}\r\n", cmd.replace("{k}", &over)).as_bytes());
        assert_eq!(e.kind, ParseErrorKind::BadKey, "{cmd}");
    }
}

#[test]
fn keys_with_control_characters_are_rejected() {
    for input in [
        &b"get a\0b\r\n"[..],
        b"get a\tb\r\n",
        b"get a\rb\r\n",
        b"delete \x7f\r\n",
    ] {
        assert_eq!(err(input).kind, ParseErrorKind::BadKey, "{input:?}");
    }
    // Bytes above 0x7f are fine: keys are bytes.
    assert!(matches!(
        ok("get ключ\r\n".as_bytes()).0,
        TextCommand::Get { .. }
    ));
}

#[test]
fn value_of_max_len_is_accepted_and_larger_swallowed_or_fatal() {
    let max = limits().max_value;
    let mut input = format!("set k 0 0 {max}\r\n").into_bytes();
    input.resize(input.len() + max, b'v');
    input.extend_from_slice(b"\r\n");
    assert!(matches!(ok(&input).0, TextCommand::Store { .. }));

    let line = format!("set k 0 0 {}\r\n", max + 1);
    let (cmd, n) = ok(line.as_bytes());
    assert_eq!(n, line.len());
    assert_eq!(
        cmd,
        TextCommand::TooLarge {
            key: b"k",
            unlink: true,
            swallow: max + 3,
            noreply: false
        }
    );
    let add = format!("add k 0 0 {} noreply\r\n", max + 1);
    let (cmd, _) = ok(add.as_bytes());
    assert!(matches!(
        cmd,
        TextCommand::TooLarge {
            unlink: false,
            noreply: true,
            ..
        }
    ));

    let bound = max + SWALLOW_MARGIN;
    assert!(matches!(
        ok(format!("set k 0 0 {bound}\r\n").as_bytes()).0,
        TextCommand::TooLarge { .. }
    ));
    for len in [
        (bound + 1).to_string(),
        (1u64 << 31).to_string(),
        u32::MAX.to_string(),
        u64::MAX.to_string(),
    ] {
        let e = err(format!("set k 0 0 {len}\r\n").as_bytes());
        assert_eq!(e.kind, ParseErrorKind::LengthTooLarge, "{len}");
        assert!(e.kind.is_fatal());
    }
}

#[test]
fn malformed_length_is_fatal() {
    for len in [
        "-1",
        "abc",
        "1x",
        "",
        "99999999999999999999999",
        "+",
        "0x10",
    ] {
        let input = format!("set k 0 0 {len} \r\n");
        let e = err(input.as_bytes());
        // An empty length shifts the token count: that is a plain arity error.
        if len.is_empty() {
            assert_eq!(e.kind, ParseErrorKind::UnknownCommand);
            continue;
        }
        assert!(matches!(e.kind, ParseErrorKind::BadLength), "{len}: {e:?}");
        assert!(e.kind.is_fatal());
        assert_eq!(e.kind.reply(), b"CLIENT_ERROR bad command line format\r\n");
    }
}

#[test]
fn non_numeric_fields_are_reported() {
    let cases: [(&[u8], ParseErrorKind, bool); 14] = [
        (b"set k x 0 1\r\nv\r\n", ParseErrorKind::BadFormat, false),
        (b"set k -1 0 1\r\nv\r\n", ParseErrorKind::BadFormat, false),
        (
            b"set k 4294967296 0 1\r\nv\r\n",
            ParseErrorKind::BadFormat,
            false,
        ),
        (
            b"set k 0 1.5 1 noreply\r\nv\r\n",
            ParseErrorKind::BadFormat,
            true,
        ),
        (b"cas k 0 0 1 -1\r\nv\r\n", ParseErrorKind::BadFormat, false),
        (b"incr k x\r\n", ParseErrorKind::BadDelta, false),
        (b"incr k -1\r\n", ParseErrorKind::BadDelta, false),
        (
            b"decr k 18446744073709551616 noreply\r\n",
            ParseErrorKind::BadDelta,
            true,
        ),
        (b"touch k x\r\n", ParseErrorKind::BadExptime, false),
        (b"gat x k\r\n", ParseErrorKind::BadExptime, false),
        (b"flush_all x\r\n", ParseErrorKind::BadExptime, false),
        (b"verbosity x\r\n", ParseErrorKind::BadFormat, false),
        (b"delete k 1\r\n", ParseErrorKind::BadDeleteFormat, false),
        (
            b"delete k x noreply\r\n",
            ParseErrorKind::BadDeleteFormat,
            true,
        ),
    ];
    for (input, kind, noreply) in cases {
        let e = err(input);
        assert_eq!(
            (e.kind, e.noreply),
            (kind, noreply),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(!kind.is_fatal());
        // Recoverable errors skip the whole command, data block included.
        assert_eq!(e.skip, input.len(), "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(
        ParseErrorKind::BadDeleteFormat.reply(),
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    );
}

#[test]
fn wrong_arity_storage_lines_skip_their_data_block_too() {
    // A readable length means a data block may follow: it is skipped with the line, so its
    // bytes never run as commands. `ms` with a bad flag likewise (tested in meta below).
    for (input, block) in [
        (&b"set k 0 0 1 noreply x\r\n"[..], 3),
        (b"cas k 0 0 9\r\n", 11),
    ] {
        let e = err(input);
        assert_eq!(
            (e.kind, e.skip),
            (ParseErrorKind::UnknownCommand, input.len() + block),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(err(b"ms k x\r\n").kind, ParseErrorKind::BadLength);
    let e = err(b"ms k 9 T0 Z\r\n");
    assert_eq!(
        (e.kind.reply(), e.skip),
        (&b"CLIENT_ERROR invalid flag\r\n"[..], 13 + 11)
    );
    let limits = Limits::for_value_size(1000);
    assert_eq!(request_len(b"set k 0 0 9\r\n", &limits), Some(24));
    assert_eq!(request_len(b"ms k 9 T0\r\nab", &limits), Some(22));
    assert_eq!(request_len(b"set k 0 0 9", &limits), None);
    assert_eq!(request_len(b"get k\r\n", &limits), None);
    assert_eq!(request_len(b"set k 0 0 99999999999\r\n", &limits), None);
}

#[test]
fn wrong_arity_and_unknown_commands_are_error() {
    for input in [
        &b"\r\n"[..],
        b"\n",
        b"   \r\n",
        b"get\r\n",
        b"gets   \r\n",
        b"gat\r\n",
        b"set k 0 0\r\n",
        b"delete\r\n",
        b"delete a 0 noreply x\r\n",
        b"incr k\r\n",
        b"touch k\r\n",
        b"verbosity\r\n",
        b"flush_all 1 2 3\r\n",
        b"stats bogus\r\n",
        b"lru_crawler enable extra\r\n",
        b"GET a\r\n",
        b"bogus\r\n",
        b"\0\r\n",
        b"GET /\r\n",
    ] {
        let e = err(input);
        assert_eq!(
            (e.kind, e.skip),
            (ParseErrorKind::UnknownCommand, input.len()),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(e.kind.reply(), b"ERROR\r\n");
    }
}

#[test]
fn optional_trailing_token_other_than_noreply_is_ignored() {
    // memcached only looks at whether the last token is "noreply".
    assert!(matches!(
        ok(b"set k 0 0 1 junk\r\nx\r\n").0,
        TextCommand::Store { noreply: false, .. }
    ));
    assert!(matches!(
        ok(b"touch k 1 junk\r\n").0,
        TextCommand::Touch { noreply: false, .. }
    ));
    assert!(matches!(
        ok(b"incr k 1 2\r\n").0,
        TextCommand::Incr { noreply: false, .. }
    ));
    assert!(matches!(ok(b"version x\r\n").0, TextCommand::Version));
    assert!(matches!(ok(b"quit x\r\n").0, TextCommand::Quit));
}

#[test]
fn bad_chunk_terminator_is_fatal() {
    for input in [
        &b"set k 0 0 1\r\nab\r\n"[..],
        b"set k 0 0 1\nx\n\n",
        b"set k 0 0 0\r\nxx",
    ] {
        let e = err(input);
        assert_eq!(e.kind, ParseErrorKind::BadDataChunk, "{input:?}");
        assert!(e.kind.is_fatal());
        assert_eq!(e.kind.reply(), b"CLIENT_ERROR bad data chunk\r\n");
    }
}

#[test]
fn line_too_long_is_fatal_at_limit_plus_one() {
    // A non-get line of exactly MAX_LINE bytes is a (bad) command; one more byte is too long.
    let mut line = vec![b'x'; MAX_LINE - 2];
    line.extend_from_slice(b"\r\n");
    assert_eq!(err(&line).kind, ParseErrorKind::UnknownCommand);
    let mut long = vec![b'x'; MAX_LINE - 1];
    long.extend_from_slice(b"\r\n");
    assert_eq!(err(&long).kind, ParseErrorKind::LineTooLong);
    // Without a newline: rejected as soon as the buffer reaches the limit.
    assert_eq!(parse(&line[..MAX_LINE - 1], &limits()), Ok(None));
    assert_eq!(err(&vec![b'x'; MAX_LINE]).kind, ParseErrorKind::LineTooLong);
    assert_eq!(
        ParseErrorKind::LineTooLong.reply(),
        b"CLIENT_ERROR line too long\r\n"
    );

    // get lines may be longer: max_batch keys of max_key bytes fit.
    let l = limits();
    let key = "k".repeat(l.max_key);
    let get = format!("get{}\r\n", format!(" {key}").repeat(l.max_batch));
    assert!(get.len() > MAX_LINE && get.len() <= get_line_limit(&l));
    assert_eq!(keys(&ok(get.as_bytes()).0).len(), l.max_batch);
    let partial = &get.as_bytes()[..get.len() - 2];
    assert_eq!(parse(partial, &l), Ok(None));
    // Any number of keys, as memcached, as long as the line fits.
    let many = format!("get{}\r\n", " k".repeat(l.max_batch * 20));
    assert_eq!(keys(&ok(many.as_bytes()).0).len(), l.max_batch * 20);
    let at_limit = format!("get {}\r\n", "k".repeat(get_line_limit(&l) - 6));
    assert_eq!(at_limit.len(), get_line_limit(&l));
    assert!(
        parse(at_limit.as_bytes(), &l).is_err(),
        "one key over max_key"
    );
    assert_eq!(
        err(&vec![b' '; get_line_limit(&l)]).kind,
        ParseErrorKind::LineTooLong
    );
    let mut huge_get = b"get ".to_vec();
    huge_get.resize(get_line_limit(&l) + 1, b'k');
    assert_eq!(err(&huge_get).kind, ParseErrorKind::LineTooLong);
}

#[test]
fn http_request_line_closes_silently() {
    for input in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"POST /x HTTP/1.0\r\n",
        b"FOO / HTTP/1.1\n",
    ] {
        let e = err(input);
        assert_eq!(e.kind, ParseErrorKind::Http);
        assert!(e.kind.is_fatal());
        assert_eq!(e.kind.reply(), b"");
    }
    // A known command keeps its meaning: memcached treats the token as a key.
    assert!(matches!(
        ok(b"get a HTTP/1.1\r\n").0,
        TextCommand::Get { .. }
    ));
}

#[test]
fn nul_bytes_never_panic_and_are_rejected() {
    for input in [
        &b"\0"[..],
        b"\0\0\0\r\n",
        b"get \0\r\n",
        b"set k 0 0 1\r\n\0\0\0\r\n",
        b"s\0et k 0 0 1\r\n",
    ] {
        let r = parse(input, &limits());
        assert!(r.is_err() || r == Ok(None), "{input:?}: {r:?}");
    }
}

/// Seeded xorshift64*, so failures reproduce without a new dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_lines_never_panic() {
    let seeds: Vec<&[u8]> = valid_cases()
        .into_iter()
        .map(|(i, _)| i)
        .chain([
            &b"get a b c\r\n"[..],
            b"gats 5 a b\r\n",
            b"GET / HTTP/1.1\r\n",
        ])
        .collect();
    let alphabet = b" \r\n0123456789-+abcdefghijklmnopqrstuvwxyz_\0\x7f\xff";
    let words: [&[u8]; 12] = [
        b"get",
        b"set",
        b"cas",
        b"delete",
        b"incr",
        b"noreply",
        b"18446744073709551616",
        b"-1",
        b"4294967296",
        b"\r\n",
        b"HTTP/1.1",
        b"flush_all",
    ];
    // Small limits so the length and batch limits are hit too.
    let small = Limits {
        max_frame: 2048,
        max_key: 8,
        max_value: 64,
        max_batch: 4,
    };
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let mut buf = Vec::new();
    for i in 0..100_000 {
        buf.clear();
        if i & 1 == 0 {
            buf.extend_from_slice(seeds[rng.below(seeds.len())]);
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len() + 1);
                match rng.below(4) {
                    0 if at < buf.len() => buf[at] = alphabet[rng.below(alphabet.len())],
                    1 if at < buf.len() => {
                        buf.remove(at);
                    }
                    2 => buf.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        let w = words[rng.below(words.len())];
                        buf.splice(at..at, w.iter().copied());
                    }
                }
            }
        } else {
            for _ in 0..rng.below(80) {
                if rng.below(4) == 0 {
                    buf.extend_from_slice(words[rng.below(words.len())]);
                    buf.push(b' ');
                } else {
                    buf.push(alphabet[rng.below(alphabet.len())]);
                }
            }
        }
        for l in [limits(), small] {
            match parse(&buf, &l) {
                Ok(Some((_, n))) => assert!(n > 0 && n <= buf.len()),
                Ok(None) => {}
                Err(e) => assert!(e.kind.is_fatal() || e.skip > 0),
            }
        }
    }
}
