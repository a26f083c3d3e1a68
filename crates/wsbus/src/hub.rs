//! The hub: send to a socket, to a group, or close a socket, from anywhere.
//!
//! Every socket registers a [`SocketShared`] here: an outbox, a wake-up and
//! its group memberships. A send from outside the socket's task pushes into
//! the outbox and wakes the task, which moves the message into its protocol
//! connection. A message sent to a group is encoded once
//! ([`PreparedMessage`]) and the same bytes are queued on every member.
//!
//! # Locks
//!
//! Three kinds, always taken in this order, never the other way round:
//! a socket's `membership`, then the hub's `groups`, then a socket's
//! `outbox`. The hub's `sockets` map is only ever held alone. Group
//! membership is recorded on the socket first, under its `membership` lock,
//! which also carries the socket's `closed` flag: an `add_to_group` racing the
//! socket's `unregister` either sees `closed` and adds nothing, or finishes
//! first and is undone by the `unregister` that follows it. No dead socket can
//! stay in a group (the `register_join_unregister_race_leaves_no_member` test
//! runs that race from several threads).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wsbus_proto::{CloseCode, Message, PreparedMessage};

use crate::driver::SlowConsumerPolicy;

/// The node a socket lives on. Every node of a cluster has its own (the
/// cluster engine assigns them); a single process is node 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u16);

/// A socket's id, unique across a cluster: the [`NodeId`] of the node that
/// holds the socket and a number unique on that node.
///
/// Opaque: compare, hash, print (`<node>.<number>`) and parse it back
/// ([`std::str::FromStr`]), but do not compute with it. Ids are never
/// reused within a node's life (48 bits of sequence: 2^48 sockets).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

impl SocketId {
    /// Bits of the per-node sequence; the node id takes the 16 above them.
    const SEQUENCE_BITS: u32 = 48;

    fn new(node: NodeId, sequence: u64) -> Self {
        debug_assert!(sequence < 1 << Self::SEQUENCE_BITS);
        SocketId(u64::from(node.0) << Self::SEQUENCE_BITS | sequence)
    }

    /// The node that holds the socket.
    pub fn node(self) -> NodeId {
        NodeId((self.0 >> Self::SEQUENCE_BITS) as u16)
    }

    /// The socket's number on its node.
    fn sequence(self) -> u64 {
        self.0 & ((1 << Self::SEQUENCE_BITS) - 1)
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node().0, self.sequence())
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({self})")
    }
}

/// A string that is not a [`SocketId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSocketIdError;

impl fmt::Display for ParseSocketIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a socket id is <node>.<number>")
    }
}

impl std::error::Error for ParseSocketIdError {}

impl std::str::FromStr for SocketId {
    type Err = ParseSocketIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (node, sequence) = s.split_once('.').ok_or(ParseSocketIdError)?;
        let node = node.parse::<u16>().map_err(|_| ParseSocketIdError)?;
        let sequence = sequence.parse::<u64>().map_err(|_| ParseSocketIdError)?;
        if sequence >= 1 << Self::SEQUENCE_BITS {
            return Err(ParseSocketIdError);
        }
        Ok(SocketId::new(NodeId(node), sequence))
    }
}

/// What a hub call achieved, as far as this node can know when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done on this node: the message or close is queued on the socket (its
    /// task writes it, after everything queued before it), or the group
    /// change is made.
    Done,
    /// Handed to the cluster for the node that holds the socket. Whether it
    /// arrives is not known here: that node may close the socket meanwhile,
    /// or die.
    Forwarded,
    /// No such socket is open (for `remove_from_group`: it is not a member).
    /// Only a node that holds the socket, or knows that it is gone, answers
    /// this.
    NotFound,
    /// The socket's outbox is full (it is sent to faster than it takes
    /// messages in): the slow-consumer policy applied, the message was
    /// dropped, and with the default policy the socket is closing with 1008
    /// `slow consumer`.
    Dropped,
}

impl Outcome {
    /// `Done` or `Forwarded`: the call was taken, here or by the cluster.
    pub fn is_accepted(self) -> bool {
        matches!(self, Outcome::Done | Outcome::Forwarded)
    }
}

/// What [`Hub::send_to_group`] achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupSend {
    /// Members on this node that the message was queued for (not counting
    /// those whose outbox was full: [`Outcome::Dropped`]).
    pub local: usize,
    /// Whether the message was also handed to the cluster for members on
    /// other nodes (whose number is not known here).
    pub forwarded: bool,
}

/// What the hub hands a socket's task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(PreparedMessage),
    Close(CloseCode, String),
    /// The outbox overflowed under [`SlowConsumerPolicy::Close`]: what was
    /// queued is gone; close the socket as a slow consumer.
    Overflowed,
}

/// How much a socket's outbox may hold, and what happens past it: the
/// socket's [`SocketSettings`](crate::SocketSettings) `max_outbound_bytes`
/// and `slow_consumer`. The outbox is bounded on its own, not only the write
/// queue it is moved into: a socket whose task waits for a CPU while
/// publishers keep sending must not grow without bound either.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutboxLimit {
    pub(crate) max_bytes: usize,
    pub(crate) policy: SlowConsumerPolicy,
}

impl Default for OutboxLimit {
    fn default() -> Self {
        let settings = crate::SocketSettings::default();
        OutboxLimit {
            max_bytes: settings.max_outbound_bytes,
            policy: settings.slow_consumer,
        }
    }
}

/// The part of a socket that other tasks reach: its outbox, the waker of
/// its task while it waits, and its groups.
#[derive(Debug)]
pub(crate) struct SocketShared {
    id: SocketId,
    outbox: Mutex<Outbox>,
    membership: Mutex<Membership>,
}

/// A waker rather than a `Notify`: the socket's task registers it while it
/// polls, so nothing else per socket sits in the task's state.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Outbound>,
    waker: Option<Waker>,
    /// Payload bytes of the queued messages (shared frames counted per
    /// socket, as the write queue counts them).
    bytes: usize,
    /// Overflowed under the close policy: the socket is closing, later
    /// messages are dropped.
    overflowed: bool,
}

/// A socket's groups, and whether it has left the hub (after which it joins
/// none).
#[derive(Debug, Default)]
struct Membership {
    closed: bool,
    groups: Vec<Box<str>>,
}

impl SocketShared {
    fn new(id: SocketId) -> Self {
        SocketShared {
            id,
            outbox: Mutex::default(),
            membership: Mutex::default(),
        }
    }

    /// The socket's id.
    pub(crate) fn id(&self) -> SocketId {
        self.id
    }

    fn push(&self, item: Outbound) {
        let waker = {
            let mut outbox = self.outbox.lock().expect("outbox lock");
            outbox.queue.push_back(item);
            outbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queue a message within `limit`, or apply its slow-consumer policy.
    fn push_message(&self, prepared: PreparedMessage, limit: OutboxLimit) -> Outcome {
        let size = prepared.message().len();
        let (outcome, waker) = {
            let mut outbox = self.outbox.lock().expect("outbox lock");
            if outbox.overflowed {
                return Outcome::Dropped;
            }
            if outbox.bytes + size <= limit.max_bytes {
                outbox.bytes += size;
                outbox.queue.push_back(Outbound::Message(prepared));
                (Outcome::Done, outbox.waker.take())
            } else if limit.policy == SlowConsumerPolicy::Drop {
                return Outcome::Dropped;
            } else {
                // What is queued is let go now (the socket closes without
                // it, as the write queue's unstarted frames are); the task
                // closes with 1008 when it wakes.
                outbox.overflowed = true;
                outbox.queue.clear();
                outbox.bytes = 0;
                outbox.queue.push_back(Outbound::Overflowed);
                (Outcome::Dropped, outbox.waker.take())
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    /// Queue a close for the socket.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.push(Outbound::Close(code, reason.to_owned()));
    }

    /// Take everything queued for the socket.
    pub(crate) fn drain(&self) -> VecDeque<Outbound> {
        let mut outbox = self.outbox.lock().expect("outbox lock");
        outbox.bytes = 0;
        std::mem::take(&mut outbox.queue)
    }

    /// Ready when something is queued; otherwise the next push wakes `cx`.
    pub(crate) fn poll_outbox(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut outbox = self.outbox.lock().expect("outbox lock");
        if !outbox.queue.is_empty() {
            return Poll::Ready(());
        }
        match &mut outbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// What a hub does with sockets and groups. [`LocalHub`] implements it for
/// one process. A cluster engine implements it by wrapping this node's
/// `LocalHub` (handed to it by [`crate::RuntimeBuilder::hub_engine`]) and
/// forwarding what concerns other nodes, so that applications, which only
/// ever see [`Hub`], do not change.
///
/// Every method is synchronous and must not block: it is called from socket
/// tasks and handlers. An engine that talks to other nodes queues the work
/// and answers [`Outcome::Forwarded`].
pub trait HubEngine: Send + Sync + fmt::Debug + 'static {
    /// Queue `message` for socket `id`.
    fn send(&self, id: SocketId, message: Message) -> Outcome;
    /// Queue `message` for every member of `group`, encoded once.
    fn send_to_group(&self, group: &str, message: Message) -> GroupSend;
    /// Make socket `id` a member of `group` (no change if it is one).
    fn add_to_group(&self, group: &str, id: SocketId) -> Outcome;
    /// End socket `id`'s membership of `group`.
    fn remove_from_group(&self, group: &str, id: SocketId) -> Outcome;
    /// The number of members of `group`; see [`Hub::group_size`] for how
    /// fresh it is.
    fn group_size(&self, group: &str) -> usize;
    /// Close socket `id` with `code` and `reason`.
    fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> Outcome;
}

/// The sockets and groups of this process.
#[derive(Debug, Default)]
pub struct LocalHub {
    node: NodeId,
    limit: OutboxLimit,
    next_sequence: AtomicU64,
    sockets: Mutex<HashMap<SocketId, Arc<SocketShared>>>,
    /// Each group's members, with their shared part at hand: a broadcast
    /// pushes to them without a second lookup per member.
    groups: Mutex<HashMap<Box<str>, Members>>,
}

/// A group's members on this node.
type Members = HashMap<SocketId, Arc<SocketShared>>;

/// Handle to the sockets of this server: `send`, `send_to_group`, groups and
/// `close`. Cheap to clone; callable from handlers, HTTP routes and background
/// tasks alike. Calls go to the hub's [`HubEngine`]: this process's
/// [`LocalHub`] unless a cluster engine was installed with
/// [`crate::RuntimeBuilder::hub_engine`].
///
/// # Ordering
///
/// Calls made one after another by one task take effect in that order for
/// each socket: two `send`s to a socket arrive in the order they were made,
/// a `send` before a `close` is written before the close frame, and a
/// socket added to a group receives every `send_to_group` made after
/// `add_to_group` returned. Nothing is promised between calls from different
/// tasks, nor between a message the socket's own handler sends with
/// [`WsEvent::send`](crate::app::WsEvent::send) (written at once) and one
/// queued through the hub (written when the socket's task next wakes).
/// Through a cluster engine the same holds per sending node.
///
/// # Memory
///
/// A socket's outbox is bounded: past
/// [`SocketSettings::max_outbound_bytes`](crate::SocketSettings) of queued
/// payload the slow-consumer policy applies ([`Outcome::Dropped`]: by
/// default what was queued is dropped and the socket closes with 1008; with
/// `SlowConsumerPolicy::Drop` the new message is dropped). The socket's task
/// moves the outbox into its write queue at every wake, and that queue has
/// the same bound, so a socket holds at most about twice the limit whatever
/// publishers do and however long its task waits for a CPU. When a socket
/// closes, its outbox is dropped with it.
#[derive(Clone, Debug)]
pub struct Hub {
    local: Arc<LocalHub>,
    engine: Arc<dyn HubEngine>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::with_local(Arc::new(LocalHub::default()))
    }
}

impl Hub {
    /// A hub for this process alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub of one process whose calls go to `local`.
    pub(crate) fn with_local(local: Arc<LocalHub>) -> Self {
        Hub {
            engine: local.clone(),
            local,
        }
    }

    /// A hub whose calls go to `engine`, which must deliver to this
    /// process's sockets through `local`.
    pub(crate) fn with_engine(local: Arc<LocalHub>, engine: Arc<dyn HubEngine>) -> Self {
        Hub { local, engine }
    }

    /// This process's sockets.
    pub fn local(&self) -> &Arc<LocalHub> {
        &self.local
    }

    pub(crate) fn register(&self) -> Arc<SocketShared> {
        self.local.register()
    }

    pub(crate) fn unregister(&self, id: SocketId) {
        self.local.unregister(id);
    }

    /// Queue `message` for socket `id`. [`Outcome::Done`]: queued on a socket
    /// of this node; [`Outcome::NotFound`]: no such socket is open.
    pub fn send(&self, id: SocketId, message: Message) -> Outcome {
        self.engine.send(id, message)
    }

    /// Queue `message` for every member of `group`, encoded once for all.
    pub fn send_to_group(&self, group: &str, message: Message) -> GroupSend {
        self.engine.send_to_group(group, message)
    }

    /// Make socket `id` a member of `group`; adding a member again changes
    /// nothing. The membership ends when the socket closes.
    pub fn add_to_group(&self, group: &str, id: SocketId) -> Outcome {
        self.engine.add_to_group(group, id)
    }

    /// End socket `id`'s membership of `group` ([`Outcome::NotFound`] if it
    /// was not a member). A group without members ceases to exist.
    pub fn remove_from_group(&self, group: &str, id: SocketId) -> Outcome {
        self.engine.remove_from_group(group, id)
    }

    /// The number of members of `group`. On one node: exact when the call
    /// returns (a socket counts until it has closed). Through a cluster
    /// engine, this node's members are exact and other nodes' are as the
    /// engine last heard of them (its documentation says how stale that may
    /// be).
    pub fn group_size(&self, group: &str) -> usize {
        self.engine.group_size(group)
    }

    /// Close socket `id` with `code` and `reason`: the close frame is written
    /// after what was queued for the socket before it; the socket's handler
    /// gets CLOSE when the closing handshake ends.
    pub fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> Outcome {
        self.engine.close(id, code, reason)
    }

    /// The number of open sockets on this node.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    /// Whether no socket is open on this node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LocalHub {
    /// The sockets and groups of node `node`, none yet, with the default
    /// outbox bound (8 MiB, then close the socket).
    pub fn new(node: NodeId) -> Self {
        LocalHub {
            node,
            ..LocalHub::default()
        }
    }

    /// The same, with each socket's outbox bounded by `limit`.
    pub(crate) fn with_limit(node: NodeId, limit: OutboxLimit) -> Self {
        LocalHub {
            node,
            limit,
            ..LocalHub::default()
        }
    }

    /// The node these sockets live on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    fn register(&self) -> Arc<SocketShared> {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let id = SocketId::new(self.node, sequence);
        let shared = Arc::new(SocketShared::new(id));
        self.sockets
            .lock()
            .expect("hub lock")
            .insert(id, shared.clone());
        shared
    }

    /// Forget a closed socket and end its group memberships. Idempotent.
    fn unregister(&self, id: SocketId) {
        let Some(shared) = self.sockets.lock().expect("hub lock").remove(&id) else {
            return;
        };
        // The task's waker refers to the task: let it go with the socket.
        shared.outbox.lock().expect("outbox lock").waker = None;
        let mut membership = shared.membership.lock().expect("membership lock");
        membership.closed = true;
        let groups = std::mem::take(&mut membership.groups);
        let mut all = self.groups.lock().expect("hub lock");
        for group in groups {
            if let Some(members) = all.get_mut(&group) {
                members.remove(&id);
                if members.is_empty() {
                    all.remove(&group);
                }
            }
        }
    }

    /// Close every socket of this process (server shutdown).
    pub(crate) fn close_all(&self, code: CloseCode, reason: &str) {
        let sockets: Vec<Arc<SocketShared>> = self
            .sockets
            .lock()
            .expect("hub lock")
            .values()
            .cloned()
            .collect();
        for socket in sockets {
            socket.close(code, reason);
        }
    }

    fn socket(&self, id: SocketId) -> Option<Arc<SocketShared>> {
        self.sockets.lock().expect("hub lock").get(&id).cloned()
    }

    /// The number of open sockets.
    pub fn len(&self) -> usize {
        self.sockets.lock().expect("hub lock").len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue a close for a socket of this node.
    fn push_close(&self, id: SocketId, code: CloseCode, reason: &str) -> Outcome {
        match self.socket(id) {
            Some(socket) => {
                socket.close(code, reason);
                Outcome::Done
            }
            None => Outcome::NotFound,
        }
    }
}

/// This node's sockets only: an id of another node is [`Outcome::NotFound`].
impl HubEngine for LocalHub {
    fn send(&self, id: SocketId, message: Message) -> Outcome {
        match self.socket(id) {
            Some(socket) => socket.push_message(PreparedMessage::new(message), self.limit),
            None => Outcome::NotFound,
        }
    }

    fn send_to_group(&self, group: &str, message: Message) -> GroupSend {
        let prepared = PreparedMessage::new(message);
        // Pushing under the groups lock keeps a broadcast free of per-member
        // allocation; a push only appends to an outbox and takes a waker.
        let groups = self.groups.lock().expect("hub lock");
        let Some(members) = groups.get(group) else {
            return GroupSend::default();
        };
        let mut queued = 0;
        for socket in members.values() {
            if socket.push_message(prepared.clone(), self.limit) == Outcome::Done {
                queued += 1;
            }
        }
        GroupSend {
            local: queued,
            forwarded: false,
        }
    }

    fn add_to_group(&self, group: &str, id: SocketId) -> Outcome {
        let Some(socket) = self.socket(id) else {
            return Outcome::NotFound;
        };
        // Lock order: membership, then groups (module docs).
        let mut membership = socket.membership.lock().expect("membership lock");
        if membership.closed {
            return Outcome::NotFound;
        }
        let added = self
            .groups
            .lock()
            .expect("hub lock")
            .entry(group.into())
            .or_default()
            .insert(id, socket.clone())
            .is_none();
        if added {
            membership.groups.push(group.into());
        }
        Outcome::Done
    }

    fn remove_from_group(&self, group: &str, id: SocketId) -> Outcome {
        let Some(socket) = self.socket(id) else {
            return Outcome::NotFound;
        };
        let mut membership = socket.membership.lock().expect("membership lock");
        let Some(position) = membership.groups.iter().position(|g| &**g == group) else {
            return Outcome::NotFound;
        };
        membership.groups.swap_remove(position);
        let mut groups = self.groups.lock().expect("hub lock");
        if let Some(members) = groups.get_mut(group) {
            members.remove(&id);
            if members.is_empty() {
                groups.remove(group);
            }
        }
        Outcome::Done
    }

    fn group_size(&self, group: &str) -> usize {
        self.groups
            .lock()
            .expect("hub lock")
            .get(group)
            .map_or(0, HashMap::len)
    }

    fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> Outcome {
        self.push_close(id, code, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_carry_their_node_and_print_and_parse() {
        let hub = LocalHub::new(NodeId(7));
        let a = hub.register().id();
        let b = hub.register().id();
        assert_ne!(a, b);
        assert_eq!(a.node(), NodeId(7));
        assert_eq!(a.to_string(), "7.1");
        assert_eq!("7.1".parse::<SocketId>(), Ok(a));
        for bad in ["", "7", "x.1", "7.x", "70000.1", "1.281474976710656"] {
            assert_eq!(bad.parse::<SocketId>(), Err(ParseSocketIdError), "{bad}");
        }
    }

    #[test]
    fn outcomes_say_what_is_known() {
        let hub = Hub::new();
        let shared = hub.register();
        let id = shared.id();
        assert_eq!(hub.send(id, Message::text("x")), Outcome::Done);
        assert_eq!(hub.add_to_group("g", id), Outcome::Done);
        assert_eq!(hub.add_to_group("g", id), Outcome::Done);
        assert_eq!(hub.group_size("g"), 1);
        assert_eq!(
            hub.send_to_group("g", Message::text("y")),
            GroupSend {
                local: 1,
                forwarded: false
            }
        );
        assert_eq!(shared.drain().len(), 2);
        assert_eq!(hub.remove_from_group("g", id), Outcome::Done);
        assert_eq!(hub.remove_from_group("g", id), Outcome::NotFound);
        assert_eq!(hub.group_size("g"), 0);
        hub.unregister(id);
        assert_eq!(hub.send(id, Message::text("x")), Outcome::NotFound);
        assert_eq!(hub.close(id, CloseCode::NORMAL, ""), Outcome::NotFound);
        assert_eq!(hub.add_to_group("g", id), Outcome::NotFound);
        assert!(hub.is_empty());
    }

    fn payloads(shared: &SocketShared) -> Vec<String> {
        shared
            .drain()
            .into_iter()
            .map(|item| match item {
                Outbound::Message(prepared) => {
                    String::from_utf8(prepared.message().payload().to_vec()).unwrap()
                }
                Outbound::Close(code, _) => format!("close {}", code.0),
                Outbound::Overflowed => "overflowed".to_owned(),
            })
            .collect()
    }

    /// The outbox's bound, for a socket whose task does not drain it: the
    /// close policy lets go of what is queued and marks the socket for a
    /// 1008; the drop policy drops what does not fit.
    #[test]
    fn outbox_is_bounded_by_the_slow_consumer_policy() {
        let sixty = "x".repeat(60);
        for (policy, expected) in [
            (SlowConsumerPolicy::Close, vec!["overflowed"]),
            (SlowConsumerPolicy::Drop, vec![sixty.as_str()]),
        ] {
            let limit = OutboxLimit {
                max_bytes: 100,
                policy,
            };
            let hub = Hub::with_local(Arc::new(LocalHub::with_limit(NodeId(0), limit)));
            let shared = hub.register();
            let id = shared.id();
            hub.add_to_group("g", id);
            assert_eq!(hub.send(id, Message::text(sixty.clone())), Outcome::Done);
            assert_eq!(hub.send(id, Message::text(sixty.clone())), Outcome::Dropped);
            assert_eq!(
                hub.send_to_group("g", Message::text("x")).local,
                usize::from(policy == SlowConsumerPolicy::Drop)
            );
            assert_eq!(
                payloads(&shared)[..expected.len()],
                expected[..],
                "{policy:?}"
            );
            match policy {
                // Closing: nothing more is taken.
                SlowConsumerPolicy::Close => {
                    assert_eq!(hub.send(id, Message::text("late")), Outcome::Dropped)
                }
                // Drained: room again.
                SlowConsumerPolicy::Drop => {
                    assert_eq!(hub.send(id, Message::text(sixty.clone())), Outcome::Done)
                }
            }
        }
    }

    /// The race the module's lock order closes: sockets joining groups from
    /// other threads while they unregister. Whatever the interleaving, no
    /// group may keep a member that has left the hub.
    #[test]
    fn register_join_unregister_race_leaves_no_member() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 2_000;
        let hub = Hub::new();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let hub = &hub;
                scope.spawn(move || {
                    for round in 0..ROUNDS {
                        let id = hub.register().id();
                        let group = format!("g{}", (t + round) % 3);
                        std::thread::scope(|inner| {
                            inner.spawn(|| {
                                hub.add_to_group(&group, id);
                                hub.add_to_group("all", id);
                            });
                            inner.spawn(|| hub.unregister(id));
                        });
                        // A late join after the socket left is refused.
                        assert_eq!(hub.add_to_group("late", id), Outcome::NotFound);
                    }
                });
            }
        });
        assert!(hub.is_empty());
        for group in ["g0", "g1", "g2", "all", "late"] {
            assert_eq!(
                hub.group_size(group),
                0,
                "group {group} kept a closed socket"
            );
        }
        assert!(hub.local.groups.lock().unwrap().is_empty());
    }
}
