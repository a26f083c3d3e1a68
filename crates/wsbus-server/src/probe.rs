//! The connectivity test page, `/websocket-test` (SPEC §6, seed 001's
//! `$websocket_test`): the page, its probe WebSocket endpoint and the
//! server's side of every probe, so that the page can name the hop that
//! broke.
//!
//! Routes ([`TestPage::router`]):
//!
//! * `GET /websocket-test` (and its script and style sheet): the page;
//! * `POST /websocket-test/probe`: a new probe record; answers its id and
//!   the server settings the page compares against (ping interval, the bus's
//!   long-poll hold, compression);
//! * `GET /websocket-test/probe?id=<id>`: the probe WebSocket (subprotocol
//!   [`PROBE_PROTOCOL`]): echoes every message; the protocol core answers
//!   pings. Every request here is recorded *before* it reaches the upgrade
//!   path, so an upgrade whose `Upgrade` header a proxy dropped (a plain
//!   `GET` by the time it arrives) is recorded as such;
//! * `GET /websocket-test/probe/<id>`: the record, as JSON.
//!
//! The bus's long-polling requests that carry `?probe=<id>` are recorded too
//! ([`TestPage::observe_long_polls`]): when each arrived and when it was
//! answered, or that it was abandoned (the client or a proxy closed the
//! connection first).
//!
//! Records are kept in memory, at most [`MAX_RECORDS`], the oldest dropped
//! first; each one is bounded ([`MAX_LONG_POLLS`], [`MAX_NOTES`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::StatusCode;
use http::header::{self, HeaderMap};
use serde::Serialize;
use wsbus::Runtime;
use wsbus::app::{EventKind, HandshakeRequest, Upgrade, WebSocketApp, WebSocketConfig, WsEvent};
use wsbus::proto::CloseCode;
use wsbus::proxy::ClientView;

/// Probe records kept at most; creating one more drops the oldest. 10,000
/// records of at most a few kilobytes each bound the store to tens of
/// megabytes however many probes are created, while keeping a record long
/// enough for a page (or an operator) to read it back after its run.
pub const MAX_RECORDS: usize = 10_000;

/// Shortest probe id, in characters: shorter ones are typos, not ids.
pub const MIN_ID_CHARS: usize = 8;

/// Longest probe id, in characters: room for a UUID or 32 hex bytes, and
/// nothing that makes a record or a log line large.
pub const MAX_ID_CHARS: usize = 64;

/// Long-polling requests recorded per probe; more are counted only. The
/// page sends a handful (handshake, connects, subscribe, publish, the held
/// connect); a client looping on one id must not grow a record.
pub const MAX_LONG_POLLS: usize = 32;

/// Free-form notes (errors, refusals) kept per probe; more are counted only.
pub const MAX_NOTES: usize = 16;

/// Messages a probe socket echoes before it is closed with 1008: the page
/// sends fewer than twenty; a probe socket is not an echo service.
pub const MAX_PROBE_MESSAGES: u64 = 1_000;

/// The subprotocol the probe socket speaks, so that the page sees a
/// negotiated subprotocol (or learns that something between removed it).
pub const PROBE_PROTOCOL: &str = "wsbus-probe";

/// The query parameter naming the probe, on the probe socket and on the
/// bus's long-polling requests.
pub const PROBE_PARAM: &str = "id";

/// The query parameter naming the probe on the bus path (`/amb?probe=<id>`).
pub const BUS_PROBE_PARAM: &str = "probe";

const PAGE_HTML: &str = include_str!("../assets/websocket-test.html");
const PAGE_JS: &str = include_str!("../assets/websocket-test.js");
const PAGE_CSS: &str = include_str!("../assets/websocket-test.css");

/// The paths of the test page, which the bus may not take.
pub const PATHS: &[&str] = &[
    "/websocket-test",
    "/websocket-test.js",
    "/websocket-test.css",
];

// ---------------------------------------------------------------- ids

/// A probe id: [`MIN_ID_CHARS`]–[`MAX_ID_CHARS`] characters of
/// `[A-Za-z0-9_-]`. Ids the server makes are 32 hex digits (128 random bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(String);

/// Why a string is not a probe id (the message never repeats the input,
/// which may be 10 KB of anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// No id was given.
    Missing,
    /// Too short or too long: its length in bytes.
    Length(usize),
    /// A character outside `[A-Za-z0-9_-]`.
    Character,
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rule =
            format!("a probe id is {MIN_ID_CHARS}-{MAX_ID_CHARS} characters of A-Z a-z 0-9 _ -");
        match self {
            IdError::Missing => write!(f, "no probe id given ({rule})"),
            IdError::Length(n) => write!(f, "the probe id is {n} bytes long ({rule})"),
            IdError::Character => {
                write!(f, "the probe id has a character outside the set ({rule})")
            }
        }
    }
}

impl ProbeId {
    /// `s` as a probe id, or why not.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !(MIN_ID_CHARS..=MAX_ID_CHARS).contains(&s.len()) {
            return Err(IdError::Length(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(IdError::Character);
        }
        Ok(ProbeId(s.to_owned()))
    }

    /// A fresh random id.
    fn random() -> Self {
        use rand::Rng as _;
        let bytes: [u8; 16] = rand::rng().random();
        ProbeId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// ---------------------------------------------------------------- records

/// What the server saw of a probe WebSocket request, before and after the
/// upgrade path answered it. Times are milliseconds since the probe was
/// created (one clock, the server's, so that no skew with the browser's
/// matters).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SocketFacts {
    /// When the request arrived.
    pub arrived_ms: u64,
    /// Its method and path.
    pub method: String,
    /// Its path.
    pub path: String,
    /// The `Upgrade` header as received (`None`: absent, as when a proxy is
    /// not configured to forward it).
    pub upgrade: Option<String>,
    /// The `Connection` header as received.
    pub connection: Option<String>,
    /// Whether `Connection` lists `upgrade` (RFC 7230 §6.1 tokens).
    pub connection_upgrade: bool,
    /// Whether `Sec-WebSocket-Key` arrived: the browser did ask for a
    /// WebSocket, whatever became of the hop-by-hop headers.
    pub websocket_key: bool,
    /// `Sec-WebSocket-Protocol` as received (the browser's offer).
    pub offered_protocols: Option<String>,
    /// `Sec-WebSocket-Extensions` as received (the browser's offer).
    pub offered_extensions: Option<String>,
    /// `Origin` as received.
    pub origin: Option<String>,
    /// `Host` as received.
    pub host: Option<String>,
    /// Whether the request came through a proxy that says so (`Via`,
    /// `Forwarded` or `X-Forwarded-For` present).
    pub via_proxy: bool,
    /// The client's address (behind trusted proxies, the one they report).
    pub client: Option<String>,
    /// Whether the probe application accepted the upgrade (`false`: it was
    /// refused before or without reaching it).
    pub accepted: bool,
    /// The status the server answered: `101`, or a refusal.
    pub status: Option<u16>,
    /// When it answered.
    pub answered_ms: Option<u64>,
    /// Whether the refusal was the origin rule's (`403` after the
    /// application accepted).
    pub origin_refused: bool,
    /// The subprotocol in the `101`.
    pub protocol: Option<String>,
    /// The extensions in the `101`.
    pub extensions: Option<String>,
    /// When the socket opened (its task started).
    pub opened_ms: Option<u64>,
    /// Messages received (and echoed).
    pub messages_in: u64,
    /// Their payload bytes (after decompression).
    pub bytes_in: u64,
    /// When the last message arrived.
    pub last_message_ms: Option<u64>,
    /// How it ended.
    pub closed: Option<Closed>,
}

/// How a probe socket ended.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Closed {
    /// When.
    pub at_ms: u64,
    /// `client` (the browser sent CLOSE), `server` (this server closed it)
    /// or `dropped` (the TCP connection ended without a CLOSE frame: cut by
    /// something between, or the browser vanished).
    pub by: &'static str,
    /// The close code (1005: none given; 1006: dropped).
    pub code: u16,
}

/// One long-polling request of a probe on the bus path.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LongPoll {
    /// When it arrived.
    pub arrived_ms: u64,
    /// When the server answered it.
    pub answered_ms: Option<u64>,
    /// The status it answered.
    pub status: Option<u16>,
    /// When the connection went away before the answer (a proxy timeout,
    /// or the browser).
    pub abandoned_ms: Option<u64>,
}

/// A probe's record, as `GET /websocket-test/probe/<id>` answers it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Record {
    /// The probe id.
    pub id: String,
    /// When it was created, in milliseconds since the Unix epoch (to find
    /// the same attempt in the server's logs).
    pub created_unix_ms: u64,
    /// Milliseconds since creation at the time of this answer.
    pub now_ms: u64,
    /// The probe WebSocket request, if one arrived.
    pub websocket: Option<SocketFacts>,
    /// The bus's long-polling requests that named this probe.
    pub long_polls: Vec<LongPoll>,
    /// Long-polling requests past [`MAX_LONG_POLLS`], counted only.
    pub long_polls_not_kept: u64,
    /// Errors and refusals, in words.
    pub notes: Vec<String>,
    /// Notes past [`MAX_NOTES`], counted only.
    pub notes_not_kept: u64,
}

struct Entry {
    created: Instant,
    record: Record,
}

impl Entry {
    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.created).as_millis()).unwrap_or(u64::MAX)
    }

    fn note(&mut self, note: String) {
        if self.record.notes.len() < MAX_NOTES {
            self.record.notes.push(note);
        } else {
            self.record.notes_not_kept += 1;
        }
    }
}

/// Why a probe request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// No such probe (never created, or dropped as one of the oldest).
    Unknown,
    /// The probe's WebSocket request was already made: one attempt per id,
    /// so that a record is one attempt.
    Used,
}

impl ProbeError {
    fn status(self) -> StatusCode {
        match self {
            ProbeError::Used => StatusCode::BAD_REQUEST,
            ProbeError::Unknown => StatusCode::NOT_FOUND,
        }
    }
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unknown => f.write_str(
                "no such probe (unknown, or dropped as one of the oldest): create one with POST /websocket-test/probe",
            ),
            ProbeError::Used => f.write_str(
                "this probe id was already used by a WebSocket attempt: create a new one with POST /websocket-test/probe",
            ),
        }
    }
}

/// The probe records: bounded, oldest dropped first. Cheap to clone (an
/// `Arc`). Every method takes the time it happens at, so tests need no
/// clock.
#[derive(Clone)]
pub struct Probes {
    inner: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("records", &self.lock().entries.len())
            .finish()
    }
}

struct Store {
    entries: HashMap<ProbeId, Entry>,
    /// Creation order, for dropping the oldest.
    order: VecDeque<ProbeId>,
    capacity: usize,
}

impl Probes {
    /// A store of at most `capacity` records (at least one).
    pub fn new(capacity: usize) -> Self {
        Probes {
            inner: Arc::new(Mutex::new(Store {
                entries: HashMap::new(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding it leaves records, not invariants, behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many records are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// A new record with a random id, created `now`.
    pub fn create(&self, now: Instant) -> ProbeId {
        let id = ProbeId::random();
        self.insert(id.clone(), now);
        id
    }

    /// A new record for `id` (replacing one of that id), dropping the oldest
    /// when full.
    fn insert(&self, id: ProbeId, now: Instant) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut store = self.lock();
        if store.entries.contains_key(&id) {
            store.order.retain(|old| *old != id);
        }
        while store.entries.len() >= store.capacity {
            let Some(oldest) = store.order.pop_front() else {
                break;
            };
            store.entries.remove(&oldest);
        }
        let record = Record {
            id: id.0.clone(),
            created_unix_ms: unix_ms,
            now_ms: 0,
            websocket: None,
            long_polls: Vec::new(),
            long_polls_not_kept: 0,
            notes: Vec::new(),
            notes_not_kept: 0,
        };
        store.order.push_back(id.clone());
        store.entries.insert(
            id,
            Entry {
                created: now,
                record,
            },
        );
    }

    /// The record of `id` as of `now`.
    pub fn get(&self, id: &ProbeId, now: Instant) -> Option<Record> {
        let store = self.lock();
        let entry = store.entries.get(id)?;
        let mut record = entry.record.clone();
        record.now_ms = entry.ms(now);
        Some(record)
    }

    /// A probe WebSocket request arrived with `facts` (`arrived_ms` is set
    /// here). One per probe: a second one is [`ProbeError::Used`] and
    /// changes nothing.
    pub fn arrive(
        &self,
        id: &ProbeId,
        mut facts: SocketFacts,
        now: Instant,
    ) -> Result<(), ProbeError> {
        let mut store = self.lock();
        let entry = store.entries.get_mut(id).ok_or(ProbeError::Unknown)?;
        if entry.record.websocket.is_some() {
            return Err(ProbeError::Used);
        }
        facts.arrived_ms = entry.ms(now);
        entry.record.websocket = Some(facts);
        Ok(())
    }

    /// Applies `change` to the socket facts of `id`, if it has them.
    fn socket(&self, id: &ProbeId, now: Instant, change: impl FnOnce(&mut SocketFacts, u64)) {
        let mut store = self.lock();
        if let Some(entry) = store.entries.get_mut(id) {
            let ms = entry.ms(now);
            if let Some(facts) = entry.record.websocket.as_mut() {
                change(facts, ms);
            }
        }
    }

    /// The probe application accepted the upgrade.
    pub fn accepted(&self, id: &ProbeId, now: Instant) {
        self.socket(id, now, |facts, _| facts.accepted = true);
    }

    /// The server answered the probe request with `status` (and, for `101`,
    /// the negotiated subprotocol and extensions).
    pub fn answered(
        &self,
        id: &ProbeId,
        status: u16,
        protocol: Option<String>,
        extensions: Option<String>,
        now: Instant,
    ) {
        self.socket(id, now, |facts, ms| {
            facts.status = Some(status);
            facts.answered_ms = Some(ms);
            facts.origin_refused = status == 403 && facts.accepted;
            facts.protocol = protocol;
            facts.extensions = extensions;
        });
    }

    /// The probe socket opened.
    pub fn opened(&self, id: &ProbeId, now: Instant) {
        self.socket(id, now, |facts, ms| facts.opened_ms = Some(ms));
    }

    /// A message of `bytes` arrived on the probe socket; returns how many
    /// have so far.
    pub fn message(&self, id: &ProbeId, bytes: usize, now: Instant) -> u64 {
        let mut count = 0;
        self.socket(id, now, |facts, ms| {
            facts.messages_in += 1;
            facts.bytes_in = facts.bytes_in.saturating_add(bytes as u64);
            facts.last_message_ms = Some(ms);
            count = facts.messages_in;
        });
        count
    }

    /// The probe socket ended.
    pub fn closed(&self, id: &ProbeId, by: &'static str, code: u16, now: Instant) {
        self.socket(id, now, |facts, ms| {
            facts.closed = Some(Closed {
                at_ms: ms,
                by,
                code,
            });
        });
    }

    /// A note (an error, a refusal) on the record of `id`.
    pub fn note(&self, id: &ProbeId, note: String) {
        if let Some(entry) = self.lock().entries.get_mut(id) {
            entry.note(note);
        }
    }

    /// A long-polling request of `id` arrived; its index in the record, if
    /// kept (`None`: unknown probe, or past [`MAX_LONG_POLLS`]).
    pub fn long_poll_arrived(&self, id: &ProbeId, now: Instant) -> Option<usize> {
        let mut store = self.lock();
        let entry = store.entries.get_mut(id)?;
        let ms = entry.ms(now);
        let polls = &mut entry.record.long_polls;
        if polls.len() >= MAX_LONG_POLLS {
            entry.record.long_polls_not_kept += 1;
            return None;
        }
        polls.push(LongPoll {
            arrived_ms: ms,
            answered_ms: None,
            status: None,
            abandoned_ms: None,
        });
        Some(polls.len() - 1)
    }

    fn long_poll(
        &self,
        id: &ProbeId,
        index: usize,
        now: Instant,
        change: impl FnOnce(&mut LongPoll, u64),
    ) {
        let mut store = self.lock();
        if let Some(entry) = store.entries.get_mut(id) {
            let ms = entry.ms(now);
            if let Some(poll) = entry.record.long_polls.get_mut(index) {
                change(poll, ms);
            }
        }
    }

    /// The long-polling request `index` of `id` was answered with `status`.
    pub fn long_poll_answered(&self, id: &ProbeId, index: usize, status: u16, now: Instant) {
        self.long_poll(id, index, now, |poll, ms| {
            poll.answered_ms = Some(ms);
            poll.status = Some(status);
        });
    }

    /// The long-polling request `index` of `id` was abandoned before its
    /// answer (its connection closed).
    pub fn long_poll_abandoned(&self, id: &ProbeId, index: usize, now: Instant) {
        self.long_poll(id, index, now, |poll, ms| poll.abandoned_ms = Some(ms));
    }
}

// ---------------------------------------------------------------- the probe socket

/// The probe WebSocket application: accepts upgrades for known probe ids
/// (the route's gate has checked and recorded the request), echoes every
/// message, records opening, messages and the close.
#[derive(Clone, Debug)]
struct ProbeApp {
    probes: Probes,
}

/// A probe socket's data.
#[derive(Debug)]
struct ProbeSocket {
    id: ProbeId,
    /// This server started the close (the message limit).
    server_closing: AtomicBool,
}

impl WebSocketApp for ProbeApp {
    type Data = ProbeSocket;

    fn upgrade(&self, request: &HandshakeRequest) -> Upgrade<ProbeSocket> {
        let id = request.params.get(PROBE_PARAM).map(|s| ProbeId::parse(s));
        let Some(Ok(id)) = id else {
            return Upgrade::status(400);
        };
        if !request.is_websocket {
            return Upgrade::status(400);
        }
        self.probes.accepted(&id, Instant::now());
        let socket = ProbeSocket {
            id,
            server_closing: AtomicBool::new(false),
        };
        // The default origin rule stays: a page of another site cannot
        // probe through a visitor's browser.
        Upgrade::Accept(
            WebSocketConfig::new(socket)
                .sub_protocols([PROBE_PROTOCOL])
                .terminate_on_session_exit(false),
        )
    }

    fn on_event(&self, mut event: WsEvent<'_, ProbeSocket>) {
        let now = Instant::now();
        let id = &event.data.id;
        match &event.kind {
            EventKind::Open => self.probes.opened(id, now),
            EventKind::Message(message) => {
                let count = self.probes.message(id, message.payload().len(), now);
                if count > MAX_PROBE_MESSAGES {
                    event.data.server_closing.store(true, Ordering::Relaxed);
                    let _ = event.close(CloseCode::POLICY_VIOLATION, "probe message limit");
                    return;
                }
                let echo = message.clone();
                // A closing socket drops the echo, as it should.
                let _ = event.send(echo);
            }
            EventKind::Error(error) => self.probes.note(id, format!("socket error: {error}")),
            EventKind::Close(code) => {
                let code = code.0;
                let by = if event.data.server_closing.load(Ordering::Relaxed) {
                    "server"
                } else if code == CloseCode::ABNORMAL.0 {
                    "dropped"
                } else {
                    "client"
                };
                self.probes.closed(id, by, code, now);
            }
        }
    }
}

// ---------------------------------------------------------------- routes

/// The test page: its routes and its probe records.
#[derive(Clone, Debug)]
pub struct TestPage {
    probes: Probes,
    runtime: Runtime,
    server: ServerSide,
}

/// What the page compares its observations with.
#[derive(Clone, Debug, Serialize)]
struct ServerSide {
    /// The bus path (`/amb`), for the bus steps.
    bus_path: String,
    /// Whether the bus offers its `websocket` transport (the A/B switch
    /// `bus.websocket_enabled`).
    bus_websocket: bool,
    /// The server pings a silent WebSocket after this long.
    keepalive_interval_ms: u64,
    /// The bus holds a `/meta/connect` this long at most (less when the
    /// client asks, with `advice.timeout`).
    bus_hold_ms: u64,
    /// Whether the server accepts permessage-deflate.
    compression: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl TestPage {
    /// The test page of `runtime`'s server, with [`MAX_RECORDS`] records,
    /// for its bus at `bus_path` (its `websocket` transport on or off),
    /// which holds a `/meta/connect` at most `bus_hold`.
    pub fn new(runtime: &Runtime, bus_path: &str, bus_websocket: bool, bus_hold: Duration) -> Self {
        let config = runtime.config();
        TestPage {
            probes: Probes::new(MAX_RECORDS),
            runtime: runtime.clone(),
            server: ServerSide {
                bus_path: bus_path.to_owned(),
                bus_websocket,
                keepalive_interval_ms: millis(config.socket.keepalive_interval),
                bus_hold_ms: millis(bus_hold),
                compression: config.deflate.is_some(),
            },
        }
    }

    /// The page, its assets and the probe endpoints (see the module
    /// documentation).
    pub fn router(&self) -> Router {
        let socket = wsbus::axum::websocket(
            self.runtime.clone(),
            ProbeApp {
                probes: self.probes.clone(),
            },
        )
        .layer(middleware::from_fn_with_state(self.probes.clone(), gate));
        let state = (self.probes.clone(), self.server.clone());
        Router::new()
            .route("/websocket-test", page(HTML, PAGE_HTML))
            .route("/websocket-test.js", page(JAVASCRIPT, PAGE_JS))
            .route("/websocket-test.css", page(CSS, PAGE_CSS))
            .route(
                "/websocket-test/probe",
                post(create).with_state(state).get_service(socket),
            )
            .route(
                "/websocket-test/probe/{id}",
                get(read).with_state(self.probes.clone()),
            )
    }

    /// `long_polling` with its requests that carry `?probe=<id>` of a known
    /// probe recorded: arrival, answer, or abandonment. Other requests pass
    /// after a look at the query string.
    pub fn observe_long_polls(&self, long_polling: MethodRouter) -> MethodRouter {
        long_polling.layer(middleware::from_fn_with_state(
            self.probes.clone(),
            observe_long_poll,
        ))
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

fn page(content_type: &'static str, body: &'static str) -> MethodRouter {
    get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) })
}

/// `value` as a JSON response with `status`.
fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).expect("records serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"error": "..."}` with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// The value of query parameter `name`, if any.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `POST /websocket-test/probe`: a new probe.
async fn create(State((probes, server)): State<(Probes, ServerSide)>) -> Response {
    let id = probes.create(Instant::now());
    let body = serde_json::json!({ "id": id.as_str(), "server": server });
    json(StatusCode::CREATED, &body)
}

/// `GET /websocket-test/probe/<id>`: the record.
async fn read(State(probes): State<Probes>, Path(id): Path<String>) -> Response {
    let id = match ProbeId::parse(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match probes.get(&id, Instant::now()) {
        Some(record) => json(StatusCode::OK, &record),
        None => error(StatusCode::NOT_FOUND, &ProbeError::Unknown.to_string()),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// What a probe request carries, before anything answers it.
fn facts_of(request: &Request, client: Option<&ClientView>) -> SocketFacts {
    let headers = request.headers();
    let connection = header_text(headers, header::CONNECTION);
    let connection_upgrade = connection.as_deref().is_some_and(|c| {
        c.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    });
    SocketFacts {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        upgrade: header_text(headers, header::UPGRADE),
        connection,
        connection_upgrade,
        websocket_key: headers.contains_key(header::SEC_WEBSOCKET_KEY),
        offered_protocols: header_text(headers, header::SEC_WEBSOCKET_PROTOCOL),
        offered_extensions: header_text(headers, header::SEC_WEBSOCKET_EXTENSIONS),
        origin: header_text(headers, header::ORIGIN),
        host: header_text(headers, header::HOST),
        via_proxy: headers.contains_key(header::VIA)
            || headers.contains_key(header::FORWARDED)
            || headers.contains_key("x-forwarded-for"),
        client: client.map(|c| c.addr.to_string()),
        ..SocketFacts::default()
    }
}

/// In front of the probe socket: checks the id, records what arrived, and
/// answers a request without `Upgrade` itself (it would never reach the
/// application as an upgrade); then records the answer.
async fn gate(State(probes): State<Probes>, request: Request, next: Next) -> Response {
    let id = match query_param(request.uri().query(), PROBE_PARAM)
        .ok_or(IdError::Missing)
        .and_then(|id| ProbeId::parse(&id))
    {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let client = request.extensions().get::<ClientView>().cloned();
    let facts = facts_of(&request, client.as_ref());
    let (has_upgrade, asked_websocket) = (facts.upgrade.is_some(), facts.websocket_key);
    if let Err(e) = probes.arrive(&id, facts, Instant::now()) {
        return error(e.status(), &e.to_string());
    }
    tracing::info!(
        target: "wsbus::app",
        probe = id.as_str(),
        client = client.map(|c| c.addr.to_string()).unwrap_or_default(),
        upgrade = has_upgrade,
        "test page probe arrived"
    );
    let response = if has_upgrade {
        next.run(request).await
    } else if asked_websocket {
        let why = "the WebSocket upgrade reached the server without its Upgrade header: \
                   a proxy in between is not configured for WebSocket";
        probes.note(&id, why.to_owned());
        error(StatusCode::BAD_REQUEST, why)
    } else {
        error(
            StatusCode::BAD_REQUEST,
            "this is the test page's WebSocket probe: open /websocket-test",
        )
    };
    let headers = response.headers();
    probes.answered(
        &id,
        response.status().as_u16(),
        header_text(headers, header::SEC_WEBSOCKET_PROTOCOL),
        header_text(headers, header::SEC_WEBSOCKET_EXTENSIONS),
        Instant::now(),
    );
    response
}

/// Marks a long-polling request abandoned unless it was answered.
struct PendingPoll {
    probes: Probes,
    id: ProbeId,
    index: usize,
    answered: bool,
}

impl Drop for PendingPoll {
    fn drop(&mut self) {
        if !self.answered {
            self.probes
                .long_poll_abandoned(&self.id, self.index, Instant::now());
        }
    }
}

/// In front of the bus's long-polling: records requests of known probes.
async fn observe_long_poll(State(probes): State<Probes>, request: Request, next: Next) -> Response {
    let id =
        query_param(request.uri().query(), BUS_PROBE_PARAM).and_then(|id| ProbeId::parse(&id).ok());
    let pending = id.and_then(|id| {
        let index = probes.long_poll_arrived(&id, Instant::now())?;
        Some(PendingPoll {
            probes: probes.clone(),
            id,
            index,
            answered: false,
        })
    });
    let response = next.run(request).await;
    if let Some(mut pending) = pending {
        probes.long_poll_answered(
            &pending.id,
            pending.index,
            response.status().as_u16(),
            Instant::now(),
        );
        pending.answered = true;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ProbeId {
        ProbeId::parse(s).expect("valid id")
    }

    #[test]
    fn ids_are_8_to_64_characters_of_the_url_safe_set() {
        assert!(ProbeId::parse("abcdEFGH").is_ok());
        assert!(ProbeId::parse("a_b-c_d-0123456789").is_ok());
        assert!(ProbeId::parse(&"x".repeat(MAX_ID_CHARS)).is_ok());
        assert_eq!(ProbeId::parse("short"), Err(IdError::Length(5)));
        assert_eq!(ProbeId::parse(""), Err(IdError::Length(0)));
        assert_eq!(
            ProbeId::parse(&"x".repeat(MAX_ID_CHARS + 1)),
            Err(IdError::Length(MAX_ID_CHARS + 1))
        );
        let long = "a".repeat(10 * 1024);
        let refused = ProbeId::parse(&long).unwrap_err();
        assert_eq!(refused, IdError::Length(10 * 1024));
        // The message says what is wrong without repeating the 10 KB.
        assert!(refused.to_string().len() < 200, "{refused}");
        for bad in [
            "abcdefg/",
            "abcdefg.",
            "abcd efg",
            "abcdéfgh",
            "abcd%20efg",
            "<script>x",
        ] {
            assert!(ProbeId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn created_ids_are_valid_and_distinct() {
        let probes = Probes::new(4);
        let now = Instant::now();
        let a = probes.create(now);
        let b = probes.create(now);
        assert_ne!(a, b);
        assert_eq!(ProbeId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_oldest() {
        let probes = Probes::new(3);
        let now = Instant::now();
        for n in 0..5 {
            probes.insert(id(&format!("probe-{n:03}")), now);
        }
        assert_eq!(probes.len(), 3);
        assert!(probes.get(&id("probe-000"), now).is_none());
        assert!(probes.get(&id("probe-001"), now).is_none());
        for n in 2..5 {
            assert!(probes.get(&id(&format!("probe-{n:03}")), now).is_some());
        }
    }

    #[test]
    fn a_flood_of_records_stays_at_the_limit() {
        let probes = Probes::new(MAX_RECORDS);
        let now = Instant::now();
        let first = probes.create(now);
        for _ in 0..MAX_RECORDS + 500 {
            probes.create(now);
        }
        assert_eq!(probes.len(), MAX_RECORDS);
        assert!(probes.get(&first, now).is_none(), "the oldest is dropped");
        let store = probes.lock();
        assert_eq!(store.order.len(), MAX_RECORDS, "order and map agree");
    }

    #[test]
    fn unknown_and_reused_ids_are_refused_without_a_record() {
        let probes = Probes::new(8);
        let t0 = Instant::now();
        let unknown = id("never-created");
        assert_eq!(
            probes.arrive(&unknown, SocketFacts::default(), t0),
            Err(ProbeError::Unknown)
        );
        assert!(probes.get(&unknown, t0).is_none(), "no record made");
        assert_eq!(probes.len(), 0);

        let probe = probes.create(t0);
        let first = SocketFacts {
            upgrade: Some("websocket".into()),
            ..SocketFacts::default()
        };
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(probes.arrive(&probe, first, t1), Ok(()));
        let second = SocketFacts {
            upgrade: None,
            ..SocketFacts::default()
        };
        assert_eq!(probes.arrive(&probe, second, t1), Err(ProbeError::Used));
        let record = probes.get(&probe, t1).expect("kept");
        let facts = record.websocket.expect("first attempt kept");
        assert_eq!(
            facts.upgrade.as_deref(),
            Some("websocket"),
            "unchanged by reuse"
        );
        assert_eq!(facts.arrived_ms, 250);
        assert_eq!(ProbeError::Used.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ProbeError::Unknown.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_socket_attempt_is_recorded_from_arrival_to_close() {
        let probes = Probes::new(8);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let probe = probes.create(t0);
        probes
            .arrive(&probe, SocketFacts::default(), ms(10))
            .unwrap();
        probes.accepted(&probe, ms(11));
        probes.answered(&probe, 101, Some(PROBE_PROTOCOL.into()), None, ms(12));
        probes.opened(&probe, ms(13));
        assert_eq!(probes.message(&probe, 5, ms(20)), 1);
        assert_eq!(probes.message(&probe, 7, ms(30)), 2);
        probes.closed(&probe, "client", 1000, ms(40));
        let facts = probes.get(&probe, ms(50)).unwrap().websocket.unwrap();
        assert_eq!(facts.status, Some(101));
        assert!(!facts.origin_refused);
        assert_eq!(facts.protocol.as_deref(), Some(PROBE_PROTOCOL));
        assert_eq!(
            (facts.opened_ms, facts.messages_in, facts.bytes_in),
            (Some(13), 2, 12)
        );
        assert_eq!(
            facts.closed,
            Some(Closed {
                at_ms: 40,
                by: "client",
                code: 1000
            })
        );
    }

    #[test]
    fn a_403_after_acceptance_is_the_origin_rule() {
        let probes = Probes::new(8);
        let now = Instant::now();
        let probe = probes.create(now);
        probes.arrive(&probe, SocketFacts::default(), now).unwrap();
        probes.accepted(&probe, now);
        probes.answered(&probe, 403, None, None, now);
        assert!(
            probes
                .get(&probe, now)
                .unwrap()
                .websocket
                .unwrap()
                .origin_refused
        );
    }

    #[test]
    fn long_polls_are_recorded_and_bounded() {
        let probes = Probes::new(8);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let probe = probes.create(t0);
        let held = probes.long_poll_arrived(&probe, ms(100)).unwrap();
        probes.long_poll_answered(&probe, held, 200, ms(6100));
        let cut = probes.long_poll_arrived(&probe, ms(7000)).unwrap();
        probes.long_poll_abandoned(&probe, cut, ms(10_000));
        for _ in 2..MAX_LONG_POLLS {
            probes.long_poll_arrived(&probe, ms(11_000)).unwrap();
        }
        assert_eq!(probes.long_poll_arrived(&probe, ms(12_000)), None);
        let record = probes.get(&probe, ms(13_000)).unwrap();
        assert_eq!(record.long_polls.len(), MAX_LONG_POLLS);
        assert_eq!(record.long_polls_not_kept, 1);
        assert_eq!(
            record.long_polls[0],
            LongPoll {
                arrived_ms: 100,
                answered_ms: Some(6100),
                status: Some(200),
                abandoned_ms: None
            }
        );
        assert_eq!(record.long_polls[1].abandoned_ms, Some(10_000));
        assert_eq!(record.now_ms, 13_000);
        assert_eq!(probes.long_poll_arrived(&id("not-a-probe"), t0), None);
    }

    #[test]
    fn notes_are_bounded() {
        let probes = Probes::new(8);
        let now = Instant::now();
        let probe = probes.create(now);
        for n in 0..MAX_NOTES + 3 {
            probes.note(&probe, format!("note {n}"));
        }
        let record = probes.get(&probe, now).unwrap();
        assert_eq!((record.notes.len(), record.notes_not_kept), (MAX_NOTES, 3));
    }
}
