//! Short runs against a normal `shoald`: the checker passes what keeps its promises, under
//! each fault profile and in check-and-set mode. (The long runs are `.ci/run` steps.)

mod common;

use common::{check, shoald};

fn base<'a>(shoald: &'a str, nemesis: &'a str) -> Vec<&'a str> {
    vec![
        "--shoald",
        shoald,
        "--nemesis",
        nemesis,
        "--interval",
        "1s..2s",
        "--pause",
        "300ms..800ms",
        "--down",
        "0s..300ms",
        "--duration",
        "6s",
        "--keys",
        "2000",
        "--hot",
        "200",
        "--seed",
        "42",
    ]
}

#[test]
fn graceful_and_full_restarts_lose_nothing() {
    let bin = shoald();
    let s = check(&base(bin.to_str().expect("utf-8"), "graceful,full-restart"));
    assert!(s.passed(), "{s:?}");
    assert!(s.counts["faults"] >= 2, "{s:?}");
    assert_eq!(s.counts["miss"], 0);
    assert_eq!(s.final_read.percent_ok, 100.0);
    assert!(s.final_read.correct > 1000, "{s:?}");
}

#[test]
fn kills_and_pauses_give_misses_but_nothing_stale_or_corrupt() {
    let bin = shoald();
    let s = check(&base(bin.to_str().expect("utf-8"), "kill,pause"));
    assert!(s.passed(), "{s:?}");
    assert!(s.counts["faults"] >= 2, "{s:?}");
    if s.faults.get("kill").copied().unwrap_or(0) > 0 {
        assert!(
            s.counts["miss"] > 0,
            "a kill of the only node must cost misses: {s:?}"
        );
    }
}

#[test]
fn check_and_set_increments_are_all_counted() {
    let bin = shoald();
    let mut args = base(bin.to_str().expect("utf-8"), "graceful");
    args.extend(["--mode", "cas", "--keys", "200", "--hot", "20"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    assert!(s.counts["writes"] > 1000, "{s:?}");
    assert!(
        s.counts["cas_conflicts"] > 0,
        "workers should contend: {s:?}"
    );
    assert_eq!(s.counts["lost_increments"], 0);
}

#[test]
fn exit_status_and_summary_of_the_binary() {
    let bin = shoald();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consistency-checker"))
        .args(base(bin.to_str().expect("utf-8"), "none"))
        .args(["--duration", "2s", "--require-faults", "graceful=1"])
        .output()
        .expect("run the checker");
    // No fault was done, so the requirement fails the run: exit status 1, and the last line
    // of standard output is the JSON summary saying why.
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON summary");
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["failed_gates"][0], "faults.graceful=0<1");
    assert_eq!(v["final_read"]["unverified"], 0);
}

#[test]
fn the_c_client_passes_restarts_and_kills() {
    let bin = shoald();
    let mut args = base(bin.to_str().expect("utf-8"), "graceful,kill");
    args.extend(["--client", "c"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    assert_eq!(s.client, "c");
    assert!(s.counts["writes"] > 1000, "{s:?}");
}

#[test]
fn the_memcache_client_passes_restarts_and_kills() {
    let bin = shoald();
    let mut args = base(bin.to_str().expect("utf-8"), "graceful,kill");
    args.extend(["--client", "memcache"]);
    let s = check(&args);
    assert!(s.passed(), "{s:?}");
    assert_eq!(s.client, "memcache");
    assert!(s.counts["writes"] > 1000, "{s:?}");
}
