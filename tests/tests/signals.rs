//! Signals and logs on real processes: SIGHUP, SIGUSR1, SIGUSR2 and SIGPIPE never end the
//! node (only SIGTERM/SIGINT, gracefully, and SIGKILL do); SIGHUP reopens a log file that
//! logrotate moved away; logs that do not go to a terminal carry no colour codes.

mod savefile_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use savefile_common::*;
use shoal_tests::{wait_for, RawConn, ServerProcess};

/// How long a test waits for a log line or a state.
const WAIT: Duration = Duration::from_secs(20);

/// The files in `dir` whose names start with `prefix` (the daily appender writes
/// `<prefix>.YYYY-MM-DD`).
fn log_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

/// Everything in the files of `dir` whose names start with `prefix`.
fn log_text(dir: &Path, prefix: &str) -> String {
    log_files(dir, prefix)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

/// Whether the node answers a new connection, with `key`'s value.
fn serves(server: &ServerProcess, key: &[u8], value: &[u8]) -> bool {
    let mut conn = RawConn::hello(server.native_addr);
    get(&mut conn, key).map(|(_, _, v)| v) == Some(value.to_vec())
}

#[test]
fn hup_usr1_usr2_and_pipe_do_not_stop_the_node_and_term_still_saves() {
    let data = TempDir::new("signals-data");
    let logs = TempDir::new("signals-logs");
    let log_file = logs.path().join("shoald.log");
    let mut server = ServerProcess::start(&[
        "--data-dir",
        &data.arg(),
        "--log-file",
        &log_file.display().to_string(),
        "--log-level",
        "info",
    ]);
    let mut conn = RawConn::hello(server.native_addr);
    for i in 0..100 {
        set(&mut conn, format!("k{i}").as_bytes(), b"kept", 0, 0);
    }
    for (signal, logged) in [
        ("HUP", Some("SIGHUP")),
        ("USR1", Some("SIGUSR1")),
        ("USR2", Some("SIGUSR2")),
        ("PIPE", None),
    ] {
        server.signal(signal);
        if let Some(name) = logged {
            // Handled (logged), not merely not yet delivered.
            let handled = wait_for(WAIT, || log_text(logs.path(), "shoald.log").contains(name));
            assert!(handled, "no log line for {name}");
        }
        // A signal whose default action is to terminate kills the process as it is
        // delivered, so a node still answering a new connection survived it.
        assert!(serves(&server, b"k7", b"kept"), "after SIG{signal}");
    }
    assert_eq!(get(&mut conn, b"k99").map(|v| v.2), Some(b"kept".to_vec()));
    drop(conn);
    let status = server.terminate(WAIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(data.path().join("savefile").exists(), "{:?}", data.names());
    server.restart();
    assert!(serves(&server, b"k42", b"kept"), "the items came back");
    server.terminate(WAIT);
}

#[test]
fn sighup_after_the_log_file_was_moved_writes_to_a_new_file_at_the_same_path() {
    let logs = TempDir::new("signals-logrotate");
    let log_file = logs.path().join("shoald.log");
    let mut server = ServerProcess::start(&[
        "--log-file",
        &log_file.display().to_string(),
        "--log-level",
        "info",
    ]);
    let ready = wait_for(WAIT, || {
        log_text(logs.path(), "shoald.log").contains("shoald ready")
    });
    assert!(ready, "the ready line was not logged: {:?}", logs.names());
    // What logrotate does: move the file away, then SIGHUP.
    let [first]: [PathBuf; 1] = log_files(logs.path(), "shoald.log")
        .try_into()
        .expect("one log file");
    let moved = logs.path().join("rotated");
    std::fs::rename(&first, &moved).expect("move the log file");
    server.signal("HUP");
    let reopened = wait_for(WAIT, || {
        log_text(logs.path(), "shoald.log").contains("reopened the log file")
    });
    assert!(reopened, "no new log file: {:?}", logs.names());
    let files = log_files(logs.path(), "shoald.log");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0], first,
        "the new file has the original name: {files:?}"
    );
    assert!(serves_ping(&server));
    assert_eq!(server.terminate(WAIT).code(), Some(0));
    let new_text = log_text(logs.path(), "shoald.log");
    assert!(new_text.contains("stopped"), "{new_text}");
    let old_text = std::fs::read_to_string(&moved).expect("moved file");
    assert!(old_text.contains("shoald ready"), "{old_text}");
    assert!(!old_text.contains("stopped"), "{old_text}");
}

#[test]
fn logs_to_a_pipe_have_no_colour() {
    // The harness pipes standard error, as a service manager does.
    let mut server = ServerProcess::start(&["--log-level", "info"]);
    assert!(serves_ping(&server));
    assert_eq!(server.terminate(WAIT).code(), Some(0));
    let stderr = server.stderr_output();
    assert!(stderr.contains("shoald ready"), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in piped logs: {stderr:?}"
    );
}

#[test]
fn sighup_with_logs_on_standard_error_is_logged_and_ignored() {
    let mut server = ServerProcess::start(&["--log-level", "info"]);
    server.signal("HUP");
    assert!(serves_ping(&server));
    assert_eq!(server.terminate(WAIT).code(), Some(0));
    // SIGHUP is handled before the SIGTERM that followed it (or the node would be gone).
    let stderr = server.stderr_output();
    assert!(stderr.contains("nothing to reopen"), "{stderr}");
}

#[test]
fn an_unusable_log_file_is_a_configuration_error_not_a_crash() {
    let out = std::process::Command::new(shoal_tests::shoald_binary())
        .args(["--listen", "127.0.0.1:0", "--memcache-listen", "off"])
        .args(["--peer-listen", "127.0.0.1:0"])
        .args(["--log-file", "/proc/no-such-dir/shoald.log"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run shoald");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot log to"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Whether the node answers PING on a new connection.
fn serves_ping(server: &ServerProcess) -> bool {
    let mut conn = RawConn::hello(server.native_addr);
    conn.send(&shoal_proto::Request {
        id: 9,
        command: shoal_proto::Command::Ping,
    });
    conn.try_recv(|r| r.status) == Some(shoal_proto::Status::Ok)
}
