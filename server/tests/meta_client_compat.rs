//! Runs `meta_client_compat.py` (meta-memcache, a client that speaks only memcached's meta
//! protocol) against the memcached text port of an in-process server. Skips, saying why,
//! only when python3 or meta-memcache is missing; CI installs both.

use shoald::testing::TestServer;
use shoald::Config;
use std::path::Path;
use std::process::Command;

#[test]
fn meta_protocol_client_works_against_the_text_port() {
    let probe = Command::new("python3")
        .args(["-c", "import meta_memcache"])
        .output();
    match probe {
        Err(e) => {
            println!("SKIPPED: python3 is not available ({e})");
            return;
        }
        Ok(out) if !out.status.success() => {
            println!(
                "SKIPPED: meta-memcache is not installed: {}",
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/meta_client_compat.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(addr.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "meta_client_compat.py failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
