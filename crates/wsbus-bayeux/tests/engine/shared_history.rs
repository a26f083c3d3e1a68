//! History shared by all nodes: publishes delivered when they come back
//! with their shared offset, local delivery while the shared history is
//! down, replays that wait for it, and epochs that are gone.

use std::sync::Arc;

use serde_json::{Value, json};
use wsbus_bayeux::*;

use crate::support::*;

fn shared(state: SharedHistory) -> Bus {
    let mut bus = Bus::new();
    bus.engine.set_cluster_events(true);
    bus.engine.set_shared_history(state);
    bus
}

fn broadcasts(bus: &mut Bus) -> Vec<ClusterPublish> {
    bus.events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Broadcast(message) => Some(message),
            _ => None,
        })
        .collect()
}

fn history_requests(bus: &mut Bus) -> Vec<HistoryRequest> {
    bus.events()
        .into_iter()
        .filter_map(|event| match event {
            Event::HistoryWanted(request) => Some(request),
            _ => None,
        })
        .collect()
}

/// A message back from the shared history.
fn back(channel: &str, data: Value, offset: u64, epoch: &str) -> ClusterPublish {
    let mut message = ClusterPublish::plain(name(channel), data);
    message.offset = Some(offset);
    message.epoch = Some(Arc::from(epoch));
    message
}

fn replay_message(client: &ClientId, channel: &str, after: u64, epoch: Option<&str>) -> Value {
    let mut ext = json!({"replay": after});
    if let Some(epoch) = epoch {
        ext["epoch"] = json!(epoch);
    }
    json!({"channel": "/meta/subscribe", "clientId": client.as_str(), "subscription": channel,
           "id": "s", "ext": ext})
}

#[test]
fn a_publish_is_delivered_when_it_comes_back_with_its_shared_offset() {
    let mut bus = shared(SharedHistory::Up);
    let alice = bus.session(&ws());
    let bob = bus.session(&ws());
    bus.subscribe(&ws(), &alice, "/chat/room");
    bus.subscribe(&ws(), &bob, "/chat/room");
    bus.events();

    let ack = bus.publish(&ws(), &alice, "/chat/room", json!("hi"));
    assert_eq!(ack["successful"], true);
    assert!(bus.deliveries(&bob).is_empty(), "not before the offset");
    let sent = broadcasts(&mut bus);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].shared && !sent[0].delivered);
    assert_eq!(sent[0].publisher.as_ref(), Some(&alice));

    // It comes back (on every node) with its offset and epoch.
    let mut message = sent[0].clone();
    message.shared = false;
    message.offset = Some(7);
    message.epoch = Some(Arc::from("e1"));
    assert_eq!(bus.engine.receive(bus.now, message.clone()).unwrap(), 1);
    let got = bus.deliveries(&bob);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"], "hi");
    assert_eq!(got[0]["ext"], json!({"offset": 7, "epoch": "e1"}));
    assert!(bus.deliveries(&alice).is_empty(), "not to its publisher");
    // A second copy is a duplicate.
    assert_eq!(bus.engine.receive(bus.now, message).unwrap(), 0);
    assert!(bus.deliveries(&bob).is_empty());

    // Channels without history, presence among them, stay as they were.
    bus.engine.set_policy(
        &pattern("/live/**"),
        ChannelPolicy {
            history: false,
            ..ChannelPolicy::DEFAULT
        },
    );
    bus.subscribe(&ws(), &bob, "/live/x");
    bus.events();
    bus.server_publish("/live/x", json!(1));
    assert_eq!(bus.deliveries(&bob).len(), 1);
    assert!(broadcasts(&mut bus).iter().all(|m| !m.shared));
}

#[test]
fn while_the_shared_history_is_down_publishes_are_delivered_here_at_once_and_once() {
    let mut bus = shared(SharedHistory::Down);
    let alice = bus.session(&ws());
    bus.subscribe(&ws(), &alice, "/chat/room");
    bus.events();
    let published = bus.server_publish("/chat/room", json!("now"));
    assert_eq!(published.recipients, 1);
    let got = bus.deliveries(&alice);
    assert_eq!(got[0]["data"], "now");
    assert!(got[0].get("ext").is_none(), "no offset yet: {got:?}");
    let sent = broadcasts(&mut bus);
    assert!(sent[0].shared && sent[0].delivered);

    // Redis is back: it comes back with its offset, is kept, not delivered again.
    bus.engine.set_shared_history(SharedHistory::Up);
    let mut message = back("/chat/room", json!("now"), 1, "e1");
    message.delivered = true;
    assert_eq!(bus.engine.receive(bus.now, message).unwrap(), 0);
    assert!(bus.deliveries(&alice).is_empty());
    let later = bus.session(&ws());
    let replies = bus.call(&ws(), replay_message(&later, "/chat/room", 0, Some("e1")));
    assert_eq!(
        replies[0]["ext"]["replay"],
        json!({"after": 0, "count": 1, "complete": true, "epoch": "e1"})
    );
    assert_eq!(data_of(&replies), [json!("now")]);
}

#[test]
fn a_replay_older_than_this_node_knows_waits_for_the_shared_history() {
    let mut bus = shared(SharedHistory::Up);
    let watcher = bus.session(&ws());
    bus.subscribe(&ws(), &watcher, "/chat/room");
    // This node joined at offset 5.
    for offset in 5..=7 {
        bus.engine
            .receive(bus.now, back("/chat/room", json!(offset), offset, "e1"))
            .unwrap();
    }
    bus.events();

    // From offset 6: this node has it all.
    let near = bus.session(&ws());
    let replies = bus.call(&ws(), replay_message(&near, "/chat/room", 6, Some("e1")));
    assert_eq!(replies[0]["ext"]["replay"]["count"], 1);
    assert_eq!(data_of(&replies), [json!(7)]);
    assert!(history_requests(&mut bus).is_empty());

    // From offset 2 (assigned before this node followed the channel): the
    // subscribe waits, and nothing is subscribed meanwhile.
    let far = bus.session(&ws());
    let outcome = bus.send(&ws(), replay_message(&far, "/chat/room", 2, Some("e1")));
    assert!(outcome.replies.is_empty(), "{:?}", outcome.replies);
    let requests = history_requests(&mut bus);
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].channel.as_str(), requests[0].after),
        ("/chat/room", 2)
    );
    bus.engine
        .receive(bus.now, back("/chat/room", json!(8), 8, "e1"))
        .unwrap();
    assert!(bus.deliveries(&far).is_empty());

    bus.engine.history_fetched(
        bus.now,
        requests[0].id,
        &name("/chat/room"),
        FetchedHistory::Found {
            epoch: Arc::from("e1"),
            last: 8,
            messages: (3..=8).map(|offset| (offset, json!(offset))).collect(),
        },
    );
    assert!(bus.wakes().contains(&far));
    let got = bus.deliveries(&far);
    assert_eq!(got[0]["channel"], "/meta/subscribe");
    assert_eq!(
        got[0]["ext"]["replay"],
        json!({"after": 2, "count": 6, "complete": true, "epoch": "e1"})
    );
    assert_eq!(
        data_of(&got),
        (3..=8).map(|offset| json!(offset)).collect::<Vec<_>>()
    );
    let offsets: Vec<u64> = got[1..]
        .iter()
        .map(|m| m["ext"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5, 6, 7, 8]);
    // Nothing after the position: complete all the same.
    let quiet = bus.session(&ws());
    bus.call(&ws(), replay_message(&quiet, "/quiet", 4, Some("q")));
    let requests = history_requests(&mut bus);
    bus.engine.history_fetched(
        bus.now,
        requests[0].id,
        &name("/quiet"),
        FetchedHistory::Found {
            epoch: Arc::from("q"),
            last: 4,
            messages: Vec::new(),
        },
    );
    assert_eq!(
        bus.deliveries(&quiet)[0]["ext"]["replay"],
        json!({"after": 4, "count": 0, "complete": true, "epoch": "q"})
    );

    // Now subscribed: the next message arrives once.
    bus.engine
        .receive(bus.now, back("/chat/room", json!(9), 9, "e1"))
        .unwrap();
    assert_eq!(data_of(&bus.deliveries(&far)), [json!(9)]);
}

#[test]
fn a_position_of_an_epoch_that_is_gone_is_reported_not_replayed() {
    let mut bus = shared(SharedHistory::Up);
    let client = bus.session(&ws());
    bus.call(
        &ws(),
        replay_message(&client, "/chat/room", 41, Some("old")),
    );
    let requests = history_requests(&mut bus);
    bus.engine.history_fetched(
        bus.now,
        requests[0].id,
        &name("/chat/room"),
        FetchedHistory::Found {
            epoch: Arc::from("new"),
            last: 2,
            messages: vec![(1, json!("a")), (2, json!("b"))],
        },
    );
    let got = bus.deliveries(&client);
    assert_eq!(got.len(), 1, "nothing replayed: {got:?}");
    assert_eq!(
        got[0]["ext"]["replay"],
        json!({"after": 41, "count": 0, "complete": false, "epoch": "new", "reset": true})
    );
    assert_eq!(got[0]["successful"], true, "subscribed all the same");

    // No history at all (a Redis that came back empty, nothing since).
    let other = bus.session(&ws());
    bus.call(&ws(), replay_message(&other, "/news", 3, Some("old")));
    let requests = history_requests(&mut bus);
    bus.engine.history_fetched(
        bus.now,
        requests[0].id,
        &name("/news"),
        FetchedHistory::Missing,
    );
    let got = bus.deliveries(&other);
    assert_eq!(
        got[0]["ext"]["replay"],
        json!({"after": 3, "count": 0, "complete": false, "epoch": null, "reset": true})
    );

    // Redis unreachable: answered from this node, incomplete.
    let third = bus.session(&ws());
    bus.call(&ws(), replay_message(&third, "/quiet", 3, None));
    let requests = history_requests(&mut bus);
    bus.engine.history_fetched(
        bus.now,
        requests[0].id,
        &name("/quiet"),
        FetchedHistory::Failed,
    );
    let got = bus.deliveries(&third);
    assert_eq!(got[0]["ext"]["replay"]["complete"], false);
    assert!(got[0]["ext"]["replay"].get("reset").is_none());
}
