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
use wsbus::bus::Bus;
use wsbus::session::{Sessions, User};
use wsbus::{HttpContext, HttpHandler};

/// The Content-Security-Policy of every page and asset.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Longest demo login name, in characters.
const MAX_LOGIN_CHARS: usize = 64;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const BUS_JS: &str = include_str!("../assets/bus.js");
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
        (&Method::GET, "/bus.js") => {
            response(StatusCode::OK, "text/javascript; charset=utf-8", BUS_JS)
        }
        (&Method::GET, "/app.css") => response(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        (&Method::GET, "/api/me") => me(ctx, req),
        (&Method::GET, "/metrics") => metrics(ctx),
        (&Method::POST, "/login" | "/logout") if !same_origin_post(ctx, req) => {
            text(StatusCode::FORBIDDEN, "cross-origin form post refused")
        }
        (&Method::POST, "/login") => login(ctx, req),
        (&Method::POST, "/logout") => logout(ctx, req),
        (
            _,
            "/" | "/app.js" | "/bus.js" | "/app.css" | "/api/me" | "/metrics" | "/login"
            | "/logout",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The bus as the HTTP side sees it.
#[derive(Clone, Debug)]
pub struct BusRoutes {
    pub bus: Bus,
    /// The bus path, e.g. `/amb`.
    pub path: String,
    /// Bearer token of `POST /api/publish`; `None` disables it.
    pub publish_token: Option<String>,
}

impl BusRoutes {
    /// `/amb`, `/amb/` and `/amb/*` (CometD posts to `/amb/handshake`, …).
    fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// `POST /api/publish` with `{"channel": "/x", "data": …}` and
/// `Authorization: Bearer <token>`.
fn api_publish(bus: &BusRoutes, req: &Request<Bytes>) -> Response<Full<Bytes>> {
    let Some(token) = &bus.publish_token else {
        return text(
            StatusCode::NOT_FOUND,
            "publishing over HTTP is disabled (set bus.publish_token)",
        );
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token.as_str()) {
        let mut r = text(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    #[derive(serde::Deserialize)]
    struct PublishRequest {
        channel: String,
        data: serde_json::Value,
    }
    let request: PublishRequest = match serde_json::from_slice(req.body()) {
        Ok(request) => request,
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"channel\", \"data\"}}: {err}"),
            );
        }
    };
    match bus.bus.publish(&request.channel, request.data) {
        Ok(published) => {
            let body = serde_json::json!({"successful": true, "recipients": published.recipients, "offset": published.offset});
            response(StatusCode::OK, "application/json", body.to_string())
        }
        Err(err) => text(StatusCode::BAD_REQUEST, &err.to_string()),
    }
}

/// The HTTP handler of `wsbus serve`.
pub fn handler(bus: BusRoutes) -> HttpHandler {
    Arc::new(move |ctx, req| {
        let bus = bus.clone();
        Box::pin(async move {
            let path = req.uri().path();
            if bus.owns(path) {
                if req.method() != Method::POST {
                    return text(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "the bus takes POST (long-polling) or a WebSocket upgrade",
                    );
                }
                let user = session_of(&ctx, &req).map(|s| s.user.login);
                let json = bus.bus.long_poll(req.body(), user.as_deref()).await;
                let mut r = response(StatusCode::OK, "application/json", json);
                r.headers_mut().remove("content-security-policy");
                return r;
            }
            if path == "/api/publish" && req.method() == Method::POST {
                return api_publish(&bus, &req);
            }
            route(&ctx, &req)
        })
    })
}
