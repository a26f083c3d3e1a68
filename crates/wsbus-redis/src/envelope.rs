//! The envelope around every message one node publishes for others.
//!
//! ```text
//! 0      2        4              8                     16     17
//! | B5 01 | origin | incarnation  | sequence            | kind | payload…
//! ```
//!
//! All numbers big-endian. `origin` is the publishing node's
//! [`NodeId`](wsbus::NodeId), `incarnation` a random number drawn when
//! its link started (a restarted node starts its sequence again: the pair
//! tells its messages apart from those of its previous life), `sequence`
//! counts the node's publishes from 1. The same envelope, with the same
//! sequence, may be published on several Redis channels (a bus message on
//! its channel and on each wildcard above it): the receiving node delivers
//! it once (see `link`'s module docs, "Ordering and duplicates").
//!
//! Anything else found on a wsbus channel — written by another Redis client,
//! or by a future version — is refused by [`Envelope::decode`], counted and
//! ignored.

use bytes::{BufMut, Bytes, BytesMut};
use wsbus::NodeId;

/// The first two bytes: a marker and the format's version.
const MAGIC: [u8; 2] = [0xB5, 0x01];

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 17;

/// Who published a message: a node in one of its lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The publishing node.
    pub node: NodeId,
    /// Drawn at random when the node's link started.
    pub incarnation: u32,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Who published it.
    pub origin: Origin,
    /// Its number among the origin's publishes, from 1.
    pub sequence: u64,
    /// What it is; the meaning belongs to the layer that published it.
    pub kind: u8,
    /// The kind's bytes.
    pub payload: Bytes,
}

/// Why a message on a wsbus channel was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Envelope {
    /// The header and `payload`, as published.
    pub(crate) fn encode(origin: Origin, sequence: u64, kind: u8, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
        out.put_slice(&MAGIC);
        out.put_u16(origin.node.0);
        out.put_u32(origin.incarnation);
        out.put_u64(sequence);
        out.put_u8(kind);
        out.put_slice(payload);
        out.freeze()
    }

    /// Reads a published message; what does not start with our header is
    /// [`Malformed`].
    pub(crate) fn decode(bytes: Bytes) -> Result<Envelope, Malformed> {
        if bytes.len() < HEADER_LEN {
            return Err(Malformed("shorter than the envelope's header"));
        }
        if bytes[..2] != MAGIC {
            return Err(Malformed("not a wsbus envelope (marker or version)"));
        }
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let sequence = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if sequence == 0 {
            return Err(Malformed("sequence 0"));
        }
        Ok(Envelope {
            origin: Origin {
                node: NodeId(u16_at(2)),
                incarnation: u32_at(4),
            },
            sequence,
            kind: bytes[16],
            payload: bytes.slice(HEADER_LEN..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let origin = Origin {
            node: NodeId(7),
            incarnation: 0xDEAD_BEEF,
        };
        let wire = Envelope::encode(origin, 42, 3, b"hello");
        assert_eq!(wire.len(), HEADER_LEN + 5);
        let envelope = Envelope::decode(wire.clone()).unwrap();
        assert_eq!(envelope.origin, origin);
        assert_eq!(envelope.sequence, 42);
        assert_eq!(envelope.kind, 3);
        assert_eq!(&envelope.payload[..], b"hello");

        assert!(Envelope::decode(Bytes::from_static(b"{\"json\":1}")).is_err());
        assert!(Envelope::decode(wire.slice(..HEADER_LEN - 1)).is_err());
        let mut zero = wire.to_vec();
        zero[8..16].fill(0);
        assert!(Envelope::decode(zero.into()).is_err());
    }
}
