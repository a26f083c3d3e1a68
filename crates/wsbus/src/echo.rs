//! The echo application behind `wsbus echo`: conformance and benchmarks.

use wsbus_proto::Message;

use crate::handler::{Handler, Socket, SocketCtx};

/// The path whose sockets share every message.
pub const BROADCAST_PATH: &str = "/broadcast";

/// The group that sockets on [`BROADCAST_PATH`] join.
const BROADCAST_GROUP: &str = "broadcast";

/// Echoes every message to its sender, as received (text as text, binary as
/// binary). On [`BROADCAST_PATH`] every message goes to every socket on that
/// path, the sender included, through the hub's group API (encoded once).
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

fn is_broadcast(path: &str) -> bool {
    path.split('?').next() == Some(BROADCAST_PATH)
}

impl Handler for Echo {
    fn on_open(&self, socket: &mut SocketCtx<'_>) {
        if is_broadcast(socket.path()) {
            socket.hub().add_to_group(BROADCAST_GROUP, socket.id());
        }
    }

    fn on_message(&self, socket: &mut SocketCtx<'_>, message: Message) {
        if is_broadcast(socket.path()) {
            socket.hub().send_to_group(BROADCAST_GROUP, message);
        } else {
            // The socket may be closing; a dropped echo is then correct.
            let _ = socket.send(message);
        }
    }

    fn on_close(&self, _socket: &Socket, _code: wsbus_proto::CloseCode) {}
}
