//! wsbus across several nodes, over one Redis (SPEC §7).
//!
//! Every node points at the same Redis (`cluster.redis_url`). What this
//! crate adds to a node:
//!
//! * [`link`]: the node's connections to Redis — commands, ordered
//!   publishes that wait out an outage, and a subscriber connection of our
//!   own (sharded pub/sub: `SSUBSCRIBE`) that reconnects with backoff and
//!   jitter, resubscribes to everything the node still has interest in,
//!   confirms it, probes itself end to end, and reports each state change.
//! * [`envelope`]: what one node publishes for others (origin, sequence,
//!   kind), so that a receiver delivers each message once and in order.
//! * [`hub`]: [`ClusterHub`](hub::ClusterHub), the
//!   [`HubEngine`](wsbus::HubEngine) that reaches sockets and groups on
//!   other nodes.
//! * [`bus`]: [`RedisBus`](bus::RedisBus), the Bayeux bus's
//!   [`BusCluster`](wsbus::bus::BusCluster): publishes, wildcards and
//!   presence across nodes (`presence`: every node lists every node's
//!   members; a stopped node's members leave).
//! * [`forward`]: [`RedisForward`](forward::RedisForward), long-polling
//!   without sticky sessions: a request for a bus client owned by another
//!   node is run by that node, and answered through this one.
//! * [`session`]: [`RedisSessionStore`](session::RedisSessionStore), the
//!   HTTP session store shared by every node (a Redis key per session, its
//!   expiry a Redis TTL; a Redis that does not answer is an error, never
//!   "no such session"), and [`logout`]: a session removed on one node
//!   closes its sockets on every node.
//!
//! Single node stays the default: nothing here runs unless a Redis URL is
//! configured.

pub mod bus;
pub mod envelope;
pub mod forward;
pub mod history;
pub mod hub;
pub mod link;
pub mod logout;
mod presence;
mod resp;
pub mod session;
