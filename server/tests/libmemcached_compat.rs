//! The libmemcached command-line clients (memcstat, memccp, memccat, memcrm from
//! libmemcached-tools) against the memcached text port of an in-process server. libmemcached
//! is the C library under PHP memcached, pylibmc and others; it checks the server's version
//! before it talks; `memccapable -a` is its protocol conformance checker. Skips, saying why,
//! only when the tools are missing; CI installs them.

use shoald::testing::TestServer;
use shoald::Config;
use std::process::{Command, Output};

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

fn ok(name: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{name} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn libmemcached_clients_work_against_the_text_port() {
    if Command::new("memcstat").arg("--help").output().is_err() {
        println!("SKIPPED: libmemcached-tools (memcstat, memccp, memccat) are not installed");
        return;
    }
    let server = TestServer::start(Config::default());
    let addr = server
        .memcache_addr
        .expect("memcached listener")
        .to_string();
    let servers = format!("--servers={addr}");

    let stats = ok("memcstat", &tool("memcstat", &[&servers]));
    assert!(stats.contains("version: 1.6.18-shoald-"), "{stats}");

    let dir = std::env::temp_dir().join(format!("shoal-libmemcached-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("greeting");
    let content = b"hello from libmemcached\n\0binary tail";
    std::fs::write(&file, content).expect("write file");
    ok(
        "memccp",
        &tool("memccp", &[&servers, file.to_str().expect("utf-8 path")]),
    );
    let got = tool("memccat", &[&servers, "greeting"]);
    ok("memccat", &got);
    // memccat prints the value and then a newline (it does the same against memcached).
    let mut want = content.to_vec();
    want.push(b'\n');
    assert_eq!(got.stdout, want, "value read back byte-exact");
    ok("memcrm", &tool("memcrm", &[&servers, "greeting"]));
    let gone = tool("memccat", &[&servers, "greeting"]);
    assert!(
        !gone.status.success() || gone.stdout.is_empty(),
        "deleted key is gone"
    );
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[test]
fn memccapable_ascii_passes_every_test() {
    if Command::new("memccapable").arg("-h").output().is_err() {
        println!("SKIPPED: memccapable (libmemcached-tools) is not installed");
        return;
    }
    let server = TestServer::start(Config::default());
    let addr = server.memcache_addr.expect("memcached listener");
    let port = addr.port().to_string();
    let out = tool(
        "memccapable",
        &["-a", "-t", "5", "-h", &addr.ip().to_string(), "-p", &port],
    );
    let report = ok("memccapable", &out);
    assert!(report.contains("All tests passed"), "{report}");
    assert!(!report.contains("[FAIL]"), "{report}");
}
