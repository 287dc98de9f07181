//! Cluster admin with real `shoald` processes and the `shoal-ctl` binary: pause and resume,
//! a bucket move started, refused while in progress, cancelled and started again, and
//! refusals of unknown nodes with exit code 1.

mod cluster_common;

use cluster_common::{workspace_binary, Cluster};
use std::process::Command;

/// Runs `shoal-ctl --server SERVER ARGS`: exit code, stdout, stderr.
fn ctl(server: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_binary("shoal-ctl"))
        .args(["--server", server])
        .args(args)
        .output()
        .expect("run shoal-ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn shoal_ctl_pauses_moves_cancels_and_refuses_clearly() {
    // Moves stay in progress (a test-only stall), so refusals can be seen.
    let stall: &[&str] = &["--fault-stall-move-at", "snapshot"];
    let c = Cluster::start_nodes(shoal_tests::fault_shoald_binary(), &[stall; 3]);
    let server = c.members[0].native().to_string();
    let other = c.members[1].native().to_string();

    let (code, out, err) = ctl(&server, &["pause"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused"), "{out}");
    let (code, out, err) = ctl(&other, &["pause"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already paused"), "{out}");
    let (code, out, err) = ctl(&server, &["resume"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resumed"), "{out}");
    // Paused again, so the planner starts no move of its own to even out the counts while
    // the moves below stay in progress (they stall).
    let (code, out, err) = ctl(&server, &["pause"]);
    assert_eq!(code, 0, "{out}{err}");

    // Bucket 5 moves to a member that is not its primary, named by an 8-digit prefix.
    let table = c.members[0].table().expect("table");
    let primary = table.primary_of(5).expect("a primary").id;
    let target = table
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != primary)
        .expect("another member");
    let target_hex = hex(&target);
    let prefix = &target_hex[..8];
    let (code, out, err) = ctl(&server, &["move", "5", "--to", prefix]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("bucket 5: move to node") && out.contains("started"),
        "{out}"
    );

    // A second move of the same bucket is refused while the first is in progress.
    let (code, out, err) = ctl(&other, &["move", "5", "--to", &target_hex]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("a move is in progress"), "{err}");

    // Cancelled, it is accepted again (from another member, with the full id).
    let (code, out, err) = ctl(&other, &["cancel-move", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("move cancelled"), "{out}");
    let (code, out, err) = ctl(&other, &["move", "5", "--to", &target_hex]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ctl(&server, &["cancel-move", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ctl(&server, &["cancel-move", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to cancel"), "{out}");

    // Refusals: exit code 1 with the reason on stderr.
    let unknown = "ee".repeat(16);
    let (code, out, err) = ctl(&server, &["move", "5", "--to", &unknown]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("no member has node id {unknown}")),
        "{err}"
    );
    let (code, _, err) = ctl(&server, &["move", "5", "--to", &hex(&primary)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already the primary of bucket 5"), "{err}");
    let (code, _, err) = ctl(&server, &["move", "1024", "--to", prefix]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no bucket 1024"), "{err}");
    let (code, out, err) = ctl(&server, &["drain", &unknown]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no member has node id"), "{err}");
    let (code, _, err) = ctl(&server, &["drain", "eeeeeeeeee"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no member's node id starts with eeeeeeeeee"),
        "{err}"
    );
    // Not a node id at all: a usage error.
    let (code, _, err) = ctl(&server, &["drain", "not-hex"]);
    assert_eq!(code, 2, "{err}");

    // Nothing moved, nobody drains: status is healthy and lists no moves (once the source
    // has seen the last cancel).
    let status = || {
        let (code, out, err) = ctl(&server, &["status", "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    assert!(
        shoal_tests::wait_for(std::time::Duration::from_secs(10), || status()["moves"]
            == serde_json::json!([])),
        "{}",
        status()
    );
    assert_eq!(status()["draining"], serde_json::json!([]));
}
