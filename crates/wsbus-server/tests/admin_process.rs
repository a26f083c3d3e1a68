//! The admin API and the health probes of `wsbus serve`, as a process: the
//! token (missing, wrong, in the query: refused, and never in the log even at
//! `trace`), off without `[admin] token`, the log filter changed at run time
//! and reverting after its `ttl`, and a connection listed and closed.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsbus_test_support::frame::{OP_CLOSE, OP_TEXT, masked_frame, read_frame};
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::wire::{body, http_exchange, status_code, upgrade};

mod common;

const TOKEN: &str = "the-admin-token-of-this-test-0123456789";
const WRONG: &str = "a-wrong-admin-token-of-this-test-98765";

/// How long a log line or a close may take to show on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn admin_server(log: &str) -> ServerProcess {
    common::serve(&[("WSBUS_ADMIN__TOKEN", TOKEN), ("WSBUS_LOG", log)])
}

/// One request on its own connection; `auth` is the whole header line or "".
fn request(addr: &str, method: &str, target: &str, auth: &str, json: Option<&str>) -> String {
    let body = json.unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    http_exchange(addr, &head, body.as_bytes(), PATIENCE).expect("an HTTP response")
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// An authorized admin call: its status and JSON body.
fn admin(addr: &str, method: &str, path: &str, json: Option<&str>) -> (u16, Value) {
    let response = request(addr, method, path, &bearer(TOKEN), json);
    let value = serde_json::from_str(body(&response))
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {response}"));
    (status_code(&response), value)
}

/// Wait until `check` holds, at most [`PATIENCE`].
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

#[test]
fn admin_api_refuses_missing_wrong_and_query_tokens_and_logs_none() {
    let server = admin_server("trace");
    let addr = &server.addr;
    for (what, target, auth) in [
        ("no token", "/admin/api/info".to_owned(), String::new()),
        ("a wrong token", "/admin/api/info".to_owned(), bearer(WRONG)),
        (
            "another scheme",
            "/admin/api/info".to_owned(),
            format!("Authorization: Basic {TOKEN}\r\n"),
        ),
        (
            "the token in the query",
            format!("/admin/api/info?token={TOKEN}"),
            String::new(),
        ),
        (
            "the token in the query and the header",
            format!("/admin/api/connections?access_token={TOKEN}"),
            bearer(TOKEN),
        ),
        (
            "an unknown route",
            "/admin/api/nothing-here".to_owned(),
            bearer(WRONG),
        ),
    ] {
        let response = request(addr, "GET", &target, &auth, None);
        assert_eq!(status_code(&response), 401, "{what}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{what}: {response}"
        );
        let error: Value = serde_json::from_str(body(&response)).unwrap();
        assert_eq!(error["error"], "unauthorized", "{what}");
    }
    let refused_put = request(
        addr,
        "PUT",
        "/admin/api/log",
        &bearer(WRONG),
        Some(r#"{"directive": "trace"}"#),
    );
    assert_eq!(status_code(&refused_put), 401, "{refused_put}");

    let (status, info) = admin(addr, "GET", "/admin/api/info", None);
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["config"]["admin"]["token"], "<redacted>");
    assert!(!info.to_string().contains(TOKEN));

    // The page, under the demo's CSP; the probes, without a token.
    let page = request(addr, "GET", "/admin", "", None);
    assert_eq!(status_code(&page), 200, "{page}");
    assert!(
        page.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "no inline script");
    let healthz = request(addr, "GET", "/healthz", "", None);
    assert_eq!((status_code(&healthz), body(&healthz)), (200, "ok\n"));
    let readyz = request(addr, "GET", "/readyz", "", None);
    assert_eq!(status_code(&readyz), 200, "{readyz}");
    let ready: Value = serde_json::from_str(body(&readyz)).unwrap();
    assert_eq!(ready, serde_json::json!({"ready": true, "cluster": null}));

    // Whatever is logged at trace, no token.
    let log = server.log_tail(usize::MAX);
    assert!(!log.contains(TOKEN), "the admin token is in the log");
    assert!(!log.contains(WRONG), "a refused token is in the log");
}

#[test]
fn admin_is_off_without_a_token() {
    let server = common::serve(&[]);
    let addr = &server.addr;
    for target in [
        "/admin",
        "/admin/admin.js",
        "/admin/api/info",
        "/admin/api/log",
    ] {
        let response = request(addr, "GET", target, &bearer(TOKEN), None);
        assert_eq!(status_code(&response), 404, "{target}: {response}");
    }
    let healthz = request(addr, "GET", "/healthz", "", None);
    assert_eq!(status_code(&healthz), 200, "{healthz}");
}

/// A refused upgrade (version 12: `426`), which `wsbus::handshake` logs at
/// `debug`.
fn refused_upgrade(addr: &str) {
    let response = request(
        addr,
        "GET",
        "/chat",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n",
        None,
    );
    assert_eq!(status_code(&response), 426, "{response}");
}

const HANDSHAKE_DEBUG: &str = "DEBUG wsbus::handshake";

/// A line the admin API logs at `info` once a log change is applied: a
/// marker that everything logged before the change's response is written.
fn marker(server: &ServerProcess, directive: &str) {
    let (status, state) = admin(
        &server.addr,
        "PUT",
        "/admin/api/log",
        Some(&format!(r#"{{"directive": "{directive}"}}"#)),
    );
    assert_eq!(status, 200, "{state}");
    // Text or JSON: the line names the change and the directive.
    let logged = || {
        server
            .log_tail(usize::MAX)
            .lines()
            .any(|line| line.contains("log filter changed") && line.contains(directive))
    };
    assert!(
        eventually(logged),
        "the change is logged: {}",
        server.log_tail(20)
    );
}

#[test]
fn a_log_level_change_shows_in_the_next_lines_and_reverts_after_its_ttl() {
    let server = admin_server("info");
    let addr = &server.addr;

    // An invalid directive: 400 naming it, the filter kept.
    let (status, error) = admin(
        addr,
        "PUT",
        "/admin/api/log",
        Some(r#"{"directive": "wsbus::bus=loud"}"#),
    );
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"], "invalid_directive");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`wsbus::bus=loud`"),
        "{error}"
    );
    let (status, state) = admin(addr, "GET", "/admin/api/log", None);
    assert_eq!(status, 200);
    assert_eq!(state["filter"], "info");
    assert_eq!(state["directive"], Value::Null);
    let (status, error) = admin(
        addr,
        "PUT",
        "/admin/api/log",
        Some(r#"{"directive": "debug", "ttl": "soon"}"#),
    );
    assert_eq!(
        (status, &error["error"]),
        (400, &Value::from("invalid_ttl"))
    );

    // At info, a refused upgrade logs nothing at debug.
    refused_upgrade(addr);
    marker(&server, "wsbus::cluster=info");
    assert_eq!(server.log_lines_containing(HANDSHAKE_DEBUG), 0);

    // Raised for 2 s: the next refusal shows.
    let (status, state) = admin(
        addr,
        "PUT",
        "/admin/api/log",
        Some(r#"{"directive": "wsbus::handshake=debug", "ttl": "2s"}"#),
    );
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["directive"], "wsbus::handshake=debug");
    assert!(state["revert_at"].is_string(), "{state}");
    assert!(
        eventually(|| server.logged("log filter raised")),
        "the change is logged: {}",
        server.log_tail(10)
    );
    refused_upgrade(addr);
    assert!(
        eventually(|| server.log_lines_containing(HANDSHAKE_DEBUG) > 0),
        "the raised level shows: {}",
        server.log_tail(20)
    );

    // Reverted by itself, and logged.
    assert!(
        eventually(|| server.logged("log filter reverted")),
        "the revert is logged: {}",
        server.log_tail(20)
    );
    let (_, state) = admin(addr, "GET", "/admin/api/log", None);
    assert_eq!(state["filter"], "info", "{state}");
    assert_eq!(state["revert_at"], Value::Null);
    let before = server.log_lines_containing(HANDSHAKE_DEBUG);
    refused_upgrade(addr);
    marker(&server, "wsbus::cluster=warn");
    assert_eq!(
        server.log_lines_containing(HANDSHAKE_DEBUG),
        before,
        "after the revert, debug is off again: {}",
        server.log_tail(20)
    );
    let (status, state) = admin(addr, "DELETE", "/admin/api/log", None);
    assert_eq!((status, &state["directive"]), (200, &Value::Null));
}

#[test]
fn connections_are_listed_and_closed_by_admin_with_1008() {
    let server = admin_server("info");
    let addr = &server.addr;
    let mut socket = upgrade(addr, "/chat", "", PATIENCE).expect("an upgraded socket");

    let (status, list) = admin(addr, "GET", "/admin/api/connections", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    let connection = &list["connections"][0];
    assert_eq!(connection["path"], "/chat", "{list}");
    assert_eq!(connection["address"], "127.0.0.1", "{list}");
    assert_eq!(connection["transport"], "websocket", "{list}");
    assert_eq!(connection["tls"], false, "{list}");
    assert!(connection["age_seconds"].as_f64().is_some(), "{list}");
    let id = connection["id"].as_str().expect("an id").to_owned();

    // Bytes in and out per socket: a message sent and relayed back.
    let hello = masked_frame(OP_TEXT, b"hello admin", [1, 2, 3, 4]);
    socket.stream.write_all(&hello).expect("send");
    loop {
        let frame = read_frame(&mut socket.stream).expect("the chat's frames");
        if frame.payload == b"hello admin" {
            break;
        }
    }
    // Counted by the socket's task at the end of its wake: poll briefly.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = admin(addr, "GET", "/admin/api/connections", None);
        let counted = &list["connections"][0];
        let bytes_in = counted["bytes_in"].as_u64().unwrap_or(0);
        let bytes_out = counted["bytes_out"].as_u64().unwrap_or(0);
        if bytes_in >= hello.len() as u64 && bytes_out > "hello admin".len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "bytes not counted: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, groups) = admin(addr, "GET", "/admin/api/groups", None);
    assert_eq!(status, 200, "{groups}");
    let (status, bus) = admin(addr, "GET", "/admin/api/bus", None);
    assert_eq!(status, 200, "{bus}");
    assert_eq!(bus["sessions"]["total"], 0, "{bus}");

    for (target, expected) in [
        ("/admin/api/connections/0.999999".to_owned(), 404),
        ("/admin/api/connections/not-an-id".to_owned(), 400),
    ] {
        let response = request(addr, "DELETE", &target, &bearer(TOKEN), None);
        assert_eq!(status_code(&response), expected, "{target}: {response}");
    }
    let (status, closed) = admin(
        addr,
        "DELETE",
        &format!("/admin/api/connections/{id}"),
        None,
    );
    assert_eq!(status, 200, "{closed}");
    // The chat may have greeted the socket first: read up to the close.
    let close = loop {
        let frame = read_frame(&mut socket.stream).expect("a frame before the close");
        if frame.opcode == OP_CLOSE {
            break frame;
        }
    };
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(close.close_reason(), "closed by admin");
    assert!(
        eventually(|| server.logged("socket closed by admin")),
        "{}",
        server.log_tail(10)
    );
}

#[test]
fn json_log_lines_and_an_invalid_level_naming_its_key() {
    let server = common::serve(&[
        ("WSBUS_ADMIN__TOKEN", TOKEN),
        ("WSBUS_LOG", "info"),
        ("WSBUS_LOG__FORMAT", "json"),
    ]);
    marker(&server, "wsbus::bus=debug");
    let log = server.log_tail(usize::MAX);
    let line = log
        .lines()
        .find(|line| line.contains("wsbus::admin"))
        .expect("the change is logged");
    // After the test harness's `[  0.123s] ` stamp: one JSON object.
    let json = line.split_once("] ").expect("a stamp").1;
    let event: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(event["target"], "wsbus::admin", "{event}");
    assert_eq!(event["fields"]["directive"], "wsbus::bus=debug", "{event}");

    // `[log] level` that does not parse stops the start, naming the key
    // (`WSBUS_LOG` unset: it would replace the key).
    let output = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("WSBUS_LOG")
        .env("WSBUS_LOG__LEVEL", "wsbus=loud")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: config: log.level: invalid directive `wsbus=loud`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
