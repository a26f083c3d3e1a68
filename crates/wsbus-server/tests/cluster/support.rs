//! What the cluster tests share: nodes over a test's own Redis, HTTP
//! requests to them, waits that poll up to a deadline, the chat demo's
//! sockets and a Bayeux client over WebSocket.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbus::client::{self, ClientOptions, WebSocket};
use wsbus::proto::{Event, Message};
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::wire::{self, http_exchange};

use crate::common::serve;

/// The admin token of every node: [`get`] sends it.
pub(crate) const ADMIN_TOKEN: &str = "cluster-admin-token";

/// The token of `POST /api/publish` ([`publish`]); a node takes it with
/// [`PUBLISH_TOKEN_ENV`].
pub(crate) const PUBLISH_TOKEN: &str = "cluster-publish-token";

/// [`node`]'s extra environment for a node that takes [`PUBLISH_TOKEN`].
pub(crate) const PUBLISH_TOKEN_ENV: (&str, &str) = ("WSBUS_BUS__PUBLISH_TOKEN", PUBLISH_TOKEN);

/// How long a cluster-wide effect may take to be seen: a Redis round trip
/// and `wsbus_redis::hub::SIZE_COALESCE` take milliseconds, a gap filled
/// from history little more; a loaded CI machine stretches that, never to
/// this.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);

/// How long a node may take to find its Redis (at start, or again after an
/// outage): `BACKOFF_MAX` (2 s) between attempts, a probe's `PROBE_TIMEOUT`
/// (3 s), and a loaded machine's delays.
pub(crate) const RECONNECT: Duration = Duration::from_secs(30);

/// Longer than any HTTP response may take: a held long-polling connect (the
/// bus's 30 s hold), the forwarding margin, and a loaded machine's delays.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `wsbus serve` as cluster node `id` over the Redis at `redis_url`, with
/// [`ADMIN_TOKEN`], cluster debug logs and `extra` environment.
pub(crate) fn node(redis_url: &str, id: u16, extra: &[(&str, &str)]) -> ServerProcess {
    let id = id.to_string();
    let mut env = vec![
        ("WSBUS_CLUSTER__REDIS_URL", redis_url),
        ("WSBUS_CLUSTER__NODE_ID", &id),
        ("WSBUS_ADMIN__TOKEN", ADMIN_TOKEN),
        ("WSBUS_LOG", "wsbus::cluster=debug,info"),
    ];
    env.extend_from_slice(extra);
    serve(&env)
}

/// The addresses of `nodes`.
pub(crate) fn addrs(nodes: &[ServerProcess]) -> Vec<&str> {
    nodes.iter().map(|n| n.addr.as_str()).collect()
}

/// Runs blocking checks (HTTP polls) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `GET path` with the admin token: the status and the body.
pub(crate) fn get(addr: &str, path: &str) -> (u16, String) {
    let response = http_exchange(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        ),
        b"",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    (
        wire::status_code(&response),
        wire::body(&response).to_owned(),
    )
}

/// `GET path` answered 200 with JSON: the JSON.
pub(crate) fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `POST /api/publish` with [`PUBLISH_TOKEN`]: the status and the body.
pub(crate) fn publish(addr: &str, body: &str) -> (u16, String) {
    let response = http_exchange(
        addr,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {PUBLISH_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("POST /api/publish to {addr}: {e}"));
    (
        wire::status_code(&response),
        wire::body(&response).to_owned(),
    )
}

/// `POST path` with a JSON body (and `extra` header lines), answered 200
/// with JSON: the JSON.
pub(crate) fn post_json(addr: &str, path: &str, body: &Value, extra: &str) -> Value {
    let body = body.to_string();
    let response = http_exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        ),
        body.as_bytes(),
        READ_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("POST {path} to {addr}: {e}"));
    assert_eq!(wire::status_code(&response), 200, "{response}");
    serde_json::from_str(wire::body(&response)).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// Polls `check` until it holds or `within` passes (then fails with `what`).
pub(crate) fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state of the node's Redis link, from `/readyz`.
pub(crate) fn redis_state(addr: &str) -> Value {
    get_json(addr, "/readyz")["cluster"]["redis"].clone()
}

/// Waits (blocking) until every node at `addrs` reports its Redis link
/// `state`.
pub(crate) fn wait_addrs(addrs: &[impl AsRef<str>], state: &str) {
    for addr in addrs {
        let addr = addr.as_ref();
        eventually(RECONNECT, &format!("{addr}: Redis link {state}"), || {
            redis_state(addr) == state
        });
    }
}

/// Waits (blocking) until every one of `nodes` has its Redis link up.
pub(crate) fn wait_up<'a>(nodes: impl IntoIterator<Item = &'a ServerProcess>) {
    let addrs: Vec<&str> = nodes.into_iter().map(|n| n.addr.as_str()).collect();
    wait_addrs(&addrs, "up");
}

/// [`wait_addrs`] off the async workers.
pub(crate) async fn wait_state(addrs: &[&str], state: &'static str) {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    blocking(move || wait_addrs(&addrs, state)).await;
}

/// A sample of `/metrics` (no labels).
pub(crate) fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = get(addr, "/metrics");
    body.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// How many members of the chat the node counts, cluster-wide.
pub(crate) fn group_size(addr: &str) -> u64 {
    get_json(addr, "/admin/api/groups/chat")["size"]
        .as_u64()
        .unwrap()
}

/// Waits until every node at `addrs` counts `size` members of the chat.
pub(crate) async fn wait_group_size(addrs: &[&str], size: u64, within: Duration) {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    blocking(move || {
        for addr in &addrs {
            let deadline = Instant::now() + within;
            while group_size(addr) != size {
                if Instant::now() >= deadline {
                    let sizes: Vec<Value> = addrs
                        .iter()
                        .map(|a| get_json(a, "/admin/api/groups/chat"))
                        .collect();
                    panic!("{addr} does not count {size} chat members: {sizes:?} (of {addrs:?})");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
    .await;
}

/// A user of the chat demo, welcomed.
pub(crate) async fn chat(addr: &str) -> WebSocket {
    let options = ClientOptions {
        protocols: vec!["text".into()],
        ..ClientOptions::default()
    };
    let mut ws = client::connect(&format!("ws://{addr}/chat"), options)
        .await
        .expect("chat socket");
    let welcome = text(&mut ws).await;
    assert!(welcome.starts_with("Welcome to our chat"), "{welcome}");
    ws
}

/// The next message, skipping keepalive pings.
pub(crate) async fn message(ws: &mut WebSocket) -> Message {
    loop {
        let event = tokio::time::timeout(SETTLE, ws.recv())
            .await
            .expect("a message in time")
            .expect("no I/O error")
            .expect("a message before the end");
        match event {
            Event::Message(message) => return message,
            Event::Ping(_) | Event::Pong(_) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The next message, which must be text.
pub(crate) async fn text(ws: &mut WebSocket) -> String {
    match message(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// A Bayeux client over WebSocket, handshaken and connected.
pub(crate) struct BayeuxWs {
    ws: WebSocket,
    pub(crate) client_id: String,
}

/// A Bayeux client on the node at `addr`, handshaken and connected.
pub(crate) async fn bayeux_client(addr: &str) -> BayeuxWs {
    let mut ws = client::connect(&format!("ws://{addr}/amb"), ClientOptions::default())
        .await
        .expect("bus socket");
    ws.send(Message::text(
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}])
            .to_string(),
    ))
    .await
    .unwrap();
    let reply = batch(&mut ws).await;
    let client_id = reply[0]["clientId"].as_str().unwrap().to_owned();
    let mut client = BayeuxWs { ws, client_id };
    client
        .send(json!([{"channel": "/meta/connect", "clientId": client.client_id, "connectionType": "websocket", "advice": {"timeout": 0}}]))
        .await;
    client.next_batch().await;
    client
}

/// A [`bayeux_client`] subscribed to `pattern`, with a connect held so that
/// deliveries flow.
pub(crate) async fn bayeux_subscriber(addr: &str, pattern: &str) -> BayeuxWs {
    let mut client = bayeux_client(addr).await;
    client
        .send(json!([{"channel": "/meta/subscribe", "clientId": client.client_id, "subscription": pattern}]))
        .await;
    let reply = client.next_batch().await;
    assert!(
        reply
            .iter()
            .any(|m| m["channel"] == "/meta/subscribe" && m["successful"] == true),
        "{reply:?}"
    );
    // A held connect, so that deliveries flow.
    client
        .send(json!([{"channel": "/meta/connect", "clientId": client.client_id, "connectionType": "websocket"}]))
        .await;
    client
}

impl BayeuxWs {
    pub(crate) async fn send(&mut self, batch: Value) {
        self.ws
            .send(Message::text(batch.to_string()))
            .await
            .unwrap();
    }

    /// A connect answered at once: the session's expiry starts again (the
    /// reply is not waited for).
    pub(crate) async fn keepalive(&mut self) {
        let id = self.client_id.clone();
        self.send(json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket", "advice": {"timeout": 0}}]))
            .await;
    }

    pub(crate) async fn publish(&mut self, channel: &str, data: Value) {
        let id = self.client_id.clone();
        self.send(json!([{"channel": channel, "clientId": id, "data": data}]))
            .await;
    }

    pub(crate) async fn next_batch(&mut self) -> Vec<Value> {
        batch(&mut self.ws).await
    }
}

/// The next message, a batch of Bayeux messages.
async fn batch(ws: &mut WebSocket) -> Vec<Value> {
    serde_json::from_slice(message(ws).await.payload()).unwrap()
}
