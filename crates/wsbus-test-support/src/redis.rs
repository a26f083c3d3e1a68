//! A real `redis-server` for tests: started on a free port from a temporary
//! directory, with no persistence, and stopped by its PID on drop.
//!
//! Never the machine's own Redis: a system service may listen on 6379, and a
//! test must not see (or `FLUSHALL`) data it did not write. Each
//! [`RedisServer`] is its own process on its own port, so tests run in
//! parallel without sharing state.
//!
//! Faults are what the cluster tests need: [`RedisServer::kill9`] (a crash),
//! [`RedisServer::restart`] (a Redis that came back empty on the same port),
//! [`RedisServer::pause`] / [`RedisServer::resume`] (a Redis that stops
//! answering without closing its connections), and [`RedisServer::command`]
//! for anything else (`CLIENT KILL TYPE pubsub`, `PUBLISH`, `DBSIZE`).
//!
//! Signals other than SIGKILL go through the `kill` command: the crate
//! depends on std only (see the crate docs), and std can only SIGKILL a child.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `redis-server` package installs the binary.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a `redis-server` may take to answer PING after it was started: it
/// starts in milliseconds, but a loaded test machine can delay it by seconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`RedisServer::command`] waits for a reply: a healthy local Redis
/// answers in microseconds; a test that asks a paused one is a test bug, and
/// it should fail rather than hang.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop (SIGTERM on drop, SIGKILL in [`RedisServer::kill9`]) may
/// take before we give up waiting: without persistence Redis exits at once.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the waits above check again.
const POLL: Duration = Duration::from_millis(20);

/// How many free ports [`RedisServer::start`] tries: between finding a free
/// port and Redis binding it another process may take it.
const START_ATTEMPTS: usize = 5;

/// Makes temporary directory names unique within this process (the PID makes
/// them unique across processes).
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` of this test's own. Dropping it stops the process (by
/// PID) and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    paused: bool,
}

impl RedisServer {
    /// Start a `redis-server` on a free port of 127.0.0.1 and wait until it
    /// answers PING.
    ///
    /// # Panics
    /// If `redis-server` is not installed (the message names the Debian
    /// package), or it does not answer within [`START_TIMEOUT`].
    pub fn start() -> Self {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: install Debian's `redis-server` package \
             (apt-get install redis-server; .ci/run does this)"
        );
        let dir = std::env::temp_dir().join(format!(
            "wsbus-redis-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_and_wait(&dir, port) {
                Ok(child) => {
                    return RedisServer {
                        child,
                        port,
                        dir,
                        paused: false,
                    };
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "redis-server did not start in {START_ATTEMPTS} attempts:\n  {}",
            failures.join("\n  ")
        );
    }

    /// The URL clients connect to: `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same across [`Self::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the current process (a new one after [`Self::restart`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill it with SIGKILL (a crash: no goodbye to its clients) and wait
    /// until it is gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.paused = false;
    }

    /// Start it again on the same port, empty (a Redis that came back without
    /// its data), after killing it if it still runs. Waits until it answers.
    ///
    /// # Panics
    /// If it does not answer within [`START_TIMEOUT`] (e.g. another process
    /// took the port in between).
    pub fn restart(&mut self) {
        self.kill9();
        // Nothing persists (`--save ""`), but leave no file a new process
        // could load.
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.dir.display()));
        self.child = spawn_and_wait(&self.dir, self.port)
            .unwrap_or_else(|why| panic!("restart redis-server on port {}: {why}", self.port));
    }

    /// Stop it with SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        signal(self.pid(), "STOP");
        self.paused = true;
    }

    /// Let it run again with SIGCONT.
    pub fn resume(&mut self) {
        signal(self.pid(), "CONT");
        self.paused = false;
    }

    /// Send one command on a fresh connection and return the reply as text:
    /// a simple or bulk string as is, an integer in decimal, a nil as
    /// `(nil)`, an array's elements one per line.
    ///
    /// # Panics
    /// On an error reply, or no reply within [`COMMAND_TIMEOUT`].
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .unwrap_or_else(|e| panic!("connect to redis on port {}: {e}", self.port));
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .expect("set read timeout");
        stream
            .write_all(&encode_command(args))
            .unwrap_or_else(|e| panic!("send {args:?}: {e}"));
        let mut reader = BufReader::new(stream);
        match read_reply(&mut reader) {
            Ok(reply) => reply,
            Err(e) => panic!("redis {args:?}: {e}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.pid(), "TERM");
            if self.paused {
                // A stopped process only acts on SIGTERM once it runs again.
                signal(self.pid(), "CONT");
            }
            if !wait_for_exit(&mut self.child, STOP_TIMEOUT) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago (the OS picks it; the listener is closed
/// before Redis binds it, so the caller retries if it was taken since).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Start `redis-server` on `port` with its files in `dir`, and wait until it
/// answers PING; on failure the process is gone and the error quotes its log.
fn spawn_and_wait(dir: &Path, port: u16) -> Result<Child, String> {
    let log = dir.join("redis.log");
    let mut child = Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--daemonize", "no"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {REDIS_SERVER}: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}; log:\n{}", log_text(&log)));
        }
        if ping(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no PONG within {START_TIMEOUT:?}; log:\n{}",
                log_text(&log)
            ));
        }
        thread::sleep(POLL);
    }
}

/// Whether a Redis on `port` answers PING now.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    if stream.set_read_timeout(Some(POLL * 50)).is_err()
        || stream.write_all(&encode_command(&["PING"])).is_err()
    {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Send `signal` (a name such as `STOP`) to `pid` with the `kill` command.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        thread::sleep(POLL);
    }
    false
}

/// A command as a RESP array of bulk strings.
fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP2 reply as text (see [`RedisServer::command`]); an error reply is
/// an `Err`.
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| format!("truncated reply {line:?}"))?;
    let (kind, rest) = line.split_at_checked(1).ok_or("empty reply line")?;
    let length = || {
        rest.parse::<i64>()
            .map_err(|_| format!("bad length in {line:?}"))
    };
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok("(nil)".to_owned());
            };
            let mut body = vec![0; len + 2];
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("read: {e}"))?;
            body.truncate(len);
            String::from_utf8(body).map_err(|e| format!("non-UTF-8 bulk string: {e}"))
        }
        "*" => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok("(nil)".to_owned());
            };
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(items.join("\n"))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_text() {
        let read = |bytes: &[u8]| read_reply(&mut BufReader::new(bytes));
        assert_eq!(read(b"+OK\r\n"), Ok("OK".into()));
        assert_eq!(read(b":42\r\n"), Ok("42".into()));
        assert_eq!(read(b"$5\r\nhe\r\no\r\n"), Ok("he\r\no".into()));
        assert_eq!(read(b"$-1\r\n"), Ok("(nil)".into()));
        assert_eq!(read(b"*2\r\n$1\r\na\r\n:1\r\n"), Ok("a\n1".into()));
        assert_eq!(read(b"-ERR no\r\n"), Err("ERR no".into()));
        assert_eq!(
            encode_command(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }
}
