//! The JSON API under `/api`: `GET /api/me` and `POST /api/publish`, and
//! the error every `/api` route answers with.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use wsbus::Runtime;
use wsbus::bus::Bus;

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use wsbus::auth::{Claims, TokenVerifier};
use wsbus::bayeux::{ChannelName, ChannelPattern};

use crate::auth::BearerToken;

/// An `/api` route's failure: its status and a JSON body
/// `{"error": "<code>", "message": "<for people>"}`, where `code` is a
/// stable snake_case name a client can branch on.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// `401`, with `WWW-Authenticate: Bearer` (added on the response).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<BytesRejection> for ApiError {
    /// A body that could not be read: too large (`413`) or cut short.
    fn from(rejection: BytesRejection) -> Self {
        let code = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "bad_body",
        };
        Self::new(rejection.status(), code, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "message": self.message });
        let mut response = json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `value` as an `application/json` response.
pub fn json_response(status: StatusCode, value: &Value) -> Response {
    let headers = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    (status, headers, value.to_string()).into_response()
}

/// Who may `POST /api/publish`: the holder of `bus.publish_token` (any
/// channel), or of a JWT whose `channels` claim covers the channel.
#[derive(Clone, Debug)]
pub struct PublishAuth {
    pub token: Option<BearerToken>,
    pub jwt: Option<TokenVerifier>,
}

/// The `/api` routes (to be nested at `/api`). With neither a publish token
/// nor JWTs, `POST /api/publish` answers `404`.
pub fn router(bus: Bus, auth: PublishAuth) -> Router {
    let publish = if auth.token.is_some() || auth.jwt.is_some() {
        // `route_layer`: a wrong method is a 405, whoever asks.
        post(publish).route_layer(middleware::from_fn_with_state(auth, require_publisher))
    } else {
        post(|| async {
            ApiError::not_found(
                "publishing over HTTP is disabled (set bus.publish_token or [auth])",
            )
        })
    };
    Router::new()
        .route("/me", get(me))
        .route("/publish", publish)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .fallback(|| async { ApiError::not_found("no such API route") })
        .with_state(bus)
}

/// `GET /api/me`: `{"user": "<login>"}`, or `{"user": null}` without a
/// session.
async fn me(Extension(runtime): Extension<Runtime>, headers: HeaderMap) -> Response {
    let user = crate::web::session_of(&runtime, &headers)
        .await
        .map(|s| s.user.login);
    json_response(StatusCode::OK, &json!({ "user": user }))
}

/// `POST /api/publish` with `{"channel": "/x", "data": …}`: publishes from
/// the server; answers `{"successful": true, "recipients": n, "offset": o}`.
/// The bearer check runs before it (see [`router`]).
async fn publish(
    State(bus): State<Bus>,
    claims: Option<Extension<Arc<Claims>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct PublishRequest {
        channel: String,
        data: Value,
    }
    let request: PublishRequest = serde_json::from_slice(&body?).map_err(|err| {
        ApiError::bad_request(format!("expected {{\"channel\", \"data\"}}: {err}"))
    })?;
    // A JWT publishes only where its `channels` claim reaches.
    if let Some(Extension(claims)) = claims {
        let allowed = ChannelName::parse(&request.channel).is_ok_and(|channel| {
            claims.channels.iter().flatten().any(|pattern| {
                ChannelPattern::parse(pattern).is_ok_and(|pattern| pattern.matches(&channel))
            })
        });
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token's channels claim does not cover this channel",
            ));
        }
    }
    let published = bus
        .publish(&request.channel, request.data)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let answer = json!({
        "successful": true,
        "recipients": published.recipients,
        "offset": published.offset,
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// Middleware of `POST /api/publish`: the publish token passes as is; a JWT
/// passes with its claims in the request (the handler checks the channel);
/// anything else gets `401`.
async fn require_publisher(
    State(auth): State<PublishAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| crate::auth::bearer_credentials(value.as_bytes()))
        .map(<[u8]>::to_vec);
    let Some(presented) = presented else {
        return ApiError::unauthorized().into_response();
    };
    if auth.token.as_ref().is_some_and(|t| t.matches(&presented)) {
        return next.run(request).await;
    }
    if let Some(verifier) = &auth.jwt
        && let Ok(token) = std::str::from_utf8(&presented)
    {
        match verifier.verify(token).await {
            Ok(claims) => {
                request.extensions_mut().insert(Arc::new(claims));
                return next.run(request).await;
            }
            Err(error) => {
                tracing::info!(target: "wsbus::auth", reason = error.reason(), "POST /api/publish: token refused");
            }
        }
    }
    ApiError::unauthorized().into_response()
}
