//! `wsbus echo` as a process: what an operator runs, checked from outside.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct EchoProcess {
    child: Child,
    addr: String,
}

impl EchoProcess {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsbus"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsbus echo");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("ws://")
            .next()
            .expect("listening line")
            .to_owned();
        EchoProcess { child, addr }
    }

    /// Peak resident memory of the server process, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open a WebSocket with permessage-deflate by hand; returns the stream.
fn upgrade_with_deflate(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    stream
}

/// 1 GiB of zeros as one deflated message body (about 1 MiB: DEFLATE
/// cannot do better than ~1032:1), from one steady-state block repeated.
fn bomb() -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut deflater = Compress::new(Compression::best(), false);
    let mut block = |input: &[u8]| {
        let mut out = Vec::with_capacity(64 * 1024);
        deflater
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    };
    let mut body = block(&zeros);
    let steady = block(&zeros);
    for _ in 1..1024 {
        body.extend_from_slice(&steady);
    }
    body.truncate(body.len() - 4);
    body
}

#[test]
fn decompression_bomb_is_closed_with_1009_and_memory_stays_bounded() {
    let server = EchoProcess::start();
    let before = server.peak_rss_kib();
    let mut stream = upgrade_with_deflate(&server.addr);
    let body = bomb();
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0xC2, 0xFF]; // FIN + RSV1, binary; masked, 64-bit length
    frame.extend_from_slice(&(body.len() as u64).to_be_bytes());
    frame.extend_from_slice(&key);
    frame.extend(body.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    // The server may stop reading and close early: a failed write is fine.
    let _ = stream.write_all(&frame);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(reply.len() >= 4, "expected a close frame, got {reply:?}");
    assert_eq!(reply[0], 0x88);
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 1009);
    let grown_mib = (server.peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!("server peak RSS grew by {grown_mib} MiB");
    // The inflated-size limit of `wsbus echo` is 64 MiB; the bomb is 1 GiB.
    assert!(grown_mib < 160, "server memory grew by {grown_mib} MiB");

    // The process survived and serves the next client.
    let mut stream = upgrade_with_deflate(&server.addr);
    stream
        .write_all(&[0x81, 0x82, 0, 0, 0, 0, b'o', b'k'])
        .unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(echo, [0x81, 2, b'o', b'k']);
}

#[test]
fn interactive_client_sends_lines_and_prints_messages() {
    let server = EchoProcess::start();
    let mut client = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["client", &format!("ws://{}/", server.addr), "--deflate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all("first line\nsecond ☃\n".as_bytes())
        .unwrap();
    let output = client.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "first line\nsecond ☃\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("permessage-deflate") && stderr.contains("closed: 1000"),
        "{stderr}"
    );
}

/// Run `wsbus bench <args>` against `server` and parse its JSON report.
fn bench(server: &EchoProcess, path: &str, args: &[&str]) -> serde_json::Value {
    let pid = server.child.id().to_string();
    let url = format!("ws://{}{path}", server.addr);
    let output = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .arg("bench")
        .args(args)
        .args(["--url", &url, "--server-pid", &pid])
        .args(["--duration", "0.5", "--warmup", "0.2"])
        .output()
        .expect("run wsbus bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report on stdout")
}

#[test]
fn bench_measures_every_scenario_against_wsbus_echo() {
    let server = EchoProcess::start();

    for extra in [&["--binary"][..], &["--deflate"][..]] {
        let echo = bench(
            &server,
            "/",
            &[["echo", "-c", "4", "-s", "1000"].as_slice(), extra].concat(),
        );
        assert_eq!(echo["errors"], 0, "{echo}");
        assert!(echo["messages"].as_u64().unwrap() > 0, "{echo}");
        assert!(echo["p99_us"].as_u64().unwrap() >= echo["p50_us"].as_u64().unwrap());
        // The server's CPU is read from /proc: it did some work per message.
        assert!(echo["server_cpu_us_per_op"].as_f64().is_some(), "{echo}");
    }

    // Every message reaches every subscriber once, in order.
    let fanout = bench(
        &server,
        "/broadcast",
        &["fanout", "-c", "200", "--window", "8"],
    );
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["errors"], 0, "{fanout}");
    assert!(fanout["deliveries"].as_u64().unwrap() >= 200, "{fanout}");

    let connect = bench(&server, "/", &["connect", "-k", "4"]);
    assert_eq!(connect["errors"], 0, "{connect}");
    assert!(connect["cycles"].as_u64().unwrap() > 0, "{connect}");

    let idle = bench(&server, "/", &["idle", "-c", "300", "--settle", "0.3"]);
    assert_eq!(idle["connections"], 300);
    assert_eq!(idle["closed_by_server"], 0, "{idle}");
    assert!(
        idle["rss_after_kib"].as_u64() >= idle["rss_before_kib"].as_u64(),
        "{idle}"
    );
}
