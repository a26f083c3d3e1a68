//! wsbus across several nodes, over one Redis (SPEC §7).
//!
//! Every node points at the same Redis (`cluster.redis_url`). What this
//! crate adds to a node:
//!
//! * **`link`**: the node's two connections to Redis — one multiplexed
//!   connection for commands, and one subscriber connection of our own
//!   (sharded pub/sub: `SSUBSCRIBE`), which reconnects with backoff and
//!   jitter, resubscribes to everything the node still has interest in,
//!   confirms it, and reports each state change (`wsbus_cluster_redis_up`,
//!   a log line, `/readyz`).
//! * **`hub`**: [`ClusterHub`](hub::ClusterHub), the [`wsbus::hub::HubEngine`]
//!   that reaches sockets and groups on other nodes.
//! * **`session`**: [`RedisSessionStore`](session::RedisSessionStore), the
//!   HTTP session store shared by every node (a Redis key per session, its
//!   expiry a Redis TTL; a Redis that does not answer is an error, never
//!   "no such session").
//!
//! Single node stays the default: nothing here runs unless a Redis URL is
//! configured.

pub mod hub;
pub mod link;
pub mod session;
