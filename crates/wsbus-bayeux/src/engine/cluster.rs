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
use std::time::Instant;

use serde_json::Value;

use crate::channel::{ChannelName, ChannelPattern, Subscriptions};
use crate::error::BayeuxError;
use crate::id::ClientId;
use crate::message::{Message, Outbound};

use super::{Engine, Event};

/// A message accepted for broadcast on one node, as the subscribers on the
/// other nodes must see it: a client's publish that passed its policy and
/// authorizer, a server-side [`Engine::publish`], a presence join or leave.
/// Never a `/meta` or `/service` message, nor an [`Engine::deliver`] to one
/// client.
///
/// A subscriber receives `{"channel", "data"}` (plus `ext.offset` where
/// history is kept): neither the publisher's `clientId` nor its message
/// `id` reach subscribers on any node, so they are not carried either.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPublish {
    /// The channel published on (a broadcast or `/presence` channel).
    pub channel: ChannelName,
    /// The message's `data`, as published (`null` included).
    pub data: Value,
    /// The message's offset in a history shared by all nodes, delivered as
    /// `ext.offset`. Always `None` for now: each node's history is its own
    /// (its offsets mean nothing on another node), so a message from
    /// another node carries no offset and is not kept for replay there. The
    /// field is the place for the shared history that comes next.
    pub offset: Option<u64>,
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
    /// it), the message is not kept in history (see
    /// [`ClusterPublish::offset`]), and no [`Event::Broadcast`] is emitted:
    /// a message crosses from its origin to each node once, never onwards.
    /// How many sessions it was queued for.
    ///
    /// Refused, as [`publish`](Self::publish) refuses them, on `/meta` and
    /// `/service` channels.
    pub fn receive(&mut self, now: Instant, message: ClusterPublish) -> Result<usize, BayeuxError> {
        let ClusterPublish {
            channel,
            data,
            offset,
        } = message;
        if channel.is_meta() {
            return Err(BayeuxError::META_PUBLISH);
        }
        if channel.is_service() {
            return Err(BayeuxError::SERVICE_BROADCAST);
        }
        let outbound = Outbound::new(&broadcast_message(&channel, data, offset));
        let policy = self.policy_for(&channel);
        let recipients = self.fan_out(now, &channel, &outbound, None, policy);
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
) -> Message {
    let mut message = Message::on(channel.as_str());
    message.data = Some(data);
    if let Some(offset) = offset {
        message.set_ext_field("offset", offset.into());
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
