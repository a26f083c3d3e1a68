//! Incremental, fail-fast UTF-8 validation for text messages (RFC 6455 §8.1).
//!
//! A text message may arrive in many frames, and a frame in many reads; a code
//! point may be split anywhere. The validator keeps at most three bytes of an
//! unfinished code point between pieces and fails as soon as the bytes seen
//! cannot begin valid UTF-8 — not only when the message ends — so a peer
//! streaming garbage is cut off at the first bad byte (Autobahn 6.4.x).
//!
//! The bulk validation is `simdutf8`'s SIMD validator; its `compat` flavour
//! tells an invalid sequence (`error_len() == Some(_)`) apart from a valid
//! sequence cut short by the end of input (`None`), which is what makes
//! fail-fast possible.

/// The bytes seen cannot be valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl std::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Validates a text message fed in pieces.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate the next piece of the message. Fails as soon as the bytes
    /// seen so far cannot begin valid UTF-8; a code point cut at the end of
    /// `bytes` is kept (at most 3 bytes) and completed by the next piece.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            bytes = self.complete_pending(bytes)?;
            if self.pending_len > 0 {
                return Ok(()); // `bytes` ran out inside the code point
            }
        }
        match simdutf8::compat::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The message ended: an unfinished code point is invalid. The
    /// validator is ready for the next message either way.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }

    /// Forget any state (start of a new message).
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    /// Append bytes to the unfinished code point until it is complete or the
    /// input runs out; returns the input left over.
    fn complete_pending<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], InvalidUtf8> {
        let have = usize::from(self.pending_len);
        let width = match self.pending[0] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => unreachable!("only valid lead bytes are kept pending"),
        };
        let take = (width - have).min(bytes.len());
        self.pending[have..have + take].copy_from_slice(&bytes[..take]);
        let len = have + take;
        match std::str::from_utf8(&self.pending[..len]) {
            Ok(_) => self.pending_len = 0,
            Err(e) if e.error_len().is_none() => self.pending_len = len as u8,
            Err(_) => return Err(InvalidUtf8),
        }
        Ok(&bytes[take..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_in_pieces(bytes: &[u8], piece: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for chunk in bytes.chunks(piece.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        let samples: &[&[u8]] = &[
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "κόσμε".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{24B62}".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"abc\xf0\x9f\x98",
            b"\xed\xbf\xbf",
            b"",
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for piece in 1..=sample.len().max(1) {
                assert_eq!(
                    validate_in_pieces(sample, piece).is_ok(),
                    expected,
                    "{sample:x?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        // 0xF4 0x90 can never start a valid code point (> U+10FFFF): the
        // second byte alone must fail, without waiting for more input.
        let mut v = Utf8Validator::new();
        v.feed(b"ok \xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));

        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0"),
            Err(InvalidUtf8)
        );
    }

    #[test]
    fn unfinished_code_point_at_end_is_invalid() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // and the validator is reusable afterwards
        v.feed(b"ok").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }
}
