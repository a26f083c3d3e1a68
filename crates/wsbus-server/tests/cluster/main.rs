//! Cluster mode (SPEC §7): `wsbus serve` nodes over a `redis-server` that
//! each test starts for itself. One test target, so that the release
//! profile links one binary for all of them, not one per file.
//!
//! - `chat`: the chat demo's group, the bus, presence and HTTP sessions
//!   across nodes; Redis killed, restarted and absent at start.
//! - `faults`: Redis paused, a deaf subscription, a node killed or joining
//!   mid-traffic, a 10 MB message, junk on wsbus channels.
//! - `history`: the bus's shared history across outages and node deaths.
//! - `long_poll`: long-polling with every request on the next node.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod chat;
mod faults;
mod history;
mod long_poll;
