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
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use hyper::upgrade::OnUpgrade;
use tokio::time::{Instant, Sleep};
use wsbus_proto::{CloseCode, Connection, Event, State};

use crate::app::{EventKind, SocketInfo, WebSocketApp, WsEvent};
use crate::hub::{Outbound, SocketShared};
use crate::runtime::Runtime;
use crate::session::SessionId;
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
    pub id: SessionId,
    pub access: bool,
    pub throttle: Duration,
    /// When an inbound message last refreshed the session.
    pub last_refresh: Option<Instant>,
}

/// Everything a socket task needs besides its transport.
pub(crate) struct SocketTask<A: WebSocketApp> {
    pub app: Arc<A>,
    pub data: A::Data,
    pub info: SocketInfo,
    pub shared: Arc<SocketShared>,
    /// The hub, the sessions and the socket settings.
    pub runtime: Runtime,
    /// Boxed: most sockets have none.
    pub session: Option<Box<SessionLink>>,
}

enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Outbox,
    Timer,
}

impl<A: WebSocketApp> SocketTask<A> {
    fn emit(&self, kind: EventKind, conn: Option<&mut Connection>) {
        self.app.on_event(WsEvent::new(
            kind,
            &self.info,
            &self.data,
            self.runtime.hub(),
            conn,
        ));
    }

    fn dispatch(&mut self, conn: &mut Connection) {
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Message(message) => {
                    self.refresh_session();
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
    fn refresh_session(&mut self) {
        let Some(link) = self.session.as_mut().filter(|l| l.access) else {
            return;
        };
        let now = Instant::now();
        if link
            .last_refresh
            .is_none_or(|at| now.duration_since(at) >= link.throttle)
        {
            self.runtime.sessions().touch(&link.id);
            link.last_refresh = Some(now);
        }
    }

    fn apply_outbound(&self, conn: &mut Connection, item: Outbound) {
        match item {
            Outbound::Message(prepared) => {
                if conn.outgoing().len() >= self.runtime.socket_settings().max_outbound_bytes {
                    match self.runtime.socket_settings().slow_consumer {
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
            let Some((mut transport, mut rbuf)) = SocketIo::from_upgrade(upgrade).await else {
                self.runtime.hub().unregister(self.info.id);
                if let Some(link) = &self.session {
                    self.runtime.sessions().unbind(&link.id, self.info.id);
                }
                return;
            };
            // The timer: while open, the keepalive deadline (reset when the
            // peer is heard from: no `last_seen` is kept, the deadline says
            // it); once closing, the close deadline.
            let mut ping_outstanding = false;
            let mut closing = false;
            let mut flush_pending = false;
            let mut eof = false;
            let keepalive = self.runtime.socket_settings().keepalive_interval;
            let mut timer = pin!(tokio::time::sleep(keepalive));

            self.emit(EventKind::Open, Some(&mut conn));
            loop {
                while conn.handle_read(&mut rbuf) {
                    self.dispatch(&mut conn);
                }
                self.dispatch(&mut conn);
                for item in self.shared.drain() {
                    self.apply_outbound(&mut conn, item);
                }
                if eof
                    || conn.state() == State::Closed && conn.outgoing().is_empty() && !flush_pending
                {
                    break;
                }
                if conn.state() != State::Open && !closing {
                    closing = true;
                    let close_timeout = self.runtime.socket_settings().close_timeout;
                    timer.as_mut().reset(Instant::now() + close_timeout);
                }
                let reading =
                    conn.outgoing().len() < PAUSE_READING_ABOVE && conn.state() != State::Closed;
                let want = conn.frame_bytes_wanted(rbuf.len());
                let wake = {
                    let outgoing = &*conn.outgoing();
                    poll_fn(|cx| {
                        if self.shared.poll_outbox(cx).is_ready() {
                            return Poll::Ready(Wake::Outbox);
                        }
                        if !outgoing.is_empty() {
                            // The slices live only for this poll, not in the
                            // task's state: an idle socket's future stays small.
                            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                            let n = outgoing.chunks_vectored(&mut slices);
                            if let Poll::Ready(result) =
                                transport.poll_write_vectored(cx, &slices[..n])
                            {
                                return Poll::Ready(Wake::Wrote(result));
                            }
                        } else if flush_pending
                            && let Poll::Ready(result) = transport.poll_flush(cx)
                        {
                            return Poll::Ready(Wake::Flushed(result));
                        }
                        if reading
                            && let Poll::Ready(result) =
                                transport.poll_read_buf(cx, &mut rbuf, want)
                        {
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
                        ping_outstanding = false;
                        if !closing {
                            let interval = self.runtime.socket_settings().keepalive_interval;
                            timer.as_mut().reset(Instant::now() + interval);
                        }
                        while conn.handle_read(&mut rbuf) {
                            self.dispatch(&mut conn);
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
                    Wake::Timer => {
                        if closing {
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
                        // The peer was last heard from one interval before
                        // this deadline; it has until the keepalive timeout.
                        let settings = self.runtime.socket_settings();
                        let heard = timer.deadline() - settings.keepalive_interval;
                        timer.as_mut().reset(heard + settings.keepalive_timeout);
                    }
                }
            }
            self.dispatch(&mut conn);
            let code = conn.close_status().unwrap_or(CloseCode::ABNORMAL);
            self.runtime.hub().unregister(self.info.id);
            if let Some(link) = &self.session {
                self.runtime.sessions().unbind(&link.id, self.info.id);
            }
            self.emit(EventKind::Close(code), None);
            drop(conn);
            drop(rbuf);
            if !eof {
                let linger_for = self.runtime.socket_settings().linger;
                timer.as_mut().reset(Instant::now() + linger_for);
                linger(&mut transport, timer).await;
            }
        }
    }
}

/// Half-close, then drain the peer until it closes or `deadline` fires, before
/// dropping the socket (the socket's own timer, so no second one is made).
async fn linger<T: Transport>(transport: &mut T, mut deadline: Pin<&mut Sleep>) {
    let mut shut_down = false;
    let mut scratch = BytesMut::new();
    poll_fn(|cx| {
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
    .await
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
        let (id, shared) = runtime.hub().register();
        let task = SocketTask {
            app: Arc::new(Echo),
            data: (),
            info: SocketInfo {
                id,
                path: "/".into(),
                params: Default::default(),
                user: None,
            },
            shared,
            runtime: runtime.clone(),
            session: None,
        };
        let conn = Connection::server(Limits::default());
        eprintln!("Connection: {} bytes", std::mem::size_of_val(&conn));
        let future = task.run(conn, hyper::upgrade::on(http::Request::new(())));
        let size = std::mem::size_of_val(&future);
        eprintln!("socket task future: {size} bytes");
        // With tokio's header and trailer and the task tracker's token this
        // fills a 768-byte task cell (cells are multiples of 128 bytes on
        // x86-64): a few bytes more and every socket costs 128 more.
        assert!(size <= 656, "the socket task's state grew to {size} bytes");
    }
}
