//! The server side of the opening handshake (RFC 6455 §4.2): reading the
//! client's request and writing the `101`.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{MAX_HEADERS, Rejection, RejectionKind, accept_key, has_token};
use crate::deflate::{DeflateConfig, DeflateParams};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::StatusCode;

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
            (
                request("").replace("GET", "POST"),
                "GET",
                RejectionKind::MethodNotGet,
            ),
            (
                request("").replace("HTTP/1.1", "HTTP/1.0"),
                "HTTP/1.1",
                RejectionKind::UnsupportedHttpVersion,
            ),
            (
                request("").replace("Host: server.example.com\r\n", ""),
                "Host",
                RejectionKind::MissingHostHeader,
            ),
            (
                request("").replace("Upgrade: websocket", "Upgrade: h2c"),
                "Upgrade",
                RejectionKind::MissingUpgradeHeader,
            ),
            (
                request("").replace("Connection: Upgrade", "Connection: close"),
                "Connection",
                RejectionKind::MissingConnectionHeader,
            ),
            (
                request("").replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), ""),
                "Sec-WebSocket-Key",
                RejectionKind::MissingKeyHeader,
            ),
            (
                request("").replace(RFC_KEY, "dGhlIHNhbXBsZQ=="),
                "Sec-WebSocket-Key",
                RejectionKind::InvalidKey,
            ),
            (
                request("").replace(RFC_KEY, "not base64!"),
                "Sec-WebSocket-Key",
                RejectionKind::InvalidKey,
            ),
            (
                request("").replace("Sec-WebSocket-Version: 13\r\n", ""),
                "Sec-WebSocket-Version",
                RejectionKind::MissingVersionHeader,
            ),
            (
                request(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n")),
                "Sec-WebSocket-Key",
                RejectionKind::DuplicateHeader,
            ),
        ];
        for (raw, header, kind) in cases {
            let err = validate(&raw).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{raw}");
            assert_eq!(err.kind, kind, "{raw}");
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
        assert_eq!(err.kind, RejectionKind::UnsupportedVersion);
        let response = String::from_utf8(err.to_response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn undecodable_requests_have_their_own_kinds() {
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
}
