//! What a verified access token grants a session, and how a request
//! presents one.
//!
//! The engine verifies nothing itself: the runtime checks the token (a JWT in
//! the handshake's `ext.access_token`, an `Authorization` header, an
//! `access_token` query parameter) and hands the engine its outcome in the
//! [`RequestContext`](crate::RequestContext). The engine then applies it:
//!
//! * a handshake with a [`Credential::Refused`] is refused with
//!   `401::<reason>` and advice `reconnect: none` (retrying with the same
//!   token cannot help);
//! * a session keeps its grant's [`channels`](Grant::channels) (for the
//!   [`claim`](crate::SubscribePolicy::Claim) policies) and
//!   [`expires_at`](Grant::expires_at): from that instant it gets nothing —
//!   no delivery is queued for it, a held connect is answered with
//!   `401::Token expired` and advice `reconnect: handshake`, and so is its
//!   next request; the session is removed;
//! * a later `/meta/connect` that presents a verified token of the same user
//!   **refreshes** the session (new expiry, new channels) without a new
//!   handshake. A refresh whose token is refused, or of another user, ends
//!   the session like an expiry.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::channel::{ChannelName, ChannelPattern, Wildcard};
use crate::error::BayeuxError;

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The user (the token's `sub`): the session's user.
    pub user: Arc<str>,
    /// The channel patterns the token lists in its `channels` claim; `None`
    /// when it has no such claim (then every `claim` policy refuses).
    pub channels: Option<Arc<[ChannelPattern]>>,
    /// When the token expires (its `exp`, on the engine's clock); `None`:
    /// never.
    pub expires_at: Option<Instant>,
    /// The token's claims, for applications (an [`Authorizer`](crate::Authorizer)
    /// through [`SessionInfo::grant`](crate::SessionInfo::grant), `/service`
    /// handlers through [`ServiceRequest::claims`](crate::ServiceRequest::claims));
    /// the engine reads none of them.
    pub claims: Option<Arc<Map<String, Value>>>,
}

impl Grant {
    /// A grant for `user` with no channels claim and no expiry.
    pub fn user(user: impl Into<Arc<str>>) -> Self {
        Grant {
            user: user.into(),
            channels: None,
            expires_at: None,
            claims: None,
        }
    }

    /// Whether the `channels` claim lets its holder subscribe to `pattern`:
    /// some claimed pattern covers every channel `pattern` can match.
    pub fn allows_pattern(&self, pattern: &ChannelPattern) -> bool {
        self.channels
            .as_deref()
            .is_some_and(|claimed| claimed.iter().any(|c| covers(c, pattern)))
    }

    /// Whether the `channels` claim covers `channel`.
    pub fn allows_channel(&self, channel: &ChannelName) -> bool {
        self.channels
            .as_deref()
            .is_some_and(|claimed| claimed.iter().any(|c| c.matches(channel)))
    }

    /// Whether the token has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// Whether every channel `inner` matches is matched by `outer`.
fn covers(outer: &ChannelPattern, inner: &ChannelPattern) -> bool {
    if let Some(name) = inner.as_name() {
        return outer.matches(&name);
    }
    let (outer_prefix, inner_prefix) = (outer.prefix(), inner.prefix());
    match (outer.wildcard(), inner.wildcard()) {
        // `/a/**` covers `/a/*`, `/a/**`, and the wildcards of any descendant.
        (Wildcard::AnyDepth, _) => {
            inner_prefix == outer_prefix
                || (inner_prefix.starts_with(outer_prefix)
                    && inner_prefix.as_bytes().get(outer_prefix.len()) == Some(&b'/'))
        }
        // `/a/*` covers only `/a/*`: `/a/**` reaches deeper.
        (Wildcard::OneSegment, Wildcard::OneSegment) => inner_prefix == outer_prefix,
        _ => false,
    }
}

/// The outcome of checking the token a request presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The token is valid.
    Verified(Grant),
    /// The token was refused; the reason goes on the wire as
    /// `401::<reason>` (e.g. `Token expired`, `Bad signature`). It must not
    /// contain the token.
    Refused(&'static str),
}

impl BayeuxError {
    /// `401::<reason>`: an access token was missing or refused.
    pub fn unauthorized(reason: &'static str) -> Self {
        BayeuxError::fixed(401, reason)
    }

    /// `401::Missing token`: the bus requires a token and none came.
    pub const MISSING_TOKEN: Self = Self::fixed(401, "Missing token");

    /// `401::Token expired`: the session's token expired; handshake again
    /// with a new one.
    pub const TOKEN_EXPIRED: Self = Self::fixed(401, "Token expired");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::test_support::{name, pattern};

    fn claiming(patterns: &[&str]) -> Grant {
        Grant {
            channels: Some(patterns.iter().map(|p| pattern(p)).collect()),
            ..Grant::user("ana")
        }
    }

    #[test]
    fn claimed_patterns_cover_what_they_match() {
        let grant = claiming(&["/chat/**", "/news/*", "/direct/ana"]);
        for allowed in [
            "/chat/a",
            "/chat/a/b",
            "/chat/*",
            "/chat/**",
            "/chat/a/**",
            "/news/x",
            "/news/*",
            "/direct/ana",
        ] {
            assert!(grant.allows_pattern(&pattern(allowed)), "{allowed}");
        }
        for refused in [
            "/chat",
            "/**",
            "/*",
            "/news/**",
            "/news/x/y",
            "/direct/bob",
            "/direct/*",
            "/chatter/a",
        ] {
            assert!(!grant.allows_pattern(&pattern(refused)), "{refused}");
        }
        assert!(grant.allows_channel(&name("/chat/a/b")));
        assert!(!grant.allows_channel(&name("/direct/bob")));
        assert!(!Grant::user("ana").allows_channel(&name("/chat/a")));
    }

    #[test]
    fn expiry_is_inclusive() {
        let now = Instant::now();
        let grant = Grant {
            expires_at: Some(now),
            ..Grant::user("ana")
        };
        assert!(grant.expired(now));
        assert!(!Grant::user("ana").expired(now));
    }
}
