//! The admin API (`/admin/api/…`) and page (`/admin`), for operators
//! (SPEC §6), and the health probes `/healthz` and `/readyz`.
//!
//! Everything under `/admin` exists only when `[admin] token` is set (else
//! `404`, as any unknown path). Every API request must present that token as
//! `Authorization: Bearer <token>`, compared in constant time
//! ([`crate::auth::require_bearer`]). A token in the query string is
//! refused (`401`) whatever its value: URLs end up in proxy and browser
//! logs. No request of this API logs its URL or headers.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/api/info` | version, uptime, node, configuration (secrets redacted) |
//! | `GET /admin/api/connections` | this node's open sockets |
//! | `DELETE /admin/api/connections/<id>` | close one with 1008 `closed by admin` |
//! | `GET /admin/api/groups` | hub groups and their sizes |
//! | `GET /admin/api/groups/<name>` | one group's size here and in the cluster |
//! | `GET /admin/api/bus` | bus sessions by transport, channels, subscribers, presence |
//! | `GET /admin/api/log` | the log filter and its pending revert |
//! | `PUT /admin/api/log` | `{"directive": "wsbus::bus=debug", "ttl": "60s"}`: raise (see [`crate::log`]) |
//! | `DELETE /admin/api/log` | back to the base filter now |
//! | `POST /admin/api/capture` | `{"user" \| "session" \| "channel" \| "address": "…", "duration": "60s", "max_bytes"?: n}`: start a traffic capture (see [`wsbus::capture`]) → `{"id", …}` |
//! | `GET /admin/api/capture` | the captures kept: id, selector, started, ends, bytes, records, dropped |
//! | `GET /admin/api/capture/<id>` | its JSON lines so far (`application/x-ndjson`), also while it runs |
//! | `DELETE /admin/api/capture/<id>` | stop it (it stays downloadable) |
//!
//! Errors are the JSON API's: `{"error": "<code>", "message": "…"}`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Router, routing::MethodRouter};
use http::StatusCode;
use http::header;
use serde_json::{Value, json};
use wsbus::bus::Bus;
use wsbus::proto::CloseCode;
use wsbus::{HubEngine, Outcome, Runtime, SocketId};

use crate::api::{ApiError, json_response};
use crate::auth::{BearerToken, require_bearer};
use crate::log::LogControl;

/// The most sockets, groups or channels one listing returns: a page an
/// operator reads, and a bounded response however many sockets are open
/// (the `total` says how many there are).
pub const MAX_LISTED: usize = 1_000;

/// The most presence members listed per channel.
pub const MAX_MEMBERS_LISTED: usize = 100;

/// The close reason of `DELETE /admin/api/connections/<id>` (with 1008).
pub const CLOSED_BY_ADMIN: &str = "closed by admin";

/// Query parameters that would carry a credential in a URL: a request with
/// one is refused before its token is even looked at.
const CREDENTIAL_PARAMS: &[&str] = &["token", "access_token", "admin_token", "bearer"];

const ADMIN_HTML: &str = include_str!("../assets/admin.html");
const ADMIN_JS: &str = include_str!("../assets/admin.js");
const ADMIN_CSS: &str = include_str!("../assets/admin.css");

/// What the admin routes serve.
#[derive(Clone, Debug)]
pub struct Admin {
    /// `[admin] token`.
    pub token: BearerToken,
    pub bus: Bus,
    pub log: LogControl,
    /// The configuration, secrets already redacted.
    pub config: Arc<Value>,
    /// When the server started.
    pub started: Started,
}

/// When the server started: monotonic (for the uptime) and wall-clock (to
/// show).
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Started {
    pub fn now() -> Self {
        Started {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

impl Admin {
    /// The page and its assets (to merge at the root: `/admin`,
    /// `/admin/admin.js`, `/admin/admin.css`). Static: they hold nothing
    /// secret; the page asks for the token and sends it with each API call.
    pub fn pages(&self) -> Router {
        fn asset(content_type: &'static str, body: &'static str) -> MethodRouter {
            get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) })
        }
        Router::new()
            .route("/admin", asset("text/html; charset=utf-8", ADMIN_HTML))
            .route(
                "/admin/admin.js",
                asset("text/javascript; charset=utf-8", ADMIN_JS),
            )
            .route(
                "/admin/admin.css",
                asset("text/css; charset=utf-8", ADMIN_CSS),
            )
    }

    /// The API, to be nested at `/admin/api`: every route (and every unknown
    /// path below it) behind the token.
    pub fn api(self) -> Router {
        let token = self.token.clone();
        Router::new()
            .route("/info", get(info))
            .route("/connections", get(connections))
            .route("/connections/{id}", delete(disconnect))
            .route("/groups", get(groups))
            .route("/groups/{name}", get(group))
            .route("/bus", get(bus))
            .route("/log", get(log_state).put(set_log).delete(clear_log))
            .route("/capture", get(list_captures).post(start_capture))
            .route("/capture/{id}", get(download_capture).delete(stop_capture))
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "method not allowed",
                )
            })
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin route")
            })
            .with_state(self)
            // Outermost last: the query check runs before the token check.
            .layer(middleware::from_fn_with_state(token, require_bearer))
            .layer(middleware::from_fn(refuse_credentials_in_query))
    }
}

/// `401` for a request carrying a credential in its query string, whatever
/// else it carries (the URL has leaked it already; accepting it would teach
/// clients to keep doing so).
async fn refuse_credentials_in_query(request: Request, next: Next) -> Response {
    let in_query = request.uri().query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes()).any(|(name, _)| {
            CREDENTIAL_PARAMS
                .iter()
                .any(|p| name.eq_ignore_ascii_case(p))
        })
    });
    if in_query {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token goes in the Authorization header, never in the URL",
        )
        // With `WWW-Authenticate: Bearer`, as every 401 of the API.
        .into_response();
    }
    next.run(request).await
}

/// Seconds, with millisecond precision, for JSON.
fn seconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// `GET /admin/api/info`.
async fn info(State(admin): State<Admin>, Extension(runtime): Extension<Runtime>) -> Response {
    let body = json!({
        "name": "wsbus",
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(admin.started.wall),
        "uptime_seconds": admin.started.at.elapsed().as_secs(),
        "node": runtime.hub().local().node().0,
        "sockets": runtime.hub().len(),
        "config": *admin.config,
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /admin/api/connections`: this node's open sockets, oldest first,
/// at most [`MAX_LISTED`]. `bytes_in` / `bytes_out` are frame bytes read and
/// written (as of the socket task's last wake); `queued_bytes` is what waits
/// in the socket's hub outbox.
async fn connections(Extension(runtime): Extension<Runtime>) -> Response {
    let sockets = runtime.hub().local().sockets();
    let now = SystemTime::now();
    let listed: Vec<Value> = sockets
        .iter()
        .take(MAX_LISTED)
        .map(|socket| {
            let facts = &socket.facts;
            let age = facts.age();
            json!({
                "id": socket.id.to_string(),
                "address": facts.client.to_string(),
                "user": facts.user.as_deref(),
                "path": &*facts.path,
                "transport": "websocket",
                "tls": facts.tls,
                "subprotocol": facts.subprotocol.as_deref(),
                "extensions": facts.extensions(),
                "groups": &socket.groups,
                "opened_at": rfc3339(now.checked_sub(age).unwrap_or(now)),
                "age_seconds": seconds(age),
                "queued_bytes": socket.outbox_bytes,
                "bytes_in": socket.bytes_in,
                "bytes_out": socket.bytes_out,
            })
        })
        .collect();
    let body = json!({
        "total": sockets.len(),
        "truncated": sockets.len() > MAX_LISTED,
        "connections": listed,
    });
    json_response(StatusCode::OK, &body)
}

/// `DELETE /admin/api/connections/<id>`: close with 1008 `closed by admin`,
/// after what is already queued for it.
async fn disconnect(
    Extension(runtime): Extension<Runtime>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let socket: SocketId = id.parse().map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`{}`: {err}", truncate(&id, 40)),
        )
    })?;
    match runtime
        .hub()
        .close(socket, CloseCode::POLICY_VIOLATION, CLOSED_BY_ADMIN)
    {
        Outcome::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no open socket {socket}"),
        )),
        outcome => {
            tracing::info!(target: "wsbus::admin", socket = %socket, "socket closed by admin (1008)");
            let body = json!({
                "id": socket.to_string(),
                "closing": true,
                "forwarded": outcome == Outcome::Forwarded,
            });
            Ok(json_response(StatusCode::OK, &body))
        }
    }
}

/// At most `max` characters of `text` (an id echoed in an error).
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// `GET /admin/api/groups/<name>`: one group's size on this node and in
/// the whole cluster (other nodes' members as this node last heard of them;
/// the same as `here` on a single node).
async fn group(Extension(runtime): Extension<Runtime>, Path(name): Path<String>) -> Response {
    let here = runtime.hub().local().group_size(&name);
    let size = runtime.hub().group_size(&name);
    json_response(
        StatusCode::OK,
        &json!({ "name": name, "here": here, "size": size }),
    )
}

/// `GET /admin/api/groups`: this node's groups and their sizes here.
async fn groups(Extension(runtime): Extension<Runtime>) -> Response {
    let groups = runtime.hub().local().groups();
    let listed: Vec<Value> = groups
        .iter()
        .take(MAX_LISTED)
        .map(|(name, size)| json!({ "name": &**name, "size": size }))
        .collect();
    let body = json!({
        "total": groups.len(),
        "truncated": groups.len() > MAX_LISTED,
        "groups": listed,
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /admin/api/bus`: sessions by transport, and each channel pattern
/// with subscribers; for a plain channel (not a wildcard), its presence.
async fn bus(State(admin): State<Admin>) -> Response {
    let stats = admin.bus.stats();
    let channels = admin.bus.channels();
    let listed: Vec<Value> = channels
        .iter()
        .take(MAX_LISTED)
        .map(|(pattern, subscribers)| {
            let wild = pattern.ends_with("/*") || pattern.ends_with("/**");
            let presence = (!wild).then(|| {
                admin
                    .bus
                    .presence(pattern)
                    .into_iter()
                    .take(MAX_MEMBERS_LISTED)
                    .map(|m| json!({ "client_id": m.client_id.to_string(), "user": m.user.as_deref() }))
                    .collect::<Vec<_>>()
            });
            json!({ "pattern": pattern, "subscribers": subscribers, "presence": presence })
        })
        .collect();
    let body = json!({
        "websocket_enabled": admin.bus.websocket_enabled(),
        "sessions": {
            "total": stats.sessions,
            "websocket": stats.websocket_sessions,
            "long_polling": stats.long_polling_sessions,
        },
        "held_connects": stats.held_connects,
        "queued_messages": stats.queued_messages,
        "history": {
            "messages": stats.history_messages,
            "bytes": stats.history_bytes,
            "channels": stats.history_channels,
        },
        "channels_total": channels.len(),
        "truncated": channels.len() > MAX_LISTED,
        "channels": listed,
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /admin/api/log`.
async fn log_state(State(admin): State<Admin>) -> Response {
    json_response(StatusCode::OK, &json!(admin.log.state()))
}

/// `PUT /admin/api/log` with `{"directive": "…", "ttl": "60s"}` (`ttl`
/// optional, humantime: `90s`, `5m`, `1h 30m`).
async fn set_log(
    State(admin): State<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SetLog {
        directive: String,
        ttl: Option<String>,
    }
    let request: SetLog = serde_json::from_slice(&body?).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"directive\", \"ttl\"?}}: {err}"),
        )
    })?;
    let ttl = request
        .ttl
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_ttl",
                format!("`ttl`: {err} (e.g. \"90s\", \"5m\")"),
            )
        })?;
    let state = admin
        .log
        .set_override(&request.directive, ttl)
        .map_err(|err| {
            let code = match err {
                crate::log::OverrideError::InvalidDirective(_) => "invalid_directive",
                crate::log::OverrideError::InvalidTtl(_) => "invalid_ttl",
            };
            ApiError::new(StatusCode::BAD_REQUEST, code, err.to_string())
        })?;
    Ok(json_response(StatusCode::OK, &json!(state)))
}

/// `DELETE /admin/api/log`: the base filter again, now.
async fn clear_log(State(admin): State<Admin>) -> Response {
    admin.log.clear_override();
    json_response(StatusCode::OK, &json!(admin.log.state()))
}

/// `POST /admin/api/capture`: exactly one selector (`user`, `session`,
/// `channel`, `address`), a humantime `duration` (at most
/// [`wsbus::capture::MAX_CAPTURE_DURATION`]) and optionally `max_bytes`
/// (at most, and by default, [`wsbus::capture::DEFAULT_CAPTURE_BYTES`]).
async fn start_capture(
    Extension(runtime): Extension<Runtime>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use wsbus::capture::Selector;
    let bad =
        |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let request: serde_json::Map<String, Value> = serde_json::from_slice(&body?).map_err(|err| {
        bad(
            "bad_request",
            format!("expected {{\"user\" | \"session\" | \"channel\" | \"address\": \"…\", \"duration\": \"60s\"}}: {err}"),
        )
    })?;
    let mut selector = None;
    let mut duration = None;
    let mut max_bytes = None;
    for (key, value) in &request {
        match key.as_str() {
            "user" | "session" | "channel" | "address" => {
                let Some(text) = value.as_str().filter(|t| !t.is_empty()) else {
                    return Err(bad(
                        "invalid_selector",
                        format!("`{key}` must be a non-empty string"),
                    ));
                };
                if let Some((other, _)) = &selector {
                    return Err(bad(
                        "invalid_selector",
                        format!("one selector per capture: `{other}` and `{key}` given"),
                    ));
                }
                selector = Some((key.clone(), text.to_owned()));
            }
            "duration" => {
                let text = value.as_str().unwrap_or_default();
                duration = Some(humantime::parse_duration(text).map_err(|err| {
                    bad(
                        "invalid_duration",
                        format!("`duration`: {err} (e.g. \"60s\", \"5m\")"),
                    )
                })?);
            }
            "max_bytes" => {
                max_bytes = Some(value.as_u64().ok_or_else(|| {
                    bad(
                        "invalid_max_bytes",
                        "`max_bytes` must be a positive integer".into(),
                    )
                })? as usize);
            }
            other => {
                return Err(bad(
                    "invalid_selector",
                    format!(
                        "unknown key `{}`: the selector is one of `user`, `session`, `channel`, `address`",
                        truncate(other, 40)
                    ),
                ));
            }
        }
    }
    let Some((kind, value)) = selector else {
        return Err(bad(
            "invalid_selector",
            "a selector is required: one of `user`, `session`, `channel`, `address`".into(),
        ));
    };
    let Some(duration) = duration else {
        return Err(bad(
            "invalid_duration",
            "`duration` is required (e.g. \"60s\")".into(),
        ));
    };
    let selector = match kind.as_str() {
        "user" => Selector::User(value),
        "session" => Selector::Session(value),
        "channel" => Selector::Channel(value),
        _ => Selector::Address(value.parse().map_err(|_| {
            bad(
                "invalid_selector",
                format!("`address`: `{}` is not an IP address", truncate(&value, 60)),
            )
        })?),
    };
    let info = runtime
        .captures()
        .start(selector, duration, max_bytes)
        .map_err(|err| {
            let code = match err {
                wsbus::capture::StartError::Duration => "invalid_duration",
                _ => "too_many_captures",
            };
            let status = match err {
                wsbus::capture::StartError::Duration => StatusCode::BAD_REQUEST,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            ApiError::new(status, code, err.to_string())
        })?;
    Ok(json_response(StatusCode::CREATED, &json!(info)))
}

/// `GET /admin/api/capture`.
async fn list_captures(Extension(runtime): Extension<Runtime>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "captures": runtime.captures().list() }),
    )
}

fn no_capture(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no capture `{}`", truncate(id, 40)),
    )
}

/// `GET /admin/api/capture/<id>`: JSON lines; the counters in headers.
async fn download_capture(
    Extension(runtime): Extension<Runtime>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (info, lines) = runtime
        .captures()
        .download(&id)
        .ok_or_else(|| no_capture(&id))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"capture-{}.jsonl\"", info.id),
            ),
            (
                header::HeaderName::from_static("x-capture-dropped"),
                info.dropped.to_string(),
            ),
        ],
        lines,
    )
        .into_response())
}

/// `DELETE /admin/api/capture/<id>`: stop it.
async fn stop_capture(
    Extension(runtime): Extension<Runtime>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !runtime.captures().stop(&id) {
        return Err(no_capture(&id));
    }
    let (info, _) = runtime
        .captures()
        .download(&id)
        .ok_or_else(|| no_capture(&id))?;
    Ok(json_response(StatusCode::OK, &json!(info)))
}

/// `GET /healthz`: `200 ok` while the process serves requests.
pub async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

/// `GET /readyz`: `200 {"ready": true, "cluster": null}` while accepting
/// connections; `503` with `"ready": false` once shutdown has begun (a load
/// balancer stops sending new clients). `cluster` is the cluster link's
/// state in cluster mode, `{"redis": "up" | "down"}` — reported, not made
/// fatal (SPEC §7: a node that lost Redis still serves its local clients,
/// and taking every node out of the balancer during a Redis outage would
/// turn it into a full one); `null` on a single node.
pub async fn readyz(Extension(runtime): Extension<Runtime>) -> Response {
    let ready = !runtime.shutdown_token().is_cancelled();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let cluster = runtime
        .metrics()
        .cluster_redis_up()
        .map(|up| json!({ "redis": if up { "up" } else { "down" } }));
    json_response(status, &json!({ "ready": ready, "cluster": cluster }))
}
