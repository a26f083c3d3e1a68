//! Opening handshakes and HTTP exchanges over a blocking `TcpStream`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The `Sec-WebSocket-Key` every handshake here sends (RFC 6455's example).
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The longest response head [`upgrade`] reads before giving up.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How long a write may block: a server that stops reading fails the test
/// instead of hanging it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// An upgraded connection and the server's response head.
#[derive(Debug)]
pub struct Upgraded {
    /// The connection, after the response head.
    pub stream: TcpStream,
    /// The 101 response head, as sent (status line and headers).
    pub head: String,
}

/// Connect to `addr` and upgrade on `path`. `extra_headers` are added as
/// written (each line ending in `\r\n`, e.g. an extension offer). The stream
/// gets `read_timeout` for every later read; anything but a 101 is an error.
pub fn upgrade(
    addr: &str,
    path: &str,
    extra_headers: &str,
    read_timeout: Duration,
) -> io::Result<Upgraded> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )?;
    // Byte by byte: nothing after the head may be consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::other("response head over 16 KiB"));
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.to_ascii_lowercase().starts_with("http/1.1 101") {
        return Err(io::Error::other(format!("expected 101, got {head:?}")));
    }
    Ok(Upgraded { stream, head })
}

/// Send `head` (a request head, ending in its blank line) and `body`, then
/// read the response until the server closes. A failed body write is not an
/// error: a server may answer and close before reading a body it refuses.
pub fn http_exchange(
    addr: &str,
    head: &str,
    body: &[u8],
    read_timeout: Duration,
) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(head.as_bytes())?;
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    // A reset after a refused body still leaves the response read so far.
    if let Err(err) = stream.read_to_end(&mut response)
        && response.is_empty()
    {
        return Err(err);
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// The status code of an HTTP/1.1 response (0 if there is none).
pub fn status_code(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The body of an HTTP/1.1 response (empty if there is none).
pub fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default()
}
