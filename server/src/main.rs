//! The `shoald` binary: parse the configuration, set up logging, catch signals, bind, load
//! the savefile, print the ready line, serve until SIGTERM or SIGINT, stop gracefully.
//! Everything else lives in the library.

use shoald::config::{exit_code, Config};
use shoald::logging::Logging;
use shoald::ready::ReadyLine;
use shoald::signals::Signals;
use shoald::{prepare, serve, start_cluster, Listeners, RunError};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // clap errors print their own help text and exit codes (0 for --help/--version).
            if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
                let _ = clap_err.print();
                return ExitCode::from(if clap_err.use_stderr() {
                    exit_code::CONFIG as u8
                } else {
                    0
                });
            }
            eprintln!("shoald: {e}");
            return ExitCode::from(exit_code::CONFIG as u8);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("shoald: invalid configuration: {e}");
        return ExitCode::from(exit_code::CONFIG as u8);
    }
    if config.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let logging = match Logging::init(&config.log_level, config.log_file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shoald: {e}");
            return ExitCode::from(exit_code::CONFIG as u8);
        }
    };
    // One thread: a current-thread runtime, which skips the multi-thread scheduler's
    // cross-thread bookkeeping (the node then runs on the thread that calls block_on).
    let mut builder = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if config.threads > 1 {
        builder.worker_threads(config.threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoald: cannot start the runtime: {e}");
            return ExitCode::from(exit_code::RUNTIME as u8);
        }
    };
    // Catch the signals from here on, before anyone can learn that the node is up: a SIGTERM
    // that arrives while loading or right after the ready line means "stop gracefully", and
    // no signal but SIGKILL takes the default action (die at once, without a savefile).
    let signals = match runtime.block_on(async { Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shoald: cannot install signal handlers: {e}");
            return ExitCode::from(exit_code::RUNTIME as u8);
        }
    };
    // Bind first (so the ports are ours), then load the savefile: connections that arrive
    // meanwhile wait in the backlog until serving starts.
    let listeners = match runtime.block_on(Listeners::bind(&config)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shoald: {e}");
            return ExitCode::from(exit_code::BIND as u8);
        }
    };
    let mut listeners = listeners;
    let peer = listeners.peer_addr();
    // Load the savefile, then become a member of the cluster (create, come back, or join):
    // the ready line means the node serves by an applied table.
    let started = prepare(&config).and_then(|node| {
        let _runtime = runtime.enter();
        let (cluster, control) = start_cluster(&config, &node, &mut listeners)?;
        Ok((node, cluster, control))
    });
    let (node, cluster, control) = match started {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(cause = %e, "cannot start");
            eprintln!("shoald: {e}");
            return ExitCode::from(start_exit_code(&e) as u8);
        }
    };
    let Some(native) = listeners.native_addr() else {
        eprintln!("shoald: cannot read the native listener's address");
        return ExitCode::from(exit_code::RUNTIME as u8);
    };
    let ready = ReadyLine {
        native,
        memcache: listeners.memcache_addr(),
        peer,
    };
    let stop = signals.until_stop(logging.reopener());
    runtime.block_on(async move {
        let memcache = ready
            .memcache
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        let peer = ready.peer.map_or_else(String::new, |a| a.to_string());
        tracing::info!(native = %ready.native, %memcache, %peer, memory = config.memory, "shoald ready");
        // The one line tools and tests read to learn the bound ports (shoald::ready).
        println!("{ready}");
        let _ = std::io::stdout().flush();
        let served = serve(config, node, listeners, cluster, stop).await;
        drop(control);
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoald: {e}");
                ExitCode::from(exit_code::RUNTIME as u8)
            }
        }
    })
}

/// The exit code for a node that could not start.
fn start_exit_code(e: &RunError) -> i32 {
    if e.is_config() {
        exit_code::CONFIG
    } else if e.is_bad_savefile() {
        exit_code::BAD_SAVEFILE
    } else if e.is_data_dir_in_use() {
        exit_code::DATA_DIR_IN_USE
    } else if e.is_join_failed() {
        exit_code::JOIN_FAILED
    } else {
        exit_code::RUNTIME
    }
}
