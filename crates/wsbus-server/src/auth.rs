//! Bearer tokens for the HTTP API: a constant-time check, as axum
//! middleware.
//!
//! Put [`require_bearer`] in front of a route with
//! `axum::middleware::from_fn_with_state(token, require_bearer)`; the admin
//! API's routes take this layer. (`POST /api/publish` has its own, which
//! also takes JWTs: `api::require_publisher`.)

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;

use crate::api::ApiError;

/// A secret that a request presents as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerToken(Arc<[u8]>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    pub fn new(token: &str) -> Self {
        BearerToken(token.as_bytes().into())
    }

    /// Whether `presented` is this token, in a time that does not depend
    /// on how much of it is right.
    pub fn matches(&self, presented: &[u8]) -> bool {
        wsbus::auth::constant_time_eq(presented, &self.0)
    }
}

/// The credentials of an `Authorization` value of the Bearer scheme (the
/// scheme name is case-insensitive, RFC 9110 §11.1).
pub fn bearer_credentials(authorization: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = authorization.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let credentials = authorization[SCHEME.len()..].trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// Middleware: runs the route only for a request that presents `token`;
/// anything else gets `401` with `WWW-Authenticate: Bearer` and the API's
/// JSON error.
pub async fn require_bearer(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_credentials(value.as_bytes()));
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_credentials() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Basic abc"), None);
        assert_eq!(bearer_credentials(b"Bearer "), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
    }

    #[test]
    fn token_debug_hides_the_secret() {
        let token = BearerToken::new("hunter2");
        assert!(!format!("{token:?}").contains("hunter2"));
        assert!(token.matches(b"hunter2"));
    }
}
