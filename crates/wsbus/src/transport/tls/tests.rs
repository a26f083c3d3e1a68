//! The TLS socket against real clients over loopback: tokio-rustls (both
//! protocol versions) and OpenSSL's `s_client`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::*;

fn configs(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Arc<ServerConfig>, TlsConnector) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let server = server_config(&server);
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, TlsConnector::from(Arc::new(client)))
}

/// A connected pair: our server socket, and a tokio-rustls client, past
/// the server's first write ("ready"), after which TLS 1.3 continues on
/// wsbus's record layer and TLS 1.2 on rustls's.
async fn pair(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsSocket, tokio_rustls::client::TlsStream<TcpStream>) {
    let (mut server, mut client) = handshake(versions).await;
    assert!(
        matches!(server.conn, Session::Rustls(_)),
        "rustls's until the first write"
    );
    write_all(&mut server, &[b"ready"]).await;
    let mut ready = [0; 5];
    client.read_exact(&mut ready).await.unwrap();
    assert_eq!(&ready, b"ready");
    let tls13 = client.get_ref().1.protocol_version() == Some(ProtocolVersion::TLSv1_3);
    assert_eq!(matches!(server.conn, Session::Tls13(_)), tls13);
    (server, client)
}

/// A connected pair, just past the handshake.
async fn handshake(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsSocket, tokio_rustls::client::TlsStream<TcpStream>) {
    let (server, connector) = configs(versions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let server = accept(tcp, server).await.unwrap();
    (server, client.await.unwrap())
}

fn records(socket: &TlsSocket) -> &Records {
    match &socket.conn {
        Session::Tls13(records) => records,
        _ => panic!("not on wsbus's record layer"),
    }
}

async fn read_some(socket: &mut TlsSocket) -> BytesMut {
    let mut buf = BytesMut::new();
    let n = std::future::poll_fn(|cx| socket.poll_read_buf(cx, &mut buf, 0))
        .await
        .unwrap();
    assert_eq!(n, buf.len());
    buf
}

/// Read until at least `len` bytes came.
async fn read_at_least(socket: &mut TlsSocket, len: usize) -> BytesMut {
    let mut got = BytesMut::new();
    while got.len() < len {
        got.extend_from_slice(&read_some(socket).await);
    }
    got
}

async fn write_all(socket: &mut TlsSocket, bufs: &[&[u8]]) {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = std::future::poll_fn(|cx| Transport::poll_write_vectored(socket, cx, slices))
            .await
            .unwrap();
        IoSlice::advance_slices(&mut slices, n);
    }
    std::future::poll_fn(|cx| Transport::poll_flush(socket, cx))
        .await
        .unwrap();
}

fn holds_no_buffers(socket: &TlsSocket) -> bool {
    socket.incoming.capacity() == 0
        && socket.outgoing.capacity() == 0
        && socket.plaintext.capacity() == 0
}

/// Both protocol versions: data both ways, a burst of slices as one
/// write, messages larger than a record, and no buffer kept after.
#[tokio::test]
async fn exchanges_data_and_keeps_no_buffers_between_messages() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (mut server, mut client) = pair(versions).await;
        assert!(holds_no_buffers(&server), "{server:?} after the handshake");

        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        let got = read_at_least(&mut server, 5).await;
        assert_eq!(&got[..], b"hello");
        assert!(holds_no_buffers(&server), "{server:?} after a read");

        let big = vec![7u8; 100_000];
        write_all(&mut server, &[b"ab", b"cd", &big]).await;
        assert!(holds_no_buffers(&server), "{server:?} after a write");
        let mut echoed = vec![0; 4 + big.len()];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed[..4], b"abcd");
        assert!(echoed[4..].iter().all(|&b| b == 7));

        // Larger than a record and than one read, from the client.
        client.write_all(&big).await.unwrap();
        client.flush().await.unwrap();
        let mut got = 0;
        while got < big.len() {
            got += read_some(&mut server).await.len();
        }
        assert_eq!(got, big.len());
        assert!(holds_no_buffers(&server), "{server:?} after a large read");
    }
}

/// A key update from the client (TLS 1.3): the server follows it and
/// answers with its own, and data keeps flowing both ways.
#[tokio::test]
async fn follows_a_key_update() {
    let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
    for round in 0..3u8 {
        let (rx, tx) = records(&server).key_ids();
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(&[round; 10]).await.unwrap();
        client.flush().await.unwrap();
        let got = read_at_least(&mut server, 10).await;
        assert_eq!(&got[..], &[round; 10]);
        write_all(&mut server, &[&[round + 100; 10]]).await;
        let mut echoed = [0; 10];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, [round + 100; 10]);
        let (new_rx, new_tx) = records(&server).key_ids();
        assert!(new_rx != rx && new_tx != tx, "both keys updated");
    }
}

/// A KeyUpdate asking for ours that rustls read before the hand-over (it
/// came with the client's first data) is answered by rustls ahead of the
/// first record, and then both directions go on under the new keys.
#[tokio::test]
async fn a_key_update_before_the_first_write_is_answered() {
    let (mut server, mut client) = handshake(&[&rustls::version::TLS13]).await;
    client.get_mut().1.refresh_traffic_keys().unwrap();
    client.write_all(b"first").await.unwrap();
    client.flush().await.unwrap();
    let got = read_at_least(&mut server, 5).await;
    assert_eq!(&got[..], b"first");
    for round in 0..3u8 {
        write_all(&mut server, &[&[round; 4]]).await;
        assert!(matches!(server.conn, Session::Tls13(_)));
        let mut echoed = [0; 4];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, [round; 4]);
        client.write_all(&[round + 10; 4]).await.unwrap();
        client.flush().await.unwrap();
        let got = read_at_least(&mut server, 4).await;
        assert_eq!(&got[..], &[round + 10; 4]);
    }
}

/// RFC 8446 §5.5: before our key's confidentiality limit the server
/// sends a KeyUpdate and continues under the next key, which the
/// client follows.
#[tokio::test]
async fn updates_its_key_before_the_limit() {
    let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
    let Session::Tls13(records_mut) = &mut server.conn else {
        unreachable!()
    };
    // Two records per key, then its KeyUpdate.
    records_mut.set_rekey_limit(3);
    let mut keys = vec![records(&server).key_ids().1];
    for round in 0..8u8 {
        write_all(&mut server, &[&[round; 3]]).await;
        let mut got = [0; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [round; 3]);
        let (_, tx) = records(&server).key_ids();
        if keys.last() != Some(&tx) {
            keys.push(tx);
        }
    }
    assert!(keys.len() >= 5, "a key per two records: {keys:?}");
}

/// What the record layer refuses after the handshake, each with the
/// alert RFC 8446 names, which the client reports.
#[tokio::test]
async fn refuses_bad_records_with_the_right_alert() {
    let cases: [(&[u8], &str, &str); 4] = [
        // A record that does not authenticate.
        (
            &[
                23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
                20,
            ],
            "authentication",
            "BadRecordMac",
        ),
        // An unprotected alert.
        (&[21, 3, 3, 0, 2, 1, 0], "unprotected", "UnexpectedMessage"),
        // A change_cipher_spec after the handshake.
        (&[20, 3, 3, 0, 1, 1], "unprotected", "UnexpectedMessage"),
        // Longer than a record may be.
        (&[23, 3, 3, 0x48, 0x01], "2^14 + 256", "RecordOverflow"),
    ];
    for (bytes, reason, alert) in cases {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        client.get_mut().0.write_all(bytes).await.unwrap();
        let mut buf = BytesMut::new();
        let err = std::future::poll_fn(|cx| server.poll_read_buf(cx, &mut buf, 0))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(reason), "{err} for {bytes:?}");
        let err = client.read_u8().await.unwrap_err();
        assert!(
            err.to_string().contains(alert),
            "client saw {err} for {bytes:?}"
        );
    }
}

/// OpenSSL as the client (its own TLS 1.3 records and KeyUpdate code):
/// `s_client` sends a KeyUpdate asking for ours (`K`), then one that
/// does not (`k`), with a line after each; the server echoes the lines.
#[tokio::test]
async fn openssl_client_with_key_updates() {
    // A test that fails, not one that hangs, if s_client misbehaves.
    tokio::time::timeout(std::time::Duration::from_secs(60), openssl_client_session())
        .await
        .expect("the s_client session finished within a minute");
}

async fn openssl_client_session() {
    let openssl = std::env::var("OPENSSL").unwrap_or_else(|_| "openssl".to_owned());
    let (server_config, _) = configs(&[&rustls::version::TLS13]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = tokio::process::Command::new(&openssl)
        .args(["s_client", "-tls1_3", "-connect", &addr.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("{openssl} (the OPENSSL variable names another): {err}"));
    let (tcp, _) = listener.accept().await.unwrap();
    let mut server = accept(tcp, server_config).await.unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(client.stdout.take().unwrap());
    let mut seen = String::new();
    // The first write hands the connection over to wsbus's record layer.
    write_all(&mut server, &[b"ready\n"]).await;
    while !seen.contains("ready") {
        let mut out = String::new();
        let n = tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut out)
            .await
            .unwrap();
        assert!(n > 0, "s_client ended before the first line: {seen}");
        seen.push_str(&out);
    }
    for (command, line) in [("K\n", "after-requested\n"), ("k\n", "after-unrequested\n")] {
        // s_client reads a command and a line given together as one
        // command: the line goes only once the KeyUpdate has arrived.
        let (rx, tx) = records(&server).key_ids();
        stdin.write_all(command.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        std::future::poll_fn(|cx| {
            let mut nothing = BytesMut::new();
            if let Poll::Ready(result) = server.poll_read_buf(cx, &mut nothing, 0) {
                panic!("no data or end expected before the KeyUpdate: {result:?}");
            }
            if records(&server).key_ids().0 == rx {
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await;
        let (_, new_tx) = records(&server).key_ids();
        assert_eq!(
            new_tx != tx,
            command == "K\n",
            "our key follows only when asked"
        );
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        let mut got = BytesMut::new();
        while !got.ends_with(line.as_bytes()) {
            got.extend_from_slice(&read_some(&mut server).await);
        }
        write_all(&mut server, &[b"echo:", line.as_bytes()]).await;
        let want = format!("echo:{line}");
        while !seen.contains(&want) {
            let mut out = String::new();
            let n = tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut out)
                .await
                .unwrap();
            assert!(n > 0, "s_client ended before the echo of {line:?}: {seen}");
            seen.push_str(&out);
        }
    }
}

/// Closing: the peer's close_notify is end of stream; ours is sent
/// before the FIN, so the client sees a clean end, not a truncation.
#[tokio::test]
async fn close_notify_both_ways() {
    let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
    client.shutdown().await.unwrap(); // close_notify, then FIN
    assert!(read_some(&mut server).await.is_empty(), "end of stream");
    std::future::poll_fn(|cx| Transport::poll_shutdown(&mut server, cx))
        .await
        .unwrap();
    let mut rest = Vec::new();
    // An error here (UnexpectedEof) would mean no close_notify came.
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

/// What a plain-HTTP client sends to a TLS port fails the handshake
/// with an error, and the client is told with an alert record.
#[tokio::test]
async fn not_tls_fails_the_handshake_with_an_alert() {
    let (server, _) = configs(&[&rustls::version::TLS13]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply).await;
        reply
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = accept(tcp, server).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let reply = client.await.unwrap();
    assert_eq!(reply.first(), Some(&0x15), "an alert record: {reply:?}");
}
