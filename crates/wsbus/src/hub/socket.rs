//! A socket as the hub reaches it: its bounded outbox, its task's waker and
//! its group memberships.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use wsbus_proto::{CloseCode, PreparedMessage};

use super::{Opened, Outcome, SocketFacts, SocketId, SocketSnapshot};
use crate::app::SocketInfo;
use crate::driver::SlowConsumerPolicy;

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
/// its task while it waits, its groups, and its handshake's facts (for the
/// operators' connection list).
///
/// The socket's [`SocketInfo`] (id, path, query, user, claims) lives here
/// too, not in its task's state: the task's future is what bounds an idle
/// socket's memory (tokio rounds its cell up to a multiple of 128 bytes),
/// and with the info here the admin API's facts need no second copy of the
/// path and the login (ARCHITECTURE.md, "Memory per connection").
#[derive(Debug)]
pub(crate) struct SocketShared {
    outbox: Mutex<Outbox>,
    pub(super) membership: Mutex<Membership>,
    /// Frame bytes read and written so far, added by the socket's task once
    /// per wake (with the metrics' shards), read by the admin API.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    info: SocketInfo,
    opened: Opened,
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
pub(super) struct Membership {
    pub(super) closed: bool,
    pub(super) groups: Vec<Box<str>>,
}

impl SocketShared {
    /// `info.id` is set to `id`.
    pub(super) fn new(id: SocketId, mut info: SocketInfo, opened: Opened) -> Self {
        info.id = id;
        SocketShared {
            outbox: Mutex::default(),
            membership: Mutex::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            info,
            opened,
        }
    }

    /// The socket as its handler sees it.
    pub(crate) fn info(&self) -> &SocketInfo {
        &self.info
    }

    /// The client's address: the peer's, or the one a trusted proxy
    /// forwarded.
    pub(crate) fn client(&self) -> std::net::IpAddr {
        self.opened.client
    }

    /// The handshake's facts (client address, user, path, …), copied out
    /// for operators (the admin API, a running capture).
    pub(crate) fn facts(&self) -> SocketFacts {
        self.opened.facts(&self.info)
    }

    /// Counts frame bytes the socket read and wrote. Only the socket's own
    /// task calls this: the counters have one writer, so a plain load and
    /// store does (no locked read-modify-write on every wake).
    pub(crate) fn add_bytes(&self, read: usize, written: usize) {
        for (counter, n) in [(&self.bytes_in, read), (&self.bytes_out, written)] {
            if n > 0 {
                let total = counter.load(Ordering::Relaxed) + n as u64;
                counter.store(total, Ordering::Relaxed);
            }
        }
    }

    /// The socket as an operator sees it, now. Takes the membership and
    /// outbox locks one after the other, never together.
    pub(super) fn snapshot(&self) -> SocketSnapshot {
        let groups = self
            .membership
            .lock()
            .expect("membership lock")
            .groups
            .clone();
        let outbox_bytes = self.outbox.lock().expect("outbox lock").bytes;
        SocketSnapshot {
            id: self.id(),
            facts: self.facts(),
            groups,
            outbox_bytes,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// The socket's id.
    pub(crate) fn id(&self) -> SocketId {
        self.info.id
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
    pub(super) fn push_message(&self, prepared: PreparedMessage, limit: OutboxLimit) -> Outcome {
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

    /// Let go of the task's waker (it refers to the task) when the socket
    /// leaves the hub.
    pub(super) fn forget_waker(&self) {
        self.outbox.lock().expect("outbox lock").waker = None;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wsbus_proto::Message;

    use super::*;
    use crate::hub::{Hub, LocalHub, NodeId};

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
}
