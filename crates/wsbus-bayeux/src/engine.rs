//! The bus: sessions, meta channels, publishing, presence, history and timers.

use std::cmp;
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::channel::{ChannelName, ChannelPattern, MatchKind, PatternMap, Subscriptions};
use crate::config::{BusConfig, ChannelPolicy};
use crate::error::BayeuxError;
use crate::history::History;
use crate::id::{ClientId, IdMap, IdSet, RandomSource};
use crate::message::{
    Advice, Batch, Message, Outbound, Reconnect, encode_batch, error_reply, parse_batch,
};
use crate::session::{Session, Transport};

mod holds;

pub use holds::HoldId;
use holds::Holds;

/// The first segment of presence channels: joins and leaves of `/chat/room`
/// are published on `/presence/chat/room`.
pub const PRESENCE_PREFIX: &str = "/presence";

/// Most members listed in the `ext.presence` of a subscribe reply, so that
/// subscribing to a crowded channel's presence cannot produce a huge reply.
pub const PRESENCE_SNAPSHOT_LIMIT: usize = 1_000;

const META_HANDSHAKE: &str = "/meta/handshake";
const META_CONNECT: &str = "/meta/connect";
const META_SUBSCRIBE: &str = "/meta/subscribe";
const META_UNSUBSCRIBE: &str = "/meta/unsubscribe";
const META_DISCONNECT: &str = "/meta/disconnect";

/// Attempts at drawing an unused client id before giving up (a working
/// random source collides with probability 2⁻¹²⁸).
const CLIENT_ID_ATTEMPTS: usize = 8;

/// What the runtime knows about the request a batch arrived in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    pub transport: Transport,
    /// The user the transport layer authenticated (cookie, `Authorization`
    /// header, `access_token`), if any. A handshake's session takes it as its
    /// user (unless an [`Authorizer`] decides otherwise); later requests that
    /// carry a different user are treated as from an unknown client, so that
    /// a client id leaked to another user is useless to them.
    pub user: Option<Arc<str>>,
}

impl RequestContext {
    /// An anonymous request over WebSocket.
    pub fn websocket() -> Self {
        RequestContext {
            transport: Transport::WebSocket,
            user: None,
        }
    }

    /// An anonymous long-polling request.
    pub fn long_polling() -> Self {
        RequestContext {
            transport: Transport::LongPolling,
            user: None,
        }
    }

    /// The same request, authenticated as `user`.
    pub fn with_user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// A handshake, as shown to [`Authorizer::handshake`].
#[derive(Clone, Copy, Debug)]
pub struct HandshakeRequest<'a> {
    /// The `/meta/handshake` message (its `ext` may carry a token).
    pub message: &'a Message,
    pub transport: Transport,
    /// The user authenticated by the transport layer.
    pub user: Option<&'a Arc<str>>,
}

/// A session, as shown to an [`Authorizer`].
#[derive(Clone, Copy, Debug)]
pub struct SessionInfo<'a> {
    pub client_id: &'a ClientId,
    pub user: Option<&'a str>,
    pub transport: Transport,
}

impl<'a> SessionInfo<'a> {
    fn of(session: &'a Session) -> Self {
        SessionInfo {
            client_id: &session.id,
            user: session.user(),
            transport: session.transport,
        }
    }
}

/// Decisions beyond the per-pattern policies: token checks in the handshake
/// `ext`, per-user rules, validation of published data against a schema.
/// Consulted after the policies allowed the operation; an `Err` is sent to
/// the client as the reply's `error` and nothing else happens.
///
/// [`subscribe`](Self::subscribe) sees the pattern as subscribed; messages
/// reached through a wildcard are additionally checked against the
/// subscribe *policy* of each channel, but not against the authorizer, so an
/// authorizer should refuse wildcard patterns it cannot vouch for.
pub trait Authorizer: Send {
    /// The session's user, or a refusal (e.g. [`BayeuxError::HANDSHAKE_DENIED`]).
    /// Default: the transport's user.
    fn handshake(
        &mut self,
        request: &HandshakeRequest<'_>,
    ) -> Result<Option<Arc<str>>, BayeuxError> {
        Ok(request.user.cloned())
    }

    /// Whether `session` may subscribe to `pattern`. Default: yes.
    fn subscribe(
        &mut self,
        session: &SessionInfo<'_>,
        pattern: &ChannelPattern,
    ) -> Result<(), BayeuxError> {
        let _ = (session, pattern);
        Ok(())
    }

    /// Whether `session` may publish `data` on `channel` (a broadcast or a
    /// `/service` channel). Default: yes.
    fn publish(
        &mut self,
        session: &SessionInfo<'_>,
        channel: &ChannelName,
        data: &Value,
    ) -> Result<(), BayeuxError> {
        let _ = (session, channel, data);
        Ok(())
    }
}

/// The [`Authorizer`] that adds no rule to the policies.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {}

/// A `/meta/connect` the engine is holding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldConnect {
    pub client_id: ClientId,
    /// Pass to [`Engine::poll_connect`] / [`Engine::cancel_connect`].
    pub hold_id: HoldId,
    /// When the connect is answered at the latest.
    pub deadline: Instant,
}

/// The result of handling one batch.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Messages to send now, as one JSON array. Empty means send nothing:
    /// over long-polling the response waits for the [`held`](Self::held)
    /// connect (these replies then ride on its response); over WebSocket
    /// there is simply nothing to say yet. Never send an empty array.
    pub replies: Vec<Outbound>,
    /// The batch's `/meta/connect`, if it is being held.
    pub held: Option<HeldConnect>,
    /// The session the batch belongs to (created by its handshake, or named
    /// by its messages), for the runtime to route [`Event::Wake`] to this
    /// socket or request. `None` when no message named a known session.
    pub session: Option<ClientId>,
}

impl Outcome {
    /// [`replies`](Self::replies) as one JSON array; `None` if there are none.
    pub fn reply_json(&self) -> Option<String> {
        encode_batch(&self.replies)
    }

    fn push(&mut self, message: &Message) {
        self.replies.push(Outbound::new(message));
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `/meta/disconnect`.
    Disconnected,
    /// [`Engine::disconnect`].
    ServerDisconnect,
    /// No `/meta/connect` for `maxInterval`.
    Expired,
    /// More than `max_queued_messages` waited for it.
    QueueOverflow,
}

/// `join` or `leave`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceAction {
    Join,
    Leave,
}

impl PresenceAction {
    /// `"join"` or `"leave"`, as in the presence message's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceAction::Join => "join",
            PresenceAction::Leave => "leave",
        }
    }
}

/// A client joined or left a channel's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceChange {
    /// The channel (e.g. `/chat/room`).
    pub channel: ChannelName,
    pub client_id: ClientId,
    pub user: Option<Arc<str>>,
    pub action: PresenceAction,
}

/// A message published by a client on a `/service` channel, for server-side
/// code. Reply with [`Engine::deliver`] if the service answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRequest {
    pub client_id: ClientId,
    pub user: Option<Arc<str>>,
    pub channel: ChannelName,
    pub data: Value,
    /// The message's `id`.
    pub id: Option<Value>,
}

/// What the engine tells its driver. Drain with [`Engine::poll_event`] after
/// every call.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Something is ready for this client: call [`Engine::poll_connect`] for
    /// every connect you hold for it, and [`Engine::take_deliveries`] if it is
    /// on WebSocket.
    Wake(ClientId),
    /// A client published on a `/service` channel with a handler.
    Service(ServiceRequest),
    /// A handshake created a session.
    SessionOpened {
        client_id: ClientId,
        user: Option<Arc<str>>,
        transport: Transport,
    },
    /// A session ended; its subscriptions are gone.
    SessionClosed {
        client_id: ClientId,
        user: Option<Arc<str>>,
        reason: CloseReason,
    },
    /// A presence change, already published on its presence channel.
    Presence(PresenceChange),
}

/// A member of a channel's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub client_id: ClientId,
    pub user: Option<Arc<str>>,
}

/// The result of a broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's offset (see the crate docs, "No loss"); `None` on a
    /// channel whose policy keeps no history.
    pub offset: Option<u64>,
    /// How many sessions it was queued for.
    pub recipients: usize,
}

/// Counters for metrics and the admin page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: usize,
    pub websocket_sessions: usize,
    pub long_polling_sessions: usize,
    pub held_connects: usize,
    pub subscription_patterns: usize,
    pub queued_messages: usize,
    pub history_messages: usize,
    pub history_bytes: usize,
    pub history_channels: usize,
}

/// The Bayeux bus, without I/O.
///
/// # Driving contract
///
/// The driver (the runtime's bus task, or a test) owns the transports and the
/// clock, and serializes access (one task, or a mutex: every method takes
/// `&mut self` and returns quickly).
///
/// 1. **Requests**: for each long-polling POST body or WebSocket text message
///    call [`handle_body`](Self::handle_body) (or [`parse_batch`] and
///    [`handle`](Self::handle)) with the current time and a
///    [`RequestContext`]. Send [`Outcome::reply_json`] if it is `Some`.
///    * Long-polling: if [`Outcome::held`] is set, keep the HTTP request
///      open; its response comes from [`poll_connect`](Self::poll_connect).
///      The replies to the request's other messages wait with it.
///    * WebSocket: send the replies at once; remember the held connect's
///      [`HoldId`] for the socket.
/// 2. **Events**: after every call, drain [`poll_event`](Self::poll_event).
///    On [`Event::Wake`] for a client, call
///    [`poll_connect`](Self::poll_connect) for each connect held for it (a
///    `Some` is the complete response of that request: send it, and over
///    long-polling end the request), and over WebSocket also
///    [`take_deliveries`](Self::take_deliveries) and send them. Give
///    [`Event::Service`] to the server-side handlers.
/// 3. **Time**: at [`next_timeout`](Self::next_timeout) call
///    [`handle_timeout`](Self::handle_timeout): it expires sessions after
///    `maxInterval` without a connect, answers held connects at their
///    deadline (as `Wake` events), and drops history past its window. A
///    driver may also call `poll_connect` at a held connect's own deadline.
/// 4. **Loss of a transport**: when a long-polling request whose connect is
///    held goes away, or a WebSocket closes, call
///    [`cancel_connect`](Self::cancel_connect): the session then expires
///    after `maxInterval` unless the client connects again.
/// 5. **Server side**: [`publish`](Self::publish) broadcasts,
///    [`deliver`](Self::deliver) sends to one client,
///    [`disconnect`](Self::disconnect) ends a session,
///    [`add_service`](Self::add_service) declares `/service` handlers,
///    [`presence`](Self::presence) and [`stats`](Self::stats) report.
///
/// No clock is read and no randomness drawn here: time comes in as
/// `Instant` arguments, client ids from the [`RandomSource`].
pub struct Engine {
    config: BusConfig,
    ids: Box<dyn RandomSource>,
    authorizer: Box<dyn Authorizer>,
    sessions: IdMap<ClientId, Session>,
    subscriptions: Subscriptions,
    policies: PatternMap<ChannelPolicy>,
    services: PatternMap<()>,
    history: History,
    /// Sessions by expiry time (sessions holding a connect are absent).
    expiries: BTreeSet<(Instant, ClientId)>,
    /// Held connects, and the responses of those answered while their
    /// driver was not asking. Every client holding a connect is a live
    /// session: removing a session releases its hold.
    holds: Holds,
    /// Sessions to remove once the current operation is done (a session
    /// overflowing in the middle of a fan-out is removed after it).
    removals: Vec<(ClientId, CloseReason)>,
    events: VecDeque<Event>,
    /// The `advice` of successful connect replies, as JSON.
    connect_advice: String,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .field("subscription_patterns", &self.subscriptions.pattern_count())
            .field("held_connects", &self.holds.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A bus with `config`, drawing client ids from `ids`.
    pub fn new(config: BusConfig, ids: impl RandomSource + 'static) -> Self {
        let mut policies = PatternMap::default();
        for (pattern, policy) in &config.policies {
            policies.insert(pattern, *policy);
        }
        let connect_advice =
            serde_json::to_string(&connect_advice(&config)).expect("advice serializes");
        Engine {
            connect_advice,
            history: History::new(config.history),
            holds: Holds::new(config.max_interval),
            config,
            ids: Box::new(ids),
            authorizer: Box::new(AllowAll),
            sessions: IdMap::default(),
            subscriptions: Subscriptions::default(),
            policies,
            services: PatternMap::default(),
            expiries: BTreeSet::new(),
            removals: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Replaces the [`Authorizer`] (default [`AllowAll`]).
    pub fn set_authorizer(&mut self, authorizer: impl Authorizer + 'static) {
        self.authorizer = Box::new(authorizer);
    }

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Sets the policy of `pattern` (for channels it matches most
    /// specifically). Existing subscriptions are not re-checked, but
    /// wildcard deliveries are checked against the new policy.
    pub fn set_policy(&mut self, pattern: &ChannelPattern, policy: ChannelPolicy) {
        self.policies.insert(pattern, policy);
    }

    /// Declares that server-side code handles `/service` channels matching
    /// `pattern`: client publishes there become [`Event::Service`]. A publish
    /// on a `/service` channel without a handler gets `404`.
    pub fn add_service(&mut self, pattern: &ChannelPattern) {
        self.services.insert(pattern, ());
    }

    /// Withdraws a pattern given to [`add_service`](Self::add_service).
    pub fn remove_service(&mut self, pattern: &ChannelPattern) {
        self.services.remove(pattern);
    }

    /// The handshake's `supportedConnectionTypes`: `websocket` only while
    /// enabled.
    pub fn supported_connection_types(&self) -> Vec<&'static str> {
        if self.config.websocket_enabled {
            vec![Transport::WebSocket.name(), Transport::LongPolling.name()]
        } else {
            vec![Transport::LongPolling.name()]
        }
    }

    // --- requests ---------------------------------------------------------

    /// Parses `body` (a JSON array of messages or one message, within the
    /// configured batch limits) and handles it. A body that cannot be read
    /// at all is answered with a single error message (for long-polling,
    /// send it with HTTP status 400).
    pub fn handle_body(&mut self, now: Instant, context: &RequestContext, body: &[u8]) -> Outcome {
        match parse_batch(body, &self.config.limits.batch) {
            Ok(batch) => self.handle(now, context, batch),
            Err(error) => {
                let mut outcome = Outcome::default();
                outcome.push(&error_reply(None, None, &error));
                outcome
            }
        }
    }

    /// Handles a parsed batch: one reply per message, in order (a held
    /// connect's reply comes later).
    pub fn handle(&mut self, now: Instant, context: &RequestContext, batch: Batch) -> Outcome {
        let mut out = Outcome::default();
        for item in batch {
            match item {
                Ok(message) => self.handle_message(now, context, message, &mut out),
                Err(invalid) => out.push(&error_reply(
                    invalid.channel.as_deref(),
                    invalid.id,
                    &invalid.error,
                )),
            }
            self.process_removals(now);
        }
        if let Some(held) = out.held.clone() {
            if let Some((_, replies)) = self.holds.take_released(held.hold_id) {
                // The connect held by this batch was answered by a later
                // message of it (a disconnect): answer it now.
                out.replies.extend(replies);
                out.held = None;
            } else if context.transport == Transport::LongPolling {
                // One HTTP response carries every reply: they wait with the
                // connect.
                self.holds
                    .add_pending_replies(held.hold_id, &mut out.replies);
            }
        }
        if context.transport == Transport::WebSocket {
            // Deliveries waiting for this session (e.g. a replay this batch
            // caused) follow its replies in the same frame.
            if let Some(session) = out
                .session
                .as_ref()
                .and_then(|id| self.sessions.get_mut(id))
            {
                if !session.delivers_with_connect() {
                    out.replies.extend(session.queue.drain());
                }
            }
        }
        out
    }

    fn handle_message(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let Some(channel) = message.channel.clone() else {
            out.push(&error_reply(
                None,
                message.id,
                &BayeuxError::MISSING_CHANNEL,
            ));
            return;
        };
        match channel.as_str() {
            META_HANDSHAKE => self.handshake(now, context, message, out),
            META_CONNECT => self.connect(now, context, message, out),
            META_SUBSCRIBE => self.subscribe(now, context, message, out),
            META_UNSUBSCRIBE => self.unsubscribe(now, context, message, out),
            META_DISCONNECT => self.client_disconnect(now, context, message, out),
            _ => self.client_publish(now, context, &channel, message, out),
        }
    }

    /// The session `message` names, if it exists and the request's user (if
    /// any) is its user.
    fn session_for(&self, message: &Message, context: &RequestContext) -> Option<ClientId> {
        let (id, session) = self.sessions.get_key_value(message.client_id.as_deref()?)?;
        if context.user.is_some() && context.user != session.user {
            return None;
        }
        Some(id.clone())
    }

    fn advice(&self) -> Advice {
        connect_advice(&self.config)
    }

    fn handshake(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let supported = self.supported_connection_types();
        let refuse = |out: &mut Outcome, error: &BayeuxError, reconnect: Reconnect| {
            let mut reply = error_reply(Some(META_HANDSHAKE), message.id.clone(), error);
            reply.version = Some("1.0".into());
            reply.supported_connection_types =
                Some(supported.iter().map(|t| (*t).to_owned()).collect());
            reply.advice = Some(Advice {
                reconnect: Some(reconnect),
                interval: Some(0),
                ..Advice::default()
            });
            out.push(&reply);
        };
        if let Some(version) = &message.version {
            if !(version == "1" || version.starts_with("1.")) {
                return refuse(out, &BayeuxError::UNSUPPORTED_VERSION, Reconnect::None);
            }
        }
        if let Some(types) = &message.supported_connection_types {
            if !types.iter().any(|t| supported.contains(&t.as_str())) {
                return refuse(
                    out,
                    &BayeuxError::UNSUPPORTED_CONNECTION_TYPE,
                    Reconnect::None,
                );
            }
        }
        if self.sessions.len() >= self.config.limits.max_sessions {
            return refuse(out, &BayeuxError::TOO_MANY_SESSIONS, Reconnect::Handshake);
        }
        let request = HandshakeRequest {
            message: &message,
            transport: context.transport,
            user: context.user.as_ref(),
        };
        let user = match self.authorizer.handshake(&request) {
            Ok(user) => user,
            Err(error) => return refuse(out, &error, Reconnect::None),
        };
        let Some(id) = self.new_client_id() else {
            return refuse(out, &BayeuxError::NO_CLIENT_ID, Reconnect::Handshake);
        };
        // CometD's ack extension: the client asks with `ext.ack: true`.
        let ack = message.ext_field("ack") == Some(&Value::Bool(true));
        self.sessions.insert(
            id.clone(),
            Session::new(id.clone(), user.clone(), context.transport, ack),
        );
        self.set_expiry(&id, Some(now + self.config.max_interval));
        self.events.push_back(Event::SessionOpened {
            client_id: id.clone(),
            user,
            transport: context.transport,
        });

        let mut reply = Message::on(META_HANDSHAKE);
        reply.id = message.id;
        reply.version = Some("1.0".into());
        reply.minimum_version = Some("1.0".into());
        reply.supported_connection_types =
            Some(supported.iter().map(|t| (*t).to_owned()).collect());
        reply.client_id = Some(id.to_string());
        reply.successful = Some(true);
        reply.advice = Some(self.advice());
        if ack {
            reply.set_ext_field("ack", Value::Bool(true));
        }
        out.push(&reply);
        out.session = Some(id);
    }

    fn new_client_id(&mut self) -> Option<ClientId> {
        (0..CLIENT_ID_ATTEMPTS)
            .map(|_| ClientId::from_random(self.ids.random_bytes()))
            .find(|id| !self.sessions.contains_key(id))
    }

    fn connect(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let Some(id) = self.session_for(&message, context) else {
            out.push(&error_reply(
                Some(META_CONNECT),
                message.id,
                &BayeuxError::UNKNOWN_CLIENT,
            ));
            return;
        };
        out.session = Some(id.clone());
        // The transport is what the runtime says it is; the message's
        // `connectionType` is only informative (Faye labels some long-polls
        // `cross-origin-long-polling`), so it is not checked.
        if context.transport == Transport::WebSocket && !self.config.websocket_enabled {
            out.push(&error_reply(
                Some(META_CONNECT),
                message.id,
                &BayeuxError::UNSUPPORTED_CONNECTION_TYPE,
            ));
            return;
        }

        // A new connect answers the one still held (the client gave up on
        // it, e.g. a proxy cut the long-poll).
        if let Some((hold_id, replies)) = self.release_hold(&id, now) {
            if out.held.as_ref().map(|h| h.hold_id) == Some(hold_id) {
                out.replies.extend(replies);
                out.held = None;
            } else {
                self.holds.stash_released(now, &id, hold_id, replies);
                self.wake(&id);
            }
        }

        let session = self.sessions.get_mut(&id).expect("looked up above");
        session.transport = context.transport;
        if session.queue.ack_enabled() {
            if let Some(batch) = message.ext_field("ack").and_then(Value::as_u64) {
                session.queue.acknowledge(batch);
            }
        }
        let first = !session.connected;
        session.connected = true;
        // A client may ask for a shorter hold (CometD sends timeout 0 to get
        // an immediate answer); never a longer one.
        let client_timeout = message
            .advice
            .as_ref()
            .and_then(|a| a.timeout)
            .map(Duration::from_millis);
        let timeout = cmp::min(self.config.timeout, client_timeout.unwrap_or(Duration::MAX));
        let has_deliveries = session.delivers_with_connect() && !session.queue.is_empty();

        if first || timeout.is_zero() || has_deliveries {
            let replies = self.connect_reply(&id, now, message.id);
            out.replies.extend(replies);
            return;
        }
        let deadline = now + timeout;
        let hold_id = self.holds.hold(&id, message.id, deadline);
        // A session holding a connect is alive.
        self.set_expiry(&id, None);
        out.held = Some(HeldConnect {
            client_id: id,
            hold_id,
            deadline,
        });
    }

    /// The deliveries and the successful reply of a `/meta/connect`; restarts
    /// the session's expiry clock.
    fn connect_reply(
        &mut self,
        id: &ClientId,
        now: Instant,
        message_id: Option<Value>,
    ) -> Vec<Outbound> {
        let session = self
            .sessions
            .get_mut(id)
            .expect("connect_reply of a live session");
        let (mut messages, batch) = session.queue.take_for_connect();
        // One per long-polling delivery: written directly, with the advice
        // encoded once (the configuration does not change).
        messages.push(Outbound::connect_reply(
            message_id.as_ref(),
            id,
            &self.connect_advice,
            batch,
        ));
        let expiry = now + self.config.interval + self.config.max_interval;
        self.set_expiry(id, Some(expiry));
        messages
    }

    /// Answers the session's held connect, if any.
    fn release_hold(&mut self, id: &ClientId, now: Instant) -> Option<(HoldId, Vec<Outbound>)> {
        let held = self.holds.release(id)?;
        let mut replies = held.pending_replies;
        replies.extend(self.connect_reply(id, now, held.message_id));
        Some((held.hold_id, replies))
    }

    fn subscribe(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let fail = |out: &mut Outcome, error: &BayeuxError| {
            let mut reply = error_reply(Some(META_SUBSCRIBE), message.id.clone(), error);
            reply.subscription = message.subscription.clone();
            out.push(&reply);
        };
        let Some(id) = self.session_for(&message, context) else {
            return fail(out, &BayeuxError::UNKNOWN_CLIENT);
        };
        out.session = Some(id.clone());
        let patterns = match parse_subscription(&message) {
            Ok(patterns) => patterns,
            Err(error) => return fail(out, &error),
        };

        // Check everything before changing anything: a subscribe message is
        // all-or-nothing.
        for pattern in &patterns {
            if pattern.is_meta() {
                return fail(out, &BayeuxError::META_SUBSCRIBE);
            }
            if pattern.is_service() {
                return fail(out, &BayeuxError::SERVICE_SUBSCRIBE);
            }
            let policy = self.policy_for_pattern(pattern);
            let session = &self.sessions[&id];
            if !policy.subscribe.allows(session.user()) {
                return fail(out, &BayeuxError::SUBSCRIBE_DENIED);
            }
            if let Err(error) = self
                .authorizer
                .subscribe(&SessionInfo::of(session), pattern)
            {
                return fail(out, &error);
            }
        }
        let session = self.sessions.get_mut(&id).expect("looked up above");
        let mut new: Vec<&ChannelPattern> = patterns
            .iter()
            .filter(|p| !session.subscriptions.contains(*p))
            .collect();
        new.sort();
        new.dedup();
        if session.subscriptions.len() + new.len() > self.config.limits.max_subscriptions_per_client
        {
            return fail(out, &BayeuxError::TOO_MANY_SUBSCRIPTIONS);
        }

        let mut joined = Vec::new();
        for pattern in new {
            session.subscriptions.insert(pattern.clone());
            self.subscriptions.subscribe(pattern, &id);
            if let Some(channel) = presence_tracked(pattern) {
                joined.push(channel);
            }
        }

        let mut reply = Message::on(META_SUBSCRIBE);
        reply.id = message.id.clone();
        reply.client_id = Some(id.to_string());
        reply.subscription = message.subscription.clone();
        reply.successful = Some(true);

        // Replay: `ext.replay: <offset>` asks for the kept messages after
        // that offset on every channel the subscription matches.
        if let Some(after) = message.ext_field("replay").and_then(Value::as_u64) {
            let mut count = 0;
            let mut complete = true;
            for pattern in &patterns {
                let room = session.queue.room(self.config.limits.max_queued_messages);
                let replay = self.history.replay(pattern, after, room);
                complete &= replay.complete && keeps_history(&self.policies, &self.config, pattern);
                count += replay.messages.len();
                for replayed in replay.messages {
                    session.queue.push(replayed);
                }
            }
            reply.set_ext_field(
                "replay",
                json!({"after": after, "count": count, "complete": complete}),
            );
            if count > 0 && (!session.delivers_with_connect() || self.holds.is_held(&id)) {
                self.wake(&id);
            }
        }

        // Subscribing to a presence channel returns the current members.
        if let Some(channel) = patterns.iter().find_map(presence_subject) {
            let members = self.presence(&channel);
            let complete = members.len() <= PRESENCE_SNAPSHOT_LIMIT;
            let listed: Vec<Value> = members
                .iter()
                .take(PRESENCE_SNAPSHOT_LIMIT)
                .map(|m| json!({"clientId": m.client_id.as_str(), "user": m.user.as_deref()}))
                .collect();
            reply.set_ext_field(
                "presence",
                json!({"channel": channel.as_str(), "members": listed, "complete": complete}),
            );
        }
        out.push(&reply);

        let user = self.sessions[&id].user.clone();
        for channel in joined {
            self.announce_presence(now, &channel, &id, user.clone(), PresenceAction::Join);
        }
    }

    fn unsubscribe(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let fail = |out: &mut Outcome, error: &BayeuxError| {
            let mut reply = error_reply(Some(META_UNSUBSCRIBE), message.id.clone(), error);
            reply.subscription = message.subscription.clone();
            out.push(&reply);
        };
        let Some(id) = self.session_for(&message, context) else {
            return fail(out, &BayeuxError::UNKNOWN_CLIENT);
        };
        out.session = Some(id.clone());
        let patterns = match parse_subscription(&message) {
            Ok(patterns) => patterns,
            Err(error) => return fail(out, &error),
        };
        let session = self.sessions.get_mut(&id).expect("looked up above");
        let mut left = Vec::new();
        for pattern in &patterns {
            // Unsubscribing from something not subscribed succeeds: the
            // client's wish (not subscribed) holds.
            if session.subscriptions.remove(pattern) {
                self.subscriptions.unsubscribe(pattern, &id);
                if let Some(channel) = presence_tracked(pattern) {
                    left.push(channel);
                }
            }
        }
        let user = session.user.clone();
        let mut reply = Message::on(META_UNSUBSCRIBE);
        reply.id = message.id;
        reply.client_id = Some(id.to_string());
        reply.subscription = message.subscription;
        reply.successful = Some(true);
        out.push(&reply);
        for channel in left {
            self.announce_presence(now, &channel, &id, user.clone(), PresenceAction::Leave);
        }
    }

    fn client_disconnect(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let Some(id) = self.session_for(&message, context) else {
            out.push(&error_reply(
                Some(META_DISCONNECT),
                message.id,
                &BayeuxError::UNKNOWN_CLIENT,
            ));
            return;
        };
        self.remove_session(&id, CloseReason::Disconnected, now);
        let mut reply = Message::on(META_DISCONNECT);
        reply.id = message.id;
        reply.client_id = Some(id.to_string());
        reply.successful = Some(true);
        out.push(&reply);
        if out.session.as_ref() == Some(&id) {
            out.session = None;
        }
    }

    fn client_publish(
        &mut self,
        now: Instant,
        context: &RequestContext,
        channel_text: &str,
        message: Message,
        out: &mut Outcome,
    ) {
        let fail = |out: &mut Outcome, error: &BayeuxError| {
            out.push(&error_reply(Some(channel_text), message.id.clone(), error));
        };
        let pattern = match ChannelPattern::parse(channel_text) {
            Ok(pattern) => pattern,
            Err(error) => return fail(out, &BayeuxError::invalid_channel(error)),
        };
        if pattern.is_meta() {
            return fail(out, &BayeuxError::UNKNOWN_META_CHANNEL);
        }
        let Some(id) = self.session_for(&message, context) else {
            return fail(out, &BayeuxError::UNKNOWN_CLIENT);
        };
        out.session = Some(id.clone());
        let Some(channel) = pattern.as_name() else {
            return fail(out, &BayeuxError::PUBLISH_TO_WILDCARD);
        };
        let Some(data) = &message.data else {
            return fail(out, &BayeuxError::MISSING_DATA);
        };
        // Presence channels speak for the server only.
        if is_presence_channel(&channel) {
            return fail(out, &BayeuxError::PUBLISH_DENIED);
        }
        let policy = self.policy_for(&channel);
        let session = &self.sessions[&id];
        let subscriptions = &self.subscriptions;
        if !policy.publish.allows(session.user(), || {
            subscriptions.is_subscribed(&channel, &id)
        }) {
            return fail(out, &BayeuxError::PUBLISH_DENIED);
        }
        if let Err(error) = self
            .authorizer
            .publish(&SessionInfo::of(session), &channel, data)
        {
            return fail(out, &error);
        }

        if channel.is_service() {
            if self.services.matching(&channel).next().is_none() {
                return fail(out, &BayeuxError::NO_SERVICE_HANDLER);
            }
            self.events.push_back(Event::Service(ServiceRequest {
                client_id: id.clone(),
                user: session.user.clone(),
                channel: channel.clone(),
                data: data.clone(),
                id: message.id.clone(),
            }));
        } else {
            let data = data.clone();
            self.broadcast(now, &channel, data, Some(&id), policy);
        }
        // The acknowledgement: channel, successful, id; never the data.
        let mut reply = Message::on(channel_text);
        reply.id = message.id;
        reply.successful = Some(true);
        out.push(&reply);
    }

    // --- delivery ---------------------------------------------------------

    /// Records `data` on `channel` in history and queues it for every
    /// subscriber (but the publisher, unless the policy says otherwise).
    fn broadcast(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        data: Value,
        publisher: Option<&ClientId>,
        policy: ChannelPolicy,
    ) -> Published {
        // Only messages meant for history get an offset: a client replays
        // from offsets it has seen.
        let offset = policy.history.then(|| self.history.allocate_offset());
        let mut message = Message::on(channel.as_str());
        message.data = Some(data);
        if let Some(offset) = offset {
            message.set_ext_field("offset", offset.into());
        }
        let outbound = Outbound::new(&message);
        if let Some(offset) = offset {
            self.history.record(now, channel, offset, outbound.clone());
        }

        // The subscriber sets of the patterns matching the channel, in
        // order: the channel itself, its `/*`, the `/**` of each ancestor. A
        // client in several of them gets the message once, through the first
        // (an exact subscription before a wildcard one): a client is skipped
        // if an earlier set holds it. Only the later sets' members are
        // looked up, so the usual case (one exact set, maybe a few wildcard
        // observers) costs no lookup per recipient and allocates nothing.
        let sets: Vec<(MatchKind, &IdSet<ClientId>)> =
            self.subscriptions.matching_sets(channel).collect();
        let mut recipients = 0;
        let mut queue = Enqueue {
            sessions: &mut self.sessions,
            holds: &self.holds,
            events: &mut self.events,
            removals: &mut self.removals,
            max_queued: self.config.limits.max_queued_messages,
        };
        for (i, &(kind, clients)) in sets.iter().enumerate() {
            for client in clients {
                if !policy.deliver_to_publisher && Some(client) == publisher {
                    continue;
                }
                if sets[..i]
                    .iter()
                    .any(|(_, earlier)| earlier.contains(client))
                {
                    continue;
                }
                // A wildcard subscription was checked against the pattern's
                // policy; this channel's own may be stricter.
                if kind == MatchKind::Wildcard {
                    let user = queue.sessions.get(client).and_then(Session::user);
                    if !policy.subscribe.allows(user) {
                        continue;
                    }
                }
                queue.push(client, &outbound);
                recipients += 1;
            }
        }
        Published { offset, recipients }
    }

    /// Queues `message` for `client`, waking the driver if it can be sent
    /// now; schedules the session's removal if its queue is full.
    fn enqueue(&mut self, client: &ClientId, message: Outbound) {
        Enqueue {
            sessions: &mut self.sessions,
            holds: &self.holds,
            events: &mut self.events,
            removals: &mut self.removals,
            max_queued: self.config.limits.max_queued_messages,
        }
        .push(client, &message);
    }

    /// Emits one `Wake` for `client` until the driver polls it.
    fn wake(&mut self, client: &ClientId) {
        match self.sessions.get_mut(client) {
            Some(session) if session.wake_pending => {}
            Some(session) => {
                session.wake_pending = true;
                self.events.push_back(Event::Wake(client.clone()));
            }
            None => self.events.push_back(Event::Wake(client.clone())),
        }
    }

    fn announce_presence(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        client: &ClientId,
        user: Option<Arc<str>>,
        action: PresenceAction,
    ) {
        let presence_channel = ChannelName::from_trusted(format!("{PRESENCE_PREFIX}{channel}"));
        let data = json!({
            "action": action.as_str(),
            "channel": channel.as_str(),
            "clientId": client.as_str(),
            "user": user.as_deref(),
        });
        // Presence is state, not a stream: a returning watcher gets the
        // current members in its subscribe reply, so joins and leaves are
        // not kept for replay (they would crowd real messages out of history).
        let policy = ChannelPolicy {
            history: false,
            ..self.policy_for(&presence_channel)
        };
        self.broadcast(now, &presence_channel, data, None, policy);
        self.events.push_back(Event::Presence(PresenceChange {
            channel: channel.clone(),
            client_id: client.clone(),
            user,
            action,
        }));
    }

    // --- the driver's calls ------------------------------------------------

    /// The response of a held connect, if it is ready: something to deliver
    /// (long-polling, or with the ack extension), its deadline reached, or
    /// answered already (superseded by a newer connect, session ended).
    /// `Some` is the complete response; the hold is then finished. `None`:
    /// keep waiting (also for an unknown or finished `hold_id`).
    pub fn poll_connect(&mut self, hold_id: HoldId, now: Instant) -> Option<Vec<Outbound>> {
        if let Some((client, replies)) = self.holds.take_released(hold_id) {
            if let Some(session) = self.sessions.get_mut(&client) {
                session.wake_pending = false;
            }
            return Some(replies);
        }
        let id = self.holds.client_of(hold_id)?.clone();
        let session = self.sessions.get_mut(&id)?;
        session.wake_pending = false;
        let deadline = self.holds.get(&id)?.deadline;
        let ready =
            now >= deadline || (session.delivers_with_connect() && !session.queue.is_empty());
        if !ready {
            return None;
        }
        self.release_hold(&id, now).map(|(_, replies)| replies)
    }

    /// The request or socket of a held connect is gone. Its reply is dropped
    /// (queued deliveries stay queued) and the session expires after
    /// `maxInterval` unless the client connects again.
    pub fn cancel_connect(&mut self, hold_id: HoldId, now: Instant) {
        let Some(id) = self.holds.cancel(hold_id) else {
            return;
        };
        self.set_expiry(&id, Some(now + self.config.max_interval));
    }

    /// Deliveries to push to a WebSocket client now. Empty for sessions whose
    /// deliveries ride on connect replies (long-polling, ack extension).
    pub fn take_deliveries(&mut self, client: &ClientId) -> Vec<Outbound> {
        let Some(session) = self.sessions.get_mut(client) else {
            return Vec::new();
        };
        session.wake_pending = false;
        if session.delivers_with_connect() {
            return Vec::new();
        }
        session.queue.drain()
    }

    /// Advances time: answers held connects at their deadline, expires
    /// sessions without a connect for `maxInterval` (their subscriptions go,
    /// presence leaves are published), drops history past its window.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.holds.first_due(now).cloned() {
            let (hold_id, replies) = self.release_hold(&id, now).expect("a due connect is held");
            self.holds.stash_released(now, &id, hold_id, replies);
            self.wake(&id);
        }
        while let Some((expiry, id)) = self.expiries.first().cloned() {
            if expiry > now {
                break;
            }
            self.expiries.remove(&(expiry, id.clone()));
            if let Some(session) = self.sessions.get_mut(&id) {
                session.expires_at = None;
            }
            self.removals.push((id, CloseReason::Expired));
        }
        self.process_removals(now);
        self.history.expire(now);
        self.holds.drop_uncollected(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.holds.next_deadline(),
            self.expiries.first().map(|(t, _)| *t),
            self.history.next_expiry(),
            self.holds.next_uncollected_drop(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // --- server-side API -------------------------------------------------

    /// Broadcasts `data` on `channel` from the server: no policy applies, the
    /// message is kept in history and queued for every subscriber.
    pub fn publish(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        data: Value,
    ) -> Result<Published, BayeuxError> {
        if channel.is_meta() {
            return Err(BayeuxError::META_PUBLISH);
        }
        if channel.is_service() {
            return Err(BayeuxError::SERVICE_BROADCAST);
        }
        let policy = self.policy_for(channel);
        let published = self.broadcast(now, channel, data, None, policy);
        self.process_removals(now);
        Ok(published)
    }

    /// Sends `data` on `channel` to one client only (e.g. a service's answer),
    /// without history.
    pub fn deliver(
        &mut self,
        now: Instant,
        client: &ClientId,
        channel: &ChannelName,
        data: Value,
    ) -> Result<(), BayeuxError> {
        if channel.is_meta() {
            return Err(BayeuxError::META_PUBLISH);
        }
        if !self.sessions.contains_key(client) {
            return Err(BayeuxError::UNKNOWN_CLIENT);
        }
        let mut message = Message::on(channel.as_str());
        message.data = Some(data);
        self.enqueue(client, Outbound::new(&message));
        self.process_removals(now);
        Ok(())
    }

    /// Ends a session from the server side. A held connect is answered with
    /// advice `reconnect: none`. `false` if there was no such session.
    pub fn disconnect(&mut self, client: &ClientId, now: Instant) -> bool {
        let existed = self.sessions.contains_key(client);
        self.remove_session(client, CloseReason::ServerDisconnect, now);
        self.process_removals(now);
        existed
    }

    /// The clients subscribed to exactly `channel` (wildcard subscribers are
    /// observers, not members).
    pub fn presence(&self, channel: &ChannelName) -> Vec<Member> {
        let pattern = ChannelPattern::from(channel.clone());
        self.subscriptions
            .subscribers(&pattern)
            .map(|client| Member {
                client_id: client.clone(),
                user: self.sessions.get(client).and_then(|s| s.user.clone()),
            })
            .collect()
    }

    /// Whether `client` is a live session.
    pub fn has_session(&self, client: &ClientId) -> bool {
        self.sessions.contains_key(client)
    }

    /// A session's user and transport.
    pub fn session_info(&self, client: &ClientId) -> Option<SessionInfo<'_>> {
        self.sessions.get(client).map(SessionInfo::of)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            sessions: self.sessions.len(),
            held_connects: self.holds.len(),
            subscription_patterns: self.subscriptions.pattern_count(),
            history_messages: self.history.len(),
            history_bytes: self.history.bytes(),
            history_channels: self.history.channel_count(),
            ..Stats::default()
        };
        for session in self.sessions.values() {
            match session.transport {
                Transport::WebSocket => stats.websocket_sessions += 1,
                Transport::LongPolling => stats.long_polling_sessions += 1,
            }
            stats.queued_messages += session.queue.len();
        }
        stats
    }

    // --- internals ---------------------------------------------------------

    fn policy_for(&self, channel: &ChannelName) -> ChannelPolicy {
        match self.policies.matching(channel).next() {
            Some((_, policy)) => *policy,
            None if channel.is_service() => ChannelPolicy::SERVICE,
            None => self.config.default_policy,
        }
    }

    fn policy_for_pattern(&self, pattern: &ChannelPattern) -> ChannelPolicy {
        match self.policies.most_specific_for(pattern) {
            Some(policy) => *policy,
            None if pattern.is_service() => ChannelPolicy::SERVICE,
            None => self.config.default_policy,
        }
    }

    fn set_expiry(&mut self, id: &ClientId, expires_at: Option<Instant>) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        if let Some(old) = session.expires_at.take() {
            self.expiries.remove(&(old, id.clone()));
        }
        if let Some(new) = expires_at {
            self.expiries.insert((new, id.clone()));
        }
        session.expires_at = expires_at;
    }

    fn process_removals(&mut self, now: Instant) {
        // Removing a session publishes presence leaves, which may overflow
        // further queues: loop until quiet. Each session goes once.
        while let Some((id, reason)) = self.removals.pop() {
            self.remove_session(&id, reason, now);
        }
    }

    fn remove_session(&mut self, id: &ClientId, reason: CloseReason, now: Instant) {
        let Some(mut session) = self.sessions.remove(id) else {
            return;
        };
        if let Some(expiry) = session.expires_at {
            self.expiries.remove(&(expiry, id.clone()));
        }
        let mut left = Vec::new();
        for pattern in session.subscriptions.drain() {
            self.subscriptions.unsubscribe(&pattern, id);
            if let Some(channel) = presence_tracked(&pattern) {
                left.push(channel);
            }
        }
        if let Some(held) = self.holds.release(id) {
            let reply = match reason {
                // The client ended it, or the server did on purpose: stop.
                CloseReason::Disconnected | CloseReason::ServerDisconnect => {
                    let mut reply = Message::on(META_CONNECT);
                    reply.id = held.message_id;
                    reply.client_id = Some(id.to_string());
                    reply.successful = Some(true);
                    reply.advice = Some(Advice {
                        reconnect: Some(Reconnect::None),
                        ..Advice::default()
                    });
                    reply
                }
                // The client may come back: handshake, resubscribe, replay.
                CloseReason::Expired | CloseReason::QueueOverflow => error_reply(
                    Some(META_CONNECT),
                    held.message_id,
                    &BayeuxError::UNKNOWN_CLIENT,
                ),
            };
            let mut replies = held.pending_replies;
            replies.push(Outbound::new(&reply));
            self.holds.stash_released(now, id, held.hold_id, replies);
            self.events.push_back(Event::Wake(id.clone()));
        }
        self.events.push_back(Event::SessionClosed {
            client_id: id.clone(),
            user: session.user.clone(),
            reason,
        });
        left.sort();
        for channel in left {
            self.announce_presence(
                now,
                &channel,
                id,
                session.user.clone(),
                PresenceAction::Leave,
            );
        }
    }
}

/// The part of the engine a delivery changes, borrowed apart from the
/// subscriptions so that a broadcast queues while it walks them.
struct Enqueue<'a> {
    sessions: &'a mut IdMap<ClientId, Session>,
    holds: &'a Holds,
    events: &'a mut VecDeque<Event>,
    removals: &'a mut Vec<(ClientId, CloseReason)>,
    max_queued: usize,
}

impl Enqueue<'_> {
    /// Queues `message` for `client` and emits one `Wake` until the driver
    /// polls (if the message can be sent now); schedules the session's
    /// removal if its queue is full.
    fn push(&mut self, client: &ClientId, message: &Outbound) {
        let Some(session) = self.sessions.get_mut(client) else {
            return;
        };
        if session.queue.len() >= self.max_queued {
            if !session.closing {
                session.closing = true;
                self.removals
                    .push((client.clone(), CloseReason::QueueOverflow));
            }
            return;
        }
        session.queue.push(message.clone());
        // `wake_pending` first: in a burst, the hold is not looked up again.
        if !session.wake_pending && (!session.delivers_with_connect() || self.holds.is_held(client))
        {
            session.wake_pending = true;
            self.events.push_back(Event::Wake(client.clone()));
        }
    }
}

/// The patterns of a subscribe or unsubscribe message.
fn parse_subscription(message: &Message) -> Result<Vec<ChannelPattern>, BayeuxError> {
    let Some(subscription) = &message.subscription else {
        return Err(BayeuxError::MISSING_SUBSCRIPTION);
    };
    let texts = subscription.patterns();
    if texts.is_empty() {
        return Err(BayeuxError::MISSING_SUBSCRIPTION);
    }
    texts
        .iter()
        .map(|text| ChannelPattern::parse(text).map_err(BayeuxError::invalid_subscription))
        .collect()
}

/// Whether the channels of `pattern` keep history (by the policy of the
/// pattern; presence channels never do). A free function so that it can be
/// called while a session is borrowed.
fn keeps_history(
    policies: &PatternMap<ChannelPolicy>,
    config: &BusConfig,
    pattern: &ChannelPattern,
) -> bool {
    if presence_subject(pattern).is_some() {
        return false;
    }
    match policies.most_specific_for(pattern) {
        Some(policy) => policy.history,
        None if pattern.is_service() => ChannelPolicy::SERVICE.history,
        None => config.default_policy.history,
    }
}

fn is_presence_channel(channel: &ChannelName) -> bool {
    channel.first_segment() == &PRESENCE_PREFIX[1..]
}

/// The channel whose presence a subscription to `pattern` joins: exact
/// broadcast channels only (wildcard subscribers observe, they are not
/// present; presence channels have no presence of their own).
fn presence_tracked(pattern: &ChannelPattern) -> Option<ChannelName> {
    let channel = pattern.as_name()?;
    (channel.is_broadcast() && !is_presence_channel(&channel)).then_some(channel)
}

/// For a subscription to `/presence/chat/room`, the channel `/chat/room`.
fn presence_subject(pattern: &ChannelPattern) -> Option<ChannelName> {
    let channel = pattern.as_name()?;
    let subject = channel.as_str().strip_prefix(PRESENCE_PREFIX)?;
    if !subject.starts_with('/') {
        return None;
    }
    ChannelName::parse(subject).ok()
}

/// The advice of handshake and connect replies: retry after `interval`.
fn connect_advice(config: &BusConfig) -> Advice {
    Advice {
        reconnect: Some(Reconnect::Retry),
        interval: Some(millis(config.interval)),
        timeout: Some(millis(config.timeout)),
        max_interval: Some(millis(config.max_interval)),
        ..Advice::default()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
