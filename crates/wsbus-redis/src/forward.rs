//! [`RedisForward`]: long-polling without sticky sessions.
//!
//! A bus session lives on the node that answered its handshake, its owner,
//! whose id its client id carries (`"<node>_<random>"`). A request for it
//! that lands on another node is forwarded to the owner and answered from
//! there ([`wsbus::bus::LongPollForward`]; the bus's `long_poll` module docs
//! say what the bus does). This module carries it over Redis:
//!
//! ```text
//! requester                         Redis                          owner
//!   | request {id, user, token, body} -> wsbus:node:<owner> ->         |
//!   |           <- wsbus:node:<requester> <- accepted {id}            | runs it (a connect
//!   |           <- wsbus:node:<requester> <- answer {id, body}        |  may be held here)
//! ```
//!
//! The owner says it has the request as soon as it arrives, and answers
//! when the bus has (a held `/meta/connect`: when it is released). The
//! requester waits [`ACCEPT_TIMEOUT`] for the first and the request's
//! deadline (the hold timeout plus [`wsbus::bus::FORWARD_MARGIN`]) for the
//! second; a dead owner is found out within [`ACCEPT_TIMEOUT`], not after
//! a whole hold. Without an answer, or with the link down, the bus answers
//! `402::Unknown client` with `advice: {reconnect: "handshake"}`, and the
//! client handshakes again, on whatever node.
//!
//! The token rides along to the owner, which checks it: the session and
//! its grant are there. Redis is inside the cluster's trust boundary (it
//! holds the HTTP sessions too); payloads are never logged.
//!
//! Request ids are random (64 bits), so an answer meant for a previous
//! life of the requesting node, or for a request given up on, matches
//! nothing and is dropped; an answer is taken only from the node the
//! request went to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wsbus::NodeId;
use wsbus::bus::{Bus, ForwardedAnswer, ForwardedPoll, LongPollForward, WeakBus};

use crate::envelope::Envelope;
use crate::link::{Receiver, RedisLink, node_channel};

/// Envelope kinds of forwarded requests (48–50; the hub has 1–6, the bus
/// 16, sessions 32).
const KIND_REQUEST: u8 = 48;
const KIND_ACCEPTED: u8 = 49;
const KIND_ANSWER: u8 = 50;

/// How long the owner may take to say it has a request: two hops through
/// an idle Redis take about a millisecond; this allows a loaded one and a
/// loaded owner, and is short enough that a client whose owner died
/// handshakes again well before its own request times out.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Forwarded requests this node waits on at once, at most. Each waiting
/// long-polling client holds one (its connect); beyond this many, new ones
/// are answered at once as for an unknown client, rather than a flood of
/// made-up client ids growing the table without bound.
pub const FORWARD_MAX_PENDING: usize = 100_000;

/// A request, as sent to its owner.
#[derive(Serialize, Deserialize)]
struct Request {
    id: u64,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    token: Option<String>,
    body: String,
    deadline_ms: u64,
}

/// The owner's answer.
#[derive(Serialize, Deserialize)]
struct Answer {
    id: u64,
    body: String,
}

/// The owner has the request.
#[derive(Serialize, Deserialize)]
struct Accepted {
    id: u64,
}

/// What comes back for a request.
enum Reply {
    Accepted,
    Answer(String),
}

/// The [`LongPollForward`] over Redis. Install with
/// [`RedisForward::install`].
#[derive(Debug)]
pub struct RedisForward {
    shared: Arc<Shared>,
}

struct Shared {
    link: RedisLink,
    /// This node's bus, which serves requests forwarded here.
    bus: WeakBus,
    /// Requests sent, by id: their owner and where its replies go.
    pending: Mutex<HashMap<u64, (NodeId, mpsc::UnboundedSender<Reply>)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.link.node())
            .finish_non_exhaustive()
    }
}

impl RedisForward {
    /// Makes `bus` one of several nodes that any request may reach (see
    /// [`Bus::set_long_poll_forward`]): its client ids name this node, and
    /// requests for other nodes' clients go to them through `link`. Call it
    /// before the bus serves clients.
    pub fn install(bus: &Bus, link: RedisLink) {
        let shared = Arc::new(Shared {
            link: link.clone(),
            bus: bus.downgrade(),
            pending: Mutex::default(),
        });
        link.register(&[KIND_REQUEST, KIND_ACCEPTED, KIND_ANSWER], shared.clone());
        let forward = Arc::new(RedisForward { shared });
        if bus.set_long_poll_forward(link.node(), forward).is_err() {
            panic!("a bus forwards through one cluster");
        }
    }
}

impl LongPollForward for RedisForward {
    fn forward(&self, owner: NodeId, request: ForwardedPoll) -> ForwardedAnswer {
        Box::pin(self.shared.clone().forward(owner, request))
    }
}

impl Shared {
    async fn forward(self: Arc<Self>, owner: NodeId, request: ForwardedPoll) -> Option<String> {
        if !self.link.is_up() {
            // Published later, it would run late: a stale publish, a
            // connect nobody waits for. The client handshakes again.
            return None;
        }
        let id: u64 = rand::random();
        let (sender, mut replies) = mpsc::unbounded_channel();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.len() >= FORWARD_MAX_PENDING {
                drop(pending);
                tracing::warn!(target: "wsbus::cluster", max = FORWARD_MAX_PENDING, "too many forwarded bus requests waiting: answered as for an unknown client");
                return None;
            }
            pending.insert(id, (owner, sender));
        }
        let _pending = PendingGuard { shared: &self, id };
        let wire = Request {
            id,
            user: request.user,
            token: request.token,
            body: request.body,
            deadline_ms: u64::try_from(request.deadline.as_millis()).unwrap_or(u64::MAX),
        };
        let payload = serde_json::to_vec(&wire).expect("strings serialize");
        if !self
            .link
            .publish_to(&node_channel(owner), KIND_REQUEST, &payload)
        {
            return None;
        }
        let start = Instant::now();
        let mut by = start + ACCEPT_TIMEOUT.min(request.deadline);
        loop {
            match tokio::time::timeout_at(by, replies.recv()).await {
                Ok(Some(Reply::Accepted)) => by = start + request.deadline,
                Ok(Some(Reply::Answer(body))) => return Some(body),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// A request from another node for a client owned here: say it
    /// arrived, run it, send the answer back.
    fn serve(&self, from: NodeId, request: Request) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let reply_to = node_channel(from);
        let accepted = serde_json::to_vec(&Accepted { id: request.id }).expect("serializes");
        self.link.publish_to(&reply_to, KIND_ACCEPTED, &accepted);
        let link = self.link.clone();
        let id = request.id;
        let forwarded = ForwardedPoll {
            body: request.body,
            user: request.user,
            token: request.token,
            deadline: Duration::from_millis(request.deadline_ms),
        };
        tokio::spawn(async move {
            let body = bus.serve_forwarded(forwarded).await;
            let answer = serde_json::to_vec(&Answer { id, body }).expect("serializes");
            link.publish_to(&reply_to, KIND_ANSWER, &answer);
        });
    }

    /// A reply to one of this node's requests, from `from`.
    fn reply(&self, from: NodeId, id: u64, reply: Reply) {
        let pending = self.pending.lock().expect("pending lock");
        if let Some((owner, sender)) = pending.get(&id)
            && *owner == from
        {
            let _ = sender.send(reply);
        }
    }
}

/// Forgets a request once answered or given up on.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.id);
    }
}

impl Receiver for Shared {
    fn message(&self, channel: &str, envelope: Envelope) {
        let from = envelope.origin.node;
        let payload = &envelope.payload[..];
        let decoded = match envelope.kind {
            KIND_REQUEST => serde_json::from_slice(payload).map(|r| self.serve(from, r)),
            KIND_ACCEPTED => serde_json::from_slice(payload)
                .map(|a: Accepted| self.reply(from, a.id, Reply::Accepted)),
            _ => serde_json::from_slice(payload)
                .map(|a: Answer| self.reply(from, a.id, Reply::Answer(a.body))),
        };
        if let Err(error) = decoded {
            // The category only: serde's message may quote the payload.
            let error = format!("{:?}", error.classify());
            tracing::warn!(target: "wsbus::cluster", channel, kind = envelope.kind, error, "ignored a forwarded bus request or answer that is not ours");
        }
    }
}
