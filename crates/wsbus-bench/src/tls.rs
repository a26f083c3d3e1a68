//! wss:// for the generator: URL parsing, the rustls client configuration,
//! and a `TcpStream` wrapper that counts the bytes on the wire (after TLS).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{Resumption, WebPkiServerVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};
use wsbus::client::WsUrl;

/// The port of a wss:// URL that names none (RFC 6455 §3).
const WSS_DEFAULT_PORT: u16 = 443;

/// The port `WsUrl` assumes when a ws:// URL names none.
const WS_DEFAULT_PORT: u16 = 80;

/// Bytes written to and read from a socket, as the kernel saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WireBytes {
    pub sent: u64,
    pub received: u64,
}

/// A URL of either scheme: its parts, and whether it is wss://.
pub(crate) fn parse_url(url: &str) -> Result<(WsUrl, bool), Box<dyn std::error::Error>> {
    let Some(rest) = url.strip_prefix("wss://") else {
        return Ok((WsUrl::parse(url)?, false));
    };
    let mut parsed =
        WsUrl::parse(&format!("ws://{rest}")).map_err(|_| format!("invalid URL {url:?}"))?;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if parsed.port == WS_DEFAULT_PORT && !authority.ends_with(":80") {
        parsed.port = WSS_DEFAULT_PORT;
    }
    Ok((parsed, true))
}

/// The `Host` header: the port is left out when it is the scheme's default.
pub(crate) fn host_header(url: &WsUrl, tls: bool) -> String {
    let default = if tls {
        WSS_DEFAULT_PORT
    } else {
        WS_DEFAULT_PORT
    };
    if url.port == default {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    }
}

/// What a wss:// target connects with: the connector (trusting only the
/// `--tls-ca` certificates) and the name the certificate must carry.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("name", &self.name)
            .finish()
    }
}

impl TlsTarget {
    /// A client that trusts the PEM certificates of `ca` and expects the
    /// server to be `host` (a DNS name, sent as SNI, or an IP address, which
    /// the certificate must list and which is not sent: RFC 6066 §3).
    ///
    /// Session resumption is off: every connection pays a full handshake,
    /// as a browser's first visit does, so `connect` measures that cost and
    /// not a resumption's.
    pub(crate) fn new(ca: &Path, host: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let pem = std::fs::read(ca).map_err(|err| format!("--tls-ca {}: {err}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.map_err(|err| format!("--tls-ca {}: {err}", ca.display()))?)
                .map_err(|err| format!("--tls-ca {}: {err}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--tls-ca {}: no PEM certificate in it", ca.display()).into());
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let pinned = roots_pem(&pem);
        let verifier = PinnedOrWebPki {
            webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?,
            pinned,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        // What browsers offer on a WebSocket's TLS connection (they do not
        // use HTTP/2 for it unless the server supports RFC 8441).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|err| format!("{host} is not a TLS server name: {err}"))?;
        Ok(TlsTarget {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake over `tcp`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<CountingTcp>> {
        self.connector
            .connect(
                self.name.clone(),
                CountingTcp {
                    tcp,
                    wire: WireBytes::default(),
                },
            )
            .await
    }
}

/// The certificates of a PEM file, those that parse.
fn roots_pem(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect()
}

/// The usual WebPKI checks against the `--tls-ca` roots, and one more way
/// to pass: a server certificate that is byte for byte one of the
/// `--tls-ca` certificates. A self-signed certificate made with `openssl
/// req -x509` is marked as a CA (basicConstraints CA:TRUE), which WebPKI
/// refuses as a server's own certificate; trusting that exact certificate
/// is what the user asked for. The handshake's signatures are checked in
/// either case, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            result => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A `TcpStream` that counts what passes through it: under TLS, the bytes
/// on the wire are the records, not the WebSocket frames.
#[derive(Debug)]
pub(crate) struct CountingTcp {
    tcp: TcpStream,
    pub wire: WireBytes,
}

impl AsyncRead for CountingTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.wire.received += (buf.filled().len() - before) as u64;
        }
        result
    }
}

impl AsyncWrite for CountingTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.wire.sent += n as u64;
        }
        result
    }

    // Delegated, not left to the default (which writes only the first
    // slice): rustls hands all its pending records over in one call, and
    // one `writev` is what the per-message shape must cost.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.wire.sent += n as u64;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wss_urls_default_to_443() {
        let (url, tls) = parse_url("wss://localhost/chat").expect("valid");
        assert!(tls);
        assert_eq!(
            (url.host.as_str(), url.port, url.target.as_str()),
            ("localhost", 443, "/chat")
        );
        assert_eq!(host_header(&url, tls), "localhost");
        let (url, tls) = parse_url("wss://127.0.0.1:8443/").expect("valid");
        assert!(tls);
        assert_eq!(url.port, 8443);
        assert_eq!(host_header(&url, tls), "127.0.0.1:8443");
        let (url, _) = parse_url("wss://h:80/").expect("valid");
        assert_eq!(url.port, 80);
        let (url, tls) = parse_url("ws://h/").expect("valid");
        assert!(!tls);
        assert_eq!((url.port, host_header(&url, tls).as_str()), (80, "h"));
        assert!(parse_url("http://h/").is_err());
    }
}
