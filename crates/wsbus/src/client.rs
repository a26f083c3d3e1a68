//! A WebSocket client over TCP (`ws://`).
//!
//! One owner drives it: [`WebSocket::recv`] reads and answers pings,
//! [`WebSocket::send`] queues and flushes. `recv` is cancel safe (bytes read
//! stay buffered), so it can sit in a `select!` beside other work.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wsbus_proto::handshake::{ClientHandshake, ClientHandshakeError, ClientRequest, Negotiated};
use wsbus_proto::{ApiError, CloseCode, Connection, DeflateConfig, Event, Limits, Message, State};

use crate::transport::{read_buf, write_queued};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Subprotocols to offer, most preferred first.
    pub protocols: Vec<String>,
    /// Offer permessage-deflate with these terms.
    pub deflate: Option<DeflateConfig>,
    /// Frame, message and inflated-size limits for what the server sends.
    pub limits: Limits,
    /// Extra request headers (`Origin`, `Authorization`, `Cookie`, …).
    pub headers: Vec<(String, String)>,
    /// Connect plus opening handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long `close` waits for the server's close frame and TCP close. Default 5 s.
    pub close_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            protocols: Vec::new(),
            deflate: None,
            limits: Limits::default(),
            headers: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a client operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Not a `ws://host[:port][/path][?query]` URL.
    InvalidUrl(String),
    /// The connection failed or broke.
    Io(io::Error),
    /// The server did not complete the handshake in time.
    Timeout,
    /// The server's handshake response was not a valid acceptance.
    Handshake(ClientHandshakeError),
    /// A call that the connection's state does not allow (e.g. sending
    /// after close).
    Api(ApiError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidUrl(url) => write!(f, "invalid ws:// URL {url:?}"),
            ClientError::Io(err) => write!(f, "I/O error: {err}"),
            ClientError::Timeout => f.write_str("timed out"),
            ClientError::Handshake(err) => write!(f, "handshake failed: {err}"),
            ClientError::Api(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(err) => Some(err),
            ClientError::Handshake(err) => Some(err),
            ClientError::Api(err) => Some(err),
            ClientError::InvalidUrl(_) | ClientError::Timeout => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        ClientError::Io(err)
    }
}

impl From<ApiError> for ClientError {
    fn from(err: ApiError) -> Self {
        ClientError::Api(err)
    }
}

/// The parts of a `ws://host[:port]/path?query` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// The host, as written (a name, an IPv4 address or a bracketed IPv6 one).
    pub host: String,
    /// The port; 80 when the URL gives none.
    pub port: u16,
    /// Path and query, at least `/`.
    pub target: String,
}

impl WsUrl {
    /// Split a `ws://` URL into its parts.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidUrl(url.to_owned());
        let rest = url.strip_prefix("ws://").ok_or_else(invalid)?;
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                (host, port.parse().map_err(|_| invalid())?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(invalid());
        }
        Ok(WsUrl {
            host: host.to_owned(),
            port,
            target,
        })
    }

    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// An open client connection.
#[derive(Debug)]
pub struct WebSocket {
    stream: TcpStream,
    conn: Connection,
    rbuf: BytesMut,
    negotiated: Negotiated,
    close_timeout: Duration,
}

/// Connect to a `ws://` URL and complete the opening handshake.
pub async fn connect(url: &str, options: ClientOptions) -> Result<WebSocket, ClientError> {
    let url = WsUrl::parse(url)?;
    tokio::time::timeout(options.handshake_timeout, connect_inner(url, options))
        .await
        .map_err(|_| ClientError::Timeout)?
}

async fn connect_inner(url: WsUrl, options: ClientOptions) -> Result<WebSocket, ClientError> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = TcpStream::connect((host, url.port)).await?;
    stream.set_nodelay(true)?;
    let mut rng = StdRng::from_os_rng();
    let request = ClientRequest {
        host: url.host_header(),
        target: url.target.clone(),
        protocols: options.protocols.clone(),
        deflate: options.deflate.clone(),
        headers: options.headers.clone(),
    };
    let (handshake, bytes) = ClientHandshake::new(&request, rng.random());
    stream.write_all(&bytes).await?;
    let mut rbuf = BytesMut::new();
    let (negotiated, len) = loop {
        if read_buf(&mut stream, &mut rbuf, 0).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if let Some(done) = handshake
            .parse_response(&rbuf)
            .map_err(ClientError::Handshake)?
        {
            break done;
        }
    };
    let _ = rbuf.split_to(len);
    let masks = Box::new(move || rng.random::<[u8; 4]>());
    let mut conn = Connection::client(options.limits, masks);
    if let (Some(params), Some(cfg)) = (&negotiated.deflate, &options.deflate) {
        conn = conn.with_deflate(params, cfg);
    }
    Ok(WebSocket {
        stream,
        conn,
        rbuf,
        negotiated,
        close_timeout: options.close_timeout,
    })
}

impl WebSocket {
    /// What the handshake agreed on (subprotocol, extensions).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The Web API state: OPEN, CLOSING or CLOSED.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Send a message and write it out.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped before it completes, the
    /// message is queued on the connection but may be partly written; the
    /// next call that writes finishes it.
    pub async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.conn.send(message)?;
        self.flush().await
    }

    /// Send a message split into frames of at most `frame_size` payload bytes.
    pub async fn send_fragmented(
        &mut self,
        message: Message,
        frame_size: usize,
    ) -> Result<(), ClientError> {
        self.conn.send_fragmented(message, frame_size)?;
        self.flush().await
    }

    /// Send a ping with `payload` (at most 125 bytes) and write it out.
    pub async fn ping(&mut self, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.conn.ping(payload)?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(write_queued(&mut self.stream, &mut self.conn).await?)
    }

    /// The next event (message, ping, pong, close, error); `None` once the
    /// connection is closed and every event was returned. Pings are answered
    /// before they are returned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: use it in `tokio::select!`. An event is taken from the
    /// connection only when it is returned, and what was read stays in the
    /// connection's buffer for the next call.
    pub async fn recv(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            // Write what reading queued (pongs, the close reply) before an
            // event is taken: nothing is awaited between taking it and
            // returning it, so a dropped future loses no event.
            self.flush().await?;
            if let Some(event) = self.conn.poll_event() {
                return Ok(Some(event));
            }
            if self.conn.handle_read(&mut self.rbuf) {
                continue;
            }
            self.flush().await?;
            if self.conn.state() == State::Closed {
                return Ok(None);
            }
            let want = self.conn.frame_bytes_wanted(self.rbuf.len());
            match read_buf(&mut self.stream, &mut self.rbuf, want).await {
                Ok(0) | Err(_) => self.conn.handle_eof(),
                Ok(_) => {
                    self.conn.handle_read(&mut self.rbuf);
                }
            }
        }
    }

    /// The next data message, skipping control events; `None` when closed.
    /// Cancel safe, as [`Self::recv`].
    pub async fn recv_message(&mut self) -> Result<Option<Message>, ClientError> {
        while let Some(event) = self.recv().await? {
            if let Event::Message(message) = event {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Send a close frame (Web API rules) without waiting: keep calling
    /// [`Self::recv`] to read what the server still sends, then its close;
    /// `recv` returns `None` once the closing handshake is complete.
    pub async fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), ClientError> {
        self.conn.close(code, reason)?;
        self.flush().await
    }

    /// Close with the Web API rules (1000 or 3000–4999, reason ≤ 123 bytes),
    /// wait for the server's close and its TCP close, and return the code the
    /// closing handshake ended with. Messages still arriving are dropped.
    pub async fn close(mut self, code: CloseCode, reason: &str) -> Result<CloseCode, ClientError> {
        if self.conn.state() == State::Open {
            self.conn.close(code, reason)?;
        }
        let timeout = self.close_timeout;
        let finish = async {
            while self.recv().await?.is_some() {}
            // §7.1.1: the client waits for the server to close TCP.
            let mut scratch = BytesMut::new();
            loop {
                scratch.clear();
                if matches!(
                    read_buf(&mut self.stream, &mut scratch, 0).await,
                    Ok(0) | Err(_)
                ) {
                    break;
                }
            }
            Ok::<_, ClientError>(())
        };
        tokio::time::timeout(timeout, finish)
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(self.conn.close_status().unwrap_or(CloseCode::ABNORMAL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:9001/a/b?c=d").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("127.0.0.1", 9001, "/a/b?c=d")
        );
        let u = WsUrl::parse("ws://example.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 80, "/")
        );
        let u = WsUrl::parse("ws://[::1]:80?x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("[::1]", 80, "/?x")
        );
        assert!(WsUrl::parse("http://x").is_err());
        assert!(WsUrl::parse("ws://:80/").is_err());
    }
}
