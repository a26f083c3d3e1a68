//! A server binary as a child process: started on an ephemeral port, its
//! stderr kept as a log that failures can quote, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its listening line: a release binary
/// starts in milliseconds, but a loaded test machine can delay it by seconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`ServerProcess::wait_until`] checks whether the process exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// A running server, killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// When it was started.
    pub started: Instant,
    /// Every stderr line after the listening line, stamped with seconds
    /// since start.
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Run `binary args...` with extra environment and wait until its stderr
    /// says `listening on <scheme>://<host:port>` (the first line with
    /// `listening on`; earlier lines go to the log).
    pub fn start(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary} {args:?}: {e}"));
        // Keep draining stderr for the whole run: the log explains failures,
        // and a full pipe would block the server's log writes.
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = mpsc::channel();
        {
            let log = log.clone();
            thread::spawn(move || {
                let mut listening_tx = Some(listening_tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening on")
                        && let Some(tx) = listening_tx.take()
                    {
                        let _ = tx.send(line);
                        continue;
                    }
                    let at = started.elapsed().as_secs_f64();
                    log.lock()
                        .expect("log lock")
                        .push(format!("[{at:7.3}s] {line}"));
                }
            });
        }
        let listening = listening_rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| {
                let lines = log.lock().expect("log lock").join("\n  ");
                panic!(
                    "{binary} {args:?} printed no listening line within {START_TIMEOUT:?}; \
                 stderr:\n  {lines}"
                )
            });
        let addr = listening
            .trim()
            .rsplit("://")
            .next()
            .expect("rsplit yields at least one piece")
            .to_owned();
        ServerProcess {
            child,
            addr,
            started,
            log,
        }
    }

    /// The process id (for `/proc/<pid>/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether any log line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log_lines_containing(text) > 0
    }

    /// How many log lines so far contain `text`.
    pub fn log_lines_containing(&self, text: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    /// The last `n` lines of the log, indented, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().expect("log lock");
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

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Wait for the process to exit, at most until `deadline`.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(EXIT_POLL);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
