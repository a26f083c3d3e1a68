//! The test bus: an engine, a clock, and helpers that speak JSON.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbus_bayeux::*;

/// An engine, a clock, and helpers that speak JSON.
pub(crate) struct Bus {
    pub(crate) engine: Engine,
    pub(crate) now: Instant,
}

pub(crate) fn counter_ids() -> impl RandomSource {
    let mut next: u128 = 1000;
    move || {
        next += 1;
        next.to_le_bytes()
    }
}

pub(crate) fn lp() -> RequestContext {
    RequestContext::long_polling()
}
pub(crate) fn ws() -> RequestContext {
    RequestContext::websocket()
}
pub(crate) fn name(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}
pub(crate) fn pattern(s: &str) -> ChannelPattern {
    ChannelPattern::parse(s).unwrap()
}
pub(crate) fn values(messages: &[Outbound]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| serde_json::from_str(m.json()).unwrap())
        .collect()
}
pub(crate) fn channels(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["channel"].as_str().unwrap())
        .collect()
}
pub(crate) fn data_of(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| {
            m.get("data").is_some() && !m["channel"].as_str().unwrap().starts_with("/meta/")
        })
        .map(|m| m["data"].clone())
        .collect()
}

impl Bus {
    pub(crate) fn new() -> Self {
        Self::with(BusConfig::default())
    }

    pub(crate) fn with(config: BusConfig) -> Self {
        Bus {
            engine: Engine::new(config, counter_ids()),
            now: Instant::now(),
        }
    }

    pub(crate) fn send(&mut self, context: &RequestContext, body: Value) -> Outcome {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.engine.handle_body(self.now, context, &bytes)
    }

    /// Sends and returns the immediate replies as JSON.
    pub(crate) fn call(&mut self, context: &RequestContext, body: Value) -> Vec<Value> {
        values(&self.send(context, body).replies)
    }

    pub(crate) fn handshake_with(
        &mut self,
        context: &RequestContext,
        message: Value,
    ) -> (ClientId, Value) {
        let outcome = self.send(context, message);
        let reply = values(&outcome.replies).remove(0);
        assert_eq!(reply["successful"], true, "{reply}");
        let id = outcome.session.expect("a handshake names its session");
        assert_eq!(reply["clientId"], id.as_str());
        (id, reply)
    }

    pub(crate) fn handshake(&mut self, context: &RequestContext) -> ClientId {
        self.handshake_with(
            context,
            json!({"channel": "/meta/handshake", "version": "1.0",
                   "supportedConnectionTypes": ["websocket", "long-polling"]}),
        )
        .0
    }

    pub(crate) fn handshake_with_ack(&mut self, context: &RequestContext) -> ClientId {
        let (id, reply) = self.handshake_with(
            context,
            json!({"channel": "/meta/handshake", "version": "1.0", "ext": {"ack": true}}),
        );
        assert_eq!(reply["ext"], json!({"ack": true}));
        id
    }

    pub(crate) fn connect_message(
        &mut self,
        context: &RequestContext,
        client: &ClientId,
        ext: Value,
    ) -> Outcome {
        self.send(
            context,
            json!({"channel": "/meta/connect", "clientId": client.as_str(),
                   "connectionType": context.transport.name(), "id": "c", "ext": ext}),
        )
    }

    pub(crate) fn connect(&mut self, context: &RequestContext, client: &ClientId) -> Outcome {
        self.connect_message(context, client, json!({}))
    }

    /// Handshake and first connect (answered at once).
    pub(crate) fn session(&mut self, context: &RequestContext) -> ClientId {
        let client = self.handshake(context);
        let first = self.connect(context, &client);
        assert!(first.held.is_none());
        client
    }

    pub(crate) fn subscribe(
        &mut self,
        context: &RequestContext,
        client: &ClientId,
        subscription: &str,
    ) -> Value {
        self.subscribe_message(
            context,
            json!({"channel": "/meta/subscribe", "clientId": client.as_str(), "subscription": subscription, "id": "s"}),
        )
    }

    pub(crate) fn subscribe_message(&mut self, context: &RequestContext, message: Value) -> Value {
        let replies = self.call(context, message);
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies[0].clone()
    }

    pub(crate) fn publish(
        &mut self,
        context: &RequestContext,
        client: &ClientId,
        channel: &str,
        data: Value,
    ) -> Value {
        let replies = self.call(
            context,
            json!({"channel": channel, "clientId": client.as_str(), "data": data, "id": "p"}),
        );
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies[0].clone()
    }

    /// Sends a connect that must be held; returns its hold id.
    pub(crate) fn hold(&mut self, context: &RequestContext, client: &ClientId) -> HoldId {
        let outcome = self.connect(context, client);
        assert!(outcome.replies.is_empty(), "{:?}", outcome.replies);
        assert_eq!(outcome.reply_json(), None);
        let held = outcome.held.expect("held");
        assert_eq!(&held.client_id, client);
        held.hold_id
    }

    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.engine.poll_event()).collect()
    }

    pub(crate) fn wakes(&mut self) -> Vec<ClientId> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Wake(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
    }

    pub(crate) fn poll(&mut self, hold: HoldId) -> Option<Vec<Value>> {
        self.engine.poll_connect(hold, self.now).map(|r| values(&r))
    }

    pub(crate) fn deliveries(&mut self, client: &ClientId) -> Vec<Value> {
        values(&self.engine.take_deliveries(client))
    }

    pub(crate) fn server_publish(&mut self, channel: &str, data: Value) -> Published {
        self.engine.publish(self.now, &name(channel), data).unwrap()
    }
}
