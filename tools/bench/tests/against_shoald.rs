//! `shoal-bench` as a user runs it: the real binary against a real `shoald` process, over both
//! of its protocols, in the closed loop, at a fixed rate, and the helper subcommands.

use serde_json::Value;
use shoal_tests::ServerProcess;
use std::process::{Command, Output};

/// Runs `shoal-bench` with the whitespace-separated `args`.
fn run_bench(args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args(args.split_whitespace())
        .output()
        .expect("run shoal-bench")
}

/// Runs `shoal-bench` with `args`, which must succeed; returns its standard output.
fn bench(args: &str) -> String {
    let out = run_bench(args);
    assert!(
        out.status.success(),
        "shoal-bench {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn json(line: &str) -> Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn count(record: &Value, field: &str) -> u64 {
    record[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {record}"))
}

#[test]
fn closed_loop_on_both_protocols_after_a_preload() {
    let server = ServerProcess::start(&[]);
    let memcache = server.memcache_addr.expect("memcache port");
    let native = server.native_addr;
    for (protocol, addr) in [("native", native), ("memcache", memcache)] {
        let record = json(&bench(&format!(
            "run --protocol {protocol} --addr {addr} --preload --keys 2000 --connections 4 \
             --pipeline 8 --duration 0.3 --label {protocol}"
        )));
        assert_eq!(record["label"], protocol);
        assert_eq!(record["mode"], "closed");
        assert!(count(&record, "ops") > 0, "{record}");
        assert_eq!(count(&record, "errors"), 0, "{record}");
        // Every key was stored first, so every get hits.
        assert_eq!(count(&record, "misses"), 0, "{record}");
        assert_eq!(count(&record, "hits"), count(&record, "gets"), "{record}");
    }
    let items = json(&bench(&format!("items --protocol native --addr {native}")));
    assert_eq!(count(&items, "items"), 2000);
}

#[test]
fn named_workloads_fill_measure_and_count() {
    let server = ServerProcess::start(&["--memory", "16MiB"]);
    let addr = server.memcache_addr.expect("memcache port");
    // shift: fills with 1-4 KB values, then sets only; the items held are counted after.
    let shift = json(&bench(&format!(
        "run --protocol memcache --addr {addr} --preset shift --keys 2000 --duration 0.3"
    )));
    assert_eq!(shift["workload"], "shift");
    assert_eq!(count(&shift, "connections"), 8);
    assert_eq!(count(&shift, "gets"), 0, "{shift}");
    assert!(count(&shift, "sets") > 0, "{shift}");
    let held = count(&shift, "items");
    assert!(held > 0 && held <= 2000, "{shift}");
    // full-zipf: gets and sets over keys stored first; the hit ratio is hits / gets.
    let full = json(&bench(&format!(
        "run --protocol memcache --addr {addr} --preset full-zipf --keys 2000 --duration 0.3 \
         --workload mine"
    )));
    assert_eq!(full["workload"], "mine");
    let ratio = full["hit_ratio"].as_f64().expect("hit ratio");
    let expected = count(&full, "hits") as f64 / count(&full, "gets") as f64;
    assert!((ratio - expected).abs() < 1e-9, "{full}");
    assert!(full["items"].is_null(), "{full}");
}

#[test]
fn fixed_rate_answers_every_scheduled_request() {
    let server = ServerProcess::start(&[]);
    let addr = server.native_addr;
    bench(&format!("load --protocol native --addr {addr} --keys 1000"));
    let record = json(&bench(&format!(
        "run --protocol native --addr {addr} --keys 1000 --connections 5 --rate 2000 \
         --duration 1"
    )));
    assert_eq!(record["mode"], "fixed-rate");
    // The schedule holds exactly rate x duration requests; each one is sent and answered.
    assert_eq!(count(&record, "sent"), 2000, "{record}");
    assert_eq!(count(&record, "ops"), 2000, "{record}");
    let failed = count(&record, "errors") + count(&record, "misses");
    assert_eq!(failed, 0, "{record}");
    let latency = &record["latency_us"];
    let service = &record["service_us"];
    for field in ["p50", "p99", "max"] {
        let from_intended = latency[field].as_f64().expect("latency");
        let from_sent = service[field].as_f64().expect("service latency");
        assert!(from_intended > 0.0, "{record}");
        // Counting from the intended send time can only add the generator's lateness.
        assert!(from_intended >= from_sent, "{field}: {record}");
    }
}

#[test]
fn a_generator_that_falls_behind_still_sends_the_whole_schedule() {
    let server = ServerProcess::start(&[]);
    let addr = server.native_addr;
    // 100,000 requests due within 20 ms: more than the generator can send in time, so it is
    // behind schedule at the end; the requests due before the end still go out, late.
    let record = json(&bench(&format!(
        "run --protocol native --addr {addr} --keys 1000 --connections 50 --rate 5000000 \
         --duration 0.02"
    )));
    assert_eq!(count(&record, "sent"), 100_000, "{record}");
    assert_eq!(count(&record, "ops"), 100_000, "{record}");
    let lag_us = record["max_send_lag_us"].as_f64().expect("lag");
    assert!(
        lag_us > 1_000.0,
        "the generator kept up, so this test shows nothing: {record}"
    );
}

#[test]
fn a_server_that_is_gone_is_an_error_not_a_hang() {
    let mut server = ServerProcess::start(&[]);
    let addr = server.native_addr;
    server.kill();
    let out = run_bench(&format!(
        "run --protocol native --addr {addr} --duration 0.2"
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("shoal-bench:"), "{stderr}");
}

#[test]
fn probe_and_table() {
    let probe = json(&bench("probe --duration 0.2"));
    assert!(
        probe["duration_s"].as_f64().expect("duration") >= 0.2,
        "{probe}"
    );
    let gaps = probe["gaps_at_least_us"].as_array().expect("gaps");
    assert_eq!(gaps.len(), 4, "{probe}");

    let server = ServerProcess::start(&[]);
    let addr = server.native_addr;
    let dir = std::env::temp_dir().join(format!("shoal-bench-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("runs.jsonl");
    let mut records = String::new();
    for label in ["memcached", "shoald-native"] {
        records += &bench(&format!(
            "run --protocol native --addr {addr} --preload --keys 500 --connections 2 \
             --duration 0.2 --label {label} --workload p1"
        ));
    }
    std::fs::write(&file, records).expect("write records");
    let table = bench(&format!("table {}", file.display()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(table.contains("| shoald-native |"), "{table}");
    assert!(table.contains("| memcached |"), "{table}");
    assert!(table.contains("÷ memcached"), "{table}");
}
