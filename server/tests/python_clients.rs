//! Real Python memcached clients against the memcached text port of an in-process server:
//! pymemcache (`pymemcache_compat.py`, the classic text protocol) and meta-memcache
//! (`meta_client_compat.py`, a client that speaks only the meta protocol). Each skips,
//! saying why, only when python3 or its client is missing; CI installs both.

use shoald::testing::TestServer;
use shoald::Config;
use std::path::Path;
use std::process::Command;

/// Runs `tests/<script>` with the server's memcached address, if python3 can import
/// `module`; fails with the script's output when the script does.
fn run_client_script(module: &str, script: &str) {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output();
    match probe {
        Err(e) => {
            println!("SKIPPED: python3 is not available ({e})");
            return;
        }
        Ok(out) if !out.status.success() => {
            println!(
                "SKIPPED: {module} is not installed: {}",
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
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .arg(addr.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pymemcache_client_works_against_the_text_port() {
    run_client_script("pymemcache", "pymemcache_compat.py");
}

#[test]
fn meta_protocol_client_works_against_the_text_port() {
    run_client_script("meta_memcache", "meta_client_compat.py");
}
