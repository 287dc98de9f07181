//! The checker must prove it can fail (reliability.md R22): against a node built with the
//! `fault-injection` feature it must report what that node breaks, every time. Each case runs
//! `CC_RUNS` times (default 10). The dropping node gets a fixed 5 s run, so that the final read
//! finds the keys whose last write was dropped (about one in 200 of the keys written); the
//! old-savefile node's runs stop at the first violation (after the second restart).

mod common;

use common::{check, fault_shoald, runs};

#[test]
fn a_node_that_drops_acknowledged_writes_is_reported_lost_every_time() {
    let shoald = fault_shoald();
    for run in 0..runs() {
        let seed = (1000 + run).to_string();
        let s = check(&[
            "--shoald",
            shoald.to_str().expect("utf-8 path"),
            "--shoald-arg=--fault-drop-writes=200",
            "--nemesis",
            "none",
            "--duration",
            "5s",
            "--keys",
            "2000",
            "--hot",
            "200",
            "--seed",
            &seed,
        ]);
        let lost = s.counts["lost"];
        println!(
            "run {run}: lost {lost} stale {} after {:.1}s",
            s.counts["stale"], s.duration_s
        );
        assert!(
            lost > 0,
            "run {run} (seed {seed}) missed the dropped writes: {s:?}"
        );
        assert!(s.duration_s < 60.0);
        assert!(!s.passed());
        assert_eq!(s.counts["corrupt"] + s.counts["unexpected"], 0);
    }
}

#[test]
fn a_node_that_restores_an_old_savefile_is_reported_stale_every_time() {
    let shoald = fault_shoald();
    for run in 0..runs() {
        let seed = (2000 + run).to_string();
        let s = check(&[
            "--shoald",
            shoald.to_str().expect("utf-8 path"),
            "--shoald-arg=--fault-old-savefile",
            "--nemesis",
            "graceful",
            "--interval",
            "1s..2s",
            "--duration",
            "60s",
            "--keys",
            "2000",
            "--hot",
            "200",
            "--stop-on-violation",
            "--seed",
            &seed,
        ]);
        let stale = s.counts["stale"];
        println!(
            "run {run}: stale {stale} lost {} after {:.1}s, {} faults",
            s.counts["lost"], s.duration_s, s.counts["faults"]
        );
        assert!(
            stale > 0,
            "run {run} (seed {seed}) missed the old savefile: {s:?}"
        );
        assert!(!s.passed());
        assert_eq!(s.counts["corrupt"] + s.counts["unexpected"], 0);
    }
}
