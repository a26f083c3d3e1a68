//! What a runtime enforces on every socket besides the protocol: access
//! tokens, client addresses behind trusted proxies, connection and message
//! limits, and message schemas per endpoint path (SPEC §5). Configured on
//! the [`RuntimeBuilder`](crate::RuntimeBuilder); off unless configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

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
        if let Some(path) = &self.schema {
            let checked = match message {
                wsbus_proto::Message::Text(text) => path.schema.validate_text(text.as_str()),
                wsbus_proto::Message::Binary(_) => Err(crate::schema::Violation {
                    pointer: String::new(),
                    reason: "binary message where JSON text is expected".into(),
                }),
            };
            if let Err(violation) = checked {
                return Inbound::Invalid(violation);
            }
        }
        Inbound::Pass
    }

    /// Whether an outbound message passes the path's schema.
    pub(crate) fn outbound_ok(
        &self,
        message: &wsbus_proto::Message,
    ) -> Result<(), crate::schema::Violation> {
        let Some(path) = &self.schema else {
            return Ok(());
        };
        match message {
            wsbus_proto::Message::Text(text) => path.schema.validate_text(text.as_str()),
            wsbus_proto::Message::Binary(_) => Err(crate::schema::Violation {
                pointer: String::new(),
                reason: "binary message where JSON text is expected".into(),
            }),
        }
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
