//! Where the engine's wake-ups go: a WebSocket client's deliveries to the
//! socket carrying it, a long-polling client's wake-up to the requests
//! waiting on its held connects.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;
use wsbus_bayeux::{ClientId, HoldId, IdMap};

use crate::hub::SocketId;

/// The routes of the bus's clients. Keyed by the engine's ids, with its
/// fast hash ([`IdHash`](wsbus_bayeux::IdHash)): every wake-up looks here.
///
/// # Invariant
///
/// Kept by every method (the fields are private to this module):
///
/// * `sockets` and `carried` are one relation seen from both sides:
///   `carried[s]` lists `c` exactly when `sockets[c] == s`, and no list in
///   `carried` is empty. A client is carried by at most one socket.
/// * A client has a connect held on a socket (`socket_holds`) only while a
///   socket carries it.
/// * No list in `polls` is empty, and a hold appears in at most one.
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// WebSocket clients: the socket carrying each.
    sockets: IdMap<ClientId, SocketId>,
    /// The same, the other way: the clients each socket carries (usually
    /// one), so that a closing socket finds its clients without a scan of
    /// every client on the bus.
    carried: HashMap<SocketId, Vec<ClientId>>,
    /// WebSocket clients' held connects.
    socket_holds: IdMap<ClientId, HoldId>,
    /// Long-polling clients' held connects, each with the wake-up of the
    /// request waiting on it.
    polls: IdMap<ClientId, Vec<(HoldId, Arc<Notify>)>>,
}

impl Routes {
    /// `client` is carried by `socket` from now on (a no-op when it already
    /// was: the common case, once per message). A connect it held on
    /// another socket stays recorded: the engine answers it when the new
    /// socket's connect supersedes it.
    pub(super) fn attach(&mut self, client: &ClientId, socket: SocketId) {
        match self.sockets.insert(client.clone(), socket) {
            Some(previous) if previous == socket => return,
            Some(previous) => self.unlink(client, previous),
            None => {}
        }
        self.carried.entry(socket).or_default().push(client.clone());
    }

    /// `client`'s connect `hold` is held on `socket`, which carries it from
    /// now on.
    pub(super) fn attach_held(&mut self, client: &ClientId, socket: SocketId, hold: HoldId) {
        self.attach(client, socket);
        self.socket_holds.insert(client.clone(), hold);
    }

    /// The socket carrying `client`, if any.
    pub(super) fn socket_of(&self, client: &ClientId) -> Option<SocketId> {
        self.sockets.get(client).copied()
    }

    /// The connect `client` holds on its socket, if any.
    pub(super) fn socket_hold(&self, client: &ClientId) -> Option<HoldId> {
        self.socket_holds.get(client).copied()
    }

    /// `client`'s connect held on its socket has been answered.
    pub(super) fn release_socket_hold(&mut self, client: &ClientId) {
        self.socket_holds.remove(client);
    }

    /// Every client `socket` carried, detached; returns their held
    /// connects, for the engine to cancel.
    pub(super) fn detach_socket(&mut self, socket: SocketId) -> Vec<HoldId> {
        let clients = self.carried.remove(&socket).unwrap_or_default();
        clients
            .iter()
            .filter_map(|client| {
                self.sockets.remove(client);
                self.socket_holds.remove(client)
            })
            .collect()
    }

    /// `client` has ended: it leaves its socket, and the requests
    /// waiting on its held connects are woken (the engine has answered
    /// them).
    pub(super) fn session_closed(&mut self, client: &ClientId) {
        if let Some(socket) = self.sockets.remove(client) {
            self.unlink(client, socket);
        }
        self.socket_holds.remove(client);
        for (_, waiter) in self.polls.remove(client).unwrap_or_default() {
            waiter.notify_one();
        }
    }

    /// A long-polling request waits on `client`'s connect `hold`; the
    /// returned `Notify` wakes it when the engine wakes `client`.
    pub(super) fn wait_poll(&mut self, client: &ClientId, hold: HoldId) -> Arc<Notify> {
        let waiter = Arc::new(Notify::new());
        self.polls
            .entry(client.clone())
            .or_default()
            .push((hold, waiter.clone()));
        waiter
    }

    /// The request waiting on `client`'s connect `hold` is done with it
    /// (answered, or gone). A no-op if the client has ended meanwhile.
    pub(super) fn end_poll(&mut self, client: &ClientId, hold: HoldId) {
        if let Some(polls) = self.polls.get_mut(client) {
            polls.retain(|(h, _)| *h != hold);
            if polls.is_empty() {
                self.polls.remove(client);
            }
        }
    }

    /// Wakes the requests waiting on `client`'s held connects, so that they
    /// ask the engine whether their response is ready.
    pub(super) fn wake_polls(&self, client: &ClientId) {
        for (_, waiter) in self.polls.get(client).into_iter().flatten() {
            waiter.notify_one();
        }
    }

    /// Removes `client` from `socket`'s list.
    fn unlink(&mut self, client: &ClientId, socket: SocketId) {
        if let Some(clients) = self.carried.get_mut(&socket) {
            clients.retain(|c| c != client);
            if clients.is_empty() {
                self.carried.remove(&socket);
            }
        }
    }

    /// Panics unless the invariant holds.
    #[cfg(test)]
    fn assert_invariant(&self) {
        for (client, socket) in self.sockets.iter() {
            assert!(
                self.carried[socket].contains(client),
                "{client:?} not in carried"
            );
        }
        for (socket, clients) in &self.carried {
            assert!(!clients.is_empty());
            for client in clients {
                assert_eq!(self.sockets.get(client), Some(socket));
            }
        }
        for client in self.socket_holds.keys() {
            assert!(self.sockets.contains_key(client), "hold without a socket");
        }
        let mut holds = std::collections::HashSet::new();
        for polls in self.polls.values() {
            assert!(!polls.is_empty());
            for (hold, _) in polls {
                assert!(holds.insert(*hold), "hold {hold:?} listed twice");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use wsbus_bayeux::{BusConfig, Engine, RequestContext};

    use super::*;
    use crate::hub::Hub;

    /// Clients with connects held by a real engine: hold ids are the
    /// engine's to make.
    struct Sessions {
        engine: Engine,
    }

    impl Sessions {
        fn new() -> Self {
            let mut next = 0u8;
            let engine = Engine::new(BusConfig::default(), move || {
                next = next.wrapping_add(1);
                [next; 16]
            });
            Sessions { engine }
        }

        /// A new client and a connect it holds.
        fn held(&mut self) -> (ClientId, HoldId) {
            let context = RequestContext::long_polling();
            let handshake = br#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
            let outcome = self.engine.handle_body(Instant::now(), &context, handshake);
            let client = outcome.session.expect("handshake");
            let connect = format!(
                r#"[{{"channel":"/meta/connect","clientId":"{}","connectionType":"long-polling"}}]"#,
                client.as_str()
            );
            // The first connect is answered at once; the second is held.
            self.engine
                .handle_body(Instant::now(), &context, connect.as_bytes());
            let outcome = self
                .engine
                .handle_body(Instant::now(), &context, connect.as_bytes());
            (client, outcome.held.expect("held connect").hold_id)
        }
    }

    #[test]
    fn every_change_keeps_both_sides_of_the_socket_relation() {
        let hub = Hub::new();
        let (a, b) = (hub.register().id(), hub.register().id());
        let mut sessions = Sessions::new();
        let (one, _) = sessions.held();
        let (two, two_hold) = sessions.held();
        let (_, one_hold) = sessions.held();
        let mut routes = Routes::default();
        routes.attach(&one, a);
        routes.attach(&one, a);
        routes.attach_held(&two, a, two_hold);
        routes.assert_invariant();
        // Moving to another socket leaves the first one's list.
        routes.attach(&one, b);
        routes.assert_invariant();
        assert_eq!(routes.socket_of(&one), Some(b));
        assert_eq!(routes.detach_socket(a), vec![two_hold]);
        routes.assert_invariant();
        assert_eq!(routes.socket_of(&two), None);
        assert_eq!(routes.socket_hold(&two), None);
        routes.attach_held(&one, b, one_hold);
        routes.session_closed(&one);
        routes.assert_invariant();
        assert!(routes.sockets.is_empty() && routes.carried.is_empty());
        assert!(routes.socket_holds.is_empty());
    }

    #[test]
    fn polls_are_woken_and_forgotten_without_leaving_empty_lists() {
        let mut sessions = Sessions::new();
        let (client, first_hold) = sessions.held();
        let (_, second_hold) = sessions.held();
        let mut routes = Routes::default();
        let first = routes.wait_poll(&client, first_hold);
        let second = routes.wait_poll(&client, second_hold);
        routes.assert_invariant();
        routes.wake_polls(&client);
        // A stored permit: the wake-up is not lost if the request was not
        // waiting yet.
        assert_ready(first.notified());
        routes.end_poll(&client, first_hold);
        routes.end_poll(&client, first_hold);
        routes.assert_invariant();
        routes.session_closed(&client);
        assert_ready(second.notified());
        routes.end_poll(&client, second_hold);
        routes.assert_invariant();
        assert!(routes.polls.is_empty());
    }

    /// Panics unless `future` is ready at its first poll.
    fn assert_ready(future: impl std::future::Future<Output = ()>) {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }
}
