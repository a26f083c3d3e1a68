//! The upgrade path: from an HTTP request to a running socket task.
//!
//! Used by [`crate::Server`] and by the axum integration alike: anything that
//! hands us a `http::Request` whose connection hyper can upgrade.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use wsbus_proto::Connection;
use wsbus_proto::handshake::{Rejection, validate_upgrade};

use crate::app::{HandshakeRequest, SocketInfo, Upgrade, WebSocketApp, WebSocketConfig};
use crate::auth::{ACCESS_TOKEN_PARAM, Claims, TokenError, token_from_request};
use crate::driver::{SessionRefresh, SocketTask};
use crate::hub::{Opened, SocketId};
use crate::limits::TokenBucket;
use crate::origin;
use crate::proxy::client_view;
use crate::runtime::{HandshakeRefusal, Runtime, SessionBinding};
use crate::security::{Permits, SocketGuard, tokio_deadline};
use crate::server::ConnectionInfo;
use crate::session::User;

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A refused handshake ends the connection: a client whose upgrade failed
/// has no use for it.
fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn rejection_response(rejection: &Rejection) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(rejection.status.0).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = text_response(status, rejection.reason.to_string());
    for (name, value) in rejection.headers() {
        response
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    closing(response)
}

/// Whether a request tries to be a WebSocket upgrade (and so gets the
/// protocol's 400 / 426 when malformed) rather than being plain HTTP (which
/// the application answers).
fn is_upgrade_attempt(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers.contains_key(header::SEC_WEBSOCKET_KEY)
        || headers.contains_key(header::SEC_WEBSOCKET_VERSION)
}

/// Query parameters; the last value of a repeated name wins.
pub(crate) fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// `401` for a missing or refused access token (RFC 6750 §3): the reason
/// (never the token) in `error_description` and the body.
fn unauthorized(error: &TokenError) -> Response<Full<Bytes>> {
    let mut response = text_response(StatusCode::UNAUTHORIZED, error.reason());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&error.www_authenticate()).expect("reasons are header-safe"),
    );
    closing(response)
}

/// `429` with `Retry-After`: a connection limit of the client is reached.
fn too_many(runtime: &Runtime, what: &str) -> Response<Full<Bytes>> {
    let mut response = text_response(StatusCode::TOO_MANY_REQUESTS, what);
    let retry = runtime.config().retry_after.as_secs().max(1).to_string();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry).expect("digits"),
    );
    closing(response)
}

/// The request's access token, checked: `Ok(None)` when it has none
/// (whether one is required is decided after the application's decision,
/// which may say its protocol carries the token in its messages).
async fn authenticate(
    runtime: &Runtime,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Result<Option<Claims>, TokenError> {
    let Some(auth) = &runtime.security().auth else {
        return Ok(None);
    };
    match token_from_request(headers, query) {
        Some(token) => auth.verifier.verify(&token).await.map(Some),
        None => Ok(None),
    }
}

/// Refuses an upgrade for its token: counted, logged (the reason, never the
/// token), `401`.
fn refuse_token(
    runtime: &Runtime,
    error: &TokenError,
    client: std::net::IpAddr,
    path: &str,
) -> Response<Full<Bytes>> {
    runtime.metrics().auth_failure(error.label());
    tracing::info!(target: "wsbus::auth", %client, path, reason = error.reason(), "upgrade refused: access token");
    runtime
        .metrics()
        .refusal(HandshakeRefusal::Unauthorized, 401);
    unauthorized(error)
}

/// Run the upgrade decision for `req` and, if it accepts, answer 101 and
/// start the socket once hyper hands over the connection. The time a
/// WebSocket attempt takes to answer (token verification, the
/// application's decision, any refusal) goes to the handshake-latency
/// histogram; plain requests the application answers do not.
pub(crate) async fn upgrade<A: WebSocketApp, B>(
    app: &Arc<A>,
    runtime: &Runtime,
    req: Request<B>,
    connection: ConnectionInfo,
) -> Response<Full<Bytes>> {
    let started = std::time::Instant::now();
    let attempt = is_upgrade_attempt(req.headers());
    let response = answer(app, runtime, req, connection).await;
    if attempt {
        runtime.metrics().handshake_duration(started.elapsed());
    }
    response
}

async fn answer<A: WebSocketApp, B>(
    app: &Arc<A>,
    runtime: &Runtime,
    mut req: Request<B>,
    connection: ConnectionInfo,
) -> Response<Full<Bytes>> {
    let client = client_view(
        connection.peer,
        connection.tls,
        req.headers(),
        &runtime.security().trusted_proxies,
    );
    let tls = client.tls;
    let session = {
        let cookies = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        runtime.sessions().from_cookies(cookies)
    }
    .await;
    let minor = match req.version() {
        http::Version::HTTP_09 | http::Version::HTTP_10 => 0,
        _ => 1,
    };
    let validated = validate_upgrade(
        req.method().as_str(),
        minor,
        req.headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );
    // The token is checked for WebSocket attempts only: a plain request
    // here is the application's to answer.
    let claims = if validated.is_ok() {
        match authenticate(runtime, req.headers(), req.uri().query()).await {
            Ok(claims) => claims.map(Arc::new),
            Err(error) => return refuse_token(runtime, &error, client.addr, req.uri().path()),
        }
    } else {
        None
    };
    let mut params = query_params(req.uri().query());
    // The token stays out of what applications see (and might log).
    params.remove(ACCESS_TOKEN_PARAM);
    let user = match &claims {
        Some(claims) => Some(User {
            login: claims.sub.clone(),
            display_name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
        }),
        None => session.as_ref().map(|s| s.user.clone()),
    };
    let mut headers = req.headers().clone();
    if claims.is_some() {
        // Verified: the claims stand for it, and the token does not travel
        // on to code that might log it.
        headers.remove(header::AUTHORIZATION);
    }
    let handshake = HandshakeRequest {
        is_websocket: validated.is_ok(),
        path: req.uri().path().to_owned(),
        params,
        headers,
        user,
        session: session.as_ref().map(|s| s.id.clone()),
        tls,
        claims,
        client_addr: Some(client.addr),
    };
    let upgrade_request = match validated {
        Ok(upgrade) => upgrade,
        // Not a WebSocket attempt at all: the application answers (as in
        // `if (!req.webSocket) return { status: 404 }`).
        Err(_) if !is_upgrade_attempt(req.headers()) => {
            return match app.upgrade(&handshake) {
                Upgrade::Refuse(response) => response,
                Upgrade::Accept(_) => {
                    let mut response = text_response(
                        StatusCode::UPGRADE_REQUIRED,
                        "this endpoint speaks WebSocket",
                    );
                    response
                        .headers_mut()
                        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                    response
                        .headers_mut()
                        .insert("sec-websocket-version", HeaderValue::from_static("13"));
                    response
                }
            };
        }
        Err(rejection) => {
            // At debug: malformed upgrades are mostly scanners, and info
            // would let anyone fill the log; raise `wsbus::handshake` to see them.
            tracing::debug!(target: "wsbus::handshake", client = %client.addr, path = %req.uri().path(), status = rejection.status.0, reason = %rejection.reason, "upgrade refused");
            runtime.metrics().refusal(
                HandshakeRefusal::Protocol(rejection.kind),
                rejection.status.0,
            );
            return rejection_response(&rejection);
        }
    };
    if runtime.hub().len() >= runtime.config().max_connections {
        runtime
            .metrics()
            .refusal(HandshakeRefusal::TooManyConnections, 503);
        tracing::warn!(target: "wsbus::limits", client = %client.addr, path = %req.uri().path(), max = runtime.config().max_connections, "upgrade refused: max_connections reached");
        let mut response = text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections, retry later",
        );
        let retry = runtime.config().retry_after.as_secs().max(1).to_string();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&retry).expect("digits"),
        );
        return closing(response);
    }
    let security = runtime.security();
    let mut permits = Permits::default();
    if let Some(limiter) = &security.connections_per_ip {
        match limiter.try_acquire(client.addr) {
            Some(permit) => permits.ip = Some(permit),
            None => {
                runtime.metrics().limit_hit("connections_per_ip");
                runtime
                    .metrics()
                    .refusal(HandshakeRefusal::ConnectionLimit, 429);
                tracing::info!(target: "wsbus::limits", client = %client.addr, path = %handshake.path, "upgrade refused: connections_per_ip reached");
                return too_many(
                    runtime,
                    "too many connections from this address, retry later",
                );
            }
        }
    }
    if let (Some(limiter), Some(user)) = (&security.connections_per_user, &handshake.user) {
        match limiter.try_acquire(Arc::from(user.login.as_str())) {
            Some(permit) => permits.user = Some(permit),
            None => {
                runtime.metrics().limit_hit("connections_per_user");
                runtime
                    .metrics()
                    .refusal(HandshakeRefusal::ConnectionLimit, 429);
                tracing::info!(target: "wsbus::limits", client = %client.addr, user = %user.login, path = %handshake.path, "upgrade refused: connections_per_user reached");
                return too_many(runtime, "too many connections for this user, retry later");
            }
        }
    }
    let config = match app.upgrade(&handshake) {
        Upgrade::Refuse(response) => {
            runtime
                .metrics()
                .refusal(HandshakeRefusal::Application, response.status().as_u16());
            return response;
        }
        Upgrade::Accept(config) => config,
    };
    let token_required = security.auth.as_ref().is_some_and(|a| a.required);
    if token_required && handshake.claims.is_none() && !config.token_in_messages {
        return refuse_token(runtime, &TokenError::Missing, client.addr, &handshake.path);
    }
    let host = client.host.as_deref().unwrap_or(&upgrade_request.host);
    if !origin_allowed(&config, upgrade_request.origin.as_deref(), host, tls) {
        tracing::info!(target: "wsbus::handshake", client = %client.addr, origin = ?upgrade_request.origin, path = %handshake.path, "origin rejected");
        runtime
            .metrics()
            .refusal(HandshakeRefusal::OriginNotAllowed, 403);
        return closing(text_response(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let protocol = upgrade_request
        .select_protocol(&config.sub_protocols)
        .map(str::to_owned);
    let deflate = runtime
        .config()
        .deflate
        .as_ref()
        .and_then(|cfg| Some((upgrade_request.negotiate_deflate(cfg)?, cfg.clone())));
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in
        upgrade_request.response_headers(protocol.as_deref(), deflate.as_ref().map(|(p, _)| p))
    {
        response.headers_mut().insert(
            name,
            HeaderValue::from_str(&value).expect("handshake values are header-safe"),
        );
    }
    let mut conn = Connection::server(runtime.config().limits);
    if let Some((params, cfg)) = &deflate {
        conn = conn.with_deflate(params, cfg);
    }
    runtime.metrics().handshake(101);

    let opened = Opened {
        client: client.addr,
        tls,
        deflate: deflate.map(|(params, _)| params),
        subprotocol: protocol.map(Into::into),
        at: std::time::Instant::now(),
    };
    let token_user = handshake.claims.as_ref().map(|c| Arc::from(c.sub.as_str()));
    let token_expires_at = handshake
        .claims
        .as_ref()
        .and_then(|c| c.expires_at)
        .map(tokio_deadline);
    let schema = security.schemas.get(&handshake.path).cloned();
    let registration = runtime.register_socket_with(
        session.map(|s| SessionBinding {
            id: s.id,
            terminate_on_exit: config.terminate_on_session_exit,
            refresh: config
                .session_access
                .then(|| SessionRefresh::new(config.session_access_throttle)),
        }),
        SocketInfo {
            id: SocketId::from_u64(0), // the hub's, once registered
            path: handshake.path,
            params: handshake.params,
            user: handshake.user,
            claims: handshake.claims,
        },
        opened,
    );
    let guard = SocketGuard {
        token_expires_at,
        keepalive_at: None,
        user: token_user,
        rate: security
            .message_rate
            .map(|limit| (limit, TokenBucket::new(limit, std::time::Instant::now()))),
        schema,
        violated: false,
        permits,
    };
    let task = SocketTask {
        app: app.clone(),
        data: config.data,
        registration,
        guard: guard.is_active().then(|| Box::new(guard)),
    };
    runtime
        .tracker()
        .spawn(task.run(conn, hyper::upgrade::on(&mut req)));
    response
}

/// The application's `check_origin`, or the default rule. A check that
/// errs or panics rejects.
fn origin_allowed<D>(
    config: &WebSocketConfig<D>,
    origin: Option<&str>,
    host: &str,
    tls: bool,
) -> bool {
    match &config.check_origin {
        None => origin::default_rule(origin, host, tls),
        Some(check) => match catch_unwind(AssertUnwindSafe(|| check(origin))) {
            Ok(Ok(allowed)) => allowed,
            Ok(Err(err)) => {
                tracing::info!(target: "wsbus::handshake", %err, "check_origin failed");
                false
            }
            Err(_) => {
                tracing::warn!(target: "wsbus::handshake", "check_origin panicked");
                false
            }
        },
    }
}
