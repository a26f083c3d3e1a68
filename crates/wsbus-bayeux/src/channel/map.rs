//! Indexes keyed by channel patterns, found from a channel name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::{ChannelName, ChannelPattern, Wildcard};
use crate::id::{ClientId, IdSet};

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

    /// How many clients are subscribed to exactly `pattern`.
    pub fn subscriber_count(&self, pattern: &ChannelPattern) -> usize {
        self.patterns
            .get(pattern)
            .map_or(0, |clients| clients.len())
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

    /// Every pattern with subscribers and how many it has, in no order.
    pub fn patterns(&self) -> impl Iterator<Item = (String, usize)> + '_ {
        self.patterns
            .iter()
            .map(|(pattern, clients)| (pattern, clients.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::test_support::{name, pattern};

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
