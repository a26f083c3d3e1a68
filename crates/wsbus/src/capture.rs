//! Traffic capture (SPEC §6): switched on by an operator for a user, a
//! session, a bus channel or a client address, for a while; every message
//! in and out of the matching sockets is written as JSON lines, with
//! credentials redacted, bounded in bytes.
//!
//! # Off the socket's path
//!
//! A capture must never slow or block a connection. The socket task's part
//! is one atomic load when no capture runs ([`Captures::is_active`]); when
//! one does, it matches the socket against the running captures (a
//! read-locked snapshot, rebuilt only when a capture starts or ends) and
//! hands each matching capture a [`Record`] — a `Bytes` clone of the payload
//! and a few words of metadata — with a non-blocking `try_send` into a
//! bounded channel. One writer task per capture does the rest (redaction,
//! base64, JSON, the byte bound). A full channel or a full capture counts a
//! drop; the socket never waits.
//!
//! # Matching
//!
//! * `user`: sockets whose handshake authenticated that login, and
//!   long-polling requests of that session user;
//! * `address`: sockets of that client address (as trusted proxies forward
//!   it; long-polling requests are not matched by address);
//! * `session`: the socket of that id (as the admin connection list shows
//!   it), or the bus session of that Bayeux `clientId`;
//! * `channel`: Bayeux messages on that channel (the writer parses the
//!   batches; the socket task only looks for the channel's name in the
//!   payload).
//!
//! A capture started later applies to sockets already open: the match is
//! made on each message, against the socket's handshake facts.
//!
//! # Records (one JSON object per line)
//!
//! Raw frames: `{"time", "transport": "websocket"|"long-polling", "socket",
//! "direction": "in"|"out", "opcode": "text"|"binary", "size", "payload",
//! "truncated"}` (a long-polling request body is `in`, its response `out`;
//! their `socket` is `null`) — text as is (JSON text
//! redacted), binary as base64 of at most [`MAX_BINARY_CAPTURED`] bytes.
//! Bayeux messages (one record per message of a batch): `{"time",
//! "transport", "socket", "direction", "channel", "clientId", "bayeux": {…}}`.
//!
//! Redaction: the values of `access_token`, `authorization`, `cookie`,
//! `set-cookie` and of the configured field names are replaced by
//! `"<redacted>"` at any depth of a JSON payload (names compared without
//! case); in text that is not JSON, `access_token=…` values are masked.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use crate::hub::{SocketFacts, SocketId};

/// The longest a capture may run: long enough for a reproduction window,
/// short enough that a forgotten capture ends by itself.
pub const MAX_CAPTURE_DURATION: Duration = Duration::from_secs(60 * 60);

/// The bytes of JSON lines one capture keeps by default (and at most): it
/// lives in memory until downloaded and forgotten.
pub const DEFAULT_CAPTURE_BYTES: usize = 16 << 20;

/// Captures running at once: each costs a writer task and up to
/// [`DEFAULT_CAPTURE_BYTES`] of memory.
pub const MAX_RUNNING_CAPTURES: usize = 8;

/// Captures kept for download, running or finished; the oldest finished one
/// is forgotten to make room. With [`DEFAULT_CAPTURE_BYTES`] each, this
/// bounds what captures hold at 8 × 16 MiB = 128 MiB however many are
/// started over a server's life.
pub const MAX_KEPT_CAPTURES: usize = MAX_RUNNING_CAPTURES;

/// Records waiting for a capture's writer: beyond it, records are dropped
/// (counted) rather than the socket waiting.
pub const RECORD_QUEUE: usize = 1024;

/// Binary payloads are captured up to this many bytes (then base64), the
/// rest marked `"truncated": true`.
pub const MAX_BINARY_CAPTURED: usize = 4 << 10;

/// Text payloads are captured up to this many bytes, the rest marked
/// `"truncated": true`: one large message must not fill a capture.
pub const MAX_TEXT_CAPTURED: usize = 64 << 10;

/// What replaces a redacted value.
pub const REDACTED: &str = "<redacted>";

/// Field names always redacted (compared without case).
const ALWAYS_REDACTED: &[&str] = &["access_token", "authorization", "cookie", "set-cookie"];

/// What a capture selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Sockets opened by this user (login).
    User(String),
    /// The socket of this id, or the bus session of this `clientId`.
    Session(String),
    /// Bayeux messages on this channel.
    Channel(String),
    /// Sockets from this client address.
    Address(IpAddr),
}

impl Selector {
    /// The selector's kind: `"user"`, `"session"`, `"channel"`, `"address"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::User(_) => "user",
            Selector::Session(_) => "session",
            Selector::Channel(_) => "channel",
            Selector::Address(_) => "address",
        }
    }

    /// The selected value, as text.
    pub fn value(&self) -> String {
        match self {
            Selector::User(v) | Selector::Session(v) | Selector::Channel(v) => v.clone(),
            Selector::Address(a) => a.to_string(),
        }
    }

    /// Whether a message from `from` may belong to the capture (`text`: the
    /// payload, for the channel and session pre-checks).
    fn matches(&self, from: &Origin<'_>, text: Option<&str>) -> bool {
        match self {
            Selector::User(user) => from.user == Some(user.as_str()),
            Selector::Address(address) => from.address == Some(*address),
            // A bus session's clientId appears in each of its messages.
            Selector::Session(session) => {
                from.socket.is_some_and(|id| id.to_string() == *session)
                    || text.is_some_and(|t| t.contains(session.as_str()))
            }
            Selector::Channel(channel) => text.is_some_and(|t| t.contains(channel.as_str())),
        }
    }
}

/// Where a message was seen: a socket, or a long-polling request.
#[derive(Clone, Copy, Debug)]
struct Origin<'a> {
    /// The socket; `None` for long-polling.
    socket: Option<SocketId>,
    user: Option<&'a str>,
    /// The client's address (not known to the bus's long-polling).
    address: Option<IpAddr>,
}

/// A message's direction, as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client.
    In,
    /// To the client.
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// What the socket task hands a capture's writer: cheap to make (a `Bytes`
/// clone and a few words).
#[derive(Debug)]
struct Record {
    time: SystemTime,
    /// The socket; `None` for long-polling.
    socket: Option<SocketId>,
    direction: Direction,
    text: bool,
    payload: Bytes,
}

/// Why a capture could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The duration is zero or longer than [`MAX_CAPTURE_DURATION`].
    Duration,
    /// [`MAX_RUNNING_CAPTURES`] are running.
    TooMany,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Duration => write!(
                f,
                "`duration` must be more than 0 and at most {}",
                humantime::format_duration(MAX_CAPTURE_DURATION)
            ),
            StartError::TooMany => write!(f, "{MAX_RUNNING_CAPTURES} captures are running already"),
        }
    }
}

impl std::error::Error for StartError {}

/// One capture: its selector, counters and the JSON lines written so far.
pub(crate) struct Capture {
    id: u64,
    selector: Selector,
    started: SystemTime,
    ends: SystemTime,
    max_bytes: usize,
    sender: mpsc::Sender<Record>,
    /// The writer filled `max_bytes`: the socket task stops sending.
    full: AtomicBool,
    running: AtomicBool,
    stop: Notify,
    records: AtomicU64,
    dropped: AtomicU64,
    lines: Mutex<Vec<u8>>,
}

/// What [`Captures::list`] says of a capture.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct CaptureInfo {
    /// Its id.
    pub id: String,
    /// `user`, `session`, `channel` or `address`.
    pub selector: &'static str,
    /// The selected value.
    pub value: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ends or ended (RFC 3339).
    pub ends: String,
    /// Whether it is still recording.
    pub running: bool,
    /// Bytes of JSON lines written.
    pub bytes: usize,
    /// Records written.
    pub records: u64,
    /// Records dropped: the writer's queue or the capture was full.
    pub dropped: u64,
    /// The capture's byte bound.
    pub max_bytes: usize,
}

impl std::fmt::Debug for Capture {
    /// Never the captured lines: they are traffic.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("id", &self.id)
            .field("selector", &self.selector.kind())
            .field("running", &self.running.load(Ordering::Relaxed))
            .field("records", &self.records.load(Ordering::Relaxed))
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Capture {
    fn info(&self) -> CaptureInfo {
        CaptureInfo {
            id: self.id.to_string(),
            selector: self.selector.kind(),
            value: self.selector.value(),
            started: humantime::format_rfc3339_millis(self.started).to_string(),
            ends: humantime::format_rfc3339_millis(self.ends).to_string(),
            running: self.running.load(Ordering::Relaxed),
            bytes: self.lines.lock().expect("capture lock").len(),
            records: self.records.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
        }
    }

    /// Hand a record to the writer without waiting.
    fn offer(&self, record: Record) {
        if self.full.load(Ordering::Relaxed) || self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// Running captures: the socket task's only check when none run.
    active: AtomicUsize,
    running: RwLock<Arc<[Arc<Capture>]>>,
    kept: Mutex<VecDeque<Arc<Capture>>>,
    next_id: AtomicU64,
    redact: RwLock<Arc<Redactor>>,
}

/// The captures of a runtime; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Captures {
    inner: Arc<Registry>,
}

impl Captures {
    /// Field names to redact besides the built-in ones (`[admin]
    /// capture_redact`); applies to captures started afterwards.
    pub fn set_redacted_fields<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, names: I) {
        *self.inner.redact.write().expect("capture lock") = Arc::new(Redactor::new(names));
    }

    /// Whether any capture runs: one atomic load, the socket task's whole
    /// cost while none does.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed) != 0
    }

    /// Start capturing `selector` for `duration`, keeping at most
    /// `max_bytes` (capped at [`DEFAULT_CAPTURE_BYTES`]). Must be called
    /// within a tokio runtime (it spawns the writer).
    pub fn start(
        &self,
        selector: Selector,
        duration: Duration,
        max_bytes: Option<usize>,
    ) -> Result<CaptureInfo, StartError> {
        if duration.is_zero() || duration > MAX_CAPTURE_DURATION {
            return Err(StartError::Duration);
        }
        let mut running = self.inner.running.write().expect("capture lock");
        if running.len() >= MAX_RUNNING_CAPTURES {
            return Err(StartError::TooMany);
        }
        let (sender, receiver) = mpsc::channel(RECORD_QUEUE);
        let started = SystemTime::now();
        let capture = Arc::new(Capture {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            selector,
            started,
            ends: started + duration,
            max_bytes: max_bytes.map_or(DEFAULT_CAPTURE_BYTES, |m| m.min(DEFAULT_CAPTURE_BYTES)),
            sender,
            full: AtomicBool::new(false),
            running: AtomicBool::new(true),
            stop: Notify::new(),
            records: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lines: Mutex::new(Vec::new()),
        });
        {
            let mut kept = self.inner.kept.lock().expect("capture lock");
            if kept.len() >= MAX_KEPT_CAPTURES
                && let Some(oldest) = kept.iter().position(|c| !c.running.load(Ordering::Relaxed))
            {
                kept.remove(oldest);
            }
            kept.push_back(capture.clone());
        }
        let mut next: Vec<Arc<Capture>> = running.iter().cloned().collect();
        next.push(capture.clone());
        *running = next.into();
        self.inner.active.store(running.len(), Ordering::Relaxed);
        drop(running);
        let redactor = self.inner.redact.read().expect("capture lock").clone();
        tokio::spawn(write(
            capture.clone(),
            receiver,
            redactor,
            Arc::downgrade(&self.inner),
            duration,
        ));
        tracing::info!(target: "wsbus::admin", capture = capture.id, selector = capture.selector.kind(), "capture started");
        Ok(capture.info())
    }

    /// Stop a running capture (it stays downloadable). `false` if no
    /// capture has that id.
    pub fn stop(&self, id: &str) -> bool {
        let Some(capture) = self.find(id) else {
            return false;
        };
        finish(&self.inner, &capture);
        capture.stop.notify_one();
        true
    }

    /// The captures kept, oldest first.
    pub fn list(&self) -> Vec<CaptureInfo> {
        let kept = self.inner.kept.lock().expect("capture lock");
        kept.iter().map(|c| c.info()).collect()
    }

    /// A capture's info and JSON lines so far, or `None` for an unknown id.
    pub fn download(&self, id: &str) -> Option<(CaptureInfo, Bytes)> {
        let capture = self.find(id)?;
        let lines = Bytes::from(capture.lines.lock().expect("capture lock").clone());
        Some((capture.info(), lines))
    }

    fn find(&self, id: &str) -> Option<Arc<Capture>> {
        let id: u64 = id.parse().ok()?;
        let kept = self.inner.kept.lock().expect("capture lock");
        kept.iter().find(|c| c.id == id).cloned()
    }

    /// A message of socket `id` (opened with `facts`) went `direction`:
    /// offered to every running capture it matches. The caller checked
    /// [`is_active`](Self::is_active).
    #[cold]
    #[inline(never)]
    pub(crate) fn socket_message(
        &self,
        id: SocketId,
        facts: &SocketFacts,
        direction: Direction,
        message: &wsbus_proto::Message,
    ) {
        let (text, payload) = match message {
            wsbus_proto::Message::Text(t) => (true, t.as_bytes()),
            wsbus_proto::Message::Binary(b) => (false, b),
        };
        let from = Origin {
            socket: Some(id),
            user: facts.user.as_deref(),
            address: Some(facts.client),
        };
        self.offer(&from, direction, text, payload);
    }

    /// A long-polling request's body (`In`) or response (`Out`) for `user`
    /// (the request's session user, if any): offered to the running
    /// captures it matches. The client address is not known here: an
    /// `address` capture does not see long-polling.
    #[cold]
    #[inline(never)]
    pub(crate) fn long_poll_message(&self, user: Option<&str>, direction: Direction, body: Bytes) {
        let from = Origin {
            socket: None,
            user,
            address: None,
        };
        self.offer(&from, direction, true, &body);
    }

    fn offer(&self, from: &Origin<'_>, direction: Direction, text: bool, payload: &Bytes) {
        let running = self.inner.running.read().expect("capture lock").clone();
        let as_text = if text {
            std::str::from_utf8(payload).ok()
        } else {
            None
        };
        let time = SystemTime::now();
        for capture in running.iter() {
            if capture.selector.matches(from, as_text) {
                capture.offer(Record {
                    time,
                    socket: from.socket,
                    direction,
                    text,
                    payload: payload.clone(),
                });
            }
        }
    }
}

/// Out of the running snapshot (idempotent).
fn finish(registry: &Registry, capture: &Arc<Capture>) {
    capture.running.store(false, Ordering::Relaxed);
    let mut running = registry.running.write().expect("capture lock");
    if running.iter().any(|c| Arc::ptr_eq(c, capture)) {
        let next: Vec<Arc<Capture>> = running
            .iter()
            .filter(|c| !Arc::ptr_eq(c, capture))
            .cloned()
            .collect();
        *running = next.into();
        registry.active.store(running.len(), Ordering::Relaxed);
        tracing::info!(target: "wsbus::admin", capture = capture.id, "capture ended");
    }
}

/// A capture's writer: turns records into redacted JSON lines until the
/// capture is stopped or its time is up.
async fn write(
    capture: Arc<Capture>,
    mut receiver: mpsc::Receiver<Record>,
    redactor: Arc<Redactor>,
    registry: Weak<Registry>,
    duration: Duration,
) {
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    loop {
        let record = tokio::select! {
            record = receiver.recv() => record,
            () = &mut deadline => None,
            () = capture.stop.notified() => None,
        };
        let Some(record) = record else { break };
        let mut out = Vec::new();
        render(&record, &capture.selector, &redactor, &mut out);
        if out.is_empty() {
            continue; // not of the selected channel or session
        }
        let mut lines = capture.lines.lock().expect("capture lock");
        if lines.len() + out.len() > capture.max_bytes {
            capture.full.store(true, Ordering::Relaxed);
            capture.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        lines.extend_from_slice(&out);
        capture.records.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(registry) = registry.upgrade() {
        finish(&registry, &capture);
    }
    // Records still queued were offered in time but not written.
    receiver.close();
    let mut late = 0;
    while receiver.try_recv().is_ok() {
        late += 1;
    }
    capture.dropped.fetch_add(late, Ordering::Relaxed);
}

/// The JSON lines of one record (none if it is not the capture's: a channel
/// or session pre-check that matched by chance).
fn render(record: &Record, selector: &Selector, redactor: &Redactor, out: &mut Vec<u8>) {
    let time = humantime::format_rfc3339_micros(record.time).to_string();
    let (socket, transport) = match record.socket {
        Some(id) => (id.to_string(), "websocket"),
        None => (String::new(), "long-polling"),
    };
    let direction = record.direction.as_str();
    let size = record.payload.len();
    let text = record
        .text
        .then(|| std::str::from_utf8(&record.payload).ok())
        .flatten();
    let parsed = text
        .filter(|t| t.trim_start().starts_with(['{', '[']))
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    // Bayeux: a message or a batch of messages, each with a channel.
    let bayeux: Vec<&Map<String, Value>> = match &parsed {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .filter(|m| m.get("channel").is_some_and(Value::is_string))
            .collect(),
        Some(Value::Object(m)) if m.get("channel").is_some_and(Value::is_string) => vec![m],
        _ => Vec::new(),
    };
    let wanted = |m: &Map<String, Value>| match selector {
        Selector::Channel(channel) => m.get("channel").and_then(Value::as_str) == Some(channel),
        Selector::Session(session) => {
            (record.socket.is_some() && *session == socket)
                || m.get("clientId").and_then(Value::as_str) == Some(session)
        }
        _ => true,
    };
    let whole_socket = match selector {
        Selector::Channel(_) => false,
        Selector::Session(session) => record.socket.is_some() && *session == socket,
        _ => true,
    };
    if !whole_socket && !bayeux.iter().any(|m| wanted(m)) {
        return;
    }
    // The raw frame.
    let (payload, truncated) = match (text, &parsed) {
        (Some(_), Some(value)) => {
            let mut value = value.clone();
            redactor.redact(&mut value);
            cut(value.to_string(), MAX_TEXT_CAPTURED)
        }
        (Some(t), None) => cut(redact_query(t), MAX_TEXT_CAPTURED),
        (None, _) => {
            let kept = &record.payload[..size.min(MAX_BINARY_CAPTURED)];
            (STANDARD.encode(kept), size > MAX_BINARY_CAPTURED)
        }
    };
    let socket_field = record.socket.map(|_| socket.clone());
    let line = json!({
        "time": time,
        "transport": transport,
        "socket": socket_field,
        "direction": direction,
        "opcode": if record.text { "text" } else { "binary" },
        "size": size,
        "payload": payload,
        "truncated": truncated,
    });
    push_line(out, &line);
    for message in bayeux.into_iter().filter(|m| wanted(m)) {
        let mut message = Value::Object(message.clone());
        redactor.redact(&mut message);
        let line = json!({
            "time": time,
            "transport": transport,
            "socket": socket_field,
            "direction": direction,
            "channel": message.get("channel"),
            "clientId": message.get("clientId"),
            "bayeux": message,
        });
        push_line(out, &line);
    }
}

fn push_line(out: &mut Vec<u8>, line: &Value) {
    serde_json::to_writer(&mut *out, line).expect("a JSON value serializes");
    out.push(b'\n');
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn cut(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// `access_token=<value>` in text that is not JSON (a query string, a
/// header line) becomes `access_token=<redacted>`.
fn redact_query(text: &str) -> String {
    const NEEDLE: &str = "access_token=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find(NEEDLE) {
        out.push_str(&rest[..at + NEEDLE.len()]);
        out.push_str(REDACTED);
        let value = &rest[at + NEEDLE.len()..];
        let end = value
            .find(|c: char| c == '&' || c == ';' || c == '"' || c.is_whitespace())
            .unwrap_or(value.len());
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// The field names whose values a capture masks.
#[derive(Debug)]
struct Redactor {
    names: HashSet<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(std::iter::empty::<&str>())
    }
}

impl Redactor {
    fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(extra: I) -> Self {
        let names = ALWAYS_REDACTED
            .iter()
            .map(|n| n.to_string())
            .chain(extra.into_iter().map(|n| n.as_ref().to_ascii_lowercase()))
            .collect();
        Redactor { names }
    }

    /// Mask the values of the redacted names at any depth.
    fn redact(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (name, field) in map.iter_mut() {
                    if self.names.contains(&name.to_ascii_lowercase()) {
                        *field = Value::String(REDACTED.into());
                    } else {
                        self.redact(field);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact(v)),
            Value::String(s) if s.to_ascii_lowercase().contains("access_token=") => {
                *s = redact_query(s);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(capture: &Captures, id: &str) -> Vec<Value> {
        let (_, bytes) = capture.download(id).unwrap();
        std::str::from_utf8(&bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn redaction_at_any_depth_and_in_query_strings() {
        let redactor = Redactor::new(["Password"]);
        let mut value = json!({
            "a": [{"password": "p1", "Authorization": "Bearer x"}],
            "ext": {"access_token": "t"},
            "url": "/chat?x=1&access_token=secret&y=2",
            "keep": "visible",
        });
        redactor.redact(&mut value);
        let text = value.to_string();
        for secret in ["p1", "Bearer x", "\"t\"", "secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("visible"));
        assert_eq!(value["url"], "/chat?x=1&access_token=<redacted>&y=2");
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn records_are_bounded_and_filtered_by_channel() {
        let captures = Captures::default();
        assert!(!captures.is_active());
        captures.set_redacted_fields(["secret"]);
        let info = captures
            .start(
                Selector::Channel("/chat/a".into()),
                Duration::from_secs(60),
                Some(600),
            )
            .unwrap();
        assert!(captures.is_active());
        let facts = SocketFacts::new([127, 0, 0, 1].into(), "/amb");
        let id: SocketId = "0.1".parse().unwrap();
        let on = |text: &str| wsbus_proto::Message::Text(text.to_owned().into());
        captures.socket_message(
            id,
            &facts,
            Direction::In,
            &on(r#"[{"channel":"/chat/a","clientId":"c1","data":{"secret":"s3","x":1}}]"#),
        );
        captures.socket_message(
            id,
            &facts,
            Direction::Out,
            &on(r#"[{"channel":"/chat/b","data":"/chat/a"}]"#),
        );
        captures.socket_message(id, &facts, Direction::In, &on("no channel here"));
        settle().await;
        let got = lines(&captures, &info.id);
        assert_eq!(got.len(), 2, "{got:?}"); // the frame and its one message
        assert_eq!(got[1]["channel"], "/chat/a");
        assert_eq!(got[1]["clientId"], "c1");
        assert_eq!(got[1]["bayeux"]["data"]["secret"], REDACTED);
        assert!(!got[0]["payload"].as_str().unwrap().contains("s3"));
        for _ in 0..20 {
            captures.socket_message(
                id,
                &facts,
                Direction::In,
                &on(r#"{"channel":"/chat/a","data":1}"#),
            );
            settle().await;
        }
        let info = captures.list().pop().unwrap();
        assert!(info.bytes <= 600 && info.dropped > 0, "{info:?}");
        assert!(captures.stop(&info.id));
        assert!(!captures.is_active());
        assert!(!captures.stop("999"));
    }

    #[tokio::test]
    async fn binary_is_base64_up_to_the_cap() {
        let captures = Captures::default();
        let info = captures
            .start(Selector::User("ada".into()), Duration::from_secs(60), None)
            .unwrap();
        let facts = SocketFacts::new([127, 0, 0, 1].into(), "/chat").with_user(Some("ada"));
        let other = SocketFacts::new([127, 0, 0, 1].into(), "/chat").with_user(Some("bob"));
        let big = wsbus_proto::Message::Binary(Bytes::from(vec![7u8; 10_000]));
        captures.socket_message(
            "0.1".parse::<SocketId>().unwrap(),
            &facts,
            Direction::Out,
            &big,
        );
        captures.socket_message(
            "0.1".parse::<SocketId>().unwrap(),
            &other,
            Direction::Out,
            &big,
        );
        settle().await;
        let got = lines(&captures, &info.id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["opcode"], "binary");
        assert_eq!(got[0]["size"], 10_000);
        assert_eq!(got[0]["truncated"], true);
        let decoded = STANDARD
            .decode(got[0]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded.len(), MAX_BINARY_CAPTURED);
    }

    #[test]
    fn durations_are_bounded() {
        let captures = Captures::default();
        let err = captures
            .start(Selector::User("a".into()), MAX_CAPTURE_DURATION * 2, None)
            .unwrap_err();
        assert_eq!(err, StartError::Duration);
        assert_eq!(
            captures
                .start(Selector::User("a".into()), Duration::ZERO, None)
                .unwrap_err(),
            StartError::Duration
        );
    }
}
