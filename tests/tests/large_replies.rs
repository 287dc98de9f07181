//! Replies far larger than the output buffer stream out as the client reads them, on both
//! protocols, with the server's memory bounded: a multi-get of 10 MB and of 100 MB, read by a
//! fast client and by a slow one (64 KiB every 10 ms). Before the fix, a text multi-get stopped
//! at about 1 MiB of reply and the rest never came.

use shoal_proto::hash::value_hash;
use shoal_proto::{encode_multi_get, MultiGetWriter};
use shoal_tests::{rss_of, set_all_text, ServerProcess};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Items in the data set, and each value's size: 1000 x 100 kB = 100 MB.
const KEYS: usize = 1000;
const VALUE: usize = 100_000;
/// The server may grow by less than this while it answers.
const RSS_GROWTH_LIMIT: u64 = 64 << 20;

fn key(i: usize) -> String {
    format!("k{i:04}")
}

fn value(i: usize) -> Vec<u8> {
    (0..VALUE).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// How the client reads.
#[derive(Clone, Copy, Debug)]
enum Reader {
    Fast,
    /// 64 KiB every 10 ms.
    Slow,
}

/// Sends `request`, reads exactly `want.len()` bytes as `reader` does, checks them, and
/// returns the server's largest RSS growth meanwhile.
fn exchange(
    server: &ServerProcess,
    addr: std::net::SocketAddr,
    request: &[u8],
    want: &[u8],
    reader: Reader,
) -> u64 {
    let before = server.rss_bytes().expect("rss");
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let pid = server.pid().expect("running");
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    c.write_all(request).expect("write");
    let mut got = Vec::with_capacity(want.len());
    let mut chunk = vec![0u8; 64 << 10];
    while got.len() < want.len() {
        let room = (want.len() - got.len()).min(chunk.len());
        let n = match reader {
            Reader::Fast => c.read(&mut chunk[..room]).expect("read"),
            Reader::Slow => {
                let mut filled = 0;
                while filled < room {
                    let n = c.read(&mut chunk[filled..room]).expect("read");
                    assert!(
                        n > 0,
                        "closed after {} of {} bytes",
                        got.len() + filled,
                        want.len()
                    );
                    filled += n;
                }
                // The pace of a slow client, not a wait for a condition.
                std::thread::sleep(Duration::from_millis(10));
                filled
            }
        };
        assert!(
            n > 0,
            "server closed after {} of {} bytes",
            got.len(),
            want.len()
        );
        got.extend_from_slice(&chunk[..n]);
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert!(got == want, "reply differs from the expected bytes");
    peak.load(Ordering::Relaxed).saturating_sub(before)
}

/// `get` of the first `n` keys, and its exact reply.
fn text_multi_get(n: usize) -> (Vec<u8>, Vec<u8>) {
    let keys: Vec<String> = (0..n).map(key).collect();
    let request = format!("get {}\r\n", keys.join(" ")).into_bytes();
    let mut reply = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        reply.extend_from_slice(format!("VALUE {k} 0 {VALUE}\r\n").as_bytes());
        reply.extend_from_slice(&value(i));
        reply.extend_from_slice(b"\r\n");
    }
    reply.extend_from_slice(b"END\r\n");
    (request, reply)
}

/// A pipeline of HELLO and MGETs of 10 keys each over the first `n` keys (each reply about
/// 1 MB, under the frame limit), and the exact replies.
fn native_multi_get(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut request = Vec::new();
    let mut reply = Vec::new();
    shoal_proto::Request {
        id: 0,
        command: shoal_proto::Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"large-replies",
            auth: b"",
        },
    }
    .encode(&mut request);
    shoal_proto::Reply {
        id: 0,
        opcode: shoal_proto::Opcode::Hello,
        status: shoal_proto::Status::Ok,
        body: shoal_proto::ReplyBody::Hello {
            version: shoal_proto::PROTOCOL_VERSION,
            server: shoald::net::native::SERVER_NAME.as_bytes(),
            buckets: Some(1024),
        },
    }
    .encode(&mut reply);
    for (batch, first) in (0..n).step_by(10).enumerate() {
        let id = batch as u32 + 1;
        let keys: Vec<String> = (first..(first + 10).min(n)).map(key).collect();
        encode_multi_get(&mut request, id, keys.iter().map(|k| k.as_bytes()));
        let mut w = MultiGetWriter::new(&mut reply, id);
        for i in first..(first + 10).min(n) {
            let v = value(i);
            w.hit_header(0, value_hash(&v), VALUE as u32);
            w.buffer().extend_from_slice(&v);
        }
    }
    (request, reply)
}

#[test]
fn multi_gets_of_10_and_100_mb_stream_out_on_both_protocols() {
    let server = ServerProcess::start(&["--memory", "192MiB"]);
    let memcache = server.memcache_addr.expect("memcached port");
    set_all_text(memcache, (0..KEYS).map(|i| (key(i), value(i))));
    let text = memcache;
    let native = server.native_addr;
    for n in [100, KEYS] {
        for reader in [Reader::Fast, Reader::Slow] {
            let (request, reply) = text_multi_get(n);
            let growth = exchange(&server, text, &request, &reply, reader);
            eprintln!(
                "text   {:>3} MB {reader:?}: RSS grew {} KiB",
                n / 10,
                growth >> 10
            );
            assert!(
                growth < RSS_GROWTH_LIMIT,
                "text {n} {reader:?}: RSS grew {growth} bytes"
            );
            let (request, reply) = native_multi_get(n);
            let growth = exchange(&server, native, &request, &reply, reader);
            eprintln!(
                "native {:>3} MB {reader:?}: RSS grew {} KiB",
                n / 10,
                growth >> 10
            );
            assert!(
                growth < RSS_GROWTH_LIMIT,
                "native {n} {reader:?}: RSS grew {growth} bytes"
            );
        }
    }
}
