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
