//! WebSocket deliveries on their way to the hub, and messages and interest
//! changes on their way to the cluster: produced under the engine lock,
//! handed over after it is released, in the order produced.
//!
//! # Why this shape
//!
//! The hub must not be called under the bus's locks: a cluster engine behind
//! it may take locks of its own, or call back into the bus (which would then
//! wait for a lock its own caller holds). So the engine's deliveries are
//! encoded under the engine lock, in engine order, and queued here; every
//! bus call then [`flush`](SendQueue::flush)es once it holds no bus lock.
//!
//! Order is what a queue alone does not give: if each call sent its own
//! batches after unlocking, two callers could race there, and a socket could
//! get a later batch before an earlier one (one publisher's messages out of
//! order). Hence one queue for the bus, filled under the engine lock (so in
//! engine order), and one flusher at a time, which sends in queue order
//! everything queued, including what other calls queue while it sends. A call
//! that finds a flush under way leaves its batches to that flusher. The hub's
//! own promise (calls by one thread take effect in that order per socket) then
//! carries the order to the socket.
//!
//! The cluster's calls ([`BusCluster::publish`] and
//! [`BusCluster::interest`]) ride in the same queue, for the same reasons:
//! a cluster may call back into the bus (a loopback delivers to another
//! node's bus at once), and one publisher's messages must reach the other
//! nodes in publish order, each pattern's gains and losses in the order
//! they happened.
//!
//! Simpler designs fall short: sending under the `routes` lock alone still
//! holds a bus lock across the hub call (a call back into the bus would
//! deadlock against a caller holding the engine lock and waiting for
//! `routes`), and numbered tickets that each caller waits for its turn to
//! send would block threads and deadlock on such a call back.

use std::sync::Mutex;

use wsbus_bayeux::{ClusterPublish, HistoryRequest, InterestChange};
use wsbus_proto::Message;

use super::BusCluster;
use crate::hub::{Hub, SocketId};

/// What waits to be handed over.
#[derive(Debug)]
enum Send {
    /// A batch (a JSON array) for a WebSocket socket.
    Socket(SocketId, String),
    /// A message for the other nodes. Boxed: a queue entry stays the size
    /// of a socket's, so a single node pays nothing for the cluster's case.
    Publish(Box<ClusterPublish>),
    /// A change in the patterns this node needs to hear.
    Interest(Box<InterestChange>),
    /// A replay waiting for the shared history.
    History(Box<HistoryRequest>),
}

// What the boxing of the cluster's entries buys, kept.
const _: () = assert!(size_of::<Send>() == size_of::<(SocketId, String)>());

/// Batches waiting to be sent to WebSocket sockets, and calls waiting for
/// the cluster, oldest first.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queued: Vec<Send>,
    /// Whether a thread is sending: others only queue.
    flushing: bool,
    /// The buffer the flusher last emptied, kept for its capacity: the next
    /// round swaps it with `queued` instead of allocating.
    spare: Vec<Send>,
}

impl SendQueue {
    /// Queues `json` for `socket`, after everything queued before it.
    /// Called under the engine lock.
    pub(super) fn push(&self, socket: SocketId, json: String) {
        self.lock().queued.push(Send::Socket(socket, json));
    }

    /// Queues `message` for the cluster. Called under the engine lock.
    pub(super) fn push_publish(&self, message: ClusterPublish) {
        self.lock().queued.push(Send::Publish(Box::new(message)));
    }

    /// Queues `change` for the cluster. Called under the engine lock.
    pub(super) fn push_interest(&self, change: InterestChange) {
        self.lock().queued.push(Send::Interest(Box::new(change)));
    }

    /// Queues `request` for the cluster. Called under the engine lock.
    pub(super) fn push_history(&self, request: HistoryRequest) {
        self.lock().queued.push(Send::History(Box::new(request)));
    }

    /// Hands everything queued to `hub` and `cluster`, oldest first, unless
    /// another thread is doing so (it then sends these too, before it
    /// stops). Call with no bus lock held. Cluster entries are only queued
    /// once a cluster is installed; without one they would be dropped.
    pub(super) fn flush(&self, hub: &Hub, cluster: Option<&dyn BusCluster>) {
        let mut state = self.lock();
        if state.flushing {
            return;
        }
        state.flushing = true;
        let unwinding = UnwindGuard(self);
        loop {
            if state.queued.is_empty() {
                // Cleared under the same lock as the check: a batch queued
                // after it finds no flusher, and flushes itself.
                state.flushing = false;
                std::mem::forget(unwinding);
                return;
            }
            let spare = std::mem::take(&mut state.spare);
            let mut round = std::mem::replace(&mut state.queued, spare);
            drop(state);
            for send in round.drain(..) {
                match (send, cluster) {
                    // A socket that closed meanwhile (`NotFound`) misses the
                    // batch, as it would any message sent after its close.
                    (Send::Socket(socket, json), _) => {
                        hub.send(socket, Message::text(json));
                    }
                    (Send::Publish(message), Some(cluster)) => cluster.publish(*message),
                    (Send::Interest(change), Some(cluster)) => cluster.interest(*change),
                    (Send::History(request), Some(cluster)) => cluster.fetch_history(*request),
                    (Send::Publish(_) | Send::Interest(_) | Send::History(_), None) => {}
                }
            }
            state = self.lock();
            state.spare = round;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("send queue lock")
    }
}

/// Ends a flush that unwinds (a hub engine panicked): the next call flushes
/// what is queued rather than finding the queue flushing forever.
struct UnwindGuard<'a>(&'a SendQueue);

impl Drop for UnwindGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.flushing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Outbound, Outcome};

    #[test]
    fn batches_reach_the_hub_in_queue_order_and_buffers_are_reused() {
        let hub = Hub::new();
        let socket = hub.register();
        let queue = SendQueue::default();
        for n in 0..3 {
            queue.push(socket.id(), n.to_string());
        }
        queue.flush(&hub, None);
        let sent: Vec<Vec<u8>> = socket
            .drain()
            .into_iter()
            .map(|item| match item {
                Outbound::Message(prepared) => prepared.message().payload().to_vec(),
                Outbound::Close(..) | Outbound::Overflowed => panic!("a close"),
            })
            .collect();
        assert_eq!(sent, [b"0", b"1", b"2"]);
        let state = queue.lock();
        assert!(!state.flushing && state.queued.is_empty());
        assert!(state.spare.capacity() >= 3);
        drop(state);
        // A closed socket misses its batch; the queue carries on.
        hub.unregister(socket.id());
        queue.push(socket.id(), "late".into());
        queue.flush(&hub, None);
        assert_eq!(hub.send(socket.id(), Message::text("x")), Outcome::NotFound);
        assert!(queue.lock().queued.is_empty());
    }
}
