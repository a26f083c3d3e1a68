//! One task per socket: drives a [`Connection`] over a [`Transport`] — the
//! tokio side of the sans-IO contract written on `wsbus_proto::Connection`.
//!
//! The task sleeps until the transport is readable or writable, the hub
//! queued something for it, a timer fired, or the server is shutting down.
//! The read buffer is released whenever it holds no partial frame and the
//! write queue once flushed, so an idle plain-TCP socket holds neither.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use wsbus_proto::{CloseCode, Connection, Event, State};

use crate::app::{EventKind, SocketInfo, WebSocketApp, WsEvent};
use crate::hub::{Hub, Outbound, SocketShared};
use crate::session::{SessionId, Sessions};
use crate::transport::Transport;

/// Most buffers handed to one `writev`. Linux accepts 1024; 64 covers a
/// burst of queued frames while keeping the slice array on the stack.
const MAX_IOVECS: usize = 64;

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

/// The HTTP session a socket is bound to.
pub(crate) struct SessionLink {
    pub sessions: Arc<Sessions>,
    pub id: SessionId,
    pub access: bool,
    pub throttle: Duration,
}

/// Everything a socket task needs besides its transport.
pub(crate) struct SocketTask<A: WebSocketApp> {
    pub app: Arc<A>,
    pub data: A::Data,
    pub info: SocketInfo,
    pub shared: Arc<SocketShared>,
    pub hub: Hub,
    pub settings: Arc<SocketSettings>,
    pub session: Option<SessionLink>,
    pub shutdown: CancellationToken,
}

enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Outbox,
    Timer,
    Shutdown,
}

impl<A: WebSocketApp> SocketTask<A> {
    fn emit(&self, kind: EventKind, conn: Option<&mut Connection>) {
        self.app
            .on_event(WsEvent::new(kind, &self.info, &self.data, &self.hub, conn));
    }

    fn dispatch(&self, conn: &mut Connection, last_refresh: &mut Option<Instant>) {
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Message(message) => {
                    self.refresh_session(last_refresh);
                    self.emit(EventKind::Message(message), Some(conn));
                }
                Event::Error(err) => {
                    tracing::debug!(target: "wsbus::frames", id = self.info.id, %err, "protocol error");
                    self.emit(EventKind::Error(err.to_string()), Some(conn));
                }
                Event::Ping(_) | Event::Pong(_) | Event::Close(_) => {}
            }
        }
    }

    /// `session_access`: inbound messages refresh the HTTP session, at most
    /// once per throttle window.
    fn refresh_session(&self, last_refresh: &mut Option<Instant>) {
        let Some(link) = self.session.as_ref().filter(|l| l.access) else {
            return;
        };
        let now = Instant::now();
        if last_refresh.is_none_or(|at| now.duration_since(at) >= link.throttle) {
            link.sessions.touch(&link.id);
            *last_refresh = Some(now);
        }
    }

    fn apply_outbound(&self, conn: &mut Connection, item: Outbound) {
        match item {
            Outbound::Message(prepared) => {
                if conn.outgoing().len() >= self.settings.max_outbound_bytes {
                    match self.settings.slow_consumer {
                        SlowConsumerPolicy::Close => {
                            if conn.state() == State::Open {
                                tracing::info!(target: "wsbus::frames", id = self.info.id, "slow consumer closed");
                                let _ = conn.close_discarding_queue(
                                    CloseCode::POLICY_VIOLATION,
                                    "slow consumer",
                                );
                            }
                        }
                        SlowConsumerPolicy::Drop => {}
                    }
                    return;
                }
                // A send to a closing socket is dropped: nothing may follow a
                // close frame (RFC 6455 §5.5.1).
                let _ = conn.send_prepared(&prepared);
            }
            Outbound::Close(code, reason) => {
                let _ = conn.close(code, &reason);
            }
        }
    }

    /// Run the socket until it closes; returns the close code reported.
    pub(crate) async fn run<T: Transport>(
        self,
        mut transport: T,
        mut conn: Connection,
        mut rbuf: BytesMut,
    ) -> CloseCode {
        let settings = self.settings.clone();
        let mut last_refresh = None;
        let mut last_seen = Instant::now();
        let mut ping_outstanding = false;
        let mut close_deadline: Option<Instant> = None;
        let mut flush_pending = false;
        let mut eof = false;
        let mut shutting_down = false;
        let mut timer = pin!(tokio::time::sleep(settings.keepalive_interval));
        let mut cancelled = pin!(self.shutdown.cancelled());

        self.emit(EventKind::Open, Some(&mut conn));
        loop {
            while conn.handle_read(&mut rbuf) {
                self.dispatch(&mut conn, &mut last_refresh);
            }
            self.dispatch(&mut conn, &mut last_refresh);
            for item in self.shared.drain() {
                self.apply_outbound(&mut conn, item);
            }
            if eof || conn.state() == State::Closed && conn.outgoing().is_empty() && !flush_pending
            {
                break;
            }
            if conn.state() != State::Open && close_deadline.is_none() {
                close_deadline = Some(Instant::now() + settings.close_timeout);
            }
            let deadline = match close_deadline {
                Some(deadline) => deadline,
                None if ping_outstanding => last_seen + settings.keepalive_timeout,
                None => last_seen + settings.keepalive_interval,
            };
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let reading =
                conn.outgoing().len() < PAUSE_READING_ABOVE && conn.state() != State::Closed;
            let wake = {
                let outgoing = &*conn.outgoing();
                let mut notified = pin!(self.shared.wake.notified());
                poll_fn(|cx| {
                    if !shutting_down && cancelled.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Shutdown);
                    }
                    if notified.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Outbox);
                    }
                    if !outgoing.is_empty() {
                        // The slices live only for this poll, not in the
                        // task's state: an idle socket's future stays small.
                        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                        let n = outgoing.chunks_vectored(&mut slices);
                        if let Poll::Ready(result) = transport.poll_write_vectored(cx, &slices[..n])
                        {
                            return Poll::Ready(Wake::Wrote(result));
                        }
                    } else if flush_pending && let Poll::Ready(result) = transport.poll_flush(cx) {
                        return Poll::Ready(Wake::Flushed(result));
                    }
                    if reading && let Poll::Ready(result) = transport.poll_read_buf(cx, &mut rbuf) {
                        return Poll::Ready(Wake::Read(result));
                    }
                    if Sleep::poll(timer.as_mut(), cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                    Poll::Pending
                })
                .await
            };
            match wake {
                Wake::Read(Ok(0))
                | Wake::Read(Err(_))
                | Wake::Wrote(Err(_))
                | Wake::Flushed(Err(_)) => {
                    conn.handle_eof();
                    eof = true;
                }
                Wake::Read(Ok(_)) => {
                    last_seen = Instant::now();
                    ping_outstanding = false;
                    while conn.handle_read(&mut rbuf) {
                        self.dispatch(&mut conn, &mut last_refresh);
                    }
                    if rbuf.is_empty() {
                        rbuf = BytesMut::new(); // idle sockets hold no read buffer
                    }
                }
                Wake::Wrote(Ok(0)) => {
                    conn.handle_eof();
                    eof = true;
                }
                Wake::Wrote(Ok(written)) => {
                    conn.outgoing().advance(written);
                    flush_pending = true;
                }
                Wake::Flushed(Ok(())) => flush_pending = false,
                Wake::Outbox => {}
                Wake::Shutdown => {
                    shutting_down = true;
                    let _ = conn.close(CloseCode::GOING_AWAY, "server shutting down");
                }
                Wake::Timer => {
                    if close_deadline.is_some() {
                        tracing::debug!(target: "wsbus::frames", id = self.info.id, "no close reply in time");
                        conn.handle_eof();
                        break;
                    }
                    if ping_outstanding {
                        tracing::debug!(target: "wsbus::frames", id = self.info.id, "peer silent past keepalive timeout");
                        conn.handle_eof();
                        eof = true; // a dead peer gets no lingering close
                        break;
                    }
                    let _ = conn.ping(bytes::Bytes::new());
                    ping_outstanding = true;
                }
            }
        }
        self.dispatch(&mut conn, &mut last_refresh);
        let code = conn.close_status().unwrap_or(CloseCode::ABNORMAL);
        self.hub.unregister(self.info.id);
        if let Some(link) = &self.session {
            link.sessions.unbind(&link.id, self.info.id);
        }
        self.emit(EventKind::Close(code), None);
        if !eof {
            linger(&mut transport, settings.linger).await;
        }
        code
    }
}

/// Half-close, then drain the peer for a while before dropping the socket.
pub(crate) async fn linger<T: Transport>(transport: &mut T, timeout: Duration) {
    let drain = async {
        if poll_fn(|cx| transport.poll_shutdown(cx)).await.is_err() {
            return;
        }
        let mut scratch = BytesMut::new();
        loop {
            scratch.clear();
            match poll_fn(|cx| transport.poll_read_buf(cx, &mut scratch)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(timeout, drain).await;
}
