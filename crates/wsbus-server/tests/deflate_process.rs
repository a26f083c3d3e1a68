//! permessage-deflate's memory with real clients (SPEC §1: "With the default
//! configuration an idle connection holds no compression state, even after
//! it exchanged compressed messages with a client that offers context
//! takeover"). The clients are Python `websockets` (conformance/.venv): its
//! default client offers `permessage-deflate; client_max_window_bits`, with
//! context takeover, as browsers do.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use wsbus_test_support::process::ServerProcess;
use wsbus_test_support::procfs;
use wsbus_test_support::wire::upgrade;

mod common;

/// Idle connections measured at once: enough that the server's maps, task
/// slabs and allocator pages growing in steps average out (with 200 the
/// per-connection figure varied by a few hundred bytes).
const CLIENTS: usize = 2_000;

/// Connections opened first and kept open through the measurement, which
/// compares the server's RSS with these alone and with [`CLIENTS`] more. They
/// create each worker thread's shared compressor and pooled decompressors
/// (at most `INFLATER_POOL_PER_WINDOW` per window size), which are per
/// thread, not per connection. Kept open rather than closed: memory freed
/// before the baseline would be reused by the measured connections (the
/// allocator keeps some), which made the figure read 0.
const WARM_UP_CLIENTS: usize = 200;

/// SPEC §1's bound on what an idle connection that exchanged compressed
/// messages may hold, in bytes: the ~1.3 KiB of an idle uncompressed socket
/// (ARCHITECTURE.md "Memory per connection") plus margin for allocator
/// rounding. A zlib stream of its own would be at least 7 KiB (inflate state)
/// and 256 KiB (deflate at 15 bits).
const MAX_IDLE_BYTES_PER_CONNECTION: u64 = 2 * 1024;

/// How long the clients may take to connect and exchange their message: a
/// few seconds normally, far more on a loaded machine.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the server's RSS is watched once the clients are idle: its lowest
/// value then is what the connections hold, without what the last round
/// trips still held for a moment.
const SETTLE_WATCH: Duration = Duration::from_millis(500);

/// The clients: open `sys.argv[2]` connections to `sys.argv[1]`, 100 at a
/// time, each sending one ~200-byte JSON message and reading the echo; then
/// print one JSON line (the negotiated extension headers, and how many frames
/// were compressed each way, counted at the extension) and keep the
/// connections open until stdin closes.
const CLIENTS_PY: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
from websockets.extensions import permessage_deflate as pmd

counts = {"sent_compressed": 0, "received_compressed": 0}
encode, decode = pmd.PerMessageDeflate.encode, pmd.PerMessageDeflate.decode
def counting_encode(self, frame):
    frame = encode(self, frame)
    counts["sent_compressed"] += frame.rsv1
    return frame
def counting_decode(self, frame, **kw):
    counts["received_compressed"] += frame.rsv1
    return decode(self, frame, **kw)
pmd.PerMessageDeflate.encode, pmd.PerMessageDeflate.decode = counting_encode, counting_decode

async def one(url, i):
    # No keepalive pings: the connections must stay idle while measured.
    ws = await connect(url, ping_interval=None, open_timeout=120, max_size=None)
    message = json.dumps({"type": "chat", "room": "lobby", "user": f"user-{i:05}",
                          "text": "Hello everyone, this is a message of about two hundred bytes "
                                  "to measure what compression leaves behind.",
                          "sent": 1765000000000 + i})
    await ws.send(message)
    assert await ws.recv() == message
    return ws

async def main(url, n):
    conns = []
    for start in range(0, n, 100):
        conns += await asyncio.gather(*(one(url, i) for i in range(start, min(n, start + 100))))
    extensions = sorted({ws.response.headers.get("Sec-WebSocket-Extensions", "") for ws in conns})
    print(json.dumps({"connections": len(conns), "extensions": extensions, **counts}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(ws.close() for ws in conns))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"#;

/// A running client process, its connections open until [`Clients::finish`].
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    report: Value,
}

impl Clients {
    /// Start `count` clients against `ws://addr/` and wait until each has
    /// exchanged its message.
    fn start(addr: &str, count: usize) -> Self {
        let python =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/.venv/bin/python");
        assert!(
            python.exists(),
            "the Python venv is missing: run conformance/setup.sh"
        );
        let mut child = Command::new(python)
            .args([
                "-c",
                CLIENTS_PY,
                &format!("ws://{addr}/"),
                &count.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python clients");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(CLIENTS_TIMEOUT)
            .expect("the clients' report in time");
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the clients failed ({e}): {line:?}"));
        Clients {
            stdin: child.stdin.take(),
            child,
            report,
        }
    }

    /// Close the connections and wait for the process.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the clients");
        assert!(status.success(), "the clients exited with {status}");
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's lowest RSS over [`SETTLE_WATCH`], in KiB.
fn settled_rss_kib(pid: u32) -> u64 {
    procfs::settled_rss_kib(pid, SETTLE_WATCH).expect("server VmRSS")
}

/// What `count` idle connections that each exchanged one compressed message
/// add to the server's RSS, in bytes per connection, and the clients' report.
fn idle_bytes_per_connection(server: &ServerProcess, count: usize) -> (u64, Value) {
    let warm_up = Clients::start(&server.addr, WARM_UP_CLIENTS);
    let before = settled_rss_kib(server.pid());
    let clients = Clients::start(&server.addr, count);
    let after = settled_rss_kib(server.pid());
    let report = clients.report.clone();
    clients.finish();
    warm_up.finish();
    let per_connection = after.saturating_sub(before) * 1024 / count as u64;
    eprintln!(
        "server RSS {before} KiB -> {after} KiB with {count} idle connections: \
         {per_connection} bytes each; clients: {report}"
    );
    (per_connection, report)
}

#[test]
fn idle_connections_hold_no_compression_state_by_default() {
    let server = common::echo(&[common::RELEASE_FREED_MEMORY_AT_ONCE]);
    let (per_connection, report) = idle_bytes_per_connection(&server, CLIENTS);
    assert_eq!(report["connections"], CLIENTS);
    // RFC 7692 §7.1.1.1, §7.1.1.2: the server declares and requests no
    // context takeover although the offer did not mention it.
    assert_eq!(
        report["extensions"],
        serde_json::json!([
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ])
    );
    // Every message went compressed both ways.
    assert_eq!(report["sent_compressed"], CLIENTS);
    assert_eq!(report["received_compressed"], CLIENTS);
    assert!(
        per_connection <= MAX_IDLE_BYTES_PER_CONNECTION,
        "{per_connection} bytes per idle connection (bound {MAX_IDLE_BYTES_PER_CONNECTION})"
    );
}

/// `wsbus serve` answers a browser's offer the same way (its `[deflate]`
/// defaults): checked on the demo's `/chat`.
#[test]
fn serve_answers_without_context_takeover_by_default() {
    let server = common::serve(&[]);
    let upgraded = upgrade(
        &server.addr,
        "/chat",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        Duration::from_secs(20),
    )
    .expect("upgrade on /chat");
    assert!(
        upgraded.head.to_ascii_lowercase().contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ),
        "{}",
        upgraded.head
    );
}

/// The opt-in, measured for the documentation (README "Limits"): far more
/// than the default, as the protocol's windows and zlib's tables imply. Not
/// a bound on the cost, only proof that the measurement above would see a
/// stream left behind.
#[test]
fn context_takeover_keeps_zlib_state_per_connection() {
    const TAKEOVER_CLIENTS: usize = 200;
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--deflate-context-takeover",
        ],
        &[common::RELEASE_FREED_MEMORY_AT_ONCE],
    );
    let (per_connection, report) = idle_bytes_per_connection(&server, TAKEOVER_CLIENTS);
    assert_eq!(
        report["extensions"],
        serde_json::json!(["permessage-deflate"])
    );
    // At least the 32 KiB inflate window both peers' messages went through
    // is touched; a stream of our own to deflate costs more.
    assert!(
        per_connection > 32 * 1024,
        "{per_connection} bytes per idle connection with context takeover"
    );
}
