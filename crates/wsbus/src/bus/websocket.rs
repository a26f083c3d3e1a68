//! The `websocket` transport: [`BusSocket`], a [`WebSocketApp`] at the bus
//! path. Each text message is a batch; its replies go back on the socket,
//! deliveries are pushed through the hub.

use wsbus_bayeux::{Credential, RequestContext, encode_batch, parse_batch};
use wsbus_proto::{CloseCode, Message};

use super::credentials::{credential, ext_token, grant_of, has_handshake};
use super::{Bus, now};
use crate::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use crate::auth::{Claims, verify_now};
use crate::hub::SocketId;

/// The bus's `websocket` transport, as a WebSocket application: mount it at
/// the bus path (`Server::websocket("/amb", BusSocket::new(bus))`).
///
/// It accepts WebSocket upgrades (404 for other requests at its path, 400
/// when [`Bus::websocket_enabled`] is off). Each text message is a Bayeux
/// batch; its replies are sent back on the socket in one text message, and
/// the socket's clients get their deliveries pushed through the hub as they
/// come, in order. A message larger than the engine's batch limit closes the
/// socket with 1009; when the socket closes (for any reason) its clients are
/// detached and kept for `maxInterval`, so that they may connect again over
/// a new socket or long-polling without losing what was queued for them.
#[derive(Debug, Clone)]
pub struct BusSocket {
    bus: Bus,
}

impl BusSocket {
    /// The `websocket` transport of `bus`.
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
        // Bayeux clients carry their token in the handshake's
        // `ext.access_token`, checked by the engine (`401::<reason>`).
        Upgrade::Accept(WebSocketConfig::new(()).token_in_messages(true))
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
                let reply = self.bus.websocket_batch(
                    event.socket.id,
                    message.payload(),
                    user.as_deref(),
                    event.socket.claims.as_deref(),
                );
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

impl Bus {
    /// Handle one WebSocket text message from `socket`; returns the replies
    /// to send back on it.
    pub(super) fn websocket_batch(
        &self,
        socket: SocketId,
        body: &[u8],
        user: Option<&str>,
        socket_claims: Option<&Claims>,
    ) -> Option<String> {
        let mut context = RequestContext::websocket();
        if let Some(user) = user {
            context = context.with_user(user);
        }
        let batch = parse_batch(body, &self.inner.batch_limits);
        if let Ok(batch) = &batch
            && let Some((owner, forward)) = self.foreign_owner(batch)
        {
            // A client owned by another node (long_poll.rs, "Without
            // sticky sessions"): its owner answers, the answer goes out on
            // this socket when it comes.
            let answer = self.forward_to_owner(owner, forward, batch, body, user, ext_token(batch));
            let hub = self.inner.hub.clone();
            tokio::spawn(async move {
                let reply = answer.await;
                hub.send(socket, Message::Text(wsbus_proto::Utf8Bytes::from(reply)));
            });
            return None;
        }
        if let (Ok(batch), Some(runtime)) = (&batch, &self.inner.runtime)
            && let Some(auth) = &runtime.security().auth
        {
            // A token in the batch is verified with the keys known now: a
            // socket's handler cannot wait for a key fetch (one is started,
            // and a retry finds the key).
            if let Some(token) = ext_token(batch) {
                let verified = verify_now(&auth.verifier, token);
                context.credential = Some(credential(runtime, verified));
            } else if let Some(claims) = socket_claims
                && has_handshake(batch)
            {
                // The socket's own token authenticates the sessions it
                // handshakes; it is no refresh (the socket closes when it
                // expires).
                context.credential = Some(Credential::Verified(grant_of(claims)));
            }
        }
        self.drive(|engine| {
            let outcome = match batch {
                Ok(batch) => engine.handle(now(), &context, batch),
                Err(_) => engine.handle_body(now(), &context, body),
            };
            let mut replies = outcome.replies;
            if let Some(client) = &outcome.session {
                let mut routes = self.inner.routes.lock().expect("routes lock");
                routes.attach(client, socket);
                if let Some(held) = &outcome.held {
                    routes.attach_held(&held.client_id, socket, held.hold_id);
                }
                drop(routes);
                // Deliveries already waiting go out in the same frame.
                replies.extend(engine.take_deliveries(client));
            }
            encode_batch(&replies)
        })
    }

    /// A WebSocket carrying bus clients closed: their held connects end and
    /// the clients expire after `maxInterval` unless they come back.
    fn websocket_closed(&self, socket: SocketId) {
        self.drive(|engine| {
            let holds = self
                .inner
                .routes
                .lock()
                .expect("routes lock")
                .detach_socket(socket);
            for hold in holds {
                engine.cancel_connect(hold, now());
            }
        });
    }
}
