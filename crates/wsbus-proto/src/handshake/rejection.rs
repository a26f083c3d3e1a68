//! Refused upgrades: the status, a machine-readable kind and a reason for
//! people.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use super::StatusCode;

/// Why an upgrade request was refused: a stable, machine-readable reason.
///
/// [`as_str`](Self::as_str) gives a `snake_case` name meant to be a metric
/// label or a log field; it does not change between releases. The HTTP
/// status follows from the kind ([`status`](Self::status)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The bytes are not an HTTP/1.x request head.
    MalformedRequest,
    /// The request is HTTP/1.0 (or not HTTP/1.x): §4.1, "The method of the
    /// request MUST be GET, and the HTTP version MUST be at least 1.1".
    UnsupportedHttpVersion,
    /// The request head holds more than [`MAX_HEADERS`](super::MAX_HEADERS) headers, or more
    /// bytes than the runtime's header size limit
    /// ([`Rejection::headers_too_large`]). Answered with `431`.
    HeadersTooLarge,
    /// A header value is not UTF-8.
    HeaderNotUtf8,
    /// The method is not `GET` (§4.1).
    MethodNotGet,
    /// No `Upgrade` header lists the token `websocket` (§4.2.1 item 3).
    MissingUpgradeHeader,
    /// No `Connection` header lists the token `Upgrade` (§4.2.1 item 4).
    MissingConnectionHeader,
    /// `Host`, `Origin`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version`
    /// appears more than once; the reason names which.
    DuplicateHeader,
    /// No `Host` header, or an empty one (§4.2.1 item 2).
    MissingHostHeader,
    /// No `Sec-WebSocket-Version` header (§4.2.1 item 6).
    MissingVersionHeader,
    /// A `Sec-WebSocket-Version` other than 13. §4.4: the server "MUST
    /// abort the WebSocket handshake described in this section and instead
    /// send an appropriate HTTP error code (such as 426 Upgrade Required)
    /// and a |Sec-WebSocket-Version| header field indicating the
    /// version(s) the server is capable of understanding". Answered with
    /// `426` and `Sec-WebSocket-Version: 13` ([`Rejection::headers`]).
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` header (§4.2.1 item 5).
    MissingKeyHeader,
    /// A `Sec-WebSocket-Key` that is not base64 of 16 bytes (§4.2.1 item 5:
    /// "a base64-encoded value that, when decoded, is 16 bytes in length").
    InvalidKey,
}

impl RejectionKind {
    /// Every kind, for a runtime that registers one counter per kind up front.
    pub const ALL: &'static [RejectionKind] = &[
        RejectionKind::MalformedRequest,
        RejectionKind::UnsupportedHttpVersion,
        RejectionKind::HeadersTooLarge,
        RejectionKind::HeaderNotUtf8,
        RejectionKind::MethodNotGet,
        RejectionKind::MissingUpgradeHeader,
        RejectionKind::MissingConnectionHeader,
        RejectionKind::DuplicateHeader,
        RejectionKind::MissingHostHeader,
        RejectionKind::MissingVersionHeader,
        RejectionKind::UnsupportedVersion,
        RejectionKind::MissingKeyHeader,
        RejectionKind::InvalidKey,
    ];

    /// A stable `snake_case` name, for metric labels and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::MalformedRequest => "malformed_request",
            RejectionKind::UnsupportedHttpVersion => "unsupported_http_version",
            RejectionKind::HeadersTooLarge => "headers_too_large",
            RejectionKind::HeaderNotUtf8 => "header_not_utf8",
            RejectionKind::MethodNotGet => "method_not_get",
            RejectionKind::MissingUpgradeHeader => "missing_upgrade_header",
            RejectionKind::MissingConnectionHeader => "missing_connection_header",
            RejectionKind::DuplicateHeader => "duplicate_header",
            RejectionKind::MissingHostHeader => "missing_host_header",
            RejectionKind::MissingVersionHeader => "missing_version_header",
            RejectionKind::UnsupportedVersion => "unsupported_version",
            RejectionKind::MissingKeyHeader => "missing_key_header",
            RejectionKind::InvalidKey => "invalid_key",
        }
    }

    /// The status a rejection of this kind is answered with: `426` for
    /// [`UnsupportedVersion`](Self::UnsupportedVersion), `431` for
    /// [`HeadersTooLarge`](Self::HeadersTooLarge), `400` otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            RejectionKind::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            RejectionKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused upgrade: the status, a machine-readable [`RejectionKind`], and
/// a short plain-text reason for people that names the offending header.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The HTTP status to answer with; always `kind.status()`.
    pub status: StatusCode,
    /// Why, in a form a metric can count.
    pub kind: RejectionKind,
    /// Why, for people: one line without a trailing newline, sent as the
    /// `text/plain` body. Its wording may change; match on
    /// [`kind`](Self::kind) instead.
    pub reason: Cow<'static, str>,
}

impl Rejection {
    /// A rejection of `kind`, answered with `kind.status()`.
    pub fn new(kind: RejectionKind, reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status: kind.status(),
            kind,
            reason: reason.into(),
        }
    }

    /// The `431` a runtime answers when a request head grows past its header
    /// size limit before [`parse_request`](super::parse_request) finds its end.
    pub fn headers_too_large() -> Self {
        Rejection::new(
            RejectionKind::HeadersTooLarge,
            "request headers are too large",
        )
    }

    /// The extra headers this rejection must carry, as `(name, value)`: §4.4
    /// requires a `426` to name the versions the server speaks
    /// (`Sec-WebSocket-Version: 13`). Empty for every other status.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        if self.status == StatusCode::UPGRADE_REQUIRED {
            &[("Sec-WebSocket-Version", "13")]
        } else {
            &[]
        }
    }

    /// The complete HTTP/1.1 response: status line, `Content-Type:
    /// text/plain; charset=utf-8`, `Connection: close`, the
    /// [`headers`](Self::headers), and the reason and a newline as the body.
    /// The runtime closes the connection after writing it.
    pub fn to_response(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status.0,
            self.status.reason_phrase(),
            self.reason.len() + 1
        );
        for (name, value) in self.headers() {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(out, "\r\n{}\n", self.reason);
        out.into_bytes()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.0, self.reason)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_distinct_snake_case() {
        let names: std::collections::HashSet<&str> =
            RejectionKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), RejectionKind::ALL.len());
        for name in names {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
        assert_eq!(
            RejectionKind::MissingUpgradeHeader.to_string(),
            "missing_upgrade_header"
        );
    }

    #[test]
    fn a_head_over_the_runtime_size_limit_gets_431() {
        let err = Rejection::headers_too_large();
        assert_eq!(err.kind, RejectionKind::HeadersTooLarge);
        let response = String::from_utf8(err.to_response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    }
}
