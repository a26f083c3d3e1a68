//! The application behind `wsbus echo`: conformance and benchmarks.

use crate::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};

/// The path whose sockets share every message.
pub const BROADCAST_PATH: &str = "/broadcast";

/// The group that sockets on [`BROADCAST_PATH`] join.
const BROADCAST_GROUP: &str = "broadcast";

/// Echoes every message to its sender, as received (text as text, binary as
/// binary). On [`BROADCAST_PATH`] every message goes to every socket on that
/// path, the sender included, through the hub's group API (encoded once).
/// Any origin is accepted: conformance and load tools are not browsers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl WebSocketApp for Echo {
    type Data = ();

    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<()> {
        if !request.is_websocket {
            return Upgrade::status(404);
        }
        Upgrade::Accept(WebSocketConfig::new(()).any_origin())
    }

    fn on_event(&self, mut event: WsEvent<'_, ()>) {
        let broadcast = event.socket.path == BROADCAST_PATH;
        match &event.kind {
            EventKind::Open if broadcast => {
                event.hub().add_to_group(BROADCAST_GROUP, event.socket.id);
            }
            EventKind::Message(message) if broadcast => {
                event.hub().send_to_group(BROADCAST_GROUP, message.clone());
            }
            EventKind::Message(message) => {
                // The socket may be closing; a dropped echo is then correct.
                let message = message.clone();
                let _ = event.send(message);
            }
            _ => {}
        }
    }
}
