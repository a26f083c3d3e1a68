//! Long-polling without sticky sessions, in one process: two buses (two
//! nodes' engines) joined by a loopback `LongPollForward` that runs each
//! forwarded request on the other bus, as the Redis one does on the other
//! node; and one whose owner never answers.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use wsbus::bayeux::BusConfig;
use wsbus::bus::{Bus, ForwardedAnswer, ForwardedPoll, LongPollForward};
use wsbus::{Hub, NodeId};

/// Runs what it is given on the other node's bus; with no bus, it is the
/// forward of a cluster whose owner never answers.
#[derive(Debug, Default)]
struct Loopback {
    owner: OnceLock<Bus>,
}

impl LongPollForward for Loopback {
    fn forward(&self, _owner: NodeId, request: ForwardedPoll) -> ForwardedAnswer {
        let owner = self.owner.get().cloned();
        Box::pin(async move { Some(owner?.serve_forwarded(request).await) })
    }
}

fn node(id: u16, forward: Arc<Loopback>) -> Bus {
    let bus = Bus::new(BusConfig::default(), Hub::new());
    bus.set_long_poll_forward(NodeId(id), forward).unwrap();
    bus
}

async fn post(bus: &Bus, batch: Value) -> Vec<Value> {
    let reply = bus
        .long_poll(batch.to_string().as_bytes(), None, None)
        .await;
    serde_json::from_str(&reply).unwrap()
}

async fn handshake(bus: &Bus) -> String {
    let reply = post(
        bus,
        json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"]}]),
    )
    .await;
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

fn connect(client: &str) -> Value {
    json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling"}])
}

#[tokio::test]
async fn a_client_owned_by_one_node_is_served_through_another() {
    let (to_b, to_a) = (Arc::new(Loopback::default()), Arc::new(Loopback::default()));
    let a = node(1, to_b.clone());
    let b = node(2, to_a.clone());
    to_b.owner.set(b.clone()).unwrap();
    to_a.owner.set(a.clone()).unwrap();

    let client = handshake(&a).await;
    assert!(client.starts_with("1_"), "{client}");
    // Everything else through node 2, run by node 1.
    let first = post(&b, connect(&client)).await;
    assert_eq!(first[0]["successful"], true, "{first:?}");
    let subscribed = post(
        &b,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": "/room"}]),
    )
    .await;
    assert_eq!(subscribed[0]["successful"], true, "{subscribed:?}");
    assert_eq!(a.channels(), vec![("/room".to_owned(), 1)]);
    assert!(
        b.channels().is_empty(),
        "the session lives on its owner only"
    );

    // A connect held at the owner, released by a publish there.
    let held = tokio::spawn({
        let b = b.clone();
        let client = client.clone();
        async move { post(&b, connect(&client)).await }
    });
    wait_until(|| a.stats().held_connects == 1).await;
    a.publish("/room", json!({"n": 1})).unwrap();
    let released = held.await.unwrap();
    assert!(
        released
            .iter()
            .any(|m| m["channel"] == "/room" && m["data"] == json!({"n": 1})),
        "{released:?}"
    );

    // A forwarded request is never forwarded again: node 2 does not know
    // node 1's client, whatever the request says.
    let stray = b
        .serve_forwarded(ForwardedPoll {
            body: connect(&client).to_string(),
            user: None,
            token: None,
            deadline: std::time::Duration::from_secs(1),
        })
        .await;
    let stray: Vec<Value> = serde_json::from_str(&stray).unwrap();
    assert_eq!(stray[0]["error"], "402::Unknown client", "{stray:?}");
}

#[tokio::test]
async fn no_answer_from_the_owner_is_an_unknown_client_told_to_handshake() {
    let silent = Arc::new(Loopback::default());
    let a = node(1, silent.clone());
    let b = node(2, silent);
    let client = handshake(&a).await;
    let reply = post(
        &b,
        json!([
            {"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling", "id": "7"},
            {"channel": "/chat", "clientId": client, "data": {}, "id": 8},
        ]),
    )
    .await;
    assert_eq!(reply.len(), 2, "{reply:?}");
    for (message, (channel, id)) in reply
        .iter()
        .zip([("/meta/connect", json!("7")), ("/chat", json!(8))])
    {
        assert_eq!(message["channel"], channel);
        assert_eq!(message["id"], id);
        assert_eq!(message["successful"], false);
        assert_eq!(message["error"], "402::Unknown client");
        assert_eq!(message["advice"]["reconnect"], "handshake");
    }
    // Its own clients, and handshakes, a node serves itself.
    let own = handshake(&b).await;
    assert!(own.starts_with("2_"), "{own}");
    let connected = post(&b, connect(&own)).await;
    assert_eq!(connected[0]["successful"], true, "{connected:?}");
}

/// Polls `check` until it holds (20 s at most).
async fn wait_until(mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "not in time");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
