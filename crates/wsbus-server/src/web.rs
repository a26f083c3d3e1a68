//! The plain-HTTP side of `wsbus serve`, as one route table ([`router`]):
//! the chat page and its assets, the demo login, metrics, the JSON API
//! (`/api`, see [`crate::api`]), the health probes and the admin API and
//! page (see [`crate::admin`]) and the bus's long-polling transport.
//!
//! Every page is static and renders user text with `textContent`; the CSP
//! below forbids inline script and style, so markup in a message can never
//! execute.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use wsbus::Runtime;
use wsbus::bus::Bus;
use wsbus::proxy::ClientView;
use wsbus::session::{Session, Sessions, User};

/// The Content-Security-Policy of every page and asset.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Longest demo login name, in characters.
const MAX_LOGIN_CHARS: usize = 64;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const BUS_JS: &str = include_str!("../assets/bus.js");
const APP_CSS: &str = include_str!("../assets/app.css");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The bus as the HTTP side sees it.
#[derive(Clone, Debug)]
pub struct BusRoutes {
    pub bus: Bus,
    /// The bus path, e.g. `/amb` (see [`bus_path`]).
    pub path: String,
    /// Who may `POST /api/publish`.
    pub publish: crate::api::PublishAuth,
    /// Whether the demo (chat page, demo login) is served.
    pub demo: bool,
    /// The admin API and page, when `[admin] token` is set.
    pub admin: Option<crate::admin::Admin>,
    /// The connectivity test page (`/websocket-test`), which also records
    /// the long-polls of its probes on the bus path.
    pub test_page: crate::probe::TestPage,
}

/// Paths of the route table that the bus may not take (nor sit below).
const TAKEN_PATHS: &[&str] = &[
    "/app.js",
    "/bus.js",
    "/app.css",
    "/login",
    "/logout",
    "/metrics",
    "/api",
    "/chat",
    "/admin",
    "/healthz",
    "/readyz",
    "/websocket-test",
    "/websocket-test.js",
    "/websocket-test.css",
];

/// The bus path from configuration, normalised (no trailing `/`), or why
/// it cannot be one.
pub fn bus_path(configured: &str) -> Result<String, String> {
    let path = configured.trim_end_matches('/');
    if !configured.starts_with('/') || path.is_empty() {
        return Err(format!(
            "`{configured}` must be a path below `/`, like `/amb`"
        ));
    }
    if path.contains(['{', '}', '*', '?', '#']) {
        return Err(format!(
            "`{configured}` may not contain `{{`, `}}`, `*`, `?` or `#`"
        ));
    }
    if let Some(taken) = TAKEN_PATHS
        .iter()
        .chain(crate::probe::PATHS)
        .find(|taken| path == **taken || path.starts_with(&format!("{taken}/")))
    {
        return Err(format!("`{configured}` is taken by `{taken}`"));
    }
    Ok(path.to_owned())
}

/// The HTTP routes of `wsbus serve`, served by [`wsbus::Server::router`]
/// (which provides the `Runtime` and `ConnectionInfo` extensions and the
/// body limit). Pages and their errors carry [`CSP`]; every response is
/// `no-store` and `nosniff`.
pub fn router(bus: BusRoutes) -> Router {
    let mut router = Router::new();
    if bus.demo {
        router = router
            .route("/", page(HTML, INDEX_HTML))
            .route("/app.js", page(JAVASCRIPT, APP_JS))
            .route("/bus.js", page(JAVASCRIPT, BUS_JS))
            .route("/app.css", page(CSS, APP_CSS))
            .route("/login", form_post(login))
            .route("/logout", form_post(logout));
    }
    if let Some(admin) = bus.admin {
        router = router.merge(admin.pages()).nest("/admin/api", admin.api());
    }
    router
        .route("/metrics", get(metrics))
        .route("/healthz", get(crate::admin::healthz))
        .route("/readyz", get(crate::admin::readyz))
        .merge(bus.test_page.router())
        // Before `/api` is nested: that table has its own JSON 405.
        .method_not_allowed_fallback(|| async {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .nest("/api", crate::api::router(bus.bus.clone(), bus.publish))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::map_response(with_csp))
        // `/amb`, `/amb/` and `/amb/*` (CometD posts to `/amb/handshake`, …);
        // a WebSocket upgrade on the first two never reaches the router.
        .nest_service(
            &bus.path,
            bus.test_page.observe_long_polls(long_polling(bus.bus)),
        )
        .layer(middleware::map_response(with_no_store))
}

/// A static page or asset.
fn page(content_type: &'static str, body: &'static str) -> MethodRouter {
    get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) })
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], format!("{body}\n")).into_response()
}

/// Adds the page CSP to a response that has none.
async fn with_csp(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    response
}

/// Nothing here may be cached or sniffed into another type.
async fn with_no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The session the request's cookie names, if it is alive (and the session
/// store answers: see [`wsbus::session::Sessions::resolve`]).
pub async fn session_of(runtime: &Runtime, headers: &HeaderMap) -> Option<Session> {
    runtime.sessions().from_cookies(cookies(headers)).await
}

/// The request's `Cookie` header values that are text.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

/// A form `POST` route, refused (`403`) unless it comes from our own pages.
fn form_post<H, T>(handler: H) -> MethodRouter
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    post(handler).route_layer(middleware::from_fn(refuse_cross_origin))
}

/// Form posts must come from our own pages: a cross-site form could
/// otherwise log a visitor in or out (login CSRF). Browsers send `Origin` on
/// every POST; its absence means a non-browser client.
async fn refuse_cross_origin(
    Extension(client): Extension<ClientView>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    // Behind a trusted proxy, the scheme and host the browser used.
    let host = client.host.as_deref().unwrap_or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    });
    if !wsbus::origin_allowed_by_default(origin, host, client.tls) {
        return text(StatusCode::FORBIDDEN, "cross-origin form post refused");
    }
    next.run(request).await
}

fn redirect_home(cookie: &str) -> Response {
    let cookie = HeaderValue::from_str(cookie).expect("cookie is header-safe");
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(TEXT)),
        (header::LOCATION, HeaderValue::from_static("/")),
        (header::SET_COOKIE, cookie),
    ];
    (StatusCode::SEE_OTHER, headers).into_response()
}

/// `POST /login` with the form field `user`: a session for that name.
async fn login(
    Extension(runtime): Extension<Runtime>,
    Extension(client): Extension<ClientView>,
    body: Bytes,
) -> Response {
    let user = form_urlencoded::parse(&body)
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
    let Ok(id) = runtime.sessions().login(User::new(user)).await else {
        // Logged by the store; no session, so no cookie.
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session store is unavailable; try again",
        );
    };
    // `Secure` when the browser is on https, behind a proxy too.
    redirect_home(&Sessions::cookie(&id, client.tls))
}

/// `POST /logout`: ends the session (and its bound sockets).
async fn logout(
    Extension(runtime): Extension<Runtime>,
    Extension(client): Extension<ClientView>,
    headers: HeaderMap,
) -> Response {
    // By the cookie's id, without a lookup: a logout must not pass for done
    // because the store could not be asked.
    if let Some(id) = Sessions::id_from_cookies(cookies(&headers))
        && runtime.sessions().logout(&id).await.is_err()
    {
        // The session lives on in the store: keep the cookie, so that the
        // user sees the failure and can log out again.
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session store is unavailable; the session is not ended, try again",
        );
    }
    redirect_home(&Sessions::clear_cookie(client.tls))
}

/// `GET /metrics`: every family of [`wsbus::metrics`], in the Prometheus
/// text format, or OpenMetrics when the scraper's `Accept` asks for it.
async fn metrics(Extension(runtime): Extension<Runtime>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = wsbus::metrics::Format::from_accept(accept);
    let body = runtime.metrics().encode(format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// The bus's long-polling transport: `POST` a Bayeux batch, get the replies
/// (held while a `/meta/connect` waits). Other methods get `405`.
fn long_polling(bus: Bus) -> MethodRouter {
    post(long_poll).with_state(bus).fallback(|| async {
        text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the bus takes POST (long-polling) or a WebSocket upgrade",
        )
    })
}

async fn long_poll(
    State(bus): State<Bus>,
    Extension(runtime): Extension<Runtime>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = session_of(&runtime, &headers).await.map(|s| s.user.login);
    let token = wsbus::auth::token_from_request(&headers, uri.query());
    let json = bus
        .long_poll(&body, user.as_deref(), token.as_deref())
        .await;
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}
