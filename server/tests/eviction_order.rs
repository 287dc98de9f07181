//! Eviction order through a real server (issue 20): after a memcached client fills the
//! cache many times over with values from 100 bytes to 500 KB, the most recently written
//! keys are all readable over the socket, with their values.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shoald::testing::TestServer;
use shoald::Config;

/// Deterministic log-uniform sizes between `lo` and `hi` (xorshift64*).
fn sizes(mut state: u64, n: usize, lo: f64, hi: f64) -> Vec<usize> {
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
            (lo.ln() + (hi.ln() - lo.ln()) * x).exp() as usize
        })
        .collect()
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("reply line");
    s
}

#[test]
fn recently_written_keys_survive_a_full_cache_over_the_socket() {
    let memory = 64usize << 20;
    let server = TestServer::start(Config {
        memory,
        ..Config::default()
    });
    let addr = server.memcache_addr.expect("memcached port");
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let sizes = sizes(0x005e_ed0f_ca11_ab1e, 2_500, 100.0, 500.0 * 1024.0);
    let total: usize = sizes.iter().sum();
    assert!(
        total > 2 * memory,
        "the run fills the cache more than twice"
    );
    for (i, &len) in sizes.iter().enumerate() {
        let mut req = format!("set key{i} 0 0 {len}\r\n").into_bytes();
        req.resize(req.len() + len, b'a' + (i % 26) as u8);
        req.extend_from_slice(b"\r\n");
        w.write_all(&req).expect("send set");
        assert_eq!(line(&mut r), "STORED\r\n", "set key{i} ({len} bytes)");
    }
    // The most recent writes adding up to a quarter of the memory.
    let (mut bytes, mut checked, mut lost) = (0, 0, Vec::new());
    for (i, &len) in sizes.iter().enumerate().rev() {
        bytes += len;
        if bytes > memory / 4 {
            break;
        }
        checked += 1;
        w.write_all(format!("get key{i}\r\n").as_bytes())
            .expect("send get");
        let head = line(&mut r);
        if head == "END\r\n" {
            lost.push((sizes.len() - 1 - i, len));
            continue;
        }
        assert_eq!(head, format!("VALUE key{i} 0 {len}\r\n"));
        let mut value = vec![0u8; len + 2];
        r.read_exact(&mut value).expect("value");
        assert!(value[..len].iter().all(|&b| b == b'a' + (i % 26) as u8));
        assert_eq!(line(&mut r), "END\r\n");
    }
    assert!(checked > 50, "{checked}");
    assert!(
        lost.is_empty(),
        "{} of the {checked} most recent keys were evicted; (age in writes, size): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
