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

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{ClientId, IdSet};

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

/// Validates `text` as a pattern; returns the wildcard and the length of the
/// prefix before `/*` or `/**` (the whole length when not wild).
fn validate(text: &str) -> Result<(Wildcard, usize), ChannelError> {
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
fn first_segment(text: &str) -> &str {
    let rest = &text[1..];
    rest.split('/').next().unwrap_or(rest)
}

/// A validated channel name without wildcards: what messages are published on.
///
/// Cheap to clone (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

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

/// A validated subscription or policy pattern: a channel name, or a name
/// ending in `/*` or `/**`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelPattern {
    text: Arc<str>,
    wildcard: Wildcard,
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

/// A map from patterns to values that finds every pattern matching a channel
/// without scanning the map: a channel of depth `d` costs at most `d + 2`
/// hash lookups (the channel itself, its parent's `/*`, and each ancestor's
/// `/**`), whatever the number of patterns.
#[derive(Clone, Debug)]
pub struct PatternMap<T> {
    /// Non-wild patterns, keyed by the name.
    exact: HashMap<Arc<str>, T>,
    /// `prefix/*` patterns, keyed by the prefix.
    one_segment: HashMap<Arc<str>, T>,
    /// `prefix/**` patterns, keyed by the prefix.
    any_depth: HashMap<Arc<str>, T>,
}

impl<T> Default for PatternMap<T> {
    fn default() -> Self {
        PatternMap {
            exact: HashMap::new(),
            one_segment: HashMap::new(),
            any_depth: HashMap::new(),
        }
    }
}

/// How a pattern found by [`PatternMap::matching`] matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// The pattern is the channel itself.
    Exact,
    /// Through `*` or `**`.
    Wildcard,
}

impl<T> PatternMap<T> {
    fn table(&self, wildcard: Wildcard) -> &HashMap<Arc<str>, T> {
        match wildcard {
            Wildcard::None => &self.exact,
            Wildcard::OneSegment => &self.one_segment,
            Wildcard::AnyDepth => &self.any_depth,
        }
    }

    fn table_mut(&mut self, wildcard: Wildcard) -> &mut HashMap<Arc<str>, T> {
        match wildcard {
            Wildcard::None => &mut self.exact,
            Wildcard::OneSegment => &mut self.one_segment,
            Wildcard::AnyDepth => &mut self.any_depth,
        }
    }

    fn key(pattern: &ChannelPattern) -> Arc<str> {
        if pattern.is_wild() {
            Arc::from(pattern.prefix())
        } else {
            pattern.text.clone()
        }
    }

    /// The value stored for exactly this pattern.
    pub fn get(&self, pattern: &ChannelPattern) -> Option<&T> {
        self.table(pattern.wildcard).get(pattern.prefix())
    }

    /// The value stored for exactly this pattern.
    pub fn get_mut(&mut self, pattern: &ChannelPattern) -> Option<&mut T> {
        self.table_mut(pattern.wildcard).get_mut(pattern.prefix())
    }

    /// Stores `value` for `pattern`, returning the previous value.
    pub fn insert(&mut self, pattern: &ChannelPattern, value: T) -> Option<T> {
        let key = Self::key(pattern);
        self.table_mut(pattern.wildcard).insert(key, value)
    }

    /// The value for `pattern`, inserted with `make` if absent.
    pub fn get_or_insert_with(
        &mut self,
        pattern: &ChannelPattern,
        make: impl FnOnce() -> T,
    ) -> &mut T {
        let table = match pattern.wildcard {
            Wildcard::None => &mut self.exact,
            Wildcard::OneSegment => &mut self.one_segment,
            Wildcard::AnyDepth => &mut self.any_depth,
        };
        if !table.contains_key(pattern.prefix()) {
            table.insert(Self::key(pattern), make());
        }
        table.get_mut(pattern.prefix()).expect("inserted above")
    }

    /// Removes and returns the value for exactly this pattern.
    pub fn remove(&mut self, pattern: &ChannelPattern) -> Option<T> {
        self.table_mut(pattern.wildcard).remove(pattern.prefix())
    }

    /// How many patterns are stored.
    pub fn len(&self) -> usize {
        self.exact.len() + self.one_segment.len() + self.any_depth.len()
    }

    /// Whether no pattern is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of every stored pattern matching `channel`, the most
    /// specific first: the channel itself, then its parent's `/*`, then
    /// `/**` of each ancestor from the nearest to the root.
    pub fn matching<'a, 'c>(&'a self, channel: &'c ChannelName) -> Matching<'a, 'c, T> {
        Matching {
            map: self,
            channel: channel.as_str(),
            stage: Stage::Exact,
        }
    }

    /// The value of the most specific stored pattern that covers every
    /// channel `pattern` can match: the same pattern, then `/**` of the
    /// pattern's prefix and each of its ancestors. Used to find the policy of
    /// a subscription to a wildcard pattern.
    pub fn most_specific_for(&self, pattern: &ChannelPattern) -> Option<&T> {
        if !pattern.is_wild() {
            let name = ChannelName(pattern.text.clone());
            return self.matching(&name).next().map(|(_, value)| value);
        }
        if let Some(value) = self.get(pattern) {
            return Some(value);
        }
        let prefix = pattern.prefix();
        let mut end = prefix.len();
        loop {
            if let Some(value) = self.any_depth.get(&prefix[..end]) {
                return Some(value);
            }
            if end == 0 {
                return None;
            }
            end = prefix[..end].rfind('/').unwrap_or(0);
        }
    }

    /// Every stored pattern and value.
    pub fn iter(&self) -> impl Iterator<Item = (String, &T)> {
        let exact = self.exact.iter().map(|(k, v)| (k.to_string(), v));
        let one = self.one_segment.iter().map(|(k, v)| (format!("{k}/*"), v));
        let any = self.any_depth.iter().map(|(k, v)| (format!("{k}/**"), v));
        exact.chain(one).chain(any)
    }
}

enum Stage {
    Exact,
    OneSegment,
    /// Looking up `channel[..end]/**`.
    AnyDepth {
        end: usize,
    },
    Done,
}

/// Iterator returned by [`PatternMap::matching`].
pub struct Matching<'a, 'c, T> {
    map: &'a PatternMap<T>,
    channel: &'c str,
    stage: Stage,
}

impl<T> fmt::Debug for Matching<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matching")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl<'a, T> Iterator for Matching<'a, '_, T> {
    type Item = (MatchKind, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        let channel = self.channel;
        // A valid channel starts with '/', so rfind always finds one.
        let parent_end = channel.rfind('/').unwrap_or(0);
        loop {
            match self.stage {
                Stage::Exact => {
                    self.stage = Stage::OneSegment;
                    if let Some(value) = self.map.exact.get(channel) {
                        return Some((MatchKind::Exact, value));
                    }
                }
                Stage::OneSegment => {
                    self.stage = Stage::AnyDepth { end: parent_end };
                    if let Some(value) = self.map.one_segment.get(&channel[..parent_end]) {
                        return Some((MatchKind::Wildcard, value));
                    }
                }
                Stage::AnyDepth { end } => {
                    self.stage = if end == 0 {
                        Stage::Done
                    } else {
                        Stage::AnyDepth {
                            end: channel[..end].rfind('/').unwrap_or(0),
                        }
                    };
                    if let Some(value) = self.map.any_depth.get(&channel[..end]) {
                        return Some((MatchKind::Wildcard, value));
                    }
                }
                Stage::Done => return None,
            }
        }
    }
}

/// The subscription index: pattern → subscribed clients.
#[derive(Clone, Debug, Default)]
pub struct Subscriptions {
    patterns: PatternMap<IdSet<ClientId>>,
}

impl Subscriptions {
    /// Records that `client` subscribed to `pattern`; `false` if it already was.
    pub fn subscribe(&mut self, pattern: &ChannelPattern, client: &ClientId) -> bool {
        self.patterns
            .get_or_insert_with(pattern, IdSet::default)
            .insert(client.clone())
    }

    /// Removes a subscription; `false` if there was none.
    pub fn unsubscribe(&mut self, pattern: &ChannelPattern, client: &ClientId) -> bool {
        let Some(clients) = self.patterns.get_mut(pattern) else {
            return false;
        };
        let removed = clients.remove(client);
        if clients.is_empty() {
            // Keep the index as small as the live subscriptions.
            self.patterns.remove(pattern);
        }
        removed
    }

    /// The clients subscribed to exactly `pattern`.
    pub fn subscribers(&self, pattern: &ChannelPattern) -> impl Iterator<Item = &ClientId> {
        self.patterns.get(pattern).into_iter().flatten()
    }

    /// Every client whose subscriptions match `channel`, with how it matched.
    /// A client subscribed through several patterns appears once per pattern.
    pub fn matching<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> impl Iterator<Item = (MatchKind, &'a ClientId)> + 'a {
        self.patterns
            .matching(channel)
            .flat_map(|(kind, clients)| clients.iter().map(move |client| (kind, client)))
    }

    /// The subscriber sets of the patterns matching `channel`, with how they
    /// match (a client may be in several).
    pub fn matching_sets<'a>(
        &'a self,
        channel: &'a ChannelName,
    ) -> impl Iterator<Item = (MatchKind, &'a IdSet<ClientId>)> + 'a {
        self.patterns.matching(channel)
    }

    /// Whether `client` has a subscription matching `channel` (at most
    /// `depth + 2` set lookups).
    pub fn is_subscribed(&self, channel: &ChannelName, client: &ClientId) -> bool {
        self.patterns
            .matching(channel)
            .any(|(_, clients)| clients.contains(client))
    }

    /// How many distinct patterns have subscribers.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }
    fn pattern(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }

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

    #[test]
    fn pattern_map_finds_every_match_most_specific_first() {
        let mut map = PatternMap::default();
        for p in [
            "/a/b/c", "/a/b/*", "/a/b/**", "/a/**", "/**", "/*", "/a/*", "/x/**",
        ] {
            map.insert(&pattern(p), p);
        }
        let found: Vec<_> = map.matching(&name("/a/b/c")).map(|(_, p)| *p).collect();
        assert_eq!(found, ["/a/b/c", "/a/b/*", "/a/b/**", "/a/**", "/**"]);
        let found: Vec<_> = map.matching(&name("/a")).map(|(_, p)| *p).collect();
        assert_eq!(found, ["/*", "/**"]);
        // Brute force agrees for a few channels.
        for channel in ["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/x", "/x/y", "/q/r"] {
            let channel = name(channel);
            let mut fast: Vec<_> = map.matching(&channel).map(|(_, p)| *p).collect();
            let mut slow: Vec<_> = map
                .iter()
                .filter(|(p, _)| pattern(p).matches(&channel))
                .map(|(_, p)| *p)
                .collect();
            fast.sort();
            slow.sort();
            assert_eq!(fast, slow, "{channel}");
        }
    }

    #[test]
    fn most_specific_for_a_wildcard_pattern() {
        let mut map = PatternMap::default();
        map.insert(&pattern("/**"), "root");
        map.insert(&pattern("/chat/**"), "chat");
        map.insert(&pattern("/chat/*"), "chat-one");
        assert_eq!(
            map.most_specific_for(&pattern("/chat/*")),
            Some(&"chat-one")
        );
        assert_eq!(map.most_specific_for(&pattern("/chat/x/*")), Some(&"chat"));
        assert_eq!(map.most_specific_for(&pattern("/chat/**")), Some(&"chat"));
        assert_eq!(map.most_specific_for(&pattern("/**")), Some(&"root"));
        assert_eq!(map.most_specific_for(&pattern("/other/*")), Some(&"root"));
        assert_eq!(
            map.most_specific_for(&pattern("/chat/a")),
            Some(&"chat-one")
        );
    }

    #[test]
    fn subscriptions_index() {
        let mut subs = Subscriptions::default();
        let (a, b) = (
            ClientId::from_random([1; 16]),
            ClientId::from_random([2; 16]),
        );
        assert!(subs.subscribe(&pattern("/chat/room"), &a));
        assert!(!subs.subscribe(&pattern("/chat/room"), &a));
        assert!(subs.subscribe(&pattern("/chat/*"), &b));
        assert!(subs.subscribe(&pattern("/chat/**"), &b));
        let room = name("/chat/room");
        let mut got: Vec<_> = subs.matching(&room).collect();
        got.sort_by_key(|(_, c)| (*c).clone());
        assert_eq!(got.len(), 3);
        assert!(subs.is_subscribed(&room, &a));
        assert!(!subs.is_subscribed(&name("/chat/other"), &a));
        assert!(subs.is_subscribed(&name("/chat/x/y"), &b));
        assert!(subs.unsubscribe(&pattern("/chat/room"), &a));
        assert!(!subs.unsubscribe(&pattern("/chat/room"), &a));
        assert_eq!(subs.pattern_count(), 2);
        assert!(subs.unsubscribe(&pattern("/chat/*"), &b));
        assert!(subs.unsubscribe(&pattern("/chat/**"), &b));
        assert_eq!(subs.pattern_count(), 0);
    }
}
