//! The bus's history shared by all nodes: a Redis stream per channel, an
//! epoch, gap filling after an outage, and replays for clients that come
//! from another node.
//!
//! # In Redis
//!
//! For each channel with history, two keys with the channel as hash tag (so
//! that both live in one slot, as a script on a Redis Cluster needs):
//!
//! * `wsbus:history-meta:{<channel>}`, a hash: `epoch` (random, drawn by the
//!   publishing node when the hash is missing: a Redis that came back
//!   empty, or a channel idle for [`META_TTL`], starts a new epoch),
//!   `offset` (the channel's newest offset), and `seq:<node>:<incarnation>`
//!   (the newest envelope sequence of each publishing node, which makes the
//!   append idempotent when the link writes a pipeline again).
//! * `wsbus:history:{<channel>}`, a stream: entry id `<offset>-0`, field `m`
//!   the message as published (JSON with `offset` and `epoch`), trimmed to
//!   about the bus's `history.per_channel` or [`STREAM_MIN_LEN`], whichever
//!   is more (`MAXLEN ~`), and expiring after the history window without a
//!   publish.
//!
//! One Lua script ([`APPEND`]) does it all, atomically: the epoch if
//! missing, `offset = HINCRBY`, `XADD`, and `SPUBLISH` of the message (in
//! the link's envelope, with its offset and epoch) on the channel's bus
//! channels (`bus.rs`: its own and every wildcard above it). No node can see
//! an offset another node has not got in the same order. The wildcard
//! channels hash to other slots: the script is valid on one Redis (what
//! wsbus supports), not on a Redis Cluster, where the `SPUBLISH`es would
//! have to leave the script. The script runs through the link's publish
//! queue ([`RedisLink::publish_command`]), in order with the node's other
//! publishes, and waits there while Redis is down. It is sent with `EVAL`
//! every time (a few hundred bytes; Redis caches the compiled script by its
//! hash), so a Redis that restarted empty needs no reloading.
//!
//! # On each node
//!
//! Every node, the publishing one included, takes a history message when it
//! comes back on its subscription ([`RedisLink::register_with_own`]), and
//! hands each channel's messages to its bus in offset order, each once
//! ([`SharedHistory`]): one at or below the last it handed over is a
//! duplicate; one beyond the next means a gap, and the node reads the
//! missing ones from the stream (`XRANGE`) — once per channel, for all its
//! clients — while later arrivals wait. After the subscriber reconnects
//! ([`Receiver::resubscribed`]), every channel it follows is filled that way:
//! clients see a delay, not a reconnect. A message of a new epoch resets
//! the channel (everything of the new epoch is new to the node: it is read
//! from its start). What was published on the node while Redis was down
//! was delivered there at once (`wsbus_bayeux`, "shared"), and is not
//! delivered there again when it comes back with its offset.
//!
//! # What is lost, and what clients are told
//!
//! Nothing accepted is lost across an outage that Redis survives (paused,
//! restarted with its data, a network cut): the queued appends run when it
//! is back, and each node fills its gaps. A Redis that comes back *empty*
//! lost its streams: a node had already delivered what reached it before;
//! what it had not received is gone; the queued appends start a new epoch,
//! and reach every node. A client that asks to replay from a position of
//! the old epoch is told `ext.replay.reset: true`, never replayed from
//! another epoch's offsets.
//!
//! A node that starts following a channel (its first subscriber) knows
//! nothing before the first message it receives, and learns of messages
//! published while its subscription was being made only when the next
//! one reveals the gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wsbus::bayeux::ChannelPattern;
use wsbus::bayeux::{ChannelName, ClusterPublish, FetchedHistory, HistoryRequest};
use wsbus::bus::WeakBus;

use crate::envelope::{HEADER_LEN, Origin};
use crate::link::RedisLink;

/// How long a channel's meta hash (epoch, offset) outlives its last
/// publish: a day, far longer than any history window, so that offsets of
/// a quiet channel go on; after it a new epoch starts and clients' old
/// positions are reported gone.
pub const META_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Messages of one channel that wait on a node while it fills a gap:
/// enough for a busy channel during a slow `XRANGE`. Beyond, newer ones are
/// not kept; the next message reveals the gap and they are read from the
/// stream.
pub const MAX_WAITING_PER_CHANNEL: usize = 10_000;

/// Channels whose position a node tracks. Beyond, the position of a
/// channel not being filled is forgotten (its next message restarts it,
/// without a fill): bounds a node that saw a great many channels.
pub const MAX_TRACKED_CHANNELS: usize = 100_000;

/// Messages a channel's stream keeps at least (about: `MAXLEN ~`), whatever
/// the bus's `history.per_channel` (what each node keeps): the stream is
/// what fills a node's gap after an outage, so it must hold an outage's
/// worth of a busy channel (10 s at 1,000 messages a second) until the
/// history window expires it.
pub const STREAM_MIN_LEN: usize = 10_000;

/// Entries read per `XRANGE`: a stream's length, so that one read fills a
/// gap; bounds one reply.
const FILL_COUNT: usize = STREAM_MIN_LEN;

/// The script that appends a message to a channel's history and publishes
/// it (module docs). KEYS: stream, meta. ARGV: envelope header, the JSON
/// message without its opening brace, a fresh epoch, max length, stream
/// TTL (ms), meta TTL (ms), origin, sequence, then the channels.
pub const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
end
local seen = tonumber(redis.call('HGET', KEYS[2], 'seq:' .. ARGV[7]) or '0')
local sequence = tonumber(ARGV[8])
if sequence <= seen then
  return 0
end
redis.call('HSET', KEYS[2], 'seq:' .. ARGV[7], ARGV[8])
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local body = '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '",' .. ARGV[2]
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], offset .. '-0', 'm', body)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local message = ARGV[1] .. body
for i = 9, #ARGV do
  redis.call('SPUBLISH', ARGV[i], message)
end
return offset
"#;

/// The stream of `channel`.
pub fn stream_key(channel: &str) -> String {
    format!("wsbus:history:{{{channel}}}")
}

/// The meta hash of `channel`.
pub fn meta_key(channel: &str) -> String {
    format!("wsbus:history-meta:{{{channel}}}")
}

/// A history message as published and stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Wire {
    /// Set by the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u64>,
    /// Set by the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<String>,
    pub(crate) channel: String,
    pub(crate) data: Value,
    /// The publishing session, for its own node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) publisher: Option<String>,
    /// The origin (`node:incarnation`) that delivered it already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) delivered_by: Option<String>,
}

/// How `origin` is named in the meta hash and in `delivered_by`.
fn origin_key(origin: Origin) -> String {
    format!("{}:{}", origin.node.0, origin.incarnation)
}

/// The `EVAL` of [`APPEND`] for `message`, published on `channels`.
pub(crate) fn append_command(
    envelope: &Bytes,
    message: &ClusterPublish,
    channels: &[String],
    origin: Origin,
    config: &wsbus::bayeux::HistoryConfig,
) -> redis::Cmd {
    let wire = Wire {
        offset: None,
        epoch: None,
        channel: message.channel.as_str().to_owned(),
        data: message.data.clone(),
        publisher: message.publisher.as_ref().map(|id| id.as_str().to_owned()),
        delivered_by: message.delivered.then(|| origin_key(origin)),
    };
    let json = serde_json::to_vec(&wire).expect("JSON values serialize");
    let sequence = u64::from_be_bytes(envelope[8..16].try_into().expect("8 bytes"));
    let channel = message.channel.as_str();
    let mut command = redis::cmd("EVAL");
    command
        .arg(APPEND)
        .arg(2)
        .arg(stream_key(channel))
        .arg(meta_key(channel))
        .arg(&envelope[..HEADER_LEN])
        .arg(&json[1..])
        .arg(new_epoch())
        .arg(config.per_channel.max(STREAM_MIN_LEN))
        .arg(config.window.as_millis().max(1) as u64)
        .arg(META_TTL.as_millis() as u64)
        .arg(origin_key(origin))
        .arg(sequence);
    for channel in channels {
        command.arg(channel);
    }
    command
}

/// A fresh epoch: 64 random bits, in hex.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One channel's position on this node.
struct Position {
    epoch: Arc<str>,
    /// The newest offset handed to the bus.
    last: u64,
    /// A read of the stream is under way; arrivals wait in `waiting`.
    filling: bool,
    waiting: Vec<Wire>,
}

/// What the stream said.
struct Read {
    /// `None`: the channel has no history (no meta hash).
    epoch: Option<Arc<str>>,
    /// The channel's newest offset.
    last: u64,
    entries: Vec<Wire>,
}

/// The node's side of the shared history: hands each channel's history
/// messages to the bus in offset order, once, filling gaps from the stream
/// (module docs).
pub(crate) struct SharedHistory {
    link: RedisLink,
    bus: WeakBus,
    origin: String,
    positions: Mutex<HashMap<String, Position>>,
}

impl SharedHistory {
    pub(crate) fn new(link: RedisLink, bus: WeakBus) -> Arc<Self> {
        Arc::new(SharedHistory {
            origin: origin_key(link.origin()),
            link,
            bus,
            positions: Mutex::default(),
        })
    }

    /// A history message from the subscription.
    pub(crate) fn arrived(self: &Arc<Self>, wire: Wire) {
        let mut positions = self.positions.lock().expect("positions lock");
        self.accept(&mut positions, wire);
    }

    /// Hands `wire` to the bus if it is the next of its channel, drops it if
    /// seen, or waits it and starts a fill. Under the positions lock, so
    /// that each channel's messages reach the bus in order.
    fn accept(self: &Arc<Self>, positions: &mut HashMap<String, Position>, wire: Wire) {
        let (Some(offset), Some(epoch)) =
            (wire.offset, wire.epoch.as_deref().map(Arc::<str>::from))
        else {
            return;
        };
        let channel = wire.channel.clone();
        if !positions.contains_key(&wire.channel) && positions.len() >= MAX_TRACKED_CHANNELS {
            positions.retain(|_, position| position.filling);
        }
        let position = positions
            .entry(wire.channel.clone())
            .or_insert_with(|| Position {
                epoch: epoch.clone(),
                // Nothing known before the first message.
                last: offset - 1,
                filling: false,
                waiting: Vec::new(),
            });
        if position.filling {
            if position.waiting.len() < MAX_WAITING_PER_CHANNEL {
                position.waiting.push(wire);
            }
            return;
        }
        if position.epoch != epoch {
            // A new epoch: all of it is new here.
            position.epoch = epoch;
            position.last = 0;
        }
        if offset <= position.last {
            return;
        }
        if offset == position.last + 1 {
            position.last = offset;
            self.deliver(wire);
            return;
        }
        position.filling = true;
        position.waiting.push(wire);
        self.spawn_fill(channel, position.epoch.clone(), position.last);
    }

    /// Hands one message to the bus.
    fn deliver(&self, wire: Wire) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let Ok(channel) = ChannelName::parse(&wire.channel) else {
            return;
        };
        let delivered = wire.delivered_by.as_deref() == Some(self.origin.as_str());
        let publisher = wire
            .publisher
            .as_deref()
            .and_then(wsbus::bayeux::ClientId::parse);
        let message = ClusterPublish {
            channel,
            data: wire.data,
            offset: wire.offset,
            epoch: wire.epoch.map(Arc::from),
            shared: false,
            delivered,
            publisher,
        };
        if let Err(error) = bus.receive_from_cluster(message) {
            tracing::warn!(target: "wsbus::cluster", %error, "a history message refused");
        }
    }

    /// The node lost its last subscriber of `pattern`: forget the position
    /// of every channel it matched that none of the node's `others`
    /// patterns matches (fills under way finish first). Only memory: a
    /// position that outlives its subscribers, or one made by a message
    /// still in flight as the node unsubscribed, is forgotten again when
    /// the interest comes back ([`interest_gained`](Self::interest_gained)).
    pub(crate) fn interest_lost(
        self: &Arc<Self>,
        pattern: ChannelPattern,
        others: Vec<ChannelPattern>,
    ) {
        self.forget(pattern, others, true);
    }

    /// The node gained its first subscriber of `pattern`: forget the
    /// position of every channel it matches that none of the node's
    /// `others` patterns matches, fills included. Such a position was
    /// taken while nobody here followed the channel; kept, the next
    /// message would look like a gap after it, and the fill would hand
    /// the new subscriber what was published before it subscribed. Called
    /// before the node subscribes to `pattern` in Redis.
    pub(crate) fn interest_gained(
        self: &Arc<Self>,
        pattern: ChannelPattern,
        others: Vec<ChannelPattern>,
    ) {
        self.forget(pattern, others, false);
    }

    /// At once if the positions lock is free; on a task of its own if not:
    /// the change may come from a delivery this history makes under that
    /// lock (a subscriber overflowing, a handler subscribing).
    fn forget(
        self: &Arc<Self>,
        pattern: ChannelPattern,
        others: Vec<ChannelPattern>,
        keep_filling: bool,
    ) {
        let retain = move |positions: &mut HashMap<String, Position>| {
            positions.retain(|channel, position| {
                let Ok(name) = ChannelName::parse(channel) else {
                    return false;
                };
                keep_filling && position.filling
                    || !pattern.matches(&name)
                    || others.iter().any(|other| other.matches(&name))
            });
        };
        match self.positions.try_lock() {
            Ok(mut positions) => retain(&mut positions),
            Err(std::sync::TryLockError::WouldBlock) => {
                let this = self.clone();
                tokio::spawn(async move {
                    retain(&mut this.positions.lock().expect("positions lock"));
                });
            }
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("positions lock poisoned"),
        }
    }

    /// After the subscriber came back: fill every channel followed here.
    pub(crate) fn resubscribed(self: &Arc<Self>) {
        let mut positions = self.positions.lock().expect("positions lock");
        for (channel, position) in positions.iter_mut() {
            if !position.filling {
                position.filling = true;
                self.spawn_fill(channel.clone(), position.epoch.clone(), position.last);
            }
        }
    }

    fn spawn_fill(self: &Arc<Self>, channel: String, epoch: Arc<str>, after: u64) {
        let this = self.clone();
        tokio::spawn(async move {
            let read = this.read(&channel, &epoch, after).await;
            let mut positions = this.positions.lock().expect("positions lock");
            let Some(position) = positions.get_mut(&channel) else {
                return;
            };
            position.filling = false;
            let waiting = std::mem::take(&mut position.waiting);
            match read {
                Ok(read) => {
                    if let Some(current) = read.epoch {
                        if current != position.epoch {
                            position.epoch = current;
                            position.last = 0;
                        }
                        for entry in read.entries {
                            let offset = entry.offset.unwrap_or(0);
                            if offset > position.last {
                                // A gap the stream no longer holds is lost.
                                position.last = offset;
                                this.deliver(entry);
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::info!(target: "wsbus::cluster", channel, %error, "reading a channel's history failed; filled when Redis is back");
                }
            }
            for wire in waiting {
                this.accept(&mut positions, wire);
            }
        });
    }

    /// Reads `channel`'s history after `after` in `epoch` (all of it if the
    /// epoch changed).
    async fn read(
        &self,
        channel: &str,
        epoch: &str,
        after: u64,
    ) -> Result<Read, redis::RedisError> {
        let read = self.read_after(channel, after).await?;
        match &read.epoch {
            Some(current) if &**current != epoch && after > 0 => self.read_after(channel, 0).await,
            _ => Ok(read),
        }
    }

    /// The meta hash and the stream after `after`, at one moment.
    async fn read_after(&self, channel: &str, after: u64) -> Result<Read, redis::RedisError> {
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("HMGET")
            .arg(meta_key(channel))
            .arg("epoch")
            .arg("offset")
            .cmd("XRANGE")
            .arg(stream_key(channel))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(FILL_COUNT);
        type Entries = Vec<(String, HashMap<String, Vec<u8>>)>;
        let ((epoch, last), entries): ((Option<String>, Option<u64>), Entries) =
            self.link.query(&pipeline).await?;
        let entries = entries
            .into_iter()
            .filter_map(|(_, fields)| serde_json::from_slice::<Wire>(fields.get("m")?).ok())
            .filter(|wire| wire.offset.is_some_and(|offset| offset > after))
            .collect();
        Ok(Read {
            epoch: epoch.map(Arc::from),
            last: last.unwrap_or(0),
            entries,
        })
    }

    /// A replay waits: read the stream for it, hand what this node had not
    /// received to the bus first, then answer.
    pub(crate) fn fetch(self: &Arc<Self>, request: HistoryRequest) {
        let this = self.clone();
        tokio::spawn(async move {
            let channel = request.channel.as_str().to_owned();
            let read = this.read_after(&channel, request.after).await;
            let Some(bus) = this.bus.upgrade() else {
                return;
            };
            let fetched = match read {
                Err(error) => {
                    tracing::info!(target: "wsbus::cluster", channel, %error, "reading a channel's history for a replay failed");
                    FetchedHistory::Failed
                }
                Ok(Read { epoch: None, .. }) => FetchedHistory::Missing,
                Ok(Read {
                    epoch: Some(epoch),
                    last,
                    entries,
                }) => {
                    let mut positions = this.positions.lock().expect("positions lock");
                    let known = this.take_news(&mut positions, &channel, &epoch, last, &entries);
                    drop(positions);
                    let messages = entries
                        .into_iter()
                        .filter(|wire| wire.offset.is_some_and(|offset| offset <= known))
                        .map(|wire| (wire.offset.expect("filtered"), wire.data))
                        .collect();
                    FetchedHistory::Found {
                        epoch,
                        last: known,
                        messages,
                    }
                }
            };
            bus.history_fetched(request.id, &request.channel, fetched);
        });
    }

    /// Before a replay's fetch is kept for replay only: what of it this node
    /// had not received goes to the bus now (unless a fill is under way,
    /// which will). The offset up to which the fetch may be kept.
    fn take_news(
        self: &Arc<Self>,
        positions: &mut HashMap<String, Position>,
        channel: &str,
        epoch: &Arc<str>,
        last: u64,
        entries: &[Wire],
    ) -> u64 {
        let Some(position) = positions.get_mut(channel) else {
            if positions.len() < MAX_TRACKED_CHANNELS {
                positions.insert(
                    channel.to_owned(),
                    Position {
                        epoch: epoch.clone(),
                        last,
                        filling: false,
                        waiting: Vec::new(),
                    },
                );
            }
            return last;
        };
        if position.filling {
            return if position.epoch == *epoch {
                position.last
            } else {
                0
            };
        }
        if position.epoch != *epoch {
            position.epoch = epoch.clone();
            position.last = 0;
        }
        for entry in entries {
            let offset = entry.offset.unwrap_or(0);
            if offset > position.last {
                position.last = offset;
                self.deliver(entry.clone());
            }
        }
        position.last
    }
}
