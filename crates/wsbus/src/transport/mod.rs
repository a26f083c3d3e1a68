//! Byte transports a socket task drives: plain TCP, TLS ([`tls`]), and
//! anything that is `AsyncRead + AsyncWrite` (a hyper upgrade that could not
//! be unwrapped).

pub(crate) mod tls;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::tls::TlsSocket;

/// Bytes asked of the kernel per read. 16 KiB holds a burst of small frames
/// in one syscall without making a large allocation per readable socket.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// The most a read reserves for a frame in progress
/// (`Connection::frame_bytes_wanted`): a 64 KiB frame is read in one
/// syscall instead of four, into a buffer allocated once; a larger frame
/// grows its buffer in steps of this size (amortised by `BytesMut`'s
/// doubling) rather than of `READ_CHUNK`.
pub(crate) const MAX_READ_RESERVE: usize = 1 << 20;

/// Most buffers handed to one `writev`. Linux accepts 1024; 64 covers a
/// burst of queued frames while keeping the slice array on the stack.
pub(crate) const MAX_IOVECS: usize = 64;

/// What to reserve before a read, given the bytes the frame in progress
/// still wants.
fn read_reserve(want: usize) -> usize {
    want.clamp(READ_CHUNK, MAX_READ_RESERVE)
}

/// A duplex byte stream, polled by the socket task.
pub(crate) trait Transport: Send + Unpin + 'static {
    /// Read into `buf`; `Ok(0)` is end of stream. `want`: the bytes the
    /// frame in progress still needs (0 if none), reserved up to
    /// [`MAX_READ_RESERVE`].
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>>;
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    /// Push out what the transport itself buffers (TLS records).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Send FIN (after flushing what the transport buffers).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Plain TCP waits for readiness before allocating: an idle socket holds no
/// read buffer.
impl Transport for TcpStream {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_read_ready(cx))?;
        buf.reserve(read_reserve(want));
        // Through `AsyncRead` rather than `try_read_buf`: after a short read
        // tokio marks the socket not-ready, so the next poll waits for epoll
        // instead of spending a read syscall on EAGAIN (40% of the reads of
        // an echo load were that).
        let result = tokio_util::io::poll_read_buf(Pin::new(&mut *self), cx, buf);
        if result.is_pending() && buf.is_empty() {
            // The readiness was stale: wait for the next without a buffer.
            *buf = BytesMut::new();
        }
        result
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One slice (a lone reply, the common case of request/response
        // traffic): send(2) rather than writev(2), which imports an iovec
        // and goes through the VFS layer first.
        if let [only] = bufs {
            return Pin::new(self).poll_write(cx, only);
        }
        Pin::new(self).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // the kernel has it
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

/// Any async stream (a hyper upgrade that could not be unwrapped). It keeps
/// its own buffers, and so does the read buffer here while waiting.
#[derive(Debug)]
pub(crate) struct Stream<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for Stream<T> {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        buf.reserve(read_reserve(want));
        tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// What a server socket runs over once hyper hands the connection back.
#[derive(Debug)]
pub(crate) enum SocketIo {
    /// Plain TCP, unwrapped from hyper's upgrade: readiness first, so an
    /// idle socket holds no read buffer.
    Tcp(TcpStream),
    /// TLS from `Server::tls`, unwrapped the same way: its buffers, too,
    /// exist only while bytes are in them. Boxed: a rustls connection is
    /// large, and plain sockets should not pay for its size.
    Tls(Box<TlsSocket>),
    /// Anything else hyper upgraded, driven as a stream.
    Upgraded(Box<Stream<TokioIo<Upgraded>>>),
}

impl SocketIo {
    /// Wait for hyper to hand over an upgraded connection; returns it with
    /// the bytes the client sent after its request, or `None` if the upgrade
    /// failed.
    pub(crate) async fn from_upgrade(upgrade: OnUpgrade) -> Option<(SocketIo, BytesMut)> {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(target: "wsbus::handshake", %err, "upgrade failed");
                return None;
            }
        };
        // `read_buf` is a view of hyper's whole read buffer (8 KiB): copy
        // what the client sent early and let the buffer go.
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let early = BytesMut::from(&parts.read_buf[..]);
                return Some((SocketIo::Tcp(parts.io.into_inner()), early));
            }
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<TlsSocket>>() {
            Ok(parts) => {
                let early = BytesMut::from(&parts.read_buf[..]);
                Some((SocketIo::Tls(Box::new(parts.io.into_inner())), early))
            }
            Err(upgraded) => Some((
                SocketIo::Upgraded(Box::new(Stream(TokioIo::new(upgraded)))),
                BytesMut::new(),
            )),
        }
    }
}

impl Transport for SocketIo {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            SocketIo::Tcp(tcp) => tcp.poll_read_buf(cx, buf, want),
            SocketIo::Tls(tls) => tls.poll_read_buf(cx, buf, want),
            SocketIo::Upgraded(stream) => stream.poll_read_buf(cx, buf, want),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            SocketIo::Tcp(tcp) => Transport::poll_write_vectored(tcp, cx, bufs),
            SocketIo::Tls(tls) => Transport::poll_write_vectored(&mut **tls, cx, bufs),
            SocketIo::Upgraded(stream) => stream.poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SocketIo::Tcp(tcp) => Transport::poll_flush(tcp, cx),
            SocketIo::Tls(tls) => Transport::poll_flush(&mut **tls, cx),
            SocketIo::Upgraded(stream) => stream.poll_flush(cx),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            SocketIo::Tcp(tcp) => Transport::poll_shutdown(tcp, cx),
            SocketIo::Tls(tls) => Transport::poll_shutdown(&mut **tls, cx),
            SocketIo::Upgraded(stream) => stream.poll_shutdown(cx),
        }
    }
}

/// Read once into `buf` (allocating only when data is ready, for TCP).
pub(crate) async fn read_buf<T: Transport>(
    transport: &mut T,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| transport.poll_read_buf(cx, buf, want)).await
}

/// Write everything the connection has queued, with vectored writes.
pub(crate) async fn write_queued<T: Transport>(
    transport: &mut T,
    conn: &mut wsbus_proto::Connection,
) -> io::Result<()> {
    while !conn.outgoing().is_empty() {
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = conn.outgoing().chunks_vectored(&mut slices);
            std::future::poll_fn(|cx| transport.poll_write_vectored(cx, &slices[..n])).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        conn.outgoing().advance(written);
    }
    std::future::poll_fn(|cx| transport.poll_flush(cx)).await
}
