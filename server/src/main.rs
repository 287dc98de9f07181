//! The `shoald` binary: parse the configuration, set up logging, catch signals, bind, load
//! the savefile, print the ready line, serve until SIGTERM or SIGINT, stop gracefully.
//! Everything else lives in the library.

use shoald::config::{exit_code, Config};
use shoald::logging::Logging;
use shoald::ready::ReadyLine;
use shoald::signals::Signals;
use shoald::{prepare, serve, standalone_cluster, Listeners};
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
    let node = match prepare(&config) {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(cause = %e, "cannot start");
            eprintln!("shoald: {e}");
            let code = if e.is_bad_savefile() {
                exit_code::BAD_SAVEFILE
            } else if e.is_data_dir_in_use() {
                exit_code::DATA_DIR_IN_USE
            } else {
                exit_code::RUNTIME
            };
            return ExitCode::from(code as u8);
        }
    };
    let Some(native) = listeners.native_addr() else {
        eprintln!("shoald: cannot read the native listener's address");
        return ExitCode::from(exit_code::RUNTIME as u8);
    };
    let ready = ReadyLine {
        native,
        memcache: listeners.memcache_addr(),
    };
    let stop = signals.until_stop(logging.reopener());
    runtime.block_on(async move {
        let memcache = ready
            .memcache
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        tracing::info!(native = %ready.native, %memcache, memory = config.memory, "shoald ready");
        // The one line tools and tests read to learn the bound ports (shoald::ready).
        println!("{ready}");
        let _ = std::io::stdout().flush();
        let cluster = standalone_cluster(&node, &listeners);
        match serve(config, node, listeners, cluster, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoald: {e}");
                ExitCode::from(exit_code::RUNTIME as u8)
            }
        }
    })
}
