//! The plain-HTTP side of `wsbus serve`: the chat page, the demo login, and
//! metrics.
//!
//! Every page is static and renders user text with `textContent`; the CSP
//! below forbids inline script and style, so markup in a message can never
//! execute (seed 000, output encoding).

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use wsbus::session::{Sessions, User};
use wsbus::{HttpContext, HttpHandler};

/// The Content-Security-Policy of every page and asset.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Longest demo login name, in characters.
const MAX_LOGIN_CHARS: usize = 64;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn redirect_home(cookie: String) -> Response<Full<Bytes>> {
    let mut r = response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is header-safe"),
    );
    r
}

/// Form posts must come from our own pages: a cross-site form could
/// otherwise log a visitor in or out (login CSRF). Browsers send `Origin` on
/// every POST; its absence means a non-browser client.
fn same_origin_post(ctx: &HttpContext, req: &Request<Bytes>) -> bool {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    wsbus::origin_allowed_by_default(origin, host, ctx.tls)
}

fn session_of(ctx: &HttpContext, req: &Request<Bytes>) -> Option<wsbus::session::Session> {
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    ctx.runtime.sessions().from_cookies(cookies)
}

fn login(ctx: &HttpContext, req: &Request<Bytes>) -> Response<Full<Bytes>> {
    let user = form_urlencoded::parse(req.body())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if user.is_empty()
        || user.chars().count() > MAX_LOGIN_CHARS
        || user.chars().any(char::is_control)
    {
        return text(
            StatusCode::BAD_REQUEST,
            "field `user` must be 1-64 printable characters",
        );
    }
    let id = ctx.runtime.sessions().login(User::new(user));
    redirect_home(Sessions::cookie(&id, ctx.tls))
}

fn logout(ctx: &HttpContext, req: &Request<Bytes>) -> Response<Full<Bytes>> {
    if let Some(session) = session_of(ctx, req) {
        ctx.runtime.sessions().logout(&session.id);
    }
    redirect_home(Sessions::clear_cookie(ctx.tls))
}

fn me(ctx: &HttpContext, req: &Request<Bytes>) -> Response<Full<Bytes>> {
    let user = session_of(ctx, req).map(|s| s.user.login);
    let body = serde_json::json!({ "user": user }).to_string();
    response(StatusCode::OK, "application/json", body)
}

/// Prometheus text exposition of the runtime's counters.
fn metrics(ctx: &HttpContext) -> Response<Full<Bytes>> {
    let rt = &ctx.runtime;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP wsbus_connections Open WebSocket connections.");
    let _ = writeln!(out, "# TYPE wsbus_connections gauge");
    let _ = writeln!(out, "wsbus_connections {}", rt.hub().len());
    let _ = writeln!(
        out,
        "# HELP wsbus_tcp_connections_accepted_total TCP connections accepted."
    );
    let _ = writeln!(out, "# TYPE wsbus_tcp_connections_accepted_total counter");
    let accepted = rt
        .metrics()
        .connections_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(out, "wsbus_tcp_connections_accepted_total {accepted}");
    let _ = writeln!(
        out,
        "# HELP wsbus_handshakes_total WebSocket handshakes answered, by HTTP status."
    );
    let _ = writeln!(out, "# TYPE wsbus_handshakes_total counter");
    for (status, count) in rt.metrics().handshakes() {
        let _ = writeln!(out, "wsbus_handshakes_total{{status=\"{status}\"}} {count}");
    }
    response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}

fn route(ctx: &HttpContext, req: &Request<Bytes>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => response(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        (&Method::GET, "/app.js") => {
            response(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
        }
        (&Method::GET, "/app.css") => response(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        (&Method::GET, "/api/me") => me(ctx, req),
        (&Method::GET, "/metrics") => metrics(ctx),
        (&Method::POST, "/login" | "/logout") if !same_origin_post(ctx, req) => {
            text(StatusCode::FORBIDDEN, "cross-origin form post refused")
        }
        (&Method::POST, "/login") => login(ctx, req),
        (&Method::POST, "/logout") => logout(ctx, req),
        (_, "/" | "/app.js" | "/app.css" | "/api/me" | "/metrics" | "/login" | "/logout") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The HTTP handler of `wsbus serve`.
pub fn handler() -> HttpHandler {
    Arc::new(|ctx, req| Box::pin(async move { route(&ctx, &req) }))
}
