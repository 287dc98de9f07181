//! R15, crash-safe savefile: SIGKILL at a random moment of a SAVE, 20 trials with a fixed
//! seed. Each trial first writes a complete savefile (version A), changes the data (version
//! B), starts a second SAVE and kills the node part-way. The next start must load A or B
//! completely (checked key by key), never a mix or a partial file, and leave no temporary file.

mod savefile_common;

use std::time::{Duration, Instant};

use savefile_common::*;
use shoal_proto::{Command, ReplyBody, Request, Status, StoreMode};
use shoal_tests::{RawConn, ServerProcess};

const TRIALS: usize = 20;
const BASE_KEYS: usize = 12_000;
const PROBES: usize = 200;

fn start(dir: &TempDir) -> ServerProcess {
    ServerProcess::start(&[
        "--data-dir",
        &dir.arg(),
        "--memory",
        "512MiB",
        "--max-value-size",
        "64KiB",
    ])
}

fn base_key(i: usize) -> Vec<u8> {
    format!("base:{i}").into_bytes()
}

/// About 100 MB of base data, so a save takes long enough to be interrupted.
fn base_size(i: usize) -> usize {
    1 + (i * 7919) % 16_000
}

fn probe_value(trial: usize, version: char, j: usize) -> Vec<u8> {
    format!("{trial}-{version}-{j}").into_bytes()
}

fn write_base(conn: &mut RawConn) {
    let keys: Vec<Vec<u8>> = (0..BASE_KEYS).map(base_key).collect();
    let values: Vec<Vec<u8>> = (0..BASE_KEYS)
        .map(|i| value_bytes(i as u64, base_size(i)))
        .collect();
    pipeline(
        conn,
        (0..BASE_KEYS).map(|i| Command::Store {
            mode: StoreMode::Set,
            key: &keys[i],
            value: &values[i],
            flags: i as u32,
            ttl: 0,
        }),
        |i, r| assert_eq!(r.status, Status::Ok, "SET base {i}"),
    );
}

/// Writes version `version` of the trial's changing keys.
fn write_version(conn: &mut RawConn, trial: usize, version: char) {
    let keys: Vec<Vec<u8>> = (0..PROBES)
        .map(|j| format!("probe:{j}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..PROBES)
        .map(|j| probe_value(trial, version, j))
        .collect();
    pipeline(
        conn,
        (0..PROBES).map(|j| Command::Store {
            mode: StoreMode::Set,
            key: &keys[j],
            value: &values[j],
            flags: 0,
            ttl: 0,
        }),
        |_, r| assert_eq!(r.status, Status::Ok),
    );
    set(
        conn,
        b"generation",
        format!("{trial}-{version}").as_bytes(),
        0,
        0,
    );
}

/// Which version the node holds, after checking that it holds exactly that version.
fn check_node(conn: &mut RawConn, trial: usize) -> char {
    let generation = get(conn, b"generation").expect("a complete savefile was loaded");
    let text = String::from_utf8(generation.2).expect("ascii");
    let version = if text == format!("{trial}-a") {
        'a'
    } else if text == format!("{trial}-b") {
        'b'
    } else {
        panic!("trial {trial}: generation {text:?} is neither this trial's A nor B");
    };
    let keys: Vec<Vec<u8>> = (0..PROBES)
        .map(|j| format!("probe:{j}").into_bytes())
        .collect();
    pipeline(
        conn,
        keys.iter().map(|k| Command::GetWithHash { key: k }),
        |j, r| match r.body {
            ReplyBody::ValueWithHash(f) => assert_eq!(
                f.value,
                probe_value(trial, version, j).as_slice(),
                "trial {trial}: probe {j} is not from version {version}"
            ),
            _ => panic!("trial {trial}: probe {j} missing"),
        },
    );
    let keys: Vec<Vec<u8>> = (0..BASE_KEYS).map(base_key).collect();
    pipeline(
        conn,
        keys.iter().map(|k| Command::GetWithHash { key: k }),
        |i, r| match r.body {
            ReplyBody::ValueWithHash(f) => {
                assert_eq!(f.flags, i as u32);
                assert!(
                    f.value == value_bytes(i as u64, base_size(i)).as_slice(),
                    "trial {trial}: base key {i} differs"
                );
            }
            _ => panic!("trial {trial}: base key {i} missing"),
        },
    );
    assert_eq!(
        stat(conn, "curr_items"),
        Some((BASE_KEYS + PROBES + 1).to_string())
    );
    version
}

#[test]
fn sigkill_during_save_leaves_the_previous_or_the_new_complete_savefile() {
    let dir = TempDir::new("savefile-crash");
    let mut server = start(&dir);
    let mut conn = RawConn::hello(server.native_addr);
    write_base(&mut conn);
    let mut rng: u64 = 0x5EED_CA5E;
    let mut outcomes = Vec::new();
    for trial in 0..TRIALS {
        // Version A, saved completely; its duration sets the range of kill moments.
        write_version(&mut conn, trial, 'a');
        let started = Instant::now();
        save(&mut conn).expect("SAVE A");
        let took = started.elapsed();
        // Version B, and a save killed at a random moment (up to 1.2x a full save).
        write_version(&mut conn, trial, 'b');
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = took.mul_f64((rng % 1200) as f64 / 1000.0);
        conn.send(&Request {
            id: 9,
            command: Command::Save,
        });
        std::thread::sleep(kill_after);
        server.kill();
        drop(conn);

        let names = dir.names();
        let tmp_left = names.contains(&"savefile.tmp".to_string());
        server = start(&dir);
        conn = RawConn::hello(server.native_addr);
        let version = check_node(&mut conn, trial);
        let names = dir.names();
        assert!(!names.contains(&"savefile.tmp".to_string()), "{names:?}");
        assert!(!names.contains(&"savefile".to_string()), "{names:?}");
        outcomes.push((kill_after, tmp_left, version));
    }
    let b = outcomes.iter().filter(|o| o.2 == 'b').count();
    let cut = outcomes.iter().filter(|o| o.1).count();
    eprintln!(
        "{TRIALS} trials: {} loaded A, {b} loaded B; {cut} kills left a partial temp file",
        TRIALS - b
    );
    for (after, tmp, version) in &outcomes {
        eprintln!("  killed after {after:?}: temp file left {tmp}, loaded {version}");
    }
    assert!(
        cut > 0,
        "no kill landed inside a save; the test did not test anything"
    );
    drop(server);
    let _ = Duration::ZERO;
}
