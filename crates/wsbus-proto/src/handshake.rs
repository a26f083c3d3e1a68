//! The opening handshake (RFC 6455 §4), both roles, without I/O. Section
//! numbers in this module are RFC 6455's.
//!
//! Server: [`parse_request`] reads an HTTP/1.1 request head from bytes (or a
//! runtime built on an HTTP library passes its parsed parts to
//! [`validate_upgrade`] directly); the resulting [`UpgradeRequest`] writes the
//! `101` response, and a [`Rejection`] writes the exact `400` / `426` / `431`.
//! [`Rejection::kind`] says why in a form a metric can count.
//!
//! Client: [`ClientHandshake::new`] writes the request from a key the caller
//! supplies (16 random bytes: randomness is passed in), and
//! [`ClientHandshake::parse_response`] checks the server's answer.
//!
//! ```
//! use wsbus_proto::handshake::{RejectionKind, UpgradeRequest, parse_request};
//!
//! let request = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\
//!     Upgrade: websocket\r\nConnection: Upgrade\r\n\
//!     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
//! let (head, _len) = parse_request(request).unwrap().expect("a complete head");
//! let response = match UpgradeRequest::from_head(&head) {
//!     Ok(upgrade) => upgrade.response(None, None),
//!     Err(rejection) => {
//!         // `rejection.kind.as_str()` is a stable label to count refusals by.
//!         rejection.to_response()
//!     }
//! };
//! assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//!
//! let old_client = parse_request(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n")
//!     .unwrap()
//!     .unwrap()
//!     .0;
//! let rejection = UpgradeRequest::from_head(&old_client).unwrap_err();
//! assert_eq!(rejection.kind, RejectionKind::UnsupportedVersion);
//! assert_eq!(rejection.kind.as_str(), "unsupported_version");
//! assert_eq!(rejection.status.0, 426);
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use crate::deflate::{DeflateConfig, DeflateParams, EXTENSION_NAME, parse_extensions};

/// The GUID of RFC 6455 §1.3 that the accept key hashes in.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Most request headers accepted in one handshake, counting each header line
/// (a repeated name counts each time). Browsers send about 15; 64 leaves
/// room for proxies and cookies while bounding parse work. More gets `431`
/// ([`RejectionKind::HeadersTooLarge`]). The client role accepts as many in
/// the server's response.
pub const MAX_HEADERS: usize = 64;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (§4.2.2 step 5.4):
/// base64(SHA-1(key + GUID)), the key taken as sent (its base64 text, not
/// the decoded bytes) and the GUID `258EAFA5-E914-47DA-95CA-C5AB0DC85B11`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// An HTTP status code, as the three digits of the status line.
///
/// Kept minimal (this crate does no HTTP beyond the upgrade): the codes the
/// handshake and a WebSocket runtime answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// 101: the upgrade is accepted; WebSocket frames follow the response.
    pub const SWITCHING_PROTOCOLS: StatusCode = StatusCode(101);
    /// 400: the request is not a valid WebSocket upgrade (§4.2.1: "the server
    /// MUST stop processing the client's handshake and return an HTTP
    /// response with an appropriate error code (such as 400 Bad Request)").
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    /// 403: the server refuses the upgrade, e.g. for its `Origin` (§4.2.2).
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    /// 426: the client speaks a `Sec-WebSocket-Version` other than 13 (§4.4).
    pub const UPGRADE_REQUIRED: StatusCode = StatusCode(426);
    /// 431: the request head is over a header limit (RFC 6585 §5).
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: StatusCode = StatusCode(431);
    /// 503: the server cannot take another connection now.
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);

    /// The standard reason phrase for the status line (`"Bad Request"` for
    /// 400), or `"Unknown"` for a code outside the few this crate writes.
    pub fn reason_phrase(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }
}

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
    /// The request head holds more than [`MAX_HEADERS`] headers, or more
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
    /// size limit before [`parse_request`] finds its end.
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

/// A request head read by [`parse_request`]: owned, so the read buffer can be
/// reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method as sent (`GET` for an upgrade; compared case-sensitively,
    /// as HTTP methods are).
    pub method: String,
    /// The request target as sent: path and query, not decoded.
    pub target: String,
    /// The minor version of HTTP/1.x: 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Every header line in order, names as sent (compare them
    /// case-insensitively, see [`header_values`](Self::header_values)) and
    /// values as raw bytes (HTTP allows non-UTF-8 values).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// All values of a header, in order (names compare case-insensitively).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Parse an HTTP/1.x request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (the caller bounds how much, and answers
/// [`Rejection::headers_too_large`] past its header size limit).
/// `Ok(Some((head, len)))`: the head and its length in bytes; anything after
/// it is already WebSocket data, to be kept for the connection. `Err`: a `400` for bytes that are not an
/// HTTP/1.x request, a `431` for more than [`MAX_HEADERS`] headers. The head
/// is not checked as an upgrade here: see [`UpgradeRequest::from_head`].
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let head = RequestHead {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                version_minor: req.version.unwrap_or_default(),
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
            };
            Ok(Some((head, len)))
        }
        Err(httparse::Error::TooManyHeaders) => Err(Rejection::new(
            RejectionKind::HeadersTooLarge,
            "too many request headers",
        )),
        Err(httparse::Error::Version) => Err(Rejection::new(
            RejectionKind::UnsupportedHttpVersion,
            "HTTP/1.1 is required",
        )),
        Err(_) => Err(Rejection::new(
            RejectionKind::MalformedRequest,
            "malformed HTTP request",
        )),
    }
}

/// A valid upgrade request (§4.2.1), ready to be accepted with
/// [`response`](Self::response) or [`response_headers`](Self::response_headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The `Sec-WebSocket-Key` as sent: base64 of 16 bytes (checked), the
    /// input of [`accept_key`].
    pub key: String,
    /// The `Host` header, trimmed and not empty (not otherwise checked).
    pub host: String,
    /// The `Origin` header, if any, as sent. Browsers always send it; the
    /// server decides whether to accept it (§4.2.2, §10.2).
    pub origin: Option<String>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in the client's
    /// order of preference, every header and comma list flattened.
    pub protocols: Vec<String>,
    /// Every `Sec-WebSocket-Extensions` value, unparsed, for
    /// [`negotiate_deflate`](Self::negotiate_deflate).
    pub extensions: Vec<String>,
}

/// Check an upgrade request (RFC 6455 §4.2.1) from its parts. `headers` may
/// repeat names; comma lists are split; names compare case-insensitively and
/// the tokens `websocket` and `Upgrade` too. `version_minor` is the `x` of
/// HTTP/1.x.
///
/// The checks run in an order that gives the most useful answer: a request
/// that is not a WebSocket upgrade at all is told so before its details are
/// checked, and a client of an older protocol version gets `426` with the
/// version we speak rather than a complaint about its key.
pub fn validate_upgrade<'h>(
    method: &str,
    version_minor: u8,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<UpgradeRequest, Rejection> {
    let mut host = None;
    let mut key = None;
    let mut version = None;
    let mut origin = None;
    let mut upgrade_ok = false;
    let mut connection_ok = false;
    let mut protocols = Vec::new();
    let mut extensions = Vec::new();
    let mut duplicate = None;
    for (name, value) in headers {
        let value = std::str::from_utf8(value).map_err(|_| {
            Rejection::new(RejectionKind::HeaderNotUtf8, "a header value is not UTF-8")
        })?;
        let value = value.trim();
        let set_once =
            |slot: &mut Option<String>, dup: &mut Option<&'static str>, what: &'static str| {
                if slot.replace(value.to_owned()).is_some() {
                    *dup = Some(what);
                }
            };
        match name.to_ascii_lowercase().as_str() {
            "host" => set_once(&mut host, &mut duplicate, "duplicate Host header"),
            "upgrade" => upgrade_ok |= has_token(value, "websocket"),
            "connection" => connection_ok |= has_token(value, "upgrade"),
            "sec-websocket-key" => set_once(
                &mut key,
                &mut duplicate,
                "duplicate Sec-WebSocket-Key header",
            ),
            "sec-websocket-version" => set_once(
                &mut version,
                &mut duplicate,
                "duplicate Sec-WebSocket-Version header",
            ),
            "origin" => set_once(&mut origin, &mut duplicate, "duplicate Origin header"),
            "sec-websocket-protocol" => protocols.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            ),
            "sec-websocket-extensions" => extensions.push(value.to_owned()),
            _ => {}
        }
    }
    if method != "GET" {
        return Err(Rejection::new(
            RejectionKind::MethodNotGet,
            "a WebSocket upgrade must use GET",
        ));
    }
    if version_minor < 1 {
        return Err(Rejection::new(
            RejectionKind::UnsupportedHttpVersion,
            "a WebSocket upgrade needs HTTP/1.1 or later",
        ));
    }
    if !upgrade_ok {
        return Err(Rejection::new(
            RejectionKind::MissingUpgradeHeader,
            "missing or invalid Upgrade header (expected \"websocket\")",
        ));
    }
    if !connection_ok {
        return Err(Rejection::new(
            RejectionKind::MissingConnectionHeader,
            "missing or invalid Connection header (expected \"Upgrade\")",
        ));
    }
    if let Some(dup) = duplicate {
        return Err(Rejection::new(RejectionKind::DuplicateHeader, dup));
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err(Rejection::new(
            RejectionKind::MissingHostHeader,
            "missing Host header",
        ));
    };
    match version.as_deref() {
        Some("13") => {}
        None => {
            return Err(Rejection::new(
                RejectionKind::MissingVersionHeader,
                "missing Sec-WebSocket-Version header",
            ));
        }
        Some(_) => {
            return Err(Rejection::new(
                RejectionKind::UnsupportedVersion,
                "unsupported Sec-WebSocket-Version (this server speaks 13)",
            ));
        }
    }
    let Some(key) = key else {
        return Err(Rejection::new(
            RejectionKind::MissingKeyHeader,
            "missing Sec-WebSocket-Key header",
        ));
    };
    if !matches!(BASE64.decode(&key), Ok(raw) if raw.len() == 16) {
        return Err(Rejection::new(
            RejectionKind::InvalidKey,
            "invalid Sec-WebSocket-Key header (must be 16 bytes in base64)",
        ));
    }
    Ok(UpgradeRequest {
        key,
        host,
        origin,
        protocols,
        extensions,
    })
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl UpgradeRequest {
    /// Check a request head read by [`parse_request`]: [`validate_upgrade`]
    /// on its parts.
    pub fn from_head(head: &RequestHead) -> Result<Self, Rejection> {
        validate_upgrade(
            &head.method,
            head.version_minor,
            head.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )
    }

    /// The first protocol in the client's list that `supported` contains (the
    /// client lists in order of preference, §4.1), compared exactly; `None`
    /// when none matches, and the response then names no protocol.
    pub fn select_protocol<'a>(&'a self, supported: &[impl AsRef<str>]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(String::as_str)
            .find(|offered| supported.iter().any(|s| s.as_ref() == *offered))
    }

    /// Negotiate permessage-deflate against the client's offers
    /// ([`DeflateConfig::negotiate_server`]); `None` when it offered none this
    /// endpoint accepts, and the connection then runs uncompressed.
    pub fn negotiate_deflate(&self, config: &DeflateConfig) -> Option<DeflateParams> {
        config.negotiate_server(self.extensions.iter().map(String::as_str))
    }

    /// The headers of the `101` response (without the status line), for
    /// runtimes that write responses through an HTTP library: `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept` (§4.2.2 step 5), and
    /// `Sec-WebSocket-Protocol` / `Sec-WebSocket-Extensions` when `protocol` /
    /// `deflate` are given. `protocol` must be one the client offered.
    pub fn response_headers(
        &self,
        protocol: Option<&str>,
        deflate: Option<&DeflateParams>,
    ) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Upgrade", "websocket".to_owned()),
            ("Connection", "Upgrade".to_owned()),
            ("Sec-WebSocket-Accept", accept_key(self.key.as_bytes())),
        ];
        if let Some(protocol) = protocol {
            headers.push(("Sec-WebSocket-Protocol", protocol.to_owned()));
        }
        if let Some(params) = deflate {
            headers.push(("Sec-WebSocket-Extensions", params.to_header_value()));
        }
        headers
    }

    /// The complete `101 Switching Protocols` response with
    /// [`response_headers`](Self::response_headers), ending in the blank line.
    pub fn response(&self, protocol: Option<&str>, deflate: Option<&DeflateParams>) -> Vec<u8> {
        let mut out = String::with_capacity(160);
        out.push_str("HTTP/1.1 101 Switching Protocols\r\n");
        for (name, value) in self.response_headers(protocol, deflate) {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// What a client asks for in its opening handshake (§4.1).
///
/// The strings are written into the request as given: they must not contain
/// CR or LF, which would end the header line and let the rest be read as
/// another header.
#[derive(Clone, Debug, Default)]
pub struct ClientRequest {
    /// The `Host` header value (host, and port when not the default).
    pub host: String,
    /// The request target: path and query, already percent-encoded.
    pub target: String,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Offer permessage-deflate with these settings.
    pub deflate: Option<DeflateConfig>,
    /// Extra headers (`Origin`, `Authorization`, `Cookie`, …), written as
    /// given after the handshake's own.
    pub headers: Vec<(String, String)>,
}

/// A client handshake in flight: what [`parse_response`](Self::parse_response)
/// needs to check the server's answer against what was sent.
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    expected_accept: String,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// What the server agreed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol the server chose from those offered, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters the server answered with, if it
    /// accepted the extension; pass them to
    /// [`Connection::with_deflate`](crate::Connection::with_deflate).
    pub deflate: Option<DeflateParams>,
    /// The raw `Sec-WebSocket-Extensions` of the response, if any.
    pub extensions: Option<String>,
}

/// Why a client handshake failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientHandshakeError {
    /// The response is not valid HTTP/1.1.
    MalformedResponse,
    /// The server answered with another status than 101; holds it. The
    /// body is not read.
    Status(u16),
    /// No `Upgrade: websocket` header (§4.1, client requirement 2).
    MissingUpgrade,
    /// No `Connection: Upgrade` header (§4.1, client requirement 3).
    MissingConnection,
    /// `Sec-WebSocket-Accept` is missing, repeated, or not [`accept_key`] of
    /// our key (§4.1, client requirement 4).
    BadAccept,
    /// The server chose a protocol we did not offer, or several (§4.1,
    /// client requirement 6); holds what it sent.
    UnofferedProtocol(String),
    /// The server answered with an extension we did not offer or with
    /// parameters outside our offer (§4.1, client requirement 5; RFC 7692
    /// §7.1); holds a description for people.
    BadExtension(String),
}

impl ClientHandshakeError {
    /// A stable `snake_case` name for this kind of failure (the variant,
    /// without its data), for metric labels and structured logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientHandshakeError::MalformedResponse => "malformed_response",
            ClientHandshakeError::Status(_) => "status",
            ClientHandshakeError::MissingUpgrade => "missing_upgrade",
            ClientHandshakeError::MissingConnection => "missing_connection",
            ClientHandshakeError::BadAccept => "bad_accept",
            ClientHandshakeError::UnofferedProtocol(_) => "unoffered_protocol",
            ClientHandshakeError::BadExtension(_) => "bad_extension",
        }
    }
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientHandshakeError::MalformedResponse => f.write_str("malformed HTTP response"),
            ClientHandshakeError::Status(code) => {
                write!(f, "server answered {code} instead of 101")
            }
            ClientHandshakeError::MissingUpgrade => {
                f.write_str("response lacks Upgrade: websocket")
            }
            ClientHandshakeError::MissingConnection => {
                f.write_str("response lacks Connection: Upgrade")
            }
            ClientHandshakeError::BadAccept => f.write_str("Sec-WebSocket-Accept missing or wrong"),
            ClientHandshakeError::UnofferedProtocol(p) => {
                write!(f, "server chose unoffered subprotocol {p:?}")
            }
            ClientHandshakeError::BadExtension(e) => {
                write!(f, "unacceptable Sec-WebSocket-Extensions: {e}")
            }
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

impl ClientHandshake {
    /// Start a handshake with the 16 random bytes of `key` (§4.1: "a nonce
    /// consisting of a randomly selected 16-byte value"). Returns the
    /// handshake state and the request to send.
    pub fn new(request: &ClientRequest, key: [u8; 16]) -> (Self, Vec<u8>) {
        let key = BASE64.encode(key);
        let mut out = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            request.target, request.host
        );
        if !request.protocols.is_empty() {
            let _ = write!(
                out,
                "Sec-WebSocket-Protocol: {}\r\n",
                request.protocols.join(", ")
            );
        }
        if let Some(deflate) = &request.deflate {
            let _ = write!(
                out,
                "Sec-WebSocket-Extensions: {}\r\n",
                deflate.client_offer()
            );
        }
        for (name, value) in &request.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.push_str("\r\n");
        let state = ClientHandshake {
            expected_accept: accept_key(key.as_bytes()),
            protocols: request.protocols.clone(),
            deflate: request.deflate.clone(),
        };
        (state, out.into_bytes())
    }

    /// Check the server's response (§4.1, client requirements 1–6).
    ///
    /// `Ok(None)`: incomplete, read more (the caller bounds how much).
    /// `Ok(Some((negotiated, len)))`: the upgrade succeeded; bytes after
    /// `len` are WebSocket frames. `Err`: §4.1, "the client MUST _Fail the
    /// WebSocket Connection_" — close the transport without a close frame.
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<(Negotiated, usize)>, ClientHandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Partial) => return Ok(None),
            Ok(httparse::Status::Complete(len)) => len,
            Err(_) => return Err(ClientHandshakeError::MalformedResponse),
        };
        let code = resp.code.unwrap_or_default();
        if code != 101 {
            return Err(ClientHandshakeError::Status(code));
        }
        let values = |name: &'static str| {
            resp.headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .filter_map(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        if !values("upgrade").any(|v| has_token(v, "websocket")) {
            return Err(ClientHandshakeError::MissingUpgrade);
        }
        if !values("connection").any(|v| has_token(v, "upgrade")) {
            return Err(ClientHandshakeError::MissingConnection);
        }
        let accepts: Vec<&str> = values("sec-websocket-accept").collect();
        if accepts != [self.expected_accept.as_str()] {
            return Err(ClientHandshakeError::BadAccept);
        }
        let protocol = match values("sec-websocket-protocol")
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => None,
            [p] if self.protocols.iter().any(|o| o == p) => Some((*p).to_owned()),
            other => return Err(ClientHandshakeError::UnofferedProtocol(other.join(", "))),
        };
        let extension_values: Vec<&str> = values("sec-websocket-extensions").collect();
        let mut deflate = None;
        for element in parse_extensions(extension_values.iter().copied()) {
            let (name, params) = element.map_err(|e| ClientHandshakeError::BadExtension(e.0))?;
            let config = match (&self.deflate, name.as_str()) {
                (Some(config), EXTENSION_NAME) if deflate.is_none() => config,
                _ => {
                    return Err(ClientHandshakeError::BadExtension(format!(
                        "{name} was not offered"
                    )));
                }
            };
            deflate = Some(
                config
                    .accept_response(&params)
                    .map_err(|e| ClientHandshakeError::BadExtension(e.0))?,
            );
        }
        let extensions = (!extension_values.is_empty()).then(|| extension_values.join(", "));
        Ok(Some((
            Negotiated {
                protocol,
                deflate,
                extensions,
            },
            len,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn validate(raw: &str) -> Result<UpgradeRequest, Rejection> {
        let (head, len) = parse_request(raw.as_bytes())?.expect("complete");
        assert_eq!(len, raw.len());
        UpgradeRequest::from_head(&head)
    }

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(RFC_KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_valid_request_and_writes_101() {
        let req = validate(&request(
            "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol: x\r\n",
        ))
        .unwrap();
        assert_eq!(req.protocols, ["chat", "superchat", "x"]);
        assert_eq!(req.origin.as_deref(), Some("http://example.com"));
        assert_eq!(req.select_protocol(&["superchat", "chat"]), Some("chat"));
        let response = String::from_utf8(req.response(Some("chat"), None)).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(!response.to_ascii_lowercase().contains("access-control"));
    }

    #[test]
    fn header_tokens_are_lists_in_any_case() {
        let raw = request("")
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        validate(&raw).unwrap();
    }

    #[test]
    fn malformed_requests_get_400_naming_the_header() {
        let cases = [
            (request("").replace("GET", "POST"), "GET"),
            (request("").replace("HTTP/1.1", "HTTP/1.0"), "HTTP/1.1"),
            (
                request("").replace("Host: server.example.com\r\n", ""),
                "Host",
            ),
            (
                request("").replace("Upgrade: websocket", "Upgrade: h2c"),
                "Upgrade",
            ),
            (
                request("").replace("Connection: Upgrade", "Connection: close"),
                "Connection",
            ),
            (
                request("").replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), ""),
                "Sec-WebSocket-Key",
            ),
            (
                request("").replace(RFC_KEY, "dGhlIHNhbXBsZQ=="),
                "Sec-WebSocket-Key",
            ),
            (
                request("").replace(RFC_KEY, "not base64!"),
                "Sec-WebSocket-Key",
            ),
            (
                request("").replace("Sec-WebSocket-Version: 13\r\n", ""),
                "Sec-WebSocket-Version",
            ),
            (
                request(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n")),
                "Sec-WebSocket-Key",
            ),
        ];
        for (raw, header) in cases {
            let err = validate(&raw).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{raw}");
            assert!(
                err.reason.contains(header),
                "{:?} should name {header}",
                err.reason
            );
            let response = String::from_utf8(err.to_response()).unwrap();
            assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"));
            assert!(response.ends_with(&format!("{}\n", err.reason)));
        }
    }

    #[test]
    fn wrong_version_gets_426_with_version_header() {
        let err = validate(&request("").replace("Version: 13", "Version: 8")).unwrap_err();
        assert_eq!(err.status, StatusCode::UPGRADE_REQUIRED);
        let response = String::from_utf8(err.to_response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn each_refusal_has_a_kind_that_decides_its_status() {
        let cases = [
            (
                request("").replace("GET", "POST"),
                RejectionKind::MethodNotGet,
            ),
            (
                request("").replace("HTTP/1.1", "HTTP/1.0"),
                RejectionKind::UnsupportedHttpVersion,
            ),
            (
                request("").replace("Upgrade: websocket", "Upgrade: h2c"),
                RejectionKind::MissingUpgradeHeader,
            ),
            (
                request("").replace("Connection: Upgrade", "Connection: close"),
                RejectionKind::MissingConnectionHeader,
            ),
            (
                request("Host: other.example.com\r\n"),
                RejectionKind::DuplicateHeader,
            ),
            (
                request("").replace("Host: server.example.com\r\n", ""),
                RejectionKind::MissingHostHeader,
            ),
            (
                request("").replace("Sec-WebSocket-Version: 13\r\n", ""),
                RejectionKind::MissingVersionHeader,
            ),
            (
                request("").replace("Version: 13", "Version: 8"),
                RejectionKind::UnsupportedVersion,
            ),
            (
                request("").replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), ""),
                RejectionKind::MissingKeyHeader,
            ),
            (
                request("").replace(RFC_KEY, "dGhlIHNhbXBsZQ=="),
                RejectionKind::InvalidKey,
            ),
        ];
        for (raw, kind) in cases {
            let err = validate(&raw).unwrap_err();
            assert_eq!(err.kind, kind, "{raw}");
            assert_eq!(err.status, kind.status(), "{raw}");
        }
        let not_utf8 = validate_upgrade(
            "GET",
            1,
            [("Host", b"h".as_slice()), ("X-Name", b"\xff".as_slice())],
        )
        .unwrap_err();
        assert_eq!(not_utf8.kind, RejectionKind::HeaderNotUtf8);
        let malformed = parse_request(b"GET / HTTP/1.1\r\nbad header\r\n\r\n").unwrap_err();
        assert_eq!(malformed.kind, RejectionKind::MalformedRequest);
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    }

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

    #[test]
    fn too_many_headers_get_431() {
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let err = parse_request(request(&many).as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(err.kind, RejectionKind::HeadersTooLarge);
    }

    #[test]
    fn partial_requests_need_more() {
        let raw = request("");
        for cut in 0..raw.len() {
            assert_eq!(parse_request(&raw.as_bytes()[..cut]).unwrap(), None);
        }
    }

    fn server_response(req: &[u8], protocol: Option<&str>, deflate: &DeflateConfig) -> Vec<u8> {
        let (head, _) = parse_request(req).unwrap().unwrap();
        let upgrade = UpgradeRequest::from_head(&head).unwrap();
        let params = upgrade.negotiate_deflate(deflate);
        upgrade.response(protocol, params.as_ref())
    }

    #[test]
    fn client_and_server_agree() {
        let request = ClientRequest {
            host: "localhost:9001".into(),
            target: "/x?y=1".into(),
            protocols: vec!["a".into(), "b".into()],
            deflate: Some(DeflateConfig::default()),
            headers: vec![("Origin".into(), "http://localhost:9001".into())],
        };
        let (client, bytes) = ClientHandshake::new(&request, [7; 16]);
        let mut response = server_response(&bytes, Some("b"), &DeflateConfig::default());
        response.extend_from_slice(b"\x81\x00");
        let (negotiated, len) = client.parse_response(&response).unwrap().unwrap();
        assert_eq!(len, response.len() - 2);
        assert_eq!(negotiated.protocol.as_deref(), Some("b"));
        assert_eq!(negotiated.deflate, Some(DeflateParams::default()));
    }

    #[test]
    fn client_rejects_bad_responses() {
        let request = ClientRequest {
            host: "h".into(),
            target: "/".into(),
            ..ClientRequest::default()
        };
        let (client, bytes) = ClientHandshake::new(&request, [1; 16]);
        let good =
            String::from_utf8(server_response(&bytes, None, &DeflateConfig::default())).unwrap();
        let check = |resp: String| {
            client
                .parse_response(resp.as_bytes())
                .map(|r| r.map(|(n, _)| n))
        };
        assert!(check(good.clone()).unwrap().is_some());
        assert_eq!(
            check(good.replace("101 Switching Protocols", "403 Forbidden")),
            Err(ClientHandshakeError::Status(403))
        );
        assert_eq!(
            check(good.replace("Upgrade: websocket\r\n", "")),
            Err(ClientHandshakeError::MissingUpgrade)
        );
        let accept = accept_key(b"AQEBAQEBAQEBAQEBAQEBAQ==");
        assert_eq!(
            check(good.replace(&accept, "x")),
            Err(ClientHandshakeError::BadAccept)
        );
        assert!(matches!(
            check(good.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat\r\n\r\n")),
            Err(ClientHandshakeError::UnofferedProtocol(_))
        ));
        assert!(matches!(
            check(good.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            )),
            Err(ClientHandshakeError::BadExtension(_))
        ));
    }
}
