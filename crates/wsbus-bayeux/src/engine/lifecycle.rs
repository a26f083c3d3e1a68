//! Sessions from handshake to removal: `/meta/handshake`, `/meta/disconnect`,
//! the server-side disconnect, and what removing a session undoes.

use std::time::Instant;

use serde_json::Value;

use crate::error::BayeuxError;
use crate::grant::Credential;
use crate::id::ClientId;
use crate::message::{Advice, Message, Outbound, Reconnect, error_reply};
use crate::session::Session;

use super::cluster::Tracked;
use super::presence::presence_tracked;
use super::{
    CloseReason, Engine, Event, HandshakeRequest, META_CONNECT, META_DISCONNECT, META_HANDSHAKE,
    Outcome, PresenceAction, RequestContext,
};

/// Attempts at drawing an unused client id before giving up (a working
/// random source collides with probability 2⁻¹²⁸).
const CLIENT_ID_ATTEMPTS: usize = 8;

impl Engine {
    pub(super) fn handshake(
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
        // A refused token is refused whatever else the request carries; the
        // same token would be refused again, so: reconnect none.
        let grant = match &context.credential {
            Some(Credential::Refused(reason)) => {
                return refuse(out, &BayeuxError::unauthorized(reason), Reconnect::None);
            }
            Some(Credential::Verified(grant)) if grant.expired(now) => {
                return refuse(out, &BayeuxError::TOKEN_EXPIRED, Reconnect::None);
            }
            Some(Credential::Verified(grant)) => Some(grant.clone()),
            None if self.config.require_token => {
                return refuse(out, &BayeuxError::MISSING_TOKEN, Reconnect::None);
            }
            None => None,
        };
        if self.sessions.len() >= self.config.limits.max_sessions {
            return refuse(out, &BayeuxError::TOO_MANY_SESSIONS, Reconnect::Handshake);
        }
        // The token's user, else the transport's (an HTTP session).
        let transport_user = grant.as_ref().map(|g| &g.user).or(context.user.as_ref());
        let request = HandshakeRequest {
            message: &message,
            transport: context.transport,
            user: transport_user,
            grant: grant.as_ref(),
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
        let mut session = Session::new(id.clone(), user.clone(), context.transport, ack);
        // The grant holds only while the authorizer kept the token's user.
        session.grant = grant.filter(|g| user.as_ref() == Some(&g.user));
        self.sessions.insert(id.clone(), session);
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
            .map(|_| {
                let bytes = self.ids.random_bytes();
                match self.id_owner {
                    Some(node) => ClientId::from_random_on(node, bytes),
                    None => ClientId::from_random(bytes),
                }
            })
            .find(|id| !self.sessions.contains_key(id))
    }

    pub(super) fn client_disconnect(
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

    /// Ends a session from the server side. A held connect is answered with
    /// advice `reconnect: none`. `false` if there was no such session.
    pub fn disconnect(&mut self, client: &ClientId, now: Instant) -> bool {
        let existed = self.sessions.contains_key(client);
        self.remove_session(client, CloseReason::ServerDisconnect, now);
        self.process_removals(now);
        existed
    }

    pub(super) fn process_removals(&mut self, now: Instant) {
        // Removing a session publishes presence leaves, which may overflow
        // further queues: loop until quiet. Each session goes once.
        while let Some((id, reason)) = self.removals.pop() {
            self.remove_session(&id, reason, now);
        }
    }

    pub(super) fn remove_session(&mut self, id: &ClientId, reason: CloseReason, now: Instant) {
        let Some(mut session) = self.sessions.remove(id) else {
            return;
        };
        if let Some(expiry) = session.expires_at {
            self.expiries.remove(&(expiry, id.clone()));
        }
        let mut left = Vec::new();
        let mut index = Tracked {
            subscriptions: &mut self.subscriptions,
            events: &mut self.events,
            report: self.cluster_events,
        };
        for pattern in session.subscriptions.drain() {
            index.unsubscribe(&pattern, id);
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
                // Only a new token helps: handshake with one.
                CloseReason::TokenExpired => token_refused_reply(
                    META_CONNECT,
                    held.message_id,
                    id,
                    &BayeuxError::TOKEN_EXPIRED,
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

/// The reply to a request of a session whose token expired or whose
/// refresh was refused (`401::…`): advice `reconnect: handshake`, with a new
/// token.
pub(super) fn token_refused_reply(
    channel: &str,
    message_id: Option<Value>,
    client: &ClientId,
    error: &BayeuxError,
) -> Message {
    let mut reply = error_reply(Some(channel), message_id, error);
    reply.client_id = Some(client.to_string());
    reply.advice = Some(Advice {
        reconnect: Some(Reconnect::Handshake),
        interval: Some(0),
        ..Advice::default()
    });
    reply
}
