//! Close codes and close frames (RFC 6455 §5.5.1, §7.4). Section numbers in
//! this module are RFC 6455's.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// The largest close reason that fits a control frame: 125 bytes of payload
/// minus the 2-byte status code (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// A WebSocket close status code (RFC 6455 §7.4): an unsigned 16-bit
/// integer, sent in network byte order as the first two bytes of a close
/// frame's payload.
///
/// A newtype rather than an enum: applications and peers use the private
/// ranges 3000–4999 freely, and an unknown code must be representable to be
/// rejected precisely.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose for which the connection was established is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: an endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer violated the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept (e.g. binary on a text-only app).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reserved; reported locally when a close frame carried no code. Never sent.
    pub const NO_STATUS_RECEIVED: CloseCode = CloseCode(1005);
    /// 1006: reserved; reported locally when the TCP connection ended without a
    /// closing handshake. Never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data was inconsistent with its type (invalid UTF-8 text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1015: reserved; reported locally when the TLS handshake failed. Never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a close frame on the wire
    /// (RFC 6455 §7.4.1 and the IANA registry): 1000–1003, 1007–1011 and the
    /// registered/private ranges 3000–4999. Everything else received is a
    /// protocol error.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }

    /// Whether an application may start a close with this code through the
    /// Web API (`WebSocket.close()`): only 1000 and 3000–4999.
    pub fn is_allowed_for_application(self) -> bool {
        matches!(self.0, 1000 | 3000..=4999)
    }

    /// The registered name of the code, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1005 => "no status received",
            1006 => "abnormal closure",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension",
            1011 => "internal error",
            1015 => "TLS handshake failure",
            _ => return None,
        })
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "CloseCode({} {name})", self.0),
            None => write!(f, "CloseCode({})", self.0),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The body of a close frame (§5.5.1): a status code and a UTF-8 reason of at
/// most [`MAX_CLOSE_REASON_LEN`] bytes.
///
/// On the wire the code is the first two bytes of the payload in network byte
/// order and the reason the rest. A close frame with an empty payload has no
/// `CloseFrame` at all: [`Event::Close(None)`](crate::Event::Close), reported
/// as [`CloseCode::NO_STATUS_RECEIVED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code (§7.4).
    pub code: CloseCode,
    /// Why the connection is closing, for debugging: §5.5.1, "This data is
    /// not necessarily human readable", so "clients MUST NOT show it to end
    /// users". May be empty.
    pub reason: String,
}

impl CloseFrame {
    /// A close frame body. The reason's length is not checked here; the
    /// sending methods ([`Connection::close`](crate::Connection::close))
    /// refuse one over [`MAX_CLOSE_REASON_LEN`] bytes.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Encode as a close frame payload: the code in network byte order, then the reason.
    pub(crate) fn encode_payload(&self) -> Bytes {
        let mut payload = BytesMut::with_capacity(2 + self.reason.len());
        payload.put_u16(self.code.0);
        payload.put_slice(self.reason.as_bytes());
        payload.freeze()
    }
}

/// Truncate `reason` to at most [`MAX_CLOSE_REASON_LEN`] bytes on a character
/// boundary, for reasons the endpoint composes itself (error descriptions).
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_LEN {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_rfc_ranges() {
        let valid = |c: u16| CloseCode(c).is_valid_on_wire();
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(valid(c), "{c} must be valid");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!valid(c), "{c} must be invalid");
        }
    }

    #[test]
    fn application_codes() {
        assert!(CloseCode::NORMAL.is_allowed_for_application());
        assert!(CloseCode(3000).is_allowed_for_application());
        assert!(!CloseCode::GOING_AWAY.is_allowed_for_application());
        assert!(!CloseCode(5000).is_allowed_for_application());
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON_LEN);
        assert_eq!(cut.len(), 122);
    }
}
