//! The binary's allocator: mimalloc (its v2 line).
//!
//! A binary's choice — the libraries leave the allocator to whoever links
//! them. Measured on `wsbus echo` (dist profile) holding 15,000 idle
//! WebSockets, server RSS growth per connection (ARCHITECTURE.md, "Memory
//! per connection"):
//!
//! | allocator | KiB per idle connection |
//! |---|---|
//! | glibc malloc | 1.6–1.9 (1.4–1.5 after `malloc_trim`) |
//! | jemalloc (tikv-jemallocator 0.7) | 1.4–1.5 |
//! | mimalloc 3 (the crate's default) | 1.9 |
//! | **mimalloc 2** | **1.1** (an outlier at 1.6 on a loaded machine) |
//!
//! The heap an idle socket asks for is 1.1 KiB; the rest is what the
//! allocator keeps around the handshake's short-lived allocations (hyper's
//! 8 KiB read buffer, its connection task, the request's headers), which
//! glibc's arenas fragment and mimalloc 2's size-segregated pages do not.
//! mimalloc costs about 8 MiB of fixed RSS at start; echo throughput and
//! server CPU per message are unchanged within the noise of a shared
//! machine (20-byte and 16 KiB messages).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
