//! What a runtime enforces on every socket besides the protocol: access
//! tokens, client addresses behind trusted proxies, connection and message
//! limits, and message schemas per endpoint path (SPEC §5). Configured on
//! the [`RuntimeBuilder`](crate::RuntimeBuilder); off unless configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wsbus_proto::PreparedMessage;

use serde::Deserialize;

use crate::auth::TokenVerifier;
use crate::limits::{ConnectionLimiter, ConnectionPermit, RateLimit};
use crate::proxy::TrustedProxies;
use crate::schema::Schema;

/// What an invalid inbound message does on a raw socket whose path has a
/// schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Close the socket with 1007 (invalid payload data) and the pointer and
    /// reason. Default: a client that breaks the data model is broken.
    #[default]
    Close,
    /// Hand the application an [`EventKind::Error`](crate::app::EventKind::Error)
    /// with [`SocketError::Invalid`](crate::app::SocketError::Invalid) instead
    /// of the message; the socket stays open.
    Error,
}

/// A schema for the text messages of an endpoint path, both directions.
#[derive(Clone, Debug)]
pub struct PathSchema {
    /// The JSON Schema.
    pub schema: Schema,
    /// What an invalid inbound message does.
    pub on_invalid: OnInvalid,
    /// The verdict on the last frame sent to many sockets of the path (a
    /// group send is encoded once: it is checked once, not once per
    /// member). Holding the frame keeps its allocation alive, so a frame at
    /// the same address is the same frame.
    last_frame: Arc<Mutex<Option<(Bytes, bool)>>>,
}

impl PathSchema {
    /// `schema` for a path, `on_invalid` for what a bad inbound message does.
    pub fn new(schema: Schema, on_invalid: OnInvalid) -> Self {
        PathSchema {
            schema,
            on_invalid,
            last_frame: Arc::default(),
        }
    }

    fn check(&self, message: &wsbus_proto::Message) -> Result<(), crate::schema::Violation> {
        match message {
            wsbus_proto::Message::Text(text) => self.schema.validate_text(text.as_str()),
            wsbus_proto::Message::Binary(_) => Err(crate::schema::Violation {
                pointer: String::new(),
                reason: "binary message where JSON text is expected".into(),
            }),
        }
    }

    /// Whether a frame sent through the hub passes: decided once per frame
    /// however many sockets of the path it goes to.
    fn check_prepared(&self, prepared: &PreparedMessage) -> Result<(), crate::schema::Violation> {
        let frame = prepared.frame();
        let same =
            |cached: &Bytes| cached.as_ptr() == frame.as_ptr() && cached.len() == frame.len();
        if let Some((cached, true)) = &*self.last_frame.lock().expect("schema cache lock")
            && same(cached)
        {
            return Ok(());
        }
        let verdict = self.check(prepared.message());
        *self.last_frame.lock().expect("schema cache lock") =
            Some((frame.clone(), verdict.is_ok()));
        verdict
    }
}

/// Access tokens at the handshake.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// Verifies the tokens.
    pub verifier: TokenVerifier,
    /// Refuse upgrades (401) and bus handshakes (`401::Missing token`)
    /// without a valid token.
    pub required: bool,
}

/// The security settings of a runtime. Default: nothing checked beyond the
/// protocol and the origin rule.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Token authentication, if configured.
    pub auth: Option<TokenAuth>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// WebSocket connections per client address.
    pub connections_per_ip: Option<ConnectionLimiter<IpAddr>>,
    /// WebSocket connections per authenticated user.
    pub connections_per_user: Option<ConnectionLimiter<Arc<str>>>,
    /// Messages per second per socket.
    pub message_rate: Option<RateLimit>,
    /// Schemas by endpoint path.
    pub schemas: HashMap<String, PathSchema>,
}

/// The connection-limit permits a socket holds while it lives (dropping
/// them gives the places back).
#[derive(Debug, Default)]
pub(crate) struct Permits {
    pub(crate) ip: Option<ConnectionPermit<IpAddr>>,
    pub(crate) user: Option<ConnectionPermit<Arc<str>>>,
}

/// The close reason of a socket whose token expired (code 1008).
pub const TOKEN_EXPIRED_REASON: &str = "token expired";
/// The close reason of a socket over its message rate (code 1008).
pub const RATE_EXCEEDED_REASON: &str = "message rate exceeded";

/// The per-socket side of [`Security`], boxed in the socket's task (only
/// sockets with something to enforce allocate one, and an idle socket's
/// task stays small).
#[derive(Debug, Default)]
pub(crate) struct SocketGuard {
    /// When the socket's token expires: it is closed with 1008
    /// [`TOKEN_EXPIRED_REASON`] then.
    pub(crate) token_expires_at: Option<tokio::time::Instant>,
    /// The keepalive deadline, kept here while the socket's one timer may
    /// be set earlier, for the token's expiry.
    pub(crate) keepalive_at: Option<tokio::time::Instant>,
    /// The token's user: a refresh must be of the same user.
    pub(crate) user: Option<Arc<str>>,
    pub(crate) rate: Option<(RateLimit, crate::limits::TokenBucket)>,
    pub(crate) schema: Option<PathSchema>,
    /// A limit closed the socket: its further messages are dropped.
    pub(crate) violated: bool,
    pub(crate) permits: Permits,
}

/// What the guard says of an inbound message.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Deliver it.
    Pass,
    /// The socket is closing for a violation: drop it silently.
    Drop,
    /// Over the message rate.
    RateExceeded,
    /// It failed the path's schema.
    Invalid(crate::schema::Violation),
}

impl SocketGuard {
    /// Whether there is anything to enforce (else no guard is kept).
    pub(crate) fn is_active(&self) -> bool {
        self.token_expires_at.is_some()
            || self.rate.is_some()
            || self.schema.is_some()
            || self.permits.ip.is_some()
            || self.permits.user.is_some()
    }

    pub(crate) fn inbound(
        &mut self,
        message: &wsbus_proto::Message,
        now: std::time::Instant,
    ) -> Inbound {
        if self.violated {
            return Inbound::Drop;
        }
        if let Some((limit, bucket)) = &mut self.rate
            && !bucket.try_take(*limit, now)
        {
            return Inbound::RateExceeded;
        }
        if let Some(path) = &self.schema
            && let Err(violation) = path.check(message)
        {
            return Inbound::Invalid(violation);
        }
        Inbound::Pass
    }

    /// Whether a message sent on this socket alone passes the path's schema.
    pub(crate) fn outbound_ok(
        &self,
        message: &wsbus_proto::Message,
    ) -> Result<(), crate::schema::Violation> {
        self.schema
            .as_ref()
            .map_or(Ok(()), |path| path.check(message))
    }

    /// Whether a frame from the hub passes the path's schema (checked once
    /// for all the path's sockets it goes to).
    pub(crate) fn outbound_prepared_ok(
        &self,
        prepared: &PreparedMessage,
    ) -> Result<(), crate::schema::Violation> {
        self.schema
            .as_ref()
            .map_or(Ok(()), |path| path.check_prepared(prepared))
    }

    /// The token expired at `now`.
    pub(crate) fn token_expired(&self, now: tokio::time::Instant) -> bool {
        self.token_expires_at.is_some_and(|at| now >= at)
    }

    /// The socket's timer deadline for a keepalive due at `keepalive_at`:
    /// the earlier of it and the token's expiry.
    pub(crate) fn deadline(&mut self, keepalive_at: tokio::time::Instant) -> tokio::time::Instant {
        self.keepalive_at = Some(keepalive_at);
        match self.token_expires_at {
            Some(expiry) => expiry.min(keepalive_at),
            None => keepalive_at,
        }
    }
}

/// A close reason for a schema violation, within the 123 bytes a close frame
/// allows (RFC 6455 §5.5: control frames carry at most 125 bytes).
pub(crate) fn invalid_close_reason(violation: &crate::schema::Violation) -> String {
    let mut reason = format!("invalid message: {violation}");
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// A wall-clock instant (a token's `exp`) on tokio's clock.
pub(crate) fn tokio_deadline(at: std::time::SystemTime) -> tokio::time::Instant {
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + left
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wsbus_proto::Message;

    use super::*;

    #[test]
    fn a_frame_for_many_sockets_is_judged_once_and_never_confused_with_another() {
        let schema = Schema::from_value("t.json", &json!({"type": "object"})).unwrap();
        let path = PathSchema::new(schema, OnInvalid::Close);
        let good = PreparedMessage::new(Message::text("{}"));
        let bad = PreparedMessage::new(Message::text("[]"));
        for _ in 0..3 {
            assert!(path.check_prepared(&good.clone()).is_ok());
        }
        assert!(path.check_prepared(&bad).is_err());
        assert!(
            path.check_prepared(&bad).is_err(),
            "a refusal is not cached as a pass"
        );
        // The same text in another frame is judged on its own.
        let again = PreparedMessage::new(Message::text("{}"));
        assert!(path.check_prepared(&again).is_ok());
        assert!(path.check_prepared(&good).is_ok());
        // Clones share the cache (every socket of the path holds one).
        let shared = path.clone();
        assert!(shared.check_prepared(&again).is_ok());
        assert!(shared.check_prepared(&bad).is_err());
    }
}
