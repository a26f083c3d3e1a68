//! `/meta/connect`: answered at once, held until the timeout, answered by
//! a newer connect, and the replies that wait with a held long-poll.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

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
