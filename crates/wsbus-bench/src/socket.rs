//! The generator's client connection: a `TcpStream` (or TLS over one) and a
//! sans-IO `Connection`, driven without intermediate channels.

use std::future::Future;
use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wsbus::client::WsUrl;
use wsbus_proto::handshake::{ClientHandshake, ClientRequest};
use wsbus_proto::{Connection, DeflateConfig, Event, Limits, State};

use super::READ_CHUNK;
use super::tls::{self, CountingTcp, TlsTarget, WireBytes};

/// Slices per `writev`; Linux accepts up to 1024, more than this rarely helps.
const MAX_IOVECS: usize = 64;

/// Header names the opening handshake writes itself (RFC 6455 §4.1):
/// a second copy from `--header` would make the request invalid, or (a
/// protocol the generator did not offer) make it refuse the server's answer.
const HANDSHAKE_HEADERS: [&str; 7] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// One extra header of every upgrade request (`--header 'Name: value'`),
/// e.g. `Authorization: Bearer <jwt>`. Its value is never printed, `Debug`
/// included: it is usually a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    name: String,
    value: String,
}

impl Header {
    /// Parse `Name: value`: the name an HTTP token (RFC 9110 §5.6.2), the
    /// value without CR, LF or NUL (§5.5), surrounding whitespace trimmed.
    pub fn parse(line: &str) -> Result<Self, String> {
        let (name, value) = line
            .split_once(':')
            .ok_or("expected 'Name: value' (no ':' found)")?;
        let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(format!("{name:?} is not a header name (RFC 9110 §5.6.2)"));
        }
        if HANDSHAKE_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("{name} is written by the opening handshake itself"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(format!(
                "the value of {name} holds CR, LF or NUL (RFC 9110 §5.5)"
            ));
        }
        Ok(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The header's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The header's value, whitespace around it trimmed.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Header({}: <redacted>)", self.name)
    }
}

/// Options of the scenarios that open WebSockets: what their upgrade
/// requests carry besides the handshake's own headers, and what a wss://
/// URL's certificate is checked against.
#[derive(Args, Debug, Clone, Default)]
pub struct UpgradeOptions {
    /// An extra header of every upgrade request, e.g. 'Authorization: Bearer
    /// <jwt>' (repeatable; the path and query are the --url's).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = Header::parse)]
    pub headers: Vec<Header>,
    /// For a wss:// --url: the PEM certificate(s) of the CA, or the
    /// self-signed certificate, to trust (no system roots are used). Every
    /// connection does a full TLS handshake (no session resumption).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// What the upgrade requests offer of permessage-deflate (RFC 7692).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DeflateOffer {
    /// No Sec-WebSocket-Extensions header.
    #[default]
    None,
    /// wsbus's own client offer: with context takeover, then the same with
    /// client_no_context_takeover; the server must accept one.
    Plain,
    /// Exactly what Chromium sends, `permessage-deflate;
    /// client_max_window_bits`; whatever RFC 7692 lets the server answer is
    /// accepted (also no extension: the connection then runs uncompressed).
    Browser,
}

impl DeflateOffer {
    /// The name on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            DeflateOffer::None => "none",
            DeflateOffer::Plain => "plain",
            DeflateOffer::Browser => "browser",
        }
    }
}

/// Chromium's offer, byte for byte (net/websockets: it supports a window
/// limit from the server and asks for nothing of it).
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// How a browser compresses what it sends: Chromium's deflater runs zlib at
/// its default level (`Z_DEFAULT_COMPRESSION`, 6) and compresses every
/// message, however short (its predictor always chooses deflate).
fn browser_deflate() -> DeflateConfig {
    DeflateConfig {
        level: 6,
        threshold: 0,
        // A browser allows context takeover both ways.
        ..DeflateConfig::with_context_takeover()
    }
}

/// Where to connect: the URL parsed and the upgrade request built once for
/// all connections.
#[derive(Clone)]
pub(crate) struct Target {
    url: WsUrl,
    tls: Option<TlsTarget>,
    offer: DeflateOffer,
    /// How we compress once the server accepted an offer, and what its
    /// answer is checked against (RFC 7692 §7.1).
    deflate: Option<DeflateConfig>,
    /// Everything of the request but the key, which is new per connection.
    request: ClientRequest,
}

impl std::fmt::Debug for Target {
    // Not derived: the request's extra headers may hold a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("offer", &self.offer)
            .field(
                "headers",
                &self
                    .request
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Target {
    /// A ws:// target with no extra header (wss:// needs [`Self::new`]).
    pub(crate) fn parse(url: &str, deflate: bool) -> Result<Self, Box<dyn std::error::Error>> {
        let offer = if deflate {
            DeflateOffer::Plain
        } else {
            DeflateOffer::None
        };
        Self::new(url, offer, &UpgradeOptions::default())
    }

    /// A target whose upgrade requests carry `offer` and `upgrade`'s
    /// headers, over TLS for a wss:// URL.
    pub(crate) fn new(
        url: &str,
        offer: DeflateOffer,
        upgrade: &UpgradeOptions,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let (url, secure) = tls::parse_url(url)?;
        let tls = match (secure, &upgrade.tls_ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(TlsTarget::new(ca, &url.host)?),
            (true, None) => {
                return Err(
                    "a wss:// --url needs --tls-ca FILE: the PEM certificate of the CA or \
                     self-signed certificate to trust"
                        .into(),
                );
            }
        };
        let mut headers: Vec<(String, String)> = upgrade
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let (deflate, offered) = match offer {
            DeflateOffer::None => (None, None),
            // wsbus's client offer as it was before no context takeover
            // became the default: context takeover allowed both ways.
            DeflateOffer::Plain => (
                Some(DeflateConfig::with_context_takeover()),
                Some(DeflateConfig::with_context_takeover()),
            ),
            // `ClientRequest` would write its own two-element offer: this
            // one goes in as a header, and the config only checks the answer
            // (see `connect`).
            DeflateOffer::Browser => {
                headers.insert(0, ("Sec-WebSocket-Extensions".into(), BROWSER_OFFER.into()));
                (Some(browser_deflate()), None)
            }
        };
        let request = ClientRequest {
            host: tls::host_header(&url, secure),
            target: url.target.clone(),
            protocols: Vec::new(),
            deflate: offered,
            headers,
        };
        Ok(Target {
            url,
            tls,
            offer,
            deflate,
            request,
        })
    }

    /// Whether connections are wss://.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connect and complete the opening handshake.
    pub(crate) async fn connect(&self) -> io::Result<BenchSocket> {
        let host = self.url.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, self.url.port)).await?;
        // Browsers set TCP_NODELAY too: each write leaves at once.
        tcp.set_nodelay(true)?;
        let mut stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(tls) => Stream::Tls(Box::new(tls.connect(tcp).await?)),
        };
        // Masking keys need no cryptographic strength against our own
        // server; a fast generator keeps the client's cost down (§10.3 is
        // about untrusted scripts in browsers).
        let mut rng = SmallRng::from_os_rng();
        let key: [u8; 16] = rng.random();
        let (mut handshake, bytes) = ClientHandshake::new(&self.request, key);
        if self.offer == DeflateOffer::Browser {
            // The browser offer was written as a header; the answer is
            // checked as if `deflate` had been offered, which accepts what
            // RFC 7692 §7.1 lets a server answer to that offer (any
            // server_max_window_bits, client_max_window_bits=N, either
            // no_context_takeover).
            let check = ClientRequest {
                deflate: self.deflate.clone(),
                ..self.request.clone()
            };
            handshake = ClientHandshake::new(&check, key).0;
        }
        stream.write_all(&bytes).await?;
        let mut rbuf = BytesMut::with_capacity(1024);
        let (negotiated, len) = loop {
            if stream.read_some(&mut rbuf, 1024).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match handshake.parse_response(&rbuf) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                Err(err) => return Err(io::Error::other(format!("handshake: {err}"))),
            }
        };
        let _ = rbuf.split_to(len);
        // Messages as large as the largest scenario's: no limit to trip on.
        let mut conn =
            Connection::client(Limits::uniform(256 << 20), Box::new(move || rng.random()));
        match (&negotiated.deflate, &self.deflate) {
            (Some(params), Some(config)) => conn = conn.with_deflate(params, config),
            (None, Some(_)) if self.offer == DeflateOffer::Plain => {
                return Err(io::Error::other(
                    "the server did not accept permessage-deflate",
                ));
            }
            _ => {}
        }
        Ok(BenchSocket {
            stream,
            conn,
            rbuf,
            extensions: negotiated.extensions,
            wire: WireBytes::default(),
        })
    }
}

/// The socket under a connection: TCP, or TLS over TCP.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<CountingTcp>>),
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(bytes).await,
            Stream::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
        }
    }

    /// Read what is there (at most `chunk` more bytes), waiting if nothing
    /// is. Tokio's `read_buf` marks the socket not-ready after a short read,
    /// which saves the `EAGAIN` read that `readable()` + `try_read_buf`
    /// costs per wake-up. A TLS peer that closes without close_notify ends
    /// the stream like a FIN does: the WebSocket closing handshake already
    /// said whether the end was expected.
    async fn read_some(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        buf.reserve(chunk);
        match self {
            Stream::Plain(tcp) => tcp.read_buf(buf).await,
            Stream::Tls(tls) => match tls.read_buf(buf).await {
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                result => result,
            },
        }
    }
}

/// One client connection of the generator.
#[derive(Debug)]
pub(crate) struct BenchSocket {
    stream: Stream,
    pub conn: Connection,
    pub rbuf: BytesMut,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
    /// Bytes on the wire of a plain connection (a TLS one counts in its
    /// [`CountingTcp`]).
    wire: WireBytes,
}

impl BenchSocket {
    /// Hand every event the buffered bytes complete to `on_event` (which may
    /// queue sends). Returns `false` once the connection is closed.
    pub(crate) fn process(&mut self, mut on_event: impl FnMut(Event, &mut Connection)) -> bool {
        loop {
            let more = self.conn.handle_read(&mut self.rbuf);
            while let Some(event) = self.conn.poll_event() {
                on_event(event, &mut self.conn);
            }
            if !more {
                break;
            }
        }
        self.conn.state() != State::Closed
    }

    /// The next event of the buffered bytes, parsing no further than the
    /// frame that completes it (RFC 6455 framing is parsed one frame per
    /// `handle_read`): what a client that reacts to each message as soon
    /// as it is parsed does.
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.conn.poll_event() {
                return Some(event);
            }
            if !self.conn.handle_read(&mut self.rbuf) {
                return self.conn.poll_event();
            }
        }
    }

    /// Wait for bytes and read them into the buffer; at end of stream the
    /// connection learns of it (and [`Self::process`] reports it closed).
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        let n = self.stream.read_some(&mut self.rbuf, READ_CHUNK).await?;
        if n == 0 {
            self.conn.handle_eof();
        }
        if let Stream::Plain(_) = self.stream {
            self.wire.received += n as u64;
        }
        Ok(())
    }

    /// Whether the server has closed this connection, without waiting:
    /// what arrived is read and processed, and the connection is closed if
    /// that was a close frame, the end of the stream or an error.
    pub(crate) async fn closed_by_peer(&mut self) -> bool {
        // Unconstrained: a caller checking thousands of sockets in a row
        // would otherwise exhaust the task's budget, and reads would then
        // return "not ready" whatever had arrived.
        let read = tokio::time::timeout(std::time::Duration::ZERO, self.fill());
        match tokio::task::unconstrained(read).await {
            Err(_) => false,
            Ok(Err(_)) => true,
            Ok(Ok(())) => !self.process(|_, _| {}),
        }
    }

    /// Bytes written and read on the socket so far (TLS records included).
    pub(crate) fn wire(&self) -> WireBytes {
        match &self.stream {
            Stream::Plain(_) => self.wire,
            Stream::Tls(tls) => tls.get_ref().0.wire,
        }
    }

    /// Write everything queued, many frames per `writev`. While the socket is
    /// not writable it keeps reading into the buffer: a server blocked on
    /// writing its echoes to us would otherwise never read what we write.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        let tcp = match &mut self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => return flush_tls(tls, &mut self.conn, &mut self.rbuf).await,
        };
        while !self.conn.outgoing().is_empty() {
            let attempt = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = self.conn.outgoing().chunks_vectored(&mut slices);
                tcp.try_write_vectored(&slices[..n])
            };
            match attempt {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.wire.sent += written as u64;
                    self.conn.outgoing().advance(written);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        ready = tcp.writable() => ready?,
                        ready = tcp.readable() => {
                            ready?;
                            self.rbuf.reserve(READ_CHUNK);
                            match tcp.try_read_buf(&mut self.rbuf) {
                                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                                Ok(n) => self.wire.received += n as u64,
                                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                                Err(err) => return Err(err),
                            }
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// [`BenchSocket::flush`] over TLS: the frames go to rustls (which writes
/// its records at once), and while the socket is not writable what arrives
/// is read, as over TCP.
async fn flush_tls(
    tls: &mut tokio_rustls::client::TlsStream<CountingTcp>,
    conn: &mut Connection,
    rbuf: &mut BytesMut,
) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        loop {
            if conn.outgoing().is_empty() {
                return Pin::new(&mut *tls).poll_flush(cx);
            }
            let attempt = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = conn.outgoing().chunks_vectored(&mut slices);
                Pin::new(&mut *tls).poll_write_vectored(cx, &slices[..n])
            };
            match attempt {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => conn.outgoing().advance(written),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    // `read_buf` is cancel-safe: polled once and dropped,
                    // it either read or registered the waker.
                    rbuf.reserve(READ_CHUNK);
                    let mut read = std::pin::pin!(tls.read_buf(&mut *rbuf));
                    match read.as_mut().poll(cx) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn headers_parse_and_refuse() {
        let h = Header::parse("Authorization:  Bearer a.b.c \t").expect("valid");
        assert_eq!((h.name(), h.value()), ("Authorization", "Bearer a.b.c"));
        assert_eq!(format!("{h:?}"), "Header(Authorization: <redacted>)");
        assert!(Header::parse("X-Empty:").is_ok_and(|h| h.value().is_empty()));
        for bad in [
            "no colon",
            ": value",
            "Bad Name: v",
            "X: a\r\nInjected: b",
            "Sec-WebSocket-Key: x",
            "host: example.com",
        ] {
            assert!(Header::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// The request head, up to its blank line, read byte by byte.
    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(
                stream.read(&mut byte).await.expect("read"),
                1,
                "request cut short"
            );
            head.push(byte[0]);
        }
        String::from_utf8(head).expect("ASCII request")
    }

    /// The browser offer goes out as Chromium writes it, once, and every
    /// answer RFC 7692 §7.1 allows to it is taken, compression included;
    /// an answer outside the offer fails the handshake.
    #[tokio::test]
    async fn browser_offer_is_chromiums_and_takes_what_rfc_7692_allows() {
        let answers = [
            ("permessage-deflate", true),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                true,
            ),
            (
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
                true,
            ),
            // No extension: a browser carries on uncompressed.
            ("", true),
            // §7.1.2.2: a response's client_max_window_bits needs a value.
            ("permessage-deflate; client_max_window_bits", false),
            ("x-webkit-deflate-frame", false),
        ];
        for (answer, accepted) in answers {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let target = Target::new(
                &format!("ws://{addr}/"),
                DeflateOffer::Browser,
                &UpgradeOptions::default(),
            )
            .expect("target");
            let client = tokio::spawn(async move {
                target
                    .connect()
                    .await
                    .map(|s| (s.conn.is_compressed(), s.extensions))
            });
            let (mut stream, _) = listener.accept().await.expect("accept");
            let head = read_head(&mut stream).await;
            let offers: Vec<&str> = head
                .lines()
                .filter(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("sec-websocket-extensions")
                })
                .collect();
            assert_eq!(
                offers,
                ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]
            );
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("key");
            let mut response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                wsbus_proto::handshake::accept_key(key.as_bytes())
            );
            if !answer.is_empty() {
                response.push_str(&format!("Sec-WebSocket-Extensions: {answer}\r\n"));
            }
            response.push_str("\r\n");
            stream.write_all(response.as_bytes()).await.expect("answer");
            let result = client.await.expect("client task");
            match result {
                Ok((compressed, extensions)) => {
                    assert!(accepted, "{answer:?} accepted");
                    assert_eq!(compressed, !answer.is_empty(), "{answer:?}");
                    assert_eq!(extensions.unwrap_or_default(), answer);
                }
                Err(err) => assert!(!accepted, "{answer:?} refused: {err}"),
            }
        }
    }

    /// The header reaches the server in the upgrade request, on its own line
    /// after the handshake's headers; the token is not in the target's Debug.
    #[tokio::test]
    async fn headers_reach_the_upgrade_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let headers = [
            Header::parse("Authorization: Bearer x.y.z").expect("valid"),
            Header::parse("X-Trace: 1").expect("valid"),
        ];
        let upgrade = UpgradeOptions {
            headers: headers.to_vec(),
            tls_ca: None,
        };
        let target = Target::new(
            &format!("ws://{addr}/chat?room=1"),
            DeflateOffer::None,
            &upgrade,
        )
        .expect("target");
        assert!(!format!("{target:?}").contains("x.y.z"));
        let client = tokio::spawn(async move { target.connect().await.map(|_| ()) });
        let (mut stream, _) = listener.accept().await.expect("accept");
        let head = read_head(&mut stream).await;
        // No answer: the client sees the end of the stream, not an upgrade.
        drop(stream);
        assert!(client.await.expect("client task").is_err());
        assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\nAuthorization: Bearer x.y.z\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nX-Trace: 1\r\n"), "{head}");
        assert!(head.contains("\r\nSec-WebSocket-Key: "), "{head}");
    }
}
