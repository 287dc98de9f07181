//! Doing one fault: what each [`Fault`] does to the node(s) it was given, from the first
//! signal until the node(s) serve again, and what it tells the model.
//!
//! The scheduler (`nemesis/mod.rs`) decides the fault, its target and the table read just
//! before it ([`Plan`]); this module only acts on them, so faults on different nodes can run
//! at once.

use super::process::{ClusterSpec, Node, Stopped, FORM_TIMEOUT};
use super::{between, Fault, NemesisContext, NemesisSpec};
use crate::control::buckets_of;
use crate::probe::Aim;
use crate::report::{timestamp, Counters};
use crate::CheckerError;
use shoal_client::TableView;
use std::sync::Arc;
use std::time::Duration;

/// The line a `fault-injection` build logs when SIGUSR1 cuts it off from its peers.
pub const CUT_LINE: &str = "FAULT INJECTION: peers cut off";

/// The line it logs when SIGUSR2 heals the cut.
pub const HEALED_LINE: &str = "FAULT INJECTION: peers healed";

/// How long after the signal the partition's log line may take.
pub const PARTITION_LOG_TIMEOUT: Duration = Duration::from_secs(3);

/// One fault, decided.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The kind.
    pub fault: Fault,
    /// The node(s) it works on: one, every live node for a full stop, the new node for a
    /// join.
    pub nodes: Vec<Arc<Node>>,
    /// The buckets whose primary was the target (every bucket for a full stop, none for a
    /// join), from `table`.
    pub buckets: Vec<u32>,
    /// The table read just before the fault (`None` when no member answered).
    pub table: Option<TableView>,
    /// Seed of the fault's own choices (pause length, the leader's stop or kill).
    pub seed: u64,
    /// The live native addresses, to check that the cluster forms again.
    pub addrs: Vec<String>,
}

/// Does `plan`'s fault and brings its node(s) back (except a drain).
///
/// # Errors
/// When a node does not start again, the cluster does not form again after a full stop,
/// or a partition is asked of a `shoald` without the `fault-injection` feature.
pub async fn execute(
    plan: &Plan,
    cspec: &ClusterSpec,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
) -> Result<(), CheckerError> {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let Some(node) = plan.nodes.first() else {
        return Ok(());
    };
    match plan.fault {
        Fault::Graceful => restart(node, plan, cspec, spec, ctx, Down::Graceful, &mut rng).await,
        Fault::Kill => restart(node, plan, cspec, spec, ctx, Down::Kill, &mut rng).await,
        Fault::Leader => {
            let (how, name) = if rng.bool() {
                (Down::Kill, "kill")
            } else {
                (Down::Graceful, "graceful stop")
            };
            println!("{} fault leader: {name}", timestamp());
            restart(node, plan, cspec, spec, ctx, how, &mut rng).await
        }
        Fault::Pause => {
            node.signal("STOP").await;
            tokio::time::sleep(between(&mut rng, spec.pause)).await;
            node.signal("CONT").await;
            Ok(())
        }
        Fault::Join => node.start(cspec).await,
        Fault::Drain => {
            take_down(node, plan, cspec, spec, ctx, Down::Graceful).await;
            node.set_left();
            Ok(())
        }
        Fault::FullStop => full_stop(plan, cspec, spec, ctx).await,
        Fault::Partition => partition(node, plan, &mut rng, spec, ctx).await,
        Fault::LagKill => match plan.nodes.get(1) {
            Some(lagger) => lag_kill(node, lagger, plan, cspec, spec, ctx, &mut rng).await,
            None => Ok(()),
        },
    }
}

/// How a node is taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// SIGTERM, wait for the exit.
    Graceful,
    /// SIGKILL.
    Kill,
}

/// Takes `node` down: SIGTERM and wait for a clean exit (anything else is a node failure),
/// or SIGKILL and tell the model which buckets lost their only copy.
async fn take_down(
    node: &Node,
    plan: &Plan,
    cspec: &ClusterSpec,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
    how: Down,
) {
    match how {
        Down::Graceful => {
            let stopped = node.stop_gracefully(cspec.stop_timeout).await;
            note_stop(ctx, spec, node, stopped, &plan.buckets);
        }
        Down::Kill => {
            node.kill().await;
            (ctx.crash)(&lost(spec, &plan.buckets));
        }
    }
}

/// Takes `node` down, keeps it down for `--down`, starts it again.
async fn restart(
    node: &Node,
    plan: &Plan,
    cspec: &ClusterSpec,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
    how: Down,
    rng: &mut fastrand::Rng,
) -> Result<(), CheckerError> {
    take_down(node, plan, cspec, spec, ctx, how).await;
    tokio::time::sleep(between(rng, spec.down)).await;
    node.start(cspec).await
}

/// Stops every node gracefully (in index order), waits, starts them all at once (a member
/// may wait for the others to serve), and waits until every bucket has a primary again.
async fn full_stop(
    plan: &Plan,
    cspec: &ClusterSpec,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
) -> Result<(), CheckerError> {
    for node in &plan.nodes {
        let stopped = node.stop_gracefully(cspec.stop_timeout).await;
        let buckets = match (&plan.table, node.addr()) {
            (Some(t), Some(a)) => buckets_of(t, &a.to_string()),
            _ => plan.buckets.clone(),
        };
        note_stop(ctx, spec, node, stopped, &buckets);
    }
    tokio::time::sleep(spec.full_stop_wait).await;
    let mut starts = tokio::task::JoinSet::new();
    for node in &plan.nodes {
        let (node, cspec) = (node.clone(), cspec.clone());
        starts.spawn(async move { node.start(&cspec).await });
    }
    while let Some(started) = starts.join_next().await {
        started.map_err(|e| CheckerError::Node(format!("start task: {e}")))??;
    }
    ctx.control
        .wait_formed(&plan.addrs, plan.nodes.len(), FORM_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|e| CheckerError::Node(format!("after a full stop, the cluster {e}")))
}

/// SIGSTOP `lagger` for `--pause` (its copies stop acknowledging and leave the in-sync sets
/// after about a second), SIGKILL `victim` while it is paused, SIGCONT `lagger`, keep
/// `victim` down for `--down`, start it again.
///
/// A bucket of the victim whose only in-sync copy was on the lagger has no copy left that
/// holds every acknowledged write: it may come back empty (the model allows misses on every
/// bucket the victim owned when it died), never with the lagger's older values, which is what
/// promoting a copy that was not in sync gives.
async fn lag_kill(
    victim: &Node,
    lagger: &Node,
    plan: &Plan,
    cspec: &ClusterSpec,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
    rng: &mut fastrand::Rng,
) -> Result<(), CheckerError> {
    lagger.signal("STOP").await;
    tokio::time::sleep(between(rng, spec.pause)).await;
    victim.kill().await;
    // Moves to the victim went on while the lagger was paused: the buckets it owned when it
    // died are the table's now (it is not fenced before its lease ran out), read from the
    // nodes still running, with those of the table read before the fault.
    let victim_addr = victim.addr_text();
    let lagger_addr = lagger.addr_text();
    let others: Vec<String> = plan
        .addrs
        .iter()
        .filter(|a| **a != victim_addr && **a != lagger_addr)
        .cloned()
        .collect();
    let mut buckets = plan.buckets.clone();
    if let Ok(table) = ctx.control.table(&others).await {
        buckets.extend(buckets_of(&table, &victim_addr));
        buckets.sort_unstable();
        buckets.dedup();
    }
    (ctx.crash)(&buckets);
    lagger.signal("CONT").await;
    tokio::time::sleep(between(rng, spec.down)).await;
    victim.start(cspec).await
}

/// SIGUSR1 (cut), wait, SIGUSR2 (heal); each must show in the node's log. The probe reads
/// from the node while it is cut off.
async fn partition(
    node: &Node,
    plan: &Plan,
    rng: &mut fastrand::Rng,
    spec: &NemesisSpec,
    ctx: &NemesisContext,
) -> Result<(), CheckerError> {
    let from = node.log_len();
    node.signal("USR1").await;
    if !node
        .wait_for_log(CUT_LINE, from, PARTITION_LOG_TIMEOUT)
        .await
    {
        node.signal("USR2").await;
        return Err(CheckerError::Node(format!(
            "partition needs a shoald built with --features fault-injection \
             (node {} did not log {CUT_LINE:?} within {PARTITION_LOG_TIMEOUT:?} of SIGUSR1; log: {})",
            node.index,
            node.log().display()
        )));
    }
    if let Some(memcache) = node.memcache_addr() {
        ctx.probe.aim(Some(Aim {
            memcache: memcache.to_string(),
            buckets: plan.buckets.clone(),
        }));
    }
    tokio::time::sleep(between(rng, spec.partition)).await;
    ctx.probe.aim(None);
    let from = node.log_len();
    node.signal("USR2").await;
    if !node
        .wait_for_log(HEALED_LINE, from, PARTITION_LOG_TIMEOUT)
        .await
    {
        return Err(CheckerError::Node(format!(
            "node {} did not log {HEALED_LINE:?} within {PARTITION_LOG_TIMEOUT:?} of SIGUSR2 (log: {})",
            node.index,
            node.log().display()
        )));
    }
    Ok(())
}

/// The buckets whose only copy a crash of their primary loses: all of them without
/// replicas, none with.
pub fn lost(spec: &NemesisSpec, buckets: &[u32]) -> Vec<u32> {
    if spec.replicas == 0 {
        buckets.to_vec()
    } else {
        Vec::new()
    }
}

/// Counts a graceful stop that was not clean as a node failure (and a crash of `buckets`
/// when it had to be killed).
pub fn note_stop(
    ctx: &NemesisContext,
    spec: &NemesisSpec,
    node: &Node,
    stopped: Stopped,
    buckets: &[u32],
) {
    let index = node.index;
    match stopped {
        Stopped::Clean => {}
        Stopped::BadExit(status) => {
            Counters::bump(&ctx.counters.node_failures);
            eprintln!(
                "{} NODE FAILURE node {index} exited with {status} on a graceful stop",
                timestamp()
            );
        }
        Stopped::Killed => {
            Counters::bump(&ctx.counters.node_failures);
            (ctx.crash)(&lost(spec, buckets));
            eprintln!(
                "{} NODE FAILURE node {index} did not stop in time and was killed",
                timestamp()
            );
        }
    }
}
