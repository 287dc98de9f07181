//! The C test programs in `tests/c/` and the example in `examples/`, compiled with the system
//! `cc` against `include/shoal.h` and `libshoal.a`, each run against a real `shoald`.
//!
//! Environment:
//! - `SHOAL_C_VALGRIND=1`: run every C program under valgrind (memcheck); any error or
//!   "definitely lost" block fails the test.
//! - `SHOAL_C_ASAN=1`: compile the C programs with `-fsanitize=address,undefined` (the Rust
//!   staticlib links as is; its allocations go through the system malloc that ASan replaces).
//! - `SHOAL_C_CYCLES=n`: connect / fail / reconnect cycles of the `cycles` program (default
//!   10,000).
//!
//! `.ci/run` runs this file once plain (inside `cargo test --workspace`), once with valgrind
//! and once with ASan.

// The 5-node cluster harness of the workspace tests (real shoald processes).
#[path = "../../tests/tests/cluster_common/mod.rs"]
mod cluster_common;

use shoal_tests::ServerProcess;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How a C program is built and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Valgrind,
    Asan,
}

fn mode() -> Mode {
    let on = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    match (on("SHOAL_C_VALGRIND"), on("SHOAL_C_ASAN")) {
        (true, true) => panic!("set SHOAL_C_VALGRIND or SHOAL_C_ASAN, not both"),
        (true, false) => Mode::Valgrind,
        (false, true) => Mode::Asan,
        (false, false) => Mode::Plain,
    }
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`: test executables live in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The static library, `target/<profile>/libshoal.a`, built fresh once per test process:
/// `cargo test` compiles the library's staticlib but does not copy it to `target/<profile>/`,
/// so a stale copy from an earlier `cargo build` could be linked otherwise. The build is a
/// no-op when nothing changed.
fn staticlib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "shoal-client-c", "--lib"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo").success(),
            "cargo build failed"
        );
        let lib = dir.join("libshoal.a");
        assert!(lib.exists(), "{} not found", lib.display());
        lib
    })
}

/// Compiles `source` (relative to the crate) into an executable for the current mode.
fn compile(source: &str) -> PathBuf {
    let mode = mode();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-{mode:?}").to_lowercase());
    std::fs::create_dir_all(&out_dir).expect("create output dir");
    let name = Path::new(source).file_stem().expect("file name");
    let exe = out_dir.join(name);
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args([
        "-std=c11",
        "-D_DEFAULT_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
        "-O1",
    ])
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg(crate_dir().join(source));
    if mode == Mode::Asan {
        cc.args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]);
    }
    cc.arg(staticlib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe);
    let output = cc.output().expect("run cc");
    assert!(
        output.status.success(),
        "cc {source} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// A command that runs `exe` in the current mode (under valgrind when asked).
fn command(exe: &Path) -> Command {
    match mode() {
        Mode::Valgrind => {
            let mut cmd = Command::new("valgrind");
            cmd.args([
                "--quiet",
                "--error-exitcode=99",
                "--leak-check=full",
                "--show-leak-kinds=definite",
                "--errors-for-leak-kinds=definite",
                "--fair-sched=yes",
            ])
            .arg(exe);
            cmd
        }
        Mode::Asan => {
            let mut cmd = Command::new(exe);
            cmd.env(
                "ASAN_OPTIONS",
                "detect_leaks=1:abort_on_error=0:exitcode=98",
            )
            .env(
                "UBSAN_OPTIONS",
                "print_stacktrace=1:halt_on_error=1:exitcode=97",
            );
            cmd
        }
        Mode::Plain => Command::new(exe),
    }
}

/// Kills a child process if it is still running after `limit`, so a hung C program fails the
/// test instead of hanging it.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn new(pid: u32, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("watchdog: killing C program {pid} after {limit:?}");
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        Self { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Time limit for one C program.
fn limit() -> Duration {
    match mode() {
        Mode::Valgrind => Duration::from_secs(1800),
        _ => Duration::from_secs(300),
    }
}

/// Runs a non-interactive program to completion and checks it succeeded.
fn run_ok(exe: &Path, args: &[&str]) -> Output {
    let child = command(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start C program");
    let _watchdog = Watchdog::new(child.id(), limit());
    let output = child.wait_with_output().expect("wait for C program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{} {args:?} failed ({:?}):\n{stdout}\n{stderr}",
        exe.display(),
        output.status
    );
    output
}

fn server() -> ServerProcess {
    ServerProcess::start(&["--memcache-listen", "off"])
}

#[test]
fn every_operation_null_arguments_binary_and_limits() {
    let exe = compile("tests/c/ops.c");
    let server = server();
    run_ok(&exe, &[&server.native_addr.to_string()]);
}

#[test]
fn one_client_shared_by_threads() {
    let exe = compile("tests/c/threads.c");
    let server = server();
    run_ok(&exe, &[&server.native_addr.to_string()]);
}

#[test]
fn example_program_runs() {
    let exe = compile("examples/basic.c");
    let server = server();
    let output = run_ok(&exe, &[&server.native_addr.to_string()]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("hello, shoal"));
}

#[test]
fn connect_fail_reconnect_cycles() {
    let cycles = std::env::var("SHOAL_C_CYCLES").unwrap_or_else(|_| "10000".into());
    let exe = compile("tests/c/cycles.c");
    let server = server();
    // A port nothing listens on: bind one, note it, close it.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let output = run_ok(
        &exe,
        &[&server.native_addr.to_string(), &dead.to_string(), &cycles],
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("cycles passed"));
}

/// Drives `reconnect.c`: stops the server gracefully, kills it twice, restarting it on the
/// same port each time while the program keeps calling; then keeps it down longer than the
/// deadline; then brings it back.
#[test]
fn server_stop_kill_and_restart_cost_at_most_the_call_in_flight() {
    let exe = compile("tests/c/reconnect.c");
    let mut server = server();
    let addr = server.native_addr.to_string();
    // The deadline must cover a restart of shoald; the slack is the promise's 100 ms, more
    // when valgrind slows the program down.
    let slack = if mode() == Mode::Valgrind {
        "2000"
    } else {
        "100"
    };
    let mut child: Child = command(&exe)
        .args([&addr, "10000", "3000", slack])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start reconnect");
    let _watchdog = Watchdog::new(child.id(), limit());
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut reply = |text: &str| {
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .expect("write to the C program");
        stdin.flush().expect("flush");
    };
    let mut result = None;
    let mut fails = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("read C program output");
        println!("reconnect: {line}");
        match line.as_str() {
            "EVENT 1" => {
                let status = server.terminate(Duration::from_secs(10));
                assert!(status.success(), "graceful stop: {status:?}");
                server.restart();
                reply("DONE 1");
            }
            "EVENT 2" | "EVENT 3" => {
                server.kill();
                server.restart();
                reply(&format!("DONE {}", &line[6..]));
            }
            "DOWN?" => {
                // `kill` reaps the process, so its port refuses connections from here on.
                // The clients may not have seen their connections close yet: reconnect.c
                // makes its first call on each idempotent, so either order passes.
                server.kill();
                reply("DOWN");
            }
            "UP?" => {
                server.restart();
                reply("UP");
            }
            _ if line.starts_with("FAIL ") => fails.push(line),
            _ if line.starts_with("RESULT ") => result = Some(line),
            _ => {}
        }
    }
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "reconnect.c failed ({status:?}); failures: {fails:#?}"
    );
    let result = result.expect("a RESULT line");
    assert!(fails.len() <= 3, "{fails:#?}");
    println!("{result}");
}

/// Key `i`'s value in `routing.c`: `1 + i*7 % 300` bytes, byte `j` = `(i*31 + j*7) & 0xff`.
fn routing_value(i: u32) -> Vec<u8> {
    let len = 1 + (i.wrapping_mul(7) % 300) as usize;
    (0..len)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j as u32 * 7) & 0xff) as u8)
        .collect()
}

/// A 5-node cluster and one seed: 20,000 keys written through `shoal-client` each land on
/// their bucket's owner (every node holds exactly the keys of the buckets the table gives
/// it), and `routing.c`, given the same single seed, reads every one back byte for byte
/// through `libshoal`, and pymemcache reads every one back through every node's memcached
/// port (forwarded to the owner when the node does not own it).
#[test]
fn a_c_program_given_one_seed_reads_back_keys_spread_over_a_five_node_cluster() {
    const KEYS: u32 = 20_000;
    let exe = compile("tests/c/routing.c");
    let cluster = cluster_common::Cluster::start(5, &[]);
    let seed = cluster.members[2].native().to_string();
    let client = shoal_client::Client::builder()
        .seed(seed.clone())
        .deadline(Duration::from_secs(10))
        .build_blocking()
        .expect("client");
    for i in 0..KEYS {
        client
            .set(format!("route-{i}"), routing_value(i), 0, i)
            .expect("set");
    }
    let table = cluster.members[0].table().expect("table");
    let mut want = vec![0u64; table.nodes.len()];
    for i in 0..KEYS {
        let buckets = table.buckets.len() as u32;
        let bucket = shoal_proto::hash::bucket_of(format!("route-{i}").as_bytes(), buckets);
        want[usize::from(table.buckets[bucket as usize].primary)] += 1;
    }
    for m in &cluster.members {
        let status = m.status().expect("status");
        let index = table
            .nodes
            .iter()
            .position(|n| n.id == status.node_id)
            .expect("member in the table");
        assert_eq!(
            status.items, want[index],
            "node {} holds the keys of its buckets",
            table.nodes[index].native
        );
    }
    assert_eq!(want.iter().sum::<u64>(), u64::from(KEYS));
    assert!(want.iter().all(|&n| n > 0), "{want:?}");
    let output = run_ok(&exe, &[&seed, &KEYS.to_string()]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("20000 keys verified"));
    // And through every node's memcached port, with pymemcache (CI installs it).
    let readback = r#"
import sys
from pymemcache.client.base import Client
keys = int(sys.argv[1])
def value(i):
    return bytes(((i * 31 + j * 7) & 0xff) for j in range(1 + (i * 7) % 300))
for addr in sys.argv[2:]:
    host, port = addr.rsplit(":", 1)
    c = Client((host, int(port)), connect_timeout=5, timeout=10)
    for start in range(0, keys, 1000):
        names = [f"route-{i}" for i in range(start, min(keys, start + 1000))]
        got = c.get_many(names)
        for i, name in zip(range(start, start + len(names)), names):
            assert got.get(name) == value(i), f"{name} through {addr}"
print("read back through", len(sys.argv) - 2, "memcached ports")
"#;
    let has_pymemcache = Command::new("python3")
        .args(["-c", "import pymemcache"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pymemcache {
        println!("SKIPPED: pymemcache is not installed; CI installs it");
        return;
    }
    let mut args = vec!["-c".to_string(), readback.to_string(), KEYS.to_string()];
    for m in &cluster.members {
        args.push(m.proc.memcache_addr.expect("memcached port").to_string());
    }
    let out = Command::new("python3")
        .args(&args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pymemcache read-back failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `install.sh` into a scratch prefix, then the example built with the flags `pkg-config`
/// gives for `shoal.pc`, linked against `libshoal.so`, runs.
#[test]
fn installed_shared_library_links_through_pkg_config() {
    let lib = staticlib();
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install-prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let mut install = Command::new("bash");
    install
        .arg(crate_dir().join("install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-build");
    if !profile_dir().ends_with("release") {
        install.arg("--debug");
    }
    // install.sh reads target/<profile>: point it at this test's target directory.
    let target_dir = profile_dir().parent().expect("target dir").to_path_buf();
    let status = install
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("run install.sh");
    assert!(status.success(), "install.sh failed");
    assert!(prefix.join("lib/libshoal.a").exists() && lib.exists());

    let pkg = Command::new("pkg-config")
        .args(["--cflags", "--libs", "shoal"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run pkg-config");
    assert!(
        pkg.status.success(),
        "pkg-config: {}",
        String::from_utf8_lossy(&pkg.stderr)
    );
    let flags = String::from_utf8(pkg.stdout).expect("flags");
    let version = Command::new("pkg-config")
        .args(["--modversion", "shoal"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run pkg-config");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );

    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("basic-shared");
    let cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .arg(crate_dir().join("examples/basic.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );

    let server = server();
    let child = command(&exe)
        .arg(server.native_addr.to_string())
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start example");
    let _watchdog = Watchdog::new(child.id(), limit());
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("hello, shoal"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
