//! The `shoal-ctl` binary: parse the command line, run the command, exit with its code.

use clap::{Parser, Subcommand};
use shoal_ctl::exit_code;
use shoal_ctl::status::{gather, Report, DEFAULT_CLOCK_WARN_MS};
use std::process::ExitCode;
use std::time::Duration;

/// Admin tool for a Shoal cluster.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-ctl",
    version,
    after_help = "Exit codes: 0 healthy; 1 unhealthy (no leader, a member unreachable, a bucket \
                  without a live primary); 2 bad command line; 3 --server unreachable."
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
    match cli.command {
        Cmd::Status {
            json,
            clock_warn_ms,
        } => {
            let (table, probes) = match runtime.block_on(gather(&cli.server, timeout)) {
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
    }
}
