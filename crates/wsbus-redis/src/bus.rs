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
//!
//! A publish on a channel with history ([`ClusterPublish::shared`]) goes
//! instead through the shared history ([`crate::history`]): a script
//! appends it to the channel's stream and publishes it, with its offset and
//! epoch, on the same Redis channels, as envelope kind
//! [`KIND_BUS_HISTORY`], which every node receives, the publishing one
//! included. The bus's shared history follows the link's state: up while
//! the link is up (see `wsbus_bayeux`, "shared").

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wsbus::bayeux::{ChannelName, ChannelPattern, ClusterPublish, InterestChange};
use wsbus::bus::{Bus, BusCluster};

use wsbus::bayeux::{HistoryConfig, HistoryRequest, SharedHistory as SharedState};

use crate::envelope::Envelope;
use crate::history::{SharedHistory, Wire as HistoryWire, append_command};
use crate::link::{LinkState, Receiver, RedisLink};
use crate::presence::{Presence, origin_of};

/// The envelope kind of bus messages.
const KIND_BUS_PUBLISH: u8 = 16;

/// The envelope kind of bus messages with a shared history offset (the
/// bus's range is 16–31).
pub const KIND_BUS_HISTORY: u8 = 17;

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
pub struct RedisBus {
    link: RedisLink,
    history: Arc<SharedHistory>,
    config: HistoryConfig,
    presence: Presence,
    /// The patterns this node has subscribers for, as the interest changes
    /// said (the bus's own set is behind its lock).
    patterns: std::sync::Mutex<std::collections::HashSet<ChannelPattern>>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Joins `bus` to the other nodes' buses through `link`. Call it before
    /// the bus serves clients (what was subscribed before is picked up too,
    /// but see [`Bus::cluster_interest`]).
    pub fn install(bus: &Bus, link: RedisLink) {
        let history = SharedHistory::new(link.clone(), bus.downgrade());
        let presence = Presence::start(link.clone());
        let cluster = Arc::new(RedisBus {
            link: link.clone(),
            history: history.clone(),
            config: bus.history_config(),
            presence: presence.clone(),
            patterns: Default::default(),
        });
        let inbound = Arc::new(Inbound {
            bus: bus.downgrade(),
            history,
            presence,
        });
        link.register(&[KIND_BUS_PUBLISH], inbound.clone());
        link.register_with_own(&[KIND_BUS_HISTORY], inbound);
        if bus.set_cluster(cluster.clone()).is_err() {
            panic!("a bus joins one cluster");
        }
        follow_link(bus, &link);
        let interest = bus.cluster_interest();
        for pattern in &interest {
            link.subscribe(&pattern_channel(pattern.as_str()));
        }
        cluster
            .patterns
            .lock()
            .expect("patterns lock")
            .extend(interest);
    }
}

/// Keeps the bus's shared history up while the link is, for as long as
/// the bus lives.
fn follow_link(bus: &Bus, link: &RedisLink) {
    let mut state = link.state();
    let weak = bus.downgrade();
    let set = move |state: LinkState| {
        let Some(bus) = weak.upgrade() else {
            return false;
        };
        bus.set_shared_history(match state {
            LinkState::Up => SharedState::Up,
            LinkState::Down => SharedState::Down,
        });
        true
    };
    set(*state.borrow_and_update());
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            if !set(*state.borrow_and_update()) {
                return;
            }
        }
    });
}

impl RedisBus {
    /// Record the change of `pattern` (`gained` or lost) and return the
    /// node's other patterns.
    fn other_patterns(&self, pattern: &ChannelPattern, gained: bool) -> Vec<ChannelPattern> {
        let mut patterns = self.patterns.lock().expect("patterns lock");
        if gained {
            patterns.insert(pattern.clone());
        } else {
            patterns.remove(pattern);
        }
        patterns.iter().filter(|p| *p != pattern).cloned().collect()
    }
}

impl BusCluster for RedisBus {
    fn publish(&self, message: ClusterPublish) {
        self.presence.outbound(&message);
        let channels = channels_for(&message.channel);
        if message.shared {
            let origin = self.link.origin();
            let config = self.config;
            self.link
                .publish_command(KIND_BUS_HISTORY, b"", move |envelope| {
                    append_command(&envelope, &message, &channels, origin, &config)
                });
            return;
        }
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
                let others = self.other_patterns(&pattern, true);
                // Before subscribing: no message of the new subscription
                // can meet a position from before it.
                self.history.interest_gained(pattern.clone(), others);
                self.link.subscribe(&pattern_channel(pattern.as_str()))
            }
            InterestChange::Lost(pattern) => {
                let others = self.other_patterns(&pattern, false);
                self.link.unsubscribe(&pattern_channel(pattern.as_str()));
                self.history.interest_lost(pattern, others);
            }
        }
    }

    fn fetch_history(&self, request: HistoryRequest) {
        self.history.fetch(request);
    }

    fn settled(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(
            self.link
                .subscriptions_confirmed(crate::link::COMMAND_TIMEOUT),
        )
    }
}

/// Hands other nodes' messages to this node's bus.
struct Inbound {
    bus: wsbus::bus::WeakBus,
    history: Arc<SharedHistory>,
    presence: Presence,
}

impl Receiver for Inbound {
    fn message(&self, channel: &str, envelope: Envelope) {
        if envelope.kind == KIND_BUS_HISTORY {
            match serde_json::from_slice::<HistoryWire>(&envelope.payload) {
                Ok(wire) => self.history.arrived(wire),
                Err(error) => {
                    tracing::warn!(target: "wsbus::cluster", channel, %error, "ignored a history message that is not ours")
                }
            }
            return;
        }
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
        let mut message = ClusterPublish::plain(name, wire.data);
        message.offset = wire.offset;
        if let Err(error) = bus.receive_from_node(origin_of(envelope.origin.node), message) {
            tracing::warn!(target: "wsbus::cluster", channel, %error, "another node's bus message refused");
        }
    }

    fn resubscribed(self: Arc<Self>) {
        self.history.resubscribed();
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
