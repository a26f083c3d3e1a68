//! WebSocket frames (RFC 6455 §5.2) written and read by hand, for tests that
//! must control every bit or see exactly what a server sent.

use std::io::{self, Read};

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong.
pub const OP_PONG: u8 = 0xA;

/// The largest frame [`read_frame`] accepts: more than any limit the tests
/// configure, and a guard against allocating whatever a corrupt length says.
pub const MAX_READ_FRAME: u64 = 128 << 20;

/// The first two bytes' flags and the masking key of a frame to encode.
#[derive(Debug, Clone, Copy)]
pub struct FrameBits {
    /// The last frame of its message.
    pub fin: bool,
    /// RFC 7692: the message is compressed (first frame only).
    pub rsv1: bool,
    /// One of the `OP_*` constants (or a reserved one, to test refusals).
    pub opcode: u8,
    /// Client frames are masked, server frames are not.
    pub mask: Option<[u8; 4]>,
}

/// One frame: header with the shortest length encoding, then the payload,
/// masked with `bits.mask` if any.
pub fn encode(bits: FrameBits, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(u8::from(bits.fin) << 7 | u8::from(bits.rsv1) << 6 | (bits.opcode & 0x0F));
    let mask_bit = if bits.mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => frame.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match bits.mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// One masked, final client frame.
pub fn masked_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    encode(
        FrameBits {
            fin: true,
            rsv1: false,
            opcode,
            mask: Some(key),
        },
        payload,
    )
}

/// The payload of a close frame: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A frame as read from the wire, unmasked.
#[derive(Debug)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    /// Its opcode.
    pub opcode: u8,
    /// Whether it arrived masked (it was unmasked when read).
    pub masked: bool,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code of a close frame that carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a close frame (lossy UTF-8), empty if none.
    pub fn close_reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }
}

/// Read one frame (any read timeout of the stream applies to each read).
pub fn read_frame(stream: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > MAX_READ_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    let mut key = [0u8; 4];
    if masked {
        stream.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Frame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0F,
        masked,
        payload,
    })
}

/// A complete frame found by [`parse_frames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    /// Its opcode.
    pub opcode: u8,
    /// Its payload's length in bytes.
    pub payload_len: usize,
    /// The code of a close frame that carries one.
    pub close_code: Option<u16>,
}

/// Split received bytes into complete frames, and say how many bytes trail
/// after the last complete one.
pub fn parse_frames(mut bytes: &[u8]) -> (Vec<FrameSummary>, usize) {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let (len, mut at) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if bytes[1] & 0x80 != 0 {
            at += 4; // a masked server frame would be a bug; skip the key anyway
        }
        if bytes.len() < at + len {
            break;
        }
        let opcode = bytes[0] & 0x0F;
        frames.push(FrameSummary {
            opcode,
            payload_len: len,
            close_code: (opcode == OP_CLOSE && len >= 2)
                .then(|| u16::from_be_bytes([bytes[at], bytes[at + 1]])),
        });
        bytes = &bytes[at + len..];
    }
    (frames, bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_reads_back_at_every_length_encoding() {
        for len in [0, 125, 126, 0xFFFF, 0x1_0000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let bits = FrameBits {
                    fin: false,
                    rsv1: true,
                    opcode: OP_BINARY,
                    mask,
                };
                let wire = encode(bits, &payload);
                let frame = read_frame(&mut &wire[..]).unwrap();
                assert_eq!(
                    (frame.fin, frame.opcode, frame.masked),
                    (false, OP_BINARY, mask.is_some())
                );
                assert_eq!(frame.payload, payload);
                assert_eq!(wire[0] & 0x40, 0x40, "rsv1");
                let (frames, trailing) = parse_frames(&wire[..wire.len() - 1]);
                assert_eq!((frames.len(), trailing), (0, wire.len() - 1));
            }
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let wire = encode(
            FrameBits {
                fin: true,
                rsv1: false,
                opcode: OP_CLOSE,
                mask: None,
            },
            &close_payload(1008, "slow consumer"),
        );
        let frame = read_frame(&mut &wire[..]).unwrap();
        assert_eq!(frame.close_code(), Some(1008));
        assert_eq!(frame.close_reason(), "slow consumer");
        let (frames, trailing) = parse_frames(&wire);
        assert_eq!(frames[0].close_code, Some(1008));
        assert_eq!(trailing, 0);
    }
}
