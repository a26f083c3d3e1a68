//! The bus across nodes: the seam a cluster (Redis, in `wsbus-redis`)
//! plugs into.
//!
//! Its rustdoc ([`BusCluster`]) is the contract.

use std::sync::{Arc, Weak};

use wsbus_bayeux::{
    ChannelName, ChannelPattern, ClusterPublish, FetchedHistory, HistoryConfig, HistoryRequest,
    InterestChange, Origin, SharedHistory,
};

use super::{Bus, Inner, PublishError, now};

/// What joins a [`Bus`] to the buses of other nodes.
///
/// A [`Bus`] is one node's. Installed with [`Bus::set_cluster`], a
/// [`BusCluster`] is told every message this node accepted for broadcast
/// ([`BusCluster::publish`]) and every change in the patterns this node has
/// subscribers for ([`BusCluster::interest`]); it brings other nodes'
/// messages to [`Bus::receive_from_cluster`]. Without one, nothing of this
/// runs: the engine emits no cluster events.
///
/// # What crosses, what does not
///
/// Crosses: a client's publish that passed its channel's policy and
/// authorizer, [`Bus::publish`], presence joins and leaves (on
/// `/presence/<channel>`). Stays on its node: `/meta/**` (the protocol),
/// `/service/**` (the node's own handlers; a handler that wants the other
/// nodes to know publishes), [`Bus::deliver`] (to one client, which is
/// here). History is each node's own unless the cluster shares it
/// ([`Bus::set_shared_history`]): then a publish on a channel with history
/// is [`ClusterPublish::shared`], goes to the shared history and comes back
/// to every node, its origin included (see `wsbus_bayeux`, "Several
/// nodes").
///
/// # Ordering
///
/// The bus hands the cluster its calls in the engine's order, one thread at
/// a time, with no bus lock held (the send queue of `sends.rs`). So if the
/// cluster keeps each origin node's order (a promise its implementation
/// must make, for every channel a subscriber may match), the messages one
/// publisher publishes on one node reach each subscriber on every node in
/// publish order, as on one node. Nothing is promised between publishers,
/// nor between nodes.
///
/// # Calls
///
/// Both methods are called in the order the engine produced what they
/// carry, by one thread at a time, with no bus lock held: they may call
/// back into this bus or another (a loopback in tests delivers to the other
/// buses at once). They must not block: they run on the thread of whatever
/// bus call caused them (a socket's task, a long-polling request); queue
/// the work and return.
pub trait BusCluster: Send + Sync + std::fmt::Debug + 'static {
    /// A message this node accepted for broadcast (and has queued for its
    /// own subscribers), for the subscribers on other nodes. The other
    /// nodes hand it to their [`Bus::receive_from_cluster`]; never back to
    /// this node (it has delivered it already).
    fn publish(&self, message: ClusterPublish);

    /// A pattern gained its first subscriber on this node, or lost its
    /// last: the node needs to hear the other nodes' messages on the
    /// channels it matches, or no longer does. Applied in order as set
    /// operations (gain = insert, loss = remove), these add up to
    /// [`Bus::cluster_interest`].
    fn interest(&self, change: InterestChange);

    /// A subscribe waits for the shared history of a channel: read it and
    /// answer with [`Bus::history_fetched`] (always, [`FetchedHistory::Failed`]
    /// if Redis cannot be read). Only asked of a cluster that turned
    /// [`Bus::set_shared_history`] on, which must implement it (the default
    /// ignores the request).
    fn fetch_history(&self, request: HistoryRequest) {
        let _ = request;
    }

    /// Resolves once every pattern this node has subscribers for is
    /// subscribed in the cluster (what other nodes publish reaches this
    /// node), or when that cannot be known soon (the cluster is down, or a
    /// bound passed). A long-polling subscribe is answered after it. The
    /// default: at once.
    fn settled(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

impl Bus {
    /// Joins this bus to other nodes' through `cluster` (see
    /// [`BusCluster`], "What crosses"). From this call on, every message accepted for
    /// broadcast here goes to [`BusCluster::publish`] and every interest
    /// change to [`BusCluster::interest`]; what was subscribed before is in
    /// [`cluster_interest`](Self::cluster_interest). Once per bus: a second
    /// cluster is refused and handed back.
    pub fn set_cluster(&self, cluster: Arc<dyn BusCluster>) -> Result<(), Arc<dyn BusCluster>> {
        // Under the engine lock: no event is produced between the cluster
        // being set and the engine emitting events for it.
        let mut engine = self.inner.engine.lock().expect("bus lock");
        self.inner.cluster.set(cluster)?;
        engine.set_cluster_events(true);
        Ok(())
    }

    /// Every channel pattern with at least one subscriber on this node,
    /// sorted: what to (re)subscribe to after (re)connecting to the other
    /// nodes. Changes made before this call may still reach
    /// [`BusCluster::interest`] after it (they were queued, not yet handed
    /// over); applied in order as set operations after this snapshot, they
    /// leave the right set. So a cluster takes the snapshot under the lock
    /// its `interest` takes, and applies changes after it.
    pub fn cluster_interest(&self) -> Vec<ChannelPattern> {
        self.inner.engine.lock().expect("bus lock").interest()
    }

    /// Delivers a message published on another node to this node's
    /// subscribers, exact and wildcard (each once), over WebSocket and
    /// long-polling alike, as a local publish would. No publish policy or
    /// schema is checked (its origin node did), it is kept in this node's
    /// history only with shared history on (with its shared offset), and it
    /// is never forwarded again (no [`BusCluster::publish`]). How many clients
    /// it was queued for.
    ///
    /// Fails with [`PublishError::Refused`] on a `/meta` or `/service`
    /// channel (never forwarded by a bus).
    pub fn receive_from_cluster(&self, message: ClusterPublish) -> Result<usize, PublishError> {
        self.drive(|engine| engine.receive(now(), message))
            .map_err(|e| PublishError::Refused(e.to_string()))
    }

    /// Takes the offsets of channels with history from a history shared by
    /// the cluster (`Up` or `Down`, as it can be reached), or from this node
    /// (`Off`, the default). Set by the cluster, which then answers
    /// [`BusCluster::fetch_history`].
    pub fn set_shared_history(&self, state: SharedHistory) {
        self.inner
            .engine
            .lock()
            .expect("bus lock")
            .set_shared_history(state);
    }

    /// The shared history's answer to [`BusCluster::fetch_history`]: the
    /// waiting subscribe is carried out once all its channels are answered.
    pub fn history_fetched(&self, id: u64, channel: &ChannelName, fetched: FetchedHistory) {
        self.drive(|engine| engine.history_fetched(now(), id, channel, fetched));
    }

    /// The bus's history limits (what a shared history keeps per channel,
    /// and for how long).
    pub fn history_config(&self) -> HistoryConfig {
        self.inner.engine.lock().expect("bus lock").config().history
    }

    /// Waits for [`BusCluster::settled`], if a cluster is installed.
    pub(super) async fn cluster_settled(&self) {
        if let Some(cluster) = self.cluster() {
            cluster.settled().await;
        }
    }

    /// The installed cluster, if any.
    pub(super) fn cluster(&self) -> Option<&dyn BusCluster> {
        self.inner.cluster.get().map(|cluster| &**cluster)
    }
}

/// A handle to a bus that does not keep it alive: for a cluster's receiving
/// side, which the bus itself (through its [`BusCluster`]) keeps.
#[derive(Clone)]
pub struct WeakBus(Weak<Inner>);

impl std::fmt::Debug for WeakBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakBus")
    }
}

impl WeakBus {
    /// The bus, unless every [`Bus`] of it has been dropped.
    pub fn upgrade(&self) -> Option<Bus> {
        self.0.upgrade().map(|inner| Bus { inner })
    }
}

impl Bus {
    /// A [`WeakBus`] of this bus.
    pub fn downgrade(&self) -> WeakBus {
        WeakBus(Arc::downgrade(&self.inner))
    }
}

/// Presence across nodes: other nodes' members in this node's lists.
impl Bus {
    /// [`receive_from_cluster`](Self::receive_from_cluster) for a message
    /// from node `origin` (a number the cluster gives its nodes): a join or
    /// leave on a `/presence` channel also counts in this node's member
    /// lists ([`Bus::presence`], subscribe replies) until the member leaves
    /// or [`forget_node`](Self::forget_node) is called for its node.
    pub fn receive_from_node(
        &self,
        origin: Origin,
        message: ClusterPublish,
    ) -> Result<usize, PublishError> {
        self.drive(|engine| {
            engine.note_remote_presence(origin, &message);
            engine.receive(now(), message)
        })
        .map_err(|e| PublishError::Refused(e.to_string()))
    }

    /// Node `origin` stopped: its presence members leave (this node's
    /// watchers of their channels get a leave each). How many left.
    pub fn forget_node(&self, origin: Origin) -> usize {
        self.drive(|engine| engine.forget_origin(now(), origin))
    }

    /// Replaces what this node knows of node `origin`'s presence members
    /// (channel, client id, user), as the cluster's store holds them.
    pub fn set_remote_members(
        &self,
        origin: Origin,
        members: impl IntoIterator<Item = (ChannelName, String, Option<String>)>,
    ) {
        self.inner
            .engine
            .lock()
            .expect("bus lock")
            .set_remote_members(origin, members);
    }

    /// This node's presence members: (channel, client id, user), for the
    /// cluster's store.
    pub fn local_members(&self) -> Vec<(ChannelName, String, Option<String>)> {
        self.inner
            .engine
            .lock()
            .expect("bus lock")
            .local_members()
            .into_iter()
            .map(|(channel, client, user)| {
                (
                    channel,
                    client.as_str().to_owned(),
                    user.map(|u| u.to_string()),
                )
            })
            .collect()
    }
}
