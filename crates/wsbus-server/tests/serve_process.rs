//! `wsbus serve` as a process: configuration errors, the demo login and the
//! page's headers.

use std::process::Command;
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

    let metrics = http(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(metrics.contains("wsbus_connections 0"), "{metrics}");
}
