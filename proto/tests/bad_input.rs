//! The bad-input list of `shared/reference/reliability.md` section 5 (framing and inner fields),
//! case by case, and every limit at its maximum and one past it.

use shoal_proto::*;

use shoal_proto::raw::{frame, header, key_field, set_body};

fn limits() -> Limits {
    Limits::default()
}

fn err(buf: &[u8]) -> DecodeError {
    decode_request(buf, &limits()).expect_err("must be rejected")
}

// --- Framing -------------------------------------------------------------------------------

#[test]
fn c1_length_zero_body_is_fine_for_ping_and_short_for_get() {
    let ping = frame(Opcode::Ping, 42, &[]);
    assert!(decode_request(&ping, &limits()).unwrap().is_some());
    let get = frame(Opcode::Get, 42, &[]);
    let e = err(&get);
    assert_eq!(e.kind, DecodeErrorKind::Truncated);
    assert!(!e.is_recoverable());
}

#[test]
fn c1_fewer_bytes_than_a_header_need_more() {
    let ping = frame(Opcode::Ping, 42, &[]);
    for n in 0..HEADER_LEN {
        assert!(decode_request(&ping[..n], &limits()).unwrap().is_none());
    }
}

#[test]
fn c2_frame_length_at_limit_accepted_and_past_it_rejected_on_the_header() {
    let l = limits();
    // At the limit: the header is accepted (the body is awaited).
    let at = header(Opcode::Set as u8, 0, 0, 1, l.max_frame as u32);
    assert!(decode_request(&at, &l).unwrap().is_none());
    for len in [l.max_frame as u32 + 1, 1 << 31, u32::MAX] {
        let h = header(Opcode::Set as u8, 0, 0, 1, len);
        let e = err(&h);
        assert_eq!(e.kind, DecodeErrorKind::FrameTooLarge, "len {len}");
        assert_eq!(e.kind.status(), Status::ValueTooLarge);
        assert_eq!(e.request_id, Some(1));
        assert!(!e.is_recoverable());
    }
}

#[test]
fn c3_little_endian_length_is_a_different_length() {
    // 256 written little-endian reads as 0x00010000 = 65536 big-endian: a frame that size needs
    // more bytes; it is never mistaken for a 256-byte one.
    let mut f = header(Opcode::Ping as u8, 0, 0, 1, 0);
    f[12..16].copy_from_slice(&[0, 1, 0, 0]);
    f.extend_from_slice(&[0u8; 256]);
    assert!(decode_request(&f, &limits()).unwrap().is_none());
}

#[test]
fn c4_declared_length_beyond_bytes_sent_waits() {
    let mut f = frame(Opcode::Get, 42, &key_field(b"abc"));
    f[15] += 10;
    assert!(decode_request(&f, &limits()).unwrap().is_none());
}

#[test]
fn c7_trailing_bytes_and_overrun_are_rejected_without_reading_the_next_frame() {
    let mut body = key_field(b"abc");
    body.push(0xFF);
    let e = err(&frame(Opcode::Get, 42, &body));
    assert_eq!(e.kind, DecodeErrorKind::TrailingBytes);
    assert!(!e.is_recoverable());

    // Inner key length says 10 but the frame holds 3; the next frame's bytes must not be read.
    let mut f = frame(Opcode::Get, 42, &[0, 10, b'a', b'b', b'c']);
    f.extend_from_slice(&frame(Opcode::Ping, 42, &[]));
    let e = err(&f);
    assert_eq!(e.kind, DecodeErrorKind::Truncated);
}

// --- Inner fields ---------------------------------------------------------------------------

#[test]
fn c8_key_length_zero_over_limit_and_over_frame() {
    let e = err(&frame(Opcode::Get, 42, &key_field(b"")));
    assert_eq!(e.kind, DecodeErrorKind::EmptyKey);
    assert!(e.is_recoverable());

    let max = vec![b'k'; limits().max_key];
    assert!(
        decode_request(&frame(Opcode::Get, 42, &key_field(&max)), &limits())
            .unwrap()
            .is_some()
    );
    let over = vec![b'k'; limits().max_key + 1];
    let e = err(&frame(Opcode::Get, 42, &key_field(&over)));
    assert_eq!(e.kind, DecodeErrorKind::KeyTooLong);
    assert_eq!(e.kind.status(), Status::KeyTooLong);
    assert!(e.is_recoverable(), "a long key does not corrupt the stream");

    let e = err(&frame(Opcode::Get, 42, &[0, 200, b'a']));
    assert_eq!(e.kind, DecodeErrorKind::Truncated);
}

#[test]
fn c9_lengths_that_would_underflow_or_overflow() {
    // A value length of u32::MAX inside a small frame: rejected by the value limit, and with a
    // huge limit still rejected as truncated (no arithmetic wraps).
    let body = set_body(b"k", u32::MAX, b"");
    let e = err(&frame(Opcode::Set, 42, &body));
    assert_eq!(e.kind, DecodeErrorKind::ValueTooLarge);
    let huge = Limits {
        max_value: usize::MAX,
        ..limits()
    };
    let e = decode_request(&frame(Opcode::Set, 42, &body), &huge).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::Truncated);
}

#[test]
fn c10_multi_get_counts_are_bounded_and_never_preallocated() {
    let l = limits();
    // A count of 65535 in a 2-byte body.
    let e = err(&frame(Opcode::MultiGet, 42, &[0xFF, 0xFF]));
    assert_eq!(e.kind, DecodeErrorKind::BadBatchSize);
    let e = err(&frame(Opcode::MultiGet, 42, &[0, 0]));
    assert_eq!(e.kind, DecodeErrorKind::BadBatchSize);
    // Exactly max_batch keys decode; max_batch + 1 do not.
    let keys: Vec<Vec<u8>> = (0..=l.max_batch)
        .map(|i| format!("k{i}").into_bytes())
        .collect();
    let mut ok = Vec::new();
    encode_multi_get(&mut ok, 1, keys[..l.max_batch].iter().map(Vec::as_slice));
    let (req, _) = decode_request(&ok, &l).unwrap().unwrap();
    match req.command {
        Command::MultiGet { keys: list } => assert_eq!(list.len(), l.max_batch),
        other => panic!("unexpected {other:?}"),
    }
    let mut over = Vec::new();
    encode_multi_get(&mut over, 1, keys.iter().map(Vec::as_slice));
    assert_eq!(err(&over).kind, DecodeErrorKind::BadBatchSize);
    // Count says 3, only 1 key present.
    let mut body = vec![0, 3];
    body.extend_from_slice(&key_field(b"a"));
    assert_eq!(
        err(&frame(Opcode::MultiGet, 42, &body)).kind,
        DecodeErrorKind::Truncated
    );
}

#[test]
fn c11_value_at_limit_accepted_and_past_it_rejected() {
    let l = Limits::for_value_size(4096);
    let value = vec![7u8; 4096];
    let ok = frame(Opcode::Set, 42, &set_body(b"k", 4096, &value));
    assert!(decode_request(&ok, &l).unwrap().is_some());
    let big = vec![7u8; 4097];
    let e = decode_request(&frame(Opcode::Set, 42, &set_body(b"k", 4097, &big)), &l).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::ValueTooLarge);
    assert_eq!(e.kind.status(), Status::ValueTooLarge);
    assert!(e.is_recoverable());
    // A value over the limit whose body was not sent: the header alone is refused when the
    // frame is over max_frame.
    let e = decode_request(
        &header(Opcode::Set as u8, 0, 0, 9, (l.max_frame + 1) as u32),
        &l,
    )
    .unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::FrameTooLarge);
}

#[test]
fn c12_unknown_opcode_reserved_bits_bad_magic_future_version() {
    let mut f = header(0xEE, 0, 0, 5, 0);
    let e = err(&f);
    assert_eq!(e.kind, DecodeErrorKind::UnknownOpcode);
    assert_eq!(e.kind.status(), Status::UnknownCommand);
    assert_eq!((e.request_id, e.opcode), (Some(5), Some(0xEE)));
    assert!(e.is_recoverable(), "a client may probe for newer opcodes");

    f = header(Opcode::Ping as u8, 0x80, 0, 5, 0);
    assert_eq!(err(&f).kind, DecodeErrorKind::ReservedBitsSet);
    f = header(Opcode::Ping as u8, 0, 0, 5, 0);
    f[7] = 1;
    assert_eq!(err(&f).kind, DecodeErrorKind::ReservedBitsSet);

    for first in [0x00u8, 0x16, b'G', 0x80, 0xFF] {
        let mut f = header(Opcode::Ping as u8, 0, 0, 5, 0);
        f[0] = first;
        assert_eq!(err(&f).kind, DecodeErrorKind::BadMagic);
        // Known bad from the first byte alone: no waiting for a whole header.
        assert_eq!(err(&f[..1]).kind, DecodeErrorKind::BadMagic);
    }

    let mut f = header(Opcode::Ping as u8, 0, 0, 5, 0);
    f[1] = 2;
    let e = err(&f);
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion);
    assert_eq!(e.kind.status(), Status::UnsupportedVersion);
}

#[test]
fn c13_reply_frame_sent_as_request_and_request_as_reply() {
    let f = header(Opcode::Ping as u8, header::FLAG_REPLY, 0, 1, 0);
    assert_eq!(err(&f).kind, DecodeErrorKind::WrongDirection);
    let f = header(Opcode::Ping as u8, 0, 0, 1, 0);
    assert_eq!(
        decode_reply(&f, &limits()).unwrap_err().kind,
        DecodeErrorKind::WrongDirection
    );
    // A status in a request, and a NOTICE sent by a client.
    let f = header(Opcode::Ping as u8, 0, 3, 1, 0);
    assert_eq!(err(&f).kind, DecodeErrorKind::StatusInRequest);
    let f = header(Opcode::Notice as u8, 0, 0, 1, 0);
    assert_eq!(err(&f).kind, DecodeErrorKind::UnknownOpcode);
}

#[test]
fn c14_request_ids_zero_and_max_are_echoed() {
    for id in [0, u32::MAX] {
        let mut f = Vec::new();
        Request {
            id,
            command: Command::Ping,
        }
        .encode(&mut f);
        assert_eq!(decode_request(&f, &limits()).unwrap().unwrap().0.id, id);
    }
}

#[test]
fn c15_cas_tokens_zero_and_max_travel_unchanged() {
    for expected in [0, u64::MAX] {
        let mut f = Vec::new();
        let command = Command::Cas {
            key: b"k",
            value: b"v",
            flags: 0,
            ttl: 0,
            expected,
        };
        Request { id: 1, command }.encode(&mut f);
        assert_eq!(
            decode_request(&f, &limits()).unwrap().unwrap().0.command,
            command
        );
    }
}

#[test]
fn c16_ttl_extremes_travel_unchanged() {
    for ttl in [0, 1, u32::MAX] {
        let mut f = Vec::new();
        let command = Command::Touch { key: b"k", ttl };
        Request { id: 1, command }.encode(&mut f);
        assert_eq!(
            decode_request(&f, &limits()).unwrap().unwrap().0.command,
            command
        );
    }
}

#[test]
fn c17_counter_extremes_and_bad_tag() {
    let mut f = Vec::new();
    let command = Command::Counter {
        decr: false,
        key: b"n",
        delta: u64::MAX,
        create: Some((u64::MAX, u32::MAX)),
    };
    Request { id: 1, command }.encode(&mut f);
    assert_eq!(
        decode_request(&f, &limits()).unwrap().unwrap().0.command,
        command
    );
    // The create tag must be 0 or 1.
    let mut body = u64::MAX.to_be_bytes().to_vec();
    body.push(2);
    body.extend_from_slice(&key_field(b"n"));
    assert_eq!(
        err(&frame(Opcode::Incr, 42, &body)).kind,
        DecodeErrorKind::BadField
    );
}

#[test]
fn admin_bodies_are_checked() {
    // SET_PERSIST takes exactly one mode byte, 0..=2.
    for mode in 0..=2u8 {
        let f = frame(Opcode::SetPersist, 42, &[mode]);
        let (req, _) = decode_request(&f, &limits()).unwrap().unwrap();
        assert_eq!(req.command.opcode(), Opcode::SetPersist);
    }
    assert_eq!(
        err(&frame(Opcode::SetPersist, 42, &[3])).kind,
        DecodeErrorKind::BadField
    );
    assert_eq!(
        err(&frame(Opcode::SetPersist, 42, &[])).kind,
        DecodeErrorKind::Truncated
    );
    assert_eq!(
        err(&frame(Opcode::SetPersist, 42, &[1, 0])).kind,
        DecodeErrorKind::TrailingBytes
    );
    // SAVE has an empty body.
    assert_eq!(
        err(&frame(Opcode::Save, 42, &[0])).kind,
        DecodeErrorKind::TrailingBytes
    );
}

#[test]
fn c18_keys_are_bytes_nul_crlf_and_invalid_utf8_included() {
    for key in [&b"a\0b"[..], b"line\r\nbreak", &[0xFF, 0xFE, 0xC3]] {
        let mut f = Vec::new();
        Request {
            id: 1,
            command: Command::Get { key },
        }
        .encode(&mut f);
        assert_eq!(
            decode_request(&f, &limits()).unwrap().unwrap().0.command,
            Command::Get { key }
        );
    }
}

#[test]
fn limits_validate_rejects_nonsense() {
    assert!(Limits::default().validate().is_ok());
    assert!(Limits {
        max_key: 0,
        ..Limits::default()
    }
    .validate()
    .is_err());
    assert!(Limits {
        max_key: 65_536,
        ..Limits::default()
    }
    .validate()
    .is_err());
    assert!(Limits {
        max_frame: 10,
        ..Limits::default()
    }
    .validate()
    .is_err());
    assert!(Limits {
        max_batch: 0,
        ..Limits::default()
    }
    .validate()
    .is_err());
    let l = Limits::for_value_size(limits::MAX_FRAME_CEILING);
    assert!(
        l.validate().is_err(),
        "frames above the ceiling are refused"
    );
}

#[test]
fn reply_value_limit_is_checked_too() {
    let l = Limits::for_value_size(16);
    let mut f = Vec::new();
    Reply {
        id: 1,
        opcode: Opcode::Get,
        status: Status::Ok,
        body: ReplyBody::Value {
            flags: 0,
            value: &[1u8; 17],
        },
    }
    .encode(&mut f);
    assert_eq!(
        decode_reply(&f, &l).unwrap_err().kind,
        DecodeErrorKind::ValueTooLarge
    );
    let mut f = header(Opcode::Ping as u8, header::FLAG_REPLY, 999, 1, 2);
    f.extend_from_slice(&[0, 0]);
    assert_eq!(
        decode_reply(&f, &l).unwrap_err().kind,
        DecodeErrorKind::UnknownStatus
    );
}
