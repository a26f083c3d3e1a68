//! `wsbus bench bus`: N Bayeux sessions on a Bayeux server (wsbus's `/amb`,
//! Faye's Node server, CometD), a share of them over `websocket` and the rest
//! over `long-polling`, spread over channels `/bench/<i>`; one publisher
//! session publishes at a fixed total rate, round-robin over the channels.
//!
//! Reports deliveries/s, publish-to-delivery latency (the publisher's clock
//! is the generator's: both run here) and lost messages (per channel,
//! messages published × its subscribers, minus what arrived, after a drain).
//!
//! The publisher subscribes to `/bench/*` first: wsbus's default policy lets
//! a client publish only on channels it is subscribed to, and a
//! wildcard subscription counts. What it receives is not counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use clap::Args;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use wsbus_proto::{Event, Message};

use super::socket::{BenchSocket, Target};
use super::{
    BenchResult, CONNECT_CONCURRENCY, Common, Window, add_percentiles, new_histogram, progress,
};

/// How long sessions may take to receive what was published before the end
/// of the window, before the rest counts as lost (a long-poll round trip or
/// two on a loaded server).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args, Debug)]
#[doc = "The `bus` scenario's arguments."]
pub struct BusArgs {
    #[doc = "Options every scenario takes."]
    #[command(flatten)]
    pub common: Common,
    /// Sessions (subscribers), besides the publisher.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub sessions: usize,
    /// Share of the sessions on the `websocket` transport; the rest use
    /// `long-polling`.
    #[arg(long, default_value_t = 0.5)]
    pub websocket_share: f64,
    /// Channels `/bench/0` … the sessions are spread over evenly.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Messages published per second, in all.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
}

#[derive(Debug)]
struct Shared {
    started: Instant,
    measuring: AtomicBool,
    /// Sessions subscribed and connected.
    ready: AtomicUsize,
    window_deliveries: AtomicU64,
    deliveries: AtomicU64,
    /// Duplicates, gaps, failed sessions, unsuccessful replies.
    errors: AtomicU64,
    latencies: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    fn nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn error(&self, what: std::fmt::Arguments<'_>) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            progress(what);
        }
    }
}

/// A session's view of its channel: the next sequence number it expects.
#[derive(Debug)]
struct Subscriber {
    channel: String,
    next_seq: u64,
}

/// One message of a reply batch, as far as the generator looks at it. Other
/// fields are skipped without being built; channel names have no escapes, so
/// they are borrowed from the batch.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    channel: Option<std::borrow::Cow<'a, str>>,
    successful: Option<bool>,
    data: Option<Payload>,
}

/// The `data` of a benchmark message (other messages' data has neither).
#[derive(Deserialize)]
struct Payload {
    seq: Option<u64>,
    t: Option<u64>,
}

impl Subscriber {
    /// Handle one reply batch; returns whether the held `/meta/connect` was
    /// answered (so a new one is due).
    fn on_batch(&mut self, shared: &Shared, batch: &[u8]) -> bool {
        let Ok(messages) = serde_json::from_slice::<Vec<Reply<'_>>>(batch) else {
            shared.error(format_args!(
                "not a batch of Bayeux messages: {}",
                String::from_utf8_lossy(batch)
            ));
            return false;
        };
        let now = shared.nanos();
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let mut connect_answered = false;
        let mut received = 0;
        let mut latencies = shared.latencies.lock().expect("latencies lock");
        for message in &messages {
            let channel = message.channel.as_deref().unwrap_or_default();
            if channel == "/meta/connect" {
                connect_answered = true;
                if message.successful != Some(true) {
                    shared.error(format_args!(
                        "connect failed: {}",
                        String::from_utf8_lossy(batch)
                    ));
                }
            } else if channel == self.channel {
                let Some(Payload {
                    seq: Some(seq),
                    t: Some(sent),
                }) = message.data
                else {
                    shared.error(format_args!(
                        "unexpected delivery in {}",
                        String::from_utf8_lossy(batch)
                    ));
                    continue;
                };
                if seq != self.next_seq {
                    shared.error(format_args!(
                        "{channel}: got #{seq}, expected #{}",
                        self.next_seq
                    ));
                }
                self.next_seq = seq + 1;
                received += 1;
                if measuring {
                    let _ = latencies.record((now.saturating_sub(sent) / 1000).max(1));
                }
            } else if message.successful == Some(false) {
                shared.error(format_args!("refused: {}", String::from_utf8_lossy(batch)));
            }
        }
        drop(latencies);
        shared.deliveries.fetch_add(received, Ordering::Relaxed);
        if measuring {
            shared
                .window_deliveries
                .fetch_add(received, Ordering::Relaxed);
        }
        connect_answered
    }
}

fn handshake_message() -> Value {
    json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
            "supportedConnectionTypes": ["websocket", "long-polling"], "id": "1"}])
}

fn subscribe_message(client_id: &str, subscription: &str) -> Value {
    json!([{"channel": "/meta/subscribe", "clientId": client_id, "subscription": subscription, "id": "2"}])
}

fn connect_message(client_id: &str, connection_type: &str) -> String {
    json!([{"channel": "/meta/connect", "clientId": client_id, "connectionType": connection_type}])
        .to_string()
}

/// The `clientId` of a handshake reply batch.
fn client_id(reply: &[u8]) -> std::io::Result<String> {
    let messages: Vec<Value> = serde_json::from_slice(reply).map_err(std::io::Error::other)?;
    messages
        .iter()
        .find(|m| m["channel"] == "/meta/handshake" && m["successful"] == true)
        .and_then(|m| m["clientId"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "handshake refused: {}",
                String::from_utf8_lossy(reply)
            ))
        })
}

/// A long-polling session's HTTP/1.1 connection, kept alive, one request at
/// a time. Written by hand rather than with hyper's client: a session's
/// connect request is the same bytes every time (built once), and one task
/// per session writes it and reads the response, without hyper's connection
/// task, channels and header maps per request. With 5,000 long-polling
/// sessions the generator would otherwise spend as much CPU per delivery as
/// the server it measures, and run out of core first.
struct Http {
    stream: TcpStream,
    buf: BytesMut,
    authority: String,
    path: String,
    /// The server said `Connection: close`: reconnect before the next request.
    closed: bool,
}

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

impl Http {
    async fn open(authority: &str, path: &str) -> std::io::Result<Self> {
        Ok(Http {
            stream: Self::connect(authority).await?,
            buf: BytesMut::new(),
            authority: authority.to_owned(),
            path: path.to_owned(),
            closed: false,
        })
    }

    async fn connect(authority: &str) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The bytes of a POST of `body` (JSON) to the bus.
    fn request(&self, body: &str) -> Vec<u8> {
        format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.path,
            self.authority,
            body.len()
        )
        .into_bytes()
    }

    async fn post(&mut self, body: &str) -> std::io::Result<Bytes> {
        let request = self.request(body);
        self.send(&request).await
    }

    /// Writes a request made by [`Self::request`]; returns the response body.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<Bytes> {
        if self.closed {
            self.stream = Self::connect(&self.authority).await?;
            self.buf.clear();
            self.closed = false;
        }
        self.stream.write_all(request).await?;
        let head = loop {
            if let Some(end) = find_head_end(&self.buf) {
                break parse_head(&self.buf[..end])
                    .map(|head| (end, head))
                    .ok_or_else(|| {
                        std::io::Error::other(format!(
                            "bad HTTP response head: {}",
                            String::from_utf8_lossy(&self.buf[..end])
                        ))
                    })?;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("HTTP response head too long"));
            }
            self.fill().await?;
        };
        let (head_len, head) = head;
        self.buf.advance(head_len);
        if head.status != 200 {
            return Err(std::io::Error::other(format!("HTTP {}", head.status)));
        }
        self.closed = head.close;
        match head.length {
            Some(length) => {
                while self.buf.len() < length {
                    self.fill().await?;
                }
                Ok(self.buf.split_to(length).freeze())
            }
            None if head.chunked => self.read_chunked().await,
            None => Err(std::io::Error::other(
                "HTTP response without content-length or chunked encoding",
            )),
        }
    }

    async fn read_chunked(&mut self) -> std::io::Result<Bytes> {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            self.buf.advance(line_end + 2);
            // The chunk and its CRLF (for the last chunk: no trailers, CRLF).
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
            if size == 0 {
                return Ok(body.freeze());
            }
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// What the generator needs of a response head.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// The length of the head (through its blank line), once complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut parsed = Head {
        status,
        length: None,
        chunked: false,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close = value.eq_ignore_ascii_case("close");
        }
    }
    Some(parsed)
}

/// A WebSocket session's connection, with the text messages read but not
/// yet handled: one read often brings several (a delivery pushed right
/// behind another), and each is a batch of its own.
struct WsConn {
    socket: BenchSocket,
    pending: VecDeque<Bytes>,
}

impl WsConn {
    /// The next text message: the next reply batch.
    async fn recv(&mut self) -> std::io::Result<Bytes> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(batch);
            }
            let pending = &mut self.pending;
            let open = self.socket.process(|event, _| {
                if let Event::Message(Message::Text(text)) = event {
                    pending.push_back(text.into_bytes());
                }
            });
            // Whatever the connection queued (pongs, a close reply).
            self.socket.flush().await?;
            if !self.pending.is_empty() {
                continue;
            }
            if !open {
                return Err(std::io::Error::other("the server closed the WebSocket"));
            }
            self.socket.fill().await?;
        }
    }

    async fn send(&mut self, body: String) -> std::io::Result<()> {
        ws_send(&mut self.socket, body).await
    }
}

async fn ws_send(socket: &mut BenchSocket, body: String) -> std::io::Result<()> {
    socket
        .conn
        .send(Message::text(body))
        .map_err(std::io::Error::other)?;
    socket.flush().await
}

/// Open a WebSocket session, subscribed to `subscription`.
async fn ws_session(target: &Target, subscription: &str) -> std::io::Result<(WsConn, String)> {
    let mut conn = WsConn {
        socket: target.connect().await?,
        pending: VecDeque::new(),
    };
    conn.send(handshake_message().to_string()).await?;
    let id = client_id(&conn.recv().await?)?;
    conn.send(subscribe_message(&id, subscription).to_string())
        .await?;
    let reply = conn.recv().await?;
    if !String::from_utf8_lossy(&reply).contains("\"successful\":true") {
        return Err(std::io::Error::other(format!(
            "subscribe refused: {}",
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok((conn, id))
}

async fn websocket_subscriber(
    target: Arc<Target>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    channel: String,
) -> std::io::Result<()> {
    let permit = permits.acquire_owned().await.expect("semaphore open");
    let (mut conn, id) = ws_session(&target, &channel).await?;
    drop(permit);
    let connect = connect_message(&id, "websocket");
    let mut subscriber = Subscriber {
        channel,
        next_seq: 0,
    };
    conn.send(connect.clone()).await?;
    let mut first = true;
    loop {
        let batch = conn.recv().await?;
        if subscriber.on_batch(&shared, &batch) {
            if first {
                first = false;
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            conn.send(connect.clone()).await?;
        }
    }
}

async fn long_polling_subscriber(
    authority: String,
    path: String,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    channel: String,
) -> std::io::Result<()> {
    let permit = permits.acquire_owned().await.expect("semaphore open");
    let mut http = Http::open(&authority, &path).await?;
    let id = client_id(&http.post(&handshake_message().to_string()).await?)?;
    let reply = http
        .post(&subscribe_message(&id, &channel).to_string())
        .await?;
    if !String::from_utf8_lossy(&reply).contains("\"successful\":true") {
        return Err(std::io::Error::other(format!(
            "subscribe refused: {}",
            String::from_utf8_lossy(&reply)
        )));
    }
    drop(permit);
    // The same request every time.
    let connect = http.request(&connect_message(&id, "long-polling"));
    let mut subscriber = Subscriber {
        channel,
        next_seq: 0,
    };
    let mut first = true;
    loop {
        let batch = http.send(&connect).await?;
        subscriber.on_batch(&shared, &batch);
        if first {
            first = false;
            shared.ready.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) async fn run(args: BusArgs) -> BenchResult {
    let url = args.common.url.clone();
    let rest = url
        .strip_prefix("http://")
        .ok_or("--url must be the bus's http:// URL (e.g. http://127.0.0.1:8080/amb)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    };
    let target = Arc::new(Target::parse(&format!("ws://{authority}{path}"), false)?);
    let channels = args.channels.max(1);
    let shared = Arc::new(Shared {
        started: Instant::now(),
        measuring: AtomicBool::new(false),
        ready: AtomicUsize::new(0),
        window_deliveries: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies: Mutex::new(new_histogram()),
    });
    let websocket_sessions =
        ((args.sessions as f64) * args.websocket_share.clamp(0.0, 1.0)).round() as usize;
    progress(format_args!(
        "opening {} Bayeux sessions on {url} ({websocket_sessions} websocket, {} long-polling) over {channels} channels",
        args.sessions,
        args.sessions - websocket_sessions
    ));
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    // The sessions channel by channel, evenly, and within each channel's
    // block the websocket share spread evenly, so that every channel has
    // both transports in the same proportion. (Alternating transports over
    // sessions dealt round-robin to an even number of channels put all the
    // websocket sessions on the odd channels.)
    let subscribers_of: Vec<u64> = (0..channels)
        .map(|c| (args.sessions / channels + usize::from(c < args.sessions % channels)) as u64)
        .collect();
    let sessions = subscribers_of
        .iter()
        .enumerate()
        .flat_map(|(c, &count)| std::iter::repeat_n(c, count as usize));
    for (i, channel_index) in sessions.enumerate() {
        let channel = format!("/bench/{channel_index}");
        let (shared, permits) = (shared.clone(), permits.clone());
        let over_websocket = (i * websocket_sessions) / args.sessions.max(1)
            != ((i + 1) * websocket_sessions) / args.sessions.max(1);
        let session = {
            let shared = shared.clone();
            let target = target.clone();
            let (authority, path) = (authority.clone(), path.clone());
            async move {
                if over_websocket {
                    websocket_subscriber(target, shared, permits, channel).await
                } else {
                    long_polling_subscriber(authority, path, shared, permits, channel).await
                }
            }
        };
        tokio::spawn(async move {
            if let Err(err) = session.await {
                shared.error(format_args!("session failed: {err}"));
            }
        });
    }
    // Wait until every session is subscribed and connected.
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Relaxed) < args.sessions {
        if Instant::now() > setup_deadline {
            return Err(format!(
                "only {} of {} sessions ready after 120 s",
                shared.ready.load(Ordering::Relaxed),
                args.sessions
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress(format_args!("{} sessions ready", args.sessions));

    let (publisher, publisher_id) = ws_session(&target, "/bench/*").await?;
    // Texts already read behind the subscribe reply can only be deliveries,
    // which the publisher ignores anyway.
    let mut publisher = publisher.socket;
    ws_send(&mut publisher, connect_message(&publisher_id, "websocket")).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let rate = args.rate;
        tokio::spawn(async move {
            let result = publish(
                &mut publisher,
                &publisher_id,
                &shared,
                &stop,
                rate,
                channels,
            )
            .await;
            (result, publisher)
        })
    };

    tokio::time::sleep(args.common.warmup()).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let window = Window::start(&args.common.server_pid);
    tokio::time::sleep(args.common.duration()).await;
    let end = window.end();
    shared.measuring.store(false, Ordering::Relaxed);
    let window_deliveries = shared.window_deliveries.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (published, _publisher) = publishing.await?;
    let published = published?;

    let expected: u64 = published
        .iter()
        .zip(&subscribers_of)
        .map(|(p, s)| p * s)
        .sum();
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliveries = shared.deliveries.load(Ordering::Relaxed);

    let mut report = Map::new();
    report.insert("scenario".into(), json!("bus"));
    report.insert("tls".into(), json!(false));
    report.insert("sessions".into(), json!(args.sessions));
    report.insert("websocket_sessions".into(), json!(websocket_sessions));
    report.insert(
        "long_polling_sessions".into(),
        json!(args.sessions - websocket_sessions),
    );
    report.insert("channels".into(), json!(channels));
    report.insert("rate".into(), json!(args.rate));
    report.insert("published".into(), json!(published.iter().sum::<u64>()));
    report.insert("deliveries".into(), json!(window_deliveries));
    end.add_to(&mut report, window_deliveries, "deliveries_per_sec");
    add_percentiles(
        &mut report,
        &shared.latencies.lock().expect("latencies lock"),
    );
    report.insert("lost".into(), json!(expected.saturating_sub(deliveries)));
    report.insert(
        "errors".into(),
        json!(shared.errors.load(Ordering::Relaxed)),
    );
    progress(format_args!(
        "bus: {:.0} deliveries/s, p99 {} µs, lost {}, server {} µs/delivery",
        window_deliveries as f64 / end.secs,
        report.get("p99_us").cloned().unwrap_or_default(),
        expected.saturating_sub(deliveries),
        report["server_cpu_us_per_op"]
    ));
    Ok(Value::Object(report))
}

/// Publish at `rate` messages/s round-robin over the channels until `stop`;
/// returns how many went to each channel. Several due publishes go in one
/// batch (one WebSocket message).
async fn publish(
    socket: &mut BenchSocket,
    client_id: &str,
    shared: &Shared,
    stop: &AtomicBool,
    rate: f64,
    channels: usize,
) -> std::io::Result<Vec<u64>> {
    let mut published = vec![0u64; channels];
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut next_send = Instant::now();
    let mut channel = 0usize;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut batch = Vec::new();
        while next_send <= now {
            batch.push(json!({
                "channel": format!("/bench/{channel}"),
                "clientId": client_id,
                "data": {"seq": published[channel], "t": shared.nanos()},
            }));
            published[channel] += 1;
            channel = (channel + 1) % channels;
            next_send += interval;
        }
        if !batch.is_empty() {
            ws_send(socket, Value::Array(batch).to_string()).await?;
        }
        tokio::select! {
            _ = tick.tick() => {}
            read = socket.fill() => {
                read?;
                // Publish acknowledgements, its own /bench/* deliveries and
                // connect replies: answer connects, drop the rest.
                let mut connect_answered = false;
                let open = socket.process(|event, _| {
                    if let Event::Message(Message::Text(text)) = event {
                        let text = text.as_str();
                        if text.contains("\"/meta/connect\"") {
                            connect_answered = true;
                        }
                        // A refused publish (its subscribers would count
                        // it lost, for no visible reason).
                        if text.contains("\"successful\":false") {
                            shared.error(format_args!("publisher: {text}"));
                        }
                    }
                });
                if !open {
                    return Err(std::io::Error::other("the server closed the publisher"));
                }
                if connect_answered {
                    ws_send(socket, connect_message(client_id, "websocket")).await?;
                }
            }
        }
    }
    Ok(published)
}
