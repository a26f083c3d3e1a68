//! `/meta/subscribe` (with replay from history) and `/meta/unsubscribe`.

use std::time::Instant;

use serde_json::{Value, json};

use crate::channel::{ChannelPattern, PatternMap};
use crate::config::{BusConfig, ChannelPolicy};
use crate::error::BayeuxError;
use crate::message::{Message, error_reply};

use super::cluster::Tracked;
use super::presence::{presence_subject, presence_tracked};
use super::{
    Engine, META_SUBSCRIBE, META_UNSUBSCRIBE, Outcome, PresenceAction, RequestContext, SessionInfo,
};

impl Engine {
    pub(super) fn subscribe(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let fail = |out: &mut Outcome, error: &BayeuxError| {
            let mut reply = error_reply(Some(META_SUBSCRIBE), message.id.clone(), error);
            reply.subscription = message.subscription.clone();
            out.push(&reply);
        };
        let Some(id) = self.session_for(&message, context) else {
            return fail(out, &BayeuxError::UNKNOWN_CLIENT);
        };
        out.session = Some(id.clone());
        let patterns = match parse_subscription(&message) {
            Ok(patterns) => patterns,
            Err(error) => return fail(out, &error),
        };

        // Check everything before changing anything: a subscribe message is
        // all-or-nothing.
        for pattern in &patterns {
            if pattern.is_meta() {
                return fail(out, &BayeuxError::META_SUBSCRIBE);
            }
            if pattern.is_service() {
                return fail(out, &BayeuxError::SERVICE_SUBSCRIBE);
            }
            let session = &self.sessions[&id];
            if !self.may_subscribe(session, pattern) {
                return fail(out, &BayeuxError::SUBSCRIBE_DENIED);
            }
            if let Err(error) = self
                .authorizer
                .subscribe(&SessionInfo::of(session), pattern)
            {
                return fail(out, &error);
            }
        }
        let session = self.sessions.get_mut(&id).expect("looked up above");
        let mut new: Vec<&ChannelPattern> = patterns
            .iter()
            .filter(|p| !session.subscriptions.contains(*p))
            .collect();
        new.sort();
        new.dedup();
        if session.subscriptions.len() + new.len() > self.config.limits.max_subscriptions_per_client
        {
            return fail(out, &BayeuxError::TOO_MANY_SUBSCRIPTIONS);
        }

        let mut joined = Vec::new();
        let mut index = Tracked {
            subscriptions: &mut self.subscriptions,
            events: &mut self.events,
            report: self.cluster_events,
        };
        for pattern in new {
            session.subscriptions.insert(pattern.clone());
            index.subscribe(pattern, &id);
            if let Some(channel) = presence_tracked(pattern) {
                joined.push(channel);
            }
        }

        let mut reply = Message::on(META_SUBSCRIBE);
        reply.id = message.id.clone();
        reply.client_id = Some(id.to_string());
        reply.subscription = message.subscription.clone();
        reply.successful = Some(true);

        // Replay: `ext.replay: <offset>` asks for the kept messages after
        // that offset on every channel the subscription matches.
        if let Some(after) = message.ext_field("replay").and_then(Value::as_u64) {
            let mut count = 0;
            let mut complete = true;
            for pattern in &patterns {
                let room = session.queue.room(self.config.limits.max_queued_messages);
                let replay = self.history.replay(pattern, after, room);
                complete &= replay.complete && keeps_history(&self.policies, &self.config, pattern);
                count += replay.messages.len();
                for replayed in replay.messages {
                    session.queue.push(replayed);
                }
            }
            self.counters.replayed += count as u64;
            reply.set_ext_field(
                "replay",
                json!({"after": after, "count": count, "complete": complete}),
            );
            if count > 0 && (!session.delivers_with_connect() || self.holds.is_held(&id)) {
                self.wake(&id);
            }
        }

        // Subscribing to a presence channel returns the current members.
        if let Some(channel) = patterns.iter().find_map(presence_subject) {
            reply.set_ext_field("presence", self.presence_snapshot(&channel));
        }
        out.push(&reply);

        let user = self.sessions[&id].user.clone();
        for channel in joined {
            self.announce_presence(now, &channel, &id, user.clone(), PresenceAction::Join);
        }
    }

    pub(super) fn unsubscribe(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
    ) {
        let fail = |out: &mut Outcome, error: &BayeuxError| {
            let mut reply = error_reply(Some(META_UNSUBSCRIBE), message.id.clone(), error);
            reply.subscription = message.subscription.clone();
            out.push(&reply);
        };
        let Some(id) = self.session_for(&message, context) else {
            return fail(out, &BayeuxError::UNKNOWN_CLIENT);
        };
        out.session = Some(id.clone());
        let patterns = match parse_subscription(&message) {
            Ok(patterns) => patterns,
            Err(error) => return fail(out, &error),
        };
        let session = self.sessions.get_mut(&id).expect("looked up above");
        let mut left = Vec::new();
        let mut index = Tracked {
            subscriptions: &mut self.subscriptions,
            events: &mut self.events,
            report: self.cluster_events,
        };
        for pattern in &patterns {
            // Unsubscribing from something not subscribed succeeds: the
            // client's wish (not subscribed) holds.
            if session.subscriptions.remove(pattern) {
                index.unsubscribe(pattern, &id);
                if let Some(channel) = presence_tracked(pattern) {
                    left.push(channel);
                }
            }
        }
        let user = session.user.clone();
        let mut reply = Message::on(META_UNSUBSCRIBE);
        reply.id = message.id;
        reply.client_id = Some(id.to_string());
        reply.subscription = message.subscription;
        reply.successful = Some(true);
        out.push(&reply);
        for channel in left {
            self.announce_presence(now, &channel, &id, user.clone(), PresenceAction::Leave);
        }
    }
}

/// The patterns of a subscribe or unsubscribe message.
fn parse_subscription(message: &Message) -> Result<Vec<ChannelPattern>, BayeuxError> {
    let Some(subscription) = &message.subscription else {
        return Err(BayeuxError::MISSING_SUBSCRIPTION);
    };
    let texts = subscription.patterns();
    if texts.is_empty() {
        return Err(BayeuxError::MISSING_SUBSCRIPTION);
    }
    texts
        .iter()
        .map(|text| ChannelPattern::parse(text).map_err(BayeuxError::invalid_subscription))
        .collect()
}

/// Whether the channels of `pattern` keep history (by the policy of the
/// pattern; presence channels never do). A free function so that it can be
/// called while a session is borrowed.
fn keeps_history(
    policies: &PatternMap<ChannelPolicy>,
    config: &BusConfig,
    pattern: &ChannelPattern,
) -> bool {
    if presence_subject(pattern).is_some() {
        return false;
    }
    match policies.most_specific_for(pattern) {
        Some(policy) => policy.history,
        None if pattern.is_service() => ChannelPolicy::SERVICE.history,
        None => config.default_policy.history,
    }
}
