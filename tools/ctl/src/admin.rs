//! `shoal-ctl move | cancel-move | drain | pause | resume`: one change to the cluster.
//!
//! ```text
//!  --server ──TABLE_GET──► table (node ids for NODE prefixes; the leader's address)
//!           ──NODE_STATUS─► the leader it knows
//!  leader (else --server) ──CLUSTER_ADMIN──► committed through Raft ──► message
//! ```
//!
//! The request goes to the leader when `--server` knows one: the leader checks it against
//! the newest applied state, so its refusals ("a move is in progress") are exact. Any member
//! would commit it too (it proposes to the leader), checking against its own applied state.
//!
//! [`parse_node`] and [`resolve_node`] are pure; [`run`] does the I/O.

use shoal_client::{AdminRequest, Client, Error, TableView};
use std::time::Duration;

/// The least time given to the server to commit a change (a leader election and a commit;
/// the server gives up after about 5 s).
pub const MIN_ADMIN_TIMEOUT: Duration = Duration::from_secs(8);

/// A change to make, with its node as the operator typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `move BUCKET --to NODE`.
    Move {
        /// The bucket.
        bucket: u32,
        /// The receiving node: hex digits of its id (a unique prefix, or all 32).
        to: String,
    },
    /// `cancel-move BUCKET`.
    CancelMove {
        /// The bucket.
        bucket: u32,
    },
    /// `drain NODE`.
    Drain {
        /// The node: hex digits of its id (a unique prefix, or all 32).
        node: String,
    },
    /// `pause` (true) or `resume` (false).
    Pause(bool),
    /// `stop-cluster`.
    StopCluster,
    /// `set replicas N`.
    SetReplicas(u32),
}

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `--server` could not be reached (exit code 3).
    Unreachable(String),
    /// Refused, by this tool (no such node) or by the cluster (exit code 1).
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(m) | Failure::Refused(m) => f.write_str(m),
        }
    }
}

/// Checks a NODE argument: 1 to 32 hex digits (clap's value parser; a bad one is a usage
/// error). Returns it in lower case.
///
/// # Errors
/// What is wrong with it.
pub fn parse_node(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected a node id (1 to 32 hex digits, as `status` prints it)".into());
    }
    Ok(s.to_ascii_lowercase())
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The node id `arg` names in `table`: the one member whose id starts with it. All 32 digits
/// name that id even when the table does not list it (the cluster then refuses it).
///
/// # Errors
/// No member's id starts with `arg`, or several do.
pub fn resolve_node(table: &TableView, arg: &str) -> Result<[u8; 16], String> {
    let arg = arg.to_ascii_lowercase();
    if let Some(id) = from_hex(&arg) {
        return Ok(id);
    }
    let matches: Vec<[u8; 16]> = table
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| hex(id).starts_with(&arg))
        .collect();
    match matches.as_slice() {
        [id] => Ok(*id),
        [] => Err(format!("no member's node id starts with {arg}")),
        many => Err(format!(
            "{arg} is the start of {} members' ids ({}); give more digits",
            many.len(),
            many.iter().map(hex).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The request `action` makes, its nodes resolved against `table`.
///
/// # Errors
/// As [`resolve_node`].
pub fn request(table: &TableView, action: &Action) -> Result<AdminRequest, String> {
    Ok(match action {
        Action::Move { bucket, to } => AdminRequest::Move {
            bucket: *bucket,
            to: resolve_node(table, to)?,
        },
        Action::CancelMove { bucket } => AdminRequest::CancelMove { bucket: *bucket },
        Action::Drain { node } => AdminRequest::Drain {
            node: resolve_node(table, node)?,
        },
        Action::Pause(paused) => AdminRequest::Pause(*paused),
        Action::StopCluster => AdminRequest::StopCluster,
        Action::SetReplicas(n) => AdminRequest::SetReplicas(*n),
    })
}

fn client(addr: &str, timeout: Duration) -> Result<Client, Failure> {
    Client::builder()
        .seed(addr)
        .connect_timeout(timeout)
        .request_timeout(timeout.max(MIN_ADMIN_TIMEOUT))
        .deadline(timeout.max(MIN_ADMIN_TIMEOUT))
        .client_name("shoal-ctl")
        .build()
        .map_err(|e| Failure::Unreachable(format!("{addr}: {e}")))
}

/// Makes the change through `server` (sending it to the leader when `server` knows one) and
/// returns the cluster's message.
///
/// # Errors
/// [`Failure::Unreachable`] when `server` does not answer; [`Failure::Refused`] with the
/// reason otherwise.
pub async fn run(server: &str, timeout: Duration, action: &Action) -> Result<String, Failure> {
    let seed = client(server, timeout)?;
    let table = seed
        .table()
        .await
        .map_err(|e| Failure::Unreachable(format!("cannot fetch the table from {server}: {e}")))?;
    let req = request(&table, action).map_err(Failure::Refused)?;
    let leader = seed
        .node_status()
        .await
        .ok()
        .and_then(|s| s.leader)
        .and_then(|l| table.nodes.iter().find(|n| n.id == l))
        .map(|n| n.native.clone());
    let answer = match leader {
        Some(addr) if addr != server => match client(&addr, timeout) {
            // The leader may have just gone: then the server proposes it on our behalf.
            Ok(leader) => match leader.cluster_admin(req).await {
                Err(Error::Connection(_)) => seed.cluster_admin(req).await,
                other => other,
            },
            Err(_) => seed.cluster_admin(req).await,
        },
        _ => seed.cluster_admin(req).await,
    };
    answer.map_err(|e| match e {
        Error::Server { message, status } if !message.is_empty() => {
            Failure::Refused(format!("refused ({}): {message}", status.name()))
        }
        Error::Connection(_) | Error::Timeout => Failure::Unreachable(format!("{server}: {e}")),
        Error::InDoubt(_) => Failure::Refused(format!(
            "no answer ({e}); the change may or may not have been made: check `status`"
        )),
        other => Failure::Refused(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::{NodeState, TableNode};

    fn table() -> TableView {
        let node = |id: [u8; 16]| TableNode {
            id,
            state: NodeState::Active,
            native: "127.0.0.1:1".into(),
            memcache: String::new(),
        };
        let mut a = [0xab; 16];
        a[1] = 0x01;
        let mut b = [0xab; 16];
        b[1] = 0x02;
        TableView {
            version: 1,
            nodes: vec![node(a), node(b), node([0x10; 16])],
            buckets: Vec::new(),
        }
    }

    #[test]
    fn node_arguments_are_hex_digits_of_an_id() {
        assert_eq!(parse_node("ABab01"), Ok("abab01".to_string()));
        assert_eq!(parse_node(&"f".repeat(32)), Ok("f".repeat(32)));
        for bad in ["", "xyz", "12 4", &"f".repeat(33)] {
            assert!(parse_node(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_unique_prefix_names_its_member_and_others_are_refused_clearly() {
        let t = table();
        assert_eq!(resolve_node(&t, "10"), Ok([0x10; 16]));
        assert_eq!(resolve_node(&t, "ab02"), Ok(t.nodes[1].id));
        let e = resolve_node(&t, "ab").unwrap_err();
        assert!(
            e.contains("2 members") && e.contains("give more digits"),
            "{e}"
        );
        let e = resolve_node(&t, "cd").unwrap_err();
        assert_eq!(e, "no member's node id starts with cd");
        // All 32 digits go to the cluster as they are, known or not.
        assert_eq!(resolve_node(&t, &"77".repeat(16)), Ok([0x77; 16]));
        assert_eq!(
            request(
                &t,
                &Action::Move {
                    bucket: 3,
                    to: "10".into()
                }
            ),
            Ok(AdminRequest::Move {
                bucket: 3,
                to: [0x10; 16]
            })
        );
        assert_eq!(
            request(&t, &Action::Pause(false)),
            Ok(AdminRequest::Pause(false))
        );
        assert!(request(&t, &Action::Drain { node: "ee".into() }).is_err());
    }
}
