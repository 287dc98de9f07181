//! Measures one client's throughput: N tasks (default 64) issuing GETs and SETs (1:1, 100-byte
//! values, 10,000 keys) for a while against a running server or cluster.
//!
//! ```sh
//! cargo run --release --bin shoald -- --listen 127.0.0.1:7400 --memcache-listen off &
//! cargo run --release -p shoal-client --example throughput -- 127.0.0.1:7400 64 10
//! ```
//!
//! Arguments: `SEEDS [TASKS [SECS [CONNS [SERVER_PIDS]]]]`. `SEEDS` is one address or a
//! comma-separated list (the client's seeds; in a cluster one is enough, the client finds
//! the owners). `CONNS` is connections per node. `SERVER_PIDS` (comma-separated, optional)
//! are processes whose CPU time (`/proc/PID/stat` utime + stime) is sampled at the start and
//! end of the measured window, after the preload; the output line then also says
//! `server_cpu_s=... wall_s=...` so a script can work out throughput per busy core.

use shoal_client::Client;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) of `pid` so far, from `/proc/PID/stat` (100 ticks a second).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name's closing parenthesis: state is index 0, utime 11, stime 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn servers_cpu(pids: &[String]) -> Option<f64> {
    pids.iter().map(|p| cpu_seconds(p)).sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7400".into());
    let tasks: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let secs: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let conns: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let pids: Vec<String> = args
        .next()
        .map(|s| {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();

    let client = Client::builder()
        .seeds(addr.split(',').filter(|a| !a.is_empty()))
        .connections_per_node(conns)
        .connect()
        .await?;
    let value = vec![b'x'; 100];
    for k in 0..10_000u32 {
        client.set(format!("key:{k}"), &value, 0, 0).await?;
    }

    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = servers_cpu(&pids);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (client, ops, errors, stop, value) = (
            client.clone(),
            ops.clone(),
            errors.clone(),
            stop.clone(),
            value.clone(),
        );
        set.spawn(async move {
            let mut i = t as u64;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("key:{}", (i >> 33) % 10_000);
                let ok = if i & 1 == 0 {
                    client.get(&key).await.is_ok()
                } else {
                    client.set(&key, &value, 0, 0).await.is_ok()
                };
                if ok {
                    ops.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    while set.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, servers_cpu(&pids)) {
        (Some(a), Some(b)) if !pids.is_empty() => {
            format!(" server_cpu_s={:.2} wall_s={elapsed:.3}", b - a)
        }
        _ => String::new(),
    };
    let n = ops.load(Ordering::Relaxed);
    println!(
        "{addr}: {tasks} tasks, {conns} connections, {secs} s: {n} ops, {:.0} ops/s, {} errors{cpu}",
        n as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    client.close().await;
    Ok(())
}
