//! The generator's client connection: a `TcpStream` and a sans-IO
//! `Connection`, driven without intermediate channels.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use clap::Args;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsbus::client::WsUrl;
use wsbus_proto::handshake::{ClientHandshake, ClientRequest};
use wsbus_proto::{Connection, DeflateConfig, Event, Limits, State};

use super::READ_CHUNK;

/// Slices per `writev`; Linux accepts up to 1024, more than this rarely helps.
const MAX_IOVECS: usize = 64;

/// One client connection of the generator.
#[derive(Debug)]
pub(crate) struct BenchSocket {
    pub stream: TcpStream,
    pub conn: Connection,
    pub rbuf: BytesMut,
}

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
/// requests carry besides the handshake's own headers.
#[derive(Args, Debug, Clone, Default)]
pub struct UpgradeOptions {
    /// An extra header of every upgrade request, e.g. 'Authorization: Bearer
    /// <jwt>' (repeatable; the path and query are the --url's).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = Header::parse)]
    pub headers: Vec<Header>,
}

/// Where to connect: the URL parsed and the upgrade request built once for
/// all connections.
#[derive(Clone)]
pub(crate) struct Target {
    url: WsUrl,
    deflate: Option<DeflateConfig>,
    /// Everything of the request but the key, which is new per connection.
    request: ClientRequest,
}

impl std::fmt::Debug for Target {
    // Not derived: the request's extra headers may hold a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("deflate", &self.deflate.is_some())
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
    pub(crate) fn parse(url: &str, deflate: bool) -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_headers(url, deflate, &[])
    }

    /// A target whose upgrade requests also carry `headers`.
    pub(crate) fn with_headers(
        url: &str,
        deflate: bool,
        headers: &[Header],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let url = WsUrl::parse(url)?;
        let deflate = deflate.then(DeflateConfig::default);
        let request = ClientRequest {
            host: host_header(&url),
            target: url.target.clone(),
            protocols: Vec::new(),
            deflate: deflate.clone(),
            headers: headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        };
        Ok(Target {
            url,
            deflate,
            request,
        })
    }

    /// Connect and complete the opening handshake.
    pub(crate) async fn connect(&self) -> io::Result<BenchSocket> {
        let host = self.url.host.trim_start_matches('[').trim_end_matches(']');
        let mut stream = TcpStream::connect((host, self.url.port)).await?;
        stream.set_nodelay(true)?;
        // Masking keys need no cryptographic strength against our own
        // server; a fast generator keeps the client's cost down (§10.3 is
        // about untrusted scripts in browsers).
        let mut rng = SmallRng::from_os_rng();
        let (handshake, bytes) = ClientHandshake::new(&self.request, rng.random());
        stream.write_all(&bytes).await?;
        let mut rbuf = BytesMut::with_capacity(1024);
        let (negotiated, len) = loop {
            if read_some(&mut stream, &mut rbuf, 1024).await? == 0 {
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
        if let (Some(params), Some(config)) = (&negotiated.deflate, &self.deflate) {
            conn = conn.with_deflate(params, config);
        } else if self.deflate.is_some() {
            return Err(io::Error::other(
                "the server did not accept permessage-deflate",
            ));
        }
        Ok(BenchSocket { stream, conn, rbuf })
    }
}

fn host_header(url: &WsUrl) -> String {
    if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    }
}

/// Read what is there (at most `chunk` more bytes), waiting if nothing is.
/// Tokio's `read_buf` marks the socket not-ready after a short read, which
/// saves the `EAGAIN` read that `readable()` + `try_read_buf` costs per
/// wake-up.
async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
    buf.reserve(chunk);
    stream.read_buf(buf).await
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

    /// Wait for bytes and read them into the buffer; at end of stream the
    /// connection learns of it (and [`Self::process`] reports it closed).
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        if read_some(&mut self.stream, &mut self.rbuf, READ_CHUNK).await? == 0 {
            self.conn.handle_eof();
        }
        Ok(())
    }

    /// Write everything queued, many frames per `writev`. While the socket is
    /// not writable it keeps reading into the buffer: a server blocked on
    /// writing its echoes to us would otherwise never read what we write.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        while !self.conn.outgoing().is_empty() {
            let attempt = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = self.conn.outgoing().chunks_vectored(&mut slices);
                self.stream.try_write_vectored(&slices[..n])
            };
            match attempt {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.conn.outgoing().advance(written),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        ready = self.stream.writable() => ready?,
                        ready = self.stream.readable() => {
                            ready?;
                            self.rbuf.reserve(READ_CHUNK);
                            match self.stream.try_read_buf(&mut self.rbuf) {
                                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                                Ok(_) => {}
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
        let target = Target::with_headers(&format!("ws://{addr}/chat?room=1"), false, &headers)
            .expect("target");
        assert!(!format!("{target:?}").contains("x.y.z"));
        let client = tokio::spawn(async move { target.connect().await.map(|_| ()) });
        let (mut stream, _) = listener.accept().await.expect("accept");
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
        // No answer: the client sees the end of the stream, not an upgrade.
        drop(stream);
        assert!(client.await.expect("client task").is_err());
        let head = String::from_utf8(head).expect("ASCII request");
        assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\nAuthorization: Bearer x.y.z\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nX-Trace: 1\r\n"), "{head}");
        assert!(head.contains("\r\nSec-WebSocket-Key: "), "{head}");
    }
}
