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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde_json::Value;
use tokio::sync::Notify;
use wsbus_bayeux::{
    BusConfig, ChannelName, ClientId, Engine, Event, HoldId, Outbound, Published, RequestContext,
    encode_batch,
};
use wsbus_proto::Message;

use crate::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use crate::hub::{Hub, SocketId};

/// Why a server-side publish failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The channel name is not a valid Bayeux channel.
    InvalidChannel(String),
    /// The bus refused it (a `/meta` or `/service` channel).
    Refused(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::InvalidChannel(why) => write!(f, "invalid channel: {why}"),
            PublishError::Refused(why) => write!(f, "publish refused: {why}"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Where a session's deliveries go.
#[derive(Debug, Default)]
struct Routes {
    /// WebSocket sessions: the socket carrying them.
    sockets: HashMap<ClientId, SocketId>,
    /// WebSocket sessions' held connects.
    socket_holds: HashMap<ClientId, HoldId>,
    /// Long-poll requests waiting on a held connect.
    waiting: HashMap<HoldId, Arc<Notify>>,
    /// Long-polling sessions' held connects, to wake on `Event::Wake`.
    polling_holds: HashMap<ClientId, Vec<HoldId>>,
}

struct Inner {
    engine: Mutex<Engine>,
    routes: Mutex<Routes>,
    hub: Hub,
    /// Wakes the timer task when the engine's next deadline may have moved.
    timer: Notify,
    websocket_enabled: bool,
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
        let engine = Engine::new(config, || rand::rng().random::<[u8; 16]>());
        let bus = Bus {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                routes: Mutex::default(),
                hub,
                timer: Notify::new(),
                websocket_enabled,
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
            routes.sockets.insert(client.clone(), socket);
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
        let holds: Vec<HoldId> = {
            let mut routes = self.inner.routes.lock().expect("routes lock");
            let clients: Vec<ClientId> = routes
                .sockets
                .iter()
                .filter(|(_, s)| **s == socket)
                .map(|(c, _)| c.clone())
                .collect();
            clients
                .iter()
                .filter_map(|c| {
                    routes.sockets.remove(c);
                    routes.socket_holds.remove(c)
                })
                .collect()
        };
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
                    routes.sockets.remove(&client_id);
                    routes.socket_holds.remove(&client_id);
                    for hold in routes.polling_holds.remove(&client_id).unwrap_or_default() {
                        if let Some(waiter) = routes.waiting.get(&hold) {
                            waiter.notify_one();
                        }
                    }
                }
                Event::Service(request) => {
                    tracing::debug!(target: "wsbus::bus", channel = %request.channel.as_str(), "service message without a Rust handler");
                }
                Event::SessionOpened { .. } | Event::Presence(_) => {}
            }
        }
        drop(routes);
        self.inner.timer.notify_one();
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
        let next = bus.inner.engine.lock().expect("bus lock").next_timeout();
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
            EventKind::Message(message) => {
                let user = event.session.user.as_ref().map(|u| u.login.clone());
                let reply =
                    self.bus
                        .websocket_batch(event.session.id, message.payload(), user.as_deref());
                if let Some(json) = reply {
                    let _ = event.send(Message::Text(wsbus_proto::Utf8Bytes::from(json)));
                }
            }
            EventKind::Close(_) => self.bus.websocket_closed(event.session.id),
            _ => {}
        }
    }
}
