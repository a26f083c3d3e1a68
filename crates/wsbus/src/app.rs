//! The application API (SPEC §3, seed 004): an upgrade decision and an
//! ordered event handler.
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
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use wsbus_proto::{ApiError, CloseCode, Connection, Message};

use crate::hub::{Hub, SocketId};
use crate::session::{SessionId, User};

/// What the upgrade decision sees of the HTTP request.
#[derive(Clone, Debug)]
pub struct HandshakeRequest {
    /// Whether this is a WebSocket upgrade request (the seed's `req.webSocket`).
    pub is_websocket: bool,
    /// The request path, without the query.
    pub path: String,
    /// Query parameters (the last value wins for a repeated name).
    pub params: BTreeMap<String, String>,
    pub headers: HeaderMap,
    /// The user of the request's HTTP session, if any.
    pub user: Option<User>,
    /// The request's HTTP session, if any.
    pub session: Option<SessionId>,
    /// Whether the request arrived over TLS.
    pub tls: bool,
}

/// A custom origin check: gets the raw `Origin` value (`None` when absent);
/// `Ok(false)`, an error or a panic rejects the upgrade with 403.
pub type OriginCheck = Arc<
    dyn Fn(Option<&str>) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
>;

/// How to run an accepted socket (the seed's `webSocket` response object).
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
}

impl<D> std::fmt::Debug for WebSocketConfig<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketConfig")
            .field("sub_protocols", &self.sub_protocols)
            .field("check_origin", &self.check_origin.is_some())
            .field("terminate_on_session_exit", &self.terminate_on_session_exit)
            .field("session_access", &self.session_access)
            .field("session_access_throttle", &self.session_access_throttle)
            .finish_non_exhaustive()
    }
}

impl<D> WebSocketConfig<D> {
    /// The seed's defaults: no subprotocols, default origin rule,
    /// `terminate_on_session_exit` true, `session_access` false, throttle 60 s.
    pub fn new(data: D) -> Self {
        WebSocketConfig {
            data,
            sub_protocols: Vec::new(),
            check_origin: None,
            terminate_on_session_exit: true,
            session_access: false,
            session_access_throttle: Duration::from_secs(60),
        }
    }

    pub fn sub_protocols<S: Into<String>>(
        mut self,
        protocols: impl IntoIterator<Item = S>,
    ) -> Self {
        self.sub_protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

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

    pub fn terminate_on_session_exit(mut self, terminate: bool) -> Self {
        self.terminate_on_session_exit = terminate;
        self
    }

    pub fn session_access(mut self, access: bool) -> Self {
        self.session_access = access;
        self
    }

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

/// The socket an event is about (the seed's `event.session`).
#[derive(Clone, Debug)]
pub struct SocketInfo {
    /// The WebSocket session id.
    pub id: SocketId,
    /// The path of the request that opened it.
    pub path: String,
    /// Its query parameters.
    pub params: BTreeMap<String, String>,
    /// The authenticated user when it opened, if any.
    pub user: Option<User>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// First, once.
    Open,
    Message(Message),
    /// The peer broke the protocol (the socket is closing) or another
    /// failure occurred; CLOSE follows.
    Error(String),
    /// Last, exactly once, with the close code (1005: none given; 1006: the
    /// connection dropped).
    Close(CloseCode),
}

/// One event of one socket.
#[derive(Debug)]
pub struct WsEvent<'a, D> {
    pub kind: EventKind,
    pub session: &'a SocketInfo,
    pub data: &'a D,
    hub: &'a Hub,
    conn: Option<&'a mut Connection>,
}

impl<'a, D> WsEvent<'a, D> {
    pub(crate) fn new(
        kind: EventKind,
        session: &'a SocketInfo,
        data: &'a D,
        hub: &'a Hub,
        conn: Option<&'a mut Connection>,
    ) -> Self {
        WsEvent {
            kind,
            session,
            data,
            hub,
            conn,
        }
    }

    /// The hub: send to any socket or group, manage groups, close sockets.
    pub fn hub(&self) -> &Hub {
        self.hub
    }

    /// Send to this socket directly (no hub round trip). After CLOSE, or once
    /// the socket is closing, this fails with [`ApiError::NotOpen`].
    pub fn send(&mut self, message: Message) -> Result<(), ApiError> {
        match &mut self.conn {
            Some(conn) => conn.send(message),
            None => Err(ApiError::NotOpen),
        }
    }

    /// Close this socket.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiError> {
        match &mut self.conn {
            Some(conn) => conn.close(code, reason),
            None => Err(ApiError::NotOpen),
        }
    }
}

/// A WebSocket application: the upgrade decision and the event handler.
///
/// Per socket, `on_event` is called on the socket's own task, in order:
/// OPEN first, MESSAGE / ERROR in between, CLOSE exactly once and last.
pub trait WebSocketApp: Send + Sync + 'static {
    /// The per-socket value the decision hands to every event.
    type Data: Send + Sync + 'static;

    /// Called for every request to the endpoint, WebSocket or not.
    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<Self::Data>;

    fn on_event(&self, event: WsEvent<'_, Self::Data>);
}
