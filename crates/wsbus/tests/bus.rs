//! The bus's Rust API for `/service/**` (messages there go to server-side
//! handlers only), and its delivery order, over real sockets: Bayeux clients
//! speak raw HTTP long-polling and WebSocket (wsbus's own client) to a
//! `Server` carrying a `Bus`, and handlers registered with `Bus::add_service`
//! answer them.

mod bayeux_client;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bayeux_client::*;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use wsbus::bayeux::ClientId;
use wsbus::bus::{PublishError, SERVICE_MAX_PENDING, ServiceCall, ServiceError};
use wsbus::proto::Message;

/// What a handler saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    client_id: String,
    user: Option<String>,
    channel: String,
    data: Value,
    id: Option<Value>,
}

impl From<&ServiceCall> for Seen {
    fn from(call: &ServiceCall) -> Self {
        Seen {
            client_id: call.client_id.as_str().to_owned(),
            user: call.user.as_deref().map(str::to_owned),
            channel: call.channel.as_str().to_owned(),
            data: call.data.clone(),
            id: call.id.clone(),
        }
    }
}

#[tokio::test]
async fn long_polling_publish_reaches_the_handler_which_answers_the_sender_only() {
    let t = start().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    t.bus
        .add_service("/service/echo", move |call: ServiceCall| {
            let seen_tx = seen_tx.clone();
            async move {
                seen_tx.send(Seen::from(&call)).unwrap();
                call.reply(json!({"echo": call.data})).unwrap();
                // Then a broadcast, so that an observer's delivery proves the
                // reply was already queued (and not for the observer).
                call.bus()
                    .publish("/chat/room", json!({"used": "echo"}))
                    .unwrap();
            }
        })
        .unwrap();

    let alice = lp_client(&t.addr, Some("alice")).await;
    // An observer subscribed to everything it may: it must see the
    // broadcast, never the service traffic.
    let observer = lp_client(&t.addr, None).await;
    let reply = post(
        &t.addr,
        json!([{"channel": "/meta/subscribe", "clientId": observer, "subscription": ["/**", "/chat/room"]}]),
        None,
    )
    .await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");

    let reply = post(
        &t.addr,
        json!([{"channel": "/service/echo", "clientId": alice, "data": {"q": 1}, "id": "7"}]),
        Some("alice"),
    )
    .await;
    // The publish reply: exactly channel, successful, id.
    assert_eq!(
        reply,
        vec![json!({"channel": "/service/echo", "successful": true, "id": "7"})]
    );

    let call = tokio::time::timeout(STEP, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        call,
        Seen {
            client_id: alice.clone(),
            user: Some("alice".into()),
            channel: "/service/echo".into(),
            data: json!({"q": 1}),
            id: Some(json!("7")),
        }
    );

    // The sender's next connect carries the answer, on the service channel.
    let delivered = lp_connect(&t.addr, &alice, Some("alice")).await;
    let answers: Vec<&Value> = delivered
        .iter()
        .filter(|m| m["channel"] == "/service/echo")
        .collect();
    assert_eq!(answers.len(), 1, "{delivered:?}");
    assert_eq!(answers[0]["data"], json!({"echo": {"q": 1}}));

    // The observer gets the handler's broadcast, and nothing on /service.
    let delivered = lp_connect(&t.addr, &observer, None).await;
    assert!(
        delivered
            .iter()
            .any(|m| m["channel"] == "/chat/room" && m["data"] == json!({"used": "echo"})),
        "{delivered:?}"
    );
    assert!(
        delivered
            .iter()
            .all(|m| !m["channel"].as_str().unwrap().starts_with("/service")),
        "{delivered:?}"
    );
}

#[tokio::test]
async fn websocket_publish_is_answered_on_the_socket_and_the_handler_reaches_hub_groups() {
    let t = start().await;
    t.bus
        .add_service("/service/rooms/*", |call: ServiceCall| async move {
            let room = call.channel.as_str().rsplit('/').next().unwrap().to_owned();
            call.reply(json!({"joined": room})).unwrap();
            // Plain WebSocket sockets (not Bayeux clients) in a hub group.
            let text = format!("{} joined {room}", call.client_id.as_str());
            call.bus().hub().send_to_group("lobby", Message::text(text));
        })
        .unwrap();

    let mut plain = ws_open(&t.addr, "/plain").await;
    let mut ws = ws_open(&t.addr, "/amb").await;
    let id = ws_client(&mut ws).await;
    // The plain socket joins its group on open; make sure it has.
    tokio::time::timeout(STEP, async {
        while t.bus.hub().group_size("lobby") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    ws_send(
        &mut ws,
        json!([{"channel": "/service/rooms/blue", "clientId": id, "data": {}, "id": "p"}]),
    )
    .await;
    let seen = ws_until(&mut ws, |m| {
        m["channel"] == "/service/rooms/blue" && m.get("data").is_some()
    })
    .await;
    assert!(
        seen.iter()
            .any(|m| m["id"] == "p" && m["successful"] == true && m.get("data").is_none()),
        "publish reply: {seen:?}"
    );
    let answer = seen.iter().find(|m| m.get("data").is_some()).unwrap();
    assert_eq!(answer["data"], json!({"joined": "blue"}));

    let message = tokio::time::timeout(STEP, plain.recv_message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        std::str::from_utf8(message.payload()).unwrap(),
        format!("{id} joined blue")
    );
}

#[tokio::test]
async fn registration_rules_and_channels_without_a_handler() {
    let t = start().await;
    assert!(matches!(
        t.bus
            .add_service("/chat/room", |_call: ServiceCall| async {}),
        Err(ServiceError::NotAService(_))
    ));
    assert!(matches!(
        t.bus
            .add_service("/service/**/x", |_call: ServiceCall| async {}),
        Err(ServiceError::InvalidPattern(_))
    ));

    let id = lp_client(&t.addr, None).await;
    let publish = |n: u32| json!([{"channel": "/service/gone", "clientId": id, "data": n, "id": n.to_string()}]);
    let reply = post(&t.addr, publish(1), None).await;
    assert_eq!(
        reply[0]["error"],
        "404::No handler for this service channel"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    t.bus
        .add_service("/service/gone", move |_call: ServiceCall| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    let reply = post(&t.addr, publish(2), None).await;
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    tokio::time::timeout(STEP, async {
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    assert!(t.bus.remove_service("/service/gone"));
    assert!(!t.bus.remove_service("/service/gone"));
    let reply = post(&t.addr, publish(3), None).await;
    assert_eq!(
        reply[0]["error"],
        "404::No handler for this service channel"
    );

    // Delivering to a session that is gone says so.
    let gone = ClientId::from_random([7; 16]);
    assert_eq!(
        t.bus.deliver(&gone, "/service/gone", json!(1)),
        Err(PublishError::UnknownClient)
    );
}

#[tokio::test]
async fn a_stuck_handler_gets_calls_in_order_and_past_its_bound_publishes_are_refused() {
    let t = start().await;
    let release = Arc::new(Notify::new());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let gate = release.clone();
    t.bus
        .add_service("/service/slow", move |call: ServiceCall| {
            let gate = gate.clone();
            let seen_tx = seen_tx.clone();
            async move {
                if call.data == json!(0) {
                    gate.notified().await;
                }
                if call.data == json!("boom") {
                    panic!("a handler bug");
                }
                seen_tx.send(call.data).unwrap();
            }
        })
        .unwrap();

    let mut ws = ws_open(&t.addr, "/amb").await;
    let id = ws_client(&mut ws).await;
    // SERVICE_MAX_PENDING calls in one batch: all taken (the first blocks
    // the handler, the rest wait for it).
    let batch: Vec<Value> = (0..SERVICE_MAX_PENDING)
        .map(|n| json!({"channel": "/service/slow", "clientId": id, "data": n, "id": format!("p{n}")}))
        .collect();
    ws_send(&mut ws, Value::Array(batch)).await;
    let replies = ws_until(&mut ws, |m| {
        m["id"] == format!("p{}", SERVICE_MAX_PENDING - 1)
    })
    .await;
    let acks: Vec<&Value> = replies
        .iter()
        .filter(|m| m["channel"] == "/service/slow")
        .collect();
    assert_eq!(acks.len(), SERVICE_MAX_PENDING);
    assert!(acks.iter().all(|m| m["successful"] == true));

    // One more: refused, precisely, in its publish reply.
    ws_send(
        &mut ws,
        json!([{"channel": "/service/slow", "clientId": id, "data": "late", "id": "late"}]),
    )
    .await;
    let reply = ws_until(&mut ws, |m| m["id"] == "late").await;
    let late = reply.iter().find(|m| m["id"] == "late").unwrap();
    assert_eq!(late["successful"], false);
    assert_eq!(late["error"], "503::Service busy");

    // Unblocked, the handler runs every accepted call, in order.
    release.notify_one();
    for n in 0..SERVICE_MAX_PENDING {
        let data = tokio::time::timeout(STEP, seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(data, json!(n));
    }

    // A panicking call is lost alone: the next one runs, and there is room
    // again.
    ws_send(
        &mut ws,
        json!([
            {"channel": "/service/slow", "clientId": id, "data": "boom", "id": "b"},
            {"channel": "/service/slow", "clientId": id, "data": "after", "id": "a"}
        ]),
    )
    .await;
    let reply = ws_until(&mut ws, |m| m["id"] == "a").await;
    assert!(
        reply
            .iter()
            .filter(|m| m["id"] == "a" || m["id"] == "b")
            .all(|m| m["successful"] == true),
        "{reply:?}"
    );
    let data = tokio::time::timeout(STEP, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data, json!("after"));
}

/// The bus hands WebSocket deliveries to the hub after releasing its lock;
/// racing publishers must not make a subscriber see one publisher's messages
/// out of order, nor lose any. Server-side publishers on several threads and
/// a WebSocket publisher (whose publishes run on its socket's task) publish
/// numbered messages at once, while the subscriber also sends connects of
/// its own (its socket's replies race the deliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_reach_a_websocket_subscriber_in_order_and_complete() {
    const SERVER_PUBLISHERS: usize = 3;
    const MESSAGES: usize = 300;
    /// Messages per WebSocket publisher frame.
    const FRAME: usize = 10;
    /// The subscriber sends a connect after this many deliveries.
    const RECONNECT_EVERY: usize = 97;
    let t = start().await;

    let mut subscriber = ws_open(&t.addr, "/amb").await;
    let subscriber_id = ws_client(&mut subscriber).await;
    ws_send(
        &mut subscriber,
        json!([{"channel": "/meta/subscribe", "clientId": subscriber_id, "subscription": "/order", "id": "s"}]),
    )
    .await;
    let reply = ws_until(&mut subscriber, |m| m["id"] == "s").await;
    assert!(
        reply
            .iter()
            .any(|m| m["id"] == "s" && m["successful"] == true),
        "{reply:?}"
    );
    let mut ws_publisher = ws_open(&t.addr, "/amb").await;
    let ws_publisher_id = ws_client(&mut ws_publisher).await;
    // Clients publish where they are subscribed (the default policy).
    ws_send(
        &mut ws_publisher,
        json!([{"channel": "/meta/subscribe", "clientId": ws_publisher_id, "subscription": "/order", "id": "s"}]),
    )
    .await;
    ws_until(&mut ws_publisher, |m| {
        m["id"] == "s" && m["successful"] == true
    })
    .await;

    let go = Arc::new(tokio::sync::Barrier::new(SERVER_PUBLISHERS + 1));
    let mut publishers = Vec::new();
    for p in 0..SERVER_PUBLISHERS {
        let bus = t.bus.clone();
        let go = go.clone();
        publishers.push(tokio::spawn(async move {
            go.wait().await;
            for n in 0..MESSAGES {
                bus.publish("/order", json!({"p": p, "n": n})).unwrap();
                if n % 8 == 0 {
                    // Let the other tasks of this worker run too.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let ws_publishing = tokio::spawn(async move {
        go.wait().await;
        for first in (0..MESSAGES).step_by(FRAME) {
            let frame: Vec<Value> = (first..first + FRAME)
                .map(|n| json!({"channel": "/order", "clientId": ws_publisher_id, "data": {"p": SERVER_PUBLISHERS, "n": n}, "id": n.to_string()}))
                .collect();
            ws_send(&mut ws_publisher, Value::Array(frame)).await;
        }
        let last = (MESSAGES - 1).to_string();
        let acks = ws_until(&mut ws_publisher, |m| m["id"] == last).await;
        assert!(
            acks.iter()
                .filter(|m| m["channel"] == "/order" && m.get("data").is_none())
                .all(|m| m["successful"] == true),
            "{acks:?}"
        );
    });

    let mut next = [0usize; SERVER_PUBLISHERS + 1];
    let mut received = 0;
    while received < next.len() * MESSAGES {
        let batch = ws_recv(&mut subscriber).await;
        for message in batch.as_array().unwrap() {
            if message["channel"] != "/order" {
                continue;
            }
            let p = message["data"]["p"].as_u64().unwrap() as usize;
            let n = message["data"]["n"].as_u64().unwrap() as usize;
            assert_eq!(n, next[p], "publisher {p}: {n} after {}", next[p]);
            next[p] += 1;
            received += 1;
            if received % RECONNECT_EVERY == 0 {
                ws_send(
                    &mut subscriber,
                    json!([{"channel": "/meta/connect", "clientId": subscriber_id, "connectionType": "websocket"}]),
                )
                .await;
            }
        }
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    ws_publishing.await.unwrap();
    assert_eq!(next, [MESSAGES; SERVER_PUBLISHERS + 1]);
}
