//! The peer port of a real `shoald`, spoken to in raw bytes: the handshake with the right
//! secret, every refusal (wrong secret, another first frame, the wrong node, a frame over the
//! cap) answered with its status and followed by a close, and the start-up rule that a
//! non-loopback peer port needs a secret.

use shoal_proto::peer::{
    decode_frame, decode_message, encode_request, AuthRequest, HelloReply, HelloRequest,
    PeerOpcode, DEFAULT_MAX_PEER_BODY, PEER_PROTOCOL_VERSION,
};
use shoal_proto::{Header, Status};
use shoal_tests::{shoald_binary, ServerProcess};
use shoald::cluster::peer::handshake::{new_nonce, DialerHandshake, Local};
use shoald::cluster::peer::ClusterSecret;
use shoald::datadir::NodeId;
use shoald::testing::TempDir;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &[u8] = b"correct horse battery staple";

/// A blocking connection to a peer port that writes frames and reads whole ones.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Peer {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn request(&mut self, op: PeerOpcode, id: u32, body: &[u8]) {
        let mut f = Vec::new();
        encode_request(&mut f, op, id, body);
        self.send(&f);
    }

    /// The next whole frame, or `None` when the connection closed first.
    fn recv(&mut self) -> Option<(Header, Vec<u8>)> {
        loop {
            if let Some(f) = decode_frame(&self.buf, DEFAULT_MAX_PEER_BODY).expect("valid frame") {
                let body = self.buf[f.body_range()].to_vec();
                self.buf.drain(..f.len);
                return Some((f.header, body));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A reply with a non-OK status: its status and message.
    fn refusal(&mut self) -> (Status, String) {
        let (h, body) = self.recv().expect("a reply");
        assert!(h.is_reply());
        let status = Status::from_u16(h.status).expect("known status");
        assert_ne!(status, Status::Ok);
        (status, decode_message(&body).expect("a message"))
    }

    /// True when the server closes the connection within 2 s, having sent nothing more.
    fn closes(&mut self) -> bool {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut chunk = [0u8; 256];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => panic!("more bytes after the refusal: {:?}", &chunk[..n]),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Sends PEER_HELLO (no cluster: a joining node) and returns the listener's OK reply.
    fn hello(&mut self, expected: [u8; 16], node: NodeId, nonce: [u8; 32]) -> HelloReply {
        let mut body = Vec::new();
        HelloRequest {
            proto_version: PEER_PROTOCOL_VERSION,
            cluster_id: [0; 16],
            node_id: node.0,
            expected_node_id: expected,
            nonce,
        }
        .encode(&mut body);
        self.request(PeerOpcode::PeerHello, 1, &body);
        let (h, body) = self.recv().expect("PEER_HELLO reply");
        assert_eq!(h.status, Status::Ok as u16, "{:?}", decode_message(&body));
        assert_eq!(h.opcode, PeerOpcode::PeerHello as u8);
        HelloReply::decode(&body).expect("a PEER_HELLO reply body")
    }

    /// The whole handshake with `secret`, as the server's own dialer does it.
    fn handshake(addr: SocketAddr, secret: &[u8]) -> Peer {
        let mut p = Peer::connect(addr);
        let secret = ClusterSecret::from_bytes(secret);
        let local = Local {
            node_id: NodeId::generate(),
            cluster_id: None,
            secret: &secret,
        };
        let (state, hello) = DialerHandshake::start(local, None, new_nonce());
        let reply = p.hello([0; 16], local.node_id, hello.nonce);
        let (auth, _) = state
            .on_reply(&reply)
            .expect("the server proves the secret");
        let mut body = Vec::new();
        auth.encode(&mut body);
        p.request(PeerOpcode::PeerAuth, 2, &body);
        let (h, _) = p.recv().expect("PEER_AUTH reply");
        assert_eq!(h.status, Status::Ok as u16);
        p
    }
}

fn secret_file(dir: &TempDir, secret: &[u8]) -> String {
    let path = dir.path().join("secret");
    std::fs::write(&path, [secret, b"\n"].concat()).expect("write secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

fn server_with_secret(dir: &TempDir) -> ServerProcess {
    let file = secret_file(dir, SECRET);
    ServerProcess::start(&["--memcache-listen", "off", "--cluster-secret-file", &file])
}

#[test]
fn the_right_secret_gets_a_connection_that_answers_ping() {
    let dir = TempDir::new("peer-ok");
    let server = server_with_secret(&dir);
    let addr = server.peer_addr.expect("peer= in the ready line");
    assert!(addr.ip().is_loopback());
    let mut p = Peer::handshake(addr, SECRET);
    p.request(PeerOpcode::PeerPing, 7, b"");
    let (h, body) = p.recv().expect("PEER_PING reply");
    assert_eq!((h.status, h.request_id, body.len()), (0, 7, 0));
    // A joining connection: only JOIN and PEER_PING; a JOIN that does not decode is a bad
    // request. The connection stays open after both.
    p.request(PeerOpcode::RaftAppend, 8, b"{}");
    let (status, message) = p.refusal();
    assert_eq!(status, Status::WrongCluster);
    assert!(message.contains("only JOIN and PEER_PING"), "{message}");
    p.request(PeerOpcode::Join, 9, b"{}");
    let (status, message) = p.refusal();
    assert_eq!(status, Status::BadRequest);
    assert!(message.contains("undecodable JOIN"), "{message}");
    // A client opcode is unknown here, and the connection goes on.
    let mut get = Vec::new();
    encode_request(&mut get, PeerOpcode::PeerPing, 10, b"");
    get[2] = 0x10;
    p.send(&get);
    assert_eq!(p.refusal().0, Status::UnknownCommand);
    p.request(PeerOpcode::PeerPing, 11, b"");
    assert_eq!(p.recv().expect("pong").0.status, 0);
}

#[test]
fn a_wrong_or_missing_secret_gets_only_a_refusal_and_a_close() {
    let dir = TempDir::new("peer-secret");
    let server = server_with_secret(&dir);
    let addr = server.peer_addr.expect("peer address");
    for secret in [&b"wrong secret"[..], b""] {
        let mut p = Peer::connect(addr);
        let ours = ClusterSecret::from_bytes(secret);
        let local = Local {
            node_id: NodeId::generate(),
            cluster_id: None,
            secret: &ours,
        };
        let (state, hello) = DialerHandshake::start(local, None, new_nonce());
        let reply = p.hello([0; 16], local.node_id, hello.nonce);
        // The dialer cannot check the server's proof with the wrong key ...
        assert!(state.on_reply(&reply).is_err());
        // ... and a proof it makes anyway is refused; the PEER_PING sent right behind it
        // gets no answer: the server closes after the refusal.
        let mut body = Vec::new();
        AuthRequest { proof: [7; 32] }.encode(&mut body);
        p.request(PeerOpcode::PeerAuth, 2, &body);
        p.request(PeerOpcode::PeerPing, 3, b"");
        let (status, message) = p.refusal();
        assert_eq!(status, Status::AuthFailed);
        assert!(message.contains("authentication failed"), "{message}");
        assert!(p.closes(), "the connection stays open after AUTH_FAILED");
    }
}

#[test]
fn a_first_frame_other_than_peer_hello_is_refused() {
    let dir = TempDir::new("peer-first");
    let server = server_with_secret(&dir);
    let addr = server.peer_addr.expect("peer address");
    // PEER_PING, PEER_AUTH, and a client HELLO (0x01): each refused with HELLO_REQUIRED.
    for (op, body) in [
        (0xC6u8, &b""[..]),
        (0xC1, &[0u8; 32][..]),
        (0x01, b"\x01\x01\x00\x00\x00\x00"),
    ] {
        let mut p = Peer::connect(addr);
        let mut f = Vec::new();
        encode_request(&mut f, PeerOpcode::PeerPing, 5, body);
        f[2] = op;
        p.send(&f);
        let (status, message) = p.refusal();
        assert_eq!(status, Status::HelloRequired, "opcode {op:#x}");
        assert!(message.contains("PEER_HELLO"), "{message}");
        assert!(p.closes());
    }
    // Garbage that is not a frame at all: refused (BAD_REQUEST) and closed.
    let mut p = Peer::connect(addr);
    p.send(b"GET / HTTP/1.0\r\n\r\n");
    let mut reply = Vec::new();
    let _ = p.stream.read_to_end(&mut reply);
    let f = decode_frame(&reply, 1024).expect("a frame").expect("whole");
    assert_eq!(f.header.status, Status::BadRequest as u16);
}

#[test]
fn a_wrong_expected_node_is_refused() {
    let dir = TempDir::new("peer-node");
    let server = server_with_secret(&dir);
    let mut p = Peer::connect(server.peer_addr.expect("peer address"));
    let mut body = Vec::new();
    HelloRequest {
        proto_version: PEER_PROTOCOL_VERSION,
        cluster_id: [0; 16],
        node_id: NodeId::generate().0,
        expected_node_id: NodeId::generate().0,
        nonce: new_nonce(),
    }
    .encode(&mut body);
    p.request(PeerOpcode::PeerHello, 1, &body);
    let (status, message) = p.refusal();
    assert_eq!(status, Status::WrongNode);
    assert!(message.starts_with("wrong node"), "{message}");
    assert!(p.closes());
}

#[test]
fn a_frame_larger_than_the_cap_is_refused() {
    let dir = TempDir::new("peer-large");
    let server = server_with_secret(&dir);
    let addr = server.peer_addr.expect("peer address");
    // After the handshake: a header declaring one byte over 64 MiB, refused on the header.
    let mut p = Peer::handshake(addr, SECRET);
    let over = u32::try_from(DEFAULT_MAX_PEER_BODY + 1).expect("fits");
    p.send(&shoal_proto::raw::header(
        PeerOpcode::Join as u8,
        0,
        0,
        4,
        over,
    ));
    let (status, message) = p.refusal();
    assert_eq!(status, Status::ValueTooLarge);
    assert!(message.contains("larger than the limit"), "{message}");
    assert!(p.closes());
    // Before the handshake the cap is tiny: a large PEER_HELLO is refused the same way.
    let mut p = Peer::connect(addr);
    p.send(&shoal_proto::raw::header(
        PeerOpcode::PeerHello as u8,
        0,
        0,
        1,
        1 << 20,
    ));
    assert_eq!(p.refusal().0, Status::ValueTooLarge);
    assert!(p.closes());
    // A truncated PEER_HELLO body is malformed.
    let mut p = Peer::connect(addr);
    p.request(PeerOpcode::PeerHello, 1, &[PEER_PROTOCOL_VERSION; 20]);
    let (status, message) = p.refusal();
    assert_eq!(status, Status::BadRequest);
    assert!(message.contains("malformed PEER_HELLO"), "{message}");
    assert!(p.closes());
    // The node still serves a good peer.
    let mut p = Peer::handshake(addr, SECRET);
    p.request(PeerOpcode::PeerPing, 1, b"");
    assert_eq!(p.recv().expect("pong").0.status, 0);
}

#[test]
fn a_public_peer_port_needs_a_secret() {
    let out = Command::new(shoald_binary())
        .args(["--listen", "127.0.0.1:0", "--memcache-listen", "off"])
        .args(["--peer-listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run shoald");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--peer-listen 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("--cluster-secret-file"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("shoald ready"));

    // An empty secret file is refused too, with its own reason.
    let dir = TempDir::new("peer-public");
    let empty = secret_file(&dir, b"  ");
    let out = Command::new(shoald_binary())
        .args(["--listen", "127.0.0.1:0", "--memcache-listen", "off"])
        .args([
            "--peer-listen",
            "127.0.0.1:0",
            "--cluster-secret-file",
            &empty,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run shoald");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));

    // With a secret it starts, and the port answers on loopback.
    let file = secret_file(&dir, SECRET);
    let server = ServerProcess::start(&[
        "--memcache-listen",
        "off",
        "--peer-listen",
        "0.0.0.0:0",
        "--cluster-secret-file",
        &file,
    ]);
    let peer = server.peer_addr.expect("peer address");
    assert!(peer.ip().is_unspecified(), "{peer}");
    let loopback = SocketAddr::from(([127, 0, 0, 1], peer.port()));
    let mut p = Peer::handshake(loopback, SECRET);
    p.request(PeerOpcode::PeerPing, 1, b"");
    assert_eq!(p.recv().expect("pong").0.status, 0);
}
