//! The process's signals and what each one does to a running node.
//!
//! | signal           | effect                                                           |
//! |------------------|------------------------------------------------------------------|
//! | SIGTERM, SIGINT  | graceful stop (drain connections, savefile when due, exit 0)     |
//! | SIGHUP           | reopen the `--log-file` (after logrotate moved it); logged       |
//! | SIGUSR1, SIGUSR2 | logged and ignored                                               |
//! | SIGUSR1          | fault-injection builds only: cut the node off from every peer    |
//! |                  | (a partition; the client ports keep serving); see `fault`        |
//! | SIGUSR2          | fault-injection builds only: heal that partition                 |
//! | SIGPIPE          | ignored (the Rust runtime sets this before `main`); a write to a |
//! |                  | closed pipe or socket is an error of that write only             |
//! | SIGKILL          | ends the process at once (cannot be caught); no savefile         |
//!
//! [`Signals::install`] replaces the default action (terminate the process) of every caught
//! signal at once, and `main.rs` calls it before loading the savefile, so that no signal
//! arriving during start-up kills the node without its stop sequence. A signal that arrives
//! before [`Signals::until_stop`] is first polled is kept and handled then.

use crate::logging::LogReopener;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The caught signals, from [`Signals::install`] on.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Catches SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 from now on. Needs a tokio
    /// runtime context.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Handles signals until SIGTERM or SIGINT arrives, then completes (the node then stops
    /// gracefully). SIGHUP reopens the log file through `log`; SIGUSR1 and SIGUSR2 are only
    /// logged (in `fault-injection` builds they cut the node off from its peers and heal it).
    pub async fn until_stop(mut self, log: LogReopener) {
        loop {
            // Biased: signals that arrived together are all handled before the stop.
            tokio::select! {
                biased;
                Some(()) = self.hup.recv() => match log.reopen() {
                    Ok(Some(path)) => {
                        tracing::info!(signal = "SIGHUP", path = %path.display(), "reopened the log file");
                    }
                    Ok(None) => {
                        tracing::info!(signal = "SIGHUP", "logging to standard error: nothing to reopen; ignored");
                    }
                    Err(e) => {
                        tracing::error!(signal = "SIGHUP", cause = %e, "cannot reopen the log file; logging to the previous one");
                    }
                },
                Some(()) = self.usr1.recv() => user_signal("SIGUSR1"),
                Some(()) = self.usr2.recv() => user_signal("SIGUSR2"),
                _ = self.term.recv() => {
                    tracing::info!(signal = "SIGTERM", "stopping gracefully");
                    return;
                }
                _ = self.int.recv() => {
                    tracing::info!(signal = "SIGINT", "stopping gracefully");
                    return;
                }
            }
        }
    }
}

/// SIGUSR1 or SIGUSR2: logged and ignored.
#[cfg(not(feature = "fault-injection"))]
fn user_signal(name: &'static str) {
    tracing::info!(signal = name, "ignored");
}

/// SIGUSR1 cuts the node off from its peers, SIGUSR2 heals it (`crate::fault`).
#[cfg(feature = "fault-injection")]
fn user_signal(name: &'static str) {
    tracing::info!(signal = name, "fault injection");
    crate::fault::cut_peers(name == "SIGUSR1");
}
