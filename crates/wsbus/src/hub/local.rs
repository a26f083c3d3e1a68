//! [`LocalHub`]: the sockets and groups of this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use wsbus_proto::{CloseCode, Message, PreparedMessage};

use super::socket::{OutboxLimit, SocketShared};
use super::{GroupSend, HubEngine, NodeId, Opened, Outcome, SocketId, SocketSnapshot};
use crate::app::SocketInfo;

/// The sockets and groups of this process.
#[derive(Default)]
pub struct LocalHub {
    node: NodeId,
    limit: OutboxLimit,
    next_sequence: AtomicU64,
    sockets: Mutex<HashMap<SocketId, Arc<SocketShared>>>,
    /// Each group's members, with their shared part at hand: a broadcast
    /// pushes to them without a second lookup per member.
    groups: Mutex<HashMap<Box<str>, Members>>,
    /// Messages dropped because a socket's outbox was full (for metrics).
    dropped: AtomicU64,
    /// Told of every group whose membership here changed (a cluster engine).
    group_observer: OnceLock<GroupObserver>,
}

/// Called with a group's name after its membership on this node changed
/// (see [`LocalHub::observe_groups`]).
pub type GroupObserver = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for LocalHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHub")
            .field("node", &self.node)
            .field("sockets", &self.len())
            .field("observed", &self.group_observer.get().is_some())
            .finish_non_exhaustive()
    }
}

/// A group's members on this node.
type Members = HashMap<SocketId, Arc<SocketShared>>;

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

    /// Messages dropped so far because the socket's outbox was full (the
    /// slow-consumer policy applied).
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Calls `observer` with a group's name after each change of its
    /// membership on this node — a socket added or removed, or closed while
    /// a member —, with no hub lock held, so that a cluster engine can follow
    /// which groups have members here (read [`HubEngine::group_size`] in the
    /// observer: calls from several threads may arrive in any order, the
    /// size read last is the current one). One observer per hub; a second
    /// is refused (returned).
    pub fn observe_groups(&self, observer: GroupObserver) -> Result<(), GroupObserver> {
        self.group_observer.set(observer)
    }

    fn group_changed(&self, group: &str) {
        if let Some(observer) = self.group_observer.get() {
            observer(group);
        }
    }

    /// Counts a push that the slow-consumer policy dropped.
    fn counted(&self, outcome: Outcome) -> Outcome {
        if outcome == Outcome::Dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    pub(super) fn register(&self, info: SocketInfo, opened: Opened) -> Arc<SocketShared> {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let id = SocketId::new(self.node, sequence);
        let shared = Arc::new(SocketShared::new(id, info, opened));
        self.sockets
            .lock()
            .expect("hub lock")
            .insert(id, shared.clone());
        shared
    }

    /// Forget a closed socket and end its group memberships. Idempotent.
    pub(super) fn unregister(&self, id: SocketId) {
        let Some(shared) = self.sockets.lock().expect("hub lock").remove(&id) else {
            return;
        };
        // The task's waker refers to the task: let it go with the socket.
        shared.forget_waker();
        let mut membership = shared.membership.lock().expect("membership lock");
        membership.closed = true;
        let groups = std::mem::take(&mut membership.groups);
        {
            let mut all = self.groups.lock().expect("hub lock");
            for group in &groups {
                if let Some(members) = all.get_mut(group) {
                    members.remove(&id);
                    if members.is_empty() {
                        all.remove(group);
                    }
                }
            }
        }
        drop(membership);
        for group in &groups {
            self.group_changed(group);
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

    /// Every open socket of this process, by id: for operators (the admin
    /// API). The hub's lock is held only to copy the entries' handles out;
    /// each socket is then read under its own locks, so a large listing
    /// does not stall the hub.
    pub fn sockets(&self) -> Vec<SocketSnapshot> {
        let sockets: Vec<Arc<SocketShared>> = self
            .sockets
            .lock()
            .expect("hub lock")
            .values()
            .cloned()
            .collect();
        let mut snapshots: Vec<SocketSnapshot> =
            sockets.iter().map(|socket| socket.snapshot()).collect();
        snapshots.sort_unstable_by_key(|s| s.id);
        snapshots
    }

    /// Every group with members on this node and its number of members
    /// here, by name.
    pub fn groups(&self) -> Vec<(Box<str>, usize)> {
        let mut groups: Vec<(Box<str>, usize)> = self
            .groups
            .lock()
            .expect("hub lock")
            .iter()
            .map(|(name, members)| (name.clone(), members.len()))
            .collect();
        groups.sort_unstable();
        groups
    }

    pub(crate) fn socket(&self, id: SocketId) -> Option<Arc<SocketShared>> {
        self.sockets.lock().expect("hub lock").get(&id).cloned()
    }

    /// The number of groups with members.
    #[cfg(test)]
    pub(super) fn group_count(&self) -> usize {
        self.groups.lock().expect("hub lock").len()
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
            Some(socket) => {
                self.counted(socket.push_message(PreparedMessage::new(message), self.limit))
            }
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
            if self.counted(socket.push_message(prepared.clone(), self.limit)) == Outcome::Done {
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
            drop(membership);
            self.group_changed(group);
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
        {
            let mut groups = self.groups.lock().expect("hub lock");
            if let Some(members) = groups.get_mut(group) {
                members.remove(&id);
                if members.is_empty() {
                    groups.remove(group);
                }
            }
        }
        drop(membership);
        self.group_changed(group);
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
