//! wss://: the same server over TLS (rustls), with a self-signed certificate.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use wsbus::proto::handshake::{ClientHandshake, ClientRequest};
use wsbus::proto::{Connection, Event, Limits, Message};
use wsbus::{Runtime, Server, ServerConfig};

/// Serve `server` over TLS with a fresh self-signed certificate for
/// `localhost`; returns the port and a client that trusts it.
async fn serve_tls(name: &str, server: Server) -> (u16, TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wsbus-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let acceptor = wsbus::tls_acceptor(&cert_path, &key_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.tls(acceptor).serve(listener, std::future::pending()));

    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (port, TlsConnector::from(Arc::new(config)))
}

#[tokio::test]
async fn echo_over_tls_with_the_https_origin_rule() {
    let (port, connector) = serve_tls(
        "tls",
        Server::new(Runtime::new(ServerConfig::default())).websocket("/chat", ChatLike),
    )
    .await;

    for (origin, expect_open) in [
        (format!("https://localhost:{port}"), true),
        (format!("http://localhost:{port}"), false),
    ] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let request = ClientRequest {
            host: format!("localhost:{port}"),
            target: "/chat".into(),
            headers: vec![("Origin".into(), origin.clone())],
            ..ClientRequest::default()
        };
        let (handshake, bytes) = ClientHandshake::new(&request, [5; 16]);
        tls.write_all(&bytes).await.unwrap();
        let mut buf = BytesMut::new();
        let result = loop {
            if tls.read_buf(&mut buf).await.unwrap() == 0 {
                break None;
            }
            match handshake.parse_response(&buf) {
                Ok(Some((_, len))) => break Some(len),
                Ok(None) => continue,
                Err(err) => {
                    assert!(!expect_open, "{origin}: {err}");
                    assert!(err.to_string().contains("403"), "{err}");
                    break None;
                }
            }
        };
        if !expect_open {
            assert!(result.is_none(), "{origin} must be refused over TLS");
            continue;
        }
        let _ = buf.split_to(result.expect("101 for the https origin"));
        let mut conn = Connection::client(Limits::default(), Box::new(|| [1, 2, 3, 4]));
        conn.send(Message::text("secure hello")).unwrap();
        while !conn.outgoing().is_empty() {
            let chunk = conn.outgoing().chunk().to_vec();
            tls.write_all(&chunk).await.unwrap();
            conn.outgoing().advance(chunk.len());
        }
        tls.flush().await.unwrap();
        let echoed = loop {
            conn.handle_read(&mut buf);
            if let Some(Event::Message(m)) = conn.poll_event() {
                break m;
            }
            assert!(
                tls.read_buf(&mut buf).await.unwrap() > 0,
                "connection closed early"
            );
        };
        assert_eq!(echoed, Message::text("secure hello"));
    }

    // Many records at once, and messages larger than a record (16 KiB) and
    // than one read: the socket task reads only when the TCP socket is
    // readable, unless rustls already holds plaintext a smaller read left
    // behind — lose that case and an echo never comes.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let request = ClientRequest {
        host: format!("localhost:{port}"),
        target: "/chat".into(),
        headers: vec![("Origin".into(), format!("https://localhost:{port}"))],
        ..ClientRequest::default()
    };
    let (handshake, bytes) = ClientHandshake::new(&request, [6; 16]);
    tls.write_all(&bytes).await.unwrap();
    let mut buf = BytesMut::new();
    let len = loop {
        assert!(tls.read_buf(&mut buf).await.unwrap() > 0, "closed early");
        if let Some((_, len)) = handshake.parse_response(&buf).unwrap() {
            break len;
        }
    };
    let _ = buf.split_to(len);
    let mut conn = Connection::client(Limits::default(), Box::new(|| [9, 8, 7, 6]));
    let sizes: Vec<usize> = (0..300)
        .map(|i| match i % 10 {
            0 => 40_000 + i * 100,
            5 => 50_000,
            _ => i,
        })
        .collect();
    for (i, &size) in sizes.iter().enumerate() {
        conn.send(Message::binary(vec![i as u8; size])).unwrap();
    }
    // All of it in as few writes as possible, so that the server receives
    // full socket buffers of records. About 3.2 MB in all: below the 4 MiB
    // of queued replies at which the server stops reading, so writing it
    // all before reading cannot deadlock.
    while !conn.outgoing().is_empty() {
        let chunk = conn.outgoing().chunk().to_vec();
        tls.write_all(&chunk).await.unwrap();
        conn.outgoing().advance(chunk.len());
    }
    tls.flush().await.unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        let echoed = loop {
            conn.handle_read(&mut buf);
            if let Some(Event::Message(m)) = conn.poll_event() {
                break m;
            }
            assert!(tls.read_buf(&mut buf).await.unwrap() > 0, "closed early");
        };
        assert_eq!(echoed, Message::binary(vec![i as u8; size]), "message {i}");
    }
}

/// Plain HTTPS through the router: several requests on one kept-alive
/// connection, a response larger than a TLS record and than one write, and
/// a request body sent in many small records.
#[tokio::test]
async fn https_requests_share_a_connection() {
    let big = "x".repeat(300_000);
    let router = axum::Router::new()
        .route("/big", axum::routing::get(move || async move { big }))
        .route(
            "/len",
            axum::routing::post(|body: bytes::Bytes| async move { body.len().to_string() }),
        );
    let (port, connector) = serve_tls(
        "https",
        Server::new(Runtime::new(ServerConfig::default())).router(router),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();

    /// Read one response with a `content-length`; returns its body.
    async fn response(
        tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        buf: &mut BytesMut,
    ) -> Vec<u8> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("content-length")
                    .trim()
                    .parse()
                    .unwrap();
                while buf.len() < end + 4 + len {
                    assert!(tls.read_buf(buf).await.unwrap() > 0, "closed early");
                }
                let _ = buf.split_to(end + 4);
                return buf.split_to(len).to_vec();
            }
            assert!(tls.read_buf(buf).await.unwrap() > 0, "closed early");
        }
    }

    let mut buf = BytesMut::new();
    for _ in 0..3 {
        tls.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let body = response(&mut tls, &mut buf).await;
        assert_eq!(body.len(), 300_000);
        assert!(body.iter().all(|&b| b == b'x'));

        // The body in 1,000 records of 50 bytes.
        tls.write_all(b"POST /len HTTP/1.1\r\nHost: localhost\r\ncontent-length: 50000\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..1000 {
            tls.write_all(&[b'y'; 50]).await.unwrap();
            tls.flush().await.unwrap();
        }
        assert_eq!(response(&mut tls, &mut buf).await, b"50000");
    }
}

/// Echo with the default origin rule (so the scheme matters).
struct ChatLike;

impl wsbus::app::WebSocketApp for ChatLike {
    type Data = ();
    fn upgrade(&self, _req: &wsbus::app::HandshakeRequest) -> wsbus::app::Upgrade<()> {
        wsbus::app::Upgrade::Accept(wsbus::app::WebSocketConfig::new(()))
    }
    fn on_event(&self, mut event: wsbus::app::WsEvent<'_, ()>) {
        if let wsbus::app::EventKind::Message(m) = &event.kind {
            let m = m.clone();
            let _ = event.send(m);
        }
    }
}
