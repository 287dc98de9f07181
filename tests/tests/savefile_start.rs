//! Start-up with a savefile on real processes: damaged, empty and too-new savefiles refuse
//! the start with exit code 4 and a clear message, `--discard-bad-savefile` starts empty and
//! sets the file aside; the admin requests without a data directory; `--persist never`.

mod savefile_common;

use std::process::{Command as Process, Stdio};
use std::time::Duration;

use savefile_common::*;
use shoal_proto::{Command, PersistMode, Request, Status};
use shoal_tests::{shoald_binary, RawConn, ServerProcess};

/// Exit code of a node refused because of its savefile.
const BAD_SAVEFILE: i32 = 4;
/// Exit code of a node refused because another node holds its data directory.
const DATA_DIR_IN_USE: i32 = 5;

/// A data directory holding a valid savefile of 100 keys.
fn dir_with_savefile(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let mut server = ServerProcess::start(&["--data-dir", &dir.arg()]);
    let mut conn = RawConn::hello(server.native_addr);
    for i in 0..100 {
        set(&mut conn, format!("k{i}").as_bytes(), b"value", 0, 0);
    }
    drop(conn);
    assert!(server.terminate(Duration::from_secs(30)).success());
    assert!(dir.path().join("savefile").exists());
    dir
}

/// Runs shoald on `dir` until it exits (it must refuse to start); returns code and stderr.
fn refused_start(dir: &TempDir) -> (i32, String) {
    let out = Process::new(shoald_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--memcache-listen",
            "off",
            "--peer-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.arg(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run shoald");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("shoald ready"),
        "it must not serve: {stdout}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn damage(dir: &TempDir, f: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.path().join("savefile");
    let mut bytes = std::fs::read(&path).expect("read savefile");
    f(&mut bytes);
    std::fs::write(&path, bytes).expect("write savefile");
}

#[test]
fn a_flipped_byte_refuses_the_start_with_exit_code_4() {
    let dir = dir_with_savefile("savefile-flip");
    damage(&dir, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
    });
    let (code, stderr) = refused_start(&dir);
    assert_eq!(code, BAD_SAVEFILE, "{stderr}");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains("--discard-bad-savefile"), "{stderr}");
    assert!(
        dir.path().join("savefile").exists(),
        "a refused file stays in place"
    );
}

#[test]
fn empty_truncated_and_newer_savefiles_are_refused_clearly() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 3] = [
        ("empty", |b| b.clear(), "empty (0 bytes)"),
        ("truncated", |b| b.truncate(b.len() - 10), "ends at byte"),
        (
            "newer",
            |b| b[8..10].copy_from_slice(&7u16.to_be_bytes()),
            "format version 7",
        ),
    ];
    for (name, f, message) in cases {
        let dir = dir_with_savefile(&format!("savefile-{name}"));
        damage(&dir, f);
        let (code, stderr) = refused_start(&dir);
        assert_eq!(code, BAD_SAVEFILE, "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
}

#[test]
fn discard_bad_savefile_starts_empty_and_sets_the_file_aside() {
    let dir = dir_with_savefile("savefile-discard");
    damage(&dir, |b| b.truncate(b.len() / 2));
    let mut server = ServerProcess::start(&[
        "--data-dir",
        &dir.arg(),
        "--discard-bad-savefile",
        "--log-level",
        "warn",
    ]);
    let mut conn = RawConn::hello(server.native_addr);
    assert_eq!(stat(&mut conn, "curr_items").as_deref(), Some("0"));
    assert_eq!(get(&mut conn, b"k1"), None);
    let names = dir.names();
    assert!(
        names.iter().any(|n| n.starts_with("savefile.bad-")),
        "{names:?}"
    );
    drop(conn);
    server.terminate(Duration::from_secs(30));
    assert!(server
        .stderr_output()
        .contains("--discard-bad-savefile: starting empty"));
}

#[test]
fn admin_requests_without_a_data_dir_say_persistence_is_off() {
    let server = ServerProcess::start(&[]);
    let mut conn = RawConn::hello(server.native_addr);
    let (status, message) = save(&mut conn).expect_err("SAVE must fail");
    assert_eq!(status, Status::BadRequest);
    assert!(message.contains("persistence is off"), "{message}");
    conn.send(&Request {
        id: 5,
        command: Command::SetPersist {
            mode: PersistMode::Always,
        },
    });
    assert_eq!(conn.recv(|r| r.status), Status::BadRequest);
    assert_eq!(stat(&mut conn, "persist").as_deref(), Some("off"));
    // The connection is still usable.
    set(&mut conn, b"k", b"v", 0, 0);
}

#[test]
fn persist_never_set_at_run_time_writes_no_savefile_at_stop() {
    let dir = TempDir::new("savefile-never");
    let mut server = ServerProcess::start(&["--data-dir", &dir.arg()]);
    let mut conn = RawConn::hello(server.native_addr);
    assert_eq!(stat(&mut conn, "persist").as_deref(), Some("on-last-stop"));
    set(&mut conn, b"k", b"v", 0, 0);
    conn.send(&Request {
        id: 5,
        command: Command::SetPersist {
            mode: PersistMode::Never,
        },
    });
    assert_eq!(conn.recv(|r| r.status), Status::Ok);
    assert_eq!(stat(&mut conn, "persist").as_deref(), Some("never"));
    drop(conn);
    assert!(server.terminate(Duration::from_secs(30)).success());
    assert!(!dir.path().join("savefile").exists(), "{:?}", dir.names());
    // The node id was generated and is kept.
    let id = std::fs::read_to_string(dir.path().join("node-id")).expect("node-id");
    assert_eq!(id.trim().len(), 32);
    let server = ServerProcess::start(&["--data-dir", &dir.arg()]);
    let mut conn = RawConn::hello(server.native_addr);
    assert_eq!(stat(&mut conn, "node_id"), Some(id.trim().to_string()));
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused_with_exit_code_5() {
    let dir = TempDir::new("dir-lock");
    let mut first = ServerProcess::start(&["--data-dir", &dir.arg()]);
    let (code, stderr) = refused_start(&dir);
    assert_eq!(code, DATA_DIR_IN_USE, "stderr: {stderr}");
    assert!(
        stderr.contains("in use by another running node"),
        "stderr: {stderr}"
    );
    // The lock goes with the process, even when it is killed.
    first.kill();
    first.restart();
    let mut conn = RawConn::hello(first.native_addr);
    conn.send(&Request {
        id: 1,
        command: Command::Ping,
    });
    assert_eq!(conn.recv(|r| r.status), Status::Ok);
}
