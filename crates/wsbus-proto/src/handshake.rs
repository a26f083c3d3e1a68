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

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

mod client;
mod rejection;
mod server;

pub use client::{ClientHandshake, ClientHandshakeError, ClientRequest, Negotiated};
pub use rejection::{Rejection, RejectionKind};
pub use server::{RequestHead, UpgradeRequest, parse_request, validate_upgrade};

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

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
