//! Verifying from code that cannot wait: a socket's event handler.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::{Claims, TokenError, TokenVerifier};

/// Verifies `token` with the keys the verifier holds now, without waiting.
///
/// A secret or a PEM key is always at hand, and so is a JWKS key already
/// cached: then this is [`TokenVerifier::verify`]. When the token names a key
/// that would have to be fetched, this does not wait for it: it starts a
/// fetch in the background (bounded by the refresh floor, shared with
/// others) and answers [`TokenError::UnknownKey`]; a retry after the fetch
/// finds the key. For the bus's WebSocket transport and
/// [`WsEvent::refresh_token`](crate::app::WsEvent::refresh_token), whose
/// handlers run on the socket's task.
pub fn verify_now(verifier: &TokenVerifier, token: &str) -> Result<Claims, TokenError> {
    let mut verification = pin!(verifier.verify(token));
    match verification
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => {
            if tokio::runtime::Handle::try_current().is_ok() {
                let verifier = verifier.clone();
                tokio::spawn(async move {
                    let _ = verifier.prefetch_keys().await;
                });
            }
            Err(TokenError::UnknownKey)
        }
    }
}
