//! Presence: who is subscribed to exactly a channel, announced on its
//! `/presence` channel and listed in subscribe replies.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::channel::{ChannelName, ChannelPattern};
use crate::config::ChannelPolicy;
use crate::id::ClientId;

use super::{Engine, Event};

/// The first segment of presence channels: joins and leaves of `/chat/room`
/// are published on `/presence/chat/room`.
pub const PRESENCE_PREFIX: &str = "/presence";

/// Most members listed in the `ext.presence` of a subscribe reply, so that
/// subscribing to a crowded channel's presence cannot produce a huge reply.
pub const PRESENCE_SNAPSHOT_LIMIT: usize = 1_000;

/// `join` or `leave`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceAction {
    /// The client subscribed to exactly the channel.
    Join,
    /// The client's exact subscription went: it unsubscribed, or its
    /// session ended.
    Leave,
}

impl PresenceAction {
    /// `"join"` or `"leave"`, as in the presence message's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceAction::Join => "join",
            PresenceAction::Leave => "leave",
        }
    }
}

/// A client joined or left a channel's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceChange {
    /// The channel (e.g. `/chat/room`).
    pub channel: ChannelName,
    /// The client that joined or left.
    pub client_id: ClientId,
    /// Its session's user; `None` for an anonymous session.
    pub user: Option<Arc<str>>,
    /// Joined or left.
    pub action: PresenceAction,
}

/// A member of a channel's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's session.
    pub client_id: ClientId,
    /// Its session's user; `None` for an anonymous session.
    pub user: Option<Arc<str>>,
}

impl Engine {
    /// The clients subscribed to exactly `channel` (wildcard subscribers are
    /// observers, not members), here and, in a cluster, on the other nodes
    /// as they announced them (see `remote_presence`).
    pub fn presence(&self, channel: &ChannelName) -> Vec<Member> {
        let mut members = self.local_presence(channel);
        members.extend(self.remote_presence.members(channel));
        members
    }

    /// The members of `channel` on this node.
    pub(super) fn local_presence(&self, channel: &ChannelName) -> Vec<Member> {
        let pattern = ChannelPattern::from(channel.clone());
        self.subscriptions
            .subscribers(&pattern)
            .map(|client| Member {
                client_id: client.clone(),
                user: self.sessions.get(client).and_then(|s| s.user.clone()),
            })
            .collect()
    }

    /// The `ext.presence` of a reply to a subscription to `channel`'s
    /// presence channel: `{"channel", "members": [{"clientId", "user"}…],
    /// "complete"}`, at most [`PRESENCE_SNAPSHOT_LIMIT`] members (`complete`
    /// says whether that was all of them).
    pub(super) fn presence_snapshot(&self, channel: &ChannelName) -> Value {
        let members = self.presence(channel);
        let complete = members.len() <= PRESENCE_SNAPSHOT_LIMIT;
        let listed: Vec<Value> = members
            .iter()
            .take(PRESENCE_SNAPSHOT_LIMIT)
            .map(|m| json!({"clientId": m.client_id.as_str(), "user": m.user.as_deref()}))
            .collect();
        json!({"channel": channel.as_str(), "members": listed, "complete": complete})
    }

    pub(super) fn announce_presence(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        client: &ClientId,
        user: Option<Arc<str>>,
        action: PresenceAction,
    ) {
        let presence_channel = ChannelName::from_trusted(format!("{PRESENCE_PREFIX}{channel}"));
        let data = json!({
            "action": action.as_str(),
            "channel": channel.as_str(),
            "clientId": client.as_str(),
            "user": user.as_deref(),
        });
        // Presence is state, not a stream: a returning watcher gets the
        // current members in its subscribe reply, so joins and leaves are
        // not kept for replay (they would crowd real messages out of history).
        let policy = ChannelPolicy {
            history: false,
            ..self.policy_for(&presence_channel)
        };
        self.broadcast(now, &presence_channel, data, None, policy);
        self.events.push_back(Event::Presence(PresenceChange {
            channel: channel.clone(),
            client_id: client.clone(),
            user,
            action,
        }));
    }
}

pub(super) fn is_presence_channel(channel: &ChannelName) -> bool {
    channel.first_segment() == &PRESENCE_PREFIX[1..]
}

/// The channel whose presence a subscription to `pattern` joins: exact
/// broadcast channels only (wildcard subscribers observe, they are not
/// present; presence channels have no presence of their own).
pub(super) fn presence_tracked(pattern: &ChannelPattern) -> Option<ChannelName> {
    let channel = pattern.as_name()?;
    (channel.is_broadcast() && !is_presence_channel(&channel)).then_some(channel)
}

/// For a subscription to `/presence/chat/room`, the channel `/chat/room`.
pub(super) fn presence_subject(pattern: &ChannelPattern) -> Option<ChannelName> {
    let channel = pattern.as_name()?;
    let subject = channel.as_str().strip_prefix(PRESENCE_PREFIX)?;
    if !subject.starts_with('/') {
        return None;
    }
    ChannelName::parse(subject).ok()
}

/// The pattern whose subscribe rule governs a subscription to `pattern` on
/// the presence channels: `/presence/chat/*` → `/chat/*` (who may watch a
/// room is who may join it). `None` for other patterns.
pub(super) fn presence_subject_pattern(pattern: &ChannelPattern) -> Option<ChannelPattern> {
    let subject = pattern.as_str().strip_prefix(PRESENCE_PREFIX)?;
    if !subject.starts_with('/') {
        return None;
    }
    ChannelPattern::parse(subject).ok()
}
