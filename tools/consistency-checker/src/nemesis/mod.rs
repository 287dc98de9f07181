//! The nemesis: a local cluster of `shoald` processes and the faults that disturb it, at
//! random intervals drawn from a seed.
//!
//! ```text
//!  run(): every interval ── choose a Fault and its target (Plan: node, its buckets from the
//!     │                     table read just before, a seed)
//!     ├─ begin: close the windows of faults that ended, open one for the plan's buckets
//!     │         (availability.rs), print "begin"
//!     ├─ spawn faults::execute(plan) ── prints "done" when the node serves again
//!     └─ at most --max-down faults at once; a full stop waits for the others and runs alone
//! ```
//!
//! Modules: [`process`] owns the `shoald` processes ([`Node`], [`Cluster`]); [`faults`] does
//! one fault. Faults ([`Fault`]): graceful restart, kill, pause, join (a new member), drain
//! (a member leaves), leader (stop or kill the Raft leader), full stop, partition (a
//! `fault-injection` build cut off from its peers), lag-kill (pause one node, kill another
//! meanwhile). Every fault is printed with a timestamp
//! when it begins and when the node serves again, and its unavailability when its window
//! closes.
//!
//! A kill (and a graceful stop that had to be finished with SIGKILL, and a node that died by
//! itself, which also counts as a node failure) is reported to the model through
//! [`NemesisContext::crash`] with the buckets whose only copy it lost: the buckets whose
//! primary was that node, without replicas; none with replicas.

pub mod faults;
pub mod process;

pub use process::{Cluster, ClusterSpec, Node, Stopped};

use crate::availability::{Availability, WindowId};
use crate::control::{all_buckets, buckets_of, Control};
use crate::report::{timestamp, Clock, Counters, FaultRecord};
use crate::CheckerError;
use faults::Plan;
use shoal_client::RoutingStats;
use shoal_client::TableView;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How many draws a fault may take to find one that applies (a join at `--max-nodes`, a
/// drain of the last node, a leader that is busy with another fault).
const DRAWS: usize = 8;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGTERM, wait for a clean exit, start again.
    Graceful,
    /// SIGKILL, start again.
    Kill,
    /// SIGSTOP, wait, SIGCONT.
    Pause,
    /// Start a new node that joins the cluster and stays.
    Join,
    /// Stop a node gracefully for good: it leaves.
    Drain,
    /// Stop (or kill, a coin flip) the Raft leader, start it again.
    Leader,
    /// Stop every node gracefully, wait, start every node.
    FullStop,
    /// Cut a node off from its peers (SIGUSR1), heal it later (SIGUSR2).
    Partition,
    /// Pause one node (SIGSTOP) until its replica copies fall out of sync, SIGKILL another
    /// while it is paused, resume the first, start the killed one again.
    LagKill,
}

impl Fault {
    /// Every fault kind.
    pub const ALL: [Fault; 9] = [
        Fault::Graceful,
        Fault::Kill,
        Fault::Pause,
        Fault::Join,
        Fault::Drain,
        Fault::Leader,
        Fault::FullStop,
        Fault::Partition,
        Fault::LagKill,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Graceful => "graceful",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Join => "join",
            Fault::Drain => "drain",
            Fault::Leader => "leader",
            Fault::FullStop => "full-stop",
            Fault::Partition => "partition",
            Fault::LagKill => "lag-kill",
        }
    }

    /// Parses a name from [`Fault::as_str`], or `full-restart` (the older name of
    /// `full-stop`).
    pub fn parse(s: &str) -> Option<Fault> {
        if s == "full-restart" {
            return Some(Fault::FullStop);
        }
        Fault::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// How the nemesis behaves.
#[derive(Debug, Clone)]
pub struct NemesisSpec {
    /// Faults to choose from (none: the nemesis only watches for nodes that die).
    pub faults: Vec<Fault>,
    /// Time between faults, drawn uniformly from this range.
    pub interval: (Duration, Duration),
    /// Length of a pause, drawn uniformly from this range.
    pub pause: (Duration, Duration),
    /// Length of a partition, drawn uniformly from this range.
    pub partition: (Duration, Duration),
    /// How long a stopped or killed node stays down before it starts again.
    pub down: (Duration, Duration),
    /// Time every node stays down in a full stop.
    pub full_stop_wait: Duration,
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Copies of each bucket besides its primary: 0 means a kill loses the node's buckets.
    pub replicas: u32,
    /// Most faults (so nodes affected) at once.
    pub max_down: usize,
    /// Most live nodes (joins stop there).
    pub max_nodes: usize,
}

/// Told the buckets whose only copy a crash lost (called with an empty slice when nothing
/// was lost).
pub type CrashFn = Arc<dyn Fn(&[u32]) + Send + Sync>;

/// Reads the clients' routing counters so far (redirects followed, tables fetched).
pub type RoutingFn = Arc<dyn Fn() -> RoutingStats + Send + Sync>;

/// Everything the nemesis shares with the rest of the run.
#[derive(Clone)]
pub struct NemesisContext {
    /// Tells the model which buckets lost their only copy.
    pub crash: CrashFn,
    /// The clients' routing counters, read when a fault's window opens and closes.
    pub routing: RoutingFn,
    /// Per-fault unavailability windows (the workers report successes to it).
    pub availability: Arc<Availability>,
    /// The cluster's table and leader.
    pub control: Arc<Control>,
    /// Counters (faults, node failures).
    pub counters: Arc<Counters>,
    /// The run's clock.
    pub clock: Clock,
    /// Set to stop injecting faults.
    pub stop: Arc<AtomicBool>,
    /// Aimed at a node while it is cut off from its peers.
    pub probe: Arc<crate::probe::Probe>,
}

impl std::fmt::Debug for NemesisContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NemesisContext")
            .field("availability", &self.availability)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// A fault's unavailability window, open until the first fault that begins after this one
/// ended (or the end of the nemesis).
#[derive(Debug)]
struct Window {
    record: usize,
    id: WindowId,
    ended: bool,
    /// The clients' routing counters when it opened.
    routing: RoutingStats,
}

/// What a fault task gives back.
#[derive(Debug)]
struct Done {
    record: usize,
    took: Duration,
    addr: String,
    result: Result<(), CheckerError>,
}

/// The scheduler's state.
struct Scheduler {
    spec: NemesisSpec,
    ctx: NemesisContext,
    rng: fastrand::Rng,
    log: Vec<FaultRecord>,
    windows: Vec<Window>,
    /// Node indices each running fault (by record) holds.
    busy: Vec<(usize, Vec<usize>)>,
    tasks: JoinSet<Done>,
    /// The last table read, for a node found dead when no member answers.
    last_table: Option<TableView>,
}

/// Runs the nemesis until `ctx.stop` is set, then waits for the faults under way and makes
/// sure every node is running again. Returns the cluster, the faults done, and an error when
/// a fault could not be done or a node could not be started again (the run cannot go on).
pub async fn run(
    mut cluster: Cluster,
    spec: NemesisSpec,
    ctx: NemesisContext,
) -> (Cluster, Vec<FaultRecord>, Result<(), CheckerError>) {
    let mut s = Scheduler {
        rng: fastrand::Rng::with_seed(spec.seed),
        spec,
        ctx,
        log: Vec::new(),
        windows: Vec::new(),
        busy: Vec::new(),
        tasks: JoinSet::new(),
        last_table: None,
    };
    let result = s.schedule(&mut cluster).await;
    let finished = s.finish_all().await;
    let result = match (result, finished) {
        (Ok(()), Ok(())) => s.revive_dead(&cluster).await,
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    };
    let now = s.ctx.clock.elapsed();
    s.close_windows(now, true);
    (cluster, s.log, result)
}

impl Scheduler {
    async fn schedule(&mut self, cluster: &mut Cluster) -> Result<(), CheckerError> {
        loop {
            while self.tasks.len() >= self.spec.max_down.max(1) {
                self.finish_one().await?;
            }
            let wait = between(&mut self.rng, self.spec.interval);
            if sleep_unless_stopped(wait, &self.ctx.stop).await {
                return Ok(());
            }
            while let Some(done) = self.tasks.try_join_next() {
                self.finished(done)?;
            }
            self.revive_dead(cluster).await?;
            if self.spec.faults.is_empty() {
                continue;
            }
            let Some(plan) = self.plan(cluster).await? else {
                continue;
            };
            let record = self.begin(&plan);
            let exclusive = plan.fault == Fault::FullStop;
            let held: Vec<usize> = plan.nodes.iter().map(|n| n.index).collect();
            let (cspec, spec, ctx) = (cluster.spec.clone(), self.spec.clone(), self.ctx.clone());
            let task = async move {
                let started = ctx.clock.elapsed();
                let result = faults::execute(&plan, &cspec, &spec, &ctx).await;
                let took = ctx.clock.elapsed().saturating_sub(started);
                let addr = plan
                    .nodes
                    .first()
                    .map(|n| n.addr_text())
                    .unwrap_or_default();
                let outcome = match (&result, plan.fault) {
                    (Err(_), _) => "failed after",
                    (Ok(()), Fault::Drain) => "left in",
                    (Ok(()), _) => "serving again in",
                };
                println!(
                    "{} {:>8.3}s fault {} {}: {outcome} {:.3}s",
                    timestamp(),
                    ctx.clock.elapsed().as_secs_f64(),
                    plan.fault.as_str(),
                    target(&plan),
                    took.as_secs_f64()
                );
                Done {
                    record,
                    took,
                    addr,
                    result,
                }
            };
            if exclusive {
                // A full stop runs alone: nothing else starts until it is over.
                let done = task.await;
                self.finished(Ok(done))?;
            } else {
                self.busy.push((record, held));
                self.tasks.spawn(task);
            }
        }
    }

    /// Chooses the next fault and its target; `None` when no draw applies now.
    async fn plan(&mut self, cluster: &mut Cluster) -> Result<Option<Plan>, CheckerError> {
        for _ in 0..DRAWS {
            let fault = self.spec.faults[self.rng.usize(..self.spec.faults.len())];
            if fault == Fault::FullStop {
                self.finish_all().await?;
            }
            let free: Vec<Arc<Node>> = cluster
                .live()
                .filter(|n| !self.is_busy(n.index))
                .cloned()
                .collect();
            let live = cluster.live().count();
            let mut addrs: Vec<String> = free.iter().map(|n| n.addr_text()).collect();
            for a in cluster.addrs() {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            let nodes = match fault {
                Fault::Join if live >= self.spec.max_nodes => continue,
                Fault::Join => vec![cluster.add_joiner()?],
                Fault::Drain if live <= 1 || free.is_empty() => continue,
                Fault::LagKill if free.len() < 2 => continue,
                Fault::LagKill => {
                    // The node to kill first, then the one paused (held by the fault too).
                    let victim = self.rng.usize(..free.len());
                    let lagger = (victim + 1 + self.rng.usize(..free.len() - 1)) % free.len();
                    vec![free[victim].clone(), free[lagger].clone()]
                }
                Fault::FullStop => cluster.live().cloned().collect(),
                Fault::Leader => {
                    let free_addrs: Vec<String> = free.iter().map(|n| n.addr_text()).collect();
                    let Some(leader) = self.ctx.control.leader(&free_addrs).await else {
                        continue;
                    };
                    free.iter()
                        .filter(|n| n.addr_text() == leader)
                        .cloned()
                        .collect()
                }
                _ if free.is_empty() => continue,
                _ => vec![free[self.rng.usize(..free.len())].clone()],
            };
            if nodes.is_empty() {
                continue;
            }
            let table = self.ctx.control.table(&addrs).await.ok();
            if table.is_some() {
                self.last_table.clone_from(&table);
            }
            let buckets = match (fault, &table) {
                (Fault::Join, _) => Vec::new(),
                (Fault::FullStop, Some(t)) => all_buckets(t),
                (_, Some(t)) => buckets_of(t, &nodes[0].addr_text()),
                // No member answered: assume the worst for the model and the window.
                (_, None) => (0..self.ctx.availability.buckets()).collect(),
            };
            return Ok(Some(Plan {
                fault,
                nodes,
                buckets,
                table,
                seed: self.rng.u64(..),
                addrs: cluster.addrs(),
            }));
        }
        Ok(None)
    }

    fn is_busy(&self, index: usize) -> bool {
        self.busy.iter().any(|(_, nodes)| nodes.contains(&index))
    }

    /// Closes the windows of faults that ended, opens this one's, prints and records it.
    fn begin(&mut self, plan: &Plan) -> usize {
        let now = self.ctx.clock.elapsed();
        self.close_windows(now, false);
        let record = self.log.len();
        if !plan.buckets.is_empty() {
            if let Some(id) = self.ctx.availability.open(&plan.buckets, now) {
                self.windows.push(Window {
                    record,
                    id,
                    ended: false,
                    routing: (self.ctx.routing)(),
                });
            }
        }
        let node = plan.nodes.first();
        println!(
            "{} {:>8.3}s fault {} {}: begin ({} buckets)",
            timestamp(),
            now.as_secs_f64(),
            plan.fault.as_str(),
            target(plan),
            plan.buckets.len()
        );
        self.log.push(FaultRecord {
            at_s: now.as_secs_f64(),
            kind: plan.fault.as_str().to_string(),
            node: (plan.fault != Fault::FullStop)
                .then(|| node.map(|n| n.index))
                .flatten(),
            addr: (plan.fault != Fault::FullStop)
                .then(|| node.and_then(|n| n.addr().map(|a| a.to_string())))
                .flatten(),
            buckets: u32::try_from(plan.buckets.len()).unwrap_or(u32::MAX),
            took_s: 0.0,
            unavailable_read_ms: None,
            unavailable_write_ms: None,
            redirects: None,
            table_fetches: None,
        });
        record
    }

    /// Closes the windows of faults that ended (every window when `all`) at `now`.
    fn close_windows(&mut self, now: Duration, all: bool) {
        let (close, keep): (Vec<Window>, Vec<Window>) = std::mem::take(&mut self.windows)
            .into_iter()
            .partition(|w| all || w.ended);
        self.windows = keep;
        for w in close {
            let u = self.ctx.availability.close(w.id, now);
            let routing = (self.ctx.routing)();
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let r = &mut self.log[w.record];
            r.unavailable_read_ms = Some(ms(u.read));
            r.unavailable_write_ms = Some(ms(u.write));
            r.redirects = Some(routing.redirects.saturating_sub(w.routing.redirects));
            r.table_fetches = Some(
                routing
                    .table_fetches
                    .saturating_sub(w.routing.table_fetches),
            );
            let who = match (r.node, &r.addr) {
                (Some(i), Some(a)) => format!("node {i} ({a})"),
                (Some(i), None) => format!("node {i}"),
                _ => "all nodes".to_string(),
            };
            println!(
                "{} {:>8.3}s fault {} {who} at {:.3}s: {} buckets, longest without a read {} ms, without a write {} ms; clients followed {} redirects, fetched {} tables",
                timestamp(),
                now.as_secs_f64(),
                r.kind,
                r.at_s,
                r.buckets,
                ms(u.read),
                ms(u.write),
                r.redirects.unwrap_or(0),
                r.table_fetches.unwrap_or(0),
            );
        }
    }

    /// Takes in a finished fault.
    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) -> Result<(), CheckerError> {
        let done = done.map_err(|e| CheckerError::Node(format!("fault task: {e}")))?;
        self.busy.retain(|(r, _)| *r != done.record);
        for w in &mut self.windows {
            if w.record == done.record {
                w.ended = true;
            }
        }
        let r = &mut self.log[done.record];
        r.took_s = done.took.as_secs_f64();
        if r.addr.is_none() && r.node.is_some() {
            r.addr = Some(done.addr);
        }
        Counters::bump(&self.ctx.counters.faults);
        done.result
    }

    async fn finish_one(&mut self) -> Result<(), CheckerError> {
        match self.tasks.join_next().await {
            Some(done) => self.finished(done),
            None => Ok(()),
        }
    }

    /// Waits for every fault under way; the first error wins.
    async fn finish_all(&mut self) -> Result<(), CheckerError> {
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            let r = self.finished(done);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Restarts live nodes that no fault holds and that died by themselves (each is a node
    /// failure, and a crash of its buckets).
    async fn revive_dead(&mut self, cluster: &Cluster) -> Result<(), CheckerError> {
        for node in cluster.live() {
            if self.is_busy(node.index) {
                continue;
            }
            let status = node.exited();
            if node.running() {
                continue;
            }
            Counters::bump(&self.ctx.counters.node_failures);
            let addr = node.addr_text();
            eprintln!(
                "{} NODE FAILURE node {} ({addr}) was not running (exit status {status:?}); starting it",
                timestamp(),
                node.index
            );
            let others: Vec<String> = cluster.addrs().into_iter().filter(|a| *a != addr).collect();
            let table = match self.ctx.control.table(&others).await {
                Ok(t) => Some(t),
                Err(_) => self.last_table.clone(),
            };
            let buckets = match &table {
                Some(t) => buckets_of(t, &addr),
                None => (0..self.ctx.availability.buckets()).collect(),
            };
            (self.ctx.crash)(&faults::lost(&self.spec, &buckets));
            node.start(&cluster.spec).await?;
        }
        Ok(())
    }
}

/// `node I (ADDR)`, `node I (new)` or `all nodes`; a lag-kill adds `, node J paused`.
fn target(plan: &Plan) -> String {
    let first = match (plan.fault, plan.nodes.first()) {
        (Fault::FullStop, _) | (_, None) => "all nodes".to_string(),
        (_, Some(n)) => match n.addr() {
            Some(a) => format!("node {} ({a})", n.index),
            None => format!("node {} (new)", n.index),
        },
    };
    match (plan.fault, plan.nodes.get(1)) {
        (Fault::LagKill, Some(lagger)) => format!("{first}, node {} paused", lagger.index),
        _ => first,
    }
}

/// Sleeps for `d`, waking early when `stop` is set; returns whether it was.
async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
    stop.load(Ordering::SeqCst)
}

/// A duration drawn uniformly from `[lo, hi]`.
pub fn between(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let (lo, hi) = (
        lo.as_millis() as u64,
        hi.as_millis().max(lo.as_millis()) as u64,
    );
    Duration::from_millis(rng.u64(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.as_str()), Some(f));
        }
        assert_eq!(Fault::parse("full-restart"), Some(Fault::FullStop));
        assert_eq!(Fault::parse("reboot"), None);
    }

    #[test]
    fn between_stays_in_range() {
        let mut rng = fastrand::Rng::with_seed(1);
        let r = (Duration::from_millis(100), Duration::from_millis(200));
        for _ in 0..1000 {
            let d = between(&mut rng, r);
            assert!(d >= r.0 && d <= r.1);
        }
        let fixed = (Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(between(&mut rng, fixed), Duration::from_secs(1));
    }
}
