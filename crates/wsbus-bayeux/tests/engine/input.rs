//! Batches, bad input, and the bounds on what one client can make the
//! server hold.

use serde_json::{Value, json};
use wsbus_bayeux::*;

use crate::support::*;

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
    assert_eq!(bus.engine.stats().replayed, 5, "counted for metrics");
    assert_eq!(
        reply["ext"]["replay"]["complete"], false,
        "the queue holds 5 of the 6"
    );
}
