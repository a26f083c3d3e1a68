//! The hub: send to a socket, to a group, or close a socket, from anywhere.
//!
//! Every socket registers a [`SocketShared`] here: an outbox and a wake-up.
//! A send from outside the socket's task pushes into the outbox and wakes the
//! task, which moves the message into its protocol connection. A message sent
//! to a group is encoded once ([`PreparedMessage`]) and the same bytes are
//! queued on every member.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use wsbus_proto::{CloseCode, Message, PreparedMessage};

/// A socket's id, unique within this process.
pub type SocketId = u64;

/// What the hub hands a socket's task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(PreparedMessage),
    Close(CloseCode, String),
}

/// The part of a socket that other tasks reach.
#[derive(Debug, Default)]
pub(crate) struct SocketShared {
    outbox: Mutex<VecDeque<Outbound>>,
    pub(crate) wake: Notify,
    groups: Mutex<Vec<String>>,
}

impl SocketShared {
    fn push(&self, item: Outbound) {
        self.outbox.lock().expect("outbox lock").push_back(item);
        self.wake.notify_one();
    }

    /// Take everything queued for the socket.
    pub(crate) fn drain(&self) -> VecDeque<Outbound> {
        std::mem::take(&mut *self.outbox.lock().expect("outbox lock"))
    }
}

/// What a hub does with sockets and groups. [`LocalHub`] implements it for
/// one process; a cluster engine (Redis) implements it by wrapping a
/// `LocalHub` and forwarding what concerns other nodes, so applications,
/// which only ever see [`Hub`], do not change.
pub trait HubEngine: Send + Sync + std::fmt::Debug + 'static {
    /// Queue a message for one socket. Returns false if no such socket is open.
    fn send(&self, id: SocketId, message: Message) -> bool;
    /// Queue a message for every member of `group`, encoded once. Returns the
    /// number of sockets it was queued for (on this node, for a local engine).
    fn send_to_group(&self, group: &str, message: Message) -> usize;
    /// Add a socket to a group. Returns false if no such socket is open.
    fn add_to_group(&self, group: &str, id: SocketId) -> bool;
    /// Remove a socket from a group. Returns whether it was a member.
    fn remove_from_group(&self, group: &str, id: SocketId) -> bool;
    /// The number of sockets in a group.
    fn group_size(&self, group: &str) -> usize;
    /// Close a socket with a code and reason. Returns false if no such socket is open.
    fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> bool;
}

/// The sockets and groups of this process.
#[derive(Debug, Default)]
pub struct LocalHub {
    next_id: AtomicU64,
    sockets: Mutex<HashMap<SocketId, Arc<SocketShared>>>,
    groups: Mutex<HashMap<String, HashSet<SocketId>>>,
}

/// Handle to the sockets of this server: `send`, `send_to_group`, groups and
/// `close`. Cheap to clone; callable from handlers, HTTP routes and background
/// tasks alike. Calls go to the hub's [`HubEngine`] (this process's
/// [`LocalHub`] unless a cluster engine is installed).
#[derive(Clone, Debug)]
pub struct Hub {
    local: Arc<LocalHub>,
    engine: Arc<dyn HubEngine>,
}

impl Default for Hub {
    fn default() -> Self {
        let local = Arc::new(LocalHub::default());
        Hub {
            engine: local.clone(),
            local,
        }
    }
}

impl Hub {
    /// A hub for this process alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub whose calls go to `engine`, which must deliver to this
    /// process's sockets through `local`.
    pub fn with_engine(local: Arc<LocalHub>, engine: Arc<dyn HubEngine>) -> Self {
        Hub { local, engine }
    }

    /// This process's sockets.
    pub fn local(&self) -> &Arc<LocalHub> {
        &self.local
    }

    pub(crate) fn register(&self) -> (SocketId, Arc<SocketShared>) {
        self.local.register()
    }

    pub(crate) fn unregister(&self, id: SocketId) {
        self.local.unregister(id);
    }

    pub fn send(&self, id: SocketId, message: Message) -> bool {
        self.engine.send(id, message)
    }

    pub fn send_to_group(&self, group: &str, message: Message) -> usize {
        self.engine.send_to_group(group, message)
    }

    pub fn add_to_group(&self, group: &str, id: SocketId) -> bool {
        self.engine.add_to_group(group, id)
    }

    pub fn remove_from_group(&self, group: &str, id: SocketId) -> bool {
        self.engine.remove_from_group(group, id)
    }

    pub fn group_size(&self, group: &str) -> usize {
        self.engine.group_size(group)
    }

    pub fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> bool {
        self.engine.close(id, code, reason)
    }

    /// The number of open sockets on this node.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LocalHub {
    fn register(&self) -> (SocketId, Arc<SocketShared>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = Arc::new(SocketShared::default());
        self.sockets
            .lock()
            .expect("hub lock")
            .insert(id, shared.clone());
        (id, shared)
    }

    /// Forget a closed socket and end its group memberships.
    fn unregister(&self, id: SocketId) {
        let Some(shared) = self.sockets.lock().expect("hub lock").remove(&id) else {
            return;
        };
        let groups = std::mem::take(&mut *shared.groups.lock().expect("groups lock"));
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

    fn socket(&self, id: SocketId) -> Option<Arc<SocketShared>> {
        self.sockets.lock().expect("hub lock").get(&id).cloned()
    }

    /// The number of open sockets.
    pub fn len(&self) -> usize {
        self.sockets.lock().expect("hub lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HubEngine for LocalHub {
    /// Queue a message for one socket. Returns false if no such socket is open.
    fn send(&self, id: SocketId, message: Message) -> bool {
        match self.socket(id) {
            Some(socket) => {
                socket.push(Outbound::Message(PreparedMessage::new(message)));
                true
            }
            None => false,
        }
    }

    /// Queue a message for every member of `group`, encoded once. Returns the
    /// number of sockets it was queued for.
    fn send_to_group(&self, group: &str, message: Message) -> usize {
        let members: Vec<Arc<SocketShared>> = {
            let groups = self.groups.lock().expect("hub lock");
            let Some(ids) = groups.get(group) else {
                return 0;
            };
            let sockets = self.sockets.lock().expect("hub lock");
            ids.iter()
                .filter_map(|id| sockets.get(id).cloned())
                .collect()
        };
        let prepared = PreparedMessage::new(message);
        for socket in &members {
            socket.push(Outbound::Message(prepared.clone()));
        }
        members.len()
    }

    /// Add a socket to a group. Returns false if no such socket is open.
    fn add_to_group(&self, group: &str, id: SocketId) -> bool {
        let Some(socket) = self.socket(id) else {
            return false;
        };
        let added = self
            .groups
            .lock()
            .expect("hub lock")
            .entry(group.to_owned())
            .or_default()
            .insert(id);
        if added {
            socket
                .groups
                .lock()
                .expect("groups lock")
                .push(group.to_owned());
        }
        true
    }

    /// Remove a socket from a group. Returns whether it was a member.
    fn remove_from_group(&self, group: &str, id: SocketId) -> bool {
        let removed = {
            let mut groups = self.groups.lock().expect("hub lock");
            let removed = groups.get_mut(group).is_some_and(|m| m.remove(&id));
            if groups.get(group).is_some_and(HashSet::is_empty) {
                groups.remove(group);
            }
            removed
        };
        if removed && let Some(socket) = self.socket(id) {
            socket
                .groups
                .lock()
                .expect("groups lock")
                .retain(|g| g != group);
        }
        removed
    }

    /// The number of sockets in a group.
    fn group_size(&self, group: &str) -> usize {
        self.groups
            .lock()
            .expect("hub lock")
            .get(group)
            .map_or(0, HashSet::len)
    }

    /// Close a socket with a code and reason. Returns false if no such socket is open.
    fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> bool {
        match self.socket(id) {
            Some(socket) => {
                socket.push(Outbound::Close(code, reason.to_owned()));
                true
            }
            None => false,
        }
    }
}
