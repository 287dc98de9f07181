//! Helpers shared by the savefile tests: a temporary data directory, a deterministic data
//! set, pipelined native-protocol traffic, and the admin requests.

#![allow(dead_code)]

use shoal_proto::{Command, Reply, ReplyBody, Request, Status, StoreMode};
use shoal_tests::RawConn;

pub use shoald::testing::TempDir;

/// Deterministic bytes for item `seed`, `len` long (xorshift, fast enough for 100s of MB).
pub fn value_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How many requests are in flight at once on a pipelined connection.
const WINDOW: usize = 256;

/// Sends `commands` pipelined (up to [`WINDOW`] in flight) and hands each reply, with the
/// index of its request, to `f`.
pub fn pipeline<'a>(
    conn: &mut RawConn,
    commands: impl IntoIterator<Item = Command<'a>>,
    mut f: impl FnMut(usize, &Reply<'_>),
) {
    let mut out = Vec::new();
    let mut sent = 0usize;
    let mut received = 0usize;
    for command in commands {
        Request {
            id: sent as u32,
            command,
        }
        .encode(&mut out);
        sent += 1;
        if sent - received >= WINDOW {
            conn.send_raw(&out);
            out.clear();
            while received < sent {
                conn.recv(|r| {
                    assert_eq!(r.id as usize, received, "replies come in order");
                    f(received, r)
                });
                received += 1;
            }
        }
    }
    conn.send_raw(&out);
    while received < sent {
        conn.recv(|r| f(received, r));
        received += 1;
    }
}

/// SET with the given ttl; returns the stored hash.
pub fn set(conn: &mut RawConn, key: &[u8], value: &[u8], flags: u32, ttl: u32) -> u64 {
    conn.send(&Request {
        id: 1,
        command: Command::Store {
            mode: StoreMode::Set,
            key,
            value,
            flags,
            ttl,
        },
    });
    conn.recv(|r| match r.body {
        ReplyBody::Stored { hash } => hash,
        _ => panic!("SET failed: {:?}", r.status),
    })
}

/// GETH: `(flags, hash, value)` or `None` for a miss.
pub fn get(conn: &mut RawConn, key: &[u8]) -> Option<(u32, u64, Vec<u8>)> {
    conn.send(&Request {
        id: 2,
        command: Command::GetWithHash { key },
    });
    conn.recv(|r| match (r.status, r.body) {
        (Status::Ok, ReplyBody::ValueWithHash(f)) => Some((f.flags, f.hash, f.value.to_vec())),
        (Status::NotFound, _) => None,
        other => panic!("GETH failed: {other:?}"),
    })
}

/// SAVE: `Ok((items, bytes))` or the error status and message.
pub fn save(conn: &mut RawConn) -> Result<(u64, u64), (Status, String)> {
    conn.send(&Request {
        id: 3,
        command: Command::Save,
    });
    conn.recv(|r| match r.body {
        ReplyBody::Saved { items, bytes } => Ok((items, bytes)),
        ReplyBody::Message(m) => Err((r.status, String::from_utf8_lossy(m).into_owned())),
        _ => panic!("unexpected SAVE reply {:?}", r.status),
    })
}

/// A STATS value by name.
pub fn stat(conn: &mut RawConn, name: &str) -> Option<String> {
    conn.send(&Request {
        id: 4,
        command: Command::Stats { group: b"" },
    });
    conn.recv(|r| match r.body {
        ReplyBody::Stats(list) => list
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
        _ => panic!("STATS failed"),
    })
}

/// Seconds since the unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
