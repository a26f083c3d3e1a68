//! `/meta/connect`: answered at once or held, and the driver's calls that
//! answer or drop held connects.

use std::cmp;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::BusConfig;
use crate::error::BayeuxError;
use crate::id::ClientId;
use crate::message::{Advice, Message, Outbound, Reconnect, error_reply};
use crate::session::Transport;

use super::holds::HoldId;
use super::{CloseReason, Engine, HeldConnect, META_CONNECT, Outcome, RequestContext};

impl Engine {
    pub(super) fn connect(
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
        // A connect held past the token's expiry is answered at the expiry,
        // with `401::Token expired`.
        let token_expiry = session.grant.as_ref().and_then(|g| g.expires_at);
        let deadline = cmp::min(now + timeout, token_expiry.unwrap_or(now + timeout));
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
    pub(super) fn connect_reply(
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
    pub(super) fn release_hold(
        &mut self,
        id: &ClientId,
        now: Instant,
    ) -> Option<(HoldId, Vec<Outbound>)> {
        let held = self.holds.release(id)?;
        let mut replies = held.pending_replies;
        replies.extend(self.connect_reply(id, now, held.message_id));
        Some((held.hold_id, replies))
    }

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
        if session.token_expired(now) {
            self.remove_session(&id, CloseReason::TokenExpired, now);
            self.process_removals(now);
            return self
                .holds
                .take_released(hold_id)
                .map(|(_, replies)| replies);
        }
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

    pub(super) fn advice(&self) -> Advice {
        connect_advice(&self.config)
    }
}

/// The advice of handshake and connect replies: retry after `interval`.
pub(super) fn connect_advice(config: &BusConfig) -> Advice {
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
