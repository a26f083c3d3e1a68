//! The `long-polling` transport: one HTTP request body in, one response body
//! out; a held `/meta/connect` keeps the request open.
//!
//! # Without sticky sessions
//!
//! In a cluster a client's requests may reach any node (a load balancer
//! that round-robins every request). A client's session lives on one node,
//! its *owner*: the node that answered its handshake. Once the bus has a
//! [`LongPollForward`] ([`Bus::set_long_poll_forward`]), its client ids name
//! their owner (`"<node>_<128 random bits>"`, see
//! [`ClientId::from_random_on`]), and a batch whose `clientId` names another
//! node is not run here: it goes, whole, with the request's user and token,
//! to the owner ([`LongPollForward::forward`]), which runs it as if it had
//! arrived there ([`Bus::serve_forwarded`]: a held `/meta/connect` is held
//! at the owner) and sends back the response body, which this node writes.
//! So a client's messages are queued at its owner only, and keep their
//! order whichever node serves each poll. A handshake (no `clientId`) is
//! served where it lands; that node becomes the owner.
//!
//! The token is checked by the owner, where the session is (the request
//! carries it to the owner, and it is never logged). The same goes for
//! WebSocket batches of a client owned elsewhere (Faye handshakes over HTTP,
//! then opens its WebSocket on whatever node the balancer picks): the
//! socket's node forwards them the same way and sends the answers on the
//! socket.
//!
//! If the owner does not answer within the hold's timeout plus
//! [`FORWARD_MARGIN`] (it died, or the cluster's transport is down), the
//! request is answered as for a client the server does not know: each
//! message gets `402::Unknown client` with `advice: {reconnect:
//! "handshake"}`. CometD and Faye clients then handshake again (on whatever
//! node) and subscribe again; what was queued for the old session is lost
//! with its node.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wsbus_bayeux::message::error_reply;
use wsbus_bayeux::{
    Batch, BayeuxError, ClientId, HoldId, Outbound, RequestContext, encode_batch, parse_batch,
};

use super::credentials::{credential, ext_token};
use super::{Bus, now};
use crate::hub::NodeId;

/// The channel whose requests may wait for the cluster (`cluster_settled`).
const META_SUBSCRIBE: &[u8] = b"/meta/subscribe";

/// What a forwarded request may take beyond the bus's hold timeout
/// (`BusConfig::timeout`) before its requester gives up on the owner: the
/// two hops through the cluster and a loaded owner's scheduling, with room
/// to spare; still below the ten seconds CometD's client adds to the hold
/// timeout (`maxNetworkDelay`) before it gives up on a request itself.
pub const FORWARD_MARGIN: Duration = Duration::from_secs(5);

/// A bus request for a client owned by another node, as sent to that node.
#[derive(Clone, PartialEq, Eq)]
pub struct ForwardedPoll {
    /// The batch as received (JSON).
    pub body: String,
    /// The login the receiving node's transport authenticated (its HTTP
    /// session, or the WebSocket's user), if any.
    pub user: Option<String>,
    /// The request's own access token (`Authorization` or `access_token`),
    /// if any; checked by the owner. A secret: never logged.
    pub token: Option<String>,
    /// How long the requester waits for the answer, at most: the hold
    /// timeout plus [`FORWARD_MARGIN`].
    pub deadline: Duration,
}

impl std::fmt::Debug for ForwardedPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the body nor the token: they may carry secrets.
        f.debug_struct("ForwardedPoll")
            .field("bytes", &self.body.len())
            .field("user", &self.user)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The answer to a [`ForwardedPoll`], once it comes: the response body, or
/// `None` when the owner did not answer in time (or cannot be reached).
pub type ForwardedAnswer = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// What carries a bus request to the node that owns its client, and its
/// answer back (Redis, in `wsbus-redis`). See the module docs of
/// `long_poll` ("Without sticky sessions") for what the bus does with it.
pub trait LongPollForward: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `request` to node `owner`, which runs it with
    /// [`Bus::serve_forwarded`]; resolves to its answer, or to `None` if
    /// none came within `request.deadline`. Dropping the future gives up on
    /// the answer (the owner still runs the request).
    fn forward(&self, owner: NodeId, request: ForwardedPoll) -> ForwardedAnswer;
}

impl Bus {
    /// Handles one long-polling request body (a Bayeux batch: a JSON array
    /// of messages, or one message) and resolves to the response body (a
    /// JSON array; `[]` when there is nothing to answer). `user` is the
    /// login the transport authenticated (its HTTP session), recorded on the
    /// clients this batch handshakes.
    ///
    /// The batch takes effect at once, when the future is first polled. If
    /// it holds a `/meta/connect`, the future stays pending until the engine
    /// answers that connect (something to deliver, its deadline
    /// (`BusConfig::timeout`), or a newer connect superseding it); the
    /// response then carries the replies to the batch's other messages and
    /// the connect's reply with the deliveries.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while its connect is held (the HTTP client went
    /// away) cancels the connect: its response and the replies to the rest of
    /// the batch are dropped, while the batch's effects stay (subscriptions
    /// made, messages published). Deliveries not yet taken into a response
    /// stay queued for the client, which expires only if the client does not
    /// connect again within `maxInterval`. A response the engine had already
    /// made but this future not yet collected (the connect was superseded by
    /// a newer one, or the client ended) is dropped with it; under the `ack`
    /// extension its deliveries stay queued until acknowledged. A future
    /// dropped before its first poll does nothing.
    ///
    /// `token` is the request's own access token (`Authorization` or
    /// `access_token`), if any; a handshake's or connect's
    /// `ext.access_token` takes precedence (see the bus's
    /// [`with_runtime`](Bus::with_runtime)). Without a runtime's token
    /// authentication, tokens are ignored.
    pub async fn long_poll(&self, body: &[u8], user: Option<&str>, token: Option<&str>) -> String {
        // In `wsbus_connections{transport="long-polling"}` until answered
        // or dropped.
        let _in_flight = self.inner.runtime.as_ref().map(|r| r.metrics().long_poll());
        self.capture(user, crate::capture::Direction::In, || {
            bytes::Bytes::copy_from_slice(body)
        });
        let reply = self.long_poll_reply(body, user, token, true).await;
        self.capture(user, crate::capture::Direction::Out, || {
            bytes::Bytes::from(reply.clone())
        });
        reply
    }

    /// Offers a long-polling body or response to the running captures: one
    /// atomic load while none runs (`payload` is made only if one does).
    fn capture(
        &self,
        user: Option<&str>,
        direction: crate::capture::Direction,
        payload: impl FnOnce() -> bytes::Bytes,
    ) {
        if let Some(runtime) = &self.inner.runtime
            && runtime.captures().is_active()
        {
            runtime
                .captures()
                .long_poll_message(user, direction, payload());
        }
    }

    /// Makes this bus one node of several without sticky sessions (module
    /// docs, "Without sticky sessions"): from now on its client ids name
    /// `node` as their owner, and requests for clients owned by other nodes
    /// go through `forward`. Call it before the bus serves clients (ids
    /// handed out before name no owner: their requests are served wherever
    /// they land). Once per bus: a second one is refused and handed back.
    pub fn set_long_poll_forward(
        &self,
        node: NodeId,
        forward: Arc<dyn LongPollForward>,
    ) -> Result<(), Arc<dyn LongPollForward>> {
        let mut engine = self.inner.engine.lock().expect("bus lock");
        self.inner
            .forward
            .set((node, forward))
            .map_err(|(_, forward)| forward)?;
        engine.set_client_id_owner(node.0);
        Ok(())
    }

    /// Runs a request another node forwarded here (its client is owned by
    /// this node) as if it had arrived here over long-polling, and resolves
    /// to its response body; a held `/meta/connect` is held here. Never
    /// forwarded again: a client this node does not know gets `402::Unknown
    /// client`. Cancel safety as for [`long_poll`](Self::long_poll).
    pub async fn serve_forwarded(&self, request: ForwardedPoll) -> String {
        self.long_poll_reply(
            request.body.as_bytes(),
            request.user.as_deref(),
            request.token.as_deref(),
            false,
        )
        .await
    }

    /// The owner of the client `batch` is for, when another node owns it
    /// and the bus forwards: the first `clientId` that names an owner
    /// decides for the whole batch (clients send one client's messages per
    /// batch).
    pub(super) fn foreign_owner(
        &self,
        batch: &Batch,
    ) -> Option<(NodeId, &Arc<dyn LongPollForward>)> {
        let (here, forward) = self.inner.forward.get()?;
        let owner = batch
            .iter()
            .flatten()
            .find_map(|message| ClientId::owner_of(message.client_id.as_deref()?))?;
        (owner != here.0).then_some((NodeId(owner), forward))
    }

    /// Forwards a batch to its client's owner and resolves to the answer, or
    /// to the `402` of an unknown client for each message if none comes
    /// (module docs).
    pub(super) fn forward_to_owner(
        &self,
        owner: NodeId,
        forward: &Arc<dyn LongPollForward>,
        batch: &Batch,
        body: &[u8],
        user: Option<&str>,
        token: Option<&str>,
    ) -> impl Future<Output = String> + Send + 'static {
        let unknown = unknown_client_replies(batch);
        // The batch parsed as JSON, so it is UTF-8.
        let body = String::from_utf8_lossy(body).into_owned();
        let request = ForwardedPoll {
            body,
            user: user.map(str::to_owned),
            token: token.map(str::to_owned),
            deadline: self.inner.hold_timeout + FORWARD_MARGIN,
        };
        let answer = forward.forward(owner, request);
        async move {
            match answer.await {
                Some(reply) => reply,
                None => {
                    tracing::info!(target: "wsbus::cluster", owner = owner.0, "no answer from the node owning a bus client: answered 402::Unknown client, the client handshakes again");
                    unknown
                }
            }
        }
    }

    async fn long_poll_reply(
        &self,
        body: &[u8],
        user: Option<&str>,
        token: Option<&str>,
        may_forward: bool,
    ) -> String {
        let mut context = RequestContext::long_polling();
        if let Some(user) = user {
            context = context.with_user(user);
        }
        let batch = parse_batch(body, &self.inner.batch_limits);
        let subscribes = self.inner.cluster.get().is_some()
            && body
                .windows(META_SUBSCRIBE.len())
                .any(|w| w == META_SUBSCRIBE);
        if may_forward
            && let Ok(batch) = &batch
            && let Some((owner, forward)) = self.foreign_owner(batch)
        {
            return self
                .forward_to_owner(owner, forward, batch, body, user, token)
                .await;
        }
        if let (Ok(batch), Some(runtime)) = (&batch, &self.inner.runtime)
            && let Some(auth) = &runtime.security().auth
            && let Some(token) = ext_token(batch).or(token)
        {
            let verified = auth.verifier.verify(token).await;
            context.credential = Some(credential(runtime, verified));
        }
        let (outcome, waiter) = self.drive(|engine| {
            let outcome = match batch {
                Ok(batch) => engine.handle(now(), &context, batch),
                Err(_) => engine.handle_body(now(), &context, body),
            };
            // Register the hold before the events are routed, so that a wake
            // caused by this very batch is not lost.
            let waiter = outcome.held.as_ref().map(|held| {
                let notify = self
                    .inner
                    .routes
                    .lock()
                    .expect("routes lock")
                    .wait_poll(&held.client_id, held.hold_id);
                (held.clone(), notify)
            });
            (outcome, waiter)
        });
        if subscribes {
            // A subscription this node had no interest in before is made in
            // the cluster as the engine takes it: answer once it is in
            // place, so that what other nodes publish after the client heard
            // the reply reaches it.
            self.cluster_settled().await;
        }
        let Some((held, notify)) = waiter else {
            return outcome.reply_json().unwrap_or_else(|| "[]".to_owned());
        };
        let mut guard = HoldGuard {
            bus: self,
            hold: Some((held.client_id.clone(), held.hold_id)),
        };
        let deadline = tokio::time::Instant::from_std(held.deadline);
        loop {
            let notified = notify.notified();
            let released = self.drive(|engine| {
                let released = engine.poll_connect(held.hold_id, now())?;
                self.inner
                    .routes
                    .lock()
                    .expect("routes lock")
                    .end_poll(&held.client_id, held.hold_id);
                Some(released)
            });
            if let Some(released) = released {
                guard.hold = None;
                let mut all: Vec<Outbound> = outcome.replies;
                all.extend(released);
                return encode_batch(&all).unwrap_or_else(|| "[]".to_owned());
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Cancels a long-poll's held connect if its request is dropped (the
/// future's cancel safety).
struct HoldGuard<'a> {
    bus: &'a Bus,
    hold: Option<(ClientId, HoldId)>,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        if let Some((client, hold)) = self.hold.take() {
            self.bus.drive(|engine| {
                engine.cancel_connect(hold, now());
                self.bus
                    .inner
                    .routes
                    .lock()
                    .expect("routes lock")
                    .end_poll(&client, hold);
            });
        }
    }
}

/// The answer to `batch` from a node that does not know its client: `402`
/// with `advice: {reconnect: "handshake"}` for each message, as the engine
/// answers an unknown client.
fn unknown_client_replies(batch: &Batch) -> String {
    let replies: Vec<_> = batch
        .iter()
        .flatten()
        .map(|message| {
            error_reply(
                message.channel.as_deref(),
                message.id.clone(),
                &BayeuxError::UNKNOWN_CLIENT,
            )
        })
        .collect();
    serde_json::to_string(&replies).expect("messages serialize")
}
