//! The client side of the opening handshake (RFC 6455 §4.1): writing the
//! request and checking the server's answer.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{MAX_HEADERS, accept_key, has_token};
use crate::deflate::{DeflateConfig, DeflateParams, EXTENSION_NAME, parse_extensions};

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
    use crate::handshake::{UpgradeRequest, parse_request};

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
        // Both ends' defaults: no context takeover either way (RFC 7692
        // §7.1.1.1, §7.1.1.2).
        assert_eq!(
            negotiated.deflate,
            Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..DeflateParams::default()
            })
        );
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
