//! Three `wsbus serve` nodes over one `redis-server` of the test's own
//! (SPEC §7): the chat demo's group across nodes, group sizes seen from
//! every node, the bus across nodes, and Redis faults.

use std::time::{Duration, Instant};

use serde_json::json;
use wsbus::client::{self, ClientOptions};
use wsbus::proto::{Event, Message};
use wsbus_test_support::redis::RedisServer;
use wsbus_test_support::wire::{self, http_exchange};

use crate::support::{
    BayeuxWs, PUBLISH_TOKEN, PUBLISH_TOKEN_ENV, RECONNECT, SETTLE, addrs, bayeux_client,
    bayeux_subscriber, chat, eventually, get, metric, node, post_json, redis_state, text,
    wait_group_size, wait_up,
};

/// The chat demo with its users on three nodes: each message reaches every
/// user once, on every node, and each node counts every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_group_spans_three_nodes() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 1, &[]),
        node(&redis.url(), 2, &[]),
        node(&redis.url(), 3, &[]),
    ];
    wait_up(&nodes);
    let mut users = Vec::new();
    for node in &nodes {
        users.push(chat(&node.addr).await);
    }
    wait_group_size(&addrs(&nodes), 3, SETTLE).await;
    // Every node counts the others' members only once Redis confirmed their
    // nodes' subscriptions to the group: no warm-up needed.
    // Sends from each node, in turn; every user sees each sender's messages
    // once, in order.
    for round in 0..3 {
        for (i, user) in users.iter_mut().enumerate() {
            user.send(Message::text(format!("r{round} from {i}")))
                .await
                .unwrap();
        }
    }
    for user in &mut users {
        let mut got = Vec::new();
        while got.len() < 9 {
            got.push(text(user).await);
        }
        for i in 0..3 {
            let from_i: Vec<String> = got
                .iter()
                .filter(|m| m.ends_with(&format!("from {i}")))
                .cloned()
                .collect();
            let expected: Vec<String> = (0..3).map(|r| format!("r{r} from {i}")).collect();
            assert_eq!(from_i, expected, "{got:?}");
        }
    }
    // A user leaves node 2: every node counts two.
    let leaving = users.remove(1);
    drop(leaving);
    wait_group_size(&addrs(&nodes), 2, SETTLE).await;
}

/// Bayeux over WebSocket: a subscriber on node 1, a wildcard subscriber on
/// node 2, a publisher on node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_messages_cross_nodes_with_wildcards() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 11, &[]),
        node(&redis.url(), 12, &[]),
        node(&redis.url(), 13, &[]),
    ];
    wait_up(&nodes);
    let mut exact = bayeux_subscriber(&nodes[0].addr, "/chat/room").await;
    let mut wild = bayeux_subscriber(&nodes[1].addr, "/chat/*").await;
    // The subscriptions reach Redis after the replies: publish until the
    // first message arrives, then count from a marker.
    // The default policy lets subscribers publish.
    let mut publisher = bayeux_subscriber(&nodes[2].addr, "/chat/room").await;
    let mut n = 0;
    loop {
        n += 1;
        publisher.publish("/chat/room", json!({"warmup": n})).await;
        if publisher_seen(&mut exact, &mut wild, n).await {
            break;
        }
        assert!(n < 30, "no subscriber heard the publisher");
    }
    // Within the default rate (100 per second per session, with a burst of
    // a second's worth), warm-up included.
    for i in 0..50 {
        publisher.publish("/chat/room", json!({"i": i})).await;
    }
    for subscriber in [&mut exact, &mut wild] {
        let mut got = Vec::new();
        while got.len() < 50 {
            for message in subscriber.next_batch().await {
                if let Some(i) = message["data"]["i"].as_u64() {
                    got.push(i);
                }
            }
        }
        assert_eq!(got, (0..50).collect::<Vec<u64>>(), "once each, in order");
    }
}

/// Waits until both subscribers saw warm-up `n` (or any later): false if
/// one did not within a short while.
async fn publisher_seen(exact: &mut BayeuxWs, wild: &mut BayeuxWs, n: u64) -> bool {
    for subscriber in [exact, wild] {
        let seen = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                for message in subscriber.next_batch().await {
                    if message["data"]["warmup"].as_u64() == Some(n) {
                        return;
                    }
                }
            }
        })
        .await;
        if seen.is_err() {
            return false;
        }
    }
    true
}

/// Redis unreachable at start: the node starts and serves local clients,
/// `/readyz` says ready with Redis down, the gauge is 0; when a Redis comes
/// up on that address the node finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_redis_and_finds_it_later() {
    let mut redis = RedisServer::start();
    redis.kill9();
    let node = node(&redis.url(), 21, &[]);
    let (status, body) = get(&node.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(redis_state(&node.addr), "down");
    assert_eq!(metric(&node.addr, "wsbus_cluster_enabled"), Some(1.0));
    assert_eq!(metric(&node.addr, "wsbus_cluster_redis_up"), Some(0.0));
    let mut user = chat(&node.addr).await;
    user.send(Message::text("alone")).await.unwrap();
    assert_eq!(text(&mut user).await, "alone");
    redis.restart();
    let addr = node.addr.clone();
    tokio::task::spawn_blocking(move || {
        eventually(RECONNECT, "the link comes up", || {
            redis_state(&addr) == "up"
        });
        assert_eq!(metric(&addr, "wsbus_cluster_redis_up"), Some(1.0));
    })
    .await
    .unwrap();
    assert!(node.logged("Redis link up"), "{}", node.log_tail(20));
}

/// Redis killed and restarted empty, and the subscriber connection killed
/// by `CLIENT KILL TYPE pubsub`: each time the nodes resubscribe, and the
/// chat reaches across nodes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_survives_redis_restarts_and_killed_subscriptions() {
    let mut redis = RedisServer::start();
    let nodes = [node(&redis.url(), 31, &[]), node(&redis.url(), 32, &[])];
    wait_up(&nodes);
    let mut a = chat(&nodes[0].addr).await;
    let mut b = chat(&nodes[1].addr).await;
    for fault in [
        "kill -9 and restart empty",
        "CLIENT KILL TYPE pubsub",
        "none",
    ] {
        match fault {
            "kill -9 and restart empty" => {
                redis.kill9();
                redis.restart();
            }
            "CLIENT KILL TYPE pubsub" => {
                redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            }
            _ => {}
        }
        // Until both links are back, a message may be queued on its way
        // (and is delivered later): send until one crosses, then read up to
        // a marker that crossed after it.
        let marker = format!("marker after {fault}");
        let deadline = Instant::now() + RECONNECT;
        'crossed: loop {
            assert!(
                Instant::now() < deadline,
                "no message crossed after {fault}"
            );
            a.send(Message::text(marker.clone())).await.unwrap();
            let wait = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    if text(&mut b).await == marker {
                        return;
                    }
                }
            })
            .await;
            if wait.is_ok() {
                break 'crossed;
            }
        }
        // The messages a sent meanwhile also reached a itself (same node).
        while tokio::time::timeout(Duration::from_millis(100), a.recv())
            .await
            .is_ok()
        {}
    }
}

fn post_form(addr: &str, path: &str, cookie: Option<&str>, body: &str) -> String {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    http_exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// HTTP sessions live in Redis: a login on node A is known on node B, and
/// a logout on node A closes node B's socket bound to it with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_node_closes_the_sockets_on_another() {
    let redis = RedisServer::start();
    let nodes = [node(&redis.url(), 41, &[]), node(&redis.url(), 42, &[])];
    wait_up(&nodes);
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    let login = post_form(&a, "/login", None, "user=ada");
    assert_eq!(wire::status_code(&login), 303, "{login}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':')?.1.trim().split(';').next())
        .expect("a session cookie")
        .to_owned();
    let options = ClientOptions {
        protocols: vec!["text".into()],
        headers: vec![("Cookie".into(), cookie.clone())],
        ..ClientOptions::default()
    };
    let mut on_b = client::connect(&format!("ws://{b}/chat"), options)
        .await
        .expect("chat socket on node B");
    assert_eq!(
        text(&mut on_b).await,
        "Welcome to our chat ada",
        "node B knows node A's session"
    );
    let logout = post_form(&a, "/logout", Some(&cookie), "");
    assert_eq!(wire::status_code(&logout), 303, "{logout}");
    let closed = loop {
        let event = tokio::time::timeout(SETTLE, on_b.recv())
            .await
            .expect("closed in time")
            .expect("no I/O error");
        match event {
            Some(Event::Close(frame)) => break frame,
            Some(Event::Ping(_) | Event::Pong(_) | Event::Message(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    };
    let frame = closed.expect("a close frame with a code");
    assert_eq!(frame.code, wsbus::proto::CloseCode::POLICY_VIOLATION);
    assert_eq!(frame.reason, "HTTP session ended");
}

/// The client ids a presence subscribe reply lists for its channel.
async fn presence_snapshot(client: &mut BayeuxWs, channel: &str) -> Vec<String> {
    let id = client.client_id.clone();
    let presence = format!("/presence{channel}");
    client.keepalive().await;
    client
        .send(json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": presence}]))
        .await;
    let reply = loop {
        let batch = client.next_batch().await;
        if let Some(reply) = batch
            .into_iter()
            .find(|m| m["channel"] == "/meta/subscribe")
        {
            break reply;
        }
    };
    client
        .send(json!([{"channel": "/meta/unsubscribe", "clientId": id, "subscription": presence}]))
        .await;
    let mut members: Vec<String> = reply["ext"]["presence"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no member list: {reply}"))
        .iter()
        .map(|m| m["clientId"].as_str().unwrap().to_owned())
        .collect();
    members.sort();
    members
}

/// Presence seen from every node: members on two nodes are listed by a
/// third, and by a node that joins later; when a member's node dies, the
/// others see it leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_dead_nodes_members_leave() {
    let redis = RedisServer::start();
    let mut nodes = vec![
        node(&redis.url(), 51, &[]),
        node(&redis.url(), 52, &[]),
        node(&redis.url(), 53, &[]),
    ];
    wait_up(&nodes);
    let first = bayeux_subscriber(&nodes[0].addr, "/room/a").await;
    let second = bayeux_subscriber(&nodes[1].addr, "/room/a").await;
    let mut expected = vec![first.client_id.clone(), second.client_id.clone()];
    expected.sort();
    let mut watcher = bayeux_client(&nodes[2].addr).await;
    let deadline = Instant::now() + SETTLE;
    while presence_snapshot(&mut watcher, "/room/a").await != expected {
        assert!(
            Instant::now() < deadline,
            "node 3 never listed both members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A node that joins later reads the members from Redis.
    nodes.push(node(&redis.url(), 54, &[]));
    wait_up([&nodes[3]]);
    let mut late = bayeux_client(&nodes[3].addr).await;
    let deadline = Instant::now() + SETTLE;
    while presence_snapshot(&mut late, "/room/a").await != expected {
        assert!(
            Instant::now() < deadline,
            "the late node never listed both members: {}",
            nodes[3].log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first member's node dies: a watcher elsewhere sees it leave, after
    // the heartbeat timeout.
    let mut leave_watcher = bayeux_subscriber(&nodes[2].addr, "/presence/room/a").await;
    let dead = nodes.remove(0);
    drop(dead); // killed
    // Sessions expire without a connect for `maxInterval` (10 s): keep the
    // live ones alive meanwhile.
    let wait = wsbus_redis::link::NODE_TIMEOUT + wsbus_redis::link::HEARTBEAT_INTERVAL + SETTLE;
    let mut second = second;
    let left = tokio::time::timeout(wait, async {
        let mut kept_alive = Instant::now() - Duration::from_secs(3);
        loop {
            // Every 2 s: well inside `maxInterval`, far under the rate limit.
            if kept_alive.elapsed() >= Duration::from_secs(2) {
                second.keepalive().await;
                late.keepalive().await;
                leave_watcher.keepalive().await;
                kept_alive = Instant::now();
            }
            let Ok(batch) =
                tokio::time::timeout(Duration::from_secs(1), leave_watcher.next_batch()).await
            else {
                continue;
            };
            if batch.iter().any(|message| {
                message["data"]["action"] == "leave"
                    && message["data"]["clientId"] == first.client_id.as_str()
            }) {
                return;
            }
        }
    })
    .await;
    assert!(left.is_ok(), "no leave for the dead node's member");
    let deadline = Instant::now() + SETTLE;
    while presence_snapshot(&mut late, "/room/a").await != [second.client_id.clone()] {
        assert!(
            Instant::now() < deadline,
            "the dead node's member is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Idle expiry through Redis: a session logged in on node A, whose Redis
/// key expires while a socket on node B is bound to it, closes that socket
/// with 1008 at node B's next sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expiring_in_redis_closes_the_sockets_on_every_node() {
    let redis = RedisServer::start();
    let short = [("WSBUS_SESSION__IDLE_TIMEOUT", "2s")];
    let nodes = [
        node(&redis.url(), 61, &short),
        node(&redis.url(), 62, &short),
    ];
    wait_up(&nodes);
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    let login = post_form(&a, "/login", None, "user=ida");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':')?.1.trim().split(';').next())
        .expect("a session cookie")
        .to_owned();
    let options = ClientOptions {
        protocols: vec!["text".into()],
        headers: vec![("Cookie".into(), cookie)],
        ..ClientOptions::default()
    };
    let mut on_b = client::connect(&format!("ws://{b}/chat"), options)
        .await
        .expect("chat socket on node B");
    assert_eq!(text(&mut on_b).await, "Welcome to our chat ida");
    // The key expires after 2 s; node B sweeps every 10 s (the floor of
    // the sweep interval).
    let within = Duration::from_secs(2 + 10) + SETTLE;
    let closed = tokio::time::timeout(within, async {
        loop {
            match on_b.recv().await.expect("no I/O error") {
                Some(Event::Close(frame)) => return frame,
                Some(_) => {}
                None => panic!("ended without a close frame"),
            }
        }
    })
    .await
    .expect("closed after the session expired");
    let frame = closed.expect("a close code");
    assert_eq!(frame.code, wsbus::proto::CloseCode::POLICY_VIOLATION);
    assert_eq!(frame.reason, "HTTP session ended");
}

/// A long-polling subscribe is answered once the subscription is in place
/// across the cluster: a message another node publishes right after the
/// reply reaches the subscriber, with no warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_subscription_hears_other_nodes_from_its_reply_on() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 81, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 82, &[PUBLISH_TOKEN_ENV]),
    ];
    wait_up(&nodes);
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    tokio::task::spawn_blocking(move || {
        for round in 0..5 {
            let channel = format!("/fresh/{round}");
            let reply = post_json(
                &a,
                "/amb",
                &json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]),
                "",
            );
            let client = reply[0]["clientId"].as_str().unwrap().to_owned();
            let first = post_json(
                &a,
                "/amb",
                &json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling"}]),
                "",
            );
            assert_eq!(first[0]["successful"], true, "{first}");
            let subscribed = post_json(
                &a,
                "/amb",
                &json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": channel}]),
                "",
            );
            assert_eq!(subscribed[0]["successful"], true, "{subscribed}");
            // At once, on the other node.
            post_json(
                &b,
                "/api/publish",
                &json!({"channel": channel, "data": {"round": round}}),
                &format!("Authorization: Bearer {PUBLISH_TOKEN}\r\n"),
            );
            // A connect answers with the message, or is held until it is
            // there (or its 30 s timeout: then it was lost).
            let mut delivered = Vec::new();
            for _ in 0..2 {
                let answer = post_json(
                    &a,
                    "/amb",
                    &json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling"}]),
                    "",
                );
                delivered.extend(answer.as_array().unwrap().iter().cloned());
                if delivered.iter().any(|m| m["channel"] == channel.as_str()) {
                    break;
                }
            }
            assert!(
                delivered
                    .iter()
                    .any(|m| m["channel"] == channel.as_str() && m["data"]["round"] == round),
                "round {round}: {delivered:?}"
            );
        }
    })
    .await
    .unwrap();
}
