//! The hub: send to a socket, to a group, or close a socket, from anywhere.
//!
//! Every socket registers a [`SocketShared`] here: an outbox, a wake-up,
//! its group memberships and its handshake's facts ([`SocketFacts`], what
//! [`LocalHub::sockets`] lists for operators). A send from outside the socket's task pushes into
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

mod facts;
mod id;
mod local;
mod socket;

use std::fmt;
use std::sync::Arc;

use wsbus_proto::{CloseCode, Message};

use crate::app::SocketInfo;

pub(crate) use facts::Opened;
pub use facts::{SocketFacts, SocketSnapshot};
pub use id::{NodeId, ParseSocketIdError, SocketId};
pub use local::{GroupObserver, LocalHub};
pub(crate) use socket::{Outbound, OutboxLimit, SocketShared};

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

    /// Register a socket `info` (its id is set here) that was `opened` so.
    pub(crate) fn register_with(&self, info: SocketInfo, opened: Opened) -> Arc<SocketShared> {
        self.local.register(info, opened)
    }

    /// Register a socket whose handshake does not matter (tests).
    #[cfg(test)]
    pub(crate) fn register(&self) -> Arc<SocketShared> {
        self.register_with(
            SocketInfo::unknown(),
            Opened::now(std::net::Ipv4Addr::UNSPECIFIED.into()),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// What operators see: each socket's facts, groups and outbox; each
    /// group's size; a closed socket gone from both.
    #[test]
    fn sockets_and_groups_are_listed() {
        let hub = Hub::new();
        let info = SocketInfo {
            path: "/chat".into(),
            user: Some(crate::session::User::new("ada")),
            ..SocketInfo::unknown()
        };
        let opened = Opened {
            subprotocol: Some("chat.v1".into()),
            ..Opened::now([192, 0, 2, 7].into())
        };
        let a = hub.register_with(info, opened).id();
        let b = hub.register().id();
        hub.add_to_group("room", a);
        hub.add_to_group("room", b);
        hub.add_to_group("solo", b);
        hub.send(a, Message::text("12345"));
        let sockets = hub.local().sockets();
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].id, a);
        assert_eq!(&*sockets[0].facts.path, "/chat");
        assert_eq!(sockets[0].facts.user.as_deref(), Some("ada"));
        assert_eq!(sockets[0].facts.client.to_string(), "192.0.2.7");
        assert_eq!(sockets[0].facts.extensions(), None);
        assert_eq!(sockets[0].facts.subprotocol.as_deref(), Some("chat.v1"));
        assert_eq!(sockets[0].groups, vec!["room".into()]);
        assert_eq!(sockets[0].outbox_bytes, 5);
        assert_eq!(sockets[1].outbox_bytes, 0);
        assert_eq!(
            hub.local().groups(),
            vec![("room".into(), 2), ("solo".into(), 1)]
        );
        hub.unregister(b);
        assert_eq!(hub.local().sockets().len(), 1);
        assert_eq!(hub.local().groups(), vec![("room".into(), 1)]);
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
        assert_eq!(hub.local.group_count(), 0);
    }
}
