//! The `shoal-ctl` binary: parse the command line, run the command, exit with its code.

use clap::{Parser, Subcommand};
use shoal_ctl::admin::{self, parse_node, Action};
use shoal_ctl::exit_code;
use shoal_ctl::status::{gather, Report, DEFAULT_CLOCK_WARN_MS};
use std::process::ExitCode;
use std::time::Duration;

/// Admin tool for a Shoal cluster.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-ctl",
    version,
    after_help = "Exit codes: 0 healthy (status) or done (the other commands); 1 unhealthy (no \
                  leader, a member unreachable, a bucket without a live primary) or refused \
                  (the reason on stderr); 2 bad command line; 3 --server unreachable."
)]
struct Cli {
    /// Native address (host:port) of any member of the cluster.
    #[arg(long, default_value = "127.0.0.1:7400")]
    server: String,
    /// Time allowed for each node to answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the whole cluster: members, addresses, versions, Raft role, term and last
    /// applied index, buckets owned, table version, memory, and each node's clock offset
    /// from the leader. Exits 1 when the cluster is unhealthy.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Warn about members whose clock is off the leader's by more than this (ms).
        #[arg(long, default_value_t = DEFAULT_CLOCK_WARN_MS)]
        clock_warn_ms: u64,
    },
    /// Start moving a bucket from its primary to another member (an active one). Refused
    /// while the bucket has a move in progress.
    Move {
        /// The bucket number.
        bucket: u32,
        /// The member to receive it: its node id as `status` prints it, or a unique prefix.
        #[arg(long, value_parser = parse_node)]
        to: String,
    },
    /// Cancel the move of a bucket (the copy is dropped; the primary keeps the bucket).
    CancelMove {
        /// The bucket number.
        bucket: u32,
    },
    /// Mark a member draining: it gets no new buckets, hands its own away, then stops.
    Drain {
        /// The member's node id as `status` prints it, or a unique prefix.
        #[arg(value_parser = parse_node)]
        node: String,
    },
    /// Pause bucket movement (moves in progress finish; no new ones start).
    Pause,
    /// Resume bucket movement (and end a whole-cluster stop that waits for members that
    /// will not come back).
    Resume,
    /// Stop the whole cluster: every node saves its buckets to its savefile and exits,
    /// staying a member (no node hands its buckets to another that is stopping too). Started
    /// again on their data directories, the nodes serve what they saved; movement resumes
    /// once every member is back.
    StopCluster,
    /// Check the cluster's invariants: a leader, every member reachable, every bucket with a
    /// live primary, every replica copy the setting asks for in sync. Prints the status and
    /// what fails; exits 1 when anything does.
    Check,
    /// Change a cluster-wide setting.
    Set {
        /// The setting.
        #[command(subcommand)]
        setting: Setting,
    },
}

/// A cluster-wide setting `set` changes.
#[derive(Debug, Subcommand)]
enum Setting {
    /// Copies of each bucket besides its primary (0 to 4). Replicas are built or dropped in
    /// the background; writes are acknowledged once every in-sync replica holds them.
    Replicas {
        /// The number of replicas.
        n: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-ctl: cannot start the runtime: {e}");
            return ExitCode::from(exit_code::SERVER_UNREACHABLE);
        }
    };
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    let action = match cli.command {
        Cmd::Status {
            json,
            clock_warn_ms,
        } => return status(&runtime, &cli.server, timeout, json, clock_warn_ms),
        Cmd::Check => return check(&runtime, &cli.server, timeout),
        Cmd::Move { bucket, to } => Action::Move { bucket, to },
        Cmd::CancelMove { bucket } => Action::CancelMove { bucket },
        Cmd::Drain { node } => Action::Drain { node },
        Cmd::Pause => Action::Pause(true),
        Cmd::Resume => Action::Pause(false),
        Cmd::StopCluster => Action::StopCluster,
        Cmd::Set {
            setting: Setting::Replicas { n },
        } => Action::SetReplicas(n),
    };
    match runtime.block_on(admin::run(&cli.server, timeout, &action)) {
        Ok(message) => {
            println!("{message}");
            ExitCode::from(exit_code::HEALTHY)
        }
        Err(admin::Failure::Unreachable(e)) => {
            eprintln!("shoal-ctl: {e}");
            ExitCode::from(exit_code::SERVER_UNREACHABLE)
        }
        Err(admin::Failure::Refused(e)) => {
            eprintln!("shoal-ctl: {e}");
            ExitCode::from(exit_code::REFUSED)
        }
    }
}

/// `status`: gathers, reports, and exits by the cluster's health.
fn check(runtime: &tokio::runtime::Runtime, server: &str, timeout: Duration) -> ExitCode {
    let (table, probes) = match runtime.block_on(gather(server, timeout)) {
        Ok(got) => got,
        Err(e) => {
            eprintln!("shoal-ctl: {e}");
            return ExitCode::from(exit_code::SERVER_UNREACHABLE);
        }
    };
    let report = Report::build(&table, &probes, DEFAULT_CLOCK_WARN_MS);
    print!("{}", report.render());
    let failed = report.check_failures();
    for f in &failed {
        println!("check failed: {f}");
    }
    if failed.is_empty() {
        println!("check passed");
        ExitCode::from(exit_code::HEALTHY)
    } else {
        ExitCode::from(exit_code::UNHEALTHY)
    }
}

fn status(
    runtime: &tokio::runtime::Runtime,
    server: &str,
    timeout: Duration,
    json: bool,
    clock_warn_ms: u64,
) -> ExitCode {
    let (table, probes) = match runtime.block_on(gather(server, timeout)) {
        Ok(got) => got,
        Err(e) => {
            eprintln!("shoal-ctl: {e}");
            return ExitCode::from(exit_code::SERVER_UNREACHABLE);
        }
    };
    let report = Report::build(&table, &probes, clock_warn_ms);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("shoal-ctl: cannot encode the report: {e}");
                return ExitCode::from(exit_code::UNHEALTHY);
            }
        }
    } else {
        print!("{}", report.render());
    }
    ExitCode::from(if report.healthy {
        exit_code::HEALTHY
    } else {
        exit_code::UNHEALTHY
    })
}
