//! One client's session: its subscriptions, its delivery queue (with the
//! `ack` extension's batches). Its held `/meta/connect`, if any, is in the
//! engine's `Holds`.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::channel::ChannelPattern;
use crate::grant::Grant;
use crate::id::ClientId;
use crate::message::Outbound;
use crate::rate::TokenBucket;

/// The transport a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Messages in WebSocket text frames; the server pushes deliveries as
    /// they happen.
    WebSocket,
    /// Messages in HTTP POST bodies; deliveries ride on `/meta/connect`
    /// replies.
    LongPolling,
}

impl Transport {
    /// The Bayeux `connectionType` name.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::LongPolling => "long-polling",
        }
    }

    /// The transport of a Bayeux `connectionType` name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "websocket" => Some(Transport::WebSocket),
            "long-polling" => Some(Transport::LongPolling),
            _ => None,
        }
    }
}

/// Messages waiting for a client.
///
/// Without the `ack` extension a message leaves the queue when it is handed
/// to the transport. With it, CometD's rule: every message joins the open
/// batch; a `/meta/connect` reply carries everything queued and closes the
/// batch (its number goes in the reply's `ext.ack`); messages leave only when
/// the client's next connect acknowledges that batch number. What a lost
/// reply carried is therefore sent again.
pub(crate) struct DeliveryQueue {
    ack: bool,
    /// The batch newly queued messages join (ack mode). Starts at 1: the
    /// CometD client acknowledges 0 before it has received anything.
    open_batch: u64,
    items: VecDeque<(u64, Outbound)>,
}

impl DeliveryQueue {
    pub(crate) fn new(ack: bool) -> Self {
        DeliveryQueue {
            ack,
            open_batch: 1,
            items: VecDeque::new(),
        }
    }

    pub(crate) fn ack_enabled(&self) -> bool {
        self.ack
    }

    pub(crate) fn push(&mut self, message: Outbound) {
        self.items.push_back((self.open_batch, message));
    }

    /// Messages queued, unacknowledged ones included.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Room left under `limit`.
    pub(crate) fn room(&self, limit: usize) -> usize {
        limit.saturating_sub(self.items.len())
    }

    /// Hands every message out (they leave the queue). Only without ack.
    pub(crate) fn drain(&mut self) -> Vec<Outbound> {
        debug_assert!(!self.ack);
        self.items.drain(..).map(|(_, message)| message).collect()
    }

    /// The messages for a `/meta/connect` reply, and in ack mode the number of
    /// the batch the reply closes.
    pub(crate) fn take_for_connect(&mut self) -> (Vec<Outbound>, Option<u64>) {
        if !self.ack {
            return (self.items.drain(..).map(|(_, m)| m).collect(), None);
        }
        let batch = self.open_batch;
        self.open_batch += 1;
        (
            self.items.iter().map(|(_, m)| m.clone()).collect(),
            Some(batch),
        )
    }

    /// The client received every batch up to `batch`.
    pub(crate) fn acknowledge(&mut self, batch: u64) {
        while self.items.front().is_some_and(|(b, _)| *b <= batch) {
            self.items.pop_front();
        }
    }
}

pub(crate) struct Session {
    pub(crate) id: ClientId,
    pub(crate) user: Option<Arc<str>>,
    /// What the session's token grants, if it presented one (its user is
    /// then [`user`](Self::user)).
    pub(crate) grant: Option<Grant>,
    /// Its message rate (when the bus limits it).
    pub(crate) rate: Option<TokenBucket>,
    /// The transport of the latest `/meta/connect` (of the handshake before).
    pub(crate) transport: Transport,
    /// Whether a `/meta/connect` was answered: the first is answered at once.
    pub(crate) connected: bool,
    pub(crate) subscriptions: HashSet<ChannelPattern>,
    pub(crate) queue: DeliveryQueue,
    /// When the session expires; `None` while a connect is held.
    pub(crate) expires_at: Option<Instant>,
    /// Whether a `Wake` event is outstanding (so that a burst of publishes
    /// wakes the runtime once).
    pub(crate) wake_pending: bool,
    /// Already scheduled for removal (its queue overflowed).
    pub(crate) closing: bool,
}

impl Session {
    pub(crate) fn new(
        id: ClientId,
        user: Option<Arc<str>>,
        transport: Transport,
        ack: bool,
    ) -> Self {
        Session {
            id,
            user,
            grant: None,
            rate: None,
            transport,
            connected: false,
            subscriptions: HashSet::new(),
            queue: DeliveryQueue::new(ack),
            expires_at: None,
            wake_pending: false,
            closing: false,
        }
    }

    /// Whether deliveries wait for a `/meta/connect` reply (long-polling, or
    /// any transport with the ack extension, whose batches are delimited by
    /// connect replies) rather than being pushed as they happen.
    pub(crate) fn delivers_with_connect(&self) -> bool {
        self.queue.ack_enabled() || self.transport == Transport::LongPolling
    }

    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the session's token has expired at `now`.
    pub(crate) fn token_expired(&self, now: Instant) -> bool {
        self.grant.as_ref().is_some_and(|g| g.expired(now))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("transport", &self.transport)
            .field("subscriptions", &self.subscriptions.len())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn m(channel: &str) -> Outbound {
        Outbound::new(&Message::on(channel))
    }

    #[test]
    fn without_ack_messages_leave_when_sent() {
        let mut q = DeliveryQueue::new(false);
        q.push(m("/a"));
        assert_eq!(q.take_for_connect(), (vec![m("/a")], None));
        assert!(q.is_empty());
    }

    #[test]
    fn with_ack_unacknowledged_batches_are_sent_again() {
        let mut q = DeliveryQueue::new(true);
        q.acknowledge(0);
        q.push(m("/a"));
        assert_eq!(q.take_for_connect(), (vec![m("/a")], Some(1)));
        // The reply was lost: the client acknowledges 0 again.
        q.push(m("/b"));
        q.acknowledge(0);
        assert_eq!(q.take_for_connect(), (vec![m("/a"), m("/b")], Some(2)));
        q.push(m("/c"));
        q.acknowledge(2);
        assert_eq!(q.take_for_connect(), (vec![m("/c")], Some(3)));
        q.acknowledge(3);
        assert!(q.is_empty());
    }
}
