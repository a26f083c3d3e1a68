//! Presence: joins and leaves, on `/presence/…` and as events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wsbus_bayeux::*;

use crate::support::*;

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
    // The operators' channel listing: every pattern with its subscribers.
    assert_eq!(
        bus.engine.channels(),
        [
            ("/chat/room".to_owned(), 2),
            ("/presence/chat/room".to_owned(), 1)
        ]
    );

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
