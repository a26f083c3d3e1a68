//! A Bayeux test node and clients that speak raw HTTP long-polling and
//! WebSocket to it, shared by the bus's test binaries.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsbus::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use wsbus::bayeux::BusConfig;
use wsbus::bus::{Bus, BusSocket};
use wsbus::client::{self, ClientOptions, WebSocket};
use wsbus::proto::Message;
use wsbus::{Runtime, Server, ServerConfig};

/// How long one step of a test may take before it fails.
pub(crate) const STEP: Duration = Duration::from_secs(5);

/// A plain WebSocket app at `/plain`: every socket joins the hub group
/// `lobby`, which service handlers can reach through `bus.hub()`.
pub(crate) struct Lobby;

impl WebSocketApp for Lobby {
    type Data = ();

    fn upgrade(&self, _request: &HandshakeRequest) -> Upgrade<()> {
        Upgrade::Accept(WebSocketConfig::new(()))
    }

    fn on_event(&self, event: WsEvent<'_, ()>) {
        if let EventKind::Open = event.kind {
            event.hub().add_to_group("lobby", event.socket.id);
        }
    }
}

/// A running test node: its address and its bus.
pub(crate) struct TestBus {
    pub(crate) addr: String,
    pub(crate) bus: Bus,
}

/// A server with the bus at `/amb` (WebSocket, and long-polling POSTs at
/// `/amb` and below) and the `Lobby` app at `/plain`. The long-polling
/// route takes the user from an `X-Test-User` header, standing in for the
/// HTTP session `wsbus serve` reads it from: what matters here is that the
/// transport's user reaches the service handler.
pub(crate) async fn start() -> TestBus {
    start_with(BusConfig::default()).await
}

/// [`start`] with a bus configured by `config`.
pub(crate) async fn start_with(config: BusConfig) -> TestBus {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let runtime = Runtime::new(ServerConfig::default());
    let bus = Bus::new(config, runtime.hub().clone());
    let lp = bus.clone();
    let long_poll = axum::routing::post(move |headers: HeaderMap, body: Bytes| {
        let bus = lp.clone();
        async move {
            let user = headers
                .get("x-test-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            bus.long_poll(&body, user.as_deref(), None).await
        }
    });
    let server = Server::new(runtime)
        .websocket("/amb", BusSocket::new(bus.clone()))
        .websocket("/plain", Lobby)
        .router(axum::Router::new().nest_service("/amb", long_poll));
    tokio::spawn(server.serve(listener, std::future::pending()));
    TestBus { addr, bus }
}

/// One long-polling request: POST `messages` to `/amb`, the response's
/// messages.
pub(crate) async fn post(addr: &str, messages: Value, user: Option<&str>) -> Vec<Value> {
    let body = messages.to_string();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let user = user
        .map(|u| format!("X-Test-User: {u}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /amb HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{user}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut response))
        .await
        .expect("long-poll response in time")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Handshake and first connect over long-polling; the client id.
pub(crate) async fn lp_client(addr: &str, user: Option<&str>) -> String {
    let reply = post(
        addr,
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]),
        user,
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    let reply = post(
        addr,
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]),
        user,
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    id
}

/// A `/meta/connect` over long-polling, held until something arrives.
pub(crate) async fn lp_connect(addr: &str, id: &str, user: Option<&str>) -> Vec<Value> {
    post(
        addr,
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]),
        user,
    )
    .await
}

pub(crate) async fn ws_open(addr: &str, path: &str) -> WebSocket {
    client::connect(&format!("ws://{addr}{path}"), ClientOptions::default())
        .await
        .unwrap()
}

pub(crate) async fn ws_send(ws: &mut WebSocket, messages: Value) {
    ws.send(Message::text(messages.to_string())).await.unwrap();
}

/// The next text message on `ws`, as JSON.
pub(crate) async fn ws_recv(ws: &mut WebSocket) -> Value {
    let message = tokio::time::timeout(STEP, ws.recv_message())
        .await
        .expect("a message in time")
        .unwrap()
        .expect("socket open");
    serde_json::from_slice(message.payload()).unwrap()
}

/// Messages on `ws` until one satisfies `pred`; every message seen.
pub(crate) async fn ws_until(ws: &mut WebSocket, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let batch = ws_recv(ws).await;
        let done = batch.as_array().unwrap().iter().any(&pred);
        seen.extend(batch.as_array().unwrap().iter().cloned());
        if done {
            return seen;
        }
    }
}

/// Handshake, first connect and a held connect over WebSocket; the client id.
pub(crate) async fn ws_client(ws: &mut WebSocket) -> String {
    ws_send(
        ws,
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"], "id": "h"}]),
    )
    .await;
    let reply = ws_recv(ws).await;
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    ws_send(
        ws,
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "c1"}]),
    )
    .await;
    assert_eq!(ws_recv(ws).await[0]["successful"], true);
    // Held: deliveries are pushed while it waits.
    ws_send(
        ws,
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "id": "c2"}]),
    )
    .await;
    id
}
