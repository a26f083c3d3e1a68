//! A node's link to Redis: commands, publishes, and a subscriber connection
//! that survives Redis going away.
//!
//! # Connections
//!
//! * **Commands** go over one multiplexed connection (`redis`'s
//!   [`MultiplexedConnection`]), made lazily and made again after an I/O
//!   error or a timeout; every command has [`COMMAND_TIMEOUT`], so a paused
//!   Redis never hangs a caller for longer.
//! * **Publishes** ([`RedisLink::publish`]) never wait: they are queued,
//!   stamped with the node's next sequence number, and written in order by
//!   one task, in pipelines (`SPUBLISH`, sharded pub/sub). While Redis is
//!   unreachable they stay queued, up to [`PENDING_PUBLISH_MAX_BYTES`], and
//!   go out in order once it is back; past the bound new publishes are
//!   dropped and counted ([`RedisLink::dropped_publishes`]). Once Redis is
//!   back they wait, up to [`RESUBSCRIBE_WAIT_MAX`], until each of their
//!   channels has as many subscribers (nodes) as at its latest publish
//!   before the outage: the other nodes lost their subscriptions too, and
//!   a message published before they resubscribed would reach none of
//!   them.
//! * **The subscriber** is a connection of our own (RESP2, `resp.rs`). It
//!   holds `SSUBSCRIBE`s for the node's own channel and for every channel
//!   the layers above declared interest in ([`RedisLink::subscribe`]). When
//!   it drops — Redis killed or restarted, `CLIENT KILL TYPE pubsub`, a
//!   network fault — the link reconnects with exponential backoff and full
//!   jitter ([`BACKOFF_MIN`] to [`BACKOFF_MAX`]), subscribes again to the
//!   whole set in batches of [`RESUBSCRIBE_BATCH`], waits for every
//!   confirmation, and only then reports itself up and tells the receivers
//!   ([`Receiver::resubscribed`]) so they can fill what they missed.
//!
//! # Deaf subscriptions
//!
//! A subscriber connection can be open and confirmed and still receive
//! nothing (a failover that kept the socket, a proxy in between). Every
//! [`PROBE_INTERVAL`] the link publishes a probe on its own node channel,
//! through the command connection, and expects it back on the subscriber
//! within [`PROBE_TIMEOUT`]; when it does not come back, the subscriber is
//! dropped and made again, and the link is reported down meanwhile. The same
//! probe catches a Redis that stopped answering (`SIGSTOP`) while its sockets
//! stay open.
//!
//! # Ordering and duplicates
//!
//! One node's publishes are written in the order [`RedisLink::publish`] was
//! called, by one task over one connection, and one Redis executes them in
//! that order and pushes them to each subscriber connection in that order.
//! So each receiving node sees one origin's messages in publish order, and a
//! message published on several channels at once (with one sequence number)
//! arrives as consecutive duplicates, of which it delivers the first: per
//! origin, a message whose sequence is not above the last delivered one is
//! dropped. (With a Redis Cluster, channels on different shards come over
//! different connections and this order would not hold; wsbus supports one
//! Redis, with replicas for failover.) A publish retried after a timeout may
//! have reached Redis the first time: the same rule drops the second copy.
//!
//! A node does not receive its own messages (it has delivered them locally
//! already), except its probes and the kinds registered with
//! [`RedisLink::register_with_own`].
//!
//! # Nodes
//!
//! Every node sets `wsbus:alive:<n>` every [`HEARTBEAT_INTERVAL`], expiring
//! after [`NODE_TIMEOUT`], and adds itself to `wsbus:nodes`. A node watches
//! the heartbeats of the nodes it has heard from; when one expires, its
//! receivers hear of it ([`Receiver::node_stopped`]) and drop what that node
//! had: its group members, its presence members.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wsbus::NodeId;

use crate::envelope::{Envelope, Origin};
use crate::resp::{self, Reply};

/// How long any one command, or the setup of a connection, may take. Long
/// enough for a Redis busy with a large `XRANGE` on a loaded machine; short
/// enough that a request waiting on a paused Redis fails while its client
/// still waits for an answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The first wait before reconnecting after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest wait between reconnection attempts: a node finds a Redis that
/// came back within this, while a fleet of nodes does not hammer one that is
/// starting up (waits are drawn at random below the current bound, so nodes
/// spread out).
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How often the link checks, end to end, that its subscriber still
/// receives.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a probe may take to come back before the subscriber is
/// considered deaf (or Redis stopped): a round trip through an idle Redis
/// takes well under a millisecond; this allows a heavily loaded one.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Channels per `SSUBSCRIBE` when resubscribing: a node with 100,000
/// channels of interest sends 196 commands instead of one of several
/// megabytes, and Redis answers each quickly.
pub const RESUBSCRIBE_BATCH: usize = 512;

/// Publishes waiting for Redis, at most (envelope bytes): what a node keeps
/// for other nodes during an outage. 64 MiB holds a minute of 1,000 messages
/// per second of 1 KiB; beyond it, new publishes are dropped and counted
/// rather than the process growing without bound.
pub const PENDING_PUBLISH_MAX_BYTES: usize = 64 * 1024 * 1024;

/// After an outage, how long queued publishes wait for their channels'
/// subscribers to come back (see the module docs): nodes resubscribe within
/// [`BACKOFF_MAX`] and a [`COMMAND_TIMEOUT`] of Redis's return, and a loaded
/// machine stretches that; a node that has not resubscribed by then may be
/// gone for good (the hub's `NODE_TIMEOUT` is as long), and the others' messages
/// should not wait for it longer.
pub const RESUBSCRIBE_WAIT_MAX: Duration = Duration::from_secs(10);

/// How often subscriber counts are asked again while publishes wait for
/// them: a few cheap commands per second, and a delay of at most this once
/// the subscribers are back.
const RESUBSCRIBE_POLL: Duration = Duration::from_millis(50);

/// Channels whose subscriber counts the publisher remembers for the wait
/// after an outage: enough for every group and bus channel a node commonly
/// publishes on, at about 100 bytes each; publishes on channels past it do
/// not wait.
const REMEMBERED_CHANNELS_MAX: usize = 4096;

/// Envelopes written per pipeline: large enough to amortise a round trip,
/// small enough that one failed pipeline retries little.
const PUBLISH_BATCH: usize = 256;

/// The envelope kind of the link's own probes.
pub(crate) const KIND_PROBE: u8 = 0;

/// Whether the link can reach other nodes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected (yet), or a probe did not come back: publishes queue,
    /// nothing arrives from other nodes.
    Down,
    /// Subscribed to everything of interest, confirmed, probes returning.
    Up,
}

/// A layer that takes messages of some envelope kinds (the hub, the
/// sessions, the bus).
pub trait Receiver: Send + Sync + 'static {
    /// A message from another node, published on Redis channel `channel`.
    /// Called on the link's subscriber task: must not block.
    fn message(&self, channel: &str, envelope: Envelope);

    /// The subscriber is back after being down, and subscribed again: what
    /// was published meanwhile did not arrive (fill it from history, send
    /// your state again). Also called when the receiver registers with a
    /// link that is up already. Called on a tokio runtime.
    fn resubscribed(self: Arc<Self>) {}

    /// Node `node`, heard from before, stopped: its heartbeat expired
    /// ([`NODE_TIMEOUT`]). Forget what it had (members, sizes).
    fn node_stopped(&self, _node: NodeId) {}
}

/// Why the link could not be made.
#[derive(Debug)]
pub enum LinkError {
    /// `cluster.redis_url` is not a Redis URL this link supports.
    Url(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Url(why) => write!(f, "cluster.redis_url: {why}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// The Redis channel of a node: what is addressed to one of its sockets, and
/// its probes.
pub fn node_channel(node: NodeId) -> String {
    format!("wsbus:node:{}", node.0)
}

/// A node's link to Redis. Cheap to clone. Made by [`RedisLink::start`];
/// its tasks run until [`RedisLink::shutdown`].
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("node", &self.inner.origin.node)
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

struct Inner {
    origin: Origin,
    client: redis::Client,
    /// The subscriber's address and credentials, from the URL.
    address: (String, u16),
    auth: Option<(Option<String>, String)>,
    commands: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Channels the layers above want, besides the node's own.
    interest: Mutex<BTreeSet<String>>,
    /// Woken at every confirmed subscription (`subscriptions_confirmed`).
    confirmations: Notify,
    /// Other nodes this one heard from (their heartbeats are watched).
    seen: Mutex<BTreeSet<NodeId>>,
    /// Channels of `interest` whose subscription Redis confirmed on the
    /// current subscriber connection (emptied when it drops).
    subscribed: Mutex<HashSet<String>>,
    /// Interest changes for the subscriber task, in the order made.
    interest_changes: mpsc::UnboundedSender<InterestChange>,
    pending: Mutex<Pending>,
    pending_ready: Notify,
    sequence: AtomicU64,
    state: watch::Sender<LinkState>,
    receivers: RwLock<HashMap<u8, Arc<dyn Receiver>>>,
    /// Kinds whose receivers get this node's own messages too.
    own_kinds: RwLock<BTreeSet<u8>>,
    malformed: AtomicU64,
    dropped_publishes: AtomicU64,
    shutdown: CancellationToken,
}

enum InterestChange {
    Add(String),
    Remove(String),
}

/// Publishes not yet written, oldest first.
#[derive(Default)]
struct Pending {
    queue: VecDeque<Outgoing>,
    bytes: usize,
}

/// One queued publish.
#[derive(Clone)]
enum Outgoing {
    /// An envelope, `SPUBLISH`ed on each channel.
    Publish(Arc<[String]>, Bytes),
    /// A command that publishes an envelope itself (a script), and the
    /// bytes it is charged.
    Command(redis::Cmd, usize),
}

impl Outgoing {
    fn size(&self) -> usize {
        match self {
            Outgoing::Publish(_, envelope) => envelope.len(),
            Outgoing::Command(_, size) => *size,
        }
    }
}

impl RedisLink {
    /// Makes the link of node `node` to the Redis at `url` and starts its
    /// tasks on the current tokio runtime. Redis need not be reachable: the
    /// link starts down and connects when it can. Only a URL it cannot use
    /// is an error (`redis://[user:password@]host[:port]`; TLS and Unix
    /// sockets are not supported yet).
    pub fn start(url: &str, node: NodeId) -> Result<RedisLink, LinkError> {
        let client = redis::Client::open(url).map_err(|e| LinkError::Url(e.to_string()))?;
        let info = client.get_connection_info();
        let address = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            _ => return Err(LinkError::Url("only redis://host:port is supported".into())),
        };
        let settings = info.redis_settings();
        let auth = settings
            .password()
            .map(|password| (settings.username().map(str::to_owned), password.to_owned()));
        let (interest_changes, changes) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            origin: Origin {
                node,
                incarnation: rand::rng().random(),
            },
            client,
            address,
            auth,
            commands: tokio::sync::Mutex::new(None),
            interest: Mutex::default(),
            subscribed: Mutex::default(),
            seen: Mutex::default(),
            confirmations: Notify::new(),
            interest_changes,
            pending: Mutex::default(),
            pending_ready: Notify::new(),
            sequence: AtomicU64::new(0),
            state: watch::Sender::new(LinkState::Down),
            receivers: RwLock::default(),
            own_kinds: RwLock::default(),
            malformed: AtomicU64::new(0),
            dropped_publishes: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(subscriber::run(inner.clone(), changes));
        tokio::spawn(publisher::run(inner.clone()));
        tokio::spawn(nodes::run(inner.clone()));
        Ok(RedisLink { inner })
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.origin.node
    }

    /// This node in this life (what its envelopes carry).
    pub fn origin(&self) -> Origin {
        self.inner.origin
    }

    /// The link's state now, and every change from here on.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.inner.state.subscribe()
    }

    /// Whether the link is [`LinkState::Up`].
    pub fn is_up(&self) -> bool {
        *self.inner.state.borrow() == LinkState::Up
    }

    /// Hands messages of envelope kinds `kinds` to `receiver` (kinds belong
    /// to one receiver each; kind 0 is the link's own). If the link is up
    /// already, the receiver missed its coming up: it is told at once
    /// ([`Receiver::resubscribed`]), so that it reads the state other nodes
    /// keep in Redis.
    pub fn register(&self, kinds: &[u8], receiver: Arc<dyn Receiver>) {
        let mut receivers = self.inner.receivers.write().expect("receivers lock");
        for &kind in kinds {
            assert_ne!(kind, KIND_PROBE, "kind 0 is the link's probe");
            receivers.insert(kind, receiver.clone());
        }
        // Read under the lock: the subscriber task sets the state before it
        // reads the receivers to tell them, so one of the two tells this
        // one (possibly both: telling twice is harmless).
        let up = self.is_up();
        drop(receivers);
        if up {
            receiver.resubscribed();
        }
    }

    /// Like [`register`](Self::register), and `receiver` gets this node's
    /// own messages of `kinds` too (a layer whose messages come back from
    /// Redis changed, e.g. with a shared history offset).
    pub fn register_with_own(&self, kinds: &[u8], receiver: Arc<dyn Receiver>) {
        self.register(kinds, receiver);
        self.inner
            .own_kinds
            .write()
            .expect("own kinds lock")
            .extend(kinds);
    }

    /// Subscribe to Redis channel `channel` (sharded), now and after every
    /// reconnection, until [`unsubscribe`](Self::unsubscribe). Idempotent.
    pub fn subscribe(&self, channel: &str) {
        if self
            .inner
            .interest
            .lock()
            .expect("interest lock")
            .insert(channel.to_owned())
        {
            let _ = self
                .inner
                .interest_changes
                .send(InterestChange::Add(channel.to_owned()));
        }
    }

    /// Whether Redis confirmed the subscription to `channel` on the current
    /// subscriber connection: from then on, what any node publishes there
    /// reaches this node (until the connection drops, when every channel is
    /// unconfirmed until the resubscription is).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.inner
            .subscribed
            .lock()
            .expect("subscribed lock")
            .contains(channel)
    }

    /// Watch node `node`'s heartbeat (as for every node heard from): when it
    /// stops, receivers hear of it. For state learnt of a node from Redis
    /// rather than from its messages.
    pub fn watch(&self, node: NodeId) {
        if node != self.inner.origin.node {
            self.inner.seen.lock().expect("seen lock").insert(node);
        }
    }

    /// Resolves once Redis confirmed the subscription to every channel of
    /// interest, or the link is down, or `within` passed: a caller that
    /// made a subscription waits here before telling its client it is in
    /// place.
    pub async fn subscriptions_confirmed(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            // Registered before the check: a confirmation in between wakes it.
            let confirmed = self.inner.confirmations.notified();
            if !self.is_up() || self.inner.all_confirmed() {
                return;
            }
            if tokio::time::timeout_at(deadline, confirmed).await.is_err() {
                return;
            }
        }
    }

    /// End the interest in `channel`.
    pub fn unsubscribe(&self, channel: &str) {
        if self
            .inner
            .interest
            .lock()
            .expect("interest lock")
            .remove(channel)
        {
            self.inner
                .subscribed
                .lock()
                .expect("subscribed lock")
                .remove(channel);
            let _ = self
                .inner
                .interest_changes
                .send(InterestChange::Remove(channel.to_owned()));
        }
    }

    /// Publish `payload` as envelope kind `kind` on each of `channels`, with
    /// one sequence number (a receiving node delivers it once). Never
    /// waits; returns false if it was dropped because
    /// [`PENDING_PUBLISH_MAX_BYTES`] are already waiting for Redis.
    pub fn publish(&self, channels: Arc<[String]>, kind: u8, payload: &[u8]) -> bool {
        self.enqueue(kind, payload, |envelope| {
            Outgoing::Publish(channels, envelope)
        })
    }

    /// Like [`publish`](Self::publish), but the envelope (header and
    /// `payload`, stamped with the next sequence number) is handed to
    /// `command`, whose command Redis runs in the envelope's place, in
    /// order with every other publish of this node (e.g. a script that
    /// stores the message and publishes it). Written again after a failure
    /// that may have reached Redis: the command must be idempotent per
    /// origin and sequence.
    pub fn publish_command(
        &self,
        kind: u8,
        payload: &[u8],
        command: impl FnOnce(Bytes) -> redis::Cmd,
    ) -> bool {
        self.enqueue(kind, payload, |envelope| {
            // Charged twice the envelope: the command carries it in pieces
            // and with its arguments.
            let size = 2 * envelope.len();
            Outgoing::Command(command(envelope), size)
        })
    }

    fn enqueue(&self, kind: u8, payload: &[u8], make: impl FnOnce(Bytes) -> Outgoing) -> bool {
        let mut pending = self.inner.pending.lock().expect("pending lock");
        let size = crate::envelope::HEADER_LEN + payload.len();
        if pending.bytes + size > PENDING_PUBLISH_MAX_BYTES {
            drop(pending);
            let dropped = self.inner.dropped_publishes.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() {
                tracing::warn!(target: "wsbus::cluster", dropped = dropped + 1, "publishes waiting for Redis exceed the bound: new publishes are dropped");
            }
            return false;
        }
        // Stamped under the queue's lock: sequence order is queue order.
        let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let envelope = Envelope::encode(self.inner.origin, sequence, kind, payload);
        let outgoing = make(envelope);
        pending.bytes += outgoing.size();
        pending.queue.push_back(outgoing);
        drop(pending);
        self.inner.pending_ready.notify_one();
        true
    }

    /// Publish on one channel.
    pub fn publish_to(&self, channel: &str, kind: u8, payload: &[u8]) -> bool {
        self.publish(Arc::from([channel.to_owned()]), kind, payload)
    }

    /// Run `pipeline` on the command connection (made again if it broke),
    /// within [`COMMAND_TIMEOUT`].
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.inner.query(pipeline).await
    }

    /// Messages found on wsbus channels that were not wsbus envelopes, or of
    /// no known kind (ignored).
    pub fn malformed_messages(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }

    /// Publishes dropped because too many were waiting for Redis.
    pub fn dropped_publishes(&self) -> u64 {
        self.inner.dropped_publishes.load(Ordering::Relaxed)
    }

    /// Envelope bytes waiting to be published.
    pub fn pending_bytes(&self) -> usize {
        self.inner.pending.lock().expect("pending lock").bytes
    }

    /// Stops the link's tasks (receivers get nothing more).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner
            .receivers
            .write()
            .expect("receivers lock")
            .clear();
    }
}

impl Inner {
    /// Redis confirmed a subscription (kept only while still of interest:
    /// a late confirmation of one ended since is not).
    fn confirmed(&self, channel: String) {
        if self
            .interest
            .lock()
            .expect("interest lock")
            .contains(&channel)
        {
            self.subscribed
                .lock()
                .expect("subscribed lock")
                .insert(channel);
            self.confirmations.notify_waiters();
        }
    }

    /// Whether every channel of interest is confirmed. Lock order as in
    /// `confirmed`: interest, then subscribed.
    fn all_confirmed(&self) -> bool {
        let interest = self.interest.lock().expect("interest lock");
        let subscribed = self.subscribed.lock().expect("subscribed lock");
        interest.iter().all(|channel| subscribed.contains(channel))
    }

    fn set_state(&self, state: LinkState, why: &str) {
        let changed = self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        if changed {
            match state {
                LinkState::Up => {
                    tracing::info!(target: "wsbus::cluster", node = self.origin.node.0, "Redis link up: subscribed and confirmed")
                }
                LinkState::Down => {
                    tracing::warn!(target: "wsbus::cluster", node = self.origin.node.0, reason = why, "Redis link down: serving local clients, publishes queued for other nodes")
                }
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.commands.lock().await;
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let result = pipeline.query_async(&mut connection).await;
        if let Err(error) = &result
            && (error.is_io_error()
                || error.is_timeout()
                || error.is_connection_dropped()
                || error.is_unrecoverable_error())
        {
            // Made again by the next caller.
            *self.commands.lock().await = None;
        }
        result
    }

    /// Hands an arrived envelope to its receiver, once per origin and
    /// sequence (module docs).
    fn dispatch(&self, last_seen: &mut HashMap<Origin, u64>, channel: &str, payload: Vec<u8>) {
        let envelope = match Envelope::decode(Bytes::from(payload)) {
            Ok(envelope) => envelope,
            Err(malformed) => {
                self.count_malformed(channel, malformed.0);
                return;
            }
        };
        if envelope.origin == self.origin
            && !self
                .own_kinds
                .read()
                .expect("own kinds lock")
                .contains(&envelope.kind)
        {
            return;
        }
        let last = last_seen.entry(envelope.origin).or_insert_with(|| {
            // A node (or a new life of one) first heard of: watch it.
            self.seen
                .lock()
                .expect("seen lock")
                .insert(envelope.origin.node);
            0
        });
        if envelope.sequence <= *last {
            return;
        }
        *last = envelope.sequence;
        let receiver = self
            .receivers
            .read()
            .expect("receivers lock")
            .get(&envelope.kind)
            .cloned();
        match receiver {
            Some(receiver) => receiver.message(channel, envelope),
            None => self.count_malformed(channel, "unknown kind"),
        }
    }

    fn count_malformed(&self, channel: &str, why: &str) {
        let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged for the first and then at powers of two: a flood of junk
        // does not flood the log.
        if count.is_power_of_two() {
            tracing::warn!(target: "wsbus::cluster", channel, reason = why, count, "ignored a message on a wsbus channel that is not ours");
        }
    }

    fn node_stopped(&self, node: NodeId) {
        self.seen.lock().expect("seen lock").remove(&node);
        for receiver in self.distinct_receivers() {
            receiver.node_stopped(node);
        }
    }

    /// Every registered receiver once, however many kinds it takes.
    fn distinct_receivers(&self) -> Vec<Arc<dyn Receiver>> {
        let mut receivers: Vec<Arc<dyn Receiver>> = self
            .receivers
            .read()
            .expect("receivers lock")
            .values()
            .cloned()
            .collect();
        receivers.sort_by_key(|r| Arc::as_ptr(r).cast::<()>());
        receivers.dedup_by_key(|r| Arc::as_ptr(r).cast::<()>());
        receivers
    }

    fn resubscribed(&self) {
        for receiver in self.distinct_receivers() {
            receiver.resubscribed();
        }
    }
}

/// A wait that grows from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], drawn at random
/// below its bound ("full jitter").
struct Backoff {
    bound: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { bound: BACKOFF_MIN }
    }

    fn next(&mut self) -> Duration {
        let wait = rand::rng().random_range(self.bound / 2..=self.bound);
        self.bound = (self.bound * 2).min(BACKOFF_MAX);
        wait
    }
}

mod nodes;
mod publisher;
mod subscriber;

pub use nodes::{HEARTBEAT_INTERVAL, NODE_TIMEOUT};
