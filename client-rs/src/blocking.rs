//! The blocking [`Client`]: the async client driven by a current-thread tokio runtime that this
//! value owns. It is the layer the C library wraps: every result is owned, every call has an
//! explicit deadline, and there is no global state (two clients share nothing).
//!
//! One background thread, owned by the client and joined when it is dropped, runs the runtime
//! so that connection tasks (replies, keepalive PINGs, server notices) make progress between
//! calls. Callers block in [`tokio::runtime::Handle::block_on`]; many threads may call at once
//! and their requests are pipelined like async tasks' requests.
//!
//! Calls must not be made from inside an async runtime (tokio forbids blocking there).

use crate::client::{Client as AsyncClient, Item};
use crate::error::Error;
use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long [`Drop`] waits for GOODBYE replies.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

/// A blocking Shoal client. `Send + Sync`; share it by reference or in an `Arc`.
///
/// ```no_run
/// let client = shoal_client::Client::builder().seed("127.0.0.1:7400").build_blocking()?;
/// client.set("greeting", "hello", 0, 0)?;
/// let item = client.get("greeting")?.expect("just stored");
/// assert_eq!(&item.value[..], b"hello");
/// # Ok::<(), shoal_client::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    inner: AsyncClient,
    handle: Handle,
    /// Tells the runtime thread to stop (dropped or sent on drop).
    stop: Option<oneshot::Sender<()>>,
    /// The runtime thread, joined on drop so no task outlives the client.
    thread: Option<JoinHandle<()>>,
}

impl Client {
    pub(crate) fn new(inner: AsyncClient) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|_| Error::InvalidArgument("cannot start a tokio runtime"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shoal-client".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|_| Error::InvalidArgument("cannot start the client thread"))?;
        Ok(Self {
            inner,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn run<T>(&self, fut: impl Future<Output = T>) -> T {
        self.handle.block_on(fut)
    }

    /// The async client underneath (same connections).
    pub fn as_async(&self) -> &AsyncClient {
        &self.inner
    }

    /// Sets the request timeout and the overall deadline of this client's later calls.
    pub fn set_timeouts(&mut self, request_timeout: Duration, deadline: Duration) {
        self.inner = self.inner.with_timeouts(request_timeout, deadline);
    }

    /// See [`AsyncClient::get`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Item>, Error> {
        self.run(self.inner.get(key))
    }

    /// See [`AsyncClient::get_and_touch`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn get_and_touch(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<Option<Item>, Error> {
        self.run(self.inner.get_and_touch(key, ttl))
    }

    /// See [`AsyncClient::get_many`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Item>>, Error> {
        self.run(self.inner.get_many(keys))
    }

    /// See [`AsyncClient::set`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.run(self.inner.set(key, value, ttl, flags))
    }

    /// See [`AsyncClient::add`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.run(self.inner.add(key, value, ttl, flags))
    }

    /// See [`AsyncClient::replace`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.run(self.inner.replace(key, value, ttl, flags))
    }

    /// See [`AsyncClient::cas`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        expected: u64,
        ttl: u32,
        flags: u32,
    ) -> Result<u64, Error> {
        self.run(self.inner.cas(key, value, expected, ttl, flags))
    }

    /// See [`AsyncClient::append`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn append(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, Error> {
        self.run(self.inner.append(key, value))
    }

    /// See [`AsyncClient::prepend`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn prepend(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, Error> {
        self.run(self.inner.prepend(key, value))
    }

    /// See [`AsyncClient::delete`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        self.run(self.inner.delete(key))
    }

    /// See [`AsyncClient::delete_if`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn delete_if(&self, key: impl AsRef<[u8]>, expected: u64) -> Result<bool, Error> {
        self.run(self.inner.delete_if(key, expected))
    }

    /// See [`AsyncClient::touch`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn touch(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<bool, Error> {
        self.run(self.inner.touch(key, ttl))
    }

    /// See [`AsyncClient::incr`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn incr(
        &self,
        key: impl AsRef<[u8]>,
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Result<Option<u64>, Error> {
        self.run(self.inner.incr(key, delta, create))
    }

    /// See [`AsyncClient::decr`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn decr(
        &self,
        key: impl AsRef<[u8]>,
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Result<Option<u64>, Error> {
        self.run(self.inner.decr(key, delta, create))
    }

    /// See [`AsyncClient::stats`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn stats(&self, group: &str) -> Result<Vec<(String, String)>, Error> {
        self.run(self.inner.stats(group))
    }

    /// See [`AsyncClient::table`].
    ///
    /// # Errors
    /// As the async method.
    pub fn table(&self) -> Result<shoal_proto::TableView, Error> {
        self.run(self.inner.table())
    }

    /// See [`AsyncClient::node_status`].
    ///
    /// # Errors
    /// As the async method.
    pub fn node_status(&self) -> Result<shoal_proto::NodeStatus, Error> {
        self.run(self.inner.node_status())
    }

    /// See [`AsyncClient::cluster_admin`].
    ///
    /// # Errors
    /// As the async method.
    pub fn cluster_admin(
        &self,
        request: shoal_proto::cluster::AdminRequest,
    ) -> Result<String, Error> {
        self.run(self.inner.cluster_admin(request))
    }

    /// See [`AsyncClient::announced_table_version`].
    pub fn announced_table_version(&self) -> u64 {
        self.inner.announced_table_version()
    }

    /// See [`AsyncClient::table_version`].
    pub fn table_version(&self) -> u64 {
        self.inner.table_version()
    }

    /// See [`AsyncClient::routing_stats`].
    pub fn routing_stats(&self) -> crate::client::RoutingStats {
        self.inner.routing_stats()
    }

    /// See [`AsyncClient::ping`].
    ///
    /// # Errors
    /// See [`Error`].
    pub fn ping(&self) -> Result<(), Error> {
        self.run(self.inner.ping())
    }

    /// See [`AsyncClient::close`]. Also done on drop.
    pub fn close(&self) {
        self.run(self.inner.close());
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let inner = self.inner.with_timeouts(CLOSE_TIMEOUT, CLOSE_TIMEOUT);
        if !std::thread::panicking() && Handle::try_current().is_err() {
            self.handle.block_on(inner.close());
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
