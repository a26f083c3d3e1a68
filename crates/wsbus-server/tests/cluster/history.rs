//! The bus's history shared by three `wsbus serve` nodes over one
//! `redis-server` of the test's own (SPEC §7, issue 12): offsets shared by
//! all nodes, replay on another node, a 10 s Redis outage (paused, and
//! killed and restarted empty), and the death of the node a subscriber
//! was on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbus::client::{self, ClientOptions, WebSocket};
use wsbus::proto::{Event, Message};
use wsbus_test_support::redis::RedisServer;

use crate::support::{
    PUBLISH_TOKEN_ENV, RECONNECT, SETTLE, eventually, node, redis_state, wait_addrs, wait_up,
};

/// The outage the issue names.
const OUTAGE: Duration = Duration::from_secs(10);

/// How often a follower waiting in silence looks at what it has heard
/// (and a warm-up publishes again).
const POLL: Duration = Duration::from_millis(100);

/// Between two publishes: 50 per second, under every default rate.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// `POST /api/publish` (a server-side publish), answered 200.
fn publish(addr: &str, channel: &str, data: Value) {
    let body = json!({"channel": channel, "data": data}).to_string();
    let (status, answer) = crate::support::publish(addr, &body);
    assert_eq!(status, 200, "{answer}");
}

/// Publishes `{"i": 0, 1, …}` on `channel` at `addr` every
/// [`PUBLISH_EVERY`] until told to stop; returns how many it published.
struct Publisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl Publisher {
    fn start(addr: &str, channel: &str) -> Publisher {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (addr, channel) = (addr.to_owned(), channel.to_owned());
        let thread = std::thread::spawn({
            let (stop, paused, count) = (stop.clone(), paused.clone(), count.clone());
            move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    if !paused.load(Ordering::SeqCst) {
                        publish(&addr, &channel, json!({"i": i}));
                        i += 1;
                        count.store(i, Ordering::SeqCst);
                    }
                    std::thread::sleep(PUBLISH_EVERY);
                }
                i
            }
        });
        Publisher {
            stop,
            paused,
            count,
            thread,
        }
    }

    fn published(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn pause(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// What a subscriber received on its channel.
#[derive(Debug, Default)]
struct Seen {
    /// The `data.i` of each message, in arrival order.
    numbers: Vec<u64>,
    /// `(epoch, offset)` of each message.
    positions: Vec<(String, u64)>,
    /// `ext.replay` of every subscribe reply.
    replays: Vec<Value>,
}

/// A Bayeux client over WebSocket that does what CometD does when its
/// socket dies: handshake again (at the next node of its list), and
/// subscribe with its last position (`ext.replay` and `ext.epoch`).
struct Follower {
    nodes: Vec<String>,
    at: usize,
    channel: String,
    ws: WebSocket,
    client_id: String,
    seen: Seen,
    reconnects: usize,
    /// With CometD's `ack` extension: the last batch acknowledged (`None`
    /// without the extension).
    ack: Option<u64>,
}

impl Follower {
    /// Subscribes at `nodes[0]` (replaying after `replay`, if given).
    async fn start(nodes: &[&str], channel: &str, replay: Option<(String, u64)>) -> Follower {
        Self::start_with(nodes, channel, replay, false).await
    }

    /// [`start`](Self::start), with the `ack` extension if `ack`.
    async fn start_with(
        nodes: &[&str],
        channel: &str,
        replay: Option<(String, u64)>,
        ack: bool,
    ) -> Follower {
        let ack = ack.then_some(0);
        let (ws, client_id) = Self::open(nodes[0], channel, replay.as_ref(), ack).await;
        Follower {
            nodes: nodes.iter().map(|addr| (*addr).to_owned()).collect(),
            at: 0,
            channel: channel.to_owned(),
            ws,
            client_id,
            seen: Seen::default(),
            reconnects: 0,
            ack,
        }
    }

    async fn open(
        addr: &str,
        channel: &str,
        replay: Option<&(String, u64)>,
        ack: Option<u64>,
    ) -> (WebSocket, String) {
        let mut ws = client::connect(&format!("ws://{addr}/amb"), ClientOptions::default())
            .await
            .expect("bus socket");
        let mut handshake = json!({"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]});
        if ack.is_some() {
            handshake["ext"] = json!({"ack": true});
        }
        send(&mut ws, json!([handshake])).await;
        let reply = read_batch(&mut ws).await.expect("a handshake reply");
        let client_id = reply[0]["clientId"].as_str().unwrap().to_owned();
        let mut subscribe =
            json!({"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel});
        if let Some((epoch, offset)) = replay {
            subscribe["ext"] = json!({"replay": offset, "epoch": epoch});
        }
        let held = connect(&client_id, ack);
        let mut at_once = held.clone();
        at_once["advice"] = json!({"timeout": 0});
        if ack.is_some() {
            // One connect at a time, as CometD does with the extension: a
            // second connect acknowledging batch 0 would ask for the
            // batches of the first again. The held one follows its reply
            // (`take`).
            send(&mut ws, json!([at_once, subscribe])).await;
        } else {
            send(&mut ws, json!([at_once, subscribe, held])).await;
        }
        (ws, client_id)
    }

    /// The last position seen.
    fn position(&self) -> Option<(String, u64)> {
        self.seen.positions.last().cloned()
    }

    /// Reads until `done(seen)` holds, within `within`; reconnects (to the
    /// next node) when the socket dies.
    async fn read_until(&mut self, within: Duration, mut done: impl FnMut(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.seen) {
            let now = tokio::time::Instant::now();
            assert!(
                now < deadline,
                "not within {within:?}; seen so far: {:?}",
                self.seen
            );
            // A short wait (`recv` is cancel safe): `done` may publish
            // until it hears something.
            let wait = (deadline - now).min(POLL);
            match tokio::time::timeout(wait, read_batch(&mut self.ws)).await {
                Err(_) => continue,
                Ok(Some(batch)) => self.take(batch).await,
                Ok(None) => self.reconnect().await,
            }
        }
    }

    async fn take(&mut self, batch: Vec<Value>) {
        for message in batch {
            let channel = message["channel"].as_str().unwrap_or_default();
            if channel == self.channel {
                if let Some(i) = message["data"]["i"].as_u64() {
                    self.seen.numbers.push(i);
                }
                if let (Some(epoch), Some(offset)) = (
                    message["ext"]["epoch"].as_str(),
                    message["ext"]["offset"].as_u64(),
                ) {
                    self.seen.positions.push((epoch.to_owned(), offset));
                }
            } else if channel == "/meta/subscribe" {
                assert_eq!(message["successful"], true, "{message}");
                if let Some(replay) = message["ext"].get("replay") {
                    self.seen.replays.push(replay.clone());
                }
            } else if channel == "/meta/connect" && message["successful"] == true {
                // Acknowledge the batch, and keep a connect held, as a
                // CometD client does.
                if let (Some(acked), Some(batch)) = (&mut self.ack, message["ext"]["ack"].as_u64())
                {
                    *acked = batch;
                }
                let next = connect(&self.client_id, self.ack);
                send(&mut self.ws, json!([next])).await;
            }
        }
    }

    async fn reconnect(&mut self) {
        self.reconnects += 1;
        self.at = (self.at + 1) % self.nodes.len();
        let position = self.position();
        // A new session at another node: its batches count from 0 again.
        self.ack = self.ack.map(|_| 0);
        let (ws, client_id) = Self::open(
            &self.nodes[self.at],
            &self.channel,
            position.as_ref(),
            self.ack,
        )
        .await;
        self.ws = ws;
        self.client_id = client_id;
    }
}

/// A held `/meta/connect`, acknowledging batch `ack` with the extension.
fn connect(client_id: &str, ack: Option<u64>) -> Value {
    let mut connect =
        json!({"channel": "/meta/connect", "clientId": client_id, "connectionType": "websocket"});
    if let Some(ack) = ack {
        connect["ext"] = json!({"ack": ack});
    }
    connect
}

async fn send(ws: &mut WebSocket, batch: Value) {
    // A send on a dead socket shows as the next read's end.
    let _ = ws.send(Message::text(batch.to_string())).await;
}

/// The next batch; `None` when the socket ended or failed.
async fn read_batch(ws: &mut WebSocket) -> Option<Vec<Value>> {
    loop {
        match ws.recv().await {
            Ok(Some(Event::Message(message))) => {
                return Some(serde_json::from_slice(message.payload()).unwrap());
            }
            Ok(Some(Event::Ping(_) | Event::Pong(_))) => {}
            Ok(Some(_)) | Ok(None) | Err(_) => return None,
        }
    }
}

/// After a fault: lets the publisher go on until the follower heard 20
/// messages more than were published by now, stops it, waits for the rest,
/// and checks that the follower heard every message once, in order, with
/// consecutive offsets.
async fn finish(follower: &mut Follower, publisher: Publisher) {
    let now = publisher.published();
    follower
        .read_until(RECONNECT + SETTLE, |seen| {
            seen.numbers.len() as u64 > now + 20
        })
        .await;
    let n = publisher.stop();
    follower
        .read_until(SETTLE, |seen| seen.numbers.len() as u64 >= n)
        .await;
    assert_eq!(
        follower.seen.numbers,
        (0..n).collect::<Vec<u64>>(),
        "every message once, in order; positions {:?}; replays {:?}",
        follower.seen.positions,
        follower.seen.replays
    );
    consecutive(&follower.seen.positions);
}

/// Offsets of one epoch, each the one before plus one.
fn consecutive(positions: &[(String, u64)]) {
    for pair in positions.windows(2) {
        assert!(
            pair[0].0 == pair[1].0 && pair[1].1 == pair[0].1 + 1
                || pair[0].0 != pair[1].0 && pair[1].1 == 1,
            "offsets go on by one within an epoch, and restart at 1 in a new one: {pair:?}"
        );
    }
}

/// A follower of `/h/feed` at `nodes` (the first, then the next when one
/// dies) that hears a publisher at `publisher` (publishing from `i: 0`
/// once the follower's subscription is in Redis: a probe is heard), and
/// has heard `heard` of its messages.
async fn follow_publisher(publisher: &str, nodes: &[&str], heard: usize) -> (Follower, Publisher) {
    follow_publisher_with(publisher, nodes, heard, false).await
}

async fn follow_publisher_with(
    publisher: &str,
    nodes: &[&str],
    heard: usize,
    ack: bool,
) -> (Follower, Publisher) {
    let mut follower = Follower::start_with(nodes, "/h/feed", None, ack).await;
    let mut probes = 0;
    follower
        .read_until(SETTLE, |seen| {
            if seen.positions.is_empty() {
                publish(publisher, "/h/feed", json!({"probe": probes}));
                probes += 1;
            }
            !seen.positions.is_empty()
        })
        .await;
    let publishing = Publisher::start(publisher, "/h/feed");
    follower
        .read_until(SETTLE, |seen| seen.numbers.len() >= heard)
        .await;
    (follower, publishing)
}

/// A message published on node A and one on node B get consecutive
/// offsets; a subscriber on node C that asks to replay from one of them
/// gets exactly the later ones, although C never had them; a position of
/// another epoch is reported gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_shared_and_replay_works_on_any_node() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 41, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 42, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 43, &[PUBLISH_TOKEN_ENV]),
    ];
    wait_up(&nodes);
    let (a, b, c) = (&nodes[0].addr, &nodes[1].addr, &nodes[2].addr);

    // A subscriber on A hears what is published on A and on B.
    let mut watcher = Follower::start(&[a], "/h/room", None).await;
    let mut i = 0;
    // Its subscription reaches Redis after its reply: publish until heard.
    watcher
        .read_until(SETTLE, |seen| {
            if seen.numbers.is_empty() {
                publish(
                    if i % 2 == 0 { a } else { b },
                    "/h/room",
                    json!({"i": 0, "warmup": true}),
                );
                i += 1;
            }
            !seen.numbers.is_empty()
        })
        .await;
    // From here, alternate nodes; each message heard before the next.
    let start = watcher.seen.positions.len();
    for n in 0..6 {
        publish(
            if n % 2 == 0 { a } else { b },
            "/h/room",
            json!({"i": 100 + n}),
        );
        watcher
            .read_until(SETTLE, |seen| seen.numbers.contains(&(100 + n)))
            .await;
    }
    let ours = &watcher.seen.positions[watcher.seen.positions.len() - 6..];
    assert!(watcher.seen.positions.len() - start >= 6);
    consecutive(ours);
    let (epoch, first) = ours[0].clone();

    // On C (no subscriber there until now), from the first of them.
    let mut late = Follower::start(&[c], "/h/room", Some((epoch.clone(), first))).await;
    late.read_until(SETTLE, |seen| seen.numbers.len() >= 5)
        .await;
    assert_eq!(late.seen.numbers, [101, 102, 103, 104, 105]);
    assert_eq!(
        late.seen.replays,
        [json!({"after": first, "count": 5, "complete": true, "epoch": epoch})]
    );
    consecutive(&late.seen.positions);
    assert_eq!(late.seen.positions[0], (epoch.clone(), first + 1));

    // A position of an epoch that is not the channel's: reported, nothing
    // replayed.
    let mut stranger = Follower::start(&[c], "/h/room", Some(("0000".into(), first))).await;
    stranger
        .read_until(SETTLE, |seen| !seen.replays.is_empty())
        .await;
    assert_eq!(
        stranger.seen.replays,
        [json!({"after": first, "count": 0, "complete": false, "epoch": epoch, "reset": true})]
    );
    assert!(stranger.seen.numbers.is_empty());
}

/// A subscriber on node B, a publisher on node A publishing 50 messages a
/// second; Redis stops (SIGSTOP) for 10 s: the subscriber receives every
/// message once, in order, with consecutive offsets, and without a
/// reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_once_across_a_paused_redis() {
    let mut redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 51, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 52, &[PUBLISH_TOKEN_ENV]),
    ];
    wait_up(&nodes);
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    // The subscriber first, then the publisher: it hears from `i: 0` on.
    let (mut follower, publisher) = follow_publisher(&a, &[&b], 20).await;

    redis.pause();
    let paused_at = Instant::now();
    tokio::task::spawn_blocking({
        let a = a.clone();
        move || {
            eventually(RECONNECT, "A sees Redis down", || redis_state(&a) == "down");
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(OUTAGE.saturating_sub(paused_at.elapsed())).await;
    redis.resume();
    finish(&mut follower, publisher).await;
    assert_eq!(follower.reconnects, 0, "a delay, not a reconnect");
}

/// The same with Redis killed (-9) and restarted empty after 10 s: what the
/// publishing node queued meanwhile reaches the subscriber once Redis is
/// back, in a new epoch (offsets restart at 1); a client that asks to
/// replay from a position of the lost epoch is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_starts_a_new_epoch_and_says_so() {
    let mut redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 61, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 62, &[PUBLISH_TOKEN_ENV]),
    ];
    wait_up(&nodes);
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    let (mut follower, publisher) = follow_publisher(&a, &[&b], 20).await;
    // Nothing on its way when Redis dies: what a killed Redis had accepted
    // but not yet pushed would be gone with it, and a publish the link
    // wrote but saw no answer for is written again to the new Redis (a
    // duplicate across the two epochs). What is tested is the outage.
    publisher.pause(true);
    let before = publisher.published();
    follower
        .read_until(SETTLE, |seen| seen.numbers.len() as u64 >= before)
        .await;
    let (old_epoch, old_offset) = follower.position().unwrap();
    redis.kill9();
    publisher.pause(false);
    tokio::time::sleep(OUTAGE).await;
    redis.restart();
    finish(&mut follower, publisher).await;
    let (new_epoch, _) = follower.position().unwrap();
    assert_ne!(
        new_epoch, old_epoch,
        "a Redis that came back empty is a new epoch"
    );
    assert_eq!(follower.reconnects, 0);

    // A client whose position is in the lost epoch, on either node (once
    // both see Redis again: a node that cannot reach it cannot tell, and
    // answers `complete: false` from what it has).
    let both = [a.clone(), b.clone()];
    tokio::task::spawn_blocking(move || wait_addrs(&both, "up"))
        .await
        .unwrap();
    for addr in [&a, &b] {
        let mut stranger =
            Follower::start(&[addr], "/h/feed", Some((old_epoch.clone(), old_offset))).await;
        stranger
            .read_until(SETTLE, |seen| !seen.replays.is_empty())
            .await;
        let replay = &stranger.seen.replays[0];
        assert_eq!(replay["reset"], true, "{replay}");
        assert_eq!(replay["epoch"], json!(new_epoch), "{replay}");
        assert_eq!(replay["count"], 0, "{replay}");
    }
}

/// A subscriber on node B, a publisher on node A; node B is killed (-9)
/// mid-stream: the subscriber handshakes at node C, subscribes with its
/// last position, and receives every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_once_across_the_death_of_the_subscribers_node() {
    across_the_death_of_the_subscribers_node(false).await;
}

/// The same with CometD's `ack` extension: its batches acknowledged on the
/// dead node, it resumes at node C from its position all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_once_across_node_death_with_the_ack_extension() {
    across_the_death_of_the_subscribers_node(true).await;
}

async fn across_the_death_of_the_subscribers_node(ack: bool) {
    let redis = RedisServer::start();
    let mut nodes = [
        node(&redis.url(), 71, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 72, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 73, &[PUBLISH_TOKEN_ENV]),
    ];
    wait_up(&nodes);
    let (a, b, c) = (
        nodes[0].addr.clone(),
        nodes[1].addr.clone(),
        nodes[2].addr.clone(),
    );
    let (mut follower, publisher) = follow_publisher_with(&a, &[&b, &c], 50, ack).await;
    let pid = nodes[1].pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = nodes[1].wait_until(Instant::now() + SETTLE);
    finish(&mut follower, publisher).await;
    assert_eq!(follower.reconnects, 1, "moved to node C once");
    if ack {
        assert!(
            follower.ack.is_some_and(|batch| batch > 0),
            "batches acknowledged at node C: {:?}",
            follower.ack
        );
    }
    assert_eq!(
        follower.seen.replays[0]["complete"], true,
        "{:?}",
        follower.seen.replays
    );
}

/// A node whose last subscriber of a channel left forgets where the channel
/// was: a later subscriber there gets what is published from then on, not
/// — as a "gap fill" — what was published while nobody there listened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_is_not_handed_what_was_published_before_it() {
    let redis = RedisServer::start();
    let nodes = [
        node(&redis.url(), 91, &[PUBLISH_TOKEN_ENV]),
        node(&redis.url(), 92, &[PUBLISH_TOKEN_ENV]),
    ];
    wait_up(&nodes);
    let (a, b) = (nodes[0].addr.clone(), nodes[1].addr.clone());
    let heard_a_probe = |follower: &mut Follower, probes: &mut u64| {
        let heard = !follower.seen.positions.is_empty();
        if !heard {
            publish(&a, "/h/old", json!({"probe": *probes}));
            *probes += 1;
        }
        heard
    };
    // A first subscriber on node B hears the channel, then leaves.
    let mut first = Follower::start(&[&b], "/h/old", None).await;
    let mut probes = 0;
    let deadline = Instant::now() + SETTLE;
    while !heard_a_probe(&mut first, &mut probes) {
        assert!(
            Instant::now() < deadline,
            "the first subscriber heard nothing"
        );
        let _ = tokio::time::timeout(POLL, async {
            if let Some(batch) = read_batch(&mut first.ws).await {
                first.take(batch).await;
            }
        })
        .await;
    }
    let id = first.client_id.clone();
    send(
        &mut first.ws,
        json!([{"channel": "/meta/disconnect", "clientId": id}]),
    )
    .await;
    let _ = read_batch(&mut first.ws).await;
    // Node B's subscription is gone in Redis: nothing published from here
    // on is on its way to B.
    eventually(SETTLE, "node B unsubscribed from /h/old in Redis", || {
        redis
            .command(&["PUBSUB", "SHARDNUMSUB", "wsbus:bus:/h/old"])
            .ends_with("\n0")
    });
    // Published while node B has no subscriber of the channel.
    for i in 0..3 {
        publish(&a, "/h/old", json!({"i": 1000 + i}));
    }
    // An accepted publish is appended in Redis asynchronously: wait until
    // the three are in the channel's stream, i.e. in the cluster's past.
    eventually(SETTLE, "the three messages appended in Redis", || {
        redis
            .command(&[
                "XREVRANGE",
                "wsbus:history:{/h/old}",
                "+",
                "-",
                "COUNT",
                "1",
            ])
            .contains("1002")
    });
    // A new subscriber on node B, without replay: it hears the next probe
    // and nothing of the three before it.
    let mut second = Follower::start(&[&b], "/h/old", None).await;
    let deadline = Instant::now() + SETTLE;
    let mut probes = 1000;
    while !heard_a_probe(&mut second, &mut probes) {
        assert!(
            Instant::now() < deadline,
            "the second subscriber heard nothing"
        );
        let _ = tokio::time::timeout(POLL, async {
            if let Some(batch) = read_batch(&mut second.ws).await {
                second.take(batch).await;
            }
        })
        .await;
    }
    assert!(
        second.seen.numbers.is_empty(),
        "handed messages from before it subscribed: {:?}",
        second.seen.numbers
    );
}
