//! Sockets and groups across nodes (work in progress).
