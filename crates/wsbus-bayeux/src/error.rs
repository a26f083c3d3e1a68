//! Errors in the Bayeux form `code:args:message` (Bayeux 1.0 §3.11).
//!
//! Every error the bus reports to a client is built here, so the catalogue of
//! codes and texts lives in one place. We never use the `args` part: it is
//! comma-separated, and channel names may contain commas. The codes follow
//! HTTP's meaning, like CometD's:
//!
//! | code | meaning | texts |
//! |---|---|---|
//! | `400` | the message or batch is malformed | `Malformed JSON: …`, `Invalid message: …`, `Missing channel`, `Invalid channel: …`, `Unknown meta channel`, `Missing subscription`, `Invalid subscription: …`, `Missing data`, `Cannot publish to a wildcard channel`, `Unsupported version`, `Unsupported connection type`, `Batch too large`, `Too many messages in batch`, `Empty batch`, `Expected a JSON object or array`, `Message is not a JSON object` |
//! | `401` | the access token is missing, refused or expired (see [`Credential`](crate::Credential)) | `Missing token`, `Token expired`, `Token of another user`, and the runtime's reasons (`Bad signature`, `Wrong issuer`, …) |
//! | `402` | the client id is missing or unknown: handshake again | `Unknown client` (with advice `{reconnect: "handshake", interval: 0}`) |
//! | `403` | a policy denies it | `Handshake denied`, `Subscribe denied`, `Publish denied`, `Cannot subscribe to a meta channel`, `Cannot subscribe to a service channel`, `Too many subscriptions` |
//! | `429` | the session is over its message rate: the message was dropped | `Too many messages` |
//! | `404` | a `/service` channel without a server-side handler | `No handler for this service channel` |
//! | `500` | the random source keeps repeating ids in use | `Could not allocate a client id` |
//! | `503` | the server is at a capacity limit: try later | `Too many sessions`, `Service busy` |
//!
//! The server-side API ([`Engine::publish`](crate::Engine::publish),
//! [`Engine::deliver`](crate::Engine::deliver)) returns `400::Cannot publish
//! to a meta channel`, `400::Cannot broadcast on a service channel`, or
//! `402::Unknown client`.

use std::borrow::Cow;
use std::fmt;

/// A Bayeux error: a numeric code and a human-readable message, written on the
/// wire as `"<code>::<message>"` in a reply's `error` field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BayeuxError {
    code: u16,
    message: Cow<'static, str>,
}

impl BayeuxError {
    /// An error with a fixed text.
    pub const fn fixed(code: u16, message: &'static str) -> Self {
        BayeuxError {
            code,
            message: Cow::Borrowed(message),
        }
    }

    /// An error with a computed text (e.g. a parser's explanation).
    pub fn new(code: u16, message: impl Into<Cow<'static, str>>) -> Self {
        BayeuxError {
            code,
            message: message.into(),
        }
    }

    /// The numeric code (`400`, `402`, `403`, `404`, `503`).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text after `code::`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the reply must carry advice `{reconnect: "handshake"}`: only
    /// for an unknown client, whose only way back is a new handshake.
    pub fn requires_handshake(&self) -> bool {
        self.code == 402
    }

    // --- 400: malformed input -------------------------------------------

    pub(crate) fn malformed_json(detail: impl fmt::Display) -> Self {
        Self::new(400, format!("Malformed JSON: {detail}"))
    }
    pub(crate) fn invalid_message(detail: impl fmt::Display) -> Self {
        Self::new(400, format!("Invalid message: {detail}"))
    }
    pub(crate) const NOT_AN_OBJECT: Self = Self::fixed(400, "Message is not a JSON object");
    pub(crate) const NOT_A_BATCH: Self = Self::fixed(400, "Expected a JSON object or array");
    pub(crate) const EMPTY_BATCH: Self = Self::fixed(400, "Empty batch");
    pub(crate) const BATCH_TOO_LARGE: Self = Self::fixed(400, "Batch too large");
    pub(crate) const TOO_MANY_MESSAGES: Self = Self::fixed(400, "Too many messages in batch");
    pub(crate) const MISSING_CHANNEL: Self = Self::fixed(400, "Missing channel");
    pub(crate) fn invalid_channel(detail: impl fmt::Display) -> Self {
        Self::new(400, format!("Invalid channel: {detail}"))
    }
    pub(crate) const UNKNOWN_META_CHANNEL: Self = Self::fixed(400, "Unknown meta channel");
    pub(crate) const MISSING_SUBSCRIPTION: Self = Self::fixed(400, "Missing subscription");
    pub(crate) fn invalid_subscription(detail: impl fmt::Display) -> Self {
        Self::new(400, format!("Invalid subscription: {detail}"))
    }
    pub(crate) const MISSING_DATA: Self = Self::fixed(400, "Missing data");
    pub(crate) const PUBLISH_TO_WILDCARD: Self =
        Self::fixed(400, "Cannot publish to a wildcard channel");
    pub(crate) const UNSUPPORTED_VERSION: Self = Self::fixed(400, "Unsupported version");
    pub(crate) const UNSUPPORTED_CONNECTION_TYPE: Self =
        Self::fixed(400, "Unsupported connection type");
    /// For the server-side API: meta channels carry the protocol only.
    pub(crate) const META_PUBLISH: Self = Self::fixed(400, "Cannot publish to a meta channel");
    /// For the server-side API: a service channel has no subscribers; answer
    /// a service request with `Engine::deliver`.
    pub(crate) const SERVICE_BROADCAST: Self =
        Self::fixed(400, "Cannot broadcast on a service channel");

    // --- 402: unknown client --------------------------------------------

    /// `402::Unknown client`, exactly: CometD and Faye clients react to the
    /// accompanying advice by handshaking again.
    pub const UNKNOWN_CLIENT: Self = Self::fixed(402, "Unknown client");

    // --- 403: denied by policy ------------------------------------------

    /// For an [`Authorizer`](crate::Authorizer) that refuses a handshake.
    pub const HANDSHAKE_DENIED: Self = Self::fixed(403, "Handshake denied");
    /// For policies and [`Authorizer`](crate::Authorizer)s refusing a subscription.
    pub const SUBSCRIBE_DENIED: Self = Self::fixed(403, "Subscribe denied");
    /// For policies and [`Authorizer`](crate::Authorizer)s refusing a publish.
    pub const PUBLISH_DENIED: Self = Self::fixed(403, "Publish denied");
    pub(crate) const META_SUBSCRIBE: Self = Self::fixed(403, "Cannot subscribe to a meta channel");
    pub(crate) const SERVICE_SUBSCRIBE: Self =
        Self::fixed(403, "Cannot subscribe to a service channel");
    pub(crate) const TOO_MANY_SUBSCRIPTIONS: Self = Self::fixed(403, "Too many subscriptions");

    // --- 429 ---------------------------------------------------------------

    /// A session sent more than `Limits::messages_per_second` allows; the
    /// message was not acted on.
    pub const TOO_MANY_MESSAGES_PER_SECOND: Self = Self::fixed(429, "Too many messages");

    // --- 404, 503 ---------------------------------------------------------

    pub(crate) const NO_SERVICE_HANDLER: Self =
        Self::fixed(404, "No handler for this service channel");
    pub(crate) const TOO_MANY_SESSIONS: Self = Self::fixed(503, "Too many sessions");
    /// For an [`Authorizer`](crate::Authorizer) whose server-side handler of
    /// a `/service` channel cannot take more work now (`wsbus::bus` refuses
    /// publishes to a handler with too many calls pending).
    pub const SERVICE_BUSY: Self = Self::fixed(503, "Service busy");
    /// The [`RandomSource`](crate::RandomSource) kept producing ids in use.
    pub(crate) const NO_CLIENT_ID: Self = Self::fixed(500, "Could not allocate a client id");
}

impl fmt::Display for BayeuxError {
    /// The wire form: `402::Unknown client`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.code, self.message)
    }
}

impl std::error::Error for BayeuxError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_has_empty_args() {
        assert_eq!(
            BayeuxError::UNKNOWN_CLIENT.to_string(),
            "402::Unknown client"
        );
        assert_eq!(
            BayeuxError::PUBLISH_DENIED.to_string(),
            "403::Publish denied"
        );
        assert_eq!(
            BayeuxError::invalid_channel("empty segment").to_string(),
            "400::Invalid channel: empty segment"
        );
        assert!(BayeuxError::UNKNOWN_CLIENT.requires_handshake());
        assert!(!BayeuxError::SUBSCRIBE_DENIED.requires_handshake());
    }
}
