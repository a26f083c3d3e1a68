//! The server over real TCP sockets: handshake answers, echo through our own
//! client, group fan-out, protocol faults and slow peers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsbus::client::{self, ClientOptions};
use wsbus::proto::{CloseCode, DeflateConfig, Event, Message};
use wsbus::{Hub, Runtime, Server, ServerConfig};

async fn start(config: ServerConfig) -> (String, Hub) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let runtime = Runtime::new(config);
    let hub = runtime.hub().clone();
    let server = Server::new(runtime).websocket_fallback(wsbus::echo::Echo);
    tokio::spawn(server.serve(listener, std::future::pending()));
    (addr.to_string(), hub)
}

async fn echo_server() -> String {
    start(ServerConfig::default()).await.0
}

/// Send raw bytes, read until the server closes, return what it sent.
async fn raw_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("server closes the connection")
        .unwrap();
    response
}

fn upgrade_request(replace: (&str, &str)) -> String {
    "GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .replace(replace.0, replace.1)
}

#[tokio::test]
async fn malformed_handshakes_get_400_naming_the_header() {
    let addr = echo_server().await;
    for (from, to, header) in [
        ("Upgrade: websocket\r\n", "", "Upgrade"),
        (
            "Connection: Upgrade",
            "Connection: keep-alive",
            "Connection",
        ),
        ("dGhlIHNhbXBsZSBub25jZQ==", "short", "Sec-WebSocket-Key"),
        ("Host: localhost\r\n", "", "Host"),
        ("GET", "PUT", "GET"),
    ] {
        let response =
            String::from_utf8(raw_exchange(&addr, upgrade_request((from, to)).as_bytes()).await)
                .unwrap();
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{response}"
        );
        assert!(response.contains(header), "{response} should name {header}");
        assert!(
            !response
                .to_ascii_lowercase()
                .contains("access-control-allow-origin")
        );
    }
}

#[tokio::test]
async fn wrong_version_gets_426_with_supported_version() {
    let addr = echo_server().await;
    let response = raw_exchange(
        &addr,
        upgrade_request(("Version: 13", "Version: 8")).as_bytes(),
    )
    .await;
    let response = String::from_utf8(response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{response}"
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let addr = echo_server().await;
    let cookie = format!("Cookie: {}\r\n\r\n", "a".repeat(20 * 1024));
    let request = upgrade_request(("\r\n\r\n", &format!("\r\n{cookie}")));
    let response = String::from_utf8(raw_exchange(&addr, request.as_bytes()).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
}

#[tokio::test]
async fn slow_handshake_is_dropped_at_the_timeout() {
    let (addr, _) = start(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 3 s");
    assert!(buf.is_empty(), "a dropped slow client gets no answer");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn client_echo_text_binary_fragmented_compressed() {
    let addr = echo_server().await;
    for deflate in [None, Some(DeflateConfig::default())] {
        let compressed = deflate.is_some();
        let mut ws = client::connect(
            &format!("ws://{addr}/echo"),
            ClientOptions {
                deflate,
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ws.negotiated().deflate.is_some(), compressed);
        let big_text = "{\"key\":\"value\",\"n\":12345}".repeat(4000);
        let cases = [
            Message::text("hello"),
            Message::text(""),
            Message::binary((0..=255u8).collect::<Vec<_>>()),
            Message::text(big_text.clone()),
            Message::binary(vec![42u8; 1 << 20]),
        ];
        for message in cases {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.recv_message().await.unwrap(), Some(message));
        }
        ws.send_fragmented(Message::text(big_text.clone()), 1000)
            .await
            .unwrap();
        assert_eq!(
            ws.recv_message().await.unwrap(),
            Some(Message::text(big_text))
        );
        ws.ping(&b"hb"[..]).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Event::Pong("hb".into())));
        assert_eq!(
            ws.close(CloseCode::NORMAL, "bye").await.unwrap(),
            CloseCode::NORMAL
        );
    }
}

#[tokio::test]
async fn broadcast_reaches_every_socket_on_the_path() {
    let (addr, hub) = start(ServerConfig::default()).await;
    let url = format!("ws://{addr}/broadcast");
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(
            client::connect(&url, ClientOptions::default())
                .await
                .unwrap(),
        );
    }
    let mut other = client::connect(&format!("ws://{addr}/other"), ClientOptions::default())
        .await
        .unwrap();
    wait_for(|| hub.group_size("broadcast") == 5).await;
    sockets[2].send(Message::text("to all")).await.unwrap();
    for ws in &mut sockets {
        assert_eq!(
            ws.recv_message().await.unwrap(),
            Some(Message::text("to all"))
        );
    }
    // The plain echo path is not part of the group.
    other.send(Message::text("mine")).await.unwrap();
    assert_eq!(
        other.recv_message().await.unwrap(),
        Some(Message::text("mine"))
    );
    // Membership ends when a socket closes.
    sockets
        .pop()
        .unwrap()
        .close(CloseCode::NORMAL, "")
        .await
        .unwrap();
    wait_for(|| hub.group_size("broadcast") == 4).await;
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 2 s");
}

/// Masked client frame bytes.
fn frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first_byte, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Upgrade a raw TCP stream; returns it after the 101 response.
async fn raw_upgrade(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request(("", "")).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    stream
}

/// Read until EOF; the close frame's code must be `code`.
async fn expect_close(mut stream: TcpStream, code: CloseCode) {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("server closes TCP")
        .unwrap();
    assert!(rest.len() >= 4, "expected a close frame, got {rest:?}");
    assert_eq!(rest[0], 0x88, "a final close frame, unmasked: {rest:?}");
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), code.0);
}

#[tokio::test]
async fn protocol_faults_get_their_close_code_and_a_tcp_close() {
    let addr = echo_server().await;
    let cases: [(Vec<u8>, CloseCode); 4] = [
        (frame(0x83, b""), CloseCode::PROTOCOL_ERROR), // reserved opcode
        (frame(0x81, b"\xff\xfe"), CloseCode::INVALID_PAYLOAD),
        (
            vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
            CloseCode::PROTOCOL_ERROR,
        ), // unmasked
        // A declared 1 GiB frame: refused from its header.
        (
            vec![0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4],
            CloseCode::MESSAGE_TOO_BIG,
        ),
    ];
    for (bytes, code) in cases {
        let mut stream = raw_upgrade(&addr).await;
        stream.write_all(&bytes).await.unwrap();
        expect_close(stream, code).await;
    }
}

#[tokio::test]
async fn a_peer_sending_one_byte_at_a_time_still_works() {
    let addr = echo_server().await;
    let mut stream = raw_upgrade(&addr).await;
    stream.set_nodelay(true).unwrap();
    let mut bytes = frame(0x81, "slow ☃".as_bytes());
    bytes.extend(frame(0x88, &1000u16.to_be_bytes()));
    for byte in bytes {
        stream.write_all(&[byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let echo = [&[0x81, 8][..], "slow ☃".as_bytes()].concat();
    assert_eq!(&reply[..echo.len()], &echo[..]);
    assert_eq!(&reply[echo.len()..], &[0x88, 2, 0x03, 0xE8]);
}

/// A server with an echo endpoint at `/ws` and `router` for plain HTTP.
async fn start_with_router(config: ServerConfig, router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(Runtime::new(config))
        .websocket("/ws", wsbus::echo::Echo)
        .router(router);
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr.to_string()
}

/// One request with `Connection: close`; returns the whole response.
async fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> String {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let response = raw_exchange(addr, &[head.as_bytes(), body].concat()).await;
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn router_handlers_see_the_connection_and_the_runtime() {
    use axum::Extension;
    use wsbus::ConnectionInfo;
    let router = axum::Router::new().route(
        "/who",
        axum::routing::get(
            |Extension(connection): Extension<ConnectionInfo>,
             Extension(runtime): Extension<Runtime>| async move {
                format!(
                    "peer={} tls={} sockets={}",
                    connection.peer.ip(),
                    connection.tls,
                    runtime.hub().len()
                )
            },
        ),
    );
    let addr = start_with_router(ServerConfig::default(), router).await;
    let response = request(&addr, "GET", "/who", b"").await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(
        response.ends_with("peer=127.0.0.1 tls=false sockets=0"),
        "{response}"
    );
    // A path the router does not know: its fallback (axum's empty 404).
    let response = request(&addr, "GET", "/nowhere", b"").await;
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
}

#[tokio::test]
async fn router_answers_a_wrong_method_with_405_and_allow() {
    let router = axum::Router::new().route("/only-get", axum::routing::get(|| async { "ok" }));
    let addr = start_with_router(ServerConfig::default(), router).await;
    let response = request(&addr, "DELETE", "/only-get", b"").await;
    assert!(
        response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{response}"
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nallow: get,head\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn router_bodies_over_max_body_bytes_get_413() {
    const LIMIT: usize = 1024;
    let router = axum::Router::new().route(
        "/upload",
        axum::routing::post(|body: bytes::Bytes| async move { body.len().to_string() }),
    );
    let config = ServerConfig {
        max_body_bytes: LIMIT,
        ..ServerConfig::default()
    };
    let addr = start_with_router(config, router).await;
    let response = request(&addr, "POST", "/upload", &[b'x'; LIMIT]).await;
    assert!(
        response.starts_with("HTTP/1.1 200 ") && response.ends_with("1024"),
        "{response}"
    );
    let response = request(&addr, "POST", "/upload", &[b'x'; LIMIT + 1]).await;
    assert!(
        response.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn upgrades_on_an_endpoint_path_skip_the_router() {
    // The router claims every method on `/ws`: a GET upgrade must still
    // reach the endpoint, and other methods the router.
    let router = axum::Router::new().route("/ws", axum::routing::any(|| async { "router" }));
    let addr = start_with_router(ServerConfig::default(), router).await;
    let mut ws = client::connect(&format!("ws://{addr}/ws"), ClientOptions::default())
        .await
        .unwrap();
    ws.send(Message::text("endpoint")).await.unwrap();
    assert_eq!(
        ws.recv_message().await.unwrap(),
        Some(Message::text("endpoint"))
    );
    let response = request(&addr, "POST", "/ws", b"").await;
    assert!(response.ends_with("router"), "{response}");
}

#[tokio::test]
async fn an_axum_websocket_route_in_the_router_upgrades_too() {
    let runtime = Runtime::new(ServerConfig::default());
    let router = axum::Router::new().route(
        "/in-router",
        wsbus::axum::websocket(runtime.clone(), wsbus::echo::Echo),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(runtime).router(router);
    tokio::spawn(server.serve(listener, std::future::pending()));
    let mut ws = client::connect(&format!("ws://{addr}/in-router"), ClientOptions::default())
        .await
        .unwrap();
    ws.send(Message::text("through the router")).await.unwrap();
    assert_eq!(
        ws.recv_message().await.unwrap(),
        Some(Message::text("through the router"))
    );
}
