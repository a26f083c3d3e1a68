//! Drives a [`Connection`] over a TCP stream: the tokio side of the sans-IO
//! contract written on `wsbus_proto::Connection`.
//!
//! The task waits for readiness rather than holding buffers: the read buffer
//! is allocated when the socket is readable and released when it holds no
//! partial frame, and the write queue is released once flushed, so an idle
//! connection holds neither.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wsbus_proto::{CloseCode, Connection, Event, State};

use crate::handler::{Handler, Socket};
use crate::hub::{Hub, Outbound, SocketId, SocketShared};

/// Bytes asked of the kernel per read. 16 KiB holds a burst of small frames
/// in one syscall without making a large allocation per readable socket.
const READ_CHUNK: usize = 16 * 1024;

/// Most buffers handed to one `writev`. Linux accepts 1024; 64 covers a
/// burst of queued frames while keeping the slice array on the stack.
const MAX_IOVECS: usize = 64;

/// While this many bytes wait to be written the task stops reading, so a peer
/// that sends without reading cannot make us queue its echoes without bound.
const PAUSE_READING_ABOVE: usize = 4 << 20;

/// Timings of the closing handshake.
#[derive(Clone, Copy, Debug)]
pub struct CloseTimeouts {
    /// How long we wait for the peer's close frame after sending ours.
    pub close_handshake: Duration,
    /// After the handshake the server half-closes TCP and drains what the
    /// peer still sends for at most this long before closing, so that unread
    /// bytes do not turn our FIN into a RST that could destroy the close frame
    /// in flight (the "lingering close" of HTTP servers).
    pub linger: Duration,
}

impl Default for CloseTimeouts {
    fn default() -> Self {
        CloseTimeouts {
            close_handshake: Duration::from_secs(5),
            linger: Duration::from_secs(2),
        }
    }
}

enum Ready {
    Read,
    Write,
    Outbox,
    Timeout,
}

/// What a server socket's task needs besides its transport and connection.
pub(crate) struct SocketSetup {
    pub id: SocketId,
    /// The request target the socket was opened on.
    pub path: String,
    pub shared: Arc<SocketShared>,
    pub hub: Hub,
    pub handler: Arc<dyn Handler>,
    pub timeouts: CloseTimeouts,
}

/// Run one server-side socket until it closes; returns the close code reported
/// to the handler. `rbuf` holds bytes that arrived after the handshake.
pub(crate) async fn run_socket(
    stream: TcpStream,
    mut conn: Connection,
    mut rbuf: BytesMut,
    setup: SocketSetup,
) -> CloseCode {
    let SocketSetup {
        id,
        path,
        shared,
        hub,
        handler,
        timeouts,
    } = setup;
    let mut socket = Socket::new(id, path, hub.clone());
    handler.on_open(&mut socket.with(&mut conn));
    let mut close_deadline = None;
    let mut eof = false;
    loop {
        while conn.handle_read(&mut rbuf) {
            dispatch(&mut conn, &mut socket, &*handler);
        }
        dispatch(&mut conn, &mut socket, &*handler);
        for item in shared.drain() {
            apply_outbound(&mut conn, item);
        }
        if let Err(err) = flush(&stream, &mut conn) {
            tracing::debug!(target: "wsbus::frames", id, %err, "write failed");
            conn.handle_eof();
            break;
        }
        if eof || conn.state() == State::Closed && conn.outgoing().is_empty() {
            break;
        }
        if conn.state() == State::Closing && close_deadline.is_none() {
            close_deadline = Some(tokio::time::Instant::now() + timeouts.close_handshake);
        }
        let reading = conn.outgoing().len() < PAUSE_READING_ABOVE && conn.state() != State::Closed;
        let writing = !conn.outgoing().is_empty();
        let ready = tokio::select! {
            r = stream.readable(), if reading => r.map(|()| Ready::Read),
            r = stream.writable(), if writing => r.map(|()| Ready::Write),
            () = shared.wake.notified() => Ok(Ready::Outbox),
            () = sleep_until(close_deadline) => Ok(Ready::Timeout),
        };
        match ready {
            Ok(Ready::Read) => match read_some(&stream, &mut rbuf) {
                Ok(0) => {
                    conn.handle_eof();
                    eof = true;
                }
                Ok(_) => {
                    while conn.handle_read(&mut rbuf) {
                        dispatch(&mut conn, &mut socket, &*handler);
                    }
                    if rbuf.is_empty() {
                        rbuf = BytesMut::new(); // idle sockets hold no read buffer
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    conn.handle_eof();
                    eof = true;
                }
            },
            Ok(Ready::Write | Ready::Outbox) => {}
            Ok(Ready::Timeout) => {
                tracing::debug!(target: "wsbus::frames", id, "peer did not answer our close");
                conn.handle_eof();
                break;
            }
            Err(_) => {
                conn.handle_eof();
                break;
            }
        }
    }
    dispatch(&mut conn, &mut socket, &*handler);
    let code = conn.close_status().unwrap_or(CloseCode::ABNORMAL);
    hub.unregister(id);
    handler.on_close(&socket, code);
    if !eof {
        linger(stream, timeouts.linger).await;
    }
    code
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn dispatch(conn: &mut Connection, socket: &mut Socket, handler: &dyn Handler) {
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Message(message) => handler.on_message(&mut socket.with(conn), message),
            Event::Error(err) => {
                tracing::debug!(target: "wsbus::frames", id = socket.id(), %err, "protocol error");
                handler.on_error(&mut socket.with(conn), &err);
            }
            Event::Ping(_) | Event::Pong(_) | Event::Close(_) => {}
        }
    }
}

fn apply_outbound(conn: &mut Connection, item: Outbound) {
    // A send after the socket started closing is dropped: nothing may follow
    // a close frame (RFC 6455 §5.5.1).
    let _ = match item {
        Outbound::Message(prepared) => conn.send_prepared(&prepared),
        Outbound::Close(code, reason) => conn.close(code, &reason),
    };
}

/// Read what the kernel has into `rbuf`, allocating only now.
pub(crate) fn read_some(stream: &TcpStream, rbuf: &mut BytesMut) -> io::Result<usize> {
    rbuf.reserve(READ_CHUNK);
    stream.try_read_buf(rbuf)
}

/// Write queued frames until the queue is empty or the socket would block.
pub(crate) fn flush(stream: &TcpStream, conn: &mut Connection) -> io::Result<()> {
    while !conn.outgoing().is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = conn.outgoing().chunks_vectored(&mut slices);
        match stream.try_write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => conn.outgoing().advance(written),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Half-close, then drain the peer for a while before dropping the socket.
pub(crate) async fn linger(mut stream: TcpStream, timeout: Duration) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut scratch = BytesMut::new();
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            scratch.clear();
            match read_some(&stream, &mut scratch) {
                Ok(0) => return,
                Err(err) if err.kind() != io::ErrorKind::WouldBlock => return,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(timeout, drain).await;
}
