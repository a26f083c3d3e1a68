//! A wsbus endpoint inside an axum application: the common case for a Rust
//! service that already has HTTP routes.
//!
//! `cargo run -p wsbus --example axum`, then connect to ws://127.0.0.1:3000/ws.

use axum::Router;
use axum::routing::get;
use wsbus::{Runtime, ServerConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // One runtime per application: it holds the hub, sessions and limits.
    let runtime = Runtime::new(ServerConfig::default());
    let app = Router::new()
        .route(
            "/",
            get(|| async { "an axum route beside a WebSocket endpoint\n" }),
        )
        .route(
            "/ws",
            wsbus::axum::websocket(runtime.clone(), wsbus::echo::Echo),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Close every socket with 1001 and wait for them (drain timeout).
            runtime.shutdown().await;
        })
        .await
}
