//! The bus: the [`Engine`], and the types it takes and returns.
//!
//! The engine's state lives on [`Engine`]; its behaviour is split by
//! concern, each submodule adding methods to it:
//!
//! | module | concern |
//! |---|---|
//! | `request` | a batch in, its replies out; dispatch by channel |
//! | `lifecycle` | `/meta/handshake`, `/meta/disconnect`, removing a session |
//! | `connect` | `/meta/connect` answered at once or held; polling and cancelling holds |
//! | `holds` | `Holds`: which client holds which connect, deadlines, uncollected responses |
//! | `subscribe` | `/meta/subscribe` (with replay from history), `/meta/unsubscribe` |
//! | `publish` | client and server publishes, fan-out to subscribers, per-client queues |
//! | `presence` | joins and leaves on `/presence/…`, member lists |
//! | `cluster` | several nodes: broadcasts and interest out, other nodes' messages in |
//! | `remote_presence` | several nodes: the presence members other nodes announced |
//! | `timers` | held connects' deadlines, session expiry, history's window |
//! | `authorizer`, `event` | the [`Authorizer`] hook; the [`Event`]s the driver drains |

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use crate::channel::{ChannelName, ChannelPattern, PatternMap, Subscriptions};
use crate::config::{BusConfig, ChannelPolicy};
use crate::history::History;
use crate::id::{ClientId, IdMap, RandomSource};
use crate::session::{Session, Transport};

mod authorizer;
mod cluster;
mod connect;
mod event;
mod holds;
mod lifecycle;
mod presence;
mod publish;
mod remote_presence;
mod request;
mod shared;
mod subscribe;
mod timers;

pub use authorizer::{AllowAll, Authorizer, HandshakeRequest, SessionInfo};
pub use cluster::{ClusterPublish, InterestChange};
use connect::connect_advice;
pub use event::{CloseReason, Event, ServiceRequest};
pub use holds::HoldId;
use holds::Holds;
pub use presence::{
    Member, PRESENCE_PREFIX, PRESENCE_SNAPSHOT_LIMIT, PresenceAction, PresenceChange,
};
pub use publish::Published;
pub use remote_presence::Origin;
pub use request::{HeldConnect, Outcome, RequestContext};
pub use shared::{FetchedHistory, HistoryRequest, MAX_PARKED_SUBSCRIBES, SharedHistory};

const META_HANDSHAKE: &str = "/meta/handshake";
const META_CONNECT: &str = "/meta/connect";
const META_SUBSCRIBE: &str = "/meta/subscribe";
const META_UNSUBSCRIBE: &str = "/meta/unsubscribe";
const META_DISCONNECT: &str = "/meta/disconnect";

/// Counters for metrics and the admin page: a snapshot taken by
/// [`Engine::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions (handshaken, not yet disconnected or expired).
    pub sessions: usize,
    /// Sessions whose latest `/meta/connect` (or handshake) came over
    /// WebSocket.
    pub websocket_sessions: usize,
    /// Sessions whose latest `/meta/connect` (or handshake) came over
    /// long-polling; with `websocket_sessions`, sums to `sessions`.
    pub long_polling_sessions: usize,
    /// `/meta/connect`s held now, at most one per session.
    pub held_connects: usize,
    /// Distinct patterns with at least one subscriber (a pattern subscribed
    /// by many clients counts once).
    pub subscription_patterns: usize,
    /// Messages waiting in sessions' queues, over all sessions, including
    /// those sent but not yet acknowledged under the `ack` extension.
    pub queued_messages: usize,
    /// Messages kept for replay, over all channels.
    pub history_messages: usize,
    /// Bytes charged for the messages kept for replay: their JSON plus a
    /// fixed overhead per message (what [`HistoryConfig::max_bytes`]
    /// bounds).
    ///
    /// [`HistoryConfig::max_bytes`]: crate::HistoryConfig::max_bytes
    pub history_bytes: usize,
    /// Channels with at least one message kept for replay.
    pub history_channels: usize,
    /// Messages published since the engine started: client publishes
    /// and the server-side [`Engine::publish`] (not `/service` requests,
    /// not [`Engine::deliver`], not presence announcements).
    pub publishes: u64,
    /// Messages queued for a session since the engine started: one per
    /// recipient of a broadcast, one per [`Engine::deliver`] (replays are
    /// counted apart, in `replayed`).
    pub deliveries: u64,
    /// Messages queued again from history for a subscribe's `ext.replay`
    /// since the engine started.
    pub replayed: u64,
    /// Messages refused with `429::Too many messages` (a session over
    /// `Limits::messages_per_second`) since the engine started.
    pub rate_limited: u64,
    /// Messages from other nodes delivered here ([`Engine::receive`])
    /// since the engine started; their recipients count in `deliveries`.
    pub received: u64,
}

/// The cumulative part of [`Stats`], kept as the engine works.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    publishes: u64,
    deliveries: u64,
    replayed: u64,
    rate_limited: u64,
    received: u64,
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
///    call [`handle_body`](Self::handle_body) (or [`parse_batch`](crate::parse_batch) and
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
/// 6. **Cluster** (several nodes, one bus; only when
///    [`set_cluster_events`](Self::set_cluster_events) is on): hand each
///    [`Event::Broadcast`] to the other nodes, and each
///    [`Event::Interest`] to whatever decides which nodes hear what, in
///    the order drained; [`interest`](Self::interest) is the whole set.
///    A message from another node goes to [`receive`](Self::receive), then
///    drain events as after any call. If the transport between nodes keeps
///    each origin's order, one publisher's messages reach every subscriber,
///    on every node, in publish order.
///
/// No clock is read and no randomness drawn here: time comes in as
/// `Instant` arguments, client ids from the [`RandomSource`].
pub struct Engine {
    config: BusConfig,
    ids: Box<dyn RandomSource>,
    /// The node whose id prefixes new client ids, in a cluster
    /// ([`set_client_id_owner`](Self::set_client_id_owner)).
    id_owner: Option<u16>,
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
    /// Publishes, deliveries and replays so far (for [`Stats`]).
    counters: Counters,
    /// Whether [`Event::Broadcast`] and [`Event::Interest`] are emitted.
    cluster_events: bool,
    /// Other nodes' presence members (cluster mode).
    remote_presence: remote_presence::RemotePresence,
    /// Whether offsets of channels with history come from a shared
    /// history, and whether it is reachable.
    shared_history: SharedHistory,
    /// Subscribes waiting for the shared history to answer
    /// [`Event::HistoryWanted`].
    parked: shared::Parked,
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
            id_owner: None,
            authorizer: Box::new(AllowAll),
            sessions: IdMap::default(),
            subscriptions: Subscriptions::default(),
            policies,
            services: PatternMap::default(),
            expiries: BTreeSet::new(),
            removals: Vec::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            cluster_events: false,
            remote_presence: Default::default(),
            shared_history: SharedHistory::Off,
            parked: shared::Parked::default(),
        }
    }

    /// From now on, client ids name node `node` as their owner
    /// ([`ClientId::from_random_on`]): in a cluster, any node can then send
    /// a client's requests to the node that holds its session.
    pub fn set_client_id_owner(&mut self, node: u16) {
        self.id_owner = Some(node);
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

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether `client` is a live session.
    pub fn has_session(&self, client: &ClientId) -> bool {
        self.sessions.contains_key(client)
    }

    /// A session's user and transport.
    pub fn session_info(&self, client: &ClientId) -> Option<SessionInfo<'_>> {
        self.sessions.get(client).map(SessionInfo::of)
    }

    /// Messages refused for a session's message rate so far (what
    /// [`Stats::rate_limited`] says, without walking the sessions: cheap
    /// enough to read around every batch).
    pub fn rate_limited(&self) -> u64 {
        self.counters.rate_limited
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
            publishes: self.counters.publishes,
            deliveries: self.counters.deliveries,
            replayed: self.counters.replayed,
            rate_limited: self.counters.rate_limited,
            received: self.counters.received,
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

    /// Every channel pattern with subscribers (`/chat/room`, `/chat/*`,
    /// …) and its number of subscribers, sorted by pattern: for operators.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut channels: Vec<(String, usize)> = self.subscriptions.patterns().collect();
        channels.sort_unstable();
        channels
    }

    /// The policy of `channel`. A presence channel's subscribe rule is its
    /// subject's (see [`BusConfig::policies`]).
    pub(super) fn policy_for(&self, channel: &ChannelName) -> ChannelPolicy {
        if let Some(subject) = presence::presence_subject(&ChannelPattern::from(channel.clone())) {
            return ChannelPolicy {
                subscribe: self.policy_for(&subject).subscribe,
                ..ChannelPolicy::DEFAULT
            };
        }
        match self.policies.matching(channel).next() {
            Some((_, policy)) => *policy,
            None if channel.is_service() => ChannelPolicy::SERVICE,
            None => self.config.default_policy,
        }
    }

    /// Whether `session` may subscribe to `pattern` by the policies (a
    /// presence pattern by its subject's rule).
    pub(super) fn may_subscribe(&self, session: &Session, pattern: &ChannelPattern) -> bool {
        match presence::presence_subject_pattern(pattern) {
            Some(subject) => self
                .policy_for_pattern(&subject)
                .subscribe
                .allows_pattern(session, &subject),
            None => self
                .policy_for_pattern(pattern)
                .subscribe
                .allows_pattern(session, pattern),
        }
    }

    pub(super) fn policy_for_pattern(&self, pattern: &ChannelPattern) -> ChannelPolicy {
        match self.policies.most_specific_for(pattern) {
            Some(policy) => *policy,
            None if pattern.is_service() => ChannelPolicy::SERVICE,
            None => self.config.default_policy,
        }
    }
}
