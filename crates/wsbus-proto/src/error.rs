//! Errors. Faults of the peer ([`ProtocolError`]) are kept apart from misuse
//! of this API ([`ApiError`]): the first fail the connection with a close code,
//! the second are returned to the caller and change nothing.
//!
//! Both have an `as_str` naming the variant in `snake_case`: a stable label
//! for metrics and logs, unlike their `Display` text, which is written for
//! people and may change.

use std::fmt;

use crate::close::CloseCode;

/// The peer broke RFC 6455 / RFC 7692 or one of our limits.
///
/// The connection fails (RFC 6455 §7.1.7, "_Fail the WebSocket Connection_"):
/// a close frame with [`ProtocolError::close_code`] and this error's
/// `Display` text as its reason (truncated to 123 bytes) is queued, nothing
/// more is read, and [`Connection::state`](crate::Connection::state) is
/// [`State::Closed`](crate::State::Closed). Section numbers below are RFC
/// 6455's unless RFC 7692 is named.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode reserved for future use, 0x3–0x7 or 0xB–0xF; holds it.
    /// §5.2: "If an unknown opcode is received, the receiving endpoint MUST
    /// _Fail the WebSocket Connection_."
    ReservedOpcode(u8),
    /// RSV2 or RSV3 set, or RSV1 without permessage-deflate negotiated. §5.2:
    /// "If a nonzero value is received and none of the negotiated extensions
    /// defines the meaning of such a nonzero value, the receiving endpoint
    /// MUST _Fail the WebSocket Connection_."
    ReservedBitsSet,
    /// RSV1 (permessage-deflate's "Per-Message Compressed" bit) on a
    /// continuation or control frame. RFC 7692 §6: "An endpoint MUST NOT set
    /// the "Per-Message Compressed" bit of control frames and non-first
    /// fragments of a data message. An endpoint receiving such a frame MUST
    /// _Fail the WebSocket Connection_."
    CompressedBitOnNonFirstFrame,
    /// A frame from the client without a mask. §5.1: "The server MUST close
    /// the connection upon receiving a frame that is not masked."
    UnmaskedClientFrame,
    /// A frame from the server with a mask. §5.1: "A client MUST close a
    /// connection if it detects a masked frame."
    MaskedServerFrame,
    /// The most significant bit of a 64-bit payload length was set (§5.2:
    /// "the most significant bit MUST be 0").
    PayloadLengthMsbSet,
    /// A control frame with more than 125 bytes of payload (§5.5: "All
    /// control frames MUST have a payload length of 125 bytes or less").
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5: control frames "MUST NOT be
    /// fragmented").
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message open (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open (§5.4).
    ExpectedContinuation,
    /// A close frame with a 1-byte payload: §5.5.1 requires a body to start
    /// with a 2-byte status code.
    CloseFrameTooShort,
    /// A close code that may not appear on the wire
    /// ([`CloseCode::is_valid_on_wire`], §7.4); holds the code.
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8 (§5.5.1: the body "MAY contain
    /// UTF-8-encoded data").
    InvalidCloseReason,
    /// A text message that is not UTF-8 (§8.1). Detected at the first byte
    /// that cannot begin valid UTF-8, before the message is complete.
    InvalidUtf8,
    /// A frame whose header announces a payload larger than
    /// [`Limits::max_frame_size`](crate::Limits::max_frame_size); detected
    /// from the header, before any of the payload is buffered.
    FrameTooLarge {
        /// The limit in force, in payload bytes.
        limit: u64,
    },
    /// A message whose frames' payloads, as received on the wire, add up to
    /// more than [`Limits::max_message_size`](crate::Limits::max_message_size);
    /// detected from the header of the frame that would cross it.
    MessageTooLarge {
        /// The limit in force, in wire payload bytes.
        limit: usize,
    },
    /// A compressed message that inflates past
    /// [`Limits::max_inflated_size`](crate::Limits::max_inflated_size);
    /// inflation stops one byte past the limit.
    InflatedTooLarge {
        /// The limit in force, in inflated bytes.
        limit: usize,
    },
    /// A compressed message that is not valid DEFLATE data (RFC 7692
    /// §7.2.2). The decoder's own error is not kept: it names a byte position
    /// in the stream, which says nothing the close code does not.
    InvalidDeflateData,
    /// A frame arrived after the peer's close frame (§5.5.1). Not produced
    /// by [`Connection`](crate::Connection), which discards whatever follows
    /// the peer's close unread; kept so that a driver may report it.
    FrameAfterClose,
}

impl ProtocolError {
    /// A stable `snake_case` name for this kind of fault (the variant, without
    /// its data), for metric labels and structured logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProtocolError::ReservedOpcode(_) => "reserved_opcode",
            ProtocolError::ReservedBitsSet => "reserved_bits_set",
            ProtocolError::CompressedBitOnNonFirstFrame => "compressed_bit_on_non_first_frame",
            ProtocolError::UnmaskedClientFrame => "unmasked_client_frame",
            ProtocolError::MaskedServerFrame => "masked_server_frame",
            ProtocolError::PayloadLengthMsbSet => "payload_length_msb_set",
            ProtocolError::ControlFrameTooLong => "control_frame_too_long",
            ProtocolError::FragmentedControlFrame => "fragmented_control_frame",
            ProtocolError::UnexpectedContinuation => "unexpected_continuation",
            ProtocolError::ExpectedContinuation => "expected_continuation",
            ProtocolError::CloseFrameTooShort => "close_frame_too_short",
            ProtocolError::InvalidCloseCode(_) => "invalid_close_code",
            ProtocolError::InvalidCloseReason => "invalid_close_reason",
            ProtocolError::InvalidUtf8 => "invalid_utf8",
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::MessageTooLarge { .. } => "message_too_large",
            ProtocolError::InflatedTooLarge { .. } => "inflated_too_large",
            ProtocolError::InvalidDeflateData => "invalid_deflate_data",
            ProtocolError::FrameAfterClose => "frame_after_close",
        }
    }

    /// The close code sent to the peer for this fault: the one place where
    /// protocol faults map to close codes.
    ///
    /// 1007 ([`CloseCode::INVALID_PAYLOAD`]) for text or a close reason that
    /// is not UTF-8 (§8.1: "that endpoint MUST _Fail the
    /// WebSocket Connection_"), 1009 ([`CloseCode::MESSAGE_TOO_BIG`]) for a limit, and
    /// 1002 ([`CloseCode::PROTOCOL_ERROR`]) for everything else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::MessageTooLarge { .. }
            | ProtocolError::InflatedTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            // RFC 7692 §8: a failure to decompress fails the connection; 1007 would
            // claim the data was the wrong type, so the generic 1002 is used.
            ProtocolError::ReservedOpcode(_)
            | ProtocolError::ReservedBitsSet
            | ProtocolError::CompressedBitOnNonFirstFrame
            | ProtocolError::UnmaskedClientFrame
            | ProtocolError::MaskedServerFrame
            | ProtocolError::PayloadLengthMsbSet
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::CloseFrameTooShort
            | ProtocolError::InvalidCloseCode(_)
            | ProtocolError::InvalidDeflateData
            | ProtocolError::FrameAfterClose => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::ReservedBitsSet => f.write_str("reserved bits set without an extension"),
            ProtocolError::CompressedBitOnNonFirstFrame => {
                f.write_str("RSV1 set on a continuation or control frame")
            }
            ProtocolError::UnmaskedClientFrame => f.write_str("client frame not masked"),
            ProtocolError::MaskedServerFrame => f.write_str("server frame masked"),
            ProtocolError::PayloadLengthMsbSet => {
                f.write_str("64-bit payload length has its MSB set")
            }
            ProtocolError::ControlFrameTooLong => f.write_str("control frame over 125 bytes"),
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame with no message open")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message")
            }
            ProtocolError::CloseFrameTooShort => f.write_str("close frame with a 1-byte payload"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            ProtocolError::InvalidCloseReason => f.write_str("close reason is not UTF-8"),
            ProtocolError::InvalidUtf8 => f.write_str("text message is not UTF-8"),
            ProtocolError::FrameTooLarge { limit } => {
                write!(f, "frame over the {limit}-byte limit")
            }
            ProtocolError::MessageTooLarge { limit } => {
                write!(f, "message over the {limit}-byte limit")
            }
            ProtocolError::InflatedTooLarge { limit } => {
                write!(f, "message inflates past the {limit}-byte limit")
            }
            ProtocolError::InvalidDeflateData => f.write_str("invalid DEFLATE data"),
            ProtocolError::FrameAfterClose => f.write_str("frame after close"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The caller asked for something the protocol or the connection's state does
/// not allow. Nothing was queued and the connection's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// We already sent a close frame (the connection is closing or closed).
    /// §5.5.1: "The application MUST NOT send any more data frames after
    /// sending a Close frame."
    NotOpen,
    /// A close code this role may not send: a client may send only what the
    /// Web API's `close()` allows (1000 or 3000–4999), a server any code
    /// valid on the wire ([`CloseCode::is_valid_on_wire`]). Holds the code.
    InvalidCloseCode(u16),
    /// A close reason over [`MAX_CLOSE_REASON_LEN`](crate::close::MAX_CLOSE_REASON_LEN)
    /// (123) bytes of UTF-8. Holds its length in bytes.
    CloseReasonTooLong(usize),
    /// A ping or pong payload over
    /// [`MAX_CONTROL_PAYLOAD`](crate::frame::MAX_CONTROL_PAYLOAD) (125) bytes
    /// (§5.5: "All control frames MUST have a payload length of 125 bytes or
    /// less"). Holds its length in bytes.
    ControlPayloadTooLong(usize),
}

impl ApiError {
    /// A stable `snake_case` name for this kind of misuse (the variant,
    /// without its data), for metric labels and structured logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiError::NotOpen => "not_open",
            ApiError::InvalidCloseCode(_) => "invalid_close_code",
            ApiError::CloseReasonTooLong(_) => "close_reason_too_long",
            ApiError::ControlPayloadTooLong(_) => "control_payload_too_long",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotOpen => f.write_str("connection is not open"),
            ApiError::InvalidCloseCode(code) => {
                write!(f, "close code {code} is not 1000 or in 3000-4999")
            }
            ApiError::CloseReasonTooLong(len) => {
                write!(f, "close reason is {len} bytes, the limit is 123")
            }
            ApiError::ControlPayloadTooLong(len) => {
                write!(f, "control payload is {len} bytes, the limit is 125")
            }
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_distinct_snake_case(names: &[&str]) -> bool {
        let distinct: std::collections::HashSet<&&str> = names.iter().collect();
        distinct.len() == names.len()
            && names.iter().all(|n| {
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
    }

    #[test]
    fn names_are_distinct_snake_case() {
        let protocol = [
            ProtocolError::ReservedOpcode(3),
            ProtocolError::ReservedBitsSet,
            ProtocolError::CompressedBitOnNonFirstFrame,
            ProtocolError::UnmaskedClientFrame,
            ProtocolError::MaskedServerFrame,
            ProtocolError::PayloadLengthMsbSet,
            ProtocolError::ControlFrameTooLong,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::CloseFrameTooShort,
            ProtocolError::InvalidCloseCode(5),
            ProtocolError::InvalidCloseReason,
            ProtocolError::InvalidUtf8,
            ProtocolError::FrameTooLarge { limit: 1 },
            ProtocolError::MessageTooLarge { limit: 1 },
            ProtocolError::InflatedTooLarge { limit: 1 },
            ProtocolError::InvalidDeflateData,
            ProtocolError::FrameAfterClose,
        ];
        let names: Vec<&str> = protocol.iter().map(ProtocolError::as_str).collect();
        assert!(is_distinct_snake_case(&names), "{names:?}");
        assert_eq!(ProtocolError::InvalidUtf8.as_str(), "invalid_utf8");

        let api = [
            ApiError::NotOpen,
            ApiError::InvalidCloseCode(1),
            ApiError::CloseReasonTooLong(200),
            ApiError::ControlPayloadTooLong(200),
        ];
        let names: Vec<&str> = api.iter().map(ApiError::as_str).collect();
        assert!(is_distinct_snake_case(&names), "{names:?}");
    }
}
