//! Channel names, wildcard patterns, and the indexes keyed by them.
//!
//! A channel name is `/segment/segment/…`. A pattern is a name, or a name
//! whose last segment is `*` (exactly one more segment: `/chat/*` matches
//! `/chat/a`, not `/chat/a/b` nor `/chat`) or `**` (one or more further
//! segments: `/chat/**` matches `/chat/a` and `/chat/a/b`, not `/chat`).
//! Wildcards anywhere but the last segment are invalid (Bayeux 1.0 §2.2.1).
//!
//! # Character set
//!
//! A segment is one or more of: ASCII letters and digits, and
//! `- . _ ~ ! $ & ' ( ) + , ; = : @ % # { }`. That is every character CometD's
//! validator accepts (except the space, which would make `/a` and `/a ` two
//! channels that look alike in logs), plus RFC 3986's other path characters
//! (`& ' , ; = : %`): ServiceNow-style record-watcher channels carry base64
//! text in a segment, hence `+` and `=`. `*` is only a wildcard, never part of
//! a segment; `/` only separates segments; other characters (spaces, quotes,
//! `<`, `>`, `\`, `?`, non-ASCII) are rejected so that a channel name is safe
//! to log, to put in a URL path and to show in the admin page.

mod map;
mod name;
mod pattern;

pub use map::{MatchKind, Matching, PatternMap, Subscriptions};
pub use name::{ChannelError, ChannelName, MAX_CHANNEL_DEPTH, MAX_CHANNEL_LEN, is_segment_char};
pub use pattern::{ChannelPattern, Wildcard};

/// Parsers that panic on invalid text, shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{ChannelName, ChannelPattern};

    pub(crate) fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }
    pub(crate) fn pattern(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }
}
