//! Several nodes, one bus: what the engine tells a cluster (messages it
//! accepted for broadcast, the patterns its subscribers need) and what it
//! takes from one (messages published on other nodes).
//!
//! The engine stays one node's: it knows nothing of other nodes, their
//! transport (Redis, in `wsbus-redis`) or their clients. With
//! [`Engine::set_cluster_events`] on, it emits [`Event::Broadcast`] and
//! [`Event::Interest`] in the order of what caused them, and
//! [`Engine::receive`] delivers another node's message here as a local
//! broadcast would, minus what belongs to the origin node (the publish
//! policy, history, and being forwarded).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::channel::{ChannelName, ChannelPattern, Subscriptions};
use crate::error::BayeuxError;
use crate::id::ClientId;
use crate::message::{Message, Outbound};

use super::{Engine, Event, SharedHistory};

/// A message accepted for broadcast on one node, as the subscribers on the
/// other nodes must see it: a client's publish that passed its policy and
/// authorizer, a server-side [`Engine::publish`], a presence join or leave.
/// Never a `/meta` or `/service` message, nor an [`Engine::deliver`] to one
/// client.
///
/// A subscriber receives `{"channel", "data"}` (plus `ext.offset` and, with
/// shared history, `ext.epoch` where history is kept): neither the
/// publisher's `clientId` nor its message `id` reach subscribers on any
/// node. The publisher's id travels only so that its own node, delivering
/// the message when it comes back from the shared history, can leave the
/// publisher out as the channel's policy says.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPublish {
    /// The channel published on (a broadcast or `/presence` channel).
    pub channel: ChannelName,
    /// The message's `data`, as published (`null` included).
    pub data: Value,
    /// The message's offset in the history shared by all nodes, delivered
    /// as `ext.offset`: set on messages [`Engine::receive`]s from a shared
    /// history, `None` otherwise (an [`Event::Broadcast`] never has one:
    /// the shared history gives it). Without shared history (see
    /// [`Engine::set_shared_history`]) each node's offsets are its own and
    /// never cross.
    pub offset: Option<u64>,
    /// The shared history's epoch `offset` belongs to, delivered as
    /// `ext.epoch` (see [`SharedHistory`]).
    pub epoch: Option<Arc<str>>,
    /// On an [`Event::Broadcast`]: the channel keeps history and shared
    /// history is on, so the cluster must append the message to the shared
    /// history (which gives it its offset) and bring it back to every node,
    /// this one included, through [`Engine::receive`].
    pub shared: bool,
    /// The origin node has delivered it to its own subscribers already
    /// (shared history was down when it was published): on
    /// [`Engine::receive`], keep it in history but deliver it to nobody. The
    /// cluster sets it only when the message comes back to its origin.
    pub delivered: bool,
    /// The publishing session, on its own node (see above); `None` for a
    /// server-side publish.
    pub publisher: Option<ClientId>,
}

impl ClusterPublish {
    /// A message as another node's plain broadcast brings it: no history,
    /// no publisher.
    pub fn plain(channel: ChannelName, data: Value) -> Self {
        ClusterPublish {
            channel,
            data,
            offset: None,
            epoch: None,
            shared: false,
            delivered: false,
            publisher: None,
        }
    }
}

/// A change in the set of patterns this node has subscribers for: what the
/// node must hear from the others.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InterestChange {
    /// The pattern (a channel, `/a/*` or `/a/**`) gained its first local
    /// subscriber.
    Gained(ChannelPattern),
    /// The pattern lost its last local subscriber (an unsubscribe, or the
    /// session ended: a disconnect, an expiry, an overflow).
    Lost(ChannelPattern),
}

impl Engine {
    /// Turns [`Event::Broadcast`] and [`Event::Interest`] on or off (off by
    /// default: a single node is not asked to drain events it has no use
    /// for, and its broadcasts keep their data without a copy). Changes
    /// before it was on are not replayed as events: read the current set
    /// with [`interest`](Self::interest).
    pub fn set_cluster_events(&mut self, on: bool) {
        self.cluster_events = on;
    }

    /// Every pattern with at least one subscriber here, sorted: what a node
    /// (re)subscribes to when it (re)joins the cluster. Read under the same
    /// serialization as the engine's other calls, it is the set that the
    /// [`InterestChange`]s emitted so far add up to.
    pub fn interest(&self) -> Vec<ChannelPattern> {
        let mut patterns: Vec<ChannelPattern> = self
            .subscriptions
            .patterns()
            .map(|(text, _)| ChannelPattern::parse(&text).expect("subscribed patterns are valid"))
            .collect();
        patterns.sort_unstable();
        patterns
    }

    /// Delivers a message published on another node to the subscribers
    /// here, exact and wildcard, once each, as a local broadcast would
    /// (wildcard subscribers are still checked against the channel's
    /// subscribe rule). No publish policy applies (the origin node checked
    /// it), and no [`Event::Broadcast`] is emitted: a message crosses from
    /// its origin to each node once, never onwards. How many sessions it
    /// was queued for.
    ///
    /// With shared history on, a message with an offset and epoch on a
    /// channel that keeps history is kept here for replay with them; one
    /// at or below the channel's newest offset seen here (same epoch) is a
    /// duplicate and is dropped. Without, nothing is kept (this node's
    /// offsets are its own).
    ///
    /// Refused, as [`publish`](Self::publish) refuses them, on `/meta` and
    /// `/service` channels.
    pub fn receive(&mut self, now: Instant, message: ClusterPublish) -> Result<usize, BayeuxError> {
        let ClusterPublish {
            channel,
            data,
            offset,
            epoch,
            shared: _,
            delivered,
            publisher,
        } = message;
        if channel.is_meta() {
            return Err(BayeuxError::META_PUBLISH);
        }
        if channel.is_service() {
            return Err(BayeuxError::SERVICE_BROADCAST);
        }
        let outbound = Outbound::new(&broadcast_message(&channel, data, offset, epoch.as_deref()));
        let policy = self.policy_for(&channel);
        if let (Some(offset), Some(epoch)) = (offset, &epoch)
            && policy.history
            && self.shared_history != SharedHistory::Off
            && !self
                .history
                .record_shared(now, &channel, epoch, offset, outbound.clone())
        {
            return Ok(0);
        }
        if delivered {
            return Ok(0);
        }
        let recipients = self.fan_out(now, &channel, &outbound, publisher.as_ref(), policy);
        self.counters.deliveries += recipients as u64;
        self.counters.received += 1;
        self.process_removals(now);
        Ok(recipients)
    }
}

/// The message subscribers receive for a broadcast of `data` on `channel`.
pub(super) fn broadcast_message(
    channel: &ChannelName,
    data: Value,
    offset: Option<u64>,
    epoch: Option<&str>,
) -> Message {
    let mut message = Message::on(channel.as_str());
    message.data = Some(data);
    if let Some(offset) = offset {
        message.set_ext_field("offset", offset.into());
    }
    if let Some(epoch) = epoch {
        message.set_ext_field("epoch", epoch.into());
    }
    message
}

/// The subscription index as the engine changes it: with cluster events on,
/// a pattern's first subscriber and its last one leaving are reported.
/// Borrows the engine's fields apart, so that a session may be borrowed
/// meanwhile.
pub(super) struct Tracked<'a> {
    pub(super) subscriptions: &'a mut Subscriptions,
    pub(super) events: &'a mut VecDeque<Event>,
    pub(super) report: bool,
}

impl Tracked<'_> {
    /// Records that `client` subscribed to `pattern`.
    pub(super) fn subscribe(&mut self, pattern: &ChannelPattern, client: &ClientId) {
        if self.subscriptions.subscribe(pattern, client)
            && self.report
            && self.subscriptions.subscriber_count(pattern) == 1
        {
            self.events
                .push_back(Event::Interest(InterestChange::Gained(pattern.clone())));
        }
    }

    /// Removes `client`'s subscription to `pattern`.
    pub(super) fn unsubscribe(&mut self, pattern: &ChannelPattern, client: &ClientId) {
        if self.subscriptions.unsubscribe(pattern, client)
            && self.report
            && self.subscriptions.subscriber_count(pattern) == 0
        {
            self.events
                .push_back(Event::Interest(InterestChange::Lost(pattern.clone())));
        }
    }
}
