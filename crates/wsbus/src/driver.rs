//! One task per socket: drives a [`Connection`] over a [`Transport`] — the
//! tokio side of the sans-IO contract written on `wsbus_proto::Connection`.
//!
//! The task sleeps until the transport is readable or writable, the hub
//! queued something for it (a message, a close, the server's shutdown) or its
//! one timer fired. The read buffer is released whenever it holds no partial
//! frame and the write queue once flushed, so an idle plain-TCP socket holds
//! neither: it is its task's state (the `socket_task_state_stays_small` test)
//! and its hub entry.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use hyper::upgrade::OnUpgrade;
use tokio::time::{Instant, Sleep};
use wsbus_proto::{CloseCode, Connection, Event, Outgoing, State};

use crate::app::{EventKind, SocketError, SocketInfo, WebSocketApp, WsEvent};
use crate::capture::Direction;
use crate::hub::{Outbound, SocketShared};
use crate::runtime::{Registration, Runtime};
use crate::security::{
    Inbound, OnInvalid, RATE_EXCEEDED_REASON, SocketGuard, TOKEN_EXPIRED_REASON,
    invalid_close_reason,
};
use crate::transport::{MAX_IOVECS, SocketIo, Transport};

/// While this many bytes wait to be written the task stops reading, so a peer
/// that sends without reading cannot make us queue replies without bound.
const PAUSE_READING_ABOVE: usize = 4 << 20;

/// What to do when a socket's outbound queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close with 1008 "slow consumer": queued frames not yet started are
    /// dropped so the close frame goes next; the socket is dropped if the
    /// peer does not answer within the close timeout. Default: a consumer
    /// that cannot keep up would otherwise see an incomplete stream without
    /// knowing it.
    #[default]
    Close,
    /// Drop the new message and keep the socket (for feeds where only the
    /// latest state matters).
    Drop,
}

/// Timings and bounds of a running socket.
#[derive(Clone, Debug)]
pub struct SocketSettings {
    /// How long we wait for the peer's close frame after sending ours. Default 5 s.
    pub close_timeout: Duration,
    /// After the closing handshake the server half-closes TCP and drains the
    /// peer for at most this long, so that unread bytes do not turn our FIN
    /// into a reset that could destroy the close frame in flight. Default 2 s.
    pub linger: Duration,
    /// A ping is sent after this long without hearing from the peer. Default 30 s.
    pub keepalive_interval: Duration,
    /// A peer silent this long is dropped and reported with 1006. Default 60 s.
    pub keepalive_timeout: Duration,
    /// Bytes a socket may have queued for writing before a message from the
    /// hub triggers the slow-consumer policy. Default 8 MiB: several large
    /// messages of headroom, and a bound on what one stuck reader costs.
    pub max_outbound_bytes: usize,
    /// What happens when `max_outbound_bytes` is reached. Default: close.
    pub slow_consumer: SlowConsumerPolicy,
}

impl Default for SocketSettings {
    fn default() -> Self {
        SocketSettings {
            close_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_outbound_bytes: 8 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
        }
    }
}

/// `session_access`: inbound messages refresh the socket's HTTP session, at
/// most once per `throttle`.
#[derive(Debug)]
pub(crate) struct SessionRefresh {
    throttle: Duration,
    /// When an inbound message last refreshed the session.
    last: Option<Instant>,
}

impl SessionRefresh {
    pub(crate) fn new(throttle: Duration) -> Self {
        SessionRefresh {
            throttle,
            last: None,
        }
    }

    /// Whether a message arriving at `now` refreshes the session (and if so,
    /// the window starts again at `now`).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|at| now.duration_since(at) >= self.throttle);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Everything a socket task needs besides its transport.
pub(crate) struct SocketTask<A: WebSocketApp> {
    pub(crate) app: Arc<A>,
    pub(crate) data: A::Data,
    /// The socket's hub entry (which holds its [`SocketInfo`]) and session
    /// binding, released on drop; and the runtime (hub, sessions, settings).
    pub(crate) registration: Registration,
    /// Token expiry, message rate, schema, connection permits: boxed, and
    /// only for sockets that have any.
    pub(crate) guard: Option<Box<SocketGuard>>,
}

/// The close reason of a socket whose handler panicked (code 1011).
const HANDLER_FAILED_REASON: &str = "internal error";

/// Messages a socket's task read and sent during one wake: added to the
/// metrics once per wake (see [`crate::metrics`], "Cost on the hot path").
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    received: u32,
    sent: u32,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.received += other.received;
        self.sent += other.sent;
    }
}

enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Outbox,
    Timer,
}

impl<A: WebSocketApp> SocketTask<A> {
    fn runtime(&self) -> &Runtime {
        self.registration.runtime()
    }

    /// The socket as its handler sees it (kept in its hub entry).
    fn info(&self) -> &SocketInfo {
        self.registration.shared().info()
    }

    /// The client's address, for log lines.
    fn client(&self) -> std::net::IpAddr {
        self.registration.shared().client()
    }

    /// The user's login, for log lines (`-` when anonymous).
    fn user(&self) -> &str {
        self.info().user.as_ref().map_or("-", |u| u.login.as_str())
    }

    /// Hand an event to the application. The messages the handler sent are
    /// added to `sent`. A panic in the handler is the caller's to catch
    /// ([`emit`](Self::emit), [`dispatch`](Self::dispatch)).
    fn deliver(&mut self, kind: EventKind, conn: Option<&mut Connection>, sent: &mut u32) {
        let event = WsEvent::new(
            kind,
            self.registration.shared().info(),
            &self.data,
            self.registration.runtime(),
            conn,
            self.guard.as_deref_mut(),
            sent,
        );
        self.app.on_event(event);
    }

    /// Hand an event to the application, catching a panic in the handler:
    /// it is logged, the socket is closed with 1011 and gets no more MESSAGE
    /// events, and CLOSE still comes exactly once (the task, and with it the
    /// other sockets of its worker thread, carries on). Returns false if the
    /// handler panicked.
    fn emit(&mut self, kind: EventKind, mut conn: Option<&mut Connection>, sent: &mut u32) -> bool {
        let closing = matches!(kind, EventKind::Close(_));
        let delivered = catch_unwind(AssertUnwindSafe(|| {
            self.deliver(kind, conn.as_deref_mut(), sent)
        }));
        match delivered {
            Ok(()) => true,
            Err(panic) => {
                self.handler_panicked(&*panic, conn.filter(|_| !closing));
                false
            }
        }
    }

    /// The handler panicked: log it, and close the socket with 1011 unless
    /// it is closing.
    fn handler_panicked(&self, panic: &(dyn std::any::Any + Send), conn: Option<&mut Connection>) {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string payload");
        tracing::error!(target: "wsbus::app", socket = %self.info().id, client = %self.client(), user = self.user(), path = %self.info().path, panic = what, "event handler panicked; closing the socket with 1011");
        if let Some(conn) = conn {
            let _ = conn.close(CloseCode::INTERNAL_ERROR, HANDLER_FAILED_REASON);
        }
    }

    /// Hand the connection's events to the application. `handler_failed`
    /// (a local of the task rather than a field: the task's state stays
    /// small) is set once the handler has panicked; after that it gets no
    /// more MESSAGE events. Returns the messages received and sent.
    ///
    /// A panic is caught once for all the events of a wake (a read brings
    /// several messages), not once per event: the unwinding guard keeps the
    /// handler from being inlined here, which costs on every message. After
    /// a panic the remaining events are handed on as before it.
    fn dispatch(&mut self, conn: &mut Connection, handler_failed: &mut bool) -> Tally {
        let mut tally = Tally::default();
        while let Err(panic) = catch_unwind(AssertUnwindSafe(|| {
            self.dispatch_events(conn, handler_failed, &mut tally)
        })) {
            *handler_failed = true;
            self.handler_panicked(&*panic, Some(conn));
        }
        tally
    }

    fn dispatch_events(
        &mut self,
        conn: &mut Connection,
        handler_failed: &mut bool,
        tally: &mut Tally,
    ) {
        while let Some(event) = conn.poll_event() {
            if let Event::Message(message) = &event {
                tally.received += 1;
                let shared = self.registration.shared();
                self.runtime()
                    .capture(shared.id(), Some(shared), Direction::In, message);
            }
            match event {
                Event::Message(_) if *handler_failed => {}
                Event::Message(message) if !self.admit(conn, &message, &mut tally.sent) => {}
                Event::Message(message) => {
                    self.refresh_session();
                    self.deliver(EventKind::Message(message), Some(conn), &mut tally.sent);
                }
                Event::Error(err) => {
                    tracing::debug!(target: "wsbus::frames", socket = %self.info().id, %err, "protocol error");
                    self.deliver(
                        EventKind::Error(SocketError::Protocol(err)),
                        Some(conn),
                        &mut tally.sent,
                    );
                }
                Event::Ping(_) | Event::Pong(_) | Event::Close(_) => {}
            }
        }
    }

    /// Adds one wake's messages and bytes to the metrics.
    fn count(&self, tally: Tally, bytes_in: usize, bytes_out: usize) {
        self.registration.shared().add_bytes(bytes_in, bytes_out);
        self.runtime().metrics().traffic_shard(self.info().id).add(
            tally.received,
            tally.sent,
            bytes_in,
            bytes_out,
        );
    }

    /// The guard's say on an inbound message: `false` if it is not to be
    /// delivered (over the rate: close 1008; failing the path's schema:
    /// close 1007, or an ERROR event instead of the message).
    fn admit(
        &mut self,
        conn: &mut Connection,
        message: &wsbus_proto::Message,
        sent: &mut u32,
    ) -> bool {
        let Some(guard) = self.guard.as_deref_mut() else {
            return true;
        };
        let verdict = guard.inbound(message, std::time::Instant::now());
        let metrics = self.registration.runtime().metrics();
        match verdict {
            Inbound::Pass => true,
            Inbound::Drop => false,
            Inbound::RateExceeded => {
                guard.violated = true;
                metrics.limit_hit("messages_per_second");
                tracing::info!(target: "wsbus::limits", socket = %self.info().id, client = %self.client(), user = self.user(), path = %self.info().path, "message rate exceeded; closing with 1008");
                let _ = conn.close(CloseCode::POLICY_VIOLATION, RATE_EXCEEDED_REASON);
                false
            }
            Inbound::Invalid(violation) => {
                metrics.schema_rejection("in");
                let on_invalid = guard.schema.as_ref().map(|s| s.on_invalid);
                if on_invalid != Some(OnInvalid::Error) {
                    guard.violated = true;
                }
                tracing::info!(target: "wsbus::schema", socket = %self.info().id, client = %self.client(), user = self.user(), path = %self.info().path, pointer = %violation.pointer, reason = %violation.reason, "inbound message failed the path's schema");
                if on_invalid == Some(OnInvalid::Error) {
                    // A panic here is caught by `dispatch`.
                    self.deliver(
                        EventKind::Error(SocketError::Invalid(violation)),
                        Some(conn),
                        sent,
                    );
                } else {
                    let _ = conn.close(
                        CloseCode::INVALID_PAYLOAD,
                        &invalid_close_reason(&violation),
                    );
                }
                false
            }
        }
    }

    /// `session_access`: inbound messages refresh the HTTP session, at most
    /// once per throttle window.
    fn refresh_session(&mut self) {
        self.registration.inbound_message();
    }

    /// The timer's next deadline for a keepalive step due at
    /// `keepalive_at`: earlier if the token expires before.
    fn timer_deadline(&mut self, keepalive_at: Instant) -> Instant {
        match self.guard.as_deref_mut() {
            Some(guard) => guard.deadline(keepalive_at),
            None => keepalive_at,
        }
    }

    /// Applies what the hub queued; returns whether it sent a message.
    fn apply_outbound(&self, conn: &mut Connection, item: Outbound) -> bool {
        match item {
            Outbound::Message(prepared) => {
                if conn.outgoing().len() >= self.runtime().socket_settings().max_outbound_bytes {
                    match self.runtime().socket_settings().slow_consumer {
                        SlowConsumerPolicy::Close => self.close_slow_consumer(conn),
                        SlowConsumerPolicy::Drop => self.runtime().metrics().write_queue_drop(),
                    }
                    return false;
                }
                if let Some(guard) = self.guard.as_deref()
                    && let Err(violation) = guard.outbound_prepared_ok(&prepared)
                {
                    self.runtime().metrics().schema_rejection("out");
                    tracing::warn!(target: "wsbus::schema", socket = %self.info().id, client = %self.client(), user = self.user(), path = %self.info().path, pointer = %violation.pointer, reason = %violation.reason, "outbound message failed the path's schema; not sent");
                    return false;
                }
                // A send to a closing socket is dropped: nothing may follow a
                // close frame (RFC 6455 §5.5.1).
                let sent = conn.send_prepared(&prepared).is_ok();
                if sent {
                    let shared = self.registration.shared();
                    self.runtime().capture(
                        shared.id(),
                        Some(shared),
                        Direction::Out,
                        prepared.message(),
                    );
                }
                sent
            }
            Outbound::Close(code, reason) => {
                let _ = conn.close(code, &reason);
                false
            }
            Outbound::Overflowed => {
                self.close_slow_consumer(conn);
                false
            }
        }
    }

    /// The close policy: 1008 `slow consumer`, put next by dropping the
    /// frames not yet started.
    fn close_slow_consumer(&self, conn: &mut Connection) {
        if conn.state() == State::Open {
            self.runtime().metrics().slow_consumer();
            tracing::info!(target: "wsbus::frames", socket = %self.info().id, client = %self.client(), user = self.user(), "slow consumer closed");
            let _ = conn.close_discarding_queue(CloseCode::POLICY_VIOLATION, "slow consumer");
        }
    }

    /// The socket's task: wait for hyper to hand over the connection, then
    /// run the socket until it closes.
    ///
    /// One future for the whole life of the socket, written so that its
    /// state holds each value once (an `async fn` stores its arguments twice,
    /// and an outer future awaiting an inner one holds both): this is most
    /// of what an idle socket costs.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
    pub(crate) fn run(
        mut self,
        mut conn: Connection,
        upgrade: OnUpgrade,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            // The registration is released when `self` drops, on every path.
            let Some((mut transport, mut rbuf)) = SocketIo::from_upgrade(upgrade).await else {
                return;
            };
            // The timer: while open, the keepalive deadline (reset when the
            // peer is heard from: no `last_seen` is kept, the deadline says
            // it); once closing, the close deadline.
            let mut ping_outstanding = false;
            let mut closing = false;
            let mut flush_pending = false;
            let mut eof = false;
            let mut timer = pin!(tokio::time::sleep_until({
                let keepalive = self.runtime().socket_settings().keepalive_interval;
                self.timer_deadline(Instant::now() + keepalive)
            }));

            let mut handler_failed = {
                let mut opened = Tally::default();
                let failed = !self.emit(EventKind::Open, Some(&mut conn), &mut opened.sent);
                self.count(opened, 0, 0);
                failed
            };
            loop {
                {
                    let mut tally = Tally::default();
                    while conn.handle_read(&mut rbuf) {
                        tally += self.dispatch(&mut conn, &mut handler_failed);
                    }
                    tally += self.dispatch(&mut conn, &mut handler_failed);
                    for item in self.registration.shared().drain() {
                        tally.sent += u32::from(self.apply_outbound(&mut conn, item));
                    }
                    self.count(tally, 0, 0);
                }
                if eof
                    || conn.state() == State::Closed && conn.outgoing().is_empty() && !flush_pending
                {
                    break;
                }
                if conn.state() != State::Open && !closing {
                    closing = true;
                    let close_timeout = self.runtime().socket_settings().close_timeout;
                    timer.as_mut().reset(Instant::now() + close_timeout);
                }
                let reading =
                    conn.outgoing().len() < PAUSE_READING_ABOVE && conn.state() != State::Closed;
                let want = conn.frame_bytes_wanted(rbuf.len());
                let wake = next_wake(
                    self.registration.shared(),
                    conn.outgoing(),
                    &mut transport,
                    &mut rbuf,
                    timer.as_mut(),
                    Waiting {
                        flush_pending,
                        reading,
                        want,
                    },
                )
                .await;
                match wake {
                    Wake::Read(Ok(0))
                    | Wake::Read(Err(_))
                    | Wake::Wrote(Err(_))
                    | Wake::Flushed(Err(_)) => {
                        conn.handle_eof();
                        eof = true;
                    }
                    Wake::Read(Ok(read)) => {
                        ping_outstanding = false;
                        if !closing {
                            let interval = self.runtime().socket_settings().keepalive_interval;
                            let deadline = self.timer_deadline(Instant::now() + interval);
                            timer.as_mut().reset(deadline);
                        }
                        let mut tally = Tally::default();
                        while conn.handle_read(&mut rbuf) {
                            tally += self.dispatch(&mut conn, &mut handler_failed);
                        }
                        self.count(tally, read, 0);
                        if rbuf.is_empty() {
                            rbuf = BytesMut::new(); // idle sockets hold no read buffer
                        }
                    }
                    Wake::Wrote(Ok(0)) => {
                        conn.handle_eof();
                        eof = true;
                    }
                    Wake::Wrote(Ok(written)) => {
                        self.count(Tally::default(), 0, written);
                        conn.outgoing().advance(written);
                        flush_pending = true;
                    }
                    Wake::Flushed(Ok(())) => flush_pending = false,
                    Wake::Outbox => {}
                    Wake::Timer => {
                        if closing {
                            tracing::debug!(target: "wsbus::frames", socket = %self.info().id, "no close reply in time");
                            conn.handle_eof();
                            break;
                        }
                        if let Some(guard) = self.guard.as_deref_mut() {
                            let now = Instant::now();
                            if guard.token_expired(now) {
                                guard.violated = true;
                                tracing::info!(target: "wsbus::auth", socket = %self.info().id, client = %self.client(), user = self.user(), path = %self.info().path, "token expired; closing with 1008");
                                let _ =
                                    conn.close(CloseCode::POLICY_VIOLATION, TOKEN_EXPIRED_REASON);
                                continue;
                            }
                            // Woken for an expiry that a refresh moved: the
                            // keepalive is not due yet.
                            if let Some(keepalive_at) = guard.keepalive_at
                                && now < keepalive_at
                            {
                                let deadline = guard.deadline(keepalive_at);
                                timer.as_mut().reset(deadline);
                                continue;
                            }
                        }
                        if ping_outstanding {
                            tracing::debug!(target: "wsbus::frames", socket = %self.info().id, "peer silent past keepalive timeout");
                            conn.handle_eof();
                            eof = true; // a dead peer gets no lingering close
                            break;
                        }
                        let _ = conn.ping(bytes::Bytes::new());
                        ping_outstanding = true;
                        // The peer was last heard from one interval before
                        // this deadline; it has until the keepalive timeout.
                        let settings = self.runtime().socket_settings();
                        let due = self
                            .guard
                            .as_ref()
                            .and_then(|g| g.keepalive_at)
                            .unwrap_or(timer.deadline());
                        let heard = due - settings.keepalive_interval;
                        let timeout_at = heard + settings.keepalive_timeout;
                        let deadline = self.timer_deadline(timeout_at);
                        timer.as_mut().reset(deadline);
                    }
                }
            }
            let tally = self.dispatch(&mut conn, &mut handler_failed);
            self.count(tally, 0, 0);
            let code = conn.close_status().unwrap_or(CloseCode::ABNORMAL);
            // Out of the hub before CLOSE, so that the handler sees the
            // groups without this socket; dropping the registration later
            // repeats nothing.
            self.registration.release();
            // Counted once out of the hub: a scrape that sees the close no
            // longer counts the socket as open.
            self.runtime().metrics().close(code);
            log_close(self.info(), code);
            self.emit(EventKind::Close(code), None, &mut 0);
            drop(conn);
            drop(rbuf);
            if !eof {
                let linger_for = self.runtime().socket_settings().linger;
                timer.as_mut().reset(Instant::now() + linger_for);
                linger(&mut transport, timer).await;
            }
        }
    }
}

/// What a socket's task waits for besides the hub and its timer.
#[derive(Clone, Copy)]
struct Waiting {
    /// Written bytes wait for a flush (TLS).
    flush_pending: bool,
    /// Read from the transport (not while too much waits to be written).
    reading: bool,
    /// Bytes the connection wants read (see `frame_bytes_wanted`).
    want: usize,
}

/// The next thing that wakes a socket's task: its outbox, the transport
/// (written, flushed or read) or its timer. A function rather than a
/// closure in the task, so that what the wait holds is stored once in the
/// task's state, not once more as the task's own locals.
fn next_wake<'a>(
    shared: &'a SocketShared,
    outgoing: &'a Outgoing,
    transport: &'a mut SocketIo,
    rbuf: &'a mut BytesMut,
    mut timer: Pin<&'a mut Sleep>,
    waiting: Waiting,
) -> impl Future<Output = Wake> + 'a {
    poll_fn(move |cx| {
        if shared.poll_outbox(cx).is_ready() {
            return Poll::Ready(Wake::Outbox);
        }
        if !outgoing.is_empty() {
            // The slices live only for this poll, not in the task's state:
            // an idle socket's future stays small.
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = outgoing.chunks_vectored(&mut slices);
            if let Poll::Ready(result) = transport.poll_write_vectored(cx, &slices[..n]) {
                return Poll::Ready(Wake::Wrote(result));
            }
        } else if waiting.flush_pending
            && let Poll::Ready(result) = transport.poll_flush(cx)
        {
            return Poll::Ready(Wake::Flushed(result));
        }
        if waiting.reading
            && let Poll::Ready(result) = transport.poll_read_buf(cx, rbuf, waiting.want)
        {
            return Poll::Ready(Wake::Read(result));
        }
        if Sleep::poll(timer.as_mut(), cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    })
}

/// An abnormal close is logged once, when the socket ends: a protocol or
/// policy code at info (something to look at: a broken client, a limit, a
/// schema, a slow consumer, a failed handler), 1006 at debug (a peer that
/// vanished is routine on mobile networks). Normal closes (1000, 1001, 1005)
/// are not logged.
fn log_close(info: &SocketInfo, code: CloseCode) {
    let user = info.user.as_ref().map_or("-", |u| u.login.as_str());
    match code.0 {
        1000 | 1001 | 1005 => {}
        1006 => {
            tracing::debug!(target: "wsbus::frames", socket = %info.id, path = %info.path, user, code = code.0, "socket closed abnormally")
        }
        _ => {
            tracing::info!(target: "wsbus::frames", socket = %info.id, path = %info.path, user, code = code.0, "socket closed abnormally")
        }
    }
}

/// Half-close, then drain the peer until it closes or `deadline` fires, before
/// dropping the socket (the socket's own timer, so no second one is made).
/// A function rather than an `async fn`, which would store its arguments
/// twice: this future is part of the socket task's state.
fn linger<'a, T: Transport>(
    transport: &'a mut T,
    mut deadline: Pin<&'a mut Sleep>,
) -> impl Future<Output = ()> + 'a {
    let mut shut_down = false;
    let mut scratch = BytesMut::new();
    poll_fn(move |cx| {
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !shut_down {
            match ready!(transport.poll_shutdown(cx)) {
                Ok(()) => shut_down = true,
                Err(_) => return Poll::Ready(()),
            }
        }
        loop {
            scratch.clear();
            match ready!(transport.poll_read_buf(cx, &mut scratch, 0)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use wsbus_proto::Limits;

    use super::*;
    use crate::echo::Echo;
    use crate::runtime::ServerConfig;

    /// The task of a socket is most of what an idle socket costs
    /// (ARCHITECTURE.md, "Memory per connection"); this guards its size.
    #[test]
    fn socket_task_state_stays_small() {
        let runtime = Runtime::new(ServerConfig::default());
        let registration = runtime.register_socket(None);
        let task = SocketTask {
            app: Arc::new(Echo),
            data: (),
            registration,
            guard: None,
        };
        let conn = Connection::server(Limits::default());
        eprintln!("Connection: {} bytes", std::mem::size_of_val(&conn));
        let future = task.run(conn, hyper::upgrade::on(http::Request::new(())));
        let size = std::mem::size_of_val(&future);
        eprintln!("socket task future: {size} bytes");
        // The bound is the design's budget, not today's exact figure (a
        // compiler's layout change moves that by a few bytes): tokio's task
        // cell is the future plus the task tracker's token (8), tokio's
        // header, scheduler handle, task id, stage tag and trailer (104),
        // rounded up to a multiple of 128 (cache-line alignment on x86-64).
        // Up to 528 bytes the cell is 640; at 529 it jumps to 768 for every
        // idle socket (the `idle_heap` test counts the real allocation).
        // Growth past it means a new field in every socket's state: put it
        // behind a Box (like the session binding) or in the hub entry
        // instead (like the `SocketInfo`).
        assert!(size <= 528, "the socket task's state grew to {size} bytes");
        // A task dropped before it ever ran (aborted) leaves the hub too.
        assert_eq!(runtime.hub().len(), 1);
        drop(future);
        assert!(runtime.hub().is_empty());
    }

    /// The `session_access` throttle on tokio's paused clock: one refresh
    /// per window, however many messages arrive in it.
    #[tokio::test(start_paused = true)]
    async fn session_refresh_is_throttled_per_window() {
        let window = Duration::from_secs(60);
        let mut refresh = SessionRefresh::new(window);
        assert!(refresh.due(Instant::now()), "the first message refreshes");
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(5)).await;
            assert!(!refresh.due(Instant::now()));
        }
        tokio::time::advance(Duration::from_secs(10)).await; // 60 s since the first
        assert!(refresh.due(Instant::now()));
        assert!(!refresh.due(Instant::now()), "a new window started");
        let mut every = SessionRefresh::new(Duration::ZERO);
        assert!(every.due(Instant::now()) && every.due(Instant::now()));
    }
}
