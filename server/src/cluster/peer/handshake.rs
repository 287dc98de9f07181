//! The peer handshake, both sides, as pure steps (no I/O): what to send, what to check.
//!
//! ```text
//!  dialer: DialerHandshake::start  -- PEER_HELLO -->  listener: ListenerHandshake::on_hello
//!          DialerHandshake::on_reply <-- reply ----
//!          (sends PEER_AUTH)        -- PEER_AUTH -->           ListenerHandshake::on_auth
//! ```
//!
//! Proofs are HMAC-SHA256 keyed with the cluster secret (the empty key without one) over a
//! label, both nonces, the session's cluster id and both node ids:
//!
//! ```text
//! listener proof = HMAC(secret, "shoal-peer-v1 listener" || dialer nonce || listener nonce
//!                               || cluster || dialer id || listener id)
//! dialer proof   = HMAC(secret, "shoal-peer-v1 dialer"   || listener nonce || dialer nonce
//!                               || cluster || dialer id || listener id)
//! ```
//!
//! The session's cluster id is the dialer's, or the listener's when the dialer has none (it
//! is joining); all zeros when neither has one. Proofs are checked with
//! [`Mac::verify_slice`], in constant time. Each side checks the other's protocol version,
//! cluster id (both known and different: [`Refusal::WrongCluster`]), node id against the one
//! expected ([`Refusal::WrongNode`]) and proof ([`Refusal::AuthFailed`]).

use super::secret::ClusterSecret;
use crate::datadir::{os_random, ClusterId, NodeId};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shoal_proto::peer::{
    AuthRequest, HelloReply, HelloRequest, PeerOpcode, WireId, NONCE_LEN, PEER_PROTOCOL_VERSION,
    PROOF_LEN,
};
use shoal_proto::Status;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Label of the listener's proof.
pub const LISTENER_LABEL: &[u8] = b"shoal-peer-v1 listener";
/// Label of the dialer's proof.
pub const DIALER_LABEL: &[u8] = b"shoal-peer-v1 dialer";

/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];

/// A fresh random nonce from the OS's random source. Should the source be unreadable (it
/// never is on Linux), the nonce comes from std's randomly keyed hasher and the clock, which
/// still never repeats within a process.
pub fn new_nonce() -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    if !os_random(&mut n) {
        for chunk in n.chunks_mut(16) {
            chunk.copy_from_slice(&NodeId::generate().0);
        }
    }
    n
}

/// What one side knows of itself when a handshake starts.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's cluster id, `None` before it has one.
    pub cluster_id: Option<ClusterId>,
    /// The key of the proofs.
    pub secret: &'a ClusterSecret,
}

/// What a completed handshake established about the other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The other node's id.
    pub node_id: NodeId,
    /// The other node's cluster id, `None` when it had none.
    pub cluster_id: Option<ClusterId>,
    /// Listener side: the dialer had no cluster id, so the connection carries only JOIN and
    /// PEER_PING ([`check_allowed`]). Dialer side: always false.
    pub joining: bool,
}

/// Why one side refuses the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The other side speaks another peer protocol version.
    UnsupportedVersion {
        /// Its version.
        theirs: u8,
    },
    /// Both sides have a cluster id, and they differ.
    WrongCluster {
        /// This node's cluster.
        ours: ClusterId,
        /// The other node's cluster.
        theirs: ClusterId,
    },
    /// The node reached is not the one expected.
    WrongNode {
        /// The node the dialer meant to reach.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// The other side's proof does not match this side's secret.
    AuthFailed,
    /// A joining connection (the dialer has no cluster yet) asked for something other than
    /// JOIN or PEER_PING.
    NotMember {
        /// What it asked for.
        op: PeerOpcode,
    },
}

impl Refusal {
    /// The reply status that carries this refusal.
    pub fn status(&self) -> Status {
        match self {
            Refusal::UnsupportedVersion { .. } => Status::UnsupportedVersion,
            Refusal::WrongCluster { .. } | Refusal::NotMember { .. } => Status::WrongCluster,
            Refusal::WrongNode { .. } => Status::WrongNode,
            Refusal::AuthFailed => Status::AuthFailed,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnsupportedVersion { theirs } => write!(
                f,
                "unsupported peer protocol version {theirs} (this node speaks \
                 {PEER_PROTOCOL_VERSION})"
            ),
            Refusal::WrongCluster { ours, theirs } => write!(
                f,
                "wrong cluster: this node belongs to cluster {ours}, the other node to {theirs}"
            ),
            Refusal::WrongNode { expected, actual } => {
                write!(
                    f,
                    "wrong node: expected node {expected}, reached node {actual}"
                )
            }
            Refusal::AuthFailed => f.write_str(
                "authentication failed: the proof does not match this node's cluster secret \
                 (the secrets differ, or only one side has one)",
            ),
            Refusal::NotMember { op } => write!(
                f,
                "{} refused: the node has not joined a cluster yet; only JOIN and PEER_PING \
                 are allowed",
                op.name()
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Whether a connection whose dialer is `joining` may carry `op`.
///
/// # Errors
/// [`Refusal::NotMember`] for anything but JOIN and PEER_PING on a joining connection.
pub fn check_allowed(joining: bool, op: PeerOpcode) -> Result<(), Refusal> {
    if joining && !matches!(op, PeerOpcode::Join | PeerOpcode::PeerPing) {
        return Err(Refusal::NotMember { op });
    }
    Ok(())
}

/// A cluster id on the wire: all zeros for none.
pub fn cluster_to_wire(id: Option<ClusterId>) -> WireId {
    id.map_or([0; 16], |c| c.0)
}

/// A cluster id from the wire: all zeros is none.
pub fn cluster_from_wire(id: WireId) -> Option<ClusterId> {
    (id != [0; 16]).then_some(ClusterId(id))
}

fn check_version(theirs: u8) -> Result<(), Refusal> {
    if theirs == PEER_PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Refusal::UnsupportedVersion { theirs })
    }
}

fn check_cluster(ours: Option<ClusterId>, theirs: Option<ClusterId>) -> Result<(), Refusal> {
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if ours != theirs => Err(Refusal::WrongCluster { ours, theirs }),
        _ => Ok(()),
    }
}

/// Everything a proof covers, in order.
struct Transcript {
    dialer_nonce: Nonce,
    listener_nonce: Nonce,
    cluster: WireId,
    dialer: NodeId,
    listener: NodeId,
}

impl Transcript {
    fn mac(&self, secret: &ClusterSecret, label: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length (the empty key included), so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(secret.key()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(label);
        if label == LISTENER_LABEL {
            mac.update(&self.dialer_nonce);
            mac.update(&self.listener_nonce);
        } else {
            mac.update(&self.listener_nonce);
            mac.update(&self.dialer_nonce);
        }
        mac.update(&self.cluster);
        mac.update(&self.dialer.0);
        mac.update(&self.listener.0);
        mac
    }

    fn proof(&self, secret: &ClusterSecret, label: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(secret, label).finalize().into_bytes().into()
    }

    /// Checks `proof` in constant time.
    fn verify(&self, secret: &ClusterSecret, label: &[u8], proof: &[u8]) -> Result<(), Refusal> {
        self.mac(secret, label)
            .verify_slice(proof)
            .map_err(|_| Refusal::AuthFailed)
    }
}

/// The dialer's side, between sending PEER_HELLO and receiving its reply.
#[derive(Debug, Clone)]
pub struct DialerHandshake {
    node_id: NodeId,
    cluster_id: Option<ClusterId>,
    expected: Option<NodeId>,
    nonce: Nonce,
    secret: ClusterSecret,
}

impl DialerHandshake {
    /// Starts a handshake towards the node `expected` (any node when `None`) with a fresh
    /// `nonce`; returns the state and the PEER_HELLO body to send.
    pub fn start(local: Local<'_>, expected: Option<NodeId>, nonce: Nonce) -> (Self, HelloRequest) {
        let hello = HelloRequest {
            proto_version: PEER_PROTOCOL_VERSION,
            cluster_id: cluster_to_wire(local.cluster_id),
            node_id: local.node_id.0,
            expected_node_id: expected.map_or([0; 16], |n| n.0),
            nonce,
        };
        let state = Self {
            node_id: local.node_id,
            cluster_id: local.cluster_id,
            expected,
            nonce,
            secret: local.secret.clone(),
        };
        (state, hello)
    }

    /// Checks the listener's OK reply to PEER_HELLO; returns the PEER_AUTH body to send and
    /// what was learnt of the listener.
    ///
    /// # Errors
    /// The [`Refusal`]: the dialer then closes the connection without sending PEER_AUTH.
    pub fn on_reply(self, reply: &HelloReply) -> Result<(AuthRequest, Verified), Refusal> {
        check_version(reply.proto_version)?;
        let theirs = cluster_from_wire(reply.cluster_id);
        check_cluster(self.cluster_id, theirs)?;
        let listener = NodeId(reply.node_id);
        if let Some(expected) = self.expected {
            if expected != listener {
                return Err(Refusal::WrongNode {
                    expected,
                    actual: listener,
                });
            }
        }
        let t = Transcript {
            dialer_nonce: self.nonce,
            listener_nonce: reply.nonce,
            cluster: cluster_to_wire(self.cluster_id.or(theirs)),
            dialer: self.node_id,
            listener,
        };
        t.verify(&self.secret, LISTENER_LABEL, &reply.proof)?;
        let auth = AuthRequest {
            proof: t.proof(&self.secret, DIALER_LABEL),
        };
        let verified = Verified {
            node_id: listener,
            cluster_id: theirs,
            joining: false,
        };
        Ok((auth, verified))
    }
}

/// The listener's side, between answering PEER_HELLO and receiving PEER_AUTH.
#[derive(Debug, Clone)]
pub struct ListenerHandshake {
    transcript_dialer_nonce: Nonce,
    listener_nonce: Nonce,
    cluster: WireId,
    dialer: NodeId,
    dialer_cluster: Option<ClusterId>,
    listener: NodeId,
    secret: ClusterSecret,
}

impl ListenerHandshake {
    /// Checks the dialer's PEER_HELLO; returns the state and the OK reply body (with a fresh
    /// `nonce` and this side's proof).
    ///
    /// # Errors
    /// The [`Refusal`]: the listener answers PEER_HELLO with its status and closes.
    pub fn on_hello(
        local: Local<'_>,
        hello: &HelloRequest,
        nonce: Nonce,
    ) -> Result<(Self, HelloReply), Refusal> {
        check_version(hello.proto_version)?;
        let theirs = cluster_from_wire(hello.cluster_id);
        check_cluster(local.cluster_id, theirs)?;
        if hello.expected_node_id != [0; 16] && hello.expected_node_id != local.node_id.0 {
            return Err(Refusal::WrongNode {
                expected: NodeId(hello.expected_node_id),
                actual: local.node_id,
            });
        }
        let state = Self {
            transcript_dialer_nonce: hello.nonce,
            listener_nonce: nonce,
            cluster: cluster_to_wire(theirs.or(local.cluster_id)),
            dialer: NodeId(hello.node_id),
            dialer_cluster: theirs,
            listener: local.node_id,
            secret: local.secret.clone(),
        };
        let reply = HelloReply {
            proto_version: PEER_PROTOCOL_VERSION,
            cluster_id: cluster_to_wire(local.cluster_id),
            node_id: local.node_id.0,
            nonce,
            proof: state.transcript().proof(&state.secret, LISTENER_LABEL),
        };
        Ok((state, reply))
    }

    /// The dialer's node id, as it claimed in PEER_HELLO (not proven until
    /// [`on_auth`](Self::on_auth) succeeds): for log lines.
    pub fn claimed_dialer(&self) -> NodeId {
        self.dialer
    }

    /// Checks the dialer's proof; returns what was learnt of the dialer.
    ///
    /// # Errors
    /// [`Refusal::AuthFailed`]: the listener answers `AUTH_FAILED` and closes.
    pub fn on_auth(self, auth: &AuthRequest) -> Result<Verified, Refusal> {
        self.transcript()
            .verify(&self.secret, DIALER_LABEL, &auth.proof)?;
        Ok(Verified {
            node_id: self.dialer,
            cluster_id: self.dialer_cluster,
            joining: self.dialer_cluster.is_none(),
        })
    }

    fn transcript(&self) -> Transcript {
        Transcript {
            dialer_nonce: self.transcript_dialer_nonce,
            listener_nonce: self.listener_nonce,
            cluster: self.cluster,
            dialer: self.dialer,
            listener: self.listener,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Side {
        node: NodeId,
        cluster: Option<ClusterId>,
        secret: ClusterSecret,
    }

    impl Side {
        fn new(cluster: Option<ClusterId>, secret: &[u8]) -> Self {
            Self {
                node: NodeId::generate(),
                cluster,
                secret: ClusterSecret::from_bytes(secret),
            }
        }

        fn local(&self) -> Local<'_> {
            Local {
                node_id: self.node,
                cluster_id: self.cluster,
                secret: &self.secret,
            }
        }
    }

    /// Where a handshake ended.
    #[derive(Debug, PartialEq)]
    enum End {
        /// Both sides verified each other: (dialer's view of the listener, listener's view).
        Done(Verified, Verified),
        /// The listener refused PEER_HELLO.
        ListenerRefusedHello(Refusal),
        /// The dialer refused the reply.
        DialerRefused(Refusal),
        /// The listener refused PEER_AUTH.
        ListenerRefusedAuth(Refusal),
    }

    fn run(dialer: &Side, listener: &Side, expected: Option<NodeId>) -> End {
        let (d, hello) = DialerHandshake::start(dialer.local(), expected, new_nonce());
        let (l, reply) = match ListenerHandshake::on_hello(listener.local(), &hello, new_nonce()) {
            Ok(x) => x,
            Err(r) => return End::ListenerRefusedHello(r),
        };
        assert_eq!(l.claimed_dialer(), dialer.node);
        let (auth, seen_by_dialer) = match d.on_reply(&reply) {
            Ok(x) => x,
            Err(r) => return End::DialerRefused(r),
        };
        match l.on_auth(&auth) {
            Ok(seen_by_listener) => End::Done(seen_by_dialer, seen_by_listener),
            Err(r) => End::ListenerRefusedAuth(r),
        }
    }

    #[test]
    fn the_right_secret_passes_both_ways() {
        let c = Some(ClusterId::generate());
        let a = Side::new(c, b"secret");
        let b = Side::new(c, b"secret");
        for (d, l) in [(&a, &b), (&b, &a)] {
            let End::Done(seen_by_dialer, seen_by_listener) = run(d, l, Some(l.node)) else {
                panic!("handshake failed")
            };
            assert_eq!(seen_by_dialer.node_id, l.node);
            assert_eq!(seen_by_dialer.cluster_id, c);
            assert_eq!(seen_by_listener.node_id, d.node);
            assert_eq!(seen_by_listener.cluster_id, c);
            assert!(!seen_by_listener.joining);
        }
        // Two nodes without a secret talk to each other (loopback-only clusters).
        let a = Side::new(c, b"");
        let b = Side::new(c, b"");
        assert!(matches!(run(&a, &b, None), End::Done(..)));
    }

    #[test]
    fn a_wrong_secret_fails_on_either_side() {
        let c = Some(ClusterId::generate());
        let good = Side::new(c, b"secret");
        let bad = Side::new(c, b"Secret");
        // The listener has the wrong secret: the dialer refuses its proof.
        assert_eq!(
            run(&good, &bad, None),
            End::DialerRefused(Refusal::AuthFailed)
        );
        // The dialer has the wrong secret: it accepts nothing (the listener's proof fails)...
        assert_eq!(
            run(&bad, &good, None),
            End::DialerRefused(Refusal::AuthFailed)
        );
        // ... and a dialer that skips that check and sends its own proof is refused.
        let (d, hello) = DialerHandshake::start(bad.local(), None, new_nonce());
        let (l, reply) = ListenerHandshake::on_hello(good.local(), &hello, new_nonce()).unwrap();
        let forged = Transcript {
            dialer_nonce: hello.nonce,
            listener_nonce: reply.nonce,
            cluster: reply.cluster_id,
            dialer: bad.node,
            listener: good.node,
        }
        .proof(&bad.secret, DIALER_LABEL);
        drop(d);
        assert_eq!(
            l.on_auth(&AuthRequest { proof: forged }),
            Err(Refusal::AuthFailed)
        );
        assert_eq!(Refusal::AuthFailed.status(), Status::AuthFailed);
    }

    #[test]
    fn a_missing_secret_and_a_present_one_fail_each_other() {
        let c = Some(ClusterId::generate());
        let with = Side::new(c, b"secret");
        let without = Side::new(c, b"");
        assert_eq!(
            run(&with, &without, None),
            End::DialerRefused(Refusal::AuthFailed)
        );
        assert_eq!(
            run(&without, &with, None),
            End::DialerRefused(Refusal::AuthFailed)
        );
    }

    #[test]
    fn a_replayed_or_reflected_proof_is_refused() {
        let c = Some(ClusterId::generate());
        let a = Side::new(c, b"secret");
        let b = Side::new(c, b"secret");
        // A PEER_AUTH recorded from one session does not pass another (new listener nonce).
        let (d, hello) = DialerHandshake::start(a.local(), None, new_nonce());
        let (_, reply) = ListenerHandshake::on_hello(b.local(), &hello, new_nonce()).unwrap();
        let (recorded, _) = d.on_reply(&reply).unwrap();
        let (l2, _) = ListenerHandshake::on_hello(b.local(), &hello, new_nonce()).unwrap();
        assert_eq!(l2.on_auth(&recorded), Err(Refusal::AuthFailed));
        // The listener's own proof sent back as the dialer's is refused (labels differ).
        let (l3, reply3) = ListenerHandshake::on_hello(b.local(), &hello, new_nonce()).unwrap();
        assert_eq!(
            l3.on_auth(&AuthRequest {
                proof: reply3.proof
            }),
            Err(Refusal::AuthFailed)
        );
    }

    #[test]
    fn a_wrong_cluster_is_refused_by_the_listener() {
        let a = Side::new(Some(ClusterId::generate()), b"s");
        let b = Side::new(Some(ClusterId::generate()), b"s");
        let End::ListenerRefusedHello(r) = run(&a, &b, None) else {
            panic!("not refused")
        };
        assert_eq!(
            r,
            Refusal::WrongCluster {
                ours: b.cluster.unwrap(),
                theirs: a.cluster.unwrap()
            }
        );
        assert_eq!(r.status(), Status::WrongCluster);
        let text = r.to_string();
        assert!(text.contains(&a.cluster.unwrap().to_string()), "{text}");
        assert!(text.contains(&b.cluster.unwrap().to_string()), "{text}");
        // The dialer checks too (a listener that answers anyway).
        let (d, hello) = DialerHandshake::start(a.local(), None, new_nonce());
        let no_cluster = Side {
            cluster: None,
            ..Side::new(None, b"s")
        };
        let (_, mut reply) =
            ListenerHandshake::on_hello(no_cluster.local(), &hello, new_nonce()).unwrap();
        reply.cluster_id = b.cluster.unwrap().0;
        assert!(matches!(
            d.on_reply(&reply),
            Err(Refusal::WrongCluster { .. })
        ));
    }

    #[test]
    fn a_wrong_expected_node_is_refused_by_both_sides() {
        let c = Some(ClusterId::generate());
        let a = Side::new(c, b"s");
        let b = Side::new(c, b"s");
        let someone_else = NodeId::generate();
        assert_eq!(
            run(&a, &b, Some(someone_else)),
            End::ListenerRefusedHello(Refusal::WrongNode {
                expected: someone_else,
                actual: b.node
            })
        );
        // The dialer checks the id the listener answers with.
        let (d, mut hello) = DialerHandshake::start(a.local(), Some(someone_else), new_nonce());
        hello.expected_node_id = [0; 16];
        let (_, reply) = ListenerHandshake::on_hello(b.local(), &hello, new_nonce()).unwrap();
        let err = d.on_reply(&reply).unwrap_err();
        assert_eq!(err.status(), Status::WrongNode);
        assert!(err.to_string().contains(&someone_else.to_string()));
    }

    #[test]
    fn a_joining_dialer_may_only_join_and_ping() {
        let c = Some(ClusterId::generate());
        let member = Side::new(c, b"s");
        let newcomer = Side::new(None, b"s");
        let End::Done(seen_by_dialer, seen_by_listener) = run(&newcomer, &member, None) else {
            panic!("handshake failed")
        };
        assert_eq!(seen_by_dialer.cluster_id, c);
        assert!(seen_by_listener.joining);
        assert_eq!(seen_by_listener.cluster_id, None);
        for &(n, _) in shoal_proto::PEER_OPCODES {
            let op = PeerOpcode::from_u8(n).unwrap();
            let allowed = check_allowed(true, op).is_ok();
            assert_eq!(
                allowed,
                matches!(op, PeerOpcode::Join | PeerOpcode::PeerPing),
                "{op:?}"
            );
            assert!(check_allowed(false, op).is_ok());
        }
        // A joining node cannot propose changes to the cluster it is not in yet.
        assert!(check_allowed(true, PeerOpcode::Propose).is_err());
        let r = check_allowed(true, PeerOpcode::RaftVote).unwrap_err();
        assert_eq!(r.status(), Status::WrongCluster);
        assert!(r.to_string().contains("RAFT_VOTE"), "{r}");
        // A member dialing a node that has no cluster yet is not "joining".
        let End::Done(_, seen) = run(&member, &newcomer, None) else {
            panic!("handshake failed")
        };
        assert!(!seen.joining);
    }

    #[test]
    fn another_version_is_refused() {
        let c = Some(ClusterId::generate());
        let a = Side::new(c, b"s");
        let b = Side::new(c, b"s");
        let (d, mut hello) = DialerHandshake::start(a.local(), None, new_nonce());
        hello.proto_version = 2;
        let err = ListenerHandshake::on_hello(b.local(), &hello, new_nonce()).unwrap_err();
        assert_eq!(err, Refusal::UnsupportedVersion { theirs: 2 });
        assert_eq!(err.status(), Status::UnsupportedVersion);
        hello.proto_version = PEER_PROTOCOL_VERSION;
        let (_, mut reply) = ListenerHandshake::on_hello(b.local(), &hello, new_nonce()).unwrap();
        reply.proto_version = 9;
        assert_eq!(
            d.on_reply(&reply).unwrap_err(),
            Refusal::UnsupportedVersion { theirs: 9 }
        );
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(new_nonce(), new_nonce());
    }
}
