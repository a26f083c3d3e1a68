//! The message bus's transports: Bayeux (`wsbus-bayeux`) over WebSocket and
//! over HTTP long-polling.
//!
//! One [`Bus`] owns the sans-IO [`Engine`] behind a mutex and drives it:
//!
//! * **long-polling**: `POST /amb` (and `/amb/*`, where CometD posts) goes to
//!   [`Bus::long_poll`]; a held `/meta/connect` keeps the request open until
//!   the engine wakes its client or the hold's deadline passes;
//! * **websocket**: [`BusSocket`], a [`WebSocketApp`](crate::app::WebSocketApp)
//!   at the bus path; each text message is a batch, deliveries are pushed
//!   through the hub;
//! * **time**: a task calls `handle_timeout` at the engine's next deadline
//!   (held connects, client expiry, history window).
//!
//! `bus.websocket_enabled = false` refuses upgrades on the bus path with 400
//! and removes `websocket` from `supportedConnectionTypes`, so clients carry
//! on over long-polling.
//!
//! A WebSocket text message larger than the engine's batch limit
//! ([`BatchLimits::max_bytes`](wsbus_bayeux::BatchLimits), 1 MiB by default)
//! closes the socket with 1009 (message too big); the clients it carried
//! are kept and may connect again (over a new socket or long-polling) within
//! `maxInterval`, with nothing queued for them lost. Long-polling bodies are
//! bounded before the bus by `ServerConfig::max_body_bytes` (413); `wsbus
//! serve` sets the batch limit to that body limit (64 KiB), so that both
//! transports take the same batches.
//!
//! # Locks
//!
//! The bus's locks are taken in this order, never the other way round: the
//! engine, then `routes` (which socket or request each client's deliveries
//! go to), then at most one of the `/service` handler table, the timer's
//! deadline and the send queue, each held only briefly.
//!
//! Every engine call is one step: under the engine lock, make the call and
//! route the events it caused (wake-ups become encoded batches queued for
//! their sockets, waiting long-polling requests are woken, service calls are
//! queued for their handler's task); then, with no bus lock held, hand the
//! queued batches to the hub. So no hub call and no handler ever runs under
//! a bus lock: a hub engine (a cluster's) may take locks of its own or call
//! back into the bus, and a handler may call anything.
//!
//! The batches reach the hub in the order the engine produced them, handed
//! over by one thread at a time (`sends.rs` says why and how): the messages
//! one caller publishes, one call after another, reach each WebSocket
//! subscriber in that order, however many threads publish at once.
//!
//! # Several nodes
//!
//! A bus is one node's. [`Bus::set_cluster`] joins it to the buses of
//! other nodes through a [`BusCluster`] (Redis, in `wsbus-redis`): the bus
//! hands it the messages accepted for broadcast here and the channel
//! patterns its subscribers need, in engine order and with no bus lock held
//! (the same send queue as WebSocket deliveries); other nodes' messages come
//! in through [`Bus::receive_from_cluster`]. One publisher's messages reach
//! every subscriber on every node in publish order, if the cluster keeps
//! each origin's order. [`BusCluster`] says what crosses and what stays on
//! its node.
//!
//! # Server-side code
//!
//! * [`Bus::publish`] broadcasts on a channel, [`Bus::deliver`] sends to one
//!   client, [`Bus::presence`] lists a channel's members, [`Bus::hub`] reaches
//!   plain WebSocket sockets and groups.
//! * [`Bus::add_service`] registers a handler for `/service/**` channels
//!   (their messages go to server-side handlers only, never to subscribers).
//!   A client's publish there becomes a [`ServiceCall`] carrying the sender's
//!   client id, user and data; the handler may
//!   [`reply`](ServiceCall::reply) to that client alone on the same channel,
//!   publish, or use the hub:
//!
//! ```no_run
//! # async fn doc(bus: wsbus::bus::Bus) -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! bus.add_service("/service/echo", |call: wsbus::bus::ServiceCall| async move {
//!     // Answer the sender only; other clients never see /service messages.
//!     let _ = call.reply(json!({"echo": call.data, "user": call.user.as_deref()}));
//!     // Tell everyone in /chat/room that someone used the service.
//!     let _ = call.bus().publish("/chat/room", json!({"used": "echo"}));
//! })?;
//! # Ok(()) }
//! ```

// Ahead of the crate: every public item documented, the rest `pub(super)`
// or private.
#![warn(missing_docs, unreachable_pub)]

mod cluster;
mod credentials;
mod long_poll;
mod routes;
mod sends;
mod services;
mod timer;
mod websocket;

use std::sync::{Arc, Mutex, OnceLock};

use rand::Rng;
use serde_json::Value;
use wsbus_bayeux::{
    BayeuxError, BusConfig, ChannelName, ClientId, Engine, Event, Published, encode_batch,
};

use crate::hub::Hub;
use crate::runtime::Runtime;
pub use cluster::{BusCluster, WeakBus};
pub use long_poll::{FORWARD_MARGIN, ForwardedAnswer, ForwardedPoll, LongPollForward};
use routes::Routes;
use sends::SendQueue;
pub use services::{ChannelSchemas, SERVICE_MAX_PENDING, ServiceCall, ServiceError};
use services::{ServiceGate, ServiceTable};
use timer::Timer;
pub use websocket::BusSocket;
pub use wsbus_bayeux::{
    ClusterPublish, FetchedHistory, HistoryRequest, InterestChange, SharedHistory,
};

/// Why a server-side publish or delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The channel name is not a valid Bayeux channel.
    InvalidChannel(String),
    /// The bus refused it: a `/meta` channel, or a broadcast on a `/service`
    /// channel (services answer with [`Bus::deliver`]).
    Refused(String),
    /// [`Bus::deliver`] to a client that does not exist (any more).
    UnknownClient,
    /// The data failed the channel's schema; nothing was sent.
    Invalid(crate::schema::Violation),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::InvalidChannel(why) => write!(f, "invalid channel: {why}"),
            PublishError::Refused(why) => write!(f, "publish refused: {why}"),
            PublishError::UnknownClient => f.write_str("unknown client"),
            PublishError::Invalid(violation) => write!(f, "invalid data: {violation}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// The bus's state; lock order in the module docs.
struct Inner {
    engine: Mutex<Engine>,
    routes: Mutex<Routes>,
    /// `/service` handlers, by pattern.
    services: ServiceTable,
    /// WebSocket deliveries and cluster calls, queued under the engine lock
    /// and handed over after it.
    sends: SendQueue,
    /// The other nodes, once [`Bus::set_cluster`] joined them.
    cluster: OnceLock<Arc<dyn BusCluster>>,
    /// This node and the way to the owners of other nodes' clients, once
    /// [`Bus::set_long_poll_forward`] set them.
    forward: OnceLock<(crate::hub::NodeId, Arc<dyn LongPollForward>)>,
    /// `BusConfig::timeout`: how long a connect may be held, which a
    /// forwarded request may take.
    hold_timeout: std::time::Duration,
    hub: Hub,
    /// Shared with the timer task, which holds the rest of the bus only
    /// while it works.
    timer: Arc<Timer>,
    websocket_enabled: bool,
    /// The engine's batch limit, checked on WebSocket messages before they
    /// reach it (1009 instead of a Bayeux error).
    max_batch_bytes: usize,
    /// The engine's batch limits, for parsing a batch before it (to find
    /// its access token).
    batch_limits: wsbus_bayeux::BatchLimits,
    /// Schemas of channels' `data`, checked on server-side publishes and
    /// deliveries (client publishes: by the engine's authorizer).
    schemas: Arc<ChannelSchemas>,
    /// The runtime whose tokens, limits and metrics the bus shares, if it
    /// was made with one ([`Bus::with_runtime`]).
    runtime: Option<Runtime>,
}

/// The Bayeux bus: the engine, its transports' state and its timer. Cheap to
/// clone (an `Arc`); every clone is the same bus, shared by its transports
/// ([`Bus::long_poll`], [`BusSocket`]) and by Rust code that publishes. The
/// timer task holds none: it ends at its next wake-up after the last clone
/// is dropped.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("websocket_enabled", &self.inner.websocket_enabled)
            .finish_non_exhaustive()
    }
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

impl Bus {
    /// A bus configured by `config`, delivering to its WebSocket clients
    /// through `hub` (the hub of the server that serves [`BusSocket`]).
    /// Spawns its timer task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(config: BusConfig, hub: Hub) -> Self {
        Self::build(config, hub, None, ChannelSchemas::default())
    }

    /// A bus served by `runtime`'s server: it delivers through the runtime's
    /// hub, checks access tokens with its [`TokenAuth`](crate::security::TokenAuth)
    /// (`ext.access_token` in a handshake or connect, or the transport's
    /// `Authorization` / `access_token`; `required` refuses handshakes
    /// without one), limits each session to its `message_rate`, counts in
    /// its metrics, and checks `data` against `schemas` in both directions.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn with_runtime(mut config: BusConfig, runtime: &Runtime, schemas: ChannelSchemas) -> Self {
        let security = runtime.security();
        config.require_token |= security.auth.as_ref().is_some_and(|a| a.required);
        if config.limits.messages_per_second.is_none() {
            config.limits.messages_per_second = security.message_rate;
        }
        Self::build(
            config,
            runtime.hub().clone(),
            Some(runtime.clone()),
            schemas,
        )
    }

    fn build(
        config: BusConfig,
        hub: Hub,
        runtime: Option<Runtime>,
        schemas: ChannelSchemas,
    ) -> Self {
        let websocket_enabled = config.websocket_enabled;
        let max_batch_bytes = config.limits.batch.max_bytes;
        let batch_limits = config.limits.batch;
        let hold_timeout = config.timeout;
        let mut engine = Engine::new(config, || rand::rng().random::<[u8; 16]>());
        let services = ServiceTable::default();
        let schemas = Arc::new(schemas);
        engine.set_authorizer(ServiceGate {
            services: services.clone(),
            schemas: schemas.clone(),
            runtime: runtime.clone(),
        });
        let bus = Bus {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                routes: Mutex::default(),
                services,
                sends: SendQueue::default(),
                cluster: OnceLock::new(),
                forward: OnceLock::new(),
                hold_timeout,
                hub,
                timer: Arc::default(),
                websocket_enabled,
                max_batch_bytes,
                batch_limits,
                schemas,
                runtime,
            }),
        };
        tokio::spawn(timer::run(
            Arc::downgrade(&bus.inner),
            bus.inner.timer.clone(),
        ));
        if let Some(runtime) = &bus.inner.runtime {
            // Weak: the metrics must not keep the bus (and its timer) alive.
            let inner = Arc::downgrade(&bus.inner);
            runtime.metrics().add_bus(Box::new(move || {
                let inner = inner.upgrade()?;
                let stats = inner.engine.lock().expect("bus lock").stats();
                Some(stats)
            }));
        }
        bus
    }

    /// Whether clients may use the `websocket` transport
    /// (`BusConfig::websocket_enabled`): when not, [`BusSocket`] refuses
    /// upgrades with 400.
    pub fn websocket_enabled(&self) -> bool {
        self.inner.websocket_enabled
    }

    /// Publishes `data` on `channel` from the server (the Rust API behind
    /// `POST /api/publish`): no channel policy applies; the message is kept
    /// for replay if the channel's policy keeps history, and queued for every
    /// subscriber. [`Published`] says how many clients it was queued for and
    /// its history offset.
    ///
    /// When it returns, the message is queued for every subscriber:
    /// long-polling subscribers get it with their next connect reply; for
    /// WebSocket subscribers it has been handed to the hub, or is being handed
    /// over, in order, by a concurrent bus call that was already doing so
    /// (see the module docs, "Locks"). Either way, the messages of successive
    /// `publish` calls reach each subscriber in the order of the calls.
    ///
    /// Fails with [`PublishError::InvalidChannel`] for a malformed name, and
    /// [`PublishError::Refused`] on a `/meta` channel or a `/service` channel
    /// (services answer one client with [`deliver`](Self::deliver)).
    pub fn publish(&self, channel: &str, data: Value) -> Result<Published, PublishError> {
        let channel =
            ChannelName::parse(channel).map_err(|e| PublishError::InvalidChannel(e.to_string()))?;
        self.check_outbound(&channel, &data)?;
        self.drive(|engine| engine.publish(now(), &channel, data))
            .map_err(|e| PublishError::Refused(e.to_string()))
    }

    /// Sends `data` on `channel` to one client only (not kept in history,
    /// not seen by anyone else), e.g. a service's answer to another client
    /// than the sender. `channel` may be any non-`/meta` channel, the client
    /// need not be subscribed to it. Queued and handed over like a
    /// [`publish`](Self::publish)'s deliveries.
    ///
    /// Fails with [`PublishError::UnknownClient`] if the client has ended,
    /// [`PublishError::InvalidChannel`] for a malformed name and
    /// [`PublishError::Refused`] on a `/meta` channel.
    pub fn deliver(
        &self,
        client: &ClientId,
        channel: &str,
        data: Value,
    ) -> Result<(), PublishError> {
        let channel =
            ChannelName::parse(channel).map_err(|e| PublishError::InvalidChannel(e.to_string()))?;
        self.deliver_on(client, &channel, data)
    }

    fn deliver_on(
        &self,
        client: &ClientId,
        channel: &ChannelName,
        data: Value,
    ) -> Result<(), PublishError> {
        self.check_outbound(channel, &data)?;
        self.drive(|engine| engine.deliver(now(), client, channel, data))
            .map_err(|e| {
                if e == BayeuxError::UNKNOWN_CLIENT {
                    PublishError::UnknownClient
                } else {
                    PublishError::Refused(e.to_string())
                }
            })
    }

    /// Server-side `data` must pass its channel's schema too: what fails is
    /// not sent, is counted and logged (with the channel and pointer, never
    /// the payload).
    fn check_outbound(&self, channel: &ChannelName, data: &Value) -> Result<(), PublishError> {
        self.inner.schemas.check(channel, data).map_err(|violation| {
            if let Some(runtime) = &self.inner.runtime {
                runtime.metrics().schema_rejection("out");
            }
            tracing::warn!(target: "wsbus::schema", %channel, pointer = %violation.pointer, reason = %violation.reason, "server-side bus message failed its channel's schema; not sent");
            PublishError::Invalid(violation)
        })
    }

    /// The hub the bus's WebSocket clients are served through (the one given
    /// to [`Bus::new`]): service handlers use it to reach plain WebSocket
    /// sockets and groups.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The members present in `channel` now: the clients subscribed to
    /// exactly that channel, with their users (wildcard subscribers observe,
    /// they are not members). Empty for a malformed channel name.
    ///
    /// This node's members only, with or without a [`BusCluster`]: joins and
    /// leaves on other nodes reach `/presence/…` subscribers here, but
    /// listing the members of every node is the cluster's to add (in
    /// Redis), here.
    pub fn presence(&self, channel: &str) -> Vec<wsbus_bayeux::Member> {
        match ChannelName::parse(channel) {
            Ok(channel) => self
                .inner
                .engine
                .lock()
                .expect("bus lock")
                .presence(&channel),
            Err(_) => Vec::new(),
        }
    }

    /// Every channel pattern with subscribers and its number of
    /// subscribers, sorted by pattern (see [`Engine::channels`]).
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.inner.engine.lock().expect("bus lock").channels()
    }

    /// Counters for metrics: clients by transport, held connects,
    /// subscriptions, queued and kept messages, as of this call.
    pub fn stats(&self) -> wsbus_bayeux::Stats {
        self.inner.engine.lock().expect("bus lock").stats()
    }

    /// Runs `f` on the engine under its lock, routes the events it caused
    /// (still under the lock), then, with no bus lock held, hands the
    /// WebSocket deliveries they produced to the hub. Every engine call that
    /// may cause events goes through here.
    fn drive<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let (result, rate_limited) = {
            let mut engine = self.inner.engine.lock().expect("bus lock");
            let before = engine.rate_limited();
            let result = f(&mut engine);
            self.route_events(&mut engine);
            (result, engine.rate_limited() - before)
        };
        self.inner.sends.flush(&self.inner.hub, self.cluster());
        if rate_limited > 0 {
            // Counted and logged once per batch, not per refused message.
            if let Some(runtime) = &self.inner.runtime {
                runtime
                    .metrics()
                    .limit_hits_by("messages_per_second", rate_limited);
            }
            tracing::info!(target: "wsbus::limits", refused = rate_limited, "bus session over its message rate: 429::Too many messages");
        }
        result
    }

    /// Drains the engine's events: wake-ups to sockets (queued for
    /// [`drive`](Self::drive) to send) and long-polling requests, clients
    /// closed, service calls; then reschedules the timer.
    fn route_events(&self, engine: &mut Engine) {
        let mut routes = self.inner.routes.lock().expect("routes lock");
        while let Some(event) = engine.poll_event() {
            match event {
                Event::Wake(client) => {
                    if let Some(socket) = routes.socket_of(&client) {
                        let mut out = engine.take_deliveries(&client);
                        if let Some(hold) = routes.socket_hold(&client)
                            && let Some(released) = engine.poll_connect(hold, now())
                        {
                            routes.release_socket_hold(&client);
                            out.extend(released);
                        }
                        if let Some(json) = encode_batch(&out) {
                            self.inner.sends.push(socket, json);
                        }
                    }
                    routes.wake_polls(&client);
                }
                Event::SessionClosed { client_id, .. } => routes.session_closed(&client_id),
                Event::Service(request) => self.dispatch_service(request),
                Event::SessionOpened { .. } | Event::Presence(_) => {}
                Event::Broadcast(message) => self.inner.sends.push_publish(message),
                Event::Interest(change) => self.inner.sends.push_interest(change),
                Event::HistoryWanted(request) => self.inner.sends.push_history(request),
            }
        }
        drop(routes);
        self.inner.timer.reschedule(engine.next_timeout());
    }
}

#[cfg(test)]
mod tests;
