//! Property tests: every frame type survives encode -> decode unchanged; every strict prefix
//! of an encoding is "need more bytes"; byte-at-a-time feeding equals whole-buffer decoding.

use proptest::prelude::*;
use shoal_proto::*;

const CASES: u32 = 10_000;

/// An owned request, so generated cases can be compared with decoded (borrowed) ones.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Hello(u8, u8, Vec<u8>, Vec<u8>),
    Goodbye,
    Ping,
    Stats(Vec<u8>),
    Get(Vec<u8>),
    GetWithHash(Vec<u8>),
    MultiGet(Vec<Vec<u8>>),
    Touch(Vec<u8>, u32),
    GetAndTouch(Vec<u8>, u32),
    Store(StoreMode, Vec<u8>, Vec<u8>, u32, u32),
    Cas(Vec<u8>, Vec<u8>, u32, u32, u64),
    Concat(bool, Vec<u8>, Vec<u8>),
    Delete(Vec<u8>, Option<u64>),
    Counter(bool, Vec<u8>, u64, Option<(u64, u32)>),
    Save,
    SetPersist(PersistMode),
    TableGet,
    NodeStatus,
    ClusterAdmin(AdminRequest),
}

fn encode(req: &Req, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let command = match req {
        Req::MultiGet(keys) => {
            encode_multi_get(&mut out, id, keys.iter().map(Vec::as_slice));
            return out;
        }
        Req::Hello(a, b, n, auth) => Command::Hello {
            min_version: *a,
            max_version: *b,
            client_name: n,
            auth,
        },
        Req::Goodbye => Command::Goodbye,
        Req::Ping => Command::Ping,
        Req::Stats(g) => Command::Stats { group: g },
        Req::Get(k) => Command::Get { key: k },
        Req::GetWithHash(k) => Command::GetWithHash { key: k },
        Req::Touch(k, t) => Command::Touch { key: k, ttl: *t },
        Req::GetAndTouch(k, t) => Command::GetAndTouch { key: k, ttl: *t },
        Req::Store(mode, k, v, f, t) => Command::Store {
            mode: *mode,
            key: k,
            value: v,
            flags: *f,
            ttl: *t,
        },
        Req::Cas(k, v, f, t, e) => Command::Cas {
            key: k,
            value: v,
            flags: *f,
            ttl: *t,
            expected: *e,
        },
        Req::Concat(p, k, v) => Command::Concat {
            prepend: *p,
            key: k,
            value: v,
        },
        Req::Delete(k, e) => Command::Delete {
            key: k,
            expected: *e,
        },
        Req::Counter(d, k, delta, c) => Command::Counter {
            decr: *d,
            key: k,
            delta: *delta,
            create: *c,
        },
        Req::Save => Command::Save,
        Req::TableGet => Command::TableGet,
        Req::NodeStatus => Command::NodeStatus,
        Req::SetPersist(mode) => Command::SetPersist { mode: *mode },
        Req::ClusterAdmin(request) => Command::ClusterAdmin { request: *request },
    };
    Request { id, command }.encode(&mut out);
    out
}

fn own(c: &Command<'_>) -> Req {
    match *c {
        Command::Hello {
            min_version,
            max_version,
            client_name,
            auth,
        } => Req::Hello(min_version, max_version, client_name.into(), auth.into()),
        Command::Goodbye => Req::Goodbye,
        Command::Ping => Req::Ping,
        Command::Stats { group } => Req::Stats(group.into()),
        Command::Get { key } => Req::Get(key.into()),
        Command::GetWithHash { key } => Req::GetWithHash(key.into()),
        Command::MultiGet { keys } => Req::MultiGet(keys.iter().map(<[u8]>::to_vec).collect()),
        Command::Touch { key, ttl } => Req::Touch(key.into(), ttl),
        Command::GetAndTouch { key, ttl } => Req::GetAndTouch(key.into(), ttl),
        Command::Store {
            mode,
            key,
            value,
            flags,
            ttl,
        } => Req::Store(mode, key.into(), value.into(), flags, ttl),
        Command::Cas {
            key,
            value,
            flags,
            ttl,
            expected,
        } => Req::Cas(key.into(), value.into(), flags, ttl, expected),
        Command::Concat {
            prepend,
            key,
            value,
        } => Req::Concat(prepend, key.into(), value.into()),
        Command::Delete { key, expected } => Req::Delete(key.into(), expected),
        Command::Counter {
            decr,
            key,
            delta,
            create,
        } => Req::Counter(decr, key.into(), delta, create),
        Command::Save => Req::Save,
        Command::TableGet => Req::TableGet,
        Command::NodeStatus => Req::NodeStatus,
        Command::SetPersist { mode } => Req::SetPersist(mode),
        Command::ClusterAdmin { request } => Req::ClusterAdmin(request),
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..=250)
}
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600)
}
fn short() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}
fn mode() -> impl Strategy<Value = StoreMode> {
    prop_oneof![
        Just(StoreMode::Set),
        Just(StoreMode::Add),
        Just(StoreMode::Replace)
    ]
}

/// Checks round trip, prefixes and byte-at-a-time feeding for one request.
fn check_request(req: &Req, id: u32) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    let bytes = encode(req, id);
    let (decoded, used) = decode_request(&bytes, &limits)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?
        .ok_or_else(|| TestCaseError::fail("incomplete"))?;
    prop_assert_eq!(used, bytes.len());
    prop_assert_eq!(decoded.id, id);
    prop_assert_eq!(&own(&decoded.command), req);
    // Re-encoding the decoded request gives the same bytes.
    let mut again = Vec::new();
    if let Command::MultiGet { keys } = decoded.command {
        encode_multi_get(&mut again, id, keys.iter());
    } else {
        decoded.encode(&mut again);
    }
    prop_assert_eq!(&again, &bytes);
    // Every strict prefix needs more bytes; feeding one byte at a time finds the frame exactly
    // when the last byte arrives.
    let mut fed = Vec::with_capacity(bytes.len());
    for (i, b) in bytes.iter().enumerate() {
        prop_assert!(
            decode_request(&fed, &limits).expect("prefix").is_none(),
            "prefix {i}"
        );
        fed.push(*b);
    }
    let (whole, _) = decode_request(&fed, &limits)
        .expect("whole")
        .expect("complete");
    prop_assert_eq!(whole, decoded);
    Ok(())
}

macro_rules! request_props {
    ($($name:ident: $strategy:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]
            $(
                #[test]
                fn $name(req in $strategy, id in any::<u32>()) {
                    check_request(&req, id)?;
                }
            )*
        }
    };
}

request_props! {
    hello_roundtrip: (any::<u8>(), any::<u8>(), short(), short()).prop_map(|(a, b, n, s)| Req::Hello(a, b, n, s));
    goodbye_roundtrip: Just(Req::Goodbye);
    ping_roundtrip: Just(Req::Ping);
    stats_roundtrip: short().prop_map(Req::Stats);
    get_roundtrip: key().prop_map(Req::Get);
    get_with_hash_roundtrip: key().prop_map(Req::GetWithHash);
    multi_get_roundtrip: prop::collection::vec(key(), 1..20).prop_map(Req::MultiGet);
    touch_roundtrip: (key(), any::<u32>()).prop_map(|(k, t)| Req::Touch(k, t));
    get_and_touch_roundtrip: (key(), any::<u32>()).prop_map(|(k, t)| Req::GetAndTouch(k, t));
    store_roundtrip: (mode(), key(), value(), any::<u32>(), any::<u32>()).prop_map(|(m, k, v, f, t)| Req::Store(m, k, v, f, t));
    cas_roundtrip: (key(), value(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(k, v, f, t, e)| Req::Cas(k, v, f, t, e));
    concat_roundtrip: (any::<bool>(), key(), value()).prop_map(|(p, k, v)| Req::Concat(p, k, v));
    delete_roundtrip: (key(), any::<Option<u64>>()).prop_map(|(k, e)| Req::Delete(k, e));
    counter_roundtrip: (any::<bool>(), key(), any::<u64>(), any::<Option<(u64, u32)>>()).prop_map(|(d, k, x, c)| Req::Counter(d, k, x, c));
    save_roundtrip: Just(Req::Save);
    table_get_roundtrip: Just(Req::TableGet);
    node_status_roundtrip: Just(Req::NodeStatus);
    cluster_admin_roundtrip: prop_oneof![
        (any::<u32>(), any::<[u8; 16]>()).prop_filter("an id", |(_, n)| *n != [0; 16]).prop_map(|(bucket, to)| AdminRequest::Move { bucket, to }),
        any::<u32>().prop_map(|bucket| AdminRequest::CancelMove { bucket }),
        any::<[u8; 16]>().prop_filter("an id", |n| *n != [0; 16]).prop_map(|node| AdminRequest::Drain { node }),
        any::<bool>().prop_map(AdminRequest::Pause),
    ].prop_map(Req::ClusterAdmin);
    set_persist_roundtrip: prop::sample::select(vec![PersistMode::Never, PersistMode::OnLastStop, PersistMode::Always]).prop_map(Req::SetPersist);
}

/// An owned reply.
#[derive(Debug, Clone, PartialEq)]
enum Rep {
    Empty(Opcode),
    Hello(u8, Vec<u8>, Option<u32>),
    Value(u32, Vec<u8>),
    ValueWithHash(Opcode, u32, u64, Vec<u8>),
    Values(Vec<Option<(u32, u64, Vec<u8>)>>),
    Stored(Opcode, u64),
    Counter(Opcode, u64, u64),
    Stats(Vec<(String, String)>),
    Saved(u64, u64),
    Redirect(Opcode, u32, u64, [u8; 16], Vec<u8>),
    Message(Opcode, Status, Vec<u8>),
}

fn encode_reply(rep: &Rep, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let (opcode, status, body) = match rep {
        Rep::Values(entries) => {
            let mut w = MultiGetWriter::new(&mut out, id);
            for e in entries {
                match e {
                    None => w.miss(),
                    Some((f, h, v)) => {
                        w.hit_header(*f, *h, v.len() as u32);
                        w.buffer().extend_from_slice(v);
                    }
                }
            }
            drop(w);
            return out;
        }
        Rep::Stats(pairs) => {
            let mut w = StatsWriter::new(&mut out, id);
            for (n, v) in pairs {
                w.stat(n, v);
            }
            drop(w);
            return out;
        }
        Rep::Empty(op) => (*op, Status::Ok, ReplyBody::Empty),
        Rep::Hello(v, s, b) => (
            Opcode::Hello,
            Status::Ok,
            ReplyBody::Hello {
                version: *v,
                server: s,
                buckets: *b,
            },
        ),
        Rep::Value(f, v) => (
            Opcode::Get,
            Status::Ok,
            ReplyBody::Value {
                flags: *f,
                value: v,
            },
        ),
        Rep::ValueWithHash(op, f, h, v) => (
            *op,
            Status::Ok,
            ReplyBody::ValueWithHash(Found {
                flags: *f,
                hash: *h,
                value: v,
            }),
        ),
        Rep::Stored(op, h) => (*op, Status::Ok, ReplyBody::Stored { hash: *h }),
        Rep::Saved(items, bytes) => (
            Opcode::Save,
            Status::Ok,
            ReplyBody::Saved {
                items: *items,
                bytes: *bytes,
            },
        ),
        Rep::Counter(op, v, h) => (
            *op,
            Status::Ok,
            ReplyBody::Counter {
                value: *v,
                hash: *h,
            },
        ),
        Rep::Redirect(op, b, e, o, a) => (
            *op,
            Status::NotMyBucket,
            ReplyBody::Redirect(NotMyBucket {
                bucket: *b,
                epoch: *e,
                owner: *o,
                addr: a,
            }),
        ),
        Rep::Message(op, st, m) => (*op, *st, ReplyBody::Message(m)),
    };
    Reply {
        id,
        opcode,
        status,
        body,
    }
    .encode(&mut out);
    out
}

fn own_reply(r: &Reply<'_>) -> Rep {
    match r.body {
        ReplyBody::Empty => Rep::Empty(r.opcode),
        ReplyBody::Hello {
            version,
            server,
            buckets,
        } => Rep::Hello(version, server.into(), buckets),
        ReplyBody::Value { flags, value } => Rep::Value(flags, value.into()),
        ReplyBody::ValueWithHash(f) => {
            Rep::ValueWithHash(r.opcode, f.flags, f.hash, f.value.into())
        }
        ReplyBody::Values(list) => Rep::Values(
            list.iter()
                .map(|e| e.found().map(|f| (f.flags, f.hash, f.value.to_vec())))
                .collect(),
        ),
        ReplyBody::Stored { hash } => Rep::Stored(r.opcode, hash),
        ReplyBody::Saved { items, bytes } => Rep::Saved(items, bytes),
        ReplyBody::Counter { value, hash } => Rep::Counter(r.opcode, value, hash),
        ReplyBody::Stats(list) => Rep::Stats(
            list.iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
        ),
        ReplyBody::Redirect(n) => {
            Rep::Redirect(r.opcode, n.bucket, n.epoch, n.owner, n.addr.into())
        }
        ReplyBody::Table(_) | ReplyBody::NodeStatus(_) | ReplyBody::TableChanged { .. } => {
            unreachable!("not generated here (unit tests in proto/src/cluster.rs)")
        }
        ReplyBody::Message(m) => Rep::Message(r.opcode, r.status, m.into()),
    }
}

fn check_reply(rep: &Rep, id: u32) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    let bytes = encode_reply(rep, id);
    let (decoded, used) = decode_reply(&bytes, &limits)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?
        .ok_or_else(|| TestCaseError::fail("incomplete"))?;
    prop_assert_eq!(used, bytes.len());
    prop_assert_eq!(decoded.id, id);
    prop_assert_eq!(&own_reply(&decoded), rep);
    for cut in 0..bytes.len() {
        prop_assert!(decode_reply(&bytes[..cut], &limits)
            .expect("prefix")
            .is_none());
    }
    Ok(())
}

fn any_opcode() -> impl Strategy<Value = Opcode> {
    prop::sample::select(
        OPCODES
            .iter()
            .filter_map(|(n, _)| Opcode::from_u8(*n))
            .collect::<Vec<_>>(),
    )
}
fn error_status() -> impl Strategy<Value = Status> {
    prop::sample::select(
        STATUSES
            .iter()
            .filter_map(|(n, _)| Status::from_u16(*n))
            .filter(|s| !matches!(s, Status::Ok | Status::NotMyBucket | Status::TableChanged))
            .collect::<Vec<_>>(),
    )
}

macro_rules! reply_props {
    ($($name:ident: $strategy:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]
            $(
                #[test]
                fn $name(rep in $strategy, id in any::<u32>()) {
                    check_reply(&rep, id)?;
                }
            )*
        }
    };
}

reply_props! {
    empty_reply_roundtrip: prop::sample::select(vec![Opcode::Ping, Opcode::Goodbye, Opcode::Touch, Opcode::Delete, Opcode::SetPersist]).prop_map(Rep::Empty);
    saved_reply_roundtrip: (any::<u64>(), any::<u64>()).prop_map(|(i, b)| Rep::Saved(i, b));
    hello_reply_roundtrip: (any::<u8>(), short(), any::<Option<u32>>()).prop_map(|(v, s, b)| Rep::Hello(v, s, b));
    value_reply_roundtrip: (any::<u32>(), value()).prop_map(|(f, v)| Rep::Value(f, v));
    value_with_hash_reply_roundtrip: (prop::sample::select(vec![Opcode::GetWithHash, Opcode::GetAndTouch]), any::<u32>(), any::<u64>(), value()).prop_map(|(o, f, h, v)| Rep::ValueWithHash(o, f, h, v));
    multi_get_reply_roundtrip: prop::collection::vec(any::<Option<(u32, u64, Vec<u8>)>>(), 0..20).prop_map(Rep::Values);
    stored_reply_roundtrip: (prop::sample::select(vec![Opcode::Set, Opcode::Add, Opcode::Replace, Opcode::Cas, Opcode::Append, Opcode::Prepend]), any::<u64>()).prop_map(|(o, h)| Rep::Stored(o, h));
    counter_reply_roundtrip: (prop::sample::select(vec![Opcode::Incr, Opcode::Decr]), any::<u64>(), any::<u64>()).prop_map(|(o, v, h)| Rep::Counter(o, v, h));
    stats_reply_roundtrip: prop::collection::vec(("[a-z_]{1,20}", "[0-9]{0,20}"), 0..30).prop_map(Rep::Stats);
    redirect_reply_roundtrip: (any_opcode(), any::<u32>(), any::<u64>(), any::<[u8; 16]>(), short()).prop_map(|(o, b, e, id, s)| Rep::Redirect(o, b, e, id, s));
    message_reply_roundtrip: (any_opcode(), error_status(), short()).prop_map(|(o, st, m)| Rep::Message(o, st, m));
}

#[test]
fn ten_thousand_pipelined_frames_decode_in_order() {
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for i in 0..10_000u32 {
        let key = format!("key:{i}");
        let value = vec![b'v'; (i % 97) as usize];
        let command = match i % 3 {
            0 => Command::Get {
                key: key.as_bytes(),
            },
            1 => Command::Store {
                mode: StoreMode::Set,
                key: key.as_bytes(),
                value: &value,
                flags: i,
                ttl: 0,
            },
            _ => Command::Ping,
        };
        Request { id: i, command }.encode(&mut buf);
        ends.push(buf.len());
    }
    let mut at = 0;
    for (i, end) in ends.iter().enumerate() {
        let (req, used) = decode_request(&buf[at..], &limits).unwrap().unwrap();
        assert_eq!(req.id, i as u32);
        at += used;
        assert_eq!(at, *end, "frame {i} consumed the wrong number of bytes");
    }
    assert_eq!(at, buf.len());
    assert!(decode_request(&buf[at..], &limits).unwrap().is_none());
}

#[test]
fn frame_boundary_at_every_offset_of_a_read_buffer() {
    // Simulates a reader whose reads end at every possible offset: the stream decodes the same.
    let limits = Limits::default();
    let mut stream = Vec::new();
    for i in 0..50u32 {
        Request {
            id: i,
            command: Command::Get {
                key: format!("k{i}").as_bytes(),
            },
        }
        .encode(&mut stream);
    }
    for chunk in 1..40 {
        let mut pending: Vec<u8> = Vec::new();
        let mut ids = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            while let Some((req, used)) = decode_request(&pending, &limits).unwrap() {
                ids.push(req.id);
                pending.drain(..used);
            }
        }
        assert_eq!(ids, (0..50).collect::<Vec<_>>(), "chunk size {chunk}");
    }
}
