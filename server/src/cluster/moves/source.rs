//! The source side of a move: one task per move this node is the source of, started and
//! stopped by the applied table ([`drive`]).
//!
//! A move's task: start the bucket's change log; open the copy on the target; send the
//! snapshot in batches (a few in flight, within the node's bandwidth budget); send the
//! change log from the snapshot's start until the target is caught up; bring the target in
//! sync (from then on every reply in the bucket waits until the target holds its write:
//! [`crate::cluster::in_sync`]) and catch up once more, so what is left is bounded by the
//! requests in flight, at any write rate; park the bucket; send the rest; have the target
//! confirm it holds everything; propose the switchover
//! ([`Command::FinishMove`]); once this node applied it, unpark (the waiting requests are
//! redirected) and drop the copy. A failed attempt (the bucket is unparked first) retries
//! from a fresh snapshot after a pause, a few times, then cancels the move (the planner may
//! try again, possibly elsewhere).

use super::wire::{item_len, MoveRequest, Payload};
use crate::cluster::in_sync::Gate;
use crate::cluster::peer::{PeerCallError, PeerClient, PeerIdentity, PeerOpcode};
use crate::cluster::state::{Command, Move, Outcome};
use crate::cluster::ClusterView;
use crate::datadir::NodeId;
use crate::store::{ChangeLogError, OwnedItem, Store};
use shoal_proto::cluster::{MovePhase, MoveProgress};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Proposes a command through the Raft leader and answers its outcome (or why it is not
/// known).
pub type Proposer = Arc<
    dyn Fn(Command, Instant) -> Pin<Box<dyn Future<Output = Result<Outcome, String>> + Send>>
        + Send
        + Sync,
>;

/// Bytes of items per MOVE request.
const BATCH_BYTES: usize = 256 * 1024;
/// Changes per MOVE request.
const CHANGES_PER_REQUEST: usize = 1024;
/// Snapshot requests in flight at once.
const WINDOW: usize = 4;
/// Time allowed for one MOVE request.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one MOVE request once the target is in sync (replies in the bucket wait
/// for it): a target slower than this leaves the in-sync set (the attempt fails and the
/// held replies are released; the source still holds every write).
pub(super) const IN_SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// Tail rounds after which the source parks even if writes keep coming (the park then
/// sends what is left while nothing new arrives).
const MAX_TAIL_ROUNDS: usize = 64;
/// Attempts of one move before it is cancelled.
const ATTEMPTS: u32 = 3;
/// Pause between attempts.
pub(super) const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How moves run on this node.
#[derive(Debug, Clone)]
pub struct MoveConfig {
    /// Bytes per second all copies from this node may send together.
    pub bandwidth: u64,
    /// How long a bucket may stay parked before the switchover's outcome is asked of the log.
    pub park_timeout: Duration,
}

/// What a move's task needs.
#[derive(Clone)]
pub struct Context {
    /// The node's view (applied table, parking, the store).
    pub view: ClusterView,
    /// This node's identity on the peer port.
    pub identity: PeerIdentity,
    /// Proposes through the leader.
    pub propose: Proposer,
    /// Limits.
    pub config: MoveConfig,
    budget: Arc<Bandwidth>,
    /// One peer connection per replica node, shared by the replication of all its buckets
    /// (so their requests share writes and reads instead of a connection each).
    replica_links: Arc<Mutex<HashMap<NodeId, (SocketAddr, PeerClient)>>>,
}

impl Context {
    /// A context; moves started from it share one bandwidth budget.
    pub fn new(
        view: ClusterView,
        identity: PeerIdentity,
        propose: Proposer,
        config: MoveConfig,
    ) -> Context {
        let budget = Arc::new(Bandwidth::new(config.bandwidth));
        Context {
            view,
            identity,
            propose,
            config,
            budget,
            replica_links: Arc::default(),
        }
    }

    /// The node's store (`Failed` before the data path gave it).
    pub(super) fn store(&self) -> Result<Store, Stop> {
        self.view
            .moves()
            .store()
            .cloned()
            .ok_or_else(|| Stop::Failed("the data path is not running yet".into()))
    }

    /// The shared connection to replica `node` at `addr` (a new one when its address
    /// changed).
    pub(super) fn replica_link(&self, node: NodeId, addr: SocketAddr) -> PeerClient {
        let mut links = self
            .replica_links
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match links.get(&node) {
            Some((at, client)) if *at == addr => client.clone(),
            _ => {
                let client = PeerClient::new(addr, Some(node), self.identity.clone());
                links.insert(node, (addr, client.clone()));
                client
            }
        }
    }
}

/// Runs until the node stops: starts a task for every move the applied table shows with
/// this node as the bucket's primary, and lets each end on its own (each checks the table).
pub async fn drive(ctx: Context) {
    let view = ctx.view.clone();
    let jobs = |state: &crate::cluster::state::ClusterState, me| {
        state
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.primary == Some(me))
            .filter_map(|(b, bucket)| bucket.moving.map(|m| (b as u32, m.id, (b as u32, m))))
            .collect()
    };
    // A move ends on its own: after a switchover it still has to let the bucket go here.
    super::drive_tasks(
        view,
        jobs,
        move |(b, m)| {
            let ctx = ctx.clone();
            async move { run(&ctx, b, m).await }
        },
        false,
    )
    .await;
}

/// Why one attempt of a move (or of keeping a replica) stopped.
#[derive(Debug)]
pub(super) enum Stop {
    /// The table no longer shows this move with this node as the source.
    Gone,
    /// Something failed; the move may be tried again.
    Failed(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Gone => f.write_str("the move is no longer in the table"),
            Stop::Failed(why) => f.write_str(why),
        }
    }
}

impl From<PeerCallError> for Stop {
    fn from(e: PeerCallError) -> Self {
        Stop::Failed(format!("target: {e}"))
    }
}

impl From<ChangeLogError> for Stop {
    fn from(e: ChangeLogError) -> Self {
        Stop::Failed(format!("change log: {e}"))
    }
}

/// One move, retried from scratch after a failure; cancelled after [`ATTEMPTS`].
async fn run(ctx: &Context, bucket: u32, m: Move) {
    run_attempts(ctx, bucket, m).await;
    ctx.view.set_move_progress(bucket, None);
}

async fn run_attempts(ctx: &Context, bucket: u32, m: Move) {
    for attempt in 1..=ATTEMPTS {
        match attempt_move(ctx, bucket, m).await {
            Ok(()) | Err(Stop::Gone) => return,
            Err(Stop::Failed(why)) => {
                tracing::warn!(bucket, move_id = m.id, to = %m.to, attempt, error = %why, "move attempt failed");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
        if !current(&ctx.view, bucket, m) {
            return;
        }
    }
    let cancel = Command::CancelMove {
        bucket,
        move_id: Some(m.id),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    match (ctx.propose)(cancel, deadline).await {
        Ok(outcome) => tracing::warn!(bucket, move_id = m.id, ?outcome, "gave up a move"),
        Err(e) => {
            tracing::warn!(bucket, move_id = m.id, error = %e, "could not cancel a failed move")
        }
    }
}

/// `--fault-stall-move-at`: waits at `phase` while the move is current: a parked bucket at
/// most the park timeout, the other phases while movement is paused (`shoal-ctl resume`
/// lets the move go on).
#[cfg(feature = "fault-injection")]
async fn fault_stall(ctx: &Context, bucket: u32, m: Move, phase: crate::fault::MovePhaseName) {
    if !crate::fault::stall_move_at(phase) {
        return;
    }
    tracing::warn!(bucket, ?phase, "FAULT INJECTION: move stalled");
    let parked = phase == crate::fault::MovePhaseName::Parked;
    let limit = parked.then(|| Instant::now() + ctx.config.park_timeout);
    let mut applied = ctx.view.applied_changes();
    while current(&ctx.view, bucket, m) && (parked || ctx.view.state().settings.paused) {
        applied.mark_unchanged();
        match limit {
            Some(at) => {
                if tokio::time::timeout_at(at, applied.changed())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            None => {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `--fault-stall-move-at in-sync`: keeps the target in sync (sends each change as replies
/// wait for it) while movement is paused and the move is current; returns the bytes sent.
#[cfg(feature = "fault-injection")]
async fn fault_stall_in_sync(
    ctx: &Context,
    store: &Store,
    target: &Target,
    gate: &Gate,
    m: Move,
    (through, dropped): (&mut u64, &mut bool),
) -> Result<u64, Stop> {
    if !crate::fault::stall_move_at(crate::fault::MovePhaseName::InSync) {
        return Ok(0);
    }
    tracing::warn!(
        bucket = target.bucket,
        "FAULT INJECTION: move stalled in sync"
    );
    let mut bytes = 0;
    let mut applied = ctx.view.applied_changes();
    loop {
        applied.mark_unchanged();
        if !(current(&ctx.view, target.bucket, m) && ctx.view.state().settings.paused) {
            return Ok(bytes);
        }
        bytes += send_changes(ctx, store, target, through, dropped, Some(gate))
            .await?
            .0;
        tokio::select! {
            () = gate.wanted() => {}
            changed = applied.changed() => {
                if changed.is_err() {
                    return Ok(bytes);
                }
            }
        }
    }
}

/// Reports how move `m` of `bucket` is going (NODE_STATUS, `shoal-ctl status`).
fn report(
    view: &ClusterView,
    bucket: u32,
    m: Move,
    phase: MovePhase,
    bytes: u64,
    items: u64,
    started: Instant,
) {
    view.set_move_progress(
        bucket,
        Some(MoveProgress {
            bucket,
            to: m.to.0,
            phase,
            bytes,
            items,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
    );
}

/// Whether the applied table still shows move `m` of `bucket` with this node as primary.
fn current(view: &ClusterView, bucket: u32, m: Move) -> bool {
    view.state()
        .bucket(bucket)
        .is_some_and(|b| b.moving == Some(m) && b.primary == Some(view.me()))
}

/// The peer address the applied table gives `node` (`Gone` when it is no member).
pub(super) fn peer_addr(view: &ClusterView, node: NodeId) -> Result<SocketAddr, Stop> {
    let state = view.state();
    let member = state.nodes.get(&node).ok_or(Stop::Gone)?;
    member
        .addrs
        .peer
        .parse()
        .map_err(|_| Stop::Failed(format!("bad peer address {}", member.addrs.peer)))
}

/// Stops the bucket's change log when the attempt ends, however it ends.
pub(super) struct LogReader<'a> {
    pub(super) store: &'a Store,
    pub(super) bucket: u32,
}

impl Drop for LogReader<'_> {
    fn drop(&mut self) {
        self.store.stop_change_log(self.bucket);
    }
}

/// The receiving node's connection for one attempt: a move's target (MOVE, named by the
/// move id) or a replica (REPLICATE, named by the primary's epoch).
pub(super) struct Target {
    pub(super) client: PeerClient,
    pub(super) opcode: PeerOpcode,
    pub(super) id: u64,
    pub(super) bucket: u32,
}

/// `--fault-drop-move-change`: leaves the first set out of `changes`, once per attempt.
#[cfg(feature = "fault-injection")]
fn fault_drop_change(changes: &mut Vec<crate::store::Change>, dropped: &mut bool) {
    if !crate::fault::drop_move_change() || *dropped {
        return;
    }
    if let Some(i) = changes
        .iter()
        .position(|c| matches!(c, crate::store::Change::Set(_)))
    {
        tracing::warn!("FAULT INJECTION: leaving a change-log record out of a move");
        changes.remove(i);
        *dropped = true;
    }
}

impl Target {
    /// A second handle on the same connection.
    fn again(&self) -> Target {
        Target {
            client: self.client.clone(),
            opcode: self.opcode,
            id: self.id,
            bucket: self.bucket,
        }
    }

    pub(super) async fn send(&self, payload: Payload) -> Result<u64, Stop> {
        self.send_within(payload, CALL_TIMEOUT).await
    }

    pub(super) async fn send_within(
        &self,
        payload: Payload,
        timeout: Duration,
    ) -> Result<u64, Stop> {
        let mut body = Vec::new();
        MoveRequest {
            move_id: self.id,
            bucket: self.bucket,
            payload,
        }
        .encode(&mut body);
        let reply = self.client.call(self.opcode, body, timeout).await?;
        let seq: [u8; 8] = reply
            .as_ref()
            .try_into()
            .map_err(|_| Stop::Failed("the target's reply is not a seq".into()))?;
        Ok(u64::from_be_bytes(seq))
    }
}

/// Sends the bucket's snapshot to `target` in batches (a few requests in flight, within the
/// node's bandwidth budget) while `still()` holds; `progress(bytes, items)` after each
/// batch. Returns the snapshot's start seq (read the change log from there) and the bytes
/// and items sent.
pub(super) async fn send_snapshot(
    ctx: &Context,
    store: &Store,
    target: &Target,
    still: impl Fn() -> bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<(u64, u64, u64), Stop> {
    let mut snapshot = store.snapshot_bucket(target.bucket);
    let start = snapshot.start_seq();
    let mut bytes = 0u64;
    let mut items = 0u64;
    let mut in_flight: JoinSet<Result<u64, Stop>> = JoinSet::new();
    let mut batch: Vec<OwnedItem> = Vec::new();
    let mut batch_bytes = 0;
    loop {
        let next = snapshot.next_batch();
        let done = next.is_none();
        for item in next.into_iter().flatten() {
            batch_bytes += item_len(&item);
            batch.push(item);
        }
        if batch_bytes >= BATCH_BYTES || (done && !batch.is_empty()) {
            if !still() {
                return Err(Stop::Gone);
            }
            ctx.budget.take(batch_bytes as u64).await;
            bytes += batch_bytes as u64;
            items += batch.len() as u64;
            progress(bytes, items);
            let payload = Payload::Items(std::mem::take(&mut batch));
            batch_bytes = 0;
            while in_flight.len() >= WINDOW {
                in_flight.join_next().await.map_or(Ok(0), flatten)?;
            }
            let t = target.again();
            in_flight.spawn(async move { t.send(payload).await });
        }
        if done {
            break;
        }
    }
    while let Some(r) = in_flight.join_next().await {
        flatten(r)?;
    }
    Ok((start, bytes, items))
}

async fn attempt_move(ctx: &Context, bucket: u32, m: Move) -> Result<(), Stop> {
    let view = &ctx.view;
    let store = ctx.store()?;
    if !current(view, bucket, m) {
        return Err(Stop::Gone);
    }
    if view.is_held(bucket) {
        return Err(Stop::Failed(
            "the bucket's saved items are not confirmed by the table yet".into(),
        ));
    }
    let flushes = store.flushes();
    if m.promote {
        return promote(ctx, &store, bucket, m, flushes).await;
    }
    let addr = peer_addr(view, m.to)?;
    let started = Instant::now();
    store.start_change_log(bucket)?;
    let _log = LogReader {
        store: &store,
        bucket,
    };
    let target = Target {
        client: PeerClient::new(addr, Some(m.to), ctx.identity.clone()),
        opcode: PeerOpcode::Move,
        id: m.id,
        bucket,
    };
    target.send(Payload::Open).await?;
    report(view, bucket, m, MovePhase::Snapshot, 0, 0, started);
    #[cfg(feature = "fault-injection")]
    fault_stall(ctx, bucket, m, crate::fault::MovePhaseName::Snapshot).await;
    if !current(view, bucket, m) {
        return Err(Stop::Gone);
    }

    // 1. The snapshot, a few requests in flight.
    let (start, mut bytes, items) = send_snapshot(
        ctx,
        &store,
        &target,
        || current(view, bucket, m),
        |bytes, items| report(view, bucket, m, MovePhase::Snapshot, bytes, items, started),
    )
    .await?;

    // 2. The change log from the snapshot's start, until caught up.
    report(view, bucket, m, MovePhase::Tail, bytes, items, started);
    #[cfg(feature = "fault-injection")]
    fault_stall(ctx, bucket, m, crate::fault::MovePhaseName::Tail).await;
    if !current(view, bucket, m) {
        return Err(Stop::Gone);
    }
    let mut through = start;
    let mut dropped = false;
    target
        .send(Payload::Changes {
            through,
            changes: Vec::new(),
        })
        .await?;
    for _ in 0..MAX_TAIL_ROUNDS {
        if !current(view, bucket, m) {
            return Err(Stop::Gone);
        }
        report(view, bucket, m, MovePhase::Tail, bytes, items, started);
        let (sent, caught_up) =
            send_changes(ctx, &store, &target, &mut through, &mut dropped, None).await?;
        bytes += sent;
        if caught_up {
            break;
        }
    }

    // 3. In sync: replies in the bucket wait for the target from here on (the gate closes,
    // releasing them, however the attempt ends), so catching up converges at any write rate.
    report(view, bucket, m, MovePhase::InSync, bytes, items, started);
    let gate = view.in_sync().open(bucket, through);
    #[cfg(feature = "fault-injection")]
    {
        bytes += fault_stall_in_sync(ctx, &store, &target, &gate, m, (&mut through, &mut dropped))
            .await?;
    }
    for _ in 0..MAX_TAIL_ROUNDS {
        if !current(view, bucket, m) {
            return Err(Stop::Gone);
        }
        let (sent, caught_up) = send_changes(
            ctx,
            &store,
            &target,
            &mut through,
            &mut dropped,
            Some(&gate),
        )
        .await?;
        bytes += sent;
        if caught_up {
            break;
        }
    }

    // 4. Park, send the rest, switch over.
    if !view.park(bucket, ctx.config.park_timeout).await {
        return Err(Stop::Failed(
            "calls in the bucket did not end in time".into(),
        ));
    }
    let parked = Instant::now();
    report(view, bucket, m, MovePhase::Parked, bytes, items, started);
    #[cfg(feature = "fault-injection")]
    {
        fault_stall(ctx, bucket, m, crate::fault::MovePhaseName::Parked).await;
        if crate::fault::early_drop() {
            tracing::warn!(
                bucket,
                "FAULT INJECTION: dropping the source's copy at park time"
            );
            view.moves().drop_moved_away(bucket);
            store.show_bucket(bucket);
            view.unpark(bucket);
        }
    }
    let result = switch_over(
        ctx,
        (&store, &target, &gate),
        m,
        (&mut through, &mut dropped),
        (parked, flushes),
    )
    .await;
    // The held replies leave before the parked requests are let go (redirected, on success).
    drop(gate);
    view.unpark(bucket);
    let park_ms = parked.elapsed().as_millis();
    match result {
        Ok(true) => {
            drop(_log);
            view.moves().drop_moved_away(bucket);
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            tracing::info!(
                bucket,
                move_id = m.id,
                to = %m.to,
                items,
                bytes,
                mb_per_s = format!("{:.1}", bytes as f64 / secs / 1e6),
                parked_ms = park_ms,
                "bucket moved"
            );
            Ok(())
        }
        Ok(false) => Err(Stop::Gone),
        Err(e) => Err(e),
    }
}

/// Sends the changes after `through` in requests, once around; returns the bytes sent and
/// whether the target holds everything up to the bucket's seq now. With the target in sync
/// (`gate`), each request has [`IN_SYNC_TIMEOUT`] and releases the replies it covers.
pub(super) async fn send_changes(
    ctx: &Context,
    store: &Store,
    target: &Target,
    through: &mut u64,
    #[allow(unused_variables)] dropped: &mut bool,
    gate: Option<&Gate>,
) -> Result<(u64, bool), Stop> {
    let timeout = if gate.is_some() {
        IN_SYNC_TIMEOUT
    } else {
        CALL_TIMEOUT
    };
    let mut sent = 0u64;
    loop {
        let head = store.bucket_stats(target.bucket).seq;
        if *through >= head {
            return Ok((sent, true));
        }
        #[allow(unused_mut)]
        let mut batch = store.changes_since(target.bucket, *through, CHANGES_PER_REQUEST)?;
        #[cfg(feature = "fault-injection")]
        fault_drop_change(&mut batch.changes, dropped);
        let bytes: usize = batch
            .changes
            .iter()
            .map(|c| match c {
                crate::store::Change::Set(item) => item_len(item),
                _ => 16,
            })
            .sum();
        ctx.budget.take(bytes as u64).await;
        sent += bytes as u64;
        let full = batch.changes.len() >= CHANGES_PER_REQUEST;
        let next = batch.through;
        target
            .send_within(
                Payload::Changes {
                    through: next,
                    changes: batch.changes,
                },
                timeout,
            )
            .await?;
        *through = next;
        if let Some(gate) = gate {
            gate.acked(next);
        }
        if !full {
            return Ok((sent, *through >= store.bucket_stats(target.bucket).seq));
        }
    }
}

/// With the bucket parked: sends what is left, proposes the switchover and learns its
/// outcome from the log. `Ok(true)`: this node applied a table naming the target primary;
/// `Ok(false)`: the move ended otherwise (cancelled or superseded), this node still serves
/// the bucket if the table says so.
async fn switch_over(
    ctx: &Context,
    (store, target, gate): (&Store, &Target, &Gate),
    m: Move,
    (through, dropped): (&mut u64, &mut bool),
    (parked, flushes): (Instant, u64),
) -> Result<bool, Stop> {
    loop {
        let (_, caught_up) = send_changes(ctx, store, target, through, dropped, Some(gate)).await?;
        if caught_up {
            break;
        }
    }
    // The target confirms it still holds this copy up to the end (a target that restarted
    // meanwhile has lost it and refuses): only then may it become the primary.
    let confirmed = target
        .send(Payload::Changes {
            through: *through,
            changes: Vec::new(),
        })
        .await?;
    if confirmed < *through {
        return Err(Stop::Failed(format!(
            "the target holds the bucket up to seq {confirmed}, not {through}"
        )));
    }
    commit_switch(ctx, target.bucket, m, (parked, flushes)).await
}

/// With the bucket parked and the target holding all of it: proposes the switchover and
/// learns its outcome from the log (see [`switch_over`]).
async fn commit_switch(
    ctx: &Context,
    bucket: u32,
    m: Move,
    (parked, flushes): (Instant, u64),
) -> Result<bool, Stop> {
    let view = &ctx.view;
    let store = &ctx.store()?;
    // A flush_all that began while parked (after the last changes were read) is not in the
    // copy: start again from a fresh snapshot rather than hand over flushed items. (One
    // before the park reached the copy as a Clear in the change log.)
    if store.flushes() != flushes {
        return Err(Stop::Failed(
            "flush_all ran during the move; copying again".into(),
        ));
    }
    let finish = Command::FinishMove {
        bucket,
        move_id: m.id,
    };
    let deadline = parked + ctx.config.park_timeout;
    let committed = match (ctx.propose)(finish, deadline).await {
        Ok(Outcome::Done) => true,
        Ok(_) => return Ok(false),
        Err(e) => {
            tracing::warn!(bucket, move_id = m.id, error = %e, "switchover outcome unknown; asking the log");
            resolve(ctx, bucket, m).await
        }
    };
    // Serve (or redirect) only by a table this node applied.
    let mut applied = view.applied_changes();
    loop {
        applied.mark_unchanged();
        let state = view.state();
        let b = state.bucket(bucket);
        if b.is_some_and(|b| b.moving != Some(m)) {
            return Ok(b.is_some_and(|b| b.primary != Some(view.me())) && committed);
        }
        drop(state);
        if applied.changed().await.is_err() {
            return Err(Stop::Failed("the control plane stopped".into()));
        }
    }
}

/// A planned switchover to an in-sync replica (`m.promote`): no copy is made. Parks the
/// bucket, waits until every in-sync copy holds it up to its last write (the replication
/// sends what the replies in flight wrote), proposes the switchover (which the state machine
/// accepts only while the target is still in sync), and once this node applied it, unparks
/// (the waiting requests are redirected) and drops its copy.
async fn promote(
    ctx: &Context,
    store: &Store,
    bucket: u32,
    m: Move,
    flushes: u64,
) -> Result<(), Stop> {
    let view = &ctx.view;
    let started = Instant::now();
    if !view.park(bucket, ctx.config.park_timeout).await {
        return Err(Stop::Failed(
            "calls in the bucket did not end in time".into(),
        ));
    }
    let parked = Instant::now();
    report(view, bucket, m, MovePhase::Parked, 0, 0, started);
    let result = async {
        let seq = store.bucket_stats(bucket).seq;
        let in_sync = view.in_sync();
        if !in_sync.is_open(bucket) {
            return Err(Stop::Failed(
                "no copy of the bucket is kept in sync here".into(),
            ));
        }
        if let Some(hold) = in_sync.wait(bucket, || seq) {
            tokio::time::timeout_at(parked + ctx.config.park_timeout / 2, hold)
                .await
                .map_err(|_| Stop::Failed("the replica did not catch up in time".into()))?;
        }
        // Released by a closed gate rather than acknowledged: not known to hold it.
        if !in_sync.is_open(bucket) {
            return Err(Stop::Failed("the bucket's in-sync copies left".into()));
        }
        report(view, bucket, m, MovePhase::Finishing, 0, 0, started);
        commit_switch(ctx, bucket, m, (parked, flushes)).await
    }
    .await;
    view.unpark(bucket);
    let park_ms = parked.elapsed().as_millis();
    match result {
        Ok(true) => {
            view.moves().drop_moved_away(bucket);
            tracing::info!(bucket, move_id = m.id, to = %m.to, parked_ms = park_ms, "bucket handed to its in-sync replica");
            Ok(())
        }
        Ok(false) => Err(Stop::Gone),
        Err(e) => Err(e),
    }
}

/// The switchover's proposal got no answer in time: a cancel of the same move settles it.
/// Done: it was not committed (the move is cancelled); Unchanged or stale: the move is
/// gone already, so the switchover committed (or someone cancelled it). Asks until the
/// log answers. Returns whether the switchover may have committed.
async fn resolve(ctx: &Context, bucket: u32, m: Move) -> bool {
    loop {
        let cancel = Command::CancelMove {
            bucket,
            move_id: Some(m.id),
        };
        match (ctx.propose)(cancel, Instant::now() + Duration::from_secs(2)).await {
            Ok(Outcome::Done) => return false,
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(bucket, move_id = m.id, error = %e, "cannot reach the log to settle a switchover; the bucket stays parked");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn flatten(r: Result<Result<u64, Stop>, tokio::task::JoinError>) -> Result<u64, Stop> {
    r.map_err(|e| Stop::Failed(format!("copy task: {e}")))?
}

/// A byte budget per second shared by every copy from this node.
#[derive(Debug)]
struct Bandwidth {
    per_sec: u64,
    /// When the bytes taken so far will have been sent at the budget's rate.
    free_at: Mutex<Instant>,
}

impl Bandwidth {
    fn new(per_sec: u64) -> Bandwidth {
        Bandwidth {
            per_sec: per_sec.max(1),
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` more fit in the budget (a burst of up to 1/10 s passes at once).
    async fn take(&self, bytes: u64) {
        let wait_until = {
            let mut free_at = self.free_at.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let start = (*free_at).max(now);
            *free_at = start + Duration::from_secs_f64(bytes as f64 / self.per_sec as f64);
            start.checked_sub(Duration::from_millis(100))
        };
        if let Some(at) = wait_until {
            tokio::time::sleep_until(at).await;
        }
    }
}
