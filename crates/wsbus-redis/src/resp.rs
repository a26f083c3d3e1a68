//! Just enough RESP2 for a subscriber connection: encoding commands, and
//! decoding the replies and pushes a connection in subscribed mode receives
//! (arrays of bulk strings and integers, simple strings, errors).
//!
//! Ours rather than the `redis` crate's codec, which it keeps out of its
//! documented API: the subscriber connection is where Redis clients have
//! lost subscriptions on reconnect, so its every byte is ours to test.

use bytes::{Buf, BytesMut};

/// The largest bulk string accepted from Redis: Redis's own
/// `proto-max-bulk-len` default (512 MB). A larger length is a corrupt
/// stream, not a message.
pub(crate) const MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// Deepest array nesting accepted: pushes are flat arrays; `PONG` in
/// subscribed mode is an array of two. Anything deeper is a corrupt stream.
const MAX_DEPTH: usize = 4;

/// A RESP2 value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$n` (`None` for the null bulk string `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` (`None` for the null array `*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a bulk or simple string.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(bytes)) => Some(bytes),
            Reply::Simple(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// Takes the bytes of a bulk string out.
    pub(crate) fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(Some(bytes)) => Some(bytes),
            Reply::Simple(text) => Some(text.into_bytes()),
            _ => None,
        }
    }
}

/// The stream is not RESP2: the connection must be dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

/// Appends `args` as one RESP2 command (an array of bulk strings).
pub(crate) fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one value from the front of `buf`, consuming it. `Ok(None)`: not
/// complete yet (nothing consumed).
pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Reply>, Corrupt> {
    let mut at = 0;
    match parse(buf, &mut at, 0)? {
        Some(reply) => {
            buf.advance(at);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, Corrupt> {
    let rest = &buf[*at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            *at += end + 2;
            Ok(Some(&rest[..end]))
        }
        // A header line is short; a long one without CRLF is garbage.
        None if rest.len() > 64 * 1024 => Err(Corrupt("line without CRLF")),
        None => Ok(None),
    }
}

fn number(bytes: &[u8]) -> Result<i64, Corrupt> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Corrupt("bad number"))
}

fn parse(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, Corrupt> {
    if depth > MAX_DEPTH {
        return Err(Corrupt("arrays nested too deep"));
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    *at += 1;
    let Some(head) = line(buf, at)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(Some(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(number(head)?),
        b'$' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Some(Reply::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| Corrupt("bad length"))?;
            if len > MAX_BULK_LEN {
                return Err(Corrupt("bulk string too long"));
            }
            if buf.len() < *at + len + 2 {
                return Ok(None);
            }
            let bytes = buf[*at..*at + len].to_vec();
            if &buf[*at + len..*at + len + 2] != b"\r\n" {
                return Err(Corrupt("bulk string without CRLF"));
            }
            *at += len + 2;
            Reply::Bulk(Some(bytes))
        }
        b'*' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Some(Reply::Array(None)));
            }
            // Each element takes at least 3 bytes: a cheap bound on what a
            // corrupt length can make us allocate.
            let len = usize::try_from(len).map_err(|_| Corrupt("bad length"))?;
            let mut items = Vec::with_capacity(len.min(buf.len() / 3 + 1));
            for _ in 0..len {
                match parse(buf, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(items))
        }
        _ => return Err(Corrupt("unknown type byte")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SSUBSCRIBE", b"a:b"]);
        assert_eq!(out, b"*2\r\n$10\r\nSSUBSCRIBE\r\n$3\r\na:b\r\n");
    }

    /// What Redis 7 sends a subscriber, byte for byte, split at every
    /// possible point: nothing is decoded before it is complete.
    #[test]
    fn pushes_decode_whole_at_any_split() {
        let wire: &[u8] = b"*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$8\r\nsmessage\r\n$1\r\nb\r\n$5\r\nhe\r\no\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n-ERR no\r\n";
        let expected = vec![
            Reply::Array(Some(vec![bulk("ssubscribe"), bulk("a"), Reply::Integer(1)])),
            Reply::Array(Some(vec![bulk("smessage"), bulk("b"), bulk("he\r\no")])),
            Reply::Array(Some(vec![bulk("pong"), bulk("")])),
            Reply::Error("ERR no".into()),
        ];
        for split in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Some(reply) = decode(&mut buf).unwrap() {
                got.push(reply);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(reply) = decode(&mut buf).unwrap() {
                got.push(reply);
            }
            assert_eq!(got, expected, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        for wire in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcde",
            b"$999999999999\r\n",
        ] {
            assert!(decode(&mut BytesMut::from(wire)).is_err(), "{wire:?}");
        }
        let deep = "*1\r\n".repeat(10) + ":1\r\n";
        assert!(decode(&mut BytesMut::from(deep.as_bytes())).is_err());
        assert_eq!(
            decode(&mut BytesMut::from(&b"$-1\r\n"[..])).unwrap(),
            Some(Reply::Bulk(None))
        );
    }
}
