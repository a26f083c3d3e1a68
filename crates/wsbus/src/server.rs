//! The accept loop and the server side of the opening handshake.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use wsbus_proto::handshake::{self, Rejection, StatusCode, UpgradeRequest};
use wsbus_proto::{Connection, DeflateConfig, Limits};

use crate::driver::{self, CloseTimeouts, SocketSetup};
use crate::handler::Handler;
use crate::hub::Hub;

/// Server settings. Every limit has a default chosen for a public endpoint.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Frame, message and inflated-size limits per connection.
    pub limits: Limits,
    /// permessage-deflate terms, or `None` to decline every offer.
    pub deflate: Option<DeflateConfig>,
    /// A client has this long to send its complete upgrade request; slow or
    /// partial requests (slowloris) are dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest upgrade request head; beyond it the answer is `431`. Default
    /// 16 KiB, room for large cookies while bounding per-connection memory.
    pub max_request_bytes: usize,
    pub close_timeouts: CloseTimeouts,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            deflate: Some(DeflateConfig::default()),
            handshake_timeout: Duration::from_secs(10),
            max_request_bytes: 16 * 1024,
            close_timeouts: CloseTimeouts::default(),
        }
    }
}

/// A WebSocket server: accepts upgrades on every path and hands sockets to
/// one [`Handler`].
#[derive(Clone)]
pub struct Server {
    config: Arc<ServerConfig>,
    hub: Hub,
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(config: ServerConfig, hub: Hub, handler: impl Handler) -> Self {
        Server {
            config: Arc::new(config),
            hub,
            handler: Arc::new(handler),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Accept connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and similar: wait rather than spin.
                Err(err) => {
                    tracing::warn!(target: "wsbus::handshake", %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(err) = server.handle(stream).await {
                    tracing::debug!(target: "wsbus::handshake", %peer, %err, "connection ended");
                }
            });
        }
    }

    async fn handle(&self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let read =
            tokio::time::timeout(self.config.handshake_timeout, self.read_request(&stream)).await;
        let (head, rest) = match read {
            Err(_elapsed) => return Ok(()), // slow client: drop without a word
            Ok(Err(err)) => return Err(err),
            Ok(Ok(Err(rejection))) => {
                return reject(stream, &rejection, self.config.close_timeouts.linger).await;
            }
            Ok(Ok(Ok(parsed))) => parsed,
        };
        let upgrade = match UpgradeRequest::from_head(&head) {
            Ok(upgrade) => upgrade,
            Err(rejection) => {
                return reject(stream, &rejection, self.config.close_timeouts.linger).await;
            }
        };
        let deflate = self
            .config
            .deflate
            .as_ref()
            .and_then(|cfg| Some((upgrade.negotiate_deflate(cfg)?, cfg)));
        stream
            .write_all(&upgrade.response(None, deflate.as_ref().map(|(params, _)| params)))
            .await?;
        let mut conn = Connection::server(self.config.limits);
        if let Some((params, cfg)) = &deflate {
            conn = conn.with_deflate(params, cfg);
        }
        let (id, shared) = self.hub.register();
        let setup = SocketSetup {
            id,
            path: head.target,
            shared,
            hub: self.hub.clone(),
            handler: self.handler.clone(),
            timeouts: self.config.close_timeouts,
        };
        driver::run_socket(stream, conn, rest, setup).await;
        Ok(())
    }

    /// Read until a complete request head; returns it and any bytes after it.
    async fn read_request(
        &self,
        stream: &TcpStream,
    ) -> std::io::Result<Result<(handshake::RequestHead, BytesMut), Rejection>> {
        let mut buf = BytesMut::new();
        loop {
            stream.readable().await?;
            match driver::read_some(stream, &mut buf) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
            let too_large = || Rejection {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "request headers too large".into(),
            };
            match handshake::parse_request(&buf) {
                Ok(Some((_, len))) if len > self.config.max_request_bytes => {
                    return Ok(Err(too_large()));
                }
                Ok(Some((head, len))) => {
                    let _ = buf.split_to(len);
                    return Ok(Ok((head, buf)));
                }
                Ok(None) if buf.len() > self.config.max_request_bytes => {
                    return Ok(Err(too_large()));
                }
                Ok(None) => {}
                Err(rejection) => return Ok(Err(rejection)),
            }
        }
    }
}

/// Answer with the rejection, then linger so that unread request bytes do
/// not turn our close into a reset that could destroy the answer.
async fn reject(
    mut stream: TcpStream,
    rejection: &Rejection,
    linger: Duration,
) -> std::io::Result<()> {
    tracing::debug!(target: "wsbus::handshake", status = rejection.status.0, reason = %rejection.reason, "upgrade refused");
    stream.write_all(&rejection.to_response()).await?;
    driver::linger(stream, linger).await;
    Ok(())
}
