//! Text commands for buckets this node does not serve: sent to their owner, answered here.
//!
//! memcached clients know nothing of buckets, so the session hands each command whose key
//! (or any of whose keys) lives in a bucket served elsewhere to this module, which
//! ([`route`], [`defer`]):
//!
//! - sends a single-key command, as the client's bytes, to the bucket's owner through
//!   `cluster::forward` and relays the owner's reply bytes unchanged; the single-key
//!   commands of one input batch are queued ([`Batch`]) and leave at its end ([`flush`]),
//!   one FORWARD_BATCH per owner, so a pipelined batch costs one task and one peer request
//!   per owner instead of one per command;
//! - splits a multi-get by owner, sends the parts at once (the keys this node serves are read
//!   here through the same path), and answers the values in the client's key order;
//! - sends `flush_all` to every member, since a client pointed at one node sees one cache;
//! - answers `SERVER_ERROR <reason>` when no owner could run the command within
//!   `--forward-timeout` (nothing under `noreply`), never a miss or a value it did not read.
//!
//! Replies are deferred ([`Output::defer`]): the connection goes on reading and serving, and
//! memcached's rule that replies leave in request order holds. Commands for one bucket from
//! one connection are sent in the order they arrived: within a batch, in order in one
//! FORWARD_BATCH (the owner runs them in order and stops at the first it may not run);
//! across batches, a command waits for the reply of the previous one on its bucket. So a
//! pipelined `set k ... noreply` followed by `get k` reads what it wrote.
//!
//! The owner's side is [`run_forwarded`]: it runs one command as any session would, except
//! that a key of a bucket it does not serve (the bucket moved, or the sender's table is
//! behind) makes it answer NOT_MINE and apply nothing, so the sender retries.

use super::exec::{Counts, Exec};
use super::meta::MetaKind;
use super::parse::{parse, Keys, TextCommand};
use crate::cluster::forward::{
    self, send_batch_to, send_once, send_to, wait_to_retry, Attempt, Executed, ForwardError, Ran,
};
use crate::cluster::ClusterView;
use crate::datadir::NodeId;
use crate::net::{Output, Shared};
use crate::stats::ServerStats;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Most commands sent to one owner in one FORWARD_BATCH; more go in further batches, one
/// after the other.
const MAX_BATCH: usize = 256;
/// The reply of a forwarded command whose task ended without one (it panicked).
const LOST_REPLY: &[u8] = b"SERVER_ERROR forwarding failed; the command may have been applied\r\n";

/// Where a command goes.
#[derive(Debug)]
pub(super) enum Route {
    /// One key, served elsewhere.
    One {
        /// Its bucket.
        bucket: u32,
        /// Whether it only reads (so a lost reply may be asked again).
        idempotent: bool,
        /// Whether the client wants no reply.
        noreply: bool,
    },
    /// `flush_all`: every member flushes.
    All {
        /// Whether the client wants no reply.
        noreply: bool,
    },
    /// A multi-get with at least one key served elsewhere.
    Get {
        /// `get`, `gets`, `gat <exptime>` or `gats <exptime>`: what each part starts with.
        verb: Vec<u8>,
        /// The keys, in the client's order.
        keys: Vec<Vec<u8>>,
    },
}

/// Whether `cmd` must run elsewhere, and how; `None`: run it here (every key is served here,
/// it has no key, or this node cannot forward, in which case it answers `not my bucket`).
pub(super) fn route(shared: &Shared, cmd: &TextCommand<'_>) -> Option<Route> {
    let cluster = shared.keyspace.cluster();
    if cluster.owns_all() {
        return None;
    }
    let buckets = shared.keyspace.buckets();
    let elsewhere = |key: &[u8]| {
        let bucket = shoal_proto::hash::bucket_of(key, buckets);
        (!cluster.owns(bucket)).then_some(bucket)
    };
    let one = |key: &[u8], idempotent: bool, noreply: bool| {
        elsewhere(key).map(|bucket| Route::One {
            bucket,
            idempotent,
            noreply,
        })
    };
    let route = match cmd {
        TextCommand::Get { keys, cas } => get_route(keys, elsewhere, || {
            if *cas {
                b"gets".to_vec()
            } else {
                b"get".to_vec()
            }
        }),
        TextCommand::Gat { exptime, keys, cas } => get_route(keys, elsewhere, || {
            let verb = if *cas { "gats" } else { "gat" };
            format!("{verb} {exptime}").into_bytes()
        }),
        TextCommand::Store { key, noreply, .. }
        | TextCommand::Delete { key, noreply }
        | TextCommand::Incr { key, noreply, .. }
        | TextCommand::Touch { key, noreply, .. } => one(key, false, *noreply),
        TextCommand::Meta(req) => one(req.key(), req.kind == MetaKind::Get, false),
        TextCommand::FlushAll { noreply, .. } => Some(Route::All { noreply: *noreply }),
        _ => None,
    }?;
    cluster.forwarding().can_send().then_some(route)
}

/// The route of a get-family command: one key goes as it came; several keys, any of them
/// elsewhere, are split.
fn get_route(
    keys: &Keys<'_>,
    elsewhere: impl Fn(&[u8]) -> Option<u32>,
    verb: impl FnOnce() -> Vec<u8>,
) -> Option<Route> {
    let mut it = keys.iter();
    let first = it.next()?;
    if it.next().is_none() {
        return elsewhere(first).map(|bucket| Route::One {
            bucket,
            idempotent: true,
            noreply: false,
        });
    }
    keys.iter()
        .any(|k| elsewhere(k).is_some())
        .then(|| Route::Get {
            verb: verb(),
            keys: keys.iter().map(<[u8]>::to_vec).collect(),
        })
}

/// Per connection: the last forwarded command of each bucket, which the next one for that
/// bucket waits for (so they reach the owner in order).
#[derive(Debug, Default)]
pub(super) struct Chains {
    last: HashMap<u32, watch::Receiver<bool>>,
}

impl Chains {
    /// Registers a command on `buckets`: returns what it must wait for, and the sender it
    /// sets (or drops) when done.
    fn enter(&mut self, buckets: &[u32]) -> (Vec<watch::Receiver<bool>>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let mut before = Vec::new();
        for b in buckets {
            if let Some(prev) = self.last.insert(*b, rx.clone()) {
                // A bucket named twice by one command: it waits for itself only once.
                if !prev.same_channel(&rx) && !*prev.borrow() {
                    before.push(prev);
                }
            }
        }
        (before, tx)
    }
}

/// Per connection: the single-key commands of the current input that go elsewhere, queued
/// so that those for one owner leave in one FORWARD_BATCH ([`flush`] sends them).
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The commands' bytes, one after the other.
    bytes: Vec<u8>,
    items: Vec<Queued>,
}

/// One queued single-key command.
#[derive(Debug)]
struct Queued {
    /// Its bytes in [`Batch::bytes`].
    range: Range<usize>,
    bucket: u32,
    idempotent: bool,
    noreply: bool,
    /// Where its reply goes (the connection's deferred reply waits on the other end).
    reply: oneshot::Sender<Vec<u8>>,
}

/// Takes `cmd` (whose bytes, line and data block, are `bytes`) to run on its owner, and
/// defers its reply on `out`. A single-key command is queued in `batch` until [`flush`];
/// any other first flushes the batch (so it is ordered after the queued commands on its
/// buckets), then goes to a task of its own.
pub(super) fn defer(
    shared: &Shared,
    chains: &mut Chains,
    batch: &mut Batch,
    route: Route,
    bytes: &[u8],
    out: &mut Output,
) {
    if let Route::One {
        bucket,
        idempotent,
        noreply,
    } = route
    {
        let (reply, rx) = oneshot::channel();
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(bytes);
        batch.items.push(Queued {
            range: start..batch.bytes.len(),
            bucket,
            idempotent,
            noreply,
            reply,
        });
        out.defer(Box::pin(async move {
            rx.await.unwrap_or_else(|_| LOST_REPLY.to_vec())
        }));
        return;
    }
    flush(shared, chains, batch);
    let view = shared.keyspace.cluster().clone();
    let stats = shared.keyspace.stats().clone();
    let deadline = Instant::now() + shared.forward_timeout;
    let buckets: Vec<u32> = match &route {
        Route::Get { keys, .. } => {
            let n = shared.keyspace.buckets();
            keys.iter()
                .map(|k| shoal_proto::hash::bucket_of(k, n))
                .collect()
        }
        _ => Vec::new(),
    };
    let (before, done) = chains.enter(&buckets);
    let command = bytes.to_vec();
    let task = tokio::spawn(async move {
        for mut prev in before {
            let _ = prev.wait_for(|d| *d).await;
        }
        let (result, noreply) = match route {
            Route::Get { verb, keys } => (
                forward_get(&view, &verb, &keys, &buckets, deadline).await,
                false,
            ),
            Route::All { noreply } => (broadcast(&view, &command, deadline).await, noreply),
            Route::One {
                bucket,
                idempotent,
                noreply,
            } => (
                forward::forward(&view, bucket, &command, idempotent, deadline).await,
                noreply,
            ),
        };
        let _ = done.send(true);
        finish(result, noreply, &stats)
    });
    out.defer(Box::pin(async move {
        task.await.unwrap_or_else(|_| LOST_REPLY.to_vec())
    }));
}

/// Sends the commands queued in `batch` on their way. Those whose bucket has no command of
/// this connection in flight leave together, one FORWARD_BATCH per owner, on one task;
/// one whose bucket has (rare: the same key twice within a round trip) waits for that
/// command on a task of its own, as does every later one on its bucket.
pub(super) fn flush(shared: &Shared, chains: &mut Chains, batch: &mut Batch) {
    if batch.items.is_empty() {
        return;
    }
    let view = shared.keyspace.cluster().clone();
    let stats = shared.keyspace.stats().clone();
    let deadline = Instant::now() + shared.forward_timeout;
    let bytes = std::mem::take(&mut batch.bytes);
    let (done, mine) = watch::channel(false);
    let mut together = Vec::with_capacity(batch.items.len());
    for item in batch.items.drain(..) {
        match chains.last.entry(item.bucket) {
            Entry::Vacant(slot) => {
                slot.insert(mine.clone());
                together.push(item);
                continue;
            }
            Entry::Occupied(mut slot) => {
                let prev = slot.get();
                if prev.same_channel(&mine) || *prev.borrow() {
                    slot.insert(mine.clone());
                    together.push(item);
                    continue;
                }
            }
        }
        let (before, alone) = chains.enter(&[item.bucket]);
        let command = bytes[item.range.clone()].to_vec();
        let (view, stats) = (view.clone(), stats.clone());
        tokio::spawn(async move {
            for mut prev in before {
                let _ = prev.wait_for(|d| *d).await;
            }
            let result =
                forward::forward(&view, item.bucket, &command, item.idempotent, deadline).await;
            let _ = alone.send(true);
            let _ = item.reply.send(finish(result, item.noreply, &stats));
        });
    }
    if together.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let results = forward_batch(&view, &bytes, &together, deadline).await;
        let _ = done.send(true);
        for (item, result) in together.into_iter().zip(results) {
            let _ = item.reply.send(finish(result, item.noreply, &stats));
        }
    });
}

/// A forwarded command's reply bytes: the owner's, or for a failure `SERVER_ERROR <reason>`
/// (nothing under noreply), counted.
fn finish(
    result: Result<Vec<u8>, ForwardError>,
    noreply: bool,
    stats: &Arc<ServerStats>,
) -> Vec<u8> {
    match result {
        Ok(reply) => reply,
        Err(e) => {
            ServerStats::incr(&stats.forward_errors);
            tracing::debug!(error = %e, "forwarded command failed");
            if noreply {
                Vec::new()
            } else {
                server_error(&e)
            }
        }
    }
}

/// Runs the queued single-key `items` (their bytes in `bytes`) on their owners: the
/// commands of each owner in one FORWARD_BATCH (at most [`MAX_BATCH`] at a time), all
/// owners at once. Returns each command's result, in the order of `items`.
async fn forward_batch(
    view: &ClusterView,
    bytes: &[u8],
    items: &[Queued],
    deadline: Instant,
) -> Vec<Result<Vec<u8>, ForwardError>> {
    let mut groups: Vec<(Option<NodeId>, Vec<usize>)> = Vec::new();
    {
        let state = view.state();
        for (i, item) in items.iter().enumerate() {
            let owner = state.bucket(item.bucket).and_then(|b| b.primary);
            match groups.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, part)) => part.push(i),
                None => groups.push((owner, vec![i])),
            }
        }
    }
    let mut results: Vec<Option<Result<Vec<u8>, ForwardError>>> = vec![None; items.len()];
    let runs: Vec<_> = groups
        .into_iter()
        .map(|(owner, part)| {
            Box::pin(forward_part(view, owner, bytes, items, part, deadline))
                as Pin<Box<dyn Future<Output = _> + Send + '_>>
        })
        .collect();
    for part in join_all(runs).await {
        for (i, result) in part {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(ForwardError::NotReady)))
        .collect()
}

/// Runs the commands `part` of `items`, all for buckets whose primary is `owner` in the table
/// read just before, in order: in FORWARD_BATCHes to a remote owner; what a batch did not
/// run, and every command when the owner is this node, unknown or the only command, one at
/// a time through [`forward::forward`] (with its retries).
async fn forward_part(
    view: &ClusterView,
    owner: Option<NodeId>,
    bytes: &[u8],
    items: &[Queued],
    part: Vec<usize>,
    deadline: Instant,
) -> Vec<(usize, Result<Vec<u8>, ForwardError>)> {
    let command = |i: usize| &bytes[items[i].range.clone()];
    let mut out = Vec::with_capacity(part.len());
    let mut next = 0;
    if let Some(node) = owner.filter(|&n| n != view.me() && part.len() > 1) {
        while next < part.len() {
            let chunk = &part[next..part.len().min(next + MAX_BATCH)];
            let commands: Vec<&[u8]> = chunk.iter().map(|&i| command(i)).collect();
            let bucket = items[chunk[0]].bucket;
            match send_batch_to(view, node, bucket, &commands, deadline).await {
                Ok(attempts) => {
                    let mut ran = 0;
                    for attempt in attempts {
                        let Attempt::Done(reply) = attempt else { break };
                        out.push((part[next], Ok(reply)));
                        next += 1;
                        ran += 1;
                    }
                    // The commands the owner did not run (after a NOT_MINE, or past its
                    // reply budget) and the chunks not sent yet go one at a time, below.
                    if ran < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.not_applied() => break,
                Err(e) => {
                    // In doubt: reads are asked again below; writes are reported.
                    for &i in chunk {
                        if !items[i].idempotent {
                            out.push((i, Err(e.clone())));
                        }
                    }
                    let retry: Vec<usize> = chunk
                        .iter()
                        .copied()
                        .filter(|&i| items[i].idempotent)
                        .chain(part[next + chunk.len()..].iter().copied())
                        .collect();
                    for i in retry {
                        let item = &items[i];
                        let result = forward::forward(
                            view,
                            item.bucket,
                            command(i),
                            item.idempotent,
                            deadline,
                        )
                        .await;
                        out.push((i, result));
                    }
                    return out;
                }
            }
        }
    }
    for &i in &part[next..] {
        let item = &items[i];
        let result =
            forward::forward(view, item.bucket, command(i), item.idempotent, deadline).await;
        out.push((i, result));
    }
    out
}

/// Runs `futures` at once on the calling task; their outputs, in order.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    if futures.len() == 1 {
        if let Some(only) = futures.pop() {
            return vec![only.await];
        }
    }
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn server_error(e: &ForwardError) -> Vec<u8> {
    format!("SERVER_ERROR {e}\r\n").into_bytes()
}

/// `flush_all` on every member at once (this one included), each retried until `deadline`;
/// `OK` once all flushed (memcached's reply: a client pointed at one node expects the whole
/// cache it sees to be flushed).
async fn broadcast(
    view: &ClusterView,
    command: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, ForwardError> {
    let members: Vec<NodeId> = view.state().nodes.keys().copied().collect();
    let mut sent = tokio::task::JoinSet::new();
    for node in members {
        let view = view.clone();
        let command = command.to_vec();
        sent.spawn(async move {
            let mut table = view.table_changes();
            let mut attempt = 0;
            loop {
                let error = match send_to(&view, node, 0, &command, deadline).await {
                    Attempt::Done(reply) => return Ok(reply),
                    Attempt::NotMine { bucket } => ForwardError::Moving { bucket },
                    Attempt::Failed(e) => e,
                };
                attempt += 1;
                if !wait_to_retry(&mut table, attempt, deadline).await {
                    return Err(error);
                }
            }
        });
    }
    let mut reply = Vec::new();
    while let Some(joined) = sent.join_next().await {
        let one = joined.map_err(|_| ForwardError::Failed {
            reason: "a forwarding task failed".into(),
        })??;
        // Every member answers the same (`OK`, or nothing under noreply).
        reply = one;
    }
    Ok(reply)
}

/// A multi-get split by owner: each owner's part is one get of its keys, all sent at once;
/// parts that reached a node not serving them (the table changed) are split again and
/// retried until `deadline`. Answers the values in key order, then `END`.
async fn forward_get(
    view: &ClusterView,
    verb: &[u8],
    keys: &[Vec<u8>],
    buckets: &[u32],
    deadline: Instant,
) -> Result<Vec<u8>, ForwardError> {
    let mut values: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
    let mut todo: Vec<usize> = (0..keys.len()).collect();
    let mut table = view.table_changes();
    let mut attempt = 0u32;
    loop {
        table.mark_unchanged();
        let mut parts: HashMap<Option<NodeId>, Vec<usize>> = HashMap::new();
        {
            let state = view.state();
            for &i in &todo {
                let owner = state.bucket(buckets[i]).and_then(|b| b.primary);
                parts.entry(owner).or_default().push(i);
            }
        }
        let mut sent = tokio::task::JoinSet::new();
        for part in parts.into_values() {
            let mut command = verb.to_vec();
            for &i in &part {
                command.push(b' ');
                command.extend_from_slice(&keys[i]);
            }
            command.extend_from_slice(b"\r\n");
            let view = view.clone();
            let bucket = buckets[part[0]];
            sent.spawn(async move { (send_once(&view, bucket, &command, deadline).await, part) });
        }
        let mut retry = Vec::new();
        let mut last = None;
        while let Some(joined) = sent.join_next().await {
            let Ok((attempt, part)) = joined else {
                return Err(ForwardError::Failed {
                    reason: "a forwarding task failed".into(),
                });
            };
            match attempt {
                Attempt::Done(reply) => {
                    let asked: Vec<&[u8]> = part.iter().map(|&i| keys[i].as_slice()).collect();
                    let found =
                        split_values(&reply, &asked).map_err(|reason| ForwardError::Failed {
                            reason: format!("owner answered: {reason}"),
                        })?;
                    for (&i, range) in part.iter().zip(found) {
                        values[i] = range.map(|r| reply[r].to_vec());
                    }
                }
                Attempt::NotMine { bucket } => {
                    retry.extend(part);
                    last = Some(ForwardError::Moving { bucket });
                }
                // Reads: every failure may be retried.
                Attempt::Failed(e) => {
                    retry.extend(part);
                    last = Some(e);
                }
            }
        }
        if retry.is_empty() {
            let len = values.iter().flatten().map(Vec::len).sum::<usize>() + 5;
            let mut out = Vec::with_capacity(len);
            for v in values.iter().flatten() {
                out.extend_from_slice(v);
            }
            out.extend_from_slice(b"END\r\n");
            return Ok(out);
        }
        retry.sort_unstable();
        todo = retry;
        attempt += 1;
        if !wait_to_retry(&mut table, attempt, deadline).await {
            return Err(last.unwrap_or(ForwardError::NotReady));
        }
    }
}

/// Finds the `VALUE` block of each of `keys` (asked in this order) in a get reply: the byte
/// range of each block, `None` for a miss. The reply must be values for asked keys, in
/// order, then `END`; anything else is returned as the reason it is not.
fn split_values(
    reply: &[u8],
    keys: &[&[u8]],
) -> Result<Vec<Option<std::ops::Range<usize>>>, String> {
    let mut found = vec![None; keys.len()];
    let mut next = 0;
    let mut pos = 0;
    loop {
        let rest = &reply[pos..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Err("a truncated reply".into());
        };
        let line = &rest[..eol];
        if line == b"END" {
            return if pos + eol + 2 == reply.len() {
                Ok(found)
            } else {
                Err("bytes after END".into())
            };
        }
        let mut tokens = line.split(|&b| b == b' ');
        let (Some(b"VALUE"), Some(key), Some(_flags), Some(len)) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned());
        };
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or("a value length that is not a number")?;
        let end = (pos + eol + 2)
            .checked_add(len)
            .and_then(|e| e.checked_add(2))
            .filter(|&e| e <= reply.len())
            .ok_or("a truncated value")?;
        if &reply[end - 2..end] != b"\r\n" {
            return Err("a value not followed by CRLF".into());
        }
        while next < keys.len() && keys[next] != key {
            next += 1;
        }
        if next == keys.len() {
            return Err("a value for a key not asked for".into());
        }
        found[next] = Some(pos..end);
        next += 1;
        pos = end;
    }
}

/// Runs one forwarded command (`command`: its line and data block) on this node, as the
/// owner: the reply bytes, or NOT_MINE when a key's bucket is not served here (nothing
/// applied).
pub(crate) fn run_forwarded(shared: &Shared, command: &[u8]) -> Ran {
    let mut counts = Counts::default();
    let mut resume = 0;
    let mut out = Output::new(true, usize::MAX, 256);
    counts.forwarded_in += 1;
    let ran = match parse(command, &shared.limits) {
        Ok(Some((cmd, used))) if used == command.len() && !is_local_only(&cmd) => {
            let gated = shared.keyspace.gated(|| cmd.keys());
            let mut exec = Exec {
                shared,
                counts: &mut counts,
                resume: &mut resume,
                forwarded: true,
                not_mine: None,
            };
            exec.run(cmd, &mut out);
            match exec.not_mine {
                Some(r) => Executed::NotMine {
                    bucket: r.bucket,
                    epoch: r.epoch,
                }
                .into(),
                None => Ran {
                    executed: Executed::Reply(std::mem::take(out.ready())),
                    after: gated.and_then(|g| shared.keyspace.copies_hold(g)),
                },
            }
        }
        Ok(_) => Executed::Reply(b"SERVER_ERROR bad forwarded command\r\n".to_vec()).into(),
        Err(e) if e.noreply => Executed::Reply(Vec::new()).into(),
        Err(e) => Executed::Reply(e.kind.reply().to_vec()).into(),
    };
    counts.flush_into(shared.keyspace.stats());
    ran
}

/// Commands that are never forwarded (they have no key, or affect the connection).
fn is_local_only(cmd: &TextCommand<'_>) -> bool {
    !matches!(
        cmd,
        TextCommand::Get { .. }
            | TextCommand::Gat { .. }
            | TextCommand::Store { .. }
            | TextCommand::Delete { .. }
            | TextCommand::Incr { .. }
            | TextCommand::Touch { .. }
            | TextCommand::Meta(_)
            | TextCommand::FlushAll { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_in_key_order_and_bad_replies_refused() {
        let reply = b"VALUE a 0 1\r\nx\r\nVALUE c 5 2 9\r\nyz\r\nEND\r\n";
        let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
        let found = split_values(reply, &keys).unwrap();
        assert_eq!(
            found[0].clone().map(|r| &reply[r]),
            Some(&b"VALUE a 0 1\r\nx\r\n"[..])
        );
        assert_eq!(found[1], None);
        assert_eq!(
            found[2].clone().map(|r| &reply[r]),
            Some(&b"VALUE c 5 2 9\r\nyz\r\n"[..])
        );
        // Repeated keys: each asked once, answered once.
        let twice = b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n";
        let found = split_values(twice, &[b"a", b"a"]).unwrap();
        assert!(found.iter().all(Option::is_some));
        assert_eq!(split_values(b"END\r\n", &keys).unwrap(), vec![None; 3]);
        for bad in [
            &b"SERVER_ERROR out of memory\r\n"[..],
            b"VALUE a 0 5\r\nx\r\nEND\r\n",
            b"VALUE a 0 1\r\nxy\r\nEND\r\n",
            b"VALUE z 0 1\r\nx\r\nEND\r\n",
            b"VALUE c 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
            b"VALUE a 0 99999999999999999999999\r\nx\r\nEND\r\n",
            b"END\r\nEND\r\n",
            b"END",
            b"",
        ] {
            assert!(
                split_values(bad, &keys).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_command_waits_for_the_previous_one_on_its_bucket() {
        let mut chains = Chains::default();
        let (before, first) = chains.enter(&[1, 2]);
        assert!(before.is_empty());
        let (before, second) = chains.enter(&[2, 3, 3, 2]);
        assert_eq!(before.len(), 1, "never waits for itself");
        first.send(true).unwrap();
        assert!(*before[0].borrow());
        // Once done, a predecessor is not waited for.
        let (before, _third) = chains.enter(&[1]);
        assert!(before.is_empty());
        drop(second);
    }
}
