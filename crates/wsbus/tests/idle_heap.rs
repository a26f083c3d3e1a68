//! What an idle plain WebSocket holds on the heap, counted by the allocator
//! (ARCHITECTURE.md, "Memory per connection"): every allocation still live
//! once N sockets are open and idle, by size, less what was live before.
//!
//! The clients are blocking std sockets on this test's thread, whose
//! handshake reads into a stack buffer: what grows is the server's.

// A counting allocator in front of the system's: the one unsafe code here.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use wsbus::{Runtime, Server, ServerConfig};

/// Live allocations by requested size (the last slot: anything larger).
const SLOTS: usize = 4097;

struct Counting;

static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

fn slot(size: usize) -> usize {
    size.min(SLOTS - 1)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE[slot(layout.size())].fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE[slot(layout.size())].fetch_sub(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
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

#[test]
fn idle_socket_heap_stays_small() {
    const SOCKETS: usize = 2_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hub = rt.block_on(async {
        let runtime = Runtime::new(ServerConfig::default());
        let hub = runtime.hub().clone();
        let server = Server::new(runtime).websocket_fallback(wsbus::echo::Echo);
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(server.serve(listener, std::future::pending()));
        hub
    });
    let mut clients = Vec::with_capacity(SOCKETS * 2);
    // Warm up: the first sockets' one-off allocations (slab pages, maps).
    for _ in 0..SOCKETS {
        clients.push(open(addr));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (before, before_bytes) = snapshot();
    for _ in 0..SOCKETS {
        clients.push(open(addr));
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
    // 1,264 bytes today (ARCHITECTURE.md, "Memory per connection"); the
    // bound leaves room for the map's growth, not for a new 128-byte step
    // of the task cell or the hub entry's bin.
    assert!(
        per_socket <= 1_400.0,
        "an idle socket's heap grew to {per_socket:.0} bytes"
    );
    drop(clients);
    drop(rt);
}
