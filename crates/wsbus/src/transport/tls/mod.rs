//! TLS for the server on rustls's unbuffered API: the record buffers are
//! ours, so an idle wss socket holds none.
//!
//! rustls's buffered `ServerConnection` keeps a record buffer of its own
//! (4 KiB once a record has been read, never released) on top of the caller's
//! buffers. With [`UnbufferedServerConnection`] the caller owns both
//! directions' ciphertext: [`TlsSocket`] allocates them when bytes arrive or
//! leave and drops them once they are empty, as the plain TCP path does with
//! its read buffer. What an idle connection keeps is rustls's state (the
//! traffic keys and the handshake's leftovers) and the socket.
//!
//! Once a TLS 1.3 handshake is over, rustls hands the traffic secrets over
//! and the records are protected by wsbus ([`tls13`]): an idle
//! connection then keeps its keys as bytes, not as expanded cipher state.
//! TLS 1.2 connections stay on rustls's record layer throughout.
//!
//! The same type serves the whole connection: the handshake ([`accept`]),
//! hyper's HTTP/1 exchange (`AsyncRead`/`AsyncWrite`), and, unwrapped from
//! hyper's upgrade, the WebSocket ([`Transport`]).
//!
//! The driving contract of the unbuffered API (`rustls::unbuffered`):
//! `process_tls_records` is given the ciphertext received and not yet
//! consumed; the state it returns is handled before it is called again, and
//! then the `discard` it reported is removed from the front of that buffer.
//! Every call here passes the real incoming buffer (never an empty stand-in),
//! so the handshake deframer's view of it stays true.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ProtocolVersion;
use tokio_rustls::rustls::server::{
    ServerConfig, ServerConnectionData, UnbufferedServerConnection,
};
use tokio_rustls::rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, ReadTraffic,
    UnbufferedStatus, WriteTraffic,
};

mod tls13;

use self::tls13::{Opened, Records};
use super::{READ_CHUNK, Transport, read_reserve};

/// Largest TLS record on the wire (RFC 8446 §5.2: 2^14 bytes of plaintext,
/// at most 256 bytes of expansion, 5 bytes of header). A read buffer of at
/// least this much always holds a whole record.
const MAX_RECORD_BYTES: usize = 5 + (1 << 14) + 256;

/// Plaintext encrypted per write: a burst of queued WebSocket frames becomes
/// as few records as possible, and the ciphertext kept for a socket that
/// cannot take it stays bounded by about this much.
const MAX_PLAINTEXT_PER_WRITE: usize = 64 * 1024;

/// Unsent ciphertext above which reading stops until it drains: twice what
/// one write may queue, so only answers the peer provokes and does not read
/// (KeyUpdates) ever reach it.
const MAX_UNSENT_WHILE_READING: usize = 2 * MAX_PLAINTEXT_PER_WRITE;

/// Ciphertext bytes a record adds to its plaintext (TLS 1.3 with an AEAD:
/// 5 header, 1 content type, 16 tag; TLS 1.2 AES-GCM: 5 + 8 nonce + 16 tag),
/// rounded up. Only sizes the first attempt: rustls says when more is needed.
const RECORD_OVERHEAD: usize = 32;

/// First guess at the room a handshake record needs (a certificate chain
/// may need more: rustls says so, and the buffer grows once).
const HANDSHAKE_ROOM: usize = 4096;

thread_local! {
    /// Where the small slices of a vectored write are gathered into one
    /// plaintext, so that a burst of frames is one record, not one per
    /// header and payload. Per worker thread, reused.
    static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn tls_error(err: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

fn failed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "TLS connection failed earlier")
}

/// `config` as [`accept`] needs it: with secret extraction on, so that a
/// TLS 1.3 connection's records can be protected by wsbus after the
/// handshake. Done once, when the server is configured.
pub(crate) fn server_config(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// Run the server side of a TLS handshake on `tcp`.
///
/// Resolves once the handshake is complete and its last flight is sent;
/// application data the client sent right behind its `Finished` is kept for
/// the first read. Not bounded in time: the caller puts a timeout around it.
/// With a `config` from [`server_config`], a TLS 1.3 connection continues on
/// wsbus's record layer once it has sent its first application data.
pub(crate) async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsSocket> {
    let hand_over = config.enable_secret_extraction;
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut socket = TlsSocket {
        tcp,
        conn: Session::Rustls(Box::new(conn)),
        hand_over,
        incoming: BytesMut::new(),
        outgoing: Vec::new(),
        sent: 0,
        plaintext: BytesMut::new(),
        peer_closed: false,
        close_notify_sent: false,
    };
    std::future::poll_fn(|cx| socket.poll_handshake(cx)).await?;
    Ok(socket)
}

/// Whose record layer protects the connection.
enum Session {
    /// The handshake, a TLS 1.3 connection until its first application data
    /// record is sealed, and a TLS 1.2 connection throughout.
    Rustls(Box<UnbufferedServerConnection>),
    /// A TLS 1.3 connection after that.
    Tls13(Box<Records>),
    /// Our record layer failed (and told the peer): nothing more is read or
    /// written (RFC 8446 §6.2).
    Failed,
}

/// A TLS server connection over TCP whose buffers are its own and exist only
/// while bytes are in them.
pub(crate) struct TlsSocket {
    tcp: TcpStream,
    conn: Session,
    /// A TLS 1.3 connection goes on to [`Records`] after its first write.
    hand_over: bool,
    /// Ciphertext received, not yet consumed by rustls: between reads, at
    /// most part of a record. Empty and unallocated while the socket waits.
    incoming: BytesMut,
    /// Ciphertext to send; `outgoing[sent..]` is still to go. Unallocated
    /// once sent.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted but not yet read: what arrived with the end of
    /// the handshake, or was left by a read smaller than a record (hyper's).
    plaintext: BytesMut,
    /// The peer's `close_notify` was processed: reads return end of stream.
    peer_closed: bool,
    close_notify_sent: bool,
}

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSocket")
            .field("tcp", &self.tcp)
            .field("incoming", &self.incoming.len())
            .field("outgoing", &(self.outgoing.len() - self.sent))
            .field("plaintext", &self.plaintext.len())
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

/// Where processing the received records left the connection.
enum Next {
    /// Every whole record is consumed: more ciphertext is needed.
    NeedRead,
    /// Both sides' `close_notify` are done: nothing more will come.
    Closed,
}

impl TlsSocket {
    /// Consume every whole record in `incoming`: application data is
    /// appended to `plaintext_out`, handshake messages and alerts rustls
    /// answers with are queued in `outgoing` (sent by the next
    /// [`poll_send`](Self::poll_send)).
    fn process(&mut self, plaintext_out: &mut BytesMut) -> io::Result<Next> {
        let next = match &mut self.conn {
            Session::Tls13(records) => {
                match records.open(&mut self.incoming, plaintext_out, &mut self.outgoing) {
                    Ok(Opened::NeedMore) => Ok(Next::NeedRead),
                    Ok(Opened::PeerClosed) => {
                        self.peer_closed = true;
                        Ok(Next::NeedRead)
                    }
                    Err(fatal) => {
                        if records.seal_fatal(&fatal, &mut self.outgoing) {
                            self.try_send_once();
                        }
                        self.conn = Session::Failed;
                        Err(fatal.into())
                    }
                }
            }
            Session::Failed => Err(failed()),
            Session::Rustls(conn) => loop {
                let UnbufferedStatus { discard, state } =
                    conn.process_tls_records(&mut self.incoming);
                let state = match state {
                    Ok(state) => state,
                    Err(err) => {
                        self.incoming.advance(discard);
                        // rustls has an alert for the peer: try once to
                        // send it without waiting.
                        if queue_alert(conn, &mut self.incoming, &mut self.outgoing) {
                            self.try_send_once();
                        }
                        break Err(tls_error(err));
                    }
                };
                let (discard, next) =
                    match common(state, &mut self.outgoing, &mut self.peer_closed)? {
                        Common::Handled => (discard, None),
                        Common::Read(read) => (discard + read_records(read, plaintext_out)?, None),
                        Common::Write(_) | Common::Blocked => (discard, Some(Next::NeedRead)),
                        Common::Closed => (discard, Some(Next::Closed)),
                    };
                self.incoming.advance(discard);
                if let Some(next) = next {
                    break Ok(next);
                }
            },
        };
        if self.incoming.is_empty() {
            // Every record consumed: hold no buffer until more comes.
            self.incoming = BytesMut::new();
        }
        next
    }

    fn is_handshaking(&self) -> bool {
        match &self.conn {
            Session::Rustls(conn) => conn.is_handshaking(),
            Session::Tls13(_) | Session::Failed => false,
        }
    }

    /// Send what `outgoing` holds (a fatal alert behind it) if the socket
    /// takes it now; the connection is about to fail, nothing waits.
    fn try_send_once(&mut self) {
        if let Ok(written) = self.tcp.try_write(&self.outgoing[self.sent..]) {
            self.sent += written;
        }
    }

    /// After the first application data record of a TLS 1.3 connection:
    /// continue on wsbus's record layer. rustls has sent everything it owed
    /// the peer by then: a `KeyUpdate` answering one that came with the
    /// client's `Finished` goes out ahead of the first record.
    fn hand_over_tls13(&mut self) -> io::Result<()> {
        self.hand_over = false;
        let placeholder = Session::Failed;
        match std::mem::replace(&mut self.conn, placeholder) {
            Session::Rustls(conn) if conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) => {
                self.conn = Session::Tls13(Box::new(Records::new(*conn, self.peer_closed)?));
            }
            other => self.conn = other,
        }
        Ok(())
    }

    /// Send `outgoing`; ready once all of it is with the kernel, and then
    /// the buffer is released.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let written =
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        if !self.outgoing.is_empty() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Read more ciphertext into `incoming`. `want`: plaintext bytes the
    /// reader's frame in progress still needs. Readiness first: a socket
    /// with nothing to read allocates nothing.
    fn poll_receive(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.incoming.is_empty() {
            ready!(self.tcp.poll_read_ready(cx))?;
        }
        // Room for the whole frame in progress, its records' overhead
        // included, and always for one whole record.
        let reserve = read_reserve(want).max(READ_CHUNK) + MAX_RECORD_BYTES - (1 << 14);
        self.incoming.reserve(reserve);
        let result = tokio_util::io::poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.incoming);
        if result.is_pending() && self.incoming.is_empty() {
            // Stale readiness: wait for the next without a buffer.
            self.incoming = BytesMut::new();
        }
        result
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut early = std::mem::take(&mut self.plaintext);
            let next = self.process(&mut early);
            self.plaintext = early;
            let next = next?;
            ready!(self.poll_send(cx))?;
            if !self.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if matches!(next, Next::Closed) || self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if ready!(self.poll_receive(cx, 0))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Encrypt up to [`MAX_PLAINTEXT_PER_WRITE`] bytes of `bufs` into
    /// `outgoing`; returns how many plaintext bytes were taken.
    fn encrypt(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.conn {
            _ if self.close_notify_sent => return Err(io::ErrorKind::BrokenPipe.into()),
            Session::Tls13(records) => {
                return Ok(records.seal(bufs, MAX_PLAINTEXT_PER_WRITE, &mut self.outgoing)?);
            }
            Session::Failed => return Err(failed()),
            Session::Rustls(_) => {}
        }
        let taken = self.encrypt_rustls(bufs)?;
        if self.hand_over && taken > 0 {
            self.hand_over_tls13()?;
        }
        Ok(taken)
    }

    fn encrypt_rustls(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with_write_traffic(|traffic, outgoing| {
            let mut encrypt = |plain: &[u8]| {
                // Exact for the records; a key update rustls owes the peer
                // goes first and may ask for more.
                let room = plain.len() + (plain.len() / (1 << 14) + 1) * RECORD_OVERHEAD;
                encode_into(outgoing, room, |out| traffic.encrypt(plain, out))
            };
            match bufs {
                [] => Ok(0),
                [first, ..] if first.len() >= MAX_PLAINTEXT_PER_WRITE || bufs.len() == 1 => {
                    let plain = &first[..first.len().min(MAX_PLAINTEXT_PER_WRITE)];
                    encrypt(plain).map(|()| plain.len())
                }
                _ => GATHER.with_borrow_mut(|gather| {
                    gather.clear();
                    for buf in bufs {
                        let room = MAX_PLAINTEXT_PER_WRITE - gather.len();
                        gather.extend_from_slice(&buf[..buf.len().min(room)]);
                        if gather.len() == MAX_PLAINTEXT_PER_WRITE {
                            break;
                        }
                    }
                    encrypt(gather).map(|()| gather.len())
                }),
            }
        })
    }

    /// Queue our `close_notify` (once).
    fn queue_close_notify(&mut self) -> io::Result<()> {
        if !self.close_notify_sent {
            match &mut self.conn {
                Session::Tls13(records) => records.seal_close_notify(&mut self.outgoing)?,
                Session::Rustls(_) => self.with_write_traffic(|traffic, outgoing| {
                    encode_into(outgoing, RECORD_OVERHEAD * 2, |out| {
                        traffic.queue_close_notify(out)
                    })
                })?,
                Session::Failed => return Err(failed()),
            }
            self.close_notify_sent = true;
        }
        Ok(())
    }

    /// Bring the connection to the state in which it encrypts, queueing
    /// what rustls wants sent first, and run `write` there. Records that
    /// arrived since the last read (a write does not wait for reads to be
    /// drained) are decrypted and kept for it.
    fn with_write_traffic<T>(
        &mut self,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<T>,
    ) -> io::Result<T> {
        let Session::Rustls(conn) = &mut self.conn else {
            unreachable!("only called on rustls's record layer");
        };
        loop {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(err) => {
                    self.incoming.advance(discard);
                    return Err(tls_error(err));
                }
            };
            match common(state, &mut self.outgoing, &mut self.peer_closed)? {
                Common::Handled => self.incoming.advance(discard),
                Common::Read(read) => {
                    let discard = discard + read_records(read, &mut self.plaintext)?;
                    self.incoming.advance(discard);
                }
                Common::Write(mut traffic) => {
                    let result = write(&mut traffic, &mut self.outgoing);
                    self.incoming.advance(discard);
                    return result;
                }
                Common::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                Common::Blocked => {
                    return Err(io::Error::other("TLS handshake not complete"));
                }
            }
        }
    }
}

/// After a fatal error rustls has an alert for the peer: queue it in
/// `outgoing`. Whether there is one to send.
fn queue_alert(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut BytesMut,
    outgoing: &mut Vec<u8>,
) -> bool {
    let UnbufferedStatus { state, .. } = conn.process_tls_records(incoming);
    match state {
        Ok(ConnectionState::EncodeTlsData(mut data)) => {
            encode_into(outgoing, HANDSHAKE_ROOM, |out| data.encode(out)).is_ok()
        }
        _ => false,
    }
}

/// A state of the unbuffered API, once [`common`] handled what every
/// caller handles alike.
enum Common<'c, 'i> {
    /// Handshake data queued in `outgoing`, or the peer's close noted: ask
    /// for the next state.
    Handled,
    Read(ReadTraffic<'c, 'i, ServerConnectionData>),
    Write(WriteTraffic<'c, ServerConnectionData>),
    /// More ciphertext is needed to finish the handshake.
    Blocked,
    Closed,
}

fn common<'c, 'i>(
    state: ConnectionState<'c, 'i, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> io::Result<Common<'c, 'i>> {
    Ok(match state {
        ConnectionState::ReadTraffic(read) => Common::Read(read),
        ConnectionState::WriteTraffic(write) => Common::Write(write),
        ConnectionState::EncodeTlsData(mut data) => {
            encode_into(outgoing, HANDSHAKE_ROOM, |out| data.encode(out))?;
            Common::Handled
        }
        // The encoded bytes are in `outgoing`, ahead of anything written
        // later: sending them is `poll_send`'s job.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Common::Handled
        }
        // Edge-triggered: reported once, remembered by the caller.
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Common::Handled
        }
        ConnectionState::BlockedHandshake => Common::Blocked,
        ConnectionState::Closed => Common::Closed,
        // Early data is off (`max_early_data_size` 0), and later states are
        // for features this server does not use.
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected TLS state {other:?}"),
            ));
        }
    })
}

/// Append every decrypted record to `out`; returns the bytes to discard
/// beyond the status's own.
fn read_records(
    mut read: ReadTraffic<'_, '_, ServerConnectionData>,
    out: &mut BytesMut,
) -> io::Result<usize> {
    let mut discard = 0;
    while let Some(record) = read.next_record() {
        let record = record.map_err(tls_error)?;
        discard += record.discard;
        out.extend_from_slice(record.payload);
    }
    Ok(discard)
}

/// Append what `encode` writes to `out`, with `room` bytes to start with
/// (zeroed: the API takes initialised memory), growing as rustls asks.
fn encode_into<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()>
where
    E: SizeError,
{
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(err) => match err.required_size() {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(tls_error(err));
                }
            },
        }
    }
}

/// The two error types of the unbuffered API's encoders, for `encode_into`.
trait SizeError: std::error::Error + Send + Sync + 'static {
    /// The room rustls asked for, if that was the error.
    fn required_size(&self) -> Option<usize>;
}

macro_rules! size_error {
    ($($error:ident),*) => {$(
        impl SizeError for $error {
            fn required_size(&self) -> Option<usize> {
                match self {
                    $error::InsufficientSize(InsufficientSizeError { required_size }) => {
                        Some(*required_size)
                    }
                    _ => None,
                }
            }
        }
    )*};
}

size_error!(EncodeError, EncryptError);

impl Transport for TlsSocket {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        if !self.plaintext.is_empty() {
            let n = self.plaintext.len();
            if buf.is_empty() {
                std::mem::swap(buf, &mut self.plaintext);
            } else {
                buf.extend_from_slice(&self.plaintext);
            }
            self.plaintext = BytesMut::new();
            return Poll::Ready(Ok(n));
        }
        loop {
            let before = buf.len();
            let next = self.process(buf)?;
            // Answers queued while processing (a key update, session
            // tickets) go out now; if the socket is full they wait for the
            // next write or read.
            let send = self.poll_send(cx);
            if let Poll::Ready(Err(err)) = send {
                return Poll::Ready(Err(err));
            }
            if buf.len() > before {
                return Poll::Ready(Ok(buf.len() - before));
            }
            if self.peer_closed || matches!(next, Next::Closed) {
                return Poll::Ready(Ok(0));
            }
            // A peer that makes us answer (KeyUpdates) and does not read
            // is not read from either until the answers are with the kernel.
            if send.is_pending() && self.outgoing.len() - self.sent > MAX_UNSENT_WHILE_READING {
                return Poll::Pending;
            }
            // A stream that ends inside a record ends there: the WebSocket
            // layer sees a connection without a close frame.
            if ready!(self.poll_receive(cx, want))? == 0 {
                return Poll::Ready(Ok(0));
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Take no more while earlier ciphertext waits: what a socket that
        // cannot keep up holds stays one write's worth.
        ready!(self.poll_send(cx))?;
        let taken = self.encrypt(bufs)?;
        // Usually all of it goes now, in the same wake.
        if let Poll::Ready(Err(err)) = self.poll_send(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.queue_close_notify()?;
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// For hyper's HTTP/1 connection, before an upgrade (and for plain HTTPS).
impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.plaintext.is_empty() {
            let mut plaintext = BytesMut::new();
            let read = ready!(this.poll_read_buf(cx, &mut plaintext, 0))?;
            if read == 0 {
                return Poll::Ready(Ok(()));
            }
            this.plaintext = plaintext;
        }
        let n = out.remaining().min(this.plaintext.len());
        out.put_slice(&this.plaintext[..n]);
        this.plaintext.advance(n);
        if this.plaintext.is_empty() {
            this.plaintext = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Transport::poll_write_vectored(self.get_mut(), cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Transport::poll_write_vectored(self.get_mut(), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Transport::poll_shutdown(self.get_mut(), cx)
    }
}

#[cfg(test)]
mod tests;
