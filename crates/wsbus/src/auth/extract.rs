//! Finding the bearer token in an HTTP request (RFC 6750 §2).

use std::borrow::Cow;

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// The query parameter that may carry the token (RFC 6750 §2.3). Browsers
/// cannot set headers on a WebSocket handshake, so this is how a page passes
/// its token; it ends up in access logs, which is why wsbus redacts it.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// The bearer token of a request, or `None`.
///
/// `Authorization: Bearer <token>` comes first (RFC 6750 §2.1; the scheme
/// is case-insensitive, RFC 9110 §11.1), then the `access_token` query
/// parameter (RFC 6750 §2.3), percent-decoded. An `Authorization` header with
/// another scheme (`Basic`) or an empty token is skipped, not an error: the
/// query may still carry one. With several `access_token` parameters, the
/// first wins.
///
/// The token is returned as found; [`TokenVerifier::verify`] enforces
/// [`MAX_TOKEN_BYTES`].
///
/// [`TokenVerifier::verify`]: super::TokenVerifier::verify
/// [`MAX_TOKEN_BYTES`]: super::MAX_TOKEN_BYTES
pub fn token_from_request<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    for value in headers.get_all(AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim_start();
        let Some((scheme, rest)) = value.split_once([' ', '\t']) else {
            continue;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let token = rest.trim_matches([' ', '\t']);
        if !token.is_empty() {
            return Some(Cow::Borrowed(token));
        }
    }
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == ACCESS_TOKEN_PARAM)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_header() {
        let h = headers(&["Bearer abc.def.ghi"]);
        assert_eq!(token_from_request(&h, None).as_deref(), Some("abc.def.ghi"));
        let h = headers(&["bEaReR   abc "]);
        assert_eq!(token_from_request(&h, None).as_deref(), Some("abc"));
    }

    #[test]
    fn header_wins_over_query() {
        let h = headers(&["Bearer fromheader"]);
        let t = token_from_request(&h, Some("access_token=fromquery"));
        assert_eq!(t.as_deref(), Some("fromheader"));
    }

    #[test]
    fn other_scheme_or_empty_falls_back_to_query() {
        let h = headers(&["Basic dXNlcjpwYXNz", "Bearer ", "Bearer"]);
        assert_eq!(token_from_request(&h, None), None);
        let t = token_from_request(&h, Some("a=1&access_token=q%2Bt&access_token=second"));
        assert_eq!(t.as_deref(), Some("q+t"));
        let h = headers(&["Basic x", "Bearer second"]);
        assert_eq!(token_from_request(&h, None).as_deref(), Some("second"));
    }

    #[test]
    fn query_only_and_absent() {
        let h = HeaderMap::new();
        assert_eq!(
            token_from_request(&h, Some("access_token=t1")).as_deref(),
            Some("t1")
        );
        assert_eq!(token_from_request(&h, Some("access_token=")), None);
        assert_eq!(token_from_request(&h, Some("other=1")), None);
        assert_eq!(token_from_request(&h, Some("")), None);
        assert_eq!(token_from_request(&h, None), None);
    }
}
