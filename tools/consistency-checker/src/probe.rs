//! The probe: while the nemesis keeps a node cut off from its peers (the `partition` fault),
//! reads go straight to that node's memcached port, for keys of the buckets it was primary
//! of when it was cut off.
//!
//! ```text
//!   nemesis partition ── aim(Some(node, buckets)) ──► Probe ◄── run(): read, judge, repeat
//!                     ── aim(None) before the heal ──►
//! ```
//!
//! The workers' routed clients soon follow the table to the buckets' new primaries, so
//! they alone rarely ask the cut-off node again. A node that keeps serving once its lease
//! ran out (`--fault-ignore-lease`) answers the probe with the values it held when it was
//! cut off, while the workers overwrite them on the majority's side: **stale**. A correct
//! node refuses every read once its lease ran out, which is before the majority can have
//! promoted anything, so it never answers older than the last acknowledged write.
//!
//! Probe reads are judged like the workers' reads and counted apart (`probe_reads`
//! answered, `probe_refused` not).

use crate::backend::ClientSettings;
use crate::memcache::McClient;
use crate::model::Keyspace;
use crate::report::Counters;
use crate::workload::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long one probe read may take (a refusal comes back at once; a held read is given up).
const READ_TIMEOUT: Duration = Duration::from_millis(300);

/// How often an idle probe looks whether the run is over.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// What the probe reads: a node's memcached address and the buckets it was primary of.
#[derive(Debug, Clone)]
pub struct Aim {
    /// The node's memcached address.
    pub memcache: String,
    /// The buckets it was primary of when it was cut off.
    pub buckets: Vec<u32>,
}

/// Where the probe reads, set by the nemesis. Cheap to share.
#[derive(Debug)]
pub struct Probe {
    aim: watch::Sender<Option<Arc<Aim>>>,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            aim: watch::Sender::new(None),
        }
    }
}

impl Probe {
    /// Reads from `aim` from now on (`None`: stop reading).
    pub fn aim(&self, aim: Option<Aim>) {
        self.aim.send_replace(aim.map(Arc::new));
    }
}

/// Reads from wherever `probe` is aimed until the workers stop: keys of `keyspace` in the
/// aimed buckets, hot ones when there are any (they are rewritten the most, so an old copy
/// shows soonest).
pub async fn run(probe: Arc<Probe>, shared: Shared, keyspace: Keyspace, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5052_4F42_4521);
    let mut aimed = probe.aim.subscribe();
    while !shared.stopping() {
        let Some(aim) = aimed.borrow_and_update().clone() else {
            let _ = tokio::time::timeout(IDLE_CHECK, aimed.changed()).await;
            continue;
        };
        let keys = keys_in(&shared, &keyspace, &aim.buckets);
        let settings = ClientSettings {
            servers: Vec::new(),
            memcache_servers: vec![aim.memcache.clone()],
            request_timeout: READ_TIMEOUT,
            deadline: READ_TIMEOUT,
        };
        let Ok(client) = McClient::new(&settings) else {
            return;
        };
        while !shared.stopping() && !aimed.has_changed().unwrap_or(true) && !keys.is_empty() {
            let index = keys[rng.usize(..keys.len())];
            let key = keyspace.name(index);
            let ticket = shared.model.begin_read(index, shared.clock.elapsed());
            match client.get(&key).await {
                Ok(got) => {
                    Counters::bump(&shared.counters.probe_reads);
                    shared.check(index, &key, got.as_ref(), ticket);
                }
                Err(_) => Counters::bump(&shared.counters.probe_refused),
            }
        }
        client.close();
        if keys.is_empty() {
            let _ = tokio::time::timeout(IDLE_CHECK, aimed.changed()).await;
        }
    }
}

/// The key indices in `buckets`: the hot ones when there are any, else all.
fn keys_in(shared: &Shared, keyspace: &Keyspace, buckets: &[u32]) -> Vec<u32> {
    let all: Vec<u32> = (0..keyspace.len())
        .filter(|&i| buckets.contains(&shared.model.bucket(i)))
        .collect();
    let hot_keys: Vec<u32> = all
        .iter()
        .copied()
        .filter(|&i| i < keyspace.hot())
        .collect();
    if hot_keys.is_empty() {
        all
    } else {
        hot_keys
    }
}
