//! `shoal-ctl status`: the whole cluster in one call.
//!
//! ```text
//!  --server ──TABLE_GET──► table (members, buckets)
//!  every member ──NODE_STATUS──► (in parallel, each within the timeout)
//!  table + statuses ──► Report ──► text table or one JSON object
//! ```
//!
//! Under the members, the report lists the bucket moves in progress (as the members running
//! them report them in NODE_STATUS) and the members that are draining.
//!
//! [`gather`] does the I/O; [`Report::build`] is pure (so the health rules are tested without
//! a cluster) and [`Report::render`] prints it. The report holds the same facts whichever
//! member `--server` names: members are listed in id order, and everything measured from
//! here (round trips, clock offsets, the warnings about them) sits under `measured`.
//!
//! A member's clock offset is its wall clock (from NODE_STATUS) minus this machine's clock at
//! the middle of the round trip, then taken relative to the leader's: the skew between the
//! two nodes, accurate to about half the round trip.

use serde::Serialize;
use shoal_client::{Client, NodeState, NodeStatus, TableView, NO_PRIMARY};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default clock offset (from the leader) above which a member is warned about, in ms.
pub const DEFAULT_CLOCK_WARN_MS: u64 = 500;

/// A 128-bit id as 32 hex digits.
fn hex(id: &[u8; 16]) -> String {
    id.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn now_us() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i128)
}

/// What asking one member for its status gave.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its status, or why there is none.
    pub status: Result<NodeStatus, String>,
    /// Round trip of the NODE_STATUS request, in microseconds.
    pub rtt_us: u64,
    /// Its wall clock minus this machine's at the middle of the round trip, in microseconds.
    pub offset_us: i64,
}

/// Fetches the table from `server`, then every member's status in parallel, each within
/// `timeout`.
///
/// # Errors
/// Why the table could not be fetched from `server` (the caller exits with
/// [`crate::exit_code::SERVER_UNREACHABLE`]).
pub async fn gather(server: &str, timeout: Duration) -> Result<(TableView, Vec<Probe>), String> {
    let table = client(server, timeout)?
        .table()
        .await
        .map_err(|e| format!("cannot fetch the table from {server}: {e}"))?;
    let mut tasks = Vec::with_capacity(table.nodes.len());
    for node in &table.nodes {
        let addr = node.native.clone();
        tasks.push(tokio::spawn(async move { probe(&addr, timeout).await }));
    }
    let mut probes = Vec::with_capacity(tasks.len());
    for task in tasks {
        probes.push(task.await.unwrap_or_else(|e| Probe {
            status: Err(format!("probe failed: {e}")),
            rtt_us: 0,
            offset_us: 0,
        }));
    }
    Ok((table, probes))
}

fn client(addr: &str, timeout: Duration) -> Result<Client, String> {
    Client::builder()
        .seed(addr)
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .deadline(timeout)
        .client_name("shoal-ctl")
        .build()
        .map_err(|e| format!("{addr}: {e}"))
}

/// One NODE_STATUS round trip to `addr` (connecting first, outside the measured time).
async fn probe(addr: &str, timeout: Duration) -> Probe {
    let failed = |e: String| Probe {
        status: Err(e),
        rtt_us: 0,
        offset_us: 0,
    };
    let client = match client(addr, timeout) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    if let Err(e) = client.ping().await {
        return failed(format!("{addr}: {e}"));
    }
    let sent_us = now_us();
    let started = Instant::now();
    let status = client.node_status().await;
    let rtt = started.elapsed();
    client.close().await;
    match status {
        Ok(s) => {
            let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
            let middle = sent_us + i128::from(rtt_us / 2);
            let offset = i128::from(s.wall_clock_us) - middle;
            Probe {
                status: Ok(s),
                rtt_us,
                offset_us: i64::try_from(offset).unwrap_or(i64::MAX),
            }
        }
        Err(e) => failed(format!("{addr}: {e}")),
    }
}

/// One member in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Node id (32 hex digits).
    pub id: String,
    /// Life-cycle state in the table.
    pub state: &'static str,
    /// Native protocol address.
    pub native: String,
    /// memcached address, if that port is open.
    pub memcache: Option<String>,
    /// Buckets the table names it primary of.
    pub buckets_owned: u32,
    /// Whether it answered NODE_STATUS.
    pub reachable: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    /// What it said about itself (when it answered).
    pub status: Option<MemberStatus>,
}

/// What a member said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Software and version.
    pub version: String,
    /// Raft role.
    pub raft_role: &'static str,
    /// Raft term.
    pub term: u64,
    /// Last applied log index.
    pub last_applied: u64,
    /// The leader it knows of.
    pub leader: Option<String>,
    /// The table version it applied.
    pub table_version: u64,
    /// Buckets it serves now (by its own view).
    pub buckets_serving: u32,
    /// Bytes of memory its items use.
    pub memory_used: u64,
    /// Its memory limit in bytes.
    pub memory_limit: u64,
    /// Items it holds.
    pub items: u64,
    /// Buckets it holds a replica copy of.
    pub replica_of: u32,
    /// Of those, the ones it is in sync for (it may be promoted for them).
    pub in_sync_of: u32,
    /// Replicas of its own buckets not in sync yet (being built or catching up).
    pub replicas_building: u32,
    /// Milliseconds of lease left (0: none, it serves nothing; `None`: not reported).
    pub lease_left_ms: Option<u64>,
}

/// One bucket move in progress, as the member running it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoveReport {
    /// The bucket.
    pub bucket: u32,
    /// Its primary in the table (the node it moves from), if it has one.
    pub from: Option<String>,
    /// The node receiving it.
    pub to: String,
    /// `snapshot`, `tail`, `in-sync`, `parked` or `finishing`.
    pub phase: &'static str,
    /// Bytes copied so far.
    pub bytes: u64,
    /// Items copied so far.
    pub items: u64,
    /// Milliseconds since the move started.
    pub elapsed_ms: u64,
    /// The member that reported it.
    pub reported_by: String,
}

impl MoveReport {
    /// Copy rate so far, in MiB/s (0 before the first millisecond).
    pub fn mib_per_s(&self) -> f64 {
        if self.elapsed_ms == 0 {
            return 0.0;
        }
        mib(self.bytes) / (self.elapsed_ms as f64 / 1000.0)
    }
}

/// Measured from where `shoal-ctl` runs, so it differs from run to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    /// Offsets above this many ms are warned about.
    pub clock_warn_ms: u64,
    /// Per reachable member, in the members' order.
    pub members: Vec<MeasuredMember>,
    /// Members whose clock is off the leader's by more than `clock_warn_ms`.
    pub clock_warnings: Vec<String>,
}

/// Round trip and clock offset of one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredMember {
    /// Node id.
    pub id: String,
    /// NODE_STATUS round trip, in microseconds.
    pub rtt_us: u64,
    /// Its clock minus the leader's, in ms (`None` without a reachable leader).
    pub clock_offset_ms: Option<f64>,
}

/// The whole cluster as `status` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// No problem found.
    pub healthy: bool,
    /// What makes the cluster unhealthy (empty when healthy).
    pub problems: Vec<String>,
    /// The cluster id, as the members report it.
    pub cluster_id: Option<String>,
    /// The table version of the table fetched.
    pub table_version: u64,
    /// Bucket count.
    pub buckets: u32,
    /// The leader (a reachable member that says it leads; the highest term wins).
    pub leader: Option<String>,
    /// Buckets with no primary, or whose primary did not answer.
    pub buckets_without_live_primary: u32,
    /// Members in id order.
    pub members: Vec<Member>,
    /// Bucket moves in progress, by bucket.
    pub moves: Vec<MoveReport>,
    /// Members that are draining (handing their buckets away before they stop), by id.
    pub draining: Vec<String>,
    /// Replica copies: wanted and in sync.
    pub replication: Replication,
    /// Round trips and clock offsets.
    pub measured: Measured,
}

/// Replica copies across the cluster, from the members' NODE_STATUS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// Copies per bucket besides its primary (the cluster's setting).
    pub setting: u32,
    /// Copies the setting asks for, over every bucket with a primary (fewer per bucket when
    /// there are fewer other active members).
    pub copies_wanted: u64,
    /// In-sync copies the reachable members hold.
    pub copies_in_sync: u64,
    /// Copies being built or catching up (reported by the primaries).
    pub copies_building: u64,
}

impl Replication {
    /// Whether every wanted copy is in sync.
    pub fn complete(&self) -> bool {
        self.copies_in_sync >= self.copies_wanted
    }
}

impl Report {
    /// The invariants `check` verifies that do not hold: the health problems, and replica
    /// copies not in sync.
    pub fn check_failures(&self) -> Vec<String> {
        let mut failed = self.problems.clone();
        let r = &self.replication;
        if !r.complete() {
            failed.push(format!(
                "{} of {} replica copies in sync ({} per bucket; {} building)",
                r.copies_in_sync, r.copies_wanted, r.setting, r.copies_building
            ));
        }
        failed
    }

    /// Builds the report from the table and one probe per table node (same order).
    pub fn build(table: &TableView, probes: &[Probe], clock_warn_ms: u64) -> Report {
        let owned = table.owned_counts();
        let mut members: Vec<(usize, Member)> = table
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let probe = probes.get(i);
                let status = probe.and_then(|p| p.status.as_ref().ok());
                let error = match probe.map(|p| &p.status) {
                    Some(Err(e)) => Some(e.clone()),
                    Some(Ok(_)) => None,
                    None => Some("not asked".to_string()),
                };
                let member = Member {
                    id: hex(&node.id),
                    state: node.state.name(),
                    native: node.native.clone(),
                    memcache: (!node.memcache.is_empty()).then(|| node.memcache.clone()),
                    buckets_owned: owned.get(i).copied().unwrap_or(0),
                    reachable: status.is_some(),
                    error,
                    status: status.map(|s| MemberStatus {
                        version: s.version.clone(),
                        raft_role: s.role.name(),
                        term: s.term,
                        last_applied: s.last_applied,
                        leader: s.leader.as_ref().map(hex),
                        table_version: s.table_version,
                        buckets_serving: s.buckets_owned,
                        memory_used: s.memory_used,
                        memory_limit: s.memory_limit,
                        items: s.items,
                        replica_of: s.replication.replica_of,
                        in_sync_of: s.replication.in_sync_of,
                        replicas_building: s.replication.building,
                        lease_left_ms: s.lease_left_ms,
                    }),
                };
                (i, member)
            })
            .collect();
        members.sort_by(|a, b| a.1.id.cmp(&b.1.id));

        // The leader: the reachable member that says it leads, in the highest term.
        let leader_index = probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.status.as_ref().ok().map(|s| (i, s)))
            .filter(|(_, s)| s.role == shoal_client::RaftRole::Leader)
            .max_by_key(|(i, s)| (s.term, std::cmp::Reverse(table.nodes[*i].id)))
            .map(|(i, _)| i);
        let cluster_id = probes
            .iter()
            .filter_map(|p| p.status.as_ref().ok())
            .filter_map(|s| s.cluster_id.as_ref())
            .map(hex)
            .max();

        let live: Vec<bool> = (0..table.nodes.len())
            .map(|i| probes.get(i).is_some_and(|p| p.status.is_ok()))
            .collect();
        let without_live_primary = table
            .buckets
            .iter()
            .filter(|b| {
                b.primary == NO_PRIMARY
                    || !live.get(usize::from(b.primary)).copied().unwrap_or(false)
            })
            .count() as u32;

        let mut problems = Vec::new();
        if leader_index.is_none() {
            problems.push("no leader: no reachable member says it leads".to_string());
        }
        for (_, m) in &members {
            if let Some(e) = &m.error {
                problems.push(format!("member {} ({}) unreachable: {e}", m.id, m.native));
            }
        }
        for (_, m) in &members {
            if m.status
                .as_ref()
                .is_some_and(|s| s.lease_left_ms == Some(0))
            {
                problems.push(format!(
                    "member {} ({}) holds no lease: it serves nothing",
                    m.id, m.native
                ));
            }
        }
        if without_live_primary > 0 {
            problems.push(format!(
                "{without_live_primary} of {} buckets without a live primary",
                table.buckets.len()
            ));
        }

        // Moves, by bucket: when both ends report one, the sender's report (not the
        // target's) is kept.
        let mut moves: std::collections::BTreeMap<u32, MoveReport> = Default::default();
        for (i, p) in probes.iter().enumerate() {
            let Ok(s) = &p.status else { continue };
            let reporter = table.nodes.get(i).map_or(s.node_id, |n| n.id);
            for m in &s.moves {
                let from = table
                    .buckets
                    .get(m.bucket as usize)
                    .and_then(|b| table.nodes.get(usize::from(b.primary)))
                    .map(|n| hex(&n.id));
                let report = MoveReport {
                    bucket: m.bucket,
                    from,
                    to: hex(&m.to),
                    phase: m.phase.name(),
                    bytes: m.bytes,
                    items: m.items,
                    elapsed_ms: m.elapsed_ms,
                    reported_by: hex(&reporter),
                };
                let by_sender = reporter != m.to;
                match moves.get(&m.bucket) {
                    Some(kept) if kept.reported_by != kept.to || !by_sender => {}
                    _ => {
                        moves.insert(m.bucket, report);
                    }
                }
            }
        }
        let draining: Vec<String> = members
            .iter()
            .filter(|(_, m)| m.state == NodeState::Draining.name())
            .map(|(_, m)| m.id.clone())
            .collect();
        let replication = replication(table, probes);

        let leader_offset = leader_index
            .and_then(|i| probes.get(i))
            .map(|p| p.offset_us);
        let mut measured = Measured {
            clock_warn_ms,
            members: Vec::new(),
            clock_warnings: Vec::new(),
        };
        for (i, m) in &members {
            let Some(p) = probes.get(*i).filter(|p| p.status.is_ok()) else {
                continue;
            };
            let offset_ms = leader_offset.map(|l| (p.offset_us - l) as f64 / 1000.0);
            if let Some(ms) = offset_ms.filter(|ms| ms.abs() > clock_warn_ms as f64) {
                measured.clock_warnings.push(format!(
                    "member {} ({}) clock is {ms:+.1} ms off the leader's (warn above {clock_warn_ms} ms)",
                    m.id, m.native
                ));
            }
            measured.members.push(MeasuredMember {
                id: m.id.clone(),
                rtt_us: p.rtt_us,
                clock_offset_ms: offset_ms,
            });
        }

        Report {
            healthy: problems.is_empty(),
            problems,
            cluster_id,
            table_version: table.version,
            buckets: table.buckets.len() as u32,
            leader: leader_index.map(|i| hex(&table.nodes[i].id)),
            buckets_without_live_primary: without_live_primary,
            members: members.into_iter().map(|(_, m)| m).collect(),
            moves: moves.into_values().collect(),
            draining,
            replication,
            measured,
        }
    }

    /// The report as a human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let none = || "-".to_string();
        let _ = writeln!(
            out,
            "cluster {}  table version {}  buckets {}  leader {}",
            self.cluster_id.clone().unwrap_or_else(none),
            self.table_version,
            self.buckets,
            self.leader.clone().unwrap_or_else(none),
        );
        let _ = writeln!(
            out,
            "{:<32}  {:<8}  {:<21}  {:<21}  {:<9}  {:>5}  {:>8}  {:>7}  {:>13}  {:>7}  {:>17}  {:>10}  {:>9}  {:>8}  VERSION",
            "ID", "STATE", "NATIVE", "MEMCACHE", "ROLE", "TERM", "APPLIED", "BUCKETS", "REPLICAS", "LEASE s", "MEMORY (MiB)", "ITEMS", "CLOCK ms", "RTT us"
        );
        for m in &self.members {
            let measured = self.measured.members.iter().find(|x| x.id == m.id);
            let clock = measured
                .and_then(|x| x.clock_offset_ms)
                .map_or_else(none, |ms| format!("{ms:+.1}"));
            let rtt = measured.map_or_else(none, |x| x.rtt_us.to_string());
            let memcache = m.memcache.clone().unwrap_or_else(none);
            match &m.status {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "{:<32}  {:<8}  {:<21}  {:<21}  {:<9}  {:>5}  {:>8}  {:>7}  {:>13}  {:>7}  {:>17}  {:>10}  {:>9}  {:>8}  {}",
                        m.id,
                        m.state,
                        m.native,
                        memcache,
                        s.raft_role,
                        s.term,
                        s.last_applied,
                        m.buckets_owned,
                        // In sync / held (+ own replicas being built).
                        if s.replicas_building > 0 {
                            format!("{}/{} +{}", s.in_sync_of, s.replica_of, s.replicas_building)
                        } else {
                            format!("{}/{}", s.in_sync_of, s.replica_of)
                        },
                        match s.lease_left_ms {
                            None => none(),
                            Some(0) => "none".to_string(),
                            Some(u64::MAX) => "-".to_string(),
                            Some(ms) => format!("{:.1}", ms as f64 / 1000.0),
                        },
                        format!("{:.1}/{:.1}", mib(s.memory_used), mib(s.memory_limit)),
                        s.items,
                        clock,
                        rtt,
                        s.version
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{:<32}  {:<8}  {:<21}  {:<21}  {:<9}  {:>5}  {:>8}  {:>7}  UNREACHABLE",
                        m.id, m.state, m.native, memcache, "-", "-", "-", m.buckets_owned
                    );
                }
            }
        }
        if !self.moves.is_empty() {
            let _ = writeln!(out, "moves in progress:");
            let _ = writeln!(
                out,
                "{:>6}  {:<32}  {:<32}  {:<9}  {:>12}  {:>8}  {:>9}",
                "BUCKET", "FROM", "TO", "PHASE", "COPIED (MiB)", "MiB/s", "ELAPSED s"
            );
            for m in &self.moves {
                let _ = writeln!(
                    out,
                    "{:>6}  {:<32}  {:<32}  {:<9}  {:>12.1}  {:>8.1}  {:>9.1}",
                    m.bucket,
                    m.from.clone().unwrap_or_else(none),
                    m.to,
                    m.phase,
                    mib(m.bytes),
                    m.mib_per_s(),
                    m.elapsed_ms as f64 / 1000.0
                );
            }
        }
        for id in &self.draining {
            let native = self
                .members
                .iter()
                .find(|m| &m.id == id)
                .map_or("", |m| m.native.as_str());
            let _ = writeln!(
                out,
                "draining: {id} ({native}) hands its buckets away, then stops"
            );
        }
        let r = &self.replication;
        if r.setting > 0 || r.copies_in_sync > 0 {
            let _ = writeln!(
                out,
                "replicas: {} per bucket; {} of {} copies in sync, {} building",
                r.setting, r.copies_in_sync, r.copies_wanted, r.copies_building
            );
        }
        for w in &self.measured.clock_warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        if self.healthy {
            let _ = writeln!(out, "healthy");
        } else {
            for p in &self.problems {
                let _ = writeln!(out, "problem: {p}");
            }
            let _ = writeln!(out, "UNHEALTHY");
        }
        out
    }
}

/// The cluster's replica copies: the setting (the highest any member reports), the copies
/// it asks for (per bucket with a primary, as many as there are other active members, up to
/// the setting) and those the reachable members hold in sync or build.
fn replication(table: &TableView, probes: &[Probe]) -> Replication {
    let statuses = || probes.iter().filter_map(|p| p.status.as_ref().ok());
    let setting = statuses().map(|s| s.replication.setting).max().unwrap_or(0);
    let active: Vec<bool> = table
        .nodes
        .iter()
        .map(|n| n.state == NodeState::Active)
        .collect();
    let active_count = active.iter().filter(|a| **a).count() as u64;
    let copies_wanted = table
        .buckets
        .iter()
        .filter(|b| b.primary != NO_PRIMARY)
        .map(|b| {
            let primary_active = active.get(usize::from(b.primary)).copied().unwrap_or(false);
            u64::from(setting).min(active_count - u64::from(primary_active))
        })
        .sum();
    Replication {
        setting,
        copies_wanted,
        copies_in_sync: statuses()
            .map(|s| u64::from(s.replication.in_sync_of))
            .sum(),
        copies_building: statuses().map(|s| u64::from(s.replication.building)).sum(),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::{MovePhase, MoveProgress, RaftRole, TableBucket, TableNode};

    fn table(n: u8) -> TableView {
        TableView {
            version: 7,
            nodes: (0..n)
                .map(|i| TableNode {
                    id: [i + 1; 16],
                    state: NodeState::Active,
                    native: format!("127.0.0.1:{}", 7400 + u16::from(i)),
                    memcache: String::new(),
                })
                .collect(),
            buckets: (0..8)
                .map(|b| TableBucket {
                    primary: (b % u16::from(n)),
                    epoch: 1,
                })
                .collect(),
        }
    }

    fn status(id: u8, role: RaftRole, wall: u64) -> NodeStatus {
        NodeStatus {
            node_id: [id; 16],
            cluster_id: Some([9; 16]),
            role,
            term: 2,
            last_applied: 10,
            leader: Some([1; 16]),
            table_version: 7,
            buckets_owned: 4,
            memory_used: 1 << 20,
            memory_limit: 64 << 20,
            items: 3,
            wall_clock_us: wall,
            version: "shoald 0.1.0".into(),
            moves: Vec::new(),
            replication: Default::default(),
            lease_left_ms: Some(5000),
        }
    }

    fn probe(s: NodeStatus, rtt_us: u64, offset_us: i64) -> Probe {
        Probe {
            status: Ok(s),
            rtt_us,
            offset_us,
        }
    }

    #[test]
    fn check_fails_while_replica_copies_are_missing() {
        let t = table(3);
        let with = |id: u8, role, in_sync_of: u32, building: u32| {
            let mut s = status(id, role, 0);
            s.replication = shoal_client::ReplicationStatus {
                setting: 2,
                replica_of: in_sync_of + building,
                in_sync_of,
                building,
            };
            probe(s, 100, 0)
        };
        // 8 buckets, 3 active members, 2 replicas each: 16 copies.
        let full = [
            with(1, RaftRole::Leader, 6, 0),
            with(2, RaftRole::Follower, 5, 0),
            with(3, RaftRole::Follower, 5, 0),
        ];
        let r = Report::build(&t, &full, 500);
        assert_eq!(r.replication.copies_wanted, 16);
        assert!(r.check_failures().is_empty(), "{:?}", r.check_failures());
        assert!(r
            .render()
            .contains("replicas: 2 per bucket; 16 of 16 copies in sync"));
        let short = [
            with(1, RaftRole::Leader, 6, 1),
            with(2, RaftRole::Follower, 4, 0),
            with(3, RaftRole::Follower, 5, 0),
        ];
        let r = Report::build(&t, &short, 500);
        assert!(r.healthy, "building copies do not make status unhealthy");
        assert_eq!(
            r.check_failures(),
            vec!["15 of 16 replica copies in sync (2 per bucket; 1 building)".to_string()]
        );
        // With one member draining, its buckets' copies go to the two others: 2 per bucket
        // for its buckets, 1 for the rest.
        let mut drained = t.clone();
        drained.nodes[2].state = NodeState::Draining;
        let r = Report::build(&drained, &full, 500);
        assert_eq!(r.replication.copies_wanted, 2 * 2 + 6);
    }

    #[test]
    fn a_healthy_cluster_reports_offsets_from_the_leader() {
        let t = table(2);
        let probes = [
            probe(status(1, RaftRole::Leader, 0), 100, 5_000),
            probe(status(2, RaftRole::Follower, 0), 300, 605_000),
        ];
        let r = Report::build(&t, &probes, 500);
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(r.leader.as_deref(), Some(&*hex(&[1; 16])));
        assert_eq!(r.members[0].buckets_owned, 4);
        assert_eq!(r.measured.members[1].clock_offset_ms, Some(600.0));
        assert_eq!(r.measured.clock_warnings.len(), 1);
        assert!(r.render().contains("healthy"));
        // The facts (all but `measured`) do not depend on the probes' order or timing.
        let later = [
            probe(status(1, RaftRole::Leader, 0), 900, -3_000),
            probe(status(2, RaftRole::Follower, 0), 10, -3_100),
        ];
        let again = Report::build(&t, &later, 500);
        assert_eq!(
            serde_json::to_value(Report {
                measured: r.measured.clone(),
                ..again
            })
            .unwrap(),
            serde_json::to_value(&r).unwrap()
        );
    }

    #[test]
    fn moves_in_progress_and_draining_members_are_listed_under_the_members() {
        let mut t = table(3);
        t.nodes[2].state = NodeState::Draining;
        // Bucket 1's primary is node index 1 (id [2; 16]); it sends to [3; 16].
        let progress = MoveProgress {
            bucket: 1,
            to: [3; 16],
            phase: MovePhase::Tail,
            bytes: 30 << 20,
            items: 500,
            elapsed_ms: 2_000,
        };
        let mut sender = status(2, RaftRole::Follower, 0);
        sender.moves = vec![progress];
        // The target reports the same move with less copied: the sender's report is kept.
        let mut target = status(3, RaftRole::Follower, 0);
        target.moves = vec![MoveProgress {
            bytes: 1,
            phase: MovePhase::Snapshot,
            ..progress
        }];
        let mut leader = status(1, RaftRole::Leader, 0);
        leader.moves = vec![MoveProgress {
            bucket: 6,
            to: [2; 16],
            phase: MovePhase::Parked,
            bytes: 0,
            items: 0,
            elapsed_ms: 0,
        }];
        // One probe per table node, in the table's order.
        let probes = [
            probe(leader, 1, 0),
            probe(sender, 1, 0),
            probe(target, 1, 0),
        ];
        let r = Report::build(&t, &probes, 500);
        assert_eq!(r.moves.len(), 2, "{:?}", r.moves);
        let m = &r.moves[0];
        assert_eq!(
            (m.bucket, m.from.as_deref(), m.phase, m.bytes),
            (1, Some(&*hex(&[2; 16])), "tail", 30 << 20)
        );
        assert_eq!(m.reported_by, hex(&[2; 16]));
        assert!((m.mib_per_s() - 15.0).abs() < 1e-9);
        assert_eq!(r.moves[1].mib_per_s(), 0.0);
        assert_eq!(r.draining, vec![hex(&[3; 16])]);
        let text = r.render();
        assert!(text.contains("moves in progress:"), "{text}");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .expect("a line for bucket 1");
        for want in [
            &*hex(&[2; 16]),
            &*hex(&[3; 16]),
            "tail",
            "30.0",
            "15.0",
            "2.0",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert!(
            text.contains(&format!("draining: {} (127.0.0.1:7402)", hex(&[3; 16]))),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["moves"][0]["phase"], "tail");
        assert_eq!(json["moves"][0]["to"], hex(&[3; 16]));
        assert_eq!(json["draining"][0], hex(&[3; 16]));
        // Without moves or draining members, nothing extra is printed.
        let calm = [
            probe(status(1, RaftRole::Leader, 0), 1, 0),
            probe(status(2, RaftRole::Follower, 0), 1, 0),
        ];
        let quiet = Report::build(&table(2), &calm, 500).render();
        assert!(
            !quiet.contains("moves") && !quiet.contains("draining"),
            "{quiet}"
        );
    }

    #[test]
    fn no_leader_an_unreachable_member_and_orphan_buckets_are_problems() {
        let t = table(2);
        let probes = [
            probe(status(1, RaftRole::Follower, 0), 100, 0),
            Probe {
                status: Err("connection refused".into()),
                rtt_us: 0,
                offset_us: 0,
            },
        ];
        let r = Report::build(&t, &probes, 500);
        assert!(!r.healthy);
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert_eq!(r.buckets_without_live_primary, 4);
        assert!(r.measured.members[0].clock_offset_ms.is_none());
        assert!(r.render().contains("UNREACHABLE"));
        let mut orphan = table(1);
        orphan.buckets[3].primary = NO_PRIMARY;
        let r = Report::build(&orphan, &[probe(status(1, RaftRole::Leader, 0), 1, 0)], 500);
        assert_eq!(r.problems, vec!["1 of 8 buckets without a live primary"]);
    }

    #[test]
    fn a_member_without_a_lease_is_a_problem_and_shows_in_the_lease_column() {
        let t = table(2);
        let mut lapsed = status(2, RaftRole::Follower, 0);
        lapsed.lease_left_ms = Some(0);
        let probes = [
            probe(status(1, RaftRole::Leader, 0), 100, 0),
            probe(lapsed, 100, 0),
        ];
        let r = Report::build(&t, &probes, 500);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("holds no lease"), "{:?}", r.problems);
        let text = r.render();
        assert!(
            text.contains("LEASE s") && text.contains("5.0") && text.contains("none"),
            "{text}"
        );
    }
}
