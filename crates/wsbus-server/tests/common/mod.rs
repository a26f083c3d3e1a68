//! `wsbus serve` as a child process, shared by the process tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `wsbus serve`, killed on drop.
pub struct Serve {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Serve {
    /// The server's process id (for `/proc/<pid>/status`).
    #[allow(dead_code)] // not every process test reads it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `wsbus serve --listen 127.0.0.1:0` with extra environment and wait
/// until it listens.
pub fn serve(env: &[(&str, &str)]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsbus"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wsbus serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "wsbus serve exited before listening"
        );
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    Serve { child, addr }
}
