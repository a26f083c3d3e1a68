//! The application API over real sockets: origin rules, custom origin checks,
//! HTTP-session binding, event order, the hub, and the runtime's limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use wsbus::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use wsbus::client::{self, ClientError, ClientOptions, WebSocket};
use wsbus::proto::{CloseCode, CloseFrame, Event, Message};
use wsbus::session::{
    MemorySessionStore, Session, SessionId, SessionStore, StoreError, StoreFuture, User,
};
use wsbus::{GroupSend, Outcome, Runtime, Server, ServerConfig, SocketId, SocketSettings};

type Decide = Box<dyn Fn(&HandshakeRequest) -> Upgrade<String> + Send + Sync>;

/// An app whose decision is a closure and that records every event.
struct Recorder {
    decide: Decide,
    events: Arc<Mutex<Vec<(SocketId, EventKind, String)>>>,
}

impl WebSocketApp for Recorder {
    type Data = String;

    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<String> {
        (self.decide)(request)
    }

    fn on_event(&self, mut event: WsEvent<'_, String>) {
        let id = event.socket.id;
        self.events
            .lock()
            .unwrap()
            .push((id, event.kind.clone(), event.data.clone()));
        match &event.kind {
            EventKind::Open => {
                event.hub().add_to_group("all", id);
            }
            EventKind::Message(message) => {
                let reply = message.clone();
                let _ = event.send(reply);
            }
            _ => {}
        }
    }
}

struct TestServer {
    addr: String,
    runtime: Runtime,
    events: Arc<Mutex<Vec<(SocketId, EventKind, String)>>>,
}

async fn start_with(
    config: ServerConfig,
    store: Arc<dyn SessionStore>,
    decide: Decide,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let runtime = Runtime::builder(config).session_store(store).build();
    let events = Arc::new(Mutex::new(Vec::new()));
    let app = Recorder {
        decide,
        events: events.clone(),
    };
    let server = Server::new(runtime.clone()).websocket("/ws", app);
    tokio::spawn(server.serve(listener, std::future::pending()));
    TestServer {
        addr,
        runtime,
        events,
    }
}

async fn start(decide: Decide) -> TestServer {
    start_with(
        ServerConfig::default(),
        Arc::new(MemorySessionStore::default()),
        decide,
    )
    .await
}

fn accept_default() -> Decide {
    Box::new(|req| {
        if !req.is_websocket {
            return Upgrade::status(404);
        }
        Upgrade::Accept(WebSocketConfig::new(format!("data for {}", req.path)))
    })
}

/// A raw upgrade request for `target` with extra header lines.
fn upgrade_request(target: &str, host: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The status line of a raw upgrade with extra headers (and a Host we choose).
async fn handshake_status(addr: &str, host: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = upgrade_request("/ws", host, extra);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn default_origin_rule_matrix() {
    let server = start(accept_default()).await;
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let own = format!("127.0.0.1:{port}");
    let cases: Vec<(String, String, &str)> = vec![
        (own.clone(), String::new(), "101"),
        (
            own.clone(),
            format!("Origin: http://127.0.0.1:{port}\r\n"),
            "101",
        ),
        (own.clone(), "Origin: http://evil.example\r\n".into(), "403"),
        (own.clone(), "Origin: null\r\n".into(), "403"),
        (
            own.clone(),
            format!("Origin: https://127.0.0.1:{port}\r\n"),
            "403",
        ),
        (
            own.clone(),
            format!("Origin: http://127.0.0.1:{}\r\n", 1),
            "403",
        ),
        // RFC 6454 normalisation: default port and host case.
        (
            "example.com".into(),
            "Origin: http://example.com:80\r\n".into(),
            "101",
        ),
        (
            "example.com:80".into(),
            "Origin: http://example.com\r\n".into(),
            "101",
        ),
        (
            "Example.COM".into(),
            "Origin: http://eXample.com\r\n".into(),
            "101",
        ),
        (
            "example.com".into(),
            "Origin: http://example.com:8080\r\n".into(),
            "403",
        ),
    ];
    let refused = cases
        .iter()
        .filter(|(_, _, status)| *status == "403")
        .count() as u64;
    for (host, extra, expected) in cases {
        let status = handshake_status(&server.addr, &host, &extra).await;
        assert!(
            status.contains(expected),
            "Host {host}, {extra:?}: got {status}"
        );
    }
    // Each refusal is counted once, by reason, for the metrics endpoint.
    let metrics = server.runtime.metrics();
    assert_eq!(metrics.refusals("origin_not_allowed"), refused as u64);
    assert_eq!(metrics.handshakes(403), refused as u64);
}

#[tokio::test]
async fn custom_check_origin_false_error_or_panic_rejects() {
    let decide: Decide = Box::new(|req| {
        let mode = req.params.get("mode").cloned().unwrap_or_default();
        let config = WebSocketConfig::new(String::new());
        Upgrade::Accept(match mode.as_str() {
            "allow-example" => {
                config.check_origin(|origin| Ok(origin == Some("https://app.example.com")))
            }
            "error" => config.check_origin(|_| Err("no origin service".into())),
            _ => config.check_origin(|_| panic!("check_origin blew up")),
        })
    });
    let server = start(decide).await;
    let status = |mode: &'static str, origin: &'static str| {
        let addr = server.addr.clone();
        async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let request = upgrade_request(
                &format!("/ws?mode={mode}"),
                &addr,
                &format!(
                    "Origin: {origin}
"
                ),
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut buf = [0u8; 12];
            stream.read_exact(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    let cases = [
        ("allow-example", "https://app.example.com", "101"),
        ("allow-example", "https://evil.example", "403"),
        ("error", "https://app.example.com", "403"),
        ("panic", "https://app.example.com", "403"),
        // The server survived the panic.
        ("allow-example", "https://app.example.com", "101"),
    ];
    for (mode, origin, expected) in cases {
        let got = status(mode, origin).await;
        assert!(got.contains(expected), "{mode} with {origin}: {got}");
    }
}

#[tokio::test]
async fn refusal_is_any_http_response() {
    let server = start(accept_default()).await;
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

async fn connect(addr: &str, cookie: Option<&SessionId>) -> WebSocket {
    let headers = cookie
        .map(|id| {
            vec![(
                "Cookie".to_owned(),
                format!("wsbus_session={}", id.as_str()),
            )]
        })
        .unwrap_or_default();
    client::connect(
        &format!("ws://{addr}/ws"),
        ClientOptions {
            headers,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Read until the server's close frame; returns it.
async fn expect_close(ws: &mut WebSocket, within: Duration) -> Option<CloseFrame> {
    tokio::time::timeout(within, async {
        loop {
            match ws.recv().await {
                Ok(Some(Event::Close(frame))) => return frame,
                Ok(Some(_)) => {}
                Ok(None) | Err(ClientError::Io(_)) => {
                    panic!("connection ended without a close frame")
                }
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await
    .expect("a close frame in time")
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session for `user` on the test server.
async fn login(server: &TestServer, user: &str) -> SessionId {
    server
        .runtime
        .sessions()
        .login(User::new(user))
        .await
        .expect("the memory store answers")
}

fn close_events(server: &TestServer) -> Vec<CloseCode> {
    server
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, kind, _)| match kind {
            EventKind::Close(code) => Some(*code),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn logout_closes_bound_sockets_with_1008() {
    let decide: Decide = Box::new(|req| {
        let keep = req.params.contains_key("keep");
        Upgrade::Accept(WebSocketConfig::new(String::new()).terminate_on_session_exit(!keep))
    });
    let server = start(decide).await;
    let sessions = server.runtime.sessions().clone();
    let alice = sessions.login(User::new("alice")).await.unwrap();
    let bob = sessions.login(User::new("bob")).await.unwrap();
    let mut bound = connect(&server.addr, Some(&alice)).await;
    let headers = vec![(
        "Cookie".to_owned(),
        format!("wsbus_session={}", alice.as_str()),
    )];
    let mut outliving = client::connect(
        &format!("ws://{}/ws?keep", server.addr),
        ClientOptions {
            headers,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let mut unbound = connect(&server.addr, None).await;
    let mut other = connect(&server.addr, Some(&bob)).await;
    wait_for("four sockets", || {
        server.runtime.hub().group_size("all") == 4
    })
    .await;

    assert!(sessions.logout(&alice).await.unwrap());
    let frame = expect_close(&mut bound, Duration::from_secs(5))
        .await
        .expect("a close code");
    assert_eq!(
        frame,
        CloseFrame::new(CloseCode::POLICY_VIOLATION, "HTTP session ended")
    );
    wait_for("the app's CLOSE 1008", || {
        close_events(&server).contains(&CloseCode::POLICY_VIOLATION)
    })
    .await;

    // terminate_on_session_exit = false, no session, another session: still open.
    for ws in [&mut outliving, &mut unbound, &mut other] {
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            ws.recv_message().await.unwrap(),
            Some(Message::text("still here"))
        );
    }
}

/// On tokio's paused clock: the sweep (every 10 s at this idle timeout) runs
/// as soon as the test waits, with no real waiting.
#[tokio::test(start_paused = true)]
async fn idle_session_expiry_closes_bound_sockets_with_1008() {
    let idle = Duration::from_secs(60);
    let config = ServerConfig {
        session_idle_timeout: idle,
        ..ServerConfig::default()
    };
    let server = start_with(
        config,
        Arc::new(MemorySessionStore::default()),
        accept_default(),
    )
    .await;
    let id = login(&server, "idle").await;
    let mut ws = connect(&server.addr, Some(&id)).await;
    let started = Instant::now();
    // The socket's keepalive pings (every 30 s) are answered while we wait:
    // the client reads until the close frame.
    let frame = expect_close(&mut ws, idle * 2).await.expect("a close code");
    assert_eq!(
        frame,
        CloseFrame::new(CloseCode::POLICY_VIOLATION, "HTTP session ended")
    );
    let waited = started.elapsed();
    let sweep = server.runtime.sessions().sweep_interval();
    assert!(
        waited >= idle - Duration::from_secs(1) && waited <= idle + sweep,
        "closed after {waited:?}"
    );
}

/// A store that counts refreshes.
#[derive(Default)]
struct CountingStore {
    inner: MemorySessionStore,
    touches: AtomicUsize,
}

impl SessionStore for CountingStore {
    fn insert(&self, session: Session) -> StoreFuture<'_, Result<(), StoreError>> {
        self.inner.insert(session)
    }
    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        now: SystemTime,
    ) -> StoreFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.get(id, now)
    }
    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        expires_at: SystemTime,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        self.inner.touch(id, expires_at)
    }
    fn remove<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Result<bool, StoreError>> {
        self.inner.remove(id)
    }
    fn remove_expired(
        &self,
        now: SystemTime,
    ) -> StoreFuture<'_, Result<Vec<SessionId>, StoreError>> {
        self.inner.remove_expired(now)
    }
}

/// On tokio's paused clock: the round trips take no virtual time, and the
/// window is crossed by waiting, not by racing a real clock.
#[tokio::test(start_paused = true)]
async fn session_access_refreshes_at_most_once_per_throttle_window() {
    const THROTTLE: Duration = Duration::from_secs(60);
    let store = Arc::new(CountingStore::default());
    let decide: Decide = Box::new(|req| {
        let access = req.params.contains_key("access");
        Upgrade::Accept(
            WebSocketConfig::new(String::new())
                .session_access(access)
                .session_access_throttle(THROTTLE),
        )
    });
    // No keepalive ping inside the test's waits.
    let config = ServerConfig {
        socket: SocketSettings {
            keepalive_interval: THROTTLE * 10,
            keepalive_timeout: THROTTLE * 20,
            ..SocketSettings::default()
        },
        ..ServerConfig::default()
    };
    let server = start_with(config, store.clone(), decide).await;
    let id = login(&server, "active").await;
    let cookie = vec![(
        "Cookie".to_owned(),
        format!("wsbus_session={}", id.as_str()),
    )];

    // Without session_access, messages never touch the session.
    let mut ws = client::connect(
        &format!("ws://{}/ws", server.addr),
        ClientOptions {
            headers: cookie.clone(),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let before = store.touches.load(Ordering::SeqCst);
    for _ in 0..5 {
        ws.send(Message::text("x")).await.unwrap();
        ws.recv_message().await.unwrap();
    }
    assert_eq!(store.touches.load(Ordering::SeqCst), before);

    // With it: the first message refreshes, the rest of the window does not,
    // and every message is still delivered.
    let mut ws = client::connect(
        &format!("ws://{}/ws?access", server.addr),
        ClientOptions {
            headers: cookie,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let before = store.touches.load(Ordering::SeqCst);
    for i in 0..10 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            ws.recv_message().await.unwrap(),
            Some(Message::text(format!("m{i}")))
        );
    }
    // The refresh runs in a task of its own (the socket does not wait on
    // the store): wait for it. Only one was started, so it stays one.
    let touched = || store.touches.load(Ordering::SeqCst) - before;
    wait_for("the window's one refresh", || touched() >= 1).await;
    assert_eq!(touched(), 1);
    tokio::time::sleep(THROTTLE).await;
    ws.send(Message::text("after the window")).await.unwrap();
    ws.recv_message().await.unwrap();
    wait_for("the next window's refresh", || touched() >= 2).await;
    assert_eq!(touched(), 2);
    // Server-to-client messages never count.
    server
        .runtime
        .hub()
        .send_to_group("all", Message::text("push"));
    ws.recv_message().await.unwrap();
    assert_eq!(touched(), 2);
}

#[tokio::test]
async fn events_arrive_in_order_with_data_and_close_exactly_once() {
    let server = start(accept_default()).await;
    let mut ws = connect(&server.addr, None).await;
    for text in ["one", "two", "three"] {
        ws.send(Message::text(text)).await.unwrap();
        ws.recv_message().await.unwrap();
    }
    assert_eq!(
        ws.close(CloseCode(4001), "bye").await.unwrap(),
        CloseCode(4001)
    );
    wait_for("CLOSE", || !close_events(&server).is_empty()).await;
    let events = server.events.lock().unwrap().clone();
    let kinds: Vec<EventKind> = events.iter().map(|(_, k, _)| k.clone()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Open,
            EventKind::Message(Message::text("one")),
            EventKind::Message(Message::text("two")),
            EventKind::Message(Message::text("three")),
            EventKind::Close(CloseCode(4001)),
        ]
    );
    assert!(events.iter().all(|(_, _, data)| data == "data for /ws"));
    // Counted for the metrics endpoint: messages both ways, the close code.
    let metrics = server.runtime.metrics();
    let traffic = metrics.traffic();
    assert_eq!((traffic.messages_in, traffic.messages_out), (3, 3));
    assert!(traffic.bytes_in > 0 && traffic.bytes_out > 0, "{traffic:?}");
    assert_eq!(metrics.closes(CloseCode(4001)), 1);
    assert_eq!(metrics.handshakes(101), 1);
}

#[tokio::test]
async fn hub_fan_out_group_size_and_close_from_outside() {
    let server = start(accept_default()).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(connect(&server.addr, None).await);
    }
    let hub = server.runtime.hub().clone();
    wait_for("three members", || hub.group_size("all") == 3).await;
    assert_eq!(
        hub.send_to_group("all", Message::text("news")),
        GroupSend {
            local: 3,
            forwarded: false
        }
    );
    for ws in &mut sockets {
        assert_eq!(
            ws.recv_message().await.unwrap(),
            Some(Message::text("news"))
        );
    }
    let ids: Vec<SocketId> = server
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(hub.remove_from_group("all", ids[0]), Outcome::Done);
    assert_eq!(hub.group_size("all"), 2);
    assert_eq!(hub.send(ids[0], Message::text("just you")), Outcome::Done);
    assert_eq!(
        sockets[0].recv_message().await.unwrap(),
        Some(Message::text("just you"))
    );
    assert_eq!(hub.close(ids[1], CloseCode(4000), "kicked"), Outcome::Done);
    let frame = expect_close(&mut sockets[1], Duration::from_secs(5)).await;
    assert_eq!(frame, Some(CloseFrame::new(CloseCode(4000), "kicked")));
    wait_for("membership to end", || hub.group_size("all") == 1).await;
    wait_for("the socket to leave the hub", || hub.len() == 2).await;
    assert_eq!(hub.send(ids[1], Message::text("gone")), Outcome::NotFound);
}

#[tokio::test]
async fn connection_limit_answers_503_with_retry_after() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = start_with(
        config,
        Arc::new(MemorySessionStore::default()),
        accept_default(),
    )
    .await;
    let _a = connect(&server.addr, None).await;
    let _b = connect(&server.addr, None).await;
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let request = upgrade_request("/ws", &server.addr, "");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 5\r\n"),
        "{response}"
    );
    let refusals = server.runtime.metrics().refusals("too_many_connections");
    assert_eq!(refusals, 1);
}

#[tokio::test]
async fn silent_peer_is_dropped_after_keepalive_timeout_as_1006() {
    let config = ServerConfig {
        socket: SocketSettings {
            keepalive_interval: Duration::from_millis(200),
            keepalive_timeout: Duration::from_millis(600),
            ..SocketSettings::default()
        },
        ..ServerConfig::default()
    };
    let server = start_with(
        config,
        Arc::new(MemorySessionStore::default()),
        accept_default(),
    )
    .await;
    // A raw client that completes the handshake and then says nothing.
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let request = upgrade_request("/ws", &server.addr, "");
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .expect("the server drops a silent peer")
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "dropped after {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("101"), "handshake answered");
    assert!(
        received.windows(2).any(|w| w == [0x89, 0x00]),
        "the server pinged first"
    );
    wait_for("the app's CLOSE 1006", || {
        close_events(&server) == [CloseCode::ABNORMAL]
    })
    .await;
    assert_eq!(server.runtime.metrics().closes(CloseCode::ABNORMAL), 1);
}

#[tokio::test]
async fn slow_consumer_gets_1008_next_when_it_reads_again() {
    let config = ServerConfig {
        socket: SocketSettings {
            max_outbound_bytes: 256 * 1024,
            close_timeout: Duration::from_secs(20),
            ..SocketSettings::default()
        },
        ..ServerConfig::default()
    };
    let server = start_with(
        config,
        Arc::new(MemorySessionStore::default()),
        accept_default(),
    )
    .await;
    let mut slow = connect(&server.addr, None).await;
    let hub = server.runtime.hub().clone();
    wait_for("the member", || hub.group_size("all") == 1).await;
    // 64 MiB at a reader that does not read: far past kernel buffers and the
    // 256 KiB bound.
    let chunk = Message::binary(vec![7u8; 64 * 1024]);
    for _ in 0..1024 {
        hub.send_to_group("all", chunk.clone());
        tokio::task::yield_now().await;
    }
    // Now it reads: whatever was in flight, then the close frame, long
    // before 64 MiB.
    let mut received = 0usize;
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.recv().await.unwrap() {
                Some(Event::Message(m)) => received += m.len(),
                Some(Event::Close(frame)) => return frame,
                Some(_) => {}
                None => panic!("ended without a close frame"),
            }
        }
    })
    .await
    .expect("the close frame arrives");
    assert_eq!(
        frame,
        Some(CloseFrame::new(
            CloseCode::POLICY_VIOLATION,
            "slow consumer"
        ))
    );
    assert!(
        received < 32 << 20,
        "read {received} bytes before the close"
    );
    assert_eq!(server.runtime.metrics().slow_consumers(), 1);
}

/// Joins group `g` on OPEN; panics on the message "boom" (or on OPEN with
/// `?panic_on_open`); echoes everything else. Counts CLOSE events per socket.
#[derive(Default)]
struct Panicker {
    closes: Arc<Mutex<Vec<(SocketId, CloseCode)>>>,
}

impl WebSocketApp for Panicker {
    type Data = ();

    fn upgrade(&self, _request: &HandshakeRequest) -> Upgrade<()> {
        Upgrade::Accept(WebSocketConfig::new(()))
    }

    fn on_event(&self, mut event: WsEvent<'_, ()>) {
        match &event.kind {
            EventKind::Open => {
                event.hub().add_to_group("g", event.socket.id);
                assert!(
                    !event.socket.params.contains_key("panic_on_open"),
                    "handler bug on open"
                );
            }
            EventKind::Message(message) if message == &Message::text("boom") => {
                panic!("handler bug")
            }
            EventKind::Message(message) => {
                let echo = message.clone();
                let _ = event.send(echo);
            }
            EventKind::Close(code) => self.closes.lock().unwrap().push((event.socket.id, *code)),
            EventKind::Error(_) => {}
        }
    }
}

/// A panicking handler costs its own socket only: the socket is closed with
/// 1011, its handler still gets CLOSE exactly once, and it leaves the hub,
/// its group and its HTTP session; other sockets carry on.
#[tokio::test]
async fn panicking_handler_closes_its_socket_with_1011_and_leaves_nothing_behind() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let runtime = Runtime::new(ServerConfig::default());
    let app = Panicker::default();
    let closes = app.closes.clone();
    let server = Server::new(runtime.clone()).websocket("/ws", app);
    tokio::spawn(server.serve(listener, std::future::pending()));
    let hub = runtime.hub().clone();
    let sessions = runtime.sessions().clone();
    let login = sessions.login(User::new("victim")).await.unwrap();
    let cookie = |id: &SessionId| ClientOptions {
        headers: vec![(
            "Cookie".to_owned(),
            format!("wsbus_session={}", id.as_str()),
        )],
        ..ClientOptions::default()
    };

    let mut bystander = client::connect(&format!("ws://{addr}/ws"), ClientOptions::default())
        .await
        .unwrap();
    let mut victim = client::connect(&format!("ws://{addr}/ws"), cookie(&login))
        .await
        .unwrap();
    wait_for("both in the group", || hub.group_size("g") == 2).await;
    assert_eq!(sessions.bound_sockets(&login), 1);

    victim.send(Message::text("boom")).await.unwrap();
    // Sent before the close reached us: not delivered to the failed handler.
    let _ = victim.send(Message::text("after the panic")).await;
    let frame = expect_close(&mut victim, Duration::from_secs(5)).await;
    assert_eq!(
        frame,
        Some(CloseFrame::new(CloseCode::INTERNAL_ERROR, "internal error"))
    );
    wait_for("the victim's CLOSE", || closes.lock().unwrap().len() == 1).await;
    wait_for("the victim to leave the hub", || hub.len() == 1).await;
    assert_eq!(hub.group_size("g"), 1);
    assert_eq!(sessions.bound_sockets(&login), 0);

    // A panic on OPEN: closed with 1011 too, CLOSE delivered, nothing left.
    let mut on_open = client::connect(&format!("ws://{addr}/ws?panic_on_open"), cookie(&login))
        .await
        .unwrap();
    let frame = expect_close(&mut on_open, Duration::from_secs(5)).await;
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::INTERNAL_ERROR));
    wait_for("the second CLOSE", || closes.lock().unwrap().len() == 2).await;
    wait_for("it to leave the hub", || hub.len() == 1).await;
    assert_eq!(hub.group_size("g"), 1);
    assert_eq!(sessions.bound_sockets(&login), 0);

    // The bystander carries on, in the group, and the slots are free again.
    bystander.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        bystander.recv_message().await.unwrap(),
        Some(Message::text("still here"))
    );
    assert_eq!(hub.send_to_group("g", Message::text("to all")).local, 1);
    assert_eq!(
        bystander.recv_message().await.unwrap(),
        Some(Message::text("to all"))
    );
    let closes = closes.lock().unwrap().clone();
    assert_eq!(
        closes.len(),
        2,
        "CLOSE exactly once per failed socket: {closes:?}"
    );
    assert!(
        closes
            .iter()
            .all(|(_, code)| *code == CloseCode::INTERNAL_ERROR)
    );
}
