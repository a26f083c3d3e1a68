//! Bearer tokens for the HTTP API: a constant-time check, as axum
//! middleware.
//!
//! Put [`require_bearer`] in front of a route with
//! `axum::middleware::from_fn_with_state(token, require_bearer)`, as
//! `POST /api/publish` does; the admin API's routes take the same layer.

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
        constant_time_eq(presented, &self.0)
    }
}

/// `presented == secret`, taking the same time whatever `presented` holds:
/// every byte of `secret` is compared, the differences are OR-ed together
/// and looked at once at the end. The time depends on `secret`'s length
/// only (the attacker's own `presented` length decides nothing but the
/// result), so a mismatch position or a matching prefix cannot be timed.
pub fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut difference = u8::from(presented.len() != secret.len());
    for (i, expected) in secret.iter().enumerate() {
        let byte = presented.get(i).copied().unwrap_or(0);
        // `black_box` keeps the optimiser from turning the loop into an
        // early exit once `difference` is non-zero.
        difference = std::hint::black_box(difference | (byte ^ expected));
    }
    difference == 0
}

/// The credentials of an `Authorization` value of the Bearer scheme (the
/// scheme name is case-insensitive, RFC 9110 §11.1).
fn bearer_credentials(authorization: &[u8]) -> Option<&[u8]> {
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
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret\0", b"s3cret"));
        // A shorter guess padded with the padding byte is still wrong.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
    }

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
