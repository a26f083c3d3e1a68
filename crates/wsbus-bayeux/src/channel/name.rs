//! Channel names: validation, and the meta and service kinds.

use std::fmt;
use std::sync::Arc;

use super::Wildcard;

/// Longest channel name or pattern, in bytes. Bounds the memory of each
/// subscription key; 1 KiB holds a long base64 record-watcher query.
pub const MAX_CHANNEL_LEN: usize = 1024;

/// Most segments in a channel name. Each publish looks up one wildcard key per
/// ancestor, so depth bounds the work of a publish.
pub const MAX_CHANNEL_DEPTH: usize = 32;

/// Why a string is not a valid channel name or pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The empty string.
    Empty,
    /// The first character is not `/`.
    MissingLeadingSlash,
    /// `//`, or a trailing `/`.
    EmptySegment,
    /// A character outside the channel character set.
    InvalidCharacter(char),
    /// `*` or `**` before the last segment, or `*` inside a segment.
    MisplacedWildcard,
    /// A wildcard pattern where a channel name is required.
    Wildcard,
    /// More than [`MAX_CHANNEL_LEN`] bytes.
    TooLong,
    /// More than [`MAX_CHANNEL_DEPTH`] segments.
    TooDeep,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Empty => f.write_str("empty"),
            ChannelError::MissingLeadingSlash => f.write_str("must start with '/'"),
            ChannelError::EmptySegment => f.write_str("empty segment"),
            ChannelError::InvalidCharacter(c) => write!(f, "invalid character {c:?}"),
            ChannelError::MisplacedWildcard => {
                f.write_str("a wildcard may only be the whole last segment")
            }
            ChannelError::Wildcard => f.write_str("wildcard not allowed here"),
            ChannelError::TooLong => write!(f, "longer than {MAX_CHANNEL_LEN} bytes"),
            ChannelError::TooDeep => write!(f, "more than {MAX_CHANNEL_DEPTH} segments"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// Whether `c` may appear in a channel segment (see the module docs).
pub fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '@'
                | '%'
                | '#'
                | '{'
                | '}'
        )
}

/// Validates `text` as a pattern; returns the wildcard and the length of the
/// prefix before `/*` or `/**` (the whole length when not wild).
pub(super) fn validate(text: &str) -> Result<(Wildcard, usize), ChannelError> {
    if text.is_empty() {
        return Err(ChannelError::Empty);
    }
    if text.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Err(ChannelError::MissingLeadingSlash);
    };
    let mut wildcard = Wildcard::None;
    let mut depth = 0;
    for segment in rest.split('/') {
        if wildcard != Wildcard::None {
            // A segment after a wildcard.
            return Err(ChannelError::MisplacedWildcard);
        }
        depth += 1;
        if depth > MAX_CHANNEL_DEPTH {
            return Err(ChannelError::TooDeep);
        }
        match segment {
            "" => return Err(ChannelError::EmptySegment),
            "*" => wildcard = Wildcard::OneSegment,
            "**" => wildcard = Wildcard::AnyDepth,
            _ => {
                if let Some(c) = segment.chars().find(|&c| !is_segment_char(c)) {
                    return Err(if c == '*' {
                        ChannelError::MisplacedWildcard
                    } else {
                        ChannelError::InvalidCharacter(c)
                    });
                }
            }
        }
    }
    let prefix_len = match wildcard {
        Wildcard::None => text.len(),
        Wildcard::OneSegment => text.len() - 2,
        Wildcard::AnyDepth => text.len() - 3,
    };
    Ok((wildcard, prefix_len))
}

/// The first segment of a valid name or pattern (`"meta"` for `/meta/connect`).
pub(super) fn first_segment(text: &str) -> &str {
    let rest = &text[1..];
    rest.split('/').next().unwrap_or(rest)
}

/// A validated channel name without wildcards: what messages are published on.
///
/// Cheap to clone (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(pub(super) Arc<str>);

impl ChannelName {
    /// Validates `text` as a channel name (no wildcard).
    pub fn parse(text: &str) -> Result<Self, ChannelError> {
        match validate(text)? {
            (Wildcard::None, _) => Ok(ChannelName(Arc::from(text))),
            _ => Err(ChannelError::Wildcard),
        }
    }

    /// A name built by the engine from valid parts (e.g. `/presence` + a
    /// channel), which may exceed the length or depth limits by a little.
    pub(crate) fn from_trusted(text: String) -> Self {
        debug_assert!(text.starts_with('/') && !text.contains("//") && !text.ends_with('/'));
        ChannelName(Arc::from(text))
    }

    /// The name as on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, without the slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }

    /// `/meta/…`: the protocol's own channels, never relayed.
    pub fn is_meta(&self) -> bool {
        first_segment(&self.0) == "meta"
    }

    /// `/service/…`: delivered to server-side handlers only, never relayed.
    pub fn is_service(&self) -> bool {
        first_segment(&self.0) == "service"
    }

    /// Neither meta nor service: relayed to subscribers.
    pub fn is_broadcast(&self) -> bool {
        !self.is_meta() && !self.is_service()
    }

    /// The first segment (`"chat"` for `/chat/room`).
    pub fn first_segment(&self) -> &str {
        first_segment(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_include_the_cometd_and_base64_characters() {
        for ok in [
            "/a",
            "/chat/room-1",
            "/rw/default/incident/YWN0aXZlPXRydWU=",
            "/rw/default/x/a+b/c=d",
            "/a.b_c~d!e$f&g'h(i)j+k,l;m=n:o@p%q#r{s}t",
            "/meta/connect",
        ] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_names_are_rejected_with_a_reason() {
        use ChannelError::*;
        for (bad, why) in [
            ("", Empty),
            ("a/b", MissingLeadingSlash),
            ("/", EmptySegment),
            ("/a//b", EmptySegment),
            ("/a/", EmptySegment),
            ("/a b", InvalidCharacter(' ')),
            ("/a<b", InvalidCharacter('<')),
            ("/a?b", InvalidCharacter('?')),
            ("/é", InvalidCharacter('é')),
            ("/a/*/b", MisplacedWildcard),
            ("/a/**/b", MisplacedWildcard),
            ("/a*", MisplacedWildcard),
            ("/a/***", MisplacedWildcard),
            ("/a/*", Wildcard),
        ] {
            assert_eq!(ChannelName::parse(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            ChannelName::parse(&format!("/{}", "a".repeat(MAX_CHANNEL_LEN))),
            Err(TooLong)
        );
        assert_eq!(
            ChannelName::parse(&"/a".repeat(MAX_CHANNEL_DEPTH + 1)),
            Err(TooDeep)
        );
        assert!(ChannelName::parse(&"/a".repeat(MAX_CHANNEL_DEPTH)).is_ok());
    }
}
