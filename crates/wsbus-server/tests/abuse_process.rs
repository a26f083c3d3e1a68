//! `wsbus echo` as a process under abuse, checked from outside: a reader
//! that never reads while another client floods the broadcast path, and a
//! SIGTERM with a thousand sockets open.
//!
//! Std only: raw WebSocket over `std::net::TcpStream`, threads, `/proc`.
//! Every wait is bounded; failures say what was expected and what was seen,
//! with the tail of the server's log.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

struct EchoProcess {
    child: Child,
    addr: String,
    started: Instant,
    /// Every stderr line after the first, stamped with seconds since start.
    log: Arc<Mutex<Vec<String>>>,
}

impl EchoProcess {
    fn start() -> Self {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsbus"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsbus echo");
        // Keep draining stderr for the whole run: the log explains failures,
        // and a closed pipe would turn the server's log writes into errors.
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (first_tx, first_rx) = mpsc::channel();
        {
            let log = log.clone();
            thread::spawn(move || {
                let mut lines = BufReader::new(stderr).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = first_tx.send(first);
                }
                for line in lines.map_while(Result::ok) {
                    let at = started.elapsed().as_secs_f64();
                    log.lock().unwrap().push(format!("[{at:7.3}s] {line}"));
                }
            });
        }
        let first = first_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("`wsbus echo` printed no listening line within 30 s");
        let addr = first
            .trim()
            .rsplit("ws://")
            .next()
            .filter(|_| first.contains("listening on ws://"))
            .unwrap_or_else(|| panic!("unexpected first stderr line: {first:?}"))
            .to_owned();
        EchoProcess {
            child,
            addr,
            started,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }

    /// The server's log so far, last `n` lines.
    fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(n);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("  ... ({skip} earlier lines)\n"));
        }
        for line in &log[skip..] {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        if out.is_empty() {
            out.push_str("  (no log lines)\n");
        }
        out
    }

    /// Wait for the process to exit, at most until `deadline`.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Socket file descriptors the process holds.
fn socket_fds(pid: u32) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count(),
    )
}

// ---------------------------------------------------------------------------
// Raw WebSocket, client side
// ---------------------------------------------------------------------------

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;

/// Connect and upgrade on `path` (no extensions); the stream has the given
/// read timeout.
fn upgrade(addr: &str, path: &str, read_timeout: Duration) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            return Err(io::Error::other("response head over 16 KiB"));
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.to_ascii_lowercase().starts_with("http/1.1 101") {
        return Err(io::Error::other(format!("expected 101, got {head:?}")));
    }
    Ok(stream)
}

/// One masked, final client frame.
fn masked_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A frame from the server.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Frame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    fn close_reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }
}

/// Read one frame (any read timeout of the stream applies to each read).
fn read_frame(stream: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 128 << 20 {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    let mut key = [0u8; 4];
    if masked {
        stream.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Frame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0F,
        masked,
        payload,
    })
}

/// Split received bytes into complete frames: (opcode, payload length,
/// close code), and how many bytes trail after the last complete frame.
fn parse_frames(mut bytes: &[u8]) -> (Vec<(u8, usize, Option<u16>)>, usize) {
    let mut frames = Vec::new();
    loop {
        if bytes.len() < 2 {
            break;
        }
        let (len, mut at) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if bytes[1] & 0x80 != 0 {
            at += 4; // a masked server frame would be a bug; skip the key anyway
        }
        if bytes.len() < at + len {
            break;
        }
        let opcode = bytes[0] & 0x0F;
        let code = (opcode == OP_CLOSE && len >= 2)
            .then(|| u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        frames.push((opcode, len, code));
        bytes = &bytes[at + len..];
    }
    (frames, bytes.len())
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------------------
// 1. A reader that never reads, under a 200 MiB broadcast flood
// ---------------------------------------------------------------------------

const FLOOD_MESSAGE: usize = 64 * 1024;
const FLOOD_MESSAGES: usize = 3200; // 200 MiB
/// Peak server RSS growth allowed during the flood. The outbound queue of a
/// socket is bounded at 8 MiB (the stuck reader's) and reading from a peer
/// pauses at 4 MiB queued (the flooder's); without a bound the stuck
/// reader's queue alone would grow to ~200 MiB.
const MAX_RSS_GROWTH_MIB: u64 = 64;

/// What the flooder's reader thread saw.
#[derive(Debug, Default)]
struct FloodEchoes {
    texts: usize,
    binaries: usize,
    binary_bytes: usize,
    other: Vec<String>,
    error: Option<String>,
}

#[test]
fn slow_consumer_is_closed_and_server_memory_stays_bounded() {
    let mut server = EchoProcess::start();
    let pid = server.pid();
    let addr = server.addr.clone();

    // A: joins /broadcast and never reads (until the flood is over).
    let mut a = upgrade(&addr, "/broadcast", Duration::from_secs(20)).expect("A: upgrade");
    // B: joins /broadcast, floods it, and reads every echo in a thread.
    let mut b = upgrade(&addr, "/broadcast", Duration::from_secs(30)).expect("B: upgrade");

    let echoes = Arc::new(Mutex::new(FloodEchoes::default()));
    let reader = {
        let echoes = echoes.clone();
        let b_read = b.try_clone().unwrap();
        thread::spawn(move || {
            let mut r = BufReader::with_capacity(256 * 1024, b_read);
            loop {
                match read_frame(&mut r) {
                    Ok(f) if f.opcode == OP_TEXT => echoes.lock().unwrap().texts += 1,
                    Ok(f) if f.opcode == OP_BINARY && f.fin => {
                        let mut e = echoes.lock().unwrap();
                        e.binaries += 1;
                        e.binary_bytes += f.payload.len();
                        if e.binaries == FLOOD_MESSAGES {
                            return r.into_inner();
                        }
                    }
                    Ok(f) => {
                        let mut e = echoes.lock().unwrap();
                        e.other.push(format!(
                            "fin={} opcode={:#x} masked={} len={} close={:?} {:?}",
                            f.fin,
                            f.opcode,
                            f.masked,
                            f.payload.len(),
                            f.close_code(),
                            f.close_reason()
                        ));
                        if f.opcode == OP_CLOSE {
                            e.error = Some("B got a close frame".into());
                            return r.into_inner();
                        }
                    }
                    Err(err) => {
                        echoes.lock().unwrap().error = Some(format!("B read: {err}"));
                        return r.into_inner();
                    }
                }
            }
        })
    };

    // Both are in the group once B hears a message A sent: A's own task
    // joined the group (on open) before it handled A's message, and B's
    // receiving it means B had joined too. A sends, so it never reads.
    let ready = masked_frame(OP_TEXT, b"ready", [9, 8, 7, 6]);
    let sync_deadline = Instant::now() + Duration::from_secs(20);
    while echoes.lock().unwrap().texts == 0 {
        assert!(
            Instant::now() < sync_deadline,
            "B heard none of A's messages on /broadcast within 20 s\nserver log:\n{}",
            server.log_tail(30)
        );
        a.write_all(&ready).expect("A: send ready");
        thread::sleep(Duration::from_millis(100));
    }

    let rss_before = server.status_kib("VmRSS").expect("server VmRSS");
    let fds_before = socket_fds(pid).expect("server fds");

    // Sample the server during the flood: RSS, and when A's socket is let go.
    let stop = Arc::new(AtomicBool::new(false));
    let flood_started = Instant::now();
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut peak_rss = 0;
            let mut samples = 0usize;
            let mut fd_dropped_at = None;
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status_kib(pid, "VmRSS") {
                    peak_rss = peak_rss.max(rss);
                    samples += 1;
                }
                if fd_dropped_at.is_none() && socket_fds(pid).is_some_and(|n| n < fds_before) {
                    fd_dropped_at = Some(flood_started.elapsed());
                }
                thread::sleep(Duration::from_millis(10));
            }
            (peak_rss, samples, fd_dropped_at)
        })
    };

    // The flood: 200 MiB as 64 KiB masked binary frames, one key (the
    // server cannot tell).
    let payload: Vec<u8> = (0..FLOOD_MESSAGE).map(|i| (i * 31 % 251) as u8).collect();
    let frame = masked_frame(OP_BINARY, &payload, [0x37, 0xA1, 0x5C, 0xE2]);
    let mut sent = 0;
    let mut write_error = None;
    for _ in 0..FLOOD_MESSAGES {
        if let Err(err) = b.write_all(&frame) {
            write_error = Some(err);
            break;
        }
        sent += 1;
    }
    let flood_sent = flood_started.elapsed();
    let b_back = reader.join().expect("B's reader thread panicked");
    let flood_done = flood_started.elapsed();
    let rss_now = server.status_kib("VmRSS").unwrap_or(0);
    let hwm_after = server.status_kib("VmHWM").unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let (peak_rss, samples, fd_dropped_at) = sampler.join().unwrap();
    let echoes = std::mem::take(&mut *echoes.lock().unwrap());

    eprintln!(
        "flood: {sent} x 64 KiB sent in {:.2} s, {} echoes back to B after {:.2} s",
        flood_sent.as_secs_f64(),
        echoes.binaries,
        flood_done.as_secs_f64()
    );
    assert!(
        write_error.is_none() && echoes.error.is_none() && echoes.binaries == FLOOD_MESSAGES,
        "B (the flooder, which reads all its echoes) must be served throughout: \
         expected {FLOOD_MESSAGES} sent and echoed; sent {sent} (write error: {write_error:?}), \
         echoed {} ({} bytes), reader error: {:?}, other frames: {:?}\nserver log:\n{}",
        echoes.binaries,
        echoes.binary_bytes,
        echoes.error,
        echoes.other,
        server.log_tail(30)
    );

    // Memory: the peak over the flood, from samples and from VmHWM (which
    // catches what 10 ms sampling misses; it is an upper bound).
    let peak = peak_rss.max(hwm_after);
    let grown_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "server RSS: {} MiB before, sampled peak {} MiB ({samples} samples), VmHWM {} MiB, \
         {} MiB after; growth counted {grown_mib} MiB",
        rss_before / 1024,
        peak_rss / 1024,
        hwm_after / 1024,
        rss_now / 1024
    );
    assert!(
        grown_mib < MAX_RSS_GROWTH_MIB,
        "server peak RSS grew by {grown_mib} MiB while one client never read a \
         {} MiB broadcast flood; expected under {MAX_RSS_GROWTH_MIB} MiB \
         (8 MiB outbound bound per socket)\nserver log:\n{}",
        (FLOOD_MESSAGE * FLOOD_MESSAGES) >> 20,
        server.log_tail(30)
    );

    // A still does not read: the server must let go of it on its own (close
    // 1008, no reply within the 5 s close timeout, 2 s linger): its socket
    // leaves the server's descriptor table within 15 s of the flood's end.
    let after_flood = Instant::now();
    let released_at = fd_dropped_at
        .map(|at| (at, "during the flood"))
        .or_else(|| {
            let deadline = after_flood + Duration::from_secs(15);
            while Instant::now() < deadline {
                if socket_fds(pid).is_some_and(|n| n < fds_before) {
                    return Some((flood_started.elapsed(), "after the flood"));
                }
                thread::sleep(Duration::from_millis(20));
            }
            None
        });
    let Some((released_at, when)) = released_at else {
        panic!(
            "expected the server to drop the never-reading client within 15 s after the \
             flood; it still holds {:?} sockets (had {fds_before} with A and B open) \
             {:.2} s after the flood\nserver log:\n{}",
            socket_fds(pid),
            after_flood.elapsed().as_secs_f64(),
            server.log_tail(30)
        )
    };
    eprintln!(
        "server let go of A {:.2} s after the flood started ({when}; flood took {:.2} s)",
        released_at.as_secs_f64(),
        flood_done.as_secs_f64()
    );

    // A now reads: what the kernel still buffered, then EOF (or a reset),
    // within 10 s; the close frame is normally lost with the discarded queue.
    let reading_from = Instant::now();
    let a_deadline = reading_from + Duration::from_secs(10);
    a.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let ending = loop {
        match a.read(&mut buf) {
            Ok(0) => break Ok("EOF"),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => break Ok("reset"),
            Err(err) if is_timeout(&err) => {}
            Err(err) => break Err(format!("read error {err}")),
        }
        if Instant::now() >= a_deadline {
            break Err("still open".to_owned());
        }
    };
    let (frames, trailing) = parse_frames(&received);
    let binaries = frames.iter().filter(|f| f.0 == OP_BINARY).count();
    let closes: Vec<_> = frames.iter().filter_map(|f| f.2).collect();
    let summary = format!(
        "A read {} bytes: {} complete frames ({binaries} binary of {FLOOD_MESSAGES} broadcast), \
         close codes {closes:?}, {trailing} trailing bytes",
        received.len(),
        frames.len()
    );
    eprintln!(
        "A's connection, read once the server let go: {ending:?} after {:.2} s; {summary}",
        reading_from.elapsed().as_secs_f64()
    );
    let ending = ending.unwrap_or_else(|seen| {
        panic!(
            "expected the never-reading client's connection, released by the server, to end \
             (EOF or reset) within 10 s of reading; saw: {seen}; {summary}\nserver log:\n{}",
            server.log_tail(30)
        )
    });
    assert!(
        binaries < FLOOD_MESSAGES,
        "A got the whole flood ({binaries} messages) and the connection ended by {ending}: \
         the slow-consumer policy never applied"
    );
    if let Some(&code) = closes.first() {
        assert_eq!(
            code, 1008,
            "A's close code: expected 1008 (slow consumer); {summary}"
        );
    }
    let logged = server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("slow consumer"));
    assert!(
        logged,
        "expected a \"slow consumer closed\" log line\nserver log:\n{}",
        server.log_tail(30)
    );

    // B's connection is still served, and so is a fresh one.
    let mut b = b_back;
    b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    b.write_all(&masked_frame(OP_TEXT, b"still here", [1, 2, 3, 4]))
        .expect("B: send after the flood");
    let echo = read_frame(&mut b).expect("B: echo after the flood");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, &b"still here"[..]),
        "B after the flood: {echo:?}"
    );
    let mut fresh = upgrade(&addr, "/", Duration::from_secs(20)).expect("fresh: upgrade");
    fresh
        .write_all(&masked_frame(OP_TEXT, b"ok", [5, 6, 7, 8]))
        .unwrap();
    let echo = read_frame(&mut fresh).expect("fresh: echo");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, &b"ok"[..]),
        "fresh connection after the flood: {echo:?}"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    eprintln!(
        "test 1 done {:.2} s after the server started",
        server.started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// 2. SIGTERM with 1000 sockets open
// ---------------------------------------------------------------------------

const SOCKETS: usize = 1000;

#[test]
fn sigterm_with_1000_sockets_closes_them_all_with_1001_and_exits_0() {
    let mut server = EchoProcess::start();
    let addr = server.addr.clone();

    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        match upgrade(&addr, "/", Duration::from_secs(20)) {
            Ok(s) => sockets.push(s),
            Err(err) => panic!(
                "socket {i}: upgrade failed: {err}\nserver log:\n{}",
                server.log_tail(30)
            ),
        }
    }
    // Each socket is open: a tiny text round trip on every one.
    for (i, s) in sockets.iter_mut().enumerate() {
        let text = format!("s{i}");
        s.write_all(&masked_frame(OP_TEXT, text.as_bytes(), [3, 1, 4, 1]))
            .unwrap_or_else(|e| panic!("socket {i}: send: {e}"));
    }
    for (i, s) in sockets.iter_mut().enumerate() {
        let echo = read_frame(s).unwrap_or_else(|e| {
            panic!(
                "socket {i}: no echo: {e}\nserver log:\n{}",
                server.log_tail(30)
            )
        });
        assert_eq!(
            (echo.opcode, echo.payload.as_slice()),
            (OP_TEXT, format!("s{i}").as_bytes()),
            "socket {i}: echo"
        );
    }
    let fds = socket_fds(server.pid()).unwrap_or(0);
    eprintln!("{SOCKETS} sockets open and echoing; server holds {fds} sockets");

    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM failed: {kill}");
    let term_at = Instant::now();
    let deadline = term_at + Duration::from_secs(15);

    // Every socket: the server's close frame first, 1001; we answer with
    // 1001 like a well-behaved client, then expect the server's FIN.
    let mut outcomes: Vec<Result<(), String>> = Vec::with_capacity(SOCKETS);
    let mut answered = Vec::with_capacity(SOCKETS);
    for s in sockets.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let outcome = match read_frame(s) {
            Ok(f) if f.opcode == OP_CLOSE && f.close_code() == Some(1001) && !f.masked => {
                match s.write_all(&masked_frame(
                    OP_CLOSE,
                    &close_payload(1001, ""),
                    [7, 7, 7, 7],
                )) {
                    Ok(()) => {
                        answered.push(f.close_reason());
                        Ok(())
                    }
                    Err(err) => Err(format!("close reply failed: {err}")),
                }
            }
            Ok(f) => Err(format!(
                "expected a close frame (0x88) with 1001, got first byte {:#04x}, code {:?}, \
                 reason {:?}, masked {}, {} payload bytes",
                (u8::from(f.fin) << 7) | f.opcode,
                f.close_code(),
                f.close_reason(),
                f.masked,
                f.payload.len()
            )),
            Err(err) if is_timeout(&err) => Err("no frame before the deadline".to_owned()),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                Err("EOF before any close frame".to_owned())
            }
            Err(err) => Err(format!("read error: {err}")),
        };
        outcomes.push(outcome);
    }
    let read_all = term_at.elapsed();

    // After the closing handshake the server half-closes: EOF. Then we close
    // (ending the server's linger early).
    let mut eof_missing = Vec::new();
    for (i, mut s) in sockets.into_iter().enumerate() {
        if outcomes[i].is_err() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => {}
            Ok(_) => eof_missing.push(format!("socket {i}: {} bytes after close", rest.len())),
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {
                eof_missing.push(format!("socket {i}: reset instead of FIN"))
            }
            Err(err) => eof_missing.push(format!("socket {i}: {err}")),
        }
    }

    let status = server.wait_until(deadline);
    let exited_after = term_at.elapsed();

    let failed: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().err().map(|e| format!("socket {i}: {e}")))
        .collect();
    eprintln!(
        "SIGTERM: {} of {SOCKETS} sockets saw 1001 ({:.2} s to read them all), \
         {} without a clean FIN; server exit {status:?} after {:.2} s",
        answered.len(),
        read_all.as_secs_f64(),
        eof_missing.len(),
        exited_after.as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "expected every one of {SOCKETS} sockets to get close 1001 after SIGTERM; \
         {} did not, first ones:\n  {}\nserver log:\n{}",
        failed.len(),
        failed
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        server.log_tail(30)
    );
    let reasons: std::collections::BTreeSet<_> = answered.iter().collect();
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        vec!["server shutting down"],
        "close reasons seen"
    );
    let status = status.unwrap_or_else(|| {
        panic!(
            "expected the server to exit within 15 s of SIGTERM (drain timeout 10 s); \
             still running after {:.2} s\nserver log:\n{}",
            exited_after.as_secs_f64(),
            server.log_tail(30)
        )
    });
    assert!(
        status.success(),
        "expected exit status 0 after SIGTERM, got {status}\nserver log:\n{}",
        server.log_tail(30)
    );
    assert!(
        eof_missing.is_empty(),
        "after the closing handshake the server should half-close (FIN); {} sockets did not, \
         first ones:\n  {}",
        eof_missing.len(),
        eof_missing
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let drained = server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("all sockets closed"));
    assert!(
        drained,
        "expected the drain to finish in time (\"all sockets closed; bye\")\nserver log:\n{}",
        server.log_tail(30)
    );
}
