//! Helpers for the checker's end-to-end tests: finding (or building) `shoald` binaries and
//! running the checker in-process with command-line style options.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use shoal_consistency_checker::cli::Args;
use shoal_consistency_checker::report::Summary;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The runs share two cores with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_build(target_dir: Option<&Path>, features: &[&str]) {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(workspace_root())
        .args(["build", "-p", "shoald", "--bin", "shoald"]);
    for f in features {
        cargo.args(["--features", f]);
    }
    if let Some(dir) = target_dir {
        cargo.env("CARGO_TARGET_DIR", dir);
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build of shoald failed");
}

/// The normal `shoald` (`SHOALD_BIN`, else this profile's, built if missing).
pub fn shoald() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOALD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_path_buf();
    let bin = profile_dir.join("shoald");
    if !bin.exists() {
        cargo_build(None, &[]);
    }
    bin
}

/// `shoald` built with the `fault-injection` feature (`SHOALD_FAULT_BIN`, else
/// `target/fault/debug/shoald`, built there if missing, so the normal binary stays clean).
pub fn fault_shoald() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOALD_FAULT_BIN") {
        return PathBuf::from(p);
    }
    let dir = workspace_root().join("target/fault");
    let bin = dir.join("debug/shoald");
    if !bin.exists() {
        cargo_build(Some(&dir), &["fault-injection"]);
    }
    bin
}

/// Runs the checker with `args` (as on its command line, after `--quiet --ttl 3s..4s`, which
/// they may override) and returns its summary.
pub fn check(args: &[&str]) -> Summary {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Short TTLs: the final TTL check waits until every TTL has run out.
    let mut argv = vec!["consistency-checker", "--quiet", "--ttl", "3s..4s"];
    argv.extend_from_slice(args);
    let config = <Args as clap::Parser>::try_parse_from(argv)
        .expect("valid options")
        .into_config()
        .expect("valid config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(shoal_consistency_checker::run(config))
        .expect("the run completes")
}

/// How many times each "prove it can fail" test repeats (`CC_RUNS`, default 3; the
/// acceptance runs use 10).
pub fn runs() -> u32 {
    std::env::var("CC_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// `shoald` options of the failover runs, besides the lease: a Raft election short enough
/// that a lease of 1.5 s or more exceeds twice it, so that a failover takes about a lease.
pub const FAST_ELECTION: [&str; 2] = [
    "--shoald-arg=--raft-election-timeout=300ms",
    "--shoald-arg=--raft-heartbeat=100ms",
];

/// The lag-kill schedule (with a 3 s lease) that the correct build passes (`cluster.rs`) and
/// the promote-any fault build fails (`prove_it_can_fail.rs`): pauses past the in-sync bound
/// and under the lease, the killed node down past its lease (so the leader fences it), and
/// faults spaced so that the moves back to a restarted node and its new replicas are done
/// before the next (one copy survives one failure, not two in a row).
pub const LAG_KILLS: [&str; 8] = [
    "--nemesis",
    "lag-kill",
    "--interval",
    "2s..3s",
    "--pause",
    "1500ms..2s",
    "--down",
    "4s..5s",
];

/// Partitions longer than a 1.5 s lease (so the majority fences the cut-off node and promotes
/// its replicas) that the correct build passes (`cluster.rs`) and the ignore-lease fault
/// build fails (`prove_it_can_fail.rs`), spaced so that the replicas are rebuilt before the
/// next one.
pub const PAST_THE_LEASE: [&str; 6] = [
    "--nemesis",
    "partition",
    "--partition",
    "3s..4s",
    "--interval",
    "5s..6s",
];
