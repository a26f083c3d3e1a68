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

use std::net::SocketAddr;

/// The path whose sockets receive every message sent on it.
pub const BROADCAST_PATH: &str = "/broadcast";

/// The address from `--listen ADDR` (default `127.0.0.1:9001`); exits with a
/// usage message on anything else.
pub fn listen_addr() -> SocketAddr {
    let mut args = std::env::args().skip(1);
    let mut addr = String::from("127.0.0.1:9001");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(value)) => addr = value,
            _ => usage(),
        }
    }
    addr.parse().unwrap_or_else(|_| usage())
}

fn usage() -> ! {
    let name = std::env::args().next().unwrap_or_default();
    eprintln!("usage: {name} [--listen HOST:PORT]");
    std::process::exit(2)
}
