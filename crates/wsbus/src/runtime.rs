//! The state shared by every connection of a server: configuration, the hub,
//! sessions, shutdown, task tracking and counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsbus_proto::{CloseCode, DeflateConfig, Limits};

use crate::driver::SocketSettings;
use crate::hub::{Hub, SocketId, SocketShared};

/// The close reason sockets get when the server shuts down (with 1001).
const SHUTDOWN_REASON: &str = "server shutting down";
use crate::session::{MemorySessionStore, SessionStore, Sessions};

/// Server settings. Every limit has a default chosen for a public endpoint.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Frame, message and inflated-size limits per connection (16 MiB each).
    pub limits: Limits,
    /// permessage-deflate terms, or `None` to decline every offer.
    pub deflate: Option<DeflateConfig>,
    /// A client has this long to send a complete request head; slow or
    /// partial requests (slowloris) are dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest request head in bytes; beyond it the answer is `431`. Default
    /// 16 KiB: room for large cookies while bounding per-connection memory.
    /// (hyper's floor is 8 KiB.)
    pub max_request_bytes: usize,
    /// Open WebSockets at most; a handshake over it gets `503` with
    /// `Retry-After`. Default 100,000: far above what one node should carry
    /// with defaults, well below file-descriptor exhaustion at 1M.
    pub max_connections: usize,
    /// The `Retry-After` of that `503`. Default 5 s.
    pub retry_after: Duration,
    /// Largest HTTP request body read by the built-in HTTP routes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// On shutdown, how long sockets get to finish their closing handshake.
    /// Default 10 s.
    pub drain_timeout: Duration,
    /// HTTP session idle timeout. Default 30 min.
    pub session_idle_timeout: Duration,
    pub socket: SocketSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            deflate: Some(DeflateConfig::default()),
            handshake_timeout: Duration::from_secs(10),
            max_request_bytes: 16 * 1024,
            max_connections: 100_000,
            retry_after: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
            session_idle_timeout: Duration::from_secs(30 * 60),
            socket: SocketSettings::default(),
        }
    }
}

/// Counters (the Prometheus endpoint reads them).
#[derive(Debug, Default)]
pub struct Metrics {
    handshakes: Mutex<BTreeMap<u16, u64>>,
    pub connections_accepted: AtomicU64,
}

impl Metrics {
    pub(crate) fn handshake(&self, status: u16) {
        *self
            .handshakes
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }

    /// Handshakes answered, by HTTP status.
    pub fn handshakes(&self) -> BTreeMap<u16, u64> {
        self.handshakes.lock().expect("metrics lock").clone()
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    config: ServerConfig,
    hub: Hub,
    sessions: Arc<Sessions>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    metrics: Metrics,
}

/// Shared server state; cheap to clone. Create one per server (or per axum
/// application) and hand it to every endpoint.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with in-memory sessions and hub.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_store(config, Arc::new(MemorySessionStore::default()))
    }

    pub fn with_store(config: ServerConfig, store: Arc<dyn SessionStore>) -> Self {
        let hub = Hub::new();
        let sessions = Arc::new(Sessions::new(
            store,
            config.session_idle_timeout,
            hub.clone(),
        ));
        Runtime {
            inner: Arc::new(Inner {
                config,
                hub,
                sessions,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                metrics: Metrics::default(),
            }),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn socket_settings(&self) -> &SocketSettings {
        &self.inner.config.socket
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.inner.sessions
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Register a new socket with the hub. Shutdown closes every registered
    /// socket through the hub; one registered after that is closed here.
    pub(crate) fn register_socket(&self) -> (SocketId, Arc<SocketShared>) {
        let (id, shared) = self.inner.hub.register();
        if self.inner.shutdown.is_cancelled() {
            shared.close(CloseCode::GOING_AWAY, SHUTDOWN_REASON);
        }
        (id, shared)
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Graceful shutdown: every socket is closed with 1001 and gets up to the
    /// drain timeout to finish; returns whether all finished in time.
    pub async fn shutdown(&self) -> bool {
        // Cancel first: a socket registered after `close_all` took the
        // hub's lock then sees the token cancelled (`register_socket`).
        self.inner.shutdown.cancel();
        self.inner
            .hub
            .local()
            .close_all(CloseCode::GOING_AWAY, SHUTDOWN_REASON);
        self.inner.tracker.close();
        tokio::time::timeout(self.inner.config.drain_timeout, self.inner.tracker.wait())
            .await
            .is_ok()
    }
}
