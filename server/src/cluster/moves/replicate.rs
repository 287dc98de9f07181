//! Replication, on the primary: one task per (bucket, replica) the applied table gives this
//! node, started and stopped by the table ([`drive`]). It builds the replica's copy with the
//! move's own steps, then keeps it in sync for as long as the table says.
//!
//! ```text
//!  primary P (epoch e)                                  replica R
//!  start the bucket's change log
//!  REPLICATE open / items (snapshot) / changes ──────►  hidden copy of b, applied in seq order
//!  caught up: open a gate leg for R (replies in b now wait for R too)
//!  catch up once more; propose JoinInSync(b, e, R) ──►  committed: R may be promoted
//!  for every write in b: its change-log record ──────►  applied; the reply's seq acked
//!  no answer within 1 s: propose LeaveInSync(b, e, R) (only while P holds its lease), and
//!  only once it committed close the leg (the held replies go out without R); then rebuild
//!  R from a fresh snapshot
//! ```
//!
//! What travels is the resulting item (hash, flags, seq, absolute expiry) or a delete or a
//! clear, read from the change log: never the command, so appends, increments and CAS
//! replay exactly and the value hash (the CAS token) is the same on both. A replica takes
//! records only from the primary its applied table names at the epoch the records carry
//! ([`super::Moves::receive`]); an old primary cannot get a write acknowledged through it.
//! A leg stays open until the table shows the replica left the in-sync set (or is no
//! longer a replica, or the primary changed): no write is acknowledged without an in-sync
//! replica while the table still calls it in sync. A primary that cannot reach the log to
//! commit the leave keeps holding those replies.

use super::source::{
    peer_addr, send_changes, send_snapshot, Context, LogReader, Stop, Target, CALL_TIMEOUT,
    RETRY_AFTER,
};
use crate::cluster::in_sync::Gate;
use crate::cluster::peer::PeerOpcode;
use crate::cluster::state::{Command, Outcome};
use crate::cluster::ClusterView;
use crate::datadir::NodeId;
use crate::store::Store;

use std::time::Duration;
use tokio::time::Instant;

/// How often an idle in-sync replica is asked whether it still holds its copy (a replica
/// that restarted has lost it and must leave the in-sync set before it could be promoted).
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often a primary without a lease looks again before it proposes a LeaveInSync.
const LEASE_POLL: Duration = Duration::from_millis(50);
/// Time allowed for each proposal of JoinInSync or LeaveInSync.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One replica of one bucket under one primary epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Copy {
    bucket: u32,
    replica: NodeId,
    epoch: u64,
}

/// Runs until the node stops: starts a task for every replica of every bucket the applied
/// table names this node primary of, and lets each end on its own (each checks the table).
pub async fn drive(ctx: Context) {
    let view = ctx.view.clone();
    let jobs = |state: &crate::cluster::state::ClusterState, me| {
        let mut jobs = Vec::new();
        for (b, bucket) in state.buckets.iter().enumerate() {
            if bucket.primary != Some(me) {
                continue;
            }
            for &replica in &bucket.replicas {
                let copy = Copy {
                    bucket: b as u32,
                    replica,
                    epoch: bucket.epoch,
                };
                jobs.push(((copy.bucket, replica), copy.epoch, copy));
            }
        }
        jobs
    };
    // A copy the table no longer wants (the bucket has another primary or epoch, or the
    // replica was dropped) is let go at once: its gate leg must not hold replies.
    super::drive_tasks(
        view,
        jobs,
        move |copy| {
            let ctx = ctx.clone();
            async move { keep(&ctx, copy).await }
        },
        true,
    )
    .await;
}

/// Whether the applied table still names this node primary of the bucket at the copy's
/// epoch, with the copy's node as a replica.
fn current(view: &ClusterView, copy: Copy) -> bool {
    view.state().bucket(copy.bucket).is_some_and(|b| {
        b.primary == Some(view.me()) && b.epoch == copy.epoch && b.replicas.contains(&copy.replica)
    })
}

/// Whether the applied table shows the copy in sync.
fn in_sync(view: &ClusterView, copy: Copy) -> bool {
    view.state()
        .bucket(copy.bucket)
        .is_some_and(|b| b.epoch == copy.epoch && b.in_sync.contains(&copy.replica))
}

/// Keeps one replica for as long as the table wants it: builds it, keeps it in sync, and
/// after a failure (the replica left the in-sync set first) builds it again.
async fn keep(ctx: &Context, copy: Copy) {
    loop {
        match attempt(ctx, copy).await {
            Ok(()) | Err(Stop::Gone) => return,
            Err(Stop::Failed(why)) => {
                tracing::warn!(bucket = copy.bucket, replica = %copy.replica, error = %why, "replica out of sync; building it again");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
        if !current(&ctx.view, copy) {
            return;
        }
    }
}

/// Proposes `cmd` (JoinInSync or LeaveInSync of `copy`) until the log answers: `Ok(true)`
/// once applied or already so, `Ok(false)` when the table moved on (a new primary, the
/// replica dropped), `Err` when refused or the leader cannot be reached by `deadline`.
async fn settle(
    ctx: &Context,
    copy: Copy,
    cmd: Command,
    deadline: Option<Instant>,
) -> Result<bool, Stop> {
    let leave = matches!(cmd, Command::LeaveInSync { .. });
    loop {
        let mut until = Instant::now() + PROPOSE_TIMEOUT;
        if leave {
            if !wait_leased(&ctx.view, copy).await {
                return Ok(false);
            }
            // Asked only while the lease holds: a proposal still being retried when it runs
            // out (a cut-off primary) could commit once the cut heals, just before the
            // leader fences this node. (`left` is capped: a lease that never ends is MAX.)
            if let Some(left) = ctx.view.lease().left(std::time::Instant::now()) {
                until = until.min(Instant::now() + left.min(PROPOSE_TIMEOUT));
            }
        }
        let until = deadline.map_or(until, |d| d.min(until));
        match (ctx.propose)(cmd.clone(), until).await {
            Ok(Outcome::Done | Outcome::Unchanged) => {
                wait_applied(&ctx.view, copy, &cmd).await;
                return Ok(current(&ctx.view, copy));
            }
            Ok(Outcome::Stale { .. }) => return Ok(false),
            Ok(Outcome::Refused(r)) => return Err(Stop::Failed(format!("{cmd:?} refused: {r:?}"))),
            Err(e) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Stop::Failed(format!("{cmd:?}: {e}")));
                }
                tracing::warn!(bucket = copy.bucket, replica = %copy.replica, error = %e, "cannot reach the log; asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until this node holds its lease (`true`) or the table no longer wants the copy
/// (`false`). A primary without a lease (cut off, and perhaps being fenced) must not take its
/// replicas out of the in-sync sets: they hold every write it acknowledged, its buckets fail
/// over to them, and it acknowledges nothing without a lease anyway. A lease granted again
/// means the leader does not fence it for a whole lease.
async fn wait_leased(view: &ClusterView, copy: Copy) -> bool {
    let mut applied = view.applied_changes();
    loop {
        applied.mark_unchanged();
        if !current(view, copy) {
            return false;
        }
        if view.leased() {
            return true;
        }
        // A renewal is not an applied change: look again every LEASE_POLL.
        if let Ok(Err(_)) = tokio::time::timeout(LEASE_POLL, applied.changed()).await {
            return false;
        }
    }
}

/// Waits until this node applied what `cmd` did (or the table moved on).
async fn wait_applied(view: &ClusterView, copy: Copy, cmd: &Command) {
    let join = matches!(cmd, Command::JoinInSync { .. });
    let mut applied = view.applied_changes();
    loop {
        applied.mark_unchanged();
        if !current(view, copy) || in_sync(view, copy) == join {
            return;
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// Takes the copy out of the in-sync set (and waits until this node applied that) before
/// any reply goes out without it. Asks until the log answers.
async fn leave(ctx: &Context, copy: Copy) {
    let cmd = Command::LeaveInSync {
        bucket: copy.bucket,
        epoch: copy.epoch,
        node: copy.replica,
    };
    if let Err(e) = settle(ctx, copy, cmd, None).await {
        tracing::warn!(bucket = copy.bucket, replica = %copy.replica, error = %e, "could not take a replica out of the in-sync set");
    }
}

/// One attempt: build the copy, bring it in sync, keep it so.
async fn attempt(ctx: &Context, copy: Copy) -> Result<(), Stop> {
    let view = &ctx.view;
    let store = ctx.store()?;
    if !current(view, copy) {
        return Err(Stop::Gone);
    }
    // In sync by the table, but not kept so by this task (this node restarted, or an
    // earlier attempt could not commit its leave): out first, then build it again.
    if in_sync(view, copy) {
        leave(ctx, copy).await;
        if !current(view, copy) {
            return Err(Stop::Gone);
        }
    }
    if view.is_held(copy.bucket) {
        return Err(Stop::Failed(
            "the bucket's saved items are not confirmed by the table yet".into(),
        ));
    }
    let addr = peer_addr(view, copy.replica)?;
    let started = Instant::now();
    store.start_change_log(copy.bucket)?;
    let _log = LogReader {
        store: &store,
        bucket: copy.bucket,
    };
    let target = Target {
        client: ctx.replica_link(copy.replica, addr),
        opcode: PeerOpcode::Replicate,
        id: copy.epoch,
        bucket: copy.bucket,
    };
    target.send(super::wire::Payload::Open).await?;
    let (mut through, bytes, items) =
        send_snapshot(ctx, &store, &target, || current(view, copy), |_, _| {}).await?;
    // The tail, until caught up (no reply waits for the replica yet).
    let mut no_fault = true;
    loop {
        if !current(view, copy) {
            return Err(Stop::Gone);
        }
        let (_, caught_up) =
            send_changes(ctx, &store, &target, &mut through, &mut no_fault, None).await?;
        if caught_up {
            break;
        }
    }
    // From here replies in the bucket wait for the replica too.
    let gate = view.in_sync().open(copy.bucket, through);
    let result = in_sync_phase(
        ctx,
        &store,
        &target,
        &gate,
        copy,
        &mut through,
        started,
        (bytes, items),
    )
    .await;
    // Whatever the join's outcome was, the copy is out of the in-sync set before the leg
    // closes.
    if result.is_err() && current(view, copy) {
        leave(ctx, copy).await;
    }
    drop(gate);
    result
}

/// With the gate leg open: joins the in-sync set, then sends every change as replies wait
/// for it, until the table no longer wants this copy (`Ok`) or the replica fails (`Err`;
/// the caller takes it out of the in-sync set before closing the leg).
#[allow(clippy::too_many_arguments)]
async fn in_sync_phase(
    ctx: &Context,
    store: &Store,
    target: &Target,
    gate: &Gate,
    copy: Copy,
    through: &mut u64,
    started: Instant,
    (bytes, items): (u64, u64),
) -> Result<(), Stop> {
    let view = &ctx.view;
    let mut no_fault = true;
    // Writes that ran between the last catch-up and the gate's opening were answered
    // without waiting for this copy: they reach it before the join is proposed, so that a
    // copy the table calls in sync holds every acknowledged write.
    send_changes(ctx, store, target, through, &mut no_fault, Some(gate)).await?;
    let join = Command::JoinInSync {
        bucket: copy.bucket,
        epoch: copy.epoch,
        node: copy.replica,
    };
    // Keep the replica in step while the join commits (replies already wait for it). A
    // failure meanwhile still waits for the join's outcome, so that the leave the caller
    // proposes next comes after it.
    {
        let joined = settle(ctx, copy, join, Some(Instant::now() + CALL_TIMEOUT));
        tokio::pin!(joined);
        loop {
            tokio::select! {
                r = &mut joined => {
                    if !r? {
                        return Err(Stop::Gone);
                    }
                    break;
                }
                () = gate.wanted() => {
                    if let Err(e) = send_changes(ctx, store, target, through, &mut no_fault, Some(gate)).await {
                        let _ = joined.await;
                        return Err(e);
                    }
                }
            }
        }
    }
    tracing::info!(
        bucket = copy.bucket,
        replica = %copy.replica,
        items,
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "replica in sync"
    );
    let mut applied = view.applied_changes();
    loop {
        applied.mark_unchanged();
        if !current(view, copy) {
            return Ok(());
        }
        if !in_sync(view, copy) {
            return Err(Stop::Failed("taken out of the in-sync set".into()));
        }
        let (_, caught_up) =
            send_changes(ctx, store, target, through, &mut no_fault, Some(gate)).await?;
        if !caught_up {
            continue;
        }
        tokio::select! {
            () = gate.wanted() => {}
            changed = applied.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(CHECK_EVERY) => {
                // An idle replica still holds the copy up to here (one that restarted
                // refuses: not open there).
                let held = target
                    .send_within(
                        super::wire::Payload::Changes { through: *through, changes: Vec::new() },
                        super::source::IN_SYNC_TIMEOUT,
                    )
                    .await?;
                if held < *through {
                    return Err(Stop::Failed(format!(
                        "the replica holds seq {held}, not {through}"
                    )));
                }
            }
        }
    }
}
