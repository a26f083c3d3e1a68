//! Publishing and delivery: client publishes, the server-side `publish` and
//! `deliver`, the fan-out to subscribers, and per-client queues.

use std::collections::VecDeque;
use std::time::Instant;

use serde_json::Value;

use crate::channel::{ChannelName, ChannelPattern, MatchKind};
use crate::config::ChannelPolicy;
use crate::error::BayeuxError;
use crate::id::{ClientId, IdMap, IdSet};
use crate::message::{Message, Outbound, error_reply};
use crate::session::Session;

use super::cluster::broadcast_message;
use super::holds::Holds;
use super::presence::{is_presence_channel, presence_subject};
use super::{
    CloseReason, ClusterPublish, Engine, Event, Outcome, RequestContext, ServiceRequest,
    SessionInfo, SharedHistory,
};

/// The result of a broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's offset (see the crate docs, "No loss"); `None` on a
    /// channel whose policy keeps no history, and with shared history (the
    /// shared history gives the offset later, see
    /// [`Engine::set_shared_history`]).
    pub offset: Option<u64>,
    /// How many sessions it was queued for.
    pub recipients: usize,
}

impl Engine {
    pub(super) fn client_publish(
        &mut self,
        now: Instant,
        context: &RequestContext,
        channel_text: &str,
        message: Message,
        out: &mut Outcome,
    ) {
        let fail = |out: &mut Outcome, error: &BayeuxError| {
            out.push(&error_reply(Some(channel_text), message.id.clone(), error));
        };
        let pattern = match ChannelPattern::parse(channel_text) {
            Ok(pattern) => pattern,
            Err(error) => return fail(out, &BayeuxError::invalid_channel(error)),
        };
        if pattern.is_meta() {
            return fail(out, &BayeuxError::UNKNOWN_META_CHANNEL);
        }
        let Some(id) = self.session_for(&message, context) else {
            return fail(out, &BayeuxError::UNKNOWN_CLIENT);
        };
        out.session = Some(id.clone());
        let Some(channel) = pattern.as_name() else {
            return fail(out, &BayeuxError::PUBLISH_TO_WILDCARD);
        };
        let Some(data) = &message.data else {
            return fail(out, &BayeuxError::MISSING_DATA);
        };
        // Presence channels speak for the server only.
        if is_presence_channel(&channel) {
            return fail(out, &BayeuxError::PUBLISH_DENIED);
        }
        let policy = self.policy_for(&channel);
        let session = &self.sessions[&id];
        let subscriptions = &self.subscriptions;
        if !policy.publish.allows(session, &channel, || {
            subscriptions.is_subscribed(&channel, &id)
        }) {
            return fail(out, &BayeuxError::PUBLISH_DENIED);
        }
        if let Err(error) = self
            .authorizer
            .publish(&SessionInfo::of(session), &channel, data)
        {
            return fail(out, &error);
        }

        if channel.is_service() {
            if self.services.matching(&channel).next().is_none() {
                return fail(out, &BayeuxError::NO_SERVICE_HANDLER);
            }
            self.events.push_back(Event::Service(ServiceRequest {
                client_id: id.clone(),
                user: session.user.clone(),
                claims: session.grant.as_ref().and_then(|g| g.claims.clone()),
                channel: channel.clone(),
                data: data.clone(),
                id: message.id.clone(),
            }));
        } else {
            let data = data.clone();
            self.counters.publishes += 1;
            self.broadcast(now, &channel, data, Some(&id), policy);
        }
        // The acknowledgement: channel, successful, id; never the data.
        let mut reply = Message::on(channel_text);
        reply.id = message.id;
        reply.successful = Some(true);
        out.push(&reply);
    }

    // --- server-side API -------------------------------------------------

    /// Broadcasts `data` on `channel` from the server: no policy applies, the
    /// message is kept in history and queued for every subscriber.
    pub fn publish(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        data: Value,
    ) -> Result<Published, BayeuxError> {
        if channel.is_meta() {
            return Err(BayeuxError::META_PUBLISH);
        }
        if channel.is_service() {
            return Err(BayeuxError::SERVICE_BROADCAST);
        }
        let policy = self.policy_for(channel);
        self.counters.publishes += 1;
        let published = self.broadcast(now, channel, data, None, policy);
        self.process_removals(now);
        Ok(published)
    }

    /// Sends `data` on `channel` to one client only (e.g. a service's answer),
    /// without history.
    pub fn deliver(
        &mut self,
        now: Instant,
        client: &ClientId,
        channel: &ChannelName,
        data: Value,
    ) -> Result<(), BayeuxError> {
        if channel.is_meta() {
            return Err(BayeuxError::META_PUBLISH);
        }
        if !self.sessions.contains_key(client) {
            return Err(BayeuxError::UNKNOWN_CLIENT);
        }
        let mut message = Message::on(channel.as_str());
        message.data = Some(data);
        if self.enqueue(now, client, Outbound::new(&message)) {
            self.counters.deliveries += 1;
        }
        self.process_removals(now);
        Ok(())
    }

    /// Records `data` on `channel` in history and queues it for every
    /// subscriber (but the publisher, unless the policy says otherwise); for
    /// a cluster, emits it as [`Event::Broadcast`].
    pub(super) fn broadcast(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        data: Value,
        publisher: Option<&ClientId>,
        policy: ChannelPolicy,
    ) -> Published {
        if policy.history && self.shared_history != SharedHistory::Off {
            return self.broadcast_shared(now, channel, data, publisher, policy);
        }
        // Only messages meant for history get an offset: a client replays
        // from offsets it has seen.
        let offset = policy.history.then(|| self.history.allocate_offset());
        let mut message = broadcast_message(channel, data, offset, None);
        let outbound = Outbound::new(&message);
        if let Some(offset) = offset {
            self.history.record(now, channel, offset, outbound.clone());
        }
        if self.cluster_events {
            // The data moves on (it is in `outbound` already). This node's
            // offset stays here: it means nothing to another node's history.
            let data = message.data.take().expect("a broadcast has data");
            self.events
                .push_back(Event::Broadcast(ClusterPublish::plain(
                    channel.clone(),
                    data,
                )));
        }
        let recipients = self.fan_out(now, channel, &outbound, publisher, policy);
        self.counters.deliveries += recipients as u64;
        Published { offset, recipients }
    }

    /// A broadcast on a channel with history, with shared history on (see
    /// [`SharedHistory`]): handed to the cluster for the shared history,
    /// which gives it its offset and brings it back to every node. While
    /// the shared history is up this node delivers it only then (with its
    /// offset, like every other node); while it is down, at once, without
    /// an offset, and marked so that it is not delivered here again.
    fn broadcast_shared(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        data: Value,
        publisher: Option<&ClientId>,
        policy: ChannelPolicy,
    ) -> Published {
        let delivered = self.shared_history == SharedHistory::Down;
        let mut recipients = 0;
        if delivered {
            let outbound = Outbound::new(&broadcast_message(channel, data.clone(), None, None));
            recipients = self.fan_out(now, channel, &outbound, publisher, policy);
            self.counters.deliveries += recipients as u64;
        }
        self.events.push_back(Event::Broadcast(ClusterPublish {
            channel: channel.clone(),
            data,
            offset: None,
            epoch: None,
            shared: true,
            delivered,
            publisher: publisher.cloned(),
        }));
        Published {
            offset: None,
            recipients,
        }
    }

    /// Queues `outbound`, a message on `channel`, for every subscriber here
    /// (but the publisher, unless the policy says otherwise). How many
    /// sessions it was queued for.
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        outbound: &Outbound,
        publisher: Option<&ClientId>,
        policy: ChannelPolicy,
    ) -> usize {
        // The subscriber sets of the patterns matching the channel, in
        // order: the channel itself, its `/*`, the `/**` of each ancestor. A
        // client in several of them gets the message once, through the first
        // (an exact subscription before a wildcard one): a client is skipped
        // if an earlier set holds it. Only the later sets' members are
        // looked up, so the usual case (one exact set, maybe a few wildcard
        // observers) costs no lookup per recipient and allocates nothing.
        let sets: Vec<(MatchKind, &IdSet<ClientId>)> =
            self.subscriptions.matching_sets(channel).collect();
        // What wildcard subscribers are checked against: a presence
        // channel's subject (its subscribe rule is the subject's).
        let checked = presence_subject(&ChannelPattern::from(channel.clone()));
        let checked = checked.as_ref().unwrap_or(channel);
        let mut recipients = 0;
        let mut queue = Enqueue {
            sessions: &mut self.sessions,
            holds: &self.holds,
            events: &mut self.events,
            removals: &mut self.removals,
            max_queued: self.config.limits.max_queued_messages,
        };
        for (i, &(kind, clients)) in sets.iter().enumerate() {
            for client in clients {
                if !policy.deliver_to_publisher && Some(client) == publisher {
                    continue;
                }
                if sets[..i]
                    .iter()
                    .any(|(_, earlier)| earlier.contains(client))
                {
                    continue;
                }
                // A wildcard subscription was checked against the pattern's
                // policy; this channel's own may be stricter.
                if kind == MatchKind::Wildcard
                    && !queue
                        .sessions
                        .get(client)
                        .is_some_and(|s| policy.subscribe.allows_channel(s, checked))
                {
                    continue;
                }
                if queue.push(now, client, outbound) {
                    recipients += 1;
                }
            }
        }
        recipients
    }

    /// Queues `message` for `client`, waking the driver if it can be sent
    /// now; schedules the session's removal if its queue is full. Whether
    /// it was queued.
    fn enqueue(&mut self, now: Instant, client: &ClientId, message: Outbound) -> bool {
        Enqueue {
            sessions: &mut self.sessions,
            holds: &self.holds,
            events: &mut self.events,
            removals: &mut self.removals,
            max_queued: self.config.limits.max_queued_messages,
        }
        .push(now, client, &message)
    }

    /// Emits one `Wake` for `client` until the driver polls it.
    pub(super) fn wake(&mut self, client: &ClientId) {
        match self.sessions.get_mut(client) {
            Some(session) if session.wake_pending => {}
            Some(session) => {
                session.wake_pending = true;
                self.events.push_back(Event::Wake(client.clone()));
            }
            None => self.events.push_back(Event::Wake(client.clone())),
        }
    }

    /// Deliveries to push to a WebSocket client now. Empty for sessions whose
    /// deliveries ride on connect replies (long-polling, ack extension).
    pub fn take_deliveries(&mut self, client: &ClientId) -> Vec<Outbound> {
        let Some(session) = self.sessions.get_mut(client) else {
            return Vec::new();
        };
        session.wake_pending = false;
        if session.delivers_with_connect() {
            return Vec::new();
        }
        session.queue.drain()
    }
}

/// The part of the engine a delivery changes, borrowed apart from the
/// subscriptions so that a broadcast queues while it walks them.
struct Enqueue<'a> {
    sessions: &'a mut IdMap<ClientId, Session>,
    holds: &'a Holds,
    events: &'a mut VecDeque<Event>,
    removals: &'a mut Vec<(ClientId, CloseReason)>,
    max_queued: usize,
}

impl Enqueue<'_> {
    /// Queues `message` for `client` and emits one `Wake` until the driver
    /// polls (if the message can be sent now); schedules the session's
    /// removal if its queue is full. Whether the message was queued.
    fn push(&mut self, now: Instant, client: &ClientId, message: &Outbound) -> bool {
        let Some(session) = self.sessions.get_mut(client) else {
            return false;
        };
        // Nothing after its token's expiry; the session learns at its next
        // request (or its held connect at the expiry) and ends then.
        if session.token_expired(now) {
            return false;
        }
        if session.queue.len() >= self.max_queued {
            if !session.closing {
                session.closing = true;
                self.removals
                    .push((client.clone(), CloseReason::QueueOverflow));
            }
            return false;
        }
        session.queue.push(message.clone());
        // `wake_pending` first: in a burst, the hold is not looked up again.
        if !session.wake_pending && (!session.delivers_with_connect() || self.holds.is_held(client))
        {
            session.wake_pending = true;
            self.events.push_back(Event::Wake(client.clone()));
        }
        true
    }
}
