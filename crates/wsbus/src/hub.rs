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

#[derive(Debug, Default)]
struct HubInner {
    next_id: AtomicU64,
    sockets: Mutex<HashMap<SocketId, Arc<SocketShared>>>,
    groups: Mutex<HashMap<String, HashSet<SocketId>>>,
}

/// Handle to the sockets of this server. Cheap to clone; callable from
/// handlers, HTTP routes and background tasks alike.
#[derive(Clone, Debug, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(&self) -> (SocketId, Arc<SocketShared>) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = Arc::new(SocketShared::default());
        self.inner
            .sockets
            .lock()
            .expect("hub lock")
            .insert(id, shared.clone());
        (id, shared)
    }

    /// Forget a closed socket and end its group memberships.
    pub(crate) fn unregister(&self, id: SocketId) {
        let Some(shared) = self.inner.sockets.lock().expect("hub lock").remove(&id) else {
            return;
        };
        let groups = std::mem::take(&mut *shared.groups.lock().expect("groups lock"));
        let mut all = self.inner.groups.lock().expect("hub lock");
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
        self.inner
            .sockets
            .lock()
            .expect("hub lock")
            .get(&id)
            .cloned()
    }

    /// Queue a message for one socket. Returns false if no such socket is open.
    pub fn send(&self, id: SocketId, message: Message) -> bool {
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
    pub fn send_to_group(&self, group: &str, message: Message) -> usize {
        let members: Vec<Arc<SocketShared>> = {
            let groups = self.inner.groups.lock().expect("hub lock");
            let Some(ids) = groups.get(group) else {
                return 0;
            };
            let sockets = self.inner.sockets.lock().expect("hub lock");
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
    pub fn add_to_group(&self, group: &str, id: SocketId) -> bool {
        let Some(socket) = self.socket(id) else {
            return false;
        };
        let added = self
            .inner
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
    pub fn remove_from_group(&self, group: &str, id: SocketId) -> bool {
        let removed = {
            let mut groups = self.inner.groups.lock().expect("hub lock");
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
    pub fn group_size(&self, group: &str) -> usize {
        self.inner
            .groups
            .lock()
            .expect("hub lock")
            .get(group)
            .map_or(0, HashSet::len)
    }

    /// Close a socket with a code and reason. Returns false if no such socket is open.
    pub fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> bool {
        match self.socket(id) {
            Some(socket) => {
                socket.push(Outbound::Close(code, reason.to_owned()));
                true
            }
            None => false,
        }
    }

    /// The number of open sockets.
    pub fn len(&self) -> usize {
        self.inner.sockets.lock().expect("hub lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
