//! Traffic capture through the admin API of `wsbus serve`, as a process: a
//! capture of a user's chat holds the messages both ways and not the token
//! of the handshake (nor the JWT secret); a client that sends 100 MB into a
//! small capture is capped and counted, not slowed; a configured field of a
//! bus message is redacted; bad requests are refused naming what is wrong.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use wsbus_test_support::frame::{OP_TEXT, masked_frame, read_frame};
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::wire::{body, http_exchange, status_code, upgrade};

mod common;
use common::Scratch;

const TOKEN: &str = "the-admin-token-of-the-capture-test-0123";
const SECRET: &str = "the-jwt-secret-of-the-capture-test-01234";

/// How long a reply may take on a loaded machine (not a timing assert: a
/// bound on a wait that normally ends at once).
const PATIENCE: Duration = Duration::from_secs(60);

/// `wsbus serve` with the admin token, a JWT secret, the demo, no message
/// rate (the flood is the point) and `capture_redact = ["password"]`.
fn server(name: &str) -> (ServerProcess, Scratch) {
    let scratch = Scratch::new(name);
    let config = scratch.file(
        "wsbus.toml",
        &format!(
            "demo = true\n[auth]\njwt_secret = \"{SECRET}\"\n[limits]\nmessages_per_second = 0\n\
             [admin]\ntoken = \"{TOKEN}\"\ncapture_redact = [\"password\"]\n"
        ),
    );
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &["serve", "--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    (server, scratch)
}

fn jwt(user: &str) -> String {
    let exp = (std::time::SystemTime::now() + Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// One request on its own connection: the whole response.
fn request(addr: &str, method: &str, path: &str, token: Option<&str>, json: &str) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    http_exchange(addr, &head, json.as_bytes(), PATIENCE).expect("an HTTP response")
}

fn admin(addr: &str, method: &str, path: &str, json: &str) -> (u16, String) {
    let response = request(addr, method, path, Some(TOKEN), json);
    (status_code(&response), body(&response).to_owned())
}

/// Start a capture; its id.
fn start(addr: &str, selector: Value) -> String {
    let (status, reply) = admin(addr, "POST", "/admin/api/capture", &selector.to_string());
    assert_eq!(status, 201, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    reply["id"].as_str().unwrap().to_owned()
}

/// A capture's JSON lines, parsed.
fn download(addr: &str, id: &str) -> (String, Vec<Value>) {
    let response = request(
        addr,
        "GET",
        &format!("/admin/api/capture/{id}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status_code(&response), 200, "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/x-ndjson"),
        "{response}"
    );
    let text = body(&response).to_owned();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (text, lines)
}

fn info(addr: &str, id: &str) -> Value {
    let (status, list) = admin(addr, "GET", "/admin/api/capture", "");
    assert_eq!(status, 200, "{list}");
    let list: Value = serde_json::from_str(&list).unwrap();
    list["captures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .expect("the capture is listed")
}

fn send_text(stream: &mut TcpStream, text: &str) {
    stream
        .write_all(&masked_frame(OP_TEXT, text.as_bytes(), [1, 2, 3, 4]))
        .unwrap();
}

/// The next text message (pings and other frames skipped).
fn read_text(stream: &mut TcpStream) -> String {
    loop {
        let frame = read_frame(stream).expect("a frame");
        if frame.opcode == OP_TEXT {
            return String::from_utf8(frame.payload).unwrap();
        }
    }
}

#[test]
fn a_user_capture_holds_the_chat_both_ways_and_not_the_token() {
    let (server, _scratch) = server("capture-chat");
    let addr = &server.addr;
    let token = jwt("ada");
    // A socket opened before the capture starts is captured too.
    let mut ada = upgrade(addr, &format!("/chat?access_token={token}"), "", PATIENCE)
        .expect("101")
        .stream;
    assert!(read_text(&mut ada).starts_with("Welcome to our chat"));
    let id = start(addr, json!({"user": "ada", "duration": "5m"}));
    send_text(&mut ada, "hello from ada");
    assert_eq!(read_text(&mut ada), "hello from ada");
    send_text(
        &mut ada,
        &json!({"text": "json", "access_token": token, "password": "hunter2"}).to_string(),
    );
    assert!(read_text(&mut ada).contains("\"json\""));
    // Another user's socket is not captured.
    let mut bob = upgrade(
        addr,
        &format!("/chat?access_token={}", jwt("bob")),
        "",
        PATIENCE,
    )
    .expect("101")
    .stream;
    read_text(&mut bob);
    send_text(&mut bob, "from bob");
    assert_eq!(read_text(&mut bob), "from bob");

    // Readable while running; the writer is off the socket's path, so wait.
    let mut captured = download(addr, &id);
    let deadline = std::time::Instant::now() + PATIENCE;
    while captured.1.len() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        captured = download(addr, &id);
    }
    let (text, lines) = captured;
    let payloads: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["direction"].as_str().unwrap(),
                l["payload"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(payloads.contains(&("in", "hello from ada")), "{text}");
    assert!(payloads.contains(&("out", "hello from ada")), "{text}");
    assert!(lines.iter().all(|l| l["opcode"] == "text"), "{text}");
    // Bob's message reaches Ada (the chat's group): it is out on her
    // socket, never in.
    assert!(payloads.contains(&("out", "from bob")), "{text}");
    assert!(!payloads.contains(&("in", "from bob")), "{text}");
    assert!(
        lines.iter().all(|l| l["socket"] == lines[0]["socket"]),
        "only Ada's socket: {text}"
    );
    assert!(!text.contains(&token), "the token: {text}");
    assert!(!text.contains(SECRET), "the secret: {text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "a configured field is redacted: {text}"
    );

    let listed = info(addr, &id);
    assert_eq!(listed["selector"], "user");
    assert_eq!(listed["value"], "ada");
    assert_eq!(listed["running"], true);
    let (status, stopped) = admin(addr, "DELETE", &format!("/admin/api/capture/{id}"), "");
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(info(addr, &id)["running"], false);
}

/// 1,600 × 64 KiB (100 MiB) through a capture of 256 KiB: every message
/// echoed back, the capture capped with drops counted.
#[test]
fn a_capture_of_a_100_mb_client_is_capped_and_does_not_slow_it() {
    const MESSAGES: usize = 1_600;
    const SIZE: usize = 64 << 10;
    const CAP: usize = 256 << 10;
    let (server, _scratch) = server("capture-flood");
    let addr = &server.addr;
    let id = start(
        addr,
        json!({"address": "127.0.0.1", "duration": "10m", "max_bytes": CAP}),
    );
    let mut socket = upgrade(addr, "/chat", "", PATIENCE).expect("101").stream;
    read_text(&mut socket); // the welcome
    let mut reader = socket.try_clone().unwrap();
    // The key 0 keeps the frame the same bytes as its payload: built once.
    let frame = masked_frame(OP_TEXT, &vec![b'x'; SIZE], [0; 4]);
    let writer = std::thread::spawn(move || {
        for _ in 0..MESSAGES {
            socket.write_all(&frame).unwrap();
        }
        socket
    });
    for n in 0..MESSAGES {
        let frame = read_frame(&mut reader).unwrap_or_else(|e| panic!("echo {n}: {e}"));
        assert_eq!(frame.opcode, OP_TEXT);
        assert_eq!(frame.payload.len(), SIZE);
    }
    drop(writer.join().unwrap());

    let listed = info(addr, &id);
    let bytes = listed["bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes <= CAP as u64, "{listed}");
    assert!(listed["dropped"].as_u64().unwrap() > 0, "{listed}");
    assert_eq!(listed["max_bytes"], CAP);
    let (text, lines) = download(addr, &id);
    assert_eq!(text.len() as u64, bytes);
    assert!(
        lines
            .iter()
            .any(|l| l["size"] == SIZE && l["opcode"] == "text")
    );
}

/// A bus client over WebSocket, subscribed to `/chat/room`; with `held`,
/// its connect is held (deliveries go with it). Its socket and clientId.
fn bus_client(addr: &str, held: bool) -> (TcpStream, String) {
    let mut bus = upgrade(addr, "/amb", "", PATIENCE).expect("101").stream;
    send_text(
        &mut bus,
        &json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["websocket"]}])
        .to_string(),
    );
    let reply: Value = serde_json::from_str(&read_text(&mut bus)).unwrap();
    let client = reply[0]["clientId"]
        .as_str()
        .expect("a clientId")
        .to_owned();
    send_text(
        &mut bus,
        &json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "websocket"},
            {"channel": "/meta/subscribe", "clientId": client, "subscription": "/chat/room"}])
        .to_string(),
    );
    let replies = read_text(&mut bus);
    assert!(replies.contains("/meta/subscribe"), "{replies}");
    if held {
        send_text(
            &mut bus,
            &json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "websocket"}])
                .to_string(),
        );
    }
    (bus, client)
}

#[test]
fn a_channel_capture_redacts_configured_fields_of_bus_messages() {
    let (server, _scratch) = server("capture-bus");
    let addr = &server.addr;
    let id = start(addr, json!({"channel": "/chat/room", "duration": "60s"}));
    // A subscriber with a held connect, and a publisher (also subscribed:
    // the default channel rule lets subscribers publish).
    let (mut subscriber, _) = bus_client(addr, true);
    let (mut publisher, client) = bus_client(addr, false);
    send_text(
        &mut publisher,
        &json!([{"channel": "/chat/room", "clientId": client,
            "data": {"text": "hi", "nested": [{"Password": "hunter2"}]}}])
        .to_string(),
    );
    assert!(read_text(&mut publisher).contains("\"successful\":true"));
    let delivered = read_text(&mut subscriber);
    assert!(
        delivered.contains("hunter2"),
        "the subscriber gets the data as sent"
    );
    // The publish's frame and the delivery, from the writer task.
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut lines = Vec::new();
    while std::time::Instant::now() < deadline {
        lines = download(addr, &id).1;
        if lines
            .iter()
            .filter(|l| l["bayeux"]["data"]["text"] == "hi")
            .count()
            >= 2
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let messages: Vec<&Value> = lines
        .iter()
        .filter(|l| l["bayeux"]["data"]["text"] == "hi")
        .collect();
    assert!(
        messages
            .iter()
            .any(|l| l["direction"] == "in" && l["clientId"] == client.as_str()),
        "{text}"
    );
    assert!(messages.iter().any(|l| l["direction"] == "out"), "{text}");
    assert!(
        messages.iter().all(|l| l["channel"] == "/chat/room"
            && l["bayeux"]["data"]["nested"][0]["Password"] == "<redacted>"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        lines.iter().all(|l| l["transport"] == "websocket"),
        "{text}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l["channel"] == "/meta/subscribe" || l["channel"] == "/meta/handshake"),
        "only the selected channel's messages: {text}"
    );
}

#[test]
fn bad_capture_requests_are_refused_naming_what_is_wrong() {
    let (server, _scratch) = server("capture-bad");
    let addr = &server.addr;
    for (body, code, names) in [
        (
            r#"{"room": "x", "duration": "60s"}"#,
            "invalid_selector",
            "room",
        ),
        (
            r#"{"user": "a", "channel": "/b", "duration": "60s"}"#,
            "invalid_selector",
            "one selector",
        ),
        (
            r#"{"duration": "60s"}"#,
            "invalid_selector",
            "selector is required",
        ),
        (
            r#"{"user": "a", "duration": "soon"}"#,
            "invalid_duration",
            "duration",
        ),
        (
            r#"{"user": "a", "duration": "2h"}"#,
            "invalid_duration",
            "1h",
        ),
        (r#"{"user": "a"}"#, "invalid_duration", "duration"),
        (
            r#"{"address": "not-an-ip", "duration": "60s"}"#,
            "invalid_selector",
            "address",
        ),
        ("not json", "bad_request", "expected"),
    ] {
        let (status, reply) = admin(addr, "POST", "/admin/api/capture", body);
        assert_eq!(status, 400, "{body}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["error"], code, "{body}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(names),
            "{body}: {reply}"
        );
    }
    for (method, path) in [
        ("GET", "/admin/api/capture/12345"),
        ("DELETE", "/admin/api/capture/12345"),
        ("GET", "/admin/api/capture/nonsense"),
    ] {
        let (status, reply) = admin(addr, method, path, "");
        assert_eq!(status, 404, "{method} {path}: {reply}");
    }
    let selector = r#"{"user": "a", "duration": "60s"}"#;
    for token in [None, Some("a-wrong-admin-token-of-the-capture-test")] {
        for (method, path, body) in [
            ("POST", "/admin/api/capture", selector),
            ("GET", "/admin/api/capture", ""),
            ("GET", "/admin/api/capture/1", ""),
        ] {
            let response = request(addr, method, path, token, body);
            assert_eq!(status_code(&response), 401, "{method} {path}: {response}");
        }
    }
    let (_, list) = admin(addr, "GET", "/admin/api/capture", "");
    assert_eq!(list, r#"{"captures":[]}"#, "no refused request started one");
}

/// A long-polling exchange: its body and response, as the bus sees them.
fn long_poll(addr: &str, batch: Value) -> Value {
    let response = request(addr, "POST", "/amb", None, &batch.to_string());
    assert_eq!(status_code(&response), 200, "{response}");
    serde_json::from_str(body(&response)).unwrap()
}

#[test]
fn a_channel_capture_sees_long_polling_too() {
    let (server, _scratch) = server("capture-lp");
    let addr = &server.addr;
    let id = start(addr, json!({"channel": "/chat/lp", "duration": "60s"}));
    let reply = long_poll(
        addr,
        json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"]}]),
    );
    let client = reply[0]["clientId"]
        .as_str()
        .expect("a clientId")
        .to_owned();
    long_poll(
        addr,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": "/chat/lp"}]),
    );
    long_poll(
        addr,
        json!([{"channel": "/chat/lp", "clientId": client, "data": {"text": "lp", "password": "hunter2"}}]),
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut lines = Vec::new();
    while std::time::Instant::now() < deadline {
        lines = download(addr, &id).1;
        if lines
            .iter()
            .any(|l| l["direction"] == "out" && l["bayeux"].is_object())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        lines.iter().any(|l| l["transport"] == "long-polling"
            && l["socket"].is_null()
            && l["direction"] == "in"
            && l["bayeux"]["data"]["text"] == "lp"
            && l["bayeux"]["data"]["password"] == "<redacted>"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["direction"] == "out" && l["channel"] == "/chat/lp"),
        "the publish's reply: {text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}
