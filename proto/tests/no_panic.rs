//! The decoder never panics: 100,000+ random and mutated frames through both decoders.

use shoal_proto::*;

/// A small deterministic generator (xorshift), so failures reproduce without a new dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let commands = [
        Command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: b"fuzz",
            auth: b"",
        },
        Command::Ping,
        Command::Goodbye,
        Command::Stats { group: b"" },
        Command::Get { key: b"key" },
        Command::GetWithHash { key: b"key" },
        Command::Touch {
            key: b"key",
            ttl: 5,
        },
        Command::GetAndTouch {
            key: b"key",
            ttl: 5,
        },
        Command::Store {
            mode: StoreMode::Set,
            key: b"key",
            value: b"value",
            flags: 1,
            ttl: 2,
        },
        Command::Cas {
            key: b"key",
            value: b"value",
            flags: 1,
            ttl: 2,
            expected: 3,
        },
        Command::Concat {
            prepend: true,
            key: b"key",
            value: b"xy",
        },
        Command::Delete {
            key: b"key",
            expected: Some(9),
        },
        Command::Counter {
            decr: true,
            key: b"key",
            delta: 1,
            create: Some((0, 0)),
        },
    ];
    for command in commands {
        let mut f = Vec::new();
        Request { id: 1, command }.encode(&mut f);
        out.push(f);
    }
    let mut f = Vec::new();
    encode_multi_get(&mut f, 2, [&b"a"[..], b"bb", b"ccc"]);
    out.push(f);
    let mut f = Vec::new();
    let mut w = MultiGetWriter::new(&mut f, 3);
    w.miss();
    w.hit_header(1, 2, 3);
    w.buffer().extend_from_slice(b"abc");
    drop(w);
    out.push(f);
    out
}

fn decode_all(buf: &[u8], limits: &Limits) {
    let mut at = 0;
    while at < buf.len() {
        match decode_request(&buf[at..], limits) {
            Ok(Some((_, used))) => at += used,
            Ok(None) => break,
            Err(e) => match e.skip {
                Some(n) => at += n,
                None => break,
            },
        }
    }
    let mut at = 0;
    while at < buf.len() {
        match decode_reply(&buf[at..], limits) {
            Ok(Some((reply, used))) => {
                if let ReplyBody::Values(list) = reply.body {
                    assert!(list.iter().count() == list.len());
                }
                at += used;
            }
            _ => break,
        }
    }
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let limits = Limits::for_value_size(4096);
    let seeds = seeds();
    let mut rng = Rng(0x05EE_D0F5_A0A1);
    let mut runs = 0;
    for _ in 0..60_000 {
        let mut buf = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            if buf.is_empty() {
                buf.push(MAGIC);
            }
            match rng.below(5) {
                0 => {
                    let i = rng.below(buf.len());
                    buf[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(buf.len());
                    buf[i] = rng.next() as u8;
                }
                2 => buf.truncate(rng.below(buf.len() + 1)),
                3 => {
                    let extra = rng.below(16);
                    buf.extend((0..extra).map(|_| rng.next() as u8));
                }
                _ => {
                    // Mutate a length field to an extreme.
                    if buf.len() >= 16 {
                        let v = [0u32, 1, 255, 1 << 31, u32::MAX][rng.below(5)];
                        buf[12..16].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
        }
        decode_all(&buf, &limits);
        runs += 1;
    }
    for _ in 0..50_000 {
        let len = rng.below(64);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if !buf.is_empty() && rng.below(2) == 0 {
            buf[0] = MAGIC;
            if buf.len() > 1 {
                buf[1] = PROTOCOL_VERSION;
            }
        }
        decode_all(&buf, &limits);
        runs += 1;
    }
    assert!(runs >= 100_000);
}
