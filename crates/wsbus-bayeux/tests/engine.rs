//! The bus's rules, driven through the public API as the runtime would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbus_bayeux::*;

/// An engine, a clock, and helpers that speak JSON.
struct Bus {
    engine: Engine,
    now: Instant,
}

fn counter_ids() -> impl RandomSource {
    let mut next: u128 = 1000;
    move || {
        next += 1;
        next.to_le_bytes()
    }
}

fn lp() -> RequestContext {
    RequestContext::long_polling()
}
fn ws() -> RequestContext {
    RequestContext::websocket()
}
fn name(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}
fn pattern(s: &str) -> ChannelPattern {
    ChannelPattern::parse(s).unwrap()
}
fn values(messages: &[Outbound]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| serde_json::from_str(m.json()).unwrap())
        .collect()
}
fn channels(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["channel"].as_str().unwrap())
        .collect()
}
fn data_of(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| {
            m.get("data").is_some() && !m["channel"].as_str().unwrap().starts_with("/meta/")
        })
        .map(|m| m["data"].clone())
        .collect()
}

impl Bus {
    fn new() -> Self {
        Self::with(BusConfig::default())
    }

    fn with(config: BusConfig) -> Self {
        Bus {
            engine: Engine::new(config, counter_ids()),
            now: Instant::now(),
        }
    }

    fn send(&mut self, context: &RequestContext, body: Value) -> Outcome {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.engine.handle_body(self.now, context, &bytes)
    }

    /// Sends and returns the immediate replies as JSON.
    fn call(&mut self, context: &RequestContext, body: Value) -> Vec<Value> {
        values(&self.send(context, body).replies)
    }

    fn handshake_with(&mut self, context: &RequestContext, message: Value) -> (ClientId, Value) {
        let outcome = self.send(context, message);
        let reply = values(&outcome.replies).remove(0);
        assert_eq!(reply["successful"], true, "{reply}");
        let id = outcome.session.expect("a handshake names its session");
        assert_eq!(reply["clientId"], id.as_str());
        (id, reply)
    }

    fn handshake(&mut self, context: &RequestContext) -> ClientId {
        self.handshake_with(
            context,
            json!({"channel": "/meta/handshake", "version": "1.0",
                   "supportedConnectionTypes": ["websocket", "long-polling"]}),
        )
        .0
    }

    fn handshake_with_ack(&mut self, context: &RequestContext) -> ClientId {
        let (id, reply) = self.handshake_with(
            context,
            json!({"channel": "/meta/handshake", "version": "1.0", "ext": {"ack": true}}),
        );
        assert_eq!(reply["ext"], json!({"ack": true}));
        id
    }

    fn connect_message(
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

    fn connect(&mut self, context: &RequestContext, client: &ClientId) -> Outcome {
        self.connect_message(context, client, json!({}))
    }

    /// Handshake and first connect (answered at once).
    fn session(&mut self, context: &RequestContext) -> ClientId {
        let client = self.handshake(context);
        let first = self.connect(context, &client);
        assert!(first.held.is_none());
        client
    }

    fn subscribe(
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

    fn subscribe_message(&mut self, context: &RequestContext, message: Value) -> Value {
        let replies = self.call(context, message);
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies[0].clone()
    }

    fn publish(
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
    fn hold(&mut self, context: &RequestContext, client: &ClientId) -> HoldId {
        let outcome = self.connect(context, client);
        assert!(outcome.replies.is_empty(), "{:?}", outcome.replies);
        assert_eq!(outcome.reply_json(), None);
        let held = outcome.held.expect("held");
        assert_eq!(&held.client_id, client);
        held.hold_id
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.engine.poll_event()).collect()
    }

    fn wakes(&mut self) -> Vec<ClientId> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Wake(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
    }

    fn poll(&mut self, hold: HoldId) -> Option<Vec<Value>> {
        self.engine.poll_connect(hold, self.now).map(|r| values(&r))
    }

    fn deliveries(&mut self, client: &ClientId) -> Vec<Value> {
        values(&self.engine.take_deliveries(client))
    }

    fn server_publish(&mut self, channel: &str, data: Value) -> Published {
        self.engine.publish(self.now, &name(channel), data).unwrap()
    }
}

// --- handshake and transports ---------------------------------------------

#[test]
fn handshake_reply() {
    let mut bus = Bus::new();
    let (id, reply) = bus.handshake_with(
        &lp(),
        json!({"channel": "/meta/handshake", "version": "1.0", "id": "1",
               "supportedConnectionTypes": ["long-polling", "callback-polling"]}),
    );
    assert_eq!(
        reply,
        json!({"channel": "/meta/handshake", "id": "1", "version": "1.0", "minimumVersion": "1.0",
               "supportedConnectionTypes": ["websocket", "long-polling"],
               "clientId": id.as_str(), "successful": true,
               "advice": {"reconnect": "retry", "interval": 0, "timeout": 30000, "maxInterval": 10000}})
    );
    assert!(matches!(
        &bus.events()[..],
        [Event::SessionOpened {
            transport: Transport::LongPolling,
            ..
        }]
    ));
}

#[test]
fn websocket_disabled_is_not_offered_nor_accepted() {
    let mut bus = Bus::with(BusConfig {
        websocket_enabled: false,
        ..BusConfig::default()
    });
    let (client, reply) = bus.handshake_with(
        &lp(),
        json!({"channel": "/meta/handshake", "version": "1.0"}),
    );
    assert_eq!(reply["supportedConnectionTypes"], json!(["long-polling"]));
    // A connect over WebSocket is refused.
    let replies = values(&bus.connect(&ws(), &client).replies);
    assert_eq!(replies[0]["successful"], false);
    assert_eq!(replies[0]["error"], "400::Unsupported connection type");
    // A client that only speaks WebSocket cannot handshake.
    let replies = bus.call(
        &lp(),
        json!({"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}),
    );
    assert_eq!(replies[0]["successful"], false);
    assert_eq!(replies[0]["error"], "400::Unsupported connection type");
    assert_eq!(
        replies[0]["supportedConnectionTypes"],
        json!(["long-polling"])
    );
}

#[test]
fn unsupported_version_is_refused() {
    let mut bus = Bus::new();
    let replies = bus.call(
        &lp(),
        json!({"channel": "/meta/handshake", "version": "2.0", "id": "h"}),
    );
    assert_eq!(replies[0]["error"], "400::Unsupported version");
    assert_eq!(replies[0]["id"], "h");
    assert_eq!(replies[0]["advice"]["reconnect"], "none");
    assert_eq!(bus.engine.stats().sessions, 0);
}

#[test]
fn a_session_may_switch_from_websocket_to_long_polling() {
    let mut bus = Bus::new();
    let a = bus.handshake(&ws());
    bus.connect(&ws(), &a);
    bus.subscribe(&ws(), &a, "/chat/room");
    let b = bus.session(&lp());
    bus.subscribe(&lp(), &b, "/chat/room");
    // The WebSocket fails; the client continues over long-polling.
    let hold = bus.hold(&lp(), &a);
    bus.publish(&lp(), &b, "/chat/room", json!("over lp"));
    assert_eq!(bus.wakes(), vec![a.clone()]);
    assert!(
        bus.deliveries(&a).is_empty(),
        "long-polling deliveries ride on the connect"
    );
    let response = bus.poll(hold).unwrap();
    assert_eq!(data_of(&response), [json!("over lp")]);
}

// --- connect ------------------------------------------------------------

#[test]
fn first_connect_at_once_later_ones_held_until_timeout() {
    let mut bus = Bus::new();
    let client = bus.handshake(&lp());
    let first = values(&bus.connect(&lp(), &client).replies);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["channel"], "/meta/connect");
    assert_eq!(first[0]["successful"], true);
    assert_eq!(first[0]["id"], "c");
    assert_eq!(first[0]["clientId"], client.as_str());
    assert_eq!(first[0]["advice"]["timeout"], 30000);

    let outcome = bus.connect(&lp(), &client);
    let held = outcome.held.clone().unwrap();
    assert_eq!(held.deadline, bus.now + Duration::from_secs(30));
    assert_eq!(bus.engine.next_timeout(), Some(held.deadline));
    bus.advance(Duration::from_secs(29));
    assert_eq!(bus.poll(held.hold_id), None);
    assert!(bus.wakes().is_empty());
    bus.advance(Duration::from_secs(1));
    assert_eq!(bus.wakes(), vec![client.clone()]);
    let response = bus.poll(held.hold_id).unwrap();
    assert_eq!(channels(&response), ["/meta/connect"]);
    assert_eq!(response[0]["successful"], true);
    assert_eq!(bus.poll(held.hold_id), None, "a hold is answered once");
}

#[test]
fn a_driver_may_poll_at_the_deadline_itself() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let hold = bus.hold(&ws(), &client);
    bus.now += Duration::from_secs(30);
    assert_eq!(channels(&bus.poll(hold).unwrap()), ["/meta/connect"]);
}

#[test]
fn connect_with_timeout_zero_is_answered_at_once() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    let outcome = bus.send(
        &lp(),
        json!({"channel": "/meta/connect", "clientId": client.as_str(), "advice": {"timeout": 0}}),
    );
    assert!(outcome.held.is_none());
    assert_eq!(values(&outcome.replies)[0]["successful"], true);
}

#[test]
fn a_client_publishes_on_a_second_request_while_its_connect_is_held() {
    let mut bus = Bus::new();
    let a = bus.session(&lp());
    let b = bus.session(&lp());
    bus.subscribe(&lp(), &a, "/chat/room");
    bus.subscribe(&lp(), &b, "/chat/room");
    let hold_a = bus.hold(&lp(), &a);
    let hold_b = bus.hold(&lp(), &b);
    bus.events();

    // A second request from B, its connect still held: answered at once.
    let ack = bus.publish(&lp(), &b, "/chat/room", json!({"text": "hi"}));
    assert_eq!(
        ack,
        json!({"channel": "/chat/room", "successful": true, "id": "p"})
    );
    // A is woken and its held connect carries the message.
    assert_eq!(bus.wakes(), vec![a.clone()]);
    let response = bus.poll(hold_a).unwrap();
    assert_eq!(channels(&response), ["/chat/room", "/meta/connect"]);
    assert_eq!(response[0]["data"], json!({"text": "hi"}));
    assert!(response[0]["ext"]["offset"].is_u64());
    assert!(response[0].get("clientId").is_none());
    // B, the publisher, gets nothing back.
    assert_eq!(bus.poll(hold_b), None);
}

#[test]
fn a_new_connect_answers_the_held_one() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    bus.subscribe(&lp(), &client, "/news");
    let first = bus.hold(&lp(), &client);
    let second = bus.hold(&lp(), &client);
    assert_ne!(first, second);
    assert_eq!(bus.wakes(), vec![client.clone()]);
    assert_eq!(channels(&bus.poll(first).unwrap()), ["/meta/connect"]);
    assert_eq!(bus.poll(second), None);
    // Later news wakes the client again, for the second connect.
    bus.server_publish("/news", json!("later"));
    assert_eq!(bus.wakes(), vec![client.clone()]);
    assert_eq!(data_of(&bus.poll(second).unwrap()), [json!("later")]);
}

#[test]
fn replies_of_a_long_polling_request_wait_with_its_held_connect() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    let outcome = bus.send(
        &lp(),
        json!([{"channel": "/meta/subscribe", "clientId": client.as_str(), "subscription": "/a", "id": "1"},
               {"channel": "/meta/connect", "clientId": client.as_str(), "id": "2"}]),
    );
    assert!(outcome.replies.is_empty());
    let hold = outcome.held.unwrap().hold_id;
    bus.advance(Duration::from_secs(30));
    let response = bus.poll(hold).unwrap();
    assert_eq!(channels(&response), ["/meta/subscribe", "/meta/connect"]);
    assert_eq!(response[0]["id"], "1");
    assert_eq!(response[1]["id"], "2");
}

#[test]
fn a_disconnect_after_a_held_connect_in_the_same_batch_answers_both() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    let outcome = bus.send(
        &lp(),
        json!([{"channel": "/meta/connect", "clientId": client.as_str(), "id": "1"},
               {"channel": "/meta/disconnect", "clientId": client.as_str(), "id": "2"}]),
    );
    assert!(outcome.held.is_none());
    let replies = values(&outcome.replies);
    assert_eq!(channels(&replies), ["/meta/disconnect", "/meta/connect"]);
    assert_eq!(replies[1]["advice"]["reconnect"], "none");
}

// --- unknown clients ----------------------------------------------------

#[test]
fn unknown_client_gets_402_with_handshake_advice() {
    let mut bus = Bus::new();
    let expected = |channel: &str| {
        json!({"channel": channel, "id": "x", "successful": false, "error": "402::Unknown client",
               "advice": {"reconnect": "handshake", "interval": 0}})
    };
    for channel in ["/meta/connect", "/meta/disconnect", "/chat/room"] {
        let replies = bus.call(
            &lp(),
            json!({"channel": channel, "clientId": "nope", "id": "x", "data": 1}),
        );
        assert_eq!(replies, [expected(channel)]);
        // No client id at all: the same.
        let replies = bus.call(&lp(), json!({"channel": channel, "id": "x", "data": 1}));
        assert_eq!(replies, [expected(channel)]);
    }
    for channel in ["/meta/subscribe", "/meta/unsubscribe"] {
        let replies = bus.call(
            &lp(),
            json!({"channel": channel, "clientId": "nope", "id": "x", "subscription": "/a"}),
        );
        let mut want = expected(channel);
        want["subscription"] = json!("/a");
        assert_eq!(replies, [want]);
    }
}

#[test]
fn a_client_id_is_useless_to_another_user() {
    let mut bus = Bus::new();
    let alice = lp().with_user("alice");
    let client = bus.session(&alice);
    let replies = values(&bus.connect(&lp().with_user("mallory"), &client).replies);
    assert_eq!(replies[0]["error"], "402::Unknown client");
    // Same user, or a request without transport-level user: fine.
    assert!(bus.connect(&alice, &client).held.is_some());
}

// --- subscribe, publish, unsubscribe, disconnect ----------------------------

#[test]
fn full_flow_over_websocket() {
    let mut bus = Bus::new();
    let a = bus.session(&ws());
    let b = bus.session(&ws());
    let reply = bus.subscribe(&ws(), &a, "/chat/room");
    assert_eq!(
        reply,
        json!({"channel": "/meta/subscribe", "id": "s", "clientId": a.as_str(),
               "subscription": "/chat/room", "successful": true})
    );
    bus.subscribe(&ws(), &b, "/chat/room");
    let hold_a = bus.hold(&ws(), &a);
    bus.events();

    bus.publish(&ws(), &b, "/chat/room", json!("hello"));
    // Over WebSocket the delivery is pushed at once; the connect stays held.
    assert_eq!(bus.wakes(), vec![a.clone()]);
    let pushed = bus.deliveries(&a);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0]["channel"], "/chat/room");
    assert_eq!(pushed[0]["data"], "hello");
    assert_eq!(bus.poll(hold_a), None);
    assert!(
        bus.deliveries(&b).is_empty(),
        "not relayed to the publisher"
    );

    // Unsubscribe: no more deliveries.
    let replies = bus.call(
        &ws(),
        json!({"channel": "/meta/unsubscribe", "clientId": a.as_str(), "subscription": "/chat/room", "id": "u"}),
    );
    assert_eq!(
        replies,
        [
            json!({"channel": "/meta/unsubscribe", "id": "u", "clientId": a.as_str(),
                "subscription": "/chat/room", "successful": true})
        ]
    );
    bus.server_publish("/chat/room", json!("after"));
    assert!(bus.deliveries(&a).is_empty());

    // Disconnect: the held connect is answered with reconnect none, the
    // session is gone.
    let replies = bus.call(
        &ws(),
        json!({"channel": "/meta/disconnect", "clientId": a.as_str(), "id": "d"}),
    );
    assert_eq!(
        replies,
        [
            json!({"channel": "/meta/disconnect", "id": "d", "clientId": a.as_str(), "successful": true})
        ]
    );
    let response = bus.poll(hold_a).unwrap();
    assert_eq!(response[0]["advice"]["reconnect"], "none");
    assert!(!bus.engine.has_session(&a));
    assert!(bus.events().iter().any(|e| matches!(e,
        Event::SessionClosed { client_id, reason: CloseReason::Disconnected, .. } if client_id == &a)));
}

#[test]
fn subscribe_to_several_patterns_at_once_is_all_or_nothing() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    let reply = bus.subscribe_message(
        &lp(),
        json!({"channel": "/meta/subscribe", "clientId": client.as_str(), "subscription": ["/a", "/b"]}),
    );
    assert_eq!(reply["successful"], true);
    assert_eq!(reply["subscription"], json!(["/a", "/b"]));
    let reply = bus.subscribe_message(
        &lp(),
        json!({"channel": "/meta/subscribe", "clientId": client.as_str(), "subscription": ["/c", "/meta/x"]}),
    );
    assert_eq!(reply["error"], "403::Cannot subscribe to a meta channel");
    assert_eq!(
        bus.engine.stats().subscription_patterns,
        2,
        "/c was not subscribed"
    );
}

#[test]
fn default_policy_publish_only_where_subscribed() {
    let mut bus = Bus::new();
    let a = bus.session(&ws());
    let listener = bus.session(&ws());
    bus.subscribe(&ws(), &listener, "/chat/room");
    let denied = bus.publish(&ws(), &a, "/chat/room", json!("sneaky"));
    assert_eq!(
        denied,
        json!({"channel": "/chat/room", "id": "p", "successful": false, "error": "403::Publish denied"})
    );
    assert!(bus.deliveries(&listener).is_empty(), "nothing relayed");

    // Subscribed through a wildcard counts as subscribed.
    bus.subscribe(&ws(), &a, "/chat/*");
    assert_eq!(
        bus.publish(&ws(), &a, "/chat/room", json!("ok"))["successful"],
        true
    );
    assert_eq!(data_of(&bus.deliveries(&listener)), [json!("ok")]);
}

#[test]
fn policies_per_pattern() {
    let config = BusConfig {
        policies: vec![
            (
                pattern("/announce/**"),
                ChannelPolicy {
                    publish: PublishPolicy::Nobody,
                    ..ChannelPolicy::DEFAULT
                },
            ),
            (
                pattern("/private/**"),
                ChannelPolicy {
                    subscribe: SubscribePolicy::Authenticated,
                    publish: PublishPolicy::Authenticated,
                    ..ChannelPolicy::DEFAULT
                },
            ),
            (
                pattern("/open/*"),
                ChannelPolicy {
                    publish: PublishPolicy::Anyone,
                    deliver_to_publisher: true,
                    ..ChannelPolicy::DEFAULT
                },
            ),
        ],
        ..BusConfig::default()
    };
    let mut bus = Bus::with(config);
    let anon = bus.session(&ws());
    let alice_ctx = ws().with_user("alice");
    let alice = bus.session(&alice_ctx);

    bus.subscribe(&ws(), &anon, "/announce/news");
    assert_eq!(
        bus.publish(&ws(), &anon, "/announce/news", json!(1))["error"],
        "403::Publish denied"
    );
    assert_eq!(
        bus.server_publish("/announce/news", json!("from server"))
            .recipients,
        1
    );
    assert_eq!(data_of(&bus.deliveries(&anon)), [json!("from server")]);

    assert_eq!(
        bus.subscribe(&ws(), &anon, "/private/x")["error"],
        "403::Subscribe denied"
    );
    assert_eq!(
        bus.subscribe(&alice_ctx, &alice, "/private/x")["successful"],
        true
    );
    assert_eq!(
        bus.publish(&ws(), &anon, "/private/x", json!(1))["error"],
        "403::Publish denied"
    );
    assert_eq!(
        bus.publish(&alice_ctx, &alice, "/private/x", json!(1))["successful"],
        true
    );

    // Anyone may publish on /open/*, and the publisher gets its own message.
    bus.subscribe(&ws(), &anon, "/open/lobby");
    bus.deliveries(&anon);
    let replies = bus.call(
        &ws(),
        json!({"channel": "/open/lobby", "clientId": anon.as_str(), "data": "me too", "id": "p"}),
    );
    // Over WebSocket the echo follows the acknowledgement in the same frame.
    assert_eq!(
        replies[0],
        json!({"channel": "/open/lobby", "id": "p", "successful": true})
    );
    assert_eq!(data_of(&replies), [json!("me too")]);
    assert_eq!(
        bus.publish(&alice_ctx, &alice, "/open/lobby", json!("hi"))["successful"],
        true
    );
}

#[test]
fn a_wildcard_subscription_does_not_bypass_a_stricter_channel_policy() {
    let mut bus = Bus::new();
    bus.engine.set_policy(
        &pattern("/chat/secret"),
        ChannelPolicy {
            subscribe: SubscribePolicy::Nobody,
            ..ChannelPolicy::DEFAULT
        },
    );
    let client = bus.session(&ws());
    assert_eq!(
        bus.subscribe(&ws(), &client, "/chat/secret")["error"],
        "403::Subscribe denied"
    );
    bus.subscribe(&ws(), &client, "/chat/*");
    bus.server_publish("/chat/secret", json!("classified"));
    bus.server_publish("/chat/open", json!("public"));
    assert_eq!(data_of(&bus.deliveries(&client)), [json!("public")]);
}

#[test]
fn an_exact_subscription_delivers_even_where_the_clients_wildcard_would_not() {
    // Existing subscriptions are not re-checked when a policy changes, but
    // wildcard deliveries are: a client subscribed both ways gets the message
    // once, through its exact subscription.
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let observer = bus.session(&ws());
    bus.subscribe(&ws(), &client, "/chat/*");
    bus.subscribe(&ws(), &client, "/chat/secret");
    bus.subscribe(&ws(), &observer, "/chat/*");
    bus.engine.set_policy(
        &pattern("/chat/secret"),
        ChannelPolicy {
            subscribe: SubscribePolicy::Nobody,
            ..ChannelPolicy::DEFAULT
        },
    );
    bus.server_publish("/chat/secret", json!("kept"));
    assert_eq!(data_of(&bus.deliveries(&client)), [json!("kept")]);
    assert!(data_of(&bus.deliveries(&observer)).is_empty());
}

#[test]
fn wildcards_one_segment_and_any_depth() {
    let mut bus = Bus::new();
    let one = bus.session(&ws());
    let any = bus.session(&ws());
    let both = bus.session(&ws());
    bus.subscribe(&ws(), &one, "/chat/*");
    bus.subscribe(&ws(), &any, "/chat/**");
    bus.subscribe(&ws(), &both, "/chat/*");
    bus.subscribe(&ws(), &both, "/chat/**");
    bus.subscribe(&ws(), &both, "/chat/a");
    bus.server_publish("/chat/a", json!("a"));
    bus.server_publish("/chat/a/b", json!("ab"));
    bus.server_publish("/chat", json!("chat"));
    assert_eq!(data_of(&bus.deliveries(&one)), [json!("a")]);
    assert_eq!(data_of(&bus.deliveries(&any)), [json!("a"), json!("ab")]);
    // Matched by three subscriptions, delivered once.
    assert_eq!(data_of(&bus.deliveries(&both)), [json!("a"), json!("ab")]);
    // Publishing on a wildcard is an error.
    assert_eq!(
        bus.publish(&ws(), &any, "/chat/*", json!(1))["error"],
        "400::Cannot publish to a wildcard channel"
    );
    // A wildcard before the last segment is invalid.
    assert_eq!(
        bus.subscribe(&ws(), &any, "/chat/**/x")["error"],
        "400::Invalid subscription: a wildcard may only be the whole last segment"
    );
}

#[test]
fn record_watcher_channels_with_base64_characters() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let listener = bus.session(&ws());
    let channel = "/rw/default/incident/YWN0aXZlPXRydWU+Xm9yZGVyQnk=.v-1_x~y";
    assert_eq!(bus.subscribe(&ws(), &listener, channel)["successful"], true);
    assert_eq!(bus.subscribe(&ws(), &client, channel)["successful"], true);
    assert_eq!(
        bus.publish(&ws(), &client, channel, json!({"sys_id": "1"}))["successful"],
        true
    );
    let got = bus.deliveries(&listener);
    assert_eq!(got[0]["channel"], channel);
}

// --- service and meta channels ------------------------------------------

#[test]
fn service_channels_go_to_server_side_handlers_only() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let spy = bus.session(&ws());
    bus.subscribe(&ws(), &spy, "/**");
    assert_eq!(
        bus.subscribe(&ws(), &spy, "/service/echo")["error"],
        "403::Cannot subscribe to a service channel"
    );
    assert_eq!(
        bus.publish(&ws(), &client, "/service/echo", json!("ping"))["error"],
        "404::No handler for this service channel"
    );
    bus.engine.add_service(&pattern("/service/**"));
    bus.events();
    let ack = bus.publish(&ws(), &client, "/service/echo", json!("ping"));
    assert_eq!(
        ack,
        json!({"channel": "/service/echo", "id": "p", "successful": true})
    );
    let events = bus.events();
    let request = events
        .iter()
        .find_map(|e| match e {
            Event::Service(request) => Some(request.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(request.channel.as_str(), "/service/echo");
    assert_eq!(request.data, json!("ping"));
    assert_eq!(request.client_id, client);
    assert_eq!(request.id, Some(json!("p")));
    assert!(
        bus.deliveries(&spy).is_empty(),
        "service messages are never relayed"
    );

    // The handler answers the one client.
    bus.engine
        .deliver(
            bus.now,
            &request.client_id,
            &name("/service/echo"),
            json!("pong"),
        )
        .unwrap();
    assert_eq!(data_of(&bus.deliveries(&client)), [json!("pong")]);
    assert!(bus.deliveries(&spy).is_empty());
}

#[test]
fn meta_channels_are_never_subscribed_nor_relayed() {
    let mut bus = Bus::new();
    let spy = bus.session(&ws());
    for meta in ["/meta/connect", "/meta/*", "/meta/**", "/meta"] {
        assert_eq!(
            bus.subscribe(&ws(), &spy, meta)["error"],
            "403::Cannot subscribe to a meta channel",
            "{meta}"
        );
    }
    bus.subscribe(&ws(), &spy, "/**");
    bus.subscribe(&ws(), &spy, "/*");
    // Another client's whole life cycle relays nothing.
    let other = bus.session(&ws());
    bus.subscribe(&ws(), &other, "/x/*");
    bus.call(
        &ws(),
        json!({"channel": "/meta/disconnect", "clientId": other.as_str()}),
    );
    assert!(bus.deliveries(&spy).is_empty());
    // Publishing on a made-up meta channel is an error.
    assert_eq!(
        bus.publish(&ws(), &spy, "/meta/custom", json!(1))["error"],
        "400::Unknown meta channel"
    );
    assert_eq!(
        bus.engine
            .publish(bus.now, &name("/meta/connect"), json!(1)),
        Err(BayeuxError::fixed(400, "Cannot publish to a meta channel"))
    );
}

// --- batching and bad input -----------------------------------------------

#[test]
fn batches_reply_in_order_with_ids_echoed() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    let id = client.as_str();
    let replies = bus.call(
        &lp(),
        json!([
            {"channel": "/meta/subscribe", "clientId": id, "subscription": "/a", "id": "1"},
            {"channel": "/a", "clientId": id, "data": "x", "id": "2"},
            {"channel": "/b", "clientId": id, "data": "x", "id": "3"},
            {"channel": "/meta/unsubscribe", "clientId": id, "subscription": "/a", "id": 4},
        ]),
    );
    assert_eq!(
        channels(&replies),
        ["/meta/subscribe", "/a", "/b", "/meta/unsubscribe"]
    );
    let ids: Vec<_> = replies.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("1"), json!("2"), json!("3"), json!(4)]);
    assert_eq!(
        replies[1],
        json!({"channel": "/a", "id": "2", "successful": true})
    );
    assert_eq!(replies[2]["error"], "403::Publish denied");
}

#[test]
fn a_single_object_is_a_batch_of_one() {
    let mut bus = Bus::new();
    let outcome = bus.engine.handle_body(
        bus.now,
        &lp(),
        br#"{"channel":"/meta/handshake","version":"1.0","id":"h"}"#,
    );
    let json = outcome.reply_json().unwrap();
    assert!(json.starts_with('['), "replies are always an array: {json}");
    assert_eq!(values(&outcome.replies)[0]["id"], "h");
}

#[test]
fn never_an_empty_array() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let outcome = bus.connect(&ws(), &client);
    assert!(outcome.held.is_some());
    assert_eq!(outcome.reply_json(), None);
    assert_eq!(encode_batch(&[]), None);
    // An empty request is an error, not an empty reply.
    let replies = values(&bus.engine.handle_body(bus.now, &lp(), b"[]").replies);
    assert_eq!(replies[0]["error"], "400::Empty batch");
}

#[test]
fn bad_input_gets_precise_errors_and_nothing_is_relayed() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let listener = bus.session(&ws());
    bus.subscribe(&ws(), &listener, "/**");
    bus.subscribe(&ws(), &client, "/**");
    let id = client.as_str();

    let replies = values(
        &bus.engine
            .handle_body(bus.now, &ws(), b"[{\"channel\":")
            .replies,
    );
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["successful"], false);
    assert!(
        replies[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("400::Malformed JSON")
    );

    let replies = bus.call(
        &ws(),
        json!([
            {"clientId": id, "data": 1, "id": "no-channel"},
            {"channel": "/a//b", "clientId": id, "data": 1, "id": "bad-channel"},
            {"channel": "/a b", "clientId": id, "data": 1, "id": "space"},
            {"channel": "/a", "clientId": id, "id": "no-data"},
            {"channel": "/a", "clientId": 42, "data": 1, "id": "bad-type"},
            "not an object",
            {"channel": "/meta/subscribe", "clientId": id, "id": "no-subscription"},
            {"channel": "/meta/subscribe", "clientId": id, "subscription": 7, "id": "bad-subscription"},
            {"channel": "/a", "clientId": id, "data": null, "id": "null-data-is-data"},
        ]),
    );
    let errors: Vec<_> = replies
        .iter()
        .map(|r| r["error"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(errors[0], "400::Missing channel");
    assert_eq!(errors[1], "400::Invalid channel: empty segment");
    assert_eq!(errors[2], "400::Invalid channel: invalid character ' '");
    assert_eq!(errors[3], "400::Missing data");
    assert!(
        errors[4].starts_with("400::Invalid message: invalid type"),
        "{}",
        errors[4]
    );
    assert_eq!(errors[5], "400::Message is not a JSON object");
    assert_eq!(errors[6], "400::Missing subscription");
    assert!(
        errors[7].starts_with("400::Invalid message"),
        "{}",
        errors[7]
    );
    assert_eq!(errors[8], "");
    let ids: Vec<_> = replies.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        ids[..5],
        [
            json!("no-channel"),
            json!("bad-channel"),
            json!("space"),
            json!("no-data"),
            json!("bad-type")
        ]
    );
    assert_eq!(replies[1]["channel"], "/a//b");
    assert_eq!(replies[4]["channel"], "/a");
    // Only the valid publish (null data) was relayed.
    assert_eq!(data_of(&bus.deliveries(&listener)), [Value::Null]);
}

#[test]
fn batch_limits() {
    let mut config = BusConfig::default();
    config.limits.batch = BatchLimits {
        max_bytes: 200,
        max_messages: 2,
    };
    let mut bus = Bus::with(config);
    let replies = bus.call(&lp(), json!([{}, {}, {}]));
    assert_eq!(replies[0]["error"], "400::Too many messages in batch");
    let replies = values(&bus.engine.handle_body(bus.now, &lp(), &[b' '; 201]).replies);
    assert_eq!(replies[0]["error"], "400::Batch too large");
}

#[test]
fn a_hundred_thousand_subscriptions_are_capped() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    let mut succeeded = 0;
    let mut refused = 0;
    for chunk in 0..100 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| {
                json!({"channel": "/meta/subscribe", "clientId": client.as_str(),
                       "subscription": format!("/flood/{chunk}/{i}"), "id": i})
            })
            .collect();
        for reply in bus.call(&lp(), Value::Array(batch)) {
            if reply["successful"] == true {
                succeeded += 1;
            } else {
                assert_eq!(reply["error"], "403::Too many subscriptions");
                refused += 1;
            }
        }
    }
    assert_eq!(succeeded, Limits::DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT);
    assert_eq!(refused, 100_000 - succeeded);
    assert_eq!(bus.engine.stats().subscription_patterns, succeeded);
    // Re-subscribing to something already held is not a new subscription.
    assert_eq!(
        bus.subscribe(&lp(), &client, "/flood/0/0")["successful"],
        true
    );
}

#[test]
fn a_slow_consumer_is_disconnected_not_allowed_to_grow() {
    let mut config = BusConfig::default();
    config.limits.max_queued_messages = 5;
    let mut bus = Bus::with(config);
    let slow = bus.session(&lp());
    bus.subscribe(&lp(), &slow, "/feed");
    // No connect is held: messages queue up.
    for i in 0..5 {
        bus.server_publish("/feed", json!(i));
    }
    assert_eq!(bus.engine.stats().queued_messages, 5);
    let last = bus.server_publish("/feed", json!(5));
    assert!(!bus.engine.has_session(&slow));
    assert!(bus.events().iter().any(|e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::QueueOverflow,
            ..
        }
    )));
    assert_eq!(
        values(&bus.connect(&lp(), &slow).replies)[0]["error"],
        "402::Unknown client"
    );

    // It comes back and replays what it missed from history.
    let again = bus.session(&lp());
    let reply = bus.subscribe_message(
        &lp(),
        json!({"channel": "/meta/subscribe", "clientId": again.as_str(), "subscription": "/feed",
               "ext": {"replay": last.offset.unwrap() - 6}}),
    );
    assert_eq!(reply["ext"]["replay"]["count"], 5, "{reply}");
    assert_eq!(
        reply["ext"]["replay"]["complete"], false,
        "the queue holds 5 of the 6"
    );
}

// --- expiry -----------------------------------------------------------------

#[test]
fn sessions_expire_after_max_interval_without_connect() {
    let mut bus = Bus::new();
    // Handshake, never connect.
    let idle = bus.handshake(&lp());
    // Connect once, then nothing.
    let quiet = bus.session(&lp());
    bus.subscribe(&lp(), &quiet, "/chat/room");
    // Keeps a connect held: alive.
    let alive = bus.session(&lp());
    let hold = bus.hold(&lp(), &alive);
    bus.events();

    bus.advance(Duration::from_millis(9_999));
    assert!(bus.engine.has_session(&idle));
    bus.advance(Duration::from_millis(1));
    assert!(!bus.engine.has_session(&idle));
    assert!(!bus.engine.has_session(&quiet));
    assert!(bus.engine.has_session(&alive));
    assert!(
        bus.engine.presence(&name("/chat/room")).is_empty(),
        "subscriptions removed"
    );
    let closed: Vec<_> = bus
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::SessionClosed {
                client_id, reason, ..
            } => Some((client_id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|(_, reason)| *reason == CloseReason::Expired)
    );
    assert_eq!(
        values(&bus.connect(&lp(), &quiet).replies)[0]["error"],
        "402::Unknown client"
    );

    // The held connect is answered at 30 s; the session then has
    // interval + maxInterval to connect again.
    bus.advance(Duration::from_secs(20));
    assert!(bus.poll(hold).is_some());
    bus.advance(Duration::from_secs(9));
    assert!(bus.engine.has_session(&alive));
    bus.advance(Duration::from_secs(1));
    assert!(!bus.engine.has_session(&alive));
}

#[test]
fn a_cancelled_connect_lets_the_session_expire() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let hold = bus.hold(&ws(), &client);
    bus.advance(Duration::from_secs(5));
    // The socket closed.
    bus.engine.cancel_connect(hold, bus.now);
    assert_eq!(bus.poll(hold), None);
    bus.advance(Duration::from_secs(10));
    assert!(!bus.engine.has_session(&client));
}

// --- presence ----------------------------------------------------------------

#[test]
fn presence_join_and_leave_events() {
    let mut bus = Bus::new();
    let watcher = bus.session(&ws());
    let alice_ctx = ws().with_user("alice");
    let alice = bus.session(&alice_ctx);
    let bob = bus.session(&ws());
    bus.subscribe(&ws(), &bob, "/chat/room");

    // Subscribing to the presence channel lists the members.
    let reply = bus.subscribe(&ws(), &watcher, "/presence/chat/room");
    assert_eq!(
        reply["ext"]["presence"],
        json!({"channel": "/chat/room", "members": [{"clientId": bob.as_str(), "user": null}], "complete": true})
    );
    bus.events();

    bus.subscribe(&alice_ctx, &alice, "/chat/room");
    let joined = bus.deliveries(&watcher);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["channel"], "/presence/chat/room");
    assert_eq!(
        joined[0]["data"],
        json!({"action": "join", "channel": "/chat/room", "clientId": alice.as_str(), "user": "alice"})
    );
    assert!(bus.events().iter().any(|e| matches!(
        e,
        Event::Presence(PresenceChange {
            action: PresenceAction::Join,
            ..
        })
    )));
    let mut members: Vec<_> = bus
        .engine
        .presence(&name("/chat/room"))
        .into_iter()
        .map(|m| (m.client_id, m.user))
        .collect();
    members.sort();
    let mut expected = vec![
        (alice.clone(), Some(Arc::from("alice"))),
        (bob.clone(), None),
    ];
    expected.sort();
    assert_eq!(members, expected);

    // Unsubscribe and disconnect both leave.
    bus.call(
        &alice_ctx,
        json!({"channel": "/meta/unsubscribe", "clientId": alice.as_str(), "subscription": "/chat/room"}),
    );
    bus.call(
        &ws(),
        json!({"channel": "/meta/disconnect", "clientId": bob.as_str()}),
    );
    let left = bus.deliveries(&watcher);
    let actions: Vec<_> = left
        .iter()
        .map(|m| (m["data"]["action"].clone(), m["data"]["clientId"].clone()))
        .collect();
    assert_eq!(
        actions,
        [
            (json!("leave"), json!(alice.as_str())),
            (json!("leave"), json!(bob.as_str()))
        ]
    );

    // Wildcard subscribers are not members; clients cannot fake presence.
    bus.subscribe(&ws(), &watcher, "/chat/*");
    assert!(bus.engine.presence(&name("/chat/room")).is_empty());
    assert_eq!(
        bus.publish(
            &ws(),
            &watcher,
            "/presence/chat/room",
            json!({"action": "join"})
        )["error"],
        "403::Publish denied"
    );
}

#[test]
fn expiry_publishes_presence_leave() {
    let mut bus = Bus::new();
    let watcher = bus.session(&ws());
    bus.subscribe(&ws(), &watcher, "/presence/chat/room");
    let hold = bus.hold(&ws(), &watcher);
    let ghost = bus.session(&lp());
    bus.subscribe(&lp(), &ghost, "/chat/room");
    bus.deliveries(&watcher);
    bus.advance(Duration::from_secs(10));
    let left = bus.deliveries(&watcher);
    assert_eq!(left[0]["data"]["action"], "leave");
    assert_eq!(left[0]["data"]["clientId"], ghost.as_str());
    let _ = hold;
}

// --- no loss: history and the ack extension ----------------------------------------

#[test]
fn replay_on_resubscribe_within_the_window() {
    let mut bus = Bus::new();
    let first = bus.server_publish("/chat/room", json!(1)).offset.unwrap();
    bus.server_publish("/chat/other", json!("other"));
    bus.server_publish("/chat/room", json!(2));
    bus.server_publish("/chat/room", json!(3));

    // A client that saw offset `first` comes back (new session).
    let client = bus.session(&ws());
    let outcome = bus.send(
        &ws(),
        json!({"channel": "/meta/subscribe", "clientId": client.as_str(), "subscription": "/chat/room",
               "id": "s", "ext": {"replay": first}}),
    );
    let replies = values(&outcome.replies);
    // Over WebSocket the replayed messages follow the reply in the same frame.
    assert_eq!(
        channels(&replies),
        ["/meta/subscribe", "/chat/room", "/chat/room"]
    );
    assert_eq!(
        replies[0]["ext"]["replay"],
        json!({"after": first, "count": 2, "complete": true})
    );
    assert_eq!(data_of(&replies), [json!(2), json!(3)]);
    let offsets: Vec<_> = replies[1..]
        .iter()
        .map(|m| m["ext"]["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets[0] > first && offsets[1] > offsets[0]);

    // A wildcard replays all its channels, in offset order.
    let other = bus.session(&lp());
    let reply = bus.subscribe_message(
        &lp(),
        json!({"channel": "/meta/subscribe", "clientId": other.as_str(), "subscription": "/chat/*",
               "ext": {"replay": 0}}),
    );
    assert_eq!(reply["ext"]["replay"]["count"], 4);
    // Over long-polling they ride on the next connect.
    let response = values(&bus.connect(&lp(), &other).replies);
    assert_eq!(
        data_of(&response),
        [json!(1), json!("other"), json!(2), json!(3)]
    );

    // Past the window, history is gone and the reply says so.
    bus.advance(HistoryConfig::DEFAULT_WINDOW);
    let late = bus.session(&lp());
    let reply = bus.subscribe_message(
        &lp(),
        json!({"channel": "/meta/subscribe", "clientId": late.as_str(), "subscription": "/chat/room",
               "ext": {"replay": first}}),
    );
    assert_eq!(
        reply["ext"]["replay"],
        json!({"after": first, "count": 0, "complete": false})
    );
}

#[test]
fn ack_extension_resends_unacknowledged_batches() {
    let mut bus = Bus::new();
    let client = bus.handshake_with_ack(&ws());
    let publisher = bus.session(&ws());
    bus.subscribe(&ws(), &client, "/chat/room");
    bus.subscribe(&ws(), &publisher, "/chat/room");
    let first = values(
        &bus.connect_message(&ws(), &client, json!({"ack": 0}))
            .replies,
    );
    assert_eq!(first.last().unwrap()["ext"]["ack"], 1);

    let hold = bus
        .connect_message(&ws(), &client, json!({"ack": 1}))
        .held
        .unwrap()
        .hold_id;
    bus.events();
    bus.publish(&ws(), &publisher, "/chat/room", json!("m1"));
    // With acks, deliveries travel on connect replies only, even on WebSocket.
    assert_eq!(bus.wakes(), vec![client.clone()]);
    assert!(bus.deliveries(&client).is_empty());
    let response = bus.poll(hold).unwrap();
    assert_eq!(data_of(&response), [json!("m1")]);
    assert_eq!(response.last().unwrap()["ext"]["ack"], 2);

    // That response was lost: the client still acknowledges 1 only. The
    // connect is answered at once with m1 again.
    bus.publish(&ws(), &publisher, "/chat/room", json!("m2"));
    let outcome = bus.connect_message(&ws(), &client, json!({"ack": 1}));
    assert!(outcome.held.is_none());
    let response = values(&outcome.replies);
    assert_eq!(data_of(&response), [json!("m1"), json!("m2")]);
    assert_eq!(response.last().unwrap()["ext"]["ack"], 3);

    // Acknowledged: nothing to resend, the connect is held.
    assert!(
        bus.connect_message(&ws(), &client, json!({"ack": 3}))
            .held
            .is_some()
    );
    assert_eq!(bus.engine.stats().queued_messages, 0);
}

#[test]
fn without_ack_the_handshake_does_not_announce_it() {
    let mut bus = Bus::new();
    let (_, reply) = bus.handshake_with(
        &ws(),
        json!({"channel": "/meta/handshake", "version": "1.0"}),
    );
    assert!(reply.get("ext").is_none());
}

// --- server side --------------------------------------------------------------

#[test]
fn server_side_publish_deliver_and_disconnect() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    bus.subscribe(&lp(), &client, "/news");
    let hold = bus.hold(&lp(), &client);
    bus.events();
    let published = bus.server_publish("/news", json!({"headline": "x"}));
    assert_eq!(published.recipients, 1);
    assert_eq!(bus.wakes(), vec![client.clone()]);
    let response = bus.poll(hold).unwrap();
    assert_eq!(response[0]["ext"]["offset"], published.offset.unwrap());

    assert_eq!(
        bus.engine.publish(bus.now, &name("/service/x"), json!(1)),
        Err(BayeuxError::fixed(
            400,
            "Cannot broadcast on a service channel"
        ))
    );
    let stranger = ClientId::from_random([7; 16]);
    assert_eq!(
        bus.engine
            .deliver(bus.now, &stranger, &name("/x"), json!(1)),
        Err(BayeuxError::UNKNOWN_CLIENT)
    );

    let hold = bus.hold(&lp(), &client);
    assert!(bus.engine.disconnect(&client, bus.now));
    let response = bus.poll(hold).unwrap();
    assert_eq!(response[0]["advice"]["reconnect"], "none");
    assert!(!bus.engine.disconnect(&client, bus.now));
}

struct TokenAuthorizer;

impl Authorizer for TokenAuthorizer {
    fn handshake(
        &mut self,
        request: &HandshakeRequest<'_>,
    ) -> Result<Option<Arc<str>>, BayeuxError> {
        match request.message.ext_field("token").and_then(Value::as_str) {
            Some("good") => Ok(Some(Arc::from("token-user"))),
            _ => Err(BayeuxError::HANDSHAKE_DENIED),
        }
    }

    fn publish(
        &mut self,
        _: &SessionInfo<'_>,
        _: &ChannelName,
        data: &Value,
    ) -> Result<(), BayeuxError> {
        if data.is_string() {
            Ok(())
        } else {
            Err(BayeuxError::new(400, "Invalid data: expected a string"))
        }
    }
}

#[test]
fn an_authorizer_checks_handshake_tokens_and_validates_data() {
    let mut bus = Bus::new();
    bus.engine.set_authorizer(TokenAuthorizer);
    let replies = bus.call(
        &ws(),
        json!({"channel": "/meta/handshake", "version": "1.0", "ext": {"token": "bad"}}),
    );
    assert_eq!(replies[0]["error"], "403::Handshake denied");
    assert_eq!(replies[0]["advice"]["reconnect"], "none");
    let (client, _) = bus.handshake_with(
        &ws(),
        json!({"channel": "/meta/handshake", "version": "1.0", "ext": {"token": "good"}}),
    );
    assert_eq!(
        bus.engine.session_info(&client).unwrap().user,
        Some("token-user")
    );
    bus.subscribe(&ws(), &client, "/a");
    assert_eq!(
        bus.publish(&ws(), &client, "/a", json!(1))["error"],
        "400::Invalid data: expected a string"
    );
    assert_eq!(
        bus.publish(&ws(), &client, "/a", json!("ok"))["successful"],
        true
    );
}

#[test]
fn session_limit() {
    let mut config = BusConfig::default();
    config.limits.max_sessions = 2;
    let mut bus = Bus::with(config);
    bus.handshake(&lp());
    bus.handshake(&lp());
    let replies = bus.call(
        &lp(),
        json!({"channel": "/meta/handshake", "version": "1.0"}),
    );
    assert_eq!(replies[0]["error"], "503::Too many sessions");
}

#[test]
fn a_repeating_random_source_is_an_error_not_a_hang() {
    let mut bus = Bus {
        engine: Engine::new(BusConfig::default(), || [9u8; 16]),
        now: Instant::now(),
    };
    bus.handshake(&lp());
    let replies = bus.call(&lp(), json!({"channel": "/meta/handshake"}));
    assert_eq!(replies[0]["error"], "500::Could not allocate a client id");
}

#[test]
fn the_engine_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Engine>();
    assert_send::<Event>();
    assert_send::<Outbound>();
}

#[test]
fn stats_count_what_is_held() {
    let mut bus = Bus::new();
    let a = bus.session(&ws());
    let b = bus.session(&lp());
    bus.subscribe(&ws(), &a, "/x");
    bus.subscribe(&lp(), &b, "/x");
    bus.hold(&lp(), &b);
    bus.server_publish("/x", json!(1));
    let stats = bus.engine.stats();
    assert_eq!(stats.sessions, 2);
    assert_eq!(stats.websocket_sessions, 1);
    assert_eq!(stats.long_polling_sessions, 1);
    assert_eq!(stats.held_connects, 1);
    assert_eq!(stats.subscription_patterns, 1);
    assert_eq!(stats.history_messages, 1, "presence joins are not kept");
    assert_eq!(stats.queued_messages, 2);
}
