//! `/service` handlers: the gate that admits a client's publish before the
//! engine acknowledges it, and the task that runs a handler over its calls.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;
use wsbus_bayeux::channel::PatternMap;
use wsbus_bayeux::{
    Authorizer, BayeuxError, ChannelName, ChannelPattern, ClientId, ServiceRequest, SessionInfo,
};

use super::{Bus, PublishError};
use crate::runtime::Runtime;
use crate::schema::{Schema, Violation};

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
    /// The sender's client.
    pub client_id: ClientId,
    /// The sender's user, as authenticated by the transport (HTTP session
    /// cookie) when it handshook; `None` for anonymous clients.
    pub user: Option<Arc<str>>,
    /// The claims of the sender's access token (`sub`, `name` and the
    /// rest), if its session presented one.
    pub claims: Option<Arc<serde_json::Map<String, Value>>>,
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
    /// with [`PublishError::UnknownClient`] if the client has ended.
    pub fn reply(&self, data: Value) -> Result<(), PublishError> {
        self.bus.deliver_on(&self.client_id, &self.channel, data)
    }

    /// The bus, to publish, deliver to other clients, or reach the hub.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// One registered handler: its queue and how many calls it owes.
#[derive(Debug)]
pub(super) struct ServiceSlot {
    calls: mpsc::UnboundedSender<ServiceCall>,
    /// Calls accepted (reserved by [`ServiceGate`]) and not yet finished.
    pending: Arc<AtomicUsize>,
}

/// The registered handlers, by pattern. Changed only under the engine lock
/// (lock order: engine, then this table).
pub(super) type ServiceTable = Arc<Mutex<PatternMap<Arc<ServiceSlot>>>>;

/// The engine's [`Authorizer`]: reserves room in the handler's queue for a
/// `/service` publish before the engine acknowledges it, so that a refusal
/// (`503::Service busy`) reaches the client in the publish reply. Runs under
/// the engine lock; the table is only changed under it too, so the slot
/// reserved here is the one [`Bus::dispatch_service`] hands the call to.
///
/// It also checks a publish's `data` against its channel's schema (the most
/// specific `[[bus.channels]]` pattern with one): a failure is refused with
/// `400::<pointer>: <reason>` and is never relayed.
pub(super) struct ServiceGate {
    pub(super) services: ServiceTable,
    pub(super) schemas: Arc<ChannelSchemas>,
    pub(super) runtime: Option<Runtime>,
}

impl Authorizer for ServiceGate {
    fn publish(
        &mut self,
        session: &SessionInfo<'_>,
        channel: &ChannelName,
        data: &Value,
    ) -> Result<(), BayeuxError> {
        if let Err(violation) = self.schemas.check(channel, data) {
            if let Some(runtime) = &self.runtime {
                runtime.metrics().schema_rejection("in");
            }
            tracing::info!(target: "wsbus::schema", client = %session.client_id, user = session.user.unwrap_or("-"), %channel, pointer = %violation.pointer, reason = %violation.reason, "bus publish failed its channel's schema");
            return Err(BayeuxError::new(400, violation.to_string()));
        }
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

impl Bus {
    /// Registers `handler` for client publishes on the `/service` channels
    /// matching `pattern` (`/service/echo`, `/service/rooms/*`,
    /// `/service/**`).
    ///
    /// Semantics:
    ///
    /// * A client's publish on a matching channel is acknowledged
    ///   (`successful: true`) when the bus has queued it for the handler; the
    ///   handler runs afterwards, on its own task, never under the bus's
    ///   lock, so it may call any `Bus` or [`Hub`](crate::Hub) method and await freely.
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
    ///
    /// Fails with [`ServiceError::InvalidPattern`] for a malformed pattern
    /// and [`ServiceError::NotAService`] for one outside `/service`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the handler runs on a task of its own).
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

    /// Hands a service request to its handler (under the engine lock: only
    /// queues it).
    pub(super) fn dispatch_service(&self, request: ServiceRequest) {
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
            claims: request.claims,
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
}

/// JSON Schemas of bus channels' `data`, by pattern: the most specific
/// pattern matching a channel decides.
#[derive(Debug, Default)]
pub struct ChannelSchemas {
    map: PatternMap<Schema>,
}

impl ChannelSchemas {
    /// `schemas`, each for the channels its pattern matches.
    pub fn new(schemas: impl IntoIterator<Item = (ChannelPattern, Schema)>) -> Self {
        let mut map = PatternMap::default();
        for (pattern, schema) in schemas {
            map.insert(&pattern, schema);
        }
        ChannelSchemas { map }
    }

    /// Whether `data` on `channel` passes its schema (no schema: it does).
    pub fn check(&self, channel: &ChannelName, data: &Value) -> Result<(), Violation> {
        match self.map.matching(channel).next() {
            Some((_, schema)) => schema.validate(data),
            None => Ok(()),
        }
    }
}
