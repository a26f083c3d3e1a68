//! Decisions in code beyond the per-pattern policies.

use std::sync::Arc;

use serde_json::Value;

use crate::channel::{ChannelName, ChannelPattern};
use crate::error::BayeuxError;
use crate::grant::Grant;
use crate::id::ClientId;
use crate::message::Message;
use crate::session::{Session, Transport};

/// A handshake, as shown to [`Authorizer::handshake`].
#[derive(Clone, Copy, Debug)]
pub struct HandshakeRequest<'a> {
    /// The `/meta/handshake` message (its `ext` may carry a token).
    pub message: &'a Message,
    /// The transport the handshake arrived on.
    pub transport: Transport,
    /// The user authenticated by the transport layer: the verified token's
    /// user, else the HTTP session's.
    pub user: Option<&'a Arc<str>>,
    /// What the request's verified token grants, if it presented one.
    pub grant: Option<&'a Grant>,
}

/// A session, as shown to an [`Authorizer`].
#[derive(Clone, Copy, Debug)]
pub struct SessionInfo<'a> {
    /// The session's `clientId`.
    pub client_id: &'a ClientId,
    /// The session's user, fixed at its handshake; `None` for an anonymous
    /// session.
    pub user: Option<&'a str>,
    /// The transport of the session's latest `/meta/connect` (of its
    /// handshake before the first).
    pub transport: Transport,
    /// What the session's token grants (its latest refresh), if it
    /// presented one.
    pub grant: Option<&'a Grant>,
}

impl<'a> SessionInfo<'a> {
    pub(super) fn of(session: &'a Session) -> Self {
        SessionInfo {
            client_id: &session.id,
            user: session.user(),
            transport: session.transport,
            grant: session.grant.as_ref(),
        }
    }
}

/// Decisions beyond the per-pattern policies: token checks in the handshake
/// `ext`, per-user rules, validation of published data against a schema.
/// Consulted after the policies allowed the operation; an `Err` is sent to
/// the client as the reply's `error` and nothing else happens.
///
/// [`subscribe`](Self::subscribe) sees the pattern as subscribed; messages
/// reached through a wildcard are additionally checked against the
/// subscribe *policy* of each channel, but not against the authorizer, so an
/// authorizer should refuse wildcard patterns it cannot vouch for.
pub trait Authorizer: Send {
    /// The session's user, or a refusal (e.g. [`BayeuxError::HANDSHAKE_DENIED`]).
    /// Default: the transport's user.
    fn handshake(
        &mut self,
        request: &HandshakeRequest<'_>,
    ) -> Result<Option<Arc<str>>, BayeuxError> {
        Ok(request.user.cloned())
    }

    /// Whether `session` may subscribe to `pattern`. Default: yes.
    fn subscribe(
        &mut self,
        session: &SessionInfo<'_>,
        pattern: &ChannelPattern,
    ) -> Result<(), BayeuxError> {
        let _ = (session, pattern);
        Ok(())
    }

    /// Whether `session` may publish `data` on `channel` (a broadcast or a
    /// `/service` channel). Default: yes.
    fn publish(
        &mut self,
        session: &SessionInfo<'_>,
        channel: &ChannelName,
        data: &Value,
    ) -> Result<(), BayeuxError> {
        let _ = (session, channel, data);
        Ok(())
    }
}

/// The [`Authorizer`] that adds no rule to the policies.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {}
