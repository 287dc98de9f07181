//! The control view: what the nemesis (and `lib.rs`, for the bucket count) asks the cluster,
//! through `shoal-client`'s TABLE_GET and NODE_STATUS. It never carries load.
//!
//! ```text
//!  Control ── one Client per native address (seeded with that address only, so a keyless
//!          │  request goes to that node) ── table() ─► TableView from the first that answers
//!          └─ leader() ─► NODE_STATUS of every address, the one whose role is Leader
//! ```
//!
//! Every call has short timeouts: a paused or stopped node costs about a second, then the
//! next address is tried. [`buckets_of`] is pure.

use shoal_client::{Client, RaftRole, TableView, NO_PRIMARY};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Connect timeout, request timeout and whole-call deadline of every control request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);

/// Clients of the nodes, by native address (ports are kept across restarts, so this holds
/// one client per node that ever ran).
#[derive(Debug, Default)]
pub struct Control {
    clients: Mutex<HashMap<String, Client>>,
}

impl Control {
    /// No clients yet (they are built on first use, and connect lazily).
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self, addr: &str) -> Result<Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = Client::builder()
            .seed(addr)
            .connect_timeout(CONTROL_TIMEOUT)
            .request_timeout(CONTROL_TIMEOUT)
            .deadline(CONTROL_TIMEOUT * 2)
            .client_name("consistency-checker-control")
            .build()
            .map_err(|e| format!("client of {addr}: {e}"))?;
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The bucket table, from the first of `addrs` that answers.
    ///
    /// # Errors
    /// Why none answered (the last error).
    pub async fn table(&self, addrs: &[String]) -> Result<TableView, String> {
        let mut last = "no address to ask".to_string();
        for addr in addrs {
            match self.client(addr)?.table().await {
                Ok(t) => return Ok(t),
                Err(e) => last = format!("TABLE_GET from {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// The number of buckets (`table.buckets.len()`), from the first of `addrs` that answers.
    ///
    /// # Errors
    /// As [`Control::table`].
    pub async fn bucket_count(&self, addrs: &[String]) -> Result<u32, String> {
        let t = self.table(addrs).await?;
        u32::try_from(t.buckets.len()).map_err(|_| "too many buckets".to_string())
    }

    /// The address among `addrs` whose node says it is the Raft leader (asked in turn).
    pub async fn leader(&self, addrs: &[String]) -> Option<String> {
        for addr in addrs {
            let Ok(client) = self.client(addr) else {
                continue;
            };
            if let Ok(s) = client.node_status().await {
                if s.role == RaftRole::Leader {
                    return Some(addr.clone());
                }
            }
        }
        None
    }

    /// Waits until the table, read from any of `addrs`, lists at least `members` nodes and
    /// gives every bucket a primary; gives up after `limit`.
    ///
    /// # Errors
    /// What the table looked like (or why it could not be read) at the deadline.
    pub async fn wait_formed(
        &self,
        addrs: &[String],
        members: usize,
        limit: Duration,
    ) -> Result<TableView, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let why = match self.table(addrs).await {
                Ok(t) if formed(&t, members) => return Ok(t),
                Ok(t) => format!(
                    "{} of {members} members, {} of {} buckets without a primary",
                    t.nodes.len(),
                    t.buckets.iter().filter(|b| b.primary == NO_PRIMARY).count(),
                    t.buckets.len()
                ),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not formed within {limit:?}: {why}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes every client.
    pub async fn close(&self) {
        let clients: Vec<Client> = {
            let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, c)| c).collect()
        };
        for c in clients {
            c.close().await;
        }
    }
}

/// Whether `table` lists at least `members` nodes and every bucket has a primary.
pub fn formed(table: &TableView, members: usize) -> bool {
    table.nodes.len() >= members
        && !table.buckets.is_empty()
        && table.buckets.iter().all(|b| b.primary != NO_PRIMARY)
}

/// The buckets whose primary is the node listening on native address `addr`.
pub fn buckets_of(table: &TableView, addr: &str) -> Vec<u32> {
    let Some(index) = table.nodes.iter().position(|n| n.native == addr) else {
        return Vec::new();
    };
    table
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| usize::from(b.primary) == index)
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

/// How many buckets each member of `table` is primary of, by native address (members owning
/// none included), and how many buckets have no primary.
pub fn owner_counts(table: &TableView) -> (BTreeMap<String, usize>, usize) {
    let mut counts: BTreeMap<String, usize> =
        table.nodes.iter().map(|n| (n.native.clone(), 0)).collect();
    let mut unowned = 0;
    for b in &table.buckets {
        match table.nodes.get(usize::from(b.primary)) {
            Some(n) if b.primary != NO_PRIMARY => *counts.entry(n.native.clone()).or_default() += 1,
            _ => unowned += 1,
        }
    }
    (counts, unowned)
}

/// Every bucket of `table`.
pub fn all_buckets(table: &TableView) -> Vec<u32> {
    (0..u32::try_from(table.buckets.len()).unwrap_or(u32::MAX)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::{NodeState, TableBucket, TableNode};

    fn table(primaries: &[u16]) -> TableView {
        let node = |i: u8| TableNode {
            id: [i; 16],
            state: NodeState::Active,
            native: format!("127.0.0.1:{}", 7400 + u16::from(i)),
            memcache: String::new(),
        };
        TableView {
            version: 1,
            nodes: vec![node(0), node(1)],
            buckets: primaries
                .iter()
                .map(|&primary| TableBucket { primary, epoch: 1 })
                .collect(),
        }
    }

    #[test]
    fn buckets_of_a_node_by_native_address() {
        let t = table(&[0, 1, 1, NO_PRIMARY]);
        assert_eq!(buckets_of(&t, "127.0.0.1:7401"), vec![1, 2]);
        assert_eq!(buckets_of(&t, "127.0.0.1:7400"), vec![0]);
        assert!(buckets_of(&t, "127.0.0.1:9999").is_empty());
        assert_eq!(all_buckets(&t), vec![0, 1, 2, 3]);
        assert!(!formed(&t, 2));
        assert!(formed(&table(&[0, 1]), 2));
        assert!(!formed(&table(&[0, 1]), 3));
    }
}
