//! The opening handshake (RFC 6455 §4), both roles, without I/O.
//!
//! Server: [`parse_request`] reads an HTTP/1.1 request head from bytes (or a
//! runtime built on an HTTP library passes its parsed parts to
//! [`validate_upgrade`] directly); the resulting [`UpgradeRequest`] writes the
//! `101` response, and a [`Rejection`] writes the exact `400` / `426`.
//!
//! Client: [`ClientHandshake::new`] writes the request from a key the caller
//! supplies (16 random bytes: randomness is passed in), and
//! [`ClientHandshake::parse_response`] checks the server's answer.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use crate::deflate::{DeflateConfig, DeflateParams, EXTENSION_NAME, parse_extensions};

/// The GUID of RFC 6455 §1.3 that the accept key hashes in.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Most request headers accepted in one handshake. Browsers send about 15;
/// 64 leaves room for proxies and cookies while bounding parse work. More
/// gets `431`.
pub const MAX_HEADERS: usize = 64;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (§4.2.2 step 5.4):
/// base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// An HTTP status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCode(pub u16);

impl StatusCode {
    pub const SWITCHING_PROTOCOLS: StatusCode = StatusCode(101);
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    pub const UPGRADE_REQUIRED: StatusCode = StatusCode(426);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: StatusCode = StatusCode(431);
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);

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

/// A refused upgrade: the status and a short plain-text reason that names the
/// offending header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: Cow<'static, str>,
}

impl Rejection {
    fn bad_request(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason: Cow::Borrowed(reason),
        }
    }

    /// The extra headers this rejection must carry: §4.4 requires a `426` to
    /// name the versions the server speaks.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        if self.status == StatusCode::UPGRADE_REQUIRED {
            &[("Sec-WebSocket-Version", "13")]
        } else {
            &[]
        }
    }

    /// The complete HTTP/1.1 response, closing the connection.
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
    pub method: String,
    pub target: String,
    /// The minor version of HTTP/1.x.
    pub version_minor: u8,
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
/// `431` past its header size limit). `Ok(Some((head, len)))`: the head and its
/// length in bytes; anything after it is already WebSocket data.
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
        Err(httparse::Error::TooManyHeaders) => Err(Rejection {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: Cow::Borrowed("too many request headers"),
        }),
        Err(httparse::Error::Version) => Err(Rejection::bad_request("HTTP/1.1 is required")),
        Err(_) => Err(Rejection::bad_request("malformed HTTP request")),
    }
}

/// A valid upgrade request (§4.2.1), ready to be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The `Sec-WebSocket-Key` as sent.
    pub key: String,
    /// The `Host` header.
    pub host: String,
    /// The `Origin` header, if any, as sent.
    pub origin: Option<String>,
    /// Subprotocols offered, in the client's order of preference.
    pub protocols: Vec<String>,
    /// Every `Sec-WebSocket-Extensions` value, for negotiation.
    pub extensions: Vec<String>,
}

/// Check an upgrade request (RFC 6455 §4.2.1) from its parts. `headers` may
/// repeat names; comma lists are split.
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
        let value = std::str::from_utf8(value)
            .map_err(|_| Rejection::bad_request("a header value is not UTF-8"))?;
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
        return Err(Rejection::bad_request("a WebSocket upgrade must use GET"));
    }
    if version_minor < 1 {
        return Err(Rejection::bad_request(
            "a WebSocket upgrade needs HTTP/1.1 or later",
        ));
    }
    if !upgrade_ok {
        return Err(Rejection::bad_request(
            "missing or invalid Upgrade header (expected \"websocket\")",
        ));
    }
    if !connection_ok {
        return Err(Rejection::bad_request(
            "missing or invalid Connection header (expected \"Upgrade\")",
        ));
    }
    if let Some(dup) = duplicate {
        return Err(Rejection::bad_request(dup));
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err(Rejection::bad_request("missing Host header"));
    };
    match version.as_deref() {
        Some("13") => {}
        None => {
            return Err(Rejection::bad_request(
                "missing Sec-WebSocket-Version header",
            ));
        }
        Some(_) => {
            return Err(Rejection {
                status: StatusCode::UPGRADE_REQUIRED,
                reason: Cow::Borrowed("unsupported Sec-WebSocket-Version (this server speaks 13)"),
            });
        }
    }
    let Some(key) = key else {
        return Err(Rejection::bad_request("missing Sec-WebSocket-Key header"));
    };
    if !matches!(BASE64.decode(&key), Ok(raw) if raw.len() == 16) {
        return Err(Rejection::bad_request(
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
    /// Parse and check a complete request head.
    pub fn from_head(head: &RequestHead) -> Result<Self, Rejection> {
        validate_upgrade(
            &head.method,
            head.version_minor,
            head.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )
    }

    /// The first protocol in the client's list that `supported` contains (the
    /// client lists in order of preference, §4.1).
    pub fn select_protocol<'a>(&'a self, supported: &[impl AsRef<str>]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(String::as_str)
            .find(|offered| supported.iter().any(|s| s.as_ref() == *offered))
    }

    /// Negotiate permessage-deflate against the client's offers.
    pub fn negotiate_deflate(&self, config: &DeflateConfig) -> Option<DeflateParams> {
        config.negotiate_server(self.extensions.iter().map(String::as_str))
    }

    /// The headers of the `101` response (without the status line), for
    /// runtimes that write responses through an HTTP library.
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

    /// The complete `101 Switching Protocols` response.
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

/// What a client asks for.
#[derive(Clone, Debug, Default)]
pub struct ClientRequest {
    /// The `Host` header value (host, and port when not the default).
    pub host: String,
    /// The request target: path and query.
    pub target: String,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Offer permessage-deflate with these settings.
    pub deflate: Option<DeflateConfig>,
    /// Extra headers (`Origin`, `Authorization`, `Cookie`, …).
    pub headers: Vec<(String, String)>,
}

/// A client handshake in flight.
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    expected_accept: String,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// What the server agreed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub protocol: Option<String>,
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
    /// The server answered with another status than 101; the body is not read.
    Status(u16),
    MissingUpgrade,
    MissingConnection,
    /// `Sec-WebSocket-Accept` is missing or does not match our key.
    BadAccept,
    /// The server chose a protocol we did not offer.
    UnofferedProtocol(String),
    /// The server answered with an extension we did not offer or with bad parameters.
    BadExtension(String),
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
    /// Start a handshake with the 16 random bytes of `key` (§4.1: "randomly
    /// selected"). Returns the handshake state and the request to send.
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
    /// `Ok(None)`: incomplete. `Ok(Some((negotiated, len)))`: the upgrade
    /// succeeded; bytes after `len` are WebSocket frames.
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
    fn too_many_headers_get_431() {
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let err = parse_request(request(&many).as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
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
