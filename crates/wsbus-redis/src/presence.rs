//! Presence across nodes: every node lists every node's members.
//!
//! Joins and leaves cross as bus messages on `/presence/<channel>` (every
//! node subscribes to `/presence/**`, so each knows all members, not only
//! those of channels it has watchers for: a watcher's first subscribe reply
//! lists them at once). Each node also keeps its own members in Redis, in
//! the hash `wsbus:presence:<node>` (field `["<channel>","<clientId>"]`,
//! value the user or `null`), which a node reads when it (re)connects —
//! after starting, or after an outage in which it missed joins and leaves —
//! and which it writes again in full then (Redis may have come back empty).
//! When a node stops (its heartbeat expired), every node drops its members
//! and tells its local watchers that they left.

use serde_json::json;
use tokio::sync::mpsc;
use wsbus::NodeId;
use wsbus::bayeux::{ChannelName, ClusterPublish, PRESENCE_PREFIX, PresenceAction};
use wsbus::bus::WeakBus;

use crate::link::RedisLink;

/// Member changes waiting to be written to Redis, at most. Each is written
/// in one round trip; while Redis is away or slow they back up, and beyond
/// this many new ones are dropped (the full rewrite after reconnecting makes
/// up for them) instead of memory growing with the members' churn.
const PRESENCE_WRITES_MAX: usize = 10_000;

/// The hash of node `node`'s presence members.
fn members_key(node: NodeId) -> String {
    format!("wsbus:presence:{}", node.0)
}

/// The number the bus knows node `node` by (its presence origin).
pub(crate) fn origin_of(node: NodeId) -> u64 {
    u64::from(node.0)
}

/// One change of this node's members, in the order the bus made them.
enum Write {
    Join(ChannelName, String, Option<String>),
    Leave(ChannelName, String),
    /// All of them again, after a reconnection.
    Rewrite(Vec<(ChannelName, String, Option<String>)>),
}

/// Keeps this node's members in Redis and other nodes' in the bus.
#[derive(Debug, Clone)]
pub(crate) struct Presence {
    link: RedisLink,
    writes: mpsc::Sender<Write>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Write")
    }
}

impl Presence {
    /// Starts the task that writes this node's members, in order.
    pub(crate) fn start(link: RedisLink) -> Self {
        let (writes, queue) = mpsc::channel(PRESENCE_WRITES_MAX);
        tokio::spawn(write_members(link.clone(), queue));
        link.subscribe(&crate::bus::pattern_channel(&format!(
            "{PRESENCE_PREFIX}/**"
        )));
        Presence { link, writes }
    }

    /// A message this node broadcasts: if it is a join or leave of its own
    /// member, note it in Redis.
    pub(crate) fn outbound(&self, message: &ClusterPublish) {
        if let Some(write) = member_change(message)
            && self.writes.try_send(write).is_err()
        {
            // Redis is away or slow: the reconnection rewrites the hash in
            // full (`resync`), so a change dropped here is not lost for long.
            tracing::debug!(target: "wsbus::cluster", "presence writes backed up; this change waits for the next full rewrite");
        }
    }

    /// After a (re)connection: write this node's members again, and read
    /// every live node's.
    pub(crate) fn resync(&self, bus: WeakBus) {
        let Some(live) = bus.upgrade() else {
            return;
        };
        let rewrite = Write::Rewrite(live.local_members());
        let writes = self.writes.clone();
        // Waits for room: the rewrite is what makes up for dropped changes.
        tokio::spawn(async move {
            let _ = writes.send(rewrite).await;
        });
        let link = self.link.clone();
        tokio::spawn(async move {
            let nodes = match link.node_hashes(members_key).await {
                Ok(nodes) => nodes,
                Err(error) => {
                    tracing::debug!(target: "wsbus::cluster", %error, "presence not read from Redis; read again after reconnecting");
                    return;
                }
            };
            let Some(bus) = bus.upgrade() else {
                return;
            };
            for (node, members) in nodes {
                match members {
                    Some(members) => bus.set_remote_members(
                        origin_of(node),
                        members.into_iter().filter_map(parse_entry),
                    ),
                    None => {
                        bus.forget_node(origin_of(node));
                    }
                }
            }
        });
    }

    /// Node `node` stopped: its members leave here, and its hash goes.
    pub(crate) fn node_stopped(&self, bus: &WeakBus, node: NodeId) {
        if let Some(bus) = bus.upgrade() {
            bus.forget_node(origin_of(node));
        }
        let link = self.link.clone();
        tokio::spawn(async move {
            let _ = link
                .query::<()>(redis::pipe().cmd("DEL").arg(members_key(node)).ignore())
                .await;
        });
    }
}

/// The change a presence message of this node makes to its members.
fn member_change(message: &ClusterPublish) -> Option<Write> {
    let (channel, client, user, action) = message.presence_change()?;
    let client = client.to_owned();
    Some(match action {
        PresenceAction::Join => Write::Join(channel, client, user.map(str::to_owned)),
        PresenceAction::Leave => Write::Leave(channel, client),
    })
}

fn field(channel: &ChannelName, client: &str) -> String {
    json!([channel.as_str(), client]).to_string()
}

/// A hash entry back into (channel, client, user); what is not ours is
/// skipped.
fn parse_entry((field, user): (String, String)) -> Option<(ChannelName, String, Option<String>)> {
    let (channel, client): (String, String) = serde_json::from_str(&field).ok()?;
    let user: Option<String> = serde_json::from_str(&user).ok()?;
    Some((ChannelName::parse(&channel).ok()?, client, user))
}

/// Applies this node's member changes to its hash, in order. A write that
/// fails (Redis down) is not retried: the reconnection rewrites the hash.
async fn write_members(link: RedisLink, mut queue: mpsc::Receiver<Write>) {
    let key = members_key(link.node());
    while let Some(write) = queue.recv().await {
        let mut pipeline = redis::pipe();
        let set = |pipeline: &mut redis::Pipeline,
                   channel: &ChannelName,
                   client: &str,
                   user: Option<String>| {
            pipeline
                .cmd("HSET")
                .arg(&key)
                .arg(field(channel, client))
                .arg(json!(user).to_string())
                .ignore();
        };
        match write {
            Write::Join(channel, client, user) => set(&mut pipeline, &channel, &client, user),
            Write::Leave(channel, client) => {
                pipeline
                    .cmd("HDEL")
                    .arg(&key)
                    .arg(field(&channel, &client))
                    .ignore();
            }
            Write::Rewrite(members) => {
                pipeline.cmd("DEL").arg(&key).ignore();
                for (channel, client, user) in members {
                    set(&mut pipeline, &channel, &client, user);
                }
            }
        }
        if link.query::<()>(&pipeline).await.is_err() {
            tracing::debug!(target: "wsbus::cluster", "presence not stored in Redis; rewritten after reconnecting");
        }
    }
}
