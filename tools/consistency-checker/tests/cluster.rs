//! Short runs against a real three-node cluster: the checker forms it, runs the load, and
//! passes a cluster that keeps its promises under each fault the nemesis injects; a
//! partition asked of a `shoald` without the `fault-injection` feature fails with a clear
//! error; with replicas, lag-kills serve nothing older, and a member cut off past its lease
//! (with a `fault-injection` build) serves nothing older and loses nothing. (Partitions
//! shorter than the lease, without replicas, are in `.ci/run`'s soak.) (Wall time: about
//! two minutes.)

mod common;

use common::{check, fault_shoald, shoald, FAST_ELECTION, LAG_KILLS, PAST_THE_LEASE};

fn cluster_args<'a>(shoald: &'a str, nemesis: &'a str, duration: &'a str) -> Vec<&'a str> {
    vec![
        "--shoald",
        shoald,
        "--nodes",
        "3",
        "--nemesis",
        nemesis,
        "--interval",
        "1s..2s",
        "--pause",
        "300ms..800ms",
        "--full-stop-wait",
        "300ms",
        "--down",
        "0s..500ms",
        "--duration",
        duration,
        "--keys",
        "2000",
        "--hot",
        "200",
        "--seed",
        "42",
    ]
}

#[test]
fn three_nodes_without_faults_pass_and_read_back_everything() {
    let bin = shoald();
    let s = check(&cluster_args(bin.to_str().expect("utf-8"), "none", "10s"));
    assert!(s.passed(), "{s:?}");
    assert_eq!(s.nodes.len(), 3, "{s:?}");
    assert_eq!(s.counts["faults"], 0);
    assert!(s.final_read.correct > 1000, "{s:?}");
    assert_eq!(s.final_read.percent_ok, 100.0);
}

#[test]
fn kills_and_pauses_of_members_pass() {
    let bin = shoald();
    let s = check(&cluster_args(
        bin.to_str().expect("utf-8"),
        "kill,pause",
        "10s",
    ));
    assert!(s.passed(), "{s:?}");
    assert!(s.counts["faults"] >= 2, "{s:?}");
    for name in ["stale", "lost", "corrupt", "unexpected"] {
        assert_eq!(s.counts[name], 0, "{name}: {s:?}");
    }
    if s.faults.get("kill").copied().unwrap_or(0) > 0 {
        // Only keys of the killed node's buckets may miss (the model holds every other key
        // to its floor, so a miss elsewhere would be stale).
        assert!(
            s.counts["miss"] > 0,
            "a kill with replicas 0 costs misses: {s:?}"
        );
    }
    for f in &s.fault_log {
        assert!(f.node.is_some() && f.addr.is_some(), "{f:?}");
        assert!(f.buckets > 0, "a member owns buckets: {f:?}");
        assert!(f.unavailable_read_ms.is_some(), "{f:?}");
    }
}

#[test]
fn restarts_leader_faults_joins_and_full_stops_pass() {
    // A graceful stop hands the node's buckets off (seconds with 256-341 buckets), so the
    // run is long enough for several faults; which kinds come is random beyond these.
    let bin = shoald();
    let mut args = cluster_args(
        bin.to_str().expect("utf-8"),
        "graceful,leader,join,full-stop",
        "30s",
    );
    args.extend(["--require-faults", "graceful=1,join=1"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    assert!(s.nodes.len() > 3, "a join adds a member: {s:?}");
    let join = s
        .fault_log
        .iter()
        .find(|f| f.kind == "join")
        .expect("a join");
    assert_eq!(join.buckets, 0, "a new member owns no buckets: {join:?}");
    if let Some(full) = s.fault_log.iter().find(|f| f.kind == "full-stop") {
        assert_eq!(full.node, None);
        assert_eq!(full.buckets, 1024);
    }
}

#[test]
fn lag_kills_with_replicas_serve_nothing_older() {
    // The correct build's side of prove_it_can_fail's promote-any case: a bucket whose only
    // replica was paused out of sync comes back empty (allowed), never with older values.
    let bin = shoald();
    let mut args = cluster_args(bin.to_str().expect("utf-8"), "lag-kill", "25s");
    args.extend(["--replicas", "1", "--shoald-arg=--lease=3s"]);
    args.extend(FAST_ELECTION);
    args.extend(LAG_KILLS);
    args.extend(["--require-faults", "lag-kill=2"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    let lag_kill = s.fault_log.iter().find(|f| f.kind == "lag-kill");
    assert!(lag_kill.is_some_and(|f| f.buckets > 0), "{s:?}");
}

#[test]
fn a_member_cut_off_past_its_lease_serves_nothing_older() {
    // The correct build's side of prove_it_can_fail's ignore-lease case: the majority fences
    // the cut-off node and promotes its replicas (in sync: no miss); the probe reading the
    // cut-off node is answered until its lease runs out and refused after, never with an
    // older value.
    let bin = fault_shoald();
    let mut args = cluster_args(bin.to_str().expect("utf-8"), "partition", "16s");
    args.extend(["--replicas", "1", "--shoald-arg=--lease=1500ms"]);
    args.extend(FAST_ELECTION);
    args.extend(PAST_THE_LEASE);
    args.extend(["--require-faults", "partition=2"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    assert!(s.counts["probe_reads"] > 0, "{s:?}");
    assert!(s.counts["probe_refused"] > 0, "{s:?}");
    assert_eq!(s.counts["miss"], 0, "a partition wipes nothing: {s:?}");
}

#[test]
fn a_partition_needs_a_fault_injection_build() {
    let bin = shoald();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consistency-checker"))
        .args(cluster_args(
            bin.to_str().expect("utf-8"),
            "partition",
            "20s",
        ))
        .args(["--nodes", "2", "--interval", "500ms", "--quiet"])
        .output()
        .expect("run the checker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("partition needs a shoald built with --features fault-injection"),
        "{stderr}"
    );
}

#[test]
fn scaling_out_from_one_node_and_draining_lose_nothing() {
    // Every join moves buckets to the new member under load; every drain hands a member's
    // buckets to the others; nothing acknowledged may go missing or back.
    let bin = shoald();
    let mut args = cluster_args(bin.to_str().expect("utf-8"), "join,join,drain", "15s");
    let at = args.iter().position(|a| *a == "--nodes").expect("--nodes") + 1;
    args[at] = "1";
    args.extend(["--max-nodes", "4", "--require-faults", "join=2,drain=1"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    assert_eq!(s.counts["miss"], 0, "moves lose nothing: {s:?}");
    assert_eq!(s.unowned_buckets, 0, "every bucket has a primary: {s:?}");
    let drain = s
        .fault_log
        .iter()
        .find(|f| f.kind == "drain")
        .expect("a drain");
    assert!(
        drain.buckets > 0,
        "a drained member owned buckets: {drain:?}"
    );
}
