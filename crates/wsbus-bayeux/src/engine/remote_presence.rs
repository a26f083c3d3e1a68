//! Presence across nodes: the members that other nodes announced.
//!
//! A node announces its members' joins and leaves on `/presence/<channel>`
//! ([`Event::Broadcast`](super::Event::Broadcast)); a node that receives one
//! from another node passes it to [`Engine::note_remote_presence`] before
//! [`Engine::receive`], and the member counts in [`Engine::presence`] and in
//! the member list of a subscribe reply from then on. Each remote member is
//! tagged with its [`Origin`], an opaque number the driver gives its nodes:
//! when a node stops, [`Engine::forget_origin`] takes its members out and
//! tells the local watchers of their channels that they left. A node that
//! (re)joins learns the others' members from the cluster's store through
//! [`Engine::set_remote_members`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::presence::{PRESENCE_PREFIX, PresenceAction, presence_tracked};
use super::{ClusterPublish, Engine, Member};
use crate::channel::{ChannelName, ChannelPattern};
use crate::id::ClientId;

/// Which node a remote member is on, as the driver numbers its nodes.
pub type Origin = u64;

/// Members announced by other nodes, by channel.
#[derive(Debug, Default)]
pub(super) struct RemotePresence {
    channels: HashMap<ChannelName, HashMap<ClientId, RemoteMember>>,
}

#[derive(Debug, Clone)]
struct RemoteMember {
    user: Option<Arc<str>>,
    origin: Origin,
}

impl RemotePresence {
    /// The members of `channel` on other nodes.
    pub(super) fn members(&self, channel: &ChannelName) -> impl Iterator<Item = Member> + '_ {
        self.channels
            .get(channel)
            .into_iter()
            .flat_map(|members| members.iter())
            .map(|(client_id, member)| Member {
                client_id: client_id.clone(),
                user: member.user.clone(),
            })
    }

    fn remove(&mut self, channel: &ChannelName, client: &str) -> Option<RemoteMember> {
        let members = self.channels.get_mut(channel)?;
        let removed = members.remove(client);
        if members.is_empty() {
            self.channels.remove(channel);
        }
        removed
    }
}

impl ClusterPublish {
    /// For a join or leave on a `/presence` channel (what a node broadcasts
    /// for its members): the subject channel, the member's client id, its
    /// user, and the action. `None` for any other message.
    pub fn presence_change(&self) -> Option<(ChannelName, &str, Option<&str>, PresenceAction)> {
        self.channel
            .as_str()
            .strip_prefix(PRESENCE_PREFIX)
            .filter(|rest| rest.starts_with('/'))?;
        let data = &self.data;
        let action = match data.get("action")?.as_str()? {
            "join" => PresenceAction::Join,
            "leave" => PresenceAction::Leave,
            _ => return None,
        };
        let channel = ChannelName::parse(data.get("channel")?.as_str()?).ok()?;
        let client = data.get("clientId")?.as_str()?;
        let user = data.get("user").and_then(Value::as_str);
        Some((channel, client, user, action))
    }
}

impl Engine {
    /// Records the join or leave that `message` (from node `origin`)
    /// announces, if it is a presence message; call it before
    /// [`receive`](Self::receive) delivers the message. Returns whether it
    /// was one.
    pub fn note_remote_presence(&mut self, origin: Origin, message: &ClusterPublish) -> bool {
        let Some((channel, client, user, action)) = message.presence_change() else {
            return false;
        };
        match action {
            PresenceAction::Join => {
                let member = RemoteMember {
                    user: user.map(Arc::from),
                    origin,
                };
                self.remote_presence
                    .channels
                    .entry(channel)
                    .or_default()
                    .insert(ClientId::from_wire(client), member);
            }
            PresenceAction::Leave => {
                self.remote_presence.remove(&channel, client);
            }
        }
        true
    }

    /// Replaces what is known of node `origin`'s members with `members`
    /// (channel, client, user), as the cluster's store holds them; no
    /// messages are delivered (watchers that subscribe from now on see them
    /// in their snapshot).
    pub fn set_remote_members(
        &mut self,
        origin: Origin,
        members: impl IntoIterator<Item = (ChannelName, String, Option<String>)>,
    ) {
        self.drop_origin(origin);
        for (channel, client, user) in members {
            self.remote_presence
                .channels
                .entry(channel)
                .or_default()
                .insert(
                    ClientId::from_wire(&client),
                    RemoteMember {
                        user: user.map(Arc::from),
                        origin,
                    },
                );
        }
    }

    /// Node `origin` stopped: its members leave, and local watchers of each
    /// channel's presence are told (here only: every node does this
    /// itself). How many members left.
    pub fn forget_origin(&mut self, now: Instant, origin: Origin) -> usize {
        let gone = self.drop_origin(origin);
        for (channel, client, user) in &gone {
            let presence_channel = ChannelName::from_trusted(format!("{PRESENCE_PREFIX}{channel}"));
            let data = json!({
                "action": "leave",
                "channel": channel.as_str(),
                "clientId": client.as_str(),
                "user": user.as_deref(),
            });
            let _ = self.receive(now, ClusterPublish::plain(presence_channel, data));
        }
        gone.len()
    }

    fn drop_origin(&mut self, origin: Origin) -> Vec<(ChannelName, ClientId, Option<Arc<str>>)> {
        let mut gone = Vec::new();
        self.remote_presence.channels.retain(|channel, members| {
            members.retain(|client, member| {
                if member.origin == origin {
                    gone.push((channel.clone(), client.clone(), member.user.clone()));
                    false
                } else {
                    true
                }
            });
            !members.is_empty()
        });
        gone
    }

    /// Every member of this node's presence: (channel, client, user), for
    /// the cluster's store.
    pub fn local_members(&self) -> Vec<(ChannelName, ClientId, Option<Arc<str>>)> {
        let mut members = Vec::new();
        for (pattern, _) in self.subscriptions.patterns() {
            // Exact broadcast channels only: wildcard subscribers observe,
            // presence channels have no presence of their own.
            let Some(channel) = ChannelPattern::parse(&pattern)
                .ok()
                .as_ref()
                .and_then(presence_tracked)
            else {
                continue;
            };
            for member in self.local_presence(&channel) {
                members.push((channel.clone(), member.client_id, member.user));
            }
        }
        members
    }
}
