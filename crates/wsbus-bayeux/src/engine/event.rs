//! What the engine tells its driver.

use std::sync::Arc;

use serde_json::Value;

use crate::channel::ChannelName;
use crate::id::ClientId;
use crate::session::Transport;

use super::{ClusterPublish, HistoryRequest, InterestChange, PresenceChange};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `/meta/disconnect`.
    Disconnected,
    /// [`Engine::disconnect`](crate::Engine::disconnect).
    ServerDisconnect,
    /// No `/meta/connect` for `maxInterval`.
    Expired,
    /// More than `max_queued_messages` waited for it.
    QueueOverflow,
    /// Its access token expired (or a refresh presented a refused token).
    TokenExpired,
}

/// A message published by a client on a `/service` channel, for server-side
/// code. Reply with [`Engine::deliver`](crate::Engine::deliver) if the service answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRequest {
    /// The publishing session (the one to [`Engine::deliver`](crate::Engine::deliver) an answer to).
    pub client_id: ClientId,
    /// The publishing session's user; `None` for an anonymous session.
    pub user: Option<Arc<str>>,
    /// The claims of the session's token (its latest refresh), if it
    /// presented one.
    pub claims: Option<Arc<serde_json::Map<String, Value>>>,
    /// The `/service/…` channel published on.
    pub channel: ChannelName,
    /// The message's `data`, as sent (`null` included).
    pub data: Value,
    /// The message's `id`.
    pub id: Option<Value>,
}

/// What the engine tells its driver. Drain with [`Engine::poll_event`](crate::Engine::poll_event) after
/// every call.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Something is ready for this client: call [`Engine::poll_connect`](crate::Engine::poll_connect) for
    /// every connect you hold for it, and [`Engine::take_deliveries`](crate::Engine::take_deliveries) if it is
    /// on WebSocket.
    Wake(ClientId),
    /// A client published on a `/service` channel with a handler.
    Service(ServiceRequest),
    /// A handshake created a session.
    SessionOpened {
        /// The new session's id.
        client_id: ClientId,
        /// Its user, as decided by the [`Authorizer`](crate::Authorizer);
        /// `None` for an anonymous session.
        user: Option<Arc<str>>,
        /// The transport the handshake arrived on.
        transport: Transport,
    },
    /// A session ended; its subscriptions are gone.
    SessionClosed {
        /// The ended session's id; requests naming it now get `402`.
        client_id: ClientId,
        /// Its user; `None` for an anonymous session.
        user: Option<Arc<str>>,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A presence change, already published on its presence channel.
    Presence(PresenceChange),
    /// A message accepted for broadcast here (and queued for the
    /// subscribers here), for the subscribers on other nodes. Only with
    /// [`Engine::set_cluster_events`](crate::Engine::set_cluster_events) on.
    Broadcast(ClusterPublish),
    /// A pattern gained its first subscriber here or lost its last. Only
    /// with [`Engine::set_cluster_events`](crate::Engine::set_cluster_events)
    /// on.
    Interest(InterestChange),
    /// A subscribe asks to replay more of a channel's shared history than
    /// this node has: fetch it and answer with
    /// [`Engine::history_fetched`](crate::Engine::history_fetched). Only
    /// with [`Engine::set_shared_history`](crate::Engine::set_shared_history)
    /// up.
    HistoryWanted(HistoryRequest),
}
