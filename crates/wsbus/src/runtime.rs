//! The state shared by every connection of a server: configuration, the hub,
//! sessions, shutdown, task tracking and counters.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsbus_proto::handshake::RejectionKind;
use wsbus_proto::{CloseCode, DeflateConfig, Limits};

use crate::capture::{Captures, Direction};
use crate::driver::{SessionRefresh, SocketSettings};
use crate::hub::{Hub, HubEngine, LocalHub, NodeId, Opened, OutboxLimit, SocketId, SocketShared};
use crate::metrics::Metrics;
use crate::security::Security;
use crate::session::{MemorySessionStore, SessionId, SessionStore, Sessions};

/// Why an upgrade was refused: a label a metric can count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeRefusal {
    /// The request broke RFC 6455's opening handshake (400, 426 or 431).
    Protocol(RejectionKind),
    /// `max_connections` sockets are open (503 with `Retry-After`).
    TooManyConnections,
    /// The application's upgrade decision refused it (any status it chose).
    Application,
    /// The `Origin` failed the default rule or the application's
    /// `check_origin` (403).
    OriginNotAllowed,
    /// The access token was missing (where required) or refused (401).
    Unauthorized,
    /// The client address or user has `connections_per_ip` /
    /// `connections_per_user` sockets open (429 with `Retry-After`).
    ConnectionLimit,
}

impl HandshakeRefusal {
    /// The label: the protocol rejection's own (`"unsupported_version"`,
    /// …) or `"too_many_connections"`, `"application"`,
    /// `"origin_not_allowed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeRefusal::Protocol(kind) => kind.as_str(),
            HandshakeRefusal::TooManyConnections => "too_many_connections",
            HandshakeRefusal::Application => "application",
            HandshakeRefusal::OriginNotAllowed => "origin_not_allowed",
            HandshakeRefusal::Unauthorized => "unauthorized",
            HandshakeRefusal::ConnectionLimit => "connection_limit",
        }
    }
}

/// The close reason sockets get when the server shuts down (with 1001).
const SHUTDOWN_REASON: &str = "server shutting down";

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
    /// Timings and bounds of each open socket.
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

/// A socket's binding to the HTTP session it was opened with.
#[derive(Debug)]
pub(crate) struct SessionBinding {
    pub(crate) id: SessionId,
    /// Close the socket when the session ends.
    pub(crate) terminate_on_exit: bool,
    /// `session_access`: whether, and how often, inbound messages refresh
    /// the session.
    pub(crate) refresh: Option<SessionRefresh>,
}

/// A socket's place in the hub and its session binding, held by the socket's
/// task: dropping it unregisters and unbinds, whether the task ends normally,
/// unwinds from a panic or is aborted (as quinn's `ConnectionRef` releases a
/// connection). Three words: it lives in every socket task's state.
pub(crate) struct Registration {
    runtime: Runtime,
    shared: Arc<SocketShared>,
    /// Boxed: most sockets have no session.
    session: Option<Box<SessionBinding>>,
}

impl Registration {
    pub(crate) fn id(&self) -> SocketId {
        self.shared.id()
    }

    /// The socket's outbox and groups, as the hub reaches them.
    pub(crate) fn shared(&self) -> &SocketShared {
        &self.shared
    }

    /// An inbound message arrived: refresh the socket's session if
    /// `session_access` asks for it and the throttle allows. Inline and
    /// without reading the clock for a socket without a session (most):
    /// it is called once per message.
    ///
    /// The refresh runs in a task of its own: the store may be remote
    /// (Redis), and the socket task must not wait on it. The throttle bounds
    /// these tasks to one per socket per throttle window.
    #[inline]
    pub(crate) fn inbound_message(&mut self) {
        if self
            .session
            .as_deref()
            .is_some_and(|session| session.refresh.is_some())
        {
            self.refresh_session(tokio::time::Instant::now());
        }
    }

    #[inline(never)]
    fn refresh_session(&mut self, now: tokio::time::Instant) {
        if let Some(session) = self.session.as_deref_mut()
            && session.refresh.as_mut().is_some_and(|r| r.due(now))
        {
            let sessions = self.runtime.inner.sessions.clone();
            let id = session.id.clone();
            tokio::spawn(async move {
                if let Err(error) = sessions.touch(&id).await {
                    tracing::debug!(target: "wsbus::session", %error, "refreshing a session on socket activity");
                }
            });
        }
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Leave the hub and the session now (both idempotent; `drop` repeats it).
    pub(crate) fn release(&self) {
        self.runtime.inner.hub.unregister(self.id());
        if let Some(session) = &self.session {
            self.runtime.inner.sessions.unbind(&session.id, self.id());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.release();
    }
}

struct Inner {
    config: ServerConfig,
    hub: Hub,
    sessions: Arc<Sessions>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    metrics: Metrics,
    security: Security,
    captures: Captures,
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

/// Makes the hub's engine from this node's [`LocalHub`].
type EngineFactory = Box<dyn FnOnce(Arc<LocalHub>) -> Arc<dyn HubEngine> + Send>;

/// Builds a [`Runtime`]: which node it is, where sessions live and which
/// engine carries hub calls. [`Runtime::new`] is the builder's defaults: node
/// 0, sessions in memory, this process's hub alone.
pub struct RuntimeBuilder {
    config: ServerConfig,
    node: NodeId,
    store: Arc<dyn SessionStore>,
    engine: Option<EngineFactory>,
    security: Security,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("config", &self.config)
            .field("node", &self.node)
            .field("engine", &self.engine.is_some())
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// This node's id within a cluster: part of every [`SocketId`] it hands
    /// out, so that a cluster engine can route a call to the node holding
    /// the socket. Default 0.
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = node;
        self
    }

    /// Where HTTP sessions live. Default: in memory ([`MemorySessionStore`]).
    pub fn session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = store;
        self
    }

    /// Carry hub calls through the engine that `make` builds around this
    /// node's sockets (a cluster engine). `make` is called once, by
    /// [`build`](Self::build).
    pub fn hub_engine(
        mut self,
        make: impl FnOnce(Arc<LocalHub>) -> Arc<dyn HubEngine> + Send + 'static,
    ) -> Self {
        self.engine = Some(Box::new(make));
        self
    }

    /// Tokens, trusted proxies, connection and message limits, schemas per
    /// path (see [`Security`]). Default: none of them.
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        let socket = &self.config.socket;
        let limit = OutboxLimit {
            max_bytes: socket.max_outbound_bytes,
            policy: socket.slow_consumer,
        };
        let local = Arc::new(LocalHub::with_limit(self.node, limit));
        let metrics = Metrics::new(local.clone());
        let hub = match self.engine {
            Some(make) => Hub::with_engine(local.clone(), make(local)),
            None => Hub::with_local(local),
        };
        let sessions = Arc::new(Sessions::new(
            self.store,
            self.config.session_idle_timeout,
            hub.clone(),
        ));
        Runtime {
            inner: Arc::new(Inner {
                config: self.config,
                hub,
                sessions,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                metrics,
                security: self.security,
                captures: Captures::default(),
            }),
        }
    }
}

impl Runtime {
    /// A runtime with in-memory sessions and this process's hub alone.
    pub fn new(config: ServerConfig) -> Self {
        Self::builder(config).build()
    }

    /// A builder, to install a session store or a hub engine.
    pub fn builder(config: ServerConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            node: NodeId::default(),
            store: Arc::new(MemorySessionStore::default()),
            engine: None,
            security: Security::default(),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn socket_settings(&self) -> &SocketSettings {
        &self.inner.config.socket
    }

    /// The hub: send to sockets and groups, close sockets.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// HTTP sessions and their bound sockets.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.inner.sessions
    }

    /// What the runtime enforces besides the protocol (tokens, limits,
    /// schemas).
    pub fn security(&self) -> &Security {
        &self.inner.security
    }

    /// Counters for the metrics endpoint.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Traffic captures (the admin API starts them; sockets feed them).
    pub fn captures(&self) -> &Captures {
        &self.inner.captures
    }

    /// A message of socket `id` went `direction`: offered to the running
    /// captures that match it. One atomic load while none runs. `socket` is
    /// the socket's hub entry if the caller has it at hand.
    #[inline]
    pub(crate) fn capture(
        &self,
        id: SocketId,
        socket: Option<&SocketShared>,
        direction: Direction,
        message: &wsbus_proto::Message,
    ) {
        if self.inner.captures.is_active() {
            self.capture_slow(id, socket, direction, message);
        }
    }

    #[cold]
    #[inline(never)]
    fn capture_slow(
        &self,
        id: SocketId,
        socket: Option<&SocketShared>,
        direction: Direction,
        message: &wsbus_proto::Message,
    ) {
        let found;
        let socket = match socket {
            Some(socket) => socket,
            None => match self.inner.hub.local().socket(id) {
                Some(shared) => {
                    found = shared;
                    &found
                }
                None => return,
            },
        };
        self.inner
            .captures
            .socket_message(id, &socket.facts(), direction, message);
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// [`register_socket_with`](Self::register_socket_with) a socket whose
    /// handshake facts do not matter (tests).
    #[cfg(test)]
    pub(crate) fn register_socket(&self, session: Option<SessionBinding>) -> Registration {
        self.register_socket_with(
            session,
            crate::app::SocketInfo::unknown(),
            Opened::now(std::net::Ipv4Addr::UNSPECIFIED.into()),
        )
    }

    /// Register a new socket `info` (its id is set here) that was `opened`
    /// so with the hub, bound to
    /// `session` if any. Shutdown closes every registered socket through the
    /// hub; one registered after that is closed here. The returned guard
    /// undoes both when dropped, on whatever path the socket's task ends.
    pub(crate) fn register_socket_with(
        &self,
        session: Option<SessionBinding>,
        info: crate::app::SocketInfo,
        opened: Opened,
    ) -> Registration {
        let shared = self.inner.hub.register_with(info, opened);
        if self.inner.shutdown.is_cancelled() {
            shared.close(CloseCode::GOING_AWAY, SHUTDOWN_REASON);
        }
        if let Some(binding) = &session {
            self.inner
                .sessions
                .bind(&binding.id, shared.id(), binding.terminate_on_exit);
        }
        Registration {
            runtime: self.clone(),
            shared,
            session: session.map(Box::new),
        }
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
