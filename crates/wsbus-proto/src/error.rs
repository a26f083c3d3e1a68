//! Errors. Faults of the peer ([`ProtocolError`]) are kept apart from misuse
//! of this API ([`ApiError`]): the first fail the connection with a close code,
//! the second are returned to the caller and change nothing.

use std::fmt;

use crate::close::CloseCode;

/// The peer broke RFC 6455 / RFC 7692 or one of our limits. The connection
/// fails: a close frame with [`ProtocolError::close_code`] is queued and the
/// connection waits for the peer's close before the transport is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode reserved for future use (§5.2).
    ReservedOpcode(u8),
    /// RSV1–3 set without a negotiated extension that defines it (§5.2).
    ReservedBitsSet,
    /// RSV1 on a continuation or control frame (RFC 7692 §6.1).
    CompressedBitOnNonFirstFrame,
    /// A client frame without a mask (§5.1).
    UnmaskedClientFrame,
    /// A server frame with a mask (§5.1).
    MaskedServerFrame,
    /// The most significant bit of a 64-bit payload length was set (§5.2).
    PayloadLengthMsbSet,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5).
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message open (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open (§5.4).
    ExpectedContinuation,
    /// A close frame with a 1-byte payload (§5.5.1).
    CloseFrameTooShort,
    /// A close code that may not appear on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A text message that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A frame larger than [`crate::Limits::max_frame_size`].
    FrameTooLarge { limit: u64 },
    /// A message larger than [`crate::Limits::max_message_size`].
    MessageTooLarge { limit: usize },
    /// A compressed message that inflates past [`crate::Limits::max_inflated_size`].
    InflatedTooLarge { limit: usize },
    /// The compressed data is not valid DEFLATE (RFC 7692 §7.2.2).
    InvalidDeflateData,
    /// A frame arrived after the peer's close frame (§5.5.1).
    FrameAfterClose,
}

impl ProtocolError {
    /// The close code sent to the peer for this fault: the one place where
    /// protocol faults map to close codes.
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
/// not allow. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// The connection is closing or closed: nothing more may be sent (§5.5.1).
    NotOpen,
    /// A close code the application may not send (Web API: 1000 or 3000–4999).
    InvalidCloseCode(u16),
    /// A close reason over 123 bytes.
    CloseReasonTooLong(usize),
    /// A ping or pong payload over 125 bytes.
    ControlPayloadTooLong(usize),
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
