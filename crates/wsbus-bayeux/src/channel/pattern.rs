//! Channel patterns: a name, or a name ending in a `*` or `**` wildcard.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ChannelName;
use super::name::{ChannelError, first_segment, validate};

/// The wildcard of a pattern's last segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wildcard {
    /// Not a wildcard: the pattern is one channel.
    None,
    /// `*`: exactly one more segment.
    OneSegment,
    /// `**`: one or more further segments.
    AnyDepth,
}

/// A validated subscription or policy pattern: a channel name, or a name
/// ending in `/*` or `/**`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelPattern {
    pub(super) text: Arc<str>,
    pub(super) wildcard: Wildcard,
    /// Length of the part before `/*` or `/**` (`""` for `/**`).
    prefix_len: usize,
}

impl ChannelPattern {
    /// Validates `text` as a pattern.
    pub fn parse(text: &str) -> Result<Self, ChannelError> {
        let (wildcard, prefix_len) = validate(text)?;
        Ok(ChannelPattern {
            text: Arc::from(text),
            wildcard,
            prefix_len,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The wildcard of the last segment.
    pub fn wildcard(&self) -> Wildcard {
        self.wildcard
    }

    /// Whether the pattern ends in `*` or `**`.
    pub fn is_wild(&self) -> bool {
        self.wildcard != Wildcard::None
    }

    /// The part before `/*` or `/**` (the whole name when not wild; `""` for
    /// `/*` and `/**`).
    pub fn prefix(&self) -> &str {
        &self.text[..self.prefix_len]
    }

    /// The channel name, if this pattern is not wild.
    pub fn as_name(&self) -> Option<ChannelName> {
        (!self.is_wild()).then(|| ChannelName(self.text.clone()))
    }

    /// Whether the first segment is `meta` (`/meta/*` is; `/**` is not).
    pub fn is_meta(&self) -> bool {
        !self.prefix().is_empty() && first_segment(self.prefix()) == "meta"
    }

    /// Whether the first segment is `service`.
    pub fn is_service(&self) -> bool {
        !self.prefix().is_empty() && first_segment(self.prefix()) == "service"
    }

    /// Whether `channel` is matched by this pattern.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        let name = channel.as_str();
        let prefix = self.prefix();
        match self.wildcard {
            Wildcard::None => name == prefix,
            // The channel's parent is the prefix.
            Wildcard::OneSegment => {
                name.rfind('/') == Some(prefix.len()) && name.starts_with(prefix)
            }
            // The prefix is a proper ancestor of the channel.
            Wildcard::AnyDepth => {
                name.len() > prefix.len()
                    && name.starts_with(prefix)
                    && name.as_bytes()[prefix.len()] == b'/'
            }
        }
    }
}

impl From<ChannelName> for ChannelPattern {
    fn from(name: ChannelName) -> Self {
        let prefix_len = name.0.len();
        ChannelPattern {
            text: name.0,
            wildcard: Wildcard::None,
            prefix_len,
        }
    }
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ChannelPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Patterns in configuration files are validated when read.
impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ChannelPattern::parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid channel pattern {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use crate::channel::test_support::{name, pattern};

    #[test]
    fn kinds_of_channels() {
        assert!(name("/meta/connect").is_meta());
        assert!(name("/meta").is_meta());
        assert!(!name("/metadata").is_meta());
        assert!(name("/service/echo").is_service());
        assert!(name("/chat").is_broadcast());
        assert!(pattern("/meta/*").is_meta());
        assert!(pattern("/meta/**").is_meta());
        assert!(!pattern("/**").is_meta());
        assert!(pattern("/service/**").is_service());
        assert_eq!(pattern("/a/b/**").prefix(), "/a/b");
        assert_eq!(pattern("/*").prefix(), "");
    }

    #[test]
    fn wildcard_semantics() {
        let one = pattern("/chat/*");
        assert!(one.matches(&name("/chat/a")));
        assert!(!one.matches(&name("/chat/a/b")));
        assert!(!one.matches(&name("/chat")));
        assert!(!one.matches(&name("/chatter/a")));
        let any = pattern("/chat/**");
        assert!(any.matches(&name("/chat/a")));
        assert!(any.matches(&name("/chat/a/b/c")));
        assert!(!any.matches(&name("/chat")));
        assert!(!any.matches(&name("/chatter/a")));
        assert!(pattern("/*").matches(&name("/a")));
        assert!(!pattern("/*").matches(&name("/a/b")));
        assert!(pattern("/**").matches(&name("/a/b")));
        assert!(pattern("/a/b").matches(&name("/a/b")));
        assert!(!pattern("/a/b").matches(&name("/a/bc")));
    }
}
