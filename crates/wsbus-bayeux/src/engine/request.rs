//! A batch in, its replies out: the entry point of every request and the
//! dispatch of its messages to the meta-channel handlers and publishing.

use std::sync::Arc;
use std::time::Instant;

use crate::error::BayeuxError;
use crate::grant::Credential;
use crate::id::ClientId;
use crate::message::{Batch, Message, Outbound, encode_batch, error_reply, parse_batch};
use crate::rate::TokenBucket;
use crate::session::Transport;

use super::holds::HoldId;
use super::lifecycle::token_refused_reply;
use super::{
    CloseReason, Engine, META_CONNECT, META_DISCONNECT, META_HANDSHAKE, META_SUBSCRIBE,
    META_UNSUBSCRIBE,
};

/// What the runtime knows about the request a batch arrived in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The transport the batch arrived on. It decides how the session is
    /// served from then on (pushed deliveries or connect replies), whatever
    /// the message's `connectionType` says.
    pub transport: Transport,
    /// The user the transport layer authenticated (cookie, `Authorization`
    /// header, `access_token`), if any. A handshake's session takes it as its
    /// user (unless an [`Authorizer`](crate::Authorizer) decides otherwise); later requests that
    /// carry a different user are treated as from an unknown client, so that
    /// a client id leaked to another user is useless to them.
    pub user: Option<Arc<str>>,
    /// The access token the request presented (its WebSocket upgrade or
    /// HTTP request, or the `ext.access_token` of its handshake or connect),
    /// as the runtime checked it. See [`Credential`] for what the engine
    /// does with it.
    pub credential: Option<Credential>,
}

impl RequestContext {
    /// An anonymous request over WebSocket.
    pub fn websocket() -> Self {
        RequestContext {
            transport: Transport::WebSocket,
            user: None,
            credential: None,
        }
    }

    /// An anonymous long-polling request.
    pub fn long_polling() -> Self {
        RequestContext {
            transport: Transport::LongPolling,
            user: None,
            credential: None,
        }
    }

    /// The same request, presenting a token checked with this outcome.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// The same request, authenticated as `user`.
    pub fn with_user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// A `/meta/connect` the engine is holding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldConnect {
    /// The session whose connect is held: [`Event::Wake`](crate::Event::Wake)
    /// for it means this connect may be ready.
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
    /// by its messages), for the runtime to route [`Event::Wake`](crate::Event::Wake) to this
    /// socket or request. `None` when no message named a known session.
    pub session: Option<ClientId>,
}

impl Outcome {
    /// [`replies`](Self::replies) as one JSON array; `None` if there are none.
    pub fn reply_json(&self) -> Option<String> {
        encode_batch(&self.replies)
    }

    pub(super) fn push(&mut self, message: &Message) {
        self.replies.push(Outbound::new(message));
    }
}

impl Engine {
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
        if channel != META_HANDSHAKE
            && self.end_if_token_expired(now, context, &channel, &message, out)
        {
            return;
        }
        if channel != META_HANDSHAKE
            && channel != META_CONNECT
            && !self.take_rate(now, context, &message)
        {
            out.push(&error_reply(
                Some(&channel),
                message.id,
                &BayeuxError::TOO_MANY_MESSAGES_PER_SECOND,
            ));
            return;
        }
        match channel.as_str() {
            META_HANDSHAKE => self.handshake(now, context, message, out),
            META_CONNECT => self.connect(now, context, message, out),
            META_SUBSCRIBE => self.subscribe(now, context, message, out, None),
            META_UNSUBSCRIBE => self.unsubscribe(now, context, message, out),
            META_DISCONNECT => self.client_disconnect(now, context, message, out),
            _ => self.client_publish(now, context, &channel, message, out),
        }
    }

    /// Applies a token refresh (a `/meta/connect` presenting a token) and
    /// ends the session `message` names if its token has expired: the
    /// message is answered with `401::<reason>`, advice `reconnect:
    /// handshake`. Whether it was.
    fn end_if_token_expired(
        &mut self,
        now: Instant,
        context: &RequestContext,
        channel: &str,
        message: &Message,
        out: &mut Outcome,
    ) -> bool {
        let Some(id) = self.session_for(message, context) else {
            return false;
        };
        let session = self.sessions.get_mut(&id).expect("looked up above");
        let refused = match (&context.credential, channel) {
            (Some(Credential::Verified(grant)), META_CONNECT) => {
                if session.user.as_ref() == Some(&grant.user) {
                    session.grant = Some(grant.clone());
                    None
                } else {
                    Some(BayeuxError::unauthorized("Token of another user"))
                }
            }
            (Some(Credential::Refused(reason)), META_CONNECT) => {
                Some(BayeuxError::unauthorized(reason))
            }
            _ => None,
        };
        let Some(error) = refused.or_else(|| {
            session
                .token_expired(now)
                .then_some(BayeuxError::TOKEN_EXPIRED)
        }) else {
            return false;
        };
        self.remove_session(&id, CloseReason::TokenExpired, now);
        out.push(&token_refused_reply(
            channel,
            message.id.clone(),
            &id,
            &error,
        ));
        true
    }

    /// Whether the session `message` names is within its message rate (one
    /// message is counted). Messages of no known session are not counted:
    /// they are refused as such.
    fn take_rate(&mut self, now: Instant, context: &RequestContext, message: &Message) -> bool {
        let Some(limit) = self.config.limits.messages_per_second else {
            return true;
        };
        let Some(id) = self.session_for(message, context) else {
            return true;
        };
        let session = self.sessions.get_mut(&id).expect("looked up above");
        let within = session
            .rate
            .get_or_insert_with(|| TokenBucket::new(limit, now))
            .try_take(limit, now);
        if !within {
            self.counters.rate_limited += 1;
        }
        within
    }

    /// The session `message` names, if it exists and the request's user (if
    /// any) is its user.
    pub(super) fn session_for(
        &self,
        message: &Message,
        context: &RequestContext,
    ) -> Option<ClientId> {
        let (id, session) = self.sessions.get_key_value(message.client_id.as_deref()?)?;
        if context.user.is_some() && context.user != session.user {
            return None;
        }
        Some(id.clone())
    }
}
