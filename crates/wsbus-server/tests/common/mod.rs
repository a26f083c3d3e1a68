//! The `wsbus` binary as a child process, shared by the process tests.

#![allow(dead_code)] // each test file uses part of it

use wsbus_test_support::process::ServerProcess;

/// For tests that read the server's RSS: mimalloc (the binary's allocator)
/// then returns freed pages to the kernel at once instead of 10 ms later at
/// its next call, which an idle thread may not make for a long time. RSS
/// then follows what the server holds, not what the allocator happens to
/// keep cached (which varied by 30 MiB between identical floods).
pub(crate) const RELEASE_FREED_MEMORY_AT_ONCE: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "0");

/// `wsbus serve --listen 127.0.0.1:0` with extra environment, listening.
pub(crate) fn serve(env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &["serve", "--listen", "127.0.0.1:0"],
        env,
    )
}

/// `wsbus echo --listen 127.0.0.1:0` with extra environment, listening.
pub(crate) fn echo(env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_wsbus"),
        &["echo", "--listen", "127.0.0.1:0"],
        env,
    )
}

/// A scratch directory for config and schema files, removed at drop.
pub(crate) struct Scratch(std::path::PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wsbus-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `text` to `name` in the directory; its path.
    pub(crate) fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
