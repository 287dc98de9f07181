//! Running a node: bind, serve both protocols, run the expiry crawler, and stop gracefully.
//!
//! [`run`] is the one entry point; `main.rs` calls it with the process's signals as the
//! shutdown future, tests call it with a channel. Stop order: stop accepting, tell every
//! connection (each drains what its client already sent, answers it, sends a notice and
//! closes), wait for the connections up to `shutdown_timeout`, stop background tasks, return.

use crate::config::Config;
use crate::net::conn::ConnLimits;
use crate::net::listener::Listener;
use crate::net::memcache::TextSession;
use crate::net::native::NativeSession;
use crate::net::Shared;
use crate::stats::ServerStats;
use crate::store::{Store, StoreError};
use shoal_proto::HEADER_LEN;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

/// How often the expiry crawler wakes up.
const CRAWL_INTERVAL: Duration = Duration::from_millis(500);
/// Items the crawler examines per step before it yields to request handling.
const CRAWL_BUDGET: usize = 2_000;

/// The node's bound sockets, bound before [`run`] so callers learn the ports (port 0).
pub struct Listeners {
    /// Native protocol listener.
    pub native: TcpListener,
    /// memcached text protocol listener, unless disabled.
    pub memcache: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the configuration names.
    ///
    /// # Errors
    /// The address and the OS error of the first bind that failed.
    pub async fn bind(config: &Config) -> Result<Listeners, RunError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Bind(addr, e))
        };
        let native = bind(config.listen).await?;
        let memcache = match config.memcache_listen.0 {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Listeners { native, memcache })
    }

    /// The native protocol address.
    pub fn native_addr(&self) -> Option<SocketAddr> {
        self.native.local_addr().ok()
    }

    /// The memcached text protocol address, when enabled.
    pub fn memcache_addr(&self) -> Option<SocketAddr> {
        self.memcache.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Why a node failed to start or run.
#[derive(Debug)]
pub enum RunError {
    /// A listener could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The store could not be created from the configuration.
    Store(StoreError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            RunError::Store(e) => write!(f, "cannot create the store: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Creates the store the configuration describes, then [`serve`]s it.
///
/// # Errors
/// [`RunError::Store`] when the store cannot be created.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let store = Store::new(config.store_config()).map_err(RunError::Store)?;
    serve(config, store, listeners, shutdown).await
}

/// Serves `store` until `shutdown` completes, then stops gracefully.
///
/// # Errors
/// None yet; the signature leaves room for start-up steps that can fail.
pub async fn serve(
    config: Config,
    store: Store,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let limits = config.limits();
    let shared = Shared {
        store: store.clone(),
        stats: Arc::new(ServerStats::default()),
        limits,
        flush_at: config.output_buffer,
    };
    let conn_limits = ConnLimits {
        frame_timeout: config.frame_timeout,
        idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
        send_timeout: config.send_timeout,
        max_input: limits.max_frame + HEADER_LEN + 64 * 1024,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(config.max_connections));

    let mut accept_tasks = Vec::new();
    accept_tasks.push(tokio::spawn(
        Listener {
            listener: listeners.native,
            make_session: NativeSession::new,
            refusal: NativeSession::refusal(),
            slots: slots.clone(),
            limits: conn_limits,
            shared: shared.clone(),
            shutdown: stop_rx.clone(),
            done: done_tx.clone(),
        }
        .run(),
    ));
    if let Some(listener) = listeners.memcache {
        accept_tasks.push(tokio::spawn(
            Listener {
                listener,
                make_session: TextSession::new,
                refusal: b"SERVER_ERROR too many open connections\r\n".to_vec(),
                slots: slots.clone(),
                limits: conn_limits,
                shared: shared.clone(),
                shutdown: stop_rx.clone(),
                done: done_tx.clone(),
            }
            .run(),
        ));
    }
    drop(done_tx);
    let crawler = tokio::spawn(crawl_expired(store.clone(), stop_rx.clone()));

    shutdown.await;
    tracing::info!("stopping: no new connections; draining the open ones");
    let _ = stop_tx.send(true);
    for task in accept_tasks {
        let _ = task.await;
    }
    // Every connection task holds a sender; recv() returns None once all have ended.
    if tokio::time::timeout(config.shutdown_timeout, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached with connections still open");
    }
    let _ = crawler.await;
    tracing::info!("stopped");
    Ok(())
}

/// Reclaims expired items in small steps, yielding between steps so requests are not stalled.
async fn crawl_expired(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(CRAWL_INTERVAL) => {}
        }
        loop {
            let store2 = store.clone();
            let reclaimed = tokio::task::spawn_blocking(move || store2.crawl_expired(CRAWL_BUDGET))
                .await
                .unwrap_or(0);
            if reclaimed < CRAWL_BUDGET / 2 || *stop.borrow() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}
