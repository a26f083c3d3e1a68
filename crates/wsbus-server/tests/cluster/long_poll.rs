//! Long-polling without sticky sessions (SPEC §7): three `wsbus serve`
//! nodes over one `redis-server` of the test's own, and Bayeux clients
//! whose every request goes to the next node in turn. A client's requests
//! are run by the node that owns it (the one that answered its handshake),
//! forwarded there by whichever node they reach; when that node is gone,
//! the client is told to handshake again, in time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::redis::RedisServer;

use crate::support::{SETTLE, eventually, metric, node, post_json, wait_up};

/// The bus's hold timeout (`BusConfig::DEFAULT_TIMEOUT`: `wsbus serve`
/// does not change it); a request's
/// [`READ_TIMEOUT`](crate::support::READ_TIMEOUT) is longer.
const HOLD: Duration = Duration::from_secs(30);

/// One long-polling request to `addr`: the response's messages.
fn post(addr: &str, batch: &Value) -> Vec<Value> {
    match post_json(addr, "/amb", batch, "") {
        Value::Array(messages) => messages,
        other => panic!("POST /amb to {addr}: not a batch: {other}"),
    }
}

/// A long-polling Bayeux client that sends each request to the next node
/// in turn (a round-robin balancer without stickiness).
struct RoundRobin {
    nodes: Vec<String>,
    next: usize,
    client_id: String,
    id: u64,
}

impl RoundRobin {
    /// Handshakes on `nodes[first]`, which owns the client from then on.
    fn handshake(nodes: &[&ServerProcess], first: usize) -> RoundRobin {
        let mut client = RoundRobin {
            nodes: nodes.iter().map(|n| n.addr.clone()).collect(),
            next: first,
            client_id: String::new(),
            id: 0,
        };
        let reply = client.send(json!({"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"]}));
        assert_eq!(reply[0]["successful"], true, "{reply:?}");
        client.client_id = reply[0]["clientId"].as_str().unwrap().to_owned();
        client
    }

    /// The node the next request goes to.
    fn next_addr(&mut self) -> String {
        let addr = self.nodes[self.next % self.nodes.len()].clone();
        self.next += 1;
        addr
    }

    /// Sends one message (with this client's id and a fresh message id)
    /// to the next node.
    fn send(&mut self, mut message: Value) -> Vec<Value> {
        let addr = self.next_addr();
        self.id += 1;
        message["id"] = json!(self.id.to_string());
        if !self.client_id.is_empty() {
            message["clientId"] = json!(self.client_id);
        }
        post(&addr, &json!([message]))
    }

    fn connect(&mut self) -> Vec<Value> {
        self.send(json!({"channel": "/meta/connect", "connectionType": "long-polling"}))
    }

    fn reply<'a>(replies: &'a [Value], channel: &str) -> &'a Value {
        replies
            .iter()
            .find(|m| m["channel"] == channel && m.get("successful").is_some())
            .unwrap_or_else(|| panic!("no {channel} reply in {replies:?}"))
    }
}

/// Whether `replies` answer as for an unknown client, telling it to
/// handshake again.
fn unknown_client(replies: &[Value]) -> bool {
    !replies.is_empty()
        && replies.iter().all(|m| {
            m["successful"] == false
                && m["error"] == "402::Unknown client"
                && m["advice"]["reconnect"] == "handshake"
        })
}

/// A subscriber and a publisher, each sending every request to the next
/// node: handshake, subscribe, a held connect released by the publisher's
/// message (published through yet other nodes), unsubscribe, disconnect.
#[test]
fn a_long_polling_session_is_served_by_whichever_node_a_request_reaches() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 51, &[]),
        node(&redis.url(), 52, &[]),
        node(&redis.url(), 53, &[]),
    ];
    wait_up(&nodes);
    let all: Vec<&ServerProcess> = nodes.iter().collect();

    let mut subscriber = RoundRobin::handshake(&all, 0);
    assert!(
        subscriber.client_id.starts_with("51_"),
        "the id names its owner: {}",
        subscriber.client_id
    );
    // The first connect is answered at once (on node 52, forwarded).
    let first = subscriber.connect();
    assert_eq!(
        RoundRobin::reply(&first, "/meta/connect")["successful"],
        true
    );
    let subscribed =
        subscriber.send(json!({"channel": "/meta/subscribe", "subscription": "/lp/room"}));
    assert_eq!(
        RoundRobin::reply(&subscribed, "/meta/subscribe")["successful"],
        true,
        "{subscribed:?}"
    );
    let mut publisher = RoundRobin::handshake(&all, 2);
    assert!(publisher.client_id.starts_with("53_"));
    // Publishing takes a subscription to the channel (the default policy).
    let joined = publisher.send(json!({"channel": "/meta/subscribe", "subscription": "/lp/room"}));
    assert_eq!(
        RoundRobin::reply(&joined, "/meta/subscribe")["successful"],
        true
    );

    // Until one of the publisher's messages comes back through a held
    // connect (the owner's subscription reaches Redis a moment after the
    // subscribe), the subscriber holds connects on nodes it does not live
    // on, and the publisher publishes through nodes it does not live on.
    let deadline = Instant::now() + SETTLE;
    let mut received = Vec::new();
    let mut published = 0;
    while received.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no message reached the subscriber"
        );
        // Never the owner: the connect is forwarded and held there.
        if subscriber.next.is_multiple_of(3) {
            subscriber.next += 1;
        }
        let addr = subscriber.next_addr();
        subscriber.id += 1;
        let connect = json!([{"channel": "/meta/connect", "connectionType": "long-polling",
            "clientId": subscriber.client_id, "id": subscriber.id.to_string()}]);
        let held = std::thread::spawn(move || post(&addr, &connect));
        published += 1;
        let reply = publisher.send(json!({"channel": "/lp/room", "data": {"n": published}}));
        assert_eq!(
            RoundRobin::reply(&reply, "/lp/room")["successful"],
            true,
            "{reply:?}"
        );
        let replies = held.join().unwrap();
        assert_eq!(
            RoundRobin::reply(&replies, "/meta/connect")["successful"],
            true
        );
        received.extend(
            replies
                .into_iter()
                .filter(|m| m["channel"] == "/lp/room" && m.get("data").is_some()),
        );
    }
    // What arrives comes in publish order, once.
    let numbers: Vec<u64> = received
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(*numbers.last().unwrap(), published, "{numbers:?}");

    let unsubscribed =
        subscriber.send(json!({"channel": "/meta/unsubscribe", "subscription": "/lp/room"}));
    assert_eq!(
        RoundRobin::reply(&unsubscribed, "/meta/unsubscribe")["successful"],
        true
    );
    for client in [&mut subscriber, &mut publisher] {
        let bye = client.send(json!({"channel": "/meta/disconnect"}));
        assert_eq!(
            RoundRobin::reply(&bye, "/meta/disconnect")["successful"],
            true,
            "{bye:?}"
        );
        // Gone on its owner, hence on every node.
        assert!(unknown_client(&client.connect()));
    }
}

/// A client whose node was killed: a connect held for it (forwarded to
/// its owner, which died while holding it) and a new request for it, on
/// another node, are both answered `402::Unknown client` with advice to
/// handshake again, within their deadlines; the handshake that follows
/// works, on whichever node.
#[test]
fn a_client_whose_node_died_is_told_to_handshake_again_in_time() {
    let redis = RedisServer::start();
    let mut nodes = vec![
        node(&redis.url(), 61, &[]),
        node(&redis.url(), 62, &[]),
        node(&redis.url(), 63, &[]),
    ];
    wait_up(&nodes);
    let survivors: Vec<String> = nodes[..2].iter().map(|n| n.addr.clone()).collect();
    let all: Vec<&ServerProcess> = nodes.iter().collect();
    let mut client = RoundRobin::handshake(&all, 2);
    assert!(client.client_id.starts_with("63_"));
    let first = client.connect();
    assert_eq!(
        RoundRobin::reply(&first, "/meta/connect")["successful"],
        true
    );

    // A connect held at the owner, through node 61.
    let connect = json!([{"channel": "/meta/connect", "connectionType": "long-polling",
        "clientId": client.client_id, "id": "held"}]);
    let addr = survivors[0].clone();
    let started = Instant::now();
    let held = std::thread::spawn(move || (post(&addr, &connect), started.elapsed()));
    // Killed once the owner holds it.
    let owner = nodes[2].addr.clone();
    eventually(SETTLE, "the owner holds the forwarded connect", || {
        metric(&owner, "wsbus_bus_held_connects") == Some(1.0)
    });
    drop(nodes.remove(2));

    let (replies, took) = held.join().unwrap();
    assert!(unknown_client(&replies), "{replies:?}");
    // Held at most the hold, then the forwarding margin: never longer.
    assert!(
        took < HOLD + wsbus::bus::FORWARD_MARGIN + SETTLE,
        "took {took:?}"
    );

    // A new request for it is answered within the owner's accept timeout.
    let started = Instant::now();
    let replies = post(
        &survivors[1],
        &json!([{"channel": "/meta/connect", "connectionType": "long-polling",
            "clientId": client.client_id, "id": "after"}]),
    );
    assert!(unknown_client(&replies), "{replies:?}");
    assert!(
        started.elapsed() < wsbus_redis::forward::ACCEPT_TIMEOUT + SETTLE,
        "took {:?}",
        started.elapsed()
    );

    // The client handshakes again, where it lands, and carries on.
    let all: Vec<&ServerProcess> = nodes.iter().collect();
    let mut again = RoundRobin::handshake(&all, 0);
    let connect = again.connect();
    assert_eq!(
        RoundRobin::reply(&connect, "/meta/connect")["successful"],
        true
    );
}
