//! `/meta/subscribe` (with replay from history) and `/meta/unsubscribe`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::channel::{ChannelName, ChannelPattern, PatternMap};
use crate::config::{BusConfig, ChannelPolicy};
use crate::error::BayeuxError;
use crate::history::{History, Replay};
use crate::message::Outbound;
use crate::message::{Message, error_reply};

use super::cluster::Tracked;
use super::presence::{presence_subject, presence_tracked};
use super::{
    Engine, FetchedHistory, META_SUBSCRIBE, META_UNSUBSCRIBE, Outcome, PresenceAction,
    RequestContext, SessionInfo, SharedHistory,
};

impl Engine {
    /// `fetched`: what the shared history answered, when a parked
    /// subscribe is carried out (see `shared`); its reply then goes into
    /// the session's queue, before the replayed messages.
    pub(super) fn subscribe(
        &mut self,
        now: Instant,
        context: &RequestContext,
        message: Message,
        out: &mut Outcome,
        fetched: Option<&HashMap<ChannelName, FetchedHistory>>,
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

        let replay_after = message.ext_field("replay").and_then(Value::as_u64);
        let client_epoch = message
            .ext_field("epoch")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(after) = replay_after
            && fetched.is_none()
            && self.shared_history == SharedHistory::Up
            && !self.parked.is_full()
        {
            let wanted: Vec<ChannelName> = patterns
                .iter()
                .filter_map(ChannelPattern::as_name)
                .filter(|channel| {
                    keeps_history(&self.policies, &self.config, &channel.clone().into())
                        && self
                            .history
                            .shared_position(channel)
                            .is_none_or(|position| {
                                position.dropped_through > after
                                    || client_epoch
                                        .as_deref()
                                        .is_some_and(|epoch| epoch != &*position.epoch)
                            })
                })
                .collect();
            if !wanted.is_empty() {
                return self.park_subscribe(context, message, after, wanted);
            }
        }
        let session = self.sessions.get_mut(&id).expect("looked up above");

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
        if let Some(after) = replay_after {
            let mut count = 0;
            let mut complete = true;
            let mut reset = None;
            let mut replayed = Vec::new();
            for pattern in &patterns {
                let room = session
                    .queue
                    .room(self.config.limits.max_queued_messages)
                    .saturating_sub(replayed.len() + usize::from(fetched.is_some()));
                let keeps = keeps_history(&self.policies, &self.config, pattern);
                let replay = if self.shared_history == SharedHistory::Off {
                    self.history.replay(pattern, after, room)
                } else {
                    match shared_replay(
                        &self.history,
                        pattern,
                        after,
                        client_epoch.as_deref(),
                        fetched,
                        room,
                    ) {
                        Ok(replay) => replay,
                        Err(current) => {
                            reset = Some(current);
                            continue;
                        }
                    }
                };
                complete &= replay.complete && keeps;
                count += replay.messages.len();
                replayed.extend(replay.messages);
            }
            self.counters.replayed += count as u64;
            let mut answer =
                json!({"after": after, "count": count, "complete": complete && reset.is_none()});
            if self.shared_history != SharedHistory::Off {
                let epoch = match &reset {
                    Some(current) => current.clone(),
                    None => patterns
                        .iter()
                        .filter_map(ChannelPattern::as_name)
                        .find_map(|channel| self.history.shared_position(&channel))
                        .map(|position| position.epoch),
                };
                answer["epoch"] = epoch.as_deref().map_or(Value::Null, Value::from);
                if reset.is_some() {
                    answer["reset"] = Value::Bool(true);
                }
            }
            reply.set_ext_field("replay", answer);
            if fetched.is_some() {
                // A parked subscribe: its reply goes before its replay.
                session.queue.push(Outbound::new(&reply));
            }
            let queued = !replayed.is_empty() || fetched.is_some();
            for message in replayed {
                session.queue.push(message);
            }
            if queued && (!session.delivers_with_connect() || self.holds.is_held(&id)) {
                self.wake(&id);
            }
        }

        // Subscribing to a presence channel returns the current members.
        if let Some(channel) = patterns.iter().find_map(presence_subject) {
            reply.set_ext_field("presence", self.presence_snapshot(&channel));
        }
        if fetched.is_none() || replay_after.is_none() {
            out.push(&reply);
        }

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

/// A replay of `pattern` after `after` with shared history: from this
/// node's history, which holds what the shared history answered
/// (`fetched`, for a parked subscribe). `Err` with the current epoch
/// (`None`: there is none) when the client's position belongs to an epoch
/// that is gone.
fn shared_replay(
    history: &History,
    pattern: &ChannelPattern,
    after: u64,
    client_epoch: Option<&str>,
    fetched: Option<&HashMap<ChannelName, FetchedHistory>>,
    room: usize,
) -> Result<Replay, Option<Arc<str>>> {
    let incomplete = Replay {
        messages: Vec::new(),
        complete: false,
    };
    // Offsets are per channel: one offset names no position in several.
    let Some(channel) = pattern.as_name() else {
        return Ok(incomplete);
    };
    match fetched.and_then(|fetched| fetched.get(&channel)) {
        Some(FetchedHistory::Missing) => {
            // No history at all: a client that had a position lost it.
            return if after > 0 || client_epoch.is_some() {
                Err(None)
            } else {
                Ok(Replay {
                    messages: Vec::new(),
                    complete: true,
                })
            };
        }
        Some(FetchedHistory::Found { epoch, .. })
            if client_epoch.is_some_and(|client| client != &**epoch) =>
        {
            return Err(Some(epoch.clone()));
        }
        _ => {}
    }
    match history.shared_position(&channel) {
        Some(position) if client_epoch.is_some_and(|client| client != &*position.epoch) => {
            // Only the shared history can say an epoch is gone; this
            // node's may be behind it (Redis unreachable).
            if fetched.is_some_and(|fetched| {
                !matches!(fetched.get(&channel), None | Some(FetchedHistory::Failed))
            }) {
                Err(Some(position.epoch))
            } else {
                Ok(incomplete)
            }
        }
        Some(_) => Ok(history.replay(pattern, after, room)),
        None => Ok(incomplete),
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
