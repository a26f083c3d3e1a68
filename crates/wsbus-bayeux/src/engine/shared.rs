//! History shared by all nodes of a cluster.
//!
//! On one node, offsets come from the node's own counter (see `history`).
//! In a cluster that would make a client's position meaningless on any
//! other node, so [`Engine::set_shared_history`] hands the offsets of
//! channels with history to a history shared by all nodes (Redis, in
//! `wsbus-redis`'s `history`). The engine stays sans-IO: it says what it
//! needs in events and takes the answers in calls.
//!
//! # What a client sees
//!
//! * Every delivery on a channel with history carries `ext.offset` (per
//!   channel, consecutive from 1) and `ext.epoch` (the name of the shared
//!   history's current life). The same message has the same offset and
//!   epoch on every node.
//! * A publish is appended to the shared history first and delivered by
//!   every node, its own included, when it comes back from there (a round
//!   trip through Redis later than on a single node). The publish reply
//!   does not wait for it.
//! * While the shared history is down (Redis unreachable), a publish is
//!   delivered to this node's subscribers at once, without `ext.offset`,
//!   and queued for the shared history; once Redis is back it gets its
//!   offset there and reaches the other nodes (this node keeps it for
//!   replay, and does not deliver it twice). Messages of other nodes come
//!   late, not lost: the cluster fills each channel's gap from the shared
//!   history when Redis is back (a delay for the subscribers, not a
//!   reconnect).
//! * Replay: `/meta/subscribe` with `ext: {replay: <offset>, epoch:
//!   <epoch>}` on one channel gets the messages after that offset, whichever
//!   node assigned it: from this node's history if it has them all, else
//!   the subscribe waits (its reply comes later, as a delivery, followed by
//!   the replayed messages) while the node fetches the rest from the shared
//!   history ([`Event::HistoryWanted`], [`Engine::history_fetched`]). The
//!   reply's `ext.replay` is `{after, count, complete, epoch}`.
//! * A position from an epoch that no longer exists (Redis came back empty
//!   and lost what it had, or the channel's history expired): nothing is
//!   replayed and the reply says `ext.replay.reset: true` with the current
//!   epoch (`null` if none): the client's position is gone, what it missed
//!   cannot be known. It is never served a replay from another epoch's
//!   offsets. A delivery whose `ext.epoch` differs from the previous one
//!   says the same to a client that stayed subscribed.
//! * A wildcard subscription replays nothing with shared history (offsets
//!   are per channel, one `replay` offset cannot name a position in
//!   several channels): its `ext.replay.complete` is `false`.
//! * The `ack` extension is per session, and a session lives on one node:
//!   a client whose node died handshakes on another (CometD does this on
//!   its own) and subscribes with its last offset and epoch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::channel::ChannelName;
use crate::history::Fetched;
use crate::message::{Message, Outbound};

use super::cluster::broadcast_message;
use super::{Engine, Event, Outcome, RequestContext};

/// Subscribes that may wait for the shared history at once, on one node:
/// bounds what a slow Redis makes the node hold. Beyond it a subscribe is
/// answered at once from this node's history (`complete: false` if that is
/// not enough).
pub const MAX_PARKED_SUBSCRIBES: usize = 10_000;

/// Whether offsets of channels with history come from a history shared by
/// all nodes, and whether it can be reached now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SharedHistory {
    /// One node: offsets are this node's own (the default).
    #[default]
    Off,
    /// Shared, reachable: publishes on channels with history are delivered
    /// when they come back from it.
    Up,
    /// Shared, unreachable: publishes are delivered here at once, without
    /// offset, and go to the shared history later.
    Down,
}

/// What [`Event::HistoryWanted`] asks for: the shared history of `channel`
/// after offset `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Names the waiting subscribe: pass it back to
    /// [`Engine::history_fetched`].
    pub id: u64,
    /// The channel.
    pub channel: ChannelName,
    /// The offset the client has seen (messages after it are wanted).
    pub after: u64,
}

/// The shared history's answer to a [`HistoryRequest`].
#[derive(Clone, Debug, PartialEq)]
pub enum FetchedHistory {
    /// The channel's shared history exists, in `epoch`, its newest offset
    /// `last`; `messages` are those after the requested offset that it
    /// still keeps, in offset order, consecutive, up to `last`. The cluster
    /// must have delivered (through [`Engine::receive`]) those newer than
    /// what it had delivered here before: they are kept for replay only.
    Found {
        /// The shared history's epoch.
        epoch: Arc<str>,
        /// Its newest offset.
        last: u64,
        /// Offsets and data.
        messages: Vec<(u64, Value)>,
    },
    /// The channel has no shared history (nothing published, expired, or a
    /// Redis that came back empty and got nothing since).
    Missing,
    /// The shared history could not be read: the subscribe is answered
    /// from this node's history.
    Failed,
}

/// Subscribes waiting for [`Engine::history_fetched`].
#[derive(Default)]
pub(super) struct Parked {
    next_id: u64,
    waiting: HashMap<u64, ParkedSubscribe>,
}

struct ParkedSubscribe {
    context: RequestContext,
    message: Message,
    after: u64,
    /// Requests not answered yet.
    outstanding: usize,
    fetched: HashMap<ChannelName, FetchedHistory>,
}

impl Parked {
    pub(super) fn is_full(&self) -> bool {
        self.waiting.len() >= MAX_PARKED_SUBSCRIBES
    }
}

impl Engine {
    /// Takes offsets of channels with history from a history shared by all
    /// nodes (`Up`/`Down`, as it is reachable or not), or from this node
    /// (`Off`, the default). Needs [`set_cluster_events`](Self::set_cluster_events)
    /// on. The module docs of the crate (`Several nodes`) say what
    /// clients see.
    pub fn set_shared_history(&mut self, state: SharedHistory) {
        self.shared_history = state;
    }

    /// Whether (and how) history is shared.
    pub fn shared_history(&self) -> SharedHistory {
        self.shared_history
    }

    /// Waits `message` (a `/meta/subscribe` that passed its checks) for the
    /// shared history of `channels` after `after`: emits one
    /// [`Event::HistoryWanted`] each.
    pub(super) fn park_subscribe(
        &mut self,
        context: &RequestContext,
        message: Message,
        after: u64,
        channels: Vec<ChannelName>,
    ) {
        self.parked.next_id += 1;
        let id = self.parked.next_id;
        for channel in &channels {
            self.events.push_back(Event::HistoryWanted(HistoryRequest {
                id,
                channel: channel.clone(),
                after,
            }));
        }
        self.parked.waiting.insert(
            id,
            ParkedSubscribe {
                context: context.clone(),
                message,
                after,
                outstanding: channels.len(),
                fetched: HashMap::new(),
            },
        );
    }

    /// The shared history's answer to [`Event::HistoryWanted`] `id` for
    /// `channel`. What was found is kept here for replay; once every
    /// channel of the subscribe is answered, the subscribe is carried out
    /// and its reply, then the replayed messages, are queued for the client
    /// (delivered as any message is). An unknown `id` is ignored.
    pub fn history_fetched(
        &mut self,
        now: Instant,
        id: u64,
        channel: &ChannelName,
        fetched: FetchedHistory,
    ) {
        let Some(after) = self.parked.waiting.get(&id).map(|parked| parked.after) else {
            return;
        };
        if let FetchedHistory::Found {
            epoch,
            last,
            messages,
        } = &fetched
            && self.policy_for(channel).history
        {
            let complete = messages
                .first()
                .map_or(*last <= after, |(first, _)| *first <= after + 1);
            let kept = messages
                .iter()
                .filter(|(offset, _)| *offset > after)
                .map(|(offset, data)| {
                    let message =
                        broadcast_message(channel, data.clone(), Some(*offset), Some(&**epoch));
                    (*offset, Outbound::new(&message))
                })
                .collect();
            let fetched = Fetched {
                epoch: epoch.clone(),
                after,
                last: *last,
                complete,
                messages: kept,
            };
            self.history.merge_fetched(now, channel, fetched);
        }
        let parked = self.parked.waiting.get_mut(&id).expect("looked up above");
        if parked.fetched.insert(channel.clone(), fetched).is_none() {
            parked.outstanding -= 1;
        }
        if parked.outstanding > 0 {
            return;
        }
        let parked = self.parked.waiting.remove(&id).expect("looked up above");
        let mut out = Outcome {
            replies: Vec::new(),
            held: None,
            session: None,
        };
        self.subscribe(
            now,
            &parked.context,
            parked.message,
            &mut out,
            Some(&parked.fetched),
        );
        // A reply that could not go into a session's queue (an error: the
        // session ended meanwhile, or may no longer subscribe).
        if let Some(client) = out.session
            && !out.replies.is_empty()
            && let Some(session) = self.sessions.get_mut(&client)
        {
            for reply in out.replies {
                session.queue.push(reply);
            }
            if !session.delivers_with_connect() || self.holds.is_held(&client) {
                self.wake(&client);
            }
        }
        self.process_removals(now);
    }
}
