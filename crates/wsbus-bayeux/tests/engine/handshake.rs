//! Handshakes, transports, and requests naming an unknown client or
//! another user's client id.

use serde_json::json;
use wsbus_bayeux::*;

use crate::support::*;

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
