//! The `long-polling` transport: one HTTP request body in, one response body
//! out; a held `/meta/connect` keeps the request open.

use wsbus_bayeux::{ClientId, HoldId, Outbound, RequestContext, encode_batch, parse_batch};

use super::credentials::{credential, ext_token};
use super::{Bus, now};

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
        let reply = self.long_poll_reply(body, user, token).await;
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

    async fn long_poll_reply(
        &self,
        body: &[u8],
        user: Option<&str>,
        token: Option<&str>,
    ) -> String {
        let mut context = RequestContext::long_polling();
        if let Some(user) = user {
            context = context.with_user(user);
        }
        let batch = parse_batch(body, &self.inner.batch_limits);
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
