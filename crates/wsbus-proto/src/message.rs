//! Application messages and messages prepared once for many connections.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameHeader, OpCode};

/// Text known to be valid UTF-8, held as shared bytes so that receiving and
/// forwarding a text message never copies it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Check that `bytes` are UTF-8 and wrap them, without copying.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, crate::utf8::InvalidUtf8> {
        simdutf8::basic::from_utf8(&bytes).map_err(|_| crate::utf8::InvalidUtf8)?;
        Ok(Utf8Bytes(bytes))
    }

    /// Wrap bytes already validated by the caller in this crate.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Utf8Bytes(bytes)
    }

    /// The text. The bytes are validated again here (SIMD, several GB/s)
    /// because this crate forbids `unsafe`; keep the `&str` rather than calling
    /// this repeatedly on large messages.
    pub fn as_str(&self) -> &str {
        simdutf8::basic::from_utf8(&self.0).expect("Utf8Bytes holds valid UTF-8")
    }

    /// The UTF-8 bytes, shared.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The UTF-8 bytes, without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The length in bytes (not characters).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A complete data message (RFC 6455 §5.6): the payloads of all its frames,
/// decompressed if it was compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (opcode 0x1): UTF-8, validated on receipt (§8.1).
    Text(Utf8Bytes),
    /// A binary message (opcode 0x2): bytes the protocol does not interpret.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }

    /// The opcode of the message's first frame: [`OpCode::TEXT`] or
    /// [`OpCode::BINARY`].
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::TEXT,
            Message::Binary(_) => OpCode::BINARY,
        }
    }

    /// The payload bytes (shared, not copied).
    pub fn payload(&self) -> &Bytes {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes, uncompressed.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload().is_empty()
    }
}

/// A message encoded once as a server frame, to be sent to many connections.
///
/// Each connection that did not negotiate compression queues the same
/// [`Bytes`] (a reference count, not a copy). Connections that compress
/// encode their own frame from [`PreparedMessage::message`], because their
/// compressor's context is theirs.
#[derive(Clone, Debug)]
pub struct PreparedMessage {
    message: Message,
    frame: Bytes,
}

impl PreparedMessage {
    /// Encode `message` as one unmasked, uncompressed frame with FIN set.
    pub fn new(message: Message) -> Self {
        let payload = message.payload();
        let header = FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: message.opcode(),
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut frame = BytesMut::with_capacity(header.encoded_len() + payload.len());
        header.encode(&mut frame);
        frame.extend_from_slice(payload);
        PreparedMessage {
            message,
            frame: frame.freeze(),
        }
    }

    /// The message, for connections that must encode their own frame.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The encoded, unmasked, uncompressed frame.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}
