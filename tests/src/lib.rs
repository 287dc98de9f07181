//! Test harness: real `shoald` processes on loopback ports, and a small blocking native
//! protocol connection for raw-byte tests.
//!
//! [`ServerProcess`] starts the `shoald` binary built by this workspace with
//! `--listen 127.0.0.1:0 --peer-listen 127.0.0.1:0` (unless told otherwise), reads the ready line it prints to learn the
//! ports, and stops the process when dropped. `restart()` starts it again on the same ports,
//! so clients can reconnect to the address they know.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_proto::{decode_reply, Command as Cmd, Limits, Reply, Request};
use shoald::ready::ReadyLine;
pub use shoald::testing::wait_for;

/// How long a server may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `shoald` binary of this workspace, building it if it is missing.
///
/// # Panics
/// When the binary cannot be found or built.
pub fn shoald_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOALD_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
    let bin = profile_dir.join("shoald");
    if !bin.exists() {
        let release = profile_dir.ends_with("release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "-p", "shoald", "--bin", "shoald"]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build of shoald failed");
    }
    bin
}

/// Path of `shoald` built with the test-only `fault-injection` feature: `SHOALD_FAULT_BIN`
/// when set, else `target/fault/debug/shoald` under the workspace root, built there when
/// missing (its own target directory, so the normal binary stays free of faults).
///
/// # Panics
/// When the binary is missing and cannot be built.
pub fn fault_shoald_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOALD_FAULT_BIN") {
        return PathBuf::from(path);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/fault");
    let bin = dir.join("debug/shoald");
    if !bin.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &dir)
            .args(["build", "-p", "shoald", "--bin", "shoald"])
            .args(["--features", "fault-injection"])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the fault-injection shoald failed"
        );
    }
    bin
}

/// A `shoald` process. Killed (SIGKILL) when dropped if still running.
pub struct ServerProcess {
    /// Native protocol address.
    pub native_addr: SocketAddr,
    /// memcached text protocol address, when enabled.
    pub memcache_addr: Option<SocketAddr>,
    /// Peer port address.
    pub peer_addr: Option<SocketAddr>,
    binary: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Standard error lines of the process, collected by a thread.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl ServerProcess {
    /// Starts `shoald` with `extra` arguments (after `--listen 127.0.0.1:0 --memcache-listen
    /// 127.0.0.1:0 --peer-listen 127.0.0.1:0 --log-level warn`, so `extra` may override
    /// them).
    ///
    /// # Panics
    /// When the process does not start or print its ready line within 30 s.
    pub fn start(extra: &[&str]) -> ServerProcess {
        ServerProcess::start_binary(shoald_binary(), extra)
    }

    /// [`ServerProcess::start`] with another `shoald` binary (e.g. [`fault_shoald_binary`]).
    ///
    /// # Panics
    /// When the process does not start or print its ready line within 30 s.
    pub fn start_binary(binary: PathBuf, extra: &[&str]) -> ServerProcess {
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--memcache-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = ServerProcess {
            native_addr: "127.0.0.1:0".parse().expect("addr"),
            memcache_addr: None,
            peer_addr: None,
            binary,
            args,
            child: None,
            stderr: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoald");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        self.stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        }));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if ReadyLine::is_ready_line(&line) {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                panic!("shoald did not become ready; stderr:\n{err}");
            }
        };
        let ready = ReadyLine::parse(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        self.native_addr = ready.native;
        self.memcache_addr = ready.memcache;
        self.peer_addr = ready.peer;
        // Pin the ports so a restart binds the same ones.
        set_arg(&mut self.args, "--listen", &self.native_addr.to_string());
        let memcache = self
            .memcache_addr
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        set_arg(&mut self.args, "--memcache-listen", &memcache);
        if let Some(peer) = self.peer_addr {
            set_arg(&mut self.args, "--peer-listen", &peer.to_string());
        }
        self.child = Some(child);
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's resident memory in bytes, while running.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.pid()?)
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            send_signal(pid, sig);
        }
    }

    /// Freezes the process (SIGSTOP) and returns once every one of its threads has stopped:
    /// kill(1) returns when the signal is sent, while a thread running on another core may
    /// still answer a request or two.
    ///
    /// # Panics
    /// When the process is not running or does not stop within 5 s.
    pub fn pause(&self) {
        let pid = self.pid().expect("server is running");
        send_signal(pid, "STOP");
        let stopped = wait_for(Duration::from_secs(5), || all_threads_stopped(pid));
        assert!(stopped, "shoald {pid} did not stop");
    }

    /// Resumes a process frozen by [`ServerProcess::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status (at most `limit`, then SIGKILL).
    ///
    /// # Panics
    /// When the process is not running.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        send_signal(child.id(), "TERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `limit` for the process to exit on its own; its exit status, or `None`
    /// (still running).
    ///
    /// # Panics
    /// When the process is not running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("server is running");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the process again on the same ports (after `kill` or `terminate`).
    ///
    /// # Panics
    /// When the process is still running or does not start.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        self.spawn();
    }

    /// Everything the process wrote to standard error so far (only after it has exited).
    pub fn stderr_output(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn set_arg(args: &mut Vec<String>, name: &str, value: &str) {
    // The last occurrence wins (the server overrides repeated flags), so append.
    args.push(name.to_string());
    args.push(value.to_string());
}

/// Whether every thread of `pid` is in the stopped state (`T` in /proc/PID/task/TID/stat).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the parenthesised command name, which may hold spaces.
                let after = &stat[stat.rfind(')')? + 1..];
                after
                    .split_whitespace()
                    .next()
                    .map(|s| s == "T" || s == "t")
            })
            .unwrap_or(false)
    })
}

/// The resident memory (`VmRSS`) of process `pid` in bytes; `None` once it is gone.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Stores `items` (key, value) through the memcached text port at `addr`: `noreply` sets
/// written in batches of about 1 MiB, then `version`, whose answer means all were applied.
///
/// # Panics
/// On a connection error, or when the server does not answer `version`.
pub fn set_all_text(addr: SocketAddr, items: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let mut c = TcpStream::connect(addr).expect("connect");
    let mut batch = Vec::with_capacity(2 << 20);
    for (key, value) in items {
        batch.extend_from_slice(format!("set {key} 0 0 {} noreply\r\n", value.len()).as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
        if batch.len() >= 1 << 20 {
            c.write_all(&batch).expect("write");
            batch.clear();
        }
    }
    batch.extend_from_slice(b"version\r\n");
    c.write_all(&batch).expect("write");
    let mut reply = [0u8; 64];
    let n = c.read(&mut reply).expect("read");
    assert!(reply[..n].starts_with(b"VERSION "), "{:?}", &reply[..n]);
}

/// Sends `sig` (a name such as `TERM`, `KILL`, `STOP`, `CONT`) with kill(1), which keeps
/// this crate free of `unsafe`.
fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status();
}

/// A blocking native-protocol connection for raw tests: write frames, read replies.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    limits: Limits,
}

impl RawConn {
    /// Connects (with a 5 s read timeout) without sending HELLO.
    ///
    /// # Panics
    /// When the connection fails.
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            buf: Vec::new(),
            limits: Limits {
                max_frame: 64 << 20,
                max_value: 64 << 20,
                ..Limits::default()
            },
        }
    }

    /// Connects and completes HELLO.
    ///
    /// # Panics
    /// When the connection or HELLO fails.
    pub fn hello(addr: SocketAddr) -> RawConn {
        let mut c = RawConn::connect(addr);
        c.send(&Request {
            id: 0,
            command: Cmd::Hello {
                min_version: 1,
                max_version: 1,
                client_name: b"raw-test",
                auth: b"",
            },
        });
        let status = c.recv(|r| r.status);
        assert_eq!(status, shoal_proto::Status::Ok, "HELLO failed");
        c
    }

    /// Sends one request.
    ///
    /// # Panics
    /// On a write error.
    pub fn send(&mut self, req: &Request<'_>) {
        let mut out = Vec::new();
        req.encode(&mut out);
        self.stream.write_all(&out).expect("write");
    }

    /// Writes raw bytes.
    ///
    /// # Panics
    /// On a write error.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// A STATS counter by name.
    ///
    /// # Panics
    /// When the reply is not a STATS list or the counter is missing or not a number.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.send(&Request {
            id: 0,
            command: Cmd::Stats { group: b"" },
        });
        self.recv(|r| match r.body {
            shoal_proto::ReplyBody::Stats(list) => list
                .iter()
                .find(|(n, _)| *n == name.as_bytes())
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or_else(|| panic!("no numeric stat {name}")),
            other => panic!("unexpected reply to STATS: {other:?}"),
        })
    }

    /// Reads one reply and hands it to `f`.
    ///
    /// # Panics
    /// When the connection closes or sends junk before a whole reply arrives.
    pub fn recv<R>(&mut self, f: impl FnOnce(&Reply<'_>) -> R) -> R {
        self.try_recv(f).expect("a reply")
    }

    /// Reads one reply; `None` when the connection closed (or timed out) first.
    pub fn try_recv<R>(&mut self, f: impl FnOnce(&Reply<'_>) -> R) -> Option<R> {
        loop {
            match decode_reply(&self.buf, &self.limits) {
                Ok(Some((reply, used))) => {
                    let r = f(&reply);
                    self.buf.drain(..used);
                    return Some(r);
                }
                Ok(None) => {}
                Err(e) => panic!("server sent a bad frame: {e}"),
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one frame's header and skips its body, without interpreting the opcode: for
    /// replies to opcodes this build does not know. `None` when the connection closed first.
    pub fn try_recv_header(&mut self) -> Option<shoal_proto::Header> {
        loop {
            if let Ok(Some(h)) = shoal_proto::Header::decode(&self.buf, &self.limits) {
                let total = shoal_proto::HEADER_LEN + h.body_len as usize;
                if self.buf.len() >= total {
                    self.buf.drain(..total);
                    return Some(h);
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server closed the connection within `limit` (reading and discarding
    /// anything it sends first).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
