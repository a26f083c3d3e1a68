//! Byte transports a socket task drives: plain TCP, and anything that is
//! `AsyncRead + AsyncWrite` (TLS, a hyper upgrade that could not be unwrapped).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Bytes asked of the kernel per read. 16 KiB holds a burst of small frames
/// in one syscall without making a large allocation per readable socket.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// A duplex byte stream, polled by the socket task.
pub(crate) trait Transport: Send + Unpin + 'static {
    /// Read into `buf`; `Ok(0)` is end of stream.
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
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
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            buf.reserve(READ_CHUNK);
            match self.try_read_buf(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // the kernel has it
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

/// Any async stream (TLS). It keeps its own buffers, and so does the read
/// buffer here while waiting.
#[derive(Debug)]
pub(crate) struct Stream<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for Stream<T> {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        buf.reserve(READ_CHUNK);
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

/// Read once into `buf` (allocating only when data is ready, for TCP).
pub(crate) async fn read_buf<T: Transport>(
    transport: &mut T,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| transport.poll_read_buf(cx, buf)).await
}

/// Write everything the connection has queued, with vectored writes.
pub(crate) async fn write_queued<T: Transport>(
    transport: &mut T,
    conn: &mut wsbus_proto::Connection,
) -> io::Result<()> {
    /// Slices per `writev`; see the driver.
    const MAX_IOVECS: usize = 64;
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
