//! [`RedisBus`]: the Bayeux bus across nodes.
//!
//! A message a node accepts for broadcast on channel `/a/b` is published
//! once, with one sequence number, on the Redis channels of every pattern
//! that matches it — `wsbus:bus:/a/b`, `wsbus:bus:/a/*`, `wsbus:bus:/a/**`,
//! `wsbus:bus:/**` — and a node subscribes to the Redis channel of each
//! pattern it has local subscribers for. Sharded pub/sub has no pattern
//! subscriptions; this gives wildcards with exact channels, so a message
//! reaches only the nodes that have a subscriber it matches. A node
//! subscribed to several of those channels gets the message on each, and
//! the link delivers it once ([`crate::link`], "Ordering and duplicates");
//! the node's engine then delivers it to each matching client once, as for
//! a local publish.
//!
//! What crosses and what stays is [`wsbus::bus::BusCluster`]'s to say.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wsbus::bayeux::{ChannelName, ClusterPublish, InterestChange};
use wsbus::bus::{Bus, BusCluster};

use crate::envelope::Envelope;
use crate::link::{Receiver, RedisLink};
use crate::presence::{Presence, origin_of};

/// The envelope kind of bus messages.
const KIND_BUS_PUBLISH: u8 = 16;

/// The Redis channel of a Bayeux channel pattern.
pub fn pattern_channel(pattern: &str) -> String {
    format!("wsbus:bus:{pattern}")
}

/// The Redis channels a message on `channel` is published on: its own and
/// those of every wildcard pattern that matches it.
fn channels_for(channel: &ChannelName) -> Arc<[String]> {
    let name = channel.as_str();
    let mut channels = vec![pattern_channel(name)];
    // "/a/b/c": "/a/b/*", then "/a/b/**", "/a/**", "/**".
    let segments: Vec<usize> = name.match_indices('/').map(|(i, _)| i).collect();
    if let Some(&last) = segments.last() {
        channels.push(pattern_channel(&format!("{}/*", &name[..last])));
    }
    for &cut in segments.iter().rev() {
        channels.push(pattern_channel(&format!("{}/**", &name[..cut])));
    }
    channels.into()
}

/// What crosses: the channel and the data (subscribers see nothing else of
/// a publish), and the shared history offset once there is one.
#[derive(Serialize, Deserialize)]
struct Wire {
    channel: String,
    data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

/// The [`BusCluster`] over Redis. Install with [`RedisBus::install`].
#[derive(Debug)]
pub struct RedisBus {
    link: RedisLink,
    presence: Presence,
}

impl RedisBus {
    /// Joins `bus` to the other nodes' buses through `link`. Call it before
    /// the bus serves clients (what was subscribed before is picked up too,
    /// but see [`Bus::cluster_interest`]).
    pub fn install(bus: &Bus, link: RedisLink) {
        let presence = Presence::start(link.clone());
        let cluster = Arc::new(RedisBus {
            link: link.clone(),
            presence: presence.clone(),
        });
        link.register(
            &[KIND_BUS_PUBLISH],
            Arc::new(Inbound {
                bus: bus.downgrade(),
                presence,
            }),
        );
        if bus.set_cluster(cluster).is_err() {
            panic!("a bus joins one cluster");
        }
        for pattern in bus.cluster_interest() {
            link.subscribe(&pattern_channel(pattern.as_str()));
        }
    }
}

impl BusCluster for RedisBus {
    fn publish(&self, message: ClusterPublish) {
        self.presence.outbound(&message);
        let channels = channels_for(&message.channel);
        let wire = Wire {
            channel: message.channel.as_str().to_owned(),
            data: message.data,
            offset: message.offset,
        };
        let payload = serde_json::to_vec(&wire).expect("JSON values serialize");
        self.link.publish(channels, KIND_BUS_PUBLISH, &payload);
    }

    fn interest(&self, change: InterestChange) {
        match change {
            InterestChange::Gained(pattern) => {
                self.link.subscribe(&pattern_channel(pattern.as_str()))
            }
            InterestChange::Lost(pattern) => {
                self.link.unsubscribe(&pattern_channel(pattern.as_str()))
            }
        }
    }
}

/// Hands other nodes' messages to this node's bus.
struct Inbound {
    bus: wsbus::bus::WeakBus,
    presence: Presence,
}

impl Receiver for Inbound {
    fn message(&self, channel: &str, envelope: Envelope) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let wire: Wire = match serde_json::from_slice(&envelope.payload) {
            Ok(wire) => wire,
            Err(error) => {
                tracing::warn!(target: "wsbus::cluster", channel, %error, "ignored a bus message that is not ours");
                return;
            }
        };
        let Ok(name) = ChannelName::parse(&wire.channel) else {
            tracing::warn!(target: "wsbus::cluster", channel, "ignored a bus message on an invalid channel");
            return;
        };
        let message = ClusterPublish {
            channel: name,
            data: wire.data,
            offset: wire.offset,
        };
        if let Err(error) = bus.receive_from_node(origin_of(envelope.origin.node), message) {
            tracing::warn!(target: "wsbus::cluster", channel, %error, "another node's bus message refused");
        }
    }

    fn resubscribed(self: Arc<Self>) {
        self.presence.resync(self.bus.clone());
    }

    fn node_stopped(&self, node: wsbus::NodeId) {
        self.presence.node_stopped(&self.bus, node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_goes_to_its_channel_and_every_wildcard_above_it() {
        let channels = channels_for(&ChannelName::parse("/chat/room/1").unwrap());
        assert_eq!(
            &*channels,
            [
                "wsbus:bus:/chat/room/1",
                "wsbus:bus:/chat/room/*",
                "wsbus:bus:/chat/room/**",
                "wsbus:bus:/chat/**",
                "wsbus:bus:/**",
            ]
        );
        let top = channels_for(&ChannelName::parse("/news").unwrap());
        assert_eq!(&*top, ["wsbus:bus:/news", "wsbus:bus:/*", "wsbus:bus:/**"]);
    }
}
