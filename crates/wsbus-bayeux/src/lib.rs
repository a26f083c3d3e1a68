//! # wsbus-bayeux
//!
//! The Bayeux 1.0 protocol (CometD's) of the wsbus message bus, without I/O:
//! sessions, meta channels, subscriptions with wildcards, publishing with
//! per-channel policies, presence, history with replay, and CometD's `ack`
//! extension. Unmodified CometD and Faye clients talk to it through the
//! runtime's `websocket` and `long-polling` transports.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: request
//! bodies and WebSocket texts go in with the current `Instant`, replies and
//! [`Event`]s come out, and client ids are made from a [`RandomSource`]. The
//! [`Engine`] docs state the driving contract; in short:
//!
//! ```text
//! long-polling POST /amb          WebSocket text message
//!   outcome = engine.handle_body(now, ctx, body)
//!   send outcome.reply_json() if Some
//!   if outcome.held: LP keeps the request open; WS remembers the HoldId
//! on Event::Wake(client):  engine.poll_connect(hold, now) → Some(response)
//!                          (WS also: engine.take_deliveries(client))
//! at engine.next_timeout(): engine.handle_timeout(now)
//! request / socket gone:    engine.cancel_connect(hold, now)
//! ```
//!
//! ## Channels
//!
//! Names are validated ([`ChannelName`], [`ChannelPattern`]; the character set
//! includes `+ = . -` for base64-carrying record-watcher channels). Wildcards
//! `*` (one segment) and `**` (any depth) may end a subscription or policy
//! pattern. `/meta/**` channels are the protocol: never subscribed to, never
//! relayed. `/service/**` channels go to server-side code only
//! ([`Engine::add_service`], [`Event::Service`]; in the runtime, Rust
//! handlers registered with `wsbus::bus::Bus::add_service`, which answer the
//! sender with [`Engine::deliver`] on the same channel); subscribing to them
//! is refused, and no broadcast ever reaches them. `/presence/**` channels
//! are published by the server only.
//!
//! ## Messages
//!
//! A batch is a JSON array of messages or a single object. Every message gets
//! one reply, in order, echoing its `id`; a publish is acknowledged with
//! exactly `{channel, successful, id}` (no `data`); nothing sends an empty
//! array. Errors use the Bayeux form `code::message` ([`BayeuxError`] lists
//! them all); an unknown or missing client id is `402::Unknown client` with
//! advice `{reconnect: "handshake", interval: 0}`. No cookie is needed: the
//! `clientId` identifies the session.
//!
//! ## Connect
//!
//! The first `/meta/connect` after a handshake is answered at once (so is one
//! with `advice.timeout: 0`, or one that finds deliveries waiting over
//! long-polling). Later ones are held up to `advice.timeout` (30 s). While a
//! connect is held, the client may send other batches (a publish on a second
//! long-polling request is answered at once). Over WebSocket deliveries are
//! pushed as they happen; over long-polling they release the held connect.
//! A session without a connect for `maxInterval` (10 s after the last connect
//! reply, or after the handshake) is expired: its subscriptions are removed
//! and presence leaves are published.
//!
//! ## Policies
//!
//! Per channel pattern ([`ChannelPolicy`]): who may subscribe (anyone,
//! authenticated, nobody) and who may publish (anyone, authenticated,
//! subscribers, nobody), whether the publisher gets its own message back,
//! whether history is kept. Default: anyone subscribes, only subscribers
//! publish, and the server relays to the *other* subscribers (a chat
//! client shows its own line as it sends it). An [`Authorizer`] adds rules in code (tokens in the handshake `ext`,
//! schema validation of published data).
//!
//! ## Presence
//!
//! A client with an exact (non-wildcard) subscription to a broadcast channel
//! is *present* in it. Joins and leaves of `/chat/room` are published on
//! `/presence/chat/room` as:
//!
//! ```json
//! {"channel": "/presence/chat/room",
//!  "data": {"action": "join", "channel": "/chat/room", "clientId": "2kx…", "user": "alice"},
//!  "ext": {"offset": 42}}
//! ```
//!
//! (`action` is `join` or `leave`; `user` is `null` for anonymous sessions;
//! a session that ends leaves every channel.) Subscribing to
//! `/presence/chat/room` is ordinary (governed by that channel's subscribe
//! policy) and its reply carries the current members in
//! `ext.presence = {"channel", "members": [{"clientId", "user"}…], "complete"}`
//! (at most [`PRESENCE_SNAPSHOT_LIMIT`]). Wildcard subscribers observe
//! without being present. [`Engine::presence`] gives the same list in Rust.
//!
//! ## No loss
//!
//! Two mechanisms, for the two ways a client can miss messages:
//!
//! * **Within a session** (a dropped long-poll, a WebSocket that dies and is
//!   replaced): CometD's `ack` extension. A client that handshakes with
//!   `ext: {ack: true}` gets `ext: {ack: true}` back; from then on deliveries
//!   travel only in `/meta/connect` replies, each carrying `ext.ack: <batch>`,
//!   and stay queued until a later connect acknowledges that batch with
//!   `ext.ack: <batch>`. What was not acknowledged is sent again.
//! * **Across sessions** (the session expired during an outage): history.
//!   Every broadcast message gets an offset from one bus-wide increasing
//!   counter, delivered in the message as `ext.offset`. Each channel keeps
//!   its recent messages (bounded by time window, count per channel, total
//!   count and total bytes: [`HistoryConfig`]). A client that subscribes with
//!   `ext: {replay: <last offset it saw>}` first receives the kept messages
//!   after that offset on the channels the subscription matches (a wildcard
//!   subscription replays all its channels, in offset order). The subscribe
//!   reply says `ext.replay = {"after", "count", "complete"}`; `complete:
//!   false` means something after the offset may have been dropped.
//!
//! ## Several nodes
//!
//! The engine is one node's; a cluster joins several (the runtime's
//! `wsbus::bus::BusCluster`, over Redis in `wsbus-redis`). With
//! [`Engine::set_cluster_events`] on, every message accepted for broadcast
//! here (a client's publish past its policy, [`Engine::publish`], presence
//! joins and leaves; never `/meta`, `/service` or [`Engine::deliver`]) is
//! also an [`Event::Broadcast`] for the other nodes, and a pattern's first
//! subscriber here and its last one leaving are [`Event::Interest`]s
//! ([`Engine::interest`] is the whole set). Another node's message goes to
//! [`Engine::receive`]: delivered to the subscribers here as a local
//! broadcast would be, with no publish policy (its origin checked it), and
//! never forwarded again.
//!
//! History across nodes: with [`Engine::set_shared_history`], offsets of
//! channels with history come from a history shared by all nodes (per
//! channel, with an epoch), publishes there are delivered when they come
//! back from it, and a replay this node cannot serve waits for it
//! ([`Event::HistoryWanted`], [`Engine::history_fetched`]). What a client
//! sees across nodes, during an outage and after the shared history was
//! lost is in the `shared` module of the engine (and `wsbus-redis`'s
//! `history`); in short: `ext.offset` and `ext.epoch` on deliveries,
//! `ext: {replay, epoch}` on subscribe, `ext.replay.reset: true` when the
//! position's epoch is gone.
//!
//! ## Bounded memory
//!
//! Batches are limited in bytes and messages, subscriptions per client,
//! queued messages per client (a client that falls behind is disconnected
//! and recovers through replay), sessions, and history; see [`Limits`] and
//! [`HistoryConfig`] for names, defaults and reasons.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod channel;
mod config;
mod engine;
mod error;
mod grant;
mod history;
mod id;
pub mod message;
mod rate;
mod session;

pub use channel::{ChannelError, ChannelName, ChannelPattern, Wildcard};
pub use config::{BusConfig, ChannelPolicy, HistoryConfig, Limits, PublishPolicy, SubscribePolicy};
pub use engine::{
    AllowAll, Authorizer, CloseReason, ClusterPublish, Engine, Event, FetchedHistory,
    HandshakeRequest, HeldConnect, HistoryRequest, HoldId, InterestChange, MAX_PARKED_SUBSCRIBES,
    Member, Origin, Outcome, PRESENCE_PREFIX, PRESENCE_SNAPSHOT_LIMIT, PresenceAction,
    PresenceChange, Published, RequestContext, ServiceRequest, SessionInfo, SharedHistory, Stats,
};
pub use error::BayeuxError;
pub use grant::{Credential, Grant};
pub use id::{ClientId, IdHash, IdHasher, IdMap, IdSet, RandomSource};
pub use message::{
    Advice, Batch, BatchLimits, Message, Outbound, Reconnect, encode_batch, parse_batch,
};
pub use rate::{RateLimit, TokenBucket};
pub use session::Transport;
