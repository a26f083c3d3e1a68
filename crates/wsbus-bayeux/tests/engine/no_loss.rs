//! No loss: replay from history on resubscribe, and the `ack` extension.

use serde_json::json;
use wsbus_bayeux::*;

use crate::support::*;

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
