//! The runtime's security over real sockets: tokens at the upgrade (401 with
//! the reason), a socket closed with 1008 when its token expires, a refresh
//! that keeps it open, the per-socket message rate, and a bus session whose
//! `ext.access_token` is checked by the engine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsbus::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use wsbus::auth::{AuthConfig, Secret, TokenVerifier};
use wsbus::client::{self, ClientOptions, WebSocket};
use wsbus::limits::RateLimit;
use wsbus::proto::{CloseCode, Event, Message};
use wsbus::security::{Security, TokenAuth};
use wsbus::{Runtime, Server, ServerConfig};

const SECRET: &str = "a test secret of at least 32 bytes!!";

fn token(sub: &str, lifetime: Duration) -> String {
    let exp = (SystemTime::now() + lifetime)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::default(),
        &json!({"sub": sub, "name": format!("{sub}!"), "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Echoes, greets with the user's name, and refreshes its token when a
/// message says `refresh <token>`.
struct App;

impl WebSocketApp for App {
    type Data = ();

    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<()> {
        if !request.is_websocket {
            return Upgrade::status(404);
        }
        assert!(
            !request.params.contains_key("access_token"),
            "the token is not handed to applications"
        );
        if request.claims.is_some() {
            assert!(
                !request.headers.contains_key("authorization"),
                "nor is a verified Authorization header"
            );
        }
        Upgrade::Accept(WebSocketConfig::new(()))
    }

    fn on_event(&self, mut event: WsEvent<'_, ()>) {
        match event.kind.clone() {
            EventKind::Open => {
                let name = event.socket.user.as_ref().map(|u| u.display_name.clone());
                let _ = event.send(Message::text(format!("hello {}", name.unwrap_or_default())));
            }
            EventKind::Message(Message::Text(text)) => {
                let reply = match text.as_str().strip_prefix("refresh ") {
                    Some(token) => match event.refresh_token(token) {
                        Ok(_) => "refreshed".to_owned(),
                        Err(error) => format!("refused: {error}"),
                    },
                    None => text.as_str().to_owned(),
                };
                let _ = event.send(Message::text(reply));
            }
            _ => {}
        }
    }
}

async fn start(security: Security) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let runtime = Runtime::builder(ServerConfig::default())
        .security(security)
        .build();
    let bus = wsbus::bus::Bus::with_runtime(
        wsbus::bayeux::BusConfig::default(),
        &runtime,
        wsbus::bus::ChannelSchemas::default(),
    );
    // A service that answers with what the sender's token claims.
    bus.add_service(
        "/service/whoami",
        |call: wsbus::bus::ServiceCall| async move {
            let claims = call.claims.as_deref().cloned().map(Value::Object);
            let _ = call.reply(json!({"user": call.user.as_deref(), "claims": claims}));
        },
    )
    .unwrap();
    let server = Server::new(runtime)
        .websocket("/ws", App)
        .websocket("/amb", wsbus::bus::BusSocket::new(bus));
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

fn token_auth(required: bool) -> Security {
    let verifier = TokenVerifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        ..AuthConfig::default()
    })
    .unwrap();
    Security {
        auth: Some(TokenAuth { verifier, required }),
        ..Security::default()
    }
}

async fn text(ws: &mut WebSocket) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
            Ok(Ok(Some(Event::Message(Message::Text(text))))) => return text.as_str().to_owned(),
            Ok(Ok(Some(Event::Ping(_) | Event::Pong(_)))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Waits for the close, returning its code and reason.
async fn closed(ws: &mut WebSocket) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
            Ok(Ok(Some(Event::Close(Some(frame))))) => {
                return (frame.code, frame.reason.to_string());
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// The raw response head to an upgrade request with `extra` header lines.
async fn upgrade_response(addr: &str, target: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn refused_tokens_get_401_with_the_reason_and_never_echo_the_token() {
    let addr = start(token_auth(true)).await;
    let missing = upgrade_response(&addr, "/ws", "").await;
    assert!(missing.starts_with("HTTP/1.1 401"), "{missing}");
    assert!(
        missing.contains(
            r#"www-authenticate: Bearer error="invalid_token", error_description="Missing token""#
        ),
        "{missing}"
    );
    let stale = encode(
        &Header::default(),
        &json!({"sub": "ana", "exp": 1_000_000}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let response =
        upgrade_response(&addr, "/ws", &format!("Authorization: Bearer {stale}\r\n")).await;
    assert!(response.contains("Token expired"), "{response}");
    assert!(!response.contains(&stale), "the token is not echoed");
    let forged = encode(
        &Header::default(),
        &json!({"sub": "ana"}),
        &EncodingKey::from_secret(b"another secret, also 32 bytes long"),
    )
    .unwrap();
    let response = upgrade_response(&addr, &format!("/ws?access_token={forged}"), "").await;
    assert!(response.contains("Bad signature"), "{response}");
    let huge = "a".repeat(64 * 1024);
    let response = upgrade_response(&addr, &format!("/ws?access_token={huge}"), "").await;
    assert!(
        response.starts_with("HTTP/1.1 401") || response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(200)]
    );
    // Still serving.
    let url = format!(
        "ws://{addr}/ws?access_token={}",
        token("ana", Duration::from_secs(60))
    );
    let mut ws = client::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&mut ws).await, "hello ana!");
}

#[tokio::test]
async fn a_socket_closes_with_1008_when_its_token_expires_unless_refreshed() {
    let addr = start(token_auth(true)).await;
    let short = |sub| token(sub, Duration::from_secs(2));
    let mut expiring = client::connect(
        &format!("ws://{addr}/ws?access_token={}", short("ana")),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let mut refreshed = client::connect(
        &format!("ws://{addr}/ws?access_token={}", short("bob")),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(text(&mut expiring).await, "hello ana!");
    assert_eq!(text(&mut refreshed).await, "hello bob!");
    let other_user = token("eve", Duration::from_secs(600));
    refreshed
        .send(Message::text(format!("refresh {other_user}")))
        .await
        .unwrap();
    assert_eq!(text(&mut refreshed).await, "refused: Token of another user");
    let longer = token("bob", Duration::from_secs(600));
    refreshed
        .send(Message::text(format!("refresh {longer}")))
        .await
        .unwrap();
    assert_eq!(text(&mut refreshed).await, "refreshed");

    let (code, reason) = closed(&mut expiring).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::POLICY_VIOLATION, "token expired")
    );
    // Past the old expiry, the refreshed socket still answers.
    refreshed.send(Message::text("still here")).await.unwrap();
    assert_eq!(text(&mut refreshed).await, "still here");
}

#[tokio::test]
async fn a_socket_over_its_message_rate_is_closed_and_others_are_served() {
    let addr = start(Security {
        message_rate: Some(RateLimit::new(10)),
        ..Security::default()
    })
    .await;
    let url = format!("ws://{addr}/ws");
    let mut flood = client::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let mut calm = client::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    text(&mut flood).await;
    text(&mut calm).await;
    for i in 0..100 {
        if flood.send(Message::text(format!("{i}"))).await.is_err() {
            break;
        }
    }
    let (code, reason) = closed(&mut flood).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::POLICY_VIOLATION, "message rate exceeded")
    );
    calm.send(Message::text("fine")).await.unwrap();
    assert_eq!(text(&mut calm).await, "fine");
}

#[tokio::test]
async fn the_bus_checks_ext_access_token_and_refuses_with_401() {
    let addr = start(token_auth(true)).await;
    // The bus socket opens without a token although tokens are required:
    // Bayeux clients carry theirs in the handshake's ext (browsers cannot set
    // headers on a WebSocket), and the engine refuses handshakes without.
    let mut ws = client::connect(&format!("ws://{addr}/amb"), ClientOptions::default())
        .await
        .unwrap();
    let handshake = |ext: Value| {
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["websocket"], "ext": ext}])
        .to_string()
    };
    ws.send(Message::text(handshake(json!({"access_token": "garbage"}))))
        .await
        .unwrap();
    let reply: Value = serde_json::from_str(&text(&mut ws).await).unwrap();
    assert_eq!(reply[0]["error"], "401::Malformed token");
    assert_eq!(reply[0]["advice"]["reconnect"], "none");
    ws.send(Message::text(handshake(json!({})))).await.unwrap();
    let reply: Value = serde_json::from_str(&text(&mut ws).await).unwrap();
    assert_eq!(reply[0]["error"], "401::Missing token");
    let ext = json!({"access_token": token("ana", Duration::from_secs(60))});
    ws.send(Message::text(handshake(ext))).await.unwrap();
    let reply: Value = serde_json::from_str(&text(&mut ws).await).unwrap();
    assert_eq!(reply[0]["successful"], true, "{reply}");
    // The token's claims reach the bus's server-side code.
    let client = reply[0]["clientId"].as_str().unwrap().to_owned();
    let ask = json!([{"channel": "/service/whoami", "clientId": client, "data": {}, "id": "w"}]);
    ws.send(Message::text(ask.to_string())).await.unwrap();
    let answer = loop {
        let batch: Value = serde_json::from_str(&text(&mut ws).await).unwrap();
        if let Some(found) = batch
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["channel"] == "/service/whoami" && m.get("data").is_some())
        {
            break found.clone();
        }
    };
    assert_eq!(answer["data"]["user"], "ana", "{answer}");
    assert_eq!(answer["data"]["claims"]["sub"], "ana", "{answer}");
    assert_eq!(answer["data"]["claims"]["name"], "ana!", "{answer}");
    assert!(answer["data"]["claims"]["exp"].is_u64(), "{answer}");

    // A token the upgrade presents is checked there, and then stands for
    // the handshakes on that socket.
    let bad = upgrade_response(&addr, "/amb?access_token=garbage", "").await;
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    let url = format!(
        "ws://{addr}/amb?access_token={}",
        token("bob", Duration::from_secs(60))
    );
    let mut ws = client::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    ws.send(Message::text(handshake(json!({})))).await.unwrap();
    let reply: Value = serde_json::from_str(&text(&mut ws).await).unwrap();
    assert_eq!(
        reply[0]["successful"], true,
        "the socket's own token: {reply}"
    );
}

/// An upgrade's status line, from a client bound to `local` (an address of
/// 127/8: every one of them is this host).
async fn upgrade_status_from(local: &str, addr: &str) -> (TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!("no response head: {other:?}"),
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn a_thousand_connections_from_one_address_fill_its_limit_and_not_anothers() {
    let addr = start(Security {
        connections_per_ip: Some(wsbus::limits::ConnectionLimiter::new(1_000)),
        ..Security::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..1_000 {
        let (stream, head) = upgrade_status_from("127.0.0.1", &addr).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        open.push(stream);
    }
    let (_, head) = upgrade_status_from("127.0.0.1", &addr).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let (_, head) = upgrade_status_from("127.0.0.2", &addr).await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "another address is served: {head}"
    );
    // A connection that ends gives its place back.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (stream, head) = upgrade_status_from("127.0.0.1", &addr).await;
        if head.starts_with("HTTP/1.1 101") {
            open.push(stream);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back: {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deeply_nested_message_fails_the_schema_without_overflowing_the_stack() {
    let schema = wsbus::schema::Schema::from_value(
        "nested.json",
        &json!({"type": "object", "properties": {"a": {"$ref": "#"}}}),
    )
    .unwrap();
    let mut schemas = std::collections::HashMap::new();
    schemas.insert(
        "/ws".to_owned(),
        wsbus::security::PathSchema::new(schema, wsbus::security::OnInvalid::Close),
    );
    let addr = start(Security {
        schemas,
        ..Security::default()
    })
    .await;
    let mut ws = client::connect(&format!("ws://{addr}/ws"), ClientOptions::default())
        .await
        .unwrap();
    let deep = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
    ws.send(Message::text(deep)).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::INVALID_PAYLOAD);
    assert!(
        reason.starts_with("invalid message: : not JSON"),
        "{reason}"
    );
    // The server is still there.
    let mut again = client::connect(&format!("ws://{addr}/ws"), ClientOptions::default())
        .await
        .unwrap();
    again
        .send(Message::text(r#"{"a": {"a": {}}}"#))
        .await
        .unwrap();
    // The greeting is not JSON: it was not sent (outbound schema); the echo is.
    assert_eq!(text(&mut again).await, r#"{"a": {"a": {}}}"#);
}

#[tokio::test]
async fn connections_per_user_count_the_tokens_subject_not_the_address() {
    let mut security = token_auth(true);
    security.connections_per_user = Some(wsbus::limits::ConnectionLimiter::new(2));
    let addr = start(security).await;
    let ana = token("ana", Duration::from_secs(60));
    let url = format!("ws://{addr}/ws?access_token={ana}");
    let mut first = client::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let _second = client::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    let third = upgrade_response(&addr, &format!("/ws?access_token={ana}"), "").await;
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    assert!(
        third.to_ascii_lowercase().contains("retry-after: "),
        "{third}"
    );
    // Another user from the same address is served.
    let bob = format!(
        "ws://{addr}/ws?access_token={}",
        token("bob", Duration::from_secs(60))
    );
    let mut other = client::connect(&bob, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&mut other).await, "hello bob!");
    // A socket of ana's that closes gives its place back.
    assert_eq!(text(&mut first).await, "hello ana!");
    first.close(CloseCode::NORMAL, "").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = upgrade_response(&addr, &format!("/ws?access_token={ana}"), "").await;
        if again.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back: {again}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
