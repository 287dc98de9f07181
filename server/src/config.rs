//! The node's configuration: command-line flags, optionally a TOML file, defaults as named
//! constants, and one `validate()` that runs before anything starts.
//!
//! There is one list of settings: the clap flags. A config file holds the same names as the
//! long flags (`memory = "256MiB"`, `max-connections = 2000`); its entries are turned into
//! flags placed before the real command line, so flags given on the command line win.

use crate::cluster::peer::secret::{check_peer_listen, ClusterSecret, LoadedSecret, SecretError};
use crate::persist::{PersistConfig, PersistMode, DEFAULT_PERSIST_MODE};
use crate::store::StoreConfig;
use clap::Parser;
use shoal_proto::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default native protocol address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Default memcached text protocol address.
pub const DEFAULT_MEMCACHE_LISTEN: &str = "127.0.0.1:7401";
/// Default peer port address (node to node).
pub const DEFAULT_PEER_LISTEN: &str = "127.0.0.1:7402";
/// Default for `--max-moves`: bucket moves in progress at once.
pub const DEFAULT_MAX_MOVES: usize = 4;

/// Process exit codes, one per class of start-up failure (listed in `--help` and the README;
/// a number, once given a meaning, keeps it).
pub mod exit_code {
    /// The configuration is invalid (bad flag, bad file, nonsensical combination).
    pub const CONFIG: i32 = 2;
    /// A listener could not be bound.
    pub const BIND: i32 = 3;
    /// The savefile or the Raft log in the data directory is damaged.
    pub const BAD_SAVEFILE: i32 = 4;
    /// Another running node holds the data directory's lock.
    pub const DATA_DIR_IN_USE: i32 = 5;
    /// The node could not join a cluster: no seed answered within `--join-timeout`, or the
    /// cluster refused it (another cluster, another bucket count, a removed node id, a wrong
    /// cluster secret).
    pub const JOIN_FAILED: i32 = 6;
    /// Any other failure while running.
    pub const RUNTIME: i32 = 1;
}

/// The exit codes, as `--help` lists them (a unit test keeps this in step with [`exit_code`]).
const EXIT_CODES_HELP: &str = "Exit codes:
  0  stopped gracefully (SIGTERM or SIGINT), or --help, --version, --print-config
  1  failed while running (including a savefile that could not be written at stop)
  2  invalid configuration
  3  a listen address could not be bound
  4  the savefile or the Raft log is damaged (see --discard-bad-savefile)
  5  the data directory is in use by another running node
  6  could not join the cluster (no seed answered in time, or refused)";

/// Settings of one `shoald` node.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "shoald",
    version,
    about = "Shoal cache node",
    args_override_self = true,
    after_help = EXIT_CODES_HELP
)]
pub struct Config {
    /// Address for the native protocol.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address for the memcached text protocol, or `off`.
    #[arg(long, default_value = DEFAULT_MEMCACHE_LISTEN, value_parser = parse_optional_addr)]
    pub memcache_listen: OptionalAddr,

    /// Address of the peer port, where nodes talk to each other. Without
    /// --cluster-secret-file it must be a loopback address.
    #[arg(long, default_value = DEFAULT_PEER_LISTEN)]
    pub peer_listen: SocketAddr,

    /// File holding the cluster secret, which peers prove they share before anything else
    /// (read at start; white space around it is ignored; at most 4 KiB). Every node of a
    /// cluster needs the same secret, or none.
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,

    /// Memory reserved for items (e.g. `64MiB`, `4GiB`).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub memory: usize,

    /// Number of buckets the keyspace is split into (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub buckets: u32,

    /// Growth factor between slab chunk sizes.
    #[arg(long, default_value_t = 1.25)]
    pub growth_factor: f64,

    /// Directory for the node's id and savefile. Without it persistence is off: the node
    /// starts empty and writes no savefile.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// When to write a savefile on its own: `on-last-stop` (at a graceful stop when no peer
    /// can take the node's buckets; on a single node, every graceful stop), `always` (every
    /// graceful stop), `never`. Needs --data-dir; changeable at run time (SET_PERSIST).
    #[arg(long, value_parser = persist_mode_parser(), default_value_t = DEFAULT_PERSIST_MODE)]
    pub persist: PersistMode,

    /// Start empty when the savefile is damaged, setting it aside as `savefile.bad-<time>`,
    /// instead of refusing to start (exit code 4).
    #[arg(long)]
    pub discard_bad_savefile: bool,

    /// Test only: shift the node's clocks forward by this many seconds, to simulate time
    /// passing while the node was down. Never use it in production.
    #[arg(long, default_value_t = 0, hide = true)]
    pub test_clock_offset: u32,

    /// Test only (`fault-injection` builds): acknowledge one in N SETs without storing it.
    #[cfg(feature = "fault-injection")]
    #[arg(long, default_value_t = 0, hide = true)]
    pub fault_drop_writes: u64,

    /// Test only (`fault-injection` builds): load the savefile before last at start.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_old_savefile: bool,

    /// Test only (`fault-injection` builds): serve every bucket, whatever the applied bucket
    /// table says (no NOT_MY_BUCKET, no forwarding).
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_ignore_table: bool,

    /// Test only (`fault-injection` builds): bucket moves from this node stop at this phase
    /// (`snapshot`: after the copy is opened; `tail`: after the snapshot; `parked`: with the
    /// bucket parked, for the park timeout) until they are cancelled.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_stall_move_at: Option<crate::fault::MovePhaseName>,

    /// Test only (`fault-injection` builds): every bucket move from this node leaves out one
    /// change-log record (a lost write the consistency-checker must report).
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_drop_move_change: bool,

    /// Test only (`fault-injection` builds): a bucket move drops the source's copy when it
    /// parks the bucket and serves it again at once, instead of after the switchover commits.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_early_drop: bool,

    /// Test only (`fault-injection` builds): keep serving after the lease ran out.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_ignore_lease: bool,

    /// Test only (`fault-injection` builds): when this node leads and fences a node, it
    /// first marks every replica of that node's buckets in sync, so a copy that is not may be
    /// promoted.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_promote_any: bool,

    /// Test only (`fault-injection` builds): acknowledge writes without waiting for the
    /// in-sync replicas.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub fault_ack_early: bool,

    /// Peer addresses (`--peer-listen`) of cluster members to join through, comma
    /// separated, tried in turn. Without it a node creates a new cluster (or, restarted on
    /// its data directory, comes back to the one it belongs to).
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<SocketAddr>,

    /// How long joining may take before the node exits (exit code 6); also how long the
    /// creator waits for `--initial-nodes`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub join_timeout: Duration,

    /// On the node that creates the cluster: wait until this many nodes have joined, then
    /// spread the buckets evenly over them.
    #[arg(long, default_value_t = 1)]
    pub initial_nodes: usize,

    /// Copies of each bucket besides its primary, for a new cluster (0 to 4; kept in sync by
    /// replication; `shoal-ctl set replicas N` changes it later).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,

    /// Most bucket moves in progress at once, cluster-wide (followed by the Raft leader when
    /// it spreads buckets over new members and off draining ones); at least 1.
    #[arg(long, default_value_t = DEFAULT_MAX_MOVES)]
    pub max_moves: usize,

    /// How long a lease from the Raft leader lets this node serve: a node that cannot renew
    /// it stops serving when it runs out, and a node silent for this long (plus a sixth) is
    /// fenced, its buckets served by their in-sync replicas. Must exceed twice
    /// --raft-election-timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease: Duration,

    /// How often the Raft leader sends heartbeats.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub raft_heartbeat: Duration,

    /// A follower that hears no leader for this long (up to twice as long, at random) starts
    /// an election; a follower that had a leader first waits out that leader's lease (twice
    /// this), so a dead leader is replaced after 3 to 4 times this.
    #[arg(long, default_value = "750ms", value_parser = parse_duration)]
    pub raft_election_timeout: Duration,

    /// Most client connections at once; more are refused with BUSY.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,

    /// Largest key, in bytes.
    #[arg(long, default_value_t = shoal_proto::limits::DEFAULT_MAX_KEY)]
    pub max_key_size: usize,

    /// Largest value (e.g. `1MiB`).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_value_size: usize,

    /// Most keys in one multi-get.
    #[arg(long, default_value_t = shoal_proto::limits::DEFAULT_MAX_BATCH)]
    pub max_batch: usize,

    /// Time a client has to finish a frame it started (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub frame_timeout: Duration,

    /// Close connections idle this long (`0` = never).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Close connections whose client does not take its replies for this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// Output bytes a connection buffers before it must write them out.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub output_buffer: usize,

    /// Node-wide memory for partially received large requests (beyond 32 KiB per
    /// connection); past it, connections wait for memory before reading more.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_input_memory: usize,

    /// Longest a memcached command for a bucket another node serves may take to be run by
    /// that node (forwarded over the peer port, retried while the bucket changes owner);
    /// then the client gets `SERVER_ERROR`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub forward_timeout: Duration,

    /// Bytes per second that all bucket copies sent from this node may use together
    /// (moves for rebalancing, drains and the hand-off at stop).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub move_bandwidth: usize,

    /// Longest a bucket's requests wait while it switches to its new owner at the end of a
    /// move; past it the source asks the Raft log whether the switch happened.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub park_timeout: Duration,

    /// Replies a connection may have pending (e.g. SAVE, forwarded commands) before it
    /// stops reading.
    #[arg(long, default_value_t = 1024)]
    pub max_pending: usize,

    /// Let the memcached `shutdown` command stop the node (gracefully, as SIGTERM does);
    /// off by default, as memcached's `-A`.
    #[arg(long)]
    pub enable_shutdown: bool,

    /// Longest a graceful stop may take before remaining connections are dropped.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Worker threads (`0` = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log to this file (rotated daily) instead of standard error.
    #[arg(long)]
    pub log_file: Option<PathBuf>,

    /// Read settings from this TOML file; flags on the command line override it.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// An address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["shoald"])
    }
}

impl Config {
    /// Parses the command line, merging the `--config` file under it.
    ///
    /// # Errors
    /// The clap error for a bad flag, or a [`ConfigError`] for an unreadable file.
    pub fn from_args<I, T>(args: I) -> Result<Config, Box<dyn std::error::Error + Send + Sync>>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let first = Config::try_parse_from(&args)?;
        let Some(path) = first.config.clone() else {
            return Ok(first);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let mut merged: Vec<std::ffi::OsString> = vec![args.first().cloned().unwrap_or_default()];
        merged.extend(file_to_flags(&text)?.into_iter().map(Into::into));
        merged.extend(args.into_iter().skip(1));
        Ok(Config::try_parse_from(merged)?)
    }

    /// Checks combinations that each flag alone cannot.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits()
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        self.store_config()
            .validate()
            .map_err(|e| ConfigError(format!("store: {e}")))?;
        if self.max_connections == 0 {
            return Err(ConfigError("max-connections must be at least 1".into()));
        }
        if Some(self.listen) == self.memcache_listen.0 && self.listen.port() != 0 {
            return Err(ConfigError(
                "listen and memcache-listen must be different addresses".into(),
            ));
        }
        let ports = [Some(self.listen), self.memcache_listen.0];
        if ports.contains(&Some(self.peer_listen)) && self.peer_listen.port() != 0 {
            return Err(ConfigError(
                "peer-listen must differ from listen and memcache-listen".into(),
            ));
        }
        let secret = self
            .cluster_secret()
            .map_err(|e| ConfigError(e.to_string()))?;
        check_peer_listen(self.peer_listen, secret.is_some()).map_err(ConfigError)?;
        if self.frame_timeout.is_zero() || self.send_timeout.is_zero() {
            return Err(ConfigError(
                "frame-timeout and send-timeout must be above zero".into(),
            ));
        }
        if self.output_buffer < 4096 {
            return Err(ConfigError("output-buffer must be at least 4KiB".into()));
        }
        let request = self.limits().max_frame + shoal_proto::HEADER_LEN + 64 * 1024;
        if self.max_input_memory < request {
            return Err(ConfigError(format!(
                "max-input-memory must hold at least one maximal request ({request} bytes with \
                 these limits)"
            )));
        }
        if self.max_pending == 0 {
            return Err(ConfigError("max-pending must be at least 1".into()));
        }
        if self.initial_nodes == 0 {
            return Err(ConfigError("initial-nodes must be at least 1".into()));
        }
        if self.replicas > crate::cluster::state::MAX_REPLICAS {
            return Err(ConfigError(format!(
                "replicas must be at most {}",
                crate::cluster::state::MAX_REPLICAS
            )));
        }
        if self.max_moves == 0 {
            return Err(ConfigError("max-moves must be at least 1".into()));
        }
        if self.initial_nodes > 1 && !self.join.is_empty() {
            return Err(ConfigError(
                "initial-nodes is for the node that creates the cluster, not one that joins".into(),
            ));
        }
        if self.lease <= self.raft_election_timeout * 2 {
            return Err(ConfigError(
                "lease must be more than twice raft-election-timeout".into(),
            ));
        }
        if self.raft_heartbeat.is_zero() || self.raft_election_timeout <= self.raft_heartbeat * 2 {
            return Err(ConfigError(
                "raft-election-timeout must be more than twice raft-heartbeat".into(),
            ));
        }
        Ok(())
    }

    /// Reads `--cluster-secret-file`, when given.
    ///
    /// # Errors
    /// [`SecretError`] when the file is unreadable, empty or too large.
    pub fn cluster_secret(&self) -> Result<Option<LoadedSecret>, SecretError> {
        self.cluster_secret_file
            .as_deref()
            .map(ClusterSecret::load)
            .transpose()
    }

    /// The protocol limits these settings imply.
    pub fn limits(&self) -> Limits {
        Limits::new(self.max_key_size, self.max_value_size, self.max_batch)
    }

    /// The storage engine settings these settings imply.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            memory: self.memory,
            growth_factor: self.growth_factor,
            buckets: self.buckets,
            max_value: self.max_value_size,
            max_key: self.max_key_size,
            ..StoreConfig::default()
        }
    }

    /// The persistence settings these settings imply.
    pub fn persist_config(&self) -> PersistConfig {
        PersistConfig {
            data_dir: self.data_dir.clone(),
            mode: self.persist,
            discard_bad_savefile: self.discard_bad_savefile,
        }
    }

    /// The effective configuration as TOML (the same names a config file takes).
    pub fn to_toml(&self) -> String {
        let opt = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| format!("{:?}", p.display().to_string()))
                .unwrap_or_else(|| "\"\"".into())
        };
        let memcache = match self.memcache_listen.0 {
            Some(a) => a.to_string(),
            None => "off".into(),
        };
        format!(
            "listen = \"{}\"\nmemcache-listen = \"{memcache}\"\npeer-listen = \"{}\"\n\
             cluster-secret-file = {}\nmemory = {}\nbuckets = {}\n\
             growth-factor = {}\ndata-dir = {}\npersist = \"{}\"\ndiscard-bad-savefile = {}\n\
             max-connections = {}\nmax-key-size = {}\n\
             max-value-size = {}\nmax-batch = {}\nframe-timeout = \"{}ms\"\nidle-timeout = \"{}ms\"\n\
             send-timeout = \"{}ms\"\noutput-buffer = {}\nmax-input-memory = {}\nmax-pending = {}\n\
             enable-shutdown = {}\nshutdown-timeout = \"{}ms\"\nthreads = {}\n\
             join = \"{}\"\njoin-timeout = \"{}ms\"\ninitial-nodes = {}\nreplicas = {}\nmax-moves = {}\n\
             lease = \"{}ms\"\nraft-heartbeat = \"{}ms\"\nraft-election-timeout = \"{}ms\"\n\
             log-level = {:?}\nlog-file = {}\n",
            self.listen,
            self.peer_listen,
            opt(&self.cluster_secret_file),
            self.memory,
            self.buckets,
            self.growth_factor,
            opt(&self.data_dir),
            self.persist,
            self.discard_bad_savefile,
            self.max_connections,
            self.max_key_size,
            self.max_value_size,
            self.max_batch,
            self.frame_timeout.as_millis(),
            self.idle_timeout.as_millis(),
            self.send_timeout.as_millis(),
            self.output_buffer,
            self.max_input_memory,
            self.max_pending,
            self.enable_shutdown,
            self.shutdown_timeout.as_millis(),
            self.threads,
            self.join
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.join_timeout.as_millis(),
            self.initial_nodes,
            self.replicas,
            self.max_moves,
            self.lease.as_millis(),
            self.raft_heartbeat.as_millis(),
            self.raft_election_timeout.as_millis(),
            self.log_level,
            opt(&self.log_file),
        )
    }
}

/// Turns `name = value` TOML entries into `--name value` flags.
fn file_to_flags(text: &str) -> Result<Vec<String>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("config file is not valid TOML: {e}")))?;
    let mut flags = Vec::new();
    for (name, value) in table {
        if name == "config" {
            return Err(ConfigError(
                "a config file cannot name another config file".into(),
            ));
        }
        let flag = format!("--{}", name.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) if s.is_empty() => {}
            toml::Value::String(s) => flags.extend([flag, s]),
            toml::Value::Integer(i) => flags.extend([flag, i.to_string()]),
            toml::Value::Float(f) => flags.extend([flag, f.to_string()]),
            other => {
                return Err(ConfigError(format!(
                    "config entry {name} has an unsupported type ({})",
                    other.type_str()
                )))
            }
        }
    }
    Ok(flags)
}

/// `--persist`: the protocol's [`PersistMode`] by name, with the names listed in `--help`
/// (`shoal-proto` stays free of clap).
fn persist_mode_parser() -> impl clap::builder::TypedValueParser<Value = PersistMode> {
    use clap::builder::TypedValueParser;
    let modes = [
        PersistMode::OnLastStop,
        PersistMode::Always,
        PersistMode::Never,
    ];
    clap::builder::PossibleValuesParser::new(modes.map(PersistMode::name))
        .try_map(|name: String| PersistMode::from_name(&name).ok_or("unknown persistence mode"))
}

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e} (expected host:port or off)"))
}

/// Parses a byte size: a number with an optional unit (`B`, `KiB`/`K`/`KB`, `MiB`/`M`/`MB`,
/// `GiB`/`G`/`GB`, `TiB`); units are binary (1K = 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("unknown duration unit {other:?}")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.memory, 64 << 20);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn config_file_is_overridden_by_flags() {
        let dir = std::env::temp_dir().join(format!("shoald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shoal.toml");
        std::fs::write(
            &path,
            "memory = \"128MiB\"\nmax-connections = 7\nmemcache-listen = \"off\"\n",
        )
        .unwrap();
        let c = Config::from_args([
            "shoald",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "9",
        ])
        .unwrap();
        assert_eq!(c.memory, 128 << 20);
        assert_eq!(c.max_connections, 9);
        assert_eq!(c.memcache_listen, OptionalAddr(None));
        // The printed configuration reads back as the same settings.
        std::fs::write(&path, c.to_toml()).unwrap();
        let again = Config::from_args(["shoald", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(again.to_toml(), c.to_toml());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn persist_takes_the_mode_names_and_nothing_else() {
        assert_eq!(Config::default().persist, PersistMode::OnLastStop);
        for mode in [
            PersistMode::Never,
            PersistMode::OnLastStop,
            PersistMode::Always,
        ] {
            let c = Config::from_args(["shoald", "--persist", mode.name()]).unwrap();
            assert_eq!(c.persist, mode);
            assert_eq!(c.persist_config().mode, mode);
            assert!(c
                .to_toml()
                .contains(&format!("persist = \"{}\"", mode.name())));
        }
        assert!(Config::from_args(["shoald", "--persist", "sometimes"]).is_err());
        assert!(Config::from_args(["shoald", "--persist", "OnLastStop"]).is_err());
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        assert!(help.contains("on-last-stop, always, never"), "{help}");
    }

    #[test]
    fn help_lists_every_exit_code() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for (code, words) in [
            (exit_code::RUNTIME, "failed while running"),
            (exit_code::CONFIG, "invalid configuration"),
            (exit_code::BIND, "a listen address could not be bound"),
            (
                exit_code::BAD_SAVEFILE,
                "the savefile or the Raft log is damaged",
            ),
            (exit_code::DATA_DIR_IN_USE, "the data directory is in use"),
            (exit_code::JOIN_FAILED, "could not join the cluster"),
        ] {
            assert!(
                help.contains(&format!("  {code}  {words}")),
                "{code}: {help}"
            );
        }
    }

    #[test]
    fn a_public_peer_port_needs_a_secret() {
        let dir = crate::testing::TempDir::new("config-secret");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let check = |args: &[&str]| {
            let mut all = vec!["shoald"];
            all.extend_from_slice(args);
            Config::from_args(all).unwrap().validate()
        };
        assert_eq!(
            Config::default().peer_listen.to_string(),
            DEFAULT_PEER_LISTEN
        );
        assert!(check(&["--peer-listen", "127.0.0.1:0"]).is_ok());
        let err = check(&["--peer-listen", "0.0.0.0:0"]).unwrap_err();
        assert!(err.0.contains("not a loopback address"), "{err}");
        let with = [
            "shoald",
            "--peer-listen",
            "0.0.0.0:0",
            "--cluster-secret-file",
        ];
        let c = Config::from_args(with.iter().copied().chain([secret.to_str().unwrap()]));
        let c = c.unwrap();
        c.validate().unwrap();
        assert_eq!(c.cluster_secret().unwrap().unwrap().secret.key(), b"s3cret");
        assert!(c.to_toml().contains("cluster-secret-file = "));
        let err = check(&["--cluster-secret-file", empty.to_str().unwrap()]).unwrap_err();
        assert!(err.0.contains("is empty"), "{err}");
        let missing = dir.path().join("missing");
        let err = check(&["--cluster-secret-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(
            err.0.contains("cannot read the cluster secret file"),
            "{err}"
        );
        let err = check(&[
            "--listen",
            "127.0.0.1:9000",
            "--peer-listen",
            "127.0.0.1:9000",
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = |args: &[&str]| {
            let mut all = vec!["shoald"];
            all.extend_from_slice(args);
            Config::from_args(all).map(|c| c.validate())
        };
        assert!(bad(&["--buckets", "1000"]).unwrap().is_err());
        assert!(bad(&["--max-connections", "0"]).unwrap().is_err());
        assert!(bad(&["--max-key-size", "70000"]).unwrap().is_err());
        assert!(bad(&[
            "--listen",
            "127.0.0.1:9000",
            "--memcache-listen",
            "127.0.0.1:9000"
        ])
        .unwrap()
        .is_err());
        assert!(bad(&["--memory", "lots"]).is_err());
    }

    #[test]
    fn replicas_are_at_most_four() {
        let parse = |n: &str| Config::from_args(["shoald", "--replicas", n]).unwrap();
        assert_eq!(Config::default().replicas, 1);
        parse("4").validate().unwrap();
        parse("0").validate().unwrap();
        assert_eq!(
            parse("5").validate().unwrap_err().0,
            "replicas must be at most 4"
        );
    }

    #[test]
    fn max_moves_is_at_least_one() {
        let parse = |n: &str| Config::from_args(["shoald", "--max-moves", n]).unwrap();
        assert_eq!(Config::default().max_moves, DEFAULT_MAX_MOVES);
        let err = parse("0").validate().unwrap_err();
        assert_eq!(err.0, "max-moves must be at least 1");
        let one = parse("1");
        one.validate().unwrap();
        assert_eq!(one.max_moves, 1);
        assert!(one.to_toml().contains("max-moves = 1\n"));
        assert!(Config::from_args(["shoald", "--max-moves", "-1"]).is_err());
    }
}
