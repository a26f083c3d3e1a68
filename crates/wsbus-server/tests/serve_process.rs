//! `wsbus serve` as a process: start-up errors, the demo login, the page's
//! headers, and the route table's answers (405 with `Allow`, 413, the JSON
//! API's errors and its bearer check).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use wsbus_test_support::wire::http_exchange;

mod common;
use common::serve;

/// How long a response may take: the server answers at once, but a loaded
/// test machine can delay it by seconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request; returns the whole response.
fn http(addr: &str, request: &str) -> String {
    http_exchange(addr, request, b"", RESPONSE_TIMEOUT).expect("an HTTP response")
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("WSBUS_BUS__WEBSOCKET_ENABLED", "maybe")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bus.websocket_enabled"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen"));
}

#[test]
fn demo_login_sets_a_strict_session_cookie_and_logout_ends_it() {
    let server = serve(&[]);
    let addr = &server.addr;
    let page = http(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'")
    );

    let body = "user=alice";
    let login = http(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie_line = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Lax"),
        "{cookie_line}"
    );
    assert!(
        !cookie_line.contains("Secure"),
        "no Secure flag over plain HTTP"
    );
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let me = |cookie: &str| {
        http(
            addr,
            &format!(
                "GET /api/me HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    assert!(
        me(&cookie).ends_with(r#"{"user":"alice"}"#),
        "{}",
        me(&cookie)
    );

    // A cross-site form post is refused.
    let forged = http(
        addr,
        &format!(
            "POST /logout HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    assert!(me(&cookie).ends_with(r#"{"user":"alice"}"#));

    let logout = http(
        addr,
        &format!(
            "POST /logout HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(logout.starts_with("HTTP/1.1 303"), "{logout}");
    assert!(me(&cookie).ends_with(r#"{"user":null}"#));

    // An upgrade from another site: refused, and counted by reason.
    let refused = http(
        addr,
        &format!(
            "GET /chat HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");

    let metrics = http(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        metrics.contains("wsbus_connections{transport=\"websocket\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wsbus_handshake_refusals_total{reason=\"origin_not_allowed\"} 1"),
        "{metrics}"
    );
}

/// `wsbus <args>` run to its end with extra environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A start-up failure is one line for people: no `Debug` structs, no
/// colour codes (stderr is a pipe here), nothing after it.
fn assert_one_error_line(output: &Output, expected: &str, status: i32) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(status), "{stderr}");
    assert_eq!(stderr, format!("{expected}\n"));
    for noise in ["Os {", "Error(", "Error {", "kind:", "\x1b["] {
        assert!(!stderr.contains(noise), "{stderr}");
    }
}

#[test]
fn a_taken_address_is_one_line_and_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let expected = format!("error: cannot listen on {addr}: address already in use");
    for command in ["serve", "echo"] {
        let output = run(&[command, "--listen", &addr], &[]);
        assert_one_error_line(&output, &expected, 1);
    }
}

#[test]
fn a_bad_configuration_key_is_one_line_and_status_2() {
    let output = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("WSBUS_BUS__NOPE", "1")],
    );
    assert_one_error_line(
        &output,
        "error: config: bus.nope: unknown field `nope`, expected one of `path`, \
         `websocket_enabled`, `publish_token`, `channels` (set by WSBUS_BUS__NOPE)",
        2,
    );
    let output = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("WSBUS_BUS__PATH", "/api")],
    );
    assert_one_error_line(
        &output,
        "error: config: bus.path: `/api` is taken by `/api`",
        2,
    );
}

/// A response split into status, lower-cased head and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One request with `Connection: close` and `body`; `extra` is more header
/// lines, each ending in CRLF.
fn call(addr: &str, method: &str, path: &str, extra: &str, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before it has read a too-large body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Answer {
        status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[test]
fn wrong_methods_get_405_with_allow() {
    let server = serve(&[]);
    let addr = &server.addr;
    for (method, path, allow) in [
        ("DELETE", "/", "get,head"),
        ("POST", "/app.js", "get,head"),
        ("GET", "/login", "post"),
        ("PUT", "/metrics", "get,head"),
        ("POST", "/api/me", "get,head"),
        ("GET", "/amb/connect", "post"),
    ] {
        let answer = call(addr, method, path, "", b"");
        assert_eq!(answer.status, 405, "{method} {path}: {}", answer.head);
        assert!(
            answer.head.contains(&format!("\r\nallow: {allow}\r\n")),
            "{method} {path}: {}",
            answer.head
        );
    }
    // Pages' errors keep the page headers.
    let answer = call(addr, "DELETE", "/", "", b"");
    assert!(
        answer
            .head
            .contains("content-security-policy: default-src 'none'")
    );
    assert!(answer.head.contains("x-content-type-options: nosniff"));
}

/// `ServerConfig::max_body_bytes` (64 KiB).
const MAX_BODY: usize = 64 * 1024;

const TOKEN: &str = "t0ken";

/// The JSON error body of an `/api` route: its `error` code.
fn api_error_code(answer: &Answer) -> String {
    assert!(
        answer.head.contains("content-type: application/json"),
        "{}",
        answer.head
    );
    let body: serde_json::Value =
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    body["error"].as_str().unwrap().to_owned()
}

#[test]
fn api_errors_are_json_and_bodies_over_the_limit_get_413() {
    let server = serve(&[("WSBUS_BUS__PUBLISH_TOKEN", TOKEN)]);
    let addr = &server.addr;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");

    let answer = call(addr, "POST", "/api/publish", &auth, b"{not json");
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(api_error_code(&answer), "bad_request");

    let answer = call(addr, "GET", "/api/nothing-here", "", b"");
    assert_eq!(answer.status, 404);
    assert_eq!(api_error_code(&answer), "not_found");

    let answer = call(addr, "POST", "/api/me", "", b"");
    assert_eq!(answer.status, 405);
    assert_eq!(api_error_code(&answer), "method_not_allowed");

    let big = format!(r#"{{"channel":"/x","data":"{}"}}"#, "a".repeat(MAX_BODY));
    let answer = call(addr, "POST", "/api/publish", &auth, big.as_bytes());
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(api_error_code(&answer), "payload_too_large");

    // The page routes and the bus take the same limit.
    let form = format!("user={}", "a".repeat(MAX_BODY));
    let answer = call(addr, "POST", "/login", "", form.as_bytes());
    assert_eq!(answer.status, 413);
    let answer = call(addr, "POST", "/amb", "", &vec![b' '; MAX_BODY + 1]);
    assert_eq!(answer.status, 413);
}

#[test]
fn the_bearer_check_takes_the_token_and_nothing_else() {
    let server = serve(&[("WSBUS_BUS__PUBLISH_TOKEN", TOKEN)]);
    let addr = &server.addr;
    let body = br#"{"channel": "/news", "data": "hello"}"#;
    for (authorization, status) in [
        (format!("Authorization: Bearer {TOKEN}\r\n"), 200),
        (format!("Authorization: bearer {TOKEN}\r\n"), 200),
        (String::new(), 401),
        ("Authorization: Bearer wrong\r\n".into(), 401),
        (format!("Authorization: Bearer {TOKEN}x\r\n"), 401),
        (format!("Authorization: Bearer {}\r\n", &TOKEN[..4]), 401),
        (format!("Authorization: Basic {TOKEN}\r\n"), 401),
    ] {
        let answer = call(addr, "POST", "/api/publish", &authorization, body);
        assert_eq!(answer.status, status, "{authorization:?}: {}", answer.body);
        if status == 401 {
            assert!(
                answer.head.contains("\r\nwww-authenticate: bearer\r\n"),
                "{}",
                answer.head
            );
            assert_eq!(api_error_code(&answer), "unauthorized");
        } else {
            assert!(
                answer.body.contains(r#""successful":true"#),
                "{}",
                answer.body
            );
        }
    }
}
