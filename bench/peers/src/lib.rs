//! The servers `wsbus echo` is benchmarked against (`bench/run`), over other
//! Rust WebSocket crates. Each binary takes `--listen ADDR` and behaves like
//! `wsbus echo`: every text or binary message is echoed back on every path,
//! and on `/broadcast` every message received goes to every socket then on
//! `/broadcast`, the sender included.
//!
//! They are written the way each crate's own examples write an echo server
//! and a broadcast server (multi-thread tokio runtime, default settings, one
//! unbounded queue per broadcast socket), plus `TCP_NODELAY`, which `wsbus`,
//! Node `ws` and uWebSockets all set. Neither crate implements
//! permessage-deflate, so neither takes part in that row of the matrix.
//!
//! With `--tls-cert FILE --tls-key FILE` they serve wss:// the way a user of
//! these crates does: a `tokio_rustls::TlsAcceptor` around each accepted
//! `TcpStream`, then the same WebSocket code over the TLS stream. The rustls
//! configuration is `wsbus echo`'s (ring provider, rustls's safe default
//! protocol versions, one certificate, rustls's other defaults), so the TLS
//! rows compare the WebSocket servers, not two TLS setups.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The path whose sockets receive every message sent on it.
pub const BROADCAST_PATH: &str = "/broadcast";

/// What the command line asks for.
pub struct Options {
    /// `--listen ADDR` (default `127.0.0.1:9001`).
    pub listen: SocketAddr,
    /// From `--tls-cert FILE --tls-key FILE`: serve wss:// instead of ws://.
    pub tls: Option<TlsAcceptor>,
}

// `TlsAcceptor` has no `Debug`.
impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Options {
    /// `ws` or `wss`, for the "listening on" line.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "wss" } else { "ws" }
    }
}

/// Parses `--listen HOST:PORT [--tls-cert FILE --tls-key FILE]`; exits with a
/// usage message on anything else, or with the reason when the certificate or
/// key cannot be loaded.
pub fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut addr = String::from("127.0.0.1:9001");
    let (mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(value)) => addr = value,
            ("--tls-cert", Some(value)) => cert = Some(value.into()),
            ("--tls-key", Some(value)) => key = Some(value.into()),
            _ => usage(),
        }
    }
    let listen = addr.parse().unwrap_or_else(|_| usage());
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(tls_acceptor(&cert, &key).unwrap_or_else(|e| {
            eprintln!("cannot load {} / {}: {e}", cert.display(), key.display());
            std::process::exit(1)
        })),
        _ => usage(),
    };
    Options { listen, tls }
}

/// A TLS acceptor for a PEM certificate chain and key, configured as
/// `wsbus::tls_acceptor` configures `wsbus echo`'s. A copy of it, not a call:
/// the peers link nothing of wsbus, as their users' servers would not.
fn tls_acceptor(cert_pem: &Path, key_pem: &Path) -> std::io::Result<TlsAcceptor> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert_pem)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key_pem)?))?
            .ok_or_else(|| invalid(format!("no private key in {}", key_pem.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn usage() -> ! {
    let name = std::env::args().next().unwrap_or_default();
    eprintln!("usage: {name} [--listen HOST:PORT] [--tls-cert CERT.pem --tls-key KEY.pem]");
    std::process::exit(2)
}
