//! The bus across nodes, in one process: two or three servers, each with its
//! own `Bus` (its own engine and hub, as separate nodes have), joined by a
//! loopback `BusCluster` that forwards every publish to the other nodes'
//! `receive_from_cluster` on a task per node (as a Redis subscriber would)
//! and records each node's interest. Clients speak real WebSocket and HTTP
//! long-polling to the nodes.

mod bayeux_client;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayeux_client::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wsbus::bayeux::{BusConfig, ChannelName, ChannelPattern, Limits};
use wsbus::bus::{BusCluster, ClusterPublish, InterestChange, ServiceCall};

/// How long a test waits for a condition before it fails: generous, so that
/// a loaded machine is slow, never wrong.
const DEADLINE: Duration = Duration::from_secs(20);

/// One node's side of the loopback: what it publishes goes to every other
/// node's queue; what it says about interest is recorded.
#[derive(Debug)]
struct Link {
    node: usize,
    /// Every node's queue, this node's own included (and skipped).
    queues: Vec<mpsc::UnboundedSender<ClusterPublish>>,
    /// What this node handed to the cluster, in order.
    published: Mutex<Vec<ClusterPublish>>,
    /// The patterns this node needs, as the changes add up.
    interest: Mutex<BTreeSet<String>>,
    /// Every change, in order.
    changes: Mutex<Vec<InterestChange>>,
    /// Messages from other nodes this node's bus has taken.
    received: AtomicUsize,
}

impl Link {
    fn new(node: usize, queues: Vec<mpsc::UnboundedSender<ClusterPublish>>) -> Self {
        Link {
            node,
            queues,
            published: Mutex::default(),
            interest: Mutex::default(),
            changes: Mutex::default(),
            received: AtomicUsize::new(0),
        }
    }

    fn published(&self) -> Vec<ClusterPublish> {
        self.published.lock().unwrap().clone()
    }

    fn interest(&self) -> BTreeSet<String> {
        self.interest.lock().unwrap().clone()
    }

    fn take_changes(&self) -> Vec<InterestChange> {
        std::mem::take(&mut *self.changes.lock().unwrap())
    }

    /// The changes recorded since the last take, once there are `count`
    /// (another thread's flush may hand them over a moment after the reply
    /// that caused them).
    async fn changes(&self, count: usize) -> Vec<InterestChange> {
        wait_until("the interest changes arrive", || {
            self.changes.lock().unwrap().len() >= count
        })
        .await;
        self.take_changes()
    }
}

impl BusCluster for Link {
    fn publish(&self, message: ClusterPublish) {
        for (node, queue) in self.queues.iter().enumerate() {
            if node != self.node {
                // A node whose receiver ended is gone: nothing to deliver.
                let _ = queue.send(message.clone());
            }
        }
        self.published.lock().unwrap().push(message);
    }

    fn interest(&self, change: InterestChange) {
        let mut interest = self.interest.lock().unwrap();
        match &change {
            InterestChange::Gained(pattern) => interest.insert(pattern.to_string()),
            InterestChange::Lost(pattern) => interest.remove(pattern.as_str()),
        };
        self.changes.lock().unwrap().push(change);
    }
}

/// Nodes joined by the loopback.
struct Cluster {
    nodes: Vec<TestBus>,
    links: Vec<Arc<Link>>,
}

/// Room for a burst in a long-polling subscriber's queue: the order test's
/// thousand messages may all arrive between two of its connects.
const QUEUE_ROOM: usize = 10_000;

async fn cluster(size: usize) -> Cluster {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..size).map(|_| mpsc::unbounded_channel()).unzip();
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    for (node, mut queue) in receivers.into_iter().enumerate() {
        let config = BusConfig {
            limits: Limits {
                max_queued_messages: QUEUE_ROOM,
                ..Limits::default()
            },
            ..BusConfig::default()
        };
        let test_bus = start_with(config).await;
        let link = Arc::new(Link::new(node, senders.clone()));
        test_bus.bus.set_cluster(link.clone()).unwrap();
        let bus = test_bus.bus.clone();
        let receiving = link.clone();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                bus.receive_from_cluster(message).unwrap();
                receiving.received.fetch_add(1, Ordering::SeqCst);
            }
        });
        nodes.push(test_bus);
        links.push(link);
    }
    Cluster { nodes, links }
}

impl Cluster {
    fn addr(&self, node: usize) -> &str {
        &self.nodes[node].addr
    }

    /// Waits until every node has taken every message the others published.
    async fn settled(&self) {
        wait_until("every node took the others' messages", || {
            let published: Vec<usize> = self.links.iter().map(|l| l.published().len()).collect();
            let total: usize = published.iter().sum();
            self.links
                .iter()
                .zip(&published)
                .all(|(link, own)| link.received.load(Ordering::SeqCst) == total - own)
        })
        .await;
    }
}

/// Polls `condition` until it holds, failing after [`DEADLINE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// Subscribes a long-polling client to `subscription`.
async fn lp_subscribe(addr: &str, id: &str, subscription: Value) {
    let reply = post(
        addr,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": subscription}]),
        None,
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
}

/// Subscribes a WebSocket client to `subscription`; what arrived meanwhile.
async fn ws_subscribe(ws: &mut wsbus::client::WebSocket, id: &str, subscription: Value) {
    ws_send(
        ws,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": subscription, "id": "s"}]),
    )
    .await;
    let seen = ws_until(ws, |m| m["id"] == "s").await;
    assert!(
        seen.iter()
            .any(|m| m["id"] == "s" && m["successful"] == true),
        "{seen:?}"
    );
}

/// The non-meta messages of a long-polling client until one of them
/// satisfies `done` (connects sent one after another, each held until
/// something arrives).
async fn lp_until(addr: &str, id: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let delivered = lp_connect(addr, id, None).await;
            let delivered: Vec<Value> = delivered
                .into_iter()
                .filter(|m| !m["channel"].as_str().unwrap().starts_with("/meta/"))
                .collect();
            let finished = delivered.iter().any(&done);
            seen.extend(delivered);
            if finished {
                return;
            }
        }
    })
    .await
    .expect("long-polling deliveries in time");
    seen
}

/// The `data` of the messages on `channel`.
fn data_on(channel: &str, messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["channel"] == channel && m.get("data").is_some())
        .map(|m| m["data"].clone())
        .collect()
}

fn is_end(message: &Value) -> bool {
    message["data"] == "end"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_reaches_every_nodes_subscribers_once_over_both_transports() {
    let c = cluster(3).await;
    // Node 1: a WebSocket client subscribed exactly and by `**` (once, as on
    // one node), another by `*`.
    let mut both = ws_open(c.addr(1), "/amb").await;
    let both_id = ws_client(&mut both).await;
    ws_subscribe(&mut both, &both_id, json!(["/chat/room", "/chat/**"])).await;
    let mut one = ws_open(c.addr(1), "/amb").await;
    let one_id = ws_client(&mut one).await;
    ws_subscribe(&mut one, &one_id, json!("/chat/*")).await;
    // Node 2: long-polling clients, one exact, one by `**`.
    let exact = lp_client(c.addr(2), None).await;
    lp_subscribe(c.addr(2), &exact, json!("/chat/room")).await;
    let deep = lp_client(c.addr(2), None).await;
    lp_subscribe(c.addr(2), &deep, json!("/chat/**")).await;
    // Node 0: the publisher (subscribed, as the default policy wants) and a
    // local subscriber.
    let mut publisher = ws_open(c.addr(0), "/amb").await;
    let publisher_id = ws_client(&mut publisher).await;
    ws_subscribe(&mut publisher, &publisher_id, json!("/chat/room")).await;
    let local = lp_client(c.addr(0), None).await;
    lp_subscribe(c.addr(0), &local, json!("/chat/room")).await;

    ws_send(
        &mut publisher,
        json!([{"channel": "/chat/room", "clientId": publisher_id, "data": "hello", "id": "p"}]),
    )
    .await;
    let ack = ws_until(&mut publisher, |m| m["id"] == "p").await;
    assert!(
        ack.iter()
            .any(|m| m["id"] == "p" && m["successful"] == true),
        "{ack:?}"
    );
    c.nodes[0]
        .bus
        .publish("/chat/room", json!("server"))
        .unwrap();
    c.nodes[0].bus.publish("/chat/room", json!("end")).unwrap();

    let expected = [json!("hello"), json!("server"), json!("end")];
    for ws in [&mut both, &mut one] {
        assert_eq!(data_on("/chat/room", &ws_until(ws, is_end).await), expected);
    }
    for (node, id) in [(2, &exact), (2, &deep), (0, &local)] {
        let seen = lp_until(c.addr(node), id, is_end).await;
        assert_eq!(data_on("/chat/room", &seen), expected, "{seen:?}");
    }
    // What crossed: the presence joins and the three messages, with channel
    // and data only (this node's history offset stays here).
    c.settled().await;
    let room = ChannelName::parse("/chat/room").unwrap();
    let crossed: Vec<ClusterPublish> = c.links[0]
        .published()
        .into_iter()
        .filter(|m| m.channel == room)
        .collect();
    assert_eq!(crossed.len(), 3, "{crossed:?}");
    assert!(crossed.iter().all(|m| m.offset.is_none()));
}

/// One publisher's thousand messages, over WebSocket on node 0, reach a
/// WebSocket subscriber on node 1 and a long-polling one on node 2 in
/// publish order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publishers_order_holds_on_every_node() {
    const MESSAGES: usize = 1_000;
    /// Messages per WebSocket frame of the publisher.
    const FRAME: usize = 10;
    let c = cluster(3).await;
    let mut subscriber = ws_open(c.addr(1), "/amb").await;
    let subscriber_id = ws_client(&mut subscriber).await;
    ws_subscribe(&mut subscriber, &subscriber_id, json!("/order")).await;
    let polling = lp_client(c.addr(2), None).await;
    lp_subscribe(c.addr(2), &polling, json!("/order")).await;
    let mut publisher = ws_open(c.addr(0), "/amb").await;
    let publisher_id = ws_client(&mut publisher).await;
    ws_subscribe(&mut publisher, &publisher_id, json!("/order")).await;

    for first in (0..MESSAGES).step_by(FRAME) {
        let frame: Vec<Value> = (first..first + FRAME)
            .map(|n| json!({"channel": "/order", "clientId": publisher_id, "data": n, "id": n.to_string()}))
            .collect();
        ws_send(&mut publisher, Value::Array(frame)).await;
    }
    let last = json!(MESSAGES - 1);
    let in_order: Vec<Value> = (0..MESSAGES).map(|n| json!(n)).collect();
    let seen = ws_until(&mut subscriber, |m| m["data"] == last).await;
    assert_eq!(data_on("/order", &seen), in_order);
    let seen = lp_until(c.addr(2), &polling, |m| m["data"] == last).await;
    assert_eq!(data_on("/order", &seen), in_order);
}

/// `/service/**`, `/meta/**` and `deliver` stay on their node, and a message
/// from another node is never forwarded again (three nodes: no loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_meta_and_deliveries_stay_home_and_nothing_crosses_twice() {
    let c = cluster(3).await;
    c.nodes[0]
        .bus
        .add_service("/service/echo", |call: ServiceCall| async move {
            call.reply(json!({"echo": call.data})).unwrap();
            // `Bus::deliver`: to one client, on a broadcast channel.
            call.bus()
                .deliver(&call.client_id, "/chat/room", json!("only you"))
                .unwrap();
        })
        .unwrap();
    // Everything-watchers on the other nodes: they would see anything that
    // crossed.
    let mut watchers = Vec::new();
    for node in [1, 2] {
        let watcher = lp_client(c.addr(node), None).await;
        lp_subscribe(c.addr(node), &watcher, json!("/**")).await;
        watchers.push((node, watcher));
    }
    let mut client = ws_open(c.addr(0), "/amb").await;
    let client_id = ws_client(&mut client).await;
    ws_send(
        &mut client,
        json!([{"channel": "/service/echo", "clientId": client_id, "data": "q", "id": "q"}]),
    )
    .await;
    let answer = ws_until(&mut client, |m| {
        m["channel"] == "/service/echo" && m.get("data").is_some()
    })
    .await;
    assert!(
        answer.iter().any(|m| m["data"] == json!({"echo": "q"})),
        "{answer:?}"
    );
    if !answer.iter().any(|m| m["data"] == "only you") {
        ws_until(&mut client, |m| m["data"] == "only you").await;
    }
    // Then one broadcast, which must cross once to each node.
    c.nodes[0].bus.publish("/news", json!("end")).unwrap();
    for (node, watcher) in &watchers {
        let seen = lp_until(c.addr(*node), watcher, is_end).await;
        assert_eq!(
            seen.iter()
                .map(|m| m["channel"].clone())
                .collect::<Vec<_>>(),
            [json!("/news")],
            "{seen:?}"
        );
    }

    c.settled().await;
    let news = ChannelName::parse("/news").unwrap();
    assert_eq!(
        c.links[0].published(),
        [ClusterPublish::plain(news.clone(), json!("end"))]
    );
    for link in &c.links[1..] {
        // The watchers' own nodes publish nothing of node 0's.
        assert!(
            link.published().iter().all(|m| m.channel != news),
            "{link:?}"
        );
        assert_eq!(link.received.load(Ordering::SeqCst), 1);
    }
}

/// Joins and leaves on one node reach a `/presence` watcher on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes() {
    let c = cluster(2).await;
    let mut watcher = ws_open(c.addr(1), "/amb").await;
    let watcher_id = ws_client(&mut watcher).await;
    ws_subscribe(&mut watcher, &watcher_id, json!("/presence/chat/room")).await;
    let member = lp_client(c.addr(0), None).await;
    lp_subscribe(c.addr(0), &member, json!("/chat/room")).await;
    let reply = post(
        c.addr(0),
        json!([{"channel": "/meta/unsubscribe", "clientId": member, "subscription": "/chat/room"}]),
        None,
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    let seen = ws_until(&mut watcher, |m| m["data"]["action"] == "leave").await;
    let seen = data_on("/presence/chat/room", &seen);
    let expected: Vec<Value> = ["join", "leave"]
        .map(|action| json!({"action": action, "channel": "/chat/room", "clientId": member, "user": null}))
        .into();
    assert_eq!(seen, expected);
}

fn gained(pattern: &str) -> InterestChange {
    InterestChange::Gained(ChannelPattern::parse(pattern).unwrap())
}

fn lost(pattern: &str) -> InterestChange {
    InterestChange::Lost(ChannelPattern::parse(pattern).unwrap())
}

fn set(patterns: &[&str]) -> BTreeSet<String> {
    patterns.iter().map(|p| p.to_string()).collect()
}

/// What `Bus::cluster_interest` reads, as strings.
fn snapshot(bus: &wsbus::bus::Bus) -> BTreeSet<String> {
    bus.cluster_interest()
        .iter()
        .map(|p| p.to_string())
        .collect()
}

/// A pattern's first subscriber and its last one leaving (unsubscribe,
/// disconnect) reach the cluster; the full set is readable and agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_follows_subscribers() {
    let c = cluster(1).await;
    let (addr, bus, link) = (c.addr(0), &c.nodes[0].bus, &c.links[0]);
    // A second cluster is refused.
    assert!(bus.set_cluster(link.clone()).is_err());

    let mut ws = ws_open(addr, "/amb").await;
    let ws_id = ws_client(&mut ws).await;
    ws_subscribe(&mut ws, &ws_id, json!("/chat/room")).await;
    assert_eq!(link.changes(1).await, [gained("/chat/room")]);
    let lp = lp_client(addr, None).await;
    lp_subscribe(addr, &lp, json!(["/chat/room", "/chat/*"])).await;
    assert_eq!(link.changes(1).await, [gained("/chat/*")]);
    assert_eq!(link.interest(), set(&["/chat/*", "/chat/room"]));
    assert_eq!(snapshot(bus), link.interest());

    // The WebSocket client leaves: `/chat/room` keeps a subscriber.
    ws_send(
        &mut ws,
        json!([{"channel": "/meta/unsubscribe", "clientId": ws_id, "subscription": "/chat/room", "id": "u"}]),
    )
    .await;
    ws_until(&mut ws, |m| m["id"] == "u").await;
    // (A change here would arrive before the next ones, and fail them.)
    // The long-polling client disconnects: both patterns go.
    let reply = post(
        addr,
        json!([{"channel": "/meta/disconnect", "clientId": lp}]),
        None,
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    let changes: BTreeSet<String> = link
        .changes(2)
        .await
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    let expected: BTreeSet<String> = [lost("/chat/*"), lost("/chat/room")]
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    assert_eq!(changes, expected);
    assert_eq!(link.interest(), set(&[]));
    assert_eq!(snapshot(bus), set(&[]));
}

/// A session that expires takes its patterns out of the node's interest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_is_lost_when_a_session_expires() {
    let node = start_with(BusConfig {
        // Short, so that the test waits little for the expiry.
        max_interval: Duration::from_secs(1),
        ..BusConfig::default()
    })
    .await;
    let (sender, _queue) = mpsc::unbounded_channel();
    let link = Arc::new(Link::new(0, vec![sender]));
    node.bus.set_cluster(link.clone()).unwrap();
    let client = lp_client(&node.addr, None).await;
    lp_subscribe(&node.addr, &client, json!("/expiring/*")).await;
    assert_eq!(link.changes(1).await, [gained("/expiring/*")]);
    // No further connect: the session expires after `maxInterval`.
    wait_until("the expired session's pattern is lost", || {
        link.interest().is_empty()
    })
    .await;
    assert_eq!(link.take_changes(), [lost("/expiring/*")]);
    assert_eq!(snapshot(&node.bus), set(&[]));
}
