//! [`ClusterHub`]: sockets and groups across nodes.
//!
//! # What applications get
//!
//! * **`send` / `close` to a socket on another node** are published on that
//!   node's channel and answer [`Outcome::Forwarded`]: the node delivers them
//!   if the socket is still open when they arrive. Calls from one task to
//!   one socket keep their order (one node's publishes arrive in order, see
//!   [`crate::link`]). While Redis is down they wait in the link's queue and
//!   go out when it is back.
//! * **`send_to_group`** queues for this node's members at once (encoded
//!   once, as on one node) and publishes the message on the group's channel,
//!   to which exactly the nodes with members subscribe (sharded pub/sub), so
//!   a node without members receives nothing.
//! * **`add_to_group` / `remove_from_group`** of a socket on another node are
//!   forwarded to it.
//! * **`group_size`**: this node's members exactly, plus other nodes' as they
//!   last announced them. A node announces a group's size within
//!   [`SIZE_COALESCE`] of a change (plus Redis's round trip) — a new member
//!   once Redis confirmed that its node receives the group's messages, so
//!   a `send_to_group` made after another node counts a member reaches
//!   it —, keeps its
//!   sizes in a Redis hash that nodes read when they (re)connect, and a
//!   node that stopped (no heartbeat for
//!   [`NODE_TIMEOUT`](crate::link::NODE_TIMEOUT)) has its members dropped
//!   from every group's size.
//!
//! # Redis keys and channels
//!
//! | name | what |
//! |---|---|
//! | `wsbus:node:<n>` (channel) | sends, closes, group changes for node `n`'s sockets; its probes |
//! | `wsbus:group:<name>` (channel) | a group's messages |
//! | `wsbus:groups` (channel) | group size announcements, heard by every node |
//! | `wsbus:nodes` (set) | the nodes that have run |
//! | `wsbus:alive:<n>` (string, TTL) | node `n`'s heartbeat |
//! | `wsbus:groups:<n>` (hash) | node `n`'s group sizes |

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use wsbus::proto::{CloseCode, Message, Utf8Bytes};
use wsbus::{GroupSend, HubEngine, LocalHub, NodeId, Outcome, SocketId};

use crate::envelope::Envelope;
use crate::link::{Receiver, RedisLink, node_channel};

/// Envelope kinds of the hub.
const KIND_SEND: u8 = 1;
const KIND_CLOSE: u8 = 2;
const KIND_GROUP_SEND: u8 = 3;
const KIND_GROUP_ADD: u8 = 4;
const KIND_GROUP_REMOVE: u8 = 5;
const KIND_GROUP_SIZES: u8 = 6;

/// How long group changes are gathered before their sizes are announced: a
/// room that 1,000 sockets join in a burst costs one announcement, not
/// 1,000, and other nodes' `group_size` lags by about this much.
pub const SIZE_COALESCE: Duration = Duration::from_millis(50);

/// The channel of a group's messages.
pub fn group_channel(group: &str) -> String {
    format!("wsbus:group:{group}")
}

const SIZES_CHANNEL: &str = "wsbus:groups";

fn sizes_key(node: NodeId) -> String {
    format!("wsbus:groups:{}", node.0)
}

/// The [`HubEngine`] of a node in a cluster (module docs). Install it with
/// [`wsbus::RuntimeBuilder::hub_engine`]:
///
/// ```no_run
/// # fn doc(config: wsbus::ServerConfig, link: wsbus_redis::link::RedisLink) {
/// let runtime = wsbus::Runtime::builder(config)
///     .node(link.node())
///     .hub_engine(move |local| wsbus_redis::hub::ClusterHub::install(local, link))
///     .build();
/// # }
/// ```
#[derive(Debug)]
pub struct ClusterHub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    local: Arc<LocalHub>,
    link: RedisLink,
    /// Other nodes' members per group, as last announced.
    remote: Mutex<HashMap<Box<str>, HashMap<NodeId, u32>>>,
    /// Groups whose size here changed since the last announcement.
    dirty: Mutex<BTreeSet<Box<str>>>,
    dirty_ready: Arc<tokio::sync::Notify>,
    /// Serialises following a group's membership (see `follow`).
    interest: Mutex<()>,
}

impl ClusterHub {
    /// The engine around `local`, reaching other nodes through `link`; starts
    /// its tasks (announcements, heartbeat) on the current tokio runtime.
    pub fn install(local: Arc<LocalHub>, link: RedisLink) -> Arc<dyn HubEngine> {
        let shared = Arc::new(Shared {
            local: local.clone(),
            link: link.clone(),
            remote: Mutex::default(),
            dirty: Mutex::default(),
            dirty_ready: Arc::default(),
            interest: Mutex::new(()),
        });
        let weak = Arc::downgrade(&shared);
        let observed = local.observe_groups(Arc::new(move |group: &str| {
            if let Some(shared) = weak.upgrade() {
                shared.follow(group);
            }
        }));
        assert!(observed.is_ok(), "one cluster engine per hub");
        link.register(
            &[
                KIND_SEND,
                KIND_CLOSE,
                KIND_GROUP_SEND,
                KIND_GROUP_ADD,
                KIND_GROUP_REMOVE,
                KIND_GROUP_SIZES,
            ],
            shared.clone(),
        );
        link.subscribe(SIZES_CHANNEL);
        tokio::spawn(announce(
            Arc::downgrade(&shared),
            shared.dirty_ready.clone(),
        ));
        Arc::new(ClusterHub { shared })
    }

    fn accepted(published: bool) -> Outcome {
        if published {
            Outcome::Forwarded
        } else {
            Outcome::Dropped
        }
    }

    fn forward(&self, node: NodeId, kind: u8, payload: &[u8]) -> Outcome {
        Self::accepted(
            self.shared
                .link
                .publish_to(&node_channel(node), kind, payload),
        )
    }
}

impl HubEngine for ClusterHub {
    fn send(&self, id: SocketId, message: Message) -> Outcome {
        if id.node() == self.shared.local.node() {
            return self.shared.local.send(id, message);
        }
        let mut payload = BytesMut::new();
        payload.put_u64(id.as_u64());
        put_message(&mut payload, &message);
        self.forward(id.node(), KIND_SEND, &payload)
    }

    fn send_to_group(&self, group: &str, message: Message) -> GroupSend {
        let mut payload = BytesMut::new();
        put_str(&mut payload, group);
        put_message(&mut payload, &message);
        let local = self.shared.local.send_to_group(group, message);
        let forwarded =
            self.shared
                .link
                .publish_to(&group_channel(group), KIND_GROUP_SEND, &payload);
        GroupSend {
            local: local.local,
            forwarded,
        }
    }

    fn add_to_group(&self, group: &str, id: SocketId) -> Outcome {
        if id.node() == self.shared.local.node() {
            return self.shared.local.add_to_group(group, id);
        }
        self.forward(id.node(), KIND_GROUP_ADD, &group_change(group, id))
    }

    fn remove_from_group(&self, group: &str, id: SocketId) -> Outcome {
        if id.node() == self.shared.local.node() {
            return self.shared.local.remove_from_group(group, id);
        }
        self.forward(id.node(), KIND_GROUP_REMOVE, &group_change(group, id))
    }

    fn group_size(&self, group: &str) -> usize {
        let here = self.shared.local.group_size(group);
        let there: u64 = self
            .shared
            .remote
            .lock()
            .expect("remote lock")
            .get(group)
            .map_or(0, |nodes| nodes.values().map(|&n| u64::from(n)).sum());
        here + usize::try_from(there).unwrap_or(usize::MAX)
    }

    fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> Outcome {
        if id.node() == self.shared.local.node() {
            return self.shared.local.close(id, code, reason);
        }
        let mut payload = BytesMut::new();
        payload.put_u64(id.as_u64());
        payload.put_u16(code.0);
        payload.put_slice(reason.as_bytes());
        self.forward(id.node(), KIND_CLOSE, &payload)
    }
}

impl Shared {
    /// A group's membership here changed: subscribe to its channel while it
    /// has members, and announce its size. Under `interest`, the last call
    /// reads the size last, so the subscription ends in the right state
    /// whatever order racing calls take.
    fn follow(&self, group: &str) {
        {
            let _serial = self.interest.lock().expect("interest lock");
            if self.local.group_size(group) > 0 {
                self.link.subscribe(&group_channel(group));
            } else {
                self.link.unsubscribe(&group_channel(group));
            }
        }
        self.dirty.lock().expect("dirty lock").insert(group.into());
        self.dirty_ready.notify_one();
    }

    fn apply_sizes(&self, node: NodeId, sizes: impl IntoIterator<Item = (Box<str>, u32)>) {
        let mut remote = self.remote.lock().expect("remote lock");
        for (group, size) in sizes {
            if size == 0 {
                if let Some(nodes) = remote.get_mut(&group) {
                    nodes.remove(&node);
                    if nodes.is_empty() {
                        remote.remove(&group);
                    }
                }
            } else {
                remote.entry(group).or_default().insert(node, size);
            }
        }
    }

    fn forget_node(&self, node: NodeId) {
        self.remote.lock().expect("remote lock").retain(|_, nodes| {
            nodes.remove(&node);
            !nodes.is_empty()
        });
    }

    fn receive(&self, envelope: Envelope) -> Result<(), &'static str> {
        let mut payload = envelope.payload;
        match envelope.kind {
            KIND_SEND => {
                let id = take_socket(&mut payload)?;
                let message = take_message(payload)?;
                self.local.send(id, message);
            }
            KIND_CLOSE => {
                let id = take_socket(&mut payload)?;
                if payload.remaining() < 2 {
                    return Err("close without code");
                }
                let code = CloseCode(payload.get_u16());
                let reason = std::str::from_utf8(&payload).map_err(|_| "reason not UTF-8")?;
                self.local.close(id, code, reason);
            }
            KIND_GROUP_SEND => {
                let group = take_str(&mut payload)?;
                let message = take_message(payload)?;
                self.local.send_to_group(&group, message);
            }
            KIND_GROUP_ADD | KIND_GROUP_REMOVE => {
                let id = take_socket(&mut payload)?;
                let group = take_str(&mut payload)?;
                if envelope.kind == KIND_GROUP_ADD {
                    self.local.add_to_group(&group, id);
                } else {
                    self.local.remove_from_group(&group, id);
                }
            }
            KIND_GROUP_SIZES => {
                let mut sizes = Vec::new();
                while payload.has_remaining() {
                    let group = take_str(&mut payload)?;
                    if payload.remaining() < 4 {
                        return Err("size missing");
                    }
                    sizes.push((group.into_boxed_str(), payload.get_u32()));
                }
                self.apply_sizes(envelope.origin.node, sizes);
            }
            _ => return Err("unknown hub kind"),
        }
        Ok(())
    }

    /// This node's groups and sizes, announced in full (after a reconnect:
    /// Redis may have come back empty, other nodes may have missed changes).
    fn announce_all(&self) {
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for (group, _) in self.local.groups() {
            dirty.insert(group);
        }
        drop(dirty);
        self.dirty_ready.notify_one();
    }
}

impl Receiver for Shared {
    fn message(&self, channel: &str, envelope: Envelope) {
        if let Err(why) = self.receive(envelope) {
            tracing::warn!(target: "wsbus::cluster", channel, reason = why, "ignored a malformed hub message");
        }
    }

    fn node_stopped(&self, node: NodeId) {
        self.forget_node(node);
        // Its sizes hash goes too (every node may do this; it is idempotent).
        let link = self.link.clone();
        tokio::spawn(async move {
            let _ = link
                .query::<()>(redis::pipe().cmd("DEL").arg(sizes_key(node)).ignore())
                .await;
        });
    }

    fn resubscribed(self: Arc<Self>) {
        self.announce_all();
        // Other nodes' sizes, as they keep them in Redis.
        tokio::spawn(async move { self.reload_sizes().await });
    }
}

impl Shared {
    /// Reads every live node's group sizes from Redis.
    async fn reload_sizes(&self) {
        let Ok(nodes) = self.link.node_hashes(sizes_key).await else {
            return;
        };
        for (node, sizes) in nodes {
            self.forget_node(node);
            if let Some(sizes) = sizes {
                let sizes = sizes
                    .into_iter()
                    .filter_map(|(group, n)| Some((group.into_boxed_str(), n.parse().ok()?)));
                self.apply_sizes(node, sizes);
            }
        }
    }
}

/// Announces the sizes of groups that changed, at most once per
/// [`SIZE_COALESCE`]: on the sizes channel for nodes listening now, and in
/// this node's hash for nodes that connect later.
async fn announce(shared: std::sync::Weak<Shared>, dirty_ready: Arc<tokio::sync::Notify>) {
    loop {
        // Holding only the `Notify` while waiting: a dropped hub ends the
        // task at its next wake-up.
        dirty_ready.notified().await;
        tokio::time::sleep(SIZE_COALESCE).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut groups = std::mem::take(&mut *shared.dirty.lock().expect("dirty lock"));
        // A member is counted on other nodes once its node receives the
        // group's messages: a group whose subscription Redis has not
        // confirmed yet is announced at a later round.
        let unconfirmed: Vec<Box<str>> = groups
            .iter()
            .filter(|group| {
                shared.local.group_size(group) > 0
                    && !shared.link.is_subscribed(&group_channel(group))
            })
            .cloned()
            .collect();
        for group in &unconfirmed {
            groups.remove(group);
        }
        // While the link is down nothing is confirmed: the reconnection
        // announces every group (`resubscribed`), no need to poll until then.
        if !unconfirmed.is_empty() && shared.link.is_up() {
            shared.dirty.lock().expect("dirty lock").extend(unconfirmed);
            dirty_ready.notify_one();
        }
        if groups.is_empty() {
            continue;
        }
        let node = shared.local.node();
        let mut payload = BytesMut::new();
        let mut pipeline = redis::pipe();
        for group in &groups {
            let size = u32::try_from(shared.local.group_size(group)).unwrap_or(u32::MAX);
            put_str(&mut payload, group);
            payload.put_u32(size);
            if size == 0 {
                pipeline
                    .cmd("HDEL")
                    .arg(sizes_key(node))
                    .arg(&**group)
                    .ignore();
            } else {
                pipeline
                    .cmd("HSET")
                    .arg(sizes_key(node))
                    .arg(&**group)
                    .arg(size)
                    .ignore();
            }
        }
        shared
            .link
            .publish_to(SIZES_CHANNEL, KIND_GROUP_SIZES, &payload);
        if shared.link.query::<()>(&pipeline).await.is_err() {
            // Written again in full after the link is back (`resubscribed`).
            tracing::debug!(target: "wsbus::cluster", "group sizes not stored in Redis; will be after reconnecting");
        }
    }
}

fn group_change(group: &str, id: SocketId) -> BytesMut {
    let mut payload = BytesMut::new();
    payload.put_u64(id.as_u64());
    put_str(&mut payload, group);
    payload
}

fn put_str(out: &mut BytesMut, text: &str) {
    let len = u16::try_from(text.len()).expect("group names are under 64 KiB");
    out.put_u16(len);
    out.put_slice(text.as_bytes());
}

fn put_message(out: &mut BytesMut, message: &Message) {
    out.put_u8(match message {
        Message::Text(_) => 1,
        Message::Binary(_) => 2,
    });
    out.put_slice(message.payload());
}

fn take_socket(payload: &mut Bytes) -> Result<SocketId, &'static str> {
    if payload.remaining() < 8 {
        return Err("socket id missing");
    }
    Ok(SocketId::from_u64(payload.get_u64()))
}

fn take_str(payload: &mut Bytes) -> Result<String, &'static str> {
    if payload.remaining() < 2 {
        return Err("name length missing");
    }
    let len = usize::from(payload.get_u16());
    if payload.remaining() < len {
        return Err("name cut short");
    }
    String::from_utf8(payload.split_to(len).to_vec()).map_err(|_| "name not UTF-8")
}

fn take_message(mut payload: Bytes) -> Result<Message, &'static str> {
    if !payload.has_remaining() {
        return Err("message type missing");
    }
    match payload.get_u8() {
        1 => Utf8Bytes::try_from_bytes(payload)
            .map(Message::Text)
            .map_err(|_| "text not UTF-8"),
        2 => Ok(Message::Binary(payload)),
        _ => Err("unknown message type"),
    }
}
