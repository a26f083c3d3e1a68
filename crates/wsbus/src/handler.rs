//! The event handler an application gives the server.
//!
//! Per socket, calls arrive in order on the socket's own task: `on_open`
//! first, `on_message` / `on_error` in between, `on_close` exactly once and
//! last.

use wsbus_proto::{ApiError, CloseCode, Connection, Message, ProtocolError};

use crate::hub::{Hub, SocketId};

/// Application callbacks for raw WebSocket sockets.
pub trait Handler: Send + Sync + 'static {
    /// The socket is open; sends from here go out before anything else.
    fn on_open(&self, socket: &mut SocketCtx<'_>) {
        let _ = socket;
    }

    /// A complete message arrived.
    fn on_message(&self, socket: &mut SocketCtx<'_>, message: Message);

    /// The peer broke the protocol; the socket is closing with the error's
    /// close code and `on_close` follows.
    fn on_error(&self, socket: &mut SocketCtx<'_>, error: &ProtocolError) {
        let _ = (socket, error);
    }

    /// The socket closed with `code` (1005: the peer gave none; 1006: the
    /// connection dropped without a closing handshake). Group memberships
    /// have ended.
    fn on_close(&self, socket: &Socket, code: CloseCode) {
        let _ = (socket, code);
    }
}

/// A socket's identity and the hub, as the handler sees them.
#[derive(Debug)]
pub struct Socket {
    id: SocketId,
    path: String,
    hub: Hub,
}

impl Socket {
    pub(crate) fn new(id: SocketId, path: String, hub: Hub) -> Self {
        Socket { id, path, hub }
    }

    pub(crate) fn with<'a>(&'a mut self, conn: &'a mut Connection) -> SocketCtx<'a> {
        SocketCtx { socket: self, conn }
    }

    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The request target the socket was opened on (path and query).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

/// A socket inside a handler call: sends go straight to its connection,
/// without the hub's outbox.
#[derive(Debug)]
pub struct SocketCtx<'a> {
    socket: &'a mut Socket,
    conn: &'a mut Connection,
}

impl SocketCtx<'_> {
    pub fn id(&self) -> SocketId {
        self.socket.id
    }

    pub fn path(&self) -> &str {
        &self.socket.path
    }

    pub fn hub(&self) -> &Hub {
        &self.socket.hub
    }

    /// Queue a message on this socket.
    pub fn send(&mut self, message: Message) -> Result<(), ApiError> {
        self.conn.send(message)
    }

    /// Start closing this socket.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiError> {
        self.conn.close(code, reason)
    }
}
