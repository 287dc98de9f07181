//! Runs `pymemcache_compat.py` (the pymemcache client against the memcached text port) on an
//! in-process server. Skips, saying why, only when python3 or pymemcache is missing; CI
//! installs both.

use shoald::testing::TestServer;
use shoald::Config;
use std::path::Path;
use std::process::Command;

#[test]
fn pymemcache_client_works_against_the_text_port() {
    let probe = Command::new("python3")
        .args(["-c", "import pymemcache"])
        .output();
    match probe {
        Err(e) => {
            println!("SKIPPED: python3 is not available ({e})");
            return;
        }
        Ok(out) if !out.status.success() => {
            println!(
                "SKIPPED: pymemcache is not installed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Ok(_) => {}
    }
    let server = TestServer::start(Config::default());
    let addr = server
        .memcache_addr
        .expect("memcached listener on by default");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymemcache_compat.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(addr.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "pymemcache_compat.py failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
