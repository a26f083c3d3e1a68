//! A wsbus endpoint mounted in an axum `Router`, served by `axum::serve`.

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsbus::client::{self, ClientOptions};
use wsbus::proto::{CloseCode, Message};
use wsbus::{Runtime, ServerConfig};

#[tokio::test]
async fn endpoint_in_an_axum_router() {
    let runtime = Runtime::new(ServerConfig::default());
    let app = Router::new()
        .route("/", get(|| async { "plain axum" }))
        .route(
            "/ws",
            wsbus::axum::websocket(runtime.clone(), wsbus::echo::Echo),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut ws = client::connect(&format!("ws://{addr}/ws"), ClientOptions::default())
        .await
        .unwrap();
    ws.send(Message::text("through axum")).await.unwrap();
    assert_eq!(
        ws.recv_message().await.unwrap(),
        Some(Message::text("through axum"))
    );
    assert_eq!(runtime.hub().len(), 1);

    // The axum route beside it still answers.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("plain axum"),
        "{response}"
    );

    // Graceful shutdown through the runtime closes the socket with 1001.
    let shutdown = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.shutdown().await }
    });
    let mut code = None;
    while let Some(event) = ws.recv().await.unwrap() {
        if let wsbus::proto::Event::Close(frame) = event {
            code = frame.map(|f| f.code);
        }
    }
    assert_eq!(code, Some(CloseCode::GOING_AWAY));
    assert!(shutdown.await.unwrap(), "drained in time");
}
