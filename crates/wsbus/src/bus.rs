//! The message bus's transports: Bayeux (`wsbus-bayeux`) over WebSocket and
//! over HTTP long-polling.
//!
//! One [`Bus`] owns the sans-IO [`Engine`] behind a mutex and drives it:
//!
//! * **long-polling**: `POST /amb` (and `/amb/*`, where CometD posts) goes to
//!   [`Bus::long_poll`]; a held `/meta/connect` keeps the request open until
//!   the engine wakes its client or the hold's deadline passes;
//! * **websocket**: [`BusSocket`], a [`WebSocketApp`] at the bus path; each
//!   text message is a batch, deliveries are pushed through the hub;
//! * **time**: a task calls `handle_timeout` at the engine's next deadline
//!   (held connects, session expiry, history window).
//!
//! `bus.websocket_enabled = false` refuses upgrades on the bus path with 400
//! and removes `websocket` from `supportedConnectionTypes`, so clients carry
//! on over long-polling.
//!
//! A WebSocket text message larger than the engine's batch limit
//! ([`BatchLimits::max_bytes`](wsbus_bayeux::BatchLimits), 1 MiB by default)
//! closes the socket with 1009 (message too big); the sessions it carried
//! are kept and may connect again (over a new socket or long-polling) within
//! `maxInterval`, with nothing queued for them lost. Long-polling bodies are
//! bounded before the bus by `ServerConfig::max_body_bytes` (413); `wsbus
//! serve` sets the batch limit to that body limit (64 KiB), so that both
//! transports take the same batches.
//!
//! # Server-side code
//!
//! * [`Bus::publish`] broadcasts on a channel, [`Bus::deliver`] sends to one
//!   client, [`Bus::presence`] lists a channel's members, [`Bus::hub`] reaches
//!   plain WebSocket sockets and groups.
//! * [`Bus::add_service`] registers a handler for `/service/**` channels
//!   (SPEC §4: delivered only to server-side handlers). A client's publish
//!   there becomes a [`ServiceCall`] carrying the sender's client id, user and
//!   data; the handler may [`reply`](ServiceCall::reply) to that client alone
//!   on the same channel, publish, or use the hub:
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

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use wsbus_bayeux::channel::PatternMap;
use wsbus_bayeux::{
    Authorizer, BayeuxError, BusConfig, ChannelName, ChannelPattern, ClientId, Engine, Event,
    HoldId, IdMap, Outbound, Published, RequestContext, ServiceRequest, SessionInfo, encode_batch,
};
use wsbus_proto::{CloseCode, Message};

use crate::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use crate::hub::{Hub, SocketId};

/// Why a server-side publish or delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The channel name is not a valid Bayeux channel.
    InvalidChannel(String),
    /// The bus refused it: a `/meta` channel, or a broadcast on a `/service`
    /// channel (services answer with [`Bus::deliver`]).
    Refused(String),
    /// [`Bus::deliver`] to a session that does not exist (any more).
    UnknownClient,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::InvalidChannel(why) => write!(f, "invalid channel: {why}"),
            PublishError::Refused(why) => write!(f, "publish refused: {why}"),
            PublishError::UnknownClient => f.write_str("unknown client"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why [`Bus::add_service`] refused a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// Not a valid channel pattern.
    InvalidPattern(String),
    /// The pattern is not under `/service`: other channels are broadcast to
    /// subscribers, not handed to server-side code.
    NotAService(String),
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::InvalidPattern(why) => write!(f, "invalid channel pattern: {why}"),
            ServiceError::NotAService(pattern) => {
                write!(f, "{pattern} is not a /service channel pattern")
            }
        }
    }
}

impl std::error::Error for ServiceError {}

/// Most calls one service handler may have accepted but not finished (the
/// one running and those waiting for it). Past it, a client's publish to the
/// service is refused with `503::Service busy` in its publish reply: a slow
/// or stuck handler cannot make the bus buffer without bound, and the client
/// learns its message was not taken (nothing is dropped after an ack).
pub const SERVICE_MAX_PENDING: usize = 1_000;

/// A client's publish on a `/service` channel, as handed to the handler
/// registered with [`Bus::add_service`].
#[derive(Debug)]
pub struct ServiceCall {
    /// The sender's session.
    pub client_id: ClientId,
    /// The sender's user, as authenticated by the transport (HTTP session
    /// cookie) when it handshook; `None` for anonymous sessions.
    pub user: Option<Arc<str>>,
    /// The channel the message was published on (matching the handler's
    /// pattern).
    pub channel: ChannelName,
    /// The message's `data`.
    pub data: Value,
    /// The message's `id`, as the client sent it (its publish reply, already
    /// sent, echoed it).
    pub id: Option<Value>,
    bus: Bus,
}

impl ServiceCall {
    /// Sends `data` to the sender only, on [`channel`](Self::channel) (the
    /// Bayeux convention for a service's answer; a CometD client receives it
    /// with `cometd.addListener(channel, …)`). Queued like any delivery:
    /// pushed over WebSocket, carried by the next `/meta/connect` reply over
    /// long-polling or with the `ack` extension. Not kept in history. Fails
    /// with [`PublishError::UnknownClient`] if the session has ended.
    pub fn reply(&self, data: Value) -> Result<(), PublishError> {
        self.bus.deliver_on(&self.client_id, &self.channel, data)
    }

    /// The bus, to publish, deliver to other clients, or reach the hub.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// One registered handler: its queue and how many calls it owes.
struct ServiceSlot {
    calls: mpsc::UnboundedSender<ServiceCall>,
    /// Calls accepted (reserved by [`ServiceGate`]) and not yet finished.
    pending: Arc<AtomicUsize>,
}

type ServiceTable = Arc<Mutex<PatternMap<Arc<ServiceSlot>>>>;

/// The engine's [`Authorizer`]: reserves room in the handler's queue for a
/// `/service` publish before the engine acknowledges it, so that a refusal
/// (`503::Service busy`) reaches the client in the publish reply. Runs under
/// the engine lock; the table is only changed under it too, so the slot
/// reserved here is the one [`Bus::after`] hands the call to.
struct ServiceGate {
    services: ServiceTable,
}

impl Authorizer for ServiceGate {
    fn publish(
        &mut self,
        _session: &SessionInfo<'_>,
        channel: &ChannelName,
        _data: &Value,
    ) -> Result<(), BayeuxError> {
        if !channel.is_service() {
            return Ok(());
        }
        let services = self.services.lock().expect("services lock");
        // No handler: the engine answers 404 itself.
        let Some((_, slot)) = services.matching(channel).next() else {
            return Ok(());
        };
        slot.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < SERVICE_MAX_PENDING).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| BayeuxError::SERVICE_BUSY)
    }
}

/// Releases a call's reservation when its handler is done with it (or
/// panicked, or the call was never run).
struct PendingGuard(Arc<AtomicUsize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs one registration's handler over its calls, one at a time, in order.
async fn run_service<F, Fut>(
    mut calls: mpsc::UnboundedReceiver<ServiceCall>,
    pending: Arc<AtomicUsize>,
    mut handler: F,
) where
    F: FnMut(ServiceCall) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some(call) = calls.recv().await {
        let _done = PendingGuard(pending.clone());
        let channel = call.channel.clone();
        // A panicking handler loses that call only; the next ones still run.
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(call))) {
            Ok(future) => future,
            Err(_) => {
                tracing::error!(target: "wsbus::bus", channel = %channel.as_str(), "service handler panicked");
                continue;
            }
        };
        if let Err(error) = tokio::spawn(future).await {
            tracing::error!(target: "wsbus::bus", channel = %channel.as_str(), %error, "service handler failed");
        }
    }
}

/// Where a session's deliveries go. Keyed by the engine's ids, with its
/// fast hash ([`IdHash`](wsbus_bayeux::IdHash)): a delivery looks here on
/// every wake-up.
#[derive(Debug, Default)]
struct Routes {
    /// WebSocket sessions: the socket carrying them.
    sockets: IdMap<ClientId, SocketId>,
    /// The same, the other way: the sessions each socket carries (usually
    /// one), so that a closing socket finds its sessions without a scan of
    /// every session on the bus.
    carried: std::collections::HashMap<SocketId, Vec<ClientId>>,
    /// WebSocket sessions' held connects.
    socket_holds: IdMap<ClientId, HoldId>,
    /// Long-poll requests waiting on a held connect.
    waiting: IdMap<HoldId, Arc<Notify>>,
    /// Long-polling sessions' held connects, to wake on `Event::Wake`.
    polling_holds: IdMap<ClientId, Vec<HoldId>>,
    /// The engine deadline the timer task sleeps until (`None`: none). Only
    /// an earlier deadline needs to wake it: most calls (a held connect, a
    /// delivery) add none earlier than the ones it knows.
    timer_at: Option<std::time::Instant>,
}

impl Routes {
    /// `client` is carried by `socket` from now on (a no-op when it already
    /// was: the common case, once per message).
    fn attach(&mut self, client: &ClientId, socket: SocketId) {
        match self.sockets.insert(client.clone(), socket) {
            Some(previous) if previous == socket => return,
            Some(previous) => self.unlink(client, previous),
            None => {}
        }
        self.carried.entry(socket).or_default().push(client.clone());
    }

    fn unlink(&mut self, client: &ClientId, socket: SocketId) {
        if let Some(clients) = self.carried.get_mut(&socket) {
            clients.retain(|c| c != client);
            if clients.is_empty() {
                self.carried.remove(&socket);
            }
        }
    }

    /// `client` is no longer carried by any socket.
    fn detach(&mut self, client: &ClientId) {
        if let Some(socket) = self.sockets.remove(client) {
            self.unlink(client, socket);
        }
    }

    /// Every session `socket` carried, detached; returns their held
    /// connects.
    fn detach_socket(&mut self, socket: SocketId) -> Vec<HoldId> {
        let clients = self.carried.remove(&socket).unwrap_or_default();
        clients
            .iter()
            .filter_map(|client| {
                self.sockets.remove(client);
                self.socket_holds.remove(client)
            })
            .collect()
    }
}

struct Inner {
    engine: Mutex<Engine>,
    routes: Mutex<Routes>,
    /// `/service` handlers. Lock order: `engine`, then `services`.
    services: ServiceTable,
    hub: Hub,
    /// Wakes the timer task when the engine's next deadline moved earlier
    /// than [`Routes::timer_at`].
    timer: Notify,
    websocket_enabled: bool,
    /// The engine's batch limit, checked on WebSocket messages before they
    /// reach it (1009 instead of a Bayeux error).
    max_batch_bytes: usize,
}

/// The bus: cheap to clone, shared by its transports and by Rust code that
/// publishes.
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
    /// A bus delivering WebSocket traffic through `hub`. Spawns its timer
    /// task on the current tokio runtime.
    pub fn new(config: BusConfig, hub: Hub) -> Self {
        let websocket_enabled = config.websocket_enabled;
        let max_batch_bytes = config.limits.batch.max_bytes;
        let mut engine = Engine::new(config, || rand::rng().random::<[u8; 16]>());
        let services = ServiceTable::default();
        engine.set_authorizer(ServiceGate {
            services: services.clone(),
        });
        let bus = Bus {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                routes: Mutex::default(),
                services,
                hub,
                timer: Notify::new(),
                websocket_enabled,
                max_batch_bytes,
            }),
        };
        tokio::spawn(timer_task(Arc::downgrade(&bus.inner)));
        bus
    }

    /// Whether clients may use the `websocket` transport.
    pub fn websocket_enabled(&self) -> bool {
        self.inner.websocket_enabled
    }

    /// Publish `data` on `channel` from the server (the Rust API behind
    /// `POST /api/publish`).
    pub fn publish(&self, channel: &str, data: Value) -> Result<Published, PublishError> {
        let channel =
            ChannelName::parse(channel).map_err(|e| PublishError::InvalidChannel(e.to_string()))?;
        let mut engine = self.inner.engine.lock().expect("bus lock");
        let result = engine.publish(now(), &channel, data);
        self.after(&mut engine);
        result.map_err(|e| PublishError::Refused(e.to_string()))
    }

    /// Sends `data` on `channel` to one client only (not kept in history,
    /// not seen by anyone else), e.g. a service's answer to another client
    /// than the sender. `channel` may be any non-`/meta` channel, the client
    /// need not be subscribed to it. Fails with
    /// [`PublishError::UnknownClient`] if the session has ended.
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
        let mut engine = self.inner.engine.lock().expect("bus lock");
        let result = engine.deliver(now(), client, channel, data);
        self.after(&mut engine);
        result.map_err(|e| {
            if e == BayeuxError::UNKNOWN_CLIENT {
                PublishError::UnknownClient
            } else {
                PublishError::Refused(e.to_string())
            }
        })
    }

    /// Registers `handler` for client publishes on the `/service` channels
    /// matching `pattern` (`/service/echo`, `/service/rooms/*`,
    /// `/service/**`). Must be called within the tokio runtime (it spawns
    /// the handler's task).
    ///
    /// Semantics:
    ///
    /// * A client's publish on a matching channel is acknowledged
    ///   (`successful: true`) when the bus has queued it for the handler; the
    ///   handler runs afterwards, on its own task, never under the bus's
    ///   lock, so it may call any `Bus` or [`Hub`] method and await freely.
    /// * Calls to one registration run one at a time, in the order the bus
    ///   accepted them (per client, that is the order the client sent them).
    ///   The next call starts when the previous call's future completes; a
    ///   handler that wants concurrency spawns its own tasks.
    /// * At most [`SERVICE_MAX_PENDING`] calls wait per registration; further
    ///   publishes are refused with `503::Service busy` in their reply.
    /// * When patterns overlap, the most specific one handles a channel (the
    ///   channel itself, then its parent's `/*`, then the nearest `/**`).
    ///   Registering a pattern again replaces its handler; calls already
    ///   queued for the old one are still run by it.
    /// * A handler that panics loses that call (logged); later calls run.
    /// * Without any handler for a channel, a client's publish there is
    ///   refused with `404::No handler for this service channel`.
    /// * The handler reaches the bus through [`ServiceCall::bus`]; one that
    ///   captures a `Bus` clone keeps the bus alive until
    ///   [`remove_service`](Self::remove_service).
    pub fn add_service<F, Fut>(&self, pattern: &str, handler: F) -> Result<(), ServiceError>
    where
        F: FnMut(ServiceCall) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let pattern = ChannelPattern::parse(pattern)
            .map_err(|e| ServiceError::InvalidPattern(e.to_string()))?;
        if !pattern.is_service() {
            return Err(ServiceError::NotAService(pattern.as_str().to_owned()));
        }
        let (calls, receiver) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run_service(receiver, pending.clone(), handler));
        let mut engine = self.inner.engine.lock().expect("bus lock");
        engine.add_service(&pattern);
        self.inner
            .services
            .lock()
            .expect("services lock")
            .insert(&pattern, Arc::new(ServiceSlot { calls, pending }));
        Ok(())
    }

    /// Withdraws the handler registered for exactly `pattern`; `false` if
    /// there was none. Calls already accepted are still run; later publishes
    /// on its channels get `404` unless another pattern matches them.
    pub fn remove_service(&self, pattern: &str) -> bool {
        let Ok(pattern) = ChannelPattern::parse(pattern) else {
            return false;
        };
        let mut engine = self.inner.engine.lock().expect("bus lock");
        let removed = self
            .inner
            .services
            .lock()
            .expect("services lock")
            .remove(&pattern)
            .is_some();
        if removed {
            engine.remove_service(&pattern);
        }
        removed
    }

    /// The hub the bus's WebSocket sessions are served through: service
    /// handlers use it to reach plain WebSocket sockets and groups.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Hands a service request to its handler (under the engine lock: only
    /// queues it).
    fn dispatch_service(&self, request: ServiceRequest) {
        let slot = {
            let services = self.inner.services.lock().expect("services lock");
            services
                .matching(&request.channel)
                .next()
                .map(|(_, slot)| slot.clone())
        };
        let Some(slot) = slot else {
            // Unreachable while the gate and the engine agree (both change
            // under the engine lock); nothing was reserved.
            tracing::warn!(target: "wsbus::bus", channel = %request.channel.as_str(), "service message without a handler");
            return;
        };
        let call = ServiceCall {
            client_id: request.client_id,
            user: request.user,
            channel: request.channel,
            data: request.data,
            id: request.id,
            bus: self.clone(),
        };
        if let Err(mpsc::error::SendError(call)) = slot.calls.send(call) {
            // The handler's task is gone (its runtime shut down).
            drop(PendingGuard(slot.pending.clone()));
            tracing::warn!(target: "wsbus::bus", channel = %call.channel.as_str(), "service handler gone; call dropped");
        }
    }

    /// The members present in `channel`.
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

    /// Counters for metrics.
    pub fn stats(&self) -> wsbus_bayeux::Stats {
        self.inner.engine.lock().expect("bus lock").stats()
    }

    /// Handle one long-polling request body; resolves to the response body
    /// (a JSON array). A held connect keeps the future pending until its
    /// client is woken or its deadline passes; dropping the future (the HTTP
    /// client went away) cancels the hold.
    pub async fn long_poll(&self, body: &[u8], user: Option<&str>) -> String {
        let mut context = RequestContext::long_polling();
        if let Some(user) = user {
            context = context.with_user(user);
        }
        let (outcome, waiter) = {
            let mut engine = self.inner.engine.lock().expect("bus lock");
            let outcome = engine.handle_body(now(), &context, body);
            // Register the hold before processing events, so a wake caused by
            // this very batch is not lost.
            let waiter = outcome.held.as_ref().map(|held| {
                let notify = Arc::new(Notify::new());
                let mut routes = self.inner.routes.lock().expect("routes lock");
                routes.waiting.insert(held.hold_id, notify.clone());
                routes
                    .polling_holds
                    .entry(held.client_id.clone())
                    .or_default()
                    .push(held.hold_id);
                (held.clone(), notify)
            });
            self.after(&mut engine);
            (outcome, waiter)
        };
        let Some((held, notify)) = waiter else {
            return outcome.reply_json().unwrap_or_else(|| "[]".to_owned());
        };
        let mut guard = HoldGuard {
            bus: self,
            hold: Some(held.hold_id),
        };
        let deadline = tokio::time::Instant::from_std(held.deadline);
        loop {
            let notified = notify.notified();
            {
                let mut engine = self.inner.engine.lock().expect("bus lock");
                if let Some(released) = engine.poll_connect(held.hold_id, now()) {
                    guard.hold = None;
                    self.forget_hold(&held.client_id, held.hold_id);
                    self.after(&mut engine);
                    let mut all: Vec<Outbound> = outcome.replies;
                    all.extend(released);
                    return encode_batch(&all).unwrap_or_else(|| "[]".to_owned());
                }
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn forget_hold(&self, client: &ClientId, hold: HoldId) {
        let mut routes = self.inner.routes.lock().expect("routes lock");
        routes.waiting.remove(&hold);
        if let Some(holds) = routes.polling_holds.get_mut(client) {
            holds.retain(|h| *h != hold);
            if holds.is_empty() {
                routes.polling_holds.remove(client);
            }
        }
    }

    /// Handle one WebSocket text message from `socket`; returns the replies
    /// to send back on it.
    fn websocket_batch(&self, socket: SocketId, body: &[u8], user: Option<&str>) -> Option<String> {
        let mut context = RequestContext::websocket();
        if let Some(user) = user {
            context = context.with_user(user);
        }
        let mut engine = self.inner.engine.lock().expect("bus lock");
        let outcome = engine.handle_body(now(), &context, body);
        if let Some(client) = &outcome.session {
            let mut routes = self.inner.routes.lock().expect("routes lock");
            routes.attach(client, socket);
            if let Some(held) = &outcome.held {
                routes
                    .socket_holds
                    .insert(held.client_id.clone(), held.hold_id);
            }
        }
        let mut replies = outcome.replies;
        if let Some(client) = &outcome.session {
            // Deliveries already waiting go out in the same frame.
            replies.extend(engine.take_deliveries(client));
        }
        self.after(&mut engine);
        encode_batch(&replies)
    }

    /// A WebSocket carrying bus sessions closed: their held connects end and
    /// the sessions expire after `maxInterval` unless they come back.
    fn websocket_closed(&self, socket: SocketId) {
        let mut engine = self.inner.engine.lock().expect("bus lock");
        let holds = self
            .inner
            .routes
            .lock()
            .expect("routes lock")
            .detach_socket(socket);
        for hold in holds {
            engine.cancel_connect(hold, now());
        }
        self.after(&mut engine);
    }

    /// Drain the engine's events after every call: route wake-ups.
    fn after(&self, engine: &mut Engine) {
        let mut routes = self.inner.routes.lock().expect("routes lock");
        while let Some(event) = engine.poll_event() {
            match event {
                Event::Wake(client) => {
                    if let Some(&socket) = routes.sockets.get(&client) {
                        let mut out = engine.take_deliveries(&client);
                        if let Some(hold) = routes.socket_holds.get(&client).copied()
                            && let Some(released) = engine.poll_connect(hold, now())
                        {
                            routes.socket_holds.remove(&client);
                            out.extend(released);
                        }
                        if let Some(json) = encode_batch(&out) {
                            self.inner.hub.send(socket, Message::text(json));
                        }
                    }
                    for hold in routes.polling_holds.get(&client).into_iter().flatten() {
                        if let Some(waiter) = routes.waiting.get(hold) {
                            waiter.notify_one();
                        }
                    }
                }
                Event::SessionClosed { client_id, .. } => {
                    routes.detach(&client_id);
                    routes.socket_holds.remove(&client_id);
                    for hold in routes.polling_holds.remove(&client_id).unwrap_or_default() {
                        if let Some(waiter) = routes.waiting.get(&hold) {
                            waiter.notify_one();
                        }
                    }
                }
                Event::Service(request) => self.dispatch_service(request),
                Event::SessionOpened { .. } | Event::Presence(_) => {}
            }
        }
        let next = engine.next_timeout();
        let earlier = match (next, routes.timer_at) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            // Set here too, so that the calls before the timer task runs do
            // not wake it again.
            routes.timer_at = next;
            drop(routes);
            self.inner.timer.notify_one();
        }
    }
}

/// Cancels a long-poll's held connect if its request is dropped.
struct HoldGuard<'a> {
    bus: &'a Bus,
    hold: Option<HoldId>,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            let mut engine = self.bus.inner.engine.lock().expect("bus lock");
            engine.cancel_connect(hold, now());
            self.bus
                .inner
                .routes
                .lock()
                .expect("routes lock")
                .waiting
                .remove(&hold);
            self.bus.after(&mut engine);
        }
    }
}

/// Calls `handle_timeout` whenever the engine's next deadline comes.
async fn timer_task(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let bus = Bus { inner: strong };
        let next = {
            let engine = bus.inner.engine.lock().expect("bus lock");
            let next = engine.next_timeout();
            bus.inner.routes.lock().expect("routes lock").timer_at = next;
            next
        };
        // Created after `timer_at` is set: an earlier deadline found by a
        // call from now on stores a permit that ends this wait at once.
        let wake = bus.inner.timer.notified();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                // Nothing scheduled: look again now and then, so the task
                // notices when the bus is dropped.
                None => tokio::time::sleep(std::time::Duration::from_secs(60)).await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = sleep => {
                let mut engine = bus.inner.engine.lock().expect("bus lock");
                engine.handle_timeout(now());
                bus.after(&mut engine);
            }
        }
    }
}

/// The bus's `websocket` transport, as a WebSocket application at the bus
/// path.
#[derive(Debug, Clone)]
pub struct BusSocket {
    bus: Bus,
}

impl BusSocket {
    pub fn new(bus: Bus) -> Self {
        BusSocket { bus }
    }
}

impl WebSocketApp for BusSocket {
    type Data = ();

    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<()> {
        if !request.is_websocket {
            return Upgrade::status(404);
        }
        if !self.bus.websocket_enabled() {
            // The A/B switch: clients fall back to long-polling.
            return Upgrade::status(400);
        }
        Upgrade::Accept(WebSocketConfig::new(()))
    }

    fn on_event(&self, mut event: WsEvent<'_, ()>) {
        match &event.kind {
            EventKind::Message(message)
                if message.payload().len() > self.bus.inner.max_batch_bytes =>
            {
                // Larger than any batch the engine takes: 1009, as for a
                // message over the connection's own limit. The sessions on
                // this socket stay and may connect again: they are detached
                // now, before the close frame goes out, so that what is
                // published meanwhile waits in the session instead of going
                // to a socket that is closing.
                self.bus.websocket_closed(event.socket.id);
                let _ = event.close(CloseCode::MESSAGE_TOO_BIG, "Bayeux batch too large");
            }
            EventKind::Message(message) => {
                let user = event.socket.user.as_ref().map(|u| u.login.clone());
                let reply =
                    self.bus
                        .websocket_batch(event.socket.id, message.payload(), user.as_deref());
                if let Some(json) = reply {
                    let _ = event.send(Message::Text(wsbus_proto::Utf8Bytes::from(json)));
                }
            }
            // An error means the socket is closing: detach its sessions
            // at once (as above); CLOSE finds nothing left to detach.
            EventKind::Error(_) | EventKind::Close(_) => self.bus.websocket_closed(event.socket.id),
            _ => {}
        }
    }
}
