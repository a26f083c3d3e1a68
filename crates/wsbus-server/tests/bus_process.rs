//! The bus of `wsbus serve` over HTTP long-polling: bad input gets a precise
//! Bayeux error or HTTP status, and nothing is relayed that should not be.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;
use common::serve;
use serde_json::{Value, json};

/// POST `body` to `path`; returns the status and the body.
fn post(addr: &str, path: &str, body: &[u8], extra: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before reading a too-large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn bayeux(addr: &str, messages: Value) -> Vec<Value> {
    let (status, body) = post(addr, "/amb", messages.to_string().as_bytes(), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn handshake(addr: &str) -> String {
    let reply = bayeux(
        addr,
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]),
    );
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

#[test]
fn bad_input_gets_precise_errors() {
    let server = serve(&[("WSBUS_BUS__PUBLISH_TOKEN", "test-token")]);
    let addr = &server.addr;

    // Malformed JSON: a Bayeux error, not a crash.
    let (status, body) = post(addr, "/amb", b"[{\"channel\":", "");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"successful\":false") && body.contains("400::"),
        "{body}"
    );

    // A message without a channel.
    let reply = bayeux(addr, json!([{"id": "1", "data": {}}]));
    assert_eq!(reply[0]["successful"], false);
    assert_eq!(reply[0]["id"], "1");

    // An unknown client id: exactly 402::Unknown client, advice handshake.
    let reply = bayeux(
        addr,
        json!([{"channel": "/meta/connect", "clientId": "nope", "connectionType": "long-polling", "id": "2"}]),
    );
    assert_eq!(reply[0]["error"], "402::Unknown client");
    assert_eq!(reply[0]["advice"]["reconnect"], "handshake");

    // A subscribe to /meta/** and a publish without a subscription are refused.
    let client = handshake(addr);
    let reply = bayeux(
        addr,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": "/meta/**", "id": "3"}]),
    );
    assert_eq!(reply[0]["successful"], false, "{reply:?}");
    assert!(
        reply[0]["error"].as_str().unwrap().starts_with("403::"),
        "{reply:?}"
    );
    let reply = bayeux(
        addr,
        json!([{"channel": "/chat/x", "clientId": client, "data": "hi", "id": "4"}]),
    );
    assert_eq!(reply[0]["successful"], false, "{reply:?}");
    assert!(
        reply[0]["error"].as_str().unwrap().starts_with("403::"),
        "{reply:?}"
    );

    // 100,000 subscriptions in one batch: capped, the rest refused one by one.
    let many: Vec<Value> = (0..100_000)
        .map(|i| json!({"channel": "/meta/subscribe", "clientId": client, "subscription": format!("/s/{i}")}))
        .collect();
    let (status, body) = post(
        addr,
        "/amb",
        serde_json::to_vec(&many).unwrap().as_slice(),
        "",
    );
    // Either the body limit answers first (413) or the engine refuses past its cap.
    assert!(
        status == 413 || body.contains("403::Too many subscriptions"),
        "{status}: {}",
        &body[..body.len().min(300)]
    );

    // A 10 MB body gets 413 before it is read whole.
    let (status, _) = post(addr, "/amb", &vec![b' '; 10 << 20], "");
    assert_eq!(status, 413);

    // The server still serves.
    handshake(addr);
}

#[test]
fn server_side_publish_needs_the_bearer_token_and_reaches_subscribers() {
    let server = serve(&[("WSBUS_BUS__PUBLISH_TOKEN", "test-token")]);
    let addr = &server.addr;
    let body = json!({"channel": "/news", "data": {"headline": "hello"}}).to_string();
    let (status, _) = post(addr, "/api/publish", body.as_bytes(), "");
    assert_eq!(status, 401);
    let (status, _) = post(
        addr,
        "/api/publish",
        body.as_bytes(),
        "Authorization: Bearer wrong\r\n",
    );
    assert_eq!(status, 401);

    let client = handshake(addr);
    bayeux(
        addr,
        json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling"}]),
    );
    bayeux(
        addr,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": "/news"}]),
    );
    let (status, answer) = post(
        addr,
        "/api/publish",
        body.as_bytes(),
        "Authorization: Bearer test-token\r\n",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"recipients\":1"), "{answer}");
    let delivered = bayeux(
        addr,
        json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling"}]),
    );
    assert!(
        delivered
            .iter()
            .any(|m| m["channel"] == "/news" && m["data"]["headline"] == "hello"),
        "{delivered:?}"
    );
}
