//! Sessions expire after `maxInterval` without a connect.

use std::time::Duration;

use wsbus_bayeux::*;

use crate::support::*;

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
