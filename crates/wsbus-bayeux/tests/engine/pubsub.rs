//! Subscribing, publishing and unsubscribing: policies, wildcards, and
//! channel names.

use serde_json::json;
use wsbus_bayeux::*;

use crate::support::*;

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
