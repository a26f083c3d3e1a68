//! The runtime's metrics, served at `/metrics` (SPEC §6, names of SPEC §8),
//! encoded by `prometheus-client` (the Prometheus project's own Rust client)
//! in the Prometheus text format 0.0.4 or OpenMetrics 1.0 ([`Format`]).
//!
//! # Families
//!
//! | family | type | labels | what |
//! | --- | --- | --- | --- |
//! | `wsbus_connections` | gauge | `transport` = `websocket` \| `long-polling` | open WebSockets (every endpoint, bus included); bus long-polling requests in flight |
//! | `wsbus_tcp_connections_accepted_total` | counter | | TCP connections accepted |
//! | `wsbus_handshakes_total` | counter | `status` (HTTP status) | WebSocket handshakes answered: `101`, or the refusal's status |
//! | `wsbus_handshake_refusals_total` | counter | `reason` ([`HandshakeRefusal::as_str`]) | refused upgrades |
//! | `wsbus_handshake_duration_seconds` | histogram | | from the upgrade request reaching the runtime to its `101` or refusal |
//! | `wsbus_messages_total`, `wsbus_bytes_total` | counter | `direction` = `in` \| `out` | WebSocket messages; bytes of their frames as read and written (after compression, before TLS) |
//! | `wsbus_closes_total` | counter | `code` | sockets ended, by close code (`1005` none given, `1006` dropped) |
//! | `wsbus_slow_consumers_total` | counter | | sockets closed with 1008 `slow consumer` |
//! | `wsbus_messages_dropped_total` | counter | | messages dropped because a socket's queue was full |
//! | `wsbus_auth_failures_total` | counter | `reason` | access tokens refused or missing where required |
//! | `wsbus_limit_hits_total` | counter | `limit` | abuse limits hit |
//! | `wsbus_schema_rejections_total` | counter | `direction` = `in` \| `out` | messages refused by their JSON Schema |
//! | `wsbus_bus_sessions` | gauge | `transport` = `websocket` \| `long-polling` | live bus sessions, by the transport of their latest connect |
//! | `wsbus_bus_publishes_total` | counter | | messages published on the bus (clients and server) |
//! | `wsbus_bus_deliveries_total` | counter | | bus messages queued for a session |
//! | `wsbus_bus_replayed_messages_total` | counter | | bus messages replayed from history |
//! | `wsbus_bus_held_connects`, `wsbus_bus_queued_messages`, `wsbus_bus_history_messages`, `wsbus_bus_history_bytes` | gauge | | the bus's state |
//! | `wsbus_cluster_enabled` | gauge | | 1 in cluster mode, else 0 |
//! | `wsbus_cluster_redis_up` | gauge | | 1 while the Redis link is up; always present, 0 outside cluster mode |
//! | `wsbus_cluster_malformed_total` | counter | | messages on wsbus Redis channels that were not wsbus envelopes, or of no known kind (ignored) |
//! | `wsbus_cluster_publishes_dropped_total` | counter | | publishes for other nodes dropped because too many were waiting for Redis |
//! | `wsbus_cluster_pending_bytes` | gauge | | bytes of publishes waiting for Redis (grows during an outage) |
//!
//! `wsbus_cluster_redis_up` is always exposed so that dashboards and alerts
//! find the name; alert on `wsbus_cluster_enabled == 1 and
//! wsbus_cluster_redis_up == 0`, not on the second alone. The other
//! `wsbus_cluster_*` families are likewise always present (0 outside
//! cluster mode); cluster mode feeds them through
//! [`Metrics::set_cluster_stats`].
//!
//! # Cost on the hot path
//!
//! A `prometheus-client` counter is an `Arc<AtomicU64>`: `inc` is one
//! relaxed `fetch_add`. Labelled counters (`Family`) add a read lock and a
//! hash lookup; they count rare events only (handshakes, closes, refusals).
//! Per-message counting does not touch them: a socket's task counts its
//! messages and bytes in locals and adds them once per wake (a read of many
//! frames, a write of many) to one of [`TRAFFIC_SHARDS`] cache-line-padded
//! shards picked by socket id, so that sockets on different cores rarely
//! share a line. The shards are summed at scrape time.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use wsbus_proto::CloseCode;

use crate::hub::{LocalHub, SocketId};
use crate::runtime::HandshakeRefusal;

/// Shards of the per-message counters. A power of two above the core count
/// of a typical node keeps two busy sockets on different cores from
/// bouncing one cache line; 16 × 128 bytes per runtime.
pub const TRAFFIC_SHARDS: usize = 16;

/// Upper bounds (seconds) of the handshake-latency buckets: from the
/// sub-millisecond upgrade of a local client to the seconds of a JWKS fetch
/// or a congested node.
const HANDSHAKE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every [`TokenError::label`](crate::auth::TokenError::label): exposed at 0
/// from the start, as Prometheus advises for known label values, so that a
/// rate or an alert on one reason has a series before its first failure.
const AUTH_FAILURE_REASONS: [&str; 12] = [
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_subject",
    "unknown_key",
    "algorithm_not_allowed",
    "too_large",
    "keys_unavailable",
];

/// The limits [`Metrics::limit_hit`] counts, exposed at 0 from the start.
const LIMITS: [&str; 3] = [
    "messages_per_second",
    "connections_per_ip",
    "connections_per_user",
];

/// The Prometheus exposition formats `/metrics` can answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (`text/plain`): what
    /// scrapers and tools read by default.
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`), for scrapers
    /// that ask for it.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the request's `Accept` names it, else the
    /// Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One label and its value: the label sets of the labelled counters.
type Label<V> = [(&'static str, V); 1];

/// A counter per value of one label.
type Labelled<V> = Family<Label<V>, Counter>;

/// A bus's counters as of a scrape, or `None` once the bus is gone.
pub(crate) type BusStats = Box<dyn Fn() -> Option<wsbus_bayeux::Stats> + Send + Sync>;

/// The cluster link's counters as of a scrape (see
/// [`Metrics::set_cluster_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Messages found on wsbus Redis channels that were not wsbus envelopes,
    /// or of no known kind (ignored).
    pub malformed: u64,
    /// Publishes dropped because too many were already waiting for Redis.
    pub publishes_dropped: u64,
    /// Bytes of publishes waiting for Redis now.
    pub pending_bytes: u64,
}

/// Reads the cluster link's counters at scrape time.
type ClusterStatsFn = Box<dyn Fn() -> ClusterStats + Send + Sync>;

/// The runtime's counters, gauges and histogram; [`encode`](Self::encode)
/// renders them for `/metrics`. Reached through
/// [`Runtime::metrics`](crate::Runtime::metrics).
pub struct Metrics {
    registry: Registry,
    handshakes: Labelled<u16>,
    refusals: Labelled<&'static str>,
    auth_failures: Labelled<&'static str>,
    limit_hits: Labelled<&'static str>,
    schema_rejections: Labelled<&'static str>,
    closes: Labelled<u16>,
    handshake_duration: Histogram,
    connections_accepted: Counter,
    slow_consumers: Counter,
    shared: Arc<Shared>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What the scrape-time collector reads.
struct Shared {
    hub: Arc<LocalHub>,
    traffic: [TrafficShard; TRAFFIC_SHARDS],
    /// Messages dropped at the write queue under the drop policy (those
    /// dropped at the outbox the hub counts).
    write_queue_drops: AtomicU64,
    /// Bus long-polling requests being answered or held.
    long_polls: AtomicU64,
    /// [`CLUSTER_OFF`], [`CLUSTER_DOWN`] or [`CLUSTER_UP`].
    cluster: AtomicU8,
    /// The cluster link's counters, in cluster mode.
    cluster_stats: Mutex<Option<ClusterStatsFn>>,
    buses: Mutex<Vec<BusStats>>,
}

const CLUSTER_OFF: u8 = 0;
const CLUSTER_DOWN: u8 = 1;
const CLUSTER_UP: u8 = 2;

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Per-message counters of the sockets whose id falls on this shard, on a
/// cache line (two, for the adjacent-line prefetcher) of their own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct TrafficShard {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl TrafficShard {
    /// Adds what one wake of a socket's task saw: messages read and sent,
    /// bytes read and written. Zeros cost nothing.
    pub(crate) fn add(
        &self,
        messages_in: u32,
        messages_out: u32,
        bytes_in: usize,
        bytes_out: usize,
    ) {
        for (counter, n) in [
            (&self.messages_in, messages_in as u64),
            (&self.messages_out, messages_out as u64),
            (&self.bytes_in, bytes_in as u64),
            (&self.bytes_out, bytes_out as u64),
        ] {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// Sums of the traffic shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// WebSocket messages received.
    pub messages_in: u64,
    /// WebSocket messages sent (queued for writing).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
}

/// Ends a long-polling request's count in `wsbus_connections` when dropped.
#[derive(Debug)]
pub(crate) struct LongPollGuard(Arc<Shared>);

impl Drop for LongPollGuard {
    fn drop(&mut self) {
        self.0.long_polls.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// The metrics of a runtime whose sockets `hub` holds.
    pub(crate) fn new(hub: Arc<LocalHub>) -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            handshakes: Labelled::default(),
            refusals: Labelled::default(),
            auth_failures: Labelled::default(),
            limit_hits: Labelled::default(),
            schema_rejections: Labelled::default(),
            closes: Labelled::default(),
            handshake_duration: Histogram::new(HANDSHAKE_BUCKETS),
            connections_accepted: Counter::default(),
            slow_consumers: Counter::default(),
            shared: Arc::new(Shared {
                hub,
                traffic: std::array::from_fn(|_| TrafficShard::default()),
                write_queue_drops: AtomicU64::new(0),
                long_polls: AtomicU64::new(0),
                cluster: AtomicU8::new(CLUSTER_OFF),
                cluster_stats: Mutex::default(),
                buses: Mutex::default(),
            }),
        };
        metrics.with_registry()
    }

    /// Registers every family (counters are named without `_total`: the
    /// encoder adds it, as OpenMetrics wants).
    fn with_registry(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "wsbus_tcp_connections_accepted",
            "TCP connections accepted by the listener, upgraded or not",
            self.connections_accepted.clone(),
        );
        r.register(
            "wsbus_handshakes",
            "WebSocket handshakes answered, by HTTP status (101: accepted)",
            self.handshakes.clone(),
        );
        r.register(
            "wsbus_handshake_refusals",
            "WebSocket upgrades refused, by reason (the protocol rule broken, too_many_connections, application, origin_not_allowed, unauthorized, connection_limit)",
            self.refusals.clone(),
        );
        r.register_with_unit(
            "wsbus_handshake_duration",
            "Time from a WebSocket upgrade request reaching the runtime to its 101 or refusal",
            Unit::Seconds,
            self.handshake_duration.clone(),
        );
        r.register(
            "wsbus_closes",
            "WebSocket connections ended, by close code (1005: none given, 1006: dropped without a close)",
            self.closes.clone(),
        );
        r.register(
            "wsbus_slow_consumers",
            "WebSocket connections closed with 1008 as slow consumers (outbound queue full)",
            self.slow_consumers.clone(),
        );
        r.register(
            "wsbus_auth_failures",
            "Access tokens refused (or missing where required), by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "wsbus_limit_hits",
            "Abuse limits hit, by limit",
            self.limit_hits.clone(),
        );
        r.register(
            "wsbus_schema_rejections",
            "Messages refused by their JSON Schema, by direction (in: from clients, out: to clients)",
            self.schema_rejections.clone(),
        );
        r.register_collector(Box::new(Derived(self.shared.clone())));
        // Accepted handshakes are exposed at 0 from the start.
        drop(self.handshakes.get_or_create(&[("status", 101)]));
        for reason in AUTH_FAILURE_REASONS {
            drop(self.auth_failures.get_or_create(&[("reason", reason)]));
        }
        for limit in LIMITS {
            drop(self.limit_hits.get_or_create(&[("limit", limit)]));
        }
        for direction in ["in", "out"] {
            drop(
                self.schema_rejections
                    .get_or_create(&[("direction", direction)]),
            );
        }
        self
    }

    /// Renders every family in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let result = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        result.expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn handshake(&self, status: u16) {
        self.handshakes.get_or_create(&[("status", status)]).inc();
    }

    /// A refused upgrade: counted by HTTP status and by reason.
    pub(crate) fn refusal(&self, refusal: HandshakeRefusal, status: u16) {
        self.handshake(status);
        self.refusals
            .get_or_create(&[("reason", refusal.as_str())])
            .inc();
    }

    /// How long an upgrade request took to answer (101 or refusal).
    pub(crate) fn handshake_duration(&self, elapsed: Duration) {
        self.handshake_duration.observe(elapsed.as_secs_f64());
    }

    /// Handshakes answered with `status` so far.
    pub fn handshakes(&self, status: u16) -> u64 {
        get(&self.handshakes, ("status", status))
    }

    /// Upgrades refused for `reason` ([`HandshakeRefusal::as_str`]) so far.
    pub fn refusals(&self, reason: &'static str) -> u64 {
        get(&self.refusals, ("reason", reason))
    }

    /// A token refused (or missing where required), by
    /// [`TokenError::label`](crate::auth::TokenError::label).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// A limit hit: `messages_per_second`, `connections_per_ip`,
    /// `connections_per_user`, ….
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits_by(limit, 1);
    }

    /// `count` hits of `limit` at once (a batch of refused messages).
    pub fn limit_hits_by(&self, limit: &'static str, count: u64) {
        self.limit_hits
            .get_or_create(&[("limit", limit)])
            .inc_by(count);
    }

    /// A message refused by its schema, `in` (from a client) or `out` (to
    /// clients).
    pub fn schema_rejection(&self, direction: &'static str) {
        self.schema_rejections
            .get_or_create(&[("direction", direction)])
            .inc();
    }

    /// Tokens refused for `reason` so far.
    pub fn auth_failures(&self, reason: &'static str) -> u64 {
        get(&self.auth_failures, ("reason", reason))
    }

    /// Hits of `limit` so far.
    pub fn limit_hits(&self, limit: &'static str) -> u64 {
        get(&self.limit_hits, ("limit", limit))
    }

    /// Schema rejections in `direction` so far.
    pub fn schema_rejections(&self, direction: &'static str) -> u64 {
        get(&self.schema_rejections, ("direction", direction))
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted.get()
    }

    /// A socket ended with `code`.
    pub(crate) fn close(&self, code: CloseCode) {
        self.closes.get_or_create(&[("code", code.0)]).inc();
    }

    /// Sockets that ended with `code` so far.
    pub fn closes(&self, code: CloseCode) -> u64 {
        get(&self.closes, ("code", code.0))
    }

    /// A socket closed as a slow consumer.
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.inc();
    }

    /// Sockets closed as slow consumers so far.
    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.get()
    }

    /// A message dropped at a full write queue (the drop policy).
    pub(crate) fn write_queue_drop(&self) {
        self.shared
            .write_queue_drops
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The traffic shard of socket `id`.
    pub(crate) fn traffic_shard(&self, id: SocketId) -> &TrafficShard {
        &self.shared.traffic[id.sequence() as usize % TRAFFIC_SHARDS]
    }

    /// Messages and bytes in and out so far, over all sockets.
    pub fn traffic(&self) -> Traffic {
        self.shared.traffic()
    }

    /// A bus long-polling request begins; it counts in `wsbus_connections`
    /// until the guard drops.
    pub(crate) fn long_poll(&self) -> LongPollGuard {
        self.shared.long_polls.fetch_add(1, Ordering::Relaxed);
        LongPollGuard(self.shared.clone())
    }

    /// The state of the cluster link for `wsbus_cluster_redis_up`: `None`
    /// outside cluster mode (the default), else whether Redis is reachable.
    pub fn set_cluster_redis_up(&self, up: Option<bool>) {
        let state = match up {
            None => CLUSTER_OFF,
            Some(false) => CLUSTER_DOWN,
            Some(true) => CLUSTER_UP,
        };
        self.shared.cluster.store(state, Ordering::Relaxed);
    }

    /// The state [`set_cluster_redis_up`](Self::set_cluster_redis_up) last
    /// recorded: `None` outside cluster mode.
    pub fn cluster_redis_up(&self) -> Option<bool> {
        match self.shared.cluster.load(Ordering::Relaxed) {
            CLUSTER_OFF => None,
            state => Some(state == CLUSTER_UP),
        }
    }

    /// Feeds the `wsbus_cluster_*` counters from `stats`, read at every
    /// scrape (cluster mode installs the Redis link's; it replaces any
    /// earlier one).
    pub fn set_cluster_stats(&self, stats: impl Fn() -> ClusterStats + Send + Sync + 'static) {
        *self.shared.cluster_stats.lock().expect("metrics lock") = Some(Box::new(stats));
    }

    /// The cluster link's counters now: zeros outside cluster mode.
    pub fn cluster_stats(&self) -> ClusterStats {
        self.shared.cluster_stats()
    }

    /// Adds a bus's counters to the bus families (summed over buses);
    /// `stats` answers `None` once its bus is gone, and is forgotten then.
    pub(crate) fn add_bus(&self, stats: BusStats) {
        self.shared.buses.lock().expect("metrics lock").push(stats);
    }
}

/// The count of the counter labelled `label`, 0 if it was never counted.
fn get<V>(family: &Labelled<V>, label: (&'static str, V)) -> u64
where
    V: Clone + std::hash::Hash + Eq,
{
    family.get(&[label]).map_or(0, |counter| counter.get())
}

impl Shared {
    fn traffic(&self) -> Traffic {
        let mut sum = Traffic::default();
        for shard in &self.traffic {
            sum.messages_in += shard.messages_in.load(Ordering::Relaxed);
            sum.messages_out += shard.messages_out.load(Ordering::Relaxed);
            sum.bytes_in += shard.bytes_in.load(Ordering::Relaxed);
            sum.bytes_out += shard.bytes_out.load(Ordering::Relaxed);
        }
        sum
    }

    fn cluster_stats(&self) -> ClusterStats {
        self.cluster_stats
            .lock()
            .expect("metrics lock")
            .as_ref()
            .map_or_else(ClusterStats::default, |stats| stats())
    }

    /// The sum of the live buses' stats (dropping those that are gone).
    fn bus_stats(&self) -> wsbus_bayeux::Stats {
        let mut sum = wsbus_bayeux::Stats::default();
        self.buses.lock().expect("metrics lock").retain(|stats| {
            let Some(s) = stats() else {
                return false;
            };
            sum.websocket_sessions += s.websocket_sessions;
            sum.long_polling_sessions += s.long_polling_sessions;
            sum.held_connects += s.held_connects;
            sum.queued_messages += s.queued_messages;
            sum.history_messages += s.history_messages;
            sum.history_bytes += s.history_bytes;
            sum.publishes += s.publishes;
            sum.deliveries += s.deliveries;
            sum.replayed += s.replayed;
            true
        });
        sum
    }
}

/// The families computed at scrape time: gauges of the hub, the buses and
/// the cluster link, and the sums of the traffic shards.
#[derive(Debug)]
struct Derived(Arc<Shared>);

impl Collector for Derived {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let shared = &*self.0;
        let e = &mut encoder;
        gauges(
            e,
            "wsbus_connections",
            "Open connections, by transport (websocket: WebSocket connections on every endpoint, the bus's included; long-polling: bus long-polling requests in flight).",
            "transport",
            &[
                ("websocket", shared.hub.len() as u64),
                ("long-polling", shared.long_polls.load(Ordering::Relaxed)),
            ],
        )?;
        let traffic = shared.traffic();
        counters(
            e,
            "wsbus_messages",
            "WebSocket messages, by direction (in: received, out: sent).",
            "direction",
            &[("in", traffic.messages_in), ("out", traffic.messages_out)],
        )?;
        counters(
            e,
            "wsbus_bytes",
            "Bytes of WebSocket frames read and written (as on the wire, before TLS), by direction.",
            "direction",
            &[("in", traffic.bytes_in), ("out", traffic.bytes_out)],
        )?;
        let dropped =
            shared.hub.dropped_messages() + shared.write_queue_drops.load(Ordering::Relaxed);
        counter(
            e,
            "wsbus_messages_dropped",
            "Messages not sent because the socket's outbound queue was full (the slow-consumer policy).",
            dropped,
        )?;
        let bus = shared.bus_stats();
        gauges(
            e,
            "wsbus_bus_sessions",
            "Live bus sessions, by the transport of their latest connect.",
            "transport",
            &[
                ("websocket", bus.websocket_sessions as u64),
                ("long-polling", bus.long_polling_sessions as u64),
            ],
        )?;
        counter(
            e,
            "wsbus_bus_publishes",
            "Messages published on the bus, by clients and by the server.",
            bus.publishes,
        )?;
        counter(
            e,
            "wsbus_bus_deliveries",
            "Bus messages queued for a session (one per recipient).",
            bus.deliveries,
        )?;
        counter(
            e,
            "wsbus_bus_replayed_messages",
            "Bus messages replayed from history to resubscribing sessions.",
            bus.replayed,
        )?;
        for (name, help, value) in [
            (
                "wsbus_bus_held_connects",
                "Bus /meta/connect requests held open now.",
                bus.held_connects,
            ),
            (
                "wsbus_bus_queued_messages",
                "Bus messages waiting in sessions' queues.",
                bus.queued_messages,
            ),
            (
                "wsbus_bus_history_messages",
                "Bus messages kept for replay.",
                bus.history_messages,
            ),
        ] {
            gauge(e, name, help, None, value as u64)?;
        }
        gauge(
            e,
            "wsbus_bus_history",
            "Bytes charged for the bus messages kept for replay.",
            Some(&Unit::Bytes),
            bus.history_bytes as u64,
        )?;
        let cluster = shared.cluster.load(Ordering::Relaxed);
        gauge(
            e,
            "wsbus_cluster_enabled",
            "1 in cluster mode (cluster.redis_url set), else 0.",
            None,
            u64::from(cluster != CLUSTER_OFF),
        )?;
        gauge(
            e,
            "wsbus_cluster_redis_up",
            "1 while the link to Redis is up; 0 when it is down, and outside cluster mode (see wsbus_cluster_enabled).",
            None,
            u64::from(cluster == CLUSTER_UP),
        )?;
        let stats = shared.cluster_stats();
        counter(
            e,
            "wsbus_cluster_malformed",
            "Messages on wsbus Redis channels that were not wsbus envelopes, or of no known kind (ignored).",
            stats.malformed,
        )?;
        counter(
            e,
            "wsbus_cluster_publishes_dropped",
            "Publishes for other nodes dropped because too many were already waiting for Redis.",
            stats.publishes_dropped,
        )?;
        gauge(
            e,
            "wsbus_cluster_pending",
            "Bytes of publishes waiting for Redis (they grow while Redis is unreachable).",
            Some(&Unit::Bytes),
            stats.pending_bytes,
        )
    }
}

/// A counter family with one label.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    samples: &[(&'static str, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value, count) in samples {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, count: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(count).encode(metric)
}

/// A gauge family with one label.
fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    samples: &[(&'static str, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for &(value, n) in samples {
        let labels = [(label, value)];
        ConstGauge::new(n).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;

    /// Every family's samples, by name and labels, from an exposition: what the
    /// tests below check (the process test parses it with a real Prometheus
    /// parser).
    fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                (series.to_owned(), value.parse().expect("a number"))
            })
            .collect()
    }

    fn metrics() -> (Hub, Metrics) {
        let hub = Hub::default();
        let metrics = Metrics::new(hub.local().clone());
        (hub, metrics)
    }

    /// The exposition is in the 0.0.4 text format: HELP and TYPE once per
    /// family, counters ending in `_total`, the histogram's buckets in
    /// seconds, label values quoted; every family of SPEC §8 has samples
    /// even before anything happened.
    #[test]
    fn exposition_is_prometheus_text() {
        let (hub, metrics) = metrics();
        let _socket = hub.register();
        metrics.handshake(101);
        metrics.refusal(
            HandshakeRefusal::Protocol(wsbus_proto::handshake::RejectionKind::MissingUpgradeHeader),
            400,
        );
        metrics.handshake_duration(Duration::from_micros(700));
        metrics.auth_failure("expired");
        metrics.limit_hit("messages_per_second");
        metrics.schema_rejection("in");
        metrics.close(CloseCode::NORMAL);
        metrics.traffic_shard(_socket.id()).add(2, 3, 100, 200);
        metrics.traffic_shard(_socket.id()).add(1, 0, 10, 0);
        let text = metrics.encode(Format::Prometheus);
        let samples = samples(&text);
        let expect = [
            ("wsbus_connections{transport=\"websocket\"}", 1.0),
            ("wsbus_connections{transport=\"long-polling\"}", 0.0),
            ("wsbus_handshakes_total{status=\"101\"}", 1.0),
            ("wsbus_handshakes_total{status=\"400\"}", 1.0),
            (
                "wsbus_handshake_refusals_total{reason=\"missing_upgrade_header\"}",
                1.0,
            ),
            ("wsbus_messages_total{direction=\"in\"}", 3.0),
            ("wsbus_messages_total{direction=\"out\"}", 3.0),
            ("wsbus_bytes_total{direction=\"in\"}", 110.0),
            ("wsbus_bytes_total{direction=\"out\"}", 200.0),
            ("wsbus_closes_total{code=\"1000\"}", 1.0),
            ("wsbus_bus_sessions{transport=\"websocket\"}", 0.0),
            ("wsbus_bus_deliveries_total", 0.0),
            ("wsbus_auth_failures_total{reason=\"expired\"}", 1.0),
            ("wsbus_limit_hits_total{limit=\"messages_per_second\"}", 1.0),
            ("wsbus_schema_rejections_total{direction=\"in\"}", 1.0),
            ("wsbus_cluster_redis_up", 0.0),
            ("wsbus_cluster_enabled", 0.0),
            (
                "wsbus_handshake_duration_seconds_bucket{le=\"0.0005\"}",
                0.0,
            ),
            ("wsbus_handshake_duration_seconds_bucket{le=\"0.001\"}", 1.0),
            ("wsbus_handshake_duration_seconds_bucket{le=\"+Inf\"}", 1.0),
            ("wsbus_handshake_duration_seconds_count", 1.0),
            ("wsbus_tcp_connections_accepted_total", 0.0),
            ("wsbus_slow_consumers_total", 0.0),
            ("wsbus_messages_dropped_total", 0.0),
            ("wsbus_bus_history_bytes", 0.0),
        ];
        for (series, value) in expect {
            assert_eq!(samples.get(series), Some(&value), "{series} in\n{text}");
        }
        for (family, kind) in [
            ("wsbus_connections", "gauge"),
            ("wsbus_handshakes_total", "counter"),
            ("wsbus_handshake_duration_seconds", "histogram"),
            ("wsbus_cluster_redis_up", "gauge"),
        ] {
            let type_line = format!("# TYPE {family} {kind}\n");
            assert_eq!(
                text.matches(&type_line).count(),
                1,
                "{type_line} in\n{text}"
            );
            assert!(text.contains(&format!("# HELP {family} ")), "{text}");
        }
        assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
        // The getters read the same counters.
        assert_eq!(metrics.refusals("missing_upgrade_header"), 1);
        assert_eq!(metrics.handshakes(400), 1);
        assert_eq!(metrics.handshakes(403), 0);
        assert_eq!(metrics.closes(CloseCode::NORMAL), 1);
        assert_eq!(metrics.traffic().messages_in, 3);
    }

    /// OpenMetrics: families typed by their base name, units declared,
    /// `# EOF` last.
    #[test]
    fn exposition_is_openmetrics_on_request() {
        let (_hub, metrics) = metrics();
        let format = Format::from_accept(Some(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        ));
        assert_eq!(format, Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        metrics.handshake(101);
        let text = metrics.encode(format);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE wsbus_handshakes counter\n"), "{text}");
        assert!(
            text.contains("wsbus_handshakes_total{status=\"101\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT wsbus_handshake_duration_seconds seconds\n"),
            "{text}"
        );
    }

    /// Every token refusal's label is one of those exposed from the start.
    #[test]
    fn auth_failure_reasons_are_known() {
        use crate::auth::TokenError;
        for error in [
            TokenError::Missing,
            TokenError::Malformed,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::MissingSubject,
            TokenError::UnknownKey,
            TokenError::AlgorithmNotAllowed,
            TokenError::TooLarge,
            TokenError::KeysUnavailable,
        ] {
            assert!(AUTH_FAILURE_REASONS.contains(&error.label()), "{error:?}");
        }
        let (_hub, metrics) = metrics();
        let s = samples(&metrics.encode(Format::Prometheus));
        assert_eq!(s["wsbus_auth_failures_total{reason=\"expired\"}"], 0.0);
        assert_eq!(
            s["wsbus_limit_hits_total{limit=\"connections_per_ip\"}"],
            0.0
        );
        assert_eq!(s["wsbus_schema_rejections_total{direction=\"out\"}"], 0.0);
    }

    /// The cluster gauge: 0 outside cluster mode, and whether the link is up
    /// in it.
    #[test]
    fn cluster_link_state() {
        let (_hub, metrics) = metrics();
        let up = |m: &Metrics| {
            let s = samples(&m.encode(Format::Prometheus));
            (s["wsbus_cluster_enabled"], s["wsbus_cluster_redis_up"])
        };
        assert_eq!(up(&metrics), (0.0, 0.0));
        metrics.set_cluster_redis_up(Some(true));
        assert_eq!(up(&metrics), (1.0, 1.0));
        metrics.set_cluster_redis_up(Some(false));
        assert_eq!(up(&metrics), (1.0, 0.0));
    }

    /// The link's counters: zeros until cluster mode installs its source,
    /// then what it reads at each scrape.
    #[test]
    fn cluster_link_counters() {
        let (_hub, metrics) = metrics();
        let read = |m: &Metrics| {
            let s = samples(&m.encode(Format::Prometheus));
            [
                s["wsbus_cluster_malformed_total"],
                s["wsbus_cluster_publishes_dropped_total"],
                s["wsbus_cluster_pending_bytes"],
            ]
        };
        assert_eq!(read(&metrics), [0.0, 0.0, 0.0]);
        metrics.set_cluster_stats(|| ClusterStats {
            malformed: 3,
            publishes_dropped: 2,
            pending_bytes: 1024,
        });
        assert_eq!(read(&metrics), [3.0, 2.0, 1024.0]);
        assert_eq!(metrics.cluster_stats().malformed, 3);
        let text = metrics.encode(Format::Prometheus);
        assert!(
            text.contains("# TYPE wsbus_cluster_malformed_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wsbus_cluster_pending_bytes gauge\n"),
            "{text}"
        );
    }

    /// Long-polling requests count while their guard lives; bus stats are
    /// summed and a gone bus is forgotten.
    #[test]
    fn long_polls_and_buses() {
        let (_hub, metrics) = metrics();
        let guard = metrics.long_poll();
        metrics.add_bus(Box::new(|| {
            Some(wsbus_bayeux::Stats {
                long_polling_sessions: 2,
                deliveries: 7,
                ..Default::default()
            })
        }));
        metrics.add_bus(Box::new(|| None));
        let s = samples(&metrics.encode(Format::Prometheus));
        assert_eq!(s["wsbus_connections{transport=\"long-polling\"}"], 1.0);
        assert_eq!(s["wsbus_bus_sessions{transport=\"long-polling\"}"], 2.0);
        assert_eq!(s["wsbus_bus_deliveries_total"], 7.0);
        assert_eq!(metrics.shared.buses.lock().unwrap().len(), 1);
        drop(guard);
        let s = samples(&metrics.encode(Format::Prometheus));
        assert_eq!(s["wsbus_connections{transport=\"long-polling\"}"], 0.0);
    }
}
