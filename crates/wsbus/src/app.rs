//! The application API: an upgrade decision and an ordered event handler.
//!
//! An application decides, for every HTTP request to its endpoint, whether
//! to open a WebSocket ([`WebSocketApp::upgrade`] returns an [`Upgrade`]),
//! then receives the socket's events in order ([`WebSocketApp::on_event`]).
//! From an event it reaches its socket ([`WsEvent::send`]) and, through the
//! [`Hub`], every other socket and group.
//!
//! ```no_run
//! use wsbus::app::{HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent, EventKind};
//!
//! struct Chat;
//!
//! impl WebSocketApp for Chat {
//!     type Data = ();
//!     fn upgrade(&self, req: &HandshakeRequest) -> Upgrade<()> {
//!         if !req.is_websocket {
//!             return Upgrade::status(404);
//!         }
//!         Upgrade::Accept(WebSocketConfig::new(()).sub_protocols(["text"]))
//!     }
//!     fn on_event(&self, event: WsEvent<'_, ()>) {
//!         if let EventKind::Message(message) = &event.kind {
//!             event.hub().send_to_group("chat", message.clone());
//!         }
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use wsbus_proto::{ApiError, CloseCode, Connection, Message, ProtocolError};

use crate::auth::{Claims, TokenError};
use crate::hub::{Hub, SocketId};
use crate::runtime::Runtime;
use crate::schema::Violation;
use crate::security::SocketGuard;
use crate::session::{SessionId, User};

/// What the upgrade decision sees of the HTTP request.
#[derive(Clone, Debug)]
pub struct HandshakeRequest {
    /// Whether this is a valid WebSocket upgrade request.
    pub is_websocket: bool,
    /// The request path, without the query.
    pub path: String,
    /// Query parameters (the last value wins for a repeated name).
    pub params: BTreeMap<String, String>,
    /// The request's headers, as received.
    pub headers: HeaderMap,
    /// The user of the request's HTTP session, if any.
    pub user: Option<User>,
    /// The request's HTTP session, if any.
    pub session: Option<SessionId>,
    /// Whether the request arrived over TLS (at the client's side of a
    /// trusted proxy: see [`Security::trusted_proxies`](crate::security::Security::trusted_proxies)).
    pub tls: bool,
    /// The verified claims of the request's access token, if it presented
    /// one (then [`user`](Self::user) is the token's `sub` and `name`).
    /// The token itself is not passed on: `access_token` is removed from
    /// [`params`](Self::params), and a verified `Authorization` header from
    /// [`headers`](Self::headers).
    pub claims: Option<Arc<Claims>>,
    /// The client's address (behind trusted proxies, the one they report).
    pub client_addr: Option<IpAddr>,
}

/// A custom origin check: gets the raw `Origin` value (`None` when absent);
/// `Ok(false)`, an error or a panic rejects the upgrade with 403.
pub type OriginCheck = Arc<
    dyn Fn(Option<&str>) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
>;

/// How to run an accepted socket.
pub struct WebSocketConfig<D> {
    /// Handed to every event of this socket.
    pub data: D,
    /// The subprotocols the application speaks; the server picks the first
    /// one the client offered that is in this list, or none.
    pub sub_protocols: Vec<String>,
    /// Replaces the default origin rule.
    pub check_origin: Option<OriginCheck>,
    /// Close the socket with 1008 when its HTTP session ends. Default true.
    pub terminate_on_session_exit: bool,
    /// Let inbound messages refresh the HTTP session. Default false.
    pub session_access: bool,
    /// At most one refresh per this interval. Default 60 s.
    pub session_access_throttle: Duration,
    /// The application's protocol carries the access token in its messages
    /// (the bus: the handshake's `ext.access_token`), so `auth.required`
    /// does not refuse an upgrade without one; a token that *is* presented
    /// is still checked. Default false.
    pub token_in_messages: bool,
}

impl<D> std::fmt::Debug for WebSocketConfig<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketConfig")
            .field("sub_protocols", &self.sub_protocols)
            .field("check_origin", &self.check_origin.is_some())
            .field("terminate_on_session_exit", &self.terminate_on_session_exit)
            .field("session_access", &self.session_access)
            .field("session_access_throttle", &self.session_access_throttle)
            .field("token_in_messages", &self.token_in_messages)
            .finish_non_exhaustive()
    }
}

impl<D> WebSocketConfig<D> {
    /// The defaults: no subprotocols, default origin rule,
    /// `terminate_on_session_exit` true, `session_access` false, throttle 60 s.
    pub fn new(data: D) -> Self {
        WebSocketConfig {
            data,
            sub_protocols: Vec::new(),
            check_origin: None,
            terminate_on_session_exit: true,
            session_access: false,
            session_access_throttle: Duration::from_secs(60),
            token_in_messages: false,
        }
    }

    /// The subprotocols the application speaks, most preferred first.
    pub fn sub_protocols<S: Into<String>>(
        mut self,
        protocols: impl IntoIterator<Item = S>,
    ) -> Self {
        self.sub_protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Replace the default origin rule with `check`, which gets the raw
    /// `Origin` value (`None` when absent). `Ok(false)`, an error or a panic
    /// refuses the upgrade with 403.
    pub fn check_origin(
        mut self,
        check: impl Fn(Option<&str>) -> Result<bool, Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.check_origin = Some(Arc::new(check));
        self
    }

    /// Accept every origin (conformance tools, trusted networks).
    pub fn any_origin(self) -> Self {
        self.check_origin(|_| Ok(true))
    }

    /// Close the socket with 1008 `HTTP session ended` when the HTTP session
    /// it was opened with ends (logout or idle expiry). Default true.
    pub fn terminate_on_session_exit(mut self, terminate: bool) -> Self {
        self.terminate_on_session_exit = terminate;
        self
    }

    /// Let the socket's inbound messages refresh its HTTP session (outbound
    /// ones never do). Default false.
    pub fn session_access(mut self, access: bool) -> Self {
        self.session_access = access;
        self
    }

    /// Say that the protocol carries the access token in its messages: an
    /// upgrade without one is not refused when tokens are required (the
    /// application refuses what arrives without one). Default false.
    pub fn token_in_messages(mut self, in_messages: bool) -> Self {
        self.token_in_messages = in_messages;
        self
    }

    /// With `session_access`, refresh at most once per `throttle`; messages
    /// inside the window are delivered as usual. Default 60 s.
    pub fn session_access_throttle(mut self, throttle: Duration) -> Self {
        self.session_access_throttle = throttle;
        self
    }
}

/// The upgrade decision.
#[derive(Debug)]
pub enum Upgrade<D> {
    /// Answer the request with this response instead.
    Refuse(Response<Full<Bytes>>),
    /// Open the socket.
    Accept(WebSocketConfig<D>),
}

impl<D> Upgrade<D> {
    /// Refuse with a bare status and its reason phrase as the body.
    pub fn status(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = status.canonical_reason().unwrap_or("refused");
        let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Upgrade::Refuse(response)
    }
}

/// The socket an event is about.
#[derive(Clone, Debug)]
pub struct SocketInfo {
    /// The socket's id, for the [`Hub`].
    pub id: SocketId,
    /// The path of the request that opened it.
    pub path: String,
    /// Its query parameters.
    pub params: BTreeMap<String, String>,
    /// The authenticated user when it opened, if any.
    pub user: Option<User>,
    /// The verified claims of its access token, if it presented one.
    pub claims: Option<Arc<Claims>>,
}

impl SocketInfo {
    /// A socket whose handshake is not known (tests): no id yet (the hub
    /// gives it one), path `/`, no parameters, user nor claims.
    #[cfg(test)]
    pub(crate) fn unknown() -> Self {
        SocketInfo {
            id: SocketId::from_u64(0),
            path: "/".into(),
            params: BTreeMap::new(),
            user: None,
            claims: None,
        }
    }
}

/// Why a socket failed: the payload of [`EventKind::Error`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketError {
    /// The peer broke RFC 6455 / RFC 7692 or exceeded a limit; the socket is
    /// closing with the error's close code.
    Protocol(ProtocolError),
    /// A message failed its path's schema, whose
    /// [`OnInvalid::Error`](crate::security::OnInvalid::Error) hands it to
    /// the application this way instead of delivering it. The socket stays
    /// open: this one error is not followed by CLOSE.
    Invalid(Violation),
}

impl SocketError {
    /// The close code the socket is closing with (for
    /// [`Invalid`](Self::Invalid), the one it would close with: 1007).
    pub fn close_code(&self) -> CloseCode {
        match self {
            SocketError::Protocol(err) => err.close_code(),
            SocketError::Invalid(_) => CloseCode::INVALID_PAYLOAD,
        }
    }
}

impl std::fmt::Display for SocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketError::Protocol(err) => write!(f, "protocol error: {err}"),
            SocketError::Invalid(violation) => write!(f, "invalid message: {violation}"),
        }
    }
}

impl std::error::Error for SocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SocketError::Protocol(err) => Some(err),
            SocketError::Invalid(violation) => Some(violation),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// First, once.
    Open,
    /// A complete message from the peer.
    Message(Message),
    /// The socket failed and is closing; CLOSE follows. (Or, for
    /// [`SocketError::Invalid`], a message was refused by its schema and the
    /// socket stays open.)
    Error(SocketError),
    /// Last, exactly once, with the close code (1005: none given; 1006: the
    /// connection dropped).
    Close(CloseCode),
}

/// One event of one socket.
#[derive(Debug)]
pub struct WsEvent<'a, D> {
    /// What happened.
    pub kind: EventKind,
    /// The socket it happened to.
    pub socket: &'a SocketInfo,
    /// The value the upgrade decision gave the socket.
    pub data: &'a D,
    runtime: &'a Runtime,
    conn: Option<&'a mut Connection>,
    guard: Option<&'a mut SocketGuard>,
    /// Messages [`send`](Self::send) queued: the socket's task adds them to
    /// the metrics once per wake, not once per message.
    sent: &'a mut u32,
}

impl<'a, D> WsEvent<'a, D> {
    pub(crate) fn new(
        kind: EventKind,
        socket: &'a SocketInfo,
        data: &'a D,
        runtime: &'a Runtime,
        conn: Option<&'a mut Connection>,
        guard: Option<&'a mut SocketGuard>,
        sent: &'a mut u32,
    ) -> Self {
        WsEvent {
            kind,
            socket,
            data,
            runtime,
            conn,
            guard,
            sent,
        }
    }

    /// The hub: send to any socket or group, manage groups, close sockets.
    pub fn hub(&self) -> &Hub {
        self.runtime.hub()
    }

    /// Send to this socket directly (no hub round trip). After CLOSE, or once
    /// the socket is closing, this fails with [`ApiError::NotOpen`]. A
    /// message failing the path's schema is not sent (counted and logged,
    /// like the hub's sends), and this returns `Ok`.
    // Inlined into the handler (an echo's whole work per message); the
    // schema's refusal, rare, stays out of line.
    #[inline]
    pub fn send(&mut self, message: Message) -> Result<(), ApiError> {
        if let Some(guard) = self.guard.as_deref()
            && let Err(violation) = guard.outbound_ok(&message)
        {
            self.outbound_refused(&violation);
            return Ok(());
        }
        match &mut self.conn {
            Some(conn) => {
                // Offered before the send consumes it (a `Bytes` clone at
                // most, and only while a capture runs).
                self.runtime.capture(
                    self.socket.id,
                    None,
                    crate::capture::Direction::Out,
                    &message,
                );
                conn.send(message)?;
                *self.sent += 1;
                Ok(())
            }
            None => Err(ApiError::NotOpen),
        }
    }

    #[cold]
    #[inline(never)]
    fn outbound_refused(&self, violation: &crate::schema::Violation) {
        self.runtime.metrics().schema_rejection("out");
        tracing::warn!(target: "wsbus::schema", socket = %self.socket.id, path = %self.socket.path, pointer = %violation.pointer, reason = %violation.reason, "outbound message failed the path's schema; not sent");
    }

    /// Refresh the socket's access token before it expires, without
    /// reconnecting: `token` (a client sent it in a message of the
    /// application's protocol) is verified against the keys known now, must
    /// be of the socket's user, and its `exp` becomes the socket's new
    /// expiry. On an error the socket keeps its old expiry (the application
    /// may close it). A socket opened without a token has nothing to
    /// refresh: [`RefreshError::NoToken`].
    pub fn refresh_token(&mut self, token: &str) -> Result<Claims, RefreshError> {
        let auth = self.runtime.security().auth.as_ref();
        let guard = self.guard.as_deref_mut();
        let (Some(auth), Some(guard)) = (auth, guard) else {
            return Err(RefreshError::NoToken);
        };
        let Some(user) = guard.user.clone() else {
            return Err(RefreshError::NoToken);
        };
        let claims = crate::auth::verify_now(&auth.verifier, token).map_err(RefreshError::Token)?;
        if *claims.sub != *user {
            return Err(RefreshError::OtherUser);
        }
        guard.token_expires_at = claims.expires_at.map(crate::security::tokio_deadline);
        Ok(claims)
    }

    /// Close this socket.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiError> {
        match &mut self.conn {
            Some(conn) => conn.close(code, reason),
            None => Err(ApiError::NotOpen),
        }
    }
}

/// Why [`WsEvent::refresh_token`] refused a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// The token was refused.
    Token(TokenError),
    /// The token is of another user than the socket's.
    OtherUser,
    /// The socket was opened without a token (or the runtime checks none).
    NoToken,
}

impl std::fmt::Display for RefreshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefreshError::Token(error) => f.write_str(error.reason()),
            RefreshError::OtherUser => f.write_str("Token of another user"),
            RefreshError::NoToken => f.write_str("The socket has no token to refresh"),
        }
    }
}

impl std::error::Error for RefreshError {}

/// A WebSocket application: the upgrade decision and the event handler.
///
/// Per socket, `on_event` is called on the socket's own task, in order:
/// OPEN first, MESSAGE / ERROR in between, CLOSE exactly once and last.
///
/// Handlers run on the runtime's worker threads: they must not block (hand
/// slow work to a task). A handler that panics is isolated: the panic is
/// logged, its socket is closed with 1011 and gets no more MESSAGE events,
/// CLOSE still arrives, and the socket leaves the hub, its groups and its
/// HTTP session as any closed socket does.
pub trait WebSocketApp: Send + Sync + 'static {
    /// The per-socket value the decision hands to every event.
    type Data: Send + Sync + 'static;

    /// Called for every request to the endpoint, WebSocket or not.
    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<Self::Data>;

    /// Called for each event of each accepted socket, in order per socket.
    fn on_event(&self, event: WsEvent<'_, Self::Data>);
}
