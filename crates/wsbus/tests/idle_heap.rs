//! What an idle WebSocket holds on the heap, plain and over TLS, counted by
//! the allocator (ARCHITECTURE.md, "Memory per connection"): every
//! allocation made by the server's threads and still live once N sockets are
//! open and idle, by size, less what was live before.
//!
//! Only the server runtime's threads are counted, so the clients (a second
//! runtime for the TLS clients) do not add to it; the two tests take turns.

// A counting allocator in front of the system's: the one unsafe code here.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use wsbus::{Runtime, Server, ServerConfig};

/// Live allocations by requested size (the last slot: anything larger).
const SLOTS: usize = 4097;

struct Counting;

thread_local! {
    /// Set on the server runtime's threads: only their allocations count.
    static SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    SERVER_THREAD.try_with(Cell::get).unwrap_or(false)
}

/// The tests share the counters: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

fn slot(size: usize) -> usize {
    size.min(SLOTS - 1)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE[slot(layout.size())].fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE[slot(layout.size())].fetch_sub(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (Vec<i64>, i64) {
    (
        LIVE.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
        LIVE_BYTES.load(Ordering::Relaxed),
    )
}

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn open(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(REQUEST).unwrap();
    let mut buf = [0u8; 512];
    let mut len = 0;
    while !buf[..len].ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf[len..]).unwrap();
        assert!(n > 0, "closed during the handshake");
        len += n;
    }
    assert!(buf.starts_with(b"HTTP/1.1 101"));
    stream
}

/// An echo server (`tls` or not) on a runtime whose threads' allocations
/// are counted: the runtime, the server's hub and its address.
fn start_echo(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (tokio::runtime::Runtime, wsbus::Hub, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| SERVER_THREAD.set(true))
        .enable_all()
        .build()
        .unwrap();
    let hub = rt.block_on(async {
        let runtime = Runtime::new(ServerConfig::default());
        let hub = runtime.hub().clone();
        let mut server = Server::new(runtime).websocket_fallback(wsbus::echo::Echo);
        if let Some(acceptor) = tls {
            server = server.tls(acceptor);
        }
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(server.serve(listener, std::future::pending()));
        hub
    });
    (rt, hub, addr)
}

/// Open `SOCKETS` sockets with `open`, then `SOCKETS` more, and return the
/// server's live heap per socket that the second batch added, once idle.
fn idle_heap_per_socket<C>(hub: &wsbus::Hub, mut open: impl FnMut() -> C) -> f64 {
    const SOCKETS: usize = 2_000;
    let mut clients = Vec::with_capacity(SOCKETS * 2);
    // Warm up: the first sockets' one-off allocations (slab pages, maps).
    for _ in 0..SOCKETS {
        clients.push(open());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (before, before_bytes) = snapshot();
    for _ in 0..SOCKETS {
        clients.push(open());
    }
    while hub.len() < 2 * SOCKETS {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Idle once what the handshakes left behind is freed: the live heap
    // stops shrinking.
    let (mut after, mut after_bytes) = snapshot();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let (now, now_bytes) = snapshot();
        if now_bytes >= after_bytes {
            break;
        }
        (after, after_bytes) = (now, now_bytes);
    }
    let per_socket = (after_bytes - before_bytes) as f64 / SOCKETS as f64;
    eprintln!("live heap per idle socket: {per_socket:.1} bytes requested");
    for (size, (a, b)) in after.iter().zip(&before).enumerate() {
        let n = a - b;
        if n.unsigned_abs() as usize >= SOCKETS / 20 {
            eprintln!(
                "  size {size:>5}: {:+.3} per socket ({n:+})",
                n as f64 / SOCKETS as f64
            );
        }
    }
    drop(clients);
    per_socket
}

#[test]
fn idle_socket_heap_stays_small() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (rt, hub, addr) = start_echo(None);
    let per_socket = idle_heap_per_socket(&hub, || open(addr));
    // 1,264 bytes today (ARCHITECTURE.md, "Memory per connection"); the
    // bound leaves room for the map's growth, not for a new 128-byte step
    // of the task cell or the hub entry's bin.
    assert!(
        per_socket <= 1_400.0,
        "an idle socket's heap grew to {per_socket:.0} bytes"
    );
    drop(rt);
}

/// Over TLS 1.3 the record layer is wsbus's once the handshake is over: an
/// idle socket keeps its traffic keys as bytes and rustls only what derives
/// the next ones, not two expanded AES-GCM keys (1,120 bytes) and the
/// handshake's state.
#[test]
fn idle_tls_socket_heap_stays_small() {
    use tokio_rustls::rustls::{self, pki_types};

    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config));

    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_config));
    let (rt, hub, addr) = start_echo(Some(acceptor));
    // The clients' runtime: its threads are not counted.
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let per_socket = idle_heap_per_socket(&hub, || {
        clients.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(REQUEST).await.unwrap();
            let mut buf = [0u8; 512];
            let mut len = 0;
            while !buf[..len].ends_with(b"\r\n\r\n") {
                let n = tls.read(&mut buf[len..]).await.unwrap();
                assert!(n > 0, "closed during the handshake");
                len += n;
            }
            assert!(buf.starts_with(b"HTTP/1.1 101"));
            tls
        })
    });
    // Measured: ~2,300 bytes (rustls's key-update state ~1 KiB, the
    // socket ~1.3 KiB); rustls's record layer kept ~3,200 more.
    assert!(
        per_socket <= 2_800.0,
        "an idle TLS socket's heap grew to {per_socket:.0} bytes"
    );
    drop(rt);
}
