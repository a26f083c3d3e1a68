//! The generator's client connection: a `TcpStream` and a sans-IO
//! `Connection`, driven without intermediate channels.

use std::io::{self, IoSlice};

use bytes::BytesMut;
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

/// Where to connect: the URL parsed once for all connections.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    url: WsUrl,
    deflate: Option<DeflateConfig>,
}

impl Target {
    pub(crate) fn parse(url: &str, deflate: bool) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Target {
            url: WsUrl::parse(url)?,
            deflate: deflate.then(DeflateConfig::default),
        })
    }

    fn host_header(&self) -> String {
        if self.url.port == 80 {
            self.url.host.clone()
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        }
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
        let request = ClientRequest {
            host: self.host_header(),
            target: self.url.target.clone(),
            protocols: Vec::new(),
            deflate: self.deflate.clone(),
            headers: Vec::new(),
        };
        let (handshake, bytes) = ClientHandshake::new(&request, rng.random());
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
