//! Several nodes, one bus: the broadcasts and interest changes an engine
//! emits for a cluster, and messages from other nodes delivered here.

use std::time::Duration;

use serde_json::{Value, json};
use wsbus_bayeux::*;

use crate::support::*;

fn clustered() -> Bus {
    let mut bus = Bus::new();
    bus.engine.set_cluster_events(true);
    bus
}

fn broadcasts(events: Vec<Event>) -> Vec<ClusterPublish> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Broadcast(message) => Some(message),
            _ => None,
        })
        .collect()
}

fn interest_changes(events: Vec<Event>) -> Vec<InterestChange> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Interest(change) => Some(change),
            _ => None,
        })
        .collect()
}

fn remote(channel: &str, data: Value) -> ClusterPublish {
    ClusterPublish::plain(name(channel), data)
}

fn gained(p: &str) -> InterestChange {
    InterestChange::Gained(pattern(p))
}

fn lost(p: &str) -> InterestChange {
    InterestChange::Lost(pattern(p))
}

#[test]
fn no_cluster_events_unless_switched_on() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    bus.subscribe(&ws(), &client, "/chat/room");
    bus.publish(&ws(), &client, "/chat/room", json!("hi"));
    bus.server_publish("/chat/room", json!("news"));
    let events = bus.events();
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::Broadcast(_) | Event::Interest(_))),
        "{events:?}"
    );
    // The set is readable all the same.
    assert_eq!(bus.engine.interest(), [pattern("/chat/room")]);
}

#[test]
fn accepted_broadcasts_are_emitted_with_channel_and_data_only() {
    let mut bus = clustered();
    bus.engine.add_service(&pattern("/service/echo"));
    let alice = bus.session(&ws());
    bus.subscribe(&ws(), &alice, "/chat/room");
    let events = bus.events();
    // The presence join is a broadcast like any other.
    assert_eq!(
        broadcasts(events),
        [remote(
            "/presence/chat/room",
            json!({"action": "join", "channel": "/chat/room", "clientId": alice.as_str(), "user": null}),
        )]
    );

    bus.publish(&ws(), &alice, "/chat/room", json!({"text": "hi"}));
    let published = bus.server_publish("/chat/room", json!("news"));
    // This node's history offset stays on this node.
    assert!(published.offset.is_some());
    assert_eq!(
        broadcasts(bus.events()),
        [
            remote("/chat/room", json!({"text": "hi"})),
            remote("/chat/room", json!("news")),
        ]
    );

    // Not forwarded: a refused publish, a service call, a delivery to one
    // client, meta messages.
    let bob = bus.session(&ws());
    assert_eq!(
        bus.publish(&ws(), &bob, "/chat/room", json!("not subscribed"))["successful"],
        false
    );
    bus.deliveries(&alice);
    assert_eq!(
        bus.publish(&ws(), &alice, "/service/echo", json!("q"))["successful"],
        true
    );
    bus.engine
        .deliver(bus.now, &alice, &name("/chat/room"), json!("to alice"))
        .unwrap();
    bus.connect(&ws(), &alice);
    assert_eq!(broadcasts(bus.events()), []);

    // A presence leave is forwarded too.
    bus.engine.disconnect(&alice, bus.now);
    let forwarded = broadcasts(bus.events());
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(forwarded[0].channel, name("/presence/chat/room"));
    assert_eq!(forwarded[0].data["action"], "leave");
}

#[test]
fn a_message_from_another_node_reaches_exact_and_wildcard_subscribers_once() {
    let mut bus = clustered();
    let exact = bus.session(&ws());
    let one = bus.session(&ws());
    let deep = bus.session(&ws());
    let both = bus.session(&ws());
    let elsewhere = bus.session(&ws());
    bus.subscribe(&ws(), &exact, "/chat/room");
    bus.subscribe(&ws(), &one, "/chat/*");
    bus.subscribe(&ws(), &deep, "/chat/**");
    bus.subscribe(&ws(), &both, "/chat/room");
    bus.subscribe(&ws(), &both, "/chat/**");
    bus.subscribe(&ws(), &elsewhere, "/other");
    for client in [&exact, &one, &deep, &both, &elsewhere] {
        bus.deliveries(client);
    }
    bus.events();

    let recipients = bus
        .engine
        .receive(bus.now, remote("/chat/room", json!({"n": 1})))
        .unwrap();
    assert_eq!(recipients, 4);
    for client in [&exact, &one, &deep, &both] {
        assert_eq!(
            bus.deliveries(client),
            [json!({"channel": "/chat/room", "data": {"n": 1}})],
            "{client}"
        );
    }
    assert_eq!(bus.deliveries(&elsewhere), Vec::<Value>::new());
    // Never forwarded again, whatever the events.
    assert_eq!(broadcasts(bus.events()), []);
    let stats = bus.engine.stats();
    assert_eq!((stats.received, stats.publishes), (1, 0));
    // Not kept in this node's history: nothing to replay.
    let late = bus.session(&ws());
    let reply = bus.subscribe_message(
        &ws(),
        json!({"channel": "/meta/subscribe", "clientId": late.as_str(), "subscription": "/chat/room", "ext": {"replay": 0}}),
    );
    assert_eq!(reply["ext"]["replay"]["count"], 0, "{reply}");

    // A shared-history offset, once there is one, reaches the subscriber.
    bus.deliveries(&exact);
    let mut with_offset = remote("/chat/room", json!(2));
    with_offset.offset = Some(42);
    bus.engine.receive(bus.now, with_offset).unwrap();
    assert_eq!(bus.deliveries(&exact)[0]["ext"], json!({"offset": 42}));

    for channel in ["/meta/connect", "/service/echo"] {
        assert!(
            bus.engine
                .receive(bus.now, remote(channel, json!(1)))
                .is_err()
        );
    }
}

#[test]
fn interest_follows_first_and_last_subscribers() {
    let mut bus = Bus::with(BusConfig {
        max_interval: Duration::from_secs(10),
        ..BusConfig::default()
    });
    bus.engine.set_cluster_events(true);
    let a = bus.session(&ws());
    let b = bus.session(&lp());

    bus.subscribe(&ws(), &a, "/chat/room");
    bus.call(
        &ws(),
        json!({"channel": "/meta/subscribe", "clientId": a.as_str(), "subscription": ["/chat/*", "/chat/**"]}),
    );
    assert_eq!(
        interest_changes(bus.events()),
        [gained("/chat/room"), gained("/chat/*"), gained("/chat/**")]
    );
    // A second subscriber changes nothing.
    bus.subscribe(&lp(), &b, "/chat/room");
    bus.subscribe(&lp(), &b, "/chat/**");
    assert_eq!(interest_changes(bus.events()), []);
    assert_eq!(
        bus.engine.interest(),
        [
            pattern("/chat/*"),
            pattern("/chat/**"),
            pattern("/chat/room")
        ]
    );

    // The last one out: by unsubscribing…
    bus.call(
        &ws(),
        json!({"channel": "/meta/unsubscribe", "clientId": a.as_str(), "subscription": ["/chat/*", "/chat/room"]}),
    );
    assert_eq!(interest_changes(bus.events()), [lost("/chat/*")]);
    bus.call(
        &lp(),
        json!({"channel": "/meta/unsubscribe", "clientId": b.as_str(), "subscription": "/chat/room"}),
    );
    assert_eq!(interest_changes(bus.events()), [lost("/chat/room")]);
    // …by disconnecting…
    bus.call(
        &ws(),
        json!({"channel": "/meta/disconnect", "clientId": a.as_str()}),
    );
    assert_eq!(interest_changes(bus.events()), []);
    assert_eq!(bus.engine.interest(), [pattern("/chat/**")]);
    // …and by expiring.
    let watcher = bus.session(&lp());
    bus.subscribe(&lp(), &watcher, "/presence/chat/room");
    assert_eq!(
        interest_changes(bus.events()),
        [gained("/presence/chat/room")]
    );
    bus.advance(Duration::from_secs(11));
    assert!(!bus.engine.has_session(&b));
    let mut changes = interest_changes(bus.events());
    changes.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(changes, [lost("/chat/**"), lost("/presence/chat/room")]);
    assert_eq!(bus.engine.interest(), []);
}

fn presence_message(
    action: &str,
    channel: &str,
    client: &str,
    user: Option<&str>,
) -> ClusterPublish {
    remote(
        &format!("/presence{channel}"),
        json!({"action": action, "channel": channel, "clientId": client, "user": user}),
    )
}

fn member_ids(bus: &Bus, channel: &str) -> Vec<String> {
    let mut ids: Vec<String> = bus
        .engine
        .presence(&name(channel))
        .into_iter()
        .map(|m| m.client_id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Other nodes' members count here: in `presence`, in a watcher's subscribe
/// reply; a stopped node's members leave, and local watchers are told.
#[test]
fn other_nodes_members_are_listed_until_their_node_stops() {
    let mut bus = clustered();
    let local = bus.session(&ws());
    bus.subscribe(&ws(), &local, "/room");
    for (origin, client) in [(7, "r7"), (8, "r8")] {
        let join = presence_message("join", "/room", client, Some("u"));
        assert!(bus.engine.note_remote_presence(origin, &join));
        bus.engine.receive(bus.now, join).unwrap();
    }
    // Not a presence message: nothing noted.
    assert!(
        !bus.engine
            .note_remote_presence(7, &remote("/room", json!("hi")))
    );
    let mut expected = vec![local.as_str().to_owned(), "r7".into(), "r8".into()];
    expected.sort();
    assert_eq!(member_ids(&bus, "/room"), expected);

    let watcher = bus.session(&ws());
    let reply = bus.subscribe_message(
        &ws(),
        json!({"channel": "/meta/subscribe", "clientId": watcher.as_str(), "subscription": "/presence/room"}),
    );
    assert_eq!(
        reply["ext"]["presence"]["members"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{reply}"
    );
    bus.deliveries(&watcher);

    // A leave from its node, then node 8 stops.
    let leave = presence_message("leave", "/room", "r7", Some("u"));
    bus.engine.note_remote_presence(7, &leave);
    bus.events();
    assert_eq!(bus.engine.forget_origin(bus.now, 8), 1);
    let told = data_of(&bus.deliveries(&watcher));
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["action"], "leave");
    assert_eq!(told[0]["clientId"], "r8");
    assert_eq!(member_ids(&bus, "/room"), [local.as_str()]);
    // Nothing of this crosses again.
    assert!(broadcasts(bus.events()).is_empty());

    // A node's members as a store holds them replace what was known.
    bus.engine
        .set_remote_members(9, [(name("/room"), "r9".to_owned(), None)]);
    bus.engine
        .set_remote_members(9, [(name("/other"), "r9b".to_owned(), None)]);
    assert_eq!(member_ids(&bus, "/room"), [local.as_str()]);
    assert_eq!(member_ids(&bus, "/other"), ["r9b"]);
    assert_eq!(
        bus.engine
            .local_members()
            .into_iter()
            .map(|(c, id, _)| (c.as_str().to_owned(), id.as_str().to_owned()))
            .collect::<Vec<_>>(),
        [("/room".to_owned(), local.as_str().to_owned())]
    );
}
