//! Frame headers (RFC 6455 §5.2): parsing and encoding. Section numbers in
//! this module are RFC 6455's.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! ```

use std::fmt;

use bytes::BufMut;

use crate::error::ProtocolError;

/// The largest frame header, in bytes: 2 fixed bytes, 8 bytes of extended
/// payload length and 4 of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame, in bytes. §5.5: "All control
/// frames MUST have a payload length of 125 bytes or less and MUST NOT be
/// fragmented."
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (§5.2, §11.8): the low 4 bits of a frame's first byte.
///
/// A newtype rather than an enum so that a reserved opcode read from the wire
/// can be represented, and refused with its value
/// ([`ProtocolError::ReservedOpcode`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpCode(pub u8);

impl OpCode {
    /// 0x0: a continuation of the fragmented message in progress (§5.4).
    pub const CONTINUATION: OpCode = OpCode(0x0);
    /// 0x1: the first frame of a text message; its payload is UTF-8 (§5.6).
    pub const TEXT: OpCode = OpCode(0x1);
    /// 0x2: the first frame of a binary message (§5.6).
    pub const BINARY: OpCode = OpCode(0x2);
    /// 0x8: a close frame, starting or answering the closing handshake (§5.5.1).
    pub const CLOSE: OpCode = OpCode(0x8);
    /// 0x9: a ping, to be answered with a pong carrying the same payload (§5.5.2).
    pub const PING: OpCode = OpCode(0x9);
    /// 0xA: a pong, in answer to a ping or unsolicited as a heartbeat (§5.5.3).
    pub const PONG: OpCode = OpCode(0xA);

    /// Whether this is a control opcode (0x8–0xF: the high bit set, §5.5).
    pub fn is_control(self) -> bool {
        self.0 & 0x8 != 0
    }

    /// Whether this opcode is reserved for future use (0x3–0x7 for data
    /// frames, 0xB–0xF for control frames, §5.2); receiving one fails the
    /// connection.
    pub fn is_reserved(self) -> bool {
        !matches!(self.0, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xA)
    }
}

impl fmt::Debug for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0x0 => "Continuation",
            0x1 => "Text",
            0x2 => "Binary",
            0x8 => "Close",
            0x9 => "Ping",
            0xA => "Pong",
            _ => return write!(f, "OpCode(reserved {:#x})", self.0),
        };
        f.write_str(name)
    }
}

/// A frame header (§5.2), decoded or to be encoded.
///
/// Only the encoding is represented here; which combinations are allowed
/// (a mask from a client only, RSV bits only with an extension, FIN on every
/// control frame) is checked by [`Connection`](crate::Connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of its message (always set on
    /// control frames and on unfragmented messages).
    pub fin: bool,
    /// RSV1: permessage-deflate's "Per-Message Compressed" bit (RFC 7692 §6),
    /// set on the first frame of a compressed message. Must be clear unless
    /// that extension was negotiated.
    pub rsv1: bool,
    /// RSV2: no extension here defines it; must be clear.
    pub rsv2: bool,
    /// RSV3: no extension here defines it; must be clear.
    pub rsv3: bool,
    /// The opcode (only its low 4 bits are encoded).
    pub opcode: OpCode,
    /// The 4-byte masking key (§5.3), present exactly on frames sent by a
    /// client. The payload it applies to is masked separately
    /// ([`apply_mask`](crate::mask::apply_mask)).
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes, at most 2^63 − 1 (§5.2). Extensions
    /// count in it: for a compressed frame it is the compressed length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decode a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed, otherwise the header and
    /// its encoded length in bytes (the payload starts there). Only the
    /// encoding is checked here (the 64-bit length's most significant bit,
    /// §5.2); role and state rules belong to the connection. A length that
    /// could have been encoded shorter is accepted: §5.2 asks senders, not
    /// receivers, for the minimal encoding.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7F {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(ext.try_into().expect("8 bytes"));
                // §5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::PayloadLengthMsbSet);
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some(key.try_into().expect("4 bytes"))
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode: OpCode(b0 & 0x0F),
            mask,
            payload_len,
        };
        Ok(Some((header, pos)))
    }

    /// The encoded length of this header in bytes, 2 to [`MAX_HEADER_LEN`].
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Append the encoded header to `dst`, with the minimal length encoding
    /// that §5.2 requires ("the minimal number of bytes MUST be used to
    /// encode the length"). Writes exactly [`encoded_len`](Self::encoded_len)
    /// bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        let b0 = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | (self.opcode.0 & 0x0F);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        dst.put_u8(b0);
        match self.payload_len {
            len @ 0..=125 => dst.put_u8(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                dst.put_u8(mask_bit | 126);
                dst.put_u16(len as u16);
            }
            len => {
                dst.put_u8(mask_bit | 127);
                dst.put_u64(len);
            }
        }
        if let Some(key) = self.mask {
            dst.put_slice(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: u64, mask: Option<[u8; 4]>) {
        let header = FrameHeader {
            fin: true,
            rsv1: true,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::BINARY,
            mask,
            payload_len: len,
        };
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf.len(), header.encoded_len());
        for cut in 0..buf.len() {
            assert_eq!(
                FrameHeader::decode(&buf[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(
            FrameHeader::decode(&buf).unwrap(),
            Some((header, buf.len()))
        );
    }

    #[test]
    fn lengths_at_every_boundary() {
        for len in [
            0,
            1,
            125,
            126,
            127,
            0xFFFF,
            0x1_0000,
            u64::from(u32::MAX) + 1,
            (1 << 63) - 1,
        ] {
            roundtrip(len, None);
            roundtrip(len, Some([1, 2, 3, 4]));
        }
    }

    #[test]
    fn minimal_length_encoding() {
        let mut buf = Vec::new();
        let h = |payload_len| FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::TEXT,
            mask: None,
            payload_len,
        };
        h(125).encode(&mut buf);
        assert_eq!(buf, [0x81, 125]);
        buf.clear();
        h(126).encode(&mut buf);
        assert_eq!(buf, [0x81, 126, 0, 126]);
        buf.clear();
        h(65536).encode(&mut buf);
        assert_eq!(buf, [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn msb_of_64_bit_length_is_rejected() {
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            FrameHeader::decode(&buf),
            Err(ProtocolError::PayloadLengthMsbSet)
        );
    }

    #[test]
    fn opcode_classes() {
        for op in 0u8..16 {
            let op = OpCode(op);
            assert_eq!(op.is_control(), op.0 >= 8);
        }
        assert!(OpCode(3).is_reserved() && OpCode(0xB).is_reserved());
        assert!(!OpCode::PONG.is_reserved());
    }
}
