//! The checker must prove it can fail (reliability.md R22): against nodes built with the
//! `fault-injection` feature it must report what those nodes break, every time, with the
//! counter that names the broken promise. Each case runs a 3-node cluster (`replicas = 0`)
//! `CC_RUNS` times (default 3; `CC_RUNS=10` for the acceptance runs), each run at most 10 s of load and stopped at the first
//! violation:
//!
//! - nodes that acknowledge one SET in 200 without storing it: **stale** (a later read finds
//!   the older value) or **lost** (the final read does);
//! - nodes that ignore the bucket table and serve every bucket themselves, driven through
//!   their memcached ports (a write through one node lands there instead of on the owner):
//!   **stale**;
//! - a lone node that loads the savefile from one stop earlier than the latest after a
//!   graceful restart: **stale**;
//! - nodes whose bucket moves leave one change-log record out: **stale** or **lost**;
//! - nodes that drop a moving bucket's copy when they park it, serving it empty until the
//!   switchover: **stale** or **lost**.
//!
//! The failover cases run 3 nodes with `replicas = 1` and a short lease:
//!
//! - nodes that acknowledge a write before their replicas hold it, under kills: **lost** or
//!   **stale** (the promoted replica lacks the last acknowledged writes);
//! - a leader that promotes a replica that was not in sync, under lag-kills (one node
//!   paused until its copies leave the in-sync sets, another killed meanwhile): **stale**
//!   (the promoted copy holds older values; the correct build serves those buckets empty,
//!   which the checker allows);
//! - nodes that keep serving after their lease ran out, under partitions longer than the
//!   lease: **stale** (the probe reads the cut-off node's copy, which the majority has
//!   since overwritten).

mod common;

use common::{check, fault_shoald, runs, FAST_ELECTION, LAG_KILLS, PAST_THE_LEASE};
use shoal_consistency_checker::report::Summary;

/// Runs one case `runs()` times on a 3-node cluster with `extra` options and checks each
/// summary with `caught`.
fn every_run(name: &str, seed_base: u32, extra: &[&str], caught: impl Fn(&Summary) -> u64) {
    every_run_on(name, seed_base, 3, 0, extra, caught);
}

/// [`every_run`] on `nodes` nodes with `replicas` copies of each bucket.
fn every_run_on(
    name: &str,
    seed_base: u32,
    nodes: usize,
    replicas: u32,
    extra: &[&str],
    caught: impl Fn(&Summary) -> u64,
) {
    let (nodes, replicas) = (nodes.to_string(), replicas.to_string());
    let shoald = fault_shoald();
    for run in 0..runs() {
        let seed = (seed_base + run).to_string();
        let mut args = vec![
            "--shoald",
            shoald.to_str().expect("utf-8 path"),
            "--nodes",
            &nodes,
            "--replicas",
            &replicas,
            "--duration",
            "10s",
            "--keys",
            "2000",
            "--hot",
            "200",
            "--ttl-keys",
            "0",
            "--stop-on-violation",
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        let s = check(&args);
        let found = caught(&s);
        println!(
            "{name} run {run}: caught {found} (stale {} lost {}) after {:.1}s, {} faults",
            s.counts["stale"], s.counts["lost"], s.duration_s, s.counts["faults"]
        );
        assert!(
            found > 0,
            "{name} run {run} (seed {seed}) was not caught: {s:?}"
        );
        assert!(!s.passed());
        assert_eq!(
            s.counts["corrupt"] + s.counts["unexpected"],
            0,
            "{name} run {run}: {s:?}"
        );
    }
}

#[test]
fn nodes_that_drop_acknowledged_writes_are_reported_every_time() {
    every_run(
        "drop-writes",
        1000,
        &["--shoald-arg=--fault-drop-writes=200", "--nemesis", "none"],
        |s| s.counts["stale"] + s.counts["lost"],
    );
}

#[test]
fn nodes_that_serve_buckets_they_do_not_own_are_reported_stale_every_time() {
    every_run(
        "ignore-table",
        2000,
        &[
            "--shoald-arg=--fault-ignore-table",
            "--client",
            "memcache",
            "--nemesis",
            "none",
        ],
        |s| s.counts["stale"],
    );
}

#[test]
fn nodes_that_restore_an_old_savefile_are_reported_stale_every_time() {
    // A lone node saves at every stop (a node of a larger cluster hands its buckets off
    // instead; only the last one saves, through the same code).
    every_run_on(
        "old-savefile",
        3000,
        1,
        0,
        &[
            "--shoald-arg=--fault-old-savefile",
            "--nemesis",
            "graceful",
            "--interval",
            "500ms..1s",
            "--down",
            "0s",
            "--duration",
            "60s",
        ],
        |s| s.counts["stale"],
    );
}

/// A move fault (`flag` on every node): graceful restarts every few hundred ms hand buckets
/// off and back under load; a lost or older value must be reported.
fn every_move_run(name: &str, seed_base: u32, flag: &str) {
    every_run(
        name,
        seed_base,
        &[
            flag,
            "--nemesis",
            "graceful",
            "--interval",
            "300ms..600ms",
            "--down",
            "0s",
            "--duration",
            "60s",
        ],
        |s| s.counts["stale"] + s.counts["lost"],
    );
}

#[test]
fn moves_that_leave_out_a_change_are_reported_every_time() {
    every_move_run(
        "drop-move-change",
        4000,
        "--shoald-arg=--fault-drop-move-change",
    );
}

#[test]
fn moves_that_drop_the_source_copy_at_park_time_are_reported_every_time() {
    every_move_run("early-drop", 5000, "--shoald-arg=--fault-early-drop");
}

/// A failover fault (`flag` on every node): 3 nodes, `replicas = 1`, a lease of `lease`
/// (election timeout 300 ms), the `nemesis` options; a lost or older value must be reported.
fn every_failover_run(name: &str, seed_base: u32, flag: &str, lease: &str, nemesis: &[&str]) {
    let lease = format!("--shoald-arg=--lease={lease}");
    let mut extra = vec![flag, &lease, "--duration", "40s"];
    extra.extend(FAST_ELECTION);
    extra.extend_from_slice(nemesis);
    every_run_on(name, seed_base, 3, 1, &extra, |s| {
        s.counts["stale"] + s.counts["lost"]
    });
}

#[test]
fn nodes_that_acknowledge_before_their_replicas_hold_a_write_are_reported_every_time() {
    every_failover_run(
        "ack-early",
        6000,
        "--shoald-arg=--fault-ack-early",
        "1500ms",
        &[
            "--nemesis",
            "kill",
            "--interval",
            "1s..2s",
            "--down",
            "0s..1s",
        ],
    );
}

#[test]
fn a_leader_that_promotes_a_replica_out_of_sync_is_reported_every_time() {
    // Restarted before its lease ran out, the killed node would fence itself, which
    // promotes in-sync replicas only: LAG_KILLS keeps it down past the lease.
    let mut schedule = LAG_KILLS.to_vec();
    schedule.extend(["--duration", "60s"]);
    every_failover_run(
        "promote-any",
        7000,
        "--shoald-arg=--fault-promote-any",
        "3s",
        &schedule,
    );
}

#[test]
fn nodes_that_serve_after_their_lease_ran_out_are_reported_every_time() {
    every_failover_run(
        "ignore-lease",
        8000,
        "--shoald-arg=--fault-ignore-lease",
        "1500ms",
        // The first partition comes sooner: the run stops at the first violation.
        &[&PAST_THE_LEASE[..], &["--interval", "1s..2s"]].concat(),
    );
}
