//! A cluster of real `shoald` processes on loopback, each with its own data directory, and
//! the questions tests ask it (through `shoal-client`'s TABLE_GET and NODE_STATUS).

#![allow(dead_code)] // each test binary uses part of it

use shoal_client::blocking::Client;
use shoal_client::Client as AsyncClient;
use shoal_proto::cluster::{NodeStatus, RaftRole, TableView};
use shoal_tests::{wait_for, ServerProcess};
use shoald::testing::TempDir;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Buckets of every test cluster (the default).
pub const BUCKETS: u32 = 1024;

/// How long a cluster may take to settle after a change.
pub const SETTLE: Duration = Duration::from_secs(20);

/// One member: its process and data directory.
pub struct Member {
    /// The process.
    pub proc: ServerProcess,
    /// Its data directory.
    pub dir: TempDir,
}

impl Member {
    /// Starts a node on a new data directory with `extra` flags.
    pub fn start(name: &str, extra: &[&str]) -> Member {
        Member::start_binary(name, shoal_tests::shoald_binary(), extra)
    }

    /// [`Member::start`] with another `shoald` binary.
    pub fn start_binary(name: &str, binary: PathBuf, extra: &[&str]) -> Member {
        let dir = TempDir::new(name);
        let mut args = vec!["--data-dir".to_string(), dir.arg()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Member {
            proc: ServerProcess::start_binary(binary, &refs),
            dir,
        }
    }

    /// Empties its data directory (the node must be stopped): restarted, it joins as a new
    /// member on the same addresses.
    pub fn wipe(&self) {
        for entry in std::fs::read_dir(&self.dir.0).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).expect("wipe");
            } else {
                std::fs::remove_file(path).expect("wipe");
            }
        }
    }

    /// Its peer address.
    pub fn peer(&self) -> String {
        self.proc.peer_addr.expect("peer address").to_string()
    }

    /// Its native address.
    pub fn native(&self) -> SocketAddr {
        self.proc.native_addr
    }

    /// NODE_STATUS, or `None` when it does not answer.
    pub fn status(&self) -> Option<NodeStatus> {
        client(self.native())?.node_status().ok()
    }

    /// TABLE_GET, or `None` when it does not answer.
    pub fn table(&self) -> Option<TableView> {
        client(self.native())?.table().ok()
    }
}

/// A short-lived client of one node (no retries beyond its connect timeout).
pub fn client(addr: SocketAddr) -> Option<Client> {
    AsyncClient::builder()
        .seed(addr.to_string())
        .connect_timeout(Duration::from_secs(2))
        .build_blocking()
        .ok()
}

/// A routed client of the whole cluster through `seed` (panics when it cannot connect).
pub fn routed(seed: SocketAddr) -> Client {
    AsyncClient::builder()
        .seed(seed.to_string())
        .connect_timeout(Duration::from_secs(2))
        .build_blocking()
        .expect("client")
}

/// Several members.
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Member>,
}

impl Cluster {
    /// `n` nodes started in one step: the first with `--initial-nodes n`, the others joining
    /// through it; returns once every bucket has a primary.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_nodes(shoal_tests::shoald_binary(), &vec![extra; n])
    }

    /// [`Cluster::start`] with another `shoald` binary, one node per entry of `extras`, each
    /// with its own flags.
    pub fn start_nodes(binary: PathBuf, extras: &[&[&str]]) -> Cluster {
        let n = extras.len();
        let initial = n.to_string();
        let mut first_args = vec!["--initial-nodes", &initial];
        first_args.extend_from_slice(extras[0]);
        let first = Member::start_binary("node0", binary.clone(), &first_args);
        let seed = first.peer();
        let mut members = vec![first];
        for (i, extra) in extras.iter().enumerate().skip(1) {
            let mut args = vec!["--join", seed.as_str()];
            args.extend_from_slice(extra);
            members.push(Member::start_binary(
                &format!("node{i}"),
                binary.clone(),
                &args,
            ));
        }
        let c = Cluster { members };
        assert!(
            c.wait_settled(n, SETTLE),
            "the cluster did not settle: {:?}",
            c.statuses()
        );
        c
    }

    /// NODE_STATUS of every member (`None` for a member that does not answer).
    pub fn statuses(&self) -> Vec<Option<NodeStatus>> {
        self.members.iter().map(Member::status).collect()
    }

    /// The index of the member that says it is the leader, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = self
            .statuses()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.role == RaftRole::Leader))
            .map(|(i, _)| i)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Waits until the running members agree: the same table version, `members` nodes in the
    /// table, every bucket with a primary that is a running member, one leader, and no
    /// replica still being built.
    pub fn wait_settled(&self, members: usize, limit: Duration) -> bool {
        wait_for(limit, || self.settled(members))
    }

    fn settled(&self, members: usize) -> bool {
        let running: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.proc.pid().is_some())
            .collect();
        let tables: Vec<TableView> = running.iter().filter_map(|m| m.table()).collect();
        if tables.len() != running.len() || tables.is_empty() {
            return false;
        }
        let t = &tables[0];
        if tables.iter().any(|x| x != t) || t.nodes.len() != members {
            return false;
        }
        let statuses: Vec<NodeStatus> = running.iter().filter_map(|m| m.status()).collect();
        let live: Vec<[u8; 16]> = statuses.iter().map(|s| s.node_id).collect();
        let all_owned = t.buckets.len() == BUCKETS as usize
            && (0..BUCKETS).all(|b| t.primary_of(b).is_some_and(|p| live.contains(&p.id)));
        let leaders = statuses
            .iter()
            .filter(|s| s.role == RaftRole::Leader)
            .count();
        // Every replica the setting asks for in sync (the table stops changing once they
        // are).
        let setting = statuses
            .iter()
            .map(|s| s.replication.setting)
            .max()
            .unwrap_or(0);
        let active = t
            .nodes
            .iter()
            .filter(|n| n.state == shoal_proto::cluster::NodeState::Active)
            .count() as u32;
        let wanted = BUCKETS * setting.min(active.saturating_sub(1));
        let in_sync: u32 = statuses.iter().map(|s| s.replication.in_sync_of).sum();
        let replicas_built =
            in_sync >= wanted && statuses.iter().all(|s| s.replication.building == 0);
        all_owned && leaders == 1 && replicas_built
    }
}

/// A loopback address where nothing listens (bound, then closed).
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr.to_string()
}

/// Path of a binary of this workspace (next to `shoald`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let shoald = shoal_tests::shoald_binary();
    let bin = shoald.with_file_name(name);
    if !bin.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of {name} failed");
    }
    bin
}

/// Runs `shoald` with `args` until it exits (it must not become ready, and must exit within
/// a minute): exit code, standard error, and how long it ran.
pub fn run_to_exit(args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let child = Command::new(shoal_tests::shoald_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--memcache-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoald");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let out = waiter.join().expect("waiter").expect("output");
        panic!(
            "shoald did not exit within 60 s; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = waiter.join().expect("waiter").expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("shoald ready"),
        "it must not serve: {stdout}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// A blocking memcached text connection.
pub struct Text {
    r: BufReader<TcpStream>,
}

impl Text {
    pub fn connect(addr: SocketAddr) -> Text {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Text {
            r: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).expect("write");
    }

    /// Writes `bytes` from another thread, so a large pipeline and its replies can cross.
    pub fn send_in_background(&mut self, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
        let mut w = self.r.get_ref().try_clone().expect("clone");
        std::thread::spawn(move || w.write_all(&bytes).expect("write"))
    }

    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read line");
        assert!(l.ends_with("\r\n"), "connection closed or line cut: {l:?}");
        l
    }

    /// The bytes of one `get`-family reply: VALUE blocks up to and including `END`, or a
    /// single error line.
    pub fn get_reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            out.extend_from_slice(l.as_bytes());
            if l == "END\r\n" || l.starts_with("SERVER_ERROR") || l.starts_with("CLIENT_ERROR") {
                return out;
            }
            let len: usize = l
                .trim_end()
                .split(' ')
                .nth(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a VALUE line: {l:?}"));
            let mut data = vec![0u8; len + 2];
            self.r.read_exact(&mut data).expect("value");
            out.extend_from_slice(&data);
        }
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.r.read_exact(&mut out).expect("read");
        out
    }

    /// Sends `command` and reads a one-line reply.
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command.as_bytes());
        self.line()
    }

    /// `set key 0 0 <len>` with `value`; the reply line.
    pub fn set(&mut self, key: &str, value: &str) -> String {
        self.ask(&format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()))
    }

    /// `get key`: `Ok(Some(value))`, `Ok(None)` on a miss, `Err(line)` for an error line.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        let l = self.ask(&format!("get {key}\r\n"));
        if l == "END\r\n" {
            return Ok(None);
        }
        let Some(len) = l
            .strip_prefix("VALUE ")
            .and_then(|rest| rest.split_whitespace().nth(2)?.parse::<usize>().ok())
        else {
            return Err(l);
        };
        let mut data = vec![0u8; len + 2];
        self.r.read_exact(&mut data).expect("value");
        assert_eq!(self.line(), "END\r\n");
        data.truncate(len);
        Ok(Some(String::from_utf8(data).expect("utf-8 value")))
    }
}

/// Index in the table's node list of the primary of `key`'s bucket.
pub fn owner(table: &TableView, key: &str) -> usize {
    let bucket = shoal_proto::hash::bucket_of(key.as_bytes(), BUCKETS);
    usize::from(table.buckets[bucket as usize].primary)
}

/// The first `n` keys `<prefix>:<i>` whose bucket the table gives to node `node` (an index
/// into its node list).
pub fn keys_owned_by(table: &TableView, node: usize, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| owner(table, k) == node)
        .take(n)
        .collect()
}

/// The first key `<prefix>:<i>` whose bucket the table gives to `member`.
pub fn key_owned_by(table: &TableView, member: &Member, prefix: &str) -> String {
    let node = index_in(table, member);
    keys_owned_by(table, node, prefix, 1).remove(0)
}

/// Index of `member` in the table's node list.
pub fn index_in(table: &TableView, member: &Member) -> usize {
    let native = member.native().to_string();
    table
        .nodes
        .iter()
        .position(|n| n.native == native)
        .expect("member in the table")
}

/// The memcached address of `member`.
pub fn mc(member: &Member) -> SocketAddr {
    member.proc.memcache_addr.expect("memcached port")
}

/// One `stats` value of the node at `addr`.
pub fn stat(addr: SocketAddr, name: &str) -> u64 {
    let mut c = Text::connect(addr);
    c.send(b"stats\r\n");
    let prefix = format!("STAT {name} ");
    let mut value = None;
    loop {
        let l = c.line();
        if l == "END\r\n" {
            return value.unwrap_or_else(|| panic!("no stat {name}"));
        }
        if let Some(v) = l.strip_prefix(&prefix) {
            value = v.trim_end().parse().ok();
        }
    }
}
