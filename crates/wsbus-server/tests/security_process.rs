//! `wsbus serve`'s security configuration as a process: no secret in the
//! log even at `trace`, the demo off once `[auth]` is set (and a warning when
//! it is on a public listener), and a bad schema file stopping the start.

use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::wire::{self, http_exchange};

mod common;
use common::Scratch;

const SECRET: &str = "the-jwt-secret-of-this-test-0123456789";
const PUBLISH_TOKEN: &str = "the-publish-token-of-this-test";

fn jwt(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn http(addr: &str, request: &str) -> String {
    http_exchange(addr, request, b"", Duration::from_secs(20)).expect("an HTTP response")
}

/// The response head to an upgrade: a refusal is read to its end (the
/// server closes), a `101` only to its head (the socket is then dropped).
fn upgrade(addr: &str, target: &str, extra: &str) -> String {
    match wire::upgrade(addr, target, extra, Duration::from_secs(20)) {
        Ok(upgraded) => upgraded.head,
        Err(_) => http(
            addr,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            ),
        ),
    }
}

fn post(addr: &str, path: &str, extra: &str, body: &str) -> String {
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn no_token_secret_or_cookie_reaches_the_log_even_at_trace() {
    let scratch = Scratch::new("secrets");
    let config = scratch.file(
        "wsbus.toml",
        &format!(
            "demo = true\n[auth]\njwt_secret = \"{SECRET}\"\n[bus]\npublish_token = \"{PUBLISH_TOKEN}\"\n"
        ),
    );
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &["serve", "--config", &config, "--listen", "127.0.0.1:0"],
        &[("WSBUS_LOG", "trace")],
    );
    let addr = &server.addr;
    let exp = (std::time::SystemTime::now() + Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let in_query = jwt(json!({"sub": "query-user", "exp": exp}), SECRET);
    let in_header = jwt(json!({"sub": "header-user", "exp": exp}), SECRET);
    let forged = jwt(
        json!({"sub": "forger"}),
        "not the secret, but 32 bytes long",
    );
    let in_ext = jwt(json!({"sub": "ext-user", "exp": exp}), SECRET);

    assert!(
        upgrade(addr, &format!("/chat?access_token={in_query}"), "").starts_with("HTTP/1.1 101")
    );
    assert!(
        upgrade(
            addr,
            "/chat",
            &format!("Authorization: Bearer {in_header}\r\n")
        )
        .starts_with("HTTP/1.1 101")
    );
    let refused = upgrade(addr, &format!("/chat?access_token={forged}"), "");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let handshake = json!([{"channel": "/meta/handshake", "version": "1.0",
        "supportedConnectionTypes": ["long-polling"], "ext": {"access_token": in_ext}}]);
    let reply = post(addr, "/amb", "", &handshake.to_string());
    assert!(reply.contains("\"successful\":true"), "{reply}");
    let publish = json!({"channel": "/x", "data": 1}).to_string();
    let published = post(
        addr,
        "/api/publish",
        &format!("Authorization: Bearer {PUBLISH_TOKEN}\r\n"),
        &publish,
    );
    assert!(published.starts_with("HTTP/1.1 200"), "{published}");
    // A JWT publishes where its `channels` claim reaches, not elsewhere.
    let publisher = jwt(
        json!({"sub": "svc", "exp": exp, "channels": ["/x", "/y/**"]}),
        SECRET,
    );
    let allowed = post(
        addr,
        "/api/publish",
        &format!("Authorization: Bearer {publisher}\r\n"),
        &json!({"channel": "/y/z", "data": 1}).to_string(),
    );
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let elsewhere = post(
        addr,
        "/api/publish",
        &format!("Authorization: Bearer {publisher}\r\n"),
        &json!({"channel": "/z", "data": 1}).to_string(),
    );
    assert!(elsewhere.starts_with("HTTP/1.1 403"), "{elsewhere}");
    let denied = post(
        addr,
        "/api/publish",
        &format!("Authorization: Bearer {forged}\r\n"),
        &publish,
    );
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let login = http(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\nConnection: close\r\n\r\nuser=ana"
        ),
    );
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: wsbus_session="))
        .and_then(|rest| rest.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let with_cookie = upgrade(
        addr,
        "/chat",
        &format!("Cookie: wsbus_session={cookie}\r\nAuthorization: Bearer {in_header}\r\n"),
    );
    assert!(with_cookie.starts_with("HTTP/1.1 101"), "{with_cookie}");

    // A protocol refusal is logged at debug: its line shows that the log
    // had every level on.
    let old_version = http(
        addr,
        &format!(
            "GET /chat?access_token={in_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\nAuthorization: Bearer {in_header}\r\n\r\n"
        ),
    );
    assert!(old_version.starts_with("HTTP/1.1 426"), "{old_version}");

    // The log is written as things happen; give the last lines a moment
    // (generously: a loaded machine may take seconds to schedule the server).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(server.logged("access token") && server.logged("DEBUG wsbus::handshake"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log_tail(usize::MAX);
    assert!(server.logged("access token"), "refusals are logged: {log}");
    assert!(
        log.contains("DEBUG wsbus::handshake"),
        "debug logging is on: {log}"
    );
    for (what, secret) in [
        ("the JWT secret", SECRET),
        ("the publish token", PUBLISH_TOKEN),
        ("a token in the query", in_query.as_str()),
        ("a token in the header", in_header.as_str()),
        ("a refused token", forged.as_str()),
        ("a token in a handshake's ext", in_ext.as_str()),
        ("a publishing token", publisher.as_str()),
        ("a session cookie", cookie.as_str()),
    ] {
        // The signature part alone is enough to replay nothing, but no part
        // of a token may show: check the whole and each segment.
        let mut parts = vec![secret];
        parts.extend(secret.split('.').filter(|p| p.len() > 16));
        for part in parts {
            assert!(!log.contains(part), "{what} is in the log");
        }
    }
}

#[test]
fn the_demo_is_off_once_auth_is_set_and_warns_on_a_public_listener() {
    let scratch = Scratch::new("demo");
    let config = scratch.file(
        "wsbus.toml",
        &format!("[auth]\njwt_secret = \"{SECRET}\"\n"),
    );
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &["serve", "--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = &server.addr;
    let page = http(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(page.starts_with("HTTP/1.1 404"), "{page}");
    let login = http(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Length: 8\r\nConnection: close\r\n\r\nuser=ana"
        ),
    );
    assert!(login.starts_with("HTTP/1.1 404"), "no demo login: {login}");
    assert!(upgrade(addr, "/chat", "").starts_with("HTTP/1.1 404"));
    drop(server);

    let public = ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &["serve", "--listen", "0.0.0.0:0"],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !public.logged("demo") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(public.logged("not loopback"), "{}", public.log_tail(10));
}

#[test]
fn an_invalid_schema_stops_the_start_naming_the_key_and_the_file() {
    let scratch = Scratch::new("schema");
    let schema = scratch.file("bad.json", r#"{"type": 12}"#);
    let config = scratch.file(
        "wsbus.toml",
        &format!("[[websocket.schemas]]\npath = \"/chat\"\nschema = \"{schema}\"\n"),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["serve", "--config", &config, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("websocket.schemas[0].schema"), "{stderr}");
    assert!(stderr.contains("bad.json"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let config = scratch.file(
        "channels.toml",
        &format!("[[bus.channels]]\npattern = \"/chat/**\"\nschema = \"{schema}\"\n"),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["serve", "--config", &config, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bus.channels[0].schema"));
}
