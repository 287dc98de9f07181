//! `shoal-ctl status` against a real `shoald` on its own: one member owning every bucket.

use shoal_tests::ServerProcess;
use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-ctl"))
        .args(args)
        .output()
        .expect("run shoal-ctl")
}

#[test]
fn status_of_a_single_node_shows_one_healthy_member_owning_every_bucket() {
    let server = ServerProcess::start(&[]);
    let addr = server.native_addr.to_string();
    let out = ctl(&["--server", &addr, "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A new node's log: Raft's first membership entry (1), then the cluster's creation (2).
    assert!(text.contains("table version 2  buckets 1024"), "{text}");
    assert!(text.contains(&addr), "{text}");
    assert!(text.contains("leader"), "{text}");
    assert!(text.trim_end().ends_with("healthy"), "{text}");

    let out = ctl(&["--server", &addr, "status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["buckets"], 1024);
    assert_eq!(v["table_version"], 2);
    assert_eq!(v["buckets_without_live_primary"], 0);
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    let m = &members[0];
    assert_eq!(m["native"], addr.as_str());
    assert_eq!(m["state"], "active");
    assert_eq!(m["buckets_owned"], 1024);
    assert_eq!(m["reachable"], true);
    assert_eq!(m["status"]["raft_role"], "leader");
    assert_eq!(m["status"]["buckets_serving"], 1024);
    assert_eq!(v["leader"], m["id"]);
    assert_eq!(v["measured"]["members"][0]["clock_offset_ms"], 0.0);
}

#[test]
fn a_server_that_is_down_exits_with_code_3() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let out = ctl(&["--server", &addr, "--timeout-ms", "500", "status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
    // A wrong command line is clap's code 2.
    assert_eq!(ctl(&["--bogus"]).status.code(), Some(2));
}
