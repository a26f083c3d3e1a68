//! A JavaScript "HTTP WebSockets" controller's chat, almost line for line:
//! the upgrade decision (its `exports.GET`) and the event handler (its
//! `exports.webSocketEvent`). `wsbus serve` runs this file at `/chat`;
//! `cargo run -p wsbus-server --example chat` runs it alone on port 8080.

use wsbus::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use wsbus::proto::Message;

#[derive(Debug)]
pub(crate) struct Chat;

impl WebSocketApp for Chat {
    type Data = ();

    // exports.GET
    fn upgrade(&self, req: &HandshakeRequest) -> Upgrade<()> {
        if !req.is_websocket {
            return Upgrade::status(404);
        }
        Upgrade::Accept(WebSocketConfig::new(()).sub_protocols(["text"]))
    }

    // exports.webSocketEvent
    fn on_event(&self, event: WsEvent<'_, ()>) {
        let web_socket_lib = event.hub();

        if let EventKind::Open = event.kind {
            // Send message back to client
            let name = event
                .socket
                .user
                .as_ref()
                .map_or("anonymous", |user| &user.display_name);
            web_socket_lib.send(
                event.socket.id,
                Message::text(format!("Welcome to our chat {name}")),
            );

            // Add client into a group
            web_socket_lib.add_to_group("chat", event.socket.id);

            tracing::info!("New group size {}", web_socket_lib.group_size("chat"));
        }

        if let EventKind::Message(message) = &event.kind {
            // Propagate message to group
            web_socket_lib.send_to_group("chat", message.clone());
        }

        if let EventKind::Close(_) = event.kind {
            tracing::info!("User left the chat");
        }
    }
}

#[allow(dead_code)] // the entry point when built as an example; unused inside `wsbus serve`
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let runtime = wsbus::Runtime::new(wsbus::ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let server = wsbus::Server::new(runtime).websocket("/chat", Chat);
    server
        .serve(listener, async {
            tokio::signal::ctrl_c().await.unwrap_or(())
        })
        .await;
    Ok(())
}
