//! Faults and bad input in a cluster of `wsbus serve` nodes over one
//! `redis-server` of the test's own (issue 12, SPEC §7): Redis paused past
//! the link's timeouts, a subscription that stays open but hears nothing, a
//! node killed mid-delivery, a node joining while messages flow, a 10 MB
//! publish, and junk on wsbus channels. (Redis killed and restarted, `CLIENT
//! KILL TYPE pubsub` and a node started without Redis are in `chat.rs`.)
//!
//! Every wait polls for its condition up to a generous deadline; nothing
//! asserts how long something took.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wsbus::client::WebSocket;
use wsbus::proto::{Event, Message};
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::redis::RedisServer;

use crate::common::RELEASE_FREED_MEMORY_AT_ONCE;
use crate::support::{
    PUBLISH_TOKEN_ENV, RECONNECT, SETTLE, addrs, bayeux_subscriber, blocking, chat, eventually,
    metric, node, publish, text, wait_group_size, wait_state,
};

/// How long Redis stays stopped: past the link's `COMMAND_TIMEOUT` (2 s) and
/// `PROBE_TIMEOUT` (3 s), so that the nodes see it gone, and below the hub's
/// `NODE_TIMEOUT` (10 s), so that they do not take each other for dead.
const PAUSE: Duration = Duration::from_secs(6);

/// The hub's `NODE_TIMEOUT`: a node not heard of for this long is dropped.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Between two sends of a paced sender: 50 messages a second, within the
/// default rate limit of 100 per second per connection.
const PACE: Duration = Duration::from_millis(20);

/// A 10 MB message: under the default WebSocket `max_message_size` (16 MiB);
/// the default `outbound.max_bytes` (8 MiB) would close its recipients as
/// slow consumers, so the test raises it to [`BIG_OUTBOUND`].
const BIG: usize = 10 * 1000 * 1000;

/// `outbound.max_bytes` for the 10 MB test: a socket's queue holds the
/// message and what follows it.
const BIG_OUTBOUND: &str = "33554432";

/// The largest body `POST /api/publish` takes: `ServerConfig::max_body_bytes`
/// (64 KiB), not configurable in `wsbus serve`.
const MAX_BODY: usize = 64 * 1024;

/// What a node may hold after a 10 MB message crossed it (a debug build, a
/// few copies of the message in flight and the allocator's caches): far
/// below what a copy per subscriber or per retry would take.
const BIG_RSS_MAX: u64 = 256 << 20;

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// Each user sends until every other user heard it: then every node's
/// group subscription is in place. What it leaves unread starts with "w".
async fn warm_up(users: &mut [WebSocket]) {
    for sender in 0..users.len() {
        let mut heard = vec![false; users.len()];
        heard[sender] = true;
        for k in 0.. {
            assert!(k < 100, "user {sender} was not heard by all: {heard:?}");
            users[sender]
                .send(Message::text(format!("w {sender} {k}")))
                .await
                .unwrap();
            for (i, user) in users.iter_mut().enumerate() {
                if heard[i] {
                    continue;
                }
                let got = tokio::time::timeout(Duration::from_millis(300), async {
                    loop {
                        if text(user).await.starts_with(&format!("w {sender} ")) {
                            return;
                        }
                    }
                })
                .await;
                heard[i] = got.is_ok();
            }
            if heard.iter().all(|&h| h) {
                break;
            }
        }
    }
}

/// The numbers of the messages `<prefix><n>` that `ws` receives up to and
/// including `<prefix><last>`, in the order received (others skipped).
async fn numbered_until(ws: &mut WebSocket, prefix: &str, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let message = match tokio::time::timeout(SETTLE, ws.recv()).await {
            Ok(Ok(Some(Event::Message(Message::Text(text))))) => text.as_str().to_owned(),
            Ok(Ok(Some(Event::Ping(_) | Event::Pong(_)))) => continue,
            Ok(other) => panic!("expected a text message, got {other:?}; got {got:?}"),
            Err(_) => panic!("no {prefix}{last} in time; got {got:?}"),
        };
        if let Some(n) = message.strip_prefix(prefix).and_then(|n| n.parse().ok()) {
            got.push(n);
            if n == last {
                return got;
            }
        }
    }
}

/// `from` sends `marker` until `to` receives it (a link that just came back
/// may still be resubscribing); returns once it crossed.
async fn cross(from: &mut WebSocket, to: &mut WebSocket, marker: &str) {
    let deadline = Instant::now() + RECONNECT;
    loop {
        assert!(Instant::now() < deadline, "{marker:?} never crossed");
        from.send(Message::text(marker.to_owned())).await.unwrap();
        let crossed = tokio::time::timeout(Duration::from_millis(500), async {
            while text(to).await != marker {}
        })
        .await;
        if crossed.is_ok() {
            return;
        }
    }
}

/// Reads what `ws` received until nothing came for a moment (its own echoes,
/// leftovers of a warm-up).
async fn drain(ws: &mut WebSocket) {
    while tokio::time::timeout(Duration::from_millis(200), ws.recv())
        .await
        .is_ok()
    {}
}

/// Redis stopped (SIGSTOP) for longer than the command and probe timeouts,
/// while users chat: both nodes report the link down (`/readyz`, the gauge,
/// one log line per change), node A's users keep chatting among themselves,
/// and once Redis runs again the links come back and what A's users said
/// meanwhile reaches node B's users, once each and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_past_the_timeouts_mid_traffic() {
    let mut redis = RedisServer::start();
    let nodes = [node(&redis.url(), 51, &[]), node(&redis.url(), 52, &[])];
    wait_state(&addrs(&nodes), "up").await;
    let mut users = vec![chat(&nodes[0].addr).await, chat(&nodes[1].addr).await];
    warm_up(&mut users).await;
    for user in &mut users {
        drain(user).await;
    }
    let [a, b] = &mut users[..] else {
        unreachable!()
    };

    redis.pause();
    let paused = Instant::now();
    wait_state(&addrs(&nodes), "down").await;
    for node in &nodes {
        assert_eq!(metric(&node.addr, "wsbus_cluster_redis_up"), Some(0.0));
    }
    // Node A's users are served meanwhile: each message reaches A's own
    // user (the sender here) at once.
    const SENT: u64 = 30;
    for i in 0..SENT {
        a.send(Message::text(format!("p {i}"))).await.unwrap();
    }
    assert_eq!(
        numbered_until(a, "p ", SENT - 1).await,
        (0..SENT).collect::<Vec<_>>()
    );
    let pending = nodes[0].addr.clone();
    blocking(move || {
        eventually(SETTLE, "node A keeps the messages for Redis", || {
            metric(&pending, "wsbus_cluster_pending_bytes").is_some_and(|b| b > 0.0)
        })
    })
    .await;
    tokio::time::sleep_until((paused + PAUSE).into()).await;
    redis.resume();

    wait_state(&addrs(&nodes), "up").await;
    // What A's user said during the pause reaches B's, once each, in order:
    // up to the last, then nothing more of them before a marker sent after.
    assert_eq!(
        numbered_until(b, "p ", SENT - 1).await,
        (0..SENT).collect::<Vec<_>>()
    );
    a.send(Message::text("after the pause")).await.unwrap();
    loop {
        let message = text(b).await;
        assert!(!message.starts_with("p "), "a duplicate: {message}");
        if message == "after the pause" {
            break;
        }
    }
    for node in &nodes {
        assert_eq!(metric(&node.addr, "wsbus_cluster_redis_up"), Some(1.0));
        assert_eq!(metric(&node.addr, "wsbus_cluster_pending_bytes"), Some(0.0));
        // A line per change of state, not per message or per attempt.
        assert_eq!(
            (
                node.log_lines_containing("Redis link down"),
                node.log_lines_containing("Redis link up")
            ),
            (1, 2),
            "{}",
            node.log_tail(40)
        );
    }
}

/// A TCP proxy between a node and Redis that can make the node's subscriber
/// connections deaf: they stay open, and what Redis sends on them is thrown
/// away (as a proxy or a failover that kept the socket might).
struct DeafeningProxy {
    port: u16,
    connections: Arc<Mutex<Vec<Arc<ProxiedConnection>>>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct ProxiedConnection {
    /// It sent `SSUBSCRIBE`: the link's subscriber (its command connection
    /// only publishes).
    subscriber: AtomicBool,
    deaf: AtomicBool,
}

impl DeafeningProxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Arc<ProxiedConnection>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (connections, stop) = (connections.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (Ok(client), Ok(server)) =
                        (client, TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)))
                    else {
                        continue;
                    };
                    let connection = Arc::new(ProxiedConnection::default());
                    connections.lock().unwrap().push(connection.clone());
                    pump(&client, &server, connection.clone(), true);
                    pump(&server, &client, connection, false);
                }
            });
        }
        DeafeningProxy {
            port,
            connections,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Makes the subscriber connections open now deaf; how many there were.
    fn deafen_subscribers(&self) -> usize {
        let connections = self.connections.lock().unwrap();
        let subscribers = connections
            .iter()
            .filter(|c| c.subscriber.load(Ordering::Relaxed));
        subscribers
            .map(|c| c.deaf.store(true, Ordering::Relaxed))
            .count()
    }
}

impl Drop for DeafeningProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Copies `from` to `to` on a thread of its own until either end closes;
/// `upstream`: the client's direction, where `SSUBSCRIBE` is looked for.
/// The other direction is thrown away once the connection is deaf.
fn pump(from: &TcpStream, to: &TcpStream, connection: Arc<ProxiedConnection>, upstream: bool) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if upstream && buf[..n].windows(10).any(|w| w == b"SSUBSCRIBE") {
                connection.subscriber.store(true, Ordering::Relaxed);
            }
            if !upstream && connection.deaf.load(Ordering::Relaxed) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A subscription that stays open but hears nothing: the link's probe
/// misses, the link goes down (logged with why), subscribes again on a new
/// connection and comes back up, and messages from the other node flow
/// again, once each and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_subscription_is_found_and_replaced() {
    let redis = RedisServer::start();
    let proxy = DeafeningProxy::start(redis.port());
    let nodes = [node(&proxy.url(), 61, &[]), node(&redis.url(), 62, &[])];
    wait_state(&addrs(&nodes), "up").await;
    let mut users = vec![chat(&nodes[0].addr).await, chat(&nodes[1].addr).await];
    warm_up(&mut users).await;
    let [a, b] = &mut users[..] else {
        unreachable!()
    };

    assert_eq!(proxy.deafen_subscribers(), 1, "node A's one subscriber");
    let deaf = &nodes[0];
    eventually_logged(deaf, "a probe did not come back", 1).await;
    eventually_logged(deaf, "Redis link up", 2).await;
    wait_state(&[&deaf.addr], "up").await;

    cross(b, a, "heard again").await;
    for i in 0..20 {
        b.send(Message::text(format!("d {i}"))).await.unwrap();
    }
    assert_eq!(
        numbered_until(a, "d ", 19).await,
        (0..20).collect::<Vec<_>>()
    );
    // Node B's link never went down.
    assert_eq!(nodes[1].log_lines_containing("Redis link down"), 0);
}

/// Waits until `node` logged at least `count` lines containing `text`.
async fn eventually_logged(node: &ServerProcess, text: &str, count: usize) {
    let deadline = Instant::now() + RECONNECT;
    while node.log_lines_containing(text) < count {
        assert!(
            Instant::now() < deadline,
            "{text:?} not logged {count} times:\n{}",
            node.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node killed (SIGKILL) while messages flow: its users' sockets end, the
/// other nodes' users get every message, and once the dead node's heartbeat
/// is overdue every node's group size drops its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery() {
    let redis = RedisServer::start();
    let mut nodes = vec![
        node(&redis.url(), 71, &[]),
        node(&redis.url(), 72, &[]),
        node(&redis.url(), 73, &[]),
    ];
    wait_state(&addrs(&nodes), "up").await;
    let mut users = vec![
        chat(&nodes[0].addr).await,
        chat(&nodes[1].addr).await,
        chat(&nodes[2].addr).await,
        chat(&nodes[2].addr).await,
    ];
    wait_group_size(&addrs(&nodes), 4, SETTLE).await;
    warm_up(&mut users).await;
    let mut doomed = users.split_off(2);
    let [a, b] = &mut users[..] else {
        unreachable!()
    };

    const SENT: u64 = 60;
    for i in 0..SENT {
        if i == SENT / 2 {
            drop(nodes.pop()); // SIGKILL
        }
        a.send(Message::text(format!("k {i}"))).await.unwrap();
        tokio::time::sleep(PACE).await;
    }
    for user in &mut doomed {
        let ended = tokio::time::timeout(SETTLE, async {
            loop {
                match user.recv().await {
                    Ok(Some(Event::Message(_) | Event::Ping(_) | Event::Pong(_))) => {}
                    Ok(Some(Event::Close(_) | Event::Error(_)) | None) | Err(_) => return,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a socket of the killed node stayed open");
    }
    assert_eq!(
        numbered_until(b, "k ", SENT - 1).await,
        (0..SENT).collect::<Vec<_>>()
    );
    wait_group_size(&addrs(&nodes), 2, NODE_TIMEOUT + SETTLE).await;
    // The survivors still chat.
    cross(b, a, "still here").await;
}

/// A node started while messages flow: its user hears every message sent
/// after its first (once its subscription is in place, nothing is missed),
/// the others hear them all, and every node counts its member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_while_messages_flow() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut nodes = vec![
        node(&url, 81, &[]),
        node(&url, 82, &[]),
        node(&url, 83, &[]),
    ];
    wait_state(&addrs(&nodes), "up").await;
    let mut users = vec![
        chat(&nodes[0].addr).await,
        chat(&nodes[1].addr).await,
        chat(&nodes[2].addr).await,
    ];
    warm_up(&mut users).await;
    let mut sender = users.remove(0);
    let mut i = 0;
    // Traffic before the join.
    while i < 20 {
        send_paced(&mut sender, i).await;
        i += 1;
    }
    let joining = url.clone();
    nodes.push(blocking(move || node(&joining, 84, &[])).await);
    wait_state(&[&nodes[3].addr], "up").await;
    let mut d = chat(&nodes[3].addr).await;
    wait_group_size(&addrs(&nodes), 4, SETTLE).await;
    // Traffic goes on until the newcomer hears it...
    let first = loop {
        assert!(i < 500, "the new node's user heard nothing");
        send_paced(&mut sender, i).await;
        i += 1;
        let heard = tokio::time::timeout(PACE * 10, async {
            loop {
                if let Some(n) = text(&mut d).await.strip_prefix("s ") {
                    return n.parse::<u64>().unwrap();
                }
            }
        })
        .await;
        if let Ok(first) = heard {
            break first;
        }
    };
    // ... and a while after: from its first, it hears every one, in order.
    let last = i + 50;
    while i <= last {
        send_paced(&mut sender, i).await;
        i += 1;
    }
    assert_eq!(
        numbered_until(&mut d, "s ", last).await,
        (first + 1..=last).collect::<Vec<_>>()
    );
    for user in &mut users {
        assert_eq!(
            numbered_until(user, "s ", last).await,
            (0..=last).collect::<Vec<_>>()
        );
    }
}

/// Sends `s <i>` and waits a [`PACE`].
async fn send_paced(sender: &mut WebSocket, i: u64) {
    sender.send(Message::text(format!("s {i}"))).await.unwrap();
    tokio::time::sleep(PACE).await;
}

/// A 10 MB chat message crosses nodes whole, and the nodes' memory stays
/// bounded; a server-side bus publish of 10 MB is refused with 413 by the
/// documented body limit (64 KiB), and one of exactly that limit crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_publish_crosses_nodes() {
    let redis = RedisServer::start();
    let extra = [
        PUBLISH_TOKEN_ENV,
        ("WSBUS_OUTBOUND__MAX_BYTES", BIG_OUTBOUND),
        RELEASE_FREED_MEMORY_AT_ONCE,
    ];
    let nodes = [
        node(&redis.url(), 91, &extra),
        node(&redis.url(), 92, &extra),
    ];
    wait_state(&addrs(&nodes), "up").await;
    let mut users = vec![chat(&nodes[0].addr).await, chat(&nodes[1].addr).await];
    warm_up(&mut users).await;
    let [a, b] = &mut users[..] else {
        unreachable!()
    };

    // Every position tells where it is: a shifted or cut copy differs.
    let big: String = (0..)
        .map(|i: u64| format!("{i:09} "))
        .flat_map(|s| s.into_bytes())
        .take(BIG)
        .map(char::from)
        .collect();
    a.send(Message::text(big.clone())).await.unwrap();
    for user in [&mut *a, &mut *b] {
        let got = loop {
            let message = text(user).await;
            if !message.starts_with("w ") {
                break message;
            }
        };
        assert_eq!(got.len(), BIG);
        assert!(got == big, "the 10 MB message arrived changed");
    }
    cross(b, a, "after the big one").await;
    for node in &nodes {
        let rss = rss(node.pid());
        assert!(rss < BIG_RSS_MAX, "{} holds {rss} bytes", node.addr);
    }

    let mut subscriber = bayeux_subscriber(&nodes[1].addr, "/big/room").await;
    // Publish until the subscription reached Redis.
    for n in 0.. {
        assert!(n < 60, "no server-side publish crossed");
        publish(
            &nodes[0].addr,
            &json!({"channel": "/big/room", "data": n}).to_string(),
        );
        let seen = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                let batch = subscriber.next_batch().await;
                if batch.iter().any(|m| m["data"] == n) {
                    return;
                }
            }
        })
        .await;
        if seen.is_ok() {
            break;
        }
    }
    let too_big = json!({"channel": "/big/room", "data": "x".repeat(BIG)}).to_string();
    let (status, answer) = publish(&nodes[0].addr, &too_big);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    let envelope = json!({"channel": "/big/room", "data": ""})
        .to_string()
        .len();
    let largest = json!({"channel": "/big/room", "data": "y".repeat(MAX_BODY - envelope)});
    let largest = largest.to_string();
    assert_eq!(largest.len(), MAX_BODY);
    let (status, answer) = publish(&nodes[0].addr, &largest);
    assert_eq!(status, 200, "{answer}");
    let data = loop {
        let batch = subscriber.next_batch().await;
        let big = batch.iter().find_map(|m| {
            let data = m["data"].as_str()?;
            (m["channel"] == "/big/room" && data.starts_with('y')).then_some(data.len())
        });
        if let Some(len) = big {
            break len;
        }
    };
    assert_eq!(data, MAX_BODY - envelope);
    for node in &nodes {
        assert_eq!(
            metric(&node.addr, "wsbus_cluster_publishes_dropped_total"),
            Some(0.0)
        );
    }
}

/// Junk on wsbus channels, written by another Redis client: a message that
/// is no envelope, an envelope of no known kind, and a bus envelope whose
/// JSON is junk. Each is ignored (the first two counted in
/// `wsbus_cluster_malformed_total`), no node crashes, and traffic goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_wsbus_channels_is_ignored_and_counted() {
    let redis = RedisServer::start();
    let mut nodes = vec![node(&redis.url(), 101, &[]), node(&redis.url(), 102, &[])];
    wait_state(&addrs(&nodes), "up").await;
    let mut users = vec![chat(&nodes[0].addr).await, chat(&nodes[1].addr).await];
    warm_up(&mut users).await;
    let [a, b] = &mut users[..] else {
        unreachable!()
    };
    for node in &nodes {
        assert_eq!(
            metric(&node.addr, "wsbus_cluster_malformed_total"),
            Some(0.0)
        );
    }

    // Both nodes subscribe to the chat's channel: each counts each.
    assert_eq!(
        redis.command(&["SPUBLISH", "wsbus:group:chat", "junk"]),
        "2"
    );
    wait_malformed(&nodes, 1.0).await;
    // An envelope header (marker, version, node 999, incarnation, sequence
    // 1) of kind 200, which no layer takes.
    let mut unknown = vec![
        0xB5, 0x01, 0x03, 0xE7, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 200,
    ];
    unknown.extend_from_slice(b"whatever");
    assert_eq!(spublish(&redis, b"wsbus:group:chat", &unknown), 2);
    wait_malformed(&nodes, 2.0).await;
    cross(a, b, "after the junk").await;

    // A bus envelope (kind 16) with junk for JSON, on a bus channel node B
    // listens to: ignored (and logged), the bus goes on.
    let mut subscriber = bayeux_subscriber(&nodes[1].addr, "/chat/room").await;
    let mut junk_bus = vec![
        0xB5, 0x01, 0x03, 0xE7, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 16,
    ];
    junk_bus.extend_from_slice(b"{not json");
    let mut n = 0;
    loop {
        n += 1;
        assert!(n < 60, "the bus subscription never reached Redis");
        if spublish(&redis, b"wsbus:bus:/chat/room", &junk_bus) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node_b = &nodes[1];
    eventually_logged(node_b, "ignored a bus message that is not ours", 1).await;
    // The default policy lets subscribers publish.
    let mut publisher = bayeux_subscriber(&nodes[0].addr, "/chat/room").await;
    let id = publisher.client_id.clone();
    publisher
        .send(json!([{"channel": "/chat/room", "clientId": id, "data": "fine"}]))
        .await;
    loop {
        let batch = subscriber.next_batch().await;
        if batch.iter().any(|m| m["data"] == "fine") {
            break;
        }
    }
    for node in &mut nodes {
        assert!(node.is_running());
    }
}

async fn wait_malformed(nodes: &[ServerProcess], count: f64) {
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    blocking(move || {
        for addr in &addrs {
            eventually(SETTLE, &format!("{addr} counts {count} malformed"), || {
                metric(addr, "wsbus_cluster_malformed_total") == Some(count)
            });
        }
    })
    .await;
}

/// `SPUBLISH channel payload` with binary arguments; the subscriber count.
fn spublish(redis: &RedisServer, channel: &[u8], payload: &[u8]) -> u64 {
    let mut command = b"*3\r\n$8\r\nSPUBLISH\r\n".to_vec();
    for arg in [channel, payload] {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, redis.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&command).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    let reply = String::from_utf8(reply).unwrap();
    reply
        .strip_prefix(':')
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("SPUBLISH answered {reply:?}"))
}
