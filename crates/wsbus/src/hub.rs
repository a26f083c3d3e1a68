//! The hub: send to a socket, to a group, or close a socket, from anywhere.
//!
//! Every socket registers a [`SocketShared`] here: an outbox and a wake-up.
//! A send from outside the socket's task pushes into the outbox and wakes the
//! task, which moves the message into its protocol connection. A message sent
//! to a group is encoded once ([`PreparedMessage`]) and the same bytes are
//! queued on every member.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wsbus_proto::{CloseCode, Message, PreparedMessage};

/// A socket's id, unique within this process.
pub type SocketId = u64;

/// What the hub hands a socket's task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(PreparedMessage),
    Close(CloseCode, String),
}

/// The part of a socket that other tasks reach: its outbox, the waker of
/// its task while it waits, and its groups.
#[derive(Debug, Default)]
pub(crate) struct SocketShared {
    outbox: Mutex<Outbox>,
    groups: Mutex<Vec<String>>,
}

/// A waker rather than a `Notify`: the socket's task registers it while it
/// polls, so nothing else per socket sits in the task's state.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Outbound>,
    waker: Option<Waker>,
}

impl SocketShared {
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

    /// Queue a close for the socket.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.push(Outbound::Close(code, reason.to_owned()));
    }

    /// Take everything queued for the socket.
    pub(crate) fn drain(&self) -> VecDeque<Outbound> {
        std::mem::take(&mut self.outbox.lock().expect("outbox lock").queue)
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
    /// Each group's members, with their shared part at hand: a broadcast
    /// pushes to them without a second lookup per member.
    groups: Mutex<HashMap<String, HashMap<SocketId, Arc<SocketShared>>>>,
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
        // The task's waker refers to the task: let it go with the socket.
        shared.outbox.lock().expect("outbox lock").waker = None;
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
        let prepared = PreparedMessage::new(message);
        // Pushing under the groups lock keeps a broadcast free of per-member
        // allocation; a push only appends to an outbox and takes a waker.
        let groups = self.groups.lock().expect("hub lock");
        let Some(members) = groups.get(group) else {
            return 0;
        };
        for socket in members.values() {
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
            .insert(id, socket.clone())
            .is_none();
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
            let removed = groups
                .get_mut(group)
                .is_some_and(|m| m.remove(&id).is_some());
            if groups.get(group).is_some_and(HashMap::is_empty) {
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
            .map_or(0, HashMap::len)
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
